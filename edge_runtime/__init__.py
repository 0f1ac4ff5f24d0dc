"""edgepin's on-device runtime: feature front-ends, capture, inference backends, the loop.

This package is what a Jetson runs. It must never import torch, directly or indirectly
(tests/test_torch_free.py enforces it); training imports its front-ends so that the
workstation and the device compute identical features.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgepin")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
