"""Frozen student embeddings for edge mode, computed once and cached on disk.

Keys are (file sha256, what, version) where the version names both students by their sha256
and every preparation setting, so a new student or a changed frame step never reuses stale
vectors. Faces go through the same detection/alignment (and crop cache) as distillation;
voices through the students' own front-end (utterance = L2-normalised mean of windows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.bundle import load_manifest, sha256_file
from edge_runtime.errors import ConfigError, MediaError, ModelError
from edge_runtime.frontend.features import STUDENT_FACE_INPUT
from train.cache import ArrayCache
from train.datasets import ClipFolder, Sample, file_sha256
from train.pins.data import (
    CrossModalSet,
    ModalTable,
    artificial_samples,
    describe_splits,
    grid_folds,
    grid_segments,
)

log = logging.getLogger(__name__)
CACHE_FILE = "pins_embeddings.sqlite"


@dataclass(frozen=True)
class Students:
    """The two frozen students the PIN heads sit on, pinned by content hash."""

    face: Path
    voice: Path
    face_sha256: str
    voice_sha256: str

    def meta(self) -> dict:
        return {"face": str(self.face), "voice": str(self.voice),
                "face_sha256": self.face_sha256, "voice_sha256": self.voice_sha256}


def resolve_students(folder: str | Path, face_tier: str = "student") -> Students:
    """face/voice ONNX of a models folder (through its manifest when it has one); the face
    model of ``face_tier`` (``large``: the manifest's ``face_large``)."""
    from edge_runtime.models import face_entry_name

    root = Path(folder)
    try:
        entries = load_manifest(root)
    except ModelError:
        entries = {}
    paths = {}
    face_name = face_entry_name(face_tier, "fp32")
    for name in (face_name, "voice"):
        if name in entries:
            paths[name] = entries[name].verified_path()
        else:
            p = root / f"{name}.onnx"
            if not p.is_file():
                raise ModelError(f"no {name} student in {root} (expected {p} or a manifest "
                                 f"entry {name!r})")
            paths[name] = p
    return Students(paths[face_name], paths["voice"], sha256_file(paths[face_name]),
                    sha256_file(paths["voice"]))


class StudentFeatures:
    """Embeds files with the frozen students, through an on-disk cache."""

    def __init__(self, students: Students, cache_dir: str | Path, *, threads: int = 2,
                 crops_with_teacher: bool = False, workers: int = 1) -> None:
        from train.evaluate import load_embedder

        self.students = students
        self.cache_dir = Path(cache_dir)
        self.face = load_embedder(str(students.face), "face", threads)
        # the crop of the face model (the student's 112 crop, or the large tier's dlib chip)
        self.face_input = getattr(self.face, "face_input", None) or STUDENT_FACE_INPUT
        self.voice = load_embedder(str(students.voice), "voice", threads)
        self.crops_with_teacher = crops_with_teacher
        self.workers = workers
        self.version = f"face:{students.face_sha256[:16]}|voice:{students.voice_sha256[:16]}"
        self.cache = ArrayCache(self.cache_dir / CACHE_FILE)
        self._detector: object | None = None  # built on first uncached clip (~0.5 s to load)

    def close(self) -> None:
        self.cache.close()

    def faces(self, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (K, 128), kept mask (N,)): images with no detectable face are dropped."""
        from train.prepare import prepare_faces

        shas = [file_sha256(s.path) for s in samples]
        keys = [ArrayCache.key(sha, "pins-face", self.version) for sha in shas]
        got = [self.cache.get(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        if todo:
            prepared = prepare_faces([samples[i] for i in todo], self.cache_dir,
                                     with_teacher=self.crops_with_teacher, workers=self.workers,
                                     face_input=self.face_input)
            by_path = {s.path: i for i, s in enumerate(prepared.samples)}
            emb = self.face.embed(list(prepared.crops))
            rows = []
            for i in todo:
                j = by_path.get(samples[i].path)
                got[i] = {"emb": emb[j]} if j is not None else {"none": np.zeros(1)}
                rows.append((keys[i], got[i]))
            self.cache.put_many(rows)
        kept = np.array(["emb" in g for g in got], dtype=bool)
        embs = [g["emb"] for g in got if "emb" in g]
        return (np.stack(embs) if embs else np.empty((0, 128), np.float32)), kept

    def voices(self, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        """(utterance embeddings (K, 256), kept mask (N,)): undecodable files are dropped."""
        from edge_runtime.frontend.audio import load_audio

        out, kept, rows = [], np.zeros(len(samples), dtype=bool), []
        for i, s in enumerate(samples):
            key = ArrayCache.key(file_sha256(s.path), "pins-voice", self.version)
            g = self.cache.get(key)
            if g is None:
                try:
                    g = {"emb": self.voice.embed([load_audio(s.path)])[0]}
                except MediaError as exc:
                    log.warning("%s: skipped (%s)", s.path, exc)
                    g = {"none": np.zeros(1)}
                rows.append((key, g))
                if len(rows) >= 64:
                    self.cache.put_many(rows)
                    rows = []
            if "emb" in g:
                out.append(g["emb"])
                kept[i] = True
        if rows:
            self.cache.put_many(rows)
        return (np.stack(out) if out else np.empty((0, 256), np.float32)), kept

    def clip(self, path: Path, gcfg: dict) -> dict[str, np.ndarray]:
        """One talking-face clip: face embeddings of every `frame_step`-th frame (with time)
        and voice embeddings of the audio segments of each half (with start/end)."""
        from edge_runtime.frontend.face import DlibHogDetector, choose_face, detect_and_align
        from edge_runtime.frontend.features import face_grey
        from edge_runtime.frontend.video import decode_clip

        version = (f"{self.version}|step{gcfg['frame_step']}|seg{gcfg['voice_segment_s']}"
                   f"/{gcfg['voice_hop_s']}|cut{gcfg['split_time_s']}")
        key = ArrayCache.key(file_sha256(path), "pins-clip", version)
        got = self.cache.get(key)
        if got is not None:
            return got
        clip = decode_clip(path)
        assert clip.audio is not None  # decode_clip(require_audio=True) guarantees it
        if self._detector is None:
            self._detector = DlibHogDetector()
        detector = self._detector
        crops, times = [], []
        for frame in clip.frames[:: int(gcfg["frame_step"])]:
            try:
                if self.face_input == STUDENT_FACE_INPUT:
                    aligned, _ = detect_and_align(frame.image, detector,  # type: ignore[arg-type]
                                                  source=f"{path}@{frame.t:.2f}")
                    crop = face_grey(aligned)
                else:
                    det = choose_face(detector.detect(frame.image),  # type: ignore[attr-defined]
                                      frame.image.shape, source=f"{path}@{frame.t:.2f}")
                    crop = self.face_input.stored(self.face_input.crop(frame.image, det))
            except MediaError:
                continue
            crops.append(crop)
            times.append(frame.t)
        if not crops:
            raise MediaError(f"{path}: no face found in any sampled frame")
        segs = grid_segments(clip.duration, float(gcfg["split_time_s"]),
                             float(gcfg["voice_segment_s"]), float(gcfg["voice_hop_s"]))
        sr = clip.sample_rate
        wavs = [clip.audio[int(round(a * sr)): int(round(b * sr))] for a, b, _ in segs]
        out = {"face_emb": self.face.embed(crops), "face_t": np.asarray(times, np.float64),
               "voice_emb": self.voice.embed(wavs),
               "voice_t": np.asarray([[a, b] for a, b, _ in segs], np.float64)}
        self.cache.put_many([(key, out)])
        return out


def grid_tables(root: Path, feats: StudentFeatures, gcfg: dict
                ) -> tuple[ModalTable, ModalTable, list[str], list[str]]:
    """GRID rows (REAL pairs) with roles: seen people's first part -> train, the rest ->
    seen; unseen people -> unseen. Returns (faces, voices, seen ids, unseen ids)."""
    reader = ClipFolder(root)
    seen, unseen = grid_folds(reader.identities(), int(gcfg["n_folds"]), int(gcfg["fold"]),
                              int(gcfg["seed"]))
    cut = float(gcfg["split_time_s"])
    ftabs, vtabs = [], []
    for s in reader.samples:
        c = feats.clip(s.path, gcfg)
        for emb, starts, tabs in ((c["face_emb"], c["face_t"], ftabs),
                                  (c["voice_emb"], c["voice_t"][:, 0], vtabs)):
            if s.identity in unseen:
                role = np.full(len(starts), "unseen", dtype=object)
            else:
                role = np.where(starts < cut - 1e-9, "train", "seen").astype(object)
            n = len(starts)
            tabs.append(ModalTable(emb, [s.identity] * n, [s.identity] * n, ["real"] * n, role,
                                   [f"{s.path}@{t:.2f}" for t in starts]))
    return (ModalTable.concat(ftabs, 128), ModalTable.concat(vtabs, 256), seen, unseen)


def _resolve(data_root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else data_root / p


def build_edge_set(data_root: str | Path, cfg: dict, feats: StudentFeatures) -> CrossModalSet:
    """All rows of an edge-mode experiment: GRID (real) and, if configured, the artificial
    LFW x speechocean762 pairing."""
    root = Path(data_root)
    dcfg = cfg["data"]
    ftabs, vtabs = [], []
    seen: list[str] = []
    unseen: list[str] = []
    if dcfg.get("grid"):
        f, v, seen, unseen = grid_tables(_resolve(root, dcfg["grid"]), feats,
                                         {**dcfg["grid_prep"], **cfg["split"]["grid"]})
        ftabs.append(f)
        vtabs.append(v)
    art = None
    if dcfg.get("faces") and dcfg.get("voices"):
        art = artificial_samples(_resolve(root, dcfg["faces"]), _resolve(root, dcfg["face_genders"]),
                                 _resolve(root, dcfg["voices"]),
                                 _resolve(root, dcfg["voice_genders"]), dcfg,
                                 cfg["split"]["artificial"])
        for samples, roles, fn, tabs, dim in (
                (art.faces, art.face_role, feats.faces, ftabs, 128),
                (art.voices, art.voice_role, feats.voices, vtabs, 256)):
            emb, kept = fn(samples)
            ks = [s for s, k in zip(samples, kept, strict=True) if k]
            kr = [r for r, k in zip(roles, kept, strict=True) if k]
            n = len(ks)
            tabs.append(ModalTable(emb.reshape(n, dim), [s.identity for s in ks],
                                   [s.identity for s in ks], ["artificial"] * n, kr,
                                   [str(s.path) for s in ks]))
    if not ftabs:
        raise ConfigError("pins config selects no data: set data.grid and/or data.faces+voices")
    return CrossModalSet(ModalTable.concat(ftabs, 128), ModalTable.concat(vtabs, 256),
                         describe_splits(cfg, seen, unseen, art))
