"""What distinguishes face from voice distillation: data, batches, validation embeddings.

Targets are the teacher's embeddings minus their training-set mean, then L2-normalised. Both
teachers put everyone in a narrow cone (dlib: impostor cosine ~0.84 on LFW; Resemblyzer's
embeddings are non-negative), so a student matching raw directions learns the mean and little
identity; centred targets spread people apart, and the mean is kept in the checkpoint.

The trainer (`train.distill`) is modality-agnostic; a task turns prepared data into
(input, teacher target, label) batches and embeds a held-out set for validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.audio import LogMelConfig
from edge_runtime.frontend.features import VoiceFrontEnd, face_tensor, l2_normalise
from train.augment import FaceAugment, VoiceAugment
from train.augment_room import RoomAugment
from train.datasets import (
    FaceFolder,
    LibriSpeechFlat,
    Sample,
    SpeechFolder,
    holdout_split,
    manifest_hash,
)
from train.models import (
    FaceNetConfig,
    MobileFaceNet,
    VoiceEnsemble,
    VoiceGRU,
    VoiceGRUConfig,
    VoiceNetConfig,
    VoiceResNet,
    face_stages,
)
from train.prepare import FaceSet, VoiceSet, prepare_faces, prepare_voices
from train.room_views import RoomViews, prepare_room_views

EXTRA_VOICE_READERS = {"librispeech": LibriSpeechFlat}


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
    arch = m.get("arch", "resnet")  # checkpoints from before the option were ResNets
    if arch == "ensemble":  # train.ensemble: members' own model configs, one front-end
        members = m.get("members") or []
        if len(members) < 2 or any(x.get("arch") == "ensemble" for x in members):
            raise ConfigError(f"model.arch ensemble needs two or more plain members, got {members!r:.80}")
        return VoiceEnsemble([build_model({**cfg, "model": member}) for member in members])
    if arch == "gru":
        return VoiceGRU(VoiceGRUConfig(embedding_dim=m["embedding_dim"], n_mels=fe["n_mels"],
                                       channels=list(m["channels"]), hidden=int(m["hidden"]),
                                       layers=int(m.get("layers", 1))))
    if arch != "resnet":
        raise ConfigError(f"model.arch {arch!r}: expected resnet, gru or ensemble")
    return VoiceResNet(VoiceNetConfig(embedding_dim=m["embedding_dim"], n_mels=fe["n_mels"],
                                      channels=list(m["channels"]), blocks=list(m["blocks"]),
                                      stem_stride=int(m.get("stem_stride", 1))))


def voice_front_end(cfg: dict) -> VoiceFrontEnd:
    """The shared front-end with this experiment's settings."""
    fe = cfg["front_end"]
    return VoiceFrontEnd(LogMelConfig(n_mels=fe["n_mels"]), fe["window_frames"], fe["hop_frames"],
                         fe.get("normalise", "band"),
                         float(fe.get("band_fraction", VoiceFrontEnd.band_fraction)))


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
        self.targets = l2_normalise(self.train.teacher - self.teacher_mean)

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
        return (np.concatenate(out), l2_normalise(self.val.teacher - self.teacher_mean),
                self.val.identities)


def extra_voice_samples(cfg: dict) -> tuple[list[Sample], dict]:
    """Training-only speakers from `extra_train` (e.g. LibriSpeech): never validated or
    evaluated on, so a one-recording speaker never forms a same-session evaluation pair."""
    samples: list[Sample] = []
    info: dict = {}
    for name, root in (cfg.get("extra_train") or {}).items():
        if not root:
            continue
        if name not in EXTRA_VOICE_READERS:
            raise ConfigError(f"extra_train.{name}: unknown reader (known: "
                              f"{', '.join(EXTRA_VOICE_READERS)})")
        reader = EXTRA_VOICE_READERS[name](root)
        samples += reader.samples
        info[name] = {"root": str(root), "identities": len(reader.identities()),
                      "samples": len(reader.samples), "manifest_hash": manifest_hash(
                          reader.samples, Path(root))}
    return samples, info


