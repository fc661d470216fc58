"""Whole ONNX models on ONNX Runtime: their latency (`time_onnx_model`), and where it goes per node
(`profile_model`: ONNX Runtime's profiler, its nodes mapped back to the source graph's)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwlat.device_tables.errors import ModelError, RuntimeUnavailableError
from hwlat.device_tables.graph import input_shapes, load_onnx
from hwlat.device_tables.measurement import Measurement
from hwlat.profilers.ort.install import cuda_provider_problem, import_onnxruntime, installed_distributions
from hwlat.profilers.ort.model_profile import ModelProfile, NodeTime
from hwlat.profilers.ort.nodes import (NodeTrace, OnnxNodeGraph, align_names, kernel_times, map_runtime_nodes, name_nodes,
                                 parse_trace, source_ops)
from hwlat.profilers.ort.session import (DEFAULT_OPT_LEVEL, PROVIDERS, Binding, bind, create_session, execution_providers,
                                   parse_provider, session_options)
from hwlat.profilers.protocol import Protocol, measure, perf_timer

if TYPE_CHECKING:
    from hwlat.profilers.ort.runtime import OnnxRuntime

log = logging.getLogger(__name__)


def time_onnx_model(model: bytes | str | os.PathLike | Any, threads: int = 1, protocol: Protocol = Protocol(),
                    opt_level: str = DEFAULT_OPT_LEVEL,
                    input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                    provider: str = "cpu", providers: Sequence[Any] | None = None) -> Measurement:
    """Whole-model latency of an ONNX model (bytes or path) on ONNX Runtime, with `protocol`.

    Cheap to call many times: one session, no model checks beyond what ONNX Runtime does itself.
    Dynamic input dimensions need `input_shape` (one shape, or a name -> shape mapping). `provider`
    ``cuda[:N]`` runs it on the CUDA execution provider with inputs and outputs in GPU memory
    (nodes the GPU cannot run fall back to the CPU, as in normal use). `providers`, where given, is
    the session's provider list (a runtime's `OnnxRuntime.providers`).
    """
    ort = import_onnxruntime()
    kind, device_id = parse_provider(provider)
    if kind == "cuda":
        problem = cuda_provider_problem(installed_distributions(), list(ort.get_available_providers()),
                                        getattr(ort, "__version__", "?"))
        if problem:
            raise RuntimeUnavailableError(problem)
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        model = model.SerializeToString()
    where = "model" if isinstance(model, (bytes, bytearray)) else str(model)
    session = create_session(ort, model, session_options(ort, threads, opt_level), where,
                             providers or execution_providers(kind, device_id))
    shapes = input_shapes([(i.name, list(i.shape), i.type) for i in session.get_inputs()], input_shape, where)
    bound = bind(ort, session, shapes, where, (kind, device_id))
    return measure(perf_timer(bound.run), protocol)


def profile_model(path: str | os.PathLike, threads: int = 1, opt_level: str = DEFAULT_OPT_LEVEL,
                  input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                  protocol: Protocol = Protocol(), profile_runs: int | None = None,
                  provider: str = "cpu", runtime: OnnxRuntime | None = None) -> ModelProfile:
    """Whole-model latency plus ONNX Runtime's per-node profile, mapped back to the source graph's nodes.

    Raises `ModelError` naming the file for a missing, malformed or unsupported model, or a dynamic
    input without `input_shape`. Returns a `ModelProfile`. Under ``provider="cuda"`` node times are the
    GPU kernels' when this onnxruntime build traces them (``Kernel`` events), else the host-side time of
    each node (kernel launches; see docs/tutorials/profile-gpu.md), which ``versions["node_timing"]`` says. A `runtime`
    given replaces `threads`, `opt_level` and `provider` with its own settings and providers.
    """
    import onnx

    from hwlat.profilers.ort.runtime import OnnxRuntime  # here: hwlat.profilers.ort.runtime imports this module

    runtime = runtime or OnnxRuntime(threads=threads, opt_level=opt_level, provider=provider)
    ort = runtime.ort
    where = str(path)
    model = _load_model(Path(path))
    renamed = name_nodes(model.graph)
    if renamed:
        log.info("%s: named %d unnamed or duplicate-named nodes", where, renamed)
    source = OnnxNodeGraph.from_onnx(model.graph)
    shapes = input_shapes(_declared_inputs(onnx, model, source), input_shape, where)
    data = model.SerializeToString() if model.ByteSize() < 2_000_000_000 else where

    session = create_session(ort, data, session_options(ort, runtime.threads, runtime.opt_level), where,
                             runtime.providers())
    bound = bind(ort, session, shapes, where, runtime.placement)
    latency = measure(perf_timer(bound.run), protocol)
    runs = profile_runs or _profile_runs(latency.median_ms, len(source.nodes))
    traces, node_timing, optimized = _trace_nodes(runtime, data, shapes, where, runs, max(2, protocol.warmup_runs))
    rows = _node_rows(traces, _source_nodes_of(source, optimized, traces), source)
    ran = {n for row in rows for n in row.source_nodes}
    return ModelProfile(
        model=where, device=runtime.device().name, opt_level=runtime.opt_level, threads=runtime.threads,
        input_shapes={k: list(v[0]) for k, v in shapes.items()}, latency=latency, nodes=rows, profiled_runs=runs,
        source_node_count=len(source.nodes), eliminated=[(n.name, n.op_type) for n in source.nodes if n.name not in ran],
        versions={"onnxruntime": getattr(ort, "__version__", "?"), "onnx": onnx.__version__,
                  "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
                  "provider": PROVIDERS[runtime.provider], "node_timing": node_timing},
        clock=protocol.clock,
    )


def _trace_nodes(runtime: OnnxRuntime, data: bytes | str, shapes: Mapping[str, tuple[tuple[int, ...], Any]],
                 where: str, runs: int, warmup: int) -> tuple[dict[str, NodeTrace], str, OnnxNodeGraph | None]:
    """ONNX Runtime's profile of `runs` runs after `warmup` ones, on a session that also saves its optimised
    graph: the nodes' traces, how their times were taken, and that graph (None where it could not be saved)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="hwlat_ort_") as tmp:
        optimized_path = os.path.join(tmp, "optimized.onnx")
        bound = _profiling_binding(runtime, data, shapes, where, os.path.join(tmp, "profile"), optimized_path)
        for _ in range(warmup - 1 + runs):  # the binding's first run was a warm-up run
            bound.run()
        trace_path = bound.session.end_profiling()
        traces, _ = parse_trace(trace_path, skip_runs=warmup)
        node_timing = _take_gpu_kernel_times(traces, trace_path, warmup) if runtime.provider == "cuda" else "host"
        saved = os.path.exists(optimized_path)
        optimized = OnnxNodeGraph.from_onnx(onnx.load(optimized_path, load_external_data=False).graph) if saved else None
    return traces, node_timing, optimized


