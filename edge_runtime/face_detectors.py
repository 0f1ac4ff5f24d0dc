"""Which face detector the runtime uses: dlib's MMOD CNN as a network, or dlib HOG.

The CNN (`face_detector` in the models manifest, from `export/dlib`) finds more faces than HOG
(turned and partly lit ones, benchmarks/dlib_onnx.md) and runs on any backend; HOG runs only on
the CPU. `auto` picks:

- the CNN when the backend is TensorRT and an engine built from the detector's ONNX exists
  (a network on the GPU is the cheap option on a Jetson);
- otherwise the faster of the two on this machine, timed now on an idle frame of the camera's
  size (what the loop spends when nobody is at the door): the CNN at its working resolution
  (`max_side`, 320 by default), HOG on the full frame as the runtime has always run it;
- HOG when the bundle has no detector (older `models/` folders).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.bundle import load_manifest
from edge_runtime.errors import ConfigError, DependencyError, ModelError
from edge_runtime.frontend.face import DlibHogDetector, FaceDetector
from edge_runtime.frontend.face_cnn import MmodConfig, MmodDetector
from edge_runtime.frontend.face_roi import RoiSettings, RoiTracker

DETECTORS = ("auto", "cnn", "hog")
DETECTOR_ENTRY = "face_detector"


@dataclass
class DetectorChoice:
    """The detector in use and why (printed by `edgepin run` / `bench`)."""

    detector: FaceDetector
    name: str  # "cnn" or "hog"
    reason: str
    timings_ms: dict[str, float]


def open_cnn_detector(models: str | Path, *, backend: str = "onnxruntime", threads: int = 1,
                      engines: str | Path | None = None, max_side: int | None = 320
                      ) -> MmodDetector:
    """The MMOD network of a models folder on onnxruntime or (from a built engine) TensorRT."""
    import onnxruntime as ort

    from edge_runtime.backends import load_runner
    from edge_runtime.models import find_engine, tensorrt_machine

    root = Path(models)
    manifest = load_manifest(root)
    if DETECTOR_ENTRY not in manifest:
        raise ModelError(f"{root}: the manifest has no {DETECTOR_ENTRY!r} model "
                         "(python -m export.dlib.commands writes it)")
    onnx_path = manifest[DETECTOR_ENTRY].verified_path()
    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]
                                ).get_modelmeta().custom_metadata_map
    cfg = MmodConfig.from_metadata(meta)
    if backend == "tensorrt":
        engine_root = Path(engines) if engines is not None else root / "tensorrt"
        # `edgepin export` builds an INT8 engine from the gated QDQ graph and an FP16 one from
        # the FP32 graph (export/detector.py): INT8 when it is there, else FP16
        wanted = [(manifest[f"{DETECTOR_ENTRY}_int8"].sha256, "int8-qdq")] \
            if f"{DETECTOR_ENTRY}_int8" in manifest else []
        wanted.append((manifest[DETECTOR_ENTRY].sha256, "fp16"))
        errors = []
        for sha, precision in wanted:
            try:
                path, expected = find_engine(engine_root, sha, precision, tensorrt_machine(),
                                             model=DETECTOR_ENTRY)
                break
            except ModelError as exc:
                errors.append(str(exc))
        else:
            raise ModelError(" / ".join(errors))
        runner = load_runner(path, backend="tensorrt", expected_key=expected)
    elif backend == "onnxruntime":
        runner = load_runner(onnx_path, backend="onnxruntime", threads=threads)
    else:
        raise ConfigError(f"backend must be onnxruntime or tensorrt, got {backend!r}")
    return MmodDetector(runner, cfg, max_side=max_side)


def _time_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up (first onnxruntime call allocates)
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(ms))


def open_face_detector(choice: str = "auto", *, models: str | Path | None = None,
                       backend: str = "onnxruntime", threads: int = 1,
                       engines: str | Path | None = None, frame_size: tuple[int, int] = (640, 480),
                       max_side: int | None = 320, runs: int = 3,
                       roi: RoiSettings | None = None) -> DetectorChoice:
    """Open the detector `choice` names ("auto": decided as the module docstring says);
    with `roi`, wrapped in a `RoiTracker` (edge_runtime.frontend.face_roi)."""
    found = _open_face_detector(choice, models=models, backend=backend, threads=threads,
                                engines=engines, frame_size=frame_size, max_side=max_side,
                                runs=runs)
    if roi is not None:
        found.detector = RoiTracker(found.detector, roi)  # type: ignore[arg-type]
        found.reason += (f"; ROI tracking (full-frame scan at least every "
                         f"{roi.rescan_every} frames)")
    return found


def _open_face_detector(choice: str, *, models: str | Path | None, backend: str, threads: int,
                        engines: str | Path | None, frame_size: tuple[int, int],
                        max_side: int | None, runs: int) -> DetectorChoice:
    if choice not in DETECTORS:
        raise ConfigError(f"unknown face detector {choice!r}: choose one of {', '.join(DETECTORS)}")
    if choice == "hog":
        return DetectorChoice(DlibHogDetector(), "hog", "asked for (--detector hog)", {})
    has_cnn = models is not None and DETECTOR_ENTRY in load_manifest(models)
    if choice == "cnn":
        if models is None:
            raise ConfigError("the CNN face detector needs a models folder")
        cnn = open_cnn_detector(models, backend=backend, threads=threads, engines=engines,
                                max_side=max_side)
        return DetectorChoice(cnn, "cnn", f"asked for (--detector cnn), on {backend}", {})
    if not has_cnn:
        return DetectorChoice(DlibHogDetector(), "hog", f"no {DETECTOR_ENTRY} in the models", {})
    assert models is not None
    note = ""
    if backend == "tensorrt":
        try:
            cnn = open_cnn_detector(models, backend="tensorrt", engines=engines, max_side=max_side)
            return DetectorChoice(cnn, "cnn", "TensorRT runs the network", {})
        except (ModelError, DependencyError) as exc:  # no engine here: measure on the CPU
            note = f"; no TensorRT detector engine ({exc})"
    cnn = open_cnn_detector(models, backend="onnxruntime", threads=threads, max_side=max_side)
    hog = DlibHogDetector()
    w, h = frame_size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ms = {"cnn": _time_ms(lambda: cnn.detect(frame), runs),
          "hog": _time_ms(lambda: hog.detect(frame), runs)}
    name = "cnn" if ms["cnn"] <= ms["hog"] else "hog"
    reason = (f"faster here on an idle {w}x{h} frame: CNN {ms['cnn']:.1f} ms "
              f"(onnxruntime, at max side {max_side}) vs HOG {ms['hog']:.1f} ms{note}")
    return DetectorChoice(cnn if name == "cnn" else hog, name, reason, ms)
