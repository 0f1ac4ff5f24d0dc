"""Operating-point files: build, save, load, and refusal of stale, newer or corrupt files.

Scores are synthetic Gaussians (no trained models exist in the tests); only the file handling
and decision plumbing are checked here, no accuracy claim is made.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml

from calibration.operating_points import (
    build_operating_points,
    check_held_out,
    fused_score_sets,
    hash_model_files,
    plot_operating_points,
)
from calibration.scores import TrialScores
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.operating_points import (
    SCHEMA_VERSION,
    _checksum,
    load_operating_points,
    save_operating_points,
)

FACE = hashlib.sha256(b"face model").hexdigest()
VOICE = hashlib.sha256(b"voice model").hexdigest()
MANIFEST = hashlib.sha256(b"manifest").hexdigest()
HASHES = {"face": FACE, "voice": VOICE}


def _trials(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 5 == 0
    face = np.where(y, 1.2, -1.2) + rng.normal(0, 1, n)
    voice = np.where(y, 1.0, -1.0) + rng.normal(0, 1, n)
    voice[: n // 4] = np.nan  # some trials have no usable voice
    return TrialScores({"face": face, "voice": voice}, y)


@pytest.fixture(scope="module")
def op():
    return build_operating_points(
        _trials(6000, 1), _trials(20000, 2), model_hashes=HASHES, data_manifest_sha256=MANIFEST,
        targets=(1e-2, 1e-3, 1e-4), n_bootstrap=200, seed=3, provisional=False,
    )


def test_build_contents(op):
    names = {"+".join(p.modalities) for p in op.thresholds}
    assert names == {"face", "voice", "face+voice"}
    by = {("+".join(p.modalities), p.target_far): p for p in op.thresholds}
    assert by[("face+voice", 1e-2)].measurable
    # 16000 impostors: 1e-4 < 3/16000 is not measurable, for every subset
    assert not by[("face", 1e-4)].measurable
    assert "not measurable with 16000 impostor scores" in by[("face", 1e-4)].reason
    quality = {"+".join(q["modalities"]): q for q in op.quality}
    # independent modalities: fusion beats either one on the same held-out trials
    assert quality["face+voice"]["eer"] < min(quality["face"]["eer"], quality["voice"]["eer"])
    for q in quality.values():
        assert 0 <= q["min_cllr"] <= q["cllr"] < 1
    assert not op.provisional


def test_without_held_out_it_is_provisional():
    op = build_operating_points(_trials(3000, 4), model_hashes=HASHES,
                                data_manifest_sha256=MANIFEST, n_bootstrap=50,
                                provisional=False)
    assert op.provisional
    assert "no held-out set" in op.notes
    with pytest.raises(ConfigError, match="not a sha256"):
        build_operating_points(_trials(3000, 4), model_hashes={"face": "abc"},
                               data_manifest_sha256=MANIFEST)


def test_round_trip_and_decisions(op, tmp_path):
    path = save_operating_points(op, tmp_path / "operating_points.yaml")
    loaded = load_operating_points(path, HASHES)
    assert loaded.thresholds == op.thresholds
    assert loaded.model_hashes == HASHES and loaded.data_manifest_sha256 == MANIFEST
    for scores in ({"face": 0.4, "voice": -0.3}, {"face": 0.4, "voice": None}, {"voice": 1.1}):
        assert loaded.fuser.score(scores) == pytest.approx(op.fuser.score(scores), abs=1e-12)
    d = loaded.decide({"face": 3.0, "voice": 2.5}, 1e-3)
    assert d.accepted and d.modalities == ("face", "voice")
    point = loaded.threshold_for(("face", "voice"), 1e-3)
    assert d.threshold == point.threshold and d.llr > point.threshold
    assert not loaded.decide({"face": -2.0, "voice": None}, 1e-2).accepted
    with pytest.raises(ConfigError, match="not measurable"):
        loaded.decide({"face": 3.0}, 1e-4)
    with pytest.raises(ConfigError, match="no threshold for face at FAR 0.05; available"):
        loaded.threshold_for(["face"], 0.05)
    # a device that loads only the face model may use the face+voice file
    assert load_operating_points(path, {"face": FACE}).model_hashes == HASHES


def test_stale_model_hash_is_refused_with_a_clear_message(op, tmp_path):
    path = save_operating_points(op, tmp_path / "op.yaml")
    retrained = hashlib.sha256(b"retrained voice").hexdigest()
    with pytest.raises(ModelError) as err:
        load_operating_points(path, {"face": FACE, "voice": retrained})
    msg = str(err.value)
    assert str(path) in msg and "stale" in msg and "voice model" in msg
    assert VOICE[:12] in msg and retrained[:12] in msg
    assert "edgepin calibrate" in msg
    with pytest.raises(ModelError, match="not made for the loaded pin_face model"):
        load_operating_points(path, {**HASHES, "pin_face": FACE})


def _rewrite(path, edit, fix_checksum):
    doc = yaml.safe_load(path.read_text())
    doc.pop("checksum")
    edit(doc)
    if fix_checksum:
        doc["checksum"] = _checksum(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_newer_schema_edits_and_corruption_are_refused(op, tmp_path):
    path = save_operating_points(op, tmp_path / "op.yaml")
    good = path.read_text()

    _rewrite(path, lambda d: d.update(schema_version=SCHEMA_VERSION + 1), fix_checksum=True)
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this "
                                          "edgepin supports"):
        load_operating_points(path, HASHES)

    path.write_text(good)
    _rewrite(path, lambda d: d["thresholds"][0].update(threshold=-5.0), fix_checksum=False)
    with pytest.raises(ConfigError, match="edited by hand"):
        load_operating_points(path, HASHES)

    path.write_text(good)
    _rewrite(path, lambda d: d["thresholds"][0].pop("frr"), fix_checksum=True)
    with pytest.raises(ConfigError, match="corrupt .bad field 'frr'"):
        load_operating_points(path, HASHES)

    path.write_text(good[: len(good) // 2])  # truncated mid-write by something else
    with pytest.raises(ConfigError, match=f"{path}.*(corrupt|edited)"):
        load_operating_points(path, HASHES)

    path.write_bytes(b"\x00\xff\x10garbage")
    with pytest.raises(ConfigError, match=str(path)):
        load_operating_points(path, HASHES)

    with pytest.raises(ConfigError, match="does not exist.*edgepin calibrate"):
        load_operating_points(tmp_path / "missing.yaml", HASHES)


def test_held_out_check_plots_and_model_hashing(op, tmp_path):
    rows = check_held_out(op, _trials(20000, 9))
    assert {r["modalities"] for r in rows} == {"face", "voice", "face+voice"}
    inside = [r["far_in_ci"] for r in rows]
    assert sum(inside) >= len(inside) - 1  # 95% intervals: at most an occasional miss
    sets = fused_score_sets(op.fuser, _trials(2000, 10))
    assert set(sets) == {"face", "voice", "face+voice"}
    hist, det = plot_operating_points(op, _trials(4000, 11), tmp_path / "h.png", tmp_path / "d.png")
    assert hist.stat().st_size > 5000 and det.stat().st_size > 5000
    model = tmp_path / "face.onnx"
    model.write_bytes(b"face model")
    assert hash_model_files({"face": model}) == {"face": FACE}
    with pytest.raises(ModelError, match="not found"):
        hash_model_files({"voice": tmp_path / "voice.onnx"})


def test_voice_probes_use_their_probe_embedding_and_templates_the_whole_utterance():
    from calibration.trials import Embedded, held_out_trials

    rng = np.random.default_rng(0)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    people = [f"p{i}" for i in range(4)]
    ids = [p for p in people for _ in range(4)]
    face = Embedded([f"f{i}" for i in range(4) for _ in range(3)],
                    unit(rng.normal(size=(12, 8))), [str(i) for i in range(12)])
    whole = unit(rng.normal(size=(16, 8)))
    probe = unit(rng.normal(size=(16, 8)))
    voice = Embedded(ids, whole, [str(i) for i in range(16)], probe_emb=probe)
    parts, _, _ = held_out_trials(face, voice, 2, 3, seed=0)
    # each speaker: 3 utterances enrol (whole-utterance template), the 4th probes (probe_emb)
    got = np.sort(np.concatenate([np.asarray(p.scores["voice"]) for k, p in parts.items()
                                  if k.startswith(("speechocean", "artificial"))]))
    templates = unit(np.stack([whole[4 * k: 4 * k + 3].mean(0) for k in range(4)]))
    want_probe = np.sort((probe[3::4] @ templates.T).ravel())
    want_whole = np.sort((whole[3::4] @ templates.T).ravel())
    # trials never cross halves, so only some pairs exist: each must be a probe_emb score
    assert got.size >= 4
    assert np.all(np.min(np.abs(got[:, None] - want_probe[None]), axis=1) < 1e-5)
    assert not np.all(np.min(np.abs(got[:, None] - want_whole[None]), axis=1) < 1e-5)


def test_a_probe_length_table_survives_the_file_and_version_1_files_still_load(op, tmp_path):
    import dataclasses

    from edge_runtime.operating_points import Fuser

    voice = op.fuser.calibrations["voice"]
    table = ((0.75, voice.slope / 2, voice.offset / 2), (2.0, voice.slope, voice.offset))
    cals = {**op.fuser.calibrations, "voice": dataclasses.replace(voice, by_seconds=table)}
    with_table = dataclasses.replace(op, fuser=Fuser(cals, op.fuser.subsets))
    path = save_operating_points(with_table, tmp_path / "op.yaml")
    back = load_operating_points(path, HASHES)
    np.testing.assert_allclose(back.fuser.calibrations["voice"].by_seconds, table)
    assert back.fuser.calibrations["face"].by_seconds == ()
    # a file written before probe lengths existed (schema 1) is still read, length-blind
    old = save_operating_points(op, tmp_path / "old.yaml")
    _rewrite(old, lambda d: d.update(schema_version=1), fix_checksum=True)
    assert load_operating_points(old, HASHES).fuser.calibrations["voice"].by_seconds == ()
