"""Which Jetsons get TensorRT, with which cuda-python (issue 19, items 2, 3 and 6).

Checks the packaging and the export's decisions, not a device: the on-device procedure is
docs/jetson.md (tests/test_backends_gpu.py there).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _extra(name: str) -> dict[str, Requirement]:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return {r.name: r for r in map(Requirement, extras[name])}


@pytest.mark.parametrize("extra", ["jetpack6", "tensorrt"])
def test_cuda_python_is_one_that_jetpack6_runs(extra):
    """JetPack 6.1/6.2 ship CUDA 12.6: cuda-python 13.x (and 12.8+ runtimes) need a newer
    driver; the 12.6 line has cp310 aarch64 wheels (12.6.2.post1)."""
    spec = _extra(extra)["cuda-python"].specifier
    assert spec.contains("12.6.2.post1") and spec.contains("12.6.0")
    for too_new in ("12.8.0", "12.9.10", "13.0.0", "13.4.4"):
        assert not spec.contains(too_new), too_new


def test_no_extra_installs_tensorrt_on_a_jetson():
    """JetPack's TensorRT comes from apt; the pip wheels are not built for Jetson."""
    assert "tensorrt" not in _extra("jetpack6")
    assert Version("10.3.0") in _extra("tensorrt")["tensorrt"].specifier


@pytest.mark.parametrize("target", ["nano", "xavier"])
def test_jetpack4_and_5_get_no_tensorrt_stage(target, tmp_path):
    """Their TensorRT bindings are for Python 3.6/3.8, edgepin needs 3.10: dropped plainly."""
    pytest.importorskip("onnx", reason="export stack")
    from export.device_build import tensorrt_stage
    from export.quantize import TARGETS

    report = tensorrt_stage(TARGETS[target], {"face": {}}, tmp_path)
    assert report["available"] is None and "Python >= 3.10" in report["note"]
    assert "onnxruntime" in report["note"] and not (tmp_path / "tensorrt").exists()
