"""The one inference interface every backend implements, and the IO checks they share.

The pipeline must not care whether an embedding came from onnxruntime on a CPU or from a
TensorRT engine on a Jetson: same feed, same outputs, same errors. So every backend is a
``Runner`` (Polygraphy's name for it), and the checks a caller relies on — the model has the
inputs/outputs it expects, a feed matches them — live here once instead of once per backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import DTypeLike

from edge_runtime.errors import ModelError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one model input or output; -1 marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: Shape

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    def accepts_shape(self, shape: Shape) -> bool:
        """Same rank, and every static dimension equal."""
        return len(shape) == len(self.shape) and all(
            want < 0 or want == got for want, got in zip(self.shape, shape, strict=True))


ExpectSpec = Mapping[str, "TensorSpec | DTypeLike"]


@runtime_checkable
class Runner(Protocol):
    """A loaded model: feed named arrays in, get named arrays out."""

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    @property
    def input_shapes(self) -> dict[str, Shape]: ...

    @property
    def input_specs(self) -> dict[str, TensorSpec]: ...

    @property
    def output_specs(self) -> dict[str, TensorSpec]: ...

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def _as_spec(name: str, want: TensorSpec | DTypeLike) -> TensorSpec:
    if isinstance(want, TensorSpec):
        return want
    return TensorSpec(name, np.dtype(want), ())


def check_io(model: str, kind: str, specs: Mapping[str, TensorSpec],
             expected: ExpectSpec | None, *, exact: bool) -> None:
    """Raise ModelError unless the model's ``kind`` tensors match what the caller expects.

    ``expected`` maps a name to a dtype, or to a TensorSpec to also check rank and static
    dimensions (-1 in the expectation: any size). ``exact``: the model may have no tensor the
    caller does not know about (true for inputs, which the caller must feed).
    """
    if expected is None:
        return
    problems = []
    missing = [n for n in expected if n not in specs]
    if missing:
        problems.append(f"missing {kind}s {missing} (it has {list(specs)})")
    if exact:
        extra = [n for n in specs if n not in expected]
        if extra:
            problems.append(f"unexpected {kind}s {extra}")
    for name, want in expected.items():
        have = specs.get(name)
        if have is None:
            continue
        want = _as_spec(name, want)
        if have.dtype != want.dtype:
            problems.append(f"{kind} {name!r} is {have.dtype}, expected {want.dtype}")
        if want.shape and not _shapes_compatible(have.shape, want.shape):
            problems.append(f"{kind} {name!r} has shape {list(have.shape)}, "
                            f"expected {list(want.shape)}")
    if problems:
        raise ModelError(f"model {model} does not match what edgepin expects: "
                         + "; ".join(problems))


def _shapes_compatible(have: Shape, want: Shape) -> bool:
    return len(have) == len(want) and all(
        w < 0 or h < 0 or h == w for h, w in zip(have, want, strict=True))


def check_feed(model: str, specs: Mapping[str, TensorSpec],
               feed: Mapping[str, np.ndarray]) -> None:
    """Raise ModelError naming the input when ``feed`` cannot be given to the model as is.

    No silent casting: a float64 face crop reaching a float32 model is a front-end bug that
    should surface here, not become a subtly different embedding.
    """
    missing = [n for n in specs if n not in feed]
    extra = [n for n in feed if n not in specs]
    if missing or extra:
        raise ModelError(f"model {model}: feed has inputs {sorted(feed)}, the model takes "
                         f"{list(specs)} (missing {missing}, unknown {extra})")
    for name, spec in specs.items():
        arr = feed[name]
        if not isinstance(arr, np.ndarray):
            raise ModelError(f"model {model}: input {name!r} must be a numpy array, "
                             f"got {type(arr).__name__}")
        if arr.dtype != spec.dtype:
            raise ModelError(f"model {model}: input {name!r} is {arr.dtype}, "
                             f"the model takes {spec.dtype}")
        if not spec.accepts_shape(arr.shape):
            raise ModelError(f"model {model}: input {name!r} has shape {list(arr.shape)}, "
                             f"the model takes {list(spec.shape)} (-1: any size)")


class RunnerBase:
    """Context-manager plumbing and the IO properties derived from ``input_specs``."""

    _inputs: dict[str, TensorSpec]
    _outputs: dict[str, TensorSpec]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def input_shapes(self) -> dict[str, Shape]:
        return {n: s.shape for n, s in self._inputs.items()}

    @property
    def input_specs(self) -> dict[str, TensorSpec]:
        return dict(self._inputs)

    @property
    def output_specs(self) -> dict[str, TensorSpec]:
        return dict(self._outputs)

    def close(self) -> None:  # pragma: no cover - overridden by every backend
        raise NotImplementedError

    def __enter__(self) -> RunnerBase:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
