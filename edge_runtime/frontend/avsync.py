"""Audio-visual synchrony: is the face in front of the camera the one that is speaking?

Training-free. Per camera frame, the mouth opening is measured with dlib's 68-point landmarks
(outer-lip height over the inter-ocular distance, so it does not depend on the distance to the
camera); per frame time, the speech envelope is the log energy of the 1-4 kHz band (``BAND_HZ``,
where the lip-shaped consonant and vowel-formant energy is) in 40 ms around that instant. The
band energy is kept up to date chunk by chunk during capture (``BandEnergy``), so the decision
only looks values up. A person who speaks
opens the mouth as the energy rises: the frame-to-frame CHANGES of both series correlate at
the right lag (differences remove slow drifts that any two speech-like series share). A still
photo has no mouth motion; another person's voice, or the person's own recording shifted by
>= 0.3 s, has an envelope that does not follow this mouth at that lag. The score compares the
correlation at the expected lag (within +-40 ms) with the correlations at far lags
(0.24-0.8 s either way), which are what chance gives for this mouth and this audio: a z-score,
so a mouth that merely moves a lot, or audio that is merely loud, does not score high.

Pure numpy + dlib; no torch. ``benchmarks/avsync.md`` measures it on the GRID clips.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from scipy.signal import butter, sosfilt

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frontend.face import SIXTY_EIGHT_POINT_DAT, load_shape_predictor

# outer-lip landmark pairs (upper, lower) of dlib's 68-point model, and the outer eye corners
# (the scale: inter-ocular distance does not change while the person speaks, mouth width does).
# On the 7 GRID clips the outer-lip height gave a higher sync AUC than the inner-lip gap or the
# mouth area (1.5 s windows: 0.94 vs 0.91 for shifted audio), see benchmarks/avsync.md.
_OUTER_LIPS = ((50, 58), (51, 57), (52, 56))
_EYE_CORNERS = (36, 45)
#: seconds of audio around each frame time whose energy is the envelope sample
ENVELOPE_WINDOW_S = 0.04
FLOOR_DB = -100.0
# added to the spread of the far-lag correlations so that a short window whose far lags happen
# to agree closely cannot turn a small correlation into a large z-score
_SPREAD_FLOOR = 0.05


#: the 68-point model was trained on HOG-detector boxes; another detector's box is first
#: moved and scaled to where HOG would put it: (centre shift x, y in box widths/heights, scale),
#: the medians over 237 LFW photos where both detectors found one face (measured once with
#: both detectors on LFW, never on the GRID clips that evaluate AV sync). Without it the
#: landmarks of some CNN frames land 12 px higher and the sync AUC drops to ~0.8.
TO_HOG_BOX: dict[str, tuple[float, float, float]] = {"cnn": (0.0789, 0.0737, 1.0947)}


def as_hog_box(box: Sequence[float], kind: str | None) -> tuple[float, float, float, float]:
    """``box`` (x0, y0, x1, y1) of a ``kind`` detector in the HOG detector's convention."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if kind is None or kind == "hog":
        return x0, y0, x1, y1
    if kind not in TO_HOG_BOX:
        raise ConfigError(f"no box convention measured for face detector {kind!r} (known: hog, "
                          f"{', '.join(TO_HOG_BOX)})")
    dx, dy, scale = TO_HOG_BOX[kind]
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + dx * w, (y0 + y1) / 2 + dy * h
    return cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2


class MouthTracker:
    """Mouth opening of a face whose box a detector already found (one 68-point fit, ~1 ms)."""

    def __init__(self, predictor_path: str | Path | None = None) -> None:
        self._predictor, self._path = load_shape_predictor(predictor_path, SIXTY_EIGHT_POINT_DAT)

    def opening(self, image: np.ndarray, box: Sequence[float], kind: str | None = "hog") -> float:
        """Outer-lip height / inter-ocular distance of the face in ``box`` (x0, y0, x1, y1)
        found by a ``kind`` detector ("hog", "cnn")."""
        x0, y0, x1, y1 = (int(round(v)) for v in as_hog_box(box, kind))
        shape = self._predictor(image, dlib.rectangle(x0, y0, x1, y1))
        if shape.num_parts != 68:
            raise ModelError(f"{self._path} predicts {shape.num_parts} landmarks; the 68-point "
                             "model is needed")
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        gap = float(np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in _OUTER_LIPS]))
        scale = float(np.linalg.norm(pts[_EYE_CORNERS[0]] - pts[_EYE_CORNERS[1]]))
        return gap / max(scale, 1e-6)


#: the audio band whose energy is the envelope (see ``calibration/avsync.py``: chosen among a
#: few candidates on GRID, and that choice is inside its nested leave-one-out estimate)
BAND_HZ = (1000.0, 4000.0)


