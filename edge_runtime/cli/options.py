"""What several commands share: the model bundle and gallery from the options, the BLAS
thread setting of the device commands, plug-in functions named on the command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import edge_runtime
from edge_runtime.errors import ConfigError

REPO = Path(edge_runtime.__file__).resolve().parents[1]


def default_models_dir() -> Path:
    """``models/`` at the top of a source checkout."""
    return REPO / "models"


def default_clips_dir() -> Path:
    return REPO / "tests" / "fixtures" / "grid"


def single_thread_blas() -> None:
    """One BLAS thread for the device commands.

    The runtime's matrix products are small (a log-mel filterbank, a gallery matvec), and
    OpenBLAS's thread pool only fights the loop, capture and onnxruntime for the cores:
    measured on this 2-core CPU under load, a 10 000 x 256 matvec took 16 ms with the pool
    and 0.6 ms on one thread, the voice front-end 16 ms vs 1.3 ms. The environment variable
    works when numpy is not loaded yet (the normal `edgepin` case); threadpoolctl, when
    installed, covers an already loaded numpy.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1, user_api="blas")


def gallery_path(args: argparse.Namespace) -> Path:
    from edge_runtime.store.gallery_handle import default_gallery

    return Path(args.gallery) if args.gallery is not None else default_gallery()


def face_detector(args: argparse.Namespace, frame_size: tuple[int, int] = (640, 480)) -> Any:
    """The face detector `--detector` asks for ("auto": see edge_runtime.face_detectors)."""
    import logging

    from edge_runtime.face_detectors import open_face_detector
    from edge_runtime.frontend.face_roi import RoiSettings

    rescan = getattr(args, "roi_rescan", None)
    choice = open_face_detector(
        getattr(args, "detector", "auto"),
        models=args.models if args.models is not None else default_models_dir(),
        backend=args.backend, threads=args.threads, engines=getattr(args, "engines", None),
        frame_size=frame_size, roi=RoiSettings(rescan_every=rescan) if rescan is not None else None)
    logging.getLogger(__name__).info("face detector: %s (%s)", choice.name, choice.reason)
    return choice.detector


def resolve_precision(precision: str, backend: str, models: Path,
                      face_tier: str = "student", voice_tier: str = "student") -> str:
    """``auto``: INT8 on TensorRT when the folder has the INT8 models; on onnxruntime the
    CPU probe's choice (``edge_runtime.cpu_int8``) for the student, FP32 for the large tier
    (its INT8 file is a TensorRT QDQ graph; the FP32 port is the fast one on a CPU).
    The large voice has no INT8 file (it runs FP32 at every precision), so it never decides.
    Anything else unchanged."""
    if precision != "auto":
        return precision
    if backend == "tensorrt":
        from edge_runtime.bundle import load_manifest
        from edge_runtime.models import face_entry_name, voice_entry_name

        entries = load_manifest(models) if (models / "manifest.json").is_file() else {}
        return "int8" if {face_entry_name(face_tier, "int8"),
                          voice_entry_name(voice_tier, "int8")} <= set(entries) else "fp32"
    if face_tier == "large":
        return "fp32"
    from edge_runtime.cpu_int8 import choose

    return choose(models)["precision"]


def resolve_face_tier(tier: str, backend: str, models: Path) -> str:
    """``auto``: the tier the models folder names for this backend (manifest
    ``default_face_tier``, written from the measurements in docs/dlib_port.md), else the
    student. Anything else unchanged."""
    if tier != "auto":
        return tier
    from edge_runtime.bundle import default_face_tier

    return default_face_tier(models, backend)


def model_bundle(args: argparse.Namespace) -> Any:
    from edge_runtime.models import ModelBundle, parse_threshold_overrides

    models = Path(args.models) if args.models is not None else default_models_dir()
    tier = resolve_face_tier(getattr(args, "face_tier", "auto"), args.backend, models)
    voice_tier = getattr(args, "voice_tier", "student")
    return ModelBundle.load(
        models, face_tier=tier, voice_tier=voice_tier,
        precision=resolve_precision(args.precision, args.backend, models, tier, voice_tier),
        backend=args.backend, threads=args.threads,
        engines=getattr(args, "engines", None),
        operating_points=getattr(args, "operating_points", None),
        threshold_overrides=parse_threshold_overrides(args.threshold))


def mic_device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def quiet_opencv() -> None:
    """Keep OpenCV's own warnings (one per failed V4L2 open) out of the output: the capture
    code logs each reconnect as one line instead."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass


def import_function(spec: str) -> Any:
    """``package.module:function`` -> the function (pluggable GPIO actuator)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"--actuator-gpio {spec!r}: expected MODULE:FUNCTION")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--actuator-gpio {spec!r}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"--actuator-gpio {spec!r} is not callable")
    return fn

