"""Enrolment from photos, recordings, clips and a live-like source; atomicity; the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import soundfile as sf
from runtime_models import detector, gate, test_models  # noqa: F401 (pytest fixtures)

from edge_runtime.access.enroll import (
    ENROL_VOICE_S,
    Enroller,
    EnrollmentError,
    enrol_voice_count,
    enroll_people,
    voice_enough,
)
from edge_runtime.capture import ReplaySource
from edge_runtime.cli import main
from edge_runtime.frontend.video import decode_clip
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.keys import create_key, load_key

FACE = "lfw/Tony_Blair/Tony_Blair_0001.jpg"
VOICE = "speechocean762/SPEAKER0120/001200015.flac"


@pytest.fixture
def enroller(test_models, detector, gate):  # noqa: F811
    with ModelBundle.load(test_models) as bundle:
        yield Enroller(bundle, detector, gate, min_speech_s=0.5, frames_per_clip=3)


@pytest.fixture
def gallery(tmp_path):
    with Gallery.open(tmp_path / "gallery.db", os.urandom(32)) as g:
        yield g


def _bad_samples(tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(32000, np.float32), 16000)
    return blank, quiet


def test_files_each_sample_checked_and_reported(enroller, gallery, fixtures, tmp_path):
    blank, quiet = _bad_samples(tmp_path)
    result = enroller.enroll_files(
        gallery, "ann", faces=[fixtures / FACE, blank, fixtures / "lfw/Tony_Blair/Tony_Blair_0002.jpg"],
        voices=[fixtures / VOICE, quiet])
    assert result.n_samples == {"face": 2, "voice": 1}
    refused = {s.source: s.reason for s in result.samples if not s.ok}
    assert refused[str(blank)].startswith("no face found") and "1 of 1 frames" in refused[str(blank)]
    assert "silence only" in refused[str(quiet)]
    [entry] = gallery.list()
    assert entry.name == "ann" and dict(entry.n_samples) == {"face": 2, "voice": 1}
    assert result.summary() == (f"enrolled ann: face (2 samples), voice (1 sample), "
                                f"{result.voice_speech_s:.1f} s of speech; 2 sample(s) refused")
    # one short recording: enrolled, but the operator is told the template is thin
    assert 1.0 < result.voice_speech_s < ENROL_VOICE_S
    [warning] = result.warnings
    assert "'ann'" in warning and f"under the {ENROL_VOICE_S:g} s" in warning


def test_enrol_voice_count_takes_speech_until_enough():
    """A template from ENROL_VOICE_S of speech: the first recordings until that much, at least
    3 of them, all of them when they hold less."""
    assert enrol_voice_count([6.0, 6.0, 6.0, 6.0]) == 3  # 18 s: enough at the 3rd
    assert enrol_voice_count([2.5] * 12) == 6  # 15 s at the 6th
    assert enrol_voice_count([20.0, 1.0, 1.0, 1.0]) == 3  # one long one: still 3
    assert enrol_voice_count([2.0, 2.0]) == 2  # less than enough: all
    assert enrol_voice_count([2.0] * 5, until_s=0.0) == 3


def test_door_enrolment_stops_at_enough_speech_and_keeps_the_rest(enroller, gallery, fixtures):
    """A door's recordings (real speechocean762 clips): enrolment takes the first ones until the
    voiced seconds asked for and reports how many it took; the later ones stay for probes."""
    utts = sorted(str(x) for x in (fixtures / "speechocean762").glob("*/*.flac"))
    person = {"name": "door", "photos": [fixtures / FACE], "utterances": utts}
    everything = enroll_people(enroller, gallery, [person], voice_s=1e9)
    assert everything.voice_used == {"door": len(utts) - 1}  # the last one is always a probe
    few = enroll_people(enroller, gallery, [person], voice_s=4.0)
    k = few.voice_used["door"]
    assert k == 3 and few.enrolled == ["door"]  # > 4 s voiced in 3 clips: the minimum
    [entry] = gallery.list()
    assert dict(entry.n_samples) == {"face": 1, "voice": 3}


def test_a_requested_modality_without_usable_sample_changes_nothing(enroller, gallery, fixtures,
                                                                    tmp_path):
    enroller.enroll_files(gallery, "ann", faces=[fixtures / FACE], voices=[fixtures / VOICE])
    before = {m: gallery.templates(m, enroller.bundle.hashes[m])[1].copy() for m in ("face", "voice")}
    blank, quiet = _bad_samples(tmp_path)
    with pytest.raises(EnrollmentError, match="no usable voice sample .*silence only.*unchanged"):
        enroller.enroll_files(gallery, "ann", faces=[fixtures / "lfw/Tony_Blair/Tony_Blair_0003.jpg"],
                              voices=[quiet])
    with pytest.raises(EnrollmentError, match="no usable face sample"):
        enroller.enroll_files(gallery, "bob", faces=[blank])
    for m, old in before.items():
        np.testing.assert_array_equal(gallery.templates(m, enroller.bundle.hashes[m])[1], old)
    assert [e.name for e in gallery.list()] == ["ann"]


def test_clip_and_live_capture(enroller, gallery, fixtures):
    clip = decode_clip(fixtures / "grid/bbaf2n.mpg")
    first, _ = clip.split(1.5)
    result = enroller.enroll_clip(gallery, "grid", first)
    assert result.n_samples == {"face": 3, "voice": 1}
    prompts = []
    live = ReplaySource(clip, realtime=False)  # stands in for camera + microphone
    result = enroller.enroll_live(gallery, "live", live, prompt=prompts.append, n_faces=3,
                                  speech_s=0.5)
    assert prompts[0] == "Look at the camera." and prompts[1].startswith("Now say:")
    assert result.n_samples == {"face": 3, "voice": 1}
    assert [e.name for e in gallery.list()] == ["grid", "live"]


KILLER = r"""
import os, sys
import numpy as np
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.keys import load_key
g = Gallery.open(sys.argv[1], load_key(sys.argv[2]))
rng = np.random.default_rng(0)
h = {"face": "a" * 64}
batch = 0
while True:
    with g.batch():  # 300 people per transaction: most of the time is spent inside one
        for i in range(300):
            g.enroll(f"p{batch}_{i}", {"face": rng.standard_normal(128)}, {"face": 1}, h)
    batch += 1
    print("committed", batch, flush=True)
