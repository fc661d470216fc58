"""Lookup-table predictor: a network's latency as the sum of the kernels its runtime executes.

A `Graph`'s ops are grouped into kernels by the table's fusion rules (nn-Meter's observation:
summing unfused op latencies is wrong when the runtime fuses them; Zhang et al., MobiSys 2021),
each kernel is looked up in the device table, else predicted by the kernel regressors, and a
correction calibrated on a few whole-model measurements (a scale and a per-kernel cost per kernel
type, and a constant: `Calibration`) accounts for what single-op timings include or miss (call
overhead, layout changes between kernels, caches). A prediction equals the sum of its breakdown; ops that
nothing covers are named and make it ``partial``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from device_tables.graph import UNCOVERED, Graph
from device_tables.kernels import FusionRules, Kernel, activation_plans_mb, drop_duplicates, expand_fused, group_kernels
from device_tables.ops import ACTIVATIONS, OpSpec
from device_tables.table import DeviceTable
from predictors.kernel_regressors import KernelRegressors

log = logging.getLogger(__name__)

TABLE, REGRESSOR, MISSING = "table", "regressor", "uncovered"
# Which statistic of a row is the kernel's latency: the median (the protocol's headline), or the
# 10th percentile, steadier on a machine shared with other work.
STATISTICS = ("median_ms", "p10_ms")


# Below this many whole-model measurements the calibration fits one scale, one per-kernel cost and a
# constant; from it on, a scale and a per-kernel cost per kernel type (ridge towards 1 and 0).
BY_TYPE_MIN_MODELS = 8
# Ridge penalties of the per-type fit, in the units of its relative-error least squares: a scale
# moving 1.0 away from 1 costs as much as a 100% error on one model; a per-kernel cost is in µs and
# the constant in ms (unpenalised, the constant traded off against per-kernel costs and reached
# +0.2-0.6 ms on 14-21 LiteRT calibration models, ruining small networks); the weights' cost in ms
# per MB. Their strength (a factor on all of them) and the weights a cache holds across runs
# (`CACHED_WEIGHTS_MB`, up to the measured cache where the fusion rules carry it) are chosen per
# table by cross-validation on its calibration models, from CV_MIN_MODELS models on.
RIDGE_SCALE, RIDGE_PER_KERNEL_US, RIDGE_CONSTANT_MS, RIDGE_WEIGHT_MB = 1.0, 1e-3, 10.0, 1e-3
RIDGE_STRENGTHS = (1.0, 0.1, 0.01)
CACHED_WEIGHTS_MB = (0.0, 4.0, 8.0, 16.0, 32.0)
CV_MIN_MODELS, CV_FOLDS = 16, 5
# Runtimes whose memory planner reuses a freed activation buffer only for a tensor of the same shape
# (ONNX Runtime's allocation planner): a network then spreads its activations over more memory than
# it holds at once, and that excess competes with the weights for the cache (`Calibration`). TFLite's
# arena and XNNPACK reuse memory across sizes, close to the compact plan: nothing is counted.
SAME_SHAPE_PLANNERS = frozenset({"onnxruntime"})
# Kernel regressors fitted on a table are stored beside it as NAME.regressors.json + .npz
# (`LUTPredictor.save_regressors`) and loaded instead of refitted while the rows they were fitted on
# are unchanged (`LUTPredictor.rows_digest`).
REGRESSORS_SUFFIX = ".regressors"


def regressors_stem(table: DeviceTable) -> Path | None:
    """Where a table's stored kernel regressors live (None for a table without files)."""
    return None if table.path is None else table.path.with_name(table.path.name + REGRESSORS_SUFFIX)


def kernel_type(op: str) -> str:
    """A kernel's type for calibration: its first op (``conv2d+bn+relu`` -> ``conv2d``)."""
    return op.split("+", 1)[0]


