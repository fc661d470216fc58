"""Multi-node ONNX patterns that run as one op: LayerNorm and GELU as older exporters decompose them.

TorchScript exports before opset 17 write LayerNorm as ReduceMean, Sub, Pow, ReduceMean, Add eps,
Sqrt, Div, Mul gamma, Add beta; GELU before opset 20 as x * 0.5 * (1 + erf(x / sqrt 2)) or the
tanh approximation. Each is one `layernorm` or `gelu` in the vocabulary (what runtimes fuse them
into). The matchers read the graph through a `GraphView` and return a `Match`, or None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GraphView(Protocol):
    """What a matcher asks of the graph."""

    def users(self, name: str) -> list[Any]: ...
    def producer(self, name: str) -> Any: ...
    def scalar(self, name: str) -> float | None: ...
    def is_const(self, name: str) -> bool: ...
    def is_output(self, name: str) -> bool: ...
    def reduce_axes(self, node) -> list[int] | None: ...


@dataclass(frozen=True)
class Match:
    """A pattern found: `op` (``layernorm`` or ``gelu``) reads `x` and makes `out` from `nodes`."""

    op: str
    x: str
    out: str
    nodes: tuple[Any, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def find_patterns(nodes: Sequence[Any], view: GraphView) -> list[Match]:
    """Every decomposed LayerNorm (anchored at its first ReduceMean) and GELU (at its Erf or Tanh)."""
    found: list[Match] = []
    taken: set[int] = set()
    for node in nodes:
        match = None
        if node.op_type == "ReduceMean":
            match = layernorm(node, view)
        elif node.op_type == "Erf":
            match = gelu_erf(node, view)
        elif node.op_type == "Tanh":
            match = gelu_tanh(node, view)
        if match is not None and not taken & {id(n) for n in match.nodes}:
            taken.update(id(n) for n in match.nodes)
            found.append(match)
    return found


def _near(value: float | None, target: float, rel: float = 1e-3) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=rel)


def _sole_user(view: GraphView, name: str, *ops: str):
    """The one node reading `name`, when it is one of `ops` and `name` is no graph output."""
    users = view.users(name)
    if len(users) != 1 or view.is_output(name) or users[0].op_type not in ops:
        return None
    return users[0]


def _other(node, name: str) -> str | None:
    """The input of a binary `node` that is not `name` (None if `name` is not exactly one of them)."""
    ins = list(node.input)
    if len(ins) != 2 or ins.count(name) != 1:
        return None
    return ins[1 - ins.index(name)]


def _by_const(view: GraphView, node, name: str, op: str, target: float) -> bool:
    """Whether `node` is `op`(`name`, c) (or c * `name` for Mul/Add) with a scalar constant c near `target`."""
    if node is None or node.op_type != op or len(node.input) != 2:
        return False
    if node.input[0] == name:
        return _near(view.scalar(node.input[1]), target)
    return op in ("Mul", "Add") and node.input[1] == name and _near(view.scalar(node.input[0]), target)


def _times_half_x(view: GraphView, u: str, x: str) -> tuple[list[Any], str] | None:
    """The tail x * u * 0.5 in any association: (its nodes, the result)."""
    m = _sole_user(view, u, "Mul")
    if m is None:
        return None
    w = _other(m, u)
    if w == x:  # (x * u) * 0.5
        last = _sole_user(view, m.output[0], "Mul")
        return ([m, last], last.output[0]) if _by_const(view, last, m.output[0], "Mul", 0.5) else None
    if w is not None and _near(view.scalar(w), 0.5):  # (u * 0.5) * x
        last = _sole_user(view, m.output[0], "Mul")
        return ([m, last], last.output[0]) if last is not None and _other(last, m.output[0]) == x else None
    h = view.producer(w) if w else None  # (x * 0.5) * u
    if _by_const(view, h, x, "Mul", 0.5) and _sole_user(view, h.output[0], "Mul") is m:
        return [h, m], m.output[0]
    return None


def _plus_one(view: GraphView, name: str):
    """The sole Add(`name`, 1) reading `name`."""
    add = _sole_user(view, name, "Add")
    return add if _by_const(view, add, name, "Add", 1.0) else None


def gelu_erf(erf, view: GraphView) -> Match | None:
    """x * 0.5 * (1 + erf(x / sqrt 2)) (or x * 1/sqrt 2) from its Erf."""
    scaled = view.producer(erf.input[0])
    if scaled is None or len(view.users(scaled.output[0])) != 1 or scaled.op_type not in ("Div", "Mul"):
        return None
    x = next((i for i in scaled.input if not view.is_const(i)), None)
    if x is None or not (_by_const(view, scaled, x, "Div", SQRT2) or _by_const(view, scaled, x, "Mul", 1 / SQRT2)):
        return None
    one = _plus_one(view, erf.output[0])
    tail = _times_half_x(view, one.output[0], x) if one is not None else None
    if tail is None:
        return None
    return Match("gelu", x, tail[1], (scaled, erf, one, *tail[0]), {"tanh": False}, "decomposed GELU (erf)")


def _cube(view: GraphView, name: str) -> str | None:
    """x where `name` is Pow(x, 3), x * (x * x) or (x * x) * x."""
    node = view.producer(name)
    if node is None:
        return None
    if node.op_type == "Pow" and _near(view.scalar(node.input[1]), 3.0):
        return node.input[0]
    if node.op_type != "Mul":
        return None
    for sq, x in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        p = view.producer(sq)
        if p is not None and p.op_type == "Mul" and list(p.input) == [x, x]:
            return x
    return None


def gelu_tanh(tanh, view: GraphView) -> Match | None:
    """x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) from its Tanh."""
    s = view.producer(tanh.input[0])
    if s is None or s.op_type != "Mul" or len(view.users(s.output[0])) != 1:
        return None
    r_name = next((i for i in s.input if not view.is_const(i)), None)
    if r_name is None or not _by_const(view, s, r_name, "Mul", SQRT_2_OVER_PI):
        return None
    r = view.producer(r_name)
    if r is None or r.op_type != "Add" or len(view.users(r_name)) != 1:
        return None
    for q_name, x in ((r.input[0], r.input[1]), (r.input[1], r.input[0])):
        q = view.producer(q_name)
        if q is None or q.op_type != "Mul" or len(view.users(q_name)) != 1:
            continue
        p_name = next((i for i in q.input if not view.is_const(i)), None)
        if p_name is None or not _by_const(view, q, p_name, "Mul", 0.044715) or _cube(view, p_name) != x \
                or len(view.users(p_name)) != 1:
            continue
        cube = [view.producer(p_name)]
        if cube[0].op_type == "Mul":
            cube.append(view.producer(next(i for i in cube[0].input if i != x)))
        one = _plus_one(view, tanh.output[0])
        tail = _times_half_x(view, one.output[0], x) if one is not None else None
        if tail is None:
            return None
        return Match("gelu", x, tail[1], (*cube, q, r, s, tanh, one, *tail[0]), {"tanh": True}, "decomposed GELU (tanh)")
    return None


def layernorm(mean, view: GraphView) -> Match | None:
    """(x - mean) / sqrt(var + eps) [* gamma + beta] over the last axis, from its first ReduceMean."""
    x = mean.input[0]
    axes = view.reduce_axes(mean)
    if axes is None or len(axes) != 1:
        return None
    sub = _sole_user(view, mean.output[0], "Sub")
    if sub is None or list(sub.input) != [x, mean.output[0]]:
        return None
    d = sub.output[0]
    users = view.users(d)
    if len(users) != 2 or view.is_output(d):
        return None
    sq = next((u for u in users if (u.op_type == "Pow" and u.input[0] == d and _near(view.scalar(u.input[1]), 2.0))
               or (u.op_type == "Mul" and list(u.input) == [d, d])), None)
    if sq is None:
        return None
    var = _sole_user(view, sq.output[0], "ReduceMean")
    if var is None or view.reduce_axes(var) != axes:
        return None
    eps = _sole_user(view, var.output[0], "Add")
    if eps is None or _other(eps, var.output[0]) is None or view.scalar(_other(eps, var.output[0])) is None:
        return None
    root = _sole_user(view, eps.output[0], "Sqrt")
    if root is None:
        return None
    nodes = [mean, sub, sq, var, eps, root]
    norm = next((u for u in users if u is not sq), None)
    if norm.op_type == "Div" and list(norm.input) == [d, root.output[0]]:
        nodes.append(norm)
    else:
        rec = _sole_user(view, root.output[0], "Reciprocal")
        if rec is None or norm.op_type != "Mul" or _other(norm, d) != rec.output[0]:
            return None
        nodes += [rec, norm]
    out = norm.output[0]
    gamma = _sole_user(view, out, "Mul")
    if gamma is not None and view.is_const(_other(gamma, out) or ""):
        nodes.append(gamma)
        out = gamma.output[0]
        beta = _sole_user(view, out, "Add")
        if beta is not None and view.is_const(_other(beta, out) or ""):
            nodes.append(beta)
            out = beta.output[0]
    eps_value = view.scalar(_other(eps, var.output[0]))
    return Match("layernorm", x, out, tuple(nodes), {"axis": axes[0]}, f"decomposed LayerNorm (eps {eps_value:g})")
