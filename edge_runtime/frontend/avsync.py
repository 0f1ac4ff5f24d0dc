"""Audio-visual synchrony: is the face in front of the camera the one that is speaking?

Training-free. Per camera frame, the mouth opening is measured with dlib's 68-point landmarks
(inner-lip gap over mouth width, so it does not depend on the distance to the camera); per
frame time, the speech envelope is the log energy of the 300-3000 Hz band around that instant. A person who speaks
opens the mouth as the energy rises: the frame-to-frame CHANGES of both series correlate at
the right lag (differences remove slow drifts that any two speech-like series share). A still
photo has no mouth motion; another person's voice, or the person's own recording shifted by
>= 0.3 s, has an envelope that does not follow this mouth at that lag. The score compares the
correlation at the expected lag (within +-40 ms) with the correlations at far lags
(0.24-0.8 s either way), which are what chance gives for this mouth and this audio: a z-score,
so a mouth that merely moves a lot, or audio that is merely loud, does not score high.

Pure numpy + dlib; no torch. ``benchmarks/attacks.md`` measures it on the GRID clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from scipy.signal import butter, sosfiltfilt

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


class MouthTracker:
    """Mouth opening of a face whose box a detector already found (one 68-point fit, ~1 ms)."""

    def __init__(self, predictor_path: str | Path | None = None) -> None:
        self._predictor, self._path = load_shape_predictor(predictor_path, SIXTY_EIGHT_POINT_DAT)

    def opening(self, image: np.ndarray, box: Sequence[float]) -> float:
        """Outer-lip height / inter-ocular distance of the face in ``box`` (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(image, dlib.rectangle(x0, y0, x1, y1))
        if shape.num_parts != 68:
            raise ModelError(f"{self._path} predicts {shape.num_parts} landmarks; the 68-point "
                             "model is needed")
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        gap = float(np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in _OUTER_LIPS]))
        scale = float(np.linalg.norm(pts[_EYE_CORNERS[0]] - pts[_EYE_CORNERS[1]]))
        return gap / max(scale, 1e-6)


def speech_envelope(audio: np.ndarray, sample_rate: int, times: np.ndarray,
                    start: float = 0.0, window_s: float = ENVELOPE_WINDOW_S) -> np.ndarray:
    """Log energy (dB) of ``audio`` (sample 0 at ``start`` s) in a window centred on each time;
    a time outside the audio gets the floor (-100 dB). Pass band-limited audio
    (``speech_band``): energy below 300 Hz (hum, breath, footsteps) does not move the lips."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    half = max(1, int(round(window_s * sample_rate / 2)))
    out = np.full(len(times), FLOOR_DB)
    if x.size == 0:
        return out
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    c = np.rint((np.asarray(times, dtype=np.float64) - start) * sample_rate).astype(np.int64)
    a, b = np.clip(c - half, 0, x.size), np.clip(c + half, 0, x.size)
    ok = b - a >= half
    energy = (csum[b[ok]] - csum[a[ok]]) / (b[ok] - a[ok])
    out[ok] = 10.0 * np.log10(energy + 1e-10)
    return out


def speech_band(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """300-3000 Hz band of the audio (4th-order Butterworth, zero phase): the band where
    the energy follows the mouth opening."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < 64:
        return x
    sos = butter(4, [300.0, min(3000.0, 0.45 * sample_rate)], btype="band", fs=sample_rate,
                 output="sos")
    return sosfiltfilt(sos, x)


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

    def __post_init__(self) -> None:
        if not (0 <= self.near_s < self.far_s[0] < self.far_s[1] < 2) or self.min_motion < 0 \
                or self.min_frames < 3 or not 0 < self.lag_step_s <= self.far_s[0]:
            raise ConfigError(f"bad AV-sync settings {self}")


def _diff_corr(a: np.ndarray, b: np.ndarray) -> float:
    da, db = np.diff(a), np.diff(b)
    if da.size < 3:
        return math.nan
    da, db = da - da.mean(), db - db.mean()
    s = math.sqrt(float(np.sum(da * da)) * float(np.sum(db * db)))
    return 0.0 if s < 1e-12 else float(np.sum(da * db) / s)


def sync_score(times: Sequence[float], mouth: Sequence[float], band_audio: np.ndarray,
               sample_rate: int, *, audio_start: float = 0.0,
               config: SyncConfig | None = None) -> SyncResult:
    """Score the mouth opening at ``times`` against the envelope of ``band_audio`` (the
    output of ``speech_band``; sample 0 at ``audio_start`` s), see the module doc.

    Frames need not be evenly spaced (the loop may skip some): the envelope is sampled at the
    same instants, shifted by each candidate lag, so both series always line up in time.
    """
    cfg = config or SyncConfig()
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
    corr = np.full(lags.size, math.nan)
    for i, lag in enumerate(lags):
        env = speech_envelope(band_audio, sample_rate, t + cfg.offset_s + lag, audio_start)
        inside = env > FLOOR_DB
        if inside.sum() >= cfg.min_frames:
            corr[i] = _diff_corr(m[inside], env[inside])
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
