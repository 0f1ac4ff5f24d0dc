"""Face student variants: parameters, multiply-adds, INT8 file size and onnxruntime latency.

Size and speed do not depend on the weights, so each variant is an untrained network built
from `train/configs/face_distill_views.yaml` with `model.width` / `model.stages` changed; its
INT8 file is the real QDQ export (`export.quantize.quantize_qdq`, target cpu) calibrated on
the real LFW faces bundled in `tests/fixtures/lfw` (aligned as the device aligns them).
Latency: median ms per face at batch 1, interleaved rounds over all variants (the shared
machine's speed drifts), FP32 and INT8, on 1 and 2 onnxruntime threads.

    nice -n 19 python benchmarks/face_variants.py --out benchmarks/face_variants
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import markdown_header  # noqa: E402
from edge_runtime.frontend.face import DlibHogDetector, detect_and_align, load_image  # noqa: E402
from edge_runtime.frontend.features import face_tensor  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.quantize import quantize_qdq  # noqa: E402
from train.config import load_config  # noqa: E402
from train.datasets import FaceFolder  # noqa: E402
from train.models import count_parameters  # noqa: E402
from train.tasks import build_model  # noqa: E402

VARIANTS = [("mfn", 1.0), ("mfn", 1.5), ("mfn", 2.0), ("mfn_deep", 1.0), ("mfn_deep", 1.5)]
INT8_BUDGET_MB = 4.0
MS_BUDGET = 10.0


def multiply_adds(model: torch.nn.Module) -> int:
    """Conv and linear multiply-adds for one 112x112 face (hooks on a forward pass)."""
    total = 0

    def hook(mod: torch.nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
            total += int(out.numel() * k)
        elif isinstance(mod, torch.nn.Linear):
            total += int(mod.weight.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 112, 112))
    for h in handles:
        h.remove()
    return total


def train_step_s(model: torch.nn.Module, faces: np.ndarray, batch: int = 64, steps: int = 3) -> float:
    """Median seconds of one training step (forward + backward + AdamW) at `batch`, 1 thread."""
    model = model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.from_numpy(np.resize(faces, (batch, *faces.shape[1:]))).contiguous(memory_format=torch.channels_last)
    target = torch.nn.functional.normalize(torch.randn(batch, 128), dim=1)
    out = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = (1 - (model(x) * target).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(time.perf_counter() - t0)
    return float(np.median(out[1:]))


def real_faces(fixtures: Path) -> np.ndarray:
    """Aligned colour crops of the bundled LFW faces (calibration and timing inputs)."""
    det = DlibHogDetector()
    crops = [detect_and_align(load_image(s.path), det, source=str(s.path))[0]
             for s in FaceFolder(fixtures).samples]
    return face_tensor(crops, colour=True)


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/face_variants")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    faces = real_faces(ROOT / "tests" / "fixtures" / "lfw")
    tmp = Path(tempfile.mkdtemp(prefix="face_variants_"))
    rows, sessions = [], {}
    for stages, width in VARIANTS:
        cfg = load_config(None, "face_distill_views.yaml", [f"model.width={width}", f"model.stages={stages}"])
        model = build_model(cfg).eval()
        name = f"{stages} w{width:g}"
        fp32 = export_onnx(model, {"face": torch.from_numpy(faces[:2])}, tmp / f"{stages}_{width}.onnx",
                           input_names=["face"], output_names=["embedding"],
                           dynamic_axes={"face": {0: "batch"}, "embedding": {0: "batch"}}, opset=17)
        int8 = quantize_qdq(fp32, {"face": faces}, tmp / f"{stages}_{width}.int8.onnx", target="cpu")
        rows.append({"variant": name, "stages": stages, "width": width,
                     "params_M": count_parameters(model) / 1e6, "madds_M": multiply_adds(model) / 1e6,
                     "fp32_MB": fp32.stat().st_size / 2**20, "int8_MB": int8.stat().st_size / 2**20,
                     "train_s_per_step": train_step_s(build_model(cfg), faces), "times": {}})
        for prec, path in (("fp32", fp32), ("int8", int8)):
            for threads in (1, 2):
                sessions[(name, prec, threads)] = session(path, threads)
    x = faces[:1]
    times: dict[tuple, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, {"face": x})
    for _ in range(args.rounds):  # interleaved: drift hits every variant alike
        for key, s in sessions.items():
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                s.run(None, {"face": x})
                times[key].append(1000 * (time.perf_counter() - t0))
    for r in rows:
        for prec in ("fp32", "int8"):
            for threads in (1, 2):
                r["times"][f"{prec}_{threads}t"] = float(np.median(times[(r["variant"], prec, threads)]))
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = [markdown_header("Face student variants: size and speed",
                             "untrained networks (size and speed do not depend on the weights); INT8 "
                             "calibrated on the 25 bundled LFW fixture faces"),
             f"Command: `nice -n 19 python benchmarks/face_variants.py`. Budget: INT8 <= {INT8_BUDGET_MB} MB, "
             f"<= {MS_BUDGET} ms per face. Median ms per face, batch 1, onnxruntime CPU, "
             f"{args.rounds}x{args.per_round} interleaved runs each, shared 2-core machine.", "",
             "| variant | params (M) | multiply-adds (M) | FP32 MB | INT8 MB | FP32 ms 1 thr | FP32 ms 2 thr "
             "| INT8 ms 1 thr | INT8 ms 2 thr | within budget | train s/step (b64, 1 thr) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["times"]
        ok = r["int8_MB"] <= INT8_BUDGET_MB and min(t["fp32_2t"], t["int8_2t"]) <= MS_BUDGET
        lines.append(f"| {r['variant']} | {r['params_M']:.2f} | {r['madds_M']:.0f} | {r['fp32_MB']:.2f} | "
                     f"{r['int8_MB']:.2f} | {t['fp32_1t']:.2f} | {t['fp32_2t']:.2f} | {t['int8_1t']:.2f} | "
                     f"{t['int8_2t']:.2f} | {'yes' if ok else 'no'} | {r['train_s_per_step']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
