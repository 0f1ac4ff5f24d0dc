"""The paper-scale path on miniature VoxCeleb1/2 trees built from real fixtures.

GRID clips (tests/fixtures/grid) and speechocean762 utterances are laid out as the releases
are (`tests/vox_tree.py`), read by the readers, trained for a few steps with
`torchrun --nproc_per_node=2` on CPU (gloo), exported, and scored on their unseen-unheard
people by `edgepin eval crossmodal`. Tiny widths and two epochs: a path check, no accuracy
claim (7 people cannot give one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_runtime.bundle import load_manifest
from edge_runtime.cli.main import main
from tests.vox_tree import GRID, build_vox1, build_vox2
from train.datasets.voxceleb import VoxCeleb1, VoxCeleb2, identity_roles
from train.pins.losses import curriculum_share, percentile_negatives, pins_loss
from train.pins.pairs import kmeans_labels, progressive_k

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.faces=unzippedFaces", "data.frames_per_video=3", "data.workers=1",
    "split.n_train=5", "split.n_val=2", "split.n_test=4", "split.seed=4",
    "split.seen_heldout_fraction=0.5",
    "model.face={width: 0.25, embedding_dim: 128}",
    "model.voice={channels: [8, 8, 16, 16], blocks: [1, 1, 1, 1], embedding_dim: 256}",
    "model.hidden=32", "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=3",
    "train.threads=1", "train.loader_workers=1", "train.device=cpu", "curriculum.stages=1",
    "fuse.train={epochs: 1, batch_size: 64, lr: 0.001, weight_decay: 0.0001, threads: 1}",
    "fuse.model={dim: 16, layers: 1, heads: 2, ffn: 32, cosine_input: false}",
]


@pytest.fixture(scope="module")
def vox1(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_vox1(fixtures, tmp_path_factory.mktemp("vox1"))


def test_vox1_reader_finds_frames_below_the_video(vox1: Path) -> None:
    r = VoxCeleb1(vox1, faces_root=vox1 / "unzippedFaces")
    assert len({s.identity for s in r.face_samples}) == len(GRID)
    assert len(r.face_samples) == len(GRID) * 2 * 3  # 2 videos x 3 frames, one level deeper
    assert {s.group for s in r.face_samples} == {"vidA_half1", "vidB_half2"}
    assert len(r.identities()) == len(GRID) + 4  # speechocean speakers: voice only
    assert r.gender("id10005") == "F"


def test_roles_are_one_per_identity_whatever_modality_is_missing(vox1: Path) -> None:
    r = VoxCeleb1(vox1, faces_root=vox1 / "unzippedFaces")
    roles = identity_roles(r.identity_universe(), 5, 2, 4, seed=4)
    # the same list without the voice-only people's files: the split is taken from the
    # metadata, so no GRID person changes role (the old per-modality split moved them)
    faces_only = identity_roles(sorted(r.meta), 5, 2, 4, seed=4)
    assert roles == faces_only
    grid = {k: v for k, v in roles.items() if k.startswith("id1")}
    assert sorted(grid.values()).count("unseen") >= 2 and sorted(grid.values()).count("val") >= 2


def test_vox2_reader_m4a_and_mp4(fixtures: Path, tmp_path: Path) -> None:
    root = build_vox2(fixtures, tmp_path / "vox2")
    r = VoxCeleb2(root)
    assert len(r.voice_samples) == len(r.face_samples) == len(GRID) * 2
    assert {s.path.suffix for s in r.voice_samples} == {".m4a"}
    assert r.face_samples[0].modality == "clip" and r.voice_from_video == []
    assert r.genders()["id00005"] == "F"
    kinds = {s.modality: x for s, x in r.iter_decoded(max_frames=5)}
    assert kinds["voice"].ndim == 1 and kinds["voice"].size > 16000
    assert len(kinds["clip"].frames) == 5


def test_percentile_negative_moves_from_easy_to_hard() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]])
    valid = torch.tensor([[False, True, True, True, True]])  # column 0: same person
    picks = [int(percentile_negatives(sim, valid, t)[0][0, 0]) for t in (0.0, 0.5, 1.0)]
    assert picks == [1, 2, 4]  # least similar, median, most similar valid candidate
    gen = torch.Generator().manual_seed(0)
    rnd = {int(percentile_negatives(sim, valid, -1.0, gen)[0][0, 0]) for _ in range(50)}
    assert rnd == {1, 2, 3, 4}
    assert curriculum_share(0, 6, 0.3, 0.8, 2, random_epochs=2) == -1.0
    assert curriculum_share(2, 6, 0.3, 0.8, 2, random_epochs=2) == pytest.approx(0.3)
    assert curriculum_share(5, 6, 0.3, 0.8, 2, random_epochs=2) == pytest.approx(0.8)


def test_no_same_identity_negative() -> None:
    # rows 0/1 are two videos of one person, close together; rows 2/3 another person, far
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.14], [-1.0, 0.0],
                                                    [-0.99, -0.14]]), dim=1)
    groups, ids = torch.tensor([0, 1, 2, 3]), torch.tensor([7, 7, 8, 8])
    for mining in ("percentile", "mix"):
        kept_apart = pins_loss(f, f, groups, k=1, share=1.0, margin=1.2, identities=ids,
                               mining=mining)
        assert float(kept_apart["loss"]) == pytest.approx(0.0, abs=1e-6)  # only far negatives
        by_video = pins_loss(f, f, groups, k=1, share=1.0, margin=1.2, mining=mining)
        assert float(by_video["loss"]) > 0.5  # the same person's other video was the negative


def test_kmeans_is_deterministic_and_progressive() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    x = np.concatenate([c + 0.05 * rng.normal(size=(10, 8)) for c in centres])
    labels = kmeans_labels(x, 3, seed=1)
    assert labels.tolist() == kmeans_labels(x, 3, seed=1).tolist()
    assert all(len(set(labels[i * 10:(i + 1) * 10].tolist())) == 1 for i in range(3))
    assert [progressive_k(100, r, 3, 0.5, 0.25) for r in range(4)] == [50, 38, 25, 25]


def test_torchrun_two_ranks_export_and_unseen_eval(vox1: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "edge_runtime.cli", "train", "pins", "--data", str(vox1),
           "--config", str(ROOT / "train/configs/pins_full_voxceleb.yaml"), "--out", str(run),
           "--cache", str(cache), "--set", *TINY]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = [json.loads(x) for x in (run / "full_history.jsonl").read_text().splitlines()]
    assert [h["tau"] for h in hist] == [-1.0, 0.8]  # random epoch, then the percentile
    assert all(h["val_eer"] is not None for h in hist)  # validated on 2 val people
    entries = load_manifest(run)
    assert {"face", "voice", "pin_face", "pin_voice", "faa"} <= set(entries)
    assert entries["pin_face"].meta["config"]["mode"] == "full"
    capsys.readouterr()
    args = ["eval", "crossmodal", "--model", str(run), "--data", str(vox1), "--cache",
            str(cache), "--n-way", "2", "--trials", "200", "--json",
            "--trials-out", str(tmp_path / "trials.txt")]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["split"]: r for r in report["rows"]}
    unseen = rows["unseen-unheard"]
    assert unseen["n_identities"] == 2
    for s in ("cosine", "faa"):
        assert 0.0 <= unseen[s]["auc"] <= 1.0 and unseen[s]["n_genuine"] > 0
        assert "gender_matched" in unseen[s] or s == "faa"
    assert unseen["unimodal"]["face"]["n_genuine"] > 0
    text = (tmp_path / "trials.txt").read_text()
    assert text.startswith("# edgepin cross-modal trial list") and "real/unseen-unheard\t1" in text
    assert main(args[:-2] + ["--trials-in", str(tmp_path / "trials.txt")]) == 0
    again = {r["split"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert again["unseen-unheard"]["faa"]["auc"] == unseen["faa"]["auc"]


def test_eval_split_all_on_clips_never_trained_on(fixtures: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    # the shipped heads' unseen-unheard GRID fold (manifest: never trained on)
    clips = tmp_path / "clips"
    clips.mkdir()
    for c in ("lbax4n", "lrwp9a", "sbia1a", "sbwe5n"):
        (clips / f"{c}.mpg").symlink_to(fixtures / "grid" / f"{c}.mpg")
    capsys.readouterr()
    # scored on the committed fixed trial list (benchmarks/trials/README.md)
    assert main(["eval", "crossmodal", "--model", str(ROOT / "models"), "--data", str(clips),
                 "--split", "all", "--cache", str(tmp_path / "cache"), "--n-way", "4",
                 "--trials-in", str(ROOT / "benchmarks/trials/grid_unseen4_all.txt"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trained_on"] == []
    (row,) = report["rows"]
    assert row["split"] == "unseen-unheard" and row["n_identities"] == 4
    assert row["n_voices"] == 12  # three 1 s pieces of each 3 s clip
    assert row["unimodal"]["voice"]["eer"] is not None
    for s in ("cosine", "faa"):
        assert 0.0 <= row[s]["auc"] <= 1.0
        assert (row[s]["n_genuine"], row[s]["n_impostor"]) == (300, 630)


def test_vox2_full_mode_one_process(fixtures: Path, tmp_path: Path) -> None:
    """VoxCeleb2 as released (m4a audio, mp4 face tracks): trained, exported, scored."""
    from train.config import load_config
    from train.pins.evaluate import evaluate_crossmodal
    from train.pins.full import train_full

    root = build_vox2(fixtures, tmp_path / "vox2")
    over = [o for o in TINY if not o.startswith(("data.", "split.n_", "split.seed"))]
    cfg = load_config(None, "pins_full_voxceleb.yaml", over + [
        "data.source=voxceleb2", "data.meta_csv=vox2_meta.csv", "data.frame_step=10",
        "split.n_train=3", "split.n_val=1", "split.n_test=3", "train.loader_workers=0"])
    summary = train_full(root, cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert set(summary["exported"]) == {"face", "voice", "pin_face", "pin_voice", "faa"}
    report = evaluate_crossmodal(tmp_path / "run", root, students_dir=None,
                                 cache_dir=tmp_path / "cache", n_way=3, trials=100)
    rows = {r["split"]: r for r in report["rows"]}
    assert rows["unseen-unheard"]["n_identities"] == 3
    assert rows["unseen-unheard"]["n_voices"] == 6  # 2 m4a utterances of each of 3 people


def test_faa_stage1_pseudo_labels_and_pair_selection(vox1: Path, tmp_path: Path) -> None:
    """FAA's stage-1 options: k-means pseudo-identities (no id labels used for negatives),
    same-cluster cross-video positives, clean-positive selection; mix mining variant."""
    from train.config import load_config
    from train.pins.full import train_full

    cfg = load_config(None, "pins_full_voxceleb.yaml", TINY + [
        "train.epochs=3", "train.loader_workers=0", "export=false", "loss.exclude=cluster",
        "pseudo_labels.every=1", "pseudo_labels.start_epoch=1", "pseudo_labels.rounds=2",
        "pseudo_labels.clusters=[1.0, 0.7]", "pseudo_labels.cross_video_p=0.5",
        "pairs.stage1_clean_drop=0.34", "curriculum.mining=mix"])
    train_full(vox1, cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    hist = [json.loads(x) for x in (tmp_path / "run" / "full_history.jsonl").read_text()
            .splitlines()]
    assert "clusters" not in hist[0]  # first epoch: before any clustering
    assert [h["clusters"] for h in hist[1:]] == [3, 2]  # 3 training videos, then 0.7 x 3
    assert all(h["train_loss"] >= 0 for h in hist) and "hard_share" in hist[0]
    assert not (tmp_path / "run" / "faa.onnx").exists()  # export: false
    # the checkpoint is exported later, with another stage-2 variant
    assert main(["train", "fuse", "--data", str(vox1), "--pins", str(tmp_path / "run"),
                 "--out", str(tmp_path / "re"), "--cache", str(tmp_path / "cache"),
                 "--set", "model.cosine_input=true"]) == 0
    entries = load_manifest(tmp_path / "re")
    assert {"face", "voice", "pin_face", "pin_voice", "faa"} <= set(entries)
    assert entries["faa"].meta["config"]["model"]["cosine_input"] is True


def test_eval_split_all_names_people_the_heads_trained_on(fixtures: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    for c in ("bbaf2n", "lbax4n"):  # bbaf2n: a seen-heard (trained) person of the shipped heads
        (clips / f"{c}.mpg").symlink_to(fixtures / "grid" / f"{c}.mpg")
    capsys.readouterr()
    assert main(["eval", "crossmodal", "--model", str(ROOT / "models"), "--data", str(clips),
                 "--split", "all", "--cache", str(tmp_path / "cache"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trained_on"] == ["bbaf2n"] and "WARNING" in report["note"]


def test_eval_split_all_face_and_voice_folders_with_a_pairing_file(
        fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The pairing path only: these LFW faces and speechocean762 voices are DIFFERENT people
    (the file pairs them by labelled gender), so the figures mean nothing about identity."""
    (tmp_path / "faces").symlink_to(fixtures / "lfw")
    (tmp_path / "voices").symlink_to(fixtures / "speechocean762")
    (tmp_path / "pairs.tsv").write_text("face\tvoice\nSerena_Williams\tSPEAKER0036\n"
                                        "Tony_Blair\tSPEAKER0461\nHugo_Chavez\tSPEAKER0482\n")
    (tmp_path / "genders.tsv").write_text("identity\tgender\nSerena_Williams\tF\n"
                                          "Tony_Blair\tM\nHugo_Chavez\tM\n")
    capsys.readouterr()
    assert main(["eval", "crossmodal", "--model", str(ROOT / "models"), "--data", str(tmp_path),
                 "--split", "all", "--source", "pairing", "--genders",
                 str(tmp_path / "genders.tsv"), "--cache", str(tmp_path / "cache"),
                 "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["n_identities"] == 3 and row["n_voices"] == 9
    assert row["n_faces"] >= 9  # 4 images each, some may hold no detectable face
    gm = row["cosine"]["gender_matched"]  # impostors: Tony_Blair x Hugo_Chavez pairs only
    assert 0 < gm["n_impostor"] < row["cosine"]["n_impostor"]
    assert row["unimodal"]["face"]["eer"] is not None
