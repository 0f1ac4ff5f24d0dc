"""Append-only audit log of access decisions, in its own SQLite file.

A separate file from the gallery because the two have different lives: the log grows on every
attempt and is rotated by renaming the file (rows can never be deleted), while the gallery is
small, encrypted, backed up and exported. Neither write path then waits on the other's lock.

The log holds no biometric data: scores and latencies are single numbers, never vectors.
Triggers refuse UPDATE and DELETE, and each row carries an HMAC-SHA256 chain over its
predecessor, keyed by a key derived from the gallery key (edge_runtime.store.integrity), so
someone who drops the triggers and edits a row cannot recompute the chain. The head of the
chain (last id and MAC) is copied after every append into a MACed anchor file beside the log
(`audit.db.anchor`) and logged at INFO, so deleting the newest rows is detected too.
Logs made before the keyed chain (schema v1 with rows) are refused until rotated with
`edgepin audit rotate` (their SHA-256 chain is verified and the file renamed, never edited).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import numbers
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

from edge_runtime.errors import GalleryError
from edge_runtime.store.integrity import Anchor, anchor_path, derive_key, read_anchor, write_anchor
from edge_runtime.store.sqlite_store import TIME_FORMAT, open_store, sqlite_error, utc_now

log = logging.getLogger(__name__)

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
    (  # v2: the chain is keyed (HMAC-SHA256); a v1 log with rows is rotated, never migrated
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('chain', 'hmac-sha256')",
    ),
    (  # v3: the persistent lockout asks for the verifications since a time at each decision;
        # an index on time alone serves it (and the time-ordered scan) as the log grows. Only
        # an index is added: every row, the chain and the anchor stay as they were.
        "CREATE INDEX IF NOT EXISTS events_by_time ON events (time, id)",
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
    """An open audit log. Use `AuditLog.open(path, key=gallery_key)`, ideally as a context
    manager. Reading (tail, counts) needs no key; appending and verifying do."""

    def __init__(self, conn: sqlite3.Connection, path: Path, key: bytes | None) -> None:
        self._conn = conn
        self.path = path
        self._key = None if key is None else derive_key(key, "audit chain")
        self.anchor = anchor_path(path)

    @classmethod
    def open(cls, path: str | Path, *, key: bytes | None = None, create: bool = True,
             timeout: float = 5.0) -> AuditLog:
        """Open or create the log; refuse corrupt, foreign (e.g. a gallery), newer and
        unkeyed (pre-HMAC) files.

        Without `key`, a NEW log gets a random one-off key (a throwaway log, e.g. the demo's:
        it cannot be verified once closed); an existing log opened without a key is read-only.
        """
        p = Path(path)
        _refuse_unkeyed(p)
        if not p.exists() and anchor_path(p).exists():
            raise GalleryError(
                f"audit log {p} is missing but its anchor {anchor_path(p)} exists: the log was "
                "deleted or moved; restore it, or run `edgepin audit rotate` to start anew")
        conn = open_store(p, AUDIT_APP_ID, MIGRATIONS, "audit log", create=create,
                          timeout=timeout)
        if key is None:
            try:
                empty = conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
            except sqlite3.Error as exc:
                conn.close()
                raise sqlite_error(exc, p, "audit log") from exc
            if empty and not anchor_path(p).exists():
                key = os.urandom(32)
        return cls(conn, p, key)

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
        key = self._need_key("append to")
        try:
            self._conn.execute("BEGIN IMMEDIATE")  # read the chain head and append atomically
            try:
                head = self._conn.execute(
                    "SELECT chain FROM events ORDER BY id DESC LIMIT 1"
                ).fetchone()
                chain = _link(key, head[0] if head else _GENESIS, values)
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
        self._anchor(Anchor(int(cur.lastrowid), chain))
        return _record((cur.lastrowid, *values))

    def _anchor(self, head: Anchor) -> None:
        """Copy the head out of the file (and to the log, e.g. syslog): truncation shows."""
        log.info("audit head %s id=%d mac=%s", self.path, head.version, head.head)
        key = self._need_key("anchor")
        try:
            current = read_anchor(self.anchor, key)
        except GalleryError:
            current = None
        if current is not None and current.version > head.version:
            return  # a concurrent writer anchored a later row already
        try:
            write_anchor(self.anchor, key, head)
        except GalleryError as exc:
            log.error("audit log %s: head anchor not written: %s", self.path, exc)

    def _need_key(self, what: str) -> bytes:
        if self._key is None:
            raise GalleryError(f"cannot {what} audit log {self.path} without the gallery key "
                               "(its chain is keyed)")
        return self._key

    def verifications_since(self, t: float) -> list[tuple[float, bool]]:
        """(unix time, granted) of every real verification (a decision with scores) at or
        after unix time `t`: what a lockout shared by all processes replays."""
        since = datetime.fromtimestamp(t, timezone.utc).strftime(TIME_FORMAT)
        rows = self._query(
            "SELECT time, decision FROM events WHERE decision IN ('granted', 'denied')"
            " AND time >= ? AND scores != '{}' ORDER BY time, id", (since,))
        return [(datetime.strptime(w, TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp(),
                 d == "granted") for w, d in rows]

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
        """Re-walk the keyed chain and compare its head with the anchor; return the number of
        records, or raise naming the first record edited, inserted or removed behind the
        log's back (or the newest rows deleted)."""
        key = self._need_key("verify")
        previous = _GENESIS
        rows = self._query(
            "SELECT id, time, decision, identity, scores, latencies_ms, reason, source, chain"
            " FROM events ORDER BY id"
        )
        for row in rows:
            if not hmac.compare_digest(_link(key, previous, list(row[1:8])), row[8]):
                raise GalleryError(
                    f"audit log {self.path} was tampered with at or before record id {row[0]} "
                    "(or it is verified with another gallery key)"
                )
            previous = row[8]
        anchor = read_anchor(self.anchor, key)
        last = (rows[-1][0], rows[-1][8]) if rows else (0, _GENESIS)
        if anchor is None:
            if rows:
                raise GalleryError(f"audit log {self.path}: its head anchor {self.anchor} is "
                                   "missing (deleted?), so removed newest rows cannot be ruled out")
        elif anchor.version > last[0]:
            raise GalleryError(
                f"audit log {self.path} was truncated: its anchor records row {anchor.version} "
                f"but the log ends at row {last[0]} (newest rows deleted)")
        elif anchor.version == last[0] and not hmac.compare_digest(anchor.head, last[1]):
            raise GalleryError(f"audit log {self.path} does not end with the row its anchor "
                               f"records (row {anchor.version}): replaced or rewritten")
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


