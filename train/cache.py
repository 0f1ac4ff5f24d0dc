"""On-disk cache of derived per-file data (teacher embeddings, aligned crops, window targets).

Keyed by the file's sha256, what was computed, and the producer's version (teacher version,
front-end settings), so repeated training runs skip the teachers and a changed file or
teacher never reuses stale entries. SQLite: one file, atomic writes, safe to interrupt.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np


class ArrayCache:
    """Small key -> numpy array store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=120)  # the ship chain's lanes share one cache
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, data BLOB)")

    @staticmethod
    def key(file_sha: str, what: str, version: str) -> str:
        """Compose a cache key: content hash, kind of data, producer version."""
        return f"{file_sha}|{what}|{version}"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None if absent."""
        row = self._db.execute("SELECT data FROM items WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[0])) as z:
            return {k: z[k] for k in z.files}

    def put_many(self, items: list[tuple[str, dict[str, np.ndarray]]]) -> None:
        """Store several entries in one transaction."""
        rows = []
        for key, arrays in items:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            rows.append((key, buf.getvalue()))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()
