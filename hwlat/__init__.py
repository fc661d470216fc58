"""hwlat: hardware latency profiling and prediction for neural networks.

The jobs' Python API (`hwlat.api`, imported on first use so that ``import hwlat`` stays fast)::

    import hwlat
    table = hwlat.load_table("cpu_onnxruntime_fp32_threads1")
    hwlat.predict("resnet18.onnx", table=table).latency_ms
    hwlat.predict("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
                  table=table, space="nb201")
    hwlat.profile_device("onnxruntime", "tables/my_cpu")          # a complete table of this machine
    keys = hwlat.suggest("nb201", 20)                              # measure these on a new device, then
    pred = hwlat.fit("nb201", "measured.csv")                      # the shipped predictor adapted to them
    c = hwlat.LatencyConstraint(predictor, budget_ms=2.0)          # for any NAS loop

`hwlat.plugins` lists the runtimes and search spaces, built-in and installed. Bad input (an unknown
table, runtime or space, a malformed file, a setting out of range) raises a subclass of `hwlat.HwlatError`
whose message names the thing and what to do.
"""

from importlib import metadata as _metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see of the names below, which import on first use
    from hwlat.device_tables.errors import HwlatError
    from hwlat import plugins
    from hwlat.api import (LatencyConstraint, accuracy, adapt, drift, fit, load_predictor, load_table, predict,
                           predict_adapted, predict_archs, profile_archs, profile_device, profile_fusion, profile_model,
                           profile_ops, runtime, save_predictor, search, space, suggest, tables)

try:
    __version__ = _metadata.version("hwlat")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__", "HwlatError", "plugins", "LatencyConstraint", "accuracy", "adapt", "drift", "fit",
           "load_predictor", "load_table", "predict", "predict_adapted", "predict_archs", "profile_archs", "profile_device",
           "profile_fusion", "profile_model", "profile_ops", "runtime", "save_predictor", "search", "space", "suggest",
           "tables"]
_API = __all__[3:]


def __getattr__(name: str):
    if name in _API:
        from hwlat import api

        return getattr(api, name)
    if name == "HwlatError":  # device_tables' package imports numpy
        from hwlat.device_tables.errors import HwlatError

        return HwlatError
    if name == "plugins":
        import importlib

        return importlib.import_module("hwlat.plugins")
    raise AttributeError(f"module 'hwlat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
