"""What every capture source shares: the poll contract, status snapshots, clock and back-off.

The access-control loop polls one source repeatedly and gets everything that arrived since
the previous call (frames + one contiguous 16 kHz audio chunk), so it never blocks on one
device while the other overruns, and replay and live hardware look the same to it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.audio import TARGET_SR
from edge_runtime.frontend.video import Frame


class SourceState(str, Enum):
    """Life cycle of a device; ``ENDED`` is a finite source (file) that ran out, not a fault."""

    IDLE = "idle"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    ENDED = "ended"
    CLOSED = "closed"


@dataclass(frozen=True)
class Status:
    """Snapshot of one device for the status line and the audit log (never biometric data)."""

    device: str
    state: SourceState = SourceState.IDLE
    frames: int = 0
    frames_dropped: int = 0
    audio_seconds: float = 0.0
    audio_overflows: int = 0
    disconnects: int = 0
    reconnects: int = 0
    last_error: str | None = None

    def line(self) -> str:
        """One short line: enough for an operator to see a dead or overrunning device."""
        parts = [f"{self.device}: {self.state.value}"]
        if self.frames or self.frames_dropped:
            parts.append(f"frames {self.frames} (dropped {self.frames_dropped})")
        if self.audio_seconds or self.audio_overflows:
            parts.append(f"audio {self.audio_seconds:.1f} s (overflows {self.audio_overflows})")
        if self.disconnects:
            parts.append(f"lost {self.disconnects}x, reconnected {self.reconnects}x")
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        return ", ".join(parts)


class StatusTracker:
    """Thread-safe holder of a device's counters; readers get immutable ``Status`` snapshots."""

    def __init__(self, device: str) -> None:
        self._lock = threading.Lock()
        self._status = Status(device=device)

    def update(self, **changes: object) -> None:
        with self._lock:
            self._status = dataclasses.replace(self._status, **changes)

    def incr(self, name: str, amount: float = 1) -> None:
        with self._lock:
            value = getattr(self._status, name) + amount
            self._status = dataclasses.replace(self._status, **{name: value})

    def snapshot(self) -> Status:
        with self._lock:
            return self._status


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential reconnect delays, capped so a device that returns is picked up soon.

    ``max_retries`` consecutive failed attempts put the device in FAILED; None retries forever
    (what a door controller wants: the camera may be replugged an hour later).
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    max_retries: int | None = None

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.factor >= 1 and self.cap >= self.initial):
            raise ConfigError(
                f"BackoffPolicy needs initial > 0, factor >= 1, cap >= initial; got "
                f"initial={self.initial}, factor={self.factor}, cap={self.cap}"
            )
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError(f"BackoffPolicy.max_retries must be >= 0, got {self.max_retries}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if self.factor == 1:
            return self.initial
        # past the cap already: avoids factor**attempt overflowing after days of retrying
        if attempt > math.log(self.cap / self.initial, self.factor) + 1:
            return self.cap
        return min(self.cap, self.initial * self.factor**attempt)

    def exhausted(self, failures: int) -> bool:
        return self.max_retries is not None and failures > self.max_retries


class SourceClock:
    """Seconds since creation: one instance shared by a camera and a microphone puts their
    frames and audio on the same timeline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t0 = clock()

    def now(self) -> float:
        return self._clock() - self._t0


@dataclass(frozen=True)
class AudioChunk:
    """Contiguous mono 16 kHz float32 samples; ``samples[0]`` was captured at time ``t``."""

    t: float
    samples: np.ndarray
    sample_rate: int = TARGET_SR

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    @property
    def end(self) -> float:
        return self.t + self.duration


@dataclass
class Batch:
    """What arrived since the previous poll. ``ended``: a finite source has nothing more."""

    frames: list[Frame] = field(default_factory=list)
    audio: AudioChunk | None = None
    ended: bool = False

    @property
    def empty(self) -> bool:
        return not self.frames and (self.audio is None or self.audio.samples.size == 0)


@runtime_checkable
class AVSource(Protocol):
    """A camera, a microphone, both, or a replayed file, as the loop sees it.

    ``poll`` waits at most ``timeout`` seconds for something new and never raises for a
    device fault: faults show in ``status()`` (keyed by device) while the source reconnects.
    """

    name: str

    def start(self) -> None: ...

    def poll(self, timeout: float = 0.05) -> Batch: ...

    def status(self) -> dict[str, Status]: ...

    def close(self) -> None: ...


class SourceBase:
    """Context-manager plumbing shared by the concrete sources."""

    name: str = "source"

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> SourceBase:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def describe_error(exc: BaseException) -> str:
    """Exception as one line for ``Status.last_error``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
