"""`edgepin export` for the face detector (dlib's MMOD CNN as ONNX): FP16 and INT8, gated.

The network's input is the runtime's tiled pyramid (`edge_runtime.frontend.face_cnn`): its
height and width change with the frame (and with the ROI tracker's crops), so calibration
and the gate feed real pyramids one image at a time, made exactly as the runtime makes them
(frames shrunk to max side 320, photos under 200 px enlarged 2x).

- Images: real faces from the shared data (LFW, AT&T, GRID frames), split so that no LFW
  identity, AT&T subject or GRID clip is in both the calibration and the gate images
  (``detector_images``). Never random data: an empty calibration set is an error.
- INT8: ``export.quantize.quantize_qdq`` (symmetric int8 QDQ, per-channel weights; the
  recipe ``models.face_detector`` in export/recipes.yaml keeps the input's Sub/Mul in float).
- FP16: TensorRT builds it from the FP32 graph with the FP16 flag; there is no file to ship.
- The gate measures TensorRT's arithmetic, as the students' gate does: INT8 through
  ``export.qdq_reference`` (Q/DQ executed exactly, float convolutions), FP16 through
  ``fp16_reference_graph`` (weights and every activation rounded to float16). On held-out
  images it compares each variant's boxes after the runtime's NMS with the FP32 port's:
  share of images where the person is found (may drop at most ``max_recall_drop_pt``), share
  of FP32 boxes found again with IoU >= 0.5 (``min_box_recall``), mean IoU of those
  (``min_mean_iou``) and boxes without an FP32 match (``max_extra_share``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle import load_manifest, register_model, sha256_file
from edge_runtime.errors import DatasetError, ModelError
from edge_runtime.frontend.face import load_image
from edge_runtime.frontend.face_cnn import MmodConfig, decode, tiled_pyramid, working_image
from export.quantize import Target
from export.recipes import Recipe
from export.stages import ExportOptions, Stages

DETECTOR = "face_detector"
INPUT = "image"
MATCH_IOU = 0.5

# TensorRT optimisation profile of the pyramid input (N, 3, H, W): H and W change with the
# frame and with the ROI tracker's crops. opt: a 640x480 camera frame at the runtime's max
# side 320 (320x240 -> 921x342); max: any frame whose longer side is 320 (320x320 -> 1206x342,
# 240x320 -> 1206x262); min: the smallest ROI crop (a face shrunk to 80 px with its margin).
PROFILE = {INPUT: ((1, 3, 96, 96), (1, 3, 921, 342), (1, 3, 1206, 342))}

Image = tuple[str, np.ndarray, bool]  # name, RGB image, "the person is at the image centre"


@dataclass(frozen=True)
class DetectorGate:
    """Limits of the detector gate (module docstring); a variant passes if all hold."""

    max_recall_drop_pt: float = 1.0
    min_box_recall: float = 0.99
    min_mean_iou: float = 0.9
    max_extra_share: float = 0.02


@dataclass(frozen=True)
class ImageCounts:
    """How many images of each set the calibration and the gate take."""

    calib_lfw: int = 24
    calib_att: int = 8
    calib_grid: int = 8
    gate_lfw: int = 80
    gate_att: int = 60
    gate_grid: int = 40


def calib_identity(name: str) -> bool:
    """One in five LFW identities calibrates; the others are the gate's (stable, by name)."""
    return zlib.crc32(name.encode()) % 5 == 0


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    if n <= 0 or not items:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int))
    return [items[i] for i in idx]


