"""Search results: every evaluated architecture with its predicted latency and score, the best
feasible ones, and the latency-score Pareto front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """One evaluated architecture: predicted latency (ms), score (higher is better), feasibility."""

    arch: Any
    key: str
    latency_ms: float
    score: float
    feasible: bool
    step: int  # evaluation number (0-based)
    sigma_ms: float | None = None  # the prediction's one sigma, where the search counted sigmas


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (lower latency, higher score), sorted by latency."""
    best: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (c.latency_ms, -c.score)):
        if not best or c.score > best[-1].score:
            best.append(c)
    return best


@dataclass
class SearchResult:
    """What a reference search did: `history` holds every evaluated architecture in order."""

    method: str
    space: str
    objective: str
    budget_ms: float | None
    history: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0
    proposals: int = 0  # architectures proposed (predicted), rejected ones included
    rejected: int = 0  # proposals outside the latency bounds (scored only by NSGA-II, as infeasible trials)
    objective_seconds: float = 0.0
    verified: Any = None  # a `hwlat.nas.search.verified.VerifiedSearch` when the search was verified by measuring
    stopped: str = ""  # why the search scored fewer architectures than its budget ("" where it did not)
    min_ms: float | None = None  # the lower latency bound searched under, if any
    sigmas: float = 0.0  # sigmas of each prediction's uncertainty the bounds counted (`LatencyConstraint.sigmas`)
    scorer: Any = field(default=None, repr=False, compare=False)  # the `Objective` that scored `history`

    @property
    def evaluations(self) -> int:
        return len(self.history)

    def best(self, k: int = 5) -> list[Candidate]:
        """The `k` best feasible candidates by score (ties: faster first)."""
        ok = [c for c in self.history if c.feasible]
        return sorted(ok, key=lambda c: (-c.score, c.latency_ms))[:k]

    def front(self) -> list[Candidate]:
        """The latency-score Pareto front of the feasible candidates, by latency."""
        return pareto_front([c for c in self.history if c.feasible])

    def format_front(self, score_name: str = "score", limit: int = 12) -> str:
        """The Pareto front as a text table (at most `limit` rows, spread over it)."""
        front = self.front()
        if not front:
            return "Pareto front: empty"
        rows = front if len(front) <= limit else [front[int(round(i))] for i in np.linspace(0, len(front) - 1, limit)]
        width = max(len(c.key) for c in rows)
        shown = "" if len(rows) == len(front) else f", {len(rows)} shown"
        lines = [f"Pareto front (predicted latency vs {score_name}): {len(front)} architectures{shown}",
                 f"  {'architecture':<{width}}  {'predicted ms':>12}{self._sigma_head()}  {score_name}"]
        lines += [f"  {c.key:<{width}}  {c.latency_ms:>12.4f}{self._sigma(c)}  {c.score:.3f}" for c in rows]
        return "\n".join(lines)

    def all_feasible(self) -> bool:
        return all(c.feasible for c in self.history)

    def format(self, k: int = 5, score_name: str = "score") -> str:
        """The best `k` as a text table, with what was searched."""
        head = (f"{self.method} on {self.space}: {self.evaluations} distinct architectures scored; "
                f"{self.proposals} predicted, {self.rejected} of them outside the latency bounds; {self.seconds:.1f} s")
        lines = [head] + ([f"stopped early: {self.stopped}"] if self.stopped else [])
        if self.budget_ms is not None:
            low = f"{self.min_ms:.4g} <= " if self.min_ms is not None else ""
            counted = (f", counting {self.sigmas:g} sigma of each prediction's uncertainty (the prediction ± "
                       f"{self.sigmas:g} sigma within the bounds)" if self.sigmas else "")
            lines.append(f"searched under: {low}predicted latency <= {self.budget_ms:.4g} ms{counted}")
        best = self.best(k)
        if not best:
            lines.append("no feasible architecture found")
            return "\n".join(lines)
        width = max(len(c.key) for c in best)
        lines.append(f"  {'#':>2}  {'architecture':<{width}}  {'predicted ms':>12}{self._sigma_head()}  {score_name}")
        for i, c in enumerate(best, 1):
            lines.append(f"  {i:>2}  {c.key:<{width}}  {c.latency_ms:>12.4f}{self._sigma(c)}  {c.score:.3f}")
        return "\n".join(lines)

    def _sigma_head(self) -> str:
        """The sigma column's heading where the search counted sigmas, else nothing."""
        return f"  {'sigma ms':>8}" if self.sigmas else ""

    def _sigma(self, c: Candidate) -> str:
        return f"  {c.sigma_ms:>8.4f}" if self.sigmas else ""

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        verified = {"verified": self.verified.to_dict()} if self.verified is not None else {}
        return {"method": self.method, "space": self.space, "objective": self.objective, "budget_ms": self.budget_ms,
                "min_ms": self.min_ms, "sigmas": self.sigmas,
                "evaluations": self.evaluations, "proposals": self.proposals, "rejected": self.rejected,
                "stopped": self.stopped,
                "seconds": round(self.seconds, 3), "objective_seconds": round(self.objective_seconds, 3),
                "best": [_entry(c) for c in self.best(k)], "pareto_front": [_entry(c) for c in self.front()],
                **verified}

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(predicted ms, score) of every evaluated architecture."""
        return (np.asarray([c.latency_ms for c in self.history]), np.asarray([c.score for c in self.history]))


def _entry(c: Candidate) -> dict[str, Any]:
    """A candidate in the JSON report: key, predicted ms, its sigma (None where not counted), score."""
    return {"key": c.key, "predicted_ms": c.latency_ms, "sigma_ms": c.sigma_ms, "score": c.score}
