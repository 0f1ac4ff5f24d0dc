"""Files other processes read keep a readable mode across rewrites (edge_runtime/atomic.py).

mkstemp makes 0600; before this module a re-calibration turned operating_points.yaml owner-only,
so a door service running as another user would stop at its next start.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from calibration.int8_sets import load_calibration_set, save_calibration_set
from edge_runtime.atomic import SHARED_MODE, write_atomic
from edge_runtime.errors import ConfigError
from edge_runtime.operating_points import (
    Calibration,
    Fuser,
    OperatingPoints,
    SubsetFusion,
    load_operating_points,
    save_operating_points,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def operating_points() -> OperatingPoints:
    fuser = Fuser({"face": Calibration(1, 0), "voice": Calibration(1, 0)},
                  {frozenset({"face", "voice"}): SubsetFusion({"face": 1, "voice": 1}, 0)})
    return OperatingPoints({"face": "0" * 64, "voice": "1" * 64}, "2" * 64, fuser, ())


def test_new_file_is_readable_by_others(tmp_path):
    p = write_atomic(tmp_path / "a.bin", lambda fh: fh.write(b"abc"))
    assert p.read_bytes() == b"abc"
    assert mode(p) == SHARED_MODE


def test_a_file_an_older_edgepin_left_owner_only_becomes_readable(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o600)
    write_atomic(p, lambda fh: fh.write(b"new"))
    assert p.read_bytes() == b"new"
    assert mode(p) == SHARED_MODE


def test_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        write_atomic(p, boom)
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]


def test_recalibration_keeps_operating_points_readable(tmp_path):
    p = tmp_path / "operating_points.yaml"
    save_operating_points(operating_points(), p)
    assert mode(p) == SHARED_MODE
    save_operating_points(operating_points(), p)  # the second write is the one that went 0600
    assert mode(p) == SHARED_MODE
    hashes = {"face": "0" * 64, "voice": "1" * 64}
    assert load_operating_points(p, hashes).model_hashes == hashes


def test_operating_points_into_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        save_operating_points(operating_points(), tmp_path / "nowhere" / "op.yaml")


def test_calibration_set_and_manifest_are_readable(tmp_path):
    out = tmp_path / "voice.calib.npz"
    arrays = {"mel": np.zeros((2, 3), np.float32)}
    save_calibration_set(arrays, out, source={"what": "unit test zeros (shape check only)"})
    assert mode(out) == SHARED_MODE
    assert all(mode(f) == SHARED_MODE for f in tmp_path.iterdir())
    assert load_calibration_set(out, expect_inputs=["mel"], min_samples=2)["mel"].shape == (2, 3)
