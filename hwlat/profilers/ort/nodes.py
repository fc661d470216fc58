"""ONNX Runtime's nodes: their times from its profiler trace, and the source nodes each one runs.

ONNX Runtime rewrites a graph before running it: it folds constants, drops Identity/Dropout,
fuses Conv+BatchNorm(+activation) into one kernel, and on x86 moves convolutions to the blocked
NCHWc layout, renaming both nodes (``<output>_nchwc``) and tensors (``reorder_token_N``) and
inserting ``ReorderInput/ReorderOutput`` nodes; it also inlines function ops (HardSwish becomes an
unnamed HardSigmoid + Mul). `map_runtime_nodes` reads the optimised graph ONNX Runtime saved
(`SessionOptions.optimized_model_filepath`) and maps each of its nodes back to the source nodes it
covers: from node names, tensor names that survive, the data inputs of the op a node replaces, and
the ops a fused kernel says it applies (its ``activation`` attribute and sum input).
"""

from __future__ import annotations

import json
import logging
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KERNEL_SUFFIX = "_kernel_time"
# Suffixes ONNX Runtime appends when it replaces a node (the layout transformer's NCHWc nodes).
RENAME_SUFFIXES = ("_nchwc",)
# Ops ONNX Runtime inserts to move data between layouts or devices; they compute nothing of the source.
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose", "MemcpyToHost", "MemcpyFromHost"})
# Ops ONNX Runtime folds into the kernel before them (BatchNorm, residual sums, activations).
FUSED_TAIL_OPS = frozenset({"BatchNormalization", "Add", "Sum", "Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid",
                            "LeakyRelu", "Tanh"})


# ---- the profiler trace -----------------------------------------------------------------------
@dataclass
class NodeTrace:
    """One runtime node's kernel time in every profiled run (µs; 0 for a run it did not execute in)."""

    name: str
    op_type: str
    provider: str
    per_run_us: list[float] = field(default_factory=list)


def parse_trace(path: str | Path, skip_runs: int = 0) -> tuple[dict[str, NodeTrace], list[float]]:
    """Per-node times of the runs in an ONNX Runtime profile (Chrome trace JSON), the first `skip_runs` dropped.

    Returns the nodes in execution order and the runs' wall times (``model_run`` events, µs).
    """
    events = json.loads(Path(path).read_text())
    if isinstance(events, dict):  # some versions wrap the list
        events = events.get("traceEvents", [])
    runs = sorted((int(e["ts"]), int(e["ts"]) + int(e["dur"])) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) <= skip_runs:
        raise ValueError(f"the profile holds {len(runs)} runs, fewer than the {skip_runs} warm-up runs to skip")
    starts = [r[0] for r in runs]
    kept = runs[skip_runs:]
    nodes: dict[str, NodeTrace] = {}
    sums: dict[tuple[str, int], float] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(KERNEL_SUFFIX):
            continue
        ts = int(e["ts"])
        run = bisect_right(starts, ts) - 1
        if run < skip_runs or ts > runs[run][1]:
            continue  # a warm-up run, or outside any run
        args = e.get("args", {})
        name = e["name"][: -len(KERNEL_SUFFIX)]
        if not name:  # an unnamed node: name it after its op and ONNX Runtime's node index
            name = f"{args.get('op_name', 'node')}#{args.get('node_index', '?')}"
        if name not in nodes:
            nodes[name] = NodeTrace(name, str(args.get("op_name", "?")), str(args.get("provider", "?")))
        sums[(name, run)] = sums.get((name, run), 0.0) + float(e["dur"])
    for name, node in nodes.items():
        node.per_run_us = [sums.get((name, skip_runs + i), 0.0) for i in range(len(kept))]
    return nodes, [float(end - start) for start, end in kept]


