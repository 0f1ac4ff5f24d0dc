"""On-device acceptance: a real TensorRT engine built from the tiny ONNX agrees with onnxruntime.

Needs an NVIDIA GPU with TensorRT and cuda-python; skipped with the reason anywhere else
(including this CI machine). Run on the Jetson: ``python -m pytest -q -m gpu tests/``.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_backends import FACES, tiny_onnx

from edge_runtime.backends import EngineFromPath, TrtRunner, load_runner
from edge_runtime.engine_meta import current_key, write_sidecar
from edge_runtime.errors import ModelError

pytestmark = pytest.mark.gpu

PROFILES = {"face": ((1, 4), (4, 4), (8, 4))}


@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU stack here)")
    try:
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        pytest.importorskip("cuda.cudart", reason="cuda-python is not installed")
    from edge_runtime.engine_meta import probe_cuda_device

    try:
        probe_cuda_device()
    except ModelError as exc:
        pytest.skip(f"no usable NVIDIA GPU: {exc}")
    return trt


@pytest.fixture(scope="module")
def built(trt, tmp_path_factory):
    from export.tensorrt_build import BuildSpec, TrtApi

    root = tmp_path_factory.mktemp("trt")
    onnx_path = tiny_onnx(root / "face.onnx")
    engine = root / "model.engine"
    engine.write_bytes(TrtApi(trt.__version__).build(
        BuildSpec(onnx=onnx_path, precision="fp32", profiles=PROFILES)))
    key = current_key(onnx_path, precision="fp32", profiles=PROFILES)
    write_sidecar(engine, key, target="gpu")
    return onnx_path, engine, key


def _apis(version):
    from packaging.version import Version

    v = Version(version)
    # 8.5 .. 9.x have both APIs: check the tensor API there too, not only the chosen one.
    return ["auto", "tensors"] if Version("8.5") <= v < Version("10") else ["auto"]


def test_engine_matches_onnxruntime(trt, built):
    onnx_path, engine, key = built
    faces = np.random.default_rng(7).standard_normal((8, 4)).astype(np.float32)
    reference = load_runner(onnx_path).run({"face": faces})["embedding"]
    for api in _apis(trt.__version__):
        with TrtRunner(EngineFromPath(engine, key), api=api,
                       expect_inputs={"face": np.float32}) as runner:
            for n in (1, 5, 8):  # several batch sizes through buffers allocated once
                emb = runner.run({"face": faces[:n]})["embedding"]
                want = reference[:n]
                cos = np.sum(emb * want, axis=1) / (
                    np.linalg.norm(emb, axis=1) * np.linalg.norm(want, axis=1))
                assert cos.min() >= 0.999, (api, n, cos)


def test_load_runner_checks_engine_against_machine(trt, built):
    _, engine, _ = built
    with load_runner(engine) as runner:  # no key: the sidecar is checked against this GPU
        assert runner.describe()["backend"] == "tensorrt"
        assert runner.run({"face": FACES})["embedding"].shape == (5, 3)
