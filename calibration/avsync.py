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
from edge_runtime.frontend.avsync import BAND_HZ, BandEnergy, MouthTracker, SyncConfig, sync_score
from edge_runtime.frontend.face import DlibHogDetector
from edge_runtime.frontend.video import decode_clip
from edge_runtime.operating_points import (
    DECISIVE_SPEECH_S,
    VOICE_CONFIRM_UNTIL_S,
    VOICE_OTHER_MARGIN_LLR,
    OperatingPoints,
    SecurityMode,
    load_operating_points,
    save_operating_points,
)

SHIFTS_S = (-0.8, -0.5, -0.3, 0.3, 0.5, 0.8)
#: envelope bands compared (declared before looking at any held-out clip); the choice among
#: them is made inside each leave-one-out fold, so the nested figures include it
CANDIDATE_BANDS: tuple[tuple[float, float], ...] = (
    (300.0, 3000.0), (500.0, 2500.0), (300.0, 5000.0), (1000.0, 4000.0), (1000.0, 3000.0),
    (1500.0, 4500.0))
DETECTORS = ("hog", "cnn")


@dataclass
class Track:
    name: str
    times: np.ndarray
    mouth: np.ndarray
    audio: np.ndarray  # 16 kHz, sample 0 at t = 0
    frames: int

    def energy(self, band_hz: tuple[float, float] = BAND_HZ) -> BandEnergy:
        return BandEnergy.of(self.audio, TARGET_SR, band_hz=band_hz)


def grid_tracks(grid_dir: Path, detector: Any | None = None) -> list[Track]:
    """Mouth opening of every frame of every clip (``detector``'s box, default HOG, then the
    68-point landmarks)."""
    paths = sorted(Path(grid_dir).glob("*.mpg")) + sorted(Path(grid_dir).glob("*.mp4"))
    if not paths:
        raise MediaError(f"no GRID clips (*.mpg, *.mp4) in {grid_dir}")
    det, mouth = detector if detector is not None else DlibHogDetector(), MouthTracker()
    out = []
    for p in paths:
        clip = decode_clip(p)
        ts, ms = [], []
        for f in clip.frames:
            found = det.detect(f.image)
            if found:
                ts.append(f.t)
                ms.append(mouth.opening(f.image, found[0].box, getattr(det, "kind", None)))
        assert clip.audio is not None  # decode_clip requires audio
        out.append(Track(p.stem, np.array(ts), np.array(ms),
                         np.asarray(clip.audio, np.float64), len(clip.frames)))
    return out


