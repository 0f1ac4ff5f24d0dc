"""Teacher-labelled augmented views of face images, for identity-free face distillation.

Every training image gets `n_views` views: view 0 is the clean image, the others are drawn
from `ViewAugment` (flip, colour jitter, grey, blur, JPEG, low light, misaligned 5 landmarks,
occlusion). The teacher labels each view itself, so an augmentation that changes what the
teacher sees (occlusion, a dark noisy frame, a shifted alignment) is matched, not assumed
invariant. A view's parameters are drawn from a generator seeded by the file's content hash
and the view index, so they are the same on every run and machine; each teacher embedding is
cached under (file sha256, view parameters, landmarks, teacher version), so a second run
calls neither the detector nor the teacher.

Views are rendered on the source image (before alignment): the student's 112x112 colour crop
(`align_face`) and the teacher's own chip (`teacher.embed(image, detection)`) are then cut
from the same augmented picture with the same (possibly misaligned) landmarks. The teacher is
anything with `dim`, `version` and `embed(image, detection)` (`train.teachers.FaceTeacher`,
dlib now, its ONNX port later): nothing here depends on how it computes its embedding.
Only the landmarks, view parameters and embeddings are kept in memory; images are decoded
again for each batch (about 1 ms for a 200x200 JPEG), which keeps 30 k faces in ~100 MB.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from edge_runtime.errors import ConfigError, DatasetError, MediaError
from edge_runtime.frontend.face import (
    FaceDetection,
    align_face,
    alignment_matrix,
    alignment_points,
    choose_face,
    load_image,
    transform_points,
)
from edge_runtime.frontend.features import face_tensor, l2_normalise
from train.cache import ArrayCache
from train.datasets import Sample, file_sha256
from train.datasets.utkface import UTKFace, is_unlabelled

log = logging.getLogger(__name__)

VIEW_VERSION = "view-render-v1"
DETECTOR_VERSION = "dlib-hog-5pt-v1"
DEFAULT_TEACHER = "train.teachers:FaceTeacher"
# dlib's 5 points: (0, 1) one eye's outer/inner corner, (2, 3) the other's, 4 the nose base.
_MIRROR = [2, 3, 0, 1, 4]
_IOD_112 = 35.0  # eye-centre distance in the 112 template (ArcFace layout)


class ViewTeacher(Protocol):
    """What the labelling needs from a teacher."""

    dim: int
    version: str

    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray: ...


@dataclass(frozen=True)
class ViewParams:
    """One view's augmentation; the identity view is all defaults."""

    flip: bool = False
    landmark_shift: tuple[float, ...] = ()  # 10 values, in inter-ocular distances
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance
    saturation: float = 1.0
    brightness: float = 0.0  # added, in units of 255
    contrast: float = 1.0
    grey: bool = False
    gamma: float = 1.0  # > 1 darkens (low light), with `dark_gain` and sensor noise
    dark_gain: float = 1.0
    noise_sigma: float = 0.0
    blur_sigma: float = 0.0  # in pixels of the 112 crop
    jpeg_quality: int = 0  # 0 = not re-encoded
    occlusion: tuple[float, float, float, float] = ()  # (x0, y0, x1, y1) in the 112 crop
    occlusion_value: int = 0
    seed: int = 0  # sensor-noise seed

    def key(self) -> str:
        """Stable short hash of the parameters (cache key part)."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewParams:
        """Inverse of `dataclasses.asdict` (tuples restored)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _r(x: float) -> float:
    return round(float(x), 4)


