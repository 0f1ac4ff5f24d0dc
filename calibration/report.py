"""Markdown rendering of an `edgepin calibrate` report (benchmarks/operating_points.md).

Every figure names its data and count, and every limit of the data is said in words: the
face+voice pairs used to fit the fusion are ARTIFICIAL, GRID is 7 real people, and a FAR
target below ~3/n impostor scores is reported as not measurable, never as a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edge_runtime.cpu_int8 import SATURATING_KERNELS


def _pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ci(ci: Sequence[float] | None, fmt: Any = _num) -> str:
    return "" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _joint_rows(joint: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name, label in (("grid_forward", "GRID, first half enrols / second probes (REAL)"),
                        ("grid_both_directions", "GRID, both directions pooled (REAL)"),
                        ("artificial_held_out", "LFW x speechocean762 half 1 (ARTIFICIAL)")):
        j = joint.get(name) or {}
        if not j:
            continue
        a = j["acceptance"]
        rows.append([label, f"{j['face']['n_genuine']} / {j['face']['n_impostor']}",
                     _pct(j["face"]["eer"]), _pct(j["voice"]["eer"]), _pct(j["face+voice"]["eer"]),
                     f"{100 * a['eer_reduction']:+.2f} pts", _num(j["face"].get("cllr")),
                     _num(j["voice"].get("cllr")), _num(j["face+voice"].get("cllr"))])
    return rows


def _why_not(j: Mapping[str, Any]) -> str:
    """Reasons, read off the numbers, that fusion did not lower the EER on this set."""
    best = j["acceptance"]["better_single"]
    weak = "voice" if best == "face" else "face"
    why = []
    if j[best]["eer"] == 0.0:
        why.append(f"{best} alone already separates every trial (EER 0), which no fusion can "
                   "beat")
    if (j[weak].get("cllr") or 0.0) > 1.0:
        why.append(f"the {weak} LLRs are miscalibrated here (Cllr {j[weak]['cllr']:.2f} bits > 1, "
                   "worse than no information): the calibration and the fusion weights learned on "
                   "the held-out LFW/speechocean762 trials do not transfer to this set, so the "
                   f"fusion trusts {weak} more than it deserves")
    if j[weak]["eer"] > 2 * max(j[best]["eer"], 0.01):
        why.append(f"{weak} is much weaker on this set (EER {_pct(j[weak]['eer'])})")
    return "; ".join(why) or "the two scores are not complementary enough on this set"


def acceptance_statement(joint: Mapping[str, Any]) -> str:
    """The issue's acceptance sentence, on the real joint set first, honestly qualified."""
    parts = []
    for name, label in (("grid_forward", "On GRID (the only REAL joint set; first halves "
                                         "enrol, second halves probe)"),
                        ("grid_both_directions", "With both GRID directions pooled"),
                        ("artificial_held_out", "On the ARTIFICIAL held-out joint half")):
        j = joint.get(name) or {}
        if not j:
            continue
        a = j["acceptance"]
        n_g = j["face"]["n_genuine"]
        step = 100.0 / max(n_g, 1)
        verdict = ("below" if a["fused_below_best_single"] else
                   "NOT below" if a["eer_reduction"] < 0 else "EQUAL to")
        s = (f"{label}, the fused EER ({_pct(a['fused_eer'])}) is {verdict} the better single "
             f"modality ({a['better_single']}, {_pct(a['better_single_eer'])}), "
             f"difference {100 * a['eer_reduction']:+.2f} points, on {n_g} genuine and "
             f"{j['face']['n_impostor']} impostor trials")
        if a.get("eer_reduction_ci") is not None:
            lo, hi = a["eer_reduction_ci"]
            s += (f" ({100 * a.get('confidence', 0.95):.0f}% person-level interval of the "
                  f"difference [{100 * lo:+.2f}, {100 * hi:+.2f}] points: "
                  + ("the fusion is better beyond the sampling of people" if lo > 0 else
                     "not distinguishable from no gain with these people") + ")")
        if name.startswith("grid"):
            s += (f"; one genuine trial moves the FRR by {step:.1f} points, so a difference "
                  f"smaller than that is not evidence either way")
        if not a["fused_below_best_single"]:
            s += ". Why: " + _why_not(j)
            best, fused = j[a["better_single"]].get("cllr"), j["face+voice"].get("cllr")
            if a["eer_reduction"] == 0 and best is not None and fused is not None:
                s += (f". Cllr, which also weighs how far each trial is from the wrong side, "
                      f"is {fused:.3f} bits fused against {best:.3f} for "
                      f"{a['better_single']} alone ("
                      + ("the fusion is better by that measure" if fused < best else
                         "the fusion is not better by that measure either") + ")")
        parts.append(s + ".")
    return " ".join(parts) or "No joint set was available: the acceptance could not be measured."


