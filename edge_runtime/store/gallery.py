"""On-device gallery of enrolled templates: encrypted at rest, atomic, schema-versioned.

Only templates (L2-normalised float32 embeddings) are stored, never images or audio. Each
template blob is sealed with AES-256-GCM whose associated data is (identity, modality, model
hash), so a blob copied onto another row fails to decrypt instead of silently granting access
to the wrong person. Every write is one SQLite transaction (WAL mode), so a crash or power cut
mid-enrolment leaves the previous gallery intact.

The set of rows is pinned by an HMAC manifest with a growing version and an anchor file
(edge_runtime.store.integrity): a row inserted, restored, altered or deleted outside edgepin
puts its identity in quarantine (never matched, reported), and an older copy of the whole
gallery (rollback), an edited manifest or a deleted anchor refuse the gallery.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_runtime.errors import GalleryError
from edge_runtime.store.integrity import (
    Anchor,
    Manifest,
    anchor_path,
    derive_key,
    mac,
    read_anchor,
    row_digest,
    row_key,
    write_anchor,
)
from edge_runtime.store.keys import KEY_BYTES, write_private
from edge_runtime.store.sqlite_store import open_store, sqlite_error, utc_now

log = logging.getLogger(__name__)
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Dimensions of the modalities edgepin produces; any other modality keeps the size it was
# enrolled with (recorded per row).
KNOWN_DIMS: Mapping[str, int] = MappingProxyType(
    {"face": 128, "voice": 256, "pin_face": 128, "pin_voice": 128}
)
GALLERY_APP_ID = 0x45504731  # "EPG1" in the SQLite header: a gallery, not any SQLite file

# Ordered migrations: entry i brings the schema from version i to i + 1. Never edit a released
# entry (files in the field were made by it); append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # v1
        f"PRAGMA application_id = {GALLERY_APP_ID}",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        """CREATE TABLE templates (
            name TEXT NOT NULL CHECK (length(name) > 0),
            modality TEXT NOT NULL CHECK (length(modality) > 0),
            dim INTEGER NOT NULL CHECK (dim > 0),
            model_sha256 TEXT NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            PRIMARY KEY (name, modality))""",
        "CREATE INDEX templates_by_modality ON templates (modality, model_sha256)",
    ),
    (  # v2: samples averaged into the template; NULL = enrolled before v2, unknown
        "ALTER TABLE templates ADD COLUMN n_samples INTEGER"
        " CHECK (n_samples IS NULL OR n_samples > 0)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_NONCE_BYTES = 12
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_CHECK = b"edgepin gallery key check"
_KEY_CHECK_AD = b"edgepin-gallery-key-check"


@dataclass(frozen=True)
class Entry:
    """One enrolled identity as `list()` reports it (metadata only, no vectors)."""

    name: str
    modalities: tuple[str, ...]
    n_samples: Mapping[str, int | None]  # None: enrolled before schema v2
    model_sha256: Mapping[str, str]
    created: str
    updated: str
    quarantined: str | None = None  # why this identity is never matched (tampered rows)


def make_template(embeddings: np.ndarray) -> np.ndarray:
    """L2-normalised mean of L2-normalised samples: each sample votes equally whatever its norm.

    Shared with calibration so thresholds are measured on exactly the templates devices store.
    """
    a = np.asarray(embeddings)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise GalleryError(f"make_template needs (n_samples, dim) embeddings, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise GalleryError(f"make_template needs float embeddings, got {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise GalleryError("make_template: embeddings contain NaN or infinity")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        raise GalleryError("make_template: an embedding has zero norm")
    mean = (a / norms).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-6:
        raise GalleryError("make_template: the samples cancel out (they point in opposite ways)")
    return (mean / norm).astype(np.float32)


def associated_data(name: str, modality: str, model_hash: str) -> bytes:
    """AES-GCM associated data binding a blob to its row (JSON: unambiguous, unlike a join)."""
    return json.dumps(["edgepin-template", name, modality, model_hash]).encode()


class Gallery:
    """An open gallery file. Use `Gallery.open(path, key)`, ideally as a context manager.

    One instance serves one thread (sqlite3's rule); several processes may share the file.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, key: bytes) -> None:
        self._conn = conn
        self.path = path
        self._aead = AESGCM(key)
        self._depth = 0  # transaction nesting (batch() around enroll())
        self._generation = 0  # bumped by each own write: invalidates the template cache
        self._cache: dict[tuple[str, str, bool], tuple[tuple[int, int], list[str], np.ndarray]]
        self._cache = {}
        self._mkey = derive_key(key, "gallery manifest")
        self._pending: dict[str, str] | None = None  # manifest rows of the open transaction
        self._pending_version = 0
        self._checked: tuple[int, int] | None = None  # stamp of the last integrity check
        self.quarantined: dict[str, str] = {}  # identity -> why it is never matched
        self.deleted: list[str] = []  # identities whose every row vanished behind our back

    @classmethod
    def open(
        cls, path: str | Path, key: bytes, *, create: bool = True, timeout: float = 5.0
    ) -> Gallery:
        """Open or create the gallery; refuse corrupt, foreign or newer files and wrong keys."""
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise GalleryError(
                f"gallery key must be {KEY_BYTES} bytes (AES-256); load it with "
                "edge_runtime.store.keys.load_key"
            )
        return cls._open(Path(path), key, create=create, timeout=timeout, integrity=True)

    @classmethod
    def _open(cls, p: Path, key: bytes, *, create: bool, timeout: float,
              integrity: bool) -> Gallery:
        if not p.exists() and anchor_path(p).exists():
            raise GalleryError(
                f"gallery {p} is missing but its integrity anchor {anchor_path(p)} exists: the "
                "gallery was deleted or moved; restore it (or delete the anchor to start anew)")
        conn = open_store(p, GALLERY_APP_ID, MIGRATIONS, "gallery", create=create, timeout=timeout)
        gallery = cls(conn, p, key)
        try:
            gallery._check_key()
            if integrity:
                gallery._check_integrity()
        except BaseException:
            conn.close()
            raise
        return gallery

    @classmethod
    def seal(cls, path: str | Path, key: bytes) -> int:
        """Record the gallery's current rows as trusted; return how many rows were sealed.

        The one-time upgrade of a gallery made before integrity manifests (and the way to
        accept a reviewed state after a tamper report). Every row must decrypt with `key`.
        """
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise GalleryError(f"gallery key must be {KEY_BYTES} bytes (AES-256)")
        with cls._open(Path(path), key, create=False, timeout=5.0, integrity=False) as g:
            version = max(g._last_version(), 0)
            with g._transaction(manifest=False):
                rows = g._conn.execute(
                    "SELECT name, modality, dim, model_sha256, n_samples, nonce, ciphertext"
                    " FROM templates").fetchall()
                bad = []
                for name, modality, _, digest, _, nonce, sealed in rows:
                    try:
                        g._aead.decrypt(nonce, sealed, associated_data(name, modality, digest))
                    except (InvalidTag, ValueError):
                        bad.append(f"{name}/{modality}")
                if bad:
                    raise GalleryError(
                        f"cannot seal {g.path}: {len(bad)} row(s) do not decrypt with this key "
                        f"(altered or moved): {', '.join(bad[:10])}; remove those identities first")
                g._pending = {row_key(r[0], r[1]): row_digest(*r) for r in rows}
                g._pending_version = version
                g._write_manifest()
            g._write_anchor()
            return len(rows)

    def close(self) -> None:
        self._cache.clear()
        self._conn.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[Gallery]:
        """Group several enrolments/removals into one transaction: all or nothing, one fsync."""
        with self._transaction():
            yield self

    def enroll(
        self,
        name: str,
        templates: Mapping[str, np.ndarray],
        n_samples: Mapping[str, int],
        model_hashes: Mapping[str, str],
        replace: bool = True,
    ) -> None:
        """Store `name`'s templates atomically. With replace=True the given modalities overwrite
        the old ones (others are kept); with replace=False an enrolled name is refused."""
        name = _check_label(name, "identity name")
        if not templates:
            raise GalleryError(f"enrolment of {name!r} has no templates")
        if set(n_samples) != set(templates) or set(model_hashes) != set(templates):
            raise GalleryError(
                f"enrolment of {name!r}: n_samples and model_hashes must name the same "
                f"modalities as templates ({', '.join(sorted(templates))})"
            )
        rows = []
        for modality, template in templates.items():
            modality = _check_label(modality, "modality")
            what = f"template {name!r}/{modality}"
            vec = _check_vector(template, modality, what)
            count = n_samples[modality]
            if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
                raise GalleryError(f"{what}: n_samples must be a positive integer, got {count!r}")
            digest = _check_hash(model_hashes[modality])
            nonce = os.urandom(_NONCE_BYTES)
            sealed = self._aead.encrypt(
                nonce, vec.astype("<f4").tobytes(), associated_data(name, modality, digest)
            )
            rows.append((modality, vec.size, digest, nonce, sealed, int(count)))
        now = utc_now()
        with self._transaction():
            created = dict(
                self._conn.execute(
                    "SELECT modality, created FROM templates WHERE name = ?", (name,)
                ).fetchall()
            )
            if created and not replace:
                raise GalleryError(
                    f"{name!r} is already enrolled in {self.path} ({', '.join(sorted(created))});"
                    " pass replace=True to re-enrol"
                )
            for modality, dim, digest, nonce, sealed, count in rows:
                self._conn.execute(
                    "INSERT OR REPLACE INTO templates (name, modality, dim, model_sha256, nonce,"
                    " ciphertext, n_samples, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, modality, dim, digest, nonce, sealed, count,
                     created.get(modality, now), now),
                )
            assert self._pending is not None
            for modality, dim, digest, nonce, sealed, count in rows:
                self._pending[row_key(name, modality)] = row_digest(
                    name, modality, dim, digest, count, nonce, sealed)

    def remove(self, name: str) -> bool:
        """Delete every template of `name`; False when it was not enrolled."""
        with self._transaction():
            cur = self._conn.execute("DELETE FROM templates WHERE name = ?", (name,))
            assert self._pending is not None
            for k in [k for k in self._pending if json.loads(k)[0] == name]:
                del self._pending[k]
        return cur.rowcount > 0

    def count(self) -> int:
        """Number of enrolled identities."""
        return self._query("SELECT count(DISTINCT name) FROM templates")[0][0]

    def problems(self) -> list[str]:
        """One line per integrity finding (quarantined or deleted identities); [] when clean."""
        self._refresh_integrity()
        out = [f"{name!r} quarantined: {why}" for name, why in sorted(self.quarantined.items())]
        out += [f"{name!r} was deleted outside edgepin (every row gone)" for name in self.deleted]
        return out

    def list(self) -> list[Entry]:
        """Every identity with its modalities and metadata, sorted by name."""
        self._refresh_integrity()
        rows = self._query(
            "SELECT name, modality, n_samples, model_sha256, created, updated FROM templates"
            " ORDER BY name, modality"
        )
        grouped: dict[str, list[tuple]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row)
        return [
            Entry(
                name=name,
                modalities=tuple(r[1] for r in group),
                n_samples=MappingProxyType({r[1]: r[2] for r in group}),
                model_sha256=MappingProxyType({r[1]: r[3] for r in group}),
                created=min(r[4] for r in group),
                updated=max(r[5] for r in group),
                quarantined=self.quarantined.get(name),
            )
            for name, group in grouped.items()
        ]

    def templates(
        self, modality: str, model_hash: str, *, skip_stale: bool = False
    ) -> tuple[list[str], np.ndarray]:
        """Names and the decrypted (n, dim) float32 matrix (read-only, cached until a change).

        Templates made by another model live in another embedding space: comparing them would
        give meaningless scores, so they are refused (or left out with skip_stale=True).
        """
        modality = _check_label(modality, "modality")
        digest = _check_hash(model_hash)
        stamp = self._refresh_integrity()
        cached = self._cache.get((modality, digest, skip_stale))
        if cached is not None and cached[0] == stamp:
            return list(cached[1]), cached[2]
        rows = [r for r in self._query(
            "SELECT name, dim, model_sha256, nonce, ciphertext FROM templates"
            " WHERE modality = ? ORDER BY name",
            (modality,),
        ) if r[0] not in self.quarantined]
        stale = [r[0] for r in rows if r[2] != digest]
        if stale and not skip_stale:
            others = ", ".join(sorted({r[2][:12] for r in rows if r[2] != digest}))
            shown = ", ".join(stale[:10]) + (", ..." if len(stale) > 10 else "")
            raise GalleryError(
                f"{len(stale)} {modality!r} template(s) in {self.path} were made with another "
                f"model ({others}...) than the current one ({digest[:12]}...); re-enrol: {shown}"
            )
        rows = [r for r in rows if r[2] == digest]
        dims = {r[1] for r in rows}
        if len(dims) > 1:
            raise GalleryError(f"{self.path}: {modality!r} templates have mixed sizes {dims}")
        dim = dims.pop() if dims else KNOWN_DIMS.get(modality, 0)
        vectors, names = [], []
        for name, _, _, nonce, sealed in rows:
            try:
                plain = self._decrypt(
                    nonce, sealed, associated_data(name, modality, digest),
                    f"cannot decrypt template {name!r}/{modality}: the key is right (checked at "
                    f"open), so the row was altered or moved from another identity or "
                    f"modality; remove and re-enrol {name!r}",
                )
                if len(plain) != 4 * dim:
                    raise GalleryError(f"template {name!r}/{modality} has a wrong size")
            except GalleryError as exc:  # one bad row must not lock everyone else out
                self._quarantine(name, str(exc))
                continue
            vectors.append(np.frombuffer(plain, dtype="<f4"))
            names.append(name)
        matrix = np.stack(vectors).astype(np.float32) if vectors else \
            np.empty((0, dim), dtype=np.float32)
        matrix.setflags(write=False)
        self._cache[(modality, digest, skip_stale)] = (stamp, names, matrix)
        return list(names), matrix

    def search(
        self,
        modality: str,
        query: np.ndarray,
        model_hash: str,
        top_k: int = 1,
        *,
        skip_stale: bool = False,
    ) -> list[tuple[str, float]]:
        """Best `top_k` (name, cosine) pairs, best first; [] for an empty gallery."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise GalleryError(f"top_k must be a positive integer, got {top_k!r}")
        names, matrix = self.templates(modality, model_hash, skip_stale=skip_stale)
        q = _check_vector(query, modality, f"{modality!r} query embedding")
        if not names:
            return []
        if q.size != matrix.shape[1]:
            raise GalleryError(
                f"{modality!r} query embedding has {q.size} dims but the gallery holds "
                f"{matrix.shape[1]}-dim templates"
            )
        scores = matrix @ q
        k = min(top_k, len(names))
        best = np.argpartition(-scores, k - 1)[:k] if k < len(names) else np.arange(k)
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(names[i], float(scores[i])) for i in best]

    def export(self, path: str | Path, include_templates: bool = False, *,
               overwrite: bool = False, protected: tuple[Path, ...] = ()) -> None:
        """Write a JSON inventory (owner-only file). Vectors are left out unless asked for, and
        even then they stay encrypted: the export is as safe as the gallery itself.

        An existing file is replaced only with `overwrite`, and never when it is the gallery,
        its anchor, a `protected` path (key, audit log) or looks like a store, key or anchor.
        """
        out = Path(path)
        guarded = {Path(f"{self.path}{s}").resolve() for s in ("", "-wal", "-shm")}
        guarded |= {anchor_path(self.path).resolve()}
        guarded |= {Path(p).resolve() for p in protected}
        if out.resolve() in guarded:
            raise GalleryError(f"refusing to export over {out}: it is the gallery, its key, its "
                               "anchor or the audit log")
        if out.exists() or out.is_symlink():
            if out.is_dir():
                raise GalleryError(f"export path {out} is a folder")
            if _precious(out):
                raise GalleryError(f"refusing to overwrite {out}, even with --force: it holds a "
                                   "database, a key or an integrity anchor")
            if not overwrite:
                raise GalleryError(f"{out} already exists; refusing to overwrite it (pass "
                                   "--force to replace an earlier export)")
        rows = self._query(
            "SELECT name, modality, dim, model_sha256, n_samples, created, updated, nonce,"
            " ciphertext FROM templates ORDER BY name, modality"
        )
        identities: dict[str, dict[str, dict]] = {}
        for name, modality, dim, digest, count, created, updated, nonce, sealed in rows:
            item = {"dim": dim, "n_samples": count, "model_sha256": digest,
                    "created": created, "updated": updated}
            if include_templates:
                item["nonce"] = base64.b64encode(nonce).decode()
                item["ciphertext"] = base64.b64encode(sealed).decode()
            identities.setdefault(name, {})[modality] = item
        doc = {
            "format": "edgepin-gallery-export",
            "schema_version": SCHEMA_VERSION,
            "exported": utc_now(),
            "templates_included": include_templates,
            "identities": [{"name": n, "modalities": m} for n, m in identities.items()],
        }
        write_private(out, json.dumps(doc, indent=2).encode() + b"\n", overwrite=overwrite)

    # -- internals -------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path, "gallery") from exc

    @contextmanager
    def _transaction(self, *, manifest: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE at the outer level (take the write lock up front, so no deadlock
        upgrade later); savepoints inside, so a failed enroll() in a batch undoes only itself.

        With `manifest`, the outer level re-reads the verified manifest under the write lock
        (another process may have written), the operations update it, and it is written with
        the next version before COMMIT; the anchor follows after COMMIT.
        """
        outer = self._depth == 0
        savepoint = f"sp{self._depth}"
        try:
            self._conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {savepoint}")
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path, "gallery") from exc
        self._depth += 1
        saved = dict(self._pending) if self._pending is not None else None
        try:
            if outer and manifest:
                trusted = self._trusted()
                self._pending, self._pending_version = dict(trusted.rows), trusted.version
            yield
            if outer and manifest:
                self._write_manifest()
            self._conn.execute("COMMIT" if outer else f"RELEASE {savepoint}")
            if outer and manifest:
                self._write_anchor()
        except BaseException as exc:
            if outer:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            else:
                self._conn.execute(f"ROLLBACK TO {savepoint}")
                self._conn.execute(f"RELEASE {savepoint}")
                self._pending = saved
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(exc, self.path, "gallery") from exc
            raise
        finally:
            self._depth -= 1
            self._generation += 1
            if outer:
                self._pending = None

    # -- integrity (see edge_runtime.store.integrity) ----------------------------------------

    def _read_manifest(self) -> tuple[Manifest, str] | None:
        """The manifest and its MAC, verified; None when the gallery has none."""
        meta = dict(self._query(
            "SELECT key, value FROM meta WHERE key IN ('manifest', 'manifest_mac')"))
        if not meta:
            return None
        payload, given = meta.get("manifest"), meta.get("manifest_mac")
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes) or not isinstance(given, str) or \
                not hmac.compare_digest(mac(self._mkey, payload), given):
            raise GalleryError(
                f"integrity manifest of gallery {self.path} does not verify: it was edited "
                "outside edgepin; the whole gallery is refused (restore a backup, or review it "
                "and run `edgepin gallery seal`)")
        return Manifest.parse(payload, f"gallery {self.path}"), given

    def _last_version(self) -> int:
        """The highest version the manifest or the anchor claims, verified or not: a seal
        must move past both, so an old anchor copy can never make the sealed state 'older'."""
        versions = [-1]
        raw = self._query("SELECT value FROM meta WHERE key = 'manifest'")
        if raw:
            try:
                versions.append(Manifest.parse(raw[0][0], str(self.path)).version)
            except GalleryError:
                pass
        try:
            text = json.loads(anchor_path(self.path).read_bytes())
            versions.append(int(text["version"]))
        except (OSError, ValueError, TypeError, KeyError):
            pass
        return max(versions)

    def _trusted(self) -> Manifest:
        """The verified manifest, checked against the anchor (rollback, replacement)."""
        found = self._read_manifest()
        anchor_file = anchor_path(self.path)
        if found is None:
            why = ("its manifest was deleted (the anchor " f"{anchor_file} exists): tampering"
                   if anchor_file.exists() else "it was made by an older edgepin")
            raise GalleryError(
                f"gallery {self.path} has no integrity manifest ({why}); its rows are not "
                f"trusted. If this gallery is as you left it, run once: edgepin gallery seal "
                f"--gallery {self.path}")
        manifest, head = found
        anchor = read_anchor(anchor_file, self._mkey)
        if anchor is None:
            if manifest.version == 0:  # brand new: nothing to roll back to yet
                self._write_anchor(Anchor(0, head))
                return manifest
            raise GalleryError(
                f"integrity anchor {anchor_file} of gallery {self.path} is missing (deleted?), "
                "so a rollback to an older copy cannot be ruled out; if this gallery is the one "
                "you trust, run `edgepin gallery seal`")
        if anchor.version > manifest.version:
            raise GalleryError(
                f"gallery {self.path} was rolled back: it is version {manifest.version} but "
                f"its anchor says version {anchor.version} was written; an older copy replaced "
                "it (removed people may be back). Restore the latest gallery")
        if anchor.version == manifest.version and not hmac.compare_digest(anchor.head, head):
            raise GalleryError(
                f"gallery {self.path} is not the copy its anchor records (same version "
                f"{manifest.version}, other contents): replaced by another gallery")
        return manifest

    def _check_integrity(self) -> None:
        """Compare every row with the manifest; quarantine identities with foreign rows."""
        manifest = self._trusted()
        quarantined: dict[str, str] = {}
        present: dict[str, set[str]] = {}
        for r in self._query("SELECT name, modality, dim, model_sha256, n_samples, nonce,"
                             " ciphertext FROM templates ORDER BY name, modality"):
            k = row_key(r[0], r[1])
            present.setdefault(r[0], set()).add(k)
            want = manifest.rows.get(k)
            if want is None:
                quarantined.setdefault(r[0], f"row {r[0]}/{r[1]} is not in the manifest "
                                             "(inserted or restored outside edgepin)")
            elif not hmac.compare_digest(want, row_digest(*r)):
                quarantined.setdefault(r[0], f"row {r[0]}/{r[1]} was altered outside edgepin")
        deleted = set()
        for k in manifest.rows:
            name, modality = json.loads(k)
            if name not in present:
                deleted.add(name)
            elif k not in present[name]:
                quarantined.setdefault(name, f"row {name}/{modality} was deleted outside "
                                             "edgepin")
        for name, why in self.quarantined.items():  # decryption failures found earlier
            if name in present:
                quarantined.setdefault(name, why)
        for name, why in sorted(quarantined.items()):
            if self.quarantined.get(name) != why:
                log.warning("gallery %s: %r quarantined: %s", self.path, name, why)
        self.quarantined, self.deleted = quarantined, sorted(deleted)
        self._checked = (self._generation, self._query("PRAGMA data_version")[0][0])

    def _refresh_integrity(self) -> tuple[int, int]:
        """Re-check after any change (ours or another process's); return the change stamp."""
        stamp = (self._generation, self._query("PRAGMA data_version")[0][0])
        if stamp != self._checked:
            self._check_integrity()
            stamp = self._checked  # type: ignore[assignment]
        return stamp

    def _quarantine(self, name: str, why: str) -> None:
        if name not in self.quarantined:
            log.warning("gallery %s: %r quarantined: %s", self.path, name, why)
            self.quarantined[name] = why
            self._cache.clear()

    def _write_manifest(self) -> None:
        assert self._pending is not None
        manifest = Manifest(self._pending_version + 1, dict(self._pending))
        payload = manifest.payload()
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('manifest', ?)",
                           (payload,))
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('manifest_mac', ?)",
                           (mac(self._mkey, payload),))

    def _write_anchor(self, anchor: Anchor | None = None) -> None:
        """Record the committed version beside the gallery. A failure only weakens rollback
        detection until the next write (an anchor older than the gallery is accepted)."""
        if anchor is None:
            found = self._read_manifest()
            if found is None:
                return
            anchor = Anchor(found[0].version, found[1])
        try:
            current = read_anchor(anchor_path(self.path), self._mkey)
        except GalleryError:
            current = None
        if current is not None and current.version > anchor.version:
            return  # another process already anchored a newer version
        try:
            write_anchor(anchor_path(self.path), self._mkey, anchor)
        except GalleryError as exc:
            log.warning("gallery %s: anchor not updated: %s", self.path, exc)

    def _decrypt(self, nonce: bytes, sealed: bytes, ad: bytes, message: str) -> bytes:
        try:
            return self._aead.decrypt(nonce, sealed, ad)
        except (InvalidTag, ValueError):
            raise GalleryError(message) from None

    def _check_key(self) -> None:
        """Fail at open with 'wrong key?' rather than at the first search."""
        wrong = (
            f"cannot decrypt gallery {self.path}: wrong key? (it is not the key the gallery was "
            "created with)"
        )
        row = self._query("SELECT value FROM meta WHERE key = 'key_check'")
        if row:
            value = row[0][0]
            self._decrypt(value[:_NONCE_BYTES], value[_NONCE_BYTES:], _KEY_CHECK_AD, wrong)
            return
        with self._transaction(manifest=False):  # first open: prove the key on a template
            first = self._conn.execute(          # if any, then record it (and a new manifest)
                "SELECT name, modality, model_sha256, nonce, ciphertext FROM templates LIMIT 1"
            ).fetchone()
            if first is not None:
                self._decrypt(first[3], first[4], associated_data(*first[:3]), wrong)
            nonce = os.urandom(_NONCE_BYTES)
            sealed = self._aead.encrypt(nonce, _KEY_CHECK, _KEY_CHECK_AD)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?)", (nonce + sealed,)
            )
            has_manifest = self._conn.execute(
                "SELECT 1 FROM meta WHERE key = 'manifest'").fetchone()
            if first is None and has_manifest is None and not anchor_path(self.path).exists():
                self._pending, self._pending_version = {}, -1  # a new gallery: version 0
                self._write_manifest()


