"""The user's path, measured: fresh random networks timed with the defaults of `hwlat profile archs`
and predicted with the defaults of `hwlat predict` from a device table (shipped, or one `hwlat profile
device` just made), on this machine. Each network is timed in two passes; its truth is the quieter pass
(other work on a shared machine only ever slows a run down, and `hwlat profile device` takes the same
truth). Prints ±10% accuracy per kind of network against that truth and against the first pass alone
(what one measurement gives), and the machine's own noise beside them: the share of networks whose two
passes differ by more than 5% / 10%, and its drift: a few of the table's own stored networks timed
again, against their times when the table was made (a machine that runs 1.2x slower for a long spell
has pass-to-pass noise near zero, and no table made in its other state meets ±10% then). `hwlat
predict` scales a table of this machine's kind by that speed (`--as-profiled`: not); the scores are of
its default, and the column "as profiled" scores the table's own times in the same run.

    .venv/bin/python benchmarks/user_path.py --table cpu_onnxruntime_fp32_threads1 --per-kind 20
    .venv/bin/python benchmarks/user_path.py --table cpu_litert_fp32_threads1

The networks are NB201, FBNet, OFA and ViT samples of a seed none of the table's stages used (default: a
new one each run, printed), and the classic CNNs (each at its own random resolution, 128-224) and
transformers at a random sequence length; a network the runtime cannot run is skipped and counted.
Measured with `Runtime.time_model` and the default protocol, the function and settings `hwlat profile
archs` uses (its `--clock auto`: the thread's CPU time on threads=1 CPU runtimes); predicted with
`hwlat.predict` (the same path as `hwlat predict`). Tables of one device (runtime, precision,
settings) are scored against the same measurements, so they compare fairly. Takes about
2 x per-kind x 6 x 1.3 s per device.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="append", help="device table name or path (repeatable; default: the shipped "
                                                      "onnxruntime and LiteRT threads=1 tables)")
    p.add_argument("--per-kind", type=int, default=20, help="networks per kind (default 20)")
    p.add_argument("--seed", type=int, help="seed of the samples (default: a new one, printed)")
    p.add_argument("--kinds", default="nb201,fbnet,ofa,classic,vit,transformers",
                   help="kinds of networks: search spaces, 'classic' (CNNs) and 'transformers' (default all six)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def networks(kinds: list[str], per_kind: int, seed: int) -> list[str]:
    from hwlat.nas.models import variants
    from hwlat.nas.pool import space_networks

    rng = random.Random(seed)
    names: list[str] = []
    for kind in kinds:
        if kind == "classic":
            pool = [f"classic:{c.key}" for c in variants(tuple(range(128, 232, 8)))]
            names += rng.sample(pool, min(per_kind, len(pool)))
        else:
            names += space_networks(kind, per_kind, seed=seed)
    return names


def two_passes(runtime, protocol, names: list[str]) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Each network timed in two passes, network by network (to see the machine's noise): name -> its
    two medians in ms, and name -> why the runtime cannot run it."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.pool import onnx_of

    passes: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for _ in range(2):
        for name in names:
            if name in skipped:
                continue
            try:
                passes.setdefault(name, []).append(runtime.time_model(onnx_of(name), protocol).median_ms)
            except HwlatError as exc:
                skipped[name] = str(exc).splitlines()[0]
                passes.pop(name, None)
    return passes, skipped


def table_drift(table, runtime):
    """`hwlat table drift` of `table` (None for one that stores no network timings)."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_profile import drift

    try:
        return drift(table, runtime=runtime)
    except HwlatError:
        return None


