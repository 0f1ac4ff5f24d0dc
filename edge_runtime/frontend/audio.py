"""Audio front-end shared by training and the device, so both compute bit-for-bit the same features.

Loading (soundfile for wav/flac/ogg, PyAV for audio inside video containers), mono downmix,
band-limited resampling (soxr), log-mel features with a numpy Slaney filterbank, and the quality
gate the runtime applies before it trusts a recording.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
import soxr

from edge_runtime.errors import AudioError, ConfigError, MediaError

TARGET_SR: int = 16000
#: Extensions read through libsndfile; everything else goes through PyAV (FFmpeg).
SOUNDFILE_EXTS: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".oga"})
#: |x| at or above this counts as clipped: plateaus at digital full scale keep about this level
#: even after resampling adds a little ringing around them.
CLIP_LEVEL: float = 0.99
_RMS_FLOOR: float = 1e-10  # -200 dBFS, so digital silence gives a finite number

# Integer PCM sample formats (FFmpeg names without the planar "p"): offset and full scale.
_AV_INT_SCALE: dict[str, tuple[float, float]] = {
    "u8": (128.0, 128.0),
    "s16": (0.0, 32768.0),
    "s32": (0.0, 2147483648.0),
    "s64": (0.0, 9223372036854775808.0),
}


# --------------------------------------------------------------------------------------- loading
def load_audio(path: str | Path, sr: int = TARGET_SR) -> np.ndarray:
    """Decode any supported file to float32 mono at ``sr``; every failure names the file."""
    p = Path(path)
    check_media_file(p)
    if p.suffix.lower() in SOUNDFILE_EXTS:
        data, sr_in = _read_soundfile(p)
    else:
        data, sr_in = _read_av(p)
    if data.shape[0] == 0:
        raise MediaError(f"{p}: contains no audio samples")
    return resample(to_mono(data), sr_in, sr)


def check_media_file(p: Path) -> None:
    """Refuse missing, non-regular and empty files before a decoder gives a vaguer message."""
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if not p.is_file():
        raise MediaError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes)")


def _read_soundfile(p: Path) -> tuple[np.ndarray, int]:
    """Read with libsndfile, refusing truncated files instead of silently returning a prefix."""
    if p.suffix.lower() == ".wav":
        _check_wav_not_truncated(p)
    try:
        with sf.SoundFile(str(p)) as f:
            declared = f.frames
            data = f.read(dtype="float32", always_2d=True)
            sr_in = int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise MediaError(f"{p}: not a readable audio file ({e})") from e
    if 0 < declared and data.shape[0] < declared:
        raise MediaError(
            f"{p}: truncated: header declares {declared} samples but only {data.shape[0]} decode"
        )
    return data, sr_in


def _check_wav_not_truncated(p: Path) -> None:
    """Rule: a RIFF/WAVE whose data chunk holds fewer bytes than its header declares is corrupt.

    libsndfile clamps such a file to what is present and returns half a recording without a
    word, which would enrol a voiceprint from a cut file. Sizes 0 and 0xFFFFFFFF mean "unknown"
    (written by a streaming recorder) and are accepted.
    """
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # not RIFF/WAVE (RF64, W64, garbage): libsndfile decides and errors clearly
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, clen = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"data":
                present = size - (pos + 8)
                if clen not in (0, 0xFFFFFFFF) and present < clen:
                    raise MediaError(
                        f"{p}: truncated WAV: header declares {clen} bytes of audio data "
                        f"but only {present} are present"
                    )
                return
            pos += 8 + clen + (clen & 1)  # chunks are word-aligned
    raise MediaError(f"{p}: truncated WAV: no complete 'data' chunk")


_NOT_MEDIA = frozenset({"tty", "txt"})  # FFmpeg demuxers that take text files for ANSI "video"


def _read_av(p: Path) -> tuple[np.ndarray, int]:
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                if container.format.name in _NOT_MEDIA:  # FFmpeg reads any text as "video"
                    raise MediaError(f"{p}: not an audio or video file (looks like text)")
                kind = "video without an audio track" if container.streams.video else "no audio"
                raise MediaError(f"{p}: {kind} (no audio stream)")
            stream = container.streams.audio[0]
            chunks: list[np.ndarray] = []
            sr_in = 0
            for frame in container.decode(stream):
                sr_in = _same_rate(p, sr_in, frame.sample_rate)
                chunks.append(av_frame_to_float(frame))
    except av.FFmpegError as e:
        raise MediaError(f"{p}: not a decodable media file ({e})") from e
    if not chunks:
        raise MediaError(f"{p}: contains no audio samples")
    return np.concatenate(chunks, axis=0), sr_in


def _same_rate(p: Path, current: int, new: int) -> int:
    """A stream whose rate changes mid-way cannot be resampled as one signal: refuse it."""
    if current and new != current:
        raise MediaError(f"{p}: audio sample rate changes mid-stream ({current} -> {new} Hz)")
    return int(new)


def av_frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """PyAV audio frame -> float32 (samples, channels) in [-1, 1), any FFmpeg sample format.

    Shared by ``load_audio`` and ``video.decode_clip`` so both scale PCM identically.
    """
    fmt = frame.format.name
    base = fmt[:-1] if frame.format.is_planar else fmt
    arr = frame.to_ndarray()
    n_ch = frame.layout.nb_channels
    arr = arr.T if frame.format.is_planar else arr.reshape(-1, n_ch)
    if base in _AV_INT_SCALE:
        offset, scale = _AV_INT_SCALE[base]
        return ((arr.astype(np.float64) - offset) / scale).astype(np.float32)
    if base in ("flt", "dbl"):
        return arr.astype(np.float32)
    raise MediaError(f"unsupported audio sample format {fmt!r}")


def to_mono(x: np.ndarray) -> np.ndarray:
    """Mean of channels; ``x`` is 1-D or (samples, channels), the soundfile layout."""
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"to_mono expects float samples in [-1, 1], got dtype {x.dtype}")
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"to_mono expects 1-D or (samples, channels), got shape {x.shape}")
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr HQ): content above the new Nyquist is filtered, not aliased."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    return np.asarray(soxr.resample(x, sr_in, sr_out, quality="HQ"), dtype=np.float32)


# -------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class LogMelConfig:
    """Feature parameters; stored in every model manifest so the device reproduces training."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"LogMelConfig.{name} must be a positive int, got {v!r}")
        for name in ("fmin", "fmax", "log_floor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"LogMelConfig.{name} must be a finite number, got {v!r}")
        if not 40 <= self.n_mels <= 80:
            raise ConfigError(f"LogMelConfig.n_mels must be in 40..80, got {self.n_mels}")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"LogMelConfig.win_length ({self.win_length}) exceeds n_fft ({self.n_fft})"
            )
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(
                f"LogMelConfig needs 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} "
                f"fmax={self.fmax} sample_rate={self.sample_rate}"
            )
        if self.log_floor <= 0:
            raise ConfigError(f"LogMelConfig.log_floor must be > 0, got {self.log_floor}")

    def frames(self, n_samples: int) -> int:
        """Frame count without centering: only whole windows, no padding at either end."""
        if n_samples < self.win_length:
            return 0
        return 1 + (n_samples - self.win_length) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogMelConfig:
        """Strict: an unknown key in a manifest means a mismatched front-end, so refuse it."""
        if not isinstance(d, dict):
            raise ConfigError(f"LogMelConfig.from_dict expects a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"LogMelConfig: unknown keys {unknown}")
        return cls(**d)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney auditory-toolbox scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    lin = f / f_sp
    log = min_log_hz / f_sp + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    lin = m * f_sp
    log = min_log_hz * np.exp(logstep * (np.maximum(m, min_log_mel) - min_log_mel))
    return np.where(m >= min_log_mel, log, lin)


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
    """(n_mels, n_fft//2+1) Slaney-normalised triangles; cached per (frozen, hashable) config."""
    fft_hz = np.fft.rfftfreq(cfg.n_fft, d=1.0 / cfg.sample_rate)
    mels = np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2)
    edges = _mel_to_hz(mels)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per band (norm="slaney")
    weights.setflags(write=False)  # shared through the cache: nobody may edit it
    return weights


