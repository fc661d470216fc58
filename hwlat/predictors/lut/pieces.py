"""A network priced piece by piece, each piece once per form: the same numbers as pricing it whole.

Networks of a search space repeat pieces: an NB201 network runs its cell five times a stage, and
FBNet and OFA networks share most blocks at a position with other networks. A `Graph` is cut after
an op where a single tensor passes from the ops before to the ops after (`cut`), written by a costed
op, read only after the cut, and where no kernel can reach across (none of its readers is a fusable
tail, or two of them differ, so two stay when repeats are computed once). Each piece is priced once
per *form* (kept as plain values, a few thousand at most): its ops and how
their tensors connect (names aside), the shape of the tensor it reads from before it and which of
its tensors are the network's outputs. What crosses a cut is then small and known exactly:

- kernels, duplicates, table rows and regressor estimates stay inside a piece;
- layouts (`reorders.run_layouts`): whether the tensor read from before is blocked, and whether
  all readers of the tensor passed on take the blocked layout, priced per such context;
- the memory plan (`kernels.activation_plans_mb`): a piece records its allocations and frees in
  order, replayed against the buffers freed before it (the planned MB add up in the same order),
  the live activations at its fullest step (the peak over the network is the largest of those sums
  with what earlier pieces keep alive, summed exactly as one list), and what it keeps alive to the
  data-movement kernels, which a network runs after all others.

Names come back from each graph's own ops. `found` equals `LUTPredictor._found_whole` exactly
(tests check it on many networks of every space); a graph that is not cut is priced whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from hwlat.device_tables.graph import OP, Graph, GraphOp
from hwlat.device_tables.kernels import Kernel, drop_duplicates, group_kernels, kernel_steps, tensors
from hwlat.device_tables.ops import FUSABLE_TAILS
from hwlat.predictors.lut import reorders
from hwlat.predictors.lut.prediction import UncoveredOp, kernel_record

# The most forms and op signatures a predictor keeps (then it forgets them all and starts again): a
# few thousand cover a space's shared pieces, and what it keeps is what Python's collector walks.
MAX_FORMS, MAX_OPS = 4096, 1 << 16
END = 1 << 60  # the step index of the kernels run after all grouped ones (data movement), and beyond

# A priced kernel of a piece: the positions of its ops in the piece, and its prediction as a record
# (`KernelPrediction`'s fields in order) or its `UncoveredOp`, with the nodes of the graph it was first
# priced in. Plain values: what a predictor keeps, Python's collector need not walk.
Template = tuple[tuple[int, ...], Any]


@dataclass(slots=True)
class Piece:
    """What one form of piece prices to, in its graph-free parts."""

    grouped: tuple[Template, ...]  # per grouped kernel, in order
    moving: tuple[Template, ...]  # per data-movement kernel, in order
    repeats: tuple[int, ...]  # positions of the ops repeating an earlier one (dropped)
    keys: tuple[str, ...]  # the row keys its kernels were priced by
    rows: tuple[Any, ...]  # and their ok rows (None: none)
    events: tuple[tuple[Any, float | None], ...] = ()  # memory plan: (shape, MB to allocate) or (shape, None): freed
    fullest: tuple[float, ...] | None = ()  # the MB alive at its fullest step (beyond what earlier pieces keep alive)
    fullest_ms: float = 0.0  # their exact sum
    kept: tuple[tuple[str, float], ...] = ()  # tensors it keeps alive past the grouped kernels: (name, MB)
    movers: tuple[tuple[tuple[str, ...], tuple[str, ...], bool], ...] = ()  # data-movement steps (reads, writes, in place)
    sizes: dict[str, tuple[Any, float, bool, bool]] = field(default_factory=dict)  # their tensors: (shape, MB, input, output)
    takes_blocked: bool = False  # every reader of the tensor read from before takes the blocked layout
    layouts: dict[tuple, tuple[list[tuple], list[tuple], bool]] = field(default_factory=dict)
    context: tuple = ()  # what pricing its reorders in a context needs (`reorders.layout_program`, ...)


def cut(graph: Graph, signatures: dict[int, tuple] | None = None) -> tuple[list[tuple[int, int, int | None]], list, list] | None:
    """The pieces of `graph` as (first op, end op, the op that writes the tensor it reads from before,
    or None), and per op its signature (kind, spec, type, note, moved shape, outputs; kept in
    `signatures` by op) and where its inputs come from (16 x how many ops back, less which output;
    a graph input by name). None where the graph has fewer than two pieces, or ops pieces do not
    cover (a fused spec, which `expand_fused` splits first; an op without inputs or outputs; a tensor
    written twice, or read before it is written)."""
    ops = graph.ops
    n = len(ops)
    signatures = {} if signatures is None else signatures
    made: dict[str, int] = {}  # tensor -> 16 x its writer + which output
    last: dict[str, int] = {}
    sigs: list[tuple] = []
    came: list[tuple] = []
    joins: list[tuple] = []  # per op: (whether it could join the kernel of the op it reads, what a duplicate of it shares)
    known = signatures.get
    written = made.get
    at = 0
    for i, op in enumerate(ops):
        rec = known(id(op))
        if rec is None or rec[0] is not op:
            rec = signatures[id(op)] = _signature(op)
        _, sig, join, ins, out = rec
        if join is None:
            return None
        sigs.append(sig)
        joins.append(join)
        if out is not None:  # one input, one output
            w = written(ins)
            came.append((at - w,) if w is not None else (("input", ins),))
            last[ins] = i
            if out in made or out in last:
                return None
            made[out] = at
        else:
            came.append(tuple([at - w if (w := written(t)) is not None else ("input", t) for t in ins]))
            for t in ins:
                last[t] = i
            for k, t in enumerate(op.outputs):
                if t in made or t in last:
                    return None
                made[t] = at + k
        at += 16
    if not graph.inputs.keys().isdisjoint(made):
        return None
    outputs = graph.outputs
    for t in outputs:
        last[t] = n
    # How many tensors cross from before each op to after it, and which (their indices add up).
    crossing = [0] * (n + 1)
    which = [0] * (n + 1)
    names = list(last)
    for j, (t, end) in enumerate(last.items()):
        w = written(t)
        start = 0 if w is None else w >> 4
        if end > start:
            crossing[start] += 1
            crossing[end] -= 1
            which[start] += j
            which[end] -= j
    pieces: list[tuple[int, int, int | None]] = []
    begin, writer = 0, None
    alive = total = 0
    for p in range(n - 1):
        alive += crossing[p]
        total += which[p]
        if alive != 1:
            continue
        t = names[total]
        w = made.get(t)
        if w is None or w & 15 or t in outputs:
            continue
        w >>= 4
        op = ops[w]
        if op.kind != OP or op.spec is None or len(op.outputs) != 1 or not _apart(ops, joins, t, w, p, last[t]):
            continue
        pieces.append((begin, p + 1, writer))
        begin, writer = p + 1, w
    if not pieces:
        return None
    pieces.append((begin, n, writer))
    return pieces, sigs, came


def _signature(op: GraphOp) -> tuple:
    """(op, its signature, (whether it could join the kernel of the op it reads, what it shares with
    a duplicate: its spec, None where it has weights or is no costed op), its input and output where
    it has one of each (else its inputs and None)); a None third where the op is not covered (a
    fused spec; no inputs or outputs; more than 16 outputs)."""
    spec = op.spec
    if not op.inputs or not op.outputs or len(op.outputs) > 16 or spec is not None and spec.is_fused:
        return op, None, None, None, None
    costed = op.kind == OP and spec is not None
    one = len(op.inputs) == 1 and len(op.outputs) == 1
    return (op, (op.kind, spec.key if spec is not None else None, op.onnx_op, op.note, op.moves, len(op.outputs)),
            (costed and spec.op in FUSABLE_TAILS, spec.key if costed and spec.weight_count == 0 else None),  # type: ignore[union-attr]
            op.inputs[0] if one else op.inputs, op.outputs[0] if one else None)


def _apart(ops: list[GraphOp], joins: list[tuple], t: str, w: int, p: int, b: int) -> bool:
    """Whether tensor `t`, written by op `w`, is read only after op `p` (up to op `b`) and no kernel
    joins its writer to a reader: none could join it (`group_kernels` joins a fusable tail), or two
    readers stay when the runtime computes repeated ops once (`drop_duplicates` drops a weightless
    op only for an earlier one of the same spec)."""
    for i in range(w + 1, p + 1):
        if t in ops[i].inputs:
            return False
    fusable = False
    kinds = set()
    for i in range(p + 1, b + 1):
        if t in ops[i].inputs:
            joins_it, shares = joins[i]
            fusable = fusable or joins_it
            kinds.add(shares or i)
    return not fusable or len(kinds) > 1


def found(lut: Any, graph: Graph) -> tuple[list[tuple], list[UncoveredOp], list[str], float] | None:
    """`LUTPredictor._found_whole` of a `graph` put together from its pieces, the found kernels as
    records (`kernel_record`); None where it is not cut (or a piece passes on a tensor that repeats an
    earlier one)."""
    memo = _memo(lut)
    signatures = memo.setdefault("ops", {})
    if len(signatures) > MAX_OPS:  # ops of graphs read from ONNX are new objects every time
        signatures.clear()
    got = cut(graph, signatures)
    if got is None:
        return None
    bounds, sigs, came = got
    known = memo.setdefault("forms", {})
    if len(known) > MAX_FORMS:  # most NB201 cells are met in one network only
        known.clear()
    ops = graph.ops
    inputs = tuple((t, tuple(s)) for t, s in graph.inputs.items())
    ends = tuple(graph.outputs)
    pieces: list[tuple[Any, list[GraphOp]]] = []
    checked: set[int] = set()
    waiting: dict[tuple, tuple] = {}  # forms met for the first time: grouped, priced when all are known
    for i, (a, b, w) in enumerate(bounds):
        nxt = bounds[i + 1][2] if i + 1 < len(bounds) else None
        spec = ops[w].spec if w is not None else None
        # The graph's outputs are all written in its last piece: while one is alive, nothing is cut.
        key = (tuple(sigs[a:b]), tuple(came[a:b]), inputs if w is None else (a - w, spec.output_shape, spec.element_bytes),  # type: ignore[union-attr]
               nxt - a if nxt is not None else _outputs_in(ops, a, b, ends))
        piece = known.get(key)
        segment = ops[a:b]
        if piece is not None and id(piece) not in checked:
            if piece is False:
                return None
            if not _rows_hold(lut, piece):
                piece = None
            else:
                checked.add(id(piece))
        if piece is None:
            if key not in waiting:
                grouped = _group(lut, tuple(segment), ops[nxt].outputs[0] if nxt is not None else None, graph)
                if grouped is False:
                    known[key] = False
                    return None
                waiting[key] = (grouped, tuple(segment), ops[w] if w is not None else None,
                                ops[nxt].outputs[0] if nxt is not None else None)
            piece = key
        pieces.append((piece, segment))
    if waiting:
        # The kernels no row prices, of every new piece, estimated together (`LUTPredictor._estimate`).
        lut._estimate([p[0] for grouped, *_ in waiting.values() for p in grouped[-1] if p[2] is None])
        for key, (grouped, segment, writer, out) in waiting.items():
            known[key] = _price(lut, grouped, segment, writer, out)
        pieces = [(known[p], segment) if p.__class__ is tuple else (p, segment) for p, segment in pieces]
    return _assemble(lut, pieces)


def _outputs_in(ops: list[GraphOp], a: int, b: int, ends: tuple[str, ...]) -> tuple:
    """Where the graph's outputs `ends` are written inside ops a..b: (op, output) per output, or None."""
    if not ends:
        return ()
    return tuple(next(((j - a, op.outputs.index(t)) for j, op in enumerate(ops[a:b], start=a) if t in op.outputs), None)
                 for t in ends)


