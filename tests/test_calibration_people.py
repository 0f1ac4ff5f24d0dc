"""Person-level FAR intervals and the coverage study (synthetic populations, CPU only).

Synthetic people are used because what is tested is the statistics: whether an interval
computed on one group of people contains the FAR another group shows as often as it claims.
No accuracy claim about a model is made here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from calibration.held_out import coverage_study, misses_p_value
from calibration.people import PersonTrials, person_far_interval
from calibration.score_sets import ScoreSets, SetConfig
from calibration.thresholds import threshold_point
from calibration.trials import Embedded, enrol, enrol_rows, held_out_trials, speech_template_rows
from edge_runtime.errors import ConfigError, DatasetError


def _population(rng: np.random.Generator, n_probe: int, n_tmpl: int, per: int = 4):
    """Impostor trials with person effects: 'lamb' templates and 'wolf' probes score high."""
    wolf = rng.normal(0, 0.6, n_probe)
    lamb = rng.normal(0, 0.6, n_tmpl)
    p = np.repeat(np.arange(n_probe), n_tmpl * per)
    t = np.tile(np.repeat(np.arange(n_tmpl), per), n_probe)
    s = wolf[p] + lamb[t] + rng.normal(0, 1, p.size)
    people = np.stack([np.char.add("p", p.astype(str)), np.char.add("t", t.astype(str))], 1)
    return s, people


def test_unit_weights_give_the_threshold_rule_of_calibration_thresholds():
    rng = np.random.default_rng(0)
    s, people = _population(rng, 30, 10)
    trials = PersonTrials(s, people)
    ones_p = np.ones((1, trials.probe_names.size))
    ones_t = np.ones((1, trials.template_names.size))
    for far in (0.05, 0.01, 0.004):  # 1200 trials: 0.004 is still measurable
        want = threshold_point(rng.normal(size=5) + 9, s, far, n_bootstrap=1).threshold
        assert trials.thresholds_at(ones_p, ones_t, far)[0] == pytest.approx(want)
        assert trials.above(ones_p, ones_t, np.array([want]))[0] / s.size <= far


def test_prediction_interval_is_wider_than_the_fixed_threshold_one_and_holds_the_target():
    rng = np.random.default_rng(1)
    s, people = _population(rng, 60, 25)
    trials = PersonTrials(s, people)
    thr = threshold_point(np.ones(5) * 9, s, 0.01, n_bootstrap=1).threshold
    kw = dict(n_bootstrap=400, seed=0, confidence=0.95)
    lo_c, hi_c = trials.far_interval(thr, **kw)
    lo_p, hi_p = trials.prediction_interval(0.01, **kw)
    assert lo_c < 0.01 < hi_c and lo_p < 0.01 < hi_p
    assert (hi_p - lo_p) > 1.15 * (hi_c - lo_c)  # both groups vary: about sqrt(2) wider
    assert person_far_interval(s, people, thr, **kw) == (lo_c, hi_c)


def test_prediction_interval_covers_the_far_of_new_people_about_as_often_as_it_claims():
    # the check it is built for: threshold set on one group, FAR measured on a fresh group
    rng = np.random.default_rng(2)
    inside, inside_trials, runs = 0, 0, 40
    for k in range(runs):
        s_a, p_a = _population(rng, 40, 20)
        s_b, _ = _population(rng, 40, 20)
        point = threshold_point(np.ones(3) * 9, s_a, 0.02, n_bootstrap=200, seed=k)
        far_b = float(np.mean(s_b > point.threshold))
        lo, hi = PersonTrials(s_a, p_a).prediction_interval(0.02, n_bootstrap=200, seed=k,
                                                            confidence=0.95)
        inside += lo <= far_b <= hi
        inside_trials += point.far_ci[0] <= far_b <= point.far_ci[1]
    assert inside >= 35  # 95% nominal: P(<= 34 of 40 | p = 0.95) ~ 1.4%
    assert inside_trials < 30  # resampling trials ignores the people: far too narrow


def test_bad_person_labels_and_settings_are_refused():
    with pytest.raises(ConfigError, match="one \\(probe, template\\) person pair"):
        PersonTrials([0.1, 0.2], [["a", "b"]])
    trials = PersonTrials([0.1, 0.2], [["a", "b"], ["c", "d"]])
    with pytest.raises(ConfigError, match="n_bootstrap"):
        trials.far_interval(0.0, n_bootstrap=0, seed=0, confidence=0.95)
    with pytest.raises(ConfigError, match="target FAR"):
        trials.prediction_interval(1.5, n_bootstrap=10, seed=0, confidence=0.95)


def test_misses_p_value_is_the_binomial_tail():
    for misses, n in ((0, 40), (2, 40), (7, 40), (3, 10)):
        assert misses_p_value(misses, n, 0.95) == pytest.approx(binom.sf(misses - 1, n, 0.05))
    with pytest.raises(ConfigError):
        misses_p_value(5, 4, 0.95)


def _embedded(ids: list[str], rng: np.random.Generator, dim: int = 16,
              noise: float = 0.6) -> Embedded:
    names = sorted(set(ids))
    centres = {n: rng.standard_normal(dim) for n in names}
    emb = np.stack([centres[i] + noise * rng.standard_normal(dim) for i in ids])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Embedded(ids, emb.astype(np.float32), [f"{i}/{k}" for k, i in enumerate(ids)])


def test_enrol_keeps_exactly_n_people_as_templates_and_caps_probes():
    rng = np.random.default_rng(3)
    ids = ["many"] * 30 + ["two"] * 2 + ["one"]
    t, p = enrol(_embedded(ids, rng), 2, max_probes=5)
    assert set(t) == {"many", "two"}  # exactly N samples: enrolled, an impostor target
    assert p["two"] == [] and p["one"] == [32] and p["many"] == list(range(2, 7))
    t_all, p_all = enrol(_embedded(ids, rng), 2)
    assert len(p_all["many"]) == 28
    with pytest.raises(DatasetError, match="max_probes"):
        enrol(_embedded(ids, rng), 2, max_probes=0)


def test_voice_templates_take_speech_as_the_door_enrols_and_leave_a_probe():
    rng = np.random.default_rng(4)
    ids = ["long"] * 6 + ["short"] * 4 + ["one"] + ["few"] * 2
    e = _embedded(ids, rng)
    # "long": 6 s each -> 3 recordings make 18 s; "short": 2 s each, all but the last taken
    # (6 s, under 15 s: enrolled anyway, as the door does, with a warning there); "few": 2
    # recordings -> 1 enrols, 1 probes; "one": a single recording only probes.
    e.voiced_s = np.array([6.0] * 6 + [2.0] * 4 + [9.0] + [20.0, 20.0])
    def enrol_by_speech(e: Embedded, until_s: float, minimum: int, max_probes: int | None = None):
        return enrol_rows(e, speech_template_rows(e, until_s, minimum), max_probes)

    t, p = enrol_by_speech(e, 15.0, 3)
    assert set(t) == {"long", "short", "few"}
    assert p["long"] == [3, 4, 5] and p["short"] == [9] and p["few"] == [12] and p["one"] == [10]
    assert np.allclose(t["long"], enrol(Embedded(ids[:3], e.emb[:3], e.sources[:3]), 3)[0]["long"])
    # at least 3 recordings even when the first two hold the 15 s
    e.voiced_s[:6] = 10.0
    assert enrol_by_speech(e, 15.0, 3)[1]["long"] == [3, 4, 5]
    assert enrol_by_speech(e, 15.0, 3, max_probes=1)[1]["long"] == [3]
    with pytest.raises(DatasetError, match="voiced seconds"):
        enrol_by_speech(_embedded(ids, rng), 15.0, 3)
    # the held-out trials say what the templates took; a probe length keeps the seconds
    face = _embedded([f"f{i}" for i in range(6) for _ in range(4)], rng)
    info = held_out_trials(face, e, 2, 3, 0, 3, voice_until_s=15.0)[2]["voice_templates"]
    assert info["templates"] == 3 and info["recordings_min"] == 1 and info["recordings_max"] == 3
    e.probe_by_s = {1.0: e.emb}
    assert e.with_probe_length(1.0).voiced_s is e.voiced_s


def _sets(rng: np.random.Generator) -> ScoreSets:
    face_ids = [f"f{i:02d}" for i in range(40) for _ in range(2 + i % 4)] + \
        [f"s{i:02d}" for i in range(30)]
    voice_ids = [f"v{i:02d}" for i in range(16) for _ in range(6)]
    face, voice = _embedded(face_ids, rng), _embedded(voice_ids, rng, noise=0.8)
    cfg = SetConfig(n_face=2, n_voice=3, max_probes=3, voice_enrol_s=None)
    parts, people, info = held_out_trials(face, voice, 2, 3, 0, 3)
    return ScoreSets(parts, info, "0" * 64, people, {"face": face, "voice": voice}, cfg)


def test_resplits_move_people_between_halves_and_never_mix_them():
    sets = _sets(np.random.default_rng(4))
    a, b = sets.resplit(1), sets.resplit(2)
    for s in (a, b):
        h = s.info["halves"]
        assert not set(h["0"]["face_identities"]) & set(h["1"]["face_identities"])
        pairs = s.info["artificial_pairs"]
        assert abs(sum(p["half"] for p in pairs) * 2 - len(pairs)) <= 1  # balanced
    assert a.info["halves"] != b.info["halves"]
    assert a.resplit(1).info["halves"] == a.info["halves"]  # a seed is one split


def test_coverage_study_counts_every_point_of_every_split():
    sets = _sets(np.random.default_rng(5))
    kw = dict(targets=(0.05,), n_bootstrap=50, seed=0, min_per_class=2)
    seen = []
    cov = coverage_study(sets, 4, {"face": "0" * 64}, kw, progress=seen.append)
    assert seen == [1, 2, 3, 4]
    assert {p["modalities"] for p in cov["points"]} == {"face", "voice", "face+voice"}
    for p in cov["points"]:
        assert p["n"] == 4 and 0 <= p["inside"] <= 4 and p["coverage"] == p["inside"] / 4
        assert p["consistent"] == (p["p_value"] >= cov["alpha"])
    assert cov["consistent"] == all(p["consistent"] for p in cov["points"])
    with pytest.raises(ConfigError, match="at least 1 split"):
        coverage_study(sets, 0, {}, kw)


def test_voice_calibration_gets_a_table_of_probe_lengths_and_short_probes_weigh_less():
    from calibration.held_out import fit_half

    rng = np.random.default_rng(6)
    sets = _sets(rng)
    voice = sets.embedded["voice"]
    centres = {}
    for i, ident in enumerate(voice.identities):
        centres.setdefault(ident, voice.emb[i])

    def probes(noise: float) -> np.ndarray:
        x = np.stack([centres[i] + noise * rng.standard_normal(voice.emb.shape[1])
                      for i in voice.identities])
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    voice = Embedded(voice.identities, voice.emb, voice.sources, probe_emb=probes(0.05),
                     probe_by_s={0.75: probes(0.6)})  # a short probe is a noisier one
    cfg = SetConfig(n_face=2, n_voice=3, max_probes=3, voice_enrol_s=None, voice_probe_s=2.0,
                    voice_probe_lengths=(0.75,))
    sets = ScoreSets(sets.parts, sets.info, sets.data_sha256, sets.people,
                     {"face": sets.embedded["face"], "voice": voice}, cfg).resplit(0)
    kw = dict(targets=(0.05,), n_bootstrap=20, seed=0, min_per_class=2)
    cal = fit_half(sets, 0, {"face": "0" * 64}, kw, "").fuser.calibrations["voice"]
    (short, a_short, _), (ref, a_ref, b_ref) = cal.by_seconds
    assert (short, ref) == (0.75, 2.0) and (cal.slope, cal.offset) == (a_ref, b_ref)
    assert a_short < a_ref  # the same cosine from less speech is weaker evidence
    plain = fit_half(sets, 0, {"face": "0" * 64}, kw, "", by_length=False)
    assert plain.fuser.calibrations["voice"].by_seconds == ()
    assert plain.thresholds == fit_half(sets, 0, {"face": "0" * 64}, kw, "").thresholds


def test_paired_eer_difference_interval_sees_a_real_gain_and_none_where_there_is_none():
    from calibration.people import paired_eer_difference_interval

    rng = np.random.default_rng(7)
    names = [f"p{i}" for i in range(30)]
    probe = np.repeat(names, 30 * 3)
    tmpl = np.tile(np.repeat(names, 3), 30)
    gen = probe == tmpl
    person = {n: rng.normal(0, 0.5) for n in names}  # shared by both scores: cancels
    base = np.array([person[p] for p in probe]) + np.where(gen, 1.0, 0.0)
    weak = base + rng.normal(0, 1.0, base.size)
    strong = base + np.where(gen, 1.5, 0.0) + rng.normal(0, 1.0, base.size)
    people = np.stack([probe, tmpl], 1)
    kw = dict(n_bootstrap=200, seed=0, confidence=0.95)
    lo, hi = paired_eer_difference_interval(weak, strong, gen, people, **kw)
    assert 0 < lo < hi  # strong has the lower EER on every resample of the people
    assert paired_eer_difference_interval(weak, weak, gen, people, **kw) == (0.0, 0.0)
    with pytest.raises(ConfigError, match="person pair per trial"):
        paired_eer_difference_interval(weak, strong[:-1], gen, people, **kw)
