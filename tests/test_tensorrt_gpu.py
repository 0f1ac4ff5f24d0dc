"""Real TensorRT: build the tiny QDQ model into an engine, run it, compare with onnxruntime.

Needs an NVIDIA GPU (or a Jetson) with the tensorrt and cuda-python packages; skipped, with
the reason, everywhere else.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from export_tiny_models import export_face, face_inputs

from edge_runtime.engine_meta import check_engine, current_key, write_sidecar
from export.tensorrt_build import BuildSpec, TrtApi

pytestmark = pytest.mark.gpu

trt = pytest.importorskip(
    "tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine or a Jetson)"
)


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            pytest.skip("cuda-python is not installed")
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        pytest.skip(f"no CUDA device ({err})")
    return cudart


def _ok(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    assert int(err) == 0, f"CUDA call failed: {err}"
    return rest[0] if len(rest) == 1 else rest


def _run_engine(engine_bytes: bytes, x: np.ndarray) -> np.ndarray:
    cudart = _cudart()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    assert context.set_input_shape("face", x.shape)
    out_shape = tuple(context.get_tensor_shape("embedding"))
    y = np.empty(out_shape, np.float32)
    d_x = _ok(cudart.cudaMalloc(x.nbytes))
    d_y = _ok(cudart.cudaMalloc(y.nbytes))
    stream = _ok(cudart.cudaStreamCreate())
    try:
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _ok(cudart.cudaMemcpy(d_x, x.ctypes.data, x.nbytes, h2d))
        assert context.set_tensor_address("face", int(d_x))
        assert context.set_tensor_address("embedding", int(d_y))
        assert context.execute_async_v3(int(stream))
        _ok(cudart.cudaStreamSynchronize(stream))
        _ok(cudart.cudaMemcpy(y.ctypes.data, d_y, y.nbytes, d2h))
    finally:
        cudart.cudaFree(d_x)
        cudart.cudaFree(d_y)
        cudart.cudaStreamDestroy(stream)
    return y


def test_qdq_engine_matches_onnxruntime(tmp_path):
    from export.quantize import quantize_qdq

    api = TrtApi(trt.__version__)
    if "execute_async_v3" not in api.runtime_calls():
        pytest.skip(f"TensorRT {trt.__version__} predates execute_async_v3 (8.5)")
    fp32 = export_face(tmp_path / "face.onnx")
    qdq = quantize_qdq(fp32, face_inputs(256), tmp_path / "face.int8.onnx", target="gpu")
    profiles = {"face": ((1, 3, 24, 24), (8, 3, 24, 24), (8, 3, 24, 24))}
    spec = BuildSpec(onnx=qdq, precision="int8-qdq", profiles=profiles, workspace_mb=256,
                     timing_cache=tmp_path / "timing.cache")
    engine_bytes = api.build(spec)
    assert (tmp_path / "timing.cache").stat().st_size > 0

    x = face_inputs(8, seed=21)["face"]
    got = _run_engine(engine_bytes, x)
    ref = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).run(None, {"face": x})[0]
    cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99, cos

    engine = tmp_path / "model.engine"
    engine.write_bytes(engine_bytes)
    key = current_key(qdq, precision="int8-qdq", profiles=profiles)
    write_sidecar(engine, key, target="gpu")
    check_engine(engine, key)
