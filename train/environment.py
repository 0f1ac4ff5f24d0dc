"""What every training command needs before torch loads: the cache folder and the check
that the training extras are installed (shared by `train.commands` and `train.pins.commands`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edge_runtime.errors import DependencyError


def default_cache_dir() -> Path:
    """Where teacher targets and crops are cached (EDGEPIN_CACHE overrides)."""
    env = os.environ.get("EDGEPIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgepin"


def need_torch(command: str) -> None:
    """Fail with the install line, not an ImportError deep in a handler."""
    if importlib.util.find_spec("torch") is None:
        raise DependencyError(
            f"'edgepin {command}' needs the training extras: pip install 'edgepin[train]' "
            "torch==<a CPU or CUDA build>"
        )
