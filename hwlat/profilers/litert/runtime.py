"""LiteRT runtime: single-op `.tflite` models built by hwlat (`hwlat.profilers.tflite.builder`), timed
around `Interpreter.invoke()`, fp32 or full-integer int8, XNNPACK delegate on or off."""

from __future__ import annotations

import importlib
import logging
import sys
from importlib import metadata
from types import ModuleType
from typing import Any, Sequence

from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.base import Option, Prepared, Runtime, captured_stderr
from hwlat.profilers.protocol import Protocol, measure, perf_timer

log = logging.getLogger(__name__)

# (module, distribution): the maintained LiteRT package first, its predecessor as a fallback.
INTERPRETER_MODULES = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"))
PRECISIONS = ("fp32", "int8")
INSTALL_HINT = "pip install ai-edge-litert (or, where no wheel exists, tflite-runtime)"


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise RuntimeUnavailableError(f"litert setting {name}={value!r} is not on/off")


class LiteRTRuntime(Runtime):
    """LiteRT (TFLite) interpreter on this CPU.

    Settings: ``threads`` (the interpreter's num_threads, also XNNPACK's thread pool),
    ``precision`` ``fp32`` or ``int8``, ``xnnpack`` (default on: LiteRT applies its default XNNPACK
    delegate; off: builtin kernels only, via ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
    `xnnpack` is part of the device name, e.g. ``cpu/litert/int8/threads=1/xnnpack=off``.
    """

    name = "litert"
    packages = ("ai-edge-litert", "tflite-runtime")
    modules = tuple(m.split(".")[0] for m, _ in INTERPRETER_MODULES)
    network_dtypes = ("float32", "int8")
    cli_options = (Option("--xnnpack", "xnnpack", "XNNPACK delegate on (default) or off; off names another device",
                          choices=("on", "off"), values={"on": True, "off": False}),)

    def __init__(self, threads: int = 1, precision: str = "fp32", xnnpack: Any = True, **settings: Any):
        if precision not in PRECISIONS:
            raise RuntimeUnavailableError(f"litert runs precision {' or '.join(PRECISIONS)}, not {precision!r}")
        self.xnnpack = _flag(xnnpack, "xnnpack")
        self._module: ModuleType | None = None
        self._distribution = ""
        super().__init__(threads=threads, precision=precision, **settings)

    @classmethod
    def default_targets_at(cls, precision: str) -> tuple[str, ...]:
        """At int8 the CNNs only: no full-integer lowering of LayerNorm or Softmax, so ViTs and transformers
        do not run (the shipped int8 tables were made for these targets)."""
        from hwlat.nas.pool import CLASSIC, cnn_spaces

        return (*cnn_spaces(), CLASSIC) if precision == "int8" else super().default_targets_at(precision)

    # ---- availability and facts ------------------------------------------------------------------
    def check_available(self) -> None:
        errors = []
        for module, dist in INTERPRETER_MODULES:
            try:
                self._module = importlib.import_module(module)
                self._distribution = dist
                break
            except ImportError as exc:
                errors.append(f"{module}: {exc}")
        else:
            raise RuntimeUnavailableError(f"runtime 'litert' needs the LiteRT interpreter ({'; '.join(errors)}); {INSTALL_HINT}")
        if not self.xnnpack and getattr(self._module, "OpResolverType", None) is None:
            raise RuntimeUnavailableError(
                f"{self._distribution} {self._version()} cannot switch XNNPACK off (no OpResolverType); "
                f"upgrade it ({INSTALL_HINT}) or run with xnnpack on")

    def _version(self) -> str:
        try:
            return metadata.version(self._distribution)
        except metadata.PackageNotFoundError:
            return "unknown"

    def runtime_settings(self) -> dict[str, Any]:
        return {"xnnpack": self.xnnpack}

    def versions(self) -> dict[str, Any]:
        return {
            "litert_package": self._distribution,
            "litert_version": self._version(),
            "litert_op_resolver": "BUILTIN (default XNNPACK delegate)" if self.xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
        }

    # ---- building and timing --------------------------------------------------------------------
    def interpreter(self, content: bytes) -> Any:
        """A LiteRT interpreter over model bytes with this runtime's threads and delegate setting."""
        assert self._module is not None
        kwargs: dict[str, Any] = {"model_content": content, "num_threads": self.threads}
        if not self.xnnpack:
            kwargs["experimental_op_resolver_type"] = self._module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        return self._module.Interpreter(**kwargs)

    def prepare(self, spec: OpSpec) -> Prepared:
        from hwlat.profilers.tflite.builder import build_model

        if spec.dtype != self.dtype():
            raise UnsupportedOpError(f"{spec.key}: this litert runtime runs {self.dtype()} ops (precision {self.precision}); "
                                     f"use --precision {'int8' if spec.dtype == 'int8' else 'fp32'} for it")
        model = build_model(spec)
        try:
            interp = self.interpreter(model.content)
            allocate(interp)
            for detail, x in zip(interp.get_input_details(), model.inputs):
                interp.set_tensor(detail["index"], x)
            interp.invoke()  # fail here, not inside the timing loop
        except (RuntimeError, ValueError) as exc:
            raise UnsupportedOpError(f"{spec.key}: LiteRT cannot run {model.op_names}: {str(exc).strip().splitlines()[0]}") from exc
        ops = [d.get("op_name", "") for d in _ops_details(interp)]
        extra = {
            "model_bytes": len(model.content),
            "tflite_ops": model.op_names,
            "xnnpack_delegated": "DELEGATE" in ops,
        }
        state = {"interp": interp, "model": model}

        def close() -> None:
            state.clear()

        return Prepared(perf_timer(interp.invoke), extra, close)


    # ---- whole networks and the kernels it runs ---------------------------------------------
    def time_network(self, model: bytes, protocol: Protocol, input_shape: Sequence[int] | None = None) -> Measurement:
        """`Interpreter.invoke()` on the network lowered to `.tflite` (`hwlat.profilers.litert.network`; fp32,
        or full-integer int8 at precision int8) with deterministic inputs."""
        from hwlat.device_tables.graph import Graph
        from hwlat.profilers.litert.network import network_model

        content, inputs = network_model(Graph.from_onnx(model, input_shape), int8=self.dtype() == "int8")
        interp = self.interpreter(content)
        try:
            allocate(interp)
            for d, x in zip(interp.get_input_details(), inputs):
                interp.set_tensor(d["index"], x)
            interp.invoke()
        except (RuntimeError, ValueError) as exc:
            raise UnsupportedOpError(f"LiteRT cannot run the network: {str(exc).strip().splitlines()[0]}") from exc
        return measure(perf_timer(interp.invoke), protocol)

    def count_kernels(self, spec: OpSpec) -> int | None:
        """Operators of the single-op `.tflite` model the builder writes (paddings excluded)."""
        from hwlat.profilers.tflite.builder import build_graph

        try:
            return sum(1 for op in build_graph(spec).ops if op.kind not in ("PAD", "PADV2"))
        except UnsupportedOpError:
            return None


def _ops_details(interp: Any) -> list[dict[str, Any]]:
    """The interpreter's nodes after delegation (a DELEGATE node means XNNPACK took ops)."""
    getter = getattr(interp, "_get_ops_details", None)
    try:
        return list(getter()) if getter else []
    except (RuntimeError, ValueError):
        return []


# What LiteRT prints to fd 2 once a process, at the first XNNPACK allocation: not news to a user.
DELEGATE_BANNER = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_banner_seen = False


def allocate(interp: Any) -> None:
    """`interp.allocate_tensors()`; the first in a process with fd 2 captured, so that LiteRT's
    `DELEGATE_BANNER` does not land among hwlat's own lines (anything else it wrote is passed on)."""
    global _banner_seen
    if _banner_seen:
        interp.allocate_tensors()
        return
    said: list[str] = []
    try:
        with captured_stderr() as said:
            interp.allocate_tensors()
    finally:
        _banner_seen = True
        rest = [line for line in "".join(said).splitlines() if line.strip() != DELEGATE_BANNER]
        if rest:
            print("\n".join(rest), file=sys.stderr)
