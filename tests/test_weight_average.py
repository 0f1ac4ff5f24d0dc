"""Weight averaging and per-epoch checkpoints in `distill`, and choosing a checkpoint on the
validation speakers (`train.select`). Real fixture audio (speechocean762 excerpts, see
tests/fixtures/README.md); the runs are tiny, so only the mechanics are checked here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import train.distill
from edge_runtime.errors import ConfigError
from train.config import load_config
from train.distill import WeightAverage, distill, load_student
from train.select import PROTOCOLS, own_voice_consistency, protocol_eers, render, select

TINY = ["train.epochs=3", "train.batch_size=8", "train.workers=1", "split.test_fraction=0.25",
        "split.val_fraction=0.5", "eval.max_impostor_per_identity=5", "train.lr=0.01"]


def tiny_cfg(**train_keys):
    cfg = load_config(None, "voice_distill.yaml", TINY)
    cfg["train"].update(train_keys)
    return cfg


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def cache(fixtures, tmp_path_factory):
    """A teacher cache already filled: the run that fills it draws differently from one that
    reads it, so runs compared below all read it."""
    path = tmp_path_factory.mktemp("cache")
    distill("voice", fixtures / "speechocean762", tiny_cfg(), tmp_path_factory.mktemp("warm"), path)
    return path


def test_the_average_follows_the_warmed_up_decay_and_copies_counters():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = WeightAverage(model, 0.9)
    w0 = ema.model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.model[0].weight, 0.1 * w0 + 0.9 * model[0].weight)
    assert int(ema.model[1].num_batches_tracked) == 7
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.model[0].weight, model[0].weight, atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ConfigError, match="ema_decay"):
        WeightAverage(model, 1.0)


def test_the_saved_student_is_the_average_and_every_epoch_is_kept(fixtures, tmp_path, cache):
    plain = distill("voice", fixtures / "speechocean762", tiny_cfg(), tmp_path / "plain", cache)
    avg = distill("voice", fixtures / "speechocean762", tiny_cfg(ema_decay=0.5, keep_epochs=True),
                  tmp_path / "avg", cache)
    # the same training steps (the average never feeds back into them) ...
    assert [h["train_loss"] for h in avg["history"]] == [h["train_loss"] for h in plain["history"]]
    assert sorted(p.name for p in (tmp_path / "avg" / "epochs").iterdir()) == ["ep01.pt", "ep02.pt", "ep03.pt"]
    assert not (tmp_path / "plain" / "epochs").exists()
    state = torch.load(tmp_path / "avg" / "resume.pt", weights_only=False)
    last = torch.load(tmp_path / "avg" / "last.pt", weights_only=False)["state_dict"]
    kept = torch.load(tmp_path / "avg" / "epochs" / "ep03.pt", weights_only=False)["state_dict"]
    # ... but what is saved is the average, not the trained weights
    assert all(torch.equal(last[k], state["ema"]["weights"][k]) for k in last)
    assert all(torch.equal(last[k], kept[k]) for k in last)
    assert not all(torch.equal(last[k], state["model"][k]) for k in last)
    assert state["ema"]["updates"] >= 3  # one per training step, at least one step per epoch
    model, _ = load_student(tmp_path / "avg" / "epochs" / "ep01.pt")
    assert not model.training


def test_a_resumed_run_keeps_its_average(fixtures, tmp_path, monkeypatch, cache):
    cfg = tiny_cfg(ema_decay=0.5, keep_epochs=True)
    distill("voice", fixtures / "speechocean762", cfg, tmp_path / "a", cache)
    real_save = train.distill.save_resume

    def save_then_die(path, state):
        if state["epoch"] == 3:
            raise _Stop
        real_save(path, state)

    monkeypatch.setattr(train.distill, "save_resume", save_then_die)
    with pytest.raises(_Stop):
        distill("voice", fixtures / "speechocean762", cfg, tmp_path / "b", cache)
    monkeypatch.setattr(train.distill, "save_resume", real_save)
    distill("voice", fixtures / "speechocean762", cfg, tmp_path / "b", cache, resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_protocol_eers_separate_and_confuse():
    ids = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    centres = np.eye(3, 8)
    clean = np.repeat(centres, 4, axis=0)
    rng = np.random.default_rng(0)
    noisy = clean + 0.01 * rng.standard_normal(clean.shape)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    swapped = np.roll(noisy, 4, axis=0)  # every probe is another speaker's
    good = protocol_eers(noisy, noisy, noisy, ids)
    assert set(good) == set(PROTOCOLS) and max(good.values()) == 0.0
    bad = protocol_eers(noisy, swapped, None, ids)
    assert bad["whole"] == 0.0 and bad["probe 2 s"] > 50.0 and "8 kHz short" not in bad


def test_own_voice_consistency_finds_the_person_whose_recordings_disagree():
    # synthetic embeddings (the computation, not an accuracy claim): four people of 8 utterances;
    # person "d" has own recordings that scatter, the others agree
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16)
    ids, rows = [], []
    for k, who in enumerate("abcd"):
        noise = 0.6 if who == "d" else 0.1
        for _ in range(8):
            ids.append(who)
            rows.append(centres[k] + noise * rng.standard_normal(16))
    emb = np.stack(rows)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    got = own_voice_consistency(emb, ids)
    assert got is not None and got["people"] == 4 and got["lowest_speaker"] == "d"
    even = own_voice_consistency(emb[:24], ids[:24])  # without "d"
    assert even is not None and even["spread"] < got["spread"] / 2
    # the order in which people come does not matter, only each person's own order
    order = [i for k in (3, 1, 0, 2) for i in range(8 * k, 8 * k + 8)]
    again = own_voice_consistency(emb[order], [ids[i] for i in order])
    assert again is not None and abs(again["spread"] - got["spread"]) < 1e-9
    # too few utterances per person, or one person: nothing to compare
    assert own_voice_consistency(emb[[0, 1, 8, 9]], ["a", "a", "b", "b"]) is None
    assert own_voice_consistency(emb[:8], ids[:8]) is None


def test_select_scores_every_kept_epoch_on_validation_speakers(fixtures, tmp_path, cache):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="keep_epochs"):
        run.mkdir()
        select(run, fixtures / "speechocean762", cache)
    distill("voice", fixtures / "speechocean762", tiny_cfg(ema_decay=0.5, keep_epochs=True), run, cache)
    res = select(run, fixtures / "speechocean762", cache, also=[run / "student.pt"])
    assert res["speakers"] == 2  # the run's validation split, not its test speakers
    assert [r["epoch"] for r in res["epochs"]] == [1, 2, 3]
    assert res["chosen"]["mean"] == min(r["mean"] for r in res["epochs"])
    for r in [*res["epochs"], res["teacher"]]:
        assert set(r["eer"]) == set(PROTOCOLS)
        assert all(0.0 <= v <= 100.0 for v in r["eer"].values())
    table = render(res)
    assert "(chosen)" in table and "teacher" in table and "own-voice spread" in table
    for r in [*res["epochs"], res["teacher"]]:  # the fixtures' speakers hold too few utterances,
        c = r["consistency"]                     # or enough: either way a well-formed answer
        assert c is None or (c["people"] >= 2 and c["spread"] >= 0.0)
    json.dumps(res)  # what main() writes


def test_select_command_names_a_run_without_kept_epochs_in_one_line(tmp_path, capsys):
    from train.select import main

    (tmp_path / "run").mkdir()
    assert main(["--run", str(tmp_path / "run"), "--data", "d", "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "keep_epochs" in err and str(tmp_path / "run") in err


def test_average_of_kept_epochs_is_their_mean_and_a_loadable_student(fixtures, tmp_path, cache):
    from train.average import average_checkpoints, main, recompute_batchnorm

    run = tmp_path / "run"
    distill("voice", fixtures / "speechocean762", tiny_cfg(keep_epochs=True), run, cache)
    eps = [run / "epochs" / f"ep0{i}.pt" for i in (1, 2, 3)]
    sds = [torch.load(p, weights_only=False)["state_dict"] for p in eps]
    avg = average_checkpoints(eps)
    for k, v in avg["state_dict"].items():
        if torch.is_floating_point(v):
            assert torch.allclose(v, (sds[0][k] + sds[1][k] + sds[2][k]) / 3, atol=1e-6), k
        else:
            assert torch.equal(v, sds[2][k]), k
    assert avg["averaged_from"] == [str(p) for p in eps]

    bn = recompute_batchnorm(avg, fixtures / "speechocean762", cache, batches=2)
    stats = [k for k in bn["state_dict"] if k.endswith("running_mean")]
    assert stats and any(not torch.equal(bn["state_dict"][k], avg["state_dict"][k]) for k in stats)
    learned = [k for k in bn["state_dict"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(bn["state_dict"][k], avg["state_dict"][k]) for k in learned)

    out = tmp_path / "avg.pt"
    assert main([*map(str, eps), "--out", str(out)]) == 0
    model, ckpt = load_student(out)  # what select --also, export and voice_door read
    assert ckpt["metrics"]["averaged_epochs"] == [1, 2, 3] and not model.training
    assert main([*map(str, eps), "--out", str(out)]) == 1  # never overwrites


def test_average_refuses_other_networks_and_a_single_checkpoint(fixtures, tmp_path, cache, capsys):
    from train.average import average_checkpoints, main

    distill("voice", fixtures / "speechocean762", tiny_cfg(), tmp_path / "a", cache)
    wide = tiny_cfg()
    wide["model"]["channels"] = [8, 16, 32, 64]
    distill("voice", fixtures / "speechocean762", wide, tmp_path / "b", cache)
    with pytest.raises(ConfigError, match="another network"):
        average_checkpoints([tmp_path / "a" / "student.pt", tmp_path / "b" / "student.pt"])
    capsys.readouterr()  # the training runs' progress
    assert main([str(tmp_path / "a" / "student.pt"), "--out", str(tmp_path / "o.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at least two" in err
