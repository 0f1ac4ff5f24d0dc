"""INT8 accuracy gate: does the quantized graph still produce the FP32 graph's embeddings?

Two independent checks decide whether an INT8 model ships. Embedding agreement (per-sample
cosine between FP32 and INT8 outputs on real inputs) catches layers that quantization broke,
even when the verification metric happens to survive; the EER delta measured by the caller on
a verification protocol catches damage the cosine statistics average away. The gate reports
each failure with the margin, so "how far off" is visible, not just "failed".
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, ModelError


def _run(onnx_path: Path, inputs: Mapping[str, np.ndarray], output: str | None) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    name = output or names[0]
    if name not in names:
        raise ModelError(f"{onnx_path} has no output {name!r} (outputs: {names})")
    return sess.run([name], dict(inputs))[0]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-30)


def embedding_agreement(
    fp32_onnx: Path,
    int8_onnx: Path,
    inputs: Mapping[str, np.ndarray],
    *,
    output: str | None = None,
) -> dict[str, Any]:
    """Per-sample cosine (min / 1st percentile / median) and absolute error, FP32 vs INT8.

    For a one-value-per-sample output (``match_prob``) the cosine is meaningless; use the
    absolute-error fields instead.
    """
    ref = _run(Path(fp32_onnx), inputs, output)
    got = _run(Path(int8_onnx), inputs, output)
    if ref.shape != got.shape:
        raise ModelError(f"output shapes differ: {fp32_onnx} {ref.shape}, {int8_onnx} {got.shape}")
    cos = _cosines(ref, got)
    err = np.abs(ref.astype(np.float64) - got.astype(np.float64)).reshape(len(ref), -1).max(1)
    return {
        "n": int(len(cos)),
        "cos_min": float(cos.min()),
        "cos_p1": float(np.percentile(cos, 1)),
        "cos_median": float(np.median(cos)),
        "abs_err_max": float(err.max()),
        "abs_err_p99": float(np.percentile(err, 99)),
    }


@dataclass
class GateResult:
    """Outcome of the INT8 gate; every failure says by how much the limit was missed."""

    ok: bool
    failures: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)


def gate(
    agreement: Mapping[str, Any],
    eer_fp32: float,
    eer_int8: float,
    *,
    min_p1: float = 0.99,
    max_eer_delta_pt: float = 0.3,
) -> GateResult:
    """Pass when cosine p1 >= ``min_p1`` and the EER rose by at most ``max_eer_delta_pt``.

    EERs are fractions in [0, 1]; the limit is in percentage points (0.3 = 0.3 pt).
    """
    for name, eer in (("eer_fp32", eer_fp32), ("eer_int8", eer_int8)):
        if not 0.0 <= eer <= 1.0:
            raise ConfigError(f"{name}={eer} is not a fraction in [0, 1] (percent given?)")
    failures = []
    p1 = float(agreement["cos_p1"])
    if p1 < min_p1:
        failures.append(f"cosine p1 {p1:.4f} < {min_p1:.4f} (short by {min_p1 - p1:.4f})")
    delta_pt = (eer_int8 - eer_fp32) * 100.0
    if delta_pt > max_eer_delta_pt:
        failures.append(
            f"EER rose {delta_pt:.2f} pt ({eer_fp32 * 100:.2f}% -> {eer_int8 * 100:.2f}%), "
            f"limit {max_eer_delta_pt:.2f} pt (over by {delta_pt - max_eer_delta_pt:.2f} pt)"
        )
    return GateResult(
        ok=not failures,
        failures=failures,
        measured={"cos_p1": p1, "eer_fp32": eer_fp32, "eer_int8": eer_int8,
                  "eer_delta_pt": delta_pt},
    )


def sensitivity_report(
    fp32_onnx: Path,
    calib: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
    op_types: Sequence[str],
    *,
    target: str = "cpu",
    output: str | None = None,
    **quantize_kwargs: Any,
) -> list[dict[str, Any]]:
    """Quantize one op type at a time; most damaging first (lowest cosine p1).

    Tells which op types to add to ``exclude_op_types`` when the full model fails the gate.
    ``quantize_kwargs`` (a recipe's other settings) go to ``export.quantize.quantize_qdq``.
    """
    import onnx

    from export.quantize import quantize_qdq

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepin-sens-") as tmp:
        for op in op_types:
            out = Path(tmp) / f"{op}.onnx"
            quantize_qdq(fp32_onnx, calib, out, target=target, only_op_types=[op],
                         exclude_op_types=(), lint=False, **quantize_kwargs)
            graph = onnx.load(str(out)).graph
            producer = {o: n.op_type for n in graph.node for o in n.output}
            n_quantized = sum(
                1 for n in graph.node
                if (n.op_type == op and any(producer.get(i) == "DequantizeLinear"
                                            for i in n.input))
                or n.op_type in (f"QLinear{op}", "QGemm" if op == "Gemm" else "")
            )
            agree = embedding_agreement(fp32_onnx, out, inputs, output=output)
            rows.append({"op_type": op, "n_quantized": n_quantized, "cos_p1": agree["cos_p1"],
                         "cos_min": agree["cos_min"], "abs_err_max": agree["abs_err_max"]})
    return sorted(rows, key=lambda r: r["cos_p1"])
