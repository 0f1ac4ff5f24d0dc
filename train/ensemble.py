"""Join independently trained voice students into one ensemble checkpoint.

Why: draws of one voice recipe differ on unseen speakers by about as much as recipes do
(`benchmarks/students.md`, issue 15), so part of each student's error is its own draw. The
ensemble's embedding is the re-normalised mean of its members' unit embeddings
(`train.models.VoiceEnsemble`). The result is an ordinary student checkpoint (`model.arch:
ensemble`, the members' own model configs), so `train.select --also`, `benchmarks.voice_door`,
`edgepin export` and `scripts/ship_student.sh` take it unchanged, and the device runs one graph.

    python -m train.ensemble /work/runs/i17_a/epochs/ep11.pt /work/runs/i17_b/epochs/ep09.pt \\
        --out /work/runs/i17_ens.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_runtime.errors import ConfigError, EdgepinError
from train.average import write_new_checkpoint

# what every member must share: the device feeds all of them the same window
SHARED = ("modality", "front_end", "split")


def ensemble_checkpoints(paths: list[Path]) -> dict:
    """One checkpoint holding every member of `paths` (voice students, same front-end)."""
    from train.distill import load_student

    if len(paths) < 2:
        raise ConfigError("an ensemble needs at least two checkpoints")
    if len(set(map(Path.resolve, paths))) != len(paths):
        raise ConfigError("the same checkpoint given twice: an ensemble of one draw is that draw")
    ckpts = [load_student(p)[1] for p in paths]
    first = ckpts[0]
    if first["modality"] != "voice":
        raise ConfigError(f"{paths[0]}: a {first['modality']} student; ensembles are for voice")
    dims = set()
    for p, c in zip(paths, ckpts, strict=True):
        for key in SHARED:
            if c.get(key) != first.get(key) or c["config"].get(key) != first["config"].get(key):
                raise ConfigError(f"{p}: another {key} than {paths[0]} (members share one input)")
        if c["config"]["model"].get("arch") == "ensemble":
            raise ConfigError(f"{p}: already an ensemble; give its members instead")
        dims.add(int(c["config"]["model"]["embedding_dim"]))
    if len(dims) != 1:
        raise ConfigError(f"members' embedding sizes differ: {sorted(dims)}")
    state = {f"members.{i}.{k}": v for i, c in enumerate(ckpts) for k, v in c["state_dict"].items()}
    config = {**first["config"], "model": {"arch": "ensemble", "embedding_dim": dims.pop(),
                                           "members": [c["config"]["model"] for c in ckpts]}}
    out = {k: v for k, v in first.items() if k not in ("state_dict", "config", "metrics")}
    out.update(config=config, state_dict=state, ensemble_of=[str(p) for p in paths],
               metrics={"members": [{"path": str(p), "epoch": c.get("epoch"), **(c.get("metrics") or {})}
                                    for p, c in zip(paths, ckpts, strict=True)]})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        write_new_checkpoint(a.out, lambda: ensemble_checkpoints(a.checkpoints))
    except EdgepinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{a.out}: ensemble of {len(a.checkpoints)} voice students")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
