"""The live door's voice rule as benchmarks/enrol_speech.py replays it (no model needed: the
rule is applied to given LLRs)."""

from __future__ import annotations

import numpy as np

from benchmarks.enrol_speech import door


def test_door_rejects_at_the_first_vetoed_look_and_grants_on_a_confirming_voice():
    veto = np.array([0.0, 1.0, 2.0])
    llr = np.array([[0.5, 1.5, 1.9],    # passes two looks, vetoed at the third
                    [0.5, 1.5, 2.5],    # never vetoed: granted at the end
                    [-1.0, 9.0, 9.0],   # vetoed at the first look, later speech is not heard
                    [0.5, 0.5, -5.0]])  # confirms on its own at the first look: granted
    accepted = np.array([[False] * 3, [False] * 3, [False, True, True], [True, False, False]])
    assert door(llr, accepted, veto).tolist() == [False, True, False, True]
