"""Edge mode end to end through the CLI on the real fixtures: train pins, train fuse, eval.

The students here are RANDOM-weight MobileFaceNet / VoiceResNet exported to ONNX (the trained
ones are not part of the test data): this checks the plumbing (caching, splits, export,
manifest, report rows and labels), never accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edge_runtime.bundle import load_manifest
from edge_runtime.cli import main
from edge_runtime.frontend.features import VoiceFrontEnd
from export.onnx_export import export_onnx
from export.students import set_metadata
from train.models import FaceNetConfig, MobileFaceNet, VoiceNetConfig, VoiceResNet

GRID_CLIPS = ("bbaf2n.mpg", "lbax4n.mpg", "lrwp9a.mpg", "sbia1a.mpg")
LFW_PEOPLE = {"Serena_Williams": "F", "Tony_Blair": "M", "Vladimir_Putin": "M"}


def _students(folder: Path) -> None:
    torch.manual_seed(0)
    face = MobileFaceNet(FaceNetConfig(width=0.25)).eval()
    export_onnx(face, {"face": torch.randn(2, 3, 112, 112)}, folder / "face.onnx",
                input_names=["face"], output_names=["embedding"],
                dynamic_axes={"face": {0: "b"}, "embedding": {0: "b"}}, opset=17)
    set_metadata(folder / "face.onnx", {"modality": "face"})
    voice = VoiceResNet(VoiceNetConfig(channels=[8, 8, 16, 16])).eval()
    export_onnx(voice, {"feats": torch.randn(2, 200, 64)}, folder / "voice.onnx",
                input_names=["feats"], output_names=["embedding"],
                dynamic_axes={"feats": {0: "b"}, "embedding": {0: "b"}}, opset=17)
    set_metadata(folder / "voice.onnx", {"modality": "voice",
                                         "front_end": VoiceFrontEnd().to_dict()})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> dict:
    torch.set_num_threads(1)  # tiny models: a second thread only contends on a shared CPU
    tmp = tmp_path_factory.mktemp("pins")
    data = tmp / "data"
    (data / "grid").mkdir(parents=True)
    for clip in GRID_CLIPS:
        (data / "grid" / clip).symlink_to(fixtures / "grid" / clip)
    (data / "lfw").mkdir()
    for person in LFW_PEOPLE:
        (data / "lfw" / person).symlink_to(fixtures / "lfw" / person)
    (data / "speechocean762").symlink_to(fixtures / "speechocean762")
    # gender labels for three fixture people, supplied by this test (the fixture file labels
    # only one of them): enough for a 3-pairing artificial set (1 F + 2 M speakers paired)
    (data / "genders.tsv").write_text(
        "person\tgender\n" + "".join(f"{p}\t{g}\n" for p, g in LFW_PEOPLE.items()))
    students = tmp / "students"
    students.mkdir()
    _students(students)
    run, cache = tmp / "run", tmp / "cache"
    common = ["--data", str(data), "--students", str(students), "--out", str(run),
              "--cache", str(cache)]
    assert main(["train", "pins", *common, "--set", "train.epochs=2", "train.steps_per_epoch=3",
                 "data.face_genders=genders.tsv", "data.crops_with_teacher=false",
                 "data.grid_prep.frame_step=25", "split.artificial.test_fraction=0.34"]) == 0
    assert main(["train", "fuse", *common, "--set", "train.epochs=1"]) == 0
    return {"data": data, "students": students, "run": run, "cache": cache}


def test_training_writes_models_and_manifest(trained: dict) -> None:
    run = trained["run"]
    for f in ("pins.pt", "faa.pt", "pins_history.jsonl", "faa_history.jsonl"):
        assert (run / f).is_file(), f
    entries = load_manifest(run)
    assert {"pin_face", "pin_voice", "faa"} <= set(entries)
    for e in entries.values():
        e.verified_path()
        assert e.meta["parity_min_cosine"] >= 0.9999
        assert "ARTIFICIAL" in e.meta["data"] and "REAL" in e.meta["data"]
    assert entries["faa"].meta["inputs_space"] == "student"
    hist = [json.loads(line) for line in (run / "pins_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    # 2 epochs in 6 stages: stage = epoch * 6 // 2 -> 0, 3 -> 0.3, 0.3 + 0.5 * 3 / 5
    assert [h["hard_share"] for h in hist] == pytest.approx([0.3, 0.6])


def test_eval_crossmodal_reports_both_scorers(trained: dict, capsys: pytest.CaptureFixture
                                              ) -> None:
    capsys.readouterr()
    assert main(["eval", "crossmodal", "--model", str(trained["run"]), "--data",
                 str(trained["data"]), "--students", str(trained["students"]), "--cache",
                 str(trained["cache"]), "--n-way", "5", "--trials", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["data"], r["split"]): r for r in report["rows"]}
    assert ("real", "seen-heard") in rows and ("real", "unseen-unheard") in rows
    for (data, _), r in rows.items():
        assert data in ("real", "artificial")
        assert r["n_way"] == min(5, r["n_identities"])
        for s in ("cosine", "faa"):
            assert 0.0 <= r[s]["auc"] <= 1.0 and 0.0 <= r[s]["eer"] <= 1.0
            assert r[s]["n_genuine"] > 0 and r[s]["n_impostor"] > 0
    assert "artificial" in report["note"] and "real" in report["note"]
    assert "real (GRID)" in report["splits"]


def test_eval_refuses_other_students(trained: dict, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    # the same students with one metadata field changed: other bytes, so another sha256
    other = tmp_path / "other"
    shutil.copytree(trained["students"], other)
    set_metadata(other / "voice.onnx", {"note": "another student"})
    rc = main(["eval", "crossmodal", "--model", str(trained["run"]), "--data",
               str(trained["data"]), "--students", str(other), "--cache", str(trained["cache"])])
    assert rc == 2
    assert "student" in capsys.readouterr().err
