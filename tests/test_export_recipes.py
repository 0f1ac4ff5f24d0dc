"""Export recipes: the versioned file that replaces hand-typed quantization flags.

The shipped INT8 files must be what the recipe file says: their own metadata (written by the
export) records the quantization they were made with, and the manifest the gate figures they
passed with. The bit-for-bit remake needs the real calibration set (built by `edgepin export`
from LFW / speechocean762 into the cache) and is skipped, with the reason, where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_runtime.bundle import load_manifest, sha256_file
from edge_runtime.errors import ConfigError
from export.quantize import DEFAULT_EXCLUDED, get_target
from export.recipes import RECIPES_FILE, Recipe, load_recipes, recipe_for, write_recipe
from export.stages import onnx_metadata

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


@pytest.mark.parametrize("modality", ["face", "voice"])
def test_shipped_int8_files_are_what_the_recipe_file_says(modality: str) -> None:
    entry = load_manifest(MODELS)[f"{modality}_int8"]
    target = get_target(entry.meta["target"])
    recipe = recipe_for(load_recipes(), modality, target)
    q = onnx_metadata(entry.path)["quantization"]
    assert q["calibrate_method"] == recipe.calibrate_method
    assert q["excluded_op_types"] == recipe.excluded_op_types
    assert q["float_nodes"] == list(recipe.keep_float)
    # the recipe passed the gate when these files were made (the figures of record)
    gate = entry.meta["gate"]
    assert gate["cos_p1"] >= 0.99 and gate["eer_delta_pt"] <= 0.3


def test_lookup_target_over_family_over_default(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\ndefaults: {calibrate_method: minmax}\nmodels:\n"
                    "  face:\n    default: {exclude: [Add]}\n"
                    "    tensorrt: {calibrate_method: percentile}\n"
                    "    nano: {calibrate_method: entropy, weight_storage: float}\n"
                    "    cpu: {activation_type: uint8, symmetric_activations: false}\n")
    doc = load_recipes(path)
    orin = recipe_for(doc, "face", get_target("orin"), path)
    assert (orin.calibrate_method, orin.exclude) == ("percentile", ("Add",))
    assert "models.face.tensorrt" in orin.source
    nano = recipe_for(doc, "face", get_target("nano"), path)
    assert nano.calibrate_method == "entropy" and not nano.int8_weights(get_target("nano"))
    cpu = recipe_for(doc, "face", get_target("cpu"), path)
    assert cpu.activation_type == "uint8" and cpu.calibrate_method == "minmax"
    assert cpu.excluded_op_types == [*DEFAULT_EXCLUDED, "Add"]
    other = recipe_for(doc, "face_large", get_target("orin"), path)  # a new model: defaults
    assert other == Recipe(source=other.source) and "no entry for 'face_large'" in other.source


@pytest.mark.parametrize("text, message", [
    ("version: 2\n", "version: 1"),
    ("version: 1\nmodels:\n  face:\n    orin: {exclud: [Add]}\n", "unknown recipe field 'exclud'"),
    ("version: 1\nmodels:\n  face:\n    orin: {calibrate_method: kl}\n", "calibrate_method"),
    ("version: 1\nmodels:\n  face:\n    orin: {reduce_range: 1}\n", "true or false"),
    ("version: 1\nmodels:\n  face:\n    orin: {exclude: Add}\n", "list of strings"),
])
def test_bad_recipe_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipes(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipes(tmp_path / "missing.yaml")


def test_search_result_is_written_keeping_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPES_FILE.read_text())
    found = Recipe(calibrate_method="entropy", exclude=("Add", "Mul"), reduce_range=True)
    write_recipe(path, "voice", "cpu", found)
    doc = load_recipes(path)
    again = recipe_for(doc, "voice", get_target("cpu"), path)
    assert (again.calibrate_method, again.exclude, again.reduce_range) == \
        ("entropy", ("Add", "Mul"), True)
    shipped = load_recipes()
    for m in ("face", "voice"):  # the TensorRT entries are untouched
        assert recipe_for(doc, m, get_target("orin"), path).entry() == \
            recipe_for(shipped, m, get_target("orin")).entry()
    assert path.read_text().startswith("# edgepin export recipes")


def test_overrides_are_recorded_as_command_line() -> None:
    base = recipe_for(load_recipes(), "voice", get_target("orin"))
    assert base.with_overrides() is base
    more = base.with_overrides(exclude=["Gemm"], calibrate_method="entropy")
    assert "Gemm" in more.exclude and "ReduceMean" in more.exclude
    assert more.calibrate_method == "entropy" and "command-line" in more.source


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["face", "voice"])
def test_recipe_remakes_the_shipped_int8_file_bit_for_bit(modality: str, tmp_path: Path) -> None:
    """Same FP32 model + same calibration set + the recipe -> the shipped bytes."""
    from calibration.int8_sets import load_calibration_set, read_manifest
    from export.gate_stage import CALIB_BATCH
    from export.students import set_metadata

    entry = load_manifest(MODELS)[f"{modality}_int8"]
    cache = Path(os.environ.get("EDGEPIN_CACHE", "/work/cache")) / "calibration"
    npz = cache / f"{modality}_calib.npz"
    if not npz.is_file() or read_manifest(npz)["sha256"] != entry.meta["calibration_sha256"]:
        pytest.skip(f"{npz}: the shipped calibration set is not built here "
                    "(`edgepin export --target orin` builds it from LFW / speechocean762)")
    from export.quantize import quantize_qdq

    name = "face" if modality == "face" else "feats"
    target = get_target(entry.meta["target"])
    recipe = recipe_for(load_recipes(), modality, target)
    arrays = load_calibration_set(npz, expect_inputs=[name], min_samples=1)
    if recipe.calibrate_method != "minmax":
        arrays = {name: arrays[name][: len(arrays[name]) // CALIB_BATCH * CALIB_BATCH]}
    out = tmp_path / f"{modality}.int8.onnx"
    quantize_qdq(MODELS / f"{modality}.onnx", arrays, out, target=target.name,
                 **recipe.quantize_kwargs(target))
    set_metadata(out, onnx_metadata(entry.path))  # same metadata as the export writes
    assert sha256_file(out) == entry.sha256
