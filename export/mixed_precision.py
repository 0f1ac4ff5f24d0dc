"""Keep chosen nodes of a QDQ graph in float (mixed precision by node, not by op type).

``export.quantize`` excludes whole op types; a student whose accuracy is lost in one or two
layers (typically the first convolution, which sees the raw image, and the embedding head)
needs those nodes, not every Conv, kept in float. This rewires the chosen nodes' inputs from
their DequantizeLinear back to the float tensors (or, for int8-stored weights, to a float copy)
and drops the Q/DQ nodes left unused. TensorRT runs such nodes in the network's float type.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from edge_runtime.errors import ConfigError
from export.quantize import input_to_float, prune_qdq

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _quantized_weighted(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Weighted nodes whose weight comes through a DequantizeLinear, in graph order."""
    producer = {o: n for n in graph.node for o in n.output}
    return [n for n in graph.node if n.op_type in WEIGHTED and len(n.input) > 1
            and getattr(producer.get(n.input[1]), "op_type", None) == "DequantizeLinear"]


def resolve_nodes(graph: onnx.GraphProto, spec: Sequence[str]) -> list[str]:
    """Node names for ``spec``: exact names, ``first`` (first quantized weighted node),
    ``last:N`` (the last N quantized weighted nodes, e.g. an embedding head) or ``depthwise``
    (every grouped Conv)."""
    weighted = _quantized_weighted(graph)
    names = {n.name for n in graph.node}
    out: list[str] = []
    for item in spec:
        if item == "first":
            out += [weighted[0].name] if weighted else []
        elif item == "depthwise":  # grouped convolutions: few MACs, often the worst ranges
            out += [n.name for n in weighted if n.op_type == "Conv" and any(
                a.name == "group" and a.i > 1 for a in n.attribute)]
        elif item.startswith("last:"):
            try:
                k = int(item.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"--keep-float {item!r}: expected last:N") from None
            out += [n.name for n in weighted[-k:]] if k > 0 else []
        elif item in names:
            out.append(item)
        else:
            raise ConfigError(f"--keep-float {item!r}: no such node (use first, last:N, "
                              "depthwise or a node name from the layer-error report)")
    return list(dict.fromkeys(out))


def keep_float(qdq_path: Path, spec: Sequence[str]) -> list[str]:
    """Rewrite ``qdq_path`` with the nodes of ``spec`` in float; returns their names."""
    model = onnx.load(str(qdq_path))
    graph = model.graph
    targets = set(resolve_nodes(graph, spec))
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.name in targets:
            for idx in range(len(node.input)):
                input_to_float(graph, node, idx, producer, inits)
    prune_qdq(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(qdq_path))
    return sorted(targets)


def layer_errors(fp32: Path, qdq: Path, inputs: dict, *, top: int = 5,
                 run: Path | None = None) -> list[dict]:
    """Where the INT8 graph departs from FP32: relative error of every quantized weighted
    node's output, and the largest jumps from one such node to the next (``--keep-float``
    candidates). Nodes are found in ``qdq``; ``run`` (default ``qdq``) is the graph executed,
    e.g. its ``export.qdq_reference`` form."""
    import numpy as np
    import onnxruntime as ort

    q_graph = onnx.load(str(qdq)).graph
    nodes = [(n.name, n.output[0]) for n in _quantized_weighted(q_graph)]
    f_outputs = {o for n in onnx.load(str(fp32)).graph.node for o in n.output}
    nodes = [(name, out) for name, out in nodes if out in f_outputs]
    if not nodes:  # QOperator form: its QLinear* outputs are integers, nothing to compare
        return []

    def outputs(path: Path) -> list:
        model = onnx.load(str(path))
        del model.graph.output[:]
        for _, out in nodes:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run([o for _, o in nodes], dict(inputs))

    rows, prev = [], 0.0
    for (name, _), a, b in zip(nodes, outputs(fp32), outputs(run or qdq), strict=True):
        err = float(np.linalg.norm(b - a) / max(float(np.linalg.norm(a)), 1e-12))
        rows.append({"node": name, "rel_error": err, "jump": err - prev})
        prev = err
    return sorted(rows, key=lambda r: -r["jump"])[:top]
