"""Real TensorRT on a workstation GPU: quantize the tiny model here, build, run through TrtRunner.

Needs an NVIDIA GPU with tensorrt and cuda-python, and the export stack (torch, onnx) to make
the tiny QDQ model; skipped, with the reason, wherever one is missing (a device install has no
torch/onnx: it runs tests/test_backends_gpu.py on the bundled models instead). Imports that
need any of these happen inside the fixtures, so this file always collects.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt(gpu_tensorrt):
    trt = gpu_tensorrt
    pytest.importorskip("torch", reason="the tiny model is exported from torch (train extra)")
    pytest.importorskip("onnx", reason="quantizing needs onnx (export extra)")
    return trt


def test_qdq_engine_matches_onnxruntime_through_trt_runner(trt, tmp_path):
    from export_tiny_models import export_face, face_inputs
    from packaging.version import Version

    from edge_runtime.backends import EngineFromPath, TrtRunner, load_runner
    from edge_runtime.engine_meta import check_engine, current_key, write_sidecar
    from export.quantize import TARGETS, quantize_qdq
    from export.tensorrt_build import BuildSpec, TrtApi

    version = Version(trt.__version__)
    # TensorRT 8.x's ONNX parser rejects int8 weights (DequantizeLinear of an int8
    # initializer): quantize for a target whose QDQ keeps float weights behind Q->DQ there.
    target = "gpu" if version.major >= 10 else "xavier"
    if version.major < 10 and TARGETS[target].int8_weights:
        pytest.skip(f"TensorRT {version} cannot parse int8-weight QDQ (target {target})")
    fp32 = export_face(tmp_path / "face.onnx")
    qdq = quantize_qdq(fp32, face_inputs(256), tmp_path / "face.int8.onnx", target=target)
    profiles = {"face": ((1, 3, 24, 24), (8, 3, 24, 24), (8, 3, 24, 24))}
    spec = BuildSpec(onnx=qdq, precision="int8-qdq", profiles=profiles, workspace_mb=256,
                     timing_cache=tmp_path / "timing.cache")
    engine = tmp_path / "tensorrt" / "gpu" / "face.int8.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(TrtApi(trt.__version__).build(spec))
    assert (tmp_path / "timing.cache").stat().st_size > 0
    key = current_key(qdq, precision="int8-qdq", profiles=profiles)
    write_sidecar(engine, key, target="gpu")
    check_engine(engine, key)

    x = face_inputs(13, seed=21)["face"]  # 13 > profile max 8: split in two
    with load_runner(qdq, backend="onnxruntime") as ort:
        ref = ort.run({"face": x})["embedding"]
    with TrtRunner(EngineFromPath(engine, key)) as runner:
        got = runner.run({"face": x})["embedding"]
        assert runner.describe()["precision"] == "int8-qdq"
    cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99, cos
