"""What distinguishes face from voice distillation: data, batches, validation embeddings.

Targets are the teacher's embeddings minus their training-set mean, then L2-normalised. Both
teachers put everyone in a narrow cone (dlib: impostor cosine ~0.84 on LFW; Resemblyzer's
embeddings are non-negative), so a student matching raw directions learns the mean and little
identity; centred targets spread people apart, and the mean is kept in the checkpoint.

The trainer (`train.distill`) is modality-agnostic; a task turns prepared data into
(input, teacher target, label) batches and embeds a held-out set for validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_runtime.frontend.audio import LogMelConfig
from edge_runtime.frontend.features import VoiceFrontEnd, face_tensor
from train.augment import FaceAugment, VoiceAugment
from train.datasets import FaceFolder, Sample, SpeechFolder, holdout_split
from train.models import FaceNetConfig, MobileFaceNet, VoiceNetConfig, VoiceResNet, face_stages
from train.prepare import FaceSet, VoiceSet, prepare_faces, prepare_voices


def build_model(cfg: dict) -> nn.Module:
    """The student backbone described by an experiment config."""
    m = cfg["model"]
    if cfg["modality"] == "face":
        return MobileFaceNet(
            FaceNetConfig(
                embedding_dim=m["embedding_dim"],
                width=m["width"],
                # checkpoints from before the option existed were PReLU networks
                activation=m.get("activation", "prelu"),
                stages=face_stages(m.get("stages", "mfn")),
            )
        )
    fe = cfg["front_end"]
    return VoiceResNet(VoiceNetConfig(embedding_dim=m["embedding_dim"], n_mels=fe["n_mels"],
                                      channels=list(m["channels"]), blocks=list(m["blocks"]),
                                      stem_stride=int(m.get("stem_stride", 1))))


def voice_front_end(cfg: dict) -> VoiceFrontEnd:
    """The shared front-end with this experiment's settings."""
    fe = cfg["front_end"]
    return VoiceFrontEnd(LogMelConfig(n_mels=fe["n_mels"]), fe["window_frames"], fe["hop_frames"])


def split_reader(modality: str, data: str | Path, split_cfg: dict) -> tuple[list[Sample], dict]:
    """All samples of a dataset folder and its identity split."""
    reader = FaceFolder(data) if modality == "face" else SpeechFolder(data)
    splits = holdout_split(reader.identities(), split_cfg["test_fraction"],
                           split_cfg["val_fraction"], split_cfg["seed"])
    return reader.samples, splits


def _labels(identities: list[str]) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(identities))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[i] for i in identities], dtype=np.int64), names


@dataclass
class FaceTask:
    """Face distillation on aligned grey crops."""

    train: FaceSet
    val: FaceSet
    augment: FaceAugment

    @classmethod
    def build(cls, cfg: dict, samples: list[Sample], splits: dict, cache_dir: Path) -> FaceTask:
        keep = set(splits["train"]) | set(splits["val"])
        data = prepare_faces([s for s in samples if s.identity in keep], cache_dir,
                             workers=cfg["train"]["workers"])
        val_ids = set(splits["val"])
        is_val = np.array([s.identity in val_ids for s in data.samples])

        def subset(mask: np.ndarray) -> FaceSet:
            idx = np.flatnonzero(mask)
            return FaceSet([data.samples[i] for i in idx], data.crops[idx], data.teacher[idx])

        return cls(subset(~is_val), subset(is_val), FaceAugment(**cfg["augment"]))

    def __post_init__(self) -> None:
        self.labels, self.classes = _labels(self.train.identities)
        self.teacher_mean = self.train.teacher.mean(axis=0)
        self.targets = _unit(self.train.teacher - self.teacher_mean)

    def __len__(self) -> int:
        return len(self.train.samples)

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        crops = [self.augment(self.train.crops[i], rng) for i in idx]
        return (torch.from_numpy(face_tensor(crops)), torch.from_numpy(self.targets[idx]),
                torch.from_numpy(self.labels[idx]))

    @torch.no_grad()
    def embed_val(self, model: nn.Module, device: torch.device) -> tuple[np.ndarray, np.ndarray, list[str]]:
        out = []
        for i in range(0, len(self.val.samples), 128):
            x = torch.from_numpy(face_tensor(list(self.val.crops[i : i + 128]))).to(device)
            out.append(model(x).cpu().numpy())
        return (np.concatenate(out), _unit(self.val.teacher - self.teacher_mean),
                self.val.identities)


@dataclass
class VoiceTask:
    """Voice distillation on 2 s log-mel windows with per-window teacher targets."""

    train: VoiceSet
    val: VoiceSet
    front_end: VoiceFrontEnd
    augment: VoiceAugment

    @classmethod
    def build(cls, cfg: dict, samples: list[Sample], splits: dict, cache_dir: Path) -> VoiceTask:
        fe = voice_front_end(cfg)
        sets = {}
        for part in ("train", "val"):
            ids = set(splits[part])
            sets[part] = prepare_voices([s for s in samples if s.identity in ids], cache_dir, fe,
                                        workers=cfg["train"]["workers"])
        aug = dict(cfg["augment"])
        aug["snr_db"] = tuple(aug["snr_db"])
        if "short_s" in aug:
            aug["short_s"] = tuple(aug["short_s"])
        return cls(sets["train"], sets["val"], fe, VoiceAugment(**aug))

    def __post_init__(self) -> None:
        utt_labels, self.classes = _labels(self.train.identities)
        self.teacher_mean = np.concatenate(self.train.window_teacher).mean(axis=0)
        self.items = np.array([(u, w) for u, st in enumerate(self.train.window_starts)
                               for w in range(len(st))], dtype=np.int64)
        self.labels = utt_labels[self.items[:, 0]]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        n = self.front_end.window_samples
        feats, targets = [], []
        for u, w in self.items[idx]:
            wav = self.train.audio[u]
            crop = self.augment.crop(wav, int(self.train.window_starts[u][w]), n, 16000, rng)
            crop = self.augment.shorten(crop, 16000, rng)
            feats.append(self.front_end.windows(self.augment(crop, rng))[0])
            targets.append(self.train.window_teacher[u][w])
        targets_c = _unit(np.stack(targets) - self.teacher_mean)
        return (torch.from_numpy(np.stack(feats)), torch.from_numpy(targets_c),
                torch.from_numpy(self.labels[idx]))

    @torch.no_grad()
    def embed_val(self, model: nn.Module, device: torch.device) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return (embed_utterances(model, self.val.audio, self.front_end, device),
                _unit(self.val.utterance_teacher - self.teacher_mean), self.val.identities)


@torch.no_grad()
def embed_utterances(model: nn.Module, audio: list[np.ndarray], front_end: VoiceFrontEnd,
                     device: torch.device) -> np.ndarray:
    """Utterance embedding = normalised mean of its window embeddings (as on the device)."""
    out = []
    for wav in audio:
        w = model(torch.from_numpy(front_end.windows(wav)).to(device)).cpu().numpy()
        out.append(w.mean(axis=0))
    return _unit(np.stack(out))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
