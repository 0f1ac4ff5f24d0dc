"""What the export stages share: the options, the stage printer and ONNX metadata.

Kept apart from `export.pipeline` so the bundle step (`export.pipeline_bundle`) and the
benchmarks can use them without importing the pipeline that imports the bundle step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from export.recipes import RECIPES_FILE

# Models `edgepin export` quantizes: the two students and the large face tier (dlib's face
# ResNet as ONNX), which goes through the same stages with its own crop (a 150 dlib chip).
EXPORT_MODELS = ("face", "voice", "face_large")


def input_name(model: str) -> str:
    """The graph input of an exported model (every face model's is ``face``)."""
    return "feats" if model == "voice" else "face"


def data_kind(model: str) -> str:
    """The data a model is calibrated and gated on: ``face`` or ``voice``."""
    return "voice" if model == "voice" else "face"


@dataclass
class ExportOptions:
    """Everything `edgepin export` needs; data folders are optional only with ready sets."""

    target: str
    models: Path
    out: Path
    cache_dir: Path
    data_faces: Path | None = None
    data_voices: Path | None = None
    data_detector: Path | None = None  # lfw/, att_faces/, grid/: the face detector's images
    calib: Path | None = None  # default: <cache_dir>/calibration
    modalities: Sequence[str] = ("face", "voice")
    n_calib: int = 640  # a multiple of CALIB_BATCH: every calibration batch is full
    min_calib: int = 500
    # Command-line additions to the recipe (export/recipes.yaml); face:/voice: prefixes.
    exclude: Sequence[str] = ()  # op types kept float beyond the recipe's
    calibrate_method: Sequence[str] = ()  # last applicable entry wins over the recipe's
    keep_float: Sequence[str] = ()  # nodes left in float: names, "first", "last:N"
    recipes_file: Path | None = RECIPES_FILE  # None: built-in defaults, no file
    search: bool = False  # on a failed gate, search a recipe and write it to recipes_file
    min_p1: float = 0.99
    max_eer_delta_pt: float = 0.3
    split: dict[str, Any] | None = None  # default: the model's own split (ONNX metadata)
    dla: bool = True
    threads: int = 2
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Stages:
    """Rich, one line per stage on stderr: start, then outcome and duration.

    Plain lines, not a live progress bar: the data preparation called inside a stage shows
    its own rich progress bar, and rich allows one live display at a time.
    """

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, str]]:
        """Yields a dict; whatever is put under ``"done"`` is shown when the stage ends."""
        import time

        info: dict[str, str] = {}
        self.console.print(f"[bold cyan]>[/] {name} ...")
        t0 = time.perf_counter()
        try:
            yield info
        except BaseException:
            self.console.print(f"[bold red]x[/] {name}: failed after "
                               f"{time.perf_counter() - t0:.1f} s")
            raise
        done = f": {info['done']}" if info.get("done") else ""
        mark = "[bold red]FAILED[/]" if info.get("failed") else "[bold green]ok[/]"
        self.console.print(f"{mark} {name}{done} ({time.perf_counter() - t0:.1f} s)")


def onnx_metadata(path: Path) -> dict[str, Any]:
    """``edgepin.*`` metadata_props of an ONNX file, JSON values decoded."""
    out: dict[str, Any] = {}
    for p in onnx.load(str(path), load_external_data=False).metadata_props:
        if p.key.startswith("edgepin."):
            try:
                out[p.key[8:]] = json.loads(p.value)
            except json.JSONDecodeError:
                out[p.key[8:]] = p.value
    return out
