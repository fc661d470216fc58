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
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, arr) -> str:
        if isinstance(arr, tuple):  # a weight's shape (values=False)
            if math.prod(arr) > SHAPES_ONLY_VALUES:
                t = TensorProto()
                t.name, t.data_type = name, TensorProto.FLOAT
                t.dims.extend(arr)
                inits.append(t)
                return name
            arr = np.zeros(arr, np.float32)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def weights(layer: Layer) -> tuple[Any, Any]:
        if values:
            return fold_bn(layer)
        shapes = layer.param_shapes
        has_bias = "b" in shapes or bool(layer.attrs.get("bn"))
        return shapes["W"], ((shapes["W"][0],) if has_bias else None)

    def param(layer: Layer, key: str):
        return layer.params[key] if values else layer.param_shapes[key]

    def act_node(kind: str, x: str, out: str, name: str) -> None:
        if kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out], name=name))
        elif kind == "hardswish":
            nodes.append(helper.make_node("HardSwish", [x], [out], name=name))
        elif kind == "hardsigmoid":
            nodes.append(helper.make_node("HardSigmoid", [x], [out], name=name, alpha=1.0 / 6.0, beta=0.5))
        else:
            raise ValueError(f"unknown activation {kind!r}")

    for layer in net.layers:
        a, name, ins = layer.attrs, layer.name, list(layer.inputs)
        if layer.kind == "conv":
            w, b = weights(layer)
            inputs = [ins[0], const(f"{name}.W", w)] + ([const(f"{name}.b", b)] if b is not None else [])
            out = f"{name}.pre" if a["act"] else name
            k, p = a["kernel"], a["padding"]
            nodes.append(helper.make_node("Conv", inputs, [out], name=name, kernel_shape=[k, k], strides=[a["stride"]] * 2,
                                          pads=[p] * 4, group=a["groups"], dilations=[1, 1]))
            if a["act"]:
                act_node(a["act"], out, name, f"{name}.{a['act']}")
        elif layer.kind == "bn_act":
            out = f"{name}.pre" if a["act"] else name
            nodes.append(helper.make_node(
                "BatchNormalization",
                [ins[0], const(f"{name}.gamma", param(layer, "bn_gamma")), const(f"{name}.beta", param(layer, "bn_beta")),
                 const(f"{name}.mean", param(layer, "bn_mean")), const(f"{name}.var", param(layer, "bn_var"))],
                [out], name=name, epsilon=BN_EPS))
            if a["act"]:
                act_node(a["act"], out, name, f"{name}.{a['act']}")
        elif layer.kind == "act":
            act_node(a["act"], ins[0], name, name)
        elif layer.kind == "avgpool":
            k, p = a["kernel"], a["padding"]
            nodes.append(helper.make_node("AveragePool", ins, [name], name=name, kernel_shape=[k, k],
                                          strides=[a["stride"]] * 2, pads=[p] * 4,
                                          count_include_pad=int(bool(a["count_include_pad"]))))
        elif layer.kind == "add":
            nodes.append(helper.make_node("Add", ins, [name], name=name))
        elif layer.kind == "mul":
            nodes.append(helper.make_node("Mul", ins, [name], name=name))
        elif layer.kind == "zero":
            c = layer.in_shape[1]
            nodes.append(helper.make_node("Mul", [ins[0], const(f"{name}.zeros", np.zeros((1, c, 1, 1), np.float32))],
                                          [name], name=name))
        elif layer.kind == "gap":
            nodes.append(helper.make_node("GlobalAveragePool", ins, [name], name=name))
        elif layer.kind == "flatten":
            nodes.append(helper.make_node("Flatten", ins, [name], name=name, axis=1))
        elif layer.kind == "linear":
            nodes.append(helper.make_node("Gemm", [ins[0], const(f"{name}.W", param(layer, "W")),
                                                   const(f"{name}.b", param(layer, "b"))],
                                          [name], name=name, transB=1))
        elif layer.kind == "shuffle":
            n, c, h, w = layer.in_shape
            g = a["groups"]
            s1 = const(f"{name}.shape1", np.array([n, g, c // g, h, w], dtype=np.int64))
            s2 = const(f"{name}.shape2", np.array([n, c, h, w], dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [ins[0], s1], [f"{name}.r1"], name=f"{name}.reshape1"))
            nodes.append(helper.make_node("Transpose", [f"{name}.r1"], [f"{name}.t"], name=f"{name}.transpose",
                                          perm=[0, 2, 1, 3, 4]))
            nodes.append(helper.make_node("Reshape", [f"{name}.t", s2], [name], name=f"{name}.reshape2"))
        else:
            raise ValueError(f"no ONNX mapping for layer kind {layer.kind!r}")

    # Rename the last tensor to `logits`.
    last = net.output
    for node in nodes:
        node.output[:] = ["logits" if o == last else o for o in node.output]
    graph = helper.make_graph(
        nodes, "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(net.input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(net.shape(last)))],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="hwlat", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=doc)
    model.ir_version = IR_VERSION
    return model
