"""The bundle side of `edgepin export`: head calibration sets, manifest entries, sizes.

Split from ``export.pipeline`` to keep each file focused; the functions take the pipeline's
options and report and add their part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibration.build_sets import CalibSpec
from edge_runtime.bundle import load_manifest, register_model, sha256_file
from edge_runtime.errors import DatasetError, ModelError
from export.quantize import Target
from export.stages import ExportOptions, Stages, input_name, onnx_metadata

SIZE_TARGET_BYTES = 4 * 1024 * 1024
HEADS = ("pin_face", "pin_voice", "faa")


def head_sets(opts: ExportOptions, report: dict, stash: dict, st: Stages) -> dict[str, Any]:
    """Calibration sets for the cross-modal heads in the models folder (student embeddings).

    The heads stay FP32 (each is far under 1 MB and runs in microseconds: INT8 buys nothing),
    so a head set that cannot be made is reported, not fatal.
    """
    from calibration import build_sets

    models = Path(opts.models)
    entries = load_manifest(models) if (models / "manifest.json").is_file() else {}
    heads = {h: entries[h].verified_path() for h in HEADS if h in entries}
    if not heads:
        return {"note": "no pin/faa heads in the models folder"}
    if not {"face", "voice"} <= set(report["models"]):
        return {"note": "head calibration needs both the face and the voice student"}
    face, voice = (Path(report["models"][m]["fp32"]["path"]) for m in ("face", "voice"))
    space = entries["faa"].meta.get("inputs_space", "student") if "faa" in heads else "student"
    calib_dir = Path(opts.calib) if opts.calib else Path(opts.cache_dir) / "calibration"
    key_base = {"face_sha256": sha256_file(face), "voice_sha256": sha256_file(voice),
                "faa_inputs_space": space, "heads": {h: sha256_file(p) for h, p in heads.items()}}
    res: dict[str, Any] = {}
    with st.stage(f"heads: calibration sets ({', '.join(heads)})"):
        cache: dict[str, Any] = {}

        def build_all() -> dict:
            if "sets" not in cache:
                windows = stash.get("utterance_windows")
                if windows is None:  # the voice set was reused: redo its (cached) utterances
                    from edge_runtime.frontend.features import VoiceFrontEnd

                    fe = onnx_metadata(voice).get("front_end")
                    windows = build_sets.voice_calibration(
                        opts.data_voices, opts.cache_dir,
                        VoiceFrontEnd.from_dict(fe) if fe else VoiceFrontEnd(),
                        CalibSpec(opts.n_calib, opts.min_calib, report["models"]["voice"]["split"]),
                    ).utterance_windows
                cache["sets"] = build_sets.head_calibration(
                    heads, face, voice, stash["face"], windows, faa_inputs_space=space,
                    min_samples=opts.min_calib)
            return cache["sets"]

        can_build = opts.data_voices is not None and "face" in stash
        for name in heads:
            inputs = {"pin_face": ["face_emb"], "pin_voice": ["voice_emb"],
                      "faa": ["face_emb", "voice_emb"]}[name]
            try:
                arrays, manifest, built = build_sets.ensure_set(
                    calib_dir / f"{name}_calib.npz", inputs, key_base,
                    (lambda n=name: build_all()[n]) if can_build else None,
                    min_samples=opts.min_calib)
                res[name] = {"calibration": str(calib_dir / f"{name}_calib.npz"),
                             "sha256": manifest["sha256"], "n": manifest["n_samples"],
                             "built_now": built, "quantized": False}
            except (ModelError, DatasetError) as exc:
                res[name] = {"calibration": None, "error": str(exc), "quantized": False}
    res["note"] = "heads stay FP32 (tiny; INT8 buys nothing); sets are for TensorRT builds"
    return res


def register_outputs(out: Path, report: dict, target: Target) -> None:
    """FP32 entries (when new or changed) and the INT8 entries that passed the gate.

    An INT8 entry left from an earlier run for ANOTHER FP32 model is flagged in the report
    (``stale_int8``): the manifest API cannot remove entries, and the device must not pair it
    with the new FP32 model.
    """
    for m, r in report["models"].items():
        entries = load_manifest(out) if (out / "manifest.json").is_file() else {}
        old = entries.get(f"{m}_int8")
        if (not r["int8"]["registered"] and old is not None
                and old.meta.get("fp32_sha256") != r["fp32"]["sha256"]):
            r["stale_int8"] = (f"{out / old.file} is registered as {m}_int8 but was made from "
                               f"another FP32 model; remove it before deploying")
        if m not in entries or entries[m].sha256 != r["fp32"]["sha256"]:
            src = r["fp32_source"].get("meta", {})
            register_model(out, m, f"{m}.onnx", **{**src, "precision": "fp32"})
        if r["int8"]["registered"]:
            g = r["gate"]
            form = "int8-qoperator" if r["recipe"]["quant_format"] == "qoperator" else "int8-qdq"
            register_model(out, f"{m}_int8", Path(r["int8"]["path"]).name, precision=form,
                           target=target.name, fp32_sha256=r["fp32"]["sha256"],
                           calibration_sha256=r["calibration"]["sha256"],
                           gate={"cos_p1": g["cos_p1"], "cos_min": r["agreement"]["cos_min"],
                                 "eer_fp32": g["eer_fp32"], "eer_int8": g["eer_int8"],
                                 "eer_delta_pt": g["eer_delta_pt"]},
                           input=input_name(m), output="embedding",
                           recipe=r["recipe"], **_tier_meta(m, r),
                           **({"latency_ratio": r["latency"]["ratio"]} if "latency" in r else {}))


def _tier_meta(model: str, r: dict) -> dict[str, Any]:
    """The large face tier's INT8 entry repeats its crop (the runtime binds the input shape
    from the manifest before it opens the file) and its tier."""
    src = r["fp32_source"].get("meta", {})
    if model != "face_large":
        return {}
    return {"front_end": src.get("front_end"), "tier": "large", "modality": "face"}


def sizes(out: Path, report: dict) -> dict[str, Any]:
    """File sizes and the deployable total: per modality the INT8 model if it passed, else
    FP32, plus any heads registered in the output folder."""
    entries = load_manifest(out) if (out / "manifest.json").is_file() else {}
    files = {name: e.path.stat().st_size for name, e in entries.items() if e.path.is_file()}
    deploy = [f"{m}_int8" if r["int8"]["registered"] else m for m, r in report["models"].items()]
    large = "face_large" in report["models"]
    deploy += [f"{h}_large" if large else h for h in HEADS
               if (f"{h}_large" if large else h) in files]
    total = sum(files.get(n, 0) for n in deploy)
    out = {"files": files, "deployable": deploy, "deployable_bytes": total,
           "limit_bytes": SIZE_TARGET_BYTES, "within_limit": total <= SIZE_TARGET_BYTES}
    if large:  # the size target is the student bundle's; the large tier is ~6 MB by design
        out.update(limit_bytes=None, within_limit=None,
                   note="the 4 MiB target applies to the student bundle; the large face tier "
                        "(dlib's ResNet, 5.7 MB in INT8) is not held to it")
    return out
