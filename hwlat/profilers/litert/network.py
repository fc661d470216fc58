"""Whole networks as `.tflite` models: a `Graph` (extracted from ONNX, or built) lowered op by op with
the same TFLite lowerings as the single-op models (`hwlat.profilers.tflite.lowering`), so the kernels a
network runs are the kernels its device table measured.

BN and ReLU/ReLU6 fold into the op before them only when that op's output has no other reader
(what a converter does); SiLU is LOGISTIC then MUL. An int8 network is the float one quantised as
the single-op models are (`hwlat.profilers.tflite.quantize`), its activation ranges from one input.

Views: a graph's shape ops (Reshape, Flatten, ...) are free, so each op reads its input in the view
its spec names. Feature maps of CNN ops are NHWC; attention's rank-4 tensors, token rows and every
other tensor keep the ONNX axis order ("plain"). An op reading a tensor in another shape gets a
RESHAPE (free: the same bytes), and, only where a feature map with H*W > 1 meets a plain op (a
patch embedding's tokens, a MobileViT fold), a TRANSPOSE between NHWC and NCHW. Linear reads any
shape as rows (FULLY_CONNECTED flattens, as after a CNN's Flatten); elementwise ops act on their
input as it is. Graph inputs read only by gathers are int32 token ids.
"""

from __future__ import annotations

import math

import numpy as np

from hwlat.device_tables.errors import ModelError, UnsupportedOpError
from hwlat.device_tables.graph import FREE, OP, SHUFFLE_NOTE, UNCOVERED, Graph
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.tflite import lowering
from hwlat.profilers.tflite.graph import TFLiteGraph, nhwc_shape
from hwlat.profilers.weights import make_inputs, make_weights

# Ops that read NHWC feature maps (their spec input is NCHW).
NHWC_OPS = ("conv2d", "dwconv2d", "pwconv2d", "avgpool", "maxpool", "globalavgpool", "concat", "mul")
# Ops applied to their input as it is, in any shape and layout.
ELEMENTWISE_OPS = lowering.ACTIVATION_OPS


def network_model(graph: Graph, int8: bool = False, description: str = "hwlat network") -> tuple[bytes, list[np.ndarray]]:
    """Serialized `.tflite` of a network graph, fp32 or full-integer int8 (activation ranges calibrated
    on its deterministic inputs by the float reference, as a converter does with a representative
    dataset), and those inputs in the model's dtype; `UnsupportedOpError` naming an op it cannot lower."""
    from hwlat.profilers.tflite.flatbuffer import serialize
    from hwlat.profilers.tflite.quantize import INT8_NETWORK_OPS, check_int8, quantize_graph

    g = network_graph(graph)
    inputs = network_inputs(g)
    if int8:
        check_int8(g, f"network {graph.name or '?'}", INT8_NETWORK_OPS)
        g = quantize_graph(g, inputs)
        inputs = [g.tensors[i].quant.quantize(x) if g.tensors[i].quant else x for i, x in zip(g.inputs, inputs)]
    return serialize(g, description=description), inputs


