"""Lookup-table prediction accuracy: predicted vs measured whole-network latency on this machine.

For each runtime (onnxruntime CPU threads=1, LiteRT fp32 threads=1) it builds three tables from
the kernels of a *pool* of target networks (space samples + classic CNNs, seed 0):
  grid      a regular grid over the pool's ranges (fused kernels per the detected fusion rules);
  adaptive  kernels of the pool chosen by `hwlat.predictors.adaptive` with at most half the grid's budget;
  naive     a grid of the unfused ops, predicted by plain summation (no fusion rules);
calibrates each on a few whole-network measurements of pool networks, then predicts *other*
networks (NB201/FBNet/OFA samples of another seed + the classic CNNs) and prints ±10% accuracy,
MAPE and Spearman side by side, with the number of op measurements each table needed, and a
scatter PNG under results/.

The overhead term is calibrated on networks outside both the pool and the evaluation set, and
those are never scored. Smaller tables cut from the measured ones (``adaptive@25%``: its first rows;
``grid@50%``: a random half) show accuracy against the number of measurements without measuring more.

Stages (each resumes from files under --out): fusion, tables, measure, calibrate, evaluate; `all`.
Small run:  .venv/bin/python benchmarks/lut_accuracy.py --per-space 10 --pool-per-space 4 --protocol quick --calibration-models 8
Full run:   .venv/bin/python benchmarks/lut_accuracy.py --per-space 154 --protocol brief --clock cpu --passes 5
            (501 networks on onnxruntime, 347 on LiteRT; the README's numbers, ~45 minutes)
On a busy shared machine add ``--clock cpu`` (thread CPU time: threads=1 runtimes compute on the
calling thread, so time given to other processes is not counted). Rows are measured in
``--table-passes`` passes over all tables (default: as many as ``--passes``, at least 2;
NAME.passK files) and keep their quietest, as a network's truth is its quietest of ``--passes``;
`all` measures pass p of the tables next to pass p of the networks, runtime by runtime, so rows and
networks meet the same quiet and busy spells.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.kernels import FusionRules  # noqa: E402
from hwlat.device_tables.table import DeviceTable, quietest  # noqa: E402

log = logging.getLogger("lut_accuracy")
RUNTIMES = {"onnxruntime": {"threads": 1}, "litert": {"threads": 1, "precision": "fp32"}}
TABLES = ("grid", "adaptive", "naive")
# Smaller tables cut from the measured ones (no extra measurements): the accuracy-vs-measurements trade-off.
VARIANTS = ("adaptive@25%", "grid@50%")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["fusion", "tables", "measure", "calibrate", "evaluate", "all"])
    p.add_argument("--runtimes", default="onnxruntime,litert")
    p.add_argument("--out", default=str(ROOT / "results" / "lut"))
    p.add_argument("--per-space", type=int, default=231,
                   help="evaluation samples per space (default 231: 732 networks on onnxruntime, 501 on LiteRT, which "
                        "cannot lower FBNet's grouped 1x1 convs and channel shuffles)")
    p.add_argument("--pool-per-space", type=int, default=24, help="pool networks per space the tables are built for")
    p.add_argument("--classic-resolutions", default="160,192,224")
    p.add_argument("--grid-channels", type=int, default=6, help="channel levels of the grid")
    p.add_argument("--grid-spatial", type=int, default=4, help="spatial-size levels of the grid")
    p.add_argument("--adaptive-fraction", type=float, default=0.5, help="adaptive budget as a share of the grid's size")
    p.add_argument("--calibration-models", type=int, default=32,
                   help="whole networks the calibration is fitted on (default 32; from 8 on, per kernel type)")
    p.add_argument("--protocol", default="default", choices=["quick", "brief", "default", "thorough"])
    p.add_argument("--seed", type=int, default=1, help="seed of the evaluation samples (the pool uses 0)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall (the protocol's clock) or cpu: the calling thread's CPU time, steady on a busy shared machine")
    p.add_argument("--op-timing", default="single", choices=["single", "context"],
                   help="single: one single-op model per row (less the call overhead at prediction); context: onnxruntime "
                        "rows of shape-keeping ops are the marginal cost of one more copy in a chain (hwlat.profilers.context)")
    p.add_argument("--passes", type=int, default=1, help="times each network is measured, in separate passes (default 1)")
    p.add_argument("--table-passes", type=int, default=None,
                   help="times each table row is measured, in separate passes over the tables; a row keeps its quietest "
                        "(default: as many as --passes, at least 2)")
    p.add_argument("--statistic", default="p10", choices=["median", "p10"],
                   help="latency statistic of rows and networks (default p10, the 10th percentile of a measurement's runs: "
                        "on this shared machine it follows the uncontended speed more closely than the median; "
                        "onnxruntime's grid and adaptive tables +0 to +4.4 points of ±10%% accuracy in four runs, "
                        "LiteRT's -0.6 to +0.8)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ---- helpers ---------------------------------------------------------------------------------
def runtime(name: str):
    from hwlat.profilers.runtimes import get_runtime

    return get_runtime(name, **RUNTIMES[name])


def resolutions(args) -> tuple[int, ...]:
    return tuple(int(r) for r in args.classic_resolutions.split(","))


def pool_networks(args) -> list[str]:
    from hwlat.nas.pool import target_networks

    return target_networks(args.pool_per_space, seed=0, resolutions=resolutions(args)[:1] + resolutions(args)[-1:])


def calibration_networks(args) -> list[str]:
    """Networks for the overhead term, apart from the pool the tables were built for and from the
    evaluation set (another seed; classic CNNs at a resolution used nowhere else), so calibration
    sees regressed kernels as evaluation does. Twice as many candidates as needed (some may not run)."""
    from hwlat.nas.pool import classic_networks, target_networks

    per = max(1, -(-args.calibration_models // 2))
    spaces = target_networks(per, seed=args.seed + 1000, classic=False)
    classic = classic_networks((176,))[::3]
    by_kind: dict[str, list[str]] = {}
    for n in spaces + classic:
        by_kind.setdefault(n.split(":")[0], []).append(n)
    out: list[str] = []
    while len(out) < 2 * args.calibration_models and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind]:
                out.append(by_kind[kind].pop(0))
    return out


def interleaved(few: list[str], many: list[str]) -> list[str]:
    """`many` with `few` spread evenly through it. A pass measures the networks in this order: the
    calibration networks then meet the same slow and quiet spells of a shared machine as the
    evaluated ones. Measured first in each pass, they once ran 3-8% faster than in the session
    before while the evaluated networks ran 1% slower, and the calibration carried that bias into
    every prediction (onnxruntime's OFA networks 7% under)."""
    out, step, j = [], len(many) / max(len(few), 1), 0
    for i, name in enumerate(many):
        while j < len(few) and j * step <= i:
            out.append(few[j])
            j += 1
        out.append(name)
    return out + few[j:]


def eval_networks(args) -> list[str]:
    from hwlat.nas.pool import target_networks

    return target_networks(args.per_space, seed=args.seed, resolutions=resolutions(args))


def graphs_of(names: list[str], progress: bool) -> dict[str, object]:
    from tqdm import tqdm

    from hwlat.nas.pool import graph_of

    return {n: graph_of(n) for n in tqdm(names, desc="graphs", unit="net", disable=not progress, dynamic_ncols=True)}


def bench_protocol(args):
    """The protocol preset with the chosen clock."""
    from dataclasses import replace

    from hwlat.profilers.protocol import Protocol

    return replace(Protocol.preset(args.protocol), clock=args.clock)


def rules_path(out: Path, rt: str) -> Path:
    return out / rt / "fusion.json"


def load_rules(out: Path, rt: str) -> FusionRules:
    path = rules_path(out, rt)
    if not path.exists():
        raise SystemExit(f"{path} missing: run --stage fusion first")
    return FusionRules.from_meta({"fusion": json.loads(path.read_text())})


# ---- stages ----------------------------------------------------------------------------------
def stage_fusion(args, rt_name: str) -> None:
    from hwlat.profilers.fusion import detect_fusion, format_results

    path = rules_path(Path(args.out), rt_name)
    if path.exists():
        print(f"[fusion] {rt_name}: {path} exists (delete it to re-detect)")
        return
    rt = runtime(rt_name)
    t0 = time.time()
    protocol = bench_protocol(args)
    rules, results = detect_fusion(rt, protocol=protocol, progress=not args.no_progress,
                                   measure=lambda s: rt.measure(s, protocol))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**rules.to_meta(), "runtime": rt_name}, indent=2) + "\n")
    print(format_results(results, rules))
    print(f"[fusion] {rt_name}: {len(rules.fused)} fused patterns of {len(results)} in {time.time() - t0:.0f} s -> {path}")


