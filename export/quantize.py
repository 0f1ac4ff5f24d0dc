"""Post-training INT8 quantization to an explicit-QDQ ONNX graph, per deployment target.

Why onnxruntime's ``quantize_static`` and not NVIDIA ModelOpt (``modelopt.onnx.quantization``):
  * it runs here, on CPU, from the same onnxruntime the device uses; ModelOpt's ONNX PTQ pulls
    in a CUDA/TensorRT-oriented stack we cannot run or test on this machine;
  * with ``QuantFormat.QDQ``, symmetric int8 activations and weights (zero-point 0), per-channel
    weights and float biases it emits exactly the explicit-quantization pattern TensorRT's ONNX
    parser consumes (the same pattern ModelOpt emits), so one graph serves the CPU runtime and
    TensorRT 8.2/8.5/10.x/11.x; TensorRT 11 accepts nothing else (implicit INT8 was removed);
  * the scales are inspectable (``export.qdq_lint``) and convertible to a TensorRT calibration
    cache for DLA, which on JetPack 5/6 only supports implicit INT8.

The FP32 graph first goes through ``quant_pre_process`` (shape inference + onnxruntime's basic,
standard-op graph optimisations), as onnxruntime recommends; if symbolic shape inference fails
(some attention exports) it is retried without, then skipped.

Choices, each checked by ``export.qdq_lint``:
  * ``ActivationSymmetric``/``WeightSymmetric``: TensorRT only implements zero-point 0.
  * ``QuantizeBias=False``: TensorRT wants float biases and fuses them itself.
  * weights: TensorRT >= 10 (orin, gpu) and onnxruntime (cpu) take int8 weight initializers
    straight into DequantizeLinear ("pre-quantized weights", TensorRT's explicit-quantization
    guide), a quarter of the float size; for TensorRT 8.x targets (nano, xavier)
    ``AddQDQPairToWeight`` keeps float weights behind a Q->DQ pair, the form those parsers were
    built for (ORT's own comment: "QDQ BERT model for TensorRT").
  * ``DedicatedQDQPair``: TensorRT cannot share one Q/DQ pair between consumers.
  * numerically fragile ops (softmax, normalisation, the L2 norm of the embedding, sigmoid) are
    kept in float: they are excluded from quantization, and any Q/DQ the quantizer still leaves
    on their inputs (because a producer's output was quantized) is removed afterwards.
  * calibration ``minmax`` by default: it is ModelOpt's default INT8 calibrator ("max"), is
    deterministic, keeps rare large activations that drive an embedding's direction, and is
    memory-light on CPU; ``percentile`` (99.999) clips outliers and is offered for models with
    long-tailed activations: ``export.accuracy.gate`` decides which one ships.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edge_runtime.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

DEFAULT_EXCLUDED = (
    "Softmax", "LayerNormalization", "ReduceL2", "Div", "Sqrt", "ReduceSum", "Pow", "Sigmoid",
)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Target:
    """A deployment target: the software stack it runs and what its ONNX parser accepts."""

    name: str
    devices: str
    jetpack: str | None
    tensorrt: str | None  # None: CPU only, or "whatever TensorRT is installed" for `gpu`
    cuda: str | None
    compute_capability: str | None
    max_opset: int  # highest ONNX opset the target's parser/runtime accepts
    export_opset: int  # opset we export at for this target
    dla_cores: int
    fast_int8: bool
    notes: str
    int8_weights: bool = True  # False: float weights behind Q->DQ (TensorRT 8.x parsers)

    @property
    def uses_tensorrt(self) -> bool:
        return self.name != "cpu"


TARGETS: dict[str, Target] = {
    "nano": Target(
        "nano", "Jetson Nano (Maxwell, sm_53)", "4.6.x (last JetPack for Nano, L4T R32.7)",
        "8.2.1", "10.2", "5.3", max_opset=13, export_opset=13, dla_cores=0, fast_int8=False,
        int8_weights=False,
        notes="JetPack 4.6 ships TensorRT 8.2, not 8.5: its parser stops at opset 13 "
        "(onnx-tensorrt release/8.2-GA). Maxwell has neither DP4A nor tensor cores, so INT8 is "
        "no faster than FP16 there; build FP16 engines for the Nano.",
    ),
    "xavier": Target(
        "xavier", "Jetson AGX Xavier / Xavier NX (Volta, sm_72)", "5.1.x (L4T R35)",
        "8.5.2", "11.4", "7.2", max_opset=17, export_opset=17, dla_cores=2, fast_int8=True,
        int8_weights=False,
        notes="TensorRT 8.5 parses up to opset 17 (onnx-tensorrt release/8.5-GA). Two DLA cores; "
        "DLA needs implicit INT8 (calibration cache) and static shapes.",
    ),
    "orin": Target(
        "orin", "Jetson AGX Orin / Orin NX / Orin Nano (Ampere, sm_87)", "6.1 / 6.2 (L4T R36.4)",
        "10.3.0", "12.6", "8.7", max_opset=20, export_opset=17, dla_cores=2, fast_int8=True,
        notes="TensorRT 10.x parses opsets 9..20; strongly typed networks build the QDQ graph "
        "as written. DLA: 2 cores on AGX Orin and Orin NX 16GB, 1 on Orin NX 8GB, none on "
        "Orin Nano.",
    ),
    "gpu": Target(
        "gpu", "x86-64 workstation/server NVIDIA GPU", None, None, None, None,
        max_opset=20, export_opset=17, dla_cores=0, fast_int8=True,
        notes="Uses the installed TensorRT (10.x or 11.x assumed; 11.x accepts only strongly "
        "typed explicit-QDQ graphs). Opset ceiling is TensorRT 10.0's (20).",
    ),
    "cpu": Target(
        "cpu", "any CPU via onnxruntime", None, None, None, None,
        max_opset=20, export_opset=17, dla_cores=0, fast_int8=True,
        notes="onnxruntime CPU EP runs the QDQ graph (int8 kernels need VNNI/dot-product "
        "instructions to be faster than FP32). Opset ceiling is onnxruntime 1.17's (20).",
    ),
}


def get_target(name: str) -> Target:
    """The target called ``name`` or a ConfigError listing the valid ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; expected one of {sorted(TARGETS)}") from None


