"""PIN heads and the FAA encoder: shapes, size, ONNX export parity and TensorRT-safe op set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edge_runtime.bundle import load_manifest
from train.pins.export import export_faa, export_heads
from train.pins.models import FAAEncoder, FaaScorer, PinHeads, n_params

# Ops TensorRT 8.5+ parses natively; anything else in these graphs would need a plugin.
TRT_SAFE = {"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Sqrt", "Pow", "ReduceMean",
            "ReduceL2", "ReduceSum", "Relu", "Softmax", "Sigmoid", "Reshape", "Transpose",
            "Concat", "Gather", "Squeeze", "Unsqueeze", "Expand", "Shape", "Slice",
            "Constant", "Clip", "Max", "BatchNormalization", "Flatten", "Identity",
            "ConstantOfShape", "Equal", "Where"}


def _scorer() -> FaaScorer:
    torch.manual_seed(0)
    heads = PinHeads()
    # non-trivial BN statistics, so the export really has to fold them
    heads.train()
    with torch.no_grad():
        for _ in range(3):
            heads(torch.randn(32, 128), torch.randn(32, 256))
    return FaaScorer(heads.eval(), FAAEncoder()).eval()


def test_shapes_and_size() -> None:
    scorer = _scorer()
    f = torch.nn.functional.normalize(torch.randn(5, 128), dim=1)
    v = torch.nn.functional.normalize(torch.randn(5, 256), dim=1)
    fp, vp = scorer.pins(f, v)
    assert fp.shape == (5, 128) and vp.shape == (5, 128)
    assert torch.allclose(fp.norm(dim=1), torch.ones(5), atol=1e-5)
    logits = scorer.logits(f, v)
    assert logits.shape == (5,)
    p = scorer(f, v)
    assert p.shape == (5,) and bool(((p > 0) & (p < 1)).all())
    assert 80_000 <= n_params(scorer.encoder) <= 130_000  # "~100 k parameters"


def test_faa_sees_the_pair_not_each_side_alone() -> None:
    # the same face with two different voices must be able to get different scores
    scorer = _scorer()
    f = torch.nn.functional.normalize(torch.randn(1, 128), dim=1).repeat(2, 1)
    v = torch.nn.functional.normalize(torch.randn(2, 256), dim=1)
    with torch.no_grad():
        p = scorer(f, v)
    assert abs(float(p[0] - p[1])) > 1e-6


def test_onnx_export_parity_ops_and_manifest(tmp_path: Path) -> None:
    scorer = _scorer()
    heads_out = export_heads(scorer.pins, tmp_path, {"note": "test"})
    faa_out = export_faa(scorer, tmp_path, {"note": "test"})
    for r in (*heads_out.values(), faa_out):
        assert r["parity_min_cosine"] >= 0.9999
    for name in ("pin_face.onnx", "pin_voice.onnx", "faa.onnx"):
        model = onnx.load(str(tmp_path / name))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 17
        ops = {n.op_type for n in model.graph.node}
        assert ops <= TRT_SAFE, f"{name}: ops outside the TensorRT-safe set: {ops - TRT_SAFE}"
        assert "LayerNormalization" not in ops
    # the device's view: onnxruntime with a batch size never seen at export, against PyTorch
    sess = ort.InferenceSession(str(tmp_path / "faa.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    f = rng.normal(size=(7, 128)).astype(np.float32)
    v = rng.normal(size=(7, 256)).astype(np.float32)
    got = sess.run(["match_prob"], {"face_emb": f, "voice_emb": v})[0].reshape(-1)
    with torch.no_grad():
        want = scorer(torch.from_numpy(f), torch.from_numpy(v)).numpy()
    cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos >= 0.9999 and np.allclose(got, want, atol=1e-5)
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["edgepin.inputs_space"] == "student" and meta["edgepin.modality"] == "faa"
    entries = load_manifest(tmp_path)
    assert set(entries) == {"pin_face", "pin_voice", "faa"}
    for e in entries.values():
        e.verified_path()
    assert entries["faa"].meta["inputs_space"] == "student"
