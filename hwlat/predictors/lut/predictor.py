"""The lookup-table predictor (`LUTPredictor`): a `Graph` grouped into kernels by the table's
fusion rules, each kernel looked up in the device table or estimated by the kernel regressors, plus
the layout reorders between them, corrected by the table's `Calibration`."""

from __future__ import annotations

import logging
import math
import functools
import threading
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hwlat.device_tables.graph import FREE, UNCOVERED, Graph
from hwlat.device_tables.kernels import FusionRules, Kernel, activation_plans_mb, drop_duplicates, expand_fused, group_kernels
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.table import DeviceTable
from hwlat.predictors.kernel_regressors import KernelRegressors, structure_ranges, unseen_structure
from hwlat.predictors.lut import pieces, regressors_store, reorders
from hwlat.predictors.lut.calibration import Calibration, fit_calibration
from hwlat.predictors.lut.prediction import REGRESSOR, TABLE, KernelPrediction, Prediction, UncoveredOp, kernel_record

log = logging.getLogger(__package__)  # the package's name, which its messages have always carried
_FITTING = threading.Lock()  # held while a predictor loads or fits its kernel regressors (`LUTPredictor.fit`)


# Which statistic of a row is the kernel's latency: the median (the protocol's headline), or the
# 10th percentile, steadier on a machine shared with other work.
STATISTICS = ("median_ms", "p10_ms")

# Runtimes whose memory planner reuses a freed activation buffer only for a tensor of the same shape
# (ONNX Runtime's allocation planner): a network then spreads its activations over more memory than
# it holds at once, and that excess competes with the weights for the cache (`Calibration`). TFLite's
# arena and XNNPACK reuse memory across sizes, close to the compact plan: nothing is counted.


