"""PIN heads and FAA scorer -> FP32 ONNX (opset 17), parity-checked, registered in a manifest.

pin_face: `face_emb` (N,128) -> `pin` (N,128); pin_voice: `voice_emb` (N,256) -> `pin`;
faa: `face_emb` (N,128) + `voice_emb` (N,256), both STUDENT embeddings -> `match_prob` (N,).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edge_runtime.bundle import register_model
from edge_runtime.errors import ModelError
from export.contract import DeploymentContract, TensorSpec, check_contract, student_contract
from export.onnx_export import export_onnx, parity
from export.students import DEFAULT_OPSET, set_metadata
from train.pins.models import FaaScorer, PinHeads

MIN_PARITY = 0.9999
MAX_BYTES = 4 * 1024 * 1024


def pin_contract(in_name: str) -> DeploymentContract:
    """What the runtime binds for a PIN head."""
    return DeploymentContract((TensorSpec(in_name, "float32", 2),),
                              (TensorSpec("pin", "float32", 2),),
                              max_size_bytes=MAX_BYTES, max_opset=DEFAULT_OPSET)


def _export_one(model: torch.nn.Module, example: dict[str, torch.Tensor], out: Path,
                output: str, contract: DeploymentContract, meta: dict) -> float:
    names = list(example)
    export_onnx(model, example, out, input_names=names, output_names=[output],
                dynamic_axes={**{n: {0: "batch"} for n in names}, output: {0: "batch"}},
                opset=DEFAULT_OPSET)
    set_metadata(out, meta)
    check_contract(out, contract)
    gen = torch.Generator().manual_seed(0)
    probe = {k: torch.nn.functional.normalize(torch.randn(16, v.shape[1], generator=gen), dim=1)
             for k, v in example.items()}
    cos = parity(model, out, probe)
    if cos < MIN_PARITY:
        raise ModelError(f"{out}: ONNX/PyTorch parity {cos:.6f} < {MIN_PARITY}")
    return cos


def export_heads(heads: PinHeads, out_dir: str | Path, meta: dict, *, register: bool = True
                 ) -> dict[str, dict]:
    """Write pin_face.onnx and pin_voice.onnx into `out_dir` (and its manifest)."""
    out_dir = Path(out_dir)
    heads = heads.eval()
    done = {}
    for name, head, in_name in (("pin_face", heads.face, "face_emb"),
                                ("pin_voice", heads.voice, "voice_emb")):
        path = out_dir / f"{name}.onnx"
        example = {in_name: torch.randn(2, head.in_dim)}
        m = {**meta, "modality": name, "precision": "fp32", "input": in_name, "output": "pin"}
        cos = _export_one(head, example, path, "pin", pin_contract(in_name), m)
        done[name] = {"file": path.name, "parity_min_cosine": cos, "bytes": path.stat().st_size}
        if register:
            register_model(out_dir, name, path.name, **m, parity_min_cosine=cos)
    return done


def export_faa(scorer: FaaScorer, out_dir: str | Path, meta: dict, *, register: bool = True
               ) -> dict:
    """Write faa.onnx (frozen PIN heads + encoder, student embeddings in) into `out_dir`."""
    out_dir = Path(out_dir)
    scorer = scorer.eval()
    path = out_dir / "faa.onnx"
    example = {"face_emb": torch.randn(2, scorer.pins.face.in_dim),
               "voice_emb": torch.randn(2, scorer.pins.voice.in_dim)}
    m = {**meta, "modality": "faa", "precision": "fp32", "inputs_space": "student",
         "output": "match_prob"}
    contract = student_contract("faa", max_opset=DEFAULT_OPSET, max_size_bytes=MAX_BYTES)
    cos = _export_one(scorer, example, path, "match_prob", contract, m)
    if register:
        register_model(out_dir, "faa", path.name, **m, parity_min_cosine=cos)
    return {"file": path.name, "parity_min_cosine": cos, "bytes": path.stat().st_size}
