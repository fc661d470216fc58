"""Folding of an ONNX model's shape subgraphs, so shape inference gives every activation a static shape.

Exporters (torch's TorchScript and dynamo exporters, Hugging Face's) compute Reshape targets at run
time: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, with Where/Equal/Range/ConstantOfShape on
the way. Runtimes fold those away once the input shape is known; so does `fold_shapes`: it runs
ONNX shape inference with data propagation, evaluates every node whose inputs are known values (or
a Shape of a statically shaped tensor) with ONNX's reference ops, puts the results in as constants
and infers again, until nothing more folds. The folded nodes cost nothing at run time.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

log = logging.getLogger(__name__)

FOLD_LIMIT = 1 << 16  # elements: a folded tensor larger than this stays a node (masks over long sequences)
MAX_ROUNDS = 200  # each round resolves at least one more Reshape; a network this deep is unheard of
# Nodes that are never folded: random generators give another tensor each run; subgraphs are not evaluated.
UNFOLDABLE = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                        "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty"})
GROWING = frozenset({"ConstantOfShape", "Expand", "Tile", "Range"})  # outputs sized by an input's values


def fold_shapes(light, values: Mapping[str, Any]):
    """(inferred model, folded values): `light` (a model with static input shapes) re-inferred until
    no node with known inputs is left; ``folded`` maps each folded node's output to its value.
    `values` holds the constants already known (small initializers)."""
    from onnx import shape_inference

    opset = next((o.version for o in light.opset_import if o.domain in ("", "ai.onnx")), 17)
    known = dict(values)
    folded: dict[str, Any] = {}
    model = light
    for _ in range(MAX_ROUNDS):
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        shapes = static_shapes(inferred.graph)
        new = _evaluate(inferred.graph.node, known, shapes, opset)
        if not new:
            return inferred, folded
        known.update(new)
        folded.update(new)
        model = _inject(inferred, new)
    log.warning("shape folding stopped after %d rounds", MAX_ROUNDS)
    return inferred, folded


def static_shapes(g) -> dict[str, tuple[int, ...] | None]:
    """Tensor name -> its static shape (None where a dimension is unknown) for every typed value of `g`."""
    return {vi.name: static_shape(vi) for vi in list(g.input) + list(g.value_info) + list(g.output)}


def static_shape(vi) -> tuple[int, ...] | None:
    """A value's shape when every dimension is a known positive number (or 0-d), else None."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not (d.HasField("dim_value") and d.dim_value > 0):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _evaluate(nodes, known: dict[str, Any], shapes: Mapping[str, Any], opset: int) -> dict[str, Any]:
    """One pass in graph order: the values of the nodes that can be computed now."""
    import numpy as np

    new: dict[str, Any] = {}
    have = lambda name: not name or name in known or name in new  # noqa: E731 - "" is an absent optional input
    value = lambda name: known[name] if name in known else new[name]  # noqa: E731
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type in UNFOLDABLE or all(o in new for o in node.output):
            continue
        if node.op_type in ("Shape", "Size") and shapes.get(node.input[0]) is not None:
            out = _shape_value(node, shapes[node.input[0]])
        elif all(have(i) for i in node.input) and _small(node, value, shapes):
            try:
                out = _run(node, [value(i) if i else None for i in node.input], opset)
            except Exception as exc:  # an op the reference cannot run (or a malformed node): leave it unfolded
                log.debug("not folding %s (%s): %s", node.name, node.op_type, exc)
                continue
        else:
            continue
        outs = out if isinstance(out, tuple) else (out,)
        if all(o is not None and np.asarray(o).size <= FOLD_LIMIT for o in outs):
            new.update((name, np.asarray(o)) for name, o in zip(node.output, outs) if name)
    return new


def _shape_value(node, shape: tuple[int, ...]):
    import numpy as np

    if node.op_type == "Size":
        return np.asarray(math.prod(shape), np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.asarray(shape[start:end], np.int64)


def _small(node, value, shapes) -> bool:
    """Whether `node`'s output is small enough to hold (checked before computing growing ops)."""
    import numpy as np

    out_shape = shapes.get(node.output[0]) if node.output else None
    if out_shape is not None:
        return math.prod(out_shape) <= FOLD_LIMIT
    if node.op_type not in GROWING:
        return True
    try:
        if node.op_type == "ConstantOfShape":
            n = math.prod(int(d) for d in np.ravel(value(node.input[0])))
        elif node.op_type == "Expand":
            n = math.prod(np.broadcast_shapes(np.shape(value(node.input[0])), tuple(int(d) for d in np.ravel(value(node.input[1])))))
        elif node.op_type == "Tile":
            n = np.size(value(node.input[0])) * math.prod(int(d) for d in np.ravel(value(node.input[1])))
        else:
            start, limit, delta = (float(np.ravel(value(i))[0]) for i in node.input)
            n = max(0, math.ceil((limit - start) / delta))
    except (ValueError, ZeroDivisionError, IndexError, TypeError):
        return False
    return n <= FOLD_LIMIT


def _run(node, inputs: list[Any], opset: int):
    """Outputs of one node on numpy inputs, by ONNX's reference implementation of its op at `opset`."""
    from onnx.reference.ops import load_op

    cls = load_op("", node.op_type, opset)
    params = {"log": lambda *a: None, "opsets": {"": opset}, "verbose": 0, "new_ops": None}
    while inputs and inputs[-1] is None:  # absent trailing optional inputs
        inputs.pop()
    return cls(node, params).run(*inputs)


def _inject(inferred, new: Mapping[str, Any]):
    """`inferred` without the nodes whose outputs are now known, with those values as initializers
    where a remaining node or a graph output reads them."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(inferred)
    g = model.graph
    keep = [n for n in g.node if not all(o in new for o in n.output if o)]
    read = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    stale = [vi for vi in g.value_info if vi.name not in new]  # a partial shape would shadow the value's own
    del g.value_info[:]
    g.value_info.extend(stale)
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in new.items() if name in read)
    return model
