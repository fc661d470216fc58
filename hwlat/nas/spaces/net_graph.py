"""`Net` -> `Graph` without ONNX: the ops `Graph.from_onnx` extracts from the net's exported model,
written layer by layer for the CNN layer kinds (the shapes-only ONNX model and its extraction
took ~15 ms a network; this takes well under one). A net with any other layer kind gives None and
is read through ONNX. Tests check the two agree op by op on many networks of every space.

Each layer's ops depend on the layer alone (its kind, names, shapes and attributes), so they are
built once per distinct layer (`_layer_ops`, bounded): networks of one space share most layers, and
the predictor meets the same `GraphOp` objects again.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from hwlat.device_tables.graph import FREE, OP, SHUFFLE_NOTE, UNCOVERED, Graph, GraphOp
from hwlat.device_tables.ops import OpSpec
from hwlat.nas.spaces.network import Net

# Layer kinds written here; every other kind (transformer layers, gelu, silu) goes through ONNX.
KINDS = frozenset({"conv", "bn_act", "act", "avgpool", "add", "mul", "zero", "gap", "flatten", "linear", "shuffle",
                   "concat"})
ACTS = {"relu": ("Relu", "relu"), "hardswish": ("HardSwish", "hardswish"), "hardsigmoid": ("HardSigmoid", "hardsigmoid")}
OUTPUT = "logits"  # the exported model's output tensor (`onnx_export.net_to_proto`)


def net_graph(net: Net, name: str = "") -> Graph | None:
    """The `Graph` `Graph.from_onnx` reads from `net`'s exported model; None where a layer is not
    written here (the caller then exports and extracts)."""
    ops: list[GraphOp] = []
    for layer in net.layers:
        if layer.kind not in KINDS or (layer.attrs.get("act") or "relu") not in ACTS:
            return None
        made = _layer_ops(layer.kind, layer.name, layer.inputs, layer.in_shape, layer.out_shape,
                          tuple(layer.attrs.items()), "b" in layer.param_shapes)
        if made is None:
            return None
        ops.extend(made)
    return _finish(ops, net.output, name, net.input_shape)


def _finish(ops: list[GraphOp], last: str, name: str, input_shape: tuple[int, ...]) -> Graph:
    for i in range(len(ops) - 1, -1, -1):  # the last tensor is renamed, as the exporter does
        if last in ops[i].outputs:
            op = ops[i]
            ops[i] = GraphOp(op.kind, op.spec, op.onnx_op, op.nodes, op.inputs,
                             tuple(OUTPUT if o == last else o for o in op.outputs), op.note, op.moves)
            break
    return Graph(ops, name, {"input": input_shape}, (OUTPUT,))


class GraphNet:
    """`Net`'s builder methods for the CNN layers written here, making a `Graph` straight away: each
    layer's ops come from `_layer_ops` with what a `Net` layer would hold, so `graph()` equals
    ``net_graph(net)`` of the same calls on a `Net` (without the layers, weights and their shapes a
    network keeps, which a prediction does not need). A space builds its network through either."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = tuple(int(s) for s in input_shape)
        self._shapes: dict[str, tuple[int, ...]] = {"input": self.input_shape}
        self._ops: list[GraphOp] = []
        self.output = "input"
        self.layers = 0  # how many layers (default names count them, as `Net`'s do)
        self.written = True  # False once a layer is not written here (`graph` gives None)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def _add(self, kind: str, name: str, inputs: tuple[str, ...], out_shape: tuple[int, ...],
             attrs: tuple[tuple[str, Any], ...], has_bias: bool = False) -> str:
        if name in self._shapes:
            raise ValueError(f"layer name {name!r} used twice")
        act = attrs[-1][1] if attrs and attrs[-1][0] == "act" else None  # "act" comes last, as `net_graph` reads it
        made = _layer_ops(kind, name, inputs, self._shapes[inputs[0]], out_shape, attrs, has_bias) \
            if self.written and (act is None or act in ACTS) else None
        if made is None:
            self.written = False
        else:
            self._ops.extend(made)
        self._shapes[name] = out_shape
        self.output = name
        self.layers += 1
        return name

    def conv(self, x: str, cout: int, kernel: int, stride: int = 1, groups: int = 1, bn: bool = True,
             act: str | None = None, bias: bool | None = None, padding: int | None = None, name: str = "") -> str:
        n, cin, h, w = self._shapes[x]
        bias = (not bn) if bias is None else bias
        pad = kernel // 2 if padding is None else padding
        ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        attrs = (("cin", cin), ("cout", cout), ("kernel", kernel), ("stride", stride), ("padding", pad),
                 ("groups", groups), ("bias", bias), ("bn", bn), ("act", act))
        return self._add("conv", name or f"conv{self.layers}", (x,), (n, cout, ho, wo), attrs, bias)

    def bn_act(self, x: str, act: str | None, name: str = "") -> str:
        return self._add("bn_act", name or f"bn{self.layers}", (x,), self._shapes[x], (("act", act),))

    def act(self, x: str, kind: str, name: str = "") -> str:
        return self._add("act", name or f"{kind}{self.layers}", (x,), self._shapes[x], (("act", kind),))

    def avgpool(self, x: str, kernel: int, stride: int, padding: int = 0, count_include_pad: bool = False,
                name: str = "") -> str:
        n, c, h, w = self._shapes[x]
        ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        attrs = (("kernel", kernel), ("stride", stride), ("padding", padding), ("count_include_pad", count_include_pad))
        return self._add("avgpool", name or f"pool{self.layers}", (x,), (n, c, ho, wo), attrs)

    def add(self, a: str, b: str, name: str = "") -> str:
        if self._shapes[a] != self._shapes[b]:
            raise ValueError(f"add of shapes {self._shapes[a]} and {self._shapes[b]}")
        return self._add("add", name or f"add{self.layers}", (a, b), self._shapes[a], ())

    def zero(self, x: str, name: str = "") -> str:
        return self._add("zero", name or f"zero{self.layers}", (x,), self._shapes[x], ())

    def gap(self, x: str, name: str = "") -> str:
        n, c, _, _ = self._shapes[x]
        return self._add("gap", name or f"gap{self.layers}", (x,), (n, c, 1, 1), ())

    def flatten(self, x: str, name: str = "") -> str:
        s = self._shapes[x]
        return self._add("flatten", name or f"flatten{self.layers}", (x,), (s[0], math.prod(s[1:])), ())

    def linear(self, x: str, cout: int, act: str | None = None, name: str = "") -> str:
        *lead, cin = self._shapes[x]
        return self._add("linear", name or f"linear{self.layers}", (x,), (*lead, cout), (("cin", cin), ("cout", cout), ("act", act)), True)

    def graph(self, name: str = "") -> Graph | None:
        """The `Graph` (as `net_graph` gives it); None where a layer is not written here."""
        if not self.written:
            return None
        return _finish(self._ops, self.output, name, self.input_shape)


