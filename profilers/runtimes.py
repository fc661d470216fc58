"""Runtime registry: CLI names -> backend classes, imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from device_tables.errors import RuntimeUnavailableError
from profilers.base import Runtime

RUNTIMES: dict[str, str] = {
    "onnxruntime": "profilers.ort.runtime:OnnxRuntime",
    "torch": "profilers.torch_eager.runtime:TorchRuntime",
    "litert": "profilers.litert.runtime:LiteRTRuntime",
    "tflm": "profilers.tflm.runtime:TFLMRuntime",
    "board": "profilers.board.runtime:BoardRuntime",
}


def runtime_class(name: str) -> type[Runtime]:
    if name not in RUNTIMES:
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    module, _, cls = RUNTIMES[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("profilers"):
            raise RuntimeUnavailableError(f"runtime {name!r} is not built into this hwlat yet") from exc
        raise


def get_runtime(name: str, **settings: Any) -> Runtime:
    """Instantiate a runtime by name; raises `RuntimeUnavailableError` with an install hint."""
    return runtime_class(name)(**settings)
