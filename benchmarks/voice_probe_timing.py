"""Voice front-end + embedding of a 2 s probe: student sizes vs Resemblyzer, in one run.

Speed does not depend on the weights, so each candidate size is exported untrained to ONNX and
run on onnxruntime's CPU provider (what the device's CPU fallback runs), from the waveform: the
log-mel front-end and the network, batch 1. The teacher (Resemblyzer: its own preprocessing and
GE2E) embeds the same probe, alternately with each student, so the ratio compares models under
the same machine load. Probes are the first 2 s of voiced speech of held-out speechocean762
utterances (device VAD).

    python -m benchmarks.voice_probe_timing --data ../shared/data/speechocean762 \\
        --shipped models/voice.onnx --samples 40 --out benchmarks/voice_probe_timing.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {  # name: (channels, blocks, stem stride)
    "16-128 x1 (shipped size)": ([16, 32, 64, 128], [1, 1, 1, 1], 2),
    "24-192 x1": ([24, 48, 96, 192], [1, 1, 1, 1], 2),
    "16-128 x2": ([16, 32, 64, 128], [2, 2, 2, 2], 2),
    "32-256 x1": ([32, 64, 128, 256], [1, 1, 1, 1], 2),
}


def _export(channels: list[int], blocks: list[int], stem: int, out: Path) -> tuple[Path, int]:
    import torch

    from export.onnx_export import export_onnx
    from export.students import DEFAULT_OPSET
    from train.models import count_parameters
    from train.tasks import build_model

    cfg = {"modality": "voice", "front_end": {"n_mels": 64, "window_frames": 200, "hop_frames": 100},
           "model": {"channels": channels, "blocks": blocks, "stem_stride": stem, "embedding_dim": 256}}
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    export_onnx(model, {"feats": torch.randn(2, 200, 64)}, out, input_names=["feats"],
                output_names=["embedding"], dynamic_axes={"feats": {0: "batch"}, "embedding": {0: "batch"}},
                opset=DEFAULT_OPSET)
    return out, count_parameters(model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--shipped", default="models/voice.onnx")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe-s", type=float, default=2.0)
    p.add_argument("--out", default="benchmarks/voice_probe_timing.json")
    args = p.parse_args(argv)

    import torch

    from edge_runtime.backends import load_runner
    from edge_runtime.frontend.audio import load_audio
    from edge_runtime.frontend.features import VoiceFrontEnd
    from edge_runtime.frontend.vad import SpeechGate
    from train.evaluate import DEFAULT_SPLIT, select_samples, voiced_probe
    from train.teachers import VoiceTeacher

    torch.set_num_threads(args.threads)
    _, samples, _ = select_samples("voice", args.data, "test", DEFAULT_SPLIT)
    gate = SpeechGate()
    probes = [voiced_probe(load_audio(s.path), gate, args.probe_s) for s in samples[: args.samples]]
    fe = VoiceFrontEnd()
    teacher = VoiceTeacher()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"shipped models/voice.onnx": (Path(args.shipped), None)}
        for name, (ch, bl, st) in SIZES.items():
            models[name] = _export(ch, bl, st, Path(tmp) / f"{len(models)}.onnx")
        for name, (path, params) in models.items():
            runner = load_runner(path, backend="onnxruntime", threads=args.threads)

            def student(wav: np.ndarray, runner=runner) -> np.ndarray:  # noqa: ANN001
                return runner.run({"feats": fe.windows(wav)})["embedding"].mean(axis=0)

            t_s, t_t = [], []
            for wav in probes:
                student(wav)
                t0 = time.perf_counter()
                student(wav)
                t_s.append(time.perf_counter() - t0)
                time.sleep(0.1)
                teacher.embed(wav)
                t0 = time.perf_counter()
                teacher.embed(wav)
                t_t.append(time.perf_counter() - t0)
                time.sleep(0.1)
            a, b = np.asarray(t_t), np.asarray(t_s)
            rows.append({"model": name, "parameters": params, "student_ms": float(np.median(b) * 1e3),
                         "teacher_ms": float(np.median(a) * 1e3),
                         "speedup_median_of_ratios": float(np.median(a / b))})
            print(json.dumps(rows[-1]))
    fe_t = []
    for wav in probes:
        t0 = time.perf_counter()
        fe.windows(wav)
        fe_t.append(time.perf_counter() - t0)
    from benchmarks.machine import machine_info

    result = {"machine": machine_info(), "load_average": os.getloadavg(), "probe_s": args.probe_s,
              "samples": len(probes), "threads": args.threads, "front_end_ms": float(np.median(fe_t) * 1e3),
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
