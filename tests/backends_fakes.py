"""Stand-ins for ``tensorrt`` and cuda-python's runtime, used by tests/test_backends.py.

TensorRT and CUDA cannot run on this machine (no NVIDIA GPU, neither package installed), so
the TensorRT runner's logic — which API it calls on which version, when and how big it
allocates, how it moves bytes — is checked against these fakes. They expose only the
documented names of each API (TensorRT 8.5 binding API vs 10.x tensor API; cuda-python's
``(cudaError_t, result)`` tuples), record every call, and really compute: "device" memory is
host memory, copies are ``memmove``, and the fake engine computes
``L2-normalise(x @ W)`` from the bytes at the bound addresses, so outputs can be compared
with onnxruntime on the same weights. The real thing is exercised by tests/test_backends_gpu.py.
"""

from __future__ import annotations

import ctypes
import enum
import json

import numpy as np


class CudaErrorT(enum.IntEnum):
    cudaSuccess = 0  # noqa: N815 - cuda-python's names
    cudaErrorInvalidValue = 1  # noqa: N815
    cudaErrorMemoryAllocation = 2  # noqa: N815


class CudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1  # noqa: N815
    cudaMemcpyDeviceToHost = 2  # noqa: N815


class FakeCudart:
    """cuda-python runtime: ``fail={"cudaMalloc": 2}`` makes the 2nd cudaMalloc fail."""

    cudaError_t = CudaErrorT  # noqa: N815
    cudaMemcpyKind = CudaMemcpyKind  # noqa: N815

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = dict(fail or {})
        self.live: dict[int, ctypes.Array] = {}  # allocations not yet freed
        self.streams: set[int] = set()
        self._next_stream = 1000

    def _failing(self, name: str, pending: int = 0) -> bool:
        """True when this call (already recorded, or ``pending``) is the one set to fail."""
        count = sum(1 for c in self.calls if c[0] == name) + pending
        return self.fail.get(name) == count

    def _alloc(self, name: str, nbytes: int) -> tuple:
        if self._failing(name, pending=1):
            self.calls.append((name, nbytes, 0))
            return (CudaErrorT.cudaErrorMemoryAllocation, 0)
        buf = ctypes.create_string_buffer(nbytes)
        self.calls.append((name, nbytes, ctypes.addressof(buf)))
        self.live[ctypes.addressof(buf)] = buf
        return (CudaErrorT.cudaSuccess, ctypes.addressof(buf))

    def cudaMallocHost(self, nbytes: int) -> tuple:  # noqa: N802
        return self._alloc("cudaMallocHost", nbytes)

    def cudaMalloc(self, nbytes: int) -> tuple:  # noqa: N802
        return self._alloc("cudaMalloc", nbytes)

    def _free(self, name: str, ptr: int) -> tuple:
        self.calls.append((name, ptr))
        if self.live.pop(ptr, None) is None:
            return (CudaErrorT.cudaErrorInvalidValue,)
        return (CudaErrorT.cudaSuccess,)

    def cudaFreeHost(self, ptr: int) -> tuple:  # noqa: N802
        return self._free("cudaFreeHost", ptr)

    def cudaFree(self, ptr: int) -> tuple:  # noqa: N802
        return self._free("cudaFree", ptr)

    def cudaStreamCreate(self) -> tuple:  # noqa: N802
        self.calls.append(("cudaStreamCreate",))
        self._next_stream += 1
        self.streams.add(self._next_stream)
        return (CudaErrorT.cudaSuccess, self._next_stream)

    def cudaStreamDestroy(self, stream: int) -> tuple:  # noqa: N802
        self.calls.append(("cudaStreamDestroy", stream))
        self.streams.discard(stream)
        return (CudaErrorT.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple:  # noqa: N802
        self.calls.append(("cudaStreamSynchronize", stream))
        return (CudaErrorT.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: CudaMemcpyKind,  # noqa: N802
                        stream: int) -> tuple:
        self.calls.append(("cudaMemcpyAsync", kind, count, stream))
        if self._failing("cudaMemcpyAsync") or stream not in self.streams:
            return (CudaErrorT.cudaErrorInvalidValue,)
        ctypes.memmove(dst, src, count)
        return (CudaErrorT.cudaSuccess,)

    def cudaGetErrorName(self, err: CudaErrorT) -> tuple:  # noqa: N802
        return (CudaErrorT.cudaSuccess, err.name.encode())

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)

    def sizes(self, name: str) -> list[int]:
        return [c[1] for c in self.calls if c[0] == name]


def serialize_engine(weights: np.ndarray, max_batch: int) -> bytes:
    """The fake's "serialized engine": the weights and the batch profile."""
    return json.dumps({"magic": "fake-trt", "w": weights.tolist(), "max_batch": max_batch}).encode()


def _view(ptr: int, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape)) * 4
    return np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(ptr)).view(np.float32).reshape(shape)


