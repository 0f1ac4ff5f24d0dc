"""The door as an attacker and a careless operator see it (issue 18): each test reproduces one
attack or mistake through the real `edgepin` CLI in a subprocess, and checks that it is now
refused, detected or made fail-secure. Media are the bundled LFW / speechocean762 excerpts;
the models are the small test bundle (tests/runtime_models.py), never an accuracy claim.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from runtime_models import detector, gate, test_models  # noqa: F401 (pytest fixtures)

from edge_runtime.access.enroll import Enroller
from edge_runtime.frontend.audio import load_audio
from edge_runtime.models import ModelBundle
from edge_runtime.store.audit import AuditLog
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.keys import create_key, load_key

REPO = Path(__file__).resolve().parents[1]
ANN = ("lfw/Tony_Blair/Tony_Blair_0001.jpg", "speechocean762/SPEAKER0120/001200015.flac")
BOB = ("lfw/Serena_Williams/Serena_Williams_0001.jpg", "speechocean762/SPEAKER0036/000360034.flac")
GPIO_MODULE = """
import os, time

def line(value):
    with open(os.environ["DOOR_STATE"], "a") as f:
        f.write("1\\n" if value else "0\\n")
    if value and os.environ.get("DOOR_HOLD"):
        time.sleep(float(os.environ["DOOR_HOLD"]))
