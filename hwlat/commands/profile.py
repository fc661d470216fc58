"""`hwlat profile ops|model|archs`: measure op tables, break down a model, time whole architectures."""

from __future__ import annotations

import argparse
import importlib

from hwlat.cli import command_parser

# Modules adding more `profile` targets (each with `register(profile_subparsers)`).
TARGET_MODULES = ("hwlat.commands.profile_device", "hwlat.commands.profile_archs", "hwlat.commands.profile_fusion")


def register(sub) -> None:
    p = sub.add_parser("profile", help="measure latency on a runtime of this machine",
                       description="Measure op configurations, whole models or search-space architectures.")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)

    ops = command_parser(targets, "ops", "profile op configurations of a sweep into a device table (resumes by default)",
                         "hwlat profile ops --runtime onnxruntime --sweep quick --threads 1 --out tables/ort_cpu")
    ops.add_argument("--runtime", required=True, help="onnxruntime, torch, litert, tflm or board")
    ops.add_argument("--sweep", default="default", help="a sweep preset (quick, default, ...) or a YAML/JSON sweep file")
    ops.add_argument("--threads", type=int, default=1, help="intra-op threads, recorded in the device name (default 1)")
    ops.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"],
                     help="fp32; fp16 or bf16 (torch; op keys stay float32, the precision names the device); "
                          "int8 (litert, tflm, board)")
    add_protocol_options(ops)
    ops.add_argument("--opt-level", choices=["disable", "basic", "extended", "all"],
                     help="onnxruntime graph optimisation level (default all; another level names another device)")
    ops.add_argument("--xnnpack", choices=["on", "off"],
                     help="litert: XNNPACK delegate on (default) or off; off names another device")
    ops.add_argument("--board", help="board runtime target: qemu:mps2-an386 (default; also mps2-an385, mps2-an500) "
                                     "or serial:/dev/ttyACM0[,baud=115200] (firmware/PROTOCOL.md)")
    ops.add_argument("--out", required=True, help="table path (NAME, NAME.csv or NAME.json); resumed if it exists")
    ops.add_argument("--no-progress", action="store_true", help="no progress bar")
    from hwlat.commands.profile_adaptive import add_adaptive_options  # --adaptive --budget N (predictors.adaptive)

    add_adaptive_options(ops)
    from hwlat.commands.cluster_profile import add_cluster_options  # --cluster: run on a Ray cluster (docs/cluster.md)

    add_cluster_options(ops)
    add_gpu_options(ops)  # after the cluster options: --device is shared with them (docs/gpu.md)
    ops.set_defaults(func=_profile_ops)

    model = command_parser(targets, "model", "per-node latency breakdown and whole-model latency of an ONNX model",
                           "hwlat profile model resnet18.onnx --runtime onnxruntime --threads 1")
    model.add_argument("model", help="path to an .onnx file")
    model.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime"], help="runtime (onnxruntime)")
    model.add_argument("--threads", type=int, default=1)
    model.add_argument("--provider", default="cpu",
                       help="ONNX Runtime execution provider: cpu (default), cuda or cuda:N (needs onnxruntime-gpu; "
                            "docs/gpu.md)")
    model.add_argument("--opt-level", default="all", choices=["disable", "basic", "extended", "all"],
                       help="ONNX Runtime graph optimisation level (recorded)")
    model.add_argument("--input-shape", help="shape for a dynamic input, e.g. 1x3x224x224")
    add_protocol_options(model)
    model.add_argument("--runs", type=int, help="runs under ONNX Runtime's profiler (default: about 1 s worth, 10..200)")
    model.add_argument("--top", type=int, default=0, help="show only the N slowest nodes")
    model.add_argument("--json", help="also write the breakdown as JSON to this file")
    model.set_defaults(func=_profile_model)

    for name in TARGET_MODULES:
        try:
            importlib.import_module(name).register(targets)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


LOCAL_DEVICE_HELP = ("torch: cpu (default), cuda or cuda:N; a GPU names the device after itself, "
                     "e.g. nvidia-h100-80gb-hbm3/torch/fp16/threads=1")


def add_gpu_options(p: argparse.ArgumentParser) -> None:
    """--device (torch), --provider (onnxruntime) and --cudnn-benchmark: where and how a GPU is used (docs/gpu.md).

    ``--device`` may exist already (the cluster options name advertised devices with it); then it
    also takes the local torch device when --cluster is not given.
    """
    existing = p._option_string_actions.get("--device")
    if existing is None:
        p.add_argument("--device", help=LOCAL_DEVICE_HELP)
    else:
        existing.help = f"{existing.help}; without --cluster, the local device of {LOCAL_DEVICE_HELP}"
    p.add_argument("--provider", help="onnxruntime execution provider: cpu (default), cuda or cuda:N "
                                      "(needs the onnxruntime-gpu package instead of onnxruntime)")
    p.add_argument("--cudnn-benchmark", choices=["on", "off"],
                   help="torch on CUDA: cuDNN autotuning during warm-up (default on; off names another device)")


def add_protocol_options(p: argparse.ArgumentParser, default: str = "default") -> None:
    """--protocol (measurement effort) and --clock (auto: thread CPU time where it measures latency)."""
    from profilers.protocol import CLOCKS, PRESETS

    p.add_argument("--protocol", default=default, choices=PRESETS,
                   help=f"measurement effort (default {default}; brief suits many whole models)")
    p.add_argument("--clock", default="auto", choices=("auto",) + CLOCKS,
                   help="auto (default): the calling thread's CPU time for threads=1 CPU runtimes, which other work "
                        "on the machine barely disturbs, else the runtime's wall clock; or wall, or cpu. "
                        "Recorded in the table; a table's predictions are of the clock it was measured with")


