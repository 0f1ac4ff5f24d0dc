"""Face front-end on real fixture faces (LFW grey JPEGs, AT&T PGMs): load, detect, align, chip."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from edge_runtime.errors import (
    ConfigError,
    MediaError,
    ModelError,
    NoFaceError,
    SeveralFacesError,
)
from edge_runtime.frontend.face import (
    ARCFACE_TEMPLATE_112,
    DLIB5_TEMPLATE_112,
    DlibHogDetector,
    FaceDetection,
    align_face,
    alignment_matrix,
    alignment_points,
    choose_face,
    detect_and_align,
    dlib_chip,
    load_image,
    similarity_transform,
    transform_points,
)
from edge_runtime.frontend.face_quality import FaceQuality, QualityGate, face_quality

# AT&T s1/3 is a near-profile view: dlib's FRONTAL HOG detector does not find it at its default
# threshold (a known limit, checked below), so it is left out of the "finds a face" set.
ATT_PROFILE = "s1/3.pgm"


@pytest.fixture(scope="module")
def detector() -> DlibHogDetector:
    return DlibHogDetector()


@pytest.fixture(scope="module")
def lfw_files(fixtures: Path) -> list[Path]:
    files = sorted((fixtures / "lfw").glob("*/*.jpg"))
    assert len(files) >= 12
    return files


@pytest.fixture(scope="module")
def att_files(fixtures: Path) -> list[Path]:
    files = sorted((fixtures / "att_faces").glob("*/*.pgm"))
    assert len(files) >= 6
    return files


@pytest.fixture(scope="module")
def lfw_faces(lfw_files, detector) -> list[tuple[Path, np.ndarray, FaceDetection]]:
    out = []
    for f in lfw_files:
        img = load_image(f)
        dets = detector.detect(img)
        assert dets, f"no face found in {f}"
        out.append((f, img, dets[0]))
    return out


# --- loading ---------------------------------------------------------------------------------


def test_load_image_grey_jpeg_and_pgm_become_rgb(lfw_files, att_files):
    jpg = load_image(lfw_files[0])
    assert jpg.shape == (250, 250, 3) and jpg.dtype == np.uint8
    assert np.array_equal(jpg[:, :, 0], jpg[:, :, 1]) and np.array_equal(jpg[:, :, 1], jpg[:, :, 2])
    pgm = load_image(att_files[0])
    assert pgm.shape == (112, 92, 3) and pgm.dtype == np.uint8
    grey = cv2.imread(str(att_files[0]), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(pgm[:, :, 0], grey) and np.array_equal(pgm[:, :, 2], grey)


def test_load_image_colour_order_is_rgb(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR order
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), bgr)
    rgb = load_image(path)
    assert rgb[0, 0].tolist() == [200, 0, 0]


def test_load_image_missing_empty_corrupt_name_the_file(tmp_path, lfw_files):
    with pytest.raises(MediaError, match="nowhere.jpg"):
        load_image(tmp_path / "nowhere.jpg")
    empty = tmp_path / "empty_face.jpg"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty.*empty_face\.jpg"):
        load_image(empty)
    corrupt = tmp_path / "corrupt_face.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 8)
    with pytest.raises(MediaError, match=r"corrupt.*corrupt_face\.jpg"):
        load_image(corrupt)
    with pytest.raises(MediaError, match="directory"):
        load_image(tmp_path)


# --- detection -------------------------------------------------------------------------------


def test_detects_one_face_on_every_lfw_fixture(lfw_faces):
    for f, _img, det in lfw_faces:
        x0, y0, x1, y1 = det.box
        assert det.landmarks.shape == (5, 2) and det.landmarks.dtype == np.float32, f
        assert det.area > 60 * 60, f  # LFW faces fill about half of the 250 px image
        # landmarks lie inside the box, in the documented order (image-right eye first)
        lm = det.landmarks
        assert np.all((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1)), f
        assert lm[0, 0] > lm[1, 0] > lm[3, 0] > lm[2, 0], f
        assert lm[4, 1] > lm[:4, 1].max(), f  # nose base below the eyes


def test_detects_att_faces_and_upsamples_small_ones(att_files, detector):
    for f in att_files:
        if f.as_posix().endswith(ATT_PROFILE):
            continue
        dets = detector.detect(load_image(f))
        assert dets, f"no face found in {f}"
        assert [d.area for d in dets] == sorted((d.area for d in dets), reverse=True)
    # s2/2 is a small selfie face in a 92x112 frame: HOG needs the upsampled retry to see it
    small = load_image(next(f for f in att_files if f.as_posix().endswith("s2/2.pgm")))
    assert DlibHogDetector(max_upsample=0).detect(small) == []
    assert len(detector.detect(small)) == 1


def test_profile_face_is_a_known_miss(att_files, detector):
    profile = next(f for f in att_files if f.as_posix().endswith(ATT_PROFILE))
    img = load_image(profile)
    with pytest.raises(NoFaceError, match=ATT_PROFILE.split("/")[1]):
        detect_and_align(img, detector, source=str(profile))


def test_no_face_in_flat_or_noise_image_names_source(detector):
    rng = np.random.default_rng(0)
    flat = np.full((200, 200, 3), 128, np.uint8)
    noise = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    for name, img in [("flat_grey.png", flat), ("noise.png", noise)]:
        with pytest.raises(NoFaceError, match=name):
            detect_and_align(img, detector, source=name)


def test_missing_landmark_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no_such_model.dat"):
        DlibHogDetector(tmp_path / "no_such_model.dat")


def test_rejects_non_uint8_images(detector):
    with pytest.raises(MediaError, match="uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))


# --- alignment -------------------------------------------------------------------------------


def test_template_eyes_are_arcface_eyes():
    assert np.array_equal(DLIB5_TEMPLATE_112[:2], ARCFACE_TEMPLATE_112[:2])
    assert not DLIB5_TEMPLATE_112.flags.writeable and not ARCFACE_TEMPLATE_112.flags.writeable


def test_nose_template_matches_fixture_faces(lfw_faces):
    """The hard-coded nose point was measured on all of LFW; the fixture faces must agree."""
    noses = []
    for _, _, det in lfw_faces:
        eyes_nose = alignment_points(det.landmarks)
        M = similarity_transform(eyes_nose[:2], ARCFACE_TEMPLATE_112[:2])  # eyes only: exact
        noses.append(transform_points(M, eyes_nose[2:])[0])
    assert np.allclose(np.median(noses, axis=0), DLIB5_TEMPLATE_112[2], atol=3.0)


def test_aligned_eyes_land_on_template_within_3px(lfw_faces):
    for f, img, det in lfw_faces:
        M = alignment_matrix(det.landmarks, 112)
        eyes = transform_points(M, alignment_points(det.landmarks)[:2])
        err = np.hypot(*(eyes - ARCFACE_TEMPLATE_112[:2]).T)
        assert err.max() < 3.0, (f, err)
        aligned = align_face(img, det.landmarks)
        assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8


def test_aligned_pixels_put_eyes_on_template(lfw_faces, att_files, detector):
    """Re-run the landmark model on the aligned crop: its eyes are where the template says."""
    import face_recognition_models

    predictor = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location()
    )
    faces = [(img, det) for _, img, det in lfw_faces[::4]]
    for f in att_files[:2]:
        img = load_image(f)
        faces.append((img, detector.detect(img)[0]))
    for img, det in faces:
        crop = align_face(img, det.landmarks, 112)
        shape = predictor(crop, dlib.rectangle(18, 30, 94, 106))  # the face region of the crop
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        err = np.hypot(*(alignment_points(pts)[:2] - ARCFACE_TEMPLATE_112[:2]).T)
        assert err.max() < 3.0, err


def test_align_face_scales_template_with_size(lfw_faces):
    _, img, det = lfw_faces[0]
    big = align_face(img, det.landmarks, size=224)
    assert big.shape == (224, 224, 3)
    eyes = transform_points(alignment_matrix(det.landmarks, 224), alignment_points(det.landmarks))
    assert np.hypot(*(eyes[:2] - 2 * ARCFACE_TEMPLATE_112[:2]).T).max() < 6.0
    small = align_face(img, det.landmarks, size=112)
    # the 224 crop is the 112 crop at twice the resolution
    diff = np.abs(cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA).astype(int) - small)
    assert np.median(diff) < 8


def test_grey_single_channel_inputs_match_rgb(att_files, detector):
    grey = cv2.imread(str(att_files[0]), cv2.IMREAD_GRAYSCALE)
    assert grey.ndim == 2
    rgb_crop, rgb_det = detect_and_align(load_image(att_files[0]), detector, source="rgb")
    for arr in (grey, grey[:, :, None]):
        crop, det = detect_and_align(arr, detector, source=str(att_files[0]))
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        assert det.box == rgb_det.box
        assert np.array_equal(crop, rgb_crop)


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(-50, 150, (7, 2))
    angle, scale, shift = np.deg2rad(23.0), 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    M = similarity_transform(src, dst)
    assert np.allclose(M[:, :2], scale * rot, atol=1e-9)
    assert np.allclose(M[:, 2], shift, atol=1e-7)
    assert np.allclose(transform_points(M, src), dst, atol=1e-7)
    # weights do not change an exact fit
    assert np.allclose(similarity_transform(src, dst, np.arange(1, 8)), M, atol=1e-7)


def test_similarity_transform_never_reflects():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [7.0, 9.0]])
    mirrored = src * np.array([-1.0, 1.0])
    M = similarity_transform(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((3, 2)), src[:3])


# --- teacher chip ----------------------------------------------------------------------------


def test_dlib_chip_matches_dlibs_own_chip(lfw_faces):
    import face_recognition_models

    predictor = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location()
    )
    _, img, det = lfw_faces[0]
    chip = dlib_chip(img, det)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    rect = dlib.rectangle(*(int(v) for v in det.box))
    reference = dlib.get_face_chip(img, predictor(img, rect), size=150, padding=0.25)
    assert np.array_equal(chip, reference)
    assert dlib_chip(img, det, size=80).shape == (80, 80, 3)


# --- quality ---------------------------------------------------------------------------------


def test_blur_lowers_sharpness_and_gate_flags_it(lfw_faces):
    gate = QualityGate()
    for f, img, det in lfw_faces[:6]:
        sharp = face_quality(img, det)
        blurred = face_quality(cv2.GaussianBlur(img, (0, 0), 3.0), det)
        assert blurred.sharpness < 0.5 * sharp.sharpness, f
        assert gate.reasons(sharp) == [], (f, sharp)
        assert any("blurred" in r for r in gate.reasons(blurred)), (f, blurred)
        assert 30 < sharp.face_size < 60 and abs(sharp.roll_deg) < 15, (f, sharp)


def test_roll_and_yaw_signs_on_hand_made_landmarks(lfw_faces):
    _, img, _ = lfw_faces[0]
    # eye corners level, nose base right of the eyes' midline by a quarter of their distance
    lm = np.array([[170, 100], [150, 100], [90, 100], [110, 100], [145, 150]], np.float32)
    det = FaceDetection(box=(60.0, 50.0, 200.0, 200.0), landmarks=lm, score=1.0)
    q = face_quality(img, det)
    assert q.face_size == pytest.approx(60.0)
    assert q.yaw_proxy == pytest.approx(0.25) and q.roll_deg == pytest.approx(0.0)
    centre = np.array([130.0, 125.0])
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    tilted = FaceDetection(det.box, ((lm - centre) @ rot.T + centre).astype(np.float32), 1.0)
    q2 = face_quality(img, tilted)
    assert q2.roll_deg == pytest.approx(20.0, abs=1e-3)
    assert q2.yaw_proxy == pytest.approx(0.25, abs=1e-5)


def test_gate_reasons_fire_one_per_failure():
    gate = QualityGate(min_face_size=20, min_sharpness=30, max_abs_yaw=0.35, max_abs_roll=30)
    good = FaceQuality(face_size=40, sharpness=150, yaw_proxy=0.05, roll_deg=-3)
    assert gate.reasons(good) == [] and gate.passes(good)
    bad = FaceQuality(face_size=12, sharpness=10, yaw_proxy=-0.5, roll_deg=40)
    reasons = gate.reasons(bad)
    assert len(reasons) == 4 and not gate.passes(bad)
    for word in ("small", "blurred", "turned", "tilted"):
        assert sum(word in r for r in reasons) == 1, (word, reasons)


# --- choosing a face -------------------------------------------------------------------------


def _det(x0: float, y0: float, x1: float, y1: float) -> FaceDetection:
    return FaceDetection((x0, y0, x1, y1), np.zeros((5, 2), np.float32), 1.0)


def test_choose_face_policies():
    shape = (480, 640, 3)
    big_corner = _det(0, 0, 200, 200)  # centre (100, 100): far from (320, 240)
    small_centre = _det(290, 210, 350, 270)  # 60 px, right in the middle
    big_near = _det(300, 150, 500, 350)  # 200 px, centre (400, 250)
    assert choose_face([small_centre, big_corner], shape, "largest") is big_corner
    assert choose_face([big_corner, small_centre], shape, "centre") is small_centre
    assert choose_face([small_centre, big_near, big_corner], shape, "centre") is big_near
    assert choose_face([small_centre], shape, "deny") is small_centre
    with pytest.raises(SeveralFacesError, match=r"several faces \(2\) in door_cam") as err:
        choose_face([small_centre, big_corner], shape, "deny", source="door_cam")
    assert isinstance(err.value, MediaError)
    with pytest.raises(NoFaceError, match="frame_0007.png"):
        choose_face([], shape, "largest", source="frame_0007.png")
    with pytest.raises(ConfigError, match="biggest"):
        choose_face([small_centre], shape, "biggest")


def test_detect_and_align_on_two_faces_side_by_side(lfw_faces, detector):
    _, a, _ = lfw_faces[0]
    _, b, _ = lfw_faces[4]
    b_small = cv2.resize(b, (200, 200), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((250, 450, 3), np.uint8)
    canvas[:, :250] = a
    canvas[25:225, 250:] = b_small
    crop, det = detect_and_align(canvas, detector, source="pair.png", policy="largest")
    assert crop.shape == (112, 112, 3)
    assert (det.box[0] + det.box[2]) / 2 < 250  # the bigger face, on the left
    with pytest.raises(SeveralFacesError, match="pair.png"):
        detect_and_align(canvas, detector, source="pair.png", policy="deny")