def held_out_error(meta: dict) -> float:
    """A table's one-sigma relative error on whole networks: the root mean square of log(predicted /
    measured) over the networks its self-score held out from calibration (`hwlat profile device`'s
    score stage); 0 for a table without that stage."""
    ratios = np.asarray(list(((meta.get("self_score") or {}).get("ratios") or {}).values()), dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    return float(np.sqrt(np.mean(np.log(ratios) ** 2))) if ratios.size else 0.0


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
        # reorders, `hwlat.profilers.ort.runtime`) count without them, and a network pays them at its regions' edges.
        self.layout_reorders = layout_reorders
        self.table = table
        self.rules = rules if rules is not None else FusionRules.from_meta(table.meta)
        self.regressors = regressors
        self._reorders: dict[str, Any] | None = None  # `_reorder_model`, built on first use
        self._memos: tuple[tuple, dict[str, dict[str, Any]]] | None = None  # `_memo`: (settings, memos)
        self.use_regressors = use_regressors
        stored_calibration = None
        if calibration is None:
            stored = table.meta.get("lut_calibration") or {}
            if stored and _statistic_ms(stored.get("statistic", "median")) != statistic:
                log.warning("%s: calibrated on the %s statistic, predicting %s without that calibration; "
                            "recalibrate for %s", table.name, stored.get("statistic", "median"), statistic, statistic)
                calibration = Calibration(set_aside=f"the table's is fitted on the {stored.get('statistic', 'median')}")
            else:
                calibration = stored_calibration = Calibration.from_dict(stored)
        self.calibration = calibration
        self.dtype = "int8" if table.device.precision == "int8" else "float32"
        # Each table row timed one call of a single-op model, paying the runtime's per-call overhead
        # that a kernel inside a network does not; the fusion probe measured it (a 1-element relu).
        self.call_overhead_ms = float((table.meta.get("fusion") or {}).get("call_overhead_ms") or 0.0)
        # The score stage measured the table's default prediction; another one errs otherwise (a naive sum
        # without fusion rules by 1.5-2x), so its sigma keeps only the kernels' part and `unscored` says why.
        self.network_error = held_out_error(table.meta)
        self.unscored = "" if self.network_error else f"{table.name} has no score stage"
        unlike = [what for what, differs in (("fusion rules", rules is not None), ("statistic", statistic != "median_ms"),
                                             ("calibration", calibration is not stored_calibration),
                                             ("regressors", not use_regressors),
                                             ("data movement", not price_data_movement),
                                             ("layout reorders", not layout_reorders)) if differs]
        if self.network_error and unlike:
            self.network_error = 0.0
            self.unscored = f"{table.name}'s score stage measured its default prediction, not this one ({', '.join(unlike)})"
        # This machine's time now over the table's (`hwlat.device_profile.scale_to_speed_now`): every
        # kernel and the overhead carry it; 1 predicts the table's own times. `speed_error`: how far
        # networks stray from that one factor now (`Speed.spread`), a part of every prediction's sigma.
        self.speed = 1.0
        self.speed_error = 0.0

    @property
    def regressors(self) -> KernelRegressors | None:
        return self._regressors

    @regressors.setter
    def regressors(self, value: KernelRegressors | None) -> None:
        self._regressors = value
        self._estimates = {}
        self._structures: dict[str, Any] | None = None  # `structure_ranges` of the rows, made on first use

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, graphs: Sequence[Any] | None = None, measured_ms: Sequence[float] | None = None) -> "LUTPredictor":
        """Fit regressors (if not given) and, with whole-model measurements, the overhead term."""
        if self.use_regressors and self.regressors is None:
            with _FITTING:  # threads predicting with one predictor set them once (setting them empties `_estimates`)
                if self.regressors is None:
                    regressors = self.stored_regressors()
                    if regressors is None:
                        rows = self._regressor_rows()
                        log.info("%s: fitting kernel regressors on %d rows (none stored for them: hwlat profile "
                                 "device stores them)", self.table.name, len(rows))
                        regressors = KernelRegressors().fit([r.spec for r in rows],
                                                            [self._in_network_ms(r) for r in rows])
                    self.regressors = regressors
        if graphs is not None and measured_ms is not None:
            self.calibrate(graphs, measured_ms)
        return self

    def calibrate(self, graphs: Sequence[Any], measured_ms: Sequence[float], by_type: bool | None = None) -> Calibration:
        """Calibrate on whole-model measurements of `graphs` (`fit_calibration`: least squares on
        the relative error of measured vs predicted latency; per kernel type with `by_type`)."""
        networks = [self._found(self.graph_of(g)) for g in graphs]
        found, act = [n[0] for n in networks], np.asarray([n[3] for n in networks])
        cal = fit_calibration(found, measured_ms, act, by_type, self.rules.weights_cache_mb, self._spreads_activations)
        self.calibration = cal
        return cal

    def _regressor_rows(self) -> list[Any]:
        return [r for r in self.table.rows("ok") if r.spec.dtype == self.dtype]

    def rows_digest(self) -> str:
        """A digest of what the regressors are fitted on: each row's key and in-network latency."""
        return regressors_store.rows_digest(self._regressor_rows(), self._in_network_ms)

    def stored_regressors(self) -> KernelRegressors | None:
        """The regressors stored with the table, if they were fitted on its rows as this predictor
        reads them (same statistic, layout handling and row values); None otherwise."""
        return regressors_store.load(self.table, self.statistic, self.layout_reorders, self.rows_digest)

    def save_regressors(self) -> Path:
        """Fit the regressors if needed and store them beside the table (arrays + JSON, no pickles),
        recorded in its metadata with the digest of the rows they were fitted on."""
        if self.regressors is None:
            self.use_regressors = True
            self.fit()
        return regressors_store.save(self.table, self.regressors, {
            "statistic": self.statistic, "layout_reorders": self.layout_reorders, "rows_digest": self.rows_digest(),
            "n_rows": len(self._regressor_rows())})

    def save_calibration(self) -> None:
        """Store the calibration in the table's metadata (``lut_calibration``)."""
        self.table.update_meta(lut_calibration={**self.calibration.to_dict(),
                                                "statistic": self.statistic.removesuffix("_ms")})

    # ---- predicting ---------------------------------------------------------------------
    @staticmethod
    def graph_of(model: Any, input_shape: Sequence[int] | None = None) -> Graph:
        if isinstance(model, Graph):
            return model
        if isinstance(model, (list, tuple)) and all(isinstance(s, OpSpec) for s in model):
            return Graph.from_specs(model)
        return Graph.from_onnx(model, input_shape)

    def kernels(self, graph: Graph) -> list[Kernel]:
        """The runtime's kernels of `graph`, plus a data-movement op (a channel shuffle's Transpose)
        priced as a copy of the same tensor (`_movement_spec`)."""
        return group_kernels(graph, self.rules) + self._movements(graph)

    def _movements(self, graph: Graph) -> list[Kernel]:
        """The data-movement kernels of `kernels`, which follow the grouped ones."""
        if not self.price_data_movement:
            return []
        concat = "concat" in self._row_ops
        return [Kernel(_movement_spec(op.moves, self.dtype, concat), (op,)) for op in graph.ops
                if op.kind == UNCOVERED and op.moves]

    def _spec(self, spec: OpSpec) -> OpSpec:
        """The row key a kernel is priced by: in the table's dtype; a product with a constant, in a
        table with no rows of it (measured before hwlat told the two apart), as the broadcast product."""
        spec = spec if spec.dtype == self.dtype else spec.replace(dtype=self.dtype)
        if spec.op == "scale" and "scale" not in self._row_ops:
            return OpSpec.make("mul", spec.input_shape, dtype=spec.dtype)
        return spec

    @property
    def _spreads_activations(self) -> bool:
        """The runtime's planner reuses only same-shaped buffers (`Runtime.same_shape_planner`), and
        the fusion rules say which kernels it runs, so what it allocates can be planned."""
        return bool(self.rules) and same_shape_planner(self.table.device.runtime)

    @cached_property
    def _row_ops(self) -> frozenset[str]:
        return frozenset(r.spec.op for r in self.table.rows("ok"))

    def _priced(self, kernels: Sequence[Kernel]) -> list[tuple[OpSpec, Any, float | None, dict[str, float]]]:
        """Per kernel: its row key (`_spec`), its ok row (or None), the row's in-network ms (or None)
        and its reorder shares. Kept per kernel spec while the table holds the same row object and
        the predictor's settings stay: many networks of a space share most kernels."""
        memo = self._memo("priced")
        table_get = self.table.get
        out = []
        for k in kernels:
            hit = memo.get(k.spec.key)
            if hit is not None:
                row = table_get(hit[0].key)
                if (row if row is not None and row.ok else None) is hit[1]:
                    out.append(hit)
                    continue
            spec = self._spec(k.spec)
            row = self._ok_row(spec)
            hit = memo[k.spec.key] = (spec, row, None if row is None else self._in_network_ms(row),
                                      reorders.reorder_shares(row) if row is not None else reorders.NO_SHARES)
            out.append(hit)
        return out

    def _memo(self, name: str) -> dict[str, Any]:
        """A memo of values that follow from a kernel's spec under this predictor's settings; emptied
        when a setting it depends on changes (fusion rules, statistic, overhead, layout handling)."""
        settings = (self.rules, self.statistic, self.call_overhead_ms, self.layout_reorders, self.dtype)
        held = self._memos
        if held is None or held[0][0] is not self.rules or held[0][1:] != settings[1:]:
            held = self._memos = (settings, {})
        return held[1].setdefault(name, {})

    def _lookup(self, kernels: Sequence[Kernel], priced: Sequence[tuple]) -> tuple[list[KernelPrediction], list[UncoveredOp]]:
        each = self._lookup_each(kernels, priced)
        return ([p for p in each if isinstance(p, KernelPrediction)], [p for p in each if isinstance(p, UncoveredOp)])

    def _lookup_each(self, kernels: Sequence[Kernel], priced: Sequence[tuple]) -> list[KernelPrediction | UncoveredOp]:
        """Per kernel, its `KernelPrediction` (a table row or a regressor's estimate), or the
        `UncoveredOp` nothing prices."""
        # A kernel whose row records that the device could not run it (it does not fit a board's arena, the
        # runtime lacks the op) is not regressed from the ones that ran: the network cannot run as priced.
        failed = {i: row for i, p in enumerate(priced) if p[2] is None
                  and (row := self.table.get(p[0].key)) is not None and not row.ok}
        # Nor one that the device plainly cannot hold (over a board's tensor arena): regressed, a model too
        # big for the board read as a number.
        limits = {i: why for i, p in enumerate(priced) if p[2] is None and i not in failed
                  and (why := self._cannot_run(p[0])) is not None}
        need = [i for i, p in enumerate(priced) if p[2] is None and i not in failed and i not in limits]
        estimates: dict[int, Any] = {}
        if need and self.use_regressors:
            self._estimate([priced[i][0] for i in need])
            estimates = {i: self._estimates[priced[i][0].key] for i in need}
        out: list[KernelPrediction | UncoveredOp] = []
        for i, (k, (s, _, ms, _)) in enumerate(zip(kernels, priced)):
            mb = s.weight_count * s.element_bytes / 1e6
            if ms is not None:
                out.append(KernelPrediction(s.key, s.op, k.nodes, TABLE, ms, self._net(ms), weight_mb=mb))
            elif i in failed:
                out.append(UncoveredOp(k.nodes, s.op, f"the device could not run it when profiled: {failed[i].error}"))
            elif i in limits:
                out.append(UncoveredOp(k.nodes, s.op, f"the device cannot run it: {limits[i]}"))
            elif estimates.get(i) is not None:
                e = estimates[i]
                out.append(KernelPrediction(s.key, s.op, k.nodes, REGRESSOR, e.ms, self._net(e.ms), e.sigma, e.extrapolated, mb))
            else:
                why = ("not in the table and no regressor for this op type (the table has no rows of it)"
                       if self.use_regressors else "not in the table (regressors off: --no-regressors)")
                out.append(UncoveredOp(k.nodes, s.op, why))
        return out

    def _cannot_run(self, spec: OpSpec) -> str | None:
        """Why the table's device cannot run `spec` (`Runtime.cannot_run`), once per kernel spec."""
        memo = self._memo("cannot_run")
        if spec.key not in memo:
            memo[spec.key] = runtime_limits(self.table.device.runtime)(spec, self.table.device)
        return memo[spec.key]

    def _estimate(self, specs: Sequence[OpSpec]) -> None:
        """The regressors' estimates of `specs` (row keys no row prices) into `_estimates`, fitting or
        loading the regressors first where needed. A kernel's estimate depends on its spec alone:
        computed once per predictor, so many networks of one space (sharing most kernels) predict
        quickly. Estimated together only where the regressors give a spec the same numbers whatever
        else the batch holds (``rows_apart``); else one spec at a time, since a batch's matrix products
        round a row by the others (the last bit): a network predicts alike alone and among others."""
        if not specs or not self.use_regressors:
            return
        if self.regressors is None:
            self.fit()
        new = list({s.key: s for s in specs if s.key not in self._estimates}.values())
        if getattr(self.regressors, "rows_apart", False):
            self._estimates.update(zip((s.key for s in new), self.regressors.estimate(new) if new else ()))
        else:
            for s in new:
                self._estimates[s.key] = self.regressors.estimate([s])[0]
        # A kernel whose kernel size, stride, groups or channel blocks no row of its family has
        # (a grouped 3x3 conv, 27 output channels) is regressed as if it had: an extrapolation, flagged.
        if new and self._structures is None:
            self._structures = structure_ranges(r.spec for r in self._regressor_rows())
        for s in new:
            e = self._estimates[s.key]
            if e is not None and unseen_structure(s, self._structures):
                self._estimates[s.key] = e.of_new_kind()

    def _found(self, graph: Graph) -> tuple[list[KernelPrediction], list[UncoveredOp], list[str], float]:
        """`_found_whole`, put together from the graph's pieces where it has several (`pieces`:
        each piece priced once per form and context, the same numbers)."""
        found, missing, repeats, excess = self._found_records(graph)
        return [KernelPrediction(*r) for r in found], missing, repeats, excess

    def _found_records(self, graph: Graph) -> tuple[list[tuple], list[UncoveredOp], list[str], float]:
        """`_found` with each kernel as a plain record: a tuple of `KernelPrediction`'s fields in order."""
        got = pieces.found(self, graph)
        if got is None:
            expanded = expand_fused(graph)  # pieces hold no fused spec: split first
            got = pieces.found(self, expanded) if expanded is not graph else None
            graph = expanded
        if got is not None:
            return got
        found, missing, repeats, excess = self._found_whole(graph)
        return [kernel_record(k) for k in found], missing, repeats, excess

    def _found_whole(self, graph: Graph) -> tuple[list[KernelPrediction], list[UncoveredOp], list[str], float]:
        """The kernels of `graph` with their latencies, plus the layout reorders it pays at the edges
        of its blocked-layout regions; the ops nothing covers; the nodes repeating an earlier op,
        which a runtime that shares duplicates computes once (`drop_duplicates`); the MB of
        activations the runtime's planner spreads beyond a compact plan (`Runtime.same_shape_planner`),
        only where the fusion rules say which kernels it runs: without them (naive summation) the
        plan would count intermediate tensors the runtime never allocates."""
        graph = expand_fused(graph)  # once: the kernels are then made of this graph's own ops
        repeats: list[str] = []
        if self.rules.shares_duplicates:
            kept = drop_duplicates(graph)
            if kept is not graph:
                outputs = {o for op in kept.ops for o in op.outputs}
                repeats = [n for op in graph.ops if op.outputs and op.outputs[0] not in outputs for n in op.nodes]
            graph = kept
        kernels = self.kernels(graph)
        priced = self._priced(kernels)
        found, missing = self._lookup(kernels, priced)
        excess = 0.0
        if self._spreads_activations:
            planned, compact = activation_plans_mb(graph, kernels)
            excess = planned - compact
        return found + self._edge_reorders(graph, kernels, priced), missing, repeats, excess

    def _edge_reorders(self, graph: Graph, kernels: Sequence[Kernel], priced: Sequence[tuple]) -> list[KernelPrediction]:
        """ONNX Runtime's NCHWc reorders inside `graph` at the edges of its blocked-layout regions,
        each kernel read from its table row where it has one (`reorders.edge_reorders`)."""
        model = self._reorder_model()
        if not model:
            return []
        return reorders.edge_reorders(graph, [(k, p[0], p[1], p[3]) for k, p in zip(kernels, priced)], model,
                                      self._above_overhead, self._memo("layouts"))

    def _reorder_model(self) -> dict[str, Any]:
        """The `reorders.reorder_model` of the table's rows in its dtype, built on first use; {}
        when this predictor leaves layout reorders out."""
        if not self.layout_reorders:
            return {}
        if self._reorders is None:
            rows = [r for r in self.table.rows("ok") if r.spec.dtype == self.dtype]
            self._reorders = reorders.reorder_model(rows, self._above_overhead)
        return self._reorders

    def _net(self, ms: float) -> float:
        """A row's latency less the single-op call overhead (never below a tenth of the row)."""
        return max(ms - self.call_overhead_ms, 0.1 * ms)

    def _ok_row(self, spec: OpSpec) -> Any:
        """The table's row of `spec` where it measured it fine, else None."""
        row = self.table.get(spec)
        return row if row is not None and row.ok else None

    def _row_ms(self, spec: OpSpec) -> float | None:
        row = self._ok_row(spec)
        return self._in_network_ms(row) if row is not None else None

    def _in_network_ms(self, row: Any) -> float:
        """A row's latency without the layout reorders the runtime put around the single op (ONNX
        Runtime's NCHWc reorders, `reorders.reorder_shares`), which a kernel between kernels of the same
        layout does not pay; the per-call overhead stays (see `_net`)."""
        ms = getattr(row.measurement, self.statistic)
        if not self.layout_reorders:
            return ms
        return ms - sum(reorders.reorder_shares(row).values()) * self._above_overhead(row)

    def _above_overhead(self, row: Any) -> float:
        """A row's latency above the single-op call overhead: the node time its reorder shares divide."""
        return max(getattr(row.measurement, self.statistic) - self.call_overhead_ms, 0.0)

    def predict_graph(self, model: Any, input_shape: Sequence[int] | None = None, name: str | None = None) -> Prediction:
        """The `Prediction` of a `Graph`, an ONNX model (path/bytes/proto) or a list of specs."""
        graph = self.graph_of(model, input_shape)
        found, missing, repeats, excess_mb = self._found_records(graph)  # (key, op, nodes, source, raw_ms, ms, sigma, ...)
        cal = self.calibration
        per_mb = cal.weights_ms_per_mb(math.fsum([k[8] for k in found]), excess_mb)
        terms = {op: cal.terms(op) for op in {k[1] for k in found}}
        s = self.speed
        kernels = tuple([(key, op, nodes, source, raw, (ms * terms[op][0] + mb * per_mb) * s, sigma, extrapolated, mb)
                         for key, op, nodes, source, raw, ms, sigma, extrapolated, mb in found])  # `kernel_record`s
        overhead = (math.fsum([terms[k[1]][1] for k in kernels]) + cal.constant_ms) * s
        # The calibration's per-kernel costs and constant, fitted on networks of tens of kernels, are
        # negative on some tables (LiteRT: -0.018 ms); on a network of a few small kernels they would
        # outweigh its kernels (a 3-kernel model predicted 0.000 ms, measured 0.028): they take at most
        # half of the kernels' sum.
        overhead = max(overhead, -0.5 * math.fsum([k[5] for k in kernels]))
        uncovered = [UncoveredOp(op.nodes, op.onnx_op, op.note) for op in graph.ops
                     if op.kind == UNCOVERED and not (self.price_data_movement and op.moves)] + missing
        ops = len({n for op in graph.ops if op.kind != FREE for n in (op.nodes or (op.onnx_op,))})
        return Prediction.from_records(name or graph.name or "model", self.table.name, kernels, overhead, uncovered, cal,
                                       repeats, ops, self.network_error, s, self.speed_error, self.unscored)

    def predict(self, models: Iterable[Any]) -> np.ndarray:
        """Total ms per model (partial predictions included as they are)."""
        return np.asarray([self.predict_graph(m).total_ms for m in models])

    def score(self, models: Sequence[Any], measured_ms: Sequence[float]) -> dict[str, float]:
        pred = self.predict(models)
        y = np.asarray(measured_ms, dtype=np.float64)
        rel = np.abs(pred - y) / y
        return {"mape": float(rel.mean()), "acc10": float((rel <= 0.10).mean())}


