"""ONNX Runtime on this CPU or an NVIDIA GPU as a `Runtime` plugin: single-op models, whole networks
and per-node profiles. Sessions are built in `hwlat.profilers.ort.session`, whole models timed and profiled
in `hwlat.profilers.ort.whole_model`.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np

from hwlat.device_tables.device import Device, gpu_fingerprint, gpu_hardware_name, host_fingerprint
from hwlat.device_tables.errors import OutOfDeviceMemoryError, RuntimeUnavailableError, UnsupportedOpError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.base import Option, Prepared, Runtime
from hwlat.profilers.cuda import is_out_of_memory
from hwlat.profilers.ort.install import (CUDA_PROVIDER, GPU_INSTALL_HINT, check_install, cuda_provider_problem,
                                   import_onnxruntime)
from hwlat.profilers.ort.reorders import reorder_shares
from hwlat.profilers.ort.session import (DEFAULT_OPT_LEVEL, OPT_LEVELS, PROVIDERS, Binding, execution_providers, first_line,
                                   parse_provider, session_options)
from hwlat.profilers.ort.whole_model import profile_model, time_onnx_model
from hwlat.profilers.protocol import Protocol, perf_timer

if TYPE_CHECKING:
    from hwlat.profilers.ort.model_profile import ModelProfile

# What callers import from here, `OnnxRuntime` and names that live in the sibling modules.
__all__ = ["GPU_INSTALL_HINT", "OnnxRuntime", "cuda_provider_problem", "import_onnxruntime", "profile_model",
           "time_onnx_model"]

log = logging.getLogger(__name__)


class OnnxRuntime(Runtime):
    """ONNX Runtime, fp32. Settings: ``opt_level`` (disable, basic, extended or all) and ``provider``
    (cpu, or cuda[:N]: the CUDA execution provider of onnxruntime-gpu; the GPU names the device)."""

    name = "onnxruntime"
    packages = ("onnxruntime", "onnxruntime-gpu")
    modules = ("onnxruntime",)
    @classmethod
    def device_flags(cls, device: Device) -> list[str]:
        return super().device_flags(device) + ([] if device.hardware == "cpu" else ["--provider cuda"])

    cli_options = (
        Option("--opt-level", "opt_level", "graph optimisation level (default all; another level names another device)",
               choices=OPT_LEVELS),
        Option("--provider", "provider", "execution provider: cpu (default), cuda or cuda:N (needs the onnxruntime-gpu "
                                         "package instead of onnxruntime; docs/tutorials/profile-gpu.md)"),
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
        check_install(ort, self.provider)
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

    def _smoke_test(self) -> None:
        """Run a one-node model once: catches native libraries that import but cannot run (or a CUDA
        provider that is listed but cannot load its CUDA and cuDNN libraries)."""
        from hwlat.profilers.onnx_ops import build_onnx_bytes

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
                    f"({first}); check that `nvidia-smi` lists GPU {self.device_id} and see docs/tutorials/profile-gpu.md") from exc
            raise RuntimeUnavailableError(
                f"onnxruntime {version} cannot run a one-node model ({first}); "
                "reinstall it: pip install --force-reinstall onnxruntime") from exc
        if self.provider == "cuda":
            if CUDA_PROVIDER not in sess.get_providers():
                raise RuntimeUnavailableError(
                    f"--provider cuda: onnxruntime {version} lists {CUDA_PROVIDER} but could not load it (its CUDA or "
                    "cuDNN libraries are missing or of another major version than it was built for; ONNX Runtime's "
                    "log above names the library); install them, e.g. pip install 'onnxruntime-gpu[cuda,cudnn]', "
                    "see docs/tutorials/profile-gpu.md")
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
        from hwlat.profilers.onnx_ops import build_onnx_bytes, input_names
        from hwlat.profilers.weights import make_inputs

        if spec.dtype != "float32":
            raise UnsupportedOpError(f"{spec.key}: onnxruntime runs fp32 here; int8 ops need --runtime litert or tflm")
        model = build_onnx_bytes(spec)
        failure: str | None = None
        try:
            session = self.ort.InferenceSession(model, self.options(), providers=self.providers())
            bound = Binding(self.ort, session, dict(zip(input_names(spec), make_inputs(spec))), self.placement)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise UnsupportedOpError(f"{spec.key}: onnxruntime cannot run it ({first_line(exc)})") from exc
            failure = first_line(exc)
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
                      profile_runs: int | None = None) -> ModelProfile:
        self.check_protocol(protocol)
        return profile_model(path, input_shape=input_shape, protocol=protocol, profile_runs=profile_runs, runtime=self)

    def count_kernels(self, spec: OpSpec) -> int | None:
        """Compute nodes of the optimised graph of the single-op model (layout moves excluded)."""
        from hwlat.profilers.onnx_ops import build_onnx_bytes

        return self.count_compute_nodes(build_onnx_bytes(spec), spec)

    def count_network_kernels(self, spec: OpSpec) -> int | None:
        """Kernels it runs for the pattern *inside a network*: between a 1x1 conv that feeds it (and its
        residual) and one that reads it, as in a CNN. There its optimiser fuses more than in a lone
        single-op model (on x86 its NCHWc layout lets a conv absorb a residual add and activations such
        as HardSwish). Context and layout nodes are not counted."""
        from hwlat.profilers.fusion import context_probe

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



def _torch_gpu_name(device_id: int) -> dict[str, Any]:
    """GPU facts from PyTorch when nvidia-smi gave none (only if torch is installed with CUDA)."""
    try:
        import torch

        from hwlat.profilers.cuda import torch_gpu_facts

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
