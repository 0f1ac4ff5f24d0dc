"""The decision rule: who is this, is it really them, and why (not).

The candidate is the enrolled identity with the best combined face+voice score. Access is
granted only when (1) neither modality points confidently to SOMEONE ELSE (its nearest template
is another person whom that modality alone would accept), (2) the candidate's scores pass the
operating point (fused LLR over the threshold at the target FAR, and each modality's own
calibrated LLR for the candidate above 0, i.e. each modality on its own favours "same
person") or, without an operating point, every PROVISIONAL per-score threshold, and (3) the
live voice matches the live face (cross-modal PIN cosine / FAA probability over its threshold)
when the bundle has the cross-modal heads.

Rule (1) is deliberately not "both nearest templates are the same person": with a large
gallery a genuine voice often has a slightly nearer stranger, and demanding rank-1 voice
identification would lock real users out; what must never pass is a voice (or face) that is
positively recognised as another enrolled person. A face of A shown with the voice of B fails
(1) or (2) even without the cross-modal heads, and (3) with them.
Pure numpy: unit-testable with hand-made scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.models import PROVISIONAL_DEFAULTS, Thresholds
from edge_runtime.operating_points import OperatingPoints, subset_name

IDENTITY = ("face", "voice")


@dataclass(frozen=True)
class Matches:
    """Cosine of a live embedding to every enrolled template of one modality."""

    names: Sequence[str]
    scores: np.ndarray

    @classmethod
    def of(cls, scores: Mapping[str, float]) -> Matches:
        names = sorted(scores)
        return cls(names, np.array([scores[n] for n in names], dtype=np.float64))

    def best(self) -> tuple[str | None, float]:
        """Nearest identity (ties: first name in order), or (None, nan) when nobody."""
        if len(self.names) == 0:
            return None, math.nan
        i = int(np.argmax(self.scores))
        return self.names[i], float(self.scores[i])


@dataclass(frozen=True)
class Evidence:
    """Scores of one attempt per modality (None: modality absent from the attempt) and the
    live cross-modal scores."""

    face: Matches | None
    voice: Matches | None
    cross: Mapping[str, float] = field(default_factory=dict)
    face_missing: str | None = None
    voice_missing: str | None = None


@dataclass(frozen=True)
class Outcome:
    granted: bool
    candidate: str | None
    reason: str
    scores: dict[str, float | None]
    face_match: str | None
    voice_match: str | None
    liveness: str


def _aligned(present: list[Matches]) -> tuple[list[str], list[np.ndarray]]:
    """Names enrolled in every present modality, and each modality's scores for them."""
    first = list(present[0].names)
    if all(list(m.names) == first for m in present[1:]):  # the usual case: both modalities
        return first, [np.asarray(m.scores, dtype=np.float64) for m in present]
    common = sorted(set(first).intersection(*(set(m.names) for m in present[1:])))
    cols = []
    for m in present:
        pos = {n: i for i, n in enumerate(m.names)}
        cols.append(np.asarray(m.scores, dtype=np.float64)[[pos[n] for n in common]])
    return common, cols


def _combined(n: int, cols: Mapping[str, np.ndarray], cross: Mapping[str, float],
              thresholds: Thresholds, op: OperatingPoints | None) -> np.ndarray:
    """Per-candidate score used only to pick the candidate (vectorised: 10 000 names)."""
    if op is not None:
        avail = {**cols, **{k: np.full(n, v) for k, v in cross.items()}}
        subset = op.fuser.subset_for([m for m in avail if m in op.fuser.calibrations])
        return op.fuser.score_many({m: avail[m] for m in subset}, subset)
    return sum(cols[m] - thresholds.values[m] for m in cols)


def _cross_check(name: str, score: float, thresholds: Thresholds, op: OperatingPoints | None,
                 target_far: float) -> tuple[bool, str]:
    """(passed, the comparison made) for one cross-modal score; a raw score is compared
    with a raw threshold, an LLR with an LLR threshold, never one with the other."""
    if name in thresholds.values:
        thr = thresholds.values[name]
        return score > thr, f"{name} {score:.2f} <= {thr:.2f}"
    if op is not None and name in op.fuser.calibrations:
        try:
            d = op.decide({name: score}, target_far)
            return d.accepted, (f"{name} {score:.2f}: LLR {d.llr:.2f} <= {d.threshold:.2f} "
                                f"at FAR {target_far:g}")
        except ConfigError:
            llr = float(op.fuser.calibrations[name].llr([score])[0])
            return llr > 0.0, f"{name} {score:.2f}: calibrated LLR {llr:.2f} <= 0"
    thr = PROVISIONAL_DEFAULTS[name]
    return score > thr, f"{name} {score:.2f} <= {thr:.2f} PROVISIONAL"


