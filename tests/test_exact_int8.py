"""INT8 calibration on a CPU without an int8 dot-product instruction runs the shipped INT8 files
as their exact QDQ arithmetic (what TensorRT computes), not onnxruntime's saturating int16 kernels
(calibration.exact_int8.exact_int8_runners). The CPU's flags are forced here, so both paths run on
any host; the models are the shipped ones, the speech real (speechocean762 fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.frontend.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def _voice_embeddings(bundle, fixtures: Path) -> np.ndarray:
    files = sorted((fixtures / "speechocean762").glob("*/*.flac"))[:6]
    assert files, "speechocean762 fixtures missing"
    return np.stack([bundle.embed_voice(load_audio(f)) for f in files])


@pytest.fixture(scope="module")
def fp32_voice(fixtures: Path) -> np.ndarray:
    from calibration.score_sets import open_bundle

    with open_bundle(MODELS, "fp32", threads=1) as b:
        assert b.exact_int8 == []  # FP32 is never swapped
        return _voice_embeddings(b, fixtures)


def test_without_a_dot_product_instruction_int8_runs_exact_arithmetic(
        monkeypatch: pytest.MonkeyPatch, fixtures: Path, fp32_voice: np.ndarray) -> None:
    import edge_runtime.cpu_int8 as cpu_int8
    from calibration.score_sets import open_bundle

    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: [])
    with open_bundle(MODELS, "int8", threads=1) as b:
        assert b.exact_int8 == ["face_int8", "voice_int8"]
        assert any("exact QDQ arithmetic" in n for n in b.notes)
        assert b.runners["voice"].path.name == "voice.exact_int8.onnx"
        # the load-time warning about the saturating kernels no longer holds for this bundle
        assert not any("--precision auto runs FP32" in n for n in b.notes)
        # the hashes the operating points are keyed by stay those of the shipped INT8 files
        assert b.model_hashes["voice_int8"] == b.entries["voice"].sha256
        got = _voice_embeddings(b, fixtures)
    cos = np.sum(got * fp32_voice, axis=1)
    # the export gate's figure for this arithmetic is p1 0.99 per window (benchmarks/int8.md)
    assert cos.min() > 0.98, cos


def test_the_runtime_asked_for_int8_on_such_a_cpu_says_what_it_costs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_runtime.cpu_int8 as cpu_int8
    from edge_runtime.models import ModelBundle

    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: [])
    with ModelBundle.load(MODELS, precision="int8", threads=1) as b:
        assert b.exact_int8 == []  # the runtime runs what it was asked for, and says so
        assert any("--precision auto runs FP32" in n for n in b.notes)


def test_with_a_dot_product_instruction_int8_runs_onnxruntimes_kernels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_runtime.cpu_int8 as cpu_int8
    from calibration.score_sets import open_bundle

    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: ["avx512_vnni"])
    with open_bundle(MODELS, "int8", threads=1) as b:
        assert b.exact_int8 == []
        assert b.runners["voice"].path.name == "voice.int8.onnx"
        assert not any("--precision auto runs FP32" in n for n in b.notes)


def test_the_students_table_measures_int8_as_the_device_computes_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import onnx

    import edge_runtime.cpu_int8 as cpu_int8
    from benchmarks.students import int8_as_measured

    int8 = MODELS / "voice.int8.onnx"
    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: ["avx512_vnni"])
    assert int8_as_measured(int8, tmp_path) == (str(int8), False)
    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: [])
    path, exact_flag = int8_as_measured(int8, tmp_path)
    exact = Path(path)
    assert exact_flag and exact.parent == tmp_path and exact.name == "voice.exact_int8.onnx"
    graph = onnx.load(str(exact))
    assert not any(n.op_type == "DequantizeLinear" for n in graph.graph.node)
    # the metadata (front-end, split) that evaluate() reads travels with it
    assert {p.key for p in graph.metadata_props} >= {"edgepin.front_end", "edgepin.split"}


def test_the_attack_benchmark_decides_int8_attempts_as_the_operating_points_were_measured(
        monkeypatch: pytest.MonkeyPatch, fixtures: Path, fp32_voice: np.ndarray) -> None:
    """The INT8 thresholds and voice veto come from the exact arithmetic (calibrate,
    calibrate-modes); a run of the attempts through this CPU's saturating kernels judged other
    embeddings against them (the INT8 record of 2026-12-03, not published). The attempts
    themselves are replaced: only which runners they would meet is checked."""
    import benchmarks.attacks as attacks
    import edge_runtime.cpu_int8 as cpu_int8

    seen: dict[str, object] = {}

    def attempts(bundle, *args, **kwargs):
        seen["swapped"] = list(bundle.exact_int8)
        seen["voice"] = _voice_embeddings(bundle, fixtures)
        return {"done": 0}

    monkeypatch.setattr(attacks, "_attempts", attempts)
    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: [])
    assert attacks.run(MODELS, fixtures, 1, "int8", 0, 1) == {"done": 0}
    assert seen["swapped"] == ["face_int8", "voice_int8"]
    cos = np.sum(seen["voice"] * fp32_voice, axis=1)
    assert cos.min() > 0.98, cos
    monkeypatch.setattr(cpu_int8, "int8_dot_features", lambda flags=None: ["avx512_vnni"])
    attacks.run(MODELS, fixtures, 1, "int8", 0, 1)
    assert seen["swapped"] == []  # a CPU with the instruction runs the files themselves
