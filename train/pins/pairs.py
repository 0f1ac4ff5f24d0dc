"""Pair selection for the FAA match head (Peng, He, Su 2024): clean positives, hard negatives.

Positives come only from one `group` (one clip, one artificial pairing), and the least
similar `clean_drop` share of each group's face-voice combinations is left out: in the
aligned space those are the likeliest bad frames, silent segments or mis-detections.
Negatives pair a face with a voice (or a voice with a face) of ANOTHER person: `person`
defaults to `group`, and where the data knows that two clips are one person (VoxCeleb) it is
passed so that such clips are never used against each other. A share `hard_share` of the
negatives is drawn from the `hard_pool` most similar other-person candidates of the anchor,
the rest uniformly from all other-person candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import ConfigError


@dataclass
class PairSet:
    """Index pairs into a face table and a voice table, with match labels (1 = same group)."""

    face: np.ndarray  # (P,) int64
    voice: np.ndarray  # (P,) int64
    label: np.ndarray  # (P,) float32
    hard: np.ndarray  # (P,) bool: negative chosen by similarity (False for positives/random)

    def __len__(self) -> int:
        return int(self.face.size)


def _codes(labels: Sequence[str]) -> np.ndarray:
    _, codes = np.unique(np.asarray(list(labels), dtype=object), return_inverse=True)
    return codes.astype(np.int64)


def clean_positives(sim: np.ndarray, face_group: Sequence[str], voice_group: Sequence[str],
                    *, per_group: int, clean_drop: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(face idx, voice idx) positives: per group, the combinations above the group's
    `clean_drop` similarity quantile (at least one kept), sampled down to `per_group`."""
    if not 0.0 <= clean_drop < 1.0:
        raise ConfigError(f"clean_drop must be in [0, 1), got {clean_drop}")
    fg = np.asarray(list(face_group), dtype=object)
    vg = np.asarray(list(voice_group), dtype=object)
    fi_all, vi_all = [], []
    for g in sorted(set(fg.tolist()) & set(vg.tolist())):
        fi = np.flatnonzero(fg == g)
        vi = np.flatnonzero(vg == g)
        a, b = np.meshgrid(fi, vi, indexing="ij")
        a, b = a.ravel(), b.ravel()
        s = sim[a, b]
        keep = max(1, int(np.ceil(s.size * (1.0 - clean_drop))))
        order = np.argsort(-s, kind="stable")[:keep]
        if order.size > per_group:
            order = rng.choice(order, size=per_group, replace=False)
        fi_all.append(a[order])
        vi_all.append(b[order])
    if not fi_all:
        raise ConfigError("no group has both a face and a voice: no positive pair to train on")
    return np.concatenate(fi_all), np.concatenate(vi_all)


