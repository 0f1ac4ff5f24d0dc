"""Capture sources for the access-control loop: camera, microphone, both, or a replayed file.

All of them implement ``AVSource``: ``start()``, then ``poll(timeout)`` returning a ``Batch``
of the RGB frames and the 16 kHz mono audio that arrived since the previous poll, with device
faults reported in ``status()`` instead of raised.
"""

from edge_runtime.capture.base import (
    AudioChunk,
    AVSource,
    BackoffPolicy,
    Batch,
    SourceClock,
    SourceState,
    Status,
)
from edge_runtime.capture.camera import (
    CameraSource,
    CameraSpec,
    csi_pipeline,
    open_camera,
    opencv_has_gstreamer,
    parse_camera_uri,
)
from edge_runtime.capture.live import LiveSource, open_live
from edge_runtime.capture.microphone import MicrophoneSource, RingBuffer, import_sounddevice
from edge_runtime.capture.replay import ReplaySource

__all__ = [
    "AVSource",
    "AudioChunk",
    "BackoffPolicy",
    "Batch",
    "CameraSource",
    "CameraSpec",
    "LiveSource",
    "MicrophoneSource",
    "ReplaySource",
    "RingBuffer",
    "SourceClock",
    "SourceState",
    "Status",
    "csi_pipeline",
    "import_sounddevice",
    "open_camera",
    "open_live",
    "opencv_has_gstreamer",
    "parse_camera_uri",
]
