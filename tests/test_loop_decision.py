"""The decision rule on hand-made scores: same identity, thresholds, cross-modal liveness."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.access.decision import Evidence, Matches, decide
from edge_runtime.errors import ConfigError
from edge_runtime.models import Thresholds, parse_threshold_overrides
from edge_runtime.operating_points import (
    Calibration,
    Fuser,
    OperatingPoints,
    SubsetFusion,
    ThresholdPoint,
)

PROV = Thresholds({"face": 0.5, "voice": 0.6, "pin": 0.3, "faa": 0.5}, {}, provisional=True)


def ev(face, voice, cross=None, **kw):
    return Evidence(None if face is None else Matches.of(face),
                    None if voice is None else Matches.of(voice), cross or {}, **kw)


def test_same_person_both_modalities_granted_and_marked_provisional():
    out = decide(ev({"ann": 0.9, "bob": 0.2}, {"ann": 0.8, "bob": 0.3}), PROV, None, 1e-3)
    assert out.granted and out.candidate == "ann"
    assert out.scores == {"face": 0.9, "voice": 0.8}
    assert "cross-modal check unavailable" in out.reason and "PROVISIONAL" in out.reason


def test_face_of_one_voice_of_another_is_denied_even_when_both_pass_thresholds():
    out = decide(ev({"ann": 0.9, "bob": 0.2}, {"ann": 0.61, "bob": 0.95}), PROV, None, 1e-3)
    assert not out.granted
    assert out.reason.startswith(
        "face and voice match different people (face: ann 0.90, voice: bob 0.95; the voice "
        "alone would accept bob)")
    assert (out.face_match, out.voice_match) == ("ann", "bob")


def test_a_slightly_nearer_stranger_does_not_lock_out_a_genuine_voice():
    # bob's 0.58 is nearer than ann's 0.56 but below the voice threshold (0.60): the voice does
    # not positively recognise bob, so it is not a contradiction; ann's 0.56 still fails 0.60
    out = decide(ev({"ann": 0.9, "bob": 0.2}, {"ann": 0.56, "bob": 0.58}), PROV, None, 1e-3)
    assert not out.granted and out.reason == "voice does not match ann (0.56 <= 0.60)"
    out = decide(ev({"ann": 0.9, "bob": 0.2}, {"ann": 0.65, "bob": 0.58}), PROV, None, 1e-3)
    assert out.granted and (out.face_match, out.voice_match) == ("ann", "ann")
    low = Thresholds({"face": 0.5, "voice": 0.5}, {}, provisional=True)
    out = decide(ev({"ann": 0.9, "bob": 0.2}, {"ann": 0.56, "bob": 0.58}), low, None, 1e-3)
    assert not out.granted and "the voice alone would accept bob" in out.reason


def test_below_threshold_names_the_modality_and_numbers():
    out = decide(ev({"ann": 0.9}, {"ann": 0.55}), PROV, None, 1e-3)
    assert not out.granted
    assert out.reason == "voice does not match ann (0.55 <= 0.60)"


def test_cross_modal_scores_are_reported_but_hold_no_veto():
    # the heads were trained on 7 real people: they denied real people replaying their own
    # clip, so a low cross-modal score is shown in the reason and decides nothing
    out = decide(ev({"ann": 0.9}, {"ann": 0.9}, {"pin": 0.1, "faa": 0.8}), PROV, None, 1e-3)
    assert out.granted
    assert "pin 0.10 disagrees (no veto)" in out.reason and "faa 0.80 agrees" in out.reason
    assert out.liveness == "cross-modal (faa, pin, no veto) + same identity"


def test_single_modality_reports_that_liveness_was_not_checked():
    out = decide(ev({"ann": 0.9}, None, voice_missing="silence only"), PROV, None, 1e-3)
    assert out.granted and out.liveness == "not checked: face only (silence only)"
    assert out.reason.startswith("UNSAFE mode, no liveness check: face matches ann")  # item 3


def test_empty_gallery_and_missing_templates():
    out = decide(ev({}, {}), PROV, None, 1e-3)
    assert not out.granted and "nobody is enrolled" in out.reason
    out = decide(ev({"ann": 0.9}, {"bob": 0.9}), PROV, None, 1e-3)
    assert not out.granted and out.reason == "no enrolled identity has a face and a voice template"
    with pytest.raises(ConfigError):
        decide(ev(None, None), PROV, None, 1e-3)


def test_candidate_is_chosen_on_the_combined_score_over_many_names():
    rng = np.random.default_rng(0)
    names = [f"p{i:05d}" for i in range(10_000)]
    f, v = rng.uniform(-0.2, 0.4, len(names)), rng.uniform(-0.2, 0.4, len(names))
    f[1234], v[1234] = 0.95, 0.9
    out = decide(Evidence(Matches(names, f), Matches(names, v)), PROV, None, 1e-3)
    assert out.granted and out.candidate == "p01234"


def _op(threshold: float) -> OperatingPoints:
    fuser = Fuser(
        {"face": Calibration(10.0, -5.0), "voice": Calibration(8.0, -4.0),
         "pin": Calibration(6.0, -2.0)},
        {frozenset({"face", "voice"}): SubsetFusion({"face": 1.0, "voice": 1.0}, 0.0),
         frozenset({"face"}): SubsetFusion({"face": 1.0}, 0.0)})
    point = ThresholdPoint(("face", "voice"), 1e-3, threshold, 1e-3, 0.05, None, None, None,
                           100, 1000, 0, 0.95, 0)
    return OperatingPoints({"face": "0" * 64}, "1" * 64, fuser, (point,), provisional=False)


def test_operating_points_decide_on_the_fused_llr():
    op = _op(threshold=3.0)
    no_prov = Thresholds({}, {}, provisional=False)
    # fused LLR for ann = (10*0.9-5) + (8*0.8-4) = 4 + 2.4 = 6.4 > 3
    out = decide(ev({"ann": 0.9, "bob": 0.1}, {"ann": 0.8, "bob": 0.1}), no_prov, op, 1e-3)
    assert out.granted and "PROVISIONAL" not in out.reason
    # 4 + (8*0.4-4) = 3.2 > 3 still; with 0.3: 4 - 1.6 = 2.4 <= 3
    out = decide(ev({"ann": 0.9}, {"ann": 0.3}), no_prov, op, 1e-3)
    assert not out.granted
    assert out.reason == ("not recognised as ann: fused LLR 2.40 <= 3.00 (face+voice at FAR "
                          "0.001); voice does not support ann (0.30, calibrated LLR -1.60 <= 0)")
    # a very strong face must not carry a voice that, on its own, says "someone else":
    # fused (10*1.5-5) + (8*0.45-4) = 10 - 0.4 = 9.6 > 3, but the voice LLR is -0.4
    out = decide(ev({"ann": 1.5}, {"ann": 0.45}), no_prov, op, 1e-3)
    assert not out.granted
    assert out.reason == "voice does not support ann (0.45, calibrated LLR -0.40 <= 0)"
    # no threshold stored for this FAR: a clear refusal, never a guessed threshold
    with pytest.raises(ConfigError, match="no threshold for face\\+voice at FAR 0.01"):
        decide(ev({"ann": 0.9}, {"ann": 0.8}), no_prov, op, 1e-2)


def test_cross_modal_with_operating_points_uses_the_calibrated_llr():
    op = _op(threshold=3.0)
    no_prov = Thresholds({}, {}, provisional=False)
    # pin has a calibration but no threshold of its own: LLR 6*0.2-2 = -0.8 <= 0 -> reported
    # as disagreeing, no veto
    out = decide(ev({"ann": 0.9}, {"ann": 0.8}, {"pin": 0.2}), no_prov, op, 1e-3)
    assert out.granted and "pin 0.20 disagrees (no veto)" in out.reason
    out = decide(ev({"ann": 0.9}, {"ann": 0.8}, {"pin": 0.5}), no_prov, op, 1e-3)
    assert out.granted


def test_threshold_overrides_parse_and_refuse_nonsense():
    assert parse_threshold_overrides(["face=0.8", "pin=0.25"]) == {"face": 0.8, "pin": 0.25}
    for bad in (["face"], ["nose=0.5"], ["face=abc"], ["face=nan"]):
        with pytest.raises(ConfigError, match="--threshold"):
            parse_threshold_overrides(bad)
    t = PROV.with_overrides({"face": 0.9})
    assert t.values["face"] == 0.9 and t.sources["face"] == "command line"


def test_operating_points_without_a_cross_modal_calibration_still_check_it():
    op = _op(threshold=3.0)
    no_prov = Thresholds({}, {}, provisional=False)
    # faa is not calibrated in the file: left out of the fusion, checked on its PROVISIONAL
    # default (0.5), and a failure says so
    out = decide(ev({"ann": 0.9}, {"ann": 0.8}, {"faa": 0.9}), no_prov, op, 1e-3)
    assert out.granted
    out = decide(ev({"ann": 0.9}, {"ann": 0.8}, {"faa": 0.2}), no_prov, op, 1e-3)
    assert out.granted and "faa 0.20 disagrees (no veto)" in out.reason


def test_a_length_dependent_voice_calibration_is_fixed_to_the_probe_length():
    table = ((0.5, 2.0, -1.0), (2.0, 8.0, -4.0))  # 0.5 s of speech: a weaker LLR per cosine
    voice = Calibration(8.0, -4.0, by_seconds=table)
    assert voice.at(None) is voice and voice.at(2.0).slope == pytest.approx(8.0)
    assert voice.at(0.3).slope == pytest.approx(2.0)  # held at the ends
    assert voice.at(9.0).offset == pytest.approx(-4.0)
    mid = voice.at(1.0)  # halfway in log length between 0.5 s and 2 s
    assert (mid.slope, mid.offset) == (pytest.approx(5.0), pytest.approx(-2.5))
    np.testing.assert_allclose(voice.llr([0.9, 0.9, 0.9], [0.5, 1.0, 2.0]),
                               [0.8, 2.0, 3.2])
    assert voice.llr([0.9])[0] == pytest.approx(3.2)  # no length given: the reference
    op = _op(threshold=3.0)
    op = OperatingPoints(op.model_hashes, op.data_manifest_sha256,
                         Fuser({**op.fuser.calibrations, "voice": voice}, op.fuser.subsets),
                         op.thresholds, provisional=False)
    no_prov = Thresholds({}, {}, provisional=False)
    e = ev({"ann": 0.77}, {"ann": 0.55})  # face LLR 2.7; voice 0.4 at 2 s, 0.25 at 1 s
    assert decide(e, no_prov, op.at({"voice": 2.0}), 1e-3).granted  # fused 3.1 > 3
    out = decide(e, no_prov, op.at({"voice": 1.0}), 1e-3)  # the same cosine from 1 s of speech
    assert not out.granted and out.reason.startswith("not recognised as ann: fused LLR 2.95 <=")
    with pytest.raises(ConfigError, match="increasing seconds"):
        Calibration(1.0, 0.0, by_seconds=((2.0, 1.0, 0.0), (1.0, 1.0, 0.0)))
