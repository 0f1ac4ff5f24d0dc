"""The models a device runs, loaded from the `models/` folder through its manifest.

One ``ModelBundle`` holds the face and voice models (FP32 or INT8 on onnxruntime; FP32, FP16 or
INT8 engines on TensorRT, found by ``find_engine`` in the layout the export writes) of the
chosen face and voice tiers,
the cross-modal heads when the manifest has them, the voice front-end the voice model was
trained with, and the thresholds: the operating points of ``operating_points.yaml`` when that
file exists (and belongs to exactly these models), else PROVISIONAL per-score thresholds that
every report marks as such. The pre- and post-processing is the same for every backend.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Runner, TensorSpec, available_backends, load_runner
from edge_runtime.backends.tensorrt_backend import import_tensorrt
from edge_runtime.bundle import ModelEntry, load_manifest
from edge_runtime.engine_meta import (
    EngineKey,
    export_out_of,
    find_engines,
    for_machine,
    key_differences,
    machine_identity,
    rebuild_command,
)
from edge_runtime.errors import ConfigError, DependencyError, ModelError
from edge_runtime.frontend.features import (
    FACE_TTA,
    FaceInput,
    VoiceFrontEnd,
    embed_face_tensor,
    l2_normalise,
    tta_digest,
)
from edge_runtime.frontend.ge2e import (
    GE2E_MELS,
    PARTIAL_FRAMES,
    check_front_end,
    embed_ge2e_partials,
    ge2e_partials,
)
from edge_runtime.operating_points import OperatingPoints, load_operating_points

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
# the start of the load-time note for INT8 on a CPU whose onnxruntime int8 kernels saturate
# (calibration.exact_int8 removes it from a bundle whose runners it swapped)
INT8_KERNEL_NOTE = "INT8 on onnxruntime's CPU kernels without an int8 dot-product instruction"
# The engine precision (sidecar) each runtime precision runs, never another: an FP16 engine is
# not an FP32 model. fp16 exists only as TensorRT engines of the FP32 ONNX.
ENGINE_PRECISIONS: Mapping[str, str] = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq"}
# Students get engines; the cross-modal heads are two tiny MLPs that run on onnxruntime with
# every backend (an engine would save microseconds and add three builds per device).
ENGINE_MODELS = ("face", "voice")
OPERATING_POINTS_FILE = "operating_points.yaml"


# Face tiers: the distilled student, or dlib's face ResNet ported to ONNX (teacher-grade,
# 150x150 RGB dlib chips). Manifest entries per tier and precision; a gallery enrolled with
# one tier is never probed with the other (different embedding spaces).
FACE_TIERS: Mapping[str, Mapping[str, str]] = {
    "student": {"fp32": "face", "int8": "face_int8"},
    "large": {"fp32": "face_large", "int8": "face_large_int8"},
}
# The cross-modal heads of each tier: they read that tier's face embedding space.
TIER_HEADS: Mapping[str, tuple[str, str, str]] = {
    "student": ("pin_face", "pin_voice", "faa"),
    "large": ("pin_face_large", "pin_voice_large", "faa_large"),
}


# Voice tiers: the distilled student (2 s log-mel windows), or Resemblyzer's GE2E LSTM ported to
# ONNX (``voice_large``: whole utterances as 1.6 s mel partials, ``frontend/ge2e.py``). The LSTM
# has no INT8 export: under --precision int8 (and fp16) the large voice runs its FP32 file, said
# in the bundle's notes, since the INT8 the Jetson needs is the face's. A gallery enrolled with
# one voice tier is never probed with the other (different embedding spaces).
VOICE_TIERS: Mapping[str, Mapping[str, str]] = {
    "student": {"fp32": "voice", "int8": "voice_int8"},
    "large": {"fp32": "voice_large", "int8": "voice_large"},
}
# The large voice's partials: (P, 160, 40) mel power in, (P, 256) unit embeddings out.
VOICE_LARGE_SPEC = ({"mels": TensorSpec("mels", np.float32, (-1, PARTIAL_FRAMES, GE2E_MELS))},
                    {"embedding": np.float32})


def operating_points_file(precision: str, face_tier: str = "student",
                          voice_tier: str = "student") -> str:
    """Default operating-point file name of a precision and tiers (``edgepin calibrate
    --precision P --face-tier F --voice-tier V``): the students' names are unchanged, a large
    voice adds ``voice_large`` after the face tier, the precision comes last."""
    parts = ([] if face_tier == "student" else [face_tier]) + \
        ([] if voice_tier == "student" else [f"voice_{voice_tier}"]) + \
        ([] if precision == "fp32" else [precision])
    return OPERATING_POINTS_FILE if not parts else f"operating_points.{'.'.join(parts)}.yaml"


def operating_points_tiers(file_name: str) -> dict[str, str]:
    """(precision, face_tier, voice_tier) a default operating-point file name stands for, so
    a command handed only the file (``calibrate-modes --op``) opens the models it was made
    for; ``load_operating_points`` still checks their hashes."""
    parts = set(Path(file_name).name.split(".")[1:-1])
    return {"precision": "int8" if "int8" in parts else "fp32",
            "face_tier": "large" if "large" in parts else "student",
            "voice_tier": "large" if "voice_large" in parts else "student"}


def face_entry_name(face_tier: str, precision: str) -> str:
    """Manifest name of the face model of a tier at a runtime precision (fp16: the FP32 ONNX)."""
    if face_tier not in FACE_TIERS:
        raise ConfigError(f"face tier must be one of {', '.join(FACE_TIERS)}, got {face_tier!r}")
    return FACE_TIERS[face_tier]["int8" if precision == "int8" else "fp32"]


def face_tier_of(entry_name: str) -> str | None:
    """The tier a face manifest entry belongs to (None: not a face model)."""
    return next((t for t, names in FACE_TIERS.items() if entry_name in names.values()), None)


def voice_entry_name(voice_tier: str, precision: str) -> str:
    """Manifest name of the voice model of a tier at a runtime precision (the large tier has
    one FP32 file for every precision: no INT8 export of its LSTM)."""
    if voice_tier not in VOICE_TIERS:
        raise ConfigError(f"voice tier must be one of {', '.join(VOICE_TIERS)}, "
                          f"got {voice_tier!r}")
    return VOICE_TIERS[voice_tier]["int8" if precision == "int8" else "fp32"]


def voice_tier_of(entry_name: str) -> str | None:
    """The tier a voice manifest entry belongs to (None: not a voice model)."""
    return next((t for t, names in VOICE_TIERS.items() if entry_name in names.values()), None)


def tier_heads(face_tier: str, voice_tier: str = "student") -> tuple[str, str, str]:
    """Manifest names of the (pin_face, pin_voice, faa) heads of a face and voice tier: they
    read both tiers' embedding spaces, so each pair of tiers has its own (a large voice adds
    ``_vlarge``; none are trained yet, so such a bundle has no cross-modal check)."""
    if face_tier not in TIER_HEADS:
        raise ConfigError(f"face tier must be one of {', '.join(FACE_TIERS)}, got {face_tier!r}")
    if voice_tier == "student":
        return TIER_HEADS[face_tier]
    voice_entry_name(voice_tier, "fp32")  # validates the name
    sfx = ("" if face_tier == "student" else f"_{face_tier}") + f"_v{voice_tier}"
    return (f"pin_face{sfx}", f"pin_voice{sfx}", f"faa{sfx}")
# Score names, shared with calibration: cosine to the enrolled template (face, voice), cosine
# of the live face and live voice in the PIN space (pin), FAA match probability (faa).
SCORES = ("face", "voice", "pin", "faa")
CROSS_SCORES = ("pin", "faa")

# Used only when neither operating_points.yaml nor a manifest threshold exists. They are
# cosine / probability cut-offs, not FAR-calibrated: every decision made with them says
# "PROVISIONAL". Override per score with --threshold NAME=VALUE.
PROVISIONAL_DEFAULTS: Mapping[str, float] = {"face": 0.5, "voice": 0.6, "pin": 0.3, "faa": 0.5}
MANIFEST_THRESHOLD_KEY = "provisional_threshold"

_EMBED_SPECS = {
    "face": ({"face": TensorSpec("face", np.float32, (-1, 3, 112, 112))}, {"embedding": np.float32}),
    "voice": ({"feats": TensorSpec("feats", np.float32, (-1, -1, -1))}, {"embedding": np.float32}),
    "pin_face": ({"face_emb": np.float32}, {"pin": np.float32}),
    "pin_voice": ({"voice_emb": np.float32}, {"pin": np.float32}),
    "faa": ({"face_emb": np.float32, "voice_emb": np.float32}, {"match_prob": np.float32}),
}


@dataclass(frozen=True)
class Thresholds:
    """Per-score thresholds (accept iff score > threshold) and where each one came from."""

    values: Mapping[str, float]
    sources: Mapping[str, str] = field(default_factory=dict)
    provisional: bool = True

    def with_overrides(self, overrides: Mapping[str, float]) -> Thresholds:
        unknown = sorted(set(overrides) - set(SCORES))
        if unknown:
            raise ConfigError(f"unknown threshold name(s) {unknown}; known: {', '.join(SCORES)}")
        values = {**self.values, **{k: float(v) for k, v in overrides.items()}}
        sources = {**self.sources, **{k: "command line" for k in overrides}}
        return replace(self, values=values, sources=sources)


def parse_threshold_overrides(items: list[str] | None) -> dict[str, float]:
    """``["face=0.8", "voice=0.7"]`` -> {"face": 0.8, "voice": 0.7} (CLI --threshold)."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or name.strip() not in SCORES or not math.isfinite(number):
            raise ConfigError(
                f"--threshold {item!r}: expected NAME=NUMBER with NAME in {', '.join(SCORES)}"
            )
        out[name.strip()] = number
    return out


