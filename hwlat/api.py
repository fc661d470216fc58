"""The Python API of hwlat's jobs; the CLI is a thin layer over it (`import hwlat` re-exports these)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from device_tables.graph import Graph
from device_tables.table import DeviceTable


def load_table(name_or_path: str | os.PathLike) -> DeviceTable:
    """A shipped device table by name (``cpu_onnxruntime_fp32_threads1``) or any table by path."""
    from device_tables import load

    return load(name_or_path)


def space_graph(space: Any, arch: Any) -> Graph:
    """The `Graph` of an architecture of a search space (a `Space` or its name), as its ONNX model runs."""
    from nas.spaces import get_space

    sp = get_space(space) if isinstance(space, str) else space
    return sp.graph(arch)


def predict(model: Any, table: str | os.PathLike | DeviceTable, space: Any = None,
            input_shape: Sequence[int] | None = None):
    """The `predictors.lut.Prediction` of a network on a profiled device: `model` is an ONNX path,
    bytes or ``onnx.ModelProto``, a `Graph`, or an architecture (a key or object) of `space`.
    ``.total_ms`` is the latency, ``.kernels`` the breakdown, ``.partial`` whether ops were left out."""
    from predictors.lut import LUTPredictor

    t = table if isinstance(table, DeviceTable) else load_table(table)
    graph = space_graph(space, model) if space is not None else model
    return LUTPredictor(t).predict_graph(graph, input_shape=input_shape)


def profile_device(runtime: str, out: str | os.PathLike, minutes: float | None = None, **settings: Any):
    """`hwlat profile device`: a complete table of `runtime` (a name) with `settings` (threads,
    precision, ...) at `out` within `minutes` (default: the command's); see
    `hwlat.device_profile.profile_device` for the options."""
    from hwlat.device_profile import DEFAULT_MINUTES
    from hwlat.device_profile import profile_device as run
    from profilers.runtimes import get_runtime

    options = {k: settings.pop(k) for k in list(settings) if k in (
        "protocol", "targets", "calibration_networks", "score_networks", "per_space", "fusion_patterns", "progress")}
    return run(get_runtime(runtime, **settings), out, minutes=minutes or DEFAULT_MINUTES, **options)