@dataclass(frozen=True)
class Calibration:
    """Whole-model correction of the kernel sum.

    ``total = sum over kernels of (scale_t * ms + per_kernel_t) + constant_ms``, where ``t`` is the
    kernel's type (`kernel_type`) with its own ``by_type[t] = (scale, per_kernel_ms)``, and types
    missing from ``by_type`` use ``scale`` and ``per_kernel_ms``. Single-op timings miss how a kernel
    behaves inside a network (caches, layouts, the runtime fusing or skipping more than alone), and
    that differs between kernel types: in the benchmark, per-type terms lift ±10% accuracy by 5-10 points.
    Each kernel also pays ``per_weight_mb_ms`` per MB of its weights, in the share of the network's
    weights beyond ``cached_weights_mb``: a single-op timing repeats one op, whose weights then sit in
    the cache, while a network whose weights outgrow the cache reads each layer's from memory (on this
    machine's onnxruntime, an OFA network's classifier runs 3x its row). With ``counts_activations``
    the activation memory the runtime's planner spreads beyond a compact plan (`SAME_SHAPE_PLANNERS`)
    takes its part of that cache first: onnxruntime's MobileNetV2 x0.5, 7.8 MB of weights, runs its
    classifier at 4.7x its row, LiteRT's at 1.6x.
    """

    scale: float = 1.0
    per_kernel_ms: float = 0.0
    constant_ms: float = 0.0
    n_models: int = 0
    mape_before: float | None = None
    mape_after: float | None = None
    by_type: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_weight_mb_ms: float = 0.0
    cached_weights_mb: float = 0.0
    ridge: float | None = None  # the penalties' strength the fit used (chosen by cross-validation)
    counts_activations: bool = False  # the cache holds a network's excess activation memory too

    def terms(self, op: str) -> tuple[float, float]:
        """(scale, per-kernel ms) of a kernel of op `op`."""
        return self.by_type.get(kernel_type(op), (self.scale, self.per_kernel_ms))

    def weights_ms_per_mb(self, network_weights_mb: float, activation_mb: float = 0.0) -> float:
        """What a kernel pays per MB of its weights in a network holding `network_weights_mb` in all
        and spreading `activation_mb` beyond a compact plan (counted with ``counts_activations``)."""
        act = activation_mb if self.counts_activations else 0.0
        return _uncached_share(network_weights_mb, self.cached_weights_mb, act) * self.per_weight_mb_ms

    def describe(self) -> str:
        """One line: the terms and the calibration models' MAPE before and after."""
        if self.n_models == 0 and not self.by_type:
            return "none (the kernel sum as it is; calibrate on whole-model measurements: LUTPredictor.calibrate)"
        if self.by_type:
            scales = sorted(s for s, _ in self.by_type.values())
            terms = (f"{len(self.by_type)} kernel types, scales {scales[0]:.2f}..{scales[-1]:.2f}, "
                     f"constant {self.constant_ms:+.3f} ms, weights {self.per_weight_mb_ms * 1e3:.1f} us/MB "
                     f"beyond {self.cached_weights_mb:g} MB"
                     + (" minus spread activations" if self.counts_activations else "")
                     + (f", ridge x{self.ridge:g}" if self.ridge is not None else ""))
        else:
            terms = f"scale {self.scale:.3f}, per kernel {self.per_kernel_ms * 1e3:+.2f} us, constant {self.constant_ms:+.3f} ms"
        if self.mape_before is None or self.mape_after is None:
            return terms
        return f"{terms}; MAPE on {self.n_models} networks {self.mape_before:.1%} -> {self.mape_after:.1%}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["by_type"] = {t: [float(s), float(k)] for t, (s, k) in sorted(self.by_type.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Calibration":
        if not d:
            return cls()
        kw = {k: d[k] for k in ("scale", "per_kernel_ms", "constant_ms", "n_models", "mape_before", "mape_after",
                                "per_weight_mb_ms", "cached_weights_mb", "ridge", "counts_activations") if k in d}
        by_type = {str(t): (float(v[0]), float(v[1])) for t, v in (d.get("by_type") or {}).items()}
        return cls(**kw, by_type=by_type)


@dataclass(frozen=True)
class KernelPrediction:
    """One kernel's share of a prediction: its row key, where the number came from, ms in the total."""

    key: str
    op: str
    nodes: tuple[str, ...]
    source: str  # table | regressor
    raw_ms: float  # table row (median) or regressed value
    ms: float  # contribution to the total: (raw_ms - single-op call overhead) * its type's calibration scale
    sigma: float = 0.0  # relative (log-space) uncertainty; 0 for table rows
    extrapolated: bool = False
    weight_mb: float = 0.0  # its weights (MB), read from memory inside a network (`Calibration.per_weight_mb_ms`)


@dataclass(frozen=True)
class UncoveredOp:
    """An op nothing could predict: named, excluded from the total, which is then partial."""

    nodes: tuple[str, ...]
    op: str
    reason: str


