"""The face detector's export (FP16 / INT8) and ROI tracking, measured on real images.

Parts (one run each; the .md is re-rendered from the .json):

- ``recall``: on held-out images (no LFW identity, AT&T subject or GRID clip of the INT8
  calibration, `export.detector.detector_images`), at the runtime's pyramid settings (frames
  shrunk to max side 320, photos under 200 px enlarged 2x): dlib's own CNN detector on that
  working image, the ONNX port in FP32, FP16 and INT8 as TensorRT computes them (the export
  gate's reference graphs), INT8 on onnxruntime's CPU kernels, and dlib HOG as the runtime
  runs it. Recall = share of images where the person is found (LFW: a box over the centre).
- ``bench``: `edgepin bench`'s detection and frame-to-decision rows (640x480, both
  detectors, with and without ROI tracking), FP32 students, ``--bench-runs`` runs per row.
- ``roi``: every frame of the GRID clips, enlarged to the camera's 640x480, HOG and the CNN
  (onnxruntime, one thread), full-frame detection on every frame vs `RoiTracker` (default
  settings): recall, ms/frame (median, mean), how often the full frame was scanned and why,
  IoU of the tracked box with the full-frame box of the same frame; and the second-face
  case: an LFW face pasted into the frame from frame 30 on, frames until the tracker reports
  two faces. The timing rows are the re-runnable command below; write the load average.

    PYTHONPATH=$PWD nice -n 10 python -m benchmarks.detector_export --data ../shared/data recall roi
    python -m benchmarks.detector_export roi bench   # timing only (run it on a quiet machine)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
from rich.progress import track

from edge_runtime.face_detectors import open_cnn_detector
from edge_runtime.frontend.face import DlibHogDetector, load_image, wheel_model_path
from edge_runtime.frontend.face_cnn import working_image
from edge_runtime.frontend.face_roi import RoiTracker
from edge_runtime.frontend.video import decode_clip
from export.detector import (
    calib_identity,
    compare,
    detector_images,
    fp16_reference_graph,
    mmod_config,
    person_found,
    pyramids,
    quantize_detector,
    run_boxes,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
OUT = ROOT / "benchmarks" / "detector_export.json"


def _heldout_sets(data: Path) -> dict[str, list[tuple[str, np.ndarray, bool]]]:
    """The benchmark's images, none of them from the calibration split."""
    lfw = [p for p in sorted((data / "lfw").glob("*/*.jpg")) if not calib_identity(p.parent.name)]
    subjects = sorted((data / "att_faces").glob("s*"), key=lambda p: p.name)
    att = [p for s in subjects[max(1, len(subjects) // 5):] for p in sorted(s.glob("*.pgm"))]
    clips = [c for i, c in enumerate(sorted((data / "grid").glob("*.mpg"))) if i % 5 != 0]
    grid = []
    for clip in clips:
        frames = decode_clip(clip).frames
        grid += [(f"{clip.name}#{i}", frames[i].image, False) for i in range(0, len(frames), 10)]
    return {
        f"LFW (250x250, held-out identities, every 60th image): {len(lfw[::60])}":
            [(str(p), load_image(p), True) for p in lfw[::60]],
        f"AT&T (92x112, held-out subjects, every 4th image): {len(att[::4])}":
            [(str(p), load_image(p), False) for p in att[::4]],
        f"GRID (360x288, {len(clips)} held-out clips, every 10th frame): {len(grid)}": grid,
    }


def recall_part(data: Path) -> dict:
    from export.qdq_reference import reference_graph
    from export.quantize import get_target
    from export.recipes import RECIPES_FILE, load_recipes, recipe_for

    fp32 = MODELS / "face_detector.onnx"
    cfg = mmod_config(fp32)
    target = get_target("orin")
    recipe = recipe_for(load_recipes(RECIPES_FILE), "face_detector", target)
    ref_dlib = dlib.cnn_face_detection_model_v1(str(wheel_model_path("mmod_human_face_detector.dat")))
    hog = DlibHogDetector()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        calib = detector_images(data, "calib")
        int8 = quantize_detector(fp32, calib, t / "int8.onnx", target, recipe)
        graphs = {"ONNX FP32": fp32,
                  "ONNX FP16 (TensorRT arithmetic)": fp16_reference_graph(fp32, t / "fp16.onnx"),
                  "ONNX INT8 (TensorRT arithmetic)": reference_graph(int8, t / "int8_ref.onnx"),
                  "ONNX INT8 (onnxruntime CPU kernels)": int8}
        sets = {}
        for name, images in _heldout_sets(data).items():
            inputs = pyramids(images, cfg)
            boxes = {k: run_boxes(g, inputs, cfg) for k, g in graphs.items()}
            found = {k: sum(person_found(b, im.shape, c) for b, (_, im, c) in zip(v, images, strict=True))
                     for k, v in boxes.items()}
            n_dlib = n_hog = 0
            for _, image, centre in track(images, description=name[:40]):
                work, scale = working_image(image)
                d = [tuple(v / scale for v in (r.rect.left(), r.rect.top(), r.rect.right(),
                                               r.rect.bottom())) for r in ref_dlib(work, 0)]
                n_dlib += person_found(d, image.shape, centre)
                n_hog += person_found([x.box for x in hog.detect(image)], image.shape, centre)
            n = len(images)
            sets[name] = {
                "images": n,
                "recall": {"dlib CNN (same working image)": n_dlib / n,
                           **{k: v / n for k, v in found.items()}, "dlib HOG (runtime)": n_hog / n},
                "vs_fp32": {k: {f: c[f] for f in ("box_recall", "mean_iou", "min_iou",
                                                   "extra_boxes", "fp32_boxes", "ok")}
                            for k in list(graphs)[1:]
                            for c in [compare(images, boxes["ONNX FP32"], boxes[k])]},
            }
    return {"sets": sets, "calibration_images": len(calib), "recipe": recipe.entry()}


def _paste_second_face(frame: np.ndarray, face: np.ndarray) -> np.ndarray:
    """A second person: an LFW face (its central 150x150) in the frame's top-right corner."""
    out = frame.copy()
    h, w = out.shape[:2]
    crop = cv2.resize(face[50:200, 50:200], (w // 3, w // 3))
    out[10:10 + crop.shape[0], w - 10 - crop.shape[1]:w - 10] = crop
    return out


def _iou(a: tuple, b: tuple) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def roi_part(data: Path) -> dict:
    clips = sorted((data / "grid").glob("*.mpg"))
    frames = {c.name: [cv2.resize(f.image, (640, 480), interpolation=cv2.INTER_LINEAR)
                       for f in decode_clip(c).frames] for c in clips}
    second = load_image(sorted((data / "lfw").glob("*/*.jpg"))[0])
    detectors = {"HOG": DlibHogDetector(), "CNN (onnxruntime, max side 320)":
                 open_cnn_detector(MODELS, threads=1)}
    rows, second_face = [], []
    for name, det in detectors.items():
        full_ms, roi_ms, found_full, found_roi, ious, lm = [], [], 0, 0, [], []
        tracker = RoiTracker(det)
        for clip, fs in frames.items():
            tracker.reset()
            for f in track(fs, description=f"{name[:10]} {clip}"):
                t0 = time.perf_counter()
                a = det.detect(f)
                t1 = time.perf_counter()
                b = tracker.detect(f)
                t2 = time.perf_counter()
                full_ms.append(1e3 * (t1 - t0))
                roi_ms.append(1e3 * (t2 - t1))
                found_full += bool(a)
                found_roi += bool(b)
                if a and b and tracker.last_mode == "roi":
                    ious.append(_iou(a[0].box, b[0].box))
                    eyes = np.linalg.norm(a[0].landmarks[[0, 1]].mean(0)
                                          - a[0].landmarks[[2, 3]].mean(0))
                    lm.append(float(np.linalg.norm(a[0].landmarks - b[0].landmarks, axis=1).max()
                                    / eyes))
        n = sum(len(v) for v in frames.values())
        rows.append({"detector": name, "frames": n,
                     "full": {"recall": found_full / n, "ms_median": float(np.median(full_ms)),
                              "ms_mean": float(np.mean(full_ms))},
                     "roi": {"recall": found_roi / n, "ms_median": float(np.median(roi_ms)),
                             "ms_mean": float(np.mean(roi_ms)), "counts": dict(tracker.counts),
                             "iou_vs_full_median": float(np.median(ious)) if ious else None,
                             "iou_vs_full_min": float(np.min(ious)) if ious else None,
                             "landmark_err_iod_median": float(np.median(lm)) if lm else None,
                             "landmark_err_iod_p95": float(np.percentile(lm, 95)) if lm else None}})
        for clip, fs in frames.items():  # a second face appears at frame 31 .. 35
            delays = []
            for start in range(31, 31 + tracker.settings.rescan_every):
                tracker.reset()
                seen_at = None
                for i, f in enumerate(fs[: start + 10]):
                    out = tracker.detect(_paste_second_face(f, second) if i >= start else f)
                    if i >= start and len(out) >= 2 and seen_at is None:
                        seen_at = i
                delays.append(None if seen_at is None else seen_at - start)
            alone = len(det.detect(_paste_second_face(fs[31], second)))
            second_face.append({"detector": name, "clip": clip, "faces_full_frame": alone,
                                "frames_until_seen": delays})
    return {"rows": rows, "second_face": second_face, "load_average": list(os.getloadavg()),
            "threads": 1}


def render(doc: dict) -> str:
    lines = ["# Face detector: FP16 / INT8 export and ROI tracking", "",
             "Produced by `benchmarks/detector_export.py` (its docstring has the commands); "
             "reader: `docs/dlib_port.md`. Each section is one run.", ""]
    if "recall" in doc:
        r, m = doc["recall"], doc["recall"]["machine"]
        lines += ["## Recall at the runtime's pyramid settings (held-out images)", "",
                  f"- run: {m['date']}; {m['cpu']}, {m['memory']}; onnxruntime {m['onnxruntime']}, "
                  f"dlib {m['dlib']}",
                  f"- INT8: QDQ calibrated on {r['calibration_images']} real images of other "
                  f"identities/subjects/clips, recipe {r['recipe']}, score output float; "
                  "TensorRT arithmetic = the export gate's reference graphs", "",
                  "| images | " + " | ".join(next(iter(r["sets"].values()))["recall"]) + " |",
                  "|---|" + "---|" * len(next(iter(r["sets"].values()))["recall"])]
        for name, s in r["sets"].items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f} %" for v in s["recall"].values())
                         + " |")
        lines += ["", "Boxes vs the FP32 port on the same images (FP32 boxes found again at "
                  "IoU >= 0.5, their mean / min IoU, boxes without an FP32 match):", "",
                  "| images | variant | FP32 boxes | found again | mean IoU | min IoU | extra |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in r["sets"].items():
            for k, c in s["vs_fp32"].items():
                lines.append(f"| {name.split(':')[0]} | {k} | {c['fp32_boxes']} | "
                             f"{100 * c['box_recall']:.1f} % | {c['mean_iou']:.3f} | "
                             f"{c['min_iou']:.3f} | {c['extra_boxes']} |")
        lines.append("")
    if "roi" in doc:
        r, m = doc["roi"], doc["roi"]["machine"]
        la = ", ".join(f"{x:.2f}" for x in r["load_average"])
        lines += ["## ROI tracking on the GRID clips (640x480)", "",
                  f"- run: {m['date']}; {m['cpu']}; load average at the end (1/5/15 min): {la} "
                  "(2 cores: a load above ~2 means other jobs shared them; compare rows of one run)",
                  "- every frame of the 7 GRID clips enlarged to 640x480; full = the detector on "
                  "every frame; ROI = `RoiTracker` defaults (pad 0.6 face widths, face shrunk "
                  "to 96 px, full-frame scan at least every 5 frames); one thread; landmarks "
                  "included", "",
                  "| detector | frames | recall full | recall ROI | ms/frame full (median / mean) "
                  "| ms/frame ROI (median / mean) | frames by mode (ROI) | IoU ROI box vs full "
                  "(median / min) |", "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            f, o = row["full"], row["roi"]
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(o["counts"].items()))
            iou = ("n/a" if o["iou_vs_full_median"] is None
                   else f"{o['iou_vs_full_median']:.3f} / {o['iou_vs_full_min']:.3f}")
            lines.append(f"| {row['detector']} | {row['frames']} | {100 * f['recall']:.1f} % | "
                         f"{100 * o['recall']:.1f} % | {f['ms_median']:.1f} / {f['ms_mean']:.1f} | "
                         f"{o['ms_median']:.1f} / {o['ms_mean']:.1f} | {counts} | {iou} |")
        lines += ["", "Landmarks of the ROI frames vs the full-frame detection of the same frame "
                  "(largest of the 5 point distances / distance between the eye centres), median / p95: "
                  + "; ".join(f"{row['detector']}: {row['roi']['landmark_err_iod_median']:.3f} / "
                              f"{row['roi']['landmark_err_iod_p95']:.3f}" for row in r["rows"]
                              if row["roi"].get("landmark_err_iod_median") is not None) + ".",
                  "", "A second face (an LFW face pasted top right) appearing at frame 31, 32, "
                  "33, 34 or 35 (one run each, the track started at frame 0): frames until the "
                  "tracker returns both faces (0 = the frame it appears):", "",
                  "| detector | clip | faces in that frame (full scan) | frames until seen, per "
                  "start frame |", "|---|---|---|---|"]
        for s in r["second_face"]:
            lines.append(f"| {s['detector']} | {s['clip']} | {s['faces_full_frame']} | "
                         f"{s['frames_until_seen']} |")
        lines += ["", "![ms per frame](detector_export.png)", ""]
    if "bench" in doc:
        b, m = doc["bench"], doc["bench"]["machine"]
        lines += ["## `edgepin bench`: detection and frame to decision at 640x480", "",
                  f"- run: {m['date']}; {m['cpu']}, {m['cores']} cores; load average (1/5/15 "
                  f"min) after the rows: {', '.join(f'{x:.2f}' for x in b['load_average_end'])}"
                  f" (shared machine: compare rows, not machines); {b['runs']} runs per "
                  "row; FP32 students on onnxruntime, one thread; the `clip frames` rows take "
                  "the GRID clip's frames in turn (enlarged to 640x480), so the ROI rows include "
                  "their periodic full-frame scans (p50: a ROI frame, p95: a full one)", "",
                  "| stage | variant | p50 ms | p95 ms | mean ms |", "|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['variant']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                  f"{r['mean_ms']:.1f} |" for r in b["rows"]]
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["roi"]["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["full"]["ms_mean"] for r in rows], 0.4, label="full frame")
    ax.bar(x + 0.2, [r["roi"]["ms_mean"] for r in rows], 0.4, label="ROI tracking")
    ax.set_xticks(x, [r["detector"] for r in rows], fontsize=8)
    ax.set_ylabel("mean ms / frame (640x480)")
    ax.set_title(f"GRID clips, load avg {doc['roi']['load_average'][0]:.1f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEPIN_DATA",
                                                                      "/work/shared/data")))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--bench-runs", type=int, default=40, help="bench part: timed runs per row")
    ap.add_argument("parts", nargs="*", help="recall, roi, bench; none: re-render the .md")
    args = ap.parse_args()
    from benchmarks.machine import machine_info

    unknown = set(args.parts) - {"recall", "roi", "bench"}
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}: choose from recall, roi, bench")
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "recall" in args.parts:
        doc["recall"] = {"machine": machine_info(), **recall_part(args.data)}
    if "roi" in args.parts:
        doc["roi"] = {"machine": machine_info(), **roi_part(args.data)}
    if "bench" in args.parts:  # the detector rows of `edgepin bench` (FP32 students)
        from edge_runtime.cli.bench import run_bench

        report = run_bench(None, runs=args.bench_runs, warmup=5, teachers=False,
                           gallery_sizes=(1, 100))
        doc["bench"] = {"machine": report["machine"], "runs": report["runs"],
                        "load_average_end": list(os.getloadavg()),
                        "rows": [r for r in report["rows"]
                                 if r["stage"].startswith(("detect", "FRAME TO DECISION"))
                                 and "int8" not in r["variant"]]}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(doc))
    if "roi" in doc:
        plot(doc, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
