"""Full mode: Learnable PINs as published, both streams trained end to end.

Face stream: MobileFaceNet on aligned 112x112 crops; voice stream: VoiceResNet on 2 s log-mel
windows of the shared front-end; each followed by its PIN head; the loss and hard-negative
curriculum are the edge mode's. Data: VoxCeleb1 (audio + face frames joined by identity,
positive pair = frame and audio of one video) or any talking-face clip folder (VoxCeleb2 mp4,
GRID). Multi-GPU: `torchrun --nproc_per_node=N -m edge_runtime.cli train pins --config
train/configs/pins_full_voxceleb.yaml ...` (process group set up as in `train.distill`).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from edge_runtime.errors import ConfigError, MediaError
from edge_runtime.frontend.features import face_tensor
from train.distill import seed_everything, setup_distributed
from train.pins.data import heldout_mask, voxceleb_roles
from train.pins.losses import curriculum_share, pins_loss
from train.pins.models import FullPins, build_heads, n_params
from train.pins.train import val_scores
from train.tasks import build_model, voice_front_end

FORMAT = 1


@dataclass
class RawRows:
    """Face crops and voice sources (a file path, or a waveform already decoded from a clip)."""

    crops: np.ndarray  # (F, 112, 112) uint8 grey
    face_group: np.ndarray
    face_identity: np.ndarray
    face_role: np.ndarray
    voices: list[Any]
    voice_group: np.ndarray
    voice_identity: np.ndarray
    voice_role: np.ndarray


def _roles(identities: list[str], groups: list[str], scfg: dict) -> tuple[dict, np.ndarray]:
    """Identity roles (train/val/unseen) and, per row, seen-heard hold-out of whole groups."""
    roles = voxceleb_roles(identities, int(scfg["n_train"]), int(scfg["n_val"]),
                           int(scfg["n_test"]), int(scfg["seed"]))
    uniq = sorted(set(zip(identities, groups, strict=True)))
    held = heldout_mask([g for _, g in uniq], [i for i, _ in uniq],
                        float(scfg["seen_heldout_fraction"]), int(scfg["seed"]))
    held_groups = {g for (_, g), h in zip(uniq, held, strict=True) if h}
    row_roles = [("seen" if roles[i] == "train" and g in held_groups else roles[i])
                 for i, g in zip(identities, groups, strict=True)]
    return roles, np.asarray(row_roles, dtype=object)


def clip_rows(root: Path, dcfg: dict, scfg: dict) -> RawRows:
    """Talking-face clips: sampled frames (detected, aligned) and the audio of each clip."""
    from edge_runtime.frontend.face import DlibHogDetector, detect_and_align
    from edge_runtime.frontend.features import face_grey
    from train.datasets import ClipFolder

    reader = ClipFolder(root)
    detector = DlibHogDetector()
    crops, fgrp, fid, wavs, vgrp, vid = [], [], [], [], [], []
    for s, clip in reader.iter_decoded(max_frames=int(dcfg.get("max_frames", 250))):
        group = str(s.path.relative_to(reader.root))
        for frame in clip.frames[:: int(dcfg.get("frame_step", 5))]:
            try:
                aligned, _ = detect_and_align(frame.image, detector, source=str(s.path))
            except MediaError:
                continue
            crops.append(face_grey(aligned))
            fgrp.append(group)
            fid.append(s.identity)
        wavs.append(clip.audio)
        vgrp.append(group)
        vid.append(s.identity)
    if not crops:
        raise ConfigError(f"{root}: no face found in any clip")
    _, frole = _roles(fid, fgrp, scfg)
    _, vrole = _roles(vid, vgrp, scfg)
    o = np.asarray
    return RawRows(np.stack(crops), o(fgrp, object), o(fid, object), frole, wavs,
                   o(vgrp, object), o(vid, object), vrole)


def voxceleb_rows(root: Path, dcfg: dict, scfg: dict, cache_dir: Path) -> RawRows:
    """VoxCeleb1 audio + face frames (`faces` folder), `frames_per_video` frames per video."""
    from train.datasets import VoxCeleb1
    from train.prepare import prepare_faces

    faces_root = Path(dcfg["faces"]) if Path(dcfg["faces"]).is_absolute() else root / dcfg["faces"]
    vox = VoxCeleb1(root, root / dcfg.get("meta_csv", "vox1_meta.csv"), faces_root)
    per: dict[tuple[str, str], list] = {}
    for s in vox.face_samples:
        per.setdefault((s.identity, s.group or ""), []).append(s)
    picked = [s for v in per.values() for s in v[: int(dcfg.get("frames_per_video", 5))]]
    prepared = prepare_faces(picked, cache_dir, with_teacher=False,
                             workers=int(dcfg.get("workers", 2)))
    fid = [s.identity for s in prepared.samples]
    fgrp = [f"{s.identity}/{s.group}" for s in prepared.samples]
    vid = [s.identity for s in vox.voice_samples]
    vgrp = [f"{s.identity}/{s.group}" for s in vox.voice_samples]
    _, frole = _roles(fid, fgrp, scfg)
    _, vrole = _roles(vid, vgrp, scfg)
    o = np.asarray
    return RawRows(prepared.crops, o(fgrp, object), o(fid, object), frole,
                   [s.path for s in vox.voice_samples], o(vgrp, object), o(vid, object), vrole)


class _Batcher:
    """One face crop and one 2 s voice window per group; files are loaded when drawn."""

    def __init__(self, rows: RawRows, mask_f: np.ndarray, mask_v: np.ndarray, cfg: dict) -> None:
        self.rows, self.fe = rows, voice_front_end(cfg)
        self.fidx, self.vidx = np.flatnonzero(mask_f), np.flatnonzero(mask_v)
        fg, vg = rows.face_group[self.fidx], rows.voice_group[self.vidx]
        self.groups = sorted(set(fg.tolist()) & set(vg.tolist()))
        self.f_by = {g: self.fidx[fg == g] for g in self.groups}
        self.v_by = {g: self.vidx[vg == g] for g in self.groups}

    def _wave(self, j: int) -> np.ndarray:
        src = self.rows.voices[j]
        if isinstance(src, np.ndarray):
            return src
        from edge_runtime.frontend.audio import load_audio

        return load_audio(src)

    def batch(self, groups: list[str], rng: np.random.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.fe.window_samples
        faces, feats = [], []
        for g in groups:
            crop = self.rows.crops[rng.choice(self.f_by[g])]
            faces.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
            wav = self._wave(int(rng.choice(self.v_by[g])))
            wav = np.resize(wav, n) if len(wav) < n else wav
            start = int(rng.integers(0, len(wav) - n + 1))
            feats.append(self.fe.windows(wav[start:start + n])[0])
        codes = torch.tensor([self.groups.index(g) for g in groups])
        return (torch.from_numpy(face_tensor([np.ascontiguousarray(f) for f in faces])),
                torch.from_numpy(np.stack(feats)), codes)

    def embed(self, model: FullPins, device: torch.device, max_windows: int = 4
              ) -> tuple[np.ndarray, np.ndarray]:
        """PIN embeddings of every face and voice row (utterance = mean of its windows)."""
        model.eval()
        with torch.no_grad():
            f = [model.heads.face(model.face_net(torch.from_numpy(
                face_tensor(list(self.rows.crops[self.fidx[a:a + 64]]))).to(device))).cpu()
                for a in range(0, self.fidx.size, 64)]
            v = []
            for j in self.vidx:
                w = torch.from_numpy(self.fe.windows(self._wave(int(j)))[:max_windows]).to(device)
                e = model.heads.voice(model.voice_net(w)).mean(0, keepdim=True)
                v.append(nn.functional.normalize(e, dim=1).cpu())
        model.train()
        return torch.cat(f).numpy(), torch.cat(v).numpy()


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


def train_full(data: str | Path, cfg: dict, out: str | Path, *, cache_dir: str | Path) -> dict:
    """End-to-end PINs; rank 0 validates on held-out identities and writes full.pt."""
    out = Path(out)
    tcfg, dcfg, lcfg, ccfg = cfg["train"], cfg["data"], cfg["loss"], cfg["curriculum"]
    rank, world, device = setup_distributed(tcfg.get("device", "auto"))
    torch.set_num_threads(int(tcfg["threads"]))
    seed_everything(int(cfg["seed"]))
    root = Path(data)
    src = root / dcfg.get("root", ".")
    if dcfg["source"] == "voxceleb1":
        rows = voxceleb_rows(src, dcfg, cfg["split"], Path(cache_dir))
    elif dcfg["source"] == "clips":
        rows = clip_rows(src, dcfg, cfg["split"])
    else:
        raise ConfigError(f"data.source must be voxceleb1 or clips, got {dcfg['source']!r}")
    train_b = _Batcher(rows, rows.face_role == "train", rows.voice_role == "train", cfg)
    val_b = _Batcher(rows, rows.face_role == "val", rows.voice_role == "val", cfg)
    if len(train_b.groups) < 2:
        raise ConfigError(f"full mode needs >= 2 training groups, found {len(train_b.groups)}")
    model = _build(cfg).to(device)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg["lr"]),
                            weight_decay=float(tcfg["weight_decay"]))
    epochs, steps = int(tcfg["epochs"]), int(tcfg["steps_per_epoch"])
    bs = min(int(tcfg["batch_size"]), len(train_b.groups))
    rng = np.random.default_rng(int(cfg["seed"]) * 100 + rank)  # each rank its own batches
    gen = torch.Generator(device=device).manual_seed(int(cfg["seed"]) + rank)
    console = Console(stderr=True)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "full_history.jsonl").unlink(missing_ok=True)
    best: dict[str, Any] | None = None
    for epoch in range(epochs):
        share = curriculum_share(epoch, epochs, float(ccfg["start"]), float(ccfg["end"]),
                                 int(ccfg["stages"]))
        t0, total = time.time(), 0.0
        for _ in range(steps):
            groups = [train_b.groups[i] for i in rng.choice(len(train_b.groups), bs, False)]
            face, feats, codes = (t.to(device) for t in train_b.batch(groups, rng))
            fp, vp = net(face, feats)
            loss = pins_loss(fp, vp, codes, k=int(lcfg["negatives_per_anchor"]), share=share,
                             margin=float(lcfg["margin"]), generator=gen)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() / steps
        if rank != 0:
            continue
        rec: dict[str, Any] = {"epoch": epoch + 1, "hard_share": share, "train_loss": total,
                               "seconds": round(time.time() - t0, 1)}
        if len(set(rows.face_identity[val_b.fidx].tolist())) >= 2 and val_b.vidx.size:
            vf, vv = val_b.embed(model, device)
            v = val_scores(vf, vv, rows.face_identity[val_b.fidx],
                           rows.voice_identity[val_b.vidx])
            rec.update(val_eer=v["eer"], val_auc=v["auc"])
        console.print(json.dumps(rec))
        with open(out / "full_history.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        key = (rec.get("val_eer", rec["train_loss"]),)
        if best is None or key < best["key"]:
            best = {**rec, "key": key, "state": copy.deepcopy(model.state_dict())}
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    summary: dict[str, Any] = {"out": str(out), "rank": rank}
    if rank == 0:
        assert best is not None
        state = best.pop("state")
        best.pop("key")
        torch.save({"format": FORMAT, "kind": "pins_full", "config": cfg, "best": best,
                    "params": n_params(model),
                    "state_dict": {k: v.cpu() for k, v in state.items()}}, out / "full.pt")
        summary.update(best=best, params=n_params(model))
        (out / "full_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
