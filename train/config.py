"""Experiment configs: one YAML per experiment, dotted command-line overrides (wespeaker-style)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


def load_config(path: str | Path | None, default_name: str, overrides: list[str] | None = None) -> dict:
    """Read a YAML config (or the packaged default) and apply `key.sub=value` overrides."""
    p = Path(path) if path else CONFIG_DIR / default_name
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return apply_overrides(cfg, overrides or [], source=str(p))


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
