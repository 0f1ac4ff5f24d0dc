"""Speech gate on real recordings (speechocean762, GRID, FSDD) and on silence and noise."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_runtime.errors import AudioError, ConfigError, ModelError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.vad import (
    SegmentRules,
    SpeechGate,
    segments_from_probs,
    silero_model_path,
)
from edge_runtime.frontend.video import decode_clip

SPEECH = "speechocean762/SPEAKER0036/000360013.flac"  # 3.3 s, one sentence from ~0.55 s


@pytest.fixture(scope="module")
def silero() -> SpeechGate:
    return SpeechGate("silero")


@pytest.fixture(scope="module")
def webrtc() -> SpeechGate:
    return SpeechGate("webrtc")


@pytest.fixture(scope="module")
def speech(fixtures) -> np.ndarray:
    return load_audio(fixtures / SPEECH)


def test_model_comes_from_the_wheel():
    path = silero_model_path()
    assert path is not None and path.name == "silero_vad.onnx" and path.parent.name == "data"
    assert SpeechGate("silero").model_path == path


@pytest.mark.parametrize("backend", ["silero", "webrtc"])
def test_real_speech_is_voiced(backend, speech):
    gate = SpeechGate(backend)
    segs = gate.speech_segments(speech)
    seconds = gate.speech_seconds(speech)
    assert seconds > 1.0
    assert seconds < speech.shape[0] / TARGET_SR  # the leading/trailing pauses are not speech
    assert segs[0][0] > 0.2  # the recording opens with ~0.5 s of room noise
    assert all(0 <= a < b <= speech.shape[0] / TARGET_SR for a, b in segs)


@pytest.mark.parametrize("backend", ["silero", "webrtc"])
def test_silence_and_low_noise_have_no_speech(backend):
    gate = SpeechGate(backend)
    silence = np.zeros(3 * TARGET_SR, dtype=np.float32)
    noise = (np.random.default_rng(0).standard_normal(3 * TARGET_SR) * 0.003).astype(np.float32)
    assert gate.speech_seconds(silence) == 0.0
    assert gate.speech_seconds(noise) < 0.1
    assert gate.extract_speech(silence).shape == (0,)
    assert gate.extract_speech(silence).dtype == np.float32


@pytest.mark.parametrize("name", ["bbaf2n.mpg", "lrwp9a.mpg", "sbia1a.mpg"])
def test_grid_clip_audio_has_speech(silero, fixtures, name):
    audio = decode_clip(fixtures / "grid" / name, max_frames=1).audio
    # GRID sentences ("bin blue at f two now") last ~1.2-1.8 s inside 3 s clips
    assert 0.8 < silero.speech_seconds(audio) < 2.9


def test_backends_agree_on_real_speech(silero, webrtc, fixtures):
    for rel in (SPEECH, "speechocean762/SPEAKER0120/001200015.flac"):
        wav = load_audio(fixtures / rel)
        s, w = silero.speech_seconds(wav), webrtc.speech_seconds(wav)
        assert abs(s - w) < 0.3, (rel, s, w)
        # frame decisions resampled onto a common 10 ms grid agree almost everywhere
        grid = np.arange(0, wav.shape[0], 160)
        ms, mw = silero.speech_mask(wav), webrtc.speech_mask(wav)
        ms = ms[np.minimum(grid // silero.frame, ms.size - 1)]
        mw = mw[np.minimum(grid // webrtc.frame, mw.size - 1)]
        assert np.mean(ms == mw) > 0.85


def test_matches_silero_reference_implementation(silero, speech, fixtures):
    """Our numpy/onnxruntime port must give Silero's own probabilities and timestamps."""
    torch = pytest.importorskip("torch")  # the reference imports torch; edge_runtime never does
    utils = pytest.importorskip("silero_vad.utils_vad")
    ref = utils.OnnxWrapper(str(silero_model_path()), force_onnx_cpu=True)
    short = load_audio(fixtures / "fsdd/george/0_george_0.wav")  # 8 kHz digit, partial frame
    for wav in (speech, short):
        ref_probs = ref.audio_forward(torch.from_numpy(wav), TARGET_SR).numpy().ravel()
        np.testing.assert_allclose(silero.speech_probs(wav), ref_probs, atol=1e-6)
        ts = utils.get_speech_timestamps(torch.from_numpy(wav), ref, sampling_rate=TARGET_SR)
        ours = [
            (round(a * TARGET_SR), round(b * TARGET_SR)) for a, b in silero.speech_segments(wav)
        ]
        assert ours == [(d["start"], d["end"]) for d in ts]


@pytest.mark.parametrize("backend", ["silero", "webrtc"])
def test_streaming_equals_batch(backend, speech):
    gate = SpeechGate(backend)
    stream = gate.stream()
    sizes = np.random.default_rng(1).integers(1, 3000, size=200)
    pos = 0
    for n in sizes:
        stream.push(speech[pos : pos + n])
        pos += n
        if pos >= speech.shape[0]:
            break
    stream.push(speech[pos:])
    assert stream.n_samples == speech.shape[0]
    stream.finish()
    np.testing.assert_array_equal(stream.probs, gate.speech_probs(speech))
    assert stream.segments() == gate.speech_segments(speech)
    with pytest.raises(RuntimeError):
        stream.push(speech[:10])


