"""`Runtime`: a profiler backend that builds and times op configurations on one `Device`."""

from __future__ import annotations

import abc
import importlib.util
import inspect
import logging
import numbers
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

from hwlat.device_tables.device import Device, host_fingerprint, usable_cores
from hwlat.device_tables.errors import HwlatError, UnsupportedOpError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.protocol import Protocol, TimedCall, measure

if TYPE_CHECKING:
    from hwlat.nas.spaces.base import Space

log = logging.getLogger(__name__)
# (runtime, threads) whose oversubscription this process has warned of: `search --verify` makes a
# runtime per round, and said it once a round.
_OVERSUBSCRIPTION_SAID: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class WholeModel:
    """A model timed whole (`Runtime.profile_model` of a runtime without a per-node profile)."""

    model: str
    device: str
    clock: str
    latency: Measurement
    runtime: str
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # input name -> the shape it was timed at

    def format(self, top: int = 0) -> str:
        m = self.latency
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.input_shapes.items())
        return (f"{self.model}{f' ({shapes})' if shapes else ''}: {m.median_ms:.4f} ms median (10th percentile "
                f"{m.p10_ms:.4f} ms, {m.n} runs) on "
                f"{self.device}, {self.clock} clock; the {self.runtime} runtime gives no per-node breakdown, so the "
                "whole model only")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "clock": self.clock, "input_shapes": self.input_shapes,
                "latency": self.latency.to_dict()}


@dataclass(frozen=True)
class Option:
    """A setting of one runtime that every ``hwlat profile`` command offers as a flag.

    ``setting`` is the keyword of the runtime's constructor; ``values`` maps what the user types to
    the setting's value where they differ (``{"on": True, "off": False}``); a ``switch`` takes no
    value and sets True. Search spaces declare their options the same way (`hwlat.nas.spaces.base.Space`)."""

    flag: str
    setting: str
    help: str
    choices: tuple[str, ...] | None = None
    values: Mapping[str, Any] | None = None
    switch: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def value(self, text: Any) -> Any:
        return self.values[text] if self.values and text in self.values else text

    def text(self, value: Any) -> Any:
        """What the user types for the setting's `value` (`value`'s inverse)."""
        return next((k for k, v in (self.values or {}).items() if v == value), value)

    def add_to(self, parser: Any, owner: str) -> None:
        """Add the flag to an argparse parser; unset, it reads None (the owner's default applies)."""
        if self.switch:
            parser.add_argument(self.flag, action="store_const", const=True, help=f"{owner}: {self.help}")
        else:
            parser.add_argument(self.flag, choices=self.choices, help=f"{owner}: {self.help}")

    def given(self, args: Any) -> Any:
        """The setting's value from parsed arguments, None where the flag was not given."""
        text = getattr(args, self.dest, None)
        return None if text is None else self.value(text)


@dataclass
class Prepared:
    """A built, ready-to-time op: the timed call, runtime facts to store with the row, cleanup."""

    timed: TimedCall
    extra: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


