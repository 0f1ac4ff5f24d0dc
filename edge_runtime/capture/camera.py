"""Camera capture from jetson-inference style URIs, with reconnect on a lost device.

A reader thread keeps only the newest few frames: face detection is slower than a 30 fps
camera, and deciding on a frame that is seconds old would let a person who already left
be granted. Reads and reconnects happen in that thread, so the loop never blocks on a
dead camera; faults appear in ``status()``.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from edge_runtime.capture.base import (
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
from edge_runtime.frontend.audio import check_media_file
from edge_runtime.frontend.video import Frame

CameraKind = Literal["v4l2", "csi", "rtsp", "file"]
_STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


@dataclass(frozen=True)
class CameraSpec:
    """What ``cv2.VideoCapture`` is asked to open for a URI: ``target`` through backend ``api``."""

    uri: str
    kind: CameraKind
    target: int | str
    api: int
    width: int | None = None
    height: int | None = None
    fps: int | None = None


class CaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the source uses (a test fake implements it too)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


def csi_pipeline(
    sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip_method: int = 0
) -> str:
    """GStreamer pipeline for a Jetson CSI sensor, ending in BGR frames for OpenCV.

    ``max-buffers=1`` is what makes ``drop=1`` act: appsink's queue is unbounded by default,
    so without it a slow reader would get ever older frames.
    """
    flip = f" flip-method={flip_method}" if flip_method else ""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1 ! "
        f"nvvidconv{flip} ! video/x-raw, format=BGRx ! videoconvert ! "
        f"video/x-raw, format=BGR ! appsink drop=1 max-buffers=1"
    )


def opencv_has_gstreamer(build_info: str | None = None) -> bool:
    """True when OpenCV was built with GStreamer (JetPack's is; the PyPI wheels are not)."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    m = re.search(r"^\s*GStreamer:\s*(\S+)", info, flags=re.MULTILINE)
    return bool(m) and m.group(1).upper() == "YES"


def parse_camera_uri(
    uri: str | int | os.PathLike[str],
    *,
    width: int | None = None,
    height: int | None = None,
    fps: int | None = None,
    flip_method: int = 0,
) -> CameraSpec:
    """Map ``0`` / ``/dev/video0`` / ``v4l2:///dev/video0`` / ``csi://0`` / ``rtsp://…`` /
    ``file.mp4`` (or ``file://…``) to what OpenCV must open. Pure: opens nothing."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if isinstance(uri, bool) or not isinstance(uri, (int, str)):
        raise ConfigError(f"camera URI must be a string or a device index, got {uri!r}")
    text = str(uri).strip()
    if not text:
        raise ConfigError("camera URI is empty")
    size = {"width": width, "height": height, "fps": fps}
    if text.isdigit():
        return CameraSpec(text, "v4l2", int(text), cv2.CAP_V4L2, **size)
    if text.startswith("v4l2://"):
        text = text[len("v4l2://") :]
        if text.isdigit():
            return CameraSpec(str(uri), "v4l2", int(text), cv2.CAP_V4L2, **size)
    if text.startswith("/dev/video"):
        return CameraSpec(str(uri), "v4l2", text, cv2.CAP_V4L2, **size)
    if text.startswith("csi://"):
        sensor = text[len("csi://") :]
        if not sensor.isdigit():
            raise ConfigError(f"camera URI {uri!r}: expected csi://N with a sensor number")
        w, h, f = width or 1280, height or 720, fps or 30
        pipeline = csi_pipeline(int(sensor), w, h, f, flip_method)
        return CameraSpec(str(uri), "csi", pipeline, cv2.CAP_GSTREAMER, w, h, f)
    if text.lower().startswith(_STREAM_SCHEMES):
        return CameraSpec(str(uri), "rtsp", text, cv2.CAP_FFMPEG, **size)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise ConfigError(
            f"camera URI {uri!r}: unknown scheme (use an index, /dev/videoN, csi://N, "
            f"rtsp://..., or a video file)"
        )
    return CameraSpec(str(uri), "file", text, cv2.CAP_FFMPEG, **size)


log = logging.getLogger(__name__)


def check_camera_device(spec: CameraSpec) -> None:
    """A V4L2 camera whose device node does not exist is a start-up error (named), not an
    endless, silent reconnect loop. Other kinds (CSI, RTSP) can only be tried."""
    if spec.kind != "v4l2" or not os.path.isdir("/dev"):
        return
    node = f"/dev/video{spec.target}" if isinstance(spec.target, int) else str(spec.target)
    if not os.path.exists(node):
        raise ConfigError(f"camera {spec.uri}: no such device ({node} does not exist)")


def _open_cv_capture(spec: CameraSpec) -> CaptureLike:
    cap = cv2.VideoCapture(spec.target, spec.api)
    if cap.isOpened() and spec.kind == "v4l2":
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, spec.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, spec.height),
            (cv2.CAP_PROP_FPS, spec.fps),
        ):
            if value:
                cap.set(prop, value)
    return cap


def open_camera(
    uri: str | int | os.PathLike[str],
    *,
    width: int | None = None,
    height: int | None = None,
    fps: int | None = None,
    flip_method: int = 0,
    realtime: bool = True,
    backoff: BackoffPolicy | None = None,
    clock: SourceClock | None = None,
    max_pending: int = 4,
    capture_factory: Callable[[CameraSpec], CaptureLike] | None = None,
) -> CameraSource:
    """Camera source for ``uri`` (not started). Refuses up front what no retry can fix:
    a CSI URI on an OpenCV without GStreamer, a video file that does not exist."""
    spec = parse_camera_uri(uri, width=width, height=height, fps=fps, flip_method=flip_method)
    if spec.kind == "csi" and capture_factory is None and not opencv_has_gstreamer():
        raise DependencyError(
            f"camera {spec.uri}: CSI cameras need OpenCV built with GStreamer (JetPack's "
            f"python3-opencv); this OpenCV {cv2.__version__} has none: install the system "
            f"OpenCV instead of opencv-python-headless"
        )
    if spec.kind == "file":
        check_media_file(Path(str(spec.target)))
    if capture_factory is None:
        check_camera_device(spec)
    return CameraSource(
        spec,
        realtime=realtime,
        backoff=backoff,
        clock=clock,
        max_pending=max_pending,
        capture_factory=capture_factory or _open_cv_capture,
    )


class CameraSource(SourceBase):
    """Frames from one camera as RGB ``Frame``s; reconnects with back-off when it vanishes.

    Live cameras timestamp frames on ``clock`` at arrival; a video file is timed by frame
    index / file fps and, with ``realtime``, paced to the wall clock; its end is ``ENDED``.
    """

    def __init__(
        self,
        spec: CameraSpec,
        *,
        realtime: bool = True,
        backoff: BackoffPolicy | None = None,
        clock: SourceClock | None = None,
        max_pending: int = 4,
        capture_factory: Callable[[CameraSpec], CaptureLike] = _open_cv_capture,
    ) -> None:
        if max_pending < 1:
            raise ConfigError(f"max_pending must be >= 1, got {max_pending}")
        self.spec = spec
        self.name = f"camera {spec.uri}"
        self._realtime = realtime
        self._backoff = backoff or BackoffPolicy()
        self._clock = clock or SourceClock()
        self._factory = capture_factory
        self._pending: collections.deque[Frame] = collections.deque()
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._tracker = StatusTracker(self.name)

    # ------------------------------------------------------------------ AVSource interface
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def poll(self, timeout: float = 0.05) -> Batch:
        with self._cond:
            if not self._pending and not self._ended and timeout > 0:
                self._cond.wait(timeout)
            frames = list(self._pending)
            self._pending.clear()
            ended = self._ended  # set after the last frame was queued: all of them are taken
            self._cond.notify_all()  # a paced-out file reader may wait for room
        return Batch(frames=frames, ended=ended)

    def status(self) -> dict[str, Status]:
        return {"camera": self._tracker.snapshot()}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        self._tracker.update(state=SourceState.CLOSED)
        with self._cond:
            self._cond.notify_all()

    # ----------------------------------------------------------------------- reader thread
    def _run(self) -> None:
        cap: CaptureLike | None = None
        failures = 0  # consecutive failed opens
        ever_connected = False
        index = 0  # frames read from the current file
        file_fps = 0.0
        t_file0 = 0.0
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap, error = self._try_open()
                    if cap is None and self.spec.kind == "file":
                        self._finish_file(0, error)  # a file that cannot open will not heal
                        return
                    if cap is None:
                        failures += 1
                        if self._backoff.exhausted(failures):
                            log.warning("%s: giving up after %d attempts: %s", self.name,
                                        failures, error)
                            self._tracker.update(state=SourceState.FAILED, last_error=error)
                            with self._cond:  # a camera that is gone ends the source
                                self._ended = True
                                self._cond.notify_all()
                            return
                        delay = self._backoff.delay(failures - 1)
                        log.warning("%s: reconnect attempt %d failed (%s); next in %.1f s",
                                    self.name, failures, error, delay)
                        self._tracker.update(state=SourceState.RECONNECTING, last_error=error)
                        self._stop.wait(delay)
                        continue
                    if ever_connected:
                        self._tracker.incr("reconnects")
                    ever_connected, failures = True, 0
                    self._tracker.update(state=SourceState.CONNECTED)
                    file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
                    t_file0 = self._clock.now()
                ok, image, error = self._read(cap)
                if not ok:
                    cap.release()
                    cap = None
                    if self.spec.kind == "file":
                        self._finish_file(index, error)
                        return
                    self._tracker.incr("disconnects")
                    self._tracker.update(
                        state=SourceState.RECONNECTING,
                        last_error=error or f"{self.spec.uri}: camera stopped delivering frames",
                    )
                    continue  # first reopen right away, back-off only after it fails
                if self.spec.kind == "file":
                    t = index / file_fps
                    if self._realtime:
                        self._stop.wait(max(0.0, t_file0 + t - self._clock.now()))
                else:
                    t = self._clock.now()
                index += 1
                self._push(Frame(t=t, image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
        finally:
            if cap is not None:
                cap.release()

    def _try_open(self) -> tuple[CaptureLike | None, str | None]:
        try:
            cap = self._factory(self.spec)
        except Exception as e:  # any backend failure is a retryable device fault
            return None, f"{self.spec.uri}: cannot open camera ({describe_error(e)})"
        if not cap.isOpened():
            cap.release()
            return None, f"{self.spec.uri}: cannot open camera"
        return cap, None

    def _read(self, cap: CaptureLike) -> tuple[bool, np.ndarray | None, str | None]:
        try:
            ok, image = cap.read()
        except Exception as e:  # cv2.error from a yanked device must not kill the thread
            return False, None, f"{self.spec.uri}: read failed ({describe_error(e)})"
        if not ok or image is None:
            return False, None, None
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return False, None, f"{self.spec.uri}: unexpected frame {image.shape} {image.dtype}"
        return True, image, None

    def _finish_file(self, frames_read: int, error: str | None) -> None:
        if frames_read == 0 and error is None:
            error = f"{self.spec.uri}: no decodable video frames"
        self._tracker.update(
            state=SourceState.FAILED if frames_read == 0 else SourceState.ENDED, last_error=error
        )
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _push(self, frame: Frame) -> None:
        with self._cond:
            if self.spec.kind == "file" and not self._realtime:
                # as fast as possible, but lossless: wait for the consumer instead of dropping
                while len(self._pending) >= self._max_pending and not self._stop.is_set():
                    self._cond.wait(0.1)
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self._tracker.incr("frames_dropped")
            self._pending.append(frame)
            self._cond.notify_all()
        self._tracker.incr("frames")
