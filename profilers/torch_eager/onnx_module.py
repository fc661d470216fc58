"""An ONNX model run by PyTorch eager, node by node, with torch's own functional ops (`F.conv2d`,
`F.linear`, `F.hardswish`, ...): the network a device table's lookup-table predictor prices,
executed as a torch user's eager model executes it. `TorchRuntime.time_network` times it, so
torch tables get whole-network calibration and scores like onnxruntime and LiteRT.

The weights are the model's (batch norm folded into convolutions, as `torch.onnx.export` writes
an eval-mode model). Every node must be of a type in `HANDLERS`; another is an
`UnsupportedOpError` naming it when the module is built, never while it is timed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from device_tables.errors import ModelError, UnsupportedOpError


def _ints(attrs: dict[str, Any], key: str, default: Sequence[int]) -> list[int]:
    return [int(v) for v in attrs.get(key, default)]


def _pads2d(F, x, attrs: dict[str, Any]):
    """(input, symmetric padding): ONNX pads [top, left, bottom, right]; unequal ones padded first."""
    p = _ints(attrs, "pads", [0, 0, 0, 0])
    if p[0] == p[2] and p[1] == p[3]:
        return x, (p[0], p[1])
    return F.pad(x, (p[1], p[3], p[0], p[2])), (0, 0)


def _conv(t, F, ins, attrs):
    x, (pad) = _pads2d(F, ins[0], attrs)
    return F.conv2d(x, ins[1], ins[2] if len(ins) > 2 else None, stride=_ints(attrs, "strides", [1, 1]), padding=pad,
                    dilation=_ints(attrs, "dilations", [1, 1]), groups=int(attrs.get("group", 1)))


def _gemm(t, F, ins, attrs):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if int(attrs.get("transA", 0)):
        a = a.t()
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if int(attrs.get("transB", 0)) and alpha == 1.0 and beta == 1.0:
        return F.linear(a, b, c)
    y = alpha * (a @ (b.t() if int(attrs.get("transB", 0)) else b))
    return y if c is None else y + beta * c


def _clip(t, F, ins, attrs):
    lo, hi = attrs.get("_min", attrs.get("min")), attrs.get("_max", attrs.get("max"))
    if lo is None and len(ins) > 1 and ins[1] is not None:  # bounds computed in the graph
        lo = float(ins[1])
    if hi is None and len(ins) > 2 and ins[2] is not None:
        hi = float(ins[2])
    if lo == 0.0 and hi == 6.0:
        return F.relu6(ins[0])
    return t.clamp(ins[0], min=lo, max=hi)


def _hardsigmoid(t, F, ins, attrs):
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5:
        return F.hardsigmoid(ins[0])
    return t.clamp(alpha * ins[0] + beta, 0.0, 1.0)


def _pool(kind: str):
    def run(t, F, ins, attrs):
        x, pad = _pads2d(F, ins[0], attrs)
        k, s = _ints(attrs, "kernel_shape", [1, 1]), _ints(attrs, "strides", [1, 1])
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "avg":
            return F.avg_pool2d(x, k, s, pad, ceil_mode=ceil, count_include_pad=bool(attrs.get("count_include_pad", 0)))
        return F.max_pool2d(x, k, s, pad, ceil_mode=ceil)
    return run


def _reshape(t, F, ins, attrs):
    shape = attrs["_shape"] if "_shape" in attrs else [int(v) for v in ins[1].tolist()]
    if not int(attrs.get("allowzero", 0)):
        shape = [ins[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return ins[0].reshape(shape)


def _reduce_mean(t, F, ins, attrs):
    axes = attrs.get("axes", attrs.get("_axes"))
    return ins[0].mean(dim=[int(a) for a in axes], keepdim=bool(attrs.get("keepdims", 1)))


def _batch_norm(t, F, ins, attrs):
    x, scale, bias, mean, var = ins[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(attrs.get("epsilon", 1e-5)))


# ONNX op type -> fn(torch, torch.nn.functional, inputs, attributes) -> output tensor
HANDLERS: dict[str, Callable[..., Any]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda t, F, ins, a: t.matmul(ins[0], ins[1]),
    "Add": lambda t, F, ins, a: ins[0] + ins[1],
    "Sub": lambda t, F, ins, a: ins[0] - ins[1],
    "Mul": lambda t, F, ins, a: ins[0] * ins[1],
    "Div": lambda t, F, ins, a: ins[0] / ins[1],
    "Relu": lambda t, F, ins, a: F.relu(ins[0]),
    "Clip": _clip,
    "HardSwish": lambda t, F, ins, a: F.hardswish(ins[0]),
    "HardSigmoid": _hardsigmoid,
    "Sigmoid": lambda t, F, ins, a: t.sigmoid(ins[0]),
    "Tanh": lambda t, F, ins, a: t.tanh(ins[0]),
    "Softmax": lambda t, F, ins, a: t.softmax(ins[0], dim=int(a.get("axis", -1))),
    "GlobalAveragePool": lambda t, F, ins, a: F.adaptive_avg_pool2d(ins[0], 1),
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
    "ReduceMean": _reduce_mean,
    "BatchNormalization": _batch_norm,
    "Flatten": lambda t, F, ins, a: t.flatten(ins[0], int(a.get("axis", 1))),
    "Reshape": _reshape,
    "Transpose": lambda t, F, ins, a: ins[0].permute([int(v) for v in a["perm"]]),
    "Concat": lambda t, F, ins, a: t.cat([i for i in ins if i is not None], dim=int(a.get("axis", 0))),
    "Identity": lambda t, F, ins, a: ins[0],
    "Dropout": lambda t, F, ins, a: ins[0],
}


# Inputs a node reads as settings, taken from the model's constants when it is built (reading a
# tensor's values while timing would synchronise a GPU): op type -> (input index, attribute name).
CONSTANT_INPUTS = {"Reshape": ((1, "_shape"),), "ReduceMean": ((1, "_axes"),), "Clip": ((1, "_min"), (2, "_max"))}


def _attributes(node, constants: dict[str, Any]) -> dict[str, Any]:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for i, key in CONSTANT_INPUTS.get(node.op_type, ()):
        if len(node.input) > i and node.input[i] in constants:
            v = constants[node.input[i]]
            attrs[key] = float(v) if key in ("_min", "_max") else [int(x) for x in v.ravel()]
    return attrs


def onnx_module(model: bytes, torch: Any):
    """A `torch.nn.Module` computing the ONNX model (serialised bytes) with torch eager ops, and the
    static shape of its one input."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load_from_string(bytes(model))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"not a readable ONNX model ({exc.__class__.__name__}: {exc})") from None
    g = proto.graph
    unknown = sorted({n.op_type for n in g.node} - set(HANDLERS))
    if unknown:
        raise UnsupportedOpError(f"torch runs ONNX models of the ops {', '.join(sorted(HANDLERS))}; this one also has "
                                 f"{', '.join(unknown)}")
    weights = {t.name: np.array(numpy_helper.to_array(t)) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            weights[n.output[0]] = np.array(numpy_helper.to_array(next(a.t for a in n.attribute if a.name == "value")))
    inputs = [i for i in g.input if i.name not in weights]
    if len(inputs) != 1 or len(g.output) != 1:
        raise UnsupportedOpError(f"torch runs ONNX models of one input and one output, not {len(inputs)} and {len(g.output)}")
    shape = tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim)
    nodes = [(n.op_type, list(n.input), n.output[0], _attributes(n, weights)) for n in g.node if n.op_type != "Constant"]
    F = torch.nn.functional

    names = {k: f"w{i}" for i, k in enumerate(weights)}  # buffers: .to(device, dtype) moves and casts them

    class OnnxModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in weights.items():
                self.register_buffer(names[k], torch.from_numpy(v))

        def forward(self, x):
            env = {k: getattr(self, b) for k, b in names.items()}
            env[inputs[0].name] = x
            for op, ins, out, attrs in nodes:
                env[out] = HANDLERS[op](torch, F, [env[i] if i else None for i in ins], attrs)
            return env[g.output[0].name]

    return OnnxModule(), shape
