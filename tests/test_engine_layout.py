"""The engines the export lays out are the engines the runtime finds (issue 19, item 1 and 7).

No GPU, TensorRT or trtexec here, so the device side is played by stand-ins, each said where
it is used: a fake ``trtexec`` (writes its arguments as the "engine"), a fake ``tensorrt``
module (only ``__version__``), and a fake ``libcuda`` (``sitecustomize`` replacing
``ctypes.CDLL("libcuda.so.1")`` in the build scripts' Python, answering "Orin", sm_87). The
rest is real: ``edgepin export``'s TensorRT stage writes the scripts, the generated
``build_all.<device>.sh`` and ``build_engine.sh`` run in bash, ``python3 -m
edge_runtime.engine_meta`` writes the sidecars, and ``ModelBundle.load(backend="tensorrt")``
selects from what landed on disk. Only the final TensorRT runner is replaced (by a recorder)
since an engine cannot be deserialized without a GPU; tests/test_backends_gpu.py runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="the export stage needs onnx (workstation install)")
pytest.importorskip("torch", reason="the tiny students are exported from torch")

from export_tiny_models import export_face, face_inputs, face_model  # noqa: E402
from runtime_models import build_bundle  # noqa: E402

import edge_runtime.models as models_mod  # noqa: E402
from edge_runtime.bundle import load_manifest, register_model, sha256_file  # noqa: E402
from edge_runtime.engine_meta import read_sidecar  # noqa: E402
from edge_runtime.errors import ConfigError, ModelError  # noqa: E402
from edge_runtime.models import ModelBundle  # noqa: E402
from export.device_build import tensorrt_stage  # noqa: E402
from export.quantize import TARGETS, quantize_qdq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRT = "10.3.0.30"  # JetPack 6.1/6.2
DEVICE = {"gpu_name": "Orin", "compute_capability": "8.7"}

FAKE_LIBCUDA = '''
# Test stand-in for the NVIDIA driver (none on this machine): libcuda answers "Orin", sm_87.
import ctypes
_real = ctypes.CDLL
class _Cuda:
    def cuInit(self, flags): return 0
    def cuDeviceGet(self, ref, index): return 0
    def cuDeviceGetName(self, buf, size, dev):
        buf.value = b"Orin"
        return 0
    def cuDeviceGetAttribute(self, ref, attr, dev):
        ref._obj.value = {75: 8, 76: 7}[attr]
        return 0
def _cdll(name, *args, **kw):
    return _Cuda() if str(name).startswith("libcuda.so") else _real(name, *args, **kw)
ctypes.CDLL = _cdll
'''
FAKE_TRTEXEC = '''#!/usr/bin/env bash
# Test stand-in for trtexec: the "engine" is its own command line; FAIL_MATCH fails one build.
if [ -n "${FAIL_MATCH:-}" ] && [[ "$*" == *"$FAIL_MATCH"* ]]; then echo "fake failure" >&2; exit 1; fi
for a in "$@"; do case "$a" in --saveEngine=*) echo "$*" > "${a#--saveEngine=}";; esac; done
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A models folder with FP32 + INT8 students and heads, and the orin TensorRT stage."""
    root = build_bundle(tmp_path_factory.mktemp("models"), cross=True)
    for modality, seed in (("face", 1), ("voice", 2)):  # tiny QDQ graphs stand for the INT8
        fp32 = export_face(root / f"tiny_{modality}.onnx", model=face_model(seed))
        int8 = quantize_qdq(fp32, face_inputs(64, seed=seed), root / f"{modality}.int8.onnx",
                            target="orin")
        register_model(root, f"{modality}_int8", int8.name, precision="int8")
    students = {m: {"fp32": root / f"{m}.onnx", "int8": root / f"{m}.int8.onnx",
                    "sample_shape": (3, 24, 24)} for m in ("face", "voice")}
    report = tensorrt_stage(TARGETS["orin"], students, root)
    return {"root": root, "report": report, "trt": root / "tensorrt" / "orin"}