@dataclass
class Prediction:
    """A network's predicted latency with its breakdown; `total_ms` is their exact sum."""

    model: str
    table: str
    kernels: list[KernelPrediction]
    overhead_ms: float
    uncovered: list[UncoveredOp] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    repeats: list[str] = field(default_factory=list)  # nodes repeating an earlier op, which the runtime computes once

    @property
    def total_ms(self) -> float:
        return float(math.fsum([k.ms for k in self.kernels] + [self.overhead_ms]))

    @property
    def partial(self) -> bool:
        return bool(self.uncovered)


    @property
    def sigma_ms(self) -> float:
        """Approximate standard deviation of the total from regressed kernels (independent errors)."""
        return float(math.sqrt(sum((k.ms * k.sigma) ** 2 for k in self.kernels)))

    @property
    def counts(self) -> dict[str, int]:
        return {TABLE: sum(k.source == TABLE for k in self.kernels), REGRESSOR: sum(k.source == REGRESSOR for k in self.kernels),
                MISSING: len(self.uncovered)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "table": self.table, "total_ms": self.total_ms, "partial": self.partial,
            "sigma_ms": self.sigma_ms, "overhead_ms": self.overhead_ms, "counts": self.counts,
            "calibration": self.calibration.to_dict(),
            "kernels": [asdict(k) for k in self.kernels],
            "uncovered": [asdict(u) for u in self.uncovered],
            "repeats": list(self.repeats),
        }

    def format(self, top: int = 0) -> str:
        c = self.counts
        head = (f"{self.model}: {self.total_ms:.3f} ms{' (PARTIAL: uncovered ops excluded)' if self.partial else ''}"
                f"  ±{self.sigma_ms:.3f} ms  on {self.table}\n"
                f"  {len(self.kernels)} kernels: {c[TABLE]} looked up, {c[REGRESSOR]} regressed; "
                f"overhead {self.overhead_ms:+.3f} ms\n  calibration: {self.calibration.describe()}")
        rows = sorted(self.kernels, key=lambda k: -k.ms) if top else self.kernels
        rows = rows[:top] if top else rows
        width = min(max([len(k.key) for k in rows] + [10]), 90)
        lines = [head, f"  {'kernel (table row key)':<{width}} {'ms':>9} {'source':<10} nodes"]
        for k in rows:
            src = k.source + ("!" if k.extrapolated else "")
            if k.source == REGRESSOR:
                src += f" ±{k.sigma:.0%}"
            key = k.key if len(k.key) <= width else k.key[: width - 1] + "…"
            lines.append(f"  {key:<{width}} {k.ms:>9.4f} {src:<10} {','.join(k.nodes)[:60]}")
        if top and len(self.kernels) > top:
            lines.append(f"  ... {len(self.kernels) - top} more kernels")
        lines.append(f"  {'overhead':<{width}} {self.overhead_ms:>9.4f}")
        for u in self.uncovered:
            lines.append(f"  UNCOVERED {','.join(u.nodes)} ({u.op}): {u.reason}")
        if self.repeats:
            lines.append(f"  {len(self.repeats)} node(s) repeat an earlier op on the same input, computed once by the runtime: "
                         + ", ".join(self.repeats[:8]) + (" ..." if len(self.repeats) > 8 else ""))
        if any(k.extrapolated for k in self.kernels):
            lines.append("  (! = regressed outside the table's range: an extrapolation)")
        return "\n".join(lines)


