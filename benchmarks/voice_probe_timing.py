"""Voice front-end + embedding of a 2 s probe: student sizes vs Resemblyzer, in one run.

Speed does not depend on the weights, so each candidate size is exported untrained to ONNX and
run on onnxruntime's CPU provider (what the device's CPU fallback runs), from the waveform: the
log-mel front-end and the network, batch 1. Trained students (`--trained NAME=PATH`) are timed
the same way, so their accuracy can be divided by their time. The teacher (Resemblyzer:
`preprocess_wav` + `embed_utterance`) embeds the same probe, alternately with each student, so
the ratio compares models under the same machine load; the load average is written before and
after every row. Probes are the first 2 s of voiced speech of held-out speechocean762
utterances (device VAD).

    python -m benchmarks.voice_probe_timing --data ../shared/data/speechocean762 \\
        --shipped models/voice.onnx --samples 40 --repeats 5 --threads 1 2 \\
        --out benchmarks/voice_probe_timing.json --md benchmarks/voice_probe_timing.md
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_runtime.frontend.features import VoiceFrontEnd

SIZES = {  # name: (channels, blocks, stem stride)
    "16-128 x1": ([16, 32, 64, 128], [1, 1, 1, 1], 2),
    "24-192 x1 (shipped size)": ([24, 48, 96, 192], [1, 1, 1, 1], 2),
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


def _front_end(path: Path) -> VoiceFrontEnd:
    """The front-end recorded in a student's ONNX metadata (untrained sizes record none: default),
    so each model is timed with the features it was trained on."""
    from edge_runtime.frontend.features import VoiceFrontEnd
    from export.stages import onnx_metadata

    raw = onnx_metadata(path).get("front_end")
    return VoiceFrontEnd.from_dict(raw) if raw else VoiceFrontEnd()


def _ms(fn: Callable[[], object], repeats: int) -> float:
    """One warm call, then the fastest of `repeats` timed calls: on a shared CPU a single call
    mostly measures who else ran, the fastest one is the cost of the computation."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Voice 2 s probe: front-end + embedding vs Resemblyzer ({m['date']})",
        "",
        f"- machine: {m['cpu']}, {m['memory']}, onnxruntime {m['onnxruntime']}, torch {m['torch']}, "
        f"numpy {m['numpy']}",
        f"- data: first {result['probe_s']:g} s of voiced speech of {result['samples']} held-out "
        "speechocean762 utterances (device VAD); batch 1, onnxruntime CPU; per probe the fastest "
        f"of {result['repeats']} calls, median over probes",
        f"- load average (1/5/15 min) at start {result['load_start']}, at end {result['load_end']}",
        f"- front-end alone (log-mel + windows, numpy, the shipped model's: "
        f"{result.get('front_end', 'band')} normalisation): {result['front_end_ms']:.2f} ms median",
        "- Resemblyzer = `preprocess_wav` + `embed_utterance` on the same probe, timed alternately "
        "with each student under the same torch/onnxruntime thread count",
        "",
        "| model | parameters | threads | front-end + embedding ms | network ms | Resemblyzer ms "
        "| paired speed-up | load average (start -> end of row) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        params = f"{r['parameters'] / 1e6:.2f} M" if r["parameters"] else "—"
        lines.append(f"| {r['model']} | {params} | {r['threads']} | {r['student_ms']:.2f} | "
                     f"{r['network_ms']:.2f} | {r['teacher_ms']:.1f} | "
                     f"{r['speedup_median_of_ratios']:.1f}x | {r['load'][0][0]} -> {r['load'][1][0]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--shipped", default="models/voice.onnx")
    p.add_argument("--trained", nargs="*", default=[], metavar="NAME=PATH",
                   help="trained student ONNX files to time beside the sizes")
    p.add_argument("--no-sizes", action="store_true", help="time only --shipped and --trained")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--probe-s", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per probe (fastest kept)")
    p.add_argument("--out", default="benchmarks/voice_probe_timing.json")
    p.add_argument("--md", default=None, help="also write the table as markdown here")
    args = p.parse_args(argv)

    import torch

    from benchmarks.machine import machine_info
    from edge_runtime.backends import load_runner
    from edge_runtime.errors import ConfigError
    from edge_runtime.frontend.audio import load_audio
    from edge_runtime.frontend.vad import SpeechGate
    from train.evaluate import DEFAULT_SPLIT, select_samples, voiced_probe
    from train.teachers import VoiceTeacher

    load_start = _load()
    _, samples, _ = select_samples("voice", args.data, "test", DEFAULT_SPLIT)
    gate = SpeechGate()
    probes = [voiced_probe(load_audio(s.path), gate, args.probe_s) for s in samples[: args.samples]]
    teacher = VoiceTeacher()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, tuple[Path, int | None]] = {f"shipped {args.shipped}": (Path(args.shipped), None)}
        for item in args.trained:
            if "=" not in item:
                raise ConfigError(f"--trained {item!r} must look like NAME=PATH")
            name, path = item.split("=", 1)
            models[f"trained {name}"] = (Path(path), None)
        if not args.no_sizes:
            for name, (ch, bl, st) in SIZES.items():
                models[f"untrained {name}"] = _export(ch, bl, st, Path(tmp) / f"{len(models)}.onnx")
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, (path, params) in models.items():
                runner = load_runner(path, backend="onnxruntime", threads=threads)
                fe = _front_end(path)
                load0 = _load()
                t_s, t_n, t_t = [], [], []
                for wav in probes:
                    feats = fe.windows(wav)
                    t_s.append(_ms(lambda wav=wav, runner=runner, fe=fe: runner.run(
                        {"feats": fe.windows(wav)})["embedding"].mean(axis=0), args.repeats))
                    t_n.append(_ms(lambda feats=feats, runner=runner: runner.run({"feats": feats}),
                                   args.repeats))
                    time.sleep(0.05)
                    t_t.append(_ms(lambda wav=wav: teacher.embed(wav), args.repeats))
                    time.sleep(0.05)
                a, b = np.asarray(t_t), np.asarray(t_s)
                rows.append({"model": name, "parameters": params, "threads": threads,
                             "student_ms": float(np.median(b)), "network_ms": float(np.median(t_n)),
                             "teacher_ms": float(np.median(a)),
                             "speedup_median_of_ratios": float(np.median(a / b)),
                             "normalise": fe.normalise,
                             "load": [load0, _load()]})
                print(json.dumps(rows[-1]))
    fe = _front_end(Path(args.shipped))
    fe_t = [_ms(lambda wav=wav: fe.windows(wav), args.repeats) for wav in probes]
    result = {"machine": machine_info(), "load_start": load_start, "load_end": _load(),
              "probe_s": args.probe_s, "samples": len(probes), "repeats": args.repeats,
              "front_end_ms": float(np.median(fe_t)), "front_end": fe.normalise, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.md:
        Path(args.md).write_text(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
