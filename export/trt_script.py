"""trtexec command line and a self-contained bash build script for the device.

Engines must be built on the device that runs them (same TensorRT, same GPU), and a Jetson
often has trtexec but not this repository's export stack. ``write_build_script`` writes a bash
script that checks the TensorRT version, runs trtexec with the flags matching
``TrtApi.plan`` (same precision, typing, profiles, workspace, DLA and timing-cache choices)
for the TensorRT family it finds, then records the engine's sidecar with
``python3 -m edge_runtime.engine_meta write`` (keyed by the manifest ONNX the engine stands for).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from packaging.version import Version

from edge_runtime.errors import ModelError
from export.tensorrt_build import BuildSpec, TrtApi


def _shapes(spec: BuildSpec, which: int) -> str:
    return ",".join(
        f"{name}:{'x'.join(str(d) for d in shapes[which])}"
        for name, shapes in sorted(spec.profiles.items())
    )


def engine_path(spec: BuildSpec) -> Path:
    return spec.engine if spec.engine is not None else Path(spec.onnx).with_suffix(".engine")


def trtexec_args(spec: BuildSpec, *, trt_version: Version | str) -> list[str]:
    """trtexec arguments (without the program) equivalent to ``TrtApi(...).plan(spec)``."""
    steps = TrtApi(trt_version).plan(spec)  # validates the spec as the Python build would
    flags = {s[1] for s in steps if s[0] == "set_flag"}
    network = next(s[1] for s in steps if s[0] == "create_network")
    args = [f"--onnx={spec.onnx}", f"--saveEngine={engine_path(spec)}"]
    if "STRONGLY_TYPED" in network:
        args.append("--stronglyTyped")  # TensorRT 10.x; 11.x is always strongly typed
    if "INT8" in flags:
        args.append("--int8")
    if "FP16" in flags:
        args.append("--fp16")
    args += [f"--minShapes={_shapes(spec, 0)}", f"--optShapes={_shapes(spec, 1)}",
             f"--maxShapes={_shapes(spec, 2)}"]
    # MiB is trtexec's default unit for --memPoolSize on 8.4+; 8.2 only has --workspace.
    if any(s[0] == "max_workspace_size" for s in steps):
        args.append(f"--workspace={spec.workspace_mb}")
    else:
        args.append(f"--memPoolSize=workspace:{spec.workspace_mb}")
    if spec.timing_cache is not None:
        args.append(f"--timingCacheFile={spec.timing_cache}")
    if spec.dla_core is not None:
        args.append(f"--useDLACore={spec.dla_core}")
        if spec.gpu_fallback:
            args.append("--allowGPUFallback")
        if spec.calibration_cache is not None and spec.precision == "int8-qdq":
            args.append(f"--calib={spec.calibration_cache}")
    return args


def trtexec_command(spec: BuildSpec, *, trt_version: Version | str, trtexec: str = "trtexec") -> str:
    """The trtexec command line (shell-quoted) for ``spec`` on TensorRT ``trt_version``."""
    return " ".join(shlex.quote(a) for a in [trtexec, *trtexec_args(spec, trt_version=trt_version)])


# One representative version per TensorRT family the adapter (TrtApi) supports: the trtexec
# flags differ between these families, not within one (8.2/8.3 lack --memPoolSize).
FAMILIES = (("8.[0-3].*", "8.2"), ("8.*", "8.5"), ("10.*", "10.0"), ("11.*", "11.0"))
SKIPPED = 3  # exit status of a build script whose engine does not exist on this TensorRT


def _family_commands(spec: BuildSpec) -> list[tuple[str, str | None, str]]:
    """(case pattern, trtexec command or None, why not) for each TensorRT family."""
    out = []
    for pattern, version in FAMILIES:
        try:
            cmd = '"$TRTEXEC" ' + " ".join(
                shlex.quote(a) for a in trtexec_args(spec, trt_version=version))
            out.append((pattern, cmd, ""))
        except ModelError as exc:
            out.append((pattern, None, str(exc)))
    return out


def write_build_script(
    spec: BuildSpec, out_dir: Path, *, trt_version: Version | str, target: str,
    export_out: Path | None = None, if_missing: str | None = None,
) -> Path:
    """Write ``out_dir/build_engine.sh``: version check, trtexec, sidecar. Returns its path.

    The script runs on any TensorRT the adapter supports (8.x, 10.x, 11.x): it picks the
    trtexec flags of the installed family, and exits with status 3 (skipped, with the reason)
    where this engine cannot exist (DLA or weak-typed FP16 on 11.x). ``trt_version`` is the
    version the export planned for (named in the script). ``export_out`` is the export's
    ``--out``, for the regenerate hint. Give ``spec`` paths relative to ``out_dir`` to copy
    the directory to the device as is. ``if_missing``: the ONNX is generated, not shipped
    (the large face tier's FP32 graph): without it the step is skipped with this hint.
    """
    version = Version(str(trt_version))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    regenerate = (f"edgepin export --target {target} --out "
                  f"{shlex.quote(str(export_out if export_out is not None else out_dir))}")
    branches = []
    for pattern, cmd, why in _family_commands(spec):
        plain = "".join(c for c in why if c not in '"$`\\')  # inside bash double quotes
        body = (cmd if cmd is not None else
                f'echo "skipped on TensorRT $FOUND: {plain}" >&2; exit {SKIPPED}')
        if cmd is not None and spec.calibration_cache is not None:
            body = ("python3 -m edge_runtime.engine_meta check-calib "
                    f"--cache={shlex.quote(str(spec.calibration_cache))} "
                    '--trt-version="$FOUND"\n    ' + body)
        branches.append(f"  {pattern})\n    {body} ;;")
    profiles = json.dumps({k: [list(s) for s in v] for k, v in sorted(spec.profiles.items())},
                          separators=(",", ":"))
    meta_args = [f"--engine={engine_path(spec)}", f"--onnx={spec.source}",
                 f"--precision={spec.precision}", f"--profiles={profiles}", f"--target={target}"]
    if spec.dla_core is not None:
        meta_args.append(f"--dla-core={spec.dla_core}")
    meta_cmd = ("python3 -m edge_runtime.engine_meta write "
                + " ".join(shlex.quote(a) for a in meta_args) + ' --trt-version="$FOUND"')
    case = "\n".join(branches)
    missing = ""
    if if_missing is not None:
        onnx_path = shlex.quote(str(spec.onnx))
        plain = "".join(c for c in if_missing if c not in '"$`\\')
        missing = (f'if [ ! -f {onnx_path} ]; then echo "skipped: {spec.onnx} is not here; '
                   f'{plain}" >&2; exit {SKIPPED}; fi\n')
    script = f"""#!/usr/bin/env bash
# Generated by export.trt_script for target {target} (planned for TensorRT {version}; runs on
# TensorRT 8.x, 10.x and 11.x). Run on the device itself: engines are specific to its
# TensorRT version and GPU. Relative paths are relative to this script's directory; the last
# step needs the edgepin package (python3 -m edge_runtime.engine_meta) to record the sidecar.
set -euo pipefail
cd "$(dirname "$0")"
{missing}TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
FOUND="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
if [ -z "$FOUND" ]; then
  FOUND="$(dpkg-query -W -f='${{Version}}' libnvinfer-bin 2>/dev/null | cut -d- -f1 || true)"
fi
if [ -z "$FOUND" ]; then
  echo "cannot determine the TensorRT version (no python3 tensorrt, no libnvinfer-bin)" >&2
  exit 2
fi
if [ ! -x "$TRTEXEC" ]; then echo "trtexec not found at $TRTEXEC (set TRTEXEC=...)" >&2; exit 2; fi
case "$FOUND" in
{case}
  *) echo "TensorRT $FOUND is not supported (8.x, 10.x, 11.x); regenerate for it:" \\
          "{regenerate}" >&2
     exit 2 ;;
esac
{meta_cmd}
"""
    path = out_dir / "build_engine.sh"
    path.write_text(script)
    path.chmod(0o755)
    return path