def window_scores(tracks: Sequence[Track], window_s: float, step_s: float = 0.25,
                  config: SyncConfig | None = None, band_hz: tuple[float, float] = BAND_HZ
                  ) -> dict[str, list[tuple[str, float]]]:
    """(clip, score) per kind: in-sync, shifted (each of ``SHIFTS_S``), swapped, photo."""
    cfg = config or SyncConfig()
    energy = {tr.name: tr.energy(band_hz) for tr in tracks}
    out: dict[str, list[tuple[str, float]]] = {"sync": [], "shifted": [], "swapped": [],
                                               "photo": []}
    for tr in tracks:
        end = tr.times[-1] + 0.04
        own = energy[tr.name]
        for s in np.arange(tr.times[0], end - window_s + 1e-6, step_s):
            sel = (tr.times >= s) & (tr.times < s + window_s)
            t, m = tr.times[sel], tr.mouth[sel]
            out["sync"].append((tr.name, sync_score(t, m, own, config=cfg).score))
            for sh in SHIFTS_S:
                r = sync_score(t, m, own, audio_start=sh, config=cfg)
                out["shifted"].append((tr.name, r.score))
            for other in tracks:
                if other.name != tr.name:
                    r = sync_score(t, m, energy[other.name], config=cfg)
                    out["swapped"].append((tr.name, r.score))
            still = np.full_like(m, m[len(m) // 2])  # one frame shown for the whole window
            r = sync_score(t, still, own, config=cfg)
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


def _rates(scores: dict[str, list[tuple[str, float]]], clip: str, thr: float
           ) -> dict[str, list[bool]]:
    out = {"sync_rejected": [s <= thr for k, s in scores["sync"] if k == clip]}
    for kind in ("shifted", "swapped", "photo"):
        out[f"{kind}_accepted"] = [s > thr for k, s in scores[kind] if k == clip]
    return out


def _pooled_auc(scores: dict[str, list[tuple[str, float]]], skip: str | None = None) -> float:
    pos = [s for k, s in scores["sync"] if k != skip]
    return auc(pos, [s for kind in ("shifted", "swapped") for k, s in scores[kind] if k != skip])


def nested_leave_one_out(by_band: dict[tuple[float, float], dict[str, list[tuple[str, float]]]]
                         ) -> dict[str, Any]:
    """Band AND threshold chosen on 6 clips (band: highest AUC in-sync vs shifted+swapped;
    threshold: its equal-error point), error rates on the 7th clip, pooled: the estimate that
    includes the choice of band, not only the threshold."""
    first = next(iter(by_band.values()))
    clips = sorted({c for c, _ in first["sync"]})
    held: dict[str, list[bool]] = {"sync_rejected": [], "shifted_accepted": [],
                                   "swapped_accepted": [], "photo_accepted": []}
    folds = []
    for c in clips:
        band = max(by_band, key=lambda b: _pooled_auc(by_band[b], skip=c))
        sc = by_band[band]
        thr = eer_threshold([s for k, s in sc["sync"] if k != c],
                            [s for kind in ("shifted", "swapped") for k, s in sc[kind] if k != c])
        folds.append({"held_out": c, "band_hz": list(band), "threshold": round(thr, 3)})
        for k, v in _rates(sc, c, thr).items():
            held[k] += v
    return {"folds": folds,
            **{k: {"rate": float(np.mean(v)), "n": len(v)} for k, v in held.items()}}


def measure(grid_dir: Path, windows: Sequence[float] = (1.5, 2.0, 3.0),
            threshold_window_s: float = 2.0, detector: Any | None = None,
            kind: str = "hog", bands: Sequence[tuple[float, float]] = CANDIDATE_BANDS
            ) -> dict[str, Any]:
    """For one face detector: AUC per window length (shipped band ``BAND_HZ``), LOO error
    rates of its threshold, the nested LOO that also chooses the band, and the threshold
    shipped (equal-error point on all clips at ``threshold_window_s``)."""
    if threshold_window_s not in windows:
        raise MediaError(f"threshold window {threshold_window_s} s not among {windows}")
    tracks = grid_tracks(grid_dir, detector)
    rows = []
    shipped: dict[str, Any] = {}
    band_auc: dict[str, dict[str, float]] = {}
    for w in windows:
        by_band = {tuple(b): window_scores(tracks, w, band_hz=tuple(b)) for b in
                   dict.fromkeys([*map(tuple, bands), BAND_HZ])}
        sc = by_band[BAND_HZ]
        pos = [s for _, s in sc["sync"]]
        row = {"window_s": w, "windows": len(pos),
               "auc_shifted": auc(pos, [s for _, s in sc["shifted"]]),
               "auc_swapped": auc(pos, [s for _, s in sc["swapped"]]),
               "n_shifted": len(sc["shifted"]), "n_swapped": len(sc["swapped"]),
               "photo_rejected": sum(not np.isfinite(s) for _, s in sc["photo"]),
               "n_photo": len(sc["photo"]), "loo": leave_one_out(sc),
               "nested_loo": nested_leave_one_out(by_band)}
        rows.append(row)
        for b, bsc in by_band.items():
            band_auc.setdefault(f"{b[0]:g}-{b[1]:g}", {})[f"{w:g}s"] = round(_pooled_auc(bsc), 4)
        if w == threshold_window_s:
            neg = [s for k in ("shifted", "swapped") for _, s in sc[k]]
            shipped = {"threshold": eer_threshold(pos, neg), "window_s": w,
                       "band_hz": list(BAND_HZ)}
    return {"detector": kind, "clips": [t.name for t in tracks],
            "frames": {t.name: t.frames for t in tracks},
            "mouth_frames": {t.name: int(t.times.size) for t in tracks}, "rows": rows,
            "band_auc": band_auc, "shipped": shipped, "config": SyncConfig().__dict__}


def with_modes(op: OperatingPoints, syncs: dict[str, dict[str, Any]],
               default: str = "face+liveness", voice_veto_llr: float = -2.0,
               target_far: float = 1e-2, veto: dict[str, Any] | None = None,
               decisive_speech_s: float = DECISIVE_SPEECH_S,
               voice_other_margin_llr: float | None = VOICE_OTHER_MARGIN_LLR,
               voice_confirm_until_s: float | None = VOICE_CONFIRM_UNTIL_S
              ) -> OperatingPoints:
    """``op`` with the two security modes and the AV-sync measurements (one per face detector,
    ``syncs[kind]``) that set them. The HOG threshold is also the mode's plain
    ``avsync_threshold`` (what a reader that knows no detectors uses). ``decisive_speech_s``
    ``voice_other_margin_llr`` and ``voice_confirm_until_s`` (None: the rules before them) are
    face+liveness's; two-factor decides on its own minimum (2 s)."""
    if not syncs:
        raise MediaError("no AV-sync measurement to write")
    thrs = {k: float(v["shipped"]["threshold"]) for k, v in sorted(syncs.items())}
    plain = thrs.get("hog", next(iter(thrs.values())))
    why_fl = ("default: short speech is weak identity evidence (the Resemblyzer teacher has "
              "~20% EER on GRID half-clips), so the face identifies and the voice may only "
              f"veto, judged on >= {decisive_speech_s:g} s of speech at a live door (the veto is "
              "stricter the more speech it hears); AV sync stops photos and replays")
    modes = {
        "face+liveness": SecurityMode(
            "face+liveness", target_far, 0.5, plain, voice_veto_llr, why=why_fl,
            avsync_thresholds=thrs,
            voice_veto_by_length=tuple(veto["table"]) if veto is not None else (),
            voice_veto_quantile=veto["quantile"] if veto is not None else None,
            decisive_speech_s=decisive_speech_s, voice_other_margin_llr=voice_other_margin_llr,
            voice_confirm_until_s=voice_confirm_until_s),
        "two-factor": SecurityMode("two-factor", target_far, 2.0, plain, voice_veto_llr,
                                   why="face and voice must each favour the person, >= 2 s of "
                                       "speech, plus AV sync: for doors that need both factors",
                                   avsync_thresholds=thrs),
    }
    summary: dict[str, Any] = {
        "data": "GRID (7 real talking-face clips)", "band_hz": list(BAND_HZ),
        "detectors": {k: {"threshold": round(thrs[k], 4), "window_s": v["shipped"]["window_s"],
                          "clips": len(v["clips"]),
                          "auc": {f"{r['window_s']:g}s": {"shifted": round(r["auc_shifted"], 4),
                                                         "swapped": round(r["auc_swapped"], 4)}
                                  for r in v["rows"]}}
                      for k, v in sorted(syncs.items())},
        "threshold": plain}
    return replace(op, modes=modes, default_mode=default, avsync=summary)


def write_modes(op_path: Path, syncs: dict[str, dict[str, Any]],
                model_hashes: dict[str, str] | None = None,
                voice_veto_llr: float = -2.0, veto: dict[str, Any] | None = None,
                decisive_speech_s: float = DECISIVE_SPEECH_S,
                voice_other_margin_llr: float | None = VOICE_OTHER_MARGIN_LLR,
                voice_confirm_until_s: float | None = VOICE_CONFIRM_UNTIL_S
               ) -> OperatingPoints:
    """(Re)write the modes block of an operating-point file from AV-sync measurements (and a
    calibrated voice veto, ``calibration.voice_veto``)."""
    op = load_operating_points(op_path, model_hashes or {})
    new = with_modes(op, syncs, voice_veto_llr=voice_veto_llr, veto=veto,
                     decisive_speech_s=decisive_speech_s,
                     voice_other_margin_llr=voice_other_margin_llr,
                     voice_confirm_until_s=voice_confirm_until_s)
    save_operating_points(new, op_path)
    return new
