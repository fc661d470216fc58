"""Reference searches that show a latency constraint at work: random search, regularised
evolution (Real et al., AAAI 2019: tournament selection, mutation, the oldest dies) and a
latency-stratified sweep for the latency-score Pareto front.

Constraint-aware: candidates are predicted in batches first and only those within the
constraint's bounds are ever scored, so every architecture a constrained search returns is
feasible by the predictor. `budget` counts scored (distinct) architectures.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import numpy as np

from hwlat.nas.arch_predictors import ArchPredictor, PredictorSpaceError, as_arch_predictor, checked_latencies
from hwlat.nas.constraints import InfeasibleBudgetError, LatencyConstraint, require_sigma
from hwlat.nas.search.objectives import Objective, load_objective
from hwlat.nas.search.result import Candidate, SearchResult
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import Space

log = logging.getLogger(__name__)

SAMPLE_BATCH = 256
MAX_SAMPLE_BATCHES = 40
MUTATIONS_PER_CHILD = 16
# Evolution stops after this many cycles in a row that found no new architecture within the bounds: the
# mutations have run out of feasible architectures near the population (a budget larger than the feasible
# ones it reaches; 20 x budget cycles ran 5 million predictions for 1,201 of 16,000 on NB201 under 0.5 ms).
STALL_CYCLES = 500


class _Run:
    """Shared state of one search: predictions, the constraint, scoring, history, progress."""

    def __init__(self, method: str, space: Space | str, objective: Any, constraint: LatencyConstraint | None,
                 predictor: Any, budget: int, progress: bool):
        from tqdm import tqdm

        self.space = get_space(space) if isinstance(space, str) else space
        if constraint is not None and constraint.space.name != self.space.name:
            raise PredictorSpaceError(f"the constraint is on {constraint.space.name}, the search on {self.space.name}")
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"search budget {budget!r}: a whole number of evaluations, at least 1")
        self.constraint = constraint
        if predictor is not None:
            self.predictor: ArchPredictor | None = as_arch_predictor(predictor, self.space)
        else:
            self.predictor = constraint.predictor if constraint is not None else None
        self.sigmas = constraint.sigmas if constraint is not None else 0.0
        if self.predictor is not None:
            require_sigma(self.predictor, self.sigmas)
        self.objective: Objective = load_objective(objective, self.space)
        self.budget = budget
        self.result = SearchResult(method, self.space.name, self.objective.label,
                                   constraint.budget_ms if constraint is not None else None, scorer=self.objective,
                                   min_ms=constraint.min_ms if constraint is not None else None, sigmas=self.sigmas)
        self.by_key: dict[str, Candidate] = {}
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=budget, desc=f"{method} [{self.objective.short}]", unit="arch", disable=None if progress else True,
                        dynamic_ncols=True, leave=False)
        self.fastest_seen: tuple[float, str] | None = None
        self.slowest_seen: tuple[float, str] | None = None

    @property
    def evaluations(self) -> int:
        return len(self.result.history)

    def predict(self, archs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted ms and feasibility of a batch (counted as proposals; with the constraint's sigmas,
        predicted with their sigma)."""
        self.result.proposals += len(archs)
        sigma = None
        if self.predictor is not None:
            ms, sigma = (self.predictor.predict_with_sigma(archs) if self.sigmas
                         else (self.predictor.predict(archs), None))
            lat = checked_latencies(self.predictor, archs, ms)
        else:
            lat = np.full(len(archs), np.nan)
        if self.constraint is None:
            ok = np.ones(len(archs), dtype=bool)
        else:
            ok = np.atleast_1d(self.constraint.check(lat, sigma).feasible)
            i = int(np.argmin(lat))
            if self.fastest_seen is None or lat[i] < self.fastest_seen[0]:
                self.fastest_seen = (float(lat[i]), self.space.key(archs[i]))
            j = int(np.argmax(lat))
            if self.slowest_seen is None or lat[j] > self.slowest_seen[0]:
                self.slowest_seen = (float(lat[j]), self.space.key(archs[j]))
        self.result.rejected += int((~ok).sum())
        return lat, ok

    def seen(self, arch: Any) -> bool:
        return self.space.key(arch) in self.by_key

    def evaluate(self, arch: Any, lat: float, feasible: bool = True) -> Candidate:
        """Score an architecture (once; a repeat returns the first candidate)."""
        key = self.space.key(arch)
        if key in self.by_key:
            return self.by_key[key]
        sigma = float(self.predictor.sigma([arch])[0]) if self.sigmas else None  # as predicted (cached by a table)
        c = Candidate(arch, key, float(lat), self.objective(arch), bool(feasible), self.evaluations, sigma)
        self.by_key[key] = c
        self.result.history.append(c)
        self.bar.update(1)
        best = max((h.score for h in self.result.history if h.feasible), default=float("nan"))
        self.bar.set_postfix_str(f"best {best:.2f}", refresh=False)
        return c

    def sample_feasible(self, n: int, rng: np.random.Generator) -> list[tuple[Any, float]]:
        """Up to `n` unseen architectures within the bounds, sampled uniformly (rejection sampling)."""
        out: list[tuple[Any, float]] = []
        keys: set[str] = set()
        for _ in range(MAX_SAMPLE_BATCHES):
            size = SAMPLE_BATCH if self.space.size is None else min(SAMPLE_BATCH, int(self.space.size))
            archs = self.space.sample(size, rng)
            lat, ok = self.predict(archs)
            for a, l, f in zip(archs, lat, ok):
                k = self.space.key(a)
                if f and k not in keys and not self.seen(a):
                    keys.add(k)
                    out.append((a, float(l)))
                    if len(out) >= n:
                        return out
            if out and self.constraint is None:
                break
        if not out and not self.by_key:
            self.raise_infeasible()
        return out

    def raise_infeasible(self) -> None:
        """Raise `InfeasibleBudgetError`: no architecture sampled is within the bounds."""
        ms, key = self.fastest_seen or (float("nan"), "?")
        c = self.constraint
        slow_ms, slow_key = self.slowest_seen or (float("nan"), "?")
        head = f"no {self.space.name} architecture within the latency bounds in {self.result.proposals} sampled: "
        if c.min_ms is not None and slow_ms < c.min_ms:
            raise InfeasibleBudgetError(f"{head}the minimum {c.min_ms:g} ms is above the slowest seen, {slow_key} at "
                                        f"{slow_ms:.4g} ms predicted; lower the minimum")
        if c.min_ms is not None and ms <= c.budget_ms:
            k, fewer = (f" counting {c.sigmas:g} sigma of its uncertainty", " or count fewer sigmas") if c.sigmas else ("", "")
            raise InfeasibleBudgetError(f"{head}none is predicted within {c.min_ms:g}..{c.budget_ms:g} ms{k} (fastest "
                                        f"seen {ms:.4g} ms, slowest {slow_ms:.4g} ms); widen the bounds{fewer}")
        if c.sigmas and ms <= c.budget_ms:
            raise InfeasibleBudgetError(f"{head}none is predicted within {c.budget_ms:g} ms counting {c.sigmas:g} sigma "
                                        f"of its uncertainty (fastest seen {key} at {ms:.4g} ms predicted); raise the "
                                        "budget or count fewer sigmas")
        raise InfeasibleBudgetError(f"{head}the budget {c.budget_ms:g} ms is below the fastest seen, {key} at {ms:.4g} "
                                    "ms predicted; raise the budget")

    def finish(self) -> SearchResult:
        self.bar.close()
        self.result.seconds = time.perf_counter() - self.t0
        self.result.objective_seconds = self.objective.seconds
        return self.result


