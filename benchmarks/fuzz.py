"""Fuzzing at scale: every loader (device table CSV and JSON, arch table, sweep file, predictor files,
ONNX model, measurement CSV), each entry of a device table's JSON given another kind of value (through
`hwlat predict`, `table validate` and `table show`), each JSON entry and array of an adapted predictor
damaged (through `hwlat predict --predictor`'s loading), and the CLI's argument parsing, with the fuzzers of
`tests/fuzzers.py` (hypothesis). The property for each input: a valid result, or the project's typed
error (one line and a non-zero exit from the CLI); never another exception, never a changed file.
Prints how many inputs each fuzzer tried, how many were accepted and refused, and by which errors.

    .venv/bin/python benchmarks/fuzz.py                 # 10,000 inputs per fuzzer
    .venv/bin/python benchmarks/fuzz.py --examples 500 --only "ONNX model"

A failure prints hypothesis's smallest failing input and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

try:
    from fuzzers import FUZZERS, Counter  # noqa: E402
except ModuleNotFoundError as exc:
    if exc.name != "hypothesis":
        raise
    raise SystemExit("fuzz.py: error: the fuzzers need hypothesis (in the test extra): "
                     ".venv/bin/pip install -e '.[test]' (or pip install hypothesis)") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000, help="inputs per fuzzer (default 10000)")
    ap.add_argument("--only", help="one fuzzer by name: " + ", ".join(FUZZERS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # loaders' warnings about the broken inputs are expected here
    names = [args.only] if args.only else list(FUZZERS)
    print(f"{'fuzzer':<20} {'tried':>7} {'accepted':>9} {'refused':>8} {'seconds':>8}  errors")
    failed = False
    for name in names:
        counter = Counter()
        t0 = time.perf_counter()
        try:
            FUZZERS[name](counter, args.examples)
            verdict = ", ".join(f"{k} {v}" for k, v in sorted(counter.errors.items(), key=lambda kv: -kv[1]))
        except Exception as exc:  # hypothesis re-raises the smallest failing example
            failed = True
            verdict = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"{name:<20} {counter.tried:>7} {counter.accepted:>9} {counter.refused:>8} "
              f"{time.perf_counter() - t0:>8.1f}  {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
