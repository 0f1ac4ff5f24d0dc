"""Speech gate: how much of a recording is voice, where it is, and the voiced part alone.

The loop waits for >= 2 s of *speech*, not 2 s of audio, and the voice embedding is computed on
the voiced part only (silence and room noise would pull it towards an average speaker).

Backends: Silero VAD v5/v6 (the ONNX file shipped in the ``silero_vad`` wheel, run with
onnxruntime; silero's Python package is never imported since it imports torch), or WebRTC
VAD (``webrtcvad-wheels``) when that file is absent. The fallback is explicit: ``backend="auto"``
picks it and says so in ``SpeechGate.note`` and a logged warning; ``backend="silero"`` with a
missing model is an error.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_runtime.errors import AudioError, ConfigError, DependencyError, ModelError
from edge_runtime.frontend.audio import TARGET_SR

log = logging.getLogger(__name__)

BACKENDS = ("silero", "webrtc", "auto")
SILERO_FRAME = 512  # samples per decision at 16 kHz (32 ms), fixed by the model
SILERO_CONTEXT = 64  # trailing samples of the previous frame prepended to each frame (v5/v6)
WEBRTC_FRAME = 480  # 30 ms, the longest frame WebRTC VAD accepts


def silero_model_path() -> Path | None:
    """``silero_vad/data/silero_vad.onnx`` of the installed wheel, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "silero_vad.onnx"
    return path if path.is_file() else None


@dataclass(frozen=True)
class SegmentRules:
    """Turning per-frame probabilities into segments, with Silero's defaults.

    Hysteresis: speech starts at ``threshold`` and ends only after ``min_silence_s`` below
    ``threshold - 0.15``; segments shorter than ``min_speech_s`` are dropped (clicks, coughs);
    each kept segment is padded by ``pad_s`` so word onsets and endings are not clipped.
    """

    threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    pad_s: float = 0.03

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        for name in ("min_speech_s", "min_silence_s", "pad_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"VAD {name} must be >= 0, got {getattr(self, name)}")

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)


class _Engine(Protocol):
    """Per-stream recurrent state: one ``prob`` call per consecutive frame."""

    def prob(self, frame: np.ndarray) -> float: ...


class _SileroEngine:
    def __init__(self, session: object) -> None:
        self._session = session
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, SILERO_CONTEXT), dtype=np.float32)
        self._sr = np.array(TARGET_SR, dtype=np.int64)

    def prob(self, frame: np.ndarray) -> float:
        x = np.concatenate([self._context, frame[None, :]], axis=1)
        out, self._state = self._session.run(  # type: ignore[attr-defined]
            None, {"input": x, "state": self._state, "sr": self._sr}
        )
        self._context = x[:, -SILERO_CONTEXT:]
        return float(out[0, 0])


class _WebrtcEngine:
    def __init__(self, mode: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)

    def prob(self, frame: np.ndarray) -> float:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return 1.0 if self._vad.is_speech(pcm, TARGET_SR) else 0.0


def _check_wav(wav: np.ndarray, what: str = "VAD input") -> np.ndarray:
    if not isinstance(wav, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(wav).__name__}")
    if wav.dtype != np.float32:
        raise TypeError(f"{what} must be float32 samples in [-1, 1], got dtype {wav.dtype}")
    if wav.ndim != 1:
        raise AudioError(f"{what} must be mono (1-D), got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{what} contains NaN or infinite samples")
    return wav


