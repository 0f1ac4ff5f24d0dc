"""onnxruntime backend: the CPU default, and the CUDA / TensorRT execution providers if present.

Provider order is fastest first — TensorRT EP, CUDA EP, then CPU — because onnxruntime assigns
each node to the first provider in the list that supports it and falls back down the list.
Sessions run sequentially with a small fixed thread pool (default 2): the device also runs
capture, VAD and the other model at the same time, and on a 2-core CPU more intra-op threads
only fight those for the cores (and make latency jittery).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.base import (
    ExpectSpec,
    RunnerBase,
    TensorSpec,
    check_feed,
    check_io,
)
from edge_runtime.engine_meta import sha256_file
from edge_runtime.errors import DependencyError, ModelError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU = "CPUExecutionProvider"
PRECISION_METADATA_KEY = "edgepin.precision"
Provider = str | tuple[str, dict[str, Any]]

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(f"onnxruntime is not installed ({exc}): pip install onnxruntime"
                              ) from exc
    return onnxruntime


def default_providers(available: Sequence[str] | None = None) -> list[str]:
    """TensorRT EP, CUDA EP where this onnxruntime build has them, then always CPU."""
    if available is None:
        available = _ort().get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available] + [CPU]


def _provider_name(p: Provider) -> str:
    return p if isinstance(p, str) else p[0]


class SessionFromOnnx:
    """Lazy loader: calling it opens an ``onnxruntime.InferenceSession`` on ``path``.

    ``providers``: names (or ``(name, options)`` pairs) in priority order; None picks
    ``default_providers()``. A requested provider this onnxruntime does not have is an error,
    not a silent CPU fallback: a benchmark row labelled "CUDA" must have run on CUDA.
    """

    def __init__(self, path: Path | str, providers: Sequence[Provider] | None = None,
                 threads: int = 2) -> None:
        if int(threads) < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        self.path = Path(path)
        self.providers = list(providers) if providers is not None else None
        self.threads = int(threads)

    def __call__(self) -> Any:
        ort = _ort()
        if not self.path.is_file():
            raise ModelError(f"ONNX model {self.path} does not exist")
        available = ort.get_available_providers()
        providers = self.providers if self.providers is not None else default_providers(available)
        absent = [_provider_name(p) for p in providers if _provider_name(p) not in available]
        if absent:
            raise DependencyError(f"onnxruntime {ort.__version__} here has no {absent} for "
                                  f"{self.path} (available: {available})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many unrelated types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"ONNX model {self.path} cannot be loaded (corrupt, truncated or "
                             f"not ONNX): {first}") from exc


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"tensor {arg.name!r} has type {arg.type}, which edgepin does not feed")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, np.dtype(dtype), shape)


def onnx_precision(path: Path, metadata: Mapping[str, str] | None = None) -> str:
    """"int8-qdq" / "fp16" / "fp32", from the export's metadata or else from the graph.

    Without the ``onnx`` package (not installed on the device), a QDQ graph is recognised by
    its op types, which protobuf stores as plain strings in the file.
    """
    if metadata and metadata.get(PRECISION_METADATA_KEY):
        return metadata[PRECISION_METADATA_KEY]
    blob = Path(path).read_bytes()
    if b"QuantizeLinear" in blob:
        return "int8-qdq"
    return "fp32"


class OnnxrtRunner(RunnerBase):
    """Runner over an onnxruntime session (from ``SessionFromOnnx`` or an existing session).

    ``expect_inputs`` / ``expect_outputs`` (name -> dtype or TensorSpec) are checked at load,
    so a model exported with other IO names fails when the runtime starts, naming the file.
    """

    def __init__(self, session: SessionFromOnnx | Any, *, expect_inputs: ExpectSpec | None = None,
                 expect_outputs: ExpectSpec | None = None) -> None:
        self.path = session.path if isinstance(session, SessionFromOnnx) else None
        self.session = session() if isinstance(session, SessionFromOnnx) else session
        self._name = str(self.path) if self.path is not None else "<onnxruntime session>"
        self._inputs = {a.name: _spec(a) for a in self.session.get_inputs()}
        self._outputs = {a.name: _spec(a) for a in self.session.get_outputs()}
        check_io(self._name, "input", self._inputs, expect_inputs, exact=True)
        check_io(self._name, "output", self._outputs, expect_outputs, exact=False)
        self._described: dict[str, Any] | None = None

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, float arrays owned by the caller."""
        if self.session is None:
            raise ModelError(f"model {self._name}: runner is closed")
        check_feed(self._name, self._inputs, feed)
        names = list(self._outputs)
        try:
            values = self.session.run(names, dict(feed))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"model {self._name}: onnxruntime run failed: {exc}") from exc
        return dict(zip(names, values, strict=True))

    def describe(self) -> dict[str, Any]:
        """Backend, providers actually in use, precision, model path and sha256."""
        if self._described is None:
            meta = self.session.get_modelmeta().custom_metadata_map if self.session else {}
            self._described = {
                "backend": "onnxruntime",
                "version": _ort().__version__,
                "providers": list(self.session.get_providers()) if self.session else [],
                "precision": onnx_precision(self.path, meta) if self.path else "unknown",
                "model": self._name,
                "sha256": sha256_file(self.path) if self.path else None,
            }
        return dict(self._described)

    def close(self) -> None:
        self.session = None
