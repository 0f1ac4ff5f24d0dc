"""Model inputs, computed once here for both training and the device.

The students never see raw media: they see exactly what these functions return, on the
workstation (train/ imports them) and on the Jetson. Faces are luminance-only because the
training faces (LFW here) are grey; a colour camera frame is reduced the same way so the
device never feeds the model a distribution it was not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_runtime.frontend.audio import LogMelConfig, fixed_windows, log_mel

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


@dataclass(frozen=True)
class VoiceFrontEnd:
    """Log-mel, fixed windows (2 s, 1 s hop by default), mean normalisation per window.

    Normalising each window on its own (not the utterance) makes a training crop and a device
    window the same computation, whatever the length of the surrounding recording.
    """

    mel: LogMelConfig = field(default_factory=LogMelConfig)
    window_frames: int = 200
    hop_frames: int = 100

    @property
    def window_samples(self) -> int:
        """Audio samples that make exactly one window of features."""
        return self.mel.win_length + (self.window_frames - 1) * self.mel.hop_length

    def windows(self, wav: np.ndarray) -> np.ndarray:
        """`feats` input (W, window_frames, M) float32 covering the utterance."""
        wins = fixed_windows(log_mel(wav, self.mel), self.window_frames, self.hop_frames)
        return (wins - wins.mean(axis=1, keepdims=True)).astype(np.float32)

    def to_dict(self) -> dict:
        """Stored in model manifests so the device rebuilds the same front-end."""
        return {"mel": self.mel.to_dict(), "window_frames": self.window_frames,
                "hop_frames": self.hop_frames}

    @classmethod
    def from_dict(cls, d: dict) -> VoiceFrontEnd:
        """Inverse of `to_dict`."""
        return cls(LogMelConfig.from_dict(d["mel"]), int(d["window_frames"]), int(d["hop_frames"]))
