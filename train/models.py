"""Student backbones: the only part of a training run that gets exported and deployed.

Both use only Conv/BatchNorm/PReLU/ReLU/Linear plus pooling, which fold and quantize cleanly
to INT8 in TensorRT; the final L2 normalisation stays in float (it is excluded from
quantization at export). Training heads (classification) live in `train.heads`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = ("relu", "prelu")


def _conv_bn(
    cin: int, cout: int, k: int, s: int, groups: int = 1, act: str | None = "relu"
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act == "prelu":
        layers.append(nn.PReLU(cout))
    elif act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act is not None:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    return nn.Sequential(*layers)


class _Bottleneck(nn.Module):
    """MobileNetV2 inverted residual, as in MobileFaceNet (linear projection)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, act: str) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            _conv_bn(cin, hidden, 1, 1, act=act),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act),
            _conv_bn(hidden, cout, 1, 1, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


# Stage layouts of the face student: (expansion, channels, repeats, stride) per stage.
# "mfn" is MobileFaceNet (Chen et al., 2018); "mfn_deep" doubles the 14x14 and 7x7 stages
# (where identity detail is formed) for 10 more blocks, at about 1.4x the multiply-adds.
FACE_STAGES: dict[str, list[tuple[int, int, int, int]]] = {
    "mfn": [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)],
    "mfn_deep": [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 12, 1), (4, 128, 1, 2), (2, 128, 6, 1)],
}


def face_stages(name: str) -> list[tuple[int, int, int, int]]:
    """A named stage layout; an unknown name is refused with the known ones."""
    if name not in FACE_STAGES:
        raise ValueError(f"unknown face stage layout {name!r}; expected one of {sorted(FACE_STAGES)}")
    return [tuple(s) for s in FACE_STAGES[name]]  # type: ignore[misc]


@dataclass
class FaceNetConfig:
    """MobileFaceNet layout; width scales every stage (1.0 = the paper's ~1 M parameters)."""

    embedding_dim: int = 128
    width: float = 1.0
    # (expansion, channels, repeats, stride) per stage, MobileFaceNet (Chen et al., 2018)
    stages: list[tuple[int, int, int, int]] = field(default_factory=lambda: face_stages("mfn"))
    head_channels: int = 512
    # ReLU fuses into the convolution in ONNX Runtime and TensorRT; PReLU (the paper's choice)
    # does not fuse in ONNX Runtime's CPU provider and took two thirds of the student's time there.
    activation: str = "relu"


