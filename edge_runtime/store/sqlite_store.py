"""Opening the device's SQLite stores (gallery, audit log) safely and versioning their schema.

Every check runs read-only before the first write, so a corrupt, foreign or newer file is
reported by name and left byte-for-byte as it was: the user's only copy of an enrolment or of
an audit trail must never be "repaired" away.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from edge_runtime.errors import GalleryError

_SQLITE_MAGIC = b"SQLite format 3\x00"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order


def utc_now() -> str:
    """Current UTC time as fixed-width ISO 8601 text (sortable, readable in a SQL shell)."""
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)


def open_store(
    path: Path,
    app_id: int,
    migrations: Sequence[Sequence[str]],
    kind: str,
    *,
    create: bool,
    timeout: float,
) -> sqlite3.Connection:
    """Open (or create) a WAL-mode store and bring its schema up to len(migrations).

    `app_id` goes in the SQLite header so a gallery is never taken for an audit log or for some
    other program's database; `kind` names the store in error messages.
    """
    existed = _check_file(path, kind, create)
    try:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path, kind) from exc
    try:
        _check_contents(conn, path, kind, app_id, len(migrations), existed)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # a committed enrolment survives power loss
        _migrate(conn, migrations)
    except sqlite3.Error as exc:
        conn.close()
        raise sqlite_error(exc, path, kind) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def sqlite_error(exc: sqlite3.Error, path: Path, kind: str) -> GalleryError:
    """Turn a sqlite3 exception into a one-line GalleryError that names the file."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return GalleryError(f"{kind} {path} is locked by another process; try again ({text})")
    if "malformed" in text or "not a database" in text:
        return GalleryError(f"{kind} {path} is corrupt ({text}); left untouched, restore a backup")
    return GalleryError(f"{kind} {path}: {text}")


def _check_file(path: Path, kind: str, create: bool) -> bool:
    """True when `path` holds data SQLite must be able to read (an empty file counts as new)."""
    if path.is_dir():
        raise GalleryError(f"{kind} path {path} is a folder, not a file")
    if not path.exists():
        if not create:
            raise GalleryError(f"no {kind} at {path}")
        if not path.parent.is_dir():
            raise GalleryError(f"cannot create {kind} {path}: folder {path.parent} does not exist")
        return False
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise GalleryError(f"cannot read {kind} {path}: {exc.strerror}") from exc
    if head and head != _SQLITE_MAGIC:
        raise GalleryError(
            f"{kind} {path} is not a SQLite database (corrupt or the wrong file); left untouched"
        )
    return bool(head)


def _check_contents(
    conn: sqlite3.Connection, path: Path, kind: str, app_id: int, latest: int, existed: bool
) -> None:
    if existed:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            detail = "; ".join(" ".join(str(r[0]).split()) for r in rows[:3])  # one line
            raise GalleryError(
                f"{kind} {path} is corrupt (quick_check: {detail}); left untouched, "
                "restore a backup"
            )
    found_app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    n_objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if found_app != app_id and (found_app != 0 or version != 0 or n_objects != 0):
        raise GalleryError(f"{path} is a SQLite database but not an edgepin {kind}; left untouched")
    if version > latest:
        raise GalleryError(
            f"{kind} {path} has schema version {version} but this edgepin reads up to "
            f"{latest}: it was written by a newer edgepin; upgrade edgepin (file left untouched)"
        )


def _migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]]) -> None:
    """Apply the missing migrations in one transaction: a crash leaves the old version whole."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= len(migrations):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version + 1, len(migrations) + 1):
            for statement in migrations[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
