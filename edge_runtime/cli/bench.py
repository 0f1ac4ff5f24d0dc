"""`edgepin bench`: latency of every stage of an attempt, and end to end, on this machine.

Each stage is timed ``runs`` times after ``warmup`` untimed calls, on real media (a bundled
GRID clip: its frames, its detected face, its voiced speech), and reported as p50/p95/p99.
Every model variant the machine can run appears side by side (FP32 / INT8 x onnxruntime /
TensorRT); what cannot run here is listed with the reason. End to end is what the user
waits for: from the end of the capture window (frames already detected on the fly, audio
already through the VAD) to the decision. FRAME TO DECISION adds the last frame's
detection, alignment and embedding at the camera's 640x480, once per face detector (dlib
HOG, and dlib's CNN as ONNX when the bundle has it). The teachers are timed in a subprocess
as the reference row (the voice teacher needs torch, which this package never imports).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime import __version__
from edge_runtime.access.decision import Evidence, Matches, decide
from edge_runtime.access.pipeline import PipelineConfig, Verifier
from edge_runtime.backends import available_backends
from edge_runtime.bundle import load_manifest
from edge_runtime.errors import EdgepinError, MediaError
from edge_runtime.face_detectors import open_cnn_detector
from edge_runtime.frontend.face import DlibHogDetector, align_face, choose_face
from edge_runtime.frontend.face_quality import face_quality
from edge_runtime.frontend.face_roi import RoiTracker
from edge_runtime.frontend.features import DLIB_CHIP_INPUT
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.frontend.video import decode_clip, iter_frames
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle
from edge_runtime.sysinfo import cpu_identity, dist_version

# the loop's default operating point (the lowest FAR the shipped thresholds can measure)
TARGET_FAR = PipelineConfig().target_far
GOAL_P95_MS = 40.0  # issue 7: end to end, capture end -> decision, on this 2-core CPU


@dataclass
class Timer:
    runs: int
    warmup: int

    def __call__(self, fn: Callable[[], Any]) -> np.ndarray:
        for _ in range(self.warmup):
            fn()
        out = np.empty(self.runs)
        for i in range(self.runs):
            t0 = time.perf_counter()
            fn()
            out[i] = 1e3 * (time.perf_counter() - t0)
        return out


def _row(stage: str, variant: str, ms: np.ndarray, **extra: Any) -> dict[str, Any]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"stage": stage, "variant": variant, "n": int(ms.size), "p50_ms": round(float(p50), 3),
            "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(ms.mean()), 3), **extra}


def machine() -> dict[str, Any]:
    """CPU, cores, OS and library versions: a latency without them means nothing."""
    cpu, _ = cpu_identity()
    v = dist_version
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "edgepin": __version__,
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "versions": {n: v(n) for n in ("onnxruntime", "numpy", "opencv-python-headless",
                                       "dlib-bin", "av", "soxr", "tensorrt", "torch",
                                       "resemblyzer")},
    }


def _variants(root: Path) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
    """(precision, backend, face tier) to time. The large face tier runs FP32 on onnxruntime
    (its INT8 file is TensorRT's QDQ form) and FP16 / INT8 engines on TensorRT."""
    manifest = load_manifest(root)
    have_int8 = "face_int8" in manifest and "voice_int8" in manifest
    variants, skipped = [("fp32", "onnxruntime", "student")], []
    if have_int8:
        variants.append(("int8", "onnxruntime", "student"))
    else:
        skipped.append({"what": "int8", "reason": "no face_int8/voice_int8 in the manifest"})
    large = []
    if "face_large" in manifest:
        large.append(("fp32", "onnxruntime", "large"))
    else:
        skipped.append({"what": "face tier large", "reason": "no face_large in the manifest "
                        "(edgepin port-dlib --face-large)"})
    if "tensorrt" in available_backends():
        # the export builds FP16 (not FP32) engines of the FP32 model, INT8 ones of the INT8
        variants += [("fp16" if p == "fp32" else p, "tensorrt", t) for p, _, t in list(variants)]
        if large:
            large.append(("fp16", "tensorrt", "large"))
        if "face_large_int8" in manifest and "voice_int8" in manifest:
            large.append(("int8", "tensorrt", "large"))
    else:
        skipped.append({"what": "tensorrt", "reason": "TensorRT + cuda-python not installed "
                                                      "here (no NVIDIA GPU on this machine)"})
    return variants + large, skipped


def run_bench(models: str | Path | None = None, *, runs: int = 200, warmup: int = 20,
              clip: str | Path | None = None, out_dir: str | Path | None = None,
              teachers: bool = True, gallery_sizes: tuple[int, ...] = (1, 100, 1000, 10000),
              threads: int = 1, face_tiers: tuple[str, ...] = ("student", "large")
              ) -> dict[str, Any]:
    """Time everything; write bench.json and bench.png into ``out_dir`` when given.
    ``face_tiers``: the face tiers whose variants are timed."""
    from edge_runtime.cli.options import default_clips_dir, default_models_dir

    if runs < 1 or warmup < 0:
        raise EdgepinError(f"bench needs runs >= 1 and warmup >= 0, got {runs}, {warmup}")
    root = Path(models) if models is not None else default_models_dir()
    clip_path = Path(clip) if clip is not None else sorted(default_clips_dir().glob("*.mpg"))[0]
    timer = Timer(runs, warmup)
    rows: list[dict[str, Any]] = []
    hist: dict[str, np.ndarray] = {}
    variants, skipped = _variants(root)
    variants = [v for v in variants if v[2] in face_tiers]

    # ---- media front-end stages (model independent)
    ms = timer(FrameDecoder(clip_path))
    rows.append(_row("decode (1 video frame)", "pyav", ms))
    hist["decode"] = ms
    full = decode_clip(clip_path)
    detector, gate = DlibHogDetector(), SpeechGate("auto")
    image = full.frames[len(full.frames) // 2].image
    dets = detector.detect(image)
    if not dets:
        raise MediaError(f"{clip_path}: no face in the middle frame; pick another --clip")
    det = choose_face(dets, image.shape)
    ms = timer(lambda: detector.detect(image))
    rows.append(_row("detect (dlib HOG + 5 landmarks)", f"{image.shape[1]}x{image.shape[0]}", ms))
    hist["detect"] = ms
    # the camera's size: the same frame enlarged to 640x480, each detector as the runtime runs it
    frame640 = cv2.resize(image, (640, 480), interpolation=cv2.INTER_LINEAR)
    clip640 = [cv2.resize(f.image, (640, 480), interpolation=cv2.INTER_LINEAR)
               for f in full.frames]
    detectors: dict[str, Any] = {"hog": detector}
    ms = timer(lambda: detector.detect(frame640))
    rows.append(_row("detect (dlib HOG + 5 landmarks)", "640x480", ms))
    try:
        cnn = open_cnn_detector(root, threads=threads)
    except EdgepinError as exc:
        skipped.append({"what": "CNN face detector", "reason": str(exc)})
    else:
        detectors["cnn"] = cnn
        for frame in (image, frame640):
            ms = timer(lambda frame=frame: cnn.detect(frame))
            rows.append(_row("detect (dlib CNN as ONNX, max side 320, + 5 landmarks)",
                             f"{frame.shape[1]}x{frame.shape[0]}, onnxruntime", ms))
        hist["detect cnn 640x480"] = ms
    ms = timer(lambda: align_face(image, det.landmarks, 112))
    rows.append(_row("align", "112x112", ms))
    ms = timer(lambda: DLIB_CHIP_INPUT.crop(image, det))
    rows.append(_row("align", "dlib chip 150x150 RGB (face tier large)", ms))
    ms = timer(lambda: face_quality(image, det))
    rows.append(_row("quality gate", "", ms))
    assert full.audio is not None
    one_s = full.audio[16000:32000]
    ms = timer(lambda: gate.speech_probs(one_s))
    rows.append(_row("VAD (1 s of audio)", gate.backend, ms))
    hist["vad 1 s"] = ms
    segments = gate.speech_segments(full.audio)
    speech = gate.extract_speech(full.audio, segments)

    # ---- per model variant
    for precision, backend, tier in variants:
        name = f"{precision} {backend}" + (", face tier large" if tier == "large" else "")
        try:
            bundle = ModelBundle.load(root, precision=precision, backend=backend, threads=threads,
                                      face_tier=tier)
        except EdgepinError as exc:
            skipped.append({"what": name, "reason": str(exc)})
            continue
        with bundle:
            crop = bundle.face_input.crop(image, det)
            # the gallery search does not depend on the face tier (128-d either way)
            sizes = gallery_sizes if tier == "student" else ()
            vrows, vhist, vskip = _variant_rows(bundle, name, timer, crop, speech, sizes,
                                                detector, gate, full, image)
            if precision == "fp32":  # detection included, per detector, at the camera's size
                for det_name, det_obj in detectors.items():
                    ms = _frame_to_decision(timer, bundle, det_obj, gate, full, [frame640])
                    vrows.insert(-1, _row(f"FRAME TO DECISION 640x480, {det_name} detector "
                                          "(detect, align, embed, decide)", name, ms))
                # the clip's frames in turn (the face moves), without and with ROI tracking
                for det_name, det_obj in detectors.items():
                    for label, det_used in (("full frame", det_obj),
                                            ("ROI tracking", RoiTracker(det_obj))):
                        ms = _frame_to_decision(timer, bundle, det_used, gate, full, clip640)
                        vrows.insert(-1, _row(
                            f"FRAME TO DECISION 640x480 clip frames, {det_name} detector, "
                            f"{label}", name, ms,
                            **({"roi_counts": dict(det_used.counts)}
                               if isinstance(det_used, RoiTracker) else {})))
        rows += vrows
        hist.update(vhist)
        skipped += vskip
    if teachers:
        trows, tskip = teacher_rows(runs, warmup, clip_path)
        rows += trows
        skipped += tskip
    report = {
        "machine": machine(), "models": str(root), "clip": str(clip_path),
        "runs": runs, "warmup": warmup, "rows": rows, "skipped": skipped,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "teacher_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                                     / 1024, 1) if teachers else None,
        "goal": f"end to end p95 <= {GOAL_P95_MS:g} ms on this 2-core CPU",
    }
    if out_dir is not None:
        from edge_runtime.plots import plot_latency

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_latency(hist, out / "bench.png")
        (out / "bench.md").write_text(markdown(report))
        report["files"] = [str(out / f"bench.{x}") for x in ("json", "png", "md")]
    return report


def _variant_rows(bundle: ModelBundle, name: str, timer: Timer, crop: np.ndarray,
                  speech: np.ndarray, gallery_sizes: tuple[int, ...], detector: Any,
                  gate: SpeechGate, full: Any, image: np.ndarray
                  ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, str]]]:
    """Model stages, search and end to end for one (precision, backend)."""
    rows, hist, skipped = [], {}, []
    precision = bundle.precision + ("" if bundle.face_tier == "student" else " large")
    ms = timer(lambda: bundle.embed_faces([crop]))
    rows.append(_row("face embed", name, ms))
    hist[f"face embed {precision}"] = ms
    feats = bundle.voice_windows(speech)
    ms = timer(lambda: bundle.voice_windows(speech))
    rows.append(_row("voice front-end (log-mel)", f"{speech.size / 16000:.1f} s speech", ms))
    ms = timer(lambda: bundle.embed_voice(windows=feats))
    rows.append(_row("voice embed", f"{name}, {feats.shape[0]} windows", ms))
    hist[f"voice embed {precision}"] = ms
    f_emb, v_emb = bundle.embed_faces([crop])[0], bundle.embed_voice(windows=feats)
    if bundle.cross_modal:
        ms = timer(lambda: bundle.cross_scores(f_emb, v_emb))
        rows.append(_row("cross-modal", f"{name} ({', '.join(bundle.cross_modal)})", ms))
    else:
        skipped.append({"what": f"cross-modal {name}", "reason": "no pin/faa heads in the manifest"})
    ev = Evidence(Matches.of({"alice": 0.9}), Matches.of({"alice": 0.8}),
                  bundle.cross_scores(f_emb, v_emb))
    ms = timer(lambda: decide(ev, bundle.thresholds, bundle.operating_points, TARGET_FAR))
    rows.append(_row("fusion + decision rule", name, ms))
    for n in gallery_sizes:
        g = _synthetic_gallery(n, bundle)
        try:
            ms = timer(lambda g=g: _search(g, bundle, f_emb, v_emb))
        finally:
            _close_gallery(g)
        rows.append(_row(f"gallery search + decision ({n} people)", name, ms))
        hist[f"search {n}"] = ms
    ms = _end_to_end(timer, bundle, detector, gate, full, image)
    rows.append(_row("END TO END (capture end -> decision)", name, ms))
    hist[f"end to end {precision}"] = ms
    return rows, hist, skipped


