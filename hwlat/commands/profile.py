"""`hwlat profile ops|model|archs`: measure op tables, break down a model, time whole architectures."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Callable

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, positive_int

# Modules adding more `profile` targets (each with `register(profile_subparsers)`).
TARGET_MODULES = ("hwlat.commands.profile_device", "hwlat.commands.profile_archs", "hwlat.commands.profile_fusion")


def register(sub) -> None:
    p = sub.add_parser("profile", help="measure latency on a runtime of this machine",
                       description="Measure op configurations, whole models or search-space architectures.")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)

    ops = command_parser(targets, "ops", "profile op configurations of a sweep into a device table (resumes by default)",
                         "hwlat profile ops --runtime onnxruntime --sweep quick --threads 1 --out tables/ort_cpu")
    add_runtime_argument(ops)
    ops.add_argument("--sweep", help="a sweep preset (quick, default, ...) or a YAML/JSON sweep file (default: default)")
    ops.add_argument("--threads", type=positive_int, default=1, help="intra-op threads, recorded in the device name (default 1)")
    ops.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                     help="fp32; fp16 or bf16 (torch; op keys stay float32, the precision names the device); "
                          "int8 (litert, tflm, board); the runtime's own by default: int8 for tflm and board, fp32 for the others")
    add_protocol_options(ops)
    ops.add_argument("--out", required=True, help="table path (NAME, NAME.csv or NAME.json); resumed if it exists")
    add_fresh_option(ops)
    ops.add_argument("--no-progress", action="store_true", help="no progress bar")
    from hwlat.commands.profile_adaptive import add_adaptive_options  # --adaptive --budget N (hwlat.predictors.adaptive)

    add_adaptive_options(ops)
    from hwlat.commands.cluster_profile import add_cluster_options  # --cluster: run on a Ray cluster (docs/tutorials/fleet.md)

    add_cluster_options(ops)
    add_runtime_options(ops)  # after the cluster options: --device is shared with them (docs/tutorials/profile-gpu.md)
    ops.set_defaults(func=_profile_ops)

    model = command_parser(targets, "model", "whole-model latency of an ONNX model and, where the runtime profiles "
                                             "nodes (onnxruntime), its per-node breakdown",
                           "hwlat profile model resnet18.onnx --runtime onnxruntime --threads 1")
    model.add_argument("model", help="path to an .onnx file")
    add_runtime_argument(model, default="onnxruntime", which=lambda cls: cls.times_whole_models())
    model.add_argument("--threads", type=positive_int, default=1, help="intra-op threads (default 1)")
    model.add_argument("--input-shape", action="append", metavar="[NAME=]SHAPE",
                       help="shape of a dynamic input: 1x3x224x224 for a one-input model, or NAME=SHAPE repeated "
                            "for each input (--input-shape input_ids=1x128 --input-shape attention_mask=1x128)")
    add_protocol_options(model)
    model.add_argument("--runs", type=positive_int, help="runs under ONNX Runtime's profiler (default: about 1 s worth, 10..200)")
    model.add_argument("--top", type=nonnegative_int, default=0, help="show only the N slowest nodes (0: all)")
    model.add_argument("--json", help="also write the breakdown as JSON to this file")
    add_runtime_options(model)
    model.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                       help="fp32; fp16 or bf16 with --runtime torch; int8 with --runtime litert or tflm "
                            "(the full-integer model, what an int8 table predicts); the runtime's own by default: int8 for tflm and board, fp32 for the others")
    model.set_defaults(func=_profile_model)

    for name in TARGET_MODULES:
        try:
            importlib.import_module(name).register(targets)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def add_runtime_argument(p: argparse.ArgumentParser, default: str | None = None,
                         which: Callable[[type], bool] = lambda cls: True) -> None:
    """--runtime; its help lists the registered runtimes (built-in and plugins) that `which` accepts
    (an unknown name is one clear error from the registry, as in the Python API)."""
    from hwlat.profilers.runtimes import listed, runtimes

    names = [name for name, cls in runtimes().items() if which(cls)]
    p.add_argument("--runtime", required=default is None, default=default,
                   help=f"runtime: {listed(names)}" + (f" (default {default})" if default else ""))


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """The flags of every registered runtime's own settings (`Runtime.cli_options`: --opt-level,
    --xnnpack, --provider, --device, ...); `runtime_settings` checks them against --runtime.

    A flag the parser has already (``--device``, which the cluster options use to name advertised
    devices) also takes the runtime's setting when --cluster is not given.
    """
    from hwlat.profilers.runtimes import runtimes

    seen: set[str] = set()
    for cls in runtimes().values():
        for opt in cls.cli_options:
            if opt.flag in seen:
                continue
            seen.add(opt.flag)
            existing = p._option_string_actions.get(opt.flag)
            if existing is not None:
                existing.help = f"{existing.help}; without --cluster, {cls.name}: {opt.help}"
            else:
                opt.add_to(p, cls.name)


def add_protocol_options(p: argparse.ArgumentParser, default: str = "default") -> None:
    """--protocol (measurement effort) and --clock (auto: thread CPU time where it measures latency)."""
    from hwlat.profilers.protocol import CLOCKS, PRESETS

    p.add_argument("--protocol", default=default, choices=PRESETS,
                   help=f"measurement effort (default {default}; brief suits many whole models)")
    p.add_argument("--clock", default="auto", choices=("auto",) + CLOCKS,
                   help="auto (default): the calling thread's CPU time for threads=1 CPU runtimes, which other work "
                        "on the machine barely disturbs, else the runtime's wall clock; or wall, or cpu. "
                        "Recorded in the table; a table's predictions are of the clock it was measured with")


def add_fresh_option(p: argparse.ArgumentParser) -> None:
    """--fresh: start the --out table again instead of resuming it."""
    p.add_argument("--fresh", action="store_true",
                   help="start the --out table again instead of resuming it: its files are moved aside to "
                        "NAME.old-<time>.* (nothing is deleted). A table is resumed only with the settings it was "
                        "measured with (--protocol, --clock, runtime settings); with others, pass --fresh")


def protocol_from_args(args: argparse.Namespace, cpu_clock_ok: bool = False):
    """The protocol of --protocol and --clock; ``auto`` is the thread-CPU clock where `cpu_clock_ok`
    (one intra-op thread on a CPU: the runtime computes on the calling thread), else the wall clock,
    as `hwlat.profilers.base.Runtime.default_protocol`."""
    from dataclasses import replace

    from hwlat.profilers.protocol import Protocol

    clock = getattr(args, "clock", "wall")
    if clock == "auto":
        clock = "cpu" if cpu_clock_ok else "wall"
    return replace(Protocol.preset(args.protocol), clock=clock)


def runtime_settings(args: argparse.Namespace) -> dict:
    """The constructor settings of --runtime from --threads, --precision and the runtimes' own flags;
    a flag of another runtime is refused, naming whose it is."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.profilers.runtimes import runtime_class, runtimes

    settings = {"threads": args.threads}
    if args.precision is not None:  # else the runtime's own default (int8 on tflm and board)
        settings["precision"] = args.precision
    own = {opt.flag: opt for opt in runtime_class(args.runtime).cli_options}
    seen: set[str] = set()
    for cls in runtimes().values():
        for opt in cls.cli_options:
            value = local_device(args) if opt.dest == "device" else getattr(args, opt.dest, None)
            if value is None or opt.flag in seen:
                continue
            seen.add(opt.flag)
            if opt.flag not in own:
                flags = f"its own flags are {', '.join(own)}" if own else "it has no flags of its own"
                raise HwlatError(f"{opt.flag} is a setting of --runtime {cls.name}, not of {args.runtime} ({flags})")
            settings[own[opt.flag].setting] = own[opt.flag].value(value)
    return settings


