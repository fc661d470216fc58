"""Single-op `.tflite` models written directly as TFLite FlatBuffers (no TensorFlow, no converter).

An `OpSpec` becomes a small graph of TFLite builtin operators (the kernels a converted network
really runs: batch norm folded into the conv/linear before it, else MUL+ADD; ReLU/ReLU6 fused into
conv/linear/add/mul; PyTorch padding that TFLite's SAME/VALID cannot express as an explicit PAD
(PADV2 with the lowest value for max pooling) before the op; grouped conv as CONV_2D with
cin/groups filter channels, groups = cin as DEPTHWISE_CONV_2D; hardsigmoid as ADD(+3, fused RELU6)
then MUL(1/6); SiLU as LOGISTIC then MUL; global average pooling as MEAN over H, W), held as an
in-memory `Graph` that is serialised with the `flatbuffers` package, run by numpy references, and
quantised to full-integer int8. The one configuration without an equivalent (average pooling with
count_include_pad=false whose padding TFLite's SAME cannot reproduce) raises `UnsupportedOpError`.

Layout: hwlat specs are NCHW; TFLite is NHWC. A spec input of shape (N, C, H, W) is the model
input (N, H, W, C) holding ``x.transpose(0, 2, 3, 1)``, outputs come back with
``y.transpose(0, 3, 1, 2)`` (`to_nhwc`, `to_nchw`). Weights come from `profilers.weights.make_weights`
(OIHW) and are stored OHWI for CONV_2D, 1HWC for DEPTHWISE_CONV_2D, (out, in) for FULLY_CONNECTED.

int8 (full-integer quantisation, TFLite quantisation spec): symmetric int8 weights, per output
channel for CONV_2D (quantized_dimension 0) and DEPTHWISE_CONV_2D (quantized_dimension 3) and per
tensor for FULLY_CONNECTED; int32 bias at input_scale * weight_scale; asymmetric int8 activations
whose ranges are calibrated by running the float graph on `make_inputs`; ops that require it share
their input's parameters (pools, PAD, CONCATENATION) and LOGISTIC outputs scale 1/256, zero point
-128. The model's inputs and outputs are int8 (no QUANTIZE/DEQUANTIZE ops), so only the kernel is
timed.

FlatBuffer field ids (vtable slot = field index, in declaration order) and enum values are from
TFLite's schema, tensorflow/lite/schema/schema.fbs (github.com/tensorflow/tensorflow; the same file
ships with LiteRT): Model{version 0, operator_codes 1, subgraphs 2, description 3, buffers 4},
SubGraph{tensors 0, inputs 1, outputs 2, operators 3, name 4}, Tensor{shape 0, type 1, buffer 2,
name 3, quantization 4}, QuantizationParameters{min 0, max 1, scale 2, zero_point 3, details_type 4,
details 5, quantized_dimension 6}, Operator{opcode_index 0, inputs 1, outputs 2,
builtin_options_type 3, builtin_options 4}, OperatorCode{deprecated_builtin_code 0 (byte),
custom_code 1, version 2, builtin_code 3 (int)}, Buffer{data 0}; file identifier "TFL3".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from device_tables.errors import UnsupportedOpError
from device_tables.ops import OpSpec
from profilers.tflite import int8_reference as q8
from profilers.tflite.int8_reference import ConvGeometry, QuantizedGraph, QuantizedOp, QuantParams
from profilers.weights import BN_EPS, make_inputs, make_weights

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

# enum BuiltinOperator (schema.fbs).
BUILTIN_CODES = {
    "ADD": 0, "AVERAGE_POOL_2D": 1, "CONCATENATION": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4,
    "FULLY_CONNECTED": 9, "LOGISTIC": 14, "MAX_POOL_2D": 17, "MUL": 18, "RELU": 19, "RELU6": 21,
    "PAD": 34, "MEAN": 40, "PADV2": 60, "HARD_SWISH": 117,
}
# OperatorCode.deprecated_builtin_code is a byte: codes above 126 store 127
# (PLACEHOLDER_FOR_GREATER_OP_CODES) there and the real code in builtin_code.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# enum TensorType.
TENSOR_TYPES = {"float32": 0, "int32": 2, "int8": 9}
# enum ActivationFunctionType.
ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 3}
# enum Padding.
PADDINGS = {"SAME": 0, "VALID": 1}
# union BuiltinOptions: the type index of each options table, and the table written per op.
OPTIONS_TYPE = {
    "Conv2DOptions": 1, "DepthwiseConv2DOptions": 2, "Pool2DOptions": 5, "FullyConnectedOptions": 8,
    "ConcatenationOptions": 10, "AddOptions": 11, "MulOptions": 21, "PadOptions": 22, "ReducerOptions": 27,
    "PadV2Options": 43, "HardSwishOptions": 91,
}
OP_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions", "FULLY_CONNECTED": "FullyConnectedOptions", "CONCATENATION": "ConcatenationOptions",
    "ADD": "AddOptions", "MUL": "MulOptions", "PAD": "PadOptions", "PADV2": "PadV2Options", "MEAN": "ReducerOptions",
    "HARD_SWISH": "HardSwishOptions",
}
# Operator versions the converter writes for int8 kernels (lite/tools/versioning/op_version.cc);
# LiteRT's builtin resolver maps every version to the same kernel, so these only document intent.
INT8_OP_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "HARD_SWISH": 1}
FUSABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL")
SAME_QUANT_OPS = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "PADV2", "CONCATENATION")


# ---- the in-memory graph -------------------------------------------------------------------------
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
class Graph:
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

    @property
    def op_names(self) -> str:
        """The TFLite operators in execution order, e.g. ``PAD+CONV_2D``."""
        return "+".join(op.kind for op in self.ops)

    @property
    def is_int8(self) -> bool:
        return any(t.dtype == "int8" for t in self.tensors)


# ---- layout --------------------------------------------------------------------------------------
def to_nhwc(x: np.ndarray) -> np.ndarray:
    """A spec's NCHW array as the TFLite model's NHWC input (rank-2 arrays pass through)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(y: np.ndarray) -> np.ndarray:
    """A TFLite NHWC output back in the spec's NCHW layout."""
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y


