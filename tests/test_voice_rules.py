"""benchmarks/voice_rules.py: the rule combinations it measures are the runtime's."""

from __future__ import annotations

from benchmarks.voice_rules import RULES, fires, render, rule_modes
from edge_runtime.models import Thresholds
from edge_runtime.operating_points import (
    Calibration,
    Fuser,
    OperatingPoints,
    SecurityMode,
    SubsetFusion,
    ThresholdPoint,
)


def test_rules_compared_are_the_runtimes_own():
    """The benchmark decides each rule with ``decision.recognised_as_other``: the shipped mode
    (the margin at any length; the rule before, the other voice accepted alone above the
    candidate's, only from the decisive speech), the rule before at every length, and each
    margin alone. Voice LLR 8 * cosine - 4, accepted alone at LLR > 2, decisive speech 2 s."""
    fuser = Fuser({"voice": Calibration(8.0, -4.0)},
                  {frozenset({"voice"}): SubsetFusion({"voice": 1.0}, 0.0)})
    point = ThresholdPoint(("voice",), 1e-2, 2.0, 1e-2, 0.05, None, None, None, 100, 1000, 0,
                           0.95, 0)
    op = OperatingPoints({}, "1" * 64, fuser, (point,), provisional=False)
    mode = SecurityMode("face+liveness", 1e-2, 0.5, 1.0, -2.0, voice_other_margin_llr=2.0)
    rules = rule_modes(mode)
    assert set(rules) == set(RULES)
    th = Thresholds({}, {}, provisional=False)

    def shipped(other, own, seconds):
        return fires(rules["shipped"], op, th, other, own, seconds)

    # other LLR 2.4 > 2 and above the candidate's 1.6: the rule before fires, the margin not
    assert not shipped(0.8, 0.7, 1.0) and shipped(0.8, 0.7, 3.0)
    assert fires(rules["before"], op, th, 0.8, 0.7, 1.0)
    assert not fires(rules["margin 2"], op, th, 0.8, 0.7, 3.0)
    # other LLR 0.8, candidate -1.6: a difference of 2.4 fires at any length
    assert shipped(0.6, 0.3, 1.0) and shipped(0.6, 0.3, 3.0)
    assert fires(rules["margin 2"], op, th, 0.6, 0.3, 3.0)
    assert not fires(rules["before"], op, th, 0.6, 0.3, 3.0)
    assert not shipped(0.625, 0.5625, 1.0) and not shipped(0.625, 0.5625, 3.0)


def test_render_writes_one_row_per_length_and_gallery():
    rate = dict.fromkeys(RULES, 0.01)
    machine = {"cpu": "cpu", "memory": "1 GiB", "os": "os", "python": "3", "onnxruntime": "1"}
    res = {"machine": machine, "date": "d", "models": "models", "precision": "fp32", "speakers": 30,
           "until_s": 5.0,
           "recognised_as": [{"seconds": s, "gallery": n, "trials": 10, "genuine_denied": rate,
                              "genuine_denied_not_vetoed": rate, "mixed_passing": rate,
                              "mixed_passing_veto_only": 0.2}
                             for s in (1.0, 3.0) for n in (7, 15)],
           "live_wait": {k: {"own_denied": 0.02, "strangers_granted": 0.05, "genuine": 200,
                             "strangers": 3000, "own_decided_at_mean_s": 3.0,
                             "own_waiting": 0.04} for k in ("no wait", "wait")}}
    text = render(res)
    rows = [line for line in text.splitlines() if line.startswith("| 1 s |")
            or line.startswith("| 3 s |")]
    assert len(rows) == 4 and all(line.count("1.0 %") == 2 * len(RULES) for line in rows)
    assert "| wait | 2.0 % of 200 | 5.0 % of 3000 | 3.00 s | 4 % |" in text
