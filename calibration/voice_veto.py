"""The "voice must not contradict" rule of face+liveness, calibrated on held-out people.

The face identifies; the voice may only veto. A fixed veto (calibrated LLR < -2) let 21 % of
"face of A + a stranger's voice" attempts through, while a stricter fixed one rejects real
people whose speech is short (under 1 s the voice LLR of one's OWN voice is often below 0).
So the veto follows the evidence that the amount of speech can give: at each speech length L,
the veto is the ``quantile`` (default 2 %) of the calibrated voice LLRs of held-out people's
OWN voices (probe cut to L seconds of speech vs their template): by construction it rejects
about that share of genuine voices at every length, and as much of everyone else as the voice
model can tell apart at that length.

Templates are made as enrolment makes them (the first utterances until ``ENROL_VOICE_S`` of
voiced speech, at least 3: ``enrol_voice_count``; voiced parts, normalised mean); probes are
the speaker's other utterances, each with the speaker's next ones joined after it, as a person
who keeps speaking at a live door gives them: a trial of L seconds is the first L seconds of
that speech. Until 2026-12-03 lengths up to 3 s were cut from one utterance only, which left
26-27 trials at 3 s for each half of the attack benchmark's 30 people (53 of all 30): the 2 %
quantile was the lowest one or two, from the few people whose utterances hold 3 s of speech,
not the speech the live door's first look (3 s) hears. Joined: 157 trials at 3 s, and the
cross-fitted 3 s veto varies less between halves (door_v9: sd 0.73 -> 0.54 LLR over 20 halves).
A probe long enough gives the same trial either way. The people who set the veto must not be
the people it is evaluated on: ``benchmarks/attacks.py`` sets it on one half of its people and measures
on the other (and the reverse); the shipped table uses all held-out speakers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.access.enroll import ENROL_VOICE_S, enrol_voice_count
from edge_runtime.errors import ConfigError, EdgepinError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import OperatingPoints

# up to 5 s: a person at a live door who keeps speaking. Own voices score higher the more speech
# there is, so the veto at 4 and 5 s is stricter than at 3 s; without them the table's 3 s end
# held for any longer speech.
LENGTHS_S = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
QUANTILE = 0.02


def genuine_voice_llrs(bundle: ModelBundle, op: OperatingPoints, speakers: Sequence[Any],
                       gate: SpeechGate, lengths: Sequence[float] = LENGTHS_S,
                       max_probes: int = 8, enrol_s: float = ENROL_VOICE_S
                       ) -> dict[float, np.ndarray]:
    """Calibrated voice LLR of each speaker's own probes vs their own template, per speech
    length: the first L seconds of a probe utterance and the speaker's next ones joined.
    ``speakers``: ``{"name", "utterances": [paths]}`` (the first ones enrol, as
    ``enroll_people`` enrols them: until ``enrol_s`` of voiced speech, at least 3 utterances,
    never the last)."""
    per = genuine_voice_llrs_by_speaker(bundle, op, speakers, gate, lengths, max_probes, enrol_s)
    return pool_llrs(per, [sp["name"] for sp in speakers], lengths)


def pool_llrs(per_speaker: dict[str, dict[float, np.ndarray]], names: Sequence[str],
              lengths: Sequence[float] = LENGTHS_S) -> dict[float, np.ndarray]:
    """The LLRs of ``names`` (those that gave any) joined per speech length: one set of people's
    computed LLRs serves every halving of them (``benchmarks/attacks.py``)."""
    out: dict[float, list[np.ndarray]] = {float(x): [] for x in lengths}
    for name in names:
        for x, v in per_speaker.get(name, {}).items():
            out[float(x)].append(v)
    return {x: np.concatenate(v) if v else np.zeros(0) for x, v in out.items()}


def genuine_voice_llrs_by_speaker(
        bundle: ModelBundle, op: OperatingPoints, speakers: Sequence[Any], gate: SpeechGate,
        lengths: Sequence[float] = LENGTHS_S, max_probes: int = 8,
        enrol_s: float = ENROL_VOICE_S) -> dict[str, dict[float, np.ndarray]]:
    """``genuine_voice_llrs`` kept per speaker name (a speaker without two usable recordings
    is left out)."""
    cal = op.fuser.calibrations.get("voice")
    if cal is None:
        raise ConfigError(f"{op.source or 'operating points'} has no voice calibration")
    result: dict[str, dict[float, np.ndarray]] = {}
    for sp in speakers:
        utts = [Path(u) for u in sp["utterances"]]
        if len(utts) < 2:
            continue
        out: dict[float, list[float]] = {float(x): [] for x in lengths}
        speech = []
        for u in utts:
            try:
                wav = load_audio(u, TARGET_SR)
            except EdgepinError:
                speech.append(None)
                continue
            speech.append(gate.extract_speech(wav, gate.speech_segments(wav)))
        k = enrol_voice_count([0.0 if s is None else s.size / TARGET_SR
                               for s in speech[:-1]], enrol_s)
        enrol = [s for s in speech[:k] if s is not None and s.size]
        if not enrol:
            continue
        t = np.mean([bundle.embed_voice(s) for s in enrol], axis=0)
        t /= max(float(np.linalg.norm(t)), 1e-12)
        probes = [s for s in speech[k:] if s is not None]
        for j in range(min(len(probes), max_probes)):
            joined = np.concatenate(probes[j:])  # probe j, then the speaker's next ones
            for x in out:
                n = int(round(x * TARGET_SR))
                if joined.size < n:
                    continue
                score = float(bundle.embed_voice(joined[:n]) @ t)
                out[x].append(float(cal.llr([score], x)[0]))
        result[sp["name"]] = {x: np.asarray(v) for x, v in out.items()}
    return result


def veto_table(llrs: dict[float, np.ndarray], quantile: float = QUANTILE,
               min_trials: int = 20) -> tuple[tuple[float, float], ...]:
    """(seconds, LLR) pairs: at each length with enough genuine trials, their ``quantile``."""
    if not 0 < quantile < 0.5:
        raise ConfigError(f"veto quantile must be in (0, 0.5), got {quantile}")
    rows = tuple((float(x), float(np.quantile(v, quantile))) for x, v in sorted(llrs.items())
                 if v.size >= min_trials)
    if not rows:
        raise ConfigError(f"no speech length has >= {min_trials} genuine voice trials")
    return rows


def held_out_speakers(data: Path, bundle: ModelBundle) -> list[dict[str, Any]]:
    """speechocean762 speakers the voice student never trained on (its test and val people)."""
    from calibration.score_sets import model_split

    return held_out_speakers_of_split(data, model_split(bundle, "voice"))


def held_out_speakers_of_split(data: Path, split: dict[str, Any]) -> list[dict[str, Any]]:
    """The test and val speakers of ``split`` (``test_fraction``, ``val_fraction``, ``seed``):
    a checkpoint that is not in a bundle yet has the same people as a shipped student."""
    return speakers_of_split(data, split, ("test", "val"))


def speakers_of_split(data: Path, split: dict[str, Any],
                      parts: tuple[str, ...]) -> list[dict[str, Any]]:
    """The speechocean762 speakers of ``split``'s ``parts`` with their recordings; ``("train",)``
    for a model that never trained on them (the teacher), where a door rule can be developed
    off the test people."""
    from train.datasets import SpeechFolder, holdout_split

    so = SpeechFolder(Path(data) / "speechocean762")
    split_ids = holdout_split(so.identities(), split["test_fraction"], split["val_fraction"],
                              split["seed"])
    keep = set().union(*(split_ids[p] for p in parts))
    clips: dict[str, list[str]] = {}
    for smp in so.samples:
        if smp.identity in keep:
            clips.setdefault(smp.identity, []).append(str(smp.path))
    return [{"name": k, "utterances": sorted(v)} for k, v in sorted(clips.items())]
