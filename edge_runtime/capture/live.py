"""Camera + microphone as one source for the loop, on one shared clock."""

from __future__ import annotations

import types

from edge_runtime.capture.base import (
    BackoffPolicy,
    Batch,
    SourceBase,
    SourceClock,
    Status,
    describe_error,
)
from edge_runtime.capture.camera import CameraSource, open_camera
from edge_runtime.capture.microphone import MicrophoneSource, import_sounddevice
from edge_runtime.errors import ConfigError


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
    """``edgepin run --camera URI --mic DEVICE``: both devices timestamped on one clock.

    Both devices are checked here, before anything runs: a missing camera node or an input
    device PortAudio does not know is a ConfigError naming it (later losses reconnect).
    """
    clock = SourceClock()
    sd = sd_module or import_sounddevice()
    check_input_device(sd, mic_device)
    camera = open_camera(
        camera_uri, width=width, height=height, fps=fps, backoff=backoff, clock=clock
    )
    mic = MicrophoneSource(mic_device, backoff=backoff, clock=clock, sd_module=sd)
    return LiveSource(camera, mic)


def check_input_device(sd: types.ModuleType, device: int | str | None) -> None:
    """Does PortAudio have this input device (None: the default one)?"""
    try:
        info = sd.query_devices(device, "input")
    except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError: no such device
        names = _input_names(sd)
        raise ConfigError(
            f"--mic {device if device is not None else 'default'}: no such input device "
            f"({describe_error(exc)}); inputs here: {names or 'none'}") from None
    if not info or int(info.get("max_input_channels", 1)) < 1:
        raise ConfigError(f"--mic {device}: device has no input channels")


def _input_names(sd: types.ModuleType) -> str:
    try:
        devices = sd.query_devices()
        return ", ".join(f"{i}: {d['name']}" for i, d in enumerate(devices)
                         if d.get("max_input_channels", 0) > 0)
    except Exception:  # noqa: BLE001
        return ""
