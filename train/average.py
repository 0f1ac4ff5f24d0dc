"""Average the weights of a run's kept epochs (stochastic weight averaging after the fact).

Why: a voice run's validation EER moves by about 1 pt from one epoch to the next while the
learning rate decays (`benchmarks/students.md`, i15_i epochs 10-20), and 10 validation speakers
cannot tell which epoch is really best. The mean of the epochs of the decaying phase sits in
the middle of the region they wander in (Izmailov et al., 2018, "Averaging Weights Leads to
Wider Optima"), and it needs no new training: `train.keep_epochs` already kept them.

BatchNorm's running statistics of a weight average are not the average of the statistics
(the layers before them changed), so with `--data` they are re-estimated as SWA does: a pass in
training mode over batches of the run's own training items (its config, split and cached
teacher targets; `--bn-batches` of them), nothing learned. Without `--data` they are averaged
with the weights. The result is an ordinary student checkpoint (same format, same config), so
`train.select --also`, `edgepin export` and `benchmarks.voice_door` take it unchanged.

    python -m train.average /work/runs/i15_i/epochs/ep1[0-9].pt /work/runs/i15_i/epochs/ep20.pt \\
        --out /work/runs/i15_i/swa10-20.pt --data ../shared/data/speechocean762 --cache /work/cache
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edge_runtime.errors import ConfigError, EdgepinError


def average_checkpoints(paths: list[Path]) -> dict:
    """One checkpoint whose float tensors are the mean of `paths`' (same network required)."""
    from train.distill import load_student

    if len(paths) < 2:
        raise ConfigError("averaging needs at least two checkpoints")
    ckpts = [load_student(p)[1] for p in paths]
    first = ckpts[0]
    for p, c in zip(paths[1:], ckpts[1:], strict=True):
        if c["config"].get("model") != first["config"].get("model") or c["state_dict"].keys() != first["state_dict"].keys():
            raise ConfigError(f"{p}: another network than {paths[0]} (model config or layers differ)")
        if c.get("front_end") != first.get("front_end"):
            raise ConfigError(f"{p}: another front-end than {paths[0]}")
    state = {}
    for k, v in first["state_dict"].items():
        if torch.is_floating_point(v):
            state[k] = torch.stack([c["state_dict"][k].float() for c in ckpts]).mean(0).to(v.dtype)
        else:  # BatchNorm's num_batches_tracked: a counter, not a weight
            state[k] = ckpts[-1]["state_dict"][k].clone()
    out = {k: v for k, v in ckpts[-1].items() if k != "state_dict"}
    out["state_dict"] = state
    out["averaged_from"] = [str(p) for p in paths]
    out["metrics"] = {"averaged_epochs": [c.get("epoch") for c in ckpts]}
    return out


def recompute_batchnorm(ckpt: dict, data: Path, cache: Path, batches: int = 64, seed: int = 0) -> dict:
    """`ckpt` with BatchNorm statistics measured on `batches` of its run's training items."""
    from rich.progress import track
    from torch import nn

    from train.tasks import VoiceTask, build_model, split_reader

    cfg = ckpt["config"]
    if ckpt.get("modality") != "voice":
        raise ConfigError("BatchNorm re-estimation is built for voice runs only")
    samples, splits = split_reader("voice", data, cfg["split"])
    task = VoiceTask.build(cfg, samples, splits, cache)
    model = build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    if not norms:
        return ckpt
    for m in norms:  # momentum None: a plain cumulative mean over the pass
        m.reset_running_stats()
        m.momentum = None
    model.train()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(task))
    bs = int(cfg["train"]["batch_size"])
    passes = min(batches, len(task) // bs)
    with torch.no_grad():
        for i in track(range(passes), description="BatchNorm statistics"):
            x, _, _ = task.batch(order[i * bs:(i + 1) * bs], rng)
            model(x)
    out = dict(ckpt)
    out["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out["batchnorm"] = {"re_estimated_batches": passes, "seed": seed}
    return out


def write_new_checkpoint(out: Path, build: Callable[[], dict]) -> dict:
    """Build a checkpoint and save it at `out`; an existing file is never overwritten (a chosen
    or shipped student may live there), and nothing is written when building fails."""
    if out.exists():
        raise ConfigError(f"{out} exists: choose another --out (nothing is overwritten)")
    ckpt = build()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", type=Path, help="the run's speechocean762 folder: re-estimate BatchNorm")
    p.add_argument("--cache", type=Path, help="the run's teacher cache (with --data)")
    p.add_argument("--bn-batches", type=int, default=64)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    def build() -> dict:
        ckpt = average_checkpoints(a.checkpoints)
        return ckpt if a.data is None else recompute_batchnorm(ckpt, a.data, a.cache, a.bn_batches)

    try:
        if (a.data is None) != (a.cache is None):
            raise ConfigError("--data and --cache go together (BatchNorm re-estimation)")
        ckpt = write_new_checkpoint(a.out, build)
    except EdgepinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{a.out}: mean of {len(a.checkpoints)} checkpoints (epochs {ckpt['metrics']['averaged_epochs']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
