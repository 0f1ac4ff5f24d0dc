"""Attack benchmark: presentation and identity attacks at scale, through the real ``Verifier``.

Re-run (about 20-40 min on 2 shared cores; writes attacks.md, attacks.json.gz and attacks.png;
rates, report and plot: ``benchmarks.attacks_report``; the verifiers every attempt is decided
by: ``benchmarks.attacks_doors``; one presentation through the verifiers,
at once or as the live loop looks: ``benchmarks.attacks_present``; the GRID clips:
``benchmarks.attacks_grid``):

    nice -n 19 python -m benchmarks.attacks --models models --data ../shared/data \\
        --out benchmarks/attacks.md [--face-tier large] [--voice-tier large] [--precision int8] \\
        [--enrol-half second]

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
ARTIFICIAL identity. Half of them are enrolled (the first half of a seeded order; ``--enrol-half
second`` enrols the other half, with the same pairings, and the door gate pools the two records:
every held-out voice is then judged enrolled once; 2 photos + their first utterances until
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

from benchmarks.attacks_doors import HALVINGS, LIVE_LIMIT_S, AttackDoors
from benchmarks.attacks_grid import run_grid
from benchmarks.attacks_present import Media
from benchmarks.attacks_report import plot, render, summarise
from benchmarks.machine import machine_info
from calibration.exact_int8 import exact_int8_runners
from calibration.voice_veto import QUANTILE
from edge_runtime.access.enroll import ENROL_VOICE_S, Enroller, enroll_people
from edge_runtime.atomic import write_atomic
from edge_runtime.cpu_int8 import int8_dot_features
from edge_runtime.errors import EdgepinError
from edge_runtime.frontend.audio import TARGET_SR
from edge_runtime.frontend.face import DlibHogDetector
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.frontend.video import Frame
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle
from edge_runtime.store.keys import create_key

PROBE_AUDIO_S = (2.0, 4.0)  # a probe's audio, seconds
SHORT_AUDIO_S = (0.8, 1.2)  # the informed attacker's probe
SHORT_KIND = "mixed-unenrolled, short speech"
HALVES = ("first", "second")  # which half of the seeded order of people is enrolled
KINDS = ("genuine", "zero-effort", "mixed-enrolled", "mixed-unenrolled", "photo", SHORT_KIND)


# ----------------------------------------------------------------------------- people
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


def split_people(people: list[dict[str, Any]], order: np.ndarray, enrol_half: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(enrolled, strangers): ``enrol_half`` of the seeded ``order`` enrolled, the rest
    strangers; "second" swaps the halves of "first", so the two runs enrol every person once."""
    if enrol_half not in HALVES:
        raise EdgepinError(f"--enrol-half must be one of {HALVES}, got {enrol_half!r}")
    first, second = order[: len(people) // 2], order[len(people) // 2:]
    if enrol_half == "second":
        first, second = second, first
    return [people[i] for i in first], [people[i] for i in second]


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
        halvings: int = HALVINGS, enrol_half: str = "first") -> dict[str, Any]:
    try:
        bundle = ModelBundle.load(models, precision=precision, threads=threads,
                                  **(bundle_options or {}))
    except TypeError as exc:  # an option this ModelBundle does not know (no face tiers yet)
        raise EdgepinError(f"{bundle_options}: this ModelBundle does not take it ({exc})") \
            from exc
    try:
        if halvings < 1:
            raise EdgepinError(f"--halvings must be at least 1, got {halvings}")
        op = bundle.operating_points
        if op is None or not op.modes:
            raise EdgepinError(f"{models}: the operating-point file has no security modes")
        with tempfile.TemporaryDirectory(prefix="edgepin-attacks-int8-") as exact_dir:
            if bundle.precision == "int8":
                # as the INT8 operating points and voice veto were measured (calibrate,
                # calibrate-modes): the exact QDQ arithmetic TensorRT computes, not this CPU's
                # int8 kernels where it has no int8 dot-product instruction
                exact_int8_runners(bundle, Path(exact_dir), threads)
            return _attempts(bundle, data, per_kind, precision, seed, checkpoint,
                             veto_quantile, bundle_options, halvings, enrol_half)
    finally:
        bundle.close()


