"""An ONNX model run by PyTorch eager, node by node, with torch's own functional ops (`F.conv2d`,
`F.linear`, `F.layer_norm`, `torch.matmul`, ...): the network a device table's lookup-table
predictor prices, executed as a torch user's eager model executes it. `TorchRuntime.time_network`
times it, so torch tables get whole-network calibration and scores like onnxruntime and LiteRT.

The module is built for concrete input shapes (the model's, or those given): one run on seeded
inputs when it is built folds every node computed from constants and tensor shapes alone (the
Shape/Gather/Unsqueeze/Concat chains exporters write, masks, position ids) into buffers, as a
runtime folds them and as a torch model never computes them; settings a node reads from an input
(a Reshape's shape, a Slice's bounds, axes) are read then too, so a timed call never reads a
tensor's values. The weights are the model's. Every node must be of a type in `HANDLERS`; another
is an `UnsupportedOpError` naming it when the module is built, never while it is timed.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from hwlat.device_tables.errors import ModelError, UnsupportedOpError
from hwlat.device_tables.onnx_mapping import onnx_pads

FLOAT = "\0float"  # an input of Cast nodes to a float type: a buffer of the module's float dtype
SETTING_ELEMENTS = 64  # constant inputs up to this size are also given to handlers as Python values
# ONNX TensorProto element type -> torch dtype name
TORCH_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                11: "float64", 16: "bfloat16"}
FLOAT_TYPES = (1, 10, 11, 16)


def _ints(attrs: dict[str, Any], key: str, default: Sequence[int]) -> list[int]:
    return [int(v) for v in attrs.get(key, default)]


def _setting(a: dict[str, Any], i: int, default: Any = None) -> Any:
    """Input `i` of a node as a Python value (known when the module is built), else `default`."""
    return a["_in"].get(i, default)


def _axes(a: dict[str, Any], index: int = 1) -> list[int] | None:
    """Axes from the attribute (older opsets) or the input (newer ones); None when absent."""
    axes = a.get("axes", _setting(a, index))
    return None if axes is None else [int(v) for v in (axes if isinstance(axes, list) else [axes])]


def _pads2d(F, x, attrs: dict[str, Any], kernel: Sequence[int], fill: float = 0.0):
    """(input, symmetric padding): ONNX pads [top, left, bottom, right], or those `auto_pad` sets
    (SAME_UPPER puts an odd one at the end, SAME_LOWER at the start); unequal ones padded first, with `fill`."""
    p = onnx_pads(attrs.get("auto_pad", "NOTSET"), _ints(attrs, "pads", [0, 0, 0, 0]), x.shape[2:], kernel,
                  _ints(attrs, "strides", [1, 1]), _ints(attrs, "dilations", [1, 1]))
    if p[0] == p[2] and p[1] == p[3]:
        return x, (p[0], p[1])
    return F.pad(x, (p[1], p[3], p[0], p[2]), value=fill), (0, 0)


def _conv(t, F, ins, attrs):
    x, pad = _pads2d(F, ins[0], attrs, ins[1].shape[2:])
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
    lo, hi = attrs.get("min", _setting(attrs, 1)), attrs.get("max", _setting(attrs, 2))
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
        k, s = _ints(attrs, "kernel_shape", [1, 1]), _ints(attrs, "strides", [1, 1])
        # Unequal pads are padded first: with -inf for a max; with zeros for an average, which counts them
        # as elements (its border values differ where count_include_pad is 0; its shapes and cost do not).
        x, pad = _pads2d(F, ins[0], attrs, k, fill=float("-inf") if kind == "max" else 0.0)
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "avg":
            return F.avg_pool2d(x, k, s, pad, ceil_mode=ceil, count_include_pad=bool(attrs.get("count_include_pad", 0)))
        return F.max_pool2d(x, k, s, pad, ceil_mode=ceil)
    return run


def _reshape(t, F, ins, attrs):
    shape = _needed(attrs, 1, "Reshape", "shape")
    if not int(attrs.get("allowzero", 0)):
        shape = [ins[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return ins[0].reshape(shape)


def _flatten(t, F, ins, attrs):
    """A matrix, as ONNX's Flatten gives: the dimensions before `axis` by those from it (`torch.flatten` keeps the first ones)."""
    x = ins[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.flatten(axis) if axis == 1 else x.reshape(math.prod(x.shape[:axis]), -1)


def _reduce_mean(t, F, ins, attrs):
    axes = _axes(attrs)
    if axes is None:
        if int(attrs.get("noop_with_empty_axes", 0)):
            return ins[0]
        axes = list(range(ins[0].dim()))
    return ins[0].mean(dim=axes, keepdim=bool(attrs.get("keepdims", 1)))


def _batch_norm(t, F, ins, attrs):
    x, scale, bias, mean, var = ins[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(attrs.get("epsilon", 1e-5)))


def _layer_norm(t, F, ins, attrs):
    x = ins[0]
    axis = int(attrs.get("axis", -1)) % x.dim()
    bias = ins[2] if len(ins) > 2 else None
    return F.layer_norm(x, tuple(x.shape[axis:]), ins[1], bias, float(attrs.get("epsilon", 1e-5)))


def _needed(attrs: dict[str, Any], i: int, op: str, what: str) -> Any:
    value = _setting(attrs, i)
    if value is None:
        raise UnsupportedOpError(f"a {op} whose {what} is computed while the network runs; torch runs ONNX models "
                                 "whose shapes follow from the input shapes")
    return value


def _slice(t, F, ins, attrs):
    x = ins[0]
    if "starts" in attrs:  # opset 1: attributes
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = _needed(attrs, 1, "Slice", "starts"), _needed(attrs, 2, "Slice", "ends")
        axes, steps = _setting(attrs, 3), _setting(attrs, 4)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st < 0:
            raise UnsupportedOpError("a Slice with a negative step; torch slices forwards only")
        index[int(ax)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _split(t, F, ins, attrs):
    x = ins[0]
    axis = int(attrs.get("axis", 0))
    sizes = attrs.get("split", _setting(attrs, 1))
    if sizes is None:
        parts = int(attrs.get("num_outputs", attrs["_outputs"]))
        sizes = -(-x.shape[axis] // parts)
    return t.split(x, sizes, dim=axis)


def _unsqueeze(t, F, ins, attrs):
    x = ins[0]
    axes = _axes(attrs)
    rank = x.dim() + len(axes)
    for ax in sorted(a % rank for a in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(t, F, ins, attrs):
    axes = _axes(attrs)
    x = ins[0]
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


def _flat(values: Any) -> list:
    """A nested list of numbers (a setting of more than one dimension) as one flat list."""
    return [v for row in values for v in _flat(row)] if isinstance(values, list) else [values]


def _gather(t, F, ins, attrs):
    x, idx = ins[0], ins[1]
    axis = int(attrs.get("axis", 0)) % x.dim()
    if idx.dim() == 0:
        return x.select(axis, int(_needed(attrs, 1, "Gather", "index")))
    known = _setting(attrs, 1)
    if known is not None and any(v < 0 for v in _flat(known)):  # ONNX counts negative indices from the end; torch does not
        idx = idx % x.shape[axis]
    if axis == 0 and x.dim() == 2:  # an embedding table
        return F.embedding(idx, x)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))


def _expand(t, F, ins, attrs):
    import numpy as np

    shape = np.broadcast_shapes(tuple(ins[0].shape), tuple(_needed(attrs, 1, "Expand", "shape")))
    return ins[0].expand(shape)


def _shape(t, F, ins, attrs):
    dims = list(ins[0].shape)[int(attrs.get("start", 0)):attrs.get("end")]
    return t.tensor(dims, dtype=t.int64)


def _constant_of_shape(t, F, ins, attrs):
    from onnx import numpy_helper

    value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else None
    fill = 0.0 if value is None else value.reshape(-1)[0].item()
    dtype = t.float32 if value is None else getattr(t, str(value.dtype))
    return t.full([int(v) for v in _needed(attrs, 0, "ConstantOfShape", "shape")], fill, dtype=dtype)


def _cast(t, F, ins, attrs):
    to = int(attrs["to"])
    if to in FLOAT_TYPES:  # the module's float dtype: it may run in fp16 or bf16
        return ins[0].to(ins[-1].dtype)
    if to not in TORCH_DTYPES:
        raise UnsupportedOpError(f"a Cast to ONNX type {to}, which torch has no dtype for")
    return ins[0].to(getattr(t, TORCH_DTYPES[to]))


# ONNX op type -> fn(torch, torch.nn.functional, inputs, attributes) -> output tensor (or tensors)
HANDLERS: dict[str, Callable[..., Any]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda t, F, ins, a: t.matmul(ins[0], ins[1]),
    "Add": lambda t, F, ins, a: ins[0] + ins[1],
    "Sub": lambda t, F, ins, a: ins[0] - ins[1],
    "Mul": lambda t, F, ins, a: ins[0] * ins[1],
    "Div": lambda t, F, ins, a: ins[0] / ins[1] if ins[0].is_floating_point() else t.div(ins[0], ins[1], rounding_mode="trunc"),
    "Pow": lambda t, F, ins, a: t.pow(ins[0], ins[1]),
    "Sqrt": lambda t, F, ins, a: t.sqrt(ins[0]),
    "Erf": lambda t, F, ins, a: t.erf(ins[0]),
    "Neg": lambda t, F, ins, a: t.neg(ins[0]),
    "Mod": lambda t, F, ins, a: t.fmod(ins[0], ins[1]) if int(a.get("fmod", 0)) else t.remainder(ins[0], ins[1]),
    "Relu": lambda t, F, ins, a: F.relu(ins[0]),
    "Clip": _clip,
    "HardSwish": lambda t, F, ins, a: F.hardswish(ins[0]),
    "HardSigmoid": _hardsigmoid,
    "Sigmoid": lambda t, F, ins, a: t.sigmoid(ins[0]),
    "Tanh": lambda t, F, ins, a: t.tanh(ins[0]),
    "Gelu": lambda t, F, ins, a: F.gelu(ins[0], approximate=str(a.get("approximate", "none"))),
    "Softmax": lambda t, F, ins, a: t.softmax(ins[0], dim=int(a.get("axis", -1))),
    "LayerNormalization": _layer_norm,
    "GlobalAveragePool": lambda t, F, ins, a: F.adaptive_avg_pool2d(ins[0], 1),
    "AveragePool": _pool("avg"),
    "MaxPool": _pool("max"),
    "ReduceMean": _reduce_mean,
    "BatchNormalization": _batch_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda t, F, ins, a: ins[0].permute([int(v) for v in a.get("perm", range(ins[0].dim() - 1, -1, -1))]),
    "Concat": lambda t, F, ins, a: t.cat([i for i in ins if i is not None], dim=int(a.get("axis", 0))),
    "Slice": _slice,
    "Split": _split,
    "Gather": _gather,
    "Expand": _expand,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Where": lambda t, F, ins, a: t.where(ins[0], ins[1], ins[2]),
    "Equal": lambda t, F, ins, a: t.eq(ins[0], ins[1]),
    "Shape": _shape,
    "Range": lambda t, F, ins, a: t.arange(*(_needed(a, i, "Range", "bounds") for i in range(3)), dtype=ins[0].dtype),
    "ConstantOfShape": _constant_of_shape,
    "Cast": _cast,
    "Identity": lambda t, F, ins, a: ins[0],
    "Dropout": lambda t, F, ins, a: ins[0],
}
# Nodes whose output depends on their input's shape only: constant once the input shapes are fixed.
SHAPE_OPS = ("Shape", "Size")


def _attributes(node) -> dict[str, Any]:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    attrs["_outputs"] = len(node.output)
    attrs["_in"] = {}
    return attrs


def _constants(g) -> dict[str, Any]:
    """Initializers and Constant nodes' values (numpy arrays)."""
    import numpy as np
    from onnx import numpy_helper

    from hwlat.device_tables.graph import constant_node_values

    return {**{t.name: np.array(numpy_helper.to_array(t)) for t in g.initializer}, **constant_node_values(g)}


def input_specs(g, constants: Mapping[str, Any], given: Sequence[int] | Mapping[str, Sequence[int]] | None
                ) -> dict[str, tuple[tuple[int, ...], str]]:
    """The graph's inputs: name -> (concrete shape, torch dtype name); dynamic dimensions from `given`."""
    import numpy as np

    from hwlat.device_tables.graph import input_shapes  # the same checks and messages as every runtime's

    declared, dtypes = [], {}
    for i in g.input:
        if i.name in constants:
            continue
        tt = i.type.tensor_type
        if tt.elem_type not in TORCH_DTYPES:
            raise ModelError(f"input {i.name!r} has ONNX element type {tt.elem_type}, which torch cannot feed")
        dtypes[i.name] = TORCH_DTYPES[tt.elem_type]
        declared.append((i.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim],
                         np.dtype("float32" if dtypes[i.name] == "bfloat16" else dtypes[i.name])))
    shapes = input_shapes(declared, given, "model")
    return {name: (shape, dtypes[name]) for name, (shape, _) in shapes.items()}


def seeded_inputs(specs: Mapping[str, tuple[tuple[int, ...], str]], torch: Any) -> list[Any]:
    """Seeded inputs (float: standard normal; integer ids zeros and integer masks, inputs named
    ``*mask*``, ones: every token attended, as onnxruntime is fed)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for name, (shape, dtype) in specs.items():
        if dtype.startswith(("float", "bfloat")):
            out.append(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(getattr(torch, dtype)))
        else:
            out.append((torch.ones if "mask" in name.lower() else torch.zeros)(shape, dtype=getattr(torch, dtype)))
    return out


def onnx_module(model: bytes, torch: Any, input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None):
    """A `torch.nn.Module` computing the ONNX model (serialised bytes) with torch eager ops for
    these input shapes (the model's, or `input_shape`: one shape, or name -> shape), and the shape
    of its first input. The module takes its inputs positionally and returns the model's output (a
    tuple of them where it has several); ``module.example_inputs()`` gives seeded ones."""
    import onnx

    try:
        proto = onnx.load_from_string(bytes(model))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"not a readable ONNX model ({exc.__class__.__name__}: {exc})") from None
    g = proto.graph
    unknown = sorted({n.op_type for n in g.node} - set(HANDLERS) - {"Constant"})
    if unknown:
        raise UnsupportedOpError(f"torch cannot run this model's {', '.join(unknown)} node{'s' if len(unknown) > 1 else ''} "
                                 f"(hwlat runs {len(HANDLERS)} ONNX op types with torch ops); time it with --runtime "
                                 "onnxruntime, which runs every ONNX op")
    constants = _constants(g)
    specs = input_specs(g, constants, input_shape)
    nodes = [(n.op_type, list(n.input) + ([FLOAT] if n.op_type == "Cast" else []), list(n.output), _attributes(n))
             for n in g.node if n.op_type != "Constant"]
    with torch.inference_mode():
        kept, folded = _fold(torch, nodes, constants, dict(zip(specs, seeded_inputs(specs, torch))))
    outputs = [o.name for o in g.output]
    needed = {i for _, ins, _, _ in kept for i in ins if i in folded} | (set(outputs) & set(folded))
    names = {k: f"w{i}" for i, k in enumerate(sorted(needed))}  # buffers: .to(device, dtype) moves and casts them
    F = torch.nn.functional

    class OnnxModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k in sorted(needed):
                self.register_buffer(names[k], folded[k].clone())
            self.input_specs = specs

        def example_inputs(self) -> list[Any]:
            return seeded_inputs(specs, torch)

        def forward(self, *xs):
            env = {k: getattr(self, b) for k, b in names.items()}
            env.update(zip(specs, xs))
            for op, ins, outs, attrs in kept:
                _store(env, outs, HANDLERS[op](torch, F, [env[i] if i else None for i in ins], attrs))
            return env[outputs[0]] if len(outputs) == 1 else tuple(env[o] for o in outputs)

    return OnnxModule(), next(iter(specs.values()))[0]


def _store(env: dict[str, Any], outs: list[str], result: Any) -> None:
    if isinstance(result, (tuple, list)):
        env.update((name, r) for name, r in zip(outs, result) if name)
    else:
        env[outs[0]] = result


def _fold(torch: Any, nodes: list, constants: Mapping[str, Any], inputs: Mapping[str, Any]) -> tuple[list, dict[str, Any]]:
    """Run the graph once on `inputs`: the nodes left to run (their settings read from constant
    inputs) and the values of every constant tensor, folded ones included."""
    F = torch.nn.functional
    folded = {k: torch.from_numpy(v.copy()) for k, v in constants.items()}
    folded[FLOAT] = torch.zeros(0, dtype=torch.float32)
    env = {**folded, **inputs}
    kept = []
    for op, ins, outs, attrs in nodes:
        missing = [i for i in ins if i and i not in env]
        if missing:
            raise UnsupportedOpError(f"a {op} node reads {missing[0]!r}, which no node before it computes")
        attrs["_in"] = {i: env[name].tolist() for i, name in enumerate(ins)
                        if name in folded and name != FLOAT and env[name].numel() <= SETTING_ELEMENTS}
        try:
            _store(env, outs, HANDLERS[op](torch, F, [env[i] if i else None for i in ins], attrs))
        except UnsupportedOpError:
            raise
        except Exception as exc:
            raise ModelError(f"torch cannot run the model's {op} node {outs[0]!r} ({str(exc).splitlines()[0][:200]})") from exc
        if op in SHAPE_OPS or all(not i or i in folded for i in ins):
            folded.update((o, env[o]) for o in outs if o)
        else:
            kept.append((op, ins, outs, attrs))
    return kept, folded
