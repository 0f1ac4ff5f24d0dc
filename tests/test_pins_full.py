"""Full mode (end-to-end backbones + PIN heads) smoke test on real GRID clips.

Tiny widths and two steps: checks that the data path (clip decoding, face alignment, audio
windows), the curriculum loss through both backbones, and the checkpoint all work on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from train.config import load_config
from train.pins.full import train_full

CLIPS = ("bbaf2n.mpg", "lbax4n.mpg", "lbbc2a.mpg", "lrwp9a.mpg", "sbia1a.mpg")


def test_full_mode_smoke(tmp_path: Path, fixtures: Path) -> None:
    grid = tmp_path / "grid"
    grid.mkdir()
    for c in CLIPS:
        (grid / c).symlink_to(fixtures / "grid" / c)
    cfg = load_config(None, "pins_full_voxceleb.yaml", [
        "data.source=clips", "data.root=grid", "data.frame_step=25", "data.max_frames=50",
        "model.face={width: 0.25, embedding_dim: 128}",
        "model.voice={channels: [8, 8, 16, 16], blocks: [1, 1, 1, 1], embedding_dim: 256}",
        "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=4", "train.threads=1",
        "train.loader_workers=0",
        "train.device=cpu"])
    torch.manual_seed(0)
    summary = train_full(tmp_path, cfg, tmp_path / "run", cache_dir=tmp_path / "cache")
    lines = (tmp_path / "run" / "full_history.jsonl").read_text().splitlines()
    hist = [json.loads(line) for line in lines]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(h["train_loss"] > 0 for h in hist)
    ckpt = torch.load(tmp_path / "run" / "full.pt", weights_only=False)
    assert ckpt["kind"] == "pins_full" and summary["params"] == ckpt["params"]
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("face_net.") for k in keys)
    assert any(k.startswith("voice_net.") for k in keys)
    assert any(k.startswith("heads.face.") for k in keys)
