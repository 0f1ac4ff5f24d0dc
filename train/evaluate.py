"""`edgepin eval face|voice`: verification metrics of a teacher, checkpoint or ONNX model.

The same command measures the teacher, a PyTorch student, and an FP32 or INT8 ONNX file on
the same held-out identities and the same pairs, so their figures are directly comparable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, DatasetError, ModelError
from edge_runtime.frontend.features import (
    STUDENT_FACE_INPUT,
    FaceInput,
    VoiceFrontEnd,
    embed_face_tensor,
    l2_normalise,
)
from edge_runtime.metrics import make_pairs, verification_report
from train.datasets import FaceFolder, Sample, SpeechFolder, holdout_split, manifest_hash

DEFAULT_SPLIT = {"test_fraction": 0.2, "val_fraction": 0.1, "seed": 0}
TIMING_SAMPLES = 50


class Embedder:
    """Embeds prepared samples; `time_one` measures one sample at batch 1 (embedding only)."""

    name: str
    split: dict | None = None
    front_end: VoiceFrontEnd | None = None

    def embed(self, items: list[Any]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def time_one(self, item: Any) -> float:
        """Seconds for one sample at batch 1, after a warm-up call."""
        self.embed([item])
        t = time.perf_counter()
        self.embed([item])
        return time.perf_counter() - t


class _NetEmbedder(Embedder):
    """A student as PyTorch checkpoint or ONNX file; faces are crops, voices are waveforms."""

    def __init__(self, modality: str, run: Callable[[np.ndarray], np.ndarray], name: str,
                 split: dict | None, front_end: dict | None) -> None:
        self.modality, self._run, self.name, self.split = modality, run, name, split
        self.front_end = VoiceFrontEnd.from_dict(front_end) if modality == "voice" else None
        self.face_input = FaceInput.from_meta(front_end) if modality == "face" else None

    face_tta = "none"  # "flip": as the device embeds with an operating-point file that says so

    def embed(self, items: list[Any]) -> np.ndarray:
        if self.face_input is not None:
            make = self.face_input.tensor
            out = [embed_face_tensor(self._run, make(list(items[i : i + 64])), self.face_tta)
                   for i in range(0, len(items), 64)]
            return np.concatenate(out)  # unit rows already
        assert self.front_end is not None
        return l2_normalise(np.stack([self._run(self.front_end.windows(w)).mean(axis=0) for w in items]))


def load_embedder(model: str, modality: str, threads: int = 2) -> Embedder:
    """`teacher`, `teacher-dlib` (face: dlib's own code), a `.pt` checkpoint or an `.onnx` file."""
    if model == "teacher-dlib":
        if modality != "face":
            raise ConfigError("teacher-dlib is the face teacher run by dlib; use 'teacher' for voice")
        return _TeacherEmbedder(modality, "dlib")
    if model == "teacher":
        if modality == "voice":
            import torch

            torch.set_num_threads(threads)  # Resemblyzer runs in this process for timing
        return _TeacherEmbedder(modality)
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    if path.suffix == ".onnx":
        from edge_runtime.backends import load_runner

        runner = load_runner(path, backend="onnxruntime", threads=threads)
        meta = _onnx_metadata(path)
        if meta.get("modality") not in (None, modality):
            raise ModelError(f"{path} is a {meta['modality']} model, not {modality}")
        name = runner.input_names[0]
        return _NetEmbedder(modality, lambda x: runner.run({name: x})["embedding"], str(path),
                            meta.get("split"), meta.get("front_end"))
    import torch

    from train.distill import load_student

    torch.set_num_threads(threads)
    net, ckpt = load_student(path)
    if ckpt["modality"] != modality:
        raise ModelError(f"{path} is a {ckpt['modality']} checkpoint, not {modality}")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    return _NetEmbedder(modality, run, str(path), ckpt["split"], ckpt.get("front_end"))


def _onnx_metadata(path: Path) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map
    out = {}
    for k, v in raw.items():
        if k.startswith("edgepin."):
            try:
                out[k[8:]] = json.loads(v)
            except json.JSONDecodeError:
                out[k[8:]] = v
    return out


class _TeacherEmbedder(Embedder):
    """The teacher; embeddings come from the preparation cache (computed once per file)."""

    def __init__(self, modality: str, impl: str = "onnx") -> None:
        self.modality = modality
        self.impl = impl  # face only: "onnx" (the port, the teacher) or "dlib" (reference)
        self.name = "teacher" if impl == "onnx" else "teacher-dlib"
        self._teacher: Any = None  # loaded on the first timing call
        self._detector: Any = None

    def embed(self, items: list[Any]) -> np.ndarray:
        return l2_normalise(np.stack(items))

    def timer(self, sample: Sample) -> float:
        """Seconds for the teacher to embed one sample (dlib chip / Resemblyzer utterance)."""
        from edge_runtime.frontend.audio import load_audio
        from edge_runtime.frontend.face import (
            DlibHogDetector,
            detect_and_align,
            dlib_chip,
            load_image,
        )
        from train.teachers import DlibFaceTeacher, FaceTeacher, VoiceTeacher

        if self.modality == "face":
            if self._teacher is None:
                impl = FaceTeacher if self.impl == "onnx" else DlibFaceTeacher
                self._teacher, self._detector = impl(), DlibHogDetector()
            image = load_image(sample.path)
            _, det = detect_and_align(image, self._detector, source=str(sample.path))
            chip = dlib_chip(image, det)
            run: Callable[[], object] = lambda: self._teacher.embed_chip(chip)  # noqa: E731
        else:
            if self._teacher is None:
                self._teacher = VoiceTeacher()
            wav = load_audio(sample.path)
            run = lambda: self._teacher.embed(wav)  # noqa: E731
        run()  # warm-up
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0


def select_samples(modality: str, data: str | Path, split: str, split_cfg: dict
                   ) -> tuple[FaceFolder | SpeechFolder, list[Sample], dict]:
    """The reader, the samples of the chosen identities and the split's description."""
    reader = FaceFolder(data) if modality == "face" else SpeechFolder(data)
    sc = split_cfg
    if split == "test":
        chosen = set(holdout_split(reader.identities(), sc["test_fraction"], sc["val_fraction"],
                                   sc["seed"])["test"])
        split_desc = {"name": "test", "rule": "identities held out by holdout_split", **sc}
    elif split == "all":
        chosen = set(reader.identities())
        split_desc = {"name": "all", "rule": "every identity (a dataset never trained on)"}
    else:
        raise ConfigError(f"unknown split {split!r}: choose test or all")
    return reader, [s for s in reader.samples if s.identity in chosen], split_desc


def paired_timing(modality: str, student: str, data: str | Path, *, split: str = "test",
                  cache_dir: str | Path, threads: int = 2, n: int = TIMING_SAMPLES,
                  pause_s: float = 0.25, face_tta: str = "none", teacher: str = "teacher") -> dict:
    """Teacher and student timed alternately on the same samples (batch 1, embedding only).

    `teacher` is `teacher` (face: the ONNX port of dlib's network) or `teacher-dlib` (dlib's own
    code, which a face student's speed-up is promised against).

    On a shared or throttled machine the speed changes from minute to minute; alternating
    sample by sample gives both models the same conditions, so their ratio is fair. A pause
    separates the two: torch's OpenMP workers and onnxruntime's thread pool keep spinning for a
    while after a call, and would otherwise steal the cores from the other model.
    """
    from train.prepare import prepare_faces, prepare_voices

    st = load_embedder(student, modality, threads)
    if isinstance(st, _NetEmbedder) and st.face_input is not None:
        st.face_tta = face_tta  # the student as the device runs it (one batch of 2 with flip)
    te = load_embedder(teacher, modality, threads)
    _, samples, _ = select_samples(modality, data, split, st.split or DEFAULT_SPLIT)
    if modality == "face":
        prep = prepare_faces(samples[: n + 16], cache_dir, with_teacher=False)
        items: list[Any] = list(prep.crops)
    else:
        prep = prepare_voices(samples[: n + 16], cache_dir, st.front_end or VoiceFrontEnd(),
                              with_teacher=False)
        items = list(prep.audio)
    pairs = list(zip(prep.samples, items, strict=True))[:n]
    if not pairs:
        raise DatasetError(f"no usable {modality} sample in {data} to time")
    t_teacher, t_student = [], []
    for sample, item in pairs:
        t_teacher.append(te.timer(sample))  # type: ignore[attr-defined]
        time.sleep(pause_s)
        t_student.append(st.time_one(item))
        time.sleep(pause_s)
    a, b = np.asarray(t_teacher), np.asarray(t_student)
    return {"samples": len(pairs), "teacher": te.name, "teacher_ms": float(np.median(a) * 1000),
            "student_ms": float(np.median(b) * 1000), "speedup_median_of_ratios":
            float(np.median(a / b)), "batch": 1, "threads": threads, "statistic": "median",
            "order": f"alternating teacher, student per sample, {pause_s:g} s pause between"}


def voiced_probe(wav: np.ndarray, gate: Any, seconds: float) -> np.ndarray:
    """The first `seconds` of voiced speech, as the live loop cuts a probe (device VAD); the
    raw start when the VAD finds under 0.1 s of speech."""
    speech = gate.extract_speech(wav)
    if len(speech) < 1600:
        speech = wav
    return speech[: max(1, round(seconds * 16000))]


def teacher_probe_embeddings(samples: list[Sample], cuts: list[np.ndarray], seconds: float,
                             vad: str, cache_dir: str | Path) -> np.ndarray:
    """Resemblyzer on each probe cut, cached by file hash, probe length and VAD."""
    from train.cache import ArrayCache
    from train.datasets import file_sha256
    from train.teachers import VoiceTeacher

    cache = ArrayCache(Path(cache_dir) / "voice_probes.sqlite")
    keys = [ArrayCache.key(file_sha256(s.path), f"probe{seconds:g}s|{vad}",
                           VoiceTeacher.version_string()) for s in samples]
    try:
        got = [cache.get(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        if todo:
            teacher = VoiceTeacher()
            rows = [(keys[i], {"emb": teacher.embed(cuts[i])}) for i in todo]
            cache.put_many(rows)
            for i, (_, r) in zip(todo, rows, strict=True):
                got[i] = r
    finally:
        cache.close()
    return l2_normalise(np.stack([g["emb"] for g in got]))  # type: ignore[index]


def probe_timing(student: Embedder, cuts: list[np.ndarray], *, n: int = TIMING_SAMPLES,
                 pause_s: float = 0.1) -> dict:
    """Front-end + embedding of one probe, student and Resemblyzer alternately (batch 1)."""
    from train.teachers import VoiceTeacher

    teacher = VoiceTeacher()
    t_s, t_t = [], []
    for cut in cuts[:n]:
        teacher.embed(cut)
        t0 = time.perf_counter()
        teacher.embed(cut)
        t_t.append(time.perf_counter() - t0)
        time.sleep(pause_s)
        t_s.append(student.time_one(cut))
        time.sleep(pause_s)
    a, b = np.asarray(t_t), np.asarray(t_s)
    return {"samples": len(a), "teacher_ms": float(np.median(a) * 1000),
            "student_ms": float(np.median(b) * 1000),
            "speedup_median_of_ratios": float(np.median(a / b)), "batch": 1,
            "what": "waveform probe -> embedding (student: log-mel front-end + network; "
                    "teacher: Resemblyzer preprocessing + GE2E)",
            "order": f"alternating teacher, student per probe, {pause_s:g} s pause between"}


def evaluate(modality: str, model: str, data: str | Path, *, split: str = "test",
             split_cfg: dict | None = None, max_impostor_per_identity: int = 20, seed: int = 0,
             cache_dir: str | Path, plot: str | Path | None = None, threads: int = 2,
             timing_samples: int = TIMING_SAMPLES, keep_scores: bool = False,
             probe_s: float | None = None, face_tta: str = "none") -> dict:
    """Embed the chosen identities, score all genuine and sampled impostor pairs, report.

    With `probe_s` (voice), each trial compares a PROBE, the first `probe_s` seconds of voiced
    speech of one utterance (what the live loop decides on), with the whole-utterance template
    of another; genuine trials pair two different recordings of one speaker. Timing is then
    per probe, teacher and student alternately (`probe_timing`).
    With `keep_scores` the report also holds the raw genuine/impostor score arrays under
    "scores" (for plots comparing several models on the same pairs) and, under
    "pair_identities", the two identities of every genuine and impostor trial.
    """
    from train.prepare import prepare_faces, prepare_voices

    if modality not in ("face", "voice"):
        raise ConfigError(f"unknown modality {modality!r}: choose face or voice")
    emb = load_embedder(model, modality, threads)
    if face_tta != "none":
        if not isinstance(emb, _NetEmbedder) or emb.face_input is None:
            raise ConfigError(f"--face-tta {face_tta} applies to a face student or face ONNX "
                              f"model, not to {model!r} ({modality})")
        emb.face_tta = face_tta
    reader, samples, split_desc = select_samples(modality, data, split,
                                                 split_cfg or emb.split or DEFAULT_SPLIT)
    teacher = model in ("teacher", "teacher-dlib")
    if modality == "face":
        prepared = prepare_faces(samples, cache_dir, with_teacher=teacher,
                                 teacher_impl="dlib" if model == "teacher-dlib" else "onnx",
                                 face_input=getattr(emb, "face_input", None)
                                 or STUDENT_FACE_INPUT)
        items = list(prepared.teacher) if teacher else list(prepared.crops)
    else:
        fe = emb.front_end or VoiceFrontEnd()
        prepared = prepare_voices(samples, cache_dir, fe, with_teacher=teacher)
        items = list(prepared.utterance_teacher) if teacher else prepared.audio
    ids = prepared.identities
    e = emb.embed(items)
    gp, ip = make_pairs(ids, max_impostor_per_identity=max_impostor_per_identity, seed=seed)
    probes, cuts = e, []
    if probe_s is not None:
        if modality != "voice":
            raise ConfigError("--probe-s applies to voice only")
        from edge_runtime.frontend.vad import SpeechGate

        gate = SpeechGate()
        vad = f"vad-{gate.backend}-{gate.threshold:g}"
        cuts = [voiced_probe(w, gate, probe_s) for w in prepared.audio]
        probes = (teacher_probe_embeddings(prepared.samples, cuts, probe_s, vad, cache_dir)
                  if teacher else emb.embed(cuts))
    gen = np.sum(probes[gp[:, 0]] * e[gp[:, 1]], axis=1)
    imp = np.sum(probes[ip[:, 0]] * e[ip[:, 1]], axis=1)
    report: dict[str, Any] = {
        "modality": modality, "model": emb.name, "data": str(data),
        "data_manifest": manifest_hash(reader.samples, Path(data)),
        "split": {**split_desc, "n_identities": len(set(ids)), "n_samples": len(ids),
                  "skipped": len(prepared.skipped)},
        "scoring": "cosine of L2-normalised embeddings"
                   + (f", faces averaged with their mirror image ({face_tta})"
                      if face_tta != "none" else ""),
        **verification_report(gen, imp, fars=(1e-2, 1e-3)),
    }
    n_time = min(timing_samples, len(items))
    if probe_s is not None:
        report["protocol"] = {"probe_s": probe_s, "vad": vad, "template": "whole utterance",
                              "probe_voiced_s_median": float(np.median([len(c) for c in cuts]) / 16000)}
        if not teacher:
            report["probe_timing"] = probe_timing(emb, cuts, n=n_time)
    if teacher:
        times = [emb.timer(s) for s in prepared.samples[:n_time]]  # type: ignore[attr-defined]
    else:
        times = [emb.time_one(it) for it in items[:n_time]]
    report["ms_per_sample"] = float(np.median(times) * 1000)
    report["timing"] = {"samples": n_time, "batch": 1, "threads": threads, "statistic": "median"}
    if modality == "voice":
        report["mean_utterance_s"] = float(np.mean([len(a) / 16000 for a in prepared.audio]))
    if plot:
        from edge_runtime.plots import plot_roc_det

        plot_roc_det({emb.name: (gen, imp)}, Path(plot), title=f"{modality} verification: {data}")
        report["plot"] = str(plot)
    if keep_scores:
        report["scores"] = (gen, imp)
        who = np.asarray(ids)  # the identities of each trial's two sides, for bootstraps over people
        report["pair_identities"] = (who[gp], who[ip])
    return report
