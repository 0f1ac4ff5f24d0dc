"""Distillation losses: match the teacher point-wise and keep its similarity structure."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def cosine_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cos) between each student embedding and its teacher target."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()


def relational_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the in-batch cosine-similarity matrices (off-diagonal).

    Point-wise matching alone lets errors spread in directions that change who is close to
    whom; verification only cares about those pairwise similarities, so they are matched too.
    """
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher, dim=1)
    n = s.shape[0]
    if n < 2:
        return s.new_zeros(())
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    return ((s @ s.T - t @ t.T)[off] ** 2).mean()


class MarginHead(nn.Module):
    """Additive-margin softmax (CosFace) over training identities; training only, never exported."""

    def __init__(self, dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale = scale
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T
        logits = logits - self.margin * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return F.cross_entropy(self.scale * logits, labels)
