"""Microphone capture: PortAudio (sounddevice) at the device's native rate, 16 kHz on read.

The PortAudio callback runs on a real-time thread: it only copies into a preallocated ring
and bumps counters, never allocates big buffers, takes a lock or raises, so a slow loop
costs counted overflows, not a crashed audio thread. Reconnection is driven from ``poll``
(a lost stream is noticed there and reopened with back-off), so no extra thread is needed.
"""

from __future__ import annotations

import functools
import logging
import time
import types
from typing import Any

import numpy as np
import soxr

from edge_runtime.capture.base import (
    AudioChunk,
    BackoffPolicy,
    Batch,
    SourceBase,
    SourceClock,
    SourceState,
    Status,
    StatusTracker,
    describe_error,
)
from edge_runtime.errors import ConfigError, DependencyError
from edge_runtime.frontend.audio import TARGET_SR


def import_sounddevice() -> types.ModuleType:
    """The sounddevice module, or a one-line DependencyError naming what to install."""
    try:
        import sounddevice
    except OSError as e:  # the wheel is there but libportaudio is not
        raise DependencyError(
            f"microphone capture needs the PortAudio library: apt-get install libportaudio2 ({e})"
        ) from e
    except ImportError as e:
        raise DependencyError(
            "microphone capture needs the sounddevice package: pip install sounddevice"
        ) from e
    return sounddevice


log = logging.getLogger(__name__)
_MAX_DRIFT = 0.2  # s: sample clock vs source clock before timestamps are re-anchored


class RingBuffer:
    """Single-producer / single-consumer float32 ring without locks.

    Each side only advances its own monotonic counter (``_written`` by the producer, ``_read``
    by the consumer) after touching the data, so under the GIL neither can see a half-written
    block. A block that does not fit is dropped whole and counted: dropping the oldest data
    instead would mean the producer moving the consumer's counter, which breaks that rule.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"ring buffer capacity must be >= 1 sample, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._written = 0  # producer-owned
        self._read = 0  # consumer-owned
        self.overflows = 0  # producer-owned: blocks dropped because the ring was full
        self.dropped_samples = 0  # producer-owned

    def available(self) -> int:
        return self._written - self._read

    def free(self) -> int:
        return self.capacity - self.available()

    def write(self, x: np.ndarray) -> bool:
        """Producer side: append all of ``x`` or nothing (False = overflow, counted)."""
        n = x.shape[0]
        if n > self.free():
            self.overflows += 1
            self.dropped_samples += n
            return False
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self._written += n
        return True

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """Consumer side: a copy of up to ``max_samples`` oldest unread samples."""
        n = self.available()
        if max_samples is not None:
            n = min(n, max(0, max_samples))
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out = np.concatenate([self._buf[start : start + first], self._buf[: n - first]])
        self._read += n
        return out


class _Stream:
    """One open PortAudio stream with its own ring, so a late callback of a closed stream
    cannot write into its successor's buffer."""

    def __init__(
        self,
        sd: types.ModuleType,
        device: int | str | None,
        rate: int,
        channels: int,
        blocksize: int,
        ring_seconds: float,
    ) -> None:
        self.rate = rate
        self.channels = channels
        self.ring = RingBuffer(max(1, round(rate * ring_seconds)))
        self.flag_overflows = 0  # PortAudio's own input_overflow reports (callback-owned)
        self.callbacks = 0
        self.next_t: float | None = None  # consumer side: time of the next sample delivered
        self.dropped_seen = 0
        self.last_callback = time.monotonic()
        self.resampler = (
            None
            if rate == TARGET_SR
            else soxr.ResampleStream(rate, TARGET_SR, 1, dtype="float32", quality="HQ")
        )
        self.stream = sd.InputStream(
            device=device,
            samplerate=rate,
            channels=channels,
            dtype="float32",
            blocksize=blocksize,
            callback=functools.partial(_callback, self),
        )

    def close(self) -> None:
        for method in ("stop", "close"):
            try:
                getattr(self.stream, method)()
            except Exception:  # noqa: S110 - the device is already gone; nothing to free
                pass


