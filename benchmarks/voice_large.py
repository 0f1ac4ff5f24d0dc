"""The voice teacher as a device model (`voice_large.onnx`): parity with the teacher, and speed.

`edgepin port-resemblyzer` exports Resemblyzer's LSTM encoder to ONNX; the device runs it with
the numpy front-end of `edge_runtime/frontend/ge2e.py` (`embed_ge2e`), on the voiced speech its
own speech gate passes. Two parts:

- ``parity``: on the voice student's held-out speechocean762 speakers (the speakers of
  `benchmarks/voice_cohort.py`, voiced speech from `SpeechGate`), the cosine between the port's
  embedding and (a) `train.teachers.VoiceTeacher.embed`, the teacher as the students were
  distilled from it (Resemblyzer's `preprocess_wav`: volume AND webrtcvad silence trimming),
  (b) Resemblyzer's `embed_utterance(normalize_volume(speech))`, the same computation in torch
  without the trimming (what the port claims to reproduce exactly). Whole utterances and the
  first 2 s of voiced speech of each; median, 1st percentile and minimum.
- ``timing`` (run it on an idle machine): front-end + embedding of a 2 s and a 3 s probe
  (first L s of voiced speech) through the port at 1 and 2 intra-op threads, against the
  shipped student (`ModelBundle.embed_voice`) and Resemblyzer in torch (the same threads),
  the candidates interleaved call by call so machine load hits them alike; median and p95.

Results go to ``--out`` (markdown) and its ``.json``; a part not run keeps its figures from an
earlier run in that JSON, so parity and timing can be measured on different days.

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.voice_large --models models \\
        --data /work/shared/data --part parity --out benchmarks/voice_large.md
    python -m benchmarks.voice_large --models models --data /work/shared/data --part timing \\
        --runs 200 --out benchmarks/voice_large.md        # idle machine
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ModelError

PARITY_CUT_S = 2.0
TIMING_PROBES_S = (2.0, 3.0)


def large_embedder(models: Path, threads: int = 1) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                 str]:
    """(embed(wav16k) -> (256,), version) of ``models/voice_large.onnx`` through ``embed_ge2e``
    on onnxruntime; a clear error when the generated file is not there."""
    from edge_runtime.backends import load_runner
    from edge_runtime.bundle import load_manifest
    from edge_runtime.frontend.ge2e import embed_ge2e

    hint = f"run `edgepin port-resemblyzer --models {models}` (needs torch and resemblyzer)"
    entry = load_manifest(models).get("voice_large")
    if entry is None:
        raise ModelError(f"{models}: no voice_large in the manifest; {hint}")
    runner = load_runner(entry.verified_path(), backend="onnxruntime", threads=threads)

    def run(mels: np.ndarray) -> np.ndarray:
        return runner.run({"mels": mels})["embedding"]

    version = f"{entry.meta.get('resemblyzer_port', 'voice_large')}+onnx{entry.sha256[:12]}"
    return (lambda wav: embed_ge2e(run, wav)), version


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _stats(x: Sequence[float]) -> dict[str, float]:
    v = np.asarray(x, dtype=np.float64)
    return {"n": int(v.size), "median": float(np.median(v)), "p1": float(np.percentile(v, 1)),
            "min": float(v.min())}


def _held_out_speech(models: Path, data: Path, limit: int | None) -> list[tuple[str, np.ndarray]]:
    """(utterance, voiced speech) of the voice student's held-out speechocean762 speakers."""
    from calibration.voice_veto import held_out_speakers
    from edge_runtime.errors import EdgepinError
    from edge_runtime.frontend.audio import TARGET_SR, load_audio
    from edge_runtime.frontend.vad import SpeechGate
    from edge_runtime.models import ModelBundle

    bundle = ModelBundle.load(models, threads=1)
    held = held_out_speakers(data, bundle)
    bundle.close()
    gate = SpeechGate("auto")
    out = []
    for sp in held:
        for u in sp["utterances"]:
            try:
                wav = load_audio(Path(u), TARGET_SR)
            except EdgepinError:
                continue
            s = gate.extract_speech(wav, gate.speech_segments(wav))
            if s.size >= TARGET_SR // 2:  # the Verifier's 0.5 s of speech
                out.append((u, s))
    return out[:limit] if limit else out


