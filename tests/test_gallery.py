"""Gallery: encryption at rest, atomic enrolment, migrations, refusal of bad files and keys.

Templates here are random unit vectors: these tests check storage, crypto and search
arithmetic, not recognition accuracy.
"""

from __future__ import annotations

import base64
import hashlib
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_runtime.errors import GalleryError
from edge_runtime.store.gallery import (
    GALLERY_APP_ID,
    KNOWN_DIMS,
    SCHEMA_VERSION,
    Gallery,
    associated_data,
    make_template,
)
from edge_runtime.store.keys import KEY_ENV, create_key, load_key

H1 = hashlib.sha256(b"face model 1").hexdigest()
H2 = hashlib.sha256(b"face model 2").hexdigest()
REPO = Path(__file__).resolve().parents[1]


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def enroll(g: Gallery, name: str, rng, model: str = H1, modalities=("face", "voice")) -> dict:
    t = {m: unit(rng, KNOWN_DIMS[m]) for m in modalities}
    g.enroll(name, t, {m: 3 for m in t}, {m: model for m in t})
    return t


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_round_trip_and_encrypted_at_rest(tmp_path, key, rng):
    path = tmp_path / "gallery.db"
    with Gallery.open(path, key) as g:
        alice = enroll(g, "alice", rng)
        bob = enroll(g, "bob", rng)
    with Gallery.open(path, key, create=False) as g:
        assert g.count() == 2
        entries = g.list()
        assert [e.name for e in entries] == ["alice", "bob"]
        assert entries[0].modalities == ("face", "voice")
        assert dict(entries[0].n_samples) == {"face": 3, "voice": 3}
        assert dict(entries[0].model_sha256) == {"face": H1, "voice": H1}
        names, faces = g.templates("face", H1)
        assert names == ["alice", "bob"] and faces.dtype == np.float32
        np.testing.assert_allclose(faces, np.stack([alice["face"], bob["face"]]), atol=1e-6)
        _, voices = g.templates("voice", H1)
        np.testing.assert_allclose(voices[1], bob["voice"], atol=1e-6)
        assert not faces.flags.writeable  # the cached matrix cannot be corrupted by callers
        assert g.remove("alice") is True
        assert g.remove("alice") is False
        assert g.count() == 1
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gallery"))
    assert bob["face"].astype("<f4").tobytes()[:64] not in stored  # only ciphertext on disk


def test_replace_keeps_other_modalities_and_created(tmp_path, key, rng):
    with Gallery.open(tmp_path / "g.db", key) as g:
        enroll(g, "alice", rng, modalities=("face",))
        first = g.list()[0]
        with pytest.raises(GalleryError, match="already enrolled"):
            g.enroll("alice", {"face": unit(rng, 128)}, {"face": 1}, {"face": H1}, replace=False)
        new_face = enroll(g, "alice", rng, modalities=("face",))["face"]
        enroll(g, "alice", rng, modalities=("voice",))
        entry = g.list()[0]
        assert entry.modalities == ("face", "voice")
        assert entry.created == first.created and entry.updated > first.updated
        np.testing.assert_allclose(g.templates("face", H1)[1][0], new_face, atol=1e-6)


def test_wrong_key_refused(tmp_path, key, rng):
    path = tmp_path / "g.db"
    with Gallery.open(path, key) as g:
        enroll(g, "alice", rng)
    with pytest.raises(GalleryError, match=r"cannot decrypt .*wrong key\?"):
        Gallery.open(path, os.urandom(32))
    with pytest.raises(GalleryError, match="32 bytes"):
        Gallery.open(path, b"short")


def test_key_file_permissions_and_creation(tmp_path):
    path = tmp_path / "gallery.key"
    made = create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == made and len(made) == 32
    with pytest.raises(GalleryError, match="already exists"):
        create_key(path)
    assert load_key(path) == made  # the existing key survived
    path.chmod(0o644)
    with pytest.raises(GalleryError) as err:
        load_key(path)
    assert str(path) in str(err.value) and f"chmod 600 {path}" in str(err.value)
    path.chmod(0o600)
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    short.chmod(0o600)
    with pytest.raises(GalleryError, match="16 bytes"):
        load_key(short)
    with pytest.raises(GalleryError, match="does not exist"):
        load_key(tmp_path / "missing.key")


def test_env_var_key(monkeypatch):
    secret = os.urandom(32)
    monkeypatch.setenv(KEY_ENV, base64.b64encode(secret).decode())
    assert load_key(None) == secret
    monkeypatch.setenv(KEY_ENV, "not-base64!!")
    with pytest.raises(GalleryError, match=KEY_ENV) as err:
        load_key(None)
    assert "not-base64" not in str(err.value)  # never echo a secret
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(GalleryError, match="no gallery key"):
        load_key(None)


