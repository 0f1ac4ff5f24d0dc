"""`edgepin demo`: the whole access-control loop on the bundled GRID talking-face clips.

No camera, microphone or prepared gallery needed. Each person is enrolled from the FIRST half
of their clip (face frames + voice), into a temporary encrypted gallery with its own key.
The SECOND halves are then replayed as live camera + microphone streams through the real
loop (``AccessLoop`` with ``ReplaySource``), followed by mixed attacks: the face of one
person with the voice of another (``ReplaySource.mixed``). Replay runs as fast as the loop
consumes it (``realtime=False``) unless asked otherwise: the loop's timing follows the media
timestamps, so decisions are the same, only the wall-clock wait is skipped.

A GRID clip is 3 s with ~1.2-1.9 s of speech, so each half holds well under the live
default of 2 s of speech: the demo decides when each replayed half ends and asks for
``min_speech_s`` (0.5 s by default) of voiced speech, and says so in its output.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.access.collector import live_min_speech_s
from edge_runtime.access.enroll import ENROL_VOICE_S, Enroller, enroll_people
from edge_runtime.access.loop import AccessLoop, LoopConfig
from edge_runtime.access.pipeline import AttemptResult, PipelineConfig, Verifier
from edge_runtime.capture import ReplaySource
from edge_runtime.cli.options import default_clips_dir, default_models_dir
from edge_runtime.errors import ConfigError, MediaError, ModelError
from edge_runtime.face_detectors import open_face_detector
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.face import FaceDetector, load_image
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.frontend.video import Clip, Frame, decode_clip
from edge_runtime.models import ModelBundle
from edge_runtime.store.audit import AuditLog
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle
from edge_runtime.store.keys import create_key


@dataclass
class DemoAttempt:
    label: str
    truth: str  # "genuine", "mixed", "photo" or "shifted"
    expected: str | None  # identity that should be granted (None: must be denied)
    result: AttemptResult
    wall_s: float

    @property
    def correct(self) -> bool:
        if self.expected is None:
            return not self.result.granted
        return self.result.granted and self.result.identity == self.expected


@dataclass
class DemoReport:
    attempts: list[DemoAttempt]
    enrolled: list[str]
    models: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    audit_rows: int = 0
    door: list[DemoAttempt] = field(default_factory=list)
    door_enrolled: list[str] = field(default_factory=list)

    def door_totals(self) -> dict[str, Any]:
        """Totals of the ARTIFICIAL door: each kind on its own line."""
        out: dict[str, Any] = {}
        for kind in DOOR_KINDS:
            rows = [a for a in self.door if a.truth == kind]
            out[kind] = {"correct": sum(a.correct for a in rows), "n": len(rows)}
        return out

    def totals(self) -> dict[str, Any]:
        gen = [a for a in self.attempts if a.truth == "genuine"]
        mixed = [a for a in self.attempts if a.truth == "mixed"]
        attacks = {k: [a for a in self.attempts if a.truth == k] for k in ATTACKS}
        lat = np.array([a.result.latencies_ms.get("decision", np.nan) for a in self.attempts])
        lat = lat[np.isfinite(lat)]
        pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
        return {
            "genuine_accepted": sum(a.correct for a in gen), "genuine": len(gen),
            "mixed_rejected": sum(a.correct for a in mixed), "mixed": len(mixed),
            **{f"{k}_rejected": sum(a.correct for a in v) for k, v in attacks.items()},
            **{k: len(v) for k, v in attacks.items()},
            "decision_ms_p50": pct(50), "decision_ms_p95": pct(95),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "attempts": [{"label": a.label, "truth": a.truth, "expected": a.expected,
                          "correct": a.correct, "wall_s": round(a.wall_s, 3),
                          **a.result.to_json()} for a in self.attempts],
            "enrolled": self.enrolled, "totals": self.totals(), "models": self.models,
            "settings": self.settings, "notes": self.notes, "seconds": round(self.seconds, 2),
            "audit_rows": self.audit_rows,
            "door": {"enrolled": self.door_enrolled, "totals": self.door_totals(),
                     "attempts": [{"label": a.label, "truth": a.truth, "expected": a.expected,
                                   "correct": a.correct, **a.result.to_json()}
                                  for a in self.door]},
        }


ATTACKS = ("photo", "shifted")
DOOR_KINDS = ("door-genuine", "door-mixed", "door-stranger")
DOOR_LIST = "artificial_door.json"


def photo_attack(half: Clip) -> Clip:
    """A still frame of the half (its middle one) shown for the whole half, with its own
    recorded audio: a photo plus a recording."""
    still = half.frames[len(half.frames) // 2].image
    frames = [Frame(f.t, still) for f in half.frames]
    return dataclasses.replace(half, frames=frames)


def shifted_attack(clip: Clip, half: Clip, delay_s: float) -> Clip:
    """The half's own video with the clip's audio delayed by ``delay_s`` (a replay whose sound
    lags, or leads when negative): what plays at time t was recorded at t - delay."""
    assert clip.audio is not None
    sr = clip.sample_rate
    n = round(half.duration * sr)
    k0 = round((half.start - delay_s - clip.start) * sr)
    idx = np.arange(k0, k0 + n)
    audio = np.where((idx >= 0) & (idx < clip.audio.shape[0]),
                     clip.audio[np.clip(idx, 0, clip.audio.shape[0] - 1)], 0.0)
    return dataclasses.replace(half, audio=audio.astype(np.float32))


def _load_clips(clips_dir: Path, people: int | None) -> dict[str, Clip]:
    paths = sorted(clips_dir.glob("*.mpg")) + sorted(clips_dir.glob("*.mp4"))
    if not paths:
        raise MediaError(f"no demo clips (*.mpg, *.mp4) in {clips_dir}")
    if people is not None:
        if people < 2:
            raise ConfigError(f"the demo needs at least 2 people (mixed attacks), got {people}")
        paths = paths[:people]
    if len(paths) < 2:
        raise MediaError(f"the demo needs at least 2 clips in {clips_dir}, found {len(paths)}")
    return {p.stem: decode_clip(p) for p in paths}


def _play(loop: AccessLoop, plan: list[tuple[str, str, str | None, ReplaySource]],
          on_attempt: Callable[[DemoAttempt], None] | None) -> list[DemoAttempt]:
    """Replay each planned attempt through the loop, once, and time it."""
    out = []
    for label, truth, expected, source in plan:
        t0 = time.perf_counter()
        result = loop.run(source, once=True)[0]
        attempt = DemoAttempt(label, truth, expected, result, time.perf_counter() - t0)
        out.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)
    return out


def run_demo(
    models: str | Path | None = None,
    clips: str | Path | None = None,
    *,
    people: int | None = None,
    mixed_per_person: int = 1,
    shift_s: float = 0.5,
    realtime: bool = False,
    min_speech_s: float = 0.5,
    precision: str = "fp32",
    backend: str = "onnxruntime",
    threads: int = 1,
    threshold_overrides: Mapping[str, float] | None = None,
    detect_interval_s: float = 0.0,
    detector: str = "hog",
    on_attempt: Callable[[DemoAttempt], None] | None = None,
    door: str | Path | None = None,
    door_people: int = 12,
    face_tier: str = "student",
    voice_tier: str = "student",
) -> DemoReport:
    """Enrol, replay genuine and mixed attempts through the loop; see the module docstring."""
    t_start = time.perf_counter()
    models_dir = Path(models) if models is not None else default_models_dir()
    if not (models_dir / "manifest.json").is_file():
        raise ModelError(
            f"no models at {models_dir} (no manifest.json): train/export the students into "
            f"models/ or pass --models DIR"
        )
    if mixed_per_person < 0:
        raise ConfigError(f"mixed_per_person must be >= 0, got {mixed_per_person}")
    clip_map = _load_clips(Path(clips) if clips is not None else default_clips_dir(), people)
    names = list(clip_map)
    halves = {n: c.split(c.start + c.duration / 2) for n, c in clip_map.items()}
    bundle = ModelBundle.load(models_dir, precision=precision, backend=backend, threads=threads,
                              threshold_overrides=threshold_overrides, face_tier=face_tier,
                              voice_tier=voice_tier)
    choice = open_face_detector(detector, models=models_dir, backend=backend, threads=threads,
                                frame_size=(clip_map[names[0]].frames[0].image.shape[1],
                                            clip_map[names[0]].frames[0].image.shape[0]))
    face_detector, gate = choice.detector, SpeechGate("auto")
    config = PipelineConfig(min_speech_s=min_speech_s)
    settings = {"realtime": realtime, "min_speech_s": min_speech_s,
                "face_detection_every_s": detect_interval_s,
                "decide": "when each replayed half ends", "lockout": "disabled",
                "target_far": config.target_far, "precision": precision, "backend": backend,
                "face_detector": f"{choice.name} ({choice.reason})"}
    notes = list(bundle.notes)
    op = bundle.operating_points
    mode = op.mode() if op is not None and op.modes else None
    live_s = live_min_speech_s(mode.decisive_speech_s if mode is not None else None)
    notes.append(f"GRID halves hold ~0.5-1 s of speech: decided at the end of each replay with "
                 f">= {min_speech_s:g} s of voiced speech (a live source: >= {live_s:g} s)")
    if not realtime:
        notes.append("replayed as fast as the loop runs (realtime=False): same media timeline, "
                     "no wall-clock waiting")
    notes.append("lockout disabled for the demo (its scripted attacks would lock the door)")
    if gate.note:
        notes.append(gate.note)
    attempts: list[DemoAttempt] = []
    with tempfile.TemporaryDirectory(prefix="edgepin-demo-") as tmp:
        key = create_key(Path(tmp) / "gallery.key")
        with Gallery.open(Path(tmp) / "gallery.db", key) as gallery, \
                AuditLog.open(Path(tmp) / "audit.db") as audit:
            enroller = Enroller(bundle, face_detector, gate, min_speech_s=min_speech_s)
            enrolled = []
            for name in names:
                try:
                    enroller.enroll_clip(gallery, name, halves[name][0])
                    enrolled.append(name)
                except MediaError as exc:
                    notes.append(f"could not enrol {name}: {exc}")
            verifier = Verifier(bundle, GalleryHandle.wrap(gallery), config, face_detector, gate)
            loop = AccessLoop(verifier, LoopConfig(decide_at_end=True, cooldown_s=0.0,
                                                   lockout_failures=0,
                                                   detect_interval_s=detect_interval_s),
                              audit=audit)
            plan: list[tuple[str, str, str | None, ReplaySource]] = []
            for name in names:
                plan.append((f"{name} (second half)", "genuine",
                             name if name in enrolled else None,
                             ReplaySource(halves[name][1], realtime=realtime)))
            for k in range(1, mixed_per_person + 1):
                for i, name in enumerate(names):
                    other = names[(i + k) % len(names)]
                    if other == name:
                        continue
                    plan.append((f"face {name} + voice {other}", "mixed", None,
                                 ReplaySource.mixed(halves[name][1], halves[other][1],
                                                    realtime=realtime)))
            for name in names if mixed_per_person > 0 else ():  # 0: genuine attempts only
                plan.append((f"photo of {name} + recording", "photo", None,
                             ReplaySource(photo_attack(halves[name][1]), realtime=realtime)))
                plan.append((f"{name} video, audio {shift_s:+g} s", "shifted", None,
                             ReplaySource(shifted_attack(clip_map[name], halves[name][1],
                                                         shift_s), realtime=realtime)))
            attempts += _play(loop, plan, on_attempt)
            verifier.close()
            audit_rows = audit.verify()
    door_attempts: list[DemoAttempt] = []
    door_enrolled: list[str] = []
    if door is not None:
        door_attempts, door_enrolled = _artificial_door(
            bundle, face_detector, gate, Path(door), door_people, notes, on_attempt)
    bundle.close()
    return DemoReport(attempts, enrolled, bundle.describe(), settings, notes,
                      time.perf_counter() - t_start, audit_rows, door_attempts, door_enrolled)


def _still_clip(image_path: Path, audio: np.ndarray, fps: float = 25.0) -> Clip:
    picture = load_image(image_path)
    picture.setflags(write=False)
    duration = audio.shape[0] / TARGET_SR
    frames = [Frame(i / fps, picture) for i in range(max(1, int(duration * fps)))]
    return Clip(image_path, frames, fps, audio.astype(np.float32), TARGET_SR, duration)


def _artificial_door(bundle: ModelBundle, detector: FaceDetector, gate: SpeechGate,
                     data: Path, n_people: int, notes: list[str],
                     on_attempt: Callable[[DemoAttempt], None] | None
                     ) -> tuple[list[DemoAttempt], list[str]]:
    """A larger door of ARTIFICIAL identities (held-out LFW person + held-out speechocean762
    speaker of the same gender, listed in tests/fixtures/artificial_door.json): enrol
    ``n_people`` (2 photos + their first utterances until ``ENROL_VOICE_S`` of voiced speech,
    as every enrolment asks), then per person a genuine attempt (another photo,
    another utterance cut to 2-4 s), the face with another enrolled person's voice of the same
    gender, and strangers (people not enrolled). Photos are stills: AV sync cannot be measured,
    so this door decides the IDENTITY part of the mode only (liveness reported), and says so."""
    listing = default_clips_dir().parent / DOOR_LIST
    if not (data / "lfw").is_dir() or not listing.is_file():
        notes.append(f"artificial door skipped: no {data / 'lfw'} or no {listing}")
        return [], []
    people = json.loads(listing.read_text())["people"]
    rng = np.random.default_rng(0)
    members, strangers = people[:n_people], people[n_people: n_people + n_people // 2]
    attempts: list[DemoAttempt] = []
    with tempfile.TemporaryDirectory(prefix="edgepin-door-") as tmp:
        key = create_key(Path(tmp) / "gallery.key")
        with Gallery.open(Path(tmp) / "gallery.db", key) as gallery:
            enroller = Enroller(bundle, detector, gate, min_speech_s=1.0)
            door = enroll_people(enroller, gallery, members, root=data)
            enrolled, used = door.enrolled, door.voice_used
            notes += [f"artificial door: {r}" for r in door.refused]
            config = PipelineConfig(min_speech_s=0.5, liveness="report")
            verifier = Verifier(bundle, GalleryHandle.wrap(gallery), config, detector, gate)
            loop = AccessLoop(verifier, LoopConfig(decide_at_end=True, cooldown_s=0.0,
                                                   lockout_failures=0, detect_interval_s=0.2))

            def probe(p: dict[str, Any], voice: dict[str, Any]) -> ReplaySource:
                photo = data / p["photos"][2 + int(rng.integers(0, len(p["photos"]) - 2))]
                k = used.get(voice["name"], 3)  # a stranger's: from their 4th on
                utt = data / voice["utterances"][k + int(rng.integers(0, len(voice["utterances"])
                                                                       - k))]
                wav = load_audio(utt, TARGET_SR)
                n = round(rng.uniform(2.0, 4.0) * TARGET_SR)
                k = int(rng.integers(0, max(1, wav.size - n)))
                return ReplaySource(_still_clip(photo, wav[k: k + n]), realtime=False)

            plan = []
            for p in members:
                if p["name"] not in enrolled:
                    continue
                plan.append((f"{p['name']}", "door-genuine", p["name"], probe(p, p)))
                same = [q for q in members if q is not p and q["gender"] == p["gender"]
                        and q["name"] in enrolled]
                if same:
                    q = same[int(rng.integers(0, len(same)))]
                    plan.append((f"face {p['name']} + voice {q['name']}", "door-mixed", None,
                                 probe(p, q)))
            for s in strangers:
                plan.append((f"stranger {s['name']}", "door-stranger", None, probe(s, s)))
            attempts += _play(loop, plan, on_attempt)
            verifier.close()
    notes.append(f"artificial door: {len(enrolled)} ARTIFICIAL identities enrolled (LFW photo + "
                 f"speechocean762 voice of the same gender: different people; voice from "
                 f"{ENROL_VOICE_S:g} s of speech), probes 2-4 s; "
                 f"still photos, so AV-sync liveness is reported, not required: identity only")
    return attempts, enrolled


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_report(report: DemoReport, console: Any | None = None) -> None:
    """The table, totals and notes, with rich."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    cross = [k for k in ("pin", "faa") if any(k in a.result.scores for a in report.attempts)]
    table = Table(title="edgepin demo: GRID clips through the access-control loop")
    for col in ("attempt", "truth", "decision", "face", "voice", "avsync", *cross, "ms",
                "reason"):
        table.add_column(col, overflow="fold")
    for a in report.attempts:
        r = a.result
        verdict = f"GRANTED {r.identity}" if r.granted else "denied"
        style = "green" if a.correct else "red"
        truth = f"genuine {a.expected}" if a.truth == "genuine" else f"{a.truth} attack"
        table.add_row(escape(a.label), truth, f"[{style}]{verdict}[/]",
                      _fmt(r.scores.get("face")), _fmt(r.scores.get("voice")),
                      _fmt(r.scores.get("avsync")),
                      *(_fmt(r.scores.get(k)) for k in cross),
                      f"{r.latencies_ms.get('decision', float('nan')):.0f}", escape(r.reason))
    console.print(table)
    t = report.totals()
    console.print(
        f"genuine accepted: {t['genuine_accepted']}/{t['genuine']}   "
        f"mixed attacks rejected: {t['mixed_rejected']}/{t['mixed']}   "
        + "".join(f"{k} attacks rejected: {t[k + '_rejected']}/{t[k]}   " for k in ATTACKS)
        +
        f"decision latency (end of capture -> decision): p50 {t['decision_ms_p50']:.1f} ms, "
        f"p95 {t['decision_ms_p95']:.1f} ms", highlight=False)
    console.print(f"models: {report.models['root']} ({report.models['precision']}, "
                  f"{report.models['backend']}); audit log: {report.audit_rows} rows, hash "
                  f"chain verified; {report.seconds:.1f} s in total", highlight=False)
    if report.door:
        door = Table(title="ARTIFICIAL door: held-out LFW faces + speechocean762 voices "
                           "(identity part only)")
        for col in ("attempt", "truth", "decision", "face", "voice", "speech s", "reason"):
            door.add_column(col, overflow="fold")
        for a in report.door:
            r = a.result
            style = "green" if a.correct else "red"
            door.add_row(escape(a.label), a.truth, f"[{style}]"
                         f"{'GRANTED ' + str(r.identity) if r.granted else 'denied'}[/]",
                         _fmt(r.scores.get("face")), _fmt(r.scores.get("voice")),
                         f"{r.speech_s:.1f}", escape(r.reason))
        console.print(door)
        console.print("   ".join(f"{k}: {v['correct']}/{v['n']} correct"
                                   for k, v in report.door_totals().items()), highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