def detector_images(root: Path, role: str, counts: ImageCounts = ImageCounts()) -> list[Image]:
    """Real images for ``role`` "calib" or "gate" from ``root`` (lfw/, att_faces/, grid/).

    Disjoint by construction: LFW by identity (``calib_identity``), AT&T subjects in the
    first fifth (sorted) calibrate, GRID: the first clip in five (sorted) calibrates.
    """
    from edge_runtime.frontend.video import decode_clip

    if role not in ("calib", "gate"):
        raise ValueError(f"role must be calib or gate, got {role!r}")
    root = Path(root)
    calib = role == "calib"
    out: list[Image] = []
    lfw = sorted(p for p in (root / "lfw").glob("*/*.jpg")
                 if calib_identity(p.parent.name) == calib)
    out += [(str(p), load_image(p), True)
            for p in _spread(lfw, counts.calib_lfw if calib else counts.gate_lfw)]
    subjects = sorted((root / "att_faces").glob("s*"), key=lambda p: p.name)
    cut = max(1, len(subjects) // 5) if len(subjects) > 1 else 0
    chosen = subjects[:cut] if calib else subjects[cut:]
    att = [p for s in chosen for p in sorted(s.glob("*.pgm"))]
    out += [(str(p), load_image(p), False)
            for p in _spread(att, counts.calib_att if calib else counts.gate_att)]
    clips = sorted((root / "grid").glob("*.mpg"))
    chosen_clips = [c for i, c in enumerate(clips) if (i % 5 == 0) == calib]
    n_grid = counts.calib_grid if calib else counts.gate_grid
    per_clip = -(-n_grid // max(1, len(chosen_clips)))
    for clip in chosen_clips:
        frames = decode_clip(clip).frames
        out += [(f"{clip}#{i}", frames[i].image, False)
                for i in _spread(list(range(len(frames))), per_clip)]
    if not out:
        raise DatasetError(f"no face images for the detector's {role} set under {root} "
                           "(expected lfw/*/*.jpg, att_faces/s*/*.pgm, grid/*.mpg)")
    return out


def pyramids(images: Sequence[Image], cfg: MmodConfig
             ) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]], float]]:
    """(network input, level rectangles, scale) per image, as the runtime makes them."""
    out = []
    for _, image, _ in images:
        work, scale = working_image(image)
        x, rects = tiled_pyramid(work, cfg)
        out.append((x, rects, scale))
    return out


