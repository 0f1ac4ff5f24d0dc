"""dlib's MMOD CNN face detector run as an ONNX network: pyramid and NMS in numpy, CNN outside.

The network (`models/face_detector.onnx`, ported from `mmod_human_face_detector.dat` by
`export/dlib`) is fully convolutional: RGB pixels (1, 3, H, W) -> one score map at 1/8 of the
input. Everything around it is done here the way dlib's `loss_mmod` + `input_rgb_image_pyramid
<pyramid_down<6>>` do it, so boxes match dlib's own CNN detector:

- the frame and its 5/6-scaled copies (down to 5 rows) are tiled into one image, 10 px apart
  with an 11 px outer border, the gaps filled with the network's mean colour (dlib zeroes the
  mean-subtracted tensor); each level is an align-corners bilinear resize of the previous one;
- every score above `adjust_threshold` is a detection: output cell (c, r) maps to input pixel
  (8c + 14, 8r + 14), the centre of an 80x80 window, which is mapped back from the tile of
  its pyramid level to frame coordinates (x * 6/5 + 0.3 per level);
- non-maximum suppression, best first: a box is dropped if its intersection over the area of
  the rectangle bounding both exceeds 0.338 (dlib's test_box_overlap and the file's options).

The runtime works at a reduced resolution: a face at a door is large, so the frame is shrunk
to `max_side` before detection and the boxes scaled back. The 5-point landmarks still come
from dlib's shape predictor on the full frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np

from edge_runtime.errors import ModelError
from edge_runtime.frontend.face import (
    FIVE_POINT_DAT,
    FaceDetection,
    as_rgb,
    load_shape_predictor,
)

# dlib's MMOD face model: pyramid_down<6>, 80x80 window, three stride-2 convolutions (5x5,
# no padding) under stride-1 ones: output (c, r) -> input (8c + 14, 8r + 14).
PYRAMID_RATE = 5.0 / 6.0
MIN_LEVEL_ROWS = 5
STRIDE, OFFSET = 8, 14
ROI_LEVELS = 3


class RunnerLike(Protocol):
    """What the detector needs of an `edge_runtime.backends` runner."""

    input_names: Sequence[str]
    output_names: Sequence[str]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _lround(v: float) -> int:
    """std::lround: halves away from zero (dlib's drectangle -> rectangle)."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


@dataclass(frozen=True)
class MmodConfig:
    """What the network file says about its input and its detections (ONNX metadata)."""

    mean_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298)
    window: tuple[int, int] = (80, 80)
    nms_iou: float = 0.3382761351109955
    nms_covered: float = 1.0
    pyramid_padding: int = 10
    pyramid_outer_padding: int = 11

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> MmodConfig:
        raw = meta.get("edgepin.mmod")
        if raw is None:
            raise ModelError("face detector ONNX lacks its 'edgepin.mmod' metadata; re-export it")
        d = json.loads(raw)
        return cls(tuple(d["mean_rgb"]), tuple(d["window"]), d["nms_iou"], d["nms_covered"],  # type: ignore[arg-type]
                   d["pyramid_padding"], d["pyramid_outer_padding"])


def pyramid_layout(nr: int, nc: int, padding: int = 10, outer: int = 11,
                   max_levels: int | None = None
                   ) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """dlib's tiled pyramid: (left, top, right, bottom) of each level, and the canvas (rows, cols).

    Levels go down the left column until the rest fits beside them, then up the right side
    from the bottom, as dlib's compute_tiled_image_pyramid_details places them. `max_levels`
    keeps only the first levels (the ROI tracker knows the face's size: a few levels suffice).
    """
    sizes = [(nc, nr)]
    w, h = nc, nr
    while max_levels is None or len(sizes) < max_levels:
        h, w = int(np.floor(PYRAMID_RATE * h)), int(np.floor(PYRAMID_RATE * w))
        if h * w == 0 or h < MIN_LEVEL_ROWS:
            break
        sizes.append((w, h))
    total = sum(h + padding for _, h in sizes) - 2 * padding
    height, prev_w = 0, 0
    for w, h in sizes:
        if w <= nc - prev_w - padding and (height - nr) * 2 >= total - nr:
            break
        height += h + padding
        prev_w = w
    height -= padding
    rects: list[tuple[int, int, int, int]] = []
    y = outer
    i = 0
    while y < height + outer and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer, y, outer + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        w, h = sizes[i]
        x1, y1 = outer + nc - 1, y - 1
        rect = (x1 - (w - 1), y1 - (h - 1), x1, y1)
        if not (rect[0] > first[2] or rect[2] < first[0] or rect[1] > first[3] or rect[3] < first[1]):
            break  # dlib stops rather than overlap the full-size level
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, (height + 2 * outer, nc + 2 * outer)


