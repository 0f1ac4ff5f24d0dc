"""Calibration to LLRs, Cllr / min-Cllr, PAV and subset fusion (synthetic scores with known LLRs).

Synthetic Gaussians are used on purpose: only there is the true LLR known in closed form
(equal variances: LLR(s) = (mu1 - mu0) / var * s - (mu1^2 - mu0^2) / (2 var)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from calibration.scores import (
    TrialScores,
    cllr,
    fit_calibration,
    fit_calibrations,
    fit_fuser,
    min_cllr,
    pav,
)
from edge_runtime.errors import ConfigError


def _gauss(mu1, mu0, sigma, n_g, n_i, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(mu1, sigma, n_g), rng.normal(mu0, sigma, n_i)


@pytest.mark.parametrize(
    ("mu1", "mu0", "sigma", "prior"),
    [(2.0, 0.0, 1.0, 0.5), (3.0, 1.0, 2.0, 0.5), (2.0, 0.0, 1.0, 0.1)],
)
def test_calibration_recovers_true_gaussian_llr(mu1, mu0, sigma, prior):
    # imbalanced classes on purpose: the prior-weighted objective must not absorb n_g / n_i
    g, i = _gauss(mu1, mu0, sigma, 30000, 90000, seed=1)
    cal = fit_calibration(g, i, prior=prior)
    var = sigma**2
    assert cal.slope == pytest.approx((mu1 - mu0) / var, abs=0.04)
    assert cal.offset == pytest.approx(-(mu1**2 - mu0**2) / (2 * var), abs=0.05)
    s = np.array([-1.0, 0.5, 2.0])
    true = (mu1 - mu0) / var * s - (mu1**2 - mu0**2) / (2 * var)
    np.testing.assert_allclose(cal.llr(s), true, atol=0.1)


def test_logit_transform_for_probability_scores():
    g, i = _gauss(2.0, 0.0, 1.0, 20000, 20000, seed=2)
    cal = fit_calibration(expit(g), expit(i), transform="logit")
    assert cal.transform == "logit"
    assert cal.slope == pytest.approx(2.0, abs=0.05)
    assert cal.offset == pytest.approx(-2.0, abs=0.05)


def test_cllr_hand_values():
    assert cllr([0.0, 0.0], [0.0]) == pytest.approx(1.0)  # an uninformative system
    assert cllr([math.log(3)], [-math.log(3)]) == pytest.approx(math.log2(4 / 3))
    assert cllr([50.0], [-50.0]) < 1e-20
    # confidently wrong costs more than saying nothing
    assert cllr([-5.0], [5.0]) > 1.0


def test_pav_hand_and_against_isotonic_regression():
    np.testing.assert_allclose(pav([1, 3, 2, 4]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(pav([3, 2, 1]), [2, 2, 2])
    np.testing.assert_allclose(pav([1, 3, 2], [1, 1, 3]), [1, 2.25, 2.25])
    rng = np.random.default_rng(3)
    y, w = rng.normal(size=500), rng.uniform(0.1, 3, size=500)
    ref = IsotonicRegression().fit_transform(np.arange(500), y, sample_weight=w)
    np.testing.assert_allclose(pav(y, w), ref, atol=1e-10)


def test_min_cllr_properties():
    assert min_cllr([0.9, 0.8], [0.1, 0.2, 0.3]) == pytest.approx(0.0, abs=1e-12)
    # all scores tied: PAV can only return the empirical prior, LLR 0, Cllr 1
    assert min_cllr([0.5] * 4, [0.5] * 7) == pytest.approx(1.0)
    g, i = _gauss(2.0, 0.0, 1.0, 3000, 3000, seed=4)
    cal = fit_calibration(g, i)
    m = min_cllr(g, i)
    assert 0 < m <= cllr(cal.llr(g), cal.llr(i)) + 1e-12
    # discrimination only: a monotonic re-mapping of the raw scores changes nothing
    assert min_cllr(np.exp(g), np.exp(i)) == pytest.approx(m, abs=1e-12)
    # a badly scaled system has the same min-Cllr but a worse Cllr
    assert cllr(5 * cal.llr(g), 5 * cal.llr(i)) > cllr(cal.llr(g), cal.llr(i)) + 0.1


def _joint(n, seed, missing_voice=0):
    """face ~ N(+-1, 1), voice ~ N(+-0.75, 0.5): independent given the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4 == 0  # 1 genuine per 3 impostors
    face = np.where(y, 1.0, -1.0) + rng.normal(0, 1, n)
    voice = np.where(y, 0.75, -0.75) + rng.normal(0, 0.5, n)
    voice[:missing_voice] = np.nan
    return TrialScores({"face": face, "voice": voice}, y)


