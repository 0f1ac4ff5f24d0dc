"""Video front-end on real GRID talking-face clips, plus damaged and audio-less files."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf

from edge_runtime.errors import MediaError
from edge_runtime.frontend.audio import load_audio
from edge_runtime.frontend.video import Clip, decode_clip, iter_frames

GRID = "grid/bbaf2n.mpg"


@pytest.fixture(scope="module")
def clip(fixtures) -> Clip:
    return decode_clip(fixtures / GRID)


def _write_video(path, n: int = 10, fps: int = 25, codec: str = "mpeg4") -> list[int]:
    """A real encoded video with frames only (no audio); returns each frame's grey level."""
    levels = [10 + (20 * i) % 240 for i in range(n)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for level in levels:
            img = np.full((48, 64, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return levels


def test_grid_clip_frames(clip, fixtures):
    assert clip.path == fixtures / GRID
    assert abs(clip.fps - 25.0) < 0.01
    assert 72 <= len(clip.frames) <= 78
    ts = np.array([f.t for f in clip.frames])
    assert ts[0] < 0.05 and np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(np.diff(ts), 1 / 25, atol=1e-3)
    img = clip.frames[len(clip.frames) // 2].image
    assert img.shape == (288, 360, 3) and img.dtype == np.uint8
    assert img.std() > 10  # a real picture (a face on a background), not a blank frame
    assert abs(clip.duration - 3.0) < 0.05


def test_grid_clip_audio(clip, fixtures):
    assert clip.sample_rate == 16000
    assert clip.audio is not None and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(len(clip.audio) - 48000) < 800
    # One code path for audio: the clip's track is exactly what load_audio gives for the file.
    np.testing.assert_array_equal(clip.audio, load_audio(fixtures / GRID))


def test_split_halves(clip):
    t = clip.duration / 2
    first, second = clip.split(t)
    assert len(first.frames) + len(second.frames) == len(clip.frames)
    assert abs(len(first.frames) - len(second.frames)) <= 1
    assert all(f.t < t for f in first.frames) and all(f.t >= t for f in second.frames)
    assert second.frames[0].t == clip.frames[len(first.frames)].t  # timestamps kept
    assert len(first.audio) == round(t * 16000)
    np.testing.assert_array_equal(np.concatenate([first.audio, second.audio]), clip.audio)
    assert first.start == 0.0 and second.start == t
    assert first.duration == pytest.approx(t) and second.duration == pytest.approx(t)
    # Splitting the second half again cuts its audio relative to where it starts.
    third, _ = second.split(t + 0.5)
    assert len(third.audio) == 8000
    np.testing.assert_array_equal(third.audio, clip.audio[len(first.audio) :][:8000])
    for bad in (0.0, clip.duration, -1.0):
        with pytest.raises(ValueError):
            clip.split(bad)


def test_max_frames_caps_pictures_not_audio(clip, fixtures):
    short = decode_clip(fixtures / GRID, max_frames=10)
    assert len(short.frames) == 10
    assert [f.t for f in short.frames] == [f.t for f in clip.frames[:10]]
    np.testing.assert_array_equal(short.audio, clip.audio)


def test_iter_frames_streams_every_nth(clip, fixtures):
    got = list(iter_frames(fixtures / GRID, every_n=5))
    assert len(got) == len(clip.frames[::5])
    for a, b in zip(got, clip.frames[::5], strict=True):
        assert a.t == b.t
        np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(ValueError):
        iter_frames(fixtures / GRID, every_n=0)


def test_video_without_audio(tmp_path):
    path = tmp_path / "mute.mp4"
    levels = _write_video(path)
    with pytest.raises(MediaError, match=r"mute\.mp4: video has no audio track"):
        decode_clip(path)
    clip = decode_clip(path, require_audio=False)
    assert clip.audio is None and len(clip.frames) == len(levels)
    assert abs(clip.fps - 25.0) < 0.01
    means = [f.image.mean() for f in clip.frames]
    np.testing.assert_allclose(means, levels, atol=6)  # lossy codec, frames in order
    first, second = clip.split(0.2)
    assert first.audio is None and len(first.frames) == 5 and len(second.frames) == 5


def test_truncated_mp4_is_refused(tmp_path):
    whole = tmp_path / "whole.mp4"
    _write_video(whole, n=25)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) at the end is gone
    with pytest.raises(MediaError, match=r"cut\.mp4"):
        decode_clip(cut, require_audio=False)
    with pytest.raises(MediaError, match=r"cut\.mp4"):
        iter_frames(cut)


def test_truncated_grid_mpg_decodes_as_shorter_clip(fixtures, tmp_path):
    # MPEG-PS has no declared length: a file cut at half is a valid, shorter clip (documented).
    data = (fixtures / GRID).read_bytes()
    cut = tmp_path / "half.mpg"
    cut.write_bytes(data[: len(data) // 2])
    clip = decode_clip(cut)
    assert 25 <= len(clip.frames) <= 50
    assert 0.8 < clip.duration < 2.2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("noise.mpg", np.random.default_rng(2).bytes(8192), "not a decodable media file"),
        ("zero.mp4", b"", "empty file"),
    ],
)
def test_bad_video_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError, match=rf"{name.replace('.', '[.]')}: {message}"):
        decode_clip(path)


def test_missing_and_audio_only_files(tmp_path, fixtures):
    with pytest.raises(MediaError, match=r"gone\.mpg: no such file"):
        decode_clip(tmp_path / "gone.mpg")
    with pytest.raises(MediaError, match=r"gone\.mpg: no such file"):
        iter_frames(tmp_path / "gone.mpg")  # refused at call time, not at first next()
    speech = tmp_path / "voice.wav"
    x, sr = sf.read(str(fixtures / "fsdd/george/0_george_0.wav"))
    sf.write(str(speech), x, sr)
    with pytest.raises(MediaError, match=r"voice\.wav: no video stream"):
        decode_clip(speech)
