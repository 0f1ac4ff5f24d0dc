"""Does cohort normalisation (AS-norm) of the voice score stop strangers' short voices?

The face+liveness veto ("the voice must not contradict") compares the calibrated LLR of the
raw cosine (short probe vs a 3-utterance template) with the q-quantile of people's OWN voices
at that speech length. A stranger's voice passes it 9-12 % of the time in
``benchmarks/attacks.md``. This script measures, on the voice student's HELD-OUT
speechocean762 speakers (the veto's own people and trials: voiced speech cut to L seconds
against a template of 3 utterances, impostors = other held-out speakers of the same gender),
the raw cosine against adaptive symmetric normalisation (AS-norm): the cosine minus the mean,
over the standard deviation, of the top-K cosines of the probe (and of the template) against a
COHORT of training speakers' utterances, averaged over both sides.

Reported per length: EER, and the impostor pass rate at the threshold that rejects 2 % / 5 %
of genuine trials (what the q = 2 % / 5 % veto does at that length). Intervals: 95 % bootstrap
over the held-out SPEAKERS (probe and template people resampled together), paired between raw
and normalised scores.

The cohort: speechocean762 speakers of the student's TRAINING split (never held-out people)
and, when given, the LibriSpeech train-clean-100 utterances. Primary variant, fixed before
the run: the speechocean762 training utterances, K = 100; the others are sensitivity rows.

Re-run: ``nice -n 19 python -m benchmarks.voice_cohort --models models --data ../shared/data
--librispeech /work/data/librispeech/audio_data/librispeech_train-clean-100
--out benchmarks/voice_cohort.md``
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from calibration.thresholds import people_draws
from edge_runtime.errors import EdgepinError
from edge_runtime.frontend.audio import TARGET_SR, load_audio
from edge_runtime.frontend.vad import SpeechGate
from edge_runtime.models import ModelBundle

LENGTHS_S = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # the veto table's lengths
MIX_CUTS = 4  # random 2-4 s cuts of each probe utterance, as benchmarks/attacks.py cuts them
ENROL = 3
KS = (50, 100, 200)
REJECT = (0.02, 0.05)
MIX_QUANTILES = (0.02, 0.05, 0.1, 0.2)  # what would a stricter veto cost (not a proposal)
PRIMARY = ("speechocean762 train", 100)
BAR = 2 / 3  # integrate only if strangers passing the q = 2 % veto fall by a third or more


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def top_k_stats(emb: np.ndarray, cohort: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row's k highest cosines against the cohort."""
    s = np.atleast_2d(emb) @ cohort.T
    k = min(k, cohort.shape[0])
    top = np.partition(s, s.shape[1] - k, axis=1)[:, -k:]
    return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)


