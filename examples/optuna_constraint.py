"""Latency as an Optuna constraint in your own study: NSGA-II over NAS-Bench-201, maximising the
trained CIFAR-10 accuracy (NATS-Bench, shipped) and minimising latency, with predicted latency <=
budget as a constraint. (`hwlat.nas.search.optuna_pareto` wraps the same; see optuna_pareto.py.)

    .venv/bin/python examples/optuna_constraint.py --trials 60          # needs `pip install optuna`
"""

import argparse

import numpy as np

try:
    import optuna
except ImportError:
    raise SystemExit("error: this example needs optuna: pip install optuna") from None

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.constraints import LatencyConstraint, suggest_arch
from hwlat.nas.device_loop import adapted_predictor
from hwlat.nas.search import AccuracyObjective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--budget-ms", type=float, help="latency budget (default: median predicted latency)")
    ap.add_argument("--sampler", choices=["nsga2", "tpe"], default="nsga2")
    ap.add_argument("--quick", action="store_true", help="tiny run (tests)")
    args = ap.parse_args()
    if args.trials < 1 or (args.budget_ms is not None and not args.budget_ms > 0):
        ap.error("--trials: at least 1; --budget-ms: a positive number of ms")
    shots, trials, protocol = (5, 10, "quick") if args.quick else (10, args.trials, "brief")

    # 1. a predictor for this machine: measure a few archs with onnxruntime, adapt the shipped one
    pred = adapted_predictor("nb201", shots=shots, protocol=protocol, progress=False)
    budget = args.budget_ms if args.budget_ms is not None else \
        float(np.median(pred.predict(pred.space.sample(2000, seed=1))))
    # 2. the constraint
    c = LatencyConstraint(pred, budget_ms=budget)
    c.check_budget()  # a budget below the fastest architecture: say so now, not after the study
    # 3. use it: Optuna calls trials with latency - budget > 0 infeasible
    accuracy = AccuracyObjective("nb201", "cifar10")  # a lookup; in your NAS: train and evaluate

    new_api = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5; older ones take constraints_func

    def objective(trial):
        arch = suggest_arch(trial, "nb201")  # one categorical parameter per edge; stores the arch key
        latency = c.optuna_set_constraint(trial, arch) if new_api else c.latency(arch)
        return accuracy(arch) if args.sampler == "tpe" else (accuracy(arch), latency)

    old_api = {} if new_api else {"constraints_func": c.optuna_constraints()}  # latency - budget <= 0: feasible
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.sampler == "tpe":
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, **old_api))
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=0, population_size=8, **old_api)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=trials)

    best = study.best_trials  # the feasible ones only
    if not best:
        raise SystemExit(f"none of the {len(study.trials)} trials is predicted within the {budget:.3f} ms budget; "
                         "run more --trials")
    best = list({t.user_attrs["arch"]: t for t in best}.values())  # NSGA-II may try one architecture again
    print(f"budget {budget:.3f} ms; {len(study.trials)} trials; best (feasible only) by CIFAR-10 accuracy:")
    for t in sorted(best, key=lambda t: -t.values[0]):
        key = t.user_attrs["arch"]
        print(f"  accuracy {t.values[0]:6.2f}%  predicted {c.latency(key):.3f} ms  {key}")
    assert all(c(t.user_attrs["arch"]).feasible for t in best)


if __name__ == "__main__":
    try:
        main()
    except HwlatError as e:  # a bad budget or predictor: its message, not a traceback
        raise SystemExit(f"error: {e}")
