"""dlib's networks ported to ONNX vs dlib itself, same run -> benchmarks/dlib_onnx.md / .json.

Teacher part: the ONNX port of dlib's face ResNet (train.teachers.FaceTeacher) against
`dlib.face_recognition_model_v1.compute_face_descriptor` (train.teachers.DlibFaceTeacher) on
the same 150x150 chips (dlib's own get_face_chip of dlib HOG + 5-point faces) of LFW's
held-out identities (the students' split: test 0.2, val 0.1, seed 0): cosine and max |diff|
per face, ms per face alternating sample by sample (batch 1, one thread each), and the
held-out EER of both through `train.evaluate.evaluate` (what `edgepin eval face` runs).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 19 python -m benchmarks.dlib_onnx \\
        --data ../shared/data --cache /work/cache --out benchmarks/dlib_onnx.json teacher
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge_runtime.errors import MediaError
from edge_runtime.frontend.face import DlibHogDetector, choose_face, dlib_chip, load_image
from train.evaluate import DEFAULT_SPLIT, evaluate, select_samples
from train.teachers import DlibFaceTeacher, FaceTeacher


def held_out_chips(lfw: Path, n: int) -> tuple[list[str], np.ndarray]:
    """dlib chips of `n` held-out LFW images, spread over the identities (every k-th file)."""
    _, samples, _ = select_samples("face", lfw, "test", DEFAULT_SPLIT)
    step = max(1, len(samples) // (n + n // 4))
    detector = DlibHogDetector()
    paths, chips = [], []
    for s in samples[::step]:
        try:
            image = load_image(s.path)
            det = choose_face(detector.detect(image), image.shape, source=str(s.path))
        except MediaError:
            continue
        paths.append(str(s.path))
        chips.append(dlib_chip(image, det))
        if len(chips) == n:
            break
    return paths, np.stack(chips)


def _ms(fn, reps: int = 1) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1e3 * (time.perf_counter() - t0) / reps


def teacher_part(data: Path, cache: Path, n_parity: int, n_timing: int) -> dict:
    lfw = data / "lfw"
    paths, chips = held_out_chips(lfw, n_parity)
    port, ref = FaceTeacher(cache, threads=1), DlibFaceTeacher()
    a = np.stack([ref.embed_chip(c) for c in chips]).astype(np.float64)
    b = port.embed_chips(chips).astype(np.float64)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    t_ref, t_port = [], []
    for c in chips[:n_timing]:  # alternating, so both see the same machine load
        ref.embed_chip(c)
        port.embed_chip(c)
        t_ref.append(_ms(lambda c=c: ref.embed_chip(c)))
        t_port.append(_ms(lambda c=c: port.embed_chip(c)))
    batch = chips[:16]
    port.embed_chips(batch)
    t_batch = [_ms(lambda: port.embed_chips(batch)) / len(batch) for _ in range(5)]
    reports = {}
    for name in ("teacher", "teacher-dlib"):
        r = evaluate("face", name, lfw, split="test", cache_dir=cache, threads=1,
                     timing_samples=20)
        reports[name] = {k: r[k] for k in ("eer", "auc", "tar@far=0.01", "tar@far=0.001",
                                           "n_genuine", "n_impostor", "split", "ms_per_sample")}
    return {
        "parity": {"faces": len(paths), "identities": len({Path(p).parent.name for p in paths}),
                   "min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
                   "max_abs_diff": float(np.abs(a - b).max()),
                   "max_rel_l2": float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)).max())},
        "timing": {"faces": len(t_ref), "batch": 1, "threads": 1, "statistic": "median",
                   "dlib_ms": float(np.median(t_ref)), "onnx_ms": float(np.median(t_port)),
                   "speedup_median_of_ratios": float(np.median(np.array(t_ref) / np.array(t_port))),
                   "onnx_batch16_ms_per_face": float(np.median(t_batch))},
        "eer": reports,
        "onnx_file": str(port.path), "version": port.version, "reference_version": ref.version,
    }


def _teacher_md(t: dict) -> list[str]:
    m, p, tm, e = t["machine"], t["parity"], t["timing"], t["eer"]
    rows = []
    for name, label in (("teacher", "ONNX port (onnxruntime, CPU)"), ("teacher-dlib", "dlib's own code")):
        r = e[name]
        rows.append(f"| {label} | {100 * r['eer']:.3f} | {r['auc']:.5f} | "
                    f"{100 * r['tar@far=0.01']['tar']:.2f} | {100 * r['tar@far=0.001']['tar']:.2f} | "
                    f"{r['n_genuine']} / {r['n_impostor']} |")
    gap = 100 * (e["teacher"]["eer"] - e["teacher-dlib"]["eer"])
    return [
        "## Face teacher: dlib's ResNet v1 (128-d) as ONNX", "",
        f"- run: {m['date']}; {m['cpu']}, {m['memory']}; onnxruntime {m['onnxruntime']}, "
        f"dlib {m['dlib']}, numpy {m['numpy']}",
        f"- port: `{t['version']}` (generated from the wheel's .dat, cached by its hash); "
        f"reference: `{t['reference_version']}`",
        "- input for both: dlib's own 150x150 `get_face_chip` (padding 0.25) of the dlib HOG box "
        "+ 5-point landmarks; the port does dlib's `(pixel - mean_rgb) / 256` inside the graph",
        "",
        f"Parity on {p['faces']} held-out LFW faces ({p['identities']} identities, every k-th "
        "image of the held-out split):", "",
        "| min cosine | median cosine | max abs diff | max relative L2 |", "|---|---|---|---|",
        f"| 1 - {1 - p['min_cosine']:.1e} | 1 - {1 - p['median_cosine']:.1e} | {p['max_abs_diff']:.2e} | "
        f"{p['max_rel_l2']:.2e} |", "",
        f"Speed, same run, {tm['faces']} chips, alternating dlib / port per chip, batch 1, one "
        "thread each (`OMP_NUM_THREADS=1`), median:", "",
        "| dlib ms/face | ONNX ms/face | speed-up (median of per-chip ratios) | ONNX batch 16, ms/face |",
        "|---|---|---|---|",
        f"| {tm['dlib_ms']:.1f} | {tm['onnx_ms']:.2f} | {tm['speedup_median_of_ratios']:.1f}x | "
        f"{tm['onnx_batch16_ms_per_face']:.2f} |", "",
        "Held-out LFW verification (the students' split: test 0.2, val 0.1, seed 0; "
        "`edgepin eval face --model teacher` vs `--model teacher-dlib`, same pairs):", "",
        "| implementation | EER % | AUC | TAR@FAR=1e-2 % | TAR@FAR=1e-3 % | genuine / impostor pairs |",
        "|---|---|---|---|---|---|", *rows, "",
        f"EER difference: {gap:+.3f} pt (acceptance: within 0.05 pt). Speed-up "
        f"{tm['speedup_median_of_ratios']:.1f}x (acceptance: >= 3x).", "",
    ]


def render(doc: dict) -> str:
    """benchmarks/dlib_onnx.md from the JSON."""
    lines = ["# dlib's networks in ONNX vs dlib itself", "",
             "Produced by `benchmarks/dlib_onnx.py` (see its docstring for the command). "
             "Figures of one section come from one run. Reader: `docs/dlib_port.md`.", ""]
    if "teacher" in doc:
        lines += _teacher_md(doc["teacher"])
    if "detector" in doc:
        from benchmarks.dlib_detector import detector_md

        lines += detector_md(doc["detector"])
    if "bench" in doc:
        b = doc["bench"]
        m = b["machine"]
        lines += ["## `edgepin bench`: detection and frame to decision at 640x480", "",
                  f"- run: {m.get('date', '?')}; {m.get('cpu', '?')}; {b['runs']} runs per row; "
                  "the GRID clip's middle frame (360x288) and the same frame enlarged to 640x480; "
                  "FP32 students on onnxruntime, one thread", "",
                  "| stage | variant | p50 ms | p95 ms |", "|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['variant']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
                  for r in b["rows"]]
        lines.append("")
    lines += _choice_md(doc)
    return "\n".join(lines)


def _choice_md(doc: dict) -> list[str]:
    """Which detector the runtime uses, from the figures above."""
    if "detector" not in doc:
        return []
    sp = doc["detector"]["speed_ms"]
    hog = sp["dlib HOG + landmarks (runtime: full frame)"]
    cnn = sp["ONNX CNN + landmarks, max side 320 (runtime)"]
    return [
        "## Which detector the runtime uses", "",
        "The CNN reproduces dlib's CNN detector box for box and finds at least as many of these "
        "faces as HOG. On this 2-core x86 CPU it costs about as much as HOG at the runtime's "
        f"working resolution (here {cnn:.0f} ms vs {hog:.0f} ms; the ratio moves with the "
        "machine's load), and 4x more at full 640x480; dlib's own CNN code takes seconds. "
        "So `--detector auto` (the default) does not hard-code an answer: with TensorRT and a "
        "detector engine it runs the network (a few GMAC per frame is trivial on a Jetson GPU); "
        "otherwise it times both on an idle frame of the camera's size when the runtime starts "
        "and keeps the faster, which on this CPU is usually HOG. HOG stays the fallback when a "
        "models folder has no `face_detector`.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/dlib_onnx.json"))
    ap.add_argument("--parity-faces", type=int, default=300)
    ap.add_argument("--timing-faces", type=int, default=100)
    ap.add_argument("parts", nargs="*",
                    help="teacher, detector, bench; none: only re-render the .md from the .json")
    ap.add_argument("--bench-json", type=Path, default=None,
                    help="bench part: take the rows from this `edgepin bench --out` bench.json")
    args = ap.parse_args()
    from benchmarks.machine import machine_info

    unknown = set(args.parts) - {"teacher", "detector", "bench"}
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}: choose from teacher, detector, bench")
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "teacher" in args.parts:
        doc["teacher"] = {"machine": machine_info(),
                          **teacher_part(args.data, args.cache, args.parity_faces, args.timing_faces)}
        print(json.dumps(doc["teacher"]["parity"]), json.dumps(doc["teacher"]["timing"]))
    if "detector" in args.parts:
        from benchmarks.dlib_detector import detector_part

        doc["detector"] = {"machine": machine_info(), **detector_part(args.data, args.cache)}
    if "bench" in args.parts:  # the detector and frame-to-decision rows of `edgepin bench`
        if args.bench_json is not None:
            report = json.loads(args.bench_json.read_text())
        else:
            from edge_runtime.cli.bench import run_bench

            report = run_bench(None, runs=30, warmup=3, teachers=False, gallery_sizes=(1, 100))
        keep = ("detect", "FRAME TO DECISION", "END TO END")
        doc["bench"] = {"machine": report["machine"], "runs": report["runs"],
                        "rows": [r for r in report["rows"] if r["stage"].startswith(keep)
                                 and "int8" not in r["variant"]]}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(doc))


if __name__ == "__main__":
    main()
