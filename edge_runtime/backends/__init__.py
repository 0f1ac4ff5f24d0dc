"""Inference backends behind one ``Runner`` interface (Polygraphy-style loaders and runners).

``load_runner(path)`` is what the pipeline calls: ``.onnx`` runs on onnxruntime (TensorRT EP,
CUDA EP or CPU, whichever exists), ``.engine`` / ``.plan`` on TensorRT. The TensorRT modules
(tensorrt, cuda-python) are imported only when an engine is loaded, so this package imports on
any machine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.backends.base import ExpectSpec, Runner, TensorSpec, check_feed, check_io
from edge_runtime.backends.onnxruntime_backend import (
    OnnxrtRunner,
    Provider,
    SessionFromOnnx,
    default_providers,
)
from edge_runtime.backends.tensorrt_backend import (
    EngineFromBytes,
    EngineFromPath,
    TrtRunner,
    api_for_version,
)
from edge_runtime.engine_meta import EngineKey
from edge_runtime.errors import DependencyError, ModelError

__all__ = [
    "BACKENDS", "EngineFromBytes", "EngineFromPath", "ExpectSpec", "OnnxrtRunner", "Runner",
    "SessionFromOnnx", "TensorSpec", "TrtRunner", "api_for_version", "available_backends",
    "backend_for", "check_feed", "check_io", "default_providers", "load_runner",
]

BACKENDS = ("onnxruntime", "tensorrt")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")


def available_backends() -> list[str]:
    """Backends whose Python packages are importable here (not whether a GPU is present)."""
    found = [b for b, mod in (("onnxruntime", "onnxruntime"), ("tensorrt", "tensorrt"))
             if importlib.util.find_spec(mod) is not None]
    if "tensorrt" in found and importlib.util.find_spec("cuda") is None:
        found.remove("tensorrt")  # an engine cannot run without cuda-python's runtime
    return found


def backend_for(model_path: Path | str, backend: str = "auto") -> str:
    """Which backend runs ``model_path``: its file type decides; a contradiction is an error."""
    path = Path(model_path)
    suffix = path.suffix.lower()
    kind = ("onnxruntime" if suffix in ONNX_SUFFIXES
            else "tensorrt" if suffix in ENGINE_SUFFIXES else None)
    if kind is None:
        raise ModelError(f"model {path}: unknown model type {suffix or '(no suffix)'!r}; "
                         f"expected {ONNX_SUFFIXES + ENGINE_SUFFIXES}")
    if backend not in ("auto", *BACKENDS):
        raise ModelError(f"backend must be auto, onnxruntime or tensorrt, got {backend!r}")
    if backend != "auto" and backend != kind:
        hint = ("build a TensorRT engine with edgepin export, or use the .onnx with backend "
                "onnxruntime" if backend == "tensorrt" else "use the .onnx it was built from")
        raise ModelError(f"model {path} is a {kind} model, not runnable by {backend}: {hint}")
    if kind == "tensorrt" and "tensorrt" not in available_backends():
        raise DependencyError(f"engine {path} needs TensorRT and cuda-python, not installed "
                              "here: run the .onnx model with onnxruntime instead")
    return kind


def load_runner(model_path: Path | str, *, backend: str = "auto",
                providers: Sequence[Provider] | None = None, threads: int = 2,
                expect_inputs: ExpectSpec | None = None,
                expect_outputs: ExpectSpec | None = None,
                expected_key: EngineKey | None = None) -> Runner:
    """Open ``model_path`` with the backend its type calls for, IO checked against
    ``expect_inputs`` / ``expect_outputs``. ``providers`` / ``threads``: onnxruntime only;
    ``expected_key``: TensorRT only (None: check the engine against this machine).
    """
    kind = backend_for(model_path, backend)
    if kind == "onnxruntime":
        return OnnxrtRunner(SessionFromOnnx(model_path, providers=providers, threads=threads),
                            expect_inputs=expect_inputs, expect_outputs=expect_outputs)
    return TrtRunner(EngineFromPath(model_path, expected_key), expect_inputs=expect_inputs,
                     expect_outputs=expect_outputs)
