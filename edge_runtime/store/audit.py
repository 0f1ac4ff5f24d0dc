"""Append-only audit log of access decisions, in its own SQLite file.

A separate file from the gallery because the two have different lives: the log grows on every
attempt and is rotated by renaming the file (rows can never be deleted), while the gallery is
small, encrypted, backed up and exported. Neither write path then waits on the other's lock.

The log holds no biometric data: scores and latencies are single numbers, never vectors.
Triggers refuse UPDATE and DELETE, and each row carries a SHA-256 chain over its predecessor so
`verify()` also detects edits made by someone who dropped the triggers first.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

from edge_runtime.errors import GalleryError
from edge_runtime.store.sqlite_store import TIME_FORMAT, open_store, sqlite_error, utc_now

AUDIT_APP_ID = 0x45504131  # "EPA1" in the SQLite header
DECISIONS = frozenset({"granted", "denied"})
MAX_FIELDS = 32  # per scores/latencies dict: room for every stage, no room for an embedding
_GENESIS = "0" * 64

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1
        f"PRAGMA application_id = {AUDIT_APP_ID}",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time TEXT NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('granted', 'denied')),
            identity TEXT,
            scores TEXT NOT NULL,
            latencies_ms TEXT NOT NULL,
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            chain TEXT NOT NULL)""",
        "CREATE INDEX events_by_decision_time ON events (decision, time)",
        "CREATE INDEX events_by_identity ON events (identity, decision, time)",
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
        " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
        " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    ),
)


@dataclass(frozen=True)
class AuditRecord:
    """One access decision. `time` (UTC ISO 8601) and `id` are filled in by `append`."""

    decision: str  # "granted" or "denied"
    identity: str | None = None  # claimed or matched identity; None when nobody matched
    scores: Mapping[str, float | None] = field(default_factory=dict)  # None: was NaN/inf
    latencies_ms: Mapping[str, float | None] = field(default_factory=dict)
    reason: str = ""
    source: str = ""  # camera/microphone/door the attempt came from
    time: str | None = None
    id: int | None = None


class AuditLog:
    """An open audit log. Use `AuditLog.open(path)`, ideally as a context manager."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, timeout: float = 5.0) -> AuditLog:
        """Open or create the log; refuse corrupt, foreign (e.g. a gallery) or newer files."""
        p = Path(path)
        return cls(open_store(p, AUDIT_APP_ID, MIGRATIONS, "audit log", create=create,
                              timeout=timeout), p)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, record: AuditRecord) -> AuditRecord:
        """Store `record` durably and return it as stored (with time and id)."""
        if record.decision not in DECISIONS:
            raise GalleryError(
                f"audit decision must be 'granted' or 'denied', got {record.decision!r}"
            )
        if record.identity is not None and (
            not isinstance(record.identity, str) or not record.identity
        ):
            raise GalleryError(
                f"audit identity must be a non-empty string or None, got {record.identity!r}"
            )
        for name in ("reason", "source"):
            if not isinstance(getattr(record, name), str):
                raise GalleryError(f"audit {name} must be a string")
        scores = _numbers_json(record.scores, "scores")
        latencies = _numbers_json(record.latencies_ms, "latencies_ms")
        when = utc_now() if record.time is None else to_utc_iso(record.time)
        values = [when, record.decision, record.identity, scores, latencies, record.reason,
                  record.source]
        try:
            self._conn.execute("BEGIN IMMEDIATE")  # read the chain head and append atomically
            try:
                head = self._conn.execute(
                    "SELECT chain FROM events ORDER BY id DESC LIMIT 1"
                ).fetchone()
                chain = _link(head[0] if head else _GENESIS, values)
                cur = self._conn.execute(
                    "INSERT INTO events (time, decision, identity, scores, latencies_ms, reason,"
                    " source, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, chain),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path, "audit log") from exc
        return _record((cur.lastrowid, *values))

    def tail(self, n: int = 20) -> list[AuditRecord]:
        """The last `n` records, oldest first (like tail(1))."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise GalleryError(f"tail needs a non-negative integer, got {n!r}")
        rows = self._query(
            "SELECT id, time, decision, identity, scores, latencies_ms, reason, source"
            " FROM events ORDER BY id DESC LIMIT ?",
            (n,),
        )
        return [_record(r) for r in reversed(rows)]

    def failures_since(self, t: datetime | str, identity: str | None = None) -> int:
        """Denied attempts at or after `t` (all of them, or those recorded for `identity`):
        the count a lockout policy compares with its limit."""
        since = to_utc_iso(t)
        if identity is None:
            rows = self._query(
                "SELECT count(*) FROM events WHERE decision = 'denied' AND time >= ?", (since,)
            )
        else:
            rows = self._query(
                "SELECT count(*) FROM events WHERE identity = ? AND decision = 'denied'"
                " AND time >= ?",
                (identity, since),
            )
        return rows[0][0]

    def verify(self) -> int:
        """Re-walk the hash chain; return the number of records, or raise naming the first
        record that was edited, inserted or removed behind the log's back."""
        previous = _GENESIS
        rows = self._query(
            "SELECT id, time, decision, identity, scores, latencies_ms, reason, source, chain"
            " FROM events ORDER BY id"
        )
        for row in rows:
            if _link(previous, list(row[1:8])) != row[8]:
                raise GalleryError(
                    f"audit log {self.path} was tampered with at or before record id {row[0]}"
                )
            previous = row[8]
        return len(rows)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path, "audit log") from exc


def to_utc_iso(t: datetime | str) -> str:
    """The log's own time text for `t`; naive times are refused (whose local time would it be?)."""
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t.strip().replace("Z", "+00:00"))
        except ValueError:
            raise GalleryError(f"audit time {t!r} is not ISO 8601") from None
    if not isinstance(t, datetime):
        raise GalleryError(f"audit time must be a datetime or ISO 8601 text, got {t!r}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise GalleryError(f"audit time {t.isoformat()} has no timezone; give it in UTC")
    return t.astimezone(timezone.utc).strftime(TIME_FORMAT)


def _numbers_json(values: Mapping[str, object], what: str) -> str:
    """JSON of name -> single number; vectors are refused so no biometric data can slip in."""
    if not isinstance(values, Mapping):
        raise GalleryError(f"audit {what} must be a mapping of name -> number")
    if len(values) > MAX_FIELDS:
        raise GalleryError(f"audit {what} has {len(values)} entries (at most {MAX_FIELDS})")
    clean: dict[str, float | None] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise GalleryError(f"audit {what} keys must be strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise GalleryError(
                f"audit {what}[{key!r}] must be a single number, got {type(value).__name__} "
                "(the audit log holds no vectors or other biometric data)"
            )
        number = float(value)
        clean[key] = number if math.isfinite(number) else None
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _link(previous: str, values: list) -> str:
    payload = json.dumps([previous, *values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _record(row: tuple) -> AuditRecord:
    rid, when, decision, identity, scores, latencies, reason, source = row
    return AuditRecord(
        decision=decision,
        identity=identity,
        scores=MappingProxyType(json.loads(scores)),
        latencies_ms=MappingProxyType(json.loads(latencies)),
        reason=reason,
        source=source,
        time=when,
        id=rid,
    )
