"""Enrolment: samples -> quality-checked embeddings -> one template per modality, atomically.

Each sample (a photo, a recording, a clip, or a live capture) passes the same gates the loop
applies (face detection/alignment/quality, audio level/clipping, enough voiced speech) and is
reported with its reason when refused. The templates (normalised mean of the accepted
samples' embeddings, ``gallery.make_template``) are written in one transaction: a crash or
a refused modality leaves the previous enrolment of that person exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.access.collector import Collector, PipelineConfig
from edge_runtime.access.face_tier import check_gallery_tier
from edge_runtime.capture.base import AVSource
from edge_runtime.errors import ConfigError, EdgepinError, MediaError
from edge_runtime.frontend.audio import TARGET_SR, check_audio, load_audio
from edge_runtime.frontend.face import FaceDetector, load_image
from edge_runtime.frontend.face_quality import QualityGate
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.frontend.video import Clip, Frame, decode_clip
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import Gallery, make_template


class EnrollmentError(MediaError):
    """No usable sample for a requested modality: nothing was written."""


@dataclass(frozen=True)
class SampleReport:
    source: str
    modality: str
    ok: bool
    reason: str = ""


@dataclass
class Enrollment:
    """What was enrolled: samples per modality and every sample's verdict."""

    name: str
    n_samples: dict[str, int]
    samples: list[SampleReport] = field(default_factory=list)

    def summary(self) -> str:
        kept = ", ".join(f"{m} ({n} sample{'s' if n > 1 else ''})"
                         for m, n in sorted(self.n_samples.items()))
        refused = sum(not s.ok for s in self.samples)
        return f"enrolled {self.name}: {kept}" + (f"; {refused} sample(s) refused" if refused else "")


