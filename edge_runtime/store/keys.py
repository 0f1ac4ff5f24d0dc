"""The AES-256 key that encrypts gallery templates at rest.

The key lives in a file only its owner can read (like an SSH private key), or in the
EDGEPIN_GALLERY_KEY environment variable for containers that inject secrets that way. A lost
key makes the gallery unreadable, so nothing here ever overwrites an existing key file.
"""

from __future__ import annotations

import base64
import binascii
import os
import shlex
import stat
import tempfile
from pathlib import Path

from edge_runtime.errors import GalleryError

KEY_BYTES = 32  # AES-256
KEY_ENV = "EDGEPIN_GALLERY_KEY"


def load_key(path: str | Path | None = None) -> bytes:
    """Return the gallery key from `path`, or from EDGEPIN_GALLERY_KEY when `path` is None.

    An explicit file wins over the environment so a command line is never silently overridden.
    """
    if path is not None:
        return _key_from_file(Path(path))
    value = os.environ.get(KEY_ENV, "")
    if not value.strip():
        raise GalleryError(
            f"no gallery key: pass a key file (mode 0600, made by edge_runtime.store.keys.create_key) "
            f"or set {KEY_ENV} to a base64-encoded {KEY_BYTES}-byte key"
        )
    return _decode(value, f"environment variable {KEY_ENV}")


def create_key(path: str | Path) -> bytes:
    """Make a new random key file readable by its owner only; refuse to replace an existing one.

    The file appears complete and fsynced, or not at all (written aside, then hard-linked into
    place, which fails when the name exists: O_EXCL semantics without a half-written key).
    """
    p = Path(path)
    key = os.urandom(KEY_BYTES)
    write_private(p, base64.b64encode(key) + b"\n", overwrite=False)
    return key


def create_or_load_key(path: str | Path) -> bytes:
    """The key at `path`, created first when absent; when several processes race to create
    it, one wins and the others load the winner's key (never two different keys)."""
    p = Path(path)
    if not p.exists():
        try:
            return create_key(p)
        except GalleryError:
            if not p.exists():
                raise
    return load_key(p)


def write_private(path: str | Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write an owner-only (0600) file atomically: readers see the old file or the whole new one.

    With overwrite=False an existing file is never replaced, even if it appears while writing.
    """
    p = Path(path)
    if not p.parent.is_dir():
        raise GalleryError(f"cannot write {p}: folder {p.parent} does not exist")
    if not overwrite and (p.exists() or p.is_symlink()):
        raise GalleryError(f"{p} already exists; refusing to overwrite it")
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")  # 0600
    except OSError as exc:
        raise GalleryError(f"cannot write {p}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            _link_no_clobber(tmp, p)
        _fsync_dir(p.parent)
    except OSError as exc:
        raise GalleryError(f"cannot write {p}: {exc.strerror or exc}") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _link_no_clobber(tmp: str, p: Path) -> None:
    try:
        os.link(tmp, p)  # atomic, and fails if p exists
    except FileExistsError:
        raise GalleryError(f"{p} already exists; refusing to overwrite it") from None
    except OSError:  # no hard links on this filesystem (e.g. FAT on an SD card)
        _write_exclusive(p, Path(tmp).read_bytes())


def _write_exclusive(p: Path, data: bytes) -> None:
    """O_CREAT | O_EXCL: exactly one writer creates `p` (mode 0600), then fsync."""
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise GalleryError(f"{p} already exists; refusing to overwrite it") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable; not possible (nor needed) on every OS."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _key_from_file(p: Path) -> bytes:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise GalleryError(f"gallery key file {p} does not exist") from None
    except OSError as exc:
        raise GalleryError(f"cannot read gallery key file {p}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise GalleryError(f"gallery key file {p} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise GalleryError(
            f"gallery key file {p} is accessible by group/others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {shlex.quote(str(p))}"
        )
    try:
        text = p.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise GalleryError(f"gallery key file {p} is not base64 text") from None
    except OSError as exc:
        raise GalleryError(f"cannot read gallery key file {p}: {exc.strerror}") from exc
    return _decode(text, f"gallery key file {p}")


def _decode(text: str, source: str) -> bytes:
    # Errors never echo the value: it is (or is close to) a secret.
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise GalleryError(f"{source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise GalleryError(
            f"{source} holds {len(key)} bytes; a gallery key is {KEY_BYTES} bytes (AES-256)"
        )
    return key
