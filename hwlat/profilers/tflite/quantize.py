"""Full-integer int8 quantisation of a float `TFLiteGraph` (TFLite quantisation spec), and its
int8 kernels as the standalone reference's `QuantizedGraph`.

Symmetric int8 weights, per output channel for CONV_2D (quantized_dimension 0) and
DEPTHWISE_CONV_2D (quantized_dimension 3) and per tensor for FULLY_CONNECTED; int32 bias at
input_scale * weight_scale; asymmetric int8 activations whose ranges are calibrated by running the
float graph; ops that require it share their input's parameters (pools, PAD, CONCATENATION) and
LOGISTIC outputs scale 1/256, zero point -128. The model's inputs and outputs are int8 (no
QUANTIZE/DEQUANTIZE ops), so only the kernel is timed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.profilers.tflite import int8_reference as q8
from hwlat.profilers.tflite.float_reference import run_float
from hwlat.profilers.tflite.graph import Op, TFLiteGraph, op_geometry
from hwlat.profilers.tflite.int8_reference import QuantizedGraph, QuantizedOp, QuantParams

# Ops that only move values (a channel shuffle's, a channel split's, in a CNN network): quantised, not in the int8 reference.
MOVEMENT_OPS = ("RESHAPE", "TRANSPOSE", "SPLIT", "SLICE")
# Ops whose activation inputs and output share one set of quantisation parameters.
SAME_QUANT_OPS = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "PADV2", "CONCATENATION") + MOVEMENT_OPS
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# Every op the int8 quantisation and its reference cover (not attention's kernels, nor layer norm's).
INT8_OPS = WEIGHTED_OPS + tuple(op for op in SAME_QUANT_OPS if op not in MOVEMENT_OPS) + (
    "ADD", "MUL", "RELU", "RELU6", "LOGISTIC", "HARD_SWISH", "MEAN")
# What a whole int8 network may hold besides them.
INT8_NETWORK_OPS = INT8_OPS + MOVEMENT_OPS
# Values at or below this are the lowest-float padding a max pool's PADV2 adds: left out of the
# ranges (else one pad would stretch the scale of the tensors it shares parameters with to ~1e36).
PAD_SENTINEL = float(np.finfo(np.float32).min) / 2
# The weight axis quantised per channel (None: per tensor).
WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": None}


# ---- float graph -> int8 graph -----------------------------------------------------------------------
def _groups(g: TFLiteGraph) -> dict[int, int]:
    """Activation tensors that must share quantisation (union-find root per tensor)."""
    parent = {i: i for i in range(len(g.tensors))}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for op in g.ops:
        if op.kind in SAME_QUANT_OPS:
            acts = [i for i in op.inputs if g.tensors[i].data is None] + op.outputs
            for i in acts[1:]:
                parent[root(i)] = root(acts[0])
    return {i: root(i) for i in parent}


def _quantize_activations(g: TFLiteGraph, values: dict[int, np.ndarray]) -> None:
    """int8 parameters for every activation tensor from the range its group of shared tensors
    takes on the calibration values (a range that always holds 0)."""
    groups = _groups(g)
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for i, v in values.items():
        r = groups[i]
        v = v[v > PAD_SENTINEL]  # a max pool's padding (PADV2 with the lowest float) is not a value
        if v.size:
            lo[r] = min(lo.get(r, 0.0), float(v.min()))
            hi[r] = max(hi.get(r, 0.0), float(v.max()))
    for i in values:
        t = g.tensors[i]
        t.dtype, t.quant = "int8", q8.activation_params(lo.get(groups[i], 0.0), hi.get(groups[i], 0.0))
    for op in g.ops:
        if op.kind == "LOGISTIC":  # quantisation spec: fixed output range [0, 1)
            g.tensors[op.outputs[0]].quant = QuantParams.per_tensor(1.0 / 256.0, -128)


def _quantize_constants(g: TFLiteGraph, op: Op) -> None:
    """int8 weights and int32 bias of a weighted op, int8 constant operand of ADD/MUL, int8 PADV2 value."""
    k = op.kind
    xq = g.tensors[op.inputs[0]].quant
    if k in WEIGHTED_OPS:
        w, b = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        wq = q8.symmetric_params(w.data, WEIGHT_AXIS[k])
        w.data, w.dtype, w.quant = wq.quantize(w.data, -127, 127), "int8", wq
        b.data, b.quant = q8.quantize_bias(b.data, xq.s, wq)
        b.dtype = "int32"
    elif k in ("ADD", "MUL") and g.tensors[op.inputs[1]].data is not None:
        c = g.tensors[op.inputs[1]]
        cq = q8.activation_params(c.data.min(), c.data.max()) if k == "ADD" else q8.symmetric_params(c.data, None)
        c.data, c.dtype, c.quant = cq.quantize(c.data), "int8", cq
    elif k == "PADV2":
        c = g.tensors[op.inputs[2]]
        c.data, c.dtype, c.quant = np.array([q8.INT8_MIN], np.int8), "int8", xq


def check_int8(g: TFLiteGraph, what: str, ops: tuple[str, ...] = INT8_OPS) -> None:
    """`UnsupportedOpError` naming the first op of `g` hwlat cannot quantise to int8 (`what`: the spec or
    network; `ops`: those it can)."""
    bad = next((op.kind for op in g.ops if op.kind not in ops), None)
    if bad is not None:
        raise UnsupportedOpError(f"{what}: hwlat's int8 TFLite models (litert, tflm) cover CNN kernels only, not TFLite {bad} "
                                 f"(int8 transformer ops are not quantised); profile it at float32 (--precision fp32)")


def quantize_graph(g: TFLiteGraph, calibration: list[np.ndarray]) -> TFLiteGraph:
    """Full-integer int8 copy of a float graph, activation ranges calibrated on `calibration` (NHWC)."""
    values = run_float(g, calibration, all_tensors=True)
    out = g.copy()
    _quantize_activations(out, values)
    for op in out.ops:
        _quantize_constants(out, op)
    return out


# ---- int8 graph -> the reference's kernels ---------------------------------------------------------------
def quantized_op(g: TFLiteGraph, op: Op) -> QuantizedOp:
    """The int8 kernel of one op of a quantised graph, with everything needed to run it."""
    acts = tuple(g.tensors[i].quant for i in op.inputs if g.tensors[i].data is None)
    out = g.tensors[op.outputs[0]].quant
    kw: dict[str, Any] = {"activation": op.activation}
    if op.kind in WEIGHTED_OPS:
        w, b = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        kw.update(weights=w.data, weight_params=w.quant, bias=b.data)
        if op.kind == "DEPTHWISE_CONV_2D":
            kw["depth_multiplier"] = int(op.options.get("depth_multiplier", 1))
    elif op.kind in ("ADD", "MUL") and g.tensors[op.inputs[1]].data is not None:
        c = g.tensors[op.inputs[1]]
        kw.update(weights=c.data, weight_params=c.quant)
    elif op.kind == "PAD":
        kw["pad_value"] = g.tensors[op.inputs[0]].quant.zp
    elif op.kind == "PADV2":
        kw["pad_value"] = int(g.tensors[op.inputs[2]].data[0])
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        kw["kernel"] = int(op.options["filter"])
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "PADV2"):
        kw["geometry"] = op_geometry(g, op)
    return QuantizedOp(op.kind, acts, out, **kw)


def quantized_graph(g: TFLiteGraph) -> QuantizedGraph:
    """A quantised `TFLiteGraph` as the standalone int8 reference's `QuantizedGraph`."""
    steps = [(quantized_op(g, op), tuple(i for i in op.inputs if g.tensors[i].data is None), op.outputs[0]) for op in g.ops]
    params = {i: t.quant for i, t in enumerate(g.tensors) if t.data is None}
    shapes = {i: t.shape for i, t in enumerate(g.tensors) if t.data is None}
    return QuantizedGraph(steps, tuple(g.inputs), tuple(g.outputs), params, shapes)
