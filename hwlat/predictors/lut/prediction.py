"""What the lookup-table predictor answers: a network's `Prediction`, the sum of its kernels'
shares (`KernelPrediction`) and an overhead, with the ops nothing covers named (`UncoveredOp`)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from hwlat.predictors.lut.calibration import Calibration

TABLE, REGRESSOR, MISSING = "table", "regressor", "uncovered"


@dataclass(frozen=True, slots=True)
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


def kernel_record(k: KernelPrediction) -> tuple:
    """A kernel's prediction as a plain record: its fields in order (``KernelPrediction(*record)``)."""
    return k.key, k.op, k.nodes, k.source, k.raw_ms, k.ms, k.sigma, k.extrapolated, k.weight_mb


@dataclass(frozen=True)
class UncoveredOp:
    """An op nothing could predict: named, excluded from the total, which is then partial."""

    nodes: tuple[str, ...]
    op: str
    reason: str


@dataclass
class Prediction:
    """A network's predicted latency (`latency_ms`) with its breakdown (`kernels`, `overhead_ms`),
    whether ops were left out (`partial`, `uncovered`, and which share of the network's `ops` that
    is: `coverage`) and its uncertainty (`sigma_ms`)."""

    model: str
    table: str
    kernels: list[KernelPrediction]  # made on first use where built `from_records`
    overhead_ms: float
    uncovered: list[UncoveredOp] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    repeats: list[str] = field(default_factory=list)  # nodes repeating an earlier op, which the runtime computes once
    ops: int = 0  # the network's ops that take time (nodes; shape-only ones not counted); 0 where not known
    network_error: float = 0.0  # the table's one-sigma relative error on whole networks (`held_out_error`)
    speed: float = 1.0  # this machine's time now over the table's, which every kernel and the overhead carry (`LUTPredictor.speed`)
    speed_error: float = 0.0  # how far networks stray from that one factor now, relative (`LUTPredictor.speed_error`)
    unscored: str = ""  # why `network_error` is 0 (`LUTPredictor.unscored`)

    @classmethod
    def from_records(cls, model: str, table: str, records: tuple[tuple, ...], *args: Any) -> Prediction:
        """A prediction of kernels given as records (`kernel_record`), the other fields as the
        constructor takes them. Its `kernels` are made when first used: many predictions kept as
        plain tuples cost little to make, and Python's collector need not walk them."""
        p = cls(model, table, None, *args)  # type: ignore[arg-type]
        p._records = records
        return p

    def _column(self, name: str) -> list:
        """One field of every kernel, in order (from the records while the kernels are not made)."""
        if self._kernels is None:
            i = _FIELDS.index(name)
            return [r[i] for r in self._records]
        return [getattr(k, name) for k in self._kernels]

    @property
    def total_ms(self) -> float:
        """The kernels' and the overhead's exact sum (the overhead, where negative, takes at most half
        of the kernels' sum: `LUTPredictor.predict_graph`), never below 0 ms."""
        return max(float(math.fsum(self._column("ms") + [self.overhead_ms])), 0.0)

    @property
    def latency_ms(self) -> float:
        """The predicted latency in ms (`total_ms`; of the priced share only where `partial`)."""
        return self.total_ms

    @property
    def partial(self) -> bool:
        return bool(self.uncovered)

    @property
    def uncovered_types(self) -> dict[str, int]:
        """Kernel type (an op, or ops fused: ``conv2d+relu``) -> how many such kernels the total leaves
        out, most first; as the breakdown's UNCOVERED lines count them."""
        kernels: dict[str, set[tuple[str, ...]]] = {}
        for u in self.uncovered:
            kernels.setdefault(u.op, set()).add(u.nodes or (u.op,))
        return dict(Counter({op: len(found) for op, found in kernels.items()}).most_common())

    @property
    def uncovered_ops(self) -> int:
        """How many of the network's ops (nodes) the total leaves out."""
        return len({n for u in self.uncovered for n in (u.nodes or (u.op,))})

    def coverage(self) -> str:
        """Which share the total could not price, in one line; empty when it prices every op."""
        if not self.partial:
            return ""
        n = self.uncovered_ops
        types = ", ".join(op if k == 1 else f"{op} x{k}" for op, k in self.uncovered_types.items())
        line = f"partial: {n} op{'s' if n != 1 else ''} not priced ({types})"
        if self.ops >= n:
            line += f"; the total covers the other {self.ops - n} of {self.ops} ops"
        return line

    @property
    def sigma_ms(self) -> float:
        """Approximate standard deviation of the total: the regressed kernels' errors, the table's
        error on whole networks it was not calibrated on (`network_error`) and, where this machine's
        speed was read, how far networks stray from its one factor now (`speed_error`), in quadrature. Kernels of
        different keys err independently; the copies of one key share one regressed time and so one
        error, which adds up linearly (n copies err n times one, not sqrt(n) times)."""
        by_key: dict[str, float] = {}
        for key, ms, sigma in zip(self._column("key"), self._column("ms"), self._column("sigma")):
            by_key[key] = by_key.get(key, 0.0) + ms * sigma
        kernels = math.fsum(e * e for e in by_key.values())
        whole = self.total_ms * math.hypot(self.network_error, self.speed_error)
        return float(math.sqrt(kernels + whole ** 2))

    @property
    def extrapolated_share(self) -> float:
        """The share of the kernels' sum that kernels regressed outside the table's rows carry
        (`KernelPrediction.extrapolated`), 0 to 1 (of the total, a negative overhead took it past 100%)."""
        flagged = math.fsum(ms for ms, x in zip(self._column("ms"), self._column("extrapolated")) if x)
        kernels = math.fsum(self._column("ms"))
        return min(flagged / kernels, 1.0) if flagged > 0 and kernels > 0 else 0.0

    @property
    def counts(self) -> dict[str, int]:
        sources = self._column("source")
        return {TABLE: sources.count(TABLE), REGRESSOR: sources.count(REGRESSOR), MISSING: len(self.uncovered)}

    def __repr__(self) -> str:  # the dataclass's printed every kernel (kilobytes) and not the latency
        return (f"Prediction({self.model!r}, {self.latency_ms:.4f} ms ±{self.sigma_ms:.4f}, table {self.table!r}, "
                f"{len(self._column('ms'))} kernels{', PARTIAL' if self.partial else ''})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "table": self.table, "total_ms": self.total_ms, "partial": self.partial,
            "sigma_ms": self.sigma_ms, "overhead_ms": self.overhead_ms, "counts": self.counts,
            "calibration": self.calibration.to_dict(),
            "kernels": [asdict(k) for k in self.kernels],
            "uncovered": [asdict(u) for u in self.uncovered],
            "repeats": list(self.repeats),
            "ops": self.ops, "uncovered_ops": self.uncovered_ops, "uncovered_types": self.uncovered_types,
            "coverage": self.coverage(), "extrapolated_share": self.extrapolated_share, "speed": self.speed,
            "network_error": self.network_error,  # sigma's whole-network part, relative; 0: `unscored` says why
            "unscored": self.unscored,
            "speed_error": self.speed_error,  # sigma's part for this machine's speed now, relative; 0: not read
        }

    def format(self, top: int = 0) -> str:
        c = self.counts
        head = (f"{self.model}: {self.total_ms:.3f} ms{' (PARTIAL: uncovered ops excluded)' if self.partial else ''}"
                f"  ±{self.sigma_ms:.3f} ms{'' if self.network_error else f' (regressed kernels only: {self.unscored})'}"
                f"  on {self.table}\n"
                + (f"  {self.coverage()}\n" if self.partial else "")
                + f"  {len(self.kernels)} kernels: {c[TABLE]} looked up, {c[REGRESSOR]} regressed; "
                f"overhead {self.overhead_ms:+.3f} ms\n  calibration: {self.calibration.describe()}"
                + (f"\n  scaled x{self.speed:.2f}: this machine's speed now against the table's own networks"
                   if self.speed != 1 else "")
                + (f"\n  this machine's speed now strays ±{self.speed_error:.0%} from network to network (part of the ±)"
                   if self.speed_error else "")
                + (f"\n  MOSTLY EXTRAPOLATED: {self.extrapolated_share:.0%} of the kernels' time is regressed outside the table's "
                   f"rows (!): the error may well exceed ±{self.sigma_ms:.3f} ms; `hwlat profile model` measures it"
                   if self.extrapolated_share >= 0.5 else ""))
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
        grouped: dict[tuple[str, str], list[str]] = {}  # one line per op and reason, naming its nodes
        for u in self.uncovered:
            grouped.setdefault((u.op, u.reason), []).append(",".join(u.nodes))
        for (op, reason), nodes in grouped.items():
            shown = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
            lines.append(f"  UNCOVERED {op} x{len(nodes)} ({shown}): {reason}" if len(nodes) > 1
                         else f"  UNCOVERED {nodes[0]} ({op}): {reason}")
        if self.repeats:
            lines.append(f"  {len(self.repeats)} node(s) repeat an earlier op on the same input, computed once by the runtime: "
                         + ", ".join(self.repeats[:8]) + (" ..." if len(self.repeats) > 8 else ""))
        if any(k.extrapolated for k in self.kernels):
            lines.append(f"  (! = regressed outside the table's rows: an extrapolation, {self.extrapolated_share:.0%} of the kernels' time)")
        return "\n".join(lines)


_FIELDS = ("key", "op", "nodes", "source", "raw_ms", "ms", "sigma", "extrapolated", "weight_mb")  # `kernel_record`'s order


def _get_kernels(self: Prediction) -> list[KernelPrediction]:
    if self._kernels is None:
        self._kernels = [KernelPrediction(*r) for r in self._records]
        self._records = ()
    return self._kernels


def _set_kernels(self: Prediction, kernels: list[KernelPrediction] | None) -> None:
    self._kernels = kernels
    self._records = ()


# `kernels` stays a field (constructor, comparison, `asdict`) read and written through a property.
Prediction.kernels = property(_get_kernels, _set_kernels)  # type: ignore[assignment, method-assign]