def _span(info: Mapping[str, Any]) -> tuple[float, float]:
    secs = [g["voice_seconds"] for g in info["grid_probe_seconds"]]
    return min(secs), max(secs)


def _voice_lengths(r: Mapping[str, Any]) -> list[str]:
    rows = r.get("voice_by_length") or []
    table = (r.get("calibration") or {}).get("voice", {}).get("by_seconds") or []
    if not rows or not table:
        return []
    out = ["## Voice calibration by probe length", "",
           "The same cosine is weaker evidence from 0.75 s of speech than from 2 s, so the voice "
           "LLR is calibrated per probe length (fitted on half 0, probes cut to their first N "
           "voiced seconds; the runtime interpolates in log length and holds the ends). "
           "Thresholds are set on the reference length, what the live loop decides on.", ""]
    out += _table(["probe speech", "slope", "offset"],
                  [[f"{x:g} s", _num(a), _num(b)] for x, a, b in table])
    out += _table(["probe speech (held-out half 1)", "genuine", "impostor", "EER",
                   "Cllr, per-length calibration", "Cllr, reference-length calibration"],
                  [[f"{q['seconds']:g} s", q["n_genuine"], q["n_impostor"], _pct(q["eer"]),
                    _num(q["cllr"]), _num(q["cllr_reference_calibration"])] for q in rows])
    return out


def _voice_templates(v: dict[str, Any] | None) -> str:
    """What the voice templates took, as a parenthesis ("" for a report without it)."""
    if not v or not v.get("templates"):
        return ""
    return (f" ({v['templates']} templates: {v['recordings_min']}-{v['recordings_max']} "
            f"recordings, {v['recordings_mean']:.1f} on average; median "
            f"{v['speech_s_median']:.1f} s of speech)")


