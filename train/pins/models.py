"""PIN projection heads, the FAA match encoder and the end-to-end (full mode) model.

Everything here exports to plain ONNX opset 17 that TensorRT parses without plugins: Linear
(MatMul/Gemm), BatchNorm (folded at export), ReLU, Softmax, and a LayerNorm written out as
ReduceMean/Sub/Mul/Sqrt/Div, because the fused LayerNormalization op (opset 17) is not parsed by
the TensorRT 8.5 shipped with JetPack 5. No GELU (an Erf chain that quantizes poorly).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PIN_DIM = 128
FACE_DIM = 128
VOICE_DIM = 256


class PinHead(nn.Module):
    """Student embedding -> L2-normalised PIN: Linear-BN-ReLU-Linear, foldable and INT8-friendly."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = PIN_DIM) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(emb), dim=1)


class PinHeads(nn.Module):
    """The face and the voice head of one shared PIN space (trained together, exported apart)."""

    def __init__(self, face_dim: int = FACE_DIM, voice_dim: int = VOICE_DIM, hidden: int = 256,
                 pin_dim: int = PIN_DIM) -> None:
        super().__init__()
        self.face = PinHead(face_dim, hidden, pin_dim)
        self.voice = PinHead(voice_dim, hidden, pin_dim)

    def forward(self, face_emb: torch.Tensor, voice_emb: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.face(face_emb), self.voice(voice_emb)


class PlainLayerNorm(nn.Module):
    """LayerNorm as elementary ops, so the exported graph has no LayerNormalization node."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(dim=-1, keepdim=True)
        return xc / torch.sqrt(var + self.eps) * self.weight + self.bias


class _Block(nn.Module):
    """Pre-norm transformer layer over a fixed, tiny number of tokens (CLS, face, voice)."""

    def __init__(self, dim: int, heads: int, ffn: int, tokens: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"FAA width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.tokens = heads, dim // heads, tokens
        self.norm1 = PlainLayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = PlainLayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, hd = self.tokens, self.heads, self.head_dim
        # -1 for the batch keeps every Reshape target a constant (no Shape/Gather in the graph)
        qkv = self.qkv(self.norm1(x)).reshape(-1, t, 3, h, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, h, t, hd)
        att = torch.softmax((q @ k.transpose(-2, -1)) * (hd**-0.5), dim=-1)
        y = (att @ v).permute(0, 2, 1, 3).reshape(-1, t, h * hd)
        x = x + self.proj(y)
        return x + self.ffn(self.norm2(x))


class FAAEncoder(nn.Module):
    """Fuse after align: a small transformer over [CLS, face PIN, voice PIN] -> match logit.

    As published (Peng et al. 2024), the classifier reads the CLS token only. `cosine_input`
    (an edgepin variant, used by the shipped faa.onnx) also feeds it the PIN cosine of the pair
    as a skip path, so a ~100 k-parameter encoder only learns corrections to cosine scoring;
    it works against the point of fusing beyond cosine, hence off by default.
    """

    TOKENS = 3

    def __init__(self, pin_dim: int = PIN_DIM, dim: int = 64, layers: int = 2, heads: int = 4,
                 ffn: int = 192, cosine_input: bool = False) -> None:
        super().__init__()
        self.cosine_input = cosine_input
        self.face_in = nn.Linear(pin_dim, dim)
        self.voice_in = nn.Linear(pin_dim, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.type_emb = nn.Parameter(torch.randn(1, self.TOKENS, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, ffn, self.TOKENS) for _ in range(layers))
        self.norm = PlainLayerNorm(dim)
        self.out = nn.Linear(dim + int(cosine_input), 1)

    def forward(self, face_pin: torch.Tensor, voice_pin: torch.Tensor) -> torch.Tensor:
        """Match logits (N,) for PIN-space pairs."""
        f = self.face_in(face_pin).unsqueeze(1)
        v = self.voice_in(voice_pin).unsqueeze(1)
        cls = self.cls.expand(f.shape[0], -1, -1)
        x = torch.cat([cls, f, v], dim=1) + self.type_emb
        for block in self.blocks:
            x = block(x)
        cls_out = self.norm(x[:, 0])
        if self.cosine_input:
            cos = (face_pin * voice_pin).sum(dim=1, keepdim=True)
            cls_out = torch.cat([cls_out, cos], dim=1)
        return self.out(cls_out).squeeze(1)


class FaaScorer(nn.Module):
    """What ships as `faa.onnx`: STUDENT embeddings in, match probability out.

    The frozen PIN heads are inside the graph, so the device feeds the two student embeddings
    it already has and makes one call; `logits` is the training entry point (BCE with logits).
    """

    def __init__(self, pins: PinHeads, encoder: FAAEncoder) -> None:
        super().__init__()
        self.pins = pins
        self.encoder = encoder

    def logits(self, face_emb: torch.Tensor, voice_emb: torch.Tensor) -> torch.Tensor:
        face_pin, voice_pin = self.pins(face_emb, voice_emb)
        return self.encoder(face_pin, voice_pin)

    def forward(self, face_emb: torch.Tensor, voice_emb: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(face_emb, voice_emb))


class FullPins(nn.Module):
    """Full mode: face and voice backbones trained end to end, each followed by its PIN head."""

    def __init__(self, face_net: nn.Module, voice_net: nn.Module, heads: PinHeads) -> None:
        super().__init__()
        self.face_net, self.voice_net, self.heads = face_net, voice_net, heads

    def forward(self, face: torch.Tensor, feats: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.face_net(face), self.voice_net(feats))


def build_heads(model_cfg: dict, face_dim: int = FACE_DIM, voice_dim: int = VOICE_DIM) -> PinHeads:
    """PIN heads from the `model` section of a pins config."""
    return PinHeads(face_dim, voice_dim, int(model_cfg.get("hidden", 256)),
                    int(model_cfg.get("pin_dim", PIN_DIM)))


def build_encoder(model_cfg: dict, pin_dim: int = PIN_DIM) -> FAAEncoder:
    """FAA encoder from the `model` section of a fuse config."""
    return FAAEncoder(pin_dim, int(model_cfg.get("dim", 64)), int(model_cfg.get("layers", 2)),
                      int(model_cfg.get("heads", 4)), int(model_cfg.get("ffn", 192)),
                      bool(model_cfg.get("cosine_input", False)))


def n_params(model: nn.Module) -> int:
    """All parameters (trainable or frozen), as reported in the manifest."""
    return sum(p.numel() for p in model.parameters())
