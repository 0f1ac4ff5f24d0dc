"""A quick, seeded version of benchmarks/fuzz.py (the full run: 240 inputs, benchmarks/fuzz.md):
malformed images, audio, video, gallery, audit and engine files end in a clear refusal or a
denial, never a traceback, and the gallery rows and the audit chain are intact afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

from runtime_models import test_models  # noqa: F401 (pytest fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.fuzz import KINDS, run_fuzz  # noqa: E402


def test_quick_fuzz_run_has_no_traceback_and_loses_nothing(test_models, tmp_path):  # noqa: F811
    report = run_fuzz(seed=7, n=36, models=test_models, work=tmp_path)
    assert report.failures == []
    assert sum(report.by_kind.values()) == 36 and set(report.by_kind) == set(KINDS)
    assert report.outcomes["refused"] >= 18  # most damage is caught and named
    assert report.rows_before == report.rows_after == 4  # ann and bob, face + voice
    assert report.audit_after >= report.audit_before == 2
    assert report.passed
