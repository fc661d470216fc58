"""`BoardRuntime` (name ``board``): int8 op latency on a microcontroller over the board protocol.

``board="qemu:mps2-an386"`` builds the reference firmware (if needed) and boots it in QEMU
(``mps2-an385`` Cortex-M3, ``mps2-an386`` Cortex-M4, ``mps2-an500`` Cortex-M7); options follow
commas: ``qemu:mps2-an386,arena_kb=128``. ``board="serial:/dev/ttyACM0,baud=115200"`` talks to a
real board running firmware that speaks firmware/PROTOCOL.md.

Every op is lowered as the int8 .tflite model would run it (`hwlat.profilers.board.ops`); its int8
activations and weights are drawn by the board's seeded PRNG (``transfer=fill``, the default; the
model's own tensors with ``transfer=stream``) and the rest streamed, all CRC-checked; it runs W
warm-ups then N timed calls bracketed by the board's counter, and its output's CRC must equal the
numpy int8 reference's. Under QEMU counts are instructions (``-icount shift=0``), not cycles;
``median_ms`` is count / nominal clock either way.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np

from hwlat.device_tables.device import Device, host_fingerprint
from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.base import Option, Prepared, Runtime
from hwlat.profilers.board.ops import BoardOp, lower, seeded
from hwlat.profilers.board.protocol import (
    BoardClient, BoardCommandError, BoardError, BoardInfo, BoardLinkError, BoardProtocolError, BoardResetError,
    BoardTimeoutError, Link, SerialLink,
)
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BOARD = "qemu:mps2-an386"
QEMU_NOTE = ("QEMU -icount shift=0 counts guest instructions (1 instruction = 1 ns of virtual time), not cycles: "
             "no pipeline, cache, wait-state or bus timing is modelled; median_ms = instructions / clock_hz, an "
             "IPC-of-one estimate at the board's nominal clock")
# ERR codes that mean "this op cannot run here" (a table row), not "the session is broken".
OP_LIMIT_CODES = ("ARENA", "UNSUPPORTED", "RANGE")


# `--board` options that are numbers: (type, least, most). The emulated boards' RAM is 4 MB (mps2.ld),
# which holds the arena and the rest of the firmware's data.
NUMERIC_OPTIONS = {"arena_kb": (int, 16, 3584), "baud": (int, 300, 4_000_000), "timeout": (float, 0.1, 600.0)}
# The emulated firmware's build settings by default (`hwlat.profilers.board.qemu.build_firmware`); another
# value names another device, since it changes the numbers (opt, counter) or what fits (arena_kb).
BUILD_DEFAULTS = {"arena_kb": "256", "opt": "-O2", "counter": "qemu"}


def _firmware(info: BoardInfo) -> tuple:
    """What names the firmware a board runs (not what it measures at each boot, such as its counter's overhead)."""
    return (info.board, info.core, info.firmware, info.git, info.clock_hz, info.counter, info.unit, info.arena_bytes,
            info.kernels, info.compiler, info.cflags)


def over_arena(spec: OpSpec, need: int, board: str, arena: int) -> str:
    return (f"{spec.key}: needs {need} B of tensor arena; board {board} has {arena} B (firmware ARENA_KB); use "
            "smaller shapes or a bigger arena")


@dataclass(frozen=True)
class BoardTarget:
    """A parsed ``--board`` value: ``qemu:<machine>[,k=v...]`` or ``serial:<port>[,baud=N,...]``."""

    kind: str
    target: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "BoardTarget":
        kind, sep, rest = str(text).partition(":")
        if not sep or kind not in ("qemu", "serial") or not rest:
            raise RuntimeUnavailableError(f"--board {text!r}: expected qemu:<machine> (e.g. {DEFAULT_BOARD}) "
                                          "or serial:<port>[,baud=115200] (e.g. serial:/dev/ttyACM0)")
        target, *opts = rest.split(",")
        options = {}
        for opt in opts:
            k, eq, v = opt.partition("=")
            if not eq or not k:
                raise RuntimeUnavailableError(f"--board {text!r}: option {opt!r} is not key=value")
            options[k.strip()] = v.strip()
        allowed = {"qemu": {"arena_kb", "opt", "counter", "transfer"}, "serial": {"baud", "timeout", "transfer"}}[kind]
        unknown = set(options) - allowed
        if unknown:
            raise RuntimeUnavailableError(f"--board {text!r}: unknown option(s) {sorted(unknown)}; {kind} takes "
                                          f"{', '.join(sorted(allowed))}")
        for key, (kind_of, low, high) in NUMERIC_OPTIONS.items():
            if key in options:
                try:
                    value = kind_of(options[key])
                except ValueError:
                    value = None
                if value is None or not (low <= value <= high):
                    raise RuntimeUnavailableError(f"--board {text!r}: {key}={options[key]!r} must be a number from "
                                                  f"{low} to {high}")
        return cls(kind, target, options)

    def __str__(self) -> str:
        return ",".join([f"{self.kind}:{self.target}"] + [f"{k}={v}" for k, v in sorted(self.options.items())])


class BoardRuntime(Runtime):
    """A microcontroller board (emulated or real) behind the line protocol of firmware/PROTOCOL.md."""

    name = "board"
    default_targets = ("nb201", "fbnet")
    cli_options = (Option("--board", "board", "target qemu:mps2-an386 (default; also mps2-an385, mps2-an500) or "
                                              "serial:/dev/ttyACM0[,baud=115200] (firmware/PROTOCOL.md)"),)
    # A cluster device spec's bare words are the board target (``b1=board:qemu:mps2-an386``).
    positional_setting = "board"

    @classmethod
    def device_flags(cls, device: Device) -> list[str]:
        if not device.hardware.startswith("qemu-"):  # the device's name for qemu:<machine>
            return ["--board serial:PORT"]
        build = "".join(f",{k}={v}" for k, v in device.settings if k in BUILD_DEFAULTS)  # its firmware's, named
        return [f"--board qemu:{device.hardware[len('qemu-'):]}{build}"]

    @classmethod
    def cannot_run(cls, spec: OpSpec, device: Device) -> str | None:
        """A kernel `lower` refuses (an op the firmware's int8 lowering has no kernel for; the board's own
        kernel list is not read here), or one over the tensor arena of the board the table was measured on
        (its fingerprint's DESCRIBE), in the words profiling refuses it with."""
        info = device.fingerprint.get("runtime", {}).get("board_info") or {}
        arena = info.get("arena_bytes")
        if not arena:
            return None
        try:
            need = lower(spec.replace(dtype="int8")).arena_bytes
        except UnsupportedOpError as exc:
            return str(exc)
        return None if need <= arena else over_arena(spec, need, info.get("board", device.hardware), arena)

    def __init__(self, threads: int = 1, precision: str = "int8", board: str = DEFAULT_BOARD,
                 runs: int | None = None, warmup: int | None = None, retries: int = 2,
                 timeout_s: float = 5.0, seed: int = 0, verify: bool = True, transfer: str = "fill", **settings: Any):
        if precision != "int8":
            log.warning("board: the firmware runs int8 kernels only; measuring int8, not %s", precision)
        if threads != 1:
            log.warning("board: the firmware runs one kernel at a time on one core; measuring threads=1, not %d", threads)
        self.target = BoardTarget.parse(board)
        self.runs, self.warmup = runs, warmup
        self.retries, self.timeout_s, self.seed, self.verify = retries, timeout_s, seed, verify
        transfer = self.target.options.get("transfer", transfer)
        if transfer not in ("fill", "stream"):
            raise RuntimeUnavailableError(f"transfer={transfer!r}: choose fill (the board draws activations and "
                                          "weights from a seeded PRNG) or stream (the model's tensors over the line)")
        self.transfer = transfer
        self._client: BoardClient | None = None
        self._info: BoardInfo | None = None
        self._build = None
        self._loaded: str | None = None
        self._s_per_mac: float | None = None  # wall seconds per MAC of the last RUN, to size RUN timeouts
        self._finalizer: weakref.finalize | None = None
        super().__init__(threads=1, precision="int8", **settings)

    # ---- availability and connection ----------------------------------------------------------
    @property
    def emulated(self) -> bool:
        return self.target.kind == "qemu"

    def check_available(self) -> None:
        if self.emulated:
            from hwlat.profilers.board.qemu import MACHINES, missing_tools

            if self.target.target not in MACHINES:
                raise RuntimeUnavailableError(f"no emulated board {self.target.target!r}; known: {', '.join(MACHINES)}")
            missing = missing_tools()
            if missing:
                raise RuntimeUnavailableError("the emulated board needs: " + "; ".join(missing))
        else:
            try:
                import serial  # noqa: F401
            except ImportError as exc:
                raise RuntimeUnavailableError("the board runtime needs pyserial: pip install pyserial") from exc

    def _open_link(self) -> Link:
        if self.emulated:
            from hwlat.profilers.board.qemu import build_firmware, start_qemu

            if self._build is None:
                o = self.target.options
                self._build = build_firmware(self.target.target, counter=o.get("counter", "qemu"),
                                             arena_kb=int(o.get("arena_kb", 256)), opt=o.get("opt", "-O2"))
            return start_qemu(self._build)
        return SerialLink(self.target.target, int(self.target.options.get("baud", 115200)))

    def connect(self) -> BoardClient:
        """Open the link (booting QEMU if emulated), wait for the board, ID + DESCRIBE it."""
        if self._client is not None:
            return self._client
        link = self._open_link()
        client = BoardClient(link, float(self.target.options.get("timeout", self.timeout_s)))
        try:
            if client.wait_ready(10.0 if self.emulated else 0.5) is None:
                client.sync()
            info = client.identify()
        except BaseException:
            link.close()
            raise
        if self._info is not None and _firmware(info) != _firmware(self._info):  # reopened on another firmware
            link.close()
            was = self._info
            raise BoardError(f"{link.name} now runs another firmware ({info.board}, {info.git}, arena {info.arena_bytes} "
                             f"B, {info.cflags or info.firmware}) than the rows so far were measured on ({was.board}, "
                             f"{was.git}, arena {was.arena_bytes} B, {was.cflags or was.firmware}); flash that one "
                             "again to resume, or measure the new one into another --out")
        if not info.counter_ok:
            link.close()
            raise RuntimeUnavailableError(f"{link.name}: the board's counter ({info.counter}) does not run; on QEMU "
                                          "build with COUNTER=qemu, on silicon check the DWT (PROTOCOL.md)")
        self._client, self._info, self._loaded = client, info, None
        self._finalizer = weakref.finalize(self, link.close)
        log.info("%s: %s %s, %s at %d Hz, arena %d B", link.name, info.board, info.core, info.unit, info.clock_hz,
                 info.arena_bytes)
        return client

    @property
    def info(self) -> BoardInfo:
        self.connect()
        assert self._info is not None
        return self._info

    def close(self) -> None:
        """Shut the link (and QEMU) down; the next call reconnects."""
        if self._client is not None:
            self._client.link.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._client, self._loaded, self._finalizer = None, None, None

    def _recover(self, reason: Exception, key: str = "") -> None:
        """After silence or garbage: resync, or reboot the emulator; the board's op state is gone. A real
        board that does not answer the resync either is a `BoardError` naming the op (`key`), what went
        unanswered, and what to do."""
        self._loaded = None
        client = self._client
        if client is None:
            return
        if self.emulated and not client.link.alive():
            log.warning("%s exited (%s); restarting it", client.link.name, reason)
            self.close()
            self.connect()
            return
        try:
            client.sync()
        except BoardError as exc:
            if not self.emulated:
                self.close()  # the next call opens the port again
                raise BoardError(f"{key + ': ' if key else ''}the board stopped answering: {reason}, nor to a resync; "
                                 "check that it is powered and connected, reset it, and run the same command again: "
                                 "the rows measured before are kept") from exc
            log.warning("%s does not answer (%s); restarting the emulator", client.link.name, reason)
            self.close()
            self.connect()

    # ---- device -------------------------------------------------------------------------------------
    @property
    def hardware(self) -> str:  # type: ignore[override]
        return f"qemu-{self.target.target}" if self.emulated else self.info.board

    def versions(self) -> dict[str, Any]:
        info = self.info
        facts: dict[str, Any] = {"board": str(self.target), "board_info": info.to_dict(), "transfer": self.transfer,
                                 "count_unit": info.unit, "runs": self._runs(Protocol()), "warmup": self._warmup(Protocol())}
        if self.emulated:
            from hwlat.profilers.board.qemu import qemu_version

            facts.update({"qemu": qemu_version(), "qemu_machine": self.target.target, "icount_shift": 0,
                          "firmware_build": self._build.to_dict() if self._build else {}, "note": QEMU_NOTE})
        return facts

    def runtime_settings(self) -> dict[str, Any]:
        """The emulated firmware's build settings that differ from its defaults (`BUILD_DEFAULTS`): a
        table resumed with other ones is refused, as another device."""
        if not self.emulated:
            return {}
        o = self.target.options
        return {k: o[k] for k, default in BUILD_DEFAULTS.items() if k in o and str(o[k]) != default}

    def device(self) -> Device:
        return Device.make(self.hardware, self.name, "int8", fingerprint=host_fingerprint(runtime=self.versions()),
                           threads=1, **self.runtime_settings())

    def _runs(self, protocol: Protocol) -> int:
        if self.runs is not None:
            return int(self.runs)
        return 3 if self.emulated else protocol.min_runs  # QEMU counts are deterministic

    def _warmup(self, protocol: Protocol) -> int:
        if self.warmup is not None:
            return int(self.warmup)
        return 1 if self.emulated else protocol.warmup_runs

    # ---- one op -----------------------------------------------------------------------------------
    def lower(self, spec: OpSpec, transfer: str | None = None) -> BoardOp:
        """The firmware call for `spec`, checked against this board's kernels and arena."""
        bop = lower(spec, self.seed)
        if (transfer or self.transfer) == "fill":
            bop = seeded(bop)
        info = self.info
        if info.kernels and bop.kernel not in info.kernels:
            raise UnsupportedOpError(f"{spec.key}: board {info.board} has no {bop.kernel} kernel "
                                     f"(it runs {', '.join(info.kernels)})")
        if bop.arena_bytes > info.arena_bytes:
            raise UnsupportedOpError(over_arena(spec, bop.arena_bytes, info.board, info.arena_bytes))
        return bop

    def count_kernels(self, spec: OpSpec) -> int | None:
        """One: the firmware runs each op it accepts as one kernel call (a fused activation is a clamp,
        batch norm is folded); None for an op that does not lower to one of its kernels."""
        try:
            lower(spec.replace(dtype="int8"), self.seed)
        except UnsupportedOpError:
            return None
        return 1

    def _with_recovery(self, spec: OpSpec, action: Callable[[], T]) -> T:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                self.connect()
                return action()
            except BoardResetError as exc:
                # Bytes sent while it rebooted may be half-read: resync past their replies, reload.
                log.warning("%s (attempt %d): re-sending the op", exc, attempt + 1)
                last = exc
                self._recover(exc, spec.key)
            except (BoardTimeoutError, BoardProtocolError) as exc:
                log.warning("%s: %s (attempt %d); resynchronising", spec.key, exc, attempt + 1)
                last = exc
                self._recover(exc, spec.key)
            except BoardCommandError as exc:
                self._loaded = None
                if exc.code in ("FAULT", "NOOP"):  # it crashed and reboots, or lost its op: reload, retry
                    log.warning("%s: %s (attempt %d); reloading", spec.key, exc, attempt + 1)
                    last = exc
                    self._recover(exc, spec.key)
                    continue
                if exc.code in OP_LIMIT_CODES:
                    raise UnsupportedOpError(f"{spec.key}: board refused it: {exc.code} {exc.message}") from exc
                raise BoardError(f"{spec.key}: {exc}") from exc
            except BoardLinkError as exc:  # the emulator exited, the port went away
                self.close()  # the next call opens it again (boots a new emulator, reopens a replugged port)
                if not self.emulated:
                    raise BoardLinkError(f"{spec.key}: {exc} Plug it in again (or reset it) and run the same command "
                                         "again: the rows measured before are kept") from exc
                log.warning("%s: %s (attempt %d); restarting the emulator", spec.key, exc, attempt + 1)
                last = exc
        assert last is not None
        if isinstance(last, BoardCommandError):
            raise BoardError(f"{spec.key}: gave up after {self.retries + 1} attempts: {last}") from last
        raise type(last)(f"{spec.key}: gave up after {self.retries + 1} attempts: {last}") from last

    def _load(self, bop: BoardOp) -> None:
        client = self.connect()
        token = f"{bop.spec.key}|{'fill' if bop.fills else 'stream'}"
        if self._loaded == token:
            return
        self._loaded = None
        reply = client.request(bop.op_line)
        board_sizes = dict(t.split(":") for t in reply.fields.get("tensors", "").split(",") if ":" in t)
        want = {k: str(v) for k, v in bop.sizes.items()}
        if board_sizes != want:
            raise BoardProtocolError(f"board allocated {board_sizes} for {bop.op_line!r}; host expects {want}")
        for name in bop.tensors:
            if name in bop.fills:
                client.fill(name, *bop.fills[name], expected=bop.data(name))
            else:
                client.upload(name, bop.data(name), self.info.chunk)
        self._loaded = token

    def _run_timeout(self, bop: BoardOp, calls: int) -> float:
        """Seconds to wait for the next RUN line: generous before anything is known, then 10x the
        time the last op's speed predicts for `calls` kernel calls."""
        if self._s_per_mac is None:
            return max(60.0, self.timeout_s)
        return max(self.timeout_s, 10.0 * self._s_per_mac * max(1, bop.spec.macs) * calls + 2.0)

    def run(self, bop: BoardOp, n: int, warmup: int) -> list[int]:
        """Load (if needed) and RUN; the counts, with the output checked against the reference."""
        def action() -> list[int]:
            self._load(bop)
            t0 = time.monotonic()
            samples, crc = self._client.run(n, warmup, self._run_timeout(bop, warmup + 1))
            wall = time.monotonic() - t0
            if wall > 0.05:
                self._s_per_mac = wall / ((n + warmup) * max(1, bop.spec.macs))
            if self.verify and crc != bop.expected_crc:
                self._report_mismatch(bop)
            return samples

        return self._with_recovery(bop.spec, action)

    def read_output(self, bop: BoardOp) -> np.ndarray:
        """The board's output tensor of the loaded op (int8, shaped like the reference's)."""
        data = self._client.read_tensor("y", int(bop.expected.size), self.info.chunk)
        return np.frombuffer(data, np.int8).reshape(bop.expected.shape)

    def _report_mismatch(self, bop: BoardOp) -> None:
        got = self.read_output(bop)
        diff = np.flatnonzero(got.ravel() != bop.expected.ravel())
        first = int(diff[0]) if diff.size else -1
        raise BoardError(
            f"{bop.spec.key}: the board's {bop.kernel} output differs from the int8 reference in {diff.size} of "
            f"{got.size} values (first at flat index {first}: board {got.ravel()[first]}, reference "
            f"{bop.expected.ravel()[first]}); the firmware kernel does not follow TFLite semantics")

    def measure(self, spec: OpSpec, protocol: Protocol = Protocol()) -> tuple[Measurement, dict[str, Any]]:
        bop = self.lower(spec)
        info = self.info
        n, warmup = self._runs(protocol), self._warmup(protocol)
        counts = self.run(bop, n, warmup)
        if not self.emulated:  # real silicon: more blocks until steady (the protocol's autorange)
            start = time.monotonic()
            while len(counts) < protocol.max_runs and time.monotonic() - start < protocol.max_time_s:
                q25, q50, q75 = np.percentile(counts, [25, 50, 75])
                if q50 <= 0 or (q75 - q25) / q50 <= protocol.target_rel_iqr:
                    break
                counts += self.run(bop, protocol.block_runs, 0)
        median = float(np.median(counts))
        if median <= 0:
            raise UnsupportedOpError(f"{spec.key}: counted {median:g} {info.unit}, below the board's counter "
                                     f"resolution ({info.resolution} {info.unit})")
        ms = [c / info.clock_hz * 1e3 for c in counts]
        m = Measurement.from_samples(ms, protocol.noise_threshold)
        extra = {"count": int(round(median)), "unit": info.unit, "clock_hz": info.clock_hz, "kernel": bop.kernel,
                 "tflite_ops": bop.tflite_ops, "arena_bytes": bop.arena_bytes, "flash_bytes": bop.flash_bytes,
                 "macs": int(spec.macs), "runs": len(counts), "warmup": warmup,
                 "data": "board PRNG (FILL)" if bop.fills else "model tensors",
                 "check": "crc32 = int8 reference" if self.verify else "off"}
        return m, extra

    def prepare(self, spec: OpSpec) -> Prepared:
        """A timed call doing one board RUN (the generic path; `measure` batches runs instead)."""
        bop = self.lower(spec)
        clock = self.info.clock_hz

        def timed() -> float:
            return self.run(bop, 1, 0)[0] / clock * 1e3

        return Prepared(timed, {"kernel": bop.kernel, "arena_bytes": bop.arena_bytes, "flash_bytes": bop.flash_bytes})
