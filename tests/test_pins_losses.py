"""PINs loss pieces on hand-built toy embeddings: curriculum, hardest-negative mining, loss."""

from __future__ import annotations

import math

import pytest
import torch

from edge_runtime.errors import ConfigError
from train.pins.losses import (
    contrastive_terms,
    curriculum_share,
    mine_negatives,
    n_hard,
    pins_loss,
)


def test_curriculum_steps_by_hand() -> None:
    # 12 epochs in 6 stages of 2 epochs: 0.3, 0.4, 0.5, 0.6, 0.7, 0.8
    got = [curriculum_share(e, 12, 0.3, 0.8, 6) for e in range(12)]
    want = [0.3, 0.3, 0.4, 0.4, 0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.8]
    assert got == pytest.approx(want)
    # 10 epochs in 3 stages: stage = epoch * 3 // 10 -> 0,0,0,0,1,1,1,2,2,2
    got = [curriculum_share(e, 10, 0.2, 0.6, 3) for e in range(10)]
    assert got == pytest.approx([0.2] * 4 + [0.4] * 3 + [0.6] * 3)
    assert curriculum_share(0, 5, 0.3, 0.8, 1) == 0.8  # one stage: the final share throughout
    assert curriculum_share(99, 5, 0.3, 0.8, 4) == pytest.approx(0.8)  # past the end: stays


def test_curriculum_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        curriculum_share(0, 0, 0.3, 0.8, 6)
    with pytest.raises(ConfigError):
        curriculum_share(0, 10, 0.3, 1.5, 6)


def test_n_hard_rounds_half_up() -> None:
    assert [n_hard(s, 10) for s in (0.0, 0.3, 0.25, 0.8, 1.0)] == [0, 3, 3, 8, 10]
    assert n_hard(0.5, 1) == 1 and n_hard(0.49, 1) == 0


def test_hardest_negatives_by_hand() -> None:
    # anchor 0: candidates 1..5 valid with similarities 0.1, 0.9, 0.5, 0.7, 0.3 (col 0 = itself)
    sim = torch.tensor([[1.0, 0.1, 0.9, 0.5, 0.7, 0.3]])
    valid = torch.tensor([[False, True, True, True, True, True]])
    idx, mask = mine_negatives(sim, valid, k=4, share=0.5, generator=torch.Generator().manual_seed(0))
    # round(0.5 * 4) = 2 hardest, in decreasing similarity: columns 2 (0.9) then 4 (0.7)
    assert idx[0, :2].tolist() == [2, 4]
    # the other 2 are random, distinct, valid and not already taken
    rest = idx[0, 2:].tolist()
    assert len(set(rest)) == 2 and set(rest) <= {1, 3, 5}
    assert mask.all()


def test_all_hard_and_no_hard() -> None:
    sim = torch.tensor([[0.0, 0.2, 0.8, 0.4], [0.6, 0.0, 0.1, 0.3]])
    valid = torch.tensor([[False, True, True, True], [True, False, True, True]])
    idx, mask = mine_negatives(sim, valid, k=3, share=1.0)
    assert idx.tolist() == [[2, 3, 1], [0, 3, 2]] and mask.all()
    idx, mask = mine_negatives(sim, valid, k=3, share=0.0, generator=torch.Generator().manual_seed(1))
    assert sorted(idx[0].tolist()) == [1, 2, 3] and sorted(idx[1].tolist()) == [0, 2, 3]


def test_too_few_valid_candidates_are_masked() -> None:
    # anchor 0 has a single valid negative (col 2); k=3 -> one real entry, two masked
    sim = torch.tensor([[0.9, 0.8, 0.1]])
    valid = torch.tensor([[False, False, True]])
    idx, mask = mine_negatives(sim, valid, k=3, share=0.34, generator=torch.Generator().manual_seed(0))
    assert mask.sum().item() == 1
    assert idx[mask].tolist() == [2]


def test_contrastive_terms_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0]])  # d^2 = 2
    negs = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # d = 0 and d = 2
    mask = torch.tensor([[1.0, 1.0]])
    # margin 1: hinge^2 = (1 - 0)^2 = 1 and (1 - 2)^+ = 0 -> mean 0.5; total 2.5
    assert contrastive_terms(a, p, negs, mask, 1.0).item() == pytest.approx(2.5)
    # masking the close negative removes its hinge: 2 + 0
    assert contrastive_terms(a, p, negs, torch.tensor([[0.0, 1.0]]), 1.0).item() == \
        pytest.approx(2.0)


def test_pins_loss_never_contrasts_a_group_with_itself() -> None:
    # rows 0 and 1 share a group (two segments of one clip): neither may be the other's negative
    # Faces equal voices, so a same-group "negative" at distance 0 would add a full hinge.
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]), dim=1)
    groups = torch.tensor([0, 0, 1])
    out = pins_loss(e, e, groups, k=2, share=1.0, margin=0.5)
    # positives at distance 0; the only valid negatives are orthogonal (d = sqrt 2 > margin)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["neg_active"].item() == 0.0


def test_pins_loss_value_by_hand() -> None:
    # two groups, orthogonal pairs: face0=voice0=(1,0), face1=voice1=(0,1); d_neg = sqrt(2)
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = pins_loss(e, e, torch.tensor([0, 1]), k=1, share=1.0, margin=2.0)
    want = (2.0 - math.sqrt(2.0)) ** 2  # per anchor, both directions identical
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)