@dataclass(frozen=True)
class ViewAugment:
    """How augmented views are drawn (probabilities and ranges; `train/configs` sets them)."""

    flip_p: float = 0.5
    landmark_shift: float = 0.03  # std of each landmark's shift, in inter-ocular distances
    colour_p: float = 0.8
    brightness: float = 0.15
    contrast: float = 0.3
    saturation: tuple[float, float] = (0.5, 1.5)
    gain: float = 0.1
    grey_p: float = 0.15
    low_light_p: float = 0.2
    gamma: tuple[float, float] = (1.4, 2.2)
    dark_gain: tuple[float, float] = (0.35, 0.8)
    noise_sigma: tuple[float, float] = (2.0, 8.0)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (15, 60)
    occlusion_p: float = 0.2
    seed: int = 0

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> ViewAugment:
        """From a config mapping; unknown keys are refused by name."""
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"views.augment: unknown key(s) {bad}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def params(self, sha: str, view: int) -> ViewParams:
        """The parameters of view `view` of the file with content hash `sha` (0 = clean)."""
        if view == 0:
            return ViewParams()
        seed = int(hashlib.sha256(f"{sha}|{view}|{self.seed}".encode()).hexdigest()[:15], 16)
        g = np.random.default_rng(seed)
        p: dict[str, Any] = {"seed": int(g.integers(0, 2**31 - 1)),
                             "flip": bool(g.random() < self.flip_p),
                             "landmark_shift": tuple(_r(v) for v in g.normal(0, self.landmark_shift, 10))}
        if g.random() < self.colour_p:
            p["gains"] = tuple(_r(v) for v in 1.0 + g.uniform(-self.gain, self.gain, 3))
            p["saturation"] = _r(g.uniform(*self.saturation))
            p["brightness"] = _r(g.uniform(-self.brightness, self.brightness))
            p["contrast"] = _r(1.0 + g.uniform(-self.contrast, self.contrast))
        p["grey"] = bool(g.random() < self.grey_p)
        if g.random() < self.low_light_p:
            p["gamma"] = _r(g.uniform(*self.gamma))
            p["dark_gain"] = _r(g.uniform(*self.dark_gain))
            p["noise_sigma"] = _r(g.uniform(*self.noise_sigma))
        if g.random() < self.blur_p:
            p["blur_sigma"] = _r(g.uniform(*self.blur_sigma))
        if g.random() < self.jpeg_p:
            p["jpeg_quality"] = int(g.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        if g.random() < self.occlusion_p:
            if g.random() < 0.5:  # a mask over mouth and chin, or a scarf
                y0 = float(g.uniform(66, 80))
                p["occlusion"] = (0.0, _r(y0), 112.0, 112.0)
            else:  # a block anywhere (hand, cup, sunglasses band)
                w, h = g.uniform(25, 50, 2)
                x0, y0 = g.uniform(0, 112 - w), g.uniform(0, 112 - h)
                p["occlusion"] = (_r(x0), _r(y0), _r(x0 + w), _r(y0 + h))
            p["occlusion_value"] = int(g.integers(0, 256))
        return ViewParams(**p)


def _iod(landmarks: np.ndarray) -> float:
    a = alignment_points(landmarks)
    return float(max(np.linalg.norm(a[0] - a[1]), 1.0))


def render_view(image: np.ndarray, landmarks: np.ndarray, p: ViewParams) -> tuple[np.ndarray, np.ndarray]:
    """The augmented RGB picture and its (possibly misaligned) landmarks."""
    img = np.ascontiguousarray(image)
    lm = np.asarray(landmarks, dtype=np.float64).copy()
    if p.flip:
        img = np.ascontiguousarray(img[:, ::-1])
        lm[:, 0] = img.shape[1] - 1 - lm[:, 0]
        lm = lm[_MIRROR]
    iod = _iod(lm)
    if p.landmark_shift:
        lm = lm + np.asarray(p.landmark_shift, dtype=np.float64).reshape(5, 2) * iod
    if p.occlusion:
        x0, y0, x1, y1 = p.occlusion
        inv = cv2.invertAffineTransform(alignment_matrix(lm, 112))
        poly = transform_points(inv, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        img = img.copy()
        cv2.fillConvexPoly(img, np.round(poly).astype(np.int32), (p.occlusion_value,) * 3)
    x = img.astype(np.float32)
    if p.gains != (1.0, 1.0, 1.0) or p.saturation != 1.0:
        x = x * np.asarray(p.gains, dtype=np.float32)
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * np.float32(p.saturation)
    if p.contrast != 1.0 or p.brightness != 0.0:
        x = (x - 128.0) * np.float32(p.contrast) + 128.0 + np.float32(255.0 * p.brightness)
    if p.grey:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if p.gamma != 1.0 or p.dark_gain != 1.0:
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** np.float32(p.gamma) * np.float32(p.dark_gain)
    if p.noise_sigma > 0:
        noise = np.random.default_rng(p.seed).normal(0, p.noise_sigma, x.shape[:2])
        x = x + noise[:, :, None].astype(np.float32)  # luminance noise, as a sensor's
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if p.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), p.blur_sigma * iod / _IOD_112)
    if p.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality])
        if not ok:
            raise MediaError("JPEG re-encoding of an augmented view failed")
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(out), lm.astype(np.float32)