def _memo(lut: Any) -> dict[str, Any]:
    """The pieces' memo of `lut`: emptied with its settings (`LUTPredictor._memo`) and whenever what
    prices a kernel outside the table changes (its regressors, whether it uses them)."""
    memo = lut._memo("pieces")
    held = (lut._estimates, lut.use_regressors, lut.price_data_movement, lut._spreads_activations)
    was = memo.get("held")
    if was is None or was[0] is not held[0] or was[1:] != held[1:]:
        memo.clear()
        memo["held"] = held
    return memo


def _rows_hold(lut: Any, piece: Piece) -> bool:
    """Whether the table still holds the rows the piece was priced by (`LUTPredictor._priced`)."""
    get = lut.table.get
    for key, row in zip(piece.keys, piece.rows):
        now = get(key)
        if (now if now is not None and now.ok else None) is not row:
            return False
    return True


def _group(lut: Any, segment: tuple[GraphOp, ...], out: str | None, graph: Graph) -> tuple | bool:
    """A piece's kernels as `LUTPredictor._found_whole` finds a graph's: (its graph without repeats,
    the positions of the repeats, grouped kernels, data-movement kernels, their rows (`_priced`));
    False where the tensor it passes on repeats an earlier one (its readers after the cut would read
    another tensor)."""
    made = {t for op in segment for t in op.outputs}
    reads = {t for op in segment for t in op.inputs}
    sub = Graph(list(segment), graph.name, {t: s for t, s in graph.inputs.items() if t in reads},
                tuple(t for t in graph.outputs if t in made))
    repeats: tuple[int, ...] = ()
    kept = sub
    if lut.rules.shares_duplicates:
        kept = drop_duplicates(sub)
        if kept is not sub:
            left = {o for op in kept.ops for o in op.outputs}
            if out is not None and out not in left:
                return False
            repeats = tuple(j for j, op in enumerate(segment) if op.outputs[0] not in left)
    grouped = group_kernels(kept, lut.rules)
    moving = lut._movements(kept)
    return kept, repeats, grouped, moving, lut._priced(grouped + moving)