def _device_env(tmp: Path, fail: str = "") -> dict[str, str]:
    bindir, moddir = tmp / "bin", tmp / "mod"
    for d in (bindir, moddir):
        d.mkdir(parents=True, exist_ok=True)
    (moddir / "tensorrt.py").write_text(f"__version__ = {TRT!r}  # test stand-in\n")
    (moddir / "sitecustomize.py").write_text(FAKE_LIBCUDA)
    (bindir / "trtexec").write_text(FAKE_TRTEXEC)
    (bindir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for exe in ("trtexec", "python3"):
        (bindir / exe).chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAIL_MATCH": fail,
            "PYTHONPATH": f"{moddir}:{REPO}"}


def _run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_orin_nano_script_has_no_dla_step_and_agx_one_per_model(exported):
    trt = exported["trt"]
    nano = (trt / "build_all.orin-nano.sh").read_text()
    agx = (trt / "build_all.orin-agx.sh").read_text()
    assert "-dla/" not in nano and nano.count("build_engine.sh") == 4  # gpu + fp16, 2 models
    assert agx.count("-dla/build_engine.sh") == 2 and agx.count("build_engine.sh") == 6
    assert "set -e" not in agx.replace("set -euo", "")  # a failure must not stop the rest
    planned = {(p["model"], p["variant"]): p for p in exported["report"]["planned"]}
    # the DLA engine parses the stripped float graph but stands for the manifest's QDQ file
    assert planned["face", "dla"]["onnx"] == str(exported["root"] / "face.int8.onnx")
    assert planned["face", "fp16"]["onnx"] == str(exported["root"] / "face.onnx")


def test_dispatcher_picks_the_board_or_refuses(exported, tmp_path):
    env = _device_env(tmp_path)
    proc = _run(exported["trt"] / "build_all.sh", {**env, "EDGEPIN_DEVICE": "orin-tx2"})
    assert proc.returncode == 2 and "orin-nano orin-nx orin-agx" in proc.stderr


@pytest.fixture(scope="module")
def built(exported, tmp_path_factory) -> dict:
    """build_all.sh orin-agx on the "device", with the voice FP16 build failing."""
    env = _device_env(tmp_path_factory.mktemp("device"), fail="voice.fp16.engine")
    proc = _run(exported["trt"] / "build_all.sh", env, "orin-agx")
    return {**exported, "proc": proc}


def test_one_failed_engine_never_stops_the_others(built):
    proc, trt = built["proc"], built["trt"]
    assert proc.returncode == 1, proc.stderr
    assert "orin-agx: built 5 engine(s)" in proc.stdout and "failed: voice-fp16" in proc.stdout
    made = sorted(p.name for p in trt.glob("*.engine"))
    assert made == ["face.fp16.engine", "face.int8.dla0.engine", "face.int8.engine",
                    "voice.int8.dla0.engine", "voice.int8.engine"]


def test_sidecars_record_the_manifest_onnx_precision_and_dla_core(built):
    root, trt = built["root"], built["trt"]
    man = load_manifest(root)
    want = {"face.int8.engine": (man["face_int8"].sha256, "int8-qdq", None),
            "face.int8.dla0.engine": (man["face_int8"].sha256, "int8-qdq", 0),
            "face.fp16.engine": (man["face"].sha256, "fp16", None)}
    for name, (sha, precision, dla) in want.items():
        key = read_sidecar(trt / name)["key"]
        assert (key.onnx_sha256, key.precision, key.dla_core) == (sha, precision, dla), name
        assert (key.trt_version, key.gpu_name, key.compute_capability) == (TRT, "Orin", "8.7")
    assert sha256_file(root / "face.int8.dla.onnx") != man["face_int8"].sha256


