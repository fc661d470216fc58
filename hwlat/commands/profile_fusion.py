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
                                      "linear+act, bn+act, add+act); a table's other stored patterns are kept")
    p.add_argument("--out", required=True, help="device table to store the rules in (created if missing); an interrupted run "
                                              "resumes, a finished one measures its patterns again")
    add_fresh_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runtime_options(p)
    p.set_defaults(func=_fusion)


def _fusion(args: argparse.Namespace) -> int:
    from hwlat.device_tables.table import DeviceTable
    from hwlat.profilers.fusion import check_patterns, format_results, measure_into
    from hwlat.commands.profile import protocol_from_args, runtime_settings
    from hwlat.profilers.runtimes import get_runtime

    patterns = check_patterns(args.patterns.split(",")) if args.patterns is not None else None  # before the runtime loads
    runtime = get_runtime(args.runtime, **runtime_settings(args))
    protocol = protocol_from_args(args, runtime.cpu_clock_ok)
    runtime.check_protocol(protocol)  # before a table is made: a refused clock leaves no file behind
    # Opened (device, lock, settings) before anything is measured; each pattern is stored as it is measured.
    with DeviceTable.open(args.out, runtime.device(), runtime.table_meta(protocol), fresh=args.fresh) as table:
        run = measure_into(table, runtime, patterns, protocol, progress=not args.no_progress)
        rules = run.rules
        print(format_results(run.results, rules if run.evidence else None))
        kept = (f"; {run.kept} stored pattern(s) kept" + (f" ({run.resumed} measured by the interrupted run)" if run.resumed else "")
                if run.kept else "")
        print(f"{table.path}.json: {sum(r.fused for r in run.results)} of {len(run.results)} measured patterns fused{kept}; "
              f"{len(rules.fused)} of {len(rules.measured)} patterns fused on {runtime.device().name}; "
              f"single-op call overhead {rules.call_overhead_ms * 1e3:.1f} us")
    return 0
