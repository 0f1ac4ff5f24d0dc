"""QDQ lint on hand-built graphs: one clean graph, then one defect at a time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import ModelError
from export.qdq_lint import lint_qdq, require_clean

EXCLUDED = ("Softmax", "Sigmoid")


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _conv_graph(path, *, act_zp=0, weight_scale=None, opset=17, drop_act_zp=False,
                bias_dq=False, tail=None, weight_axis=0):
    """X -> Q -> DQ -> Conv(W: float -> Q -> DQ, per-channel; float bias) -> [tail] -> Y."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(3, -1).max(1) / 127).astype(np.float32)
    if weight_scale is not None:
        w_scale = weight_scale
    inits = [
        _init("x_scale", np.float32(0.02)),
        _init("x_zp", np.asarray(act_zp, dtype=getattr(act_zp, "dtype", np.int8))),
        _init("W", w),
        _init("w_scale", w_scale),
        _init("w_zp", np.zeros(np.shape(w_scale), np.int8)),
        _init("B", np.zeros(3, np.float32)),
    ]
    zp_in = [] if drop_act_zp else ["x_zp"]
    w_attr = {"axis": weight_axis} if np.ndim(w_scale) == 1 else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["X", "x_scale", *zp_in], ["Xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["Xq", "x_scale", *zp_in], ["Xdq"], name="dq_x"),
        helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zp"], ["Wq"], name="q_w", **w_attr),
        helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["Wdq"], name="dq_w",
                         **w_attr),
    ]
    bias = "B"
    if bias_dq:
        inits += [_init("B32", np.zeros(3, np.int32)), _init("b_scale", np.float32(1e-4))]
        nodes.append(helper.make_node("DequantizeLinear", ["B32", "b_scale"], ["Bdq"], name="dq_b"))
        bias = "Bdq"
    conv_out = "Y" if tail is None else "C"
    nodes.append(helper.make_node("Conv", ["Xdq", "Wdq", bias], [conv_out], name="conv",
                                  pads=[1, 1, 1, 1]))
    if tail is not None:
        nodes += tail
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3, 4, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what torch exports at opset 17; onnxruntime rejects onnx's default
    onnx.save(model, str(path))
    return path


def _lint(path, max_opset=17):
    return lint_qdq(path, max_opset=max_opset, excluded_op_types=EXCLUDED)


def test_clean_graph_passes(tmp_path):
    path = _conv_graph(tmp_path / "ok.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"X": np.ones((1, 2, 4, 4), np.float32)})[0].shape == (1, 3, 4, 4)
    report = _lint(path)
    assert report.ok, report.errors
    assert (report.n_quantize, report.n_dequantize) == (2, 2)
    assert report.to_dict()["ok"] is True
    require_clean(report)  # does not raise


@pytest.mark.parametrize("kwargs, message", [
    ({"act_zp": np.uint8(0)}, "zero-point dtype uint8"),
    ({"act_zp": np.int8(3)}, "nonzero zero-point [3]"),
    ({"drop_act_zp": True}, "no zero-point, so the output is uint8"),
    ({"weight_scale": np.float32(0.01)}, "per-tensor weight scale"),
    ({"weight_axis": 1}, "expected axis 0 with 3 (output channels)"),
    ({"opset": 19}, "opset 19 exceeds the target's maximum 17"),
    ({"bias_dq": True}, "bias goes through DequantizeLinear"),
])
def test_each_defect_is_reported(tmp_path, kwargs, message):
    report = _lint(_conv_graph(tmp_path / "bad.onnx", **kwargs))
    assert not report.ok
    assert any(message in e for e in report.errors), report.errors
    with pytest.raises(ModelError, match="fails the TensorRT lint"):
        require_clean(report)


def test_qdq_before_excluded_softmax(tmp_path):
    tail = [
        helper.make_node("QuantizeLinear", ["C", "x_scale", "x_zp"], ["Cq"], name="q_c"),
        helper.make_node("DequantizeLinear", ["Cq", "x_scale", "x_zp"], ["Cdq"], name="dq_c"),
        helper.make_node("Softmax", ["Cdq"], ["Y"], name="softmax", axis=1),
    ]
    report = _lint(_conv_graph(tmp_path / "sm.onnx", tail=tail))
    assert ["Softmax 'softmax': excluded op type reads DequantizeLinear 'dq_c'; keep it in float"] \
        == report.errors
    tail[-1] = helper.make_node("Relu", ["Cdq"], ["Y"], name="relu")  # not excluded: fine
    assert _lint(_conv_graph(tmp_path / "relu.onnx", tail=tail)).ok


def test_per_axis_activation_scale(tmp_path):
    tail = [
        helper.make_node("Constant", [], ["cs"], value=numpy_helper.from_array(
            np.full(3, 0.1, np.float32))),
        helper.make_node("Constant", [], ["czp"], value=numpy_helper.from_array(
            np.zeros(3, np.int8))),
        helper.make_node("QuantizeLinear", ["C", "cs", "czp"], ["Cq"], name="q_c", axis=1),
        helper.make_node("DequantizeLinear", ["Cq", "cs", "czp"], ["Y"], name="dq_c", axis=1),
    ]
    report = _lint(_conv_graph(tmp_path / "pa.onnx", tail=tail))
    assert any("activation scale has 3 values" in e for e in report.errors), report.errors


def test_qlinear_and_integer_ops_are_rejected(tmp_path):
    inits = [_init(n, v) for n, v in [
        ("xs", np.float32(0.1)), ("xz", np.int8(0)), ("W", np.ones((1, 1, 1, 1), np.int8)),
        ("ws", np.float32(0.1)), ("wz", np.int8(0)), ("ys", np.float32(0.1)), ("yz", np.int8(0))]]
    nodes = [helper.make_node("QLinearConv", ["X", "xs", "xz", "W", "ws", "wz", "ys", "yz"],
                              ["Y"], name="qconv"),
             helper.make_node("MatMulInteger", ["Y", "Y"], ["Z"], name="mmi")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.INT8, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("Z", TensorProto.INT32, None)], initializer=inits)
    path = tmp_path / "ql.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    errors = _lint(path).errors
    assert any("QLinearConv 'qconv': integer operator" in e for e in errors)
    assert any("MatMulInteger 'mmi': integer operator" in e for e in errors)


def test_quantized_constant_operand_is_reported(tmp_path):
    tail = [
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
            np.full(3, 0.5, np.float32).reshape(1, 3, 1, 1))),
        helper.make_node("QuantizeLinear", ["k", "x_scale", "x_zp"], ["kq"], name="q_k"),
        helper.make_node("DequantizeLinear", ["kq", "x_scale", "x_zp"], ["kdq"], name="dq_k"),
        helper.make_node("Add", ["C", "kdq"], ["Y"], name="add"),
    ]
    report = _lint(_conv_graph(tmp_path / "k.onnx", tail=tail))
    assert any("constant quantized as input 1 of Add 'add'" in e for e in report.errors)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        _lint(tmp_path / "none.onnx")
