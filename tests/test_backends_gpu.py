"""On-device acceptance: real engines of the bundled models through TrtRunner and ModelBundle.

Needs an NVIDIA GPU (a Jetson) with TensorRT and cuda-python; skipped, with the reason,
everywhere else. Runs in the DEVICE install (no torch, no onnx): the engines are built by
TensorRT's own ONNX parser from ``models/``, in the layout the export writes
(``<dir>/tensorrt/gpu/<model>.<variant>.engine`` + sidecar), and compared with onnxruntime.
``python -m pytest -q -m gpu`` on the device (docs/jetson.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import ModelError

pytestmark = pytest.mark.gpu

MODELS = Path(__file__).resolve().parents[1] / "models"
BATCH_MAX = {"face": 8, "voice": 16}  # the export's profiles (export.device_build.BATCH)


@pytest.fixture(scope="module")
def trt(gpu_tensorrt):
    trt = gpu_tensorrt
    if not (MODELS / "manifest.json").is_file():
        pytest.skip(f"no models bundle at {MODELS}")
    return trt


def _profiles(onnx_path: Path, model: str) -> dict[str, tuple]:
    """(min, opt, max) of the single input, per-sample shape read by onnxruntime."""
    from edge_runtime.backends import load_runner

    with load_runner(onnx_path, backend="onnxruntime") as runner:
        (name, shape), = runner.input_shapes.items()
    sample = tuple(int(d) for d in shape[1:])
    assert all(d > 0 for d in sample), (onnx_path, shape)
    hi = BATCH_MAX[model]
    return {name: ((1, *sample), (min(4, hi), *sample), (hi, *sample))}


def _build(trt, onnx_path: Path, model: str, precision: str, out: Path) -> Path:
    """One engine + sidecar where the export puts them: out/tensorrt/gpu/<model>.<p>.engine."""
    from edge_runtime.engine_meta import current_key, write_sidecar
    from export.tensorrt_build import BuildSpec, TrtApi

    profiles = _profiles(onnx_path, model)
    engine = out / "tensorrt" / "gpu" / f"{model}.{precision}.engine"
    engine.parent.mkdir(parents=True, exist_ok=True)
    spec = BuildSpec(onnx=onnx_path, precision=precision, profiles=profiles, workspace_mb=1024)
    engine.write_bytes(TrtApi(trt.__version__).build(spec))
    write_sidecar(engine, current_key(onnx_path, precision=precision, profiles=profiles),
                  target="gpu")
    return engine


def _int8_skip(trt) -> None:
    from packaging.version import Version

    from edge_runtime.bundle import load_manifest

    target = load_manifest(MODELS)["face_int8"].meta.get("target")
    if Version(trt.__version__).major < 10 and target in ("orin", "gpu"):
        pytest.skip(f"models/*.int8.onnx are QDQ with int8 weights (target {target}); the "
                    f"TensorRT {trt.__version__} ONNX parser rejects int8-weight QDQ")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def engines(trt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    for model in ("face", "voice"):
        _build(trt, MODELS / f"{model}.onnx", model, "fp32", out)
    return out


def test_trt_runner_matches_onnxruntime_and_splits_big_batches(trt, engines):
    from edge_runtime.backends import EngineFromPath, TrtRunner, load_runner

    face = np.random.default_rng(7).uniform(-1, 1, (20, 3, 112, 112)).astype(np.float32)
    with load_runner(MODELS / "face.onnx", backend="onnxruntime") as ort:
        want = ort.run({"face": face})["embedding"]
    path = engines / "tensorrt" / "gpu" / "face.fp32.engine"
    with TrtRunner(EngineFromPath(path)) as runner:  # sidecar checked against this machine
        assert runner.max_batch() == 8
        for n in (1, 5, 8, 20):  # 20 > profile max 8: three chunks
            got = runner.run({"face": face[:n]})["embedding"]
            assert got.shape == want[:n].shape and _cos(got, want[:n]).min() >= 0.999, n
        info = runner.describe()
    assert info["backend"] == "tensorrt" and info["precision"] == "fp32"


def test_model_bundle_tensorrt_matches_onnxruntime(trt, engines):
    from edge_runtime.models import ModelBundle

    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(11)]
    speech = (0.1 * rng.standard_normal(16000 * 20)).astype(np.float32)  # 20 s: > 16 windows
    with ModelBundle.load(MODELS, precision="fp32", backend="onnxruntime") as ref, \
            ModelBundle.load(MODELS, precision="fp32", backend="tensorrt",
                             engines=engines / "tensorrt") as bundle:
        assert set(bundle.engines) == {"face", "voice"}
        assert _cos(bundle.embed_faces(crops), ref.embed_faces(crops)).min() >= 0.999
        assert float(_cos(bundle.embed_voice(speech), ref.embed_voice(speech))) >= 0.999
        if bundle.cross_modal:  # heads run on onnxruntime by design
            f, v = ref.embed_faces(crops[:1])[0], ref.embed_voice(speech)
            assert bundle.cross_scores(f, v) == pytest.approx(ref.cross_scores(f, v), abs=1e-5)
    with pytest.raises(ModelError, match="none is int8-qdq|no TensorRT engine"):
        ModelBundle.load(MODELS, precision="int8", backend="tensorrt", engines=engines)


def test_int8_engines_through_trt_runner_and_bundle(trt, tmp_path):
    from edge_runtime.models import ModelBundle

    _int8_skip(trt)
    for model in ("face", "voice"):
        _build(trt, MODELS / f"{model}.int8.onnx", model, "int8-qdq", tmp_path)
    rng = np.random.default_rng(5)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(9)]
    with ModelBundle.load(MODELS, precision="int8", backend="onnxruntime") as ref, \
            ModelBundle.load(MODELS, precision="int8", backend="tensorrt",
                             engines=tmp_path / "tensorrt") as bundle:
        assert Path(bundle.engines["face"]).name == "face.int8-qdq.engine"
        assert _cos(bundle.embed_faces(crops), ref.embed_faces(crops)).min() >= 0.98


def test_trtexec_build_script_on_this_device(trt, tmp_path):
    """The generated build_engine.sh: this TensorRT's flags, trtexec, sidecar, then it loads."""
    from edge_runtime.backends import EngineFromPath, TrtRunner
    from export.tensorrt_build import BuildSpec
    from export.trt_script import write_build_script

    trtexec = shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
    if not os.access(trtexec, os.X_OK):
        pytest.skip("trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec)")
    work = tmp_path / "tensorrt" / "gpu" / "face-fp32"
    work.mkdir(parents=True)
    onnx_copy = tmp_path / "face.onnx"
    shutil.copy(MODELS / "face.onnx", onnx_copy)
    spec = BuildSpec(onnx=Path("../../../face.onnx"), precision="fp32",
                     profiles=_profiles(onnx_copy, "face"), workspace_mb=1024,
                     engine=Path("../face.fp32.engine"))
    script = write_build_script(spec, work, trt_version=trt.__version__, target="gpu")
    env = {**os.environ, "TRTEXEC": trtexec}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with TrtRunner(EngineFromPath(tmp_path / "tensorrt" / "gpu" / "face.fp32.engine")) as r:
        x = np.zeros((2, 3, 112, 112), np.float32)
        assert r.run({"face": x})["embedding"].shape[0] == 2


