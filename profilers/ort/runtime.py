"""ONNX Runtime on this CPU or an NVIDIA GPU: single-op models, whole-model latency, and per-node profiles.

Sessions run with explicit threads (intra-op = `threads`, inter-op = 1, sequential execution), the
CPU execution provider (or, setting ``provider="cuda[:N]"``, the CUDA execution provider of the
``onnxruntime-gpu`` package; docs/gpu.md), and a recorded graph optimisation level. Inputs and
outputs are bound once (`io_binding`; on the GPU's memory under CUDA), so a timed call is one
`run_with_iobinding`: about half the Python overhead of `InferenceSession.run` on tiny ops. ONNX
Runtime synchronises the CUDA stream at the end of every run, so the wall clock times GPU work too.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from device_tables.device import Device, gpu_fingerprint, gpu_hardware_name, host_fingerprint
from device_tables.errors import ModelError, OutOfDeviceMemoryError, RuntimeUnavailableError, UnsupportedOpError
from device_tables.measurement import Measurement
from device_tables.ops import OpSpec
from profilers.base import Option, Prepared, Runtime
from profilers.cuda import is_out_of_memory
from profilers.protocol import Protocol, measure, perf_timer

if TYPE_CHECKING:
    from profilers.ort.model_profile import ModelProfile

log = logging.getLogger(__name__)

# hwlat name -> onnxruntime.GraphOptimizationLevel member
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
DEFAULT_OPT_LEVEL = "all"  # what ONNX Runtime does by default, so what users get
PROVIDER = "CPUExecutionProvider"
_ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                      "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")
INSTALL_HINT = "pip install onnxruntime"
CUDA_PROVIDER = "CUDAExecutionProvider"
PROVIDERS = {"cpu": PROVIDER, "cuda": CUDA_PROVIDER}  # hwlat name -> ONNX Runtime execution provider
GPU_DISTRIBUTIONS = ("onnxruntime-gpu", "ort-nightly-gpu")
GPU_INSTALL_HINT = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
# On x86 CPUs ONNX Runtime runs convolutions (and the pools, adds, ... between them) in the blocked
# NCHWc layout, so a single-op model becomes ReorderInput -> op -> ReorderOutput. Inside a network the
# layout is kept from one such op to the next and reorders run only at a region's edges, so each
# row records their shares of the single-op model's node time (``reorder_in_share``,
# ``reorder_out_share``; a profiled session of `REORDER_PROFILE_RUNS` runs), which `predictors.lut`
# takes off the row and charges at the edges. They are 10-60% of a lone conv's time (most for
# depthwise convs on large maps).
REORDER_NODES = {"in": "ReorderInput", "out": "ReorderOutput"}  # direction -> ONNX Runtime op type
REORDER_PROFILE_RUNS = 40


def import_onnxruntime():
    """The `onnxruntime` module, or `RuntimeUnavailableError` saying how to install or repair it."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "onnxruntime":
            raise RuntimeUnavailableError(f"onnxruntime is not installed; install it with: {INSTALL_HINT}") from exc
        raise RuntimeUnavailableError(
            f"onnxruntime is installed but a module it needs is missing ({exc}); "
            f"reinstall it: pip install --force-reinstall {INSTALL_HINT.split()[-1]}") from exc
    except (ImportError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise RuntimeUnavailableError(
            f"onnxruntime is installed but broken ({first}); "
            "reinstall it: pip install --force-reinstall onnxruntime") from exc
    if not hasattr(ort, "InferenceSession"):
        raise RuntimeUnavailableError(
            "onnxruntime imports but has no InferenceSession (a half-removed install?); "
            "reinstall it: pip install --force-reinstall onnxruntime")
    return ort


def installed_distributions() -> dict[str, str]:
    """The onnxruntime wheels installed in this environment: distribution -> version."""
    installed = {}
    for dist in _ORT_DISTRIBUTIONS:
        try:
            installed[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return installed


def cuda_provider_problem(installed: Mapping[str, str], providers: Sequence[str], version: str) -> str | None:
    """What stops ``--provider cuda``, given the installed wheels and the imported module's providers; None if nothing.

    ``onnxruntime`` and ``onnxruntime-gpu`` both install the module ``onnxruntime``: with both there, the
    files of whichever was installed last win, so removing one breaks the other (uninstall both).
    """
    if CUDA_PROVIDER in providers:
        return None
    listing = ", ".join(providers) or "none"
    gpu = [d for d in GPU_DISTRIBUTIONS if d in installed]
    others = [d for d in installed if d not in GPU_DISTRIBUTIONS]
    if gpu and others:
        names = " ".join(list(installed))
        return (f"--provider cuda: {' and '.join(f'{d} {installed[d]}' for d in installed)} are installed and share "
                f"the onnxruntime module, whose files are now the CPU build's (providers: {listing}); keep only the "
                f"GPU build: pip uninstall -y {names} && pip install {gpu[0]}")
    if gpu:
        return (f"--provider cuda: {gpu[0]} {installed[gpu[0]]} is installed but the imported onnxruntime {version} "
                f"lists no {CUDA_PROVIDER} (providers: {listing}): a broken install; reinstall it: "
                f"pip install --force-reinstall {gpu[0]}")
    if others and others != ["onnxruntime"]:
        names = " ".join(others)
        return (f"--provider cuda: {', '.join(f'{d} {installed[d]}' for d in others)} has no {CUDA_PROVIDER} "
                f"(providers: {listing}); replace it with the GPU build: pip uninstall -y {names} && "
                "pip install onnxruntime-gpu")
    return (f"--provider cuda: onnxruntime {version} is the CPU build (providers: {listing}); replace it with the "
            f"GPU build: {GPU_INSTALL_HINT} (see docs/gpu.md)")


def _check_install(ort: Any, provider: str = "cpu") -> None:
    """Several onnxruntime wheels in one environment overwrite each other's files; name the conflict."""
    installed = installed_distributions()
    version = getattr(ort, "__version__", "?")
    if provider == "cuda":
        problem = cuda_provider_problem(installed, list(ort.get_available_providers()), version)
        if problem:
            raise RuntimeUnavailableError(problem)
    if len(installed) > 1:
        listing = ", ".join(f"{k} {v}" for k, v in installed.items())
        if any(v != version for v in installed.values()):
            keep = f"pip install {next(iter(d for d in GPU_DISTRIBUTIONS if d in installed), 'onnxruntime-gpu')}" \
                if provider == "cuda" else INSTALL_HINT
            raise RuntimeUnavailableError(
                f"several onnxruntime packages are installed ({listing}) and the one imported reports {version}: "
                f"a mixed install; keep one: pip uninstall -y {' '.join(installed)} && {keep}")
        log.warning("several onnxruntime packages are installed (%s); keep only one", listing)
    elif installed and version not in installed.values():
        (dist, dv), = installed.items()
        raise RuntimeUnavailableError(
            f"{dist} {dv} is installed but the imported onnxruntime reports {version}: a mixed install; "
            f"reinstall it: pip install --force-reinstall {dist}=={dv}")
    if PROVIDER not in ort.get_available_providers():
        raise RuntimeUnavailableError(
            f"onnxruntime {version} has no {PROVIDER} (providers: {', '.join(ort.get_available_providers())}); "
            f"install the CPU build: {INSTALL_HINT}")


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


class OnnxRuntime(Runtime):
    """ONNX Runtime, fp32. Settings: ``opt_level`` (disable, basic, extended or all) and ``provider``
    (cpu, or cuda[:N]: the CUDA execution provider of onnxruntime-gpu; the GPU names the device)."""

    name = "onnxruntime"
    packages = ("onnxruntime", "onnxruntime-gpu")
    cli_options = (
        Option("--opt-level", "opt_level", "graph optimisation level (default all; another level names another device)",
               choices=OPT_LEVELS),
        Option("--provider", "provider", "execution provider: cpu (default), cuda or cuda:N (needs the onnxruntime-gpu "
                                         "package instead of onnxruntime; docs/gpu.md)"),
    )
    same_shape_planner = True

    def __init__(self, threads: int = 1, precision: str = "fp32", opt_level: str = DEFAULT_OPT_LEVEL,
                 provider: str = "cpu", **settings: Any):
        if opt_level not in OPT_LEVELS:
            raise ValueError(f"unknown graph optimisation level {opt_level!r}; choose from {', '.join(OPT_LEVELS)}")
        if precision != "fp32":
            raise UnsupportedOpError(f"the onnxruntime profiler measures fp32 only (asked for {precision}); "
                                     "use --runtime litert or tflm for int8, or --runtime torch for fp16/bf16")
        self.opt_level = opt_level
        self.provider, self.device_id = parse_provider(provider)
        self.hardware = "cpu"
        self._ort: Any = None
        self._options: Any = None
        self._provider_options: dict[str, Any] = {}
        self._gpu: dict[str, Any] = {}
        if self.provider == "cuda":
            settings["provider"] = f"cuda:{self.device_id}"
        super().__init__(threads=threads, precision=precision, opt_level=opt_level, **settings)

    @property
    def ort(self) -> Any:
        if self._ort is None:
            self._ort = import_onnxruntime()
        return self._ort

    @property
    def placement(self) -> tuple[str, int]:
        """Where bound inputs and outputs live: ("cpu", 0) or ("cuda", device_id)."""
        return self.provider, self.device_id

    def providers(self) -> list[Any]:
        return execution_providers(self.provider, self.device_id)

    def check_available(self) -> None:
        ort = self.ort
        _check_install(ort, self.provider)
        try:
            import onnx  # noqa: F401  (builds the single-op models)
        except ImportError as exc:
            raise RuntimeUnavailableError("onnx is not installed (it builds the single-op models): "
                                          "pip install onnx") from exc
        if self.provider == "cuda":
            preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21: CUDA/cuDNN from nvidia-* wheels
            if preload is not None:
                try:
                    preload()
                except Exception as exc:  # the libraries may come from the system instead
                    log.debug("onnxruntime.preload_dlls() failed: %s", exc)
        self._smoke_test()
        if self.provider == "cuda":
            self._gpu = gpu_fingerprint(self.device_id)
            if not self._gpu.get("name"):
                self._gpu.update(_torch_gpu_name(self.device_id))
            self.hardware = gpu_hardware_name(self._gpu.get("name") or f"cuda-gpu{self.device_id}")
        if self.threads > (os.cpu_count() or 1):
            log.warning("%d threads on %d logical cores: timings will include oversubscription",
                        self.threads, os.cpu_count())

    def _smoke_test(self) -> None:
        """Run a one-node model once: catches native libraries that import but cannot run (or a CUDA
        provider that is listed but cannot load its CUDA and cuDNN libraries)."""
        from profilers.onnx_ops import build_onnx_bytes

        spec = OpSpec.make("relu", (1, 1, 2, 2))
        version = getattr(self.ort, "__version__", "?")
        try:
            sess = self.ort.InferenceSession(build_onnx_bytes(spec), self.options(), providers=self.providers())
            sess.run(None, {"x0": np.zeros((1, 1, 2, 2), np.float32)})
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            if self.provider == "cuda":
                raise RuntimeUnavailableError(
                    f"--provider cuda:{self.device_id}: onnxruntime {version} cannot run a one-node model on the GPU "
                    f"({first}); check that `nvidia-smi` lists GPU {self.device_id} and see docs/gpu.md") from exc
            raise RuntimeUnavailableError(
                f"onnxruntime {version} cannot run a one-node model ({first}); "
                "reinstall it: pip install --force-reinstall onnxruntime") from exc
        if self.provider == "cuda":
            if CUDA_PROVIDER not in sess.get_providers():
                raise RuntimeUnavailableError(
                    f"--provider cuda: onnxruntime {version} lists {CUDA_PROVIDER} but could not load it (its CUDA or "
                    "cuDNN libraries are missing or of another major version than it was built for; ONNX Runtime's "
                    "log above names the library); install them, e.g. pip install 'onnxruntime-gpu[cuda,cudnn]', "
                    "see docs/gpu.md")
            self._provider_options = dict(sess.get_provider_options().get(CUDA_PROVIDER, {}))

    def options(self) -> Any:
        """Options of single-op sessions; under CUDA every node must run on the GPU (no silent CPU fallback)."""
        if self._options is None:
            self._options = session_options(self.ort, self.threads, self.opt_level)
            if self.provider == "cuda":
                self._options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return self._options

    def runtime_settings(self) -> dict[str, Any]:
        # The default level is left out of the device name (cpu/onnxruntime/fp32/threads=1) but recorded
        # in the fingerprint (`versions`); any other level names a different device. The provider is in
        # the hardware part (cpu, or the GPU's name).
        return {} if self.opt_level == DEFAULT_OPT_LEVEL else {"opt_level": self.opt_level}

    def versions(self) -> dict[str, Any]:
        ort = self.ort
        info: dict[str, Any] = {
            "onnxruntime": getattr(ort, "__version__", "?"),
            "providers": list(ort.get_available_providers()),
            "session": {"provider": PROVIDERS[self.provider], "graph_optimization_level": self.opt_level,
                        "intra_op_threads": self.threads,
                        "inter_op_threads": 1, "execution_mode": "sequential", "io_binding": True},
        }
        if self.provider == "cuda":
            info["session"].update({"device_id": self.device_id, "provider_options": self._provider_options,
                                    "io_binding": "inputs and outputs in GPU memory",
                                    "cpu_ep_fallback": "disabled for single ops",
                                    "timer": "wall clock around run_with_iobinding (each run synchronises the stream)"})
            info["nvidia_packages"] = _nvidia_packages()
        return info

    def device(self) -> Device:
        if self.provider != "cuda":
            return super().device()
        return Device.make(self.hardware, self.name, self.precision,
                           fingerprint=host_fingerprint(runtime=self.versions(), gpu=dict(self._gpu)),
                           threads=self.threads, **self.runtime_settings())

    def prepare(self, spec: OpSpec) -> Prepared:
        from profilers.onnx_ops import build_onnx_bytes, input_names
        from profilers.weights import make_inputs

        if spec.dtype != "float32":
            raise UnsupportedOpError(f"{spec.key}: onnxruntime runs fp32 here; int8 ops need --runtime litert or tflm")
        model = build_onnx_bytes(spec)
        failure: str | None = None
        try:
            session = self.ort.InferenceSession(model, self.options(), providers=self.providers())
            bound = Binding(self.ort, session, dict(zip(input_names(spec), make_inputs(spec))), self.placement)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise UnsupportedOpError(f"{spec.key}: onnxruntime cannot run it ({_first_line(exc)})") from exc
            failure = _first_line(exc)
        if failure is not None:  # outside the handler, so the failed session's arena can go
            gc.collect()
            raise OutOfDeviceMemoryError(f"{spec.key}: out of memory on {self.hardware} ({failure}); "
                                         "a smaller batch may fit")
        extra = (reorder_shares(self.ort, model, bound.feeds, self.threads, self.opt_level, providers=self.providers())
                 if self.provider == "cpu" else {})
        return Prepared(timed=perf_timer(bound.run), extra=extra)


    # ---- whole networks and the graphs it runs ---------------------------------------------
    def time_network(self, model: bytes, protocol: Protocol, input_shape: Sequence[int] | None = None) -> Measurement:
        return time_onnx_model(model, threads=self.threads, protocol=protocol, opt_level=self.opt_level,
                               input_shape=input_shape, provider=self.provider_name, providers=self.providers())

    @property
    def provider_name(self) -> str:
        """The provider as ``--provider`` takes it: cpu or cuda:N."""
        return "cpu" if self.provider == "cpu" else f"cuda:{self.device_id}"

    def profile_model(self, path: str, protocol: Protocol = Protocol(), input_shape: Sequence[int] | None = None,
                      profile_runs: int | None = None) -> "ModelProfile":
        return profile_model(path, input_shape=input_shape, protocol=protocol, profile_runs=profile_runs, runtime=self)

    def count_kernels(self, spec: OpSpec) -> int | None:
        """Compute nodes of the optimised graph of the single-op model (layout moves excluded)."""
        from profilers.onnx_ops import build_onnx_bytes

        return self.count_compute_nodes(build_onnx_bytes(spec), spec)

    def count_network_kernels(self, spec: OpSpec) -> int | None:
        """Kernels it runs for the pattern *inside a network*: between a 1x1 conv that feeds it (and its
        residual) and one that reads it, as in a CNN. There its optimiser fuses more than in a lone
        single-op model (on x86 its NCHWc layout lets a conv absorb a residual add and activations such
        as HardSwish). Context and layout nodes are not counted."""
        from profilers.fusion import context_probe

        try:
            model, context = context_probe(spec)
        except UnsupportedOpError:
            return None
        n = self.count_compute_nodes(model.SerializeToString(), spec)
        return None if n is None else max(1, n - context)

    def count_compute_nodes(self, model: bytes, spec: OpSpec) -> int | None:
        """Compute nodes of the graph ONNX Runtime optimises `model` into with these settings and
        providers; None when it cannot save that graph (no evidence either way)."""
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            opts = session_options(self.ort, self.threads, self.opt_level)
            opts.optimized_model_filepath = path
            try:
                self.ort.InferenceSession(model, opts, providers=self.providers())
                graph = onnx.load(path).graph
            except Exception as exc:  # an optimised graph ORT cannot save is no evidence
                log.debug("no optimised graph for %s: %s", spec.key, exc)
                return None
        return sum(1 for n in graph.node if n.op_type not in LAYOUT_NODES)


# Nodes of ONNX Runtime's optimised graphs that move or relabel data rather than compute.
LAYOUT_NODES = {"ReorderInput", "ReorderOutput", "Transpose", "Reshape", "Identity", "MemcpyToHost", "MemcpyFromHost"}


def reorder_shares(ort: Any, model: bytes, feeds: Mapping[str, np.ndarray], threads: int = 1,
                   opt_level: str = DEFAULT_OPT_LEVEL, runs: int = REORDER_PROFILE_RUNS,
                   providers: Sequence[Any] = (PROVIDER,)) -> dict[str, float]:
    """Shares of a model's node time (mean over `runs` profiled runs) spent in the NCHWc reorders
    ONNX Runtime inserted: ``{"reorder_in_share": .., "reorder_out_share": ..}``, {} when it inserted none."""
    from profilers.ort.nodes import parse_trace

    with tempfile.TemporaryDirectory(prefix="hwlat_ort_") as tmp:
        options = session_options(ort, threads, opt_level, os.path.join(tmp, "profile"))
        session = ort.InferenceSession(model, options, providers=list(providers))
        for _ in range(runs + 2):
            session.run(None, feeds)
        traces, _ = parse_trace(session.end_profiling(), skip_runs=2)
    times = [(t.op_type, float(np.mean(t.per_run_us))) for t in traces.values()]
    total = sum(t for _, t in times)
    if total <= 0 or not any(op in REORDER_NODES.values() for op, _ in times):
        return {}
    return {f"reorder_{d}_share": round(sum(t for op, t in times if op == node) / total, 4)
            for d, node in REORDER_NODES.items()}


def _torch_gpu_name(device_id: int) -> dict[str, Any]:
    """GPU facts from PyTorch when nvidia-smi gave none (only if torch is installed with CUDA)."""
    try:
        import torch

        from profilers.cuda import torch_gpu_facts

        if torch.cuda.is_available() and device_id < torch.cuda.device_count():
            return torch_gpu_facts(torch, device_id)
    except Exception as exc:
        log.debug("no GPU facts from torch: %s", exc)
    return {}


def _nvidia_packages() -> dict[str, str]:
    """Versions of the nvidia-* wheels (CUDA runtime, cuBLAS, cuDNN) the CUDA provider may load."""
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith("nvidia-"):
            found[name] = dist.version
    return dict(sorted(found.items()))


# ---- whole models --------------------------------------------------------------------------
def time_onnx_model(model: bytes | str | os.PathLike | Any, threads: int = 1, protocol: Protocol = Protocol(),
                    opt_level: str = DEFAULT_OPT_LEVEL,
                    input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                    provider: str = "cpu", providers: Sequence[Any] | None = None) -> Measurement:
    """Whole-model latency of an ONNX model (bytes or path) on ONNX Runtime, with `protocol`.

    Cheap to call many times: one session, no model checks beyond what ONNX Runtime does itself.
    Dynamic input dimensions need `input_shape` (one shape, or a name -> shape mapping). `provider`
    ``cuda[:N]`` runs it on the CUDA execution provider with inputs and outputs in GPU memory
    (nodes the GPU cannot run fall back to the CPU, as in normal use). `providers`, where given, is
    the session's provider list (a runtime's `OnnxRuntime.providers`).
    """
    ort = import_onnxruntime()
    kind, device_id = parse_provider(provider)
    if kind == "cuda":
        problem = cuda_provider_problem(installed_distributions(), list(ort.get_available_providers()),
                                        getattr(ort, "__version__", "?"))
        if problem:
            raise RuntimeUnavailableError(problem)
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        model = model.SerializeToString()
    where = "model" if isinstance(model, (bytes, bytearray)) else str(model)
    session = _create_session(ort, model, session_options(ort, threads, opt_level), where,
                              providers or execution_providers(kind, device_id))
    shapes = _input_shapes([(i.name, list(i.shape), i.type) for i in session.get_inputs()], input_shape, where)
    bound = _bind(ort, session, shapes, where, (kind, device_id))
    return measure(perf_timer(bound.run), protocol)


def profile_model(path: str | os.PathLike, threads: int = 1, opt_level: str = DEFAULT_OPT_LEVEL,
                  input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                  protocol: Protocol = Protocol(), profile_runs: int | None = None,
                  provider: str = "cpu", runtime: "OnnxRuntime | None" = None) -> "ModelProfile":
    """Whole-model latency plus ONNX Runtime's per-node profile, mapped back to the source graph's nodes.

    Raises `ModelError` naming the file for a missing, malformed or unsupported model, or a dynamic
    input without `input_shape`. Returns a `ModelProfile`. Under ``provider="cuda"`` node times are the
    GPU kernels' when this onnxruntime build traces them (``Kernel`` events), else the host-side time of
    each node (kernel launches; see docs/gpu.md), which ``versions["node_timing"]`` says. A `runtime`
    given replaces `threads`, `opt_level` and `provider` with its own settings and providers.
    """
    import onnx

    from profilers.ort.model_profile import ModelProfile, NodeTime
    from profilers.ort.nodes import (Graph, align_names, kernel_times, map_runtime_nodes, name_nodes, parse_trace,
                                     source_ops)

    runtime = runtime or OnnxRuntime(threads=threads, opt_level=opt_level, provider=provider)
    threads, opt_level = runtime.threads, runtime.opt_level
    providers = runtime.providers()
    ort = runtime.ort
    where = str(path)
    model = _load_model(onnx, Path(path))
    renamed = name_nodes(model.graph)
    if renamed:
        log.info("%s: named %d unnamed or duplicate-named nodes", where, renamed)
    source = Graph.from_onnx(model.graph)
    value_types = {vi.name: vi.type for vi in model.graph.input}
    declared = [(name, _proto_dims(value_types[name]), _proto_type(onnx, value_types[name]))
                for name in sorted(source.inputs, key=_input_order(model))]
    shapes = _input_shapes(declared, input_shape, where)
    data = model.SerializeToString() if model.ByteSize() < 2_000_000_000 else where

    # (b) whole-model latency on a plain session
    session = _create_session(ort, data, session_options(ort, threads, opt_level), where, providers)
    bound = _bind(ort, session, shapes, where, runtime.placement)
    latency = measure(perf_timer(bound.run), protocol)

    # (c) ONNX Runtime's profiler over a number of runs, on a session that also saves its optimised graph
    runs = profile_runs or _profile_runs(latency.median_ms, len(source.nodes))
    warmup = max(2, protocol.warmup_runs)
    with tempfile.TemporaryDirectory(prefix="hwlat_ort_") as tmp:
        optimized_path = os.path.join(tmp, "optimized.onnx")
        prefix = os.path.join(tmp, "profile")
        try:
            options = session_options(ort, threads, opt_level, prefix, optimized_path)
            psession = _create_session(ort, data, options, where, providers)
        except ModelError as exc:  # e.g. a graph ONNX Runtime cannot serialise: profile without it
            log.warning("%s; mapping runtime nodes to source nodes by name only", exc)
            psession = _create_session(ort, data, session_options(ort, threads, opt_level, prefix), where, providers)
        pbound = _bind(ort, psession, shapes, where, runtime.placement)  # its first run is a warm-up run too
        for _ in range(warmup - 1 + runs):
            pbound.run()
        trace_path = psession.end_profiling()
        traces, _ = parse_trace(trace_path, skip_runs=warmup)
        node_timing = "host"
        if runtime.provider == "cuda":
            gpu_times = kernel_times(trace_path, skip_runs=warmup)
            if gpu_times:
                for name, per_run in gpu_times.items():
                    if name in traces:
                        traces[name].per_run_us = per_run
                node_timing = "gpu kernels (the build's CUDA kernel trace)"
            else:
                blocking = os.environ.get("CUDA_LAUNCH_BLOCKING") == "1"
                node_timing = ("host, CUDA_LAUNCH_BLOCKING=1 (each node waits for its kernels)" if blocking else
                               "host (kernel launches only: CUDA kernels run asynchronously; set "
                               "CUDA_LAUNCH_BLOCKING=1 for per-node GPU times, docs/gpu.md)")
                if not blocking:
                    log.warning("per-node times under the CUDA provider are host-side launch times: this onnxruntime "
                                "build does not trace CUDA kernels; run with CUDA_LAUNCH_BLOCKING=1 for GPU times")
        saved = os.path.exists(optimized_path)
        optimized = Graph.from_onnx(onnx.load(optimized_path, load_external_data=False).graph) if saved else None
    if optimized is not None:
        optimized = align_names(optimized, [(t.name, t.op_type) for t in traces.values()])
        mapping = map_runtime_nodes(source, optimized)
    else:
        mapping = {name: [name] for name in traces if name in source.by_name}

    times = {n: _trimmed_mean(t.per_run_us) for n, t in traces.items()}
    total = sum(times.values()) or 1.0
    rows: list[NodeTime] = []
    cum = 0.0
    for name in sorted(traces, key=lambda n: -times[n]):
        t = traces[name]
        covered = tuple(mapping.get(name, ()))
        cum += times[name] / total
        rows.append(NodeTime(name=name, op_type=t.op_type, provider=t.provider, source_nodes=covered,
                             source_ops=tuple(source_ops(source, covered)), time_us=times[name],
                             median_us=float(np.median(t.per_run_us)) if t.per_run_us else 0.0,
                             share=times[name] / total, cum_share=min(cum, 1.0)))
    ran = {n for row in rows for n in row.source_nodes}
    eliminated = [(n.name, n.op_type) for n in source.nodes if n.name not in ran]
    return ModelProfile(
        model=where, device=runtime.device().name, opt_level=opt_level, threads=threads,
        input_shapes={k: list(v[0]) for k, v in shapes.items()}, latency=latency, nodes=rows, profiled_runs=runs,
        source_node_count=len(source.nodes), eliminated=eliminated,
        versions={"onnxruntime": getattr(ort, "__version__", "?"), "onnx": onnx.__version__,
                  "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
                  "provider": PROVIDERS[runtime.provider], "node_timing": node_timing},
        clock=protocol.clock,
    )


def _profile_runs(latency_ms: float, node_count: int) -> int:
    """Enough profiled runs for stable medians, bounded in time (~1 s) and in trace size."""
    by_time = int(1000.0 / max(latency_ms, 1e-3))
    by_size = max(10, 50_000 // max(node_count, 1))
    return int(min(max(by_time, 10), 200, by_size))


def _trimmed_mean(values: Sequence[float], cut: float = 0.1) -> float:
    """Mean of the values between the `cut` and 1 - `cut` quantiles."""
    if not values:
        return 0.0
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(x) * cut)
    return float(x[k: len(x) - k].mean()) if len(x) > 2 * k else float(x.mean())


def _load_model(onnx: Any, path: Path) -> Any:
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an .onnx file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)}); "
                         "re-export it or check the file") from exc
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes); re-export it or check the file")
    try:
        onnx.checker.check_model(model if model.ByteSize() < 2_000_000_000 else str(path))
    except Exception as exc:
        raise ModelError(f"{path}: invalid ONNX model ({_first_line(exc)})") from exc
    return model


