"""benchmarks/voice_rules.py: the rule combinations it measures are the runtime's."""

from __future__ import annotations

from benchmarks.voice_rules import RULES, _margin_rule, _shipped_rule, render


def test_shipped_rule_is_the_margin_and_from_the_decisive_speech_the_rule_before():
    """Mirror of ``decision._recognised_as_other``: the margin at any length; the rule before
    (the other voice accepted alone, above the candidate's) only from the decisive speech."""
    def alone(lo, lc, co, cc):
        return co > cc and lo > 2.0

    margin = _margin_rule(2.0)
    short, long = _shipped_rule(margin, alone, False), _shipped_rule(margin, alone, True)
    # other LLR 2.4 > 2 and above the candidate (1.6): the rule before fires, the margin not
    assert not short(2.4, 1.6, 0.8, 0.7) and long(2.4, 1.6, 0.8, 0.7)
    # other LLR 0.8, candidate -1.6: a difference of 2.4 fires at any length
    assert short(0.8, -1.6, 0.6, 0.3) and long(0.8, -1.6, 0.6, 0.3)
    assert not short(1.0, 0.5, 0.6, 0.55) and not long(1.0, 0.5, 0.6, 0.55)


def test_render_writes_one_row_per_length_and_gallery():
    rate = dict.fromkeys(RULES, 0.01)
    res = {"machine": "m", "date": "d", "models": "models", "precision": "fp32", "speakers": 30,
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
