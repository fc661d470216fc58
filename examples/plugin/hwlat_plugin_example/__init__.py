"""An example hwlat runtime plugin: ONNX Runtime with basic graph optimisations only (constant
folding and redundant-node removal, no layout changes or op fusion), as some deployments run it.

It subclasses the built-in onnxruntime runtime, so it builds and times ops, whole networks and
search-space architectures as that one does; its name makes its tables another device
(``cpu/ort-basic/fp32/threads=1``).
"""

from __future__ import annotations

from typing import Any

from hwlat.plugins import runtimes


class BasicOnnxRuntime(runtimes()["onnxruntime"]):
    name = "ort-basic"
    cli_options = ()  # the optimisation level is this runtime's identity, not a flag

    def __init__(self, threads: int = 1, precision: str = "fp32", **settings: Any):
        settings.pop("opt_level", None)
        super().__init__(threads=threads, precision=precision, opt_level="basic", **settings)

    def runtime_settings(self) -> dict[str, Any]:
        return {}  # the name says it all: no opt_level in the device name
