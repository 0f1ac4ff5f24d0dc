"""Face+voice impostors as the product of the face and voice impostor sets (synthetic scores:
the counting, the measurability rule and the intervals; real data in `edgepin calibrate`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from calibration.operating_points import build_operating_points, check_held_out
from calibration.product import (
    METHOD,
    ProductImpostors,
    independence,
    product_threshold_point,
)
from calibration.scores import TrialScores
from edge_runtime.operating_points import load_operating_points, save_operating_points

HASHES = {"face": hashlib.sha256(b"f").hexdigest(), "voice": hashlib.sha256(b"v").hexdigest()}
MANIFEST = hashlib.sha256(b"m").hexdigest()


def test_far_and_threshold_equal_the_materialised_product():
    rng = np.random.default_rng(0)
    a, b = rng.normal(-5, 2, 700), rng.normal(-4, 1.5, 500)
    prod = ProductImpostors(a, b)
    full = (a[:, None] + b[None, :]).ravel()
    for t in (-12.0, -6.0, -1.0, 3.0):
        assert prod.far(t) == pytest.approx(np.mean(full > t), abs=1e-12)
    thr = prod.threshold_at(1e-3)
    assert np.mean(full > thr) <= 1e-3 < np.mean(full > thr - 1e-4)
    assert prod.n == 350_000


def _sets(n_face: int, n_voice: int, n_joint: int, seed: int) -> TrialScores:
    """Face-only, voice-only and joint rows; genuine and impostor; independent modalities."""
    rng = np.random.default_rng(seed)

    def block(n, face, voice):
        y = np.arange(n) % 10 == 0
        f = np.where(y, 1.5, -1.5) + rng.normal(0, 1, n) if face else np.full(n, np.nan)
        v = np.where(y, 1.0, -1.0) + rng.normal(0, 1, n) if voice else np.full(n, np.nan)
        return TrialScores({"face": f, "voice": v}, y)

    return TrialScores.concat([block(n_face, True, False), block(n_voice, False, True),
                               block(n_joint, True, True)])


def test_build_sets_the_joint_1e3_point_on_the_product_and_it_holds_on_new_trials(tmp_path):
    fit, held, other = _sets(4000, 4000, 3000, 1), _sets(20000, 8000, 1500, 2), \
        _sets(20000, 8000, 1500, 3)
    op = build_operating_points(fit, held, model_hashes=HASHES, data_manifest_sha256=MANIFEST,
                                targets=(1e-2, 1e-3), n_bootstrap=100, seed=0,
                                provisional=False)
    by = {("+".join(p.modalities), p.target_far): p for p in op.thresholds}
    joint = by[("face+voice", 1e-3)]
    # 1350 joint impostors cannot measure 1e-3 (needs 3000); the product of the 18000 + 1350
    # face and 7200 + 1350 voice impostor trials can
    assert joint.measurable and joint.method == METHOD
    assert joint.n_impostor == 19350 * 8550
    assert joint.far_ci[0] <= 1e-3 <= joint.far_ci[1]
    assert by[("face+voice", 1e-2)].method is None  # measurable on the joint set: unchanged
    assert "product of 19350 face x 8550 voice" in op.notes
    # other people: the FAR of this threshold on their product set is near the target
    row = next(r for r in check_held_out(op, other) if r["target_far"] == 1e-3
               and r["modalities"] == "face+voice")
    assert row["method"] == METHOD and 0.5e-3 < row["far"] < 2e-3
    back = load_operating_points(save_operating_points(op, tmp_path / "op.yaml"), HASHES)
    assert back.threshold_for(("face", "voice"), 1e-3).method == METHOD
    assert back.decide({"face": 3.0, "voice": 2.0}, 1e-3).accepted
    assert not back.decide({"face": -1.0, "voice": -1.0}, 1e-3).accepted


def test_a_point_carried_by_a_few_trials_is_refused_and_intervals_resample_people():
    rng = np.random.default_rng(4)
    a = rng.normal(-6, 1, 5000)
    b = np.concatenate([rng.normal(-30, 1, 4990), rng.normal(0, 0.1, 10)])  # 10 loud outliers
    p = product_threshold_point(ProductImpostors(a, b), rng.normal(2, 1, 300), 1e-3,
                                n_bootstrap=50, seed=0, confidence=0.95)
    assert not p.measurable and "10 voice trials" in p.reason and p.method == METHOD
    people_a = np.array([(f"p{i % 40}", f"t{i % 37}") for i in range(a.size)], object)
    people_b = np.array([(f"q{i % 30}", f"u{i % 29}") for i in range(b.size)], object)
    b2 = rng.normal(-5, 1, b.size)
    by_people = ProductImpostors(a, b2, people_a, people_b)
    by_trials = ProductImpostors(a, b2)
    thr = by_trials.threshold_at(1e-3)
    _, ci_people = by_people.intervals(thr, 1e-3, n_bootstrap=100, seed=1, confidence=0.95)
    _, ci_trials = by_trials.intervals(thr, 1e-3, n_bootstrap=100, seed=1, confidence=0.95)
    assert ci_people[0] <= 1e-3 <= ci_people[1] and ci_trials[0] <= 1e-3 <= ci_trials[1]


def test_independence_check_sees_dependent_scores():
    rng = np.random.default_rng(5)
    f = rng.normal(0, 1, 2000)
    gen = np.zeros(2000, bool)
    assert abs(independence({"face": f, "voice": rng.normal(0, 1, 2000)}, gen)["spearman"]) < 0.1
    assert independence({"face": f, "voice": f + rng.normal(0, 0.5, 2000)}, gen)["spearman"] > 0.8
    assert independence({"face": f[:5], "voice": f[:5]}, gen[:5])["spearman"] is None


def test_prediction_interval_is_wider_than_the_fixed_threshold_one():
    """Another group of people sees the FAR of a threshold chosen on a sample: both the
    threshold and the FAR vary, so the prediction interval must be wider than the FAR
    interval of the fixed threshold (the coverage study compares held-out FARs with it)."""
    rng = np.random.default_rng(6)
    a, b = rng.normal(-5, 2, 6000), rng.normal(-4, 1.5, 1500)
    pa = np.array([(f"p{i % 50}", f"t{i % 47}") for i in range(a.size)], object)
    pb = np.array([(f"q{i % 15}", f"u{i % 14}") for i in range(b.size)], object)
    prod = ProductImpostors(a, b, pa, pb)
    thr = prod.threshold_at(1e-3)
    _, ci = prod.intervals(thr, 1e-3, n_bootstrap=200, seed=0, confidence=0.95)
    pi = prod.prediction_interval(1e-3, n_bootstrap=200, seed=0, confidence=0.95)
    assert pi[0] <= 1e-3 <= pi[1]
    assert pi[1] - pi[0] > ci[1] - ci[0]
