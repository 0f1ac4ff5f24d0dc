"""PINs curriculum and FAA variants, side by side -> benchmarks/pins_variants.md.

Edge mode (frozen shipped students, heads only) on the data this machine has: GRID (real
pairs, 7 people, both folds) and the ARTIFICIAL LFW x speechocean762 pairing. Variants:
- stage 1 negatives: `mix` (edgepin's hardest-share rule, the shipped heads) vs `percentile`
  (PINs as published: one negative at hardness percentile tau, random first epoch);
- stage 2 classifier: `cosine_input` true (shipped) vs false (FAA as published, CLS only);
- stage 2 pair selection: on (clean positives, half hard negatives) vs off (all positives,
  random negatives).
The shipped models are not touched (runs go to --runs). No VoxCeleb here: these are the
variants' behaviour on 7 real people and on attribute matching, not the papers' setting.

    python -m benchmarks.pins_variants --data ../shared/data --students models \
        --cache /work/cache --runs runs/pins_variants
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.machine import markdown_header
from train.config import load_config
from train.pins.evaluate import SCORERS, evaluate_crossmodal
from train.pins.train import train_fuse, train_pins

STAGE1 = {"mix": ["curriculum.mining=mix"],
          "percentile": ["curriculum.mining=percentile", "curriculum.random_epochs=1"]}
STAGE2 = {"cos-in, selection": ["model.cosine_input=true"],
          "CLS only, selection": ["model.cosine_input=false"],
          "CLS only, no selection": ["model.cosine_input=false", "pairs.clean_drop=0.0",
                                     "pairs.hard_share=0.0"]}
PLAN = [("mix", "cos-in, selection"), ("mix", "CLS only, selection"),
        ("percentile", "cos-in, selection"), ("percentile", "CLS only, selection"),
        ("percentile", "CLS only, no selection")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--students", type=Path, default=Path("models"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgepin")
    ap.add_argument("--runs", type=Path, default=Path("runs/pins_variants"))
    ap.add_argument("--folds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--md", type=Path, default=Path("benchmarks/pins_variants.md"))
    args = ap.parse_args()
    lines = ["| fold | stage 1 | stage 2 | val EER (cos / faa) | data | split | people | "
             "scorer | AUC | EER | 1:2 V→F | mAP V→F |", "|" + "---|" * 12]
    record = []
    for fold in args.folds:
        for s1 in STAGE1:
            run1 = args.runs / f"fold{fold}" / s1
            pcfg = load_config(None, "pins_edge.yaml", [f"split.grid.fold={fold}", *STAGE1[s1]])
            ps = train_pins(args.data, pcfg, run1, students_dir=args.students,
                            cache_dir=args.cache)
            for a, s2 in PLAN:
                if a != s1:
                    continue
                run2 = run1 / s2.replace(", ", "_").replace(" ", "-")
                run2.mkdir(parents=True, exist_ok=True)
                for f in ("pin_face.onnx", "pin_voice.onnx", "manifest.json"):
                    (run2 / f).write_bytes((run1 / f).read_bytes())
                fcfg = load_config(None, "fuse_edge.yaml", STAGE2[s2])
                fs = train_fuse(args.data, fcfg, run2, pins=run1, students_dir=args.students,
                                cache_dir=args.cache)
                rep = evaluate_crossmodal(run2, args.data, students_dir=args.students,
                                          cache_dir=args.cache, n_way=10, trials=2000)
                val = (f"{100 * ps['best']['val_eer']:.1f} / "
                       f"{100 * fs['best']['val_eer']:.1f} %")
                for r in rep["rows"]:
                    if r["split"] != "unseen-unheard":
                        continue
                    for s in SCORERS:
                        m = r[s]
                        lines.append(f"| {fold} | {s1} | {s2} | {val} | {r['data']} | "
                                     f"{r['split']} | {r['n_identities']} | {s} | "
                                     f"{m['auc']:.3f} | {100 * m['eer']:.1f} % | "
                                     f"{m['match_1_2_v2f']:.3f} | {m['map_v2f']:.3f} |")
                        record.append({"fold": fold, "stage1": s1, "stage2": s2,
                                       "data": r["data"], "scorer": s, "auc": m["auc"],
                                       "eer": m["eer"]})
    summary = ["| stage 1 | stage 2 | data | scorer | mean AUC over folds |", "|---|---|---|---|---|"]
    for s1, s2 in PLAN:
        for data in ("real", "artificial"):
            for s in SCORERS:
                v = [x["auc"] for x in record if (x["stage1"], x["stage2"], x["data"],
                                                    x["scorer"]) == (s1, s2, data, s)]
                if v:
                    summary.append(f"| {s1} | {s2} | {data} | {s} | {sum(v) / len(v):.3f} |")
    md = [markdown_header("PINs curriculum and FAA variants (edge mode, unseen-unheard rows)",
                          f"{args.data}: GRID (real pairs, 7 people, folds {args.folds}) and "
                          "LFW x speechocean762 (ARTIFICIAL gender-matched pairing)"),
          f"- command: `python -m benchmarks.pins_variants --data {args.data} --students "
          f"{args.students}`", "- stage 1 = PIN heads (`pins_edge.yaml` + the variant), stage 2 "
          "= FAA head (`fuse_edge.yaml` + the variant); same students, same seeds, same splits",
          "", "## Mean over folds", "", *summary, "", "## Per fold", "", *lines, "",
          "Real rows hold 3 or 4 people per fold: a difference of a few AUC points between "
          "variants is within what one person changing side moves; artificial rows measure "
          "attribute (mostly gender) matching. These runs check the variants work and give "
          "their direction on this data; they do not replace the VoxCeleb comparison "
          "(docs/voxceleb_recipe.md)."]
    args.md.write_text("\n".join(md) + "\n")
    (args.runs / "pins_variants.json").write_text(json.dumps(record, indent=2))
    print(args.md.read_text())


if __name__ == "__main__":
    main()
