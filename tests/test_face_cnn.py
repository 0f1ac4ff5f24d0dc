"""dlib's MMOD CNN detector run as ONNX (models/face_detector.onnx) + numpy pyramid and NMS.

dlib's own CNN detector is the reference on real fixture images; recall and speed on the full
data sets are in benchmarks/dlib_onnx.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dlib
import numpy as np
import pytest

from edge_runtime.bundle import load_manifest
from edge_runtime.cli.main import main
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.face_detectors import open_cnn_detector, open_face_detector
from edge_runtime.frontend.face import DlibHogDetector, load_image, wheel_model_path
from edge_runtime.frontend.face_cnn import MmodConfig, MmodDetector, decode, pyramid_layout

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def cnn() -> MmodDetector:
    return open_cnn_detector(MODELS, threads=1, max_side=None)


def test_boxes_equal_dlibs_cnn_detector(cnn, fixtures):
    ref = dlib.cnn_face_detection_model_v1(str(wheel_model_path("mmod_human_face_detector.dat")))
    paths = sorted((fixtures / "lfw").glob("*/*.jpg"))[:3]
    for path in paths:
        image = load_image(path)
        want = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
                for d in ref(image, 0)]
        got = cnn.boxes(image)
        assert [b for b, _ in got] == [b for b, _ in want], path
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
        assert len(got) >= 1


def test_detect_gives_landmarks_and_scales_boxes_back(fixtures):
    image = load_image(sorted((fixtures / "lfw").glob("*/*.jpg"))[0])
    small = open_cnn_detector(MODELS, threads=1, max_side=160)
    [face] = small.detect(image)[:1]
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < 125 < x1 <= 260 and 0 <= y0 < 125 < y1 <= 260  # centred LFW face
    assert face.landmarks.shape == (5, 2)
    assert np.all((face.landmarks > x0 - 10) & (face.landmarks < x1 + 10))
    # a small photo (AT&T, 92x112) is enlarged 2x and the box comes back in its pixels
    att = load_image(sorted((fixtures / "att_faces").glob("s*/*.pgm"))[0])
    dets = open_cnn_detector(MODELS, threads=1).detect(att)
    assert dets and dets[0].box[2] <= 92 + 5 and dets[0].box[3] <= 112 + 5


def test_pyramid_layout_follows_dlib():
    rects, (nr, nc) = pyramid_layout(250, 250)
    widths = [r[2] - r[0] + 1 for r in rects]
    assert widths[:3] == [250, 208, 173]  # floor(5/6 * previous)
    assert nc == 250 + 22 and rects[0][:2] == (11, 11)
    for i, a in enumerate(rects):  # inside the canvas, no two levels overlap
        assert 0 <= a[0] and a[2] < nc and 0 <= a[1] and a[3] < nr
        for b in rects[i + 1:]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_decode_threshold_and_nms():
    cfg = MmodConfig()
    rects = [(11, 11, 410, 410)]
    scores = np.full((1, 1, 50, 50), -1.0, np.float32)
    scores[0, 0, 10, 10] = 0.5
    scores[0, 0, 10, 11] = 0.9  # 8 px to the right: same face, lower score dropped
    scores[0, 0, 30, 30] = 0.2  # far away: kept
    out = decode(scores, rects, cfg)
    assert [s for _, s in out] == pytest.approx([0.9, 0.2])
    (x0, y0, x1, y1), _ = out[0]
    assert (x1 - x0 + 1, y1 - y0 + 1) == (80, 80) and x0 == 8 * 11 + 14 - 11 - 39.5 + 0.5
    assert decode(scores, rects, cfg, adjust_threshold=0.95) == []


def test_choice_of_detector(tmp_path):
    assert open_face_detector("hog").name == "hog"
    cnn = open_face_detector("cnn", models=MODELS)
    assert cnn.name == "cnn" and isinstance(cnn.detector, MmodDetector)
    auto = open_face_detector("auto", models=MODELS, frame_size=(320, 240), runs=1)
    faster = min(auto.timings_ms, key=auto.timings_ms.get)
    assert auto.name == faster and "faster here" in auto.reason
    assert isinstance(auto.detector, MmodDetector if faster == "cnn" else DlibHogDetector)
    # TensorRT without a detector engine: measured on the CPU instead, and said so
    trt = open_face_detector("auto", models=MODELS, backend="tensorrt", engines=tmp_path,
                             frame_size=(320, 240), runs=1)
    assert "no TensorRT detector engine" in trt.reason
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text(json.dumps({"format": 1, "models": {}}))
    assert open_face_detector("auto", models=bare).name == "hog"
    with pytest.raises(ModelError, match="face_detector"):
        open_face_detector("cnn", models=bare)
    with pytest.raises(ConfigError, match="unknown face detector"):
        open_face_detector("yolo", models=MODELS)


def test_port_dlib_command_reproduces_the_committed_file(tmp_path, capsys):
    assert main(["port-dlib", "--models", str(tmp_path)]) == 0
    entry = load_manifest(tmp_path)["face_detector"]
    assert entry.sha256 == load_manifest(MODELS)["face_detector"].sha256
    assert json.loads(capsys.readouterr().out)["face_detector"]["bytes"] > 100_000


def test_changed_detector_file_is_refused(tmp_path):
    shutil.copytree(MODELS, tmp_path / "m", ignore=shutil.ignore_patterns("tensorrt", "*.png"))
    with open(tmp_path / "m" / "face_detector.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        open_cnn_detector(tmp_path / "m")
