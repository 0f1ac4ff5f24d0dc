"""Checked CUDA runtime calls and owned buffers for the TensorRT runner (cuda-python).

cuda-python returns ``(cudaError_t, *results)`` from every call and raises nothing: an
unchecked failed ``cudaMemcpyAsync`` just leaves stale bytes in an output buffer, i.e. a
wrong embedding and a wrong access decision. So every call here goes through ``check``,
which turns a failure into a ``CudaError`` naming the call and the CUDA error.

Buffers and streams are owned objects with ``close()`` (and context managers) so a failure
half-way through allocating a runner's buffers releases what was already allocated.

cuda-python is imported lazily (``load_cudart``): ``cuda.bindings.runtime`` in cuda-python
>= 12.6, ``cuda.cudart`` before. Tests pass a fake module standing in for it (no GPU here).
"""

from __future__ import annotations

import ctypes
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from edge_runtime.errors import DependencyError, ModelError


class CudaError(ModelError):
    """A CUDA runtime call failed; the message names the call and the CUDA error."""


def load_cudart() -> ModuleType:
    """The cuda-python runtime module, whichever layout the installed version has."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError as exc:
            raise DependencyError("the TensorRT backend needs cuda-python "
                                  f"(pip install cuda-python): {exc}") from exc
    return runtime


def _error_name(rt: ModuleType, err: Any) -> str:
    """"cudaErrorMemoryAllocation (2)": the name and the number a CUDA user searches for."""
    try:
        code = str(int(err))
    except (TypeError, ValueError):
        code = "?"
    try:
        name = rt.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name is only decoration for the message
        name = str(err)
    return f"{name} ({code})"


def check(result: tuple[Any, ...], call: str, rt: ModuleType) -> Any:
    """Unwrap a cuda-python result tuple, or raise CudaError naming ``call``.

    Returns None, the single result, or the tuple of results.
    """
    if not isinstance(result, tuple) or not result:
        raise CudaError(f"CUDA call {call} returned {result!r}, not (status, ...)")
    err, rest = result[0], result[1:]
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA call {call} failed: {_error_name(rt, err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def handle(obj: Any) -> int:
    """A cuda-python handle (stream, pointer) as the integer TensorRT wants.

    ``int(obj)`` is the handle itself; ``obj.getPtr()`` is the address OF the handle inside
    the wrapper (cuda-python "Tips and Tricks"), never what TensorRT needs, so it is no
    fallback. Objects with only the ``__cuda_stream__`` protocol give ``(version, handle)``.
    """
    if isinstance(obj, int):
        return obj
    try:
        return int(obj)
    except TypeError:
        pass
    protocol = getattr(obj, "__cuda_stream__", None)
    if callable(protocol):
        return int(protocol()[1])
    raise CudaError(f"cannot take the CUDA handle of {type(obj).__name__}: it has no __int__ "
                    "(getPtr() would be the wrapper's address, not the handle)")


class _Owned:
    """close() once, also on garbage collection; a context manager."""

    _closed = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __enter__(self) -> _Owned:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


class Stream(_Owned):
    """One CUDA stream (cudaStreamCreate / cudaStreamDestroy)."""

    def __init__(self, rt: ModuleType) -> None:
        self.rt = rt
        self.stream = check(rt.cudaStreamCreate(), "cudaStreamCreate", rt)
        self._closed = False

    @property
    def handle(self) -> int:
        return handle(self.stream)

    def synchronize(self) -> None:
        check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize", self.rt)

    def _release(self) -> None:
        check(self.rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy", self.rt)


class PinnedBuffer(_Owned):
    """Page-locked host memory (cudaMallocHost), viewed as a flat numpy array of ``dtype``.

    Pinned memory is what makes ``cudaMemcpyAsync`` actually asynchronous and avoids a
    staging copy per transfer; on a Jetson (shared memory) it is also the cheap path.
    """

    def __init__(self, rt: ModuleType, nbytes: int, dtype: np.dtype) -> None:
        self.rt, self.nbytes, self.dtype = rt, int(nbytes), np.dtype(dtype)
        self.ptr = handle(check(rt.cudaMallocHost(self.nbytes), "cudaMallocHost", rt))
        self._closed = False
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self.array = np.ctypeslib.as_array(raw).view(self.dtype)

    def _release(self) -> None:
        self.array = np.empty(0, self.dtype)  # no view may outlive the memory
        check(self.rt.cudaFreeHost(self.ptr), "cudaFreeHost", self.rt)


class DeviceBuffer(_Owned):
    """Device memory (cudaMalloc) of a fixed size, with checked async copies to/from host."""

    def __init__(self, rt: ModuleType, nbytes: int) -> None:
        self.rt, self.nbytes = rt, int(nbytes)
        self.ptr = handle(check(rt.cudaMalloc(self.nbytes), "cudaMalloc", rt))
        self._closed = False

    def copy_from_host_async(self, host: PinnedBuffer, nbytes: int, stream: Stream) -> None:
        self._fits(nbytes, host)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.rt.cudaMemcpyAsync(self.ptr, host.ptr, nbytes, kind, stream.stream),
              "cudaMemcpyAsync", self.rt)

    def copy_to_host_async(self, host: PinnedBuffer, nbytes: int, stream: Stream) -> None:
        self._fits(nbytes, host)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.rt.cudaMemcpyAsync(host.ptr, self.ptr, nbytes, kind, stream.stream),
              "cudaMemcpyAsync", self.rt)

    def _fits(self, nbytes: int, host: PinnedBuffer) -> None:
        if nbytes > min(self.nbytes, host.nbytes):
            raise CudaError(f"copy of {nbytes} bytes exceeds the buffers "
                            f"({self.nbytes} device, {host.nbytes} host bytes)")

    def _release(self) -> None:
        check(self.rt.cudaFree(self.ptr), "cudaFree", self.rt)
