"""A float `TFLiteGraph` executed in float64 numpy, op by op: the float reference of a model and the
calibration run of its int8 quantisation (`quantize`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.profilers.tflite import int8_reference as q8
from hwlat.profilers.tflite.graph import Op, TFLiteGraph, op_geometry


def _conv(g: TFLiteGraph, op: Op, x: np.ndarray, consts: list[np.ndarray | None]) -> np.ndarray:
    """CONV_2D (grouped when the filter holds fewer channels than `x`) or DEPTHWISE_CONV_2D."""
    geom = op_geometry(g, op)
    W, b = consts[1].astype(np.float64), consts[2].astype(np.float64)
    kh, kw = W.shape[1], W.shape[2]
    oh, ow = geom.out_hw(x.shape[1], x.shape[2], kh, kw)
    xp = np.pad(x, ((0, 0), geom.pads[:2], geom.pads[2:], (0, 0)))
    win = q8.windows(xp, kh, kw, geom.stride, geom.dilation, oh, ow)
    if op.kind == "CONV_2D":
        groups = x.shape[3] // W.shape[3]
        win = win.reshape(win.shape[:5] + (groups, W.shape[3]))
        Wg = W.reshape((groups, W.shape[0] // groups) + W.shape[1:])
        return np.einsum("nhwijgc,goijc->nhwgo", win, Wg, optimize=True).reshape(win.shape[:3] + (W.shape[0],)) + b
    m = int(op.options.get("depth_multiplier", 1))
    win = np.repeat(win, m, axis=-1) if m > 1 else win
    return np.einsum("nhwijc,ijc->nhwc", win, W[0]) + b


def _pool(g: TFLiteGraph, op: Op, x: np.ndarray) -> np.ndarray:
    """MAX_POOL_2D (padding never wins) or AVERAGE_POOL_2D (padded taps not counted)."""
    geom, kk = op_geometry(g, op), int(op.options["filter"])
    oh, ow = geom.out_hw(x.shape[1], x.shape[2], kk, kk)
    pads = ((0, 0), geom.pads[:2], geom.pads[2:], (0, 0))
    if op.kind == "MAX_POOL_2D":
        win = q8.windows(np.pad(x, pads, constant_values=-np.inf), kk, kk, geom.stride, 1, oh, ow)
        return win.max(axis=(3, 4))
    s = q8.windows(np.pad(x, pads), kk, kk, geom.stride, 1, oh, ow).sum(axis=(3, 4))
    ones = np.pad(np.ones((1,) + x.shape[1:3] + (1,)), pads)
    return s / q8.windows(ones, kk, kk, geom.stride, 1, oh, ow).sum(axis=(3, 4))


def _elementwise(op: Op, xs: list[np.ndarray], consts: list[np.ndarray | None]) -> np.ndarray:
    """The ops that act on each element (or, for MEAN and CONCATENATION, reshape without weights)."""
    k, x = op.kind, xs[0]
    if k in ("ADD", "MUL"):
        other = xs[1] if consts[1] is None else consts[1].astype(np.float64)
        return x + other if k == "ADD" else x * other
    if k == "RELU":
        return np.maximum(x, 0)
    if k == "RELU6":
        return np.clip(x, 0, 6)
    if k == "LOGISTIC":
        return 1.0 / (1.0 + np.exp(-x))
    if k == "HARD_SWISH":
        return x * np.clip(x + 3, 0, 6) / 6
    if k == "CONCATENATION":
        return np.concatenate(xs, axis=int(op.options["axis"]))
    if k == "GELU" and op.options.get("approximate"):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if k == "GELU":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if k == "RSQRT":
        return 1 / np.sqrt(x)
    raise UnsupportedOpError(f"no float reference for TFLite op {k}")


def _tensor_op(op: Op, xs: list[np.ndarray], consts: list[np.ndarray | None]) -> np.ndarray | None:
    """The ops that reduce, multiply or move whole tensors (transformer kernels); None for others."""
    k, x = op.kind, xs[0]
    if k == "MEAN":
        return x.mean(axis=tuple(int(a) for a in consts[1]), keepdims=True)
    if k == "SUB":
        return x - (xs[1] if consts[1] is None else consts[1])
    if k == "BATCH_MATMUL":
        return x @ xs[1]
    if k == "SOFTMAX":
        e = np.exp(float(op.options.get("beta", 1.0)) * (x - x.max(axis=-1, keepdims=True)))
        return e / e.sum(axis=-1, keepdims=True)
    if k == "TRANSPOSE":
        return x.transpose([int(i) for i in consts[1]])
    if k == "RESHAPE":
        return x.reshape([int(i) for i in consts[1]])
    if k == "SLICE":
        return x[tuple(slice(int(b), int(b) + int(n)) for b, n in zip(consts[1], consts[2]))]
    if k == "GATHER":
        return consts[0].astype(np.float64)[xs[1].astype(np.int64)]
    if k == "SPLIT":
        return np.split(xs[1], int(op.options["num_splits"]), axis=int(consts[0]))
    return None


def _float_op(g: TFLiteGraph, op: Op, xs: list[np.ndarray]) -> Any:
    """Float64 reference of one TFLite op, its fused activation included (a list for SPLIT's outputs)."""
    k = op.kind
    consts = [g.tensors[i].data for i in op.inputs]
    xs = [c.astype(np.float64) if x is None and c is not None else x for x, c in zip(xs, consts)]
    x = xs[0]
    if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        y = _conv(g, op, x, consts)
    elif k == "FULLY_CONNECTED":
        y = x.reshape(-1, consts[1].shape[1]) @ consts[1].astype(np.float64).T + consts[2]
    elif k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        y = _pool(g, op, x)
    elif k in ("PAD", "PADV2"):
        value = float(consts[2][0]) if k == "PADV2" else 0.0
        y = np.pad(x, g.tensors[op.inputs[1]].data.tolist(), constant_values=value)
    else:
        y = _tensor_op(op, xs, consts)
        y = _elementwise(op, xs, consts) if y is None else y
    if op.activation == "relu":
        y = np.maximum(y, 0)
    elif op.activation == "relu6":
        y = np.clip(y, 0, 6)
    return y


def run_float(g: TFLiteGraph, inputs: list[np.ndarray], all_tensors: bool = False) -> Any:
    """Execute a float graph in float64 numpy on NHWC inputs; the outputs (or every tensor's value)."""
    values: dict[int, np.ndarray] = {i: np.asarray(x, np.float64) for i, x in zip(g.inputs, inputs)}
    for op in g.ops:
        xs = [values.get(i) for i in op.inputs]
        ys = _float_op(g, op, xs)
        values.update(zip(op.outputs, ys if isinstance(ys, list) else [ys]))
    return values if all_tensors else [values[i] for i in g.outputs]
