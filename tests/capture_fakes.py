"""Test stand-ins for capture hardware, shared by the capture tests.

No camera, microphone or PortAudio exists on this machine, so the reconnect and overflow
tests drive the real source code through these fakes; everything else uses real files.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import cv2
import numpy as np

from edge_runtime.capture import AVSource, BackoffPolicy

FAST = BackoffPolicy(initial=0.01, factor=2.0, cap=0.02)


def drain(source: AVSource, limit: float = 10.0, timeout: float = 0.05) -> tuple[list, list]:
    """Poll until the source ends (or ``limit`` seconds): all frames and audio chunks."""
    frames, chunks = [], []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        batch = source.poll(timeout)
        frames += batch.frames
        if batch.audio is not None:
            chunks.append(batch.audio)
        if batch.ended:
            return frames, chunks
    raise AssertionError(f"{source.name} did not end within {limit} s")


def wait_for(predicate, limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class FakeCapture:
    """Stands in for cv2.VideoCapture on a USB/RTSP camera (no camera on this machine):
    delivers ``n_frames`` BGR frames filled with ``level``, then fails like an unplugged one."""

    def __init__(self, level: int, n_frames: int | None, opened: bool = True, raises=False):
        self.level, self.left, self.opened, self.raises = level, n_frames, opened, raises
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self):
        if self.left is not None and self.left <= 0:
            if self.raises:
                raise cv2.error("VIDIOC_DQBUF: No such device")
            return False, None
        if self.left is not None:
            self.left -= 1
        time.sleep(0.002)
        img = np.zeros((4, 6, 3), np.uint8)
        img[..., 0] = self.level  # blue in BGR
        return True, img

    def get(self, prop) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def fake_factory(captures: list):
    calls = []

    def factory(spec):
        calls.append(spec)
        item = captures.pop(0) if captures else FakeCapture(0, None, opened=False)
        if isinstance(item, Exception):
            raise item
        return item

    return factory, calls


class FakeStream:
    """Stands in for sounddevice.InputStream (no PortAudio/microphone on this machine):
    the test calls ``feed`` where PortAudio would call the callback."""

    def __init__(self, **kw):
        self.kw, self.callback, self.active = kw, kw["callback"], False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def close(self):
        self.active = False

    def feed(self, block: np.ndarray, overflow: bool = False) -> None:
        data = block.reshape(len(block), -1).astype(np.float32)
        self.callback(data, len(block), None, SimpleNamespace(input_overflow=overflow))


class FakeSounddevice:
    """The two entry points MicrophoneSource uses; ``fail_opens`` open attempts raise."""

    class PortAudioError(Exception):
        pass

    def __init__(self, rate: int = 44100, fail_opens: int = 0, missing: bool = False):
        self.rate, self.fail_opens, self.missing = rate, fail_opens, missing
        self.streams: list[FakeStream] = []

    def query_devices(self, device, kind):
        if self.missing:
            raise ValueError(f"No input device matching {device!r}")
        return {"name": "fake mic", "default_samplerate": float(self.rate)}

    def InputStream(self, **kw):  # noqa: N802
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise self.PortAudioError("Error opening InputStream: Device unavailable")
        self.streams.append(FakeStream(**kw))
        return self.streams[-1]
