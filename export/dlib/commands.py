"""`edgepin port-dlib`: write dlib's networks as ONNX into a models folder (and its manifest).

Cheap to import: the reader and onnx load inside the handler.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _port(args: argparse.Namespace) -> int:
    from edge_runtime.bundle import register_model
    from export.dlib.models import FACE_RESNET_SPEC, MMOD_SPEC, export_port, port_version

    models = Path(args.models)
    jobs = [("face_detector", MMOD_SPEC, "face_detector.onnx", {
        "modality": "face_detector",
        "input": "(1,3,H,W) float32 RGB pixels 0..255: dlib's tiled image pyramid",
        "output": "score (1,1,H/8,W/8); pyramid, window mapping and NMS: "
                  "edge_runtime/frontend/face_cnn.py"})]
    if args.face_large:
        jobs.append(("face_large", FACE_RESNET_SPEC, "face_large.onnx", {
            "modality": "face", "dim": 128, "precision": "fp32",
            "input": "(N,3,150,150) float32 RGB pixels 0..255: dlib's get_face_chip (padding 0.25)",
            "output": "embedding (N,128), not unit norm (dlib's descriptor)"}))
    done = {}
    for name, spec, file, meta in jobs:
        out = export_port(spec, models / file)
        entry = register_model(models, name, file, dlib_port=port_version(spec),
                               source=f"{spec.dat_name} (dlib, CC0)", **meta)
        done[name] = {"file": str(out), "sha256": entry.sha256, "bytes": out.stat().st_size}
    print(json.dumps(done, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "port-dlib", help="write dlib's MMOD face detector (and, with --face-large, its face "
                          "ResNet) as ONNX into a models folder")
    p.add_argument("--models", default="models", help="models folder (its manifest is updated)")
    p.add_argument("--face-large", action="store_true",
                   help="also write the 22 MB face ResNet as face_large.onnx (device tier)")
    p.set_defaults(handler=_port)