"""


def cli(*args: str, env: dict | None = None, timeout: float = 120, extra_path: Path | None = None,
        **popen) -> subprocess.CompletedProcess:
    """`edgepin ARGS` in a fresh interpreter, this checkout first on the path."""
    path = os.pathsep.join(str(p) for p in (extra_path, REPO) if p)
    full = {**os.environ, "PYTHONPATH": path, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], env=full,
                          capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture(scope="module")
def media(fixtures, tmp_path_factory):
    """Photos and 2-second recordings (short attempts: faster tests), plus silence."""
    folder = tmp_path_factory.mktemp("media")
    out = {}
    for name, (face, voice) in (("ann", ANN), ("bob", BOB)):
        wav = folder / f"{name}.wav"
        sf.write(wav, load_audio(fixtures / voice)[:32000], 16000)
        out[name] = (fixtures / face, wav)
    silence = folder / "silence.wav"
    sf.write(silence, np.zeros(32000, np.float32), 16000)
    out["silence"] = silence
    return out


@pytest.fixture
def site(test_models, detector, gate, media, tmp_path):  # noqa: F811
    """A fresh door: key, gallery with ann and bob, the options every command needs."""
    key = create_key(tmp_path / "gallery.key")
    with ModelBundle.load(test_models) as bundle, Gallery.open(tmp_path / "gallery.db", key) as g:
        enroller = Enroller(bundle, detector, gate, min_speech_s=0.5)
        for name in ("ann", "bob"):
            enroller.enroll_files(g, name, faces=[media[name][0]], voices=[media[name][1]])
    gallery = ["--gallery", str(tmp_path / "gallery.db"), "--key-file",
               str(tmp_path / "gallery.key")]
    return {"home": tmp_path, "key": key, "gallery": gallery,
            "models": ["--models", str(test_models)]}


def attempt(site, media, face_of: str, voice_of: str, *extra: str, **kw):
    face = media[face_of][0]
    voice = media[voice_of][1] if voice_of != "silence" else media["silence"]
    return cli("run", "--once", "--json", "--fast", "--no-status", "--lockout", "0",
               "--face", str(face), "--voice", str(voice), *site["models"], *site["gallery"],
               *extra, **kw)


def audit_rows(site) -> list:
    path = site["home"] / "audit.db"
    if not path.exists():
        return []
    with AuditLog.open(path, key=site["key"], create=False) as log:
        return log.tail(1000)


# ------------------------------------------------------------------ 1. export overwrites
def test_gallery_export_never_overwrites_key_log_or_gallery(site, media):
    home = site["home"]
    attempt(site, media, "ann", "ann")  # makes audit.db and its anchor
    precious = {p: p.read_bytes() for p in (home / "gallery.key", home / "audit.db",
                                            home / "gallery.db", home / "audit.db.anchor")}
    for target in precious:
        for force in ([], ["--force"]):
            r = cli("gallery", "export", str(target), *force, *site["gallery"])
            assert r.returncode == 2 and "refusing" in r.stderr, (target, r.stderr)
    assert all(p.read_bytes() == data for p, data in precious.items())
    moved_key = home / "elsewhere.key"  # a key file anywhere, recognised by its contents
    moved_key.write_bytes(precious[home / "gallery.key"])
    r = cli("gallery", "export", str(moved_key), "--force", *site["gallery"])
    assert r.returncode == 2 and moved_key.read_bytes() == precious[home / "gallery.key"]
    out = home / "inventory.json"
    assert cli("gallery", "export", str(out), *site["gallery"]).returncode == 0
    r = cli("gallery", "export", str(out), *site["gallery"])
    assert r.returncode == 2 and "--force" in r.stderr
    assert cli("gallery", "export", str(out), "--force", *site["gallery"]).returncode == 0
    assert json.loads(out.read_text())["format"] == "edgepin-gallery-export"
    assert load_key(home / "gallery.key") == site["key"]


# ------------------------------------------------------------------ 2. fail-secure door
@pytest.fixture
def gpio(tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "doorgpio.py").write_text(GPIO_MODULE)
    return folder, tmp_path / "door_state"


def _states(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_door_is_locked_at_start_and_after_a_normal_once_exit(site, media, gpio):
    plugin, state = gpio
    r = attempt(site, media, "ann", "ann", "--actuator-gpio", "doorgpio:line",
                extra_path=plugin, env={"DOOR_STATE": str(state)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["granted"]
    states = _states(state)  # locked at start, pulsed open, locked again at exit
    assert states[:2] == ["0", "1"] and states[-1] == "0"


def _run_until_open(site, media, gpio, hold: str):
    plugin, state = gpio
    env = {**os.environ, "PYTHONPATH": f"{plugin}{os.pathsep}{REPO}",
           "DOOR_STATE": str(state), "DOOR_HOLD": hold}
    args = [sys.executable, "-m", "edge_runtime.cli", "run", "--once", "--json", "--fast",
            "--lockout", "0", "--face", str(media["ann"][0]), "--voice", str(media["ann"][1]),
            *site["models"], *site["gallery"], "--actuator-gpio", "doorgpio:line"]
    # A shell's background job (`make test &`, nohup) inherits SIGINT ignored, and Python then
    # keeps ignoring it, as POSIX intends; the child gets the default action so Ctrl-C is tested.
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while "1" not in _states(state):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc, state


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_door_is_locked_when_the_run_is_stopped_by_a_signal(site, media, gpio, sig, code):
    proc, state = _run_until_open(site, media, gpio, hold="30")  # the driver hangs while open
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == code
    assert _states(state)[-1] == "0"


def test_door_is_locked_when_the_run_dies_of_an_exception(site, media, gpio):
    """stdout closed by the reader: printing the decision raises after the door opened."""
    proc, state = _run_until_open(site, media, gpio, hold="1")
    proc.stdout.close()  # the JSON line will hit a broken pipe
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode != 0
    assert _states(state)[-1] == "0"


# ------------------------------------------------------------ 3. still photo, face only
def test_face_only_mode_needs_an_explicit_unsafe_flag_and_says_so(site, media):
    r = attempt(site, media, "ann", "silence", "--missing-modality", "single")
    assert r.returncode == 2 and "--unsafe-no-liveness" in r.stderr
    assert not json.loads(r.stdout)["granted"] and audit_rows(site) == []
    r = attempt(site, media, "ann", "silence", "--missing-modality", "single",
                "--unsafe-no-liveness")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["granted"] and doc["reason"].startswith("UNSAFE mode")
    assert "UNSAFE mode (--unsafe-no-liveness)" in r.stderr  # run's start line
    assert audit_rows(site)[-1].reason.startswith("UNSAFE mode, no liveness check")


# ------------------------------------------------- 4. removed person restored with sqlite3
def _rows(db: Path, name: str) -> list[tuple]:
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT * FROM templates WHERE name = ?", (name,)).fetchall()


def test_removed_person_restored_with_sqlite_is_quarantined(site, media):
    db = site["home"] / "gallery.db"
    stolen = _rows(db, "ann")
    assert cli("gallery", "remove", "ann", *site["gallery"]).returncode == 0
    raw = sqlite3.connect(db)
    raw.executemany(f"INSERT INTO templates VALUES ({', '.join('?' * len(stolen[0]))})", stolen)
    raw.commit()
    raw.close()
    r = attempt(site, media, "ann", "ann")
    assert r.returncode == 1 and not json.loads(r.stdout)["granted"]
    listed = cli("gallery", "list", *site["gallery"])
    assert "ann\t" in listed.stdout and "QUARANTINED: row ann/face is not in the manifest" \
        in listed.stdout
    assert attempt(site, media, "bob", "bob").returncode == 0  # everyone else is served


def test_deleted_rows_and_rollback_are_reported(site, media):
    db = site["home"] / "gallery.db"
    old_copy = site["home"] / "old.db"
    old_copy.write_bytes(db.read_bytes())  # the attacker's backup, taken before the removal
    assert cli("gallery", "remove", "ann", *site["gallery"]).returncode == 0
    raw = sqlite3.connect(db)
    raw.execute("DELETE FROM templates WHERE name = 'bob' AND modality = 'voice'")
    raw.commit()
    raw.close()
    listed = cli("gallery", "list", *site["gallery"])
    assert "QUARANTINED: row bob/voice was deleted outside edgepin" in listed.stdout
    os.replace(old_copy, db)  # rollback: ann is back in an authentic older copy
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    r = attempt(site, media, "ann", "ann")
    assert r.returncode == 2 and "was rolled back" in r.stderr
    assert audit_rows(site) == []


# ------------------------------------------------------------- 5. tamper-evident audit
def test_audit_log_rewrite_and_truncation_are_detected(site, media):
    import hashlib

    for _ in range(3):
        attempt(site, media, "ann", "bob")  # denied: three rows
    ok = cli("audit", "verify", *site["gallery"])
    assert ok.returncode == 0 and "3 records" in ok.stdout
    db = site["home"] / "audit.db"
    raw = sqlite3.connect(db)
    raw.execute("DROP TRIGGER events_no_update")
    raw.execute("DROP TRIGGER events_no_delete")
    raw.execute("UPDATE events SET decision = 'granted', identity = 'mallory' WHERE id = 2")
    previous = "0" * 64  # the old, unkeyed chain, which anyone could recompute
    for rid, *row in raw.execute("SELECT id, time, decision, identity, scores, latencies_ms,"
                                 " reason, source FROM events ORDER BY id").fetchall():
        payload = json.dumps([previous, *row], ensure_ascii=False, separators=(",", ":"))
        previous = hashlib.sha256(payload.encode()).hexdigest()
        raw.execute("UPDATE events SET chain = ? WHERE id = ?", (previous, rid))
    raw.commit()
    r = cli("audit", "verify", *site["gallery"])
    assert r.returncode == 2 and "tampered with at or before record id 1" in r.stderr
    r = attempt(site, media, "ann", "ann")  # run checks the log at start-up
    assert r.returncode == 2 and "tampered" in r.stderr
    rotated = cli("audit", "rotate", *site["gallery"])
    assert rotated.returncode == 0 and "CHAIN BROKEN" in rotated.stdout
    for _ in range(2):
        assert attempt(site, media, "ann", "ann").returncode == 0
    raw = sqlite3.connect(db)
    raw.execute("DROP TRIGGER events_no_delete")
    raw.execute("DELETE FROM events WHERE id = 2")  # hide the newest row
    raw.commit()
    raw.close()
    r = cli("audit", "verify", *site["gallery"])
    assert r.returncode == 2 and "truncated" in r.stderr


# ---------------------------------------------------- 6. lockout across --once processes
def test_lockout_holds_across_separate_once_runs(site, media):
    lock = ["--lockout", "3", "--lockout-window", "600", "--lockout-time", "600"]
    for _ in range(3):
        r = attempt(site, media, "ann", "bob", *lock)
        assert r.returncode == 1 and json.loads(r.stdout)["scores"]
    r = attempt(site, media, "ann", "ann", *lock)  # the genuine person, a fresh process
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["reason"].startswith("locked out after 3 failed attempts")
    assert audit_rows(site)[-1].reason == doc["reason"]


# --------------------------------------------------------------- 12. start-up errors
def test_configuration_errors_are_start_up_errors_without_audit_rows(site, media, tmp_path):
    wrong_key = tmp_path / "wrong.key"
    create_key(wrong_key)
    cases = {
        "wrong key": ["--key-file", str(wrong_key)],
        "missing gallery": ["--gallery", str(tmp_path / "nope.db")],
        "bad actuator spec": ["--actuator-gpio", "no_such_module:line"],
        "missing command": ["--actuator-cmd", "/no/such/opener"],
        "unreachable URL": ["--actuator-url", "http://127.0.0.1:9/open"],
    }
    for what, extra in cases.items():
        r = attempt(site, media, "ann", "ann", *extra)
        assert r.returncode == 2, (what, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "edgepin run: error:" in r.stderr
    assert audit_rows(site) == []


def test_failing_actuator_is_reported_in_decision_exit_code_and_audit(site, media):
    r = attempt(site, media, "ann", "ann", "--actuator-cmd", "false")
    doc = json.loads(r.stdout)
    assert r.returncode == 3 and doc["granted"] and doc["actuator"].startswith("failed:")
    assert "DOOR NOT OPENED" in doc["reason"]
    assert "DOOR NOT OPENED" in audit_rows(site)[-1].reason


# ------------------------------------------------------------------- 13. file modes
def test_new_gallery_audit_and_anchors_are_owner_only(media, test_models, tmp_path):  # noqa: F811
    home = tmp_path / "fresh"
    r = cli("enroll", "ann", "--face", str(media["ann"][0]), "--voice", str(media["ann"][1]),
            "--min-speech", "0.5", "--create-key", "--gallery", str(home / "gallery.db"),
            "--models", str(test_models), env={"EDGEPIN_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    r = cli("run", "--once", "--fast", "--face", str(media["ann"][0]), "--voice",
            str(media["ann"][1]), "--gallery", str(home / "gallery.db"), "--models",
            str(test_models))
    assert r.returncode == 0, r.stderr
    for name in ("gallery.db", "gallery.key", "audit.db", "gallery.db.anchor", "audit.db.anchor"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


# --------------------------------------------------------------------- 14. re-enrol
def test_re_enrolling_needs_replace_and_replaces_the_whole_record(site, media):
    r = cli("enroll", "ann", "--face", str(media["bob"][0]), *site["models"], *site["gallery"])
    assert r.returncode == 2 and "--replace" in r.stderr and "replace=True" not in r.stderr
    r = cli("enroll", "ann", "--face", str(media["bob"][0]), "--replace", *site["models"],
            *site["gallery"])
    assert r.returncode == 0, r.stderr
    with Gallery.open(site["home"] / "gallery.db", site["key"]) as g:
        assert {e.name: e.modalities for e in g.list()}["ann"] == ("face",)  # no old voice


# ------------------------------------------------------------------- 9. key creation
def test_create_key_refused_for_an_existing_gallery(site, media):
    missing = site["home"] / "other.key"
    r = cli("enroll", "carl", "--face", str(media["ann"][0]), "--create-key", "--key-file",
            str(missing), "--gallery", str(site["home"] / "gallery.db"), *site["models"])
    assert r.returncode == 2 and "--create-key refused" in r.stderr
    assert not missing.exists()


def test_parallel_first_enrolments_agree_on_one_key(tmp_path):
    script = textwrap.dedent("""
        import base64, sys, time
        from pathlib import Path
        from edge_runtime.store.gallery_handle import resolve_key
        start = float(sys.argv[2])
        while time.time() < start:
            pass
        key = resolve_key(None, Path(sys.argv[1]) / "gallery.db", create=True)
        print(base64.b64encode(key).decode())
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EDGEPIN_GALLERY_KEY", None)
    for trial in range(3):
        home = tmp_path / f"t{trial}"
        home.mkdir()
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", script, str(home), str(start)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        assert len({out.strip() for out, _ in outs}) == 1  # one key, the one on disk
        assert load_key(home / "gallery.key") == __import__("base64").b64decode(outs[0][0])


