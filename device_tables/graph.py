"""`Graph`: a network as the ordered ops a runtime executes, extracted from ONNX (or from specs).

Each `GraphOp` is a costed `OpSpec`, a cost-free shape op (Reshape, Flatten, ...), or an
*uncovered* node named with the reason, so a predictor can never silently count it as zero.
Extraction runs ONNX shape inference; a dynamic input dimension needs an explicit input shape.
Only `onnx` is needed (imported when a model is read).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from device_tables.errors import ModelError, OpSpecError
from device_tables.ops import BASE_OPS, OpSpec

log = logging.getLogger(__name__)

OP, FREE, UNCOVERED = "op", "free", "uncovered"

# ONNX ops that only move or relabel data, or compute shapes: no kernel time of their own.
FREE_OPS = frozenset({
    "Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Shape", "Constant", "ConstantOfShape",
    "Dropout", "Gather", "Cast", "Size", "Range",
})
# Uncovered ONNX ops that copy their input once (a channel shuffle's Transpose): a predictor may
# price them as an elementwise pass over the same tensor (`GraphOp.moves` keeps the shape).
DATA_MOVEMENT_OPS = frozenset({"Transpose"})
ACTIVATION_OPS = {"Relu": "relu", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid"}


@dataclass(frozen=True)
class GraphOp:
    """One executed op: a costed `spec` (kind ``op``), a shape-only node (``free``) or an ``uncovered`` one."""

    kind: str
    spec: OpSpec | None
    onnx_op: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    note: str = ""
    moves: tuple[int, ...] = ()  # an uncovered data-movement op (DATA_MOVEMENT_OPS): its input's static shape

    @property
    def name(self) -> str:
        return self.nodes[0] if self.nodes else self.onnx_op

    def describe(self) -> str:
        what = self.spec.key if self.spec is not None else self.onnx_op
        return f"{'/'.join(self.nodes)} ({what}){': ' + self.note if self.note else ''}"


@dataclass
class Graph:
    """Ordered ops of a network with the tensors that connect them (for fusion grouping)."""

    ops: list[GraphOp]
    name: str = ""
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    # ---- views --------------------------------------------------------------------------
    @property
    def specs(self) -> list[OpSpec]:
        """The costed op configurations, in execution order."""
        return [op.spec for op in self.ops if op.kind == OP and op.spec is not None]

    @property
    def uncovered(self) -> list[GraphOp]:
        return [op for op in self.ops if op.kind == UNCOVERED]

    def consumers(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the ops that read it."""
        out: dict[str, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                out.setdefault(t, []).append(i)
        return out

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.specs)

    def __len__(self) -> int:
        return len(self.ops)

    def format(self) -> str:
        lines = [f"graph {self.name or '?'}: {len(self.specs)} ops, {len(self.uncovered)} uncovered, "
                 f"{self.macs / 1e6:.1f} M MACs"]
        for op in self.ops:
            if op.kind != FREE:
                lines.append(f"  {op.kind:<9} {op.describe()}")
        return "\n".join(lines)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_specs(cls, specs: Iterable[OpSpec], name: str = "") -> "Graph":
        """A chain: each op reads the previous op's output; extra inputs (the residual of
        ``add``, the scale of ``mul``, concat parts) come from outside the chain."""
        ops: list[GraphOp] = []
        prev = "input"
        inputs: dict[str, tuple[int, ...]] = {}
        for i, spec in enumerate(specs):
            if not ops:
                inputs[prev] = spec.input_shape
            extra = tuple(f"{prev}.side{i}.{j}" for j in range(len(spec.input_shapes) - 1))
            out = f"t{i}"
            ops.append(GraphOp(OP, spec, spec.op, (f"op{i}",), (prev,) + extra, (out,)))
            prev = out
        return cls(ops, name, inputs, (prev,))

    @classmethod
    def from_onnx(cls, model: Any, input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                  name: str | None = None) -> "Graph":
        """An ONNX model (path, bytes or ModelProto) -> its `Graph`; see `extract`."""
        return extract(model, input_shape, name)