@pytest.fixture
def on_device(monkeypatch):
    """The runtime's view of the fake Orin; the TensorRT runner replaced by a recorder."""
    trt = types.SimpleNamespace(__version__=TRT)  # stand-in: no TensorRT here
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(models_mod, "available_backends", lambda: ["onnxruntime", "tensorrt"])
    monkeypatch.setattr("edge_runtime.engine_meta.probe_cuda_device", lambda index=0: DEVICE)
    loaded: dict[str, tuple] = {}
    real = models_mod.load_runner

    def recorder(path, *, backend, expected_key=None, **kw):
        loaded[Path(path).name] = (backend, expected_key)
        if backend == "onnxruntime":
            return real(path, backend=backend, **kw)
        return types.SimpleNamespace(close=lambda: None, path=Path(path))  # engine: no GPU

    monkeypatch.setattr(models_mod, "load_runner", recorder)
    return trt, loaded


def test_runtime_selects_the_engine_per_model_and_precision(built, on_device):
    root, trt_dir = built["root"], built["trt"]
    _, loaded = on_device
    man = load_manifest(root)
    with ModelBundle.load(root, precision="int8", backend="tensorrt") as bundle:
        assert bundle.engines == {"face": str(trt_dir / "face.int8.engine"),
                                  "voice": str(trt_dir / "voice.int8.engine")}  # GPU, not DLA
        assert bundle.describe()["engines"] == bundle.engines
    backend, key = loaded["face.int8.engine"]
    assert backend == "tensorrt" and key.onnx_sha256 == man["face_int8"].sha256
    assert key.precision == "int8-qdq" and key.trt_version == TRT and key.dla_core is None
    for head in ("pin_face.onnx", "pin_voice.onnx", "faa.onnx"):  # by design: onnxruntime
        assert loaded[head][0] == "onnxruntime"
    assert any("pin_face, pin_voice, faa run on onnxruntime" in n for n in bundle.notes)
    loaded.clear()
    with pytest.raises(ModelError, match="no TensorRT engine for voice "):  # its build failed
        ModelBundle.load(root, precision="fp16", backend="tensorrt", engines=trt_dir)
    assert loaded["face.fp16.engine"][1].onnx_sha256 == man["face"].sha256  # face came first
    assert loaded["face.fp16.engine"][1].precision == "fp16"


def test_runtime_refuses_another_precision_or_machine(built, on_device, monkeypatch):
    root = built["root"]
    trt, _ = on_device
    with pytest.raises(ModelError) as err:  # only an FP16 engine of face.onnx exists
        ModelBundle.load(root, precision="fp32", backend="tensorrt")
    assert "face.fp16.engine (fp16), none is fp32" in str(err.value)
    trt.__version__ = "10.7.0"
    with pytest.raises(ModelError) as err:
        ModelBundle.load(root, precision="int8", backend="tensorrt")
    msg = str(err.value)
    assert "no int8-qdq engine" in msg and "TensorRT: engine built with 10.3.0.30, this " \
        "machine has 10.7.0" in msg and f"--out {root}" in msg
    trt.__version__ = TRT
    monkeypatch.setattr("edge_runtime.engine_meta.probe_cuda_device",
                        lambda index=0: {"gpu_name": "Orin", "compute_capability": "7.2"})
    with pytest.raises(ModelError, match="compute capability: engine has 8.7, expected 7.2"):
        ModelBundle.load(root, precision="int8", backend="tensorrt")
    with pytest.raises(ConfigError, match="precision must be one of"):
        ModelBundle.load(root, precision="fp16", backend="onnxruntime")
    with pytest.raises(ModelError, match="no TensorRT engine for face_int8"):
        ModelBundle.load(root, precision="int8", backend="tensorrt", engines=root / "nothing")


def test_a_dla_engine_is_used_when_it_is_the_only_one(built, on_device, tmp_path):
    """A copy of the layout without the GPU INT8 face engine: the DLA one is chosen."""
    import shutil

    trt_dir = tmp_path / "tensorrt" / "orin"
    shutil.copytree(built["trt"], trt_dir)
    for f in ("face.int8.engine", "face.int8.engine.json"):
        (trt_dir / f).unlink()
    with ModelBundle.load(built["root"], precision="int8", backend="tensorrt",
                          engines=tmp_path / "tensorrt") as bundle:
        assert Path(bundle.engines["face"]).name == "face.int8.dla0.engine"
