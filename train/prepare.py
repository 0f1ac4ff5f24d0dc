"""Turn a dataset folder into training arrays: aligned crops / audio plus teacher targets.

The teachers are the expensive part (the ONNX port of dlib's face ResNet, see
benchmarks/dlib_onnx.md; Resemblyzer at tens of ms per window on this CPU), so every per-file
result goes through `ArrayCache`, keyed by the file's sha256, what was computed and the
producer version. Work is split over processes in chunks:
each chunk loads its own detector and teacher, so nothing unpicklable crosses processes and
no module-level state is needed. Workers are spawned, not forked: a fork of a process that
has started torch's thread pools can deadlock.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from edge_runtime.errors import DatasetError, MediaError
from edge_runtime.frontend.audio import load_audio
from edge_runtime.frontend.face import DlibHogDetector, detect_and_align, load_image
from edge_runtime.frontend.features import STUDENT_FACE_INPUT, FaceInput, VoiceFrontEnd, face_grey
from train.cache import ArrayCache
from train.datasets import Sample, file_sha256

log = logging.getLogger(__name__)

FACE_PREP_VERSION = "align112-dlib5-v1"
# Which implementation of dlib's face ResNet labels faces: the ONNX port (the teacher) or
# dlib's own code (the reference the port is checked against).
FACE_TEACHERS = ("onnx", "dlib")


@dataclass
class FaceSet:
    """Aligned grey crops with their teacher targets (teacher may be absent: eval-only sets)."""

    samples: list[Sample]
    crops: np.ndarray  # (N, 112, 112) uint8 grey, or (N, S, S, 3) RGB (`FaceInput.stored`)
    teacher: np.ndarray | None  # (N, 128) float32
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def identities(self) -> list[str]:
        return [s.identity for s in self.samples]


@dataclass
class VoiceSet:
    """16 kHz utterances, with per-window and per-utterance teacher targets."""

    samples: list[Sample]
    audio: list[np.ndarray]
    window_starts: list[np.ndarray]  # sample offsets of each teacher window, per utterance
    window_teacher: list[np.ndarray] | None  # (W_i, 256) per utterance
    utterance_teacher: np.ndarray | None  # (N, 256)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def identities(self) -> list[str]:
        return [s.identity for s in self.samples]


def _face_chunk(paths: list[str], with_teacher: bool, cache_dir: str, impl: str = "onnx",
                face_input: dict | None = None) -> list[dict[str, np.ndarray] | str]:
    detector = DlibHogDetector()
    chips = FaceInput.from_meta(face_input) if face_input is not None else None
    teacher = None
    if with_teacher:
        from train.teachers import DlibFaceTeacher, FaceTeacher

        teacher = FaceTeacher(cache_dir) if impl == "onnx" else DlibFaceTeacher()
    out: list[dict[str, np.ndarray] | str] = []
    for path in paths:
        try:
            image = load_image(path)
            aligned, det = detect_and_align(image, detector, source=path)
        except MediaError as exc:
            out.append(str(exc))
            continue
        item = {"crop": face_grey(aligned) if chips is None else chips.stored(chips.crop(image, det))}
        if teacher is not None:
            item["emb"] = teacher.embed(image, det)
        out.append(item)
    return out


def _voice_chunk(
    paths: list[str], front_end: VoiceFrontEnd, with_teacher: bool
) -> list[dict[str, np.ndarray] | str]:
    teacher = None
    if with_teacher:
        import torch

        from train.teachers import VoiceTeacher

        # One intra-op thread per worker: parallelism comes from the workers, and torch's
        # spinning thread pool is many times slower on a loaded CPU.
        torch.set_num_threads(1)
        teacher = VoiceTeacher()
    n = front_end.window_samples
    hop = front_end.hop_frames * front_end.mel.hop_length
    out: list[dict[str, np.ndarray] | str] = []
    for path in paths:
        try:
            wav = load_audio(path)
        except MediaError as exc:
            out.append(str(exc))
            continue
        if len(wav) < n:
            wav = np.resize(wav, n)  # wrap-pad, as the front-end does for short probes
        starts = np.arange(0, len(wav) - n + 1, hop, dtype=np.int64)
        item: dict[str, np.ndarray] = {"starts": starts}
        if teacher is not None:
            item["win"] = np.stack([teacher.embed(wav[s : s + n]) for s in starts])
            item["utt"] = teacher.embed(wav)
        out.append(item)
    return out


def _run_cached(
    samples: Sequence[Sample],
    cache: ArrayCache,
    what: str,
    version: str,
    work: Callable[..., list[dict[str, np.ndarray] | str]],
    work_args: tuple,
    *,
    workers: int,
    chunk: int,
    label: str,
) -> list[dict[str, np.ndarray] | str]:
    """Fill `cache` for every sample (in parallel chunks), return results in sample order."""
    shas = [file_sha256(s.path) for s in samples]
    keys = [ArrayCache.key(sha, what, version) for sha in shas]
    results: list[dict[str, np.ndarray] | str | None] = [cache.get(k) for k in keys]
    for i, r in enumerate(results):
        if r is not None and "error" in r:
            results[i] = str(r["error"])
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
        with Progress(console=Console(stderr=True)) as progress:
            task = progress.add_task(
                f"{label} ({len(todo)} new, {len(samples) - len(todo)} cached)", total=len(todo)
            )

            def store(idx: list[int], batch: list[dict[str, np.ndarray] | str]) -> None:
                rows = []
                for i, r in zip(idx, batch, strict=True):
                    results[i] = r
                    rows.append((keys[i], {"error": np.array(r)} if isinstance(r, str) else r))
                cache.put_many(rows)
                progress.advance(task, len(idx))

            if workers <= 1 or len(chunks) == 1:  # not worth starting processes
                for idx in chunks:
                    store(idx, work([str(samples[i].path) for i in idx], *work_args))
            else:
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    futures = {
                        pool.submit(work, [str(samples[i].path) for i in idx], *work_args): idx
                        for idx in chunks
                    }
                    for fut in as_completed(futures):
                        store(futures[fut], fut.result())
    return results  # type: ignore[return-value]


def prepare_faces(
    samples: Sequence[Sample],
    cache_dir: str | Path,
    *,
    with_teacher: bool = True,
    workers: int = 2,
    chunk: int = 64,
    teacher_impl: str = "onnx",
    face_input: FaceInput = STUDENT_FACE_INPUT,
) -> FaceSet:
    """Detect, align and (optionally) embed with the teacher every face image.

    `teacher_impl` "dlib" labels with dlib's own code instead of the ONNX port (reference runs).
    `face_input`: the crop kept per image (default the students' grey ArcFace 112 crop; the
    large tier's 150x150 RGB dlib chip), made by the runtime's own `FaceInput.crop`.
    """
    from train.teachers import DlibFaceTeacher, FaceTeacher

    if teacher_impl not in FACE_TEACHERS:
        raise ValueError(f"teacher_impl must be one of {FACE_TEACHERS}, got {teacher_impl!r}")
    impl = FaceTeacher if teacher_impl == "onnx" else DlibFaceTeacher
    default = face_input == STUDENT_FACE_INPUT
    version = (FACE_PREP_VERSION if default else f"{face_input.key}-dlib5-v1") + \
        ("|" + impl.version_string() if with_teacher else "")
    what = "face+teacher" if with_teacher else "face"
    cache = ArrayCache(Path(cache_dir) / "faces.sqlite")
    try:
        results = _run_cached(samples, cache, what, version, _face_chunk,
                              (with_teacher, str(cache_dir), teacher_impl,
                               None if default else face_input.to_dict()),
                              workers=workers, chunk=chunk, label="faces")
    finally:
        cache.close()
    kept, crops, embs, skipped = [], [], [], []
    for s, r in zip(samples, results, strict=True):
        if isinstance(r, str):
            skipped.append((s.path, r))
            continue
        kept.append(s)
        crops.append(r["crop"])
        if with_teacher:
            embs.append(r["emb"])
    if skipped:
        log.warning("%d of %d face images skipped (no face or unreadable)", len(skipped), len(samples))
    if not kept:
        raise DatasetError("no usable face in the given samples")
    return FaceSet(kept, np.stack(crops), np.stack(embs) if with_teacher else None, skipped)


def prepare_voices(
    samples: Sequence[Sample],
    cache_dir: str | Path,
    front_end: VoiceFrontEnd,
    *,
    with_teacher: bool = True,
    workers: int = 2,
    chunk: int = 16,
) -> VoiceSet:
    """Load 16 kHz audio and (optionally) the teacher's window and utterance embeddings."""
    from train.teachers import VoiceTeacher

    fe = front_end.to_dict()
    version = f"win{fe['window_frames']}x{fe['hop_frames']}@{fe['mel']['hop_length']}"
    if with_teacher:
        version += "|" + VoiceTeacher.version_string()
    cache = ArrayCache(Path(cache_dir) / "voices.sqlite")
    what = "voice+teacher" if with_teacher else "voice"
    try:
        results = _run_cached(samples, cache, what, version, _voice_chunk,
                              (front_end, with_teacher), workers=workers, chunk=chunk,
                              label="voices")
    finally:
        cache.close()
    kept, audio, starts, wins, utts, skipped = [], [], [], [], [], []
    n = front_end.window_samples
    for s, r in zip(samples, results, strict=True):
        if isinstance(r, str):
            skipped.append((s.path, r))
            continue
        wav = load_audio(s.path)
        kept.append(s)
        audio.append(wav if len(wav) >= n else np.resize(wav, n))
        starts.append(r["starts"])
        if with_teacher:
            wins.append(r["win"])
            utts.append(r["utt"])
    if skipped:
        log.warning("%d of %d utterances skipped", len(skipped), len(samples))
    if not kept:
        raise DatasetError("no usable utterance in the given samples")
    return VoiceSet(kept, audio, starts, wins if with_teacher else None,
                    np.stack(utts) if with_teacher else None, skipped)