def render_markdown(r: Mapping[str, Any], command: str = "") -> str:
    from edge_runtime.access.pipeline import PipelineConfig

    info = r["sets"]
    proto = info["protocol"]
    cfg = proto["config"]
    lines = [f"# Operating points ({r['precision']} models)", ""]
    if command:
        lines += [f"Generated by `{command}`.", ""]
    lines += [f"File: `{r['out']}` — {'PROVISIONAL' if r['provisional'] else 'not provisional'}."
              f" Notes: {r['notes']}", ""]
    if r.get("exact_int8"):
        lines += [f"The {r['precision']} models ({', '.join(r['exact_int8'])}) were run as their "
                  "exact QDQ arithmetic (`export/qdq_reference.py`: Q/DQ executed exactly, float "
                  "ops, as TensorRT computes them), not by onnxruntime's fused int8 kernels: the "
                  "machine that ran this calibration has no int8 dot-product instruction, and "
                  f"{SATURATING_KERNELS}. TensorRT's own kernels may still differ slightly; "
                  "re-run `edgepin calibrate --precision int8` on the Jetson for the device's "
                  "own file.", ""]
    elif r["precision"] != "fp32":
        lines += [f"The {r['precision']} models were run by onnxruntime's CPU kernels on the "
                  "machine that ran this calibration. Those kernels differ from TensorRT's "
                  f"({SATURATING_KERNELS}), so these scores and thresholds describe that machine; "
                  "re-run `edgepin calibrate --precision int8` on the Jetson for the device's "
                  "own file.", ""]
    lines += [
              "## Models the file is keyed by (the runtime refuses it for any other file)", ""]
    lines += _table(["name", "file", "sha256"],
                    [[n, m["file"], f"`{m['sha256']}`"] for n, m in sorted(r["models"].items())])
    lines += ["## Data and protocol", "",
              f"- Data manifest sha256 `{r['data_manifest_sha256']}` (data under `{r['data']}`).",
              f"- Identities: `{cfg['split']}` people of each student's own identity split "
              f"(face {proto['splits']['face']}, voice {proto['splits']['voice']}): people the "
              "students never trained on"
              + (" (their test people and their validation people, who only picked the "
                 "checkpoint)" if cfg["split"] == "heldout" else "") + ".",
              "- Multi-sample enrolment as on the device: template = `make_template` of the first "
              + (f"N samples (N = {cfg['n_face']} face photos, {cfg['n_voice']} utterances)"
                 if not cfg.get("voice_enrol_s") else
                 f"N face photos (N = {cfg['n_face']}) and, as the door enrols, a speaker's first "
                 f"recordings until {cfg['voice_enrol_s']:g} s of voiced speech from at least "
                 f"{cfg['n_voice']} of them, never the last one"
                 + _voice_templates(info.get("voice_templates")))
              + "; the other samples probe"
              + (f" (at most {cfg['max_probes']} per person, so a person with 50 photos weighs as"
                 f" {cfg['max_probes']})" if cfg.get("max_probes") else "")
              + "; people with fewer than N " + ("samples" if not cfg.get("voice_enrol_s") else
                                                 "photos (speakers with one recording)")
              + " only probe (impostor-only), people with "
              "exactly N " + ("" if not cfg.get("voice_enrol_s") else "photos ")
              + "are enrolled and never probe (more templates: a few look-alike "
              "templates carry most false accepts). Voices pass "
              f"the device's audio checks and VAD (>= {cfg['min_speech_s']} s voiced, VAD "
              f"{proto['vad']}); voice probes keep "
              + (f"their first {cfg['voice_probe_s']:g} s of voiced speech (what the live loop "
                 "decides on; templates use whole utterances)"
                 if cfg.get("voice_probe_s") else "whole utterances")
              + "; LFW faces are dlib-aligned (no quality gate, still photos).",
              "- Two halves of the held-out people: calibration + fusion fitted on half 0, "
              "thresholds set on half 1, FAR re-measured on half 0 (and the mirror run); "
              "then the same on many random re-splits of the same people (coverage study).",
              f"- ARTIFICIAL joint set: {len(info['artificial_pairs'])} speechocean762 speakers "
              "paired by index with LFW people (most probe images first). They are different "
              "people: the pairing only shows how two independent scores fuse.",
              f"- GRID: {info['samples']['grid_halves'] // 2} real people, one 3 s clip each; a "
              f"half enrols (up to 5 best frames, VAD >= {cfg['grid_min_speech_s']} s), the other "
              "half probes (best frame, its voice"
              + (", {:.2f}-{:.2f} s of speech, scored with the voice calibration for that length"
                 .format(*_span(info)) if info.get("grid_probe_seconds") else "")
              + "). Never used to fit identity scores.",
              f"- Skipped: {info['skipped']['face']} face images, {info['skipped']['voice']} "
              f"utterances, GRID {info['skipped']['grid'] or 'none'}.", ""]
    lines += _table(["score set", "modalities", "genuine", "impostor"],
                    [[k, "+".join(v["modalities"]), v["n_genuine"], v["n_impostor"]]
                     for k, v in info["parts"].items()])
    lines += ["## Quality of the fused LLR per modality subset (held-out half 1)", ""]
    lines += _table(["subset", "genuine", "impostor", "EER", "AUC", "Cllr (bits)", "min Cllr"],
                    [[q["modalities"] if isinstance(q["modalities"], str)
                      else "+".join(q["modalities"]), q["n_genuine"], q["n_impostor"],
                      _pct(q["eer"]), _num(q["auc"], 4), _num(q["cllr"]), _num(q["min_cllr"])]
                     for q in r["quality_held_out"]])
    lines += ["Cllr - min Cllr is the calibration loss: LLRs fitted on half 0 applied to half 1.",
              ""]
    lines += _voice_lengths(r)
    lines += ["## Thresholds (accept iff fused LLR > threshold; 95% bootstrap intervals)", ""]
    rows = []
    for p in r["thresholds"]:
        name = "+".join(p["modalities"])
        if p["threshold"] is None:
            rows.append([name, f"{p['target_far']:g}", p["reason"], "", "", ""])
        else:
            rows.append([name, f"{p['target_far']:g}", _num(p["threshold"]) + _ci(p["threshold_ci"]),
                         _pct(p["achieved_far"], 3) + _ci(p["far_ci"], lambda v: _pct(v, 3)),
                         _ci(p.get("far_pi_people"), lambda v: _pct(v, 3)) or "-",
                         _pct(p["frr"]) + _ci(p["frr_ci"], _pct)])
    lines += _table(["subset", "target FAR", "threshold", "achieved FAR [trials resampled]",
                     "FAR on other people (prediction interval)", "FRR"], rows)
    lines += ["## Held-out check: FAR of each threshold on the other half", ""]
    pct3 = lambda v: _pct(v, 3)  # noqa: E731
    yn = lambda v: "yes" if v else "NO"  # noqa: E731
    lines += _table(["run", "subset", "target", "FAR on other half", "prediction interval "
                     "(people)", "inside", "fixed-threshold interval (people)", "inside",
                     "trial-level interval", "inside", "FRR"],
                    [[c["run"], c["modalities"], f"{c['target_far']:g}", _pct(c["far"], 3),
                      _ci(c["far_pi_people"], pct3), yn(c["far_in_pi_people"]),
                      _ci(c["far_ci_people"], pct3), yn(c["far_in_ci_people"]),
                      _ci(c["far_ci"], pct3), yn(c["far_in_ci"]), _pct(c["frr"])]
                     for c in r["held_out_check"]])
    checks = r["held_out_check"]
    outside = {k: sum(1 for c in checks if not c[k])
               for k in ("far_in_pi_people", "far_in_ci_people", "far_in_ci")}
    lines += [f"Outside: {outside['far_in_pi_people']} of {len(checks)} (prediction interval, "
              f"the one the check uses), {outside['far_in_ci_people']} (fixed-threshold, people),"
              f" {outside['far_in_ci']} (trial-level). The other half is other PEOPLE, and "
              "impostor trials share people (a few look-alike templates carry most false "
              "accepts), so resampling trials (the file's `far_ci`) describes other trials of "
              "the same people and is far too narrow. The person-level intervals resample probe "
              "and template people (two-way bootstrap). The fixed-threshold one is the "
              "uncertainty of one threshold's FAR on one group; the prediction interval also "
              "re-chooses the threshold on one resampled group and measures it on a second, "
              "independent one, which is what the check does (both halves vary). Half 0 was "
              "also the calibration/fusion fitting data of the shipped file (a 1-3 parameter "
              "affine map), not its threshold data.", ""]
    cov = r.get("coverage")
    if cov:
        lines += [f"### Coverage over {cov['splits']} random splits of the same people", ""]
        lines += _table(["subset", "target", "FAR on other half: median [min, max]",
                         "inside prediction interval", "inside fixed-threshold interval",
                         "p (misses by chance)", "consistent with 95%"],
                        [[p["modalities"], f"{p['target_far']:g}",
                          _pct(p["far_median"], 3) + _ci(p["far_range"], pct3),
                          f"{p['inside']} / {p['n']} ({p['coverage']:.0%})",
                          f"{p['inside_fixed']} / {p['n']} ({p['coverage_fixed']:.0%})",
                          f"{p['p_value']:.3f}", yn(p["consistent"])] for p in cov["points"]])
        lines += [f"Each split: calibration + fusion fitted on half 0, thresholds set on half 1 "
                  f"({cov['n_bootstrap']} person-level resamples per interval), FAR measured on "
                  "half 0. A true 95% interval misses about 1 split in 20; a point is "
                  f"inconsistent when its misses would occur by chance with p < {cov['alpha']:g}"
                  " (binomial). One split's pass or miss says little; this is what shows that "
                  "the intervals mean what they say. The splits re-use the same people, so they "
                  "are not independent draws from the population and the binomial test is a "
                  "guide, not an exact test.", ""]
    lines += [
              "## Acceptance: fused vs single modality on the joint sets", ""]
    lines += _table(["joint set", "gen / imp", "face EER", "voice EER", "fused EER",
                     "fused - best", "face Cllr", "voice Cllr", "fused Cllr"],
                    _joint_rows(r["joint"]))
    lines += [acceptance_statement(r["joint"]), "",
              "## Mixed attacks on GRID (face of A + voice of B, against A's and B's templates)",
              ""]
    claim = {"face-owner": "A (the face's owner)", "voice-owner": "B (the voice's owner)"}
    lines += _table(["claimed identity", "subset", "target FAR", "accepted"],
                    [[claim[m["claim"]], m["modalities"], f"{m['target_far']:g}",
                      f"{m['accepted']} / {m['n']}"] for m in r["mixed_attacks"]])
    lines += ["A face-only accept when A is claimed (voice-only when B is) is expected: that "
              "modality really is the claimed person's. The face+voice rows are the ones that "
              "must reject. On the device a mixed attempt is also denied when face and voice "
              "best match different enrolled people, and by the cross-modal check when present; "
              "these rows measure the fused identity score alone.", ""]
    lines += ["## Cross-modal scores (GRID live face vs live voice)", ""]
    if r["cross_modal"]:
        lines += _table(["score", "genuine", "impostor", "EER", "AUC", "Cllr", "min Cllr"],
                        [[m, q["n_genuine"], q["n_impostor"], _pct(q["eer"]), _num(q["auc"], 4),
                          _num(q.get("cllr")), _num(q.get("min_cllr"))]
                         for m, q in r["cross_modal"].items()])
        lines += ["In-sample: calibrated and measured on the same GRID trials. The PIN/FAA heads "
                  "were trained on GRID too (their splits: "
                  f"{(r.get('pin_training_splits') or {}).get('real (GRID)', 'not recorded')}).",
                  ""]
    else:
        lines += [info.get("cross_modal_note", "cross-modal unavailable"), ""]
    n_imp = {q["modalities"] if isinstance(q["modalities"], str) else "+".join(q["modalities"]):
             q["n_impostor"] for q in r["quality_held_out"]}
    usable = sorted({(n, p["target_far"]) for p in r["thresholds"] if p["threshold"] is not None
                     for n in ["+".join(p["modalities"])]})
    lines += ["## What the data supports", "",
              "- Thresholds the runtime can use (subset @ FAR): "
              + (", ".join(f"{n} @ {f:g}" for n, f in usable) or "none")
              + f". A device asking for any other pair (the pipeline's default target FAR is "
              f"{PipelineConfig().target_far:g}) gets a refusal naming the missing point, not a "
              "guessed threshold.",
              "- A FAR target is measurable only with >= 3/FAR impostor scores: "
              + ", ".join(f"{k}: {v} impostors (down to ~{3 / v:.1g})" for k, v in n_imp.items())
              + ".",
              "- GRID has 7 people: it can show whether fusion helps on real face+voice pairs "
              "only coarsely (EER steps of 1/n genuine trials) and cannot set or check a FAR "
              "threshold; the joint thresholds come from the ARTIFICIAL set, whose face and "
              "voice errors are independent by construction (real ones may be correlated).",
              "- LFW still photos and speechocean762 read speech are not the device's camera and "
              "microphone: recalibrate on enrolment-time data from the device before relying on "
              "FAR 1e-3 or below.", "", "## Plots", ""]
    lines += [f"- {k}: `{v}`" for k, v in r["plots"].items()]
    return "\n".join(lines) + "\n"
