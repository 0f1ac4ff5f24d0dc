"""Inference backends: onnxruntime for real; the TensorRT runner against recorded fakes.

TensorRT and CUDA cannot run here (no GPU, not installed): the TensorRT tests use the fake
``tensorrt`` / cuda-python modules of tests/backends_fakes.py, which expose only the
documented API of each version, record the calls and really compute. The real engine run is
tests/test_backends_gpu.py (marked gpu).
"""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import onnx
import pytest
from backends_fakes import FakeCudart, FakeTrt, serialize_engine
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.backends import (
    EngineFromBytes,
    EngineFromPath,
    OnnxrtRunner,
    Runner,
    SessionFromOnnx,
    TensorSpec,
    TrtRunner,
    api_for_version,
    default_providers,
    load_runner,
)
from edge_runtime.backends.cuda import CudaError
from edge_runtime.engine_meta import EngineKey, write_sidecar
from edge_runtime.errors import DependencyError, ModelError

W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def tiny_onnx(path, *, qdq=False):
    """face (N x 4) -> embedding = L2-normalise(face @ W); optionally with a Q/DQ pair."""
    nodes, src = [], "face"
    inits = [numpy_helper.from_array(W, "W")]
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["face", "s", "z"], ["face_q"]),
                  helper.make_node("DequantizeLinear", ["face_q", "s", "z"], ["face_dq"])]
        src = "face_dq"
    nodes += [helper.make_node("MatMul", [src, "W"], ["proj"]),
              helper.make_node("LpNormalization", ["proj"], ["embedding"], axis=1, p=2)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference(x):
    y = x @ W
    return y / np.linalg.norm(y, axis=1, keepdims=True)


@pytest.fixture
def model_path(tmp_path):
    return tiny_onnx(tmp_path / "face.onnx")


FACES = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)


# --- onnxruntime ------------------------------------------------------------------------

def test_load_runner_runs_tiny_onnx(model_path):
    with load_runner(model_path, expect_inputs={"face": np.float32},
                     expect_outputs={"embedding": TensorSpec("embedding", np.float32, (-1, 3))}
                     ) as runner:
        assert isinstance(runner, Runner)
        assert runner.input_names == ["face"] and runner.output_names == ["embedding"]
        assert runner.input_shapes == {"face": (-1, 4)}
        out = runner.run({"face": FACES})["embedding"]
    assert out.dtype == np.float32 and out.shape == (5, 3)
    np.testing.assert_allclose(out, reference(FACES), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="closed"):
        runner.run({"face": FACES})


def test_session_options_and_describe(model_path):
    runner = OnnxrtRunner(SessionFromOnnx(model_path, threads=1))
    opts = runner.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    info = runner.describe()
    assert info["backend"] == "onnxruntime" and info["providers"][-1] == "CPUExecutionProvider"
    assert info["precision"] == "fp32" and info["model"] == str(model_path)
    assert info["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert OnnxrtRunner(SessionFromOnnx(tiny_onnx(model_path.with_name("q.onnx"), qdq=True))
                        ).describe()["precision"] == "int8-qdq"


def test_provider_order():
    assert default_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    every = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert default_providers(every) == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                        "CPUExecutionProvider"]


