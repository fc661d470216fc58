"""The runtime registry: CLI name -> `Runtime` class, for the built-in runtimes and for those that
installed packages add through the ``hwlat.runtimes`` entry-point group (``name = "module:Class"``).

This is the one place built-in runtime names appear; everything else asks a runtime object.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterable

import hwlat.device_tables.table as table_module
from hwlat.device_tables.errors import HwlatError, RuntimeUnavailableError
from hwlat.device_tables.plugins import Registry
from hwlat.profilers.base import Runtime

ENTRY_POINT_GROUP = "hwlat.runtimes"
BUILT_IN: dict[str, str] = {
    "onnxruntime": "hwlat.profilers.ort.runtime:OnnxRuntime",
    "torch": "hwlat.profilers.torch_eager.runtime:TorchRuntime",
    "litert": "hwlat.profilers.litert.runtime:LiteRTRuntime",
    "tflm": "hwlat.profilers.tflm.runtime:TFLMRuntime",
    "board": "hwlat.profilers.board.runtime:BoardRuntime",
}


REGISTRY = Registry(ENTRY_POINT_GROUP, Runtime, BUILT_IN, "runtime", RuntimeUnavailableError)


def runtimes() -> dict[str, type[Runtime]]:
    """Every runtime by CLI name: the built-in ones, then installed plugins (a plugin may not take a
    built-in name; one that fails to import is skipped with a warning)."""
    return REGISTRY.all()


def listed(names: Iterable[str]) -> str:
    """Runtime names joined by commas, each whose package is not installed here marked so."""
    found = runtimes()
    return ", ".join(n if found[n].installed() else f"{n} (not installed)" for n in names)


def runtime_class(name: str) -> type[Runtime]:
    """The class of a runtime by CLI name; `RuntimeUnavailableError` listing the names for an unknown one."""
    return REGISTRY.get(name)


def get_runtime(name: str, **settings: Any) -> Runtime:
    """Instantiate a runtime by name; raises `RuntimeUnavailableError` with an install hint, and
    `HwlatError` for a setting the runtime does not have (``thread=4`` would otherwise pass unseen)."""
    cls = runtime_class(name)
    known = setting_names(cls)
    unknown = sorted(set(settings) - known)
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        raise HwlatError(f"the {name} runtime has no setting {', '.join(map(repr, unknown))}"
                         + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + f"; its settings: {', '.join(sorted(known))}")
    return cls(**settings)


def setting_names(cls: type[Runtime]) -> set[str]:
    """The keyword settings a runtime class takes: its and its bases' named constructor parameters."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names | {o.setting for o in cls.cli_options}


def _device_flags(device: Any) -> list[str] | None:
    """`Runtime.device_flags` of a table's device entry (a dict), or None where it is not readable or
    its runtime not installed: what `hwlat.device_tables.table.mend_meta_hint` names besides --runtime."""
    from hwlat.device_tables.device import Device

    try:
        return runtime_class(str(device["runtime"])).device_flags(Device.from_dict(device))
    except Exception:  # a damaged entry, an unknown runtime: the hint falls back to the settings' names
        return None


table_module.device_flags_hook = _device_flags