class Enroller:
    """Turns samples into templates with the bundle's models and the loop's own gates."""

    def __init__(self, bundle: ModelBundle, detector: FaceDetector, gate: SpeechGate, *,
                 face_policy: str = "largest", quality: QualityGate | None = None,
                 min_speech_s: float = 1.0, frames_per_clip: int = 5) -> None:
        if frames_per_clip < 1:
            raise ConfigError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
        self.bundle = bundle
        self.detector = detector
        self.gate = gate
        self.frames_per_clip = frames_per_clip
        self.config = PipelineConfig(face_policy=face_policy, quality=quality or QualityGate(),
                                     min_speech_s=min_speech_s, top_faces=frames_per_clip)

    # ---------------------------------------------------------------------------- samples
    def _collector(self, source: str) -> Collector:
        return Collector(self.detector, self.gate.stream(), self.config, source,
                         face_input=self.bundle.face_input)

    def faces_from_frames(self, frames: Sequence[Frame], source: str,
                          limit: int | None = None) -> tuple[list[np.ndarray], list[SampleReport]]:
        """Best ``limit`` quality-passing aligned faces among evenly spread frames."""
        limit = limit or self.frames_per_clip
        col = self._collector(source)
        step = max(1, len(frames) // (2 * limit))
        for frame in list(frames)[::step]:
            col.add_frame(frame)
        crops = [c.crop for c in col.faces[:limit]]
        if not crops:
            return [], [SampleReport(source, "face", False, col.face_problem())]
        return crops, [SampleReport(f"{source} at {c.t:.2f} s", "face", True)
                       for c in col.faces[:limit]]

    def face_from_image(self, path: str | Path) -> tuple[list[np.ndarray], list[SampleReport]]:
        try:
            image = load_image(path)
        except EdgepinError as exc:
            return [], [SampleReport(str(path), "face", False, str(exc))]
        return self.faces_from_frames([Frame(0.0, image)], str(path), limit=1)

    def speech_from_audio(self, wav: np.ndarray | None, source: str) -> tuple[np.ndarray, float]:
        """The voiced part of a recording that passed the audio and speech checks, and its
        voiced seconds; a MediaError/AudioError naming ``source`` otherwise."""
        if wav is None or wav.size == 0:
            raise MediaError(f"{source}: no audio")
        check_audio(wav, TARGET_SR, source=source, min_seconds=self.config.min_speech_s,
                    min_rms_dbfs=self.config.min_rms_dbfs, max_clipped=self.config.max_clipped)
        segments = self.gate.speech_segments(wav)
        voiced = sum(b - a for a, b in segments)
        if voiced < self.config.min_speech_s:
            raise MediaError(f"{source}: not enough speech ({voiced:.2f} s voiced < "
                             f"{self.config.min_speech_s:g} s)")
        return self.gate.extract_speech(wav, segments), voiced

    def voice_from_audio(self, wav: np.ndarray | None, source: str
                         ) -> tuple[list[np.ndarray], list[SampleReport]]:
        """One voice embedding from the voiced part of a recording, or the reason why not."""
        try:
            speech, voiced = self.speech_from_audio(wav, source)
            emb = self.bundle.embed_voice(speech)
        except EdgepinError as exc:
            return [], [SampleReport(source, "voice", False, str(exc))]
        return [emb], [SampleReport(source, "voice", True, f"{voiced:.1f} s of speech")]

    # ------------------------------------------------------------------------- enrolment
    def enroll_files(self, gallery: Gallery, name: str, *, faces: Sequence[str | Path] = (),
                     voices: Sequence[str | Path] = (), videos: Sequence[str | Path] = (),
                     replace: bool = True) -> Enrollment:
        """``edgepin enroll NAME --face IMG... --voice WAV... --video CLIP...``."""
        if not (faces or voices or videos):
            raise ConfigError("enrolment needs at least one --face, --voice or --video sample")
        crops: list[np.ndarray] = []
        voice: list[np.ndarray] = []
        reports: list[SampleReport] = []
        for path in faces:
            got, rep = self.face_from_image(path)
            crops += got
            reports += rep
        for path in voices:
            try:
                wav = load_audio(path, TARGET_SR)
            except EdgepinError as exc:
                reports.append(SampleReport(str(path), "voice", False, str(exc)))
                continue
            got, rep = self.voice_from_audio(wav, str(path))
            voice += got
            reports += rep
        for path in videos:
            try:
                clip = decode_clip(path)
            except EdgepinError as exc:
                reports += [SampleReport(str(path), m, False, str(exc)) for m in ("face", "voice")]
                continue
            got, rep = self.faces_from_frames(clip.frames, str(path))
            crops += got
            reports += rep
            got, rep = self.voice_from_audio(clip.audio, str(path))
            voice += got
            reports += rep
        wanted = {m for m, given in (("face", faces or videos), ("voice", voices or videos)) if given}
        return self._store(gallery, name, crops, voice, reports, wanted, replace)

    def enroll_clip(self, gallery: Gallery, name: str, clip: Clip, *,
                    replace: bool = True) -> Enrollment:
        """Both modalities from one talking-face clip (the demo enrols first halves)."""
        source = f"{clip.path} [{clip.start:.1f}-{clip.start + clip.duration:.1f} s]"
        crops, reports = self.faces_from_frames(clip.frames, source)
        voice, rep = self.voice_from_audio(clip.audio, source)
        return self._store(gallery, name, crops, voice, reports + rep, {"face", "voice"}, replace)

    def enroll_live(self, gallery: Gallery, name: str, source: AVSource, *,
                    prompt: Callable[[str], None] = print, n_faces: int = 5,
                    speech_s: float = 3.0, timeout_s: float = 30.0,
                    phrase: str = "my voice is my passport, verify me",
                    replace: bool = True) -> Enrollment:
        """Guided capture: look at the camera (``n_faces`` good frames), then say the phrase."""
        faces_col = self._collector(source.name)
        voice_col = self._collector(source.name)
        deadline = time.monotonic() + timeout_s
        phase = "face"
        prompt("Look at the camera.")
        last_t = -1.0
        source.start()
        try:
            while time.monotonic() < deadline:
                batch = source.poll(0.05)
                if phase == "face":
                    for frame in batch.frames:
                        if frame.t - last_t >= 0.2:
                            last_t = frame.t
                            faces_col.add_frame(frame)
                    if faces_col.good_faces >= min(n_faces, self.frames_per_clip):
                        phase = "voice"
                        prompt(f'Now say: "{phrase}"')
                elif batch.audio is not None:
                    voice_col.add_audio(batch.audio.samples, batch.audio.sample_rate)
                    if voice_col.speech_seconds() >= speech_s:
                        break
                if batch.ended:
                    break
        finally:
            source.close()
        crops = [c.crop for c in faces_col.faces]
        reports = [SampleReport(f"{source.name} at {c.t:.2f} s", "face", True)
                   for c in faces_col.faces]
        if not crops:
            reports.append(SampleReport(source.name, "face", False, faces_col.face_problem()))
        voice, rep = self.voice_from_audio(voice_col.audio(), source.name)
        return self._store(gallery, name, crops, voice, reports + rep, {"face", "voice"}, replace)

    def _store(self, gallery: Gallery, name: str, crops: list[np.ndarray],
               voice: list[np.ndarray], reports: list[SampleReport], wanted: set[str],
               replace: bool) -> Enrollment:
        samples = {"face": len(crops), "voice": len(voice)}
        empty = sorted(m for m in wanted if samples[m] == 0)
        if empty:
            why = "; ".join(f"{r.source}: {r.reason}" if not r.reason.startswith(r.source)
                            else r.reason for r in reports if not r.ok and r.modality in empty)
            raise EnrollmentError(f"{name!r} not enrolled: no usable {' or '.join(empty)} "
                                  f"sample ({why or 'none given'}); gallery left unchanged")
        check_gallery_tier(gallery, self.bundle)
        templates, counts, hashes = {}, {}, {}
        if crops:
            templates["face"] = make_template(self.bundle.embed_faces(crops))
        if voice:
            templates["voice"] = make_template(np.stack(voice))
        for m in templates:
            counts[m] = samples[m]
            hashes[m] = self.bundle.hashes[m]
        gallery.enroll(name, templates, counts, hashes, replace=replace)
        return Enrollment(name, counts, reports)


def enroll_people(enroller: Enroller, gallery: Gallery, people: Iterable[Mapping[str, Any]],
                  *, root: Path | None = None, photos: int = 2, utterances: int = 3
                  ) -> tuple[list[str], list[str]]:
    """Enrol a door of people given as ``{"name", "photos", "utterances"}`` (paths, relative to
    ``root`` when given) from their first ``photos`` photos and ``utterances`` recordings; the
    later ones stay for probes. A person who cannot be enrolled is skipped with the reason.
    Returns (enrolled names, one line per refusal). Shared by the demo's artificial door and
    the attack benchmark, so both enrol the same way."""
    enrolled, refused = [], []
    for p in people:
        def at(x: Any) -> Path:
            return Path(root) / x if root is not None else Path(x)
        try:
            enroller.enroll_files(gallery, str(p["name"]),
                                  faces=[at(x) for x in list(p["photos"])[:photos]],
                                  voices=[at(x) for x in list(p["utterances"])[:utterances]])
            enrolled.append(str(p["name"]))
        except EdgepinError as exc:
            refused.append(f"could not enrol {p['name']}: {exc}")
    return enrolled, refused

