"""`hwlat search`: latency-constrained architecture search with a predictor, optionally verified
by measuring the best architectures on a local runtime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_float, positive_float, positive_int, random_seed


def register(sub) -> None:
    p = command_parser(
        sub, "search",
        "search a space for the best architectures under a latency budget (predicted), optionally verified "
        "on this machine",
        "hwlat search --space nb201 --predictor pretrained --device-samples results/demo/nb201_shots.csv "
        "--max-latency-ms 1.0 --objective accuracy:cifar10 --budget 150 --verify",
    )
    from hwlat.commands.space import add_space_argument

    add_space_argument(p)
    p.add_argument("--predictor", required=True,
                   help="a saved predictor (NAME, NAME.npz or NAME.json, e.g. results/demo/predictor), 'pretrained' "
                        "(the shipped transfer predictor; needs --device-samples), or 'lut:<device table>'")
    p.add_argument("--device-samples",
                   help="arch table of latencies measured on the target device: adapts the predictor")
    p.add_argument("--device", help="device column of --device-samples (needed when it has several)")
    p.add_argument("--max-latency-ms", type=positive_float, required=True,
                   help="latency budget in ms (predicted latency <= this)")
    p.add_argument("--min-latency-ms", type=nonnegative_float, help="optional lower bound in ms")
    p.add_argument("--objective",
                   help="what to maximise: accuracy:cifar10 | accuracy:cifar100 | accuracy:imagenet16-120 (trained "
                        "NATS-Bench test accuracy, looked up; NB201 only), naswot (alias proxy: a training-free proxy "
                        "on random data, NOT accuracy), or 'module:function' / 'file.py:function' with "
                        "function(arch) -> score, higher is better. Default: accuracy:cifar10 on nb201, naswot on "
                        "spaces without shipped accuracies (fbnet, ofa)")
    p.add_argument("--budget", type=positive_int, default=100,
                   help="architectures to score (default 100); with --method nsga2, Optuna trials")
    p.add_argument("--method", default="evolution", choices=["evolution", "random", "nsga2"],
                   help="search method (default evolution: regularised evolution under the constraint; nsga2: "
                        "Optuna's NSGA-II, maximising the objective and minimising predicted latency with the budget "
                        "as a constraint; needs optuna)")
    p.add_argument("--population", type=positive_int, default=20,
                   help="evolution / nsga2: population size (default 20)")
    p.add_argument("--tournament", type=positive_int, default=5, help="evolution: tournament (sample) size (default 5)")
    p.add_argument("--top", type=positive_int, default=5, help="architectures to print and verify (default 5)")
    p.add_argument("--seed", type=random_seed, default=0)
    p.add_argument("--proxy-batch", type=positive_int, default=16, help="random inputs per NASWOT score (default 16)")
    p.add_argument("--verify", action="store_true",
                   help="measure the best architectures here and print predicted vs measured")
    p.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"], help="runtime of --verify")
    p.add_argument("--threads", type=positive_int, default=1, help="runtime threads of --verify (default 1)")
    p.add_argument("--protocol", default="brief", choices=["quick", "brief", "default", "thorough"],
                   help="measurement effort of --verify (default brief)")
    p.add_argument("--verify-out", help="arch table for --verify's measurements (default: not kept)")
    p.add_argument("--save-predictor", help="save the (adapted) predictor to this path (NAME -> NAME.npz + NAME.json)")
    p.add_argument("--json", help="write the result (best, Pareto front, verification) as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_search)


def build_predictor(args: argparse.Namespace, space):
    """The predictor of --predictor, adapted to --device-samples when given."""
    from nas.arch_predictors import load_arch_predictor
    from nas.device_loop import adapt, read_device_samples

    pred = load_arch_predictor(args.predictor, space)
    device = None
    if args.device_samples:
        archs, ms, device = read_device_samples(args.device_samples, space, args.device)
        pred = adapt(pred, space, archs, ms)
        print(f"predictor: {pred.name}, adapted to {device!r} from {len(ms)} measured architectures "
              f"({args.device_samples})")
    else:
        print(f"predictor: {pred.name} ({args.predictor})")
    return pred, device


def _search(args: argparse.Namespace) -> int:
    from device_tables.errors import HwlatError
    from nas.constraints import LatencyConstraint
    from nas.search import optuna_pareto, random_search, regularized_evolution
    from nas.search.objectives import load_objective
    from nas.spaces import get_space

    space = get_space(args.space)
    pred, device = build_predictor(args, space)
    if args.save_predictor:
        from nas.few_shot import save

        inner = getattr(pred, "predictor", None)
        if inner is None or not hasattr(inner, "get_params"):
            raise HwlatError(f"--save-predictor: the {pred.name} predictor is not a saveable feature predictor")
        pred.info = {**getattr(pred, "info", {}), "device": device, "measurements": args.device_samples}
        save(pred, args.save_predictor)  # a failing write is one error naming the path
        print(f"saved the predictor to {args.save_predictor}.npz/.json")
    c = LatencyConstraint(pred, args.max_latency_ms, min_ms=args.min_latency_ms)
    _, fast_ms, n_seen, exhaustive = c.check_budget()
    seen = f"of all {n_seen}" if exhaustive else f"of {n_seen} sampled"
    print(f"constraint: {c.min_ms or 0:g} <= predicted latency <= {c.budget_ms:g} ms (fastest {space.name} "
          f"architecture {seen}: {fast_ms:.4g} ms predicted)")
    objective = load_objective(args.objective, space, batch=args.proxy_batch, seed=args.seed)
    print(f"objective: {objective.label}")
    progress = not args.no_progress
    if args.method == "evolution":
        result = regularized_evolution(space, objective, c, budget=args.budget, population=args.population,
                                       sample=args.tournament, seed=args.seed, progress=progress)
    elif args.method == "nsga2":
        result = optuna_pareto(space, objective, c, trials=args.budget, seed=args.seed, population=args.population,
                               progress=progress)
    else:
        result = random_search(space, objective, c, budget=args.budget, seed=args.seed, progress=progress)
    print()
    print(result.format(args.top, score_name=objective.short))
    print(result.format_front(objective.short))
    report = {"search": result.to_dict(args.top), "predictor": pred.name, "objective_is_proxy": objective.is_proxy}
    best = result.best(args.top)
    if args.verify and best:
        from nas.device_loop import verify

        print(f"\nverifying the best {len(best)} on {args.runtime} (threads={args.threads}, "
              f"protocol {args.protocol}) ...")
        v = verify(space, [b.arch for b in best], [b.latency_ms for b in best], c.budget_ms, out=args.verify_out,
                   runtime=args.runtime, threads=args.threads, protocol=args.protocol, progress=progress)
        print(f"predicted vs measured on {v.device}:")
        print(v.format())
        report["verification"] = v.to_dict()
        from nas.search.reference import verified_winner

        w = verified_winner(v.keys, [b.score for b in best], v.measured, c.budget_ms)
        if w is None:
            print("winner: none of them measured within the budget")
        else:
            print(f"winner (best {objective.short} measured within {c.budget_ms:g} ms): {best[w].score:.3f} at "
                  f"{v.measured[w]:.4f} ms measured: {best[w].key}")
            report["winner"] = {"key": best[w].key, "score": best[w].score, "predicted_ms": best[w].latency_ms,
                                "measured_ms": float(v.measured[w])}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0
