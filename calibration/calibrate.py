"""`edgepin calibrate`: score sets -> calibration + fusion -> thresholds -> checked file + report.

Protocol (every number in the report says which data it comes from):

* Held-out identities are split in two halves (``calibration.score_sets``). The shipped file
  fits the per-modality calibrations and the fusion on half 0 and sets the thresholds on
  half 1. The acceptance check measures the FAR of those thresholds on half 0 (other people)
  against the bootstrap interval computed on half 1; the mirror run (fit on 1, thresholds on
  0, checked on 1) is reported too.
* The face+voice fusion learns from ARTIFICIAL pairs (LFW person k + speechocean762 speaker k,
  different people). GRID (7 real people, face and voice of one person) is never fitted on
  for identity: it is the real joint set the fused EER is compared on.
* PIN / FAA scores can only be calibrated on GRID (the only real face-voice pairs), in-sample:
  they get an LLR calibration, but no FAR threshold (too few impostors); the runtime then
  applies "calibrated LLR > 0" to them (see ``edge_runtime.decision._cross_check``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.operating_points import (
    build_operating_points,
    check_held_out,
    hash_model_files,
    plot_operating_points,
)
from calibration.score_sets import ScoreSets, SetConfig, build_score_sets, open_bundle
from calibration.scores import TrialScores, cllr, min_cllr
from calibration.thresholds import DEFAULT_BOOTSTRAP, DEFAULT_TARGETS
from edge_runtime.errors import ConfigError
from edge_runtime.metrics import auc, eer
from edge_runtime.operating_points import (
    OperatingPoints,
    load_operating_points,
    save_operating_points,
    subset_name,
)

# Identity subsets the runtime fuses (decision.decide); cross-modal scores are calibrated but
# not fused into identity: no real joint set is large enough to fit or threshold that.
SUBSETS = (("face",), ("voice",), ("face", "voice"))
TRANSFORMS = {"faa": "logit"}  # a probability: its logit is the linear scale
CROSS = ("grid-cross/fwd", "grid-cross/rev")


def _gi(t: TrialScores, subset: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    ok = t.mask(subset)
    gen = np.asarray(t.genuine, bool)
    return ok & gen, ok & ~gen


def _rates(g: np.ndarray, i: np.ndarray, llr: tuple[np.ndarray, np.ndarray] | None = None
           ) -> dict[str, Any]:
    """EER/AUC of raw scores (+ Cllr/min-Cllr of calibrated LLRs when given)."""
    rate, _ = eer(g, i)
    out: dict[str, Any] = {"eer": rate, "auc": auc(g, i), "n_genuine": int(g.size),
                           "n_impostor": int(i.size),
                           "eer_resolution": 1.0 / min(g.size, i.size)}
    if llr is not None:
        out["cllr"] = cllr(*llr)
        out["min_cllr"] = min_cllr(*llr)
    return out


def joint_comparison(op: OperatingPoints, t: TrialScores) -> dict[str, Any]:
    """Face alone, voice alone and fused on the SAME joint trials (a fair comparison)."""
    gm, im = _gi(t, ("face", "voice"))
    if not gm.any() or not im.any():
        return {}
    out: dict[str, Any] = {}
    fuser = op.fuser
    for m in ("face", "voice"):
        s = np.asarray(t.scores[m])
        llr = fuser.calibrations[m].llr(s)
        out[m] = _rates(s[gm], s[im], (llr[gm], llr[im]))
    fused = fuser.score_many({m: np.asarray(t.scores[m]) for m in ("face", "voice")},
                             ("face", "voice"))
    out["face+voice"] = _rates(fused[gm], fused[im], (fused[gm], fused[im]))
    best = min(("face", "voice"), key=lambda m: out[m]["eer"])
    gain = out[best]["eer"] - out["face+voice"]["eer"]
    out["acceptance"] = {"better_single": best, "better_single_eer": out[best]["eer"],
                         "fused_eer": out["face+voice"]["eer"], "eer_reduction": gain,
                         "fused_below_best_single": bool(gain > 0)}
    return out


def mixed_attacks(op: OperatingPoints, mixed: TrialScores) -> list[dict[str, Any]]:
    """Share of face-of-A + voice-of-B attempts accepted at each stored threshold."""
    rows = []
    n = np.asarray(mixed.genuine).size
    for p in op.thresholds:
        if p.threshold is None or not set(p.modalities) <= set(mixed.scores):
            continue
        llr = op.fuser.score_many({m: np.asarray(mixed.scores[m]) for m in p.modalities},
                                  p.modalities)
        rows.append({"modalities": subset_name(p.modalities), "target_far": p.target_far,
                     "accepted": int(np.sum(llr > p.threshold)), "n": int(n)})
    return rows


def cross_modal_quality(op: OperatingPoints, t: TrialScores | None) -> dict[str, Any]:
    if t is None:
        return {}
    out = {}
    for m in t.modalities:
        g, i = _gi(t, (m,))
        s = np.asarray(t.scores[m])
        llr = op.fuser.calibrations[m].llr(s) if m in op.fuser.calibrations else None
        out[m] = _rates(s[g], s[i], None if llr is None else (llr[g], llr[i]))
    return out


def person_far_interval(impostor_llr: np.ndarray, people: np.ndarray, threshold: float, *,
                        n_bootstrap: int, seed: int, confidence: float) -> tuple[float, float]:
    """FAR of a fixed threshold on resampled PEOPLE (two-way: probe and template people).

    Impostor trials share people, so resampling trials (the per-point ``far_ci``) describes
    other trials of these same people; another half of the population varies far more.
    Probe and template people are resampled independently with replacement, each person
    bringing all of its trials.
    """
    probe, pi = np.unique(np.asarray(people[:, 0], str), return_inverse=True)
    tmpl, ti = np.unique(np.asarray(people[:, 1], str), return_inverse=True)
    n = np.zeros((probe.size, tmpl.size))
    k = np.zeros_like(n)
    np.add.at(n, (pi, ti), 1.0)
    np.add.at(k, (pi, ti), (np.asarray(impostor_llr) > threshold).astype(float))
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(probe.size, np.full(probe.size, 1.0 / probe.size), size=n_bootstrap)
    wt = rng.multinomial(tmpl.size, np.full(tmpl.size, 1.0 / tmpl.size), size=n_bootstrap)
    den = np.einsum("bp,pt,bt->b", wp, n, wt)
    far = np.einsum("bp,pt,bt->b", wp, k, wt)[den > 0] / den[den > 0]
    alpha = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(far, [alpha, 100 - alpha])
    return float(lo), float(hi)


def held_out_checks(op: OperatingPoints, sets: ScoreSets, threshold_half: int, label: str
                    ) -> list[dict[str, Any]]:
    """``check_held_out`` on the other half, plus the person-level interval of each point."""
    rows = check_held_out(op, sets.half(1 - threshold_half))
    t = sets.half(threshold_half)
    people = sets.half_people(threshold_half)
    gen = np.asarray(t.genuine, bool)
    for r in rows:
        subset = r["modalities"].split("+")
        imp = t.mask(subset) & ~gen
        llr = op.fuser.score_many({m: np.asarray(t.scores[m])[imp] for m in subset}, subset)
        point = next(p for p in op.thresholds if subset_name(p.modalities) == r["modalities"]
                     and p.target_far == r["target_far"])
        ci = person_far_interval(llr, people[imp], r["threshold"], n_bootstrap=point.n_bootstrap,
                                 seed=point.seed, confidence=point.confidence)
        r.update(run=label, far_ci_people=ci, far_in_ci_people=ci[0] <= r["far"] <= ci[1])
    return rows


def _plots(op: OperatingPoints, sets: ScoreSets, held: TrialScores, out: Path,
           det_png: Path | None) -> dict[str, str]:
    from edge_runtime.plots import plot_roc_det, plot_score_histograms

    stem = out.parent / out.stem
    det = det_png or Path(f"{stem}.det.png")
    hist, det = plot_operating_points(op, held, f"{stem}.hist.png", det)
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in ("face", "voice"):
        g, i = _gi(held, (m,))
        raw[f"{m} cosine (held-out half)"] = (np.asarray(held.scores[m])[g],
                                             np.asarray(held.scores[m])[i])
    grid = sets.join(["grid/fwd", "grid/rev"])
    cross = sets.join(CROSS) if any(k in sets.parts for k in CROSS) else None
    for m in cross.modalities if cross is not None else ():
        g, i = _gi(cross, (m,))
        raw[f"{m} (GRID live face vs live voice)"] = (np.asarray(cross.scores[m])[g],
                                                     np.asarray(cross.scores[m])[i])
    raw_png = plot_score_histograms(raw, f"{stem}.raw_hist.png")
    gm, im = _gi(grid, ("face", "voice"))
    fused = op.fuser.score_many({m: np.asarray(grid.scores[m]) for m in ("face", "voice")},
                                ("face", "voice"))
    curves = {m: (np.asarray(grid.scores[m])[gm], np.asarray(grid.scores[m])[im])
              for m in ("face", "voice")}
    curves["face+voice fused"] = (fused[gm], fused[im])
    grid_png = plot_roc_det(curves, f"{stem}.grid_det.png",
                            "GRID (REAL joint set, 7 people): face, voice, fused")
    return {"fused_histograms": str(hist), "fused_det": str(det), "raw_histograms": str(raw_png),
            "grid_det": str(grid_png)}


def _fit(sets: ScoreSets, fit_half: int, hashes: dict[str, str], kw: dict[str, Any],
         notes: str) -> OperatingPoints:
    names = [f"{k}/{fit_half}" for k in ("lfw", "speechocean", "artificial")] + list(CROSS)
    return build_operating_points(sets.join(names), sets.half(1 - fit_half), model_hashes=hashes,
                                  data_manifest_sha256=sets.data_sha256, transforms=TRANSFORMS,
                                  subsets=SUBSETS, provisional=False, notes=notes, **kw)


def calibrate(
    models: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    cache_dir: str | Path,
    precision: str = "fp32",
    sets_cfg: SetConfig | None = None,
    targets: Iterable[float] = DEFAULT_TARGETS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_per_class: int = 10,
    det_png: str | Path | None = None,
    threads: int = 2,
) -> dict[str, Any]:
    """Build, check, save and re-load the operating points; return the full report dict."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: folder {out.parent} does not exist")
    cfg = sets_cfg or SetConfig(seed=seed)
    with open_bundle(models, precision, threads) as bundle:
        hashes = hash_model_files({e.name: e.path for e in bundle.entries.values()})
        models_info = {e.name: {"file": e.file, "sha256": e.sha256, "meta_note":
                                e.meta.get("note")} for e in bundle.entries.values()}
        pin_splits = bundle.entries["pin_face"].meta.get("splits") \
            if "pin_face" in bundle.entries else None
        sets = build_score_sets(bundle, data, cache_dir, cfg)
    kw = dict(targets=tuple(targets), n_bootstrap=n_bootstrap, seed=seed,
              min_per_class=min_per_class)
    notes = ("face+voice fusion fitted on ARTIFICIAL pairs (LFW face k + speechocean762 voice k, "
             "different people); thresholds on held-out half 1")
    if sets.info.get("cross_modal"):
        notes += ("; pin/faa calibrated in-sample on GRID (7 real people), no FAR threshold: "
                  "the runtime checks calibrated LLR > 0")
    op = _fit(sets, 0, hashes, kw, notes)
    mirror = _fit(sets, 1, hashes, kw, notes)
    checks = (held_out_checks(op, sets, 1, "shipped: fit 0, thresholds 1, checked on 0")
              + held_out_checks(mirror, sets, 0, "mirror: fit 1, thresholds 0, checked on 1"))
    joint_fused = [p for p in op.thresholds if p.modalities == ("face", "voice") and p.measurable]
    passed = bool(checks) and all(r["far_in_ci_people"] for r in checks)
    if not (passed and joint_fused):
        why = ("no measurable face+voice threshold" if not joint_fused else
               "a held-out FAR fell outside its person-level bootstrap interval" if checks else
               "no threshold could be checked on the other half")
        op = dataclasses.replace(op, provisional=True, notes=f"{op.notes}; PROVISIONAL: {why}")
    grid_fwd = sets.parts.get("grid/fwd")
    grid_all = sets.join(["grid/fwd", "grid/rev"])
    cross = sets.join(CROSS) if any(k in sets.parts for k in CROSS) else None
    report: dict[str, Any] = {
        "out": str(out), "precision": precision, "models_dir": str(models),
        "models": models_info, "model_hashes": hashes, "data": str(data),
        "data_manifest_sha256": sets.data_sha256, "provisional": op.provisional,
        "notes": op.notes, "sets": sets.info, "pin_training_splits": pin_splits,
        "quality_held_out": [dict(q) for q in op.quality],
        "quality_held_out_mirror": [dict(q) for q in mirror.quality],
        "thresholds": [dataclasses.asdict(p) for p in op.thresholds],
        "held_out_check": checks, "held_out_check_passed": passed,
        "held_out_check_passed_trial_level": bool(checks) and all(r["far_in_ci"] for r in checks),
        "joint": {
            "artificial_held_out": joint_comparison(op, sets.parts["artificial/1"])
            if "artificial/1" in sets.parts else {},
            "grid_forward": joint_comparison(op, grid_fwd) if grid_fwd is not None else {},
            "grid_both_directions": joint_comparison(op, grid_all),
        },
        "mixed_attacks": [
            {**row, "claim": owner} for owner in ("face-owner", "voice-owner")
            for row in mixed_attacks(op, sets.join([f"grid-mixed-{owner}/fwd",
                                                    f"grid-mixed-{owner}/rev"]))],
        "cross_modal": cross_modal_quality(op, cross),
        "calibration": {m: dataclasses.asdict(c) for m, c in op.fuser.calibrations.items()},
        "fusion": {subset_name(s): {"weights": dict(f.weights), "bias": f.bias}
                   for s, f in op.fuser.subsets.items()},
    }
    report["plots"] = _plots(op, sets, sets.half(1), out,
                             Path(det_png) if det_png is not None else None)
    save_operating_points(op, out)
    load_operating_points(out, hashes)  # the file the runtime will read accepts these models
    return _finite(report)


def _finite(value: Any) -> Any:
    """NaN/inf -> None so the report is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value
