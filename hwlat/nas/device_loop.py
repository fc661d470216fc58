"""The device side of a latency-constrained search: measure architectures on a local runtime,
adapt a few-shot predictor to them, and verify searched architectures by measuring them.

    pred = adapted_predictor("nb201", shots=10)   # measures 10 archs here (onnxruntime CPU), adapts

Measurements go through `hwlat.nas.spaces.measure` (the `hwlat profile archs` path: same protocol,
same arch-table format), so a demo's or a search's measurements are ordinary arch tables.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.arch_predictors import ArchPredictor, FeaturePredictor, PredictorSpaceError, load_arch_predictor
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import Space

log = logging.getLogger(__name__)

# Fewest measured architectures a few-shot predictor is adapted from (the pretrained cards use
# 10 references + 10 random; below 5 the leave-one-out model choice has nothing to work with).
MIN_DEVICE_SAMPLES = 5


class DeviceSamplesError(HwlatError):
    """A device sample file (arch table) that cannot adapt a predictor: too few rows, no device."""


@dataclass
class Measured:
    """Measured latencies (ms, NaN where an architecture failed) of architectures, in their order."""

    archs: list[Any]
    ms: np.ndarray
    device: str
    table: Path | None
    seconds: float
    noisy: int = 0
    skipped: int = 0


def _space(space: Space | str) -> Space:
    return get_space(space) if isinstance(space, str) else space


def shot_archs(space: Space | str, n_random: int, seed: int = 0, n_reference: int | None = None) -> list[Any]:
    """The pretrained predictor's reference architectures (first `n_reference`, default all)
    followed by `n_random` distinct random ones: what to measure on a new device."""
    from hwlat.predictors import pretrained

    sp = _space(space)
    refs = [sp.parse(k) for k in pretrained.reference_keys(sp.name)]
    refs = refs[:n_reference] if n_reference is not None else refs
    seen = {sp.key(a) for a in refs}
    extra: list[Any] = []
    rng = np.random.default_rng(seed)
    while len(extra) < n_random:
        for a in sp.sample(max(2 * n_random, 8), rng):
            if sp.key(a) not in seen and len(extra) < n_random:
                seen.add(sp.key(a))
                extra.append(a)
    return refs + extra


def measure(space: Space | str, archs: Sequence[Any], out: str | Path | None = None, runtime: str = "onnxruntime",
            threads: int = 1, protocol: str = "brief", progress: bool = True, fresh: bool = False,
            precision: str | None = None) -> Measured:
    """Time architectures on a local runtime into the arch table `out` (a temporary one if None), at
    `precision` (None: the runtime's own); `fresh` removes an existing table at `out` first, else it resumes."""
    from hwlat.device_tables.archtable import ArchTable, arch_table_paths
    from hwlat.nas.spaces.measure import ArchItem, profile_archs, runtime_device
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    sp = _space(space)
    archs = [sp.as_arch(a) for a in archs]
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="hwlat-measure-")
        out = Path(tmp.name) / "archs"
    if fresh:
        for p in arch_table_paths(out):
            p.unlink(missing_ok=True)
    try:
        rt = get_runtime(runtime, threads=threads, **({"precision": precision} if precision else {}))
        device = runtime_device(rt)
        items = [ArchItem(a, sp.key_record(a)) for a in archs]
        t0 = time.perf_counter()
        res = profile_archs(sp, items, out, rt, protocol=Protocol.preset(protocol),
                            device=device, progress=progress,
                            meta={"protocol_preset": protocol, "written_by": "hwlat.nas.device_loop"})
        seconds = time.perf_counter() - t0
        lat = ArchTable.read(out, space=sp.arch_keys).latency(device.name)
        ms = np.asarray([float(lat.get(sp.key(a), np.nan)) for a in archs])
        return Measured(archs, ms, device.name, None if tmp else Path(out), seconds, res.noisy, res.skipped)
    finally:
        if tmp is not None:
            tmp.cleanup()


def adapt(predictor: Any, space: Space | str, archs: Sequence[Any], ms: Sequence[float],
          min_rows: int = MIN_DEVICE_SAMPLES) -> FeaturePredictor:
    """Adapt a few-shot feature predictor (``"pretrained"`` for the shipped one) to measured archs."""
    sp = _space(space)
    if isinstance(predictor, str) and predictor.startswith("lut:"):
        raise PredictorSpaceError(f"{predictor}: a device table is not adapted from measured architectures; give a "
                                  "few-shot predictor (pretrained or a saved transfer predictor)")
    if isinstance(predictor, (str, os.PathLike)):  # 'pretrained' or a saved predictor's path
        predictor = load_arch_predictor(predictor, sp)
    if isinstance(predictor, FeaturePredictor):
        wrapped = predictor
    elif isinstance(predictor, ArchPredictor):
        raise PredictorSpaceError(f"the {predictor.name} predictor cannot be adapted from measured architectures; "
                                  "give a few-shot predictor (pretrained or a saved transfer predictor)")
    elif hasattr(predictor, "adapt"):
        wrapped = FeaturePredictor(sp, predictor)
    else:
        raise TypeError(f"a {type(predictor).__name__} cannot be adapted to a device: give 'pretrained', the path of a "
                        "predictor saved by `hwlat adapt fit`, or a few-shot predictor (with adapt(X, y))")
    if not hasattr(wrapped.predictor, "adapt"):
        raise PredictorSpaceError(f"the {wrapped.name} predictor has no adapt(X, y); it cannot use device samples")
    ms = np.asarray(ms, dtype=float)
    ok = np.isfinite(ms) & (ms > 0)
    if ok.sum() < min_rows:
        raise DeviceSamplesError(f"only {int(ok.sum())} architectures measured successfully; adapting needs at "
                                 f"least {min_rows}")
    archs = [a for a, k in zip(archs, ok) if k]
    wrapped.predictor.adapt(wrapped.matrix(archs), ms[ok])
    return wrapped


