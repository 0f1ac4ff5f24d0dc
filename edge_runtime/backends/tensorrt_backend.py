"""TensorRT backend: deserialize a checked engine and run it with buffers allocated once.

Loaders (Polygraphy naming): ``EngineFromPath`` refuses an engine whose sidecar key
(``edge_runtime.engine_meta``) does not match this machine/model — a stale engine either fails
obscurely or runs a model that never passed the accuracy gate — and ``EngineFromBytes``
deserializes. ``TrtRunner`` then:

* allocates, once, a pinned host buffer and a device buffer per IO tensor at the optimization
  profile's maximum shape (per-call allocation costs milliseconds and fragments a Jetson's
  shared memory), and one CUDA stream;
* per call: copies inputs into the pinned buffers, sets the actual input shapes, enqueues
  H2D copies, the inference and D2H copies on its stream, synchronizes once. A batch larger
  than the profile's maximum (enrolment with many crops, a long utterance's windows) runs as
  consecutive chunks of at most that size, outputs concatenated in order.

TensorRT's execution API changed: 10.x removed the binding-index API; 8.x (JetPack 5 ships
8.5) is driven through it. Two small adapters hide this:

* ``_TensorApi`` (10.x / 11.x): ``get_tensor_*`` by name, ``context.set_input_shape``,
  ``context.set_tensor_address`` (once: the buffers never move), ``execute_async_v3(stream)``.
* ``_BindingApi`` (8.x): ``num_bindings`` / ``get_binding_*`` / ``get_profile_shape``,
  ``context.set_binding_shape``, a bindings list of device pointers, ``execute_async_v2``.

Only optimization profile 0 is used: the export builds exactly one. A runner is not
thread-safe (one stream, shared buffers): use one runner per thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from packaging.version import InvalidVersion, Version

from edge_runtime.backends.base import (
    ExpectSpec,
    RunnerBase,
    Shape,
    TensorSpec,
    check_feed,
    check_io,
)
from edge_runtime.backends.cuda import CudaError, DeviceBuffer, PinnedBuffer, Stream, load_cudart
from edge_runtime.engine_meta import (
    EngineKey,
    check_engine,
    for_machine,
    machine_identity,
    read_sidecar,
    sha256_file,
)
from edge_runtime.errors import DependencyError, ModelError

APIS = ("tensors", "bindings")


def import_tensorrt() -> ModuleType:
    """``tensorrt``, or a DependencyError saying what to install / use instead."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(f"TensorRT is not installed here ({exc}): run the .onnx model "
                              "with onnxruntime, or install TensorRT (JetPack) and cuda-python"
                              ) from exc
    return tensorrt


def api_for_version(version: str) -> str:
    """"tensors" for TensorRT >= 10 (binding API removed), "bindings" for 8.x."""
    try:
        v = Version(str(version))
    except InvalidVersion as exc:
        raise ModelError(f"unparseable TensorRT version {version!r}") from exc
    if v < Version("8.0"):
        raise ModelError(f"TensorRT {v} is too old: edgepin supports 8.x (JetPack 5) and newer")
    return "tensors" if v >= Version("10") else "bindings"


class EngineFromBytes:
    """Lazy loader: deserializes an engine (bytes, or a callable returning them)."""

    def __init__(self, serialized: bytes | Callable[[], bytes], *,
                 trt_module: ModuleType | None = None, name: str = "<engine bytes>") -> None:
        self.serialized, self.trt_module, self.name = serialized, trt_module, name
        self._keepalive: tuple[Any, ...] = ()

    def __call__(self) -> Any:
        trt = self.trt_module or import_tensorrt()
        data = self.serialized() if callable(self.serialized) else self.serialized
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(bytes(data))
        if engine is None:
            raise ModelError(f"engine {self.name} could not be deserialized by TensorRT "
                             f"{trt.__version__} (corrupt, or built by another TensorRT "
                             "version); rebuild it with edgepin export")
        self._keepalive = (logger, runtime)  # the runtime must outlive its engine
        return engine


