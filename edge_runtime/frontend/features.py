"""Model inputs, computed once here for both training and the device.

The students never see raw media: they see exactly what these functions return, on the
workstation (train/ imports them) and on the Jetson. Faces are luminance-only because the
training faces (LFW here) are grey; a colour camera frame is reduced the same way so the
device never feeds the model a distribution it was not trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frontend.audio import LogMelConfig, fixed_windows, log_mel
from edge_runtime.frontend.face import FaceDetection, align_face, dlib_chip

FACE_SIZE = 112


def face_grey(aligned: np.ndarray) -> np.ndarray:
    """Aligned RGB (or grey) uint8 crop -> grey uint8 (H, W): the stored training form."""
    if aligned.dtype != np.uint8:
        raise TypeError(f"aligned face must be uint8, got {aligned.dtype}")
    if aligned.ndim == 2:
        return aligned
    if aligned.ndim == 3 and aligned.shape[2] == 3:
        return cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"aligned face must be HxW or HxWx3, got shape {aligned.shape}")


def face_tensor(aligned: np.ndarray | list[np.ndarray], colour: bool = False) -> np.ndarray:
    """One or several aligned crops -> `face` input (N, 3, 112, 112) float32 in [-1, 1].

    `colour=False` (the shipped students): luminance replicated to 3 channels. `colour=True`
    (students trained on colour faces): RGB, a grey crop replicated.
    """
    crops = aligned if isinstance(aligned, list) else [aligned]
    if isinstance(aligned, np.ndarray) and aligned.ndim == 4:
        crops = list(aligned)
    if colour:
        rgb = np.stack([np.repeat(c[:, :, None], 3, axis=2) if c.ndim == 2 else c for c in crops])
        if rgb.dtype != np.uint8 or rgb.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"aligned faces must be uint8 {FACE_SIZE}x{FACE_SIZE}(x3), got "
                             f"{rgb.dtype} {rgb.shape[1:]}")
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2).astype(np.float32) * (2.0 / 255.0) - 1.0)
    grey = np.stack([face_grey(c) for c in crops])
    if grey.shape[1:] != (FACE_SIZE, FACE_SIZE):
        raise ValueError(f"aligned face must be {FACE_SIZE}x{FACE_SIZE}, got {grey.shape[1:]}")
    x = grey.astype(np.float32) * (2.0 / 255.0) - 1.0
    return np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))


FACE_CHIPS = ("arcface", "dlib")
#: Test-time augmentation of face embeddings: "flip" averages each face with its mirror image.
FACE_TTA = ("none", "flip")


def embed_face_tensor(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                      tta: str = "none") -> np.ndarray:
    """Unit embeddings of a ``face`` batch (N, 3, H, W); with ``tta="flip"`` each is the unit
    mean of the face's and its mirror image's (one batch of 2N through ``run``).

    Mirroring averages out the student's left/right asymmetries: on held-out LFW it lowers the
    EER by about a third of a point for twice the network time (``benchmarks/face_tta.md``).
    Training, calibration and the device embed through here, so a template and a probe are
    always made the same way.
    """
    if tta not in FACE_TTA:
        raise ModelError(f"face test-time augmentation must be one of {FACE_TTA}, got {tta!r}")
    if tta == "none":
        return l2_normalise(run(x))
    n = x.shape[0]
    out = l2_normalise(run(np.ascontiguousarray(np.concatenate([x, x[..., ::-1]]))))
    return l2_normalise(out[:n] + out[n:])


def tta_digest(sha256: str, tta: str) -> str:
    """The key of an embedding FUNCTION: the model file's sha256, or with test-time
    augmentation a sha256 of both, so gallery templates and operating points made one way are
    never compared with embeddings made the other way."""
    if tta == "none":
        return sha256
    return hashlib.sha256(f"{sha256}+tta:{tta}".encode()).hexdigest()


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit length, float32; a zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class FaceInput:
    """What a face model's ``face`` input is, as its manifest entry (``front_end``) declares.

    ``arcface``: the students' crop, 5-point similarity warp to the ArcFace 112 layout, grey
    (or RGB with ``colour``), scaled to [-1, 1] by ``face_tensor``. ``dlib``: dlib's own
    ``get_face_chip`` (150x150 RGB, padding 0.25), the chip the face ResNet (tier ``large``)
    was trained on; raw 0..255 pixels, the graph does dlib's ``(x - mean) / 256``. Training,
    export, calibration and the device all make crops and tensors through this one class.
    """

    chip: str = "arcface"
    size: int = FACE_SIZE
    colour: bool = False
    padding: float = 0.25  # dlib chips only

    def __post_init__(self) -> None:
        if self.chip not in FACE_CHIPS:
            raise ModelError(f"face front-end: chip must be one of {FACE_CHIPS}, got {self.chip!r}")
        if self.chip == "arcface" and self.size != FACE_SIZE:
            raise ModelError(f"face front-end: arcface crops are {FACE_SIZE} px, got {self.size}")
        if self.chip == "dlib" and not self.colour:
            raise ModelError("face front-end: dlib chips are RGB (colour: true)")

    @classmethod
    def from_meta(cls, raw: Mapping[str, Any] | str | None) -> FaceInput:
        """From a recorded front-end (manifest meta or ONNX ``edgepin.front_end``); students
        before this class record ``{"face_size": 112}`` (+ ``colour``) and mean the default."""
        try:
            data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        except (ValueError, TypeError) as exc:
            raise ModelError(f"face model: unreadable front-end settings {raw!r} ({exc})") from exc
        if not isinstance(data.get("colour", False), bool):
            raise ModelError(f"face model: front-end settings {raw!r} have no boolean 'colour'")
        chip = str(data.get("chip", "arcface"))
        return cls(chip=chip, size=int(data.get("face_size", FACE_SIZE)),
                   colour=bool(data.get("colour", chip == "dlib")),
                   padding=float(data.get("padding", 0.25)))

    def to_dict(self) -> dict[str, Any]:
        """What a face model's manifest entry records as ``front_end``."""
        if self.chip == "arcface":
            return {"face_size": self.size, **({"colour": True} if self.colour else {})}
        return {"chip": self.chip, "face_size": self.size, "colour": self.colour,
                "padding": self.padding}

    @property
    def key(self) -> str:
        """Short name for cache keys and reports."""
        if self.chip == "arcface":
            return f"align{self.size}" + ("-rgb" if self.colour else "")
        return f"dlibchip{self.size}-p{self.padding:g}"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-sample tensor shape (C, H, W)."""
        return (3, self.size, self.size)

    def crop(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        """The face of a full RGB frame as this model sees it (uint8, HxWx3)."""
        if self.chip == "dlib":
            return dlib_chip(image, detection, size=self.size, padding=self.padding)
        return align_face(image, detection.landmarks, self.size)

    def stored(self, crop: np.ndarray) -> np.ndarray:
        """What a dataset cache keeps of a crop: grey for grey students (as before), else RGB."""
        return crop if self.colour else face_grey(crop)

    def tensor(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Crops -> the model's ``face`` input (N, 3, size, size) float32."""
        if self.chip == "arcface":
            return face_tensor(crops, colour=self.colour)
        items = list(crops) if isinstance(crops, list) or np.ndim(crops) == 4 else [crops]
        x = np.stack([np.asarray(c) for c in items])
        if x.dtype != np.uint8 or x.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"dlib chips must be uint8 {self.size}x{self.size}x3, got "
                             f"{x.dtype} {x.shape[1:]}")
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


