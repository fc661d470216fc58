"""Kernels: the groups of a `Graph`'s ops a runtime executes as one, per its fusion rules.

A runtime fuses an op into the kernel before it (``conv2d`` then ``bn`` then ``relu`` runs as
``conv2d+bn+relu``) when the pattern is in its `FusionRules`; rules are detected by measurement
(`hwlat.profilers.fusion`) and stored in the device table's metadata under ``fusion``.

Some runtimes fuse more inside a network than in a single-op model: on x86, ONNX Runtime's NCHWc
layout lets a conv absorb a residual add and a HardSwish when its neighbours are convs too, while a
lone ``conv2d+hardswish`` model runs three kernels. Those patterns (``FusionRules.absorbed``) join the
conv's kernel inside a network, which is priced by the conv's own row: the absorbed tails add nothing.
A runtime that computes a repeated op once (`FusionRules.shares_duplicates`) runs a network without
its duplicates (`drop_duplicates`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Iterable, Mapping

from hwlat.device_tables.graph import FREE, OP, Graph, GraphOp
from hwlat.device_tables.ops import FUSABLE_TAILS, RANK2_OPS, OpSpec


@dataclass(frozen=True)
class FusionRules:
    """The fused patterns of one runtime (op strings such as ``conv2d+bn+relu``); every prefix of a
    pattern used must be fused too, so grouping extends a kernel one tail at a time."""

    fused: frozenset[str] = frozenset()
    measured: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    call_overhead_ms: float = field(default=0.0, compare=False)  # one call of a single-op model, measured with the rules
    # The runtime computes an op once when a network repeats it on the same input (common
    # subexpression elimination: ONNX Runtime runs NB201's avg-pools of one node once); measured
    # by `hwlat.profilers.fusion.detect_shared_duplicates`.
    shares_duplicates: bool = False
    duplicates_evidence: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The MB of weights a network keeps in the cache across runs (beyond it, each layer reads its
    # weights from memory), measured by `hwlat.profilers.fusion.detect_weights_cache`; None: not measured.
    weights_cache_mb: float | None = field(default=None, compare=False)
    weights_cache_evidence: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def none(cls) -> "FusionRules":
        """No fusion at all: every op is its own kernel (naive summation)."""
        return cls(frozenset())

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> "FusionRules":
        return cls(frozenset(patterns))

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> "FusionRules":
        """Rules stored in a table's metadata (``meta["fusion"]``); none when the table has none."""
        entry = (meta or {}).get("fusion")
        if not entry:
            return cls.none()
        duplicates = dict(entry.get("duplicates") or {})
        cache = dict(entry.get("weights_cache") or {})
        cached_mb = cache.pop("cached_mb", None)
        return cls(frozenset(entry.get("fused", [])), dict(entry.get("patterns", {})), float(entry.get("call_overhead_ms") or 0.0),
                   bool(duplicates.pop("shared", False)), duplicates, None if cached_mb is None else float(cached_mb), cache)

    def to_meta(self) -> dict[str, Any]:
        return {"fused": sorted(self.fused), "patterns": dict(self.measured), "call_overhead_ms": self.call_overhead_ms,
                "duplicates": {**self.duplicates_evidence, "shared": self.shares_duplicates},
                "weights_cache": {**self.weights_cache_evidence, "cached_mb": self.weights_cache_mb}}

    def merged(self, newer: "FusionRules", evidence: bool = False) -> "FusionRules":
        """These rules with the patterns `newer` measured added (its verdicts win); the call
        overhead, repeated-op and weights-cache evidence stay these rules' unless `evidence`
        (`newer` measured them too: its own then win)."""
        measured = {**self.measured, **newer.measured}
        fused = (self.fused - set(newer.measured)) | newer.fused
        if evidence:
            return replace(newer, fused=frozenset(fused), measured=measured)
        return replace(self, fused=frozenset(fused), measured=measured)

    def fuses(self, pattern: str) -> bool:
        return pattern in self.fused

    @cached_property
    def absorbed(self) -> frozenset[str]:
        """Patterns run apart in a single-op model but as one kernel inside a network (measured:
        ``network_kernels`` of 1, `hwlat.profilers.fusion`)."""
        return frozenset(p for p, m in self.measured.items()
                         if isinstance(m, Mapping) and not m.get("fused") and m.get("network_kernels") == 1)

    def __bool__(self) -> bool:
        return bool(self.fused)


