"""Dataset readers on the bundled real fixtures and on small trees built from copies of them."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.errors import DatasetError, MediaError
from train.datasets import (
    ClipFolder,
    FaceFolder,
    Sample,
    SpeechFolder,
    VoxCeleb1,
    file_sha256,
    identity_split,
    manifest_hash,
    read_labels_tsv,
    split_samples,
    write_manifest,
)

LFW_PEOPLE = [
    "Hugo_Chavez",
    "Jean_Chretien",
    "Junichiro_Koizumi",
    "Serena_Williams",
    "Tony_Blair",
    "Vladimir_Putin",
]
GRID_CLIPS = ["bbaf2n", "lbax4n", "lbbc2a", "lrwp9a", "lwbsza", "sbia1a", "sbwe5n"]


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):  # fixtures are read-only in the repo; copies must be editable
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


# -- folder readers on the fixture layouts ----------------------------------------------------


def test_face_folder_lfw(fixtures):
    r = FaceFolder(fixtures / "lfw")
    assert r.identities() == LFW_PEOPLE
    assert len(r.samples) == 24 and r.skipped == []
    groups = r.by_identity()
    assert list(groups) == LFW_PEOPLE
    assert [s.path.name for s in groups["Tony_Blair"]] == [
        f"Tony_Blair_000{i}.jpg" for i in (1, 2, 3, 4)
    ]
    assert all(s.modality == "face" and s.group is None for s in r.samples)
    assert all(s.path.is_absolute() and s.path.parent.name == s.identity for s in r.samples)


def test_lfw_gender_labels_match_reader(fixtures):
    genders = read_labels_tsv(fixtures / "lfw" / "GENDER.tsv", "person", "gender")
    assert genders == {"Hugo_Chavez": "M"}
    assert set(genders) <= set(FaceFolder(fixtures / "lfw").identities())


def test_face_folder_att_pgm(fixtures):
    r = FaceFolder(fixtures / "att_faces")
    assert r.identities() == ["s1", "s2", "s3"]
    assert [s.path.name for s in r.by_identity()["s2"]] == ["1.pgm", "2.pgm", "3.pgm"]


def test_face_folder_exts_filter(fixtures):
    with pytest.raises(DatasetError, match="att_faces"):
        FaceFolder(fixtures / "att_faces", exts=(".jpg",))


def test_speech_folder_speechocean_flac_and_speakers_tsv(fixtures):
    r = SpeechFolder(fixtures / "speechocean762")
    ids = ["SPEAKER0036", "SPEAKER0120", "SPEAKER0461", "SPEAKER0482"]
    assert r.identities() == ids
    assert all(len(v) == 3 for v in r.by_identity().values())
    assert all(s.path.suffix == ".flac" and s.modality == "voice" for s in r.samples)
    tsv = fixtures / "speechocean762" / "SPEAKERS.tsv"
    assert read_labels_tsv(tsv, "speaker", "gender") == dict(zip(ids, "FFMM", strict=True))
    assert read_labels_tsv(tsv, "speaker", "age")["SPEAKER0482"] == "28"


def test_speech_folder_fsdd_wav(fixtures):
    r = SpeechFolder(fixtures / "fsdd")
    assert r.identities() == ["george", "jackson", "lucas"]
    assert [s.path.name for s in r.by_identity()["lucas"]] == [
        "0_lucas_0.wav",
        "0_lucas_1.wav",
        "0_lucas_10.wav",
    ]


def test_speech_folder_librispeech_nesting(fixtures, tmp_path):
    src = sorted((fixtures / "speechocean762" / "SPEAKER0036").glob("*.flac"))
    root = tmp_path / "LibriSpeech" / "dev-clean"
    for chapter, files in (("128104", src[:2]), ("130734", src[2:])):
        d = root / "84" / chapter
        d.mkdir(parents=True)
        for i, f in enumerate(files):
            shutil.copy(f, d / f"84-{chapter}-{i:04d}.flac")
        (d / f"84-{chapter}.trans.txt").write_text("84-X-0000 TEXT\n")
    flat = root / "174"
    flat.mkdir()
    shutil.copy(src[0], flat / "174-1.FLAC")  # upper-case extension still matches
    r = SpeechFolder(root)
    assert r.identities() == ["174", "84"]
    assert [(s.group, s.path.name) for s in r.by_identity()["84"]] == [
        ("128104", "84-128104-0000.flac"),
        ("128104", "84-128104-0001.flac"),
        ("130734", "84-130734-0000.flac"),
    ]
    assert r.by_identity()["174"][0].group is None
    assert r.skipped == []


def test_clip_folder_flat_grid(fixtures):
    r = ClipFolder(fixtures / "grid")
    assert r.identities() == GRID_CLIPS
    assert all(len(v) == 1 for v in r.by_identity().values())
    assert all(s.group is None and s.modality == "clip" for s in r.samples)


def test_clip_folder_voxceleb2_layout(fixtures, tmp_path):
    # Real GRID clips laid out as VoxCeleb2 (idXXXXX/<video>/<clip>); they keep their .mpg
    # extension because the readers check the container header against the extension.
    grid = sorted((fixtures / "grid").glob("*.mpg"))
    root = tmp_path / "vox2" / "dev" / "mp4"
    layout = {
        ("id00012", "21Uxsk56VDQ", "00001.mpg"): grid[0],
        ("id00012", "21Uxsk56VDQ", "00002.mpg"): grid[1],
        ("id00012", "2DLq_Kkc1r8", "00001.mpg"): grid[2],
        ("id00015", "0fijmz4vTVU", "00001.mpg"): grid[3],
    }
    for (ident, video, name), src in layout.items():
        (root / ident / video).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / ident / video / name)
    r = ClipFolder(root)
    assert r.identities() == ["id00012", "id00015"]
    assert [(s.group, s.path.name) for s in r.by_identity()["id00012"]] == [
        ("21Uxsk56VDQ", "00001.mpg"),
        ("21Uxsk56VDQ", "00002.mpg"),
        ("2DLq_Kkc1r8", "00001.mpg"),
    ]


def test_clip_folder_flat_stem_colliding_with_folder_is_refused(fixtures, tmp_path):
    grid = sorted((fixtures / "grid").glob("*.mpg"))
    (tmp_path / "alice").mkdir()
    shutil.copy(grid[0], tmp_path / "alice" / "a.mpg")
    shutil.copy(grid[1], tmp_path / "alice.mpg")
    with pytest.raises(DatasetError, match="alice"):
        ClipFolder(tmp_path)


# -- VoxCeleb1 ------------------------------------------------------------------------------

VOX_META = (
    "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
    "id10001\tHugo_Chavez\tm\tVenezuela\tdev\n"
    "id10002\tSerena_Williams\tf\tUSA\tdev\n"
    "id10270\tTony_Blair\tm\tUK\ttest\n"
)


def build_vox1(fixtures: Path, root: Path) -> tuple[Path, Path]:
    """A VoxCeleb1-shaped tree from real FSDD wavs and LFW jpgs (people differ: layout only)."""
    wavs = sorted((fixtures / "fsdd").rglob("*.wav"))
    audio = {
        ("id10001", "1zcIwhmdeo4"): wavs[0:2],
        ("id10001", "7gWzIy6yIIk"): wavs[2:3],
        ("id10002", "C7k7C-PDvAA"): wavs[3:5],
        ("id10270", "5r0dWxy17C8"): wavs[5:6],
        ("id99999", "xxxxxxxxxxx"): wavs[6:7],  # not in the metadata
    }
    for (ident, video), files in audio.items():
        d = root / "wav" / ident / video
        d.mkdir(parents=True)
        for i, f in enumerate(files, 1):
            shutil.copy(f, d / f"{i:05d}.wav")
    faces = root / "unzippedFaces"
    for name, video in (("Hugo_Chavez", "1zcIwhmdeo4"), ("Serena_Williams", "C7k7C-PDvAA")):
        d = faces / name / "1.6" / video
        d.mkdir(parents=True)
        for i, f in enumerate(sorted((fixtures / "lfw" / name).glob("*.jpg"))[:2], 1):
            shutil.copy(f, d / f"{i:07d}.jpg")
    unknown = faces / "Not_In_Meta" / "1.6" / "vid"
    unknown.mkdir(parents=True)
    shutil.copy(fixtures / "lfw" / "Tony_Blair" / "Tony_Blair_0001.jpg", unknown / "0000001.jpg")
    meta = root / "vox1_meta.csv"
    meta.write_text(VOX_META)
    return meta, faces


def test_voxceleb1_joins_voice_and_face_by_id(fixtures, tmp_path, caplog):
    _, faces = build_vox1(fixtures, tmp_path)
    with caplog.at_level(logging.WARNING, logger="train.datasets"):
        r = VoxCeleb1(tmp_path, faces_root=faces)
    assert sorted({s.identity for s in r.voice_samples}) == ["id10001", "id10002", "id10270"]
    assert sorted({s.identity for s in r.face_samples}) == ["id10001", "id10002"]
    assert len(r.voice_samples) == 6 and len(r.face_samples) == 4
    assert len(r.samples) == 10 and r.identities() == ["id10001", "id10002", "id10270"]
    assert [(s.group, s.path.name) for s in r.face_samples if s.identity == "id10001"] == [
        ("1zcIwhmdeo4", "0000001.jpg"),
        ("1zcIwhmdeo4", "0000002.jpg"),
    ]
    assert {s.group for s in r.voice_samples if s.identity == "id10001"} == {
        "1zcIwhmdeo4",
        "7gWzIy6yIIk",
    }
    assert (r.gender("id10001"), r.gender("id10002")) == ("M", "F")
    assert r.official_set("id10270") == "test"
    assert r.official_split() == {"dev": ["id10001", "id10002"], "test": ["id10270"]}
    skipped = {p.name: why for p, why in r.skipped}
    assert set(skipped) == {"id99999", "Not_In_Meta"}
    assert "not in" in skipped["id99999"] and "vox1_meta.csv" in skipped["id99999"]
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 unusable" in warnings[0].getMessage()
    with pytest.raises(DatasetError, match="id99999"):
        r.gender("id99999")


def test_voxceleb1_voice_only_and_explicit_meta(fixtures, tmp_path):
    meta, _ = build_vox1(fixtures, tmp_path / "vox")
    moved = tmp_path / "meta" / "vox1_meta.csv"
    moved.parent.mkdir()
    meta.rename(moved)
    with pytest.raises(DatasetError, match="vox1_meta.csv"):
        VoxCeleb1(tmp_path / "vox")
    r = VoxCeleb1(tmp_path / "vox", meta_csv=moved)
    assert r.face_samples == [] and len(r.voice_samples) == 6


def test_voxceleb1_bad_meta_header(fixtures, tmp_path):
    meta, _ = build_vox1(fixtures, tmp_path)
    meta.write_text("id\tname\nid10001\tHugo_Chavez\n")
    with pytest.raises(DatasetError, match="Gender"):
        VoxCeleb1(tmp_path)


# -- missing roots and bad files ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [FaceFolder, SpeechFolder, ClipFolder, VoxCeleb1])
def test_missing_root_is_named(cls, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        cls(missing)


@pytest.mark.parametrize("cls", [FaceFolder, SpeechFolder, ClipFolder])
def test_empty_root_is_named(cls, tmp_path):
    (tmp_path / "someone").mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"no usable sample under {tmp_path}")):
        cls(tmp_path)


def test_bad_face_files_are_skipped_with_reason_and_counted(fixtures, tmp_path, caplog):
    root = copy_tree(fixtures / "lfw", tmp_path / "lfw")
    empty = root / "Tony_Blair" / "Tony_Blair_0005.jpg"
    empty.touch()
    html = root / "Hugo_Chavez" / "Hugo_Chavez_0005.jpg"
    html.write_text("<html>404 Not Found</html>")
    dangling = root / "Jean_Chretien" / "Jean_Chretien_0005.jpg"
    dangling.symlink_to(tmp_path / "gone.jpg")
    stray = root / "stray.jpg"
    shutil.copy(root / "Tony_Blair" / "Tony_Blair_0001.jpg", stray)
    with caplog.at_level(logging.WARNING, logger="train.datasets"):
        r = FaceFolder(root)
    assert len(r.samples) == 24  # every good image kept, none of the bad ones
    reasons = dict(r.skipped)
    assert set(reasons) == {empty, html, dangling, stray}
    assert "empty" in reasons[empty]
    assert "not a .jpg" in reasons[html]
    assert "cannot stat" in reasons[dangling]
    assert "outside any identity folder" in reasons[stray]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 4 unusable" in warnings[0] and str(root) in warnings[0]


def test_root_with_only_bad_files_says_so(tmp_path):
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "1.wav").touch()
    with pytest.raises(DatasetError, match="1 file\\(s\\) skipped"):
        SpeechFolder(tmp_path)


def test_sample_requires_known_modality():
    with pytest.raises(ValueError, match="modality"):
        Sample("a", Path("x.jpg"), modality="smell")
    with pytest.raises(TypeError):
        Sample("a", Path("x.jpg"), None, "face")  # modality is keyword-only


# -- splits -----------------------------------------------------------------------------------


def test_identity_split_deterministic_disjoint_covering_order_free():
    ids = [f"id{i:05d}" for i in range(200)]
    train, val = identity_split(ids, 0.2, seed=7)
    assert len(val) == 40 and len(train) == 160
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(ids)
    assert train == sorted(train) and val == sorted(val)
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert identity_split(shuffled + ids[:5], 0.2, seed=7) == (train, val)
    assert identity_split(ids, 0.2, seed=8)[1] != val


def test_identity_split_small_and_invalid():
    train, val = identity_split(["a", "b", "c"], 0.01, seed=0)
    assert len(val) == 1 and len(train) == 2
    assert identity_split(["b", "a"], 0.0, seed=0) == (["a", "b"], [])
    with pytest.raises(DatasetError, match="need >= 2"):
        identity_split(["a"], 0.5, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        identity_split(["a", "b"], 1.0, seed=0)


def test_split_samples_by_identity(fixtures):
    r = FaceFolder(fixtures / "lfw")
    train, val = split_samples(r, 0.34, seed=1)
    assert len(train) + len(val) == len(r.samples)
    assert {s.identity for s in train}.isdisjoint({s.identity for s in val})
    assert len({s.identity for s in val}) == 2
    assert split_samples(list(reversed(r.samples)), 0.34, seed=1)[1] == list(reversed(val))


# -- manifests and hashes --------------------------------------------------------------------


def test_manifest_hash_tracks_files_not_order(fixtures, tmp_path):
    root = copy_tree(fixtures / "fsdd", tmp_path / "fsdd")
    samples = SpeechFolder(root).samples
    h = manifest_hash(samples, root)
    assert len(h) == 64
    assert manifest_hash(list(reversed(samples)), root) == h
    relabelled = [Sample("x", s.path, s.group, modality=s.modality) for s in samples]
    assert manifest_hash(relabelled, root) != h
    assert manifest_hash(samples[1:], root) != h
    with samples[0].path.open("ab") as fh:
        fh.write(b"\0\0")
    assert manifest_hash(samples, root) != h


def test_manifest_rejects_sample_outside_root(fixtures, tmp_path):
    samples = FaceFolder(fixtures / "att_faces").samples
    with pytest.raises(DatasetError, match="not under manifest root"):
        manifest_hash(samples, tmp_path)


def test_write_manifest(fixtures, tmp_path):
    r = FaceFolder(fixtures / "att_faces")
    out = tmp_path / "sub" / "manifest.json"
    written = write_manifest(r.samples, r.root, out)
    on_disk = json.loads(out.read_text())
    assert on_disk == written
    assert on_disk["count"] == 9 and on_disk["identities"] == ["s1", "s2", "s3"]
    assert on_disk["hash"] == manifest_hash(r.samples, r.root)
    first = on_disk["files"][0]
    assert first["path"] == "s1/1.pgm" and first["modality"] == "face"
    assert first["size"] == (r.root / "s1" / "1.pgm").stat().st_size


def test_file_sha256(fixtures, tmp_path):
    f = fixtures / "grid" / "bbaf2n.mpg"
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    with pytest.raises(MediaError, match="missing.wav"):
        file_sha256(tmp_path / "missing.wav")


# -- label files ------------------------------------------------------------------------------


def test_read_labels_tsv_errors_name_the_problem(tmp_path):
    f = tmp_path / "labels.tsv"
    f.write_text("person\tgender\nA\tM\nB\t\nA\tF\n")
    with pytest.raises(DatasetError, match=r"labels.tsv:4: A has gender 'F'"):
        read_labels_tsv(f, "person", "gender")
    f.write_text("person\tgender\nA\tM\nB\t\n")
    assert read_labels_tsv(f, "person", "gender") == {"A": "M"}  # empty value = unknown
    with pytest.raises(DatasetError, match="no column 'age'"):
        read_labels_tsv(f, "person", "age")
    with pytest.raises(DatasetError, match="nothere.tsv"):
        read_labels_tsv(tmp_path / "nothere.tsv", "person", "gender")


def test_readers_do_not_import_torch():
    code = "import sys, train.datasets\nsys.exit(1 if 'torch' in sys.modules else 0)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
