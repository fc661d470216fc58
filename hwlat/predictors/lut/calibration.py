"""The lookup-table predictor's whole-model correction (`Calibration`) and its fit on a few
measured networks: one scale, per-kernel cost and constant, or from `BY_TYPE_MIN_MODELS` networks
on, a scale and a per-kernel cost per kernel type with a cost of weights beyond a cached size,
ridge penalties and cached size chosen by cross-validation."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from hwlat.predictors.lut.prediction import KernelPrediction

log = logging.getLogger(__package__)  # the package's name, which its messages have always carried

# Below this many whole-model measurements the calibration fits one scale, one per-kernel cost and a
# constant; from it on, a scale and a per-kernel cost per kernel type (ridge towards 1 and 0).
BY_TYPE_MIN_MODELS = 8
# Ridge penalties of the per-type fit, in the units of its relative-error least squares: a scale
# moving 1.0 away from 1 costs as much as a 100% error on one model; a per-kernel cost is in µs and
# the constant in ms (unpenalised, the constant traded off against per-kernel costs and reached
# +0.2-0.6 ms on 14-21 LiteRT calibration models, ruining small networks); the weights' cost in ms
# per MB. Their strength (a factor on all of them) and the weights a cache holds across runs
# (`CACHED_WEIGHTS_MB`, up to the measured cache where the fusion rules carry it) are chosen per
# table by cross-validation on its calibration models, from CV_MIN_MODELS models on.
RIDGE_SCALE, RIDGE_PER_KERNEL_US, RIDGE_CONSTANT_MS, RIDGE_WEIGHT_MB = 1.0, 1e-3, 10.0, 1e-3
# Smallest scale a kernel type may take in a per-type calibration (`_by_type_fit`): a kernel costs
# nothing at least (a type the runtime hides entirely), never less.
MIN_TYPE_SCALE = 0.0
RIDGE_STRENGTHS = (1.0, 0.1, 0.01)
CACHED_WEIGHTS_MB = (0.0, 4.0, 8.0, 16.0, 32.0)
CV_MIN_MODELS, CV_FOLDS = 16, 5


def kernel_type(op: str) -> str:
    """A kernel's type for calibration: its first op (``conv2d+bn+relu`` -> ``conv2d``)."""
    return op.split("+", 1)[0]


