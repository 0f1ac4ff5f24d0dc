"""Fit calibration + fusion on one set of trials, set thresholds on held-out trials, package it.

Fitting and threshold setting should use different trials: thresholds measured on the data
the fusion was fitted on are optimistic. With no held-out set the result is forced to
``provisional`` and says so in its notes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calibration.product import (
    METHOD as PRODUCT,
)
from calibration.product import (
    independence,
    product_impostors,
    product_threshold_point,
)
from calibration.scores import (
    DEFAULT_PRIOR,
    TrialScores,
    cllr,
    fit_calibrations,
    fit_fuser,
    min_cllr,
)
from calibration.thresholds import DEFAULT_BOOTSTRAP, DEFAULT_TARGETS, thresholds_at_fars
from edge_runtime.engine_meta import sha256_file
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.metrics import auc, eer
from edge_runtime.operating_points import Fuser, OperatingPoints, subset_name

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hash_model_files(paths: Mapping[str, str | Path]) -> dict[str, str]:
    """sha256 of each model file, keyed by model name (what the loader compares against)."""
    out = {}
    for name, path in sorted(paths.items()):
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model file for {name!r} not found: {p}")
        out[name] = sha256_file(p)
    return out


def fused_score_sets(fuser: Fuser, trials: TrialScores) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fused LLRs per trained subset on the trials that have it: {"face+voice": (gen, imp)}."""
    gen = np.asarray(trials.genuine, bool)
    out = {}
    for subset in sorted(fuser.subsets, key=subset_name):
        ok = trials.mask(subset)
        if not (ok & gen).any() or not (ok & ~gen).any():
            continue
        llr = fuser.score_many({m: np.asarray(trials.scores[m])[ok] for m in subset}, subset)
        out[subset_name(subset)] = (llr[gen[ok]], llr[~gen[ok]])
    return out


def _quality(name: str, g: np.ndarray, i: np.ndarray) -> dict[str, Any]:
    rate, thr = eer(g, i)
    return {"modalities": name.split("+"), "eer": rate, "eer_threshold": thr, "auc": auc(g, i),
            "cllr": cllr(g, i), "min_cllr": min_cllr(g, i),
            "n_genuine": int(g.size), "n_impostor": int(i.size)}