def detection_from_landmarks(landmarks: np.ndarray) -> FaceDetection:
    """A detection around given landmarks (the teacher's chip uses the points, not the box)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    c = lm.mean(axis=0)
    r = 1.5 * _iod(lm)
    return FaceDetection(box=(float(c[0] - r), float(c[1] - r), float(c[0] + r), float(c[1] + r)),
                         landmarks=lm, score=1.0)


def student_crop(image: np.ndarray, landmarks: np.ndarray, p: ViewParams) -> np.ndarray:
    """The 112x112 RGB crop the student sees for this view."""
    img, lm = render_view(image, landmarks, p)
    return align_face(img, lm, 112)


def _teacher_class(spec: str) -> Any:
    mod, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"views.teacher {spec!r} cannot be loaded (expected module:Class): {exc}") from exc


def load_teacher(spec: str) -> ViewTeacher:
    """`module:Class` -> an instance (a string, so it crosses process boundaries)."""
    return _teacher_class(spec)()


def teacher_version(spec: str) -> str:
    """The teacher's version string without loading its network when it offers that."""
    cls = _teacher_class(spec)
    if hasattr(cls, "version_string"):
        return str(cls.version_string())
    return str(cls().version)


def _label_chunk(jobs: list[tuple[str, np.ndarray | None, list[tuple[int, dict]]]],
                 teacher_spec: str) -> list[dict[str, Any] | str]:
    """Worker: detect (when needed), render and embed every requested view of each file."""
    import torch as _torch

    from edge_runtime.frontend.face import DlibHogDetector

    _torch.set_num_threads(1)
    detector = None
    teacher = load_teacher(teacher_spec)
    out: list[dict[str, Any] | str] = []
    for path, lm, views in jobs:
        try:
            image = load_image(path)
            if lm is None:
                detector = detector or DlibHogDetector()
                lm = choose_face(detector.detect(image), image.shape, "largest", source=path).landmarks
            embs = {}
            for v, pd in views:
                img, vlm = render_view(image, lm, ViewParams.from_dict(pd))
                embs[v] = np.asarray(teacher.embed(img, detection_from_landmarks(vlm)), dtype=np.float32)
        except MediaError as exc:
            out.append(str(exc))
            continue
        out.append({"landmarks": np.asarray(lm, dtype=np.float32), "views": embs})
    return out


@dataclass
class LabelledViews:
    """Images with landmarks, their views' parameters and the teacher's embedding of each view."""

    samples: list[Sample]
    landmarks: np.ndarray  # (N, 5, 2) float32
    params: list[list[ViewParams]]  # N x V
    teacher: np.ndarray  # (N, V, dim) float32
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    computed: int = 0  # teacher calls this run (0 when all came from the cache)