class SpeechStream:
    """Incremental VAD over chunks of any size as they arrive from a microphone.

    Pushing a recording in pieces gives exactly the probabilities of one ``speech_probs``
    call on the whole (the model state is carried over), so the loop need not re-run the
    VAD on everything it has collected at every poll.
    """

    def __init__(self, engine: _Engine, frame: int, rules: SegmentRules) -> None:
        self._engine = engine
        self.frame = frame
        self.rules = rules
        self._pending = np.zeros(0, dtype=np.float32)
        self._probs: list[float] = []
        self.n_samples = 0
        self._finished = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed 16 kHz mono float32; returns the probabilities of the frames completed."""
        if self._finished:
            raise RuntimeError("SpeechStream.push after finish()")
        _check_wav(samples)
        self.n_samples += samples.shape[0]
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = data.shape[0] // self.frame * self.frame
        new = [self._engine.prob(data[i : i + self.frame]) for i in range(0, whole, self.frame)]
        self._pending = data[whole:].copy()
        self._probs.extend(new)
        return np.asarray(new, dtype=np.float32)

    def finish(self) -> None:
        """End of recording: the trailing partial frame is zero-padded and scored (as Silero
        does), so the last few milliseconds count too."""
        if not self._finished and self._pending.size:
            frame = np.zeros(self.frame, dtype=np.float32)
            frame[: self._pending.size] = self._pending
            self._probs.append(self._engine.prob(frame))
            self._pending = np.zeros(0, dtype=np.float32)
        self._finished = True

    @property
    def probs(self) -> np.ndarray:
        return np.asarray(self._probs, dtype=np.float32)

    def segments(self) -> list[tuple[float, float]]:
        """Speech (start_s, end_s) over the audio scored so far."""
        n = self.n_samples if self._finished else len(self._probs) * self.frame
        spans = segments_from_probs(self._probs, self.frame, n, self.rules)
        return [(a / TARGET_SR, b / TARGET_SR) for a, b in spans]

    def speech_seconds(self) -> float:
        return sum(b - a for a, b in self.segments())

    def silence_after_speech(self) -> float | None:
        """Seconds scored since the last speech segment ended (None: no speech yet): how
        long the person has been quiet after speaking."""
        segs = self.segments()
        if not segs:
            return None
        scored = (self.n_samples if self._finished else len(self._probs) * self.frame) / TARGET_SR
        return max(0.0, scored - segs[-1][1])


def segments_from_probs(
    probs: list[float] | np.ndarray, frame: int, n_samples: int, rules: SegmentRules
) -> list[tuple[int, int]]:
    """Sample spans of speech: Silero's ``get_speech_timestamps_from_probs`` (without its
    max-duration splitting, which a few-second attempt never reaches), for any frame size."""
    sr = TARGET_SR
    min_speech = sr * rules.min_speech_s
    min_silence = sr * rules.min_silence_s
    pad = int(sr * rules.pad_s)
    spans: list[list[int]] = []
    triggered = False
    start = temp_end = 0
    for i, p in enumerate(probs):
        cur = frame * i
        if p >= rules.threshold and temp_end:
            temp_end = 0
        if p >= rules.threshold and not triggered:
            triggered, start = True, cur
            continue
        if p < rules.neg_threshold and triggered:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                spans.append([start, temp_end])
            triggered, temp_end = False, 0
    if triggered and n_samples - start > min_speech:
        spans.append([start, n_samples])
    for i, span in enumerate(spans):  # pad, splitting a short gap between neighbours evenly
        if i == 0:
            span[0] = max(0, span[0] - pad)
        if i + 1 < len(spans):
            gap = spans[i + 1][0] - span[1]
            if gap < 2 * pad:
                span[1] += gap // 2
                spans[i + 1][0] = max(0, spans[i + 1][0] - gap // 2)
            else:
                span[1] = min(n_samples, span[1] + pad)
                spans[i + 1][0] = max(0, spans[i + 1][0] - pad)
        else:
            span[1] = min(n_samples, span[1] + pad)
    return [(a, b) for a, b in spans]


class SpeechGate:
    """Voice activity on 16 kHz mono float32 audio, one backend chosen at construction.

    ``backend``: "silero" (needs the wheel's ONNX file), "webrtc", or "auto" (Silero if the
    file is there, else WebRTC with the reason in ``note``). ``webrtc_mode`` is WebRTC's
    aggressiveness 0..3 (3 rejects most non-speech noise).
    """

    def __init__(
        self,
        backend: str = "silero",
        threshold: float = 0.5,
        *,
        model_path: str | Path | None = None,
        webrtc_mode: int = 3,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.1,
        pad_s: float = 0.03,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"VAD backend must be one of {BACKENDS}, got {backend!r}")
        if webrtc_mode not in (0, 1, 2, 3):
            raise ConfigError(f"webrtc_mode must be 0..3, got {webrtc_mode!r}")
        self.rules = SegmentRules(threshold, min_speech_s, min_silence_s, pad_s)
        self.note: str | None = None
        self._webrtc_mode = webrtc_mode
        self._session: object | None = None
        path = Path(model_path) if model_path is not None else silero_model_path()
        if backend == "auto":
            if path is not None and path.is_file():
                backend = "silero"
            else:
                backend = "webrtc"
                where = path if path is not None else "silero_vad/data/silero_vad.onnx"
                self.note = (
                    f"Silero VAD model not found ({where}; pip install --no-deps silero-vad): "
                    f"using WebRTC VAD"
                )
                log.warning(self.note)
        self.backend = backend
        if backend == "silero":
            self.model_path = _require_model(path)
            self._session = _load_session(self.model_path)
        else:
            self.model_path = None
            _require_webrtcvad()
        self.frame = SILERO_FRAME if backend == "silero" else WEBRTC_FRAME

    @property
    def threshold(self) -> float:
        return self.rules.threshold

    def stream(self) -> SpeechStream:
        """A fresh incremental VAD (own model state) for one attempt's audio."""
        engine: _Engine
        if self.backend == "silero":
            engine = _SileroEngine(self._session)
        else:
            engine = _WebrtcEngine(self._webrtc_mode)
        return SpeechStream(engine, self.frame, self.rules)

    def _run(self, wav: np.ndarray) -> SpeechStream:
        s = self.stream()
        s.push(_check_wav(wav))
        s.finish()
        return s

    def speech_probs(self, wav16k: np.ndarray) -> np.ndarray:
        """Per-frame speech probability (float32; 0/1 for WebRTC), one per ``self.frame``."""
        return self._run(wav16k).probs

    def speech_mask(self, wav16k: np.ndarray) -> np.ndarray:
        """Per-frame bool: probability >= threshold (no hysteresis, no padding)."""
        return self.speech_probs(wav16k) >= self.rules.threshold

    def speech_segments(self, wav16k: np.ndarray) -> list[tuple[float, float]]:
        """Speech (start_s, end_s) after hysteresis, minimum durations and padding."""
        return self._run(wav16k).segments()

    def speech_seconds(self, wav16k: np.ndarray) -> float:
        return sum(b - a for a, b in self.speech_segments(wav16k))

    def extract_speech(
        self, wav16k: np.ndarray, segments: list[tuple[float, float]] | None = None
    ) -> np.ndarray:
        """The voiced segments concatenated (padding included); empty if there is no speech.

        Pass ``segments`` from a ``SpeechStream`` to avoid running the VAD a second time.
        """
        _check_wav(wav16k)
        if segments is None:
            segments = self.speech_segments(wav16k)
        parts = [wav16k[round(a * TARGET_SR) : round(b * TARGET_SR)] for a, b in segments]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _require_model(path: Path | None) -> Path:
    if path is None:
        raise ModelError(
            "Silero VAD model not found: the silero_vad wheel is not installed "
            "(pip install --no-deps silero-vad), or use SpeechGate(backend='webrtc')"
        )
    if not path.is_file():
        raise ModelError(
            f"Silero VAD model not found: {path} (pip install --no-deps silero-vad, "
            f"or use SpeechGate(backend='webrtc'))"
        )
    return path


def _load_session(path: Path) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1  # 32 ms frames: threading overhead would exceed the work
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # the wheel's graph has unused initializers ort warns about
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"{path}: not a loadable Silero VAD ONNX model ({e})") from e
    names = {i.name for i in session.get_inputs()}
    if names != {"input", "state", "sr"}:
        raise ModelError(
            f"{path}: unexpected Silero VAD inputs {sorted(names)} (expected input, state, sr; "
            f"v5/v6 model needed)"
        )
    return session


def _require_webrtcvad() -> None:
    if importlib.util.find_spec("webrtcvad") is None:
        raise DependencyError("WebRTC VAD backend needs webrtcvad: pip install webrtcvad-wheels")
