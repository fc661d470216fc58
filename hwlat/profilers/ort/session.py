"""ONNX Runtime sessions: providers, options, creation, the inputs to feed and their binding.

Sessions run with explicit threads (intra-op = `threads`, inter-op = 1, sequential execution), the
CPU execution provider (or, setting ``provider="cuda[:N]"``, the CUDA execution provider of the
``onnxruntime-gpu`` package; docs/tutorials/profile-gpu.md), and a recorded graph optimisation level. Inputs and
outputs are bound once (`Binding`; on the GPU's memory under CUDA), so a timed call is one
`run_with_iobinding`: about half the Python overhead of `InferenceSession.run` on tiny ops. ONNX
Runtime synchronises the CUDA stream at the end of every run, so the wall clock times GPU work too.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwlat.device_tables.errors import ModelError, OutOfDeviceMemoryError, RuntimeUnavailableError
from hwlat.profilers.cuda import is_out_of_memory
from hwlat.profilers.ort.install import CUDA_PROVIDER, PROVIDER, cuda_provider_problem, installed_distributions

log = logging.getLogger(__name__)

# hwlat name -> onnxruntime.GraphOptimizationLevel member
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
DEFAULT_OPT_LEVEL = "all"  # what ONNX Runtime does by default, so what users get
PROVIDERS = {"cpu": PROVIDER, "cuda": CUDA_PROVIDER}  # hwlat name -> ONNX Runtime execution provider


def session_options(ort: Any, threads: int = 1, opt_level: str = DEFAULT_OPT_LEVEL, profile_prefix: str | None = None,
                    optimized_path: str | None = None) -> Any:
    """`SessionOptions` with explicit threads, sequential execution and the given optimisation level."""
    if opt_level not in OPT_LEVELS:
        raise ValueError(f"unknown graph optimisation level {opt_level!r}; choose from {', '.join(OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.log_severity_level = 3  # errors only: no warning about serialising NCHWc graphs, etc.
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized_path:
        so.optimized_model_filepath = optimized_path
        # Weights go to a side file: keeps the saved graph small and models over 2 GB possible.
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                    Path(optimized_path).name + ".data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return so


def execution_providers(provider: str = "cpu", device_id: int = 0) -> list[Any]:
    """The ``providers`` argument of a session: the CPU provider, or CUDA on `device_id` with CPU behind it."""
    if provider == "cpu":
        return [PROVIDER]
    return [(CUDA_PROVIDER, {"device_id": str(device_id)}), PROVIDER]


def parse_provider(text: str) -> tuple[str, int]:
    """``cpu`` -> ("cpu", 0); ``cuda`` / ``cuda:N`` -> ("cuda", N)."""
    t = str(text).strip().lower()
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", t)
    if not m or (m.group(1) == "cpu" and m.group(2)):
        raise RuntimeUnavailableError(f"unknown onnxruntime provider {text!r}; use cpu, cuda or cuda:N")
    return m.group(1), int(m.group(2) or 0)


class Binding:
    """A session with its inputs bound once and outputs preallocated; `run` is the call to time.

    `device` ("cuda", N) puts inputs and outputs in that GPU's memory, so a run moves no data.
    """

    def __init__(self, ort: Any, session: Any, feeds: Mapping[str, np.ndarray], device: tuple[str, int] | None = None):
        self.session = session
        self.feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}  # kept alive: bound by reference
        outputs = session.run(None, self.feeds)  # learns output shapes; also the first warm-up run
        self.run: Callable[[], Any]
        if device is not None and device[0] == "cuda":
            self._bind_on_gpu(ort, session, outputs, device[1])
            return
        try:
            io = session.io_binding()
            for name, value in self.feeds.items():
                io.bind_cpu_input(name, value)
            self._outputs = [np.empty_like(value) for value in outputs]  # kept alive: bound by reference
            for meta, buffer in zip(session.get_outputs(), self._outputs):
                io.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(buffer))
            session.run_with_iobinding(io)
            self.io = io
            self.run = lambda: session.run_with_iobinding(io)
        except Exception as exc:  # non-tensor or data-dependent outputs: plain run
            log.debug("io binding failed (%s); timing InferenceSession.run", exc)
            feeds_ = self.feeds
            self.run = lambda: session.run(None, feeds_)

    def _bind_on_gpu(self, ort: Any, session: Any, outputs: Sequence[np.ndarray], device_id: int) -> None:
        io = session.io_binding()
        self._values = []  # kept alive: bound by reference
        for name, value in self.feeds.items():
            ov = ort.OrtValue.ortvalue_from_numpy(value, "cuda", device_id)
            io.bind_ortvalue_input(name, ov)
            self._values.append(ov)
        for meta, value in zip(session.get_outputs(), outputs):
            ov = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), value.dtype, "cuda", device_id)
            io.bind_ortvalue_output(meta.name, ov)
            self._values.append(ov)
        session.run_with_iobinding(io)
        self.io = io
        self.run = lambda: session.run_with_iobinding(io)


def create_session(ort: Any, model: bytes | str | os.PathLike, options: Any, where: str,
                   providers: Sequence[Any] | None = None) -> Any:
    """An `InferenceSession` of `model` (bytes or path); `ModelError` or `OutOfDeviceMemoryError` naming `where`
    when it cannot load, `RuntimeUnavailableError` when CUDA was asked for and ONNX Runtime fell back to the CPU."""
    providers = list(providers or [PROVIDER])
    failure: str | None = None
    try:
        session = ort.InferenceSession(model if isinstance(model, (bytes, bytearray)) else str(model), options,
                                       providers=providers)
    except Exception as exc:
        if not isinstance(model, (bytes, bytearray)) and not Path(model).exists():
            raise ModelError(f"{where}: no such file") from exc
        if not is_out_of_memory(exc):
            raise ModelError(f"{where}: onnxruntime cannot load this model ({first_line(exc)})") from exc
        failure = first_line(exc)
    if failure is not None:  # outside the handler, so the failed session's memory can go
        _raise_out_of_memory(failure, where)
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if wanted == CUDA_PROVIDER and CUDA_PROVIDER not in session.get_providers():  # ONNX Runtime fell back silently
        problem = cuda_provider_problem(installed_distributions(), list(ort.get_available_providers()),
                                        getattr(ort, "__version__", "?"))
        raise RuntimeUnavailableError(problem or f"--provider cuda: onnxruntime could not load {CUDA_PROVIDER} "
                                                 "(CUDA or cuDNN libraries missing); see docs/tutorials/profile-gpu.md")
    return session


def _raise_out_of_memory(text: str, where: str) -> None:
    """Raise `OutOfDeviceMemoryError` after freeing what can be (call it outside the except block)."""
    gc.collect()
    raise OutOfDeviceMemoryError(f"{where}: out of memory ({text}); a smaller batch may fit")


def bind(ort: Any, session: Any, shapes: Mapping[str, tuple[tuple[int, ...], Any]], where: str,
         device: tuple[str, int] | None = None) -> Binding:
    """`session` bound to seeded random inputs of `shapes` (name -> (shape, dtype)), on `device`:
    integer ids zeros, integer masks (an input named ``*mask*``) ones, every token attended (a mask of
    zeros pads them all: NaN scores, and a softmax of -inf rows that ONNX Runtime runs 7x slower)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for name, (shape, dtype) in shapes.items():
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.uniform(-1, 1, size=shape).astype(dtype)
        else:
            feeds[name] = (np.ones if "mask" in name.lower() else np.zeros)(shape, dtype=dtype)
    failure = ""
    try:
        return Binding(ort, session, feeds, device)
    except Exception as exc:
        if not is_out_of_memory(exc):
            listing = ", ".join(f"{k} {'x'.join(map(str, v[0]))}" for k, v in shapes.items())
            raise ModelError(f"{where}: onnxruntime failed to run it on inputs {listing} ({first_line(exc)})") from exc
        failure = first_line(exc)
    _raise_out_of_memory(failure, where)
    raise AssertionError("unreachable")


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), or its class name."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else exc.__class__.__name__
    return line[:300]
