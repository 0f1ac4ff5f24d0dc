"""ROI face tracking (edge_runtime/frontend/face_roi.py) on real GRID fixture frames.

Which frames are searched how (full frame / ROI) is the behaviour under test; speed and
recall on all the GRID clips are in benchmarks/detector_export.md.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.face_detectors import open_cnn_detector, open_face_detector
from edge_runtime.frontend.face import DlibHogDetector, load_image
from edge_runtime.frontend.face_roi import RoiSettings, RoiTracker
from edge_runtime.frontend.video import decode_clip

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def frames(fixtures) -> list[np.ndarray]:
    clip = sorted((fixtures / "grid").glob("*.mpg"))[0]
    return [cv2.resize(f.image, (640, 480)) for f in decode_clip(clip).frames[:12]]


@pytest.fixture(scope="module")
def hog() -> DlibHogDetector:
    return DlibHogDetector()


def _with_second_face(frame: np.ndarray, fixtures: Path) -> np.ndarray:
    face = load_image(sorted((fixtures / "lfw").glob("*/*.jpg"))[0])
    out = frame.copy()
    crop = cv2.resize(face[50:200, 50:200], (213, 213))
    out[10:223, 417:630] = crop
    return out


def test_full_scan_first_then_roi_with_periodic_rescans(frames, hog):
    tracker = RoiTracker(hog, RoiSettings(rescan_every=4))
    modes = []
    for f in frames[:9]:
        found = tracker.detect(f)
        assert len(found) == 1
        modes.append(tracker.last_mode)
    assert modes == ["full: no track", "roi", "roi", "roi", "full: periodic rescan",
                     "roi", "roi", "roi", "full: periodic rescan"]
    # the tracked box stays on the full-frame detector's face, landmarks on the full frame
    full = hog.detect(frames[8])[0]
    tracker.detect(frames[8])
    roi = tracker.detect(frames[8])[0]
    assert tracker.last_mode == "roi"
    assert np.abs(np.subtract(roi.box, full.box)).max() < 0.15 * (full.box[2] - full.box[0])
    assert roi.landmarks.shape == (5, 2)
    assert np.all((roi.landmarks[:, 0] > roi.box[0]) & (roi.landmarks[:, 0] < roi.box[2]))


def test_falls_back_to_the_full_frame_when_the_roi_finds_nothing(frames, hog):
    tracker = RoiTracker(hog)
    tracker.detect(frames[0])
    moved = np.roll(frames[1], 230, axis=1)  # the face jumped out of the region
    moved[:, :230] = 0
    found = tracker.detect(moved)
    assert tracker.last_mode in ("full: ROI found no face", "full: face at the ROI edge")
    assert len(found) == 1 and found[0].box[0] > hog.detect(frames[1])[0].box[0] + 150
    blank = np.zeros_like(frames[0])
    assert tracker.detect(blank) == [] and tracker.last_mode.startswith("full")
    assert tracker.detect(frames[2]) and tracker.last_mode == "full: no track"


def test_a_second_face_is_seen_and_stops_roi_tracking(frames, hog, fixtures):
    tracker = RoiTracker(hog, RoiSettings(rescan_every=3))
    tracker.detect(frames[0])
    assert tracker.last_mode == "full: no track"
    two = [_with_second_face(f, fixtures) for f in frames[1:8]]
    assert len(hog.detect(two[0])) == 2
    counts = []
    for f in two:
        counts.append(len(tracker.detect(f)))
    # ROI frames return the tracked face only, until the periodic rescan (<= 2 frames later)
    first_seen = counts.index(2)
    assert first_seen <= 2
    # from then on every frame is a full-frame scan: the face policy sees both faces
    assert counts[first_seen:] == [2] * (len(two) - first_seen)
    assert tracker.counts["roi"] == first_seen
    # one face again: tracking resumes after a full scan
    tracker.detect(frames[9])
    tracker.detect(frames[10])
    assert tracker.last_mode == "roi"


def test_cnn_roi_uses_few_pyramid_levels_and_finds_the_face(frames):
    cnn = open_cnn_detector(MODELS, threads=1)
    tracker = RoiTracker(cnn)
    full = tracker.detect(frames[0])
    roi = tracker.detect(frames[1])
    assert tracker.last_mode == "roi" and len(full) == len(roi) == 1
    ref = cnn.detect(frames[1])[0].box
    inter = max(0.0, min(roi[0].box[2], ref[2]) - max(roi[0].box[0], ref[0])) * \
        max(0.0, min(roi[0].box[3], ref[3]) - max(roi[0].box[1], ref[1]))
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert inter / (area(roi[0].box) + area(ref) - inter) > 0.6


def test_new_frame_size_drops_the_track_and_settings_are_checked(frames, hog):
    tracker = RoiTracker(hog)
    tracker.detect(frames[0])
    tracker.detect(cv2.resize(frames[1], (320, 240)))
    assert tracker.last_mode == "full: no track"
    for bad in ({"rescan_every": 0}, {"pad": 0.1}, {"face_px": 40}, {"max_size_change": 1.0}):
        with pytest.raises(ConfigError, match="ROI settings"):
            RoiSettings(**bad)


def test_open_face_detector_wraps_in_a_tracker():
    choice = open_face_detector("hog", roi=RoiSettings(rescan_every=7))
    assert isinstance(choice.detector, RoiTracker) and "every 7 frames" in choice.reason


def test_run_roi_rescan_option_wraps_the_detector_or_refuses_zero():
    from edge_runtime.cli.main import build_parser
    from edge_runtime.cli.options import face_detector

    args = build_parser().parse_args(["run", "--detector", "hog", "--roi-rescan", "3"])
    det = face_detector(args)
    assert isinstance(det, RoiTracker) and det.settings.rescan_every == 3
    plain = build_parser().parse_args(["run", "--detector", "hog"])
    assert isinstance(face_detector(plain), DlibHogDetector)  # default: every frame in full
    args.roi_rescan = 0
    with pytest.raises(ConfigError, match="rescan_every"):
        face_detector(args)


def test_tracker_keeps_the_detector_kind_for_liveness_calibration():
    """The Verifier picks the AV-sync threshold by detector kind; a tracker must not hide it."""
    from edge_runtime.frontend.face import DlibHogDetector
    from edge_runtime.frontend.face_roi import RoiTracker

    assert RoiTracker(DlibHogDetector()).kind == "hog"