def _profiling_binding(runtime: OnnxRuntime, data: bytes | str, shapes: Mapping[str, tuple[tuple[int, ...], Any]],
                       where: str, prefix: str, optimized_path: str) -> Binding:
    """A bound session that profiles every run and saves its optimised graph at `optimized_path` (or, for a
    graph ONNX Runtime cannot save, profiles only)."""
    ort, threads, opt_level, providers = runtime.ort, runtime.threads, runtime.opt_level, runtime.providers()
    try:
        session = create_session(ort, data, session_options(ort, threads, opt_level, prefix, optimized_path), where,
                                 providers)
    except ModelError as exc:  # e.g. a graph ONNX Runtime cannot serialise: profile without it
        log.warning("%s; mapping runtime nodes to source nodes by name only", exc)
        session = create_session(ort, data, session_options(ort, threads, opt_level, prefix), where, providers)
    return bind(ort, session, shapes, where, runtime.placement)


def _take_gpu_kernel_times(traces: dict[str, NodeTrace], trace_path: str, warmup: int) -> str:
    """Under CUDA, the nodes' GPU kernel times replace their host times where this build traces kernels;
    returns how node times were taken."""
    gpu_times = kernel_times(trace_path, skip_runs=warmup)
    if gpu_times:
        for name, per_run in gpu_times.items():
            if name in traces:
                traces[name].per_run_us = per_run
        return "gpu kernels (the build's CUDA kernel trace)"
    blocking = os.environ.get("CUDA_LAUNCH_BLOCKING") == "1"
    if not blocking:
        log.warning("per-node times under the CUDA provider are host-side launch times: this onnxruntime "
                    "build does not trace CUDA kernels; run with CUDA_LAUNCH_BLOCKING=1 for GPU times")
    return ("host, CUDA_LAUNCH_BLOCKING=1 (each node waits for its kernels)" if blocking else
            "host (kernel launches only: CUDA kernels run asynchronously; set "
            "CUDA_LAUNCH_BLOCKING=1 for per-node GPU times, docs/tutorials/profile-gpu.md)")