def random_search(space: Space | str, objective: Any = None, constraint: LatencyConstraint | None = None,
                  budget: int = 100, seed: int = 0, predictor: Any = None, progress: bool = True) -> SearchResult:
    """Score `budget` distinct architectures sampled uniformly among those the constraint accepts."""
    run = _Run("random search", space, objective, constraint, predictor, budget, progress)
    rng = np.random.default_rng(seed)
    stale = 0
    while run.evaluations < budget and stale < 3:
        batch = run.sample_feasible(budget - run.evaluations, rng)
        stale = stale + 1 if not batch else 0
        for arch, lat in batch:
            run.evaluate(arch, lat)
    if run.evaluations < budget:
        run.result.stopped = (f"{stale} rounds of {MAX_SAMPLE_BATCHES * SAMPLE_BATCH} samples found no new "
                              "architecture within the bounds")
    return run.finish()


def regularized_evolution(space: Space | str, objective: Any = None, constraint: LatencyConstraint | None = None,
                          budget: int = 100, population: int = 30, sample: int = 5, seed: int = 0,
                          predictor: Any = None, progress: bool = True) -> SearchResult:
    """Regularised (aging) evolution under the constraint: the population starts from feasible
    random architectures; each cycle the best of `sample` random members is mutated into a
    feasible child (16 mutations predicted at once, unseen feasible ones preferred), which joins
    the population as the oldest member leaves. A population of 30 (not 20) keeps one seed in 16
    from settling on a local optimum (NB201, CIFAR-10 under 1 ms, 100 scored: worst seed 92.2%, not 90.6%).
    It stops short of `budget` when `STALL_CYCLES` cycles in a row find no new feasible architecture
    (`SearchResult.stopped` says so)."""
    if population < 1 or sample < 1:
        raise ValueError(f"population {population}, sample (tournament) {sample}: each must be at least 1")
    run = _Run("regularised evolution", space, objective, constraint, predictor, budget, progress)
    rng = np.random.default_rng(seed)
    pop: deque[Candidate] = deque()
    for arch, lat in run.sample_feasible(min(population, budget), rng):
        pop.append(run.evaluate(arch, lat))
    if not pop:
        run.raise_infeasible()
    stalled = 0  # cycles in a row without a new architecture
    while run.evaluations < budget and stalled < STALL_CYCLES:
        picks = rng.choice(len(pop), size=min(sample, len(pop)), replace=False)
        parent = max((pop[int(i)] for i in picks), key=lambda c: (c.score, -c.latency_ms))
        children = [run.space.mutate(parent.arch, rng) for _ in range(MUTATIONS_PER_CHILD)]
        lat, ok = run.predict(children)
        order = [i for i in range(len(children)) if ok[i] and not run.seen(children[i])]
        stalled = 0 if order else stalled + 1
        order += [i for i in range(len(children)) if ok[i] and run.seen(children[i])]
        if not order:
            continue
        i = order[0]
        pop.append(run.evaluate(children[i], lat[i]))
        if len(pop) > population:
            pop.popleft()
    if run.evaluations < budget:
        run.result.stopped = (f"{STALL_CYCLES} cycles in a row ({STALL_CYCLES * MUTATIONS_PER_CHILD} mutations) found no "
                              "new architecture within the bounds: the feasible ones near the population are scored")
    return run.finish()