def machine_key(engine_path: Path, trt_version: str) -> EngineKey:
    """The key the engine would need on this machine, for an engine with no caller key.

    TensorRT version, GPU, compute capability and JetPack come from this machine; the ONNX
    hash, precision and profiles can only come from the sidecar (no ONNX at hand), so this
    checks the machine, not which model the engine holds.
    """
    built: EngineKey = read_sidecar(engine_path)["key"]
    return for_machine(built, machine_identity(trt_version))


class EngineFromPath:
    """Lazy loader: check the engine's sidecar against ``expected_key``, then deserialize.

    ``expected_key`` None checks against this machine only (``machine_key``).
    """

    def __init__(self, path: Path | str, expected_key: EngineKey | None = None, *,
                 trt_module: ModuleType | None = None) -> None:
        self.path, self.expected_key, self.trt_module = Path(path), expected_key, trt_module
        self._inner: EngineFromBytes | None = None

    def __call__(self) -> Any:
        if not self.path.is_file():
            raise ModelError(f"engine {self.path} does not exist; build it with edgepin export")
        trt = self.trt_module or import_tensorrt()
        key = self.expected_key or machine_key(self.path, trt.__version__)
        check_engine(self.path, key)
        self._inner = EngineFromBytes(self.path.read_bytes(), trt_module=trt, name=str(self.path))
        return self._inner()

    def precision(self) -> str:
        return read_sidecar(self.path)["key"].precision


@dataclass(frozen=True)
class _IO:
    name: str
    index: int
    is_input: bool
    dtype: np.dtype
    shape: Shape  # as built, -1 dynamic
    min_shape: Shape
    max_shape: Shape


def _dims(dims: Any) -> Shape:
    return tuple(int(d) for d in dims)


def _nptype(trt: ModuleType, trt_dtype: Any, name: str) -> np.dtype:
    try:
        return np.dtype(trt.nptype(trt_dtype))
    except TypeError as exc:
        raise ModelError(f"engine tensor {name!r} has type {trt_dtype} with no numpy "
                         "equivalent") from exc


class _TensorApi:
    """TensorRT 10.x / 11.x: name-based IO tensors and ``execute_async_v3``."""

    name = "tensors"

    def __init__(self, trt: ModuleType, engine: Any, context: Any) -> None:
        self.trt, self.engine, self.context = trt, engine, context

    def tensors(self) -> list[_IO]:
        e, out = self.engine, []
        for i in range(e.num_io_tensors):
            name = e.get_tensor_name(i)
            is_input = e.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            shape = _dims(e.get_tensor_shape(name))
            lo = hi = shape
            if is_input and -1 in shape:
                lo, _, hi = (_dims(s) for s in e.get_tensor_profile_shape(name, 0))
            out.append(_IO(name, i, is_input, _nptype(self.trt, e.get_tensor_dtype(name), name),
                           shape, lo, hi))
        return out

    def set_input_shape(self, io: _IO, shape: Shape) -> bool:
        return bool(self.context.set_input_shape(io.name, shape))

    def output_shape(self, io: _IO) -> Shape:
        return _dims(self.context.get_tensor_shape(io.name))

    def bind(self, io: _IO, ptr: int) -> bool:
        return bool(self.context.set_tensor_address(io.name, ptr))

    def execute(self, stream: int) -> bool:
        return bool(self.context.execute_async_v3(stream))


class _BindingApi:
    """TensorRT 8.x: binding indices, a bindings pointer list and ``execute_async_v2``."""

    name = "bindings"

    def __init__(self, trt: ModuleType, engine: Any, context: Any) -> None:
        self.trt, self.engine, self.context = trt, engine, context
        self.bindings = [0] * engine.num_bindings

    def tensors(self) -> list[_IO]:
        e, out = self.engine, []
        for i in range(e.num_bindings):
            name = e.get_binding_name(i)
            is_input = bool(e.binding_is_input(i))
            shape = _dims(e.get_binding_shape(i))
            lo = hi = shape
            if is_input and -1 in shape:
                lo, _, hi = (_dims(s) for s in e.get_profile_shape(0, i))
            out.append(_IO(name, i, is_input, _nptype(self.trt, e.get_binding_dtype(i), name),
                           shape, lo, hi))
        return out

    def set_input_shape(self, io: _IO, shape: Shape) -> bool:
        return bool(self.context.set_binding_shape(io.index, shape))

    def output_shape(self, io: _IO) -> Shape:
        return _dims(self.context.get_binding_shape(io.index))

    def bind(self, io: _IO, ptr: int) -> bool:
        self.bindings[io.index] = int(ptr)
        return True

    def execute(self, stream: int) -> bool:
        return bool(self.context.execute_async_v2(self.bindings, stream))


