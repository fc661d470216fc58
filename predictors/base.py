"""`FewShotPredictor`: the interface of predictors that learn from training devices and adapt
to a new device from a few measured architectures (scikit-learn style: `fit` returns self,
`predict` returns ms, learned attributes end in ``_``)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from predictors.features import FeatureLayout
from predictors.linear import d_optimal, standardize


class NotFittedError(RuntimeError):
    """A predictor used before `fit` (or before `adapt` for predictions on a new device)."""


class FewShotPredictor:
    """Base class. Subclasses implement `fit(X, L)` (meta-training on training devices),
    `adapt(X, y)` (a new device's measured ms) and `predict(X)` (ms on that device)."""

    layout: FeatureLayout

    # ---- parameters (constructor arguments), as scikit-learn's get_params ---------------
    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.get_params().items() if not isinstance(v, FeatureLayout)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    # ---- common helpers ----------------------------------------------------------------------
    def _check_fitted(self, attr: str = "n_train_devices_") -> None:
        if not hasattr(self, attr):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, L) first")

    def _check_adapted(self) -> None:
        if not hasattr(self, "n_shots_"):
            raise NotFittedError(f"{type(self).__name__} has not seen the target device; call adapt(X, y_ms) first")

    def choose_references(self, X: np.ndarray, n: int) -> np.ndarray:
        """Rows of X to measure first on a new device: a D-optimal set over the standardised
        features (subclasses use their own learned representation)."""
        X = self.layout.check(X)
        return d_optimal(standardize(X), n)

    def fit_adapt(self, X: np.ndarray, y: np.ndarray) -> "FewShotPredictor":
        return self.adapt(X, y)

    def adapt(self, X: np.ndarray, y: np.ndarray) -> "FewShotPredictor":  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path) -> None:
        from predictors.io import save

        save(self, path)


def check_targets(y) -> np.ndarray:
    """Measured latencies as positive finite floats, or ValueError saying what is wrong."""
    y = np.asarray(y, dtype=float).ravel()
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("measured latencies must be positive finite milliseconds")
    return y
