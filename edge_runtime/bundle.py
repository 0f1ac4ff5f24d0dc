"""The deployable model folder (`models/`): one manifest naming every model file and its hash.

The device loads models only through this manifest, so a file that was replaced, truncated
or trained on other data is refused instead of silently changing decisions. Writers (distill
export, `edgepin export`, `edgepin train pins|fuse`, `edgepin calibrate`) add entries with
`register_model`; the runtime reads them with `load_manifest` / `ModelEntry.verified_path`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.atomic import write_atomic
from edge_runtime.errors import ModelError

MANIFEST = "manifest.json"
FORMAT = 1
# Names the runtime knows. precision variants are separate entries: "face" and "face_int8".
KNOWN = ("face", "voice", "face_int8", "voice_int8", "pin_face", "pin_voice", "faa",
         "face_large", "face_large_int8", "pin_face_large", "pin_voice_large", "faa_large")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelEntry:
    """One model file of the bundle and what is known about it."""

    name: str
    file: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path = Path(".")

    @property
    def path(self) -> Path:
        return self.root / self.file

    def verified_path(self) -> Path:
        """The file's path after checking it exists and still has the recorded hash."""
        p = self.path
        if not p.is_file():
            hint = ""
            if self.meta.get("dlib_port") and self.name == "face_large":
                hint = (f"; it is generated from the dlib wheel, not committed: run `edgepin "
                        f"port-dlib --face-large --models {self.root}`")
            elif self.meta.get("resemblyzer_port"):
                hint = (f"; it is generated from the resemblyzer package, not committed: run "
                        f"`edgepin port-resemblyzer --models {self.root}` (needs torch)")
            raise ModelError(f"model {self.name!r}: file {p} is missing (see "
                             f"{self.root / MANIFEST}){hint}")
        actual = sha256_file(p)
        if actual != self.sha256:
            raise ModelError(
                f"model {self.name!r}: {p} has sha256 {actual[:12]}… but the manifest records "
                f"{self.sha256[:12]}…; the file was replaced or corrupted — restore it or re-export"
            )
        return p


def load_manifest(root: str | Path) -> dict[str, ModelEntry]:
    """All entries of `root/manifest.json` (clear errors for a missing or broken manifest)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ModelError(f"no model manifest at {path}; is {root} an edgepin models folder?")
    data = _read_manifest(path)
    if data.get("format") != FORMAT:
        raise ModelError(f"{path}: unsupported manifest format {data.get('format')}")
    entries = {}
    for name, e in data.get("models", {}).items():
        try:
            entries[name] = ModelEntry(name, e["file"], e["sha256"], e.get("meta", {}), root)
        except (KeyError, TypeError) as exc:
            raise ModelError(f"{path}: entry {name!r} is malformed ({exc})") from exc
    return entries


FACE_TIER_CHOICES = ("student", "large")


def default_face_tier(root: str | Path, backend: str) -> str:
    """The face tier a models folder runs by default on ``backend`` (manifest
    ``default_face_tier``: {backend: tier}, set by `edgepin port-dlib --default-tier`);
    "student" when the manifest names none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return "student"
    data = _read_manifest(path)
    choice = (data.get("default_face_tier") or {}).get(backend, "student")
    if choice not in FACE_TIER_CHOICES:
        raise ModelError(f"{path}: default_face_tier.{backend} is {choice!r}; expected one of "
                         f"{FACE_TIER_CHOICES}")
    return str(choice)


def set_default_face_tier(root: str | Path, defaults: dict[str, str]) -> None:
    """Record which face tier each backend runs by default (rewrites the manifest atomically)."""
    bad = {b: t for b, t in defaults.items() if t not in FACE_TIER_CHOICES}
    if bad:
        raise ModelError(f"face tiers must be one of {FACE_TIER_CHOICES}, got {bad}")
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ModelError(f"no model manifest at {path}")
    with _manifest_lock(Path(root)):
        data = _read_manifest(path)
        data["default_face_tier"] = {**(data.get("default_face_tier") or {}), **defaults}
        _write_manifest(Path(root), data)


def register_model(root: str | Path, name: str, file: str | Path, **meta: Any) -> ModelEntry:
    """Add or replace one entry (hashing the file now); the manifest is rewritten atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST
    f = Path(file)
    target = f if f.is_absolute() else root / f
    if not target.is_file():
        raise ModelError(f"cannot register {name!r}: {target} does not exist")
    try:
        rel = target.resolve().relative_to(root.resolve())
    except ValueError as exc:
        raise ModelError(f"cannot register {name!r}: {target} is not inside {root}") from exc
    entry = {"file": str(rel), "sha256": sha256_file(target),
             "bytes": target.stat().st_size,
             "registered": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "meta": meta}
    # read-modify-write under the lock: two writers (the ship chain runs its lanes in parallel)
    # would otherwise each rewrite the manifest from what it read, and one entry would be lost
    with _manifest_lock(root):
        data: dict[str, Any] = _read_manifest(path) if path.is_file() else {"format": FORMAT, "models": {}}
        old = data.get("models", {}).get(name)
        if isinstance(old, dict) and all(old.get(k) == entry[k] for k in ("file", "sha256", "meta")):
            return ModelEntry(name, str(rel), entry["sha256"], meta, root)  # same file: keep its entry
        data.setdefault("models", {})[name] = entry
        _write_manifest(root, data)
    return ModelEntry(name, str(rel), entry["sha256"], meta, root)


@contextlib.contextmanager
def _manifest_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on the folder's manifest, held across a read-modify-write."""
    with open(root / ".manifest.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest's JSON object, or one clear error for every reader and writer."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable model manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model manifest is not a JSON object")
    return data


def _write_manifest(root: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(root / MANIFEST, lambda out: out.write(text.encode()))  # 0644: not secret
