"""Objectives of the reference searches (higher is better): the trained accuracy the project ships
(``accuracy:cifar10``, ``accuracy:cifar100``, ``accuracy:imagenet16-120``: NATS-Bench test
accuracy of NB201 architectures, a lookup; see `hwlat.nas.accuracy`), the user's callable, or the
training-free proxy NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML
2021: the log-determinant of the kernel of binary ReLU activation patterns of a mini-batch of
random inputs through the network at initialisation) for spaces without an accuracy table. The
proxy is NOT accuracy, and is labelled so wherever it is printed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.arch_predictors import call_with_space
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import Space

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
    # Architectures a search scores by default (`hwlat search --budget`): a score that costs work
    # (the proxy, a user's function) gets 100.
    default_budget = 100

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

    def scores_by_index(self) -> np.ndarray | None:
        """The score of every architecture of the space by its index, when scoring them all costs
        nothing (a lookup): a verified search then ranks the whole space. None otherwise."""
        return None


class CallableObjective(Objective):
    """A user function ``f(arch) -> float`` (or ``f(space, arch)``), higher is better."""

    def __init__(self, space: Space | str, fn: Callable[..., Any], label: str | None = None):
        super().__init__(space)
        self.fn = fn
        self.label = label or f"{getattr(fn, '__module__', '')}:{getattr(fn, '__name__', 'objective')}".lstrip(":")
        self.short = self.label if len(self.label) <= 32 else self.label[-32:]

    def score(self, arch: Any) -> float:
        value = call_with_space(self.fn, self.space, arch)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ObjectiveError(f"{self.label} returned {value!r} for {self.space.key(arch)}: a score must be a "
                                 "number, higher is better") from None


class AccuracyObjective(Objective):
    """Trained test accuracy (%) on `dataset`, looked up in the table the project ships."""

    # A lookup is free and a table prices ~300 NB201 archs/s, so a search scores 500: on NB201
    # CIFAR-10 under 1.023 ms by the shipped onnxruntime table, six seeds of evolution found
    # 92.24-92.36% with 100 and 92.36-92.50% with 500, 0.5 s a search.
    default_budget = 500

    def __init__(self, space: Space | str, dataset: str = "cifar10"):
        from hwlat.nas.accuracy import DATASETS, accuracy_table, dataset_name

        super().__init__(space)
        self.table = accuracy_table(self.space)
        self.dataset = dataset_name(dataset)
        what = DATASETS[self.dataset][2]
        self.label = f"{what} (%, NATS-Bench, 200 epochs)"
        self.short = f"{what.split()[0]} accuracy %"

    def score(self, arch: Any) -> float:
        return self.table.lookup(arch, self.dataset)

    def scores_by_index(self) -> np.ndarray | None:
        return self.table.values(self.dataset)


class NaswotProxy(Objective):
    """NASWOT score of an architecture (higher is better): `to_torch` network, weights re-drawn
    (Kaiming normal, seeded), batch-norm on batch statistics, `batch` random N(0,1) inputs;
    K[i, j] = number of ReLU (or GELU) units where inputs i and j agree (both active or both inactive);
    score = log det K. `threads` pins torch's intra-op threads while scoring."""

    label = PROXY_LABEL
    short = PROXY_SHORT
    is_proxy = True

    def __init__(self, space: Space | str, batch: int = 16, seed: int = 0, threads: int | None = 1):
        super().__init__(space)
        if batch < 2:
            raise ObjectiveError(f"NASWOT needs a batch of at least 2 inputs, got {batch}")
        from hwlat.profilers.torch_eager.runtime import import_torch

        try:  # now, not from deep inside the first architecture's score
            import_torch()
        except HwlatError as exc:
            raise ObjectiveError(f"the NASWOT proxy runs networks in PyTorch: {exc}") from None
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

    # GELU gates like ReLU (its sign pattern), so transformers (the vit space) get a score too.
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.ReLU, nn.GELU))]
    if not handles:
        raise ObjectiveError(f"NASWOT needs ReLU or GELU units; {space.name} networks have none: "
                             "give your own --objective 'module:function'")
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


PROXY_NAMES = ("naswot", "proxy")  # "proxy": the name before accuracy objectives existed


def default_objective(space: Space | str) -> str:
    """``accuracy:cifar10`` for a space with shipped accuracies (NB201), else ``naswot``."""
    from hwlat.nas.accuracy import has_accuracy

    return "accuracy:cifar10" if has_accuracy(space) else "naswot"


def load_objective(spec: str | Callable[..., Any] | Objective | None, space: Space | str,
                   **proxy_options: Any) -> Objective:
    """``accuracy:<dataset>`` (trained accuracy, NB201), ``naswot`` (alias ``proxy``), None (the
    space's default, `default_objective`), a callable, or ``module:function`` /
    ``path/to/file.py:function`` naming a function ``f(arch) -> float`` (higher is better).
    `proxy_options` (batch, seed, threads) go to the NASWOT proxy."""
    if isinstance(spec, Objective):
        return spec
    if spec is None:
        spec = default_objective(space)
    if isinstance(spec, str) and spec.lower() in PROXY_NAMES:
        return NaswotProxy(space, **proxy_options)
    if callable(spec):
        return CallableObjective(space, spec)
    text = str(spec)
    if text.lower().startswith("accuracy:") or text.lower() == "accuracy":
        return _accuracy_objective(text, space)
    mod_name, sep, fn_name = text.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ObjectiveError(f"--objective {text!r}: expected accuracy:<dataset>, naswot or 'module:function' "
                             "(or 'file.py:function')")
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
        here = Path(*mod_name.split(".")).with_suffix(".py")  # `hwlat` imports from its install, not from this folder
        hint = f"; for the file {here} here, give --objective {here}:{fn_name}" if here.is_file() else ""
        raise ObjectiveError(f"--objective {text!r}: cannot import {mod_name!r} ({exc}){hint}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ObjectiveError(f"--objective {text!r}: {mod_name} has no function {fn_name!r}")
    return CallableObjective(space, fn, label=text)


def _accuracy_objective(text: str, space: Space | str) -> AccuracyObjective:
    """``accuracy:<dataset>`` with errors that say what exists and what to use instead."""
    from hwlat.nas.accuracy import DATASETS, AccuracyError, dataset_name, has_accuracy

    name = space if isinstance(space, str) else space.name
    choices = ", ".join(f"accuracy:{d}" for d in DATASETS)
    if not has_accuracy(space):
        raise ObjectiveError(f"--objective {text!r}: no trained accuracies ship for the {name} space (only NB201's); "
                             "use --objective naswot (a training-free proxy, not accuracy) or your own "
                             "'module:function'")
    try:
        dataset = dataset_name(text.partition(":")[2].strip())
    except AccuracyError:
        raise ObjectiveError(f"--objective {text!r}: choose {choices}") from None
    try:
        return AccuracyObjective(space, dataset)
    except AccuracyError as exc:
        raise ObjectiveError(f"--objective {text!r}: {exc}") from None
