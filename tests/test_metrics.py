"""Verification/retrieval metrics against hand-computed values and brute-force definitions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime import metrics as M
from edge_runtime import plots
from edge_runtime.errors import ConfigError

GEN = [0.9, 0.8, 0.4]
IMP = [0.5, 0.3, 0.2, 0.1]


def test_roc_exact_on_toy_set():
    far, frr, thr = M.roc(GEN, IMP)
    # thresholds 0.9 0.8 0.5 0.4 0.3 0.2 0.1 -inf; accept iff score > t
    np.testing.assert_allclose(thr[:-1], [0.9, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert thr[-1] == -np.inf
    np.testing.assert_allclose(far, [0, 0, 0, 1 / 4, 1 / 4, 2 / 4, 3 / 4, 1])
    np.testing.assert_allclose(frr, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0])


def test_auc_by_hand_and_brute_force_with_ties():
    # 0.9 and 0.8 beat all 4 impostors, 0.4 beats 3 of them: 11 of 12 pairs
    assert M.auc(GEN, IMP) == pytest.approx(11 / 12)
    # one tie (0.5 vs 0.5) counts 1/2: 0.5 beats 0.3 -> (1 + 0.5) / 2
    assert M.auc([0.5], [0.5, 0.3]) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    g = rng.integers(0, 20, 300).astype(float)  # heavy ties on purpose
    i = rng.integers(0, 15, 400).astype(float)
    diff = g[:, None] - i[None, :]
    brute = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert M.auc(g, i) == pytest.approx(brute, abs=1e-12)


def test_roc_matches_brute_force_rates_with_ties():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 10, 50).astype(float)
    i = rng.integers(0, 8, 70).astype(float)
    far, frr, thr = M.roc(g, i)
    for f, r, t in zip(far, frr, thr, strict=True):
        assert f == pytest.approx(np.mean(i > t))
        assert r == pytest.approx(np.mean(g <= t))
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(frr) <= 0)


def test_eer_interpolated_on_toy_set():
    # FAR-FRR changes sign between t=0.4 (1/4 vs 1/3) and t=0.3 (1/4 vs 0): weight 1/4
    rate, thr = M.eer(GEN, IMP)
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.375)


def test_separable_and_identical_distributions():
    rate, thr = M.eer([0.9, 0.8, 0.7], [0.3, 0.2])
    assert rate == 0.0
    assert 0.3 <= thr < 0.7
    assert M.auc([0.9, 0.8, 0.7], [0.3, 0.2]) == 1.0
    rng = np.random.default_rng(2)
    g, i = rng.normal(size=5000), rng.normal(size=5000)
    assert M.eer(g, i)[0] == pytest.approx(0.5, abs=0.03)
    assert M.auc(g, i) == pytest.approx(0.5, abs=0.03)
    assert M.eer([0.5], [0.5]) == (0.5, 0.5)


def test_tar_at_far_threshold_convention():
    # k = floor(far * n) impostors may be strictly above the threshold
    assert M.tar_at_far(GEN, IMP, 0.25) == (1.0, 0.3)
    assert M.tar_at_far(GEN, IMP, 0.2) == (pytest.approx(2 / 3), 0.5)
    assert M.tar_at_far(GEN, IMP, 0.5) == (1.0, 0.2)
    assert M.tar_at_far(GEN, IMP, 1.0) == (1.0, float("-inf"))
    # a threshold cannot split tied impostors: achieved FAR 0 <= 0.25, and the tied genuine
    # score 0.7 is rejected with them
    tar, thr = M.tar_at_far([0.7, 0.9], [0.7, 0.7, 0.1, 0.1], 0.25)
    assert (tar, thr) == (0.5, 0.7)
    rng = np.random.default_rng(3)
    imp = rng.normal(size=1000)
    for target in (0.001, 0.01, 0.1):
        _, t = M.tar_at_far(rng.normal(1, 1, 100), imp, target)
        assert np.mean(imp > t) <= target
        assert np.mean(imp >= t) > target  # the next lower candidate would exceed the target
    with pytest.raises(ConfigError, match="not in"):
        M.tar_at_far(GEN, IMP, 1.5)


def test_verification_report_marks_unmeasurable_fars():
    assert M.min_measurable_far(300) == pytest.approx(0.01)
    rep = M.verification_report(GEN, IMP)
    assert rep["n_genuine"] == 3 and rep["n_impostor"] == 4
    assert rep["auc"] == pytest.approx(11 / 12) and rep["eer"] == pytest.approx(0.25)
    entry = rep["tar@far=0.01"]
    assert entry["tar"] is None and entry["threshold"] is None
    assert "not measurable with 4 impostor pairs" in entry["reason"]
    rng = np.random.default_rng(4)
    imp = rng.normal(size=300)
    gen = rng.normal(3, 1, size=200)
    rep = M.verification_report(gen, imp, fars=(0.01, 0.001))
    ok = rep["tar@far=0.01"]  # 0.01 == 3/300: exactly measurable
    assert ok["reason"] is None
    assert ok["achieved_far"] <= 0.01
    assert ok["tar"] == pytest.approx(np.mean(gen > ok["threshold"]))
    assert rep["tar@far=0.001"]["tar"] is None


def test_bad_scores_are_refused():
    with pytest.raises(ConfigError, match="no genuine"):
        M.eer([], [0.1])
    with pytest.raises(ConfigError, match="NaN"):
        M.auc([0.1, np.nan], [0.1])


def test_matching_1_to_n_on_hand_made_matrix():
    labels_g = ["a", "b", "c"]
    # query a: true 0.9; b (0.5) is beaten, c (0.95) wins -> 1:2 is right half the time
    sim = np.array([[0.9, 0.5, 0.95]])
    assert M.matching_1_to_n_accuracy(sim, ["a"], labels_g, n=3, trials=200, seed=0) == 0.0
    acc2 = M.matching_1_to_n_accuracy(sim, ["a"], labels_g, n=2, trials=4000, seed=0)
    assert acc2 == pytest.approx(0.5, abs=0.03)
    easy = np.array([[0.9, 0.5, 0.2], [0.1, 0.8, 0.3]])
    assert M.matching_1_to_n_accuracy(easy, ["a", "b"], labels_g, n=3, trials=100, seed=1) == 1.0
    # a tie with the one distractor counts 1/2
    tie = np.array([[0.5, 0.5]])
    assert M.matching_1_to_n_accuracy(tie, ["a"], ["a", "b"], n=2, trials=50, seed=2) == 0.5
    rng = np.random.default_rng(5)
    big = rng.normal(size=(20, 30))
    lq = [str(k % 10) for k in range(20)]
    lg = [str(k % 10) for k in range(30)]
    one = M.matching_1_to_n_accuracy(big, lq, lg, n=2, trials=300, seed=7)
    assert one == M.matching_1_to_n_accuracy(big, lq, lg, n=2, trials=300, seed=7)
    with pytest.raises(ConfigError, match="needs 4 gallery identities"):
        M.matching_1_to_n_accuracy(sim, ["a"], labels_g, n=4, trials=10, seed=0)


def test_retrieval_map_by_hand():
    labels_g = ["a", "b", "a", "c"]
    sim = np.array(
        [
            [0.9, 0.8, 0.3, 0.5],  # a: matches at ranks 1 and 4 -> (1/1 + 2/4) / 2 = 0.75
            [0.2, 0.6, 0.7, 0.1],  # b: match at rank 2 -> 0.5
            [0.1, 0.2, 0.3, 0.4],  # z: not in gallery, skipped
        ]
    )
    assert M.retrieval_map(sim, ["a", "b", "z"], labels_g) == pytest.approx(0.625)
    # all scores tied: the single match is ranked last (pessimistic) -> 1/4
    assert M.retrieval_map(np.full((1, 4), 0.3), ["b"], labels_g) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="shape"):
        M.retrieval_map(sim, ["a"], labels_g)


LABELS = ["a", "b", "a", "c", "d", "a", "b", "d", "b", "a"]  # a:4 b:3 c:1 d:2, interleaved


def test_make_pairs_exhaustive_counts_and_identity_rules():
    lab = np.array(LABELS)
    gen, imp = M.make_pairs(LABELS, max_impostor_per_identity=1000, seed=0)
    assert len(gen) == 6 + 3 + 0 + 1  # C(4,2) + C(3,2) + C(2,2)
    assert np.all(lab[gen[:, 0]] == lab[gen[:, 1]])
    assert len(imp) == 45 - 10  # every other unordered pair
    assert np.all(lab[imp[:, 0]] != lab[imp[:, 1]])
    for pairs in (gen, imp):
        assert np.all(pairs[:, 0] < pairs[:, 1])
        assert len(np.unique(pairs, axis=0)) == len(pairs)


def test_make_pairs_caps_and_seed_determinism():
    lab = np.array(LABELS)
    gen, imp = M.make_pairs(LABELS, max_impostor_per_identity=3, seed=11, max_genuine_per_identity=2)
    assert len(gen) == 2 + 2 + 0 + 1
    assert np.all(lab[gen[:, 0]] == lab[gen[:, 1]])
    assert 1 <= len(imp) <= 4 * 3
    assert np.all(lab[imp[:, 0]] != lab[imp[:, 1]])
    again = M.make_pairs(LABELS, max_impostor_per_identity=3, seed=11, max_genuine_per_identity=2)
    np.testing.assert_array_equal(gen, again[0])
    np.testing.assert_array_equal(imp, again[1])
    rng_labels = [f"id{k % 40}" for k in range(400)]
    a = M.make_pairs(rng_labels, max_impostor_per_identity=20, seed=1)[1]
    b = M.make_pairs(rng_labels, max_impostor_per_identity=20, seed=2)[1]
    assert not np.array_equal(a, b)
    labs = np.array(rng_labels)
    assert np.all(labs[a[:, 0]] != labs[a[:, 1]])


def _png_ok(path):
    assert path.exists() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img is not None and img.std() > 5  # something was drawn, not a blank canvas


def test_plots_write_png_without_pyplot_state(tmp_path):
    rng = np.random.default_rng(6)
    curves = {
        "face": (rng.normal(2, 1, 400), rng.normal(0, 1, 2000)),
        "voice": (rng.normal(1, 1, 400), rng.normal(0, 1, 2000)),
    }
    roc_png = plots.plot_roc_det(curves, tmp_path / "r" / "roc.png", "test", {"FAR 1%": 0.01})
    hist_png = plots.plot_score_histograms(
        curves, tmp_path / "hist.png", thresholds={"face": 1.5, "voice": {"1e-2": 2.3}}
    )
    lat_png = plots.plot_latency(
        {"detect": rng.gamma(4, 3, 200), "embed": rng.gamma(2, 5, 200)}, tmp_path / "lat.png"
    )
    for p in (roc_png, hist_png, lat_png):
        _png_ok(p)
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # nothing registered with pyplot
