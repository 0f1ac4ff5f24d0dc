"""Full mode: Learnable PINs as published, both streams trained end to end, then FAA.

Face stream: MobileFaceNet on aligned 112x112 crops; voice stream: VoiceResNet on 2 s log-mel
windows of the shared front-end; each followed by its PIN head. Stage 1 is the PINs
contrastive loss with the curriculum of the config (`curriculum.mining: percentile` = PINs as
published; `mix` = edgepin's variant); a negative is never of the same video nor of the same
identity (`loss.exclude: identity`; `cluster` = FAA's unsupervised setting, pseudo-labels from
progressive k-means on the current PIN space; `group` = video only). Optional FAA pair
selection in stage 1 (`pairs.stage1_clean_drop`: the least similar positives of a batch do not
attract) and pseudo-label positives (`pseudo_labels.cross_video_p`: a face with the voice of
another video of its cluster). Stage 2 fits the FAA head on the exported students.
Data: `data.source` voxceleb1 | voxceleb2 | clips | pairing (`train.pins.rows`). Batches come
from a DataLoader with `train.loader_workers` processes; validation is sharded over the ranks
and gathered, so no rank waits on another. Multi-GPU: `torchrun --nproc_per_node=N -m
edge_runtime.cli train pins --config train/configs/pins_full_voxceleb.yaml ...`.
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
from torch import nn

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.features import face_tensor
from train.distill import seed_everything, setup_distributed
from train.pins.losses import curriculum_share, pins_loss
from train.pins.models import FullPins, build_heads, n_params
from train.pins.pairs import kmeans_labels, progressive_k
from train.pins.rows import Rows, assign_roles, build_rows, embed_rows, wave
from train.pins.train import val_scores
from train.tasks import build_model, voice_front_end

FORMAT = 2
DATA_NOTE = "real face-voice pairs: frames and speech of the same video (same person)"


class PairBatches(torch.utils.data.Dataset):
    """Item i of an epoch = one batch of `batch_size` distinct videos: a face crop and a 2 s
    voice window of each, drawn with a generator seeded by (seed, rank, epoch, i), so any
    number of loader workers gives the same batches."""

    def __init__(self, rows: Rows, face_role: np.ndarray, voice_role: np.ndarray, cfg: dict,
                 rank: int) -> None:
        self.rows, self.fe = rows, voice_front_end(cfg)
        self.fidx = np.flatnonzero(face_role == "train")
        self.vidx = np.flatnonzero(voice_role == "train")
        fg, vg = rows.face_group[self.fidx], rows.voice_group[self.vidx]
        self.groups = sorted(set(fg.tolist()) & set(vg.tolist()))
        if len(self.groups) < 2:
            raise ConfigError(f"full mode needs >= 2 training videos with a face and a voice, "
                              f"found {len(self.groups)}")
        self.f_by = [self.fidx[fg == g] for g in self.groups]
        self.v_by = [self.vidx[vg == g] for g in self.groups]
        ident = {g: rows.face_identity[f[0]] for g, f in zip(self.groups, self.f_by, strict=True)}
        names = sorted(set(ident.values()))
        self.identity = np.array([names.index(ident[g]) for g in self.groups], dtype=np.int64)
        self.cluster: np.ndarray | None = None  # pseudo-label per group (FAA stage 1)
        self.seed, self.rank, self.epoch = int(cfg["seed"]), rank, 0
        self.steps = int(cfg["train"]["steps_per_epoch"])
        self.bs = min(int(cfg["train"]["batch_size"]), len(self.groups))
        self.exclude = str(cfg["loss"].get("exclude", "identity"))
        if self.exclude not in ("identity", "cluster", "group"):
            raise ConfigError(f"loss.exclude must be identity, cluster or group, got "
                              f"{self.exclude!r}")
        self.cross_p = float(cfg.get("pseudo_labels", {}).get("cross_video_p", 0.0))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, self.rank, self.epoch, i])
        pick = rng.choice(len(self.groups), self.bs, replace=False)
        n = self.fe.window_samples
        faces, feats = [], []
        for g in pick:
            crop = self.rows.crops[rng.choice(self.f_by[g])]
            faces.append(np.ascontiguousarray(crop[:, ::-1]) if rng.random() < 0.5 else crop)
            vg = g
            if self.cluster is not None and self.cross_p and rng.random() < self.cross_p:
                mates = np.flatnonzero(self.cluster == self.cluster[g])
                vg = int(rng.choice(mates))
            wav = wave(self.rows.voices[int(rng.choice(self.v_by[vg]))])
            wav = np.resize(wav, n) if len(wav) < n else wav
            start = int(rng.integers(0, len(wav) - n + 1))
            feats.append(self.fe.windows(wav[start:start + n])[0])
        if self.exclude == "identity":
            neg_key = self.identity[pick]
        elif self.exclude == "cluster" and self.cluster is not None:
            neg_key = self.cluster[pick]
        else:  # "group", or "cluster" before the first clustering: other videos only
            neg_key = pick
        if self.cluster is not None:  # a same-cluster pair is a positive, never a negative
            pick = self.cluster[pick]
        return (torch.from_numpy(face_tensor(faces)), torch.from_numpy(np.stack(feats)),
                torch.from_numpy(np.asarray(pick, dtype=np.int64)),
                torch.from_numpy(np.asarray(neg_key, dtype=np.int64)))


def _build(cfg: dict) -> FullPins:
    m = cfg["model"]
    face = build_model({"modality": "face", "model": m["face"]})
    voice = build_model({"modality": "voice", "model": m["voice"], "front_end": cfg["front_end"]})
    for net, key in ((face, "init_face"), (voice, "init_voice")):
        if m.get(key):
            from train.distill import load_student

            net.load_state_dict(load_student(m[key])[0].state_dict())
    return FullPins(face, voice, build_heads(m, m["face"]["embedding_dim"],
                                             m["voice"]["embedding_dim"]))


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def sharded_embed(model: FullPins, rows: Rows, fidx: np.ndarray, vidx: np.ndarray, cfg: dict,
                  device: torch.device, rank: int, world: int, *, pins: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the face rows `fidx` and voice rows `vidx` (utterance = mean of its
    windows), each rank computing every world-th row; every rank gets the whole result."""
    fe = voice_front_end(cfg)
    model.eval()
    with torch.no_grad():
        mf, mv = fidx[rank::world], vidx[rank::world]
        f = [model.face_net(torch.from_numpy(face_tensor(list(rows.crops[mf[a:a + 64]])))
                            .to(device)) for a in range(0, mf.size, 64)]
        v = []
        for j in mv:
            e = model.voice_net(torch.from_numpy(fe.windows(wave(rows.voices[int(j)])))
                                .to(device)).mean(0, keepdim=True)
            v.append(nn.functional.normalize(e, dim=1))
        ef = torch.cat(f) if f else torch.empty(0, model.heads.face.in_dim, device=device)
        ev = torch.cat(v) if v else torch.empty(0, model.heads.voice.in_dim, device=device)
        if pins:
            ef, ev = model.heads.face(ef), model.heads.voice(ev)
    model.train()
    parts = _gather((mf, ef.cpu().numpy(), mv, ev.cpu().numpy()), world)
    out_f = np.zeros((fidx.size, parts[0][1].shape[1]), np.float32)
    out_v = np.zeros((vidx.size, parts[0][3].shape[1]), np.float32)
    fpos = {int(r): k for k, r in enumerate(fidx)}
    vpos = {int(r): k for k, r in enumerate(vidx)}
    for pf, xf, pv, xv in parts:
        out_f[[fpos[int(r)] for r in pf]] = xf
        out_v[[vpos[int(r)] for r in pv]] = xv
    return out_f, out_v


