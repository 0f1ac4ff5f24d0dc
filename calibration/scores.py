"""Score calibration to log-likelihood ratios, Cllr / min-Cllr, and fusion per modality subset.

Raw similarity scores (cosines, classifier probabilities) are not comparable across models or
modalities; LLRs are. Calibration follows the speaker-recognition practice (Brummer, FoCal /
BOSARIS): a prior-weighted logistic regression whose output is the posterior log-odds minus
the prior log-odds, so ``LLR = logit(posterior) - logit(prior)`` no matter how many genuine and
impostor trials the data happened to hold. Cllr measures how good those LLRs are as
probabilities; min-Cllr (after the optimal monotonic re-mapping, found by PAV) is the
discrimination part alone, so ``Cllr - min-Cllr`` is the calibration loss.

numpy/scipy only (no torch, no scikit-learn): this runs wherever ``edgepin calibrate`` runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from edge_runtime.errors import ConfigError
from edge_runtime.operating_points import Calibration, Fuser, SubsetFusion

DEFAULT_PRIOR = 0.5
DEFAULT_L2 = 1e-6  # keeps perfectly separable data from driving the weights to infinity
# Fusion weights are shrunk towards 1 (the plain sum of calibrated LLRs, exact for independent
# modalities): the joint trials are few (~100 genuine) and nearly separable, and an unshrunk
# fit multiplied the LLRs by ~3, overconfident on the other half (Cllr 0.36 vs min 0.06 bits).
FUSION_L2 = 0.05


def _vec(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ConfigError(f"no {name} scores to calibrate on")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} scores contain NaN or infinite values")
    return arr


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ConfigError(f"prior must be in (0, 1), got {p!r}")
    return math.log(p) - math.log1p(-p)


def fit_logistic_llr(
    features: Any, is_genuine: Any, prior: float = DEFAULT_PRIOR, l2: float = DEFAULT_L2,
    toward: Any | None = None,
) -> tuple[np.ndarray, float]:
    """Prior-weighted logistic regression: weights w and bias b with LLR = features @ w + b.

    Minimises ``P * mean_gen softplus(-(z + logit P)) + (1 - P) * mean_imp softplus(z + logit P)``
    (the Cllr objective at prior P), so class counts do not leak into the LLR. Features are
    standardised internally for a well-conditioned optimisation, then mapped back.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x.reshape(len(x), -1)
    y = np.asarray(is_genuine, dtype=bool).ravel()
    if y.size != x.shape[0]:
        raise ConfigError(f"{x.shape[0]} feature rows but {y.size} labels")
    n_g, n_i = int(y.sum()), int((~y).sum())
    if n_g == 0 or n_i == 0:
        raise ConfigError(f"calibration needs genuine and impostor trials, got {n_g} and {n_i}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("calibration features contain NaN or infinite values")
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    xs = (x - mu) / sd
    lp = _logit(prior)
    weight = np.where(y, prior / n_g, (1 - prior) / n_i)
    sign = np.where(y, -1.0, 1.0)  # genuine: softplus(-(z+lp)), impostor: softplus(z+lp)
    d = x.shape[1]
    # penalty 0.5 * l2 * |(theta - centre) * scale|^2: standardised units when pulled to 0,
    # the features' own units when pulled towards given weights
    centre = np.zeros(d) if toward is None else np.asarray(toward, np.float64).ravel() * sd
    scale = np.ones(d) if toward is None else 1.0 / sd
    if centre.size != d:
        raise ConfigError(f"toward has {centre.size} weights for {d} features")

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = xs @ theta[:d] + theta[d] + lp
        a = sign * z
        dev = (theta[:d] - centre) * scale
        loss = float(np.sum(weight * np.logaddexp(0.0, a))) + 0.5 * l2 * float(dev @ dev)
        dz = weight * sign * expit(a)
        grad = np.append(xs.T @ dz + l2 * dev * scale, dz.sum())
        return loss, grad

    res = minimize(objective, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
    theta = res.x
    if not np.all(np.isfinite(theta)):
        raise ConfigError(f"logistic calibration did not converge: {res.message}")
    w = theta[:d] / sd
    b = float(theta[d] - np.sum(theta[:d] * mu / sd))
    return w, b


def fit_calibration(
    genuine: Any,
    impostor: Any,
    prior: float = DEFAULT_PRIOR,
    transform: str = "identity",
    l2: float = DEFAULT_L2,
) -> Calibration:
    """Linear (Platt) calibration of one modality's raw scores to LLRs."""
    probe = Calibration(1.0, 0.0, transform)
    g = probe.features(_vec(genuine, "genuine"))
    i = probe.features(_vec(impostor, "impostor"))
    x = np.concatenate([g, i])
    y = np.concatenate([np.ones(g.size, bool), np.zeros(i.size, bool)])
    w, b = fit_logistic_llr(x, y, prior=prior, l2=l2)
    return Calibration(float(w[0]), b, transform)


def cllr(genuine_llr: Any, impostor_llr: Any) -> float:
    """Log-likelihood-ratio cost in bits: 0 is perfect, 1 is a system that always says LLR 0."""
    g = np.asarray(genuine_llr, dtype=np.float64).ravel()
    i = np.asarray(impostor_llr, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0 or np.isnan(g).any() or np.isnan(i).any():
        raise ConfigError("Cllr needs non-empty, NaN-free genuine and impostor LLRs")
    return float(
        0.5 * (np.mean(np.logaddexp(0.0, -g)) + np.mean(np.logaddexp(0.0, i))) / math.log(2)
    )


def pav(y: Any, w: Any | None = None) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing fit minimising sum w (y - f)^2."""
    yv = np.asarray(y, dtype=np.float64).ravel()
    wv = np.ones_like(yv) if w is None else np.asarray(w, dtype=np.float64).ravel()
    vals: list[float] = []
    wts: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(yv.tolist(), wv.tolist(), strict=True):
        vals.append(yi)
        wts.append(wi)
        counts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, c2 = vals.pop(), wts.pop(), counts.pop()
            total = wts[-1] + w2
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / total
            wts[-1] = total
            counts[-1] += c2
    return np.repeat(np.asarray(vals), counts)


def pav_llr(genuine: Any, impostor: Any) -> tuple[np.ndarray, np.ndarray]:
    """Optimally re-mapped LLRs: PAV posteriors over the sorted scores minus the empirical prior.

    Tied scores form one block before PAV, so equal scores always get the same LLR.
    """
    g = _vec(genuine, "genuine")
    i = _vec(impostor, "impostor")
    scores = np.concatenate([g, i])
    uniq, inverse = np.unique(scores, return_inverse=True)
    total = np.bincount(inverse, minlength=uniq.size).astype(np.float64)
    hits = np.bincount(inverse[: g.size], minlength=uniq.size).astype(np.float64)
    post = pav(hits / total, total)
    with np.errstate(divide="ignore"):
        llr = np.log(post) - np.log1p(-post) - math.log(g.size / i.size)
    return llr[inverse[: g.size]], llr[inverse[g.size :]]


def min_cllr(genuine: Any, impostor: Any) -> float:
    """Cllr after the best monotonic calibration: the discrimination-only part of Cllr."""
    return cllr(*pav_llr(genuine, impostor))


@dataclass(frozen=True)
class TrialScores:
    """Raw scores of verification trials, one row per trial, NaN where a modality is missing.

    Single-modality sets (LFW faces, speechocean voices) and joint sets (GRID face+voice)
    concatenate into one table, so every fitter picks the trials that have what it needs.
    ``seconds``: per modality, the speech length of each trial's probe, where it is known and
    the calibration depends on it (GRID's short live probes).
    """

    scores: Mapping[str, np.ndarray]
    genuine: np.ndarray
    seconds: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = np.asarray(self.genuine).size
        for what, table in (("scores", self.scores), ("probe lengths", self.seconds)):
            for m, v in table.items():
                if np.asarray(v).shape != (n,):
                    raise ConfigError(f"modality {m!r} has {np.asarray(v).shape} {what} for {n} "
                                      "trials")

    @classmethod
    def from_sets(cls, modality: str, genuine: Any, impostor: Any) -> TrialScores:
        g = np.asarray(genuine, dtype=np.float64).ravel()
        i = np.asarray(impostor, dtype=np.float64).ravel()
        return cls({modality: np.concatenate([g, i])},
                   np.concatenate([np.ones(g.size, bool), np.zeros(i.size, bool)]))

    @classmethod
    def concat(cls, parts: Sequence[TrialScores]) -> TrialScores:
        names = sorted({m for p in parts for m in p.scores})
        scores = {
            m: np.concatenate([
                np.asarray(p.scores[m], np.float64) if m in p.scores
                else np.full(np.asarray(p.genuine).size, np.nan) for p in parts
            ]) for m in names
        }
        seconds = {m: np.concatenate([np.asarray(p.seconds[m], np.float64) for p in parts])
                   for m in names if all(m in p.seconds for p in parts)}
        return cls(scores, np.concatenate([np.asarray(p.genuine, bool) for p in parts]), seconds)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted(self.scores))

    def mask(self, subset: Iterable[str]) -> np.ndarray:
        """Trials that have a finite score for every modality of ``subset``."""
        ok = np.ones(np.asarray(self.genuine).size, dtype=bool)
        for m in subset:
            if m not in self.scores:
                return np.zeros_like(ok)
            ok &= np.isfinite(np.asarray(self.scores[m], dtype=np.float64))
        return ok

    def counts(self, subset: Iterable[str]) -> tuple[int, int]:
        ok = self.mask(subset)
        gen = np.asarray(self.genuine, bool)
        return int((ok & gen).sum()), int((ok & ~gen).sum())


def fit_calibrations(
    trials: TrialScores,
    prior: float = DEFAULT_PRIOR,
    transforms: Mapping[str, str] | None = None,
    min_per_class: int = 10,
    skipped: list[str] | None = None,
) -> dict[str, Calibration]:
    """One calibration per modality, on every trial that has that modality's score.

    A modality with too few trials is an error, or, given a ``skipped`` list, a one-line
    reason appended to it (a site's small set calibrates what it can)."""
    out = {}
    gen = np.asarray(trials.genuine, bool)
    for m in trials.modalities:
        n_g, n_i = trials.counts([m])
        if min(n_g, n_i) < min_per_class:
            why = (f"modality {m!r}: {n_g} genuine and {n_i} impostor trials, "
                   f"need >= {min_per_class} of each to calibrate")
            if skipped is None:
                raise ConfigError(why)
            skipped.append(why)
            continue
        ok = trials.mask([m])
        s = np.asarray(trials.scores[m], np.float64)
        out[m] = fit_calibration(s[ok & gen], s[ok & ~gen], prior,
                                 (transforms or {}).get(m, "identity"))
    return out


def fit_fuser(
    trials: TrialScores,
    calibrations: Mapping[str, Calibration],
    *,
    prior: float = DEFAULT_PRIOR,
    subsets: Iterable[Iterable[str]] | None = None,
    min_per_class: int = 10,
    l2: float = FUSION_L2,
    skipped: list[str] | None = None,
) -> Fuser:
    """Logistic fusion of calibrated LLRs, one model per modality subset with enough trials.

    With ``subsets=None`` every non-empty subset of the calibrated modalities is tried and the
    ones with fewer than ``min_per_class`` complete genuine or impostor trials are skipped; an
    explicitly requested subset without enough trials is an error, or, given a ``skipped``
    list, a reason appended to it (as is a subset whose modalities were not calibrated).
    """
    names = sorted(calibrations)
    explicit = subsets is not None
    wanted = ([frozenset(s) for s in subsets] if explicit else
              [frozenset(c) for r in range(1, len(names) + 1)
               for c in itertools.combinations(names, r)])
    gen = np.asarray(trials.genuine, bool)
    fused = {}
    for subset in wanted:
        if skipped is not None and subset and not subset <= set(names):
            skipped.append(f"subset {'+'.join(sorted(subset))}: "
                           f"{', '.join(sorted(subset - set(names)))} not calibrated")
            continue
        if not subset or not subset <= set(names):
            raise ConfigError(f"cannot fuse {sorted(subset)}: calibrated modalities are {names}")
        n_g, n_i = trials.counts(subset)
        if min(n_g, n_i) < min_per_class:
            why = (f"subset {'+'.join(sorted(subset))}: {n_g} genuine and {n_i} impostor "
                   f"complete trials, need >= {min_per_class} of each")
            if explicit and skipped is None:
                raise ConfigError(why)
            if explicit:
                skipped.append(why)
            continue
        order = sorted(subset)
        ok = trials.mask(order)
        x = np.stack([calibrations[m].llr(np.asarray(trials.scores[m])[ok]) for m in order], 1)
        w, b = fit_logistic_llr(x, gen[ok], prior=prior, l2=l2, toward=np.ones(len(order)))
        fused[subset] = SubsetFusion({m: float(v) for m, v in zip(order, w, strict=True)}, b)
    if not fused and skipped is None:
        raise ConfigError(f"no modality subset has >= {min_per_class} genuine and impostor trials")
    return Fuser(dict(calibrations), fused)
