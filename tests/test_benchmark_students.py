"""The students benchmark's target verdict: met / missed and by how much, from one run's rows."""

from __future__ import annotations

import numpy as np

from benchmarks.students import verdict
from benchmarks.voice_door import gap_interval

FACE = "LFW held-out identities"
VOICE = "speechocean762 held-out speakers"


def row(modality, data, model, eer, ms, paired=None):
    r = {"modality": modality, "data": data, "model": model, "eer": eer, "ms_per_sample": ms}
    if paired is not None:
        r["paired_timing"] = {"speedup_median_of_ratios": paired}
    return r


def test_verdict_says_which_target_is_missed_and_by_how_much():
    rows = [row("face", FACE, "teacher", 0.02, 100.0), row("face", FACE, "student FP32", 0.035, 5.0),
            row("voice", VOICE, "teacher", 0.02, 80.0), row("voice", VOICE, "student FP32", 0.025, 8.0)]
    text = verdict(rows)
    assert "face (LFW held-out identities): EER gap +1.50 pt (target <= 1.0 pt): MISSED by 0.50 pt; " \
           "speed-up vs the teacher row 20.0x (target >= 25x): MISSED by 5.0x" in text
    assert "voice (speechocean762 held-out speakers): EER gap +0.50 pt (target <= 1.0 pt): met; " \
           "speed-up vs the teacher row 10.0x (target >= 15x): MISSED by 5.0x" in text


def test_verdict_without_rows_says_not_measured():
    text = verdict([row("face", FACE, "teacher", 0.02, 100.0)])
    assert "- face: not measured in this run" in text and "- voice: not measured in this run" in text


def test_verdict_prefers_the_paired_speedup():
    rows = [row("face", FACE, "teacher", 0.02, 100.0), row("face", FACE, "student FP32", 0.02, 10.0, 30.0)]
    assert "speed-up vs the teacher row 30.0x (target >= 25x): met" in verdict(rows)


def test_face_speedup_is_judged_against_dlibs_own_code_when_timed():
    """The ONNX port is as fast as the student; the promise is against dlib itself."""
    student = row("face", FACE, "student FP32", 0.028, 2.0, 1.0)
    student["paired_timing_dlib"] = {"speedup_median_of_ratios": 27.0}
    student["tar@far=0.01"] = {"tar": 0.93}
    text = verdict([row("face", FACE, "teacher", 0.0174, 2.0), student])
    assert "speed-up vs dlib's own code 27.0x (target >= 25x): met" in text
    student["paired_timing_dlib_plain"] = {"speedup_median_of_ratios": 44.5}
    assert "27.0x (target >= 25x): met (without the flip: 44.5x)" in verdict(
        [row("face", FACE, "teacher", 0.0174, 2.0), student])
    assert "- EER 2.80 % (target <= 3.0 %): met" in text
    assert "- TAR at FAR 1e-2 93.0 % (target >= 90 %): met" in text


def test_issue14_verdict_flags_a_missed_eer():
    student = row("face", FACE, "student FP32", 0.0322, 2.0, 1.0)
    student["tar@far=0.01"] = {"tar": 0.89}
    text = verdict([row("face", FACE, "teacher", 0.0174, 2.0), student])
    assert "- EER 3.22 % (target <= 3.0 %): MISSED" in text
    assert "- TAR at FAR 1e-2 89.0 % (target >= 90 %): MISSED" in text


def test_dlib_timing_line_gives_both_the_shipped_and_the_plain_student():
    from benchmarks.students import dlib_timing

    student = row("face", FACE, "student FP32", 0.028, 2.0, 1.0)
    student["paired_timing_dlib"] = {"samples": 50, "teacher_ms": 56.0, "student_ms": 2.8,
                                     "speedup_median_of_ratios": 20.1}
    student["paired_timing_dlib_plain"] = {"samples": 50, "teacher_ms": 55.0, "student_ms": 1.9,
                                           "speedup_median_of_ratios": 28.9}
    text = dlib_timing([row("face", FACE, "teacher", 0.0174, 2.0), student])
    assert "56.0 ms vs 2.80 ms, speed-up 20.1x" in text
    assert "55.0 ms vs 1.90 ms, 28.9x" in text
    assert dlib_timing([row("face", FACE, "teacher", 0.0174, 2.0)]) == ""


def _trials(rng, people=8, per=6, shift=0.0):
    """Genuine and impostor scores with their speakers: genuine ~ N(1 - shift, 0.3), impostor
    ~ N(0, 0.3), every speaker against every other."""
    ids = np.array([f"s{k}" for k in range(people)])
    gen_pairs = np.repeat(ids, per)[:, None].repeat(2, axis=1)
    imp_pairs = np.array([(a, b) for a in ids for b in ids if a != b])
    gen = rng.normal(1.0 - shift, 0.3, len(gen_pairs))
    imp = rng.normal(0.0, 0.3, len(imp_pairs))
    return (gen, imp), (gen_pairs, imp_pairs)


