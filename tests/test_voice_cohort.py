"""The score arithmetic of benchmarks/voice_cohort.py (AS-norm, EER, veto pass rate) on
hand-made numbers; its accuracy figures come from real data in the benchmark, not here."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.voice_cohort import as_norm, attack_mix, eer, pass_rate, top_k_stats


def test_top_k_stats_takes_the_k_nearest_cohort_cosines():
    cohort = np.eye(4)  # probe . row = the probe's own coordinates
    probe = np.array([[0.9, 0.5, 0.1, -0.3]])
    mean, sd = top_k_stats(probe, cohort, 2)
    assert mean[0] == pytest.approx(0.7)
    assert sd[0] == pytest.approx(0.2)
    mean_all, _ = top_k_stats(probe, cohort, 10)  # k larger than the cohort: all of it
    assert mean_all[0] == pytest.approx(0.3)


def test_as_norm_is_the_mean_of_both_sides_z_scores():
    s = np.array([0.6, 0.2])
    out = as_norm(s, (np.array([0.2, 0.2]), np.array([0.1, 0.1])),
                  (np.array([0.4, 0.0]), np.array([0.2, 0.4])))
    assert out == pytest.approx([0.5 * (4.0 + 1.0), 0.5 * (0.0 + 0.5)])


def test_eer_and_pass_rate():
    assert eer(np.array([0.8, 0.9, 1.0]), np.array([0.1, 0.2, 0.3])) == 0.0
    gen = np.linspace(0.0, 1.0, 101)
    imp = np.array([-1.0, 0.5, 0.99])
    # the 2 % quantile of gen is 0.02: two of the three impostors pass
    assert pass_rate(gen, imp, 0.02) == pytest.approx(2 / 3)
    assert pass_rate(gen, imp, 0.99) == pytest.approx(1 / 3)


def test_attack_mix_applies_the_other_folds_table_at_the_probe_length():
    names = [f"s{i}" for i in range(4)]
    templates = np.eye(4, 8)
    # 25 own probes per speaker at one length, cosine to own template 0.8 .. 1.0
    probes, who = [], []
    for i in range(4):
        for c in np.linspace(0.8, 1.0, 25):
            v = np.zeros(8)
            v[i], v[4 + i] = c, np.sqrt(1 - c * c)
            probes.append(v)
            who.append(names[i])
    mix_emb = np.array([templates[0] * 0.9 + templates[1] * np.sqrt(1 - 0.81),  # s0 voice
                        templates[1] * 0.5 + templates[0] * np.sqrt(0.75)])  # s1 voice
    emb = {"templates": templates, "template_who": names, "gender": dict.fromkeys(names, "F"),
           "probes": {1.0: (np.asarray(probes), who)},
           "mix": {"emb": mix_emb, "speech_s": np.array([2.0, 2.0]), "who": ["s0", "s1"]}}
    out = attack_mix(emb, None, 0, 0.02)
    by_pair = {(p, t): ok for p, t, ok in zip(out["probe_who"], out["template_who"],
                                               out["passed"], strict=True)}
    assert by_pair[("s0", "s0")]  # 0.9 >= the 2 % quantile (~0.81) of own voices
    assert not by_pair[("s0", "s1")]  # 0.44 is vetoed
    assert by_pair[("s1", "s0")]  # 0.87: a stranger scoring like an own voice passes
    assert not by_pair[("s1", "s1")]  # an own voice scoring 0.5 is vetoed
