"""Held-out trials from embedded samples: multi-sample enrolment, two halves of the people.

* ``lfw`` (face), ``speechocean`` (voice): N samples enrol, the rest probe (at most
  ``max_probes`` per person); identities with < N samples only probe (impostor-only),
  identities with exactly N are enrolled and never probe. Voices may instead enrol as the
  door does (``voice_until_s``): the first recordings until that much voiced speech, never
  the last one (``speech_template_rows``).
* ``artificial`` (face+voice): LFW person k and speechocean speaker k (index pairing) treated
  as one "person". They are DIFFERENT people: this set teaches the fusion how two independent
  scores combine. Each face (voice) comparison appears in exactly one row of the
  lfw/speechocean/artificial sets, so no score is counted twice.
* Every identity is in half 0 or half 1 (the seed decides); trials never cross halves.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.scores import TrialScores
from edge_runtime.access.enroll import enrol_voice_count
from edge_runtime.errors import DatasetError
from edge_runtime.store.gallery import make_template


@dataclass
class Embedded:
    """One modality's usable samples, embedded: row i is ``identities[i]`` from ``sources[i]``."""

    identities: list[str]
    emb: np.ndarray
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    probe_emb: np.ndarray | None = None  # row i as a probe (voices cut to the live length)
    probe_by_s: dict[float, np.ndarray] = field(default_factory=dict)  # cut to other lengths
    voiced_s: np.ndarray | None = None  # row i's voiced seconds (voices: what enrolment counts)

    def probes(self, rows: Sequence[int]) -> np.ndarray:
        return (self.emb if self.probe_emb is None else self.probe_emb)[list(rows)]

    def with_probe_length(self, seconds: float) -> Embedded:
        """The same samples, probing with their first ``seconds`` of speech."""
        if seconds not in self.probe_by_s:
            raise DatasetError(f"no probe embeddings of {seconds:g} s were computed")
        return Embedded(self.identities, self.emb, self.sources, self.skipped,
                        self.probe_by_s[seconds], voiced_s=self.voiced_s)


def _rows_by_identity(e: Embedded) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for i, ident in enumerate(e.identities):
        rows[ident].append(i)
    return dict(sorted(rows.items()))


