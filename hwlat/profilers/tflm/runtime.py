"""`TFLMRuntime` (name ``tflm``): the TFLite Micro interpreter of the `tflite-micro` package, on the host.

It runs the single-op .tflite models of `hwlat.profilers.tflite.builder` (int8 full-integer, or fp32)
and records what a microcontroller deployment budgets for: latency of ``invoke`` on this host
(reference kernels, so a relative cost, not a board's time), the smallest tensor arena that works
(binary search over ``arena_size``) and the model's bytes (what goes to flash). Optional budgets
(``arena_kb``, ``flash_kb``) turn ops that would not fit a target into error rows naming the limit.

The interpreter reports failed allocations as RuntimeError, but crashes the process when the arena
cannot even hold its own bookkeeping, and for some arenas above it; the search therefore never probes
below the bookkeeping ("tail") bytes that a successful run reports through ``print_allocations``,
and tries the arenas in a forked child (`_Prober`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.base import Prepared, Runtime, captured_stderr
from hwlat.profilers.protocol import Protocol, measure, perf_timer

log = logging.getLogger(__name__)

ARENA_ALIGN = 16  # TFLM aligns arena allocations to 16 bytes
NETWORK_ARENA_BYTES = 64 << 20  # a whole network's arena when no arena_kb budget is given
_ALLOC_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def _interpreter(content: bytes, arena: int, inputs: Sequence[np.ndarray]):
    from tflite_micro import runtime

    ip = runtime.Interpreter.from_bytes(content, arena_size=int(arena))
    for i, x in enumerate(inputs):
        ip.set_input(x, i)
    return ip


def _works(content: bytes, arena: int, inputs: Sequence[np.ndarray]) -> bool:
    return _PROBER.probe(content, arena, inputs)[0]


class _Prober:
    """A forked child that tries arenas: some arenas too small crash the interpreter instead of failing
    (a 1x1 pointwise conv's, some bytes above the recorded total), which in this process ended the
    whole sweep, again at the same row on every rerun. A crash ends the child, and the next probe
    starts another; one child serves every probe (a fork per probe made a sweep 4x slower)."""

    def __init__(self) -> None:
        self.owner = 0  # the process the child serves: a forked copy of this one starts its own
        atexit.register(self.stop)

    def probe(self, content: bytes, arena: int, inputs: Sequence[np.ndarray]) -> tuple[bool, str]:
        """Whether the model runs in an arena of `arena` bytes, and what the interpreter said."""
        if self.owner != os.getpid():
            self._start()
        try:
            pickle.dump((content, arena, inputs), self.ask)
            self.ask.flush()
            return pickle.load(self.answer)
        except (EOFError, OSError):  # the child died: the arena crashed the interpreter
            return False, f"the interpreter crashed (exit status {self.stop()})"

    def stop(self) -> int | None:
        """End the child (it exits when its input closes) and reap it; its exit status."""
        if self.owner != os.getpid():
            return None
        self.owner = 0
        for f in (self.ask, self.answer):
            with contextlib.suppress(OSError):
                f.close()
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def _start(self) -> None:
        ask_r, ask_w = os.pipe()
        answer_r, answer_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _serve(ask_r, answer_w)
            finally:
                os._exit(0)
        os.close(ask_r)
        os.close(answer_w)
        self.pid, self.owner = pid, os.getpid()
        self.ask, self.answer = os.fdopen(ask_w, "wb"), os.fdopen(answer_r, "rb")


def _serve(ask_fd: int, answer_fd: int) -> None:
    """The prober child: (content, arena, inputs) in, (works, what the interpreter said) out, until
    the parent closes its end."""
    for fd in map(int, os.listdir("/proc/self/fd")):  # not a table's lock, which the parent releases
        if fd > 2 and fd not in (ask_fd, answer_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
    with tempfile.TemporaryFile() as said, os.fdopen(ask_fd, "rb") as ask, os.fdopen(answer_fd, "wb") as answer:
        os.dup2(said.fileno(), 2)  # the failed allocation's complaint is expected here
        while True:
            try:
                content, arena, inputs = pickle.load(ask)
            except EOFError:
                return
            said.seek(0)
            said.truncate()
            try:
                _interpreter(content, arena, inputs).invoke()
                ok = True
            except RuntimeError as exc:
                ok = False
                os.write(2, f"{exc}\n".encode())
            said.seek(0)
            pickle.dump((ok, said.read().decode(errors="replace")), answer)
            answer.flush()


_PROBER = _Prober()


@dataclass(frozen=True)
class ArenaSearch:
    """The smallest arena that runs a model, with what TFLM's recording allocator reported."""

    arena_bytes: int        # smallest arena_size for which allocation and invoke succeed
    recorded_total: int     # RecordingMicroAllocator's total at a generous arena (head + tail)
    recorded_head: int      # non-persistent (activation) bytes
    recorded_tail: int      # persistent bytes: tensors' structs, op data, quantisation data
    probes: int


def recorded_allocations(content: bytes, inputs: Sequence[np.ndarray], arena: int) -> dict[str, int]:
    """``print_allocations`` of a run at `arena` bytes, parsed: {'total', 'head', 'tail'}."""
    ip = _interpreter(content, arena, inputs)
    ip.invoke()
    with captured_stderr() as text:
        ip.print_allocations()
    return {k: int(v) for k, v in _ALLOC_LINE.findall(text[0])}


def smallest_arena(content: bytes, inputs: Sequence[np.ndarray], max_bytes: int = 64 << 20) -> ArenaSearch:
    """Binary search for the smallest working ``arena_size`` (exact to the byte)."""
    hi = max(64 << 10, 16 * len(content))
    probes = 0
    while True:
        probes += 1
        ok, said = _PROBER.probe(content, hi, inputs)
        if ok:
            break
        if hi >= max_bytes:
            why = "; ".join(line.strip() for line in said.splitlines() if line.strip())
            raise UnsupportedOpError(f"model of {len(content)} B does not run in TFLite Micro even with a {hi} B arena"
                                     + (f": {why}" if why else ""))
        hi = min(max_bytes, hi * 4)
    rec = recorded_allocations(content, inputs, hi)
    total, tail = rec.get("total", hi), rec.get("tail", 0)
    if not tail:
        log.warning("TFLM did not report its tail allocation; searching from %d B", ARENA_ALIGN * 64)
    # Never probe below the bookkeeping bytes: too small an arena for those crashes the interpreter.
    lo = max(tail, ARENA_ALIGN * 64) - 1
    hi = min(hi, total + 4 * ARENA_ALIGN)
    probes += 1
    if not _works(content, hi, inputs):  # the recorded total should work; fall back to the proven size
        hi = max(64 << 10, 16 * len(content))
    if lo >= hi:
        lo = hi - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        probes += 1
        if _works(content, mid, inputs):
            hi = mid
        else:
            lo = mid
    return ArenaSearch(hi, total, rec.get("head", 0), tail, probes)


class TFLMRuntime(Runtime):
    """TFLite Micro's reference interpreter on this host: invoke latency, arena and model bytes."""

    name = "tflm"
    packages = ("tflite-micro",)
    modules = ("tflite_micro",)
    network_dtypes = ("float32", "int8")

    def __init__(self, threads: int = 1, precision: str = "int8", arena_kb: float | None = None,
                 flash_kb: float | None = None, seed: int = 0, **settings: Any):
        if precision not in ("fp32", "int8"):
            raise RuntimeUnavailableError(f"tflm runs precision int8 or fp32, not {precision!r}")
        for key, kb in (("arena_kb", arena_kb), ("flash_kb", flash_kb)):
            if kb is not None and (not isinstance(kb, (int, float)) or isinstance(kb, bool) or not kb > 0):
                raise RuntimeUnavailableError(f"tflm setting {key}={kb!r}: give a budget in KB above 0, e.g. {key}=256")
        self.arena_kb, self.flash_kb, self.seed = arena_kb, flash_kb, seed
        super().__init__(threads=1, precision=precision, **settings)
        if threads != 1:
            log.warning("tflm: the interpreter runs on one thread; measuring threads=1, not %d", threads)

    def check_available(self) -> None:
        try:
            from tflite_micro import runtime  # noqa: F401
        except ImportError as exc:
            raise RuntimeUnavailableError("the tflm runtime needs the tflite-micro package (Linux x86-64): "
                                          "pip install tflite-micro") from exc

    def runtime_settings(self) -> dict[str, Any]:
        budgets = {}
        if self.arena_kb is not None:
            budgets["arena_kb"] = self.arena_kb
        if self.flash_kb is not None:
            budgets["flash_kb"] = self.flash_kb
        return budgets

    def versions(self) -> dict[str, Any]:
        import tflite_micro

        return {"tflite_micro": getattr(tflite_micro, "__version__", "unknown"), "interpreter": "host reference kernels",
                "arena_search": "binary search over arena_size, exact to the byte"}

    def prepare(self, spec: OpSpec) -> Prepared:
        from hwlat.profilers.tflite.builder import build_model

        model = build_model(spec, self.seed)
        search = smallest_arena(model.content, model.inputs)
        model_bytes = len(model.content)
        self._check_budgets(spec.key, model_bytes, search.arena_bytes)
        # Time with the arena rounded up to its alignment: the search's exact minimum is not a
        # deployment's size, and the kernels run the same either way.
        arena = -(-search.arena_bytes // ARENA_ALIGN) * ARENA_ALIGN
        ip = _interpreter(model.content, arena, model.inputs)
        ip.invoke()
        check = _check(ip.get_output(0), model.reference()[0], model.graph.is_int8)
        extra = {"arena_bytes": search.arena_bytes, "model_bytes": model_bytes, "arena_head_bytes": search.recorded_head,
                 "arena_tail_bytes": search.recorded_tail, "tflite_ops": model.op_names, "macs": int(spec.macs),
                 "check": check}
        return Prepared(perf_timer(ip.invoke), extra, close=lambda: None)

    def _check_budgets(self, what: str, model_bytes: int = 0, arena_bytes: int = 0) -> None:
        """`UnsupportedOpError` naming the limit when a model is over the ``flash_kb`` or its arena over
        the ``arena_kb`` budget."""
        if self.flash_kb is not None and model_bytes > self.flash_kb * 1024:
            raise UnsupportedOpError(f"{what}: model is {model_bytes} B, over the flash budget of "
                                     f"{int(self.flash_kb * 1024)} B (flash_kb={self.flash_kb:g})")
        if self.arena_kb is not None and arena_bytes > self.arena_kb * 1024:
            raise UnsupportedOpError(f"{what}: needs a {arena_bytes} B tensor arena, over the budget of "
                                     f"{int(self.arena_kb * 1024)} B (arena_kb={self.arena_kb:g})")

    def time_network(self, model: bytes, protocol: Protocol, input_shape: Sequence[int] | None = None) -> Measurement:
        """``invoke`` of the network lowered to `.tflite` as LiteRT's (`hwlat.profilers.litert.network`: the
        single-op models' lowerings, full-integer int8 at precision int8) in an arena of
        `NETWORK_ARENA_BYTES` (kernels run the same in any arena that fits them). Over the
        ``flash_kb`` budget, or needing more arena than ``arena_kb`` (TFLM's recorded total), the
        network is refused as an op would be."""
        from hwlat.device_tables.graph import Graph
        from hwlat.profilers.litert.network import network_model

        content, inputs = network_model(Graph.from_onnx(model, input_shape), int8=self.dtype() == "int8")
        self._check_budgets("network", len(content))
        said: list[str] = []
        try:
            if self.arena_kb is not None:
                self._check_budgets("network", arena_bytes=recorded_allocations(content, inputs, NETWORK_ARENA_BYTES)
                                    .get("total", 0))
            with captured_stderr() as said:  # what the interpreter complains of (an op it has no kernel for)
                ip = _interpreter(content, NETWORK_ARENA_BYTES, inputs)
                ip.invoke()
        except (RuntimeError, ValueError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = "; ".join([line.strip() for line in "".join(said).splitlines() if line.strip()] + [why])
            raise UnsupportedOpError(f"TFLite Micro cannot run the network: {why}") from exc
        return measure(perf_timer(ip.invoke), protocol)


def _check(got: np.ndarray, want: np.ndarray, int8: bool) -> str:
    """How the interpreter's output compares with the numpy reference (recorded, not enforced)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {got.shape} != reference {want.shape}"
    if int8:
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        return "equal to int8 reference" if not diff.any() else \
            f"{int((diff > 0).sum())} of {diff.size} values differ from the int8 reference (max {int(diff.max())})"
    ok = np.allclose(got, want, rtol=1e-4, atol=1e-4)
    return "close to float reference" if ok else f"differs from float reference (max {float(np.abs(got - want).max()):.3g})"
