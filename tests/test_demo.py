"""`edgepin demo` on the bundled GRID clips, with fewer people to stay fast.

The test bundle's models are random projections (tests/runtime_models.py): this checks the
demo's mechanics (enrol first halves, replay second halves and mixed attacks through the
loop, audit, table, totals), not its accuracy, which the README reports with the real models.
"""

from __future__ import annotations

import json

import pytest
from runtime_models import test_models  # noqa: F401 (pytest fixture)

from edge_runtime.cli import main
from edge_runtime.cli.demo import print_report, run_demo


@pytest.fixture(scope="module")
def demo(test_models, fixtures):  # noqa: F811
    seen = []
    report = run_demo(test_models, fixtures / "grid", people=2, on_attempt=seen.append,
                      door=fixtures / "no-such-data")  # the door says why it is skipped
    return report, seen


def test_demo_enrols_replays_and_reports(demo):
    report, seen = demo
    assert report.enrolled == ["bbaf2n", "lbax4n"]
    labels = [a.label for a in report.attempts]
    assert labels == ["bbaf2n (second half)", "lbax4n (second half)",
                      "face bbaf2n + voice lbax4n", "face lbax4n + voice bbaf2n",
                      "photo of bbaf2n + recording", "bbaf2n video, audio +0.5 s",
                      "photo of lbax4n + recording", "lbax4n video, audio +0.5 s"]
    assert seen == report.attempts and report.audit_rows == 8
    for a in report.attempts:  # the AV-sync liveness is measured (or says why not) every time
        if a.truth == "photo":
            assert "the mouth does not move" in a.result.liveness
        elif a.truth == "genuine":
            assert a.result.liveness.startswith("AV sync ")
    for a in report.attempts:
        r = a.result
        assert r.reason and r.latencies_ms["decision"] > 0
        assert 0.5 <= r.speech_s < 1.5  # a half clip: 0.5-1 s of voiced speech
        assert r.face_frames >= 1 and r.t >= 1.5  # second halves keep the clip's timeline
        assert a.correct == ((r.granted and r.identity == a.expected) if a.truth == "genuine"
                             else not r.granted)
    t = report.totals()
    assert (t["genuine"], t["mixed"]) == (2, 2)
    assert t["genuine_accepted"] == sum(a.correct for a in report.attempts[:2])
    assert t["mixed_rejected"] == sum(a.correct for a in report.attempts[2:4])
    assert (t["photo"], t["shifted"]) == (2, 2)
    assert t["photo_rejected"] == sum(a.correct for a in report.attempts if a.truth == "photo")
    assert t["decision_ms_p50"] <= t["decision_ms_p95"]
    assert any("0.5 s of voiced speech" in n for n in report.notes)
    assert any("realtime=False" in n for n in report.notes)
    assert any("PROVISIONAL" in n for n in report.notes)
    assert any(n.startswith("artificial door skipped: no ") for n in report.notes)
    assert report.door == [] and report.door_totals()["door-genuine"] == {"correct": 0, "n": 0}


def test_demo_cli_json_and_missing_models(test_models, fixtures, tmp_path, capsys):  # noqa: F811
    assert main(["demo", "--models", str(test_models), "--people", "2", "--mixed", "0",
                 "--clips", str(fixtures / "grid"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["truth"] for a in doc["attempts"]] == ["genuine", "genuine"]
    assert doc["totals"]["genuine"] == 2 and doc["settings"]["realtime"] is False
    assert main(["demo", "--models", str(tmp_path), "--people", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no models at {tmp_path}" in err


def test_demo_table_prints(demo, capsys):
    from rich.console import Console

    report, _ = demo
    print_report(report, Console(width=200, force_terminal=False))
    out = capsys.readouterr().out
    assert "face lbax4n + voice bbaf2n" in out and "genuine accepted:" in out
    t = report.totals()
    assert f"mixed attacks rejected: {t['mixed_rejected']}/2" in out and "p95" in out