def _attempts(bundle: ModelBundle, data: Path, per_kind: int, precision: str, seed: int,
              checkpoint: Callable[[dict[str, Any]], None] | None,
              veto_quantile: float | None, bundle_options: dict[str, str] | None,
              halvings: int, enrol_half: str) -> dict[str, Any]:
    """Enrol half the people (``enrol_half`` of the seeded order; the others are strangers),
    plan the attempts and decide each through the doors."""
    from rich.progress import Progress

    op = bundle.operating_points
    assert op is not None  # run() checked it
    detector, gate = DlibHogDetector(), SpeechGate("auto")
    grid = run_grid(bundle, data / "grid", detector, gate)  # small: first
    people = artificial_people(data, bundle, seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(people))
    enrolled, strangers = split_people(people, order, enrol_half)
    media = Media()
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="edgepin-attacks-") as tmp:
        key = create_key(Path(tmp) / "g.key")
        with Gallery.open(Path(tmp) / "g.db", key) as gallery:
            enroller = Enroller(bundle, detector, gate, min_speech_s=1.0)
            door = enroll_people(enroller, gallery, enrolled)
            enrolled = [{**p, "enrol_utterances": door.voice_used[p["name"]]}
                        for p in enrolled if p["name"] in door.enrolled]
            doors = AttackDoors(bundle, GalleryHandle.wrap(gallery), detector, gate, people,
                                seed, veto_quantile, halvings)
            plan = plan_attempts(enrolled, strangers, per_kind, rng, seed)

            def state(done: int) -> dict[str, Any]:
                return {"kinds": results, "grid": grid, "gallery_size": len(enrolled),
                        "strangers": len(strangers), "people": len(people),
                        "enrol_half": enrol_half,
                        "enrol_voice_s": ENROL_VOICE_S,
                        "enrol_utterances": {p["name"]: p["enrol_utterances"] for p in enrolled},
                        "modes": doors.modes(),
                        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
                        "default_mode": op.default_mode, "machine": machine_info(),
                        "per_kind": per_kind, "precision": precision,
                        "exact_int8": list(bundle.exact_int8),
                        "int8_dot": int8_dot_features(),
                        "face_tier": (bundle_options or {}).get("face_tier", "student"),
                        "voice_tier": (bundle_options or {}).get("voice_tier", "student"),
                        "voice_veto": doors.voice_veto(), "halvings": doors.halvings_meta(),
                        "planned": len(plan), "done": done,
                        "load_average": " / ".join(f"{x:.1f}" for x in os.getloadavg())
                        + " (1/5/15 min, at the last checkpoint)"}

            try:
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
                        results[kind].append({"who": who, "expected": expected,
                                              **doors.decide(fp["name"], vs, frames, audio,
                                                             spoken, f"{kind} {who}")})
                        bar.advance(task)
            finally:
                doors.close()
            final = state(len(plan))
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


def write_record(res: dict[str, Any], out: Path) -> None:
    """The record (``out``'s .json.gz: per-attempt rows of every mode and veto variant), its
    report (``out``) and plot (.png), each file replaced whole: a run stopped during a
    checkpoint (the machine taken back) leaves the previous checkpoint, not a truncated record
    the door gate cannot read."""
    summary = summarise(res)
    text = render(res, summary)
    payload = gzip.compress((json.dumps({**res, "summary": summary}, separators=(",", ":"),
                                        default=str) + "\n").encode("utf-8"))
    write_atomic(out.with_suffix(".json.gz"), lambda fh: fh.write(payload))
    write_atomic(out, lambda fh: fh.write(text.encode("utf-8")))
    write_atomic(out.with_suffix(".png"), lambda fh: plot(summary, fh))


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
    ap.add_argument("--enrol-half", choices=HALVES, default="first",
                    help="which half of the seeded order of people is enrolled (the other "
                         "half are the strangers); the door gate pools a record of each")
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
        write_record(res, args.out)
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
              bundle_options=options, halvings=args.halvings,
              enrol_half=args.enrol_half))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
