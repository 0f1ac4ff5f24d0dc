"""The TensorRT stage of `edgepin export`: engines here if TensorRT is importable, else scripts.

Which engines a target gets (``engine_specs``):
  * ``gpu``: the INT8 QDQ graph, strongly typed where TensorRT allows it (the accuracy gate
    measured exactly this graph); on targets without fast INT8 (Nano, Maxwell) FP16 instead;
  * ``fp16``: the FP32 graph with weak-typed FP16, the fallback precision if an INT8 engine
    misbehaves on the device (impossible on TensorRT 11, which dropped weak typing);
  * ``dla``: for targets with DLA cores on TensorRT < 11: DLA has no explicit quantization, so
    the QDQ graph is stripped back to float and its activation scales are written as a
    TensorRT calibration cache; static batch 1, GPU fallback on.
Profiles: faces batch 1..8 (opt 1: one probe at a time), voice windows batch 1..16 (opt 4:
a 2-5 s utterance), the window length itself is fixed by the model.

Engines and sidecars land in ONE layout, the one the runtime reads (``edge_runtime.models``):
``<out>/tensorrt/<target>/<model>.<variant>.engine`` (+ ``.json`` sidecar keyed by the manifest
ONNX the engine stands for, its precision, TensorRT version and GPU).

Without TensorRT (this workstation) each engine gets a directory with ``build_engine.sh``
(``export.trt_script``: TensorRT family check, trtexec, sidecar) and paths relative to it,
plus, one level up, ``trtexec.txt``, one ``build_all.<device>.sh`` per device of the target
(DLA steps only on devices that have DLA cores: none on the Orin Nano) and ``build_all.sh``,
which picks the device's script from ``/proc/device-tree/model`` (or its first argument). A
failed engine never stops the others; the script lists what failed and exits 1.

JetPack 4 (Nano) and JetPack 5 (Xavier) get no TensorRT stage: their TensorRT Python
bindings are built for the system Python 3.6 / 3.8, and edgepin needs Python >= 3.10, so
the runtime could never load an engine there (``UNSUPPORTED_JETPACK``, docs/jetson.md). They
run the INT8 ONNX with onnxruntime.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from edge_runtime.errors import ModelError
from export.quantize import Target
from export.stages import input_name
from export.tensorrt_build import BuildSpec, TrtApi, strip_qdq, write_calibration_cache
from export.trt_script import SKIPPED, trtexec_command, write_build_script

ASSUMED_GPU_TRT = "10.3.0"  # target `gpu` names no version; scripts are written for this one
UNSUPPORTED_JETPACK = {
    "nano": "JetPack 4.6's TensorRT 8.2 Python bindings are built for Python 3.6",
    "xavier": "JetPack 5's TensorRT 8.5 Python bindings are built for Python 3.8",
}


@dataclass(frozen=True)
class Device:
    """One board of a target: its name, how /proc/device-tree/model names it, DLA cores."""

    name: str
    model_pattern: str  # bash case pattern for /proc/device-tree/model
    dla_cores: int


# DLA: 2 cores on the AGX Orin and the Orin NX 16GB, 1 on the Orin NX 8GB, none on the Orin
# Nano (Jetson Orin modules data sheets). Only core 0 is used, so every NX has what it needs.
DEVICES: dict[str, tuple[Device, ...]] = {
    "orin": (Device("orin-nano", "*Orin\\ Nano*", 0), Device("orin-nx", "*Orin\\ NX*", 1),
             Device("orin-agx", "*AGX\\ Orin*", 2)),
    "gpu": (Device("gpu", "*", 0),),
}
WORKSPACE_MB = {"nano": 256, "xavier": 512, "orin": 512, "gpu": 2048}
BATCH = {"face": (1, 1, 8), "voice": (1, 4, 16), "face_large": (1, 1, 8)}
# Models that get no DLA engine, and why (the report's planned list shows the GPU ones only).
NO_DLA = {"face_large": "dlib's ResNet zero-pads the channels of its shortcut in every "
                        "down-sampling block (5 Pad layers, not a DLA layer): each would fall "
                        "back to the GPU, splitting the network into GPU/DLA segments; and the "
                        "DLA build needs the QDQ-stripped FP32 graph (22 MB) on the device"}
# FP32 graphs that are generated where onnx is installed, not shipped: their FP16 engine step
# is skipped with this hint on a device that does not have the file (the INT8 one builds).
GENERATED_FP32 = {"face_large": "it is generated, not committed: run `edgepin port-dlib "
                                "--face-large --models DIR` where the onnx package is "
                                "installed and copy face_large.onnx next to face_large.int8.onnx"}


def profiles(modality: str, sample_shape: tuple[int, ...], *, static: bool = False
             ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of the single student input; ``static`` pins batch 1 (DLA)."""
    name = input_name(modality)
    lo, opt, hi = (1, 1, 1) if static else BATCH[modality]
    return {name: tuple((b, *sample_shape) for b in (lo, opt, hi))}


