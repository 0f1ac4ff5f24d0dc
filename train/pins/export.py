"""PIN heads and FAA scorer -> FP32 ONNX (opset 17), parity-checked, registered in a manifest.

pin_face: `face_emb` (N,128) -> `pin` (N,128); pin_voice: `voice_emb` (N,256) -> `pin`;
faa: `face_emb` (N,128) + `voice_emb` (N,256), both STUDENT embeddings -> `match_prob` (N,).
Full mode also exports its two backbones as face.onnx / voice.onnx with the students'
contract, so the runtime and `edgepin eval crossmodal` use them like distilled students.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edge_runtime.bundle import register_model
from edge_runtime.errors import ModelError
from export.contract import DeploymentContract, TensorSpec, check_contract, student_contract
from export.onnx_export import export_onnx, parity
from export.students import DEFAULT_OPSET, MAX_STUDENT_BYTES, set_metadata
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


def head_suffix(face_tier: str) -> str:
    """Names of the heads of a face tier: pin_face / pin_face_large, faa / faa_large."""
    return "" if face_tier == "student" else f"_{face_tier}"


def export_heads(heads: PinHeads, out_dir: str | Path, meta: dict, *, register: bool = True,
                 face_tier: str = "student") -> dict[str, dict]:
    """Write pin_face.onnx and pin_voice.onnx (``_large`` for the large face tier's heads)
    into `out_dir` (and its manifest)."""
    out_dir = Path(out_dir)
    heads = heads.eval()
    done = {}
    sfx = head_suffix(face_tier)
    for name, head, in_name in ((f"pin_face{sfx}", heads.face, "face_emb"),
                                (f"pin_voice{sfx}", heads.voice, "voice_emb")):
        path = out_dir / f"{name}.onnx"
        example = {in_name: torch.randn(2, head.in_dim)}
        m = {**meta, "modality": name.removesuffix(sfx), "precision": "fp32", "input": in_name,
             "output": "pin", "face_tier": face_tier}
        cos = _export_one(head, example, path, "pin", pin_contract(in_name), m)
        done[name] = {"file": path.name, "parity_min_cosine": cos, "bytes": path.stat().st_size}
        if register:
            register_model(out_dir, name, path.name, **m, parity_min_cosine=cos)
    return done


def export_faa(scorer: FaaScorer, out_dir: str | Path, meta: dict, *, register: bool = True,
               face_tier: str = "student") -> dict:
    """Write faa.onnx (frozen PIN heads + encoder, student embeddings in; ``faa_large`` on
    the large face tier's embeddings) into `out_dir`."""
    out_dir = Path(out_dir)
    scorer = scorer.eval()
    name = f"faa{head_suffix(face_tier)}"
    path = out_dir / f"{name}.onnx"
    example = {"face_emb": torch.randn(2, scorer.pins.face.in_dim),
               "voice_emb": torch.randn(2, scorer.pins.voice.in_dim)}
    m = {**meta, "modality": "faa", "precision": "fp32", "inputs_space": "student",
         "output": "match_prob", "face_tier": face_tier}
    contract = student_contract("faa", max_opset=DEFAULT_OPSET, max_size_bytes=MAX_BYTES)
    cos = _export_one(scorer, example, path, "match_prob", contract, m)
    if register:
        register_model(out_dir, name, path.name, **m, parity_min_cosine=cos)
    return {"file": path.name, "parity_min_cosine": cos, "bytes": path.stat().st_size}


def export_backbone(net: torch.nn.Module, modality: str, cfg: dict, out_dir: str | Path,
                    meta: dict) -> dict:
    """A full-mode backbone -> `face.onnx` / `voice.onnx` (student contract), registered."""
    from train.models import count_parameters
    from train.tasks import voice_front_end

    out_dir = Path(out_dir)
    net = net.eval()
    path = out_dir / f"{modality}.onnx"
    if modality == "face":
        name, front_end = "face", {"face_size": 112}
        example = {"face": torch.randn(2, 3, 112, 112)}
    else:
        fe = voice_front_end(cfg)
        name, front_end = "feats", fe.to_dict()
        example = {"feats": torch.randn(2, fe.window_frames, fe.mel.n_mels)}
    export_onnx(net, example, path, input_names=[name], output_names=["embedding"],
                dynamic_axes={name: {0: "batch"}, "embedding": {0: "batch"}},
                opset=DEFAULT_OPSET)
    m = {"modality": modality, "precision": "fp32", "front_end": front_end,
         "split": meta.get("splits", {}), "teacher": "none (Learnable PINs full mode)",
         "epoch": meta.get("epoch")}
    set_metadata(path, m)
    check_contract(path, student_contract(modality, max_opset=DEFAULT_OPSET,
                                          max_size_bytes=MAX_STUDENT_BYTES))
    gen = torch.Generator().manual_seed(0)
    probe = {k: torch.randn((8, *v.shape[1:]), generator=gen).numpy() for k, v in example.items()}
    cos = parity(net, path, probe)
    if cos < MIN_PARITY:
        raise ModelError(f"{path}: ONNX/PyTorch parity {cos:.6f} < {MIN_PARITY}")
    dim = int(cfg["model"][modality]["embedding_dim"])
    register_model(out_dir, modality, path.name, precision="fp32", modality=modality,
                   input=name, output="embedding", dim=dim, parameters=count_parameters(net),
                   opset=DEFAULT_OPSET, config=meta["config"], split=m["split"],
                   front_end=front_end, epoch=meta.get("epoch"), parity_min_cosine=cos)
    return {"file": path.name, "parity_min_cosine": cos, "bytes": path.stat().st_size}