def network_graph(graph: Graph) -> TFLiteGraph:
    """The float32 `TFLiteGraph` of a network graph."""
    bad = [op for op in graph.ops if op.kind == UNCOVERED and op.note != SHUFFLE_NOTE]
    if bad:
        raise UnsupportedOpError(f"litert and tflm cannot run it (hwlat lowers it to TFLite op by op): {bad[0].describe()}"
                                 + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                                 + "; time it with --runtime onnxruntime, which runs every ONNX op")
    readers = graph.consumers()
    views = _Views(TFLiteGraph())
    g = views.g
    tensors: dict[str, int] = {}
    for name, shape in graph.inputs.items():
        ids = all(graph.ops[i].spec is not None and graph.ops[i].spec.base == "gather" for i in readers.get(name, [None]))
        if ids:
            tensors[name] = g.add_tensor(name, tuple(shape), dtype="int32")
        else:
            tensors[name] = views.feature_map(g.add_tensor(name, nhwc_shape(tuple(shape)))) if len(shape) == 4 \
                else g.add_tensor(name, tuple(shape))
    g.inputs = list(tensors.values())
    outputs = set(graph.outputs)

    def single(x_name: str) -> bool:
        return len(readers.get(x_name, [])) == 1 and x_name not in outputs

    for op in graph.ops:
        if op.kind == FREE:
            acts = [t for t in op.inputs if t in tensors]
            if acts and op.outputs:
                tensors[op.outputs[0]] = tensors[acts[0]]  # a view: the reader reshapes it as its spec says
            continue
        if op.kind == UNCOVERED:  # a channel shuffle (the only uncovered op `bad` lets through)
            tensors[op.outputs[0]] = _shuffle(views, tensors[op.inputs[0]], op.moves)
            continue
        spec = op.spec
        assert op.kind == OP and spec is not None
        missing = [t for t in op.inputs if t not in tensors]
        if missing:
            raise ModelError(f"{op.describe()}: reads {missing[0]!r}, which no earlier op or graph input makes")
        xs = [tensors[t] for t in op.inputs]
        if spec.base == "copy" and len(op.outputs) > 1:
            ys = _split(views, xs[0], graph.shapes[op.inputs[0]], [graph.shapes[o] for o in op.outputs])
        else:
            ys = [_lower(views, spec, xs, fuse_ok=single(op.inputs[0]))] * len(op.outputs)
        tensors.update(zip(op.outputs, ys))
    g.outputs = [tensors[o] for o in graph.outputs if o in tensors]
    return g


class _Views:
    """The graph being written and which of its tensors are NHWC feature maps (the rest are plain)."""

    def __init__(self, g: TFLiteGraph):
        self.g = g
        self.nhwc: set[int] = set()

    def feature_map(self, x: int) -> int:
        self.nhwc.add(x)
        return x

    def like(self, y: int, x: int) -> int:
        """`y` in the layout and shape of `x` (the other operand of an elementwise op)."""
        if x in self.nhwc:
            n, h, w, c = self.g.tensors[x].shape
            return self.as_nhwc(y, (n, c, h, w))
        return self.as_plain(y, self.g.tensors[x].shape)

    def as_plain(self, x: int, shape: tuple[int, ...] | None = None) -> int:
        """`x` with its bytes in ONNX axis order (NHWC -> NCHW where that moves data), as `shape`."""
        g = self.g
        if x in self.nhwc and _moves(g.tensors[x].shape):
            x = lowering.transpose(g, x, "0312")
        return x if shape is None else lowering.reshape(g, x, shape)

    def as_nhwc(self, x: int, nchw: tuple[int, ...]) -> int:
        """`x` as the NHWC feature map of the NCHW shape `nchw`."""
        g = self.g
        want = nhwc_shape(nchw)
        if x in self.nhwc and g.tensors[x].shape == want:
            return x
        if _moves(want):
            return self.feature_map(lowering.transpose(g, self.as_plain(x, nchw), "0231"))
        return self.feature_map(lowering.reshape(g, self.as_plain(x), want))

    def channels_last(self, x: int, nchw: tuple[int, ...]) -> bool:
        """Whether `x`'s last axis holds the channels of the NCHW shape `nchw` (a per-channel
        constant of shape (C,) broadcasts over it): a feature map, or token rows (H = W = 1)."""
        shape = self.g.tensors[x].shape
        return x in self.nhwc or (not _moves(nhwc_shape(nchw)) and shape[-1] == nchw[1] and math.prod(shape) == math.prod(nchw))


def _moves(nhwc: tuple[int, ...]) -> bool:
    """Whether NHWC and NCHW order the bytes of this shape differently."""
    return len(nhwc) == 4 and nhwc[1] * nhwc[2] > 1 and nhwc[3] > 1