class LUTPredictor:
    """Fusion-aware lookup-table predictor of one device table (scikit-learn style).

    ``fit(graphs, measured_ms)`` fits the kernel regressors from the table and calibrates the
    overhead on whole-model measurements (optional); ``predict_graph`` gives a `Prediction`.
    """

    def __init__(self, table: DeviceTable, rules: FusionRules | None = None, regressors: KernelRegressors | None = None,
                 use_regressors: bool = True, calibration: Calibration | None = None, statistic: str = "median_ms",
                 price_data_movement: bool = True, layout_reorders: bool = True):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic {statistic!r}: choose from {', '.join(STATISTICS)}")
        self.statistic = statistic
        self.price_data_movement = price_data_movement
        # Rows that recorded the runtime's layout reorders around their single op (ONNX Runtime's NCHWc
        # reorders, `profilers.ort.runtime`) count without them, and a network pays them at its regions' edges.
        self.layout_reorders = layout_reorders
        self.table = table
        self.rules = rules if rules is not None else FusionRules.from_meta(table.meta)
        self.regressors = regressors
        self._reorders: dict[str, Any] | None = None  # `_reorder_model`, built on first use
        self.use_regressors = use_regressors
        if calibration is None:
            stored = table.meta.get("lut_calibration") or {}
            if stored and _statistic_ms(stored.get("statistic", "median")) != statistic:
                log.warning("%s: calibrated on the %s statistic, predicting %s without that calibration; "
                            "recalibrate for %s", table.name, stored.get("statistic", "median"), statistic, statistic)
                stored = {}
            calibration = Calibration.from_dict(stored)
        self.calibration = calibration
        self.dtype = "int8" if table.device.precision == "int8" else "float32"
        # Each table row timed one call of a single-op model, paying the runtime's per-call overhead
        # that a kernel inside a network does not; the fusion probe measured it (a 1-element relu).
        self.call_overhead_ms = float((table.meta.get("fusion") or {}).get("call_overhead_ms") or 0.0)

    @property
    def regressors(self) -> KernelRegressors | None:
        return self._regressors

    @regressors.setter
    def regressors(self, value: KernelRegressors | None) -> None:
        self._regressors = value
        self._estimates = {}

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, graphs: Sequence[Any] | None = None, measured_ms: Sequence[float] | None = None) -> "LUTPredictor":
        """Fit regressors (if not given) and, with whole-model measurements, the overhead term."""
        if self.use_regressors and self.regressors is None:
            self.regressors = self.stored_regressors()
            if self.regressors is None:
                rows = self._regressor_rows()
                log.info("%s: fitting kernel regressors on %d rows (none stored for them: hwlat profile device "
                         "stores them)", self.table.name, len(rows))
                self.regressors = KernelRegressors().fit([r.spec for r in rows], [self._in_network_ms(r) for r in rows])
        if graphs is not None and measured_ms is not None:
            self.calibrate(graphs, measured_ms)
        return self

    def calibrate(self, graphs: Sequence[Any], measured_ms: Sequence[float], by_type: bool | None = None) -> Calibration:
        """Least squares on the relative error of measured vs predicted whole-model latency.

        One model fits a scale; two or three a scale and a non-negative per-kernel cost; four or
        more those and a constant. With `by_type` (the default from `BY_TYPE_MIN_MODELS` models on)
        a scale and a per-kernel cost per kernel type and a constant, pulled towards 1, 0 and 0 by
        ridge penalties (types the models lack keep 1 and 0), and a non-negative cost per MB of
        weights beyond a cached size."""
        networks = [self._found(self.graph_of(g)) for g in graphs]
        found, act = [n[0] for n in networks], np.asarray([n[3] for n in networks])
        y = np.asarray(measured_ms, dtype=np.float64)
        S = np.asarray([math.fsum(k.ms for k in f) for f in found])
        if by_type is None:
            by_type = len(y) >= BY_TYPE_MIN_MODELS
        if by_type:
            fit = _by_type_fit(found, y, *_choose_penalties(found, y, act, self.rules.weights_cache_mb), act)
            fitted = fit["fitted"]
            terms = {**fit["terms"], "counts_activations": self._spreads_activations}
        else:
            fitted, terms = _global_terms(S, np.asarray([len(f) for f in found], float), y)
        cal = Calibration(**terms, n_models=len(y), mape_before=float(np.mean(np.abs(S - y) / y)),
                          mape_after=float(np.mean(np.abs(fitted - y) / y)))
        self.calibration = cal
        return cal

    def _regressor_rows(self) -> list[Any]:
        return [r for r in self.table.rows("ok") if r.spec.dtype == self.dtype]

    def rows_digest(self) -> str:
        """A digest of what the regressors are fitted on: each row's key and in-network latency."""
        h = hashlib.sha256()
        for r in sorted(self._regressor_rows(), key=lambda r: r.spec.key):
            h.update(f"{r.spec.key}={self._in_network_ms(r):.9g}\n".encode())
        return h.hexdigest()[:16]

    def stored_regressors(self) -> KernelRegressors | None:
        """The regressors stored with the table, if they were fitted on its rows as this predictor
        reads them (same statistic, layout handling and row values); None otherwise."""
        stored = self.table.meta.get("regressors") or {}
        stem = regressors_stem(self.table)
        if not stored or stem is None or stored.get("statistic") != self.statistic \
                or bool(stored.get("layout_reorders", True)) != self.layout_reorders:
            return None
        if not stem.with_name(stem.name + ".json").exists() or stored.get("rows_digest") != self.rows_digest():
            return None
        from predictors.kernel_regressors import RegressorError

        try:
            return KernelRegressors.load(stem)
        except RegressorError as exc:
            log.warning("%s: stored regressors not used (%s); refitting", self.table.name, exc)
            return None

    def save_regressors(self) -> Path:
        """Fit the regressors if needed and store them beside the table (arrays + JSON, no pickles),
        recorded in its metadata with the digest of the rows they were fitted on."""
        if self.regressors is None:
            self.use_regressors = True
            self.fit()
        stem = regressors_stem(self.table)
        if stem is None:
            raise ValueError("a table without files cannot store regressors")
        self.regressors.save(stem)
        self.table.update_meta(regressors={"file": stem.name, "statistic": self.statistic,
                                           "layout_reorders": self.layout_reorders, "rows_digest": self.rows_digest(),
                                           "n_rows": len(self._regressor_rows()),
                                           "families": sorted(self.regressors.families_)})
        return stem

    def save_calibration(self) -> None:
        """Store the calibration in the table's metadata (``lut_calibration``)."""
        self.table.update_meta(lut_calibration={**self.calibration.to_dict(),
                                                "statistic": self.statistic.removesuffix("_ms")})

    # ---- predicting ---------------------------------------------------------------------
    def graph_of(self, model: Any, input_shape: Sequence[int] | None = None) -> Graph:
        if isinstance(model, Graph):
            return model
        if isinstance(model, (list, tuple)) and all(isinstance(s, OpSpec) for s in model):
            return Graph.from_specs(model)
        return Graph.from_onnx(model, input_shape)

    def kernels(self, graph: Graph) -> list[Kernel]:
        """The runtime's kernels of `graph`, plus a data-movement op (a channel shuffle's Transpose)
        priced as an elementwise pass over the same tensor (a ``relu`` row of that size)."""
        kernels = group_kernels(graph, self.rules)
        if self.price_data_movement:
            kernels += [Kernel(_movement_spec(op.moves, self.dtype), (op,)) for op in graph.ops
                        if op.kind == UNCOVERED and op.moves]
        return kernels

    def _spec(self, spec: OpSpec) -> OpSpec:
        """The row key a kernel is priced by: in the table's dtype; a product with a constant, in a
        table with no rows of it (measured before hwlat told the two apart), as the broadcast product."""
        spec = spec if spec.dtype == self.dtype else spec.replace(dtype=self.dtype)
        if spec.op == "scale" and "scale" not in self._row_ops:
            return OpSpec.make("mul", spec.input_shape, dtype=spec.dtype)
        return spec

    @property
    def _spreads_activations(self) -> bool:
        """The runtime's planner reuses only same-shaped buffers (`SAME_SHAPE_PLANNERS`), and the
        fusion rules say which kernels it runs, so what it allocates can be planned."""
        return bool(self.rules) and self.table.device.runtime in SAME_SHAPE_PLANNERS

    @cached_property
    def _row_ops(self) -> frozenset[str]:
        return frozenset(r.spec.op for r in self.table.rows("ok"))

    def _lookup(self, kernels: Sequence[Kernel]) -> tuple[list[KernelPrediction], list[UncoveredOp]]:
        specs = [self._spec(k.spec) for k in kernels]
        found = [self._row_ms(s) for s in specs]
        need = [i for i, v in enumerate(found) if v is None]
        estimates: dict[int, Any] = {}
        if need and self.use_regressors:
            if self.regressors is None:
                self.fit()
            # A kernel's estimate depends on its spec alone: computed once per predictor, so many
            # networks of one space (sharing most kernels) predict quickly.
            new = list({specs[i].key: specs[i] for i in need if specs[i].key not in self._estimates}.values())
            if new:
                self._estimates.update(zip((s.key for s in new), self.regressors.estimate(new)))
            estimates = {i: self._estimates[specs[i].key] for i in need}
        out, missing = [], []
        for i, (k, s) in enumerate(zip(kernels, specs)):
            mb = s.weight_count * s.element_bytes / 1e6
            if found[i] is not None:
                out.append(KernelPrediction(s.key, s.op, k.nodes, TABLE, found[i], self._net(found[i]), weight_mb=mb))
            elif estimates.get(i) is not None:
                e = estimates[i]
                out.append(KernelPrediction(s.key, s.op, k.nodes, REGRESSOR, e.ms, self._net(e.ms), e.sigma, e.extrapolated, mb))
            else:
                why = "not in the table and no regressor for this op type (the table has no rows of it)"
                missing.append(UncoveredOp(k.nodes, s.op, why))
        return out, missing

    def _found(self, graph: Graph) -> tuple[list[KernelPrediction], list[UncoveredOp], list[str], float]:
        """The kernels of `graph` with their latencies, plus the layout reorders it pays at the edges
        of its blocked-layout regions; the ops nothing covers; the nodes repeating an earlier op,
        which a runtime that shares duplicates computes once (`drop_duplicates`); the MB of
        activations the runtime's planner spreads beyond a compact plan (`SAME_SHAPE_PLANNERS`),
        only where the fusion rules say which kernels it runs: without them (naive summation) the
        plan would count intermediate tensors the runtime never allocates."""
        graph = expand_fused(graph)  # once: the kernels are then made of this graph's own ops
        repeats: list[str] = []
        if self.rules.shares_duplicates:
            kept = drop_duplicates(graph)
            outputs = {o for op in kept.ops for o in op.outputs}
            repeats = [n for op in graph.ops if op.outputs and op.outputs[0] not in outputs for n in op.nodes]
            graph = kept
        kernels = self.kernels(graph)
        found, missing = self._lookup(kernels)
        excess = 0.0
        if self._spreads_activations:
            planned, compact = activation_plans_mb(graph, kernels)
            excess = planned - compact
        return found + self._edge_reorders(graph, kernels), missing, repeats, excess

    def _edge_reorders(self, graph: Graph, kernels: Sequence[Kernel]) -> list[KernelPrediction]:
        """ONNX Runtime's NCHWc reorders inside `graph`. A kernel that reads the blocked layout pays a
        ReorderInput when its input is not blocked (the graph's input, an op that writes plain NCHW);
        a kernel whose blocked output reaches an op that cannot read it (or the graph's output) pays a
        ReorderOutput. Elementwise ops on same-shaped tensors (activations, batch norm, a residual
        add, a product with a constant) work in either layout and pass their input's on
        (`_layout_transparent`); a broadcast product of two tensors (squeeze-excite) does not.
        A row says whether its op reads and writes the blocked layout, from its own reorder shares,
        and prices them; a regressed kernel follows the rows of its op with as many channels in
        whole blocks (`_channel_class`: a conv on 3 channels reads plain NCHW), and is priced by a
        power law in the tensor's size fitted on the rows."""
        model = self._reorder_model()
        if not model:
            return []
        info = []  # (kernel, spec, row, shares, reads the blocked layout)
        layout: dict[int, tuple[bool, bool, bool]] = {}  # id(op) -> its kernel's (reads, writes, transparent)
        for k in kernels:
            spec = self._spec(k.spec)
            row = self.table.get(spec)
            row = row if row is not None and row.ok else None
            shares = _reorder_shares(row) if row is not None else {"in": 0.0, "out": 0.0}
            transparent = all(_layout_transparent(op) for op in k.ops)
            if transparent:
                reads = writes = False
            elif row is not None:
                reads, writes = shares["in"] > 0, shares["out"] > 0
            else:
                reads, writes = (_majority(model["blocked"][d], spec) for d in ("in", "out"))
            info.append((k, spec, row, shares, reads))
            layout.update((id(op), (reads, writes, transparent)) for op in k.ops)
        blocked: dict[str, bool] = {}  # tensor -> in the blocked layout
        accepts: dict[str, list[bool]] = {}  # tensor -> per reader, whether it takes the blocked layout
        for op in graph.ops:  # execution order; `graph` is expanded (`_found`): the kernels hold these ops
            k_reads, k_writes, transparent = layout.get(id(op), (False, False, False))
            for t in op.inputs:
                accepts.setdefault(t, []).append(transparent or k_reads)
            out_blocked = blocked.get(op.inputs[0], False) if transparent and op.inputs else k_writes
            for t in op.outputs:
                blocked[t] = out_blocked
        out: list[KernelPrediction] = []
        for k, spec, row, shares, reads in info:
            x = k.ops[0].inputs[0] if k.ops[0].inputs else None
            y = k.ops[-1].outputs[0] if k.ops[-1].outputs else None
            edges = {"in": reads and x is not None and not blocked.get(x, False),
                     "out": y is not None and blocked.get(y, False)
                     and (y in graph.outputs or not all(accepts.get(y) or [False]))}
            for d, paid in edges.items():
                if not paid:
                    continue
                shape = _reorder_shape(spec, d)
                if shares[d] > 0:
                    ms = shares[d] * self._above_overhead(row)
                else:
                    a, b = model["price"][d]
                    ms = math.exp(a + b * math.log(math.prod(shape)))
                if ms > 0:
                    out.append(KernelPrediction(f"reorder_{d}|{spec.dtype}|{'x'.join(map(str, shape))}", f"reorder_{d}",
                                                k.nodes, TABLE if shares[d] > 0 else REGRESSOR, ms, ms))
        return out

    def _reorder_model(self) -> dict[str, Any]:
        """From the rows with reorder shares, per direction: whether rows of each op and channel class
        (`_channel_class`) reorder (``blocked``: lists of booleans), and a power law ``log ms = a + b
        log elements`` of the reorder's time in its tensor's size (``price``); {} when no row has reorders."""
        if not self.layout_reorders:
            return {}
        if self._reorders is None:
            rows = [r for r in self.table.rows("ok") if r.spec.dtype == self.dtype]
            blocked: dict[str, dict[Any, list[bool]]] = {"in": {}, "out": {}}
            pts: dict[str, list[tuple[float, float]]] = {"in": [], "out": []}
            for r in rows:
                shares = _reorder_shares(r)
                for d, share in shares.items():
                    for key in (r.spec.op, (r.spec.op, _channel_class(r.spec))):
                        blocked[d].setdefault(key, []).append(share > 0)
                    ms = share * self._above_overhead(r)
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
            self._reorders = model
        return self._reorders

    def _net(self, ms: float) -> float:
        """A row's latency less the single-op call overhead (never below a tenth of the row)."""
        return max(ms - self.call_overhead_ms, 0.1 * ms)

    def _row_ms(self, spec: OpSpec) -> float | None:
        row = self.table.get(spec)
        return self._in_network_ms(row) if row is not None and row.ok else None

    def _in_network_ms(self, row: Any) -> float:
        """A row's latency without the layout reorders the runtime put around the single op (ONNX
        Runtime's NCHWc reorders, `_reorder_shares`), which a kernel between kernels of the same
        layout does not pay; the per-call overhead stays (see `_net`)."""
        ms = getattr(row.measurement, self.statistic)
        if not self.layout_reorders:
            return ms
        return ms - sum(_reorder_shares(row).values()) * self._above_overhead(row)

    def _above_overhead(self, row: Any) -> float:
        """A row's latency above the single-op call overhead: the node time its reorder shares divide."""
        return max(getattr(row.measurement, self.statistic) - self.call_overhead_ms, 0.0)

    def predict_graph(self, model: Any, input_shape: Sequence[int] | None = None, name: str | None = None) -> Prediction:
        """The `Prediction` of a `Graph`, an ONNX model (path/bytes/proto) or a list of specs."""
        graph = self.graph_of(model, input_shape)
        found, missing, repeats, excess_mb = self._found(graph)
        cal = self.calibration
        per_mb = cal.weights_ms_per_mb(math.fsum(k.weight_mb for k in found), excess_mb)
        kernels = [KernelPrediction(k.key, k.op, k.nodes, k.source, k.raw_ms,
                                    k.ms * cal.terms(k.op)[0] + k.weight_mb * per_mb, k.sigma,
                                    k.extrapolated, k.weight_mb) for k in found]
        overhead = math.fsum(cal.terms(k.op)[1] for k in kernels) + cal.constant_ms
        uncovered = [UncoveredOp(op.nodes, op.onnx_op, op.note) for op in graph.ops
                     if op.kind == UNCOVERED and not (self.price_data_movement and op.moves)] + missing
        return Prediction(name or graph.name or "model", self.table.name, kernels, overhead, uncovered, cal, repeats)

    def predict(self, models: Iterable[Any]) -> np.ndarray:
        """Total ms per model (partial predictions included as they are)."""
        return np.asarray([self.predict_graph(m).total_ms for m in models])

    def score(self, models: Sequence[Any], measured_ms: Sequence[float]) -> dict[str, float]:
        pred = self.predict(models)
        y = np.asarray(measured_ms, dtype=np.float64)
        rel = np.abs(pred - y) / y
        return {"mape": float(rel.mean()), "acc10": float((rel <= 0.10).mean())}


