"""ms per face of both face tiers on onnxruntime, interleaved in one run -> stdout (markdown).

Each round runs the student (FP32, INT8 file) and the large tier (FP32, INT8 file) once each,
one thread, batch 1, so load from other processes hits all four alike; the medians go into
benchmarks/face_large.md. Inputs are the models' real input tensors made by `FaceInput`
from one GRID frame (speed does not depend on the pixels, the shapes are what matter).

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.face_tiers --models models --rounds 100
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from edge_runtime.bundle import load_manifest
from edge_runtime.frontend.face import DlibHogDetector, choose_face
from edge_runtime.frontend.features import FaceInput
from edge_runtime.frontend.video import decode_clip

MODELS = ("face", "face_int8", "face_large", "face_large_int8")


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--clip", type=Path, default=Path("tests/fixtures/grid/bbaf2n.mpg"))
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    entries = load_manifest(args.models)
    clip = decode_clip(args.clip)
    image = clip.frames[len(clip.frames) // 2].image
    det = choose_face(DlibHogDetector().detect(image), image.shape)
    runs = {}
    for name in MODELS:
        if name not in entries:
            print(f"- {name}: not in {args.models}/manifest.json, skipped")
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(entries[name].verified_path()), opts,
                                    providers=["CPUExecutionProvider"])
        face_input = FaceInput.from_meta(entries[name].meta.get("front_end")
                                         or entries[name.removesuffix("_int8")].meta.get("front_end"))
        runs[name] = (sess, face_input.tensor([face_input.crop(image, det)]))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(args.rounds + 10):
        for name, (sess, x) in runs.items():
            t0 = time.perf_counter()
            sess.run(None, {"face": x})
            if i >= 10:
                times[name].append(1e3 * (time.perf_counter() - t0))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"onnxruntime {ort.__version__}, one thread, batch 1, {args.rounds} interleaved rounds, "
          f"load average {load}\n")
    print("| model | median ms | p90 ms |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {np.median(t):.2f} | {np.percentile(t, 90):.2f} |")


if __name__ == "__main__":
    main()