def _price(lut: Any, grouped_piece: tuple, segment: tuple[GraphOp, ...], writer: GraphOp | None, out: str | None) -> Piece:
    """Price one piece (`_group`) as `LUTPredictor._found_whole` prices a graph."""
    kept, repeats, grouped, moving, priced = grouped_piece
    read = writer.outputs[0] if writer is not None else None
    kernels = grouped + moving
    where = {op.outputs[0]: j for j, op in enumerate(segment)}
    places = [tuple([where[op.outputs[0]] for op in k.ops]) for k in kernels]
    each = tuple(zip(places, [p if isinstance(p, UncoveredOp) else kernel_record(p) for p in lut._lookup_each(kernels, priced)]))
    g = len(grouped)
    piece = Piece(each[:g], each[g:], repeats, tuple(p[0].key for p in priced), tuple(p[1] for p in priced))
    model = lut._reorder_model()
    if model:
        program = reorders.layout_program(kept, [(k, p[0], p[1], p[3]) for k, p in zip(kernels, priced)], model,
                                          lut._above_overhead, lut._memo("layouts"))
        piece.context = (program, tuple(places), g, read, out)
        piece.takes_blocked = read is not None and reorders.readers_take_blocked(program, read)
    if lut._spreads_activations:
        _plan(piece, kept, grouped, moving, read, out, writer)
    return piece


