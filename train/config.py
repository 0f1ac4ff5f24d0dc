"""Experiment configs: one YAML per experiment, dotted command-line overrides (wespeaker-style).

An experiment that changes a few keys of another names it with `base:` and holds only its
differences, so the file says what the experiment is about and a fix to the base reaches it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


def load_config(path: str | Path | None, default_name: str, overrides: list[str] | None = None) -> dict:
    """Read a YAML config (or the packaged default), resolve its `base:` chain, apply overrides."""
    p = Path(path) if path else CONFIG_DIR / default_name
    return apply_overrides(_resolve(p, ()), overrides or [], source=str(p))


def _read(p: Path) -> dict:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return cfg


def _resolve(p: Path, seen: tuple[Path, ...]) -> dict:
    """The config at `p` merged over its `base:` (a path relative to `p`'s folder), recursively."""
    key = p.resolve()
    if key in seen:
        chain = " -> ".join(str(s.name) for s in (*seen, key))
        raise ConfigError(f"{p}: `base:` loops ({chain})")
    cfg = _read(p)
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: `base:` must name another YAML file, got {base!r}")
    return merge(_resolve(p.parent / base, (*seen, key)), cfg, source=str(p))


def merge(base: dict, child: dict, *, source: str = "config") -> dict:
    """`base` with `child`'s keys laid over it; sections merge key by key, values replace.

    A key the base lacks is added (an experiment may switch on an option its base leaves at its
    default); `null` switches a section off; a section cannot become a value or the reverse,
    which is almost always a typo.
    """
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = merge(out[k], v, source=f"{source}: {k}")
        elif k in out and None not in (out[k], v) and isinstance(out[k], dict) != isinstance(v, dict):
            raise ConfigError(f"{source}: {k!r} is a section in its base but a value here (or the reverse)")
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: list[str], *, source: str = "config") -> dict:
    """Return a copy of `cfg` with each `a.b.c=value` applied; unknown keys are refused."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = out
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override {item!r}: no section {part!r} in {source}")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"override {item!r}: no key {key!r} in {source}")
        node[parts[-1]] = yaml.safe_load(raw)
    return out
