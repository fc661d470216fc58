"""The one measurement protocol every runtime follows (DESIGN.md, "Measuring well").

Warm-up by count and by time (not counted), then timed runs in blocks until the spread
(IQR/median) is below a target, or the median is known well enough (its estimated standard error
below a target), or a time cap is hit, like `torch.utils.benchmark`'s adaptive autorange. A
measurement still noisy after that is re-measured up to `remeasure` times and the steadiest attempt
is kept, flagged noisy if it still is. A sweep (`noisy_last`) measures a still noisy configuration
once more after all the others, when a slow spell of the machine has likely passed, and keeps the
faster attempt: other work only ever slows a measurement down.

The clock is the runtime's own (wall time, CUDA events, board cycles) unless the protocol asks
for ``clock="cpu"``: the calling thread's CPU time. With one intra-op thread, ONNX Runtime, LiteRT
and PyTorch compute on the calling thread, so its CPU time is the kernel's latency without the time
the scheduler gave to other processes: steady on a busy, shared machine, and equal to the wall
clock on a quiet one. Valid only for threads=1 CPU runtimes (`Runtime.measure` checks).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from hwlat.device_tables.measurement import NOISE_THRESHOLD, Measurement

# A timed call: runs the thing once and returns its elapsed time in milliseconds, measured with
# the runtime's own clock (perf_counter_ns on CPUs, CUDA events on GPUs, cycle counters on boards).
TimedCall = Callable[[], float]

# The standard error of a median of n samples is about 1.2533 sigma / sqrt(n) (normal samples), and
# sigma about IQR / 1.349: so about 0.93 IQR / sqrt(n).
MEDIAN_SE_PER_IQR = 1.2533 / 1.349

# "wall": the runtime's own clock; "cpu": the calling thread's CPU time (threads=1 CPU runtimes).
CLOCKS = ("wall", "cpu")
PRESETS = ("quick", "brief", "default", "thorough")


@dataclass(frozen=True)
class Protocol:
    """Settings of the measurement protocol; recorded in every table's metadata."""

    warmup_runs: int = 5
    warmup_s: float = 0.05
    min_runs: int = 20
    max_runs: int = 2000
    block_runs: int = 10
    target_rel_iqr: float = 0.03
    # Stop once the median's estimated standard error is this share of it (0: never). A timing whose
    # spread stays above target_rel_iqr (a shared machine's jitter) otherwise runs to the time cap;
    # measured here, the cap bought nothing: two measurements minutes apart differ more (median 9-10%)
    # than a capped and a stopped one taken together (1-3%), at 2.8-4.2x the time (torch and
    # onnxruntime rows, 80 each, on a Zen 4 VM; benchmarks/stopping_rule.py).
    target_rel_se: float = 0.01
    max_time_s: float = 1.0
    noise_threshold: float = NOISE_THRESHOLD
    remeasure: int = 2
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock {self.clock!r}: choose from {', '.join(CLOCKS)}")

    @classmethod
    def preset(cls, name: str) -> "Protocol":
        """``default``; ``brief`` for many whole models; ``quick`` for tests and smoke runs; ``thorough``."""
        presets = {
            "default": cls(),
            "brief": cls(warmup_runs=3, warmup_s=0.02, min_runs=15, max_runs=500, block_runs=5, max_time_s=0.25, remeasure=1),
            "quick": cls(warmup_runs=2, warmup_s=0.0, min_runs=5, max_runs=50, block_runs=5, max_time_s=0.1,
                         remeasure=0, target_rel_se=0.02),
            "thorough": cls(warmup_runs=10, warmup_s=0.2, min_runs=50, max_runs=5000, max_time_s=3.0,
                            remeasure=3, target_rel_se=0.003),
        }
        if name not in presets:
            raise ValueError(f"unknown protocol preset {name!r}; choose from {', '.join(presets)}")
        return presets[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset_of(cls, stored: Mapping[str, Any]) -> str | None:
        """The preset a table's stored protocol (`to_dict`) is, its clock aside; a setting it does not
        record (written by an older hwlat) is not a difference, as on resume. None: settings of no preset."""
        return next((name for name in PRESETS if stored and all(
            stored[k] == v for k, v in cls.preset(name).to_dict().items() if k != "clock" and k in stored)), None)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Protocol":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def perf_timer(call: Callable[[], Any], clock: Callable[[], int] = time.perf_counter_ns) -> TimedCall:
    """Wrap a call into a `TimedCall` using the monotonic high-resolution clock (or another ns clock)."""

    def timed() -> float:
        t0 = clock()
        call()
        return (clock() - t0) * 1e-6

    timed.__wrapped__ = call  # type: ignore[attr-defined]  # the untimed call (harness-overhead benchmark)
    return timed


def collect(timed: TimedCall, protocol: Protocol) -> list[float]:
    """Warm up, then time runs until steady or capped; the raw samples in ms."""
    deadline = time.perf_counter() + protocol.warmup_s
    done = 0
    while done < protocol.warmup_runs or time.perf_counter() < deadline:
        timed()
        done += 1
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < protocol.max_runs:
        for _ in range(min(protocol.block_runs, protocol.max_runs - len(samples))):
            samples.append(timed())
        if len(samples) < protocol.min_runs:
            continue
        q25, q50, q75 = np.percentile(samples, [25, 50, 75])
        if q50 <= 0:
            break
        spread = (q75 - q25) / q50
        median_se = MEDIAN_SE_PER_IQR * spread / len(samples) ** 0.5
        if spread <= protocol.target_rel_iqr or median_se <= protocol.target_rel_se:
            break
        if time.perf_counter() - start >= protocol.max_time_s:
            break
    return samples


def measure(timed: TimedCall, protocol: Protocol = Protocol()) -> Measurement:
    """Run the protocol on one timed call; re-measure while noisy, keep the steadiest attempt."""
    if protocol.clock == "cpu":
        timed = _minus(perf_timer(timed, time.thread_time_ns), cpu_clock_offset_ms())
    best: Measurement | None = None
    for _ in range(1 + max(0, protocol.remeasure)):
        m = Measurement.from_samples(collect(timed, protocol), protocol.noise_threshold)
        if best is None or m.rel_iqr < best.rel_iqr:
            best = m
        if not m.noisy:
            break
    assert best is not None
    return best


def _empty_call_ms(timer: TimedCall, n: int = 2000) -> float:
    return float(np.median([timer() for _ in range(n)]))


@functools.cache
def cpu_clock_offset_ms() -> float:
    """What the thread-CPU clock adds to a sample beyond the wall clock's own reads: reading
    CLOCK_THREAD_CPUTIME_ID is a system call (about 0.6 us here, against 0.1 us for the monotonic
    clock), so without this a 3 us op would read about 30% slow."""
    noop = perf_timer(lambda: None)
    return max(0.0, _empty_call_ms(perf_timer(noop, time.thread_time_ns)) - _empty_call_ms(noop))


def _minus(timed: TimedCall, offset_ms: float) -> TimedCall:
    return lambda: max(0.0, timed() - offset_ms)


def noisy_last(measure: Callable[[Any], tuple[Measurement, dict]], configs: Iterable[Any],
               unsupported: type[Exception] | tuple[type[Exception], ...],
               stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, Any]]:
    """Measure each config with `measure(config) -> (Measurement, extra)`, yielding ``(config,
    (measurement, extra))`` or ``(config, exception)`` for the `unsupported` ones. A noisy
    measurement is held back and the config measured again after all the others; the attempt with
    the lower median is yielded, its extra marked ``remeasured_later``. Once `stop()` is true no
    new config is measured, and the held-back ones are yielded as first measured."""
    later = []
    for config in configs:
        if stop is not None and stop():
            break
        try:
            m, extra = measure(config)
        except unsupported as exc:
            yield config, exc
            continue
        if m.noisy:
            later.append((config, m, extra))
            continue
        yield config, (m, extra)
    for config, m, extra in later:
        if stop is not None and stop():
            yield config, (m, extra)
            continue
        try:
            again, again_extra = measure(config)
        except unsupported:
            again = None
        if again is not None and again.median_ms < m.median_ms:
            m, extra = again, again_extra
        yield config, (m, {**extra, "remeasured_later": True})
