"""Whole-network latency on a runtime, from an ONNX model: the ground truth predictors are scored
and calibrated against. ONNX Runtime times the model itself; LiteRT times the network lowered to
`.tflite` by `profilers.litert.network` (the same lowerings as its single-op tables)."""

from __future__ import annotations

from typing import Any, Sequence

from device_tables.errors import UnsupportedOpError
from device_tables.measurement import Measurement
from profilers.base import Runtime
from profilers.protocol import Protocol, measure, perf_timer


WHOLE_MODEL_RUNTIMES = ("onnxruntime", "litert")


def time_model(runtime: Runtime, model: Any, protocol: Protocol = Protocol(),
               input_shape: Sequence[int] | None = None) -> Measurement:
    """Latency of one forward pass of an ONNX model (bytes, path or ModelProto) on `runtime`
    (with the protocol's clock: ``clock="cpu"`` times the calling thread's CPU time)."""
    runtime.check_protocol(protocol)
    if runtime.dtype() != "float32":
        raise UnsupportedOpError(f"whole-model timing is built for fp32 networks, not {runtime.precision}")
    if not isinstance(model, (bytes, bytearray, str)) and hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    if runtime.name == "onnxruntime":
        from profilers.ort.runtime import time_onnx_model

        opt_level = getattr(runtime, "opt_level", "all")
        return time_onnx_model(model, threads=runtime.threads, protocol=protocol, opt_level=opt_level, input_shape=input_shape)
    if runtime.name == "litert":
        return time_tflite(runtime, tflite_of(model, input_shape), protocol)
    raise UnsupportedOpError(f"whole-model timing is built for {' and '.join(WHOLE_MODEL_RUNTIMES)}, not {runtime.name}")


def tflite_of(model: Any, input_shape: Sequence[int] | None = None) -> bytes:
    """An ONNX model lowered to a fp32 `.tflite` network."""
    from device_tables.graph import Graph
    from profilers.litert.network import graph_to_tflite

    return graph_to_tflite(Graph.from_onnx(model, input_shape))


def time_tflite(runtime: Runtime, content: bytes, protocol: Protocol = Protocol()) -> Measurement:
    """Latency of `Interpreter.invoke()` on a `.tflite` network with deterministic inputs."""
    import numpy as np

    interp = runtime.interpreter(content)
    try:
        interp.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], rng.uniform(-1, 1, size=d["shape"]).astype(np.float32))
        interp.invoke()
    except (RuntimeError, ValueError) as exc:
        raise UnsupportedOpError(f"LiteRT cannot run the network: {str(exc).strip().splitlines()[0]}") from exc
    return measure(perf_timer(interp.invoke), protocol)
