"""The large voice tier: Resemblyzer's front-end rebuilt in numpy and its encoder as ONNX,
each checked against Resemblyzer / librosa themselves on real speech (the fixture clips).

The references (librosa, resemblyzer, torch) are training-side packages: a test needing one
skips with the reason when it is absent (a device install has none of them).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import load_manifest, register_model, sha256_file
from edge_runtime.errors import AudioError, ConfigError, ModelError
from edge_runtime.frontend.audio import load_audio
from edge_runtime.frontend.ge2e import (
    embed_ge2e,
    ge2e_mel,
    ge2e_partials,
    normalize_volume,
    partial_slices,
)

MODELS = Path(__file__).resolve().parents[1] / "models"


def _need(*names: str) -> None:
    """Skip, saying what is missing, unless every package imports (resemblyzer's own import
    pulls torch, librosa and webrtcvad)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"needs {name} (the train extra: {exc.name or name} is not installed)")


def _clips(fixtures, n: int = 12) -> list[np.ndarray]:
    paths = sorted((fixtures / "speechocean762").glob("*/*.flac"))[:n]
    assert len(paths) == n
    return [load_audio(p) for p in paths]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fixtures):
    """voice_large.onnx exported once into a temporary folder (with its checks)."""
    _need("torch", "resemblyzer", "onnx", "onnxruntime")
    from export.resemblyzer import export_voice_large

    out = tmp_path_factory.mktemp("vl") / "voice_large.onnx"
    report = export_voice_large(out, sorted((fixtures / "speechocean762").glob("*/*.flac"))[:2])
    return out, report


@pytest.fixture(scope="module")
def session(exported):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    return lambda mels: sess.run(["embedding"], {"mels": mels})[0]


# ---------------------------------------------------------------------------- front-end
def test_mel_matches_librosa_on_real_speech(fixtures):
    _need("librosa")
    import librosa

    for wav in _clips(fixtures, 3):
        ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160,
                                             n_mels=40).T
        got = ge2e_mel(wav)
        assert got.shape == ref.shape and got.dtype == np.float32
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert rel < 1e-5, rel
        # every band where there is energy, not only the loud ones
        big = ref > 1e-3 * ref.max()
        assert np.max(np.abs(got[big] - ref[big]) / ref[big]) < 1e-3


