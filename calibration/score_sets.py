"""Genuine and impostor score sets from real data, through the deployed models as the device runs them.

Everything goes through ``edge_runtime``: the models are opened as a ``ModelBundle`` (same
front-end, same INT8/FP32 choice, same cross-modal heads and FAA input space), voices through
the ``Enroller``'s VAD and speech checks, GRID faces through the ``Collector``'s detector and
quality gate, and every template is ``gallery.make_template`` of N enrolment embeddings. So
the thresholds are measured on exactly the scores a device computes.

Sets (each row of a ``TrialScores`` is one probe against one template, NaN = modality absent):

* ``lfw`` (face), ``speechocean`` (voice), ``artificial`` (face+voice, DIFFERENT people paired
  by index): the held-out trials of ``calibration.trials``, in two halves of the people.
* ``grid`` (REAL face+voice, 7 people; built by ``calibration.grid_sets``): one half of a
  clip enrols, the other probes;
  ``grid-mixed``: face of A + voice of B against A's and B's templates (attacks);
  ``grid-cross``: PIN cosine / FAA probability of a live face and a live voice (genuine when
  both come from the same clip half), only when the bundle has the cross-modal heads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.exact_int8 import exact_int8_runners
from calibration.scores import TrialScores
from calibration.trials import Embedded, held_out_trials
from edge_runtime.access.enroll import ENROL_VOICE_S
from edge_runtime.bundle import MANIFEST, load_manifest
from edge_runtime.errors import DatasetError, EdgepinError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.models import ModelBundle

log = logging.getLogger(__name__)

DEFAULT_SPLIT = {"test_fraction": 0.2, "val_fraction": 0.1, "seed": 0}
FACE_BATCH = 64


@dataclass(frozen=True)
class SetConfig:
    """What to build: N enrolment samples per modality, which identities, the speech gates."""

    n_face: int = 2
    n_voice: int = 3  # with voice_enrol_s: the fewest recordings a voice template takes
    # Voice templates take this many voiced seconds (at least n_voice recordings, never a
    # speaker's last one), as the door enrols (``ENROL_VOICE_S``); None: n_voice recordings.
    voice_enrol_s: float | None = ENROL_VOICE_S
    # "heldout": every identity the student never trained on (its test AND val people: val only
    # picked the checkpoint); "test": its test people only; "all": everyone.
    split: str = "heldout"
    max_probes: int | None = 10  # probes per person (a person with 50 photos weighs as 10)
    min_speech_s: float = 1.0  # voiced seconds per LFW/speechocean utterance (enrolment default)
    grid_min_speech_s: float = 0.5  # a GRID half holds ~0.5-1 s of speech (as `edgepin demo`)
    # A live probe holds what the loop had when it decided: its first ~2 s of voiced speech
    # (PipelineConfig.min_speech_s), not a whole 3-6 s utterance; scores (and their LLRs) depend
    # on probe length, so probes are cut to this. Templates keep whole utterances, as enrolment
    # does. None: whole utterances.
    voice_probe_s: float | None = 2.0
    # Shorter probes too (a device configured to decide on less speech, GRID's ~1 s halves):
    # the voice calibration is also fitted at these lengths, so a short probe's LLR says less.
    voice_probe_lengths: tuple[float, ...] = (0.75, 1.0, 1.4)
    grid_reverse: bool = True  # also enrol from the second half and probe with the first
    seed: int = 0
    workers: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ScoreSets:
    """Named trial tables (``"lfw/0"``, ``"artificial/1"``, ``"grid"``, ...) and what made them."""

    parts: dict[str, TrialScores]
    info: dict[str, Any]
    data_sha256: str
    people: dict[str, np.ndarray] = field(default_factory=dict)  # (probe, template) per row
    embedded: dict[str, Embedded] = field(default_factory=dict)  # "face", "voice"
    config: SetConfig | None = None
    seed: int = 0  # of the split into halves
    _by_length: dict[float, ScoreSets] = field(default_factory=dict, repr=False, compare=False)

    def _trials(self, seed: int, voice: Embedded | None = None) -> ScoreSets:
        if self.config is None or set(self.embedded) != {"face", "voice"}:
            raise DatasetError("these score sets keep no embeddings to re-split")
        cfg = self.config
        parts, people, info = held_out_trials(self.embedded["face"],
                                              voice or self.embedded["voice"], cfg.n_face,
                                              cfg.n_voice, seed, cfg.max_probes,
                                              cfg.voice_enrol_s)
        return ScoreSets(parts, info, self.data_sha256, people, dict(self.embedded), cfg, seed)

    def resplit(self, seed: int) -> ScoreSets:
        """The held-out sets (lfw, speechocean, artificial) on another random split of the
        same people into halves: for studying how much a result depends on the split."""
        return self._trials(seed)

    def voice_probe_lengths(self) -> list[float]:
        return sorted(self.embedded["voice"].probe_by_s) if "voice" in self.embedded else []

    def with_voice_probes(self, seconds: float) -> ScoreSets:
        """The held-out sets of the same split with voice probes cut to ``seconds`` (built once
        per length: the fits of both halves and the report all read them)."""
        if seconds not in self._by_length:
            self._by_length[seconds] = self._trials(
                self.seed, self.embedded["voice"].with_probe_length(seconds))
        return self._by_length[seconds]

    def voice_scores(self, seconds: float, half: int) -> tuple[np.ndarray, np.ndarray]:
        """Genuine and impostor voice scores of ``half`` with probes cut to ``seconds``."""
        t = self.with_voice_probes(seconds).join([f"speechocean/{half}", f"artificial/{half}"])
        ok, gen = t.mask(["voice"]), np.asarray(t.genuine, bool)
        s = np.asarray(t.scores["voice"])
        return s[ok & gen], s[ok & ~gen]

    def join(self, names: Sequence[str]) -> TrialScores:
        """The named parts that exist, concatenated (a missing part is simply absent)."""
        got = [self.parts[n] for n in names if n in self.parts]
        if not got:
            raise DatasetError(f"none of the score sets {list(names)} was built")
        return TrialScores.concat(got)

    def half(self, h: int) -> TrialScores:
        return self.join(self.half_names(h))

    def half_names(self, h: int) -> list[str]:
        return [n for k in ("lfw", "speechocean", "artificial") if (n := f"{k}/{h}") in self.parts]

    def half_people(self, h: int) -> np.ndarray:
        """(probe person, template person) of every row of ``half(h)``, in the same order."""
        return np.concatenate([self.people[n] for n in self.half_names(h)])


# ------------------------------------------------------------------------------ the models
@contextmanager
def open_bundle(models: str | Path, precision: str = "fp32", threads: int = 2,
                face_tier: str = "student", voice_tier: str = "student"
                ) -> Iterator[ModelBundle]:
    """The bundle as the device loads it, minus its current operating-point file.

    A calibration usually runs because the models changed, so the old file is stale and
    ``ModelBundle.load`` would (rightly) refuse it: the models are opened from a private
    folder of links to the same files (hashes are still verified against the manifest).
    Every voice score is then ``bundle.embed_voice`` of the chosen voice tier.
    """
    root = Path(models)
    entries = load_manifest(root)
    with tempfile.TemporaryDirectory(prefix="edgepin-calibrate-") as tmp:
        for e in entries.values():
            link = Path(tmp) / e.file
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(e.path.resolve(), link)
        (Path(tmp) / MANIFEST).write_bytes((root / MANIFEST).read_bytes())
        bundle = ModelBundle.load(tmp, precision=precision, threads=threads,
                                  face_tier=face_tier, voice_tier=voice_tier)
        bundle.root = root
        try:
            if precision == "int8":
                exact_int8_runners(bundle, Path(tmp), threads)
            yield bundle
        finally:
            bundle.close()


def model_split(bundle: ModelBundle, modality: str) -> dict[str, Any]:
    """The identity split the student was trained with (ONNX metadata), else the default
    (the students' own split: a port of a teacher that never saw these datasets, such as
    voice_large, is measured on the same held-out people as the student it may replace)."""
    session = getattr(bundle.runners[modality], "session", None)
    raw = dict(session.get_modelmeta().custom_metadata_map).get("edgepin.split") if session else None
    raw = raw or bundle.entries[modality].meta.get("split")
    try:
        split = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except (TypeError, ValueError):
        split = {}
    return {k: split.get(k, v) for k, v in DEFAULT_SPLIT.items()}


def _chosen(reader: Any, split: str, split_cfg: Mapping[str, Any]) -> list:
    from train.datasets import holdout_split

    ids = reader.identities()
    if split == "all":
        keep = set(ids)
    elif split in ("test", "heldout"):
        parts = holdout_split(ids, split_cfg["test_fraction"], split_cfg["val_fraction"],
                              split_cfg["seed"])
        keep = set(parts["test"]) | (set(parts["val"]) if split == "heldout" else set())
    else:
        raise DatasetError(f"unknown split {split!r}: choose heldout, test or all")
    return [s for s in reader.samples if s.identity in keep]


# --------------------------------------------------------------------------- embeddings
def embed_faces(bundle: ModelBundle, samples: Sequence[Any], cache_dir: str | Path,
                workers: int = 2) -> Embedded:
    """LFW-style photos: detected and cropped once (cached) the way the face model takes
    them (``bundle.face_input``), embedded by the face model."""
    from train.prepare import prepare_faces

    prepared = prepare_faces(samples, cache_dir, with_teacher=False, workers=workers,
                             face_input=bundle.face_input)
    crops = list(prepared.crops)
    emb = np.concatenate([bundle.embed_faces(crops[i: i + FACE_BATCH])
                          for i in range(0, len(crops), FACE_BATCH)])
    return Embedded(prepared.identities, emb, [str(s.path) for s in prepared.samples],
                    [(str(p), r) for p, r in prepared.skipped])


def embed_voices(bundle: ModelBundle, samples: Sequence[Any], enroller: Any,
                 probe_s: float | None = None, other_lengths: Sequence[float] = ()
                 ) -> Embedded:
    """Utterances through the device's audio checks, VAD and voice model (one embedding each,
    plus, with ``probe_s``, one of the first ``probe_s`` voiced seconds for use as a probe,
    and one per ``other_lengths`` for calibrating shorter probes)."""
    lengths = ([probe_s] if probe_s is not None else []) + list(other_lengths)
    ids, embs, sources, skipped, voiced = [], [], [], [], []
    probes: dict[float, list[np.ndarray]] = {x: [] for x in lengths}
    for s in samples:
        try:
            speech, _ = enroller.speech_from_audio(load_audio(s.path, TARGET_SR), str(s.path))
            emb = bundle.embed_voice(speech)
            cut = {x: bundle.embed_voice(speech[: max(1, round(x * TARGET_SR))])
                   for x in lengths}  # one VAD pass: a probe is the start of the same speech
        except EdgepinError as exc:
            skipped.append((str(s.path), str(exc)))
            continue
        ids.append(s.identity)
        embs.append(emb)
        sources.append(str(s.path))
        voiced.append(speech.size / TARGET_SR)
        for x, e in cut.items():
            probes[x].append(e)
    if not embs:
        raise DatasetError(f"no usable utterance among {len(samples)} ({skipped[:1]})")
    stacked = {x: np.stack(v).astype(np.float32) for x, v in probes.items()}
    return Embedded(ids, np.stack(embs).astype(np.float32), sources, skipped,
                    stacked.get(probe_s) if probe_s is not None else None,
                    {x: v for x, v in stacked.items() if x != probe_s},
                    np.asarray(voiced, np.float64))


# ------------------------------------------------------------------------------- all sets
def _need(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"calibration data: {what} folder {path} does not exist")
    return path


# A site's own data may hold any of these (first name found wins): faces of its people,
# their voices, talking-face clips of them.
SITE_FOLDERS = {"lfw": ("lfw", "faces"), "speechocean762": ("speechocean762", "voices"),
                "grid": ("grid", "clips")}


def site_folders(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The data folders present under ``root`` and a one-line reason for each one absent;
    an error naming every accepted name when none is there."""
    found, missing = {}, {}
    for key, names in SITE_FOLDERS.items():
        hit = next((root / n for n in names if (root / n).is_dir()), None)
        if hit is None:
            missing[key] = f"no {' or '.join(n + '/' for n in names)} folder in {root}"
        else:
            found[key] = hit
    if not found:
        raise DatasetError(f"calibration data: {root} holds none of "
                           f"{', '.join('/'.join(n) for n in SITE_FOLDERS.values())} "
                           "(faces, voices, talking-face clips)")
    return found, missing


