"""Export recipes: how each student is quantized for each target, read from a versioned file.

The shipped INT8 files were once made with hand-typed flags that no file recorded, so nobody
could remake them. ``export/recipes.yaml`` now holds, per model and per target (or target
family: ``tensorrt`` for orin/xavier/nano/gpu, ``cpu``), every setting that changes the
quantized graph; ``edgepin export --target T`` with no other flag applies it, and the export
report and the INT8 file's metadata record the recipe used. ``edgepin export --search`` writes
the recipe it found back into the file. Adding a model is one entry under ``models:``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError
from export.quantize import CALIBRATION_METHODS, DEFAULT_EXCLUDED, Target

RECIPES_FILE = Path(__file__).with_name("recipes.yaml")
FORMAT_VERSION = 1
HEADER = """\
# edgepin export recipes (read by `edgepin export`, written by `edgepin export --search`).
# Per model, per target name (orin, xavier, nano, gpu, cpu) or family (tensorrt = every
# TensorRT target; cpu): the quantization settings that make the shipped INT8 file.
# Lookup: models.<model>.<target> > models.<model>.<family> > models.<model>.default > defaults.
# Fields: see export/recipes.py (Recipe) and docs/export_recipes.md.
"""


@dataclass(frozen=True)
class Recipe:
    """Every setting that changes the quantized graph (besides the FP32 model and the
    calibration set, whose hashes the report records)."""

    calibrate_method: str = "minmax"
    exclude: tuple[str, ...] = ()  # op types kept float IN ADDITION to DEFAULT_EXCLUDED
    keep_float: tuple[str, ...] = ()  # nodes kept float: first, last:N, depthwise, names
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: no int16 saturation on x86 without VNNI
    activation_type: str = "int8"  # int8 | uint8 (onnxruntime CPU kernels only)
    weight_type: str = "int8"
    symmetric_activations: bool = True  # TensorRT: zero-point 0 only
    quant_format: str = "qdq"  # qdq | qoperator (onnxruntime CPU kernels only)
    weight_storage: str = "target"  # target | int8 | float (float behind a Q->DQ pair)
    source: str = ""  # where this recipe came from (file and key), for the report

    @property
    def excluded_op_types(self) -> list[str]:
        return list(dict.fromkeys([*DEFAULT_EXCLUDED, *self.exclude]))

    def int8_weights(self, target: Target) -> bool:
        return target.int8_weights if self.weight_storage == "target" \
            else self.weight_storage == "int8"

    def quantize_kwargs(self, target: Target) -> dict[str, Any]:
        """Keyword arguments of ``export.quantize.quantize_qdq`` for this recipe."""
        return {"exclude_op_types": self.excluded_op_types,
                "calibrate_method": self.calibrate_method, "per_channel": self.per_channel,
                "reduce_range": self.reduce_range, "activation_type": self.activation_type,
                "weight_type": self.weight_type,
                "symmetric_activations": self.symmetric_activations,
                "quant_format": self.quant_format, "int8_weights": self.int8_weights(target)}

    def entry(self) -> dict[str, Any]:
        """The fields that differ from the defaults: what a recipe file entry holds."""
        base = Recipe()
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "source" and value != getattr(base, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self, target: Target | None = None) -> dict[str, Any]:
        d = {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
             for f in dataclasses.fields(self)}
        d["excluded_op_types"] = self.excluded_op_types
        if target is not None:
            d["weight_storage_resolved"] = "int8" if self.int8_weights(target) else "float"
        return d

    def with_overrides(self, *, exclude: Sequence[str] = (), keep_float: Sequence[str] = (),
                       calibrate_method: str | None = None) -> Recipe:
        """Command-line additions on top of the file's recipe (recorded as such)."""
        if not exclude and not keep_float and calibrate_method in (None, self.calibrate_method):
            return self
        return dataclasses.replace(
            self, exclude=tuple(dict.fromkeys([*self.exclude, *exclude])),
            keep_float=tuple(dict.fromkeys([*self.keep_float, *keep_float])),
            calibrate_method=calibrate_method or self.calibrate_method,
            source=f"{self.source} + command-line flags")


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe) if f.name != "source"}
_CHOICES = {"calibrate_method": CALIBRATION_METHODS, "activation_type": ("int8", "uint8"),
            "weight_type": ("int8", "uint8"), "quant_format": ("qdq", "qoperator"),
            "weight_storage": ("target", "int8", "float")}


def _check_entry(entry: Any, where: str) -> dict[str, Any]:
    if entry is None:
        return {}
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping of recipe fields, got {entry!r}")
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in _FIELDS:
            raise ConfigError(f"{where}: unknown recipe field {key!r} (fields: "
                              f"{', '.join(sorted(_FIELDS))})")
        default = _FIELDS[key].default
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
        elif key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{where}.{key}: {value!r}; expected one of {_CHOICES[key]}")
        out[key] = value
    return out


def load_recipes(path: Path = RECIPES_FILE) -> dict[str, Any]:
    """The recipe file, checked: unknown fields and values are errors naming their place."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe file {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping) or doc.get("version") != FORMAT_VERSION:
        raise ConfigError(f"recipe file {path}: expected 'version: {FORMAT_VERSION}' at the top")
    _check_entry(doc.get("defaults"), f"{path}: defaults")
    models = doc.get("models") or {}
    if not isinstance(models, Mapping):
        raise ConfigError(f"{path}: 'models' must map model names to per-target recipes")
    for model, per_target in models.items():
        if not isinstance(per_target, Mapping):
            raise ConfigError(f"{path}: models.{model} must map targets to recipes")
        for key, entry in per_target.items():
            _check_entry(entry, f"{path}: models.{model}.{key}")
    return dict(doc)


def family(target: Target) -> str:
    return "tensorrt" if target.uses_tensorrt else "cpu"


def recipe_for(doc: Mapping[str, Any], model: str, target: Target,
               path: Path = RECIPES_FILE) -> Recipe:
    """The recipe of ``model`` for ``target``: the most specific entry wins, field by field
    over the file's defaults (no entry for the model: the defaults, said so in ``source``)."""
    fields = _check_entry(doc.get("defaults"), "defaults")
    per_target = (doc.get("models") or {}).get(model) or {}
    used = [k for k in ("default", family(target), target.name) if k in per_target]
    for key in used:
        fields.update(_check_entry(per_target[key], f"models.{model}.{key}"))
    where = f"models.{model}.{used[-1]}" if used else f"defaults (no entry for {model!r})"
    return Recipe(**fields, source=f"{path.name} {where} (version {doc.get('version')})")


def write_recipe(path: Path, model: str, key: str, recipe: Recipe) -> None:
    """Store ``recipe`` as ``models.<model>.<key>``, keeping every other entry."""
    import yaml

    path = Path(path)
    doc = load_recipes(path) if path.is_file() else {"version": FORMAT_VERSION, "defaults": {}}
    models = dict(doc.get("models") or {})
    models[model] = {**(models.get(model) or {}), key: recipe.entry()}
    doc["models"] = models
    body = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=None, width=96)
    path.write_text(HEADER + body)