def _negatives_for(anchors: np.ndarray, sim_rows: np.ndarray, other_ok: np.ndarray,
                   hard_share: float, hard_pool: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One candidate (column id) of another person per anchor row; exactly
    round(hard_share * anchors) anchors (a random subset) get a hard one from their top pool."""
    use_hard = np.zeros(anchors.size, dtype=bool)
    use_hard[rng.permutation(anchors.size)[: int(np.floor(hard_share * anchors.size + 0.5))]] = True
    out_a, out_c, out_h = [], [], []
    for a, row, ok, hard in zip(anchors, sim_rows, other_ok, use_hard, strict=True):
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            continue
        if hard:
            cand = cand[np.argsort(-row[cand], kind="stable")[:hard_pool]]
        out_a.append(a)
        out_c.append(int(rng.choice(cand)))
        out_h.append(bool(hard))
    if not out_a:
        raise ConfigError("no anchor has a candidate of another person: need >= 2 people")
    return (np.asarray(out_a, dtype=np.int64), np.asarray(out_c, dtype=np.int64),
            np.asarray(out_h, dtype=bool))


def select_pairs(face_pin: np.ndarray, voice_pin: np.ndarray, face_group: Sequence[str],
                 voice_group: Sequence[str], *, per_group: int = 64, neg_per_pos: int = 1,
                 hard_share: float = 0.5, hard_pool: int = 10, clean_drop: float = 0.1,
                 seed: int = 0, face_person: Sequence[str] | None = None,
                 voice_person: Sequence[str] | None = None) -> PairSet:
    """Positives and negatives for one FAA epoch, chosen in the aligned PIN space.

    Each positive yields `neg_per_pos` negatives, alternately anchored on its face (a voice of
    another person) and on its voice (a face of another person). Returns labels 1/0.
    """
    if face_pin.shape[0] != len(face_group) or voice_pin.shape[0] != len(voice_group):
        raise ValueError("embedding rows and group labels differ in length")
    if not 0.0 <= hard_share <= 1.0 or hard_pool < 1 or neg_per_pos < 1:
        raise ConfigError("pair selection needs hard_share in [0,1], hard_pool >= 1, "
                          "neg_per_pos >= 1")
    rng = np.random.default_rng(seed)
    sim = face_pin.astype(np.float64) @ voice_pin.astype(np.float64).T
    pf, pv = clean_positives(sim, face_group, voice_group, per_group=per_group,
                             clean_drop=clean_drop, rng=rng)
    fperson = list(face_person) if face_person is not None else list(face_group)
    vperson = list(voice_person) if voice_person is not None else list(voice_group)
    codes = _codes(fperson + vperson)
    fp, vp = codes[: len(fperson)], codes[len(fperson):]
    # a "negative" must differ in person AND in group (a group is one person by construction)
    gcodes = _codes(list(face_group) + list(voice_group))
    fg, vg = gcodes[: len(face_group)], gcodes[len(face_group):]
    face_anch = np.arange(pf.size) % 2 == 0
    parts_f, parts_v, parts_h = [], [], []
    for _ in range(neg_per_pos):
        fa = pf[face_anch]  # face anchors -> other-person voices
        ok = (vp[None, :] != fp[fa, None]) & (vg[None, :] != fg[fa, None])
        a, c, h = _negatives_for(fa, sim[fa], ok, hard_share, hard_pool, rng)
        parts_f.append(a)
        parts_v.append(c)
        parts_h.append(h)
        va = pv[~face_anch]  # voice anchors -> other-person faces
        ok = (fp[None, :] != vp[va, None]) & (fg[None, :] != vg[va, None])
        a, c, h = _negatives_for(va, sim[:, va].T, ok, hard_share, hard_pool, rng)
        parts_f.append(c)
        parts_v.append(a)
        parts_h.append(h)
        face_anch = ~face_anch  # alternate the anchor modality between rounds
    nf, nv, nh = (np.concatenate(p) for p in (parts_f, parts_v, parts_h))
    face = np.concatenate([pf, nf]).astype(np.int64)
    voice = np.concatenate([pv, nv]).astype(np.int64)
    label = np.concatenate([np.ones(pf.size), np.zeros(nf.size)]).astype(np.float32)
    hard = np.concatenate([np.zeros(pf.size, dtype=bool), nh])
    return PairSet(face, voice, label, hard)


def kmeans_labels(x: np.ndarray, k: int, seed: int, iters: int = 25) -> np.ndarray:
    """Cluster labels (N,) of unit rows `x` into `k` clusters: k-means++ seeding, Lloyd
    iterations on cosine similarity (spherical k-means). Deterministic for a seed."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k-means needs 1 <= k <= {n} rows, got k={k}")
    rng = np.random.default_rng(seed)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d = np.clip(1.0 - np.max(x @ np.stack(centres).T, axis=1), 0.0, None)
        p = d / d.sum() if d.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=p)])
    c = np.stack(centres)
    labels = np.full(n, -1)
    for _ in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            m = labels == j
            if m.any():
                v = x[m].sum(axis=0)
                c[j] = v / max(float(np.linalg.norm(v)), 1e-12)
    return labels.astype(np.int64)


def progressive_k(n_groups: int, round_no: int, rounds: int, start: float, end: float) -> int:
    """Clusters for pseudo-label round `round_no` of `rounds`: the fraction of the groups
    moves linearly from `start` to `end` (FAA's progressive clustering, our reading)."""
    frac = start if rounds <= 1 else start + (end - start) * min(round_no, rounds - 1) / (rounds - 1)
    return int(min(n_groups, max(2, round(frac * n_groups))))
