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

Without TensorRT (this workstation) each engine gets a directory with ``build_engine.sh``
(``export.trt_script``: version check, trtexec, sidecar) and paths relative to it, plus a
``build_all.sh`` and ``trtexec.txt`` one level up, so the folder can be copied to the device.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from packaging.version import Version

from edge_runtime.errors import EdgepinError, ModelError
from export.quantize import Target
from export.tensorrt_build import BuildSpec, TrtApi, strip_qdq, write_calibration_cache
from export.trt_script import trtexec_command, write_build_script

ASSUMED_GPU_TRT = "10.3.0"  # target `gpu` names no version; scripts are written for this one
WORKSPACE_MB = {"nano": 256, "xavier": 512, "orin": 512, "gpu": 2048}
BATCH = {"face": (1, 1, 8), "voice": (1, 4, 16)}


def profiles(modality: str, sample_shape: tuple[int, ...], *, static: bool = False
             ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of the single student input; ``static`` pins batch 1 (DLA)."""
    name = "face" if modality == "face" else "feats"
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
    if dla and target.dla_cores and trt_version.major < 11 and target.fast_int8:
        stripped = strip_qdq(int8, int8.with_name(f"{modality}.int8.dla.onnx"))
        cache = write_calibration_cache(int8, int8.with_name(f"{modality}.int8.dla.calib"),
                                        trt_version=trt_version)
        specs.append(("dla", BuildSpec(stripped, "int8-qdq", profiles(modality, sample_shape,
                                                                        static=True),
                                       workspace_mb=ws, dla_core=0, calibration_cache=cache,
                                       engine=work_dir / f"{modality}.int8.dla0.engine")))
    return specs


def _relative(spec: BuildSpec, base: Path) -> BuildSpec:
    def rel(p: Path | None) -> Path | None:
        return None if p is None else Path(os.path.relpath(Path(p).resolve(), base.resolve()))

    return BuildSpec(rel(spec.onnx), spec.precision, spec.profiles, spec.workspace_mb,
                     spec.dla_core, spec.gpu_fallback, rel(spec.timing_cache),
                     spec.strongly_typed, rel(spec.calibration_cache), rel(spec.engine))


def write_scripts(target: Target, jobs: list[tuple[str, str, BuildSpec]], root: Path,
                  trt_version: Version) -> dict[str, Any]:
    """One build_engine.sh per (model, variant), build_all.sh and trtexec.txt under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    scripts, commands = [], {}
    for modality, variant, spec in jobs:
        d = root / f"{modality}-{variant}"
        d.mkdir(exist_ok=True)
        local = _relative(spec, d)
        scripts.append(write_build_script(local, d, trt_version=trt_version, target=target.name))
        commands[f"{modality}-{variant}"] = trtexec_command(
            _relative(spec, root), trt_version=trt_version)
    lines = ["#!/usr/bin/env bash",
             f"# Build every engine for target {target.name} ({target.devices}), TensorRT "
             f"{trt_version}. Run on the device.",
             "set -euo pipefail", 'cd "$(dirname "$0")"']
    lines += [f"bash {shlex.quote(str(s.relative_to(root)))}" for s in scripts]
    build_all = root / "build_all.sh"
    build_all.write_text("\n".join(lines) + "\n")
    build_all.chmod(0o755)
    txt = root / "trtexec.txt"
    txt.write_text(f"# run from {root.name}/ on the device (TensorRT {trt_version})\n"
                   + "\n".join(commands.values()) + "\n")
    return {"build_all": str(build_all), "scripts": [str(s) for s in scripts],
            "trtexec": commands, "trtexec_file": str(txt)}


def build_engines(target: Target, jobs: list[tuple[str, str, BuildSpec]], trt: Any
                  ) -> list[dict[str, Any]]:
    """Build each engine with the installed TensorRT and write its sidecar (on the device)."""
    from edge_runtime.engine_meta import current_key, write_sidecar

    api = TrtApi(trt.__version__)
    done = []
    for modality, variant, spec in jobs:
        row: dict[str, Any] = {"model": modality, "variant": variant, "engine": str(spec.engine)}
        try:
            blob = api.build(spec, trt=trt)
            Path(spec.engine).write_bytes(blob)
            key = current_key(spec.onnx, precision=spec.precision, profiles=spec.profiles,
                              trt_version=trt.__version__)
            write_sidecar(Path(spec.engine), key, target=target.name)
            row.update(ok=True, bytes=len(blob))
        except EdgepinError as exc:
            row.update(ok=False, error=str(exc))
        done.append(row)
    return done


def tensorrt_stage(target: Target, students: dict[str, dict[str, Any]], out: Path,
                   *, dla: bool = True) -> dict[str, Any]:
    """Engines or build scripts for ``students`` (modality -> {fp32, int8, sample_shape})."""
    if not target.uses_tensorrt:
        return {"available": None, "note": "target cpu: onnxruntime only, no TensorRT engines"}
    try:
        import tensorrt as trt
    except ImportError as exc:
        trt, reason = None, str(exc)
    version = Version(trt.__version__) if trt is not None else target_trt_version(target)
    root = out / "tensorrt" / target.name
    root.mkdir(parents=True, exist_ok=True)
    jobs = []
    for modality, s in students.items():
        for variant, spec in engine_specs(target, modality, Path(s["fp32"]), Path(s["int8"]),
                                          tuple(s["sample_shape"]), root, version, dla=dla):
            jobs.append((modality, variant, spec))
    if not jobs:
        raise ModelError(f"target {target.name}: no engine to build")
    scripts = write_scripts(target, jobs, root, version)
    report: dict[str, Any] = {"trt_version": str(version), "target_trt": target.tensorrt,
                              **scripts}
    if trt is None:
        report["available"] = False
        report["note"] = (f"TensorRT is not installed here ({reason}): no engines built; run "
                          f"{scripts['build_all']} on the {target.name} device "
                          f"(TensorRT {version}; trtexec lines in {scripts['trtexec_file']})")
        return report
    report["available"] = True
    if target.tensorrt and Version(target.tensorrt).release[:2] != version.release[:2]:
        report["warning"] = (f"target {target.name} ships TensorRT {target.tensorrt}, this machine "
                             f"has {version}: engines built here only run on this TensorRT")
    report["engines"] = build_engines(target, jobs, trt)
    failed = [e for e in report["engines"] if not e["ok"]]
    report["note"] = (f"built {len(jobs) - len(failed)} of {len(jobs)} TensorRT {version} engines "
                      f"in {root}" + (f"; failed: {[e['engine'] for e in failed]}" if failed else ""))
    return report
