"""INT8 for onnxruntime's own CPU kernels (`edgepin export --target cpu`) vs FP32, one run.

Reads the report of one `edgepin export --target cpu` run (its accuracy gate scores FP32 and
INT8 on the same held-out people with onnxruntime's CPU int8 kernels, and times both at
batch 1 interleaved) and, optionally, the `--target orin` report of the same session (the
TensorRT-form file run by the same kernels), and writes the "CPU target" section of
`benchmarks/int8.md` (between markers, the rest of the file is left as it is) plus the
precision `--precision auto` picks on this CPU and why.

    python -m benchmarks.int8_cpu --cpu-report OUT/export_report.json \
        [--orin-report OUT2/export_report.json] --md benchmarks/int8.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.int8 import machine  # noqa: E402
from edge_runtime.cpu_int8 import choose  # noqa: E402

BEGIN, END = "<!-- cpu-target:begin -->", "<!-- cpu-target:end -->"


def _held(r: dict[str, Any]) -> str:
    h = r.get("heldout", {})
    if "samples" in h:
        return f"{h['identities']} people, {h['samples']} faces"
    return f"{h.get('identities')} speakers, {h.get('utterances')} utt., {h.get('windows')} windows"


def section(cpu: dict[str, Any], orin: dict[str, Any] | None, out_dir: Path) -> str:
    m = machine()
    lines = [BEGIN, "## CPU target: INT8 on onnxruntime's own CPU kernels (`--target cpu`)", "",
             f"From the `edgepin export --target cpu` run of {cpu['created']} (no flag besides "
             f"the data folders; recipes `export/recipes.yaml`). Machine: {m['cpu']}, "
             f"{m['logical_cpus']} logical CPUs, ISA {', '.join(m['isa'])} (VNNI: "
             f"{'yes' if m['vnni'] else 'no'}); onnxruntime {cpu['machine']['onnxruntime']}; "
             f"load average when this section was written {m['load_average']} (shared "
             f"machine, 8 engineers on 2 cores). Date {m['date']}.", "",
             "| model | held-out | recipe | cosine p1 | EER FP32 | EER INT8 | EER change | "
             "gate | FP32 ms | INT8 ms | INT8 / FP32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in cpu["models"].items():
        g, lat = r["gate"], r.get("latency", {})
        recipe = ", ".join(f"{k}={v}" for k, v in r["recipe"].items()
                           if k in ("calibrate_method", "activation_type", "weight_type",
                                    "symmetric_activations", "reduce_range", "quant_format")
                           ) + f"; float: {', '.join(r['recipe']['exclude']) or '-'}"
        lines.append(
            f"| {name} | {_held(r)} | {recipe} | {r['agreement']['cos_p1']:.4f} | "
            f"{g['eer_fp32']:.2%} | {g['eer_int8']:.2%} | {g['eer_delta_pt']:+.2f} pt | "
            f"{'pass' if g['ok'] else 'FAIL'} | {lat.get('fp32_ms', float('nan')):.2f} | "
            f"{lat.get('int8_ms', float('nan')):.2f} | {lat.get('ratio', float('nan')):.2f} |")
    lines += ["", "Same run, same held-out people and pairs for both precisions; latency: median "
              "of 60 interleaved batch-1 runs per precision, 1 thread, on held-out inputs."]
    if orin is not None:
        lines += ["", "The TensorRT-form files (`--target orin`, symmetric int8 QDQ) run by the "
                  "same onnxruntime kernels on this machine, same session:"]
        for name, r in orin["models"].items():
            a = r.get("agreement_ort_cpu_kernels")
            if a:
                lines.append(f"- {name}: cosine p1 {a['cos_p1']:.4f}, min {a['cos_min']:.4f} "
                             f"(gate figure, on TensorRT's arithmetic: p1 "
                             f"{r['agreement']['cos_p1']:.4f})")
    c = choose(out_dir)
    lines += ["", f"`--precision auto` on this CPU with the `--target cpu` folder: "
              f"**{c['precision']}** ({c['reason']}). On a CPU without VNNI / asimddp / i8mm it "
              "is FP32: the earlier run on an AVX2-only EPYC (table above) measured INT8 1.5x "
              "slower than FP32.", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-report", type=Path, required=True)
    ap.add_argument("--orin-report", type=Path)
    ap.add_argument("--md", type=Path, default=ROOT / "benchmarks" / "int8.md")
    args = ap.parse_args(argv)
    cpu = json.loads(args.cpu_report.read_text())
    orin = json.loads(args.orin_report.read_text()) if args.orin_report else None
    text = section(cpu, orin, args.cpu_report.parent)
    md = args.md.read_text() if args.md.is_file() else ""
    if BEGIN in md and END in md:
        md = md[: md.index(BEGIN)] + text + md[md.index(END) + len(END) + 1:]
    else:
        md = md.rstrip("\n") + "\n\n" + text
    args.md.write_text(md)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
