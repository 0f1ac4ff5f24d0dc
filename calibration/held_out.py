"""Fit on one half of the held-out people, set thresholds on the other, and check the result.

The acceptance check of an operating point: the FAR its threshold shows on the OTHER half of
the people must fall inside the interval computed on the half that set it. Impostor trials
share people (a few "lamb" templates attract most false accepts), so the interval is the
person-level prediction interval of ``calibration.people``.

One split is one random draw: at 95% about 1 point in 20 falls outside by chance, and a
single pass or miss says little about whether the intervals are right. ``coverage_study``
re-splits the same people many times and counts how often the held-out FAR lands inside; the
misses are tested against the binomial count a true 95% interval allows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from calibration.operating_points import build_operating_points, check_held_out
from calibration.people import PersonTrials
from calibration.product import METHOD as PRODUCT
from calibration.product import product_impostors
from calibration.score_sets import ScoreSets
from calibration.scores import TrialScores, fit_calibration
from edge_runtime.errors import ConfigError
from edge_runtime.operating_points import Calibration, Fuser, OperatingPoints, subset_name

# Identity subsets the runtime fuses (decision.decide); cross-modal scores are calibrated but
# not fused into identity: no real joint set is large enough to fit or threshold that.
SUBSETS = (("face",), ("voice",), ("face", "voice"))
TRANSFORMS = {"faa": "logit"}  # a probability: its logit is the linear scale
CROSS = ("grid-cross/fwd", "grid-cross/rev")
COVERAGE_ALPHA = 0.01  # misses beyond what a true interval gives with probability < 1%


def fit_half(sets: ScoreSets, fit_half: int, hashes: dict[str, str], kw: dict[str, Any],
             notes: str, *, by_length: bool = True,
             skipped: list[str] | None = None) -> OperatingPoints:
    """Calibration + fusion fitted on ``fit_half`` (and the GRID cross-modal trials),
    thresholds set on the other half. With ``by_length`` (and voice probes cut to several
    lengths in ``sets``) the voice calibration also gets its per-length table: thresholds are
    on reference-length probes, which that table leaves unchanged. With a ``skipped`` list,
    modalities and subsets with too few trials are left out (reasons appended), and a set
    without held-out halves (only clips) gets no thresholds, only calibrations."""
    names = [f"{k}/{fit_half}" for k in ("lfw", "speechocean", "artificial")] + list(CROSS)
    held = sets.half(1 - fit_half) if sets.half_names(1 - fit_half) or skipped is None \
        else TrialScores({}, np.zeros(0, bool))
    fit = sets.join(names) if skipped is None or any(n in sets.parts for n in names) \
        else TrialScores({}, np.zeros(0, bool))
    held_people = sets.half_people(1 - fit_half) if sets.half_names(1 - fit_half) else None
    op = build_operating_points(fit, held, model_hashes=hashes, held_out_people=held_people,
                                data_manifest_sha256=sets.data_sha256, transforms=TRANSFORMS,
                                subsets=SUBSETS, provisional=False, notes=notes,
                                skipped=skipped, **kw)
    ref = sets.config.voice_probe_s if sets.config is not None else None
    base = op.fuser.calibrations.get("voice")
    if not by_length or ref is None or base is None or not sets.voice_probe_lengths() \
            or not {f"speechocean/{fit_half}", f"artificial/{fit_half}"} & set(sets.parts):
        return op
    rows = [(float(ref), base.slope, base.offset)]
    for x in sets.voice_probe_lengths():
        c = fit_calibration(*sets.voice_scores(x, fit_half), op.prior, base.transform)
        rows.append((float(x), c.slope, c.offset))
    voice = Calibration(base.slope, base.offset, base.transform, tuple(sorted(rows)))
    fuser = Fuser({**op.fuser.calibrations, "voice": voice}, op.fuser.subsets)
    return dataclasses.replace(op, fuser=fuser)


def held_out_checks(op: OperatingPoints, sets: ScoreSets, threshold_half: int, label: str
                    ) -> list[dict[str, Any]]:
    """``check_held_out`` on the other half, plus the person-level intervals of each point:
    the FAR of the fixed threshold (``far_ci_people``) and the prediction interval of the FAR
    another group of people shows (``far_pi_people``: what the check compares against)."""
    rows = check_held_out(op, sets.half(1 - threshold_half))
    t = sets.half(threshold_half)
    people = sets.half_people(threshold_half)
    gen = np.asarray(t.genuine, bool)
    prod = product_impostors(op.fuser, dict(t.scores), t.genuine, people)
    for r in rows:
        subset = r["modalities"].split("+")
        point = next(p for p in op.thresholds if subset_name(p.modalities) == r["modalities"]
                     and p.target_far == r["target_far"])
        if point.method == PRODUCT and prod is not None:
            # people of both modalities resampled: the FAR of this threshold, and the FAR a
            # threshold set the same way on other people shows (prediction interval)
            kw = dict(n_bootstrap=point.n_bootstrap, seed=point.seed, confidence=point.confidence)
            _, ci = prod.intervals(r["threshold"], r["target_far"], **kw)
            pi = prod.prediction_interval(r["target_far"], **kw)
            r.update(run=label, far_ci_people=ci, far_in_ci_people=ci[0] <= r["far"] <= ci[1],
                     far_pi_people=pi, far_in_pi_people=pi[0] <= r["far"] <= pi[1],
                     confidence=point.confidence)
            continue
        imp = t.mask(subset) & ~gen
        llr = op.fuser.score_many({m: np.asarray(t.scores[m])[imp] for m in subset}, subset)
        kw = dict(n_bootstrap=point.n_bootstrap, seed=point.seed, confidence=point.confidence)
        trials = PersonTrials(llr, people[imp])
        ci = trials.far_interval(r["threshold"], **kw)
        pi = trials.prediction_interval(r["target_far"], **kw)
        r.update(run=label, far_ci_people=ci, far_in_ci_people=ci[0] <= r["far"] <= ci[1],
                 far_pi_people=pi, far_in_pi_people=pi[0] <= r["far"] <= pi[1],
                 confidence=point.confidence)
    return rows


def misses_p_value(misses: int, n: int, confidence: float) -> float:
    """P(at least ``misses`` of ``n`` independent draws fall outside a true interval)."""
    if not 0 <= misses <= n or not 0 < confidence < 1:
        raise ConfigError(f"need 0 <= misses <= n and 0 < confidence < 1, got {misses}, {n}, "
                          f"{confidence}")
    a = 1.0 - confidence
    return float(sum(math.comb(n, j) * a ** j * confidence ** (n - j)
                     for j in range(misses, n + 1)))


def coverage_study(sets: ScoreSets, splits: int, hashes: dict[str, str], kw: dict[str, Any],
                   *, first_seed: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Re-split the held-out people ``splits`` times (seeds ``first_seed`` ...), fit on half 0,
    set thresholds on half 1, and count how often each point's FAR on half 0 falls inside
    its prediction interval. ``consistent``: no point misses more often than a true interval
    would with probability ``COVERAGE_ALPHA``."""
    if splits < 1:
        raise ConfigError(f"a coverage study needs at least 1 split, got {splits}")
    tally: dict[tuple[str, float], dict[str, Any]] = {}
    for k in range(splits):
        resplit = sets.resplit(first_seed + k)
        op = fit_half(resplit, 0, hashes, kw, "", by_length=False,  # thresholds: reference
                      skipped=[])  # what the shipped fit skipped, each split skips too
        for r in held_out_checks(op, resplit, 1, f"split {first_seed + k}"):
            t = tally.setdefault((r["modalities"], r["target_far"]), {
                "modalities": r["modalities"], "target_far": r["target_far"], "n": 0,
                "inside": 0, "inside_fixed": 0, "confidence": r["confidence"], "far": []})
            t["n"] += 1
            t["inside"] += int(r["far_in_pi_people"])
            t["inside_fixed"] += int(r["far_in_ci_people"])
            t["far"].append(r["far"])
        if progress is not None:
            progress(k + 1)
    points = []
    for t in sorted(tally.values(), key=lambda t: (t["modalities"], -t["target_far"])):
        far = np.asarray(t.pop("far"))
        p = misses_p_value(t["n"] - t["inside"], t["n"], t["confidence"])
        points.append({**t, "coverage": t["inside"] / t["n"],
                       "coverage_fixed": t["inside_fixed"] / t["n"], "p_value": p,
                       "consistent": p >= COVERAGE_ALPHA,
                       "far_median": float(np.median(far)),
                       "far_range": (float(far.min()), float(far.max()))})
    return {"splits": splits, "first_seed": first_seed, "n_bootstrap": kw.get("n_bootstrap"),
            "alpha": COVERAGE_ALPHA, "points": points,
            "consistent": bool(points) and all(p["consistent"] for p in points)}
