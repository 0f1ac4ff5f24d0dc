"""Distillation on real fixture data: the loss falls, checkpoints are complete, exports match."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.config import apply_overrides, load_config
from train.distill import distill, load_student
from train.models import FaceNetConfig, MobileFaceNet, VoiceResNet, count_parameters

TINY = ["train.epochs=4", "train.batch_size=8", "train.workers=1", "split.test_fraction=0.2",
        "split.val_fraction=0.2", "eval.max_impostor_per_identity=5"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def face_run(fixtures, cache, tmp_path_factory):
    cfg = load_config(None, "face_distill.yaml", TINY + ["train.lr=0.01"])
    out = tmp_path_factory.mktemp("face_run")
    return distill("face", fixtures / "lfw", cfg, out, cache), out


@pytest.fixture(scope="module")
def voice_run(fixtures, cache, tmp_path_factory):
    cfg = load_config(None, "voice_distill.yaml", TINY + ["train.lr=0.01"])
    out = tmp_path_factory.mktemp("voice_run")
    return distill("voice", fixtures / "speechocean762", cfg, out, cache), out


@pytest.mark.parametrize("run", ["face_run", "voice_run"])
def test_tiny_distillation_lowers_the_loss(run, request):
    summary, out = request.getfixturevalue(run)
    # the embedding-matching term; the total also holds the voice identity term, which on a
    # fixture set of one batch per epoch jumps from batch to batch
    losses = [h["train_cos"] for h in summary["history"]]
    assert len(losses) == 4
    assert losses[-1] < losses[0], losses
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]


@pytest.mark.parametrize("run,modality", [("face_run", "face"), ("voice_run", "voice")])
def test_checkpoint_holds_config_manifest_and_split(run, modality, request):
    summary, out = request.getfixturevalue(run)
    model, ckpt = load_student(out / "student.pt")
    assert ckpt["modality"] == modality
    assert ckpt["config"]["train"]["epochs"] == 4  # the override is recorded
    assert len(ckpt["data"]["manifest_hash"]) == 64
    assert ckpt["split"] == {"test_fraction": 0.2, "val_fraction": 0.2, "seed": 0}
    assert len(ckpt["teacher_mean"]) == (128 if modality == "face" else 256)
    assert not model.training


def test_teacher_targets_are_cached(face_run, fixtures, cache, monkeypatch):
    """A second preparation of the same files must not run the teacher again."""
    import train.teachers
    from train.datasets import FaceFolder
    from train.prepare import prepare_faces

    def boom(*a, **k):
        raise AssertionError("teacher was called although its targets are cached")

    monkeypatch.setattr(train.teachers.FaceTeacher, "__init__", boom)
    samples = FaceFolder(fixtures / "lfw").samples
    # the run prepared its train+val faces (test faces were never touched): prepare those again
    from train.datasets import holdout_split

    sp = holdout_split([s.identity for s in samples], 0.2, 0.2, 0)
    used = [s for s in samples if s.identity in set(sp["train"]) | set(sp["val"])]
    prepared = prepare_faces(used, cache, workers=1)
    assert prepared.teacher.shape == (len(used) - len(prepared.skipped), 128)


@pytest.mark.parametrize("warm", [False, True], ids=["fresh cache", "warm cache"])
def test_a_config_reproduces_its_run(voice_run, fixtures, cache, tmp_path, warm):
    """Same config and files, teacher targets recomputed into a fresh cache or read from the
    first run's: the same weights and history. A door_v14 re-run on a rebuilt machine did not
    repeat its first run (benchmarks/students.md, 2026-12-02 11:40-), nor did door_v23's
    (2026-12-03 21:48-): computing the targets drew from the global generators before the
    student was initialised, so a run on a cold cache started from other weights than one on
    a warm cache."""
    cfg = load_config(None, "voice_distill.yaml", TINY + ["train.lr=0.01"])
    again = distill("voice", fixtures / "speechocean762", cfg, tmp_path / "again",
                    cache if warm else tmp_path / "cache")
    first, first_out = voice_run
    sa = torch.load(first_out / "last.pt", weights_only=False)["state_dict"]
    sb = torch.load(tmp_path / "again" / "last.pt", weights_only=False)["state_dict"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "same config, different weights"
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in run["history"]]
               for run in (first, again)]  # every figure of every epoch but its wall time
    assert untimed[0] == untimed[1]


@pytest.mark.parametrize("run", ["face_run", "voice_run"])
def test_onnx_export_matches_pytorch(run, request, tmp_path):
    from export.students import export_student

    summary, out = request.getfixturevalue(run)
    result = export_student(out / "student.pt", tmp_path / "student.onnx")
    assert result["parity_min_cosine"] >= 0.9999
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["edgepin.precision"] == "fp32"
    assert json.loads(meta["edgepin.split"])["test_fraction"] == 0.2


def test_students_are_small_and_normalised():
    face = MobileFaceNet(FaceNetConfig(width=1.0))
    assert count_parameters(face) <= 1_100_000  # MobileFaceNet-class: ~1 M at full width
    voice = VoiceResNet()
    assert count_parameters(voice) <= 1_000_000
    face.eval()
    voice.eval()
    with torch.no_grad():
        e = face(torch.randn(2, 3, 112, 112))
        v = voice(torch.randn(2, 200, 64))
    assert e.shape == (2, 128) and v.shape == (2, 256)
    np.testing.assert_allclose(e.norm(dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(v.norm(dim=1).numpy(), 1.0, atol=1e-5)
    allowed = ("Conv2d", "BatchNorm2d", "BatchNorm1d", "PReLU", "ReLU", "Linear", "Identity",
               "Sequential", "MobileFaceNet", "VoiceResNet", "_Bottleneck", "_BasicBlock")
    for model in (face, voice):
        kinds = {type(m).__name__ for m in model.modules()}
        assert kinds <= set(allowed), kinds - set(allowed)


def test_config_overrides_refuse_unknown_keys():
    from edge_runtime.errors import ConfigError

    cfg = {"train": {"epochs": 3}}
    assert apply_overrides(cfg, ["train.epochs=5"])["train"]["epochs"] == 5
    assert cfg["train"]["epochs"] == 3  # the original is untouched
    with pytest.raises(ConfigError, match="no key"):
        apply_overrides(cfg, ["train.epoch=5"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(cfg, ["train.epochs"])


@pytest.mark.parametrize("act, fused", [("relu", "ReLU"), ("prelu", "PReLU")])
def test_face_activation_is_configurable(act, fused):
    face = MobileFaceNet(FaceNetConfig(width=0.25, activation=act))
    kinds = {type(m).__name__ for m in face.modules()}
    assert fused in kinds and ({"ReLU", "PReLU"} - {fused}).isdisjoint(kinds)
    with pytest.raises(ValueError, match="unknown activation"):
        MobileFaceNet(FaceNetConfig(width=0.25, activation="gelu"))


def test_checkpoints_without_activation_key_load_as_prelu():
    from train.tasks import build_model

    cfg = {"modality": "face", "model": {"embedding_dim": 128, "width": 0.25}}
    kinds = {type(m).__name__ for m in build_model(cfg).modules()}
    assert "PReLU" in kinds and "ReLU" not in kinds


@pytest.mark.parametrize("stride, n_mels", [(1, 64), (2, 64), (2, 40), (2, 80)])
def test_voice_stem_stride_keeps_the_pooling_size_right(stride, n_mels):
    from train.models import VoiceNetConfig

    net = VoiceResNet(VoiceNetConfig(n_mels=n_mels, stem_stride=stride)).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 200, n_mels))
    assert out.shape == (3, 256)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)
