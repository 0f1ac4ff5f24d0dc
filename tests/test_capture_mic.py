"""Microphone capture: the ring buffer (directly) and the stream wrapper.

PortAudio is not installed here and there is no microphone: the stream tests inject a fake
sounddevice module (tests/capture_fakes.py) and feed it real speech where PortAudio would
call the callback; the missing-PortAudio error is checked for real.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from capture_fakes import FAST, FakeSounddevice

from edge_runtime.capture import (
    BackoffPolicy,
    MicrophoneSource,
    RingBuffer,
    SourceState,
    import_sounddevice,
)
from edge_runtime.errors import DependencyError
from edge_runtime.frontend.audio import TARGET_SR, load_audio, resample


# ------------------------------------------------------------------------ microphone: ring
def test_ring_buffer_wraps_in_order_and_drops_whole_blocks():
    ring = RingBuffer(10)
    assert ring.write(np.arange(7, dtype=np.float32))
    np.testing.assert_array_equal(ring.read(5), np.arange(5))
    assert ring.write(np.arange(7, 13, dtype=np.float32))  # wraps around the end
    assert ring.available() == 8 and ring.free() == 2
    assert not ring.write(np.zeros(3, dtype=np.float32))  # does not fit: dropped, counted
    assert (ring.overflows, ring.dropped_samples) == (1, 3)
    np.testing.assert_array_equal(ring.read(), np.arange(5, 13))
    assert ring.read().shape == (0,) and ring.read().dtype == np.float32


def test_missing_portaudio_names_the_package():
    try:
        import sounddevice  # noqa: F401
    except OSError:
        with pytest.raises(DependencyError, match="apt-get install libportaudio2"):
            import_sounddevice()
        with pytest.raises(DependencyError, match="libportaudio2"):
            MicrophoneSource().start()
    else:
        pytest.skip("PortAudio is installed here: nothing to refuse")


@pytest.fixture(scope="module")
def speech(fixtures) -> np.ndarray:
    return load_audio(fixtures / "speechocean762/SPEAKER0036/000360013.flac")


def test_microphone_resamples_native_rate_to_16k(speech):
    sd = FakeSounddevice(rate=44100)
    native = resample(speech, TARGET_SR, 44100)
    mic = MicrophoneSource("USB mic", sd_module=sd)
    with mic:
        stream = sd.streams[0]
        assert stream.kw["samplerate"] == 44100 and mic.sample_rate == 44100
        chunks = []
        for i in range(0, native.shape[0], 1024):
            stream.feed(native[i : i + 1024])
            if i % 4096 == 0:
                chunks.append(mic.poll(0.0).audio)
        chunks.append(mic.poll(0.0).audio)
        status = mic.status()["microphone"]
    got = np.concatenate([c.samples for c in chunks if c is not None])
    # the streaming resampler holds back a few ms (its filter), and adds no edge transients
    assert speech.shape[0] - 800 < got.shape[0] <= speech.shape[0]
    ref = resample(native, 44100, TARGET_SR)[: got.shape[0]]
    middle = slice(1000, got.shape[0] - 1000)
    assert np.max(np.abs(got[middle] - ref[middle])) < 1e-3
    assert status.audio_overflows == 0
    assert abs(status.audio_seconds - got.shape[0] / TARGET_SR) < 1e-6
    got_chunks = [c for c in chunks if c is not None]
    # contiguous audio gets contiguous timestamps
    for prev, nxt in zip(got_chunks, got_chunks[1:], strict=False):
        assert nxt.t == pytest.approx(prev.end, abs=1e-9)


def test_microphone_counts_overflows_and_never_raises(speech):
    sd = FakeSounddevice(rate=16000)
    with MicrophoneSource(sd_module=sd, ring_seconds=0.1) as mic:
        s = sd.streams[0]
        s.feed(speech[:800], overflow=True)  # PortAudio reports it lost a block before this
        for i in range(800, 5600, 800):  # 6 more blocks into a 1600-sample ring, no reading:
            s.feed(speech[i : i + 800])  # the first fits, the other 5 are dropped whole
        batch = mic.poll(0.0)
        status = mic.status()["microphone"]
    assert batch.audio is not None and batch.audio.samples.shape[0] == 1600
    np.testing.assert_array_equal(batch.audio.samples, speech[:1600].astype(np.float32))
    assert status.audio_overflows == 1 + 5


def test_microphone_stereo_is_downmixed(speech):
    sd = FakeSounddevice(rate=16000)
    with MicrophoneSource(sd_module=sd, channels=2) as mic:
        sd.streams[0].feed(np.stack([speech[:1600], np.zeros(1600, np.float32)], axis=1))
        got = mic.poll(0.0).audio.samples
    np.testing.assert_allclose(got, speech[:1600] / 2, atol=1e-7)


def test_microphone_reconnects_when_the_device_disappears(speech):
    sd = FakeSounddevice(rate=16000)
    mic = MicrophoneSource(sd_module=sd, backoff=FAST)
    with mic:
        sd.streams[0].feed(speech[:1600])
        assert mic.poll(0.0).audio.samples.shape[0] == 1600
        sd.streams[0].active = False  # PortAudio stopped the stream: USB mic unplugged
        sd.fail_opens = 2
        assert mic.poll(0.0).audio is None
        lost = mic.status()["microphone"]
        assert lost.state == SourceState.RECONNECTING and lost.disconnects == 1
        deadline = time.monotonic() + 3.0
        while len(sd.streams) < 2 and time.monotonic() < deadline:
            mic.poll(0.01)  # poll drives the reconnect attempts (2 fail, the 3rd opens)
        assert mic.status()["microphone"].state == SourceState.CONNECTED
        sd.streams[1].feed(speech[1600:3200])
        again = mic.poll(0.0).audio
        status = mic.status()["microphone"]
    assert again is not None and again.samples.shape[0] == 1600
    assert status.state == SourceState.CONNECTED
    assert (status.disconnects, status.reconnects) == (1, 1)
    assert "Device unavailable" in status.last_error or "device lost" in status.last_error


def test_microphone_stall_and_missing_device_are_reported(speech):
    sd = FakeSounddevice(rate=16000)
    with MicrophoneSource(sd_module=sd, stall_timeout=0.05, backoff=FAST) as mic:
        time.sleep(0.08)  # the stream stays "active" but no callback arrives
        mic.poll(0.0)
        status = mic.status()["microphone"]
    assert status.disconnects == 1 and "no audio for 0.05 s" in status.last_error
    missing = FakeSounddevice(missing=True)
    policy = BackoffPolicy(initial=0.01, cap=0.01, max_retries=1)
    with MicrophoneSource("Blue Yeti", sd_module=missing, backoff=policy) as mic:
        assert mic.status()["microphone"].state == SourceState.RECONNECTING
        deadline = time.monotonic() + 3.0
        while mic.status()["microphone"].state != SourceState.FAILED:
            assert time.monotonic() < deadline
            assert mic.poll(0.01).audio is None
        status = mic.status()["microphone"]
    assert "Blue Yeti" in status.last_error
