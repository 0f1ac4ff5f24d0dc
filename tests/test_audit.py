"""Audit log: append-only by triggers and a keyed hash chain with an external head anchor, no
vectors, failure counts for lockout."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from edge_runtime.errors import GalleryError
from edge_runtime.store.audit import AuditLog, AuditRecord, rotate
from edge_runtime.store.gallery import Gallery

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
KEY = bytes(range(32))  # the gallery key the chain key is derived from


def denied(identity: str | None, at: datetime) -> AuditRecord:
    return AuditRecord("denied", identity, {"face": 0.21}, {"detect": 4.0}, "below threshold",
                       "door-1", time=at.isoformat())


def test_append_and_tail_round_trip(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog.open(path, key=KEY) as log:
        first = log.append(AuditRecord("granted", "alice", {"face": 0.91, "voice": 0.74},
                                       {"detect": 3.5, "embed": 11.25}, "both above threshold",
                                       "door-1"))
        log.append(AuditRecord("denied", None, {"face": 0.12}, {"detect": 3.1}, "no match", "cam"))
        log.append(AuditRecord("denied", "bob", {"face": float("nan")}, {}, "spoof?", "cam"))
    assert first.id == 1 and first.time.endswith("Z")
    assert abs(datetime.fromisoformat(first.time[:-1] + "+00:00") - datetime.now(timezone.utc)) \
        < timedelta(minutes=1)
    with AuditLog.open(path, key=KEY, create=False) as log:
        assert log.tail(0) == []
        last_two = log.tail(2)
        assert [r.identity for r in last_two] == [None, "bob"]  # oldest first
        assert last_two[1].scores == {"face": None}  # NaN kept as "no score", valid JSON
        everything = log.tail(10)
        assert everything[0] == first
        assert dict(everything[0].latencies_ms) == {"detect": 3.5, "embed": 11.25}
        assert [r.id for r in everything] == [1, 2, 3]
        assert log.verify() == 3


def test_update_and_delete_refused(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog.open(path, key=KEY) as log:
        log.append(AuditRecord("denied", "mallory", {"face": 0.3}, {}, "no match", "door-1"))
    raw = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE events SET decision = 'granted'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM events")
    raw.rollback()
    assert raw.execute("SELECT decision, identity FROM events").fetchall() == [
        ("denied", "mallory")]
    raw.close()


def test_verify_detects_edits_behind_the_triggers(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog.open(path, key=KEY) as log:
        for i in range(3):
            log.append(denied("mallory", T0 + timedelta(seconds=i)))
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER events_no_update")
    raw.execute("UPDATE events SET decision = 'granted' WHERE id = 2")
    raw.commit()
    raw.close()
    with AuditLog.open(path, key=KEY) as log, pytest.raises(GalleryError, match="record id 2"):
        log.verify()


def test_failures_since_counts_denials_in_window(tmp_path):
    with AuditLog.open(tmp_path / "audit.db", key=KEY) as log:
        log.append(denied("alice", T0))
        log.append(denied("alice", T0 + timedelta(minutes=1)))
        log.append(denied(None, T0 + timedelta(minutes=2)))
        log.append(AuditRecord("granted", "alice", {"face": 0.9}, {}, "ok", "door-1",
                               time=(T0 + timedelta(minutes=3)).isoformat()))
        half_minute = T0 + timedelta(seconds=30)
        assert log.failures_since(half_minute) == 2
        assert log.failures_since(half_minute, identity="alice") == 1
        assert log.failures_since(T0, identity="alice") == 2
        assert log.failures_since("2024-05-01T12:00:00Z") == 3
        # the same instant in another zone counts the same
        assert log.failures_since(half_minute.astimezone(timezone(timedelta(hours=2)))) == 2
        assert log.failures_since(T0 + timedelta(minutes=5)) == 0
        with pytest.raises(GalleryError, match="no timezone"):
            log.failures_since(datetime(2024, 5, 1, 12, 0))


def test_no_vectors_or_bad_fields_accepted(tmp_path):
    with AuditLog.open(tmp_path / "audit.db", key=KEY) as log:
        with pytest.raises(GalleryError, match="no vectors"):
            log.append(AuditRecord("denied", "x", {"face": np.zeros(128, np.float32)}))
        with pytest.raises(GalleryError, match="no vectors"):
            log.append(AuditRecord("denied", "x", {}, {"embed": [1.0, 2.0]}))
        with pytest.raises(GalleryError, match="at most"):
            log.append(AuditRecord("denied", "x", {f"d{i}": 0.1 for i in range(128)}))
        with pytest.raises(GalleryError, match="'granted' or 'denied'"):
            log.append(AuditRecord("maybe", "x"))
        assert log.tail(10) == []
        stored = log.append(AuditRecord("granted", "x", {"face": np.float32(0.5)}))
        assert stored.scores == {"face": 0.5}


def test_gallery_and_audit_files_are_not_interchangeable(tmp_path):
    key = os.urandom(32)
    gallery_path, audit_path = tmp_path / "gallery.db", tmp_path / "audit.db"
    Gallery.open(gallery_path, key).close()
    AuditLog.open(audit_path, key=KEY).close()
    before = gallery_path.read_bytes()
    with pytest.raises(GalleryError, match="not an edgepin audit log"):
        AuditLog.open(gallery_path)
    assert gallery_path.read_bytes() == before
    with pytest.raises(GalleryError, match="not an edgepin gallery"):
        Gallery.open(audit_path, key)


def _unkeyed(previous: str, row: tuple) -> str:
    payload = json.dumps([previous, *row], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def test_rewritten_row_with_recomputed_chain_is_detected(tmp_path):
    """Item 5: the old SHA-256 chain used no secret: an attacker could rewrite a row and
    recompute every link after it. The keyed chain cannot be recomputed without the key."""
    path = tmp_path / "audit.db"
    with AuditLog.open(path, key=KEY) as log:
        for i in range(4):
            log.append(denied("mallory", T0 + timedelta(seconds=i)))
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER events_no_update")
    raw.execute("UPDATE events SET decision = 'granted' WHERE id = 2")
    previous = "0" * 64
    cols = "time, decision, identity, scores, latencies_ms, reason, source"
    for rid, *row in raw.execute(f"SELECT id, {cols} FROM events ORDER BY id").fetchall():
        previous = _unkeyed(previous, tuple(row))  # what the attacker can compute
        raw.execute("UPDATE events SET chain = ? WHERE id = ?", (previous, rid))
    raw.commit()
    raw.close()
    with AuditLog.open(path, key=KEY) as log, pytest.raises(GalleryError, match="record id 1"):
        log.verify()


def test_deleting_the_newest_rows_is_detected_by_the_anchor(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog.open(path, key=KEY) as log:
        for i in range(5):
            log.append(denied("mallory", T0 + timedelta(seconds=i)))
        assert log.verify() == 5
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER events_no_delete")
    raw.execute("DELETE FROM events WHERE id > 3")
    raw.commit()
    raw.close()
    with AuditLog.open(path, key=KEY) as log, pytest.raises(
            GalleryError, match="truncated: its anchor records row 5 but the log ends at row 3"):
        log.verify()
    (tmp_path / "audit.db.anchor").unlink()  # and deleting the anchor as well
    with AuditLog.open(path, key=KEY) as log, pytest.raises(GalleryError, match="anchor .* missing"):
        log.verify()


def test_unkeyed_v1_log_is_refused_then_rotated(tmp_path):
    """Migration: a log with the old unkeyed chain is never silently accepted."""
    path = tmp_path / "audit.db"
    raw = sqlite3.connect(path)
    from edge_runtime.store.audit import MIGRATIONS

    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    row = ("2024-05-01T12:00:00.000000Z", "denied", None, "{}", "{}", "no match", "cam")
    raw.execute("INSERT INTO events (time, decision, identity, scores, latencies_ms, reason,"
                " source, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row, _unkeyed("0" * 64, row)))
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with pytest.raises(GalleryError, match="older edgepin .*edgepin audit rotate"):
        AuditLog.open(path, key=KEY)
    target, n, check = rotate(path, KEY)
    assert n == 1 and check == "chain verified" and target.exists() and not path.exists()
    with AuditLog.open(path, key=KEY) as log:
        log.append(denied(None, T0))
        assert log.verify() == 1


def test_v2_log_gains_the_time_index_and_keeps_every_row(tmp_path):
    """A log written before the time index (schema v2) opens, is migrated in place (one index
    added), and keeps its rows, its chain and its anchor: nothing is lost or rewritten."""
    path = tmp_path / "audit.db"
    with AuditLog.open(path, key=KEY) as log:
        for k in range(5):
            log.append(denied("alice", T0 + timedelta(minutes=k)))
        before = log.tail(10)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("DROP INDEX events_by_time")  # what a v2 file looks like
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with AuditLog.open(path, key=KEY) as log:
        assert log.tail(10) == before
        log.verify()
        assert log.failures_since(T0 + timedelta(seconds=90)) == 3
        log.append(denied("bob", T0 + timedelta(minutes=9)))
        log.verify()
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "events_by_time" in names
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT time FROM events WHERE time >= ? ORDER BY time, id",
            ("2024",)))
        assert "events_by_time" in plan
    finally:
        conn.close()