def _pseudo_labels(model: FullPins, ds: PairBatches, cfg: dict, device: torch.device,
                   rank: int, world: int, round_no: int) -> tuple[np.ndarray, int]:
    """FAA stage 1: k-means of each training video's mean [face PIN, voice PIN]."""
    pcfg = cfg["pseudo_labels"]
    ef, ev = sharded_embed(model, ds.rows, ds.fidx, ds.vidx, cfg, device, rank, world)
    fg, vg = ds.rows.face_group[ds.fidx], ds.rows.voice_group[ds.vidx]
    x = np.stack([np.concatenate([ef[fg == g].mean(0), ev[vg == g].mean(0)])
                  for g in ds.groups])
    k = progressive_k(len(ds.groups), round_no, int(pcfg.get("rounds", 3)),
                      float(pcfg["clusters"][0]), float(pcfg["clusters"][1]))
    return kmeans_labels(x, k, int(cfg["seed"]) + round_no), k


def _clean_weight(fp: torch.Tensor, vp: torch.Tensor, drop: float) -> torch.Tensor | None:
    """FAA pair selection in stage 1: the least similar `drop` share of a batch's positives
    get weight 0 in the attraction term (likely bad frames, silence, mis-detections)."""
    if drop <= 0:
        return None
    with torch.no_grad():
        s = (fp * vp).sum(dim=1)
        return (s >= torch.quantile(s, drop)).to(fp.dtype)


