"""Rebuild a dlib network read by `export.dlib.reader` as an ONNX graph (onnx.helper + numpy).

The graph takes RGB pixel values as float32 NCHW (0..255) and does dlib's input step itself:
(pixel - mean_rgb) / 256 per channel, as `input_rgb_image_sized` / `input_rgb_image_pyramid`
do. Layers map one to one: con -> Conv (an affine right after a con is folded into it),
affine -> Mul + Add, relu -> Relu, max_pool / avg_pool -> MaxPool / AveragePool (a 0x0 window
is dlib's avg_pool_everything -> GlobalAveragePool), fc -> Flatten + MatMul (+ Add), and the
graph ops tag / skip / add_prev read the output of the nearest tag with the same id below,
as dlib's `layer<tagN>(subnet)` lookup does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import ModelError
from export.dlib.reader import Layer

OPSET = 17
Shape = tuple[int | str, int | str, int | str]


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(self, op_type: str, inputs: Sequence[str], stem: str | None = None, **attrs: object) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _conv(g: _Graph, x: str, layer: Layer, fold: Layer | None) -> str:
    w = layer.weights["w"].astype(np.float32)
    b = layer.weights.get("b", np.zeros(w.shape[0], np.float32)).astype(np.float32)
    if fold is not None:  # conv followed by affine: scale the filters, shift the bias
        gamma = fold.weights["gamma"].reshape(-1)
        beta = fold.weights["beta"].reshape(-1)
        w = w * gamma[:, None, None, None]
        b = b * gamma + beta
    py, px = layer.attrs["padding"]  # type: ignore[misc]
    out = g.op("Conv", [x, g.const("W", w), g.const("B", b)], "conv",
               kernel_shape=list(w.shape[2:]), strides=list(layer.attrs["stride"]),  # type: ignore[call-overload]
               pads=[py, px, py, px])
    if layer.attrs.get("use_relu"):
        out = g.op("Relu", [out])
    return out


def build_onnx(
    layers: Sequence[Layer],
    *,
    input_name: str = "image",
    output_name: str = "output",
    input_hw: tuple[int | str, int | str] = (150, 150),
    graph_name: str = "dlib_network",
    doc: str = "",
) -> onnx.ModelProto:
    """An ONNX model computing the network up to (not including) its loss layer."""
    if not layers or layers[0].kind != "input":
        raise ModelError("a dlib network must start with its input layer")
    g = _Graph()
    mean = np.array(layers[0].attrs["mean_rgb"], np.float32).reshape(1, 3, 1, 1)
    x = g.op("Sub", [input_name, g.const("mean_rgb", mean)], "centred")
    x = g.op("Mul", [x, g.const("inv256", np.array(1.0 / 256.0, np.float32))], "scaled")
    tags: dict[int, list[tuple[str, Shape]]] = {}
    shape: Shape = (3, input_hw[0], input_hw[1])
    body = [layer for layer in layers[1:] if not layer.kind.startswith("loss")]
    i = 0
    while i < len(body):
        layer = body[i]
        kind = layer.kind
        if kind == "con":
            nxt = body[i + 1] if i + 1 < len(body) else None
            fold = nxt if nxt is not None and nxt.kind == "affine" and not nxt.attrs.get("disabled") \
                and not layer.attrs.get("use_relu") else None
            x = _conv(g, x, layer, fold)
            shape = _window_shape(shape, layer, int(layer.attrs["filters"]))  # type: ignore[call-overload]
            i += 2 if fold is not None else 1
            continue
        if kind == "affine":
            if not layer.attrs.get("disabled"):
                x = g.op("Mul", [x, g.const("gamma", layer.weights["gamma"])])
                x = g.op("Add", [x, g.const("beta", layer.weights["beta"])])
        elif kind == "relu":
            if not layer.attrs.get("disabled"):
                x = g.op("Relu", [x])
        elif kind in ("max_pool", "avg_pool"):
            kh, kw = layer.attrs["kernel"]  # type: ignore[misc]
            py, px = layer.attrs["padding"]  # type: ignore[misc]
            shape = _window_shape(shape, layer, shape[0])  # type: ignore[arg-type]
            if kh == 0 and kw == 0:
                if kind != "avg_pool":
                    raise ModelError("a global max pool is not supported")
                x = g.op("GlobalAveragePool", [x])
            else:
                op = "MaxPool" if kind == "max_pool" else "AveragePool"
                extra = {} if kind == "max_pool" else {"count_include_pad": 0}
                x = g.op(op, [x], kind, kernel_shape=[kh, kw], strides=list(layer.attrs["stride"]),  # type: ignore[call-overload]
                         pads=[py, px, py, px], **extra)
        elif kind == "tag":
            tags.setdefault(layer.tag, []).append((x, shape))
        elif kind == "skip":
            x, shape = _nearest_tag(tags, layer.tag, "skip")
        elif kind == "add_prev":
            other, other_shape = _nearest_tag(tags, layer.tag, "add_prev")
            # dlib's add_prev adds tensors of different sizes as if each were zero-padded at
            # the end of every axis to the larger size (tt::add on mismatched tensors): the
            # down-sampling blocks of the face ResNet rely on it (3x3 + 4x4 -> 4x4).
            both = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))
            x = _pad_to(g, x, shape, both)
            other = _pad_to(g, other, other_shape, both)
            shape = both
            x = g.op("Add", [x, other], "add")
        elif kind == "fc":
            flat = g.op("Flatten", [x], axis=1)
            x = g.op("MatMul", [flat, g.const("fc_W", layer.weights["w"])], "fc")
            shape = (int(layer.attrs["outputs"]), 1, 1)  # type: ignore[call-overload]
            if "b" in layer.weights:
                x = g.op("Add", [x, g.const("fc_b", layer.weights["b"])])
        else:
            raise ModelError(f"no ONNX mapping for dlib layer {kind!r}")
        i += 1
    g.nodes.append(helper.make_node("Identity", [x], [output_name], name=output_name))
    h, w = input_hw
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, h, w])
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", "out_c", "out_h", "out_w"] if not layers_have_fc(layers) else ["batch", "dim"])
    graph = helper.make_graph(g.nodes, graph_name, [inp], [out], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgepin.export.dlib", doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _pad_to(g: _Graph, x: str, shape: Shape, target: Shape) -> str:
    if shape == target:
        return x
    if not all(isinstance(v, int) for v in (*shape, *target)):
        raise ModelError("add_prev on tensors of different sizes needs a fixed input size")
    extra = [int(t) - int(v) for v, t in zip(shape, target, strict=True)]
    pads = np.array([0, 0, 0, 0, 0, *extra], np.int64)
    return g.op("Pad", [x, g.const("pads", pads)], "pad_zero")


def _window_shape(shape: Shape, layer: Layer, channels: int) -> Shape:
    """Output (C, H, W) of a dlib convolution or pooling: 1 + (n + 2p - k) // s."""
    kh, kw = layer.attrs["kernel"]  # type: ignore[misc]
    sy, sx = layer.attrs["stride"]  # type: ignore[misc]
    py, px = layer.attrs["padding"]  # type: ignore[misc]
    _, h, w = shape
    if kh == 0 and kw == 0:
        return (channels, 1, 1)
    h2 = 1 + (h + 2 * py - kh) // sy if isinstance(h, int) else h
    w2 = 1 + (w + 2 * px - kw) // sx if isinstance(w, int) else w
    return (channels, h2, w2)


def _nearest_tag(tags: dict[int, list[tuple[str, int]]], tag: int, what: str) -> tuple[str, int]:
    if not tags.get(tag):
        raise ModelError(f"{what}{tag} has no tag{tag} below it")
    return tags[tag][-1]


def layers_have_fc(layers: Sequence[Layer]) -> bool:
    """An fc head gives a (batch, dim) output; a fully convolutional net keeps NCHW."""
    return any(layer.kind == "fc" for layer in layers)
