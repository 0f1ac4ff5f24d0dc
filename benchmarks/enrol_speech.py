"""How much enrolment speech the voice template needs: the live door's voice rules against the
template's size, on held-out speakers.

Re-run (about 3 min on 2 cores; writes enrol_speech.md and enrol_speech.json):

    nice -n 19 python -m benchmarks.enrol_speech --models models --data ../shared/data \\
        --out benchmarks/enrol_speech.md [--voice-tier large]

The 30 held-out speechocean762 speakers (12 utterances each; the voice student never trained
on them). Templates from their first 3, 5 or 7 utterances (voiced parts, normalised mean, as
enrolment makes them), and the shipped rule (``enrol_voice_count``: the first ones until
``ENROL_VOICE_S`` of voiced speech, at least 3), capped at 7 here so that every row is probed
with the SAME utterances: the 8th to the 12th. A probe is what a person says at the live door:
one of those utterances from its start or from a random point in it, followed by the next
ones (3 starts per utterance, 15 per speaker). Each is judged as the live door judges the voice
of face+liveness: looks at 3, 3.5, 4, 4.5 and 5 s of speech; at a look a calibrated LLR under
the veto rejects, a voice accepted on its own at FAR 1 % grants, else the door listens on; not
vetoed by 5 s grants. The veto: at each length the 2 % quantile of the own-voice LLRs of the
OTHER half of the speakers (cross-fitted, 6 random halvings, both ways), with templates of the
same row. Strangers: every other held-out speaker of the same gender, against the template.
Only the voice is judged here (no face, no "recognised as another" rule): the attack benchmark
(``benchmarks/attacks.md``) measures the whole door.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from edge_runtime.access.enroll import ENROL_VOICE_S, enrol_voice_count
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.models import ModelBundle

LOOKS_S = (3.0, 3.5, 4.0, 4.5, 5.0)
MAX_ENROL = 7
QUANTILE = 0.02
FAR = 0.01


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def shipped_enrol_counts(speakers: list[dict[str, Any]]) -> list[int]:
    """How many of each speaker's first recordings the shipped enrolment takes (here <= 7)."""
    return [min(MAX_ENROL, enrol_voice_count(sp["voiced"])) for sp in speakers]


def templates(speakers: list[dict[str, Any]], n_enrol: list[int]) -> list[np.ndarray]:
    """Each speaker's template as enrolment makes it: the normalised mean of their first
    ``n_enrol[i]`` recordings' embeddings."""
    return [unit(sp["enrol"][:k].mean(axis=0)) for sp, k in zip(speakers, n_enrol, strict=True)]


def embed_speakers(bundle: ModelBundle, data: Path, seed: int = 1) -> list[dict[str, Any]]:
    """Per held-out speaker: utterance embeddings (first MAX_ENROL), voiced seconds, and the
    live-door probes' embeddings at every look (n_probes, n_looks, dim)."""
    from calibration.voice_veto import held_out_speakers

    return embed_live_door(bundle.embed_voice, held_out_speakers(data, bundle), data, seed)


def embed_live_door(embed: Callable[[np.ndarray], np.ndarray], speakers: list[dict[str, Any]],
                    data: Path, seed: int = 1) -> list[dict[str, Any]]:
    """``embed_speakers`` for any voice embedding (a bundle's, a checkpoint's, the teacher's):
    speakers are ``{"name", "utterances"}`` with more than ``MAX_ENROL`` recordings."""
    from rich.progress import track

    from train.datasets.labels import read_labels_tsv

    gate = SpeechGate("auto")
    gender = read_labels_tsv(data / "speechocean762" / "SPEAKERS.tsv", "speaker", "gender")
    rng = np.random.default_rng(seed)
    out = []
    for sp in track(speakers, description="embedding speakers"):
        speech = []
        for u in sp["utterances"]:
            w = load_audio(u, TARGET_SR)
            speech.append(gate.extract_speech(w, gate.speech_segments(w)))
        if len(speech) <= MAX_ENROL:
            continue
        enrol = np.stack([embed(s) for s in speech[:MAX_ENROL]])
        probes = speech[MAX_ENROL:]
        seqs = []
        for i, w in enumerate(probes):
            for start in range(3):
                k = 0 if start == 0 else int(rng.integers(0, max(1, w.size - 2 * TARGET_SR)))
                heard = np.concatenate([w[k:]] + [probes[(i + m) % len(probes)]
                                                  for m in range(1, len(probes))])
                seqs.append(np.stack([embed(heard[: round(x * TARGET_SR)]) for x in LOOKS_S]))
        out.append({"name": sp["name"], "gender": gender.get(sp["name"]), "enrol": enrol,
                    "voiced": [s.size / TARGET_SR for s in speech[:MAX_ENROL]],
                    "probes": np.stack(seqs)})
    return out


def door(llr: np.ndarray, accepted: np.ndarray, veto: np.ndarray) -> np.ndarray:
    """Granted or not, per probe (rows), judged at the looks (columns) as the live door does."""
    granted = np.ones(llr.shape[0], bool)
    for r in range(llr.shape[0]):
        for c in range(llr.shape[1]):
            if llr[r, c] < veto[c]:
                granted[r] = False
                break
            if accepted[r, c]:
                break
    return granted


