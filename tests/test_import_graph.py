"""The layering holds: no import circle between modules or between edge_runtime's rooms,
no private name imported across packages, and edge_runtime never reaches up into the
training, calibration or export packages.

Read from the source (ast), lazy imports inside functions included: a circle closed by a
function-level import still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_runtime", "train", "calibration", "export")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module a dotted name lives in (the longest known prefix)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import in a module."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    out.append((target, None))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}")
                if target is None:
                    continue
                name = None if target == f"{base}.{alias.name}" else alias.name
                out.append((target, name))
    return out


GRAPH = {m: sorted({t for t, _ in _imports(m) if t != m}) for m in MODULES}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _room(module: str) -> str:
    """edge_runtime's rooms: a sub-package, or a module at the package root."""
    parts = module.split(".")
    if parts[0] != "edge_runtime" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def test_graph_is_read() -> None:
    # the walker must see the known edges, or the checks below would pass on nothing
    assert "edge_runtime.access.pipeline" in GRAPH["edge_runtime.access.loop"]
    assert "edge_runtime.frontend.audio" in GRAPH["edge_runtime.frontend.video"]
    assert len(MODULES) > 100


def test_no_module_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_no_cycle_between_edge_runtime_rooms() -> None:
    rooms: dict[str, set[str]] = {}
    for m, targets in GRAPH.items():
        if not m.startswith("edge_runtime."):
            continue
        rooms.setdefault(_room(m), set()).update(
            _room(t) for t in targets if t.startswith("edge_runtime.") and _room(t) != _room(m))
    assert _cycles({k: sorted(v) for k, v in rooms.items()}) == []


def test_cycle_detector_finds_a_cycle() -> None:
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def _package(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_across_packages(module: str) -> None:
    bad = [f"{t}.{n}" for t, n in _imports(module)
           if n and n.startswith("_") and not n.startswith("__") and _package(t) != _package(module)]
    assert bad == [], f"{module} imports private names from another package"


def test_edge_runtime_is_the_bottom_floor() -> None:
    up = {m: [t for t in ts if t.split(".")[0] in ("train", "calibration", "export")]
          for m, ts in GRAPH.items() if m.startswith("edge_runtime")}
    assert {m: ts for m, ts in up.items() if ts} == {}