def label_views(samples: Sequence[Sample], cache_dir: str | Path, augment: ViewAugment, n_views: int,
                *, teacher: str = DEFAULT_TEACHER, workers: int = 1, chunk: int = 32,
                label: str = "views") -> LabelledViews:
    """Landmarks and teacher embeddings of `n_views` views of every sample, through the cache."""
    if n_views < 1:
        raise ConfigError(f"views.per_image must be >= 1, got {n_views}")
    tver = teacher_version(teacher)
    cache = ArrayCache(Path(cache_dir) / "face_views.sqlite")
    try:
        shas = [file_sha256(s.path) for s in samples]
        params = [[augment.params(sha, v) for v in range(n_views)] for sha in shas]
        lm_keys = [ArrayCache.key(sha, "landmarks5", DETECTOR_VERSION) for sha in shas]
        landmarks: list[np.ndarray | str | None] = []
        for k in lm_keys:
            r = cache.get(k)
            landmarks.append(None if r is None else str(r["error"]) if "error" in r else r["lm"])
        embs: list[dict[int, np.ndarray]] = [{} for _ in samples]

        def view_key(i: int, v: int, lm: np.ndarray) -> str:
            lm_hash = hashlib.sha1(np.asarray(lm, dtype=np.float32).tobytes()).hexdigest()[:12]
            return ArrayCache.key(shas[i], f"view:{params[i][v].key()}:{lm_hash}", f"{VIEW_VERSION}|{tver}")

        jobs: list[int] = []
        for i, lm in enumerate(landmarks):
            if isinstance(lm, str):
                continue
            if lm is not None:
                for v in range(n_views):
                    r = cache.get(view_key(i, v, lm))
                    if r is not None:
                        embs[i][v] = r["emb"]
            if lm is None or len(embs[i]) < n_views:
                jobs.append(i)
        computed = 0
        if jobs:
            n_new = sum(n_views - len(embs[i]) for i in jobs)
            chunks = [jobs[j : j + chunk] for j in range(0, len(jobs), chunk)]
            with Progress(console=Console(stderr=True)) as progress:
                bar = progress.add_task(f"{label}: teacher on {n_new} new views "
                                        f"({len(samples) * n_views - n_new} cached)", total=n_new)

                def payload(idx: list[int]) -> list[tuple[str, np.ndarray | None, list[tuple[int, dict]]]]:
                    return [(str(samples[i].path), landmarks[i],  # type: ignore[misc]
                             [(v, asdict(params[i][v])) for v in range(n_views) if v not in embs[i]])
                            for i in idx]

                def store(idx: list[int], results: list[dict[str, Any] | str]) -> None:
                    nonlocal computed
                    rows: list[tuple[str, dict[str, np.ndarray]]] = []
                    done = 0
                    for i, r in zip(idx, results, strict=True):
                        need = n_views - len(embs[i])
                        done += need
                        if isinstance(r, str):
                            landmarks[i] = r
                            rows.append((lm_keys[i], {"error": np.array(r)}))
                            continue
                        landmarks[i] = r["landmarks"]
                        rows.append((lm_keys[i], {"lm": r["landmarks"]}))
                        for v, e in r["views"].items():
                            embs[i][v] = e
                            rows.append((view_key(i, v, r["landmarks"]), {"emb": e}))
                            computed += 1
                    cache.put_many(rows)
                    progress.advance(bar, done)
                    if not progress.console.is_terminal:  # detached run: the log gets lines
                        t = progress.tasks[0]
                        progress.console.print(f"{label}: {int(t.completed)}/{n_new} views, "
                                               f"{(t.speed or 0):.1f}/s, {t.time_remaining or 0:.0f} s left")

                if workers <= 1 or len(chunks) == 1:
                    for idx in chunks:
                        store(idx, _label_chunk(payload(idx), teacher))
                else:
                    ctx = multiprocessing.get_context("spawn")
                    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                        futures = {pool.submit(_label_chunk, payload(idx), teacher): idx for idx in chunks}
                        for fut in as_completed(futures):
                            store(futures[fut], fut.result())
    finally:
        cache.close()
    keep = [i for i, lm in enumerate(landmarks) if not isinstance(lm, str)]
    skipped = [(samples[i].path, str(landmarks[i])) for i in range(len(samples)) if isinstance(landmarks[i], str)]
    if skipped:
        log.warning("%s: %d of %d images skipped (no face found or unreadable), e.g. %s: %s", label,
                    len(skipped), len(samples), skipped[0][0], skipped[0][1])
    if not keep:
        raise DatasetError(f"{label}: no usable face among {len(samples)} images")
    return LabelledViews([samples[i] for i in keep],
                         np.stack([np.asarray(landmarks[i], dtype=np.float32) for i in keep]),
                         [params[i] for i in keep],
                         np.stack([np.stack([embs[i][v] for v in range(n_views)]) for i in keep]),
                         skipped, computed)


def unlabelled_samples(roots: Sequence[str | Path], limit: int | None, seed: int) -> list[Sample]:
    """UTKFace images of the given folders, a seeded random `limit` of them if set."""
    out: list[Sample] = []
    for root in roots:
        out.extend(UTKFace(root).samples)
    if limit is not None and limit < len(out):
        pick = np.sort(np.random.default_rng(seed).choice(len(out), int(limit), replace=False))
        out = [out[i] for i in pick]
    return out


