"""Every committed distillation config builds what `edgepin distill` builds before it reads data.

A typo in an experiment's YAML (a misspelt room key, a band that does not exist, channels that
do not match the blocks) otherwise shows only after the teacher targets are cached, minutes into
a run; `benchmarks/students.md` quotes these files as the recipes of its rows.
"""

from __future__ import annotations

import pytest
import torch

from train.config import CONFIG_DIR, load_config
from train.tasks import build_model, room_augment, utterance_mix, voice_front_end

VOICE = sorted(CONFIG_DIR.glob("voice_distill*.yaml"))
FACE = sorted(CONFIG_DIR.glob("face_distill*.yaml"))


def test_the_configs_are_found():
    assert len(VOICE) >= 2 and len(FACE) >= 1


@pytest.mark.parametrize("path", VOICE, ids=[p.stem for p in VOICE])
def test_voice_config_builds_its_network_front_end_and_views(path):
    cfg = load_config(path, path.name)
    assert cfg["modality"] == "voice"
    fe = voice_front_end(cfg)
    model = build_model(cfg).eval()
    with torch.no_grad():
        emb = model(torch.zeros(2, fe.window_frames, cfg["front_end"]["n_mels"]))  # (N, T, M)
    assert emb.shape == (2, cfg["model"]["embedding_dim"])
    if cfg.get("room"):
        aug = room_augment(cfg)
        params = aug.sample(1, aug.rir_bank, ["a", "b", "c", "d", "e", "f"])
        assert aug.speed[0] <= params.speed <= aug.speed[1] or params.speed == 1.0
    assert 0.0 <= utterance_mix(cfg) <= 1.0


@pytest.mark.parametrize("path", FACE, ids=[p.stem for p in FACE])
def test_face_config_builds_its_network(path):
    cfg = load_config(path, path.name)
    assert cfg["modality"] == "face"
    model = build_model(cfg).eval()
    with torch.no_grad():  # grey crops are replicated to 3 channels
        emb = model(torch.zeros(1, 3, 112, 112))
    assert emb.shape == (1, cfg["model"]["embedding_dim"])
