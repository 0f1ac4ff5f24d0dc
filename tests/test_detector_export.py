"""Face detector export (export/detector.py): INT8 QDQ on real fixture faces, FP16 reference,
the recall gate, and the TensorRT build plan for the dynamic pyramid input.

Recall and IoU on the full data sets are in benchmarks/detector_export.md; here the fixture
faces (tests/fixtures: LFW, AT&T, GRID excerpts) only check that the machinery holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from packaging.version import Version

from edge_runtime.bundle import load_manifest
from edge_runtime.cpu_int8 import int8_dot_features
from edge_runtime.errors import ModelError
from export.detector import (
    DETECTOR,
    PROFILE,
    ImageCounts,
    compare,
    detector_images,
    export_detector,
    fp16_reference_graph,
    gate_variant,
    mmod_config,
    pyramids,
    quantize_detector,
    register_detector,
    run_boxes,
)
from export.pipeline import model_recipe
from export.qdq_reference import reference_graph
from export.quantize import get_target
from export.stages import ExportOptions, Stages

MODELS = Path(__file__).resolve().parents[1] / "models"
FP32 = MODELS / "face_detector.onnx"
SMALL = ImageCounts(calib_lfw=6, calib_att=2, calib_grid=2, gate_lfw=8, gate_att=4, gate_grid=4)


@pytest.fixture(scope="module")
def images(fixtures):
    return detector_images(fixtures, "calib", SMALL), detector_images(fixtures, "gate", SMALL)


@pytest.fixture(scope="module")
def int8(images, tmp_path_factory):
    target = get_target("orin")
    opts = ExportOptions(target="orin", models=MODELS, out=Path("."), cache_dir=Path("."))
    out = tmp_path_factory.mktemp("det") / "face_detector.int8.onnx"
    return quantize_detector(FP32, images[0], out, target, model_recipe(opts, DETECTOR, target))


def test_calibration_and_gate_images_are_real_and_disjoint(images):
    calib, gate = images
    assert len(calib) >= 6 and len(gate) >= 8
    names_c, names_g = {n for n, _, _ in calib}, {n for n, _, _ in gate}
    assert not names_c & names_g
    lfw_ids = lambda items: {Path(n).parent.name for n, _, _ in items if n.endswith(".jpg")}  # noqa: E731
    assert not lfw_ids(calib) & lfw_ids(gate)
    assert all(img.dtype == np.uint8 and img.std() > 10 for _, img, _ in calib)  # not blank


def test_int8_is_qdq_ort_runs_it_and_boxes_match_fp32(images, int8, tmp_path):
    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 7 and "DequantizeLinear" in ops
    # the score map stays float (a quantized score ties neighbouring windows)
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer["score"].op_type == "Conv"
    cfg = mmod_config(FP32)
    gate = images[1]
    inputs = pyramids(gate, cfg)
    ref = run_boxes(FP32, inputs, cfg)
    # the graph's own arithmetic (exactly rounded int8, int32 sums: what TensorRT computes and
    # what the export gate measures, export.qdq_reference) ...
    exact = compare(gate, ref, run_boxes(reference_graph(int8, tmp_path / "exact.onnx"), inputs, cfg))
    assert exact["fp32_boxes"] >= len(gate) - 1
    assert exact["box_recall"] == 1.0 and exact["recall"] == exact["recall_fp32"]
    assert exact["mean_iou"] >= 0.9, exact
    # ... and onnxruntime's own fused int8 kernels. Without an int8 dot-product instruction
    # (VNNI) they sum u8 x s8 pairs in saturating int16, so the boxes move (mean IoU 0.87 on an
    # AVX2-only EPYC here, 0.9+ with VNNI); the runtime then keeps CPU models in FP32
    # (edge_runtime.cpu_int8), but the faces must still all be found.
    res = compare(gate, ref, run_boxes(int8, inputs, cfg))
    assert res["box_recall"] == 1.0 and res["recall"] == res["recall_fp32"]
    if int8_dot_features():
        assert res["mean_iou"] >= 0.9, res
    else:
        assert res["mean_iou"] >= 0.8, res


def test_fp16_reference_rounds_but_keeps_boxes(images, tmp_path):
    fp16 = fp16_reference_graph(FP32, tmp_path / "fp16.onnx")
    x = pyramids(images[1][:1], mmod_config(FP32))[0][0]
    a = ort.InferenceSession(str(FP32)).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(fp16)).run(None, {"image": x})[0]
    err = np.abs(a - b).max()
    assert 0 < err < 0.05 * np.abs(a).max()  # rounded (not identical), but close
    assert gate_variant(FP32, fp16, images[1])["ok"]


def test_gate_refuses_a_broken_detector(images, tmp_path):
    model = onnx.load(str(FP32))
    last = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    inits = {i.name: i for i in model.graph.initializer}
    bias = inits[last.input[2]]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) - 3.0, bias.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    res = gate_variant(FP32, broken, images[1])
    assert not res["ok"]
    assert res["recall"] < res["recall_fp32"]
    assert any("recall" in f for f in res["failures"])
    # boxes shifted by a quarter of their width: recall holds, the IoU limit does not
    ref = [[(10, 10, 90, 90)]] * 3
    shifted = [[(30, 10, 110, 90)]] * 3
    imgs = [("x", np.zeros((100, 120, 3), np.uint8), False)] * 3
    res = compare(imgs, ref, shifted)
    assert not res["ok"] and any("IoU" in f for f in res["failures"])


def test_export_detector_registers_a_passing_int8_and_needs_real_data(fixtures, tmp_path):
    target = get_target("orin")
    opts = ExportOptions(target="orin", models=MODELS, out=tmp_path, cache_dir=tmp_path,
                         data_detector=fixtures, threads=1, quiet=True)
    st = Stages(True)
    rep = export_detector(opts, target, st, model_recipe(opts, DETECTOR, target), counts=SMALL)
    assert rep["gate"]["fp16"]["images"] == len(detector_images(fixtures, "gate", SMALL))
    register_detector(tmp_path, rep, target)
    entries = load_manifest(tmp_path)
    assert entries[DETECTOR].sha256 == load_manifest(MODELS)[DETECTOR].sha256
    if rep["gate"]["int8"]["ok"]:
        assert entries[f"{DETECTOR}_int8"].meta["gate"]["box_recall"] >= 0.99
    else:  # a rejected file is kept under its own name and never registered
        assert f"{DETECTOR}_int8" not in entries
        assert Path(rep["int8"]["path"]).name == f"{DETECTOR}.int8.rejected.onnx"
    no_data = ExportOptions(target="orin", models=MODELS, out=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ModelError, match="real face images"):
        export_detector(no_data, target, st, model_recipe(no_data, DETECTOR, target))


def test_engine_plan_has_a_dynamic_pyramid_profile(tmp_path):
    from export.device_build import detector_specs
    from export.trt_script import trtexec_args

    fp32, int8 = tmp_path / "face_detector.onnx", tmp_path / "face_detector.int8.onnx"
    specs = dict(detector_specs(get_target("orin"), fp32, int8, tmp_path, Version("10.3.0")))
    assert set(specs) == {"gpu", "fp16"}
    args = trtexec_args(specs["gpu"], trt_version="10.3")
    assert "--stronglyTyped" in args
    assert "--minShapes=image:1x3x96x96" in args and "--optShapes=image:1x3x921x342" in args
    assert "--maxShapes=image:1x3x1206x342" in args
    lo, opt, hi = PROFILE["image"]
    assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
    fp16 = trtexec_args(specs["fp16"], trt_version="8.5")
    assert "--fp16" in fp16 and "--stronglyTyped" not in fp16
    # TensorRT 11 has no weak typing: only the INT8 QDQ engine; no INT8 file: only FP16
    assert [v for v, _ in detector_specs(get_target("orin"), fp32, int8, tmp_path,
                                         Version("11.0"))] == ["gpu"]
    assert [v for v, _ in detector_specs(get_target("orin"), fp32, None, tmp_path,
                                         Version("10.3"))] == ["fp16"]


@pytest.mark.gpu
def test_detector_engine_builds_and_matches_onnxruntime(images, int8, tmp_path):
    trt = pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine or a Jetson)")
    from edge_runtime.backends import EngineFromPath, TrtRunner
    from edge_runtime.backends.cuda import load_cudart
    from edge_runtime.engine_meta import current_key, write_sidecar
    from edge_runtime.errors import DependencyError
    from edge_runtime.frontend.face_cnn import decode
    from export.tensorrt_build import BuildSpec, TrtApi

    try:
        load_cudart()
    except DependencyError as exc:
        pytest.skip(str(exc))
    version = Version(trt.__version__)
    cfg = mmod_config(FP32)
    gate = images[1]
    inputs = pyramids(gate, cfg)
    ref = run_boxes(FP32, inputs, cfg)
    variants = [("int8-qdq", int8)] + ([("fp16", FP32)] if version.major < 11 else [])
    for precision, onnx_path in variants:
        spec = BuildSpec(onnx_path, precision, PROFILE, workspace_mb=512,
                         strongly_typed=False if precision == "fp16" and version.major == 10
                         else None)
        engine = tmp_path / f"det.{precision}.engine"
        engine.write_bytes(TrtApi(version).build(spec))
        key = current_key(onnx_path, precision=precision, profiles=PROFILE)
        write_sidecar(engine, key, target="gpu")
        got = []
        with TrtRunner(EngineFromPath(engine, key)) as runner:  # pyramids of several sizes
            for x, rects, scale in inputs:
                s = runner.run({"image": x})["score"]
                got.append([tuple(v / scale for v in b) for b, _ in decode(s, rects, cfg)])
        res = compare(gate, ref, got)
        assert res["ok"], (precision, res)
