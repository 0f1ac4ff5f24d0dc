"""INT8 calibration sets: real inputs, stored once, verified on every use.

INT8 scales are only as good as the data they were measured on, so a calibration set is an
artefact with provenance: an ``.npz`` keyed by ONNX input name plus a JSON manifest holding its
sha256, sample count, shapes, dtypes and a description of where the samples came from. Loading
re-hashes the file, so a set that was regenerated, truncated or edited is refused instead of
silently producing different scales. A missing set is an error: there is deliberately no
fallback to random data, because random inputs give plausible-looking but wrong scales.

No torch here: this runs wherever the quantizer runs (workstation, CI, or a Jetson).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge_runtime.atomic import write_atomic
from edge_runtime.errors import ModelError

MANIFEST_FORMAT = "edgepin-calibration/1"
DEFAULT_MIN_SAMPLES = 500


def manifest_path(npz_path: Path) -> Path:
    """The manifest sits next to the set: ``face_calib.npz`` -> ``face_calib.json``."""
    return Path(npz_path).with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_calibration_set(
    arrays: Mapping[str, np.ndarray], out: Path, *, source: Mapping[str, Any]
) -> Path:
    """Write ``arrays`` (one stacked array per ONNX input, samples on axis 0) and its manifest.

    Floating arrays are stored as float32 because that is what the exported graphs take;
    ``source`` must say where the samples came from (dataset, split, preprocessing).
    """
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if not arrays:
        raise ModelError(f"calibration set {out}: no input arrays given")
    if not source:
        raise ModelError(f"calibration set {out}: 'source' must describe where samples came from")
    stored: dict[str, np.ndarray] = {}
    counts = set()
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if a.ndim < 1 or a.shape[0] == 0:
            raise ModelError(f"calibration set {out}: input {name!r} has no samples (shape {a.shape})")
        if np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32, copy=False)
            if not np.all(np.isfinite(a)):
                raise ModelError(f"calibration set {out}: input {name!r} holds NaN or Inf values")
        stored[name] = np.ascontiguousarray(a)
        counts.add(a.shape[0])
    if len(counts) != 1:
        sizes = {k: v.shape[0] for k, v in stored.items()}
        raise ModelError(f"calibration set {out}: inputs disagree on the sample count {sizes}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda fh: np.savez(fh, **stored))
    manifest = {
        "format": MANIFEST_FORMAT,
        "npz": out.name,
        "sha256": _sha256(out),
        "n_samples": int(counts.pop()),
        "inputs": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(stored.items())
        },
        "source": dict(source),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    write_atomic(manifest_path(out), lambda fh: fh.write(text))
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a calibration set, or a ModelError naming what is missing."""
    path = Path(path)
    mpath = manifest_path(path)
    if not path.is_file():
        raise ModelError(
            f"calibration set {path} does not exist; build it from real data with "
            "calibration.int8_sets.save_calibration_set (random data is never used instead)"
        )
    if not mpath.is_file():
        raise ModelError(f"calibration set {path} has no manifest {mpath}; rebuild the set")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"calibration manifest {mpath} is unreadable: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelError(
            f"calibration manifest {mpath}: format {manifest.get('format')!r}, "
            f"expected {MANIFEST_FORMAT!r}"
        )
    return manifest


def load_calibration_set(
    path: Path, *, expect_inputs: Iterable[str], min_samples: int = DEFAULT_MIN_SAMPLES
) -> dict[str, np.ndarray]:
    """Load a verified set: sha256, input names, shapes and sample count must all match."""
    path = Path(path)
    manifest = read_manifest(path)
    actual = _sha256(path)
    if actual != manifest.get("sha256"):
        raise ModelError(
            f"calibration set {path} is corrupt or modified: sha256 {actual[:16]}... does not "
            f"match its manifest ({str(manifest.get('sha256'))[:16]}...); rebuild it"
        )
    expected = set(expect_inputs)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"calibration set {path} cannot be read: {exc}") from exc
    have = set(arrays)
    if have != expected:
        missing, extra = sorted(expected - have), sorted(have - expected)
        raise ModelError(
            f"calibration set {path} does not fit the model: missing inputs {missing}, "
            f"unexpected inputs {extra}"
        )
    for name, arr in arrays.items():
        info = manifest["inputs"].get(name, {})
        if list(arr.shape) != info.get("shape") or str(arr.dtype) != info.get("dtype"):
            raise ModelError(
                f"calibration set {path}: input {name!r} is {arr.dtype}{list(arr.shape)}, "
                f"manifest says {info.get('dtype')}{info.get('shape')}"
            )
    n = int(manifest["n_samples"])
    if n < min_samples:
        raise ModelError(
            f"calibration set {path} holds {n} samples, at least {min_samples} are required "
            "for stable INT8 scales"
        )
    return arrays


class NpzCalibrationReader(CalibrationDataReader):
    """onnxruntime calibration reader over feed dicts, Polygraphy data-loader style.

    ``data`` is either one mapping of stacked arrays (samples on axis 0, e.g. the result of
    ``load_calibration_set``) or an iterable of feed dicts ``{input_name: batch_array}``.
    Consecutive items are grouped into batches of ``batch_size`` samples; ``rewind()``
    restarts, so one reader can drive several calibrations.
    """

    def __init__(
        self,
        data: Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]],
        *,
        batch_size: int = 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        if isinstance(data, Mapping):
            stacked = {k: np.asarray(v) for k, v in data.items()}
            sizes = {v.shape[0] for v in stacked.values()}
            if len(sizes) != 1:
                raise ModelError(f"calibration inputs disagree on the sample count: {sizes}")
            n = sizes.pop()
            self._batches = [
                {k: v[i : i + batch_size] for k, v in stacked.items()}
                for i in range(0, n, batch_size)
            ]
        else:
            self._batches = list(self._group(data, batch_size))
        if not self._batches:
            raise ModelError("calibration reader got no samples")
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    @staticmethod
    def _group(
        feeds: Iterable[Mapping[str, np.ndarray]], batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        pending: list[Mapping[str, np.ndarray]] = []
        count = 0
        for feed in feeds:
            pending.append(feed)
            count += len(next(iter(feed.values())))
            if count >= batch_size:
                yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
                pending, count = [], 0
        if pending:
            yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)
