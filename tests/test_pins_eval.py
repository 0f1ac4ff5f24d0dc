"""Cross-modal metric composition on a hand-computed 3-person case, and the split helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from train.datasets import read_labels_tsv
from train.pins.data import (
    artificial_pairing,
    grid_folds,
    grid_segments,
    heldout_mask,
    voxceleb_roles,
)
from train.pins.evaluate import crossmodal_pairs, split_metrics

# voice x face scores of people A, B, C (one face and one voice each)
S = np.array([[0.9, 0.2, 0.5],
              [0.3, 0.8, 0.85],
              [0.1, 0.75, 0.7]])
IDS = ["A", "B", "C"]


def test_pairs_by_hand() -> None:
    gen, imp = crossmodal_pairs(IDS, IDS, max_genuine_per_identity=10,
                                max_impostor_per_identity=10, seed=0)
    assert gen.tolist() == [[0, 0], [1, 1], [2, 2]]
    assert imp.tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    _, imp1 = crossmodal_pairs(IDS, IDS, max_genuine_per_identity=10,
                               max_impostor_per_identity=1, seed=0)
    assert 1 <= len(imp1) <= 3 and all(a != b for a, b in imp1.tolist())


def test_split_metrics_by_hand() -> None:
    faa = 1.0 / (1.0 + np.exp(-8 * (S - 0.5)))  # monotone: every rank metric must agree
    m = split_metrics({"cosine": S, "faa": faa}, IDS, IDS, n_way=10, trials=4000, seed=0,
                      max_genuine_per_identity=10, max_impostor_per_identity=10)
    assert m["n_way"] == 3 and m["n_way_requested"] == 10 and m["chance_1_to_n"] == 1 / 3
    for name in ("cosine", "faa"):
        r = m[name]
        # genuine 0.9, 0.8, 0.7 vs impostors 0.2, 0.5, 0.3, 0.85, 0.1, 0.75: 15 of 18 wins
        assert r["auc"] == pytest.approx(15 / 18)
        # threshold 0.7: FAR = 2/6 (0.85, 0.75), FRR = 1/3 (0.7 not > 0.7): EER 1/3
        assert r["eer"] == pytest.approx(1 / 3)
        assert r["n_genuine"] == 3 and r["n_impostor"] == 6
        # V->F 1:2: voice A always right, B and C each beaten by one of two distractors
        assert r["match_1_2_v2f"] == pytest.approx((1 + 0.5 + 0.5) / 3, abs=0.03)
        # F->V 1:2: faces A and B always right, face C beaten by voice B half the time
        assert r["match_1_2_f2v"] == pytest.approx((1 + 1 + 0.5) / 3, abs=0.03)
        # 1:3 (N capped at 3 people): V->F only voice A right; F->V faces A and B right
        assert r["match_1_3_v2f"] == pytest.approx(1 / 3, abs=0.03)
        assert r["match_1_3_f2v"] == pytest.approx(2 / 3, abs=0.03)
        # one relevant item per query: AP = 1 / rank; V->F ranks 1, 2, 2; F->V ranks 1, 1, 2
        assert r["map_v2f"] == pytest.approx((1 + 0.5 + 0.5) / 3)
        assert r["map_f2v"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_split_metrics_needs_two_people() -> None:
    with pytest.raises(ConfigError):
        split_metrics({"cosine": np.ones((2, 2))}, ["A", "A"], ["A", "A"], n_way=2, trials=10,
                      seed=0, max_genuine_per_identity=5, max_impostor_per_identity=5)


def test_artificial_pairing_on_fixtures(fixtures: Path) -> None:
    fg = read_labels_tsv(fixtures / "lfw" / "GENDER.tsv", "person", "gender")
    vg = read_labels_tsv(fixtures / "speechocean762" / "SPEAKERS.tsv", "speaker", "gender")
    counts = {d.name: len(list(d.glob("*.jpg"))) for d in (fixtures / "lfw").iterdir()
              if d.is_dir()}
    pairs = artificial_pairing(counts, fg, vg, min_images=3, seed=0)
    assert pairs, "the fixtures hold gender-labelled people of both sets"
    for person, speaker, g in pairs:
        assert fg[person] == g == vg[speaker] and counts[person] >= 3
    assert len({p for p, _, _ in pairs}) == len(pairs) == len({s for _, s, _ in pairs})
    assert pairs == artificial_pairing(counts, fg, vg, min_images=3, seed=0)  # deterministic


def test_grid_folds_partition_people() -> None:
    ids = [f"p{i}" for i in range(7)]
    seen0, unseen0 = grid_folds(ids, 2, 0, 0)
    seen1, unseen1 = grid_folds(ids, 2, 1, 0)
    assert sorted(unseen0 + unseen1) == ids and not set(unseen0) & set(unseen1)
    assert sorted(seen0 + unseen0) == ids and {len(unseen0), len(unseen1)} == {3, 4}
    assert grid_folds(ids, 0, 0, 0) == (ids, [])
    with pytest.raises(ConfigError):
        grid_folds(ids, 2, 2, 0)


def test_grid_segments_never_cross_the_cut() -> None:
    segs = grid_segments(3.0, 1.5, 1.0, 0.25)
    assert [(a, b, h) for a, b, h in segs] == [
        (0.0, 1.0, "A"), (0.25, 1.25, "A"), (0.5, 1.5, "A"),
        (1.5, 2.5, "B"), (1.75, 2.75, "B"), (2.0, 3.0, "B")]
    assert grid_segments(2.0, 1.0, 1.5, 0.25) == [(0.0, 1.0, "A"), (1.0, 2.0, "B")]


def test_heldout_mask_keeps_one_for_training() -> None:
    keys = [f"f{i}" for i in range(9)]
    groups = ["a"] * 4 + ["b"] * 1 + ["c"] * 4
    held = heldout_mask(keys, groups, 0.25, seed=0)
    assert held[:4].sum() == 1 and held[4:5].sum() == 0 and held[5:].sum() == 1
    assert held.tolist() == heldout_mask(keys, groups, 0.25, seed=0).tolist()
    assert heldout_mask(keys, groups, 0.0, seed=0).sum() == 0


def test_voxceleb_roles_counts() -> None:
    ids = [f"id{i:05d}" for i in range(1251)]
    roles = voxceleb_roles(ids, 901, 100, 250, seed=0)
    got = {r: sum(1 for v in roles.values() if v == r) for r in ("train", "val", "unseen")}
    assert got == {"train": 901, "val": 100, "unseen": 250}
    small = voxceleb_roles(ids[:7], 901, 100, 250, seed=0)  # scaled: 1 unseen, 1 val
    assert sorted(small.values()).count("unseen") == 1 and sorted(small.values()).count("val") == 1
