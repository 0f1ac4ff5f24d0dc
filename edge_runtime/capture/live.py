"""Camera + microphone as one source for the loop, on one shared clock."""

from __future__ import annotations

import types

from edge_runtime.capture.base import BackoffPolicy, Batch, SourceBase, SourceClock, Status
from edge_runtime.capture.camera import CameraSource, open_camera
from edge_runtime.capture.microphone import MicrophoneSource


class LiveSource(SourceBase):
    """Polls both devices; one device failing never stops the other (the loop's missing-
    modality policy decides what an attempt without voice or face means)."""

    def __init__(self, camera: CameraSource, microphone: MicrophoneSource) -> None:
        self.camera = camera
        self.microphone = microphone
        self.name = f"{camera.name} + {microphone.name}"

    def start(self) -> None:
        self.microphone.start()  # first: a missing PortAudio fails before a camera thread runs
        self.camera.start()

    def poll(self, timeout: float = 0.05) -> Batch:
        audio = self.microphone.poll(0.0).audio
        video = self.camera.poll(0.0 if audio is not None else timeout)
        if audio is None:
            audio = self.microphone.poll(0.0).audio  # what arrived while waiting for a frame
        return Batch(frames=video.frames, audio=audio, ended=video.ended)

    def status(self) -> dict[str, Status]:
        return {**self.camera.status(), **self.microphone.status()}

    def close(self) -> None:
        try:
            self.camera.close()
        finally:
            self.microphone.close()


def open_live(
    camera_uri: str | int,
    mic_device: int | str | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: int | None = None,
    backoff: BackoffPolicy | None = None,
    sd_module: types.ModuleType | None = None,
) -> LiveSource:
    """``edgepin run --camera URI --mic DEVICE``: both devices timestamped on one clock."""
    clock = SourceClock()
    camera = open_camera(
        camera_uri, width=width, height=height, fps=fps, backoff=backoff, clock=clock
    )
    mic = MicrophoneSource(mic_device, backoff=backoff, clock=clock, sd_module=sd_module)
    return LiveSource(camera, mic)