def main(argv=None) -> int:
    import hwlat
    from hwlat.nas.pool import graph_of
    from hwlat.profilers.runtimes import get_runtime
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10_000, 1_000_000)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    names = networks(kinds, args.per_kind, seed)
    print(f"seed {seed}: {len(names)} networks ({', '.join(kinds)})")
    report = {"seed": seed, "tables": {}}
    timed: dict[tuple, tuple[dict[str, list[float]], dict[str, str]]] = {}
    for table_name in args.table or ["cpu_onnxruntime_fp32_threads1", "cpu_litert_fp32_threads1"]:
        table = hwlat.load_table(table_name)
        dev = table.device
        settings = dict(dev.settings)
        runtime = get_runtime(dev.runtime, precision=dev.precision, **settings)
        protocol = runtime.default_protocol()  # what `hwlat profile archs` measures with by default
        same_device = (dev.runtime, dev.precision, json.dumps(settings, sort_keys=True, default=str), protocol)
        t0 = time.time()
        if same_device not in timed:  # tables of one device are scored against the same measurements
            timed[same_device] = two_passes(runtime, protocol, names)
        passes, skipped = timed[same_device]
        rows = []
        for name, ms in passes.items():
            pred = hwlat.predict(graph_of(name), table=table)
            rows.append({"network": name, "kind": name.split(":")[0], "measured_ms": ms, "predicted_ms": pred.total_ms,
                         "ratio": pred.total_ms / min(ms), "ratio_first": pred.total_ms / ms[0],
                         "ratio_as_profiled": pred.total_ms / pred.speed / min(ms), "speed": pred.speed,
                         "partial": pred.partial, "pass_gap": max(ms) / min(ms) - 1})
        moved = table_drift(table, runtime)
        print(f"\n{table.name} ({dev.name}, {protocol.clock} clock), {time.time() - t0:.0f} s (tables of one device "
              f"share one measurement); {len(skipped)} networks the runtime cannot run")
        print(f"drift: {moved.describe()}" if moved else "drift: n/a (the table stores no network timings)")
        speeds = sorted({r["speed"] for r in rows})
        print("predictions at the table's own times (hwlat predict's speed scaling off or within 5%)" if speeds == [1.0]
              else f"predictions scaled to this machine's speed now by hwlat predict: x{', x'.join(f'{v:.2f}' for v in speeds)}")
        print(f"{'kind':<12} {'n':>3} {'±10%':>12} {'MAPE':>6} {'pred/meas range':>16}  {'first pass ±10%':>15}"
              f"  {'as profiled ±10%':>16}   noise: passes >5% / >10% apart")
        out = {}
        for kind in kinds + ["all"]:
            sel = [r for r in rows if kind == "all" or r["kind"] == kind]
            if not sel:
                continue
            ratio = np.asarray([r["ratio"] for r in sel])
            whole = ~np.asarray([r["partial"] for r in sel])
            hit = int(np.sum((np.abs(ratio - 1) <= 0.10) & whole))
            first = int(np.sum((np.abs(np.asarray([r["ratio_first"] for r in sel]) - 1) <= 0.10) & whole))
            own = int(np.sum((np.abs(np.asarray([r["ratio_as_profiled"] for r in sel]) - 1) <= 0.10) & whole))
            gap = np.asarray([r["pass_gap"] for r in sel])
            out[kind] = {"n": len(sel), "within_10": hit, "within_10_first_pass": first, "within_10_as_profiled": own,
                         "mape": float(np.mean(np.abs(ratio - 1))),
                         "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
                         "noise_5": float(np.mean(gap > 0.05)), "noise_10": float(np.mean(gap > 0.10))}
            o = out[kind]
            print(f"{kind:<12} {o['n']:>3} {hit:>4} ({hit / len(sel):>5.1%}) {o['mape']:>6.1%} "
                  f"{o['ratio_min']:>7.2f}..{o['ratio_max']:<7.2f}  {first:>4} ({first / len(sel):>5.1%})"
                  f"  {own:>9} ({own / len(sel):>5.1%})"
                  f"   {o['noise_5']:.0%} / {o['noise_10']:.0%}")
        report["tables"][table.name] = {"device": dev.name, "scores": out, "skipped": skipped, "networks": rows,
                                        "drift": moved and {"median": moved.median, "ratios": moved.ratios}}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
