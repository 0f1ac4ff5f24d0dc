"""The `edgepin` command line: `main.py` builds the parser, one module per command group.

`info.py` and `device.py` register the device commands; `run.py` drives `edgepin run`;
`demo.py` and `bench.py` are the demo and the latency benchmark; `options.py` holds what
several commands share (model bundle, gallery path, plug-in functions). The train,
calibration and export packages register their own commands (`<package>.commands.register`).
"""

from edge_runtime.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
