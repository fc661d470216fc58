"""Reference searches under a latency constraint: random, regularised evolution, Pareto front.

    from nas.search import regularized_evolution
    result = regularized_evolution("nb201", constraint=c, budget=100)   # default objective: NASWOT proxy
    result.best(5); result.front()
"""

from nas.search.algorithms import pareto_search, random_search, regularized_evolution
from nas.search.objectives import PROXY_LABEL, CallableObjective, NaswotProxy, Objective, load_objective
from nas.search.result import Candidate, SearchResult, pareto_front

__all__ = ["PROXY_LABEL", "CallableObjective", "Candidate", "NaswotProxy", "Objective", "SearchResult",
           "load_objective", "pareto_front", "pareto_search", "random_search", "regularized_evolution"]
