"""`edgepin eval crossmodal`: cosine-in-PIN-space and FAA scoring, side by side, per split.

For every split (real/artificial x seen-heard/unseen-unheard) both scorers fill one
voice x face score matrix; every metric is read off those matrices with the tested
implementations in `edge_runtime.metrics`:
- verification: all genuine (voice, face) pairs of one identity (capped per identity) and a
  seeded sample of impostor pairs -> AUC, EER;
- 1:2 matching V->F (a voice, pick its face of two) and F->V; 1:N V->F and F->V with N
  configurable (capped at the number of identities in the split; chance = 1/N);
- retrieval mAP V->F and F->V.
The models are run exactly as shipped: the ONNX files of the manifest, with onnxruntime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.metrics import matching_1_to_n_accuracy, retrieval_map, verification_report
from train.pins.data import EVAL_SPLITS, SPLIT_NAMES, CrossModalSet

SCORERS = ("cosine", "faa")


def crossmodal_pairs(voice_ids: Sequence[str], face_ids: Sequence[str], *,
                     max_genuine_per_identity: int, max_impostor_per_identity: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) (voice index, face index) pairs, each (n, 2) int64, sorted, unique.

    Genuine: every same-identity combination, sampled down to the per-identity cap.
    Impostor: per identity, up to the cap drawn from (its voices x other faces) and
    (other voices x its faces). Identities visited in sorted order: depends only on inputs.
    """
    v = np.asarray(list(voice_ids), dtype=object)
    f = np.asarray(list(face_ids), dtype=object)
    rng = np.random.default_rng(seed)
    gen, imp = [], []
    for ident in sorted(set(v.tolist()) | set(f.tolist())):
        vi, fi = np.flatnonzero(v == ident), np.flatnonzero(f == ident)
        vo, fo = np.flatnonzero(v != ident), np.flatnonzero(f != ident)
        if vi.size and fi.size:
            a, b = (x.ravel() for x in np.meshgrid(vi, fi, indexing="ij"))
            if a.size > max_genuine_per_identity:
                pick = rng.choice(a.size, size=max_genuine_per_identity, replace=False)
                a, b = a[pick], b[pick]
            gen.append(np.stack([a, b], axis=1))
        n1, n2 = vi.size * fo.size, vo.size * fi.size
        if n1 + n2 == 0 or max_impostor_per_identity == 0:
            continue
        flat = rng.choice(n1 + n2, size=min(max_impostor_per_identity, n1 + n2), replace=False)
        one, two = flat[flat < n1], flat[flat >= n1] - n1
        imp.append(np.stack([vi[one // max(fo.size, 1)], fo[one % max(fo.size, 1)]], axis=1))
        imp.append(np.stack([vo[two // max(fi.size, 1)], fi[two % max(fi.size, 1)]], axis=1))

    def canon(chunks: list[np.ndarray]) -> np.ndarray:
        if not chunks:
            return np.empty((0, 2), dtype=np.int64)
        return np.unique(np.concatenate(chunks).astype(np.int64), axis=0)

    return canon(gen), canon(imp)


def split_metrics(scores: dict[str, np.ndarray], voice_ids: Sequence[str],
                  face_ids: Sequence[str], *, n_way: int, trials: int, seed: int,
                  max_genuine_per_identity: int, max_impostor_per_identity: int,
                  pairs: tuple[np.ndarray, np.ndarray] | None = None,
                  genders: dict[str, str] | None = None) -> dict:
    """Every metric of one split for each scorer's (n_voices, n_faces) score matrix.

    `pairs`: a fixed (genuine, impostor) trial list (voice index, face index) instead of the
    seeded sample; `genders` ({identity: "M"/"F"}): also report verification on the
    gender-matched impostors only (both people of an impostor pair of one labelled gender)."""
    vid, fid = list(voice_ids), list(face_ids)
    n_ids = len(set(vid) & set(fid))
    if n_ids < 2:
        raise ConfigError(f"cross-modal metrics need >= 2 identities with both a face and a "
                          f"voice, found {n_ids}")
    gp, ip = pairs if pairs is not None else crossmodal_pairs(
        vid, fid, max_genuine_per_identity=max_genuine_per_identity,
        max_impostor_per_identity=max_impostor_per_identity, seed=seed)
    gm = None
    if genders:
        gv = [genders.get(vid[a]) for a in ip[:, 0]]
        gf = [genders.get(fid[b]) for b in ip[:, 1]]
        gm = np.array([x is not None and x == y for x, y in zip(gv, gf, strict=True)], bool)
    n = min(n_way, n_ids)
    out: dict[str, Any] = {"n_identities": n_ids, "n_faces": len(fid), "n_voices": len(vid),
                           "n_way": n, "n_way_requested": n_way, "chance_1_to_n": 1.0 / n,
                           "trials": trials}
    for name, s in scores.items():
        if s.shape != (len(vid), len(fid)):
            raise ValueError(f"{name} scores {s.shape} != ({len(vid)}, {len(fid)})")
        rep = verification_report(s[gp[:, 0], gp[:, 1]], s[ip[:, 0], ip[:, 1]], fars=(1e-2,))
        out[name] = {
            "auc": rep["auc"], "eer": rep["eer"], "n_genuine": rep["n_genuine"],
            "n_impostor": rep["n_impostor"],
            "match_1_2_v2f": matching_1_to_n_accuracy(s, vid, fid, 2, trials, seed),
            "match_1_2_f2v": matching_1_to_n_accuracy(s.T, fid, vid, 2, trials, seed),
            f"match_1_{n}_v2f": matching_1_to_n_accuracy(s, vid, fid, n, trials, seed),
            f"match_1_{n}_f2v": matching_1_to_n_accuracy(s.T, fid, vid, n, trials, seed),
            "map_v2f": retrieval_map(s, vid, fid),
            "map_f2v": retrieval_map(s.T, fid, vid),
        }
        if gm is not None and gm.any():
            g_rep = verification_report(s[gp[:, 0], gp[:, 1]], s[ip[gm, 0], ip[gm, 1]], fars=())
            out[name]["gender_matched"] = {"auc": g_rep["auc"], "eer": g_rep["eer"],
                                           "n_impostor": g_rep["n_impostor"]}
        out[name]["_scores"] = (s[gp[:, 0], gp[:, 1]], s[ip[:, 0], ip[:, 1]])
    return out


def unimodal_eers(face_emb: np.ndarray, face_ids: Sequence[str], voice_emb: np.ndarray,
                  voice_ids: Sequence[str], *, seed: int, max_impostor_per_identity: int
                  ) -> dict:
    """Face-face and voice-voice verification of the same people with the students alone
    (cosine of student embeddings), so a cross-modal figure can be read against them."""
    from edge_runtime.metrics import make_pairs

    out: dict[str, Any] = {}
    for name, emb, ids in (("face", face_emb, face_ids), ("voice", voice_emb, voice_ids)):
        gp, ip = make_pairs(list(ids), max_impostor_per_identity=max_impostor_per_identity,
                            seed=seed, max_genuine_per_identity=500)
        if not len(gp) or not len(ip):
            out[name] = {"eer": None, "auc": None, "reason": f"{len(gp)} genuine / {len(ip)} "
                         "impostor pairs (needs >= 2 samples of a person and >= 2 people)"}
            continue
        sg = np.sum(emb[gp[:, 0]] * emb[gp[:, 1]], axis=1)
        si = np.sum(emb[ip[:, 0]] * emb[ip[:, 1]], axis=1)
        rep = verification_report(sg, si, fars=())
        out[name] = {"eer": rep["eer"], "auc": rep["auc"], "n_genuine": rep["n_genuine"],
                     "n_impostor": rep["n_impostor"]}
    return out


TRIALS_HEADER = """\
# edgepin cross-modal trial list (one line per trial): split, label (1 = same person),
# voice row, face row; rows are named by their source (file relative to --data, or
# file@seconds for a frame or an audio piece). Definition: per split, every same-identity
# (voice, face) combination sampled down to max_genuine_per_identity per person, and per
# person up to max_impostor_per_identity impostors drawn from (its voices x other people's
# faces) and (other voices x its faces); people in sorted order, numpy default_rng(seed).
"""


def relative_sources(cms: CrossModalSet, data_root: str | Path) -> None:
    """Name rows relative to the data root (in place), so a trial list written on one machine
    reads on another: `/data/vox1/wav/id1/v/1.wav` -> `wav/id1/v/1.wav`, `@t` kept."""
    import os

    root = os.path.abspath(str(data_root))

    def rel(src: str) -> str:
        path, at, t = str(src).partition("@")
        full = os.path.abspath(path)
        return (os.path.relpath(full, root) if full.startswith(root + os.sep) else path) + at + t

    for table in (cms.face, cms.voice):
        table.source = np.asarray([rel(x) for x in table.source], dtype=object)


def write_trials(path: str | Path, trials: dict[str, tuple[list[tuple[str, str]],
                                                           list[tuple[str, str]]]],
                 definition: dict) -> None:
    """Write {split: (genuine, impostor) [(voice source, face source)]} as a text list."""
    lines = [TRIALS_HEADER.rstrip("\n"), f"# parameters: {definition}"]
    for split, (gen, imp) in trials.items():
        lines += [f"{split}\t1\t{v}\t{f}" for v, f in gen]
        lines += [f"{split}\t0\t{v}\t{f}" for v, f in imp]
    Path(path).write_text("\n".join(lines) + "\n")


def read_trials(path: str | Path) -> dict[str, tuple[list[tuple[str, str]],
                                                     list[tuple[str, str]]]]:
    """Inverse of `write_trials`; ConfigError naming the file and line if malformed."""
    out: dict[str, tuple[list, list]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 4 or parts[1] not in ("0", "1"):
            raise ConfigError(f"{path}:{n}: expected split<TAB>0|1<TAB>voice<TAB>face")
        out.setdefault(parts[0], ([], []))[0 if parts[1] == "1" else 1].append(
            (parts[2], parts[3]))
    return out


def _pairs_from_trials(gen: list[tuple[str, str]], imp: list[tuple[str, str]],
                       voice_src: Sequence[str], face_src: Sequence[str], where: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    vpos = {s: i for i, s in enumerate(voice_src)}
    fpos = {s: i for i, s in enumerate(face_src)}
    out = []
    for chunk in (gen, imp):
        try:
            out.append(np.array([[vpos[v], fpos[f]] for v, f in chunk],
                                dtype=np.int64).reshape(-1, 2))
        except KeyError as exc:
            raise ConfigError(f"trial list ({where}) names row {exc.args[0]!r}, which the data "
                              "does not have: the list was made on other files") from None
    return out[0], out[1]


class OnnxCrossModal:
    """The shipped cross-modal models (pin_face, pin_voice, faa) run with onnxruntime."""

    def __init__(self, model_dir: str | Path, threads: int = 2) -> None:
        from edge_runtime.backends import load_runner
        from edge_runtime.bundle import load_manifest

        self.root = Path(model_dir)
        entries = load_manifest(self.root)
        missing = [n for n in ("pin_face", "pin_voice", "faa") if n not in entries]
        if missing:
            raise ModelError(f"{self.root}: manifest has no {missing} entry (run edgepin train "
                             "pins and fuse with --export to this folder)")
        self.meta = {n: entries[n].meta for n in ("pin_face", "pin_voice", "faa")}
        self.run = {n: load_runner(entries[n].verified_path(), backend="onnxruntime",
                                   threads=threads) for n in ("pin_face", "pin_voice", "faa")}

    def pins(self, face_emb: np.ndarray, voice_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (self.run["pin_face"].run({"face_emb": face_emb})["pin"],
                self.run["pin_voice"].run({"voice_emb": voice_emb})["pin"])

    def faa_matrix(self, face_emb: np.ndarray, voice_emb: np.ndarray, chunk: int = 8192
                   ) -> np.ndarray:
        """(n_voices, n_faces) match probabilities of every pair."""
        vi, fi = (x.ravel() for x in np.meshgrid(np.arange(len(voice_emb)),
                                                 np.arange(len(face_emb)), indexing="ij"))
        out = np.empty(vi.size, dtype=np.float32)
        for a in range(0, vi.size, chunk):
            b = min(vi.size, a + chunk)
            res = self.run["faa"].run({"face_emb": face_emb[fi[a:b]],
                                       "voice_emb": voice_emb[vi[a:b]]})["match_prob"]
            out[a:b] = np.asarray(res).reshape(-1)
        return out.reshape(len(voice_emb), len(face_emb))


def evaluate_set(cms: CrossModalSet, pins: Any, *, n_way: int, trials: int, seed: int,
                 max_genuine_per_identity: int, max_impostor_per_identity: int,
                 genders: dict[str, str] | None = None, trial_list: dict | None = None,
                 trials_out: dict | None = None) -> list[dict]:
    """Rows (one per split present) of metrics for both scorers; `pins` has .pins/.faa_matrix.

    `trial_list` ({split name: (genuine, impostor)} by row source) fixes the trials; the
    trials used are added to `trials_out` when given (to write them once)."""
    rows = []
    for data, role in EVAL_SPLITS:
        sub = cms.where(data=data, role=role)
        ids = set(sub.face.identity.tolist()) & set(sub.voice.identity.tolist())
        if len(ids) < 2:
            continue
        key = f"{data}/{SPLIT_NAMES[role]}"
        pairs = None
        if trial_list is not None:
            if key not in trial_list:
                raise ConfigError(f"trial list has no {key!r} trials (has {sorted(trial_list)})")
            pairs = _pairs_from_trials(*trial_list[key], sub.voice.source.tolist(),
                                       sub.face.source.tolist(), key)
        fp, vp = pins.pins(sub.face.emb, sub.voice.emb)
        scores = {"cosine": (vp @ fp.T).astype(np.float64),
                  "faa": pins.faa_matrix(sub.face.emb, sub.voice.emb).astype(np.float64)}
        m = split_metrics(scores, sub.voice.identity.tolist(), sub.face.identity.tolist(),
                          n_way=n_way, trials=trials, seed=seed,
                          max_genuine_per_identity=max_genuine_per_identity,
                          max_impostor_per_identity=max_impostor_per_identity, pairs=pairs,
                          genders=genders)
        if trials_out is not None:
            gp, ip = pairs if pairs is not None else crossmodal_pairs(
                sub.voice.identity.tolist(), sub.face.identity.tolist(),
                max_genuine_per_identity=max_genuine_per_identity,
                max_impostor_per_identity=max_impostor_per_identity, seed=seed)
            vs, fs = sub.voice.source, sub.face.source
            trials_out[key] = ([(vs[a], fs[b]) for a, b in gp], [(vs[a], fs[b]) for a, b in ip])
        both = sub.face.take(np.isin(sub.face.identity, list(ids))), sub.voice.take(
            np.isin(sub.voice.identity, list(ids)))  # the same people as the cross-modal rows
        m["unimodal"] = unimodal_eers(both[0].emb, both[0].identity.tolist(), both[1].emb,
                                      both[1].identity.tolist(), seed=seed,
                                      max_impostor_per_identity=max_impostor_per_identity)
        rows.append({"data": data, "split": SPLIT_NAMES[role], **m})
    return rows


def _folder_dcfg(cfg: dict, source: str, pairing: str | None) -> dict:
    """Data settings for scoring a folder never trained on (`--split all`)."""
    d = cfg.get("data", {})
    prep = d.get("grid_prep", d)  # edge configs keep frame settings under grid_prep
    out = {"source": source, "root": ".", "frame_step": int(prep.get("frame_step", 5)),
           "max_frames": int(d.get("max_frames", 250)), "voice_segment_s": 1.0,
           "frames_per_video": int(d.get("frames_per_video", 5)), "workers": 1,
           "tracks_per_video": 1}
    if source == "pairing":
        out.update(faces="faces", voices="voices", pairing=pairing or "pairs.tsv")
    if source == "voxceleb1":
        out.update(meta_csv="vox1_meta.csv", faces=d.get("faces", "unzippedFaces"))
    return out


def evaluate_crossmodal(model_dir: str | Path, data_root: str | Path, *,
                        students_dir: str | Path | None, cache_dir: str | Path, n_way: int = 10,
                        trials: int = 2000, seed: int = 0, max_genuine_per_identity: int = 200,
                        max_impostor_per_identity: int = 200, plot: str | Path | None = None,
                        threads: int = 2, keep_scores: bool = False, split: str = "test",
                        source: str = "clips", pairing: str | None = None,
                        trials_in: str | Path | None = None,
                        trials_out: str | Path | None = None,
                        genders_file: str | Path | None = None) -> dict:
    """Score the heads of `model_dir` on `data_root` and report every split.

    split "test": rebuild the splits recorded with the model (edge or full mode) on the data
    it was trained from. split "all": every person of a folder never trained on (`source`:
    clips, pairing = face/voice folders + pairing TSV, voxceleb1, voxceleb2) is
    unseen-unheard; people the model's recorded splits name as trained on are listed under
    `trained_on` (and should be removed). `trials_in` fixes the trials (a list written by
    `trials_out`); `genders_file` (TSV identity, gender) adds gender-matched figures.
    keep_scores: leave each row's {scorer: (genuine, impostor)} arrays under "scores"."""
    from train.pins.features import StudentFeatures, build_edge_set, resolve_students
    from train.pins.rows import assign_roles, build_rows, embed_rows

    if split not in ("test", "all"):
        raise ConfigError(f"--split must be test or all, got {split!r}")
    models = OnnxCrossModal(model_dir, threads)
    meta = models.meta["pin_face"]
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        raise ModelError(f"{model_dir}: pin_face manifest entry records no training config")
    students = resolve_students(students_dir or model_dir)
    want = meta.get("students", {})
    for k in ("face_sha256", "voice_sha256"):
        if want.get(k) and want[k] != getattr(students, k):
            raise ModelError(f"{model_dir} was trained on the {k[:5]} student {want[k][:12]}…, "
                             f"but {getattr(students, k[:5])} is {getattr(students, k)[:12]}…: "
                             "pass --students with the folder it was trained on")
    genders: dict[str, str] = {}
    if split == "all" or cfg.get("mode") == "full":
        dcfg = _folder_dcfg(cfg, source, pairing) if split == "all" else cfg["data"]
        data_rows = build_rows(data_root, dcfg, cache_dir)
        fr, vr, desc = assign_roles(data_rows, None if split == "all" else cfg["split"])
        cms = embed_rows(data_rows, fr, vr, students, threads, {"real": desc})
        genders = data_rows.genders
        if genders_file:
            from train.datasets import read_labels_tsv

            genders = {k: v.upper() for k, v in
                       read_labels_tsv(genders_file, "identity", "gender").items()}
        note = ("real face-voice pairs: each person's own face and voice"
                + ("; --split all: everyone is scored as unseen-unheard" if split == "all"
                   else ""))
    else:
        feats = StudentFeatures(students, cache_dir, threads=threads, crops_with_teacher=bool(
            cfg["data"].get("crops_with_teacher", False)))
        try:
            cms = build_edge_set(data_root, cfg, feats)
        finally:
            feats.close()
        note = ("rows with data=artificial pair DIFFERENT people (LFW face x speechocean762 "
                "voice, same labelled gender): they measure attribute (mostly gender) "
                "matching, not identity. Only data=real rows (GRID) are real face-voice pairs.")
    relative_sources(cms, data_root)
    fixed = read_trials(trials_in) if trials_in else None
    used: dict | None = {} if trials_out else None
    rows = evaluate_set(cms, models, n_way=n_way, trials=trials, seed=seed,
                        max_genuine_per_identity=max_genuine_per_identity,
                        max_impostor_per_identity=max_impostor_per_identity,
                        genders=genders or None, trial_list=fixed, trials_out=used)
    if not rows:
        raise ConfigError(f"{data_root}: no split has >= 2 people with both a face and a voice")
    if trials_out and used is not None:
        write_trials(trials_out, used, {"seed": seed, "max_genuine_per_identity":
                                        max_genuine_per_identity, "max_impostor_per_identity":
                                        max_impostor_per_identity, "data": str(data_root),
                                        "split": split})
    trained_on = []
    if split == "all":
        recorded = json.dumps({d: {k: v for k, v in parts.items() if "unseen" not in k}
                               for d, parts in meta.get("splits", {}).items()})
        people = set(cms.face.identity.tolist()) | set(cms.voice.identity.tolist())
        trained_on = sorted(p for p in people if f"'{p}'" in recorded or f'"{p}"' in recorded)
        note += (f"; WARNING: the model's recorded training splits name {trained_on}"
                 if trained_on else "; none of them is named in the model's recorded "
                 "training splits")
    report: dict[str, Any] = {
        "model": str(model_dir), "data": str(data_root), "students": students.meta(),
        "split_arg": split, "trained_on": trained_on, "splits": cms.splits, "counts": cms.counts(), "note": note,
        "scoring": {"cosine": "cosine of the two PIN embeddings",
                    "faa": "FAA match_prob (faa.onnx, inputs = student embeddings)"},
        "trials": str(trials_in) if trials_in else "seeded sample (see --trials-out)",
        "rows": rows,
    }
    if plot:
        from edge_runtime.plots import plot_roc_det

        curves = {}
        for r in rows:
            for s in SCORERS:
                curves[f"{r['data']} {r['split']} {s}"] = r[s]["_scores"]
        plot_roc_det(curves, Path(plot), title="cross-modal verification (face vs voice)")
        report["plot"] = str(plot)
    for r in rows:
        scores = {s: r[s].pop("_scores") for s in SCORERS}
        if keep_scores:
            r["scores"] = scores
    return report
