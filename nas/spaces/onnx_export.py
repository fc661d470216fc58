"""`Net` -> ONNX model bytes, written node by node (no tracing: thousands of models in minutes).

Batch-norm is folded into the convolution before it (as exporters in eval mode and runtimes do);
everything else maps one layer to one ONNX node, except the channel shuffle (Reshape, Transpose,
Reshape) and the standalone batch-norm (BatchNormalization).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nas.spaces.network import BN_EPS, Layer, Net

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime >= 1.10


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
# reads small constants' values and only the shape of larger ones (`device_tables.graph._const_array`).
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
    graph = helper.make_graph(
        writer.nodes, "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(net.input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(net.shape(last)))],
        initializer=writer.inits,
    )
    model = helper.make_model(graph, producer_name="hwlat", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=doc)
    model.ir_version = IR_VERSION
    return model


class _NodeWriter:
    """A model's nodes and initializers, written layer by layer (with the weights' values, or their
    shapes only when ``values`` is false)."""

    def __init__(self, values: bool):
        import onnx

        self.onnx = onnx
        self.values = values
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> None:
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, name=name, **attrs))

    def const(self, name: str, arr) -> str:
        """Add an initializer `name` holding `arr` (or, given a weight's shape, shaped like it)."""
        if isinstance(arr, tuple):  # a weight's shape (values=False)
            if math.prod(arr) > SHAPES_ONLY_VALUES:
                t = self.onnx.TensorProto()
                t.name, t.data_type = name, self.onnx.TensorProto.FLOAT
                t.dims.extend(arr)
                self.inits.append(t)
                return name
            arr = np.zeros(arr, np.float32)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
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
        else:
            raise ValueError(f"unknown activation {kind!r}")

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
            self.node("Gemm", [ins[0], self.const(f"{name}.W", self.param(layer, "W")),
                               self.const(f"{name}.b", self.param(layer, "b"))], [name], name, transB=1)
        elif layer.kind == "shuffle":
            self.shuffle(layer)
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