def target_trt_version(target: Target) -> Version:
    return Version(target.tensorrt or ASSUMED_GPU_TRT)


def engine_specs(target: Target, modality: str, fp32: Path, int8: Path,
                 sample_shape: tuple[int, ...], work_dir: Path, trt_version: Version,
                 *, dla: bool = True) -> list[tuple[str, BuildSpec]]:
    """(variant, spec) for every engine ``target`` should get for one student."""
    specs: list[tuple[str, BuildSpec]] = []
    prof = profiles(modality, sample_shape)
    ws = WORKSPACE_MB.get(target.name, 1024)
    timing = work_dir / "timing.cache"
    if target.fast_int8:
        specs.append(("gpu", BuildSpec(int8, "int8-qdq", prof, workspace_mb=ws, timing_cache=timing,
                                       engine=work_dir / f"{modality}.int8.engine")))
    if trt_version.major < 11:
        specs.append(("fp16", BuildSpec(fp32, "fp16", prof, workspace_mb=ws, timing_cache=timing,
                                        strongly_typed=None if trt_version.major < 10 else False,
                                        engine=work_dir / f"{modality}.fp16.engine")))
    if dla and target.dla_cores and trt_version.major < 11 and target.fast_int8 \
            and modality not in NO_DLA:
        stripped = strip_qdq(int8, int8.with_name(f"{modality}.int8.dla.onnx"))
        cache = write_calibration_cache(int8, int8.with_name(f"{modality}.int8.dla.calib"),
                                        trt_version=trt_version)
        specs.append(("dla", BuildSpec(stripped, "int8-qdq", profiles(modality, sample_shape,
                                                                        static=True),
                                       workspace_mb=ws, dla_core=0, calibration_cache=cache,
                                       engine=work_dir / f"{modality}.int8.dla0.engine",
                                       source_onnx=int8)))
    return specs


def detector_specs(target: Target, fp32: Path | None, int8: Path | None, work_dir: Path,
                   trt_version: Version) -> list[tuple[str, BuildSpec]]:
    """Engines of the face detector (``export.detector``): INT8 from its QDQ graph (strongly
    typed where TensorRT allows it) and FP16 from the FP32 graph (weak typing, < 11), each
    only if its gate passed (None). One dynamic-shape profile for the pyramid
    (``export.detector.PROFILE``); no DLA engine: DLA needs static shapes."""
    from export.detector import DETECTOR, PROFILE

    ws = WORKSPACE_MB.get(target.name, 1024)
    timing = work_dir / "timing.cache"
    specs: list[tuple[str, BuildSpec]] = []
    if int8 is not None and target.fast_int8:
        specs.append(("gpu", BuildSpec(int8, "int8-qdq", PROFILE, workspace_mb=ws,
                                       timing_cache=timing,
                                       engine=work_dir / f"{DETECTOR}.int8.engine")))
    if fp32 is not None and trt_version.major < 11:
        specs.append(("fp16", BuildSpec(fp32, "fp16", PROFILE, workspace_mb=ws,
                                        timing_cache=timing,
                                        strongly_typed=None if trt_version.major < 10 else False,
                                        engine=work_dir / f"{DETECTOR}.fp16.engine")))
    return specs


def _relative(spec: BuildSpec, base: Path) -> BuildSpec:
    def rel(p: Path | None) -> Path | None:
        return None if p is None else Path(os.path.relpath(Path(p).resolve(), base.resolve()))

    return BuildSpec(rel(spec.onnx), spec.precision, spec.profiles, spec.workspace_mb,
                     spec.dla_core, spec.gpu_fallback, rel(spec.timing_cache),
                     spec.strongly_typed, rel(spec.calibration_cache), rel(spec.engine),
                     rel(spec.source))


def devices_of(target: Target) -> tuple[Device, ...]:
    """The boards of ``target`` (a target without a table is one board, DLA as declared)."""
    return DEVICES.get(target.name, (Device(target.name, "*", target.dla_cores),))