class FrameDecoder:
    """Decodes a clip one frame per call, restarting at its end: PyAV has no cheap random
    access, so one frame's share of a sequential decode is what a camera file costs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._it = iter_frames(path)

    def __call__(self) -> None:
        try:
            next(self._it)
        except StopIteration:
            self._it = iter_frames(self.path)
            next(self._it)


def _synthetic_gallery(n: int, bundle: ModelBundle) -> GalleryHandle:
    """A throw-away gallery of ``n`` random identities (search cost, not accuracy)."""
    import tempfile

    tmp = tempfile.mkdtemp(prefix="edgepin-bench-")
    gallery = Gallery.open(Path(tmp) / "gallery.db", os.urandom(32))
    rng = np.random.default_rng(n)
    with gallery.batch():
        for i in range(n):
            t = {m: rng.standard_normal(d).astype(np.float32) for m, d in (("face", 128), ("voice", 256))}
            gallery.enroll(f"person{i:05d}", t, {"face": 1, "voice": 1}, bundle.hashes)
    return GalleryHandle.wrap(gallery)


def _close_gallery(handle: GalleryHandle) -> None:
    import shutil

    g = handle.get()
    folder = g.path.parent
    g.close()
    shutil.rmtree(folder, ignore_errors=True)


def _search(handle: GalleryHandle, bundle: ModelBundle, f: np.ndarray, v: np.ndarray) -> None:
    g = handle.get()
    names, fm = g.templates("face", bundle.hashes["face"], skip_stale=True)
    _, vm = g.templates("voice", bundle.hashes["voice"], skip_stale=True)
    ev = Evidence(Matches(names, fm @ f), Matches(names, vm @ v))
    decide(ev, bundle.thresholds, bundle.operating_points, TARGET_FAR)


def _timed_decisions(timer: Timer, bundle: ModelBundle, detector: Any, gate: SpeechGate,
                     clip: Any, images: list[np.ndarray], *, frame_timed: bool) -> np.ndarray:
    """Decisions on attempts gathered the loop's way, against a 100-person gallery. The
    attempt's speech is always in before the clock starts (VAD and voice run while the person
    speaks). ``frame_timed``: the last frame's detection, alignment and embedding are timed
    with the decision (frame to decision); otherwise only the decision is (end to end, what
    the person waits for once capture ends). Run i takes ``images[i % len]``, so a ROI tracker
    sees a clip's frames in order, its periodic full-frame scans included."""
    from edge_runtime.frontend.video import Frame

    handle = _synthetic_gallery(100, bundle)
    verifier = Verifier(bundle, handle, PipelineConfig(min_speech_s=0.5), detector, gate)
    out = np.empty(timer.runs)
    for i in range(-timer.warmup, timer.runs):
        col = verifier.new_attempt("bench")
        frame = Frame(0.0, images[i % len(images)])
        if not frame_timed:
            col.add_frame(frame)
        col.add_audio(clip.audio)
        t0 = time.perf_counter()
        if frame_timed:
            col.add_frame(frame)
        verifier.decide(col)
        if i >= 0:
            out[i] = 1e3 * (time.perf_counter() - t0)
    verifier.close()
    _close_gallery(handle)
    return out