def tensorrt_form(activation_type: str = "int8", weight_type: str = "int8",
                  symmetric_activations: bool = True, quant_format: str = "qdq") -> bool:
    """Whether these settings give the symmetric int8 QDQ form TensorRT builds (and
    ``export.qdq_lint`` checks); other forms are for onnxruntime's CPU kernels only."""
    return (activation_type, weight_type, symmetric_activations, quant_format) == \
        ("int8", "int8", True, "qdq")


def _preprocess(src: Path, dst: Path) -> Path:
    """ORT's quant_pre_process (shape inference + basic graph optimisation), when it works.

    Symbolic shape inference fails on some exported attention graphs; shape inference without
    it is retried, and if that fails too the graph is quantized as exported.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
            return dst
        except Exception as exc:  # noqa: BLE001 - symbolic inference raises AssertionError etc.
            log.warning("quant_pre_process(skip_symbolic_shape=%s) failed on %s: %s",
                        skip_symbolic, src, exc)
    return src


def dequantized_weight(dq: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> np.ndarray:
    """Float value of a DequantizeLinear applied to an int8 initializer (zero-point 0)."""
    from onnx import numpy_helper

    w = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    if scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return w * scale


def input_to_float(graph: onnx.GraphProto, node: onnx.NodeProto, idx: int,
                   producer: Mapping[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]
                   ) -> bool:
    """Feed ``node.input[idx]`` from the float tensor behind its DequantizeLinear.

    A Q->DQ pair is bypassed; an int8 initializer gets a dequantized float copy (added once).
    Returns False when there is nothing to rewire (no DQ, or a DQ of a computed int8 tensor).
    """
    from onnx import numpy_helper

    dq = producer.get(node.input[idx])
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    q = producer.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        node.input[idx] = q.input[0]
    elif dq.input[0] in inits:
        fname = f"{dq.input[0]}_float"
        if fname not in inits:
            inits[fname] = numpy_helper.from_array(dequantized_weight(dq, inits), fname)
            graph.initializer.append(inits[fname])
        node.input[idx] = fname
    else:
        return False
    return True


def prune_qdq(graph: onnx.GraphProto) -> None:
    """Drop Q/DQ nodes nobody reads (repeatedly: removing a DQ can orphan its Q), then unused
    initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node
                if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or n.output[0] in used]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | outputs
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)