class _Model:
    """face (N x D, N dynamic in [1, max_batch]) -> embedding = normalise(face @ W)."""

    def __init__(self, blob: dict, calls: list) -> None:
        self.w = np.asarray(blob["w"], np.float32)
        self.max_batch, self.calls = int(blob["max_batch"]), calls
        self.shapes = {"face": (-1, self.w.shape[0])}
        self.addresses: dict[str, int] = {}

    def io(self) -> list[tuple[str, bool, tuple[int, ...]]]:
        return [("face", True, (-1, self.w.shape[0])), ("embedding", False, (-1, self.w.shape[1]))]

    def profile(self) -> tuple:
        d = self.w.shape[0]
        return ((1, d), (max(1, self.max_batch // 2), d), (self.max_batch, d))

    def set_shape(self, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.profile()
        ok = len(shape) == 2 and lo[0] <= shape[0] <= hi[0] and shape[1] == lo[1]
        if ok:
            self.shapes["face"] = tuple(shape)
        return ok

    def shape_of(self, name: str) -> tuple[int, ...]:
        n = self.shapes["face"][0]
        return self.shapes["face"] if name == "face" else (n, self.w.shape[1])

    def execute(self, face_ptr: int, out_ptr: int) -> bool:
        x = _view(face_ptr, self.shapes["face"])
        y = x @ self.w
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        _view(out_ptr, y.shape)[...] = y
        return True


class _Context10:
    def __init__(self, model: _Model) -> None:
        self.m = model

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.m.calls.append(("set_input_shape", name, tuple(shape)))
        return self.m.set_shape(tuple(shape))

    def get_tensor_shape(self, name: str) -> tuple:
        return self.m.shape_of(name)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.m.calls.append(("set_tensor_address", name, ptr))
        self.m.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.m.calls.append(("execute_async_v3", stream_handle))
        return self.m.execute(self.m.addresses["face"], self.m.addresses["embedding"])


class _Engine10:
    """TensorRT 10.x ICudaEngine: name-based IO tensor API only (bindings were removed)."""

    def __init__(self, trt: FakeTrt, model: _Model) -> None:
        self.trt, self.m = trt, model
        self.num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return self.m.io()[i][0]

    def get_tensor_mode(self, name: str) -> str:
        is_input = dict((n, inp) for n, inp, _ in self.m.io())[name]
        return self.trt.TensorIOMode.INPUT if is_input else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def get_tensor_shape(self, name: str) -> tuple:
        return dict((n, s) for n, _, s in self.m.io())[name]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> tuple:
        self.m.calls.append(("get_tensor_profile_shape", name, profile_index))
        return self.m.profile()

    def create_execution_context(self) -> _Context10:
        return _Context10(self.m)


class _Context85:
    def __init__(self, model: _Model) -> None:
        self.m = model

    def set_binding_shape(self, index: int, shape: tuple) -> bool:
        self.m.calls.append(("set_binding_shape", index, tuple(shape)))
        return index == 0 and self.m.set_shape(tuple(shape))

    def get_binding_shape(self, index: int) -> tuple:
        return self.m.shape_of(self.m.io()[index][0])

    def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
        self.m.calls.append(("execute_async_v2", list(bindings), stream_handle))
        return self.m.execute(bindings[0], bindings[1])


class _Engine85:
    """TensorRT 8.5 ICudaEngine as driven through binding indices."""

    def __init__(self, trt: FakeTrt, model: _Model) -> None:
        self.m = model
        self.num_bindings = 2

    def get_binding_name(self, i: int) -> str:
        return self.m.io()[i][0]

    def binding_is_input(self, i: int) -> bool:
        return self.m.io()[i][1]

    def get_binding_dtype(self, i: int) -> str:
        return "FLOAT"

    def get_binding_shape(self, i: int) -> tuple:
        return self.m.io()[i][2]

    def get_profile_shape(self, profile_index: int, binding: int) -> tuple:
        self.m.calls.append(("get_profile_shape", profile_index, binding))
        return self.m.profile()

    def create_execution_context(self) -> _Context85:
        return _Context85(self.m)


class FakeTrt:
    """The ``tensorrt`` module of one version: 8.x engines speak bindings, 10.x+ tensors."""

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class TensorIOMode(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    def __init__(self, version: str) -> None:
        self.__version__ = version
        self.calls: list[tuple] = []
        trt = self

        class Runtime:
            def __init__(self, logger: FakeTrt.Logger) -> None:
                trt.calls.append(("Runtime",))

            def deserialize_cuda_engine(self, data: bytes) -> object | None:
                trt.calls.append(("deserialize_cuda_engine", len(data)))
                try:
                    blob = json.loads(data)
                except ValueError:
                    return None  # what TensorRT does with bytes it cannot read
                if blob.get("magic") != "fake-trt":
                    return None
                model = _Model(blob, trt.calls)
                return (_Engine10 if int(version.split(".")[0]) >= 10 else _Engine85)(trt, model)

        self.Runtime = Runtime

    @staticmethod
    def nptype(trt_dtype: str) -> type:
        return {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}[trt_dtype]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
