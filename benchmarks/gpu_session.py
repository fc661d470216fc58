"""One time-boxed GPU measuring session: op tables and NB201 architecture tables on torch CUDA.

Run by ``benchmarks/gpu_session.sh`` on a lent GPU machine (or here with ``--device cpu --budget 60``
as a dry run of the same code). Phases, in order of value, each stopped at its own deadline (every
row is flushed as it is measured, so a stopped phase keeps what it measured and a rerun resumes):

1. ``archs``:      NB201 archs 900..1899 plus the 10 HELP reference archs (first), batch 1, 32 and 256
2. ``ops-fp32``:   the default op sweep (fp32 configurations, batch 1) on torch CUDA fp32
3. ``archs-run2``: the reference archs and every 5th of 900..1899 again, same batches (repeatability)
4. ``ops-fp16``:   the default op sweep again in fp16
5. ``ops-run2``:   the first configurations of the fp32 sweep again (repeatability)

Tables go under ``--out`` (``ops/``, ``ops_run2/``, ``arch/``, ``arch_run2/``) with ``session.json``
(fingerprint, phase timings and counts). ``benchmarks/gpu_report.py`` turns them into numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.device import Device  # noqa: E402
from hwlat.device_tables.errors import HwlatError  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402

HELP_REFERENCE_ARCHS = (11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462)
BATCHES = (1, 32, 256)
# Single ops: timed calls are tens of µs on a GPU; stop at 200 samples or 0.1 s.
OP_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.0, min_runs=20, max_runs=200, block_runs=10, target_rel_iqr=0.03,
                       max_time_s=0.1, remeasure=0)
# Whole architectures, lighter: a forward is ~1-4 ms on an H100, 1010 archs x 3 batches must fit ~4 minutes.
ARCH_PROTOCOL = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=10, max_runs=40, block_runs=10, target_rel_iqr=0.03,
                         max_time_s=0.06, remeasure=0)
# Planned seconds per phase (a phase that finishes early leaves its time to the later ones).
PHASE_BUDGETS = {"archs": 240.0, "ops-fp32": 80.0, "archs-run2": 50.0, "ops-fp16": 45.0, "ops-run2": 25.0}
OPS_RUN2_COUNT = 300  # NB201 and FBNet configurations come first in the default sweep

log = logging.getLogger("gpu_session")


class DeadlineReached(Exception):
    """A phase ran out of its time; what it measured is saved."""


@dataclass
class PhaseReport:
    name: str
    budget_s: float
    seconds: float = 0.0
    measured: int = 0
    failed: int = 0
    skipped: int = 0
    noisy: int = 0
    stopped_by_deadline: bool = False
    tables: list[str] = field(default_factory=list)
    note: str = ""


class Progress:
    """Prints one line every `every_s` seconds: count, rate and time left in the phase."""

    def __init__(self, phase: str, total: int, deadline: float, every_s: float = 15.0):
        self.phase, self.total, self.deadline, self.every_s = phase, total, deadline, every_s
        self.start = self.last = time.monotonic()
        self.done = 0

    def tick(self, note: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"  [{self.phase}] {self.done}/{self.total} in {now - self.start:.0f} s ({rate:.1f}/s), "
                  f"{max(self.deadline - now, 0):.0f} s left in the phase {note}", flush=True)


def time_boxed_runtime(device: str, precision: str) -> Any:
    """A `TorchRuntime` that stops the sweep at a deadline and reports progress (device() cached: one nvidia-smi)."""
    from hwlat.profilers.torch_eager.runtime import TorchRuntime

    class TimeBoxed(TorchRuntime):
        deadline = float("inf")
        progress: Progress | None = None
        _device_cache: Device | None = None

        def device(self) -> Device:
            if self._device_cache is None:
                self._device_cache = super().device()
            return self._device_cache

        def measure(self, spec, protocol=Protocol()):
            if time.monotonic() > self.deadline:
                raise DeadlineReached(spec.key)
            try:
                return super().measure(spec, protocol)
            finally:
                if self.progress is not None:
                    self.progress.tick(spec.op)

    return TimeBoxed(device=device, precision=precision)


def run_ops(phase: PhaseReport, rt: Any, specs: list, out: Path, deadline: float, protocol: Protocol) -> None:
    from hwlat.profilers.run import profile_ops

    rt.deadline = deadline
    rt.progress = Progress(phase.name, len(specs), deadline)
    path = out / rt.device().file_stem
    phase.tables.append(str(path))
    try:
        result = profile_ops(rt, specs, path, protocol, progress=False, sweep_name="default")
        phase.measured, phase.failed, phase.skipped, phase.noisy = (result.measured, result.failed, result.skipped,
                                                                    result.noisy)
    except DeadlineReached:
        phase.stopped_by_deadline = True
        from hwlat.device_tables.table import DeviceTable

        table = DeviceTable.load(path)
        phase.measured = sum(r.ok for r in table)
        phase.failed = sum(not r.ok for r in table)
        phase.note = "counts are the table's rows at the deadline"


def run_archs(phase: PhaseReport, rt: Any, items: list, out: Path, deadline: float, protocol: Protocol,
              batches: tuple[int, ...] = BATCHES) -> None:
    """Each arch built once and timed at every batch, into one arch table per batch (resumable)."""
    import numpy as np
    import torch

    from hwlat.device_tables.archtable import ArchTableWriter
    from hwlat.nas.spaces import get_space

    space = get_space("nb201")
    base = rt.device()
    writers = {}
    for b in batches:
        dev = base if b == 1 else Device.make(base.hardware, base.runtime, base.precision, base.fingerprint,
                                              **dict(base.settings), batch=b)
        path = out / f"nb201_{dev.file_stem}"
        meta = {"protocol": protocol.to_dict(), "runtime": "torch", "batch": b, "phase": phase.name,
                "runtime_settings": {"threads": rt.threads, **dict(dev.settings)}, "space_options": repr(space)}
        writers[b] = ArchTableWriter(path, space.arch_keys, dev, meta)
        phase.tables.append(str(path))
    progress = Progress(phase.name, len(items), deadline)
    rng = np.random.default_rng(0)
    try:
        for it in items:
            if time.monotonic() > deadline:
                phase.stopped_by_deadline = True
                break
            key = space.key(it.arch)
            todo = [b for b in batches if key not in writers[b]]
            phase.skipped += len(batches) - len(todo)
            if not todo:
                continue
            t0 = time.perf_counter()
            module = space.to_torch(it.arch)
            build_ms = (time.perf_counter() - t0) * 1e3
            for b in todo:
                x = torch.from_numpy(rng.standard_normal(space.input_shape(it.arch, b), dtype=np.float32))
                try:
                    m = rt.time_module(module, [x], protocol, what=f"{key} batch {b}")
                except (HwlatError, RuntimeError, ValueError) as exc:
                    writers[b].append(it.record, error=f"{type(exc).__name__}: {exc}")
                    phase.failed += 1
                    continue
                writers[b].append(it.record, m, build_ms=build_ms)
                phase.measured += 1
                phase.noisy += m.noisy
            progress.tick()
    finally:
        for w in writers.values():
            w.meta.setdefault("runs", []).append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                   "phase": phase.name, "protocol": protocol.to_dict()})
            w.write_meta()
            w.close()


def arch_items(indices: list[int]) -> list:
    from hwlat.nas.spaces import get_space
    from hwlat.nas.spaces.measure import ArchItem

    space = get_space("nb201")
    return [ArchItem(space.parse(i), space.key_record(space.parse(i))) for i in indices]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the tables and session.json")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    ap.add_argument("--budget", type=float, default=sum(PHASE_BUDGETS.values()),
                    help=f"seconds for all phases together (default {sum(PHASE_BUDGETS.values()):.0f})")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every phase budget (e.g. 0.1 for a dry run); --budget still caps the total")
    ap.add_argument("--archs", default="900:1900", help="NB201 index range a:b of the main arch set (default 900:1900)")
    ap.add_argument("--phases", default=",".join(PHASE_BUDGETS), help="phases to run, comma-separated")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)),
                    help=f"arch batch sizes (default {','.join(map(str, BATCHES))}; smaller for a CPU dry run)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    start = time.monotonic()
    hard_deadline = start + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [p.strip() for p in args.phases.split(",") if p.strip()]
    batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    unknown = set(wanted) - set(PHASE_BUDGETS)
    if unknown:
        ap.error(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(PHASE_BUDGETS)}")

    from hwlat.profilers.sweeps import load_sweep

    fp32 = time_boxed_runtime(args.device, "fp32")  # raises the one-line CUDA-absent error if there is no GPU
    device = fp32.device()
    print(f"device {device.name}", flush=True)
    print(json.dumps({"gpu": device.fingerprint.get("gpu", {}), "runtime": device.fingerprint.get("runtime", {})},
                     indent=1, default=str), flush=True)
    session: dict[str, Any] = {"device": device.to_dict(), "budget_s": args.budget, "scale": args.scale,
                               "batches": list(batches), "archs": args.archs,
                               "op_protocol": OP_PROTOCOL.to_dict(), "arch_protocol": ARCH_PROTOCOL.to_dict(),
                               "phases": []}

    lo, _, hi = args.archs.partition(":")
    main_idx = list(range(int(lo), int(hi)))
    refs = [i for i in HELP_REFERENCE_ARCHS if i not in set(main_idx)] + [i for i in HELP_REFERENCE_ARCHS
                                                                          if i in set(main_idx)]
    import numpy as np

    shuffled = [main_idx[i] for i in np.random.default_rng(0).permutation(len(main_idx))]
    run1 = arch_items(list(dict.fromkeys(refs + shuffled)))  # references first, then a shuffled order
    run2 = arch_items(list(dict.fromkeys(list(HELP_REFERENCE_ARCHS) + main_idx[::5])))
    specs = [s for s in load_sweep("default") if s.dtype == "float32"]

    def phase(name: str, work: Callable[[PhaseReport, float], None]) -> None:
        if name not in wanted:
            return
        now = time.monotonic()
        deadline = min(now + PHASE_BUDGETS[name] * args.scale, hard_deadline)
        report = PhaseReport(name, round(deadline - now, 1))
        print(f"== {name}: up to {deadline - now:.0f} s ({now - start:.0f} s into the session)", flush=True)
        if deadline - now < 2:
            report.note = "skipped: no time left"
        else:
            work(report, deadline)
        report.seconds = round(time.monotonic() - now, 1)
        print(f"== {name}: {report.measured} measured, {report.failed} failed, {report.skipped} already there, "
              f"{report.noisy} noisy in {report.seconds:.0f} s{' (stopped at its deadline)' if report.stopped_by_deadline else ''}",
              flush=True)
        session["phases"].append(asdict(report))
        (out / "session.json").write_text(json.dumps(session, indent=1, default=str) + "\n")

    phase("archs", lambda r, d: run_archs(r, fp32, run1, out / "arch", d, ARCH_PROTOCOL, batches))
    phase("ops-fp32", lambda r, d: run_ops(r, fp32, specs, out / "ops", d, OP_PROTOCOL))
    phase("archs-run2", lambda r, d: run_archs(r, fp32, run2, out / "arch_run2", d, ARCH_PROTOCOL, batches))
    phase("ops-fp16", lambda r, d: run_ops(r, time_boxed_runtime(args.device, "fp16"), specs, out / "ops", d,
                                           OP_PROTOCOL))
    phase("ops-run2", lambda r, d: run_ops(r, fp32, specs[:OPS_RUN2_COUNT], out / "ops_run2", d, OP_PROTOCOL))
    session["seconds"] = round(time.monotonic() - start, 1)
    (out / "session.json").write_text(json.dumps(session, indent=1, default=str) + "\n")
    print(f"session done in {session['seconds']:.0f} s; tables under {out}", flush=True)
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