class TrtRunner(RunnerBase):
    """Runner over a TensorRT engine (module docstring).

    ``trt_module`` / ``cuda_module`` default to ``tensorrt`` and cuda-python's runtime;
    ``api`` "auto" picks the adapter from the TensorRT version.
    """

    def __init__(self, engine: EngineFromPath | EngineFromBytes | Callable[[], Any], *,
                 expect_inputs: ExpectSpec | None = None,
                 expect_outputs: ExpectSpec | None = None,
                 trt_module: ModuleType | None = None, cuda_module: ModuleType | None = None,
                 api: str = "auto") -> None:
        self._loader = engine
        self.path = getattr(engine, "path", None)
        self._name = str(self.path or getattr(engine, "name", "<engine>"))
        self.trt = trt_module or getattr(engine, "trt_module", None) or import_tensorrt()
        if api not in ("auto", *APIS):
            raise ModelError(f"api must be auto, tensors or bindings, got {api!r}")
        api = api_for_version(self.trt.__version__) if api == "auto" else api
        self._buffers: dict[str, tuple[PinnedBuffer, DeviceBuffer]] = {}
        self._stream: Stream | None = None
        self.engine = self.context = None
        try:
            self._setup(engine, api, cuda_module)
        except BaseException:
            try:
                self.close()
            except CudaError:
                pass  # the original failure is the one worth reporting
            raise
        check_io(self._name, "input", self._inputs, expect_inputs, exact=True)
        check_io(self._name, "output", self._outputs, expect_outputs, exact=False)

    def _setup(self, loader: Callable[[], Any], api: str, cuda_module: ModuleType | None) -> None:
        self.engine = loader()
        needed = "num_io_tensors" if api == "tensors" else "num_bindings"
        if not hasattr(self.engine, needed):
            raise ModelError(f"engine {self._name}: TensorRT {self.trt.__version__} has no "
                             f"{needed}; the {api} API does not apply to it")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ModelError(f"engine {self._name}: could not create an execution context "
                             "(out of GPU memory?)")
        cls = _TensorApi if api == "tensors" else _BindingApi
        self._api = cls(self.trt, self.engine, self.context)
        ios = self._api.tensors()
        self._io = {io.name: io for io in ios}
        for io in ios:
            if io.is_input:
                self._set_shape(io, io.max_shape)
        self.rt = cuda_module or load_cudart()
        self._stream = Stream(self.rt)
        for io in ios:
            shape = io.max_shape if io.is_input else self._api.output_shape(io)
            if min(shape, default=0) < 0:
                raise ModelError(f"engine {self._name}: output {io.name!r} has a data-dependent "
                                 f"shape {list(shape)}, which edgepin cannot preallocate")
            nbytes = max(1, math.prod(shape)) * io.dtype.itemsize
            host = PinnedBuffer(self.rt, nbytes, io.dtype)
            self._buffers[io.name] = (host, DeviceBuffer(self.rt, nbytes))
            if not self._api.bind(io, self._buffers[io.name][1].ptr):
                raise ModelError(f"engine {self._name}: TensorRT refused the address of "
                                 f"{io.name!r}")
        self._inputs = {io.name: TensorSpec(io.name, io.dtype, io.shape) for io in ios
                        if io.is_input}
        self._outputs = {io.name: TensorSpec(io.name, io.dtype, io.shape) for io in ios
                         if not io.is_input}

    @property
    def api(self) -> str:
        """Which execution API drives this engine: "tensors" (10.x+) or "bindings" (8.x)."""
        return self._api.name

    def max_shapes(self) -> dict[str, Shape]:
        """Shape each buffer was allocated for (inputs: the profile maximum)."""
        return {n: io.max_shape for n, io in self._io.items() if io.is_input}

    def _set_shape(self, io: _IO, shape: Shape) -> None:
        if not self._api.set_input_shape(io, tuple(int(d) for d in shape)):
            raise ModelError(f"engine {self._name}: TensorRT rejected shape {list(shape)} for "
                             f"input {io.name!r} (profile min {list(io.min_shape)}, "
                             f"max {list(io.max_shape)})")

    def max_batch(self) -> int | None:
        """Largest batch (axis 0) the profile takes for every input (1 for a static batch-1
        engine such as a DLA one), None for an engine without inputs of rank >= 1."""
        ios = [self._io[n] for n in self._inputs]
        if not ios or any(not io.max_shape for io in ios):
            return None
        return min(io.max_shape[0] for io in ios)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name (copies: the pinned buffers are reused by the next call).

        A batch above the profile maximum is run in chunks of the maximum (module docstring);
        each chunk is checked like any feed.
        """
        if self._stream is None:
            raise ModelError(f"engine {self._name}: runner is closed")
        limit = self.max_batch()
        arrays = [feed.get(n) for n in self._inputs]
        if limit is not None and all(isinstance(a, np.ndarray) and a.ndim for a in arrays):
            sizes = {a.shape[0] for a in arrays}
            if len(sizes) == 1 and (n := sizes.pop()) > limit:
                parts = [self.run({k: v[i:i + limit] for k, v in feed.items()})
                         for i in range(0, n, limit)]
                return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
        check_feed(self._name, self._inputs, feed)
        return self._run_once(feed)

    def _run_once(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        stream = self._stream
        for name in self._inputs:
            arr, io = feed[name], self._io[name]
            if any(not lo <= d <= hi for d, lo, hi in zip(arr.shape, io.min_shape, io.max_shape,
                                                          strict=True)):
                raise ModelError(f"engine {self._name}: input {name!r} shape {list(arr.shape)} "
                                 f"is outside the engine profile min {list(io.min_shape)} max "
                                 f"{list(io.max_shape)}")
            host, dev = self._buffers[name]
            host.array[: arr.size] = arr.ravel()
            self._set_shape(io, arr.shape)
            dev.copy_from_host_async(host, arr.nbytes, stream)
        if not self._api.execute(stream.handle):
            call = "execute_async_v3" if self._api.name == "tensors" else "execute_async_v2"
            raise ModelError(f"engine {self._name}: TensorRT {call} failed")
        shapes = {}
        for name, spec in self._outputs.items():
            shapes[name] = self._api.output_shape(self._io[name])
            host, dev = self._buffers[name]
            dev.copy_to_host_async(host, math.prod(shapes[name]) * spec.dtype.itemsize, stream)
        stream.synchronize()
        return {name: self._buffers[name][0].array[: math.prod(shape)].reshape(shape).copy()
                for name, shape in shapes.items()}

    def describe(self) -> dict[str, Any]:
        """Backend, TensorRT version and API, precision (from the sidecar), engine path, sha256."""
        precision = "unknown"
        if isinstance(self._loader, EngineFromPath):
            precision = self._loader.precision()
        return {
            "backend": "tensorrt",
            "version": self.trt.__version__,
            "api": self.api,
            "precision": precision,
            "model": self._name,
            "sha256": sha256_file(self.path) if self.path else None,
            "max_shapes": {n: list(s) for n, s in self.max_shapes().items()},
        }

    def close(self) -> None:
        """Free buffers and stream (every release is attempted; the first failure raised)."""
        first: CudaError | None = None
        owned = [b for pair in self._buffers.values() for b in pair]
        if self._stream is not None:
            owned.append(self._stream)
        for obj in owned:
            try:
                obj.close()
            except CudaError as exc:
                first = first or exc
        self._buffers, self._stream = {}, None
        self.context = self.engine = None
        if first is not None:
            raise first
