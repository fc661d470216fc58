"""`Graph`: a network as the ordered ops a runtime executes, extracted from ONNX (or from specs).

Each `GraphOp` is a costed `OpSpec`, a cost-free shape op (Reshape, Flatten, ...), or an
*uncovered* node named with the reason, so a predictor can never silently count it as zero.
Extraction folds the shape subgraphs exporters write (`shapefold`), runs ONNX shape inference and
maps each node (`onnx_mapping`); a dynamic input dimension needs an explicit input shape.
Only `onnx` is needed (imported when a model is read).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hwlat.device_tables.errors import ModelError
from hwlat.device_tables.ops import OpSpec

log = logging.getLogger(__name__)

OP, FREE, UNCOVERED = "op", "free", "uncovered"
# The note of a CNN's channel shuffle: an uncovered Transpose of (N, g, C/g, H, W) by (0, 2, 1, 3, 4),
# its `moves` that shape (priced as a pass over the tensor; a runtime that runs whole networks lowers it).
SHUFFLE_NOTE = "a channel shuffle's Transpose (rank 5, H and W in place)"

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
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensor -> static shape (from ONNX)

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
    key_hint = "an architecture key needs its space (space= in Python, --space on the command line)"
    if not isinstance(model, (bytes, bytearray, str, os.PathLike)):
        raise ModelError(f"{model!r}: not an ONNX model (a path, bytes or onnx.ModelProto); {key_hint}")
    where = model if not isinstance(model, (bytes, bytearray)) else "<bytes>"
    try:
        if isinstance(model, (bytes, bytearray)):
            proto = onnx.load_from_string(bytes(model))
        else:
            path = os.fspath(model)
            if not os.path.exists(path):
                raise ModelError(f"{path}: no such ONNX file" + ("" if path.lower().endswith(".onnx") else f"; {key_hint}"))
            proto = onnx.load(path)
    except ModelError:
        raise
    except Exception as exc:  # protobuf DecodeError and friends
        if _is_tflite(model):
            raise ModelError(f"{where}: a TFLite flatbuffer, not an ONNX model; hwlat takes the network as ONNX (it "
                             "lowers it to TFLite itself for litert and tflm): give the model's .onnx export") from exc
        said = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{where}: not a readable ONNX model ({exc.__class__.__name__}{': ' + said if said else ''}); "
                         "re-export it or check the file (one saved with external data needs its data file "
                         "beside it)") from exc
    check_complete(proto, where)
    return proto


def _is_tflite(model: bytes | str | os.PathLike) -> bool:
    """Whether `model` (bytes or a file) is a TFLite flatbuffer: its file identifier ``TFL3``."""
    try:
        if isinstance(model, (bytes, bytearray)):
            head = bytes(model[:8])
        else:
            with open(model, "rb") as f:
                head = f.read(8)
    except OSError:
        return False
    return head[4:8] == b"TFL3"


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
            raise ModelError(f"{where}: node {node_name(node, idx)} ({node.op_type}) reads {missing!r}, which no input, "
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
        raise ModelError(f"input shape {text!r} is not dimensions joined by x, like 1x3x224x224 or 1x128") from None
    if not dims or any(d <= 0 for d in dims):
        raise ModelError(f"input shape {text!r} needs positive dimensions, like 1x3x224x224 or 1x128")
    return dims



NUMERIC_CONSTANTS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def constant_node_values(g: Any) -> dict[str, np.ndarray]:
    """Output name -> value of an ONNX graph's Constant nodes (``value`` tensors, ``value_float(s)``,
    ``value_int(s)``; strings and sparse tensors are left out)."""
    from onnx import helper, numpy_helper

    values = {}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name in NUMERIC_CONSTANTS:
            attr = n.attribute[0]
            value = helper.get_attribute_value(attr)
            values[n.output[0]] = (np.array(numpy_helper.to_array(value)) if attr.name == "value" else
                                   np.array(value, dtype=np.float32 if attr.name.startswith("value_float") else np.int64))
    return values


def parse_input_shapes(texts: str | Sequence[str] | None) -> tuple[int, ...] | dict[str, tuple[int, ...]] | None:
    """``--input-shape`` values -> one shape (``1x3x224x224``, for a one-input model) or a name -> shape
    mapping (``input_ids=1x128``, repeated for each input); None when none is given."""
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    if not texts:
        return None
    named = [t for t in texts if "=" in t]
    if not named:
        if len(texts) > 1:
            raise ModelError(f"{len(texts)} input shapes without names; name each input: --input-shape NAME=SHAPE")
        return parse_shape(texts[0])
    if len(named) != len(texts):
        raise ModelError("give every --input-shape as NAME=SHAPE (e.g. input_ids=1x128) when one names its input")
    out: dict[str, tuple[int, ...]] = {}
    for text in named:
        key, shape = (part.strip() for part in text.rsplit("=", 1))
        if not key or key in out:
            raise ModelError(f"--input-shape {text!r}: {'an input named twice' if key else 'no input name before ='}")
        out[key] = parse_shape(shape)
    return out



# ONNX tensor type names (as onnxruntime reports an input's type) -> numpy dtypes.
ONNX_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def input_shapes(declared: Sequence[tuple[str, list, Any]], given: Sequence[int] | Mapping[str, Sequence[int]] | None,
                 where: str) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (concrete shape, numpy dtype) of a model's `declared` inputs (name, dims, ONNX type
    string or numpy dtype), filling dynamic dimensions from `given` (`parse_input_shapes`); one
    `ModelError` naming the input otherwise. Every runtime that feeds a whole model checks with it."""
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    dynamic = [name for name, dims, _ in declared if any(not isinstance(d, int) or d <= 0 for d in dims)]
    if given is not None and not isinstance(given, Mapping):
        if len(declared) == 1:
            given = {declared[0][0]: given}
        elif len(dynamic) == 1:
            given = {dynamic[0]: given}
        else:
            raise ModelError(f"{where}: {len(declared)} inputs ({', '.join(n for n, _, _ in declared)}); "
                             "one --input-shape cannot say which it is for")
    given = dict(given or {})
    unknown = set(given) - {n for n, _, _ in declared}
    if unknown:
        raise ModelError(f"{where}: no input named {', '.join(map(repr, sorted(unknown)))}; inputs: "
                         f"{', '.join(n for n, _, _ in declared)}")
    for name, dims, typ in declared:
        dtype = ONNX_TYPES.get(typ, typ) if isinstance(typ, str) else typ
        if dtype is None or isinstance(dtype, str):
            raise ModelError(f"{where}: input {name!r} has type {typ}, which hwlat cannot feed; "
                             "only tensor inputs are supported")
        shown = "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else str(d or "?") for d in dims) + "]"
        if name in given:
            shape = tuple(int(s) for s in given[name])
            if len(shape) != len(dims):
                raise ModelError(f"{where}: input {name!r} has rank {len(dims)} {shown}; --input-shape "
                                 f"{'x'.join(map(str, shape))} has rank {len(shape)}")
            for d, s in zip(dims, shape):
                if isinstance(d, int) and d > 0 and d != s:
                    raise ModelError(f"{where}: input {name!r} is {shown}; --input-shape {'x'.join(map(str, shape))} "
                                     "disagrees with its fixed dimensions")
            if any(s <= 0 for s in shape):
                raise ModelError(f"{where}: --input-shape {'x'.join(map(str, shape))} has a non-positive dimension")
        elif name in dynamic:  # an example: batch 1, an image's free sides 224, other free sizes 128
            free = 224 if len(dims) == 4 else 128
            example = "x".join(str(d) if isinstance(d, int) and d > 0 else ("1" if i == 0 else str(free))
                               for i, d in enumerate(dims))
            named = f"{name}=" if len(declared) > 1 else ""
            raise ModelError(f"{where}: input {name!r} has a dynamic shape {shown}; give a concrete one with "
                             f"--input-shape, e.g. --input-shape {named}{example}")
        else:
            shape = tuple(int(d) for d in dims)
        out[name] = (shape, np.dtype(dtype))
    return out