def protocol_from_args(args: argparse.Namespace, cpu_clock_ok: bool = False):
    """The protocol of --protocol and --clock; ``auto`` is the thread-CPU clock where `cpu_clock_ok`
    (one intra-op thread on a CPU: the runtime computes on the calling thread), else the wall clock,
    as `profilers.base.Runtime.default_protocol`."""
    from dataclasses import replace

    from profilers.protocol import Protocol

    clock = getattr(args, "clock", "wall")
    if clock == "auto":
        clock = "cpu" if cpu_clock_ok else "wall"
    return replace(Protocol.preset(args.protocol), clock=clock)


def runtime_settings(args: argparse.Namespace) -> dict:
    settings = {"threads": args.threads, "precision": args.precision}
    if args.threads < 1:
        from device_tables.errors import HwlatError

        raise HwlatError(f"--threads {args.threads}: needs at least 1 thread")
    if getattr(args, "opt_level", None):
        if args.runtime != "onnxruntime":
            from device_tables.errors import HwlatError

            raise HwlatError(f"--opt-level is a setting of --runtime onnxruntime, not of {args.runtime}")
        settings["opt_level"] = args.opt_level
    if getattr(args, "xnnpack", None):
        if args.runtime != "litert":
            from device_tables.errors import HwlatError

            raise HwlatError(f"--xnnpack is a setting of --runtime litert, not of {args.runtime}")
        settings["xnnpack"] = args.xnnpack == "on"
    if getattr(args, "board", None):
        if args.runtime != "board":
            from device_tables.errors import HwlatError

            raise HwlatError(f"--board is a setting of --runtime board, not of {args.runtime}")
        settings["board"] = args.board
    settings.update(gpu_settings(args))
    return settings


def local_device(args: argparse.Namespace) -> str | None:
    """The --device of a local run (a list when the cluster options own the flag; None with --cluster)."""
    from device_tables.errors import HwlatError

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


def gpu_settings(args: argparse.Namespace) -> dict:
    """The runtime settings of --device, --provider and --cudnn-benchmark, each checked against --runtime."""
    from device_tables.errors import HwlatError

    settings: dict = {}
    device = local_device(args)
    provider = getattr(args, "provider", None)
    if device:
        if args.runtime != "torch":
            hint = "; for onnxruntime on a GPU use --provider cuda" if args.runtime == "onnxruntime" else ""
            raise HwlatError(f"--device is a setting of --runtime torch, not of {args.runtime}{hint}")
        settings["device"] = device
    if provider:
        if args.runtime != "onnxruntime":
            hint = "; for torch on a GPU use --device cuda" if args.runtime == "torch" else ""
            raise HwlatError(f"--provider is a setting of --runtime onnxruntime, not of {args.runtime}{hint}")
        settings["provider"] = provider
    if getattr(args, "cudnn_benchmark", None):
        if args.runtime != "torch" or not str(device or "cpu").startswith("cuda"):
            raise HwlatError("--cudnn-benchmark is a setting of --runtime torch --device cuda")
        settings["cudnn_benchmark"] = args.cudnn_benchmark == "on"
    return settings


def _profile_ops(args: argparse.Namespace) -> int:
    if getattr(args, "adaptive", False):
        from hwlat.commands.profile_adaptive import profile_ops_adaptive

        return profile_ops_adaptive(args, runtime_settings(args))
    if getattr(args, "cluster", None):
        from hwlat.commands.cluster_profile import profile_ops_on_cluster

        return profile_ops_on_cluster(args)
    from profilers.run import profile_ops
    from profilers.runtimes import get_runtime
    from profilers.sweeps import load_sweep

    specs = load_sweep(args.sweep)
    runtime = get_runtime(args.runtime, **runtime_settings(args))
    result = profile_ops(runtime, specs, args.out, protocol_from_args(args, runtime.cpu_clock_ok),
                         progress=not args.no_progress,
                         sweep_name=str(args.sweep))
    print(f"{result.table.path}: {result.measured} measured, {result.skipped} already there, "
          f"{result.failed} failed, {result.noisy} noisy; {len(result.table)} rows")
    from hwlat.commands.table import print_table

    print_table(result.table, limit=20)
    return 0


def _profile_model(args: argparse.Namespace) -> int:
    import json

    from device_tables.errors import HwlatError
    from profilers.ort.runtime import profile_model

    if args.threads < 1:
        raise HwlatError(f"--threads {args.threads}: needs at least 1 thread")
    try:
        shape = tuple(int(s) for s in args.input_shape.lower().split("x")) if args.input_shape else None
    except ValueError:
        raise HwlatError(f"--input-shape {args.input_shape!r}: expected dimensions joined by x, e.g. 1x3x224x224") from None
    protocol = protocol_from_args(args, cpu_clock_ok=args.threads == 1 and args.provider in (None, "cpu"))
    prof = profile_model(args.model, threads=args.threads, opt_level=args.opt_level, input_shape=shape,
                         protocol=protocol, profile_runs=args.runs, provider=args.provider)
    print(prof.format(top=args.top))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(prof.to_dict(), f, indent=2)
    return 0