@dataclass(frozen=True)
class _SparseMel:
    """The filterbank's non-zero weights, band after band (each triangle is one contiguous run).

    Projecting with these is a gather, a multiply and a segment sum: ~470 products per frame
    instead of a dense (257 x 64) matrix product. The dense product went through BLAS, whose
    thread pool on a loaded 2-core board cost 0.4-8 ms per 2 s probe (the 8 ms measured in
    issue 15); the sparse one is single-threaded numpy and does the same sums.
    """

    bins: np.ndarray  # (nnz,) FFT bin of each weight
    weights: np.ndarray  # (nnz,) float64
    starts: np.ndarray  # (bands with weights,) offset of each band's run in bins/weights
    bands: np.ndarray  # (bands with weights,) which mel band each run belongs to
    n_mels: int

    def project(self, power: np.ndarray) -> np.ndarray:
        """(T, n_fft//2+1) power -> (T, n_mels) mel power; a band with no weight gives 0."""
        prod = power[:, self.bins] * self.weights
        out = np.zeros((power.shape[0], self.n_mels), dtype=np.float64)
        if self.starts.size:
            out[:, self.bands] = np.add.reduceat(prod, self.starts, axis=1)
        return out


@functools.lru_cache(maxsize=8)
def _sparse_mel(cfg: LogMelConfig) -> _SparseMel:
    """Cached per config, like the dense filterbank it is cut from."""
    fb = mel_filterbank(cfg)
    rows, bins = np.nonzero(fb)  # row-major: band after band, bins ascending within a band
    bands, starts = np.unique(rows, return_index=True)
    return _SparseMel(bins.astype(np.intp), fb[rows, bins], starts.astype(np.intp),
                      bands.astype(np.intp), cfg.n_mels)


