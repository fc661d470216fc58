"""Cluster profiling on one machine: sweep throughput with 1 and 2 workers, and the cost of a task.

Starts a local lab (a head and `hwlat worker` processes, see hwlat/profilers/cluster/local.py), then
times the same sweep (a) locally with `profile_ops`, (b) on one worker, (c) on two workers (each
its own device and table), and the scheduling overhead per task with a do-almost-nothing protocol.
Every timing is repeated; medians are printed. Needs Ray (pip install 'hwlat[cluster]').

    .venv/bin/python benchmarks/cluster.py [--sweep quick] [--repeats 3] [--runtime onnxruntime]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402

# One timed run, no warm-up: what is left of a task is the cost of getting it there and back.
NULL_PROTOCOL = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=1, max_runs=1, block_runs=1, max_time_s=0.0, remeasure=0)
# The same work for every task whatever the noise (100 runs, no early stop, no re-measure), so that
# throughputs compare the schedulers, not the machine's mood.
FIXED_PROTOCOL = Protocol(warmup_runs=3, warmup_s=0.0, min_runs=100, max_runs=100, block_runs=100, max_time_s=60.0,
                          target_rel_iqr=0.0, remeasure=0)
# Configurations of a few milliseconds each, like a real sweep's middle.
SWEEP = {"name": "bench-cluster", "ops": [
    {"op": ["conv2d", "conv2d+bn+relu"], "c": [16, 32], "hw": [28, 56], "cout": "same", "kernel": [1, 3], "stride": 1},
    {"op": ["dwconv2d+bn+relu6"], "c": [32, 64], "hw": [28, 56], "kernel": [3, 5], "stride": 1},
]}


def null_specs(n: int) -> list[OpSpec]:
    """`n` distinct tiny ops (each its own table row) that take microseconds to run."""
    return [OpSpec.make("relu", (1, c, 2, 2)) for c in range(1, n + 1)]


def time_local(runtime_name: str, specs, protocol: Protocol, workdir: Path, tag: str) -> float:
    from hwlat.profilers.run import profile_ops
    from hwlat.profilers.runtimes import get_runtime

    runtime = get_runtime(runtime_name, threads=1)
    t0 = time.perf_counter()
    profile_ops(runtime, specs, workdir / f"local-{tag}", protocol, progress=False)
    return time.perf_counter() - t0


def time_cluster(devices: list[str], specs, protocol: Protocol, workdir: Path, tag: str, depth: int = 2):
    from hwlat.profilers.cluster.driver import profile_ops_cluster

    t0 = time.perf_counter()
    result = profile_ops_cluster(specs, workdir / f"cluster-{tag}", devices=devices, protocol=protocol, address=None,
                                 progress=False, depth=depth)
    wall = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"cluster run failed: {result.problems()}")
    busy = sum(r.finished - r.started for r in result.records)
    return wall, len(result.records), busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", help="sweep preset or file (default: 24 conv configurations of a few ms each)")
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--protocol", default="fixed", choices=["fixed", "quick", "brief", "default", "thorough"],
                        help="fixed (default): 3 warm-up + 100 timed runs per configuration, whatever the noise")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--null-tasks", type=int, default=100, help="tasks in the overhead measurement (default 100)")
    parser.add_argument("--keep", action="store_true", help="keep the tables and the lab's logs (default: removed)")
    args = parser.parse_args()

    from hwlat.profilers.cluster.driver import connect, disconnect
    from hwlat.profilers.cluster.local import LocalLab
    from hwlat.profilers.runtimes import get_runtime
    from hwlat.profilers.sweeps import load_sweep

    work = Path(tempfile.mkdtemp(prefix="hwlat-bench-cluster-"))
    sweep = args.sweep
    if sweep is None:
        import yaml

        sweep = work / "sweep.yaml"
        sweep.write_text(yaml.safe_dump(SWEEP))
    specs = get_runtime(args.runtime, threads=1).accepts(load_sweep(sweep))
    protocol = FIXED_PROTOCOL if args.protocol == "fixed" else Protocol.preset(args.protocol)
    nulls = null_specs(args.null_tasks)
    n = len(specs)
    print(f"machine: {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f}; runtime {args.runtime} "
          f"threads=1; sweep {args.sweep or SWEEP['name']} ({n} configurations), protocol {args.protocol}; "
          f"{args.repeats} repeats, medians")
    t0 = time.perf_counter()
    with LocalLab(work / "lab") as lab:
        print(f"head up in {time.perf_counter() - t0:.1f} s", flush=True)
        t1 = time.perf_counter()
        lab.start_worker(f"w1={args.runtime}:threads=1")
        print(f"worker 1 up in {time.perf_counter() - t1:.1f} s", flush=True)
        connect(lab.address)
        try:
            rows = []
            # Untimed first runs (imports, session caches, Ray's first worker calls), then the timed runs
            # interleaved, so that drift of a shared machine hits every variant alike.
            time_local(args.runtime, specs[:4], protocol, work, "warm")
            time_cluster(["w1"], specs[:4], protocol, work, "warm")
            local, one, local_null, null1, null2 = [], [], [], [], []
            for i in range(args.repeats):
                local.append(time_local(args.runtime, specs, protocol, work, f"s{i}"))
                one.append(time_cluster(["w1"], specs, protocol, work, f"one{i}"))
                local_null.append(time_local(args.runtime, nulls, NULL_PROTOCOL, work, f"n{i}"))
                null1.append(time_cluster(["w1"], nulls, NULL_PROTOCOL, work, f"n1-{i}", depth=1))
                null2.append(time_cluster(["w1"], nulls, NULL_PROTOCOL, work, f"n2-{i}", depth=2))
            t2 = time.perf_counter()
            lab.start_worker(f"w2={args.runtime}:threads=1")
            print(f"worker 2 up in {time.perf_counter() - t2:.1f} s", flush=True)
            time_cluster(["w2"], specs[:4], protocol, work, "warm2")
            two = [time_cluster(["w1", "w2"], specs, protocol, work, f"two{i}") for i in range(args.repeats)]
        finally:
            disconnect()
    med = statistics.median
    wl, w1, w2 = med(local), med(w for w, _, _ in one), med(w for w, _, _ in two)
    rows.append(("local profile_ops", n, wl, n / wl))
    rows.append(("cluster, 1 worker", n, w1, n / w1))
    rows.append(("cluster, 2 workers", 2 * n, w2, 2 * n / w2))
    print()
    print(f"{'sweep throughput':<22} {'rows':>5} {'wall s':>8} {'rows/s':>8}")
    for name, r, wall, rate in rows:
        print(f"{name:<22} {r:>5} {wall:>8.2f} {rate:>8.1f}")
    print(f"2 workers vs 1: {(2 * n / w2) / (n / w1):.2f}x rows/s (2 cores shared with the rest of the machine)")
    busy1 = med(b for _, _, b in one)
    print(f"1 worker: device busy {busy1 / w1:.0%} of the wall time; cluster vs local on the sweep: "
          f"{(w1 - wl) / n * 1e3:+.1f} ms per configuration")
    print("  (a local run measures, then fsyncs each row, in turn; the cluster's driver writes a row while the "
          "device measures the next)")
    m = len(nulls)
    ln, n1, n2 = med(local_null), med(w for w, _, _ in null1), med(w for w, _, _ in null2)
    b1, b2 = med(b for _, _, b in null1), med(b for _, _, b in null2)
    print()
    print(f"cost of a task ({m} tasks of microseconds each: build the op, one timed run, write the row; 1 worker):")
    print(f"  local run              {ln / m * 1e3:6.2f} ms per task, all of it in this process")
    print(f"  cluster, 1 in flight   {n1 / m * 1e3:6.2f} ms per task; in the actor {b1 / m * 1e3:.2f} ms, "
          f"the rest ({(n1 - b1) / m * 1e3:.2f} ms) is Ray's round trip + the driver's write")
    print(f"  cluster, 2 in flight   {n2 / m * 1e3:6.2f} ms per task; in the actor {b2 / m * 1e3:.2f} ms "
          f"(the default: the next call waits at the actor while the driver writes)")
    print(f"  -> scheduling overhead against a local run: {(n1 - ln) / m * 1e3:+.2f} ms (1 in flight), "
          f"{(n2 - ln) / m * 1e3:+.2f} ms (2 in flight) per task")
    print(f"(cluster walls include connecting the devices and opening tables; total benchmark {time.perf_counter() - t0:.0f} s)")
    if args.keep:
        print(f"tables and logs kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
