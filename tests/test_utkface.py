"""UTKFace reader and the snapshot extraction, on generated images with UTKFace-style names.

No UTKFace image is copied here (its terms are non-commercial): the files are synthetic JPEGs
that only borrow the naming scheme, enough for the parser, the reader and the extraction.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import DatasetError
from train.data_prep import SnapshotFolder, extract_folder, main
from train.datasets.utkface import UTKAttributes, UTKFace, is_unlabelled, parse_utk_name

NAMES = ["26_1_2_20170116174525125.jpg.chip.jpg", "100_0_0_20170112213500903.jpg.chip.jpg",
         "39_1_20170116174525125.jpg.chip.jpg"]  # the last is malformed as in the real set


def _jpeg(path: Path, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    path.write_bytes(buf.tobytes())


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for i, n in enumerate(NAMES):
        _jpeg(root / n, i)
    return root


def test_parse_names():
    assert parse_utk_name(NAMES[0]) == UTKAttributes(26, "female", "asian")
    assert parse_utk_name(NAMES[1]) == UTKAttributes(100, "male", "white")
    assert "3 field(s)" in parse_utk_name(NAMES[2])
    assert "does not end" in parse_utk_name("26_1_2_20170116174525125.png")
    assert "out of range" in parse_utk_name("999_1_2_20170116174525125.jpg.chip.jpg")


def test_reader_keeps_malformed_names_and_reports_them(tmp_path):
    root = _folder(tmp_path / "unlabeled")
    (root / "broken.jpg").write_bytes(b"<html>not a jpeg</html>")
    r = UTKFace(tmp_path)  # the parent folder is accepted too
    assert len(r) == 3 and all(is_unlabelled(s.identity) for s in r.samples)
    assert len({s.identity for s in r.samples}) == 3  # one pseudo-identity per image
    assert [p.name for p, _ in r.malformed] == [NAMES[2], "broken.jpg"]
    assert [p.name for p, _ in r.skipped] == ["broken.jpg"]
    assert r.attributes[root / NAMES[1]].age == 100
    assert root / NAMES[2] not in r.attributes


def test_reader_refuses_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no usable sample"):
        UTKFace(tmp_path / "empty")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def snapshot(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _folder(repo / "data" / "UTKFace" / "unlabeled")
    _folder(repo / "data" / "UTKFace" / "labeled")  # must not be extracted
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "fixture")
    return repo


def test_extract_only_the_folder_and_verify(snapshot, tmp_path, capsys):
    spec = SnapshotFolder("x/y", "data/UTKFace/unlabeled", 3)
    dest = tmp_path / "dest"
    rep = extract_folder(snapshot, spec, dest)
    assert rep["n_files"] == 3 and rep["extracted"]
    assert not (dest / "data" / "UTKFace" / "labeled").exists()
    assert len(UTKFace(dest / "data" / "UTKFace" / "unlabeled")) == 3
    assert not extract_folder(snapshot, spec, dest)["extracted"]  # intact: nothing redone
    # a damaged file is found and restored by extracting again
    victim = dest / "data" / "UTKFace" / "unlabeled" / NAMES[0]
    victim.write_bytes(b"\xff\xd8\xff damaged")
    assert extract_folder(snapshot, spec, dest)["extracted"]
    with pytest.raises(DatasetError, match="expected 5"):
        extract_folder(snapshot, SnapshotFolder("x/y", "data/UTKFace/unlabeled", 5), dest)


def test_extract_errors_name_the_input(tmp_path, snapshot, capsys):
    with pytest.raises(DatasetError, match="fetch"):
        extract_folder(tmp_path / "nope", SnapshotFolder("x/y", "a", None), tmp_path / "d")
    with pytest.raises(DatasetError, match="no file under missing/folder"):
        extract_folder(snapshot, SnapshotFolder("x/y", "missing/folder", None), tmp_path / "d")
    assert main(["utkface", "--git-dir", str(tmp_path / "nope"), "--dest", str(tmp_path / "d")]) == 1
    assert "fetch mattans/AgeProgression" in capsys.readouterr().out