# ---- ONNX extraction ----------------------------------------------------------------------
def load_onnx(model: Any):
    """Path, bytes or ModelProto -> ModelProto, with a `ModelError` a user can act on."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    where = model if not isinstance(model, (bytes, bytearray)) else "<bytes>"
    try:
        if isinstance(model, (bytes, bytearray)):
            proto = onnx.load_from_string(bytes(model))
        else:
            path = os.fspath(model)
            if not os.path.exists(path):
                raise ModelError(f"{path}: no such ONNX file")
            proto = onnx.load(path)
    except ModelError:
        raise
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{where}: not a readable ONNX model ({exc.__class__.__name__})") from exc
    check_complete(proto, where)
    return proto


def check_complete(proto, where: Any) -> None:
    """A `ModelError` naming `where` for a model that parsed but is not whole: no nodes or outputs
    (an empty file parses as an empty model), or a node or output reading a tensor that no input,
    weight or earlier node gives (a file cut short at a field boundary)."""
    g = proto.graph
    if not g.node or not g.output:
        raise ModelError(f"{where}: an ONNX model without {'nodes' if not g.node else 'outputs'} (an empty or "
                         "truncated file?); export the model again")
    known = {""} | {i.name for i in g.input} | {t.name for t in g.initializer}
    known |= {t.name for t in getattr(g, "sparse_initializer", ())}
    for idx, node in enumerate(g.node):
        missing = next((x for x in node.input if x not in known), None)
        if missing is not None:
            raise ModelError(f"{where}: node {_name(node, idx)} ({node.op_type}) reads {missing!r}, which no input, "
                             "weight or earlier node gives (a truncated or malformed file?); export the model again")
        known.update(node.output)
    lost = next((o.name for o in g.output if o.name not in known), None)
    if lost is not None:
        raise ModelError(f"{where}: output {lost!r} is made by no node (a truncated or malformed file?); "
                         "export the model again")


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x224x224`` (or commas) -> (1, 3, 224, 224)."""
    try:
        dims = tuple(int(s) for s in text.replace(",", "x").split("x") if s.strip())
    except ValueError:
        raise ModelError(f"input shape {text!r} is not like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise ModelError(f"input shape {text!r} needs positive dimensions, like 1x3x224x224")
    return dims


def extract(model: Any, input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
            name: str | None = None) -> Graph:
    """Map every node of an ONNX model to a `GraphOp` (op, free or uncovered), in graph order."""
    from onnx import numpy_helper, shape_inference

    source = load_onnx(model)
    g = source.graph
    init_names = {t.name for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in init_names]
    wanted = _wanted_shapes(graph_inputs, input_shape)
    proto = _with_input_shapes(_without_weights(source), wanted)
    try:
        proto = shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed ({str(exc).splitlines()[0]}); check the model or --input-shape") from exc
    g = proto.graph
    shapes: dict[str, tuple[int, ...] | None] = {}
    weights = source.graph.initializer
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _static_shape(vi)
    consts: dict[str, Any] = {t.name: _const_array(t) for t in weights}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_int"):
                    import numpy as np

                    consts[node.output[0]] = np.asarray(a.f if a.name == "value_float" else a.i)
    ex = _Extractor(g, shapes, consts)
    ops = ex.run()
    inputs = {i.name: shapes.get(i.name) or () for i in graph_inputs}
    return Graph(ops, name if name is not None else (g.name or ""), inputs, tuple(o.name for o in g.output))


def _without_weights(proto):
    """A copy whose large initializers are shape-only graph inputs: shape inference then skips
    serializing megabytes of weights (small constants such as Reshape targets stay)."""
    import onnx
    from onnx import helper

    g = proto.graph
    big = [t for t in g.initializer if _numel(t) > 64]
    if not big:
        return proto
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    del light.graph.initializer[:]
    light.graph.initializer.extend(t for t in g.initializer if _numel(t) <= 64)
    light.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big)
    return light


def _numel(t) -> int:
    return int(math.prod(t.dims)) if len(t.dims) else 1


class _ShapeOnly:
    """Stands for a large weight: its shape is all extraction needs."""

    def __init__(self, dims):
        self.shape = tuple(int(d) for d in dims)
        self.ndim = len(self.shape)
        self.size = int(math.prod(self.shape)) if self.shape else 1

    def ravel(self):
        raise ValueError("a large constant's values are not loaded")


def _const_array(t):
    from onnx import numpy_helper

    if _numel(t) > 4096:
        return _ShapeOnly(t.dims)
    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError) as exc:  # data that does not fill the declared dims (a corrupt file)
        raise ModelError(f"weight {t.name!r} does not hold its declared shape {list(t.dims)} ({exc})") from None


