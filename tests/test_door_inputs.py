"""Issue 18, medium and low items: careless-operator mistakes and hostile inputs that must
come out as one clear error (or a quarantine), never as silent acceptance or a crash."""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.cli.main import build_parser
from edge_runtime.errors import GalleryError, MediaError
from edge_runtime.store.gallery import KNOWN_DIMS, Gallery

REPO = Path(__file__).resolve().parents[1]
H = hashlib.sha256(b"model").hexdigest()


def _enrol(g: Gallery, name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = {m: (v := rng.standard_normal(KNOWN_DIMS[m]).astype(np.float32)) / np.linalg.norm(v)
         for m in ("face", "voice")}
    g.enroll(name, t, {m: 1 for m in t}, {m: H for m in t})
    return t


# --------------------------------------------------------------------- 7. 0-byte gallery
def test_zero_byte_gallery_is_refused_not_treated_as_new(tmp_path, capsys):
    key = os.urandom(32)
    db = tmp_path / "gallery.db"
    db.write_bytes(b"")
    Path(f"{db}-wal").write_bytes(b"x" * 100)  # what a bad copy leaves beside it
    with pytest.raises(GalleryError, match=r"empty \(0-byte\) file"):
        Gallery.open(db, key)
    assert db.read_bytes() == b""  # left untouched
    (tmp_path / "gallery.key").write_bytes(__import__("base64").b64encode(key) + b"\n")
    (tmp_path / "gallery.key").chmod(0o600)
    code = main(["gallery", "list", "--gallery", str(db)])
    assert code == 2 and "empty (0-byte) file" in capsys.readouterr().err


# ------------------------------------------------------------- 8. one tampered template
def test_one_tampered_template_quarantines_only_that_identity(tmp_path):
    key, rng = os.urandom(32), np.random.default_rng(3)
    db = tmp_path / "gallery.db"
    with Gallery.open(db, key) as g:
        ann = _enrol(g, "ann", rng)
        bob = _enrol(g, "bob", rng)
    raw = sqlite3.connect(db)
    (blob,) = raw.execute("SELECT ciphertext FROM templates WHERE name = 'ann' AND "
                          "modality = 'face'").fetchone()
    raw.execute("UPDATE templates SET ciphertext = ? WHERE name = 'ann' AND modality = 'face'",
                (bytes([blob[0] ^ 1]) + blob[1:],))
    raw.commit()
    raw.close()
    with Gallery.open(db, key) as g:
        assert g.search("face", bob["face"], H)[0][0] == "bob"  # bob is still served
        assert g.templates("face", H)[0] == ["bob"] and g.templates("voice", H)[0] == ["bob"]
        assert g.problems() == ["'ann' quarantined: row ann/face was altered outside edgepin"]
        assert g.search("face", ann["face"], H)[0][0] != "ann"


def test_decrypt_failure_quarantines_even_with_a_matching_manifest(tmp_path):
    """A row the manifest vouches for but that does not decrypt (damaged before it was
    sealed) is isolated too, instead of denying everybody ("cannot decrypt template")."""
    from edge_runtime.store.integrity import (
        Anchor,
        Manifest,
        anchor_path,
        derive_key,
        mac,
        row_digest,
        row_key,
        write_anchor,
    )

    key, rng = os.urandom(32), np.random.default_rng(4)
    db = tmp_path / "gallery.db"
    with Gallery.open(db, key) as g:
        _enrol(g, "ann", rng)
        bob = _enrol(g, "bob", rng)
    raw = sqlite3.connect(db)
    raw.execute("UPDATE templates SET ciphertext = zeroblob(length(ciphertext)) "
                "WHERE name = 'ann' AND modality = 'voice'")
    rows = raw.execute("SELECT name, modality, dim, model_sha256, n_samples, nonce, ciphertext"
                       " FROM templates").fetchall()
    manifest = Manifest(99, {row_key(r[0], r[1]): row_digest(*r) for r in rows})
    mkey = derive_key(key, "gallery manifest")  # what a key holder's (buggy) seal would write
    raw.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (manifest.payload(),))
    raw.execute("UPDATE meta SET value = ? WHERE key = 'manifest_mac'",
                (mac(mkey, manifest.payload()),))
    raw.commit()
    raw.close()
    write_anchor(anchor_path(db), mkey, Anchor(99, mac(mkey, manifest.payload())))
    with Gallery.open(db, key) as g:
        names, _ = g.templates("voice", H)
        assert names == ["bob"] and "cannot decrypt template 'ann'/voice" in g.quarantined["ann"]
        assert g.templates("face", H)[0] == ["bob"]  # ann is out of every modality
        assert g.search("voice", bob["voice"], H)[0][0] == "bob"


