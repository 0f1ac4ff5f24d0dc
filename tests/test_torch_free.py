"""edge_runtime runs on a Jetson without PyTorch: importing any part of it must not load torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import edge_runtime


def test_edge_runtime_never_imports_torch():
    modules = sorted(
        m.name for m in pkgutil.walk_packages(edge_runtime.__path__, prefix="edge_runtime.")
        if not m.name.endswith(".__main__")  # importing it runs the CLI
    )
    assert "edge_runtime.cli" in modules  # the walk found the package's modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(','.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"torch imported by edge_runtime: {proc.stdout} {proc.stderr}"


def test_cli_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from edge_runtime.cli import build_parser\n"
        "build_parser()\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