def room_augment(cfg: dict) -> RoomAugment:
    """The door-condition augmentation described by the config's `room` section."""
    r = {k: v for k, v in cfg["room"].items() if k not in ("views_per_window", "seed")}
    for k in ("snr_db", "speed", "babble_talkers", "rt60_s", "noise_kinds", "bands", "clean_bands",
              "talker_db"):
        if k in r:
            r[k] = tuple(r[k])
    return RoomAugment(**r)


def _target_mixes(cfg: dict) -> tuple[float, float]:
    """(`targets.utterance_mix`, `targets.speaker_mix`), checked together (0 when absent)."""
    targets = cfg.get("targets") or {}
    unknown = set(targets) - {"utterance_mix", "speaker_mix"}
    if unknown:
        raise ConfigError(f"targets: unknown key(s) {', '.join(sorted(unknown))} "
                          "(known: utterance_mix, speaker_mix)")
    mixes = []
    for key in ("utterance_mix", "speaker_mix"):
        mix = float(targets.get(key, 0.0))
        if not 0.0 <= mix <= 1.0:
            raise ConfigError(f"targets.{key} must be in [0, 1], got {mix}")
        mixes.append(mix)
    if mixes[0] + mixes[1] > 1.0:
        raise ConfigError(f"targets.utterance_mix + targets.speaker_mix must be <= 1, got "
                          f"{mixes[0]} + {mixes[1]}")
    return mixes[0], mixes[1]


def utterance_mix(cfg: dict) -> float:
    """`targets.utterance_mix` from a voice config (0 when the section is absent)."""
    return _target_mixes(cfg)[0]


def speaker_mix(cfg: dict) -> float:
    """`targets.speaker_mix` from a voice config (0 when the section is absent)."""
    return _target_mixes(cfg)[1]