class ViewFaceTask:
    """Face distillation on teacher-labelled views of LFW training people plus unlabelled faces.

    Each epoch visits every image once, in a random one of its views. Labels: the identity
    index for LFW training people, -1 for unlabelled images (UTKFace): the identity term of
    the loss only sees the former. Validation: clean views of the LFW val people.
    """

    def __init__(self, train: LabelledViews, val: LabelledViews, colour: bool) -> None:
        self.train, self.val, self.colour = train, val, colour
        ids = [s.identity for s in train.samples]
        self.classes = sorted({i for i in ids if not is_unlabelled(i)})
        index = {n: k for k, n in enumerate(self.classes)}
        self.labels = np.array([index.get(i, -1) for i in ids], dtype=np.int64)
        self.teacher_mean = train.teacher.reshape(-1, train.teacher.shape[-1]).mean(axis=0)
        self.targets = l2_normalise(train.teacher - self.teacher_mean)  # (N, V, dim)
        self.n_views = train.teacher.shape[1]
        self.val_crops = np.stack([align_face(load_image(s.path), lm, 112)
                                   for s, lm in zip(val.samples, val.landmarks, strict=True)])

    @classmethod
    def build(cls, cfg: dict, samples: list[Sample], splits: dict, cache_dir: Path) -> ViewFaceTask:
        """Label (or read from the cache) every view of the train and val images."""
        vc = cfg["views"]
        augment = ViewAugment.from_config(vc.get("augment") or {})
        workers = int(cfg["train"]["workers"])
        teacher = vc.get("teacher", DEFAULT_TEACHER)
        train_ids, val_ids = set(splits["train"]), set(splits["val"])
        limit = vc.get("max_labelled")
        labelled = [s for s in samples if s.identity in train_ids]
        if limit is not None and limit < len(labelled):
            pick = np.sort(np.random.default_rng(int(cfg["seed"])).choice(len(labelled), int(limit), replace=False))
            labelled = [labelled[i] for i in pick]
        extra = unlabelled_samples(vc.get("unlabelled_roots") or [], vc.get("max_unlabelled"), int(cfg["seed"]))
        train = label_views(labelled + extra, cache_dir, augment, int(vc["per_image"]), teacher=teacher,
                            workers=workers, label="train views")
        val_samples = [s for s in samples if s.identity in val_ids]
        if vc.get("max_val") is not None and int(vc["max_val"]) < len(val_samples):  # smoke runs
            val_samples = val_samples[: int(vc["max_val"])]  # the first N, in name order
        val = label_views(val_samples, cache_dir, augment, 1, teacher=teacher, workers=workers,
                          label="val faces")
        Console(stderr=True).print(
            f"views: {len(train.samples)} train images ({sum(is_unlabelled(s.identity) for s in train.samples)} "
            f"unlabelled, {len(train.skipped)} without a face) x {vc['per_image']} views, "
            f"{len(val.samples)} val faces; teacher calls this run: {train.computed + val.computed}")
        return cls(train, val, bool(cfg["model"].get("colour", False)))

    def __len__(self) -> int:
        return len(self.train.samples)

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """Each image in one random view: its student crop, teacher target and label."""
        views = rng.integers(0, self.n_views, len(idx))
        crops = [student_crop(load_image(self.train.samples[i].path), self.train.landmarks[i],
                              self.train.params[i][v]) for i, v in zip(idx, views, strict=True)]
        return (torch.from_numpy(face_tensor(crops, colour=self.colour)),
                torch.from_numpy(self.targets[idx, views]), torch.from_numpy(self.labels[idx]))

    @torch.no_grad()
    def embed_val(self, model: nn.Module, device: torch.device) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Student embeddings of the clean val crops, centred teacher targets, identities."""
        out = []
        for i in range(0, len(self.val_crops), 128):
            x = torch.from_numpy(face_tensor(list(self.val_crops[i : i + 128]), colour=self.colour))
            out.append(model(x.to(device)).cpu().numpy())
        return (np.concatenate(out), l2_normalise(self.val.teacher[:, 0] - self.teacher_mean),
                [s.identity for s in self.val.samples])
