"""Learnable PINs' contrastive loss with a curriculum of hard in-batch negatives.

Two mining rules, chosen by `mining`:
- "percentile" (PINs as published, Nagrani et al. ECCV 2018, Sec. 3.2 "curriculum mining"):
  per anchor, the valid in-batch negatives are ranked by similarity and ONE negative is taken
  at hardness percentile tau (tau = 0: the easiest, tau = 1: the hardest); tau moves from easy
  to hard over training on the schedule of the config (`curriculum.start/end/stages`, after
  `curriculum.random_epochs` of uniformly random negatives).
- "mix" (edgepin's earlier variant, kept as an option): `k` negatives per anchor,
  `round(share * k)` of them the hardest and the rest uniform; `share` follows the same schedule.
A negative is never of the same group (clip / video) nor, where identities are given, of the
same identity (another video of the same person is not another person).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from edge_runtime.errors import ConfigError


def curriculum_share(epoch: int, epochs: int, start: float, end: float, stages: int,
                     random_epochs: int = 0) -> float:
    """Curriculum value (hard share or percentile tau) for 0-based `epoch`: `stages` equal
    blocks of the epochs after `random_epochs`, linear steps; -1.0 during the random epochs.

    epochs=12, stages=6, 0.3 -> 0.8 gives 0.3 for epochs 0-1, 0.4 for 2-3, ..., 0.8 for 10-11.
    """
    if epoch < random_epochs:
        return -1.0
    epoch, epochs = epoch - random_epochs, epochs - random_epochs
    if epochs < 1 or stages < 1:
        raise ConfigError(f"curriculum needs epochs >= 1 and stages >= 1, got {epochs}, {stages}")
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise ConfigError(f"curriculum shares must be in [0, 1], got {start} -> {end}")
    if stages == 1:
        return float(end)
    stage = min(stages - 1, max(0, epoch) * stages // epochs)
    return float(start + (end - start) * stage / (stages - 1))


def n_hard(share: float, k: int) -> int:
    """Hard negatives out of `k` for a share (half rounds up, unlike Python's banker's round)."""
    return int(math.floor(share * k + 0.5))


def mine_negatives(sim: torch.Tensor, valid: torch.Tensor, k: int, share: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (A, k), used mask (A, k)) of the negatives chosen for each anchor row.

    `sim` (A, C): anchor-candidate similarity; `valid` (A, C): True where the candidate may be
    a negative (another clip / pairing). Columns 0..h-1 of the result are the h hardest valid
    candidates in decreasing similarity, the rest a uniform sample without replacement of the
    other valid ones. Rows with fewer than k valid candidates get them all; `mask` marks
    the real entries (padding repeats an index and must be ignored).
    """
    if sim.shape != valid.shape or sim.ndim != 2:
        raise ValueError(f"sim {tuple(sim.shape)} and valid {tuple(valid.shape)} must be equal 2-D")
    a, c = sim.shape
    k = min(k, c)
    h = min(n_hard(share, k), k)
    neg_inf = torch.finfo(sim.dtype).min
    s = sim.detach().masked_fill(~valid, neg_inf)
    hard = torch.topk(s, h, dim=1).indices if h else sim.new_zeros((a, 0), dtype=torch.long)
    hard_ok = valid.gather(1, hard)
    keys = torch.rand((a, c), generator=generator, device=sim.device, dtype=sim.dtype)
    taken = ~valid
    taken = taken.scatter(1, hard, True)
    keys = keys.masked_fill(taken, -1.0)  # uniform keys in [0, 1): invalid ones sort last
    rnd_keys, rnd = torch.topk(keys, k - h, dim=1)
    idx = torch.cat([hard, rnd], dim=1)
    mask = torch.cat([hard_ok, rnd_keys >= 0], dim=1)
    return idx, mask


