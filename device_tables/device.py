"""`Device`: what is measured (hardware + runtime + settings), and its fingerprint."""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Mapping

# Packages whose versions change latency numbers; recorded in every fingerprint when installed.
RUNTIME_PACKAGES = (
    "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "ai-edge-litert", "tflite-runtime",
    "tflite-micro", "scikit-learn", "ray",
)


@dataclass(frozen=True)
class Device:
    """A measured device: ``<hardware>/<runtime>/<precision>`` plus settings such as threads.

    Its `name` (e.g. ``cpu/onnxruntime/fp32/threads=1``) names table columns and files.
    """

    hardware: str
    runtime: str
    precision: str = "fp32"
    settings: tuple[tuple[str, Any], ...] = ()
    fingerprint: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def make(cls, hardware: str, runtime: str, precision: str = "fp32", fingerprint: Mapping | None = None, **settings: Any) -> "Device":
        return cls(hardware, runtime, precision, tuple(sorted(settings.items())), dict(fingerprint or {}))

    @property
    def name(self) -> str:
        extra = "/".join(f"{k}={_fmt(v)}" for k, v in self.settings)
        return "/".join(filter(None, [self.hardware, self.runtime, self.precision, extra]))

    @property
    def file_stem(self) -> str:
        """The name made safe for a file name: ``cpu_onnxruntime_fp32_threads1``."""
        return re.sub(r"[^A-Za-z0-9.]+", "_", self.name.replace("=", "")).strip("_")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hardware": self.hardware,
            "runtime": self.runtime,
            "precision": self.precision,
            "settings": dict(self.settings),
            "fingerprint": dict(self.fingerprint),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Device":
        return cls.make(d["hardware"], d["runtime"], d.get("precision", "fp32"), d.get("fingerprint"), **d.get("settings", {}))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def _cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(), "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and info["cpu_model"] in ("", platform.machine(), platform.processor()):
            info["cpu_model"] = value
        elif key in ("flags", "Features") and not info["flags"]:
            # Keep the flags that decide kernel choice (SIMD width, dot-product and matrix extensions).
            wanted = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx512\w*|amx\w*|asimd\w*|sve\w*|neon|dotprod|i8mm|bf16|vnni|avx_vnni)$")
            info["flags"] = sorted(flag for flag in value.split() if wanted.match(flag))
        elif key == "cpu MHz" and "cpu_mhz" not in info:
            info["cpu_mhz"] = float(value)
    return info


def package_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def host_fingerprint(**extra: Any) -> dict[str, Any]:
    """CPU model, cores, SIMD flags, OS, Python and every installed runtime's version."""
    fp: dict[str, Any] = _cpu_info()
    fp.update(
        {
            "machine": platform.machine(),
            "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}",
            "libc": " ".join(platform.libc_ver()).strip(),
            "python": sys.version.split()[0],
            "packages": package_versions(),
        }
    )
    try:
        fp["hwlat"] = metadata.version("hwlat")
    except metadata.PackageNotFoundError:
        pass
    fp.update(extra)
    return fp
