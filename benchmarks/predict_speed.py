"""How fast `hwlat predict` is: architectures per second of ``predict --archs`` per space (target:
NB201 >= 1,000/s from a table), one ``hwlat predict --arch`` call against ``hwlat --version``
(target: at most 4x), and a lookup-table search (``hwlat search --predictor lut:TABLE``, which
predicts the same way: architectures proposed per second).

Many architectures are timed through the public API the command is a thin layer over
(`hwlat.predict_archs` with a spec as ``--archs`` takes it, the table given by name: loading it
and its stored regressors counts), in one process (``--jobs 1``) and with the default (every usable
core, forked workers; the same predictions); the single call, ``--version`` and the search are timed as
processes. Each number is the median of --repeats runs. Nothing is written. The machine's other
work shows in every number: compare two versions in the same run, e.g. with the last commit's tree
beside this one (``git archive HEAD | tar -x -C /tmp/base``, then this script from each tree).

    .venv/bin/python benchmarks/predict_speed.py                         # shipped onnxruntime table
    .venv/bin/python benchmarks/predict_speed.py --spaces nb201 --n 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hwlat  # noqa: E402

DEFAULT_N = {"nb201": 1000, "fbnet": 500, "ofa": 300, "vit": 20}


def archs_per_second(space: str, n: int, table: str, seed: int, jobs: int | None) -> float:
    """Architectures per second of one ``predict --archs random:N`` (a fresh table object each run)."""
    t0 = time.perf_counter()
    preds = hwlat.predict_archs(space, f"random:{n}", table, seed=seed, jobs=jobs)
    elapsed = time.perf_counter() - t0
    assert len(preds) == n
    return n / elapsed


def process_seconds(args: list[str]) -> float:
    """Wall seconds of one ``python -m hwlat ARGS`` process (this interpreter)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hwlat", *args], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="cpu_onnxruntime_fp32_threads1")
    ap.add_argument("--spaces", default=",".join(DEFAULT_N), help="comma-separated spaces (default: %(default)s)")
    ap.add_argument("--n", type=int, default=0, help="architectures per run (default per space: %s)" % DEFAULT_N)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--search-budget", type=int, default=1000,
                    help="architectures an NB201 search proposes (0: no search; default %(default)s)")
    args = ap.parse_args()

    from hwlat.device_tables.device import usable_cores

    print(f"table {args.table}; median of {args.repeats} runs; {usable_cores()} usable cores")
    for space in args.spaces.split(","):
        n = args.n or DEFAULT_N.get(space, 100)
        rates: dict[int | None, list[float]] = {1: [], None: []}  # one process, the default; alternating
        for r in range(args.repeats):
            for jobs in rates:
                rates[jobs].append(archs_per_second(space, n, args.table, seed=r, jobs=jobs))
        for jobs, got in rates.items():
            print(f"predict --archs  {space:<6} {n:>5} archs, {'--jobs 1' if jobs else 'default '}: "
                  f"{statistics.median(got):8.0f} archs/s (runs: {', '.join(f'{r:.0f}' for r in got)})")
    version = statistics.median(process_seconds(["--version"]) for _ in range(args.repeats))
    one = statistics.median(process_seconds(["predict", "--space", "nb201", "--arch", "1462", "--table", args.table])
                            for _ in range(args.repeats))
    print(f"hwlat --version                          {version:6.2f} s")
    print(f"hwlat predict --space nb201 --arch 1462  {one:6.2f} s  ({one / version:.1f}x --version; target <= 4x)")
    if args.search_budget:
        search = ["search", "--space", "nb201", "--predictor", f"lut:{args.table}", "--max-latency-ms", "1.5",
                  "--budget", str(args.search_budget), "--seed", "0", "--no-progress"]
        took = statistics.median(process_seconds(search) for _ in range(args.repeats))
        print(f"hwlat search --space nb201 --predictor lut:{args.table} --budget {args.search_budget}: {took:.2f} s "
              f"({args.search_budget / took:.0f} archs proposed/s, start-up included)")
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
