"""The single `edgepin` console script.

Subcommands live next to the code they drive: each module in COMMAND_MODULES has a
`register(subparsers)` function (Polygraphy-style tool registration). Those modules must stay cheap to import (no torch at module
level) so that `edgepin --help` and the device commands work on a machine without the
training extras; heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge_runtime import __version__
from edge_runtime.errors import EdgepinError

# Order is the order in `edgepin --help`. A package whose extras are not installed still
# registers its commands; the handler raises DependencyError naming the extra to install.
COMMAND_MODULES = (
    "edge_runtime.cli.info",
    "edge_runtime.cli.device",
    "train.commands",
    "calibration.commands",
    "export.commands",
    "export.dlib.commands",
    "export.resemblyzer",
)


def build_parser() -> argparse.ArgumentParser:
    """Assemble the parser from every package's `register` function."""
    parser = argparse.ArgumentParser(
        prog="edgepin",
        description="Edge face-and-voice verifier: train, export, calibrate, run.",
    )
    parser.add_argument("--version", action="version", version=f"edgepin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # package not shipped in this install
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; expected failures become one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        result = args.handler(args)
    except EdgepinError as exc:
        print(f"edgepin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgepin {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)

