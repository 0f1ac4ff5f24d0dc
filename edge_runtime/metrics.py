"""Verification and retrieval metrics, exact on the sample and numpy-only (runs on the device).

One decision rule everywhere: higher score = more similar, and a pair is ACCEPTED when its
score is STRICTLY ABOVE the threshold (``score > t``). So ``FAR(t) = #{impostor > t} / n_i`` and
``FRR(t) = #{genuine <= t} / n_g``. Tied scores always move together (a threshold cannot split
equal scores), which keeps every number reproducible from the scores alone.

Low FARs are only meaningful with enough impostor pairs: by the "rule of 3", observing zero
false accepts in n trials bounds the true FAR by about 3/n at 95% confidence, so a target
below that is reported as not measurable instead of as an optimistic number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError

DEFAULT_FARS = (1e-2, 1e-3)


def _scores(values: Any, name: str) -> np.ndarray:
    """Scores as a finite float64 vector: NaN scores would silently corrupt every rate."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ConfigError(f"no {name} scores: cannot compute a verification metric")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} scores contain NaN or infinite values")
    return arr


def roc(genuine: Any, impostor: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC: (far, frr, thresholds) at every distinct score, threshold descending.

    The first point (threshold = highest score) accepts nothing (FAR 0, FRR 1); the last
    threshold is -inf and accepts everything (FAR 1, FRR 0). Rule: accept iff score > t.
    """
    g = np.sort(_scores(genuine, "genuine"))
    i = np.sort(_scores(impostor, "impostor"))
    thresholds = np.unique(np.concatenate([g, i]))[::-1]
    far = (i.size - np.searchsorted(i, thresholds, side="right")) / i.size
    frr = np.searchsorted(g, thresholds, side="right") / g.size
    thresholds = np.append(thresholds, -np.inf)
    return np.append(far, 1.0), np.append(frr, 0.0), thresholds


def eer(genuine: Any, impostor: Any) -> tuple[float, float]:
    """Equal error rate in [0, 1] and its threshold.

    FAR - FRR rises from -1 to +1 as the threshold falls; where it changes sign between two
    ROC points the EER is the linear interpolation of the two curves (both give the same
    value) and the threshold is interpolated with the same weight. If the crossing lies below
    the lowest score, the lowest score is returned as the threshold (no finite value between).
    """
    far, frr, thr = roc(genuine, impostor)
    diff = far - frr
    k = int(np.argmax(diff >= 0))  # exists: diff[-1] == 1
    if diff[k] == 0 or k == 0:
        return float(far[k]), float(thr[k])
    alpha = -diff[k - 1] / (diff[k] - diff[k - 1])
    rate = far[k - 1] + alpha * (far[k] - far[k - 1])
    if not np.isfinite(thr[k]):
        return float(rate), float(thr[k - 1])
    return float(rate), float(thr[k - 1] + alpha * (thr[k] - thr[k - 1]))


def auc(genuine: Any, impostor: Any) -> float:
    """Area under the ROC = P(genuine > impostor) + 0.5 P(tie) (Mann-Whitney U / (n_g n_i))."""
    g = _scores(genuine, "genuine")
    i = np.sort(_scores(impostor, "impostor"))
    below = np.searchsorted(i, g, side="left")
    ties = np.searchsorted(i, g, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (g.size * i.size))


def allowed_false_accepts(target_far: float, n_impostor: int) -> int:
    """Largest k with k / n <= target (tolerant to float error such as 0.01 * 300)."""
    if not 0.0 <= target_far <= 1.0:
        raise ConfigError(f"target FAR {target_far!r} is not in [0, 1]")
    return int(math.floor(target_far * n_impostor + 1e-9))


def tar_at_far(genuine: Any, impostor: Any, far: float) -> tuple[float, float]:
    """TAR at the most permissive threshold whose FAR does not exceed ``far``.

    Convention (accept iff score > threshold): the threshold is the smallest t with
    ``#{impostor > t} / n_i <= far``, which is the (k+1)-th highest impostor score for
    ``k = floor(far * n_i)``; ties at that score are rejected, so the achieved FAR can be
    below the target but never above it. With ``far * n_i >= n_i`` everything is accepted and
    the threshold is -inf. Returns (TAR, threshold).
    """
    g = _scores(genuine, "genuine")
    i = np.sort(_scores(impostor, "impostor"))[::-1]
    k = allowed_false_accepts(far, i.size)
    if k >= i.size:
        return 1.0, float("-inf")
    threshold = float(i[k])
    return float(np.mean(g > threshold)), threshold


def min_measurable_far(n_impostor: int) -> float:
    """Rule of 3: zero errors in n trials only bounds the rate by ~3/n (95% confidence)."""
    if n_impostor <= 0:
        raise ConfigError(f"need at least one impostor pair, got {n_impostor}")
    return 3.0 / n_impostor


def far_key(far: float) -> str:
    """Stable dictionary key for a target FAR, e.g. ``tar@far=0.001``."""
    return f"tar@far={far:g}"


def verification_report(
    genuine: Any, impostor: Any, fars: Sequence[float] = DEFAULT_FARS
) -> dict[str, Any]:
    """Every headline number for one score set, JSON-ready (plain floats, None when unmeasurable)."""
    g = _scores(genuine, "genuine")
    i = _scores(impostor, "impostor")
    rate, thr = eer(g, i)
    report: dict[str, Any] = {
        "eer": rate,
        "eer_threshold": thr,
        "auc": auc(g, i),
        "n_genuine": int(g.size),
        "n_impostor": int(i.size),
        "min_measurable_far": min_measurable_far(i.size),
    }
    for target in fars:
        entry: dict[str, Any] = {"target_far": float(target)}
        if target < min_measurable_far(i.size):
            entry.update(
                tar=None,
                threshold=None,
                achieved_far=None,
                reason=f"not measurable with {i.size} impostor pairs "
                f"(needs >= {math.ceil(3.0 / target)})",
            )
        else:
            tar, t = tar_at_far(g, i, target)
            entry.update(tar=tar, threshold=t, achieved_far=float(np.mean(i > t)), reason=None)
        report[far_key(target)] = entry
    return report


def _check_sim(sim: Any, labels_q: Sequence[str], labels_g: Sequence[str]) -> np.ndarray:
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape != (len(labels_q), len(labels_g)):
        raise ConfigError(
            f"similarity matrix shape {s.shape} does not match "
            f"{len(labels_q)} query and {len(labels_g)} gallery labels"
        )
    if not np.all(np.isfinite(s)):
        raise ConfigError("similarity matrix contains NaN or infinite values")
    return s


def matching_1_to_n_accuracy(
    sim: Any,
    labels_q: Sequence[str],
    labels_g: Sequence[str],
    n: int,
    trials: int,
    seed: int,
) -> float:
    """1:N matching (Learnable PINs): pick the true gallery item among N of distinct identities.

    Each trial draws a query that has a same-identity gallery item, one such true item, and
    one gallery item from each of n-1 other identities (distinct identities, chosen at random).
    A trial scores 1 if the true item is strictly highest; a tie with k distractors scores
    1/(k+1), the expected result of breaking the tie at random. Chance level is 1/n.
    """
    s = _check_sim(sim, labels_q, labels_g)
    if n < 2 or trials < 1:
        raise ConfigError(f"1:N matching needs n >= 2 and trials >= 1, got n={n}, trials={trials}")
    q_lab = np.asarray(labels_q, dtype=object)
    g_ids, g_codes = np.unique(np.asarray(labels_g, dtype=object), return_inverse=True)
    by_id = [np.flatnonzero(g_codes == c) for c in range(g_ids.size)]
    code_of = {lab: c for c, lab in enumerate(g_ids.tolist())}
    queries = np.array([k for k, lab in enumerate(q_lab) if lab in code_of], dtype=np.int64)
    if queries.size == 0:
        raise ConfigError("no query identity appears in the gallery: 1:N matching is undefined")
    if g_ids.size < n:
        raise ConfigError(f"1:{n} matching needs {n} gallery identities, found {g_ids.size}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(trials):
        q = int(queries[rng.integers(queries.size)])
        c = code_of[q_lab[q]]
        true_item = int(rng.choice(by_id[c]))
        others = rng.choice(g_ids.size - 1, size=n - 1, replace=False)
        others = others + (others >= c)  # skip the query's own identity
        distractors = [int(rng.choice(by_id[o])) for o in others]
        true_score = s[q, true_item]
        d = s[q, distractors]
        if np.any(d > true_score):
            continue
        total += 1.0 / (1 + int(np.sum(d == true_score)))
    return total / trials


def retrieval_map(sim: Any, labels_q: Sequence[str], labels_g: Sequence[str]) -> float:
    """Mean average precision of ranking the gallery by similarity, over queries with a match.

    Ties are broken pessimistically (non-matching items first), so equal scores can never
    inflate the metric. Queries whose identity is absent from the gallery are skipped.
    """
    s = _check_sim(sim, labels_q, labels_g)
    g_lab = np.asarray(labels_g, dtype=object)
    aps = []
    for q, lab in enumerate(labels_q):
        relevant = g_lab == lab
        n_rel = int(relevant.sum())
        if n_rel == 0:
            continue
        order = np.lexsort((relevant, -s[q]))  # primary: score desc; ties: irrelevant first
        hits = relevant[order]
        ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the matching items
        precision = np.arange(1, n_rel + 1) / ranks
        aps.append(precision.mean())
    if not aps:
        raise ConfigError("no query identity appears in the gallery: mAP is undefined")
    return float(np.mean(aps))


def make_pairs(
    labels: Sequence[str],
    *,
    max_impostor_per_identity: int,
    seed: int,
    max_genuine_per_identity: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (genuine, impostor) index pairs, each an int64 array of shape (n, 2) with i < j.

    Genuine: every same-identity pair, or a seeded sample of at most
    ``max_genuine_per_identity`` per identity. Impostor: for each identity, a seeded sample of
    at most ``max_impostor_per_identity`` pairs (one of its samples, one of another identity's),
    de-duplicated, so the total can be slightly below n_identities * cap. Identities are
    visited in sorted order, so the result depends only on (labels, caps, seed).
    """
    if max_impostor_per_identity < 0 or (max_genuine_per_identity or 0) < 0:
        raise ConfigError("pair caps must be >= 0")
    lab = np.asarray(list(labels), dtype=object)
    if lab.size < 2:
        raise ConfigError(f"need at least two samples to make pairs, got {lab.size}")
    _, codes = np.unique(lab, return_inverse=True)
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")  # samples grouped by identity
    starts = np.searchsorted(codes[order], np.arange(codes.max() + 2))
    genuine, impostor = [], []
    n_total = lab.size
    for c in range(codes.max() + 1):
        lo, hi = int(starts[c]), int(starts[c + 1])
        members = order[lo:hi]
        m = members.size
        if m >= 2:
            a, b = np.triu_indices(m, k=1)
            if max_genuine_per_identity is not None and a.size > max_genuine_per_identity:
                pick = np.sort(rng.choice(a.size, size=max_genuine_per_identity, replace=False))
                a, b = a[pick], b[pick]
            genuine.append(np.stack([members[a], members[b]], axis=1))
        n_other = n_total - m
        n_possible = m * n_other
        if n_possible == 0 or max_impostor_per_identity == 0:
            continue
        k = min(max_impostor_per_identity, n_possible)
        flat = rng.choice(n_possible, size=k, replace=False)
        mine = members[flat // n_other]
        o = flat % n_other
        theirs = order[np.where(o < lo, o, o + m)]  # o-th sample outside this identity's block
        impostor.append(np.stack([mine, theirs], axis=1))
    return _canonical(genuine), _canonical(impostor)


def _canonical(chunks: list[np.ndarray]) -> np.ndarray:
    """Sorted, de-duplicated (i < j) pairs, so equal pair sets compare equal."""
    if not chunks:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.sort(np.concatenate(chunks).astype(np.int64), axis=1)
    return np.unique(pairs, axis=0)
