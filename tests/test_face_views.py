"""Teacher-labelled augmented views and resumable distillation, on the bundled LFW excerpt.

The real dlib teacher and detector run here (a few dozen faces); nothing is mocked except the
teacher's constructor in the cache test, replaced by one that fails if it is ever called.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import train.distill
from edge_runtime.errors import ConfigError
from edge_runtime.frontend.face import DlibHogDetector, load_image
from edge_runtime.frontend.features import face_tensor
from train.config import load_config
from train.datasets import FaceFolder
from train.distill import distill
from train.face_views import ViewAugment, ViewParams, label_views, render_view
from train.models import FaceNetConfig, MobileFaceNet, face_stages

VIEWS_TINY = ["train.epochs=2", "train.batch_size=6", "train.workers=1", "train.threads=1",
              "split.test_fraction=0.2", "split.val_fraction=0.2", "eval.max_impostor_per_identity=5",
              "model.width=0.25", "views.per_image=2", "train.lr=0.01"]


@pytest.fixture(scope="module")
def face(fixtures):
    path = sorted((fixtures / "lfw" / "Tony_Blair").iterdir())[0]
    image = load_image(path)
    return image, DlibHogDetector().detect(image)[0].landmarks


def test_clean_view_is_the_image_and_flip_mirrors_the_landmarks(face):
    image, lm = face
    img, lm0 = render_view(image, lm, ViewParams())
    assert np.array_equal(img, image) and np.allclose(lm0, lm)
    img, lmf = render_view(image, lm, ViewParams(flip=True))
    assert np.array_equal(img, image[:, ::-1])
    w = image.shape[1]
    # dlib order kept: the points of one eye stay together after mirroring
    assert np.allclose(lmf[0], [w - 1 - lm[2, 0], lm[2, 1]]) and np.allclose(lmf[4, 0], w - 1 - lm[4, 0])


def test_views_are_deterministic_per_file_and_differ_between_views(face):
    aug = ViewAugment()
    assert aug.params("abc", 0) == ViewParams()
    assert aug.params("abc", 3) == aug.params("abc", 3)
    keys = {aug.params("abc", v).key() for v in range(1, 9)} | {aug.params("abd", 1).key()}
    assert len(keys) == 9
    image, lm = face
    dark = ViewParams(gamma=2.0, dark_gain=0.5, noise_sigma=4.0, seed=1)
    assert render_view(image, lm, dark)[0].mean() < 0.6 * image.mean()
    occ = render_view(image, lm, ViewParams(occlusion=(0.0, 70.0, 112.0, 112.0), occlusion_value=0))[0]
    assert (occ == 0).all(axis=2).sum() > 0.05 * occ.shape[0] * occ.shape[1]
    with pytest.raises(ConfigError, match="unknown key"):
        ViewAugment.from_config({"flip": 0.5})


def test_colour_face_tensor_keeps_rgb_and_replicates_grey():
    rgb = np.zeros((112, 112, 3), np.uint8)
    rgb[..., 0] = 255
    x = face_tensor([rgb, np.full((112, 112), 255, np.uint8)], colour=True)
    assert x.shape == (2, 3, 112, 112)
    assert x[0, 0].min() == 1.0 and x[0, 1].max() == -1.0 and x[1].min() == 1.0
    assert np.allclose(face_tensor(rgb)[0, 0], face_tensor(rgb)[0, 1])  # grey default unchanged


def test_each_view_is_labelled_by_the_teacher_once(fixtures, tmp_path, monkeypatch):
    samples = FaceFolder(fixtures / "lfw").samples[:4]
    aug = ViewAugment(occlusion_p=1.0)  # every augmented view occluded: the teacher must see it
    first = label_views(samples, tmp_path, aug, 2)
    assert first.computed == 2 * len(first.samples) and first.teacher.shape[1:] == (2, 128)
    t = first.teacher / np.linalg.norm(first.teacher, axis=2, keepdims=True)
    assert (np.sum(t[:, 0] * t[:, 1], axis=1) < 0.9999).all()  # augmented != clean target

    import train.teachers

    def boom(*a, **k):
        raise AssertionError("teacher ran although every view is cached")

    monkeypatch.setattr(train.teachers.FaceTeacher, "__init__", boom)
    again = label_views(samples, tmp_path, aug, 2)
    assert again.computed == 0 and np.array_equal(again.teacher, first.teacher)
    assert np.array_equal(again.landmarks, first.landmarks)


def test_deep_and_wide_students_build():
    base = MobileFaceNet(FaceNetConfig(width=0.25))
    deep = MobileFaceNet(FaceNetConfig(width=0.25, stages=face_stages("mfn_deep")))
    assert len(deep.features) > len(base.features)
    assert deep(torch.randn(2, 3, 112, 112)).shape == (2, 128)
    with pytest.raises(ValueError, match="mfn_deep"):
        face_stages("resnet")


class _Stop(Exception):
    pass


def test_resume_continues_from_the_saved_epoch(fixtures, tmp_path, monkeypatch):
    """Killed in epoch 3 after its history line and last.pt but before its resume.pt, then
    resumed: it goes on from epoch 2 and ends with the same weights, history and best
    checkpoint (epoch 1, by a validation EER that rises with every call) as one run."""
    cfg = load_config(None, "face_distill_views.yaml", VIEWS_TINY + ["train.epochs=3"])
    cache = tmp_path / "cache"
    real_validate = train.distill.validate
    calls = []

    def rising_eer(task, model, device, cfg):  # each run's first epoch is its best, not its last
        calls.append(1)
        return {**real_validate(task, model, device, cfg), "val_eer_student": 0.01 * len(calls)}

    monkeypatch.setattr(train.distill, "validate", rising_eer)
    straight = distill("face", fixtures / "lfw", cfg, tmp_path / "a", cache)
    assert straight["best"]["epoch"] == 1

    real_save = train.distill.save_resume

    def save_then_die(path, state):
        if state["epoch"] == 3:
            raise _Stop  # killed before epoch 3's resume.pt
        real_save(path, state)

    monkeypatch.setattr(train.distill, "save_resume", save_then_die)
    with pytest.raises(_Stop):
        distill("face", fixtures / "lfw", cfg, tmp_path / "b", cache)
    monkeypatch.setattr(train.distill, "save_resume", real_save)
    assert torch.load(tmp_path / "b" / "resume.pt", weights_only=False)["epoch"] == 2
    assert len((tmp_path / "b" / "history.jsonl").read_text().splitlines()) == 3  # epoch 3 logged
    with pytest.raises(ConfigError, match="--resume"):
        distill("face", fixtures / "lfw", cfg, tmp_path / "b", cache)  # never overwritten
    other = load_config(None, "face_distill_views.yaml", VIEWS_TINY + ["train.epochs=3", "train.lr=0.02"])
    with pytest.raises(ConfigError, match="train.lr"):
        distill("face", fixtures / "lfw", other, tmp_path / "b", cache, resume=True)
    resumed = distill("face", fixtures / "lfw", cfg, tmp_path / "b", cache, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]  # the killed epoch's line is not doubled
    sa = torch.load(tmp_path / "a" / "student.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "student.pt", weights_only=False)
    assert sa["epoch"] == sb["epoch"] == 1
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in a)
    assert not all(torch.equal(sb["state_dict"][k], b[k]) for k in a)  # best != last weights


def test_runtime_reads_the_face_models_colour_flag():
    from edge_runtime.errors import ModelError
    from edge_runtime.models import face_colour_from_meta

    assert face_colour_from_meta({"edgepin.front_end": '{"face_size": 112, "colour": true}'}, {})
    assert not face_colour_from_meta({"edgepin.front_end": '{"face_size": 112}'}, {})  # shipped grey
    assert not face_colour_from_meta({}, {})
    assert face_colour_from_meta({}, {"front_end": {"face_size": 112, "colour": True}})
    with pytest.raises(ModelError, match="colour"):
        face_colour_from_meta({"edgepin.front_end": '{"colour": "yes"}'}, {})


def test_cli_takes_resume_and_a_bad_teacher_is_named(tmp_path, fixtures):
    from edge_runtime.cli.main import build_parser

    args = build_parser().parse_args(["distill", "face", "--data", "d", "--out", "o", "--resume"])
    assert args.resume
    assert not build_parser().parse_args(["distill", "face", "--data", "d", "--out", "o"]).resume
    with pytest.raises(ConfigError, match="no.such:Teacher"):
        label_views(FaceFolder(fixtures / "lfw").samples[:1], tmp_path, ViewAugment(), 1,
                    teacher="no.such:Teacher")