def _check_reshapes(nodes, shapes: Mapping[str, Any], wanted: Any) -> None:
    """A `ModelError` for a Reshape whose input and output hold different numbers of values: a size
    the export fixed (a sequence length baked into a Reshape target) that the input shapes given differ
    from; the model cannot run at them."""
    for node in nodes:
        if node.op_type != "Reshape" or not node.input:
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a is None or b is None or not all(isinstance(d, int) and d >= 0 for d in (*a, *b)):
            continue
        if math.prod(a) != math.prod(b):
            given = f" (inputs {_shapes_text(wanted)})" if wanted else ""
            raise ModelError(f"Reshape node {node.name or node.output[0]!r} cannot view {'x'.join(map(str, a))} "
                             f"({math.prod(a)} values) as {'x'.join(map(str, b))} ({math.prod(b)}): the export fixed a "
                             f"size these input shapes{given} differ from; use the shapes it was exported with, or "
                             "export that dimension as dynamic")


def _check_broadcasts(nodes, shapes: Mapping[str, Any], wanted: Any) -> None:
    """A `ModelError` for an elementwise op whose inputs' static shapes do not broadcast: input shapes
    given that disagree (a sequence length per input); the model cannot run at them."""
    from hwlat.device_tables.onnx_mapping import BINARY

    for node in nodes:
        ins = [shapes.get(i) for i in node.input if i]
        if node.op_type not in BINARY or any(s is None for s in ins):
            continue
        try:
            np.broadcast_shapes(*ins)
        except ValueError:
            given = f" (inputs {_shapes_text(wanted)})" if wanted else ""
            raise ModelError(f"{node.op_type} node {node.name or node.output[0]!r} cannot combine "
                             f"{' and '.join('x'.join(map(str, s)) for s in ins)}: these input shapes{given} disagree; give "
                             "shapes that agree (one sequence length for every input)") from None


