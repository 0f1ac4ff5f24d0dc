"""`edgepin export`: FP32 students -> verified INT8 QDQ graphs -> TensorRT engines or scripts.

Stages, per student (face, voice), each of which stops the export on failure:
  1. FP32 ONNX: from the models folder (hash-checked through its manifest) or exported from a
     checkpoint; 2. deployment-contract check for the target's opset; 3. calibration set
     (``calibration.build_sets``: real training-identity data, reused when its key matches);
  4. QDQ INT8 (``export.quantize``); 5. TensorRT lint (``export.qdq_lint``); 6. accuracy gate
     on the HELD-OUT identities: per-sample cosine FP32 vs INT8 (every held-out face / voice
     window) and EER / TAR@FAR from ``train.evaluate.evaluate`` on both ONNX files, which sees
     the same samples and the same pairs; 7. if the gate fails, a per-op-type sensitivity
     report, and the INT8 file is kept as ``*.int8.rejected.onnx``, never registered.
Then the TensorRT stage (``export.device_build``), sizes, and a JSON report. A passing INT8
model is registered as ``<modality>_int8`` in the output folder's manifest.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.build_sets import CalibSpec, ensure_set
from edge_runtime.bundle import load_manifest, sha256_file
from edge_runtime.errors import ModelError
from export.quantize import Target, get_target
from export.stages import ExportOptions, Stages, onnx_metadata

MAX_STUDENT_BYTES = 8 * 1024 * 1024
IMPOSTORS = {"face": 20, "voice": 200}  # per identity, as in the distillation configs
SENSITIVITY_SAMPLES = 256
CALIB_BATCH = 16  # export.quantize's calibration batch


def _opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def resolve_fp32(models: Path, out: Path, modality: str, target: Target) -> tuple[Path, dict]:
    """The FP32 student: manifest entry, bare ONNX, or exported from ``<modality>.pt``."""
    models, out = Path(models), Path(out)
    onnx_path, info = None, {}
    if (models / "manifest.json").is_file():
        entries = load_manifest(models)
        if modality in entries:
            onnx_path = entries[modality].verified_path()
            info = {"from": "manifest", "meta": entries[modality].meta}
    if onnx_path is None and (models / f"{modality}.onnx").is_file():
        onnx_path, info = models / f"{modality}.onnx", {"from": "onnx (no manifest entry)"}
    ckpt = models / f"{modality}.pt"
    if ckpt.is_file() and (onnx_path is None or _opset(onnx_path) > target.max_opset):
        from export.students import export_student

        dst = out / f"{modality}.onnx"
        summary = export_student(ckpt, dst, opset=target.export_opset)
        return dst, {"from": f"checkpoint {ckpt}", "export": summary}
    if onnx_path is None:
        raise ModelError(f"no {modality} student in {models}: expected {modality}.onnx "
                         f"(registered in manifest.json) or a {modality}.pt checkpoint")
    return onnx_path, info


def _sessions(fp32: Path, int8: Path, threads: int) -> tuple[Any, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    make = lambda p: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])  # noqa: E731
    return make(fp32), make(int8)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def cosine_stats(cos: np.ndarray) -> dict[str, float]:
    """The gate's statistics, in ``export.accuracy.embedding_agreement``'s field names."""
    return {"n": int(len(cos)), "cos_min": float(cos.min()),
            "cos_p1": float(np.percentile(cos, 1)), "cos_median": float(np.median(cos))}


def agreement(fp32: Path, int8: Path, batches: Sequence[np.ndarray], input_name: str,
              threads: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Per-sample cosine FP32 vs INT8 over ``batches`` (kept small: a batch of 2000 faces
    would need GBs of activations), plus both outputs per batch."""
    a, b = _sessions(fp32, int8, threads)
    outs_a, outs_b, cos = [], [], []
    for x in batches:
        ya, yb = a.run(None, {input_name: x})[0], b.run(None, {input_name: x})[0]
        outs_a.append(ya)
        outs_b.append(yb)
        cos.append(np.sum(_unit(ya) * _unit(yb), axis=1))
    return np.concatenate(cos), outs_a, outs_b


