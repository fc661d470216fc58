"""`ModelProfile`: where a whole model's time goes, per runtime node, mapped to the source graph."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hwlat.device_tables.measurement import Measurement


@dataclass(frozen=True)
class NodeTime:
    """One node the runtime executed: its median kernel time and the source nodes it covers."""

    name: str
    op_type: str
    provider: str
    source_nodes: tuple[str, ...]
    source_ops: tuple[str, ...]
    time_us: float  # mean of the middle 80% of runs: robust, and finer than the profiler's 1 µs ticks
    median_us: float
    share: float  # of the summed node times
    cum_share: float  # of this row and every slower one

    @property
    def fused(self) -> bool:
        return len(self.source_nodes) > 1


@dataclass
class ModelProfile:
    """Per-node breakdown of one model on one runtime, plus its whole-model latency."""

    model: str
    device: str
    opt_level: str
    threads: int
    input_shapes: dict[str, list[int]]
    latency: Measurement
    nodes: list[NodeTime]  # slowest first
    profiled_runs: int
    source_node_count: int
    eliminated: list[tuple[str, str]] = field(default_factory=list)  # (name, op type): source nodes running no kernel
    versions: dict[str, Any] = field(default_factory=dict)
    clock: str = "wall"  # the protocol's clock of `latency` (the thread's CPU time: "cpu")

    @property
    def node_total_us(self) -> float:
        """Sum of the per-node times."""
        return sum(n.time_us for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "device": self.device, "opt_level": self.opt_level, "threads": self.threads,
            "input_shapes": self.input_shapes, "latency": self.latency.to_dict(), "profiled_runs": self.profiled_runs,
            "source_node_count": self.source_node_count, "node_total_us": self.node_total_us,
            "nodes": [{**asdict(n), "source_nodes": list(n.source_nodes), "source_ops": list(n.source_ops)}
                      for n in self.nodes],
            "eliminated": [{"name": n, "op_type": op} for n, op in self.eliminated],
            "versions": self.versions, "clock": self.clock,
        }

    def format(self, top: int = 0) -> str:
        """A readable table: time, share and cumulative share per runtime node, slowest first."""
        lat = self.latency
        total_ms = self.node_total_us / 1000.0
        outside = lat.median_ms - total_ms
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.input_shapes.items())
        lines = [
            f"model    {self.model} ({shapes})",
            f"device   {self.device}, graph optimisation {self.opt_level}",
            f"latency  {lat.median_ms:.4f} ms median over {lat.n} runs, {self.clock} clock (IQR/median {lat.rel_iqr:.1%}, "
            f"p10 {lat.p10_ms:.4f}, p90 {lat.p90_ms:.4f}){'  NOISY' if lat.noisy else ''}",
            f"nodes    {self.source_node_count} source nodes ran as {len(self.nodes)} runtime nodes; node times sum to "
            f"{total_ms:.4f} ms ({_pct(total_ms, lat.median_ms)} of latency, profiled over {self.profiled_runs} runs); "
            + (f"{outside:.4f} ms outside nodes (session overhead)" if outside >= 0 else
               "the profiler's own per-node overhead inflates node times"),
            "",
        ]
        rows = self.nodes if top <= 0 else self.nodes[:top]
        name_w = min(max([len(n.name) for n in rows] + [12]), 40)
        op_w = min(max([len(n.op_type) for n in rows] + [7]), 24)
        lines.append(f"{'#':>4}  {'runtime node':<{name_w}}  {'op':<{op_w}}  {'time us':>10}  {'share':>6}  "
                     f"{'cum.':>6}  source nodes")
        for i, n in enumerate(rows, start=1):
            src = ", ".join(f"{s} ({o})" for s, o in zip(n.source_nodes, n.source_ops)) or "(inserted by the runtime)"
            lines.append(f"{i:>4}  {_cut(n.name, name_w):<{name_w}}  {_cut(n.op_type, op_w):<{op_w}}  "
                         f"{n.time_us:>10.2f}  {n.share:>6.1%}  {n.cum_share:>6.1%}  {src}")
        if len(rows) < len(self.nodes):
            rest = self.nodes[len(rows):]
            lines.append(f"      ... {len(rest)} more nodes: {sum(n.time_us for n in rest):.2f} us, "
                         f"{sum(n.share for n in rest):.1%} (--top 0 shows all)")
        if self.eliminated:
            shown = ", ".join(f"{n} ({op})" for n, op in self.eliminated[:12])
            more = f" and {len(self.eliminated) - 12} more" if len(self.eliminated) > 12 else ""
            lines.append("")
            lines.append(f"no kernel (folded or removed by the optimiser): {shown}{more}")
        return "\n".join(lines)


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole > 0 else "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"
