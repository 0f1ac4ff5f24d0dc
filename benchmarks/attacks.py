"""Attack benchmark: presentation and identity attacks at scale, through the real ``Verifier``.

Re-run (about 20-40 min on 2 shared cores; writes attacks.md, attacks.json.gz and attacks.png;
rates, report and plot: ``benchmarks.attacks_report``; one presentation through the verifiers,
at once or as the live loop looks: ``benchmarks.attacks_present``; the GRID clips:
``benchmarks.attacks_grid``):

    nice -n 19 python -m benchmarks.attacks --models models --data ../shared/data \\
        --out benchmarks/attacks.md [--face-tier large] [--voice-tier large] [--precision int8]

The face+liveness voice veto ("the voice must not contradict") is calibrated per speech length
(``calibration/voice_veto.py``) on one half of the people and applied to attempts of the other
half (cross-fitted); variants with other veto quantiles, with the old fixed veto (LLR -2) and
with the default mode's identity point at FAR 1e-3, and with the "voice recognised as another
enrolled person" rule before its likelihood-ratio margin (``recognised as at FAR (before)``:
that person's voice accepted alone at the FAR), decide the same collected attempts, which gives
the APCER/BPCER trade-off in one run.

People: held-out identities only (the students' test + val people: the split recorded in the
models). Face and voice come from different datasets (LFW photos, speechocean762 speakers):
each pairing of an LFW person with a speechocean762 speaker of the same gender is an
ARTIFICIAL identity. Half of them are enrolled (2 photos + their first utterances until
``ENROL_VOICE_S`` of voiced speech, as every enrolment asks: ``enroll_people``; runs before
2026-12-02 enrolled 3 utterances); the others are strangers. Probes: photos and utterances not
used to enrol, the audio cut to 2-4 s (a stranger's from their 4th utterance on, as before).

Kinds (ISO/IEC 30107-3 terms: APCER = attack presentations accepted, BPCER = bona fide
presentations rejected; zero-effort impostors give the FMR):
- genuine: an enrolled person's own face and voice (bona fide);
- zero-effort: a stranger's own face and voice against the whole gallery (FMR);
- mixed-enrolled / mixed-unenrolled: the face of an enrolled person with the voice of another
  person of the same gender, enrolled or not;
- photo: a still photo of an enrolled person held for 0.6 s with their own recording;
- GRID shifted / swapped: the 7 real talking-face clips (enrolled from their first halves), the
  second half with its audio shifted by +-0.3/0.5/0.8 s or with another clip's audio;
- mixed-unenrolled, short speech: as mixed-unenrolled, but the stranger says only 0.8-1.2 s of
  audio (an informed attacker stops early, where the voice veto is loosest); drawn with their
  own random stream after all the others, so the other kinds keep their attempts.

Every attempt is decided on the whole probe (as a replayed file is), and for the default mode
also as the loop decides it with looks (``live_looks``): the audio arrives in 0.1 s chunks and
the ``Verifier`` looks after the minimum speech and every 0.5 s of speech more; a look that is
final ends the attempt, else the end of the audio decides. Variants:
- ``live door``: `edgepin run`'s defaults on a live source (looks from the mode's decisive
  speech, 3 s as shipped: the minimum a live source needs), and the person goes on speaking
  while the door says "keep speaking": the rest of their utterance from the probe's start,
  then their next probe utterances, up to the loop's 10 s limit. The short-speech attacker
  stops after 0.8-1.2 s. (``live door, decisive 2 s``, the door at the decisive speech shipped
  before, was compared in the runs of 2026-12-01 13:10 and earlier: docs/security_modes.md.)
  ``live door, recognised as at FAR (before)``: the live door with the rule before the margin.
  ``live door, no wait for a confirming voice (before)``: the live door granting at the decisive
  speech on any voice that does not contradict (the mode's ``voice_confirm_until_s`` off).
  The live door's end (the person stops, or the 10 s limit) is decided as the live loop decides
  it (``Verifier.decide(live=True)``: a grant still waiting for more speech is denied).
- ``looks from 0.5 s``: the fixed probe, looks from 0.5 s of speech (a live source run with
  ``--min-speech 0.5``, refused since: below the mode's decisive speech); a look may grant only
  after the mode's ``decisive_speech_s`` (3 s), or at once (``grant at the first look
  (before)``, the rule before ``decisive_speech_s``).

The live door is also decided with the veto set on ``--halvings`` halvings of the people (10:
halving 0 is the fold every mode uses, the others are drawn from their own streams; rows
``face+liveness, live door, halving h`` keep the decision only): the report gives its rates per
halving and pooled, and ``benchmarks.door_gate`` compares the pooled ones, so a candidate is not
judged on one split's luck in whose voices set its veto (written 2026-12-03, after door_v22).

LFW photos are stills: AV sync cannot be measured on them. Identity kinds are therefore
decided with the mode's liveness set to "report" (the identity part of the mode, exactly as the
``Verifier`` runs it, AV sync shown but not deciding); the liveness part is measured on GRID
(``benchmarks/avsync.md``) and by the photo and GRID kinds, which run with liveness required.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.attacks_grid import run_grid
from benchmarks.attacks_present import LOOK_EVERY_S, Media, attempt, live_looks, row
from benchmarks.attacks_report import STRICT_FAR, plot, render, summarise
from benchmarks.machine import machine_info
from calibration.voice_veto import (
    QUANTILE,
    genuine_voice_llrs_by_speaker,
    pool_llrs,
    veto_table,
)
from edge_runtime.access.collector import live_min_speech_s
from edge_runtime.access.enroll import ENROL_VOICE_S, Enroller, enroll_people
from edge_runtime.access.loop import LoopConfig
from edge_runtime.access.pipeline import PipelineConfig, Verifier
from edge_runtime.errors import EdgepinError
from edge_runtime.frontend.audio import TARGET_SR
from edge_runtime.frontend.face import DlibHogDetector
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.frontend.video import Frame
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle
from edge_runtime.store.keys import create_key

VETO_SWEEP = (0.01, 0.02, 0.05)  # veto quantiles compared in one run (trade-off table)
PROBE_AUDIO_S = (2.0, 4.0)  # a probe's audio, seconds
SHORT_AUDIO_S = (0.8, 1.2)  # the informed attacker's probe
SHORT_KIND = "mixed-unenrolled, short speech"
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
KINDS = ("genuine", "zero-effort", "mixed-enrolled", "mixed-unenrolled", "photo", SHORT_KIND)


# ----------------------------------------------------------------------------- people
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


def artificial_people(data: Path, bundle: ModelBundle, seed: int) -> list[dict[str, Any]]:
    """Held-out LFW people (>= 3 photos, gender known) paired with held-out speechocean762
    speakers of the same gender: ARTIFICIAL identities."""
    from calibration.score_sets import model_split
    from train.datasets import FaceFolder, SpeechFolder, holdout_split
    from train.datasets.labels import read_labels_tsv

    def held(reader: Any, modality: str) -> set[str]:
        s = model_split(bundle, modality)
        parts = holdout_split(reader.identities(), s["test_fraction"], s["val_fraction"],
                              s["seed"])
        return set(parts["test"]) | set(parts["val"])

    lfw, so = FaceFolder(data / "lfw"), SpeechFolder(data / "speechocean762")
    fg = read_labels_tsv(data / "lfw" / "GENDER.tsv", "person", "gender")
    vg = read_labels_tsv(data / "speechocean762" / "SPEAKERS.tsv", "speaker", "gender")
    photos: dict[str, list[Path]] = defaultdict(list)
    for s in lfw.samples:
        photos[s.identity].append(Path(s.path))
    clips: dict[str, list[Path]] = defaultdict(list)
    for s in so.samples:
        clips[s.identity].append(Path(s.path))
    rng = np.random.default_rng(seed)
    out = []
    for g in ("M", "F"):
        faces = sorted(i for i in held(lfw, "face") if fg.get(i) == g and len(photos[i]) >= 3)
        voices = sorted(i for i in held(so, "voice") if vg.get(i) == g and len(clips[i]) >= 5)
        rng.shuffle(faces)
        rng.shuffle(voices)
        for f, v in zip(faces, voices, strict=False):
            out.append({"name": f"{f}+{v}", "gender": g, "photos": sorted(photos[f]),
                        "utterances": sorted(clips[v])})
    return out


def _cut(wav: np.ndarray, rng: np.random.Generator, seconds: tuple[float, float]
         ) -> tuple[int, int]:
    """Start and length (samples) of a random cut of ``seconds`` (the whole of a shorter wav)."""
    n = round(rng.uniform(*seconds) * TARGET_SR)
    if wav.size <= n:
        return 0, wav.size
    return int(rng.integers(0, wav.size - n)), n


def probe_face(media: Media, p: dict[str, Any], still_frames: int, r: np.random.Generator
               ) -> list[Frame]:
    """A photo of ``p`` not used to enrol, held for ``still_frames`` frames."""
    photo = p["photos"][2:][int(r.integers(0, len(p["photos"]) - 2))]
    img = media.image(photo)
    return [Frame(i * 0.04, img) for i in range(still_frames)]


def probe_voice(media: Media, p: dict[str, Any], r: np.random.Generator, short: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """A random cut of an utterance of ``p`` not used to enrol (2-4 s, or 0.8-1.2 s), and
    what ``p`` says at a live door that asks them to keep speaking: from the cut's start on,
    then their next probe utterances, up to the loop's time limit. The informed attacker of
    the short kind stops at the end of the cut."""
    probes = p["utterances"][p.get("enrol_utterances", 3):]
    i = int(r.integers(0, len(probes)))
    wav = media.audio(probes[i])
    k, n = _cut(wav, r, SHORT_AUDIO_S if short else PROBE_AUDIO_S)
    cut = wav[k: k + n]
    if short:
        return cut, cut
    limit = round(LIVE_LIMIT_S * TARGET_SR)
    parts, total = [wav[k: k + limit]], min(wav.size - k, limit)
    for j in range(1, len(probes)):
        if total >= limit:
            break
        more = media.audio(probes[(i + j) % len(probes)])[: limit - total]
        parts.append(more)
        total += more.size
    return cut, np.concatenate(parts)


Attempt = tuple[str, str, str | None, dict[str, Any], dict[str, Any], str, int,
                np.random.Generator]


def plan_attempts(enrolled: list[dict[str, Any]], strangers: list[dict[str, Any]],
                  per_kind: int, rng: np.random.Generator, seed: int) -> list[Attempt]:
    """Every attempt, drawn before any is run: (kind, who, expected identity, face person,
    voice person, verifier set, still frames, the random stream its probe is cut with)."""
    identity, live = "identity", "live"
    by_gender: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in enrolled:
        by_gender[p["gender"]].append(p)
    stranger_gender: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in strangers:
        stranger_gender[p["gender"]].append(p)

    def pick(pool: list[dict[str, Any]], r: np.random.Generator = rng) -> dict[str, Any]:
        return pool[int(r.integers(0, len(pool)))]

    plan: list[Attempt] = []
    for _ in range(per_kind):
        a = pick(enrolled)
        plan.append(("genuine", a["name"], a["name"], a, a, identity, 1, rng))
        s = pick(strangers)
        plan.append(("zero-effort", s["name"], None, s, s, identity, 1, rng))
        b_pool = [q for q in by_gender[a["gender"]] if q is not a]
        if b_pool:
            b = pick(b_pool)
            plan.append(("mixed-enrolled", a["name"], None, a, b, identity, 1, rng))
        if stranger_gender[a["gender"]]:
            c = pick(stranger_gender[a["gender"]])
            plan.append(("mixed-unenrolled", a["name"], None, a, c, identity, 1, rng))
        plan.append(("photo", a["name"], None, a, a, live, 15, rng))
    # drawn from their own stream and run last: the kinds above keep their attempts
    rng_short = np.random.default_rng(seed + 11)
    for _ in range(per_kind):
        a = pick(enrolled, rng_short)
        if stranger_gender[a["gender"]]:
            c = pick(stranger_gender[a["gender"]], rng_short)
            plan.append((SHORT_KIND, a["name"], None, a, c, identity, 1, rng_short))
    return plan


def run(models: Path, data: Path, per_kind: int, precision: str, seed: int,
        threads: int, checkpoint: Callable[[dict[str, Any]], None] | None = None,
        veto_quantile: float | None = QUANTILE, bundle_options: dict[str, str] | None = None,
        halvings: int = HALVINGS) -> dict[str, Any]:
    from rich.progress import Progress

    try:
        bundle = ModelBundle.load(models, precision=precision, threads=threads,
                                  **(bundle_options or {}))
    except TypeError as exc:  # an option this ModelBundle does not know (no face tiers yet)
        raise EdgepinError(f"{bundle_options}: this ModelBundle does not take it ({exc})") \
            from exc
    op = bundle.operating_points
    if halvings < 1:
        raise EdgepinError(f"--halvings must be at least 1, got {halvings}")
    if op is None or not op.modes:
        raise EdgepinError(f"{models}: the operating-point file has no security modes")
    detector, gate = DlibHogDetector(), SpeechGate("auto")
    grid = run_grid(bundle, data / "grid", detector, gate)  # small: first
    people = artificial_people(data, bundle, seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(people))
    enrolled = [people[i] for i in order[: len(people) // 2]]
    strangers = [people[i] for i in order[len(people) // 2:]]
    media = Media()
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="edgepin-attacks-") as tmp:
        key = create_key(Path(tmp) / "g.key")
        with Gallery.open(Path(tmp) / "g.db", key) as gallery:
            enroller = Enroller(bundle, detector, gate, min_speech_s=1.0)
            door = enroll_people(enroller, gallery, enrolled)
            enrolled = [{**p, "enrol_utterances": door.voice_used[p["name"]]}
                        for p in enrolled if p["name"] in door.enrolled]
            handle = GalleryHandle.wrap(gallery)

            # the voice veto is calibrated on the people of the OTHER fold (cross-fitting):
            # no attempt is decided with a veto set on its own people's voices
            folds = halving_folds(people, seed, halvings)
            fold = folds[0]
            own = genuine_voice_llrs_by_speaker(bundle, op, people, gate)

            def other_fold(h: int, f: int) -> dict[float, np.ndarray]:
                return pool_llrs(own, [p["name"] for p in people if folds[h][p["name"]] != f])

            llrs = {f: other_fold(0, f) for f in (0, 1)}
            q_main = veto_quantile or QUANTILE
            # variants decided on the same collected evidence (only the veto differs): the
            # APCER/BPCER trade-off of the rule, in one run
            # (mode, veto quantile or None = the fixed veto, FAR or None = the mode's own, the
            # "recognised as" rule before)
            variants: dict[str, tuple[str, float | None, float | None, bool]] = {
                "face+liveness": ("face+liveness", q_main, None, False),
                **{f"face+liveness, veto q={q:g}": ("face+liveness", q, None, False)
                   for q in VETO_SWEEP if q != q_main},
                "face+liveness, fixed veto -2": ("face+liveness", None, None, False),
                f"face+liveness, FAR {STRICT_FAR:g}": ("face+liveness", q_main, STRICT_FAR,
                                                       False),
                f"face+liveness, {BEFORE_RULE}": ("face+liveness", q_main, None, True),
                "two-factor": ("two-factor", q_main, None, False)}
            # (halving, fold, quantile) -> table: every quantile on halving 0, the default one
            # on the other halvings (the live door only)
            vetoes = {(0, f, q): veto_table(llrs[f], q) for f in (0, 1)
                      for q in {v[1] for v in variants.values() if v[1] is not None}}
            vetoes |= {(h, f, q_main): veto_table(other_fold(h, f), q_main)
                       for h in range(1, halvings) for f in (0, 1)}

            def verifier(mode: str, liveness: str, f: int, q: float | None,
                         far: float | None, decisive: float | None = None,
                         min_speech: float = 0.5, before: bool = False,
                         wait: bool = True, h: int = 0) -> Verifier:
                m = op.mode(mode)
                cfg = PipelineConfig(mode=mode, liveness=liveness, min_speech_s=min_speech,
                                     target_far=far or m.target_far,
                                     voice_veto_by_length=vetoes[(h, f, q)] if q is not None
                                     else ((1.0, m.voice_veto_llr),),
                                     decisive_speech_s=decisive,
                                     voice_other_rule="far" if before else None,
                                     voice_confirm_until_s=None if wait else 0.0)
                return Verifier(bundle, handle, cfg, detector, gate)

            def other_rule(mode: str, before: bool, wait: bool = True) -> dict[str, Any]:
                """The voice rules a variant decides with (the report's header)."""
                fl = mode == "face+liveness"
                return {"voice_other_margin_llr": op.modes[mode].voice_other_margin_llr
                        if fl and not before else None,
                        "voice_confirm_until_s": op.modes[mode].voice_confirm_until_s
                        if fl and wait else None}

            verifiers = {(f, key): {name: verifier(m, lv, f, q, far, before=before)
                                    for name, (m, q, far, before) in variants.items()}
                         for f in (0, 1) for key, lv in (("identity", "report"),
                                                         ("live", "required"))}
            # the default mode as the live loop decides (see the module docstring). On the
            # fixed probe with looks from 0.5 s of speech (what `--min-speech 0.5` did on a
            # live source, refused since): a look may grant after the mode's decisive speech
            # (None), or at once (0.5: the rule before). The live door: `edgepin run`'s
            # defaults, the person going on speaking until it decides.
            sequential = {"face+liveness, looks from 0.5 s": None,
                          "face+liveness, looks from 0.5 s, grant at the first look (before)": 0.5}
            # (these emulate a refused option and keep the rules they were measured with: no
            # wait for a confirming voice)
            seq_verifiers = {(f, key): {name: verifier("face+liveness", lv, f, q_main, None, d,
                                                       wait=False)
                                        for name, d in sequential.items()}
                             for f in (0, 1) for key, lv in (("identity", "report"),
                                                             ("live", "required"))}
            # each door looks from a live source's minimum speech (as `edgepin run` sets it)
            default = op.modes["face+liveness"]

            def live_min(d: float | None) -> float:
                return live_min_speech_s(d if d is not None else default.decisive_speech_s)

            def looks_meta(d: float | None, how: str, **more: float) -> dict[str, Any]:
                """The default mode as a live-loop variant decides it (the report's header)."""
                return {**vars(default), "voice_veto": f"calibrated, q={q_main:g} (cross-fitted)",
                        **more, "decisive_speech_s": d if d is not None else
                        default.decisive_speech_s, "sequential": how}

            # doors with the same live minimum look at the same moments: one collector (and
            # one voice embedding per look) serves them all
            door_groups = sorted({live_min(d) for d, _, _ in LIVE_DOORS.values()})
            door_verifiers = {(f, key, g): {name: verifier(
                "face+liveness", lv, f, q_main, None, d, live_min(d), before, wait)
                for name, (d, before, wait) in LIVE_DOORS.items() if live_min(d) == g}
                for g in door_groups
                for f in (0, 1) for key, lv in (("identity", "report"), ("live", "required"))}
            d0, before0, wait0 = LIVE_DOORS[LIVE_DOOR]
            halving_doors = {(h, f, key): verifier(
                "face+liveness", lv, f, q_main, None, d0, live_min(d0), before0, wait0, h)
                for h in range(1, halvings) for f in (0, 1)
                for key, lv in (("identity", "report"), ("live", "required"))}
            plan = plan_attempts(enrolled, strangers, per_kind, rng, seed)

            def state(done: int) -> dict[str, Any]:
                return {"kinds": results, "grid": grid, "gallery_size": len(enrolled),
                        "strangers": len(strangers), "people": len(people),
                        "enrol_voice_s": ENROL_VOICE_S,
                        "enrol_utterances": {p["name"]: p["enrol_utterances"] for p in enrolled},
                        "modes": {name: {**vars(op.modes[m]),
                                         "target_far": far or op.modes[m].target_far,
                                         "voice_veto":
                                         f"calibrated, q={q:g} (cross-fitted)" if q is not None
                                         else f"fixed LLR {op.modes[m].voice_veto_llr:g}",
                                         **other_rule(m, before)}
                                  for name, (m, q, far, before) in variants.items()}
                        | {name: looks_meta(d, f"looks every {LOOK_EVERY_S:g} s of speech")
                           | other_rule("face+liveness", False, wait=False)
                           for name, d in sequential.items()}
                        | {name: looks_meta(
                            d, f"looks every {LOOK_EVERY_S:g} s of speech from {live_min(d):g} "
                            f"s; the person goes on speaking (up to {LIVE_LIMIT_S:g} s) until "
                            "it decides, the short-speech attacker stops",
                            min_speech_s=live_min(d)) | other_rule("face+liveness", before, wait)
                           for name, (d, before, wait) in LIVE_DOORS.items()},
                        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
                        "default_mode": op.default_mode, "machine": machine_info(),
                        "per_kind": per_kind, "precision": precision,
                        "face_tier": (bundle_options or {}).get("face_tier", "student"),
                        "voice_tier": (bundle_options or {}).get("voice_tier", "student"),
                        "voice_veto": {"cross_fitted": {
                            f"fold {f}, q={q:g}": [list(r) for r in t]
                            for (h, f, q), t in vetoes.items() if h == 0},
                            "genuine_trials": {f"fold {f}": {f"{x:g}s": int(v.size)
                                                             for x, v in llrs[f].items()}
                                               for f in (0, 1)}},
                        "halvings": {
                            "count": halvings,
                            "modes": [halving_mode(h) for h in range(halvings)],
                            "what": f"the live door ('{LIVE_DOOR}') decided with its veto "
                                    f"(q={q_main:g}) set on the other fold of each of "
                                    f"{halvings} halvings of the {len(people)} people; halving "
                                    "0 is the one every other mode uses; rows of halvings 1 "
                                    "on keep the decision only",
                            "vetoes": {f"halving {h}, fold {f}": [list(r) for r in t]
                                       for (h, f, _), t in vetoes.items() if h > 0}},
                        "planned": len(plan), "done": done,
                        "load_average": " / ".join(f"{x:.1f}" for x in os.getloadavg())
                        + " (1/5/15 min, at the last checkpoint)"}

            door_group = live_min(d0)  # the live door's looks: its halvings join that group
            halved = {halving_mode(h) for h in range(1, halvings)}
            with Progress(transient=True) as bar:
                task = bar.add_task("attempts", total=len(plan))
                for done, (kind, who, expected, fp, vp, vs, nframes, gen) in enumerate(plan):
                    if checkpoint is not None and done and done % 250 == 0:
                        checkpoint(state(done))
                    try:
                        frames = probe_face(media, fp, nframes, gen)
                        audio, spoken = probe_voice(media, vp, gen, kind == SHORT_KIND)
                    except EdgepinError as exc:
                        results[kind].append({"who": who, "skipped": str(exc)})
                        bar.advance(task)
                        continue
                    out = attempt(verifiers[(fold[fp["name"]], vs)], frames, audio,
                                   f"{kind} {who}")
                    seq = live_looks(seq_verifiers[(fold[fp["name"]], vs)], frames, audio,
                                     f"{kind} {who}")
                    for g in door_groups:
                        doors = dict(door_verifiers[(fold[fp["name"]], vs, g)])
                        if g == door_group:
                            doors |= {halving_mode(h): halving_doors[(h, folds[h][fp["name"]],
                                                                      vs)]
                                      for h in range(1, halvings)}
                        seq |= live_looks(doors, frames, spoken, f"{kind} {who}",
                                          live_end=True)
                    results[kind].append({
                        "who": who, "expected": expected, "speech_s": out[next(iter(out))].speech_s,
                        **{m: row(r) for m, r in out.items()},
                        **{m: {**row(r), "looks": n, "decided_at_s": round(r.speech_s, 2)}
                           for m, (r, n) in seq.items() if m not in halved},
                        **{m: {"granted": r.granted, **({"identity": r.identity}
                                                        if r.identity is not None else {})}
                           for m, (r, _) in seq.items() if m in halved}})
                    bar.advance(task)
            for group in (*verifiers.values(), *seq_verifiers.values(),
                          *door_verifiers.values(), halving_doors):
                for v in group.values():
                    v.close()
            final = state(len(plan))
    bundle.close()
    return final


def write_door(data: Path, models: Path, out: Path, seed: int = 0) -> int:
    """The held-out ARTIFICIAL identities as a list for `edgepin demo --door` (the device
    demo cannot import train/ to recompute the split): paths relative to the data root."""
    bundle = ModelBundle.load(models)
    people = artificial_people(data, bundle, seed)
    bundle.close()
    rows = [{"name": p["name"], "gender": p["gender"],
             "photos": [str(x.relative_to(data)) for x in p["photos"]],
             "utterances": [str(x.relative_to(data)) for x in p["utterances"]]} for p in people]
    doc = {"what": "ARTIFICIAL identities: a held-out LFW person paired with a held-out "
                   "speechocean762 speaker of the same gender (different people)",
           "made_by": "python -m benchmarks.attacks --write-door", "people": rows}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/attacks.md"))
    ap.add_argument("--per-kind", type=int, default=1000)
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--veto-quantile", type=float, default=QUANTILE,
                    help="face+liveness voice veto: this share of genuine voices, per speech "
                         "length, set on the other half of the people (0: the file's veto)")
    ap.add_argument("--halvings", type=int, default=HALVINGS,
                    help="the live door is also decided with the veto set on this many "
                         "halvings of the people (the door gate pools them)")
    ap.add_argument("--face-tier", default=None,
                    help="face model tier to load (e.g. large: ModelBundle.load(face_tier=...), "
                         "with its own operating-point file); default: the bundle's default")
    ap.add_argument("--voice-tier", default=None, choices=("student", "large"),
                    help="voice model tier to load (large: Resemblyzer's GE2E port, "
                         "ModelBundle.load(voice_tier=...), with its own operating-point file, "
                         "e.g. operating_points.voice_large.yaml); default: the student")
    ap.add_argument("--write-door", type=Path, default=None,
                    help="only write the artificial identities for `edgepin demo --door`")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only re-render the markdown from a finished run's JSON")
    args = ap.parse_args(argv)
    if args.write_door is not None:
        n = write_door(args.data, args.models, args.write_door, args.seed)
        print(f"wrote {n} ARTIFICIAL identities to {args.write_door}")
        return 0
    def write(res: dict[str, Any]) -> None:
        summary = summarise(res)
        args.out.write_text(render(res, summary))
        # gzip: per-attempt rows of every mode and veto variant (~4 MB as plain JSON)
        with gzip.open(args.out.with_suffix(".json.gz"), "wt", encoding="utf-8") as fh:
            fh.write(json.dumps({**res, "summary": summary}, separators=(",", ":"),
                                default=str) + "\n")
        plot(summary, args.out.with_suffix(".png"))
        print(f"{res['done']}/{res['planned']} attempts written to {args.out}", flush=True)

    if args.render is not None:  # re-render a finished run's JSON (e.g. after a format change)
        opener = gzip.open if args.render.suffix == ".gz" else open
        with opener(args.render, "rt", encoding="utf-8") as fh:
            write(json.load(fh))
        return 0
    options = {k: v for k, v in (("face_tier", args.face_tier),
                                 ("voice_tier", args.voice_tier)) if v}
    write(run(args.models, args.data, args.per_kind, args.precision, args.seed, args.threads,
              checkpoint=write, veto_quantile=args.veto_quantile or None,
              bundle_options=options, halvings=args.halvings))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
