"""Engine cache keys and sidecars: stale engines are refused with the reason and the fix."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest

from edge_runtime.engine_meta import (
    EngineKey,
    check_calibration_cache,
    check_engine,
    current_key,
    key_differences,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from edge_runtime.errors import ModelError

PROFILES = {"face": [[1, 3, 112, 112], [4, 3, 112, 112], [8, 3, 112, 112]]}


def _key(**changes):
    base = dict(onnx_sha256="ab" * 32, trt_version="8.5.2.2", gpu_name="Xavier",
                compute_capability="7.2", jetpack="R35 (release), REVISION: 4.1",
                precision="int8-qdq", profiles=PROFILES)
    return EngineKey(**{**base, **changes})


def _engine(tmp_path, key, target="xavier"):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    write_sidecar(engine, key, target=target)
    return engine


def test_digest_is_stable_and_ignores_trt_patch_level():
    assert _key().digest() == _key().digest()
    assert _key().digest() == _key(trt_version="8.5.3.1").digest()
    assert _key().digest() != _key(trt_version="8.6.1").digest()
    assert _key().digest() != _key(precision="fp16").digest()
    assert _key().digest() != _key(onnx_sha256="cd" * 32).digest()
    # profiles given as lists or tuples are the same key
    tuples = {k: tuple(tuple(s) for s in v) for k, v in PROFILES.items()}
    assert _key(profiles=tuples) == _key()


def test_versions_compare_numerically_not_as_strings():
    # "8.5.10" < "8.5.2" as strings; packaging.version knows both are 8.5
    assert key_differences(_key(trt_version="8.5.10"), _key(trt_version="8.5.2")) == []
    assert key_differences(_key(trt_version="10.3.0.26"), _key(trt_version="10.3")) == []
    diffs = key_differences(_key(trt_version="8.10.0"), _key(trt_version="8.9.0"))
    assert diffs == ["TensorRT: engine built with 8.10.0, this machine has 8.9.0"]
    with pytest.raises(ModelError, match="unparseable TensorRT version"):
        _key(trt_version="eight")


def test_sidecar_roundtrip_and_matching_engine_passes(tmp_path):
    engine = _engine(tmp_path, _key())
    assert sidecar_path(engine).name == "model.engine.json"
    meta = read_sidecar(engine)
    assert meta["key"] == _key() and meta["target"] == "xavier"
    assert meta["digest"] == _key().digest()
    check_engine(engine, _key(trt_version="8.5.2.9"))  # same major.minor: accepted


def test_stale_engine_says_what_differs_and_how_to_rebuild(tmp_path):
    engine = _engine(tmp_path, _key(), target="orin")
    current = _key(trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                   onnx_sha256="cd" * 32)
    with pytest.raises(ModelError) as info:
        check_engine(engine, current)
    text = str(info.value)
    assert "TensorRT: engine built with 8.5.2.2, this machine has 10.3.0" in text
    assert "GPU: engine has Xavier, expected Orin" in text
    assert "compute capability: engine has 7.2, expected 8.7" in text
    assert "ONNX model (sha256): engine has abababababab..., expected cdcdcdcdcdcd..." in text
    assert f"edgepin export --target orin --out {tmp_path}" in text


def test_replaced_engine_and_missing_files(tmp_path):
    engine = _engine(tmp_path, _key())
    engine.write_bytes(b"another engine")
    with pytest.raises(ModelError, match="engine file changed since its sidecar"):
        check_engine(engine, _key())
    sidecar_path(engine).unlink()
    with pytest.raises(ModelError, match="has no sidecar"):
        check_engine(engine, _key())
    with pytest.raises(ModelError, match="does not exist; build it with: edgepin export"):
        check_engine(tmp_path / "gone.engine", _key())
    bad = tmp_path / "x.engine"
    bad.write_bytes(b"x")
    sidecar_path(bad).write_text(json.dumps({"format": "edgepin-engine/1", "key": {}}))
    with pytest.raises(ModelError, match="missing fields"):
        read_sidecar(bad)


def test_rebuild_hint_names_the_export_out_of_the_engine_layout(tmp_path):
    """<out>/tensorrt/<target>/face.int8.engine: the hint names <out>, not the engine folder."""
    root = tmp_path / "export" / "tensorrt" / "orin"
    root.mkdir(parents=True)
    engine = root / "face.int8.engine"
    engine.write_bytes(b"engine")
    write_sidecar(engine, _key(), target="orin")
    with pytest.raises(ModelError) as info:
        check_engine(engine, _key(gpu_name="Orin"))
    assert f"Rebuild with: edgepin export --target orin --out {tmp_path / 'export'}" in str(info.value)


def test_dla_core_is_part_of_the_key_and_old_sidecars_read_as_gpu(tmp_path):
    engine = _engine(tmp_path, _key(dla_core=0))
    assert read_sidecar(engine)["key"].dla_core == 0
    assert "DLA core: engine has 0, expected None" in key_differences(_key(dla_core=0), _key())
    data = json.loads(sidecar_path(engine).read_text())
    del data["key"]["dla_core"]  # a sidecar written before the field existed
    sidecar_path(engine).write_text(json.dumps(data))
    assert read_sidecar(engine)["key"].dla_core is None


@pytest.mark.parametrize("header,installed,ok", [
    ("TRT-100300-EntropyCalibration2", "10.3.0.30", True),
    ("TRT-100300-EntropyCalibration2", "10.7.0", False),
    ("TRT-8502-EntropyCalibration2", "8.5.2.2", True),
    ("TRT-8600-EntropyCalibration2", "10.3.0", False),  # what NVIDIA's DLA-SW issue 26 hit
    ("not a cache", "8.5.2", False),
])
def test_calibration_cache_of_another_tensorrt_is_refused(tmp_path, header, installed, ok):
    """TensorRT would skip such a cache silently and calibrate on random data: refuse it."""
    cache = tmp_path / "face.calib"
    cache.write_text(f"{header}\ninput: 3c010204\n")
    if ok:
        check_calibration_cache(cache, installed)
    else:
        with pytest.raises(ModelError, match="calibrate on random data"):
            check_calibration_cache(cache, installed)


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="a CUDA driver exists")
def test_current_key_without_gpu_is_a_clear_error(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(ModelError, match="libcuda"):
        current_key(onnx, precision="fp16", profiles=PROFILES, trt_version="8.5.2")


def test_import_is_light():
    code = ("import sys, edge_runtime.engine_meta; "
            "print(sorted(m for m in ('torch', 'onnx', 'tensorrt', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