def _device_script(target: Target, device: Device, steps: list[tuple[str, BuildSpec]],
                   trt_version: Version, kept: Sequence[str] = ()) -> str:
    """bash for one board: every engine it can run, failures collected, never stopping.
    ``kept``: steps of models this export did not touch, already filtered for this board."""
    lines = ["#!/usr/bin/env bash",
             f"# Build the TensorRT engines of target {target.name} for {device.name} "
             f"({device.dla_cores} DLA core(s)); planned for TensorRT {trt_version}.",
             "# One failed engine never stops the others; exit 1 if any failed.",
             "set -uo pipefail", 'cd "$(dirname "$0")"', "built=(); skipped=(); failed=()"]
    names = list(kept) + [step for step, spec in steps
                          # no such DLA core on this board: never a step here
                          if spec.dla_core is None or spec.dla_core < device.dla_cores]
    for step in names:
        q = shlex.quote(step)
        lines += [f"bash {q}/build_engine.sh; rc=$?",
                  f'if [ $rc -eq 0 ]; then built+=({q}); elif [ $rc -eq {SKIPPED} ]; then '
                  f'skipped+=({q}); else failed+=({q}); fi']
    lines += [f'echo "{device.name}: built ${{#built[@]}} engine(s): ${{built[*]:-}}; '
              'skipped (not on this TensorRT): ${skipped[*]:-none}; failed: ${failed[*]:-none}"',
              'if [ ${#failed[@]} -gt 0 ]; then exit 1; fi']
    return "\n".join(lines) + "\n"


def _dispatcher(target: Target, devices: tuple[Device, ...]) -> str:
    names = " ".join(d.name for d in devices)
    cases = "\n".join(f"    {d.model_pattern}) DEVICE={d.name} ;;" for d in devices)
    return f"""#!/usr/bin/env bash
# Build every engine of target {target.name} for THIS board: build_all.<device>.sh, the device
# taken from the first argument, $EDGEPIN_DEVICE or /proc/device-tree/model ({names}).
set -euo pipefail
cd "$(dirname "$0")"
DEVICE="${{1:-${{EDGEPIN_DEVICE:-}}}}"
MODEL="$(tr -d '\\0' < /proc/device-tree/model 2>/dev/null || true)"
if [ -z "$DEVICE" ]; then
  case "$MODEL" in
{cases}
  esac
fi
if [ -z "$DEVICE" ] || [ ! -f "build_all.$DEVICE.sh" ]; then
  echo "unknown device '$DEVICE' (board: ${{MODEL:-unknown}}): run build_all.sh DEVICE," \\
       "DEVICE one of: {names}" >&2
  exit 2
fi
exec bash "build_all.$DEVICE.sh"
"""


_STEP = re.compile(r"^bash (\S+)/build_engine\.sh;", re.M)
_ENGINE = re.compile(r"--saveEngine=(\S+)")


def _kept_steps(root: Path, device: Device, models: set[str]) -> list[str]:
    """Steps of an earlier export's build_all.<device>.sh for models this export does not
    make (exporting only face_large keeps the students' engines in build_all)."""
    path = root / f"build_all.{device.name}.sh"
    if not path.is_file():
        return []
    return [step for step in _STEP.findall(path.read_text())
            if step.rsplit("-", 1)[0] not in models and (root / step / "build_engine.sh").is_file()]


def _kept_commands(root: Path, models: set[str]) -> list[str]:
    """trtexec.txt lines of an earlier export for models this export does not make."""
    path = root / "trtexec.txt"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        engine = _ENGINE.search(line)
        if engine and Path(engine.group(1)).name.split(".")[0] not in models:
            out.append(line)
    return out


def write_scripts(target: Target, jobs: list[tuple[str, str, BuildSpec]], root: Path,
                  trt_version: Version, export_out: Path | None = None) -> dict[str, Any]:
    """One build_engine.sh per (model, variant), build_all[.<device>].sh and trtexec.txt;
    the build_all scripts keep the steps of models an earlier export made and this one did
    not."""
    root.mkdir(parents=True, exist_ok=True)
    models = {m for m, _, _ in jobs}
    kept = {d.name: _kept_steps(root, d, models) for d in devices_of(target)}
    kept_commands = _kept_commands(root, models)
    scripts, commands, steps = [], {}, []
    for modality, variant, spec in jobs:
        d = root / f"{modality}-{variant}"
        d.mkdir(exist_ok=True)
        local = _relative(spec, d)
        scripts.append(write_build_script(
            local, d, trt_version=trt_version, target=target.name, export_out=export_out,
            if_missing=GENERATED_FP32.get(modality) if spec.precision == "fp16" else None))
        commands[f"{modality}-{variant}"] = trtexec_command(
            _relative(spec, root), trt_version=trt_version)
        steps.append((d.name, spec))
    per_device = {}
    for device in devices_of(target):
        path = root / f"build_all.{device.name}.sh"
        path.write_text(_device_script(target, device, steps, trt_version, kept[device.name]))
        path.chmod(0o755)
        per_device[device.name] = str(path)
    build_all = root / "build_all.sh"
    build_all.write_text(_dispatcher(target, devices_of(target)))
    build_all.chmod(0o755)
    txt = root / "trtexec.txt"
    txt.write_text(f"# run from {root.name}/ on the device (TensorRT {trt_version})\n"
                   + "\n".join([*kept_commands, *commands.values()]) + "\n")
    return {"build_all": str(build_all), "build_device": per_device,
            "scripts": [str(s) for s in scripts], "trtexec": commands, "trtexec_file": str(txt)}


