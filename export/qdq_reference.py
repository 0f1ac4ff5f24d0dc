"""A QDQ graph that onnxruntime executes exactly as written (fake quantization), for the gate.

onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into its own int8 kernels. On an
x86 CPU without VNNI those use ``vpmaddubsw`` (u8 x s8 pairs summed into int16), which
saturates: on this machine a face student loses ~0.5 of cosine p1 that way. TensorRT on a
Jetson accumulates in int32 and has no such loss, so for a TensorRT target the gate must
measure the graph's arithmetic, not one CPU's kernels. Rewriting every DequantizeLinear as
``Cast(to float) * scale`` keeps the numbers identical (zero-points are 0) while no fusion
pattern matches any more: convolutions run in float on exactly-rounded, saturated int8 values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import ModelError


def faithful_int8(qdq: Path, out: Path, flags: set[str] | None = None) -> Path:
    """The INT8 file to measure on this CPU: ``qdq`` itself where onnxruntime's int8 kernels are
    faithful (the CPU has an int8 dot-product instruction), else its exact arithmetic written to
    ``out`` (``reference_graph``). Scores made with the saturating kernels describe neither the
    device (TensorRT accumulates in int32) nor what the runtime runs on such a CPU (FP32,
    ``edge_runtime.cpu_int8``). ``flags``: the CPU's, for tests."""
    from edge_runtime.cpu_int8 import int8_dot_features

    return qdq if int8_dot_features(flags) else reference_graph(qdq, out)


def reference_graph(qdq: Path, out: Path) -> Path:
    """Write ``out``: ``qdq`` with each DequantizeLinear replaced by Cast + Mul."""
    model = onnx.load(str(qdq))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            nodes.append(node)
            continue
        if len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            if np.any(zp != 0):
                raise ModelError(f"{qdq}: {node.name} has a non-zero zero-point")
        scale_name = node.input[1]
        if scale_name not in inits:
            raise ModelError(f"{qdq}: {node.name} has a non-constant scale")
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        if scale.size > 1:  # per-channel: broadcast along the DQ axis of the input
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            rank = _rank(graph, node.input[0], inits)
            shape = [1] * rank
            shape[axis % rank] = scale.size
            scale = scale.reshape(shape)
        bname = f"{node.output[0]}_ref_scale"
        graph.initializer.append(numpy_helper.from_array(scale, bname))
        cast = f"{node.output[0]}_ref_cast"
        nodes.append(helper.make_node("Cast", [node.input[0]], [cast], to=TensorProto.FLOAT,
                                      name=f"{node.name}_ref_cast"))
        nodes.append(helper.make_node("Mul", [cast, bname], [node.output[0]],
                                      name=f"{node.name}_ref_mul"))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return Path(out)


def _rank(graph: onnx.GraphProto, name: str, inits: dict) -> int:
    """Rank of a DQ input: a constant's own rank, else that of the Q feeding it."""
    if name in inits:
        return len(inits[name].dims)
    producer = {o: n for n in graph.node for o in n.output}
    q = producer.get(name)
    if q is not None and q.input[0] in inits:
        return len(inits[q.input[0]].dims)
    raise ModelError(f"per-channel DequantizeLinear on non-constant {name!r}")