def _callback(owner: _Stream, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
    """PortAudio thread: copy into the ring, count overflows, never raise."""
    owner.callbacks += 1
    owner.last_callback = time.monotonic()
    if getattr(status, "input_overflow", False):
        owner.flag_overflows += 1
    block = indata[:, 0] if owner.channels == 1 else indata.mean(axis=1, dtype=np.float32)
    owner.ring.write(block)


class MicrophoneSource(SourceBase):
    """Mono 16 kHz audio from an input device; overflows and lost devices show in ``status``.

    Resampling uses a streaming soxr resampler (the same HQ filter as ``audio.resample``):
    resampling each poll's chunk on its own would put a filter edge transient at every
    chunk boundary. Timestamps follow the sample clock, anchored to ``clock`` (see ``_timestamp``).
    ``sd_module`` lets a test inject a fake sounddevice (no PortAudio device here).
    """

    def __init__(
        self,
        device: int | str | None = None,
        *,
        samplerate: int | None = None,
        channels: int = 1,
        blocksize: int = 0,
        ring_seconds: float = 10.0,
        stall_timeout: float = 1.0,
        backoff: BackoffPolicy | None = None,
        clock: SourceClock | None = None,
        sd_module: types.ModuleType | None = None,
    ) -> None:
        if channels < 1 or ring_seconds <= 0 or stall_timeout <= 0:
            raise ConfigError(
                f"microphone needs channels >= 1, ring_seconds > 0, stall_timeout > 0; got "
                f"{channels}, {ring_seconds}, {stall_timeout}"
            )
        self.device = device
        self.name = f"microphone {device if device is not None else 'default'}"
        self._samplerate = samplerate
        self._channels = channels
        self._blocksize = blocksize
        self._ring_seconds = ring_seconds
        self._stall_timeout = stall_timeout
        self._backoff = backoff or BackoffPolicy()
        self._clock = clock or SourceClock()
        self._sd = sd_module
        self._stream: _Stream | None = None
        self._failures = 0
        self._next_try = 0.0
        self._ever_connected = False
        self._lost_overflows = 0  # overflow counts of streams already closed
        self._last_end = float("-inf")  # end time of the last chunk delivered
        self._tracker = StatusTracker(self.name)

    @property
    def sample_rate(self) -> int | None:
        """Native rate of the open stream (None while disconnected)."""
        return self._stream.rate if self._stream is not None else None

    def start(self) -> None:
        """Open the stream; raises DependencyError without PortAudio, retries a missing device."""
        if self._sd is None:
            self._sd = import_sounddevice()
        if self._stream is None:
            self._try_open()

    def poll(self, timeout: float = 0.05) -> Batch:
        if self._sd is None:
            raise RuntimeError(f"{self.name}: poll() before start()")
        self._check_health()
        if self._stream is None:
            if self._tracker.snapshot().state == SourceState.RECONNECTING:
                if time.monotonic() >= self._next_try:
                    self._try_open()
            if self._stream is None:
                retrying = self._tracker.snapshot().state == SourceState.RECONNECTING
                until_retry = self._next_try - time.monotonic() if retrying else timeout
                time.sleep(max(0.0, min(timeout, until_retry)))
                return Batch()
        s = self._stream
        deadline = time.monotonic() + max(0.0, timeout)
        while s.ring.available() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        native = s.ring.read()
        samples = native if s.resampler is None else s.resampler.resample_chunk(native)
        samples = np.asarray(samples, dtype=np.float32)
        self._update_counters(s)
        if samples.size == 0:
            return Batch()
        self._tracker.incr("audio_seconds", samples.size / TARGET_SR)
        return Batch(audio=AudioChunk(t=self._timestamp(s, samples.size), samples=samples))

    def status(self) -> dict[str, Status]:
        return {"microphone": self._tracker.snapshot()}

    def close(self) -> None:
        if self._stream is not None:
            self._update_counters(self._stream)
            self._stream.close()
            self._stream = None
        self._tracker.update(state=SourceState.CLOSED)

    # ---------------------------------------------------------------------------- internals
    def _try_open(self) -> None:
        sd = self._sd
        assert sd is not None
        stream: _Stream | None = None
        try:
            rate = self._samplerate
            if rate is None:
                info = sd.query_devices(self.device, "input")
                rate = round(float(info["default_samplerate"]))
            stream = _Stream(
                sd, self.device, rate, self._channels, self._blocksize, self._ring_seconds
            )
            stream.stream.start()
        except Exception as e:  # PortAudioError, ValueError (no such device), OSError
            if stream is not None:
                stream.close()
            self._failures += 1
            error = f"{self.name}: cannot open input stream ({describe_error(e)})"
            if self._backoff.exhausted(self._failures):
                log.warning("%s: giving up after %d attempts: %s", self.name, self._failures,
                            error)
                self._tracker.update(state=SourceState.FAILED, last_error=error)
                return
            delay = self._backoff.delay(self._failures - 1)
            log.warning("%s: reconnect attempt %d failed (%s); next in %.1f s", self.name,
                        self._failures, error, delay)
            self._next_try = time.monotonic() + delay
            self._tracker.update(state=SourceState.RECONNECTING, last_error=error)
            return
        self._stream = stream
        if self._ever_connected:
            self._tracker.incr("reconnects")
        self._ever_connected, self._failures = True, 0
        self._tracker.update(state=SourceState.CONNECTED)

    def _check_health(self) -> None:
        """A stream PortAudio stopped, or whose callbacks stalled, is a lost device."""
        s = self._stream
        if s is None:
            return
        active = bool(getattr(s.stream, "active", True))
        stalled = time.monotonic() - s.last_callback > self._stall_timeout
        if active and not stalled:
            return
        self._update_counters(s)
        self._lost_overflows += s.flag_overflows + s.ring.overflows
        s.close()
        self._stream = None
        reason = "stream stopped" if not active else f"no audio for {self._stall_timeout:g} s"
        self._tracker.incr("disconnects")
        self._tracker.update(
            state=SourceState.RECONNECTING, last_error=f"{self.name}: {reason} (device lost?)"
        )
        self._next_try = time.monotonic()  # first reopen right away

    def _timestamp(self, s: _Stream, n: int) -> float:
        """Contiguous audio gets contiguous times (sample clock); after a gap (overflow drop,
        reconnect) or drift beyond ``_MAX_DRIFT`` the chunk is re-anchored so it ends now."""
        duration = n / TARGET_SR
        wall = self._clock.now() - duration
        contiguous = s.next_t is not None and s.ring.dropped_samples == s.dropped_seen
        if contiguous and abs(s.next_t - wall) <= _MAX_DRIFT:
            t = s.next_t
        else:
            t = max(wall, self._last_end)
        s.next_t, s.dropped_seen = t + duration, s.ring.dropped_samples
        self._last_end = t + duration
        return t

    def _update_counters(self, s: _Stream) -> None:
        self._tracker.update(
            audio_overflows=self._lost_overflows + s.flag_overflows + s.ring.overflows
        )
