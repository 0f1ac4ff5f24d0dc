"""`edgepin distill face|voice`: train a student to reproduce a teacher's embeddings.

One trainer for both modalities (the task supplies batches and validation embeddings).
Multi-GPU: run the same command under `torchrun --nproc_per_node=N -m edge_runtime.cli
distill ...`; the trainer sees WORLD_SIZE > 1, joins the process group (NCCL on GPUs, gloo
otherwise), shards each epoch's batches by rank and wraps the student in DDP. Only rank 0
validates, writes checkpoints and prints progress.

Long runs: every epoch rank 0 also writes `resume.pt` in the output folder (model, margin
head, optimizer, scheduler, every random generator, history, best so far; written to a
temporary file and renamed, so a kill never leaves half a checkpoint). `resume=True` (the
CLI's `--resume`) continues from it: a single-process run resumed after epoch k gives the same
weights as one that never stopped. The config must be the one the run started with.

`train.ema_decay` (e.g. 0.998): the student that is validated and saved is an exponential
moving average of the trained weights (buffers included), updated after every step. The voice
runs' validation EER jumped by ~1 pt between neighbouring epochs; an average over the last few
hundred steps is a smoother, usually better, point of the same trajectory.
`train.keep_epochs: true` also writes every epoch's checkpoint to `epochs/epNN.pt`, so a
checkpoint can be chosen afterwards on other validation protocols (`train.select`).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from edge_runtime.errors import ConfigError
from train.datasets import manifest_hash
from train.losses import MarginHead, cosine_distill, relational_distill
from train.tasks import FaceTask, VoiceTask, build_model, split_reader, voice_front_end

CHECKPOINT_FORMAT = 1
RESUME_FORMAT = 1
RESUME_FILE = "resume.pt"


class WeightAverage:
    """Exponential moving average of a model's parameters and floating buffers.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's
    `ExponentialMovingAverage` with `num_updates`): a plain 0.998 would still hold 70 % of the
    random initial weights after the first 170 steps of a voice run."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        live = model.state_dict()
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.lerp_(live[k].detach(), 1.0 - d)
            else:  # counters (BatchNorm's num_batches_tracked)
                v.copy_(live[k])


def setup_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible to torch")
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(device)
    return rank, world, device


