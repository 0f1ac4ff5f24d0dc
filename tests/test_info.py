"""`edgepin info` reports what this machine has and never crashes on what it lacks."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True
    )


def test_info_json_has_every_field():
    proc = _run("info", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("edgepin", "python", "backends", "opencv", "audio", "camera", "teachers", "vad"):
        assert key in report
    assert set(report["backends"]) == {"onnxruntime", "tensorrt", "cuda"}
    assert report["backends"]["onnxruntime"]["available"] is True
    assert "CPUExecutionProvider" in report["backends"]["onnxruntime"]["providers"]
    # Absent things carry a reason instead of crashing the report.
    trt = report["backends"]["tensorrt"]
    assert trt["available"] or trt["reason"]
    audio = report["audio"]
    assert audio["available"] or audio["reason"]
    assert isinstance(report["opencv"]["gstreamer"], bool)
    assert report["teachers"]["face"]["installed"] is True


def test_info_table_renders():
    proc = _run("info")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stdout and "opencv" in proc.stdout


def test_audio_probe_reports_missing_portaudio(monkeypatch):
    from edge_runtime import sysinfo

    real_import = __import__

    def fake_import(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "sounddevice", None)
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.setattr("builtins.__import__", fake_import)
    report = sysinfo.audio_info()
    assert report["available"] is False
    assert "libportaudio2" in report["reason"]