def tensorrt_machine() -> dict[str, str | None]:
    """This machine's identity for engine lookup; a clear error where TensorRT cannot run."""
    if "tensorrt" not in available_backends():
        raise DependencyError("--backend tensorrt: TensorRT engines need the tensorrt "
                              "and cuda-python packages, not both installed here; run "
                              "with --backend onnxruntime (or see docs/jetson.md)")
    return machine_identity(import_tensorrt().__version__)


def find_engine(engines_root: Path, onnx_sha256: str, precision: str,
                machine: Mapping[str, str | None] | None, *, model: str = "model"
                ) -> tuple[Path, EngineKey]:
    """The engine under ``engines_root`` built from this ONNX, at this engine precision, for
    this machine (``machine_identity()``; None: any machine), and the key it must match.

    Keyed by the sidecars, not by file names; a GPU engine is preferred to a DLA one. Refuses,
    saying what exists, when only other precisions or other machines' engines are there.
    """
    root = Path(engines_root)
    built = [(p, k) for p, k in find_engines(root) if k.onnx_sha256 == onnx_sha256]
    if not built:
        raise ModelError(
            f"no TensorRT engine for {model} (ONNX {onnx_sha256[:12]}...) under {root}: build "
            "one with `edgepin export --target ...` (or its build_all.sh on the device) and "
            "point --engines at the export's tensorrt/ folder, or run with --backend onnxruntime")
    same = [(p, k) for p, k in built if k.precision == precision]
    if not same:
        have = ", ".join(f"{p.name} ({k.precision})" for p, k in built)
        raise ModelError(f"{model}: the engines built from its ONNX under {root} are {have}, "
                         f"none is {precision}; refusing to run another precision than asked")
    if machine is None:
        fits = same
    else:
        fits = [(p, k) for p, k in same if not key_differences(k, for_machine(k, machine))]
    if not fits:
        why = "; ".join(f"{p}: " + ", ".join(key_differences(k, for_machine(k, machine)))
                        for p, k in same)
        raise ModelError(f"{model}: no {precision} engine under {root} fits this machine ({why})."
                         f" Rebuild with: {rebuild_command(None, export_out_of(same[0][0]))}")
    path, key = min(fits, key=lambda pk: (pk[1].dla_core is not None, str(pk[0])))
    return path, (key if machine is None else for_machine(key, machine))


