"""`hwlat profile fusion`: detect which op patterns a runtime fuses, by measurement, into a table's metadata."""

from __future__ import annotations

import argparse

from hwlat.cli import command_parser
from hwlat.commands.args import positive_int


def register(targets) -> None:
    p = command_parser(
        targets, "fusion",
        "measure which op patterns a runtime fuses (fused kernel vs its parts) and store the rules in a device table",
        "hwlat profile fusion --runtime litert --threads 1 --out tables/litert_cpu",
    )
    from hwlat.commands.profile import add_fresh_option, add_protocol_options, add_runtime_argument, add_runtime_options

    add_runtime_argument(p)
    p.add_argument("--threads", type=positive_int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="fp16/bf16 (torch); int8 (litert, tflm, board); the runtime's own by default: int8 for tflm and board, fp32 for the others")
    add_protocol_options(p)
    p.add_argument("--patterns", help="comma-separated patterns (default: conv heads with bn/activation/residual tails, "
                                      "linear+act, bn+act, add+act)")
    p.add_argument("--out", required=True, help="device table to store the rules in (created, or resumed if it exists)")
    add_fresh_option(p)
    p.add_argument("--no-progress", action="store_true")
    add_runtime_options(p)
    p.set_defaults(func=_fusion)


def _fusion(args: argparse.Namespace) -> int:
    from device_tables.table import DeviceTable
    from profilers.fusion import detect_fusion, format_results, store_rules
    from hwlat.commands.profile import protocol_from_args, runtime_settings
    from profilers.runtimes import get_runtime

    runtime = get_runtime(args.runtime, **runtime_settings(args))
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()] if args.patterns else None
    rules, results = detect_fusion(runtime, patterns, protocol_from_args(args, runtime.cpu_clock_ok),
                                   progress=not args.no_progress)
    with DeviceTable.open(args.out, runtime.device(), fresh=args.fresh) as table:
        store_rules(table, rules, runtime)
        print(format_results(results, rules))
        print(f"{table.path}.json: {len(rules.fused)} of {len(results)} patterns fused on {runtime.device().name}; "
              f"single-op call overhead {rules.call_overhead_ms * 1e3:.1f} us")
    return 0