def _clean_graph(model: onnx.ModelProto, excluded: Sequence[str]) -> int:
    """Return excluded ops' inputs and non-weight constants (biases, factors) to float.

    The quantizer puts Q/DQ on an excluded op's input when the producer's output was
    quantized, and quantizes constant operands of Add/Mul (the bias of a Linear applied to a
    3-D tensor); both are rewired to the float tensor. Orphaned Q/DQ nodes, initializers and
    unused opset imports are then removed. Returns how many inputs were rewired.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    excluded_set = set(excluded)
    rewired = 0
    for node in graph.node:
        for idx, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            source = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None
            constant = (source or dq.input[0]) in inits
            is_weight = node.op_type in _WEIGHTED and idx == 1
            if node.op_type not in excluded_set and not (constant and not is_weight):
                continue
            rewired += input_to_float(graph, node, idx, producer, inits)
    prune_qdq(graph)
    domains = {n.domain for n in graph.node} | {""}
    keep_imports = [o for o in model.opset_import if o.domain in domains or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep_imports)
    return rewired


def _fixed_batch(path: Path) -> int | None:
    """Axis-0 size shared by the graph's inputs when it is static, else None."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    sizes = set()
    for inp in graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        sizes.add(dims[0].dim_value if dims and dims[0].HasField("dim_value") else None)
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def quantize_qdq(
    fp32_onnx: Path,
    calib: Mapping[str, np.ndarray],
    out: Path,
    *,
    target: str,
    exclude_op_types: Sequence[str] = DEFAULT_EXCLUDED,
    calibrate_method: str = "minmax",
    percentile: float = 99.999,
    preprocess: bool = True,
    per_channel: bool = True,
    only_op_types: Sequence[str] | None = None,
    batch_size: int = 16,
    lint: bool = True,
    activation_type: str = "int8",
    weight_type: str = "int8",
    symmetric_activations: bool = True,
    reduce_range: bool = False,
    quant_format: str = "qdq",
    int8_weights: bool | None = None,
) -> Path:
    """Quantize ``fp32_onnx`` to an explicit-QDQ int8 graph at ``out`` for ``target``.

    ``calib`` maps each graph input to stacked real samples (see calibration.int8_sets).
    ``only_op_types`` restricts quantization to those op types (used by the sensitivity
    report). With ``lint`` the result must pass ``export.qdq_lint`` for the target.

    ``int8_weights`` (default: the target's) stores int8 weight initializers instead of
    float weights behind Q->DQ. The five knobs before it exist for onnxruntime's own CPU kernels (``--target cpu`` recipes,
    ``export/recipes.yaml``): TensorRT targets need the defaults (symmetric int8 QDQ).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from calibration.int8_sets import NpzCalibrationReader
    from export.qdq_lint import lint_qdq, require_clean

    tgt = get_target(target)
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if not fp32_onnx.is_file():
        raise ModelError(f"FP32 model {fp32_onnx} does not exist")
    if calibrate_method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"calibrate_method {calibrate_method!r}; expected one of {CALIBRATION_METHODS}"
        )
    if not calib:
        raise ModelError(f"quantizing {fp32_onnx}: empty calibration data")
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    for label, value, allowed in (("activation_type", activation_type, types),
                                  ("weight_type", weight_type, types),
                                  ("quant_format", quant_format, formats)):
        if value not in allowed:
            raise ConfigError(f"{label} {value!r}; expected one of {sorted(allowed)}")
    if tgt.uses_tensorrt and not tensorrt_form(activation_type, weight_type,
                                               symmetric_activations, quant_format):
        raise ConfigError(f"target {tgt.name} runs TensorRT: it needs symmetric int8 QDQ "
                          "(activation_type/weight_type int8, symmetric_activations, qdq)")
    excluded = set(exclude_op_types)
    candidates = set(only_op_types) if only_op_types else set(QDQRegistry) | set(QLinearOpsRegistry)
    op_types = sorted(candidates - excluded)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[calibrate_method]
    extra = {
        "ActivationSymmetric": symmetric_activations,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "DedicatedQDQPair": True,
        "AddQDQPairToWeight": not (tgt.int8_weights if int8_weights is None else int8_weights),
    }
    if calibrate_method != "minmax" and symmetric_activations:
        extra["CalibTensorRangeSymmetric"] = True
    if calibrate_method == "percentile":
        extra["CalibPercentile"] = percentile
    fixed = _fixed_batch(fp32_onnx)
    if fixed is not None:  # a static-batch graph (e.g. for DLA) takes exactly that batch
        n = len(next(iter(calib.values()))) // fixed * fixed
        if n == 0:
            raise ModelError(f"quantizing {fp32_onnx}: fewer samples than its batch {fixed}")
        calib, batch_size = {k: np.asarray(v)[:n] for k, v in calib.items()}, fixed
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgepin-quant-") as tmp:
        src = _preprocess(fp32_onnx, Path(tmp) / "pre.onnx") if preprocess else fp32_onnx
        raw = Path(tmp) / "qdq.onnx"
        try:
            quantize_static(
                str(src), str(raw), NpzCalibrationReader(calib, batch_size=batch_size),
                quant_format=formats[quant_format], op_types_to_quantize=op_types,
                per_channel=per_channel, reduce_range=reduce_range,
                activation_type=types[activation_type], weight_type=types[weight_type],
                calibrate_method=method, extra_options=extra,
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises plain RuntimeError/ValueError
            raise ModelError(f"quantizing {fp32_onnx} failed: {type(exc).__name__}: {exc}") from exc
        model = onnx.load(str(raw))
    _clean_graph(model, sorted(excluded))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    if lint and tensorrt_form(activation_type, weight_type, symmetric_activations, quant_format):
        require_clean(lint_qdq(out, max_opset=tgt.max_opset, excluded_op_types=sorted(excluded)))
    return out