class ModelBundle:
    """Runners for face/voice (+ pin_face, pin_voice, faa when present) and their thresholds.

    Use ``ModelBundle.load(root, ...)``. ``hashes`` maps each score modality ("face",
    "voice") to the sha256 of the model file that produced it: gallery templates are keyed by
    it, so templates made by another model are never compared with these embeddings.
    """

    def __init__(
        self,
        root: Path,
        runners: Mapping[str, Runner],
        entries: Mapping[str, ModelEntry],
        *,
        precision: str,
        backend: str,
        front_end: VoiceFrontEnd | None,
        thresholds: Thresholds,
        operating_points: OperatingPoints | None,
        faa_inputs: str,
        notes: list[str],
        face_tier: str = "student",
        voice_tier: str = "student",
    ) -> None:
        self.root = root
        self.runners = dict(runners)
        self.entries = dict(entries)
        self.precision = precision
        self.backend = backend
        self.front_end = front_end
        self.thresholds = thresholds
        self.operating_points = operating_points
        self.faa_inputs = faa_inputs
        self.notes = notes
        self.face_tier = face_tier
        self.voice_tier = voice_tier
        self.engines: dict[str, str] = {}  # model -> TensorRT engine file (backend tensorrt)
        # INT8 models swapped for their exact QDQ arithmetic (calibration on a CPU without an
        # int8 dot-product instruction: calibration.exact_int8.exact_int8_runners)
        self.exact_int8: list[str] = []
        self.model_hashes = {e.name: e.sha256 for e in self.entries.values()}
        self.face_tta = "none"
        self.hashes: dict[str, str] = {}
        self.use_face_tta(operating_points.face_tta if operating_points is not None else "none")

    # --------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        root: str | Path,
        *,
        precision: str = "fp32",
        backend: str = "onnxruntime",
        threads: int = 1,
        engines: str | Path | None = None,
        operating_points: str | Path | None = None,
        threshold_overrides: Mapping[str, float] | None = None,
        face_tier: str = "student",
        voice_tier: str = "student",
    ) -> ModelBundle:
        """Open every model of the bundle; fail early, naming the file, on anything stale.

        ``face_tier`` "student" (the distilled face model) or "large" (dlib's face ResNet as
        ONNX, ``face_large``; its heads and operating points are its own).
        ``voice_tier`` "student" or "large" (Resemblyzer's GE2E encoder as ONNX,
        ``voice_large``, FP32 at every precision and on onnxruntime under TensorRT too; its
        operating points are its own, and the student-space heads are not loaded with it).

        ``operating_points`` None looks for ``root/operating_points.yaml`` (FP32) or
        ``root/operating_points.int8.yaml`` (INT8: its scores differ, so do its thresholds); a
        file that exists must belong to exactly the loaded models (stale files are refused).
        """
        root = Path(root)
        if backend not in ("onnxruntime", "tensorrt"):
            raise ConfigError(f"backend must be onnxruntime or tensorrt, got {backend!r}")
        allowed = tuple(ENGINE_PRECISIONS) if backend == "tensorrt" else PRECISIONS
        if precision not in allowed:
            raise ConfigError(f"precision must be one of {allowed} with backend {backend}, "
                              f"got {precision!r}")
        manifest = load_manifest(root)
        notes: list[str] = []
        entries: dict[str, ModelEntry] = {}
        face_name = face_entry_name(face_tier, precision)
        voice_name = voice_entry_name(voice_tier, precision)
        for modality in ("face", "voice"):
            name = face_name if modality == "face" else voice_name
            if name not in manifest:
                have = ", ".join(sorted(manifest)) or "nothing"
                hint = ("export the INT8 models or use --precision fp32" if precision == "int8"
                        else "is this an edgepin models folder?")
                if face_tier == "large" and modality == "face":
                    hint = ("make it with `edgepin port-dlib --face-large --models "
                            f"{root}`" + (" then `edgepin export --only face_large`"
                                          if precision == "int8" else ""))
                if voice_tier == "large" and modality == "voice":
                    hint = (f"make it with `edgepin port-resemblyzer --models {root}` (needs "
                            "torch and resemblyzer), or use --voice-tier student")
                raise ModelError(f"{root}: the manifest has no {name!r} model (it has {have}); "
                                 + hint)
            entries[modality] = manifest[name]
        if voice_tier == "large":
            check_front_end(entries["voice"].meta.get("front_end"), f"{root}: {voice_name}")
            if precision != "fp32":
                notes.append(f"voice tier large runs {voice_name} in FP32 under --precision "
                             f"{precision} (its LSTM has no {precision} export); only the face "
                             f"model runs {precision}")
        if backend == "onnxruntime" and precision == "int8":
            from edge_runtime.cpu_int8 import SATURATING_KERNELS, int8_dot_features

            if not int8_dot_features():
                notes.append(
                    f"{INT8_KERNEL_NOTE}: {SATURATING_KERNELS}, so the INT8 files (made for "
                    "TensorRT) lose accuracy here; --precision auto runs FP32 on this CPU")
        head_names = tier_heads(face_tier, voice_tier)
        heads = [h for h in head_names if h in manifest]
        for head in heads:
            entries[("pin_face", "pin_voice", "faa")[head_names.index(head)]] = manifest[head]
        if "pin_face" in entries and "pin_voice" not in entries or (
            "pin_voice" in entries and "pin_face" not in entries
        ):
            raise ModelError(f"{root}: the manifest has only one of pin_face/pin_voice")
        if not heads:
            notes.append(
                f"cross-modal check unavailable (no {'/'.join(head_names)} models in "
                "the manifest): liveness means face and voice each match the SAME enrolled "
                "identity")
        engines_root = Path(engines) if engines is not None else root / "tensorrt"
        machine = tensorrt_machine() if backend == "tensorrt" else None
        runners: dict[str, Runner] = {}
        engine_files: dict[str, str] = {}
        face_input = FaceInput.from_meta(entries["face"].meta.get("front_end"))
        # the large voice has no TensorRT build yet: it runs on onnxruntime with every backend
        engine_keys = [k for k in ENGINE_MODELS if not (k == "voice" and voice_tier == "large")]
        try:
            for key, entry in entries.items():
                path, expected, kind = entry.verified_path(), None, "onnxruntime"
                if backend == "tensorrt" and key in engine_keys:
                    path, expected = find_engine(engines_root, entry.sha256,
                                                 ENGINE_PRECISIONS[precision], machine,
                                                 model=entry.name)
                    kind = "tensorrt"
                    engine_files[key] = str(path)
                ins, outs = _EMBED_SPECS[key]
                if key == "face":
                    ins = {"face": TensorSpec("face", np.float32, (-1, *face_input.shape))}
                if key == "voice" and voice_tier == "large":
                    ins, outs = VOICE_LARGE_SPEC
                runners[key] = load_runner(path, backend=kind, threads=threads,
                                           expect_inputs=ins, expect_outputs=outs,
                                           expected_key=expected)
        except BaseException:
            for r in runners.values():
                r.close()
            raise
        if backend == "tensorrt":
            used = ", ".join(f"{k} {v}" for k, v in engine_files.items())
            notes.append(f"TensorRT engines: {used}" + (
                f"; {', '.join(heads)} run on onnxruntime (no engines, by design)" if heads else ""))
            if voice_tier == "large":
                notes.append(f"{voice_name} runs on onnxruntime (FP32): the large voice tier "
                             "has no TensorRT engine yet")
        front_end = _voice_front_end(runners["voice"], entries["voice"]) \
            if voice_tier == "student" else None
        faa_inputs = str(entries["faa"].meta.get("inputs_space", "student")) if "faa" in entries else ""
        if faa_inputs not in ("", "student", "pin"):
            raise ModelError(f"{root}: faa inputs_space must be 'student' or 'pin', got {faa_inputs!r}")
        if faa_inputs == "pin" and "pin_face" not in entries:
            raise ModelError(f"{root}: faa takes PIN embeddings but the manifest has no pin heads")
        op_path = (Path(operating_points) if operating_points is not None
                   else root / operating_points_file(precision, face_tier, voice_tier))
        op = None
        if op_path.exists() or operating_points is not None:
            op = load_operating_points(op_path, {e.name: e.sha256 for e in entries.values()})
            thresholds = Thresholds({}, {}, provisional=op.provisional)
            uncovered = [c for c, head in (("pin", "pin_face"), ("faa", "faa"))
                         if head in entries and c not in op.fuser.calibrations]
            if uncovered:
                notes.append(f"operating points {op_path} do not calibrate {', '.join(uncovered)}:"
                             " its liveness threshold is PROVISIONAL ("
                             + ", ".join(f"{c} > {PROVISIONAL_DEFAULTS[c]:g}" for c in uncovered)
                             + ")")
            if op.provisional:
                notes.append(f"operating points {op_path} are marked PROVISIONAL by calibration")
        else:
            thresholds = _provisional(entries)
            notes.append(
                f"PROVISIONAL thresholds (no "
                f"{operating_points_file(precision, face_tier, voice_tier)} in "
                f"{root}): "
                + ", ".join(f"{k} > {v:g} ({thresholds.sources[k]})"
                            for k, v in thresholds.values.items())
            )
        if threshold_overrides:
            thresholds = thresholds.with_overrides(threshold_overrides)
            if op is not None:
                notes.append("--threshold overrides apply to the cross-modal liveness check only; "
                             "identity decisions use the operating points")
        bundle = cls(root, runners, entries, precision=precision, backend=backend,
                     front_end=front_end, thresholds=thresholds, operating_points=op,
                     faa_inputs=faa_inputs, notes=notes, face_tier=face_tier,
                     voice_tier=voice_tier)
        bundle.engines = engine_files
        return bundle

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def __enter__(self) -> ModelBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- inference
    @property
    def cross_modal(self) -> tuple[str, ...]:
        """Cross-modal scores this bundle can compute ("pin", "faa"), empty when none."""
        out = []
        if "pin_face" in self.runners:
            out.append("pin")
        if "faa" in self.runners:
            out.append("faa")
        return tuple(out)

    def use_face_tta(self, tta: str) -> None:
        """Embed faces with test-time augmentation ``tta`` (``FACE_TTA``); normally what the
        operating-point file was calibrated with (``calibrate --face-tta`` sets it there).
        The face hash that keys gallery templates changes with it."""
        if tta not in FACE_TTA:
            raise ConfigError(f"face test-time augmentation must be one of {FACE_TTA}, got {tta!r}")
        self.face_tta = tta
        self.hashes = {"face": tta_digest(self.entries["face"].sha256, tta),
                       "voice": self.entries["voice"].sha256}

    def embed_faces(self, crops: list[np.ndarray]) -> np.ndarray:
        """Crops made by ``face_input.crop`` -> (N, 128) L2-normalised float32 embeddings."""
        if not crops:
            raise ConfigError("embed_faces needs at least one aligned crop")
        runner = self.runners["face"]
        return embed_face_tensor(lambda x: runner.run({"face": x})["embedding"],
                                 self.face_input.tensor(list(crops)), self.face_tta)

    @functools.cached_property
    def face_input(self) -> FaceInput:
        """The face model's input (ArcFace 112 crop or dlib 150 chip), as it records it."""
        session = getattr(self.runners["face"], "session", None)
        meta = dict(session.get_modelmeta().custom_metadata_map) if session is not None else {}
        raw = meta.get("edgepin.front_end") or self.entries["face"].meta.get("front_end")
        return FaceInput.from_meta(raw)

    @property
    def face_colour(self) -> bool:
        """True when the face model takes RGB input (its recorded front-end says so)."""
        return self.face_input.colour

    def voice_windows(self, wav16k: np.ndarray) -> np.ndarray:
        """The voice model's inputs for an utterance, front-end only (timed apart in the
        bench and the verifier): the student's (N, 200, 64) log-mel windows, or the large
        tier's (P, 160, 40) GE2E mel partials of the whole utterance."""
        if self.voice_tier == "large":
            return ge2e_partials(wav16k)
        if self.front_end is None:
            raise ModelError("this bundle's voice model has no log-mel front-end")
        return self.front_end.windows(wav16k)

    def embed_voice(self, wav16k: np.ndarray | None = None, *,
                    windows: np.ndarray | None = None) -> np.ndarray:
        """Utterance (or its ``voice_windows``) -> (256,) unit embedding: the mean of its
        window embeddings, pooled as the model's own recipe does (GE2E: ``embed_ge2e``)."""
        if self.voice_tier == "large":
            if windows is None:
                windows = ge2e_partials(wav16k)
            elif windows.ndim != 3 or windows.shape[1:] != (PARTIAL_FRAMES, GE2E_MELS):
                raise ConfigError(f"the large voice tier embeds whole utterances as GE2E mel "
                                  f"partials (P, {PARTIAL_FRAMES}, {GE2E_MELS}) from "
                                  f"voice_windows(), got windows of shape {windows.shape}")
            return embed_ge2e_partials(self._run_voice_large, windows)
        feats = self.voice_windows(wav16k) if windows is None else windows
        out = l2_normalise(self.runners["voice"].run({"feats": feats})["embedding"])
        return l2_normalise(out.mean(axis=0))

    def _run_voice_large(self, mels: np.ndarray) -> np.ndarray:
        return self.runners["voice"].run({"mels": mels})["embedding"]

    def cross_scores(self, face_emb: np.ndarray, voice_emb: np.ndarray) -> dict[str, float]:
        """Live face vs live voice: {"pin": cosine, "faa": probability} for the heads present."""
        f = np.asarray(face_emb, dtype=np.float32).reshape(1, -1)
        v = np.asarray(voice_emb, dtype=np.float32).reshape(1, -1)
        out: dict[str, float] = {}
        pf = pv = None
        if "pin_face" in self.runners:
            pf = l2_normalise(self.runners["pin_face"].run({"face_emb": f})["pin"])
            pv = l2_normalise(self.runners["pin_voice"].run({"voice_emb": v})["pin"])
            out["pin"] = float(np.sum(pf * pv))
        if "faa" in self.runners:
            feed = {"face_emb": pf, "voice_emb": pv} if self.faa_inputs == "pin" else \
                {"face_emb": f, "voice_emb": v}
            prob = self.runners["faa"].run(feed)["match_prob"]
            out["faa"] = float(np.asarray(prob).reshape(-1)[0])
        return out

    def describe(self) -> dict[str, Any]:
        """What was loaded, for reports and `--json` output."""
        return {
            "root": str(self.root),
            "precision": self.precision,
            "backend": self.backend,
            "face_tier": self.face_tier,
            "voice_tier": self.voice_tier,
            "models": {k: {"file": e.file, "sha256": e.sha256} for k, e in self.entries.items()},
            "engines": dict(self.engines) or None,
            "cross_modal": list(self.cross_modal) or None,
            "operating_points": self.operating_points.source if self.operating_points else None,
            "provisional": self.thresholds.provisional,
            "thresholds": dict(self.thresholds.values),
            "notes": list(self.notes),
        }


