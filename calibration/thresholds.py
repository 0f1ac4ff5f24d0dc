"""Thresholds at target FARs with bootstrap confidence intervals, and the FRR they cost.

Same decision rule as ``edge_runtime.metrics``: accept iff score > threshold, and the threshold
is the most permissive one whose FAR on the sample does not exceed the target (the (k+1)-th
highest impostor score, k = floor(target * n)). A target below ~3/n impostor scores is not
measurable (rule of 3) and is reported as such, never as a number.

The bootstrap resamples genuine and impostor scores independently (with replacement, seeded).
It is computed exactly in distribution but without materialising B resamples of a possibly
huge impostor set: in a resample, the number of copies of each score is multinomial, so the
(k+1)-th highest resampled score is found by drawing those counts one sorted score at a time
(conditional binomials) until k+1 are reached, and a count of scores on one side of a fixed
threshold is a single binomial draw. Cost is O(B * k) instead of O(B * n log n).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.metrics import allowed_false_accepts, min_measurable_far
from edge_runtime.operating_points import ThresholdPoint

DEFAULT_TARGETS = (1e-2, 1e-3, 1e-4)
DEFAULT_BOOTSTRAP = 1000


def _vec(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} scores must be a non-empty set of finite numbers")
    return arr


def bootstrap_kth_highest(
    desc: np.ndarray, k: int, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices into ``desc`` (scores sorted high to low) of the (k+1)-th highest score of each
    of ``n_bootstrap`` resamples with replacement of size n."""
    n = desc.size
    if k >= n:
        raise ConfigError(f"k={k} must be below the number of scores ({n})")
    remaining = np.full(n_bootstrap, n, dtype=np.int64)
    taken = np.zeros(n_bootstrap, dtype=np.int64)
    index = np.full(n_bootstrap, -1, dtype=np.int64)
    for j in range(n):
        copies = rng.binomial(remaining, 1.0 / (n - j))  # multinomial, one cell at a time
        taken += copies
        remaining -= copies
        hit = (index < 0) & (taken >= k + 1)
        index[hit] = j
        if np.all(index >= 0):
            break
    return index


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite ``values``."""
    values = np.asarray(values, dtype=np.float64)
    alpha = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(values[np.isfinite(values)], [alpha, 100 - alpha])
    return float(lo), float(hi)


def people_draws(probe_who: Sequence[str] | np.ndarray, template_who: Sequence[str] | np.ndarray,
                 genuine: np.ndarray, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Trial indices of each draw of a bootstrap over PEOPLE (trials of one person are not
    independent): the people are resampled with replacement, a genuine trial counts once per
    draw of its person and an impostor trial once per draw of each of its two people."""
    probe_who, template_who = np.asarray(probe_who), np.asarray(template_who)
    people, inv = np.unique(np.concatenate([probe_who, template_who]), return_inverse=True)
    pi, ti = inv[: probe_who.size], inv[probe_who.size:]
    every = np.arange(probe_who.size)
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap):
        w = np.bincount(rng.integers(0, people.size, people.size), minlength=people.size)
        yield np.repeat(every, np.where(genuine, w[pi], w[pi] * w[ti]))


def check_bootstrap(n_bootstrap: int, confidence: float) -> None:
    """Refuse a bootstrap that cannot give an interval."""
    if n_bootstrap < 1 or not 0 < confidence < 1:
        raise ConfigError(f"need n_bootstrap >= 1 and 0 < confidence < 1, got "
                          f"{n_bootstrap} and {confidence}")


def threshold_point(
    genuine: Any,
    impostor: Any,
    target_far: float,
    *,
    modalities: Sequence[str] = (),
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> ThresholdPoint:
    """Threshold at ``target_far`` with achieved FAR, FRR and percentile bootstrap intervals.

    threshold_ci: threshold re-chosen on resampled impostors. far_ci: FAR of the chosen
    threshold on resampled impostors (what another impostor sample would show). frr_ci: FRR
    of resampled genuine scores at each re-chosen threshold (both sources of uncertainty).
    """
    g = np.sort(_vec(genuine, "genuine"))
    desc = np.sort(_vec(impostor, "impostor"))[::-1]
    check_bootstrap(n_bootstrap, confidence)
    n_g, n_i = g.size, desc.size
    common = dict(modalities=tuple(sorted(modalities)), target_far=float(target_far),
                  n_genuine=n_g, n_impostor=n_i, n_bootstrap=int(n_bootstrap),
                  confidence=float(confidence), seed=int(seed))
    if target_far < min_measurable_far(n_i):
        return ThresholdPoint(
            threshold=None, achieved_far=None, frr=None, threshold_ci=None, far_ci=None,
            frr_ci=None, reason=f"not measurable with {n_i} impostor scores "
            f"(needs >= {math.ceil(3.0 / target_far)})", **common,
        )
    k = allowed_false_accepts(target_far, n_i)
    if k >= n_i:
        raise ConfigError(f"target FAR {target_far:g} accepts every impostor: not a threshold")
    threshold = float(desc[k])
    achieved = float(np.mean(desc > threshold))
    frr = float(np.searchsorted(g, threshold, side="right") / n_g)
    rng = np.random.default_rng(seed)
    t_star = desc[bootstrap_kth_highest(desc, k, n_bootstrap, rng)]
    p_reject = np.searchsorted(g, t_star, side="right") / n_g
    frr_star = rng.binomial(n_g, p_reject) / n_g
    far_star = rng.binomial(n_i, achieved, size=n_bootstrap) / n_i
    return ThresholdPoint(
        threshold=threshold, achieved_far=achieved, frr=frr,
        threshold_ci=percentile_interval(t_star, confidence),
        far_ci=percentile_interval(far_star, confidence),
        frr_ci=percentile_interval(frr_star, confidence), reason=None, **common,
    )


def thresholds_at_fars(
    genuine: Any,
    impostor: Any,
    targets: Iterable[float] = DEFAULT_TARGETS,
    **kwargs: Any,
) -> list[ThresholdPoint]:
    """``threshold_point`` for each target, same seed and bootstrap settings."""
    return [threshold_point(genuine, impostor, t, **kwargs) for t in targets]
