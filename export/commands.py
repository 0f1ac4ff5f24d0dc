"""`edgepin export`: INT8 QDQ students, lint and accuracy-gate reports, TensorRT engines/scripts.

Cheap to import (no torch, onnx or onnxruntime here): the pipeline loads inside the handler.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TARGET_CHOICES = ("cpu", "orin", "xavier", "nano", "gpu")


def _data_root() -> Path:
    """Where the real datasets live (EDGEPIN_DATA overrides; /work/shared/data layout)."""
    return Path(os.environ.get("EDGEPIN_DATA", "/work/shared/data"))


def _existing(path: Path | None) -> Path | None:
    """A default data folder counts only if it exists; an explicit one is checked later."""
    return path if path is not None and path.is_dir() else None


def _export(args: argparse.Namespace) -> int:
    from export.pipeline import run_export
    from export.recipes import RECIPES_FILE
    from export.stages import ExportOptions
    from train.environment import default_cache_dir

    data_faces = Path(args.data_faces) if args.data_faces else _existing(_data_root() / "lfw")
    data_detector = Path(args.data_detector) if args.data_detector else _existing(_data_root())
    # by default the detector comes along where its images are; asked for, it needs them
    default = ("face", "voice") + (("face_detector",) if data_detector is not None else ())
    data_voices = (Path(args.data_voices) if args.data_voices
                   else _existing(_data_root() / "speechocean762"))
    opts = ExportOptions(
        target=args.target, models=Path(args.models), out=Path(args.out),
        cache_dir=Path(args.cache) if args.cache else default_cache_dir(),
        data_faces=data_faces, data_voices=data_voices,
        data_detector=data_detector,
        calib=Path(args.calib) if args.calib else None,
        modalities=tuple(args.only) if args.only else default,
        n_calib=args.n_calib, min_calib=args.min_calib,
        exclude=tuple(args.exclude or ()), calibrate_method=tuple(args.calibrate_method),
        keep_float=tuple(args.keep_float or ()),
        recipes_file=None if args.no_recipe else Path(args.recipes or RECIPES_FILE),
        search=args.search,
        min_p1=args.min_cos_p1,
        max_eer_delta_pt=args.max_eer_rise_pt, dla=not args.no_dla, threads=args.threads,
        quiet=args.json,
    )
    report = run_export(opts)
    if "face_detector" not in opts.modalities:
        report["detector"] = {"skipped": "no --data-detector (lfw/, att_faces/, grid/) given "
                                         "or found under $EDGEPIN_DATA"}
    trt_note = report["tensorrt"].get("note")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_summary(report)
    if trt_note:  # the one line saying whether engines were built (stderr under --json)
        print(trt_note, file=sys.stderr if args.json else sys.stdout)
    return 0 if report["ok"] else 1


def _print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table


    table = Table(title=f"edgepin export --target {report['target']['name']}")
    for col in ("model", "recipe", "calib", "lint", "cos min / p1 / median", "EER fp32 -> int8",
                "gate", "int8 file"):
        table.add_column(col)
    for m, r in report["models"].items():
        a, g = r["agreement"], r["gate"]
        lint = "n/a" if r["lint"].get("skipped") else "ok" if r["lint"]["ok"] else "FAIL"
        table.add_row(
            m, r["recipe"]["source"], str(r["calibration"]["n"]), lint,
            f"{a['cos_min']:.4f} / {a['cos_p1']:.4f} / {a['cos_median']:.4f}",
            f"{g['eer_fp32']:.2%} -> {g['eer_int8']:.2%} ({g['eer_delta_pt']:+.2f} pt)",
            "[green]pass[/]" if g["ok"] else "[red]FAIL[/]: " + "; ".join(g["failures"]),
            r["int8"]["path"])
    console = Console()
    if report["models"]:  # `--only face_detector` has no student rows
        console.print(table)
    for m, r in report["models"].items():
        if r.get("search_wrote"):
            console.print(f"  {m}: --search found a passing recipe, written to {r['search_wrote']}")
        elif "search" in r:
            console.print(f"  {m}: --search tried {len(r['search'])} recipes, none passed")
    for m, r in report["models"].items():
        for row in (r.get("sensitivity") or [])[:5]:
            console.print(f"  {m} sensitivity: quantizing only {row['op_type']} "
                          f"({row['n_quantized']} nodes) gives cos p1 {row['cos_p1']:.4f}")
        for row in (r.get("layer_errors") or [])[:3]:
            console.print(f"  {m} layer error jumps by {row['jump']:+.3f} at {row['node']} "
                          f"(relative error {row['rel_error']:.3f}; --keep-float candidate)")
    det = report.get("detector", {})
    if "gate" in det:
        for v in ("int8", "fp16"):
            g = det["gate"][v]
            console.print(f"face_detector {v}: recall {g['recall']:.1%} (FP32 {g['recall_fp32']:.1%}"
                          f"), FP32 boxes found again {g['box_recall']:.1%}, mean IoU "
                          f"{g['mean_iou']:.3f} on {g['images']} held-out images: "
                          + ("[green]pass[/]" if g["ok"] else "[red]FAIL[/]: "
                             + "; ".join(g["failures"])))
    elif det.get("skipped"):
        console.print(f"face_detector: skipped ({det['skipped']})")
    sz = report["sizes"]
    limit = (f"limit {sz['limit_bytes'] / 2**20:.0f} MiB: "
             f"{'ok' if sz['within_limit'] else 'OVER'}" if sz["limit_bytes"] else sz["note"])
    console.print(f"deployable models {', '.join(sz['deployable'])}: "
                  f"{sz['deployable_bytes'] / 2**20:.2f} MiB ({limit}); report: "
                  f"{report['report_file']}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` to the `edgepin` parser."""
    p = subparsers.add_parser(
        "export", help="INT8 QDQ students + accuracy gate + TensorRT engines or build scripts")
    p.add_argument("--target", required=True, choices=TARGET_CHOICES)
    p.add_argument("--models", default="models",
                   help="folder with face/voice .onnx (+ manifest.json) or .pt checkpoints")
    p.add_argument("--out", required=True, help="output folder (may be the models folder)")
    p.add_argument("--data-faces", help="face dataset <identity>/<image> for calibration and "
                   "the held-out gate (default $EDGEPIN_DATA/lfw, EDGEPIN_DATA=/work/shared/data)")
    p.add_argument("--data-voices", help="speech dataset <speaker>/<utt> (default "
                   "$EDGEPIN_DATA/speechocean762)")
    p.add_argument("--data-detector", help="folder with lfw/, att_faces/ and grid/: real images "
                   "for the face detector's calibration and recall gate (default $EDGEPIN_DATA)")
    p.add_argument("--calib", help="calibration-set folder: reused when they match, built "
                   "there otherwise (default <cache>/calibration)")
    p.add_argument("--cache", help="crop/audio cache folder (default ~/.cache/edgepin)")
    p.add_argument("--only", nargs="+", choices=["face", "voice", "face_detector", "face_large"],
                   help="export only these (default: face, voice and the face detector, the "
                   "detector only where its images are, see --data-detector; face_large: the "
                   "large face tier, dlib's face ResNet made by `edgepin port-dlib --face-large`; "
                   "never exported unless named)")
    p.add_argument("--n-calib", type=int, default=640, help="calibration samples per model")
    p.add_argument("--min-calib", type=int, default=500,
                   help="refuse calibration sets smaller than this")
    p.add_argument("--recipes", help="recipe file: per model and target, how it is quantized "
                   "(default export/recipes.yaml; the shipped models' recipes)")
    p.add_argument("--no-recipe", action="store_true",
                   help="ignore the recipe file: built-in defaults plus the flags below")
    p.add_argument("--search", action="store_true",
                   help="if a model fails the gate, search a recipe (sensitivity -> op types "
                   "kept float, then other calibration methods) and write it to the recipe file")
    p.add_argument("--exclude", nargs="+", metavar="OP",
                   help="op types kept in float IN ADDITION to the recipe's and "
                   "export.quantize.DEFAULT_EXCLUDED (prefix face: or voice: for one model); "
                   "the report records them as command-line additions")
    p.add_argument("--keep-float", nargs="+", metavar="NODE",
                   help="nodes left in float: 'first' (first quantized Conv/Gemm), 'last:N' "
                   "(the last N, e.g. the embedding head), 'depthwise' or node names; prefix "
                   "face: or voice: for one model (e.g. voice:first)")
    p.add_argument("--calibrate-method", nargs="+", default=[], metavar="METHOD",
                   help="minmax, percentile or entropy, instead of the recipe's; prefix face: or "
                   "voice: for one model (e.g. face:percentile)")
    p.add_argument("--min-cos-p1", type=float, default=0.99,
                   help="gate: 1st percentile of FP32-vs-INT8 cosine must reach this")
    p.add_argument("--max-eer-rise-pt", type=float, default=0.3,
                   help="gate: largest allowed EER increase, in percentage points")
    p.add_argument("--no-dla", action="store_true", help="no DLA engine variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the JSON report only")
    p.set_defaults(handler=_export)