def run_boxes(onnx_path: Path, inputs: Sequence[tuple[np.ndarray, list, float]],
              cfg: MmodConfig, threads: int = 1) -> list[list[tuple[float, ...]]]:
    """Boxes (frame pixels) of every input after the runtime's decoding and NMS."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    boxes = []
    for x, rects, scale in inputs:
        scores = sess.run([out_name], {name: x})[0]
        boxes.append([tuple(v / scale for v in b) for b, _ in decode(scores, rects, cfg)])
    return boxes


def mmod_config(onnx_path: Path) -> MmodConfig:
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False)
            .metadata_props}
    return MmodConfig.from_metadata(meta)


def fp16_reference_graph(fp32: Path, out: Path) -> Path:
    """``fp32`` with its weights and every node's output rounded to float16 (Cast to float16
    and back), the numbers a TensorRT FP16 engine stores between layers; run by onnxruntime
    in float32 on any CPU."""
    model = onnx.load(str(fp32))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    nodes = []
    for node in graph.node:
        outs = list(node.output)
        renamed = [f"{o}_fp32" for o in outs]
        node.output[:] = renamed
        nodes.append(node)
        for raw, final in zip(renamed, outs, strict=True):
            half = f"{final}_fp16"
            nodes += [helper.make_node("Cast", [raw], [half], to=TensorProto.FLOAT16,
                                       name=f"{final}_to_fp16"),
                      helper.make_node("Cast", [half], [final], to=TensorProto.FLOAT,
                                       name=f"{final}_from_fp16")]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return Path(out)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of inclusive-corner boxes, as dlib's rectangles."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return float(inter / (area_a + area_b - inter))


def person_found(boxes: Sequence[Sequence[float]], shape: tuple[int, ...], centre: bool) -> bool:
    """Any box, or (LFW: the labelled person is centred) a box over the image centre."""
    if not centre:
        return bool(boxes)
    cy, cx = shape[0] / 2, shape[1] / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)


def compare(images: Sequence[Image], ref: Sequence[Sequence[tuple]], got: Sequence[Sequence[tuple]],
            limits: DetectorGate = DetectorGate()) -> dict[str, Any]:
    """A variant's boxes against the FP32 port's on the same images: figures and verdict."""
    n_ref = matched = extra = 0
    ious: list[float] = []
    found_ref = found_got = 0
    for (_, image, centre), a, b in zip(images, ref, got, strict=True):
        found_ref += person_found(a, image.shape, centre)
        found_got += person_found(b, image.shape, centre)
        n_ref += len(a)
        for ra in a:
            best = max((iou(ra, rb) for rb in b), default=0.0)
            if best >= MATCH_IOU:
                matched += 1
                ious.append(best)
        extra += sum(max((iou(rb, ra) for ra in a), default=0.0) < MATCH_IOU for rb in b)
    n = len(images)
    m = {"images": n, "recall_fp32": found_ref / n, "recall": found_got / n,
         "recall_drop_pt": 100.0 * (found_ref - found_got) / n, "fp32_boxes": n_ref,
         "box_recall": matched / n_ref if n_ref else 1.0,
         "mean_iou": float(np.mean(ious)) if ious else 0.0,
         "min_iou": float(np.min(ious)) if ious else 0.0,
         "extra_boxes": extra, "extra_share": extra / max(n_ref, 1)}
    failures = []
    if m["recall_drop_pt"] > limits.max_recall_drop_pt:
        failures.append(f"recall {m['recall']:.1%} vs FP32 {m['recall_fp32']:.1%}: drop "
                        f"{m['recall_drop_pt']:.2f} pt > {limits.max_recall_drop_pt} pt")
    if m["box_recall"] < limits.min_box_recall:
        failures.append(f"FP32 boxes found again {m['box_recall']:.1%} < "
                        f"{limits.min_box_recall:.0%}")
    if m["mean_iou"] < limits.min_mean_iou:
        failures.append(f"mean IoU vs FP32 {m['mean_iou']:.3f} < {limits.min_mean_iou}")
    if m["extra_share"] > limits.max_extra_share:
        failures.append(f"{extra} boxes without an FP32 match ({m['extra_share']:.1%} > "
                        f"{limits.max_extra_share:.0%})")
    return {"ok": not failures, "failures": failures, **m}


def gate_variant(fp32: Path, measured: Path, images: Sequence[Image], *, threads: int = 1,
                 limits: DetectorGate = DetectorGate()) -> dict[str, Any]:
    """Run the FP32 port and ``measured`` on ``images`` and compare (``compare``)."""
    cfg = mmod_config(fp32)
    inputs = pyramids(images, cfg)
    return compare(images, run_boxes(fp32, inputs, cfg, threads),
                   run_boxes(measured, inputs, cfg, threads), limits)


def quantize_detector(fp32: Path, calib_images: Sequence[Image], out: Path, target: Target,
                      recipe: Recipe) -> Path:
    """QDQ INT8 of the detector, calibrated on real pyramids one image at a time."""
    from export.quantize import quantize_qdq

    if not calib_images:
        raise DatasetError("the detector's INT8 calibration needs real face images; got none")
    if recipe.calibrate_method != "minmax":
        # histogram calibrators need equal batches; pyramids differ in size per image
        raise ModelError("face_detector recipe: only minmax calibration (pyramid inputs "
                         "differ in size)")
    cfg = mmod_config(fp32)
    feeds = [{INPUT: x} for x, _, _ in pyramids(calib_images, cfg)]
    quantize_qdq(fp32, feeds, out, target=target.name, batch_size=1,  # type: ignore[arg-type]
                 lint=False, **recipe.quantize_kwargs(target))
    float_outputs(out)
    if recipe.keep_float:
        from export.mixed_precision import keep_float

        keep_float(out, list(recipe.keep_float))
    return out


def float_outputs(path: Path) -> list[str]:
    """Drop the Q/DQ pair the quantizer puts on a graph output: the score map stays float.

    Quantized, the scores take a few dozen values (steps of ~0.05 around the 1.0 of a face),
    so neighbouring windows and pyramid levels tie and NMS keeps another box than the FP32
    port (mean IoU 0.83 in the gate); TensorRT keeps the last convolution's float output too
    when no Q/DQ follows it. Returns the outputs changed.
    """
    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    drop, changed = set(), []
    for out in graph.output:
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = producer.get(q.input[0])
        users = [n for n in graph.node if q.input[0] in n.input and n is not q]
        if src is None or users:
            continue  # the float tensor is needed elsewhere: leave the pair
        src.output[list(src.output).index(q.input[0])] = out.name
        drop |= {id(q), id(dq)}
        changed.append(out.name)
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return changed


def _images_sha(images: Sequence[Image]) -> str:
    h = hashlib.sha256()
    for name, image, _ in images:
        h.update(Path(name.split("#")[0]).name.encode() + name.partition("#")[2].encode())
        h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def export_detector(opts: ExportOptions, target: Target, st: Stages, recipe: Recipe,
                    limits: DetectorGate = DetectorGate(),
                    counts: ImageCounts = ImageCounts()) -> dict[str, Any]:
    """FP32 copy, INT8 QDQ + FP16 through the gate; the report's ``detector`` part.
    ``recipe``: ``export.pipeline.model_recipe(opts, DETECTOR, target)``."""
    from export.qdq_lint import lint_qdq, require_clean
    from export.qdq_reference import reference_graph
    from export.students import set_metadata

    out, models = Path(opts.out), Path(opts.models)
    entries = load_manifest(models) if (models / "manifest.json").is_file() else {}
    if DETECTOR not in entries:
        return {"skipped": f"no {DETECTOR} in {models}/manifest.json (edgepin port-dlib)"}
    data = opts.data_detector
    if data is None:
        raise ModelError("the detector's calibration and gate need real face images: pass "
                         "--data-detector DIR (with lfw/, att_faces/, grid/)")
    rep: dict[str, Any] = {}
    with st.stage(f"{DETECTOR}: FP32 ONNX") as s:
        src = entries[DETECTOR].verified_path()
        fp32 = out / f"{DETECTOR}.onnx"
        if src.resolve() != fp32.resolve():
            shutil.copy2(src, fp32)
        rep["fp32"] = {"path": str(fp32), "sha256": sha256_file(fp32),
                       "bytes": fp32.stat().st_size, "meta": entries[DETECTOR].meta}
        s["done"] = str(fp32)
    with st.stage(f"{DETECTOR}: real images (calibration / held-out gate)") as s:
        calib = detector_images(Path(data), "calib", counts)
        gate_imgs = detector_images(Path(data), "gate", counts)
        rep["calibration"] = {"n": len(calib), "sha256": _images_sha(calib), "data": str(data)}
        rep["heldout"] = {"n": len(gate_imgs), "sha256": _images_sha(gate_imgs)}
        s["done"] = f"{len(calib)} calibration, {len(gate_imgs)} held-out images"
    rep["recipe"] = recipe.to_dict(target)
    candidate = out / f"{DETECTOR}.int8.candidate.onnx"
    with st.stage(f"{DETECTOR}: INT8 QDQ (minmax, target {target.name})"):
        quantize_detector(fp32, calib, candidate, target, recipe)
        lint = lint_qdq(candidate, max_opset=target.max_opset,
                        excluded_op_types=recipe.excluded_op_types)
        rep["lint"] = lint.to_dict()
        require_clean(lint)
        meta = {"precision": "int8-qdq", "target": target.name, "fp32_sha256": rep["fp32"]["sha256"],
                "calibration_sha256": rep["calibration"]["sha256"]}
        set_metadata(candidate, meta)
    ref_int8 = reference_graph(candidate, out / f"{DETECTOR}.int8.reference.onnx")
    ref_fp16 = fp16_reference_graph(fp32, out / f"{DETECTOR}.fp16.reference.onnx")
    with st.stage(f"{DETECTOR}: recall gate on held-out images (TensorRT arithmetic)") as s:
        cfg = mmod_config(fp32)
        inputs = pyramids(gate_imgs, cfg)
        ref = run_boxes(fp32, inputs, cfg, opts.threads)
        rep["gate"] = {
            "measures": "TensorRT arithmetic: INT8 Q/DQ executed exactly with float "
                        "convolutions (export.qdq_reference); FP16: weights and activations "
                        "rounded to float16",
            "limits": limits.__dict__,
            "int8": compare(gate_imgs, ref, run_boxes(ref_int8, inputs, cfg, opts.threads), limits),
            "fp16": compare(gate_imgs, ref, run_boxes(ref_fp16, inputs, cfg, opts.threads), limits)}
        if not target.uses_tensorrt:
            rep["gate"]["int8_ort_cpu_kernels"] = compare(
                gate_imgs, ref, run_boxes(candidate, inputs, cfg, opts.threads), limits)
        g = rep["gate"]
        s["done"] = ", ".join(f"{v}: recall {g[v]['recall']:.1%} (FP32 {g[v]['recall_fp32']:.1%})"
                              f", mean IoU {g[v]['mean_iou']:.3f}" for v in ("int8", "fp16"))
        failed = [f"{v}: " + "; ".join(g[v]["failures"]) for v in ("int8", "fp16") if not g[v]["ok"]]
        if failed:
            s["failed"] = " | ".join(failed)
            s["done"] += f" ({s['failed']})"
    ref_int8.unlink(missing_ok=True)
    ref_fp16.unlink(missing_ok=True)
    if rep["gate"]["int8"]["ok"]:
        final = out / f"{DETECTOR}.int8.onnx"
        candidate.replace(final)
        (out / f"{DETECTOR}.int8.rejected.onnx").unlink(missing_ok=True)
        rep["int8"] = {"path": str(final), "sha256": sha256_file(final),
                       "bytes": final.stat().st_size, "registered": True}
    else:
        rejected = out / f"{DETECTOR}.int8.rejected.onnx"
        candidate.replace(rejected)
        rep["int8"] = {"path": str(rejected), "registered": False}
    rep["fp16"] = {"engine_from": str(fp32), "ok": rep["gate"]["fp16"]["ok"]}
    rep["ok"] = rep["gate"]["int8"]["ok"] and rep["gate"]["fp16"]["ok"]
    return rep


def register_detector(out: Path, rep: dict[str, Any], target: Target) -> None:
    """The FP32 entry (copied from the models folder's) and the INT8 one that passed."""
    if "fp32" not in rep:
        return
    entries = load_manifest(out) if (out / "manifest.json").is_file() else {}
    if DETECTOR not in entries or entries[DETECTOR].sha256 != rep["fp32"]["sha256"]:
        register_model(out, DETECTOR, f"{DETECTOR}.onnx", **rep["fp32"].get("meta", {}))
    if rep["int8"]["registered"]:
        g = rep["gate"]["int8"]
        register_model(out, f"{DETECTOR}_int8", Path(rep["int8"]["path"]).name,
                       precision="int8-qdq", target=target.name,
                       fp32_sha256=rep["fp32"]["sha256"],
                       calibration_sha256=rep["calibration"]["sha256"],
                       gate={k: g[k] for k in ("recall_fp32", "recall", "box_recall",
                                               "mean_iou", "extra_boxes", "images")},
                       input=INPUT, output="score", recipe=rep["recipe"])


def report_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=2, default=str)


def detector_engines(rep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The TensorRT stage's entry for the detector: its FP32 graph (FP16 engine) when the FP16
    gate passed, its INT8 QDQ graph when that one did (``export.device_build``)."""
    if "gate" not in rep:
        return {}
    entry = {"fp32": rep["fp32"]["path"] if rep["gate"]["fp16"]["ok"] else None,
             "int8": rep["int8"]["path"] if rep["int8"]["registered"] else None,
             "sample_shape": None}
    return {DETECTOR: entry} if entry["fp32"] or entry["int8"] else {}
