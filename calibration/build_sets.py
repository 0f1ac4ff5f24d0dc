"""INT8 calibration sets built from real data through the device's own front-ends.

INT8 scales are measured on whatever the calibration set holds, so it must look like what the
device will feed the model, and must not contain the people the accuracy gate tests on:

* faces: LFW images of TRAINING identities only (``holdout_split(...)["train"]`` with the
  model's own split), detected and aligned by ``train.prepare.prepare_faces`` and turned into
  the ``face`` input by ``edge_runtime.frontend.features.face_tensor``, one image per identity first so
  the set spans many people rather than many photos of a few;
* voices: speechocean762 utterances of training speakers cut into deployment-length windows
  by ``VoiceFrontEnd``, half from the voiced part found by the device's VAD (``SpeechGate``),
  half from the whole recording (as training and ``edgepin eval`` cut them). A share of windows is real speech with added noise (a fan, a street: the device will hear
  it), and a share is silence-only (the recordings' own non-speech parts), because a probe can
  be all silence and its activations must not saturate;
* heads (pin_face, pin_voice, faa): the student embeddings of those same samples, computed by
  the FP32 student ONNX files, since that is what the heads receive on the device.

Sets are stored with ``calibration.int8_sets.save_calibration_set`` (sha256 + manifest); the
manifest's ``source.key`` records what the set depends on (data, split, front-end, student
hash) so ``ensure_set`` can tell a reusable set from a stale one. No torch here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.int8_sets import (
    DEFAULT_MIN_SAMPLES,
    load_calibration_set,
    read_manifest,
    save_calibration_set,
)
from edge_runtime.errors import DatasetError, ModelError
from edge_runtime.frontend.features import (
    STUDENT_FACE_INPUT,
    FaceInput,
    VoiceFrontEnd,
    l2_normalise,
)

log = logging.getLogger(__name__)

RECIPE = "edgepin-calib-2"  # bump when the sampling changes: older sets are then rebuilt
DEFAULT_SPLIT = {"test_fraction": 0.2, "val_fraction": 0.1, "seed": 0}
NOISY_SHARE = 0.15
SILENCE_SHARE = 0.15
NOISY_SNR_DB = (0.0, 20.0)


@dataclass(frozen=True)
class CalibSpec:
    """How many samples to draw and from which identities."""

    n: int = 640
    min_samples: int = DEFAULT_MIN_SAMPLES
    split: Mapping[str, Any] | None = None  # the model's split; DEFAULT_SPLIT when None
    seed: int = 0

    def split_cfg(self) -> dict[str, Any]:
        return dict(self.split or DEFAULT_SPLIT)


def _train_identities(identities: list[str], split: Mapping[str, Any]) -> list[str]:
    from train.datasets import holdout_split

    return holdout_split(identities, float(split["test_fraction"]),
                         float(split["val_fraction"]), int(split["seed"]))["train"]


def _train_pool(reader: Any, spec: CalibSpec) -> tuple[list, dict[str, Any], np.random.Generator]:
    """The reader's samples of training identities, the split that chose them, a seeded rng."""
    split = spec.split_cfg()
    train_ids = set(_train_identities(reader.identities(), split))
    pool = [s for s in reader.samples if s.identity in train_ids]
    return pool, split, np.random.default_rng(spec.seed)


def _spread(samples: list, n: int, rng: np.random.Generator) -> list:
    """Up to ``n`` samples, round-robin over identities (every person once before repeats)."""
    by_id: dict[str, list] = {}
    for s in samples:
        by_id.setdefault(s.identity, []).append(s)
    queues = [list(rng.permutation(len(v))) for v in by_id.values()]
    groups = list(by_id.values())
    order = rng.permutation(len(groups))
    out: list = []
    while len(out) < n and any(queues):
        for g in order:
            if queues[g] and len(out) < n:
                out.append(groups[g][queues[g].pop()])
    return out


def _check_count(what: str, n: int, spec: CalibSpec, data: Path) -> None:
    if n < spec.min_samples:
        raise DatasetError(
            f"{what} calibration from {data}: only {n} usable samples from training identities, "
            f"at least {spec.min_samples} are required; point to a larger dataset"
        )


