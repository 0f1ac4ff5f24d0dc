"""Student checkpoint -> FP32 ONNX with the metadata the device needs to use it.

Only the backbone is exported (arcface_torch style): training heads stay in the checkpoint.
Metadata travels inside the ONNX (`metadata_props`, readable by onnxruntime on the device
without the `onnx` package): modality, precision, the front-end settings, the data split and
teacher it was distilled from, so a model file is self-describing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_runtime.errors import ModelError
from export.contract import check_contract, student_contract
from export.onnx_export import export_onnx, parity

DEFAULT_OPSET = 17  # the highest TensorRT 8.5 (JetPack 5) parses; 10.x takes it too
MAX_STUDENT_BYTES = 8 * 1024 * 1024


def _example(modality: str, front_end: dict, batch: int = 2) -> dict[str, torch.Tensor]:
    if modality == "face":
        return {"face": torch.randn(batch, 3, 112, 112)}
    mel = front_end["mel"]["n_mels"]
    return {"feats": torch.randn(batch, front_end["window_frames"], mel)}


def set_metadata(path: Path, meta: dict[str, object]) -> None:
    """Write `edgepin.*` metadata_props (JSON values) into an ONNX file in place."""
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        prop = existing.get(f"edgepin.{key}") or model.metadata_props.add()
        prop.key, prop.value = f"edgepin.{key}", text
    onnx.save(model, str(path))


def export_student(checkpoint: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET,
                   parity_inputs: dict[str, np.ndarray] | None = None) -> dict:
    """Export, check the deployment contract and PyTorch parity; return a summary."""
    from train.distill import load_student

    model, ckpt = load_student(checkpoint)
    modality = ckpt["modality"]
    out = Path(out)
    name = "face" if modality == "face" else "feats"
    example = _example(modality, ckpt["front_end"])
    export_onnx(model, example, out, input_names=[name], output_names=["embedding"],
                dynamic_axes={name: {0: "batch"}, "embedding": {0: "batch"}}, opset=opset)
    set_metadata(out, {
        "modality": modality,
        "precision": "fp32",
        "front_end": ckpt["front_end"],
        "split": ckpt["split"],
        "data_manifest": ckpt["data"]["manifest_hash"],
        "teacher": ckpt["config"].get("teacher", "dlib_resnet_v1" if modality == "face" else "resemblyzer"),
        "epoch": ckpt["epoch"],
    })
    check_contract(out, student_contract(modality, max_opset=opset, max_size_bytes=MAX_STUDENT_BYTES))
    inputs = parity_inputs or {k: v.numpy() for k, v in _example(modality, ckpt["front_end"], 8).items()}
    cos = parity(model, out, inputs)
    if cos < 0.9999:
        raise ModelError(f"{out}: ONNX/PyTorch parity {cos:.6f} < 0.9999")
    return {"onnx": str(out), "modality": modality, "parity_min_cosine": cos,
            "bytes": out.stat().st_size, "opset": opset}


def ship_student(checkpoint: str | Path, models_dir: str | Path, *, evaluation: dict | None = None,
                 opset: int = DEFAULT_OPSET) -> dict:
    """Export a trained student into the deployable `models/` folder and register it.

    The manifest entry records what a model card needs: sha256 (by register_model), the
    experiment config, the data manifest hash and split, parameter count, eval figures.
    """
    from edge_runtime.bundle import register_model
    from train.distill import load_student
    from train.models import count_parameters

    model, ckpt = load_student(checkpoint)
    modality = ckpt["modality"]
    models_dir = Path(models_dir)
    out = models_dir / f"{modality}.onnx"
    summary = export_student(checkpoint, out, opset=opset)
    register_model(
        models_dir, modality, out.name, precision="fp32", modality=modality,
        input="face" if modality == "face" else "feats", output="embedding",
        dim=int(ckpt["config"]["model"]["embedding_dim"]), parameters=count_parameters(model),
        opset=opset, config=ckpt["config"], data=ckpt["data"], split=ckpt["split"],
        front_end=ckpt["front_end"], epoch=ckpt["epoch"], validation=ckpt["metrics"],
        evaluation=evaluation or {}, parity_min_cosine=summary["parity_min_cosine"],
    )
    return summary
