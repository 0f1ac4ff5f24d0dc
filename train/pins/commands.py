"""`edgepin train pins|fuse` and `edgepin eval crossmodal` (hooked into train/commands.py).

No torch at import time: the handlers import the trainers.
"""

from __future__ import annotations

import argparse
import json

DEFAULT_CONFIGS = {"pins": "pins_edge.yaml", "fuse": "fuse_edge.yaml"}


def _train(args: argparse.Namespace) -> int:
    from train.environment import default_cache_dir, need_torch

    need_torch("train")
    from train.config import load_config

    cache = args.cache or default_cache_dir()
    from train.pins.full import is_full_checkpoint

    if args.stage == "fuse" and args.pins and is_full_checkpoint(args.pins) and not args.config:
        from train.pins.full import export_checkpoint

        summary = export_checkpoint(args.pins, args.data, args.out, cache_dir=cache,
                                    export_dir=args.export, fuse_overrides=args.set)
        print(json.dumps({"out": summary["out"], "exported": summary["exported"]}, indent=2))
        return 0
    cfg = load_config(args.config, DEFAULT_CONFIGS[args.stage], args.set)
    if args.stage == "pins" and args.face_tier != "student":  # recorded in the checkpoint
        cfg["data"]["face_tier"] = args.face_tier
    if args.stage == "pins" and cfg.get("mode", "edge") == "full":
        from train.pins.full import train_full

        summary = train_full(args.data, cfg, args.out, cache_dir=cache, export_dir=args.export)
    elif args.stage == "pins":
        from train.pins.train import train_pins

        summary = train_pins(args.data, cfg, args.out, students_dir=args.students,
                             cache_dir=cache, export_dir=args.export)
    else:
        from train.pins.train import train_fuse

        summary = train_fuse(args.data, cfg, args.out, pins=args.pins or args.out,
                             students_dir=args.students, cache_dir=cache,
                             export_dir=args.export)
    if summary.get("rank", 0) != 0:  # torchrun: rank 0 reports
        return 0
    best = summary.get("best") or {}
    print(json.dumps({"out": summary["out"], "best_epoch": best.get("epoch"),
                      "val_eer": best.get("val_eer"), "val_auc": best.get("val_auc"),
                      "exported": summary.get("exported")}, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train pins|fuse`."""
    p = subparsers.add_parser("train", help="cross-modal training: PIN heads, then the FAA head")
    p.add_argument("stage", choices=["pins", "fuse"])
    p.add_argument("--data", required=True,
                   help="data root; the config's data paths are relative to it")
    p.add_argument("--config", help="YAML (default train/configs/pins_edge.yaml / fuse_edge.yaml;"
                                    " a config with mode: full trains end to end)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, history, summary")
    p.add_argument("--face-tier", choices=("student", "large"), default="student",
                   help="pins: the face model whose embeddings the heads read (large: "
                        "face_large, exported as pin_face_large/pin_voice_large; fuse takes "
                        "the tier of its PIN checkpoint and writes faa_large)")
    p.add_argument("--students", default="models",
                   help="folder with the frozen face/voice students (edge mode; default models)")
    p.add_argument("--export", help="models folder for the ONNX files and manifest "
                                    "(default: --out)")
    p.add_argument("--pins", help="fuse: run folder (or pins.pt) of the PIN heads "
                                  "(default: --out); a full-mode full.pt is exported again "
                                  "and its FAA refitted (--set applies to its fuse section)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. train.epochs=5 split.grid.fold=1")
    p.add_argument("--cache", help="embedding/crop cache folder (default ~/.cache/edgepin)")
    p.set_defaults(handler=_train)


def add_crossmodal_eval_args(p: argparse.ArgumentParser) -> None:
    """Options of `edgepin eval crossmodal` (ignored by face/voice)."""
    g = p.add_argument_group("crossmodal")
    g.add_argument("--students", help="crossmodal: folder of the face/voice students "
                                      "(default: --model)")
    g.add_argument("--n-way", type=int, default=10,
                   help="crossmodal: N of 1:N matching (capped at the identities of a split)")
    g.add_argument("--trials", type=int, default=2000, help="crossmodal: matching trials")
    g.add_argument("--max-genuine-per-identity", type=int, default=200)
    g.add_argument("--source", default="clips",
                   choices=["clips", "pairing", "voxceleb1", "voxceleb2"],
                   help="crossmodal --split all: layout of --data (clips: talking-face clips, "
                        "<id>/<clip> or flat; pairing: faces/ + voices/ + pairs.tsv)")
    g.add_argument("--pairing", help="crossmodal, source pairing: TSV with columns face, voice "
                                     "(default DATA/pairs.tsv)")
    g.add_argument("--genders", help="crossmodal --split all: TSV with columns identity, "
                                     "gender (M/F): adds gender-matched AUC")
    g.add_argument("--trials-in", help="crossmodal: score exactly this trial list (text)")
    g.add_argument("--trials-out", help="crossmodal: write the trials used (text, with their "
                                        "definition), to fix them for later runs")


def eval_crossmodal(args: argparse.Namespace) -> int:
    """Handler of `edgepin eval crossmodal --model DIR --data ROOT [--split all]`."""
    from train.environment import default_cache_dir
    from train.pins.evaluate import evaluate_crossmodal

    report = evaluate_crossmodal(
        args.model, args.data, students_dir=args.students, cache_dir=args.cache or
        default_cache_dir(), n_way=args.n_way, trials=args.trials, seed=args.seed,
        max_genuine_per_identity=args.max_genuine_per_identity,
        max_impostor_per_identity=args.max_impostor_per_identity, plot=args.plot,
        threads=args.threads, split=args.split, source=args.source, pairing=args.pairing,
        trials_in=args.trials_in, trials_out=args.trials_out, genders_file=args.genders)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cross-modal: {report['model']}", caption=report["note"])
    for col in ("data", "split", "ids", "scorer", "AUC", "EER", "AUC g-m", "1:2 V→F", "1:2 F→V",
                "1:N V→F", "1:N F→V", "mAP V→F", "mAP F→V", "face EER", "voice EER"):
        table.add_column(col)

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    for r in report["rows"]:
        n = r["n_way"]
        uni = r["unimodal"]
        for s in ("cosine", "faa"):
            m = r[s]
            gm = m.get("gender_matched")
            table.add_row(r["data"], r["split"], str(r["n_identities"]), s, f"{m['auc']:.3f}",
                          pct(m["eer"]), f"{gm['auc']:.3f}" if gm else "n/a",
                          f"{m['match_1_2_v2f']:.3f}", f"{m['match_1_2_f2v']:.3f}",
                          f"{m[f'match_1_{n}_v2f']:.3f} (N={n})",
                          f"{m[f'match_1_{n}_f2v']:.3f}", f"{m['map_v2f']:.3f}",
                          f"{m['map_f2v']:.3f}", pct(uni["face"]["eer"]),
                          pct(uni["voice"]["eer"]))
    console = Console()
    Console(width=max(console.width, 170)).print(table)  # 15 columns: do not squeeze to 80
    return 0
