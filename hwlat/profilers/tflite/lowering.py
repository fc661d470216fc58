"""hwlat ops lowered to TFLite builtin operators in a float32 `TFLiteGraph` (the kernels a converted
network really runs), shared by the single-op models (`builder`) and whole networks
(`hwlat.profilers.litert.network`).

Batch norm folds into the conv/linear before it, else MUL+ADD; ReLU/ReLU6 fuse into
conv/linear/add/mul; PyTorch padding that TFLite's SAME/VALID cannot express becomes an explicit PAD
(PADV2 with the lowest value for max pooling) before the op; grouped conv is CONV_2D with cin/groups
filter channels, groups = cin is DEPTHWISE_CONV_2D; hardsigmoid is ADD(+3, fused RELU6) then
MUL(1/6); SiLU is LOGISTIC then MUL; global average pooling is MEAN over H, W. The one configuration
without an equivalent (average pooling with count_include_pad=false whose padding TFLite's SAME
cannot reproduce) raises `UnsupportedOpError`.

Transformer ops: GELU (``approximate`` for the tanh form), BATCH_MATMUL of two activations, SOFTMAX
(beta 1) over the last axis, TRANSPOSE, GATHER of int32 ids from a (vocab, dim) table, layer norm
decomposed over the last axis as MEAN, SUB, MUL (square), MEAN, ADD eps, RSQRT, MUL, MUL gamma,
ADD beta (all XNNPACK-delegated), a copy as a full-extent SLICE (a real copy XNNPACK runs), and a
copy into equal parts (a Split) as SPLIT.

Weights come from `hwlat.profilers.weights.make_weights` (OIHW) and are stored OHWI for CONV_2D, 1HWC for
DEPTHWISE_CONV_2D, (out, in) for FULLY_CONNECTED.
"""

from __future__ import annotations

import numpy as np

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.tflite import int8_reference as q8
from hwlat.profilers.tflite.graph import Op, TFLiteGraph
from hwlat.profilers.weights import BN_EPS, LN_EPS

# Ops a following ReLU/ReLU6 fuses into (their fused_activation_function).
FUSABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL")
# Ops a following batch norm folds into (scaling their weights and bias).
FOLDS_BN = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ACTIVATION_OPS = ("relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "silu", "gelu")


# ---- padding -------------------------------------------------------------------------------------
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


def _explicit_pad(g: TFLiteGraph, x: int, pads: tuple[int, int, int, int], lowest: bool = False) -> int:
    n, h, w, c = g.tensors[x].shape
    t, b, l, r = pads
    paddings = g.add_const("paddings", np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32))
    shape = (n, h + t + b, w + l + r, c)
    if lowest:  # max pooling ignores padded taps: pad with the lowest value (PADV2)
        value = g.add_const("pad_value", np.array([np.finfo(np.float32).min], np.float32))
        return g.add_op("PADV2", [x, paddings, value], shape)
    return g.add_op("PAD", [x, paddings], shape)


# ---- one lowering per op ---------------------------------------------------------------------------
def conv(g: TFLiteGraph, spec: OpSpec, x: int, wts: dict[str, np.ndarray]) -> int:
    """conv2d, dwconv2d or pwconv2d as CONV_2D or DEPTHWISE_CONV_2D (after a PAD where needed)."""
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


def linear(g: TFLiteGraph, spec: OpSpec, x: int, wts: dict[str, np.ndarray]) -> int:
    """linear as FULLY_CONNECTED with (out, in) weights and a bias (zeros when the op has none); its
    input is read as rows of `in` values whatever its shape (tokens, a flattened feature map)."""
    w = g.add_const("weights", wts["W"])
    b = g.add_const("bias", wts.get("b", np.zeros(wts["W"].shape[0], np.float32)))
    rows = int(np.prod(g.tensors[x].shape)) // wts["W"].shape[1]
    return g.add_op("FULLY_CONNECTED", [x, w, b], (rows, int(spec.a["cout"])))


def pool(g: TFLiteGraph, spec: OpSpec, x: int) -> int:
    """avgpool or maxpool as AVERAGE_POOL_2D or MAX_POOL_2D (after a PAD/PADV2 where needed)."""
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


def global_avgpool(g: TFLiteGraph, x: int) -> int:
    """Global average pooling as MEAN over H, W keeping the dimensions."""
    shape = g.tensors[x].shape
    axes = g.add_const("axes", np.array([1, 2], np.int32))
    return g.add_op("MEAN", [x, axes], (shape[0], 1, 1, shape[3]), keep_dims=True)


