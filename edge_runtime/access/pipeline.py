"""One access attempt: evidence gathered as it arrives, then one decision with its reason.

``Collector`` does the per-frame work while the person is still in front of the device (face
detection, alignment, quality; VAD on each audio chunk), so that when the capture window
closes only the embeddings, the gallery search and the fusion remain: that is the latency the
user feels. ``Verifier.decide`` turns the evidence into an ``AttemptResult``; every expected
failure (no face, silence, a locked gallery, ...) becomes a denial with a one-line reason.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_runtime.access.decision import Evidence, Matches, Outcome, decide, decide_mode
from edge_runtime.access.face_tier import check_gallery_tier
from edge_runtime.errors import (
    ConfigError,
    EdgepinError,
    GalleryError,
    NoFaceError,
    SeveralFacesError,
)
from edge_runtime.frontend.audio import TARGET_SR, audio_quality
from edge_runtime.frontend.avsync import (
    MouthTracker,
    SyncConfig,
    SyncResult,
    speech_band,
    sync_score,
)
from edge_runtime.frontend.face import FACE_POLICIES, FaceDetector, as_rgb, choose_face
from edge_runtime.frontend.face_quality import FaceQuality, QualityGate, face_quality
from edge_runtime.frontend.features import STUDENT_FACE_INPUT, FaceInput
from edge_runtime.frontend.vad import SpeechGate, SpeechStream
from edge_runtime.frontend.video import Frame
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import MODE_NAMES, SecurityMode
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle

log = logging.getLogger(__name__)

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


@dataclass
class AttemptResult:
    """The decision on one attempt, JSON-ready; no embeddings, images or audio in it."""

    granted: bool
    identity: str | None
    reason: str
    scores: dict[str, float | None]
    latencies_ms: dict[str, float]
    candidate: str | None = None
    face_match: str | None = None
    voice_match: str | None = None
    provisional: bool = True
    liveness: str = ""
    speech_s: float = 0.0
    face_frames: int = 0
    source: str = ""
    t: float = 0.0
    actuator: str | None = None
    mode: str = ""
    # False: the evidence so far is not decisive and more media could change it (a sequential
    # loop keeps collecting; at its time limit it takes the decision as it stands)
    final: bool = True
    needs: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["scores"] = {k: (None if v is None or not math.isfinite(v) else round(v, 4))
                       for k, v in self.scores.items()}
        d["latencies_ms"] = {k: round(v, 2) for k, v in self.latencies_ms.items()}
        return d


def denial(reason: str, *, source: str = "", t: float = 0.0, **extra: Any) -> AttemptResult:
    """A denial that never reached a decision (bad input, locked out, failed setup)."""
    return AttemptResult(granted=False, identity=None, reason=" ".join(reason.split()),
                         scores={}, latencies_ms={}, source=source, t=t, **extra)


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
            self.mouth_open.append(self.mouth.opening(image, det.box))
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

    # ----------------------------------------------------------------------- evidence out
    @property
    def good_faces(self) -> int:
        return len(self.faces)

    def speech_seconds(self) -> float:
        return self.stream.speech_seconds()

    def audio(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)

    def sync(self, config: SyncConfig) -> SyncResult | None:
        """Audio-visual sync of the mouth frames so far with the audio so far (None: no mouth
        tracker, or no audio)."""
        if self.mouth is None or not self._chunks:
            return None
        t0 = self.audio_t0 if self.audio_t0 is not None else \
            (self.mouth_t[0] if self.mouth_t else 0.0)
        started = time.perf_counter()
        out = sync_score(self.mouth_t, self.mouth_open, speech_band(self.audio(), TARGET_SR),
                         TARGET_SR, audio_start=t0, config=config)
        self._stage_ms["avsync"].append(1e3 * (time.perf_counter() - started))
        return out

    def stage_ms(self) -> dict[str, float]:
        """Mean per frame for the face stages, total for the VAD (it runs on every chunk)."""
        out = {}
        for k, v in self._stage_ms.items():
            out[f"{k}_mean" if k != "vad" else "vad_total"] = float(np.mean(v) if k != "vad" else np.sum(v))
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


class Verifier:
    """Decides attempts with one model bundle against one gallery."""

    def __init__(self, bundle: ModelBundle, gallery: GalleryHandle, config: PipelineConfig,
                 detector: FaceDetector, gate: SpeechGate) -> None:
        self.bundle = bundle
        self.gallery = gallery
        self.config = config
        self.detector = detector
        self.gate = gate
        self.mouth = MouthTracker()
        self._tier_checked: int | None = None  # id of the gallery object checked last
        # one worker: the face embedding runs next to the voice pipeline (2 cores, each
        # onnxruntime session single-threaded); both release the GIL while they compute
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgepin-face")

    def warm(self) -> None:
        """Open the gallery and decrypt its templates before the first attempt, so the first
        person does not wait for it; a problem here is reported by that attempt instead."""
        try:
            gallery = self.gallery.get()
            self.check_tier(gallery)
            for m in ("face", "voice"):
                gallery.templates(m, self.bundle.hashes[m], skip_stale=True)
        except EdgepinError as exc:
            log.warning("gallery not ready: %s", exc)
            if isinstance(exc, GalleryError):
                self.gallery.reset()

    def check_tier(self, gallery: Gallery) -> None:
        """Refuse a gallery enrolled with the other face tier (once per opened gallery)."""
        if self._tier_checked != id(gallery):
            check_gallery_tier(gallery, self.bundle)
            self._tier_checked = id(gallery)

    def new_attempt(self, source: str = "") -> Collector:
        return Collector(self.detector, self.gate.stream(), self.config, source,
                         embed_face=lambda crops: self._embed_face(crops)[0], mouth=self.mouth,
                         face_input=self.bundle.face_input)

    def security_mode(self) -> SecurityMode | None:
        """The mode attempts are decided in (None: the operating-point file has no modes, or
        there is no file: the fused rule of ``decide`` applies, AV sync is only reported)."""
        op = self.bundle.operating_points
        if op is None or not op.modes:
            if self.config.mode is not None:
                raise ConfigError(
                    f"security mode {self.config.mode!r} asked for, but "
                    f"{op.source if op is not None else 'no operating-point file'} has no modes; "
                    "add them with `edgepin calibrate-modes`")
            return None
        mode = op.mode(self.config.mode)
        if not math.isclose(mode.target_far, self.config.target_far):  # e.g. --target-far 1e-3
            mode = dataclasses.replace(mode, target_far=self.config.target_far)
        if self.config.liveness is not None:
            mode = dataclasses.replace(mode, liveness=self.config.liveness)
        return mode

    @property
    def liveness(self) -> str:
        return "audio-visual sync (mouth opening vs speech envelope)"

    def decide(self, c: Collector, *, t: float = 0.0, final: bool = True) -> AttemptResult:
        """Embeddings, search, fusion and the decision; never raises for an expected failure.

        ``final=False`` (sequential loop): the result may come back with ``final`` False and
        ``needs`` saying what more media would settle it; the caller keeps collecting."""
        start = time.perf_counter()
        lap = _Laps()
        result = self._decide(c, lap, final)
        lat = lap.ms
        lat.update(c.stage_ms())
        lat["decision"] = 1e3 * (time.perf_counter() - start)
        result.latencies_ms = lat
        result.source, result.t = c.source, t
        result.provisional = self.bundle.thresholds.provisional
        result.liveness = result.liveness or self.liveness
        result.face_frames = c.good_faces
        return result

    def _embed_face(self, crops: list[np.ndarray]) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        emb = self.bundle.embed_faces(crops).mean(axis=0)
        emb /= max(float(np.linalg.norm(emb)), 1e-12)
        return emb, 1e3 * (time.perf_counter() - t0)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _decide(self, c: Collector, lap: _Laps, final: bool = True) -> AttemptResult:
        cfg = self.config
        t = time.perf_counter()
        if final:
            c.stream.finish()
        segments = c.stream.segments()
        speech_s = sum(b - a for a, b in segments)
        t = lap("vad_finish", t)
        face_missing = None if c.faces else c.face_problem()
        voice_missing = self._voice_problem(c, speech_s)
        if face_missing and voice_missing:
            return _deny(f"no usable face ({face_missing}) and no usable voice ({voice_missing})",
                         speech_s)
        if (face_missing or voice_missing) and cfg.missing_modality == "deny":
            what = f"no usable face: {face_missing}" if face_missing else \
                f"no usable voice: {voice_missing}"
            return _deny(f"{what} (policy needs both)", speech_s)
        try:
            face_emb = voice_emb = None
            face_job = None
            if not face_missing:
                face_emb = c.best_face_embedding()  # usually done during capture
                if face_emb is None:  # else on the second core while the voice is done here
                    crops = [f.crop for f in c.faces[: cfg.top_faces]]
                    face_job = self._pool.submit(self._embed_face, crops)
            if not voice_missing:
                speech = self.gate.extract_speech(c.audio(), segments)
                key = (speech.size, id(self.bundle))
                if c.voice_memo is not None and c.voice_memo[0] == key:
                    voice_emb = c.voice_memo[1]  # same speech already embedded (another mode)
                else:
                    feats = self.bundle.voice_windows(speech)
                    t = lap("voice_frontend", t)
                    voice_emb = self.bundle.embed_voice(windows=feats)
                    c.voice_memo = (key, voice_emb)
                t = lap("voice_embed", t)
            if face_job is not None:
                face_emb, face_ms = face_job.result()
                lap.ms["face_embed"] = face_ms
                t = lap("face_wait", t)
            cross: dict[str, float] = {}
            if face_emb is not None and voice_emb is not None and self.bundle.cross_modal:
                cross = self.bundle.cross_scores(face_emb, voice_emb)
                t = lap("cross_modal", t)
            gallery = self.gallery.get()
            self.check_tier(gallery)
            face_t = gallery.templates("face", self.bundle.hashes["face"], skip_stale=True) \
                if face_emb is not None else None
            voice_t = gallery.templates("voice", self.bundle.hashes["voice"], skip_stale=True) \
                if voice_emb is not None else None
            evidence = Evidence(
                face=None if face_t is None else Matches(face_t[0], face_t[1] @ face_emb),
                voice=None if voice_t is None else Matches(voice_t[0], voice_t[1] @ voice_emb),
                cross=cross,
                face_missing=face_missing,
                voice_missing=voice_missing,
            )
            t = lap("search", t)
            op = self.bundle.operating_points
            if op is not None and voice_emb is not None:  # the voice LLR depends on its length
                op = op.at({"voice": len(speech) / TARGET_SR})
            mode = self.security_mode()
            evidence = dataclasses.replace(evidence, sync=c.sync(cfg.sync), speech_s=speech_s)
            t = lap("avsync", t)
            if mode is not None and op is not None:
                outcome = decide_mode(evidence, self.bundle.thresholds, op, mode)
            else:
                outcome = decide(evidence, self.bundle.thresholds, op, cfg.target_far)
            lap("fusion", t)
        except EdgepinError as exc:
            if isinstance(exc, GalleryError):
                self.gallery.reset()
            return _deny(str(exc), speech_s)
        return AttemptResult(
            granted=outcome.granted, identity=outcome.candidate if outcome.granted else None,
            reason=outcome.reason, scores=outcome.scores, latencies_ms={},
            candidate=outcome.candidate, face_match=outcome.face_match,
            voice_match=outcome.voice_match, liveness=outcome.liveness, speech_s=speech_s,
            mode=outcome.mode, final=final or outcome.granted or outcome.final,
            needs="" if outcome.granted or outcome.final else _needs(outcome),
        )

    def _voice_problem(self, c: Collector, speech_s: float) -> str | None:
        audio = c.audio()
        if audio.size == 0:
            if c.audio_problems:
                return c.audio_problems.most_common(1)[0][0]
            return "no audio received"
        q = audio_quality(audio, TARGET_SR)
        if q.rms_dbfs < self.config.min_rms_dbfs:
            return f"silence only (level {q.rms_dbfs:.0f} dBFS < {self.config.min_rms_dbfs:g} dBFS)"
        if q.clipped_fraction > self.config.max_clipped:
            return (f"audio clipped ({q.clipped_fraction:.1%} of samples at full scale > "
                    f"{self.config.max_clipped:.1%}): speak further from the microphone")
        if speech_s < self.config.min_speech_s:
            return (f"not enough speech ({speech_s:.2f} s voiced < {self.config.min_speech_s:g} s"
                    f" required)")
        return None


class _Laps:
    """Stage timer: ``lap(name, since)`` records ms since ``since`` and returns now."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def __call__(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.ms[name] = 1e3 * (now - since)
        return now


def _deny(reason: str, speech_s: float) -> AttemptResult:
    return AttemptResult(granted=False, identity=None, reason=" ".join(reason.split()),
                         scores={}, latencies_ms={}, speech_s=speech_s)


def _needs(outcome: Outcome) -> str:
    """What the person at the door can do to settle an undecided attempt."""
    r = outcome.reason
    if "liveness" in r or "speech" in r or "voice" in r:
        return "keep speaking, facing the camera"
    if "face" in r:
        return "face the camera"
    return "keep speaking"
