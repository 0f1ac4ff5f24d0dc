"""The log-mel front-end's sparse mel projection gives the features the shipped students were
trained on: compared with the previous dense implementation (kept below, verbatim) on real
speech from the fixtures (speechocean762 16 kHz, FSDD 8 kHz, GRID audio from video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.frontend.audio import LogMelConfig, load_audio, log_mel, mel_filterbank
from edge_runtime.frontend.features import VoiceFrontEnd


def _dense_log_mel(x: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    """The front-end as it was before issue 15 (BLAS matrix product with the full filterbank)."""
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length)[:: cfg.hop_length]
    n = np.arange(cfg.win_length, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
    spec = np.fft.rfft(frames.astype(np.float64) * window, n=cfg.n_fft, axis=1)
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filterbank(cfg).T
    return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def _real_speech(fixtures: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted((fixtures / "speechocean762").glob("*/*.flac"))
    files += sorted((fixtures / "fsdd").glob("*/*.wav"))[:3] + [fixtures / "grid" / "bbaf2n.mpg"]
    return [(f.name, load_audio(f)) for f in files]


def test_same_features_as_the_dense_front_end_on_real_speech(fixtures) -> None:
    cfg = LogMelConfig()
    clips = _real_speech(fixtures)
    assert len(clips) >= 14
    for name, wav in clips:
        new, old = log_mel(wav, cfg), _dense_log_mel(wav, cfg)
        assert new.shape == old.shape and new.dtype == np.float32, name
        # float64 sums in another order, then float32: equal to well under 1e-5 in log units
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-5, err_msg=name)


def test_same_model_input_windows_on_a_2s_probe(fixtures) -> None:
    fe = VoiceFrontEnd()
    wav = load_audio(fixtures / "speechocean762/SPEAKER0036/000360013.flac")[:32000]
    old = _dense_log_mel(wav, fe.mel)[np.arange(fe.window_frames) % 198]
    old = old - old.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(fe.windows(wav)[0], old, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cfg", [
    LogMelConfig(n_mels=40),
    LogMelConfig(n_mels=80, n_fft=1024),
    LogMelConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, fmax=4000.0),
    # 80 bands of ~12 Hz below 1 kHz, bins 62.5 Hz apart: most triangles fall between bins
    LogMelConfig(n_mels=80, n_fft=256, win_length=256, fmin=0.0, fmax=1000.0),
])
def test_other_configs_and_bands_without_weights(fixtures, cfg: LogMelConfig) -> None:
    fb = mel_filterbank(cfg)
    wav = load_audio(fixtures / "speechocean762/SPEAKER0120" / sorted(
        p.name for p in (fixtures / "speechocean762/SPEAKER0120").glob("*.flac"))[0],
        sr=cfg.sample_rate)
    new, old = log_mel(wav, cfg), _dense_log_mel(wav, cfg)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-5)
    empty = ~fb.any(axis=1)
    if cfg.fmax == 1000.0:
        assert empty.any()  # the case this config is here for
        assert np.all(new[:, empty] == np.float32(np.log(cfg.log_floor)))
