"""Accuracy vs latency Pareto front through Optuna's NSGA-II (`hwlat.nas.search.optuna_pareto`): trained
CIFAR-10 accuracy of NAS-Bench-201 architectures (NATS-Bench, shipped) against the latency
predicted for this machine, with the latency as a second objective and the budget as a constraint,
or as the constraint of a single-objective search. No front member is over the budget.

    .venv/bin/python examples/optuna_pareto.py --trials 400 --budget-ms 1.0   # needs optuna
"""

import argparse

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.constraints import LatencyConstraint
from hwlat.nas.device_loop import adapted_predictor
from hwlat.nas.search import optuna_pareto


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, help="Optuna trials (default 400; 40 with --quick)")
    ap.add_argument("--budget-ms", type=float, help="latency budget (default: 40th percentile of the predictions)")
    ap.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet16-120"])
    ap.add_argument("--quick", action="store_true", help="tiny run (tests)")
    args = ap.parse_args()
    if (args.trials is not None and args.trials < 1) or (args.budget_ms is not None and not args.budget_ms > 0):
        ap.error("--trials: at least 1; --budget-ms: a positive number of ms")
    shots, trials, protocol = (5, args.trials or 40, "quick") if args.quick else (20, args.trials or 400, "brief")

    pred = adapted_predictor("nb201", shots=shots, protocol=protocol, progress=False)  # this machine
    budget = args.budget_ms if args.budget_ms is not None else \
        float(np.percentile(pred.predict(pred.space.sample(2000, seed=1)), 40))
    c = LatencyConstraint(pred, budget_ms=budget)
    objective = f"accuracy:{args.dataset}"
    for role in ("objective", "constraint"):
        res = optuna_pareto("nb201", objective, c, trials=trials, latency=role, population=max(2, min(50, trials // 4)),
                            seed=0, progress=False)
        print(f"\nNSGA-II, latency as {role}: {trials} trials, {res.evaluations} distinct archs, {res.rejected} over "
              f"the {budget:.3f} ms budget (kept out of the front)")
        print(res.format_front(f"{args.dataset} accuracy %", limit=8))
        best = res.best(1)[0]
        print(f"most accurate within budget: {best.score:.2f}% at {best.latency_ms:.3f} ms predicted: {best.key}")
        assert all(x.latency_ms <= budget for x in res.front())


if __name__ == "__main__":
    try:
        main()
    except HwlatError as e:  # a bad budget or predictor: its message, not a traceback
        raise SystemExit(f"error: {e}")
