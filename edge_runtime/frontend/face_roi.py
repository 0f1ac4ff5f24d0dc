"""Region-of-interest face tracking: search near the last face, scan the full frame often.

A face at a door is large and moves little between frames, so after a full-frame detection
the next frames are searched only in a padded region around the last face, shrunk so the face
is about `face_px` wide (both detectors find faces from about 80 px): a fraction of the
pixels of the full frame. The landmarks still come from the full-resolution frame.

What keeps this from hiding a second person (the security choice, docs/dlib_port.md):

- the ROI is used only while the latest full-frame scan found EXACTLY ONE face; with two or
  more faces in view every frame is a full-frame scan, so the face policy (`largest`,
  `centre`, `deny`) sees every face on every frame, as without tracking;
- the full frame is scanned again every `rescan_every` frames (default 5: a third of a second
  at 15 fps), so a person who steps into view is seen within that many frames;
- a ROI search that finds no face, more than one face, a face touching the ROI's edge (moving
  out of it) or a face whose size jumped falls back to a full-frame scan of the same frame;
- what a ROI frame returns is the tracked face only: liveness (mouth movement) and identity
  are taken from the person the last full scan chose, never from a face the ROI happened to
  catch; a new frame size drops the track.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.face import FaceDetection, as_rgb

Box = tuple[float, float, float, float]


class RegionCapable(Protocol):
    """A detector that can also search a crop without resizing it and add landmarks later
    (`DlibHogDetector`, `MmodDetector`)."""

    def detect(self, image: np.ndarray) -> list[FaceDetection]: ...

    def raw_boxes(self, image: np.ndarray) -> list[tuple[Box, float]]: ...

    def landmarks(self, image: np.ndarray, box: Box, score: float) -> FaceDetection: ...


@dataclass(frozen=True)
class RoiSettings:
    """`pad`: ROI margin on each side, in face widths; `rescan_every`: a full-frame scan at
    least every this many frames; `face_px`: face width the ROI is shrunk to (never enlarged);
    `max_size_change`: a ROI face whose width changed more than this factor is not trusted."""

    pad: float = 0.6
    rescan_every: int = 5
    face_px: int = 96
    max_size_change: float = 1.5

    def __post_init__(self) -> None:
        if self.pad < 0.25 or self.rescan_every < 1 or self.face_px < 80 \
                or self.max_size_change <= 1.0:
            raise ConfigError("ROI settings: need pad >= 0.25, rescan_every >= 1, face_px >= 80 "
                              f"(the detectors' smallest face), max_size_change > 1; got {self}")


class RoiTracker:
    """Wraps a detector; `detect` has the detector's contract (faces, largest first)."""

    def __init__(self, detector: RegionCapable, settings: RoiSettings | None = None) -> None:
        self.detector = detector
        self.settings = settings or RoiSettings()
        self.counts: collections.Counter[str] = collections.Counter()  # why each frame ran so
        self.last_mode = ""
        self.reset()

    @property
    def kind(self) -> str | None:
        """The wrapped detector's kind: its landmarks, and so its AV-sync calibration (the
        shipped thresholds were measured on full-frame detections; see
        docs/face_detector_export.md before making tracking a default)."""
        return getattr(self.detector, "kind", None)

    def reset(self) -> None:
        """Forget the track: the next frame is a full-frame scan."""
        self._track: FaceDetection | None = None
        self._shape: tuple[int, ...] | None = None
        self._since_full = 0

    def region(self, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
        """The ROI (x0, y0, x1, y1 exclusive) for the current track, None without one."""
        if self._track is None:
            return None
        x0, y0, x1, y1 = self._track.box
        m = self.settings.pad * max(x1 - x0, y1 - y0)
        h, w = shape[:2]
        return (max(0, int(np.floor(x0 - m))), max(0, int(np.floor(y0 - m))),
                min(w, int(np.ceil(x1 + m)) + 1), min(h, int(np.ceil(y1 + m)) + 1))

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        img = as_rgb(image)
        if self._shape != img.shape:
            self.reset()
            self._shape = img.shape
        why = "full: no track" if self._track is None else (
            "full: periodic rescan" if self._since_full + 1 >= self.settings.rescan_every
            else None)
        if why is None:
            found, why = self._search_roi(img)
            if found is not None:
                self._since_full += 1
                self._track = found
                self.counts["roi"] += 1
                self.last_mode = "roi"
                return [found]
        dets = self.detector.detect(img)
        self.counts[why] += 1
        self.last_mode = why
        self._since_full = 0
        # several faces: no tracking until a full scan sees one face again
        self._track = dets[0] if len(dets) == 1 else None
        return dets

    def _search_roi(self, img: np.ndarray) -> tuple[FaceDetection | None, str]:
        assert self._track is not None
        region = self.region(img.shape)
        assert region is not None
        x0, y0, x1, y1 = region
        tx0, _, tx1, _ = self._track.box
        width = max(tx1 - tx0, 1.0)
        scale = min(1.0, self.settings.face_px / width)
        crop = img[y0:y1, x0:x1]
        if scale < 1.0:
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        sx, sy = (x1 - x0) / crop.shape[1], (y1 - y0) / crop.shape[0]
        boxes = self.detector.raw_boxes(np.ascontiguousarray(crop))
        if not boxes:
            return None, "full: ROI found no face"
        if len(boxes) > 1:
            return None, "full: ROI found several faces"
        (bx0, by0, bx1, by1), score = boxes[0]
        ch, cw = crop.shape[:2]
        if bx0 <= 1 or by0 <= 1 or bx1 >= cw - 2 or by1 >= ch - 2:
            # at the edge of the crop the face may be cut (or leaving): trust the full frame,
            # unless that edge is the frame's own edge
            at_frame_edge = ((bx0 <= 1 and x0 == 0) or (by0 <= 1 and y0 == 0)
                             or (bx1 >= cw - 2 and x1 == img.shape[1])
                             or (by1 >= ch - 2 and y1 == img.shape[0]))
            if not at_frame_edge:
                return None, "full: face at the ROI edge"
        box = (x0 + bx0 * sx, y0 + by0 * sy, x0 + bx1 * sx, y0 + by1 * sy)
        ratio = (box[2] - box[0]) / width
        if not 1 / self.settings.max_size_change <= ratio <= self.settings.max_size_change:
            return None, "full: face size jumped"
        return self.detector.landmarks(img, box, score), ""