@lru_cache(maxsize=1 << 16)
def _layer_ops(kind: str, name: str, inputs: tuple[str, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               attrs: tuple[tuple[str, Any], ...], has_bias: bool) -> tuple[GraphOp, ...] | None:
    """The ops of one layer (None: not written here); cached, since networks repeat layers."""
    a = dict(attrs)
    x = inputs[0]
    if kind == "conv":
        out = f"{name}.pre" if a["act"] else name
        conv = GraphOp(OP, _conv_spec(in_shape, a, has_bias or bool(a["bn"])), "Conv", (name,), (x,), (out,))
        if conv.spec.output_shape != out_shape or len(out_shape) != 4:
            return None
        return (conv,) + _act(a["act"], out, name, f"{name}.{a['act']}", out_shape)
    if kind == "bn_act":
        if len(in_shape) != 4:
            return None
        out = f"{name}.pre" if a["act"] else name
        bn = GraphOp(OP, _spec("bn", in_shape), "BatchNormalization", (name,), (x,), (out,))
        return (bn,) + _act(a["act"], out, name, f"{name}.{a['act']}", in_shape)
    if kind == "act":
        return _act(a["act"], x, name, name, in_shape) if len(in_shape) == 4 else None
    if kind == "avgpool":
        spec = _spec("avgpool", in_shape, kernel=a["kernel"], stride=a["stride"], padding=a["padding"],
                     count_include_pad=bool(a["count_include_pad"]))
        return (GraphOp(OP, spec, "AveragePool", (name,), (x,), (name,)),) if spec.output_shape == out_shape else None
    if kind == "add":
        return (GraphOp(OP, _spec("add", in_shape), "Add", (name,), inputs, (name,)),) if len(in_shape) == 4 else None
    if kind == "mul":
        return _mul(name, inputs, in_shape, out_shape)
    if kind == "zero":
        return (GraphOp(OP, _spec("scale", in_shape), "Mul", (name,), (x,), (name,)),) if len(in_shape) == 4 else None
    if kind == "gap":
        return (GraphOp(OP, _spec("globalavgpool", in_shape), "GlobalAveragePool", (name,), (x,), (name,)),) \
            if len(in_shape) == 4 else None
    if kind == "flatten":
        return (GraphOp(FREE, None, "Flatten", (name,), (x,), (name,)),)
    if kind == "linear":
        if len(in_shape) != 2 or a.get("act"):
            return None
        return (GraphOp(OP, _spec("linear", in_shape, cout=a["cout"], bias=True), "Gemm", (name,), (x,), (name,)),)
    if kind == "shuffle":
        return _shuffle(name, x, in_shape, a["groups"])
    if kind == "concat":
        return _concat(name, inputs, in_shape, out_shape)
    return None


@lru_cache(maxsize=4096)
def _spec(op: str, shape: tuple[int, ...], **attrs: Any) -> OpSpec:
    """`OpSpec.make`, once per configuration."""
    return OpSpec.make(op, shape, **attrs)


def _conv_spec(xs: tuple[int, ...], a: dict[str, Any], bias: bool) -> OpSpec:
    """The spec `onnx_mapping` gives a Conv node of these attributes (its rules for dw and pw)."""
    cin, cout, k, group, pad, stride = xs[1], a["cout"], a["kernel"], a["groups"], a["padding"], a["stride"]
    if group == cin and cout == cin and cin > 1:
        return _spec("dwconv2d", xs, kernel=k, stride=stride, padding=pad, dilation=1, bias=bias)
    if group == 1 and k == 1 and pad == 0:
        return _spec("pwconv2d", xs, cout=cout, stride=stride, bias=bias)
    return _spec("conv2d", xs, cout=cout, kernel=k, stride=stride, padding=pad, dilation=1, groups=group, bias=bias)


def _act(kind: str | None, x: str, out: str, node: str, shape: tuple[int, ...]) -> tuple[GraphOp, ...]:
    """An activation node reading `x` of a rank-4 `shape` (none when `kind` is None)."""
    if kind is None:
        return ()
    onnx_op, op = ACTS[kind]
    return (GraphOp(OP, _spec(op, shape), onnx_op, (node,), (x,), (out,)),)


def _mul(name: str, inputs: tuple[str, ...], xs: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[GraphOp, ...] | None:
    """The squeeze-excite product x * s, s of shape (N, C, 1, 1); other products go through ONNX."""
    if len(xs) != 4 or out_shape != xs or xs[2:] == (1, 1):
        return None
    return (GraphOp(OP, _spec("mul", xs), "Mul", (name,), inputs, (name,)),)


def _shuffle(name: str, x: str, xs: tuple[int, ...], g: int) -> tuple[GraphOp, ...] | None:
    """Reshape (free), the Transpose of the groups (uncovered, priced as a copy of the tensor), Reshape."""
    n, c, h, w = xs
    five = (n, g, c // g, h, w)
    if five[1] == 1 or five[2] == 1:  # a transpose moving a unit axis only is free in `onnx_mapping`
        return None
    return (GraphOp(FREE, None, "Reshape", (f"{name}.reshape1",), (x,), (f"{name}.r1",)),
            GraphOp(UNCOVERED, None, "Transpose", (f"{name}.transpose",), (f"{name}.r1",), (f"{name}.t",),
                    SHUFFLE_NOTE, five),
            GraphOp(FREE, None, "Reshape", (f"{name}.reshape2",), (f"{name}.t",), (name,)))


def _concat(name: str, inputs: tuple[str, ...], xs: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[GraphOp, ...] | None:
    """Two equal maps joined on channels; unequal ones go through ONNX (uncovered there)."""
    if len(xs) != 4 or out_shape != (xs[0], 2 * xs[1], xs[2], xs[3]):
        return None
    return (GraphOp(OP, _spec("concat", xs, parts=2), "Concat", (name,), inputs, (name,)),)


__all__ = ["KINDS", "GraphNet", "net_graph"]
