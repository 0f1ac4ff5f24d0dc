"""TensorRT build plans per version, DLA calibration cache, Q/DQ stripping, trtexec script.

TensorRT cannot run here (no NVIDIA GPU, package not installed). The plans are checked
against the API names documented for each version; the executor is checked against a
recording stand-in of the ``tensorrt`` module (the only mock in this file, because the real
module cannot be imported here); tests/test_tensorrt_gpu.py builds real engines on a GPU.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_tiny_models import export_face, face_inputs
from onnx import numpy_helper

from edge_runtime.errors import ModelError
from export.tensorrt_build import (
    BuildSpec,
    TrtApi,
    strip_qdq,
    trt_version_int,
    write_calibration_cache,
)
from export.trt_script import trtexec_command, write_build_script

PROFILE = {"face": ((1, 3, 24, 24), (4, 3, 24, 24), (8, 3, 24, 24))}
STATIC = {"face": ((1, 3, 24, 24),) * 3}

# Enum members per version, from the TensorRT Python API docs: 8.5 Builder/BuilderConfig
# pages (EXPLICIT_BATCH; set_memory_pool_limit since 8.4, max_workspace_size deprecated),
# 10.x Builder page (EXPLICIT_BATCH deprecated and ignored, STRONGLY_TYPED), and the 10.x->11.x
# migration guide (BuilderFlag.FP16/INT8 and IBuilderConfig.int8_calibrator removed).
# IBuilderConfig.set_calibration_profile: 8.5 and 10.x (deprecated with the calibrators).
DOCUMENTED = {
    "8.5": {"NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH"},
            "BuilderFlag": {"FP16", "INT8", "GPU_FALLBACK"}, "MemoryPoolType": {"WORKSPACE"},
            "DeviceType": {"GPU", "DLA"},
            "config": {"set_memory_pool_limit", "max_workspace_size", "int8_calibrator",
                       "set_calibration_profile", "default_device_type", "DLA_core"}},
    "10": {"NetworkDefinitionCreationFlag": {"STRONGLY_TYPED"},
           "BuilderFlag": {"FP16", "INT8", "GPU_FALLBACK"}, "MemoryPoolType": {"WORKSPACE"},
           "DeviceType": {"GPU", "DLA"},
           "config": {"set_memory_pool_limit", "int8_calibrator", "set_calibration_profile",
                      "default_device_type", "DLA_core"}},
    "11": {"NetworkDefinitionCreationFlag": set(), "BuilderFlag": {"GPU_FALLBACK"},
           "MemoryPoolType": {"WORKSPACE"}, "DeviceType": {"GPU"},
           "config": {"set_memory_pool_limit"}},
}
COMMON = {"create_network", "parse_onnx", "add_optimization_profile", "timing_cache",
          "build_serialized_network", "save_timing_cache", "set_flag"}


def _names_used(steps):
    used = {"NetworkDefinitionCreationFlag": set(), "BuilderFlag": set(), "MemoryPoolType": set(),
            "DeviceType": set(), "config": set()}
    for step in steps:
        kind = step[0]
        if kind == "create_network":
            used["NetworkDefinitionCreationFlag"] |= set(step[1])
        elif kind == "set_flag":
            used["BuilderFlag"].add(step[1])
        elif kind == "set_memory_pool_limit":
            used["MemoryPoolType"].add(step[1])
            used["config"].add(kind)
        elif kind == "default_device_type":
            used["DeviceType"].add(step[1])
            used["config"].add(kind)
        elif kind not in COMMON:
            used["config"].add(kind)
    return used


def _spec(**kw):
    base = dict(onnx=Path("face.int8.onnx"), precision="int8-qdq", profiles=PROFILE,
                workspace_mb=256, timing_cache=Path("cache/face.timing"))
    return BuildSpec(**{**base, **kw})


def test_plan_trt85_int8_qdq():
    steps = TrtApi("8.5.2.2").plan(_spec())
    assert steps == [
        ("create_network", ("EXPLICIT_BATCH",)),
        ("parse_onnx", "face.int8.onnx"),
        ("set_memory_pool_limit", "WORKSPACE", 256 << 20),
        ("set_flag", "INT8"),
        ("set_flag", "FP16"),
        ("add_optimization_profile", PROFILE),
        ("timing_cache", "cache/face.timing"),
        ("build_serialized_network",),
        ("save_timing_cache", "cache/face.timing"),
    ]


def test_plan_trt10_strongly_typed_and_weak_fp16():
    steps = TrtApi("10.3.0").plan(_spec())
    assert steps[0] == ("create_network", ("STRONGLY_TYPED",))
    assert not [s for s in steps if s[0] == "set_flag"]  # precision comes from the Q/DQ types
    weak = TrtApi("10.3.0").plan(_spec(precision="fp16", timing_cache=None))
    assert weak[0] == ("create_network", ())
    assert ("set_flag", "FP16") in weak and ("set_flag", "INT8") not in weak
    with pytest.raises(ModelError, match="ModelOpt AutoCast"):
        TrtApi("10.3.0").plan(_spec(precision="fp16", strongly_typed=True))


def test_plan_trt11_has_no_weak_typing():
    steps = TrtApi("11.0.0").plan(_spec())
    assert steps[0] == ("create_network", ())
    assert not [s for s in steps if s[0] == "set_flag"]
    with pytest.raises(ModelError, match="AutoCast"):
        TrtApi("11.0").plan(_spec(precision="fp16"))
    with pytest.raises(ModelError, match="removed weak typing"):
        TrtApi("11.0").plan(_spec(strongly_typed=False))
    with pytest.raises(ModelError, match="DLA is not supported by TensorRT 11"):
        TrtApi("11.0").plan(_spec(dla_core=0, profiles=STATIC, calibration_cache=Path("c")))


def test_plan_trt82_nano_uses_max_workspace_size():
    steps = TrtApi("8.2.1").plan(_spec(precision="fp16"))
    assert ("max_workspace_size", 256 << 20) in steps
    assert TrtApi("8.2.1").runtime_calls() == ("set_binding_shape", "execute_async_v2")
    assert TrtApi("10.3").runtime_calls()[-1] == "execute_async_v3"


@pytest.mark.parametrize("version, docs", [("8.5.2", "8.5"), ("10.3.0", "10"), ("11.1", "11")])
def test_plans_only_use_documented_names(version, docs):
    api = TrtApi(version)
    specs = [_spec(), _spec(precision="fp32")]
    if docs != "11":
        specs += [_spec(precision="fp16", strongly_typed=None if docs == "8.5" else False),
                  _spec(dla_core=1, profiles=STATIC, calibration_cache=Path("c.cache")),
                  _spec(dla_core=0, precision="fp16", profiles=STATIC)]
    for spec in specs:
        for group, names in _names_used(api.plan(spec)).items():
            assert names <= DOCUMENTED[docs][group], (spec, group, names)


def test_plan_dla_steps_and_restrictions():
    steps = TrtApi("8.5.2").plan(_spec(dla_core=1, profiles=STATIC,
                                       calibration_cache=Path("face.calib"), timing_cache=None))
    assert steps[3:9] == [("set_flag", "INT8"), ("set_flag", "FP16"),
                          ("default_device_type", "DLA"), ("DLA_core", 1),
                          ("set_flag", "GPU_FALLBACK"), ("int8_calibrator", "face.calib")]
    # implicit INT8 of a network with a dynamic (batch) axis needs a calibration profile
    profile = {"face": STATIC["face"]}
    assert steps[9:11] == [("add_optimization_profile", profile),
                           ("set_calibration_profile", profile)]
    gpu = TrtApi("10.3.0").plan(_spec())  # explicit (QDQ) INT8: no calibrator, no profile
    assert not any(s[0] in ("int8_calibrator", "set_calibration_profile") for s in gpu)
    with pytest.raises(ModelError, match="static shapes"):
        TrtApi("8.5.2").plan(_spec(dla_core=0, calibration_cache=Path("c")))
    with pytest.raises(ModelError, match="calibration_cache"):
        TrtApi("8.5.2").plan(_spec(dla_core=0, profiles=STATIC))
    with pytest.raises(ModelError, match="FP16 or INT8 only"):
        TrtApi("8.5.2").plan(_spec(dla_core=0, profiles=STATIC, precision="fp32"))


def test_plan_rejects_bad_specs():
    with pytest.raises(ModelError, match="no strongly typed"):
        TrtApi("8.5.2").plan(_spec(strongly_typed=True))
    with pytest.raises(ModelError, match="min <= opt <= max"):
        TrtApi("8.5.2").plan(_spec(profiles={"face": ((8, 3, 24, 24), (1, 3, 24, 24),
                                                      (8, 3, 24, 24))}))
    with pytest.raises(ModelError, match="precision"):
        TrtApi("8.5.2").plan(_spec(precision="int4"))
    with pytest.raises(ModelError, match="not supported"):
        TrtApi("7.1.3")


# ---------------------------------------------------------------- DLA: cache + stripped graph


@pytest.fixture(scope="module")
def qdq_face(tmp_path_factory):
    from export.quantize import quantize_qdq

    d = tmp_path_factory.mktemp("trt")
    fp32 = export_face(d / "face.onnx")
    return fp32, quantize_qdq(fp32, face_inputs(128), d / "face.int8.onnx", target="xavier")


def test_version_int():
    assert trt_version_int("8.5.2.2") == 8502
    assert trt_version_int("8.2.1") == 8201
    assert trt_version_int("10.3.0") == 100300


def test_calibration_cache_format(qdq_face, tmp_path):
    fp32, qdq = qdq_face
    cache = write_calibration_cache(qdq, tmp_path / "face.calib", trt_version="8.5.2.2")
    lines = cache.read_text().splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    graph = onnx.load(str(qdq)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    expected = {n.input[0]: float(consts[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in consts}
    entries = {}
    for line in lines[1:]:
        name, hexval = line.rsplit(": ", 1)
        assert len(hexval) == 8 and int(hexval, 16) >= 0
        entries[name] = struct.unpack(">f", bytes.fromhex(hexval))[0]
    assert entries.keys() == expected.keys() and "face" in entries
    for name, scale in expected.items():
        assert entries[name] == pytest.approx(scale, rel=1e-7)
    ten = write_calibration_cache(qdq, tmp_path / "c10", trt_version="10.3.0").read_text()
    assert ten.startswith("TRT-100300-EntropyCalibration2\n")
    with pytest.raises(ModelError, match="no implicit INT8"):
        write_calibration_cache(qdq, tmp_path / "c11", trt_version="11.0")
    with pytest.raises(ModelError, match="not a QDQ graph"):
        write_calibration_cache(fp32, tmp_path / "c", trt_version="8.5.2")


def test_stripped_graph_is_float_and_names_match_the_cache(qdq_face, tmp_path):
    fp32, qdq = qdq_face
    stripped = strip_qdq(qdq, tmp_path / "face.dla.onnx")
    graph = onnx.load(str(stripped)).graph
    assert not [n for n in graph.node if "Quantize" in n.op_type]
    tensors = {i.name for i in graph.input} | {o for n in graph.node for o in n.output}
    cache = write_calibration_cache(qdq, tmp_path / "c", trt_version="8.5.2")
    names = [ln.rsplit(": ", 1)[0] for ln in cache.read_text().splitlines()[1:]]
    assert names and set(names) <= tensors  # every scale names a tensor TensorRT will see
    x = face_inputs(6, seed=11)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(str(stripped), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)  # weights stayed float: same function


# ---------------------------------------------------------------- executor (recording stand-in)


def _fake_trt(version="8.5.2.2", parse_ok=True, build_ok=True):
    """Recording stand-in for the tensorrt module (the real one cannot be imported here)."""
    calls = []
    enum = lambda *names: types.SimpleNamespace(**{n: i for i, n in enumerate(names)})  # noqa: E731

    class Obj:
        def __init__(self, label):
            self.label = label

        def __getattr__(self, name):
            return lambda *a, **k: (calls.append((self.label, name, a)), rv(self.label, name, a))[1]

        def __setattr__(self, name, value):
            if name == "label":
                object.__setattr__(self, name, value)
            else:
                calls.append((self.label, f"{name}=", (value,)))

    def rv(label, name, args):
        if name == "create_network":
            net = Obj("network")
            object.__setattr__(net, "num_inputs", 1)
            object.__setattr__(net, "get_input", lambda i: types.SimpleNamespace(name="face"))
            return net
        if name == "create_builder_config":
            return Obj("config")
        if name == "create_optimization_profile":
            return Obj("profile")
        if name == "build_serialized_network":
            return b"ENGINE" if build_ok else None
        if name == "get_timing_cache":
            return types.SimpleNamespace(serialize=lambda: b"TIMING")
        return None

    class OnnxParser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, network, logger):
            pass

        def parse(self, data, path):
            calls.append(("parser", "parse", (path,)))
            return parse_ok

        def get_error(self, i):
            return f"In node {i}: unsupported operator"

    trt = types.SimpleNamespace(
        __version__=version, OnnxParser=OnnxParser,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, sev: None}),
        Builder=lambda logger: Obj("builder"),
        NetworkDefinitionCreationFlag=enum("EXPLICIT_BATCH", "STRONGLY_TYPED"),
        BuilderFlag=enum("FP16", "INT8", "DEBUG", "GPU_FALLBACK"),
        MemoryPoolType=enum("WORKSPACE"), DeviceType=enum("GPU", "DLA"),
    )
    return trt, calls


def test_executor_maps_plan_onto_api_calls(qdq_face, tmp_path):
    _, qdq = qdq_face
    timing = tmp_path / "t.cache"
    spec = _spec(onnx=qdq, timing_cache=timing)
    trt, calls = _fake_trt()
    assert TrtApi("8.5.2").build(spec, trt=trt) == b"ENGINE"
    made = [(c[0], c[1], c[2]) for c in calls]
    assert ("builder", "create_network", (1 << 0,)) in made
    assert ("config", "set_memory_pool_limit", (0, 256 << 20)) in made
    assert ("config", "set_flag", (1,)) in made and ("config", "set_flag", (0,)) in made
    assert ("profile", "set_shape", ("face", *PROFILE["face"])) in made
    assert ("config", "create_timing_cache", (b"",)) in made
    assert timing.read_bytes() == b"TIMING"
    trt, calls = _fake_trt()
    TrtApi("8.5.2").build(spec, trt=trt)  # second build loads the saved timing cache
    assert ("config", "create_timing_cache", (b"TIMING",)) in [(c[0], c[1], c[2]) for c in calls]


def test_executor_reports_every_parser_error_and_build_failure(qdq_face):
    _, qdq = qdq_face
    trt, _ = _fake_trt(parse_ok=False)
    with pytest.raises(ModelError, match=r"could not parse .*\(2 error\(s\)\): In node 0: "
                                         r"unsupported operator; In node 1"):
        TrtApi("8.5.2").build(_spec(onnx=qdq, timing_cache=None), trt=trt)
    trt, _ = _fake_trt(build_ok=False)
    with pytest.raises(ModelError, match="failed to build an engine"):
        TrtApi("8.5.2").build(_spec(onnx=qdq, timing_cache=None), trt=trt)
    trt, _ = _fake_trt(version="10.3.0")
    with pytest.raises(ModelError, match="plan is for TensorRT 8.5.2, installed is 10.3.0"):
        TrtApi("8.5.2").build(_spec(onnx=qdq), trt=trt)


def test_python_dla_build_sets_the_calibration_profile_and_checks_the_cache(qdq_face, tmp_path):
    """Recorded fake tensorrt (no TensorRT here): the profile given to add_optimization_profile
    is also the calibration profile; a cache of another TensorRT is refused before any call."""
    _, qdq = qdq_face
    stripped = strip_qdq(qdq, tmp_path / "face.dla.onnx")
    cache = write_calibration_cache(qdq, tmp_path / "face.calib", trt_version="10.3.0")
    spec = _spec(onnx=stripped, dla_core=0, profiles=STATIC, calibration_cache=cache,
                 timing_cache=None, source_onnx=qdq)
    trt, calls = _fake_trt(version="10.3.0.30")
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda s: None})
    assert TrtApi("10.3.0").build(spec, trt=trt) == b"ENGINE"
    made = [(c[0], c[1]) for c in calls]
    assert ("config", "int8_calibrator=") in made
    add, cal = made.index(("config", "add_optimization_profile")), made.index(
        ("config", "set_calibration_profile"))
    assert cal > add and calls[cal][2][0] is calls[add][2][0]  # the same profile object
    assert spec.source == qdq  # the sidecar names the QDQ file, not the stripped graph
    trt, calls = _fake_trt(version="10.7.0")
    with pytest.raises(ModelError, match="calibrate on random data"):
        TrtApi("10.7.0").build(spec, trt=trt)
    assert not any(c[1] == "build_serialized_network" for c in calls)


# ---------------------------------------------------------------- trtexec / device script


def test_trtexec_commands():
    cmd = trtexec_command(_spec(engine=Path("out/face.engine")), trt_version="8.5.2")
    for part in ["--onnx=face.int8.onnx", "--saveEngine=out/face.engine", "--int8", "--fp16",
                 "--minShapes=face:1x3x24x24", "--optShapes=face:4x3x24x24",
                 "--maxShapes=face:8x3x24x24", "--memPoolSize=workspace:256",
                 "--timingCacheFile=cache/face.timing"]:
        assert part in cmd.split(), part
    assert "--stronglyTyped" not in cmd
    ten = trtexec_command(_spec(), trt_version="10.3.0").split()
    assert "--stronglyTyped" in ten and "--int8" not in ten
    dla = trtexec_command(_spec(dla_core=1, profiles=STATIC, calibration_cache=Path("f.calib")),
                          trt_version="8.5.2").split()
    assert {"--useDLACore=1", "--allowGPUFallback", "--calib=f.calib", "--int8"} <= set(dla)
    assert "--workspace=256" in trtexec_command(_spec(precision="fp16"), trt_version="8.2.1")


def _run_script(script, tmp_path, fake_version):
    """Run the generated script with stand-ins for trtexec and the tensorrt module."""
    bindir, moddir = tmp_path / "bin", tmp_path / "mod"
    bindir.mkdir(exist_ok=True)
    moddir.mkdir(exist_ok=True)
    (moddir / "tensorrt.py").write_text(f"__version__ = {fake_version!r}\n")
    trtexec = bindir / "trtexec"
    trtexec.write_text('#!/usr/bin/env bash\necho "$@" > "$(dirname "$0")/args"\n'
                       'for a in "$@"; do case "$a" in --saveEngine=*) '
                       'echo engine > "${a#--saveEngine=}";; esac; done\n')
    trtexec.chmod(0o755)
    python3 = bindir / "python3"
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
           "PYTHONPATH": f"{moddir}:{Path(__file__).resolve().parents[1]}"}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    return proc, bindir / "args"


def test_build_script_runs_on_any_supported_tensorrt_then_writes_sidecar(qdq_face, tmp_path):
    """A script planned for 8.5 picks the flags of the TensorRT it finds (10.x, 11.x too)."""
    _, qdq = qdq_face
    engine = tmp_path / "face.engine"
    spec = _spec(onnx=qdq, engine=engine, timing_cache=None)
    script = write_build_script(spec, tmp_path, trt_version="8.5.2", target="xavier",
                                export_out=Path("exp"))
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc, args = _run_script(script, tmp_path, "9.2.0")
    assert proc.returncode == 2 and "TensorRT 9.2.0 is not supported" in proc.stderr
    assert "edgepin export --target xavier --out exp" in proc.stderr  # the export's --out
    assert not args.exists()  # trtexec never ran
    # 8.x: weak typing (INT8 + FP16 flags); 10.x: --stronglyTyped; 11.x: typed, no flag at all
    for found, typed, int8 in (("8.5.2.2", False, True), ("10.7.0", True, False),
                               ("11.1.0", False, False)):
        proc, args = _run_script(script, tmp_path, found)
        flags = args.read_text().split()
        assert f"--saveEngine={engine}" in flags and engine.is_file()
        assert ("--stronglyTyped" in flags) == typed and ("--int8" in flags) == int8, found
        # the sidecar step runs after trtexec; without a GPU here it must fail loudly, not pass
        assert proc.returncode == 2 and "libcuda" in proc.stderr
        args.unlink()


def test_build_script_skips_an_engine_the_tensorrt_cannot_have(tmp_path):
    """Weak-typed FP16 does not exist on 11.x: exit 3 (skipped), trtexec never runs."""
    spec = _spec(precision="fp16", strongly_typed=False, engine=tmp_path / "f.engine")
    script = write_build_script(spec, tmp_path, trt_version="10.3.0", target="orin")
    proc, args = _run_script(script, tmp_path, "11.1.0")
    assert proc.returncode == 3 and "removed weak typing" in proc.stderr and not args.exists()


def test_dla_build_script_refuses_a_calibration_cache_of_another_tensorrt(qdq_face, tmp_path):
    _, qdq = qdq_face
    cache = write_calibration_cache(qdq, tmp_path / "face.calib", trt_version="10.3.0")
    spec = _spec(onnx=qdq, dla_core=0, profiles=STATIC, calibration_cache=cache,
                 engine=tmp_path / "dla.engine", timing_cache=None)
    script = write_build_script(spec, tmp_path, trt_version="10.3.0", target="orin")
    proc, args = _run_script(script, tmp_path, "10.7.0")
    assert proc.returncode == 2 and "calibrate on random data" in proc.stderr
    assert not args.exists()  # never reaches trtexec
    proc, args = _run_script(script, tmp_path, "10.3.0.30")
    assert "--calib=" + str(cache) in args.read_text().split() and "libcuda" in proc.stderr


def test_strip_qdq_dequantizes_int8_weight_initializers(qdq_face, tmp_path):
    from export.quantize import quantize_qdq

    fp32, _ = qdq_face
    cpu = quantize_qdq(fp32, face_inputs(64), tmp_path / "cpu.onnx", target="cpu")
    stripped = strip_qdq(cpu, tmp_path / "cpu.float.onnx")
    graph = onnx.load(str(stripped)).graph
    weights = [i for i in graph.initializer if i.name.endswith("DequantizeLinear_Output")]
    assert len(weights) == 4  # 3 Conv + 1 Gemm weights, now float
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in weights)
    x = face_inputs(6, seed=12)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(str(stripped), providers=["CPUExecutionProvider"]).run(None, x)[0]
    cos = np.sum(ref * got, axis=1)  # both L2-normalised
    assert 0.99 < cos.min() and not np.allclose(got, ref, atol=1e-6)  # int8-rounded weights