# ------------------------------------------------------------------ 10. image / video size
def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 4096)
    return (b"\x89PNG\r\n\x1a\n" + body + struct.pack(">I", len(idat)) + b"IDAT" + idat
            + struct.pack(">I", zlib.crc32(b"IDAT" + idat)))


def test_huge_image_refused_on_its_header(tmp_path, capsys):
    from edge_runtime.frontend.face import load_image
    from edge_runtime.frontend.limits import image_size

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))
    with pytest.raises(MediaError, match="20000x20000 pixels, over the limit"):
        load_image(bomb)
    code = main(["enroll", "x", "--face", str(bomb), "--gallery", str(tmp_path / "g.db"),
                 "--create-key"])
    err = capsys.readouterr().err
    assert code == 2 and "20000x20000" in err and len(err.strip().splitlines()) == 1
    import cv2  # the parser agrees with OpenCV on real files

    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff", ".pgm"):
        path = tmp_path / f"ok{ext}"
        cv2.imwrite(str(path), np.zeros((37, 53, 1 if ext == ".pgm" else 3), np.uint8))
        assert image_size(path.read_bytes()) == (53, 37), ext
        assert load_image(path).shape == (37, 53, 3)


def test_oversized_video_frames_refused_before_decoding(tmp_path, monkeypatch):
    import av

    from edge_runtime.frontend import limits, video

    clip = tmp_path / "big.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height = 320, 240
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert len(list(video.iter_frames(clip))) == 2
    monkeypatch.setattr(limits, "MAX_VIDEO_SIDE", 256)  # a small limit: a 320 px clip is "big"
    monkeypatch.setattr(video, "check_dimensions",
                        lambda w, h, **k: limits.check_dimensions(w, h, **{**k, "max_side": 256}))
    with pytest.raises(MediaError, match="video frame is 320x240 pixels, over the limit"):
        video.iter_frames(clip)


# ----------------------------------------------------------------------- 15. reasons
def test_text_file_as_voice_is_named_as_such(tmp_path):
    from edge_runtime.frontend.audio import load_audio

    text = tmp_path / "notes.txt"
    text.write_text("meeting notes\n" * 200)
    with pytest.raises(MediaError, match="not an audio or video file") as err:
        load_audio(text)
    assert "video without an audio track" not in str(err.value)


def test_a_start_up_failure_is_said_once(tmp_path, capsys):
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pass
    else:
        pytest.skip("PortAudio is installed here")
    key = tmp_path / "gallery.key"
    from edge_runtime.store.keys import create_key

    Gallery.open(tmp_path / "gallery.db", create_key(key)).close()
    code = main(["run", "--camera", "0", "--once", "--no-status", "--gallery",
                 str(tmp_path / "gallery.db"), "--key-file", str(key)])
    out, err = capsys.readouterr()
    assert code == 2 and "DENIED" not in out
    assert err.count("microphone capture needs") == 1 and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------- 16. help and info
def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):  # noqa: SLF001
            yield path, action


def test_every_device_option_has_help():
    parser = build_parser()
    device = ("enroll", "gallery", "audit", "run", "demo", "bench", "info")
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}"
               for path, a in _actions(parser, "edgepin")
               if path.split()[1:2] and path.split()[1] in device and not a.help]
    assert missing == []


def test_readme_says_where_the_files_live_and_how_to_set_the_door():
    text = (REPO / "README.md").read_text()
    for needle in ("~/.local/share/edgepin", "gallery.key", "audit.db", "--lockout",
                   "--actuator-gpio", "--missing-modality", "docs/security.md"):
        assert needle in text, needle


def test_info_says_training_packages_are_not_installed(monkeypatch, capsys):
    from edge_runtime import sysinfo

    monkeypatch.setattr(sysinfo, "dist_version",
                        lambda name: None if name in ("torch", "resemblyzer") else "1.0")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "resemblyzer not installed (training only)" in " ".join(out.split())
    assert "None" not in out


# ---------------------------------------------------------------------- 17. pyproject
def test_license_is_an_spdx_string_setuptools_accepts():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "Apache-2.0"
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old table form warns on every install
        read_configuration(REPO / "pyproject.toml")
    assert sys.version_info >= (3, 10)