def _plan(piece: Piece, graph: Graph, grouped: list[Kernel], moving: list[Kernel], read: str | None, out: str | None,
          writer: GraphOp | None) -> None:
    """The piece's share of `activation_plans_mb` (which it follows step by step): its allocations
    and frees in order, the MB alive at its fullest step, what it keeps alive to the data-movement
    kernels and those kernels' steps."""
    alias, shape, element_bytes = tensors(graph)
    if writer is not None:  # the piece's input, written outside it (the graph's own ops come first)
        shape.setdefault(read, writer.spec.output_shape)  # type: ignore[arg-type, union-attr]
        element_bytes.setdefault(read, writer.spec.element_bytes)  # type: ignore[arg-type, union-attr]
    steps, movers = kernel_steps(grouped, alias), kernel_steps(moving, alias)
    last: dict[str, int] = {}
    for i, (reads, _, _) in enumerate(steps):
        for t in reads:
            last[t] = i
    for reads, _, _ in movers:
        for t in reads:
            last[t] = END
    for t in graph.outputs:
        last[alias.get(t, t)] = END + 1
    if out is not None:
        last[out] = END - 1  # read by the next piece

    mb = {t: math.prod(v) * element_bytes.get(t, 4) / 1e6 for t, v in shape.items()}
    inputs = set(graph.inputs)
    events, lives, live = _walk(steps, last, shape, mb, inputs, {read} if read is not None else set())
    piece.events = tuple(events)
    piece.fullest, piece.fullest_ms = _fullest(lives) if lives else (None, 0.0)
    piece.kept = tuple((t, mb.get(t, 0.0)) for t in live if last.get(t, -1) >= END)
    piece.movers = tuple((tuple(r), tuple(w), p) for r, w, p in movers)
    involved = {t for t, _ in piece.kept} | {t for r, w, _ in movers for t in (*r, *w)}
    piece.sizes = {t: (shape.get(t, _NO_SHAPE), mb.get(t, 0.0), t in inputs, last.get(t, -1) == END + 1) for t in involved}