def _lower(views: _Views, spec: OpSpec, xs: list[int], fuse_ok: bool) -> int:
    """One network op lowered with `lowering`'s functions; BN and ReLU/ReLU6 fuse into the op before
    them only when `fuse_ok` (that op's output has no other reader)."""
    g, base = views.g, spec.base
    if spec.is_fused:
        raise UnsupportedOpError(f"{spec.key}: expected unfused ops in an extracted graph")
    wts = make_weights(spec)
    xs = xs + [_constant(views, spec, xs[0], i) for i in range(len(xs), len(spec.input_shapes))]
    if base in NHWC_OPS:
        xs = [views.as_nhwc(x, s) for x, s in zip(xs, spec.input_shapes)]
        return views.feature_map(lowering.lower_base(g, spec, xs[0], xs[1:], wts))
    if base in ("bn", "scale"):  # per-channel constants: over the last axis, else NCHW's axis 1
        x, nchw = xs[0], spec.input_shape
        if base == "bn" and not views.channels_last(x, nchw):
            x = views.as_nhwc(x, nchw)
        if base == "bn":
            y = lowering.bn(g, x, wts, fold=fuse_ok)
        elif views.channels_last(x, nchw):
            y = g.add_op("MUL", [x, g.add_const("scale", wts["scale"].ravel())], g.tensors[x].shape)
        else:
            x = views.as_plain(x, nchw)
            y = g.add_op("MUL", [x, g.add_const("scale", wts["scale"])], nchw)
        return views.feature_map(y) if x in views.nhwc else y
    if base in ELEMENTWISE_OPS:
        x = xs[0]
        if base in ("relu", "relu6") and not fuse_ok:
            y = g.add_op(base.upper(), [x], g.tensors[x].shape)
        else:
            y = lowering.activation(g, x, base, tanh=bool(spec.a.get("tanh", False)))
        return views.feature_map(y) if x in views.nhwc else y
    if base == "add":
        if math.prod(g.tensors[xs[1]].shape) != math.prod(g.tensors[xs[0]].shape):  # ADD broadcasts (a padding mask)
            a, b = views.as_plain(xs[0]), views.as_plain(xs[1])
            try:
                return g.add_op("ADD", [a, b], tuple(np.broadcast_shapes(g.tensors[a].shape, g.tensors[b].shape)))
            except ValueError:
                raise UnsupportedOpError(f"{spec.key}: operands of shapes {g.tensors[a].shape} and {g.tensors[b].shape} "
                                         "do not broadcast as TFLite's ADD; time it with --runtime onnxruntime") from None
        y = g.add_op("ADD", [xs[0], views.like(xs[1], xs[0])], g.tensors[xs[0]].shape)
        return views.feature_map(y) if xs[0] in views.nhwc else y
    if base == "linear":
        return lowering.linear(g, spec, xs[0], wts)
    if base == "gather":
        return lowering.gather(g, xs[0], wts)
    if base == "copy":
        part = nhwc_shape(spec.output_shape)
        shape = g.tensors[xs[0]].shape
        if len(xs) == 1 and xs[0] in views.nhwc and sum(p != s for p, s in zip(part, shape)) == 1 \
                and all(p <= s for p, s in zip(part, shape)):  # a Slice along one axis of a feature map, cut in NHWC
            begin = g.add_const("begin", np.zeros(4, np.int32))
            return views.feature_map(g.add_op("SLICE", [xs[0], begin, g.add_const("size", np.array(part, np.int32))], part))
        return _copy(g, [views.as_plain(x) for x in xs], spec.output_shape)
    if base in ("softmax", "layernorm"):
        x = views.as_plain(xs[0])
        if g.tensors[x].shape[-1] != spec.input_shape[1]:
            x = lowering.reshape(g, x, spec.input_shape)
        return lowering.softmax(g, x) if base == "softmax" else lowering.layernorm(g, x, wts)
    # matmul, transpose: rank-4 tensors in their own axis order.
    xs = [views.as_plain(x, s) for x, s in zip(xs, spec.input_shapes)]
    return lowering.lower_base(g, spec, xs[0], xs[1:], wts)


def _constant(views: _Views, spec: OpSpec, x: int, i: int) -> int:
    """The `i`-th input of `spec` where the network gives a constant (a position embedding added to
    tokens): deterministic values in `x`'s shape for an add, else in the spec's shape and its layout."""
    g = views.g
    value = make_inputs(spec)[i]
    if spec.base == "add":
        return g.add_const("operand", value.reshape(g.tensors[x].shape))
    if spec.base in NHWC_OPS:
        return views.feature_map(g.add_const("operand", value.transpose(0, 2, 3, 1)))
    return g.add_const("operand", value)


