"""Rates, intervals, the markdown report and the plot of the attack benchmark.

Kept apart from the run (``benchmarks.attacks``) so the report can be re-rendered from
``attacks.json.gz`` and tested without models or data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_runtime.models import operating_points_file

STRICT_FAR = 1e-3  # the default mode at a stricter identity point, on the same attempts


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k of n (trials treated as independent)."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def people_interval(errors: list[tuple[str, bool]], n_boot: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval resampling PEOPLE (the attacked identity), not trials: attempts of
    one person are not independent."""
    by: dict[str, list[bool]] = defaultdict(list)
    for who, err in errors:
        by[who].append(err)
    groups = [np.asarray(v, float) for v in by.values()]
    if not groups:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        stats.append(sum(groups[i].sum() for i in pick) / sum(groups[i].size for i in pick))
    a = (1 - confidence) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def attempt_errors(rows: list[dict[str, Any]], mode: str, bona_fide: bool) -> list[tuple[str, bool]]:
    """(who, erred) per decided attempt: a bona fide attempt errs unless granted as its own
    identity, an attack errs when granted at all. Skipped attempts are not decisions."""
    rows = [r for r in rows if "skipped" not in r]
    if bona_fide:
        return [(r["who"], not (r[mode]["granted"] and r[mode].get("identity") == r["expected"]))
                for r in rows]
    return [(r["who"], bool(r[mode]["granted"])) for r in rows]


def rates(rows: list[dict[str, Any]], mode: str, bona_fide: bool) -> dict[str, Any]:
    errs = attempt_errors(rows, mode, bona_fide)
    k, n = sum(e for _, e in errs), len(errs)
    return {"errors": k, "n": n, "rate": k / n if n else math.nan,
            "ci": clopper_pearson(k, n) if n else (math.nan, math.nan),
            "ci_people": people_interval(errs)}


def halving_modes(res: Mapping[str, Any]) -> list[str]:
    """The live-door rows decided with the veto of each halving of the people (a record
    written before 2026-12-03 has none: an empty list)."""
    return list((res.get("halvings") or {}).get("modes") or [])


def pooled_errors(rows: list[dict[str, Any]], modes: Sequence[str], bona_fide: bool
                  ) -> list[tuple[str, bool]]:
    """``attempt_errors`` of the same attempts under each of ``modes``, joined: the rate over
    them is the mean of their rates (every mode decides the same attempts)."""
    return [e for m in modes for e in attempt_errors(rows, m, bona_fide)]


def halving_summary(res: Mapping[str, Any]) -> dict[str, Any]:
    """Per kind: the live door's rate under each halving's veto, and pooled."""
    modes = halving_modes(res)
    out: dict[str, Any] = {}
    for kind, data in res["kinds"].items() if modes else ():
        if not data:
            continue
        errs = [attempt_errors(data, m, kind == "genuine") for m in modes]
        each = [sum(e for _, e in x) / len(x) if x else math.nan for x in errs]
        joined = [e for x in errs for _, e in x]
        out[kind] = {"per_halving": each, "min": min(each), "max": max(each),
                     "pooled": sum(joined) / len(joined) if joined else math.nan}
    return out