def _link(key: bytes | None, previous: str, values: list) -> str:
    """Chain value of a row: HMAC-SHA256 (key None: the v1 unkeyed SHA-256, for rotation)."""
    payload = json.dumps([previous, *values], ensure_ascii=False, separators=(",", ":"))
    if key is None:
        return hashlib.sha256(payload.encode()).hexdigest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _peek(path: Path) -> tuple[int, int] | None:
    """(schema version, rows) of an existing log read-only; None when absent or unreadable
    (open_store then reports the problem with its usual checks)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        n = conn.execute("SELECT count(*) FROM events").fetchone()[0] if version >= 1 else 0
        return version, n
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _refuse_unkeyed(path: Path) -> None:
    found = _peek(path)
    if found is not None and found[0] == 1 and found[1] > 0:
        raise GalleryError(
            f"audit log {path} was written by an older edgepin (unkeyed SHA-256 chain, which "
            "anyone can recompute): run once `edgepin audit rotate` to verify it, set it aside "
            "and start a keyed log")


def rotate(path: str | Path, key: bytes | None = None) -> tuple[Path, int, str]:
    """Set the log (and its anchor) aside under a dated name, never editing it; a new log
    starts at the next append. Returns (new name, rows, what the check found)."""
    p = Path(path)
    found = _peek(p)
    if found is None:
        raise GalleryError(f"no audit log at {p} (or not readable as one)")
    version, n = found
    try:
        conn = sqlite3.connect(str(p), isolation_level=None)
        try:
            rows = conn.execute("SELECT id, time, decision, identity, scores, latencies_ms,"
                                " reason, source, chain FROM events ORDER BY id").fetchall()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # fold the WAL into the file
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise sqlite_error(exc, p, "audit log") from exc
    chain_key = None if version == 1 or key is None else derive_key(key, "audit chain")
    if version >= 2 and chain_key is None:
        check = "keyed chain not checked (no key given)"
    else:
        check = "chain verified"
        previous = _GENESIS
        for row in rows:
            if _link(chain_key, previous, list(row[1:8])) != row[8]:
                check = f"CHAIN BROKEN at or before record id {row[0]}"
                break
            previous = row[8]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = p.with_name(f"{p.stem}.{stamp}{p.suffix}")
    if target.exists():
        raise GalleryError(f"cannot rotate {p}: {target} exists already; try again in a second")
    try:
        os.rename(p, target)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{p}{suffix}")
            if side.exists():
                os.rename(side, Path(f"{target}{suffix}"))
        if anchor_path(p).exists():
            os.rename(anchor_path(p), anchor_path(target))
    except OSError as exc:
        raise GalleryError(f"cannot rotate {p}: {exc.strerror or exc}") from exc
    return target, n, check


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
