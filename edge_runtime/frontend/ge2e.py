"""Resemblyzer's (GE2E) front-end and utterance pooling in numpy, for the ported voice teacher.

The large voice tier is Resemblyzer 0.1.4's encoder exported to ONNX (`export/resemblyzer.py`,
`models/voice_large.onnx`). The device has no torch, librosa or webrtcvad, so what Resemblyzer
does around its network is rebuilt here, step for step, from its source:

- ``normalize_volume``: raise quiet speech to -30 dBFS (never lower loud speech);
- ``ge2e_mel``: ``librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160,
  n_mels=40)``: centred frames (200 zeros each side), periodic Hann, power spectrum, Slaney mel
  filterbank 0-8 kHz, NOT log, (T, 40);
- ``partial_slices``: ``VoiceEncoder.compute_partial_slices``: 1.6 s partials every 1/1.3 s;
- ``embed_ge2e``: ``VoiceEncoder.embed_utterance``: pad to the last partial, embed every
  partial, average, unit norm (``embed_ge2e_partials``: the same from ready partials).

Resemblyzer's ``preprocess_wav`` also trims long silences with webrtcvad; the device does not:
its own speech gate (``vad.SpeechGate``) already hands over voiced speech only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np

from edge_runtime.errors import AudioError, ConfigError, ModelError
from edge_runtime.frontend.audio import LogMelConfig, _sparse_mel, _window

GE2E_SR = 16000
GE2E_N_FFT = 400  # 25 ms window, no zero padding (librosa: win_length = n_fft)
GE2E_HOP = 160  # 10 ms
GE2E_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
EMBED_DIM = 256
TARGET_DBFS = -30.0
MIN_SAMPLES = GE2E_SR // 10  # 0.1 s: below it a 1.6 s partial is almost all padding
INT16_MAX = 2**15 - 1

# librosa's filterbank for these parameters (fmin 0, fmax sr/2, Slaney scale and norm) is
# exactly audio.mel_filterbank's: one implementation, checked against librosa in the tests.
_MEL_CFG = LogMelConfig(sample_rate=GE2E_SR, n_fft=GE2E_N_FFT, win_length=GE2E_N_FFT,
                        hop_length=GE2E_HOP, n_mels=GE2E_MELS, fmin=0.0, fmax=GE2E_SR / 2)


def front_end_dict() -> dict[str, object]:
    """What the front-end is, for the model file's metadata and the manifest."""
    return {"kind": "ge2e", "sample_rate": GE2E_SR, "n_fft": GE2E_N_FFT, "hop_length": GE2E_HOP,
            "n_mels": GE2E_MELS, "mel": "power, Slaney 0-8000 Hz, centred (librosa 0.11)",
            "partial_frames": PARTIAL_FRAMES, "rate": 1.3, "min_coverage": 0.75,
            "volume_dbfs": TARGET_DBFS, "silence_trim": "none (the device's speech gate)"}


def check_front_end(raw: object, what: str) -> None:
    """Refuse (ModelError naming ``what``) a model whose recorded front-end (manifest meta or
    ONNX ``edgepin.front_end``, a dict or its JSON) is not ``front_end_dict()``'s kind: its
    inputs are not these mel partials."""
    try:
        recorded = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        recorded = None
    kind = recorded.get("kind") if isinstance(recorded, dict) else None
    if kind != front_end_dict()["kind"]:
        raise ModelError(f"{what} records front-end {kind!r}, not 'ge2e'; the large voice tier "
                         "embeds with Resemblyzer's front-end only: regenerate it with "
                         "`edgepin port-resemblyzer`")


def _check_wav(wav: np.ndarray, what: str, min_samples: int = 1) -> np.ndarray:
    """A 1-D finite float signal of at least ``min_samples``, as float64; else AudioError."""
    if not isinstance(wav, np.ndarray):
        raise AudioError(f"{what}: expected a numpy array of samples, got {type(wav).__name__}")
    if wav.ndim != 1:
        raise AudioError(f"{what}: expected 1-D mono 16 kHz samples, got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"{what}: expected float samples in [-1, 1], got dtype {wav.dtype}")
    if wav.size == 0:
        raise AudioError(f"{what}: empty audio (0 samples)")
    if wav.size < min_samples:
        raise AudioError(f"{what}: too short ({wav.size / GE2E_SR:.3f} s < "
                         f"{min_samples / GE2E_SR:g} s of 16 kHz audio)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{what}: audio contains NaN or infinite samples")
    return wav.astype(np.float64, copy=False)


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS,
                     increase_only: bool = True) -> np.ndarray:
    """Resemblyzer's level normalisation: quiet speech is scaled up to ``target_dbfs`` (RMS)
    so the encoder sees the level it was trained on; louder speech is left alone."""
    x = _check_wav(wav, "normalize_volume")
    rms = math.sqrt(float(np.mean((x * INT16_MAX) ** 2)))
    if rms == 0.0:
        raise AudioError("normalize_volume: digital silence (every sample is 0)")
    change_db = target_dbfs - 20.0 * math.log10(rms / INT16_MAX)
    if change_db < 0 and increase_only:
        return x.astype(np.float32)
    return (x * 10.0 ** (change_db / 20.0)).astype(np.float32)