def test_fusion_of_independent_modalities_adds_llrs():
    trials = _joint(80000, seed=5)
    cals = fit_calibrations(trials)
    assert cals["face"].slope == pytest.approx(2.0, abs=0.05)  # 2 * 1 / 1
    assert cals["voice"].slope == pytest.approx(6.0, abs=0.15)  # 1.5 / 0.25
    fuser = fit_fuser(trials, cals)
    assert set(fuser.subsets) == {frozenset({"face"}), frozenset({"voice"}),
                                  frozenset({"face", "voice"})}
    both = fuser.subsets[frozenset({"face", "voice"})]
    # independent evidence: the optimal fused LLR is the plain sum of the two LLRs
    assert both.weights["face"] == pytest.approx(1.0, abs=0.05)
    assert both.weights["voice"] == pytest.approx(1.0, abs=0.05)
    assert both.bias == pytest.approx(0.0, abs=0.05)


def test_fusion_of_few_separable_trials_is_shrunk_towards_the_sum():
    # 30 genuine / 300 impostor, well separated: an unshrunk fit inflates the weights (it can
    # always lower the training loss by scaling separable LLRs up); the shipped fit stays near
    # the sum of LLRs, and a strong data signal still moves it (the large-sample test above)
    from calibration.scores import DEFAULT_L2
    from edge_runtime.operating_points import Calibration

    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30, bool), np.zeros(300, bool)]
    face = np.where(y, 3.0, -3.0) + rng.normal(0, 1.0, y.size)
    voice = np.where(y, 2.0, -2.0) + rng.normal(0, 1.0, y.size)
    trials = TrialScores({"face": face, "voice": voice}, y)
    ident = {m: Calibration(1.0, 0.0) for m in ("face", "voice")}
    both = frozenset({"face", "voice"})
    free = fit_fuser(trials, ident, subsets=[both], l2=DEFAULT_L2).subsets[both].weights
    shrunk = fit_fuser(trials, ident, subsets=[both]).subsets[both].weights
    assert min(free.values()) > 2.0
    assert all(0.7 < w < 1.6 for w in shrunk.values()), shrunk


def test_missing_modality_rule():
    trials = _joint(4000, seed=6)
    fuser = fit_fuser(trials, fit_calibrations(trials))
    face_only = fuser.subsets[frozenset({"face"})]
    expected = face_only.bias + face_only.weights["face"] * float(fuser.calibrations["face"].llr(0.3))
    assert fuser.score({"face": 0.3, "voice": None}) == pytest.approx(expected)
    assert fuser.score({"face": 0.3, "voice": float("nan")}) == pytest.approx(expected)
    both = fuser.subsets[frozenset({"face", "voice"})]
    exp2 = both.bias + sum(both.weights[m] * float(fuser.calibrations[m].llr(v))
                           for m, v in (("face", 0.3), ("voice", -0.2)))
    assert fuser.score({"face": 0.3, "voice": -0.2}) == pytest.approx(exp2)
    with pytest.raises(ConfigError, match="no calibration for modality"):
        fuser.score({"face": 0.3, "Voice": 0.1})
    with pytest.raises(ConfigError, match="no fusion trained"):
        fuser.score({"face": None})


def test_fallback_to_largest_trained_subset_and_joint_rows_only():
    single = TrialScores.from_sets("face", *_gauss(1, -1, 1, 300, 900, seed=7))
    joint = _joint(2000, seed=8)
    rng = np.random.default_rng(9)
    cross = np.where(joint.genuine, 0.5, -0.5) + rng.normal(0, 1, joint.genuine.size)
    cross[:1500] = np.nan  # the optional cross-modal score exists for few trials
    joint3 = TrialScores({**joint.scores, "cross": cross}, joint.genuine)
    trials = TrialScores.concat([single, joint3])
    assert np.isnan(trials.scores["voice"][:1200]).all()
    assert trials.counts(["face"]) == (300 + 500, 900 + 1500)
    assert trials.counts(["face", "voice"]) == (500, 1500)
    cals = fit_calibrations(trials)
    subsets = [("face",), ("voice",), ("face", "voice")]
    fuser = fit_fuser(trials, cals, subsets=subsets)
    # cross is calibrated but not fused: present -> ignored, falls back to face+voice
    assert fuser.subset_for(["face", "voice", "cross"]) == frozenset({"face", "voice"})
    assert fuser.subset_for(["voice", "cross"]) == frozenset({"voice"})
    with pytest.raises(ConfigError, match="cross\\+voice: 125 genuine.*need >= 200"):
        fit_fuser(trials, cals, subsets=[("cross", "voice")], min_per_class=200)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="no genuine"):
        fit_calibration([], [0.1, 0.2])
    with pytest.raises(ConfigError, match="prior"):
        fit_calibration([1.0, 2.0], [0.1, 0.2], prior=1.0)
    with pytest.raises(ConfigError, match="scores for"):
        TrialScores({"face": np.zeros(3)}, np.zeros(4, bool))
    few = TrialScores.from_sets("face", [1.0, 2.0], [0.0] * 20)
    with pytest.raises(ConfigError, match="need >= 10"):
        fit_calibrations(few)
