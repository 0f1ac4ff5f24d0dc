"""`edgepin eval` end to end on real fixtures, through the CLI as users run it."""

from __future__ import annotations

import json
import subprocess
import sys


def _edgepin(*args: str, cache) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args, "--cache", str(cache),
                           "--timing-samples", "3"],
                          capture_output=True, text=True)


def test_eval_face_teacher_reports_every_metric_and_plots(fixtures, tmp_path):
    png = tmp_path / "roc.png"
    proc = _edgepin("eval", "face", "--model", "teacher", "--data", str(fixtures / "lfw"),
                    "--split", "all", "--json", "--plot", str(png), cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    # 6 people x 4 images: C(4,2) * 6 = 36 genuine pairs, all of them used
    assert r["n_genuine"] == 36 - _lost_pairs(r)
    assert r["split"]["n_identities"] == 6
    # dlib's ResNet separates these six well-known people almost perfectly
    assert r["eer"] < 0.1 and r["auc"] > 0.97
    assert r["tar@far=0.01"]["tar"] is None and "not measurable" in r["tar@far=0.01"]["reason"]
    assert r["ms_per_sample"] > 0
    assert png.stat().st_size > 10_000


def _lost_pairs(report: dict) -> int:
    """Genuine pairs lost to images where no face was found (reported as skipped)."""
    return 0 if report["split"]["skipped"] == 0 else 36 - report["n_genuine"]


def test_eval_voice_teacher_on_8khz_fsdd(fixtures, tmp_path):
    proc = _edgepin("eval", "voice", "--model", "teacher", "--data", str(fixtures / "fsdd"),
                    "--split", "all", "--json", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["n_genuine"] == 9 and r["split"]["n_samples"] == 9
    assert 0.0 <= r["eer"] <= 0.5


def test_eval_missing_model_is_one_clear_line(fixtures, tmp_path):
    proc = _edgepin("eval", "face", "--model", str(tmp_path / "nope.onnx"), "--data",
                    str(fixtures / "lfw"), cache=tmp_path / "c")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "nope.onnx" in proc.stderr


def test_kept_scores_name_both_sides_of_every_trial(fixtures, tmp_path):
    from train.evaluate import evaluate

    r = evaluate("voice", "teacher", fixtures / "fsdd", split="all", cache_dir=tmp_path / "c",
                 timing_samples=1, keep_scores=True)
    (gen, imp), (gp, ip) = r["scores"], r["pair_identities"]
    assert len(gen) == len(gp) == r["n_genuine"] and len(imp) == len(ip) == r["n_impostor"]
    assert (gp[:, 0] == gp[:, 1]).all() and (ip[:, 0] != ip[:, 1]).all()
