"""`Device`: what is measured (hardware + runtime + settings), and its fingerprint."""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

# Packages whose versions change latency numbers; recorded in every fingerprint when installed.
RUNTIME_PACKAGES = (
    "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "ai-edge-litert", "tflite-runtime",
    "tflite-micro", "scikit-learn", "ray",
)

# Environment variables that steer the runtimes' threads, kernels or allocator, recorded in every
# fingerprint where set: DNNL_MAX_CPU_ISA=SSE41 made a torch 3x3 conv 2.6x slower on a Zen 4 host while
# torch still reported its AVX-512 capability. (hwlat sets each runtime's thread counts itself.)
TIMING_ENV = re.compile(r"(OMP|GOMP|KMP|MKL|DNNL|ONEDNN|OPENBLAS)_\w+|ATEN_CPU_CAPABILITY|LD_PRELOAD|GLIBC_TUNABLES|"
                        r"CUDA_LAUNCH_BLOCKING|CUBLAS_WORKSPACE_CONFIG|NVIDIA_TF32_OVERRIDE")


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


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_quota(root: str | os.PathLike = "/sys/fs/cgroup", cgroup: str | os.PathLike = "/proc/self/cgroup") -> float | None:
    """The CPUs' worth of time this process's cgroup may use (cgroup v2 ``cpu.max``, v1 CFS quota over
    period), the tightest from its group up to the root; None where there is no quota or none is found."""
    try:
        lines = Path(cgroup).read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if controllers and "cpu" not in controllers.split(","):
            continue
        v1 = Path(root) / controllers if (Path(root) / controllers).is_dir() else Path(root) / "cpu"
        parts = [p for p in group.split("/") if p]
        for depth in range(len(parts), -1, -1):  # up to the root: a container sees its own group there
            try:
                if controllers:
                    d = v1.joinpath(*parts[:depth])
                    quota, period = ((d / f"cpu.cfs_{x}_us").read_text().strip() for x in ("quota", "period"))
                else:
                    quota, period = (Path(root).joinpath(*parts[:depth]) / "cpu.max").read_text().split()
                if quota not in ("max", "-1"):
                    limits.append(int(quota) / int(period))
            except (OSError, ValueError):
                continue
    return round(min(limits), 3) if limits else None


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
    ids: dict[str, str] = {}
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
        elif key in ("cpu family", "model", "CPU implementer", "CPU part") and key not in ids:
            ids[key] = value
    # Which CPU design, beyond its marketing name ("AMD EPYC" covers Zen 2, 3 and 4 alike): x86 family
    # and model numbers, ARM implementer and part.
    if "cpu family" in ids and "model" in ids:
        info["cpu_id"] = f"family {ids['cpu family']} model {ids['model']}"
    elif "CPU part" in ids:
        info["cpu_id"] = f"implementer {ids.get('CPU implementer', '?')} part {ids['CPU part']}"
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
    """CPU model, cores (usable: affinity, and the cgroup's CPU quota), SIMD flags, OS, Python, every
    installed runtime's version and the environment variables that steer the runtimes (`TIMING_ENV`)."""
    fp: dict[str, Any] = _cpu_info()
    fp.update(
        {
            "machine": platform.machine(),
            "logical_cores": os.cpu_count(),
            "usable_cores": usable_cores(),
            "cpu_quota": cpu_quota(),
            "env": {k: v for k, v in sorted(os.environ.items()) if TIMING_ENV.fullmatch(k)},
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


def cpu_differences(theirs: Mapping[str, Any], ours: Mapping[str, Any], by_clock: bool = True) -> list[str]:
    """How the CPU of fingerprint `ours` differs from that of `theirs`: model, design (family and
    model numbers) and SIMD flags (a key `theirs` lacks is not compared). With `by_clock`,
    fingerprints made before the design was recorded are told apart by their clock instead (more than
    3% apart), which on the cloud machines that measured the shipped tables is fixed per CPU design
    (elsewhere it moves with frequency scaling, so nothing is refused by it)."""
    out = []
    if by_clock and "cpu_id" not in theirs and theirs.get("cpu_mhz") and ours.get("cpu_mhz"):
        a, b = float(theirs["cpu_mhz"]), float(ours["cpu_mhz"])
        if abs(a - b) > 0.03 * a:
            out.append(f"CPU clock {a:.0f} MHz -> {b:.0f} MHz")
    for key in ("cpu_model", "cpu_id", "flags"):
        a, b = theirs.get(key), ours.get(key)
        if a is not None and a != b:
            if key == "flags":
                gone, new = sorted(set(a) - set(b or ())), sorted(set(b or ()) - set(a))
                out.append("SIMD flags " + ", ".join([f"-{f}" for f in gone] + [f"+{f}" for f in new]))
            else:
                out.append(f"CPU {a!r} -> {b!r}")
    return out


# What of a fingerprint besides the CPU changes a runtime's numbers on one machine: the runtime's facts
# (its version, session options, threads), the cores it may use, and the environment that steers it.
SETUP_KEYS = ("runtime", "usable_cores", "cpu_quota", "env")


def setup_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """How the setup (`SETUP_KEYS`) of fingerprint `after` differs from `before`, entry by entry:
    ``runtime.onnxruntime '1.31.0' -> '1.32.0'``, ``env.OMP_WAIT_POLICY unset -> 'PASSIVE'``. A key
    `before` lacks (recorded by an older hwlat) is not compared, nor a fingerprint that is not an object."""
    if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
        return []
    out = []
    for key in SETUP_KEYS:
        if key not in before:
            continue
        a, b = before[key], after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            shown = lambda d, k: repr(d[k]) if k in d else "unset"  # noqa: E731
            out += [f"{key}.{k} {shown(a, k)} -> {shown(b, k)}" for k in sorted({*a, *b})
                    if (k in a, a.get(k)) != (k in b, b.get(k))]
        elif a != b:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


def host_differences(table_fingerprint: Mapping[str, Any], packages: Sequence[str] = ()) -> list[str]:
    """What of this host differs from a CPU table's fingerprint: the CPU model, its SIMD flags, and
    the versions of `packages` (the runtime's). Each as ``what: table's -> this host's``."""
    out = cpu_differences(table_fingerprint, _cpu_info())
    versions = package_versions(tuple(packages))
    for name in packages:
        theirs = (table_fingerprint.get("packages") or {}).get(name)
        if theirs and versions.get(name) != theirs:
            out.append(f"{name} {theirs} -> {versions.get(name, 'not installed')}")
    return out


# ---- GPUs ----------------------------------------------------------------------------------------
# nvidia-smi --query-gpu fields -> fingerprint keys. The first group exists on every driver hwlat
# meets; the rest are asked for too and dropped (with a retry) by drivers that do not know them.
NVIDIA_SMI_CORE_FIELDS = (
    ("index", "index"), ("name", "name"), ("uuid", "uuid"), ("pci.bus_id", "pci_bus_id"),
    ("memory.total", "memory_total_mib"), ("driver_version", "driver_version"),
    ("clocks.sm", "clocks_sm_mhz"), ("clocks.mem", "clocks_mem_mhz"),
    ("clocks.max.sm", "clocks_max_sm_mhz"), ("clocks.max.mem", "clocks_max_mem_mhz"),
    ("power.limit", "power_limit_w"), ("pstate", "pstate"),
)
NVIDIA_SMI_EXTRA_FIELDS = (
    ("compute_cap", "compute_capability"), ("vbios_version", "vbios_version"),
    ("clocks.applications.graphics", "clocks_applications_sm_mhz"),
    ("clocks.applications.memory", "clocks_applications_mem_mhz"),
    ("persistence_mode", "persistence_mode"), ("temperature.gpu", "temperature_c"),
    ("mig.mode.current", "mig_mode"), ("ecc.mode.current", "ecc_mode"),
)
_TEXT_FIELDS = {"name", "uuid", "pci_bus_id", "driver_version", "pstate", "compute_capability", "vbios_version",
                "persistence_mode", "mig_mode", "ecc_mode"}


def gpu_hardware_name(gpu_name: str) -> str:
    """A GPU's name as the hardware part of a `Device`: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", str(gpu_name).lower()).strip("-") or "gpu"


def parse_nvidia_smi_csv(text: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` as dicts named by `keys`.

    Values nvidia-smi cannot give (``[N/A]``, ``[Not Supported]``) become None; numbers become numbers.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(keys):  # a name with a comma: keep the first field's excess in the name
            extra = len(values) - len(keys)
            if extra > 0 and "name" in keys:
                i = keys.index("name")
                values[i:i + extra + 1] = [",".join(values[i:i + extra + 1])]
            if len(values) != len(keys):
                continue
        row: dict[str, Any] = {}
        for key, value in zip(keys, values):
            if not value or value.strip("[]").lower() in ("n/a", "not supported", "unknown error", "requested functionality has been deprecated"):
                row[key] = None
            elif key in _TEXT_FIELDS:
                row[key] = value
            else:
                try:
                    number = float(value)
                    row[key] = int(number) if number.is_integer() else number
                except ValueError:
                    row[key] = value
        rows.append(row)
    return rows


def _nvidia_smi() -> str | None:
    import shutil

    for candidate in (shutil.which("nvidia-smi"), "/usr/local/nvidia/bin/nvidia-smi", "/usr/bin/nvidia-smi"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def query_nvidia_smi(timeout: float = 15.0) -> tuple[list[dict[str, Any]], str | None]:
    """Every GPU nvidia-smi lists, with the fields above; ([], why) when it is absent or fails."""
    import subprocess

    exe = _nvidia_smi()
    if exe is None:
        return [], "nvidia-smi not found"
    why = None
    for fields in (NVIDIA_SMI_CORE_FIELDS + NVIDIA_SMI_EXTRA_FIELDS, NVIDIA_SMI_CORE_FIELDS):
        query = ",".join(f for f, _ in fields)
        try:
            proc = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"nvidia-smi failed: {exc}"
        if proc.returncode == 0:
            return parse_nvidia_smi_csv(proc.stdout, tuple(k for _, k in fields)), None
        why = (proc.stderr or proc.stdout).strip().splitlines()[0] if (proc.stderr or proc.stdout).strip() else \
            f"nvidia-smi exited with {proc.returncode}"
    return [], why


def _visible_selector(index: int) -> str | None:
    """The physical GPU (index or UUID) that CUDA index `index` is, per CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    return entries[index] if index < len(entries) else None


def gpu_fingerprint(index: int = 0, uuid: str | None = None, **known: Any) -> dict[str, Any]:
    """GPU name, memory, driver, clocks, power limit and compute capability of CUDA device `index`.

    Asks nvidia-smi when it is there (matching the GPU by `uuid`, else through CUDA_VISIBLE_DEVICES,
    else by index) and merges what the runtime already knows (`known`, e.g. from torch: CUDA and
    cuDNN versions, multiprocessors), which wins where both say something.
    """
    rows, why = query_nvidia_smi()
    chosen: dict[str, Any] | None = None
    wanted = str(uuid or known.get("uuid") or "").lower().removeprefix("gpu-")
    if wanted:
        chosen = next((r for r in rows if str(r.get("uuid") or "").lower().removeprefix("gpu-") == wanted), None)
    if chosen is None and rows:
        selector = _visible_selector(index)
        if selector is not None:
            sel = selector.lower().removeprefix("gpu-")
            chosen = next((r for r in rows if str(r.get("index")) == selector
                           or str(r.get("uuid") or "").lower().removeprefix("gpu-").startswith(sel)), None)
        else:
            chosen = next((r for r in rows if r.get("index") == index), None)
    fp: dict[str, Any] = {"cuda_index": index}
    if chosen is not None:
        fp.update({("nvidia_smi_index" if k == "index" else k): v for k, v in chosen.items()})
        fp["nvidia_smi"] = "ok"
    else:
        fp["nvidia_smi"] = why or f"no GPU matching CUDA device {index} in nvidia-smi's list"
    fp.update({k: v for k, v in known.items() if v is not None})
    return fp
