"""Every verifier the attack benchmark decides an attempt with, built once (``AttackDoors``).

The default mode and its variants (veto quantiles, the fixed veto, a stricter FAR, the
"recognised as" rule before its margin, two-factor), the default mode as the live loop looks,
the live doors, and the live door under each halving's veto: each per fold of the people (the
voice veto is cross-fitted: set on the other fold) and per liveness setting ("identity": the
mode's liveness on "report", "live": required). Kept apart from the attempt loop
(``benchmarks.attacks.run``) so that one reads as what is attempted and this as what decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.attacks_present import LOOK_EVERY_S, attempt, live_looks, row
from benchmarks.attacks_report import STRICT_FAR
from calibration.voice_veto import QUANTILE, genuine_voice_llrs_by_speaker, pool_llrs, veto_table
from edge_runtime.access.collector import live_min_speech_s
from edge_runtime.access.loop import LoopConfig
from edge_runtime.access.pipeline import PipelineConfig, Verifier
from edge_runtime.frontend.face import DlibHogDetector
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.frontend.video import Frame
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery_handle import GalleryHandle

VETO_SWEEP = (0.01, 0.02, 0.05)  # veto quantiles compared in one run (trade-off table)
LIVE_LIMIT_S = LoopConfig().collect_timeout_s  # the live loop's time limit per attempt
LIVE_DOOR = "face+liveness, live door"
# the "voice recognised as someone else" rule before the likelihood-ratio margin (another
# person's voice accepted alone at the FAR): same attempts, only that rule differs
BEFORE_RULE = "recognised as at FAR (before)"
# the live door that grants at the decisive speech on a voice that does not contradict, without
# waiting for one that does not confirm the candidate on its own (the mode's
# `voice_confirm_until_s` off): what the wait buys
NO_WAIT = "no wait for a confirming voice (before)"
# door name -> (the mode's decisive speech or None: the shipped one, the rule before, the wait)
LIVE_DOORS: dict[str, tuple[float | None, bool, bool]] = {
    LIVE_DOOR: (None, False, True), f"{LIVE_DOOR}, {NO_WAIT}": (None, False, False),
    f"{LIVE_DOOR}, {BEFORE_RULE}": (None, True, True)}
# the live door decided again with the veto set on other halvings of the people (halving 0 is
# the one every mode uses): one split's luck in who sets the veto moved a candidate's live-door
# BPCER by points (door_v22, 2026-12-03); the door gate reads the rate pooled over all of them
HALVINGS = 10
# the default mode on the fixed probe with looks from 0.5 s of speech (what `--min-speech 0.5`
# did on a live source, refused since): a look may grant after the mode's decisive speech
# (None), or at once (0.5: the rule before). These emulate a refused option and keep the rules
# they were measured with: no wait for a confirming voice.
SEQUENTIAL: dict[str, float | None] = {
    "face+liveness, looks from 0.5 s": None,
    "face+liveness, looks from 0.5 s, grant at the first look (before)": 0.5}
LIVENESS = (("identity", "report"), ("live", "required"))


def halving_mode(h: int) -> str:
    """The live door's row name for halving ``h`` (0: the live door itself)."""
    return LIVE_DOOR if h == 0 else f"{LIVE_DOOR}, halving {h}"


def halving_folds(people: list[dict[str, Any]], seed: int, halvings: int
                  ) -> list[dict[str, int]]:
    """Fold (0/1) of each person per halving: halving 0 is the split runs before 2026-12-03
    used for every mode (their rows stay comparable); the others are drawn from their own
    streams."""
    out = []
    for h in range(halvings):
        rng = np.random.default_rng(seed + 7 if h == 0 else [seed + 7, h])
        order = [people[i] for i in rng.permutation(len(people))]
        out.append({p["name"]: k % 2 for k, p in enumerate(order)})
    return out