def face_calibration(
    data: str | Path, cache_dir: str | Path, spec: CalibSpec,
    face_input: FaceInput = STUDENT_FACE_INPUT,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``{"face": (N, 3, S, S)}`` from training-identity faces, cropped as ``face_input``
    (the students' aligned 112 crop, or the large tier's 150 dlib chip), and its source."""
    from train.datasets import FaceFolder
    from train.prepare import prepare_faces

    data = Path(data)
    reader = FaceFolder(data)
    pool, split, rng = _train_pool(reader, spec)
    # ~5% of LFW images have no detectable face: draw a margin, keep the first n that align.
    chosen = _spread(pool, int(spec.n * 1.1) + 8, rng)
    if not chosen:
        raise DatasetError(f"face calibration: no training-identity images in {data}")
    faces = prepare_faces(chosen, cache_dir, with_teacher=False, face_input=face_input)
    crops = faces.crops[: spec.n]
    used = faces.samples[: spec.n]
    _check_count("face", len(crops), spec, data)
    source = {
        "dataset": str(data), "modality": "face", "split": split, "identities": "train",
        "n_identities": len({s.identity for s in used}), "n_images": len(used),
        "skipped_no_face": len(faces.skipped),
        "front_end": ("prepare_faces (dlib HOG + 5-point align 112) -> face_tensor"
                      if face_input == STUDENT_FACE_INPUT else
                      f"prepare_faces (dlib HOG + 5 points) -> FaceInput {face_input.to_dict()}"),
        "files": sorted(str(s.path.relative_to(reader.root)) for s in used),
    }
    return {"face": face_input.tensor(list(crops))}, source


def _noise(wav: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(wav.astype(np.float64) ** 2)) + 1e-10
    noise = rng.standard_normal(len(wav)) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(wav + noise, -1.0, 1.0).astype(np.float32)


def _split_speech(wav: np.ndarray, gate: Any) -> tuple[np.ndarray, np.ndarray]:
    """(voiced part, non-speech part) of one recording, by the device's VAD."""
    from edge_runtime.frontend.audio import TARGET_SR

    segments = gate.speech_segments(wav)
    mask = np.zeros(len(wav), dtype=bool)
    for a, b in segments:
        mask[round(a * TARGET_SR) : round(b * TARGET_SR)] = True
    return wav[mask], wav[~mask]


def _pick(per_utterance: list[np.ndarray], k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``k`` windows; every utterance gives one window before any gives a second."""
    flat = [(u, w) for u, wins in enumerate(per_utterance) for w in range(len(wins))]
    first = [i for i, (_, w) in enumerate(flat) if w == 0]
    rest = [i for i, (_, w) in enumerate(flat) if w > 0]
    order = list(rng.permutation(first)) + list(rng.permutation(rest))
    return [per_utterance[flat[i][0]][flat[i][1]] for i in order[:k]]


@dataclass
class VoiceCalibration:
    """The voice set plus what the head sets need: per-utterance speech windows."""

    arrays: dict[str, np.ndarray]
    source: dict[str, Any]
    utterance_windows: list[np.ndarray]


def voice_calibration(
    data: str | Path, cache_dir: str | Path, front_end: VoiceFrontEnd, spec: CalibSpec,
    *, vad_backend: str = "auto",
) -> VoiceCalibration:
    """``{"feats": (N, T, M)}``: speech, noisy-speech and silence-only windows of train speakers."""
    from edge_runtime.frontend.vad import SpeechGate
    from train.datasets import SpeechFolder
    from train.prepare import prepare_voices

    data = Path(data)
    reader = SpeechFolder(data)
    pool, split, rng = _train_pool(reader, spec)
    chosen = _spread(pool, spec.n, rng)
    if not chosen:
        raise DatasetError(f"voice calibration: no training-speaker utterances in {data}")
    voices = prepare_voices(chosen, cache_dir, front_end, with_teacher=False)
    gate = SpeechGate(vad_backend)
    n = front_end.window_samples
    speech_wins, raw_wins, silences = [], [], []
    for wav in voices.audio:
        wav = np.asarray(wav, np.float32)
        raw_wins.append(front_end.windows(wav))
        voiced, quiet = _split_speech(wav, gate)
        if len(voiced) >= n // 2:  # the device needs >= 2 s of speech; half a window is kept
            wins = front_end.windows(voiced if len(voiced) >= n else np.resize(voiced, n))
            speech_wins.append((voiced, wins))
        if len(quiet) >= n // 4:
            silences.append(quiet)
    n_noisy = int(round(spec.n * NOISY_SHARE))
    n_silence = min(int(round(spec.n * SILENCE_SHARE)), len(silences) * 4)
    n_speech = spec.n - n_noisy - n_silence
    # Half the speech windows as the device cuts them (voiced part only), half as training and
    # `edgepin eval` cut them (the whole recording, onsets and pauses included).
    voiced_sel = _pick([w for _, w in speech_wins], n_speech - n_speech // 2, rng)
    raw_sel = _pick(raw_wins, n_speech - len(voiced_sel), rng)
    noisy = []
    for _ in range(n_noisy if speech_wins else 0):
        voiced, _ = speech_wins[int(rng.integers(len(speech_wins)))]
        start = int(rng.integers(0, max(1, len(voiced) - n + 1)))
        crop = voiced[start : start + n] if len(voiced) >= n else np.resize(voiced, n)
        snr = float(rng.uniform(*NOISY_SNR_DB))
        noisy.append(front_end.windows(_noise(crop, snr, rng))[0])
    quiet_wins = []
    for k in range(n_silence):
        quiet = silences[k % len(silences)]
        offset = int(rng.integers(len(quiet)))
        tiled = np.resize(np.roll(quiet, -offset), n)  # room tone, looped to one window
        quiet_wins.append(front_end.windows(tiled)[0])
    feats = voiced_sel + raw_sel + noisy + quiet_wins
    _check_count("voice", len(feats), spec, data)
    source = {
        "dataset": str(data), "modality": "voice", "split": split, "identities": "train",
        "n_speakers": len({s.identity for s in voices.samples}),
        "n_utterances": len(voices.samples), "front_end": front_end.to_dict(),
        "windows": {"speech_voiced": len(voiced_sel), "speech_raw": len(raw_sel),
                    "noisy_speech": len(noisy),
                    "silence_only": len(quiet_wins)},
        "noisy_snr_db": list(NOISY_SNR_DB), "vad": gate.backend,
        "files": sorted(str(s.path.relative_to(reader.root)) for s in voices.samples),
    }
    return VoiceCalibration({"feats": np.stack(feats).astype(np.float32)}, source,
                            [w for _, w in speech_wins])


def _run_onnx(path: Path, feeds: Mapping[str, np.ndarray], batch: int = 64) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    out = [sess.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0]
           for i in range(0, n, batch)]
    return np.concatenate(out)


def head_calibration(
    heads: Mapping[str, Path], face_onnx: Path, voice_onnx: Path,
    face_inputs: np.ndarray, utterance_windows: list[np.ndarray], *,
    faa_inputs_space: str = "student", min_samples: int = DEFAULT_MIN_SAMPLES, seed: int = 0,
) -> dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Calibration arrays for each head present in ``heads`` (name -> ONNX path).

    Face embeddings come from the face calibration crops, voice embeddings are utterance
    embeddings (mean of window embeddings, as on the device). The FAA head sees face/voice
    pairs of different people (the datasets share nobody): its activation ranges, not its
    decisions, are what calibration needs.
    """
    if not utterance_windows:
        raise DatasetError("head calibration: no voiced utterance in the voice calibration data")
    face_emb = _run_onnx(face_onnx, {"face": face_inputs})
    voice_emb = l2_normalise(np.stack([_run_onnx(voice_onnx, {"feats": w}).mean(axis=0)
                                for w in utterance_windows]))
    rng = np.random.default_rng(seed)
    n = max(len(face_emb), len(voice_emb))
    fi = rng.permutation(np.resize(np.arange(len(face_emb)), n))
    vi = rng.permutation(np.resize(np.arange(len(voice_emb)), n))
    base = {"face_student": str(face_onnx), "voice_student": str(voice_onnx),
            "n_face": len(face_emb), "n_voice_utterances": len(voice_emb)}
    out: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
    if "pin_face" in heads:
        out["pin_face"] = ({"face_emb": face_emb}, {**base, "inputs": "face student embeddings"})
    if "pin_voice" in heads:
        out["pin_voice"] = ({"voice_emb": voice_emb},
                            {**base, "inputs": "voice student utterance embeddings"})
    if "faa" in heads:
        f, v = face_emb[fi], voice_emb[vi]
        if faa_inputs_space == "pin":
            for name in ("pin_face", "pin_voice"):
                if name not in heads:
                    raise ModelError(f"faa takes pin embeddings but {name} is not in the bundle")
            f = _run_onnx(heads["pin_face"], {"face_emb": f})
            v = _run_onnx(heads["pin_voice"], {"voice_emb": v})
        out["faa"] = ({"face_emb": f, "voice_emb": v},
                      {**base, "inputs": f"{faa_inputs_space} embeddings, artificial pairs "
                       "(face and voice datasets share no person)"})
    for name, (arrays, _) in out.items():
        count = len(next(iter(arrays.values())))
        if count < min_samples:
            raise DatasetError(f"{name} calibration: {count} samples, need {min_samples}")
    return out


def ensure_set(
    path: Path, expect_inputs: list[str], key: Mapping[str, Any],
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]] | None,
    *, min_samples: int = DEFAULT_MIN_SAMPLES,
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """(arrays, manifest, built_now): reuse ``path`` when its ``source.key`` equals ``key``.

    ``build`` is None when no data was given: then an existing set with another key is still
    refused, and a missing set is an error (never random data).
    """
    path = Path(path)
    if path.is_file():
        manifest = read_manifest(path)
        if manifest.get("source", {}).get("key") == dict(key) or build is None:
            if manifest.get("source", {}).get("key") != dict(key):
                raise ModelError(
                    f"calibration set {path} was built for {manifest.get('source', {}).get('key')}"
                    f", not {dict(key)}; give the data to rebuild it (--data-faces/--data-voices)"
                )
            arrays = load_calibration_set(path, expect_inputs=expect_inputs,
                                          min_samples=min_samples)
            return arrays, manifest, False
    if build is None:
        raise ModelError(
            f"no calibration set {path} and no data to build one from; pass the dataset "
            "(--data-faces/--data-voices) or --calib with a prepared set (random data is never "
            "used for INT8 scales)"
        )
    arrays, source = build()
    save_calibration_set(arrays, path, source={**source, "key": dict(key)})
    loaded = load_calibration_set(path, expect_inputs=expect_inputs, min_samples=min_samples)
    return loaded, read_manifest(path), True
