"""Identity-preserving augmentation, numpy/OpenCV, applied to the stored training forms.

Teacher targets are computed once on the un-augmented view (dlib takes ~110 ms a face here,
so per-step teacher calls are not affordable); every augmentation below is one under which
the teacher's embedding is nearly invariant (small geometric jitter, photometric changes,
mirror), so the stored target stays a good target for the augmented view.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class FaceAugment:
    """Flip, crop jitter (shift/scale/rotation), brightness/contrast, blur on grey crops."""

    flip: float = 0.5
    shift_px: float = 4.0
    scale: float = 0.05
    rotate_deg: float = 5.0
    brightness: float = 0.2
    contrast: float = 0.2
    blur_p: float = 0.2

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = crop.shape
        img = crop
        if rng.random() < self.flip:
            img = img[:, ::-1]
        angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
        scale = 1.0 + rng.uniform(-self.scale, self.scale)
        M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
        M[:, 2] += rng.uniform(-self.shift_px, self.shift_px, size=2)
        img = cv2.warpAffine(np.ascontiguousarray(img), M, (w, h), borderMode=cv2.BORDER_REPLICATE)
        if rng.random() < self.blur_p:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
        x = img.astype(np.float32)
        x = (x - 128.0) * (1.0 + rng.uniform(-self.contrast, self.contrast)) + 128.0
        x = x + 255.0 * rng.uniform(-self.brightness, self.brightness) * 0.5
        return np.clip(x, 0, 255).astype(np.uint8)


@dataclass
class VoiceAugment:
    """Crop jitter, gain and additive noise at a random SNR (no reverb: keep crops clean)."""

    jitter_s: float = 0.1
    gain_db: float = 6.0
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)
    # A live probe may hold less than one window of speech (the loop can decide on 0.5 s); the
    # front-end then tiles it to a full window. Training on such tiled short crops matches it.
    short_p: float = 0.0
    short_s: tuple[float, float] = (0.5, 1.5)
    # SpecAugment on the student's log-mel window (Park et al., 2019), the teacher's target
    # unchanged: with probability ``spec_p``, up to ``freq_masks`` bands of at most
    # ``freq_width`` mel bins and ``time_masks`` spans of at most ``time_width`` frames are set to
    # the window's mean (0 after the front-end's mean normalisation). The student must find the
    # voice in what is left, as it must in a band-limited or clipped recording.
    spec_p: float = 0.0
    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_width: int = 20
    # A smooth random equaliser on the student's log-mel window (teacher target unchanged): with
    # probability ``eq_p`` a tilt (up to +-``eq_tilt``) and a bow (up to +-``eq_bow``), in log-mel
    # units across the mel bands, are added. A person's own recordings drift like this (vocal
    # effort, distance to the microphone: SPEAKER0575's later recordings carry +0.4 more in the
    # high bands than her first ones), and a student that keeps the spectral envelope (front-end
    # "level") must learn not to take it for another voice. Per-band normalisation ("band")
    # removes any such curve, so there it would teach nothing real: refused by the task.
    eq_p: float = 0.0
    eq_tilt: float = 0.5
    eq_bow: float = 0.5

    def equalise(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A (frames, mels) window plus a random tilt and bow, with probability ``eq_p``."""
        if self.eq_p <= 0 or rng.random() >= self.eq_p:  # off: no draw, earlier runs repeat
            return feats
        x = np.linspace(-1.0, 1.0, feats.shape[1], dtype=np.float32)
        tilt = rng.uniform(-self.eq_tilt, self.eq_tilt)
        bow = rng.uniform(-self.eq_bow, self.eq_bow)
        curve = tilt * x + bow * (x * x - np.mean(x * x))  # zero mean: the window's level stays
        return (feats + curve[None, :]).astype(np.float32)

    def mask(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A (frames, mels) window with SpecAugment's masks, with probability ``spec_p``."""
        if self.spec_p <= 0 or rng.random() >= self.spec_p:  # off: no draw, earlier runs repeat
            return feats
        out = feats.copy()
        for axis, count, width in ((1, self.freq_masks, self.freq_width), (0, self.time_masks, self.time_width)):
            size = out.shape[axis]
            for _ in range(count):
                w = int(rng.integers(0, min(width, size) + 1))
                a = int(rng.integers(0, size - w + 1))
                if axis == 1:
                    out[:, a : a + w] = 0.0
                else:
                    out[a : a + w] = 0.0
        return out

    def shorten(self, wav: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        """With probability ``short_p``, a random ``short_s``-long piece of the crop."""
        if rng.random() >= self.short_p:
            return wav
        n = min(len(wav), int(rng.uniform(*self.short_s) * sr))
        s = int(rng.integers(0, len(wav) - n + 1))
        return wav[s : s + n]

    def crop(self, wav: np.ndarray, start: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
        """A window of n samples near `start`, shifted by up to `jitter_s`."""
        j = int(rng.uniform(-self.jitter_s, self.jitter_s) * sr)
        s = int(np.clip(start + j, 0, max(0, len(wav) - n)))
        return wav[s : s + n]

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = wav.astype(np.float32) * np.float32(10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20))
        if rng.random() < self.noise_p:
            power = float(np.mean(x**2)) + 1e-10
            snr = rng.uniform(*self.snr_db)
            noise = rng.standard_normal(len(x)).astype(np.float32)
            x = x + noise * np.float32(np.sqrt(power / 10 ** (snr / 10)))
        return np.clip(x, -1.0, 1.0).astype(np.float32)
