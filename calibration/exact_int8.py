"""How calibration runs INT8 files on a CPU that onnxruntime's int8 kernels cannot serve
faithfully: as their exact QDQ arithmetic, what TensorRT on the device computes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.models import INT8_KERNEL_NOTE

if TYPE_CHECKING:
    from edge_runtime.models import ModelBundle

log = logging.getLogger(__name__)


def exact_int8_runners(bundle: ModelBundle, tmp: Path, threads: int,
                       flags: set[str] | None = None) -> list[str]:
    """Run the bundle's INT8 files as their exact QDQ arithmetic where this CPU has no int8
    dot-product instruction (``export.qdq_reference.faithful_int8``: the level-normalised voice
    student loses its identity in the saturating kernels, ``benchmarks/int8.md``); returns the
    swapped model names. The exact arithmetic is what the export gate measures. The manifest
    hashes stay those of the INT8 files, so the operating points are keyed by them.
    """
    from edge_runtime.backends import load_runner
    from export.qdq_reference import faithful_int8

    swapped = []
    for key in ("face", "voice"):
        entry = bundle.entries[key]
        if not str(entry.meta.get("precision", "")).startswith("int8"):
            continue  # e.g. the large voice tier: one FP32 file at every precision
        path = entry.verified_path()
        ref = faithful_int8(path, tmp / f"{key}.exact_int8.onnx", flags)
        if ref == path:  # the CPU's int8 kernels are faithful: run the file itself
            continue
        old = bundle.runners[key]
        bundle.runners[key] = load_runner(ref, backend="onnxruntime", threads=threads)
        old.close()
        swapped.append(entry.name)
    bundle.exact_int8 = swapped
    if swapped:
        # the load-time note ("INT8 ... loses accuracy here") no longer holds for this bundle
        bundle.notes[:] = [n for n in bundle.notes if not n.startswith(INT8_KERNEL_NOTE)]
        bundle.notes.append(
            f"{', '.join(swapped)} run as their exact QDQ arithmetic (export.qdq_reference, what "
            "TensorRT computes): this CPU has no int8 dot-product instruction, and onnxruntime's "
            "int8 kernels saturate in int16 there")
        log.warning(bundle.notes[-1])
    return swapped
