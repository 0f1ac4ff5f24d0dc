"""`edgepin port-resemblyzer`: the voice teacher (Resemblyzer 0.1.4) as `voice_large.onnx`.

The device has no torch, so the teacher can only run there as an ONNX graph. Its network is
three LSTM layers and a linear layer; the TorchScript exporter writes each layer as the standard
ONNX ``LSTM`` op (what TensorRT's ONNX parser and onnxruntime take; no Loop/Scan control flow,
which the deployment contract refuses). Everything around the network (volume normalisation,
mel front-end, partials, pooling) is numpy in ``edge_runtime/frontend/ge2e.py``.

The file is not committed (like ``face_large.onnx``): it is derived from the weights of the
installed package (``resemblyzer/pretrained.pt``, Apache-2.0), and its manifest entry records the
package version and the weights' hash. Every export is checked against the PyTorch module on
random and real mel inputs before it replaces the file (written atomically).

Cheap to import: torch, onnx and resemblyzer load inside the functions.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic import publish
from edge_runtime.errors import DependencyError, ModelError

# Bump when the export or the front-end changes what a generated file computes.
PORT_VERSION = "1"
FILE = "voice_large.onnx"
ENTRY = "voice_large"
INPUT, OUTPUT = "mels", "embedding"
OPSET = 17  # the students' opset: the highest TensorRT 8.5 (JetPack 5) parses
MAX_ABS_DIFF = 1e-4  # ONNX vs torch on unit-norm embeddings; float32 LSTMs agree to ~1e-6
MAX_BYTES = 8 << 20  # 1.42 M float32 parameters = 5.7 MB
_INSTALL = "pip install --no-deps resemblyzer==0.1.4 (and torch: the train extra)"
FIXTURE_AUDIO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speechocean762"


def source_version() -> str:
    """``resemblyzer@VERSION+sha12`` of the weights: the teacher's own version string
    (``train.teachers.VoiceTeacher``), so embeddings of both key alike."""
    from train.teachers import VoiceTeacher

    return VoiceTeacher.version_string()


def port_version() -> str:
    """``resemblyzer_ge2e_onnx@PORT+sha12``: names what the generated file computes."""
    from edge_runtime.bundle import sha256_file
    from train.teachers import resemblyzer_weights

    return f"resemblyzer_ge2e_onnx@{PORT_VERSION}+{sha256_file(resemblyzer_weights())[:12]}"


def load_encoder() -> Any:
    """Resemblyzer's ``VoiceEncoder`` on the CPU, eval mode (torch; DependencyError if absent)."""
    from train.teachers import resemblyzer_weights

    resemblyzer_weights()
    try:
        import torch  # noqa: F401
        from resemblyzer import VoiceEncoder
    except ImportError as exc:
        raise DependencyError(f"the voice_large port needs resemblyzer and torch: {_INSTALL}: "
                              f"{exc}") from exc
    return VoiceEncoder(device="cpu", verbose=False).eval()


def real_mels(audio: Sequence[Path]) -> np.ndarray:
    """The (P, 160, 40) partials of real recordings, as the device would feed them."""
    from edge_runtime.frontend.audio import TARGET_SR, load_audio
    from edge_runtime.frontend.ge2e import ge2e_partials

    if not audio:
        return np.zeros((0, 160, 40), np.float32)
    return np.concatenate([ge2e_partials(load_audio(p, TARGET_SR)) for p in audio])


def default_parity_audio(n: int = 4) -> list[Path]:
    """A few bundled real clips (tests/fixtures) when this is a checkout; none otherwise."""
    return sorted(FIXTURE_AUDIO.glob("*/*.flac"))[:n]


