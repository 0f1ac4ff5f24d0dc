"""`edgepin port-dlib`: write dlib's networks as ONNX into a models folder (and its manifest).

Cheap to import: the reader and onnx load inside the handler.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_runtime.errors import ConfigError

# What the face_large file says about itself (ONNX metadata, as a student's export writes):
# the export reads the split and the front-end from it, the runtime the front-end.
FACE_LARGE_SPLIT = {"test_fraction": 0.2, "val_fraction": 0.1, "seed": 0}


def _port(args: argparse.Namespace) -> int:
    from edge_runtime.bundle import register_model, set_default_face_tier
    from edge_runtime.frontend.features import DLIB_CHIP_INPUT
    from export.dlib.models import FACE_LARGE_SPEC, MMOD_SPEC, export_port, port_version

    models = Path(args.models)
    jobs = [("face_detector", MMOD_SPEC, "face_detector.onnx", {
        "modality": "face_detector",
        "input": "(1,3,H,W) float32 RGB pixels 0..255: dlib's tiled image pyramid",
        "output": "score (1,1,H/8,W/8); pyramid, window mapping and NMS: "
                  "edge_runtime/frontend/face_cnn.py"}, {})]
    if args.face_large:
        front_end = DLIB_CHIP_INPUT.to_dict()
        # the teacher is its own model: its "split" is the students' held-out protocol, so
        # the export gates it on the same held-out people (it never trained on LFW here)
        jobs.append(("face_large", FACE_LARGE_SPEC, "face_large.onnx", {
            "modality": "face", "dim": 128, "precision": "fp32", "tier": "large",
            "input": "face (N,3,150,150) float32 RGB pixels 0..255: dlib's get_face_chip "
                     "(padding 0.25)",
            "output": "embedding (N,128), not unit norm (dlib's descriptor)",
            "front_end": front_end, "split": FACE_LARGE_SPLIT},
            {"modality": "face", "precision": "fp32", "front_end": json.dumps(front_end),
             "split": json.dumps(FACE_LARGE_SPLIT)}))
    done = {}
    for name, spec, file, meta, onnx_meta in jobs:
        out = export_port(spec, models / file, metadata=onnx_meta)
        entry = register_model(models, name, file, dlib_port=port_version(spec),
                               source=f"{spec.dat_name} (dlib, CC0)", **meta)
        done[name] = {"file": str(out), "sha256": entry.sha256, "bytes": out.stat().st_size}
    if args.default_tier:
        bad = [i for i in args.default_tier
               if i.partition("=")[0] not in ("tensorrt", "onnxruntime") or "=" not in i]
        if bad:
            raise ConfigError(f"--default-tier {bad}: expected BACKEND=TIER with BACKEND "
                              "tensorrt or onnxruntime")
        defaults = dict(item.split("=", 1) for item in args.default_tier)
        set_default_face_tier(models, defaults)
        done["default_face_tier"] = defaults
    print(json.dumps(done, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "port-dlib", help="write dlib's MMOD face detector (and, with --face-large, its face "
                          "ResNet) as ONNX into a models folder")
    p.add_argument("--models", default="models", help="models folder (its manifest is updated)")
    p.add_argument("--face-large", action="store_true",
                   help="also write the 22 MB face ResNet as face_large.onnx (device tier)")
    p.add_argument("--default-tier", nargs="+", metavar="BACKEND=TIER",
                   help="record in the manifest which face tier each backend runs by default "
                        "(`--face-tier auto`), e.g. tensorrt=large onnxruntime=student")
    p.set_defaults(handler=_port)
