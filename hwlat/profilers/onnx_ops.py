"""Single-op ONNX models: one `OpSpec` -> an ONNX graph that computes exactly that op (fp32).

Fused kernels (``conv2d+bn+relu``, ``conv2d+add+relu``, ...) are written as their separate ONNX
nodes; ONNX Runtime's graph optimiser fuses them itself, as it would inside a real network.
Inputs are named ``x0, x1, ...`` in the order of `OpSpec.input_shapes` (a gather's one input is
its int64 token ids); weights come from `hwlat.profilers.weights.make_weights`, so every runtime computes
the same function. GELU is written as torch's opset-17 export writes it (erf: Div, Erf, Add, Mul,
Mul; tanh: the cubic polynomial and Tanh), which ONNX Runtime fuses into its own Gelu kernels.
A ``copy`` is a Tile with repeats of 1: a real copy no optimiser rule removes (Identity and an
Expand to the same shape can be eliminated).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.device_tables.ops import ACTIVATIONS, OpSpec
from hwlat.profilers.weights import BN_EPS, LN_EPS, make_weights

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; accepted by every onnxruntime >= 1.12
OUTPUT = "y"

# Activations: ONNX op type and attributes. HardSigmoid/HardSwish use PyTorch's slope 1/6
# (ONNX's HardSigmoid default alpha is 0.2), so all runtimes agree.
_ACTIVATION_NODES: dict[str, tuple[str, dict[str, Any]]] = {
    "relu": ("Relu", {}),
    "hardswish": ("HardSwish", {}),
    "hardsigmoid": ("HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
    "sigmoid": ("Sigmoid", {}),
}


def input_names(spec: OpSpec) -> list[str]:
    """Names of the model's inputs, in the order of `spec.input_shapes`."""
    return [f"x{i}" for i in range(len(spec.input_shapes))]


def input_infos(spec: OpSpec) -> list:
    """The model's input value infos: float tensors of `spec.input_shapes`, a gather's int64 ids (tokens,)."""
    from onnx import TensorProto, helper

    if spec.base == "gather":
        return [helper.make_tensor_value_info("x0", TensorProto.INT64, [spec.input_shape[0]])]
    return [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
            for name, shape in zip(input_names(spec), spec.input_shapes)]


def build_onnx_model(spec: OpSpec, seed: int = 0):
    """The single-op ONNX model (`onnx.ModelProto`) of an fp32 `spec`; `UnsupportedOpError` otherwise."""
    from onnx import TensorProto, helper, numpy_helper

    if spec.dtype != "float32":
        raise UnsupportedOpError(f"{spec.key}: the ONNX Runtime profiler builds fp32 models only (got {spec.dtype})")
    builder = _Builder(spec, make_weights(spec, seed))
    value = builder.head()
    for tail in spec.parts[1:]:
        value = builder.tail(tail, value)
    if builder.as_tokens:
        value = builder.reshape(value, spec.output_shape, "tokens_out")
    builder.rename_output(value)
    inputs = input_infos(spec)
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, list(spec.output_shape))]
    inits = [numpy_helper.from_array(np.ascontiguousarray(arr), name) for name, arr in builder.initializers.items()]
    return model_of(helper.make_graph(builder.nodes, _graph_name(spec), inputs, outputs, inits))


def model_of(graph):
    """An `onnx.ModelProto` of a graph at hwlat's opset and IR version."""
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwlat")
    model.ir_version = IR_VERSION
    return model


def build_onnx_bytes(spec: OpSpec, seed: int = 0) -> bytes:
    """The serialized single-op model, ready for `onnxruntime.InferenceSession`."""
    return build_onnx_model(spec, seed).SerializeToString()


def _graph_name(spec: OpSpec) -> str:
    return spec.op.replace("+", "_")