def test_dla_engine_where_the_board_has_dla(trt, tmp_path):
    """DLA INT8 from the shipped stripped graph + calibration cache (Orin NX / AGX only)."""
    from packaging.version import Version

    from edge_runtime.backends import EngineFromPath, TrtRunner
    from edge_runtime.engine_meta import check_calibration_cache, current_key, write_sidecar
    from export.tensorrt_build import BuildSpec, TrtApi

    cores = trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores
    if cores == 0 or Version(trt.__version__).major >= 11:
        pytest.skip(f"no DLA here ({cores} DLA cores, TensorRT {trt.__version__})")
    calib = MODELS / "face.int8.dla.calib"
    try:
        check_calibration_cache(calib, trt.__version__)
    except ModelError as exc:
        pytest.skip(f"shipped calibration cache is for another TensorRT: {exc}")
    stripped = MODELS / "face.int8.dla.onnx"
    name = next(iter(_profiles(stripped, "face")))
    static = {name: ((1, 3, 112, 112),) * 3}
    spec = BuildSpec(onnx=stripped, precision="int8-qdq", profiles=static, dla_core=0,
                     calibration_cache=calib, source_onnx=MODELS / "face.int8.onnx")
    engine = tmp_path / "face.int8.dla0.engine"
    engine.write_bytes(TrtApi(trt.__version__).build(spec))
    key = current_key(spec.source, precision="int8-qdq", profiles=static, dla_core=0)
    write_sidecar(engine, key, target="orin")
    with TrtRunner(EngineFromPath(engine, key)) as runner:
        out = runner.run({name: np.zeros((3, 3, 112, 112), np.float32)})  # split to batch 1
    assert next(iter(out.values())).shape[0] == 3
