"""PyTorch eager on this CPU: single-op modules timed under `torch.inference_mode()`, fp32.

Threads are explicit (`torch.set_num_threads`; inter-op threads set to 1 once per process, which
torch allows only before any parallel work). The device is a setting (``device="cpu"``) so that a
CUDA backend can slot in: it would move module and inputs in `_to_device`, time with CUDA events
in `_timer` and synchronise; none of that exists yet, and asking for it raises a clear error.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, ContextManager, Sequence

from device_tables.errors import RuntimeUnavailableError, UnsupportedOpError
from device_tables.measurement import Measurement
from device_tables.ops import OpSpec
from profilers.base import Prepared, Runtime
from profilers.protocol import Protocol, TimedCall, measure, perf_timer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
SUPPORTED_DEVICES = ("cpu",)  # "cuda" is the next one; see the module docstring


def import_torch():
    """The `torch` module, or `RuntimeUnavailableError` saying how to install or repair it."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "torch":
            raise RuntimeUnavailableError(f"PyTorch is not installed; install the CPU build: {INSTALL_HINT}") from exc
        raise RuntimeUnavailableError(f"PyTorch is installed but a module it needs is missing ({exc}); "
                                      f"reinstall it: {INSTALL_HINT} --force-reinstall") from exc
    except (ImportError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise RuntimeUnavailableError(f"PyTorch is installed but broken ({first}); "
                                      f"reinstall it: {INSTALL_HINT} --force-reinstall") from exc
    if not hasattr(torch, "inference_mode"):
        raise RuntimeUnavailableError(f"PyTorch {getattr(torch, '__version__', '?')} is too old (needs >= 1.9); "
                                      f"upgrade it: {INSTALL_HINT} --upgrade")
    return torch


def set_threads(torch: Any, threads: int) -> None:
    """Intra-op threads now; inter-op threads to 1 if torch still allows it (once per process)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work already ran: torch forbids changing it
            log.debug("torch inter-op threads stay at %d", torch.get_num_interop_threads())


class TorchRuntime(Runtime):
    """PyTorch eager mode, fp32, on the CPU (setting ``device``; only "cpu" for now)."""

    name = "torch"

    def __init__(self, threads: int = 1, precision: str = "fp32", device: str = "cpu", **settings: Any):
        if precision != "fp32":
            raise UnsupportedOpError(f"the torch profiler measures fp32 only (asked for {precision}); "
                                     "use --runtime litert or tflm for int8")
        if device not in SUPPORTED_DEVICES:
            raise RuntimeUnavailableError(f"torch device {device!r} is not supported by hwlat yet; use device='cpu'")
        self.torch_device = device
        self.hardware = device
        self._torch: Any = None
        kwargs = dict(settings)
        if device != "cpu":
            kwargs["device"] = device
        super().__init__(threads=threads, precision=precision, **kwargs)

    @property
    def torch(self) -> Any:
        if self._torch is None:
            self._torch = import_torch()
        return self._torch

    def check_available(self) -> None:
        torch = self.torch
        try:
            set_threads(torch, self.threads)
            with torch.inference_mode():
                torch.nn.functional.relu(torch.zeros(2, 2))
        except Exception as exc:
            raise RuntimeUnavailableError(f"PyTorch {torch.__version__} cannot run a one-op module ({exc}); "
                                          f"reinstall it: {INSTALL_HINT} --force-reinstall") from exc
        if self.threads > (os.cpu_count() or 1):
            log.warning("%d threads on %d logical cores: timings will include oversubscription",
                        self.threads, os.cpu_count())

    def runtime_settings(self) -> dict[str, Any]:
        return {}  # the device is the hardware part of the name (cpu/torch/fp32/threads=N)

    def versions(self) -> dict[str, Any]:
        torch = self.torch
        info: dict[str, Any] = {
            "torch": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "mode": "eager, inference_mode",
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
        }
        get_cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        if get_cap is not None:
            info["cpu_capability"] = get_cap()
        return info

    # ---- the device seam: everything that would differ on CUDA ----------------------------
    def _to_device(self, module: Any, inputs: Sequence[Any]) -> tuple[Any, list[Any]]:
        return module, list(inputs)

    def _timer(self, call: Callable[[], Any]) -> TimedCall:
        return perf_timer(call)

    def context(self) -> ContextManager:
        """Timed calls run inside this: inference mode (entering it per call would cost ~2 µs)."""
        return self.torch.inference_mode()

    # ---- ops ---------------------------------------------------------------------------------
    def prepare(self, spec: OpSpec) -> Prepared:
        if spec.dtype != "float32":
            raise UnsupportedOpError(f"{spec.key}: torch runs fp32 here; int8 ops need --runtime litert or tflm")
        from profilers.torch_ops import build_inputs, build_module

        set_threads(self.torch, self.threads)
        module, inputs = self._to_device(build_module(spec), build_inputs(spec))
        with self.context():
            try:
                module(*inputs)  # fails here, not while timing, if torch cannot run it
            except Exception as exc:
                raise UnsupportedOpError(f"{spec.key}: torch cannot run it ({str(exc).splitlines()[0][:200]})") from exc
        return Prepared(timed=self._timer(lambda: module(*inputs)))

    def measure(self, spec: OpSpec, protocol: Protocol = Protocol()) -> tuple[Measurement, dict[str, Any]]:
        with self.context():
            return super().measure(spec, protocol)


def time_torch_module(module: Any, inputs: Sequence[Any], threads: int = 1,
                      protocol: Protocol = Protocol()) -> Measurement:
    """Latency of ``module(*inputs)`` in eager mode on the CPU under `torch.inference_mode()`, with `protocol`.

    The module is put in eval mode; inputs are used as given (allocate them once, on the CPU).
    """
    torch = import_torch()
    set_threads(torch, threads)
    module.eval()
    args = tuple(inputs)
    with torch.inference_mode():
        return measure(perf_timer(lambda: module(*args)), protocol)