def test_gap_interval_is_paired_over_speakers():
    rng = np.random.default_rng(0)
    teacher, pairs = _trials(rng)
    assert gap_interval(teacher, teacher, pairs, n_boot=200) == (0.0, 0.0)  # the same model
    worse = (teacher[0] - 0.5, teacher[1])  # every genuine score lower on the same trials
    lo, hi = gap_interval(teacher, worse, pairs, n_boot=200)
    assert 0.0 < lo < hi
    noise = (teacher[0] + rng.normal(0, 0.2, len(teacher[0])), teacher[1])
    lo, hi = gap_interval(teacher, noise, pairs, n_boot=200)
    assert lo < hi and lo < 5.0 and hi > -5.0


FSDD_LABEL = "FSDD, 8 kHz resampled, all 6 speakers (never trained on)"


def test_issue15_lines_judge_whole_utterances_and_fsdd_with_their_intervals():
    from benchmarks.students import verdict

    def voice(data, model, eer, ci=None):
        r = {**row("voice", data, model, eer, 5.0), "n_genuine": 1320, "n_impostor": 3853}
        if ci is not None:
            r["gap_interval"] = ci
        return r

    rows = [voice(VOICE, "teacher", 0.0371), voice(VOICE, "student FP32", 0.0402, (-1.52, 2.59)),
            voice(FSDD_LABEL, "teacher", 0.1944), voice(FSDD_LABEL, "student FP32", 0.1815, (-4.0, 1.0))]
    text = verdict(rows)
    assert ("- whole utterances within 1 pt of the teacher: 4.02 vs 3.71 %, gap +0.31 pt "
            "(-1.52 to +2.59), 1320 / 3853 pairs: met") in text
    assert ("- FSDD 8 kHz, student <= teacher: 18.15 vs 19.44 %, gap -1.29 pt (-4.00 to +1.00), "
            "1320 / 3853 pairs: met") in text
    rows[1]["eer"], rows[3]["eer"] = 0.0501, 0.2017
    text = verdict(rows)
    assert "gap +1.30 pt (-1.52 to +2.59), 1320 / 3853 pairs: MISSED by 0.30 pt" in text
    assert "- FSDD 8 kHz, student <= teacher: 20.17 vs 19.44 %, gap +0.73 pt (-4.00 to +1.00), " \
           "1320 / 3853 pairs: MISSED by 0.73 pt" in text
    equal = [voice(FSDD_LABEL, "teacher", 0.2017), voice(FSDD_LABEL, "student FP32", 0.2017)]
    assert "gap +0.00 pt, 1320 / 3853 pairs: met" in verdict(equal)  # "<= teacher": a tie meets it
    assert "- whole utterances within 1 pt of the teacher: not measured in this run" in verdict(equal)


def test_table_gives_voice_rows_their_interval_and_face_rows_none():
    from benchmarks.students import table

    def full(modality, data, model, eer, ci=None):
        r = {**row(modality, data, model, eer, 5.0), "n_genuine": 10, "n_impostor": 20,
             "auc": 0.99, "split": {"n_identities": 4}, "tar@far=0.01": {"tar": 0.9}}
        if ci is not None:
            r["gap_interval"] = ci
        return r

    text = table([full("face", FACE, "teacher", 0.02), full("face", FACE, "student FP32", 0.03),
                  full("voice", VOICE, "teacher", 0.03), full("voice", VOICE, "student FP32", 0.04, (-0.5, 2.25))])
    lines = text.splitlines()
    assert lines[3].endswith("| +1.00 |")  # face student: no interval
    assert lines[5].endswith("| +1.00 (-0.50 to +2.25) |")


def test_voice_rows_take_the_trials_of_issue_15():
    """The table's voice rows and `benchmarks.voice_door` (issue 15's lines) sample the same
    impostor pairs; the face cap left 20 speakers 399 pairs, 0.25 pt of EER each."""
    from benchmarks.students import IMPOSTORS_PER_IDENTITY
    from benchmarks.voice_door import IMPOSTORS_PER_SPEAKER
    from edge_runtime.metrics import make_pairs

    assert IMPOSTORS_PER_IDENTITY["voice"] == IMPOSTORS_PER_SPEAKER
    ids = [f"spk{k}" for k in range(20) for _ in range(12)]  # the held-out split's shape
    _, face_cap = make_pairs(ids, max_impostor_per_identity=IMPOSTORS_PER_IDENTITY["face"], seed=0)
    _, voice_cap = make_pairs(ids, max_impostor_per_identity=IMPOSTORS_PER_IDENTITY["voice"], seed=0)
    assert len(face_cap) < 400 < 3000 < len(voice_cap)
