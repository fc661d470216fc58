"""Objectives of the reference searches: the user's callable (arch -> score, higher is better), or
the built-in training-free proxy, NASWOT (Mellor et al., "Neural Architecture Search without
Training", ICML 2021): the log-determinant of the kernel of binary ReLU activation patterns of a
mini-batch of random inputs through the network at initialisation. It is a PROXY, not accuracy,
and is labelled so wherever it is printed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from device_tables.errors import HwlatError
from nas.arch_predictors import call_with_space
from nas.spaces import get_space
from nas.spaces.base import Space

log = logging.getLogger(__name__)

PROXY_LABEL = "NASWOT proxy score (training-free, random inputs; NOT accuracy)"
PROXY_SHORT = "proxy score (NASWOT, not accuracy)"


class ObjectiveError(HwlatError):
    """An objective that cannot be loaded or evaluated."""


class Objective:
    """A score to maximise, cached by architecture key; `label` says what it is."""

    label = "objective"
    short = "score"
    is_proxy = False

    def __init__(self, space: Space | str):
        self.space = get_space(space) if isinstance(space, str) else space
        self._cache: dict[str, float] = {}
        self.evaluations = 0
        self.seconds = 0.0

    def score(self, arch: Any) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, arch: Any) -> float:
        import time

        arch = self.space.as_arch(arch)
        k = self.space.key(arch)
        if k not in self._cache:
            t0 = time.perf_counter()
            v = float(self.score(arch))
            self.seconds += time.perf_counter() - t0
            self.evaluations += 1
            if math.isnan(v):
                raise ObjectiveError(f"{self.label} returned NaN for {k}")
            self._cache[k] = v
        return self._cache[k]

    def seen(self, arch: Any) -> bool:
        return self.space.key(self.space.as_arch(arch)) in self._cache


class CallableObjective(Objective):
    """A user function ``f(arch) -> float`` (or ``f(space, arch)``), higher is better."""

    def __init__(self, space: Space | str, fn: Callable[..., Any], label: str | None = None):
        super().__init__(space)
        self.fn = fn
        self.label = label or f"{getattr(fn, '__module__', '')}:{getattr(fn, '__name__', 'objective')}".lstrip(":")
        self.short = self.label if len(self.label) <= 32 else self.label[-32:]

    def score(self, arch: Any) -> float:
        return float(call_with_space(self.fn, self.space, arch))


class NaswotProxy(Objective):
    """NASWOT score of an architecture (higher is better): `to_torch` network, weights re-drawn
    (Kaiming normal, seeded), batch-norm on batch statistics, `batch` random N(0,1) inputs;
    K[i, j] = number of ReLU units where inputs i and j agree (both active or both inactive);
    score = log det K. `threads` pins torch's intra-op threads while scoring."""

    label = PROXY_LABEL
    short = PROXY_SHORT
    is_proxy = True

    def __init__(self, space: Space | str, batch: int = 16, seed: int = 0, threads: int | None = 1):
        super().__init__(space)
        if batch < 2:
            raise ObjectiveError(f"NASWOT needs a batch of at least 2 inputs, got {batch}")
        self.batch = batch
        self.seed = seed
        self.threads = threads

    def score(self, arch: Any) -> float:
        import torch

        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return naswot_score(self.space, arch, self.batch, self.seed)
        finally:
            if self.threads:
                torch.set_num_threads(old)


def naswot_score(space: Space, arch: Any, batch: int = 16, seed: int = 0) -> float:
    """log det of the binary activation-pattern kernel (see `NaswotProxy`)."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    module = space.to_torch(arch)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
    module.train()  # batch statistics, as at initialisation
    n = batch
    K = torch.zeros(n, n, dtype=torch.float64)

    def hook(_m: Any, inputs: tuple, _out: Any) -> None:
        c = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        K.add_(c @ c.T + (1.0 - c) @ (1.0 - c).T)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.ReLU)]
    shape = space.input_shape(arch, n)
    x = torch.randn(shape, generator=gen)
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    # a tiny ridge keeps archs whose patterns collapse (e.g. zero cells) finite and ranked last
    sign, logdet = np.linalg.slogdet(K.numpy() + 1e-3 * np.eye(n))
    return float(logdet) if sign > 0 else float("-inf")


def load_objective(spec: str | Callable[..., Any] | Objective | None, space: Space | str,
                   **proxy_options: Any) -> Objective:
    """``proxy`` / ``naswot`` / None (the built-in proxy), a callable, or ``module:function`` /
    ``path/to/file.py:function`` naming a function ``f(arch) -> float`` (higher is better)."""
    if isinstance(spec, Objective):
        return spec
    if spec is None or (isinstance(spec, str) and spec.lower() in ("proxy", "naswot")):
        return NaswotProxy(space, **proxy_options)
    if callable(spec):
        return CallableObjective(space, spec)
    text = str(spec)
    mod_name, sep, fn_name = text.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ObjectiveError(f"--objective {text!r}: expected 'proxy' or 'module:function' (or 'file.py:function')")
    try:
        if mod_name.endswith(".py") or Path(mod_name).is_file():
            path = Path(mod_name)
            if not path.is_file():
                raise ObjectiveError(f"--objective {text!r}: no file {path}")
            s = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(s)
            assert s.loader is not None
            s.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ObjectiveError(f"--objective {text!r}: cannot import {mod_name!r} ({exc})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ObjectiveError(f"--objective {text!r}: {mod_name} has no function {fn_name!r}")
    return CallableObjective(space, fn, label=text)