def _why(reason: str) -> str:
    """A denial reason without its numbers, to count which check fails."""
    head = reason.split("] ", 1)[-1]
    return "; ".join(part.split("(")[0].strip().split(":")[0] for part in head.split("; "))


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in res["modes"]:
        rows = {}
        kinds = {k: v for k, v in {**res["kinds"], **res["grid"]}.items()
                 if any(mode in r for r in v)}  # GRID runs the shipped modes only
        if "genuine" in kinds:  # the live loop would keep listening up to the mode's minimum
            need = res["modes"][mode]["min_speech_s"]
            # the speech this variant decided on: a live-loop variant's own, else the probe's
            kinds = {"genuine": kinds["genuine"],
                     f"genuine, >= {need:g} s voiced": [
                         r for r in kinds["genuine"]
                         if r.get(mode, {}).get("decided_at_s", r.get("speech_s", 0)) >= need],
                     **{k: v for k, v in kinds.items() if k != "genuine"}}
        for kind, data in kinds.items():
            bona = kind.startswith("genuine") or kind == "grid-genuine"
            rows[kind] = rates(data, mode, bona)
            why: dict[str, int] = defaultdict(int)
            for r in data:
                if "skipped" not in r and not r[mode]["granted"]:
                    why[_why(r[mode]["reason"])] += 1
            rows[kind]["denied_because"] = dict(sorted(why.items(), key=lambda kv: -kv[1])[:6])
            heard = [r[mode]["decided_at_s"] for r in data
                     if "skipped" not in r and "decided_at_s" in r.get(mode, {})]
            if heard:  # a sequential (live-loop) variant: how much speech its decisions took
                rows[kind]["decided_at_s_median"] = float(np.median(heard))
                rows[kind]["looks_mean"] = float(np.mean(
                    [r[mode]["looks"] for r in data if "skipped" not in r]))
        out[mode] = rows
    return out


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.2f}%"


def _enrolment(res: dict[str, Any]) -> str:
    """How the door's people were enrolled (runs before 2026-12-02: 3 utterances each)."""
    if "enrol_voice_s" not in res:
        return "2 photos + 3 utterances each"
    n = list(res["enrol_utterances"].values())
    return (f"2 photos + their first utterances until {res['enrol_voice_s']:g} s of voiced "
            f"speech: {min(n)}-{max(n)} utterances, {np.mean(n):.1f} on average")


def _int8_arithmetic(res: dict[str, Any]) -> str:
    """How an INT8 run's files were computed (records from 2026-12-03 23:00 on say it)."""
    if res.get("exact_int8"):
        return (" INT8 files run as their exact QDQ arithmetic (what TensorRT computes, as the "
                "operating points were measured; this CPU has no int8 dot-product instruction): "
                f"{', '.join(res['exact_int8'])}.")
    if res.get("precision") == "int8" and res.get("int8_dot"):
        return (" INT8 files run through onnxruntime's int8 kernels, faithful on this CPU "
                f"({', '.join(res['int8_dot'])}).")
    return ""