"""


def test_killing_the_process_mid_enrolment_leaves_the_gallery_intact(tmp_path):
    key_file = tmp_path / "k"
    key = create_key(key_file)
    path = tmp_path / "gallery.db"
    ann = np.random.default_rng(1).standard_normal(128).astype(np.float32)
    with Gallery.open(path, key) as g:
        g.enroll("ann", {"face": ann}, {"face": 1}, {"face": "a" * 64})
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path), str(key_file)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("committed 1")
        time.sleep(0.15)  # now inside a later, uncommitted batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Gallery.open(path, load_key(key_file)) as g:
        n = g.count()
        assert (n - 1) % 300 == 0 and n >= 301  # whole batches only, never a partial one
        names, matrix = g.templates("face", "a" * 64)
        np.testing.assert_allclose(matrix[names.index("ann")], ann / np.linalg.norm(ann),
                                   rtol=1e-6)


def test_cli_enroll_then_gallery_list_export_remove(test_models, fixtures, tmp_path,  # noqa: F811
                                                    monkeypatch, capsys):
    monkeypatch.setenv("EDGEPIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEPIN_GALLERY_KEY", raising=False)
    common = ["--models", str(test_models)]
    assert main(["enroll", "ann", "--face", str(fixtures / FACE), "--voice",
                 str(fixtures / VOICE), "--min-speech", "0.5", *common]) == 2
    assert "no gallery key" in capsys.readouterr().err  # one line, says how to make one
    assert main(["enroll", "ann", "--face", str(fixtures / FACE), "--voice",
                 str(fixtures / VOICE), "--min-speech", "0.5", "--create-key", *common]) == 0
    captured = capsys.readouterr()
    assert "enrolled ann: face (1 sample), voice (1 sample)" in captured.out
    assert captured.err.startswith("warning: 'ann': voice template from ")  # one short clip
    key_file = tmp_path / "home" / "gallery.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert main(["gallery", "list", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["name"] == "ann" and entry["modalities"] == ["face", "voice"]
    assert main(["gallery", "export", str(tmp_path / "inventory.json")]) == 0
    doc = json.loads((tmp_path / "inventory.json").read_text())
    assert doc["identities"][0]["name"] == "ann" and not doc["templates_included"]
    assert main(["gallery", "remove", "zed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'zed' is not enrolled" in err
    assert main(["gallery", "remove", "ann"]) == 0
    assert main(["gallery", "list"]) == 0
    assert "0 identities" in capsys.readouterr().out


def test_voice_probe_keeps_only_the_first_seconds_of_speech(enroller, fixtures, monkeypatch):
    # what `edgepin calibrate` uses to score probes as long as the live loop's: the model sees
    # exactly probe_s of voiced audio, and a shorter probe gives a different embedding
    from calibration.score_sets import embed_voices
    from edge_runtime.frontend.audio import TARGET_SR
    from train.datasets import Sample

    path = next((fixtures / "speechocean762").rglob("*.flac"))
    seen: list[int] = []
    real = enroller.bundle.embed_voice
    monkeypatch.setattr(enroller.bundle, "embed_voice", lambda x: (seen.append(len(x)), real(x))[1])
    got = embed_voices(enroller.bundle, [Sample("u", path, modality="voice")], enroller, probe_s=1.0)
    assert seen[0] > TARGET_SR and seen[1] == TARGET_SR and not got.skipped
    full, short = got.emb[0], got.probe_emb[0]
    assert float(full @ short) < 0.9999


def test_a_refused_recording_counts_as_no_speech_as_the_veto_calibration_counts_it(
        enroller, gallery, fixtures, tmp_path):
    """Enrolment and the veto's calibration apply one rule (voice_enough): a recording that is
    refused (here silence) is taken with 0 s of speech and does not count towards the 3
    recordings a template averages; enrolment goes on to the next."""
    _, quiet = _bad_samples(tmp_path)
    utts = sorted(str(x) for x in (fixtures / "speechocean762").glob("*/*.flac"))
    got = enroller.enroll_files(gallery, "q", voices=[str(quiet), *utts], voice_until_s=4.0)
    assert got.voice_used == 4 and got.n_samples == {"voice": 3}  # 3 usable + the refused
    assert not voice_enough([0.0, 2.0, 2.5], 4.0)  # 4.5 s, but from 2 usable recordings
    assert voice_enough([0.0, 2.0, 2.5, 1.0], 4.0)
    assert enrol_voice_count([0.0, 2.0, 2.5, 1.0, 9.0], 4.0) == 4