class Runtime(abc.ABC):
    """One runtime on this host. Subclasses set `name`, build ops in `prepare`."""

    name: str = ""
    hardware: str = "cpu"
    # The installed distributions whose versions decide this runtime's numbers (compared with a
    # table's fingerprint before it predicts for this machine).
    packages: tuple[str, ...] = ()
    # The top-level modules it runs on, one of which will do: with none installed, the lists of runtimes
    # (`--runtime` help) say so.
    modules: ClassVar[tuple[str, ...]] = ()
    # The flags of this runtime's own settings (``--opt-level``, ``--xnnpack``, ...).
    cli_options: ClassVar[tuple[Option, ...]] = ()
    # Whether its memory planner reuses a freed activation buffer only for a tensor of the same shape
    # (ONNX Runtime's allocation planner): a network then spreads its activations over more memory
    # than it holds at once, and the calibration counts that excess against the cache.
    same_shape_planner: ClassVar[bool] = False
    # The setting a cluster device spec's bare words give (``b1=board:qemu:mps2-an386``), if any.
    positional_setting: ClassVar[str | None] = None
    # The dtypes of whole networks `time_network` runs (a network of another precision is refused).
    network_dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    # The targets `hwlat profile device` chooses rows for by default (None: every search space and the
    # classic networks); a microcontroller's arena holds the 32x32 spaces' kernels, not ImageNet ones.
    default_targets: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def default_targets_at(cls, precision: str) -> tuple[str, ...]:
        """The targets `hwlat profile device` chooses rows for by default at `precision`: `default_targets`,
        else every kind (a runtime that cannot run some targets at one precision says so here)."""
        from hwlat.nas.pool import target_kinds

        return cls.default_targets or target_kinds()

    @classmethod
    def cannot_run(cls, spec: OpSpec, device: Device) -> str | None:
        """Why `device` (a table's, measured with this runtime) cannot run `spec`, known without running
        it (a board's tensor arena); None where it may run. A prediction leaves such a kernel out, named,
        instead of regressing it from kernels that ran."""
        return None

    @classmethod
    def device_flags(cls, device: Device) -> list[str]:
        """The flags of `hwlat profile` besides --runtime, --precision and --threads that measure
        `device` with this runtime again: where it runs (a GPU, a board; subclasses add it) and the
        settings of `cli_options` that name it (``--opt-level basic``, ``--xnnpack off``)."""
        settings, defaults = dict(device.settings), inspect.signature(cls).parameters
        flags = []
        for option in cls.cli_options:
            value = settings.get(option.setting, None)
            default = getattr(defaults.get(option.setting), "default", None)
            if value is not None and value != default:
                flags.append(f"{option.flag} {option.text(value)}")
        return flags

    def __init__(self, threads: int = 1, precision: str = "fp32", **settings: Any):
        if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
            raise HwlatError(f"threads={threads!r} must be a whole number of 1 or more")
        self.threads = int(threads)
        self.precision = precision
        self.settings = settings
        self.check_available()
        cores = usable_cores()
        if self.threads > cores and (self.name, self.threads) not in _OVERSUBSCRIPTION_SAID:
            _OVERSUBSCRIPTION_SAID.add((self.name, self.threads))
            log.warning("%d threads on %d usable core%s: timings will include oversubscription", self.threads, cores,
                        "" if cores == 1 else "s")

    @abc.abstractmethod
    def check_available(self) -> None:
        """Raise `RuntimeUnavailableError` naming the package to install when it is missing."""

    @abc.abstractmethod
    def prepare(self, spec: OpSpec) -> Prepared:
        """Build the op (model, weights, inputs allocated once); raise `UnsupportedOpError` if impossible."""

    def runtime_settings(self) -> dict[str, Any]:
        """Settings that change the numbers and so name the device (besides threads)."""
        return {}

    def table_meta(self, protocol: Protocol) -> dict[str, Any]:
        """The measuring settings a device table this runtime adds rows to is opened with (`DeviceTable.open`
        refuses to resume a table measured with others)."""
        return {"protocol": protocol.to_dict(), "runtime_settings": {"threads": self.threads, **self.runtime_settings()}}

    def versions(self) -> dict[str, Any]:
        """Runtime facts for the fingerprint beyond installed package versions."""
        return {}

    def device(self) -> Device:
        return Device.make(
            self.hardware, self.name, self.precision,
            fingerprint=host_fingerprint(runtime=self.versions()),
            threads=self.threads, **self.runtime_settings(),
        )

    def dtype(self) -> str:
        return "int8" if self.precision == "int8" else "float32"

    def __repr__(self) -> str:
        settings = {"threads": self.threads, "precision": self.precision, **self.runtime_settings()}
        return f"{type(self).__name__}({self.name}, {', '.join(f'{k}={v!r}' for k, v in settings.items())})"

    @property
    def cpu_clock_ok(self) -> bool:
        """Whether the calling thread's CPU time is this runtime's latency: one intra-op thread on a CPU."""
        return self.threads == 1 and self.hardware == "cpu"

    def default_protocol(self, preset: str = "default") -> Protocol:
        """A protocol preset with the clock `--clock auto` gives this runtime: the thread's CPU time
        where it is the latency (`cpu_clock_ok`), else the runtime's own clock."""
        from dataclasses import replace

        return replace(Protocol.preset(preset), clock="cpu" if self.cpu_clock_ok else "wall")

    def check_protocol(self, protocol: Protocol) -> None:
        """Refuse the thread-CPU clock where it does not measure latency (several threads, GPUs, boards)."""
        if protocol.clock == "cpu" and not self.cpu_clock_ok:
            raise HwlatError(f"--clock cpu times the calling thread only: use it with threads=1 on a CPU runtime "
                             f"(this is {self.name}, threads={self.threads}, hardware {self.hardware})")

    def measure(self, spec: OpSpec, protocol: Protocol = Protocol()) -> tuple[Measurement, dict[str, Any]]:
        self.check_protocol(protocol)
        prepared = self.prepare(spec)
        try:
            return measure(prepared.timed, protocol), prepared.extra
        finally:
            prepared.close()

    def accepts(self, specs: Iterable[OpSpec]) -> list[OpSpec]:
        """The specs of this runtime's precision (a sweep may mix fp32 and int8 entries)."""
        return [s for s in specs if s.dtype == self.dtype()]

    # ---- whole networks ------------------------------------------------------------------
    @classmethod
    def installed(cls) -> bool:
        """Whether one of its `modules` is installed (found, not imported); True where it names none."""
        for name in cls.modules:
            try:
                if importlib.util.find_spec(name) is not None:
                    return True
            except (ImportError, ValueError):
                pass
        return not cls.modules

    @classmethod
    def times_whole_models(cls) -> bool:
        """Whether this runtime times whole networks (`time_model`): calibration, scores and arch tables need it."""
        return cls.time_network is not Runtime.time_network

    @classmethod
    def times_archs(cls) -> bool:
        """Whether this runtime times a search space's architectures (`time_arch`: ``hwlat profile archs``)."""
        return cls.times_whole_models() or cls.time_arch is not Runtime.time_arch

    def time_network(self, model: bytes, protocol: Protocol, input_shape: Sequence[int] | None = None) -> Measurement:
        """Latency of one forward pass of a serialised ONNX model; runtimes that time whole networks override it."""
        raise UnsupportedOpError(f"whole-model timing is not built for the {self.name} runtime")

    def time_model(self, model: Any, protocol: Protocol = Protocol(),
                   input_shape: Sequence[int] | None = None) -> Measurement:
        """Latency of one forward pass of an ONNX model (bytes, path or ModelProto) with `protocol`'s clock."""
        self.check_protocol(protocol)
        if self.times_whole_models() and self.dtype() not in self.network_dtypes:
            raise UnsupportedOpError(f"the {self.name} runtime times whole {' and '.join(self.network_dtypes)} networks, "
                                     f"not {self.precision}")
        if isinstance(model, (str, os.PathLike)):  # a file: its weights too, where saved beside it
            from hwlat.device_tables.graph import load_onnx

            model = load_onnx(os.fspath(model))
        if not isinstance(model, (bytes, bytearray)) and hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        return self.time_network(model, protocol, input_shape)

    def time_arch(self, space: "Space", arch: Any, protocol: Protocol = Protocol(),
                  batch: int = 1) -> tuple[Measurement, float]:
        """(latency, milliseconds spent building the model) of one architecture of `space` at `batch`."""
        import time

        t0 = time.perf_counter()
        model = space.to_onnx(arch, batch)
        build_ms = (time.perf_counter() - t0) * 1e3
        return self.time_model(model, protocol), build_ms

    @classmethod
    def breaks_down_models(cls) -> bool:
        """Whether `profile_model` gives a per-node breakdown of a model (``hwlat profile model``)."""
        return cls.profile_model is not Runtime.profile_model

    def profile_model(self, path: str, protocol: Protocol = Protocol(), input_shape: Sequence[int] | None = None,
                      profile_runs: int | None = None) -> Any:
        """Whole-model latency and the runtime's own per-node profile of an ONNX file (a `ModelProfile`);
        here, for a runtime without a per-node profile, the whole model only (a `WholeModel`), timed as
        `time_model` times a network."""
        if not self.times_whole_models():
            raise UnsupportedOpError(f"the {self.name} runtime runs one kernel at a time, not a whole model; predict "
                                     f"the model from its table instead (`hwlat predict {path} --table TABLE`)")
        if profile_runs is not None:
            raise UnsupportedOpError(f"--runs sets the runs of a per-node profile, which the {self.name} runtime does not "
                                     "give; leave it out (the whole model is timed as --protocol says)")
        from hwlat.device_tables.graph import load_onnx, run_input_shapes

        model = load_onnx(os.fspath(path))  # its weights too, where saved beside it
        m = self.time_model(model, protocol, input_shape=input_shape)
        return WholeModel(str(path), self.device().name, protocol.clock, m, self.name,
                          {k: list(v) for k, v in run_input_shapes(model, input_shape).items()})

    # ---- what the fusion probe can read from the runtime itself ------------------------------
    def count_kernels(self, spec: OpSpec) -> int | None:
        """Kernels the runtime runs for `spec`'s single-op model (what its table row times); None where it does not show them."""
        return None

    def count_network_kernels(self, spec: OpSpec) -> int | None:
        """Kernels it runs for `spec`'s pattern inside a network, where that differs from alone; else None."""
        return None

    def count_compute_nodes(self, model: bytes, spec: OpSpec) -> int | None:
        """Compute nodes of the graph the runtime runs for a serialised ONNX model; None where it does not show them."""
        return None


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what C code writes to fd 2 (TFLM's MicroPrintf, LiteRT's log) into the yielded list, as one
    string, once the block ends."""
    out: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))