def _statistic_ms(name: str) -> str:
    """``median`` or ``median_ms`` -> ``median_ms`` (tables' metadata name statistics without the unit)."""
    return name if name.endswith("_ms") else f"{name}_ms"


def _movement_spec(shape: Sequence[int], dtype: str, concat: bool = False) -> OpSpec:
    """The op whose cost stands in for copying a tensor of `shape` once (NCHW-like: middle dimensions
    merged into channels, e.g. a shuffle's 1xGxC/GxHxW -> 1xCxHxW): where the table has concat rows
    (`concat`), the channel concat of its two halves, a pure copy in any layout and dtype; else an
    elementwise pass (a ``relu``). An int8 relu requantises every value: LiteRT int8 runs a shuffle's
    TRANSPOSE far faster, and with relu stand-ins its table predicted fresh FBNet networks 1.16x
    (median; 0.93x with concat stand-ins, on the same 40 networks)."""
    dims = [int(d) for d in shape]
    if len(dims) >= 4:
        four = (dims[0], int(np.prod(dims[1:-2])), dims[-2], dims[-1])
    else:
        four = (dims[0] if dims else 1, int(np.prod(dims[1:])) if len(dims) > 1 else 1, 1, 1)
    if concat and four[1] % 2 == 0:
        return OpSpec.make("concat", (four[0], four[1] // 2, *four[2:]), dtype=dtype, parts=2)
    return OpSpec.make("relu", four, dtype=dtype)


@functools.cache
def _runtime_class(runtime: str) -> Any | None:
    """A runtime's class (`hwlat.profilers.runtimes.runtime_class`), looked up once per process; None for a
    runtime whose plugin is not installed."""
    from hwlat.device_tables.errors import RuntimeUnavailableError
    from hwlat.profilers.runtimes import runtime_class

    try:
        return runtime_class(runtime)
    except RuntimeUnavailableError:
        log.debug("runtime %r is not installed: its planner is taken as compact, and its limits as none", runtime)
        return None


def runtime_limits(runtime: str):
    """A runtime's `cannot_run(spec, device)` (`hwlat.profilers.base.Runtime.cannot_run`); none for a runtime
    whose plugin is not installed."""
    cls = _runtime_class(runtime)
    return cls.cannot_run if cls is not None else lambda spec, device: None


def same_shape_planner(runtime: str) -> bool:
    """Whether a runtime's memory planner reuses a freed buffer only for a tensor of the same shape
    (`hwlat.profilers.base.Runtime.same_shape_planner`); False for a runtime whose plugin is not installed."""
    cls = _runtime_class(runtime)
    return cls.same_shape_planner if cls is not None else False
