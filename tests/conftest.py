"""Shared test fixtures: paths to the bundled real-data excerpts (tests/fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


# ------------------------------------------------- a device install collects cleanly
# A device install (pip install edgepin, no torch/onnx) must be able to run
# `pytest -m gpu` (docs/jetson.md). pytest imports every test module before it filters by
# marker, so a module importing torch or onnx at its top would abort the whole collection
# there. Modules whose module-level imports (followed through the repository's own modules
# and test helpers) name a package that is not installed are therefore not collected; the
# header line says which and why. With the full install nothing is left out.
_REPO = FIXTURES.parents[1]
_LOCAL_ROOTS = ("edge_runtime", "export", "train", "calibration")


@pytest.fixture(scope="session")
def gpu_tensorrt():
    """TensorRT with a usable CUDA device, or a skip saying what is missing (the gpu tests)."""
    trt = pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine or a Jetson)")
    from edge_runtime.backends.cuda import load_cudart
    from edge_runtime.engine_meta import probe_cuda_device
    from edge_runtime.errors import DependencyError, ModelError

    try:
        rt = load_cudart()
    except DependencyError as exc:
        pytest.skip(str(exc))
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count == 0:
        pytest.skip(f"no CUDA device usable by cuda-python ({err}): wrong cuda-python for "
                    "this driver? (JetPack 6: pip install 'edgepin[jetpack6]')")
    try:
        probe_cuda_device()
    except ModelError as exc:
        pytest.skip(f"no usable NVIDIA GPU: {exc}")
    return trt


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in _LOCAL_ROOTS:
        helper = FIXTURES.parent / f"{name}.py"
        return helper if len(parts) == 1 and helper.is_file() else None
    base = _REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_imports(path: Path) -> list[str]:
    import ast

    names = []
    for node in ast.parse(path.read_text(), str(path)).body:  # module level only
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _importable(name: str) -> str | None:
    """None when third-party module ``name`` imports, else the missing package's name.

    Imported for real (not only looked up): ``onnxruntime.quantization`` exists on a device
    install but imports onnx. The test modules would import these during collection anyway.
    """
    import importlib
    import importlib.util

    try:
        importlib.import_module(name)
    except ImportError as exc:
        top = (exc.name or name).split(".")[0]
        # an installed package that fails to import (a name removed from one of our modules,
        # say) is a bug to show, not a missing install: collect the test so it fails loudly
        return None if importlib.util.find_spec(top) is not None else top
    return None


def _missing_imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Third-party packages ``path`` needs at import time that do not import here."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    missing: set[str] = set()
    for name in _top_imports(path):
        parts = name.split(".")
        local = [_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        if parts[0] in _LOCAL_ROOTS or local[0] is not None:
            for f in local:
                if f is not None:
                    missing |= _missing_imports(f, seen)
        elif parts[0] != "__future__" and (lack := _importable(name)) is not None:
            missing.add(lack)
    return missing


_NOT_COLLECTED: dict[str, set[str]] = {}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    path = Path(collection_path)
    if path.suffix != ".py" or not path.name.startswith("test_"):
        return None
    missing = _missing_imports(path)
    if missing:
        _NOT_COLLECTED[path.name] = missing
        return True
    return None


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    if not _NOT_COLLECTED:
        return []
    needs = sorted(set().union(*_NOT_COLLECTED.values()))
    return [f"not collected ({len(_NOT_COLLECTED)} modules need {', '.join(needs)}, not "
            f"installed here): {', '.join(sorted(_NOT_COLLECTED))}"]
