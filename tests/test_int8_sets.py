"""Calibration sets: provenance manifest, sha256 verification, no silent fallbacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from calibration.int8_sets import (
    NpzCalibrationReader,
    load_calibration_set,
    manifest_path,
    save_calibration_set,
)
from edge_runtime.errors import ModelError

SOURCE = {"dataset": "unit-test arrays", "split": "n/a", "preprocessing": "none"}


def _arrays(n: int = 500) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "face_emb": rng.standard_normal((n, 8)).astype(np.float32),
        "voice_emb": rng.standard_normal((n, 6)),  # float64 on purpose: stored as float32
    }


def test_roundtrip_and_manifest(tmp_path):
    arrays = _arrays()
    path = save_calibration_set(arrays, tmp_path / "faa_calib", source=SOURCE)
    assert path.suffix == ".npz" and path.is_file()
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["n_samples"] == 500
    assert manifest["inputs"]["voice_emb"] == {"shape": [500, 6], "dtype": "float32"}
    assert manifest["source"] == SOURCE and manifest["created"]
    assert len(manifest["sha256"]) == 64
    loaded = load_calibration_set(path, expect_inputs=["face_emb", "voice_emb"])
    np.testing.assert_array_equal(loaded["face_emb"], arrays["face_emb"])
    assert loaded["voice_emb"].dtype == np.float32
    np.testing.assert_allclose(loaded["voice_emb"], arrays["voice_emb"], rtol=1e-6)


def test_modified_set_is_refused(tmp_path):
    path = save_calibration_set(_arrays(), tmp_path / "c.npz", source=SOURCE)
    other = _arrays()
    other["face_emb"][0, 0] += 1.0  # same names and shapes, one value changed
    np.savez(path, **{k: v.astype(np.float32) for k, v in other.items()})
    with pytest.raises(ModelError, match="corrupt or modified"):
        load_calibration_set(path, expect_inputs=["face_emb", "voice_emb"])


def test_missing_set_is_a_clear_error_never_random_data(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*random data is never used"):
        load_calibration_set(tmp_path / "nope.npz", expect_inputs=["face"])
    path = save_calibration_set(_arrays(), tmp_path / "c.npz", source=SOURCE)
    manifest_path(path).unlink()
    with pytest.raises(ModelError, match="no manifest"):
        load_calibration_set(path, expect_inputs=["face_emb", "voice_emb"])


def test_wrong_inputs_and_too_few_samples(tmp_path):
    path = save_calibration_set(_arrays(120), tmp_path / "c.npz", source=SOURCE)
    with pytest.raises(ModelError, match=r"missing inputs \['face'\].*unexpected inputs"):
        load_calibration_set(path, expect_inputs=["face"], min_samples=1)
    with pytest.raises(ModelError, match="holds 120 samples, at least 500"):
        load_calibration_set(path, expect_inputs=["face_emb", "voice_emb"])
    assert len(load_calibration_set(path, expect_inputs=["face_emb", "voice_emb"],
                                    min_samples=100)["face_emb"]) == 120


def test_save_rejects_bad_arrays(tmp_path):
    with pytest.raises(ModelError, match="disagree on the sample count"):
        save_calibration_set({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, tmp_path / "x",
                             source=SOURCE)
    with pytest.raises(ModelError, match="NaN or Inf"):
        save_calibration_set({"a": np.array([[np.nan]])}, tmp_path / "x", source=SOURCE)
    with pytest.raises(ModelError, match="source"):
        save_calibration_set({"a": np.zeros((3, 2))}, tmp_path / "x", source={})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_reader_batches_stacked_arrays_and_rewinds():
    arrays = {k: v.astype(np.float32) for k, v in _arrays(37).items()}
    reader = NpzCalibrationReader(arrays, batch_size=16)
    sizes = []
    while (batch := reader.get_next()) is not None:
        assert set(batch) == {"face_emb", "voice_emb"}
        sizes.append(len(batch["face_emb"]))
    assert sizes == [16, 16, 5] and len(reader) == 3
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["face_emb"], arrays["face_emb"][:16])


def test_reader_groups_feed_dicts_polygraphy_style():
    feeds = [{"x": np.full((2, 3), i, np.float32)} for i in range(5)]
    reader = NpzCalibrationReader(iter(feeds), batch_size=4)
    first = reader.get_next()["x"]
    assert first.shape == (4, 3) and first[:, 0].tolist() == [0, 0, 1, 1]
    assert [b["x"].shape[0] for b in reader._batches] == [4, 4, 2]
    with pytest.raises(ModelError, match="no samples"):
        NpzCalibrationReader([], batch_size=4)


def test_module_does_not_import_torch():
    code = "import sys, calibration.int8_sets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
