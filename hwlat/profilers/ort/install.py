"""Importing onnxruntime and checking its install: which wheels are there, and what stops a provider."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hwlat.device_tables.device import package_versions
from hwlat.device_tables.errors import RuntimeUnavailableError

log = logging.getLogger(__name__)

PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
_ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                      "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")
INSTALL_HINT = "pip install onnxruntime"
GPU_DISTRIBUTIONS = ("onnxruntime-gpu", "ort-nightly-gpu")
GPU_INSTALL_HINT = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"


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
    return package_versions(_ORT_DISTRIBUTIONS)


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
            f"GPU build: {GPU_INSTALL_HINT} (see docs/tutorials/profile-gpu.md)")


def check_install(ort: Any, provider: str = "cpu") -> None:
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
