"""The measurement protocol: warm-up not counted, adaptive stop, re-measure when noisy, sweeps."""

import itertools
from dataclasses import replace

import pytest

from hwlat.device_tables.errors import SweepError
from hwlat.profilers.protocol import Protocol, collect, measure
from hwlat.profilers.sweeps import load_sweep


def _counter(values):
    it = itertools.cycle(values)
    calls = []

    def timed():
        calls.append(1)
        return next(it)

    return timed, calls


def test_warmup_is_not_counted_and_steady_runs_stop_at_min_runs():
    timed, calls = _counter([1.0])
    p = Protocol(warmup_runs=7, warmup_s=0.0, min_runs=20, block_runs=10, max_runs=1000)
    samples = collect(timed, p)
    assert len(samples) == 20
    assert len(calls) == 27


def test_spread_keeps_measuring_until_the_cap():
    timed, _ = _counter([1.0, 3.0])
    p = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=10, block_runs=10, max_runs=60, max_time_s=10.0)
    assert len(collect(timed, p)) == 60


def test_a_spread_that_stays_stops_once_the_median_is_known_well_enough():
    timed, _ = _counter([0.9, 1.0, 1.0, 1.1])  # IQR/median 5%: above the 3% target
    p = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=10, block_runs=10, max_runs=1000, max_time_s=10.0)
    n = len(collect(timed, p))
    assert 20 < n < 100  # the median's standard error, about 0.93 * 5% / sqrt(n), is 1% from n = 22
    assert len(collect(timed, replace(p, target_rel_se=0.0))) == 1000  # without that stop: the cap
    assert len(collect(timed, replace(p, target_rel_se=0.002))) > 4 * n


def test_noisy_measurement_is_remeasured_and_flagged():
    timed, calls = _counter([1.0, 3.0])
    p = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=10, block_runs=10, max_runs=10, remeasure=2)
    m = measure(timed, p)
    assert m.noisy and len(calls) == 30
    steady, calls = _counter([2.0])
    assert not measure(steady, p).noisy and len(calls) == 10


def test_a_noisy_configuration_is_measured_again_after_the_others_and_the_faster_attempt_kept():
    from hwlat.device_tables.measurement import Measurement
    from hwlat.profilers.protocol import noisy_last

    attempts = {"a": iter([[1.0, 1.0, 1.0]]), "b": iter([[2.0, 3.0, 4.0, 5.0], [1.5, 1.5, 1.6]]),
                "c": iter([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
    order = []

    def timed(config):
        order.append(config)
        if config == "bad":
            raise KeyError("cannot run")
        return Measurement.from_samples(next(attempts[config])), {"attempt": len(order)}

    out = dict(noisy_last(timed, ["b", "a", "bad", "c"], KeyError))
    assert order == ["b", "a", "bad", "c", "b", "c"]  # the noisy ones again, after all the others
    assert isinstance(out["bad"], KeyError) and out["a"][1] == {"attempt": 2}
    assert out["b"][0].median_ms == 1.5 and out["b"][1] == {"attempt": 5, "remeasured_later": True}
    assert out["c"][0].median_ms == 2.0 and out["c"][1] == {"attempt": 4, "remeasured_later": True}


def test_sweep_errors_name_file_entry_and_suggest(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("ops:\n  - {op: conv2d, c: 16, hw: 8, cout: 16, kernal: 3}\n")
    with pytest.raises(SweepError, match=r"s.yaml, ops entry 1: unknown field 'kernal'.*did you mean 'kernel'"):
        load_sweep(f)
    f.write_text("ops:\n  - {op: convv2d, c: 16}\n")
    with pytest.raises(SweepError, match="did you mean 'conv2d'"):
        load_sweep(f)
    with pytest.raises(SweepError, match="no such file and no such preset"):
        load_sweep(tmp_path / "missing.yaml")
    f.write_text("ops:\n  - {op: [conv2d+relu, conv2d+rleu], c: 8, hw: [4, 8], kernel: 3}\n")  # no cell of it is valid
    with pytest.raises(SweepError, match=r"ops entry 1: 'conv2d\+relu' makes no valid configuration: .*\['cout'\]"):
        load_sweep(f)
    f.write_text("ops:\n  - {op: conv2d, c: 8, hw: [2, 8], cout: 8, kernel: 5, padding: 0}\n")  # some cells are
    assert len(load_sweep(f)) == 1
    f.write_text("ops:\n  - {op: relu, c: 8, hw: 8}\n  - {op: relu, c: 8}\n")  # a field every cell lacks
    with pytest.raises(SweepError, match=r"s.yaml, ops entry 2: 'relu' needs 'hw'"):
        load_sweep(f)
    f.write_text("ops:\n  - {op: relu, c: 8, hw: 8}\n  - {op: relu, c: [], hw: 8}\n")  # vanished without a word
    with pytest.raises(SweepError, match=r"s.yaml, ops entry 2: c is an empty list; give at least one value"):
        load_sweep(f)


def test_quick_preset_expands_to_unique_valid_specs():
    specs = load_sweep("quick")
    assert len(specs) == len({s.key for s in specs}) > 20
    assert {s.dtype for s in specs} == {"float32", "int8"}


def test_cpu_clock_counts_only_this_threads_work():
    import time

    from hwlat.profilers.protocol import perf_timer

    p = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=3, block_runs=3, max_runs=3, remeasure=0)
    sleeper = perf_timer(lambda: time.sleep(0.01))
    assert measure(sleeper, p).median_ms >= 9.0
    from dataclasses import replace

    assert measure(sleeper, replace(p, clock="cpu")).median_ms < 2.0


def test_cpu_clock_is_refused_with_several_threads():
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.ops import OpSpec
    from hwlat.profilers.ort.runtime import OnnxRuntime

    with pytest.raises(HwlatError, match="threads=1"):
        OnnxRuntime(threads=2).measure(OpSpec.make("relu", (1, 4, 4, 4)), Protocol(clock="cpu"))
    with pytest.raises(ValueError, match="clock"):
        Protocol(clock="sundial")
