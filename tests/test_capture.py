"""Camera capture: URI parsing, GStreamer detection, a real video file, and a lost device.

No camera exists on this machine: the reconnect tests run the real CameraSource with fake
capture objects (tests/capture_fakes.py) in place of the hardware; the file tests use GRID.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from capture_fakes import FAST, FakeCapture, FakeSounddevice, drain, fake_factory, wait_for

from edge_runtime.capture import (
    BackoffPolicy,
    LiveSource,
    MicrophoneSource,
    SourceState,
    csi_pipeline,
    open_camera,
    opencv_has_gstreamer,
    parse_camera_uri,
)
from edge_runtime.capture.camera import CameraSource
from edge_runtime.errors import ConfigError, DependencyError, MediaError
from edge_runtime.frontend.audio import TARGET_SR, load_audio, resample
from edge_runtime.frontend.video import decode_clip

GRID = "grid/bbaf2n.mpg"


# ------------------------------------------------------------------------------- URI parsing
def test_backoff_policy_doubles_then_caps():
    p = BackoffPolicy(initial=0.5, factor=2.0, cap=3.0, max_retries=4)
    assert [p.delay(i) for i in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert p.delay(10_000) == 3.0  # no overflow after days of retrying
    assert not p.exhausted(4) and p.exhausted(5)
    assert not BackoffPolicy().exhausted(10**6)
    with pytest.raises(ConfigError):
        BackoffPolicy(initial=0.0)


def test_csi_pipeline_string():
    assert csi_pipeline(1, 1920, 1080, 30) == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM), width=1920, height=1080, framerate=30/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
        "video/x-raw, format=BGR ! appsink drop=1 max-buffers=1"
    )
    assert "nvvidconv flip-method=2 !" in csi_pipeline(0, flip_method=2)


@pytest.mark.parametrize(
    ("uri", "kind", "target", "api"),
    [
        (0, "v4l2", 0, cv2.CAP_V4L2),
        ("2", "v4l2", 2, cv2.CAP_V4L2),
        ("/dev/video1", "v4l2", "/dev/video1", cv2.CAP_V4L2),
        ("v4l2:///dev/video0", "v4l2", "/dev/video0", cv2.CAP_V4L2),
        ("v4l2://3", "v4l2", 3, cv2.CAP_V4L2),
        ("rtsp://10.0.0.5:8554/door", "rtsp", "rtsp://10.0.0.5:8554/door", cv2.CAP_FFMPEG),
        ("clips/door.mp4", "file", "clips/door.mp4", cv2.CAP_FFMPEG),
        ("file:///data/door.mp4", "file", "/data/door.mp4", cv2.CAP_FFMPEG),
    ],
)
def test_parse_camera_uri(uri, kind, target, api):
    spec = parse_camera_uri(uri)
    assert (spec.kind, spec.target, spec.api) == (kind, target, api)


def test_parse_csi_uri_builds_the_gstreamer_pipeline():
    spec = parse_camera_uri("csi://0", width=640, height=480, fps=60)
    assert spec.kind == "csi" and spec.api == cv2.CAP_GSTREAMER
    assert spec.target == csi_pipeline(0, 640, 480, 60)
    assert parse_camera_uri("csi://0").target == csi_pipeline(0, 1280, 720, 30)


@pytest.mark.parametrize("uri", ["", "csi://front", "gopher://cam", True, 1.5])
def test_bad_camera_uri(uri):
    with pytest.raises(ConfigError):
        parse_camera_uri(uri)


def test_gstreamer_detection_reads_build_information():
    yes = "  Video I/O:\n    FFMPEG:   YES\n    GStreamer:                   YES (1.20.3)\n"
    no = "  Video I/O:\n    FFMPEG:   YES\n    GStreamer:                   NO\n"
    assert opencv_has_gstreamer(yes) and not opencv_has_gstreamer(no)
    assert not opencv_has_gstreamer("no video section at all")


def test_csi_without_gstreamer_is_a_clear_dependency_error():
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer: the CSI URI would be accepted")
    with pytest.raises(DependencyError, match="csi://0.*GStreamer"):
        open_camera("csi://0")


def test_camera_file_that_does_not_exist(tmp_path):
    with pytest.raises(MediaError, match="nope.mp4"):
        open_camera(tmp_path / "nope.mp4")


# ------------------------------------------------------------------------ camera: video file
def test_camera_reads_a_video_file_as_rgb_frames(fixtures):
    clip = decode_clip(fixtures / GRID, max_frames=3)
    with open_camera(str(fixtures / GRID), realtime=False) as cam:
        frames, chunks = drain(cam)
        status = cam.status()["camera"]
    assert len(frames) == 75 and chunks == []  # all frames, none dropped, no audio track read
    assert status.state == SourceState.ENDED and status.frames == 75
    assert status.frames_dropped == 0
    assert [f.t for f in frames[:3]] == [0.0, 0.04, 0.08]
    assert frames[0].image.shape == (288, 360, 3) and frames[0].image.dtype == np.uint8
    # same picture as PyAV's RGB decode: channel order converted, not left as BGR
    diff = np.abs(frames[0].image.astype(int) - clip.frames[0].image.astype(int)).mean()
    swapped = np.abs(frames[0].image[..., ::-1].astype(int) - clip.frames[0].image).mean()
    assert diff < 3.0 and diff < swapped


def test_camera_on_a_corrupt_file_fails_without_raising(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    with open_camera(bad, realtime=False) as cam:
        frames, _ = drain(cam)
        status = cam.status()["camera"]
    assert frames == [] and status.last_error is not None and "broken.mp4" in status.last_error


# -------------------------------------------------------- camera: lost device (fake hardware)
@pytest.mark.parametrize("raises", [False, True])
def test_camera_reconnects_after_the_device_disappears(raises):
    first = FakeCapture(10, 3, raises=raises)
    second = FakeCapture(200, None)
    factory, calls = fake_factory(
        [first, FakeCapture(0, 0, opened=False), OSError("device busy"), second]
    )
    cam = open_camera("/dev/video0", backoff=FAST, capture_factory=factory)
    with cam:
        got = []
        deadline = time.monotonic() + 3.0
        while not any(f.image[0, 0, 2] == 200 for f in got) and time.monotonic() < deadline:
            got += cam.poll(0.01).frames
        status = cam.status()["camera"]
    assert [f.image[0, 0, 2] for f in got[:3]] == [10, 10, 10]  # BGR blue -> RGB index 2
    assert len(calls) == 4 and first.released
    assert status.state == SourceState.CONNECTED
    assert (status.disconnects, status.reconnects) == (1, 1)
    assert "cannot open camera" in status.last_error and "device busy" in status.last_error
    ts = [f.t for f in got]
    assert ts == sorted(ts)  # one clock across the reconnect


def test_camera_gives_up_after_max_retries_without_raising():
    factory, calls = fake_factory([])
    policy = BackoffPolicy(initial=0.01, cap=0.01, max_retries=2)
    with open_camera(0, backoff=policy, capture_factory=factory) as cam:
        wait_for(lambda: cam.status()["camera"].state == SourceState.FAILED)
        assert cam.poll(0.01).frames == []
    assert len(calls) == 3  # the first attempt + max_retries
    assert "0: cannot open camera" in cam.status()["camera"].last_error


def test_camera_keeps_only_the_newest_frames():
    levels = iter(range(1, 11))

    class Counting(FakeCapture):
        def read(self):
            ok, img = super().read()
            if ok:
                img[..., 0] = next(levels)
            return ok, img

    captures = [Counting(0, 10)]
    factory, _ = fake_factory(captures)
    policy = BackoffPolicy(initial=0.01, cap=0.01, max_retries=0)
    with open_camera(0, backoff=policy, capture_factory=factory, max_pending=2) as cam:
        wait_for(lambda: cam.status()["camera"].state == SourceState.FAILED)
        batch = cam.poll(0.0)
        status = cam.status()["camera"]
    assert [f.image[0, 0, 2] for f in batch.frames] == [9, 10]
    assert (status.frames, status.frames_dropped) == (10, 8)


# ------------------------------------------------------------------------------------- live
def test_live_source_merges_camera_and_microphone(fixtures):
    speech = load_audio(fixtures / "speechocean762/SPEAKER0036/000360013.flac")
    """Fake camera and fake sounddevice (no hardware here) behind the real LiveSource."""
    factory, _ = fake_factory([FakeCapture(50, None)])
    cam = CameraSource(parse_camera_uri(0), backoff=FAST, capture_factory=factory)
    sd = FakeSounddevice(rate=48000)
    with LiveSource(cam, MicrophoneSource(sd_module=sd)) as live:
        sd.streams[0].feed(resample(speech[:8000], TARGET_SR, 48000))
        frames, audio = [], []
        deadline = time.monotonic() + 3.0
        while not (frames and audio) and time.monotonic() < deadline:
            batch = live.poll(0.02)
            frames += batch.frames
            audio += [batch.audio] if batch.audio is not None else []
        status = live.status()
    assert set(status) == {"camera", "microphone"}
    assert status["camera"].state == status["microphone"].state == SourceState.CONNECTED
    assert frames[0].image[0, 0, 2] == 50 and audio[0].samples.dtype == np.float32
