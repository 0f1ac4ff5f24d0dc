"""The voice front-end's per-window normalisation: "band" (each mel band's mean, every shipped
student), "level" (one number per window, door_v19) and "partial" (between them, door_v22), on
real speech from the fixtures (speechocean762, 16 kHz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.audio import load_audio, log_mel
from edge_runtime.frontend.features import VoiceFrontEnd
from train.config import load_config
from train.tasks import voice_front_end

ROOT = Path(__file__).resolve().parents[1]


def _speech(fixtures: Path) -> list[np.ndarray]:
    files = sorted((fixtures / "speechocean762").glob("*/*.flac"))[:4]
    assert files, "speechocean762 fixtures missing"
    return [load_audio(f) for f in files]


# what every voice student shipped before door_v19 records (models/manifest.json up to 2026-12-03)
BAND_MANIFEST_FRONT_END = {
    "hop_frames": 100, "window_frames": 200,
    "mel": {"fmax": 7600.0, "fmin": 20.0, "hop_length": 160, "log_floor": 1e-06, "n_fft": 512,
            "n_mels": 64, "sample_rate": 16000, "win_length": 400},
}


def test_the_default_dict_is_what_earlier_manifests_record() -> None:
    # "band" is left out of the dict, so models made before door_v19 keep their manifests
    # (and every hash made from them), and such a manifest still reads as "band"
    assert VoiceFrontEnd().to_dict() == BAND_MANIFEST_FRONT_END
    assert VoiceFrontEnd.from_dict(BAND_MANIFEST_FRONT_END).normalise == "band"


def test_the_shipped_student_records_the_front_end_it_was_trained_with() -> None:
    # the device feeds the shipped voice student what its manifest entry and its ONNX metadata
    # say; both must be the front-end of the config it was trained with (a level student fed
    # per-band windows, or the reverse, would run without an error and lose its accuracy)
    import onnx

    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    meta = manifest["models"]["voice"]["meta"]
    trained = voice_front_end(meta["config"])
    assert VoiceFrontEnd.from_dict(meta["front_end"]) == trained
    props = {p.key: p.value for p in onnx.load(str(ROOT / "models" / "voice.onnx")).metadata_props}
    assert VoiceFrontEnd.from_dict(json.loads(props["edgepin.front_end"])) == trained


def test_level_round_trips_through_json_and_a_bad_value_is_refused() -> None:
    fe = VoiceFrontEnd(normalise="level")
    assert VoiceFrontEnd.from_dict(json.loads(json.dumps(fe.to_dict()))) == fe
    with pytest.raises(ConfigError, match="normalise"):
        VoiceFrontEnd(normalise="utterance")
    with pytest.raises(ConfigError, match="normalise"):
        VoiceFrontEnd.from_dict({**fe.to_dict(), "normalise": "cmvn"})


def test_the_door_v19_config_trains_with_level_normalisation() -> None:
    cfg = load_config(ROOT / "train/configs/voice_distill_door_v19.yaml", "unused")
    assert voice_front_end(cfg).normalise == "level"
    v9 = load_config(ROOT / "train/configs/voice_distill_door_v9.yaml", "unused")
    assert voice_front_end(v9) == VoiceFrontEnd()  # configs without the key: as before


def test_both_modes_remove_gain_on_real_speech(fixtures) -> None:
    # +6 dB adds log(4) = 1.39 to every log-mel bin, except where the log floor (1e-6) holds a
    # bin: 12-22 % of some fixtures' bins are there, so gain invariance is only as exact as the
    # floor lets it be; SPEAKER0120's clips have almost none (<= 0.2 %): mean change < 0.001 here
    files = sorted((fixtures / "speechocean762").glob("SPEAKER0120/*.flac"))
    assert files, "speechocean762 fixtures of speaker 00120 missing"
    for mode in ("band", "level"):
        fe = VoiceFrontEnd(normalise=mode)
        for f in files:
            wav = load_audio(f)
            a, b = fe.windows(wav), fe.windows((2.0 * wav).astype(np.float32))
            assert float(np.abs(a - b).mean()) < 0.01, (mode, f.name)


def test_band_removes_the_spectral_envelope_and_level_keeps_it(fixtures) -> None:
    band, level = VoiceFrontEnd(), VoiceFrontEnd(normalise="level")
    for wav in _speech(fixtures):
        raw = log_mel(wav, band.mel)[: band.window_frames]
        wb, wl = band.windows(wav)[0], level.windows(wav)[0]
        profile = raw.mean(axis=0) - raw.mean()  # the window's long-term envelope, level removed
        assert np.abs(wb.mean(axis=0)).max() < 1e-4  # band: every band's mean is gone
        np.testing.assert_allclose(wl.mean(axis=0), profile, atol=1e-4)  # level: kept
        assert abs(float(wl.mean())) < 1e-4 and np.ptp(profile) > 3.0  # a real envelope
        # the two differ by exactly that envelope, frame after frame
        np.testing.assert_allclose(wl - wb, np.broadcast_to(profile, wb.shape), atol=1e-4)


def test_partial_lies_between_band_and_level_by_its_fraction(fixtures) -> None:
    # door_v22: "partial" keeps (1 - band_fraction) of the envelope that "level" keeps and "band"
    # removes, frame after frame, so a drift in a speaker's colouring moves the window that much
    band, level = VoiceFrontEnd(), VoiceFrontEnd(normalise="level")
    for frac in (0.25, 0.5):
        part = VoiceFrontEnd(normalise="partial", band_fraction=frac)
        for wav in _speech(fixtures)[:2]:
            wb, wl, wp = band.windows(wav), level.windows(wav), part.windows(wav)
            np.testing.assert_allclose(wp, frac * wb + (1 - frac) * wl, atol=1e-4)
            assert np.abs(wp - wl).max() > 0.1 and np.abs(wp - wb).max() > 0.1


def test_partial_round_trips_and_refuses_a_fraction_that_is_band_or_level() -> None:
    fe = VoiceFrontEnd(normalise="partial", band_fraction=0.5)
    d = json.loads(json.dumps(fe.to_dict()))
    assert d["normalise"] == "partial" and d["band_fraction"] == 0.5
    assert VoiceFrontEnd.from_dict(d) == fe
    assert "band_fraction" not in VoiceFrontEnd(normalise="level").to_dict()  # level's dict as before
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ConfigError, match="band_fraction"):
            VoiceFrontEnd(normalise="partial", band_fraction=bad)


def test_the_door_v22_config_builds_a_partial_front_end() -> None:
    cfg = load_config(ROOT / "train/configs/voice_distill_door_v22.yaml", "unused")
    fe = voice_front_end(cfg)
    assert fe.normalise == "partial" and fe.band_fraction == 0.5


def test_a_microphone_tilt_is_removed_by_band_and_seen_by_level(fixtures) -> None:
    # pre-emphasis (y[n] = x[n] - 0.9 x[n-1]) is a fixed filter, like a cheap microphone's tilt
    for wav in _speech(fixtures):
        tilted = np.concatenate([wav[:1], wav[1:] - 0.9 * wav[:-1]]).astype(np.float32)
        changes = {}
        for mode in ("band", "level"):
            fe = VoiceFrontEnd(normalise=mode)
            changes[mode] = float(np.abs(fe.windows(wav) - fe.windows(tilted)).mean())
        assert changes["level"] > 3 * changes["band"], changes


def test_a_level_student_reaches_the_device_with_its_normalisation(tmp_path, fixtures) -> None:
    # an untrained network of the shipped size (what is checked is the plumbing, not accuracy):
    # checkpoint -> ONNX (metadata) -> the device's front-end -> the same embedding as torch
    # computes on level-normalised windows, and not the one it computes on per-band ones
    import torch

    from edge_runtime.backends import load_runner
    from edge_runtime.bundle import ModelEntry
    from edge_runtime.frontend.features import l2_normalise
    from edge_runtime.models import _voice_front_end
    from export.students import export_student
    from train.distill import CHECKPOINT_FORMAT
    from train.tasks import build_model

    cfg = load_config(ROOT / "train/configs/voice_distill_door_v19.yaml", "unused")
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    torch.save({"format": CHECKPOINT_FORMAT, "modality": "voice", "config": cfg,
                "data": {"root": "fixture", "manifest_hash": "0" * 8}, "split": dict(cfg["split"]),
                "front_end": voice_front_end(cfg).to_dict(), "epoch": 1,
                "metrics": {"val_eer_student": 0.1}, "state_dict": net.state_dict()},
               tmp_path / "level.pt")
    export_student(tmp_path / "level.pt", tmp_path / "voice.onnx")
    runner = load_runner(tmp_path / "voice.onnx", backend="onnxruntime", threads=1)
    fe = _voice_front_end(runner, ModelEntry("voice", "voice.onnx", "0" * 64, {}, tmp_path))
    assert fe.normalise == "level"
    wav = _speech(fixtures)[0]
    got = l2_normalise(runner.run({"feats": fe.windows(wav)})["embedding"].mean(axis=0))
    with torch.no_grad():
        level = l2_normalise(net(torch.from_numpy(VoiceFrontEnd(normalise="level").windows(wav)))
                             .numpy().mean(axis=0))
        band = l2_normalise(net(torch.from_numpy(VoiceFrontEnd().windows(wav))).numpy().mean(axis=0))
    assert float(got @ level) > 0.9999
    assert float(got @ band) < 0.999
    # the timing benchmark times each student with its own recorded front-end
    from benchmarks.voice_probe_timing import _front_end
    assert _front_end(tmp_path / "voice.onnx") == fe


def test_the_equaliser_adds_a_smooth_zero_mean_curve_and_draws_nothing_when_off():
    from train.augment import VoiceAugment

    feats = np.random.default_rng(0).normal(size=(200, 64)).astype(np.float32)
    off = VoiceAugment(eq_p=0.0)
    rng = np.random.default_rng(1)
    assert off.equalise(feats, rng) is feats
    assert rng.random() == np.random.default_rng(1).random()  # no draw was taken
    on = VoiceAugment(eq_p=1.0, eq_tilt=0.5, eq_bow=0.5)
    out = on.equalise(feats, np.random.default_rng(2))
    curve = (out - feats)[0]
    assert np.allclose(out - feats, curve[None, :], atol=1e-6)  # one curve for every frame
    assert abs(float(curve.mean())) < 1e-6  # the window's level is kept
    assert 0 < float(np.abs(curve).max()) <= 0.5 + 0.5 * 2 / 3 + 1e-6
    assert np.all(np.abs(np.diff(curve, 2)) < 0.01)  # smooth: a tilt and a bow, no ripple


def test_the_equaliser_is_refused_with_per_band_normalisation(tmp_path):
    from train.tasks import VoiceTask

    cfg = load_config(ROOT / "train" / "configs" / "voice_distill_door_v20.yaml", "unused", ["front_end.normalise=band"])
    cfg.pop("extra_train", None)
    with pytest.raises(ConfigError, match="eq_p needs front_end.normalise: level or partial"):
        VoiceTask.build(cfg, [], {"train": [], "val": []}, tmp_path)
