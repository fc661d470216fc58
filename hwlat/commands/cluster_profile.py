"""`--cluster` for `hwlat profile ops|archs`: the options, and the runs on a Ray cluster (docs/tutorials/fleet.md)."""

from __future__ import annotations

import argparse
import sys

from hwlat.commands.args import positive_float


def add_cluster_options(parser: argparse.ArgumentParser, unit: str = "configurations") -> None:
    """Add --cluster, --device and --device-timeout to a `profile` target (without --cluster it runs locally)."""
    g = parser.add_argument_group("cluster (optional; needs hwlat[cluster], see docs/tutorials/fleet.md)")
    g.add_argument("--cluster", metavar="ADDRESS",
                   help="run on the Ray cluster at ADDRESS (auto, HOST:PORT or ray://HOST:PORT) instead of this machine: "
                        f"{unit} go to the devices workers advertise, one table per device in --out (a folder)")
    g.add_argument("--device", action="append", default=[], metavar="NAME",
                   help="advertised device(s) to measure on (repeatable or comma-separated; default: every answering "
                        "device of --runtime); their settings come from the worker's --devices spec")
    g.add_argument("--device-timeout", type=positive_float, default=300.0, metavar="S",
                   help="give a device up after it has not answered for S seconds (default 300); its rows are kept")


def device_names(args: argparse.Namespace) -> list[str]:
    return [n.strip() for value in args.device for n in value.split(",") if n.strip()]


def _warn_local_settings(args: argparse.Namespace) -> None:
    local = [f"--{k.replace('_', '-')}" for k in ("opt_level", "xnnpack", "board", "provider", "cudnn_benchmark")
             if getattr(args, k, None)]
    if getattr(args, "threads", 1) != 1:
        local.append("--threads")
    if getattr(args, "precision", None) is not None:
        local.append("--precision")
    if local:
        print(f"hwlat: note: {', '.join(local)} ignored with --cluster: a device's settings are its worker's "
              "--devices spec (hwlat worker --list shows them)", file=sys.stderr)


def _check_out(args: argparse.Namespace) -> None:
    """--out is a folder with --cluster: a table's file name there made a folder of that name (t/x.csv/NAME.csv)."""
    from pathlib import Path

    from hwlat.device_tables.errors import HwlatError

    out = Path(args.out)
    if out.suffix in (".csv", ".json"):
        raise HwlatError(f"--out {args.out}: with --cluster, --out is a folder that gets one table per device, named "
                         f"after it; pass --out {out.with_suffix('')}")


def _check_runtime(names: list[str], runtime: str | None) -> None:
    """A device named with --device must run the --runtime given (when it answers now)."""
    from hwlat.profilers.cluster.worker import ClusterError, list_devices

    if not runtime or not names:
        return
    infos, _ = list_devices()
    wrong = [f"{n} runs {infos[n]['ad']['runtime']}" for n in names if n in infos and infos[n]["ad"]["runtime"] != runtime]
    if wrong:
        raise ClusterError(f"--runtime {runtime}, but device {'; '.join(wrong)}; pass its runtime or another --device")


def profile_ops_on_cluster(args: argparse.Namespace) -> int:
    """`hwlat profile ops ... --cluster ADDRESS`: one table per device under --out."""
    from hwlat.profilers.cluster.driver import connect, disconnect, profile_ops_cluster
    from hwlat.commands.profile import protocol_from_args
    from hwlat.profilers.sweeps import load_sweep

    specs = load_sweep(args.sweep)
    _check_out(args)
    _warn_local_settings(args)
    names = device_names(args)
    connected = connect(args.cluster)
    try:
        _check_runtime(names, args.runtime)
        result = profile_ops_cluster(specs, args.out, devices=names or None, runtime=args.runtime,
                                     protocol=protocol_from_args(args), address=None,
                                     progress=not args.no_progress, sweep_name=str(args.sweep),
                                     device_timeout_s=args.device_timeout, fresh=args.fresh)
    finally:
        if connected:
            disconnect()
    _print_runs(result, "device")
    n = len(result.records)
    if n:
        print(f"{n} configurations in {result.seconds:.1f} s ({n / result.seconds:.1f}/s) on {len(result.runs)} device(s)")
    result.raise_for_problems()
    return 0


# ---- profile archs --------------------------------------------------------------------------------------


