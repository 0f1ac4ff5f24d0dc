"""The committed large face tier (`models/face_large.int8.onnx`) as a real TensorRT engine.

Builds the INT8 engine from the shipped QDQ file (what `build_all.sh` does on the board) and
compares it with onnxruntime on dlib chips of real GRID frames. Needs an NVIDIA GPU with
tensorrt and cuda-python (a device install is enough: no torch, no onnx); skipped with the
reason elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def trt(gpu_tensorrt):
    trt = gpu_tensorrt
    return trt


def test_face_large_int8_engine_matches_onnxruntime(trt, fixtures, tmp_path):
    from packaging.version import Version

    from edge_runtime.backends import EngineFromPath, TrtRunner, load_runner
    from edge_runtime.bundle import load_manifest
    from edge_runtime.engine_meta import current_key, write_sidecar
    from edge_runtime.frontend.face import DlibHogDetector, choose_face
    from edge_runtime.frontend.features import DLIB_CHIP_INPUT
    from edge_runtime.frontend.video import decode_clip
    from export.tensorrt_build import BuildSpec, TrtApi

    if Version(trt.__version__).major < 10:
        pytest.skip(f"TensorRT {trt.__version__} cannot parse int8-weight QDQ")
    qdq = load_manifest(MODELS)["face_large_int8"].verified_path()
    chips = []
    detector = DlibHogDetector()
    for clip in sorted((fixtures / "grid").glob("*.mpg"))[:3]:
        for frame in decode_clip(clip).frames[::25]:
            found = detector.detect(frame.image)
            if found:
                chips.append(DLIB_CHIP_INPUT.crop(frame.image, choose_face(found, frame.image.shape)))
    x = DLIB_CHIP_INPUT.tensor(chips)
    profiles = {"face": ((1, 3, 150, 150), (1, 3, 150, 150), (8, 3, 150, 150))}
    spec = BuildSpec(onnx=qdq, precision="int8-qdq", profiles=profiles, workspace_mb=512)
    engine = tmp_path / "face_large.int8.engine"
    engine.write_bytes(TrtApi(trt.__version__).build(spec))
    key = current_key(qdq, precision="int8-qdq", profiles=profiles)
    write_sidecar(engine, key, target="gpu")
    with load_runner(qdq, backend="onnxruntime") as ort:
        ref = ort.run({"face": x})["embedding"]
    with TrtRunner(EngineFromPath(engine, key)) as runner:
        got = runner.run({"face": x})["embedding"]
    cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert len(cos) >= 6 and cos.min() >= 0.99, cos
