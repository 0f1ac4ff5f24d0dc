"""File replay: a recorded attempt fed to the loop exactly as a live camera + microphone would.

This is how the whole loop runs without hardware (tests, the demo, ``--replay``): the clip's
own timeline drives delivery, either paced to the wall clock (what a live attempt feels like,
latencies included) or as fast as the consumer polls (``realtime=False``, for tests/batches).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime.capture.base import (
    AudioChunk,
    Batch,
    SourceBase,
    SourceState,
    Status,
    StatusTracker,
)
from edge_runtime.errors import ConfigError, MediaError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.face import load_image
from edge_runtime.frontend.video import Clip, Frame, decode_clip


class ReplaySource(SourceBase):
    """Replays a ``Clip`` (frames + 16 kHz audio on one timeline starting at ``clip.start``).

    Each poll returns the frames and audio between the previous position and the new one:
    the wall-clock media time when ``realtime``, else one ``step`` (default one frame period)
    further. Timestamps are the clip's, so a second half made by ``Clip.split`` keeps them.
    """

    def __init__(
        self,
        clip: Clip,
        *,
        realtime: bool = True,
        step: float | None = None,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not clip.frames:
            raise MediaError(f"{clip.path}: nothing to replay (no frames)")
        if clip.audio is not None and clip.sample_rate != TARGET_SR:
            raise MediaError(
                f"{clip.path}: replay needs {TARGET_SR} Hz audio, got {clip.sample_rate} Hz"
            )
        fps = clip.fps if clip.fps > 0 else 25.0
        self.step = 1.0 / fps if step is None else float(step)
        if not self.step > 0:
            raise ConfigError(f"replay step must be > 0 s, got {step}")
        self.clip = clip
        self.realtime = realtime
        self.name = name or f"replay {clip.path}"
        self._frames = sorted(clip.frames, key=lambda f: f.t)
        self._end = clip.start + clip.duration
        self._clock = clock
        self._t0: float | None = None
        self._pos = clip.start  # media time delivered so far
        self._next_frame = 0
        self._tracker = StatusTracker(self.name)

    # ----------------------------------------------------------------------- constructors
    @classmethod
    def open(
        cls, path: str | Path, *, realtime: bool = True, step: float | None = None
    ) -> ReplaySource:
        """A talking-face clip (video + voice track) decoded once with ``decode_clip``."""
        return cls(decode_clip(path), realtime=realtime, step=step)

    @classmethod
    def from_image_audio(
        cls,
        image: str | Path,
        audio: str | Path,
        *,
        fps: float = 25.0,
        realtime: bool = True,
        step: float | None = None,
    ) -> ReplaySource:
        """A still photo shown for as long as the recording lasts (``--face IMG --voice WAV``).

        The frames share one read-only image array: repeating it costs no memory.
        """
        if not fps > 0:
            raise ConfigError(f"replay fps must be > 0, got {fps}")
        picture = load_image(image)
        picture.setflags(write=False)
        wav = load_audio(audio, TARGET_SR)
        duration = wav.shape[0] / TARGET_SR
        n = max(1, math.ceil(duration * fps - 1e-9))
        frames = [Frame(t=i / fps, image=picture) for i in range(n)]
        clip = Clip(Path(image), frames, float(fps), wav, TARGET_SR, duration)
        return cls(clip, realtime=realtime, step=step, name=f"replay {image} + {audio}")

    @classmethod
    def mixed(
        cls, face: Clip, voice: Clip, *, realtime: bool = True, step: float | None = None
    ) -> ReplaySource:
        """Frames of one clip with the voice of another (an impostor or replay attack),
        the voice starting with the first frame; lasts as long as the shorter of the two."""
        if voice.audio is None:
            raise MediaError(f"{voice.path}: no audio to mix in")
        if voice.sample_rate != TARGET_SR:
            raise MediaError(f"{voice.path}: need {TARGET_SR} Hz audio, got {voice.sample_rate}")
        duration = min(face.duration, voice.audio.shape[0] / TARGET_SR)
        frames = [f for f in face.frames if f.t < face.start + duration]
        clip = dataclasses.replace(face, frames=frames, audio=voice.audio, duration=duration)
        name = f"replay face {face.path} + voice {voice.path}"
        return cls(clip, realtime=realtime, step=step, name=name)

    # ------------------------------------------------------------------ AVSource interface
    @property
    def duration(self) -> float:
        return self.clip.duration

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = self._clock()
            self._tracker.update(state=SourceState.CONNECTED)

    def poll(self, timeout: float = 0.05) -> Batch:
        if self._t0 is None:
            raise RuntimeError(f"{self.name}: poll() before start()")
        if self._pos >= self._end:
            return Batch(ended=True)
        if self.realtime:
            target = self._media_now()
            if self._next_frame < len(self._frames):
                wait = min(timeout, self._frames[self._next_frame].t - target)
            else:
                wait = min(timeout, self._end - target)
            if wait > 0:
                time.sleep(wait)
                target = self._media_now()
        else:
            target = self._pos + self.step
        target = min(target, self._end)
        batch = self._take(target)
        if self._pos >= self._end:
            batch.ended = True
            self._tracker.update(state=SourceState.ENDED)
        return batch

    def status(self) -> dict[str, Status]:
        return {"replay": self._tracker.snapshot()}

    def close(self) -> None:
        self._tracker.update(state=SourceState.CLOSED)

    # ---------------------------------------------------------------------------- internals
    def _media_now(self) -> float:
        assert self._t0 is not None
        return self.clip.start + (self._clock() - self._t0)

    def _sample(self, t: float) -> int:
        audio = self.clip.audio
        n = 0 if audio is None else audio.shape[0]
        return min(max(round((t - self.clip.start) * TARGET_SR), 0), n)

    def _take(self, target: float) -> Batch:
        frames: list[Frame] = []
        last = self._end <= target
        while self._next_frame < len(self._frames) and (
            self._frames[self._next_frame].t < target or last
        ):
            frames.append(self._frames[self._next_frame])
            self._next_frame += 1
        chunk = None
        if self.clip.audio is not None:
            k0, k1 = self._sample(self._pos), self._sample(target)
            if last:
                k1 = self.clip.audio.shape[0]
            if k1 > k0:
                samples = self.clip.audio[k0:k1]
                chunk = AudioChunk(t=self.clip.start + k0 / TARGET_SR, samples=samples)
                self._tracker.incr("audio_seconds", samples.shape[0] / TARGET_SR)
        if frames:
            self._tracker.incr("frames", len(frames))
        self._pos = target
        return Batch(frames=frames, audio=chunk)
