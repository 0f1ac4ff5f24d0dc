"""The recurrent voice student (`model.arch: gru`): shape, normalisation, the config switch and
an ONNX export that onnxruntime runs like PyTorch (random weights: no accuracy claim)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import export_onnx, parity
from train.models import VoiceGRU, VoiceGRUConfig, count_parameters
from train.tasks import build_model


def _cfg(**model) -> dict:
    return {"modality": "voice", "front_end": {"n_mels": 64},
            "model": {"embedding_dim": 256, "channels": [32, 64], **model}}


def test_gru_student_embeds_a_window_and_a_batch() -> None:
    net = VoiceGRU(VoiceGRUConfig()).eval()
    with torch.no_grad():
        one = net(torch.randn(1, 200, 64))
        many = net(torch.randn(3, 200, 64))
    assert one.shape == (1, 256) and many.shape == (3, 256)
    np.testing.assert_allclose(many.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert 0.5e6 < count_parameters(net) < 1.2e6  # the door_v15 size: ~0.85 M


def test_build_model_switches_on_arch() -> None:
    assert isinstance(build_model(_cfg(arch="gru", hidden=128, layers=2)), VoiceGRU)
    assert build_model(_cfg(arch="gru", hidden=128)).gru.num_layers == 1
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="model.arch 'lstm'"):
        build_model(_cfg(arch="lstm", hidden=128))
    with pytest.raises(ValueError, match="two channel counts"):
        VoiceGRU(VoiceGRUConfig(channels=[8, 16, 32]))


@pytest.mark.parametrize("n_mels", [40, 64, 80])
def test_gru_student_exports_to_onnx_with_a_gru_node(tmp_path, n_mels) -> None:  # noqa: ANN001
    """Features stay outside the graph; the graph holds one ONNX GRU, a dynamic batch, and
    gives PyTorch's embedding (TensorRT's ONNX parser takes GRU as well)."""
    net = VoiceGRU(VoiceGRUConfig(n_mels=n_mels, hidden=64)).eval()
    out = export_onnx(net, {"feats": torch.randn(1, 200, n_mels)}, tmp_path / "v.onnx",
                      input_names=["feats"], output_names=["embedding"],
                      dynamic_axes={"feats": {0: "batch"}, "embedding": {0: "batch"}}, opset=17)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("GRU") == 1
    x = np.random.default_rng(0).standard_normal((4, 200, n_mels)).astype(np.float32)
    assert parity(net, out, {"feats": x}) > 0.9999
