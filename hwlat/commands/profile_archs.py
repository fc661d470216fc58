"""`hwlat profile archs`: time whole search-space architectures into an arch table (resumable)."""

from __future__ import annotations

import argparse
import re

from hwlat.cli import command_parser
from hwlat.commands.args import positive_int, random_seed

# Passes of `hwlat profile archs` by default: what the benchmarks' truth is (the quieter of two).
DEFAULT_PASSES = 2


def register(targets) -> None:
    p = command_parser(
        targets, "archs",
        "build architectures of a search space and time them on a local runtime into an arch table (resumes)",
        "hwlat profile archs --space nb201 --runtime onnxruntime --threads 1 --archs 900:1900 --out nb201_my_cpu",
    )
    from hwlat.commands.profile import add_fresh_option, add_protocol_options, add_runtime_argument, add_runtime_options
    from hwlat.commands.space import add_space_argument, add_space_options

    add_space_argument(p)
    add_runtime_argument(p, default="onnxruntime", which=lambda cls: cls.times_archs())
    p.add_argument("--archs", required=True,
                   help="which architectures: 'a:b' (indices a..b-1; for fbnet/ofa rows of the public CSV), 'i,j,k', "
                        "'random:N', 'all', a file of keys, or several joined by '+'")
    p.add_argument("--out", required=True, help="arch table path (NAME or NAME.csv); resumed if it exists")
    add_fresh_option(p)
    p.add_argument("--threads", type=positive_int, default=1, help="intra-op threads, recorded in the device name (default 1)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="batch size of the input (default 1); another batch is part of the device column's name, "
                        "e.g. .../batch=32/threads=1 (the public GPU columns' _32)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="the runtime's own by default: int8 for tflm and board, fp32 for the others; fp16 or bf16 with --runtime torch (on a GPU: docs/tutorials/profile-gpu.md); "
                        "int8 with --runtime litert or tflm (full-integer networks, as an int8 table's calibration times them)")
    add_protocol_options(p)
    p.add_argument("--passes", type=positive_int, default=None,
                   help="measure every architecture once per pass, pass after pass, and keep its quietest (default 2; "
                        "1 with --cluster): a slow spell of a shared machine lasts minutes, so a second pass later "
                        "meets a quieter one. Each pass is kept in NAME.passes.csv")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of random:N and of the measuring order (default 0)")
    p.add_argument("--keep-order", action="store_true", help="measure in the given order (default: shuffled)")
    p.add_argument("--hardware", type=hardware_label,
                   help="hardware label of the device column (default: the runtime's, e.g. cpu)")
    add_space_options(p)
    p.add_argument("--public-data", help="folder of the public CSVs (for fbnet/ofa row numbers; default $HWLAT_LATENCY_DATA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from hwlat.commands.cluster_profile import add_cluster_options  # --cluster: run on a Ray cluster (docs/tutorials/fleet.md)

    add_cluster_options(p, unit="architectures")  # before the runtimes' options: they share --device
    add_runtime_options(p)
    p.set_defaults(func=_profile_archs)


def _profile_archs(args: argparse.Namespace) -> int:
    if getattr(args, "cluster", None):
        from hwlat.device_tables.errors import HwlatError
        from hwlat.commands.cluster_profile import profile_archs_on_cluster

        if args.passes and args.passes > 1:
            raise HwlatError("--cluster measures each architecture once (--passes 1); for a second pass, run the "
                             "command again with another --out")

        return profile_archs_on_cluster(args)
    from hwlat.commands.profile import protocol_from_args, runtime_settings
    from hwlat.commands.space import space_from_args
    from hwlat.nas.spaces.measure import profile_archs, resolve_archs, runtime_device
    from hwlat.profilers.runtimes import get_runtime

    space = space_from_args(args)
    runtime = get_runtime(args.runtime, **runtime_settings(args))
    items = resolve_archs(space, args.archs, seed=args.seed, data_dir=args.public_data)
    device = runtime_device(runtime, args.hardware, batch=args.batch)
    result = profile_archs(space, items, args.out, runtime, protocol=protocol_from_args(args, runtime.cpu_clock_ok),
                           device=device, progress=not args.no_progress,
                           order_seed=None if args.keep_order else args.seed,
                           meta={"archs_spec": args.archs, "seed": args.seed, "protocol_preset": args.protocol}, batch=args.batch,
                           fresh=args.fresh, passes=args.passes or DEFAULT_PASSES)
    print(f"{result.out}: {result.measured} measured, {result.skipped} already there, {result.failed} failed, "
          f"{result.noisy} noisy; device column {device.name!r}")
    if result.measured:
        import numpy as np

        med = np.asarray(result.medians)
        print(f"latency median {np.median(med):.3f} ms, range {med.min():.3f}..{med.max():.3f} ms; "
              f"{result.per_minute:.0f} archs/min ({result.build_seconds / max(result.measured, 1) * 1e3:.1f} ms building each)")
    elif result.failed and not result.skipped:
        from hwlat.device_tables.errors import HwlatError

        raise HwlatError(f"{result.out}: none of the {result.failed} architectures ran on {device.name} (the warnings "
                         f"above say why; each error is in {result.out}.stats.csv)")
    return 0


def hardware_label(text: str) -> str:
    """--hardware: one word of a device name (letters, digits, '.', '_', '-'); a '/' would add a level to it."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise argparse.ArgumentTypeError(f"{text!r}: one word of letters, digits, '.', '_' or '-' (it begins the "
                                         "device's name, whose parts '/' separates), e.g. rpi4")
    return text
