"""Audio front-end: loading, resampling, log-mel parity with librosa, quality gate, windows."""

from __future__ import annotations

import dataclasses
import math

import av
import librosa
import numpy as np
import pytest
import soundfile as sf

from edge_runtime.errors import AudioError, ConfigError, MediaError
from edge_runtime.frontend.audio import (
    TARGET_SR,
    LogMelConfig,
    audio_quality,
    check_audio,
    fixed_windows,
    load_audio,
    log_mel,
    mean_normalize,
    mel_filterbank,
    resample,
    to_mono,
)

SPEECH = "speechocean762/SPEAKER0036/000360013.flac"
DIGIT = "fsdd/george/0_george_0.wav"


@pytest.fixture(scope="module")
def speech(fixtures) -> np.ndarray:
    return load_audio(fixtures / SPEECH)


def _tone(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


# ---------------------------------------------------------------------------- log-mel parity
@pytest.mark.parametrize("n_mels", [40, 64, 80])
def test_log_mel_matches_librosa_on_real_speech(speech, n_mels):
    cfg = LogMelConfig(n_mels=n_mels)
    ours = log_mel(speech, cfg)
    # librosa's center=False frames are n_fft long with the win_length Hann zero-padded in the
    # middle, so its frame t reads x[t*hop + lpad : ... + win_length]. Padding the input by the
    # same zeros makes its frame t read exactly our x[t*hop : t*hop + win_length].
    lpad = (cfg.n_fft - cfg.win_length) // 2
    y = np.pad(speech, (lpad, cfg.n_fft - cfg.win_length - lpad))
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, window="hann", center=False, power=2.0,
        n_mels=n_mels, fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney",
    )  # fmt: skip
    ref = np.log(np.maximum(mel, cfg.log_floor)).T.astype(np.float32)
    assert ours.shape == ref.shape == (cfg.frames(len(speech)), n_mels)
    assert ours.dtype == ref.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-4
    assert ours.std() > 1.0  # real speech, not a flat floor that would match trivially


def test_filterbank_matches_librosa_slaney():
    cfg = LogMelConfig()
    ref = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=20.0, fmax=7600.0, htk=False, norm="slaney"
    )
    fb = mel_filterbank(cfg)
    assert fb.shape == ref.shape == (64, 257)
    np.testing.assert_allclose(fb, ref, atol=1e-7)
    assert not fb.flags.writeable  # cached and shared: must not be editable by a caller


