"""Atomic writes of files other processes read: models, operating points, manifests, sets.

``tempfile.mkstemp`` creates its file 0600, and ``os.replace`` keeps that mode, so a file
written through it alone becomes owner-only on every rewrite: a door service that runs as
another user could read the operating points yesterday and not after today's re-calibration.
Personal data (the gallery, the audit log, the keys) stays owner-only on purpose and does not
use this module.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

SHARED_MODE = 0o644


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file over `path` with the mode readers expect.

    The mode of the file it replaces is kept (an operator's 0640 stays 0640); a new file gets
    0644, what a plain ``open()`` gives under the usual umask.
    """
    p = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except FileNotFoundError:
        mode = SHARED_MODE
    os.chmod(tmp, mode)
    os.replace(tmp, p)


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
