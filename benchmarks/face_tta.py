"""Face test-time augmentation (mirror image averaged in) vs plain embeddings, held-out LFW.

Every model is scored on the same held-out LFW people and pairs (``train.evaluate``, what
``edgepin eval face`` runs) twice: plain and ``--face-tta flip``. Accuracy is the point;
ms per face (batch 1, one thread, median) is indicative only on a shared machine.

    python -m benchmarks.face_tta --models models/face.onnx models/face_large.onnx \
        /work/runs/face_w10/student.pt --data ../shared/data/lfw --cache /work/cache \
        --out benchmarks/face_tta.md
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.machine import markdown_header
from train.evaluate import evaluate


def run(models: list[str], data: str, cache: str, threads: int, caches: dict[str, str]
        ) -> list[dict]:
    rows = []
    for model in models:
        for tta in ("none", "flip"):
            r = evaluate("face", model, data, cache_dir=caches.get(model, cache), threads=threads,
                         timing_samples=30, face_tta=tta)
            rows.append({"model": model, "tta": tta, "eer": r["eer"],
                         "tar@1e-2": r["tar@far=0.01"]["tar"], "tar@1e-3": r["tar@far=0.001"]["tar"],
                         "ms": r["ms_per_sample"], "pairs": [r["n_genuine"], r["n_impostor"]],
                         "identities": r["split"]["n_identities"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def render(rows: list[dict], command: str, load: tuple[float, float, float]) -> str:
    head = markdown_header(
        "Face test-time augmentation: the mirror image averaged in (held-out LFW)",
        f"LFW people held out from every model's training ({rows[0]['identities']} identities, "
        f"{rows[0]['pairs'][0]} genuine / {rows[0]['pairs'][1]} impostor pairs, the same for "
        "every row)")
    lines = [
        head,
        f"Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (a shared "
        "2-core machine: ms are indicative, the accuracy columns are the result).", "",
        f"Command: `{command}`", "",
        "`flip`: the unit mean "
        "of the embeddings of the aligned crop and of its mirror image, one batch of 2 "
        "(`edge_runtime.frontend.features.embed_face_tensor`, what the device runs when its "
        "operating-point file says `face_tta: flip`).", "",
        "| model | tta | EER % | TAR@FAR 1e-2 % | TAR@FAR 1e-3 % | ms / face |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tta']} | {100 * r['eer']:.2f} | "
                     f"{100 * r['tar@1e-2']:.2f} | {100 * r['tar@1e-3']:.2f} | {r['ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="face .onnx or student .pt files")
    p.add_argument("--data", default="../shared/data/lfw")
    p.add_argument("--cache", default=os.environ.get("EDGEPIN_CACHE", str(Path.home() / ".cache/edgepin")))
    p.add_argument("--cache-for", nargs="*", default=[], metavar="MODEL=DIR",
                   help="another crop cache for one model (e.g. the large tier's dlib chips)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/face_tta.md")
    args = p.parse_args()
    caches = dict(item.split("=", 1) for item in args.cache_for)
    rows = run(args.models, args.data, args.cache, args.threads, caches)
    command = "python -m benchmarks.face_tta " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v not in (None, []))
    out = Path(args.out)
    out.write_text(render(rows, command, os.getloadavg()))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