def _empty(dim: int = 1) -> Embedded:
    return Embedded([], np.zeros((0, dim), np.float32), [])


def _counts(t: TrialScores) -> dict[str, Any]:
    gen = np.asarray(t.genuine, bool)
    return {"modalities": list(t.modalities), "n_genuine": int(gen.sum()),
            "n_impostor": int((~gen).sum())}


def build_score_sets(bundle: ModelBundle, data: str | Path, cache_dir: str | Path,
                     cfg: SetConfig | None = None, *, partial: bool = False) -> ScoreSets:
    """Every score set of the module docstring from ``data/{lfw,speechocean762,grid}``.

    ``partial`` (a site's own data): folders may be missing (``faces/``, ``voices/``,
    ``clips/`` are accepted too); the sets they would give are absent and the reason is in
    ``info["missing_data"]``."""
    from edge_runtime.access.enroll import Enroller
    from edge_runtime.frontend.face import DlibHogDetector
    from edge_runtime.frontend.vad import SpeechGate
    from train.datasets import ClipFolder, FaceFolder, SpeechFolder, manifest_hash

    cfg = cfg or SetConfig()
    root = Path(data)
    if partial:
        folders, missing = site_folders(root)
    else:
        folders = {"lfw": _need(root / "lfw", "LFW faces"),
                   "speechocean762": _need(root / "speechocean762", "speechocean762 voices"),
                   "grid": _need(root / "grid", "GRID clips")}
        missing = {}
    splits = {m: model_split(bundle, m) for m in ("face", "voice")}
    detector, gate = DlibHogDetector(), SpeechGate("auto")
    face_samples, voice_samples, clips = [], [], []
    face = voice = _empty()
    if "lfw" in folders:
        face_samples = _chosen(FaceFolder(folders["lfw"]), cfg.split, splits["face"])
        face = embed_faces(bundle, face_samples, cache_dir, cfg.workers)
    if "speechocean762" in folders:
        voice_samples = _chosen(SpeechFolder(folders["speechocean762"]), cfg.split,
                                splits["voice"])
        voice = embed_voices(bundle, voice_samples,
                             Enroller(bundle, detector, gate, min_speech_s=cfg.min_speech_s),
                             probe_s=cfg.voice_probe_s,
                             other_lengths=cfg.voice_probe_lengths if cfg.voice_probe_s else ())
    if "grid" in folders:
        clips = ClipFolder(folders["grid"]).samples
    parts, people, info = held_out_trials(face, voice, cfg.n_face, cfg.n_voice, cfg.seed,
                                          cfg.max_probes, cfg.voice_enrol_s)
    from calibration.grid_sets import grid_halves, grid_trials

    halves, grid_skipped = grid_halves(
        bundle, clips, Enroller(bundle, detector, gate, min_speech_s=cfg.grid_min_speech_s)) \
        if clips else ([], [])
    for enrol_half in ((0, 1) if cfg.grid_reverse and halves else (0,) if halves else ()):
        parts.update(grid_trials(bundle, halves, enrol_half))
    if "grid" in folders and not any(k.startswith("grid/") for k in parts):
        why = f"GRID: fewer than 2 clips usable in {folders['grid']}: {grid_skipped}"
        if not partial:
            raise DatasetError(why)
        missing["grid"] = why
    manifests = {k: manifest_hash(samples, folders[k]) for k, samples in
                 (("lfw", face_samples), ("speechocean762", voice_samples), ("grid", clips))
                 if k in folders}
    protocol = {"config": cfg.to_dict(), "splits": splits, "data": manifests,
                "vad": gate.backend}
    digest = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()
    info.update({
        "protocol": protocol,
        "samples": {"face": len(face.identities), "voice": len(voice.identities),
                    "grid_halves": len(halves)},
        "grid_probe_seconds": [{"clip": x.identity, "half": x.half,
                                "voice_seconds": round(x.voice_seconds, 3)} for x in halves],
        "skipped": {"face": len(face.skipped), "voice": len(voice.skipped),
                    "grid": grid_skipped, "voice_examples": voice.skipped[:3]},
        "parts": {k: _counts(v) for k, v in sorted(parts.items())},
        "cross_modal": list(bundle.cross_modal) or None,
        "vad_note": gate.note,
        "missing_data": missing,
    })
    if not bundle.cross_modal:
        from edge_runtime.models import tier_heads

        heads = "/".join(tier_heads(bundle.face_tier, bundle.voice_tier))
        info["cross_modal_note"] = (f"cross-modal unavailable: the manifest has no {heads} "
                                    "models, so no PIN or FAA scores were made")
    return ScoreSets(parts, info, digest, people, {"face": face, "voice": voice}, cfg, cfg.seed)
