"""Cross-modal data: which faces and voices exist, which are positive pairs, and the splits.

Sources (each row of a table is labelled with the nature of its data, "real" or "artificial"):
- GRID talking-face clips (REAL pairs): frames and audio segments of one clip are one person.
  Seen people train on the first part of their clip (t < split_time_s) and are evaluated on
  the rest (seen-heard: same people, disjoint time); unseen people are never trained on.
- LFW x speechocean762 (ARTIFICIAL pairs): each speechocean762 speaker is paired with one LFW
  person of the same (labelled) gender. They are different people: the pairing only teaches
  attributes shared across the two (gender above all) and exercises the pipeline at scale.
- VoxCeleb1/2 (real, not on this machine): face frames and audio of one video are a positive
  pair; identities split 901 / 100 / 250 as in Learnable PINs (`train.pins.full`).

Training positives come from the `group` column (a clip, an artificial pairing, a video);
`identity` is used for evaluation and to keep same-person rows out of the negatives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import ConfigError, DatasetError
from train.datasets import FaceFolder, Sample, SpeechFolder, identity_split, read_labels_tsv

ROLES = ("train", "val", "seen", "unseen")
EVAL_SPLITS = (("real", "seen"), ("real", "unseen"), ("artificial", "seen"),
               ("artificial", "unseen"))
SPLIT_NAMES = {"seen": "seen-heard", "unseen": "unseen-unheard", "val": "validation"}


def _rank(key: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).digest()


@dataclass
class ModalTable:
    """One modality's rows: student embeddings plus their labels (object arrays, row-aligned)."""

    emb: np.ndarray  # (N, D) float32
    group: np.ndarray
    identity: np.ndarray
    data: np.ndarray  # "real" | "artificial"
    role: np.ndarray  # one of ROLES
    source: np.ndarray  # file path, with "@t" for a clip frame or segment start

    def __post_init__(self) -> None:
        n = self.emb.shape[0]
        for name in ("group", "identity", "data", "role", "source"):
            arr = np.asarray(getattr(self, name), dtype=object)
            if arr.shape != (n,):
                raise ValueError(f"ModalTable.{name} has {arr.shape[0]} rows, emb has {n}")
            setattr(self, name, arr)
        self.emb = np.asarray(self.emb, dtype=np.float32)
        if self.emb.ndim != 2:
            raise ValueError(f"ModalTable.emb must be (N, D), got shape {self.emb.shape}")

    def __len__(self) -> int:
        return int(self.emb.shape[0])

    def take(self, mask: np.ndarray) -> ModalTable:
        """Rows where `mask` (bool or indices) selects."""
        return ModalTable(self.emb[mask], self.group[mask], self.identity[mask], self.data[mask],
                          self.role[mask], self.source[mask])

    def where(self, *, data: str | None = None, role: str | Sequence[str] | None = None
              ) -> ModalTable:
        """Rows of one data nature and/or role(s)."""
        m = np.ones(len(self), dtype=bool)
        if data is not None:
            m &= self.data == data
        if role is not None:
            roles = [role] if isinstance(role, str) else list(role)
            m &= np.isin(self.role, roles)
        return self.take(m)

    @staticmethod
    def concat(tables: Sequence[ModalTable], dim: int) -> ModalTable:
        """Stack tables (an empty list gives an empty table of width `dim`)."""
        if not tables:
            e = np.empty(0, dtype=object)
            return ModalTable(np.empty((0, dim), np.float32), e, e, e, e, e)
        return ModalTable(*(np.concatenate([getattr(t, f) for t in tables])
                            for f in ("emb", "group", "identity", "data", "role", "source")))


@dataclass
class CrossModalSet:
    """Face and voice tables of one experiment, with the split definitions that made them."""

    face: ModalTable
    voice: ModalTable
    splits: dict = field(default_factory=dict)

    def where(self, *, data: str | None = None, role: str | Sequence[str] | None = None
              ) -> CrossModalSet:
        return CrossModalSet(self.face.where(data=data, role=role),
                             self.voice.where(data=data, role=role), self.splits)

    def counts(self) -> dict:
        """{data/role: {faces, voices, identities}} for reports."""
        out = {}
        for d in ("real", "artificial"):
            for r in ROLES:
                sub = self.where(data=d, role=r)
                if len(sub.face) or len(sub.voice):
                    ids = set(sub.face.identity.tolist()) | set(sub.voice.identity.tolist())
                    out[f"{d}/{r}"] = {"faces": len(sub.face), "voices": len(sub.voice),
                                       "identities": len(ids)}
        return out


