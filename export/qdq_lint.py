"""Static checks that a QDQ graph is the explicit-quantization form TensorRT builds as written.

Pure ``onnx``: nothing is executed. TensorRT only implements symmetric int8 (zero-point 0),
per-channel weights along the output-channel axis, per-tensor activations, float biases, and
standard-domain QuantizeLinear/DequantizeLinear; QLinear*/integer ops are onnxruntime-only.
A graph that breaks one of these either fails to parse on the device or, worse, builds with
layers silently left in float. ``lint_qdq`` finds all of it before the file leaves here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edge_runtime.errors import ModelError

QDQ = ("QuantizeLinear", "DequantizeLinear")
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
BIASED = ("Conv", "ConvTranspose", "Gemm")


@dataclass
class LintReport:
    """What ``lint_qdq`` found; ``ok`` when there are no errors (warnings are informative)."""

    path: str
    opset: int | None
    n_quantize: int = 0
    n_dequantize: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name or node.output[0]!r}"


def _expected_weight_axis(consumer: onnx.NodeProto, weight_rank: int) -> int:
    """Output-channel axis of the weight input, the only per-channel axis TensorRT accepts."""
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    return weight_rank - 1  # MatMul: B is [..., K, N]


def lint_qdq(
    onnx_path: Path, *, max_opset: int, excluded_op_types: Iterable[str]
) -> LintReport:
    """Check ``onnx_path`` against TensorRT's explicit-quantization rules (module docstring)."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"QDQ model {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise ModelError(f"QDQ model {path} cannot be parsed: {exc}") from exc
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    rep = LintReport(str(path), opset)
    err = rep.errors.append
    if opset is None or opset > max_opset:
        err(f"opset {opset} exceeds the target's maximum {max_opset}")
    consts = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for idx, name in enumerate(node.input):
            consumers[name].append((node, idx))

    def weight_source(dq: onnx.NodeProto) -> np.ndarray | None:
        """The constant behind a DQ: an int8 initializer, or a float one behind a Q."""
        src = dq.input[0]
        if src in consts:
            return consts[src]
        q = producer.get(src)
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in consts:
            return consts[q.input[0]]
        return None

    for node in graph.node:
        if node.op_type.startswith("QLinear") or node.op_type in INTEGER_OPS:
            err(f"{_label(node)}: integer operator, not TensorRT explicit quantization")
        if node.op_type not in QDQ:
            continue
        if node.op_type == "QuantizeLinear":
            rep.n_quantize += 1
        else:
            rep.n_dequantize += 1
        if node.domain not in ("", "ai.onnx"):
            err(f"{_label(node)}: domain {node.domain!r}; TensorRT parses only standard Q/DQ")
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            err(f"{_label(node)}: scale is not a constant")
            continue
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if zp_name:
            zp = consts.get(zp_name)
            if zp is None:
                err(f"{_label(node)}: zero-point is not a constant")
            else:
                if zp.dtype != np.int8:
                    err(f"{_label(node)}: zero-point dtype {zp.dtype}, TensorRT needs int8")
                if np.any(zp != 0):
                    err(f"{_label(node)}: nonzero zero-point {zp.reshape(-1)[:4].tolist()}, "
                        "TensorRT needs symmetric quantization")
        elif node.op_type == "QuantizeLinear":
            err(f"{_label(node)}: no zero-point, so the output is uint8; TensorRT needs int8")
        elif node.input[0] in consts and consts[node.input[0]].dtype != np.int8:
            err(f"{_label(node)}: input dtype {consts[node.input[0]].dtype}, expected int8")
        if node.op_type == "QuantizeLinear":
            bad = [c for c, _ in consumers[node.output[0]] if c.op_type != "DequantizeLinear"]
            if bad:
                err(f"{_label(node)}: output read by {_label(bad[0])}, not a DequantizeLinear")
            if node.input[0] in consts:
                continue  # a weight's Q: its DQ carries the same scale and is checked below
        weight = weight_source(node) if node.op_type == "DequantizeLinear" else None
        if weight is None:
            if scale.size != 1:
                err(f"{_label(node)}: activation scale has {scale.size} values; "
                    "TensorRT needs one scale per activation tensor")
            continue
        for cons, idx in consumers[node.output[0]]:
            if cons.op_type not in WEIGHTED or idx != 1:
                err(f"{_label(node)}: constant quantized as input {idx} of {_label(cons)}; "
                    "only Conv/Gemm/MatMul weights are quantized, biases and factors stay float")
                continue
            axis = _attr(node, "axis")
            want = _expected_weight_axis(cons, weight.ndim)
            if scale.ndim != 1:
                err(f"{_label(node)} -> {_label(cons)}: per-tensor weight scale, "
                    "expected per-channel")
            elif axis is None:
                err(f"{_label(node)} -> {_label(cons)}: per-channel scale without an axis")
            elif axis % weight.ndim != want or scale.size != weight.shape[want]:
                err(f"{_label(node)} -> {_label(cons)}: axis {axis} with {scale.size} scales; "
                    f"expected axis {want} with {weight.shape[want]} (output channels)")

    excluded = set(excluded_op_types)
    for node in graph.node:
        if node.op_type in excluded:
            for name in node.input:
                p = producer.get(name)
                if p is not None and p.op_type in QDQ:
                    err(f"{_label(node)}: excluded op type reads {_label(p)}; keep it in float")
        if node.op_type in BIASED and len(node.input) > 2 and node.input[2]:
            p = producer.get(node.input[2])
            if p is not None and p.op_type in QDQ:
                err(f"{_label(node)}: bias goes through {_label(p)}; TensorRT wants float bias")
        if node.op_type in WEIGHTED and node.op_type not in excluded:
            fed = [producer.get(i) for i in node.input[:2]]
            if not all(p is not None and p.op_type == "DequantizeLinear" for p in fed):
                rep.warnings.append(f"{_label(node)} is not quantized (runs in float)")
    return rep


def require_clean(report: LintReport) -> None:
    """Raise ModelError listing every lint error of ``report``."""
    if not report.ok:
        raise ModelError(
            f"QDQ model {report.path} fails the TensorRT lint ({len(report.errors)} error(s)): "
            + "; ".join(report.errors)
        )
