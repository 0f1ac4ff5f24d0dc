"""Choose a voice run's checkpoint on validation speakers, under the protocols a door needs.

`edgepin distill` keeps the checkpoint with the best validation EER on whole clean utterances.
Issue 15's acceptance also asks for 2 s probes against whole-utterance templates and for 8 kHz
speech, and every voice run so far traded one against the other after its best epoch. With
`train.keep_epochs` a run keeps every epoch; this scores each one on the run's VALIDATION
speakers only (never the held-out test speakers) under three protocols and picks the lowest
mean EER, a rule fixed before the run (`voice_distill_door_v7.yaml`):

- whole: whole utterances, as `distill` validates;
- probe 2 s: the first 2 s of voiced speech (the device's VAD) against the other utterance's
  whole-utterance embedding, as `edgepin eval voice --probe-s 2`;
- 8 kHz short: every utterance through 8 kHz and back (what the device makes of an 8 kHz
  recorder), cut to its first 1 s of voiced speech, against another such cut: FSDD's shape
  (isolated digits of 0.3-0.8 s from an 8 kHz recorder, short against short).

    python -m train.select --run /work/runs/i15_g --data ../shared/data/speechocean762 \\
        --cache /work/cache [--also /work/runs/i15_e/student.pt ...]

Each row also reports how evenly own voices agree across PEOPLE (``own_voice_consistency``),
outside the rule: a student can lower every pooled EER and still leave a few people whose own
recordings disagree, and a door's population-quantile veto turns those into rejected people
(door_v19, `benchmarks/students.md`, "Voice, 2026-12-03"). Ten validation speakers are few for
it: they did not flag door_v19 (the people it fails were held-out ones), so it informs and the
door rehearsal (`benchmarks/voice_rehearsal.py`, the ship chain's first step) decides.

Writes `<run>/select.json` and copies nothing: ship the chosen file yourself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_runtime.errors import ConfigError, EdgepinError
from edge_runtime.frontend.audio import resample
from edge_runtime.frontend.features import l2_normalise
from edge_runtime.metrics import eer, make_pairs

PROTOCOLS = ("whole", "probe 2 s", "8 kHz short")
PROBE_S = 2.0
SHORT_S = 1.0
TEMPLATE_UTTERANCES = 5  # the door enrols 4-8 recordings (15 s of speech)


def validation_set(ckpt: dict, data: Path, cache: Path) -> dict[str, Any]:
    """The run's validation speakers' audio, probes, 8 kHz copies and teacher embeddings."""
    from edge_runtime.frontend.vad import SpeechGate
    from train.evaluate import teacher_probe_embeddings, voiced_probe
    from train.prepare import prepare_voices
    from train.tasks import split_reader, voice_front_end

    cfg = ckpt["config"]
    samples, splits = split_reader("voice", data, cfg["split"])
    val = set(splits["val"])
    chosen = [s for s in samples if s.identity in val]
    if not chosen:
        raise ConfigError(f"{data}: no validation speakers under the run's split {cfg['split']}")
    prepared = prepare_voices(chosen, cache, voice_front_end(cfg), with_teacher=True)
    gate = SpeechGate()
    vad = f"vad-{gate.backend}-{gate.threshold:g}"
    probes = [voiced_probe(w, gate, PROBE_S) for w in prepared.audio]
    narrow = [voiced_probe(resample(resample(w, 16000, 8000), 8000, 16000).astype(np.float32), gate, SHORT_S)
              for w in prepared.audio]
    teacher = {"whole": np.asarray(prepared.utterance_teacher),
               "probe": teacher_probe_embeddings(prepared.samples, probes, PROBE_S, vad, cache)}
    return {"ids": prepared.identities, "audio": prepared.audio, "probes": probes, "narrow": narrow,
            "teacher": teacher, "n_speakers": len(set(prepared.identities))}


def protocol_eers(whole: np.ndarray, probe: np.ndarray, narrow: np.ndarray | None, ids: list[str],
                  max_impostor: int = 200, seed: int = 0) -> dict[str, float]:
    """EER % of each protocol from L2-normalised embeddings (`narrow` None: not measured)."""
    gp, ip = make_pairs(ids, max_impostor_per_identity=max_impostor, seed=seed)

    def rate(a: np.ndarray, b: np.ndarray) -> float:
        gen = np.sum(a[gp[:, 0]] * b[gp[:, 1]], axis=1)
        imp = np.sum(a[ip[:, 0]] * b[ip[:, 1]], axis=1)
        return 100.0 * float(eer(gen, imp)[0])

    out = {"whole": rate(whole, whole), "probe 2 s": rate(probe, whole)}
    if narrow is not None:
        out["8 kHz short"] = rate(narrow, narrow)
    return out


def own_voice_consistency(emb: np.ndarray, ids: list[str],
                          n_template: int = TEMPLATE_UTTERANCES) -> dict[str, Any] | None:
    """Per person: a template of their first utterances (at most ``n_template``, leaving two
    scored), the median score of their other utterances against it, standardised by the impostor
    scores of the same templates (so two models' scales compare). ``spread`` (highest - lowest
    person) and ``lowest`` say whether a few people's own voices disagree; None with fewer than
    two people of three or more utterances."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, who in enumerate(ids):
        rows[who].append(i)
    people = {who: ix for who, ix in rows.items() if len(ix) >= 3}
    if len(people) < 2:
        return None
    templates, scored = {}, {}
    for who, ix in people.items():
        k = min(n_template, len(ix) - 2)
        templates[who] = l2_normalise(emb[ix[:k]].mean(axis=0))
        scored[who] = emb[ix[k:]]
    imp = np.concatenate([scored[a] @ templates[b] for a in people for b in people if a != b])
    mu, sd = float(imp.mean()), max(float(imp.std()), 1e-12)
    z = {who: float(np.median((scored[who] @ templates[who] - mu) / sd)) for who in people}
    low = min(z, key=lambda who: z[who])
    return {"spread": max(z.values()) - z[low], "lowest": z[low], "lowest_speaker": low,
            "median": float(np.median(list(z.values()))), "people": len(z)}