@dataclass(frozen=True)
class Calibration:
    """Whole-model correction of the kernel sum.

    ``total = sum over kernels of (scale_t * ms + per_kernel_t) + constant_ms``, where ``t`` is the
    kernel's type (`kernel_type`) with its own ``by_type[t] = (scale, per_kernel_ms)``, and types
    missing from ``by_type`` use ``scale`` and ``per_kernel_ms``. Single-op timings miss how a kernel
    behaves inside a network (caches, layouts, the runtime fusing or skipping more than alone), and
    that differs between kernel types: in the benchmark, per-type terms lift ±10% accuracy by 5-10 points.
    Each kernel also pays ``per_weight_mb_ms`` per MB of its weights, in the share of the network's
    weights beyond ``cached_weights_mb``: a single-op timing repeats one op, whose weights then sit in
    the cache, while a network whose weights outgrow the cache reads each layer's from memory (on this
    machine's onnxruntime, an OFA network's classifier runs 3x its row). With ``counts_activations``
    the activation memory the runtime's planner spreads beyond a compact plan (`Runtime.same_shape_planner`)
    takes its part of that cache first: onnxruntime's MobileNetV2 x0.5, 7.8 MB of weights, runs its
    classifier at 4.7x its row, LiteRT's at 1.6x.
    """

    scale: float = 1.0
    per_kernel_ms: float = 0.0
    constant_ms: float = 0.0
    n_models: int = 0
    mape_before: float | None = None
    mape_after: float | None = None
    by_type: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_weight_mb_ms: float = 0.0
    cached_weights_mb: float = 0.0
    ridge: float | None = None  # the penalties' strength the fit used (chosen by cross-validation)
    counts_activations: bool = False  # the cache holds a network's excess activation memory too
    set_aside: str = field(default="", compare=False)  # why the table's own calibration is not used (fitted on another statistic); not stored

    def terms(self, op: str) -> tuple[float, float]:
        """(scale, per-kernel ms) of a kernel of op `op`."""
        return self.by_type.get(kernel_type(op), (self.scale, self.per_kernel_ms))

    def weights_ms_per_mb(self, network_weights_mb: float, activation_mb: float = 0.0) -> float:
        """What a kernel pays per MB of its weights in a network holding `network_weights_mb` in all
        and spreading `activation_mb` beyond a compact plan (counted with ``counts_activations``)."""
        act = activation_mb if self.counts_activations else 0.0
        return _uncached_share(network_weights_mb, self.cached_weights_mb, act) * self.per_weight_mb_ms

    def describe(self) -> str:
        """One line: the terms and the calibration models' MAPE before and after."""
        if self.n_models == 0 and not self.by_type:
            if self.set_aside:
                return f"not used ({self.set_aside}; the kernel sum as it is)"
            return "none (the kernel sum as it is; calibrate on whole-model measurements: LUTPredictor.calibrate)"
        if self.by_type:
            scales = sorted(s for s, _ in self.by_type.values())
            terms = (f"{len(self.by_type)} kernel types, scales {scales[0]:.2f}..{scales[-1]:.2f}, "
                     f"constant {self.constant_ms:+.3f} ms, weights {self.per_weight_mb_ms * 1e3:.1f} us/MB "
                     f"beyond {self.cached_weights_mb:g} MB"
                     + (" minus spread activations" if self.counts_activations else "")
                     + (f", ridge x{self.ridge:g}" if self.ridge is not None else ""))
        else:
            terms = f"scale {self.scale:.3f}, per kernel {self.per_kernel_ms * 1e3:+.2f} us, constant {self.constant_ms:+.3f} ms"
        if self.mape_before is None or self.mape_after is None:
            return terms
        return f"{terms}; MAPE on {self.n_models} networks {self.mape_before:.1%} -> {self.mape_after:.1%}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["set_aside"]
        d["by_type"] = {t: [float(s), float(k)] for t, (s, k) in sorted(self.by_type.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Calibration":
        if not d:
            return cls()
        kw = {k: d[k] for k in ("scale", "per_kernel_ms", "constant_ms", "n_models", "mape_before", "mape_after",
                                "per_weight_mb_ms", "cached_weights_mb", "ridge", "counts_activations") if k in d}
        by_type = {str(t): (float(v[0]), float(v[1])) for t, v in (d.get("by_type") or {}).items()}
        return cls(**kw, by_type=by_type)



def fit_calibration(found: Sequence[Sequence[KernelPrediction]], measured_ms: Sequence[float],
                    activation_mb: np.ndarray, by_type: bool | None, measured_cache_mb: float | None,
                    counts_activations: bool) -> Calibration:
    """The `Calibration` of networks whose kernels priced as `found` were measured at `measured_ms`,
    with the MB of activations each spreads beyond a compact plan (`activation_mb`). Least squares on
    the relative error: one model fits a scale; two or three a scale and a non-negative per-kernel
    cost; four or more those and a constant. With `by_type` (the default from `BY_TYPE_MIN_MODELS`
    models on) a scale and a per-kernel cost per kernel type and a constant, pulled towards 1, 0 and 0
    by ridge penalties (types the models lack keep 1 and 0), and a non-negative cost per MB of weights
    beyond a cached size (at most `measured_cache_mb`, the cache holding `activation_mb` first when
    `counts_activations`)."""
    y = np.asarray(measured_ms, dtype=np.float64)
    S = np.asarray([math.fsum(k.ms for k in f) for f in found])
    if by_type is None:
        by_type = len(y) >= BY_TYPE_MIN_MODELS
    if by_type:
        fit = _by_type_fit(found, y, *_choose_penalties(found, y, activation_mb, measured_cache_mb), activation_mb)
        fitted = fit["fitted"]
        terms = {**fit["terms"], "counts_activations": counts_activations}
    else:
        fitted, terms = _global_terms(S, np.asarray([len(f) for f in found], float), y)
    return Calibration(**terms, n_models=len(y), mape_before=float(np.mean(np.abs(S - y) / y)),
                       mape_after=float(np.mean(np.abs(fitted - y) / y)))


def _uncached_share(network_mb: float, cached_mb: float, activation_mb: float = 0.0) -> float:
    """The share of a network's weights a cache of `cached_mb`, holding `activation_mb` of its
    activations first, does not hold across runs."""
    if network_mb <= 0:
        return 0.0
    return min(max(network_mb + activation_mb - cached_mb, 0.0), network_mb) / network_mb


def _design(found: Sequence[Sequence[KernelPrediction]], types: Sequence[str], cached_mb: float,
            activation_mb: Sequence[float]) -> np.ndarray:
    """Columns: each type's summed ms, its kernel count (µs units), the uncached weights' MB (with
    each network's `activation_mb` in the cache first), a constant, and the summed ms of types the
    fit never saw (they keep scale 1, no per-kernel cost)."""
    n = len(types)
    col = {t: i for i, t in enumerate(types)}
    A = np.zeros((len(found), 2 * n + 3))
    A[:, 2 * n + 1] = 1.0
    for i, f in enumerate(found):
        mb = math.fsum(k.weight_mb for k in f)
        A[i, 2 * n] = mb * _uncached_share(mb, cached_mb, activation_mb[i])
        for k in f:
            j = col.get(kernel_type(k.op))
            if j is None:
                A[i, 2 * n + 2] += k.ms
                continue
            A[i, j] += k.ms
            A[i, n + j] += 1e-3  # per-kernel coefficients in µs
    return A


def _by_type_fit(found: Sequence[Sequence[KernelPrediction]], y: np.ndarray, ridge: float,
                 cached_mb: float, activation_mb: np.ndarray) -> dict[str, Any]:
    """The per-type fit, ridge on relative error: each type's scale towards 1 and per-kernel cost
    towards 0, the cost per MB of weights beyond `cached_mb` (never negative) and the constant
    towards 0; `ridge` multiplies every penalty. Its kernel types, coefficients, `Calibration`
    terms and fitted totals."""
    types = sorted({kernel_type(k.op) for f in found for k in f})
    n = len(types)
    A = _design(found, types, cached_mb, activation_mb)  # [scales | per-kernel | weights | constant | unseen types' ms]
    prior = np.concatenate([np.ones(n), np.zeros(n), [0.0, 0.0, 1.0]])
    penalty = ridge * np.concatenate([np.full(n, RIDGE_SCALE), np.full(n, RIDGE_PER_KERNEL_US),
                                      [RIDGE_WEIGHT_MB, RIDGE_CONSTANT_MS, 1e12]])
    Aw = A / y[:, None]

    def solve() -> np.ndarray:
        # The departure from the prior: (Aw'Aw + diag(penalty)) d = Aw'(1 - Aw prior).
        d = np.linalg.solve(Aw.T @ Aw + np.diag(penalty) + 1e-12 * np.eye(A.shape[1]), Aw.T @ (1.0 - Aw @ prior))
        return prior + d

    coef = solve()
    if coef[2 * n] < 0:  # reading weights from memory cannot make a network faster: no weights' cost then
        penalty[2 * n] = 1e12
        coef = solve()
        coef[2 * n] = 0.0
    if np.any(coef[:n] < MIN_TYPE_SCALE):
        # A type priced below nothing (a few networks and a table of few rows, whose kernels are mostly
        # regressed far from any row, gave -0.1) is not a device's speed: the same fit with every type's
        # scale at least MIN_TYPE_SCALE (bounded least squares on the departure from the prior).
        from scipy.optimize import lsq_linear

        M = np.vstack([Aw, np.diag(np.sqrt(penalty + 1e-12))])
        rhs = np.concatenate([1.0 - Aw @ prior, np.zeros(A.shape[1])])
        lower = np.full(A.shape[1], -np.inf)
        lower[:n] = MIN_TYPE_SCALE - 1.0
        lower[2 * n] = 0.0  # nor a saving from weights
        coef = prior + lsq_linear(M, rhs, bounds=(lower, np.inf)).x
    by_type = {t: (float(coef[i]), float(coef[n + i]) * 1e-3) for i, t in enumerate(types)}
    terms = {"constant_ms": float(coef[2 * n + 1]), "by_type": by_type,
             "per_weight_mb_ms": float(coef[2 * n]), "cached_weights_mb": float(cached_mb), "ridge": float(ridge)}
    return {"types": types, "coef": coef, "terms": terms, "fitted": A @ coef}


def _choose_penalties(found: Sequence[Sequence[KernelPrediction]], y: np.ndarray, activation_mb: np.ndarray,
                      measured_cache_mb: float | None = None) -> tuple[float, float]:
    """(ridge strength, cached weights MB) by `CV_FOLDS`-fold cross-validation on the calibration
    models, with the one-standard-error rule: among the choices whose cross-validated MAPE is within
    one standard error of the best, the simplest: the strongest ridge, then the largest cached size
    (the fewest networks paying for their weights). On 32 models the best score alone is
    noise-prone: it had picked weak ridges with implausible terms (a negative cost per MB of weights)
    that cost up to 4 points of ±10% accuracy on other networks. Where the fusion rules carry the
    device's cache measured (`FusionRules.weights_cache_mb`: what a chain of layers with nothing
    else in the cache keeps), no candidate size above it is tried; a network's activations take
    part of the cache. Unbounded, 32 networks had chosen 0 to 32 MB between tables of one LiteRT
    device (measured: 8.4 MB), and 4 MB charged MobileNetV3-Small (8-10 MB of weights, running at
    its rows' speed) 20% more. (1, 0) below `CV_MIN_MODELS` models."""
    if len(y) < CV_MIN_MODELS:
        return 1.0, 0.0
    folds = np.arange(len(y)) % CV_FOLDS
    errors: dict[tuple[float, float], np.ndarray] = {}
    bound = math.inf if measured_cache_mb is None else measured_cache_mb
    for cached_mb in (c for c in CACHED_WEIGHTS_MB if c <= bound):
        for ridge in RIDGE_STRENGTHS:
            rel = np.empty(len(y))
            for f in range(CV_FOLDS):
                train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                fit = _by_type_fit([found[i] for i in train], y[train], ridge, cached_mb, activation_mb[train])
                pred = _design([found[i] for i in test], fit["types"], cached_mb, activation_mb[test]) @ fit["coef"]
                rel[test] = np.abs(pred - y[test]) / y[test]
            errors[(ridge, cached_mb)] = rel
    best = min(errors, key=lambda k: float(np.mean(errors[k])))
    limit = float(np.mean(errors[best]) + np.std(errors[best]) / math.sqrt(len(y)))
    within = [k for k in errors if float(np.mean(errors[k])) <= limit]
    return max(within)  # (ridge, cached MB): the strongest ridge, then the largest cache


def _global_terms(S: np.ndarray, K: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Fitted totals and `Calibration` terms of one scale, one per-kernel cost and a constant (as
    many of them as the models support), least squares on relative error."""
    w = 1.0 / y
    if len(y) >= 4 and np.ptp(K) > 0:
        A = np.stack([S, K, np.ones_like(S)], axis=1)
    elif len(y) >= 2 and np.ptp(K) > 0:
        A = np.stack([S, K], axis=1)
    else:
        A = S[:, None]
    coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    if len(y) < 4 and A.shape[1] == 2 and coef[1] < 0:
        # Two or three models fit both terms exactly; a negative per-kernel cost then extrapolates to
        # negative totals for networks with many more kernels than the models had: a scale alone.
        A = S[:, None]
        coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    scale = float(coef[0])
    per_k = float(coef[1]) if len(coef) > 1 else 0.0
    const = float(coef[2]) if len(coef) > 2 else 0.0
    if not (0.2 < scale < 5.0):  # a fit this far off means the table does not match the models
        log.warning("calibration scale %.3f out of range; using a scale-only fit", scale)
        scale, per_k, const = float(np.sum(S * y * w * w) / np.sum((S * w) ** 2)), 0.0, 0.0
    return scale * S + per_k * K + const, {"scale": scale, "per_kernel_ms": per_k, "constant_ms": const}
