"""A small model bundle for the runtime tests, built in seconds with onnx.helper.

The real students are trained elsewhere and may not be in a fresh checkout, so the loop,
enrolment, demo and bench tests run on these real ONNX files with the deployed interfaces
(inputs/outputs, shapes, manifest entries, metadata). Their weights are fixed random
projections (face: pooled pixels; voice: per-band spread of the log-mel windows), enough to
tell the 7 bundled GRID people apart; they are never used for an accuracy claim.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import register_model
from edge_runtime.frontend.features import VoiceFrontEnd

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17


def _normalise(nodes: list, x: str, out: str) -> None:
    nodes += [
        helper.make_node("Mul", [x, x], [f"{x}_sq"]),
        helper.make_node("ReduceSum", [f"{x}_sq", "axes1"], [f"{x}_ss"], keepdims=1),
        helper.make_node("Sqrt", [f"{x}_ss"], [f"{x}_n"]),
        helper.make_node("Max", [f"{x}_n", "eps"], [f"{x}_nc"]),
        helper.make_node("Div", [x, f"{x}_nc"], [out]),
    ]


def _save(nodes, inputs, outputs, inits, path: Path, meta: dict[str, str]) -> Path:
    used = {i for n in nodes for i in n.input}
    extra = [numpy_helper.from_array(np.array([1], np.int64), "axes1"),
             numpy_helper.from_array(np.array(1e-12, np.float32), "eps")]
    inits = inits + [t for t in extra if t.name in used]
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by the onnxruntime of JetPack 5 as well
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = f"edgepin.{k}", v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _t(name: str, shape: list) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def face_model(path: Path, seed: int = 1) -> Path:
    w = np.random.default_rng(seed).standard_normal((588, 128)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["face"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["mu"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "mu"], ["centred"]),
        helper.make_node("MatMul", ["centred", "w"], ["proj"]),
    ]
    _normalise(nodes, "proj", "embedding")
    return _save(nodes, [_t("face", ["N", 3, 112, 112])], [_t("embedding", ["N", 128])],
                 [numpy_helper.from_array(w, "w")], path,
                 {"modality": "face", "precision": "fp32", "front_end": '{"face_size": 112}'})


def voice_model(path: Path, seed: int = 2) -> Path:
    w = np.random.default_rng(seed).standard_normal((64, 256)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["feats", "feats"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("ReduceMean", ["std"], ["smu"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["std", "smu"], ["shape"]),
        helper.make_node("MatMul", ["shape", "w"], ["proj"]),
    ]
    _normalise(nodes, "proj", "embedding")
    front = json.dumps(VoiceFrontEnd().to_dict(), sort_keys=True)
    return _save(nodes, [_t("feats", ["N", 200, 64])], [_t("embedding", ["N", 256])],
                 [numpy_helper.from_array(w, "w")], path,
                 {"modality": "voice", "precision": "fp32", "front_end": front})


def pin_model(path: Path, inp: str, dim: int, seed: int) -> Path:
    w = np.random.default_rng(seed).standard_normal((dim, 128)).astype(np.float32)
    nodes = [helper.make_node("MatMul", [inp, "w"], ["proj"])]
    _normalise(nodes, "proj", "pin")
    return _save(nodes, [_t(inp, ["N", dim])], [_t("pin", ["N", 128])],
                 [numpy_helper.from_array(w, "w")], path, {"modality": inp})


def faa_model(path: Path, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((128, 32)).astype(np.float32)
    b = rng.standard_normal((256, 32)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["face_emb", "a"], ["fa"]),
        helper.make_node("MatMul", ["voice_emb", "b"], ["vb"]),
        helper.make_node("Mul", ["fa", "vb"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axes1"], ["logit"], keepdims=0),
        helper.make_node("Sigmoid", ["logit"], ["match_prob"]),
    ]
    return _save(nodes, [_t("face_emb", ["N", 128]), _t("voice_emb", ["N", 256])],
                 [_t("match_prob", ["N"])],
                 [numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b")], path,
                 {"modality": "faa"})


def build_bundle(root: Path, *, cross: bool = False) -> Path:
    """face + voice (+ pin_face, pin_voice, faa) registered in root/manifest.json."""
    root.mkdir(parents=True, exist_ok=True)
    face_model(root / "face.onnx")
    voice_model(root / "voice.onnx")
    register_model(root, "face", "face.onnx", dim=128, precision="fp32", note="test bundle")
    register_model(root, "voice", "voice.onnx", dim=256, precision="fp32", note="test bundle")
    if cross:
        pin_model(root / "pin_face.onnx", "face_emb", 128, 3)
        pin_model(root / "pin_voice.onnx", "voice_emb", 256, 4)
        faa_model(root / "faa.onnx")
        register_model(root, "pin_face", "pin_face.onnx")
        register_model(root, "pin_voice", "pin_voice.onnx")
        register_model(root, "faa", "faa.onnx", inputs_space="student")
    return root


# ------------------------------------------------------------------- shared test fixtures
@pytest.fixture(scope="session")
def test_models(tmp_path_factory) -> Path:
    """face + voice only: the cross-modal heads are absent (their fallback is tested)."""
    return build_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def cross_models(tmp_path_factory) -> Path:
    """face + voice + pin_face + pin_voice + faa."""
    return build_bundle(tmp_path_factory.mktemp("models_cross"), cross=True)


@pytest.fixture(scope="session")
def detector():
    from edge_runtime.frontend.face import DlibHogDetector

    return DlibHogDetector()


@pytest.fixture(scope="session")
def gate():
    from edge_runtime.frontend.vad import SpeechGate

    return SpeechGate("auto")
