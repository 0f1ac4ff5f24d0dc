"""PyTorch -> ONNX export with the checks that make the file safe to hand to a device.

Uses the TorchScript exporter (``dynamo=False``): it honours ``dynamic_axes`` directly, needs
no onnxscript, and its opset-13..17 graphs are what TensorRT 8.2/8.5 parsers on JetPack 4/5
were tested against. Every export is checked (onnx.checker), shape-inferred, and compared
against PyTorch with onnxruntime (``parity``) before anything downstream trusts it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_runtime.errors import ModelError


def export_onnx(
    model: torch.nn.Module,
    example: Mapping[str, torch.Tensor],
    out: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    opset: int,
) -> Path:
    """Export ``model`` in eval mode with constant folding; check and shape-infer the result.

    ``example`` maps each ONNX input name to an example tensor (the batch size used here is
    irrelevant when axis 0 is dynamic). The model's training flag is restored afterwards.
    """
    out = Path(out)
    if set(example) != set(input_names):
        raise ModelError(
            f"export to {out}: example inputs {sorted(example)} do not match "
            f"input_names {list(input_names)}"
        )
    args = tuple(example[name] for name in input_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter is chosen deliberately (module docstring); silence its notice.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                args,
                str(out),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
                opset_version=opset,
                do_constant_folding=True,
                export_params=True,
                training=torch.onnx.TrainingMode.EVAL,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        raise ModelError(f"ONNX export to {out} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    return check_and_infer(out, input_names=input_names, output_names=output_names)


def check_and_infer(
    path: Path, *, input_names: Sequence[str], output_names: Sequence[str]
) -> Path:
    """onnx.checker + strict shape inference; rewrites ``path`` with the inferred shapes."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - checker/inference raise several types
        raise ModelError(f"exported ONNX {path} is invalid: {exc}") from exc
    graph_inputs = [i.name for i in model.graph.input]
    graph_outputs = [o.name for o in model.graph.output]
    if graph_inputs != list(input_names) or graph_outputs != list(output_names):
        # The TorchScript exporter silently drops inputs the forward pass never reads.
        raise ModelError(
            f"exported ONNX {path} has inputs {graph_inputs} / outputs {graph_outputs}, "
            f"expected {list(input_names)} / {list(output_names)} (an unused input is dropped)"
        )
    onnx.save(model, str(path))
    return path


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine; a scalar-per-sample output is compared as one vector over the batch."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape[1] == 1:
        a, b = a.T, b.T
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    return np.where(both_zero, 1.0, num / np.maximum(den, 1e-30))


def parity(
    model: torch.nn.Module,
    onnx_path: Path,
    inputs: Mapping[str, np.ndarray | torch.Tensor],
) -> float:
    """Minimum cosine similarity between PyTorch and onnxruntime over all outputs and samples."""
    import onnxruntime as ort

    feeds = {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in inputs.items()
    }
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if set(names) != set(feeds):
        raise ModelError(f"parity on {onnx_path}: inputs {sorted(feeds)} but graph wants {names}")
    ort_out = sess.run(None, feeds)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch_out = model(*[torch.from_numpy(feeds[n]) for n in names])
    finally:
        model.train(was_training)
    if isinstance(torch_out, torch.Tensor):
        torch_out = (torch_out,)
    if len(torch_out) != len(ort_out):
        raise ModelError(
            f"parity on {onnx_path}: PyTorch gives {len(torch_out)} outputs, ONNX {len(ort_out)}"
        )
    worst = 1.0
    for t, o in zip(torch_out, ort_out, strict=True):
        worst = min(worst, float(_rowwise_cosine(t.numpy(), o).min()))
    return worst