def _uncached_share(network_mb: float, cached_mb: float, activation_mb: float = 0.0) -> float:
    """The share of a network's weights a cache of `cached_mb`, holding `activation_mb` of its
    activations first, does not hold across runs."""
    if network_mb <= 0:
        return 0.0
    return min(max(network_mb + activation_mb - cached_mb, 0.0), network_mb) / network_mb


def _design(found: Sequence[Sequence[KernelPrediction]], types: Sequence[str], cached_mb: float,
            activation_mb: Sequence[float]) -> np.ndarray:
    """Columns: each type's summed ms, its kernel count (µs units), the uncached weights' MB (with
    each network's `activation_mb` in the cache first), a constant, and the summed ms of types the
    fit never saw (they keep scale 1, no per-kernel cost)."""
    n = len(types)
    col = {t: i for i, t in enumerate(types)}
    A = np.zeros((len(found), 2 * n + 3))
    A[:, 2 * n + 1] = 1.0
    for i, f in enumerate(found):
        mb = math.fsum(k.weight_mb for k in f)
        A[i, 2 * n] = mb * _uncached_share(mb, cached_mb, activation_mb[i])
        for k in f:
            j = col.get(kernel_type(k.op))
            if j is None:
                A[i, 2 * n + 2] += k.ms
                continue
            A[i, j] += k.ms
            A[i, n + j] += 1e-3  # per-kernel coefficients in µs
    return A