STUDENT_FACE_INPUT = FaceInput()
DLIB_CHIP_INPUT = FaceInput(chip="dlib", size=150, colour=True, padding=0.25)


VOICE_NORMALISATIONS = ("band", "level", "partial")


@dataclass(frozen=True)
class VoiceFrontEnd:
    """Log-mel, fixed windows (2 s, 1 s hop by default), normalised per window.

    Normalising each window on its own (not the utterance) makes a training crop and a device
    window the same computation, whatever the length of the surrounding recording.
    ``normalise``: "band" subtracts each mel band's mean over the window (cepstral mean
    normalisation: removes microphone colouring, and with it the speaker's long-term spectral
    envelope); "level" subtracts one number, the window's mean log-mel over frames and bands
    (removes only the gain, keeps the envelope; channel robustness must then be learned);
    "partial" subtracts the level and ``band_fraction`` of each band's own offset from it, a
    setting between the two: a speaker whose recordings drift in colour moves only that much.
    """

    mel: LogMelConfig = field(default_factory=LogMelConfig)
    window_frames: int = 200
    hop_frames: int = 100
    normalise: str = "band"
    band_fraction: float = 0.5  # "partial" only: 1 would be "band", 0 "level"

    def __post_init__(self) -> None:
        if self.normalise not in VOICE_NORMALISATIONS:
            raise ConfigError(f"VoiceFrontEnd.normalise must be one of {VOICE_NORMALISATIONS}, "
                              f"got {self.normalise!r}")
        if self.normalise == "partial" and not 0.0 < self.band_fraction < 1.0:
            raise ConfigError("VoiceFrontEnd.band_fraction must lie strictly between 0 (level) and "
                              f"1 (band) for \"partial\", got {self.band_fraction!r}")

    @property
    def window_samples(self) -> int:
        """Audio samples that make exactly one window of features."""
        return self.mel.win_length + (self.window_frames - 1) * self.mel.hop_length

    def windows(self, wav: np.ndarray) -> np.ndarray:
        """`feats` input (W, window_frames, M) float32 covering the utterance."""
        wins = fixed_windows(log_mel(wav, self.mel), self.window_frames, self.hop_frames)
        if self.normalise == "partial":
            band = wins.mean(axis=1, keepdims=True)
            level = band.mean(axis=2, keepdims=True)
            return (wins - level - self.band_fraction * (band - level)).astype(np.float32)
        axes = (1,) if self.normalise == "band" else (1, 2)
        return (wins - wins.mean(axis=axes, keepdims=True)).astype(np.float32)

    def to_dict(self) -> dict:
        """Stored in model manifests so the device rebuilds the same front-end.

        "band" (every model before door_v19) is left out, so their manifests and the hashes
        made from them stay as they were."""
        d = {"mel": self.mel.to_dict(), "window_frames": self.window_frames,
             "hop_frames": self.hop_frames}
        if self.normalise != "band":
            d["normalise"] = self.normalise
        if self.normalise == "partial":
            d["band_fraction"] = self.band_fraction
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VoiceFrontEnd:
        """Inverse of `to_dict`; a manifest without "normalise" is a per-band model."""
        return cls(LogMelConfig.from_dict(d["mel"]), int(d["window_frames"]), int(d["hop_frames"]),
                   str(d.get("normalise", "band")),
                   float(d.get("band_fraction", cls.band_fraction)))
