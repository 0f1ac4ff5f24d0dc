"""Readers' decode mode (`iter_decoded`) on real fixture copies plus damaged files.

Each test needs the matching edge_runtime loader (audio / face / video) and is skipped, with
the reason, while that module is not in the tree.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.datasets import ClipFolder, FaceFolder, SpeechFolder, VoxCeleb1


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_speech_iter_decoded_skips_truncated_wav(fixtures, tmp_path, caplog):
    root = tmp_path / "fsdd"
    shutil.copytree(fixtures / "fsdd" / "george", root / "george")
    shutil.copytree(fixtures / "fsdd" / "lucas", root / "lucas")
    cut = root / "lucas" / "0_lucas_1.wav"
    cut.chmod(0o644)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # a download cut half-way: header intact
    r = SpeechFolder(root)
    assert len(r.samples) == 6 and r.skipped == []  # the header looks fine at scan time
    with caplog.at_level(logging.WARNING, logger="train.datasets"):
        decoded = list(r.iter_decoded(sr=16000))
    assert [s.path.name for s, _ in decoded] == [s.path.name for s in r.samples if s.path != cut]
    for _, wave in decoded:
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert 0.1 * 16000 < wave.shape[0] < 2 * 16000  # spoken digits, resampled from 8 kHz
    assert len(r.skipped) == 1
    path, reason = r.skipped[0]
    assert path == cut and reason.startswith("decode failed") and "truncated" in reason
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "1 file(s) failed to decode" in warnings[0]
    list(r.iter_decoded())  # a second pass does not report the same file twice
    assert len(r.skipped) == 1


def test_clip_iter_decoded_skips_video_without_audio(fixtures, tmp_path, caplog):
    av = pytest.importorskip("av")
    root = tmp_path / "clips"
    root.mkdir()
    shutil.copy(fixtures / "grid" / "bbaf2n.mpg", root / "bbaf2n.mpg")
    silent = root / "mute.mp4"
    with av.open(str(silent), "w") as out:  # a real video stream, no audio stream at all
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            img = np.full((64, 64, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    r = ClipFolder(root)
    assert r.identities() == ["bbaf2n", "mute"] and r.skipped == []
    with caplog.at_level(logging.WARNING, logger="train.datasets"):
        decoded = list(r.iter_decoded(sr=16000, max_frames=5))
    assert [s.identity for s, _ in decoded] == ["bbaf2n"]
    clip = decoded[0][1]
    assert len(clip.frames) == 5 and clip.audio is not None and clip.audio.dtype == np.float32
    assert r.skipped[0][0] == silent and "audio" in r.skipped[0][1]
    assert len(_warnings(caplog)) == 1
    # the same silent file is fine when audio is not asked for
    r2 = ClipFolder(root)
    assert [s.identity for s, _ in r2.iter_decoded(require_audio=False, max_frames=2)] == [
        "bbaf2n",
        "mute",
    ]
    assert r2.skipped == []


def _corrupt_jpeg(good: Path, out: Path) -> None:
    """Valid JPEG start-of-image marker, then garbage: passes the scan, fails the decoder."""
    out.write_bytes(good.read_bytes()[:3] + b"\x00garbage" * 50)


def test_face_iter_decoded_skips_corrupt_image(fixtures, tmp_path):
    root = tmp_path / "lfw"
    shutil.copytree(fixtures / "lfw" / "Tony_Blair", root / "Tony_Blair")
    shutil.copytree(fixtures / "att_faces" / "s1", root / "s1")
    bad = root / "Tony_Blair" / "Tony_Blair_0009.jpg"
    _corrupt_jpeg(root / "Tony_Blair" / "Tony_Blair_0001.jpg", bad)
    r = FaceFolder(root)
    assert len(r.samples) == 8 and r.skipped == []
    decoded = list(r.iter_decoded())
    assert len(decoded) == 7
    shapes = {s.identity: img.shape for s, img in decoded}
    assert shapes == {"Tony_Blair": (250, 250, 3), "s1": (112, 92, 3)}  # grey -> RGB
    assert all(img.dtype == np.uint8 for _, img in decoded)
    assert [p for p, _ in r.skipped] == [bad] and "decode failed" in r.skipped[0][1]


def test_voxceleb1_iter_decoded_both_modalities(fixtures, tmp_path):
    wav_dir = tmp_path / "wav" / "id10001" / "vidA"
    wav_dir.mkdir(parents=True)
    shutil.copy(fixtures / "fsdd" / "george" / "0_george_0.wav", wav_dir / "00001.wav")
    face_dir = tmp_path / "faces" / "Hugo_Chavez" / "1.6" / "vidA"
    face_dir.mkdir(parents=True)
    shutil.copy(fixtures / "lfw" / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg", face_dir / "1.jpg")
    (tmp_path / "vox1_meta.csv").write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\nid10001\tHugo_Chavez\tm\tX\tdev\n"
    )
    r = VoxCeleb1(tmp_path, faces_root=tmp_path / "faces")
    kinds = {s.modality: x for s, x in r.iter_decoded()}
    assert kinds["voice"].dtype == np.float32 and kinds["voice"].ndim == 1
    assert kinds["face"].dtype == np.uint8 and kinds["face"].shape[-1] == 3
