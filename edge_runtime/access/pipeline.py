"""One access attempt (kept as the import path other modules and scripts use).

The work is split in two modules: ``collector`` (evidence gathered frame by frame and chunk by
chunk during capture) and ``verifier`` (the decision once capture ends).
"""

from edge_runtime.access.collector import (
    MISSING_POLICIES,
    Collector,
    FaceCandidate,
    PipelineConfig,
)
from edge_runtime.access.verifier import AttemptResult, Verifier, denial

__all__ = ["MISSING_POLICIES", "AttemptResult", "Collector", "FaceCandidate", "PipelineConfig",
           "Verifier", "denial"]
