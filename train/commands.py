"""Training-side subcommands: `edgepin distill` and `edgepin eval`.

Nothing heavy is imported here; torch loads inside the handlers, so the device (which has no
torch) can still build the parser and print a clear message if someone runs these there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from edge_runtime.frontend.features import FACE_TTA
from train.environment import default_cache_dir, need_torch
from train.pins.commands import add_crossmodal_eval_args
from train.pins.commands import register as register_pins


def _distill(args: argparse.Namespace) -> int:
    need_torch("distill")
    from train.config import load_config
    from train.distill import distill

    cfg = load_config(args.config, f"{args.modality}_distill.yaml", args.set)
    summary = distill(args.modality, args.data, cfg, args.out, args.cache or default_cache_dir(),
                      resume=args.resume)
    best = summary["best"] or {}
    result = {"out": summary["out"], "best_epoch": best.get("epoch"), "best": best.get("metrics")}
    if best and importlib.util.find_spec("onnx") is not None:
        from export.students import export_student

        result["onnx"] = export_student(Path(args.out) / "student.pt",
                                        Path(args.out) / f"{args.modality}.onnx")
    print(json.dumps(result, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.modality == "crossmodal":
        from train.pins.commands import eval_crossmodal

        return eval_crossmodal(args)
    if args.model not in ("teacher", "teacher-dlib") and not args.model.endswith(".onnx"):
        need_torch("eval")
    from train.evaluate import evaluate

    split_cfg = None
    if args.test_fraction is not None:
        split_cfg = {"test_fraction": args.test_fraction, "val_fraction": args.val_fraction,
                     "seed": args.split_seed}
    report = evaluate(args.modality, args.model, args.data, split=args.split, split_cfg=split_cfg,
                      max_impostor_per_identity=args.max_impostor_per_identity, seed=args.seed,
                      cache_dir=args.cache or default_cache_dir(), plot=args.plot,
                      threads=args.threads, timing_samples=args.timing_samples,
                      probe_s=args.probe_s, face_tta=args.face_tta)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.modality} verification: {report['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("split", f"{report['split']['name']} ({report['split']['n_identities']} identities, "
                      f"{report['split']['n_samples']} samples)"),
            ("pairs", f"{report['n_genuine']} genuine / {report['n_impostor']} impostor"),
            ("EER", f"{100 * report['eer']:.2f} %"), ("AUC", f"{report['auc']:.4f}")]
    for key in ("tar@far=0.01", "tar@far=0.001"):
        entry = report[key]
        rows.append((key.upper(), f"{100 * entry['tar']:.2f} %" if entry["tar"] is not None
                     else entry["reason"]))
    rows.append(("ms / sample", f"{report['ms_per_sample']:.2f}"))
    if "probe_timing" in report:
        pt = report["probe_timing"]
        rows.append(("probe ms: teacher / student (paired)",
                     f"{pt['teacher_ms']:.2f} / {pt['student_ms']:.2f} "
                     f"({pt['speedup_median_of_ratios']:.1f}x)"))
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
    return 0


def _room_set(args: argparse.Namespace) -> int:
    from train.room_eval_set import make_room_copy

    split = {"test_fraction": args.test_fraction, "val_fraction": args.val_fraction,
             "seed": args.split_seed}
    desc = make_room_copy(args.data, args.out, split, seed=args.seed)
    print(json.dumps({k: v for k, v in desc.items() if k != "items"}, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `distill` and `eval` to the `edgepin` parser."""
    p = subparsers.add_parser("distill", help="distil a face or voice student from its teacher")
    p.add_argument("modality", choices=["face", "voice"])
    p.add_argument("--data", required=True, help="dataset folder <identity>/<files>")
    p.add_argument("--config", help="experiment YAML (default: train/configs/<modality>_distill.yaml)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and history")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. train.epochs=2 model.width=1.0")
    p.add_argument("--cache", help="teacher-target cache folder (default ~/.cache/edgepin)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last epoch (same config and --set)")
    p.set_defaults(handler=_distill)

    p = subparsers.add_parser("eval", help="verification metrics (EER, AUC, TAR@FAR, speed)")
    p.add_argument("modality", choices=["face", "voice", "crossmodal"])
    p.add_argument("--model", required=True, help="'teacher' (face: dlib's ResNet as ONNX), 'teacher-dlib' (dlib's own "
                   "code, the reference), a student .pt checkpoint or an .onnx")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["test", "all"],
                   help="test: held-out identities of the model's split; all: every identity")
    p.add_argument("--test-fraction", type=float, help="override the split (default: the model's)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-impostor-per-identity", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="impostor-pair sampling seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timing-samples", type=int, default=50,
                   help="samples timed one by one at batch 1 for ms/sample (median)")
    p.add_argument("--cache", help="cache folder (default ~/.cache/edgepin)")
    p.add_argument("--plot", help="write ROC/DET curves to this PNG")
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe-s", type=float, metavar="SECONDS",
                   help="voice: probes are the first SECONDS of voiced speech, scored against "
                        "whole-utterance templates (the live condition), timed per probe")
    p.add_argument("--face-tta", choices=FACE_TTA, default="none",
                   help="face: flip averages each embedding with its mirror image's (what "
                        "`edgepin calibrate --face-tta flip` makes the device do)")
    add_crossmodal_eval_args(p)
    p.set_defaults(handler=_eval)

    p = subparsers.add_parser("voice-room-set", help="make the noisy/reverberant copy of a voice "
                              "set's held-out speakers (once, fixed seed)")
    p.add_argument("--data", required=True, help="voice folder <speaker>/<utt>, e.g. speechocean762")
    p.add_argument("--out", required=True, help="new folder for the copy (outside the project)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.set_defaults(handler=_room_set)
    register_pins(subparsers)
