"""Emulated microcontroller: op configurations profiled per minute, and how well arithmetic (MACs)
ranks the board's counts, i.e. where a measured table is worth more than a MAC count.

It profiles a sweep (default: the `mcu` preset) on a fresh table with the board runtime (firmware
build and QEMU boot timed separately), then scores a MAC-count estimate against the counts: Spearman
and Kendall over all ops and per op family, the spread of instructions per MAC across families, and
the error of the best single-slope MAC model (count = a * MACs). With the committed TFLite Micro
host table it also ranks host TFLM latency against the board. Needs gcc-arm-none-eabi,
libnewlib-arm-none-eabi and qemu-system-arm.

    .venv/bin/python benchmarks/mcu.py                                  # mps2-an386 (Cortex-M4), mcu sweep
    .venv/bin/python benchmarks/mcu.py --board qemu:mps2-an500 --limit 60
    .venv/bin/python benchmarks/mcu.py --table hwlat/device_tables/tables/qemu_mps2_an386_board_int8_threads1
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.errors import HwlatError  # noqa: E402
from hwlat.device_tables.registry import load  # noqa: E402
from hwlat.device_tables.table import DeviceTable  # noqa: E402
from hwlat.predictors.metrics import kendall, spearman  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402
from hwlat.profilers.sweeps import load_sweep  # noqa: E402

TFLM_TABLE = ROOT / "hwlat" / "device_tables" / "tables" / "cpu_tflm_int8_threads1"


def profile(board: str, sweep: str, limit: int | None, out: Path) -> tuple[DeviceTable, dict]:
    from hwlat.profilers.board.runtime import BoardRuntime
    from hwlat.profilers.run import profile_ops

    specs = load_sweep(sweep)
    if limit:
        specs = specs[:limit]
    rt = BoardRuntime(board=board)
    t0 = time.perf_counter()
    rt.connect()  # firmware build (if stale) + QEMU boot + ID/DESCRIBE
    t1 = time.perf_counter()
    result = profile_ops(rt, specs, out, Protocol.preset("quick"), progress=True, sweep_name=sweep)
    t2 = time.perf_counter()
    rt.close()
    timing = {"configs": len(specs), "measured": result.measured, "failed": result.failed,
              "connect_s": t1 - t0, "sweep_s": t2 - t1}
    return result.table, timing


def family(op: str) -> str:
    return op.split("+")[0]


def score(table: DeviceTable) -> None:
    rows = [r for r in table.rows("ok") if "count" in r.extra]
    if not rows:
        raise HwlatError(f"table {table.device.name}: no row with a board's count; score a table made with "
                         "`hwlat profile ops --runtime board`")
    macs = np.array([r.spec.macs for r in rows], float)
    count = np.array([r.extra["count"] for r in rows], float)
    moved = np.array([r.spec.bytes_moved for r in rows], float)
    unit = rows[0].extra.get("unit", "count") if rows else "count"
    print(f"\n{table.device.name}: {len(rows)} measured rows ({unit})")
    print(f"  Spearman(MACs, {unit})        {spearman(macs, count):.3f}   Kendall {kendall(macs, count):.3f}")
    print(f"  Spearman(bytes moved, {unit}) {spearman(moved, count):.3f}")
    slope = float(np.exp(np.median(np.log(count / macs))))
    ape = np.abs(slope * macs - count) / count
    print(f"  single slope {slope:.1f} {unit}/MAC: median error {np.median(ape):.0%}, "
          f"within 10%: {np.mean(ape <= 0.10):.0%}, worst {ape.max():.0%}")
    print(f"  {'family':<10} {'n':>4} {'Spearman':>9} {unit + '/MAC (median, min..max)':>36}")
    for fam in sorted({family(r.spec.op) for r in rows}):
        idx = [i for i, r in enumerate(rows) if family(r.spec.op) == fam]
        ratio = count[idx] / macs[idx]
        rho = spearman(macs[idx], count[idx]) if len(idx) > 2 else float("nan")
        print(f"  {fam:<10} {len(idx):>4} {rho:>9.3f} {np.median(ratio):>20.1f} ({ratio.min():.1f}..{ratio.max():.1f})")
    if TFLM_TABLE.with_suffix(".json").exists():
        tflm = DeviceTable.load(TFLM_TABLE)
        pairs = [(tflm.latency_ms(r.spec), r.extra["count"]) for r in rows if tflm.latency_ms(r.spec)]
        if len(pairs) > 2:
            host, board = np.array(pairs, float).T
            print(f"  Spearman(TFLM host ms, {unit}) {spearman(host, board):.3f} over {len(pairs)} shared configs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", default="qemu:mps2-an386")
    ap.add_argument("--sweep", default="mcu")
    ap.add_argument("--limit", type=int, help="profile only the first N configurations")
    ap.add_argument("--table", help="score an existing board table (a shipped name or a path) instead of profiling")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.table:
        score(load(args.table, exact=True))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        table, t = profile(args.board, args.sweep, args.limit, Path(tmp) / "board")
        done = t["measured"] + t["failed"]
        print(f"\n{args.board}: {done} configurations in {t['sweep_s']:.1f} s "
              f"({t['measured']} measured, {t['failed']} refused) = {60 * done / t['sweep_s']:.0f} configurations/min; "
              f"firmware build + boot {t['connect_s']:.1f} s")
        score(table)
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
