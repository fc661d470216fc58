"""`Net` -> ONNX model bytes, written node by node (no tracing: thousands of models in minutes).

Batch-norm is folded into the convolution before it (as exporters in eval mode and runtimes do);
everything else maps one layer to one ONNX node, except the channel shuffle (Reshape, Transpose,
Reshape) and the standalone batch-norm (BatchNormalization). Transformer layers are written as
torch's TorchScript exporter writes them at opset 17 with static shapes: Linear on tokens as MatMul
+ Add, GELU as Div/Erf/Add/Mul/Mul (tanh form: Mul/Mul/Mul/Add/Mul/Tanh/Add/Mul/Mul), SiLU as
Sigmoid + Mul, LayerNormalization, attention as MatMul/Reshape/Transpose/Softmax (`_attention`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hwlat.nas.spaces.network import BN_EPS, LN_EPS, Layer, Net

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime >= 1.10
# Layer kinds written by a `_NodeWriter._<kind>` method.
TOKEN_KINDS = ("tokens", "prepend", "pos", "embed", "layernorm", "attention", "select", "unfold", "fold")


def fold_bn(layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
    """Conv weights and bias with the following batch-norm folded in (computed in float64)."""
    p = layer.params
    w = p["W"].astype(np.float64)
    b = p["b"].astype(np.float64) if "b" in p else None
    if not layer.attrs.get("bn"):
        return p["W"], p.get("b")
    scale = p["bn_gamma"].astype(np.float64) / np.sqrt(p["bn_var"].astype(np.float64) + BN_EPS)
    w = w * scale[:, None, None, None]
    b = (0.0 if b is None else b) - p["bn_mean"].astype(np.float64)
    b = b * scale + p["bn_beta"].astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def net_to_onnx(net: Net, doc: str = "") -> bytes:
    """Serialize `net` as an ONNX model with input ``input`` and output ``logits``."""
    return net_to_proto(net, doc).SerializeToString()


# Weights up to this many values get a real (zero) array in a shapes-only model: the graph extractor
# reads small constants' values and only the shape of larger ones (`hwlat.device_tables.graph._const_array`).
SHAPES_ONLY_VALUES = 4096


def net_to_proto(net: Net, doc: str = "", values: bool = True):
    """`net` as an ONNX ``ModelProto``; with ``values=False`` the weights' values are left out (large
    ones are shapes only, small ones zeros): a model to read the graph from, not to run, built in a
    fraction of the time."""
    from onnx import TensorProto, helper

    writer = _NodeWriter(values)
    for layer in net.layers:
        writer.layer(layer)
    # Rename the last tensor to `logits`.
    last = net.output
    for node in writer.nodes:
        node.output[:] = ["logits" if o == last else o for o in node.output]
    in_type = TensorProto.INT64 if net.input_dtype == "int64" else TensorProto.FLOAT
    # Filled in place (helper.make_graph and make_model would copy every weight twice more).
    model = writer.model
    model.ir_version = IR_VERSION
    model.producer_name, model.doc_string = "hwlat", doc
    model.opset_import.append(helper.make_opsetid("", OPSET))
    graph = model.graph
    graph.name = "net"
    graph.node.extend(writer.nodes)
    graph.input.append(helper.make_tensor_value_info("input", in_type, list(net.input_shape)))
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(net.shape(last))))
    return model


class _NodeWriter:
    """A model's nodes and initializers, written layer by layer (with the weights' values, or their
    shapes only when ``values`` is false)."""

    def __init__(self, values: bool):
        import onnx

        self.onnx = onnx
        self.values = values
        self.nodes: list[Any] = []
        self.model = onnx.ModelProto()
        self.inits = self.model.graph.initializer  # weights go straight into the model

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> None:
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, name=name, **attrs))

    def const(self, name: str, arr) -> str:
        """Add an initializer `name` holding `arr` (or, given a weight's shape, shaped like it)."""
        if isinstance(arr, tuple):  # a weight's shape (values=False)
            if math.prod(arr) > SHAPES_ONLY_VALUES:
                t = self.inits.add()
                t.name, t.data_type = name, self.onnx.TensorProto.FLOAT
                t.dims.extend(arr)
                return name
            arr = np.zeros(arr, np.float32)
        arr = np.asarray(arr, order="C")  # (a scalar stays 0-d)
        t = self.inits.add()  # as numpy_helper.from_array writes it, without a copy of the proto
        t.dims.extend(arr.shape)
        t.name, t.data_type = name, self.onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.raw_data = arr.tobytes()
        return name

    def weights(self, layer: Layer) -> tuple[Any, Any]:
        """A conv's weights and bias (None without one), batch-norm folded in; or their shapes."""
        if self.values:
            return fold_bn(layer)
        shapes = layer.param_shapes
        has_bias = "b" in shapes or bool(layer.attrs.get("bn"))
        return shapes["W"], ((shapes["W"][0],) if has_bias else None)

    def param(self, layer: Layer, key: str):
        return layer.params[key] if self.values else layer.param_shapes[key]

    def activation(self, kind: str, x: str, out: str, name: str) -> None:
        if kind == "relu":
            self.node("Relu", [x], [out], name)
        elif kind == "hardswish":
            self.node("HardSwish", [x], [out], name)
        elif kind == "hardsigmoid":
            self.node("HardSigmoid", [x], [out], name, alpha=1.0 / 6.0, beta=0.5)
        elif kind == "silu":
            self.node("Sigmoid", [x], [f"{name}.sigmoid"], f"{name}.sigmoid")
            self.node("Mul", [x, f"{name}.sigmoid"], [out], name)
        elif kind == "gelu":  # x * (erf(x / sqrt 2) + 1) * 0.5
            self.node("Div", [x, self.scalar(f"{name}.sqrt2", math.sqrt(2.0))], [f"{name}.div"], f"{name}.div")
            self.node("Erf", [f"{name}.div"], [f"{name}.erf"], f"{name}.erf")
            self.node("Add", [f"{name}.erf", self.scalar(f"{name}.one", 1.0)], [f"{name}.add"], f"{name}.add")
            self.node("Mul", [x, f"{name}.add"], [f"{name}.mul"], f"{name}.mul")
            self.node("Mul", [f"{name}.mul", self.scalar(f"{name}.half", 0.5)], [out], name)
        elif kind == "gelu_tanh":  # 0.5 * (x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))))
            c = {k: self.scalar(f"{name}.{k}", v) for k, v in
                 (("kappa", 0.044715), ("beta", math.sqrt(2.0 / math.pi)), ("one", 1.0), ("half", 0.5))}
            chain = [("Mul", [x, x], "sq"), ("Mul", [x, "sq"], "cube"), ("Mul", [c["kappa"], "cube"], "kx3"),
                     ("Add", [x, "kx3"], "inner"), ("Mul", [c["beta"], "inner"], "scaled"), ("Tanh", ["scaled"], "tanh"),
                     ("Add", [c["one"], "tanh"], "plus1"), ("Mul", [x, "plus1"], "xp")]
            local = lambda t: t if t in (x, *c.values()) else f"{name}.{t}"  # noqa: E731
            for op, ins, o in chain:
                self.node(op, [local(i) for i in ins], [local(o)], local(o))
            self.node("Mul", [c["half"], local("xp")], [out], name)
        else:
            raise ValueError(f"unknown activation {kind!r}")

    def scalar(self, name: str, value: float) -> str:
        """A float32 scalar constant (as the exporter writes Python numbers in an expression)."""
        return self.const(name, np.array(value, np.float32))

    def ints(self, name: str, values) -> str:
        """An int64 constant: a Reshape target, Split sizes, Gather indices."""
        return self.const(name, np.array(values, np.int64))

    def layer(self, layer: Layer) -> None:
        """The node(s) of one layer."""
        a, name, ins = layer.attrs, layer.name, list(layer.inputs)
        if layer.kind == "conv":
            self.conv(layer)
        elif layer.kind == "bn_act":
            self.bn_act(layer)
        elif layer.kind == "act":
            self.activation(a["act"], ins[0], name, name)
        elif layer.kind == "avgpool":
            k, p = a["kernel"], a["padding"]
            self.node("AveragePool", ins, [name], name, kernel_shape=[k, k], strides=[a["stride"]] * 2, pads=[p] * 4,
                      count_include_pad=int(bool(a["count_include_pad"])))
        elif layer.kind == "add":
            self.node("Add", ins, [name], name)
        elif layer.kind == "mul":
            self.node("Mul", ins, [name], name)
        elif layer.kind == "zero":
            c = layer.in_shape[1]
            self.node("Mul", [ins[0], self.const(f"{name}.zeros", np.zeros((1, c, 1, 1), np.float32))], [name], name)
        elif layer.kind == "gap":
            self.node("GlobalAveragePool", ins, [name], name)
        elif layer.kind == "flatten":
            self.node("Flatten", ins, [name], name, axis=1)
        elif layer.kind == "linear":
            self.linear(layer)
        elif layer.kind == "shuffle":
            self.shuffle(layer)
        elif layer.kind == "concat":
            self.node("Concat", ins, [name], name, axis=1)
        elif layer.kind == "div":
            self.node("Div", [ins[0], self.scalar(f"{name}.by", a["by"])], [name], name)
        elif layer.kind in TOKEN_KINDS:
            getattr(self, f"_{layer.kind}")(layer, ins[0], name)
        else:
            raise ValueError(f"no ONNX mapping for layer kind {layer.kind!r}")

    def conv(self, layer: Layer) -> None:
        """A Conv with batch-norm folded in, and its activation (if any) after it."""
        a, name = layer.attrs, layer.name
        w, b = self.weights(layer)
        inputs = [layer.inputs[0], self.const(f"{name}.W", w)] + ([self.const(f"{name}.b", b)] if b is not None else [])
        out = f"{name}.pre" if a["act"] else name
        k, p = a["kernel"], a["padding"]
        self.node("Conv", inputs, [out], name, kernel_shape=[k, k], strides=[a["stride"]] * 2, pads=[p] * 4,
                  group=a["groups"], dilations=[1, 1])
        if a["act"]:
            self.activation(a["act"], out, name, f"{name}.{a['act']}")

    def bn_act(self, layer: Layer) -> None:
        """A standalone BatchNormalization, and its activation (if any) after it."""
        a, name = layer.attrs, layer.name
        out = f"{name}.pre" if a["act"] else name
        stats = [self.const(f"{name}.{key}", self.param(layer, f"bn_{key}"))
                 for key in ("gamma", "beta", "mean", "var")]
        self.node("BatchNormalization", [layer.inputs[0], *stats], [out], name, epsilon=BN_EPS)
        if a["act"]:
            self.activation(a["act"], out, name, f"{name}.{a['act']}")

    def shuffle(self, layer: Layer) -> None:
        """A channel shuffle: Reshape to groups, Transpose them, Reshape back."""
        name, x = layer.name, layer.inputs[0]
        n, c, h, w = layer.in_shape
        g = layer.attrs["groups"]
        s1 = self.const(f"{name}.shape1", np.array([n, g, c // g, h, w], dtype=np.int64))
        s2 = self.const(f"{name}.shape2", np.array([n, c, h, w], dtype=np.int64))
        self.node("Reshape", [x, s1], [f"{name}.r1"], f"{name}.reshape1")
        self.node("Transpose", [f"{name}.r1"], [f"{name}.t"], f"{name}.transpose", perm=[0, 2, 1, 3, 4])
        self.node("Reshape", [f"{name}.t", s2], [name], f"{name}.reshape2")

    def linear(self, layer: Layer) -> None:
        """Gemm on (N, C); on tokens MatMul with the transposed weight, then Add of the bias, as torch
        exports nn.Linear on a rank-3 input; then the activation, if any."""
        name, x, act = layer.name, layer.inputs[0], layer.attrs.get("act")
        out = f"{name}.pre" if act else name
        w, b = self.param(layer, "W"), self.param(layer, "b")
        if len(layer.in_shape) == 2:
            self.node("Gemm", [x, self.const(f"{name}.W", w), self.const(f"{name}.b", b)], [out], name, transB=1)
        else:
            wt = np.ascontiguousarray(w.T) if self.values else w[::-1]
            self.node("MatMul", [x, self.const(f"{name}.W", wt)], [f"{name}.mm"], f"{name}.matmul")
            self.node("Add", [f"{name}.mm", self.const(f"{name}.b", b)], [out], f"{name}.bias")
        if act:
            self.activation(act, out, name, f"{name}.{act}")

    def _tokens(self, layer: Layer, x: str, name: str) -> None:
        n, c, h, w = layer.in_shape
        self.node("Reshape", [x, self.ints(f"{name}.shape", [n, c, h * w])], [f"{name}.flat"], f"{name}.reshape")
        self.node("Transpose", [f"{name}.flat"], [name], name, perm=[0, 2, 1])

    def _prepend(self, layer: Layer, x: str, name: str) -> None:
        self.node("Concat", [self.const(f"{name}.tokens", self.param(layer, "tokens")), x], [name], name, axis=1)

    def _pos(self, layer: Layer, x: str, name: str) -> None:
        table = self.const(f"{name}.table", self.param(layer, "table"))
        n, t, _ = layer.in_shape
        if layer.attrs["gather"]:
            ids = self.ints(f"{name}.ids", np.arange(t)[None, :])
            self.node("Gather", [table, ids], [f"{name}.emb"], f"{name}.gather", axis=0)
            table = f"{name}.emb"
        self.node("Add", [x, table], [name], name)

    def _embed(self, layer: Layer, x: str, name: str) -> None:
        self.node("Gather", [self.const(f"{name}.table", self.param(layer, "table")), x], [name], name, axis=0)

    def _layernorm(self, layer: Layer, x: str, name: str) -> None:
        g, b = (self.const(f"{name}.{k}", self.param(layer, f"ln_{k}")) for k in ("gamma", "beta"))
        self.node("LayerNormalization", [x, g, b], [name], name, axis=-1, epsilon=LN_EPS)

    def _select(self, layer: Layer, x: str, name: str) -> None:
        self.node("Gather", [x, self.ints(f"{name}.index", layer.attrs["index"])], [name], name, axis=1)

    def _unfold(self, layer: Layer, x: str, name: str) -> None:
        """timm's MobileViT unfolding: two Reshape/Transpose pairs and a last Reshape."""
        n, c, h, w = layer.in_shape
        p = layer.attrs["patch"]
        nh, nw = h // p, w // p
        self._reshapes(name, x, [([n * c * nh, p, nw, p], [0, 2, 1, 3]), ([n, c, nh * nw, p * p], [0, 3, 2, 1])],
                       list(layer.out_shape))

    def _fold(self, layer: Layer, x: str, name: str) -> None:
        n, c, h, w = layer.out_shape
        p = layer.attrs["patch"]
        nh, nw = h // p, w // p
        self._reshapes(name, x, [([n, p * p, nh * nw, c], [0, 3, 2, 1]), ([n * c * nh, nw, p, p], [0, 2, 1, 3])],
                       [n, c, h, w])

    def _reshapes(self, name: str, x: str, steps: list[tuple[list[int], list[int]]], last: list[int]) -> None:
        """Reshape then Transpose for each step, and a final Reshape to `last` (output `name`)."""
        for i, (shape, perm) in enumerate(steps):
            self.node("Reshape", [x, self.ints(f"{name}.shape{i}", shape)], [f"{name}.r{i}"], f"{name}.reshape{i}")
            self.node("Transpose", [f"{name}.r{i}"], [f"{name}.t{i}"], f"{name}.transpose{i}", perm=perm)
            x = f"{name}.t{i}"
        self.node("Reshape", [x, self.ints(f"{name}.shape", last)], [name], f"{name}.reshape")

    def _attention(self, layer: Layer, x: str, name: str) -> None:
        """q, k, v projections (as `Net.attention`'s `qkv` says), scores = q k^T scaled (+ a causal
        mask), Softmax, times v, heads merged (Transpose, Reshape), output projection."""
        a = layer.attrs
        n, t, c = layer.in_shape
        h, d = a["heads"], a["head_dim"]
        inner = h * d
        w, b = self.param(layer, "Wqkv"), self.param(layer, "bqkv")
        heads = lambda i: f"{name}.{'qkv'[i]}"  # noqa: E731 (the tensors q, k, v of shape n, h, t, d)
        if a["qkv"] == "separate":
            for i in range(3):
                wi = np.ascontiguousarray(w[i * inner:(i + 1) * inner].T) if self.values else (c, inner)
                bi = b[i * inner:(i + 1) * inner] if self.values else (inner,)
                self._matmul_add(f"{name}.{'qkv'[i]}proj", x, wi, bi)
                self._split_heads(f"{name}.{'qkv'[i]}proj", heads(i), n, t, h, d)
        else:
            wt = np.ascontiguousarray(w.T) if self.values else (c, 3 * inner)
            self._matmul_add(f"{name}.qkv", x, wt, b)
            if a["qkv"] == "split":
                parts = [f"{name}.{p}part" for p in "qkv"]
                self.node("Split", [f"{name}.qkv", self.ints(f"{name}.sizes", [inner] * 3)], parts, f"{name}.split", axis=2)
                for i, part in enumerate(parts):
                    self._split_heads(part, heads(i), n, t, h, d)
            else:
                self.node("Reshape", [f"{name}.qkv", self.ints(f"{name}.shape5", [n, t, 3, h, d])], [f"{name}.qkv5"],
                          f"{name}.reshape5")
                self.node("Transpose", [f"{name}.qkv5"], [f"{name}.qkvT"], f"{name}.permute", perm=[2, 0, 3, 1, 4])
                for i in range(3):
                    self.node("Gather", [f"{name}.qkvT", self.ints(f"{name}.i{i}", i)], [heads(i)], f"{name}.gather{i}",
                              axis=0)
        self.node("Transpose", [heads(1)], [f"{name}.kT"], f"{name}.transpose_k", perm=[0, 1, 3, 2])
        self.node("MatMul", [heads(0), f"{name}.kT"], [f"{name}.scores"], f"{name}.qk")
        if a["scale"] == "mul":
            self.node("Mul", [f"{name}.scores", self.scalar(f"{name}.scale", d ** -0.5)], [f"{name}.scaled"], f"{name}.scale")
        else:
            self.node("Div", [f"{name}.scores", self.scalar(f"{name}.scale", d ** 0.5)], [f"{name}.scaled"], f"{name}.scale")
        scores = f"{name}.scaled"
        if a["causal"]:
            mask = self.const(f"{name}.mask", causal_mask(t))
            self.node("Add", [scores, mask], [f"{name}.masked"], f"{name}.mask")
            scores = f"{name}.masked"
        self.node("Softmax", [scores], [f"{name}.probs"], f"{name}.softmax", axis=-1)
        self.node("MatMul", [f"{name}.probs", heads(2)], [f"{name}.ctx"], f"{name}.pv")
        self.node("Transpose", [f"{name}.ctx"], [f"{name}.ctxT"], f"{name}.merge", perm=[0, 2, 1, 3])
        self.node("Reshape", [f"{name}.ctxT", self.ints(f"{name}.shape3", [n, t, inner])], [f"{name}.merged"],
                  f"{name}.reshape3")
        wo = np.ascontiguousarray(self.param(layer, "Wo").T) if self.values else (inner, c)
        self._matmul_add(name, f"{name}.merged", wo, self.param(layer, "bo"), f"{name}.proj")

    def _matmul_add(self, out: str, x: str, wt, b, node: str = "") -> None:
        """MatMul by a (cin, cout) weight then Add of the bias: torch's export of nn.Linear on tokens."""
        node = node or out
        self.node("MatMul", [x, self.const(f"{node}.W", wt)], [f"{node}.mm"], f"{node}.matmul")
        self.node("Add", [f"{node}.mm", self.const(f"{node}.b", b)], [out], f"{node}.bias")

    def _split_heads(self, x: str, out: str, n: int, t: int, h: int, d: int) -> None:
        """(n, t, h*d) -> (n, h, t, d): view then transpose(1, 2)."""
        self.node("Reshape", [x, self.ints(f"{out}.shape", [n, t, h, d])], [f"{out}.4d"], f"{out}.reshape")
        self.node("Transpose", [f"{out}.4d"], [out], f"{out}.transpose", perm=[0, 2, 1, 3])


def causal_mask(t: int) -> np.ndarray:
    """(1, 1, t, t): 0 where a token may attend (itself and earlier ones), -1e9 after it."""
    return np.triu(np.full((t, t), -1e9, np.float32), k=1)[None, None]