def train_full(data: str | Path, cfg: dict, out: str | Path, *, cache_dir: str | Path,
               export_dir: str | Path | None = None) -> dict:
    """End-to-end PINs on every rank; rank 0 writes full.pt, exports the students, PIN heads
    and (stage 2) the FAA head into `export_dir` (default `out`)."""
    out = Path(out)
    tcfg, lcfg, ccfg = cfg["train"], cfg["loss"], cfg["curriculum"]
    rank, world, device = setup_distributed(tcfg.get("device", "auto"))
    torch.set_num_threads(int(tcfg["threads"]))
    seed_everything(int(cfg["seed"]))
    if world > 1 and rank != 0:  # rank 0 aligns the faces first; the others read its cache
        torch.distributed.barrier()
    rows = build_rows(data, cfg["data"], cache_dir)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    frole, vrole, splits = assign_roles(rows, cfg["split"])
    ds = PairBatches(rows, frole, vrole, cfg, rank)
    val_f, val_v = np.flatnonzero(frole == "val"), np.flatnonzero(vrole == "val")
    model = _build(cfg).to(device)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg["lr"]),
                            weight_decay=float(tcfg["weight_decay"]))
    epochs = int(tcfg["epochs"])
    gen = torch.Generator(device=device).manual_seed(int(cfg["seed"]) + rank)
    workers = int(tcfg.get("loader_workers", 0))
    pcfg = cfg.get("pseudo_labels", {})
    mining = str(ccfg.get("mining", "percentile"))
    console = Console(stderr=True)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "full_history.jsonl").unlink(missing_ok=True)
    best: dict[str, Any] | None = None
    for epoch in range(epochs):
        value = curriculum_share(epoch, epochs, float(ccfg["start"]), float(ccfg["end"]),
                                 int(ccfg["stages"]), int(ccfg.get("random_epochs", 0)))
        rec: dict[str, Any] = {"epoch": epoch + 1, "mining": mining,
                               ("tau" if mining == "percentile" else "hard_share"): value}
        every = int(pcfg.get("every", 0))
        if every and epoch >= int(pcfg.get("start_epoch", 1)) and epoch % every == 0:
            round_no = (epoch - int(pcfg.get("start_epoch", 1))) // every
            ds.cluster, rec["clusters"] = _pseudo_labels(model, ds, cfg, device, rank, world,
                                                         round_no)
        ds.epoch = epoch
        loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False,
                                             num_workers=workers)
        t0, total = time.time(), 0.0
        for face, feats, codes, neg_key in loader:
            face, feats, codes, neg_key = (t.to(device) for t in (face, feats, codes, neg_key))
            fp, vp = net(face, feats)
            loss = pins_loss(fp, vp, codes, k=int(lcfg["negatives_per_anchor"]), share=value,
                             margin=float(lcfg["margin"]), generator=gen, identities=neg_key,
                             mining=mining, positive_weight=_clean_weight(
                                 fp, vp, float(cfg.get("pairs", {}).get("stage1_clean_drop",
                                                                         0.0))))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() / len(ds)
        rec.update(train_loss=total, seconds=round(time.time() - t0, 1))
        if len(set(rows.face_identity[val_f].tolist()) & set(rows.voice_identity[val_v])) >= 2:
            vf, vv = sharded_embed(model, rows, val_f, val_v, cfg, device, rank, world)
            v = val_scores(vf, vv, rows.face_identity[val_f], rows.voice_identity[val_v])
            rec.update(val_eer=v["eer"], val_auc=v["auc"])
        key = (rec.get("val_eer", rec["train_loss"]),)
        if best is None or key < best["key"]:  # the same decision on every rank
            best = {**rec, "key": key,
                    "state": copy.deepcopy(model.state_dict()) if rank == 0 else None}
        if rank == 0:
            console.print(json.dumps(rec))
            with open(out / "full_history.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    summary: dict[str, Any] = {"out": str(out), "rank": rank}
    if rank != 0:
        return summary
    assert best is not None
    state = best.pop("state")
    best.pop("key")
    model.load_state_dict(state)
    torch.save({"format": FORMAT, "kind": "pins_full", "config": cfg, "best": best,
                "splits": splits, "params": n_params(model),
                "state_dict": {k: v.cpu() for k, v in state.items()}}, out / "full.pt")
    summary.update(best=best, params=n_params(model))
    if cfg.get("export", True):
        summary["exported"] = export_full(model.cpu().eval(), rows, frole, vrole, splits, cfg,
                                          Path(export_dir or out), out, best)
    (out / "full_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def export_full(model: FullPins, rows: Rows, frole: np.ndarray, vrole: np.ndarray,
                splits: dict, cfg: dict, export_dir: Path, out: Path, best: dict) -> dict:
    """face.onnx, voice.onnx, pin_face/pin_voice.onnx, then stage 2 (FAA) -> faa.onnx."""
    from train.pins.export import export_backbone, export_heads
    from train.pins.features import resolve_students
    from train.pins.train import fit_fuse

    export_dir.mkdir(parents=True, exist_ok=True)
    meta = {"config": cfg, "splits": splits, "data": DATA_NOTE, "epoch": best["epoch"],
            "val": {"eer": best.get("val_eer"), "auc": best.get("val_auc")}}
    done = {"face": export_backbone(model.face_net, "face", cfg, export_dir, meta),
            "voice": export_backbone(model.voice_net, "voice", cfg, export_dir, meta)}
    students = resolve_students(export_dir)
    done.update(export_heads(model.heads, export_dir, {**meta, "students": students.meta(),
                                                       "params": n_params(model.heads)}))
    cms = embed_rows(rows, frole, vrole, students, int(cfg["train"]["threads"]), splits)
    fuse = fit_fuse(cms, cfg["fuse"], out, heads=model.heads, pins_config=cfg,
                    students=students.meta(), export_dir=export_dir)
    done["faa"] = fuse["exported"]
    return done


def is_full_checkpoint(path: str | Path) -> bool:
    """True for a `full.pt` (or a run folder holding one and no edge-mode pins.pt)."""
    p = Path(path)
    if p.is_dir():
        return (p / "full.pt").is_file() and not (p / "pins.pt").is_file()
    return p.suffix == ".pt" and p.name.startswith("full")


def export_checkpoint(path: str | Path, data: str | Path, out: str | Path, *,
                      cache_dir: str | Path, export_dir: str | Path | None = None,
                      fuse_overrides: list[str] | None = None) -> dict:
    """Export a finished full-mode checkpoint again (e.g. `export: false` runs) and refit
    stage 2 (FAA) on it, with the checkpoint's `fuse` section plus `fuse_overrides`."""
    from edge_runtime.errors import ModelError
    from train.config import apply_overrides

    p = Path(path)
    p = p / "full.pt" if p.is_dir() else p
    if not p.is_file():
        raise ModelError(f"full-mode checkpoint not found: {p}")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "pins_full" or ckpt.get(
            "format") != FORMAT:
        raise ModelError(f"{p}: not an edgepin full-mode checkpoint (format {FORMAT})")
    cfg = copy.deepcopy(ckpt["config"])
    cfg["fuse"] = apply_overrides(cfg["fuse"], fuse_overrides or [], source=f"{p} fuse")
    cfg["model"].update(init_face=None, init_voice=None)  # the weights come from the checkpoint
    model = _build(cfg)
    model.load_state_dict(ckpt["state_dict"])
    rows = build_rows(data, cfg["data"], cache_dir)
    frole, vrole, splits = assign_roles(rows, cfg["split"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exported = export_full(model.eval(), rows, frole, vrole, splits, cfg,
                           Path(export_dir or out), out, ckpt["best"])
    return {"out": str(out), "best": ckpt["best"], "exported": exported}