class MobileFaceNet(nn.Module):
    """112x112 aligned RGB crop in [-1, 1] -> L2-normalised embedding."""

    input_size = 112

    def __init__(self, cfg: FaceNetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or FaceNetConfig()
        self.cfg = cfg

        def w(c: int) -> int:
            return max(8, int(round(c * cfg.width / 8)) * 8)

        c0 = w(64)
        act = cfg.activation
        layers: list[nn.Module] = [
            _conv_bn(3, c0, 3, 2, act=act),
            _conv_bn(c0, c0, 3, 1, groups=c0, act=act),
        ]
        cin = c0
        for expansion, channels, repeats, stride in cfg.stages:
            cout = w(channels)
            for i in range(repeats):
                layers.append(_Bottleneck(cin, cout, stride if i == 0 else 1, expansion, act))
                cin = cout
        head = w(cfg.head_channels)
        layers.append(_conv_bn(cin, head, 1, 1, act=act))
        self.features = nn.Sequential(*layers)
        # Global depthwise conv (GDC): a learned spatial weighting instead of average pooling.
        self.gdc = _conv_bn(head, head, 7, 1, groups=head, act=None)
        self.gdc[0].padding = (0, 0)
        self.embed = nn.Sequential(
            nn.Conv2d(head, cfg.embedding_dim, 1, bias=False), nn.BatchNorm2d(cfg.embedding_dim)
        )

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        x = self.gdc(self.features(face))
        x = self.embed(x).flatten(1)
        return F.normalize(x, dim=1)


def _conv_out(n: int, stride: int) -> int:
    """Length after a 3-wide, padding-1 convolution of this stride."""
    return (n - 1) // stride + 1


def _stats_pool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean and standard deviation over `dim` (time), side by side: wespeaker's pooling."""
    return torch.cat([x.mean(dim=dim), torch.sqrt(x.var(dim=dim, unbiased=False) + 1e-5)], dim=1)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


@dataclass
class VoiceNetConfig:
    """Thin ResNet over log-mel, statistics pooling over time (wespeaker-style)."""

    embedding_dim: int = 256
    n_mels: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    # 2 halves time and frequency in the stem: the full-resolution layers were ~1/3 of the cost
    stem_stride: int = 1


class VoiceResNet(nn.Module):
    """Log-mel window `feats` (N, T, M), features computed outside the graph -> embedding."""

    def __init__(self, cfg: VoiceNetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VoiceNetConfig()
        self.cfg = cfg
        c = cfg.channels
        self.stem = nn.Sequential(
            nn.Conv2d(1, c[0], 3, cfg.stem_stride, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = c[0]
        for i, (cout, n) in enumerate(zip(c, cfg.blocks, strict=True)):
            for j in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.body = nn.Sequential(*layers)
        freq = self._freq_out(cfg)
        self.pool_dim = cin * freq
        self.embed = nn.Linear(self.pool_dim * 2, cfg.embedding_dim)
        self.bn = nn.BatchNorm1d(cfg.embedding_dim)

    @staticmethod
    def _freq_out(cfg: VoiceNetConfig) -> int:
        """Mel bins left after the stem and the stride-2 stages (conv arithmetic, padding 1)."""
        f = _conv_out(cfg.n_mels, cfg.stem_stride)
        for _ in range(len(cfg.channels) - 1):
            f = _conv_out(f, 2)
        return f

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2).unsqueeze(1)  # (N, 1, M, T)
        x = self.body(self.stem(x))  # (N, C, M', T')
        x = self.bn(self.embed(_stats_pool(x.flatten(1, 2), dim=2)))  # over T' of (N, C*M', T')
        return F.normalize(x, dim=1)


@dataclass
class VoiceGRUConfig:
    """Convolutional front (time and frequency /4), a GRU over time, statistics pooling."""

    embedding_dim: int = 256
    n_mels: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 64])  # stem, then one residual block
    hidden: int = 256
    layers: int = 1


class VoiceGRU(nn.Module):
    """Log-mel window `feats` (N, T, M) -> embedding, through a recurrent layer.

    Why: the voice teacher (Resemblyzer) is a 3-layer LSTM; every ResNet student, whatever its
    width, stops at the same cosine to it on unseen speakers (benchmarks/students.md, issue 15).
    A recurrent student shares the teacher's way of integrating a voice over time. The two
    stride-2 convolutions cut the sequence to T/4 steps so it fits the 2 s probe's 3 ms here.
    """

    def __init__(self, cfg: VoiceGRUConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VoiceGRUConfig()
        if len(cfg.channels) != 2:
            raise ValueError(f"VoiceGRU takes two channel counts (stem, block), got {cfg.channels}")
        self.cfg = cfg
        c0, c1 = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(1, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU())
        self.block = _BasicBlock(c0, c1, 2)
        freq = _conv_out(_conv_out(cfg.n_mels, 2), 2)
        self.proj = nn.Linear(c1 * freq, cfg.hidden)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, cfg.layers, batch_first=True)
        self.embed = nn.Linear(2 * cfg.hidden, cfg.embedding_dim)
        self.bn = nn.BatchNorm1d(cfg.embedding_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(feats.transpose(1, 2).unsqueeze(1)))  # (N, C, M', T')
        x = F.relu(self.proj(x.flatten(1, 2).transpose(1, 2)))  # (N, T', hidden)
        y, _ = self.gru(x)
        x = self.bn(self.embed(_stats_pool(y, dim=1)))
        return F.normalize(x, dim=1)


class VoiceEnsemble(nn.Module):
    """Several independently trained voice students over the same log-mel window.

    Why: every voice recipe stops at the same cosine to its teacher on unseen speakers, and
    draws of one recipe differ by about as much as recipes do (`benchmarks/students.md`, issue
    15): each student's error is partly its own draw. The mean of unit embeddings of
    independent draws cancels that part. It exports as one graph (the members side by side),
    so the runtime, INT8 export and TensorRT see one model with the usual input and output.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = torch.stack([m(feats) for m in self.members]).mean(0)  # members are unit vectors
        return F.normalize(x, dim=1)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count, reported in model cards."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