def face_colour_from_meta(onnx_meta: Mapping[str, str], manifest_meta: Mapping[str, Any]) -> bool:
    """Whether a face model takes RGB input: `colour` of its recorded front-end (default grey).

    Students before the colour option record `{"face_size": 112}` and were trained on grey.
    """
    raw: Any = onnx_meta.get("edgepin.front_end") or manifest_meta.get("front_end")
    return FaceInput.from_meta(raw).colour


def _voice_front_end(runner: Runner, entry: ModelEntry) -> VoiceFrontEnd:
    """The front-end recorded with the voice model (ONNX metadata, else the manifest)."""
    meta: dict[str, str] = {}
    session = getattr(runner, "session", None)
    if session is not None:
        meta = dict(session.get_modelmeta().custom_metadata_map)
    raw: Any = meta.get("edgepin.front_end") or entry.meta.get("front_end")
    if raw is None:
        log.warning("voice model %s records no front-end; using the default", entry.file)
        return VoiceFrontEnd()
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        return VoiceFrontEnd.from_dict(data)
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise ModelError(f"voice model {entry.file}: unreadable front-end settings ({exc})") from exc


def _provisional(entries: Mapping[str, ModelEntry]) -> Thresholds:
    """Manifest-recorded thresholds (e.g. a student's validation EER threshold) or defaults."""
    values, sources = {}, {}
    owner = {"face": "face", "voice": "voice", "pin": "pin_face", "faa": "faa"}
    for score, default in PROVISIONAL_DEFAULTS.items():
        entry = entries.get(owner[score])
        recorded = entry.meta.get(MANIFEST_THRESHOLD_KEY) if entry is not None else None
        if isinstance(recorded, int | float) and math.isfinite(recorded):
            values[score], sources[score] = float(recorded), f"manifest {entry.name}"
        else:
            values[score], sources[score] = default, "built-in default"
    return Thresholds(values, sources, provisional=True)
