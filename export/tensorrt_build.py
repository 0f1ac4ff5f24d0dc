"""Build TensorRT engines from the exported ONNX, across TensorRT 8.2/8.5, 10.x and 11.x.

TensorRT is not installed on this machine and its Python API changed at every major release,
so the build is split in two: ``TrtApi(version).plan(spec)`` is a pure, testable list of the
documented API calls for that version, and ``TrtApi.build(spec)`` executes the plan on the real
``tensorrt`` module (imported lazily, on the device). The version differences encoded here:

* 8.x: ``create_network(1 << EXPLICIT_BATCH)`` (the ONNX parser requires it); workspace via
  ``config.max_workspace_size`` before 8.4, ``set_memory_pool_limit(WORKSPACE, n)`` after;
  a QDQ graph needs ``BuilderFlag.INT8`` (+ ``FP16`` as the fallback precision).
* 10.x: EXPLICIT_BATCH is deprecated and ignored; ``NetworkDefinitionCreationFlag.
  STRONGLY_TYPED`` builds a QDQ graph exactly as typed (no precision flags allowed); weak typing
  (INT8/FP16 flags) still exists. At run time: ``set_input_shape``/``set_tensor_address``/
  ``execute_async_v3`` (available since 8.5).
* 11.x: weak typing, the precision builder flags and INT8 calibrators are removed: every
  network is strongly typed, INT8 only via Q/DQ, FP16 only from an FP16-typed ONNX (ModelOpt
  AutoCast). DLA is not supported by TensorRT 11.

DLA (Xavier, Orin on JetPack 5/6) does not support explicit quantization and needs static
shapes, so a DLA INT8 build parses the QDQ graph stripped back to float (``strip_qdq``) with
``BuilderFlag.INT8`` + a calibration cache written from the QDQ graph's activation scales
(``write_calibration_cache``); FP16 stays enabled as the fallback precision.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from packaging.version import Version

from edge_runtime.engine_meta import (
    calibration_header,
    check_calibration_cache,
    trt_version_int,  # noqa: F401 - re-exported: the export side's name for it
)
from edge_runtime.errors import DependencyError, ModelError

PRECISIONS = ("int8-qdq", "fp16", "fp32")
Shape = tuple[int, ...]
Step = tuple[Any, ...]


@dataclass(frozen=True)
class BuildSpec:
    """What to build. ``profiles`` maps each input to its (min, opt, max) shapes.

    For a DLA INT8 build ``onnx`` is the float graph from ``strip_qdq``, ``source_onnx`` the
    QDQ graph it came from (the manifest's file) and ``calibration_cache`` the cache from
    ``write_calibration_cache``. ``strongly_typed`` None
    means: strongly typed wherever the version allows it for this precision.
    """

    onnx: Path
    precision: str
    profiles: dict[str, tuple[Shape, Shape, Shape]]
    workspace_mb: int = 1024
    dla_core: int | None = None
    gpu_fallback: bool = True
    timing_cache: Path | None = None
    strongly_typed: bool | None = None
    calibration_cache: Path | None = None
    engine: Path | None = None
    source_onnx: Path | None = None  # the manifest model the engine stands for (default: onnx)

    @property
    def source(self) -> Path:
        """The ONNX whose sha256 the sidecar records: the runtime looks engines up by it."""
        return Path(self.source_onnx if self.source_onnx is not None else self.onnx)


class TrtApi:
    """The TensorRT Python API calls for one TensorRT version (module docstring)."""

    def __init__(self, version: Version | str) -> None:
        self.version = Version(str(version))
        if not (Version("8.2") <= self.version < Version("12")):
            raise ModelError(f"TensorRT {self.version} is not supported (8.2 .. 11.x)")
        self.major = self.version.major

    def strongly_typed(self, spec: BuildSpec) -> bool:
        """Whether the network is created strongly typed, or a ModelError if impossible."""
        if self.major >= 11:
            if spec.strongly_typed is False:
                raise ModelError(f"TensorRT {self.version} removed weak typing; "
                                 "strongly_typed=False is impossible")
            return True
        if self.major == 8:
            if spec.strongly_typed:
                raise ModelError(f"TensorRT {self.version} has no strongly typed networks "
                                 "(added in 10.0); use strongly_typed=None/False")
            return False
        if spec.strongly_typed is None:
            return spec.precision == "int8-qdq" and spec.dla_core is None
        return spec.strongly_typed

    def _validate(self, spec: BuildSpec) -> None:
        if spec.precision not in PRECISIONS:
            raise ModelError(f"precision {spec.precision!r}; expected one of {PRECISIONS}")
        if not spec.profiles:
            raise ModelError(f"build of {spec.onnx}: no optimization profile given")
        for name, shapes in spec.profiles.items():
            if len(shapes) != 3 or len({len(s) for s in shapes}) != 1:
                raise ModelError(f"profile {name!r}: need (min, opt, max) of equal rank")
            lo, opt, hi = shapes
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
                raise ModelError(f"profile {name!r}: need min <= opt <= max, got {shapes}")
        if spec.dla_core is None:
            return
        if self.major >= 11:
            raise ModelError(f"DLA is not supported by TensorRT {self.version} (last: 10.x)")
        if spec.precision == "fp32":
            raise ModelError("DLA runs FP16 or INT8 only, not fp32")
        dynamic = [n for n, (lo, opt, hi) in spec.profiles.items() if not lo == opt == hi]
        if dynamic:
            raise ModelError(f"DLA needs static shapes (min == opt == max); dynamic: {dynamic}")
        if spec.precision == "int8-qdq" and spec.calibration_cache is None:
            raise ModelError("DLA INT8 needs implicit quantization: set calibration_cache "
                             "(export.tensorrt_build.write_calibration_cache)")

    def plan(self, spec: BuildSpec) -> list[Step]:
        """The documented API calls, in order, that build ``spec`` on this TensorRT version."""
        self._validate(spec)
        typed = self.strongly_typed(spec)
        steps: list[Step] = []
        if self.major == 8:
            steps.append(("create_network", ("EXPLICIT_BATCH",)))
        elif self.major == 10 or self.major == 9:
            steps.append(("create_network", ("STRONGLY_TYPED",) if typed else ()))
        else:
            steps.append(("create_network", ()))  # 11.x: strongly typed is the only mode
        steps.append(("parse_onnx", str(spec.onnx)))
        workspace = int(spec.workspace_mb) * (1 << 20)
        if self.version < Version("8.4"):
            steps.append(("max_workspace_size", workspace))
        else:
            steps.append(("set_memory_pool_limit", "WORKSPACE", workspace))
        if spec.precision == "fp16" and typed:
            raise ModelError(
                f"fp16 on a strongly typed TensorRT {self.version} network needs an FP16-typed "
                "ONNX (ModelOpt AutoCast); build fp32 or int8-qdq, or use TensorRT 8.x/10.x "
                "weak typing (strongly_typed=False)")
        if spec.precision == "int8-qdq" and not typed:
            steps += [("set_flag", "INT8"), ("set_flag", "FP16")]
        elif spec.precision == "fp16":
            steps.append(("set_flag", "FP16"))
        if spec.dla_core is not None:
            steps += [("default_device_type", "DLA"), ("DLA_core", int(spec.dla_core))]
            if spec.gpu_fallback:
                steps.append(("set_flag", "GPU_FALLBACK"))
            if spec.precision == "int8-qdq":
                steps.append(("int8_calibrator", str(spec.calibration_cache)))
        profile = {k: tuple(tuple(s) for s in v) for k, v in sorted(spec.profiles.items())}
        steps.append(("add_optimization_profile", profile))
        if any(s[0] == "int8_calibrator" for s in steps):
            # Implicit INT8 calibration of a network with a dynamic dimension (the ONNX batch
            # axis, even when the profile pins it) needs a calibration profile; trtexec sets
            # one itself, the Python API does not.
            steps.append(("set_calibration_profile", profile))
        if spec.timing_cache is not None:
            steps.append(("timing_cache", str(spec.timing_cache)))
        steps.append(("build_serialized_network",))
        if spec.timing_cache is not None:
            steps.append(("save_timing_cache", str(spec.timing_cache)))
        return steps

    def runtime_calls(self) -> tuple[str, ...]:
        """IExecutionContext calls the device runtime uses with engines of this version."""
        if self.version < Version("8.5"):
            return ("set_binding_shape", "execute_async_v2")
        return ("set_input_shape", "set_tensor_address", "execute_async_v3")

    def build(self, spec: BuildSpec, *, trt: ModuleType | None = None) -> bytes:
        """Execute ``plan(spec)`` on ``trt`` (default: ``import tensorrt``); serialized engine."""
        if trt is None:
            try:
                import tensorrt as trt
            except ImportError as exc:
                raise DependencyError(f"tensorrt is not installed here ({exc}); build on the "
                                      "device or use export.trt_script") from exc
        found = Version(trt.__version__)
        if (found.major, found.minor) != (self.version.major, self.version.minor):
            raise ModelError(f"plan is for TensorRT {self.version}, installed is {found}")
        return _Executor(trt, spec).run(self.plan(spec))


class _Executor:
    """Maps plan steps onto tensorrt objects; keeps them alive until the build finishes."""

    def __init__(self, trt: ModuleType, spec: BuildSpec) -> None:
        self.trt, self.spec = trt, spec
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        self.network = self.parser = self.config = self.calibrator = self.profile = None
        self.serialized: Any = None

    def run(self, steps: list[Step]) -> bytes:
        for step in steps:
            getattr(self, f"_{step[0]}")(*step[1:])
        return bytes(self.serialized)

    def _create_network(self, flags: tuple[str, ...]) -> None:
        bits = 0
        for name in flags:
            bits |= 1 << int(getattr(self.trt.NetworkDefinitionCreationFlag, name))
        self.network = self.builder.create_network(bits)
        self.config = self.builder.create_builder_config()

    def _parse_onnx(self, path: str) -> None:
        onnx_path = Path(path)
        if not onnx_path.is_file():
            raise ModelError(f"ONNX model {onnx_path} does not exist")
        self.parser = self.trt.OnnxParser(self.network, self.logger)
        if not self.parser.parse(onnx_path.read_bytes(), str(onnx_path)):
            errors = [str(self.parser.get_error(i)) for i in range(self.parser.num_errors)]
            raise ModelError(f"TensorRT could not parse {onnx_path} ({len(errors)} error(s)): "
                             + "; ".join(errors or ["no error reported"]))
        inputs = [self.network.get_input(i).name for i in range(self.network.num_inputs)]
        missing = sorted(set(inputs) - set(self.spec.profiles))
        unknown = sorted(set(self.spec.profiles) - set(inputs))
        if missing or unknown:
            raise ModelError(f"{onnx_path}: profiles missing for inputs {missing}, "
                             f"profiles for unknown inputs {unknown}")

    def _max_workspace_size(self, size: int) -> None:
        self.config.max_workspace_size = size

    def _set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.config.set_memory_pool_limit(getattr(self.trt.MemoryPoolType, pool), size)

    def _set_flag(self, name: str) -> None:
        self.config.set_flag(getattr(self.trt.BuilderFlag, name))

    def _default_device_type(self, name: str) -> None:
        self.config.default_device_type = getattr(self.trt.DeviceType, name)

    def _DLA_core(self, core: int) -> None:  # noqa: N802 - mirrors config.DLA_core
        self.config.DLA_core = core

    def _int8_calibrator(self, cache_path: str) -> None:
        check_calibration_cache(Path(cache_path), self.trt.__version__)
        self.calibrator = _cache_calibrator(self.trt, Path(cache_path))
        self.config.int8_calibrator = self.calibrator

    def _add_optimization_profile(self, profiles: dict[str, tuple[Shape, ...]]) -> None:
        self.profile = self.builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            self.profile.set_shape(name, lo, opt, hi)
        self.config.add_optimization_profile(self.profile)

    def _set_calibration_profile(self, profiles: dict[str, tuple[Shape, ...]]) -> None:
        self.config.set_calibration_profile(self.profile)  # the same shapes as the build

    def _timing_cache(self, path: str) -> None:
        p = Path(path)
        cache = self.config.create_timing_cache(p.read_bytes() if p.is_file() else b"")
        self.config.set_timing_cache(cache, False)

    def _build_serialized_network(self) -> None:
        self.serialized = self.builder.build_serialized_network(self.network, self.config)
        if self.serialized is None:
            raise ModelError(f"TensorRT failed to build an engine from {self.spec.onnx} "
                             "(its log above says why)")

    def _save_timing_cache(self, path: str) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes(self.config.get_timing_cache().serialize()))


def _cache_calibrator(trt: ModuleType, cache_path: Path) -> Any:
    """An entropy calibrator that only replays a calibration cache (no data on the device)."""
    if not cache_path.is_file():
        raise ModelError(f"calibration cache {cache_path} does not exist")
    blob = cache_path.read_bytes()

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            print(f"calibration cache {cache_path} is incomplete: TensorRT asked for data",
                  file=sys.stderr)
            return None

        def read_calibration_cache(self) -> bytes:
            return blob

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return CacheCalibrator()


def _qdq_float_names(model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """For each DQ output, the float tensor it stands for after Q/DQ removal.

    Returns (dq_output -> float name, producer-output renames). When a DQ output is a graph
    output (onnxruntime renames the producer to ``<name>_QuantizeLinear_Input``), the producer's
    tensor takes the graph output's name back instead.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    replace, rename = {}, {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producer.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # an int8 initializer: handled by strip_qdq
        if node.output[0] in outputs:
            rename[q.input[0]] = node.output[0]
        else:
            replace[node.output[0]] = q.input[0]
    return replace, rename


def strip_qdq(qdq_onnx: Path, out: Path) -> Path:
    """The QDQ graph without Q/DQ: float, with the tensor names the calibration cache uses.

    This is what a DLA INT8 build parses (DLA has no explicit quantization): the graph that was
    calibrated, so every cache entry names a tensor TensorRT will see.
    """
    import onnx
    from onnx import numpy_helper

    from export.quantize import dequantized_weight

    model = onnx.load(str(qdq_onnx))
    graph = model.graph
    replace, rename = _qdq_float_names(model)
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:  # int8 initializer -> DQ: store the dequantized float weight
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            graph.initializer.append(
                numpy_helper.from_array(dequantized_weight(node, inits), node.output[0]))
    kept = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]

    def resolve(name: str) -> str:
        while name in replace:
            name = replace[name]
        return rename.get(name, name)

    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
        for i, name in enumerate(node.output):
            node.output[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - checker errors vary
        raise ModelError(f"stripping Q/DQ from {qdq_onnx} gave an invalid graph: {exc}") from exc
    onnx.save(model, str(out))
    return Path(out)


def write_calibration_cache(qdq_onnx: Path, out: Path, *, trt_version: Version | str) -> Path:
    """TensorRT calibration cache (text) from the activation scales of a symmetric QDQ graph.

    Format: ``TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2`` then one ``tensor: <hex>`` line
    per tensor, the hex being the big-endian IEEE-754 float32 scale (amax / 127, the same
    number as the graph's symmetric int8 scale). TensorRT 10 rejects a header from another
    version, hence ``trt_version``; TensorRT 11 has no calibrators at all.
    """
    import onnx
    from onnx import numpy_helper

    if Version(str(trt_version)).major >= 11:
        raise ModelError(f"TensorRT {trt_version} has no implicit INT8 / calibration caches")
    model = onnx.load(str(qdq_onnx))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    _, rename = _qdq_float_names(model)
    scales: dict[str, float] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in consts:
            continue  # weights are quantized by TensorRT itself in implicit mode
        scale = consts.get(node.input[1])
        if scale is None or scale.size != 1:
            raise ModelError(f"{qdq_onnx}: {node.name} has no per-tensor constant scale")
        name = rename.get(node.input[0], node.input[0])
        scales[name] = max(scales.get(name, 0.0), float(scale.reshape(-1)[0]))
    if not scales:
        raise ModelError(f"{qdq_onnx} has no activation QuantizeLinear: not a QDQ graph")
    lines = [calibration_header(trt_version)]
    lines += [f"{k}: {struct.pack('>f', v).hex()}" for k, v in sorted(scales.items())]
    Path(out).write_text("\n".join(lines) + "\n")
    return Path(out)
