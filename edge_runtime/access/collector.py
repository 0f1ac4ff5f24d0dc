"""Evidence of one access attempt, gathered while the person is still in front of the device.

``Collector`` does the per-frame work during capture (face detection, alignment, quality, the
68-point mouth opening; VAD and the AV-sync band energy on each audio chunk; the embedding of
the best face as soon as it changes), so that when the capture window closes only the voice
embedding, the gallery search and the fusion remain (``verifier.Verifier``): that is the
latency the user feels.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.errors import (
    ConfigError,
    EdgepinError,
    NoFaceError,
    SeveralFacesError,
)
from edge_runtime.frontend.audio import TARGET_SR
from edge_runtime.frontend.avsync import (
    BandEnergy,
    MouthTracker,
    SyncConfig,
    SyncResult,
    sync_score,
)
from edge_runtime.frontend.face import FACE_POLICIES, FaceDetector, as_rgb, choose_face
from edge_runtime.frontend.face_quality import FaceQuality, QualityGate, face_quality
from edge_runtime.frontend.features import STUDENT_FACE_INPUT, FaceInput
from edge_runtime.frontend.vad import SpeechStream
from edge_runtime.frontend.video import Frame
from edge_runtime.operating_points import MODE_NAMES

MISSING_POLICIES = ("deny", "single")


@dataclass(frozen=True)
class PipelineConfig:
    """What an attempt needs before it is decided, and how a decision is made.

    ``min_speech_s``: voiced seconds (VAD), not audio seconds. ``missing_modality``: "deny"
    refuses an attempt without a usable face or voice; "single" decides on the one present
    (then audio-visual liveness cannot be checked, and the result says so).
    """

    face_policy: str = "largest"
    quality: QualityGate = field(default_factory=QualityGate)
    min_speech_s: float = 2.0
    min_face_frames: int = 1
    top_faces: int = 1
    missing_modality: str = "deny"
    target_far: float = 1e-2  # the lowest FAR the shipped operating points can measure
    min_rms_dbfs: float = -50.0
    max_clipped: float = 0.01
    # security mode of the operating-point file (None: the file's default); "report-liveness"
    # variants are for measuring the identity part alone (benchmarks), never for a door
    mode: str | None = None
    liveness: str | None = None  # None: the mode's; "required" or "report" override it
    sync: SyncConfig = field(default_factory=SyncConfig)
    # None: the mode's; a (seconds, LLR) table replaces the mode's voice veto (benchmarks that
    # set it on other people than they evaluate, never for a door)
    voice_veto_by_length: tuple[tuple[float, float], ...] | None = None
    # None: the mode's; replaces the speech a look needs to grant (benchmarks comparing the
    # rule before it, 0.5 s: a grant at the first look)
    decisive_speech_s: float | None = None
    # None: the mode's "recognised as someone else" rule; "far": the rule before the
    # likelihood-ratio margin (voice alone accepted, at every length; benchmarks comparing the
    # two on the same attempts, never a door)
    voice_other_rule: str | None = None
    # None: the mode's; seconds replace the mode's ``voice_confirm_until_s``, 0 turns it off
    # (benchmarks comparing the door without it on the same attempts, never a door)
    voice_confirm_until_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODE_NAMES:
            raise ConfigError(f"security mode must be one of {MODE_NAMES}, got {self.mode!r}")
        if self.liveness not in (None, "required", "report"):
            raise ConfigError(f"liveness must be 'required' or 'report', got {self.liveness!r}")
        if self.face_policy not in FACE_POLICIES:
            raise ConfigError(f"face policy must be one of {FACE_POLICIES}, got {self.face_policy!r}")
        if self.missing_modality not in MISSING_POLICIES:
            raise ConfigError(
                f"missing-modality policy must be one of {MISSING_POLICIES}, got "
                f"{self.missing_modality!r}"
            )
        if not self.min_speech_s > 0 or self.min_face_frames < 1 or self.top_faces < 1:
            raise ConfigError("min_speech_s must be > 0, min_face_frames and top_faces >= 1")
        if not 0 < self.target_far < 1:
            raise ConfigError(f"target FAR must be in (0, 1), got {self.target_far}")
        if self.voice_other_rule not in (None, "far"):
            raise ConfigError(f"voice_other_rule must be None or 'far', got "
                              f"{self.voice_other_rule!r}")


def live_min_speech_s(decisive_speech_s: float | None) -> float:
    """Voiced seconds a LIVE source needs before it is decided: the pipeline's default, raised
    to the security mode's decisive speech (None: no mode). On less, a short phrase would be
    judged where the voice veto is loosest. Replayed files are decided on what they hold."""
    return max(PipelineConfig().min_speech_s, decisive_speech_s or 0.0)


@dataclass
class FaceCandidate:
    """An aligned face that passed the quality gate, ranked for 'best frame of the window'."""

    crop: np.ndarray
    quality: FaceQuality
    t: float

    @property
    def rank(self) -> float:
        # sharp, large, frontal first; yaw proxy 0.35 ~ 30 degrees halves the rank
        size = min(1.0, self.quality.face_size / 60.0)
        return self.quality.sharpness * size / (1.0 + (self.quality.yaw_proxy / 0.35) ** 2)


class Collector:
    """Evidence of one attempt, updated frame by frame and chunk by chunk."""

    def __init__(self, detector: FaceDetector, stream: SpeechStream, config: PipelineConfig,
                 source: str = "",
                 embed_face: Callable[[list[np.ndarray]], np.ndarray] | None = None,
                 mouth: MouthTracker | None = None,
                 face_input: FaceInput = STUDENT_FACE_INPUT) -> None:
        self.detector = detector
        self.face_input = face_input  # the crop the face model of the bundle takes
        self.mouth = mouth
        self.mouth_t: list[float] = []
        self.mouth_open: list[float] = []
        self.audio_t0: float | None = None
        # AV sync: the band energy of the audio, updated chunk by chunk during capture so the
        # decision only looks values up (a filter over the whole recording cost ~6 ms there)
        self.band = BandEnergy(TARGET_SR)
        self.voice_memo: tuple[tuple[int, int], np.ndarray] | None = None
        self.embed_face = embed_face
        self._face_emb: np.ndarray | None = None
        self._face_emb_of: tuple[int, ...] = ()
        self.stream = stream
        self.config = config
        self.source = source
        self.faces: list[FaceCandidate] = []
        self.problems: collections.Counter[str] = collections.Counter()
        self.audio_problems: collections.Counter[str] = collections.Counter()
        self.frames_seen = 0
        self.last_face_t: float | None = None
        self._chunks: list[np.ndarray] = []
        self._stage_ms: dict[str, list[float]] = collections.defaultdict(list)

    # ------------------------------------------------------------------------ evidence in
    def add_frame(self, frame: Frame) -> bool:
        """Detect, choose, align and grade the face of one frame; True if a face was found."""
        self.frames_seen += 1
        t0 = time.perf_counter()
        try:
            image = as_rgb(frame.image, f"frame at {frame.t:.2f} s")
            detections = self.detector.detect(image)
            t1 = time.perf_counter()
            self._stage_ms["detect"].append(1e3 * (t1 - t0))
            det = choose_face(detections, image.shape, self.config.face_policy,
                              source=f"{self.source or 'the camera'} frame at {frame.t:.2f} s")
        except EdgepinError as exc:
            self.problems[_problem_key(exc)] += 1
            if isinstance(exc, SeveralFacesError):  # someone is there, just not alone
                self.last_face_t = frame.t
                return True
            return False
        self.last_face_t = frame.t
        if self.mouth is not None:  # every frame with the chosen face, good quality or not
            t1 = time.perf_counter()
            self.mouth_t.append(frame.t)
            self.mouth_open.append(self.mouth.opening(image, det.box,
                                                      getattr(self.detector, "kind", None)))
            self._stage_ms["mouth"].append(1e3 * (time.perf_counter() - t1))
        t1 = time.perf_counter()
        crop = self.face_input.crop(image, det)
        t2 = time.perf_counter()
        q = face_quality(image, det)
        self._stage_ms["align"].append(1e3 * (t2 - t1))
        self._stage_ms["quality"].append(1e3 * (time.perf_counter() - t2))
        reasons = self.config.quality.reasons(q)
        if reasons:
            self.problems["; ".join(reasons)] += 1
            return True
        self.faces.append(FaceCandidate(crop, q, frame.t))
        self.faces.sort(key=lambda c: c.rank, reverse=True)
        del self.faces[max(self.config.top_faces, 3):]
        self._embed_best()
        return True

    def _embed_best(self) -> None:
        """Embed the best face(s) as soon as they change, while the person is still talking:
        the decision then needs no face inference (better frames become rare quickly)."""
        top = self.faces[: self.config.top_faces]
        key = tuple(id(f) for f in top)
        if self.embed_face is None or key == self._face_emb_of:
            return
        t0 = time.perf_counter()
        self._face_emb = self.embed_face([f.crop for f in top])
        self._face_emb_of = key
        self._stage_ms["face_embed_capture"].append(1e3 * (time.perf_counter() - t0))

    def best_face_embedding(self) -> np.ndarray | None:
        """The embedding of the current best face(s), if computed during capture."""
        top = tuple(id(f) for f in self.faces[: self.config.top_faces])
        return self._face_emb if top and top == self._face_emb_of else None

    def add_audio(self, samples: np.ndarray, sample_rate: int = TARGET_SR,
                  t: float | None = None) -> None:
        """Run the VAD on a chunk as it arrives; a chunk at another rate is refused, counted.
        ``t``: when its first sample was captured (the AV-sync check lines audio up with the
        frames; without it the first chunk is taken to start with the first frame)."""
        if sample_rate != TARGET_SR:
            self.audio_problems[f"audio at {sample_rate} Hz, expected {TARGET_SR} Hz"] += 1
            return
        try:
            t0 = time.perf_counter()
            self.stream.push(samples)
            self._stage_ms["vad"].append(1e3 * (time.perf_counter() - t0))
        except (EdgepinError, TypeError) as exc:
            self.audio_problems[str(exc)] += 1
            return
        if not self._chunks and t is not None:
            self.audio_t0 = float(t)
        self._chunks.append(samples)
        if self.mouth is not None:
            t0 = time.perf_counter()
            self.band.push(samples)
            self._stage_ms["band_energy"].append(1e3 * (time.perf_counter() - t0))

    # ----------------------------------------------------------------------- evidence out
    @property
    def good_faces(self) -> int:
        return len(self.faces)

    def speech_seconds(self) -> float:
        return self.stream.speech_seconds()

    def silence_after_speech(self) -> float | None:
        return self.stream.silence_after_speech()

    def audio(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)

    def sync(self, config: SyncConfig) -> SyncResult | None:
        """Audio-visual sync of the mouth frames so far with the audio so far (None: no mouth
        tracker, or no audio). Only look-ups into the band energy kept during capture."""
        if self.mouth is None or not self._chunks:
            return None
        t0 = self.audio_t0 if self.audio_t0 is not None else \
            (self.mouth_t[0] if self.mouth_t else 0.0)
        started = time.perf_counter()
        out = sync_score(self.mouth_t, self.mouth_open, self.band, audio_start=t0, config=config)
        self._stage_ms["avsync"].append(1e3 * (time.perf_counter() - started))
        return out

    def stage_ms(self) -> dict[str, float]:
        """Mean per frame for the face stages, total for the VAD (it runs on every chunk)."""
        out = {}
        for k, v in self._stage_ms.items():
            total = k in ("vad", "band_energy")  # run on every chunk
            out[f"{k}_total" if total else f"{k}_mean"] = float(np.sum(v) if total else np.mean(v))
        return out

    def face_problem(self) -> str:
        """Why no usable face: the most frequent problem, or 'no camera frames'."""
        if not self.frames_seen:
            return "no camera frames received"
        if not self.problems:
            return "no usable face"
        text, n = self.problems.most_common(1)[0]
        return f"{text} ({n} of {self.frames_seen} frames)"


def _problem_key(exc: EdgepinError) -> str:
    """Group per-frame failures: the frame time in the message would make each one unique."""
    if isinstance(exc, SeveralFacesError):
        return "several faces in view (face policy 'deny' needs exactly one)"
    if isinstance(exc, NoFaceError):
        return "no face found"
    return str(exc)
