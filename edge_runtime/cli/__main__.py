"""`python -m edge_runtime.cli` (also what `torchrun -m edge_runtime.cli` runs)."""

from edge_runtime.cli.main import main

raise SystemExit(main())
