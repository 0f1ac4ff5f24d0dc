"""Room copy of held-out speakers and the short-probe cut (synthetic audio: file layout,
determinism and cut lengths only; accuracy is measured in benchmarks/students.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.errors import DatasetError
from train.evaluate import voiced_probe
from train.room_eval_set import make_room_copy

SPLIT = {"test_fraction": 0.4, "val_fraction": 0.0, "seed": 0}


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 100 + 50 * seed
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.1 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def _corpus(root: Path, speakers: int = 5, utts: int = 2) -> None:
    for s in range(speakers):
        d = root / f"SPK{s}"
        d.mkdir(parents=True)
        for u in range(utts):
            sf.write(d / f"u{u}.flac", _speech_like(2.5, s * 10 + u), 16000, format="FLAC")


def test_room_copy_is_made_once_deterministic_and_described(tmp_path: Path) -> None:
    pytest.importorskip("pyroomacoustics")
    _corpus(tmp_path / "src")
    d1 = make_room_copy(tmp_path / "src", tmp_path / "a", SPLIT, seed=0)
    d2 = make_room_copy(tmp_path / "src", tmp_path / "b", SPLIT, seed=0)
    assert d2["items"] == d1["items"]
    assert d1["speakers"] == 2 and d1["files"] == 4
    assert all(5.0 <= f["snr_db"] <= 20.0 and 0.2 <= f["rt60_s"] <= 0.6 for f in d1["items"])
    for f in d1["items"]:
        a, sr = sf.read(tmp_path / "a" / f["file"], dtype="float32")
        b, _ = sf.read(tmp_path / "b" / f["file"], dtype="float32")
        src, _ = sf.read(tmp_path / "src" / f["file"], dtype="float32")
        assert sr == 16000 and len(a) == len(src) and np.array_equal(a, b)
        assert not np.allclose(a, src, atol=1e-3)
    assert json.loads((tmp_path / "a" / "ROOM_SET.json").read_text())["files"] == 4
    with pytest.raises(DatasetError, match="not empty"):
        make_room_copy(tmp_path / "src", tmp_path / "a", SPLIT, seed=0)


class _Gate:
    """Stands in for the VAD (its model is tested in test_vad.py): speech = the given slice."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def extract_speech(self, wav: np.ndarray) -> np.ndarray:
        return wav[self.start : self.stop]


def test_voiced_probe_takes_the_first_seconds_of_speech() -> None:
    wav = np.arange(64000, dtype=np.float32)
    cut = voiced_probe(wav, _Gate(8000, 60000), 2.0)
    assert len(cut) == 32000 and cut[0] == 8000
    assert len(voiced_probe(wav, _Gate(8000, 20000), 2.0)) == 12000  # shorter speech: all of it
    assert voiced_probe(wav, _Gate(0, 100), 0.5)[0] == 0  # no speech: the raw start