class AttackDoors:
    """The verifiers of one attack run; ``decide`` gives an attempt's row, ``header`` what the
    report says each row was decided with, ``close`` releases them."""

    def __init__(self, bundle: ModelBundle, handle: GalleryHandle, detector: DlibHogDetector,
                 gate: SpeechGate, people: list[dict[str, Any]], seed: int,
                 veto_quantile: float | None = QUANTILE, halvings: int = HALVINGS) -> None:
        op = bundle.operating_points
        assert op is not None  # run() refuses a bundle without security modes
        self._bundle, self._handle, self._detector, self._gate = bundle, handle, detector, gate
        self._op, self.halvings, self._people = op, halvings, len(people)
        # the voice veto is calibrated on the people of the OTHER fold (cross-fitting):
        # no attempt is decided with a veto set on its own people's voices
        self.folds = halving_folds(people, seed, halvings)
        own = genuine_voice_llrs_by_speaker(bundle, op, people, gate)

        def other_fold(h: int, f: int) -> dict[float, np.ndarray]:
            return pool_llrs(own, [p["name"] for p in people if self.folds[h][p["name"]] != f])

        self._llrs = {f: other_fold(0, f) for f in (0, 1)}
        self.q = q = veto_quantile or QUANTILE
        # variants decided on the same collected evidence (only the veto differs): the
        # APCER/BPCER trade-off of the rule, in one run
        # (mode, veto quantile or None = the fixed veto, FAR or None = the mode's own, the
        # "recognised as" rule before)
        self.variants: dict[str, tuple[str, float | None, float | None, bool]] = {
            "face+liveness": ("face+liveness", q, None, False),
            **{f"face+liveness, veto q={x:g}": ("face+liveness", x, None, False)
               for x in VETO_SWEEP if x != q},
            "face+liveness, fixed veto -2": ("face+liveness", None, None, False),
            f"face+liveness, FAR {STRICT_FAR:g}": ("face+liveness", q, STRICT_FAR, False),
            f"face+liveness, {BEFORE_RULE}": ("face+liveness", q, None, True),
            "two-factor": ("two-factor", q, None, False)}
        # (halving, fold, quantile) -> table: every quantile on halving 0, the default one
        # on the other halvings (the live door only)
        self._vetoes = {(0, f, x): veto_table(self._llrs[f], x) for f in (0, 1)
                        for x in {v[1] for v in self.variants.values() if v[1] is not None}}
        self._vetoes |= {(h, f, q): veto_table(other_fold(h, f), q)
                         for h in range(1, halvings) for f in (0, 1)}
        self._default = op.modes["face+liveness"]

        self._fixed = {(f, key): {name: self._verifier(m, lv, f, x, far, before=before)
                                  for name, (m, x, far, before) in self.variants.items()}
                       for f in (0, 1) for key, lv in LIVENESS}
        self._sequential = {(f, key): {name: self._verifier("face+liveness", lv, f, q, None, d,
                                                            wait=False)
                                       for name, d in SEQUENTIAL.items()}
                            for f in (0, 1) for key, lv in LIVENESS}
        # doors with the same live minimum look at the same moments: one collector (and one
        # voice embedding per look) serves them all
        self._door_groups = sorted({self.live_min(d) for d, _, _ in LIVE_DOORS.values()})
        self._doors = {(f, key, g): {name: self._verifier(
            "face+liveness", lv, f, q, None, d, self.live_min(d), before, wait)
            for name, (d, before, wait) in LIVE_DOORS.items() if self.live_min(d) == g}
            for g in self._door_groups for f in (0, 1) for key, lv in LIVENESS}
        d0, before0, wait0 = LIVE_DOORS[LIVE_DOOR]
        self._halving_doors = {(h, f, key): self._verifier(
            "face+liveness", lv, f, q, None, d0, self.live_min(d0), before0, wait0, h)
            for h in range(1, halvings) for f in (0, 1) for key, lv in LIVENESS}
        self._door_group = self.live_min(d0)  # the live door's looks: its halvings join them
        self._halved = {halving_mode(h) for h in range(1, halvings)}

    def live_min(self, d: float | None) -> float:
        """A door's first look, as `edgepin run` sets it for a live source."""
        return live_min_speech_s(d if d is not None else self._default.decisive_speech_s)

    def _verifier(self, mode: str, liveness: str, f: int, q: float | None, far: float | None,
                  decisive: float | None = None, min_speech: float = 0.5,
                  before: bool = False, wait: bool = True, h: int = 0) -> Verifier:
        m = self._op.mode(mode)
        cfg = PipelineConfig(mode=mode, liveness=liveness, min_speech_s=min_speech,
                             target_far=far or m.target_far,
                             voice_veto_by_length=self._vetoes[(h, f, q)] if q is not None
                             else ((1.0, m.voice_veto_llr),),
                             decisive_speech_s=decisive,
                             voice_other_rule="far" if before else None,
                             voice_confirm_until_s=None if wait else 0.0)
        return Verifier(self._bundle, self._handle, cfg, self._detector, self._gate)

    def decide(self, face: str, liveness: str, frames: list[Frame], audio: np.ndarray,
               spoken: np.ndarray, source: str) -> dict[str, Any]:
        """One attempt's row: ``face`` is the claimed person (their fold picks the vetoes),
        ``audio`` the fixed probe, ``spoken`` what the person says at the live door."""
        f = self.folds[0][face]
        out = attempt(self._fixed[(f, liveness)], frames, audio, source)
        seq = live_looks(self._sequential[(f, liveness)], frames, audio, source)
        for g in self._door_groups:
            doors = dict(self._doors[(f, liveness, g)])
            if g == self._door_group:
                doors |= {halving_mode(h): self._halving_doors[(h, self.folds[h][face], liveness)]
                          for h in range(1, self.halvings)}
            seq |= live_looks(doors, frames, spoken, source, live_end=True)
        return {"speech_s": out[next(iter(out))].speech_s,
                **{m: row(r) for m, r in out.items()},
                **{m: {**row(r), "looks": n, "decided_at_s": round(r.speech_s, 2)}
                   for m, (r, n) in seq.items() if m not in self._halved},
                **{m: {"granted": r.granted, **({"identity": r.identity}
                                                if r.identity is not None else {})}
                   for m, (r, _) in seq.items() if m in self._halved}}

    def _other_rule(self, mode: str, before: bool, wait: bool = True) -> dict[str, Any]:
        """The voice rules a variant decides with."""
        fl = mode == "face+liveness"
        m = self._op.modes[mode]
        return {"voice_other_margin_llr": m.voice_other_margin_llr if fl and not before else None,
                "voice_confirm_until_s": m.voice_confirm_until_s if fl and wait else None}

    def _looks_meta(self, d: float | None, how: str, **more: float) -> dict[str, Any]:
        """The default mode as a live-loop variant decides it."""
        return {**vars(self._default), "voice_veto": f"calibrated, q={self.q:g} (cross-fitted)",
                **more, "decisive_speech_s": d if d is not None else
                self._default.decisive_speech_s, "sequential": how}

    def modes(self) -> dict[str, Any]:
        """What each row was decided with (the report's headers)."""
        op = self._op
        return ({name: {**vars(op.modes[m]), "target_far": far or op.modes[m].target_far,
                        "voice_veto": f"calibrated, q={x:g} (cross-fitted)" if x is not None
                        else f"fixed LLR {op.modes[m].voice_veto_llr:g}",
                        **self._other_rule(m, before)}
                 for name, (m, x, far, before) in self.variants.items()}
                | {name: self._looks_meta(d, f"looks every {LOOK_EVERY_S:g} s of speech")
                   | self._other_rule("face+liveness", False, wait=False)
                   for name, d in SEQUENTIAL.items()}
                | {name: self._looks_meta(
                    d, f"looks every {LOOK_EVERY_S:g} s of speech from {self.live_min(d):g} "
                    f"s; the person goes on speaking (up to {LIVE_LIMIT_S:g} s) until it "
                    "decides, the short-speech attacker stops",
                    min_speech_s=self.live_min(d)) | self._other_rule("face+liveness", before, wait)
                   for name, (d, before, wait) in LIVE_DOORS.items()})

    def voice_veto(self) -> dict[str, Any]:
        """Halving 0's cross-fitted tables and how many own-voice trials set them."""
        return {"cross_fitted": {f"fold {f}, q={q:g}": [list(r) for r in t]
                                 for (h, f, q), t in self._vetoes.items() if h == 0},
                "genuine_trials": {f"fold {f}": {f"{x:g}s": int(v.size)
                                                 for x, v in self._llrs[f].items()}
                                   for f in (0, 1)}}

    def halvings_meta(self) -> dict[str, Any]:
        """The halvings the live door is also decided under, and their tables."""
        return {"count": self.halvings,
                "modes": [halving_mode(h) for h in range(self.halvings)],
                "what": f"the live door ('{LIVE_DOOR}') decided with its veto (q={self.q:g}) "
                        f"set on the other fold of each of {self.halvings} halvings of the "
                        f"{self._people} people; halving 0 is the one every other mode uses; "
                        "rows of halvings 1 on keep the decision only",
                "vetoes": {f"halving {h}, fold {f}": [list(r) for r in t]
                           for (h, f, _), t in self._vetoes.items() if h > 0}}

    def close(self) -> None:
        for group in (*self._fixed.values(), *self._sequential.values(),
                      *self._doors.values(), self._halving_doors):
            for v in group.values():
                v.close()
