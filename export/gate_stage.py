"""Stages 4-7 of `edgepin export` for one student and one recipe, and the recipe search.

``attempt`` quantizes the FP32 student with a recipe (``export.recipes``), lints it where the
target runs TensorRT, and gates it on the held-out identities; ``search`` repeats attempts,
keeping in float the op types the sensitivity report names (worst first) and then trying the
other calibration methods, until one passes. Split from ``export.pipeline`` (which re-exports
the measuring helpers the benchmarks use) so that each file stays one concern.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.quantize import CALIBRATION_METHODS, Target, tensorrt_form
from export.recipes import Recipe
from export.stages import ExportOptions, Stages, data_kind, input_name

IMPOSTORS = {"face": 20, "voice": 200}  # per identity, as in the distillation configs
SENSITIVITY_SAMPLES = 256
CALIB_BATCH = 16  # export.quantize's calibration batch


def _sessions(fp32: Path, int8: Path, threads: int) -> tuple[Any, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    make = lambda p: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])  # noqa: E731
    return make(fp32), make(int8)


def unit(x: np.ndarray) -> np.ndarray:
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
        cos.append(np.sum(unit(ya) * unit(yb), axis=1))
    return np.concatenate(cos), outs_a, outs_b


def latency_ratio(fp32: Path, int8: Path, batches: Sequence[np.ndarray], input_name: str,
                  threads: int, rounds: int = 60) -> dict[str, Any]:
    """Median ms per sample at batch 1, FP32 and INT8 run interleaved (load from other
    processes hits both alike), and their ratio: what ``--precision auto`` decides on."""
    import time

    import onnxruntime as ort

    def session(path: Path) -> Any:
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])

    sessions = {"fp32": session(fp32), "int8": session(int8)}
    samples = np.concatenate(list(batches))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(rounds + 5):
        x = {input_name: samples[i % len(samples)][None]}
        for k, sess in sessions.items():
            t = time.perf_counter()
            sess.run(None, x)
            if i >= 5:
                times[k].append((time.perf_counter() - t) * 1000)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"fp32_ms": med["fp32"], "int8_ms": med["int8"], "ratio": med["int8"] / med["fp32"],
            "rounds": rounds, "threads": threads, "batch": 1}


def heldout_inputs(modality: str, data: Path, split: dict, cache_dir: Path,
                   front_end: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Model inputs of the held-out (test) identities, batched: one array per face chunk or
    one array of windows per utterance. ``front_end``: a face model's ``FaceInput`` (None:
    the students' crop) or the voice front-end."""
    from edge_runtime.frontend.features import STUDENT_FACE_INPUT
    from train.datasets import FaceFolder, SpeechFolder, holdout_split
    from train.prepare import prepare_faces, prepare_voices

    face = data_kind(modality) == "face"
    reader = FaceFolder(data) if face else SpeechFolder(data)
    test = set(holdout_split(reader.identities(), split["test_fraction"],
                             split["val_fraction"], split["seed"])["test"])
    samples = [s for s in reader.samples if s.identity in test]
    if face:
        face_input = front_end or STUDENT_FACE_INPUT
        crops = prepare_faces(samples, cache_dir, with_teacher=False, face_input=face_input).crops
        batches = [face_input.tensor(list(crops[i : i + 64])) for i in range(0, len(crops), 64)]
        return batches, {"identities": len(test), "samples": int(len(crops))}
    voices = prepare_voices(samples, cache_dir, front_end, with_teacher=False)
    batches = [front_end.windows(w) for w in voices.audio]
    return batches, {"identities": len(test), "utterances": len(batches),
                     "windows": int(sum(len(b) for b in batches))}


def float_op_type(op_type: str) -> str:
    """The float op a QOperator node replaces (QLinearConv -> Conv, QGemm -> Gemm)."""
    if op_type.startswith("QLinear"):
        return op_type[len("QLinear"):]
    if op_type == "QGemm":
        return "Gemm"
    return op_type


def quantized_op_types(qdq: Path) -> list[str]:
    """Op types that run quantized: in QDQ form those computing on a DequantizeLinear output,
    in QOperator form the QLinear* nodes (as their float op type): the candidates to exclude
    (Shape/Size only read the tensor's dimensions)."""
    graph = onnx.load(str(qdq)).graph
    dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    skip = {"QuantizeLinear", "DequantizeLinear", "Shape", "Size"}
    qoperator = {float_op_type(n.op_type) for n in graph.node
                 if float_op_type(n.op_type) != n.op_type}
    if qoperator:  # a DequantizeLinear there feeds float ops that were left out
        return sorted(qoperator)
    return sorted({n.op_type for n in graph.node
                   if n.op_type not in skip and any(i in dq for i in n.input)})


