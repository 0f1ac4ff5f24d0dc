"""Bad input never crashes the loop: each case is a denial (or a one-line error) with a
reason that names the problem, and the gallery is never damaged."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from dataclasses import replace

import cv2
import numpy as np
import pytest
import soundfile as sf
from runtime_models import detector, gate, test_models  # noqa: F401 (pytest fixtures)

from edge_runtime.access.enroll import Enroller
from edge_runtime.access.loop import AccessLoop, LoopConfig
from edge_runtime.access.pipeline import PipelineConfig, Verifier
from edge_runtime.capture import ReplaySource
from edge_runtime.capture.base import AudioChunk, Batch
from edge_runtime.cli import main
from edge_runtime.engine_meta import EngineKey, check_engine, write_sidecar
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frontend.audio import load_audio
from edge_runtime.frontend.face import load_image
from edge_runtime.frontend.video import Frame
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import (
    Calibration,
    Fuser,
    OperatingPoints,
    SubsetFusion,
    save_operating_points,
)
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle
from edge_runtime.store.keys import create_key

FACE = "lfw/Tony_Blair/Tony_Blair_0001.jpg"
OTHER = "lfw/Serena_Williams/Serena_Williams_0001.jpg"
VOICE = "speechocean762/SPEAKER0120/001200015.flac"
LOOP = LoopConfig(decide_at_end=True, cooldown_s=0.0, lockout_failures=0)


@pytest.fixture(scope="module")
def site(test_models, detector, gate, fixtures, tmp_path_factory):  # noqa: F811
    """A key file and a gallery with 'ann' enrolled (photo + recording)."""
    home = tmp_path_factory.mktemp("site")
    key = create_key(home / "gallery.key")
    with ModelBundle.load(test_models) as bundle, Gallery.open(home / "gallery.db", key) as g:
        Enroller(bundle, detector, gate, min_speech_s=0.5).enroll_files(
            g, "ann", faces=[fixtures / FACE], voices=[fixtures / VOICE])
    return home, key


def decide(site, models, face_detector, speech_gate, source, *, handle=None, loop=LOOP, **cfg):
    home, key = site
    with ModelBundle.load(models) as bundle:
        handle = handle or GalleryHandle(home / "gallery.db", key)
        verifier = Verifier(bundle, handle, PipelineConfig(min_speech_s=0.5, **cfg),
                            face_detector, speech_gate)
        try:
            [result] = AccessLoop(verifier, loop).run(source, once=True)
        finally:
            handle.close()
    assert "\n" not in result.reason
    return result


def still(image, wav, tmp_path):
    """A photo + recording attempt from arrays (written to files, as --face/--voice are)."""
    img, snd = tmp_path / "face.png", tmp_path / "voice.wav"
    cv2.imwrite(str(img), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    sf.write(snd, wav[:40000], 16000)  # 2.5 s (1.9 s voiced) is plenty: faster tests
    return ReplaySource.from_image_audio(img, snd, fps=5, realtime=False)


def run_json(args, capsys):
    code = main(["run", "--once", "--json", "--fast", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


# ------------------------------------------------------------------------------- media
def test_corrupt_and_truncated_clips(site, test_models, fixtures, tmp_path, capsys):  # noqa: F811
    home, _ = site
    common = ["--models", str(test_models), "--gallery", str(home / "gallery.db"),
              "--key-file", str(home / "gallery.key")]
    garbage = tmp_path / "garbage.mpg"
    garbage.write_bytes(os.urandom(5000))
    code, doc, err = run_json(["--replay", str(garbage), *common], capsys)
    assert code == 2 and not doc["granted"] and str(garbage) in doc["reason"]
    assert err.count("\n") == 1 and "edgepin run: error:" in err
    cut = tmp_path / "cut.mpg"
    cut.write_bytes((fixtures / "grid/bbaf2n.mpg").read_bytes()[:60_000])
    code, doc, _ = run_json(["--replay", str(cut), *common], capsys)
    assert code in (1, 2) and not doc["granted"] and doc["reason"]
    with AuditLogOpen(home / "audit.db") as audit:  # a start-up error is not an attempt
        assert not any(str(garbage) in r.reason for r in audit.tail(50))


class AuditLogOpen:
    def __init__(self, path):
        from edge_runtime.store.audit import AuditLog

        self.log = AuditLog.open(path, create=False)

    def __enter__(self):
        return self.log

    def __exit__(self, *exc):
        self.log.close()


def test_no_face_several_faces_and_policies(site, test_models, detector, gate, fixtures,  # noqa: F811
                                            tmp_path):
    wav = load_audio(fixtures / VOICE)
    face, other = load_image(fixtures / FACE), load_image(fixtures / OTHER)
    r = decide(site, test_models, detector, gate, still(np.zeros_like(face), wav, tmp_path))
    assert not r.granted  # nobody was seen: no attempt started, the source ended
    assert re.fullmatch(r"source ended before an attempt: no face found \((\d+) of \1 frames "
                        r"looked at\)", r.reason), r.reason
    small = cv2.resize(other, (other.shape[1] // 2, other.shape[0] // 2))
    pad = np.zeros((face.shape[0], small.shape[1], 3), np.uint8)
    pad[: small.shape[0]] = small
    two = np.ascontiguousarray(np.hstack([face, pad]))
    r = decide(site, test_models, detector, gate, still(two, wav, tmp_path), face_policy="deny")
    assert not r.granted
    assert "several faces in view (face policy 'deny' needs exactly one)" in r.reason
    r = decide(site, test_models, detector, gate, still(two, wav, tmp_path), face_policy="largest")
    assert r.granted and r.identity == "ann"  # the nearest (largest) face is ann's


def test_silence_clipping_and_the_single_modality_policy(site, test_models, detector, gate,  # noqa: F811
                                                         fixtures, tmp_path):
    face, wav = load_image(fixtures / FACE), load_audio(fixtures / VOICE)
    r = decide(site, test_models, detector, gate, still(face, np.zeros_like(wav), tmp_path))
    assert not r.granted
    assert r.reason == ("no usable voice: silence only (level -200 dBFS < -50 dBFS) "
                        "(policy needs both)")
    with pytest.raises(ConfigError, match="--unsafe-no-liveness"):  # item 3: never by default
        decide(site, test_models, detector, gate, still(face, np.zeros_like(wav), tmp_path),
               missing_modality="single")
    r = decide(site, test_models, detector, gate, still(face, np.zeros_like(wav), tmp_path),
               missing_modality="single", loop=replace(LOOP, unsafe_no_liveness=True))
    assert r.granted and r.liveness.startswith("not checked: face only (silence only")
    assert r.reason.startswith("UNSAFE mode, no liveness check: face matches ann")
    loud = np.clip(wav * 30.0, -1.0, 1.0).astype(np.float32)
    r = decide(site, test_models, detector, gate, still(face, loud, tmp_path))
    assert not r.granted and "no usable voice: audio clipped (" in r.reason


def test_audio_at_the_wrong_sample_rate(site, test_models, detector, gate, fixtures):  # noqa: F811
    home, key = site
    face, wav = load_image(fixtures / FACE), load_audio(fixtures / VOICE, 8000)
    with ModelBundle.load(test_models) as bundle:
        handle = GalleryHandle(home / "gallery.db", key)
        verifier = Verifier(bundle, handle, PipelineConfig(min_speech_s=0.5), detector, gate)
        loop = AccessLoop(verifier, LOOP)
        out = loop.step(Batch([Frame(0.0, face)], AudioChunk(0.0, wav[:8000], 8000)))
        out += loop.step(Batch([Frame(1.0, face)], AudioChunk(1.0, wav[8000:], 8000), ended=True))
        handle.close()
    [r] = out
    assert not r.granted
    assert r.reason == "no usable voice: audio at 8000 Hz, expected 16000 Hz (policy needs both)"
    clip = ReplaySource.from_image_audio(fixtures / FACE, fixtures / VOICE).clip
    clip.sample_rate = 8000
    with pytest.raises(Exception, match="replay needs 16000 Hz audio, got 8000 Hz"):
        ReplaySource(clip)


# ----------------------------------------------------------------- models and thresholds
def test_operating_points_for_other_models(site, test_models, fixtures, tmp_path, capsys):  # noqa: F811
    home, _ = site
    models = tmp_path / "models"
    shutil.copytree(test_models, models)
    fuser = Fuser({"face": Calibration(1, 0), "voice": Calibration(1, 0)},
                  {frozenset({"face", "voice"}): SubsetFusion({"face": 1, "voice": 1}, 0)})
    op = OperatingPoints({"face": "0" * 64, "voice": "1" * 64}, "2" * 64, fuser, ())
    save_operating_points(op, models / "operating_points.yaml")
    with pytest.raises(ModelError, match="is stale: it belongs to face model sha256 000000000000"):
        ModelBundle.load(models)
    code, doc, err = run_json(["--face", str(fixtures / FACE), "--voice", str(fixtures / VOICE),
                               "--models", str(models), "--gallery", str(home / "gallery.db"),
                               "--key-file", str(home / "gallery.key")], capsys)
    assert code == 2 and not doc["granted"] and "operating_points.yaml is stale" in doc["reason"]
    assert err.count("\n") == 1


def test_stale_engine(site, test_models, fixtures, tmp_path, capsys):  # noqa: F811
    home, _ = site
    models = tmp_path / "models"
    shutil.copytree(test_models, models)
    sha = json.loads((models / "manifest.json").read_text())["models"]["face"]["sha256"]
    engine = models / "engines" / "abc" / "model.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"not really an engine")
    built = EngineKey(sha, "8.5.2", "Orin", "8.7", "R35.4.1", "int8", {"face": [[1, 3, 112, 112]] * 3})
    write_sidecar(engine, built)
    here = EngineKey(sha, "10.3.0", "Orin", "8.7", "R36.4.0", "int8", {"face": [[1, 3, 112, 112]] * 3})
    with pytest.raises(ModelError, match="TensorRT: engine built with 8.5.2, this machine has 10.3.0"):
        check_engine(engine, here)  # what a Jetson reports for this file
    code, doc, err = run_json(["--backend", "tensorrt", "--face", str(fixtures / FACE),
                               "--voice", str(fixtures / VOICE), "--models", str(models),
                               "--gallery", str(home / "gallery.db"),
                               "--key-file", str(home / "gallery.key")], capsys)
    assert code == 2 and not doc["granted"] and "engine" in doc["reason"]
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- the gallery
def test_locked_gallery_denies_then_recovers(site, test_models, detector, gate, fixtures,  # noqa: F811
                                             tmp_path):
    home, key = site
    face, wav = load_image(fixtures / FACE), load_audio(fixtures / VOICE)
    before = (home / "gallery.db").read_bytes()
    blocker = sqlite3.connect(home / "gallery.db", isolation_level=None)
    blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        handle = GalleryHandle(home / "gallery.db", key, timeout=0.1)
        r = decide(site, test_models, detector, gate, still(face, wav, tmp_path), handle=handle)
        assert not r.granted and "is locked by another process" in r.reason
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    r = decide(site, test_models, detector, gate, still(face, wav, tmp_path))
    assert r.granted and r.identity == "ann"
    with Gallery.open(home / "gallery.db", key) as g:
        assert [e.name for e in g.list()] == ["ann"]
    assert len(before) > 0


def test_corrupt_gallery_is_a_denial_and_left_untouched(site, test_models, detector, gate,  # noqa: F811
                                                        fixtures, tmp_path):
    _, key = site
    bad = tmp_path / "gallery.db"
    bad.write_bytes(os.urandom(8192))
    before = bad.read_bytes()
    face, wav = load_image(fixtures / FACE), load_audio(fixtures / VOICE)
    r = decide(site, test_models, detector, gate, still(face, wav, tmp_path),
               handle=GalleryHandle(bad, key))
    assert not r.granted and "is not a SQLite database (corrupt or the wrong file)" in r.reason
    assert bad.read_bytes() == before


def test_missing_portaudio_is_one_line(site, test_models, capsys):  # noqa: F811
    try:
        import sounddevice  # noqa: F401
    except OSError:
        pass  # this machine: the wheel is there, the PortAudio library is not
    else:
        pytest.skip("PortAudio is installed here: the live path would wait for a camera")
    home, _ = site
    code = main(["run", "--camera", "0", "--once", "--json", "--models", str(test_models),
                 "--gallery", str(home / "gallery.db"), "--key-file", str(home / "gallery.key")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and not doc["granted"]
    assert doc["reason"].startswith("microphone capture needs the PortAudio library: apt-get "
                                    "install libportaudio2")
