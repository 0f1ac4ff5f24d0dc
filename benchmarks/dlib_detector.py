"""Detector part of benchmarks/dlib_onnx.py: dlib's MMOD CNN as ONNX vs dlib's CNN and HOG.

Same images for all detectors, one run:
- parity: the ONNX port (`MmodDetector.boxes`, the image as given) against
  `dlib.cnn_face_detection_model_v1(image, 0)` on the identical image (AT&T images are 2x
  enlarged first for both: at 92x112 their faces are under the 80 px window);
- recall at the runtime's settings: `MmodDetector.detect` (frames shrunk to max side 320,
  small photos enlarged 2x) and `DlibHogDetector.detect` (full frame, upsampled retries on
  small images) - each image holds one person, found = a box that holds the image centre
  (LFW: the labelled person is centred) or, for GRID and AT&T, any box;
- speed on GRID frames enlarged to 640x480 (the runtime's camera size): HOG on the full
  frame, the CNN at max side 320 and at full size on onnxruntime (one thread), and dlib's CNN.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import dlib
import numpy as np
from rich.progress import track

from edge_runtime.face_detectors import open_cnn_detector
from edge_runtime.frontend.face import DlibHogDetector, load_image, wheel_model_path
from edge_runtime.frontend.video import decode_clip

MODELS = Path(__file__).resolve().parents[1] / "models"


def _iou(a: tuple, b: tuple) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _images(data: Path) -> dict[str, list[tuple[str, np.ndarray, bool]]]:
    """(name, RGB image, centre rule) per set; AT&T enlarged 2x (see the module docstring)."""
    lfw = sorted((data / "lfw").glob("*/*.jpg"))
    att = sorted((data / "att_faces").glob("s*/*.pgm"))
    sets: dict[str, list[tuple[str, np.ndarray, bool]]] = {
        "LFW (250x250, every 37th image)": [(str(p), load_image(p), True) for p in lfw[::37]],
        "AT&T (92x112, every 2nd image)": [(str(p), load_image(p), False) for p in att[::2]],
    }
    grid = []
    for clip in sorted((data / "grid").glob("*.mpg")):
        frames = decode_clip(clip).frames
        grid += [(f"{clip.name}#{i}", frames[i].image, False) for i in range(0, len(frames), 5)]
    sets["GRID (360x288, every 5th frame)"] = grid
    return sets


def _found(dets: list[tuple], shape: tuple[int, ...], centre: bool) -> bool:
    if not centre:
        return bool(dets)
    cy, cx = shape[0] / 2, shape[1] / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in dets)


def _ms(fn, runs: int) -> float:  # noqa: ANN001
    fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(out))


def detector_part(data: Path, cache: Path) -> dict:  # noqa: ARG001 - same signature as the teacher part
    ref = dlib.cnn_face_detection_model_v1(str(wheel_model_path("mmod_human_face_detector.dat")))
    cnn = open_cnn_detector(MODELS, threads=1)
    hog = DlibHogDetector()
    sets = {}
    for name, items in _images(data).items():
        n_ref = n_match = n_exact = n_extra = 0
        found = {"dlib CNN": 0, "ONNX CNN (runtime)": 0, "dlib HOG (runtime)": 0}
        worst_iou = []
        for _, image, centre in track(items, description=name):
            img = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2),
                             interpolation=cv2.INTER_LINEAR) if image.shape[1] < 200 else image
            a = [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in ref(img, 0)]
            b = [box for box, _ in cnn.boxes(img)]
            n_ref += len(a)
            for ra in a:
                best = max((_iou(ra, rb) for rb in b), default=0.0)
                worst_iou.append(best)
                n_match += best >= 0.9
                n_exact += ra in b
            n_extra += sum(max((_iou(rb, ra) for ra in a), default=0.0) < 0.9 for rb in b)
            scale = img.shape[1] / image.shape[1]
            found["dlib CNN"] += _found([tuple(v / scale for v in r) for r in a], image.shape, centre)
            found["ONNX CNN (runtime)"] += _found([d.box for d in cnn.detect(image)], image.shape, centre)
            found["dlib HOG (runtime)"] += _found([d.box for d in hog.detect(image)], image.shape, centre)
        sets[name] = {"images": len(items), "dlib_cnn_boxes": n_ref, "matched_iou_0_9": n_match,
                      "identical": n_exact, "onnx_extra_boxes": n_extra,
                      "min_best_iou": float(min(worst_iou)) if worst_iou else None,
                      "recall": {k: v / len(items) for k, v in found.items()}}
    # speed at the camera size: GRID frames enlarged to 640x480
    clip = sorted((data / "grid").glob("*.mpg"))[0]
    frames = decode_clip(clip).frames
    frame = cv2.resize(frames[len(frames) // 2].image, (640, 480), interpolation=cv2.INTER_LINEAR)
    full = open_cnn_detector(MODELS, threads=1, max_side=None)
    speed = {
        "frame": f"{clip.name} middle frame enlarged to 640x480",
        "dlib HOG + landmarks (runtime: full frame)": _ms(lambda: hog.detect(frame), 20),
        "ONNX CNN + landmarks, max side 320 (runtime)": _ms(lambda: cnn.detect(frame), 20),
        "ONNX CNN + landmarks, full 640x480": _ms(lambda: full.detect(frame), 10),
        "dlib CNN (CPU), full 640x480": _ms(lambda: ref(frame, 0), 3),
        "ONNX CNN: network only, max side 320": _ms(
            lambda: cnn._runner.run({cnn._input: _tiled_320(cnn, frame)}), 20),
        "faces found in that frame (HOG, CNN 320)": [len(hog.detect(frame)), len(cnn.detect(frame))],
    }
    return {"sets": sets, "speed_ms": speed, "threads": 1, "statistic": "median"}


def _tiled_320(det, frame: np.ndarray) -> np.ndarray:  # noqa: ANN001
    from edge_runtime.frontend.face_cnn import tiled_pyramid

    small = cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)
    return tiled_pyramid(small, det.cfg)[0]


def detector_md(d: dict) -> list[str]:
    m = d["machine"]
    lines = ["## Face detector: dlib's MMOD CNN as ONNX", "",
             f"- run: {m['date']}; {m['cpu']}, {m['memory']}; onnxruntime {m['onnxruntime']}, "
             f"dlib {m['dlib']}; one thread, median",
             "- ONNX: `models/face_detector.onnx` (the network); pyramid, window mapping and NMS in "
             "numpy (`edge_runtime/frontend/face_cnn.py`)", "",
             "Parity with dlib's CNN detector (identical input image, upsample 0; AT&T enlarged "
             "2x for both):", "",
             "| images | dlib CNN boxes | matched by an ONNX box with IoU >= 0.9 | identical boxes | "
             "worst best-IoU | ONNX boxes without a dlib match |", "|---|---|---|---|---|---|"]
    for name, s in d["sets"].items():
        wi = "n/a" if s["min_best_iou"] is None else f"{s['min_best_iou']:.3f}"
        lines.append(f"| {name}: {s['images']} | {s['dlib_cnn_boxes']} | {s['matched_iou_0_9']} | "
                     f"{s['identical']} | {wi} | {s['onnx_extra_boxes']} |")
    lines += ["", "Recall (share of images where the person is found; LFW: a box over the image "
              "centre). ONNX CNN and HOG at the runtime's settings (CNN: frames shrunk to max side "
              "320, photos under 200 px enlarged 2x; HOG: full frame, upsampled retries on small "
              "images); dlib CNN on the same image as in the parity table:", "",
              "| images | dlib CNN % | ONNX CNN (runtime) % | dlib HOG (runtime) % |",
              "|---|---|---|---|"]
    for name, s in d["sets"].items():
        r = s["recall"]
        lines.append(f"| {name} | {100 * r['dlib CNN']:.1f} | {100 * r['ONNX CNN (runtime)']:.1f} | "
                     f"{100 * r['dlib HOG (runtime)']:.1f} |")
    sp = d["speed_ms"]
    lines += ["", f"Speed on one frame ({sp['frame']}), ms, median:", "", "| detector | ms |",
              "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in sp.items() if isinstance(v, float)]
    lines += ["", f"Faces found in that frame (HOG, CNN at 320): {sp['faces found in that frame (HOG, CNN 320)']}.", ""]
    return lines