# ----------------------------------------------------------------- 11. live devices
def _fake_sounddevice(folder: Path) -> Path:
    """PortAudio is not installed here: a stand-in module with one input device, 0."""
    folder.mkdir(exist_ok=True)
    (folder / "sounddevice.py").write_text(textwrap.dedent("""
        DEVICES = [{"name": "fake mic", "max_input_channels": 1, "default_samplerate": 16000}]
        def query_devices(device=None, kind=None):
            if device is None and kind is None:
                return DEVICES
            if device in (None, 0, "fake mic"):
                return DEVICES[0]
            raise ValueError(f"No input device matching {device!r}")
        class InputStream:
            def __init__(self, *a, **k):
                raise OSError("fake: no real audio device")
    """))
    return folder


def test_absent_devices_are_start_up_errors_and_never_hang(site, tmp_path):
    fake = _fake_sounddevice(tmp_path / "fake_sd")
    r = cli("run", "--camera", "0", "--mic", "3", "--once", *site["models"], *site["gallery"],
            extra_path=fake, timeout=60)
    assert r.returncode == 2 and "--mic 3: no such input device" in r.stderr
    assert "inputs here: 0: fake mic" in r.stderr
    node = "/dev/video57"
    assert not Path(node).exists()
    r = cli("run", "--camera", node, "--once", *site["models"], *site["gallery"],
            extra_path=fake, timeout=60)
    assert r.returncode == 2 and f"camera {node}: no such device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_once_gives_up_reconnecting_with_one_log_line_per_attempt(caplog):
    from edge_runtime.capture.base import BackoffPolicy
    from edge_runtime.capture.camera import open_camera

    def dead(spec):
        raise OSError("device vanished")

    cam = open_camera("0", backoff=BackoffPolicy(initial=0.01, cap=0.02, max_retries=2),
                      capture_factory=dead)
    with caplog.at_level("WARNING", logger="edge_runtime.capture.camera"):
        cam.start()
        deadline = time.monotonic() + 10
        while not cam.poll(0.05).ended:
            assert time.monotonic() < deadline, "the reconnect loop is not bounded"
        cam.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "reconnect attempt 1 failed" in lines[0]
    assert "giving up after 3 attempts" in lines[-1]
    assert all("\n" not in line for line in lines)


def test_unmeasurable_target_far_is_a_start_up_error(site, media, test_models, tmp_path):  # noqa: F811
    import shutil

    from edge_runtime.operating_points import (
        Calibration,
        Fuser,
        OperatingPoints,
        SubsetFusion,
        save_operating_points,
    )

    models = tmp_path / "models_op"
    shutil.copytree(test_models, models)
    manifest = json.loads((models / "manifest.json").read_text())["models"]
    fuser = Fuser({"face": Calibration(1, 0), "voice": Calibration(1, 0)},
                  {frozenset({"face", "voice"}): SubsetFusion({"face": 1, "voice": 1}, 0)})
    op = OperatingPoints({m: manifest[m]["sha256"] for m in ("face", "voice")}, "2" * 64,
                         fuser, ())  # calibrated, but no threshold measured at any FAR
    save_operating_points(op, models / "operating_points.yaml")
    r = attempt(site, media, "ann", "ann", "--models", str(models), "--target-far", "1e-4")
    assert r.returncode == 2, r.stderr
    assert "--target-far 0.0001 cannot be used:" in r.stderr
    assert "has no threshold for face+voice at FAR 0.0001" in r.stderr
    assert audit_rows(site) == []