def _nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


# ---- spec -> float graph -------------------------------------------------------------------------
def _window(h: int, w: int, k: int, stride: int, dilation: int, p: int) -> tuple[str, tuple[int, int, int, int] | None]:
    """TFLite padding for a PyTorch window with symmetric padding `p`: SAME or VALID when the
    windows are identical, else VALID after an explicit pad of (p, p, p, p).

    TFLite SAME puts the odd pixel of padding after (e.g. stride 2, kernel 3 on an even size pads
    0 before, 1 after) where PyTorch pads p before and after, so those convs need an explicit PAD
    (what a PyTorch->TFLite conversion emits too)."""
    out_h = (h + 2 * p - dilation * (k - 1) - 1) // stride + 1
    out_w = (w + 2 * p - dilation * (k - 1) - 1) // stride + 1
    if p == 0:
        return "VALID", None
    t, _, l, _ = q8.same_padding(h, w, k, k, stride, dilation)
    same_out = (-(-h // stride), -(-w // stride))
    if same_out == (out_h, out_w) and (t, l) == (p, p):
        return "SAME", None
    return "VALID", (p, p, p, p)


def _explicit_pad(g: Graph, x: int, pads: tuple[int, int, int, int], lowest: bool = False) -> int:
    n, h, w, c = g.tensors[x].shape
    t, b, l, r = pads
    paddings = g.add_const("paddings", np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32))
    shape = (n, h + t + b, w + l + r, c)
    if lowest:  # max pooling ignores padded taps: pad with the lowest value (PADV2)
        value = g.add_const("pad_value", np.array([np.finfo(np.float32).min], np.float32))
        return g.add_op("PADV2", [x, paddings, value], shape)
    return g.add_op("PAD", [x, paddings], shape)


def _bn_affine(wts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm (inference) as y = x * scale + shift per channel."""
    scale = wts["bn_gamma"].astype(np.float64) / np.sqrt(wts["bn_var"].astype(np.float64) + BN_EPS)
    shift = wts["bn_beta"].astype(np.float64) - wts["bn_mean"].astype(np.float64) * scale
    return scale, shift


def _conv(g: Graph, spec: OpSpec, x: int, wts: dict[str, np.ndarray]) -> int:
    a, base = spec.a, spec.base
    n, h, w, cin = g.tensors[x].shape
    cout = spec.output_shape[1]
    W = wts["W"]
    b = wts.get("b", np.zeros(W.shape[0], np.float32))  # converters always give a conv its bias
    k = 1 if base == "pwconv2d" else int(a["kernel"])
    stride, dilation = int(a["stride"]), int(a.get("dilation", 1))
    p = 0 if base == "pwconv2d" else int(a["padding"])
    groups = cin if base == "dwconv2d" else int(a.get("groups", 1))
    # groups = cin is DEPTHWISE_CONV_2D (depth multiplier cout / cin); other groups stay CONV_2D,
    # whose filter then holds cin / groups input channels (TFLite infers the groups from that).
    depthwise = base == "dwconv2d" or (groups > 1 and groups == cin)
    padding, pads = _window(h, w, k, stride, dilation, p)
    if pads is not None:
        x = _explicit_pad(g, x, pads)
    oh, ow = spec.output_shape[2], spec.output_shape[3]
    if depthwise:
        weights = g.add_const("weights", np.ascontiguousarray(W.transpose(1, 2, 3, 0)))  # (C*m,1,k,k) -> (1,k,k,C*m)
        bias = g.add_const("bias", b.astype(np.float32))
        return g.add_op("DEPTHWISE_CONV_2D", [x, weights, bias], (n, oh, ow, cout), padding=padding, stride=stride,
                        dilation=dilation, depth_multiplier=cout // cin)
    weights = g.add_const("weights", np.ascontiguousarray(W.transpose(0, 2, 3, 1)))  # OIHW -> OHWI
    bias = g.add_const("bias", b.astype(np.float32))
    return g.add_op("CONV_2D", [x, weights, bias], (n, oh, ow, cout), padding=padding, stride=stride, dilation=dilation)


def _pool(g: Graph, spec: OpSpec, x: int) -> int:
    a, base = spec.a, spec.base
    n, h, w, c = g.tensors[x].shape
    k, stride, p = int(a["kernel"]), int(a["stride"]), int(a["padding"])
    kind = "AVERAGE_POOL_2D" if base == "avgpool" else "MAX_POOL_2D"
    padding, pads = _window(h, w, k, stride, 1, p)
    if base == "avgpool" and p > 0 and bool(a.get("count_include_pad", False)):
        padding, pads = "VALID", (p, p, p, p)  # TFLite never counts padding: pad with real zeros first
    elif base == "avgpool" and pads is not None:
        raise UnsupportedOpError(
            f"{spec.key}: TFLite AVERAGE_POOL_2D pads SAME asymmetrically (odd pixel after) and never counts padded "
            f"taps, so padding={p} with stride={stride} on {h}x{w} and count_include_pad=false has no TFLite equivalent; "
            f"use count_include_pad=true, padding=0, or a size where SAME matches")
    if pads is not None:
        x = _explicit_pad(g, x, pads, lowest=base == "maxpool")
    oh, ow = spec.output_shape[2], spec.output_shape[3]
    return g.add_op(kind, [x], (n, oh, ow, c), padding=padding, stride=stride, filter=k)


def _activation(g: Graph, x: int, act: str) -> int:
    """ReLU/ReLU6 fused into the op that produced `x` when it can take it, else a standalone op."""
    prod = g.producer(x)
    if act in ("relu", "relu6") and prod is not None and prod.kind in FUSABLE and prod.activation == "none":
        prod.activation = act
        return x
    shape = g.tensors[x].shape
    if act == "relu":
        return g.add_op("RELU", [x], shape)
    if act == "relu6":
        return g.add_op("RELU6", [x], shape)
    if act == "hardswish":
        return g.add_op("HARD_SWISH", [x], shape)
    if act == "sigmoid":
        return g.add_op("LOGISTIC", [x], shape)
    if act == "silu":  # no builtin: x * sigmoid(x) as LOGISTIC then MUL, as converters emit it
        sig = g.add_op("LOGISTIC", [x], shape)
        return g.add_op("MUL", [x, sig], shape)
    if act == "hardsigmoid":  # no builtin: relu6(x + 3) / 6 as ADD (fused RELU6) then MUL
        three = g.add_const("three", np.array([3.0], np.float32))
        y = g.add_op("ADD", [x, three], shape, activation="relu6")
        sixth = g.add_const("one_sixth", np.array([1.0 / 6.0], np.float32))
        return g.add_op("MUL", [y, sixth], shape)
    raise UnsupportedOpError(f"no TFLite lowering for activation {act!r}")


def _bn(g: Graph, x: int, wts: dict[str, np.ndarray]) -> int:
    """Batch norm folded into the conv/linear that produced `x` (what TFLite runs), else MUL+ADD."""
    scale, shift = _bn_affine(wts)
    prod = g.producer(x)
    if prod is not None and prod.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and prod.activation == "none":
        wt, bt = g.tensors[prod.inputs[1]], g.tensors[prod.inputs[2]]
        axis = 3 if prod.kind == "DEPTHWISE_CONV_2D" else 0
        shape = [1] * wt.data.ndim
        shape[axis] = scale.size
        wt.data = (wt.data.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
        bt.data = (bt.data.astype(np.float64) * scale + shift).astype(np.float32)
        return x
    shape = g.tensors[x].shape
    s = g.add_const("bn_scale", scale.astype(np.float32))
    y = g.add_op("MUL", [x, s], shape)
    t = g.add_const("bn_shift", shift.astype(np.float32))
    return g.add_op("ADD", [y, t], shape)


def _scale(g: Graph, x: int, wts: dict[str, np.ndarray]) -> int:
    """x times a per-channel constant: MUL with a (1, 1, 1, C) constant."""
    c = wts["scale"].size
    s = g.add_const("scale", wts["scale"].reshape(1, 1, 1, c))
    return g.add_op("MUL", [x, s], g.tensors[x].shape)


def build_graph(spec: OpSpec, seed: int = 0) -> Graph:
    """The float32 TFLite graph computing `spec` (NHWC), weights from `make_weights(spec, seed)`."""
    wts = make_weights(spec, seed)
    g = Graph()
    ins = [g.add_tensor(f"input{i}", _nhwc_shape(s)) for i, s in enumerate(spec.input_shapes)]
    g.inputs = list(ins)
    x, extra = ins[0], ins[1:]
    base = spec.base
    shape = g.tensors[x].shape
    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        y = _conv(g, spec, x, wts)
    elif base == "linear":
        w = g.add_const("weights", wts["W"])
        b = g.add_const("bias", wts.get("b", np.zeros(wts["W"].shape[0], np.float32)))
        y = g.add_op("FULLY_CONNECTED", [x, w, b], (shape[0], int(spec.a["cout"])))
    elif base == "bn":
        y = _bn(g, x, wts)
    elif base in ("relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "silu"):
        y = _activation(g, x, base)
    elif base in ("avgpool", "maxpool"):
        y = _pool(g, spec, x)
    elif base == "globalavgpool":
        axes = g.add_const("axes", np.array([1, 2], np.int32))
        y = g.add_op("MEAN", [x, axes], (shape[0], 1, 1, shape[3]), keep_dims=True)
    elif base == "scale":
        y = _scale(g, x, wts)
    elif base in ("add", "mul"):
        other = extra.pop(0)
        y = g.add_op(base.upper(), [x, other], shape)
    elif base == "concat":
        parts = int(spec.a["parts"])
        others = [extra.pop(0) for _ in range(parts - 1)]
        y = g.add_op("CONCATENATION", [x, *others], (shape[0], shape[1], shape[2], shape[3] * parts), axis=3)
    else:
        raise UnsupportedOpError(f"{spec.key}: litert has no lowering for op {base!r}")
    for tail in spec.parts[1:]:
        if tail == "bn":
            y = _bn(g, y, wts)
        elif tail == "add":
            y = g.add_op("ADD", [y, extra.pop(0)], g.tensors[y].shape)
        else:
            y = _activation(g, y, tail)
    g.outputs = [y]
    if extra:
        raise AssertionError(f"{spec.key}: inputs {extra} left unused")  # a bug, not a user error
    return g


# ---- numpy execution of the graph ----------------------------------------------------------------
def _geometry(g: Graph, op: Op) -> ConvGeometry:
    n, h, w, _ = g.tensors[op.inputs[0]].shape
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


def _float_op(g: Graph, op: Op, xs: list[np.ndarray]) -> np.ndarray:
    """Float64 reference of one TFLite op (used for calibration and as the graph's float reference)."""
    k = op.kind
    consts = [g.tensors[i].data for i in op.inputs]
    x = xs[0]
    if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        geom = _geometry(g, op)
        W, b = consts[1].astype(np.float64), consts[2].astype(np.float64)
        kh, kw = W.shape[1], W.shape[2]
        oh, ow = geom.out_hw(x.shape[1], x.shape[2], kh, kw)
        xp = np.pad(x, ((0, 0), geom.pads[:2], geom.pads[2:], (0, 0)))
        win = q8.windows(xp, kh, kw, geom.stride, geom.dilation, oh, ow)
        if k == "CONV_2D":
            groups = x.shape[3] // W.shape[3]
            win = win.reshape(win.shape[:5] + (groups, W.shape[3]))
            Wg = W.reshape((groups, W.shape[0] // groups) + W.shape[1:])
            y = np.einsum("nhwijgc,goijc->nhwgo", win, Wg, optimize=True).reshape(win.shape[:3] + (W.shape[0],)) + b
        else:
            m = int(op.options.get("depth_multiplier", 1))
            win = np.repeat(win, m, axis=-1) if m > 1 else win
            y = np.einsum("nhwijc,ijc->nhwc", win, W[0]) + b
    elif k == "FULLY_CONNECTED":
        y = x @ consts[1].astype(np.float64).T + consts[2]
    elif k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        geom, kk = _geometry(g, op), int(op.options["filter"])
        oh, ow = geom.out_hw(x.shape[1], x.shape[2], kk, kk)
        pads = ((0, 0), geom.pads[:2], geom.pads[2:], (0, 0))
        if k == "MAX_POOL_2D":
            win = q8.windows(np.pad(x, pads, constant_values=-np.inf), kk, kk, geom.stride, 1, oh, ow)
            y = win.max(axis=(3, 4))
        else:
            s = q8.windows(np.pad(x, pads), kk, kk, geom.stride, 1, oh, ow).sum(axis=(3, 4))
            ones = np.pad(np.ones((1,) + x.shape[1:3] + (1,)), pads)
            y = s / q8.windows(ones, kk, kk, geom.stride, 1, oh, ow).sum(axis=(3, 4))
    elif k in ("PAD", "PADV2"):
        value = float(consts[2][0]) if k == "PADV2" else 0.0
        y = np.pad(x, g.tensors[op.inputs[1]].data.tolist(), constant_values=value)
    elif k in ("ADD", "MUL"):
        other = xs[1] if consts[1] is None else consts[1].astype(np.float64)
        y = x + other if k == "ADD" else x * other
    elif k == "RELU":
        y = np.maximum(x, 0)
    elif k == "RELU6":
        y = np.clip(x, 0, 6)
    elif k == "LOGISTIC":
        y = 1.0 / (1.0 + np.exp(-x))
    elif k == "HARD_SWISH":
        y = x * np.clip(x + 3, 0, 6) / 6
    elif k == "MEAN":
        y = x.mean(axis=(1, 2), keepdims=True)
    elif k == "CONCATENATION":
        y = np.concatenate(xs, axis=int(op.options["axis"]))
    else:
        raise UnsupportedOpError(f"no float reference for TFLite op {k}")
    if op.activation == "relu":
        y = np.maximum(y, 0)
    elif op.activation == "relu6":
        y = np.clip(y, 0, 6)
    return y


def run_float(g: Graph, inputs: list[np.ndarray], all_tensors: bool = False) -> Any:
    """Execute a float graph in float64 numpy on NHWC inputs; the outputs (or every tensor's value)."""
    values: dict[int, np.ndarray] = {i: np.asarray(x, np.float64) for i, x in zip(g.inputs, inputs)}
    for op in g.ops:
        xs = [values.get(i) for i in op.inputs]
        values[op.outputs[0]] = _float_op(g, op, xs)
    return values if all_tensors else [values[i] for i in g.outputs]


# ---- int8 quantisation -----------------------------------------------------------------------------
def _groups(g: Graph) -> dict[int, int]:
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


def quantize_graph(g: Graph, calibration: list[np.ndarray]) -> Graph:
    """Full-integer int8 copy of a float graph, activation ranges calibrated on `calibration` (NHWC)."""
    values = run_float(g, calibration, all_tensors=True)
    out = Graph([replace(t) for t in g.tensors], [replace(op, inputs=list(op.inputs), outputs=list(op.outputs),
                                                          options=dict(op.options)) for op in g.ops],
                list(g.inputs), list(g.outputs))
    groups = _groups(g)
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for i, v in values.items():
        r = groups[i]
        lo[r] = min(lo.get(r, 0.0), float(v.min()))
        hi[r] = max(hi.get(r, 0.0), float(v.max()))
    for i in values:
        t = out.tensors[i]
        t.dtype, t.quant = "int8", q8.activation_params(lo[groups[i]], hi[groups[i]])
    for op in out.ops:
        if op.kind == "LOGISTIC":  # quantisation spec: fixed output range [0, 1)
            out.tensors[op.outputs[0]].quant = QuantParams.per_tensor(1.0 / 256.0, -128)
    for op in out.ops:
        _quantize_constants(out, op)
    return out


def _quantize_constants(g: Graph, op: Op) -> None:
    k = op.kind
    xq = g.tensors[op.inputs[0]].quant
    if k in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w, b = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        axis = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": None}[k]
        wq = q8.symmetric_params(w.data, axis)
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


def quantized_op(g: Graph, op: Op) -> QuantizedOp:
    """The int8 kernel of one op of a quantised graph, with everything needed to run it."""
    acts = tuple(g.tensors[i].quant for i in op.inputs if g.tensors[i].data is None)
    out = g.tensors[op.outputs[0]].quant
    kw: dict[str, Any] = {"activation": op.activation}
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
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
        kw["geometry"] = _geometry(g, op)
    return QuantizedOp(op.kind, acts, out, **kw)


def quantized_graph(g: Graph) -> QuantizedGraph:
    """A quantised `Graph` as the standalone int8 reference's `QuantizedGraph`."""
    steps = [(quantized_op(g, op), tuple(i for i in op.inputs if g.tensors[i].data is None), op.outputs[0]) for op in g.ops]
    params = {i: t.quant for i, t in enumerate(g.tensors) if t.data is None}
    shapes = {i: t.shape for i, t in enumerate(g.tensors) if t.data is None}
    return QuantizedGraph(steps, tuple(g.inputs), tuple(g.outputs), params, shapes)


# ---- FlatBuffer serialisation ---------------------------------------------------------------------
def _bytes(b: Any, data: bytes, align: int = 16) -> int:
    """A [ubyte] vector aligned for the kernels that read weights in place (schema: force_align 16)."""
    b.StartVector(1, len(data), align)
    b.head -= len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _offsets(b: Any, items: list[int]) -> int:
    b.StartVector(4, len(items), 4)
    for o in reversed(items):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _options(b: Any, g: Graph, op: Op) -> tuple[int, int]:
    """(union type, offset) of the op's builtin options table, or (0, 0) when it takes none."""
    name = OP_OPTIONS.get(op.kind)
    if name is None:
        return 0, 0
    o, act = op.options, ACTIVATIONS[op.activation]
    if name == "Conv2DOptions":  # padding 0, stride_w 1, stride_h 2, fused_activation 3, dilation_w 4, dilation_h 5
        b.StartObject(6)
        b.PrependInt8Slot(0, PADDINGS[o["padding"]], 0)
        b.PrependInt32Slot(1, o["stride"], 0)
        b.PrependInt32Slot(2, o["stride"], 0)
        b.PrependInt8Slot(3, act, 0)
        b.PrependInt32Slot(4, o["dilation"], 1)
        b.PrependInt32Slot(5, o["dilation"], 1)
    elif name == "DepthwiseConv2DOptions":  # ... depth_multiplier 3, fused_activation 4, dilation_w 5, dilation_h 6
        b.StartObject(7)
        b.PrependInt8Slot(0, PADDINGS[o["padding"]], 0)
        b.PrependInt32Slot(1, o["stride"], 0)
        b.PrependInt32Slot(2, o["stride"], 0)
        b.PrependInt32Slot(3, o["depth_multiplier"], 0)
        b.PrependInt8Slot(4, act, 0)
        b.PrependInt32Slot(5, o["dilation"], 1)
        b.PrependInt32Slot(6, o["dilation"], 1)
    elif name == "Pool2DOptions":  # padding 0, stride_w 1, stride_h 2, filter_width 3, filter_height 4, fused_activation 5
        b.StartObject(6)
        b.PrependInt8Slot(0, PADDINGS[o["padding"]], 0)
        b.PrependInt32Slot(1, o["stride"], 0)
        b.PrependInt32Slot(2, o["stride"], 0)
        b.PrependInt32Slot(3, o["filter"], 0)
        b.PrependInt32Slot(4, o["filter"], 0)
        b.PrependInt8Slot(5, act, 0)
    elif name == "FullyConnectedOptions":  # fused_activation 0, weights_format 1 (DEFAULT), keep_num_dims 2
        b.StartObject(3)
        b.PrependInt8Slot(0, act, 0)
    elif name == "ConcatenationOptions":  # axis 0, fused_activation 1
        b.StartObject(2)
        b.PrependInt32Slot(0, o["axis"], 0)
        b.PrependInt8Slot(1, act, 0)
    elif name in ("AddOptions", "MulOptions"):  # fused_activation 0
        b.StartObject(1)
        b.PrependInt8Slot(0, act, 0)
    elif name == "ReducerOptions":  # keep_dims 0
        b.StartObject(1)
        b.PrependBoolSlot(0, bool(o.get("keep_dims", False)), False)
    else:  # PadOptions, PadV2Options, HardSwishOptions: empty tables
        b.StartObject(0)
    return OPTIONS_TYPE[name], b.EndObject()


def _op_version(op: Op, int8: bool) -> int:
    if int8:
        return INT8_OP_VERSIONS.get(op.kind, 2)
    if op.kind == "DEPTHWISE_CONV_2D" and op.options.get("dilation", 1) > 1:
        return 2
    return 1


def serialize(g: Graph, description: str = "hwlat") -> bytes:
    """The graph as a .tflite FlatBuffer (schema version 3, one subgraph, buffer 0 empty)."""
    import flatbuffers

    int8 = g.is_int8
    size = 1024 + sum(t.data.nbytes for t in g.tensors if t.data is not None)
    b = flatbuffers.Builder(size)

    # Buffers: 0 is the empty sentinel every non-constant tensor points at; one per constant.
    buffer_of: dict[int, int] = {}
    buffer_offsets = []
    b.StartObject(1)
    buffer_offsets.append(b.EndObject())
    for i, t in enumerate(g.tensors):
        if t.data is None:
            continue
        data = _bytes(b, np.ascontiguousarray(t.data.astype({"float32": "<f4", "int8": "i1", "int32": "<i4"}[t.dtype])).tobytes())
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, data, 0)
        buffer_of[i] = len(buffer_offsets)
        buffer_offsets.append(b.EndObject())

    tensor_offsets = []
    for i, t in enumerate(g.tensors):
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.array(t.shape, np.int32))
        quant = 0
        if t.quant is not None:
            scale = b.CreateNumpyVector(t.quant.scale.astype(np.float32))
            zp = b.CreateNumpyVector(t.quant.zero_point.astype(np.int64))
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(2, scale, 0)
            b.PrependUOffsetTRelativeSlot(3, zp, 0)
            b.PrependInt32Slot(6, t.quant.quantized_dimension, 0)
            quant = b.EndObject()
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, TENSOR_TYPES[t.dtype], 0)
        b.PrependUint32Slot(2, buffer_of.get(i, 0), 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        if quant:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        tensor_offsets.append(b.EndObject())

    codes: list[tuple[str, int]] = []
    op_offsets = []
    for op in g.ops:
        key = (op.kind, _op_version(op, int8))
        if key not in codes:
            codes.append(key)
        ins = b.CreateNumpyVector(np.array(op.inputs, np.int32))
        outs = b.CreateNumpyVector(np.array(op.outputs, np.int32))
        opt_type, opt = _options(b, g, op)
        b.StartObject(5)
        b.PrependUint32Slot(0, codes.index(key), 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        if opt_type:
            b.PrependUint8Slot(3, opt_type, 0)
            b.PrependUOffsetTRelativeSlot(4, opt, 0)
        op_offsets.append(b.EndObject())

    tensors = _offsets(b, tensor_offsets)
    inputs = b.CreateNumpyVector(np.array(g.inputs, np.int32))
    outputs = b.CreateNumpyVector(np.array(g.outputs, np.int32))
    operators = _offsets(b, op_offsets)
    sg_name = b.CreateString("main")
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensors, 0)
    b.PrependUOffsetTRelativeSlot(1, inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, operators, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraph = b.EndObject()

    code_offsets = []
    for kind, version in codes:
        code = BUILTIN_CODES[kind]
        b.StartObject(4)
        # deprecated_builtin_code is a byte: min(code, 127); builtin_code holds the full value.
        b.PrependInt8Slot(0, min(code, PLACEHOLDER_FOR_GREATER_OP_CODES), 0)
        b.PrependInt32Slot(2, version, 1)
        b.PrependInt32Slot(3, code, 0)
        code_offsets.append(b.EndObject())

    opcodes = _offsets(b, code_offsets)
    subgraphs = _offsets(b, [subgraph])
    buffers = _offsets(b, buffer_offsets)
    desc = b.CreateString(description)
    b.StartObject(5)
    b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(1, opcodes, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# ---- the public entry points ----------------------------------------------------------------------
@dataclass
class TFLiteModel:
    """A built single-op model: FlatBuffer bytes, its graph, and the inputs to feed (NHWC, model dtype)."""

    spec: OpSpec
    content: bytes
    graph: Graph
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
    float_inputs = [to_nhwc(x) for x in make_inputs(spec, seed)]
    inputs = float_inputs
    if spec.dtype == "int8":
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
