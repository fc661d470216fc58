"""A latency constraint in your own search loop (filter + penalty), then the reference
constrained regularised evolution. Scores are the trained CIFAR-10 accuracy of NB201
architectures (NATS-Bench, shipped with the project as a lookup).

    .venv/bin/python examples/evolution_loop.py
"""

import argparse

import numpy as np

from hwlat.nas.constraints import LatencyConstraint
from hwlat.nas.device_loop import adapted_predictor
from hwlat.nas.search import AccuracyObjective, regularized_evolution


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="tiny run (tests)")
    args = ap.parse_args()
    if args.evaluations < 1:
        ap.error("--evaluations: at least 1")
    shots, evals, protocol = (5, 8, "quick") if args.quick else (10, args.evaluations, "brief")

    pred = adapted_predictor("nb201", shots=shots, protocol=protocol, progress=False)  # this machine
    space = pred.space
    budget = float(np.percentile(pred.predict(space.sample(2000, seed=1)), 30))
    c = LatencyConstraint(pred, budget_ms=budget)
    score = AccuracyObjective(space, "cifar10")  # in your NAS: train and evaluate

    # Your loop: propose a batch, drop what is over budget (one vectorised prediction), score the rest.
    rng = np.random.default_rng(0)
    proposals = space.sample(64, rng)
    feasible = c.filter(proposals)
    best = max(feasible[:evals], key=score)
    print(f"filter: {len(feasible)} of {len(proposals)} proposals within {budget:.3f} ms; "
          f"best accuracy {score(best):.2f}% at {c.latency(best):.3f} ms")

    # ... or keep everything and penalise the reward (NNI-style: scale * max(0, latency / budget - 1)).
    rewards = [score(a) - c.penalty(c.latency(a), scale=50.0) for a in proposals[:evals]]
    print(f"penalty: best penalised reward {max(rewards):.2f}")

    # The reference search: constraint-aware regularised evolution (returns feasible archs only).
    result = regularized_evolution(space, score, c, budget=evals, population=min(10, evals), progress=False)
    print(result.format(3, score_name="CIFAR-10 accuracy %"))
    print(result.format_front("CIFAR-10 accuracy %", limit=6))
    assert result.all_feasible() and all(cand.latency_ms <= budget for cand in result.best(3))


if __name__ == "__main__":
    main()