def _fullest(lives: list[list[float]]) -> tuple[tuple[float, ...], float]:
    """The MB alive at the step with the largest exact sum, and that sum rounded once: a larger
    rounded sum is a larger exact one (rounding keeps order), and equal rounded sums are told apart
    by the sign of their exact difference."""
    best, top = lives[0], math.fsum(lives[0])
    for mbs in lives[1:]:
        total = math.fsum(mbs)
        if total > top or total == top and math.fsum(mbs + [-m for m in best]) > 0:
            best, top = mbs, total
    return tuple(best), top


_NO_SHAPE = object()  # a tensor whose shape the plan does not know (freed into no pool)


def _walk(steps: list, last: dict, shape: dict, mb: dict, inputs: set, live: set) -> tuple[list, list, set]:
    """`activation_plans_mb`'s walk through `steps`: a written tensor takes the buffer of a same-shaped
    input dying with an in-place kernel, else a buffer is allocated (a freed one of its shape, or a
    new one). The allocations and frees in order ((shape, MB) and (shape, None): `_replay`), the MB
    alive after each step, and the live tensors after the last."""
    events: list[tuple[Any, float | None]] = []
    lives: list[list[float]] = []
    for i, (reads, writes, in_place) in enumerate(steps):
        dying = [t for t in reads if last.get(t) == i and t not in inputs]
        for t in writes:
            s = shape.get(t)
            same = next((d for d in dying if shape.get(d) == s), None) if in_place else None
            if same is not None:
                dying.remove(same)
            else:
                events.append((s, mb.get(t, 0.0)))
        live.update(writes)
        lives.append([mb.get(t, 0.0) for t in live])
        events += [(shape[t], None) for t in dying if t in shape]
        # Alive after the step: what a later step reads (every tensor alive before it is read at it or later).
        live.difference_update([t for t in reads if last.get(t) == i] + [t for t in writes if last.get(t, -1) <= i])
    return events, lives, live


def _replay(events: Iterable[tuple[Any, float | None]], pool: dict[Any, int], planned: float) -> float:
    """`planned` MB plus the buffers `events` allocate that `pool` (freed buffers per shape, updated)
    does not hold, added in order."""
    for s, m in events:
        if m is None:
            pool[s] = pool.get(s, 0) + 1
        elif pool.get(s):
            pool[s] -= 1
        else:
            planned += m
    return planned


def _layouts(lut: Any, piece: Piece, blocked: bool, taken: bool | None) -> tuple[list[tuple], list[tuple], bool]:
    """The piece's reorders (of its grouped kernels, of its data-movement kernels) as (places, key, op,
    source, ms) when the tensor it reads from before is `blocked` and every reader of the tensor it
    passes on takes the blocked layout (`taken`; None: it passes none on), and whether that tensor
    leaves it blocked."""
    hit = piece.layouts.get((blocked, taken))
    if hit is None:
        program, places, g, read, out = piece.context
        paid, layout, _ = reorders.run_layouts(program, lut._reorder_model(), {read: blocked} if read is not None else None,
                                               {out: taken} if out is not None else None)
        hit = piece.layouts[(blocked, taken)] = (tuple([(places[i], *r) for i, *r in paid if i < g]),
                                                 tuple([(places[i], *r) for i, *r in paid if i >= g]),
                                                 out is not None and layout.get(out, False))
    return hit


def _nodes(segment: list[GraphOp], places: tuple[int, ...]) -> tuple[str, ...]:
    """The nodes of the kernel of ops `places` of `segment` (`Kernel.nodes`)."""
    return segment[places[0]].nodes if len(places) == 1 else tuple([n for j in places for n in segment[j].nodes])