def _by_type_fit(found: Sequence[Sequence[KernelPrediction]], y: np.ndarray, ridge: float,
                 cached_mb: float, activation_mb: np.ndarray) -> dict[str, Any]:
    """The per-type fit, ridge on relative error: each type's scale towards 1 and per-kernel cost
    towards 0, the cost per MB of weights beyond `cached_mb` (never negative) and the constant
    towards 0; `ridge` multiplies every penalty. Its kernel types, coefficients, `Calibration`
    terms and fitted totals."""
    types = sorted({kernel_type(k.op) for f in found for k in f})
    n = len(types)
    A = _design(found, types, cached_mb, activation_mb)  # [scales | per-kernel | weights | constant | unseen types' ms]
    prior = np.concatenate([np.ones(n), np.zeros(n), [0.0, 0.0, 1.0]])
    penalty = ridge * np.concatenate([np.full(n, RIDGE_SCALE), np.full(n, RIDGE_PER_KERNEL_US),
                                      [RIDGE_WEIGHT_MB, RIDGE_CONSTANT_MS, 1e12]])
    Aw = A / y[:, None]

    def solve() -> np.ndarray:
        # The departure from the prior: (Aw'Aw + diag(penalty)) d = Aw'(1 - Aw prior).
        d = np.linalg.solve(Aw.T @ Aw + np.diag(penalty) + 1e-12 * np.eye(A.shape[1]), Aw.T @ (1.0 - Aw @ prior))
        return prior + d

    coef = solve()
    if coef[2 * n] < 0:  # reading weights from memory cannot make a network faster: no weights' cost then
        penalty[2 * n] = 1e12
        coef = solve()
        coef[2 * n] = 0.0
    by_type = {t: (float(coef[i]), float(coef[n + i]) * 1e-3) for i, t in enumerate(types)}
    terms = {"constant_ms": float(coef[2 * n + 1]), "by_type": by_type,
             "per_weight_mb_ms": float(coef[2 * n]), "cached_weights_mb": float(cached_mb), "ridge": float(ridge)}
    return {"types": types, "coef": coef, "terms": terms, "fitted": A @ coef}


