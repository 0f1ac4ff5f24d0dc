"""Atomic writes of files other processes read: models, operating points, manifests, sets.

``tempfile.mkstemp`` creates its file 0600, and ``os.replace`` keeps that mode, so a file
written through it alone becomes owner-only on every rewrite: a door service that runs as
another user could read the operating points yesterday and not after today's re-calibration.
Personal data (the gallery, the audit log, the keys) stays owner-only on purpose and does not
use this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

SHARED_MODE = 0o644


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file over `path`, readable by all (0644, as the bundle manifest).

    Always 0644, also over an existing file: the files an older edgepin rewrote are 0600 now,
    and keeping their mode would keep the fault. An operator who wants them closed closes the
    folder, which also covers the files no rewrite touches.
    """
    os.chmod(tmp, SHARED_MODE)
    os.replace(tmp, path)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object], *,
                 fsync: bool = False) -> Path:
    """Write `path` through a temporary file beside it: readers see the old file or the whole
    new one, a crash leaves no half-written file, and the mode is `publish`'s."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        publish(tmp, p)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return p
