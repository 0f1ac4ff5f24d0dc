"""The students benchmark's target verdict: met / missed and by how much, from one run's rows."""

from __future__ import annotations

from benchmarks.students import verdict

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
           "speed-up 20.0x (target >= 25x): MISSED by 5.0x" in text
    assert "voice (speechocean762 held-out speakers): EER gap +0.50 pt (target <= 1.0 pt): met; " \
           "speed-up 10.0x (target >= 15x): MISSED by 5.0x" in text


def test_verdict_without_rows_says_not_measured():
    text = verdict([row("face", FACE, "teacher", 0.02, 100.0)])
    assert "- face: not measured in this run" in text and "- voice: not measured in this run" in text


def test_verdict_prefers_the_paired_speedup():
    rows = [row("face", FACE, "teacher", 0.02, 100.0), row("face", FACE, "student FP32", 0.02, 10.0, 30.0)]
    assert "speed-up 30.0x (target >= 25x): met" in verdict(rows)