def seed_everything(seed: int) -> None:
    """Fixed seed for Python, numpy and torch: a config reproduces its run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two configs differ (for a clear refusal to resume)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def save_resume(path: Path, state: dict) -> None:
    """Write atomically: a kill during the write leaves the previous epoch's file intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_resume(out: Path, cfg: dict) -> dict:
    """The saved training state of the run in `out`, checked against this config."""
    from edge_runtime.errors import ModelError

    path = out / RESUME_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: no {RESUME_FILE} in {out} (nothing to resume; drop --resume "
                          "to start a new run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{path}: not a readable resume checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("resume_format") != RESUME_FORMAT:
        raise ModelError(f"{path}: not an edgepin resume checkpoint (format {RESUME_FORMAT})")
    diff = _config_diff(state["config"], cfg)
    if diff:
        raise ConfigError(f"--resume: the config differs from the one {path} was trained with at "
                          f"{', '.join(diff[:6])}; resume with the same --config/--set")
    return state


def validate(task: FaceTask | VoiceTask, model: nn.Module, device: torch.device, cfg: dict) -> dict:
    """Held-out-identity (val split) agreement with the teacher and EER of the student."""
    from edge_runtime.metrics import eer, make_pairs

    was_training = model.training
    model.eval()
    emb, teacher, ids = task.embed_val(model, device)
    model.train(was_training)  # the weight average stays in eval mode
    gi, ii = make_pairs(ids, max_impostor_per_identity=cfg["eval"]["max_impostor_per_identity"],
                        seed=cfg["eval"]["seed"])
    out: dict[str, Any] = {"val_cos_to_teacher": float(np.mean(np.sum(emb * teacher, axis=1)))}
    for name, e in (("student", emb), ("teacher", teacher)):
        gen = np.sum(e[gi[:, 0]] * e[gi[:, 1]], axis=1)
        imp = np.sum(e[ii[:, 0]] * e[ii[:, 1]], axis=1)
        out[f"val_eer_{name}"] = float(eer(gen, imp)[0]) if len(gen) and len(imp) else None
    return out


def distill(modality: str, data: str | Path, cfg: dict, out: str | Path, cache_dir: str | Path,
            *, resume: bool = False) -> dict:
    """Train, validate each epoch, keep the best checkpoint by val EER; return the summary."""
    if cfg.get("modality") != modality:
        raise ConfigError(f"config is for modality {cfg.get('modality')!r}, not {modality!r}")
    out = Path(out)
    state = load_resume(out, cfg) if resume else None
    if state is None and (out / RESUME_FILE).is_file():
        raise ConfigError(f"{out} holds a run (its {RESUME_FILE}): pass --resume to continue it, or "
                          "choose another --out (nothing there is overwritten)")
    tcfg = cfg["train"]
    rank, world, device = setup_distributed(tcfg.get("device", "auto"))
    torch.set_num_threads(int(tcfg["threads"]))
    seed_everything(int(cfg["seed"]))
    samples, splits = split_reader(modality, data, cfg["split"])
    task_cls: Any = FaceTask if modality == "face" else VoiceTask
    if modality == "face" and cfg.get("views"):
        from train.face_views import ViewFaceTask

        task_cls = ViewFaceTask
    task = task_cls.build(cfg, samples, splits, Path(cache_dir))
    # again: computing teacher targets that the cache lacks draws from the global generators
    # (the teachers' own layers are initialised before their weights load) and sets torch to
    # one thread (train.prepare), so a run's initial weights and its arithmetic depended on
    # whether its cache was warm (door_v23 seed 1 re-run on a rebuilt machine, 2026-12-03). A
    # warm cache changes neither: runs made on one keep their results.
    torch.set_num_threads(int(tcfg["threads"]))
    seed_everything(int(cfg["seed"]))
    used = [s for s in samples if s.identity in set(splits["train"]) | set(splits["val"])]
    data_hash = manifest_hash(samples, Path(data))

    model = build_model(cfg).to(device)
    # NHWC convolutions are ~20 % faster on a CPU for the depthwise face network.
    channels_last = bool(tcfg.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = None
    if cfg["loss"]["classification"] > 0:
        head = MarginHead(model.cfg.embedding_dim, len(task.classes)).to(device)
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    opt = torch.optim.AdamW(params, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    bs = int(tcfg["batch_size"])
    steps_per_epoch = max(1, len(task) // (bs * world))
    total = steps_per_epoch * int(tcfg["epochs"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg["lr"], total_steps=total,
                                                pct_start=0.1)
    ema = WeightAverage(model, float(tcfg["ema_decay"])) if tcfg.get("ema_decay") else None
    keep_epochs = bool(tcfg.get("keep_epochs", False))
    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    rng = np.random.default_rng(int(cfg["seed"]) + rank)
    order_rng = np.random.default_rng(int(cfg["seed"]))  # same permutation on every rank
    history: list[dict] = []
    best: dict | None = None
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"]["weights"])
            ema.updates = int(state["ema"]["updates"])
        if head is not None:
            head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        order_rng.bit_generator.state = state["rng"]["order"]
        if rank == 0:
            rng.bit_generator.state = state["rng"]["batch"]
        else:  # only rank 0's generator is saved: other ranks reseed, distinct per epoch
            rng = np.random.default_rng(int(cfg["seed"]) + rank + 1000 * state["epoch"])
        history, best, start_epoch = list(state["history"]), state["best"], int(state["epoch"])
        if rank == 0:  # a kill after these files were written but before resume.pt: roll back
            with open(out / "history.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in history)
            torch.save(state["last_ckpt"], out / "last.pt")
            if state["best_ckpt"] is not None:
                torch.save(state["best_ckpt"], out / "student.pt")
    best_ckpt = state["best_ckpt"] if state is not None else None
    loss_w = cfg["loss"]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": CHECKPOINT_FORMAT, "modality": modality, "config": cfg,
        "data": {"root": str(data), "manifest_hash": data_hash, "n_samples": len(samples),
                 "n_used": len(used), "identities": {k: len(v) for k, v in splits.items()},
                 "extra_train": getattr(task, "extra_data", {})},
        "split": dict(cfg["split"]),
        "front_end": voice_front_end(cfg).to_dict() if modality == "voice" else {"face_size": 112, "colour": bool(cfg["model"].get("colour", False))},
    }
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=rank != 0) as progress:
        bar = progress.add_task(f"distill {modality}", total=total, info="",
                                completed=start_epoch * steps_per_epoch)
        quiet_log = rank == 0 and not progress.console.is_terminal
        log_every = max(1, min(steps_per_epoch // 4, 100))
        if start_epoch:
            progress.console.print(f"resuming {out} after epoch {start_epoch} of {tcfg['epochs']}")
        for epoch in range(start_epoch, int(tcfg["epochs"])):
            perm = order_rng.permutation(len(task))
            t0, sums = time.time(), {"loss": 0.0, "cos": 0.0, "rel": 0.0, "cls": 0.0}
            for step in range(steps_per_epoch):
                idx = perm[(step * world + rank) * bs : (step * world + rank + 1) * bs]
                x, target, labels = (t.to(device) for t in task.batch(idx, rng))
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                emb = train_model(x)
                parts = {"cos": cosine_distill(emb, target), "rel": relational_distill(emb, target)}
                known = labels >= 0  # -1: an image without an identity label (UTKFace)
                parts["cls"] = head(emb[known], labels[known]) if head and bool(known.any()) else emb.new_zeros(())
                loss = (loss_w["cosine"] * parts["cos"] + loss_w["relational"] * parts["rel"]
                        + loss_w["classification"] * parts["cls"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg.get("grad_clip"):  # a recurrent student's gradients can spike
                    torch.nn.utils.clip_grad_norm_(params, float(tcfg["grad_clip"]))
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model)
                sums["loss"] += loss.item()
                for k in ("cos", "rel", "cls"):
                    sums[k] += parts[k].item()
                progress.update(bar, advance=1, info=(
                    f"ep {epoch + 1}/{tcfg['epochs']} step {step + 1}/{steps_per_epoch} "
                    f"loss {sums['loss'] / (step + 1):.4f} cos {sums['cos'] / (step + 1):.4f} "
                    f"rel {sums['rel'] / (step + 1):.5f}"))
                if quiet_log and (step + 1) % log_every == 0:  # detached run: lines in the log
                    t = progress.tasks[bar]
                    progress.console.print(f"{t.fields['info']} | {t.completed}/{total} steps, "
                                           f"{t.time_remaining or 0:.0f} s left")
            if rank != 0:
                continue
            student = ema.model if ema is not None else model  # what is validated and saved
            record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1),
                      **{f"train_{k}": v / steps_per_epoch for k, v in sums.items()},
                      **validate(task, student, device, cfg)}
            history.append(record)
            progress.console.print(json.dumps(record))
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            ckpt = {**meta, "epoch": epoch + 1, "metrics": record,
                    "teacher_mean": task.teacher_mean.tolist(),
                    "state_dict": {k: v.cpu() for k, v in student.state_dict().items()}}
            torch.save(ckpt, out / "last.pt")
            if keep_epochs:
                (out / "epochs").mkdir(exist_ok=True)
                torch.save(ckpt, out / "epochs" / f"ep{epoch + 1:02d}.pt")
            score = record["val_eer_student"] if record["val_eer_student"] is not None else -record["val_cos_to_teacher"]
            if best is None or score < best["score"]:
                best = {"score": score, "epoch": epoch + 1, "metrics": record}
                torch.save(ckpt, out / "student.pt")
                # a copy: ckpt's tensors are the live parameters, which later epochs change
                best_ckpt = {**ckpt, "state_dict": {k: v.clone() for k, v in ckpt["state_dict"].items()}}
            # last_ckpt shares the model's storages (CPU), so it costs little extra on disk
            save_resume(out / RESUME_FILE, {
                "resume_format": RESUME_FORMAT, "config": cfg, "epoch": epoch + 1,
                "model": model.state_dict(), "head": head.state_dict() if head else None,
                "ema": ({"weights": ema.model.state_dict(), "updates": ema.updates}
                        if ema is not None else None),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state(), "order": order_rng.bit_generator.state,
                        "batch": rng.bit_generator.state},
                "history": history, "best": best, "last_ckpt": ckpt, "best_ckpt": best_ckpt})
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    summary = {"out": str(out), "best": best, "history": history, "data": meta["data"]}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_student(path: str | Path) -> tuple[nn.Module, dict]:
    """A trained backbone (eval mode) and its checkpoint metadata."""
    from edge_runtime.errors import ModelError

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{p}: not a readable edgepin checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{p}: not an edgepin student checkpoint (format {CHECKPOINT_FORMAT})")
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