def _resize_align_corners(src: np.ndarray, h: int, w: int) -> np.ndarray:
    """dlib's resize_image (bilinear, corners on corners) of an HxWxC float32 image."""
    sh, sw = src.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = (n_in - 1) / max(n_out - 1, 1)
        pos = np.arange(n_out) * scale
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    top, bottom, fy = axis(h, sh)
    left, right, fx = axis(w, sw)
    rows = src[top] * (1 - fy)[:, None, None] + src[bottom] * fy[:, None, None]
    return rows[:, left] * (1 - fx)[None, :, None] + rows[:, right] * fx[None, :, None]


def tiled_pyramid(image: np.ndarray, cfg: MmodConfig, max_levels: int | None = None
                  ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """The network input (1, 3, H, W) float32 RGB pixels, and the level rectangles."""
    img = as_rgb(image).astype(np.float32)
    rects, (nr, nc) = pyramid_layout(img.shape[0], img.shape[1], cfg.pyramid_padding,
                                     cfg.pyramid_outer_padding, max_levels)
    canvas = np.empty((nr, nc, 3), np.float32)
    canvas[:] = np.asarray(cfg.mean_rgb, np.float32)
    level = img
    for i, (x0, y0, x1, y1) in enumerate(rects):
        if i > 0:
            level = _resize_align_corners(level, y1 - y0 + 1, x1 - x0 + 1)
        canvas[y0 : y1 + 1, x0 : x1 + 1] = level
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), rects


def working_image(image: np.ndarray, max_side: int | None = 320,
                  upsample_below: int | None = 200) -> tuple[np.ndarray, float]:
    """The image the network runs on at the runtime's settings, and its scale: shrunk to
    `max_side`, or enlarged 2x under `upsample_below` (faces of a small photo, AT&T's 92x112,
    are under the 80 px window)."""
    img = as_rgb(image)
    longest = max(img.shape[:2])
    if max_side is not None and longest > max_side:
        scale = max_side / longest
    elif upsample_below is not None and longest < upsample_below:
        scale = 2.0
    else:
        return img, 1.0
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp), scale


def _nearest_level(rects: Sequence[tuple[int, int, int, int]], x: float, y: float) -> int:
    px, py = np.floor(x + 0.5), np.floor(y + 0.5)
    best, best_d = 0, np.inf
    for i, (x0, y0, x1, y1) in enumerate(rects):
        if x0 <= px <= x1 and y0 <= py <= y1:
            return i
        d = np.hypot(np.clip(px, x0, x1) - px, np.clip(py, y0, y1) - py)
        if d < best_d:
            best, best_d = i, d
    return best