class _Builder:
    """Accumulates nodes and initializers of one single-op graph; values are tensor names."""

    def __init__(self, spec: OpSpec, weights: dict[str, np.ndarray]):
        self.spec = spec
        self.weights = weights
        self.inputs = input_names(spec)
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self._names: set[str] = set()
        # (rows, C, 1, 1) inputs read as (1, rows, C), as a transformer holds its tokens, where ONNX
        # Runtime treats rank 4 unlike the network: it fuses a skip layer norm
        # (SkipLayerNormalization) of rank-3 tensors only, and runs the unfused tanh-GELU chain on a
        # (rows, C, 1, 1) tensor about 27x slower than on (1, rows, C) (11.9 vs 0.41 ms, 196k elements).
        self.as_tokens = (spec.base == "add" and "layernorm" in spec.parts[1:]) or (
            spec.base == "gelu" and bool(spec.a["tanh"]))

    def node(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        base, i = name, 1
        while name in self._names:  # e.g. relu+relu
            i += 1
            name = f"{base}{i}"
        self._names.add(name)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers[name] = value
        return name

    def reshape(self, value: str, shape, name: str) -> str:
        return self.node("Reshape", [value, self.const(f"{name}_shape", np.array(shape, dtype=np.int64))], name)

    def rename_output(self, value: str) -> None:
        """Make the last node write the graph output ``y``."""
        last = self.nodes[-1]
        assert last.output[0] == value
        last.output[0] = OUTPUT

    # ---- the first part of the kernel -------------------------------------------------------
    def head(self) -> str:
        spec, a, base, x = self.spec, self.spec.a, self.spec.base, self.inputs
        if base in ("conv2d", "dwconv2d", "pwconv2d"):
            k = 1 if base == "pwconv2d" else int(a["kernel"])
            p = 0 if base == "pwconv2d" else int(a["padding"])
            d = 1 if base == "pwconv2d" else int(a["dilation"])
            groups = spec.input_shape[1] if base == "dwconv2d" else int(a.get("groups", 1))
            ins = [x[0], self.const("W", self.weights["W"])]
            if a["bias"]:
                ins.append(self.const("b", self.weights["b"]))
            return self.node("Conv", ins, "conv", kernel_shape=[k, k], strides=[int(a["stride"])] * 2,
                             pads=[p, p, p, p], dilations=[d, d], group=groups)
        if base == "linear":
            ins = [x[0], self.const("W", self.weights["W"])]
            if a["bias"]:
                ins.append(self.const("b", self.weights["b"]))
            return self.node("Gemm", ins, "linear", transB=1)
        if base == "bn":
            return self._bn(x[0])
        if base in ACTIVATIONS:
            if self.as_tokens:
                return self._activation(base, self.reshape(x[0], (1, *spec.input_shape[:2]), "tokens"))
            return self._activation(base, x[0])
        if base in ("avgpool", "maxpool"):
            k, s, p = int(a["kernel"]), int(a["stride"]), int(a["padding"])
            attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
            if base == "avgpool":
                attrs["count_include_pad"] = int(bool(a["count_include_pad"]))
                return self.node("AveragePool", [x[0]], "avgpool", **attrs)
            return self.node("MaxPool", [x[0]], "maxpool", **attrs)
        if base == "globalavgpool":
            return self.node("GlobalAveragePool", [x[0]], "globalavgpool")
        if base == "add":
            if self.as_tokens:
                rows, c = spec.input_shape[:2]
                return self.node("Add", [self.reshape(v, (1, rows, c), f"tokens{i}") for i, v in enumerate(x[:2])], "add")
            return self.node("Add", [x[0], x[1]], "add")
        if base == "mul":
            return self.node("Mul", [x[0], x[1]], "mul")
        if base == "scale":
            return self.node("Mul", [x[0], self.const("scale", self.weights["scale"])], "scale")
        if base == "concat":
            return self.node("Concat", x[: int(a["parts"])], "concat", axis=1)
        if base == "matmul":
            return self.node("MatMul", [x[0], x[1]], "matmul")
        if base == "softmax":
            return self.node("Softmax", [x[0]], "softmax", axis=-1)
        if base == "layernorm":
            return self._layernorm(x[0])
        if base == "transpose":
            return self.node("Transpose", [x[0]], "transpose", perm=[int(d) for d in a["perm"]])
        if base == "copy":
            return self.node("Tile", [x[0], self.const("repeats", np.ones(4, dtype=np.int64))], "copy")
        if base == "gather":
            return self.node("Gather", [self.const("table", self.weights["table"]), x[0]], "gather", axis=0)
        raise UnsupportedOpError(f"{spec.key}: no ONNX builder for op {base!r}")

    # ---- fused tails ---------------------------------------------------------------------
    def tail(self, part: str, value: str) -> str:
        if part == "bn":
            return self._bn(value)
        if part == "add":
            return self.node("Add", [value, self.inputs[-1]], "add")  # the residual is the last input
        if part == "layernorm":
            return self._layernorm(value)
        return self._activation(part, value)

    def _layernorm(self, value: str) -> str:
        """LayerNormalization over the last axis (the features)."""
        ins = [value, self.const("ln_scale", self.weights["ln_scale"]), self.const("ln_bias", self.weights["ln_bias"])]
        return self.node("LayerNormalization", ins, "layernorm", axis=-1, epsilon=LN_EPS)

    def _bn(self, value: str) -> str:
        w = self.weights
        ins = [value] + [self.const(n, w[n]) for n in ("bn_gamma", "bn_beta", "bn_mean", "bn_var")]
        return self.node("BatchNormalization", ins, "bn", epsilon=BN_EPS)

    def _activation(self, part: str, value: str) -> str:
        if part == "relu6":
            lo = self.const("clip_min", np.array(0.0, dtype=np.float32))
            hi = self.const("clip_max", np.array(6.0, dtype=np.float32))
            return self.node("Clip", [value, lo, hi], "relu6")
        if part == "silu":  # x * sigmoid(x); ONNX has no SiLU op before opset 24 (Swish)
            sig = self.node("Sigmoid", [value], "silu_sigmoid")
            return self.node("Mul", [value, sig], "silu")
        if part == "gelu":
            return self._gelu(value)
        if part not in _ACTIVATION_NODES:
            raise UnsupportedOpError(f"{self.spec.key}: no ONNX builder for {part!r}")
        op_type, attrs = _ACTIVATION_NODES[part]
        return self.node(op_type, [value], part, **attrs)

    def _scalar(self, name: str, v: float) -> str:
        return self.const(name, np.array(v, dtype=np.float32))

    def _gelu(self, x: str) -> str:
        """GELU as torch's opset-17 export writes it: 0.5 x (1 + erf(x / sqrt 2)), or with `tanh`
        0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
        if self.spec.base == "gelu" and self.spec.a["tanh"]:  # a fused tail is the erf form
            cube = self.node("Mul", [x, self.node("Mul", [x, x], "gelu_sq")], "gelu_cube")
            inner = self.node("Add", [x, self.node("Mul", [self._scalar("gelu_k", 0.044715), cube], "gelu_kx3")], "gelu_inner")
            t = self.node("Tanh", [self.node("Mul", [self._scalar("gelu_b", float(np.sqrt(2 / np.pi))), inner], "gelu_scaled")],
                          "gelu_tanh")
            one = self.node("Add", [self._scalar("gelu_one", 1.0), t], "gelu_add")
            return self.node("Mul", [self._scalar("gelu_half", 0.5), self.node("Mul", [x, one], "gelu_mul")], "gelu")
        return erf_gelu(lambda op, ins: self.node(op, ins, f"gelu_{op.lower()}"),
                        lambda v: self._scalar(f"gelu_c{len(self.initializers)}", v), x)


def erf_gelu(node: Callable[[str, list[str]], str], scalar: Callable[[float], str], x: str) -> str:
    """GELU's erf form as torch's opset-17 export writes it, Div, Erf, Add, Mul, Mul (which ONNX
    Runtime fuses into its Gelu kernel); `node(op_type, inputs)` and `scalar(value)` return names."""
    t = node("Erf", [node("Div", [x, scalar(float(np.sqrt(2.0)))])])
    return node("Mul", [node("Mul", [x, node("Add", [t, scalar(1.0)])]), scalar(0.5)])