# -- GRID (real pairs) -----------------------------------------------------------------------


def grid_folds(identities: Sequence[str], n_folds: int, fold: int, seed: int
               ) -> tuple[list[str], list[str]]:
    """(seen, unseen) GRID people: people ranked by sha256(seed, id), fold f is every
    n_folds-th from position f. n_folds = 0 makes everyone seen (no unseen-unheard rows)."""
    ids = sorted(set(identities))
    if n_folds == 0:
        return ids, []
    if not 0 <= fold < n_folds or n_folds > len(ids):
        raise ConfigError(f"GRID fold {fold} of {n_folds} is impossible with {len(ids)} people")
    ranked = sorted(ids, key=lambda i: _rank(i, seed))
    unseen = sorted(ranked[fold::n_folds])
    return sorted(set(ids) - set(unseen)), unseen


def grid_segments(duration: float, split_time: float, seg: float, hop: float
                  ) -> list[tuple[float, float, str]]:
    """Audio segments (start, end, half) inside each half of a clip; never across the cut,
    so seen-heard evaluation audio is disjoint in time from the training audio."""
    if not 0.0 < split_time < duration:
        raise ConfigError(f"split_time_s {split_time} must lie inside the clip (0..{duration} s)")
    out = []
    for lo, hi, half in ((0.0, split_time, "A"), (split_time, duration, "B")):
        if hi - lo <= seg:
            out.append((lo, hi, half))
            continue
        for s in np.arange(lo, hi - seg + 1e-6, hop):
            out.append((float(s), float(s) + seg, half))
    return out


# -- LFW x speechocean762 (artificial pairs) --------------------------------------------------


def artificial_pairing(face_counts: dict[str, int], face_gender: dict[str, str],
                       voice_gender: dict[str, str], *, min_images: int, seed: int
                       ) -> list[tuple[str, str, str]]:
    """[(face person, voice speaker, gender)]: every labelled speaker gets one distinct face
    person of the same labelled gender with >= min_images images, chosen by a seeded hash
    order (not by fame: LFW's most photographed people would otherwise all be picked)."""
    out = []
    for g in ("F", "M"):
        speakers = sorted((s for s, v in voice_gender.items() if v.upper() == g),
                          key=lambda s: _rank(s, seed))
        faces = sorted((p for p, v in face_gender.items()
                        if v.upper() == g and face_counts.get(p, 0) >= min_images),
                       key=lambda p: _rank(p, seed))
        for spk, person in zip(speakers, faces, strict=False):
            out.append((person, spk, g))
    if not out:
        raise DatasetError("artificial pairing is empty: no gender-labelled face person with "
                           f">= {min_images} images matches a gender-labelled speaker")
    return sorted(out, key=lambda t: t[1])


def pairing_name(person: str, speaker: str) -> str:
    """Identity label of an artificial pairing (names both halves: it is not one person)."""
    return f"artificial:{person}+{speaker}"


def heldout_mask(keys: Sequence[str], groups: Sequence[str], fraction: float, seed: int
                 ) -> np.ndarray:
    """True for rows held out for seen-heard evaluation: per group the round(fraction * n)
    lowest-ranked rows by sha256(seed, key), at least one row kept for training."""
    keys_a = np.asarray(list(keys), dtype=object)
    grp = np.asarray(list(groups), dtype=object)
    out = np.zeros(keys_a.size, dtype=bool)
    if fraction <= 0:
        return out
    for g in set(grp.tolist()):
        idx = np.flatnonzero(grp == g)
        k = min(idx.size - 1, int(np.floor(fraction * idx.size + 0.5)))
        if k <= 0:
            continue
        ranked = sorted(idx.tolist(), key=lambda i: _rank(str(keys_a[i]), seed))
        out[ranked[:k]] = True
    return out


@dataclass
class ArtificialSamples:
    """File lists of the artificial pairing, with the role of each file."""

    faces: list[Sample]
    voices: list[Sample]
    face_role: list[str]
    voice_role: list[str]
    pairs: list[tuple[str, str, str]]
    identity_roles: dict[str, str]


