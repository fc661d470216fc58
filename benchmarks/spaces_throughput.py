"""Architectures built and profiled per minute, per search space (target: NB201 >= 300/min on
onnxruntime CPU, threads=1, model building included).

For each space it times N sampled architectures end to end the way `hwlat profile archs` does
(`to_onnx` + session + the measurement protocol), and separately the building alone (`to_onnx`,
`to_torch`, `to_graph`), and prints medians. Nothing is written except an optional JSON.

    .venv/bin/python benchmarks/spaces_throughput.py                       # default protocol, 40/20/20 archs
    .venv/bin/python benchmarks/spaces_throughput.py --n 10 --protocol quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.nas.spaces import get_space  # noqa: E402
from hwlat.nas.spaces.measure import make_timer  # noqa: E402
from hwlat.profilers.runtimes import get_runtime  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402

DEFAULT_N = {"nb201": 40, "fbnet": 20, "ofa": 20}


def build_times(space, archs) -> dict[str, float]:
    """Median ms to build each representation."""
    out = {}
    for what, fn in (("to_onnx", space.to_onnx), ("to_graph", space.to_graph), ("to_torch", space.to_torch)):
        ts = []
        for a in archs:
            t0 = time.perf_counter()
            fn(a)
            ts.append((time.perf_counter() - t0) * 1e3)
        out[what] = float(np.median(ts))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", default="nb201,fbnet,ofa")
    ap.add_argument("--n", type=int, help="architectures per space (default 40 nb201, 20 fbnet/ofa)")
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--protocol", default="default", choices=["quick", "brief", "default", "thorough"])
    ap.add_argument("--repeats", type=int, default=3, help="repeat the end-to-end pass; the median rate is reported")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)

    protocol = Protocol.preset(args.protocol)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"runtime {args.runtime}, threads {args.threads}, protocol {args.protocol}, load average {load:.2f}, "
          f"{os.cpu_count()} logical cores")
    print(f"{'space':<7} {'n':>4} {'archs/min':>10} {'(min..max)':>14} {'ms/arch':>9} {'build ms':>9} {'latency ms med (range)':>26} "
          f"{'noisy':>6} {'to_onnx':>8} {'to_graph':>9} {'to_torch':>9}")
    results = {}
    for name in args.spaces.split(","):
        space = get_space(name)
        n = args.n or DEFAULT_N[name]
        archs = space.sample(n, seed=args.seed)
        timer = make_timer(get_runtime(args.runtime, threads=args.threads), space, protocol)
        timer(archs[0])  # warm imports and the runtime
        rates, medians, noisy, builds, totals = [], [], 0, [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for a in archs:
                t1 = time.perf_counter()
                m, build_ms = timer(a)
                totals.append((time.perf_counter() - t1) * 1e3)
                builds.append(build_ms)
                medians.append(m.median_ms)
                noisy += m.noisy
            rates.append(60.0 * n / (time.perf_counter() - t0))
        b = build_times(space, archs[: min(n, 10)])
        med = np.asarray(medians)
        rate = float(np.median(rates))
        results[name] = {"n": n, "archs_per_min": rate, "rates": rates, "latency_ms_median": float(np.median(med)),
                         "build_ms_median": float(np.median(builds)), "total_ms_median": float(np.median(totals)),
                         "latency_ms_min": float(med.min()), "latency_ms_max": float(med.max()),
                         "noisy_share": noisy / len(medians), "build_ms": b}
        print(f"{name:<7} {n:>4} {rate:>10.0f} {f'({min(rates):.0f}..{max(rates):.0f})':>14} {np.median(totals):>9.1f} "
              f"{np.median(builds):>9.1f} "
              f"{f'{np.median(med):.3f} ({med.min():.3f}..{med.max():.3f})':>26} {noisy / len(medians):>6.0%} "
              f"{b['to_onnx']:>8.1f} {b['to_graph']:>9.1f} {b['to_torch']:>9.1f}")
    print("ms/arch: median end to end (build + session + protocol); build ms: to_onnx (or to_torch) in the loop; "
          "last three columns: median ms to build each representation (first 10 archs)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"runtime": args.runtime, "threads": args.threads, "protocol": args.protocol,
                                               "load_avg": load, "spaces": results}, indent=2))
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
