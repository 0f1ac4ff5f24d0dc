"""`edgepin export` end to end on CPU, on the real-data fixtures (LFW, speechocean762 excerpts).

The students are the real architectures (MobileFaceNet, VoiceResNet) at reduced width with
random weights, saved as distillation checkpoints: the pipeline exports them itself. Random
weights test the mechanics, not accuracy, so the gate thresholds are loosened where a test
needs a passing gate and made impossible where it needs a failing one; the real gate figures
come from `benchmarks/int8.py` on the real students. TensorRT is not installed in CI: the
orin run checks the scripts and the one-line note instead of engines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from calibration.build_sets import CalibSpec, ensure_set, face_calibration, voice_calibration
from calibration.int8_sets import read_manifest
from edge_runtime.bundle import load_manifest
from edge_runtime.cli import main
from edge_runtime.errors import ConfigError, DatasetError, ModelError
from edge_runtime.frontend.features import VoiceFrontEnd
from export.device_build import engine_specs, write_scripts
from export.gate_stage import quantized_op_types
from export.quantize import TARGETS
from train.config import load_config
from train.datasets import FaceFolder, SpeechFolder, holdout_split
from train.distill import CHECKPOINT_FORMAT
from train.tasks import build_model, voice_front_end

SPLIT = {"test_fraction": 0.5, "val_fraction": 0.0, "seed": 0}  # 3 of 6 faces, 2 of 4 voices
SMALL = {"face": ["model.width=0.25"],
         "voice": ["model.channels=[8,16,16,32]", "model.embedding_dim=64"]}


def _checkpoint(modality: str, path: Path) -> Path:
    cfg = load_config(None, f"{modality}_distill.yaml", SMALL[modality])
    cfg["split"] = dict(SPLIT)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    fe = voice_front_end(cfg).to_dict() if modality == "voice" else {"face_size": 112}
    torch.save({"format": CHECKPOINT_FORMAT, "modality": modality, "config": cfg,
                "split": dict(SPLIT), "front_end": fe, "epoch": 0,
                "data": {"manifest_hash": "fixture-test"},
                "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    models = root / "models"
    models.mkdir()
    for m in ("face", "voice"):
        _checkpoint(m, models / f"{m}.pt")
    return {"root": root, "models": models, "calib": root / "calib", "cache": root / "cache",
            "faces": fixtures / "lfw", "voices": fixtures / "speechocean762"}


def _cli(work: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["export", "--models", str(work["models"]), "--out", str(out),
            "--data-faces", str(work["faces"]), "--data-voices", str(work["voices"]),
            "--calib", str(work["calib"]), "--cache", str(work["cache"]),
            "--n-calib", "40", "--min-calib", "10", *extra]


@pytest.fixture(scope="module")
def orin(work: dict[str, Path]) -> dict:
    """One full `edgepin export --target orin` run; gate loosened (random-weight students)."""
    out = work["root"] / "orin"
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        code = main(_cli(work, out, "--target", "orin", "--min-cos-p1", "0.5",
                         "--max-eer-rise-pt", "100"))
    finally:
        capture.undo()
    return {"code": code, "stdout": buf.getvalue(), "out": out,
            "report": json.loads((out / "export_report.json").read_text())}


def test_orin_export_exits_0_with_one_line_tensorrt_note(orin: dict) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: engines are built instead of scripts")
    except ImportError:
        pass
    assert orin["code"] == 0
    notes = [ln for ln in orin["stdout"].splitlines() if "TensorRT is not installed" in ln]
    assert len(notes) == 1
    assert "build_all.sh" in notes[0] and "10.3" in notes[0]


def test_orin_export_artifacts_manifest_and_metadata(orin: dict) -> None:
    out, rep = orin["out"], orin["report"]
    entries = load_manifest(out)
    for m, inp in (("face", "face"), ("voice", "feats")):
        assert entries[m].verified_path() == out / f"{m}.onnx"
        int8 = entries[f"{m}_int8"].verified_path()
        assert int8 == out / f"{m}.int8.onnx"
        props = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
        assert props["edgepin.precision"] == "int8-qdq" and props["edgepin.target"] == "orin"
        assert props["edgepin.calibration_sha256"] == rep["models"][m]["calibration"]["sha256"]
        assert json.loads(props["edgepin.split"]) == SPLIT
        assert rep["models"][m]["lint"]["ok"] and rep["models"][m]["lint"]["n_quantize"] > 0
        ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
        assert "QuantizeLinear" in ops and not any(o.startswith("QLinear") for o in ops)
        assert entries[f"{m}_int8"].meta["gate"]["cos_p1"] == rep["models"][m]["gate"]["cos_p1"]
        assert inp == entries[f"{m}_int8"].meta["input"]
    # no quantization flag given: the recipe file decided, and the report says which entry
    assert rep["models"]["face"]["recipe"]["source"].startswith("recipes.yaml models.face.tensorrt")
    assert rep["models"]["face"]["quantization"]["calibrate_method"] == "percentile"
    assert "Add" in rep["models"]["face"]["quantization"]["excluded_op_types"]
    assert entries["voice_int8"].meta["recipe"]["exclude"] == ["ReduceMean", "Mul", "Sub", "Concat"]
    assert rep["sizes"]["deployable"] == ["face_int8", "voice_int8"]
    assert rep["sizes"]["deployable_bytes"] == sum(
        (out / f"{m}.int8.onnx").stat().st_size for m in ("face", "voice"))


def test_orin_gate_figures_come_from_heldout_identities(orin: dict, work: dict) -> None:
    rep = orin["report"]
    face = rep["models"]["face"]
    a = face["agreement"]
    assert a["cos_min"] <= a["cos_p1"] <= a["cos_median"] <= 1.0 + 1e-9
    test_ids = holdout_split(FaceFolder(work["faces"]).identities(), **{
        "test_fraction": 0.5, "val_fraction": 0.0, "seed": 0})["test"]
    assert face["heldout"]["identities"] == len(test_ids) == 3
    assert a["n"] == face["heldout"]["samples"] == 12  # 3 people x 4 images, all aligned
    for m in ("face", "voice"):
        ev = rep["models"][m]["eval"]
        assert ev["fp32"]["n_genuine"] == ev["int8"]["n_genuine"] > 0  # the same pairs
        assert ev["fp32"]["n_impostor"] == ev["int8"]["n_impostor"] > 0
        g = rep["models"][m]["gate"]
        assert g["eer_delta_pt"] == pytest.approx((ev["int8"]["eer"] - ev["fp32"]["eer"]) * 100)
    voice = rep["models"]["voice"]
    assert voice["agreement"]["n"] == voice["heldout"]["windows"]
    assert voice["agreement_utterance"]["n"] == voice["heldout"]["utterances"] == 6


def test_orin_calibration_sets_use_training_identities_only(orin: dict, work: dict) -> None:
    for m, reader in (("face", FaceFolder(work["faces"])), ("voice", SpeechFolder(work["voices"]))):
        man = read_manifest(work["calib"] / f"{m}_calib.npz")
        test_ids = set(holdout_split(reader.identities(), **SPLIT)["test"])
        used = {f.split("/")[0] for f in man["source"]["files"]}
        assert used and not used & test_ids
        assert man["source"]["key"]["split"] == SPLIT
    voice = read_manifest(work["calib"] / "voice_calib.npz")["source"]
    assert voice["windows"]["silence_only"] > 0 and voice["windows"]["noisy_speech"] > 0


def test_orin_build_scripts_and_trtexec_lines(orin: dict) -> None:
    trt = orin["report"]["tensorrt"]
    root = orin["out"] / "tensorrt" / "orin"
    assert set(trt["trtexec"]) == {f"{m}-{v}" for m in ("face", "voice")
                                   for v in ("gpu", "fp16", "dla")}
    gpu = trt["trtexec"]["face-gpu"]
    assert "--stronglyTyped" in gpu and "--onnx=../../face.int8.onnx" in gpu
    assert "--minShapes=face:1x3x112x112" in gpu and "--maxShapes=face:8x3x112x112" in gpu
    dla = trt["trtexec"]["voice-dla"]
    assert "--useDLACore=0" in dla and "--calib=../../voice.int8.dla.calib" in dla
    assert "--maxShapes=feats:1x200x64" in dla  # DLA: static batch 1
    script = (root / "face-gpu" / "build_engine.sh").read_text()
    assert "--onnx=../../../face.int8.onnx" in script
    assert "  10.*)" in script and "  11.*)" in script  # any TensorRT 10.x / 11.x
    assert (orin["out"] / "voice.int8.dla.onnx").is_file()
    assert (root / "build_all.orin-agx.sh").read_text().count("build_engine.sh") == 6
    nano = (root / "build_all.orin-nano.sh").read_text()
    assert nano.count("build_engine.sh") == 4 and "-dla/" not in nano  # no DLA on the Nano
    assert "build_all.$DEVICE.sh" in (root / "build_all.sh").read_text()


def test_failed_gate_rejects_int8_and_reports_sensitivity(orin: dict, work: dict) -> None:
    """Impossible cosine threshold: the INT8 file is set aside, never registered; exit 1.

    Extra exclusions leave only Conv quantized (keeps the sensitivity pass to one op type)."""
    out = work["root"] / "cpu"
    code = main(_cli(work, out, "--target", "cpu", "--only", "face", "--min-cos-p1", "1.01",
                     "--exclude", "Add", "PRelu", "Gemm", "MatMul", "Mul", "--json"))
    rep = json.loads((out / "export_report.json").read_text())
    face = rep["models"]["face"]
    assert code == 1 and rep["ok"] is False and not face["gate"]["ok"]
    assert "cosine p1" in face["gate"]["failures"][0] and "short by" in face["gate"]["failures"][0]
    assert face["calibration"]["built_now"] is False  # the orin run's set, key matched
    assert (out / "face.int8.rejected.onnx").is_file() and not (out / "face.int8.onnx").exists()
    assert "face_int8" not in load_manifest(out)
    rows = face["sensitivity"]
    assert rows and all(r["n_quantized"] > 0 for r in rows)
    assert [r["cos_p1"] for r in rows] == sorted(r["cos_p1"] for r in rows)
    extra = {"Add", "PRelu", "Gemm", "MatMul", "Mul"}
    assert extra <= set(rep["options"]["exclude"])
    fed = set(quantized_op_types(out / "face.int8.rejected.onnx"))  # QDQ or QOperator form
    assert "Conv" in fed and not fed & extra
    assert "Conv" in {r["op_type"] for r in rows} and {r["op_type"] for r in rows} <= fed
    # a later run whose gate passes removes the rejected file: no stale INT8 next to the real one
    code = main(_cli(work, out, "--target", "cpu", "--only", "face", "--min-cos-p1", "0",
                     "--max-eer-rise-pt", "100", "--json"))
    assert code == 0 and (out / "face.int8.onnx").is_file()
    assert not (out / "face.int8.rejected.onnx").exists()
    face = json.loads((out / "export_report.json").read_text())["models"]["face"]
    # the cpu recipe: onnxruntime's U8S8 kernels, no TensorRT lint, INT8/FP32 latency measured
    assert face["recipe"]["activation_type"] == "uint8" and face["lint"].get("skipped")
    assert face["latency"]["ratio"] > 0 and "CPU int8 kernels" in face["gate_measures"]
    assert load_manifest(out)["face_int8"].meta["latency_ratio"] == face["latency"]["ratio"]


def test_search_writes_the_recipe_that_passes(orin: dict, work: dict, tmp_path: Path) -> None:
    """A gate only a float Conv can pass (everything but Conv already kept float): --search
    finds Conv in the sensitivity report, keeps it float, passes, writes that recipe."""
    import shutil

    from export.quantize import get_target
    from export.recipes import RECIPES_FILE, load_recipes, recipe_for

    recipes = Path(shutil.copy(RECIPES_FILE, tmp_path / "recipes.yaml"))
    out = work["root"] / "search"
    code = main(_cli(work, out, "--target", "cpu", "--only", "face", "--min-cos-p1", "0.999999",
                     "--max-eer-rise-pt", "100", "--exclude", "Add", "PRelu", "Gemm", "MatMul",
                     "Mul", "--recipes", str(recipes), "--search", "--json"))
    face = json.loads((out / "export_report.json").read_text())["models"]["face"]
    assert code == 0 and face["gate"]["ok"]
    assert not face["search"][0]["gate"]["ok"] and face["search"][-1]["gate"]["ok"]
    assert face["search_wrote"].endswith("models.face.cpu")
    found = recipe_for(load_recipes(recipes), "face", get_target("cpu"), recipes)
    assert "Conv" in found.exclude and "PRelu" in found.exclude


def test_no_calibration_set_and_no_data_is_a_clear_error(work: dict, orin: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("EDGEPIN_DATA", str(tmp_path / "nowhere"))  # default data folders absent
    code = main(["export", "--target", "cpu", "--models", str(orin["out"]), "--only", "face",
                 "--out", str(tmp_path / "out"), "--calib", str(tmp_path / "empty"),
                 "--cache", str(work["cache"])])
    err = capsys.readouterr().err
    assert code == 2
    assert "no calibration set" in err and str(tmp_path / "empty" / "face_calib.npz") in err
    assert "random data is never used" in err


def test_missing_student_names_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["export", "--target", "cpu", "--models", str(tmp_path), "--out",
                 str(tmp_path / "o")])
    assert code == 2 and f"no face student in {tmp_path}" in capsys.readouterr().err


def test_ensure_set_refuses_a_set_built_for_other_data(work: dict, orin: dict) -> None:
    path = work["calib"] / "face_calib.npz"
    key = dict(read_manifest(path)["source"]["key"])
    arrays, _, built = ensure_set(path, ["face"], key, None, min_samples=10)
    assert not built and arrays["face"].shape[1:] == (3, 112, 112)
    with pytest.raises(ModelError, match="was built for"):
        ensure_set(path, ["face"], {**key, "data": "/elsewhere"}, None, min_samples=10)


@pytest.mark.parametrize("modality", ["face", "voice"])
def test_a_lost_calibration_set_is_rebuilt_as_the_export_recorded_it(
        orin: dict, work: dict, tmp_path: Path, modality: str) -> None:
    # a wiped cache: the INT8 report (benchmarks/int8.py) rebuilds the set from the data with
    # the export's own key, and uses it only if it hashes as the export's report says
    from export.pipeline import restore_calibration_set

    rep = json.loads(json.dumps(orin["report"]["models"][modality]))
    fp32 = orin["out"] / f"{modality}.onnx"
    data = work["faces" if modality == "face" else "voices"]
    recorded = Path(rep["calibration"]["path"])
    assert recorded.is_file()
    assert restore_calibration_set(modality, rep, fp32, data, work["cache"]) == recorded

    rep["calibration"]["path"] = str(tmp_path / "lost" / f"{modality}_calib.npz")
    got = restore_calibration_set(modality, rep, fp32, data, work["cache"])
    assert got.is_file() and got.parent == tmp_path / "lost"
    assert read_manifest(got)["sha256"] == rep["calibration"]["sha256"]

    rep["calibration"]["path"] = str(tmp_path / "other" / f"{modality}_calib.npz")
    rep["calibration"]["sha256"] = "0" * 64  # as if other data had been calibrated on
    with pytest.raises(ModelError, match="export .* again"):
        restore_calibration_set(modality, rep, fp32, data, work["cache"])
    assert not (tmp_path / "other" / f"{modality}_calib.npz").exists()
    assert not (tmp_path / "other" / f"{modality}_calib.json").exists()


def test_calibration_sets_enforce_the_minimum_count(work: dict) -> None:
    spec = CalibSpec(n=40, min_samples=500, split=SPLIT)
    with pytest.raises(DatasetError, match="at least 500 are required"):
        face_calibration(work["faces"], work["cache"], spec)


def test_voice_calibration_windows_are_deployment_length(work: dict) -> None:
    fe = VoiceFrontEnd()
    vc = voice_calibration(work["voices"], work["cache"], fe,
                           CalibSpec(n=30, min_samples=10, split=SPLIT))
    feats = vc.arrays["feats"]
    w = vc.source["windows"]
    assert w["speech_voiced"] > 0 and w["speech_raw"] > 0 and w["silence_only"] > 0
    assert feats.shape == (sum(w.values()), 200, 64)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    # Silence windows are the last block; room tone has far less spectral contrast than speech.
    spread = feats.std(axis=(1, 2))
    assert spread[-w["silence_only"]:].mean() < spread[: w["speech_voiced"]].mean()
    assert len(vc.utterance_windows) == vc.source["n_utterances"]  # all fixture utt. are voiced


def test_engine_specs_per_target(orin: dict) -> None:
    out = orin["out"]
    f32, i8 = out / "face.onnx", out / "face.int8.onnx"
    from packaging.version import Version

    nano = engine_specs(TARGETS["nano"], "face", f32, i8, (3, 112, 112), out, Version("8.2.1"))
    assert [(v, s.precision, s.onnx) for v, s in nano] == [("fp16", "fp16", f32)]
    xav = dict(engine_specs(TARGETS["xavier"], "face", f32, i8, (3, 112, 112), out,
                            Version("8.5.2")))
    assert set(xav) == {"gpu", "fp16", "dla"} and xav["dla"].dla_core == 0
    gpu11 = engine_specs(TARGETS["gpu"], "face", f32, i8, (3, 112, 112), out, Version("11.0"))
    assert [v for v, _ in gpu11] == ["gpu"]  # 11.x: no weak-typed FP16, no DLA
    info = write_scripts(TARGETS["xavier"], [("face", v, s) for v, s in xav.items()],
                         out / "xav", Version("8.5.2"))
    assert "--stronglyTyped" not in info["trtexec"]["face-gpu"]  # 8.5: INT8+FP16 flags
    assert "--int8" in info["trtexec"]["face-gpu"]


def test_keep_float_takes_first_and_head_out_of_int8(orin: dict, tmp_path: Path) -> None:
    import shutil

    import onnxruntime as ort

    from export.mixed_precision import keep_float, layer_errors

    src = orin["out"] / "face.int8.onnx"
    path = shutil.copy(src, tmp_path / "mixed.onnx")
    before = onnx.load(str(path)).graph
    n_q = sum(n.op_type == "QuantizeLinear" for n in before.node)
    names = keep_float(path, ["first", "last:1"])
    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    floated = [n for n in graph.node if n.name in names]
    assert len(floated) == 2 and all(n.op_type == "Conv" for n in floated)
    assert not any(producer.get(i) == "DequantizeLinear" for n in floated for i in n.input)
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) < n_q  # orphans dropped
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"face": x})
    assert y[0].shape[0] == 2 and np.isfinite(y[0]).all()
    rows = layer_errors(orin["out"] / "face.onnx", src, {"face": x})
    assert rows and all(r["rel_error"] >= 0 for r in rows)
    with pytest.raises(ConfigError, match="no such node"):
        keep_float(path, ["not-a-node"])


def test_orin_gate_measures_qdq_arithmetic_not_cpu_kernels(orin: dict, tmp_path: Path) -> None:
    """TensorRT targets are gated on the exact QDQ arithmetic; the CPU-kernel figure is kept."""
    import onnxruntime as ort

    from export.qdq_reference import reference_graph

    face = orin["report"]["models"]["face"]
    assert "QDQ arithmetic" in face["gate_measures"]
    assert face["agreement_ort_cpu_kernels"]["n"] == face["agreement"]["n"]
    assert not (orin["out"] / "face.int8.reference.onnx").exists()  # temporary
    ref = reference_graph(orin["out"] / "face.int8.onnx", tmp_path / "ref.onnx")
    assert "DequantizeLinear" not in {n.op_type for n in onnx.load(str(ref)).graph.node}
    x = np.random.default_rng(1).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no int8 fusion
    exact = ort.InferenceSession(str(orin["out"] / "face.int8.onnx"), opts,
                                 providers=["CPUExecutionProvider"]).run(None, {"face": x})[0]
    same_plan = ort.InferenceSession(str(ref), opts, providers=["CPUExecutionProvider"]).run(
        None, {"face": x})[0]
    np.testing.assert_allclose(same_plan, exact, atol=1e-5)  # the rewrite changes no number
    optimised = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"]).run(
        None, {"face": x})[0]
    # Float fusions may flip an int8 rounding here and there, nothing more.
    cos = np.sum(optimised * exact, axis=1) / (np.linalg.norm(optimised, axis=1)
                                               * np.linalg.norm(exact, axis=1))
    assert cos.min() > 0.999


def test_per_model_options() -> None:
    from export.pipeline import for_model

    items = ["Softmax", "voice:ReduceMean", "face:PRelu", "face:last:2"]
    assert for_model(items, "voice") == ["Softmax", "ReduceMean"]
    assert for_model(items, "face") == ["Softmax", "PRelu", "last:2"]


def test_only_one_student_keeps_the_other_students_report(orin: dict, work: dict,
                                                          tmp_path: Path) -> None:
    """`--only face` into a folder exported before: the voice section (its INT8 file and gate,
    still the shipped ones) stays in export_report.json, marked as carried over."""
    import shutil

    out = tmp_path / "again"
    shutil.copytree(orin["out"], out)
    before = json.loads((out / "export_report.json").read_text())
    code = main(_cli(work, out, "--target", "orin", "--only", "face", "--min-cos-p1", "0.5",
                     "--max-eer-rise-pt", "100"))
    after = json.loads((out / "export_report.json").read_text())
    assert code == 0
    assert after["models"]["voice"] == before["models"]["voice"]
    assert after["carried_over"]["voice"]["from_export"] == before["created"]
    assert set(after["carried_over"]) == {"voice"}  # face was exported again, not carried
