"""Person-level bootstrap for false-accept rates: impostor trials share people.

An LFW template person whose face is "average" attracts dozens of impostors; a probe person
with 50 photos is in thousands of trials. Resampling trials then describes other trials of
the SAME people, which is far narrower than what another group of people shows. Here probe
people and template people are resampled independently with replacement (a two-way
bootstrap), each person bringing all of its trials.

Two intervals (methods of ``PersonTrials``):

* ``far_interval``: FAR of one FIXED threshold on resampled people (how uncertain the
  FAR of the threshold is on this population);
* ``prediction_interval``: the FAR that a threshold SET on one group of people
  (at a target FAR) shows on ANOTHER, independent group of the same size: the threshold is
  re-chosen on one resample and measured on a second, independent one. That is exactly the
  held-out-half check, so it is the interval the check compares against (its width is about
  sqrt(2) times the fixed-threshold one: both groups vary).

Resample weights are multinomial counts; a trial's weight is (copies of its probe person) x
(copies of its template person). Only the highest-scoring trials can matter for a FAR of a
few percent, so each resample walks the sorted top of the list (falling back to the whole
list when the weights push the threshold deeper).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from calibration.thresholds import check_bootstrap, percentile_interval
from edge_runtime.errors import ConfigError

_CHUNK = 64  # resamples handled at once


def _factorize(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct names, code of each row); a dict pass: np.unique sorts strings, far slower."""
    codes: dict[Any, int] = {}
    idx = np.fromiter((codes.setdefault(x, len(codes)) for x in names), np.int64, len(names))
    return np.asarray(list(codes), dtype=object), idx


