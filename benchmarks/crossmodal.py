"""Cosine-in-PIN-space vs FAA scoring, seen vs unseen people, real vs artificial pairs
-> benchmarks/crossmodal.md (+ crossmodal.png).

Trains the edge-mode PIN heads and the FAA head once per GRID fold (fold 0 and fold 1 of 2,
so each of the 7 GRID people is unseen-unheard in exactly one run), evaluates each run with
what `edgepin eval crossmodal` runs, and writes one table. Fold 0 is the shipped model: with
--export it is written to that models folder (ONNX + manifest), the other fold to --runs only.

    python -m benchmarks.crossmodal --data ../shared/data --students models --export models \
        --cache ~/.cache/edgepin --runs runs/pins_bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.machine import markdown_header
from edge_runtime.plots import plot_roc_det
from train.config import load_config
from train.pins.evaluate import SCORERS, evaluate_crossmodal
from train.pins.train import train_fuse, train_pins

CONCLUSIONS = """\
## What these numbers can and cannot say

- **Real pairs are 7 GRID people, one 3 s clip each.** A real row holds 3 or 4 people, so
  1:N is at most 1:4 and every number moves by a large step when one person changes side;
  the two folds together still cover only 7 people, all from one studio recording set-up.
  Nothing here estimates how the heads do on the population at large: it checks that the
  pipeline runs on real face-voice pairs and gives the order of magnitude, no more.
- **Seen-heard (real)** reuses the same clip, later in time (disjoint frames and audio):
  it measures recognising a known pairing in the same session, the easiest possible case.
- **Artificial rows pair different people** (an LFW face with a speechocean762 voice of the
  same labelled gender). Their "identity" is the pairing itself: seen-heard numbers there
  show memorisation of arbitrary pairings, unseen-unheard numbers show how well gender (and
  any other attribute the two corpora happen to share) is read from face and voice. With
  gender matching alone, an ideal scorer reaches AUC ~0.75 on them (half the impostor pairs
  have the same gender) and LFW's gender labels are guessed from first names (noisy).
- The published Learnable PINs / FAA figures (VoxCeleb, 250 unseen people) are not
  comparable with anything on this page; docs/voxceleb_recipe.md reproduces that setting.
"""


def _fmt(x: float, pct: bool = False) -> str:
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def table(results: list[tuple[int, dict]]) -> str:
    head = ("| fold | data | split | people | faces / voices | scorer | AUC | EER | 1:2 V→F | "
            "1:2 F→V | 1:N V→F | 1:N F→V | mAP V→F | mAP F→V | pairs gen / imp |")
    lines = [head, "|" + "---|" * 15]
    for fold, rep in results:
        for r in rep["rows"]:
            n = r["n_way"]
            for s in SCORERS:
                m = r[s]
                data = "REAL" if r["data"] == "real" else "ARTIFICIAL"
                lines.append(
                    f"| {fold} | {data} | {r['split']} | {r['n_identities']} | "
                    f"{r['n_faces']} / {r['n_voices']} | {s} | {_fmt(m['auc'])} | "
                    f"{_fmt(m['eer'], True)} | {_fmt(m['match_1_2_v2f'])} | "
                    f"{_fmt(m['match_1_2_f2v'])} | {_fmt(m[f'match_1_{n}_v2f'])} (N={n}) | "
                    f"{_fmt(m[f'match_1_{n}_f2v'])} | {_fmt(m['map_v2f'])} | "
                    f"{_fmt(m['map_f2v'])} | {m['n_genuine']} / {m['n_impostor']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--students", type=Path, default=Path("models"))
    ap.add_argument("--export", type=Path, help="models folder for the fold-0 (shipped) heads")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgepin")
    ap.add_argument("--runs", type=Path, default=Path("runs/pins_bench"))
    ap.add_argument("--folds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--n-way", type=int, default=10)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--md", type=Path, default=Path("benchmarks/crossmodal.md"))
    ap.add_argument("--png", type=Path, default=Path("benchmarks/crossmodal.png"))
    args = ap.parse_args()

    results, curves, splits, fold_meta = [], {}, {}, {}
    for fold in args.folds:
        run = args.runs / f"fold{fold}"
        export = args.export if (fold == 0 and args.export) else run
        pcfg = load_config(None, "pins_edge.yaml", [f"split.grid.fold={fold}"])
        fcfg = load_config(None, "fuse_edge.yaml")
        ps = train_pins(args.data, pcfg, run, students_dir=args.students, cache_dir=args.cache,
                        export_dir=export)
        fs = train_fuse(args.data, fcfg, run, pins=run, students_dir=args.students,
                        cache_dir=args.cache, export_dir=export)
        rep = evaluate_crossmodal(export, args.data, students_dir=args.students,
                                  cache_dir=args.cache, n_way=args.n_way, trials=args.trials,
                                  max_genuine_per_identity=200, max_impostor_per_identity=200,
                                  keep_scores=True)
        for r in rep["rows"]:
            sc = r.pop("scores")
            if r["data"] == "real":
                for s in SCORERS:
                    curves[f"fold {fold} {r['split']} {s}"] = sc[s]
        results.append((fold, rep))
        splits[fold] = rep["splits"]
        fold_meta[fold] = {"pins_best_epoch": ps["best"]["epoch"],
                           "faa_best_epoch": fs["best"]["epoch"],
                           "faa_params": fs["params_encoder"], "models": str(export)}
        (run / "crossmodal_report.json").write_text(json.dumps(rep, indent=2))
    plot_roc_det(curves, args.png, title="cross-modal verification on REAL GRID pairs "
                                         "(cosine in PIN space vs FAA)")
    students = results[0][1]["students"]
    md = [markdown_header("Cross-modal face-voice matching: cosine in PIN space vs FAA",
                          f"{args.data}: GRID (real pairs, 7 people) and LFW x speechocean762 "
                          "(ARTIFICIAL gender-matched pairing)"),
          f"- students: face {students['face_sha256'][:12]}…, voice "
          f"{students['voice_sha256'][:12]}… (frozen; heads trained on their embeddings)",
          f"- command: `python -m benchmarks.crossmodal --data {args.data} --students "
          f"{args.students}" + (f" --export {args.export}" if args.export else "") + "`",
          f"- per fold: {json.dumps(fold_meta)}",
          f"- 1:N uses N = min({args.n_way}, people in the split); chance is 1/N (1:2: 0.5); "
          f"{args.trials} trials each. Verification pairs: all genuine (voice, face) pairs "
          "(<= 200 per person) and <= 200 sampled impostor pairs per person; one fold's rows "
          f"are reproduced by `edgepin eval crossmodal --model <fold dir> --data {args.data} "
          f"--students {args.students} --n-way {args.n_way} --trials {args.trials} "
          "--max-impostor-per-identity 200 --max-genuine-per-identity 200`.",
          "", "![ROC/DET of the real splits](crossmodal.png)", "", table(results), "",
          "## Split definitions", ""]
    for fold, sp in splits.items():
        md.append(f"### fold {fold}")
        for data, parts in sp.items():
            for name, text in parts.items():
                md.append(f"- **{data}, {name}**: {text}")
        md.append("")
    md.append(CONCLUSIONS)
    args.md.write_text("\n".join(md) + "\n")
    print(args.md.read_text())
    print("mean real AUC cosine/faa:", *[
        np.mean([r[s]["auc"] for _, rep in results for r in rep["rows"] if r["data"] == "real"])
        for s in SCORERS])


if __name__ == "__main__":
    main()
