"""Which precision the onnxruntime CPU backend runs, from what this CPU can do (probed at start).

onnxruntime's int8 kernels are only fast with an int8 dot-product instruction: VNNI on x86
(AVX512-VNNI, AVX-VNNI, AMX-INT8), SDOT/UDOT (``asimddp``) or I8MM on ARM. Without one they
are slower than FP32 (measured: ``benchmarks/int8.md``), and on x86 their u8 x s8 products
are summed in saturating int16 (vpmaddubsw), which is where the shipped TensorRT-form INT8
files lose accuracy on such CPUs. ``choose`` reads the CPU flags (``/proc/cpuinfo``) and the
models folder's manifest and says which precision to run and why; ``edgepin info`` shows it and
``--precision auto`` (the device commands' default) follows it.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

X86_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM_DOT = ("asimddp", "i8mm")
# Why the TensorRT-form INT8 files lose accuracy on onnxruntime's x86 kernels: said once here, quoted by
# choose()'s reason, the runtime's load-time note and the calibration report.
SATURATING_KERNELS = ("on an x86 CPU without VNNI, onnxruntime's int8 kernels sum u8 x s8 products "
                      "in saturating int16 (vpmaddubsw; benchmarks/int8.md)")
# A CPU-target INT8 model is used only where it measured faster than FP32 on onnxruntime's
# kernels (benchmarks/int8.md). Below this INT8/FP32 latency ratio it counts as faster.
FASTER_RATIO = 0.95


def int8_dot_features(flags: set[str] | None = None) -> list[str]:
    """The int8 dot-product features among ``flags`` (default: this CPU's)."""
    if flags is None:
        from edge_runtime.sysinfo import cpu_identity

        flags = cpu_identity()[1]
    return [f for f in (*X86_DOT, *ARM_DOT) if f in flags]


def _cpu_int8_entries(models: Path | None) -> dict[str, dict[str, Any]]:
    """Manifest entries of INT8 models made for ``--target cpu`` (onnxruntime's kernels)."""
    from edge_runtime.bundle import load_manifest
    from edge_runtime.errors import ModelError

    if models is None or not (Path(models) / "manifest.json").is_file():
        return {}
    try:
        entries = load_manifest(models)
    except ModelError:  # the bundle load says what is wrong; here it only means "none"
        return {}
    return {k: dict(e.meta) for k, e in entries.items() if e.meta.get("target") == "cpu"
            and str(e.meta.get("precision", "")).startswith("int8")}


def choose(models: Path | None = None, flags: set[str] | None = None,
           machine: str | None = None) -> dict[str, Any]:
    """``{"precision", "reason", "features"}`` for the onnxruntime CPU backend."""
    feats = int8_dot_features(flags)
    arch = machine or platform.machine()
    if not feats:
        return {"precision": "fp32", "features": [], "reason": (
            f"{arch} CPU without an int8 dot-product instruction (no VNNI / asimddp / i8mm): "
            f"onnxruntime's int8 kernels are slower than FP32 here, and {SATURATING_KERNELS}")}
    cpu_models = _cpu_int8_entries(models)
    measured = {k: v.get("latency_ratio") for k, v in cpu_models.items()}
    faster = [k for k, r in measured.items() if isinstance(r, int | float) and r < FASTER_RATIO]
    if not cpu_models:
        return {"precision": "fp32", "features": feats, "reason": (
            f"CPU has {', '.join(feats)}, but the models folder has no INT8 model made for "
            "onnxruntime's CPU kernels (`edgepin export --target cpu`); the TensorRT-form "
            "INT8 files are for the Jetson")}
    if not faster or len(faster) < len(cpu_models):
        ratios = ", ".join(f"{k} {r:.2f}x" if isinstance(r, int | float) else f"{k} unmeasured"
                           for k, r in sorted(measured.items()))
        slow = sorted(set(cpu_models) - set(faster))
        return {"precision": "fp32", "features": feats, "reason": (
            f"CPU has {', '.join(feats)}; the CPU INT8 models measured INT8/FP32 latency "
            f"{ratios} at export: {', '.join(slow)} not faster, and one precision runs "
            "every model, so FP32 (exact)")}
    return {"precision": "int8", "features": feats, "reason": (
        f"CPU has {', '.join(feats)} and the CPU INT8 models measured faster than FP32 "
        "within 0.3 pt EER (benchmarks/int8.md)")}