def activation(g: TFLiteGraph, x: int, act: str, tanh: bool = False) -> int:
    """ReLU/ReLU6 fused into the op that produced `x` when it can take it, else a standalone op
    (`tanh`: GELU's tanh approximation)."""
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
    if act == "gelu":
        return g.add_op("GELU", [x], shape, approximate=tanh)
    if act == "silu":  # no builtin: x * sigmoid(x) as LOGISTIC then MUL, as converters emit it
        sig = g.add_op("LOGISTIC", [x], shape)
        return g.add_op("MUL", [x, sig], shape)
    if act == "hardsigmoid":  # no builtin: relu6(x + 3) / 6 as ADD (fused RELU6) then MUL
        three = g.add_const("three", np.array([3.0], np.float32))
        y = g.add_op("ADD", [x, three], shape, activation="relu6")
        sixth = g.add_const("one_sixth", np.array([1.0 / 6.0], np.float32))
        return g.add_op("MUL", [y, sixth], shape)
    raise UnsupportedOpError(f"no TFLite lowering for activation {act!r}")


def bn_affine(wts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm (inference) as y = x * scale + shift per channel."""
    scale = wts["bn_gamma"].astype(np.float64) / np.sqrt(wts["bn_var"].astype(np.float64) + BN_EPS)
    shift = wts["bn_beta"].astype(np.float64) - wts["bn_mean"].astype(np.float64) * scale
    return scale, shift


def bn(g: TFLiteGraph, x: int, wts: dict[str, np.ndarray], fold: bool = True) -> int:
    """Batch norm folded into the conv/linear that produced `x` (what TFLite runs), else MUL+ADD.

    ``fold=False`` keeps MUL+ADD whatever produced `x` (its output has other readers)."""
    scale, shift = bn_affine(wts)
    prod = g.producer(x) if fold else None
    if prod is not None and prod.kind in FOLDS_BN and prod.activation == "none":
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


def scale(g: TFLiteGraph, x: int, wts: dict[str, np.ndarray]) -> int:
    """x times a per-channel constant: MUL with a (1, 1, 1, C) constant."""
    c = wts["scale"].size
    s = g.add_const("scale", wts["scale"].reshape(1, 1, 1, c))
    return g.add_op("MUL", [x, s], g.tensors[x].shape)


# ---- transformer ops ---------------------------------------------------------------------------------
def reshape(g: TFLiteGraph, x: int, shape: tuple[int, ...]) -> int:
    """`x` viewed as `shape` (the same elements in the same order): a RESHAPE, or `x` when it has it."""
    shape = tuple(int(s) for s in shape)
    if g.tensors[x].shape == shape:
        return x
    if np.prod(g.tensors[x].shape) != np.prod(shape):
        raise AssertionError(f"reshape of {g.tensors[x].shape} to {shape}")  # a bug, not a user error
    return g.add_op("RESHAPE", [x, g.add_const("shape", np.array(shape, np.int32))], shape)


def matmul(g: TFLiteGraph, x: int, y: int) -> int:
    """x @ y of two activations, (..., M, K) @ (..., K, N), as BATCH_MATMUL."""
    return g.add_op("BATCH_MATMUL", [x, y], g.tensors[x].shape[:-1] + g.tensors[y].shape[-1:])


def softmax(g: TFLiteGraph, x: int) -> int:
    """Softmax over the last axis as SOFTMAX with beta 1."""
    return g.add_op("SOFTMAX", [x], g.tensors[x].shape, beta=1.0)


def layernorm(g: TFLiteGraph, x: int, wts: dict[str, np.ndarray]) -> int:
    """Layer norm over the last axis, decomposed as a converter writes it (TFLite has no builtin):
    d = x - mean(x); y = d * rsqrt(mean(d * d) + eps) * gamma + beta."""
    shape = g.tensors[x].shape
    axis = g.add_const("axes", np.array([len(shape) - 1], np.int32))
    rows = shape[:-1] + (1,)
    d = g.add_op("SUB", [x, g.add_op("MEAN", [x, axis], rows, keep_dims=True)], shape)
    var = g.add_op("MEAN", [g.add_op("MUL", [d, d], shape), axis], rows, keep_dims=True)
    inv = g.add_op("RSQRT", [g.add_op("ADD", [var, g.add_const("eps", np.array([LN_EPS], np.float32))], rows)], rows)
    y = g.add_op("MUL", [g.add_op("MUL", [d, inv], shape), g.add_const("gamma", wts["ln_scale"])], shape)
    return g.add_op("ADD", [y, g.add_const("beta", wts["ln_bias"])], shape)


def transpose(g: TFLiteGraph, x: int, perm: str | tuple[int, ...]) -> int:
    """A permutation of `x`'s axes (``"0213"`` or a tuple) as TRANSPOSE."""
    p = [int(i) for i in perm]
    shape = g.tensors[x].shape
    return g.add_op("TRANSPOSE", [x, g.add_const("perm", np.array(p, np.int32))], tuple(shape[i] for i in p))


def copy(g: TFLiteGraph, x: int) -> int:
    """A real copy of `x`: SLICE of its full extent (XNNPACK runs it as a copy; a RESHAPE could be elided)."""
    shape = g.tensors[x].shape
    begin = g.add_const("begin", np.zeros(len(shape), np.int32))
    return g.add_op("SLICE", [x, begin, g.add_const("size", np.array(shape, np.int32))], shape)


def split(g: TFLiteGraph, x: int, parts: int, axis: int) -> list[int]:
    """`x` cut into `parts` equal tensors along `axis` by one SPLIT (a Split of q, k and v)."""
    shape = list(g.tensors[x].shape)
    shape[axis] //= parts
    outs = [g.add_tensor(f"{len(g.ops)}_split{i}", tuple(shape)) for i in range(parts)]
    g.ops.append(Op("SPLIT", [g.add_const("axis", np.array(axis, np.int32)), x], outs, {"num_splits": parts}))
    return outs


def gather(g: TFLiteGraph, ids: int, wts: dict[str, np.ndarray]) -> int:
    """Embedding lookup: rows `ids` (int32) of the (vocab, dim) table, as GATHER on axis 0."""
    table = g.add_const("table", wts["table"])
    return g.add_op("GATHER", [table, ids], g.tensors[ids].shape + wts["table"].shape[1:], axis=0)


# ---- a single-op spec: its base op, then its fused tail ----------------------------------------------
def lower_base(g: TFLiteGraph, spec: OpSpec, x: int, extra: list[int], wts: dict[str, np.ndarray]) -> int:
    """The spec's base op applied to `x`; binary ops take (pop) their other operands from `extra`."""
    base = spec.base
    shape = g.tensors[x].shape
    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        return conv(g, spec, x, wts)
    if base == "linear":
        return linear(g, spec, x, wts)
    if base == "bn":
        return bn(g, x, wts)
    if base in ACTIVATION_OPS:
        return activation(g, x, base, tanh=bool(spec.a.get("tanh", False)))
    if base == "matmul":
        return matmul(g, x, extra.pop(0))
    if base == "softmax":
        return softmax(g, x)
    if base == "layernorm":
        return layernorm(g, x, wts)
    if base == "transpose":
        return transpose(g, x, spec.a["perm"])
    if base == "copy":
        return copy(g, x)
    if base == "gather":
        return gather(g, x, wts)
    if base in ("avgpool", "maxpool"):
        return pool(g, spec, x)
    if base == "globalavgpool":
        return global_avgpool(g, x)
    if base == "scale":
        return scale(g, x, wts)
    if base in ("add", "mul"):
        other = extra.pop(0)
        return g.add_op(base.upper(), [x, other], shape)
    if base == "concat":
        parts = int(spec.a["parts"])
        others = [extra.pop(0) for _ in range(parts - 1)]
        return g.add_op("CONCATENATION", [x, *others], (shape[0], shape[1], shape[2], shape[3] * parts), axis=3)
    raise UnsupportedOpError(f"{spec.key}: litert has no lowering for op {base!r}")


def lower_tail(g: TFLiteGraph, spec: OpSpec, y: int, extra: list[int], wts: dict[str, np.ndarray]) -> int:
    """The spec's fused tail (``+bn``, ``+add``, activations) applied to the base op's output `y`."""
    for tail in spec.parts[1:]:
        if tail == "bn":
            y = bn(g, y, wts)
        elif tail == "add":
            y = g.add_op("ADD", [y, extra.pop(0)], g.tensors[y].shape)
        elif tail == "layernorm":
            y = layernorm(g, y, wts)
        else:
            y = activation(g, y, tail, tanh=bool(spec.a.get("tanh", False)))
    return y
