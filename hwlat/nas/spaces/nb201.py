"""NAS-Bench-201 (Dong & Yang, ICLR 2020): the CIFAR-10 cell space, 5 ops on 6 edges, 15625 archs.

Network (paper, section 2.1; HW-NAS-Bench's `nas_201_models`): 3x3 conv stem (16 channels) + BN,
three stages of 5 cells at 16/32/64 channels joined by residual reduction blocks (ReLU-conv3x3/s2-BN,
ReLU-conv3x3-BN, shortcut avgpool2x2 + conv1x1), BN + ReLU, global average pool, linear classifier.
A cell has 4 nodes; node i sums op(node j) over j < i; ops: none (zero), skip_connect (identity),
nor_conv_1x1 / nor_conv_3x3 (ReLU-conv-BN), avg_pool_3x3 (stride 1, pad 1, padding not counted).

Indices are the official ones: the archs are generated in ``CellStructure.gen_all`` order (the
op of the last edge varies fastest) and shuffled with ``random.seed(88)`` (NAS-Bench-201's
``exps/NAS-Bench-201/main.py``); index 0 is ``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+...``.

Dead edges: an edge is live when it is not ``none`` and lies on a path from the cell input to the
cell output through non-``none`` edges. Every other edge cannot change the output except by a
constant (an op on a node that is always zero), so the built networks (`to_graph`, `to_onnx`,
`to_torch`) omit them; a cell with no input-to-output path outputs zeros (``x * 0``, as NAS-Bench-201's
zero op does). ``NB201Space(keep_dead=True)`` builds the official network instead: every edge
computed, ``none`` as ``x * 0``, as PyTorch eager runs it (what most public devices measured).
`api_params` counts parameters the way the NAS-Bench-201 API does (every non-none edge).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from hwlat.device_tables.archtable import ArchKeys
from hwlat.nas.spaces.base import ArchError, Space, as_rng, key_seed
from hwlat.profilers.base import Option

if TYPE_CHECKING:
    from hwlat.nas.choices import Decisions

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to node, from node) of the 6 edges in arch-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_ARCHS = len(OPS) ** len(EDGES)  # 15625
STAGE_CHANNELS = (16, 32, 64)
CELLS_PER_STAGE = 5
ARCH_STR_FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op one of " + ", ".join(OPS)
_ARCH_STR = re.compile(r"^\|(\w+)~0\|\+\|(\w+)~0\|(\w+)~1\|\+\|(\w+)~0\|(\w+)~1\|(\w+)~2\|$")


@dataclass(frozen=True)
class NB201Arch:
    """Six op indices (into `OPS`) in arch-string edge order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""

    ops: tuple[int, ...]

    @property
    def arch_str(self) -> str:
        o = [OPS[i] for i in self.ops]
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    @property
    def ops6(self) -> str:
        return "-".join(map(str, self.ops))

    @property
    def code(self) -> int:
        """Position in ``gen_all`` order (base-5 number of the ops, last edge least significant)."""
        c = 0
        for o in self.ops:
            c = c * len(OPS) + o
        return c

    @property
    def index(self) -> int:
        """The official NAS-Bench-201 index."""
        return int(_index_of_code()[self.code])

    def live_edges(self) -> tuple[bool, ...]:
        """Per edge: not none, and on an input-to-output path of non-none edges."""
        return _live_edges(self.ops)

    def dead_edges(self) -> list[int]:
        """Edges (positions 0..5) that are not none but on no input-to-output path."""
        live = self.live_edges()
        return [e for e in range(len(EDGES)) if self.ops[e] != 0 and not live[e]]

    @property
    def connected(self) -> bool:
        """True when the cell output depends on its input."""
        return any(self.live_edges())

    def __str__(self) -> str:
        return self.arch_str