def measure_arch(runtime, payload: dict, protocol, cache: dict):
    """The job of `hwlat profile archs`, run in a device's actor: build one architecture and time it whole."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.spaces import get_space
    from hwlat.nas.spaces.measure import make_timer
    from hwlat.profilers.cluster.worker import Outcome

    key = ("arch-timer", payload["space"], tuple(sorted(payload["options"].items())), payload["batch"], protocol)
    if key not in cache:
        space = get_space(payload["space"], **payload["options"])
        cache[key] = make_timer(runtime, space, protocol, payload["batch"])
    try:
        m, build_ms = cache[key](payload["arch"])
    except (HwlatError, RuntimeError, ValueError) as exc:  # as a local run: a failed arch is an empty cell
        return Outcome(error=f"{type(exc).__name__}: {exc}")
    return Outcome(m, {"build_ms": build_ms})


def _arch_sink(path, space: str, device, meta: dict, fresh: bool = False):
    """An arch table of one device, written by the driver only (see hwlat.profilers.cluster.driver.LockedSink)."""
    from pathlib import Path

    from hwlat.device_tables.archtable import ArchTableWriter
    from hwlat.nas.spaces import arch_keys
    from hwlat.profilers.cluster.driver import LockedSink

    class ArchSink(LockedSink):
        def __init__(self) -> None:
            super().__init__(ArchTableWriter(path, arch_keys(space), device, meta, fresh=fresh))
            self.device_name = device.name
            self.path = Path(path)

        def _append(self, task, o) -> None:
            if o.error is not None:
                self.table.append(task.payload["record"], error=o.error)
            else:
                self.table.append(task.payload["record"], o.measurement, build_ms=o.extra.get("build_ms"))

    return ArchSink()


def profile_archs_on_cluster(args: argparse.Namespace) -> int:
    """`hwlat profile archs ... --cluster ADDRESS`: one arch table per device under --out."""
    from pathlib import Path

    import numpy as np

    from hwlat.device_tables.device import Device
    from hwlat.device_tables.errors import HwlatError
    from hwlat.commands.space import space_options
    from hwlat.nas.spaces import get_space
    from hwlat.nas.spaces.measure import resolve_archs
    from hwlat.profilers.cluster.driver import Task, connect, disconnect, run_cluster, select_devices, table_stem
    from hwlat.commands.profile import protocol_from_args

    batch = getattr(args, "batch", 1)
    if batch < 1:
        raise HwlatError(f"--batch {batch}: needs at least 1")
    _check_out(args)
    _warn_local_settings(args)
    options = space_options(args)
    space = get_space(args.space, **options)
    items = resolve_archs(space, args.archs, seed=args.seed, data_dir=args.public_data)
    if not args.keep_order:
        items = [items[i] for i in np.random.default_rng(args.seed).permutation(len(items))]
    protocol = protocol_from_args(args)
    tasks = [Task(space.key(it.arch), {"space": args.space, "options": options, "arch": it.arch, "record": it.record,
                                       "batch": batch}) for it in items]
    tasks = list({t.key: t for t in tasks}.values())
    out = Path(args.out)
    names = device_names(args)
    connected = connect(args.cluster)
    try:
        _check_runtime(names, args.runtime)
        names = select_devices(names or None, args.runtime)
        out.mkdir(parents=True, exist_ok=True)
        outs = {n: out / table_stem(n) for n in names}

        def opener(name, info):
            dev = Device.from_dict(info["device"])
            if batch != 1:
                dev = Device.make(dev.hardware, dev.runtime, dev.precision, dev.fingerprint, **dict(dev.settings), batch=batch)
            if args.hardware:
                dev = Device(args.hardware, dev.runtime, dev.precision, dev.settings, dev.fingerprint)
            meta = {"protocol": protocol.to_dict(), "runtime": info["ad"]["runtime"],
                    "runtime_settings": dict(info["ad"]["settings"]), "space_options": repr(space),
                    "archs_spec": args.archs, "seed": args.seed, "protocol_preset": args.protocol,
                    "cluster": {"device": name, "spec": info["spec"]}}
            return _arch_sink(outs[name], space.name, dev, meta, fresh=args.fresh), tasks

        result = run_cluster(names, opener, measure_arch, protocol, outs, device_timeout_s=args.device_timeout,
                             progress=not args.no_progress, unit="arch")
    finally:
        if connected:
            disconnect()
    _print_runs(result, "device column")
    result.raise_for_problems()
    return 0


def _print_runs(result, what: str) -> None:
    """One line per device of a cluster run: where its table is, what was measured, on which hosts."""
    for run in result.runs.values():
        hosts = ", ".join(sorted(run.hosts)) or "-"
        print(f"{run.name}: {run.out}: {run.status}, {run.measured} measured, {run.skipped} already there, "
              f"{run.failed} failed, {run.noisy} noisy, {run.retried} retried; {what} {run.device or '?'} on {hosts}")