def _choose_penalties(found: Sequence[Sequence[KernelPrediction]], y: np.ndarray, activation_mb: np.ndarray,
                      measured_cache_mb: float | None = None) -> tuple[float, float]:
    """(ridge strength, cached weights MB) by `CV_FOLDS`-fold cross-validation on the calibration
    models, with the one-standard-error rule: among the choices whose cross-validated MAPE is within
    one standard error of the best, the simplest: the strongest ridge, then the largest cached size
    (the fewest networks paying for their weights). On 32 models the best score alone is
    noise-prone: it had picked weak ridges with implausible terms (a negative cost per MB of weights)
    that cost up to 4 points of ±10% accuracy on other networks. Where the fusion rules carry the
    device's cache measured (`FusionRules.weights_cache_mb`: what a chain of layers with nothing
    else in the cache keeps), no candidate size above it is tried; a network's activations take
    part of the cache. Unbounded, 32 networks had chosen 0 to 32 MB between tables of one LiteRT
    device (measured: 8.4 MB), and 4 MB charged MobileNetV3-Small (8-10 MB of weights, running at
    its rows' speed) 20% more. (1, 0) below `CV_MIN_MODELS` models."""
    if len(y) < CV_MIN_MODELS:
        return 1.0, 0.0
    folds = np.arange(len(y)) % CV_FOLDS
    errors: dict[tuple[float, float], np.ndarray] = {}
    bound = math.inf if measured_cache_mb is None else measured_cache_mb
    for cached_mb in (c for c in CACHED_WEIGHTS_MB if c <= bound):
        for ridge in RIDGE_STRENGTHS:
            rel = np.empty(len(y))
            for f in range(CV_FOLDS):
                train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                fit = _by_type_fit([found[i] for i in train], y[train], ridge, cached_mb, activation_mb[train])
                pred = _design([found[i] for i in test], fit["types"], cached_mb, activation_mb[test]) @ fit["coef"]
                rel[test] = np.abs(pred - y[test]) / y[test]
            errors[(ridge, cached_mb)] = rel
    best = min(errors, key=lambda k: float(np.mean(errors[k])))
    limit = float(np.mean(errors[best]) + np.std(errors[best]) / math.sqrt(len(y)))
    within = [k for k in errors if float(np.mean(errors[k])) <= limit]
    return max(within)  # (ridge, cached MB): the strongest ridge, then the largest cache