@lru_cache(maxsize=1)
def _code_of_index() -> np.ndarray:
    codes = list(range(N_ARCHS))  # gen_all order == base-5 code order
    random.Random(88).shuffle(codes)  # NAS-Bench-201: random.seed(88); random.shuffle(archs)
    return np.asarray(codes, dtype=np.int32)


@lru_cache(maxsize=1)
def _index_of_code() -> np.ndarray:
    inv = np.empty(N_ARCHS, dtype=np.int32)
    inv[_code_of_index()] = np.arange(N_ARCHS, dtype=np.int32)
    return inv


def _ops_of_code(code: int) -> tuple[int, ...]:
    ops = []
    for _ in EDGES:
        code, o = divmod(code, len(OPS))
        ops.append(o)
    return tuple(reversed(ops))


@lru_cache(maxsize=N_ARCHS)
def _live_edges(ops: tuple[int, ...]) -> tuple[bool, ...]:
    reach = {0}  # nodes reachable from the input through non-none edges
    for to in (1, 2, 3):
        if any(ops[e] != 0 and f in reach for e, (t, f) in enumerate(EDGES) if t == to):
            reach.add(to)
    coreach = {3}  # nodes from which the output is reachable
    for frm in (2, 1, 0):
        if any(ops[e] != 0 and t in coreach for e, (t, f) in enumerate(EDGES) if f == frm):
            coreach.add(frm)
    return tuple(ops[e] != 0 and f in reach and t in coreach for e, (t, f) in enumerate(EDGES))