def _create_session(ort: Any, model: bytes | str | os.PathLike, options: Any, where: str,
                    providers: Sequence[Any] | None = None) -> Any:
    providers = list(providers or [PROVIDER])
    failure: str | None = None
    try:
        session = ort.InferenceSession(model if isinstance(model, (bytes, bytearray)) else str(model), options,
                                       providers=providers)
    except Exception as exc:
        if not isinstance(model, (bytes, bytearray)) and not Path(model).exists():
            raise ModelError(f"{where}: no such file") from exc
        if not is_out_of_memory(exc):
            raise ModelError(f"{where}: onnxruntime cannot load this model ({_first_line(exc)})") from exc
        failure = _first_line(exc)
    if failure is not None:  # outside the handler, so the failed session's memory can go
        _raise_out_of_memory(failure, where)
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if wanted == CUDA_PROVIDER and CUDA_PROVIDER not in session.get_providers():  # ONNX Runtime fell back silently
        problem = cuda_provider_problem(installed_distributions(), list(ort.get_available_providers()),
                                        getattr(ort, "__version__", "?"))
        raise RuntimeUnavailableError(problem or f"--provider cuda: onnxruntime could not load {CUDA_PROVIDER} "
                                                 "(CUDA or cuDNN libraries missing); see docs/gpu.md")
    return session


