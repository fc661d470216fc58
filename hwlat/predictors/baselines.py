"""Baselines reported beside every learned transfer predictor, each fitted on the target
device's few measurements only: a cost proxy (MACs or parameters, mapped to ms by a log-log
line), the nearest training device, and ridge regression on the architecture encoding."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from scipy import stats

from hwlat.predictors.base import NotFittedError, check_targets
from hwlat.predictors.linear import ridge_loo


class _Regressor:
    """scikit-learn style parameters and a not-fitted check for the small baselines."""

    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _check(self, attr: str) -> None:
        if not hasattr(self, attr):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")

    def save(self, path) -> None:
        from hwlat.predictors.io import save

        save(self, path)


class CostBaseline(_Regressor):
    """Latency from one cost number (MACs, parameters): ``log ms = a + b log cost`` on the shots
    (b >= 0). Its ranking is the cost's ranking; the line only maps it to milliseconds."""

    def __init__(self, cost_name: str = "macs"):
        self.cost_name = cost_name

    def fit(self, cost, y) -> "CostBaseline":
        c = np.log(np.maximum(np.asarray(cost, dtype=float).ravel(), 1e-12))
        y = check_targets(y)
        ly = np.log(y)
        if len(y) >= 2 and np.ptp(c) > 0:
            A = np.column_stack([c - c.mean(), np.ones_like(c)])
            (slope, level), *_ = np.linalg.lstsq(A, ly, rcond=None)
            slope = max(float(slope), 1e-6)  # the cost's ranking is the baseline: never reversed
            self.slope_, self.intercept_ = slope, float(level - slope * c.mean())
        else:
            self.slope_ = 1.0
            self.intercept_ = float(np.mean(ly - c)) if len(y) else 0.0
        return self

    def predict(self, cost) -> np.ndarray:
        self._check("slope_")
        c = np.log(np.maximum(np.asarray(cost, dtype=float).ravel(), 1e-12))
        return np.exp(self.intercept_ + self.slope_ * c)


class NearestDevice(_Regressor):
    """The training device whose latencies rank the shots best (Spearman, ties by log-Pearson),
    scaled by the median ratio: what a user gets by picking the most similar device they know."""

    def __init__(self, device_names: tuple[str, ...] = ()):
        self.device_names = tuple(device_names)

    def fit(self, L_shots, y) -> "NearestDevice":
        L = np.asarray(L_shots, dtype=float)
        y = check_targets(y)
        if len(y) >= 2:
            rho = np.array([stats.spearmanr(L[:, j], y).statistic if np.ptp(L[:, j]) > 0 else -1.0
                            for j in range(L.shape[1])])
            pear = np.array([np.corrcoef(np.log(L[:, j]), np.log(y))[0, 1] if np.ptp(L[:, j]) > 0 else -1.0
                             for j in range(L.shape[1])])
            rho = np.nan_to_num(rho, nan=-1.0) + 1e-6 * np.nan_to_num(pear, nan=-1.0)
            self.device_ = int(np.argmax(rho))
        else:
            self.device_ = 0
        self.scale_ = float(np.exp(np.median(np.log(y) - np.log(L[:, self.device_])))) if len(y) else 1.0
        return self

    @property
    def device_name_(self) -> str:
        self._check("device_")
        return self.device_names[self.device_] if self.device_names else str(self.device_)

    def predict(self, L) -> np.ndarray:
        self._check("device_")
        return self.scale_ * np.asarray(L, dtype=float)[:, self.device_]


class EncodingRidge(_Regressor):
    """Ridge regression of log latency on the architecture features, fitted on the shots alone
    (penalty by exact leave-one-out error)."""

    def __init__(self):
        pass

    def fit(self, X, y) -> "EncodingRidge":
        y = check_targets(y)
        fit = ridge_loo(np.asarray(X, dtype=float), np.log(y))
        self.coef_, self.intercept_, self.lambda_ = fit.coef, fit.intercept, fit.lam
        return self

    def predict(self, X) -> np.ndarray:
        self._check("coef_")
        return np.exp(np.asarray(X, dtype=float) @ self.coef_ + self.intercept_)
