"""AV-sync liveness on the GRID clips: scores, AUC, a leave-one-clip-out threshold, and the
security modes written into an operating-point file.

The 7 GRID clips are the only real talking faces here. Each clip is cut into windows; a window
scores its own audio (in sync), its audio shifted by >= 0.3 s either way, and the audio of each
other clip at the same instants (swapped). AUC is threshold-free and uses every window. The
threshold is the equal-error point of the in-sync vs attack windows; its error rates are
measured leave-one-clip-out: the threshold is set on 6 clips and applied to the 7th.
Windows of one clip overlap, so they are not independent: 7 clips is 7 people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import MediaError
from edge_runtime.frontend.audio import TARGET_SR
from edge_runtime.frontend.avsync import MouthTracker, SyncConfig, speech_band, sync_score
from edge_runtime.frontend.face import DlibHogDetector
from edge_runtime.frontend.video import decode_clip
from edge_runtime.operating_points import (
    OperatingPoints,
    SecurityMode,
    load_operating_points,
    save_operating_points,
)

SHIFTS_S = (-0.8, -0.5, -0.3, 0.3, 0.5, 0.8)


@dataclass
class Track:
    name: str
    times: np.ndarray
    mouth: np.ndarray
    band: np.ndarray  # 300-3000 Hz audio, sample 0 at t = 0
    frames: int


def grid_tracks(grid_dir: Path) -> list[Track]:
    """Mouth opening of every frame of every clip (detector + 68-point landmarks)."""
    paths = sorted(Path(grid_dir).glob("*.mpg")) + sorted(Path(grid_dir).glob("*.mp4"))
    if not paths:
        raise MediaError(f"no GRID clips (*.mpg, *.mp4) in {grid_dir}")
    det, mouth = DlibHogDetector(), MouthTracker()
    out = []
    for p in paths:
        clip = decode_clip(p)
        ts, ms = [], []
        for f in clip.frames:
            found = det.detect(f.image)
            if found:
                ts.append(f.t)
                ms.append(mouth.opening(f.image, found[0].box))
        assert clip.audio is not None  # decode_clip requires audio
        out.append(Track(p.stem, np.array(ts), np.array(ms),
                         speech_band(clip.audio, TARGET_SR), len(clip.frames)))
    return out


def window_scores(tracks: Sequence[Track], window_s: float, step_s: float = 0.25,
                  config: SyncConfig | None = None) -> dict[str, list[tuple[str, float]]]:
    """(clip, score) per kind: in-sync, shifted (each of ``SHIFTS_S``), swapped, photo."""
    cfg = config or SyncConfig()
    out: dict[str, list[tuple[str, float]]] = {"sync": [], "shifted": [], "swapped": [],
                                               "photo": []}
    for tr in tracks:
        end = tr.times[-1] + 0.04
        for s in np.arange(tr.times[0], end - window_s + 1e-6, step_s):
            sel = (tr.times >= s) & (tr.times < s + window_s)
            t, m = tr.times[sel], tr.mouth[sel]
            out["sync"].append((tr.name, sync_score(t, m, tr.band, TARGET_SR, config=cfg).score))
            for sh in SHIFTS_S:
                r = sync_score(t, m, tr.band, TARGET_SR, audio_start=sh, config=cfg)
                out["shifted"].append((tr.name, r.score))
            for other in tracks:
                if other.name != tr.name:
                    r = sync_score(t, m, other.band, TARGET_SR, config=cfg)
                    out["swapped"].append((tr.name, r.score))
            still = np.full_like(m, m[len(m) // 2])  # one frame shown for the whole window
            r = sync_score(t, still, tr.band, TARGET_SR, config=cfg)
            out["photo"].append((tr.name, r.score if r.measured else -np.inf))
    return out


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(np.mean(p > n) + 0.5 * np.mean(p == n))


def eer_threshold(pos: Sequence[float], neg: Sequence[float]) -> float:
    """The score where the in-sync rejection rate meets the attack acceptance rate."""
    p, n = np.sort(np.asarray(pos, float)), np.asarray(neg, float)
    n = n[np.isfinite(n)]
    cands = np.unique(np.concatenate([p, n]))
    best, thr = np.inf, float(cands[0])
    for c in cands:
        gap = abs(np.mean(p <= c) - np.mean(n > c))
        if gap < best:
            best, thr = gap, float(c)
    return thr


def leave_one_out(scores: dict[str, list[tuple[str, float]]]) -> dict[str, Any]:
    """Threshold from 6 clips, error rates on the 7th, pooled over the 7 held-out clips."""
    clips = sorted({c for c, _ in scores["sync"]})
    held: dict[str, list[bool]] = {"sync_rejected": [], "shifted_accepted": [],
                                   "swapped_accepted": [], "photo_accepted": []}
    thresholds = []
    for c in clips:
        pos = [s for k, s in scores["sync"] if k != c]
        neg = [s for kind in ("shifted", "swapped") for k, s in scores[kind] if k != c]
        thr = eer_threshold(pos, neg)
        thresholds.append(thr)
        held["sync_rejected"] += [s <= thr for k, s in scores["sync"] if k == c]
        for kind in ("shifted", "swapped", "photo"):
            held[f"{kind}_accepted"] += [s > thr for k, s in scores[kind] if k == c]
    return {"thresholds": [round(t, 3) for t in thresholds],
            **{k: {"rate": float(np.mean(v)), "n": len(v)} for k, v in held.items()}}


def measure(grid_dir: Path, windows: Sequence[float] = (1.5, 2.0, 3.0),
            threshold_window_s: float = 2.0) -> dict[str, Any]:
    """AUC per window length, LOO error rates, and the threshold shipped (all 7 clips)."""
    tracks = grid_tracks(grid_dir)
    rows = []
    shipped: dict[str, Any] = {}
    for w in windows:
        sc = window_scores(tracks, w)
        pos = [s for _, s in sc["sync"]]
        row = {"window_s": w, "windows": len(pos),
               "auc_shifted": auc(pos, [s for _, s in sc["shifted"]]),
               "auc_swapped": auc(pos, [s for _, s in sc["swapped"]]),
               "n_shifted": len(sc["shifted"]), "n_swapped": len(sc["swapped"]),
               "photo_rejected": sum(not np.isfinite(s) for _, s in sc["photo"]),
               "n_photo": len(sc["photo"]), "loo": leave_one_out(sc)}
        rows.append(row)
        if w == threshold_window_s:
            neg = [s for k in ("shifted", "swapped") for _, s in sc[k]]
            shipped = {"threshold": eer_threshold(pos, neg), "window_s": w}
    if not shipped:
        raise MediaError(f"threshold window {threshold_window_s} s not among {windows}")
    return {"clips": [t.name for t in tracks], "frames": {t.name: t.frames for t in tracks},
            "mouth_frames": {t.name: int(t.times.size) for t in tracks}, "rows": rows,
            "shipped": shipped, "config": SyncConfig().__dict__}


def with_modes(op: OperatingPoints, sync: dict[str, Any], default: str = "face+liveness",
               voice_veto_llr: float = -2.0, target_far: float = 1e-2) -> OperatingPoints:
    """``op`` with the two security modes and the AV-sync measurement that set them."""
    thr = float(sync["shipped"]["threshold"])
    why_fl = ("default: short speech is weak identity evidence (the Resemblyzer teacher has "
              "~20% EER on GRID half-clips), so the face identifies and the voice may only "
              "veto; AV sync stops photos and replays")
    modes = {
        "face+liveness": SecurityMode("face+liveness", target_far, 0.5, thr, voice_veto_llr,
                                      why=why_fl),
        "two-factor": SecurityMode("two-factor", target_far, 2.0, thr, voice_veto_llr,
                                   why="face and voice must each favour the person, >= 2 s of "
                                       "speech, plus AV sync: for doors that need both factors"),
    }
    summary = {"threshold": thr, "window_s": sync["shipped"]["window_s"],
               "clips": len(sync["clips"]), "data": "GRID (7 real talking-face clips)",
               "auc": {f"{r['window_s']:g}s": {"shifted": round(r["auc_shifted"], 4),
                                              "swapped": round(r["auc_swapped"], 4)}
                       for r in sync["rows"]}}
    return replace(op, modes=modes, default_mode=default, avsync=summary)


def write_modes(op_path: Path, grid_dir: Path, model_hashes: dict[str, str] | None = None
                ) -> tuple[OperatingPoints, dict[str, Any]]:
    """Measure AV sync on GRID and (re)write the modes block of an operating-point file."""
    op = load_operating_points(op_path, model_hashes or {})
    sync = measure(grid_dir)
    new = with_modes(op, sync)
    save_operating_points(new, op_path)
    return new, sync
