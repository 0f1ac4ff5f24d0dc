"""Identity-disjoint train/validation splits.

A verifier validated on people it trained on reports a flattering EER, so every split here is by
identity, never by file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from edge_runtime.errors import DatasetError
from train.datasets.core import Reader, Sample


def _rank(identity: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{identity}".encode()).digest()


def identity_split(
    identities: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train, val) identity lists, both sorted.

    Each identity is ranked by sha256(seed, identity) and the lowest ranks go to validation.
    That makes the split independent of input order and of Python's hash seed, and adding
    people to a dataset moves few existing ones between sides. Duplicates are merged.
    With val_fraction > 0 each side gets at least one identity.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(identities))
    if val_fraction == 0.0:
        return unique, []
    if len(unique) < 2:
        raise DatasetError(
            f"cannot split {len(unique)} identity(ies) into train and validation; need >= 2"
        )
    n_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    ranked = sorted(unique, key=lambda ident: _rank(ident, seed))
    val = sorted(ranked[:n_val])
    train = sorted(ranked[n_val:])
    return train, val


def split_samples(
    reader: Reader | Iterable[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(train, val) samples of a reader (or any samples), split by identity_split."""
    samples = list(reader.samples if isinstance(reader, Reader) else reader)
    train_ids, _ = identity_split([s.identity for s in samples], val_fraction, seed)
    keep = set(train_ids)
    train = [s for s in samples if s.identity in keep]
    val = [s for s in samples if s.identity not in keep]
    return train, val


def holdout_split(
    identities: Sequence[str], test_fraction: float, val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Identity-disjoint train / val / test lists.

    `test` is held out for evaluation and never seen by training or model selection; `val`
    (a fraction of all identities) picks the checkpoint. The test side depends only on
    (identities, test_fraction, seed), so a teacher and a student evaluated with the same
    three numbers see exactly the same people.
    """
    rest, test = identity_split(identities, test_fraction, seed)
    val_share = val_fraction / (1.0 - test_fraction) if val_fraction else 0.0
    train, val = identity_split(rest, val_share, seed + 1) if val_share else (rest, [])
    return {"train": train, "val": val, "test": test}
