"""Voice acceptance protocols of issue 15, every model on the same trials, in one run.

Protocols (held-out speakers only, never trained on):
- speechocean762 held-out, whole utterances (as in students.md);
- speechocean762 held-out, 2 s probes (first 2 s of voiced speech) vs whole-utterance templates;
- the noisy/reverberant copy of the held-out set (`edgepin voice-room-set`), whole utterances
  and 2 s probes;
- FSDD (8 kHz, all 6 speakers, never trained on), whole utterances.

    python -m benchmarks.voice_door --data ../shared/data --room /work/data/speechocean762_room \\
        --models teacher models/voice.onnx /work/runs/i15_long/student.pt \\
        --out benchmarks/voice_door.json --cache /work/cache
    python -m benchmarks.voice_door --room - --cache - --models table --out benchmarks/voice_door.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info
from calibration.thresholds import people_draws, percentile_interval
from edge_runtime.metrics import eer

N_BOOT = 1000
# impostor pairs sampled per speaker, seed 0: the trials of issue 15's lines (students.md too)
IMPOSTORS_PER_SPEAKER = 200


def gap_interval(teacher: tuple[np.ndarray, np.ndarray], student: tuple[np.ndarray, np.ndarray],
                 pairs: tuple[np.ndarray, np.ndarray], n_boot: int = N_BOOT,
                 seed: int = 0) -> tuple[float, float]:
    """95 % interval of the student's EER minus the teacher's, in points, over speakers.

    Both models score the same trials, so each draw resamples the speakers once for both
    (paired): a genuine trial counts once per draw of its speaker, an impostor trial once per
    draw of each of its two speakers. With 20 held-out speakers this is the honest width of a
    "within 1 pt" line."""
    gen_pairs, imp_pairs = pairs
    both = np.concatenate([gen_pairs, imp_pairs])
    genuine = np.arange(len(both)) < len(gen_pairs)
    t, st = np.concatenate(teacher), np.concatenate(student)  # trials in the order of `both`
    gaps = []
    for idx in people_draws(both[:, 0], both[:, 1], genuine, n_boot, seed):
        g, i = idx[genuine[idx]], idx[~genuine[idx]]
        if g.size and i.size:
            gaps.append(100 * (eer(st[g], st[i])[0] - eer(t[g], t[i])[0]))
    return percentile_interval(np.asarray(gaps), 0.95)


def protocols(data: Path, room: Path) -> list[dict]:
    so = data / "speechocean762"
    return [
        {"name": "speechocean762 held-out, whole utterances", "data": so, "split": "test", "probe_s": None},
        {"name": "speechocean762 held-out, 2 s probes vs whole templates", "data": so, "split": "test",
         "probe_s": 2.0},
        {"name": "room copy of held-out, whole utterances", "data": room, "split": "all", "probe_s": None},
        {"name": "room copy of held-out, 2 s probes vs whole templates", "data": room, "split": "all",
         "probe_s": 2.0},
        {"name": "FSDD 8 kHz, all 6 speakers (never trained on)", "data": data / "fsdd", "split": "all",
         "probe_s": None},
    ]


def table(rows: list[dict]) -> str:
    """Markdown table of `rows` (as written to the JSON file)."""
    out = ["| protocol | model | speakers | genuine / impostor trials | EER % | AUC | gap vs teacher (pt) "
           "| gap, 95 % CI over speakers | 2 s probe ms: teacher / student (paired speed-up) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pt = r.get("probe_timing")
        timing = (f"{pt['teacher_ms']:.1f} / {pt['student_ms']:.1f} ({pt['speedup_median_of_ratios']:.1f}x, "
                  f"n={pt['samples']})" if pt and pt["samples"] >= 10 else "—")
        gap = "—" if r["gap_pt"] is None else f"{r['gap_pt']:+.2f}"
        ci = r.get("gap_ci_pt")
        ci_text = "—" if not ci else f"{ci[0]:+.2f} to {ci[1]:+.2f}"
        out.append(f"| {r['protocol']} | {r['model']} | {r['identities']} | {r['genuine']} / {r['impostor']} "
                   f"| {100 * r['eer']:.2f} | {r['auc']:.4f} | {gap} | {ci_text} | {timing} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--room", required=True)
    p.add_argument("--models", nargs="+", required=True, help="teacher, .onnx or .pt students")
    p.add_argument("--cache", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe-timing-samples", type=int, default=30)
    p.add_argument("--out", default="benchmarks/voice_door.json")
    args = p.parse_args(argv)
    if args.models == ["table"]:  # print the table of an existing result file
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return 0
    from train.evaluate import DEFAULT_SPLIT, evaluate

    rows = []
    for proto in protocols(Path(args.data), Path(args.room)):
        teacher_eer, teacher_scores, teacher_pairs = None, None, None
        for model in args.models:
            timed = proto["probe_s"] is not None and model != "teacher" and "speechocean" in proto["name"]
            r = evaluate("voice", model, proto["data"], split=proto["split"], split_cfg=DEFAULT_SPLIT,
                         max_impostor_per_identity=IMPOSTORS_PER_SPEAKER, seed=0, cache_dir=args.cache,
                         threads=args.threads, probe_s=proto["probe_s"],
                         timing_samples=args.probe_timing_samples if timed else 3, keep_scores=True)
            row = {"protocol": proto["name"], "model": model, "identities": r["split"]["n_identities"],
                   "genuine": r["n_genuine"], "impostor": r["n_impostor"], "eer": r["eer"],
                   "auc": r["auc"], "probe_timing": r.get("probe_timing")}
            if model == "teacher":
                teacher_eer, teacher_scores, teacher_pairs = r["eer"], r["scores"], r["pair_identities"]
            row["gap_pt"] = None if teacher_eer is None else 100 * (r["eer"] - teacher_eer)
            if teacher_scores is not None and model != "teacher":
                same = all(np.array_equal(a, b) for a, b in zip(r["pair_identities"], teacher_pairs, strict=True))
                # the same trials for both (no file skipped by one of them): else no paired interval
                row["gap_ci_pt"] = list(gap_interval(teacher_scores, r["scores"], teacher_pairs)) if same else None
            rows.append(row)
            print(json.dumps(row))
    Path(args.out).write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
