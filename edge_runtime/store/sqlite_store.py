"""Opening the device's SQLite stores (gallery, audit log) safely and versioning their schema.

Every check runs read-only before the first write, so a corrupt, foreign or newer file is
reported by name and left byte-for-byte as it was: the user's only copy of an enrolment or of
an audit trail must never be "repaired" away.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
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
    if not existed:
        _create_atomically(path, app_id, migrations, kind, timeout)
        existed = True
    else:
        _owner_only(path)
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


def _create_atomically(path: Path, app_id: int, migrations: Sequence[Sequence[str]], kind: str,
                       timeout: float) -> None:
    """Build a new store under a temporary name (mode 0600: names, times and decisions are
    personal data) and link it into place only when complete: another process never sees a
    half-made (0-byte) file, and when two create at once the second simply opens the first's."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    except OSError as exc:
        raise GalleryError(f"cannot create {kind} {path}: {exc.strerror}") from exc
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, timeout=timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            _migrate(conn, migrations)
        finally:
            conn.close()
        try:
            os.link(tmp, path)  # atomic, and never replaces a store made meanwhile
        except FileExistsError:
            pass
        except OSError:  # no hard links here (FAT): a tiny window instead of none
            if not path.exists():
                os.replace(tmp, path)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path, kind) from exc
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            if os.path.lexists(leftover):
                os.unlink(leftover)


def _owner_only(path: Path) -> None:
    """Tighten a store made by an older edgepin (0644) to 0600 when this user owns it."""
    try:
        st = path.stat()
        if os.name == "posix" and st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass


def sqlite_error(exc: sqlite3.Error, path: Path, kind: str) -> GalleryError:
    """Turn a sqlite3 exception into a one-line GalleryError that names the file."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return GalleryError(f"{kind} {path} is locked by another process; try again ({text})")
    if "malformed" in text or "not a database" in text:
        return GalleryError(f"{kind} {path} is corrupt ({text}); left untouched, restore a backup")
    return GalleryError(f"{kind} {path}: {text}")


def _check_file(path: Path, kind: str, create: bool) -> bool:
    """True when `path` exists (then it must hold a store); False when it is to be created.

    A 0-byte file is refused: edgepin never leaves one (stores are created complete), so it
    is a truncated or wrongly copied store, and treating it as a new empty one would hide that.
    """
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
    if not head:
        raise GalleryError(
            f"{kind} {path} is an empty (0-byte) file, not a {kind}: truncated or wrongly "
            "copied; left untouched: restore a backup, or delete it to start a new one"
        )
    if head != _SQLITE_MAGIC:
        raise GalleryError(
            f"{kind} {path} is not a SQLite database (corrupt or the wrong file); left untouched"
        )
    return True


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
