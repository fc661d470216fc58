"""hwlat: hardware latency profiling and prediction for neural networks."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("hwlat")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
