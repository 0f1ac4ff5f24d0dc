"""Enrolment: samples -> quality-checked embeddings -> one template per modality, atomically.

Each sample (a photo, a recording, a clip, or a live capture) passes the same gates the loop
applies (face detection/alignment/quality, audio level/clipping, enough voiced speech) and is
reported with its reason when refused. The templates (normalised mean of the accepted
samples' embeddings, ``gallery.make_template``) are written in one transaction: a crash or
a refused modality leaves the previous enrolment of that person exactly as it was.

How much speech a voice template needs (``ENROL_VOICE_S``): a template averaged over more
speech scores the person's own voice higher and a stranger's no higher, so the face+liveness
veto ("the voice must not contradict") rejects fewer genuine people AND passes fewer strangers.
Measured with the voice student on the 30 held-out speechocean762 speakers, templates from 3 / 5 / 7 utterances
(8.9 / 14.6 / 19.8 s voiced on average) against the same probes, at the live door's looks
(3-5 s of speech, veto cross-fitted): own voice vetoed 5.1 / 3.4 / 3.1 %, a stranger's voice
not vetoed 2.4 / 1.6 / 1.1 % (``benchmarks/enrol_speech.md``; the large voice tier gains on
strangers only: ``enrol_speech_large.md``). Enrolment therefore collects
``ENROL_VOICE_S`` of voiced speech where it can choose (live capture, a door's recordings) and
says so where it cannot (``Enrollment.warnings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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

# voiced seconds a voice template is made from (see the module docstring), and the fewest
# recordings it averages when they are long
ENROL_VOICE_S = 15.0
MIN_VOICE_SAMPLES = 3


def voice_enough(taken_s: Sequence[float], until_s: float = ENROL_VOICE_S,
                 minimum: int = MIN_VOICE_SAMPLES) -> bool:
    """Do these recordings (voiced seconds each; 0 for a refused one) make a voice template:
    ``until_s`` of speech from at least ``minimum`` usable recordings? The one rule of
    enrolment (``Enroller.enroll_files(voice_until_s=...)``) and of the veto's calibration
    (``enrol_voice_count``), so both make templates from the same amount of speech."""
    return sum(t > 0 for t in taken_s) >= minimum and float(sum(taken_s)) >= until_s


def enrol_voice_count(voiced_s: Sequence[float], until_s: float = ENROL_VOICE_S,
                      minimum: int = MIN_VOICE_SAMPLES) -> int:
    """How many of these recordings (in order) an enrolment takes: the first ones that are
    ``voice_enough``; all of them when they hold less."""
    for k in range(1, len(voiced_s) + 1):
        if voice_enough(voiced_s[:k], until_s, minimum):
            return k
    return len(voiced_s)


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
    voice_speech_s: float = 0.0  # voiced seconds behind the voice template
    voice_used: int = 0  # voice recordings taken (accepted or refused), in the order given
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kept = ", ".join(f"{m} ({n} sample{'s' if n > 1 else ''})"
                         for m, n in sorted(self.n_samples.items()))
        refused = sum(not s.ok for s in self.samples)
        voice = f", {self.voice_speech_s:.1f} s of speech" if self.n_samples.get("voice") else ""
        return (f"enrolled {self.name}: {kept}{voice}"
                + (f"; {refused} sample(s) refused" if refused else ""))


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
        got, rep, _ = self._voice(wav, source)
        return got, rep

    def _voice(self, wav: np.ndarray | None, source: str
               ) -> tuple[list[np.ndarray], list[SampleReport], float]:
        try:
            speech, voiced = self.speech_from_audio(wav, source)
            emb = self.bundle.embed_voice(speech)
        except EdgepinError as exc:
            return [], [SampleReport(source, "voice", False, str(exc))], 0.0
        return [emb], [SampleReport(source, "voice", True, f"{voiced:.1f} s of speech")], voiced

    # ------------------------------------------------------------------------- enrolment
    def enroll_files(self, gallery: Gallery, name: str, *, faces: Sequence[str | Path] = (),
                     voices: Sequence[str | Path] = (), videos: Sequence[str | Path] = (),
                     replace: bool = True, voice_until_s: float | None = None) -> Enrollment:
        """``edgepin enroll NAME --face IMG... --voice WAV... --video CLIP...``.

        ``voice_until_s``: take the ``voices`` in order only until they are ``voice_enough``
        (that much voiced speech from at least ``MIN_VOICE_SAMPLES`` usable ones), leaving the
        rest unused (a door's recordings: the later ones stay for probes); None takes all."""
        if not (faces or voices or videos):
            raise ConfigError("enrolment needs at least one --face, --voice or --video sample")
        crops: list[np.ndarray] = []
        voice: list[np.ndarray] = []
        reports: list[SampleReport] = []
        taken: list[float] = []  # voiced seconds of each voice sample taken (0: refused)
        for path in faces:
            got, rep = self.face_from_image(path)
            crops += got
            reports += rep
        for path in voices:
            if voice_until_s is not None and voice_enough(taken, voice_until_s):
                break
            taken.append(0.0)
            try:
                wav = load_audio(path, TARGET_SR)
            except EdgepinError as exc:
                reports.append(SampleReport(str(path), "voice", False, str(exc)))
                continue
            got, rep, taken[-1] = self._voice(wav, str(path))
            voice += got
            reports += rep
        used = len(taken)  # the --voice recordings taken; the rest stay unused
        for path in videos:
            try:
                clip = decode_clip(path)
            except EdgepinError as exc:
                reports += [SampleReport(str(path), m, False, str(exc)) for m in ("face", "voice")]
                continue
            got, rep = self.faces_from_frames(clip.frames, str(path))
            crops += got
            reports += rep
            got, rep, v = self._voice(clip.audio, str(path))
            voice += got
            reports += rep
            taken.append(v)
        wanted = {m for m, given in (("face", faces or videos), ("voice", voices or videos)) if given}
        out = self._store(gallery, name, crops, voice, reports, wanted, replace, sum(taken))
        out.voice_used = used
        return out

    def enroll_clip(self, gallery: Gallery, name: str, clip: Clip, *,
                    replace: bool = True) -> Enrollment:
        """Both modalities from one talking-face clip (the demo enrols first halves)."""
        source = f"{clip.path} [{clip.start:.1f}-{clip.start + clip.duration:.1f} s]"
        crops, reports = self.faces_from_frames(clip.frames, source)
        voice, rep, voiced = self._voice(clip.audio, source)
        return self._store(gallery, name, crops, voice, reports + rep, {"face", "voice"}, replace,
                           voiced)

    def enroll_live(self, gallery: Gallery, name: str, source: AVSource, *,
                    prompt: Callable[[str], None] = print, n_faces: int = 5,
                    speech_s: float = ENROL_VOICE_S, timeout_s: float = 60.0,
                    phrase: str = "my voice is my passport, verify me",
                    replace: bool = True) -> Enrollment:
        """Guided capture: look at the camera (``n_faces`` good frames), then say the phrase
        (again) until ``speech_s`` of voiced speech were heard."""
        faces_col = self._collector(source.name)
        voice_col = self._collector(source.name)
        deadline = time.monotonic() + timeout_s
        phase = "face"
        said = 0.0
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
                    heard = voice_col.speech_seconds()
                    if heard >= speech_s:
                        break
                    if heard >= said + len(phrase.split()) * 0.35:  # about one phrase more
                        said = heard
                        prompt(f"Again, please ({heard:.0f} of {speech_s:g} s): \"{phrase}\"")
                if batch.ended:
                    break
        finally:
            source.close()
        crops = [c.crop for c in faces_col.faces]
        reports = [SampleReport(f"{source.name} at {c.t:.2f} s", "face", True)
                   for c in faces_col.faces]
        if not crops:
            reports.append(SampleReport(source.name, "face", False, faces_col.face_problem()))
        voice, rep, voiced = self._voice(voice_col.audio(), source.name)
        return self._store(gallery, name, crops, voice, reports + rep, {"face", "voice"}, replace,
                           voiced)

    def _store(self, gallery: Gallery, name: str, crops: list[np.ndarray],
               voice: list[np.ndarray], reports: list[SampleReport], wanted: set[str],
               replace: bool, voiced: float = 0.0) -> Enrollment:
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
        warnings = []
        if voice and voiced < ENROL_VOICE_S:
            warnings.append(
                f"{name!r}: voice template from {voiced:.1f} s of speech, under the "
                f"{ENROL_VOICE_S:g} s enrolment asks for: the door will reject this person's own "
                f"voice more often and a stranger's voice less often; enrol again with more "
                f"speech (e.g. several --voice recordings)")
        return Enrollment(name, counts, reports, voice_speech_s=voiced, warnings=warnings)


class DoorEnrolment(NamedTuple):
    enrolled: list[str]
    refused: list[str]  # one line per person who could not be enrolled
    voice_used: dict[str, int]  # per enrolled person: recordings taken; the later ones are probes


def enroll_people(enroller: Enroller, gallery: Gallery, people: Iterable[Mapping[str, Any]],
                  *, root: Path | None = None, photos: int = 2,
                  voice_s: float = ENROL_VOICE_S) -> DoorEnrolment:
    """Enrol a door of people given as ``{"name", "photos", "utterances"}`` (paths, relative to
    ``root`` when given) from their first ``photos`` photos and their first recordings until
    ``voice_s`` of voiced speech (``enrol_voice_count``); the later ones stay for probes. The
    last recording is never taken: a person keeps at least one probe. A person who cannot be
    enrolled is skipped with the reason. Shared by the demo's artificial door and the attack
    benchmark, so both enrol the same way."""
    out = DoorEnrolment([], [], {})
    for p in people:
        def at(x: Any) -> Path:
            return Path(root) / x if root is not None else Path(x)
        utts = list(p["utterances"])
        try:
            got = enroller.enroll_files(gallery, str(p["name"]),
                                        faces=[at(x) for x in list(p["photos"])[:photos]],
                                        voices=[at(x) for x in utts[:max(1, len(utts) - 1)]],
                                        voice_until_s=voice_s)
            out.enrolled.append(str(p["name"]))
            out.voice_used[str(p["name"])] = got.voice_used
        except EdgepinError as exc:
            out.refused.append(f"could not enrol {p['name']}: {exc}")
    return out

