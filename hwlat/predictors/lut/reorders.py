"""The layout reorders a runtime pays between kernels (ONNX Runtime's NCHWc ReorderInput and
ReorderOutput): which kernels read and write the blocked layout, learnt from the table rows'
recorded reorder shares, and what each reorder at a blocked region's edge costs."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from hwlat.device_tables.errors import TableError
from hwlat.device_tables.graph import Graph
from hwlat.device_tables.kernels import Kernel
from hwlat.device_tables.ops import ACTIVATIONS, OpSpec
from hwlat.predictors.lut.prediction import REGRESSOR, TABLE, KernelPrediction

# A row with its latency above the single-op call overhead: the node time its reorder shares divide.
AboveOverhead = Callable[[Any], float]


def reorder_model(rows: Sequence[Any], above_overhead: AboveOverhead) -> dict[str, Any]:
    """From the rows with reorder shares, per direction: whether rows of each op and channel class
    (`_channel_class`) reorder (``blocked``: lists of booleans), and a power law ``log ms = a + b
    log elements`` of the reorder's time in its tensor's size (``price``); {} when no row has reorders."""
    blocked: dict[str, dict[Any, list[bool]]] = {"in": {}, "out": {}}
    pts: dict[str, list[tuple[float, float]]] = {"in": [], "out": []}
    for r in rows:
        shares = reorder_shares(r)
        for d, share in shares.items():
            for key in (r.spec.op, (r.spec.op, _channel_class(r.spec))):
                blocked[d].setdefault(key, []).append(share > 0)
            ms = share * above_overhead(r)
            if ms > 0:
                pts[d].append((math.log(math.prod(_reorder_shape(r.spec, d))), math.log(ms)))
    model: dict[str, Any] = {}
    if any(pts.values()):
        model["blocked"] = blocked
        model["price"] = {}
        for d, p in pts.items():
            if len(p) >= 2 and np.ptp([x for x, _ in p]) > 0:
                x, y = np.asarray(p, dtype=np.float64).T
                b, a = np.polyfit(x, y, 1)
                model["price"][d] = (float(a), float(b))
            else:  # one size seen (or none): its mean time, flat
                model["price"][d] = (float(np.mean([y for _, y in p])) if p else -math.inf, 0.0)
    return model


def edge_reorders(graph: Graph, priced: Sequence[tuple[Kernel, OpSpec, Any, dict[str, float]]], model: dict[str, Any],
                  above_overhead: AboveOverhead, memo: dict[str, Any] | None = None) -> list[KernelPrediction]:
    """The reorders inside `graph`, whose kernels are `priced` as (kernel, row key, its ok row or
    None, the row's `reorder_shares`), under a `reorder_model`. A kernel that reads the blocked layout pays a ReorderInput when
    its input is not blocked (the graph's input, an op that writes plain NCHW); a kernel whose blocked
    output reaches an op that cannot read it (or the graph's output) pays a ReorderOutput. Elementwise
    ops on same-shaped tensors (activations, batch norm, a residual add, a product with a constant)
    work in either layout and pass their input's on (`_layout_transparent`); a broadcast product of
    two tensors (squeeze-excite) does not. A row says whether its op reads and writes the blocked
    layout, from its own reorder shares, and prices them; a regressed kernel follows the rows of its
    op with as many channels in whole blocks (`_channel_class`: a conv on 3 channels reads plain
    NCHW), and is priced by a power law in the tensor's size fitted on the rows. `memo` keeps what
    follows from a spec under this `model` (whether it is layout-transparent, its rows' majority)."""
    paid, _, _ = run_layouts(layout_program(graph, priced, model, above_overhead, memo), model)
    return [KernelPrediction(key, op, priced[i][0].nodes, source, ms, ms) for i, key, op, source, ms in paid]


def layout_program(graph: Graph, priced: Sequence[tuple[Kernel, OpSpec, Any, dict[str, float]]], model: dict[str, Any],
                   above_overhead: AboveOverhead, memo: dict[str, Any] | None = None) -> tuple:
    """What `run_layouts` needs to know of `graph` and its `priced` kernels, in plain values (a piece of
    a network keeps it, `hwlat.predictors.lut.pieces`): per op, its tensors and its kernel's layouts (reads,
    writes, transparent); per kernel, its input and output tensor, whether it reads the blocked layout,
    its dtype, the shapes a reorder into and out of it moves, its row's reorder shares and the row's
    time above the call overhead; the graph's outputs."""
    info, layout = _kernel_layouts(priced, model, {} if memo is None else memo)
    unknown = (False, False, False)
    steps = tuple((op.inputs, op.outputs) + layout.get(id(op), unknown) for op in graph.ops)
    kernels = tuple((k.ops[0].inputs[0] if k.ops[0].inputs else None, k.ops[-1].outputs[0] if k.ops[-1].outputs else None,
                     reads, spec.dtype, (_reorder_shape(spec, "in"), _reorder_shape(spec, "out")),
                     (shares["in"], shares["out"]), above_overhead(row) if row is not None else 0.0)
                    for k, spec, row, shares, reads in info)
    return steps, kernels, tuple(graph.outputs)


def run_layouts(program: tuple, model: dict[str, Any], blocked_in: dict[str, bool] | None = None,
                readers_out: dict[str, bool] | None = None) -> tuple[list[tuple[int, str, str, str, float]], dict[str, bool],
                                                                      dict[str, list[bool]]]:
    """The reorders of a `layout_program` as (kernel index, row-style key, op, source, ms), per tensor
    whether it is blocked, and per tensor the layouts its readers take (`edge_reorders` tells which
    are paid). `blocked_in` gives the layout of tensors read from before the program's ops (a piece's
    input); `readers_out`, for a tensor read after them, whether all its readers there take the blocked
    layout."""
    steps, kernels, outputs = program
    blocked = dict(blocked_in or {})  # tensor -> in the blocked layout
    accepts: dict[str, list[bool]] = {}  # tensor -> per reader, whether it takes the blocked layout
    for ins, outs, k_reads, k_writes, transparent in steps:  # execution order
        for t in ins:
            accepts.setdefault(t, []).append(transparent or k_reads)
        out_blocked = blocked.get(ins[0], False) if transparent and ins else k_writes
        for t in outs:
            blocked[t] = out_blocked
    for t, all_take in (readers_out or {}).items():
        accepts.setdefault(t, []).append(all_take)
    paid: list[tuple[int, str, str, str, float]] = []
    for i, (x, y, reads, dtype, shapes, shares, above) in enumerate(kernels):
        edges = (reads and x is not None and not blocked.get(x, False),
                 y is not None and blocked.get(y, False) and (y in outputs or not all(accepts.get(y) or [False])))
        for j, d in enumerate(("in", "out")):
            if not edges[j]:
                continue
            if shares[j] > 0:
                ms = shares[j] * above
            else:
                a, b = model["price"][d]
                ms = math.exp(a + b * math.log(math.prod(shapes[j])))
            if ms > 0:
                paid.append((i, f"reorder_{d}|{dtype}|{'x'.join(map(str, shapes[j]))}", f"reorder_{d}",
                             TABLE if shares[j] > 0 else REGRESSOR, ms))
    return paid, blocked, accepts


def readers_take_blocked(program: tuple, tensor: str) -> bool:
    """Whether every reader of `tensor` among a `layout_program`'s ops takes the blocked layout."""
    return all([transparent or reads for ins, _, reads, _, transparent in program[0] for t in ins if t == tensor] or [False])


NO_SHARES = {"in": 0.0, "out": 0.0}  # a kernel without a row: read only, never changed


def _kernel_layouts(priced: Sequence[tuple[Kernel, OpSpec, Any, dict[str, float]]], model: dict[str, Any],
                    memo: dict[str, Any]) -> tuple[list, dict]:
    """Per kernel (kernel, spec, row, its reorder shares, whether it reads the blocked layout), and
    per op of a kernel, by id, the kernel's (reads, writes, transparent)."""
    info = []  # (kernel, spec, row, shares, reads the blocked layout)
    layout: dict[int, tuple[bool, bool, bool]] = {}  # id(op) -> its kernel's (reads, writes, transparent)
    for k, spec, row, shares in priced:
        transparent = all(_transparent(op, memo) for op in k.ops)
        if transparent:
            reads = writes = False
        elif row is not None:
            reads, writes = shares["in"] > 0, shares["out"] > 0
        else:
            votes = memo.get(("votes", spec.key))
            if votes is None:
                votes = memo[("votes", spec.key)] = tuple(_majority(model["blocked"][d], spec) for d in ("in", "out"))
            reads, writes = votes
        info.append((k, spec, row, shares, reads))
        triple = (reads, writes, transparent)
        for op in k.ops:
            layout[id(op)] = triple
    return info, layout


def _transparent(op: Any, memo: dict[str, Any]) -> bool:
    """`_layout_transparent` of `op`, kept in `memo` per spec."""
    if op.spec is None:
        return False
    hit = memo.get(op.spec.key)
    if hit is None:
        hit = memo[op.spec.key] = _layout_transparent(op)
    return hit


def reorder_shares(row: Any) -> dict[str, float]:
    """A row's shares of node time in the reorders into and out of its op (``reorder_in_share``,
    ``reorder_out_share``, recorded by `hwlat.profilers.ort.runtime`); 0.0 where none was recorded. A share
    edited by hand into something else (text, below 0, above 1) is a `TableError` naming the row."""
    out = {}
    for d in ("in", "out"):
        v = row.extra.get(f"reorder_{d}_share") or 0.0
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise TableError(f"row {row.spec.key}: its extra reorder_{d}_share is {v!r}, not a share of 0 to 1; "
                             "fix it, or delete the row to measure it again")
        out[d] = float(v)
    return out


def _layout_transparent(op: Any) -> bool:
    """An op that computes elementwise on tensors of one shape (or with constants), so it works in
    any layout and keeps its input's: activations, batch norm, a residual add, a product with a constant."""
    spec = op.spec
    if spec is None or spec.is_fused:
        return False
    if spec.op in ACTIVATIONS or spec.op in ("bn", "scale"):
        return True
    if spec.op in ("add", "mul"):
        return len({tuple(s) for s in spec.input_shapes}) == 1
    return False


def _channel_class(spec: OpSpec) -> int:
    """The largest power of two up to 16 dividing the input channels: whether they fill the SIMD
    channel blocks (8 or 16 floats) of a blocked layout."""
    c = int(spec.input_shape[1]) if len(spec.input_shape) > 1 else 1
    return min(c & -c, 16) if c > 0 else 1


def _majority(votes: dict[Any, list[bool]], spec: OpSpec) -> bool:
    """Whether most rows of `spec`'s op and channel class (else of its op) reorder in that direction."""
    v = votes.get((spec.op, _channel_class(spec))) or votes.get(spec.op)
    return bool(v) and float(np.mean(v)) > 0.5


def _reorder_shape(spec: OpSpec, direction: str) -> tuple[int, ...]:
    """The tensor a reorder into (``in``) or out of (``out``) the op moves."""
    return spec.input_shape if direction == "in" else spec.output_shape