@dataclass
class VoiceTask:
    """Voice distillation on 2 s log-mel windows with per-window teacher targets.

    With `views` (door conditions, `train.room_views`), each item is either a clean window
    (light on-the-fly augmentation, target of the clean window) or one of its labelled views
    (target of that view).
    """

    train: VoiceSet
    val: VoiceSet
    front_end: VoiceFrontEnd
    augment: VoiceAugment
    views: RoomViews | None = None
    extra_data: dict = field(default_factory=dict)
    # Share of the speaker's whole-utterance teacher embedding in a clean window's target
    # (`targets.utterance_mix`). A door compares 1-2 s of speech with a template made from whole
    # utterances; teaching a window (and its short crops) the utterance's embedding asks the
    # student for the speaker, not the window. 0 = the window's own target, as before.
    utterance_mix: float = 0.0
    # Share of the speaker's mean teacher embedding over all their recordings
    # (`targets.speaker_mix`), in place of the recording's own. The teacher's embedding of one
    # recording carries that recording's colour (a person's later recordings drift: the door
    # vetoes some people's own voices, benchmarks/students.md 2026-12-04); the mean over the
    # person's recordings keeps what stays the same. A speaker with one recording
    # (LibriSpeech here) gets that recording's embedding, as utterance_mix would give.
    speaker_mix: float = 0.0

    @classmethod
    def build(cls, cfg: dict, samples: list[Sample], splits: dict, cache_dir: Path) -> VoiceTask:
        fe = voice_front_end(cfg)
        if float(cfg["augment"].get("eq_p", 0.0)) > 0 and fe.normalise == "band":
            raise ConfigError("augment.eq_p needs front_end.normalise: level or partial; per-band "
                              "normalisation removes the equaliser's curve before the student")
        extra, extra_info = extra_voice_samples(cfg)
        sets = {}
        for part in ("train", "val"):
            ids = set(splits[part])
            chosen = [s for s in samples if s.identity in ids] + (extra if part == "train" else [])
            sets[part] = prepare_voices(chosen, cache_dir, fe, workers=cfg["train"]["workers"])
        aug = dict(cfg["augment"])
        aug["snr_db"] = tuple(aug["snr_db"])
        if "short_s" in aug:
            aug["short_s"] = tuple(aug["short_s"])
        views = None
        room = cfg.get("room") or {}
        per_window = int(room.get("views_per_window", 0))
        if per_window + int(room.get("clean_band_views", 0)) + int(room.get("talker_views", 0)) > 0:
            room_aug = room_augment(cfg)
            views = prepare_room_views(sets["train"], cache_dir, fe.window_samples, room_aug,
                                       views_per_window=per_window,
                                       seed=int(room.get("seed", cfg["seed"])))
            extra_info["room_views"] = {"views": len(views.params), "computed": views.computed}
            if room_aug.clean_band_target == "clean":
                assert sets["train"].window_teacher is not None
                extra_info["room_views"]["clean_targets"] = views.teach_band_views_clean(
                    sets["train"].window_starts, sets["train"].window_teacher)
        return cls(sets["train"], sets["val"], fe, VoiceAugment(**aug), views, extra_info,
                   *_target_mixes(cfg))

    def __post_init__(self) -> None:
        for key in ("utterance_mix", "speaker_mix"):
            if getattr(self, key) > 0 and self.train.utterance_teacher is None:
                raise ConfigError(f"targets.{key} needs the teacher's utterance embeddings")
        utt_labels, self.classes = _labels(self.train.identities)
        self.speaker_teacher: np.ndarray | None = None
        if self.speaker_mix > 0:
            assert self.train.utterance_teacher is not None
            utt_t = np.asarray(self.train.utterance_teacher, dtype=np.float32)
            means = np.stack([utt_t[utt_labels == c].mean(axis=0)
                              for c in range(len(self.classes))])
            self.speaker_teacher = l2_normalise(means)[utt_labels]
        self.teacher_mean = np.concatenate(self.train.window_teacher).mean(axis=0)
        items = [(u, w, -1) for u, st in enumerate(self.train.window_starts)
                 for w in range(len(st))]
        if self.views is not None:
            items += [(int(u), -1, k) for k, u in enumerate(self.views.utterance)]
        self.items = np.array(items, dtype=np.int64)
        self.labels = utt_labels[self.items[:, 0]]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        n = self.front_end.window_samples
        feats, targets = [], []
        for u, w, v in self.items[idx]:
            wav = self.train.audio[u]
            if v >= 0:  # a labelled door-condition view: exact window, its own target
                assert self.views is not None
                view = self.augment.shorten(self.views.audio(int(v), wav, n), 16000, rng)
                feats.append(self.augment.mask(
                    self.augment.equalise(self.front_end.windows(view)[0], rng), rng))
                targets.append(self.views.teacher[v])
                continue
            crop = self.augment.crop(wav, int(self.train.window_starts[u][w]), n, 16000, rng)
            crop = self.augment.shorten(crop, 16000, rng)
            window = self.front_end.windows(self.augment(crop, rng))[0]
            feats.append(self.augment.mask(self.augment.equalise(window, rng), rng))
            target = self.train.window_teacher[u][w]
            if self.utterance_mix > 0 or self.speaker_mix > 0:
                assert self.train.utterance_teacher is not None
                target = ((1.0 - self.utterance_mix - self.speaker_mix) * target
                          + self.utterance_mix * self.train.utterance_teacher[u])
                if self.speaker_teacher is not None:
                    target = target + self.speaker_mix * self.speaker_teacher[u]
            targets.append(target)
        targets_c = l2_normalise(np.stack(targets) - self.teacher_mean)
        return (torch.from_numpy(np.stack(feats)), torch.from_numpy(targets_c),
                torch.from_numpy(self.labels[idx]))

    @torch.no_grad()
    def embed_val(self, model: nn.Module, device: torch.device) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return (embed_utterances(model, self.val.audio, self.front_end, device),
                l2_normalise(self.val.utterance_teacher - self.teacher_mean), self.val.identities)


@torch.no_grad()
def embed_utterances(model: nn.Module, audio: list[np.ndarray], front_end: VoiceFrontEnd,
                     device: torch.device) -> np.ndarray:
    """Utterance embedding = normalised mean of its window embeddings (as on the device)."""
    out = []
    for wav in audio:
        w = model(torch.from_numpy(front_end.windows(wav)).to(device)).cpu().numpy()
        out.append(w.mean(axis=0))
    return l2_normalise(np.stack(out))