def heldout_inputs(modality: str, data: Path, split: dict, cache_dir: Path,
                   front_end: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Model inputs of the held-out (test) identities, batched: one array per face chunk or
    one array of windows per utterance."""
    from edge_runtime.frontend.features import face_tensor
    from train.datasets import FaceFolder, SpeechFolder, holdout_split
    from train.prepare import prepare_faces, prepare_voices

    reader = FaceFolder(data) if modality == "face" else SpeechFolder(data)
    test = set(holdout_split(reader.identities(), split["test_fraction"],
                             split["val_fraction"], split["seed"])["test"])
    samples = [s for s in reader.samples if s.identity in test]
    if modality == "face":
        crops = prepare_faces(samples, cache_dir, with_teacher=False).crops
        batches = [face_tensor(list(crops[i : i + 64])) for i in range(0, len(crops), 64)]
        return batches, {"identities": len(test), "samples": int(len(crops))}
    voices = prepare_voices(samples, cache_dir, front_end, with_teacher=False)
    batches = [front_end.windows(w) for w in voices.audio]
    return batches, {"identities": len(test), "utterances": len(batches),
                     "windows": int(sum(len(b) for b in batches))}


def for_model(items: Sequence[str], modality: str) -> list[str]:
    """The entries of ``items`` that apply to ``modality``: plain ones apply to every model,
    ``face:X`` / ``voice:X`` to that model only."""
    out = []
    for item in items:
        head, sep, rest = item.partition(":")
        if sep and head in ("face", "voice"):
            if head == modality:
                out.append(rest)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def quantized_op_types(qdq: Path) -> list[str]:
    """Op types that compute on a DequantizeLinear output in a QDQ graph: the candidates to
    exclude (Shape/Size only read the tensor's dimensions)."""
    graph = onnx.load(str(qdq)).graph
    dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    skip = {"QuantizeLinear", "DequantizeLinear", "Shape", "Size"}
    return sorted({n.op_type for n in graph.node
                   if n.op_type not in skip and any(i in dq for i in n.input)})


def _eval_summary(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("eer", "auc", "n_genuine", "n_impostor", "tar@far=0.01", "tar@far=0.001",
            "ms_per_sample", "split", "data_manifest")
    return {k: r[k] for k in keep if k in r}


def _calibration(modality: str, fp32: Path, meta: dict, opts: ExportOptions, split: dict,
                 calib_dir: Path, data: Path | None, stash: dict) -> tuple[dict, dict, bool]:
    from calibration import build_sets
    from edge_runtime.frontend.features import VoiceFrontEnd

    spec = CalibSpec(n=opts.n_calib, min_samples=opts.min_calib, split=split)
    key: dict[str, Any] = {"recipe": build_sets.RECIPE, "modality": modality, "split": split,
                           "n": opts.n_calib,
                           "data": str(Path(data).resolve()) if data else None}
    front_end = None
    if modality == "voice":
        front_end = VoiceFrontEnd.from_dict(meta["front_end"]) if "front_end" in meta \
            else VoiceFrontEnd()
        key["front_end"] = front_end.to_dict()

    def build() -> tuple[dict, dict]:
        if modality == "face":
            return build_sets.face_calibration(data, opts.cache_dir, spec)
        vc = build_sets.voice_calibration(data, opts.cache_dir, front_end, spec)
        stash["utterance_windows"] = vc.utterance_windows
        return vc.arrays, vc.source

    name = "face" if modality == "face" else "feats"
    arrays, manifest, built = ensure_set(calib_dir / f"{modality}_calib.npz", [name], key,
                                         build if data is not None else None,
                                         min_samples=opts.min_calib)
    stash[modality] = arrays[name]
    return arrays, manifest, built


def export_student_int8(modality: str, opts: ExportOptions, target: Target, st: Stages,
                        stash: dict) -> dict[str, Any]:
    """Stages 1-7 for one student; returns its part of the report."""
    from export.accuracy import gate, sensitivity_report
    from export.contract import check_contract, student_contract
    from export.qdq_lint import lint_qdq, require_clean
    from export.quantize import quantize_qdq
    from export.students import set_metadata
    from train.evaluate import evaluate

    out = Path(opts.out)
    data = opts.data_faces if modality == "face" else opts.data_voices
    rep: dict[str, Any] = {}
    with st.stage(f"{modality}: FP32 ONNX") as s:
        fp32, rep["fp32_source"] = resolve_fp32(opts.models, out, modality, target)
        if fp32.resolve().parent != out.resolve():
            shutil.copy2(fp32, out / f"{modality}.onnx")
            fp32 = out / f"{modality}.onnx"
        meta = onnx_metadata(fp32)
        rep["fp32"] = {"path": str(fp32), "sha256": sha256_file(fp32),
                       "bytes": fp32.stat().st_size, "opset": _opset(fp32)}
        s["done"] = f"{fp32} ({fp32.stat().st_size / 1e6:.2f} MB)"
    with st.stage(f"{modality}: deployment contract (opset <= {target.max_opset})"):
        check_contract(fp32, student_contract(modality, max_opset=target.max_opset,
                                              max_size_bytes=MAX_STUDENT_BYTES))
        rep["contract"] = "ok"
    split = dict(opts.split or meta.get("split") or {"test_fraction": 0.2, "val_fraction": 0.1,
                                                     "seed": 0})
    split = {k: split[k] for k in ("test_fraction", "val_fraction", "seed")}
    rep["split"] = split
    calib_dir = Path(opts.calib) if opts.calib else Path(opts.cache_dir) / "calibration"
    with st.stage(f"{modality}: calibration set") as s:
        arrays, manifest, built = _calibration(modality, fp32, meta, opts, split, calib_dir,
                                               data, stash)
        src = manifest["source"]
        rep["calibration"] = {"path": str(calib_dir / f"{modality}_calib.npz"),
                              "sha256": manifest["sha256"], "n": manifest["n_samples"],
                              "built_now": built,
                              **{k: v for k, v in src.items() if k not in ("files", "key")}}
        s["done"] = f"{manifest['n_samples']} samples ({'built' if built else 'reused'})"
    if data is None:
        raise ModelError(f"the accuracy gate needs held-out real {modality} data: pass "
                         f"--data-{'faces' if modality == 'face' else 'voices'} DIR")
    method = for_model(opts.calibrate_method, modality)[-1]
    if method != "minmax":  # ORT's histogram collectors need equal batches
        n = len(arrays[next(iter(arrays))]) // CALIB_BATCH * CALIB_BATCH
        arrays = {k: v[:n] for k, v in arrays.items()}
    exclude, floats = for_model(opts.exclude, modality), for_model(opts.keep_float, modality)
    rep["quantization"] = {"excluded_op_types": exclude, "keep_float": floats,
                           "calibrate_method": method}
    candidate = out / f"{modality}.int8.candidate.onnx"
    with st.stage(f"{modality}: INT8 QDQ ({method}, target {target.name})"):
        quantize_qdq(fp32, arrays, candidate, target=target.name, exclude_op_types=exclude,
                     calibrate_method=method, lint=False)
        if floats:
            from export.mixed_precision import keep_float

            rep["float_nodes"] = keep_float(candidate, floats)
    with st.stage(f"{modality}: QDQ lint") as s:
        lint = lint_qdq(candidate, max_opset=target.max_opset, excluded_op_types=exclude)
        rep["lint"] = lint.to_dict()
        s["done"] = f"{lint.n_quantize} Q / {lint.n_dequantize} DQ, {len(lint.warnings)} warnings"
        require_clean(lint)
    set_metadata(candidate, {**meta, "precision": "int8-qdq", "target": target.name,
                             "calibration_sha256": manifest["sha256"],
                             "fp32_sha256": rep["fp32"]["sha256"],
                             "quantization": {"calibrate_method": method,
                                              "excluded_op_types": list(exclude),
                                              "float_nodes": rep.get("float_nodes", [])}})
    with st.stage(f"{modality}: accuracy gate on held-out identities") as s:
        front_end = None
        if modality == "voice":
            from edge_runtime.frontend.features import VoiceFrontEnd
            front_end = VoiceFrontEnd.from_dict(meta.get("front_end") or VoiceFrontEnd().to_dict())
        batches, rep["heldout"] = heldout_inputs(modality, data, split, opts.cache_dir, front_end)
        name = "face" if modality == "face" else "feats"
        measured = candidate
        if target.uses_tensorrt:  # TensorRT's arithmetic, not this CPU's int8 kernels
            from export.qdq_reference import reference_graph

            measured = reference_graph(candidate, out / f"{modality}.int8.reference.onnx")
            cpu_cos, _, _ = agreement(fp32, candidate, batches, name, opts.threads)
            rep["agreement_ort_cpu_kernels"] = cosine_stats(cpu_cos)
        rep["gate_measures"] = ("QDQ arithmetic (Q/DQ executed exactly, float ops; as TensorRT)"
                                if target.uses_tensorrt else "onnxruntime CPU int8 kernels")
        cos, ya, yb = agreement(fp32, measured, batches, name, opts.threads)
        rep["agreement"] = cosine_stats(cos)
        if modality == "voice":  # what the device compares: the utterance embedding
            ua = _unit(np.stack([y.mean(axis=0) for y in ya]))
            ub = _unit(np.stack([y.mean(axis=0) for y in yb]))
            rep["agreement_utterance"] = cosine_stats(np.sum(ua * ub, axis=1))
        evals = {}
        for label, path in (("fp32", fp32), ("int8", measured)):
            evals[label] = _eval_summary(evaluate(
                modality, str(path), data, split="test", split_cfg=split,
                max_impostor_per_identity=IMPOSTORS[modality], cache_dir=opts.cache_dir,
                threads=opts.threads, timing_samples=10))
        rep["eval"] = evals
        result = gate(rep["agreement"], evals["fp32"]["eer"], evals["int8"]["eer"],
                      min_p1=opts.min_p1, max_eer_delta_pt=opts.max_eer_delta_pt)
        rep["gate"] = {"ok": result.ok, "failures": result.failures, **result.measured}
        s["done"] = (f"cos p1 {rep['agreement']['cos_p1']:.4f}, EER {evals['fp32']['eer']:.2%} "
                     f"-> {evals['int8']['eer']:.2%}")
        if not result.ok:
            s["failed"] = "; ".join(result.failures)
            s["done"] += f" ({s['failed']})"
    if not result.ok:
        with st.stage(f"{modality}: sensitivity report (one op type at a time)"):
            x = np.concatenate(batches)[:SENSITIVITY_SAMPLES]
            rows = sensitivity_report(fp32, arrays, {name: x}, quantized_op_types(candidate),
                                      target=target.name)
            rep["sensitivity"] = [r for r in rows if r["n_quantized"] > 0]
            rep["sensitivity_note"] = "measured with onnxruntime's CPU int8 kernels"
            from export.mixed_precision import layer_errors

            rep["layer_errors"] = layer_errors(fp32, candidate, {name: x[:64]}, run=measured)
        (out / f"{modality}.int8.reference.onnx").unlink(missing_ok=True)
        rejected = out / f"{modality}.int8.rejected.onnx"
        candidate.replace(rejected)
        rep["int8"] = {"path": str(rejected), "registered": False}
        return rep
    (out / f"{modality}.int8.reference.onnx").unlink(missing_ok=True)
    # a file rejected by an earlier run would otherwise sit next to the one that passed
    (out / f"{modality}.int8.rejected.onnx").unlink(missing_ok=True)
    final = out / f"{modality}.int8.onnx"
    candidate.replace(final)
    rep["int8"] = {"path": str(final), "sha256": sha256_file(final),
                   "bytes": final.stat().st_size, "registered": True}
    return rep


def run_export(opts: ExportOptions) -> dict[str, Any]:
    """Run every stage; the report is also written to ``<out>/export_report.json``."""
    import onnxruntime

    from export.pipeline_bundle import head_sets, register_outputs, sizes

    target = get_target(opts.target)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "target": {"name": target.name, "devices": target.devices, "jetpack": target.jetpack,
                   "tensorrt": target.tensorrt, "max_opset": target.max_opset},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "options": {"models": str(opts.models), "out": str(out), "n_calib": opts.n_calib,
                    "min_calib": opts.min_calib, "exclude": list(opts.exclude),
                    "calibrate_method": list(opts.calibrate_method), "min_p1": opts.min_p1,
                    "keep_float": list(opts.keep_float),
                    "max_eer_delta_pt": opts.max_eer_delta_pt},
        "models": {},
    }
    stash: dict[str, Any] = {}
    st = Stages(opts.quiet)
    for modality in opts.modalities:
        report["models"][modality] = export_student_int8(modality, opts, target, st, stash)
    report["heads"] = head_sets(opts, report, stash, st)
    passed = {m: r for m, r in report["models"].items() if r["int8"]["registered"]}
    with st.stage("TensorRT") as s:
        students = {m: {"fp32": r["fp32"]["path"], "int8": r["int8"]["path"],
                        "sample_shape": _sample_shape(Path(r["fp32"]["path"]))}
                    for m, r in passed.items()}
        report["tensorrt"] = (tensorrt_for(target, students, out, opts.dla) if students
                              else {"note": "no INT8 model passed the gate: no engines"})
        s["done"] = "see below" if report["tensorrt"].get("available") is False \
            else report["tensorrt"].get("note", "")
    register_outputs(out, report, target)
    report["sizes"] = sizes(out, report)
    report["ok"] = all(r["gate"]["ok"] for r in report["models"].values())
    (out / "export_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _sample_shape(path: Path) -> tuple[int, ...]:
    """Per-sample input shape (batch axis dropped); every axis but batch must be static."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") for d in dims):
        raise ModelError(f"{path}: input {graph.input[0].name} has a dynamic non-batch axis")
    return tuple(int(d.dim_value) for d in dims)


def tensorrt_for(target: Target, students: dict, out: Path, dla: bool) -> dict[str, Any]:
    from export.device_build import tensorrt_stage

    return tensorrt_stage(target, students, out, dla=dla)
