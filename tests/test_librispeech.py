"""LibriSpeech flat reader and extraction checks, on synthetic files (layout only, no accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.errors import DatasetError
from train.datasets.librispeech import LibriSpeechFlat, check


def _flac(path: Path, seconds: float = 0.5) -> None:
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000, format="FLAC")


def test_reader_identities_groups_and_skips(tmp_path: Path) -> None:
    _flac(tmp_path / "103-1240-0000.flac")
    _flac(tmp_path / "19-198-0001.flac")
    _flac(tmp_path / "readme-x.flac")
    (tmp_path / "SPEAKERS.TXT").write_text("; not audio\n")
    r = LibriSpeechFlat(tmp_path)
    assert [(s.identity, s.group) for s in r.samples] == [("libri103", "1240"), ("libri19", "198")]
    assert [p.name for p, _ in r.skipped] == ["readme-x.flac"]


def test_reserved_folder_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "audio_data" / "librispeech_test-other"
    d.mkdir(parents=True)
    _flac(d / "1-2-0000.flac")
    with pytest.raises(DatasetError, match="reserved"):
        LibriSpeechFlat(d)


def test_check_counts_speakers(tmp_path: Path) -> None:
    _flac(tmp_path / "1-2-0000.flac")
    with pytest.raises(DatasetError, match="expected 251 speakers"):
        check(tmp_path)