def test_mel_frame_count_and_centring():
    # librosa's centred framing: 1 + len // hop frames; an impulse at sample 0 lands in
    # frame 0 (centre 0) and frame 1 (window reaches back 200 samples from 160)
    for n in (1, 159, 160, 401, 16000):
        assert ge2e_mel(np.zeros(n, np.float32)).shape == (1 + n // 160, 40)
    x = np.zeros(1600, np.float32)
    x[0] = 1.0
    energy = ge2e_mel(x).sum(axis=1)
    assert energy[0] > 0 and energy[1] > 0 and np.all(energy[2:] == 0)


def test_partial_slices_equal_resemblyzer():
    _need("resemblyzer", "torch")
    from resemblyzer import VoiceEncoder

    lengths = [0, 1, 159, 160, 1600, 16000, 25599, 25600, 25601, 37000, 48000, 160000]
    lengths += list(np.random.default_rng(0).integers(0, 400_000, 300))
    lengths += [160 * k + d for k in range(1, 1000, 3) for d in (-1, 0)]  # frame boundaries
    for rate, cov in ((1.3, 0.75), (1.0, 0.5), (2.0, 1.0)):
        for n in lengths:
            assert partial_slices(int(n), rate, cov) == \
                VoiceEncoder.compute_partial_slices(int(n), rate, cov), (n, rate, cov)


def test_normalize_volume_equals_resemblyzer(fixtures):
    _need("resemblyzer", "torch")
    from resemblyzer.audio import normalize_volume as ref

    quiet = _clips(fixtures, 1)[0] * 0.01  # raised to -30 dBFS
    loud = np.clip(quiet * 300, -1, 1)  # above -30 dBFS: left alone
    for x in (quiet, loud):
        np.testing.assert_allclose(normalize_volume(x), ref(x, -30, increase_only=True),
                                   rtol=1e-5, atol=1e-7)
    assert 20 * np.log10(np.sqrt(np.mean(normalize_volume(quiet) ** 2))) == \
        pytest.approx(-30, abs=1e-3)
    np.testing.assert_array_equal(normalize_volume(loud), loud)


# ------------------------------------------------------------------------------- ONNX
def test_export_is_standard_lstm_and_matches_torch(exported, fixtures):
    import onnx
    import torch

    from export.resemblyzer import load_encoder, real_mels

    path, report = exported
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert report["op_types"]["LSTM"] == 3 and not ops & {"Loop", "Scan", "If"}
    assert [i.name for i in model.graph.input] == ["mels"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    # byte for byte the file the committed manifest records (under the pinned torch), or
    # the runtime would refuse a regenerated voice_large.onnx as "replaced or corrupted"
    assert sha256_file(path) == load_manifest(MODELS)["voice_large"].sha256
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgepin.resemblyzer_port"].startswith("resemblyzer_ge2e_onnx@")
    assert meta["edgepin.teacher"].startswith("resemblyzer@0.1.4+")
    # the export's own check ran on random and real inputs and stayed far under its limit
    assert len(report["parity_max_abs_diff"]) == 3
    assert max(report["parity_max_abs_diff"].values()) < 1e-5
    # independently here: other real clips, another batch size
    import onnxruntime as ort

    mels = real_mels(sorted((fixtures / "speechocean762").glob("*/*.flac"))[6:9])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = load_encoder()(torch.from_numpy(mels)).numpy()
    got = sess.run(["embedding"], {"mels": mels})[0]
    assert got.shape == (mels.shape[0], 256) and mels.shape[0] > 5
    assert np.abs(got - ref).max() < 1e-5


def test_embedding_matches_resemblyzer_end_to_end(session, fixtures):
    from resemblyzer import VoiceEncoder

    enc = VoiceEncoder(device="cpu", verbose=False)
    cos = []
    for wav in _clips(fixtures, 12)[::3] + [_clips(fixtures, 1)[0][:12000]]:  # + a 0.75 s cut
        ours = embed_ge2e(session, wav)
        ref = enc.embed_utterance(normalize_volume(wav))
        assert ours.shape == (256,) and ours.dtype == np.float32
        assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)
        cos.append(float(ours @ ref))
    assert min(cos) > 0.999, cos
    # and it is a speaker embedding: two speakers are further apart than one speaker's clips
    clips = _clips(fixtures, 6)  # speakers 0036 (3 clips) and 0120 (3 clips)
    e = np.stack([embed_ge2e(session, w) for w in clips])
    s = e @ e.T
    same = np.mean([s[i, j] for i in range(6) for j in range(6) if i != j and i // 3 == j // 3])
    other = np.mean(s[:3, 3:])
    assert same > other + 0.05, (same, other)


def test_partials_pad_like_resemblyzer(fixtures):
    # a clip whose last partial is dropped (no padding) and one that is padded
    wav = _clips(fixtures, 1)[0]
    for n in (16000, 25600 + 1232 * 2, 40000):
        x = wav[:n]
        wav_slices, mel_slices = partial_slices(n)
        p = ge2e_partials(x)
        assert p.shape == (len(mel_slices), 160, 40)
        y = normalize_volume(x)
        full = ge2e_mel(np.pad(y, (0, max(0, wav_slices[-1].stop - n))))
        np.testing.assert_array_equal(p, np.stack([full[s] for s in mel_slices]))


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("wav", "match"), [
    (np.zeros(0, np.float32), "empty"),
    (np.full(1599, 0.1, np.float32), "too short"),
    (np.array([0.1] * 3000 + [np.nan], np.float32), "NaN or infinite"),
    (np.array([0.1] * 3000 + [np.inf], np.float32), "NaN or infinite"),
    (np.zeros(16000, np.float32), "digital silence"),
    (np.zeros((2, 16000), np.float32), "1-D"),
    (np.zeros(16000, np.int16), "float"),
])
def test_bad_audio_is_refused_with_the_reason(wav, match):
    def run(mels):  # never reached
        raise AssertionError("the encoder must not run on refused audio")

    with pytest.raises(AudioError, match=match):
        embed_ge2e(run, wav)


def test_bad_encoder_output_and_slice_arguments_are_refused():
    wav = np.random.default_rng(0).normal(0, 0.1, 20000).astype(np.float32)
    with pytest.raises(ModelError, match="expected"):
        embed_ge2e(lambda m: np.zeros((m.shape[0], 128), np.float32), wav)
    with pytest.raises(ModelError, match="expected"):
        embed_ge2e(lambda m: np.full((m.shape[0], 256), np.nan, np.float32), wav)
    with pytest.raises(ConfigError, match="min_coverage"):
        partial_slices(16000, 1.3, 0.0)
    with pytest.raises(ConfigError, match="rate"):
        partial_slices(16000, 0.5, 0.75)  # step 200 frames > a 160-frame partial
    with pytest.raises(ConfigError, match="n_samples"):
        partial_slices(-1)


def test_missing_generated_file_names_the_command(tmp_path):
    f = tmp_path / "voice_large.onnx"
    f.write_bytes(b"x")
    register_model(tmp_path, "voice_large", f.name, resemblyzer_port="resemblyzer_ge2e_onnx@1+0")
    f.unlink()
    with pytest.raises(ModelError, match="edgepin port-resemblyzer"):
        load_manifest(tmp_path)["voice_large"].verified_path()
    from benchmarks.voice_large import large_embedder  # what voice_cohort --voice large opens

    with pytest.raises(ModelError, match="voice_large.onnx is missing.*port-resemblyzer"):
        large_embedder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "other.onnx").write_bytes(b"y")
    register_model(empty, "voice", "other.onnx")
    with pytest.raises(ModelError, match="no voice_large in the manifest.*port-resemblyzer"):
        large_embedder(empty)