def local_device(args: argparse.Namespace) -> str | None:
    """The --device of a local run (a list when the cluster options own the flag; None with --cluster)."""
    from hwlat.device_tables.errors import HwlatError

    value = getattr(args, "device", None)
    if getattr(args, "cluster", None) or not value:
        return None
    if isinstance(value, list):
        names = [n.strip() for v in value for n in v.split(",") if n.strip()]
        if len(names) > 1:
            raise HwlatError(f"--device {','.join(names)}: a local run measures on one device (cpu, cuda or cuda:N); "
                             "several devices need --cluster")
        return names[0] if names else None
    return str(value)


def _profile_ops(args: argparse.Namespace) -> int:
    from hwlat.device_tables.errors import HwlatError

    if getattr(args, "adaptive", False) and args.sweep:
        raise HwlatError("--sweep and --adaptive: give one (--adaptive chooses the rows from --targets itself)")
    if not getattr(args, "adaptive", False) and getattr(args, "budget", None):
        raise HwlatError("--budget counts the op measurements of --adaptive; a --sweep measures every configuration "
                         "it lists")
    from hwlat.commands.profile_adaptive import adaptive_only_given

    if not getattr(args, "adaptive", False) and (given := adaptive_only_given(args)):
        raise HwlatError(f"{', '.join(given)}: options of --adaptive, which a --sweep does not use; add --adaptive "
                         "--budget N, or drop them")
    if getattr(args, "adaptive", False) and getattr(args, "cluster", None):
        raise HwlatError("--adaptive runs on this machine only (each row it picks depends on the ones before); "
                         "drop --cluster, or profile a --sweep on the cluster")
    args.sweep = args.sweep or "default"
    if getattr(args, "adaptive", False):
        from hwlat.commands.profile_adaptive import profile_ops_adaptive

        return profile_ops_adaptive(args, runtime_settings(args))
    if getattr(args, "cluster", None):
        from hwlat.commands.cluster_profile import profile_ops_on_cluster

        return profile_ops_on_cluster(args)
    from hwlat.profilers.run import profile_ops
    from hwlat.profilers.runtimes import get_runtime
    from hwlat.profilers.sweeps import load_sweep

    specs = load_sweep(args.sweep)
    runtime = get_runtime(args.runtime, **runtime_settings(args))
    result = profile_ops(runtime, specs, args.out, protocol_from_args(args, runtime.cpu_clock_ok),
                         progress=not args.no_progress,
                         sweep_name=str(args.sweep), fresh=args.fresh)
    print(f"{result.table.path}: {result.measured} measured, {result.skipped} already there, "
          f"{result.failed} failed, {result.noisy} noisy; {len(result.table)} rows")
    from hwlat.commands.table import print_table

    print_table(result.table, limit=20, more=f"`hwlat table show {result.table.path} --limit 0` shows all")
    return 0


def _profile_model(args: argparse.Namespace) -> int:
    import json

    from hwlat.device_tables.graph import parse_input_shapes
    from hwlat.profilers.runtimes import get_runtime

    from hwlat.device_tables.files import atomic_write_text, make_output

    runtime = get_runtime(args.runtime, **runtime_settings(args))
    shape = parse_input_shapes(args.input_shape)
    if args.json:  # a path that cannot be written is said before the measurement, not after it
        make_output(Path(args.json))
    protocol = protocol_from_args(args, runtime.cpu_clock_ok)
    prof = runtime.profile_model(args.model, protocol=protocol, input_shape=shape, profile_runs=args.runs)
    print(prof.format(top=args.top))
    if args.json:  # with the setup that measured it, as a table records it: a number without it cannot be reused
        report = {**prof.to_dict(), "protocol": protocol.to_dict(), "fingerprint": runtime.device().fingerprint}
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0