def kernel_times(path: str | Path, skip_runs: int = 0) -> dict[str, list[float]]:
    """GPU time per node and run (µs, summed over its kernels) from a trace's ``Kernel`` events; {} if none.

    Only onnxruntime builds with CUDA kernel tracing (CUPTI) write ``Kernel`` events; release wheels time
    nodes on the host, where CUDA kernels are merely launched. A kernel belongs to the node its
    ``parent_name`` argument names when the build writes one, else to the node event written before it
    (the profiler puts each node's kernels right after the node).
    """
    events = json.loads(Path(path).read_text())
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    if not any(e.get("cat") == "Kernel" for e in events):
        return {}
    starts = sorted(int(e["ts"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = len(starts) - skip_runs
    if kept <= 0:
        raise ValueError(f"the profile holds {len(starts)} runs, fewer than the {skip_runs} warm-up runs to skip")
    run_of: dict[str, int] = {}  # node -> run of its latest node event
    last: str | None = None
    sums: dict[tuple[str, int], float] = {}
    for e in events:
        cat = e.get("cat")
        if cat == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX):
            args = e.get("args", {})
            name = e["name"][: -len(KERNEL_SUFFIX)] or f"{args.get('op_name', 'node')}#{args.get('node_index', '?')}"
            run_of[name] = bisect_right(starts, int(e["ts"])) - 1
            last = name
        elif cat == "Kernel":
            parent = str(e.get("args", {}).get("parent_name", "") or "")
            name = parent[: -len(KERNEL_SUFFIX)] if parent.endswith(KERNEL_SUFFIX) else (parent or last)
            run = run_of.get(name, -1) if name else -1
            if name is None or run < skip_runs:
                continue
            sums[(name, run)] = sums.get((name, run), 0.0) + float(e.get("dur", 0))
    names = dict.fromkeys(n for n, _ in sums)
    return {n: [sums.get((n, skip_runs + i), 0.0) for i in range(kept)] for n in names}


# ---- mapping runtime nodes to source nodes -------------------------------------------------
@dataclass(frozen=True)
class GraphNode:
    """The parts of an ONNX node the mapping needs."""

    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    activation: str = ""  # the activation a fused kernel applies (FusedConv, NCHWc Conv, FusedGemm)


@dataclass
class OnnxNodeGraph:
    """Nodes, initializers and inputs of an ONNX graph (a model's source graph, or the optimised graph ONNX
    Runtime saved), with tensor producers."""

    nodes: list[GraphNode]
    initializers: frozenset[str]
    inputs: frozenset[str]
    producer: dict[str, GraphNode] = field(init=False)
    by_name: dict[str, GraphNode] = field(init=False)

    def __post_init__(self) -> None:
        self.producer = {o: n for n in self.nodes for o in n.outputs if o}
        self.by_name = {n.name: n for n in self.nodes if n.name}

    @classmethod
    def from_onnx(cls, graph: Any) -> OnnxNodeGraph:
        """From an `onnx.GraphProto`."""
        nodes = [GraphNode(n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output), _activation(n))
                 for n in graph.node]
        inits = frozenset(i.name for i in graph.initializer) | {i.values.name for i in graph.sparse_initializer}
        return cls(nodes, inits, frozenset(i.name for i in graph.input) - inits)

    @property
    def tensors(self) -> set[str]:
        return set(self.producer) | set(self.initializers) | set(self.inputs)


def _family(op_type: str) -> str:
    """Op type up to ONNX Runtime's fused variants (FusedConv and Conv are one family)."""
    return op_type[len("Fused"):] if op_type.startswith("Fused") else op_type


def map_runtime_nodes(source: OnnxNodeGraph, optimized: OnnxNodeGraph) -> dict[str, list[str]]:
    """Runtime node name -> names of the source nodes it covers (source order); layout nodes cover none."""
    consts = _constant_tensors(source)
    anchors = {r.name: _anchor(r, source) for r in optimized.nodes}
    alias = _tensor_aliases(source, optimized, anchors, consts)
    for r in optimized.nodes:  # nodes known only by what they output (e.g. pieces of an inlined function)
        if anchors[r.name] is None and not _is_layout(r, anchors):
            made = [source.producer[alias[o]] for o in r.outputs if o in alias and alias[o] in source.producer]
            anchors[r.name] = made[0] if made else None
    outs = _runtime_outputs(optimized, anchors, alias)
    walk = _CoverWalk(source, consts, materialised=_inverse(outs),
                      anchor_owners=_inverse({name: {a.name} for name, a in anchors.items() if a is not None}))
    resolve = _source_tensors_of(optimized, alias)
    in_order = _source_order(source)
    result: dict[str, list[str]] = {}
    for r in optimized.nodes:
        ins = set().union(*(resolve(i) for i in r.inputs)) if r.inputs else set()
        result[r.name] = sorted(walk.covered(r.name, outs[r.name], ins, anchors[r.name]), key=in_order)
    _adopt_feeders(result, optimized, anchors, in_order)
    return result


def _tensor_aliases(source: OnnxNodeGraph, optimized: OnnxNodeGraph, anchors: dict[str, GraphNode | None],
                    consts: set[str]) -> dict[str, str]:
    """Optimised tensor -> the source tensor holding the same values: the tensors that survive, a node's
    data inputs (those of the source op it replaces), then what flows through layout nodes and out of
    fused kernels."""
    src_tensors = source.tensors
    alias: dict[str, str] = {t: t for t in optimized.tensors if t in src_tensors}
    heads = {r.name: _head(anchors[r.name], r, source) for r in optimized.nodes}
    for r in optimized.nodes:  # a node's data inputs are those of the source op it replaces
        head = heads[r.name]
        if head is None:
            continue
        for mine, theirs in zip(r.inputs, head.inputs):
            if mine and theirs and mine not in alias and mine not in optimized.initializers and theirs not in consts:
                alias[mine] = theirs
    _spread_aliases(alias, source, optimized, anchors, heads)
    return alias


def _spread_aliases(alias: dict[str, str], source: OnnxNodeGraph, optimized: OnnxNodeGraph,
                    anchors: dict[str, GraphNode | None], heads: dict[str, GraphNode | None]) -> None:
    """Extend `alias` through layout nodes (both ways) and to fused kernels' outputs until nothing changes."""
    src_consumers = _consumers(source.nodes)
    named = {a.name: r for r, a in anchors.items() if a is not None}
    changed = True
    while changed:
        changed = False
        for r in optimized.nodes:
            if not r.inputs or not r.outputs:
                continue
            i, o = r.inputs[0], r.outputs[0]
            if _is_layout(r, anchors):  # layout nodes pass values through unchanged, in both directions
                if o in alias and i not in alias and i not in optimized.initializers:
                    alias[i] = alias[o]
                    changed = True
                elif i in alias and o not in alias:
                    alias[o] = alias[i]
                    changed = True
            elif o not in alias and heads[r.name] is not None:  # a fused kernel's output is its last op's
                end = _fused_end(heads[r.name], r, src_consumers, named)
                if end is not None:
                    alias[o] = end
                    changed = True


def _source_tensors_of(optimized: OnnxNodeGraph, alias: dict[str, str]) -> Callable[[str], frozenset[str]]:
    """A function: optimised tensor -> the source tensors it is computed from (itself when it survives)."""
    memo: dict[str, frozenset[str]] = {}

    def resolve(t: str, depth: int = 0) -> frozenset[str]:
        if not t or t in optimized.initializers:
            return frozenset()
        if t in alias:
            return frozenset({alias[t]})
        if t in memo:
            return memo[t]
        memo[t] = frozenset()  # cycle guard
        p = optimized.producer.get(t)
        out = frozenset() if p is None or depth > 500 else frozenset().union(*(resolve(i, depth + 1) for i in p.inputs))
        memo[t] = out
        return out

    return resolve


def _runtime_outputs(optimized: OnnxNodeGraph, anchors: dict[str, GraphNode | None],
                     alias: dict[str, str]) -> dict[str, set[str]]:
    """Runtime node -> the source tensors it computes (its anchor's outputs when none of its own survive)."""
    outs: dict[str, set[str]] = {}
    for r in optimized.nodes:
        if _is_layout(r, anchors):
            outs[r.name] = set()
            continue
        got = {alias[o] for o in r.outputs if o in alias}
        if not got and anchors[r.name] is not None:
            got = set(anchors[r.name].outputs)
        outs[r.name] = got
    return outs


@dataclass(frozen=True)
class _CoverWalk:
    """The walk up the source graph from a runtime node's outputs to the source nodes it covers; it
    stops at its inputs, constants, tensors another runtime node computes (`materialised`: tensor ->
    runtime nodes) and source nodes another runtime node is named after (`anchor_owners`)."""

    source: OnnxNodeGraph
    consts: set[str]
    materialised: dict[str, set[str]]
    anchor_owners: dict[str, set[str]]

    def covered(self, name: str, outs: set[str], ins: set[str], own: GraphNode | None) -> list[str]:
        """Names of the source nodes runtime node `name` covers, given the source tensors it computes and
        reads and the source node it is named after."""
        producer = self.source.producer
        covered: dict[str, GraphNode] = {}
        stack = [producer[t] for t in outs if t in producer and t not in ins and t not in self.consts]
        while stack:
            s = stack.pop()
            if s.name in covered:
                continue
            covered[s.name] = s
            for t in s.inputs:
                if not t or t in ins or t in self.consts or t not in producer:
                    continue
                if self.materialised.get(t, {name}) - {name}:
                    continue  # another runtime node computes it: the boundary
                nxt = producer[t]
                if nxt is not own and self.anchor_owners.get(nxt.name, {name}) - {name}:
                    continue  # another runtime node is named after it
                stack.append(nxt)
        if own is not None:
            covered.setdefault(own.name, own)
        return list(covered)


def _adopt_feeders(result: dict[str, list[str]], optimized: OnnxNodeGraph, anchors: dict[str, GraphNode | None],
                   in_order: Callable[[str], int]) -> None:
    """A node that covers nothing but feeds others (a piece of an op the runtime decomposed, e.g. the
    HardSigmoid of an inlined HardSwish) belongs to the source op its consumers are named after."""
    consumers = _consumers(optimized.nodes)
    for r in optimized.nodes:
        if result[r.name] or _is_layout(r, anchors):
            continue
        owners = {anchors[c.name].name for o in r.outputs for c in consumers.get(o, []) if anchors[c.name] is not None}
        result[r.name] = sorted(owners, key=in_order)


def _consumers(nodes: Iterable[GraphNode]) -> dict[str, list[GraphNode]]:
    """Tensor -> the nodes that read it, in node order."""
    consumers: dict[str, list[GraphNode]] = {}
    for n in nodes:
        for t in n.inputs:
            consumers.setdefault(t, []).append(n)
    return consumers


def _inverse(mapping: dict[str, set[str]]) -> dict[str, set[str]]:
    """Value -> the keys whose sets hold it."""
    inverse: dict[str, set[str]] = {}
    for key, values in mapping.items():
        for v in values:
            inverse.setdefault(v, set()).add(key)
    return inverse


def _source_order(source: OnnxNodeGraph) -> Callable[[str], int]:
    """Sort key of source node names: their position in the source graph (unknown names last)."""
    order = {n.name: i for i, n in enumerate(source.nodes)}
    return lambda name: order.get(name, len(order))


def _is_layout(r: GraphNode, anchors: dict[str, GraphNode | None]) -> bool:
    """A node the runtime inserted to move data between layouts or devices."""
    return r.op_type in LAYOUT_OPS and anchors[r.name] is None


def _head(anchor: GraphNode | None, r: GraphNode, source: OnnxNodeGraph, max_steps: int = 4) -> GraphNode | None:
    """The source op a runtime node replaces: its anchor, or the first op of the same family upstream of it.

    A fused node is named after its last op (``<relu output>_nchwc``) but takes the inputs of its first (the Conv).
    """
    node = anchor
    for _ in range(max_steps):
        if node is None:
            return None
        if _family(node.op_type) == _family(r.op_type):
            return node
        if node.op_type not in FUSED_TAIL_OPS:
            return None  # not a chain a kernel fuses: the anchor is the runtime node's own op
        node = source.producer.get(node.inputs[0]) if node.inputs else None
    return None


def _fused_end(head: GraphNode, r: GraphNode, consumers: dict[str, list[GraphNode]],
               named: dict[str, str]) -> str | None:
    """The source tensor a fused kernel outputs: its head op followed, along single-consumer edges, by
    the BatchNormalization folded into it, the Add of its sum input and the activation it applies."""
    family = _family(r.op_type)
    can_bn = family in ("Conv", "Gemm", "ConvTranspose")
    can_sum = family == "Conv" and len(r.inputs) > 3 and bool(r.inputs[3])
    act = r.activation
    out, absorbed = head.outputs[0] if head.outputs else "", False
    while out:
        nxt = consumers.get(out, [])
        if len(nxt) != 1 or nxt[0].name in named and named[nxt[0].name] != r.name:
            break
        n = nxt[0]
        if can_bn and n.op_type == "BatchNormalization":
            can_bn = False
        elif can_sum and n.op_type in ("Add", "Sum"):
            can_sum = can_bn = False
        elif act and n.op_type == act:
            act = ""
            can_sum = can_bn = False
        else:
            break
        out, absorbed = n.outputs[0], True
    return out if absorbed else None


def _activation(node: Any) -> str:
    for a in node.attribute:
        if a.name == "activation" and a.s:
            return a.s.decode(errors="replace")
    return ""


def _constant_tensors(source: OnnxNodeGraph) -> set[str]:
    """Initializers and everything computed from them alone (Constant nodes, weight Identities...)."""
    consts = set(source.initializers)
    for n in source.nodes:  # ONNX nodes are in topological order
        if all(not t or t in consts for t in n.inputs):
            consts.update(o for o in n.outputs if o)
    return consts


def align_names(optimized: OnnxNodeGraph, traced: Sequence[tuple[str, str]]) -> OnnxNodeGraph:
    """Name the optimised graph's unnamed nodes as the profiler did (``<Op>_<index>``).

    Nodes ONNX Runtime creates while inlining functions are saved without a name; pair the traced
    names it has no node for with those nodes, by op type, in execution order.
    """
    unnamed: dict[str, list[int]] = {}
    for i, n in enumerate(optimized.nodes):
        if not n.name:
            unnamed.setdefault(n.op_type, []).append(i)
    nodes = list(optimized.nodes)
    for name, op_type in traced:
        if name in optimized.by_name or not unnamed.get(op_type):
            continue
        i = unnamed[op_type].pop(0)
        nodes[i] = replace(nodes[i], name=name)
    taken = {n.name for n in nodes if n.name}
    for i, n in enumerate(nodes):
        if not n.name:
            name, k = f"{n.op_type}#{i}", 1
            while name in taken:
                k += 1
                name = f"{n.op_type}#{i}_{k}"
            taken.add(name)
            nodes[i] = replace(n, name=name)
    return OnnxNodeGraph(nodes, optimized.initializers, optimized.inputs)


def _anchor(r: GraphNode, source: OnnxNodeGraph) -> GraphNode | None:
    """The source node a runtime node is named after, or the producer of one of its surviving outputs."""
    if r.name in source.by_name:
        return source.by_name[r.name]
    name = re.sub(r"_token_\d+$", "", r.name)  # ONNX Runtime's suffix for a name already taken
    for suffix in RENAME_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]  # named after the replaced node's output tensor
            if base in source.producer:
                return source.producer[base]
            if base in source.by_name:
                return source.by_name[base]
    if r.op_type in LAYOUT_OPS:
        return None
    if name in source.by_name:  # e.g. the QLinearConv of a QDQ model's DQ+Conv+Q, named `<conv>_token_N`
        return source.by_name[name]
    for o in r.outputs:
        if o in source.producer:
            return source.producer[o]
    return None


def name_nodes(graph: Any) -> int:
    """Give every unnamed or duplicate-named node of an `onnx.GraphProto` a unique name; the count renamed."""
    taken: set[str] = set()
    renamed = 0
    nodes = list(graph.node)
    for i, node in enumerate(nodes):
        if node.name and node.name not in taken:
            taken.add(node.name)
            continue
        base = node.name or f"{node.op_type}_{i}"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        node.name = name
        taken.add(name)
        renamed += 1
    return renamed


def source_ops(source: OnnxNodeGraph, names: Iterable[str]) -> list[str]:
    return [source.by_name[n].op_type if n in source.by_name else "?" for n in names]