def _copy(g: TFLiteGraph, xs: list[int], shape: tuple[int, ...]) -> int:
    """A copy making a tensor of `shape` from the activations it reads: a full SLICE of one input of
    that size; else the inputs' elements joined (CONCATENATION, zeros standing for constant parts,
    as in a class token joined to patches) or cut (SLICE, as a Split or a Gather of rows does)."""
    sizes = [math.prod(g.tensors[x].shape) for x in xs]
    need = math.prod(shape)
    if len(xs) == 1 and sizes[0] == need:
        return lowering.copy(g, xs[0])
    flat = [lowering.reshape(g, x, (n,)) for x, n in zip(xs, sizes)]
    if sum(sizes) < need:
        flat.append(g.add_const("constant_part", np.zeros(need - sum(sizes), np.float32)))
    y = flat[0] if len(flat) == 1 else g.add_op("CONCATENATION", flat, (max(need, sum(sizes)),), axis=0)
    if g.tensors[y].shape[0] > need:
        begin = g.add_const("begin", np.zeros(1, np.int32))
        y = g.add_op("SLICE", [y, begin, g.add_const("size", np.array([need], np.int32))], (need,))
    return lowering.reshape(g, y, shape)


def _shuffle(views: _Views, x: int, five: tuple[int, ...]) -> int:
    """A channel shuffle of the NCHW map (N, g*k, H, W) seen as `five` = (N, g, k, H, W), in NHWC: each
    pixel's channels (g, k) become (k, g), one rank-3 TRANSPOSE between RESHAPEs (free)."""
    n, groups, k, h, w = five
    g = views.g
    rows = lowering.reshape(g, views.as_nhwc(x, (n, groups * k, h, w)), (n * h * w, groups, k))
    return views.feature_map(lowering.reshape(g, lowering.transpose(g, rows, "021"), (n, h, w, groups * k)))


def _split(views: _Views, x: int, shape: tuple[int, ...], parts: list[tuple[int, ...]]) -> list[int]:
    """A copy with several outputs (a Split, as of q, k and v) cut from `x` of ONNX `shape` along the
    one axis where the outputs' `parts` shapes differ from it: one SPLIT into equal parts, else a SLICE
    per part; a feature map is cut along its NHWC axis, where it lies."""
    g = views.g
    axis = next(a for a in range(len(shape)) if any(p[a] != shape[a] for p in parts))
    if len(shape) == 4 and x in views.nhwc:
        x, axis, parts = views.as_nhwc(x, shape), (0, 3, 1, 2)[axis], [nhwc_shape(p) for p in parts]
    else:
        x = views.as_plain(x, shape)
    if len({p[axis] for p in parts}) == 1:
        ys = lowering.split(g, x, len(parts), axis)
    else:
        begins = np.cumsum([0] + [p[axis] for p in parts[:-1]])
        ys = [g.add_op("SLICE", [x, g.add_const("begin", np.eye(len(p), dtype=np.int32)[axis] * b),
                                 g.add_const("size", np.array(p, np.int32))], p) for p, b in zip(parts, begins)]
    return [views.feature_map(y) for y in ys] if x in views.nhwc else ys


def network_inputs(g: TFLiteGraph, seed: int = 0) -> list[np.ndarray]:
    """Deterministic float32 inputs in [-1, 1] for a network model, and int32 token ids below the
    smallest vocabulary that reads them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in g.inputs:
        t = g.tensors[i]
        if t.dtype == "int32":
            vocab = min(g.tensors[op.inputs[0]].shape[0] for op in g.ops if op.kind == "GATHER" and op.inputs[1] == i)
            out.append(rng.integers(0, vocab, size=t.shape).astype(np.int32))
        else:
            out.append(rng.uniform(-1, 1, size=t.shape).astype(np.float32))
    return out


def input_array(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A deterministic NHWC float32 input."""
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)
