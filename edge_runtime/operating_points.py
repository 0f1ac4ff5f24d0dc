"""Operating points: the calibration, fusion weights and thresholds a device ships with.

A threshold is only valid for the exact models whose scores it was measured on, so the file
records the sha256 of every model it belongs to and the loader refuses it when any loaded
model differs (a retrained or re-quantised model shifts the score distributions and would
silently change the FAR). A newer schema, a hand edit or a truncated file is refused too: the
file carries a checksum of its content. The runtime never invents a threshold; it reads one
from here or stops with a message saying how to regenerate the file.

Only applying lives here (no fitting, no torch, numpy only): ``calibration/`` fits the
numbers and writes the file with ``save_operating_points``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge_runtime.atomic import write_atomic
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frontend.features import FACE_TTA

SCHEMA_VERSION = 2  # 2: a calibration may depend on the probe's speech length (by_seconds)
FILE_FORMAT = "edgepin-operating-points"
REGENERATE = "edgepin calibrate --models DIR --data ... --out {path}"
_PROB_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """Raw score -> log-likelihood ratio: ``slope * f(score) + offset``.

    ``transform`` is "identity" for cosine-like scores or "logit" for scores that are already
    probabilities (e.g. a cross-modal classifier), whose logit is the natural linear scale.

    ``by_seconds``: rows (seconds, slope, offset), sorted, for a score whose meaning depends on
    how much speech the probe held (0.7 s of speech says less than 2 s, so the same cosine is
    weaker evidence). Slope and offset are interpolated linearly in log(seconds) and held at the
    ends. ``slope``/``offset`` are those of the reference length (what the live loop decides
    on) and apply when no length is given.
    """

    slope: float
    offset: float
    transform: str = "identity"
    by_seconds: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "logit"):
            raise ConfigError(f"unknown calibration transform {self.transform!r}")
        secs = [r[0] for r in self.by_seconds]
        if any(len(r) != 3 for r in self.by_seconds) or any(x <= 0 for x in secs) or \
                any(b <= a for a, b in zip(secs, secs[1:], strict=False)):
            raise ConfigError(f"by_seconds rows must be (seconds > 0, slope, offset) with "
                              f"increasing seconds, got {self.by_seconds}")

    def _params(self, seconds: Any) -> tuple[Any, Any]:
        if seconds is None or not self.by_seconds:
            return self.slope, self.offset
        table = np.asarray(self.by_seconds, dtype=np.float64)
        x = np.log(np.maximum(np.asarray(seconds, dtype=np.float64), 1e-3))
        logs = np.log(table[:, 0])
        return np.interp(x, logs, table[:, 1]), np.interp(x, logs, table[:, 2])

    def at(self, seconds: float | None) -> Calibration:
        """This calibration for a probe of ``seconds`` of speech (None: the reference)."""
        if seconds is None or not self.by_seconds:
            return self
        slope, offset = self._params(float(seconds))
        return Calibration(float(slope), float(offset), self.transform)

    def features(self, scores: Any) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.transform == "logit":
            p = np.clip(s, _PROB_EPS, 1 - _PROB_EPS)
            return np.log(p) - np.log1p(-p)
        return s

    def llr(self, scores: Any, seconds: Any = None) -> np.ndarray:
        """Natural-log LLR of each score (vectorised; ``seconds``: speech length of each probe,
        used when the calibration has a ``by_seconds`` table)."""
        slope, offset = self._params(seconds)
        return slope * self.features(scores) + offset


@dataclass(frozen=True)
class SubsetFusion:
    """Logistic fusion of the calibrated LLRs of one set of modalities: ``w . llr + bias``."""

    weights: Mapping[str, float]
    bias: float

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self.weights)


def subset_name(modalities: Iterable[str]) -> str:
    """Canonical text for a modality set, e.g. ``face+voice``."""
    return "+".join(sorted(modalities))


@dataclass(frozen=True)
class Fuser:
    """Per-modality calibrations plus one fusion per available-modality subset.

    Missing-modality rule: the scores that are present (not None, finite) choose the subset;
    if that exact subset was not trained, the largest trained subset contained in it is used
    (ties broken by name), so an extra optional score is ignored rather than guessed at.
    """

    calibrations: Mapping[str, Calibration]
    subsets: Mapping[frozenset[str], SubsetFusion]

    def subset_for(self, present: Iterable[str]) -> frozenset[str]:
        have = frozenset(present)
        unknown = have - set(self.calibrations)
        if unknown:
            raise ConfigError(
                f"no calibration for modality {sorted(unknown)}; known: {sorted(self.calibrations)}"
            )
        usable = [s for s in self.subsets if s <= have]
        if not usable:
            trained = ", ".join(subset_name(s) for s in self.subsets) or "none"
            raise ConfigError(
                f"no fusion trained for the present scores {sorted(have) or '(none)'}; "
                f"trained subsets: {trained}"
            )
        return min(usable, key=lambda s: (-len(s), subset_name(s)))

    def score(self, scores: Mapping[str, float | None]) -> float:
        """Fused LLR of one trial from raw per-modality scores (None = modality missing)."""
        present = {
            m: float(v) for m, v in scores.items() if v is not None and math.isfinite(float(v))
        }
        subset = self.subset_for(present)
        return float(self.score_many({m: [present[m]] for m in subset}, subset)[0])

    def score_many(self, scores: Mapping[str, Any], subset: Iterable[str],
                   seconds: Mapping[str, Any] | None = None) -> np.ndarray:
        """Fused LLRs of many trials that all have every modality of ``subset`` (``seconds``:
        per modality, the speech length of each probe, where a calibration depends on it)."""
        fusion = self.subsets[frozenset(subset)]
        total = np.full(np.asarray(scores[next(iter(fusion.weights))]).shape, fusion.bias)
        for m, w in fusion.weights.items():
            total = total + w * self.calibrations[m].llr(scores[m], (seconds or {}).get(m))
        return total

    def at(self, seconds: Mapping[str, float | None]) -> Fuser:
        """This fuser for one probe whose modalities hold ``seconds`` of signal each."""
        cals = {m: c.at(seconds.get(m)) for m, c in self.calibrations.items()}
        return Fuser(cals, self.subsets)


@dataclass(frozen=True)
class ThresholdPoint:
    """A threshold on the fused LLR of one subset at one target FAR, with its uncertainty.

    Decision rule: accept iff fused LLR > threshold. Intervals are bootstrap percentile
    intervals: ``threshold_ci`` of the threshold re-chosen on resampled impostors,
    ``far_ci`` of the FAR this threshold would show on another impostor sample, ``frr_ci`` of
    the FRR including the threshold's own uncertainty. ``threshold`` is None with a ``reason``
    when the target is below ~3/n impostors (not measurable).
    """

    modalities: tuple[str, ...]
    target_far: float
    threshold: float | None
    achieved_far: float | None
    frr: float | None
    threshold_ci: tuple[float, float] | None
    far_ci: tuple[float, float] | None
    frr_ci: tuple[float, float] | None
    n_genuine: int
    n_impostor: int
    n_bootstrap: int
    confidence: float
    seed: int
    reason: str | None = None
    # The FAR another group of PEOPLE shows with this threshold (person-level prediction
    # interval): impostor trials share people, so ``far_ci`` (trials resampled) is narrower
    # than what a new population sees. None when not computed.
    far_pi_people: tuple[float, float] | None = None
    # how the impostor set was made when not the plain fused trials (e.g. face+voice as the
    # product of the face and voice impostor sets, see calibration/product.py); None: plain
    method: str | None = None

    @property
    def measurable(self) -> bool:
        return self.threshold is not None


# the speech on which the default mode (face+liveness), as `edgepin calibrate-modes` writes it,
# decides a live attempt: its voice veto is calibrated per length (2% of own voices rejected at
# each) and is far stricter at 3 s than at 2 s, so a stranger who wears an enrolled face and
# talks is stopped more often for one second more of speech (benchmarks/attacks.md, live door
# rows). `SecurityMode.decisive_speech_s` keeps 2 s for files written before it was stated.
DECISIVE_SPEECH_S = 3.0

# face+liveness's "the voice is recognised as someone else": the voice favours another enrolled
# person over the candidate by this calibrated log-likelihood ratio (LLR(other) -
# LLR(candidate), length-calibrated, e^2 ~ 7x), at any speech length; and, from the decisive
# speech on, also when that person's voice alone would be accepted at the mode's FAR above the
# candidate's (the rule before, at every length). That rule is tried against every other
# enrolled person: it denies genuine people the veto lets through, more the larger the gallery
# and the shorter the speech (GRID lbax4n at 0.64 s in the demo; held-out speechocean762,
# benchmarks/voice_rules.md: 4-15 % at 0.64 s, 1-3 % at 3 s); from the decisive speech on it
# costs least and still stops attackers that the margin lets through (benchmarks/attacks.md).
# `SecurityMode.voice_other_margin_llr` is None (the rule before, at every length) for files
# that do not state it.
VOICE_OTHER_MARGIN_LLR = 2.0

# face+liveness at a live door: a look grants at the decisive speech only when the voice on its
# own accepts the candidate (at the mode's FAR); a voice that merely does not contradict keeps
# the door listening ("keep speaking"), facing the veto at every look, until this much speech.
# The veto is stricter the more speech it hears (own voices score higher), so a stranger whose
# voice got past it at 3 s is judged again on more; people whose voice confirms them at once
# (most) wait no longer. Measured at the attack benchmark's live door, per 1000 attempts: 8 more
# genuine people denied, 7 more strangers' voices stopped; a close trade, kept on the secure side
# (docs/security_modes.md). `SecurityMode.voice_confirm_until_s` is None (no such wait) for
# files that do not state it.
VOICE_CONFIRM_UNTIL_S = 5.0


@dataclass(frozen=True)
class Decision:
    accepted: bool
    llr: float
    modalities: tuple[str, ...]
    threshold: float


MODE_NAMES = ("face+liveness", "two-factor")


@dataclass(frozen=True)
class SecurityMode:
    """How a decision is taken, with the numbers it needs (measured, see ``calibration/modes``).

    ``face+liveness``: the face identifies at ``target_far``, audio-visual sync confirms that
    this face is the one speaking (score > ``avsync_threshold``), and the voice must not
    contradict: it must not positively recognise someone else, and its calibrated LLR for the
    candidate must stay above ``voice_veto_llr`` (strong evidence AGAINST the candidate).
    ``two-factor``: face and voice each support the candidate (calibrated LLR > 0), the fused
    face+voice LLR passes its threshold at ``target_far``, with at least ``min_speech_s`` of
    speech; AV sync is required too. ``liveness``: "required", or "report" (scored and shown,
    never deciding: only for measuring the identity part alone, e.g. on still images).
    """

    name: str
    target_far: float
    min_speech_s: float
    avsync_threshold: float
    voice_veto_llr: float = -2.0
    liveness: str = "required"
    # sequential decisions: an AV-sync score below threshold - margin ends the attempt at
    # once; between the two the loop keeps collecting until its time limit
    avsync_margin: float = 1.0
    why: str = ""
    # the AV-sync threshold measured with each face detector ("hog", "cnn"): the detectors
    # give different boxes, the 68 landmarks and so the sync score move with them. Empty (a
    # file written before this was measured per detector): ``avsync_threshold`` is HOG's.
    avsync_thresholds: Mapping[str, float] = field(default_factory=dict)
    # "voice must not contradict", calibrated: (speech seconds, LLR) pairs, the LLR below
    # which only a small share of held-out people's OWN voices fall at that length (see
    # calibration/voice_veto.py); between lengths linear, outside the table its ends. Empty:
    # the fixed ``voice_veto_llr``.
    voice_veto_by_length: tuple[tuple[float, float], ...] = ()
    voice_veto_quantile: float | None = None
    # sequential looks (the live loop): a grant, or a denial because the voice is recognised as
    # someone else or contradicts the candidate, ends an attempt early only once this much
    # speech was heard; from then on each of them does (were a contradiction never final, a
    # stranger who kept talking would get a new chance at the veto at every look). Before it
    # the voice is weak evidence either way (the veto is loosest at 0.5 s), so an early grant
    # would judge a stranger's voice at the laxest veto however long they go on speaking. It is
    # also the least speech a live source decides on (`edgepin run`, refuses a lower
    # --min-speech); replayed files are decided at their end on what they hold.
    decisive_speech_s: float = 2.0
    # face+liveness: the voice is "recognised as" another enrolled person when it favours them
    # over the candidate by this calibrated LLR, or from ``decisive_speech_s`` on when that
    # person's voice alone would be accepted at ``target_far`` (see ``VOICE_OTHER_MARGIN_LLR``);
    # None: the latter at every length (the rule before)
    voice_other_margin_llr: float | None = None
    # face+liveness, live looks: a grant before this much speech needs the voice to accept the
    # candidate on its own (see ``VOICE_CONFIRM_UNTIL_S``); None: a voice that does not
    # contradict is enough from ``decisive_speech_s`` on. Replayed files decide at their end.
    voice_confirm_until_s: float | None = None

    def __post_init__(self) -> None:
        if self.name not in MODE_NAMES:
            raise ConfigError(f"unknown security mode {self.name!r}; known: {MODE_NAMES}")
        if self.liveness not in ("required", "report"):
            raise ConfigError(f"mode {self.name}: liveness must be 'required' or 'report', "
                              f"got {self.liveness!r}")
        if not 0 < self.target_far < 1 or self.min_speech_s <= 0 or \
                not self.decisive_speech_s > 0:
            raise ConfigError(f"mode {self.name}: target_far must be in (0, 1), min_speech_s "
                              f"and decisive_speech_s > 0")
        margin = self.voice_other_margin_llr
        if margin is not None and not (math.isfinite(float(margin)) and float(margin) >= 0):
            raise ConfigError(f"mode {self.name}: voice_other_margin_llr must be a finite LLR "
                              f">= 0 or absent, got {margin!r}")
        until = self.voice_confirm_until_s
        if until is not None and not (math.isfinite(float(until)) and float(until) > 0):
            raise ConfigError(f"mode {self.name}: voice_confirm_until_s must be seconds > 0 or "
                              f"absent, got {until!r}")
        table = tuple(sorted((float(a), float(b)) for a, b in self.voice_veto_by_length))
        if any(not (math.isfinite(a) and math.isfinite(b) and a > 0) for a, b in table) or \
                len({a for a, _ in table}) != len(table):
            raise ConfigError(f"mode {self.name}: voice veto table needs distinct positive "
                              f"lengths and finite LLRs, got {self.voice_veto_by_length}")
        object.__setattr__(self, "voice_veto_by_length", table)

    def voice_veto_at(self, seconds: float) -> float:
        """The calibrated LLR under which the voice contradicts the candidate, for a probe of
        ``seconds`` of speech (short speech is weak evidence either way: a looser veto)."""
        if not self.voice_veto_by_length:
            return self.voice_veto_llr
        xs, ys = zip(*self.voice_veto_by_length, strict=True)
        return float(np.interp(float(seconds), xs, ys))

    def for_detector(self, kind: str | None) -> SecurityMode:
        """This mode with the AV-sync threshold measured on landmarks of ``kind``'s boxes;
        refuses a detector the file holds no measurement for (its threshold would be a guess).
        A mode whose liveness is only reported needs none."""
        measured = dict(self.avsync_thresholds) or {"hog": self.avsync_threshold}
        if kind in measured:
            return replace(self, avsync_threshold=float(measured[str(kind)]))
        if self.liveness != "required":
            return self
        raise ConfigError(
            f"security mode {self.name}: AV-sync liveness is calibrated for the "
            f"{', '.join(sorted(measured))} face detector(s), not for "
            f"{kind or 'this detector (no kind)'}; run `edgepin calibrate-modes --detector "
            f"{kind or 'hog'}` or choose a calibrated detector with --detector")


@dataclass(frozen=True)
class OperatingPoints:
    model_hashes: Mapping[str, str]
    data_manifest_sha256: str
    fuser: Fuser
    thresholds: tuple[ThresholdPoint, ...]
    prior: float = 0.5
    provisional: bool = True
    created: str = ""
    quality: tuple[Mapping[str, Any], ...] = ()
    notes: str = ""
    schema_version: int = SCHEMA_VERSION
    source: str = field(default="", compare=False)
    modes: Mapping[str, SecurityMode] = field(default_factory=dict)
    default_mode: str = ""
    avsync: Mapping[str, Any] = field(default_factory=dict)
    # how the face embeddings these scores came from were made ("flip": averaged with the
    # mirror image); the runtime embeds the same way, since the thresholds hold only for it
    face_tta: str = "none"

    def mode(self, name: str | None = None) -> SecurityMode:
        """The named security mode (None: the file's default); refuses one the file lacks."""
        key = name or self.default_mode
        if key in self.modes:
            return self.modes[key]
        have = ", ".join(sorted(self.modes)) or "none"
        raise ConfigError(
            f"{self.source or 'operating points'} has no security mode {key or '(default)'!r} "
            f"(it has: {have}); add them with `edgepin calibrate-modes --op {self.source or 'FILE'}"
            f" --grid DIR`")

    def threshold_for(self, modalities: Iterable[str], target_far: float) -> ThresholdPoint:
        """The stored threshold for this subset and FAR; refuses rather than guessing one."""
        key = tuple(sorted(modalities))
        for point in self.thresholds:
            if point.modalities == key and math.isclose(point.target_far, target_far):
                if point.threshold is None:
                    raise ConfigError(
                        f"{self.source or 'operating points'}: FAR {target_far:g} for "
                        f"{subset_name(key)} is {point.reason}"
                    )
                return point
        have = sorted({(subset_name(p.modalities), p.target_far) for p in self.thresholds})
        raise ConfigError(
            f"{self.source or 'operating points'} has no threshold for {subset_name(key)} at FAR "
            f"{target_far:g}; available: {', '.join(f'{s}@{f:g}' for s, f in have) or 'none'}"
        )

    def at(self, seconds: Mapping[str, float | None]) -> OperatingPoints:
        """These operating points for one probe: length-dependent calibrations are fixed to
        the probe's speech length (e.g. ``{"voice": 1.4}``); thresholds are unchanged."""
        return replace(self, fuser=self.fuser.at(seconds))

    def decide(self, scores: Mapping[str, float | None], target_far: float) -> Decision:
        """Fuse the present scores and compare with the matching subset's threshold."""
        present = [m for m, v in scores.items() if v is not None and math.isfinite(float(v))]
        subset = self.fuser.subset_for(present)
        point = self.threshold_for(subset, target_far)
        llr = self.fuser.score({m: scores[m] for m in subset})
        assert point.threshold is not None  # threshold_for refuses unmeasurable points
        return Decision(llr > point.threshold, llr, point.modalities, point.threshold)


def _body(op: OperatingPoints) -> dict[str, Any]:
    return {
        "format": FILE_FORMAT,
        "schema_version": op.schema_version,
        "created": op.created,
        "provisional": bool(op.provisional),
        "model_hashes": {k: str(v) for k, v in sorted(op.model_hashes.items())},
        "data_manifest_sha256": op.data_manifest_sha256,
        "prior": float(op.prior),
        "calibration": {
            m: {"slope": float(c.slope), "offset": float(c.offset), "transform": c.transform,
                **({"by_seconds": [[float(x) for x in r] for r in c.by_seconds]}
                   if c.by_seconds else {})}
            for m, c in sorted(op.fuser.calibrations.items())
        },
        "fusion": [
            {"modalities": sorted(s), "weights": {m: float(w) for m, w in sorted(f.weights.items())},
             "bias": float(f.bias)}
            for s, f in sorted(op.fuser.subsets.items(), key=lambda kv: subset_name(kv[0]))
        ],
        "thresholds": [_plain(asdict(p)) for p in op.thresholds],
        "quality": [_plain(dict(q)) for q in op.quality],
        "notes": op.notes,
        **({"face_tta": op.face_tta} if op.face_tta != "none" else {}),
        **({"modes": {"default": op.default_mode,
                      "list": [_plain(asdict(m)) for _, m in sorted(op.modes.items())],
                      "avsync": _plain(dict(op.avsync))}} if op.modes else {}),
    }


def _plain(value: Any) -> Any:
    """numpy scalars and tuples -> YAML-safe plain Python."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _checksum(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_operating_points(op: OperatingPoints, path: str | Path) -> Path:
    """Write atomically (readers see the old file or the whole new one), with a checksum."""
    p = Path(path)
    body = _body(op)
    doc = {**body, "checksum": _checksum(body)}
    text = "# edgepin operating points: generated, do not edit (edits are refused)\n"
    text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    if not p.parent.is_dir():
        raise ConfigError(f"cannot write {p}: folder {p.parent} does not exist")
    try:
        write_atomic(p, lambda fh: fh.write(text.encode("utf-8")), fsync=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {p}: {exc.strerror or exc}") from exc
    return p


def _pair(v: Any) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


def _from_body(doc: Mapping[str, Any], source: str) -> OperatingPoints:
    calibrations = {
        str(m): Calibration(float(c["slope"]), float(c["offset"]), str(c.get("transform", "identity")),
                            tuple(tuple(float(x) for x in r) for r in c.get("by_seconds") or ()))
        for m, c in doc["calibration"].items()
    }
    subsets = {}
    for f in doc["fusion"]:
        fusion = SubsetFusion({str(m): float(w) for m, w in f["weights"].items()}, float(f["bias"]))
        if sorted(fusion.modalities) != sorted(f["modalities"]) or not fusion.weights:
            raise ValueError(f"fusion entry {f['modalities']} has mismatched weights")
        if not fusion.modalities <= set(calibrations):
            raise ValueError(f"fusion entry {f['modalities']} uses an uncalibrated modality")
        subsets[fusion.modalities] = fusion
    points = []
    for t in doc["thresholds"]:
        thr = t["threshold"]
        points.append(ThresholdPoint(
            modalities=tuple(str(m) for m in t["modalities"]), target_far=float(t["target_far"]),
            threshold=None if thr is None else float(thr),
            achieved_far=None if t["achieved_far"] is None else float(t["achieved_far"]),
            frr=None if t["frr"] is None else float(t["frr"]),
            threshold_ci=_pair(t["threshold_ci"]), far_ci=_pair(t["far_ci"]),
            frr_ci=_pair(t["frr_ci"]), n_genuine=int(t["n_genuine"]),
            n_impostor=int(t["n_impostor"]), n_bootstrap=int(t["n_bootstrap"]),
            confidence=float(t["confidence"]), seed=int(t["seed"]), reason=t.get("reason"),
            far_pi_people=_pair(t.get("far_pi_people")), method=t.get("method"),
        ))
    modes_doc = doc.get("modes") or {}
    modes = {str(m["name"]): SecurityMode(**m) for m in modes_doc.get("list") or ()}
    default_mode = str(modes_doc.get("default", ""))
    if modes and default_mode not in modes:
        raise ValueError(f"default mode {default_mode!r} is not among {sorted(modes)}")
    face_tta = str(doc.get("face_tta", "none"))
    if face_tta not in FACE_TTA:
        raise ValueError(f"face_tta {face_tta!r} is not one of {FACE_TTA}")
    return OperatingPoints(
        face_tta=face_tta, modes=modes, default_mode=default_mode, avsync=dict(modes_doc.get("avsync") or {}),
        model_hashes={str(k): str(v) for k, v in doc["model_hashes"].items()},
        data_manifest_sha256=str(doc["data_manifest_sha256"]),
        fuser=Fuser(calibrations, subsets), thresholds=tuple(points), prior=float(doc["prior"]),
        provisional=bool(doc["provisional"]), created=str(doc["created"]),
        quality=tuple(dict(q) for q in doc.get("quality") or ()), notes=str(doc.get("notes", "")),
        schema_version=int(doc["schema_version"]), source=source,
    )


def load_operating_points(path: str | Path, model_hashes: Mapping[str, str]) -> OperatingPoints:
    """Load and verify a file against the models actually loaded; refuse anything stale.

    Every loaded model must be listed with the same sha256. A model listed in the file but not
    loaded is allowed (a face-only device may use a face+voice file); its modality simply never
    appears in the scores.
    """
    p = Path(path)
    fix = f"regenerate it with `{REGENERATE.format(path=p)}`"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"operating-point file {p} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read operating-point file {p}: {exc}; {fix}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"operating-point file {p} is corrupt (not YAML: {exc}); {fix}") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise ConfigError(f"{p} is not an edgepin operating-point file; {fix}")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ConfigError(f"operating-point file {p} has an invalid schema_version {version!r}; {fix}")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"operating-point file {p} has schema version {version}, newer than this edgepin "
            f"supports ({SCHEMA_VERSION}); upgrade edgepin or {fix}"
        )
    stored = doc.pop("checksum", None)
    if stored != _checksum(doc):
        raise ConfigError(
            f"operating-point file {p} is corrupt or was edited by hand (checksum mismatch); {fix}"
        )
    try:
        op = _from_body(doc, str(p))
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"operating-point file {p} is corrupt (bad field {exc}); {fix}") from None
    for name, digest in sorted(model_hashes.items()):
        if name not in op.model_hashes:
            raise ModelError(
                f"operating-point file {p} was not made for the loaded {name} model "
                f"(it covers: {', '.join(sorted(op.model_hashes)) or 'no models'}); {fix}"
            )
        if op.model_hashes[name] != digest:
            raise ModelError(
                f"operating-point file {p} is stale: it belongs to {name} model sha256 "
                f"{op.model_hashes[name][:12]}..., but the loaded {name} model is "
                f"{digest[:12]}...; its thresholds would give the wrong FAR. {fix[0].upper()}{fix[1:]}"
            )
    return op