def _shapes_text(wanted: Any) -> str:
    if isinstance(wanted, Mapping):
        return ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in wanted.items())
    return "x".join(map(str, wanted))


def extract(model: Any, input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
            name: str | None = None) -> Graph:
    """Map every node of an ONNX model to a `GraphOp` (op, free or uncovered), in graph order, after
    folding its shape subgraphs (`shapefold`) with the input shapes given or declared."""
    from hwlat.device_tables.onnx_mapping import OnnxMapper  # imports this module: loaded on first use
    from hwlat.device_tables.shapefold import fold_shapes, static_shapes

    source = load_onnx(model)
    g = source.graph
    init_names = {t.name for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in init_names]
    wanted = _wanted_shapes(graph_inputs, input_shape)
    consts: dict[str, Any] = {t.name: _const_array(t) for t in g.initializer}
    consts.update(constant_node_values(g))
    values = {k: v for k, v in consts.items() if not isinstance(v, ShapeOnly)}
    try:
        inferred, folded = fold_shapes(_with_input_shapes(_without_weights(source), wanted), values)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed ({str(exc).splitlines()[0]}); check the model or --input-shape") from exc
    shapes = static_shapes(inferred.graph)
    shapes.update((k, tuple(v.shape)) for k, v in folded.items())
    _check_reshapes(g.node, shapes, wanted)
    _check_broadcasts(g.node, shapes, wanted)
    consts.update(folded)
    opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 17)
    ops = OnnxMapper(g.node, [o.name for o in g.output], shapes, consts, opset).run()
    inputs = {i.name: shapes.get(i.name) or () for i in graph_inputs}
    return Graph(ops, name if name is not None else (g.name or ""), inputs, tuple(o.name for o in g.output),
                 {k: v for k, v in shapes.items() if v is not None})


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


class ShapeOnly:
    """Stands for a large weight (or a tensor computed from weights): its shape is all extraction needs."""

    def __init__(self, dims):
        self.shape = tuple(int(d) for d in dims)
        self.ndim = len(self.shape)
        self.size = int(math.prod(self.shape)) if self.shape else 1

    def ravel(self):
        raise ValueError("a large constant's values are not loaded")


def _const_array(t):
    from onnx import numpy_helper

    if _numel(t) > 4096:
        return ShapeOnly(t.dims)
    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError) as exc:  # data that does not fill the declared dims (a corrupt file)
        raise ModelError(f"weight {t.name!r} does not hold its declared shape {list(t.dims)} ({exc})") from None