def _end_to_end(timer: Timer, bundle: ModelBundle, detector: Any, gate: SpeechGate,
                clip: Any, image: np.ndarray) -> np.ndarray:
    """Capture end -> decision: collection untimed, the decision timed."""
    return _timed_decisions(timer, bundle, detector, gate, clip, [image], frame_timed=False)


def _frame_to_decision(timer: Timer, bundle: ModelBundle, detector: Any, gate: SpeechGate,
                       clip: Any, images: list[np.ndarray]) -> np.ndarray:
    """The last frame's cost plus the decision, timed together."""
    return _timed_decisions(timer, bundle, detector, gate, clip, images, frame_timed=True)


def teacher_rows(runs: int, warmup: int, clip: Path, which: tuple[str, ...] = ("face", "voice")
                 ) -> tuple[list[dict], list[dict]]:
    """The teachers' reference rows, timed in a child process (torch stays out of here)."""
    import importlib.util

    if importlib.util.find_spec("train") is None:
        return [], [{"what": "teachers", "reason": "the training package is not installed"}]
    try:
        proc = subprocess.run([sys.executable, "-m", "train.teacher_timing", str(runs),
                               str(warmup), str(clip), *which], capture_output=True, text=True,
                              timeout=1800, check=False)
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return [], [{"what": "teachers", "reason": f"teacher timing failed: {exc}"}]
    rows = [_row(stage, "teacher (reference, CPU)", np.asarray(ms))
            for stage, ms in data["ms"].items()]
    return rows, data["skipped"]


