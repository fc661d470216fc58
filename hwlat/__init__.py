"""hwlat: hardware latency profiling and prediction for neural networks.

The jobs' Python API (`hwlat.api`), imported on first use so that ``import hwlat`` stays fast:
``hwlat.load_table(name)``, ``hwlat.predict(model, table=...)``, ``hwlat.profile_device(runtime, out)``.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("hwlat")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

_API = ("load_table", "predict", "profile_device", "space_graph")


def __getattr__(name: str):
    if name in _API:
        from hwlat import api

        return getattr(api, name)
    raise AttributeError(f"module 'hwlat' has no attribute {name!r}")


__all__ = ["__version__", *_API]