def artificial_samples(faces_root: Path, face_gender_tsv: Path, voices_root: Path,
                       voice_gender_tsv: Path, dcfg: dict, scfg: dict) -> ArtificialSamples:
    """Pair people, split the pairings by identity (train/val/test) and hold out a share of
    each training pairing's files for seen-heard evaluation. Sample.identity = pairing name."""
    face_reader, voice_reader = FaceFolder(faces_root), SpeechFolder(voices_root)
    by_face = face_reader.by_identity()
    by_voice = voice_reader.by_identity()
    fg = read_labels_tsv(face_gender_tsv, "person", "gender")
    vg = read_labels_tsv(voice_gender_tsv, "speaker", "gender")
    vg = {k: v for k, v in vg.items() if k in by_voice}
    pairs = artificial_pairing({k: len(v) for k, v in by_face.items()}, fg, vg,
                               min_images=int(dcfg["min_face_images"]),
                               seed=int(dcfg["pairing_seed"]))
    names = [pairing_name(p, s) for p, s, _ in pairs]
    rest, test = identity_split(names, float(scfg["test_fraction"]), int(scfg["seed"]))
    val_share = float(scfg["val_fraction"]) / (1.0 - float(scfg["test_fraction"]))
    train, val = identity_split(rest, val_share, int(scfg["seed"]) + 1) if val_share else (rest, [])
    roles = {**{n: "train" for n in train}, **{n: "val" for n in val},
             **{n: "unseen" for n in test}}
    faces, voices = [], []
    max_img = int(dcfg.get("max_face_images", 0)) or None
    for (person, spk, _), name in zip(pairs, names, strict=True):
        imgs = sorted(by_face[person], key=lambda s: _rank(s.path.name, int(dcfg["pairing_seed"])))
        faces += [Sample(name, s.path, person, modality="face") for s in imgs[:max_img]]
        voices += [Sample(name, s.path, spk, modality="voice") for s in by_voice[spk]]
    frac, seed = float(scfg["seen_heldout_fraction"]), int(scfg["seed"])
    roles_f = _file_roles(faces, roles, frac, seed)
    roles_v = _file_roles(voices, roles, frac, seed)
    return ArtificialSamples(faces, voices, roles_f, roles_v, pairs, roles)


def _file_roles(samples: list[Sample], roles: dict[str, str], frac: float, seed: int) -> list[str]:
    held = heldout_mask([s.path.name for s in samples], [s.identity for s in samples], frac, seed)
    out = []
    for s, h in zip(samples, held, strict=True):
        r = roles[s.identity]
        out.append("seen" if (r == "train" and h) else r)
    return out


# -- VoxCeleb1 (real, for users who have it) --------------------------------------------------


def voxceleb_roles(identities: Sequence[str], n_train: int, n_val: int, n_test: int, seed: int
                   ) -> dict[str, str]:
    """PINs' identity split (901 / 100 / 250 of VoxCeleb1's 1,251): see
    `train.datasets.voxceleb.identity_roles` (one role per identity for both modalities)."""
    from train.datasets.voxceleb import identity_roles

    return identity_roles(identities, n_train, n_val, n_test, seed)


def describe_splits(cfg: dict, grid_seen: Sequence[str], grid_unseen: Sequence[str],
                    art: ArtificialSamples | None) -> dict:
    """The split definitions written into every report, checkpoint and manifest entry."""
    g = cfg["split"]["grid"]
    a = cfg["split"]["artificial"]
    out = {
        "real (GRID)": {
            "seen-heard": f"people {sorted(grid_seen)}: trained on t < {g['split_time_s']} s of "
                          f"their clip, evaluated on t >= {g['split_time_s']} s (disjoint audio "
                          "and frames, same session)",
            "unseen-unheard": f"people {sorted(grid_unseen)}: never trained on "
                              f"(GRID fold {g['fold']} of {g['n_folds']}, seed {g['seed']})",
        },
    }
    if art is not None:
        n = {r: sum(1 for v in art.identity_roles.values() if v == r) for r in ("train", "val",
                                                                                "unseen")}
        out["artificial (LFW x speechocean762, gender-matched)"] = {
            "seen-heard": f"{n['train']} training pairings; a held-out "
                          f"{a['seen_heldout_fraction']:.0%} of each pairing's images and "
                          "utterances",
            "validation": f"{n['val']} pairings, for checkpoint selection only",
            "unseen-unheard": f"{n['unseen']} pairings never trained on (identity split, "
                              f"test_fraction {a['test_fraction']}, seed {a['seed']})",
        }
    return out