def markdown(report: dict[str, Any]) -> str:
    """The committed table: machine, load, versions, media, every row, the goal's verdict."""
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        "# Latency of the access-control pipeline (`edgepin bench`)", "",
        f"- date: {m['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; load average at the "
        f"start (1/5/15 min): {', '.join(str(x) for x in m['load_average_1_5_15min'])}",
        f"- software: edgepin {m['edgepin']}, Python {m['python']}, {versions}",
        f"- models: `{report['models']}`; media: `{report['clip']}`; {report['runs']} timed runs "
        f"per row after {report['warmup']} warm-up runs; peak RSS {report['peak_rss_mb']} MB"
        + (f" (teachers' child process: {report['teacher_peak_rss_mb']} MB)"
           if report.get("teacher_peak_rss_mb") else ""),
        f"- command: `edgepin bench --models {report['models']} --runs {report['runs']} "
        f"--warmup {report['warmup']} --out DIR`", "",
        "| stage | variant | p50 ms | p95 ms | p99 ms |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['variant']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
              f"{r['p99_ms']:.2f} |" for r in report["rows"]]
    lines.append("")
    for r in report["rows"]:
        if r["stage"].startswith("END TO END"):
            ok = r["p95_ms"] <= GOAL_P95_MS
            lines.append(f"**End to end ({r['variant']}): p95 {r['p95_ms']:.1f} ms: "
                         f"{'meets' if ok else 'MISSES'} the goal ({report['goal']}).**")
    lines += [f"- skipped {s['what']}: {s['reason']}" for s in report["skipped"]]
    lines += ["", "![latency histograms](bench.png)", ""]
    return "\n".join(lines)


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    m = report["machine"]
    table = Table(title=f"edgepin bench: {m['cpu']} ({m['cores']} cores), {m['date']}, "
                        f"{report['runs']} runs after {report['warmup']} warm-up")
    for col in ("stage", "variant", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col)
    for r in report["rows"]:
        table.add_row(r["stage"], r["variant"], f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
                      f"{r['p99_ms']:.2f}")
    console.print(table)
    console.print(f"peak RSS {report['peak_rss_mb']} MB; {report['goal']}", highlight=False)
    for s in report["skipped"]:
        console.print(f"skipped {s['what']}: {s['reason']}", highlight=False, markup=False)
    for f in report.get("files", []):
        console.print(f"wrote {f}", highlight=False)
