"""Thresholds at target FARs: exact on a hand-made score set, and honest bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from calibration.thresholds import (
    bootstrap_kth_highest,
    people_draws,
    threshold_point,
    thresholds_at_fars,
)
from edge_runtime.errors import ConfigError

GEN = [0.955, 0.905, 0.805, 0.705, 0.605]
IMP = np.arange(100) / 100  # 0.00 .. 0.99


def test_thresholds_exact_on_hand_made_set():
    p5, p3, p1 = thresholds_at_fars(GEN, IMP, (0.05, 0.03, 0.01), n_bootstrap=200, seed=0)
    # FAR 5%: 5 of 100 impostors (0.95..0.99) may pass -> threshold 0.94; 0.905.. rejected
    assert p5.threshold == pytest.approx(0.94)
    assert p5.achieved_far == pytest.approx(0.05)
    assert p5.frr == pytest.approx(4 / 5)
    # FAR 3% = 3/100, the smallest measurable: threshold 0.96 rejects every genuine score
    assert p3.threshold == pytest.approx(0.96)
    assert p3.achieved_far == pytest.approx(0.03)
    assert p3.frr == 1.0
    # FAR 1% < 3/100: not a number
    assert p1.threshold is None and p1.frr is None and not p1.measurable
    assert p1.reason == "not measurable with 100 impostor scores (needs >= 300)"
    assert (p5.n_genuine, p5.n_impostor, p5.modalities) == (5, 100, ())


def test_ties_at_the_threshold_keep_far_below_target():
    imp = [0.9, 0.8, 0.8, 0.8] + [0.1] * 96
    p = threshold_point([0.85, 0.5], imp, 0.03, n_bootstrap=100)
    # the 3 allowed false accepts would split the 0.8 tie: only 0.9 may pass
    assert p.threshold == 0.8
    assert p.achieved_far == pytest.approx(0.01)
    assert p.frr == pytest.approx(0.5)


def test_intervals_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(1)
    g, i = rng.normal(3, 1, 2000), rng.normal(0, 1, 20000)
    a = threshold_point(g, i, 1e-3, modalities=["voice", "face"], n_bootstrap=500, seed=7)
    assert a == threshold_point(g, i, 1e-3, modalities=["voice", "face"], n_bootstrap=500, seed=7)
    assert a.modalities == ("face", "voice")
    b = threshold_point(g, i, 1e-3, n_bootstrap=500, seed=8)
    # another seed, other resamples (the threshold CI alone may coincide: it takes sample values)
    assert (a.threshold_ci, a.far_ci, a.frr_ci) != (b.threshold_ci, b.far_ci, b.frr_ci)
    assert a.threshold_ci[0] <= a.threshold <= a.threshold_ci[1]
    assert a.far_ci[0] <= a.achieved_far <= a.far_ci[1]
    assert a.frr_ci[0] <= a.frr <= a.frr_ci[1]
    assert a.threshold_ci[1] > a.threshold_ci[0]


def test_fast_bootstrap_matches_naive_resampling():
    """The conditional-binomial shortcut must have the same distribution as real resampling."""
    rng = np.random.default_rng(2)
    desc = np.sort(rng.normal(size=40))[::-1]
    k, b = 3, 20000
    fast = bootstrap_kth_highest(desc, k, b, np.random.default_rng(3))
    naive_rng = np.random.default_rng(4)
    naive = np.empty(b, dtype=np.int64)
    for r in range(b):
        sample = np.sort(naive_rng.integers(0, desc.size, desc.size))  # low index = high score
        naive[r] = sample[k]
    f = np.bincount(fast, minlength=desc.size) / b
    n = np.bincount(naive, minlength=desc.size) / b
    assert np.abs(f - n).max() < 0.02


def test_far_interval_covers_the_true_far():
    """Coverage on Gaussians, where the true FAR of any threshold is 1 - Phi(t)."""
    rng = np.random.default_rng(5)
    covered, reps = 0, 150
    for r in range(reps):
        p = threshold_point(rng.normal(2, 1, 200), rng.normal(0, 1, 3000), 1e-2,
                            n_bootstrap=300, seed=r)
        true_far = norm.sf(p.threshold)
        covered += p.far_ci[0] <= true_far <= p.far_ci[1]
    assert 0.85 <= covered / reps <= 0.995


def test_bad_arguments():
    with pytest.raises(ConfigError, match="non-empty"):
        threshold_point([], IMP, 0.1)
    with pytest.raises(ConfigError, match="n_bootstrap"):
        threshold_point(GEN, IMP, 0.1, n_bootstrap=0)


def test_people_draws_count_genuine_once_and_impostors_twice_per_person():
    probe = np.array(["a", "a", "b", "c", "a", "b"])
    template = np.array(["a", "a", "b", "c", "b", "c"])
    genuine = probe == template
    draws = list(people_draws(probe, template, genuine, 50, seed=3))
    assert len(draws) == 50
    for idx in draws:
        c = np.bincount(idx, minlength=probe.size)
        w = {"a": c[0], "b": c[2], "c": c[3]}  # genuine trials: once per draw of their person
        assert c[1] == c[0]
        assert c[4] == w["a"] * w["b"] and c[5] == w["b"] * w["c"]
        assert w["a"] + w["b"] + w["c"] == 3  # three people, three draws
    assert any(len(set(d.tolist())) < probe.size for d in draws)  # someone left out somewhere
