"""The in-memory TFLite model (`TFLiteGraph`: tensors and builtin operators of one subgraph) and
the NCHW <-> NHWC layout between hwlat specs and TFLite.

Layout: hwlat specs are NCHW; TFLite is NHWC. A spec input of shape (N, C, H, W) is the model
input (N, H, W, C) holding ``x.transpose(0, 2, 3, 1)``, outputs come back with
``y.transpose(0, 3, 1, 2)`` (`to_nhwc`, `to_nchw`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hwlat.profilers.tflite import int8_reference as q8
from hwlat.profilers.tflite.int8_reference import ConvGeometry, QuantParams


@dataclass
class Tensor:
    """One TFLite tensor: NHWC shape, element type, constant data (or None), quantisation."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: QuantParams | None = None


@dataclass
class Op:
    """One TFLite builtin operator: tensor ids in and out, options, fused activation."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    activation: str = "none"


@dataclass
class TFLiteGraph:
    """A single-subgraph TFLite model before serialisation."""

    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def add_tensor(self, name: str, shape: tuple[int, ...], data: np.ndarray | None = None, dtype: str = "float32") -> int:
        self.tensors.append(Tensor(name, tuple(int(s) for s in shape), dtype, data))
        return len(self.tensors) - 1

    def add_const(self, name: str, data: np.ndarray) -> int:
        dtype = "int32" if data.dtype.kind == "i" else "float32"
        return self.add_tensor(name, data.shape, data.astype(np.int32 if dtype == "int32" else np.float32), dtype)

    def add_op(self, kind: str, inputs: list[int], out_shape: tuple[int, ...], activation: str = "none", **options: Any) -> int:
        out = self.add_tensor(f"{len(self.ops)}_{kind.lower()}", out_shape)
        self.ops.append(Op(kind, list(inputs), [out], options, activation))
        return out

    def producer(self, tensor: int) -> Op | None:
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None

    def copy(self) -> TFLiteGraph:
        """A copy whose tensors, ops and their lists can change without touching this graph
        (constant arrays are shared until replaced)."""
        ops = [replace(op, inputs=list(op.inputs), outputs=list(op.outputs), options=dict(op.options)) for op in self.ops]
        return TFLiteGraph([replace(t) for t in self.tensors], ops, list(self.inputs), list(self.outputs))

    @property
    def op_names(self) -> str:
        """The TFLite operators in execution order, e.g. ``PAD+CONV_2D``."""
        return "+".join(op.kind for op in self.ops)

    @property
    def is_int8(self) -> bool:
        return any(t.dtype == "int8" for t in self.tensors)


def op_geometry(g: TFLiteGraph, op: Op) -> ConvGeometry:
    """Stride, dilation and explicit (top, bottom, left, right) padding of a windowed op or a pad."""
    _, h, w, _ = g.tensors[op.inputs[0]].shape
    if op.kind in ("PAD", "PADV2"):
        p = g.tensors[op.inputs[1]].data
        return ConvGeometry(pads=(int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1])))
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        kh = kw = int(op.options["filter"])
    else:
        wshape = g.tensors[op.inputs[1]].shape
        kh, kw = wshape[1], wshape[2]
    stride, dilation = int(op.options.get("stride", 1)), int(op.options.get("dilation", 1))
    pads = q8.same_padding(h, w, kh, kw, stride, dilation) if op.options.get("padding") == "SAME" else (0, 0, 0, 0)
    return ConvGeometry(stride, dilation, pads)


# ---- layout --------------------------------------------------------------------------------------
def to_nhwc(x: np.ndarray) -> np.ndarray:
    """A spec's NCHW array as the TFLite model's NHWC input (rank-2 arrays pass through)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(y: np.ndarray) -> np.ndarray:
    """A TFLite NHWC output back in the spec's NCHW layout."""
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y


def nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A spec's NCHW shape as the TFLite NHWC shape (rank-2 shapes pass through)."""
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)