def table_passes(args, rt_name: str):
    """The table stage of one runtime as a function of the pass: `measure_pass(p)` measures pass p
    of the grid, naive and adaptive tables (the adaptive table's first pass chooses its rows, later
    passes re-measure them); `measure_pass(None)` keeps each row's quietest pass in the final tables."""
    from hwlat.predictors.adaptive import adaptive_profile, grid_specs, kernel_pool, profile_specs_into
    out = Path(args.out) / rt_name
    rules = load_rules(Path(args.out), rt_name)
    rt = runtime(rt_name)
    protocol = bench_protocol(args)
    graphs = list(graphs_of(pool_networks(args), not args.no_progress).values())
    dtype = rt.dtype()
    pool = kernel_pool(graphs, rules, dtype)
    naive_pool = kernel_pool(graphs, FusionRules.none(), dtype)
    grid = grid_specs([s for s, _ in pool.values()], args.grid_channels, args.grid_spatial)
    naive_grid = grid_specs([s for s, _ in naive_pool.values()], args.grid_channels, args.grid_spatial)
    budget = int(args.adaptive_fraction * len(grid))
    print(f"[tables] {rt_name}: pool {len(pool)} kernels of {len(graphs)} networks; grid {len(grid)}; "
          f"adaptive budget {budget}; naive grid {len(naive_grid)}")
    device = rt.device()
    fusion_meta = {**rules.to_meta(), "runtime": rt_name}

    context = args.op_timing == "context" and rt_name == "onnxruntime"

    def measure(spec):
        if context:
            from hwlat.profilers.context import measure_in_context

            return measure_in_context(rt, spec, protocol, call_overhead_ms=rules.call_overhead_ms)
        return rt.measure(spec, protocol)

    if context:  # marginal rows carry no per-call overhead to take off
        fusion_meta["call_overhead_ms"] = 0.0
    meta = {"protocol": protocol.to_dict(), "fusion": fusion_meta, "clock": args.clock,
            "op_timing": "context" if context else "single"}
    metas = {"grid": {**meta, "sampling": {"method": "grid", "size": len(grid)}},
             "naive": {**meta, "fusion": {**FusionRules.none().to_meta(), "call_overhead_ms": fusion_meta["call_overhead_ms"]},
                       "sampling": {"method": "naive", "size": len(naive_grid)}},
             "adaptive": {**meta, "sampling": {"method": "adaptive", "budget": budget, "pool": len(pool)}}}
    passes = table_pass_count(args)

    def path(name: str, p: int) -> Path:
        return out / (name if passes == 1 else f"{name}.pass{p}")

    def measure_pass(p: int | None) -> None:
        if p is None:
            if passes > 1:
                for name in TABLES:
                    merged = quietest([DeviceTable.load(path(name, q)) for q in range(1, passes + 1)], f"{args.statistic}_ms")
                    merged.save(out / name)
                print(f"[tables] {rt_name}: each row is the quietest of {passes} passes -> {out}/{{grid,naive,adaptive}}")
            return
        for name in ("grid", "naive", "adaptive"):
            t0 = time.time()
            with DeviceTable.open(path(name, p), device, metas[name]) as t:
                if name == "adaptive" and p == 1:
                    alog = adaptive_profile(measure, t, pool, budget, progress=not args.no_progress)
                    t.update_meta(adaptive_rounds=alog.rounds)
                    print(f"[tables] {rt_name} adaptive: {len(t)} rows in {len(alog.rounds)} rounds, {time.time() - t0:.0f} s")
                    continue
                specs = {"grid": grid, "naive": naive_grid}.get(name) or [r.spec for r in DeviceTable.load(path(name, 1))]
                n = profile_specs_into(measure, t, specs, not args.no_progress, desc=name)
                print(f"[tables] {rt_name} {name}{f' pass {p}' if passes > 1 else ''}: {n} measured now, {len(t)} rows, {time.time() - t0:.0f} s")

    return measure_pass


