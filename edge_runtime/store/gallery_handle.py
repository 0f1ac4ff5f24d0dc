"""Where the device keeps its gallery, audit log and key, and a gallery opened on demand.

A door controller must keep running when its gallery file is briefly locked (an operator
enrolling someone) or damaged: ``GalleryHandle`` opens the file at the first attempt that
needs it and again after a failure, so each attempt is denied with the reason instead of the
loop dying, and the file itself is never touched by the retry.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_runtime.errors import GalleryError
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.keys import KEY_ENV, create_or_load_key, load_key

GALLERY_FILE = "gallery.db"
AUDIT_FILE = "audit.db"
KEY_FILE = "gallery.key"


def data_dir() -> Path:
    """``$EDGEPIN_HOME``, else ``$XDG_DATA_HOME/edgepin``, else ``~/.local/share/edgepin``."""
    home = os.environ.get("EDGEPIN_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "edgepin"


def default_gallery() -> Path:
    return data_dir() / GALLERY_FILE


def default_audit(gallery: Path) -> Path:
    """The audit log lives next to its gallery (a separate file: see edge_runtime.store.audit)."""
    return Path(gallery).with_name(AUDIT_FILE)


def resolve_key(key_file: str | Path | None, gallery: Path, *, create: bool = False) -> bytes:
    """Key from ``key_file``, else $EDGEPIN_GALLERY_KEY, else ``gallery.key`` next to the
    gallery; ``create`` makes that file (mode 0600) when no key exists anywhere."""
    if key_file is not None:
        path = Path(key_file)
        if create and not path.exists():
            _refuse_new_key_for_existing(Path(gallery), path)
            path.parent.mkdir(parents=True, exist_ok=True)
            return create_or_load_key(path)
        return load_key(path)
    if os.environ.get(KEY_ENV, "").strip():
        return load_key(None)
    beside = Path(gallery).with_name(KEY_FILE)
    if beside.exists():
        return load_key(beside)
    if create:
        _refuse_new_key_for_existing(Path(gallery), beside)
        beside.parent.mkdir(parents=True, exist_ok=True)
        return create_or_load_key(beside)
    raise GalleryError(
        f"no gallery key: pass --key-file PATH, set {KEY_ENV}, or create {beside} with "
        "`edgepin enroll ... --create-key`"
    )


def _refuse_new_key_for_existing(gallery: Path, key_path: Path) -> None:
    """A new key cannot read an existing gallery: writing one would only add a second,
    useless key beside the gallery whose real key is lost or elsewhere."""
    if gallery.exists() and not key_path.exists():  # (a racing first enrolment made both)
        raise GalleryError(
            f"--create-key refused: gallery {gallery} already exists but its key {key_path} "
            f"does not; a new key cannot decrypt it. Restore the key (or pass --key-file / "
            f"set {KEY_ENV}); to start over, move the gallery aside first"
        )


class GalleryHandle:
    """A gallery path + key, opened lazily and reopened after an error."""

    def __init__(self, path: str | Path, key: bytes, *, create: bool = False,
                 timeout: float = 2.0) -> None:
        self.path = Path(path)
        self._key = key
        self._create = create
        self._timeout = timeout
        self._gallery: Gallery | None = None
        self._owned = True

    @classmethod
    def wrap(cls, gallery: Gallery) -> GalleryHandle:
        """A handle around an already open gallery (tests, the demo)."""
        handle = cls(gallery.path, b"")
        handle._gallery = gallery
        handle._owned = False  # the caller opened it and closes it
        return handle

    def get(self) -> Gallery:
        """The open gallery; GalleryError (one line, naming the file) when it cannot be used."""
        if self._gallery is None:
            if not self._key:
                raise GalleryError(f"gallery {self.path} is closed")
            self._gallery = Gallery.open(self.path, self._key, create=self._create,
                                         timeout=self._timeout)
        return self._gallery

    def reset(self) -> None:
        """Drop the connection after a failure: the next attempt reopens the file."""
        if self._gallery is not None and self._owned:
            try:
                self._gallery.close()
            finally:
                self._gallery = None

    def close(self) -> None:
        self.reset()
