"""Reference searches under a latency constraint: random, regularised evolution, Pareto front.

    from hwlat.nas.search import regularized_evolution
    result = regularized_evolution("nb201", constraint=c, budget=100)   # default: accuracy:cifar10 on NB201
    result.best(5); result.front()                                     # (naswot elsewhere)
    result = optuna_pareto("nb201", "accuracy:cifar10", c, trials=300)  # NSGA-II, accuracy vs latency
    result = search_verified(space, c, lambda wide: regularized_evolution(space, None, wide))
    result.verified.winner                                             # the best MEASURED within budget
"""

from hwlat.nas.search.algorithms import pareto_search, random_search, regularized_evolution
from hwlat.nas.search.objectives import (PROXY_LABEL, AccuracyObjective, CallableObjective, NaswotProxy, Objective,
                                   default_objective, load_objective)
from hwlat.nas.search.multi_objective import optuna_pareto
from hwlat.nas.search.result import Candidate, SearchResult, pareto_front
from hwlat.nas.search.verified import ErrorBand, VerifiedSearch, VerifySettings, error_band, search_verified

__all__ = ["PROXY_LABEL", "AccuracyObjective", "CallableObjective", "Candidate", "ErrorBand", "NaswotProxy", "Objective",
           "SearchResult", "VerifiedSearch", "VerifySettings", "default_objective", "error_band", "load_objective",
           "optuna_pareto", "pareto_front", "pareto_search", "random_search", "regularized_evolution", "search_verified"]