def table_pass_count(args) -> int:
    return max(1, args.table_passes if args.table_passes is not None else max(2, args.passes))


def stage_tables(args, rt_name: str) -> None:
    measure_pass = table_passes(args, rt_name)
    for p in range(1, table_pass_count(args) + 1):
        measure_pass(p)
    measure_pass(None)


def stage_tables_and_measure(args, rt_names: list[str], names: list[str]) -> None:
    """Tables and networks measured pass by pass: pass p of every table, then pass p of every
    network, runtime by runtime. A row and a network then get as many chances at a quiet spell of a
    shared machine, in the same stretch of time; measured apart, the tables had 2 passes within
    minutes and the networks 5 over the next 25 (an OFA network's quietest pass was up to 16% below
    its next)."""
    jobs = {rt: table_passes(args, rt) for rt in rt_names}
    table_count = table_pass_count(args)
    for p in range(1, max(table_count, args.passes) + 1):
        for rt in rt_names:
            if p <= table_count:
                jobs[rt](p)
            if p <= args.passes:
                stage_measure(args, rt, names, upto=p)
    for rt in rt_names:
        jobs[rt](None)


def measured_path(out: Path, rt: str) -> Path:
    return out / rt / "measured.csv"


def read_measured(path: Path) -> dict[str, dict]:
    """Network -> its measurement; over several passes, the quietest pass: the least of the medians
    and of the p10s; `quiet_gap` says how far the second least sits above it, per statistic). Other
    work on a shared machine only ever slows a pass down (even on the thread-CPU clock: it shares
    caches and memory bandwidth); on this machine a network's slowest of 5 passes was >10% above its
    fastest for half the FBNet networks, while fresh sessions on a quiet machine agree within 2%."""
    if not path.exists():
        return {}
    by: dict[str, list[dict]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            by.setdefault(r["network"], []).append(r)
    out = {}
    for name, rows in by.items():
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            out[name] = {**rows[-1], "passes": len(rows)}
            continue
        out[name] = {"network": name, "status": "ok", "passes": len(rows), "quiet_gap": {}}
        for stat in ("median_ms", "p10_ms"):
            v = sorted(float(r[stat]) for r in ok)
            out[name][stat] = v[0]
            # how far the second-quietest pass sits above the quietest: the truth's own noise
            out[name]["quiet_gap"][stat] = v[1] / v[0] - 1 if len(v) > 1 else None
    return out


def stage_measure(args, rt_name: str, names: list[str], upto: int | None = None) -> None:
    """Measure `names` in passes 1..`upto` (default: all of --passes), resuming what is on file."""
    from tqdm import tqdm

    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.pool import onnx_of
    rt = runtime(rt_name)
    protocol = bench_protocol(args)
    path = measured_path(Path(args.out), rt_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    have = read_measured(path)
    # Each pass times every network once more (a network that failed is not retried); passes spread
    # over time make a busy machine's slow spells visible (see read_measured).
    runnable = [n for n in dict.fromkeys(names) if have.get(n, {}).get("status", "ok") == "ok"]
    todo = [n for p in range(upto or args.passes) for n in runnable if have.get(n, {}).get("passes", 0) <= p]
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["network", "status", "median_ms", "p10_ms", "rel_iqr", "n", "error"])
        failed: set[str] = set()
        for name in tqdm(todo, desc=f"measure {rt_name}", unit="net", disable=args.no_progress, dynamic_ncols=True):
            if name in failed:  # not runnable in an earlier pass of this run: not tried again
                continue
            try:
                m = rt.time_model(onnx_of(name), protocol)
                w.writerow([name, "ok", f"{m.median_ms:.6g}", f"{m.p10_ms:.6g}", f"{m.rel_iqr:.4f}", m.n, ""])
            except HwlatError as exc:
                failed.add(name)
                w.writerow([name, "error", "", "", "", "", str(exc).replace("\n", " ")[:300]])
            f.flush()
    rows = read_measured(path)
    ok = sum(r["status"] == "ok" for r in rows.values())
    print(f"[measure] {rt_name}: {ok} networks measured, {len(rows) - ok} not runnable -> {path}")


def predictor(rt_name: str, table_name: str, out: Path, statistic: str = "median"):
    from hwlat.predictors.lut import LUTPredictor

    table = DeviceTable.load(out / rt_name / table_name)
    naive = table_name == "naive"  # plain summation: rows as measured, no fusion rules
    return LUTPredictor(table, rules=FusionRules.none() if naive else None, statistic=f"{statistic}_ms",
                        layout_reorders=not naive).fit()  # another statistic's calibration is dropped


def stage_calibrate(args, rt_name: str) -> None:
    out = Path(args.out)
    measured = read_measured(measured_path(out, rt_name))
    pool = [n for n in calibration_networks(args) if measured.get(n, {}).get("status") == "ok"]
    if not pool:
        raise SystemExit(f"no measured calibration networks for {rt_name}: run --stage measure")
    # Spread the calibration networks over spaces and the classic CNNs.
    by_kind: dict[str, list[str]] = {}
    for n in pool:
        by_kind.setdefault(n.split(":")[0], []).append(n)
    calib: list[str] = []
    while len(calib) < min(args.calibration_models, len(pool)):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(calib) < args.calibration_models:
                calib.append(by_kind[kind].pop(0))
    graphs = graphs_of(calib, False)
    y = [float(measured[n][f"{args.statistic}_ms"]) for n in calib]
    for name in TABLES:
        lut = predictor(rt_name, name, out, args.statistic)
        cal = lut.calibrate([graphs[n] for n in calib], y)
        lut.save_calibration()
        lut.table.update_meta(lut_calibration_networks=calib)
        print(f"[calibrate] {rt_name} {name}: {cal.describe()}")


def stage_evaluate(args, rt_names: list[str], names: list[str]) -> None:
    from hwlat.predictors.metrics import score

    out = Path(args.out)
    graphs = graphs_of(list(dict.fromkeys(names)), not args.no_progress)
    report: dict = {}
    noise: dict = {}
    lines = [f"{'runtime':<12} {'table':<12} {'op rows':>7} {'nets':>5} {'partial':>7} {'±10%':>7} {'MAPE':>7} {'Spearman':>8}   by kind (±10%)"]
    points: dict = {}
    for rt_name in rt_names:
        measured = read_measured(measured_path(out, rt_name))
        nets = [n for n in graphs if measured.get(n, {}).get("status") == "ok"]
        if not nets:
            print(f"[evaluate] {rt_name}: nothing measured; run --stage measure")
            continue
        calib = set(DeviceTable.load(out / rt_name / "grid").meta.get("lut_calibration_networks", []))
        nets = [n for n in nets if n not in calib]  # never score a network the overhead was fitted on
        y = np.asarray([float(measured[n][f"{args.statistic}_ms"]) for n in nets])
        gaps = [measured[n]["quiet_gap"][f"{args.statistic}_ms"] for n in nets]
        gaps = np.asarray([g for g in gaps if g is not None])
        if len(gaps):
            noise[rt_name] = {f"quiet_gap_over_{k}pct": float(np.mean(gaps > k / 100)) for k in (5, 10)}
            print(f"[evaluate] {rt_name}: the truth's noise: of {len(gaps)} networks, the second-quietest pass is more than "
                  f"5% above the quietest for {noise[rt_name]['quiet_gap_over_5pct']:.0%}, 10% for "
                  f"{noise[rt_name]['quiet_gap_over_10pct']:.0%}")
        for name in TABLES + VARIANTS:
            lut = predictor(rt_name, name, out, args.statistic) if name in TABLES else _variant(rt_name, name, out, args)
            preds = [lut.predict_graph(graphs[n], name=n) for n in nets]
            p = np.asarray([pr.total_ms for pr in preds])
            partial = np.asarray([pr.partial for pr in preds])
            s = score(p, y)
            kinds = {}
            for kind in sorted({n.split(":")[0] for n in nets}):
                m = np.asarray([n.split(":")[0] == kind for n in nets])
                kinds[kind] = float(np.mean(np.abs(p[m] - y[m]) <= 0.1 * y[m]))
            rows = len(lut.table.rows("ok"))
            report.setdefault(rt_name, {})[name] = {**s.as_dict(), "op_rows": rows, "partial": int(partial.sum()),
                                                    "by_kind_within10": kinds,
                                                    "regressed_share": float(np.mean([pr.counts["regressor"] / max(1, len(pr.kernels)) for pr in preds]))}
            points.setdefault(rt_name, {})[name] = (y, p, partial)
            lines.append(f"{rt_name:<12} {name:<12} {rows:>7} {len(nets):>5} {int(partial.sum()):>7} {s.within10:>7.1%} "
                         f"{s.mape:>7.2%} {s.spearman:>8.4f}   " + ", ".join(f"{k} {v:.0%}" for k, v in kinds.items()))
    print("\n".join(lines))
    kernel_lines = _kernel_cross_check(args, rt_names, out)
    if kernel_lines:
        print("\n".join(kernel_lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({**report, "truth_noise": noise}, indent=2) + "\n")
    if points:
        _scatter(points, out / "lut_accuracy_scatter.png")
        print(f"[evaluate] report -> {out / 'report.json'}, scatter -> {out / 'lut_accuracy_scatter.png'}")


def _variant(rt_name: str, name: str, out: Path, args):
    """A smaller table from the measured ones, recalibrated on the same networks: ``adaptive@25%`` is
    the adaptive table's first rows (the order they were chosen in), ``grid@50%`` a random half of the grid."""
    from hwlat.predictors.lut import Calibration, LUTPredictor

    base, _, pct = name.partition("@")
    full = DeviceTable.load(out / rt_name / base)
    rows = full.rows()
    n = max(1, int(round(len(DeviceTable.load(out / rt_name / "grid")) * float(pct.rstrip("%")) / 100)))
    if base == "adaptive":
        keep = rows[:n]
    else:
        keep = [rows[i] for i in sorted(np.random.default_rng(0).choice(len(rows), size=min(n, len(rows)), replace=False))]
    table = DeviceTable(full.device, dict(full.meta))
    for r in keep:
        if r.ok:
            table.append(r.spec, r.measurement, extra=r.extra)
        else:
            table.append(r.spec, error=r.error)
    lut = LUTPredictor(table, calibration=Calibration(), statistic=f"{args.statistic}_ms").fit()
    calib = full.meta.get("lut_calibration_networks", [])
    measured = read_measured(measured_path(out, rt_name))
    calib = [c for c in calib if measured.get(c, {}).get("status") == "ok"]
    if calib:
        graphs = graphs_of(calib, False)
        lut.calibrate([graphs[c] for c in calib], [float(measured[c][f"{args.statistic}_ms"]) for c in calib])
    return lut


def _kernel_cross_check(args, rt_names: list[str], out: Path) -> list[str]:
    """Kernel level: each fused table's regressors scored on the other table's measured rows it lacks."""
    from hwlat.predictors.kernel_regressors import KernelRegressors

    lines = []
    stat = f"{args.statistic}_ms"
    for rt_name in rt_names:
        tabs = {}
        for name in ("grid", "adaptive"):
            path = out / rt_name / name
            if path.with_suffix(".json").exists():
                tabs[name] = DeviceTable.load(path)
        if len(tabs) < 2:
            continue
        for a, b in (("grid", "adaptive"), ("adaptive", "grid")):
            train = tabs[a].rows("ok")
            test = [r for r in tabs[b].rows("ok") if r.spec not in tabs[a]]
            if not train or not test:
                continue
            reg = KernelRegressors().fit([r.spec for r in train], [getattr(r.measurement, stat) for r in train])
            sc = reg.score([r.spec for r in test], [getattr(r.measurement, stat) for r in test])
            est = [e for e in reg.estimate([r.spec for r in test]) if e is not None]
            flagged = sum(e.extrapolated for e in est)
            lines.append(f"[kernels] {rt_name}: regressors of {a} ({len(train)} rows) on {len(test)} {b} rows: MAPE {sc['mape']:.1%}, "
                         f"within 10% {sc['acc10']:.0%}, covered {sc['covered']:.0%}, flagged as extrapolation {flagged}")
    return lines


def _scatter(points: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rts = list(points)
    fig, axes = plt.subplots(len(rts), len(TABLES), figsize=(4.2 * len(TABLES), 4 * len(rts)), squeeze=False)
    for i, rt in enumerate(rts):
        for j, name in enumerate(TABLES):
            ax = axes[i][j]
            if name not in points[rt]:
                ax.axis("off")
                continue
            y, p, partial = points[rt][name]
            ax.scatter(y[~partial], p[~partial], s=6, alpha=0.6, label="full")
            if partial.any():
                ax.scatter(y[partial], p[partial], s=6, alpha=0.6, c="tab:red", label="partial")
            lo, hi = min(y.min(), p.min()) * 0.9, max(y.max(), p.max()) * 1.1
            xs = np.array([lo, hi])
            ax.plot(xs, xs, "k-", lw=0.8)
            ax.fill_between(xs, xs * 0.9, xs * 1.1, color="gray", alpha=0.2, label="±10%")
            ax.set_xscale("log")
            ax.set_yscale("log")
            acc = np.mean(np.abs(p - y) <= 0.1 * y)
            ax.set_title(f"{rt} / {name}: ±10% {acc:.1%}", fontsize=9)
            ax.set_xlabel("measured ms")
            ax.set_ylabel("predicted ms")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rts = [r for r in args.runtimes.split(",") if r]
    # `all` measures the tables and the networks pass by pass (stage_tables_and_measure)
    stages = ["fusion", "tables+measure", "calibrate", "evaluate"] if args.stage == "all" else [args.stage]
    ev = eval_networks(args) if {"tables+measure", "measure", "evaluate"} & set(stages) else []
    print(f"evaluation networks: {len(ev)}; runtimes: {', '.join(rts)}; protocol {args.protocol}")
    for stage in stages:
        if stage == "evaluate":
            stage_evaluate(args, rts, ev)
            continue
        if stage == "tables+measure":
            stage_tables_and_measure(args, rts, interleaved(calibration_networks(args), ev))
            continue
        for rt in rts:
            if stage == "fusion":
                stage_fusion(args, rt)
            elif stage == "tables":
                stage_tables(args, rt)
            elif stage == "measure":
                stage_measure(args, rt, interleaved(calibration_networks(args), ev))
            elif stage == "calibrate":
                stage_calibrate(args, rt)
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