def build_operating_points(
    fit: TrialScores,
    held_out: TrialScores | None = None,
    *,
    model_hashes: Mapping[str, str],
    data_manifest_sha256: str,
    targets: Iterable[float] = DEFAULT_TARGETS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
    prior: float = DEFAULT_PRIOR,
    transforms: Mapping[str, str] | None = None,
    subsets: Iterable[Iterable[str]] | None = None,
    min_per_class: int = 10,
    provisional: bool = True,
    notes: str = "",
    skipped: list[str] | None = None,
    held_out_people: np.ndarray | None = None,
) -> OperatingPoints:
    """Calibrate each modality and fit the subset fusers on ``fit``; measure quality (EER,
    AUC, Cllr, min-Cllr of the fused LLRs) and thresholds on ``held_out``. With a
    ``skipped`` list, what has too few trials is left out (reason appended) instead of an
    error. ``held_out_people`` ((probe, template) per held-out row) lets the product
    face+voice points resample people."""
    for name, digest in model_hashes.items():
        if not _SHA256.match(str(digest)):
            raise ConfigError(f"model hash for {name!r} is not a sha256 hex digest: {digest!r}")
    if not model_hashes:
        raise ConfigError("operating points must name the model files they belong to")
    if not _SHA256.match(str(data_manifest_sha256)):
        raise ConfigError(f"data manifest hash is not a sha256 hex digest: {data_manifest_sha256!r}")
    calibrations = fit_calibrations(fit, prior, transforms, min_per_class, skipped)
    fuser = fit_fuser(fit, calibrations, prior=prior, subsets=subsets, min_per_class=min_per_class,
                      skipped=skipped)
    remarks = [notes] if notes else []
    if held_out is None:
        held_out = fit
        provisional = True
        remarks.append("thresholds set on the fitting trials (no held-out set): optimistic")
    targets = tuple(targets)
    points, quality = [], []
    prod = product_impostors(fuser, dict(held_out.scores), held_out.genuine, held_out_people)
    for name, (g, i) in fused_score_sets(fuser, held_out).items():
        quality.append(_quality(name, g, i))
        for p in thresholds_at_fars(g, i, targets, modalities=name.split("+"),
                                    n_bootstrap=n_bootstrap, seed=seed, confidence=confidence):
            if not p.measurable and name == "face+voice" and prod is not None:
                # too few joint impostors: pair every face impostor with every voice one
                p = product_threshold_point(prod, g, p.target_far, n_bootstrap=n_bootstrap,
                                            seed=seed, confidence=confidence)
            points.append(p)
    if prod is not None and any(p.method == PRODUCT for p in points):
        ind = independence(dict(held_out.scores), held_out.genuine)
        remarks.append(f"face+voice thresholds below the joint set's reach set on the product "
                       f"of {prod.a.size} face x {prod.b.size} voice impostor trials "
                       f"(independence assumed: different datasets; Spearman of face vs voice "
                       f"score over {ind['n_joint_impostors']} joint impostor trials: "
                       f"{'n/a' if ind['spearman'] is None else format(ind['spearman'], '.3f')})")
    covered = {"+".join(q["modalities"]) for q in quality}
    missing = sorted({subset_name(s) for s in fuser.subsets} - covered)
    if missing:
        remarks.append(f"no held-out trials for {', '.join(missing)}: no thresholds for them")
    return OperatingPoints(
        model_hashes=dict(model_hashes), data_manifest_sha256=str(data_manifest_sha256),
        fuser=fuser, thresholds=tuple(points), prior=prior, provisional=provisional,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        quality=tuple(quality), notes="; ".join(remarks),
    )


def check_held_out(op: OperatingPoints, trials: TrialScores) -> list[dict[str, Any]]:
    """FAR/FRR of each stored threshold on other trials, and whether the FAR is inside the
    stored bootstrap interval (the issue's acceptance check on a held-out half)."""
    sets = fused_score_sets(op.fuser, trials)
    prod = product_impostors(op.fuser, dict(trials.scores), trials.genuine)
    rows = []
    for p in op.thresholds:
        name = subset_name(p.modalities)
        if p.threshold is None or name not in sets:
            continue
        g, i = sets[name]
        if p.method == PRODUCT:
            if prod is None:
                continue
            far, n_imp = prod.far(p.threshold), prod.n  # checked the way it was set
        else:
            far, n_imp = float(np.mean(i > p.threshold)), int(i.size)
        assert p.far_ci is not None
        rows.append({"modalities": name, "target_far": p.target_far, "threshold": p.threshold,
                     "far": far, "frr": float(np.mean(g <= p.threshold)),
                     "far_ci": p.far_ci, "far_in_ci": p.far_ci[0] <= far <= p.far_ci[1],
                     "n_genuine": int(g.size), "n_impostor": n_imp, "method": p.method})
    return rows


def plot_operating_points(
    op: OperatingPoints, trials: TrialScores, hist_png: str | Path, det_png: str | Path
) -> tuple[Path, Path]:
    """Fused-LLR histograms with each subset's thresholds, and ROC/DET with the target FARs."""
    from edge_runtime.plots import plot_roc_det, plot_score_histograms

    sets = fused_score_sets(op.fuser, trials)
    marks: dict[str, dict[str, float]] = {}
    for p in op.thresholds:
        if p.threshold is not None:
            marks.setdefault(subset_name(p.modalities), {})[f"FAR {p.target_far:g}"] = p.threshold
    targets = sorted({p.target_far for p in op.thresholds if p.threshold is not None})
    hist = plot_score_histograms(sets, hist_png, thresholds=marks)
    det = plot_roc_det(sets, det_png, "fused LLR per modality subset",
                       operating_points={f"FAR {t:g}": t for t in targets})
    return hist, det