def test_log_mel_frame_count_and_window_boundaries():
    cfg = LogMelConfig()
    rng = np.random.default_rng(0)
    for n in (400, 559, 560, 16000):
        x = (0.1 * rng.standard_normal(n)).astype(np.float32)
        assert log_mel(x, cfg).shape == (1 + (n - 400) // 160, 64) == (cfg.frames(n), 64)
    assert cfg.frames(399) == 0


def test_log_mel_floor_applies_to_digital_silence():
    out = log_mel(np.zeros(1600, np.float32))
    np.testing.assert_allclose(out, math.log(1e-6), rtol=1e-6)


@pytest.mark.parametrize(
    ("x", "exc"),
    [
        (np.zeros(1600, np.float64), TypeError),
        (np.zeros(1600, np.int16), TypeError),
        ([0.0] * 1600, TypeError),
        (np.zeros((2, 1600), np.float32), ValueError),
        (np.full(1600, np.nan, np.float32), ValueError),
        (np.zeros(399, np.float32), AudioError),
    ],
)
def test_log_mel_rejects_bad_input(x, exc):
    with pytest.raises(exc):
        log_mel(x)


def test_log_mel_config_validation_and_round_trip():
    cfg = LogMelConfig(n_mels=40)
    assert LogMelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["win_length"] == 400
    for bad in ({"n_mels": 39}, {"n_mels": 81}, {"fmax": 9000.0}, {"win_length": 600},
                {"hop_length": 0}, {"log_floor": 0.0}, {"n_mels": 64.0}):  # fmt: skip
        with pytest.raises(ConfigError):
            LogMelConfig(**bad)
    with pytest.raises(ConfigError, match="unknown keys"):
        LogMelConfig.from_dict({**cfg.to_dict(), "center": True})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_mels = 64  # type: ignore[misc]


# -------------------------------------------------------------------------------- resampling
def test_fsdd_8k_loads_at_16k_with_right_length(fixtures):
    n_8k = sf.info(str(fixtures / DIGIT)).frames
    x = load_audio(fixtures / DIGIT)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == 2 * n_8k
    native = load_audio(fixtures / DIGIT, sr=8000)
    assert len(native) == n_8k  # no-op path keeps the original samples
    # Upsampling keeps the voice: the level stays within 1 dB.
    assert abs(20 * math.log10(_rms(x) / _rms(native))) < 1.0


def test_resample_keeps_tone_frequency():
    y = resample(_tone(440.0, 8000), 8000, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    assert abs(_peak_hz(y, 16000) - 440.0) <= 1.0
    z = resample(_tone(1000.0, 44100), 44100, 16000)
    assert abs(_peak_hz(z, 16000) - 1000.0) <= 1.0


def test_downsampling_suppresses_tone_above_new_nyquist():
    x = _tone(7000.0, 16000)  # above 4 kHz, the Nyquist of 8 kHz
    naive = x[::2]  # plain decimation aliases it to 1 kHz at full level
    assert _rms(naive) > 0.3
    y = resample(x, 16000, 8000)
    assert len(y) == 8000
    assert 20 * math.log10(_rms(y[200:-200]) / _rms(x)) < -60.0


def test_resample_is_noop_when_rates_equal_and_returns_float32():
    x = _tone(300.0, 16000)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert resample(x.astype(np.float64), 16000, 8000).dtype == np.float32
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


def test_to_mono_averages_channels(tmp_path, speech):
    stereo = np.stack([speech, np.zeros_like(speech)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, TARGET_SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), speech / 2, atol=1e-7)
    np.testing.assert_allclose(to_mono(stereo), speech / 2, atol=1e-7)
    with pytest.raises(TypeError):
        to_mono(np.zeros((10, 2), np.int16))


def test_audio_decoded_from_grid_video(fixtures):
    x = load_audio(fixtures / "grid" / "bbaf2n.mpg")
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) / TARGET_SR - 3.0) < 0.05
    assert audio_quality(x, TARGET_SR).rms_dbfs > -40.0  # the speaker's voice, not silence