def _accepts_alone(m: str, score: float, thresholds: Thresholds, op: OperatingPoints | None,
                   target_far: float) -> bool:
    """Would modality ``m`` on its own accept this score at the target FAR?"""
    if op is None or m not in op.fuser.calibrations:
        return score > thresholds.values[m]
    try:
        return op.decide({m: score}, target_far).accepted
    except ConfigError:  # no single-modality threshold at this FAR: the Bayes point
        return float(op.fuser.calibrations[m].llr([score])[0]) > 0.0


def _runner_up(matches: Matches, candidate: str) -> tuple[str | None, float]:
    """Nearest identity other than ``candidate`` (None when nobody else is enrolled)."""
    best, score = None, -math.inf
    for name, value in zip(matches.names, matches.scores, strict=True):
        if name != candidate and value > score:
            best, score = name, float(value)
    return best, score


def decide(ev: Evidence, thresholds: Thresholds, op: OperatingPoints | None,
           target_far: float) -> Outcome:
    """Apply the rule above; every denial says which check failed, with the numbers."""
    present = [m for m in IDENTITY if getattr(ev, m) is not None]
    if not present:
        raise ConfigError("decide() needs a face or a voice score")
    face_match, face_best = ev.face.best() if ev.face is not None else (None, math.nan)
    voice_match, voice_best = ev.voice.best() if ev.voice is not None else (None, math.nan)
    names, columns = _aligned([getattr(ev, m) for m in present])
    cols = dict(zip(present, columns, strict=True))
    scores: dict[str, float | None] = {m: None for m in IDENTITY}
    scores.update({k: float(v) for k, v in ev.cross.items()})
    if not names:
        enrolled = any(len(getattr(ev, m).names) for m in present)
        what = ("nobody is enrolled with the loaded models (empty gallery, or enrolled with "
                "other models: re-enrol)") if not enrolled else \
            f"no enrolled identity has a {' and a '.join(present)} template"
        return Outcome(False, None, what, scores, face_match, voice_match, "")
    i = int(np.argmax(_combined(len(names), cols, ev.cross, thresholds, op)))
    candidate = names[i]
    for m in present:
        scores[m] = float(cols[m][i])
    both = len(present) == 2
    if both:
        liveness = (f"cross-modal ({', '.join(sorted(ev.cross))}) + same identity" if ev.cross
                    else "same identity for face and voice (cross-modal check unavailable)")
    else:
        missing = ev.voice_missing if present == ["face"] else ev.face_missing
        liveness = f"not checked: {present[0]} only ({missing})"

    failures: list[str] = []
    if both:
        for m in present:
            other, other_score = _runner_up(getattr(ev, m), candidate)
            if (other is not None and other_score > scores[m]  # type: ignore[operator]
                    and _accepts_alone(m, other_score, thresholds, op, target_far)):
                failures.append(
                    f"face and voice match different people (face: {face_match} "
                    f"{face_best:.2f}, voice: {voice_match} {voice_best:.2f}; the {m} alone "
                    f"would accept {other})")
                break
    if op is not None:
        # a cross-modal score the calibration never saw is left out of the fusion (it is
        # still checked below); face/voice without a calibration is an error (stale file)
        fused = [*present, *(m for m in ev.cross if m in op.fuser.calibrations)]
        d = op.decide({m: scores[m] for m in fused}, target_far)
        if not d.accepted:
            failures.append(f"not recognised as {candidate}: fused LLR {d.llr:.2f} <= "
                            f"{d.threshold:.2f} ({subset_name(d.modalities)} at FAR {target_far:g})")
        if both:  # a mixed attack: one strong modality must not carry a contradicting one
            for m in present:
                cal = op.fuser.calibrations.get(m)
                llr = float(cal.llr([scores[m]])[0]) if cal is not None else math.inf
                if llr <= 0.0:
                    failures.append(f"{m} does not support {candidate} ({scores[m]:.2f}, "
                                    f"calibrated LLR {llr:.2f} <= 0)")
    else:
        for m in present:
            thr = thresholds.values[m]
            if scores[m] <= thr:  # type: ignore[operator]
                failures.append(f"{m} does not match {candidate} ({scores[m]:.2f} <= {thr:.2f})")
    if both:
        for name, value in sorted(ev.cross.items()):
            ok, compared = _cross_check(name, value, thresholds, op, target_far)
            if not ok:
                failures.append(f"live voice does not match live face ({compared})")
    if failures:
        unique = list(dict.fromkeys(failures))  # one reason once, however many checks found it
        return Outcome(False, candidate, "; ".join(unique), scores, face_match, voice_match,
                       liveness)
    if both:
        reason = f"face and voice both match {candidate}"
        reason += "; live voice matches live face" if ev.cross else \
            "; cross-modal check unavailable"
    else:
        reason = f"UNSAFE mode, no liveness check: {present[0]} matches {candidate}; {liveness}"
    if thresholds.provisional:
        reason += " [PROVISIONAL thresholds]"
    return Outcome(True, candidate, reason, scores, face_match, voice_match, liveness)
