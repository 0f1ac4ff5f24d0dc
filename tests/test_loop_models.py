"""ModelBundle: the manifest's models, their front-end, and which thresholds apply."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from runtime_models import cross_models, test_models  # noqa: F401 (pytest fixtures)

from edge_runtime.bundle import register_model
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frontend.features import VoiceFrontEnd
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import (
    Calibration,
    Fuser,
    OperatingPoints,
    SubsetFusion,
    ThresholdPoint,
    save_operating_points,
)


def test_students_only_bundle_is_provisional_and_says_so(test_models):  # noqa: F811
    with ModelBundle.load(test_models) as b:
        manifest = json.loads((test_models / "manifest.json").read_text())["models"]
        assert b.hashes == {m: manifest[m]["sha256"] for m in ("face", "voice")}
        assert b.cross_modal == () and b.thresholds.provisional and b.operating_points is None
        assert b.thresholds.values == {"face": 0.5, "voice": 0.6, "pin": 0.3, "faa": 0.5}
        assert any("cross-modal check unavailable" in n for n in b.notes)
        assert any(n.startswith("PROVISIONAL thresholds") for n in b.notes)
        assert b.front_end == VoiceFrontEnd()  # read back from the ONNX metadata
        crops = [np.full((112, 112, 3), v, np.uint8) for v in (10, 200)]
        f = b.embed_faces(crops)
        assert f.shape == (2, 128) and f.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
        wav = np.random.default_rng(0).uniform(-0.3, 0.3, 16000 * 3).astype(np.float32)
        v = b.embed_voice(wav)
        assert v.shape == (256,) and abs(np.linalg.norm(v) - 1) < 1e-5
        assert b.cross_scores(f[0], v) == {}


def test_cross_modal_heads(cross_models):  # noqa: F811
    with ModelBundle.load(cross_models) as b:
        assert b.cross_modal == ("pin", "faa") and b.faa_inputs == "student"
        f = b.embed_faces([np.full((112, 112, 3), 90, np.uint8)])[0]
        v = b.embed_voice(np.random.default_rng(1).uniform(-.3, .3, 32000).astype(np.float32))
        s = b.cross_scores(f, v)
        assert set(s) == {"pin", "faa"} and -1 <= s["pin"] <= 1 and 0 <= s["faa"] <= 1
        assert not any("cross-modal check unavailable" in n for n in b.notes)


def test_refusals_name_the_problem(test_models, tmp_path):  # noqa: F811
    with pytest.raises(ModelError, match="has no 'face_int8' model .*--precision fp32"):
        ModelBundle.load(test_models, precision="int8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        ModelBundle.load(test_models, precision="fp16")
    with pytest.raises(ModelError, match="no model manifest"):
        ModelBundle.load(tmp_path)
    copy = tmp_path / "m"
    shutil.copytree(test_models, copy)
    (copy / "voice.onnx").write_bytes((copy / "voice.onnx").read_bytes()[:-10])
    with pytest.raises(ModelError, match="voice.onnx has sha256 .* the file was replaced"):
        ModelBundle.load(copy)


def test_manifest_threshold_and_overrides(test_models, tmp_path):  # noqa: F811
    copy = tmp_path / "m"
    shutil.copytree(test_models, copy)
    register_model(copy, "face", "face.onnx", provisional_threshold=0.72)
    with ModelBundle.load(copy, threshold_overrides={"voice": 0.8}) as b:
        assert b.thresholds.values["face"] == 0.72 and b.thresholds.sources["face"] == "manifest face"
        assert b.thresholds.values["voice"] == 0.8 and b.thresholds.sources["voice"] == "command line"


def test_matching_operating_points_replace_the_provisional_thresholds(test_models, tmp_path):  # noqa: F811
    copy = tmp_path / "m"
    shutil.copytree(test_models, copy)
    with ModelBundle.load(copy) as b:
        hashes = b.model_hashes
    fuser = Fuser({"face": Calibration(10, -5), "voice": Calibration(8, -4)},
                  {frozenset({"face", "voice"}): SubsetFusion({"face": 1, "voice": 1}, 0)})
    point = ThresholdPoint(("face", "voice"), 1e-3, 2.0, 1e-3, 0.1, None, None, None, 50, 500,
                           0, 0.95, 0)
    save_operating_points(OperatingPoints(hashes, "3" * 64, fuser, (point,), provisional=False),
                          copy / "operating_points.yaml")
    with ModelBundle.load(copy) as b:
        assert b.operating_points is not None and not b.thresholds.provisional
        assert not any("PROVISIONAL" in n for n in b.notes)
        assert b.describe()["operating_points"].endswith("operating_points.yaml")


def test_int8_models_use_their_own_operating_points_file(test_models, tmp_path):  # noqa: F811
    # INT8 scores differ from FP32 ones, so do their thresholds: an INT8 bundle never picks up
    # operating_points.yaml (made for the FP32 models) but operating_points.int8.yaml
    copy = tmp_path / "m"
    shutil.copytree(test_models, copy)
    manifest = json.loads((copy / "manifest.json").read_text())["models"]
    for m in ("face", "voice"):
        shutil.copy(copy / manifest[m]["file"], copy / f"{m}.int8.onnx")
        register_model(copy, f"{m}_int8", f"{m}.int8.onnx", **manifest[m]["meta"])
    fuser = Fuser({"face": Calibration(10, -5), "voice": Calibration(8, -4)},
                  {frozenset({"face", "voice"}): SubsetFusion({"face": 1, "voice": 1}, 0)})
    point = ThresholdPoint(("face", "voice"), 1e-3, 2.0, 1e-3, 0.1, None, None, None, 50, 500,
                           0, 0.95, 0)
    with ModelBundle.load(copy) as b:
        save_operating_points(OperatingPoints(b.model_hashes, "3" * 64, fuser, (point,),
                                              provisional=False), copy / "operating_points.yaml")
    with ModelBundle.load(copy, precision="int8") as b:
        assert b.operating_points is None and b.thresholds.provisional
        assert any("no operating_points.int8.yaml" in n for n in b.notes)
        save_operating_points(OperatingPoints(b.model_hashes, "3" * 64, fuser, (point,),
                                              provisional=False), copy / "operating_points.int8.yaml")
    with ModelBundle.load(copy, precision="int8") as b:
        assert b.operating_points is not None and not b.thresholds.provisional
        assert b.describe()["operating_points"].endswith("operating_points.int8.yaml")