def contrastive_terms(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                      mask: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-anchor PINs contrastive loss: d(a, p)^2 + mean over used negatives of
    max(0, margin - d(a, n))^2, with d the Euclidean distance of unit vectors (in [0, 2]).

    anchor, positive (A, D); negatives (A, k, D); mask (A, k).
    """
    d_pos = (anchor - positive).pow(2).sum(dim=1)
    d_neg = (anchor.unsqueeze(1) - negatives).pow(2).sum(dim=2).clamp_min(1e-12).sqrt()
    hinge = F.relu(margin - d_neg).pow(2) * mask
    return d_pos + hinge.sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def percentile_negatives(sim: torch.Tensor, valid: torch.Tensor, tau: float,
                         generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (A, 1), used mask (A, 1)): per anchor the valid candidate at hardness
    percentile `tau` of its similarity ranking (0 = least similar, 1 = most similar);
    tau < 0 draws one valid candidate uniformly (the random-negative warm-up)."""
    if sim.shape != valid.shape or sim.ndim != 2:
        raise ValueError(f"sim {tuple(sim.shape)} and valid {tuple(valid.shape)} must be equal 2-D")
    if tau > 1.0:
        raise ConfigError(f"hardness percentile tau must be <= 1, got {tau}")
    n_valid = valid.sum(dim=1)
    if tau < 0:
        keys = torch.rand(sim.shape, generator=generator, device=sim.device, dtype=sim.dtype)
        idx = keys.masked_fill(~valid, -1.0).argmax(dim=1, keepdim=True)
    else:
        # valid candidates first, in increasing similarity: rank r of n is percentile r/(n-1)
        order = sim.detach().masked_fill(~valid, torch.finfo(sim.dtype).max).argsort(dim=1)
        rank = torch.round(tau * (n_valid - 1).clamp_min(0).to(sim.dtype)).long()
        idx = order.gather(1, rank.unsqueeze(1))
    return idx, (n_valid > 0).unsqueeze(1)


def pins_loss(face_pin: torch.Tensor, voice_pin: torch.Tensor, groups: torch.Tensor, *, k: int,
              share: float, margin: float, generator: torch.Generator | None = None,
              identities: torch.Tensor | None = None, mining: str = "mix",
              positive_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Symmetric in-batch loss: row i of face and voice is a positive pair (same clip / pairing);
    every row of another `group` (and, if given, another identity) is a candidate negative.

    `share` is the curriculum value: the hard share ("mix") or the hardness percentile tau
    ("percentile", one negative per anchor; tau < 0 = random). `positive_weight` (B,) scales
    each row's positive term (0 leaves an unclean pair out of the attraction). Both directions
    are used: face anchors against voice negatives and voice anchors against face negatives.
    Returns {"loss", "pos_d2", "neg_active"} (the last two for logging).
    """
    if face_pin.shape != voice_pin.shape or face_pin.shape[0] != groups.shape[0]:
        raise ValueError("face_pin, voice_pin and groups must describe the same batch rows")
    if mining not in ("mix", "percentile"):
        raise ConfigError(f"curriculum.mining must be 'mix' or 'percentile', got {mining!r}")
    valid = groups.unsqueeze(0) != groups.unsqueeze(1)
    if identities is not None:
        valid &= identities.unsqueeze(0) != identities.unsqueeze(1)
    sim = face_pin @ voice_pin.T  # (face anchors, voice candidates)
    total = face_pin.new_zeros(())
    active = face_pin.new_zeros(())
    w = positive_weight if positive_weight is not None else face_pin.new_ones(face_pin.shape[0])
    for anc, pos, cand, s in ((face_pin, voice_pin, voice_pin, sim),
                              (voice_pin, face_pin, face_pin, sim.T)):
        if mining == "percentile":
            idx, mask = percentile_negatives(s, valid, share, generator)
        else:
            idx, mask = mine_negatives(s, valid, k, max(0.0, share), generator)  # -1: random
        negs = cand[idx]
        d_pos = (anc - pos).pow(2).sum(dim=1)
        terms = contrastive_terms(anc, pos, negs, mask.to(anc.dtype), margin)
        total = total + (terms - d_pos + w * d_pos).mean()
        d = (anc.unsqueeze(1) - negs).pow(2).sum(dim=2).sqrt()
        active = active + ((d < margin) & mask).float().sum() / mask.sum().clamp_min(1)
    pos_d2 = (face_pin - voice_pin).pow(2).sum(dim=1).mean()
    return {"loss": total / 2, "pos_d2": pos_d2.detach(), "neg_active": (active / 2).detach()}