def onnx_op_types(path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph has (the LSTM check and the report)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def parity(encoder: Any, path: Path, mels: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |ONNX - torch| of the embeddings for each named input batch (onnxruntime CPU)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = {}
    for name, x in mels.items():
        with torch.no_grad():
            ref = encoder(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT], {INPUT: x})[0]
        if got.shape != ref.shape:
            raise ModelError(f"{path}: ONNX gives {got.shape} for {name} {x.shape}, torch "
                             f"{ref.shape}")
        out[name] = float(np.abs(got.astype(np.float64) - ref).max())
    return out


def parity_inputs(audio: Sequence[Path], seed: int = 0) -> dict[str, np.ndarray]:
    """Random mel power (batch 1 and 5: the batch axis is dynamic) and real partials."""
    rng = np.random.default_rng(seed)
    # mel power of speech spans ~1e-6..1e2; exponentials of log-uniform scale cover it
    scale = 10.0 ** rng.uniform(-4, 2, size=(5, 1, 40))
    rand = (rng.exponential(size=(5, 160, 40)) * scale).astype(np.float32)
    out = {"random batch 1": rand[:1], "random batch 5": rand}
    real = real_mels(audio)
    if real.size:
        out[f"real ({len(audio)} clips, {real.shape[0]} partials)"] = real
    return out


def export_voice_large(out: str | Path, parity_audio: Sequence[Path] = (),
                       opset: int = OPSET) -> dict[str, Any]:
    """Export the encoder to ``out`` (atomically) after the contract, LSTM and parity checks;
    return what was checked. Nothing is replaced when a check fails."""
    import torch

    from edge_runtime.frontend.ge2e import GE2E_MELS, PARTIAL_FRAMES, front_end_dict
    from export.contract import DeploymentContract, TensorSpec, check_contract
    from export.onnx_export import export_onnx
    from export.students import set_metadata

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder()
    fd, name = tempfile.mkstemp(dir=out.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with warnings.catch_warnings():
            # the exporter warns about LSTMs exported at batch != 1 in general; this graph
            # derives its zero initial states from the input's shape, and the parity check
            # below runs batches of 1, 5 and the real partials to prove the axis is dynamic
            warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch")
            export_onnx(encoder, {INPUT: torch.rand(2, PARTIAL_FRAMES, GE2E_MELS)}, tmp,
                        input_names=[INPUT], output_names=[OUTPUT],
                        dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset=opset)
        set_metadata(tmp, {
            "resemblyzer_port": port_version(), "teacher": source_version(),
            "modality": "voice", "tier": "large", "precision": "fp32", "dim": 256,
            "front_end": front_end_dict(),
            "source": "resemblyzer/pretrained.pt (Resemblyzer, Apache-2.0)"})
        check_contract(tmp, DeploymentContract(
            (TensorSpec(INPUT, "float32", 3),), (TensorSpec(OUTPUT, "float32", 2),),
            max_size_bytes=MAX_BYTES, max_opset=opset))
        ops = onnx_op_types(tmp)
        if ops.get("LSTM") != 3:
            raise ModelError(f"{out}: expected 3 standard ONNX LSTM nodes, the graph has {ops}")
        inputs = parity_inputs(parity_audio)
        diffs = parity(encoder, tmp, inputs)
        worst = max(diffs.values())
        if not worst <= MAX_ABS_DIFF:
            raise ModelError(f"{out}: ONNX vs torch max |diff| {worst:.3g} > {MAX_ABS_DIFF:g} "
                             f"({diffs}); file not written")
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(out), "op_types": ops, "parity_max_abs_diff": diffs,
            "parity_audio": [str(p) for p in parity_audio]}


def port(models: str | Path, parity_audio: Sequence[Path] | None = None) -> dict[str, Any]:
    """Write ``voice_large.onnx`` into a models folder and register it in the manifest."""
    from edge_runtime.bundle import register_model
    from edge_runtime.frontend.ge2e import front_end_dict

    models = Path(models)
    audio = default_parity_audio() if parity_audio is None else list(parity_audio)
    report = export_voice_large(models / FILE, audio)
    entry = register_model(
        models, ENTRY, FILE, resemblyzer_port=port_version(), teacher=source_version(),
        source="resemblyzer/pretrained.pt (Resemblyzer 0.1.4, Apache-2.0)",
        modality="voice", dim=256, precision="fp32", tier="large", opset=OPSET,
        input=f"{INPUT} (N,160,40) float32 mel power (edge_runtime/frontend/ge2e.py)",
        output=f"{OUTPUT} (N,256), unit norm (Resemblyzer's partial embeddings)",
        front_end=front_end_dict(),
        parity_max_abs_diff=max(report["parity_max_abs_diff"].values()))
    return {**report, "sha256": entry.sha256, "bytes": (models / FILE).stat().st_size}


def _port(args: argparse.Namespace) -> int:
    audio = [Path(p) for p in args.parity_audio] if args.parity_audio is not None else None
    print(json.dumps(port(args.models, audio), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "port-resemblyzer", help="write the voice teacher (Resemblyzer's LSTM encoder) as "
                                 "voice_large.onnx into a models folder (needs torch)")
    p.add_argument("--models", default="models", help="models folder (its manifest is updated)")
    p.add_argument("--parity-audio", nargs="*", metavar="FILE",
                   help="recordings whose mel partials the ONNX/torch check also runs on "
                        "(default: the bundled tests/fixtures speechocean762 clips, if present)")
    p.set_defaults(handler=_port)