def test_blob_moved_to_another_row_fails_clearly(tmp_path, key, rng):
    path = tmp_path / "g.db"
    with Gallery.open(path, key) as g:
        enroll(g, "alice", rng)
        enroll(g, "bob", rng)
    raw = sqlite3.connect(path)
    rows = dict(
        ((n, (nonce, ct)) for n, nonce, ct in raw.execute(
            "SELECT name, nonce, ciphertext FROM templates WHERE modality = 'face'"))
    )
    for name, other in (("alice", "bob"), ("bob", "alice")):
        raw.execute("UPDATE templates SET nonce = ?, ciphertext = ? WHERE name = ? AND "
                    "modality = 'face'", (*rows[other], name))
    raw.commit()
    raw.close()
    with Gallery.open(path, key) as g:  # both identities quarantined, never matched
        assert g.templates("face", H1)[0] == [] and g.templates("voice", H1)[0] == []
        assert {e.name: e.quarantined for e in g.list()} == {
            "alice": "row alice/face was altered outside edgepin",
            "bob": "row bob/face was altered outside edgepin"}


def test_template_from_another_model_refused(tmp_path, key, rng):
    with Gallery.open(tmp_path / "g.db", key) as g:
        alice = enroll(g, "alice", rng, model=H1, modalities=("face",))
        enroll(g, "bob", rng, model=H2, modalities=("face",))
        with pytest.raises(GalleryError, match="re-enrol: bob"):
            g.search("face", alice["face"], H1)
        assert g.templates("face", H1, skip_stale=True)[0] == ["alice"]
        assert g.search("face", alice["face"], H1, skip_stale=True)[0][0] == "alice"


def test_search_matches_brute_force_on_10000(tmp_path, key):
    rng = np.random.default_rng(0)
    n, dim = 10_000, 128
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    names = [f"id{i:05d}" for i in range(n)]
    with Gallery.open(tmp_path / "g.db", key) as g:
        with g.batch():  # one transaction: one fsync for 10 000 enrolments
            for name, v in zip(names, vecs, strict=True):
                g.enroll(name, {"face": v}, {"face": 1}, {"face": H1})
        assert g.count() == n
        g.search("face", vecs[0], H1)  # decrypts and caches the matrix
        queries = rng.standard_normal((20, dim)).astype(np.float32)
        start = time.perf_counter()
        results = [g.search("face", q, H1, top_k=5) for q in queries]
        per_query = (time.perf_counter() - start) / len(queries)
    for q, got in zip(queries, results, strict=True):
        scores = vecs @ (q / np.linalg.norm(q))
        best = np.argsort(-scores)[:5]
        assert [name for name, _ in got] == [names[i] for i in best]
        np.testing.assert_allclose([s for _, s in got], scores[best], atol=1e-5)
    assert per_query < 0.05, f"search over 10 000 templates took {per_query * 1e3:.1f} ms"


def test_cache_follows_changes_from_other_connections(tmp_path, key, rng):
    path = tmp_path / "g.db"
    with Gallery.open(path, key) as reader, Gallery.open(path, key) as writer:
        enroll(writer, "alice", rng)
        assert reader.search("face", unit(rng, 128), H1, top_k=5)[0][0] == "alice"
        carol = enroll(writer, "carol", rng)
        name, score = reader.search("face", carol["face"], H1)[0]
        assert name == "carol" and score == pytest.approx(1.0, abs=1e-5)
        writer.remove("carol")
        assert [n for n, _ in reader.search("face", carol["face"], H1, top_k=5)] == ["alice"]


def test_batch_is_all_or_nothing(tmp_path, key, rng):
    with Gallery.open(tmp_path / "g.db", key) as g:
        with pytest.raises(RuntimeError), g.batch():
            enroll(g, "alice", rng)
            enroll(g, "bob", rng)
            raise RuntimeError("power cut")
        assert g.count() == 0
        with g.batch():
            enroll(g, "alice", rng)
            with pytest.raises(GalleryError):  # a failed enrolment undoes only itself
                g.enroll("bob", {"face": unit(rng, 128), "voice": np.zeros(256, np.float32)},
                         {"face": 1, "voice": 1}, {"face": H1, "voice": H1})
            enroll(g, "carol", rng)
        assert [e.name for e in g.list()] == ["alice", "carol"]