class NB201Space(Space):
    """NAS-Bench-201 on CIFAR-10 (32x32 input, 10 classes).

    `encode` (36 values): one-hot of the op on each of the 6 edges (6 x 5, edge-major, op order
    `OPS`), then 6 flags, 1 where the edge is live (dead edges keep their one-hot, so the code is
    one-to-one; multiply to get the live-only one-hot).

    `keep_dead=True` builds the official network (dead edges and zero ops computed); the default
    omits what cannot change the output.
    """

    name = "nb201"
    # The public CSVs' keys: rows sorted by index (a local row without one goes last).
    arch_keys = ArchKeys("nb201", columns=("nb201_index", "arch_str", "ops6"), primary="arch_str",
                         int_columns=("nb201_index",), order_by="nb201_index", order_with_gaps=True)
    key_columns = arch_keys.columns
    key_column = arch_keys.primary
    transfer_join_column = "nb201_index"
    transfer_query = (900, 1900)  # HELP's split
    size = N_ARCHS
    num_classes = 10
    input_size = 32

    native_indices = True
    accuracy_file = "nb201_accuracy.npz"  # NATS-Bench's test accuracies (hwlat/nas/data/README.md)
    cli_options = (Option("--keep-dead-edges", "keep_dead", "build the official network with dead edges and zero ops "
                                                            "(default: omitted)", switch=True),)

    def __init__(self, keep_dead: bool = False):
        self.keep_dead = keep_dead

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keep_dead={self.keep_dead})"

    def latency_feature_groups(self, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
        return _latency_feature_groups(self, enc)

    def decisions(self) -> Decisions:
        return _decisions(self)

    def is_arch(self, obj: Any) -> bool:
        return isinstance(obj, NB201Arch)

    # ---- architectures ------------------------------------------------------------------
    def from_index(self, index: int) -> NB201Arch:
        if not 0 <= index < N_ARCHS:
            raise ArchError(f"NAS-Bench-201 index {index} out of range; expected 0..{N_ARCHS - 1}")
        return NB201Arch(_ops_of_code(int(_code_of_index()[index])))

    def index(self, arch: Any) -> int:
        return self.as_arch(arch).index

    def enumerate(self) -> Iterator[NB201Arch]:
        """All 15625 archs in official index order."""
        return (NB201Arch(_ops_of_code(int(c))) for c in _code_of_index())

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[NB201Arch]:
        """`n` distinct archs (uniform without replacement; n <= 15625)."""
        if n > N_ARCHS:
            raise ArchError(f"cannot sample {n} distinct NAS-Bench-201 archs; the space has {N_ARCHS}")
        idx = as_rng(seed).choice(N_ARCHS, size=n, replace=False)
        return [self.from_index(int(i)) for i in idx]

    def rare_archs(self) -> list[NB201Arch]:
        """Every edge `none`: each cell outputs zeros (``x * 0``), a kernel only the 2.5% of
        architectures with a dead cell run."""
        return [NB201Arch((0,) * len(EDGES))]

    def mutate(self, arch: Any, rng: np.random.Generator | int | None = None) -> NB201Arch:
        rng = as_rng(rng)
        ops = list(self.as_arch(arch).ops)
        e = int(rng.integers(len(EDGES)))
        ops[e] = int(rng.choice([o for o in range(len(OPS)) if o != ops[e]]))
        return NB201Arch(tuple(ops))

    # ---- keys ---------------------------------------------------------------------------
    def key(self, arch: Any) -> str:
        return self.as_arch(arch).arch_str

    def key_record(self, arch: Any) -> dict[str, Any]:
        a = self.as_arch(arch)
        return {"nb201_index": a.index, "arch_str": a.arch_str, "ops6": a.ops6}

    def parse(self, key: Any) -> NB201Arch:
        """An arch string, an index (int or digits), an ops6 string (``4-2-1-2-1-1``), or 6 op indices."""
        if isinstance(key, NB201Arch):
            return key
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.from_index(int(key))
        if isinstance(key, (tuple, list)):
            return self._from_ops(key, repr(key))
        if not isinstance(key, str):
            raise ArchError(f"cannot read a NAS-Bench-201 arch from {type(key).__name__} {key!r}")
        text = key.strip()
        if text.isdigit():
            return self.from_index(int(text))
        if re.fullmatch(r"-?\d+", text):
            raise ArchError(f"NAS-Bench-201 index {text} out of range; expected 0..{N_ARCHS - 1}")
        if re.fullmatch(r"[\d\-]+", text):
            return self._from_ops(text.split("-"), text)
        m = _ARCH_STR.match(text)
        if not m:
            raise ArchError(f"malformed NAS-Bench-201 arch string {text!r}; expected {ARCH_STR_FORM}, "
                            "an index 0..15624 or six op indices like 4-2-1-2-1-1")
        unknown = [op for op in m.groups() if op not in OPS]
        if unknown:
            raise ArchError(f"unknown NAS-Bench-201 op(s) {unknown} in {text!r}; ops: {', '.join(OPS)}")
        return NB201Arch(tuple(OPS.index(op) for op in m.groups()))

    def _from_ops(self, values, shown: str) -> NB201Arch:
        try:
            ops = tuple(int(v) for v in values)
        except (TypeError, ValueError):
            raise ArchError(f"NAS-Bench-201 ops {shown} are not integers; expected six op indices 0..4 like 4-2-1-2-1-1") from None
        if len(ops) != len(EDGES) or any(not 0 <= o < len(OPS) for o in ops):
            raise ArchError(f"NAS-Bench-201 ops {shown}: expected six op indices 0..4 "
                            f"({', '.join(f'{i}={op}' for i, op in enumerate(OPS))}), e.g. 4-2-1-2-1-1")
        return NB201Arch(ops)

    # ---- encodings ----------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        names = [f"e{t}{f}_{op}" for t, f in EDGES for op in OPS]
        return names + [f"e{t}{f}_live" for t, f in EDGES]

    def encode_one(self, arch: NB201Arch) -> np.ndarray:
        v = np.zeros(len(EDGES) * len(OPS) + len(EDGES), dtype=np.float32)
        for e, o in enumerate(arch.ops):
            v[e * len(OPS) + o] = 1.0
        v[len(EDGES) * len(OPS):] = arch.live_edges()
        return v

    # ---- building -----------------------------------------------------------------------
    def macs_many(self, archs) -> np.ndarray:
        """MACs of many architectures: every edge of a cell has the same width, so MACs add up over
        the edges that are built (live ones, or all with `keep_dead`). The table is taken from
        all-skip cells (no MACs, every edge live), changing one edge at a time."""
        archs = [self.as_arch(a) for a in archs]
        ops = np.asarray([a.ops for a in archs], dtype=np.int64).reshape(-1, len(EDGES))
        built = np.ones(ops.shape, dtype=bool) if self.keep_dead else np.asarray([a.live_edges() for a in archs],
                                                                                 dtype=bool).reshape(ops.shape)
        m0, table = self._slot_macs("edges", NB201Arch, (OPS.index("skip_connect"),) * len(EDGES), len(OPS))
        return m0 + (table[np.arange(len(EDGES)), ops] * built).sum(axis=1)

    def network(self, arch: Any, batch: int = 1):
        from hwlat.nas.spaces.network import Net

        arch = self.as_arch(arch)
        return self._build(Net((batch, 3, self.input_size, self.input_size), seed=key_seed(arch.arch_str)), arch)

    def graph(self, arch: Any, batch: int = 1):
        """`Space.graph`, built straight from the layers (`net_graph.GraphNet`), without the network."""
        from hwlat.nas.spaces.net_graph import GraphNet

        arch = self.as_arch(arch)
        graph = self._build(GraphNet((batch, 3, self.input_size, self.input_size)), arch).graph(f"{self.name}:{arch.arch_str}")
        return graph if graph is not None else super().graph(arch, batch)

    def _build(self, net, arch: NB201Arch):
        """The layers of `arch` on `net` (a `Net`, or a `GraphNet` making its graph)."""
        live = (True,) * len(EDGES) if self.keep_dead else arch.live_edges()
        x = net.conv("input", STAGE_CHANNELS[0], 3, bn=True, name="stem")
        for s, c in enumerate(STAGE_CHANNELS):
            if s > 0:
                x = self._reduction(net, x, c, f"res{s}")
            for i in range(CELLS_PER_STAGE):
                x = self._cell(net, x, arch, live, f"s{s}c{i}")
        x = net.bn_act(x, "relu", name="lastact")
        x = net.gap(x, name="pool")
        x = net.flatten(x, name="flatten")
        net.linear(x, self.num_classes, name="classifier")
        return net

    @staticmethod
    def _reduction(net, x: str, cout: int, name: str) -> str:
        """ResNet basic block with stride 2 (NAS-Bench-201's ``ResNetBasicblock``)."""
        r = net.act(x, "relu", name=f"{name}.relu_a")
        a = net.conv(r, cout, 3, stride=2, bn=True, name=f"{name}.conv_a")
        a = net.act(a, "relu", name=f"{name}.relu_b")
        a = net.conv(a, cout, 3, bn=True, name=f"{name}.conv_b")
        s = net.avgpool(x, 2, 2, name=f"{name}.down_pool")
        s = net.conv(s, cout, 1, bn=False, bias=False, name=f"{name}.down_conv")
        return net.add(s, a, name=f"{name}.add")

    @staticmethod
    def _cell(net, x: str, arch: NB201Arch, live: tuple[bool, ...], name: str) -> str:
        """The cell's layers (`_cell_plan` of its live edges) on `net`, read from `x`."""
        c = net.shape(x)[1]
        steps, out = _cell_plan(arch.ops, live)
        vals = [x]  # the cell's tensors: its input, then what each step writes
        for kind, suffix, a, b in steps:
            tag = f"{name}.{suffix}"
            if kind == "conv":
                vals.append(net.conv(vals[a], c, b, bn=True, name=tag))
            elif kind == "relu":
                vals.append(net.act(vals[a], "relu", name=tag))
            elif kind == "add":
                vals.append(net.add(vals[a], vals[b], name=tag))
            elif kind == "pool":
                vals.append(net.avgpool(vals[a], 3, 1, padding=1, count_include_pad=False, name=tag))
            else:  # zero
                vals.append(net.zero(vals[a], name=tag))
        return vals[out]

    def api_params(self, arch: Any, num_classes: int | None = None) -> int:
        """Parameters as the NAS-Bench-201 API counts them: every non-none edge, dead or live."""
        arch = self.as_arch(arch)
        ncls = self.num_classes if num_classes is None else num_classes
        total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
        for s, c in enumerate(STAGE_CHANNELS):
            if s > 0:
                cin = STAGE_CHANNELS[s - 1]
                total += cin * c * 9 + 2 * c + c * c * 9 + 2 * c + cin * c
            per_cell = sum(c * c * (1 if OPS[o] == "nor_conv_1x1" else 9) + 2 * c
                           for o in arch.ops if OPS[o] in ("nor_conv_1x1", "nor_conv_3x3"))
            total += CELLS_PER_STAGE * per_cell
        return total + 2 * STAGE_CHANNELS[-1] + STAGE_CHANNELS[-1] * ncls + ncls

    def describe(self, arch: Any) -> list[str]:
        arch = self.as_arch(arch)
        live = arch.live_edges()
        lines = [f"nb201 index {arch.index}  ops6 {arch.ops6}", f"arch_str {arch.arch_str}", "cell edges:"]
        for e, (t, f) in enumerate(EDGES):
            dead = "DEAD (kept: keep_dead)" if self.keep_dead else "DEAD (omitted)"
            state = "live" if live[e] else ("-" if arch.ops[e] == 0 else dead)
            lines.append(f"  node{t} <- node{f}: {OPS[arch.ops[e]]:<13} {state}")
        if not arch.connected:
            lines.append("  the cell output does not depend on its input: each cell outputs zeros")
        return lines


@lru_cache(maxsize=2 * N_ARCHS)
def _cell_plan(ops: tuple[int, ...], live: tuple[bool, ...]) -> tuple[tuple[tuple[str, str, int, int], ...], int]:
    """A cell's layers in build order as (kind, name suffix, input, kernel or second input), inputs
    by position among the cell's tensors (0: its input, i: what step i - 1 writes), and which tensor
    it outputs. Node i sums op(node j) over its live edges j < i; a conv edge reads its source node
    through one ReLU shared by all conv edges from that node; a cell whose output node has no live
    edge outputs its input times zero."""
    steps: list[tuple[str, str, int, int]] = []
    nodes: dict[int, int] = {0: 0}
    relu_of: dict[int, int] = {}
    for to in (1, 2, 3):
        terms = []
        for e, (t, f) in enumerate(EDGES):
            if t != to or not live[e]:
                continue
            op, src, tag = OPS[ops[e]], nodes[f], f"e{t}{f}"
            if op == "skip_connect":
                terms.append(src)
                continue
            if op == "none":  # only when keep_dead: NAS-Bench-201's zero op
                steps.append(("zero", f"{tag}.zero", src, 0))
            elif op == "avg_pool_3x3":
                steps.append(("pool", f"{tag}.pool", src, 0))
            else:
                if f not in relu_of:
                    steps.append(("relu", f"n{f}.relu", src, 0))
                    relu_of[f] = len(steps)
                k = 1 if op == "nor_conv_1x1" else 3
                steps.append(("conv", f"{tag}.conv{k}x{k}", relu_of[f], k))
            terms.append(len(steps))
        if terms:
            acc = terms[0]
            for j, term in enumerate(terms[1:]):
                steps.append(("add", f"n{to}.add{j}", acc, term))
                acc = len(steps)
            nodes[to] = acc
    if 3 not in nodes:
        steps.append(("zero", "zero", 0, 0))
        return tuple(steps), len(steps)
    return tuple(steps), nodes[3]


# ---- latency features (`hwlat.nas.features`) and categorical decisions (`hwlat.nas.choices`) -------------
# Input-to-output paths of the cell as edge positions (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).
_NB201_PATHS = ((3,), (0, 4), (1, 5), (0, 2, 5))
_NB201_EDGE_TO = (1, 2, 2, 3, 3, 3)


def _latency_feature_groups(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    n, n_ops, n_edges = len(enc), len(OPS), len(EDGES)
    onehot = enc[:, : n_edges * n_ops].reshape(n, n_edges, n_ops)
    live = enc[:, n_edges * n_ops:]
    ops = onehot.argmax(axis=2)
    live_onehot = onehot * live[:, :, None]
    present = (ops != 0).astype(float)
    raw_counts = onehot.sum(axis=1)  # per op, none included (NAS-Bench-201 runs x*0 for none)
    live_counts = live_onehot.sum(axis=1)[:, 1:]
    conv = np.isin(ops, (2, 3))
    nonskip = np.isin(ops, (2, 3, 4))
    path_ok = np.stack([np.all(ops[:, list(p)] != 0, axis=1) for p in _NB201_PATHS], axis=1)
    path_conv = np.stack([conv[:, list(p)].sum(axis=1) for p in _NB201_PATHS], axis=1)
    path_ops = np.stack([nonskip[:, list(p)].sum(axis=1) for p in _NB201_PATHS], axis=1)
    # critical path per op type: runtimes that run a cell's branches concurrently pay the
    # longest input-to-output chain, not the sum
    path_by_op = [np.where(path_ok, np.stack([(ops[:, list(p)] == o).sum(axis=1) for p in _NB201_PATHS], axis=1), 0)
                  .max(axis=1, keepdims=True) for o in (3, 2, 4)]
    indeg_live = np.stack([live[:, [e for e in range(n_edges) if _NB201_EDGE_TO[e] == t]].sum(axis=1)
                           for t in (1, 2, 3)], axis=1)
    indeg_raw = np.stack([present[:, [e for e in range(n_edges) if _NB201_EDGE_TO[e] == t]].sum(axis=1)
                          for t in (1, 2, 3)], axis=1)
    edge_names = [f"e{t}{f}" for t, f in EDGES]
    extra = np.hstack([
        np.maximum(indeg_live - 1, 0).sum(axis=1, keepdims=True),
        np.maximum(indeg_raw - 1, 0).sum(axis=1, keepdims=True),
        (live.sum(axis=1, keepdims=True) == 0).astype(float),
        np.where(path_ok, path_conv, 0).max(axis=1, keepdims=True),
        np.where(path_ok, path_ops, 0).max(axis=1, keepdims=True),
        path_ok.sum(axis=1, keepdims=True),
        *path_by_op,
        present, live, indeg_live, indeg_raw,
    ])
    extra_names = (["adds_live", "adds_all", "dead_cell", "longest_path_convs", "longest_path_ops", "paths",
                    "longest_path_conv3x3", "longest_path_conv1x1", "longest_path_pool"]
                   + [f"{e}_present" for e in edge_names] + [f"{e}_live" for e in edge_names]
                   + [f"node{t}_in_live" for t in (1, 2, 3)] + [f"node{t}_in_all" for t in (1, 2, 3)])
    return [
        ("enc", list(sp.feature_names), enc),
        ("enc", [f"{e}_{op}_live" for e in edge_names for op in OPS], live_onehot.reshape(n, -1)),
        ("cost", [f"n_{op}" for op in OPS], raw_counts),
        ("cost live", [f"n_{op}_live" for op in OPS[1:]], live_counts),
        ("extra", extra_names, extra),
    ]


def _decisions(sp: Space) -> Decisions:
    from hwlat.nas.choices import Decisions

    names = tuple(f"edge{t}{f}" for t, f in EDGES)
    return Decisions(sp.name, names, (OPS,) * len(EDGES), lambda a: sp.as_arch(a).ops,
                     lambda idx: NB201Arch(tuple(idx)))
