"""`edgepin calibrate`: score sets -> calibration + fusion -> thresholds -> checked file + report.

Protocol (every number in the report says which data it comes from):

* Held-out identities are split in two halves (``calibration.score_sets``). The shipped file
  fits the per-modality calibrations and the fusion on half 0 and sets the thresholds on
  half 1. The acceptance check measures the FAR of those thresholds on half 0 (other people)
  against the person-level prediction interval computed on half 1
  (``calibration.held_out``); the mirror run (fit on 1, thresholds on 0, checked on 1) is
  reported too, and a coverage study repeats the check on many random splits of the same
  people to show the intervals hold as often as they claim.
* The voice calibration has a table by probe length (speech seconds): thresholds are set on
  reference-length probes, the runtime fixes the calibration to each attempt's length.
* The face+voice fusion learns from ARTIFICIAL pairs (LFW person k + speechocean762 speaker k,
  different people). GRID (7 real people, face and voice of one person) is never fitted on
  for identity: it is the real joint set the fused EER is compared on.
* PIN / FAA scores can only be calibrated on GRID (the only real face-voice pairs), in-sample:
  they get an LLR calibration, but no FAR threshold (too few impostors); the runtime then
  applies "calibrated LLR > 0" to them (see ``edge_runtime.access.decision._cross_check``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.held_out import CROSS, coverage_study, fit_half, held_out_checks
from calibration.operating_points import hash_model_files, plot_operating_points
from calibration.people import paired_eer_difference_interval
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

DEFAULT_COVERAGE_SPLITS = 40
DEFAULT_COVERAGE_BOOTSTRAP = 200  # per split: the study counts hits, it needs no fine interval


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


def joint_comparison(op: OperatingPoints, t: TrialScores, people: np.ndarray | None = None,
                     *, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, Any]:
    """Face alone, voice alone and fused on the SAME joint trials (a fair comparison); with
    ``people`` (probe, template person per trial) also the person-level interval of the EER
    reduction."""
    gm, im = _gi(t, ("face", "voice"))
    if not gm.any() or not im.any():
        return {}
    out: dict[str, Any] = {}
    fuser = op.fuser
    for m in ("face", "voice"):
        s = np.asarray(t.scores[m])
        llr = fuser.calibrations[m].llr(s, t.seconds.get(m))
        out[m] = _rates(s[gm], s[im], (llr[gm], llr[im]))
    fused = fuser.score_many({m: np.asarray(t.scores[m]) for m in ("face", "voice")},
                             ("face", "voice"), t.seconds)
    out["face+voice"] = _rates(fused[gm], fused[im], (fused[gm], fused[im]))
    best = min(("face", "voice"), key=lambda m: out[m]["eer"])
    gain = out[best]["eer"] - out["face+voice"]["eer"]
    out["acceptance"] = {"better_single": best, "better_single_eer": out[best]["eer"],
                         "fused_eer": out["face+voice"]["eer"], "eer_reduction": gain,
                         "fused_below_best_single": bool(gain > 0)}
    if people is not None:
        ok = gm | im
        out["acceptance"]["eer_reduction_ci"] = paired_eer_difference_interval(
            np.asarray(t.scores[best])[ok], fused[ok], np.asarray(t.genuine, bool)[ok],
            np.asarray(people)[ok], n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
        out["acceptance"]["confidence"] = confidence
    return out


def mixed_attacks(op: OperatingPoints, mixed: TrialScores) -> list[dict[str, Any]]:
    """Share of face-of-A + voice-of-B attempts accepted at each stored threshold."""
    rows = []
    n = np.asarray(mixed.genuine).size
    for p in op.thresholds:
        if p.threshold is None or not set(p.modalities) <= set(mixed.scores):
            continue
        llr = op.fuser.score_many({m: np.asarray(mixed.scores[m]) for m in p.modalities},
                                  p.modalities, mixed.seconds)
        rows.append({"modalities": subset_name(p.modalities), "target_far": p.target_far,
                     "accepted": int(np.sum(llr > p.threshold)), "n": int(n)})
    return rows


def voice_length_quality(op: OperatingPoints, sets: ScoreSets, half: int = 1
                         ) -> list[dict[str, Any]]:
    """Voice probes cut to each calibrated length, on the held-out half: EER, and Cllr of the
    LLRs with the per-length calibration against the reference-length one (what a
    length-blind calibration would give)."""
    cal = op.fuser.calibrations.get("voice")
    if cal is None or not cal.by_seconds:
        return []
    out = []
    for x in sets.voice_probe_lengths():
        g, i = sets.voice_scores(x, half)
        at = cal.at(x)
        out.append({"seconds": x, **_rates(g, i, (at.llr(g), at.llr(i))),
                    "cllr_reference_calibration": cllr(cal.llr(g), cal.llr(i))})
    return out


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
                                ("face", "voice"), grid.seconds)
    curves = {m: (np.asarray(grid.scores[m])[gm], np.asarray(grid.scores[m])[im])
              for m in ("face", "voice")}
    curves["face+voice fused"] = (fused[gm], fused[im])
    grid_png = plot_roc_det(curves, f"{stem}.grid_det.png",
                            "GRID (REAL joint set, 7 people): face, voice, fused")
    return {"fused_histograms": str(hist), "fused_det": str(det), "raw_histograms": str(raw_png),
            "grid_det": str(grid_png)}


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
    coverage_splits: int = DEFAULT_COVERAGE_SPLITS,
    coverage_bootstrap: int = DEFAULT_COVERAGE_BOOTSTRAP,
    base: str | Path | None = None,
    face_tier: str = "student",
    face_tta: str = "none",
    voice_tier: str = "student",
) -> dict[str, Any]:
    """Build, check, save and re-load the operating points; return the full report dict.

    ``face_tta`` "flip": face embeddings averaged with the mirror image's; recorded in the
    file, so the runtime (and every gallery enrolled with it) embeds faces the same way.

    ``face_tier`` "large" calibrates the bundle with dlib's face ResNet (``face_large``) and
    its heads (``pin_face_large``, ...) instead of the student; ``voice_tier`` "large"
    scores every voice with Resemblyzer's GE2E port (``voice_large``; no heads read its space
    yet, so pin/faa are not calibrated with it).

    ``coverage_splits`` > 0 also re-splits the held-out people that many times to test that
    the intervals the check relies on hold as often as they claim (``coverage_study``).
    A data folder may lack some sets and a set may be too small for some modality or head:
    those are skipped with a one-line reason (``report["skipped"]``) and the rest is
    calibrated; with ``base`` (an operating-point file for the same models) what the data
    cannot re-fit keeps the base's values (``calibration.site``).
    """
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: folder {out.parent} does not exist")
    cfg = sets_cfg or SetConfig(seed=seed)
    with open_bundle(models, precision, threads, face_tier, voice_tier) as bundle:
        bundle.use_face_tta(face_tta)
        hashes = hash_model_files({e.name: e.path for e in bundle.entries.values()})
        models_info = {e.name: {"file": e.file, "sha256": e.sha256, "meta_note":
                                e.meta.get("note")} for e in bundle.entries.values()}
        pin_splits = bundle.entries["pin_face"].meta.get("splits") \
            if "pin_face" in bundle.entries else None
        sets = build_score_sets(bundle, data, cache_dir, cfg, partial=True)
        exact_int8 = list(bundle.exact_int8)
    kw = dict(targets=tuple(targets), n_bootstrap=n_bootstrap, seed=seed,
              min_per_class=min_per_class)
    notes = ("face+voice fusion fitted on ARTIFICIAL pairs (LFW face k + speechocean762 voice k, "
             "different people); thresholds on held-out half 1")
    if sets.info.get("cross_modal"):
        notes += ("; pin/faa calibrated in-sample on GRID (7 real people), no FAR threshold: "
                  "the runtime checks calibrated LLR > 0")
    skipped = [f"{k} data: {why}" for k, why in sets.info.get("missing_data", {}).items()]
    op = fit_half(sets, 0, hashes, kw, notes, skipped=skipped)
    halves = bool(sets.half_names(0)) and bool(sets.half_names(1))
    if halves:
        mirror = fit_half(sets, 1, hashes, kw, notes, skipped=[])
        checks = (held_out_checks(op, sets, 1, "shipped: fit 0, thresholds 1, checked on 0")
                  + held_out_checks(mirror, sets, 0, "mirror: fit 1, thresholds 0, checked on 1"))
    else:
        mirror, checks = None, []
        skipped.append("held-out check: needs face or voice people in both halves; none made")
    op = _with_prediction_intervals(op, checks)
    measured = any(p.measurable for p in op.thresholds)
    coverage = _coverage(sets, coverage_splits if halves and measured else 0, hashes,
                         {**kw, "n_bootstrap": coverage_bootstrap})
    expected = ("face", "voice", *(("pin", "faa") if pin_splits is not None or any(
        k in sets.parts for k in CROSS) else ()))
    told = " ".join(skipped)
    skipped += [f"modality {m!r}: no trials in this data" for m in expected
                if m not in op.fuser.calibrations and f"modality {m!r}" not in told]
    merge = None
    if base is not None:
        from calibration.site import merge_with_base

        op, merge = merge_with_base(op, load_operating_points(base, hashes), str(base))
        skipped += merge["thresholds_dropped"]
    if not op.fuser.calibrations:
        raise ConfigError("nothing could be calibrated from " + str(data) + ": "
                          + "; ".join(skipped))
    joint_fused = [p for p in op.thresholds if p.modalities == ("face", "voice") and p.measurable]
    shipped = [r for r in checks if r["run"].startswith("shipped")]
    passed = bool(shipped) and all(r["far_in_pi_people"] for r in shipped)
    coverage_ok = coverage is None or coverage["consistent"]
    if not (passed and coverage_ok and joint_fused):
        why = ("no measurable face+voice threshold" if not joint_fused else
               "no threshold could be checked on the other half" if not shipped else
               "a held-out FAR fell outside its person-level prediction interval" if not passed
               else "the intervals missed more often than 95% intervals may over random splits")
        op = dataclasses.replace(op, provisional=True, notes=f"{op.notes}; PROVISIONAL: {why}")
    grid_fwd = sets.parts.get("grid/fwd")
    grid_all = sets.join(["grid/fwd", "grid/rev"]) if grid_fwd is not None else None
    cross = sets.join(CROSS) if any(k in sets.parts for k in CROSS) else None
    joint_ok = frozenset(("face", "voice")) in op.fuser.subsets
    report: dict[str, Any] = {
        "out": str(out), "precision": precision, "face_tier": face_tier,
        "voice_tier": voice_tier, "exact_int8": exact_int8,
        "models_dir": str(models),
        "models": models_info, "model_hashes": hashes, "data": str(data),
        "data_manifest_sha256": sets.data_sha256, "provisional": op.provisional,
        "notes": op.notes, "sets": sets.info, "pin_training_splits": pin_splits,
        "quality_held_out": [dict(q) for q in op.quality],
        "quality_held_out_mirror": [dict(q) for q in mirror.quality] if mirror else [],
        "skipped": skipped, "base": merge,
        "thresholds": [dataclasses.asdict(p) for p in op.thresholds],
        "held_out_check": checks, "held_out_check_passed": passed,
        "held_out_check_mirror_passed": bool(checks) and all(
            r["far_in_pi_people"] for r in checks if not r["run"].startswith("shipped")),
        "held_out_check_passed_trial_level": bool(checks) and all(r["far_in_ci"] for r in checks),
        "coverage": coverage,
        "joint": {
            "artificial_held_out": joint_comparison(
                op, sets.parts["artificial/1"], sets.people.get("artificial/1"),
                n_bootstrap=n_bootstrap, seed=seed)
            if "artificial/1" in sets.parts and joint_ok else {},
            "grid_forward": joint_comparison(op, grid_fwd)
            if grid_fwd is not None and joint_ok else {},
            "grid_both_directions": joint_comparison(op, grid_all)
            if grid_all is not None and joint_ok else {},
        },
        "mixed_attacks": [
            {**row, "claim": owner} for owner in ("face-owner", "voice-owner")
            for row in mixed_attacks(op, sets.join([f"grid-mixed-{owner}/fwd",
                                                    f"grid-mixed-{owner}/rev"]))
            if f"grid-mixed-{owner}/fwd" in sets.parts],
        "cross_modal": cross_modal_quality(op, cross),
        "voice_by_length": voice_length_quality(op, sets)
        if {"speechocean/1", "artificial/1"} & set(sets.parts) else [],
        "calibration": {m: dataclasses.asdict(c) for m, c in op.fuser.calibrations.items()},
        "fusion": {subset_name(s): {"weights": dict(f.weights), "bias": f.bias}
                   for s, f in op.fuser.subsets.items()},
    }
    can_plot = halves and grid_all is not None and joint_ok and {"face", "voice"} <= set(
        sets.half(1).scores)
    report["plots"] = _plots(op, sets, sets.half(1), out,
                             Path(det_png) if det_png is not None else None) if can_plot else {}
    op = dataclasses.replace(op, face_tta=face_tta)
    report["face_tta"] = face_tta
    save_operating_points(op, out)
    load_operating_points(out, hashes)  # the file the runtime will read accepts these models
    return _finite(report)


def _with_prediction_intervals(op: OperatingPoints, checks: list[dict[str, Any]]
                               ) -> OperatingPoints:
    """Store each shipped threshold's person-level prediction interval in the file."""
    pi = {(c["modalities"], c["target_far"]): tuple(c["far_pi_people"]) for c in checks
          if c["run"].startswith("shipped")}
    points = tuple(dataclasses.replace(p, far_pi_people=pi.get((subset_name(p.modalities),
                                                                p.target_far)))
                   for p in op.thresholds)
    return dataclasses.replace(op, thresholds=points)


def _coverage(sets: ScoreSets, splits: int, hashes: dict[str, str], kw: dict[str, Any]
              ) -> dict[str, Any] | None:
    if splits <= 0:
        return None
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"coverage study: {splits} random splits", total=splits)
        return coverage_study(sets, splits, hashes, kw,
                              progress=lambda k: bar.update(task, completed=k))


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