def _source_nodes_of(source: OnnxNodeGraph, optimized: OnnxNodeGraph | None,
                     traces: Mapping[str, NodeTrace]) -> dict[str, list[str]]:
    """Runtime node -> the source nodes it covers; by name alone where there is no optimised graph."""
    if optimized is None:
        return {name: [name] for name in traces if name in source.by_name}
    optimized = align_names(optimized, [(t.name, t.op_type) for t in traces.values()])
    return map_runtime_nodes(source, optimized)


def _node_rows(traces: Mapping[str, NodeTrace], mapping: Mapping[str, list[str]],
               source: OnnxNodeGraph) -> list[NodeTime]:
    """A `NodeTime` per traced node, slowest first, with its share and the cumulative share."""
    times = {n: _trimmed_mean(t.per_run_us) for n, t in traces.items()}
    total = sum(times.values()) or 1.0
    rows: list[NodeTime] = []
    cum = 0.0
    for name in sorted(traces, key=lambda n: -times[n]):
        t = traces[name]
        covered = tuple(mapping.get(name, ()))
        cum += times[name] / total
        rows.append(NodeTime(name=name, op_type=t.op_type, provider=t.provider, source_nodes=covered,
                             source_ops=tuple(source_ops(source, covered)), time_us=times[name],
                             median_us=float(np.median(t.per_run_us)) if t.per_run_us else 0.0,
                             share=times[name] / total, cum_share=min(cum, 1.0)))
    return rows


def _profile_runs(latency_ms: float, node_count: int) -> int:
    """Enough profiled runs for stable medians, bounded in time (~1 s) and in trace size."""
    by_time = int(1000.0 / max(latency_ms, 1e-3))
    by_size = max(10, 50_000 // max(node_count, 1))
    return int(min(max(by_time, 10), 200, by_size))


def _trimmed_mean(values: Sequence[float], cut: float = 0.1) -> float:
    """Mean of the values between the `cut` and 1 - `cut` quantiles."""
    if not values:
        return 0.0
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(x) * cut)
    return float(x[k: len(x) - k].mean()) if len(x) > 2 * k else float(x.mean())


def _load_model(path: Path) -> Any:
    """The `onnx.ModelProto` at `path`, or `ModelError` saying what is wrong with the file (as `hwlat predict`
    says it: a TFLite file named as one, a truncated graph), not onnx.checker's verdict: it refuses models
    ONNX Runtime runs (a graph output without a shape)."""
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an .onnx file")
    return load_onnx(str(path))


def _declared_inputs(onnx: Any, model: Any, source: OnnxNodeGraph) -> list[tuple[str, list, Any]]:
    """(name, dims, numpy dtype or a description) of each graph input that is no initializer, in the model's order."""
    order = {vi.name: i for i, vi in enumerate(model.graph.input)}
    value_types = {vi.name: vi.type for vi in model.graph.input}
    return [(name, _proto_dims(value_types[name]), _proto_type(onnx, value_types[name]))
            for name in sorted(source.inputs, key=lambda n: order.get(n, len(order)))]


def _proto_dims(type_proto: Any) -> list:
    if not type_proto.HasField("tensor_type"):
        return []
    dims = []
    for d in type_proto.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def _proto_type(onnx: Any, type_proto: Any) -> Any:
    if not type_proto.HasField("tensor_type"):
        return str(type_proto.WhichOneof("value"))
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)
    except Exception:
        return f"element type {type_proto.tensor_type.elem_type}"

