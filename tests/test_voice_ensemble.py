"""`train.ensemble`: independently trained voice students joined into one checkpoint that the
evaluation, export and runtime take like any student. The members here are untrained networks
of the shipped architecture with different random weights (what is checked is the joining,
not accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_runtime.errors import ConfigError, ModelError
from train.config import load_config
from train.distill import CHECKPOINT_FORMAT, load_student
from train.ensemble import ensemble_checkpoints, main
from train.models import VoiceEnsemble
from train.tasks import build_model, voice_front_end


def _student(path, seed: int, **model_keys) -> torch.nn.Module:
    """A voice checkpoint in the format `distill` writes, random weights drawn from `seed`."""
    cfg = load_config(None, "voice_distill.yaml", [])
    cfg["model"].update(model_keys)
    torch.manual_seed(seed)
    net = build_model(cfg).eval()
    torch.save({"format": CHECKPOINT_FORMAT, "modality": "voice", "config": cfg,
                "data": {"root": "fixture", "manifest_hash": "0" * 8}, "split": dict(cfg["split"]),
                "front_end": voice_front_end(cfg).to_dict(), "epoch": 3 + seed,
                "metrics": {"val_eer_student": 0.1}, "state_dict": net.state_dict()}, path)
    return net


def _feats(n: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((n, 200, 64)).astype(np.float32))


def test_the_ensemble_embeds_the_normalised_mean_of_its_members(tmp_path):
    a = _student(tmp_path / "a.pt", 0)
    b = _student(tmp_path / "b.pt", 1, channels=[8, 16, 32, 64])  # members may differ in size
    ckpt = ensemble_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    torch.save(ckpt, tmp_path / "ens.pt")
    net, loaded = load_student(tmp_path / "ens.pt")  # every consumer loads students this way
    assert isinstance(net, VoiceEnsemble) and len(net.members) == 2
    assert loaded["config"]["model"]["arch"] == "ensemble"
    assert loaded["ensemble_of"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert [m["epoch"] for m in loaded["metrics"]["members"]] == [3, 4]
    x = _feats()
    with torch.no_grad():
        ea, eb, e = a(x), b(x), net(x)
    want = torch.nn.functional.normalize(ea + eb, dim=1)
    assert torch.allclose(e, want, atol=1e-6)
    assert torch.allclose(e.norm(dim=1), torch.ones(len(x)), atol=1e-6)
    # the members are different draws: the ensemble is neither of them
    assert (ea * eb).sum(1).max() < 0.99


def test_the_ensemble_exports_as_one_graph(tmp_path):
    import onnxruntime as ort

    from export.students import export_student

    _student(tmp_path / "a.pt", 0)
    _student(tmp_path / "b.pt", 1)
    torch.save(ensemble_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"]), tmp_path / "ens.pt")
    result = export_student(tmp_path / "ens.pt", tmp_path / "ens.onnx")
    assert result["parity_min_cosine"] >= 0.9999
    sess = ort.InferenceSession(str(tmp_path / "ens.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["feats"]
    assert [o.name for o in sess.get_outputs()] == ["embedding"]
    net, _ = load_student(tmp_path / "ens.pt")
    x = _feats(2)
    got = sess.run(["embedding"], {"feats": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), atol=1e-4)


def test_members_must_share_the_input_and_be_distinct(tmp_path):
    _student(tmp_path / "a.pt", 0)
    _student(tmp_path / "b.pt", 1)
    with pytest.raises(ConfigError, match="at least two"):
        ensemble_checkpoints([tmp_path / "a.pt"])
    with pytest.raises(ConfigError, match="given twice"):
        ensemble_checkpoints([tmp_path / "a.pt", tmp_path / "a.pt"])
    other = torch.load(tmp_path / "b.pt", weights_only=False)
    other["front_end"] = {**other["front_end"], "hop_frames": 50}
    torch.save(other, tmp_path / "c.pt")
    with pytest.raises(ConfigError, match="c.pt: another front_end"):
        ensemble_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"])
    torch.save(ensemble_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"]), tmp_path / "ens.pt")
    with pytest.raises(ConfigError, match="already an ensemble"):
        ensemble_checkpoints([tmp_path / "ens.pt", tmp_path / "a.pt"])
    cfg = load_config(None, "voice_distill.yaml", [])
    with pytest.raises(ConfigError, match="two or more plain members"):
        build_model({**cfg, "model": {"arch": "ensemble", "embedding_dim": 256,
                                      "members": [cfg["model"]]}})
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="broken.pt"):
        ensemble_checkpoints([tmp_path / "a.pt", tmp_path / "broken.pt"])


def test_the_command_refuses_to_overwrite(tmp_path, capsys):
    _student(tmp_path / "a.pt", 0)
    _student(tmp_path / "b.pt", 1)
    out = tmp_path / "ens.pt"
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