def test_kill_during_enrolment_leaves_gallery_intact(tmp_path, key):
    path = tmp_path / "g.db"
    saved = tmp_path / "a_face.npy"
    # The child dies by SIGKILL between two row writes of one enrolment: no cleanup code runs.
    # It reaches the connection through a private attribute to hook SQLite's statement trace:
    # the only way to stop exactly mid-transaction without a test hook in the library.
    child = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from edge_runtime.store.gallery import Gallery
        key = bytes.fromhex({key.hex()!r})
        rng = np.random.default_rng(1)
        def vecs():
            return {{"face": rng.standard_normal(128).astype(np.float32),
                     "voice": rng.standard_normal(256).astype(np.float32)}}
        g = Gallery.open({str(path)!r}, key)
        a = vecs()
        g.enroll("A", a, {{"face": 2, "voice": 2}}, {{"face": {H1!r}, "voice": {H1!r}}})
        np.save({str(saved)!r}, a["face"])
        writes = []
        def trace(sql):
            if sql.startswith("INSERT OR REPLACE INTO templates"):
                writes.append(sql)
                if len(writes) == 2:  # B's first row is written; its second is next
                    os.kill(os.getpid(), signal.SIGKILL)
        g._conn.set_trace_callback(trace)
        g.enroll("B", vecs(), {{"face": 1, "voice": 1}}, {{"face": {H1!r}, "voice": {H1!r}}})
        print("enrolment of B completed: the kill did not happen")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    with Gallery.open(path, key) as g:
        assert [e.name for e in g.list()] == ["A"]
        names, faces = g.templates("face", H1)
        a_face = np.load(saved)
        np.testing.assert_allclose(faces[0], a_face / np.linalg.norm(a_face), atol=1e-6)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()


V1_SCHEMA = [  # frozen copy of what schema v1 files look like in the field
    f"PRAGMA application_id = {GALLERY_APP_ID}",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE templates (name TEXT NOT NULL CHECK (length(name) > 0), modality TEXT NOT "
    "NULL CHECK (length(modality) > 0), dim INTEGER NOT NULL CHECK (dim > 0), model_sha256 TEXT "
    "NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, created TEXT NOT NULL, updated "
    "TEXT NOT NULL, PRIMARY KEY (name, modality))",
    "CREATE INDEX templates_by_modality ON templates (modality, model_sha256)",
    "PRAGMA user_version = 1",
]


def test_migrates_hand_made_v1_file_without_losing_rows(tmp_path, key, rng):
    path = tmp_path / "v1.db"
    raw = sqlite3.connect(path)
    for statement in V1_SCHEMA:
        raw.execute(statement)
    originals = {}
    for name, modality in [("alice", "face"), ("alice", "voice"), ("bob", "face")]:
        vec = unit(rng, KNOWN_DIMS[modality])
        originals[(name, modality)] = vec
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, vec.tobytes(), associated_data(name, modality, H1))
        raw.execute("INSERT INTO templates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, modality, vec.size, H1, nonce, sealed, "2024-01-01T00:00:00.000000Z",
                     "2024-01-01T00:00:00.000000Z"))
    raw.commit()
    raw.close()
    with pytest.raises(GalleryError, match="wrong key"):  # key proven on a template
        Gallery.open(path, os.urandom(32))
    with pytest.raises(GalleryError, match="no integrity manifest .*made by an older edgepin.*"
                                           "edgepin gallery seal"):
        Gallery.open(path, key)  # never silently trusted: a one-time, explicit upgrade
    assert Gallery.seal(path, key) == 3
    with Gallery.open(path, key) as g:
        assert [(e.name, e.modalities) for e in g.list()] == [
            ("alice", ("face", "voice")), ("bob", ("face",))]
        assert g.list()[0].n_samples["face"] is None  # v1 never recorded it
        names, faces = g.templates("face", H1)
        assert names == ["alice", "bob"]
        np.testing.assert_allclose(faces[1], originals[("bob", "face")], atol=1e-6)
        enroll(g, "carol", rng)
        assert g.list()[2].n_samples == {"face": 3, "voice": 3}
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert "n_samples" in [c[1] for c in raw.execute("PRAGMA table_info(templates)")]
    raw.close()


def _refused_untouched(path: Path, key: bytes, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(GalleryError, match=match) as err:
        Gallery.open(path, key)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before


def test_newer_schema_refused_untouched(tmp_path, key, rng):
    path = tmp_path / "g.db"
    with Gallery.open(path, key) as g:
        enroll(g, "alice", rng)
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    _refused_untouched(path, key, "newer edgepin")


def test_corrupt_or_foreign_files_refused_untouched(tmp_path, key, rng):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"these are not the templates you are looking for\n" * 100)
    _refused_untouched(junk, key, "not a SQLite database")

    broken = tmp_path / "broken.db"
    with Gallery.open(broken, key) as g, g.batch():
        for i in range(40):
            enroll(g, f"p{i}", rng)
    data = bytearray(broken.read_bytes())
    page = 4096
    data[2 * page:3 * page] = b"\xff" * page  # smash one b-tree page
    broken.write_bytes(bytes(data))
    _refused_untouched(broken, key, "corrupt")

    foreign = tmp_path / "other_app.db"
    raw = sqlite3.connect(foreign)
    raw.execute("CREATE TABLE contacts (name TEXT)")
    raw.commit()
    raw.close()
    _refused_untouched(foreign, key, "not an edgepin gallery")
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery.open(tmp_path / "absent.db", key, create=False)
    assert not (tmp_path / "absent.db").exists()


