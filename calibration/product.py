"""Face+voice impostor trials as the PRODUCT of the face and the voice impostor sets.

The joint (face+voice) trials here are ARTIFICIAL identities: an LFW person paired with a
speechocean762 speaker. The two datasets share nobody, so the face score and the voice score of
an impostor trial come from unrelated people and unrelated recordings: independent by
construction. Then ANY face impostor trial may be paired with ANY voice impostor trial: the
fused impostor LLR ``w_f * llr_f + w_v * llr_v + b`` over all pairs is a sample of the joint
impostor distribution of n_face * n_voice pairs instead of the 1890 joint rows, and FAR 1e-3
(or lower) becomes measurable. ``independence`` checks the assumption where joint rows exist
(rank correlation of the face and voice scores of the joint impostor trials).

Nothing is materialised: FAR(t) = sum_i P(B > t - A_i) / n_A with A the face part and B the
voice part (sorted), and the bootstrap works on fine histograms of both parts (their sum's
distribution is a convolution). Intervals resample PEOPLE (probe and template people of each
modality, as ``calibration.people`` does) when their labels are given, else trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.stats import spearmanr

from calibration.people import _factorize
from calibration.thresholds import check_bootstrap, percentile_interval
from edge_runtime.errors import ConfigError
from edge_runtime.operating_points import Fuser, ThresholdPoint

METHOD = "product of face and voice impostor sets (independent by construction)"
_BINS = 4096
MIN_DISTINCT = 30  # different trials of each modality among the accepted impostor pairs


@dataclass
class ProductImpostors:
    """The face part ``a`` and voice part ``b`` (bias included) of the fused impostor LLR, with
    (probe, template) people labels per trial (None: resample trials instead)."""

    a: np.ndarray
    b: np.ndarray
    people_a: np.ndarray | None = None
    people_b: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.a = np.asarray(self.a, np.float64).ravel()
        self.b = np.asarray(self.b, np.float64).ravel()
        if self.a.size == 0 or self.b.size == 0:
            raise ConfigError("a product of impostor sets needs face AND voice impostor trials")
        self._b_sorted = np.sort(self.b)
        self._codes = {k: None if lab is None else
                       (_factorize(np.asarray(lab)[:, 0])[1], _factorize(np.asarray(lab)[:, 1])[1])
                       for k, lab in (("a", self.people_a), ("b", self.people_b))}

    @property
    def n(self) -> int:
        return int(self.a.size) * int(self.b.size)

    def far(self, threshold: float) -> float:
        """Exact FAR of ``threshold`` over all n_face * n_voice pairs (accept iff > t)."""
        above = self.b.size - np.searchsorted(self._b_sorted, threshold - self.a, side="right")
        return float(np.sum(above) / self.n)

    def distinct_above(self, threshold: float) -> tuple[int, int]:
        """How many face trials and how many voice trials take part in a pair > threshold."""
        return (int(np.sum(self.a + self._b_sorted[-1] > threshold)),
                int(np.sum(self.b + float(self.a.max()) > threshold)))

    def threshold_at(self, target_far: float) -> float:
        """The most permissive threshold whose FAR over all pairs is <= ``target_far``
        (bisection on the fused LLR to 1e-6)."""
        lo = float(self.a.min() + self._b_sorted[0]) - 1.0  # FAR 1 here
        hi = float(self.a.max() + self._b_sorted[-1])  # FAR 0 here
        while hi - lo > 1e-6:
            mid = 0.5 * (lo + hi)
            if self.far(mid) <= target_far:
                hi = mid
            else:
                lo = mid
        return hi

    # ------------------------------------------------------------------ bootstrap
    def _weights(self, rng: np.random.Generator, part: str) -> np.ndarray:
        """Bootstrap count of each trial of ``part``: its probe and template people resampled
        (two-way, as ``calibration.people``), or the trials themselves without labels."""
        codes, n = self._codes[part], (self.a if part == "a" else self.b).size
        if codes is None:
            return rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)
        pi, ti = codes
        n_p, n_t = int(pi.max()) + 1, int(ti.max()) + 1
        wp = rng.multinomial(n_p, np.full(n_p, 1.0 / n_p))
        wt = rng.multinomial(n_t, np.full(n_t, 1.0 / n_t))
        return (wp[pi] * wt[ti]).astype(np.float64)

    def _survival(self, wa: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(grid of thresholds, weighted FAR at each) of the sum, from histograms."""
        lo_a, hi_a = float(self.a.min()), float(self.a.max())
        lo_b, hi_b = float(self.b.min()), float(self.b.max())
        step = max(hi_a - lo_a, hi_b - lo_b, 1e-9) / (_BINS - 1)
        ha = np.bincount(np.floor((self.a - lo_a) / step).astype(np.int64), wa)
        hb = np.bincount(np.floor((self.b - lo_b) / step).astype(np.int64), wb)
        s = np.clip(fftconvolve(ha, hb), 0.0, None)
        total = s.sum()
        if total <= 0:
            return np.zeros(1), np.ones(1)
        # mass of bin k sums lie in [lo + k*step, lo + (k+2)*step): count it above its upper edge
        surv = (total - np.cumsum(s)) / total
        grid = lo_a + lo_b + (np.arange(s.size) + 2) * step
        return grid, surv

    def intervals(self, threshold: float, target_far: float, *, n_bootstrap: int, seed: int,
                  confidence: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """(interval of the threshold re-chosen at ``target_far``, interval of the FAR of the
        fixed ``threshold``) over resampled people (or trials) of both modalities."""
        check_bootstrap(n_bootstrap, confidence)
        rng = np.random.default_rng(seed)
        thr, far = np.empty(n_bootstrap), np.empty(n_bootstrap)
        for k in range(n_bootstrap):
            wa, wb = self._weights(rng, "a"), self._weights(rng, "b")
            grid, surv = self._survival(wa, wb)
            ok = np.flatnonzero(surv <= target_far)
            thr[k] = grid[ok[0]] if ok.size else grid[-1]
            far[k] = float(np.interp(threshold, grid, surv))
        return percentile_interval(thr, confidence), percentile_interval(far, confidence)


    def prediction_interval(self, target_far: float, *, n_bootstrap: int, seed: int,
                            confidence: float) -> tuple[float, float]:
        """Interval of the FAR that a threshold set at ``target_far`` on one group of people
        shows on another, independent group (both resampled from these people, both
        modalities): what a held-out check is compared with (as
        ``calibration.people.PersonTrials.prediction_interval``)."""
        check_bootstrap(n_bootstrap, confidence)
        rng = np.random.default_rng(seed)
        far = np.empty(n_bootstrap)
        for k in range(n_bootstrap):
            grid, surv = self._survival(self._weights(rng, "a"), self._weights(rng, "b"))
            ok = np.flatnonzero(surv <= target_far)
            thr = grid[ok[0]] if ok.size else grid[-1]
            grid2, surv2 = self._survival(self._weights(rng, "a"), self._weights(rng, "b"))
            far[k] = float(np.interp(thr, grid2, surv2))
        return percentile_interval(far, confidence)


def product_impostors(fuser: Fuser, scores: dict[str, np.ndarray], genuine: np.ndarray,
                      people: np.ndarray | None = None) -> ProductImpostors | None:
    """The face and the voice impostor trials of a table as a product set for the face+voice
    fusion (None: no face+voice fusion, or no impostor trials of one modality)."""
    subset = frozenset({"face", "voice"})
    if subset not in fuser.subsets or not {"face", "voice"} <= set(scores):
        return None
    f, v = np.asarray(scores["face"], np.float64), np.asarray(scores["voice"], np.float64)
    gen = np.asarray(genuine, bool)
    # every impostor trial that has the modality: face-only (LFW), voice-only (speechocean)
    # and the joint ARTIFICIAL ones (whose face and voice parts are independent already)
    face_only = np.isfinite(f) & ~gen
    voice_only = np.isfinite(v) & ~gen
    if not face_only.any() or not voice_only.any():
        return None
    w = fuser.subsets[subset].weights
    a = w["face"] * fuser.calibrations["face"].llr(f[face_only])
    b = w["voice"] * fuser.calibrations["voice"].llr(v[voice_only]) + fuser.subsets[subset].bias
    lab = None if people is None else np.asarray(people)
    return ProductImpostors(a, b, None if lab is None else lab[face_only],
                            None if lab is None else lab[voice_only])


def independence(scores: dict[str, np.ndarray], genuine: np.ndarray) -> dict[str, Any]:
    """Rank correlation of face and voice scores over the JOINT impostor rows (both present):
    the assumption behind the product set, checked where the data allow (~0 expected)."""
    f, v = np.asarray(scores.get("face", []), float), np.asarray(scores.get("voice", []), float)
    both = np.isfinite(f) & np.isfinite(v) & ~np.asarray(genuine, bool) if f.size else f
    n = int(np.sum(both)) if f.size else 0
    if n < 10:
        return {"n_joint_impostors": n, "spearman": None}
    rho, p = spearmanr(f[both], v[both])
    return {"n_joint_impostors": n, "spearman": float(rho), "p_value": float(p)}


def product_threshold_point(prod: ProductImpostors, genuine_llr: np.ndarray, target_far: float,
                            *, n_bootstrap: int, seed: int, confidence: float
                            ) -> ThresholdPoint:
    """A face+voice threshold at ``target_far`` set on the product impostor set; FRR on the
    real joint genuine trials. Measurable when >= 3 / target pairs exist and the pairs it
    accepts involve >= ``MIN_DISTINCT`` different trials of EACH modality (so that no handful
    of face or voice impostor trials carries the point; people are resampled in the
    intervals)."""
    g = np.sort(np.asarray(genuine_llr, np.float64).ravel())
    common = dict(modalities=("face", "voice"), target_far=float(target_far),
                  n_genuine=int(g.size), n_impostor=prod.n, n_bootstrap=int(n_bootstrap),
                  confidence=float(confidence), seed=int(seed))

    def refused(why: str) -> ThresholdPoint:
        return ThresholdPoint(threshold=None, achieved_far=None, frr=None, threshold_ci=None,
                              far_ci=None, frr_ci=None,
                              reason=f"not measurable with {prod.n} impostor pairs (product of "
                                     f"{prod.a.size} face x {prod.b.size} voice trials): {why}",
                              method=METHOD, **common)

    if g.size == 0:
        return refused("no joint genuine trials")
    if prod.n < math.ceil(3.0 / target_far):
        return refused(f"needs >= {math.ceil(3.0 / target_far)}")
    thr = prod.threshold_at(target_far)
    n_a, n_b = prod.distinct_above(thr)
    if min(n_a, n_b) < MIN_DISTINCT:
        return refused(f"the accepted pairs rest on {n_a} face and {n_b} voice trials (needs "
                       f">= {MIN_DISTINCT} of each)")
    thr_ci, far_ci = prod.intervals(thr, target_far, n_bootstrap=n_bootstrap, seed=seed,
                                    confidence=confidence)
    rng = np.random.default_rng(seed + 1)
    frr = float(np.searchsorted(g, thr, side="right") / g.size)
    frr_star = rng.binomial(g.size, np.clip(np.searchsorted(g, np.linspace(*thr_ci, 64),
                                                            side="right") / g.size, 0, 1)) / g.size
    return ThresholdPoint(threshold=thr, achieved_far=prod.far(thr), frr=frr,
                          threshold_ci=thr_ci, far_ci=far_ci,
                          frr_ci=percentile_interval(frr_star, confidence), reason=None,
                          method=METHOD, **common)