def _global_terms(S: np.ndarray, K: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Fitted totals and `Calibration` terms of one scale, one per-kernel cost and a constant (as
    many of them as the models support), least squares on relative error."""
    w = 1.0 / y
    if len(y) >= 4 and np.ptp(K) > 0:
        A = np.stack([S, K, np.ones_like(S)], axis=1)
    elif len(y) >= 2 and np.ptp(K) > 0:
        A = np.stack([S, K], axis=1)
    else:
        A = S[:, None]
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    if len(y) < 4 and A.shape[1] == 2 and coef[1] < 0:
        # Two or three models fit both terms exactly; a negative per-kernel cost then extrapolates to
        # negative totals for networks with many more kernels than the models had: a scale alone.
        A = S[:, None]
        coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    scale = float(coef[0])
    per_k = float(coef[1]) if len(coef) > 1 else 0.0
    const = float(coef[2]) if len(coef) > 2 else 0.0
    if not (0.2 < scale < 5.0):  # a fit this far off means the table does not match the models
        log.warning("calibration scale %.3f out of range; using a scale-only fit", scale)
        scale, per_k, const = float(np.sum(S * y * w * w) / np.sum((S * w) ** 2)), 0.0, 0.0
    return scale * S + per_k * K + const, {"scale": scale, "per_kernel_ms": per_k, "constant_ms": const}


def _statistic_ms(name: str) -> str:
    """``median`` or ``median_ms`` -> ``median_ms`` (tables' metadata name statistics without the unit)."""
    return name if name.endswith("_ms") else f"{name}_ms"


def _reorder_shares(row: Any) -> dict[str, float]:
    """A row's shares of node time in the reorders into and out of its op (``reorder_in_share``,
    ``reorder_out_share``, recorded by `profilers.ort.runtime`); 0.0 where none was recorded."""
    return {d: float(row.extra.get(f"reorder_{d}_share") or 0.0) for d in ("in", "out")}


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


def _movement_spec(shape: Sequence[int], dtype: str) -> OpSpec:
    """The elementwise op whose cost stands in for copying a tensor of `shape` once (NCHW-like:
    middle dimensions merged into channels, e.g. a shuffle's 1xGxC/GxHxW -> 1xCxHxW)."""
    dims = [int(d) for d in shape]
    if len(dims) >= 4:
        four = (dims[0], int(np.prod(dims[1:-2])), dims[-2], dims[-1])
    else:
        four = (dims[0] if dims else 1, int(np.prod(dims[1:])) if len(dims) > 1 else 1, 1, 1)
    return OpSpec.make("relu", four, dtype=dtype)
