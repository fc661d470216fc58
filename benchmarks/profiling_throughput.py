"""Op-profiling throughput, repeatability and harness overhead, per runtime (prints numbers).

For each available runtime (onnxruntime, torch, litert) and one sweep:
  throughput     op configurations measured per minute by `profile_ops` (model building, session
                 creation, warm-up and the adaptive protocol included), from a fresh table;
  repeatability  the same sweep profiled twice into independent tables; per configuration
                 |a - b| / mean(a, b) of the two medians; its median (target <= 3% at threads=1);
  overhead       for a few configurations spread over the latency range, the protocol's median
                 against a bare loop around the same call (blocks of back-to-back calls timed as a
                 whole, median of the block means); harness / bare - 1 (target <= 5%).

    .venv/bin/python benchmarks/profiling_throughput.py                      # quick sweep, default protocol
    .venv/bin/python benchmarks/profiling_throughput.py --runtimes onnxruntime --limit 10 --overhead-ops 4

The machine's load average is printed with the results: other work on the cores shows up as noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.errors import HwlatError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.profilers.protocol import Protocol, measure  # noqa: E402
from hwlat.profilers.run import profile_ops  # noqa: E402
from hwlat.profilers.runtimes import get_runtime  # noqa: E402
from hwlat.profilers.sweeps import load_sweep  # noqa: E402

RUNTIMES = ("onnxruntime", "torch", "litert")


def sweep_run(runtime: Any, specs: list[OpSpec], protocol: Protocol, out: Path) -> tuple[float, dict[str, float], int]:
    """Profile `specs` into a fresh table: wall seconds, key -> median ms, noisy count."""
    t0 = time.perf_counter()
    result = profile_ops(runtime, specs, out, protocol, progress=False)
    wall = time.perf_counter() - t0
    medians = {r.spec.key: r.measurement.median_ms for r in result.table if r.ok}
    return wall, medians, result.noisy


def bare_loop(call: Any, target_block_s: float = 2e-4, blocks: int = 200) -> float:
    """Per-call ms of back-to-back calls, timed per block (one clock pair per block); median of blocks.

    Short blocks, many of them: on a shared machine a block that another process preempts is an
    outlier the median drops, as the protocol's median drops a preempted sample."""
    clock = time.perf_counter_ns
    for _ in range(5):
        call()
    t0 = clock()
    call()
    one = max((clock() - t0) * 1e-9, 1e-7)
    per_block = int(min(max(target_block_s / one, 5), 10_000))
    means = []
    for _ in range(blocks):
        t0 = clock()
        for _ in range(per_block):
            call()
        means.append((clock() - t0) * 1e-6 / per_block)
    return float(np.median(means))


def overhead(runtime: Any, specs: list[OpSpec], protocol: Protocol, rounds: int = 3) -> list[tuple[str, float, float]]:
    """(op key, harness median ms, bare-loop ms) per spec; harness and bare alternate `rounds` times."""
    context = getattr(runtime, "context", contextlib.nullcontext)
    rows = []
    for spec in specs:
        prepared = runtime.prepare(spec)
        call = getattr(prepared.timed, "__wrapped__", None)
        try:
            if call is None:
                continue
            harness, bare = [], []
            with context():
                for _ in range(rounds):
                    harness.append(measure(prepared.timed, protocol).median_ms)
                    bare.append(bare_loop(call))
            rows.append((spec.key, float(np.median(harness)), float(np.median(bare))))
        finally:
            prepared.close()
    return rows


def spread(specs: list[OpSpec], medians: dict[str, float], n: int) -> list[OpSpec]:
    """`n` specs evenly spaced over the measured latency range (fastest and slowest included)."""
    ranked = sorted((s for s in specs if s.key in medians), key=lambda s: medians[s.key])
    if len(ranked) <= n:
        return ranked
    idx = np.unique(np.linspace(0, len(ranked) - 1, n).round().astype(int))
    return [ranked[i] for i in idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated (default: all available)")
    ap.add_argument("--sweep", default="quick", help="sweep preset or file (default quick)")
    ap.add_argument("--protocol", default="default", choices=["quick", "brief", "default", "thorough"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="profile only the first N configurations (0: all)")
    ap.add_argument("--overhead-ops", type=int, default=6, help="configurations in the overhead test")
    args = ap.parse_args(argv)

    protocol = Protocol.preset(args.protocol)
    all_specs = load_sweep(args.sweep)
    results = []
    for name in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        try:
            runtime = get_runtime(name, threads=args.threads, precision="fp32")
        except HwlatError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        specs = runtime.accepts(all_specs)
        if args.limit:
            specs = specs[: args.limit]
        print(f"{name}: {len(specs)} configurations of sweep {args.sweep!r}, protocol {args.protocol}, "
              f"threads {args.threads} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="hwlat_bench_") as tmp:
            wall_a, med_a, noisy_a = sweep_run(runtime, specs, protocol, Path(tmp) / "a")
            wall_b, med_b, noisy_b = sweep_run(runtime, specs, protocol, Path(tmp) / "b")
        common = [k for k in med_a if k in med_b]
        rel = np.array([abs(med_a[k] - med_b[k]) / ((med_a[k] + med_b[k]) / 2) for k in common])
        over = overhead(runtime, spread(specs, med_a, args.overhead_ops), protocol)
        ratios = np.array([h / b - 1 for _, h, b in over]) if over else np.array([])
        results.append({
            "runtime": name, "configs": len(specs), "wall_s": (wall_a + wall_b) / 2,
            "per_min": 60 * len(specs) / ((wall_a + wall_b) / 2), "noisy": (noisy_a + noisy_b) / 2,
            "rep_med": float(np.median(rel)) if rel.size else float("nan"),
            "rep_p90": float(np.percentile(rel, 90)) if rel.size else float("nan"),
            "ovh_med": float(np.median(ratios)) if ratios.size else float("nan"),
            "ovh_max": float(np.max(ratios)) if ratios.size else float("nan"),
            "over": over,
        })

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} logical cores")
    print(f"{'runtime':<12} {'configs':>7} {'sweep s':>8} {'configs/min':>11} {'noisy':>6}  "
          f"{'repeat |d| med':>14} {'p90':>6}  {'overhead med':>12} {'max':>6}")
    for r in results:
        print(f"{r['runtime']:<12} {r['configs']:>7} {r['wall_s']:>8.1f} {r['per_min']:>11.0f} {r['noisy']:>6.1f}  "
              f"{r['rep_med']:>14.1%} {r['rep_p90']:>6.1%}  {r['ovh_med']:>12.1%} {r['ovh_max']:>6.1%}")
    print("targets: repeatability median <= 3% (threads=1), harness overhead <= 5%")
    for r in results:
        if r["over"]:
            print(f"\n{r['runtime']} overhead detail (harness median ms vs bare loop ms):")
            for key, h, b in r["over"]:
                print(f"  {h:9.4f} {b:9.4f} {h / b - 1:+7.1%}  {key}")
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