def score_checkpoint(path: Path, vs: dict[str, Any]) -> dict[str, Any]:
    from train.distill import load_student
    from train.tasks import embed_utterances, voice_front_end

    model, ckpt = load_student(path)
    fe = voice_front_end(ckpt["config"])
    dev = torch.device("cpu")
    e = {k: embed_utterances(model, vs[k], fe, dev) for k in ("audio", "probes", "narrow")}
    return _row(str(path), ckpt.get("epoch"), protocol_eers(e["audio"], e["probes"], e["narrow"], vs["ids"]),
                own_voice_consistency(e["audio"], vs["ids"]))


def teacher_row(vs: dict[str, Any]) -> dict[str, Any]:
    from train.teachers import VoiceTeacher

    t = VoiceTeacher()
    narrow = np.stack([t.embed(w) for w in vs["narrow"]])
    whole, probe = vs["teacher"]["whole"], vs["teacher"]["probe"]
    return _row("teacher (Resemblyzer)", None,
                protocol_eers(l2_normalise(whole), l2_normalise(probe), l2_normalise(narrow), vs["ids"]),
                own_voice_consistency(l2_normalise(whole), vs["ids"]))


def _row(name: str, epoch: int | None, eers: dict[str, float],
         consistency: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"path": name, "epoch": epoch, "eer": eers, "mean": float(np.mean([eers[p] for p in PROTOCOLS])),
            "consistency": consistency}


def select(run: Path, data: Path, cache: Path, also: list[Path] | None = None) -> dict[str, Any]:
    """Score every `<run>/epochs/ep*.pt` (and `also`) and choose the lowest mean EER."""
    from rich.progress import track

    epochs = sorted((run / "epochs").glob("ep*.pt"))
    if not epochs:
        raise ConfigError(f"{run}/epochs holds no ep*.pt: train with train.keep_epochs: true")
    ckpt = torch.load(epochs[0], map_location="cpu", weights_only=False)
    vs = validation_set(ckpt, data, cache)
    rows = [score_checkpoint(p, vs) for p in track(epochs, description="validation protocols")]
    best = min(rows, key=lambda r: r["mean"])
    extra = [score_checkpoint(p, vs) for p in also or []]
    return {"run": str(run), "data": str(data), "speakers": vs["n_speakers"],
            "utterances": len(vs["ids"]), "rule": "lowest mean EER over " + ", ".join(PROTOCOLS),
            "chosen": best, "epochs": rows, "also": extra, "teacher": teacher_row(vs)}


def render(res: dict[str, Any]) -> str:
    lines = [f"validation speakers {res['speakers']} ({res['utterances']} utterances); rule: {res['rule']}",
             "| checkpoint | " + " | ".join(PROTOCOLS) + " | mean | own-voice spread z | lowest z (who) |",
             "|---|" + "---|" * (len(PROTOCOLS) + 3)]
    for r in [res["teacher"], *res["epochs"], *res["also"]]:
        mark = " (chosen)" if r["path"] == res["chosen"]["path"] else ""
        c = r.get("consistency")
        own = (f"{c['spread']:.2f} | {c['lowest']:.2f} ({c['lowest_speaker']})" if c else "n/a | n/a")
        lines.append(f"| {r['path']}{mark} | " + " | ".join(f"{r['eer'][p]:.2f}" for p in PROTOCOLS)
                     + f" | {r['mean']:.2f} | {own} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="the speechocean762 folder the run used")
    p.add_argument("--cache", required=True, type=Path)
    p.add_argument("--also", nargs="*", type=Path, default=[], help="other checkpoints, for reference")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        res = select(a.run, a.data, a.cache, a.also)
    except EdgepinError as exc:  # a run without kept epochs, a missing checkpoint: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    (a.run / "select.json").write_text(json.dumps(res, indent=2))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