def parity_part(models: Path, data: Path, limit: int | None = None) -> dict[str, Any]:
    """Port vs teacher (with its trimming) and vs Resemblyzer's own code on the same speech."""
    import torch
    from resemblyzer import VoiceEncoder

    from edge_runtime.frontend.ge2e import normalize_volume
    from train.teachers import VoiceTeacher

    torch.set_num_threads(1)
    embed, version = large_embedder(models)
    teacher, encoder = VoiceTeacher(), VoiceEncoder(device="cpu", verbose=False)
    cut = int(PARITY_CUT_S * 16000)
    res: dict[str, list[float]] = {k: [] for k in (
        "whole vs teacher", "whole vs resemblyzer untrimmed",
        "2 s vs teacher", "2 s vs resemblyzer untrimmed")}
    speech = _held_out_speech(models, data, limit)
    for _, s in speech:
        for name, x in (("whole", s), ("2 s", s[:cut] if s.size >= cut else None)):
            if x is None:
                continue
            port = embed(x)
            res[f"{name} vs teacher"].append(_cos(port, teacher.embed(x)))
            res[f"{name} vs resemblyzer untrimmed"].append(
                _cos(port, encoder.embed_utterance(normalize_volume(x))))
    return {"version": version, "teacher": teacher.version, "utterances": len(speech),
            "speakers": len({Path(u).parent.name for u, _ in speech}),
            "rows": {k: _stats(v) for k, v in res.items() if v}}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def timing_part(models: Path, data: Path, threads: Sequence[int], runs: int,
                samples: int) -> dict[str, Any]:
    """Median / p95 ms per probe of each path, the candidates interleaved call by call."""
    import torch
    from resemblyzer import VoiceEncoder

    from edge_runtime.frontend.ge2e import ge2e_partials, normalize_volume
    from edge_runtime.models import ModelBundle

    speech = _held_out_speech(models, data, None)
    encoder = VoiceEncoder(device="cpu", verbose=False)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        embed, _ = large_embedder(models, threads=t)
        bundle = ModelBundle.load(models, threads=t)
        for length in TIMING_PROBES_S:
            n = int(length * 16000)
            probes = [s[:n] for _, s in speech if s.size >= n][:samples]
            if not probes:
                raise ModelError(f"no held-out utterance has {length:g} s of voiced speech")
            paths: dict[str, Callable[[np.ndarray], object]] = {
                "port: front-end + ONNX (embed_ge2e)": embed,
                "port: front-end alone (ge2e_partials)": ge2e_partials,
                "shipped student (ModelBundle.embed_voice)": bundle.embed_voice,
                "Resemblyzer torch (embed_utterance, no trimming)":
                    lambda w: encoder.embed_utterance(normalize_volume(w)),
            }
            for fn in paths.values():  # warm-up: sessions, caches, first allocations
                fn(probes[0])
            load0 = os.getloadavg()[0]
            ms: dict[str, list[float]] = {k: [] for k in paths}
            for i in range(runs):
                w = probes[i % len(probes)]
                for k, fn in paths.items():
                    ms[k].append(_timed(lambda fn=fn, w=w: fn(w)))
            for k, v in ms.items():
                rows.append({"path": k, "threads": t, "probe_s": length, "runs": runs,
                             "median_ms": float(np.median(v)),
                             "p95_ms": float(np.percentile(v, 95)),
                             "load": [round(load0, 2), round(os.getloadavg()[0], 2)]})
                print(json.dumps(rows[-1]), flush=True)
        bundle.close()
    return {"rows": rows, "samples": samples}


def render(res: dict[str, Any]) -> str:
    from benchmarks.machine import markdown_header

    lines = [markdown_header(
        "Large voice tier: Resemblyzer's encoder as ONNX (`voice_large.onnx`)",
        "held-out speechocean762 speakers of the voice student (test + val split), voiced "
        "speech from the device speech gate")]
    lines += [f"Re-run: `{res['command']}`", ""]
    p = res.get("parity")
    lines += ["## Parity with the teacher", ""]
    if p is None:
        lines += ["Not run yet (`--part parity`).", ""]
    else:
        lines += [
            f"Port `{p['version']}` vs teacher `{p['teacher']}` on {p['utterances']} utterances "
            f"of {p['speakers']} speakers (measured {p['date']}). `teacher` = "
            "`VoiceTeacher.embed` (Resemblyzer's `preprocess_wav`: webrtcvad silence trimming "
            "and volume); `resemblyzer untrimmed` = Resemblyzer's own `embed_utterance` on "
            "`normalize_volume(speech)`, the computation the port reproduces. `2 s` = the first "
            f"{PARITY_CUT_S:g} s of each utterance's voiced speech.", "",
            "| input vs reference | n | median cosine | 1st percentile | min |",
            "|---|---|---|---|---|"]
        for k, v in p["rows"].items():
            lines.append(f"| {k} | {v['n']} | {v['median']:.6f} | {v['p1']:.6f} | "
                         f"{v['min']:.6f} |")
        lines.append("")
    t = res.get("timing")
    lines += ["## Speed (front-end + embedding of one probe, batch of its partials)", ""]
    if t is None:
        lines += ["Not run yet (`--part timing`, on an idle machine).", ""]
    else:
        lines += [f"Measured {t['date']}; {t['samples']} probes cycled, every path called in turn "
                  "on the same probe; load average (1 min) at the start and end of each row.", "",
                  "| path | threads | probe | median ms | p95 ms | runs | load |",
                  "|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            lines.append(f"| {r['path']} | {r['threads']} | {r['probe_s']:g} s | "
                         f"{r['median_ms']:.2f} | {r['p95_ms']:.2f} | {r['runs']} | "
                         f"{r['load'][0]} -> {r['load'][1]} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--part", nargs="+", choices=("parity", "timing"),
                    default=["parity", "timing"])
    ap.add_argument("--limit", type=int, default=None, help="parity: at most this many utterances")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=100, help="timing: calls per path and row")
    ap.add_argument("--samples", type=int, default=20, help="timing: probes cycled through")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/voice_large.md"))
    args = ap.parse_args(argv)
    from benchmarks.machine import machine_info

    js = args.out.with_suffix(".json")
    res: dict[str, Any] = json.loads(js.read_text()) if js.is_file() else {}
    when = machine_info()["date"]
    if "parity" in args.part:
        res["parity"] = {**parity_part(args.models, args.data, args.limit), "date": when}
    if "timing" in args.part:
        res["timing"] = {**timing_part(args.models, args.data, args.threads, args.runs,
                                       args.samples), "date": when}
    res["command"] = (f"python -m benchmarks.voice_large --models {args.models} --data "
                      f"{args.data} --part {' '.join(args.part)} --out {args.out}")
    js.write_text(json.dumps(res, indent=1))
    args.out.write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
