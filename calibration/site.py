"""Calibrating on a site's own people: keep what the site's data cannot re-fit from a base file.

A site's enrolment data is small: it may hold enough face trials to re-fit the face
calibration but far too few impostors for a threshold at FAR 1e-4, and no talking-face clips
for the cross-modal heads. ``edgepin calibrate --base models/operating_points.yaml`` starts
from the shipped file and replaces only what the site data supports; everything else keeps
the base's values, and the merge says which part came from where.

A base threshold is an LLR cut on calibrated (and fused) scores: it stays valid only while
every calibration and the fusion under it are the base's. A modality whose calibration the
site can fit but none of whose base thresholds it can set (a few people give far too few
impostors for FAR 1e-2) keeps the base's calibration and thresholds together; when the site
sets some of them, the ones it cannot set are dropped (with the reason), never silently
applied to a differently scaled LLR.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edge_runtime.operating_points import Fuser, OperatingPoints, subset_name


def merge_with_base(site: OperatingPoints, base: OperatingPoints, base_name: str
                    ) -> tuple[OperatingPoints, dict[str, Any]]:
    """``site`` where it was measured, ``base`` elsewhere where still valid; and the record
    of what was re-fitted, kept and dropped."""
    measured = {(p.modalities, p.target_far) for p in site.thresholds if p.measurable}
    unsupported = {}
    for m in set(site.fuser.calibrations) & set(base.fuser.calibrations):
        needs = [(p.modalities, p.target_far) for p in base.thresholds
                 if p.measurable and m in p.modalities]
        if needs and not any(k in measured for k in needs):
            unsupported[m] = (f"site trials calibrate {m} but set none of its {len(needs)} "
                              "base thresholds: base calibration and thresholds kept together")
    refit_cal = set(site.fuser.calibrations) - set(unsupported)
    refit_sub = {s for s in site.fuser.subsets if not s & set(unsupported)}
    calibrations = {**base.fuser.calibrations,
                    **{m: c for m, c in site.fuser.calibrations.items() if m in refit_cal}}
    subsets = {**base.fuser.subsets,
               **{s: f for s, f in site.fuser.subsets.items() if s in refit_sub}}
    site_points = {(p.modalities, p.target_far): p for p in site.thresholds
                   if not set(p.modalities) & set(unsupported)}
    points, kept, dropped, refit_points = [], [], [], []
    keys = list(dict.fromkeys([*((p.modalities, p.target_far) for p in base.thresholds),
                               *site_points]))
    base_points = {(p.modalities, p.target_far): p for p in base.thresholds}
    for key in keys:
        mods, far = key
        label = f"{subset_name(mods)} @ FAR {far:g}"
        s, b = site_points.get(key), base_points.get(key)
        if s is not None and s.measurable:
            points.append(s)
            refit_points.append(label)
            continue
        base_valid = (b is not None and b.measurable and not set(mods) & refit_cal
                      and frozenset(mods) not in refit_sub)
        if base_valid:
            points.append(b)
            kept.append(label)
        else:
            if b is not None and b.measurable:
                dropped.append(f"{label}: base threshold dropped (its calibration or fusion "
                               f"was re-fitted on site data, which cannot set it: "
                               f"{s.reason if s is not None and s.reason else 'no trials'})")
            if s is not None:
                points.append(s)
    merge = {"base": base_name, "calibrations_not_supported": unsupported,
             "calibrations_refit": sorted(refit_cal),
             "calibrations_from_base": sorted(set(base.fuser.calibrations) - refit_cal),
             "fusions_refit": sorted(subset_name(s) for s in refit_sub),
             "fusions_from_base": sorted(subset_name(s) for s in set(base.fuser.subsets)
                                         - refit_sub),
             "thresholds_refit": refit_points, "thresholds_from_base": kept,
             "thresholds_dropped": dropped}
    notes = (f"{site.notes}; started from {base_name}: re-fitted on site data: "
             f"{', '.join(merge['calibrations_refit']) or 'nothing'}; kept from base "
             f"(not measured on site data): {', '.join(merge['calibrations_from_base']) or '-'}")
    merged = dataclasses.replace(site, fuser=Fuser(calibrations, subsets),
                                 thresholds=tuple(points), notes=notes)
    return merged, merge
