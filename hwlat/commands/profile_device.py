"""`hwlat profile device`: a complete device table of a runtime on this machine, in one command."""

from __future__ import annotations

import argparse
import sys

from hwlat.cli import command_parser
from hwlat.commands.args import positive_float, positive_int


def register(targets) -> None:
    from hwlat.device_profile import DEFAULT_MINUTES, MAX_MINUTES
    from hwlat.nas.pool import target_kinds

    p = command_parser(
        targets, "device",
        "profile a runtime of this machine into a complete device table: fusion rules and the weights cache, "
        "op rows for the shipped spaces and classic CNNs, whole-network calibration, stored regressors, "
        "and a score on networks it was not calibrated on (resumes if interrupted)",
        "hwlat profile device --runtime onnxruntime --threads 1 --out tables/my_cpu",
    )
    from hwlat.commands.profile import add_fresh_option, add_protocol_options, add_runtime_argument, add_runtime_options

    add_runtime_argument(p)
    p.add_argument("--threads", type=positive_int, default=1, help="intra-op threads, part of the device's name (default 1)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="fp16/bf16 (torch); int8 (litert, tflm, board); the runtime's own by default: int8 for tflm and board, fp32 for the others")
    p.add_argument("--out", required=True, help="table path (NAME, NAME.csv or NAME.json); resumed if it exists")
    add_fresh_option(p)
    p.add_argument("--minutes", type=positive_float, default=DEFAULT_MINUTES,
                   help=f"time budget of this run in minutes (default {DEFAULT_MINUTES:g}; up to {MAX_MINUTES:g} "
                        "suffices on 2 cores); the op rows get what the other stages do not need")
    add_protocol_options(p)
    p.add_argument("--targets", default=None,
                   help="networks the rows are chosen for: search spaces, 'classic' and/or 'transformers', comma-separated "
                        f"(default {','.join(target_kinds())}; for --runtime board nb201,fbnet, whose kernels fit a "
                        "microcontroller; for litert at int8 the CNNs: the spaces of CNNs and classic); a finished table grows to targets it lacks, keeping its rows, networks and "
                        "targets")
    p.add_argument("--calibration-networks", type=positive_int, default=32,
                   help="whole networks measured to calibrate the table (default 32)")
    p.add_argument("--score-networks", type=positive_int, default=20,
                   help="whole networks measured to score the table, never calibrated on (default 20)")
    p.add_argument("--patterns", help="fusion patterns to probe, comma-separated (default: all 80 candidates, "
                                      "hwlat.profilers.fusion.candidate_patterns(): each conv head (conv2d, dwconv2d, "
                                      "pwconv2d) with bn, add and an activation in the orders runtimes fuse, e.g. "
                                      "conv2d+bn+add+relu; linear, bn and add with an activation; linear+add; "
                                      "add+layernorm)")
    p.add_argument("--remeasure", action="append", default=[], metavar="PATTERN",
                   help="measure the stored rows whose keys match this shell pattern again (repeatable; e.g. "
                        "'gelu|*|tanh=true', after a fix to the runtime's single-op models); the old values stay "
                        "in each row, and the regressors, calibration and score follow")
    p.add_argument("--recalibrate", action="store_true",
                   help="time the table's calibration and score networks again (twice, about 1-3 minutes on two cores) and fit "
                        "the calibration and score on those times alone: for a table whose machine now runs "
                        "faster or slower than when it was measured (a VM moved to other hardware, a slow spell). "
                        "Networks the runtime could not run then are tried again (and join if they run now). "
                        "The rows stay; the older network times stay in NAME.networks.csv. Interrupted, it "
                        "resumes when run again")
    p.add_argument("--from", dest="start_from", metavar="TABLE",
                   help="start --out as a copy of this table (a shipped name, which stands for the table of a CPU "
                        "like this one, or a path) and --recalibrate it: a shipped table fitted to this machine's "
                        "speed in a few minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_runtime_options(p)
    p.set_defaults(func=_profile_device)


def _profile_device(args: argparse.Namespace) -> int:
    from hwlat.cli import resume_command
    from hwlat.commands.profile import protocol_from_args, runtime_settings
    from hwlat.device_profile import profile_device
    from hwlat.profilers.runtimes import get_runtime

    runtime = get_runtime(args.runtime, **runtime_settings(args))
    targets = None if args.targets is None else [t.strip() for t in args.targets.split(",") if t.strip()]
    try:
        result = profile_device(runtime, args.out, minutes=args.minutes,
                                protocol=protocol_from_args(args, runtime.cpu_clock_ok), targets=targets,
                                calibration_networks=args.calibration_networks, score_networks=args.score_networks,
                                fusion_patterns=[x.strip() for x in args.patterns.split(",") if x.strip()]
                                if args.patterns else None, progress=not args.no_progress, fresh=args.fresh,
                                remeasure=args.remeasure, recalibrate=args.recalibrate, start_from=args.start_from)
    except KeyboardInterrupt:
        print(f"hwlat: interrupted; everything measured so far is stored in {args.out}: run {resume_command(args)} "
              "again to resume where it stopped", file=sys.stderr)
        return 130
    table = result.table
    print(f"{table.path}: {len(table.rows('ok'))} rows, {result.seconds / 60:.1f} min")
    if result.score:
        from hwlat.device_profile import score_line

        print(score_line(result.score))
    for stage, why in result.inapplicable.items():
        print(f"n/a: {stage}: {why}")
    if result.unfinished:
        for stage, why in result.unfinished.items():
            print(f"unfinished: {stage}: {why}")
        print(("the table is valid and predicts with what it has" if table.rows("ok") else
               "the table is valid but has no op rows yet, so it cannot predict")
              + f"; run {resume_command(args)} again (with more --minutes) to continue")
        return 3
    return 0
