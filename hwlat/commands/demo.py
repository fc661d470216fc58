"""`hwlat demo`: the main job end to end on this machine (README's first command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwlat.cli import command_parser


def register(sub) -> None:
    p = command_parser(sub, "demo", "profile this CPU on onnxruntime with a small sweep and print the table",
                       "hwlat demo --out results/demo")
    p.add_argument("--out", default="results/demo", help="folder for the demo's tables (default results/demo)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from hwlat.commands.table import print_table
    from profilers.protocol import Protocol
    from profilers.run import profile_ops
    from profilers.runtimes import get_runtime
    from profilers.sweeps import load_sweep

    out = Path(args.out)
    runtime = get_runtime("onnxruntime", threads=args.threads)
    result = profile_ops(runtime, load_sweep("quick"), out / "cpu_onnxruntime", Protocol.preset("default"), sweep_name="quick")
    print(f"\n{result.table.device.name}: {len(result.table)} op configurations in {result.table.path}.csv\n")
    print_table(result.table, limit=0)
    return 0