@functools.lru_cache(maxsize=8)
def _window(win_length: int) -> np.ndarray:
    """Periodic Hann (scipy/librosa fftbins=True); zero-padding to n_fft only changes phase."""
    n = np.arange(win_length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    w.setflags(write=False)
    return w


def log_mel(x: np.ndarray, cfg: LogMelConfig = LogMelConfig()) -> np.ndarray:  # noqa: B008
    """(T, n_mels) float32 log-mel power, T = 1 + (len - win_length) // hop_length.

    No centering (no padding at the ends): frame t covers x[t*hop : t*hop + win_length], so
    streaming on the device yields exactly the frames training saw. Each frame is Hann-windowed,
    zero-padded to n_fft (power spectrum, |FFT|^2), projected on the Slaney mel filterbank and
    log(max(mel, log_floor)). Computed in float64, returned as float32. The mel projection
    uses only the filterbank's non-zero weights (no BLAS call: see `_SparseMel`).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"log_mel expects a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"log_mel expects float32 samples, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"log_mel expects a 1-D mono signal, got shape {x.shape}")
    if x.shape[0] < cfg.win_length:
        raise AudioError(
            f"signal of {x.shape[0]} samples is shorter than one analysis window "
            f"({cfg.win_length} samples = {1000 * cfg.win_length / cfg.sample_rate:.0f} ms)"
        )
    if not np.isfinite(x).all():
        raise ValueError("log_mel input contains NaN or infinite samples")
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length)[:: cfg.hop_length]
    spec = np.fft.rfft(frames * _window(cfg.win_length), n=cfg.n_fft, axis=1)  # one batched FFT
    power = spec.real**2 + spec.imag**2
    mel = _sparse_mel(cfg).project(power)
    np.maximum(mel, cfg.log_floor, out=mel)
    return np.log(mel, out=mel).astype(np.float32)


def mean_normalize(feats: np.ndarray) -> np.ndarray:
    """Subtract the per-utterance mean of each band: removes channel (microphone) colouring."""
    _check_feats(feats)
    return (feats - feats.mean(axis=0, dtype=np.float64)).astype(np.float32)


def fixed_windows(feats: np.ndarray, n_frames: int, hop_frames: int) -> np.ndarray:
    """(W, n_frames, n_mels) windows covering every frame of the utterance.

    Windows start every ``hop_frames``; if the last one stops short of the end, one more window
    aligned to the end is added. An utterance shorter than one window is tiled (wrap-padded) to
    ``n_frames`` and gives a single window, so short probes still get an embedding.
    """
    _check_feats(feats)
    if n_frames < 1 or hop_frames < 1:
        raise ValueError(f"n_frames and hop_frames must be >= 1, got {n_frames}, {hop_frames}")
    t = feats.shape[0]
    if t <= n_frames:
        return np.ascontiguousarray(feats[np.arange(n_frames) % t][None], dtype=np.float32)
    starts = list(range(0, t - n_frames + 1, hop_frames))
    if starts[-1] + n_frames < t:
        starts.append(t - n_frames)
    idx = np.asarray(starts)[:, None] + np.arange(n_frames)[None, :]
    return np.ascontiguousarray(feats[idx], dtype=np.float32)


def _check_feats(feats: np.ndarray) -> None:
    if not isinstance(feats, np.ndarray) or feats.ndim != 2 or feats.shape[0] == 0:
        shape = getattr(feats, "shape", type(feats).__name__)
        raise ValueError(f"expected (T>0, n_mels) features, got {shape}")
    if feats.dtype != np.float32:
        raise TypeError(f"expected float32 features, got dtype {feats.dtype}")


# --------------------------------------------------------------------------------------- quality
@dataclass
class AudioQuality:
    """Level measures; dBFS is 20*log10(RMS) with full scale 1.0 (a full-scale sine is -3 dBFS)."""

    duration_s: float
    rms_dbfs: float
    peak: float
    clipped_fraction: float


def audio_quality(x: np.ndarray, sr: int) -> AudioQuality:
    """Measure before deciding: the runtime logs these numbers next to every rejection."""
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"audio_quality expects 1-D float samples, got {x.dtype} {x.shape}")
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    n = x.shape[0]
    if n == 0:
        return AudioQuality(0.0, 20.0 * math.log10(_RMS_FLOOR), 0.0, 0.0)
    x64 = x.astype(np.float64)
    rms = math.sqrt(float(np.mean(x64 * x64)))
    mag = np.abs(x64)
    return AudioQuality(
        duration_s=n / sr,
        rms_dbfs=20.0 * math.log10(max(rms, _RMS_FLOOR)),
        peak=float(mag.max()),
        clipped_fraction=float(np.count_nonzero(mag >= CLIP_LEVEL)) / n,
    )


def check_audio(
    x: np.ndarray,
    sr: int,
    *,
    source: str,
    min_seconds: float = 1.0,
    min_rms_dbfs: float = -50.0,
    max_clipped: float = 0.01,
) -> AudioQuality:
    """Refuse audio no voiceprint should be built from; the message names ``source``."""
    q = audio_quality(x, sr)
    if q.duration_s < min_seconds:
        raise AudioError(f"{source}: too short ({q.duration_s:.2f} s < {min_seconds:g} s)")
    if q.rms_dbfs < min_rms_dbfs:
        raise AudioError(
            f"{source}: silence only (level {q.rms_dbfs:.1f} dBFS < {min_rms_dbfs:g} dBFS)"
        )
    if q.clipped_fraction > max_clipped:
        raise AudioError(
            f"{source}: clipped ({q.clipped_fraction:.1%} of samples at full scale "
            f"> {max_clipped:.1%})"
        )
    return q
