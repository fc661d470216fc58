"""`Runtime`: a profiler backend that builds and times op configurations on one `Device`."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from device_tables.device import Device, host_fingerprint
from device_tables.errors import HwlatError
from device_tables.measurement import Measurement
from device_tables.ops import OpSpec
from profilers.protocol import Protocol, TimedCall, measure

log = logging.getLogger(__name__)


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

    def __init__(self, threads: int = 1, precision: str = "fp32", **settings: Any):
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self.precision = precision
        self.settings = settings
        self.check_available()

    @abc.abstractmethod
    def check_available(self) -> None:
        """Raise `RuntimeUnavailableError` naming the package to install when it is missing."""

    @abc.abstractmethod
    def prepare(self, spec: OpSpec) -> Prepared:
        """Build the op (model, weights, inputs allocated once); raise `UnsupportedOpError` if impossible."""

    def runtime_settings(self) -> dict[str, Any]:
        """Settings that change the numbers and so name the device (besides threads)."""
        return {}

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