def _static_shape(vi) -> tuple[int, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            return None
    return tuple(dims)


def _wanted_shapes(graph_inputs, input_shape) -> dict[str, tuple[int, ...]]:
    if input_shape is None:
        given: dict[str, tuple[int, ...]] = {}
    elif isinstance(input_shape, Mapping):
        given = {k: tuple(int(d) for d in v) for k, v in input_shape.items()}
    else:
        if len(graph_inputs) != 1:
            names = ", ".join(i.name for i in graph_inputs)
            raise ModelError(f"the model has {len(graph_inputs)} inputs ({names}); give a shape per input name")
        given = {graph_inputs[0].name: tuple(int(d) for d in input_shape)}
    out = {}
    for gi in graph_inputs:
        dims = gi.type.tensor_type.shape.dim
        static = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if gi.name in given:
            shape = given[gi.name]
            if static and len(shape) != len(static):
                raise ModelError(f"input {gi.name!r} has rank {len(static)}; the given shape {shape} has rank {len(shape)}")
            clash = [(s, w) for s, w in zip(static, shape) if s is not None and s != w]
            if clash:
                raise ModelError(f"input {gi.name!r} has fixed dims {static}; the given shape {shape} disagrees")
            out[gi.name] = shape
        elif not dims or any(s is None for s in static):
            spelled = "x".join(str(s) if s is not None else (d.dim_param or "?") for s, d in zip(static, dims))
            raise ModelError(f"input {gi.name!r} has dynamic shape {spelled or '?'}; give one with --input-shape, e.g. 1x3x224x224")
    unknown = set(given) - {gi.name for gi in graph_inputs}
    if unknown:
        raise ModelError(f"no model input named {sorted(unknown)}; inputs: {', '.join(gi.name for gi in graph_inputs)}")
    return out


def _with_input_shapes(proto, wanted: Mapping[str, tuple[int, ...]]):
    if not wanted:
        return proto
    import onnx

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for gi in proto.graph.input:
        if gi.name in wanted:
            shape = gi.type.tensor_type.shape
            del shape.dim[:]
            for d in wanted[gi.name]:
                shape.dim.add().dim_value = int(d)
    # Stale intermediate shapes would block re-inference with the new input shape.
    del proto.graph.value_info[:]
    return proto


class _Extractor:
    """Walks the nodes once, folding MatMul+Add bias and x*sigmoid(x) into single ops."""

    def __init__(self, g, shapes, consts):
        self.g, self.shapes, self.consts = g, shapes, consts
        self.producer: dict[str, Any] = {}
        self.users: dict[str, list[Any]] = {}
        for node in g.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                if i:
                    self.users.setdefault(i, []).append(node)
        self.graph_outputs = {o.name for o in g.output}
        self.skip: set[int] = set()
        self.dead: set[str] = set()  # tensors computed from constants and shapes only

    def run(self) -> list[GraphOp]:
        ops: list[GraphOp] = []
        for idx, node in enumerate(self.g.node):
            if id(node) in self.skip:
                continue
            acts = [i for i in node.input if i and self._is_activation(i)]
            if node.op_type in FREE_OPS or not acts:
                if not acts:
                    self.dead.update(node.output)
                ops.append(GraphOp(FREE, None, node.op_type, (_name(node, idx),), tuple(acts), tuple(node.output)))
                continue
            try:
                op = self._map(node, idx, acts)
            except OpSpecError as exc:
                op = self._uncovered(node, idx, acts, f"no op configuration fits ({exc})")
            except (TypeError, ValueError) as exc:  # attributes of the wrong type or empty (a corrupt file)
                raise ModelError(f"node {_name(node, idx)!r} ({node.op_type}) has malformed attributes ({exc}); "
                                 "export the model again") from None
            ops.append(op)
        return ops

    # ---- helpers ------------------------------------------------------------------------
    def _is_activation(self, name: str) -> bool:
        if name in self.consts or name in self.dead:
            return False
        node = self.producer.get(name)
        return node is None or node.op_type not in ("Shape", "Size")

    def _shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def _attr(self, node, key: str, default: Any = None) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == key:
                return helper.get_attribute_value(a)
        return default

    def _uncovered(self, node, idx, acts, note: str) -> GraphOp:
        shape = self._shape(acts[0]) if acts and node.op_type in DATA_MOVEMENT_OPS else None
        moves = tuple(int(d) for d in shape) if shape and all(isinstance(d, int) and d > 0 for d in shape) else ()
        return GraphOp(UNCOVERED, None, node.op_type, (_name(node, idx),), tuple(acts), tuple(node.output), note, moves)

    def _op(self, spec: OpSpec, node, idx, acts, outputs=None, nodes=None, onnx_op=None, note="") -> GraphOp:
        out = tuple(outputs if outputs is not None else node.output[:1])
        for o in out:  # fill shapes inference could not compute from the spec we built
            if self.shapes.get(o) is None:
                self.shapes[o] = spec.output_shape
        return GraphOp(OP, spec, onnx_op or node.op_type, tuple(nodes or (_name(node, idx),)), tuple(acts), out, note)

    # ---- the mapping --------------------------------------------------------------------
    def _map(self, node, idx, acts) -> GraphOp:
        t = node.op_type
        x = acts[0]
        xs = self._shape(x)
        if xs is None:
            return self._uncovered(node, idx, acts, f"input {x!r} has no static shape after shape inference")
        if t == "Conv":
            return self._conv(node, idx, acts, xs)
        if t in ("Gemm", "MatMul"):
            return self._linear(node, idx, acts, xs)
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
        if t == "ReduceMean":
            return self._reduce_mean(node, idx, acts, xs)
        if t in ("Add", "Sum"):
            return self._add(node, idx, acts, xs)
        if t == "Mul":
            return self._mul(node, idx, acts, xs)
        if t == "Concat":
            return self._concat(node, idx, acts, xs)
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
        pad, note = self._padding(node, xs, kh, strides[0], dil[0], out_shape)
        if pad is None:
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

    def _padding(self, node, xs, k, stride, dil, out_shape) -> tuple[int | None, str]:
        auto = self._attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            h = xs[2]
            out = math.ceil(h / stride)
            total = max(0, (out - 1) * stride + dil * (k - 1) + 1 - h)
            pads = [total // 2, total - total // 2]
        elif auto == "VALID":
            pads = [0, 0]
        else:
            p = list(self._attr(node, "pads", [0, 0, 0, 0]))
            if len(p) != 4:
                return None, f"pads {p} not 2-D"
            pads = [p[0], p[1]] if (p[0] == p[2] and p[1] == p[3]) else None
            if pads is None:
                # Asymmetric (TF 'SAME' with stride 2): cost it with the symmetric padding giving the same output.
                for cand in sorted({p[0], p[1], p[2], p[3]}):
                    if out_shape is None:
                        break
                    ho = (xs[2] + 2 * cand - dil * (k - 1) - 1) // stride + 1
                    if (ho, ho) == tuple(out_shape[2:]):
                        return int(cand), f"asymmetric pads {p} costed as symmetric {cand}"
                return None, f"asymmetric pads {p}"
        if pads[0] != pads[1]:
            cand = max(pads)
            return int(cand), f"padding {pads} costed as symmetric {cand}"
        return int(pads[0]), ""

    def _linear(self, node, idx, acts, xs) -> GraphOp:
        t = node.op_type
        if len(xs) != 2 or len(acts) != 1:
            return self._uncovered(node, idx, acts, f"{t} on rank-{len(xs)} input or of two activations (only x @ W with constant W)")
        w = self.consts.get(node.input[1])
        if w is None or w.ndim != 2:
            return self._uncovered(node, idx, acts, f"{t} weight is not a constant matrix")
        if t == "Gemm":
            if int(self._attr(node, "transA", 0)):
                return self._uncovered(node, idx, acts, "Gemm with transA")
            cout = int(w.shape[0] if int(self._attr(node, "transB", 0)) else w.shape[1])
            bias = len(node.input) > 2 and bool(node.input[2])
            return self._op(OpSpec.make("linear", xs, cout=cout, bias=bias), node, idx, acts)
        cout = int(w.shape[1])
        users = self.users.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in self.graph_outputs:
            add = users[0]
            other = [i for i in add.input if i != node.output[0]]
            if len(other) == 1 and other[0] in self.consts and self.consts[other[0]].size == cout:
                self.skip.add(id(add))
                spec = OpSpec.make("linear", xs, cout=cout, bias=True)
                return self._op(spec, node, idx, acts, outputs=add.output[:1],
                                nodes=(_name(node, idx), add.name or "Add"), onnx_op="MatMul+Add")
        return self._op(OpSpec.make("linear", xs, cout=cout, bias=False), node, idx, acts)

    def _silu(self, node, idx, x, xs) -> GraphOp | None:
        """Sigmoid(x) feeding only Mul(x, sigmoid(x)): SiLU/swish as one op, when the vocabulary has it."""
        users = self.users.get(node.output[0], [])
        if "silu" not in BASE_OPS or len(users) != 1 or users[0].op_type != "Mul":
            return None
        mul = users[0]
        if set(mul.input) != {x, node.output[0]} or node.output[0] in self.graph_outputs:
            return None
        self.skip.add(id(mul))
        spec = OpSpec.make("silu", _as4(xs))
        return self._op(spec, node, idx, [x], outputs=mul.output[:1], nodes=(_name(node, idx), mul.name or "Mul"),
                        onnx_op="Sigmoid+Mul", note="" if len(xs) == 4 else f"rank-{len(xs)} input viewed as {_as4(xs)}")

    def _elementwise(self, op: str, node, idx, acts, xs, note: str = "") -> GraphOp:
        shape = _as4(xs)
        if shape != tuple(xs):
            note = (note + "; " if note else "") + f"rank-{len(xs)} input viewed as {shape}"
        return self._op(OpSpec.make(op, shape), node, idx, acts[:1], note=note)

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
        pad, note = self._padding(node, xs, k[0], strides[0], 1, out_shape)
        if pad is None:
            return self._uncovered(node, idx, acts, note)
        if t == "AveragePool":
            spec = OpSpec.make("avgpool", xs, kernel=k[0], stride=strides[0], padding=pad,
                               count_include_pad=bool(self._attr(node, "count_include_pad", 0)))
        else:
            spec = OpSpec.make("maxpool", xs, kernel=k[0], stride=strides[0], padding=pad)
        if out_shape is not None and spec.output_shape != out_shape:
            note = (note + "; " if note else "") + f"ceil_mode output {out_shape[2:]} costed as {spec.output_shape[2:]}"
        return self._op(spec, node, idx, acts[:1], note=note)

    def _reduce_mean(self, node, idx, acts, xs) -> GraphOp:
        axes = self._attr(node, "axes", None)
        if axes is None and len(node.input) > 1 and node.input[1] in self.consts:
            axes = [int(a) for a in self.consts[node.input[1]].ravel()]
        axes = sorted(a % len(xs) for a in (axes or []))
        if len(xs) == 4 and axes == [2, 3]:
            return self._op(OpSpec.make("globalavgpool", xs), node, idx, acts[:1],
                            note="" if self._attr(node, "keepdims", 1) else "ReduceMean without keepdims")
        return self._uncovered(node, idx, acts, f"ReduceMean over axes {axes} (only spatial means are covered)")

    def _add(self, node, idx, acts, xs) -> GraphOp:
        shapes = [self._shape(a) for a in acts]
        if len(acts) == 2 and shapes[0] == shapes[1] and shapes[0] is not None:
            return self._op(OpSpec.make("add", _as4(shapes[0])), node, idx, acts)
        return self._uncovered(node, idx, acts, f"{node.op_type} of shapes {shapes} with {len(node.input) - len(acts)} constant input(s): "
                               "only the sum of two equal-shape activations is covered")

    def _mul(self, node, idx, acts, xs) -> GraphOp:
        shapes = [self._shape(a) for a in acts]
        if len(acts) == 1 and xs is not None and len(xs) == 4:
            const = next((self.consts[i] for i in node.input if i in self.consts), None)
            cs = tuple(getattr(const, "shape", ()))
            if const is not None and math.prod(cs) in (1, xs[1]) and (len(cs) <= 1 or cs[-2:] in ((1, 1), ())):
                # x * per-channel (or scalar) constant, e.g. NAS-Bench-201's "none" edge (x * 0).
                return self._op(OpSpec.make("scale", xs), node, idx, acts)
        if len(acts) == 2 and all(s is not None and len(s) == 4 for s in shapes):
            big, small = (0, 1) if math.prod(shapes[0]) >= math.prod(shapes[1]) else (1, 0)
            if shapes[small] == shapes[big][:2] + (1, 1):
                return self._op(OpSpec.make("mul", shapes[big]), node, idx, [acts[big], acts[small]])
        return self._uncovered(node, idx, acts, f"Mul of shapes {shapes}: only x * s with s of shape NxCx1x1 is covered")

    def _concat(self, node, idx, acts, xs) -> GraphOp:
        shapes = [self._shape(a) for a in acts]
        axis = int(self._attr(node, "axis", 1))
        if len(acts) == len(node.input) and len(acts) >= 2 and all(s == shapes[0] for s in shapes) \
                and shapes[0] is not None and len(shapes[0]) == 4 and axis in (1, -3):
            return self._op(OpSpec.make("concat", shapes[0], parts=len(acts)), node, idx, acts)
        return self._uncovered(node, idx, acts, f"Concat on axis {axis} of shapes {shapes}: only equal shapes joined on channels are covered")


def _as4(shape: Sequence[int]) -> tuple[int, ...]:
    """Elementwise ops are NCHW in the vocabulary: view NxF as NxFx1x1."""
    s = tuple(int(d) for d in shape)
    if len(s) == 4:
        return s
    if len(s) == 2:
        return s + (1, 1)
    if len(s) == 3:
        return s + (1,)
    return (1, math.prod(s), 1, 1)


def _name(node, idx: int) -> str:
    return node.name or f"{node.op_type}_{idx}"
