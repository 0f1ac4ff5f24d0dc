"""The two voice rules of face+liveness, measured on the voice alone (held-out speakers).

1. "The voice is recognised as someone else". Before: another enrolled person's voice accepted
   on its own at the mode's FAR and nearer than the candidate's. It is tried against EVERY other
   enrolled person, so a genuine person's chance of a false "recognised as" grows with the
   gallery. Now: the voice must favour that person over the candidate by a calibrated LLR margin
   (a likelihood ratio between the two people), and from the decisive speech on the rule before
   applies as well. Measured: the share of genuine probes the rule denies that the veto lets
   through (the rule's own cost), and the share of "face of A + voice of enrolled B" probes that get past the rule AND
   the veto, in random galleries of 7, 15 and 30 of the 30 held-out speakers.
2. The live door's wait for a confirming voice. A speaker goes on talking (a probe utterance,
   then their next ones, as the attack benchmark's live door plays them); looks every 0.5 s
   from 3 s apply the shipped per-length veto; without the wait the first look grants a voice
   that does not contradict, with it a look grants at once only a voice that the voice-alone
   point accepts, and others are looked at again until 5 s. Measured: own voices denied, and
   same-gender strangers' voices granted, against one template each.

Both use the shipped operating points (fp32 by default) and the 30 held-out speechocean762
speakers of the veto (`calibration/voice_veto.held_out_speakers`), with templates of their first
3 utterances: the protocol this design study was run with on 2026-12-01. Since 2026-12-02 the
door and the veto enrol 15 s of speech (`ENROL_VOICE_S`); this study keeps its own protocol so
its published figures reproduce.
The shipped veto table and the margin were set on these same speakers: this is the design
measurement, not a held-out test (the attack benchmark cross-fits the veto).

    nice -n 19 python -m benchmarks.voice_rules --models models --data ../shared/data \\
        --out benchmarks/voice_rules.md
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from calibration.voice_veto import held_out_speakers
from edge_runtime.access.decision import recognised_as_other
from edge_runtime.errors import ConfigError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.models import ModelBundle, Thresholds
from edge_runtime.operating_points import VOICE_OTHER_MARGIN_LLR, OperatingPoints, SecurityMode

LENGTHS_S = (0.64, 1.0, 1.5, 2.0, 3.0)
GALLERIES = (7, 15, 30)
MARGINS = (1.0, 2.0, 3.0)
DRAWS = 10  # random galleries per probe
RULES = ("before", "margin 1", "margin 2", "margin 3", "shipped")
LOOKS_S = tuple(np.arange(3.0, 10.01, 0.5))  # the live door's looks
ENROL_UTTERANCES = 3  # this study's templates (the door enrols ENROL_VOICE_S of speech since)


def _speech(bundle: ModelBundle, data: Path) -> tuple[list[str], np.ndarray, list[list[Any]],
                                                      dict[str, str]]:
    gate = SpeechGate("auto")
    names, templates, probes = [], [], []
    for sp in held_out_speakers(data, bundle):
        speech = []
        for u in sp["utterances"]:
            wav = load_audio(Path(u), TARGET_SR)
            speech.append(gate.extract_speech(wav, gate.speech_segments(wav)))
        enrol = [s for s in speech[:ENROL_UTTERANCES] if s.size]
        rest = [s for s in speech[ENROL_UTTERANCES:] if s.size]
        if not enrol or not rest:
            continue
        t = np.mean([bundle.embed_voice(s) for s in enrol], axis=0)
        names.append(sp["name"])
        templates.append(t / np.linalg.norm(t))
        probes.append(rest[:8])
    with open(data / "speechocean762" / "SPEAKERS.tsv", newline="") as f:
        gender = {r["speaker"]: r["gender"] for r in csv.DictReader(f, delimiter="\t")}
    return names, np.stack(templates), probes, gender


def rule_modes(mode: SecurityMode) -> dict[str, SecurityMode]:
    """The "recognised as" rules compared, each as a face+liveness mode that the runtime's own
    ``recognised_as_other`` decides with: the rule before (no margin), each margin alone (a
    decisive speech never reached, so the rule before never joins) and the shipped mode."""
    return {"before": replace(mode, voice_other_margin_llr=None),
            **{f"margin {m:g}": replace(mode, voice_other_margin_llr=m,
                                         decisive_speech_s=math.inf) for m in MARGINS},
            "shipped": replace(mode, voice_other_margin_llr=mode.voice_other_margin_llr
                               if mode.voice_other_margin_llr is not None
                               else VOICE_OTHER_MARGIN_LLR)}


def fires(rule: SecurityMode, op_at: OperatingPoints, thresholds: Thresholds,
          other_score: float, own: float, seconds: float) -> bool:
    """Would the runtime deny "the voice is recognised as someone else" (``op_at``: the
    operating points at the probe's speech length, as the ``Verifier`` fixes them)."""
    return recognised_as_other("other", other_score, own, op_at.fuser.calibrations["voice"],
                               rule, thresholds, op_at, seconds) is not None


def recognised_as(bundle: ModelBundle, names: list[str], M: np.ndarray,
                  probes: list[list[Any]], seed: int) -> list[dict[str, Any]]:
    """Rule 1 per speech length and gallery size (see the module docstring)."""
    op = bundle.operating_points
    mode = op.mode("face+liveness")
    rules = rule_modes(mode)
    rng = np.random.default_rng(seed)
    K, rows = len(names), []
    for L in LENGTHS_S:
        n, op_at = int(L * TARGET_SR), op.at({"voice": L})
        cal = op_at.fuser.calibrations["voice"]
        veto = mode.voice_veto_at(L)
        trials = [(i, cal.llr(cos), cos) for i in range(K) for s in probes[i] if s.size >= n
                  for cos in [M @ bundle.embed_voice(s[:n])]]
        for N in GALLERIES:
            false = dict.fromkeys(rules, 0)
            own_cost = dict.fromkeys(rules, 0)
            passing = dict.fromkeys(rules, 0)
            vetoed = draws = 0
            for i, llr, cos in trials:
                for _ in range(DRAWS):
                    others = rng.choice([j for j in range(K) if j != i], N - 1, replace=False)
                    o = others[np.argmax(cos[others])]  # genuine: candidate i, its own voice
                    a = others[0]  # mixed: face of a, voice of i (enrolled)
                    rest = np.append(others[1:], i)
                    b = rest[np.argmax(cos[rest])]
                    v = llr[a] < veto
                    vetoed += v
                    draws += 1
                    for k, rule in rules.items():
                        fired = fires(rule, op_at, bundle.thresholds, cos[o], cos[i], L)
                        false[k] += fired
                        own_cost[k] += fired and not llr[i] < veto
                        passing[k] += not (v or fires(rule, op_at, bundle.thresholds, cos[b],
                                                      cos[a], L))
            rows.append({"seconds": L, "gallery": N, "trials": len(trials) * DRAWS,
                         "genuine_denied": {k: x / draws for k, x in false.items()},
                         "genuine_denied_not_vetoed": {k: x / draws
                                                       for k, x in own_cost.items()},
                         "mixed_passing": {k: x / draws for k, x in passing.items()},
                         "mixed_passing_veto_only": 1 - vetoed / draws})
    return rows


def live_wait(bundle: ModelBundle, names: list[str], M: np.ndarray, probes: list[list[Any]],
              gender: dict[str, str], until_s: float) -> dict[str, Any]:
    """Rule 2 (see the module docstring): own voices denied and strangers granted."""
    op = bundle.operating_points
    mode = op.mode("face+liveness")
    ops = [op.at({"voice": x}) for x in LOOKS_S]  # as the Verifier fixes them per look
    veto = [mode.voice_veto_at(x) for x in LOOKS_S]

    def decide(looks: list[tuple[float, bool]], wait: bool) -> tuple[bool, float]:
        """(granted, speech at the decision) from each look's (voice LLR, accepted alone)."""
        for k, (llr, confirms) in enumerate(looks):
            if llr < veto[k]:
                return False, LOOKS_S[k]
            last = k == len(looks) - 1 or LOOKS_S[k] >= (until_s if wait else 0) - 1e-9
            if confirms or not wait or last:
                return True, LOOKS_S[k]
        raise ConfigError("empty curve")

    trials: list[tuple[bool, list[tuple[float, bool]]]] = []  # (own voice, looks)
    for i, a in enumerate(names):
        for k in range(len(probes[i])):
            stream = np.concatenate(probes[i][k:])[: int(10 * TARGET_SR)]
            embs = [bundle.embed_voice(stream[: int(x * TARGET_SR)]) for x in LOOKS_S
                    if stream.size >= int(x * TARGET_SR)]
            for j, c in enumerate(names):
                if not embs or (j != i and gender.get(a) != gender.get(c)):
                    continue
                looks = [(float(o.fuser.calibrations["voice"].llr([cos])[0]),
                          o.decide({"voice": cos}, mode.target_far).accepted)
                         for e, o in zip(embs, ops, strict=False) for cos in [float(e @ M[j])]]
                trials.append((j == i, looks))
    out: dict[str, Any] = {}
    for wait in (False, True):
        decided = [(own, *decide(looks, wait)) for own, looks in trials]
        gen = [g for own, g, _ in decided if own]
        imp = [g for own, g, _ in decided if not own]
        t_gen = np.array([t for own, _, t in decided if own])
        out["wait" if wait else "no wait"] = {
            "own_denied": 1 - float(np.mean(gen)), "strangers_granted": float(np.mean(imp)),
            "genuine": len(gen), "strangers": len(imp),
            "own_decided_at_mean_s": float(np.mean(t_gen)),
            "own_waiting": float(np.mean(t_gen > LOOKS_S[0]))}
    return out


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# The voice rules of face+liveness, on the voice alone", "",
             f"Machine: {m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}, onnxruntime "
             f"{m['onnxruntime']}. Date: {res['date']}. Models: `{res['models']}` "
             f"({res['precision']}). Data: the {res['speakers']} held-out speechocean762 speakers "
             "of the voice veto (`calibration/voice_veto.py`), 3-utterance templates (this study's "
             "protocol; the door enrols 15 s of speech since 2026-12-02). The shipped "
             "veto table and the margin were set on these speakers: a design measurement, not a "
             "held-out test (`benchmarks/attacks.md` is).", "",
             "Re-run: `nice -n 19 python -m benchmarks.voice_rules --models models --data "
             "../shared/data --out benchmarks/voice_rules.md`", "",
             "## 1. \"The voice is recognised as someone else\", by gallery size", "",
             f"Random galleries ({DRAWS} per probe) of the held-out speakers. Genuine: a "
             "speaker's own probe, candidate = that speaker (the face is right): share denied "
             "by the rule. Mixed: the face of enrolled A with the voice of enrolled B (any "
             "gender; the attack benchmark pairs the same gender): share that passes the rule "
             "AND the shipped veto. `before`: another person's voice accepted alone at the "
             "FAR and nearer than the candidate's; `margin m`: calibrated LLR of the other "
             "person minus the candidate's > m; `shipped`: margin 2, or from the decisive "
             "speech (3 s) on also `before`. A genuine probe that the veto rejects anyway costs "
             "nothing extra: the first columns count those the rule alone denies.", "",
             "| speech | gallery | genuine denied by the rule, not by the veto: " +
             " / ".join(RULES) + " | mixed passing rule and veto: " + " / ".join(RULES) +
             " | mixed passing the veto alone |", "|---|---|---|---|---|"]
    for r in res["recognised_as"]:
        g, p = r["genuine_denied_not_vetoed"], r["mixed_passing"]
        lines.append(f"| {r['seconds']:g} s | {r['gallery']} | " +
                     " / ".join(f"{100 * g[k]:.1f} %" for k in RULES) + " | " +
                     " / ".join(f"{100 * p[k]:.1f} %" for k in RULES) +
                     f" | {100 * r['mixed_passing_veto_only']:.1f} % |")
    lines += ["", "All genuine probes the rule denies (vetoed or not), before / margin 2 / "
              "shipped: " + "; ".join(
                  f"{r['seconds']:g} s, {r['gallery']}: " + " / ".join(
                      f"{100 * r['genuine_denied'][k]:.1f}" for k in ("before", "margin 2",
                                                                       "shipped")) + " %"
                  for r in res["recognised_as"]) + "."]
    w = res["live_wait"]
    lines += ["", "## 2. The live door's wait for a confirming voice", "",
              "Each probe utterance followed by the speaker's next ones (up to 10 s), looks "
              "every 0.5 s from 3 s with the shipped per-length veto; against the speaker's own "
              "template and against every same-gender other speaker's (one template: the "
              "voice part of the stranger-voice attack). `no wait`: the first look grants a "
              "voice that does not contradict; `wait`: a look grants at once only a voice the "
              f"voice-alone point accepts, others are looked at again until {res['until_s']:g} s "
              "(a stream that ends before is decided on its end here; the live loop denies "
              "such a held grant).", "",
              "| door | own voices denied | strangers granted | own: decided at, mean | own: "
              "asked for more speech |", "|---|---|---|---|---|"]
    for k, v in w.items():
        lines.append(f"| {k} | {100 * v['own_denied']:.1f} % of {v['genuine']} | "
                     f"{100 * v['strangers_granted']:.1f} % of {v['strangers']} | "
                     f"{v['own_decided_at_mean_s']:.2f} s | {100 * v['own_waiting']:.0f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/voice_rules.md"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    bundle = ModelBundle.load(args.models, precision=args.precision)
    mode = bundle.operating_points.mode("face+liveness")
    names, M, probes, gender = _speech(bundle, args.data)
    res = {"machine": machine_info(), "precision": args.precision, "models": str(args.models),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "speakers": len(names), "until_s": mode.voice_confirm_until_s or 5.0,
           "recognised_as": recognised_as(bundle, names, M, probes, args.seed),
           "live_wait": live_wait(bundle, names, M, probes, gender,
                                  mode.voice_confirm_until_s or 5.0)}
    args.out.write_text(render(res))
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
