"""ONNX nodes -> `GraphOp`s: the mapping of each node (or multi-node pattern) to the op vocabulary.

CNN layers map as they are; transformer tensors follow the token view: a tensor of rank other than
4 has its features on the last axis and is (B*T, C) for linear, layernorm, softmax and gather, and
(B*T, C, 1, 1) for elementwise ops and copies. Used by `hwlat.device_tables.graph.extract`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from hwlat.device_tables.errors import ModelError, OpSpecError
from hwlat.device_tables.graph import FREE, OP, SHUFFLE_NOTE, UNCOVERED, GraphOp, ShapeOnly, node_name as _name
from hwlat.device_tables.ops import BASE_OPS, OpSpec
from hwlat.device_tables.patterns import Match, find_patterns

# ONNX ops that only move or relabel data, or compute shapes: no kernel time of their own.
FREE_OPS = frozenset({
    "Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Shape", "Constant", "ConstantOfShape",
    "Dropout", "Cast", "Size", "Range",
})
ACTIVATION_OPS = {"Relu": "relu", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid"}
# Elementwise ops outside the vocabulary, costed as the nearest one: one pass of a transcendental
# function (sigmoid) or of cheap arithmetic (relu).
NEAREST_UNARY = {"Erf": "sigmoid", "Tanh": "sigmoid", "Exp": "sigmoid", "Log": "sigmoid", "Softplus": "sigmoid",
                 "Sin": "sigmoid", "Cos": "sigmoid", "Sqrt": "relu", "Reciprocal": "relu", "Neg": "relu",
                 "Abs": "relu", "Not": "relu", "LeakyRelu": "relu", "Elu": "relu"}
# Binary (and ternary) elementwise ops of activations: the cost class of `add` over the output.
BINARY = frozenset({"Add", "Sum", "Sub", "Mul", "Div", "Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
                    "And", "Or", "Xor", "Max", "Min", "Mod", "Pow"})
COPIES = frozenset({"Slice", "Expand", "Tile", "Split", "Gather"})
# Ops of a model quantised in ONNX (onnxruntime.quantization's QDQ, QOperator and dynamic formats), besides QLinear*.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                           "MatMulInteger", "QGemm", "DynamicQuantizeMatMul"})


class OnnxMapper:
    """Walks the nodes once; multi-node patterns (MatMul+Add bias, x*sigmoid(x), decomposed LayerNorm
    and GELU) become single ops."""

    def __init__(self, nodes, outputs, shapes, consts, opset: int = 17):
        self.nodes, self.shapes, self.consts, self.opset = list(nodes), shapes, consts, opset
        self.producers: dict[str, Any] = {}
        self.readers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for o in node.output:
                self.producers[o] = node
            for i in dict.fromkeys(node.input):  # x * x reads x once
                if i:
                    self.readers.setdefault(i, []).append(node)
        self.graph_outputs = set(outputs)
        self.skip: set[int] = set()
        self.dead: set[str] = set()  # tensors computed from constants and shapes only
        self.patterns: dict[int, Match] = {}
        self.order = {id(n): i for i, n in enumerate(self.nodes)}

    def run(self) -> list[GraphOp]:
        for match in find_patterns(self.nodes, self):
            first = min(match.nodes, key=lambda n: self.order[id(n)])
            self.patterns[id(first)] = match
            self.skip.update(id(n) for n in match.nodes if n is not first)
        ops: list[GraphOp] = []
        for idx, node in enumerate(self.nodes):
            if id(node) in self.skip:
                continue
            acts = [i for i in node.input if i and self._is_activation(i)]
            if node.op_type in FREE_OPS or not acts:
                if not acts:
                    self.dead.update(node.output)
                ops.append(GraphOp(FREE, None, node.op_type, (_name(node, idx),), tuple(acts), tuple(node.output)))
                continue
            try:
                if id(node) in self.patterns:
                    op = self._pattern(self.patterns[id(node)], node, idx)
                else:
                    op = self._map(node, idx, acts)
            except OpSpecError as exc:
                op = self._uncovered(node, idx, acts, f"no op configuration fits ({exc})")
            except (TypeError, ValueError, IndexError) as exc:  # attributes of the wrong type, missing inputs (a corrupt file)
                raise ModelError(f"node {_name(node, idx)!r} ({node.op_type}) has malformed attributes ({exc}); "
                                 "export the model again") from None
            ops.append(op)
        return ops

    # ---- the graph as the pattern matchers see it (`patterns.GraphView`) -----------------
    def users(self, name: str) -> list[Any]:
        return self.readers.get(name, [])

    def producer(self, name: str) -> Any:
        return self.producers.get(name)

    def scalar(self, name: str) -> float | None:
        c = self.consts.get(name)
        if c is None or isinstance(c, ShapeOnly) or c.size != 1:
            return None
        return float(c.ravel()[0])

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def is_output(self, name: str) -> bool:
        return name in self.graph_outputs

    def reduce_axes(self, node) -> list[int] | None:
        """The axes a Reduce* node reduces over, made non-negative; None where unknown or all."""
        shape = self._shape(node.input[0])
        axes = self._attr(node, "axes", None)
        if axes is None and len(node.input) > 1 and node.input[1] in self.consts:
            axes = [int(a) for a in self.consts[node.input[1]].ravel()]
        if shape is None or not axes:
            return None
        return sorted(int(a) % len(shape) for a in axes)

    # ---- helpers ------------------------------------------------------------------------
    def _is_activation(self, name: str) -> bool:
        if name in self.consts or name in self.dead:
            return False
        node = self.producers.get(name)
        return node is None or node.op_type not in ("Shape", "Size")

    def _shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def _const_like(self, name: str) -> Any:
        """A constant, or a tensor computed from constants only (a transposed weight) as its shape."""
        if name in self.consts:
            return self.consts[name]
        shape = self._shape(name)
        return ShapeOnly(shape) if name in self.dead and shape is not None else None

    def _attr(self, node, key: str, default: Any = None) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == key:
                return helper.get_attribute_value(a)
        return default

    def _uncovered(self, node, idx, acts, note: str, moves: Sequence[int] = ()) -> GraphOp:
        return GraphOp(UNCOVERED, None, node.op_type, (_name(node, idx),), tuple(acts), tuple(node.output), note,
                       tuple(int(d) for d in moves))

    def _op(self, spec: OpSpec, node, idx, acts, outputs=None, nodes=None, onnx_op=None, note="") -> GraphOp:
        out = tuple(outputs if outputs is not None else node.output[:1])
        for o in out:  # fill shapes inference could not compute from the spec we built
            if self.shapes.get(o) is None:
                self.shapes[o] = spec.output_shape
        return GraphOp(OP, spec, onnx_op or node.op_type, tuple(nodes or (_name(node, idx),)), tuple(acts), out, note)

    # ---- the mapping --------------------------------------------------------------------
    def _map(self, node, idx, acts) -> GraphOp:
        t = node.op_type
        if t in QUANTIZED_OPS or t.startswith("QLinear"):
            return self._uncovered(node, idx, acts, f"ONNX op {t} is of a model quantised in ONNX; hwlat reads float "
                                   "models: give it the float model (int8 tables and --precision int8 quantise it)")
        x = acts[0]
        xs = self._shape(x)
        if xs is None:
            return self._uncovered(node, idx, acts, f"input {x!r} has no static shape after shape inference")
        if t == "Conv":
            return self._conv(node, idx, acts, xs)
        if t in ("Gemm", "MatMul"):
            return self._matmul(node, idx, acts, xs)
        if t == "BatchNormalization":
            if len(xs) != 4:
                return self._uncovered(node, idx, acts, f"BatchNormalization on rank-{len(xs)} input")
            return self._op(OpSpec.make("bn", xs), node, idx, acts[:1])
        if t in ACTIVATION_OPS:
            if t == "Sigmoid":
                silu = self._silu(node, idx, x, xs)
                if silu is not None:
                    return silu
            return self._elementwise(ACTIVATION_OPS[t], node, idx, acts, xs)
        if t == "Gelu":
            tanh = self._attr(node, "approximate", b"none")
            return self._elementwise("gelu", node, idx, acts, xs, tanh=(tanh.decode() if isinstance(tanh, bytes) else tanh) == "tanh")
        if t == "Clip":
            lo, hi = self._clip_bounds(node)
            if lo == 0 and hi == 6:
                return self._elementwise("relu6", node, idx, acts[:1], xs)
            if lo == 0 and hi is None:
                return self._elementwise("relu", node, idx, acts[:1], xs, note="Clip(0, inf) as relu")
            return self._elementwise("relu6", node, idx, acts[:1], xs, note=f"Clip({lo}, {hi}) costed as relu6")
        if t in ("AveragePool", "MaxPool"):
            return self._pool(node, idx, acts, xs)
        if t == "GlobalAveragePool":
            return self._op(OpSpec.make("globalavgpool", _as4(xs)), node, idx, acts)
        if t in ("ReduceMean", "ReduceSum", "ReduceMax"):
            return self._reduce(node, idx, acts, xs)
        if t == "Softmax":
            return self._softmax(node, idx, acts, xs)
        if t == "LayerNormalization":
            return self._layernorm(node, idx, acts, xs)
        if t == "Transpose":
            return self._transpose(node, idx, acts, xs)
        if t == "Concat":
            return self._concat(node, idx, acts, xs)
        if t == "Gather" and x == node.input[1] and node.input[0] not in acts:
            return self._gather(node, idx, acts, xs)
        if t in COPIES:
            return self._copy(node, idx, acts, xs)
        if t in ("Resize", "Upsample", "Pad"):
            mode = self._attr(node, "mode", b"nearest" if t != "Pad" else b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            return self._copy(node, idx, acts, xs, note=f"{t} ({mode}) priced as a copy of its output")
        if t == "Pow" and acts == [node.input[0]]:
            return self._elementwise("relu", node, idx, acts, xs, note="Pow by a constant costed as relu (nearest elementwise)")
        if t in BINARY:
            return self._binary(node, idx, acts, xs)
        if t in NEAREST_UNARY:
            op = NEAREST_UNARY[t]
            return self._elementwise(op, node, idx, acts[:1], xs, note=f"{t} costed as {op} (nearest elementwise)")
        return self._uncovered(node, idx, acts, f"ONNX op {t} is not in the op vocabulary")

    def _conv(self, node, idx, acts, xs) -> GraphOp:
        w = self.consts.get(node.input[1])
        ws = tuple(w.shape) if w is not None else self._shape(node.input[1])
        if len(xs) != 4 or ws is None or len(ws) != 4:
            return self._uncovered(node, idx, acts, "only 2-D convolutions with constant weights are covered")
        cout, cin_g, kh, kw = (int(v) for v in ws)
        if kh != kw:
            return self._uncovered(node, idx, acts, f"non-square kernel {kh}x{kw}")
        group = int(self._attr(node, "group", 1))
        strides = list(self._attr(node, "strides", [1, 1]))
        dil = list(self._attr(node, "dilations", [1, 1]))
        if strides[0] != strides[1] or dil[0] != dil[1]:
            return self._uncovered(node, idx, acts, f"unequal strides {strides} or dilations {dil}")
        bias = len(node.input) > 2 and bool(node.input[2])
        cin = xs[1]
        out_shape = self._shape(node.output[0])
        xs, pad, note = self._padding(node, xs, kh, strides[0], dil[0], out_shape)
        if xs is None:
            return self._uncovered(node, idx, acts, note)
        if group == cin and cout == cin and cin > 1:
            spec = OpSpec.make("dwconv2d", xs, kernel=kh, stride=strides[0], padding=pad, dilation=dil[0], bias=bias)
        elif group == 1 and kh == 1 and pad == 0:
            spec = OpSpec.make("pwconv2d", xs, cout=cout, stride=strides[0], bias=bias)
        else:
            spec = OpSpec.make("conv2d", xs, cout=cout, kernel=kh, stride=strides[0], padding=pad, dilation=dil[0],
                               groups=group, bias=bias)
        if out_shape is not None and spec.output_shape != out_shape:
            return self._uncovered(node, idx, acts, f"output shape {out_shape} differs from the op's {spec.output_shape}")
        return self._op(spec, node, idx, acts[:1], note=note)

    def _padding(self, node, xs, k, stride, dil, out_shape) -> tuple[tuple[int, ...] | None, int, str]:
        """(input shape, padding, note) of the symmetric window op that computes `node`'s output: its
        own padding; else a symmetric one giving the same output; else (pads unequal, SAME with an even
        kernel, ceil_mode) the least pad on an input grown to the padded size the runtime reads.
        (None, 0, why) where it cannot tell (pads not 2-D, no static output shape)."""
        auto = self._attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        span = dil * (k - 1) + 1
        if stride < 1:  # a corrupt file: the op's spec names the stride
            return xs, 0, ""
        pads = onnx_pads(auto, self._attr(node, "pads", [0, 0, 0, 0]), xs[2:], [k, k], [stride, stride], [dil, dil])
        if len(pads) != 4:
            return None, 0, f"pads {pads} not 2-D"
        if len(set(pads)) == 1 and (out_shape is None or _window_out(xs[2:], pads[0], span, stride) == tuple(out_shape[2:])):
            return xs, pads[0], ""
        if out_shape is None:
            return None, 0, f"pads {pads} with no static output shape"
        out = tuple(out_shape[2:])
        for cand in sorted(set(pads)):
            if _window_out(xs[2:], cand, span, stride) == out:
                return xs, cand, f"asymmetric pads {pads} costed as symmetric {cand}"
        pad = min(pads)
        padded = [max(h + pads[i] + pads[i + 2], (o - 1) * stride + span) for i, (h, o) in enumerate(zip(xs[2:], out))]
        grown = tuple(xs[:2]) + tuple(p - 2 * pad for p in padded)
        ceil = " in ceil_mode" if self._attr(node, "ceil_mode", 0) else ""
        return grown, pad, (f"pads {pads}{ceil} costed as padding {pad} of a {grown[2]}x{grown[3]} input "
                            "(the padded size the runtime reads)")

    # ---- linear algebra -----------------------------------------------------------------
    def _matmul(self, node, idx, acts, xs) -> GraphOp:
        """x @ W with a constant W -> linear (on tokens: (B*T, C)); two activations -> matmul."""
        t = node.op_type
        if len(acts) == 2:
            if t == "Gemm":
                return self._uncovered(node, idx, acts, "Gemm of two activations")
            return self._batched(node, idx, acts)
        w = self._const_like(node.input[1])
        if acts[0] != node.input[0] or w is None:
            return self._uncovered(node, idx, acts, f"{t} of a constant by an activation (only x @ W with constant W)")
        if w.ndim != 2:
            return self._batched(node, idx, [node.input[0], node.input[1]], note="constant right operand")
        if len(xs) < 2:
            return self._uncovered(node, idx, acts, f"{t} on a rank-{len(xs)} input")
        rows = (math.prod(xs[:-1]), xs[-1])
        note = "" if len(xs) == 2 else f"rank-{len(xs)} input viewed as {rows} tokens x features"
        if t == "Gemm":
            if int(self._attr(node, "transA", 0)):
                return self._uncovered(node, idx, acts, "Gemm with transA")
            cout = int(w.shape[0] if int(self._attr(node, "transB", 0)) else w.shape[1])
            bias = len(node.input) > 2 and bool(node.input[2])
            return self._op(OpSpec.make("linear", xs, cout=cout, bias=bias), node, idx, acts)
        cout = int(w.shape[1])
        users = self.users(node.output[0])
        if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in self.graph_outputs:
            add = users[0]
            other = [i for i in add.input if i != node.output[0]]
            b = self._const_like(other[0]) if len(other) == 1 else None
            if b is not None and b.size == cout:
                self.skip.add(id(add))
                spec = OpSpec.make("linear", rows, cout=cout, bias=True)
                return self._op(spec, node, idx, acts, outputs=add.output[:1],
                                nodes=(_name(node, idx), add.name or "Add"), onnx_op="MatMul+Add", note=note)
        return self._op(OpSpec.make("linear", rows, cout=cout, bias=False), node, idx, acts, note=note)

    def _batched(self, node, idx, operands, note: str = "") -> GraphOp:
        """A @ B of two tensors of rank >= 2 as (B, H, M, K) @ (B, H, K, N): batch dimensions
        broadcast, merged in front or padded with 1s to two."""
        import numpy as np

        a, b = (self._shape(o) or getattr(self.consts.get(o), "shape", None) for o in operands)
        if a is None or b is None or len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
            return self._uncovered(node, idx, operands, f"MatMul of shapes {a} and {b} (both of rank 2 or more)")
        try:
            batch = tuple(np.broadcast_shapes(a[:-2], b[:-2]))
        except ValueError:
            return self._uncovered(node, idx, operands, f"MatMul batch dimensions {a[:-2]} and {b[:-2]} do not broadcast")
        two = (math.prod(batch[:-1]), batch[-1]) if len(batch) >= 2 else (1,) * (2 - len(batch)) + batch
        if a[:-2] != b[:-2]:
            note = (note + "; " if note else "") + f"batch dims {a[:-2]} and {b[:-2]} broadcast to {batch}"
        acts = [o for o in operands if self._is_activation(o)]
        return self._op(OpSpec.make("matmul", two + a[-2:], n=b[-1]), node, idx, acts, note=note)

    # ---- transformer ops ----------------------------------------------------------------
    def _softmax(self, node, idx, acts, xs) -> GraphOp:
        """Softmax over the last axis (before opset 13: over the axes from `axis` on, flattened)."""
        axis = int(self._attr(node, "axis", 1 if self.opset < 13 else -1)) % len(xs)
        if self.opset < 13:
            rows = (math.prod(xs[:axis]), math.prod(xs[axis:]))
        elif axis == len(xs) - 1:
            rows = (math.prod(xs[:-1]), xs[-1])
        else:
            return self._uncovered(node, idx, acts, f"Softmax over axis {axis} of a rank-{len(xs)} tensor "
                                   "(only the last axis is covered)")
        return self._op(OpSpec.make("softmax", rows), node, idx, acts[:1])

    def _layernorm(self, node, idx, acts, xs) -> GraphOp:
        axis = int(self._attr(node, "axis", -1)) % len(xs)
        rows = (math.prod(xs[:axis]), math.prod(xs[axis:]))
        note = "" if axis == len(xs) - 1 else f"normalised over the last {len(xs) - axis} axes, as {rows}"
        if len(node.input) < 3 or not node.input[2]:
            note = (note + "; " if note else "") + "without bias, costed with one"
        return self._op(OpSpec.make("layernorm", rows), node, idx, acts[:1], note=note)

    def _pattern(self, m: Match, node, idx) -> GraphOp:
        """A decomposed LayerNorm or GELU (`patterns`) as its one op."""
        xs = self._shape(m.x)
        names = tuple(_name(n, self.order[id(n)]) for n in m.nodes)
        if xs is None:
            return self._uncovered(node, idx, [m.x], f"input {m.x!r} of a {m.note} has no static shape")
        if m.op == "layernorm":
            if m.attrs["axis"] != len(xs) - 1:
                return self._uncovered(node, idx, [m.x], f"{m.note} over axis {m.attrs['axis']} (only the last axis)")
            spec = OpSpec.make("layernorm", (math.prod(xs[:-1]), xs[-1]))
        else:
            spec = OpSpec.make("gelu", _as4(xs), tanh=m.attrs["tanh"])
        return self._op(spec, node, idx, [m.x], outputs=(m.out,), nodes=names, onnx_op=m.op, note=m.note)

    def _gather(self, node, idx, acts, xs) -> GraphOp:
        """An embedding lookup: rows of a constant table picked by activation indices."""
        table = self._const_like(node.input[0])
        if table is None or table.ndim != 2 or int(self._attr(node, "axis", 0)) % 2 != 0:
            return self._copy(node, idx, acts, xs)
        spec = OpSpec.make("gather", (max(1, math.prod(xs)), table.shape[1]), vocab=table.shape[0])
        return self._op(spec, node, idx, acts)

    def _copy(self, node, idx, acts, xs, note: str = "") -> GraphOp:
        """A data copy making the node's output (a Split: one copy of its whole input)."""
        t = node.op_type
        if t == "Split":
            out, note = xs, f"Split into {len(node.output)} parts priced as one copy of its input"
        else:
            out = self._shape(node.output[0])
        if out is None:
            return self._uncovered(node, idx, acts, f"{t} output has no static shape after shape inference")
        outputs = node.output if t == "Split" else node.output[:1]
        return self._op(OpSpec.make("copy", _as4(out)), node, idx, acts[:1] if t != "Gather" else acts,
                        outputs=outputs, note=note)

    def _transpose(self, node, idx, acts, xs) -> GraphOp:
        """A permutation as a rank-4 `transpose` (unit axes dropped, axes that stay together merged,
        1s in front); one that moves only unit axes is free; one still above rank 4 is a `copy`."""
        perm = [int(p) for p in self._attr(node, "perm", list(range(len(xs)))[::-1])]
        dims, p = _merged_perm(xs, perm)
        if p == sorted(p):
            return GraphOp(FREE, None, node.op_type, (_name(node, idx),), tuple(acts), tuple(node.output),
                           "moves only axes of size 1")
        if len(xs) == 4:
            return self._op(OpSpec.make("transpose", xs, perm="".join(map(str, perm))), node, idx, acts)
        if len(xs) == 5 and perm == [0, 2, 1, 3, 4]:
            # A CNN's channel shuffle stays uncovered with `GraphOp.moves`: a predictor prices it as a
            # copy of the same tensor (CNN tables measured no transposes).
            return self._uncovered(node, idx, acts, SHUFFLE_NOTE, moves=xs)
        if len(dims) > 4:
            return self._copy(node, idx, acts, xs, note=f"rank-{len(dims)} permutation priced as a copy")
        pad = 4 - len(dims)
        shape, perm4 = (1,) * pad + dims, list(range(pad)) + [q + pad for q in p]
        return self._op(OpSpec.make("transpose", shape, perm="".join(map(str, perm4))), node, idx, acts,
                        note=f"{xs} perm {perm} as {shape} perm {''.join(map(str, perm4))}")

    # ---- elementwise --------------------------------------------------------------------
    def _silu(self, node, idx, x, xs) -> GraphOp | None:
        """Sigmoid(x) feeding only Mul(x, sigmoid(x)): SiLU/swish as one op, when the vocabulary has it."""
        users = self.users(node.output[0])
        if "silu" not in BASE_OPS or len(users) != 1 or users[0].op_type != "Mul":
            return None
        mul = users[0]
        if set(mul.input) != {x, node.output[0]} or node.output[0] in self.graph_outputs:
            return None
        self.skip.add(id(mul))
        spec = OpSpec.make("silu", _as4(xs))
        return self._op(spec, node, idx, [x], outputs=mul.output[:1], nodes=(_name(node, idx), mul.name or "Mul"),
                        onnx_op="Sigmoid+Mul", note="" if len(xs) == 4 else f"rank-{len(xs)} input viewed as {_as4(xs)}")

    def _elementwise(self, op: str, node, idx, acts, xs, note: str = "", **attrs: Any) -> GraphOp:
        shape = _as4(xs)
        if shape != tuple(xs):
            note = (note + "; " if note else "") + f"rank-{len(xs)} input viewed as {shape}"
        return self._op(OpSpec.make(op, shape, **attrs), node, idx, acts[:1], note=note)

    def _clip_bounds(self, node) -> tuple[float | None, float | None]:
        lo = hi = None
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.consts[node.input[1]].ravel()[0]) if node.input[1] in self.consts else None
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.consts[node.input[2]].ravel()[0]) if node.input[2] in self.consts else None
        if lo is None:
            lo = self._attr(node, "min", None)
        if hi is None:
            hi = self._attr(node, "max", None)
        if hi is not None and hi > 1e30:
            hi = None
        return lo, hi

    def _pool(self, node, idx, acts, xs) -> GraphOp:
        t = node.op_type
        k = list(self._attr(node, "kernel_shape", []))
        strides = list(self._attr(node, "strides", [1] * len(k)))
        if len(xs) != 4 or len(k) != 2 or k[0] != k[1] or strides[0] != strides[1]:
            return self._uncovered(node, idx, acts, f"{t} with kernel {k}, strides {strides}: only square 2-D pools")
        if t == "MaxPool" and any(d != 1 for d in self._attr(node, "dilations", [1, 1])):
            return self._uncovered(node, idx, acts, "dilated MaxPool")
        out_shape = self._shape(node.output[0])
        xs, pad, note = self._padding(node, xs, k[0], strides[0], 1, out_shape)
        if xs is None:
            return self._uncovered(node, idx, acts, note)
        if t == "AveragePool":
            spec = OpSpec.make("avgpool", xs, kernel=k[0], stride=strides[0], padding=pad,
                               count_include_pad=bool(self._attr(node, "count_include_pad", 0)))
        else:
            spec = OpSpec.make("maxpool", xs, kernel=k[0], stride=strides[0], padding=pad)
        if out_shape is not None and spec.output_shape != out_shape:
            return self._uncovered(node, idx, acts, f"output shape {out_shape} differs from the op's {spec.output_shape}")
        return self._op(spec, node, idx, acts[:1], note=note)


    def _reduce(self, node, idx, acts, xs) -> GraphOp:
        """A mean over H and W is a global average pool; a reduction over other axes is priced as one
        over a (1, kept, reduced, 1) view."""
        axes = self.reduce_axes(node) or list(range(len(xs)))
        if node.op_type == "ReduceMean" and len(xs) == 4 and axes == [2, 3]:
            return self._op(OpSpec.make("globalavgpool", xs), node, idx, acts[:1],
                            note="" if self._attr(node, "keepdims", 1) else "ReduceMean without keepdims")
        reduced = math.prod(xs[a] for a in axes)
        view = (1, math.prod(xs) // reduced, reduced, 1)
        return self._op(OpSpec.make("globalavgpool", view), node, idx, acts[:1],
                        note=f"{node.op_type} over axes {axes} of {xs} priced as a global pool of {view}")

    def _binary(self, node, idx, acts, xs) -> GraphOp:
        """Elementwise ops of two tensors: x + x (add), x * c (scale), the squeeze-excite product
        (mul); the rest (x + c, x - y, where, compare, broadcast sums) in add's cost class over the output."""
        t = node.op_type
        shapes = [self._shape(a) for a in acts]
        if None in shapes:
            return self._uncovered(node, idx, acts, f"{t} of shapes {shapes}: no static shape after shape inference")
        const = next((self.consts[i] for i in node.input if i in self.consts), None)
        if len(acts) == 2 and t in ("Add", "Sum") and shapes[0] == shapes[1]:
            return self._op(OpSpec.make("add", _as4(xs)), node, idx, acts)
        scalable = len(acts) == 1 and (t == "Mul" or t == "Div" and acts[0] == node.input[0])
        if scalable and const is not None and _per_channel(tuple(const.shape), xs):
            return self._op(OpSpec.make("scale", _as4(xs)), node, idx, acts,
                            note="" if len(xs) == 4 else f"rank-{len(xs)} input viewed as {_as4(xs)}")
        if t == "Mul" and len(acts) == 2 and all(len(s) == 4 for s in shapes):
            big, small = (0, 1) if math.prod(shapes[0]) >= math.prod(shapes[1]) else (1, 0)
            if shapes[small] == shapes[big][:2] + (1, 1):
                return self._op(OpSpec.make("mul", shapes[big]), node, idx, [acts[big], acts[small]])
        out = self._shape(node.output[0])
        if out is None:
            return self._uncovered(node, idx, acts, f"{t} output has no static shape after shape inference")
        what = "and a constant" if len(acts) == 1 else "of activations"
        note = f"{t} {what} costed as add" + (f" over the broadcast output {out}" if any(s != out for s in shapes) else "")
        return self._op(OpSpec.make("add", _as4(out)), node, idx, acts, note=note)

    def _concat(self, node, idx, acts, xs) -> GraphOp:
        """Equal NCHW maps joined on channels: concat; token tensors (other ranks, constant parts such
        as a class token): a copy of the output; other NCHW maps (a UNet's skip connection with fewer
        channels): a copy of the output that reads every part (no table measured such a concat)."""
        shapes = [self._shape(a) for a in acts]
        axis = int(self._attr(node, "axis", 1))
        if len(xs) != 4:
            return self._copy(node, idx, acts, xs, note=f"Concat on axis {axis} priced as a copy of its output")
        if len(acts) == len(node.input) and len(acts) >= 2 and all(s == shapes[0] for s in shapes) and axis in (1, -3):
            return self._op(OpSpec.make("concat", shapes[0], parts=len(acts)), node, idx, acts)
        out = self._shape(node.output[0])
        if out is None:
            return self._uncovered(node, idx, acts, f"Concat of shapes {shapes}: its output has no static shape after shape inference")
        return self._op(OpSpec.make("copy", out), node, idx, acts,
                        note=f"Concat on axis {axis} of shapes {shapes} priced as a copy of its output")


def onnx_pads(auto_pad: str, pads: Sequence[int], sides: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int]) -> list[int]:
    """A 2-D window's pads [top, left, bottom, right] as ONNX runs it: `pads` as given (NOTSET), none (VALID),
    or those `auto_pad` SAME sets to cover each side of `sides` in ceil(side / stride) windows, an odd one
    at the end (SAME_UPPER) or the start (SAME_LOWER)."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n) for n, k, s, d in zip(sides, kernel, strides, dilations)]
        begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
        return begins + [t - b for t, b in zip(totals, begins)]
    if auto_pad == "VALID":
        return [0] * 2 * len(sides)
    return [int(p) for p in pads]


def _window_out(sides: Sequence[int], pad: int, span: int, stride: int) -> tuple[int, ...]:
    """The output sides of a window of `span` (dilated kernel) sliding by `stride` over `sides` padded by `pad`."""
    return tuple((h + 2 * pad - span) // stride + 1 for h in sides)


def _per_channel(const_shape: tuple[int, ...], xs: tuple[int, ...]) -> bool:
    """Whether a constant of `const_shape` is a scalar or one value per channel of `xs` (axis 1 of an
    NCHW map, the last axis of a token tensor)."""
    n = math.prod(const_shape)
    if n == 1:
        return True
    if len(xs) == 4:
        return n == xs[1] and (len(const_shape) <= 1 or const_shape[-2:] == (1, 1))
    return n == xs[-1] and const_shape[-1] == xs[-1]


def _merged_perm(shape: Sequence[int], perm: Sequence[int]) -> tuple[tuple[int, ...], list[int]]:
    """(dims, perm) of the same permutation with unit axes dropped and neighbours that stay
    neighbours merged: (1, 197, 1, 3, 64) perm (3, 1, 2, 0, 4) -> (197, 192) perm (1, 0)...
    """
    kept = [p for p in perm if shape[p] != 1]
    rank = {a: i for i, a in enumerate(sorted(kept))}
    order = [rank[p] for p in kept]  # output axis i reads input axis order[i] of the unit-free tensor
    dims = [shape[a] for a in sorted(kept)]
    runs: list[list[int]] = []
    for a in order:
        if runs and runs[-1][-1] + 1 == a:
            runs[-1].append(a)
        else:
            runs.append([a])
    starts = sorted(r[0] for r in runs)
    merged = tuple(math.prod(dims[a] for a in next(r for r in runs if r[0] == s)) for s in starts)
    return merged, [starts.index(r[0]) for r in runs]


def _as4(shape: Sequence[int]) -> tuple[int, ...]:
    """Elementwise ops are NCHW in the vocabulary: a token tensor (..., C) is (rows, C, 1, 1)."""
    s = tuple(int(d) for d in shape)
    if len(s) == 4:
        return s
    if len(s) < 2:
        return (1, math.prod(s), 1, 1)
    return (math.prod(s[:-1]), s[-1], 1, 1)
