"""What this machine can run: backends, camera stack, audio, teachers.

Every probe catches its own failure and reports the reason: `edgepin info` must work on a
machine with no GPU, camera, microphone or PortAudio, which is exactly when people run it.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path
from typing import Any

from edge_runtime import __version__


def dist_version(name: str) -> str | None:
    """Installed version of a distribution, None when it is absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_identity() -> tuple[str, set[str]]:
    """CPU model name and feature flags (from /proc/cpuinfo; flags empty elsewhere).

    Every benchmark table records these: a latency, or an INT8 kernel result that depends
    on VNNI, means nothing without the CPU it was measured on.
    """
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if model is None and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif flags is None and line.startswith(("flags", "Features")):  # x86, ARM
                    flags = set(line.split(":", 1)[1].split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    flags = flags or set()
    return model, flags


def onnxruntime_info() -> dict[str, Any]:
    """onnxruntime version and execution providers, or why it is unusable."""
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to report
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {
        "available": True,
        "version": ort.__version__,
        "providers": list(ort.get_available_providers()),
    }


def tensorrt_info() -> dict[str, Any]:
    """TensorRT version, or why the TensorRT backend cannot be used here."""
    if importlib.util.find_spec("tensorrt") is None:
        return {"available": False, "reason": "tensorrt Python package not installed"}
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - e.g. libnvinfer missing
        return {"available": False, "reason": f"import tensorrt failed: {exc}"}
    return {"available": True, "version": trt.__version__}


def cuda_info() -> dict[str, Any]:
    """CUDA runtime version via libcudart, without needing cuda-python or a GPU driver."""
    for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.13"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        ver = ctypes.c_int(0)
        if lib.cudaRuntimeGetVersion(ctypes.byref(ver)) != 0:
            continue
        count = ctypes.c_int(0)
        status = lib.cudaGetDeviceCount(ctypes.byref(count))
        major, minor = divmod(ver.value // 10, 100)
        return {
            "available": status == 0 and count.value > 0,
            "runtime": f"{major}.{minor}",
            "devices": count.value if status == 0 else 0,
            "reason": None if status == 0 and count.value > 0 else f"no CUDA device (status {status})",
        }
    return {"available": False, "reason": "CUDA runtime library (libcudart) not found"}


def jetpack_info() -> str | None:
    """L4T release string on a Jetson, None elsewhere."""
    path = Path("/etc/nv_tegra_release")
    if not path.is_file():
        return None
    return path.read_text(errors="replace").splitlines()[0].strip("# ").strip()


def opencv_info() -> dict[str, Any]:
    """OpenCV version and whether it was built with GStreamer (needed for csi:// cameras)."""
    try:
        import cv2
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    gstreamer = False
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            gstreamer = line.split(":", 1)[1].strip().upper().startswith("YES")
    return {"available": True, "version": cv2.__version__, "gstreamer": gstreamer}


def audio_info() -> dict[str, Any]:
    """Audio input devices through PortAudio, or why there are none."""
    try:
        import sounddevice as sd
    except OSError as exc:
        return {
            "available": False,
            "inputs": [],
            "reason": f"{exc} (install the system package libportaudio2)",
        }
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "inputs": [], "reason": f"{type(exc).__name__}: {exc}"}
    try:
        devices = sd.query_devices()
    except Exception as exc:  # noqa: BLE001 - PortAudio present but no host API / devices
        return {"available": False, "inputs": [], "reason": str(exc)}
    inputs = [
        {"index": i, "name": d["name"], "channels": d["max_input_channels"],
         "default_samplerate": d["default_samplerate"]}
        for i, d in enumerate(devices) if d["max_input_channels"] > 0
    ]
    return {
        "available": bool(inputs),
        "inputs": inputs,
        "reason": None if inputs else "PortAudio found no input device",
    }


def camera_info() -> dict[str, Any]:
    """V4L2 device nodes present (CSI cameras appear only through GStreamer on a Jetson)."""
    nodes = sorted(glob.glob("/dev/video*"))
    return {"v4l2": nodes, "reason": None if nodes else "no /dev/video* device"}


def teachers_info() -> dict[str, Any]:
    """Whether the pretrained teachers are installed (checked without importing torch)."""
    face: dict[str, Any] = {"dlib": dist_version("dlib-bin") or dist_version("dlib")}
    spec = importlib.util.find_spec("face_recognition_models")
    if spec and spec.origin:
        models = Path(spec.origin).parent / "models"
        face["resnet_model"] = (models / "dlib_face_recognition_resnet_model_v1.dat").is_file()
        face["shape_predictor_5"] = (models / "shape_predictor_5_face_landmarks.dat").is_file()
    else:
        face["resnet_model"] = face["shape_predictor_5"] = False
    face["installed"] = bool(face["dlib"] and face["resnet_model"] and face["shape_predictor_5"])
    voice = {
        "resemblyzer": dist_version("resemblyzer"),
        "torch": dist_version("torch"),
    }
    voice["installed"] = bool(voice["resemblyzer"] and voice["torch"])
    return {"face": face, "voice": voice}


def vad_info() -> dict[str, Any]:
    """Which voice-activity detectors the speech gate can use."""
    silero = None
    spec = importlib.util.find_spec("silero_vad")
    if spec and spec.origin:
        onnx = Path(spec.origin).parent / "data" / "silero_vad.onnx"
        silero = str(onnx) if onnx.is_file() else None
    return {"silero_onnx": silero, "webrtcvad": importlib.util.find_spec("webrtcvad") is not None}


def collect() -> dict[str, Any]:
    """The full report, as plain JSON-serialisable data."""
    return {
        "edgepin": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "jetpack": jetpack_info(),
        "backends": {
            "onnxruntime": onnxruntime_info(),
            "tensorrt": tensorrt_info(),
            "cuda": cuda_info(),
        },
        "opencv": opencv_info(),
        "audio": audio_info(),
        "camera": camera_info(),
        "vad": vad_info(),
        "teachers": teachers_info(),
    }
