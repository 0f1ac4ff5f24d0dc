"""Which TensorRT engine belongs to which ONNX file, TensorRT version and GPU.

A serialized engine is only valid for the exact ONNX it was built from, the TensorRT version
(major.minor at least), the GPU (compute capability) and the build settings. A stale engine
either fails to deserialize or, worse, runs a different model than the one that passed the
accuracy gate. Every engine therefore carries a JSON sidecar (``face.int8.engine`` ->
``face.int8.engine.json``) recording its ``EngineKey``; ``check_engine`` compares it with the
machine and says exactly what differs and how to rebuild.

One layout, written by ``edgepin export`` (or its device scripts) and read by the runtime:
``<out>/tensorrt/<target>/<model>.<variant>.engine`` + sidecar. The runtime never trusts a
file name: ``find_engines`` reads every sidecar under the engines folder and the bundle picks
the one whose key names the manifest's ONNX (sha256), the precision asked for, and this
machine's TensorRT (major.minor) and GPU.

Runs on the device: no torch, onnx or tensorrt at import (tensorrt is imported lazily).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from edge_runtime.atomic import write_atomic
from edge_runtime.bundle import sha256_file
from edge_runtime.errors import EdgepinError, ModelError

SIDECAR_FORMAT = "edgepin-engine/1"
ENGINE_SUFFIX = ".engine"
CALIBRATOR = "EntropyCalibration2"
Shape = tuple[int, ...]


def _trt_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion as exc:
        raise ModelError(f"unparseable TensorRT version {text!r}") from exc


def _norm_profiles(profiles: Mapping[str, Sequence[Sequence[int]]]) -> dict[str, tuple[Shape, ...]]:
    return {
        name: tuple(tuple(int(d) for d in shape) for shape in mom)
        for name, mom in sorted(profiles.items())
    }


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; ``profiles`` maps input -> (min, opt, max) shapes."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    jetpack: str | None
    precision: str
    profiles: dict[str, tuple[Shape, ...]] = field(default_factory=dict)
    dla_core: int | None = None  # None: the GPU; else the DLA core the engine runs on

    def __post_init__(self) -> None:
        object.__setattr__(self, "profiles", _norm_profiles(self.profiles))
        _trt_version(self.trt_version)

    def digest(self) -> str:
        """Stable id for cache directories: TensorRT enters as major.minor only."""
        v = _trt_version(self.trt_version)
        payload = {**self.to_dict(), "trt_version": f"{v.major}.{v.minor}"}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = {k: [list(s) for s in v] for k, v in self.profiles.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        names = ("onnx_sha256", "trt_version", "gpu_name", "compute_capability", "jetpack",
                 "precision", "profiles")
        missing = [n for n in names if n not in data]
        if missing:
            raise ModelError(f"engine key is missing fields {missing}")
        dla = data.get("dla_core")
        return cls(**{n: data[n] for n in names}, dla_core=None if dla is None else int(dla))


def sidecar_path(engine_path: Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def export_out_of(engine_path: Path) -> Path:
    """The ``--out`` of the export that laid ``engine_path`` out (``<out>/tensorrt/<target>/``)."""
    parent = Path(engine_path).parent
    return parent.parent.parent if parent.parent.name == "tensorrt" else parent


def rebuild_command(target: str | None, out: Path) -> str:
    return f"edgepin export --target {target or '<target>'} --out {out}"


def write_sidecar(engine_path: Path, key: EngineKey, *, target: str | None = None) -> Path:
    """Record ``key`` (plus the engine's own sha256) next to an existing engine file."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise ModelError(f"engine {engine_path} does not exist; cannot write its sidecar")
    data = {
        "format": SIDECAR_FORMAT,
        "key": key.to_dict(),
        "digest": key.digest(),
        "engine_sha256": sha256_file(engine_path),
        "target": target,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(data, indent=2, sort_keys=True)
    return write_atomic(sidecar_path(engine_path), lambda fh: fh.write(text.encode()))


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The sidecar as a dict with ``key`` parsed into an EngineKey."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ModelError(f"engine {engine_path} has no sidecar {path}; its origin is unknown")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: also bytes that are not UTF-8
        raise ModelError(f"engine sidecar {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"engine sidecar {path}: format {found!r}, "
                         f"expected {SIDECAR_FORMAT!r}")
    if not isinstance(data.get("key", {}), dict):
        raise ModelError(f"engine sidecar {path}: 'key' is not an object")
    try:
        data["key"] = EngineKey.from_dict(data.get("key", {}))
    except (TypeError, ValueError, AttributeError) as exc:  # damaged field values
        raise ModelError(f"engine sidecar {path}: invalid key ({exc})") from exc
    return data


def key_differences(built: EngineKey, current: EngineKey) -> list[str]:
    """Human-readable list of what makes an engine built for ``built`` unusable on ``current``."""
    diffs = []
    vb, vc = _trt_version(built.trt_version), _trt_version(current.trt_version)
    if (vb.major, vb.minor) != (vc.major, vc.minor):
        diffs.append(f"TensorRT: engine built with {vb}, this machine has {vc}")
    for name, label in (("onnx_sha256", "ONNX model (sha256)"), ("gpu_name", "GPU"),
                        ("compute_capability", "compute capability"), ("jetpack", "JetPack/L4T"),
                        ("precision", "precision"), ("profiles", "shape profiles"),
                        ("dla_core", "DLA core")):
        a, b = getattr(built, name), getattr(current, name)
        if a != b:
            if name == "onnx_sha256":
                a, b = f"{a[:12]}...", f"{b[:12]}..."
            diffs.append(f"{label}: engine has {a}, expected {b}")
    return diffs


def check_engine(engine_path: Path, current: EngineKey) -> None:
    """Raise ModelError unless ``engine_path`` was built for ``current``; say how to rebuild."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise ModelError(f"engine {engine_path} does not exist; build it with: "
                         f"{rebuild_command(None, export_out_of(engine_path))}")
    meta = read_sidecar(engine_path)
    fix = rebuild_command(meta.get("target"), export_out_of(engine_path))
    problems = key_differences(meta["key"], current)
    if sha256_file(engine_path) != meta.get("engine_sha256"):
        problems.append("engine file changed since its sidecar was written")
    if problems:
        raise ModelError(f"engine {engine_path} does not match this machine/model: "
                         + "; ".join(problems) + f". Rebuild with: {fix}")


def probe_cuda_device(index: int = 0) -> dict[str, str]:
    """GPU name and compute capability through the CUDA driver API (libcuda), no toolkit."""
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        raise ModelError("CUDA driver library (libcuda.so) not found: no NVIDIA GPU here")
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h)
    calls = [("cuInit", lambda: cuda.cuInit(0)),
             ("cuDeviceGet", lambda: cuda.cuDeviceGet(ctypes.byref(dev), index)),
             ("cuDeviceGetName", lambda: cuda.cuDeviceGetName(name, 256, dev)),
             ("cuDeviceGetAttribute", lambda: cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)),
             ("cuDeviceGetAttribute", lambda: cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev))]
    for label, call in calls:
        status = call()
        if status != 0:
            raise ModelError(f"CUDA driver call {label} failed with status {status}")
    return {"gpu_name": name.value.decode(errors="replace"),
            "compute_capability": f"{major.value}.{minor.value}"}


def current_key(onnx_path: Path, *, precision: str,
                profiles: Mapping[str, Sequence[Sequence[int]]],
                trt_version: str | None = None, dla_core: int | None = None) -> EngineKey:
    """The EngineKey of ``onnx_path`` on this machine (imports tensorrt if no version given).

    ``onnx_path`` is the model the engine stands for: the manifest's file, also when the
    build parsed a derived graph (a DLA build parses the QDQ graph stripped back to float).
    """
    machine = machine_identity(trt_version)
    return EngineKey(onnx_sha256=sha256_file(Path(onnx_path)), precision=precision,
                     profiles=profiles, dla_core=dla_core, **machine)


def machine_identity(trt_version: str | None = None) -> dict[str, str | None]:
    """This machine's TensorRT version, GPU name, compute capability and JetPack release."""
    from edge_runtime.sysinfo import jetpack_info

    if trt_version is None:
        try:
            import tensorrt
        except ImportError as exc:
            raise ModelError(f"tensorrt is not importable ({exc}); pass the TensorRT version "
                             "explicitly") from exc
        trt_version = tensorrt.__version__
    dev = probe_cuda_device()
    return {"trt_version": str(trt_version), "gpu_name": dev["gpu_name"],
            "compute_capability": dev["compute_capability"], "jetpack": jetpack_info()}


def for_machine(key: EngineKey, machine: Mapping[str, str | None]) -> EngineKey:
    """``key`` with its machine fields replaced: what the same engine needs to be here."""
    return replace(key, **{k: machine[k] for k in ("trt_version", "gpu_name",
                                                   "compute_capability", "jetpack")})


def find_engines(root: Path) -> list[tuple[Path, EngineKey]]:
    """Every engine under ``root`` (any depth) with a readable sidecar, and its key."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob(f"*{ENGINE_SUFFIX}")) if root.is_dir() else []:
        try:
            found.append((path, read_sidecar(path)["key"]))
        except EdgepinError:
            continue  # an engine of unknown origin is never a candidate
    return found


# ------------------------------------------------------------------ calibration caches
def trt_version_int(version: Version | str) -> int:
    """NV_TENSORRT_VERSION as used in calibration-cache headers: 8502 for 8.5.2, 100300 for 10.3.0."""
    v = _trt_version(str(version))
    major, minor, patch = (tuple(v.release) + (0, 0, 0))[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def calibration_header(trt_version: Version | str) -> str:
    """First line of a calibration cache written for ``trt_version``."""
    return f"TRT-{trt_version_int(trt_version)}-{CALIBRATOR}"


def check_calibration_cache(path: Path, trt_version: Version | str) -> None:
    """Refuse a calibration cache whose header is not this TensorRT's.

    TensorRT skips a cache it judges incompatible, silently, and then calibrates: with no
    data (a cache-only calibrator, trtexec without --calib data) that means random data and
    an INT8 engine with meaningless scales. Refusing here keeps that from ever happening.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"calibration cache {path} does not exist")
    with path.open("rb") as fh:
        first = fh.readline().decode("ascii", errors="replace").strip()
    want = calibration_header(trt_version)
    if first != want:
        raise ModelError(f"calibration cache {path} starts with {first!r}, TensorRT "
                         f"{trt_version} needs {want!r}: TensorRT would ignore it and calibrate "
                         "on random data. Re-export for this TensorRT version (edgepin export "
                         "on a machine with it, or export.tensorrt_build.write_calibration_cache"
                         " with trt_version set)")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m edge_runtime.engine_meta write ...``: the device build script's last step."""
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.engine_meta")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, text in (("write", "write the sidecar of a freshly built engine"),
                      ("check", "check an engine against this machine")):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("--engine", type=Path, required=True)
        p.add_argument("--onnx", type=Path, required=True,
                       help="the manifest ONNX the engine stands for")
        p.add_argument("--precision", required=True)
        p.add_argument("--profiles", required=True, help='JSON: {"input": [min, opt, max]}')
        p.add_argument("--dla-core", type=int, default=None, help="DLA engines: the core")
        p.add_argument("--trt-version", default=None, help="default: tensorrt.__version__")
        p.add_argument("--target", default=None, help="recorded for the rebuild hint")
    calib = sub.add_parser("check-calib", help="refuse a calibration cache of another TensorRT")
    calib.add_argument("--cache", type=Path, required=True)
    calib.add_argument("--trt-version", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "check-calib":
        check_calibration_cache(args.cache, args.trt_version)
        print(f"{args.cache}: OK for TensorRT {args.trt_version}")
        return
    key = current_key(args.onnx, precision=args.precision, profiles=json.loads(args.profiles),
                      trt_version=args.trt_version, dla_core=args.dla_core)
    if args.cmd == "write":
        print(write_sidecar(args.engine, key, target=args.target))
    else:
        check_engine(args.engine, key)
        print(f"{args.engine}: OK")


if __name__ == "__main__":
    try:
        main()
    except EdgepinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
