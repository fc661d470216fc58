"""Single-op `.tflite` models written directly as TFLite FlatBuffers (no TensorFlow, no converter):
the entry points the LiteRT, TFLM and board runtimes call.

An `OpSpec` becomes a float32 `TFLiteGraph` of TFLite builtin operators (`lowering`: the kernels a
converted network really runs), which is run by numpy references (`float_reference`), quantised to
full-integer int8 when the spec is int8 (`quantize`), and serialised with the `flatbuffers` package
(`flatbuffer`). Specs are NCHW, the models NHWC (`graph.to_nhwc`, `graph.to_nchw`), except the
rank-4 ops of attention (`PLAIN_OPS`), whose tensors keep their own axis order, and a gather, whose
input is int32 token ids.

The names other modules import from here (the graph, layout, serialisation and quantisation ones
too) stay importable from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.tflite import int8_reference as q8
from hwlat.profilers.tflite.flatbuffer import BUILTIN_CODES, serialize
from hwlat.profilers.tflite.float_reference import run_float
from hwlat.profilers.tflite.graph import Op, Tensor, TFLiteGraph, nhwc_shape, to_nchw, to_nhwc
from hwlat.profilers.tflite.int8_reference import QuantizedGraph
from hwlat.profilers.tflite.lowering import lower_base, lower_tail
from hwlat.profilers.tflite.quantize import check_int8, quantize_graph, quantized_graph, quantized_op
from hwlat.profilers.weights import make_inputs, make_weights

log = logging.getLogger(__name__)

__all__ = [  # the entry points, and the names other modules import from here
    "BUILTIN_CODES", "Op", "TFLiteGraph", "TFLiteModel", "Tensor", "build_graph", "build_model", "export_quantized",
    "quantize_graph", "quantized_graph", "quantized_op", "run_float", "serialize", "to_nchw", "to_nhwc",
]

# Rank-4 ops whose tensors are not NCHW feature maps (attention's (B, H, T, D)): no NHWC layout.
PLAIN_OPS = ("matmul", "transpose", "copy")


def model_inputs(spec: OpSpec, seed: int = 0) -> list[np.ndarray]:
    """`make_inputs(spec, seed)` as the model takes them: NHWC (`PLAIN_OPS` as they are), ids int32."""
    xs = make_inputs(spec, seed)
    if spec.base in PLAIN_OPS:
        return xs
    return [x.astype(np.int32) if x.dtype.kind == "i" else to_nhwc(x) for x in xs]


def build_graph(spec: OpSpec, seed: int = 0) -> TFLiteGraph:
    """The float32 TFLite graph computing `spec` (NHWC but for `PLAIN_OPS`), weights from `make_weights(spec, seed)`."""
    wts = make_weights(spec, seed)
    g = TFLiteGraph()
    if spec.base == "gather":
        ins = [g.add_tensor("ids", spec.input_shape[:1], dtype="int32")]
    else:
        shape_of = tuple if spec.base in PLAIN_OPS else nhwc_shape
        ins = [g.add_tensor(f"input{i}", shape_of(s)) for i, s in enumerate(spec.input_shapes)]
    g.inputs = list(ins)
    x, extra = ins[0], ins[1:]
    y = lower_base(g, spec, x, extra, wts)
    g.outputs = [lower_tail(g, spec, y, extra, wts)]
    if extra:
        raise AssertionError(f"{spec.key}: inputs {extra} left unused")  # a bug, not a user error
    return g


@dataclass
class TFLiteModel:
    """A built single-op model: FlatBuffer bytes, its graph, and the inputs to feed (`model_inputs`, model dtype)."""

    spec: OpSpec
    content: bytes
    graph: TFLiteGraph
    inputs: list[np.ndarray]
    float_inputs: list[np.ndarray]

    @property
    def op_names(self) -> str:
        return self.graph.op_names

    def reference(self, kernels: q8.Kernels = "reference") -> list[np.ndarray]:
        """Expected outputs (NHWC, model dtype): float64 numpy for fp32; for int8 the int8 reference
        rounding like TFLite's `kernels` family (reference, optimized or xnnpack)."""
        if self.graph.is_int8:
            return quantized_graph(self.graph).run(*self.inputs, kernels=kernels)
        return [y.astype(np.float32) for y in run_float(self.graph, self.float_inputs)]


def build_model(spec: OpSpec, seed: int = 0) -> TFLiteModel:
    """Build the .tflite model of `spec` (fp32, or full-integer int8 when ``spec.dtype == 'int8'``)."""
    graph = build_graph(spec, seed)
    float_inputs = model_inputs(spec, seed)
    inputs = float_inputs
    if spec.dtype == "int8":
        check_int8(graph, spec.key)
        graph = quantize_graph(graph, float_inputs)
        inputs = [graph.tensors[i].quant.quantize(x) for i, x in zip(graph.inputs, float_inputs)]
    content = serialize(graph, description=f"hwlat {spec.key}")
    log.debug("%s -> %s (%d bytes)", spec.key, graph.op_names, len(content))
    return TFLiteModel(spec, content, graph, inputs, float_inputs)


def export_quantized(spec: OpSpec, seed: int = 0) -> QuantizedGraph:
    """The int8 kernels of `spec` exactly as the .tflite model holds them (for firmware and references)."""
    if spec.dtype != "int8":
        spec = spec.replace(dtype="int8")
    return quantized_graph(build_model(spec, seed).graph)