class PersonTrials:
    """Impostor trials indexed by (probe person, template person), sorted by score."""

    def __init__(self, impostor_llr: Any, people: Any) -> None:
        s = np.asarray(impostor_llr, dtype=np.float64).ravel()
        lab = np.asarray(people)
        if lab.ndim != 2 or lab.shape != (s.size, 2) or s.size == 0:
            raise ConfigError(f"need one (probe, template) person pair per impostor trial, got "
                              f"{lab.shape} labels for {s.size} scores")
        order = np.argsort(-s, kind="stable")
        self.scores = s[order]
        self.probe_names, pi = _factorize(lab[:, 0])
        self.template_names, ti = _factorize(lab[:, 1])
        self.pi, self.ti = pi[order], ti[order]
        self.cells = np.zeros((self.probe_names.size, self.template_names.size))
        np.add.at(self.cells, (self.pi, self.ti), 1.0)

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def weights(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        n_p, n_t = self.probe_names.size, self.template_names.size
        return (rng.multinomial(n_p, np.full(n_p, 1.0 / n_p), size=size).astype(np.float64),
                rng.multinomial(n_t, np.full(n_t, 1.0 / n_t), size=size).astype(np.float64))

    def total(self, wp: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """Resampled number of impostor trials, per resample."""
        return np.einsum("bp,pt,bt->b", wp, self.cells, wt)

    def above(self, wp: np.ndarray, wt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """Resampled number of trials scoring > threshold (one threshold per resample)."""
        top = int(np.searchsorted(-self.scores, -float(np.min(thresholds)), side="left"))
        w = wp[:, self.pi[:top]] * wt[:, self.ti[:top]]
        return np.sum(w * (self.scores[None, :top] > thresholds[:, None]), axis=1)

    def thresholds_at(self, wp: np.ndarray, wt: np.ndarray, target_far: float) -> np.ndarray:
        """Per resample, the most permissive score threshold whose weighted FAR <= target
        (the rule of ``calibration.thresholds``: accept iff score > threshold)."""
        allowed = target_far * self.total(wp, wt)
        out = np.full(wp.shape[0], np.nan)
        top = min(self.n, int(20 * target_far * self.n) + 1000)
        while True:
            todo = np.isnan(out)
            w = wp[todo][:, self.pi[:top]] * wt[todo][:, self.ti[:top]]
            cw = np.cumsum(w, axis=1)
            j = np.sum(cw <= allowed[todo, None], axis=1)  # trials that may be accepted
            done = j < top
            idx = np.flatnonzero(todo)
            out[idx[done]] = self.scores[j[done]]
            if done.all():
                return out
            if top == self.n:  # the whole list fits under the target: nothing to reject
                out[idx[~done]] = self.scores[-1] - 1.0
                return out
            top = min(self.n, top * 4)

    def _fars(self, rng: np.random.Generator, n_bootstrap: int,
              thresholds: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, n_bootstrap, _CHUNK):
            size = min(_CHUNK, n_bootstrap - start)
            thr = thresholds(*self.weights(rng, size))
            wp, wt = self.weights(rng, size)
            den = self.total(wp, wt)
            out.append(np.where(den > 0, self.above(wp, wt, thr) / np.maximum(den, 1e-300),
                                np.nan))
        return np.concatenate(out)

    def far_interval(self, threshold: float, *, n_bootstrap: int, seed: int,
                     confidence: float) -> tuple[float, float]:
        """Interval of the FAR of a fixed ``threshold`` over resampled probe and template people."""
        check_bootstrap(n_bootstrap, confidence)
        fars = self._fars(np.random.default_rng(seed), n_bootstrap,
                          lambda wp, _: np.full(wp.shape[0], float(threshold)))
        return percentile_interval(fars, confidence)

    def prediction_interval(self, target_far: float, *, n_bootstrap: int, seed: int,
                            confidence: float) -> tuple[float, float]:
        """Interval of the FAR that a threshold set at ``target_far`` on one group of people
        shows on another, independent group of the same size (both drawn from these people)."""
        check_bootstrap(n_bootstrap, confidence)
        if not 0 < target_far < 1:
            raise ConfigError(f"target FAR must be in (0, 1), got {target_far}")
        fars = self._fars(np.random.default_rng(seed), n_bootstrap,
                          lambda wp, wt: self.thresholds_at(wp, wt, target_far))
        return percentile_interval(fars, confidence)


def person_far_interval(impostor_llr: Any, people: Any, threshold: float, *,
                        n_bootstrap: int, seed: int, confidence: float) -> tuple[float, float]:
    """``PersonTrials.far_interval`` of one set of impostor trials."""
    return PersonTrials(impostor_llr, people).far_interval(
        threshold, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)


def paired_eer_difference_interval(scores_a: Any, scores_b: Any, genuine: Any, people: Any, *,
                                   n_bootstrap: int, seed: int, confidence: float
                                   ) -> tuple[float, float]:
    """Interval of EER(a) - EER(b) on the same trials over resampled people.

    One resample of the people (each drawn person brings its trials as probe and as template:
    a trial's weight is the product of its two people's counts) serves both scores, so what
    the two share cancels and the interval is that of the difference itself.
    """
    from edge_runtime.metrics import eer

    check_bootstrap(n_bootstrap, confidence)
    a = np.asarray(scores_a, np.float64)
    b = np.asarray(scores_b, np.float64)
    gen = np.asarray(genuine, bool)
    lab = np.asarray(people)
    if not (a.shape == b.shape == gen.shape == (lab.shape[0],)) or lab.shape[1:] != (2,):
        raise ConfigError("need two scores, a genuine flag and a (probe, template) person pair "
                          "per trial")
    names, codes = _factorize(np.concatenate([lab[:, 0], lab[:, 1]]))
    pi, ti = codes[: a.size], codes[a.size:]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_bootstrap):
        c = rng.multinomial(names.size, np.full(names.size, 1.0 / names.size))
        idx = np.repeat(np.arange(a.size), c[pi] * c[ti])
        g = gen[idx]
        if g.all() or not g.any():
            continue
        diffs.append(eer(a[idx][g], a[idx][~g])[0] - eer(b[idx][g], b[idx][~g])[0])
    if not diffs:
        raise ConfigError("no resample held both genuine and impostor trials")
    return percentile_interval(np.asarray(diffs), confidence)
