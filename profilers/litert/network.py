"""Whole networks as `.tflite` models: a `Graph` (extracted from ONNX) lowered op by op with the
same TFLite lowerings as the single-op models (`profilers.tflite.lowering`), so the kernels a
network runs are the kernels its device table measured.

BN and ReLU/ReLU6 fold into the op before them only when that op's output has no other reader
(what a converter does); SiLU is LOGISTIC then MUL. An int8 network is the float one quantised as
the single-op models are (`profilers.tflite.quantize`), its activation ranges from one input.
"""

from __future__ import annotations

import numpy as np

from device_tables.errors import ModelError, UnsupportedOpError
from device_tables.graph import FREE, OP, UNCOVERED, Graph
from device_tables.ops import OpSpec
from profilers.weights import make_weights


def graph_to_tflite(graph: Graph, description: str = "hwlat network", int8: bool = False) -> bytes:
    """Serialized `.tflite` of a network graph, fp32 or full-integer int8 (activation ranges calibrated
    on one deterministic input by the float reference, as a converter does with a representative
    dataset); `UnsupportedOpError` naming an op it cannot lower."""
    from profilers.tflite.flatbuffer import serialize
    from profilers.tflite.quantize import quantize_graph

    g = network_graph(graph)
    if int8:
        g = quantize_graph(g, [input_array(g.tensors[g.inputs[0]].shape)])
    return serialize(g, description=description)


def network_graph(graph: Graph):
    """The float32 `TFLiteGraph` of a network graph (NHWC)."""
    from profilers.tflite import lowering
    from profilers.tflite.graph import TFLiteGraph, nhwc_shape

    bad = [op for op in graph.ops if op.kind == UNCOVERED]
    if bad:
        raise UnsupportedOpError(f"cannot lower to TFLite: {bad[0].describe()}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if len(graph.inputs) != 1:
        raise ModelError(f"networks with {len(graph.inputs)} inputs are not lowered to TFLite")
    g = TFLiteGraph()
    readers = graph.consumers()
    (in_name, in_shape), = graph.inputs.items()
    tensors: dict[str, int] = {in_name: g.add_tensor("input", nhwc_shape(tuple(in_shape)))}
    g.inputs = [tensors[in_name]]
    outputs = set(graph.outputs)

    def single(x_name: str) -> bool:
        return len(readers.get(x_name, [])) == 1 and x_name not in outputs

    for op in graph.ops:
        if op.kind == FREE:
            acts = [t for t in op.inputs if t in tensors]
            if acts and op.outputs:
                tensors[op.outputs[0]] = tensors[acts[0]]  # a view (Flatten, Reshape to NxF, Identity)
            continue
        spec = op.spec
        assert op.kind == OP and spec is not None
        xs = [tensors[t] for t in op.inputs]
        x = xs[0]
        y = _lower(lowering, g, spec, x, xs[1:], fuse_ok=single(op.inputs[0]))
        tensors[op.outputs[0]] = y
    g.outputs = [tensors[o] for o in graph.outputs if o in tensors]
    return g


def _lower(lowering, g, spec: OpSpec, x: int, others: list[int], fuse_ok: bool) -> int:
    """One network op lowered into `g` with `lowering`'s functions; BN and ReLU/ReLU6 fuse into the
    op before them only when `fuse_ok` (that op's output has no other reader)."""
    base = spec.base
    wts = make_weights(spec)
    shape = g.tensors[x].shape
    if spec.is_fused:
        raise UnsupportedOpError(f"{spec.key}: expected unfused ops in an extracted graph")
    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        return lowering.conv(g, spec, x, wts)
    if base == "linear":
        return lowering.linear(g, spec, x, wts)
    if base == "bn":
        return lowering.bn(g, x, wts, fold=fuse_ok)
    if base in ("relu", "relu6"):
        if fuse_ok:
            return lowering.activation(g, x, base)
        return g.add_op(base.upper(), [x], shape)
    if base in ("hardswish", "sigmoid", "hardsigmoid", "silu"):
        return lowering.activation(g, x, base)
    if base in ("avgpool", "maxpool"):
        return lowering.pool(g, spec, x)
    if base == "globalavgpool":
        return lowering.global_avgpool(g, x)
    if base == "add":
        return g.add_op("ADD", [x, others[0]], shape)
    if base == "mul":
        return g.add_op("MUL", [x, others[0]], shape)
    if base == "scale":
        return lowering.scale(g, x, wts)
    if base == "concat":
        return g.add_op("CONCATENATION", [x, *others], shape[:3] + (sum(g.tensors[t].shape[3] for t in [x, *others]),), axis=3)
    raise UnsupportedOpError(f"{spec.key}: no TFLite lowering for {base!r}")


def input_array(content_graph_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A deterministic NHWC float32 input."""
    return np.random.default_rng(seed).uniform(-1, 1, size=content_graph_shape).astype(np.float32)
