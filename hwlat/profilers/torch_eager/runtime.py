"""PyTorch eager on the CPU or an NVIDIA GPU: single-op modules timed under `torch.inference_mode()`.

Threads are explicit (`torch.set_num_threads`; inter-op threads set to 1 once per process, which
torch allows only before any parallel work). Setting ``device``: ``cpu`` (default) or ``cuda[:N]``.
On CUDA, module and inputs move to the GPU once (`_to_device`), each timed call is bracketed by
CUDA events and synchronised (`hwlat.profilers.cuda.cuda_event_timer`), and the warm-up starts with
``autotune_runs`` synchronised calls so cuDNN's autotuning (``cudnn_benchmark``, on by default and
recorded) is done before the protocol's own warm-up. Setting ``precision``: fp32, fp16 or bf16 —
a property of the `Device`; op keys keep ``dtype=float32`` (a float op), so tables of one sweep at
several precisions share their keys (docs/tutorials/profile-gpu.md). Out-of-memory becomes `OutOfDeviceMemoryError`
after the cache is emptied, so a sweep records the failure and goes on.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

from hwlat.device_tables.device import Device, gpu_fingerprint, gpu_hardware_name, host_fingerprint
from hwlat.device_tables.errors import OutOfDeviceMemoryError, RuntimeUnavailableError, UnsupportedOpError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.base import Option, Prepared, Runtime
from hwlat.profilers.cuda import (check_torch_cuda, cuda_event_timer, is_out_of_memory, parse_device,
                            release_torch_memory, torch_gpu_facts, torch_math_flags)
from hwlat.profilers.protocol import Protocol, TimedCall, measure, perf_timer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'torch>=2.2,<2.14' --index-url https://download.pytorch.org/whl/cpu"
SUPPORTED_DEVICES = ("cpu", "cuda", "cuda:N")
# hwlat precision -> torch dtype name. The op keys stay float32: the precision names the device.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
AUTOTUNE_RUNS = 3  # synchronised calls after building, before the protocol's warm-up (cuDNN autotuning)


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
    """PyTorch eager mode. Settings: ``device`` (cpu, cuda, cuda:N), ``precision`` (fp32, fp16, bf16),
    ``cudnn_benchmark`` (CUDA only; on by default, off names another device)."""

    name = "torch"
    packages = ("torch",)
    modules = ("torch",)
    @classmethod
    def device_flags(cls, device: Device) -> list[str]:
        return super().device_flags(device) + ([] if device.hardware == "cpu" else ["--device cuda"])

    cli_options = (
        Option("--device", "device", "cpu (default), cuda or cuda:N; a GPU names the device after itself, "
                                     "e.g. nvidia-h100-80gb-hbm3/torch/fp16/threads=1 (docs/tutorials/profile-gpu.md)"),
        Option("--cudnn-benchmark", "cudnn_benchmark", "on CUDA, cuDNN autotuning during warm-up (default on; "
                                                       "off names another device)",
               choices=("on", "off"), values={"on": True, "off": False}),
    )

    def __init__(self, threads: int = 1, precision: str = "fp32", device: str = "cpu", cudnn_benchmark: bool | None = None,
                 autotune_runs: int = AUTOTUNE_RUNS, **settings: Any):
        if precision not in PRECISIONS:
            raise UnsupportedOpError(f"the torch profiler measures {', '.join(PRECISIONS)} (asked for {precision}); "
                                     "use --runtime litert or tflm for int8")
        kind, index = parse_device(device)
        if cudnn_benchmark is not None and kind == "cpu":
            raise UnsupportedOpError("cudnn_benchmark (--cudnn-benchmark) is a setting of torch on CUDA (--device cuda)")
        cudnn_benchmark = True if cudnn_benchmark is None else cudnn_benchmark
        self.device_kind = kind
        self.device_index = index
        self.torch_device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.cudnn_benchmark = bool(cudnn_benchmark)
        self.autotune_runs = max(1, int(autotune_runs))
        self.hardware = "cpu"
        self._torch: Any = None
        self._gpu: dict[str, Any] | None = None
        kwargs = dict(settings)
        if kind != "cpu":
            kwargs["device"] = self.torch_device
            if not self.cudnn_benchmark:
                kwargs["cudnn_benchmark"] = False
        super().__init__(threads=threads, precision=precision, **kwargs)

    @property
    def torch(self) -> Any:
        if self._torch is None:
            self._torch = import_torch()
        return self._torch

    @property
    def is_cuda(self) -> bool:
        return self.device_kind == "cuda"

    @property
    def dtype_name(self) -> str:
        """The torch dtype name of this precision (float32, float16, bfloat16)."""
        return PRECISIONS[self.precision]

    def check_available(self) -> None:
        torch = self.torch
        if self.is_cuda:
            check_torch_cuda(torch, self.device_index or 0)
            self._gpu = torch_gpu_facts(torch, self.device_index or 0)
            self.hardware = gpu_hardware_name(self._gpu["name"])
            if self.precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise RuntimeUnavailableError(f"{self._gpu['name']} (compute capability "
                                              f"{self._gpu['compute_capability']}) has no bf16 support; "
                                              "use --precision fp16 or fp32")
        try:
            set_threads(torch, self.threads)
            with torch.inference_mode():
                x = torch.zeros(2, 2, device=self.torch_device, dtype=getattr(torch, self.dtype_name))
                torch.nn.functional.relu(x)
            if self.is_cuda:
                torch.cuda.synchronize(self.torch_device)
        except Exception as exc:
            where = f"on {self.torch_device}" if self.is_cuda else "a one-op module"
            raise RuntimeUnavailableError(f"PyTorch {torch.__version__} cannot run {where} in {self.precision} "
                                          f"({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc!r}); "
                                          f"reinstall it: {INSTALL_HINT if not self.is_cuda else 'see docs/tutorials/profile-gpu.md'}") from exc

    def runtime_settings(self) -> dict[str, Any]:
        # The device is the hardware part of the name (cpu/torch/fp32/threads=N, nvidia-h100-80gb-hbm3/torch/fp16/...);
        # cuDNN autotuning is on unless said otherwise, and only "off" names another device.
        return {"cudnn_benchmark": False} if self.is_cuda and not self.cudnn_benchmark else {}

    def versions(self) -> dict[str, Any]:
        torch = self.torch
        info: dict[str, Any] = {
            "torch": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "mode": "eager, inference_mode",
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "device": self.torch_device,
            "dtype": self.dtype_name,
        }
        get_cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        if get_cap is not None:
            info["cpu_capability"] = get_cap()
        if self.is_cuda:
            flags = torch_math_flags(torch)
            flags["cudnn_benchmark"] = self.cudnn_benchmark  # what `context` sets while timing
            info.update({"timer": "cuda events on the current stream, synchronised per call",
                         "autotune_runs": self.autotune_runs, "cuda_runtime": getattr(torch.version, "cuda", None),
                         **flags})
        return info

    def gpu(self) -> dict[str, Any]:
        """The GPU's fingerprint (nvidia-smi merged with torch's facts); {} on the CPU."""
        if not self.is_cuda:
            return {}
        return gpu_fingerprint(self.device_index or 0, **(self._gpu or {}))

    def device(self) -> Device:
        if not self.is_cuda:
            return super().device()
        return Device.make(self.hardware, self.name, self.precision,
                           fingerprint=host_fingerprint(runtime=self.versions(), gpu=self.gpu()),
                           threads=self.threads, **self.runtime_settings())

    # ---- the device seam: everything that differs on CUDA -----------------------------------
    def _to_device(self, module: Any, inputs: Sequence[Any]) -> tuple[Any, list[Any]]:
        """Module and inputs on this device in this precision (floating tensors only are cast)."""
        torch = self.torch
        dtype = getattr(torch, self.dtype_name)
        if self.torch_device == "cpu" and dtype == torch.float32:
            return module, list(inputs)
        module = module.to(device=self.torch_device, dtype=dtype)
        moved = [x.to(device=self.torch_device, dtype=dtype if x.is_floating_point() else x.dtype) for x in inputs]
        return module, moved

    def _timer(self, call: Callable[[], Any]) -> TimedCall:
        if self.is_cuda:
            return cuda_event_timer(self.torch, call, self.torch_device)
        return perf_timer(call)

    def _sync(self) -> None:
        if self.is_cuda:
            self.torch.cuda.synchronize(self.torch_device)

    def context(self) -> ContextManager:
        """Timed calls run inside this: inference mode (entering it per call would cost ~2 µs) and,
        on CUDA, the cuDNN autotuning setting (restored on exit)."""
        if not self.is_cuda:
            return self.torch.inference_mode()
        return self._cuda_context()

    @contextlib.contextmanager
    def _cuda_context(self) -> Iterator[None]:
        torch = self.torch
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            with torch.inference_mode(), torch.cuda.device(self.torch_device):
                yield
        finally:
            torch.backends.cudnn.benchmark = before

    def _ready(self, call: Callable[[], Any], what: str) -> None:
        """First calls (cuDNN autotuning on CUDA), synchronised; `UnsupportedOpError` if torch cannot run it."""
        try:
            for _ in range(self.autotune_runs if self.is_cuda else 1):
                call()
            self._sync()
        except Exception as exc:
            if is_out_of_memory(exc, self.torch):
                raise
            raise UnsupportedOpError(f"{what}: torch cannot run it ({str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc!r})") from exc

    # ---- ops ---------------------------------------------------------------------------------
    def prepare(self, spec: OpSpec) -> Prepared:
        if spec.dtype != "float32":
            raise UnsupportedOpError(f"{spec.key}: torch runs float ops (fp32, fp16, bf16); "
                                     "int8 ops need --runtime litert or tflm")
        from hwlat.profilers.torch_eager.ops import build_inputs, build_module

        set_threads(self.torch, self.threads)
        module, inputs = self._to_device(build_module(spec), build_inputs(spec))
        with self.context():
            self._ready(lambda: module(*inputs), spec.key)  # fails here, not while timing, if torch cannot run it
        return Prepared(timed=self._timer(lambda: module(*inputs)))

    def count_kernels(self, spec: OpSpec) -> int | None:
        """One per op: eager mode calls each part of a pattern on its own (``conv2d+relu``: 2). The
        fusion probe then lets timing overrule this only where it clearly shows more, three times
        over. Timed alone, a pattern's tiny tails made one 30% slow reading of its head look like
        fusion: tables made with defaults on a Zen 4 VM held 1 to 20 "fused" patterns, run to run
        (`conv2d+relu` faster than its `conv2d` alone), the shipped Zen 4 and Zen 2 ones none."""
        from hwlat.device_tables.kernels import split_kernel

        return len(split_kernel(spec))

    def measure(self, spec: OpSpec, protocol: Protocol = Protocol()) -> tuple[Measurement, dict[str, Any]]:
        return self._guard_memory(lambda: self._measure_in_context(spec, protocol), spec.key)

    def _measure_in_context(self, spec: OpSpec, protocol: Protocol) -> tuple[Measurement, dict[str, Any]]:
        with self.context():
            return super().measure(spec, protocol)

    def time_module(self, module: Any, inputs: Sequence[Any], protocol: Protocol = Protocol(),
                    what: str = "model") -> Measurement:
        """Latency of ``module(*inputs)`` on this device and precision (eval mode, moved and cast once)."""

        def run() -> Measurement:
            set_threads(self.torch, self.threads)
            module.eval()
            mod, args = self._to_device(module, inputs)
            with self.context():
                self._ready(lambda: mod(*args), what)
                return measure(self._timer(lambda: mod(*args)), protocol)

        return self._guard_memory(run, what)

    def time_network(self, model: bytes, protocol: Protocol,
                     input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None) -> Measurement:
        """A serialised ONNX model run node by node with torch eager ops (`onnx_module`), timed with
        seeded inputs: what the table's predictor prices, as a torch eager model runs it. Dynamic
        input dimensions need `input_shape` (one shape, or name -> shape)."""
        from hwlat.profilers.torch_eager.onnx_module import onnx_module

        module, _ = onnx_module(model, self.torch, input_shape)
        return self.time_module(module, module.example_inputs(), protocol, what="model")

    def _guard_memory(self, work: Callable[[], Any], what: str) -> Any:
        """Run `work`; an allocation failure becomes `OutOfDeviceMemoryError` after the memory is released.

        The exception (and the frames holding the model and inputs) is dropped before the cache is
        emptied, otherwise the tensors it references would stay allocated.
        """
        failure: str | None = None
        try:
            return work()
        except Exception as exc:
            if not is_out_of_memory(exc, self.torch):
                raise
            failure = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        release_torch_memory(self.torch)
        where = f"{self._gpu['name']} ({self.torch_device})" if self.is_cuda and self._gpu else self.torch_device
        raise OutOfDeviceMemoryError(f"{what}: out of memory on {where} in {self.precision} ({failure}); "
                                     "a smaller batch may fit")


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