def adapted_predictor(space: Space | str = "nb201", shots: int = 10, runtime: str = "onnxruntime", threads: int = 1,
                      protocol: str = "brief", seed: int = 0, progress: bool = True) -> FeaturePredictor:
    """The shipped predictor adapted to this machine: measures `shots` architectures (the
    pretrained references first, then random ones) on the runtime and adapts."""
    sp = _space(space)
    n_ref = min(shots, 10)
    archs = shot_archs(sp, max(shots - n_ref, 0), seed, n_reference=n_ref)
    m = measure(sp, archs, runtime=runtime, threads=threads, protocol=protocol, progress=progress)
    return adapt("pretrained", sp, m.archs, m.ms, min_rows=min(MIN_DEVICE_SAMPLES, shots))


@dataclass
class Verification:
    """Predicted vs measured latency of searched architectures, against the budget."""

    keys: list[str]
    predicted: np.ndarray
    measured: np.ndarray
    budget_ms: float | None
    device: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def subset(self, rows: Sequence[int] | range, budget_ms: float | None | str = "same") -> "Verification":
        """The verification of some of the architectures (optionally judged against another budget)."""
        rows = list(rows)
        b = self.budget_ms if budget_ms == "same" else budget_ms
        return Verification([self.keys[i] for i in rows], self.predicted[rows], self.measured[rows], b, self.device,
                            self.seconds, list(self.notes))

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.measured)

    @property
    def mape(self) -> float:
        from hwlat.predictors.metrics import mape

        return mape(self.predicted[self.ok], self.measured[self.ok]) if self.ok.any() else float("nan")

    @property
    def spearman(self) -> float:
        from hwlat.predictors.metrics import spearman

        return spearman(self.predicted[self.ok], self.measured[self.ok]) if self.ok.sum() >= 3 else float("nan")

    @property
    def violations(self) -> int:
        """Architectures whose measured latency is over the budget."""
        if self.budget_ms is None:
            return 0
        return int((self.measured[self.ok] > self.budget_ms).sum())

    def format(self) -> str:
        width = max([len(k) for k in self.keys] + [12])
        lines = [f"  {'architecture':<{width}}  {'predicted ms':>12}  {'measured ms':>11}  {'error':>7}  within budget"]
        for k, p, m in zip(self.keys, self.predicted, self.measured):
            if not math.isfinite(m):
                lines.append(f"  {k:<{width}}  {p:>12.4f}  {'failed':>11}")
                continue
            if self.budget_ms is None:
                within = "-"
            else:
                within = "yes" if m <= self.budget_ms else f"NO (+{m - self.budget_ms:.3f} ms)"
            lines.append(f"  {k:<{width}}  {p:>12.4f}  {m:>11.4f}  {(p - m) / m:>+7.1%}  {within}")
        rho = self.spearman
        over = "" if self.budget_ms is None else f"; measured over budget: {self.violations} of {int(self.ok.sum())}"
        lines.append(f"  MAPE {self.mape:.1%}; Spearman {'n/a (< 3 archs)' if not math.isfinite(rho) else f'{rho:.3f}'}"
                     f" (n={int(self.ok.sum())}){over}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        nan = lambda v: None if not math.isfinite(v) else float(v)  # noqa: E731
        return {"device": self.device, "budget_ms": self.budget_ms, "seconds": round(self.seconds, 2),
                "mape": nan(self.mape), "spearman": nan(self.spearman), "violations": self.violations,
                "archs": [{"key": k, "predicted_ms": float(p), "measured_ms": nan(float(m))}
                          for k, p, m in zip(self.keys, self.predicted, self.measured)]}


def verify(space: Space | str, archs: Sequence[Any], predicted: Sequence[float], budget_ms: float | None,
           out: str | Path | None = None, runtime: str = "onnxruntime", threads: int = 1, protocol: str = "brief",
           progress: bool = True, fresh: bool = True) -> Verification:
    """Measure searched architectures and compare with their predicted latency and the budget."""
    sp = _space(space)
    m = measure(sp, archs, out, runtime=runtime, threads=threads, protocol=protocol, progress=progress, fresh=fresh)
    return Verification([sp.key(a) for a in m.archs], np.asarray(predicted, dtype=float), m.ms, budget_ms, m.device,
                        m.seconds)