def measure(bundle: ModelBundle, speakers: list[dict[str, Any]], n_enrol: list[int],
            splits: int = 6, seed: int = 0) -> dict[str, Any]:
    """Own voice vetoed and strangers not vetoed, for templates of ``n_enrol[i]`` utterances."""
    op = bundle.operating_points
    cal = op.fuser.calibrations["voice"]
    n = len(speakers)
    tmpl = templates(speakers, n_enrol)
    llr, acc = {}, {}
    for i, p in enumerate(speakers):
        for j, t in enumerate(speakers):
            if i != j and p["gender"] != t["gender"]:
                continue
            s = p["probes"] @ tmpl[j]
            llr[i, j] = np.stack([cal.llr(s[:, c], x) for c, x in enumerate(LOOKS_S)], axis=1)
            acc[i, j] = np.vectorize(lambda v: op.decide({"voice": float(v)}, FAR).accepted)(s)
    rng = np.random.default_rng(seed)
    own, strangers, worst = [], [], []
    for _ in range(splits):
        perm = rng.permutation(n)
        halves = (perm[: n // 2], perm[n // 2:])
        for h in (0, 1):
            fit, test = halves[1 - h], halves[h]
            veto = np.quantile(np.concatenate([llr[i, i] for i in fit]), QUANTILE, axis=0)
            vetoed = [~door(llr[i, i], acc[i, i], veto) for i in test]
            own.append(float(np.mean(np.concatenate(vetoed))))
            strangers.append(float(np.mean(np.concatenate(
                [door(llr[i, j], acc[i, j], veto) for j in test for i in range(n)
                 if i != j and (i, j) in llr]))))
            worst.append(float(max(v.mean() for v in vetoed)))
    return {"own_vetoed": own, "stranger_passes": strangers, "worst_person": worst,
            "enrol_utterances": n_enrol,
            "enrol_voiced_s": [float(sum(sp["voiced"][:k]))
                               for sp, k in zip(speakers, n_enrol, strict=True)]}


def render(res: dict[str, Any]) -> str:
    lines = [
        "# Enrolment speech: the voice template's size at the live door",
        "",
        f"Machine: {res['machine']}. Date: {res['date']}. Models: `{res['models']}` (voice tier "
        f"{res['voice_tier']}, fp32). Data: the {res['speakers']} held-out speechocean762 "
        "speakers (never trained on), 15 live-door probes each (utterances 8-12).",
        "",
        f"Re-run: `{res['command']}`. How it is measured: `benchmarks/enrol_speech.py`'s "
        "docstring (the voice part of face+liveness at the live door, veto q = 2 % "
        "cross-fitted over 6 halvings x 2; mean and range over those 12 folds).",
        "",
        "| template | voiced s (mean) | own voice vetoed | range | stranger's voice not vetoed "
        "| range | worst person (mean) |",
        "|---|---|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        o, s, w = (np.asarray(r[k]) * 100 for k in ("own_vetoed", "stranger_passes",
                                                     "worst_person"))
        lines.append(f"| {name} | {np.mean(r['enrol_voiced_s']):.1f} | {o.mean():.2f} % | "
                     f"{o.min():.1f}-{o.max():.1f} | {s.mean():.2f} % | {s.min():.1f}-"
                     f"{s.max():.1f} | {w.mean():.0f} % |")
    rows = list(res["rows"].values())
    first, shipped = rows[0], rows[-1]

    def pct(r: dict[str, Any], k: str) -> float:
        return float(np.mean(r[k]) * 100)

    own = (pct(first, "own_vetoed"), pct(shipped, "own_vetoed"))
    other = (pct(first, "stranger_passes"), pct(shipped, "stranger_passes"))
    lines += ["", f"From 3 utterances to the shipped rule ({ENROL_VOICE_S:g} s, "
              "`edge_runtime/access/enroll.py`): own voice vetoed "
              f"{own[0]:.2f} -> {own[1]:.2f} %, a stranger's voice not vetoed {other[0]:.2f} -> "
              f"{other[1]:.2f} %" + (": both errors fall." if own[1] < own[0] and
                                     other[1] < other[0] else
                                     ": NOT both errors fall (see the ranges: the folds "
                                     "differ by several points)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--voice-tier", choices=("student", "large"), default="student")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/enrol_speech.md"))
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only re-render the markdown (to --out) from a finished run's JSON")
    args = ap.parse_args(argv)
    if args.render is not None:
        _write(json.loads(args.render.read_text()), args.out)
        return 0
    options = {"voice_tier": "large"} if args.voice_tier == "large" else {}
    with ModelBundle.load(args.models, threads=args.threads, **options) as bundle:
        speakers = embed_speakers(bundle, args.data)
        rows = {f"{k} utterances": measure(bundle, speakers, [k] * len(speakers))
                for k in (3, 5, MAX_ENROL)}
        rule = shipped_enrol_counts(speakers)
        rows[f"until {ENROL_VOICE_S:g} s, >= 3 (shipped; <= {MAX_ENROL} here)"] = \
            measure(bundle, speakers, rule)
    m = machine_info()
    res = {"machine": f"{m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}, "
                      f"onnxruntime {m['onnxruntime']}", "date": m["date"],
           "models": str(args.models), "voice_tier": args.voice_tier,
           "speakers": len(speakers), "rows": rows}
    _write(res, args.out)
    print(args.out.read_text())
    return 0


def _write(res: dict[str, Any], out: Path) -> None:
    """The markdown and the JSON of a run, its Re-run line naming ``out``."""
    res["command"] = ("nice -n 19 python -m benchmarks.enrol_speech --models models --data "
                      f"../shared/data --out {out}"
                      + ("" if res["voice_tier"] == "student" else " --voice-tier large"))
    out.write_text(render(res))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
