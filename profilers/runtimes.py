"""The runtime registry: CLI name -> `Runtime` class, for the built-in runtimes and for those that
installed packages add through the ``hwlat.runtimes`` entry-point group (``name = "module:Class"``).

This is the one place built-in runtime names appear; everything else asks a runtime object.
"""

from __future__ import annotations

from typing import Any

from device_tables.errors import RuntimeUnavailableError
from device_tables.plugins import Registry
from profilers.base import Runtime

ENTRY_POINT_GROUP = "hwlat.runtimes"
BUILT_IN: dict[str, str] = {
    "onnxruntime": "profilers.ort.runtime:OnnxRuntime",
    "torch": "profilers.torch_eager.runtime:TorchRuntime",
    "litert": "profilers.litert.runtime:LiteRTRuntime",
    "tflm": "profilers.tflm.runtime:TFLMRuntime",
    "board": "profilers.board.runtime:BoardRuntime",
}


REGISTRY = Registry(ENTRY_POINT_GROUP, Runtime, BUILT_IN, "runtime", RuntimeUnavailableError)


def runtimes() -> dict[str, type[Runtime]]:
    """Every runtime by CLI name: the built-in ones, then installed plugins (a plugin may not take a
    built-in name; one that fails to import is skipped with a warning)."""
    return REGISTRY.all()


def runtime_class(name: str) -> type[Runtime]:
    """The class of a runtime by CLI name; `RuntimeUnavailableError` listing the names for an unknown one."""
    return REGISTRY.get(name)


def get_runtime(name: str, **settings: Any) -> Runtime:
    """Instantiate a runtime by name; raises `RuntimeUnavailableError` with an install hint."""
    return runtime_class(name)(**settings)