def _precious(path: Path) -> bool:
    """Does `path` hold something an export must never replace (a store, a key, an anchor)?"""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if head.startswith(_SQLITE_MAGIC) or b'"edgepin-anchor' in head:
        return True
    try:
        return len(base64.b64decode(head.strip(), validate=True)) == KEY_BYTES
    except ValueError:
        return False


def _check_label(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GalleryError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_hash(value: object) -> str:
    digest = value.lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(digest):
        raise GalleryError(f"model hash {value!r} is not a sha256 hex digest (64 hex characters)")
    return digest


def _check_vector(value: object, modality: str, what: str) -> np.ndarray:
    """A finite, non-zero, 1-D float embedding of the modality's size, L2-normalised."""
    a = np.asarray(value)
    if a.ndim != 1:
        raise GalleryError(
            f"{what} must be a 1-D embedding, got shape {a.shape} (average samples with "
            "make_template; raw images or audio are never stored)"
        )
    if not np.issubdtype(a.dtype, np.floating):
        raise GalleryError(f"{what} must be a float embedding, got dtype {a.dtype}")
    expected = KNOWN_DIMS.get(modality)
    if expected is not None and a.size != expected:
        raise GalleryError(f"{what} has {a.size} dims but {modality!r} embeddings have {expected}")
    a = a.astype(np.float32)
    norm = float(np.linalg.norm(a)) if a.size and np.all(np.isfinite(a)) else 0.0
    if not norm > 1e-12:
        raise GalleryError(f"{what} is empty, zero or not finite")
    return (a / norm).astype(np.float32)