def render(res: dict[str, Any], summary: dict[str, Any]) -> str:
    m = res["machine"]
    tier = res.get("face_tier", "student")
    voice_tier = res.get("voice_tier", "student")
    half = res.get("enrol_half", "first")  # runs before 2026-12-04 enrolled the first half
    stem = "attacks" + ("" if tier == "student" else f"_{tier}") \
        + ("" if voice_tier == "student" else f"_voice_{voice_tier}") \
        + ("" if res["precision"] == "fp32" else f"_{res['precision']}") \
        + ("" if half == "first" else "_half2")
    lines = [
        "# Attack benchmark (ISO/IEC 30107-3 terms), through the real `Verifier`",
        "",
        f"Machine: {m.get('cpu')}, {m.get('memory')}, {m.get('os')}, Python {m.get('python')}, "
        f"onnxruntime {m.get('onnxruntime')}. Date: {res.get('date', 'not recorded')}. Models: `models/` "
        f"({res['precision']}, face tier {tier}"
        + ("" if voice_tier == "student" else f", voice tier {voice_tier}") + "), operating points "
        f"`models/{operating_points_file(res['precision'], tier, voice_tier)}`, default mode "
        f"`{res['default_mode']}`."
        + _int8_arithmetic(res)
        + (f" Load average during the run: {res['load_average']} (other jobs may share the "
           "machine: this benchmark measures errors, not time)."
           if res.get("load_average") else ""),
        "",
        "Re-run: `nice -n 19 python -m benchmarks.attacks --models models --data ../shared/data "
        f"--out benchmarks/{stem}.md" + ("" if tier == "student" else f" --face-tier {tier}")
        + ("" if voice_tier == "student" else f" --voice-tier {voice_tier}")
        + ("" if res["precision"] == "fp32" else f" --precision {res['precision']}")
        + ("" if half == "first" else f" --enrol-half {half}")
        + "`.",
        "",
        f"Data: {res['people']} ARTIFICIAL identities (held-out LFW person + held-out "
        f"speechocean762 speaker of the same gender: different people, paired here); "
        f"{res['gallery_size']} enrolled ({_enrolment(res)}; the {half} half of the seeded "
        f"order), {res['strangers']} strangers. Probes: other photos, other utterances cut to "
        "2-4 s. GRID: 7 real clips, enrolled from first halves, second halves probed (1.5 s).",
        "",
        f"Attempts run: {res['done']} of {res['planned']} planned"
        + (" (PARTIAL: the run was still going when this was written)"
           if res["done"] < res["planned"] else "") + ".",
        "",
        "Identity kinds (genuine, zero-effort, mixed) run with the mode's liveness on "
        "\"report\": photos are stills, AV sync cannot be measured on them; they measure the "
        "IDENTITY part of each mode. Photo and GRID kinds run with liveness required. Intervals: "
        "95% Clopper-Pearson on attempts, and 95% percentile bootstrap over the attacked PEOPLE "
        "(attempts of one person are not independent; this is the honest one).",
        "",
        f"Plot: `benchmarks/{stem}.png`. Discussion and the choice of default: "
        f"`docs/security_modes.md`. Per-attempt rows: `benchmarks/{stem}.json.gz`.",
        "",
    ]
    veto = res.get("voice_veto") or {}
    if veto.get("cross_fitted"):
        lines += [
            "Voice veto of face+liveness (\"the voice must not contradict\"): per speech length, "
            "the q-quantile of the calibrated voice LLRs of people's OWN voices "
            "(`calibration/voice_veto.py`), set on one half of the 30 people and applied to the "
            "attempts whose claimed (face) identity is in the other half (cross-fitted). The "
            "`face+liveness` rows use q = 2 % (fixed before this run); `veto q=...` and `fixed "
            "veto -2` (the previous rule) decide the SAME collected attempts: only the veto "
            f"differs; `FAR {STRICT_FAR:g}` is the default mode with its face point at that FAR "
            "(same attempts, same veto); `recognised as at FAR (before)` is the default mode "
            "with the rule before the likelihood-ratio margin for \"the voice is recognised as "
            "another enrolled person\" (that person's voice accepted alone at the FAR, at every "
            "speech length). GRID rows use the shipped file's table (set on all 30 speakers, none of "
            "them GRID people). Tables (seconds: LLR): " + "; ".join(
                f"{name}: " + ", ".join(f"{x:g} s {v:+.2f}" for x, v in rows)
                for name, rows in veto["cross_fitted"].items() if "q=0.02" in name) + ".", ""]
    halved = halving_summary(res)
    if halved:
        n = len(halving_modes(res))
        lines += [
            f"## The live door over {n} halvings of the people", "",
            f"`{halving_modes(res)[0]}` decided again with its veto set on the other fold of each "
            f"of {n} halvings of the {res['people']} people (halving 0: the one above; the others "
            "drawn from their own streams): who sets the veto is luck of one split, the pooled "
            "rate (the mean over halvings) is what `benchmarks.door_gate` compares.", "",
            "| kind | pooled | min-max over halvings | each halving |", "|---|---|---|---|"]
        for kind, r in halved.items():
            lines.append(f"| {kind} | {_pct(r['pooled'])} | {_pct(r['min'])}-{_pct(r['max'])} | "
                         + ", ".join(_pct(x) for x in r["per_halving"]) + " |")
        lines.append("")
    for mode, rows in summary.items():
        mm = res["modes"][mode]
        veto = "voice must support the candidate" if mode.startswith("two-factor") else \
            f"voice veto {mm.get('voice_veto') or 'LLR ' + format(mm['voice_veto_llr'], 'g')}"
        if not mode.startswith("two-factor"):
            margin = mm.get("voice_other_margin_llr")
            veto += (f", recognised as another by LLR margin {margin:g} (or, from "
                     f"{mm['decisive_speech_s']:g} s of speech, accepted alone at the FAR)"
                     if margin is not None
                     else ", recognised as another when accepted alone at the FAR")
            if mm.get("sequential"):  # only looks can wait; a replayed file decides at once
                wait = mm.get("voice_confirm_until_s")
                veto += (f", a look waits up to {wait:g} s of speech for a voice that does not "
                         "confirm on its own" if wait else ", no wait for a confirming voice")
        lines += [f"## Mode `{mode}` (FAR target {mm['target_far']:g}, AV-sync threshold "
                  f"{mm['avsync_threshold']:.2f}, {veto}, "
                  f"min speech {mm['min_speech_s']:g} s)", "",
                  "| kind | measure | errors / attempts | rate | 95% CI (attempts) | 95% CI (people) |",
                  "|---|---|---|---|---|---|"]
        for kind, r in rows.items():
            bona = kind.startswith("genuine") or kind == "grid-genuine"
            what = "BPCER" if bona else ("FMR (gallery " f"{res['gallery_size']})"
                                         if kind == "zero-effort" else "APCER")
            label = kind if kind.startswith("grid") else f"{kind} (ARTIFICIAL)"
            lines.append(f"| {label} | {what} | {r['errors']} / {r['n']} | {_pct(r['rate'])} | "
                         f"{_pct(r['ci'][0])}-{_pct(r['ci'][1])} | "
                         f"{_pct(r['ci_people'][0])}-{_pct(r['ci_people'][1])} |")
        lines.append("")
        if mm.get("sequential"):
            lines += [f"Decided as the live loop decides ({mm['sequential']}, a look grants "
                      f"from {mm['decisive_speech_s']:g} s of speech on): speech heard at the "
                      "decision, median (looks per attempt, mean): " + "; ".join(
                          f"{kind} {r['decided_at_s_median']:.2f} s ({r['looks_mean']:.1f})"
                          for kind, r in rows.items() if "decided_at_s_median" in r) + ".", ""]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out_png: Path | IO[bytes]) -> Path | IO[bytes]:
    """Error rate per kind and mode with the people-level 95% interval (log-free, in %); to a
    path or an open file (the benchmark writes it through ``edge_runtime.atomic``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary)
    kinds = list(summary[modes[0]])  # the first mode runs every kind (GRID included)
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        blank = {"rate": math.nan, "ci_people": (math.nan, math.nan)}
        # a genuine row is named after the mode's speech minimum: match it by position
        named = {("genuine, >=" if k.startswith("genuine, ") else k): r
                 for k, r in summary[mode].items()}
        rows = [named.get("genuine, >=" if k.startswith("genuine, ") else k, blank)
                for k in kinds]  # veto variants skip GRID: a gap there
        rates = [100 * r["rate"] for r in rows]
        lo = [100 * r["ci_people"][0] for r in rows]
        hi = [100 * r["ci_people"][1] for r in rows]
        xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(kinds))]
        err = [[max(0.0, r - a) for r, a in zip(rates, lo, strict=True)],
               [max(0.0, b - r) for r, b in zip(rates, hi, strict=True)]]
        ax.bar(xs, rates, width, yerr=err, capsize=3, label=mode)
    ax.axhline(1, color="red", lw=0.8, ls="--", label="APCER target 1 %")
    ax.axhline(5, color="grey", lw=0.8, ls=":", label="BPCER target 5 %")
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels(["genuine, >= the mode's speech" if k.startswith("genuine, ") else k
                        for k in kinds], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("error rate %  (BPCER | FMR | APCER)")
    ax.set_title("Attack benchmark through the Verifier (ARTIFICIAL identities + GRID), "
                 "95% intervals over people")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110, format="png")
    plt.close(fig)
    return out_png
