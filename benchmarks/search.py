"""Benchmark: latency-constrained search on the demo device (this CPU, onnxruntime, threads=1).

The demo's pipeline (10 reference + 10 random NB201 architectures measured, the shipped transfer
predictor adapted), then, per latency budget (percentiles of the predicted latencies of all 15625
architectures), a constrained regularised evolution; its best architectures are measured.
Prints, per budget: predicted vs measured latency of the searched architectures (MAPE, Spearman),
constraint violations on the device, and the search's wall time (split into predictor/search
overhead and proxy scoring). Also measures `--holdout` random architectures for the predictor's
accuracy over the whole space.

    .venv/bin/python benchmarks/search.py --budgets 10,30,50 --evaluations 100 --verify 5 --holdout 40
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="10,30,50", help="latency budgets as percentiles of the predictions")
    ap.add_argument("--evaluations", type=int, default=100, help="architectures scored per search")
    ap.add_argument("--verify", type=int, default=5, help="best architectures measured per search")
    ap.add_argument("--holdout", type=int, default=40,
                    help="random architectures measured to score the predictor (0: skip)")
    ap.add_argument("--protocol", default="default", help="measurement protocol preset (default: default, as the demo)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default="0", help="comma-separated search seeds")
    ap.add_argument("--out", default="results/bench_search", help="folder for the measured arch tables")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from hwlat.nas.constraints import LatencyConstraint
    from hwlat.nas.device_loop import adapt, measure, shot_archs, verify
    from hwlat.nas.features import latency_features
    from hwlat.nas.search import NaswotProxy, regularized_evolution
    from hwlat.nas.spaces import get_space
    from hwlat.predictors.metrics import mape, spearman, within10

    space = get_space("nb201")
    out = Path(args.out)
    t = time.perf_counter()
    shots = shot_archs(space, 10, seed=0)
    m = measure(space, shots, out / "shots", threads=args.threads, protocol=args.protocol, progress=False, fresh=True)
    pred = adapt("pretrained", space, m.archs, m.ms)
    print(f"device {m.device}; {len(shots)} shots measured + adapted in {time.perf_counter() - t:.1f} s "
          f"(protocol {args.protocol})")
    archs = list(space.enumerate())
    t = time.perf_counter()
    all_ms = pred.predictor.predict(latency_features(space, archs)[0])
    print(f"predicted all {len(archs)} in {time.perf_counter() - t:.2f} s")
    report: dict = {"device": m.device, "protocol": args.protocol, "evaluations": args.evaluations, "searches": []}

    if args.holdout:
        shot_keys = {space.key(a) for a in shots}
        rng = np.random.default_rng(123)
        pool = [a for a in space.sample(args.holdout * 2, rng) if space.key(a) not in shot_keys][: args.holdout]
        h = measure(space, pool, out / "holdout", threads=args.threads, protocol=args.protocol, progress=False,
                    fresh=True)
        p = pred.predict(h.archs)
        ok = np.isfinite(h.ms)
        hold = {"n": int(ok.sum()), "mape": mape(p[ok], h.ms[ok]), "spearman": spearman(p[ok], h.ms[ok]),
                "within10": within10(p[ok], h.ms[ok])}
        report["holdout"] = hold
        print(f"predictor on {hold['n']} random held-out archs: Spearman {hold['spearman']:.3f}, "
              f"MAPE {hold['mape']:.1%}, ±10% {hold['within10']:.0%}")

    rows = []
    for pct in (float(x) for x in args.budgets.split(",")):
        budget = float(np.percentile(all_ms, pct))
        for seed in (int(s) for s in args.seeds.split(",")):
            c = LatencyConstraint(pred, budget)
            obj = NaswotProxy(space, batch=16, seed=seed)
            t = time.perf_counter()
            res = regularized_evolution(space, obj, c, budget=args.evaluations, seed=seed, progress=False)
            wall = time.perf_counter() - t
            best = res.best(args.verify)
            v = verify(space, [b.arch for b in best], [b.latency_ms for b in best], budget,
                       out=out / f"verify_p{pct:g}_s{seed}", threads=args.threads, protocol=args.protocol,
                       progress=False)
            row = {"percentile": pct, "seed": seed, "budget_ms": budget, "wall_s": wall,
                   "proxy_s": res.objective_seconds,
                   "overhead_s": wall - res.objective_seconds, "proposals": res.proposals, "rejected": res.rejected,
                   "predicted_infeasible_returned": int(sum(not c_.feasible for c_ in res.history)),
                   "verified": int(v.ok.sum()), "mape": v.mape, "spearman": v.spearman, "violations": v.violations,
                   "max_over_ms": float(np.nanmax(v.measured - budget)) if v.ok.any() else float("nan"),
                   "predicted_ms": v.predicted.tolist(), "measured_ms": v.measured.tolist()}
            rows.append(row)
            report["searches"].append(row)

    print()
    print(f"{'budget':>16} {'seed':>4} {'wall s':>7} {'proxy s':>7} {'other s':>7} {'rejected':>9} "
          f"{'MAPE':>6} {'Spearman':>8} {'violations':>10}  measured - budget (worst)")
    for r in rows:
        label = f"p{r['percentile']:g} {r['budget_ms']:.3f} ms"
        print(f"{label:>16} {r['seed']:>4} {r['wall_s']:>7.1f} {r['proxy_s']:>7.1f} "
              f"{r['overhead_s']:>7.2f} {r['rejected']:>4}/{r['proposals']:<4} {r['mape']:>6.1%} {r['spearman']:>8.3f} "
              f"{r['violations']:>4} of {r['verified']:<3}  {r['max_over_ms']:+.3f} ms")
    pooled_p = np.concatenate([r["predicted_ms"] for r in rows])
    pooled_m = np.concatenate([r["measured_ms"] for r in rows])
    ok = np.isfinite(pooled_m)
    viol = sum(r["violations"] for r in rows)
    print(f"\npooled over {len(rows)} searches: {int(ok.sum())} searched archs measured, "
          f"MAPE {mape(pooled_p[ok], pooled_m[ok]):.1%}, Spearman {spearman(pooled_p[ok], pooled_m[ok]):.3f}, "
          f"constraint violations on the device {viol} of {int(ok.sum())}; "
          f"predicted-infeasible archs returned: {sum(r['predicted_infeasible_returned'] for r in rows)}")
    report["pooled"] = {"n": int(ok.sum()), "mape": mape(pooled_p[ok], pooled_m[ok]),
                        "spearman": spearman(pooled_p[ok], pooled_m[ok]), "violations": viol}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