@dataclass(frozen=True)
class Kernel:
    """One executed kernel: its spec (looked up in the table) and the graph ops it covers (with any
    tails it absorbs inside a network, which its spec leaves out)."""

    spec: OpSpec
    ops: tuple[GraphOp, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.ops[0].nodes if len(self.ops) == 1 else tuple(n for op in self.ops for n in op.nodes)


def split_kernel(spec: OpSpec) -> list[OpSpec]:
    """A fused spec -> its parts as standalone specs (``conv2d+bn+relu`` -> conv2d, bn, relu)."""
    if not spec.is_fused:
        return [spec]
    head_attrs = dict(spec.attrs)
    head = OpSpec.make(spec.base, spec.input_shape, dtype=spec.dtype, **head_attrs)
    out = [head]
    shape = head.output_shape
    for tail in spec.parts[1:]:
        out.append(OpSpec.make(tail, tail_input(tail, shape), dtype=spec.dtype))
    return out


def join_kernel(head: OpSpec, tails: Iterable[str]) -> OpSpec:
    """A head spec plus tail op names -> the fused spec."""
    op = "+".join([head.op, *tails])
    if op == head.op:
        return head
    return head._once(f"join:{op}", lambda: OpSpec.make(op, head.input_shape, dtype=head.dtype, **dict(head.attrs)))


def expand_fused(graph: Graph) -> Graph:
    """The graph with every fused spec split into its parts (so rules decide the grouping)."""
    if not any(op.kind == OP and op.spec is not None and op.spec.is_fused for op in graph.ops):
        return graph
    ops: list[GraphOp] = []
    for op in graph.ops:
        if op.kind != OP or op.spec is None or not op.spec.is_fused:
            ops.append(op)
            continue
        parts = split_kernel(op.spec)
        prev_inputs = list(op.inputs)
        head_inputs = tuple(prev_inputs[: len(parts[0].input_shapes)])
        side = prev_inputs[len(parts[0].input_shapes):]
        cur = f"{op.outputs[0] if op.outputs else op.name}.part0"
        ops.append(GraphOp(OP, parts[0], op.onnx_op, op.nodes, head_inputs, (cur,), op.note))
        for k, part in enumerate(parts[1:], start=1):
            last = k == len(parts) - 1
            out = op.outputs if last else (f"{op.outputs[0] if op.outputs else op.name}.part{k}",)
            ins: tuple[str, ...] = (cur,)
            if part.op == "add":
                ins = (cur, side.pop(0) if side else f"{cur}.residual")
            ops.append(GraphOp(OP, part, op.onnx_op, op.nodes, ins, tuple(out)))
            cur = out[0]
    return Graph(ops, graph.name, dict(graph.inputs), graph.outputs)


def drop_duplicates(graph: Graph) -> Graph:
    """The graph without ops that repeat an earlier op on the same inputs: the same spec, no weights
    of their own (pools, activations, adds; a conv's weights tell it apart), same input tensors.
    Their readers read the earlier op's output instead."""
    seen: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    ops: list[GraphOp] = []
    for op in graph.ops:
        inputs = op.inputs
        if alias:
            inputs = tuple([alias.get(t, t) for t in inputs])
            if inputs != op.inputs:
                op = replace(op, inputs=inputs)
        spec = op.spec
        # A copy's spec does not say which part it takes (attention's q, k and v slices of one tensor).
        if op.kind == OP and spec is not None and spec.weight_count == 0 and len(op.outputs) == 1 and spec.base != "copy":
            key = (spec.key, inputs)
            if key in seen:
                alias[op.outputs[0]] = seen[key]
                continue
            seen[key] = op.outputs[0]
        ops.append(op)
    if not alias:
        return graph
    return Graph(ops, graph.name, dict(graph.inputs), tuple(alias.get(t, t) for t in graph.outputs))


def group_kernels(graph: Graph, rules: FusionRules, in_network: bool = True) -> list[Kernel]:
    """Greedy, in execution order: extend each kernel with the sole consumer of its output while
    the longer pattern is fused, or (`in_network`) absorbed; the kernel's spec keeps the tails up to
    the first absorbed one. Free and uncovered ops are not part of any kernel."""
    absorbed = rules.absorbed if in_network else frozenset()
    graph = expand_fused(graph)
    ops = graph.ops
    consumers = graph.consumers()
    outputs = set(graph.outputs)
    grows = bool(rules) or bool(absorbed)
    used: set[int] = set()
    kernels: list[Kernel] = []
    for i, op in enumerate(ops):
        if i in used or op.kind != OP or op.spec is None:
            continue
        chain = [i]
        tails: list[str] = []
        priced = 0  # tails in the kernel's spec: those before the first absorbed one
        cur = op
        pattern = op.spec.op
        while grows and len(cur.outputs) == 1 and cur.outputs[0] not in outputs:
            readers = consumers.get(cur.outputs[0], ())
            if len(readers) != 1:
                break
            j = readers[0]
            nxt = ops[j]
            if j in used or nxt.kind != OP or nxt.spec is None or nxt.spec.is_fused:
                break
            tail = nxt.spec.op
            if tail not in FUSABLE_TAILS or nxt.spec.input_shape != tail_input(tail, cur.spec.output_shape):
                break
            if tail == "add" and nxt.inputs.count(cur.outputs[0]) != 1:
                break  # x + x is not a residual
            pattern = f"{pattern}+{tail}"
            if rules.fuses(pattern):
                if priced == len(tails):  # no absorbed tail before it
                    priced += 1
            elif pattern not in absorbed:
                break
            chain.append(j)
            tails.append(tail)
            cur = nxt
        used.update(chain)
        kernels.append(Kernel(join_kernel(op.spec, tails[:priced]), tuple([ops[k] for k in chain])))
    return kernels


# Kernels that may write their output over an input of the same shape that dies with them.
IN_PLACE_OPS = frozenset(FUSABLE_TAILS) | {"mul", "scale"}


def tensors(graph: Graph) -> tuple[dict[str, str], dict[str, tuple[int, ...]], dict[str, int]]:
    """(alias, shape, element bytes) of the graph's tensors: an op outside kernels (a reshape) makes
    its output an alias of its input; element bytes are 4 (fp32) unless a spec says otherwise."""
    alias: dict[str, str] = {}
    shape: dict[str, tuple[int, ...]] = {n: tuple(s) for n, s in graph.inputs.items()}
    element_bytes: dict[str, int] = {}
    for op in graph.ops:
        for t in op.outputs:
            if op.spec is not None:
                shape[t] = op.spec.output_shape
                element_bytes[t] = op.spec.element_bytes
            elif op.moves:
                shape[t] = tuple(op.moves)
            elif op.inputs:
                alias[t] = alias.get(op.inputs[0], op.inputs[0])
    return alias, shape, element_bytes


def kernel_steps(kernels: Iterable[Kernel], alias: dict[str, str]) -> list[tuple[list[str], list[str], bool]]:
    """Per kernel, the activations it reads and writes (aliases resolved) and whether it may write in
    place: the steps `activation_plans_mb` walks through."""
    steps = []
    for k in kernels:
        if len(k.ops) == 1:
            made, read = k.ops[0].outputs, k.ops[0].inputs
        else:
            made = tuple(t for op in k.ops for t in op.outputs)
            read = tuple(t for op in k.ops for t in op.inputs)
        steps.append((list(dict.fromkeys([alias.get(t, t) for t in read if t not in made])),
                      [t for t in made if t not in read] or list(k.ops[-1].outputs), k.spec.base in IN_PLACE_OPS))
    return steps


def activation_plans_mb(graph: Graph, kernels: Iterable[Kernel]) -> tuple[float, float]:
    """The MB of activation buffers `kernels` (in execution order) need under two memory plans:
    reusing a freed buffer only for a tensor of the same shape (ONNX Runtime's allocation planner;
    an elementwise kernel may also write over an input of its shape that dies with it), and the
    compact plan, the most bytes alive at once (TFLite's arena planner and XNNPACK reuse memory
    across sizes). Ops outside kernels (reshapes) alias their input."""
    alias, shape, element_bytes = tensors(graph)
    steps = kernel_steps(kernels, alias)
    last: dict[str, int] = {}
    for i, (reads, _, _) in enumerate(steps):
        for t in reads:
            last[t] = i
    for t in graph.outputs:
        last[alias.get(t, t)] = len(steps)

    sizes: dict[str, float] = {}

    def mb(t: str) -> float:
        v = sizes.get(t)
        if v is None:
            s = shape.get(t)
            v = sizes[t] = 0.0 if s is None else math.prod(s) * element_bytes.get(t, 4) / 1e6
        return v

    free: dict[tuple[int, ...], int] = {}  # shape -> freed buffers of it
    planned = peak = 0.0
    live: set[str] = set()
    for i, (reads, writes, in_place) in enumerate(steps):
        dying = [t for t in reads if last.get(t) == i and t not in graph.inputs]
        for t in writes:
            s = shape.get(t)
            same = next((d for d in dying if shape.get(d) == s), None) if in_place else None
            if same is not None:
                dying.remove(same)
            elif free.get(s):
                free[s] -= 1
            else:
                planned += mb(t)
        live.update(writes)
        peak = max(peak, math.fsum([mb(t) for t in live]))
        for t in dying:
            if t in shape:
                free[shape[t]] = free.get(shape[t], 0) + 1
        live = {t for t in live if last.get(t, -1) > i}
    return planned, peak


def _as4(shape) -> tuple[int, ...]:
    s = tuple(int(d) for d in shape)
    return s + (1, 1) if len(s) == 2 else s


def tail_input(tail: str, shape) -> tuple[int, ...]:
    """The input shape of a fused tail reading `shape`, in the token view: an elementwise tail reads
    (rows, C) as (rows, C, 1, 1); a rank-2 tail (``add+layernorm``) reads (rows, C, 1, 1) as (rows, C)."""
    s = _as4(shape)
    return s[:2] if tail in RANK2_OPS and s[2:] == (1, 1) else s


__all__ = ["FREE", "FusionRules", "Kernel", "activation_plans_mb", "expand_fused", "group_kernels", "join_kernel",
           "split_kernel"]
