"""Integrity of the stores as a whole: per-purpose keys, the gallery manifest and the anchors.

AES-GCM protects each template row on its own, but not the SET of rows: rows copied out with
sqlite3 and inserted back after `gallery remove` decrypt fine, and a deleted row leaves no
trace. The manifest is an HMAC (under a key derived from the gallery key) over every row's
digest and a version that grows on each write; a copy of its version and MAC sits in an
*anchor* file beside the store, itself MACed, so replacing the gallery with an older copy
(rollback) is detected as long as the anchor is not rolled back too (see docs/security.md).
The audit log uses the same anchor idea for the head of its keyed chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import GalleryError
from edge_runtime.store.keys import write_private

MANIFEST_FORMAT = "edgepin-gallery-manifest-1"
ANCHOR_FORMAT = "edgepin-anchor-1"


def derive_key(key: bytes, purpose: str) -> bytes:
    """One key per purpose from the gallery key (HMAC-SHA256 as a KDF): a MAC key never equals
    the encryption key, and the audit chain key differs from the manifest key."""
    return hmac.new(key, f"edgepin key for {purpose}".encode(), hashlib.sha256).digest()


def mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def row_digest(name: str, modality: str, dim: int, model_sha256: str, n_samples: int | None,
               nonce: bytes, ciphertext: bytes) -> str:
    """What the manifest pins for one template row (times are left out: they are not secrets
    and a reader cannot be fooled by them)."""
    h = hashlib.sha256(json.dumps([name, modality, dim, model_sha256, n_samples]).encode())
    h.update(len(nonce).to_bytes(4, "big") + nonce + ciphertext)
    return h.hexdigest()


def row_key(name: str, modality: str) -> str:
    return json.dumps([name, modality])


@dataclass(frozen=True)
class Manifest:
    version: int
    rows: dict[str, str]  # row_key -> row_digest

    def payload(self) -> bytes:
        doc = {"format": MANIFEST_FORMAT, "version": self.version, "rows": self.rows}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes | str, where: str) -> Manifest:
        try:
            doc = json.loads(payload)
            if doc.get("format") != MANIFEST_FORMAT:
                raise ValueError("format")
            version, rows = int(doc["version"]), dict(doc["rows"])
        except (ValueError, TypeError, KeyError, AttributeError):
            raise GalleryError(f"integrity manifest of {where} is unreadable; left untouched") from None
        return cls(version, {str(k): str(v) for k, v in rows.items()})


def anchor_path(store: Path) -> Path:
    """The anchor beside a store: ``gallery.db`` -> ``gallery.db.anchor``."""
    return store.with_name(store.name + ".anchor")


@dataclass(frozen=True)
class Anchor:
    """The last (version, MAC) a store was written with, kept in a second file."""

    version: int
    head: str  # the manifest MAC (gallery) or the chain value of the last row (audit log)

    def to_bytes(self, key: bytes) -> bytes:
        body = {"format": ANCHOR_FORMAT, "version": self.version, "head": self.head}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return json.dumps({**body, "mac": mac(key, text.encode())}, sort_keys=True).encode() + b"\n"


def read_anchor(path: Path, key: bytes) -> Anchor | None:
    """The anchor at `path`, None when there is none; GalleryError when it was edited."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GalleryError(f"cannot read integrity anchor {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
        anchor = Anchor(int(doc["version"]), str(doc["head"]))
        given = str(doc["mac"])
        if doc.get("format") != ANCHOR_FORMAT:
            raise ValueError("format")
    except (ValueError, TypeError, KeyError):
        raise GalleryError(f"integrity anchor {path} is unreadable (edited or corrupt)") from None
    expected = json.loads(anchor.to_bytes(key))["mac"]
    if not hmac.compare_digest(given, expected):
        raise GalleryError(f"integrity anchor {path} does not verify with this key: it was "
                           "edited, or belongs to another gallery/key")
    return anchor


def write_anchor(path: Path, key: bytes, anchor: Anchor) -> None:
    write_private(path, anchor.to_bytes(key), overwrite=True)
