"""The decision rule: who is this, is it really them, and why (not).

The candidate is the enrolled identity with the best combined face+voice score. Access is
granted only when (1) neither modality points confidently to SOMEONE ELSE (its nearest template
is another person whom that modality alone would accept), (2) the candidate's scores pass the
operating point (fused LLR over the threshold at the target FAR, and each modality's own
calibrated LLR for the candidate above 0, i.e. each modality on its own favours "same
person") or, without an operating point, every PROVISIONAL per-score threshold. The cross-modal
scores (PIN cosine / FAA probability) are reported but hold no veto: the heads were trained on 7
real people plus artificial pairings, which can teach gender at most, and they denied real
people replaying their own clip.

With a security mode from the operating-point file (``decide_mode``), the rule is the mode's:
``face+liveness`` (the face identifies, audio-visual sync confirms, the voice must not
contradict: no calibrated veto against the candidate, and no other enrolled person whom the
voice favours over the candidate by the mode's likelihood-ratio margin or, from the decisive
speech on, whose voice alone would be accepted above the candidate's; a grant on a voice that
does not confirm the candidate on its own carries ``hold_until_s``, the speech a live door
waits for) or ``two-factor`` (the rule above, >= 2 s of speech, and AV sync).

Rule (1) is deliberately not "both nearest templates are the same person": with a large
gallery a genuine voice often has a slightly nearer stranger, and demanding rank-1 voice
identification would lock real users out; what must never pass is a voice (or face) that is
positively recognised as another enrolled person. A face of A shown with the voice of B fails
(1) or (2); in ``face+liveness`` the voice check and the AV sync stop it.
Pure numpy: unit-testable with hand-made scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.avsync import SyncResult
from edge_runtime.models import PROVISIONAL_DEFAULTS, Thresholds
from edge_runtime.operating_points import (
    Calibration,
    OperatingPoints,
    SecurityMode,
    subset_name,
)

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
    sync: SyncResult | None = None
    speech_s: float = 0.0


@dataclass(frozen=True)
class Outcome:
    granted: bool
    candidate: str | None
    reason: str
    scores: dict[str, float | None]
    face_match: str | None
    voice_match: str | None
    liveness: str
    mode: str = ""
    # failures that more media cannot fix (e.g. the face is someone else's): a sequential
    # loop stops on these at once and keeps collecting on the others
    final: bool = True
    # a grant that a live look holds until this much speech was heard (the voice did not
    # confirm the candidate on its own, see ``SecurityMode.voice_confirm_until_s``); 0: none
    hold_until_s: float = 0.0


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
        liveness = ev.sync.describe() if ev.sync is not None else \
            (f"cross-modal ({', '.join(sorted(ev.cross))}, no veto) + same identity" if ev.cross
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
    if failures:
        unique = list(dict.fromkeys(failures))  # one reason once, however many checks found it
        return Outcome(False, candidate, "; ".join(unique), scores, face_match, voice_match,
                       liveness)
    if both:
        reason = f"face and voice both match {candidate}"
        if ev.cross:  # reported, no veto (see the module docstring)
            reason += "; cross-modal " + ", ".join(
                f"{name} {value:.2f} {'agrees' if ok else 'disagrees (no veto)'}"
                for name, value in sorted(ev.cross.items())
                for ok in [_cross_check(name, value, thresholds, op, target_far)[0]])
        else:
            reason += "; cross-modal check unavailable"
    else:
        reason = f"UNSAFE mode, no liveness check: {present[0]} matches {candidate}; {liveness}"
    if thresholds.provisional:
        reason += " [PROVISIONAL thresholds]"
    return Outcome(True, candidate, reason, scores, face_match, voice_match, liveness)


def _liveness_failure(ev: Evidence, mode: SecurityMode) -> tuple[str | None, bool]:
    """(why the AV-sync check fails or None, whether more media could change it)."""
    if mode.liveness != "required":
        return None, True
    sync = ev.sync
    if sync is None:
        return "liveness: AV sync not available (needs face frames and audio)", False
    if not sync.measured:
        # a still picture stays still; too few frames can still grow
        return f"liveness: {sync.reason}", "does not move" not in sync.reason
    if sync.score <= mode.avsync_threshold:
        # sequential: below the reject line the attempt ends; between it and the threshold
        # more frames and speech may still settle it either way
        return (f"liveness: the face is not the one speaking (AV sync {sync.score:.2f} <= "
                f"{mode.avsync_threshold:.2f}; audio peaks at lag "
                f"{sync.peak_lag_s * 1e3:+.0f} ms)"), \
            sync.score > mode.avsync_threshold - mode.avsync_margin
    return None, True


def recognised_as_other(other: str | None, other_score: float, own: float | None,
                         cal: Calibration | None, mode: SecurityMode, thresholds: Thresholds,
                         op: OperatingPoints, speech_s: float) -> str | None:
    """Why the voice is recognised as ``other`` rather than the candidate (text appended to
    the reason), or None.

    Margin: the calibrated LLR of ``other`` exceeds the candidate's by the mode's margin, a
    likelihood ratio between the two people, at any speech length. Alone: ``other``'s voice
    alone is accepted at the mode's FAR and scores above the candidate's; it is tried against
    every other enrolled person, so it denies genuine people, more the larger the gallery and
    the shorter the speech (``benchmarks/voice_rules.md``: 4-15 % at 0.64 s, 1-3 % at 3 s, with
    galleries of 7-30, on top of the veto). From the decisive speech on it is kept: there it
    costs least and still stops a face of A with the voice of enrolled B that the margin lets
    through. With a margin it applies from the decisive speech on; without one (files before
    it), at every length."""
    if other is None:
        return None
    margin = mode.voice_other_margin_llr
    if margin is not None and own is not None and cal is not None:
        diff = float(cal.llr([other_score])[0] - cal.llr([own])[0])
        if diff > margin:
            return f" (LLR {diff:+.2f} over {own:.2f}, > {margin:g})"
        if speech_s < mode.decisive_speech_s:
            return None
    if (own is None or other_score > own) and \
            _accepts_alone("voice", other_score, thresholds, op, mode.target_far):
        return " (accepted on its own, above the candidate)"
    return None


def decide_mode(ev: Evidence, thresholds: Thresholds, op: OperatingPoints,
                mode: SecurityMode) -> Outcome:
    """The decision of one security mode (see the module docstring); states the mode."""
    live_fail, live_open = _liveness_failure(ev, mode)
    live_text = ev.sync.describe() if ev.sync is not None else "AV sync not available"
    if mode.liveness != "required":
        live_text += " (reported only: liveness not required)"
    if mode.name == "two-factor":
        out = decide(ev, thresholds, op, mode.target_far)
        failures = [out.reason] if not out.granted else []
        final = bool(failures) and out.candidate is not None and "match different" in out.reason
        if ev.speech_s < mode.min_speech_s:
            failures.append(f"two-factor needs {mode.min_speech_s:g} s of speech, heard "
                            f"{ev.speech_s:.2f} s")
        if live_fail:
            failures.append(live_fail)
            final = final or not live_open
        granted = not failures
        reason = out.reason if granted else "; ".join(failures)
        scores = dict(out.scores)
        if ev.sync is not None and ev.sync.measured:
            scores["avsync"] = ev.sync.score
        return Outcome(granted, out.candidate, f"[two-factor] {reason}", scores,
                       out.face_match, out.voice_match, live_text, mode.name,
                       final=granted or final)
    # face+liveness
    scores: dict[str, float | None] = {"face": None, "voice": None}
    scores.update({k: float(v) for k, v in ev.cross.items()})
    if ev.sync is not None and ev.sync.measured:
        scores["avsync"] = ev.sync.score
    voice_match = ev.voice.best()[0] if ev.voice is not None else None
    if ev.face is None or len(ev.face.names) == 0:
        why = f"no usable face ({ev.face_missing})" if ev.face is None else \
            "nobody is enrolled with the loaded face model"
        return Outcome(False, None, f"[face+liveness] {why}", scores, None, voice_match,
                       live_text, mode.name, final=ev.face is not None)
    candidate, face_score = ev.face.best()
    scores["face"] = face_score
    failures: list[str] = []
    final = False
    d = op.decide({"face": face_score}, mode.target_far)
    if not d.accepted:
        failures.append(f"face does not identify anyone: best {candidate} {face_score:.2f}, "
                        f"LLR {d.llr:.2f} <= {d.threshold:.2f} at FAR {mode.target_far:g}")
    if ev.voice is not None and len(ev.voice.names):
        other, other_score = _runner_up(ev.voice, candidate)
        pos = {n: i for i, n in enumerate(ev.voice.names)}
        own = float(ev.voice.scores[pos[candidate]]) if candidate in pos else None
        scores["voice"] = own
        cal = op.fuser.calibrations.get("voice")
        recognised = recognised_as_other(other, other_score, own, cal, mode, thresholds, op,
                                          ev.speech_s)
        if recognised is not None:
            failures.append(f"the voice is recognised as {other} ({other_score:.2f}), not "
                            f"{candidate}{recognised}")
            final = ev.speech_s >= mode.decisive_speech_s  # before it, more speech may differ
        if own is not None and cal is not None:
            llr = float(cal.llr([own])[0])
            veto = mode.voice_veto_at(ev.speech_s)
            if llr < veto:
                failures.append(f"the voice contradicts {candidate} ({own:.2f}, calibrated LLR "
                                f"{llr:.2f} < {veto:.2f} at {ev.speech_s:.1f} s of speech)")
                # final from the decisive speech on: a door that kept looking would give a
                # voice that keeps talking a new chance at the veto at every look
                final = final or ev.speech_s >= mode.decisive_speech_s
    if live_fail:
        failures.append(live_fail)
        final = final or not live_open
    if failures:
        return Outcome(False, candidate, "[face+liveness] " + "; ".join(failures), scores,
                       candidate, voice_match, live_text, mode.name,
                       final=final or not d.accepted)
    voice_text, hold = "not checked", 0.0
    if scores["voice"] is not None:
        voice_text = "does not contradict"
        if _accepts_alone("voice", float(scores["voice"]), thresholds, op, mode.target_far):
            voice_text = "confirms on its own"
        elif mode.voice_confirm_until_s is not None:
            hold = float(mode.voice_confirm_until_s)
            voice_text += f" (does not confirm on its own: a live door listens up to {hold:g} s)"
    reason = (f"[face+liveness] face identifies {candidate} ({face_score:.2f}, LLR {d.llr:.2f} "
              f"> {d.threshold:.2f} at FAR {mode.target_far:g}); {live_text}; voice "
              + voice_text)
    return Outcome(True, candidate, reason, scores, candidate, voice_match, live_text, mode.name,
                   hold_until_s=hold)
