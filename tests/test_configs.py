"""Every committed distillation config builds what `edgepin distill` builds before it reads data.

A typo in an experiment's YAML (a misspelt room key, a band that does not exist, channels that
do not match the blocks) otherwise shows only after the teacher targets are cached, minutes into
a run; `benchmarks/students.md` quotes these files as the recipes of its rows.
"""

from __future__ import annotations

import pytest
import torch

from edge_runtime.errors import ConfigError
from train.config import CONFIG_DIR, load_config
from train.tasks import build_model, room_augment, utterance_mix, voice_front_end

VOICE = sorted(CONFIG_DIR.glob("voice_distill*.yaml"))
FACE = sorted(CONFIG_DIR.glob("face_distill*.yaml"))


def test_the_configs_are_found():
    assert len(VOICE) >= 2 and len(FACE) >= 1


@pytest.mark.parametrize("path", VOICE, ids=[p.stem for p in VOICE])
def test_voice_config_builds_its_network_front_end_and_views(path):
    cfg = load_config(path, path.name)
    assert cfg["modality"] == "voice" and "base" not in cfg
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


def test_door_v26_is_door_v9_with_speaker_mean_targets():
    """students.md quotes door_v26 as door_v9 with one target changed; `base:` must keep it so."""
    v9 = load_config(CONFIG_DIR / "voice_distill_door_v9.yaml", "unused")
    v26 = load_config(CONFIG_DIR / "voice_distill_door_v26.yaml", "unused")
    assert v9["targets"] == {"utterance_mix": 0.5}
    assert v26["targets"] == {"utterance_mix": 0.0, "speaker_mix": 0.5}
    assert {k: v for k, v in v26.items() if k != "targets"} == {k: v for k, v in v9.items() if k != "targets"}


def _write(path, text: str):
    path.write_text(text)
    return path


def test_base_merges_sections_key_by_key_and_overrides_apply_last(tmp_path):
    _write(tmp_path / "a.yaml", "seed: 0\nmodel:\n  width: 1\n  depth: 2\nroom:\n  p: 0.5\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nmodel:\n  width: 3\n  extra: x\nroom: null\n")
    child = _write(tmp_path / "c.yaml", "base: b.yaml\nseed: 7\n")
    cfg = load_config(child, "unused", ["model.depth=5"])
    assert cfg == {"seed": 7, "model": {"width": 3, "depth": 5, "extra": "x"}, "room": None}


@pytest.mark.parametrize("files, match", [
    ({"c.yaml": "base: c.yaml\nseed: 1\n"}, "loops"),
    ({"c.yaml": "base: d.yaml\n", "d.yaml": "base: c.yaml\n"}, "loops"),
    ({"c.yaml": "base: missing.yaml\n"}, "missing.yaml"),
    ({"c.yaml": "base: [a.yaml]\n"}, "must name another YAML"),
    ({"c.yaml": "base: a.yaml\nmodel: 3\n", "a.yaml": "model:\n  width: 1\n"}, "section in its base"),
    ({"c.yaml": "base: a.yaml\n", "a.yaml": "- a list\n"}, "mapping at the top level"),
])
def test_a_broken_base_chain_is_refused_naming_the_file(tmp_path, files, match):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "c.yaml", "unused")