def ge2e_mel(wav: np.ndarray) -> np.ndarray:
    """(1 + len // 160, 40) float32 mel power: librosa's melspectrogram with Resemblyzer's
    parameters (centred, zero-padded by n_fft // 2 at each end), computed in float64."""
    x = _check_wav(wav, "ge2e_mel")
    x = np.pad(x, GE2E_N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(x, GE2E_N_FFT)[::GE2E_HOP]
    spec = np.fft.rfft(frames * _window(GE2E_N_FFT), n=GE2E_N_FFT, axis=1)
    power = spec.real**2 + spec.imag**2
    return _sparse_mel(_MEL_CFG).project(power).astype(np.float32)


def partial_slices(n_samples: int, rate: float = 1.3,
                   min_coverage: float = 0.75) -> tuple[list[slice], list[slice]]:
    """Resemblyzer's ``compute_partial_slices``: (wav slices, mel slices) of the 160-frame
    partials; the last one is kept when at least ``min_coverage`` of it is real audio, and
    there is always at least one (the wav is zero-padded to the last wav slice's stop)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) \
            or n_samples < 0:
        raise ConfigError(f"partial_slices: n_samples must be an int >= 0, got {n_samples!r}")
    if not 0 < min_coverage <= 1:
        raise ConfigError(f"partial_slices: min_coverage must be in (0, 1], got {min_coverage}")
    if not rate > 0:
        raise ConfigError(f"partial_slices: rate must be > 0, got {rate}")
    n_frames = int(np.ceil((n_samples + 1) / GE2E_HOP))
    frame_step = int(np.round((GE2E_SR / rate) / GE2E_HOP))
    if not 0 < frame_step <= PARTIAL_FRAMES:
        raise ConfigError(f"partial_slices: rate {rate} gives a step of {frame_step} frames; "
                          f"it must be 1..{PARTIAL_FRAMES} (rate >= "
                          f"{GE2E_SR / (GE2E_HOP * PARTIAL_FRAMES):g} per second)")
    wav_slices, mel_slices = [], []
    for i in range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step):
        mel_slices.append(slice(i, i + PARTIAL_FRAMES))
        wav_slices.append(slice(i * GE2E_HOP, (i + PARTIAL_FRAMES) * GE2E_HOP))
    last = wav_slices[-1]
    coverage = (n_samples - last.start) / (last.stop - last.start)
    if coverage < min_coverage and len(mel_slices) > 1:
        mel_slices, wav_slices = mel_slices[:-1], wav_slices[:-1]
    return wav_slices, mel_slices


def ge2e_partials(wav16k: np.ndarray, rate: float = 1.3,
                  min_coverage: float = 0.75) -> np.ndarray:
    """(P, 160, 40) float32: the mel partials ``embed_utterance`` feeds its network."""
    wav = normalize_volume(_check_wav(wav16k, "ge2e input", MIN_SAMPLES))
    wav_slices, mel_slices = partial_slices(wav.size, rate, min_coverage)
    stop = wav_slices[-1].stop
    if stop >= wav.size:
        wav = np.pad(wav, (0, stop - wav.size))
    else:
        # frames past the last partial are never used; a frame reaches n_fft // 2 samples
        # past its centre, so cutting there leaves every used frame as Resemblyzer has it
        wav = wav[: stop + GE2E_N_FFT // 2]
    mel = ge2e_mel(wav)
    return np.stack([mel[s] for s in mel_slices])


def embed_ge2e(run: Callable[[np.ndarray], np.ndarray], wav16k: np.ndarray,
               rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
    """(256,) unit float32 utterance embedding: ``run`` maps (P, 160, 40) mel partials to
    (P, 256) partial embeddings (e.g. the voice_large ONNX session); their mean, unit norm."""
    return embed_ge2e_partials(run, ge2e_partials(wav16k, rate, min_coverage))


def embed_ge2e_partials(run: Callable[[np.ndarray], np.ndarray], mels: np.ndarray) -> np.ndarray:
    """``embed_ge2e`` after its front-end: (P, 160, 40) partials made by ``ge2e_partials`` ->
    (256,) unit embedding, so a caller can time the front-end and the network apart."""
    emb = np.asarray(run(mels), dtype=np.float64)
    if emb.shape != (mels.shape[0], EMBED_DIM) or not np.isfinite(emb).all():
        raise ModelError(f"GE2E encoder returned {emb.shape} (finite: {np.isfinite(emb).all()}) "
                         f"for {mels.shape} mels; expected ({mels.shape[0]}, {EMBED_DIM}) finite")
    mean = emb.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        raise ModelError("GE2E encoder: partial embeddings average to zero; cannot normalise")
    return (mean / norm).astype(np.float32)
