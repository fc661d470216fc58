"""What the protocol's stop on the median's standard error (`Protocol.target_rel_se`) saves, and what
it costs: random rows of a device table (or, with --networks, random whole networks of the shipped
spaces and classic CNNs, as `hwlat profile archs` times them) timed on this machine with the default
protocol and with that stop turned off (timings whose spread stays above 3% then run to the time cap),
alternating the two, in two rounds minutes apart. Prints the seconds each rule spent and how far apart
the medians are: the two rules within one round, and each rule between the rounds (the machine's own
drift), and the median ratio of the two rules (a bias would show there).

    .venv/bin/python benchmarks/stopping_rule.py --runtime torch --table cpu_torch_fp32_threads1 -n 80
    .venv/bin/python benchmarks/stopping_rule.py --runtime onnxruntime --table cpu_onnxruntime_fp32_threads1
    .venv/bin/python benchmarks/stopping_rule.py --runtime onnxruntime --networks -n 40
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

import numpy as np

from hwlat.device_tables.registry import load as load_table
from hwlat.profilers.runtimes import get_runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--table", default="cpu_onnxruntime_fp32_threads1", help="the rows to time: a table name or path")
    ap.add_argument("-n", type=int, default=80, help="rows, or with --networks networks, N split evenly over the "
                                                     "network kinds and rounded up per kind (default 80)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--networks", action="store_true", help="time whole networks instead of a table's rows")
    args = ap.parse_args()

    runtime = get_runtime(args.runtime, threads=1)
    rules = {"stop on the median's error": runtime.default_protocol()}
    rules["time cap only"] = replace(rules["stop on the median's error"], target_rel_se=0.0)
    if args.networks:
        from hwlat.nas.pool import onnx_of
        from user_path import networks  # this folder is on the path when the script runs

        kinds = ["nb201", "fbnet", "ofa", "classic"]
        names = networks(kinds, -(-args.n // len(kinds)), args.seed)
        things = {name: (lambda protocol, name=name: runtime.time_model(onnx_of(name), protocol)) for name in names}
        what = f"{len(things)} networks ({', '.join(kinds)})"
    else:
        rows = load_table(args.table).rows("ok")
        picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
        things = {r.spec.key: (lambda protocol, spec=r.spec: runtime.measure(spec, protocol)[0]) for r in picked}
        what = f"{len(things)} rows of {args.table}"
    seconds = dict.fromkeys(rules, 0.0)
    medians: dict[tuple[str, int], dict[str, float]] = {(rule, k): {} for rule in rules for k in (0, 1)}
    for round_ in (0, 1):
        for i, (key, timed) in enumerate(things.items()):
            for rule in (list(rules) if (i + round_) % 2 == 0 else list(rules)[::-1]):
                t0 = time.perf_counter()
                m = timed(rules[rule])
                seconds[rule] += time.perf_counter() - t0
                medians[(rule, round_)][key] = m.median_ms

    def gap(a: tuple[str, int], b: tuple[str, int]) -> str:
        g = np.abs(np.log([medians[a][k] / medians[b][k] for k in medians[a]]))
        return f"median {np.median(g):.1%}, p90 {np.percentile(g, 90):.1%}, >5% apart: {np.mean(g > np.log(1.05)):.0%}"

    print(f"{what} on {args.runtime}, each timed with both rules in two rounds")
    for rule in rules:
        print(f"  {rule:28s} {seconds[rule]:6.1f} s")
    a, b = rules
    print(f"  the two rules, same round:   {gap((a, 0), (b, 0))} | {gap((a, 1), (b, 1))}")
    ratio = [medians[(a, k)][key] / medians[(b, k)][key] for k in (0, 1) for key in things]
    print(f"  median ratio {a} / {b}: {np.median(ratio):.3f}")
    for rule in rules:
        print(f"  {rule}, round 1 vs 2: {gap((rule, 0), (rule, 1))}")


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