def test_stream_counts_speech_as_it_arrives(silero, speech):
    """The loop's use: speech seconds grow while the person talks."""
    stream = silero.stream()
    seen = []
    for i in range(0, speech.shape[0], 1600):  # 100 ms microphone chunks
        stream.push(speech[i : i + 1600])
        seen.append(stream.speech_seconds())
    assert seen[3] == 0.0  # the first 0.4 s are silence
    assert seen[-1] > 1.0 and seen[-1] >= max(seen) - 0.1


def test_two_utterances_with_a_pause(silero, fixtures):
    a = load_audio(fixtures / SPEECH)
    pause = np.zeros(TARGET_SR, dtype=np.float32)
    wav = np.concatenate([a, pause, a])
    segs = silero.speech_segments(wav)
    one = silero.speech_segments(a)
    assert len(segs) == 2 * len(one)
    offset = (a.shape[0] + pause.shape[0]) / TARGET_SR
    # the second copy is found at the same place shifted by the offset (within one frame)
    assert abs(segs[len(one)][0] - (one[0][0] + offset)) < 2 * silero.frame / TARGET_SR


def test_extract_speech_is_the_voiced_samples(silero, speech):
    segs = silero.speech_segments(speech)
    voiced = silero.extract_speech(speech)
    expected = np.concatenate(
        [speech[round(a * TARGET_SR) : round(b * TARGET_SR)] for a, b in segs]
    )
    np.testing.assert_array_equal(voiced, expected)
    assert abs(voiced.shape[0] / TARGET_SR - silero.speech_seconds(speech)) < 1e-3
    # precomputed segments (from a stream) give the same result without a second VAD pass
    np.testing.assert_array_equal(silero.extract_speech(speech, segs), voiced)


def test_mask_follows_threshold(speech):
    low, high = SpeechGate(threshold=0.2), SpeechGate(threshold=0.9)
    probs = low.speech_probs(speech)
    np.testing.assert_array_equal(low.speech_mask(speech), probs >= 0.2)
    assert high.speech_mask(speech).sum() < low.speech_mask(speech).sum()
    assert high.speech_seconds(speech) <= low.speech_seconds(speech)


def test_segment_rules_on_synthetic_probabilities():
    f = 512
    rules = SegmentRules(threshold=0.5, min_speech_s=0.25, min_silence_s=0.1, pad_s=0.0)
    # 10 frames speech, a dip to 0.4 (above neg threshold 0.35: still speech), 10 more frames
    probs = [0.0] * 5 + [0.9] * 10 + [0.4] * 5 + [0.9] * 10 + [0.0] * 10
    assert segments_from_probs(probs, f, len(probs) * f, rules) == [(5 * f, 30 * f)]
    # a 2-frame blip (64 ms) is shorter than min_speech and dropped
    assert segments_from_probs([0.0, 0.9, 0.9] + [0.0] * 10, f, 13 * f, rules) == []
    # a 2-frame silence (64 ms < 100 ms) does not split; a 5-frame one (160 ms) does
    two = [0.9] * 10 + [0.0] * 2 + [0.9] * 10 + [0.0] * 10
    five = [0.9] * 10 + [0.0] * 5 + [0.9] * 10 + [0.0] * 10
    assert len(segments_from_probs(two, f, len(two) * f, rules)) == 1
    assert segments_from_probs(five, f, len(five) * f, rules) == [(0, 10 * f), (15 * f, 25 * f)]
    # speech running to the end is closed at the last sample
    assert segments_from_probs([0.0] + [0.9] * 12, f, 13 * f - 100, rules) == [(f, 13 * f - 100)]


def test_bad_input_is_refused(silero):
    with pytest.raises(TypeError, match="float32"):
        silero.speech_seconds(np.zeros(16000, dtype=np.int16))
    with pytest.raises(AudioError, match="mono"):
        silero.speech_seconds(np.zeros((16000, 2), dtype=np.float32))
    bad = np.zeros(16000, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        silero.speech_seconds(bad)
    with pytest.raises(ConfigError, match="backend"):
        SpeechGate("energy")
    with pytest.raises(ConfigError, match="threshold"):
        SpeechGate(threshold=1.5)
    with pytest.raises(ConfigError, match="webrtc_mode"):
        SpeechGate("webrtc", webrtc_mode=7)


def test_missing_model_is_an_error_or_an_announced_fallback(tmp_path, caplog, speech):
    missing = tmp_path / "nowhere" / "silero_vad.onnx"
    with pytest.raises(ModelError, match=str(missing)):
        SpeechGate("silero", model_path=missing)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.frontend.vad"):
        gate = SpeechGate("auto", model_path=missing)
    assert gate.backend == "webrtc"
    assert gate.note is not None and str(missing) in gate.note
    assert any("WebRTC" in r.getMessage() for r in caplog.records)
    assert gate.speech_seconds(speech) > 1.0  # the fallback really works
    assert SpeechGate("auto").backend == "silero" and SpeechGate("auto").note is None


def test_corrupt_model_file_is_a_model_error(tmp_path):
    bad = tmp_path / "silero_vad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match=str(bad)):
        SpeechGate("silero", model_path=bad)
