"""The onnxruntime CPU backend's precision choice (`--precision auto`, `edgepin info`).

The flags are given explicitly (this machine's /proc/cpuinfo is read only by the last test):
the choice depends on the CPU's int8 dot-product support and on the measured CPU INT8 models
of the folder, each of which is exercised here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.bundle import FORMAT
from edge_runtime.cli import main
from edge_runtime.cli.options import resolve_precision
from edge_runtime.cpu_int8 import choose, int8_dot_features


def _folder(tmp_path: Path, **entries: dict) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    models = {k: {"file": f"{k}.onnx", "sha256": "0" * 64, "meta": meta}
              for k, meta in entries.items()}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "models": models}))
    return tmp_path


CPU_INT8 = {"target": "cpu", "precision": "int8-qdq", "file": "face.int8.onnx"}


def test_no_dot_product_instruction_means_fp32(tmp_path: Path) -> None:
    folder = _folder(tmp_path, face_int8={**CPU_INT8, "latency_ratio": 0.5})
    c = choose(folder, flags={"avx2", "fma", "sse4_2"}, machine="x86_64")
    assert c["precision"] == "fp32" and c["features"] == []
    assert "no VNNI" in c["reason"] and "saturating int16" in c["reason"]


@pytest.mark.parametrize("flags, feature", [({"avx512_vnni", "avx2"}, "avx512_vnni"),
                                            ({"avx_vnni"}, "avx_vnni"),
                                            ({"asimd", "asimddp"}, "asimddp"),
                                            ({"i8mm"}, "i8mm")])
def test_dot_product_features_are_found(flags: set, feature: str) -> None:
    assert int8_dot_features(flags) == [feature]


def test_vnni_uses_int8_only_with_measured_faster_cpu_models(tmp_path: Path) -> None:
    flags = {"avx512_vnni"}
    trt_only = _folder(tmp_path / "a", face_int8={"target": "orin", "precision": "int8-qdq"})
    assert choose(trt_only, flags=flags)["precision"] == "fp32"
    assert "no INT8 model made for onnxruntime" in choose(trt_only, flags=flags)["reason"]
    slow = _folder(tmp_path / "b", face_int8={**CPU_INT8, "latency_ratio": 1.3},
                   voice_int8={**CPU_INT8, "latency_ratio": 0.7})
    c = choose(slow, flags=flags)
    assert c["precision"] == "fp32" and "face_int8 1.30x" in c["reason"]
    unmeasured = _folder(tmp_path / "c", face_int8=CPU_INT8)
    assert choose(unmeasured, flags=flags)["precision"] == "fp32"
    fast = _folder(tmp_path / "d", face_int8={**CPU_INT8, "latency_ratio": 0.6},
                   voice_int8={**CPU_INT8, "latency_ratio": 0.8})
    assert choose(fast, flags=flags)["precision"] == "int8"


def test_auto_resolves_per_backend(tmp_path: Path) -> None:
    folder = _folder(tmp_path, face_int8={"target": "orin"}, voice_int8={"target": "orin"})
    assert resolve_precision("auto", "tensorrt", folder) == "int8"
    assert resolve_precision("fp32", "tensorrt", folder) == "fp32"
    assert resolve_precision("auto", "onnxruntime", folder) == "fp32"  # no CPU INT8 models


def test_info_says_what_it_chose_and_why(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["cpu_int8"]
    assert c["precision"] in ("fp32", "int8") and c["reason"]
