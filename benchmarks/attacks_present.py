"""One presentation through the real ``Verifier``: collected once, decided by several
verifiers (``attempt``), or decided as the live loop decides it (``live_looks``); and what a
decision leaves in the benchmark's JSON (``row``). Used by ``benchmarks.attacks`` and its GRID
pass (``benchmarks.attacks_grid``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.access.loop import LoopConfig
from edge_runtime.access.pipeline import AttemptResult, Verifier
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.face import load_image
from edge_runtime.frontend.video import Frame

LOOK_EVERY_S = LoopConfig().look_every_s  # the live-loop emulation looks as the loop does
CHUNK_S = 0.1  # audio arrives in chunks this long in the live-loop emulation


class Media:
    """Decoded photos and audio, each read once."""

    def __init__(self) -> None:
        self._img: dict[Path, np.ndarray] = {}
        self._wav: dict[Path, np.ndarray] = {}

    def image(self, p: Path) -> np.ndarray:
        if p not in self._img:
            self._img[p] = load_image(p)
        return self._img[p]

    def audio(self, p: Path) -> np.ndarray:
        if p not in self._wav:
            self._wav[p] = load_audio(p, TARGET_SR)
        return self._wav[p]


def attempt(verifiers: dict[str, Verifier], frames: list[Frame], audio: np.ndarray,
             source: str) -> dict[str, AttemptResult]:
    """One presentation, collected once, decided by each verifier (same gallery, same bundle,
    each its own mode)."""
    first = next(iter(verifiers.values()))
    c = first.new_attempt(source)
    for f in frames:
        c.add_frame(f)
    c.add_audio(audio.astype(np.float32), TARGET_SR, t=frames[0].t if frames else 0.0)
    return {name: v.decide(c) for name, v in verifiers.items()}


def live_looks(verifiers: dict[str, Verifier], frames: list[Frame], audio: np.ndarray,
                source: str, live_end: bool = False) -> dict[str, tuple[AttemptResult, int]]:
    """The same presentation as the live loop decides it: audio in chunks, a look after the
    minimum speech and every ``LOOK_EVERY_S`` more, the first final look ends it (per rule);
    the end of the probe decides the rest. Returns each rule's decision and its looks."""
    first = next(iter(verifiers.values()))
    cfg = first.config
    c = first.new_attempt(source)
    for f in frames:
        c.add_frame(f)
    t0 = frames[0].t if frames else 0.0
    step = round(CHUNK_S * TARGET_SR)
    out: dict[str, tuple[AttemptResult, int]] = {}
    looks = 0
    next_look = cfg.min_speech_s
    for i in range(0, audio.size, step):
        c.add_audio(audio[i: i + step].astype(np.float32), TARGET_SR, t=t0 + i / TARGET_SR)
        heard = c.speech_seconds()
        if heard < next_look or c.good_faces < cfg.min_face_frames:
            continue
        looks += 1
        for name, v in verifiers.items():
            if name not in out:
                r = v.decide(c, final=False)
                if r.final:
                    out[name] = (r, looks)
        if len(out) == len(verifiers):
            return out
        next_look = heard + LOOK_EVERY_S
    for name, v in verifiers.items():
        if name not in out:  # ``live_end``: as the live loop decides at the end of an attempt
            out[name] = (v.decide(c, live=live_end), looks)
    return out


def row(r: AttemptResult) -> dict[str, Any]:
    """What one decision leaves in the JSON: verdict, reason and the scores it saw."""
    out = {"granted": r.granted, "reason": r.reason[:60],  # the JSON stays < 2 MB
           "scores": {k: (None if v is None else round(float(v), 4))
                      for k, v in r.scores.items() if k in ("face", "voice", "avsync")}}
    if r.identity is not None:
        out["identity"] = r.identity
    return out
