"""INT8 vs FP32 students on this CPU: latency, embedding agreement, EER change, model sizes.

Reads the bundle `edgepin export` wrote (manifest + export_report.json, whose gate figures are
the accuracy numbers of record), re-measures the per-sample cosine on the same held-out
identities (for the histogram, and as a cross-check of the report), times both precisions with
onnxruntime at batch 1 on 2 threads, and writes `benchmarks/int8.md` + `benchmarks/int8.png`.

    python benchmarks/int8.py --models models --cache /work/cache

Latency is the median of interleaved single-sample runs (FP32, INT8, FP32, ...), so load from
other processes on a shared machine hits both precisions alike; the load average is recorded.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calibration.int8_sets import load_calibration_set  # noqa: E402
from edge_runtime.bundle import load_manifest  # noqa: E402
from edge_runtime.frontend.features import VoiceFrontEnd  # noqa: E402
from edge_runtime.sysinfo import cpu_identity  # noqa: E402
from export.pipeline import (  # noqa: E402
    agreement,
    cosine_stats,
    heldout_inputs,
    restore_calibration_set,
)
from export.quantize import DEFAULT_EXCLUDED, get_target  # noqa: E402
from export.stages import onnx_metadata  # noqa: E402

INPUT = {"face": "face", "voice": "feats"}


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # the sessions run interleaved: a pool that spins after its run steals the cores from the
    # next session (measured: FP32 face 4.7 ms alone, 16 ms interleaved with spinning pools)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latency(paths: dict[str, Path], samples: np.ndarray, name: str, *, threads: int = 2,
            rounds: int = 200, warmup: int = 10) -> dict[str, Any]:
    """Median / p90 ms per sample at batch 1 for each model in ``paths``, runs interleaved."""
    sessions = {label: _session(p, threads) for label, p in paths.items()}
    times: dict[str, list[float]] = {label: [] for label in paths}
    for i in range(warmup + rounds):
        x = {name: samples[i % len(samples)][None]}
        for label, sess in sessions.items():
            t = time.perf_counter()
            sess.run(None, x)
            if i >= warmup:
                times[label].append((time.perf_counter() - t) * 1000)
    res: dict[str, Any] = {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}
                           for k, v in times.items()}
    res["int8_over_fp32"] = res["int8"]["median_ms"] / res["fp32"]["median_ms"]
    if "int8_cpu" in res:
        res["int8_cpu_over_fp32"] = res["int8_cpu"]["median_ms"] / res["fp32"]["median_ms"]
    res.update(rounds=rounds, threads=threads, batch=1)
    return res


def cpu_form(fp32: Path, calib: Path, name: str, out: Path, quant: dict[str, Any]) -> Path:
    """The same quantization (same settings) with int8-stored weights, the ``cpu`` target's
    form: shows what the TensorRT targets' float-weights-behind-Q/DQ form costs in size."""
    from export.mixed_precision import keep_float
    from export.quantize import quantize_qdq

    arrays = load_calibration_set(calib, expect_inputs=[name], min_samples=1)
    method = quant.get("calibrate_method", "minmax")
    if method != "minmax":
        n = len(arrays[name]) // 16 * 16
        arrays = {name: arrays[name][:n]}
    quantize_qdq(fp32, arrays, out, target="cpu", calibrate_method=method,
                 exclude_op_types=quant.get("excluded_op_types", DEFAULT_EXCLUDED))
    if quant.get("keep_float"):
        keep_float(out, quant["keep_float"])
    return out


def machine() -> dict[str, Any]:
    import onnxruntime

    cpu, flags = cpu_identity()
    isa = sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma"})
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "isa": isa,
            "vnni": any("vnni" in f for f in flags), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def plot(results: dict[str, Any], cosines: dict[str, np.ndarray], out_png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 3, 1)
    models = list(results)
    x = np.arange(len(models))
    for off, prec in ((-0.27, "fp32"), (0.0, "int8"), (0.27, "int8_cpu")):
        ax.bar(x + off, [results[m]["latency"][prec]["median_ms"] for m in models], 0.27,
               label={"fp32": "FP32", "int8": "INT8 (TensorRT form)",
                      "int8_cpu": "INT8 (int8 weights)"}[prec])
    ax.set_xticks(x, [f"{m}\n(per {'face' if m == 'face' else '2 s window'})" for m in models])
    ax.set_ylabel("ms per sample (median, batch 1, 2 threads)")
    ax.legend()
    ax.set_title("onnxruntime CPU latency")
    for i, m in enumerate(models):
        ax2 = fig.add_subplot(1, 3, 2 + i)
        c = cosines[m]
        ax2.hist(c, bins=60, log=True)
        ax2.axvline(0.99, color="red", linestyle="--", label="gate p1 >= 0.99")
        ax2.axvline(np.percentile(c, 1), color="black", label=f"p1 = {np.percentile(c, 1):.4f}")
        ax2.set_xlabel("cosine(FP32, INT8) per held-out sample")
        ax2.set_title(f"{m}: {len(c)} samples")
        ax2.legend(fontsize=8)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")