def run_input_shapes(model: Any, input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None
                     ) -> dict[str, tuple[int, ...]]:
    """Input name -> the shape an ONNX model (path, bytes or ModelProto) runs with: the given one or the declared one."""
    g = load_onnx(model).graph
    weights = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in weights]
    given = _wanted_shapes(inputs, input_shape)
    return {i.name: given.get(i.name) or tuple(_declared(i) or ()) for i in inputs}


def _wanted_shapes(graph_inputs, input_shape) -> dict[str, tuple[int, ...]]:
    """Input name -> the static shape it runs with: the given one (checked against the declared
    dimensions) or the declared one; a `ModelError` naming every dynamic input nobody sized."""
    dynamic = [gi.name for gi in graph_inputs if _declared(gi) is None or None in _declared(gi)]
    if input_shape is None:
        given: dict[str, tuple[int, ...]] = {}
    elif isinstance(input_shape, Mapping):
        given = {k: tuple(int(d) for d in v) for k, v in input_shape.items()}
    elif len(graph_inputs) == 1 or len(dynamic) == 1:
        given = {(graph_inputs[0].name if len(graph_inputs) == 1 else dynamic[0]): tuple(int(d) for d in input_shape)}
    else:
        names = ", ".join(i.name for i in graph_inputs)
        raise ModelError(f"the model has {len(graph_inputs)} inputs ({names}); give a shape per input name, "
                         "e.g. --input-shape NAME=1x128 for each")
    unknown = set(given) - {gi.name for gi in graph_inputs}
    if unknown:
        raise ModelError(f"no model input named {', '.join(map(repr, sorted(unknown)))}; inputs: {', '.join(gi.name for gi in graph_inputs)}")
    out, missing = {}, []
    for gi in graph_inputs:
        static = _declared(gi)
        if gi.name in given:
            shape = given[gi.name]
            if static is not None and len(shape) != len(static):
                raise ModelError(f"input {gi.name!r} has rank {len(static)}; the given shape {shape} has rank {len(shape)}")
            if static is not None and any(s is not None and s != w for s, w in zip(static, shape)):
                raise ModelError(f"input {gi.name!r} has fixed dims {static}; the given shape {shape} disagrees")
            out[gi.name] = shape
        elif gi.name in dynamic:
            missing.append(gi)
    if missing:
        raise ModelError(_ask_for_shapes(missing, len(graph_inputs)))
    return out


def _declared(gi) -> list[int | None] | None:
    """An input's declared dimensions (None for a dynamic one); None where it declares no shape."""
    t = gi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]


def _ask_for_shapes(missing, n_inputs: int) -> str:
    """The message asking for ``--input-shape`` of each dynamic input in `missing`, with an example
    (a dynamic batch of 1, other dynamic dimensions 128)."""
    def spelled(gi) -> tuple[str, str]:
        dims = gi.type.tensor_type.shape.dim
        static = _declared(gi) or []
        shown = "x".join(str(s) if s is not None else (d.dim_param or "?") for s, d in zip(static, dims)) or "?"
        example = "x".join(str(s) if s is not None else ("1" if i == 0 else "128") for i, s in enumerate(static))
        return shown, example or "1x128"

    if n_inputs == 1:
        shown, example = spelled(missing[0])
        return (f"input {missing[0].name!r} has dynamic shape {shown}; give one with --input-shape, "
                f"e.g. --input-shape {example}")
    listed = ", ".join(f"{gi.name!r} ({spelled(gi)[0]})" for gi in missing)
    example = " ".join(f"--input-shape {gi.name}={spelled(gi)[1]}" for gi in missing)
    return (f"input{'s' if len(missing) > 1 else ''} {listed} ha{'ve' if len(missing) > 1 else 's'} a dynamic shape; "
            f"give each with --input-shape NAME=SHAPE, e.g. {example}")


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


def node_name(node, idx: int) -> str:
    """A node's name, or its op type and position where the exporter left it unnamed."""
    return node.name or f"{node.op_type}_{idx}"