def build_engines(target: Target, jobs: list[tuple[str, str, BuildSpec]], trt: Any
                  ) -> list[dict[str, Any]]:
    """Build each engine with the installed TensorRT and write its sidecar (on the device).

    DLA engines are skipped where the board has no such DLA core; one failed engine is
    recorded and the next one built.
    """
    from edge_runtime.engine_meta import current_key, write_sidecar

    api = TrtApi(trt.__version__)
    dla_cores = int(getattr(trt.Builder(trt.Logger(trt.Logger.WARNING)), "num_DLA_cores", 0))
    done = []
    for modality, variant, spec in jobs:
        row: dict[str, Any] = {"model": modality, "variant": variant, "engine": str(spec.engine)}
        if spec.dla_core is not None and spec.dla_core >= dla_cores:
            row.update(ok=None, skipped=f"this device has {dla_cores} DLA core(s)")
            done.append(row)
            continue
        try:
            blob = api.build(spec, trt=trt)
            Path(spec.engine).write_bytes(blob)
            key = current_key(spec.source, precision=spec.precision, profiles=spec.profiles,
                              trt_version=trt.__version__, dla_core=spec.dla_core)
            write_sidecar(Path(spec.engine), key, target=target.name)
            row.update(ok=True, bytes=len(blob))
        except Exception as exc:  # noqa: BLE001 - TensorRT raises assorted types; keep going
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        done.append(row)
    return done


def tensorrt_stage(target: Target, students: dict[str, dict[str, Any]], out: Path,
                   *, dla: bool = True) -> dict[str, Any]:
    """Engines or build scripts for ``students`` (modality -> {fp32, int8, sample_shape})."""
    if not target.uses_tensorrt:
        return {"available": None, "note": "target cpu: onnxruntime only, no TensorRT engines"}
    if target.name in UNSUPPORTED_JETPACK:
        return {"available": None,
                "note": f"target {target.name}: no TensorRT engines. "
                        f"{UNSUPPORTED_JETPACK[target.name]} and edgepin needs Python >= 3.10, "
                        "so its runtime cannot load TensorRT there; run the INT8 ONNX with "
                        "--backend onnxruntime (docs/jetson.md)"}
    try:
        import tensorrt as trt
    except ImportError as exc:
        trt, reason = None, str(exc)
    version = Version(trt.__version__) if trt is not None else target_trt_version(target)
    root = out / "tensorrt" / target.name
    root.mkdir(parents=True, exist_ok=True)
    jobs = []
    for modality, s in students.items():
        if s.get("sample_shape") is None:  # the face detector: dynamic pyramid input
            specs = detector_specs(target, None if s["fp32"] is None else Path(s["fp32"]),
                                   None if s["int8"] is None else Path(s["int8"]), root, version)
        else:
            specs = engine_specs(target, modality, Path(s["fp32"]), Path(s["int8"]),
                                 tuple(s["sample_shape"]), root, version, dla=dla)
        jobs += [(modality, variant, spec) for variant, spec in specs]
    if not jobs:
        raise ModelError(f"target {target.name}: no engine to build")
    scripts = write_scripts(target, jobs, root, version, export_out=out)
    report: dict[str, Any] = {
        "trt_version": str(version), "target_trt": target.tensorrt, **scripts,
        "planned": [{"model": m, "variant": v, "engine": str(spec.engine),
                     "onnx": str(spec.source), "precision": spec.precision,
                     "dla_core": spec.dla_core} for m, v, spec in jobs]}
    if trt is None:
        report["available"] = False
        report["note"] = (f"TensorRT is not installed here ({reason}): no engines built; run "
                          f"{scripts['build_all']} on the {target.name} device "
                          f"(planned for TensorRT {version}, runs on 8.x/10.x/11.x; trtexec "
                          f"lines in {scripts['trtexec_file']})")
        return report
    report["available"] = True
    if target.tensorrt and Version(target.tensorrt).release[:2] != version.release[:2]:
        report["warning"] = (f"target {target.name} ships TensorRT {target.tensorrt}, this machine "
                             f"has {version}: engines built here only run on this TensorRT")
    report["engines"] = build_engines(target, jobs, trt)
    failed = [e for e in report["engines"] if e["ok"] is False]
    built = [e for e in report["engines"] if e["ok"]]
    report["note"] = (f"built {len(built)} of {len(jobs)} TensorRT {version} engines in {root}"
                      + (f"; failed: {[e['engine'] for e in failed]}" if failed else ""))
    return report
