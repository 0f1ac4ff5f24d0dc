"""INT8 QDQ quantization of the tiny students: placement, lint, agreement, gate, sensitivity.

The tiny models have random weights and the inputs are synthetic: these tests check the
toolkit's mechanics (where Q/DQ go, that the graph stays close to FP32), not accuracy.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from export_tiny_models import export_faa, export_face, faa_inputs, face_inputs
from onnx import numpy_helper

from edge_runtime.errors import ConfigError, ModelError
from export.accuracy import embedding_agreement, gate, sensitivity_report
from export.qdq_lint import lint_qdq
from export.quantize import DEFAULT_EXCLUDED, TARGETS, get_target, quantize_qdq


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    face = export_face(d / "face.onnx")
    faa = export_faa(d / "faa.onnx")
    return {
        "dir": d,
        "face": face,
        "face_q": quantize_qdq(face, face_inputs(160), d / "face.int8.onnx", target="xavier"),
        "faa": faa,
        "faa_q": quantize_qdq(faa, faa_inputs(160), d / "faa.int8.onnx", target="orin"),
    }


def _graph(path):
    g = onnx.load(str(path)).graph
    return g, {o: n for n in g.node for o in n.output}, {i.name for i in g.initializer}


def test_modelopt_style_placement_every_conv_and_gemm_reads_dq(models):
    graph, producer, inits = _graph(models["face_q"])
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == 4  # 3 Conv + 1 Gemm in TinyFace (BN folded)
    for node in weighted:
        x, w = producer[node.input[0]], producer[node.input[1]]
        assert x.op_type == "DequantizeLinear", f"{node.name} input not quantized"
        assert w.op_type == "DequantizeLinear", f"{node.name} weight not quantized"
        # TensorRT form: weight is a float initializer behind its own Q -> DQ pair
        q = producer[w.input[0]]
        assert q.op_type == "QuantizeLinear" and q.input[0] in inits
        if len(node.input) > 2 and node.input[2]:
            assert node.input[2] in inits  # bias stays float, no DQ


def test_scales_are_symmetric_int8_and_per_channel(models):
    graph, producer, inits = _graph(models["face_q"])
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = consts[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
    conv = next(n for n in graph.node if n.op_type == "Conv")
    wdq = producer[conv.input[1]]
    assert consts[wdq.input[1]].shape == (16,)  # one scale per output channel
    assert any(a.name == "axis" and a.i == 0 for a in wdq.attribute)


def test_excluded_ops_stay_float(models):
    for key in ("face_q", "faa_q"):
        graph, producer, _ = _graph(models[key])
        checked = 0
        for node in graph.node:
            if node.op_type in DEFAULT_EXCLUDED:
                checked += 1
                for name in node.input:
                    p = producer.get(name)
                    assert p is None or p.op_type not in ("QuantizeLinear", "DequantizeLinear")
        assert checked >= 2  # Div+ReduceL2 (face), Softmax+LayerNorm+Sigmoid (faa)


def test_quantized_graphs_pass_lint_and_drop_unused_opsets(models):
    for key, target in (("face_q", "xavier"), ("faa_q", "orin")):
        report = lint_qdq(models[key], max_opset=get_target(target).max_opset,
                          excluded_op_types=DEFAULT_EXCLUDED)
        assert report.ok, report.errors
        assert report.n_quantize > 5 and report.n_dequantize >= report.n_quantize
        domains = {o.domain for o in onnx.load(str(models[key])).opset_import}
        assert domains <= {"", "ai.onnx"}


def test_int8_embeddings_agree_with_fp32(models):
    agree = embedding_agreement(models["face"], models["face_q"], face_inputs(200, seed=9))
    assert agree["n"] == 200
    assert agree["cos_min"] <= agree["cos_p1"] <= agree["cos_median"] <= 1.0
    assert agree["cos_p1"] > 0.98
    assert agree["abs_err_max"] > 0  # it really is a different (quantized) graph
    faa = embedding_agreement(models["faa"], models["faa_q"], faa_inputs(200, seed=9))
    assert faa["abs_err_max"] < 0.1  # match_prob: judged by absolute error


def test_gate_reports_margins():
    ok = gate({"cos_p1": 0.995}, 0.031, 0.033)
    assert ok.ok and not ok.failures
    bad = gate({"cos_p1": 0.975}, 0.031, 0.036)
    assert not bad.ok and len(bad.failures) == 2
    assert "short by 0.0150" in bad.failures[0]
    assert "rose 0.50 pt" in bad.failures[1] and "over by 0.20 pt" in bad.failures[1]
    assert gate({"cos_p1": 0.999}, 0.05, 0.03).ok  # EER improving is fine
    with pytest.raises(ConfigError, match="percent given"):
        gate({"cos_p1": 0.999}, 3.1, 3.3)


def test_sensitivity_report_ranks_op_types(models):
    rows = sensitivity_report(models["face"], face_inputs(96), face_inputs(64, seed=2),
                              ["Conv", "Gemm"])
    assert len(rows) == 2 and {r["op_type"] for r in rows} == {"Conv", "Gemm"}
    assert rows[0]["cos_p1"] <= rows[1]["cos_p1"]
    by_op = {r["op_type"]: r for r in rows}
    assert by_op["Conv"]["n_quantized"] == 3 and by_op["Gemm"]["n_quantized"] == 1
    assert all(r["cos_p1"] < 1.0 for r in rows)


def test_percentile_and_cpu_target(models, tmp_path):
    out = quantize_qdq(models["face"], face_inputs(96), tmp_path / "p.onnx", target="cpu",
                       calibrate_method="percentile")
    graph, producer, inits = _graph(out)
    conv = next(n for n in graph.node if n.op_type == "Conv")
    # CPU target: int8 weight initializer straight into DQ (no float copy kept)
    assert producer[conv.input[1]].input[0] in inits
    assert embedding_agreement(models["face"], out, face_inputs(64, seed=7))["cos_p1"] > 0.97


def test_bad_arguments(models, tmp_path):
    with pytest.raises(ConfigError, match="unknown target"):
        quantize_qdq(models["face"], face_inputs(8), tmp_path / "x.onnx", target="tx2")
    with pytest.raises(ConfigError, match="calibrate_method"):
        quantize_qdq(models["face"], face_inputs(8), tmp_path / "x.onnx", target="cpu",
                     calibrate_method="kl")
    with pytest.raises(ModelError, match="does not exist"):
        quantize_qdq(tmp_path / "none.onnx", face_inputs(8), tmp_path / "x.onnx", target="cpu")
    with pytest.raises(ModelError, match="empty calibration"):
        quantize_qdq(models["face"], {}, tmp_path / "x.onnx", target="cpu")


def test_targets_table():
    assert set(TARGETS) == {"nano", "xavier", "orin", "gpu", "cpu"}
    assert TARGETS["nano"].tensorrt.startswith("8.2") and TARGETS["nano"].max_opset == 13
    assert "8.2" in TARGETS["nano"].notes and TARGETS["nano"].dla_cores == 0
    assert TARGETS["xavier"].tensorrt.startswith("8.5") and TARGETS["xavier"].max_opset == 17
    assert TARGETS["orin"].tensorrt.startswith("10.") and TARGETS["orin"].max_opset > 17
    for t in TARGETS.values():
        assert t.export_opset <= t.max_opset
    assert not TARGETS["cpu"].uses_tensorrt and TARGETS["xavier"].uses_tensorrt
    # pre-quantized int8 weights only where the parser takes them (TensorRT >= 10, ORT)
    from packaging.version import Version

    for t in TARGETS.values():
        if t.tensorrt is not None:
            assert t.int8_weights == (Version(t.tensorrt) >= Version("10"))
    assert TARGETS["cpu"].int8_weights and TARGETS["gpu"].int8_weights


def test_static_batch_graph_is_calibrated_at_its_batch(tmp_path):
    # DLA builds need static shapes: a batch-1 export must still quantize (ORT would fail
    # on 16-sample calibration batches).
    import torch
    from export_tiny_models import face_model

    from export.onnx_export import export_onnx

    static = export_onnx(face_model(), {"face": torch.zeros(1, 3, 24, 24)}, tmp_path / "s.onnx",
                         input_names=["face"], output_names=["embedding"], dynamic_axes=None,
                         opset=17)
    out = quantize_qdq(static, face_inputs(37), tmp_path / "s.int8.onnx", target="xavier")
    one = {"face": face_inputs(1, seed=4)["face"]}
    assert embedding_agreement(static, out, one)["cos_min"] > 0.98