def test_locked_gallery_times_out_clearly_but_stays_readable(tmp_path, key, rng):
    path = tmp_path / "g.db"
    with Gallery.open(path, key) as g:
        alice = enroll(g, "alice", rng)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with Gallery.open(path, key, timeout=0.2) as g:
            assert g.search("face", alice["face"], H1)[0][0] == "alice"  # WAL: reads go on
            with pytest.raises(GalleryError, match="locked"):
                enroll(g, "bob", rng)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_make_template_is_normalised_mean_of_normalised_samples():
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((5, 128)).astype(np.float32)
    unit_rows = samples / np.linalg.norm(samples, axis=1, keepdims=True)
    expected = unit_rows.mean(axis=0) / np.linalg.norm(unit_rows.mean(axis=0))
    template = make_template(samples)
    assert template.dtype == np.float32 and template.shape == (128,)
    np.testing.assert_allclose(template, expected, atol=1e-6)
    samples[0] *= 100.0  # a loud sample gets no extra weight
    np.testing.assert_allclose(make_template(samples), expected, atol=1e-6)
    np.testing.assert_allclose(make_template(samples[1]), unit_rows[1], atol=1e-6)
    with pytest.raises(GalleryError, match="zero norm"):
        make_template(np.zeros((2, 128), np.float32))
    with pytest.raises(GalleryError, match="cancel out"):
        make_template(np.stack([unit_rows[0], -unit_rows[0]]))
    with pytest.raises(GalleryError, match="float"):
        make_template(np.ones((2, 128), np.uint8))


def test_inputs_that_are_not_templates_are_refused(tmp_path, key, rng):
    with Gallery.open(tmp_path / "g.db", key) as g:
        image = rng.random((112, 92)).astype(np.float32)
        with pytest.raises(GalleryError, match="1-D embedding"):
            g.enroll("x", {"face": image}, {"face": 1}, {"face": H1})
        with pytest.raises(GalleryError, match="float"):
            g.enroll("x", {"face": np.ones(128, np.uint8)}, {"face": 1}, {"face": H1})
        with pytest.raises(GalleryError, match="256"):
            g.enroll("x", {"voice": unit(rng, 128)}, {"voice": 1}, {"voice": H1})
        with pytest.raises(GalleryError, match="sha256"):
            g.enroll("x", {"face": unit(rng, 128)}, {"face": 1}, {"face": "v1"})
        with pytest.raises(GalleryError, match="same modalities"):
            g.enroll("x", {"face": unit(rng, 128)}, {"voice": 1}, {"face": H1})
        g.enroll("x", {"iris": unit(rng, 64)}, {"iris": 4}, {"iris": H1})  # free modality
        assert g.templates("iris", H1)[1].shape == (1, 64)
        with pytest.raises(GalleryError, match="64-dim"):
            g.search("iris", unit(rng, 32), H1)
        assert g.count() == 1


def test_export_metadata_only_unless_asked(tmp_path, key, rng):
    with Gallery.open(tmp_path / "g.db", key) as g:
        alice = enroll(g, "alice", rng)
        g.export(tmp_path / "plain.json")
        g.export(tmp_path / "full.json", include_templates=True)
        with pytest.raises(GalleryError, match="export over .*it is the gallery"):
            g.export(tmp_path / "g.db")
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o600
    face = plain["identities"][0]["modalities"]["face"]
    assert plain["identities"][0]["name"] == "alice" and face["n_samples"] == 3
    assert "ciphertext" not in face and face["dim"] == 128
    full = json.loads((tmp_path / "full.json").read_text())
    blob = full["identities"][0]["modalities"]["face"]
    plain_bytes = AESGCM(key).decrypt(base64.b64decode(blob["nonce"]),
                                      base64.b64decode(blob["ciphertext"]),
                                      associated_data("alice", "face", H1))
    np.testing.assert_allclose(np.frombuffer(plain_bytes, "<f4"), alice["face"], atol=1e-6)


def test_seal_accepts_a_reviewed_state_after_a_tamper_report(tmp_path, key, rng):
    """Item 4: an edited manifest refuses the whole gallery until the operator reseals it."""
    path = tmp_path / "g.db"
    with Gallery.open(path, key) as g:
        enroll(g, "alice", rng)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = 'x' || value WHERE key = 'manifest'")
    raw.commit()
    raw.close()
    with pytest.raises(GalleryError, match="manifest of gallery .* does not verify"):
        Gallery.open(path, key)
    assert Gallery.seal(path, key) == 2
    with Gallery.open(path, key) as g:
        assert [e.name for e in g.list()] == ["alice"] and g.problems() == []
