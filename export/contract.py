"""Deployment contract: what an ONNX file must look like before it may ship to a device.

The runtime binds tensors by name, dtype and rank, TensorRT's parser has an opset ceiling per
JetPack, and some ops only exist to make training work or need a plugin on the device. A
violation found here costs seconds; found on a Jetson it costs a failed engine build or a
silent mis-binding. ``check_contract`` reports every violation at once, not the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge_runtime.errors import ModelError

STANDARD_DOMAINS = frozenset({"", "ai.onnx"})

# Ops that have no business in an inference graph: ATen/PythonOp fallbacks need PyTorch, the
# training ops are optimizer steps, DynamicQuantizeLinear is CPU-only dynamic quantization.
DEFAULT_FORBIDDEN = frozenset(
    {"ATen", "PythonOp", "Gradient", "Momentum", "Adam", "Adagrad", "DynamicQuantizeLinear"}
)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output the runtime binds by name."""

    name: str
    dtype: str = "float32"
    rank: int | None = None


@dataclass(frozen=True)
class DeploymentContract:
    """The promises an exported graph makes to the device runtime."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_size_bytes: int
    max_opset: int
    forbidden_op_types: frozenset[str] = DEFAULT_FORBIDDEN
    allowed_domains: frozenset[str] = STANDARD_DOMAINS
    max_ir_version: int | None = None
    allow_control_flow: bool = False


def student_contract(kind: str, *, max_opset: int, max_size_bytes: int) -> DeploymentContract:
    """Contracts of the three deployed students (face, voice, faa), as the runtime binds them."""
    contracts = {
        "face": ((TensorSpec("face", "float32", 4),), (TensorSpec("embedding", "float32", 2),)),
        "voice": ((TensorSpec("feats", "float32", 3),), (TensorSpec("embedding", "float32", 2),)),
        "faa": (
            (TensorSpec("face_emb", "float32", 2), TensorSpec("voice_emb", "float32", 2)),
            (TensorSpec("match_prob", "float32", None),),
        ),
    }
    if kind not in contracts:
        raise ModelError(f"unknown student kind {kind!r}; expected one of {sorted(contracts)}")
    ins, outs = contracts[kind]
    return DeploymentContract(ins, outs, max_size_bytes=max_size_bytes, max_opset=max_opset)


def _dtype_name(elem_type: int) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _training_mode_violations(graph: onnx.GraphProto) -> list[str]:
    consts = _constant_values(graph)
    found = []
    for node in graph.node:
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            mode = consts.get(node.input[2])
            if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                found.append(f"node {node.name or node.output[0]!r}: Dropout in training mode")
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "training_mode" and attr.i == 1:
                    found.append(
                        f"node {node.name or node.output[0]!r}: BatchNormalization training_mode=1"
                    )
    return found


def _tensor_violations(
    kind: str, specs: tuple[TensorSpec, ...], values: list[onnx.ValueInfoProto]
) -> list[str]:
    found = []
    by_name = {v.name: v for v in values}
    for spec in specs:
        vi = by_name.get(spec.name)
        if vi is None:
            found.append(f"{kind} {spec.name!r} missing (graph has {sorted(by_name)})")
            continue
        ttype = vi.type.tensor_type
        dtype = _dtype_name(ttype.elem_type)
        if dtype != spec.dtype:
            found.append(f"{kind} {spec.name!r} is {dtype}, contract says {spec.dtype}")
        if spec.rank is not None:
            rank = len(ttype.shape.dim) if ttype.HasField("shape") else None
            if rank != spec.rank:
                found.append(f"{kind} {spec.name!r} has rank {rank}, contract says {spec.rank}")
    extra = sorted(set(by_name) - {s.name for s in specs})
    if extra:
        found.append(f"unexpected {kind}s {extra}")
    return found


def contract_violations(onnx_path: Path, contract: DeploymentContract) -> list[str]:
    """Every way ``onnx_path`` breaks ``contract`` (empty list when it complies)."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX model {path} does not exist")
    found: list[str] = []
    size = path.stat().st_size
    if size > contract.max_size_bytes:
        found.append(f"file is {size} bytes, limit {contract.max_size_bytes}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors vary
        raise ModelError(f"ONNX model {path} cannot be parsed: {exc}") from exc
    if contract.max_ir_version is not None and model.ir_version > contract.max_ir_version:
        found.append(f"IR version {model.ir_version} > {contract.max_ir_version}")
    for imp in model.opset_import:
        if imp.domain not in contract.allowed_domains:
            found.append(f"opset import of non-standard domain {imp.domain!r}")
        elif imp.version > contract.max_opset:
            found.append(f"opset {imp.version} > max {contract.max_opset}")
    graph = model.graph
    for node in graph.node:
        label = node.name or (node.output[0] if node.output else node.op_type)
        if node.domain not in contract.allowed_domains:
            found.append(f"node {label!r}: op {node.op_type} from custom domain {node.domain!r}")
        if node.op_type in contract.forbidden_op_types:
            found.append(f"node {label!r}: forbidden op type {node.op_type}")
        for attr in node.attribute:
            if contract.allow_control_flow:
                break
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                found.append(f"node {label!r}: subgraph attribute {attr.name!r} (control flow)")
    found += _training_mode_violations(graph)
    init_names = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    found += _tensor_violations("input", contract.inputs, real_inputs)
    found += _tensor_violations("output", contract.outputs, list(graph.output))
    return found


def check_contract(onnx_path: Path, contract: DeploymentContract) -> None:
    """Raise ModelError listing every violation of ``contract`` by ``onnx_path``."""
    found = contract_violations(onnx_path, contract)
    if found:
        raise ModelError(
            f"{onnx_path} violates its deployment contract ({len(found)} problem(s)): "
            + "; ".join(found)
        )