def markdown(results: dict[str, Any], report: dict[str, Any], sizes: dict[str, Any],
             mach: dict[str, Any], png: Path) -> str:
    t = report["target"]["name"]
    lines = [
        "# INT8 (QDQ) vs FP32 students", "",
        f"Generated by `benchmarks/int8.py` on {mach['date']} from the `edgepin export --target "
        f"{t}` run of {report['created']} (`{report['options']['out']}/export_report.json`).", "",
        f"Machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs, ISA {', '.join(mach['isa'])}"
        f" (VNNI: {'yes' if mach['vnni'] else 'no'}); Python {mach['python']}, onnxruntime "
        f"{mach['onnxruntime']}; load average at start {mach['load_average']} (shared machine).",
        "", "## Accuracy on held-out identities (same samples, same pairs)", "",
        "| model | held-out | cosine min | cosine p1 | cosine median | EER FP32 | EER INT8 | "
        "EER change | gate |", "|---|---|---|---|---|---|---|---|---|"]
    for m in results:
        rep = report["models"][m]
        a, g, h = rep["agreement"], rep["gate"], rep["heldout"]
        held = (f"{h['identities']} people, {h['samples']} faces" if m == "face" else
                f"{h['identities']} speakers, {h['utterances']} utt., {h['windows']} windows")
        lines.append(f"| {m} | {held} | {a['cos_min']:.4f} | {a['cos_p1']:.4f} | "
                     f"{a['cos_median']:.4f} | {g['eer_fp32']:.2%} | {g['eer_int8']:.2%} | "
                     f"{g['eer_delta_pt']:+.2f} pt | {'pass' if g['ok'] else 'FAIL'} |")
    measures = {report["models"][m].get("gate_measures", "") for m in results}
    lines += ["", f"INT8 outputs measured as: {'; '.join(sorted(measures))}."]
    for m in results:
        k = report["models"][m].get("agreement_ort_cpu_kernels")
        if k:
            lines.append(f"- {m}: the same file run by onnxruntime's fused CPU int8 kernels on "
                         f"this machine gives cosine min {k['cos_min']:.4f}, p1 {k['cos_p1']:.4f}"
                         f", median {k['cos_median']:.4f} " + (
                             "(VNNI: int32 accumulation, as TensorRT's)." if mach["vnni"] else
                             "(no VNNI: u8 x s8 products are summed in saturating int16, an "
                             "error TensorRT's int32 accumulation does not have; see "
                             "export/qdq_reference.py)."))
        q = report["models"][m].get("quantization", {})
        lines.append(f"- {m} quantization: calibration {q.get('calibrate_method')}, op types kept "
                     f"in float beyond the defaults: {[o for o in q.get('excluded_op_types', []) if o not in DEFAULT_EXCLUDED] or 'none'}"
                     f", nodes kept in float: {q.get('keep_float') or 'none'}.")
    lines += ["", "Gate: cosine p1 >= 0.99 and EER change <= +0.30 pt. Voice cosines are per "
              "2 s window (the model's output); per utterance embedding (what the device "
              "compares) they are:"]
    if "voice" in results and "agreement_utterance" in report["models"]["voice"]:
        u = report["models"]["voice"]["agreement_utterance"]
        lines.append(f"min {u['cos_min']:.4f}, p1 {u['cos_p1']:.4f}, median {u['cos_median']:.4f}"
                     f" over {u['n']} utterances.")
    for m, r in results.items():
        ev = report["models"][m]["eval"]
        lines.append(f"- {m}: {ev['fp32']['n_genuine']} genuine / {ev['fp32']['n_impostor']} "
                     f"impostor pairs; cosines re-measured here: {r['recheck']}.")
    lines += ["", "## Latency, onnxruntime CPU, batch 1, 2 threads", "",
              f"| model | FP32 median (p90) ms | INT8 `{t}` median (p90) ms | INT8 / FP32 | "
              "INT8 int8-weights (`cpu` form) median (p90) ms | its ratio |",
              "|---|---|---|---|---|---|"]
    for m, r in results.items():
        la = r["latency"]
        lines.append(f"| {m} (per {'face' if m == 'face' else '2 s window'}) | "
                     f"{la['fp32']['median_ms']:.2f} ({la['fp32']['p90_ms']:.2f}) | "
                     f"{la['int8']['median_ms']:.2f} ({la['int8']['p90_ms']:.2f}) | "
                     f"{la['int8_over_fp32']:.2f} | "
                     f"{la['int8_cpu']['median_ms']:.2f} ({la['int8_cpu']['p90_ms']:.2f}) | "
                     f"{la['int8_cpu_over_fp32']:.2f} |")
    lines += ["", f"{results[next(iter(results))]['latency']['rounds']} interleaved runs per "
              "precision on real held-out inputs. Without VNNI/AVX-512 onnxruntime's int8 "
              "kernels have no fast dot-product instruction on x86, so INT8 is not expected to "
              "be faster on this CPU; the INT8 graph is made for TensorRT on the Jetson.", "",
              "## Model sizes", "", "| file | bytes | MiB |", "|---|---|---|"]
    for name, b in sizes["files"].items():
        lines.append(f"| {name} | {b} | {b / 2**20:.2f} |")
    lines += ["", f"Deployable set ({', '.join(sizes['deployable'])}): "
              f"{sizes['deployable_bytes'] / 2**20:.2f} MiB, target <= 4 MiB: "
              f"{'met' if sizes['within_limit'] else 'NOT met'}."]
    if sizes.get("int8_weights") and not get_target(t).int8_weights:
        tot = sum(sizes["int8_weights"].values())
        lines.append(f"The `{t}` INT8 files keep float weights behind Q/DQ pairs (the form "
                     "TensorRT 8.x parsers need); the same quantization with int8-stored weights "
                     f"(`--target cpu`) is {', '.join(f'{m} {b / 2**20:.2f} MiB' for m, b in sizes['int8_weights'].items())}"
                     f" = {tot / 2**20:.2f} MiB for both students.")
    elif sizes.get("int8_weights"):
        lines.append(f"The `{t}` INT8 files store int8 weights behind DequantizeLinear (TensorRT "
                     ">= 10 takes pre-quantized weights); TensorRT 8.x targets (`xavier`, `nano`) "
                     "get float weights behind Q/DQ pairs instead, about 4x larger.")
    lines += ["", f"![INT8 vs FP32]({png.name})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--data-faces", default="/work/shared/data/lfw")
    p.add_argument("--data-voices", default="/work/shared/data/speechocean762")
    p.add_argument("--cache", default=os.environ.get("EDGEPIN_CACHE", str(Path.home() / ".cache/edgepin")))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "int8.md"))
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    models = Path(args.models)
    report = json.loads((models / "export_report.json").read_text())
    entries = load_manifest(models)
    results: dict[str, Any] = {}
    cosines: dict[str, np.ndarray] = {}
    int8_weights: dict[str, int] = {}
    tmp = tempfile.mkdtemp(prefix="edgepin-int8-bench-")
    for m in ("face", "voice"):
        if f"{m}_int8" not in entries:
            print(f"{m}: no registered INT8 model in {models}; skipped", file=sys.stderr)
            continue
        fp32, int8 = entries[m].verified_path(), entries[f"{m}_int8"].verified_path()
        rep = report["models"][m]
        meta = onnx_metadata(fp32)
        fe = VoiceFrontEnd.from_dict(meta["front_end"]) if m == "voice" else None
        data = Path(args.data_faces if m == "face" else args.data_voices)
        batches, _ = heldout_inputs(m, data, rep["split"], Path(args.cache), fe)
        measured = int8
        if "QDQ arithmetic" in rep.get("gate_measures", ""):  # as the export gate measured
            from export.qdq_reference import reference_graph

            measured = reference_graph(int8, Path(tmp) / f"{m}.reference.onnx")
        cos, _, _ = agreement(fp32, measured, batches, INPUT[m], args.threads)
        cosines[m] = cos
        stats = cosine_stats(cos)
        same = all(abs(stats[k] - rep["agreement"][k]) < 1e-6 for k in ("cos_min", "cos_p1"))
        samples = np.concatenate(batches)[:64]
        calib = restore_calibration_set(m, rep, fp32, data, Path(args.cache))
        cpu = cpu_form(fp32, calib, INPUT[m],
                       Path(tmp) / f"{m}.cpu.int8.onnx", rep.get("quantization", {}))
        int8_weights[m] = cpu.stat().st_size
        results[m] = {"latency": latency({"fp32": fp32, "int8": int8, "int8_cpu": cpu}, samples,
                                         INPUT[m], threads=args.threads, rounds=args.rounds),
                      "recheck": f"p1 {stats['cos_p1']:.4f}, min {stats['cos_min']:.4f} "
                                 f"({'identical to' if same else 'DIFFERENT from'} the report)"}
    if not results:
        raise SystemExit(f"no INT8 model registered in {models}: run edgepin export first")
    sizes = dict(report["sizes"])
    sizes["files"] = {e.file: e.path.stat().st_size for e in entries.values() if e.path.is_file()}
    sizes["int8_weights"] = int8_weights
    out = Path(args.out)
    png = out.with_suffix(".png")
    plot(results, cosines, png)
    mach = machine()
    out.write_text(markdown(results, report, sizes, mach, png))
    (out.with_suffix(".json")).write_text(json.dumps(
        {"results": results, "sizes": sizes, "machine": mach}, indent=2) + "\n")
    print(f"wrote {out}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