# --------------------------------------------------------------------------------- bad files
def _silent_video(path) -> None:
    """A real MPEG-4 video with frames only (no audio track), made here with PyAV."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            img = np.full((48, 64, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_truncated_wav_is_refused_not_read_partially(fixtures, tmp_path):
    data = (fixtures / DIGIT).read_bytes()
    path = tmp_path / "cut_in_half.wav"
    path.write_bytes(data[: len(data) // 2])
    # libsndfile alone would return the first half silently; the loader must not.
    assert sf.read(str(path))[0].shape[0] > 0
    with pytest.raises(MediaError, match=r"cut_in_half\.wav: truncated"):
        load_audio(path)


def test_streaming_wav_with_unknown_length_is_accepted(fixtures, tmp_path):
    data = bytearray((fixtures / DIGIT).read_bytes())
    i = data.find(b"data")
    data[i + 4 : i + 8] = b"\xff\xff\xff\xff"  # what a recorder writes before it knows the size
    path = tmp_path / "streamed.wav"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_audio(path), load_audio(fixtures / DIGIT))


def test_truncated_flac_is_refused(fixtures, tmp_path):
    data = (fixtures / SPEECH).read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.flac"):
        load_audio(path)


@pytest.mark.parametrize("name", ["random.wav", "random.mp4"])
def test_random_bytes_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(MediaError, match=name.replace(".", r"\.")):
        load_audio(path)


def test_zero_byte_missing_and_empty_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(MediaError, match=r"empty\.wav: empty file"):
        load_audio(empty)
    with pytest.raises(MediaError, match=r"nowhere\.flac: no such file"):
        load_audio(tmp_path / "nowhere.flac")
    no_samples = tmp_path / "no_samples.wav"
    sf.write(str(no_samples), np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(MediaError, match=r"no_samples\.wav: contains no audio samples"):
        load_audio(no_samples)


def test_video_without_audio_is_refused(tmp_path):
    path = tmp_path / "silent_film.mp4"
    _silent_video(path)
    with pytest.raises(MediaError, match=r"silent_film\.mp4: video without an audio track"):
        load_audio(path)


# ----------------------------------------------------------------------------- quality gate
def test_quality_numbers_on_known_signals():
    q = audio_quality(_tone(1000.0, 16000, amp=1.0), 16000)
    assert q.duration_s == 1.0
    assert abs(q.rms_dbfs - (-3.01)) < 0.05 and abs(q.peak - 1.0) < 1e-3
    assert audio_quality(np.zeros(16000, np.float32), 16000).rms_dbfs <= -200.0


def test_check_audio_accepts_real_speech(speech):
    q = check_audio(speech, TARGET_SR, source="utt.flac")
    assert q.duration_s > 2.0 and -35.0 < q.rms_dbfs < -10.0 and q.clipped_fraction == 0.0


def test_check_audio_too_short_on_real_digit(fixtures):
    x = load_audio(fixtures / DIGIT)  # 0.3 s spoken digit
    with pytest.raises(AudioError, match=r"0_george_0\.wav: too short"):
        check_audio(x, TARGET_SR, source="0_george_0.wav")
    assert check_audio(x, TARGET_SR, source="d", min_seconds=0.2).duration_s < 0.3


def test_check_audio_silence(speech):
    with pytest.raises(AudioError, match="mic0: silence only"):
        check_audio(np.zeros(32000, np.float32), TARGET_SR, source="mic0")
    with pytest.raises(AudioError, match="mic0: silence only"):
        check_audio(speech * np.float32(1e-3), TARGET_SR, source="mic0")  # about -82 dBFS


def test_check_audio_clipping_survives_resampling(speech):
    clipped = np.clip(speech * 20.0, -1.0, 1.0).astype(np.float32)
    with pytest.raises(AudioError, match="hot.wav: clipped"):
        check_audio(clipped, TARGET_SR, source="hot.wav")
    # A clipped 44.1 kHz recording brought to 16 kHz rings around its plateaus: still caught.
    hot = np.clip(_tone(200.0, 44100, seconds=2.0, amp=3.0), -1.0, 1.0)
    with pytest.raises(AudioError, match="clipped"):
        check_audio(resample(hot, 44100, 16000), 16000, source="hot")


# ----------------------------------------------------------------------- normalise / windows
def test_mean_normalize(speech):
    feats = log_mel(speech)
    out = mean_normalize(feats)
    assert out.shape == feats.shape and out.dtype == np.float32
    assert np.abs(out.mean(axis=0)).max() < 1e-4
    np.testing.assert_allclose(out - out[0], feats - feats[0], atol=1e-4)  # only a shift
    with pytest.raises(TypeError):
        mean_normalize(feats.astype(np.float64))


def test_fixed_windows_cover_utterance_with_tail_window():
    feats = np.arange(350 * 4, dtype=np.float32).reshape(350, 4)
    w = fixed_windows(feats, n_frames=200, hop_frames=100)
    assert w.shape == (3, 200, 4) and w.dtype == np.float32
    for i, start in enumerate([0, 100, 150]):  # 150 = last window aligned to the end
        np.testing.assert_array_equal(w[i], feats[start : start + 200])
    assert fixed_windows(feats[:300], 200, 100).shape == (2, 200, 4)  # exact fit: no tail
    assert fixed_windows(feats[:200], 200, 100).shape == (1, 200, 4)


def test_fixed_windows_wrap_pads_short_utterance():
    feats = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    w = fixed_windows(feats, n_frames=120, hop_frames=60)
    assert w.shape == (1, 120, 3)
    np.testing.assert_array_equal(w[0, :50], feats)
    np.testing.assert_array_equal(w[0, 50:100], feats)
    np.testing.assert_array_equal(w[0, 100:], feats[:20])
    with pytest.raises(ValueError):
        fixed_windows(feats, 0, 10)
    with pytest.raises(ValueError):
        fixed_windows(feats[:0], 10, 10)
