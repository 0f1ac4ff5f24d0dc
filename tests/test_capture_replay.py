"""File replay on real fixtures: GRID talking-face clips, an LFW photo + speechocean762 audio."""

from __future__ import annotations

import time

import numpy as np
import pytest
from capture_fakes import drain

from edge_runtime.capture import AVSource, ReplaySource
from edge_runtime.errors import MediaError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.face import load_image
from edge_runtime.frontend.video import decode_clip

GRID = "grid/bbaf2n.mpg"


# ----------------------------------------------------------------------------------- replay
def test_replay_clip_delivers_every_frame_and_sample(fixtures):
    clip = decode_clip(fixtures / GRID)
    source = ReplaySource(clip, realtime=False)
    assert isinstance(source, AVSource)
    with source:
        frames, chunks = drain(source)
    assert [f.t for f in frames] == [f.t for f in clip.frames]
    audio = np.concatenate([c.samples for c in chunks])
    np.testing.assert_array_equal(audio, clip.audio)
    for c in chunks:  # each chunk's timestamp is where its samples sit in the clip
        k = round(c.t * TARGET_SR)
        np.testing.assert_array_equal(c.samples, clip.audio[k : k + c.samples.shape[0]])
    assert source.status()["replay"].frames == len(clip.frames)
    with pytest.raises(RuntimeError):
        ReplaySource(clip).poll()


def test_replay_second_half_keeps_clip_time(fixtures):
    clip = decode_clip(fixtures / GRID)
    _, second = clip.split(1.5)
    with ReplaySource(second, realtime=False) as source:
        frames, chunks = drain(source)
    assert frames[0].t >= 1.5 and chunks[0].t == pytest.approx(1.5)
    assert np.concatenate([c.samples for c in chunks]).shape == second.audio.shape


def test_replay_realtime_follows_the_wall_clock(fixtures):
    head, _ = decode_clip(fixtures / GRID).split(0.5)
    source = ReplaySource(head, realtime=True)
    t0 = time.monotonic()
    late = []
    with source:
        while True:
            batch = source.poll(0.05)
            now = time.monotonic() - t0
            late += [now - f.t for f in batch.frames]
            if batch.ended:
                break
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 0.8, elapsed  # behaviour check, generous for a loaded machine
    assert min(late) >= -0.005  # no frame is delivered before its time
    assert len(late) == len(head.frames)


def test_replay_image_and_recording(fixtures):
    image = fixtures / "lfw/Tony_Blair/Tony_Blair_0001.jpg"
    wav = fixtures / "speechocean762/SPEAKER0120/001200015.flac"
    with ReplaySource.from_image_audio(image, wav, fps=10, realtime=False) as source:
        frames, chunks = drain(source)
    audio = load_audio(wav)
    assert len(frames) == int(np.ceil(audio.shape[0] / TARGET_SR * 10))
    assert all(f.image is frames[0].image for f in frames)  # one shared read-only array
    np.testing.assert_array_equal(frames[0].image, load_image(image))
    assert [f.t for f in frames[:3]] == [0.0, 0.1, 0.2]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), audio)
    with pytest.raises(MediaError, match="missing.wav"):
        ReplaySource.from_image_audio(image, fixtures / "missing.wav")


def test_replay_mixed_face_and_voice(fixtures):
    face = decode_clip(fixtures / GRID)
    voice = decode_clip(fixtures / "grid/lrwp9a.mpg")
    with ReplaySource.mixed(face, voice, realtime=False) as source:
        frames, chunks = drain(source)
    n = min(face.audio.shape[0], voice.audio.shape[0])
    audio = np.concatenate([c.samples for c in chunks])
    np.testing.assert_array_equal(audio, voice.audio[: audio.shape[0]])
    assert abs(audio.shape[0] - n) <= 1
    assert frames[0].image is face.frames[0].image
