"""Data manifest hash: which files a model was trained/calibrated on, stored next to the model.

It hashes relative path, size and identity of each file (not contents) so that it is cheap
on 100k-file sets yet changes when a file is added, removed, relabelled, moved or resized.
A same-size in-place edit is not detected; use `file_sha256` where content matters (caches).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from edge_runtime.errors import DatasetError, MediaError
from train.datasets.core import Sample

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (video files do not fit in memory)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _entries(samples: Iterable[Sample], root: Path) -> list[tuple[str, int, str, Sample]]:
    base = Path(os.path.abspath(root))
    out = []
    for s in samples:
        full = Path(os.path.abspath(s.path))
        try:
            rel = full.relative_to(base).as_posix()
        except ValueError:
            raise DatasetError(f"sample {s.path} is not under manifest root {base}") from None
        try:
            size = full.stat().st_size
        except OSError as exc:
            raise DatasetError(f"manifest: cannot stat {full}: {exc.strerror or exc}") from None
        out.append((rel, size, s.identity, s))
    out.sort(key=lambda e: (e[0], e[2]))
    return out


def _hash(entries: list[tuple[str, int, str, Sample]]) -> str:
    digest = hashlib.sha256()
    for rel, size, identity, _ in entries:
        # JSON per line: no separator character inside a path or name can forge a collision.
        digest.update(json.dumps([rel, size, identity], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def manifest_hash(samples: Iterable[Sample], root: str | Path) -> str:
    """sha256 over the sorted (relative path, size, identity) of `samples` under `root`."""
    return _hash(_entries(samples, Path(root)))


def write_manifest(samples: Iterable[Sample], root: str | Path, out_path: str | Path) -> dict:
    """Write {count, identities, hash, files} as JSON to `out_path` and return it."""
    entries = _entries(samples, Path(root))
    manifest = {
        "count": len(entries),
        "identities": sorted({e[2] for e in entries}),
        "hash": _hash(entries),
        "files": [
            {
                "path": rel,
                "size": size,
                "identity": identity,
                "group": s.group,
                "modality": s.modality,
            }
            for rel, size, identity, s in entries
        ],
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    return manifest
