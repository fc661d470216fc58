"""Whole networks as `.tflite` models: a `Graph` (extracted from ONNX) lowered op by op with the
same TFLite lowerings as the single-op models (`profilers.tflite.builder`), so the kernels a
network runs are the kernels its device table measured.

BN and ReLU/ReLU6 fold into the op before them only when that op's output has no other reader
(what a converter does); SiLU is LOGISTIC then MUL. Float32 only (int8 networks need calibration
of every tensor: not built here).
"""

from __future__ import annotations

import numpy as np

from device_tables.errors import ModelError, UnsupportedOpError
from device_tables.graph import FREE, OP, UNCOVERED, Graph
from device_tables.ops import OpSpec
from profilers.weights import make_weights


def graph_to_tflite(graph: Graph, description: str = "hwlat network") -> bytes:
    """Serialized fp32 `.tflite` of a network graph; `UnsupportedOpError` naming an op it cannot lower."""
    from profilers.tflite import builder as tb

    bad = [op for op in graph.ops if op.kind == UNCOVERED]
    if bad:
        raise UnsupportedOpError(f"cannot lower to TFLite: {bad[0].describe()}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if len(graph.inputs) != 1:
        raise ModelError(f"networks with {len(graph.inputs)} inputs are not lowered to TFLite")
    g = tb.Graph()
    readers = graph.consumers()
    (in_name, in_shape), = graph.inputs.items()
    tensors: dict[str, int] = {in_name: g.add_tensor("input", tb._nhwc_shape(tuple(in_shape)))}
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
        y = _lower(tb, g, spec, x, xs[1:], fuse_ok=single(op.inputs[0]))
        tensors[op.outputs[0]] = y
    g.outputs = [tensors[o] for o in graph.outputs if o in tensors]
    return tb.serialize(g, description=description)


def _lower(tb, g, spec: OpSpec, x: int, others: list[int], fuse_ok: bool) -> int:
    base = spec.base
    wts = make_weights(spec)
    shape = g.tensors[x].shape
    if spec.is_fused:
        raise UnsupportedOpError(f"{spec.key}: expected unfused ops in an extracted graph")
    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        return tb._conv(g, spec, x, wts)
    if base == "linear":
        w = g.add_const("weights", wts["W"])
        b = g.add_const("bias", wts.get("b", np.zeros(wts["W"].shape[0], np.float32)))
        return g.add_op("FULLY_CONNECTED", [x, w, b], (shape[0], int(spec.a["cout"])))
    if base == "bn":
        if fuse_ok:
            return tb._bn(g, x, wts)
        scale, shift = tb._bn_affine(wts)
        y = g.add_op("MUL", [x, g.add_const("bn_scale", scale.astype(np.float32))], shape)
        return g.add_op("ADD", [y, g.add_const("bn_shift", shift.astype(np.float32))], shape)
    if base in ("relu", "relu6"):
        if fuse_ok:
            return tb._activation(g, x, base)
        return g.add_op(base.upper(), [x], shape)
    if base in ("hardswish", "sigmoid", "hardsigmoid"):
        return tb._activation(g, x, base)
    if base == "silu":
        s = g.add_op("LOGISTIC", [x], shape)
        return g.add_op("MUL", [x, s], shape)
    if base in ("avgpool", "maxpool"):
        return tb._pool(g, spec, x)
    if base == "globalavgpool":
        axes = g.add_const("axes", np.array([1, 2], np.int32))
        return g.add_op("MEAN", [x, axes], (shape[0], 1, 1, shape[3]), keep_dims=True)
    if base == "add":
        return g.add_op("ADD", [x, others[0]], shape)
    if base == "mul":
        return g.add_op("MUL", [x, others[0]], shape)
    if base == "scale":
        return tb._scale(g, x, wts)
    if base == "concat":
        return g.add_op("CONCATENATION", [x, *others], shape[:3] + (sum(g.tensors[t].shape[3] for t in [x, *others]),), axis=3)
    raise UnsupportedOpError(f"{spec.key}: no TFLite lowering for {base!r}")


def input_array(content_graph_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A deterministic NHWC float32 input."""
    return np.random.default_rng(seed).uniform(-1, 1, size=content_graph_shape).astype(np.float32)