def pareto_search(space: Space | str, predictor: Any, objective: Any = None, budget: int = 50, seed: int = 0,
                  pool: int = 20000, min_ms: float | None = None, max_ms: float | None = None,
                  progress: bool = True) -> SearchResult:
    """The latency-score Pareto front: predict a large pool (every architecture of a small space),
    score `budget` of them spread evenly over predicted latency (one per latency stratum, at
    random within it; the fastest in the first), and keep the non-dominated ones (`result.front()`)."""
    run = _Run("latency-stratified sweep", space, objective, None, predictor, budget, progress)
    if run.predictor is None:
        raise ValueError("pareto_search needs a latency predictor")
    sp = run.space
    rng = np.random.default_rng(seed)
    archs = (list(sp.enumerate()) if sp.size is not None and sp.size <= pool and run.predictor.fast
             else sp.sample(pool if run.predictor.fast else min(pool, 512), rng))
    lat, _ = run.predict(archs)
    keep = np.ones(len(archs), dtype=bool)
    if min_ms is not None:
        keep &= lat >= min_ms
    if max_ms is not None:
        keep &= lat <= max_ms
    run.result.rejected = int((~keep).sum())
    idx = np.flatnonzero(keep)
    if not idx.size:
        raise InfeasibleBudgetError(f"no {sp.name} architecture of {len(archs)} predicted is within {min_ms or 0:g}.."
                                    f"{max_ms if max_ms is not None else 'inf'} ms (fastest {lat.min():.4g} ms, slowest "
                                    f"{lat.max():.4g} ms); widen the bounds")
    idx = idx[np.argsort(lat[idx], kind="stable")]
    for j, stratum in enumerate(np.array_split(idx, min(budget, len(idx)))):
        if len(stratum):
            i = int(stratum[0]) if j == 0 else int(rng.choice(stratum))  # the fastest is always on the front
            run.evaluate(archs[i], lat[i])
    return run.finish()


__all__ = ["pareto_search", "random_search", "regularized_evolution"]


METHODS = ("evolution", "random", "nsga2")


def search_by_method(method: str, space: Space | str, objective: Any, constraint: LatencyConstraint, budget: int,
                     seed: int = 0, progress: bool = True, population: int | None = None, sample: int = 5) -> SearchResult:
    """The search `hwlat search --method` names: regularised evolution, random search or Optuna's
    NSGA-II (`budget` trials); `population` None keeps each method's own default."""
    pop = {} if population is None else {"population": population}
    if method == "evolution":
        return regularized_evolution(space, objective, constraint, budget=budget, sample=sample, seed=seed,
                                     progress=progress, **pop)
    if method == "nsga2":
        from hwlat.nas.search.multi_objective import optuna_pareto

        return optuna_pareto(space, objective, constraint, trials=budget, seed=seed, progress=progress, **pop)
    if method == "random":
        return random_search(space, objective, constraint, budget=budget, seed=seed, progress=progress)
    raise ValueError(f"method {method!r}: choose {', '.join(METHODS)}")
