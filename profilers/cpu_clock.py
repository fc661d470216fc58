"""Thread CPU time as the clock: single-threaded latency that a busy, shared machine barely disturbs.

With one intra-op thread, ONNX Runtime and LiteRT compute on the calling thread, so the CPU time
that thread consumes (``CLOCK_THREAD_CPUTIME_ID``) is the kernel's latency without the time the
scheduler gave to other processes. Only valid for threads=1 runtimes; on a quiet machine it
agrees with the wall clock (the protocol's default) to within noise.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from device_tables.measurement import Measurement
from device_tables.ops import OpSpec
from profilers.base import Runtime
from profilers.protocol import Protocol, TimedCall, measure

CLOCKS = ("wall", "cpu")


def cpu_timer(call: Callable[[], Any]) -> TimedCall:
    """A `TimedCall` in milliseconds of the calling thread's CPU time."""
    clock = time.thread_time_ns

    def timed() -> float:
        t0 = clock()
        call()
        return (clock() - t0) * 1e-6

    return timed


def check_clock(runtime: Runtime, clock: str) -> None:
    if clock not in CLOCKS:
        raise ValueError(f"clock {clock!r}: choose from {', '.join(CLOCKS)}")
    if clock == "cpu" and runtime.threads != 1:
        raise ValueError("the cpu clock measures the calling thread only: use it with threads=1")


def measure_spec(runtime: Runtime, spec: OpSpec, protocol: Protocol = Protocol(), clock: str = "wall") -> tuple[Measurement, dict]:
    """`Runtime.measure` with a choice of clock (the runtime's own timed call, timed by thread CPU time)."""
    check_clock(runtime, clock)
    if clock == "wall":
        return runtime.measure(spec, protocol)
    prepared = runtime.prepare(spec)
    try:
        return measure(cpu_timer(prepared.timed), protocol), {**prepared.extra, "clock": "thread_cpu"}
    finally:
        prepared.close()
