"""FAA pair selection: positives only within a group, negatives never of the same person."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from train.pins.pairs import clean_positives, select_pairs


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    # 6 groups (clips); groups c0/c1 are the SAME person "p0" (two videos of one speaker)
    groups = [f"c{i}" for i in range(6)]
    person = {"c0": "p0", "c1": "p0", "c2": "p2", "c3": "p3", "c4": "p4", "c5": "p5"}
    fg = [g for g in groups for _ in range(5)]
    vg = [g for g in groups for _ in range(4)]
    f = _unit(rng.normal(size=(len(fg), 8)))
    v = _unit(rng.normal(size=(len(vg), 8)))
    return f, v, fg, vg, [person[g] for g in fg], [person[g] for g in vg]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negatives_never_share_person_or_group(seed: int) -> None:
    f, v, fg, vg, fp, vp = _toy(seed)
    pairs = select_pairs(f, v, fg, vg, per_group=20, neg_per_pos=3, hard_share=0.7,
                         hard_pool=3, clean_drop=0.2, seed=seed, face_person=fp,
                         voice_person=vp)
    neg = pairs.label == 0
    assert neg.sum() > 0
    fpa, vpa = np.array(fp, dtype=object), np.array(vp, dtype=object)
    assert not np.any(fpa[pairs.face[neg]] == vpa[pairs.voice[neg]])
    # c0 and c1 (same person, different clips) are never used as a negative of each other
    fga, vga = np.array(fg, dtype=object), np.array(vg, dtype=object)
    cross = {(a, b) for a, b in zip(fga[pairs.face[neg]], vga[pairs.voice[neg]], strict=True)}
    assert ("c0", "c1") not in cross and ("c1", "c0") not in cross
    # positives: same group only
    pos = pairs.label == 1
    assert np.all(fga[pairs.face[pos]] == vga[pairs.voice[pos]])


def test_without_person_labels_groups_are_the_people() -> None:
    f, v, fg, vg, _, _ = _toy(3)
    pairs = select_pairs(f, v, fg, vg, per_group=10, neg_per_pos=2, seed=3)
    neg = pairs.label == 0
    assert not np.any(np.array(fg)[pairs.face[neg]] == np.array(vg)[pairs.voice[neg]])
    assert (pairs.label == 0).sum() == 2 * (pairs.label == 1).sum()


def test_hard_share_and_hard_pool() -> None:
    f, v, fg, vg, _, _ = _toy(4)
    pairs = select_pairs(f, v, fg, vg, per_group=20, neg_per_pos=1, hard_share=0.5,
                         hard_pool=1, clean_drop=0.0, seed=0)
    n_pos = int((pairs.label == 1).sum())
    face_anchors, voice_anchors = (n_pos + 1) // 2, n_pos // 2  # positives alternate
    # exactly round-half-up(0.5 * anchors) hard negatives in each anchor half
    assert int(pairs.hard.sum()) == (face_anchors + 1) // 2 + (voice_anchors + 1) // 2
    sim = f @ v.T
    fga, vga = np.array(fg), np.array(vg)
    for fi, vi in zip(pairs.face[pairs.hard], pairs.voice[pairs.hard], strict=True):
        # hard_pool=1: the single most similar other-group item of its anchor (face or voice)
        best_v = max((j for j in range(len(vg)) if vga[j] != fga[fi]), key=lambda j: sim[fi, j])
        best_f = max((i for i in range(len(fg)) if fga[i] != vga[vi]), key=lambda i: sim[i, vi])
        assert vi == best_v or fi == best_f


def test_clean_positives_drop_the_least_similar() -> None:
    # one group, 2 faces x 2 voices; similarities 0.9, 0.1 / 0.5, 0.7
    sim = np.array([[0.9, 0.1], [0.5, 0.7]])
    fi, vi = clean_positives(sim, ["g", "g"], ["g", "g"], per_group=10, clean_drop=0.25,
                             rng=np.random.default_rng(0))
    # ceil(4 * 0.75) = 3 kept: everything but (0, 1) at 0.1
    assert sorted(zip(fi.tolist(), vi.tolist(), strict=True)) == [(0, 0), (1, 0), (1, 1)]
    with pytest.raises(ConfigError):
        clean_positives(sim, ["g", "g"], ["g", "g"], per_group=1, clean_drop=1.0,
                        rng=np.random.default_rng(0))


def test_single_person_has_no_negative() -> None:
    f, v = _unit(np.ones((2, 4))), _unit(np.ones((2, 4)))
    with pytest.raises(ConfigError):
        select_pairs(f, v, ["a", "a"], ["a", "a"])
