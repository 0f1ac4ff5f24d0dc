"""Who the attack benchmark enrols (benchmarks/attacks.py ``split_people``): the two halves of
one seeded order, so a run with ``--enrol-half second`` enrols exactly the first run's
strangers and the door gate can pool the two over every held-out person. Synthetic people:
this tests the split, not any accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.attacks import split_people
from edge_runtime.errors import EdgepinError


def people(n: int) -> list[dict]:
    return [{"name": f"p{i}", "gender": "MF"[i % 2]} for i in range(n)]


@pytest.mark.parametrize("n", [30, 31])
def test_the_second_half_enrols_the_first_halfs_strangers(n):
    crowd = people(n)
    order = np.random.default_rng(0).permutation(n)
    e1, s1 = split_people(crowd, order, "first")
    e2, s2 = split_people(crowd, order, "second")
    names = lambda ps: [p["name"] for p in ps]  # noqa: E731
    assert names(e2) == names(s1) and names(s2) == names(e1)
    assert sorted(names(e1) + names(e2)) == sorted(names(crowd))
    assert not set(names(e1)) & set(names(e2))
    assert len(e1) == n // 2  # the first half as every run before 2026-12-04 enrolled it
    assert names(e1) == [crowd[i]["name"] for i in order[: n // 2]]


def test_an_unknown_half_is_refused():
    with pytest.raises(EdgepinError, match="--enrol-half must be one of"):
        split_people(people(4), np.arange(4), "both")
