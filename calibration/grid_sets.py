"""GRID talking-face clips as score sets: the only REAL joint face+voice data (7 people here).

Each clip is cut in two halves (``Clip.split``); one half enrols (templates from up to 5 of the
best-quality frames and the half's voice, through the ``Enroller``), the other half probes.
Mixed attacks put the face of A with the voice of B; cross-modal trials score a live face
against a live voice with the bundle's PIN/FAA heads (``ModelBundle.cross_scores``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.scores import TrialScores
from calibration.trials import pair_rows
from edge_runtime.errors import EdgepinError
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import make_template


@dataclass
class LiveHalf:
    """One half of a talking-face clip, as an enrolment (templates) and as a probe (one face
    embedding from the best-quality frame, as ``Verifier`` with top_faces=1; one voice)."""

    identity: str
    half: int
    face_template: np.ndarray
    voice_template: np.ndarray
    face_probe: np.ndarray
    voice_probe: np.ndarray
    voice_seconds: float  # voiced speech in this half (its voice probe's length)


def grid_halves(bundle: ModelBundle, clips: Sequence[Any], enroller: Any
                ) -> tuple[list[LiveHalf], list[tuple[str, str]]]:
    """Both halves of every clip through the detector, quality gate, VAD and models."""
    from edge_runtime.frontend.video import decode_clip

    out, skipped = [], []
    for sample in clips:
        try:
            clip = decode_clip(sample.path)
        except EdgepinError as exc:
            skipped.append((str(sample.path), str(exc)))
            continue
        for h, part in enumerate(clip.split(clip.start + clip.duration / 2)):
            source = f"{sample.path} [{part.start:.1f}-{part.start + part.duration:.1f} s]"
            crops, freps = enroller.faces_from_frames(part.frames, source)
            try:
                speech, voiced = enroller.speech_from_audio(part.audio, source)
            except EdgepinError as exc:
                skipped.append((source, str(exc)))
                continue
            if not crops:
                skipped.append((source, "; ".join(r.reason for r in freps if not r.ok)))
                continue
            voice = bundle.embed_voice(speech)
            faces = bundle.embed_faces(crops)  # ranked best quality first
            out.append(LiveHalf(sample.identity, h, make_template(faces),
                                make_template(voice[None]), faces[0], voice, float(voiced)))
    return out, skipped


def grid_trials(bundle: ModelBundle, halves: Sequence[LiveHalf], enrol_half: int
                ) -> dict[str, TrialScores]:
    """Identity trials (probe half vs every template), mixed attacks (face of A + voice of B
    claiming A: "face-owner", or claiming B: "voice-owner") and cross-modal trials (live
    face vs live voice, genuine when both come from the same clip)."""
    tag = "fwd" if enrol_half == 0 else "rev"
    enr = {x.identity: x for x in halves if x.half == enrol_half}
    prb = {x.identity: x for x in halves if x.half != enrol_half}
    ids = sorted(set(enr) & set(prb))
    if len(ids) < 2:
        return {}
    ft = np.stack([enr[i].face_template for i in ids])
    vt = np.stack([enr[i].voice_template for i in ids])
    fp = np.stack([prb[i].face_probe for i in ids])
    vp = np.stack([prb[i].voice_probe for i in ids])
    secs = np.asarray([prb[i].voice_seconds for i in ids])
    sf, gen = pair_rows(ids, fp, ids, ft)
    sv, _ = pair_rows(ids, vp, ids, vt)
    parts = {f"grid/{tag}": TrialScores({"face": sf, "voice": sv}, gen,
                                        {"voice": np.repeat(secs, len(ids))})}
    pairs = [(a, b) for a in range(len(ids)) for b in range(len(ids)) if a != b]
    for owner, pick in (("face-owner", 0), ("voice-owner", 1)):  # whose identity is claimed
        claimed = [ab[pick] for ab in pairs]
        f_mix = np.asarray([fp[a] @ ft[c] for (a, _), c in zip(pairs, claimed, strict=True)])
        v_mix = np.asarray([vp[b] @ vt[c] for (_, b), c in zip(pairs, claimed, strict=True)])
        parts[f"grid-mixed-{owner}/{tag}"] = TrialScores(
            {"face": f_mix.astype(np.float64), "voice": v_mix.astype(np.float64)},
            np.zeros(len(pairs), bool), {"voice": np.asarray([secs[b] for _, b in pairs])})
    if bundle.cross_modal:
        cross: dict[str, list[float]] = defaultdict(list)
        same = []
        for a in range(len(ids)):
            for b in range(len(ids)):
                for k, v in bundle.cross_scores(fp[a], vp[b]).items():
                    cross[k].append(v)
                same.append(a == b)
        parts[f"grid-cross/{tag}"] = TrialScores({k: np.asarray(v) for k, v in cross.items()},
                                                 np.asarray(same))
    return parts
