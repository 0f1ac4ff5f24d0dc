"""The decision on one access attempt: embeddings, gallery search, fusion, security mode.

``Verifier.decide`` turns the evidence a ``collector.Collector`` gathered into an
``AttemptResult``; every expected failure (no face, silence, a locked gallery, ...) becomes a
denial with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_runtime.access.collector import Collector, PipelineConfig
from edge_runtime.access.decision import Evidence, Matches, Outcome, decide, decide_mode
from edge_runtime.access.face_tier import check_gallery_tier
from edge_runtime.errors import ConfigError, EdgepinError, GalleryError
from edge_runtime.frontend.audio import TARGET_SR, audio_quality
from edge_runtime.frontend.avsync import MouthTracker
from edge_runtime.frontend.face import FaceDetector
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import SecurityMode
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle

log = logging.getLogger(__name__)

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
        self._tier_checked: Gallery | None = None  # the gallery object checked last
        self.security_mode()  # refuse now a mode the file lacks or a detector it has no
        # AV-sync calibration for, rather than deny every attempt for it later
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
        if self._tier_checked is not gallery:
            check_gallery_tier(gallery, self.bundle)
            self._tier_checked = gallery

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
        if self.config.liveness is not None:
            mode = dataclasses.replace(mode, liveness=self.config.liveness)
        if self.config.voice_veto_by_length is not None:
            mode = dataclasses.replace(mode, voice_veto_by_length=self.config.voice_veto_by_length)
        if self.config.decisive_speech_s is not None:
            mode = dataclasses.replace(mode, decisive_speech_s=self.config.decisive_speech_s)
        if self.config.voice_other_rule == "far":
            mode = dataclasses.replace(mode, voice_other_margin_llr=None)
        if self.config.voice_confirm_until_s is not None:  # 0: none (benchmarks)
            mode = dataclasses.replace(mode, voice_confirm_until_s=self.config.voice_confirm_until_s
                                       or None)
        mode = mode.for_detector(getattr(self.detector, "kind", None))
        if not math.isclose(mode.target_far, self.config.target_far):  # e.g. --target-far 1e-3
            mode = dataclasses.replace(mode, target_far=self.config.target_far)
        return mode

    @property
    def liveness(self) -> str:
        return "audio-visual sync (mouth opening vs speech envelope)"

    def decide(self, c: Collector, *, t: float = 0.0, final: bool = True,
               live: bool = False) -> AttemptResult:
        """Embeddings, search, fusion and the decision; never raises for an expected failure.

        ``final=False`` (sequential loop): the result may come back with ``final`` False and
        ``needs`` saying what more media would settle it; the caller keeps collecting.
        ``live`` (the final decision of a live attempt, which ended because the person stopped
        speaking, left or ran out of time): a grant the rule holds until more speech (the voice
        did not confirm on its own) is denied when that speech was not heard, so an attacker
        cannot skip the wait by falling silent. A replayed file is decided on what it holds."""
        start = time.perf_counter()
        lap = _Laps()
        result = self._decide(c, lap, final, live)
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

    def _decide(self, c: Collector, lap: _Laps, final: bool = True,
                live: bool = False) -> AttemptResult:
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
            # a grant before this much speech is provisional: the loop keeps listening
            decisive_s = mode.decisive_speech_s if mode is not None else 0.0
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
        # a look's grant ends the attempt only with enough speech; its denial when more media
        # cannot change it (the decision rule says which)
        done = final or (speech_s >= max(decisive_s, outcome.hold_until_s) if outcome.granted
                         else outcome.final)
        if final and live and outcome.granted and speech_s < outcome.hold_until_s:
            outcome = dataclasses.replace(
                outcome, granted=False,
                reason=f"[{outcome.mode}] the voice did not confirm {outcome.candidate} on its "
                       f"own and the attempt ended at {speech_s:.1f} s of speech, before the "
                       f"{outcome.hold_until_s:g} s a live door listens for: keep speaking")
        return AttemptResult(
            granted=outcome.granted, identity=outcome.candidate if outcome.granted else None,
            reason=outcome.reason, scores=outcome.scores, latencies_ms={},
            candidate=outcome.candidate, face_match=outcome.face_match,
            voice_match=outcome.voice_match, liveness=outcome.liveness, speech_s=speech_s,
            mode=outcome.mode, final=done,
            needs="" if done else ("keep speaking" if outcome.granted else _needs(outcome)),
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