def as_norm(score: np.ndarray, probe_stats: tuple[np.ndarray, np.ndarray],
            template_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Symmetric normalisation of cosines with the two sides' cohort statistics."""
    (mp, sp), (mt, st) = probe_stats, template_stats
    return 0.5 * ((score - mp) / sp + (score - mt) / st)


def _speech(path: Path, gate: SpeechGate) -> np.ndarray | None:
    try:
        wav = load_audio(path, TARGET_SR)
    except EdgepinError:
        return None
    return _voiced(wav, gate)


def _voiced(wav: np.ndarray, gate: SpeechGate) -> np.ndarray | None:
    s = gate.extract_speech(wav, gate.speech_segments(wav))
    return s if s.size else None


def embed_all(bundle: ModelBundle, data: Path, librispeech: Path | None,
              lengths: Sequence[float],
              embed: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Templates and cut probes of the held-out speakers; cohort utterance embeddings.

    ``embed`` (default: the bundle's voice model) lets the teacher be measured on the very
    same speakers, cuts and cohort: the bundle still names which speakers are held out."""
    from rich.progress import Progress

    from calibration.score_sets import model_split
    from calibration.voice_veto import held_out_speakers
    from train.datasets import SpeechFolder, holdout_split
    from train.datasets.labels import read_labels_tsv

    gate = SpeechGate("auto")
    so = SpeechFolder(data / "speechocean762")
    gender = read_labels_tsv(data / "speechocean762" / "SPEAKERS.tsv", "speaker", "gender")
    embed_voice = embed if embed is not None else bundle.embed_voice
    held = held_out_speakers(data, bundle)
    s = model_split(bundle, "voice")
    train = set(holdout_split(so.identities(), s["test_fraction"], s["val_fraction"],
                              s["seed"])["train"])
    if train & {sp["name"] for sp in held}:
        raise EdgepinError("cohort and held-out speakers overlap: refusing to measure")
    train_utts = sorted(str(x.path) for x in so.samples if x.identity in train)
    libri = sorted(str(p) for p in librispeech.glob("*.flac")) if librispeech else []
    total = sum(len(sp["utterances"]) for sp in held) + len(train_utts) + len(libri)
    tmpl, tmpl_who, probes = [], [], {float(x): ([], []) for x in lengths}
    mix: tuple[list, list, list] = ([], [], [])  # attack-like probes: embedding, speech s, who
    rng = np.random.default_rng(0)
    cohort: dict[str, list[np.ndarray]] = {"speechocean762 train": [], "librispeech": []}
    with Progress(transient=True) as bar:
        task = bar.add_task("voice embeddings", total=total)
        for sp in held:
            speech = [_speech(Path(u), gate) for u in sp["utterances"]]
            bar.advance(task, len(speech))
            for u in sp["utterances"][ENROL:]:
                try:
                    wav = load_audio(Path(u), TARGET_SR)
                except EdgepinError:
                    continue
                for _ in range(MIX_CUTS):
                    n = round(rng.uniform(2.0, 4.0) * TARGET_SR)
                    k = int(rng.integers(0, wav.size - n)) if wav.size > n else 0
                    x = _voiced(wav[k: k + n], gate)
                    if x is not None and x.size >= TARGET_SR // 2:  # the Verifier's 0.5 s
                        mix[0].append(embed_voice(x))
                        mix[1].append(x.size / TARGET_SR)
                        mix[2].append(sp["name"])
            enrol = [x for x in speech[:ENROL] if x is not None]
            if not enrol:
                continue
            tmpl.append(_unit(np.mean([embed_voice(x) for x in enrol], axis=0)))
            tmpl_who.append(sp["name"])
            for x in speech[ENROL:]:
                if x is None:
                    continue
                for length, (embs, who) in probes.items():
                    n = int(round(length * TARGET_SR))
                    if x.size >= n:
                        embs.append(embed_voice(x[:n]))
                        who.append(sp["name"])
        for name, utts in (("speechocean762 train", train_utts), ("librispeech", libri)):
            for u in utts:
                x = _speech(Path(u), gate)
                bar.advance(task)
                if x is not None and x.size >= TARGET_SR // 2:
                    cohort[name].append(embed_voice(x))
    return {"templates": np.asarray(tmpl), "template_who": tmpl_who,
            "probes": {x: (np.asarray(e), w) for x, (e, w) in probes.items()},
            "cohort": {k: np.asarray(v) for k, v in cohort.items() if v},
            "mix": {"emb": np.asarray(mix[0]), "speech_s": np.asarray(mix[1]), "who": mix[2]},
            "gender": {sp: gender.get(sp, "?") for sp in tmpl_who},
            "train_speakers": len(train)}


def eer(gen: np.ndarray, imp: np.ndarray) -> float:
    """Equal error rate by sweeping every observed score."""
    t = np.sort(np.concatenate([gen, imp]))
    frr = np.searchsorted(np.sort(gen), t, side="left") / gen.size
    far = 1.0 - np.searchsorted(np.sort(imp), t, side="left") / imp.size
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2)


def pass_rate(gen: np.ndarray, imp: np.ndarray, reject: float) -> float:
    """Share of impostors at or above the genuine ``reject``-quantile (the veto's rule)."""
    return float(np.mean(imp >= np.quantile(gen, reject)))


def trials(emb: Mapping[str, Any], length: float) -> dict[str, np.ndarray]:
    """Genuine and same-gender impostor trials at one length: template/probe indices."""
    return _pair_trials(emb["probes"][length][1], emb)


def scores_for(emb: Mapping[str, Any], length: float, tr: Mapping[str, np.ndarray],
               cohort: np.ndarray | None, k: int) -> np.ndarray:
    return _normalised(emb["probes"][length][0], emb["templates"], tr, cohort, k)


def measure(gen: np.ndarray, imp: np.ndarray) -> dict[str, float]:
    out = {"eer": eer(gen, imp)}
    out.update({f"pass@{r:g}": pass_rate(gen, imp, r) for r in REJECT})
    return out


def bootstrap(tr: Mapping[str, np.ndarray], raw: np.ndarray, norm: np.ndarray,
              n_boot: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Paired 95 % intervals of raw, normalised and their ratio, resampling speakers."""
    keys = [f"pass@{r:g}" for r in REJECT] + ["eer"]
    acc: dict[str, list[float]] = {f"{w} {k}": [] for w in ("raw", "norm", "ratio") for k in keys}
    for idx in people_draws(tr["probe_who"], tr["template_who"], tr["genuine"], n_boot, seed):
        gsel, isel = idx[tr["genuine"][idx]], idx[~tr["genuine"][idx]]
        if gsel.size < 20 or isel.size < 20:
            continue
        r, n = measure(raw[gsel], raw[isel]), measure(norm[gsel], norm[isel])
        for k in keys:
            acc[f"raw {k}"].append(r[k])
            acc[f"norm {k}"].append(n[k])
            acc[f"ratio {k}"].append(n[k] / r[k] if r[k] > 0 else np.nan)
    return {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5)))
            for k, v in acc.items() if v}


def _pair_trials(probe_who: Sequence[str], emb: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every probe against its own template and the templates of the same gender."""
    tw, g = emb["template_who"], emb["gender"]
    pi, ti = zip(*[(i, j) for i, who in enumerate(probe_who) for j, t in enumerate(tw)
                   if t == who or g[t] == g[who]], strict=True)
    pi, ti = np.asarray(pi), np.asarray(ti)
    return {"p": pi, "t": ti, "genuine": np.asarray(probe_who)[pi] == np.asarray(tw)[ti],
            "probe_who": np.asarray(probe_who)[pi], "template_who": np.asarray(tw)[ti]}


def _normalised(pe: np.ndarray, te: np.ndarray, tr: Mapping[str, np.ndarray],
                cohort: np.ndarray | None, k: int) -> np.ndarray:
    raw = np.einsum("ij,ij->i", pe[tr["p"]], te[tr["t"]])
    if cohort is None:
        return raw
    ps, ts = top_k_stats(pe, cohort, k), top_k_stats(te, cohort, k)
    return as_norm(raw, (ps[0][tr["p"]], ps[1][tr["p"]]), (ts[0][tr["t"]], ts[1][tr["t"]]))


def attack_mix(emb: Mapping[str, Any], cohort: np.ndarray | None, k: int, reject: float,
               seed: int = 7) -> dict[str, np.ndarray]:
    """The veto as ``benchmarks/attacks.py`` applies it, on voice alone: probes are random
    2-4 s cuts of raw utterances (their voiced length varies); the veto is the per-length
    ``reject``-quantile of genuine cut-length scores of the OTHER fold's speakers,
    interpolated at the probe's speech length. Returns per trial: passed, genuine, people."""
    tw = emb["template_who"]
    order = np.random.default_rng(seed).permutation(len(tw))
    fold = {tw[i]: n % 2 for n, i in enumerate(order)}
    tables = {}
    for f in (0, 1):
        xs, ys = [], []
        for length in sorted(emb["probes"]):
            tr = trials(emb, length)
            sc = _normalised(emb["probes"][length][0], emb["templates"], tr, cohort, k)
            own = tr["genuine"] & np.array([fold[t] == f for t in tr["template_who"]])
            if own.sum() >= 20:
                xs.append(length)
                ys.append(float(np.quantile(sc[own], reject)))
        tables[f] = (np.asarray(xs), np.asarray(ys))
    mix = emb["mix"]
    tr = _pair_trials(mix["who"], emb)
    sc = _normalised(mix["emb"], emb["templates"], tr, cohort, k)
    secs = mix["speech_s"][tr["p"]]
    thr = np.empty_like(sc)
    for f in (0, 1):
        sel = np.array([fold[t] != f for t in tr["template_who"]])  # veto set on fold f
        thr[sel] = np.interp(secs[sel], *tables[f])
    return {**tr, "passed": sc >= thr, "speech_s": secs}


def _mix_rates(tr: Mapping[str, np.ndarray], idx: np.ndarray) -> tuple[float, float]:
    g = tr["genuine"][idx]
    p = tr["passed"][idx]
    return float(np.mean(~p[g])), float(np.mean(p[~g]))


def mix_summary(raw: Mapping[str, np.ndarray], norm: Mapping[str, np.ndarray],
                n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Genuine rejection and impostor pass of the veto, raw vs normalised, speaker bootstrap."""
    every = np.arange(raw["passed"].size)
    out: dict[str, Any] = {"raw": _mix_rates(raw, every), "norm": _mix_rates(norm, every),
                           "genuine": int(raw["genuine"].sum()),
                           "impostor": int((~raw["genuine"]).sum()),
                           "median_speech_s": float(np.median(raw["speech_s"]))}
    draws = []
    for idx in people_draws(raw["probe_who"], raw["template_who"], raw["genuine"], n_boot, seed):
        r, n = _mix_rates(raw, idx), _mix_rates(norm, idx)
        draws.append((*r, *n, n[1] / r[1] if r[1] else np.nan))
    d = np.asarray(draws)
    lo, hi = np.nanpercentile(d, 2.5, axis=0), np.nanpercentile(d, 97.5, axis=0)
    out["ci"] = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(
        ("raw reject", "raw pass", "norm reject", "norm pass", "pass ratio"))}
    return out


def analyse(emb: Mapping[str, Any]) -> dict[str, Any]:
    cohorts = dict(emb["cohort"])
    if len(cohorts) > 1:
        cohorts["both"] = np.concatenate(list(cohorts.values()))
    out: dict[str, Any] = {"lengths": {}}
    for length in sorted(emb["probes"]):
        tr = trials(emb, length)
        raw = scores_for(emb, length, tr, None, 0)
        g = tr["genuine"]
        row: dict[str, Any] = {"genuine": int(g.sum()), "impostor": int((~g).sum()),
                               "speakers": int(np.unique(tr["probe_who"]).size),
                               "raw": measure(raw[g], raw[~g]), "norm": {}}
        for name, c in cohorts.items():
            for k in KS:
                if k > c.shape[0]:
                    continue
                s = scores_for(emb, length, tr, c, k)
                row["norm"][f"{name}, K={k}"] = measure(s[g], s[~g])
            s = scores_for(emb, length, tr, c, c.shape[0])
            row["norm"][f"{name}, all (S-norm)"] = measure(s[g], s[~g])
        prim = scores_for(emb, length, tr, cohorts[PRIMARY[0]], PRIMARY[1])
        row["primary_ci"] = bootstrap(tr, raw, prim)
        out["lengths"][f"{length:g}"] = row
    out["cohort_sizes"] = {k: int(v.shape[0]) for k, v in cohorts.items()}
    out["mix"] = {}
    for q in MIX_QUANTILES:  # the primary cohort at the shipped q and looser ones
        variants = [(n, k) for n in cohorts for k in KS if k <= cohorts[n].shape[0]] \
            if q == REJECT[0] else [PRIMARY]
        raw = attack_mix(emb, None, 0, q)
        for name, k in variants:
            out["mix"][f"q={q:g}, {name}, K={k}"] = mix_summary(
                raw, attack_mix(emb, cohorts[name], k, q))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def summary_lines(mix: Mapping[str, Any], prim: str) -> list[str]:
    """The verdict, computed from the figures (the bar was set before the run)."""
    m = mix[f"q={REJECT[0]:g}, {prim}"]
    ratio, (lo, hi) = m["norm"][1] / m["raw"][1], m["ci"]["pass ratio"]
    strict = [(float(k.split(",")[0][2:]), v) for k, v in mix.items() if k.endswith(prim)]
    lines = [
        "## Summary", "",
        f"With the veto as shipped (q = {100 * REJECT[0]:g} %) on attack-like 2-4 s probes, "
        f"AS-norm ({prim}) lets {_pct(m['norm'][1])} of same-gender strangers' voices past "
        f"the veto instead of {_pct(m['raw'][1])} (ratio {ratio:.2f}, 95 % CI {lo:.2f}-"
        f"{hi:.2f}), vetoing {_pct(m['norm'][0])} of people's own voices instead of "
        f"{_pct(m['raw'][0])}. The bar set before measuring (strangers passing down by a "
        f"third or more, ratio <= {BAR:.2f}) is **{'met' if ratio <= BAR else 'NOT met'}**.",
        "",
        "What a stricter veto would cost (own voices vetoed -> strangers passing, raw / "
        "AS-norm): " + "; ".join(
            f"q = {100 * q:g} %: {_pct(v['raw'][0])} -> {_pct(v['raw'][1])} / "
            f"{_pct(v['norm'][0])} -> {_pct(v['norm'][1])}" for q, v in strict) + ".",
    ]
    return lines


def _voice_model_line(res: Mapping[str, Any]) -> str:
    """Which voice model made the embeddings (``--voice``), for the report's header."""
    same = (f"on the held-out speakers of the voice student in `{res['models']}` (the same "
            "speakers, cuts and cohort as the student's run).")
    if res.get("voice") == "teacher":
        return (f"Voice model: the TEACHER ({res['voice_sha256']}, `train.teachers.VoiceTeacher`: "
                "Resemblyzer with its own silence trimming), " + same)
    if res.get("voice") == "large":
        return (f"Voice model: the teacher's ONNX PORT, the large voice tier "
                f"({res['voice_sha256']}, `models/voice_large.onnx` through "
                "`edge_runtime.frontend.ge2e.embed_ge2e` on onnxruntime: volume normalisation but "
                "no webrtcvad trimming, the speech gate's voiced speech only), " + same)
    return (f"Models: `{res['models']}` ({res['precision']}), voice model sha256 "
            f"{res['voice_sha256'][:12]}..., through `edge_runtime.ModelBundle.embed_voice`.")


def render(res: Mapping[str, Any]) -> str:
    m = res["machine"]
    prim = f"{PRIMARY[0]}, K={PRIMARY[1]}"
    lines = [
        "# Voice cohort normalisation (AS-norm) vs raw cosine, held-out speakers",
        "",
        f"Machine: {m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}. Date: {m['date']}. Load average: {res['load']} (1/5/15 min, at "
        "the end; a shared 2-core machine: no timing here).",
        "",
        _voice_model_line(res),
        "",
        f"Data: the voice student's held-out speechocean762 speakers ({res['speakers']}, test + "
        "val split), the veto's own construction (`calibration/voice_veto.py`): template = "
        f"normalised mean of {ENROL} utterances' voiced speech, probes = every other utterance's "
        "voiced speech cut to L seconds; impostors = the other held-out speakers of the SAME "
        "gender (the stranger of the mixed-unenrolled attack). Cohort: utterances of the "
        f"student's {res['train_speakers']} TRAINING speakers "
        f"({res['analysis']['cohort_sizes'].get('speechocean762 train', 0)} utterances)"
        + (f" and {res['analysis']['cohort_sizes']['librispeech']} LibriSpeech train-clean-100 "
           "utterances (one per speaker)" if "librispeech" in res["analysis"]["cohort_sizes"]
           else "") + ".",
        "",
        "AS-norm: s' = ((s - mu_p) / sd_p + (s - mu_t) / sd_t) / 2, mu/sd over the top-K "
        "cosines of the probe (p) and of the template (t) against the cohort. `pass @ 2 %`: "
        "share of impostor trials at or above the score that rejects 2 % of genuine trials "
        "at that length (exactly what the q = 2 % veto does, the calibration being monotone "
        f"per length). Primary variant fixed before the run: **{prim}**; 95 % intervals: "
        "bootstrap over speakers (1000 draws), paired raw vs normalised.",
        "",
        f"Re-run: `{res['command']}`",
        "",
        *summary_lines(res["analysis"]["mix"], prim),
        "",
        "## Primary variant vs raw cosine",
        "",
        "| speech | genuine / impostor trials | EER raw | EER AS-norm | pass @ 2 % raw | "
        "pass @ 2 % AS-norm | ratio (CI) | pass @ 5 % raw | pass @ 5 % AS-norm | ratio (CI) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for length, row in res["analysis"]["lengths"].items():
        r, n, ci = row["raw"], row["norm"][prim], row["primary_ci"]
        cells = [f"{length} s", f"{row['genuine']} / {row['impostor']}",
                 f"{_pct(r['eer'])} ({_pct(ci['raw eer'][0])}-{_pct(ci['raw eer'][1])})",
                 f"{_pct(n['eer'])} ({_pct(ci['norm eer'][0])}-{_pct(ci['norm eer'][1])})"]
        for q in REJECT:
            key = f"pass@{q:g}"
            lo, hi = ci[f"ratio {key}"]
            cells += [f"{_pct(r[key])} ({_pct(ci['raw ' + key][0])}-{_pct(ci['raw ' + key][1])})",
                      f"{_pct(n[key])} ({_pct(ci['norm ' + key][0])}-"
                      f"{_pct(ci['norm ' + key][1])})",
                      f"{n[key] / r[key]:.2f} ({lo:.2f}-{hi:.2f})" if r[key] else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    mix = res["analysis"]["mix"]
    first = next(iter(mix.values()))
    lines += ["", "## The veto as the attack benchmark applies it (voice part only)", "",
              f"Probes: {MIX_CUTS} random 2-4 s cuts of each probe utterance (as "
              "`benchmarks/attacks.py` cuts them; median voiced length "
              f"{first['median_speech_s']:.2f} s), {first['genuine']} genuine / "
              f"{first['impostor']} same-gender stranger trials. Veto: per speech length the "
              "q-quantile of genuine scores at that length, set on the OTHER half of the "
              "speakers (cross-fitted as in the attack benchmark), interpolated at the probe's "
              "voiced length; raw cosine and AS-norm score each get their own table (score "
              "domain, not LLR). `pass` = a stranger's voice NOT vetoed; `reject` = an own "
              "voice vetoed. 95 % intervals: speaker bootstrap.", "",
              "| veto q, cohort | own voices vetoed raw | AS-norm | strangers passing raw | "
              "AS-norm | ratio (CI) |", "|---|---|---|---|---|---|"]
    for name, m in mix.items():
        ci = m["ci"]
        lines.append(
            f"| {name} | {_pct(m['raw'][0])} | {_pct(m['norm'][0])} | {_pct(m['raw'][1])} "
            f"({_pct(ci['raw pass'][0])}-{_pct(ci['raw pass'][1])}) | {_pct(m['norm'][1])} "
            f"({_pct(ci['norm pass'][0])}-{_pct(ci['norm pass'][1])}) | "
            f"{m['norm'][1] / m['raw'][1]:.2f} ({ci['pass ratio'][0]:.2f}-"
            f"{ci['pass ratio'][1]:.2f}) |")
    lines += ["", "## Every variant (EER / pass @ 2 % / pass @ 5 %)", "",
              "| variant | " + " | ".join(f"{x} s" for x in res["analysis"]["lengths"]) + " |",
              "|---|" + "---|" * len(res["analysis"]["lengths"])]
    names = ["raw cosine", *next(iter(res["analysis"]["lengths"].values()))["norm"]]
    for name in names:
        cells = []
        for row in res["analysis"]["lengths"].values():
            v = row["raw"] if name == "raw cosine" else row["norm"][name]
            cells.append(f"{_pct(v['eer'])} / {_pct(v['pass@0.02'])} / {_pct(v['pass@0.05'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--librispeech", type=Path, default=None,
                    help="LibriSpeech train-clean-100 folder (flat flac files), extra cohort")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--voice", default="student", choices=("student", "teacher", "large"),
                    help="whose embeddings: the shipped voice model, its teacher (Resemblyzer, "
                         "needs the train extra), or the teacher's ONNX port as the device "
                         "would run it (models/voice_large.onnx: edgepin port-resemblyzer) on "
                         "the same speakers and cuts")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/voice_cohort.md"))
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="npz cache of the embeddings (keyed by the voice model's hash)")
    args = ap.parse_args(argv)
    bundle = ModelBundle.load(args.models, precision=args.precision, threads=args.threads)
    sha = bundle.hashes["voice"]
    embed = None
    if args.voice == "teacher":
        from train.teachers import VoiceTeacher

        teacher = VoiceTeacher()
        embed, sha = teacher.embed, teacher.version
    elif args.voice == "large":
        from benchmarks.voice_large import large_embedder

        embed, sha = large_embedder(args.models, args.threads)
    emb = None
    if args.embeddings is not None and args.embeddings.is_file():
        with np.load(args.embeddings, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["voice_sha256"] == sha:
                emb = {"templates": z["templates"], "template_who": meta["template_who"],
                       "gender": meta["gender"], "train_speakers": meta["train_speakers"],
                       "probes": {float(x): (z[f"probe_{x}"], meta["probe_who"][x])
                                  for x in meta["probe_who"]},
                       "cohort": {k: z[f"cohort_{i}"] for i, k in enumerate(meta["cohorts"])},
                       "mix": {"emb": z["mix_emb"], "speech_s": z["mix_speech_s"],
                               "who": meta["mix_who"]}}
    if emb is None:
        emb = embed_all(bundle, args.data, args.librispeech, LENGTHS_S, embed)
        if args.embeddings is not None:
            meta = {"voice_sha256": sha, "template_who": emb["template_who"],
                    "gender": emb["gender"], "train_speakers": emb["train_speakers"],
                    "probe_who": {f"{x:g}": w for x, (_, w) in emb["probes"].items()},
                    "cohorts": list(emb["cohort"]), "mix_who": emb["mix"]["who"]}
            np.savez(args.embeddings, meta=json.dumps(meta), templates=emb["templates"],
                     mix_emb=emb["mix"]["emb"], mix_speech_s=emb["mix"]["speech_s"],
                     **{f"probe_{x:g}": e for x, (e, _) in emb["probes"].items()},
                     **{f"cohort_{i}": v for i, v in enumerate(emb["cohort"].values())})
    bundle.close()
    res = {"analysis": analyse(emb), "machine": machine_info(), "models": str(args.models),
           "precision": args.precision, "voice": args.voice, "voice_sha256": sha, "speakers": len(emb["template_who"]),
           "train_speakers": emb["train_speakers"],
           "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
           "command": "nice -n 19 python -m benchmarks.voice_cohort --models "
                      f"{args.models} --data {args.data}"
                      + (f" --librispeech {args.librispeech}" if args.librispeech else "")
                      + f" --precision {args.precision} --voice {args.voice} --out {args.out}"}
    args.out.write_text(render(res))
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
