"""`hwlat profile ops --adaptive --budget N`: profile the kernels target networks need, measuring
next where the kernel regressors are least sure or most wrong; then calibrate the overhead term."""

from __future__ import annotations

import argparse
import logging

from hwlat.commands.args import nonnegative_int, positive_int

log = logging.getLogger(__name__)


def add_adaptive_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adaptive sampling (instead of --sweep)")
    g.add_argument("--adaptive", action="store_true",
                   help="measure kernels of target networks chosen by regressor uncertainty and error (needs --budget)")
    g.add_argument("--budget", type=positive_int, help="op measurements in all, rows already in the table included")
    from hwlat.nas.pool import target_kinds

    g.add_argument("--targets", default=",".join(target_kinds()),
                   help="target networks: search spaces, 'classic' (ResNet, MobileNet, EfficientNet) and/or 'transformers', "
                        f"comma-separated (default {','.join(target_kinds())})")
    g.add_argument("--per-space", type=positive_int, default=20, help="sampled architectures per target space (default 20)")
    g.add_argument("--calibrate", type=nonnegative_int, default=6, metavar="N",
                   help="whole networks measured to calibrate the per-model overhead term (default 6; 0: none)")
    g.add_argument("--redetect-fusion", action="store_true", help="measure the fusion rules again even if the table has them")
    p.set_defaults(adaptive_defaults={a.dest: a.default for a in g._group_actions if a.dest not in ("adaptive", "budget")})


def adaptive_only_given(args: argparse.Namespace) -> list[str]:
    """The options of --adaptive given without it (--calibrate, --targets, ...), as flags."""
    return [f"--{dest.replace('_', '-')}" for dest, default in getattr(args, "adaptive_defaults", {}).items()
            if getattr(args, dest) != default]


def profile_ops_adaptive(args: argparse.Namespace, settings: dict) -> int:
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.kernels import FusionRules
    from hwlat.device_tables.table import DeviceTable
    from hwlat.nas.pool import CLASSIC, classic_networks, target_kinds, graph_of, space_networks
    from hwlat.predictors.adaptive import adaptive_profile, kernel_pool
    from hwlat.profilers.fusion import detect_fusion, format_results, store_rules
    from hwlat.commands.profile import protocol_from_args
    from hwlat.profilers.runtimes import get_runtime

    if args.budget is None:
        raise HwlatError("--adaptive needs --budget N (the number of op measurements), e.g. --budget 300")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in target_kinds()]
    if bad or not targets:
        raise HwlatError(f"--targets {','.join(bad) or repr(args.targets)}: choose from {', '.join(target_kinds())}")
    runtime = get_runtime(args.runtime, **settings)
    protocol = protocol_from_args(args, runtime.cpu_clock_ok)
    progress = not args.no_progress
    names: list[str] = []
    for t in targets:
        names += classic_networks() if t == CLASSIC else space_networks(t, args.per_space, seed=0)
    meta = {**runtime.table_meta(protocol),
            "sampling": {"method": "adaptive", "budget": args.budget, "targets": targets, "per_space": args.per_space}}
    with DeviceTable.open(args.out, runtime.device(), meta, fresh=args.fresh) as table:
        if "fusion" not in table.meta or args.redetect_fusion:
            rules, results = detect_fusion(runtime, protocol=protocol, progress=progress)
            store_rules(table, rules, runtime)
            print(format_results(results, rules))
        rules = FusionRules.from_meta(table.meta)
        graphs = [graph_of(n) for n in names]
        pool = kernel_pool(graphs, rules, runtime.dtype())
        print(f"{len(pool)} distinct kernels in {len(graphs)} target networks; fusion: {len(rules.fused)} patterns fused")
        alog = adaptive_profile(lambda s: runtime.measure(s, protocol), table, pool, args.budget, progress=progress)
        table.update_meta(adaptive_rounds=(table.meta.get("adaptive_rounds") or []) + alog.rounds)  # a resume adds its rounds
        ok = len(table.rows("ok"))
        print(f"{table.path}: {len(table)} rows ({ok} measured) after {len(alog.rounds)} rounds")
        if args.calibrate > 0:
            # Fresh networks of the same targets, not the pool: their kernels are regressed as a
            # new network's will be, so the overhead term is fitted under the same conditions.
            fresh: list[str] = []
            for t in targets:
                fresh += classic_networks((176,)) if t == CLASSIC else space_networks(t, args.calibrate, seed=1)
            _calibrate(table, runtime, fresh, args.calibrate, protocol)
    return 0


def _calibrate(table, runtime, names, n: int, protocol) -> None:
    """Measure `n` networks whole (spread over kinds) and fit the overhead term."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.pool import graph_of, in_turn, onnx_of
    from hwlat.predictors.lut import LUTPredictor

    used, ys = [], []
    for name in in_turn(names, n):
        try:
            ys.append(runtime.time_model(onnx_of(name), protocol).median_ms)
            used.append(name)
        except HwlatError as exc:
            log.warning("calibration network %s skipped: %s", name, exc)
    if not used:
        print("no calibration network could run; the overhead term stays unset")
        return
    lut = LUTPredictor(table).fit()
    cal = lut.calibrate([graph_of(name) for name in used], ys)
    lut.save_calibration()
    table.update_meta(lut_calibration_networks=used)
    print(f"overhead calibrated on {len(used)} networks: {cal.describe()}")
