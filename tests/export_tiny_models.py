"""Tiny stand-ins for the students, used by the export/quantization tests.

They use the same op mix as the real models (Conv/BN/PReLU/residual Add/GAP/Linear + L2
normalisation for the embedders; Linear/attention/LayerNorm/Sigmoid for the FAA head) at a
size that exports and quantizes in well under a second. Weights are random: these models test
the toolkit's mechanics, never accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from export.onnx_export import export_onnx

FACE_HW = 24


class TinyFace(nn.Module):
    """N x 3 x H x W -> N x 32 L2-normalised embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.b1 = nn.BatchNorm2d(16)
        self.p1 = nn.PReLU(16)
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False)
        self.b2 = nn.BatchNorm2d(16)
        self.p2 = nn.PReLU(16)
        self.c3 = nn.Conv2d(16, 32, 1, bias=True)
        self.fc = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.p1(self.b1(self.c1(x)))
        y = y + self.p2(self.b2(self.c2(y)))
        y = F.relu(self.c3(y)).mean(dim=(2, 3))
        return F.normalize(self.fc(y), dim=1)


class TinyFAA(nn.Module):
    """(face_emb N x 32, voice_emb N x 24) -> match_prob N, via one attention block."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.pf, self.pv = nn.Linear(32, d), nn.Linear(24, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, 1)
        self.scale = d**-0.5

    def forward(self, face_emb: torch.Tensor, voice_emb: torch.Tensor) -> torch.Tensor:
        t = torch.stack([self.pf(face_emb), self.pv(voice_emb)], dim=1)  # N x 2 x d
        att = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) * self.scale, dim=-1)
        t = self.ln(t + att @ self.v(t))
        return torch.sigmoid(self.out(t.mean(dim=1))).squeeze(1)


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics so folding and quantization have something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def face_model(seed: int = 0) -> TinyFace:
    torch.manual_seed(seed)
    return _randomise_bn(TinyFace(), seed)


def faa_model(seed: int = 0) -> TinyFAA:
    torch.manual_seed(seed)
    return TinyFAA().eval()


def face_inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"face": rng.uniform(-1, 1, (n, 3, FACE_HW, FACE_HW)).astype(np.float32)}


def faa_inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 32)).astype(np.float32)
    v = rng.standard_normal((n, 24)).astype(np.float32)
    return {
        "face_emb": f / np.linalg.norm(f, axis=1, keepdims=True),
        "voice_emb": v / np.linalg.norm(v, axis=1, keepdims=True),
    }


def export_face(out: Path, *, opset: int = 17, model: nn.Module | None = None) -> Path:
    model = model if model is not None else face_model()
    example = {"face": torch.from_numpy(face_inputs(2)["face"])}
    return export_onnx(
        model, example, out, input_names=["face"], output_names=["embedding"],
        dynamic_axes={"face": {0: "N"}, "embedding": {0: "N"}}, opset=opset,
    )


def export_faa(out: Path, *, opset: int = 17, model: nn.Module | None = None) -> Path:
    model = model if model is not None else faa_model()
    example = {k: torch.from_numpy(v) for k, v in faa_inputs(2).items()}
    return export_onnx(
        model, example, out, input_names=["face_emb", "voice_emb"], output_names=["match_prob"],
        dynamic_axes={"face_emb": {0: "N"}, "voice_emb": {0: "N"}, "match_prob": {0: "N"}},
        opset=opset,
    )