def _uncovered(segment: list[GraphOp], template: Template) -> UncoveredOp:
    places, u = template
    nodes = _nodes(segment, places)
    return u if nodes == u.nodes else UncoveredOp(nodes, u.op, u.reason)


def _assemble(lut: Any, pieces: list[tuple[Piece, list[GraphOp]]]) -> tuple[list, list, list, float]:
    """The graph's (found kernels as records, missing, repeats, excess MB) from its pieces, in
    `_found_whole`'s order: grouped kernels, data-movement kernels, then their reorders in that order."""
    found: list[tuple] = []
    missing: list[UncoveredOp] = []
    repeats: list[str] = []
    moved: list[tuple[Any, list[GraphOp]]] = []
    for piece, segment in pieces:
        for places, r in piece.grouped:
            if r.__class__ is tuple:
                n = segment[places[0]].nodes if len(places) == 1 else _nodes(segment, places)
                found.append(r if n == r[2] else (r[0], r[1], n) + r[3:])
            else:
                missing.append(_uncovered(segment, (places, r)))
        if piece.moving:
            moved.append((piece.moving, segment))
        if piece.repeats:
            repeats.extend(n for j in piece.repeats for n in segment[j].nodes)
    for templates, segment in moved:
        for places, r in templates:
            if r.__class__ is tuple:
                n = _nodes(segment, places)
                found.append(r if n == r[2] else (r[0], r[1], n) + r[3:])
    for templates, segment in moved:
        missing.extend(_uncovered(segment, t) for t in templates if t[1].__class__ is not tuple)
    if lut._reorder_model():
        later: list[tuple[tuple, list[GraphOp]]] = []
        blocked = False
        for i, (piece, segment) in enumerate(pieces):
            taken = pieces[i + 1][0].takes_blocked if i + 1 < len(pieces) else None
            first, then, blocked = _layouts(lut, piece, blocked, taken)
            found += [(key, op, _nodes(segment, places), source, ms, ms, 0.0, False, 0.0)
                      for places, key, op, source, ms in first]
            if then:
                later.append((then, segment))
        for then, segment in later:
            found += [(key, op, _nodes(segment, places), source, ms, ms, 0.0, False, 0.0)
                      for places, key, op, source, ms in then]
    excess = _excess(pieces) if lut._spreads_activations else 0.0
    return found, missing, repeats, excess


def _excess(pieces: list[tuple[Piece, list[GraphOp]]]) -> float:
    """`activation_plans_mb`'s planned less compact MB, from the pieces' plans: their events replayed
    in order, the fullest step of each with what earlier pieces keep alive, then the data-movement
    kernels' steps."""
    pool: dict[Any, int] = {}
    planned = peak = 0.0
    kept: list[float] = []
    for piece, _ in pieces:
        planned = _replay(piece.events, pool, planned)
        if piece.fullest is not None:  # None: a piece without kernels (no step)
            peak = max(peak, math.fsum(kept + list(piece.fullest)) if kept else piece.fullest_ms)
        if piece.kept:
            kept += [m for _, m in piece.kept]
    movers = [(tuple((i, t) for t in r), tuple((i, t) for t in w), p) for i, (piece, _) in enumerate(pieces)
              for r, w, p in piece.movers]
    if not movers:
        return planned - peak
    sizes = {(i, t): v for i, (piece, _) in enumerate(pieces) for t, v in piece.sizes.items()}
    last: dict[Any, int] = {}
    for j, (reads, _, _) in enumerate(movers):
        for t in reads:
            last[t] = j
    for t, v in sizes.items():
        if v[3]:
            last[t] = END
    shape = {t: v[0] for t, v in sizes.items() if v[0] is not _NO_SHAPE}
    live = {(i, t) for i, (piece, _) in enumerate(pieces) for t, _ in piece.kept}
    events, lives, _ = _walk(movers, last, shape, {t: v[1] for t, v in sizes.items()}, {t for t, v in sizes.items() if v[2]}, live)
    return _replay(events, pool, planned) - max([peak] + [math.fsum(mbs) for mbs in lives])
