"""The pure-Python dlib reader and its ONNX rebuild against dlib itself, on real fixture faces.

dlib is the reference here (and only here): its own `compute_face_descriptor` on the same
chips. The full figures (>= 200 LFW faces, EER, speed) are in benchmarks/dlib_onnx.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import ModelError
from edge_runtime.frontend.face import (
    DlibHogDetector,
    detect_and_align,
    dlib_chip,
    load_image,
    wheel_model_path,
)
from export.dlib.layouts import FACE_RESNET, MMOD_DETECTOR
from export.dlib.models import FACE_RESNET_SPEC, cached_port, port_version
from export.dlib.reader import Layout, Stream, read_network


def _fixture_chips(fixtures, n=8):
    det = DlibHogDetector()
    chips = []
    for path in sorted((fixtures / "lfw").glob("*/*.jpg"))[:n]:
        image = load_image(path)
        _, d = detect_and_align(image, det, source=str(path))
        chips.append(dlib_chip(image, d))
    return np.stack(chips)


def test_onnx_face_teacher_matches_dlib(fixtures, tmp_path):
    from train.teachers import DlibFaceTeacher, FaceTeacher

    chips = _fixture_chips(fixtures)
    port, ref = FaceTeacher(tmp_path), DlibFaceTeacher()
    a = np.stack([ref.embed_chip(c) for c in chips]).astype(np.float64)
    b = port.embed_chips(chips).astype(np.float64)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert len(chips) == 8 and cos.min() >= 0.9999, cos
    assert np.abs(a - b).max() < 1e-4
    # one chip at a time gives the batch's answer
    np.testing.assert_allclose(port.embed_chip(chips[3]), b[3], atol=1e-5)
    # the version keys caches by the .dat's hash and differs from dlib's own
    assert port.version == port_version(FACE_RESNET_SPEC) != ref.version
    assert port.path.parent == tmp_path / "dlib_onnx" and port.path.stem == port.version


def test_generated_file_is_reused(tmp_path):
    first = cached_port(FACE_RESNET_SPEC, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert cached_port(FACE_RESNET_SPEC, tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "dlib_onnx").glob("*.tmp"))


def test_reader_reads_both_wheel_networks():
    resnet = read_network(wheel_model_path(FACE_RESNET_SPEC.dat_name), FACE_RESNET)
    assert resnet[0].attrs["size"] == (150, 150) and resnet[-1].kind == "loss_metric"
    convs = [layer for layer in resnet if layer.kind == "con"]
    assert len(convs) == 29 and convs[0].weights["w"].shape == (32, 3, 7, 7)
    assert resnet[-2].kind == "fc" and resnet[-2].weights["w"].shape == (256, 128)
    mmod = read_network(wheel_model_path("mmod_human_face_detector.dat"), MMOD_DETECTOR)
    assert mmod[-1].kind == "loss_mmod"
    assert mmod[-1].attrs["detector_windows"] == [(80, 80, "")]
    assert [c.attrs["filters"] for c in mmod if c.kind == "con"] == [16, 32, 32, 45, 45, 45, 1]


def test_wrong_layout_and_damaged_files_are_refused(tmp_path):
    dat = wheel_model_path("mmod_human_face_detector.dat")
    with pytest.raises(ModelError, match="layout"):
        read_network(dat, FACE_RESNET)
    wrong = Layout("wrong", ("input", "con", "relu", "affine", *MMOD_DETECTOR.layers[4:]))
    with pytest.raises(ModelError, match="expects"):
        read_network(dat, wrong)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(ModelError, match="cut.dat"):
        read_network(cut, MMOD_DETECTOR)
    with pytest.raises(ModelError, match="not found"):
        read_network(tmp_path / "absent.dat", MMOD_DETECTOR)


def test_primitive_decoders():
    # dlib's integer: control byte (size | 0x80 if negative) + little-endian bytes
    s = Stream(bytes([0x01, 0x05, 0x82, 0x00, 0x01, 0x01, 0x00]), "t")
    assert (s.int(), s.int(), s.int()) == (5, -256, 0)
    # float_details: mantissa 3, exponent -1 -> 1.5; the string "ab"; bool '1'
    s = Stream(bytes([0x01, 0x03, 0x81, 0x01, 0x01, 0x02]) + b"ab1", "t")
    assert (s.float(), s.string(), s.bool()) == (1.5, "ab", True)
    with pytest.raises(ModelError, match="control byte"):
        Stream(bytes([0x00]), "t").int()