def _raise_out_of_memory(text: str, where: str) -> None:
    """Raise `OutOfDeviceMemoryError` after freeing what can be (call it outside the except block)."""
    gc.collect()
    raise OutOfDeviceMemoryError(f"{where}: out of memory ({text}); a smaller batch may fit")


def _bind(ort: Any, session: Any, shapes: Mapping[str, tuple[tuple[int, ...], Any]], where: str,
          device: tuple[str, int] | None = None) -> Binding:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, (shape, dtype) in shapes.items():
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.uniform(-1, 1, size=shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    failure = ""
    try:
        return Binding(ort, session, feeds, device)
    except Exception as exc:
        if not is_out_of_memory(exc):
            listing = ", ".join(f"{k} {'x'.join(map(str, v[0]))}" for k, v in shapes.items())
            raise ModelError(f"{where}: onnxruntime failed to run it on inputs {listing} ({_first_line(exc)})") from exc
        failure = _first_line(exc)
    _raise_out_of_memory(failure, where)
    raise AssertionError("unreachable")


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def _input_shapes(declared: Sequence[tuple[str, list, Any]], given: Sequence[int] | Mapping[str, Sequence[int]] | None,
                  where: str) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (concrete shape, numpy dtype), filling dynamic dimensions from `given`."""
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    dynamic = [name for name, dims, _ in declared if any(not isinstance(d, int) or d <= 0 for d in dims)]
    if given is not None and not isinstance(given, Mapping):
        if len(declared) == 1:
            given = {declared[0][0]: given}
        elif len(dynamic) == 1:
            given = {dynamic[0]: given}
        else:
            raise ModelError(f"{where}: {len(declared)} inputs ({', '.join(n for n, _, _ in declared)}); "
                             "one --input-shape cannot say which it is for")
    given = dict(given or {})
    for name, dims, typ in declared:
        dtype = _ORT_TYPES.get(typ, typ) if isinstance(typ, str) else typ
        if dtype is None or isinstance(dtype, str):
            raise ModelError(f"{where}: input {name!r} has type {typ}, which hwlat cannot feed; "
                             "only tensor inputs are supported")
        shown = "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else str(d or "?") for d in dims) + "]"
        if name in given:
            shape = tuple(int(s) for s in given[name])
            if len(shape) != len(dims):
                raise ModelError(f"{where}: input {name!r} has rank {len(dims)} {shown}; --input-shape "
                                 f"{'x'.join(map(str, shape))} has rank {len(shape)}")
            for d, s in zip(dims, shape):
                if isinstance(d, int) and d > 0 and d != s:
                    raise ModelError(f"{where}: input {name!r} is {shown}; --input-shape {'x'.join(map(str, shape))} "
                                     "disagrees with its fixed dimensions")
            if any(s <= 0 for s in shape):
                raise ModelError(f"{where}: --input-shape {'x'.join(map(str, shape))} has a non-positive dimension")
        elif name in dynamic:
            example = "x".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in dims)
            raise ModelError(f"{where}: input {name!r} has a dynamic shape {shown}; give a concrete one with "
                             f"--input-shape, e.g. --input-shape {example}")
        else:
            shape = tuple(int(d) for d in dims)
        out[name] = (shape, np.dtype(dtype))
    unknown = set(given) - {n for n, _, _ in declared}
    if unknown:
        raise ModelError(f"{where}: no input named {sorted(unknown)}; inputs: {', '.join(n for n, _, _ in declared)}")
    return out


def _proto_dims(type_proto: Any) -> list:
    if not type_proto.HasField("tensor_type"):
        return []
    dims = []
    for d in type_proto.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def _proto_type(onnx: Any, type_proto: Any) -> Any:
    if not type_proto.HasField("tensor_type"):
        return str(type_proto.WhichOneof("value"))
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)
    except Exception:
        return f"element type {type_proto.tensor_type.elem_type}"


def _input_order(model: Any) -> Callable[[str], int]:
    order = {vi.name: i for i, vi in enumerate(model.graph.input)}
    return lambda name: order.get(name, len(order))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else exc.__class__.__name__
    return line[:300]