def _overlaps(a: np.ndarray, b: np.ndarray, iou: float, covered: float) -> bool:
    """dlib's test_box_overlap on integer rectangles (inclusive corners)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = float(iw * ih)
    outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return inner / outer > iou or inner / area_a > covered or inner / area_b > covered


def decode(scores: np.ndarray, rects: Sequence[tuple[int, int, int, int]], cfg: MmodConfig,
           adjust_threshold: float = 0.0) -> list[tuple[tuple[int, int, int, int], float]]:
    """Score map -> boxes (left, top, right, bottom; inclusive, frame pixels) after NMS."""
    s = np.asarray(scores, dtype=np.float32).reshape(scores.shape[-2:])
    rr, cc = np.nonzero(s > adjust_threshold)
    vals = s[rr, cc]
    order = np.argsort(-vals, kind="stable")
    half_w, half_h = (cfg.window[0] - 1) / 2.0, (cfg.window[1] - 1) / 2.0
    ratio = 1.0 / PYRAMID_RATE
    kept: list[np.ndarray] = []
    out: list[tuple[tuple[int, int, int, int], float]] = []
    for k in order:
        px, py = STRIDE * float(cc[k]) + OFFSET, STRIDE * float(rr[k]) + OFFSET
        box = np.array([px - half_w, py - half_h, px + half_w, py + half_h])
        level = _nearest_level(rects, px, py)
        box -= np.array(rects[level][:2] * 2, dtype=np.float64)
        for _ in range(level):
            box = box * ratio + 0.3
        ibox = np.array([_lround(v) for v in box])
        if any(_overlaps(kb, ibox, cfg.nms_iou, cfg.nms_covered) for kb in kept):
            continue
        kept.append(ibox)
        out.append(((int(ibox[0]), int(ibox[1]), int(ibox[2]), int(ibox[3])), float(vals[k])))
    return out


class MmodDetector:
    """dlib's CNN face detector as a network (any `Runner`: onnxruntime or TensorRT) + dlib's
    5-point landmarks. Build one with `edge_runtime.face_detectors.open_face_detector`.

    `max_side`: the frame is shrunk (never enlarged) so its longer side is at most this before
    detection (the network's cost grows with the pixel count; the smallest face it finds is
    about 80 px at the working resolution, so 320 finds faces from a third of a 640x480
    frame's height up). None: detect at full resolution. `upsample_below`: an image whose
    longer side is under this is enlarged 2x first (its faces would be under the window), as
    the HOG detector retries small images upsampled.
    """

    kind = "cnn"  # what a per-detector calibration (AV-sync liveness) is keyed by

    def __init__(self, runner: RunnerLike, cfg: MmodConfig, *, max_side: int | None = 320,
                 upsample_below: int | None = 200, adjust_threshold: float = 0.0,
                 predictor_path: str | Path | None = None) -> None:
        self._runner = runner
        self._input = runner.input_names[0]
        self._output = runner.output_names[0]
        self.cfg = cfg
        self._predictor, _ = load_shape_predictor(predictor_path, FIVE_POINT_DAT)
        self.max_side = max_side
        self.upsample_below = upsample_below
        self.adjust_threshold = adjust_threshold

    def boxes(self, image: np.ndarray, max_levels: int | None = None
              ) -> list[tuple[tuple[int, int, int, int], float]]:
        """Boxes at the image's own resolution, as dlib's cnn_face_detection_model_v1 gives them
        (with `max_levels`, only faces the first pyramid levels hold)."""
        x, rects = tiled_pyramid(image, self.cfg, max_levels)
        scores = self._runner.run({self._input: x})[self._output]
        return decode(scores, rects, self.cfg, self.adjust_threshold)

    def working_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image the network runs on at the runtime's settings, and its scale."""
        return working_image(image, self.max_side, self.upsample_below)

    def raw_boxes(self, image: np.ndarray, max_levels: int | None = ROI_LEVELS
                  ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Boxes in this image's pixels, no resizing, no landmarks: the ROI tracker's step,
        where the face is shrunk to about 96 px, so the first `max_levels` levels (faces of
        about 100 down to 65 px) hold it."""
        return [(tuple(float(v) for v in box), score)  # type: ignore[misc]
                for box, score in self.boxes(image, max_levels)]

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float],
                  score: float) -> FaceDetection:
        """dlib's 5 points for a box of the full-resolution frame."""
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(image, rect)
        if shape.num_parts != 5:
            raise ModelError("the landmark model must be dlib's 5-point one")
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return FaceDetection(box=box, landmarks=pts, score=score)

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        img = as_rgb(image)
        work, scale = self.working_image(img)
        found = [self.landmarks(img, (x0 / scale, y0 / scale, x1 / scale, y1 / scale), score)
                 for (x0, y0, x1, y1), score in self.boxes(work)]
        found.sort(key=lambda d: d.area, reverse=True)
        return found
