"""The voice-veto dev study's arithmetic (benchmarks/voice_goats.py) on synthetic embeddings:
that each alternative does what it says and can succeed where the data allow. What it finds on
real speakers is in benchmarks/voice_goats.md, not here."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.voice_goats import (
    agreement,
    agreement_veto,
    enrol_counts,
    nearest,
    resample_probes,
    study,
)
from benchmarks.voice_rehearsal import rehearse, summary
from tests.test_voice_rehearsal import _people, _unit


def test_agreement_is_each_recording_against_the_mean_of_the_others():
    e = _unit(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    expect = np.mean([e[0] @ _unit(e[1] + e[2]), e[1] @ _unit(e[0] + e[2]),
                      e[2] @ _unit(e[0] + e[1])])
    assert agreement(e) == pytest.approx(expect)
    assert np.isnan(agreement(e[:1]))  # one recording agrees with nothing


def _foretold(n: int = 16, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """People whose probes score lower the lower a known feature: the case a per-person veto
    is for (the real feature, enrolment agreement, turned out not to foretell it)."""
    people = _people(n=n, drifting=None, seed=seed)
    rng = np.random.default_rng(seed)
    feature = np.zeros(n)
    for i, sp in enumerate(people):
        if i % 4 == 1:  # every fourth person's later voice has moved away from her enrolment
            away = _unit(rng.normal(size=sp["probes"].shape[-1]))
            sp["probes"] = _unit(sp["probes"] + 0.8 * away)
            feature[i] = -1.0
    return people, feature


def test_a_per_person_veto_helps_the_low_scorers_when_the_feature_foretells_them():
    people, feature = _foretold()
    shipped = summary(rehearse(people, halvings=6))
    personal = summary(rehearse(people, halvings=6, veto_rule=agreement_veto(feature)))
    assert shipped["worst_person"] >= 60
    # the residual quantile still pools everyone's spread: a clear gain, not a cure
    assert personal["worst_person"] < shipped["worst_person"] - 15


def test_a_per_person_veto_never_stricter_than_the_population_cannot_veto_more():
    people, feature = _foretold(seed=3)
    shipped = rehearse(people, halvings=4)
    capped = rehearse(people, halvings=4, veto_rule=agreement_veto(-feature, never_stricter=True))
    for name, rate in capped["people"].items():
        assert rate <= shipped["people"][name] + 1e-12


def test_nearest_recording_scores_are_at_least_the_mean_of_the_nearest_two():
    people = _people(n=4)
    sp = people[0]
    one = nearest(1)(sp["probes"], sp["enrol"], sp["enrol"][0])
    two = nearest(2)(sp["probes"], sp["enrol"], sp["enrol"][0])
    assert one.shape == sp["probes"].shape[:2]
    assert np.all(one >= two - 1e-12)


def test_more_enrolment_speech_takes_more_recordings_up_to_seven():
    people = [{"voiced": [4.0] * 7}, {"voiced": [9.0] * 7}]
    assert enrol_counts(people, 15.0) == [4, 3]
    assert enrol_counts(people, 25.0) == [7, 3]
    assert enrol_counts(people, 99.0) == [7, 7]


def test_resampling_keeps_a_recordings_three_starts_together():
    people = _people(n=2)
    for r, sp in enumerate(people):  # tag each probe row with its recording in the first look
        sp["probes"] = np.array(sp["probes"])
        sp["probes"][:, 0, 0] = np.repeat(np.arange(5), 3) + 10 * r
    out = resample_probes(people, np.random.default_rng(0))
    for r, sp in enumerate(out):
        tags = sp["probes"][:, 0, 0].reshape(5, 3)
        assert sp["probes"].shape == people[r]["probes"].shape
        assert np.all(tags == tags[:, :1])  # each group of three is one recording
        assert set(tags[:, 0].tolist()) <= {10.0 * r + k for k in range(5)}


def test_the_study_reports_every_alternative_and_the_bootstrap():
    res = study(_people(n=12, drifting=3), bootstraps=3)
    assert len(res["rows"]) == 9 and len(res["bootstrap"]) == 3
    shipped = res["rows"]["shipped: template, population veto, 15 s"]
    assert shipped["worst_person"] == pytest.approx(summary(rehearse(_people(n=12, drifting=3),
                                                                     quantiles=(0.02,)))
                                                    ["worst_person"])
    assert -1 <= res["corr_agreement_own"] <= 1
