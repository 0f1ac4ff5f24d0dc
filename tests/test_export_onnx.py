"""ONNX export (eval mode, checked, shape-inferred), PyTorch parity, deployment contract."""

from __future__ import annotations

import onnx
import pytest
import torch
from export_tiny_models import (
    export_faa,
    export_face,
    faa_inputs,
    faa_model,
    face_inputs,
    face_model,
)
from onnx import TensorProto, helper

from edge_runtime.errors import ModelError
from export.contract import (
    DeploymentContract,
    TensorSpec,
    check_contract,
    contract_violations,
    student_contract,
)
from export.onnx_export import export_onnx, parity


@pytest.fixture(scope="module")
def face_onnx(tmp_path_factory):
    return export_face(tmp_path_factory.mktemp("onnx") / "face.onnx")


def test_face_export_is_checked_inferred_and_matches_torch(face_onnx):
    model = onnx.load(str(face_onnx))
    assert [i.name for i in model.graph.input] == ["face"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "N"  # dynamic batch survived
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into Conv in eval mode
    assert "Dropout" not in ops
    assert len(model.graph.value_info) > 0  # shape inference ran and was saved
    cos = parity(face_model(), face_onnx, face_inputs(7, seed=3))  # batch 7 != export batch 2
    assert cos > 0.99999


def test_faa_export_two_inputs(tmp_path):
    path = export_faa(tmp_path / "faa.onnx")
    assert parity(faa_model(), path, faa_inputs(5, seed=4)) > 0.99999
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"Softmax",
                                                                    "LayerNormalization"}


def test_parity_detects_a_different_model(face_onnx):
    other = face_model(seed=1)  # same architecture, other weights
    assert parity(other, face_onnx, face_inputs(4)) < 0.99


def test_export_restores_training_mode_and_rejects_bad_names(tmp_path):
    model = face_model().train()
    export_face(tmp_path / "a.onnx", model=model)
    assert model.training
    with pytest.raises(ModelError, match="do not match input_names"):
        export_onnx(model, {"img": torch.zeros(1, 3, 24, 24)}, tmp_path / "b.onnx",
                    input_names=["face"], output_names=["embedding"], dynamic_axes=None,
                    opset=17)


def test_unused_input_is_reported(tmp_path):
    class IgnoresVoice(torch.nn.Module):
        def forward(self, face_emb, voice_emb):
            return face_emb * 2

    with pytest.raises(ModelError, match="unused input is dropped"):
        export_onnx(IgnoresVoice(), {"face_emb": torch.zeros(1, 4), "voice_emb": torch.zeros(1, 4)},
                    tmp_path / "c.onnx", input_names=["face_emb", "voice_emb"],
                    output_names=["match_prob"], dynamic_axes=None, opset=17)


def test_student_contract_accepts_the_export(face_onnx):
    contract = student_contract("face", max_opset=17, max_size_bytes=10_000_000)
    check_contract(face_onnx, contract)  # raises on any violation
    with pytest.raises(ModelError, match="opset 17 > max 13"):
        check_contract(face_onnx, student_contract("face", max_opset=13,
                                                   max_size_bytes=10_000_000))


def _bad_graph(path):
    """One graph breaking many rules at once: every one must be reported."""
    x = helper.make_tensor_value_info("face", TensorProto.FLOAT16, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, 48])
    extra = helper.make_tensor_value_info("debug", TensorProto.FLOAT, [1])
    nodes = [
        helper.make_node("Cast", ["face"], ["f32"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["ratio"], value=helper.make_tensor("r", TensorProto.FLOAT,
                                                                            [], [0.1])),
        helper.make_node("Constant", [], ["train"], value=helper.make_tensor("t", TensorProto.BOOL,
                                                                            [], [True])),
        helper.make_node("Dropout", ["f32", "ratio", "train"], ["d"], name="drop"),
        helper.make_node("ATen", ["d"], ["a"], name="aten", domain="org.pytorch.aten",
                         operator="relu"),
        helper.make_node("Flatten", ["a"], ["emb"]),
        helper.make_node("ReduceMax", ["emb"], ["debug"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "bad", [x], [y, extra])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("org.pytorch.aten", 1)])
    onnx.save(model, str(path))
    return path


def test_contract_lists_every_violation(tmp_path):
    path = _bad_graph(tmp_path / "bad.onnx")
    contract = DeploymentContract(
        inputs=(TensorSpec("face", "float32", 4),),
        outputs=(TensorSpec("embedding", "float32", 2),),
        max_size_bytes=100, max_opset=17,
    )
    found = contract_violations(path, contract)
    text = " | ".join(found)
    for expected in [
        "bytes, limit 100",
        "opset 18 > max 17",
        "non-standard domain 'org.pytorch.aten'",
        "custom domain 'org.pytorch.aten'",
        "forbidden op type ATen",
        "Dropout in training mode",
        "input 'face' is float16, contract says float32",
        "output 'embedding' missing",
        "unexpected outputs ['debug', 'emb']",
    ]:
        assert expected in text, f"{expected!r} not reported in: {text}"
    with pytest.raises(ModelError) as info:
        check_contract(path, contract)
    assert f"({len(found)} problem(s))" in str(info.value)


def test_contract_missing_file(tmp_path):
    contract = student_contract("voice", max_opset=17, max_size_bytes=1)
    with pytest.raises(ModelError, match="does not exist"):
        check_contract(tmp_path / "missing.onnx", contract)
    with pytest.raises(ModelError, match="unknown student kind"):
        student_contract("iris", max_opset=17, max_size_bytes=1)