def _band_sos(sample_rate: int, band_hz: tuple[float, float] = BAND_HZ) -> np.ndarray:
    lo, hi = float(band_hz[0]), min(float(band_hz[1]), 0.45 * sample_rate)
    if not 0 < lo < hi:
        raise ConfigError(f"bad AV-sync band {band_hz} Hz at {sample_rate} Hz")
    return butter(4, [lo, hi], btype="band", fs=sample_rate, output="sos")


class BandEnergy:
    """Running band energy (``BAND_HZ``) of audio as it arrives: a causal band filter whose state is
    kept between chunks, and the cumulative sum of the squared filtered samples. The loop
    pushes each chunk while the person speaks, so at the decision an envelope sample is two
    look-ups (``speech_envelope``) instead of a filter pass over the whole recording.

    Pushing chunk by chunk gives the same numbers as one push of the whole audio."""

    def __init__(self, sample_rate: int, start: float = 0.0,
                 band_hz: tuple[float, float] = BAND_HZ) -> None:
        self.sample_rate = int(sample_rate)
        self.start = float(start)
        self._sos = _band_sos(self.sample_rate, band_hz)
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._csum = np.zeros(1 << 15)
        self._n = 0  # samples pushed; _csum[:_n + 1] is valid

    @classmethod
    def of(cls, audio: np.ndarray, sample_rate: int, start: float = 0.0,
           band_hz: tuple[float, float] = BAND_HZ) -> BandEnergy:
        """The energy index of a whole recording (sample 0 at ``start`` s)."""
        out = cls(sample_rate, start, band_hz)
        out.push(audio)
        return out

    def push(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return
        y, self._zi = sosfilt(self._sos, x, zi=self._zi)
        need = self._n + 1 + x.size
        if need > self._csum.size:
            grown = np.zeros(max(need, 2 * self._csum.size))
            grown[: self._n + 1] = self._csum[: self._n + 1]
            self._csum = grown
        self._csum[self._n + 1: need] = self._csum[self._n] + np.cumsum(y * y)
        self._n += x.size

    @property
    def samples(self) -> int:
        return self._n

    def starting_at(self, start: float) -> BandEnergy:
        """The same audio with sample 0 at ``start`` s (a recording played late or early)."""
        out = copy.copy(self)
        out.start = float(start)
        return out

    def cumulative(self) -> np.ndarray:
        """Cumulative energy, index i = sum over the first i filtered samples (a view)."""
        return self._csum[: self._n + 1]


def speech_band(audio: np.ndarray, sample_rate: int,
                band_hz: tuple[float, float] = BAND_HZ) -> np.ndarray:
    """The envelope band of the audio (4th-order Butterworth, causal: the filter
    ``BandEnergy`` runs on live chunks), for inspection and tests."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    return sosfilt(_band_sos(sample_rate, band_hz), x) if x.size else x


def speech_envelope(energy: BandEnergy, times: np.ndarray,
                    window_s: float = ENVELOPE_WINDOW_S) -> np.ndarray:
    """Log energy (dB) of the band audio in a window centred on each time; a time outside the
    audio gets the floor (-100 dB)."""
    csum, sr = energy.cumulative(), energy.sample_rate
    n = csum.size - 1
    half = max(1, int(round(window_s * sr / 2)))
    out = np.full(np.shape(times), FLOOR_DB)
    if n == 0:
        return out
    c = np.rint((np.asarray(times, dtype=np.float64) - energy.start) * sr).astype(np.int64)
    a, b = np.clip(c - half, 0, n), np.clip(c + half, 0, n)
    ok = b - a >= half
    e = (csum[b[ok]] - csum[a[ok]]) / (b[ok] - a[ok])
    out[ok] = 10.0 * np.log10(e + 1e-10)
    return out


@dataclass(frozen=True)
class SyncResult:
    """``score``: how far the correlation at the expected lag stands above the correlations at
    far lags, in units of their spread (a z-score; 0 when not measurable); ``near``: that
    correlation; ``lag_s``: the near lag it was found at; ``peak_lag_s``: the lag of the highest
    correlation over the whole search (an audio track shifted by 0.5 s peaks near 0.5 s);
    ``motion``: std of the mouth opening (a photo ~0); ``frames``: mouth samples used;
    ``reason``: why not measurable (empty when measured)."""

    score: float
    near: float
    lag_s: float
    peak_lag_s: float
    motion: float
    frames: int
    reason: str = ""

    @property
    def measured(self) -> bool:
        return not self.reason

    def describe(self) -> str:
        if not self.measured:
            return f"AV sync not measurable ({self.reason})"
        return (f"AV sync {self.score:.2f} (correlation {self.near:.2f} at lag "
                f"{self.lag_s * 1e3:+.0f} ms, peak at {self.peak_lag_s * 1e3:+.0f} ms, "
                f"{self.frames} frames)")


@dataclass(frozen=True)
class SyncConfig:
    """``offset_s``: expected audio delay behind the lips (capture latency of a real camera
    and microphone; 0 for a file); ``near_s``: tolerance around it; ``far_s``: the lags
    (from, to) whose correlations are the null reference; ``min_motion``: std of the mouth
    opening below which the mouth did not move (a still picture); ``min_frames``: mouth samples
    needed; ``lag_step_s``: spacing of the lag search."""

    offset_s: float = 0.0
    near_s: float = 0.04
    far_s: tuple[float, float] = (0.24, 0.8)
    min_motion: float = 0.004
    min_frames: int = 15
    lag_step_s: float = 0.04
    envelope_window_s: float = ENVELOPE_WINDOW_S

    def __post_init__(self) -> None:
        if not (0 <= self.near_s < self.far_s[0] < self.far_s[1] < 2) or self.min_motion < 0 \
                or self.min_frames < 3 or not 0 < self.lag_step_s <= self.far_s[0]:
            raise ConfigError(f"bad AV-sync settings {self}")


def _diff_corr_rows(m: np.ndarray, env: np.ndarray, min_frames: int) -> np.ndarray:
    """Correlation of the frame-to-frame changes of ``m`` with those of each row of ``env``,
    over the frames whose envelope sample lies inside the audio (NaN: too few of them). The
    audio covers one stretch of time, so the frames inside form one run per row: the changes
    between consecutive inside frames are the changes whose both ends are inside."""
    inside = env > FLOOR_DB
    pair = inside[:, 1:] & inside[:, :-1]
    k = pair.sum(axis=1)
    da = np.where(pair, np.diff(m)[None, :], 0.0)
    db = np.where(pair, np.diff(env, axis=1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        da = np.where(pair, da - (da.sum(axis=1) / np.maximum(k, 1))[:, None], 0.0)
        db = np.where(pair, db - (db.sum(axis=1) / np.maximum(k, 1))[:, None], 0.0)
        s = np.sqrt(np.sum(da * da, axis=1) * np.sum(db * db, axis=1))
        corr = np.where(s < 1e-12, 0.0, np.sum(da * db, axis=1) / np.where(s < 1e-12, 1.0, s))
    corr[(inside.sum(axis=1) < min_frames) | (k < 3)] = math.nan
    return corr


def sync_score(times: Sequence[float], mouth: Sequence[float], energy: BandEnergy,
               *, audio_start: float | None = None,
               config: SyncConfig | None = None) -> SyncResult:
    """Score the mouth opening at ``times`` against the band energy of the audio (sample 0 at
    ``energy.start`` s, or at ``audio_start`` s when given: a shifted recording), see the
    module doc.

    Frames need not be evenly spaced (the loop may skip some): the envelope is sampled at the
    same instants, shifted by each candidate lag, so both series always line up in time.
    """
    cfg = config or SyncConfig()
    if audio_start is not None:
        energy = energy.starting_at(audio_start)
    t = np.asarray(times, dtype=np.float64)
    m = np.asarray(mouth, dtype=np.float64)
    if t.shape != m.shape:
        raise ConfigError(f"{t.size} frame times but {m.size} mouth samples")
    order = np.argsort(t)
    t, m = t[order], m[order]
    motion = float(np.std(m)) if m.size else 0.0
    if m.size < cfg.min_frames:
        return SyncResult(0.0, 0.0, 0.0, 0.0, motion, int(m.size),
                          f"{m.size} mouth frames < {cfg.min_frames} needed")
    if motion < cfg.min_motion:
        return SyncResult(0.0, 0.0, 0.0, 0.0, motion, int(m.size),
                          f"the mouth does not move (std {motion:.4f} < {cfg.min_motion:g}): "
                          "a still picture?")
    step = cfg.lag_step_s  # lags on a fixed grid: frames may be irregular or skipped
    n_far = int(math.floor(cfg.far_s[1] / step + 1e-9))
    lags = np.arange(-n_far, n_far + 1) * step
    env = speech_envelope(energy, t[None, :] + cfg.offset_s + lags[:, None],
                          cfg.envelope_window_s)
    corr = _diff_corr_rows(m, env, cfg.min_frames)
    near = (np.abs(lags) <= cfg.near_s + 1e-9) & np.isfinite(corr)
    far = (np.abs(lags) >= cfg.far_s[0] - 1e-9) & np.isfinite(corr)
    if not near.any() or far.sum() < 3:
        return SyncResult(0.0, 0.0, 0.0, 0.0, motion, int(m.size),
                          "the audio does not cover the frames")
    i_near = int(np.flatnonzero(near)[np.argmax(corr[near])])
    i_peak = int(np.nanargmax(corr))
    ref = corr[far]
    score = (corr[i_near] - float(np.mean(ref))) / (float(np.std(ref)) + _SPREAD_FLOOR)
    return SyncResult(float(score), float(corr[i_near]), float(lags[i_near]),
                      float(lags[i_peak]), motion, int(m.size))
