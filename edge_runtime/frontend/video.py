"""Video front-end: timestamped RGB frames plus the clip's voice track, decoded once with PyAV.

A talking-face clip carries both modalities of one person; the demo enrols from the first half
and probes with the second, so frames and audio share one timeline (seconds from the start of
the container) and ``Clip.split`` cuts both at the same instant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edge_runtime.errors import MediaError
from edge_runtime.frontend.audio import (
    TARGET_SR,
    av_frame_to_float,
    check_media_file,
    resample,
    to_mono,
)
from edge_runtime.frontend.limits import check_dimensions


@dataclass
class Frame:
    """One decoded picture: ``t`` seconds on the clip timeline, ``image`` RGB uint8 (H, W, 3)."""

    t: float
    image: np.ndarray


@dataclass
class Clip:
    """Frames and mono audio of one file; ``audio[0]`` plays at time ``start``."""

    path: Path
    frames: list[Frame]
    fps: float
    audio: np.ndarray | None
    sample_rate: int
    duration: float
    start: float = 0.0

    def split(self, t: float) -> tuple[Clip, Clip]:
        """(before t, from t on): frames keep their timestamps; audio is cut at the same instant."""
        end = self.start + self.duration
        if not self.start < t < end:
            raise ValueError(
                f"{self.path}: split time {t} s is outside the clip ({self.start}..{end} s)"
            )
        before = [f for f in self.frames if f.t < t]
        after = [f for f in self.frames if f.t >= t]
        a1 = a2 = None
        if self.audio is not None:
            k = min(max(round((t - self.start) * self.sample_rate), 0), self.audio.shape[0])
            a1, a2 = self.audio[:k], self.audio[k:]
        first = dataclasses.replace(self, frames=before, audio=a1, duration=t - self.start)
        second = dataclasses.replace(self, frames=after, audio=a2, duration=end - t, start=t)
        return first, second


def _open(p: Path) -> av.container.InputContainer:
    check_media_file(p)
    try:
        container = av.open(str(p))
    except av.FFmpegError as e:
        raise MediaError(f"{p}: not a decodable media file ({e})") from e
    if not container.streams.video:
        container.close()
        raise MediaError(f"{p}: no video stream")
    ctx = container.streams.video[0].codec_context
    try:
        if ctx is None:
            raise MediaError(f"{p}: video stream in an unknown codec (no decoder)")
        check_dimensions(int(ctx.width or 0), int(ctx.height or 0), source=str(p),
                         what="video frame")
    except MediaError:
        container.close()
        raise
    return container


def _origin(container: av.container.InputContainer) -> float:
    """Container start in seconds: MPEG streams often start at a non-zero clock."""
    start = container.start_time
    return float(start) / av.time_base if start is not None else 0.0


def _to_frame(frame: av.VideoFrame, origin: float, index: int, fps: float) -> Frame:
    t = frame.time - origin if frame.time is not None else index / fps
    return Frame(t=float(t), image=frame.to_ndarray(format="rgb24"))


def _fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def decode_clip(
    path: str | Path,
    *,
    sr: int = TARGET_SR,
    require_audio: bool = True,
    max_frames: int | None = None,
) -> Clip:
    """Decode frames and audio in one pass; a clip that cannot serve face+voice is refused.

    ``max_frames`` caps only the decoded pictures (memory); the audio track is always decoded
    in full. Rule for damaged files: a file FFmpeg cannot open or decode, with no video stream
    or with no decodable frame, raises MediaError. A stream format with no declared length
    (MPEG-PS such as GRID .mpg) cut at a packet boundary decodes as a shorter clip: it cannot
    be told apart from a shorter recording.
    """
    p = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    container = _open(p)
    frames: list[Frame] = []
    chunks: list[np.ndarray] = []
    sr_in = 0
    audio_t0: float | None = None
    try:
        with container:
            vstream = container.streams.video[0]
            astream = container.streams.audio[0] if container.streams.audio else None
            if astream is None and require_audio:
                raise MediaError(f"{p}: video has no audio track (voice needed)")
            fps = _fps(vstream)
            origin = _origin(container)
            streams = [vstream] + ([astream] if astream is not None else [])
            for packet in container.demux(streams):
                is_video = packet.stream.index == vstream.index
                if is_video and max_frames is not None and len(frames) >= max_frames:
                    continue
                for fr in packet.decode():
                    if is_video:
                        if max_frames is None or len(frames) < max_frames:
                            frames.append(_to_frame(fr, origin, len(frames), fps or 25.0))
                        continue
                    if sr_in and fr.sample_rate != sr_in:
                        raise MediaError(f"{p}: audio sample rate changes mid-stream")
                    sr_in = fr.sample_rate
                    if audio_t0 is None:
                        audio_t0 = (fr.time - origin) if fr.time is not None else 0.0
                    chunks.append(av_frame_to_float(fr))
    except av.FFmpegError as e:
        raise MediaError(f"{p}: corrupt or truncated media ({e})") from e
    if not frames:
        raise MediaError(f"{p}: no decodable video frames")
    if not fps and len(frames) > 1 and frames[-1].t > frames[0].t:
        fps = (len(frames) - 1) / (frames[-1].t - frames[0].t)
    audio = None
    if chunks:
        audio = resample(to_mono(np.concatenate(chunks, axis=0)), sr_in, sr)
        audio = _align(audio, audio_t0 or 0.0, sr)
    elif require_audio:
        raise MediaError(f"{p}: audio track holds no samples (voice needed)")
    video_end = frames[-1].t + (1.0 / fps if fps else 0.0)
    audio_end = audio.shape[0] / sr if audio is not None else 0.0
    return Clip(p, frames, fps, audio, sr, max(video_end, audio_end))


def _align(audio: np.ndarray, t0: float, sr: int) -> np.ndarray:
    """Put audio sample 0 at t=0: pad if the track starts late, drop what precedes the origin."""
    k = round(t0 * sr)
    if k > 0:
        return np.concatenate([np.zeros(k, dtype=np.float32), audio])
    return audio[-k:] if k < 0 else audio


def iter_frames(path: str | Path, *, every_n: int = 1) -> Iterator[Frame]:
    """Stream every ``every_n``-th frame without holding the clip in memory.

    The file is opened (and refused with MediaError) at call time, not at the first ``next``.
    """
    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, got {every_n}")
    p = Path(path)
    container = _open(p)
    return _frames(p, container, every_n)


def _frames(p: Path, container: av.container.InputContainer, every_n: int) -> Iterator[Frame]:
    try:
        with container:
            stream = container.streams.video[0]
            fps, origin = _fps(stream) or 25.0, _origin(container)
            for i, fr in enumerate(container.decode(stream)):
                if i % every_n == 0:
                    yield _to_frame(fr, origin, i, fps)
    except av.FFmpegError as e:
        raise MediaError(f"{p}: corrupt or truncated media ({e})") from e
