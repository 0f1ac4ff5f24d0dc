"""`edgepin train pins|fuse` in edge mode: PIN heads, then the FAA encoder, on frozen students.

Stage 1 (pins): batches of distinct groups (clips / pairings), one face and one voice row per
group; contrastive loss with the hard-negative curriculum; the checkpoint with the best
validation EER (cosine in PIN space, held-out pairings) is kept and exported.
Stage 2 (fuse): pairs re-selected every epoch in the frozen PIN space (clean positives, hard
negatives), binary cross-entropy; best validation EER of match_prob is kept and exported.
Full mode (end-to-end backbones) lives in `train.pins.full`.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.nn import functional as F

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.metrics import auc, eer
from train.distill import seed_everything
from train.pins.data import CrossModalSet
from train.pins.evaluate import crossmodal_pairs
from train.pins.features import StudentFeatures, build_edge_set, resolve_students
from train.pins.losses import curriculum_share, pins_loss
from train.pins.models import FaaScorer, PinHeads, build_encoder, build_heads, n_params
from train.pins.pairs import select_pairs

FORMAT = 1
DATA_NOTE = ("GRID talking-face clips = REAL face-voice pairs; LFW x speechocean762 = "
             "ARTIFICIAL gender-matched pairing of different people")


def _codes(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _log(out: Path, name: str, record: dict, console: Console) -> None:
    console.print(json.dumps(record))
    with open(out / name, "a") as f:
        f.write(json.dumps(record) + "\n")


def val_scores(face_pin: np.ndarray, voice_pin: np.ndarray, face_ids: np.ndarray,
               voice_ids: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """EER/AUC on the validation split (all genuine pairs, 50 impostors per identity);
    None for both when it has fewer than two people with a face and a voice (no selection)."""
    if len(set(np.asarray(face_ids).tolist()) & set(np.asarray(voice_ids).tolist())) < 2:
        return {"eer": None, "auc": None}
    gp, ip = crossmodal_pairs(voice_ids, face_ids, max_genuine_per_identity=10**6,
                              max_impostor_per_identity=50, seed=0)
    s = voice_pin @ face_pin.T if scores is None else scores
    g, i = s[gp[:, 0], gp[:, 1]], s[ip[:, 0], ip[:, 1]]
    return {"eer": float(eer(g, i)[0]), "auc": float(auc(g, i))}


def _better(rec: dict, best: dict | None) -> bool:
    """Lower validation EER (then higher AUC) wins; without validation the last epoch wins."""
    if best is None or rec["val_eer"] is None:
        return True
    return (rec["val_eer"], -rec["val_auc"]) < (best["val_eer"], -best["val_auc"])


def face_tier(cfg: dict) -> str:
    """The face tier whose embeddings the heads read (`edgepin train pins --face-tier`)."""
    return str(cfg["data"].get("face_tier", "student"))


def _features(cfg: dict, students_dir: str | Path, cache_dir: str | Path) -> StudentFeatures:
    return StudentFeatures(resolve_students(students_dir, face_tier(cfg)), cache_dir,
                           threads=int(cfg["train"]["threads"]),
                           crops_with_teacher=bool(cfg["data"].get("crops_with_teacher", False)),
                           workers=int(cfg["train"].get("workers", 1)))


def load_set(data: str | Path, cfg: dict, students_dir: str | Path, cache_dir: str | Path
             ) -> tuple[CrossModalSet, dict]:
    """The experiment's rows (student embeddings from the cache) and the students' meta."""
    feats = _features(cfg, students_dir, cache_dir)
    try:
        return build_edge_set(data, cfg, feats), feats.students.meta()
    finally:
        feats.close()


def _embed(heads: PinHeads, face: np.ndarray, voice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heads.eval()
    with torch.no_grad():
        f, v = heads(torch.from_numpy(face), torch.from_numpy(voice))
    return f.numpy(), v.numpy()


def train_pins(data: str | Path, cfg: dict, out: str | Path, *, students_dir: str | Path,
               cache_dir: str | Path, export_dir: str | Path | None = None) -> dict:
    """Stage 1: train the PIN heads; write pins.pt and pin_face/pin_voice ONNX."""
    if cfg.get("mode", "edge") != "edge":
        raise ConfigError(f"config mode {cfg.get('mode')!r}: edge-mode trainer needs mode: edge")
    torch.set_num_threads(int(cfg["train"]["threads"]))
    cms, students = load_set(data, cfg, students_dir, cache_dir)
    return fit_pins(cms, cfg, out, students=students, data_root=str(data),
                    export_dir=export_dir)


def fit_pins(cms: CrossModalSet, cfg: dict, out: str | Path, *, students: dict, data_root: str,
             export_dir: str | Path | None = None) -> dict:
    """Stage 1 on rows already embedded by the students (see `train_pins`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tcfg, lcfg, ccfg = cfg["train"], cfg["loss"], cfg["curriculum"]
    seed_everything(int(cfg["seed"]))
    # validation = held-out artificial pairings; never the seen-heard rows reported later
    tr, va = cms.where(role="train"), cms.where(role="val")
    codes = _codes(np.concatenate([tr.face.group, tr.voice.group]))
    fg, vg = codes[: len(tr.face)], codes[len(tr.face):]
    groups = np.intersect1d(fg, vg)
    if groups.size < 2:
        raise ConfigError(f"need >= 2 training groups with both modalities, found {groups.size}")
    f_by = [np.flatnonzero(fg == g) for g in range(codes.max() + 1)]
    v_by = [np.flatnonzero(vg == g) for g in range(codes.max() + 1)]
    heads = build_heads(cfg["model"], tr.face.emb.shape[1], tr.voice.emb.shape[1])
    opt = torch.optim.AdamW(heads.parameters(), lr=float(tcfg["lr"]),
                            weight_decay=float(tcfg["weight_decay"]))
    epochs, steps = int(tcfg["epochs"]), int(tcfg["steps_per_epoch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(tcfg["lr"]),
                                                total_steps=epochs * steps, pct_start=0.1)
    rng = np.random.default_rng(int(cfg["seed"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    bs = min(int(tcfg["batch_size"]), groups.size)
    noise = float(tcfg.get("input_noise", 0.0))
    console = Console(stderr=True)
    (out / "pins_history.jsonl").unlink(missing_ok=True)
    best: dict[str, Any] | None = None
    for epoch in range(epochs):
        share = curriculum_share(epoch, epochs, float(ccfg["start"]), float(ccfg["end"]),
                                 int(ccfg["stages"]), int(ccfg.get("random_epochs", 0)))
        heads.train()
        t0, sums = time.time(), {"loss": 0.0, "pos_d2": 0.0, "neg_active": 0.0}
        for _ in range(steps):
            g = rng.choice(groups, size=bs, replace=False)
            fi = np.array([rng.choice(f_by[k]) for k in g])
            vi = np.array([rng.choice(v_by[k]) for k in g])
            fx, vx = torch.from_numpy(tr.face.emb[fi]), torch.from_numpy(tr.voice.emb[vi])
            if noise:
                fx = F.normalize(fx + noise * torch.randn(fx.shape, generator=gen), dim=1)
                vx = F.normalize(vx + noise * torch.randn(vx.shape, generator=gen), dim=1)
            fp, vp = heads(fx, vx)
            parts = pins_loss(fp, vp, torch.from_numpy(g), k=int(lcfg["negatives_per_anchor"]),
                              share=share, margin=float(lcfg["margin"]), generator=gen,
                              mining=str(ccfg.get("mining", "mix")))
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(parts[k].detach()) / steps
        vf, vv = _embed(heads, va.face.emb, va.voice.emb)
        val = val_scores(vf, vv, va.face.identity, va.voice.identity)
        rec = {"epoch": epoch + 1, "hard_share": share, "seconds": round(time.time() - t0, 2),
               **{f"train_{k}": round(v, 5) for k, v in sums.items()},
               "val_eer": val["eer"], "val_auc": val["auc"]}
        _log(out, "pins_history.jsonl", rec, console)
        if _better(rec, best):
            best = {**rec, "state": copy.deepcopy(heads.state_dict())}
    assert best is not None
    heads.load_state_dict(best.pop("state"))
    heads.eval()
    ckpt = {"format": FORMAT, "kind": "pins", "config": cfg, "students": students,
            "splits": cms.splits, "counts": cms.counts(), "data_root": data_root,
            "best": best, "params": n_params(heads),
            "state_dict": {k: v.cpu() for k, v in heads.state_dict().items()}}
    torch.save(ckpt, out / "pins.pt")
    from train.pins.export import export_heads

    meta = {"config": cfg, "students": students, "splits": cms.splits, "data": DATA_NOTE,
            "params": n_params(heads), "val": {"eer": best["val_eer"], "auc": best["val_auc"]},
            "epoch": best["epoch"]}
    exported = export_heads(heads, Path(export_dir or out), meta, face_tier=face_tier(cfg))
    summary = {"out": str(out), "best": best, "exported": exported, "counts": cms.counts()}
    (out / "pins_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_pins(path: str | Path) -> tuple[PinHeads, dict]:
    """PIN heads (eval mode) and their checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"PIN checkpoint not found: {p} (run edgepin train pins first)")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "pins" or ckpt.get("format") != FORMAT:
        raise ModelError(f"{p}: not an edgepin PIN checkpoint")
    sd = ckpt["state_dict"]
    heads = build_heads(ckpt["config"]["model"], sd["face.net.0.weight"].shape[1],
                        sd["voice.net.0.weight"].shape[1])
    heads.load_state_dict(sd)
    return heads.eval(), ckpt


def train_fuse(data: str | Path, cfg: dict, out: str | Path, *, pins: str | Path,
               students_dir: str | Path, cache_dir: str | Path,
               export_dir: str | Path | None = None) -> dict:
    """Stage 2: train the FAA encoder on pairs selected in the frozen PIN space."""
    heads, pckpt = load_pins(Path(pins) / "pins.pt" if Path(pins).is_dir() else pins)
    pcfg = pckpt["config"]
    torch.set_num_threads(int(cfg["train"]["threads"]))
    cms, students = load_set(data, pcfg, students_dir, cache_dir)
    for k in ("face_sha256", "voice_sha256"):
        if students[k] != pckpt["students"][k]:
            raise ModelError(f"PIN heads were trained on another {k[:5]} student "
                             f"({pckpt['students'][k][:12]}… vs {students[k][:12]}…)")
    return fit_fuse(cms, cfg, out, heads=heads, pins_config=pcfg, students=students,
                    export_dir=export_dir)


def fit_fuse(cms: CrossModalSet, cfg: dict, out: str | Path, *, heads: PinHeads,
             pins_config: dict, students: dict, export_dir: str | Path | None = None) -> dict:
    """Stage 2 on rows already embedded by the students (see `train_fuse`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pcfg = pins_config
    tcfg, pair_cfg = cfg["train"], cfg["pairs"]
    seed_everything(int(cfg["seed"]))
    tr, va = cms.where(role="train"), cms.where(role="val")
    for p in heads.parameters():
        p.requires_grad_(False)
    scorer = FaaScorer(heads, build_encoder(cfg["model"], heads.face.out_dim))
    opt = torch.optim.AdamW(scorer.encoder.parameters(), lr=float(tcfg["lr"]),
                            weight_decay=float(tcfg["weight_decay"]))
    fp, vp = _embed(heads, tr.face.emb, tr.voice.emb)
    epochs, bs = int(tcfg["epochs"]), int(tcfg["batch_size"])
    console = Console(stderr=True)
    (out / "faa_history.jsonl").unlink(missing_ok=True)
    best: dict[str, Any] | None = None
    vfp, vvp = _embed(heads, va.face.emb, va.voice.emb)
    cos_val = val_scores(vfp, vvp, va.face.identity, va.voice.identity)
    for epoch in range(epochs):
        pairs = select_pairs(fp, vp, tr.face.group, tr.voice.group,
                             per_group=int(pair_cfg["per_group"]),
                             neg_per_pos=int(pair_cfg["neg_per_pos"]),
                             hard_share=float(pair_cfg["hard_share"]),
                             hard_pool=int(pair_cfg["hard_pool"]),
                             clean_drop=float(pair_cfg["clean_drop"]),
                             seed=int(cfg["seed"]) * 1000 + epoch,
                             face_person=tr.face.identity, voice_person=tr.voice.identity)
        perm = np.random.default_rng(int(cfg["seed"]) + epoch).permutation(len(pairs))
        scorer.encoder.train()
        t0, total, n = time.time(), 0.0, 0
        for a in range(0, perm.size, bs):
            idx = perm[a:a + bs]
            logits = scorer.logits(torch.from_numpy(tr.face.emb[pairs.face[idx]]),
                                   torch.from_numpy(tr.voice.emb[pairs.voice[idx]]))
            loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(pairs.label[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.size
            n += idx.size
        val = val_scores(vfp, vvp, va.face.identity, va.voice.identity,
                         scores=faa_matrix(scorer, va.face.emb, va.voice.emb))
        rec = {"epoch": epoch + 1, "pairs": len(pairs), "hard_negatives": int(pairs.hard.sum()),
               "seconds": round(time.time() - t0, 2), "train_bce": round(total / n, 5),
               "val_eer": val["eer"], "val_auc": val["auc"], "val_eer_cosine": cos_val["eer"],
               "val_auc_cosine": cos_val["auc"]}
        _log(out, "faa_history.jsonl", rec, console)
        if _better(rec, best):
            best = {**rec, "state": copy.deepcopy(scorer.encoder.state_dict())}
    assert best is not None
    scorer.encoder.load_state_dict(best.pop("state"))
    scorer.eval()
    torch.save({"format": FORMAT, "kind": "faa", "config": cfg, "pins_config": pcfg,
                "students": students, "best": best, "params": n_params(scorer.encoder),
                "state_dict": {k: v.cpu() for k, v in scorer.encoder.state_dict().items()}},
               out / "faa.pt")
    from train.pins.export import export_faa

    meta = {"config": cfg, "pins_config": pcfg, "students": students, "splits": cms.splits,
            "data": DATA_NOTE, "params_encoder": n_params(scorer.encoder),
            "params_total": n_params(scorer), "pair_selection": pair_cfg,
            "val": {"eer": best["val_eer"], "auc": best["val_auc"]}, "epoch": best["epoch"]}
    exported = export_faa(scorer, Path(export_dir or out), meta,
                          face_tier=face_tier(pins_config))
    summary = {"out": str(out), "best": best, "exported": exported,
               "params_encoder": n_params(scorer.encoder)}
    (out / "faa_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def faa_matrix(scorer: FaaScorer, face_emb: np.ndarray, voice_emb: np.ndarray,
               chunk: int = 8192) -> np.ndarray:
    """(n_voices, n_faces) FAA match probabilities with the PyTorch model."""
    scorer.eval()
    vi, fi = (x.ravel() for x in np.meshgrid(np.arange(len(voice_emb)), np.arange(len(face_emb)),
                                             indexing="ij"))
    out = np.empty(vi.size, dtype=np.float32)
    with torch.no_grad():
        for a in range(0, vi.size, chunk):
            b = min(vi.size, a + chunk)
            out[a:b] = scorer(torch.from_numpy(face_emb[fi[a:b]]),
                              torch.from_numpy(voice_emb[vi[a:b]])).numpy()
    return out.reshape(len(voice_emb), len(face_emb))
