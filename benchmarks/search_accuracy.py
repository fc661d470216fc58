"""Benchmark: the most accurate NB201 network under a measured latency budget on this machine
(onnxruntime CPU, threads=1), the demo's path: 10 reference + 10 random architectures measured,
the shipped transfer predictor adapted; beside it the lookup-table predictor of the shipped
device table. Per predictor and seed, a constrained regularised evolution and an NSGA-II search
(Optuna) on the shipped NATS-Bench CIFAR-10 accuracy; each search's best `--verify` are measured
and its winner is the most accurate one measured within the budget.

Prints per search: the winner's accuracy, measured latency, and its regret (accuracy points)
against (a) the best architecture of the shipped measured arch table within the budget, by the
table's latencies and, since a shared machine's speed drifts between days, at today's speed: the
table's latencies times today's drift (the median ratio now / table of `--drift-sample` of its
architectures measured again beside the searched ones), its `--reference-candidates` most accurate
architectures within 1.1x the budget measured now, and the best of them measured within it; and (b)
the best of all 15,625 whose predicted latency is within the budget, by each predictor.

    .venv/bin/python benchmarks/search_accuracy.py --budget-ms 1.0 --seeds 0,1,2 \
        --lut-predictions lut_all.csv   # from: hwlat predict --space nb201 --archs all \
                                        #   --table cpu_onnxruntime_fp32_threads1 --out lut_all.csv (~6 min)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TABLE = "cpu_onnxruntime_fp32_threads1"


def lut_predictions(space, path: str | None) -> np.ndarray:
    """LUT-predicted ms of all archs by index: from `hwlat predict --out` CSV, or computed (slow)."""
    import pandas as pd

    if path:
        df = pd.read_csv(path)
        ms = np.full(space.size, np.nan)
        ms[df["nb201_index"].to_numpy()] = df["predicted_ms"].to_numpy(dtype=float)
        return ms
    from nas.arch_predictors import load_arch_predictor

    print(f"predicting all {space.size} with lut:{TABLE} (several minutes; pass --lut-predictions to reuse)")
    return load_arch_predictor(f"lut:{TABLE}", space).predict(list(space.enumerate()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-ms", type=float, default=1.0)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--evaluations", type=int, default=150, help="architectures scored by the evolution")
    ap.add_argument("--trials", type=int, default=300, help="NSGA-II trials")
    ap.add_argument("--verify", type=int, default=5, help="best architectures measured per search")
    ap.add_argument("--protocol", default="default")
    ap.add_argument("--lut-predictions", help="CSV of `hwlat predict --archs all --table ... --out`")
    ap.add_argument("--lut-margin", type=float, default=0.0, help="margin for the LUT (default 0)")
    ap.add_argument("--reference-candidates", type=int, default=12,
                    help="the table's most accurate architectures near the budget measured now for the reference")
    ap.add_argument("--drift-sample", type=int, default=30,
                    help="architectures of the shipped arch table measured again to scale it to today's speed (default 30)")
    ap.add_argument("--out", default="results/bench_search_accuracy")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from nas.accuracy import accuracy_table
    from nas.arch_predictors import CallablePredictor
    from nas.constraints import LatencyConstraint
    from nas.device_loop import adapt, measure, shot_archs
    from nas.features import latency_features
    from nas.search import optuna_pareto, regularized_evolution
    from nas.search.reference import best_within, measured_reference, table_latencies, verified_winner
    from nas.spaces import get_space

    space, out, budget = get_space("nb201"), Path(args.out), args.budget_ms
    acc = accuracy_table(space).values(args.dataset)
    t = time.perf_counter()
    m = measure(space, shot_archs(space, 10, seed=0), out / "shots", protocol=args.protocol, progress=False, fresh=True)
    transfer = adapt("pretrained", space, m.archs, m.ms)
    loo = np.asarray(getattr(transfer.predictor, "loo_rel_error_", []), dtype=float)
    t_margin = float(min(np.quantile(loo[np.isfinite(loo)], 0.8), 0.2)) if np.isfinite(loo).any() else 0.0
    print(f"device {m.device}: {int(np.isfinite(m.ms).sum())} archs measured + transfer adapted in "
          f"{time.perf_counter() - t:.1f} s (protocol {args.protocol}); margin {t_margin:.1%} (leave-one-out)")
    archs = list(space.enumerate())
    preds = {"transfer (20 shots)": (transfer.predictor.predict(latency_features(space, archs)[0]), t_margin),
             f"LUT {TABLE}": (lut_predictions(space, args.lut_predictions), args.lut_margin)}
    ref = measured_reference(space, acc, m.device, budget)
    print(f"reference: {ref.what}: best within {budget:g} ms is {ref.accuracy:.3f}% at {ref.latency_ms:.3f} ms "
          f"(table), {ref.n_within} of {ref.n} within" if ref else "reference: no shipped arch table for this device")
    best_all = {}
    for name, (all_ms, _) in preds.items():
        b = best_within(space, acc, range(space.size), all_ms, budget, name)
        best_all[name] = b
        print(f"best of all {space.size} with {name} prediction <= {budget:g} ms: {b.accuracy:.3f}% "
              f"({b.n_within} archs within; #{b.index} at {b.latency_ms:.3f} ms predicted)")

    searches = []
    for name, (all_ms, margin) in preds.items():
        pred = CallablePredictor(space, lambda a, ms=all_ms: ms[[x.index for x in a]], batched=True, name=name)
        c = LatencyConstraint(pred, budget / (1 + margin))
        for seed in (int(s) for s in args.seeds.split(",")):
            for method in ("evolution", "nsga2"):
                t = time.perf_counter()
                if method == "evolution":
                    res = regularized_evolution(space, f"accuracy:{args.dataset}", c, budget=args.evaluations,
                                                seed=seed, progress=False)
                else:
                    res = optuna_pareto(space, f"accuracy:{args.dataset}", c, trials=args.trials, seed=seed,
                                        population=50, progress=False)
                searches.append({"predictor": name, "method": method, "seed": seed, "margin": margin,
                                 "wall_s": time.perf_counter() - t, "scored": res.evaluations,
                                 "best": res.best(args.verify)})

    # measure every searched best, the table's reference and a sample of the table once, at the end
    keys = {}
    for s in searches:
        for b in s["best"]:
            keys.setdefault(b.key, b.arch)
    table = table_latencies(space, m.device)
    drift_sample: dict[str, float] = {}
    if ref and table:
        keys.setdefault(ref.key, space.parse(ref.key))
        _, idx, ms = table
        for i in np.random.default_rng(0).choice(len(idx), size=min(args.drift_sample, len(idx)), replace=False):
            arch = space.from_index(int(idx[i]))
            drift_sample[space.key(arch)] = float(ms[i])
            keys.setdefault(space.key(arch), arch)
    t = time.perf_counter()
    v = measure(space, list(keys.values()), out / "verified", protocol=args.protocol, progress=False, fresh=True)
    measured = dict(zip(keys, v.ms))
    print(f"measured {len(keys)} distinct architectures (searched, references, {len(drift_sample)} of the table) "
          f"in {time.perf_counter() - t:.1f} s")
    ref_now = None
    if ref:
        drift = float(np.nanmedian([measured[k] / ms for k, ms in drift_sample.items()]))
        print(f"drift: {len(drift_sample)} archs of the table measure {drift:.2f}x their table latency now (median); "
              f"the table's reference #{ref.index}, {ref.latency_ms:.3f} ms in the table, measures "
              f"{measured[ref.key]:.3f} ms now")
        # The most accurate of the table's architectures whose scaled latency is within 10% over the
        # budget, measured now: the best of them measured within the budget is the reference.
        _, idx, ms = table
        near = np.flatnonzero(ms * drift <= 1.1 * budget)
        top = near[np.argsort(-acc[idx[near]], kind="stable")[: args.reference_candidates]]
        cands = {space.key(space.from_index(int(idx[i]))): space.from_index(int(idx[i])) for i in top}
        todo = [a for k, a in cands.items() if k not in measured]
        if todo:
            measured.update(zip([space.key(a) for a in todo], measure(space, todo, out / "reference_now",
                                                                      protocol=args.protocol, progress=False,
                                                                      fresh=True).ms))
        keys_now = list(cands)
        ref_now = best_within(space, acc, [space.index(cands[k]) for k in keys_now], [measured[k] for k in keys_now],
                              budget, f"the {len(keys_now)} most accurate archs of the table within {budget:g} ms "
                                      f"x1.1 at x{drift:.2f}, measured now")
        if ref_now is not None:
            print(f"reference at today's speed: {ref_now.what}: the best within {budget:g} ms is "
                  f"{ref_now.accuracy:.3f}% (#{ref_now.index}, {ref_now.latency_ms:.3f} ms measured now)")

    print(f"\n{'predictor':<44} {'method':<9} {'seed':>4} {'scored':>6} {'wall s':>6}  {'winner %':>8} "
          f"{'measured':>8}  {'meets':>5}  {'regret vs table':>15}  {'vs table now':>12}  {'regret vs all (same pred.)':>26}")
    rows = []
    for s in searches:
        best = s["best"]
        ms = [measured[b.key] for b in best]
        w = verified_winner([b.key for b in best], [b.score for b in best], ms, budget)
        win = best[w] if w is not None else None
        row = {k: s[k] for k in ("predictor", "method", "seed", "margin", "wall_s", "scored")}
        row.update({"verified_ms": ms, "verified_accuracy": [b.score for b in best],
                    "winner": None if win is None else {"key": win.key, "index": win.arch.index, "accuracy": win.score,
                                                        "predicted_ms": win.latency_ms, "measured_ms": ms[w]},
                    "regret_vs_table": None if (win is None or ref is None) else ref.accuracy - win.score,
                    "regret_vs_table_now": None if (win is None or ref_now is None) else ref_now.accuracy - win.score,
                    "regret_vs_all": None if win is None else best_all[s["predictor"]].accuracy - win.score})
        rows.append(row)
        now = f"{row['regret_vs_table_now']:>+12.3f}" if row["regret_vs_table_now"] is not None else f"{'-':>12}"
        wtxt = (f"{win.score:>8.3f} {ms[w]:>8.3f}  {'yes':>5}  {row['regret_vs_table']:>+15.3f}  {now}  "
                f"{row['regret_vs_all']:>+26.3f}" if win else f"{'none':>8} {'':>8}  {'no':>5}")
        print(f"{s['predictor']:<44} {s['method']:<9} {s['seed']:>4} {s['scored']:>6} {s['wall_s']:>6.1f}  {wtxt}")
    for name in preds:
        got = [r["winner"]["accuracy"] for r in rows if r["predictor"] == name and r["winner"]]
        n = sum(r["predictor"] == name for r in rows)
        meets = sum(1 for r in rows if r["predictor"] == name and r["winner"])
        if got:
            print(f"{name}: winners meet the budget in {meets}/{n} searches; winner accuracy median "
                  f"{np.median(got):.3f}% (min {min(got):.3f}); >= table best ({ref.accuracy:.3f}%): "
                  f"{sum(a >= ref.accuracy for a in got) if ref else 'n/a'}/{n}; >= table best at today's speed "
                  f"({ref_now.accuracy:.3f}%): {sum(a >= ref_now.accuracy for a in got)}/{n}" if ref_now else "")
        else:
            print(f"{name}: no winner met the budget in {n} searches")
    if args.json:
        report = {"device": m.device, "budget_ms": budget, "dataset": args.dataset, "protocol": args.protocol,
                  "reference_table": ref.to_dict() if ref else None,
                  "reference_measured_now_ms": float(measured[ref.key]) if ref else None,
                  "reference_at_todays_speed": ref_now.to_dict() if ref_now else None,
                  "best_all": {k: b.to_dict() for k, b in best_all.items()}, "searches": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