def _eval_summary(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("eer", "auc", "n_genuine", "n_impostor", "tar@far=0.01", "tar@far=0.001",
            "ms_per_sample", "split", "data_manifest")
    return {k: r[k] for k in keep if k in r}


@dataclass
class Student:
    """What every attempt on one student shares: its FP32 file, calibration and held-out data."""

    modality: str
    fp32: Path
    fp32_sha256: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    calibration_sha256: str
    data: Path
    split: dict[str, Any]
    heldout: tuple[list[np.ndarray], dict[str, Any]] | None = None
    fp32_eval: dict[str, Any] | None = None

    @property
    def input_name(self) -> str:
        return input_name(self.modality)

    def batches(self, opts: ExportOptions) -> tuple[list[np.ndarray], dict[str, Any]]:
        if self.heldout is None:
            from edge_runtime.frontend.features import FaceInput, VoiceFrontEnd

            front_end: Any = FaceInput.from_meta(self.meta.get("front_end"))
            if self.modality == "voice":
                front_end = VoiceFrontEnd.from_dict(self.meta.get("front_end")
                                                    or VoiceFrontEnd().to_dict())
            self.heldout = heldout_inputs(self.modality, self.data, self.split, opts.cache_dir,
                                          front_end)
        return self.heldout


def _evaluate(s: Student, path: Path, opts: ExportOptions) -> dict[str, Any]:
    from train.evaluate import evaluate

    kind = data_kind(s.modality)
    return _eval_summary(evaluate(
        kind, str(path), s.data, split="test", split_cfg=s.split,
        max_impostor_per_identity=IMPOSTORS[kind], cache_dir=opts.cache_dir,
        threads=opts.threads, timing_samples=10))


def attempt(s: Student, recipe: Recipe, opts: ExportOptions, target: Target, st: Stages,
            candidate: Path) -> dict[str, Any]:
    """Quantize with ``recipe`` to ``candidate``, lint, gate; the model's report fields."""
    from export.accuracy import gate
    from export.qdq_lint import lint_qdq, require_clean
    from export.quantize import quantize_qdq
    from export.students import set_metadata

    m, out = s.modality, candidate.parent
    rep: dict[str, Any] = {"recipe": recipe.to_dict(target)}
    arrays, batch = s.arrays, CALIB_BATCH
    if recipe.calibrate_method != "minmax":  # ORT's histogram collectors need equal batches
        n = len(arrays[next(iter(arrays))])
        if n >= CALIB_BATCH:
            arrays = {k: v[: n // CALIB_BATCH * CALIB_BATCH] for k, v in arrays.items()}
        else:  # a tiny set: one batch of all of it
            batch = n
    exclude, floats = recipe.excluded_op_types, list(recipe.keep_float)
    rep["quantization"] = {"excluded_op_types": exclude, "keep_float": floats,
                           "calibrate_method": recipe.calibrate_method}
    with st.stage(f"{m}: INT8 {recipe.quant_format.upper()} ({recipe.calibrate_method}, "
                  f"target {target.name})"):
        quantize_qdq(s.fp32, arrays, candidate, target=target.name, lint=False,
                     batch_size=batch, **recipe.quantize_kwargs(target))
        if floats:
            from export.mixed_precision import keep_float

            rep["float_nodes"] = keep_float(candidate, floats)
    trt_form = tensorrt_form(recipe.activation_type, recipe.weight_type,
                             recipe.symmetric_activations, recipe.quant_format)
    with st.stage(f"{m}: QDQ lint") as stg:
        if trt_form:
            lint = lint_qdq(candidate, max_opset=target.max_opset, excluded_op_types=exclude)
            rep["lint"] = lint.to_dict()
            stg["done"] = (f"{lint.n_quantize} Q / {lint.n_dequantize} DQ, "
                           f"{len(lint.warnings)} warnings")
            require_clean(lint)
        else:  # asymmetric / uint8 / QOperator graphs are for onnxruntime only
            rep["lint"] = {"ok": True, "skipped": "recipe is for onnxruntime's CPU kernels, "
                           "not TensorRT's explicit quantization: the TensorRT lint does not apply"}
            stg["done"] = "skipped (onnxruntime-only form)"
    # Only settings beyond the three historical keys are added, so that files made before
    # recipes existed keep their bytes (their metadata had exactly these three).
    extra = {k: v for k, v in recipe.entry().items()
             if k not in ("calibrate_method", "exclude", "keep_float")}
    set_metadata(candidate, {**s.meta, "precision": "int8-qdq" if recipe.quant_format == "qdq"
                             else "int8-qoperator", "target": target.name,
                             "calibration_sha256": s.calibration_sha256,
                             "fp32_sha256": s.fp32_sha256,
                             "quantization": {"calibrate_method": recipe.calibrate_method,
                                              "excluded_op_types": list(exclude),
                                              "float_nodes": rep.get("float_nodes", []),
                                              **extra}})
    with st.stage(f"{m}: accuracy gate on held-out identities") as stg:
        batches, rep["heldout"] = s.batches(opts)
        name = s.input_name
        measured = candidate
        if target.uses_tensorrt:  # TensorRT's arithmetic, not this CPU's int8 kernels
            from export.qdq_reference import reference_graph

            measured = reference_graph(candidate, out / f"{m}.int8.reference.onnx")
            cpu_cos, _, _ = agreement(s.fp32, candidate, batches, name, opts.threads)
            rep["agreement_ort_cpu_kernels"] = cosine_stats(cpu_cos)
        rep["gate_measures"] = ("QDQ arithmetic (Q/DQ executed exactly, float ops; as TensorRT)"
                                if target.uses_tensorrt else "onnxruntime CPU int8 kernels")
        cos, ya, yb = agreement(s.fp32, measured, batches, name, opts.threads)
        rep["agreement"] = cosine_stats(cos)
        if m == "voice":  # what the device compares: the utterance embedding
            ua = unit(np.stack([y.mean(axis=0) for y in ya]))
            ub = unit(np.stack([y.mean(axis=0) for y in yb]))
            rep["agreement_utterance"] = cosine_stats(np.sum(ua * ub, axis=1))
        if not target.uses_tensorrt:  # the CPU it runs on: is INT8 faster here at all?
            rep["latency"] = latency_ratio(s.fp32, candidate, batches, name, opts.threads)
        if s.fp32_eval is None:
            s.fp32_eval = _evaluate(s, s.fp32, opts)
        evals = {"fp32": s.fp32_eval, "int8": _evaluate(s, measured, opts)}
        rep["eval"] = evals
        result = gate(rep["agreement"], evals["fp32"]["eer"], evals["int8"]["eer"],
                      min_p1=opts.min_p1, max_eer_delta_pt=opts.max_eer_delta_pt)
        rep["gate"] = {"ok": result.ok, "failures": result.failures, **result.measured}
        stg["done"] = (f"cos p1 {rep['agreement']['cos_p1']:.4f}, EER "
                       f"{evals['fp32']['eer']:.2%} -> {evals['int8']['eer']:.2%}")
        if not result.ok:
            stg["failed"] = "; ".join(result.failures)
            stg["done"] += f" ({stg['failed']})"
    rep["_measured"] = measured
    return rep


def sensitivity(s: Student, recipe: Recipe, candidate: Path, measured: Path,
                opts: ExportOptions, target: Target, st: Stages) -> dict[str, Any]:
    """Per-op-type sensitivity (one op type quantized at a time, the recipe's other settings)
    and the layers where the error jumps: what to keep in float next."""
    from export.accuracy import sensitivity_report
    from export.mixed_precision import layer_errors

    with st.stage(f"{s.modality}: sensitivity report (one op type at a time)"):
        x = np.concatenate(s.batches(opts)[0])[:SENSITIVITY_SAMPLES]
        kwargs = {k: v for k, v in recipe.quantize_kwargs(target).items()
                  if k not in ("exclude_op_types", "calibrate_method")}
        rows = sensitivity_report(s.fp32, s.arrays, {s.input_name: x},
                                  quantized_op_types(candidate), target=target.name, **kwargs)
        return {"sensitivity": [r for r in rows if r["n_quantized"] > 0],
                "sensitivity_note": "measured with onnxruntime's CPU int8 kernels",
                "layer_errors": layer_errors(s.fp32, candidate, {s.input_name: x[:64]},
                                             run=measured)}


def search(s: Student, recipe: Recipe, first: dict[str, Any], opts: ExportOptions,
           target: Target, st: Stages, candidate: Path) -> tuple[Recipe, dict[str, Any],
                                                                 list[dict[str, Any]]]:
    """From a failed attempt: keep the most damaging op types in float one at a time (worst
    first, from the sensitivity report), then try the other calibration methods with those
    exclusions; stop at the first recipe that passes. Returns the last recipe tried, its
    report and the trail of every attempt."""
    trail = [{"recipe": recipe.entry(), "gate": first["gate"]}]
    rep = first
    sens = sensitivity(s, recipe, candidate, first["_measured"], opts, target, st)
    order = [r["op_type"] for r in sens["sensitivity"]]
    steps: list[Recipe] = []
    current = recipe
    for op in order:
        current = dataclasses.replace(current, exclude=(*current.exclude, op))
        steps.append(current)
    for method in CALIBRATION_METHODS:
        if method != recipe.calibrate_method:
            steps += [dataclasses.replace(r, calibrate_method=method) for r in [recipe, *steps]]
    for cand in steps:
        rep = attempt(s, cand, opts, target, st, candidate)
        trail.append({"recipe": cand.entry(), "gate": rep["gate"]})
        if rep["gate"]["ok"]:
            return dataclasses.replace(cand, source="edgepin export --search"), rep, trail
    return steps[-1] if steps else recipe, rep, trail
