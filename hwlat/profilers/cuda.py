"""CUDA pieces shared by the GPU runtimes: device strings, availability checks with one clear
message each, CUDA-event timing, out-of-memory detection, and the GPU facts PyTorch reports.

Nothing here imports torch or onnxruntime at import time: the callers pass the module in, so this
file costs nothing on a machine without a GPU (docs/tutorials/profile-gpu.md).
"""

from __future__ import annotations

import gc
import logging
import os
import re
import warnings
from typing import Any, Callable

from hwlat.device_tables.errors import RuntimeUnavailableError
from hwlat.profilers.protocol import TimedCall

log = logging.getLogger(__name__)

DEVICE_FORM = "cpu, cuda or cuda:N"
TORCH_CUDA_HINT = ("pip install torch --index-url https://download.pytorch.org/whl/cu128 "
                   "(choose the CUDA version your driver supports: https://pytorch.org/get-started/locally/)")
# Messages of allocation failures across torch, cuDNN, cuBLAS and ONNX Runtime's CUDA arena.
_OOM_TEXT = re.compile(r"out of memory|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation"
                       r"|Failed to allocate memory|smaller than requested bytes|can't allocate memory", re.IGNORECASE)


def parse_device(text: str) -> tuple[str, int | None]:
    """``cpu`` -> ("cpu", None); ``cuda`` / ``cuda:N`` -> ("cuda", N); anything else a clear error."""
    t = str(text).strip().lower()
    if t == "cpu":
        return "cpu", None
    m = re.fullmatch(r"cuda(?::(\d+))?", t)
    if m:
        return "cuda", int(m.group(1) or 0)
    raise RuntimeUnavailableError(f"unknown device {text!r}; use {DEVICE_FORM}")


def check_torch_cuda(torch: Any, index: int) -> None:
    """Raise `RuntimeUnavailableError` saying what to do when PyTorch cannot use GPU `index`."""
    asked = f"--device cuda:{index}"
    built = getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None)
    if not built:
        raise RuntimeUnavailableError(
            f"{asked}: PyTorch {torch.__version__} is a CPU-only build and cannot use a GPU; on a machine with an "
            f"NVIDIA GPU install a CUDA build: {TORCH_CUDA_HINT}; or measure with --device cpu")
    with warnings.catch_warnings(record=True) as caught:  # torch warns about old drivers instead of raising
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        why = str(caught[0].message).strip().splitlines()[0] if caught else "no NVIDIA driver or GPU found"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
            why = f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
        raise RuntimeUnavailableError(
            f"{asked}: PyTorch {torch.__version__} (CUDA {built}) sees no GPU ({why}); check that `nvidia-smi` "
            "lists one, or measure with --device cpu")
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeUnavailableError(
            f"{asked}: only {count} GPU{'s are' if count != 1 else ' is'} visible "
            f"(cuda:0{f'..cuda:{count - 1}' if count > 1 else ''}); choose one of them")


def cuda_event_timer(torch: Any, call: Callable[[], Any], device: Any) -> TimedCall:
    """A `TimedCall` timing `call` with CUDA events on the device's current stream, synchronised.

    The stream is idle when the start event is recorded (the previous call ended in a synchronise),
    so the elapsed time covers launching and running every kernel of the call: what an eager user
    waits for. Returns milliseconds of the GPU's clock.
    """
    stream = torch.cuda.current_stream(device)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def timed() -> float:
        start.record(stream)
        call()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    timed.__wrapped__ = call  # type: ignore[attr-defined]  # the untimed call, like perf_timer's
    return timed


def is_out_of_memory(exc: BaseException, torch: Any = None) -> bool:
    """True for an allocation failure: torch's OutOfMemoryError, MemoryError, or an OOM message."""
    if isinstance(exc, MemoryError):
        return True
    if torch is not None:
        types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)) if isinstance(t, type))
        if types and isinstance(exc, types):
            return True
    return bool(_OOM_TEXT.search(str(exc)))


def release_torch_memory(torch: Any) -> None:
    """Drop unreachable tensors and hand the caching allocator's free blocks back to the driver."""
    gc.collect()
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        cuda.empty_cache()


def cudnn_version_str(version: int | None) -> str | None:
    """cuDNN's integer version as text: 90100 -> '9.1.0' (cuDNN >= 9), 8902 -> '8.9.2' (cuDNN 8)."""
    if not version:
        return None
    v = int(version)
    if v >= 90000:
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
    return f"{v // 1000}.{v % 1000 // 100}.{v % 100}"


def torch_gpu_facts(torch: Any, index: int) -> dict[str, Any]:
    """What PyTorch knows of GPU `index`: name, memory, compute capability, SMs, L2, CUDA and cuDNN versions."""
    props = torch.cuda.get_device_properties(index)
    facts: dict[str, Any] = {
        "name": props.name,
        "memory_total_mib": int(props.total_memory) // (1 << 20),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": int(props.multi_processor_count),
    }
    for attr, key in (("L2_cache_size", "l2_cache_bytes"), ("uuid", "uuid"), ("pci_bus_id", "pci_bus"),
                      ("pci_device_id", "pci_device")):
        value = getattr(props, attr, None)
        if value is not None:
            facts[key] = value if isinstance(value, (int, float)) else str(value)
    facts["cuda_runtime"] = getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None)
    cudnn = torch.backends.cudnn
    facts["cudnn"] = cudnn_version_str(cudnn.version()) if cudnn.is_available() else None
    driver = getattr(torch._C, "_cuda_getDriverVersion", None)
    if driver is not None:
        try:
            v = int(driver())
            facts["cuda_driver_api"] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception as exc:  # a private API: informative only
            log.debug("torch._C._cuda_getDriverVersion failed: %s", exc)
    return facts


def torch_math_flags(torch: Any) -> dict[str, Any]:
    """The settings that change which GPU kernels run (TF32 on convolutions/matmuls, cuDNN autotuning).

    Each is read on its own: newer torch deprecates the ``allow_tf32`` flags for ``fp32_precision``
    and may refuse to read one kind after the other was set; such a flag is recorded as None.
    """
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    readers: dict[str, Callable[[], Any]] = {
        "cudnn_benchmark": lambda: bool(cudnn.benchmark),
        "cudnn_deterministic": lambda: bool(cudnn.deterministic),
        "cudnn_allow_tf32": lambda: bool(cudnn.allow_tf32),
        "matmul_allow_tf32": lambda: bool(matmul.allow_tf32),
        "cudnn_conv_fp32_precision": lambda: str(cudnn.conv.fp32_precision),
        "matmul_fp32_precision": lambda: str(matmul.fp32_precision),
        "float32_matmul_precision": lambda: torch.get_float32_matmul_precision(),
    }
    flags: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, read in readers.items():
            try:
                flags[key] = read()
            except Exception:  # absent in this torch, or refused
                flags[key] = None
    return flags