def test_absent_provider_is_an_error_not_a_silent_fallback(model_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(DependencyError, match="CUDAExecutionProvider"):
        load_runner(model_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


@pytest.mark.parametrize("expect, fragment", [
    ({"feats": np.float32}, "missing inputs \\['feats'\\]"),
    ({"face": np.float16}, "'face' is float32, expected float16"),
    ({"face": TensorSpec("face", np.float32, (-1, 3, 112, 112))}, "has shape \\[-1, 4\\]"),
])
def test_expected_io_mismatch_names_file(model_path, expect, fragment):
    with pytest.raises(ModelError, match=fragment) as err:
        load_runner(model_path, expect_inputs=expect)
    assert str(model_path) in str(err.value)


def test_expected_output_missing(model_path):
    with pytest.raises(ModelError, match="missing outputs \\['match_prob'\\]"):
        load_runner(model_path, expect_outputs={"match_prob": np.float32})


@pytest.mark.parametrize("feed, fragment", [
    ({"face": FACES.astype(np.float64)}, "'face' is float64, the model takes float32"),
    ({"face": np.zeros((2, 5), np.float32)}, "shape \\[2, 5\\]"),
    ({"face": np.zeros(4, np.float32)}, "shape \\[4\\]"),
    ({}, "missing \\['face'\\]"),
    ({"face": FACES, "voice": FACES}, "unknown \\['voice'\\]"),
])
def test_bad_feed_names_input(model_path, feed, fragment):
    runner = load_runner(model_path)
    with pytest.raises(ModelError, match=fragment):
        runner.run(feed)


def test_missing_corrupt_truncated_onnx(tmp_path, model_path):
    with pytest.raises(ModelError, match="does not exist") as err:
        load_runner(tmp_path / "nope.onnx")
    assert "nope.onnx" in str(err.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model" * 50)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_path.read_bytes()[:60])
    for bad in (garbage, truncated):
        with pytest.raises(ModelError, match="cannot be loaded") as err:
            load_runner(bad)
        assert str(bad) in str(err.value)


def test_backend_choice_by_file_type(tmp_path, model_path):
    with pytest.raises(ModelError, match="unknown model type '.bin'"):
        load_runner(tmp_path / "model.bin")
    with pytest.raises(ModelError, match="not runnable by tensorrt"):
        load_runner(model_path, backend="tensorrt")
    with pytest.raises(ModelError, match="not runnable by onnxruntime"):
        load_runner(tmp_path / "m.engine", backend="onnxruntime")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(DependencyError, match="m.plan needs TensorRT"):
            load_runner(tmp_path / "m.plan")


# --- TensorRT adapter (fake tensorrt / cuda-python: neither can run here) -----------------

@pytest.mark.parametrize("version, api", [("8.5.2.2", "bindings"), ("8.6.1", "bindings"),
                                          ("10.3.0", "tensors"), ("11.0.0", "tensors")])
def test_api_for_version(version, api):
    assert api_for_version(version) == api


def test_api_for_old_or_bad_version():
    for bad in ("7.1.3", "not-a-version"):
        with pytest.raises(ModelError):
            api_for_version(bad)


def fake_runner(version, cudart=None, max_batch=8):
    trt, rt = FakeTrt(version), cudart or FakeCudart()
    runner = TrtRunner(EngineFromBytes(serialize_engine(W, max_batch), trt_module=trt),
                       cuda_module=rt, expect_inputs={"face": np.float32})
    return runner, trt, rt


@pytest.mark.parametrize("version", ["10.3.0", "8.5.2.2"])
def test_trt_runner_output_matches_onnxruntime(version, model_path):
    runner, _, _ = fake_runner(version)
    assert isinstance(runner, Runner) and runner.input_shapes == {"face": (-1, 4)}
    ort_out = load_runner(model_path).run({"face": FACES})["embedding"]
    trt_out = runner.run({"face": FACES})["embedding"]
    assert trt_out.shape == (5, 3)
    np.testing.assert_allclose(trt_out, ort_out, rtol=1e-5, atol=1e-6)
    runner.close()


def test_trt10_uses_tensor_api(model_path):
    runner, trt, rt = fake_runner("10.3.0")
    assert runner.api == "tensors"
    names = trt.names()
    assert "get_tensor_profile_shape" in names and "get_profile_shape" not in names
    addresses = [c for c in trt.calls if c[0] == "set_tensor_address"]
    assert [c[1] for c in addresses] == ["face", "embedding"]
    runner.run({"face": FACES[:2]})
    runner.run({"face": FACES})
    assert ("set_input_shape", "face", (8, 4)) in trt.calls  # max shape, to size outputs
    assert ("set_input_shape", "face", (2, 4)) in trt.calls
    assert ("set_input_shape", "face", (5, 4)) in trt.calls
    stream = next(c[1] for c in rt.calls if c[0] == "cudaStreamSynchronize")
    assert [c for c in trt.calls if c[0] == "execute_async_v3"] == [("execute_async_v3", stream)] * 2
    assert [c[0] for c in trt.calls].count("set_tensor_address") == 2  # once: buffers never move
    assert not any(c[0].startswith(("set_binding", "execute_async_v2")) for c in trt.calls)


def test_trt85_uses_binding_api():
    runner, trt, rt = fake_runner("8.5.2.2")
    assert runner.api == "bindings"
    runner.run({"face": FACES[:3]})
    names = trt.names()
    assert "get_profile_shape" in names and "get_tensor_profile_shape" not in names
    assert ("set_binding_shape", 0, (8, 4)) in trt.calls
    assert ("set_binding_shape", 0, (3, 4)) in trt.calls
    (call,) = [c for c in trt.calls if c[0] == "execute_async_v2"]
    device = [c[2] for c in rt.calls if c[0] == "cudaMalloc"]  # face, then embedding
    assert call[1] == device and len(device) == 2 and all(device)
    assert not any(n in names for n in ("set_input_shape", "set_tensor_address",
                                        "execute_async_v3"))


def test_buffers_allocated_once_at_max_profile_shape():
    runner, _, rt = fake_runner("10.3.0", max_batch=8)
    for n in (1, 3, 8, 2):
        x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        np.testing.assert_allclose(runner.run({"face": x})["embedding"], reference(x),
                                   rtol=1e-5, atol=1e-6)
    assert rt.sizes("cudaMalloc") == [8 * 4 * 4, 8 * 3 * 4]  # face, embedding at batch 8
    assert rt.sizes("cudaMallocHost") == [8 * 4 * 4, 8 * 3 * 4]
    assert rt.count("cudaStreamCreate") == 1
    copies = [c for c in rt.calls if c[0] == "cudaMemcpyAsync"]
    assert [c[2] for c in copies[:2]] == [1 * 4 * 4, 1 * 3 * 4]  # actual bytes, not max
    assert {c[3] for c in copies} == rt.streams  # every copy on the runner's one stream
    runner.close()
    assert rt.live == {} and rt.streams == set()
    assert rt.count("cudaFree") == 2 and rt.count("cudaFreeHost") == 2


def test_input_outside_profile_is_refused():
    runner, trt, _ = fake_runner("10.3.0", max_batch=4)
    with pytest.raises(ModelError, match="outside the engine profile min \\[1, 4\\] max \\[4, 4\\]"):
        runner.run({"face": np.zeros((0, 4), np.float32)})
    with pytest.raises(ModelError, match="float64"):
        runner.run({"face": np.zeros((2, 4), np.float64)})


def test_batch_above_the_profile_maximum_runs_in_chunks():
    """19 crops through a max-8 profile: 8 + 8 + 3, outputs in order (raised before)."""
    runner, trt, _ = fake_runner("10.3.0", max_batch=8)
    assert runner.max_batch() == 8
    x = np.random.default_rng(3).standard_normal((19, 4)).astype(np.float32)
    np.testing.assert_allclose(runner.run({"face": x})["embedding"], reference(x),
                               rtol=1e-5, atol=1e-6)
    shapes = [c[2] for c in trt.calls if c[0] == "set_input_shape"][1:]  # [0]: max at setup
    assert shapes == [(8, 4), (8, 4), (3, 4)]
    assert [c[0] for c in trt.calls].count("execute_async_v3") == 3
    runner85, trt85, _ = fake_runner("8.5.2.2", max_batch=4)  # the binding API too
    np.testing.assert_allclose(runner85.run({"face": x[:9]})["embedding"], reference(x[:9]),
                               rtol=1e-5, atol=1e-6)
    assert [c[0] for c in trt85.calls].count("execute_async_v2") == 3


def test_cuda_handle_is_the_handle_not_the_wrappers_address():
    """cuda-python: int(obj) is the handle, obj.getPtr() the address of it (never wanted)."""
    from edge_runtime.backends.cuda import handle

    class Stream:  # like cuda.bindings.runtime.cudaStream_t
        def __int__(self):
            return 0x7F00

        def getPtr(self):  # noqa: N802 - cuda-python's name
            return 0x5555

    class OnlyPtr:
        def getPtr(self):  # noqa: N802
            return 0x5555

    class Protocol:
        def __cuda_stream__(self):
            return (0, 0x7F01)

    assert handle(Stream()) == 0x7F00 and handle(Protocol()) == 0x7F01 and handle(5) == 5
    with pytest.raises(CudaError, match="not the handle"):
        handle(OnlyPtr())


def test_failed_cuda_call_names_call_and_frees_what_was_allocated():
    rt = FakeCudart(fail={"cudaMalloc": 2})
    with pytest.raises(CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        fake_runner("10.3.0", cudart=rt)
    assert rt.live == {} and rt.streams == set()
    runner, _, rt = fake_runner("10.3.0", cudart=FakeCudart(fail={"cudaMemcpyAsync": 1}))
    with pytest.raises(CudaError, match="cudaMemcpyAsync failed: cudaErrorInvalidValue"):
        runner.run({"face": FACES})
    assert isinstance(CudaError("x"), ModelError)


def test_forced_api_must_exist_on_engine():
    trt = FakeTrt("8.5.2.2")
    with pytest.raises(ModelError, match="no num_io_tensors"):
        TrtRunner(EngineFromBytes(serialize_engine(W, 4), trt_module=trt),
                  cuda_module=FakeCudart(), api="tensors")


def test_corrupt_engine_bytes():
    with pytest.raises(ModelError, match="could not be deserialized by TensorRT 10.3.0"):
        EngineFromBytes(b"\x00garbage", trt_module=FakeTrt("10.3.0"), name="x.engine")()


def key(**changes):
    base = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="Orin",
                compute_capability="8.7", jetpack="R36.3", precision="int8-qdq",
                profiles={"face": [(1, 4), (4, 4), (8, 4)]})
    return EngineKey(**{**base, **changes})


def test_engine_from_path_refuses_stale_engine(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(serialize_engine(W, 8))
    write_sidecar(engine, key(trt_version="8.5.2", gpu_name="Xavier", compute_capability="7.2"),
                  target="xavier")
    trt = FakeTrt("10.3.0")
    with pytest.raises(ModelError) as err:
        EngineFromPath(engine, key(), trt_module=trt)()
    msg = str(err.value)
    assert str(engine) in msg and "TensorRT: engine built with 8.5.2" in msg
    assert "GPU: engine has Xavier, expected Orin" in msg
    assert "Rebuild with: edgepin export --target xavier" in msg
    assert "deserialize_cuda_engine" not in trt.names()  # refused before TensorRT sees it


def test_engine_from_path_accepts_matching_engine(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(serialize_engine(W, 8))
    write_sidecar(engine, key(), target="orin")
    trt = FakeTrt("10.3.1")  # same major.minor: compatible
    runner = TrtRunner(EngineFromPath(engine, key(), trt_module=trt), cuda_module=FakeCudart())
    np.testing.assert_allclose(runner.run({"face": FACES})["embedding"], reference(FACES),
                               rtol=1e-5, atol=1e-6)
    info = runner.describe()
    assert info["backend"] == "tensorrt" and info["precision"] == "int8-qdq"
    assert info["api"] == "tensors" and info["max_shapes"] == {"face": [8, 4]}
    assert info["sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    with runner:
        pass
    with pytest.raises(ModelError, match="closed"):
        runner.run({"face": FACES})
    engine.write_bytes(serialize_engine(W * 2, 8))  # changed after its sidecar was written
    with pytest.raises(ModelError, match="engine file changed"):
        EngineFromPath(engine, key(), trt_module=trt)()