def enrol_rows(e: Embedded, template_rows: Mapping[str, list[int]], max_probes: int | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Templates from each identity's ``template_rows`` (a prefix of its rows in file order);
    every identity's other rows probe (at most ``max_probes``). The one mechanism of ``enrol``
    (first N) and of the door's enrolment by speech (``speech_template_rows``)."""
    if max_probes is not None and max_probes < 1:
        raise DatasetError(f"max_probes must be >= 1 or None, got {max_probes}")
    templates = {ident: make_template(e.emb[r]) for ident, r in template_rows.items()}
    probes = {ident: r[len(template_rows.get(ident, ())):][:max_probes]
              for ident, r in _rows_by_identity(e).items()}
    return templates, probes


def enrol(e: Embedded, n: int, max_probes: int | None = None
          ) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Templates of identities with >= n samples (first n, in file order) and the probe rows.

    Identities with < n samples are not enrolled: all their samples are impostor-only probes.
    An identity with exactly n samples is enrolled with no probe of its own: it is still a
    target for impostors, and a few "lamb" templates (faces that many strangers resemble)
    carry most false accepts, so the more templates, the steadier the FAR. ``max_probes``
    keeps at most that many probes per identity (the first in file order): a person with 50
    photos would otherwise weigh 50 times a person with one.
    """
    if n < 1:
        raise DatasetError(f"enrolment needs at least 1 sample per template, got {n}")
    return enrol_rows(e, {ident: r[:n] for ident, r in _rows_by_identity(e).items()
                          if len(r) >= n}, max_probes)


def speech_template_rows(e: Embedded, until_s: float, minimum: int) -> dict[str, list[int]]:
    """Per speaker, the rows a door's enrolment takes (``enroll_people``): the first
    recordings, in file order, until ``until_s`` of voiced speech from at least ``minimum`` of
    them (``enrol_voice_count``), never the last one. A speaker with one recording has none.
    The thresholds are then measured on templates as good as the ones the door's gallery
    holds, not on shorter ones."""
    if not e.identities:
        return {}
    if e.voiced_s is None or len(e.voiced_s) != len(e.identities):
        raise DatasetError("enrolment by seconds of speech needs each recording's voiced seconds")
    return {ident: r[:enrol_voice_count([float(e.voiced_s[i]) for i in r[:-1]], until_s, minimum)]
            for ident, r in _rows_by_identity(e).items() if len(r) >= 2}


def speech_template_summary(e: Embedded, used: Mapping[str, list[int]]) -> dict[str, float]:
    """How many recordings and seconds of speech the voice templates ``used`` took (for the
    report)."""
    if not used:
        return {"templates": 0}
    assert e.voiced_s is not None  # speech_template_rows checked it
    secs = [float(np.sum(e.voiced_s[r])) for r in used.values()]
    n = [len(r) for r in used.values()]
    return {"templates": len(used), "recordings_mean": float(np.mean(n)),
            "recordings_min": int(min(n)), "recordings_max": int(max(n)),
            "speech_s_median": float(np.median(secs)), "speech_s_min": float(min(secs))}


def _half(identity: str, seed: int) -> int:
    return hashlib.sha256(f"{seed}\x00{identity}".encode()).digest()[0] % 2


def pair_rows(probe_ids: list[str], probe_emb: np.ndarray, t_ids: list[str],
              t_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of every probe with every template (flattened) and the genuine flags."""
    if not probe_ids or not t_ids:
        return np.zeros(0), np.zeros(0, bool)
    s = (probe_emb @ t_emb.T).astype(np.float64).ravel()
    gen = (np.asarray(probe_ids, object)[:, None] == np.asarray(t_ids, object)[None, :]).ravel()
    return s, gen


def pair_identities(face_t: Mapping[str, Any], face_p: Mapping[str, list[int]],
                    voice_t: Mapping[str, Any]) -> list[tuple[str, str]]:
    """ARTIFICIAL persons: enrolled speakers by name paired by index with the enrolled LFW
    people that have the most probe images (ties by name), so each pair has probes of both
    whenever enough such people exist."""
    faces = sorted(face_t, key=lambda i: (-len(face_p[i]), i))
    return list(zip(faces, sorted(voice_t), strict=False))


def held_out_trials(face: Embedded, voice: Embedded, n_face: int, n_voice: int, seed: int,
                    max_probes: int | None = None, voice_until_s: float | None = None
                    ) -> tuple[dict[str, TrialScores], dict[str, np.ndarray], dict[str, Any]]:
    """The lfw / speechocean / artificial sets of both halves (see the module docstring), and
    per row the (probe person, template person) labels a person-level bootstrap resamples.
    ``seed`` alone decides who is in which half (a new seed is a new random split). With
    ``voice_until_s``, voice templates take that much speech from at least ``n_voice``
    recordings (``speech_template_rows``), else exactly ``n_voice`` recordings."""
    ft, fp = enrol(face, n_face, max_probes)
    if voice_until_s is None:
        vt, vp = enrol(voice, n_voice, max_probes)
        voice_templates: dict[str, Any] = {"recordings": n_voice}
    else:
        used = speech_template_rows(voice, voice_until_s, n_voice)
        vt, vp = enrol_rows(voice, used, max_probes)
        voice_templates = {"until_s": voice_until_s, "minimum": n_voice,
                           **speech_template_summary(voice, used)}
    pairs = [(f, v) for f, v in pair_identities(ft, fp, vt) if fp[f] and vp[v]]
    side = np.random.default_rng(seed).permutation(len(pairs)) % 2  # balanced, seeded
    half = {f: int(side[k]) for k, (f, _) in enumerate(pairs)} | {
        v: int(side[k]) for k, (_, v) in enumerate(pairs)}
    person = {f: f"{f}+{v}" for f, v in pairs} | {v: f"{f}+{v}" for f, v in pairs}
    for ident in list(fp) + list(vp):
        half.setdefault(ident, _half(ident, seed))
    parts: dict[str, TrialScores] = {}
    people: dict[str, np.ndarray] = {}

    def rows(e: Embedded, probe: list[int], t_ids: list[str], t: Mapping[str, np.ndarray],
             probe_ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = probe_ids if probe_ids is not None else [e.identities[r] for r in probe]
        t_emb = np.stack([t[i] for i in t_ids]) if t_ids else np.zeros((0, 1))
        sc, gen = pair_rows(ids, e.probes(probe), t_ids, t_emb)
        pp = [person.get(e.identities[r], e.identities[r]) for r in probe]
        tp = [person.get(i, i) for i in t_ids]
        lab = np.stack([np.repeat(np.asarray(pp, object), len(tp)),
                        np.tile(np.asarray(tp, object), len(pp))], 1) if sc.size else \
            np.zeros((0, 2), object)
        return sc, gen, lab

    for h in (0, 1):
        persons = [(f, v) for f, v in pairs if half[f] == h]
        paired_f = {f for f, _ in persons}
        paired_v = {v for _, v in persons}
        ft_ids = sorted(i for i in ft if half[i] == h)
        vt_ids = sorted(i for i in vt if half[i] == h)
        jf, jv, jk = [], [], []  # joint probes: face row, voice row, person index
        face_only = [r for i in fp if half[i] == h and i not in paired_f for r in fp[i]]
        voice_only = [r for i in vp if half[i] == h and i not in paired_v for r in vp[i]]
        for k, (f, v) in enumerate(persons):
            m = min(len(fp[f]), len(vp[v]))
            jf += fp[f][:m]
            jv += vp[v][:m]
            jk += [k] * m
            face_only += fp[f][m:]
            voice_only += vp[v][m:]
        groups: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            "face": [rows(face, face_only, ft_ids, ft)],
            "voice": [rows(voice, voice_only, vt_ids, vt)]}
        if jk:
            pf = {str(k): ft[f] for k, (f, _) in enumerate(persons)}
            pv = {str(k): vt[v] for k, (_, v) in enumerate(persons)}
            ks = [str(k) for k in jk]
            sf, g, lab = rows(face, jf, sorted(pf, key=int), pf, ks)
            sv, _, _ = rows(voice, jv, sorted(pv, key=int), pv, ks)
            names = {str(k): f"{f}+{v}" for k, (f, v) in enumerate(persons)}
            lab[:, 1] = [names[x] for x in np.tile(sorted(pf, key=int), len(jk))]
            parts[f"artificial/{h}"] = TrialScores({"face": sf, "voice": sv}, g)
            people[f"artificial/{h}"] = lab
            # joint probes against the unpaired templates: single-modality impostor rows
            groups["face"].append(rows(face, jf, [i for i in ft_ids if i not in paired_f], ft))
            groups["voice"].append(rows(voice, jv, [i for i in vt_ids if i not in paired_v], vt))
        for name, m in (("lfw", "face"), ("speechocean", "voice")):
            t = TrialScores.concat([TrialScores({m: sc}, gen) for sc, gen, _ in groups[m]])
            if np.asarray(t.genuine).size:
                parts[f"{name}/{h}"] = t
                people[f"{name}/{h}"] = np.concatenate([lab for _, _, lab in groups[m]])
    info = {
        "face_enrolled": len(ft), "face_probe_identities": len(fp),
        "voice_templates": voice_templates,
        "voice_enrolled": len(vt), "voice_probe_identities": len(vp),
        "artificial_pairs": [{"face": f, "voice": v, "half": half[f]} for f, v in pairs],
        "halves": {str(h): {"face_identities": sorted(i for i in fp if half[i] == h),
                            "voice_identities": sorted(i for i in vp if half[i] == h)}
                   for h in (0, 1)},
    }
    return parts, people, info
