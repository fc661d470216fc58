"""Multi-objective search through Optuna: NSGA-II (Deb et al., 2002) over the space's categorical
decisions, maximising the objective (e.g. ``accuracy:cifar10``) and minimising the predicted
latency, with ``predicted latency <= budget`` as an Optuna constraint when a `LatencyConstraint`
is given (infeasible trials are kept by Optuna's constrained domination, never on the front).

    c = LatencyConstraint(pred, budget_ms=1.0)
    result = optuna_pareto("nb201", "accuracy:cifar10", c, trials=300)
    result.front()      # accuracy-latency Pareto front, feasible members only
    result.best(5)      # the most accurate feasible ones

Needs optuna (``pip install 'hwlat[optuna]'`` or ``pip install optuna``); imported only when called.
"""

from __future__ import annotations

import logging
from typing import Any

from hwlat.nas.constraints import ConstraintError, LatencyConstraint, suggest_arch
from hwlat.nas.search.algorithms import _Run
from hwlat.nas.search.result import SearchResult
from hwlat.nas.spaces.base import Space

log = logging.getLogger(__name__)

LATENCY_ROLES = ("objective", "constraint")


def optuna_pareto(space: Space | str, objective: Any = None, constraint: LatencyConstraint | None = None,
                  trials: int = 300, seed: int = 0, latency: str = "objective", population: int = 50,
                  predictor: Any = None, progress: bool = True) -> SearchResult:
    """NSGA-II through Optuna: `trials` trials (repeated architectures are scored once; `budget`
    in the result counts distinct ones). `latency`: ``objective`` (maximise score, minimise
    predicted latency; with `constraint`, also latency <= budget as a constraint) or ``constraint``
    (maximise score only, latency <= budget as the constraint; needs `constraint`). Every
    architecture is evaluated and kept in `history` with its feasibility; `best` and `front`
    return feasible ones only."""
    try:
        import optuna
    except ImportError:
        raise ConstraintError("the multi-objective search (--method nsga2) needs optuna: pip install 'hwlat[optuna]' "
                              "(or pip install optuna)") from None
    if latency not in LATENCY_ROLES:
        raise ConstraintError(f"latency={latency!r}: choose {' or '.join(LATENCY_ROLES)}")
    if population < 2:
        raise ConstraintError(f"NSGA-II population {population}: needs at least 2 (--population)")
    if latency == "constraint" and constraint is None:
        raise ConstraintError("latency='constraint' needs a LatencyConstraint (a predictor and a budget)")
    run = _Run(f"NSGA-II (Optuna, latency as {latency})", space, objective, constraint, predictor, trials, progress)
    if run.predictor is None:
        raise ConstraintError("the multi-objective search needs a latency predictor (or a constraint with one)")
    if constraint is not None:
        constraint.check_budget()  # a budget below the fastest architecture: say so before searching
    set_constraint = constraint is not None and hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5

    def evaluate(trial: Any) -> Any:
        arch = suggest_arch(trial, run.space)
        lat, ok = run.predict([arch])
        if set_constraint:
            constraint.optuna_set_constraint(trial, arch, latency_ms=float(lat[0]))
        c = run.evaluate(arch, float(lat[0]), bool(ok[0]))
        return c.score if latency == "constraint" else (c.score, c.latency_ms)

    old_api = {"constraints_func": constraint.optuna_constraints()} if constraint is not None and not set_constraint else {}
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed, **old_api)
    directions = ["maximize"] if latency == "constraint" else ["maximize", "minimize"]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=directions, sampler=sampler)
        study.optimize(evaluate, n_trials=trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    run.result.proposals = trials
    run.result.rejected = sum(not c.feasible for c in run.result.history)
    if constraint is not None and not any(c.feasible for c in run.result.history):
        run.raise_infeasible()  # as the other searches: none within the bounds is an error naming the bound
    return run.finish()


__all__ = ["LATENCY_ROLES", "optuna_pareto"]
