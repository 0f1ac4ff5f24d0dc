"""How calibration runs INT8 files on a CPU that onnxruntime's int8 kernels cannot serve
faithfully: as their exact QDQ arithmetic, what TensorRT on the device computes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_runtime.models import ModelBundle

log = logging.getLogger(__name__)


def exact_int8_runners(bundle: ModelBundle, tmp: Path, threads: int,
                       flags: set[str] | None = None) -> list[str]:
    """Run the bundle's INT8 files as their exact QDQ arithmetic where this CPU has no int8
    dot-product instruction; returns the swapped model names.

    There onnxruntime's fused int8 kernels sum u8 x s8 products in saturating int16
    (``export/qdq_reference.py``): scores measured with them describe neither the device
    (TensorRT accumulates in int32) nor what the runtime runs on such a CPU (FP32,
    ``edge_runtime.cpu_int8``); the level-normalised voice student loses its identity there
    (``benchmarks/int8.md``). The exact arithmetic is what the export gate measures. The
    manifest hashes stay those of the INT8 files, so the operating points are keyed by them.
    """
    from edge_runtime.backends import load_runner
    from edge_runtime.cpu_int8 import int8_dot_features
    from export.qdq_reference import reference_graph

    if int8_dot_features(flags):
        return []
    swapped = []
    for key in ("face", "voice"):
        entry = bundle.entries[key]
        if not str(entry.meta.get("precision", "")).startswith("int8"):
            continue  # e.g. the large voice tier: one FP32 file at every precision
        ref = reference_graph(entry.verified_path(), tmp / f"{key}.exact_int8.onnx")
        old = bundle.runners[key]
        bundle.runners[key] = load_runner(ref, backend="onnxruntime", threads=threads)
        old.close()
        swapped.append(entry.name)
    bundle.exact_int8 = swapped
    if swapped:
        bundle.notes.append(
            f"{', '.join(swapped)} run as their exact QDQ arithmetic (export.qdq_reference, what "
            "TensorRT computes): this CPU has no int8 dot-product instruction, and onnxruntime's "
            "int8 kernels saturate in int16 there")
        log.warning(bundle.notes[-1])
    return swapped
