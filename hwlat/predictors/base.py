"""`FewShotPredictor`: the interface of predictors that learn from training devices and adapt
to a new device from a few measured architectures (scikit-learn style: `fit` returns self,
`predict` returns ms, learned attributes end in ``_``)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from hwlat.predictors.features import FeatureLayout
from hwlat.predictors.linear import d_optimal, standardize


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

    def check_learned(self) -> None:
        """Raise `LearnedStateError` for a learned attribute of the wrong kind or shape: `hwlat.predictors.io.load`
        calls it on what a file held, so an edited or corrupt file is named there, not met as a numpy
        error at the first prediction. Subclasses check their own state (`learned_number`, `learned_array`)."""

    def save(self, path) -> None:
        from hwlat.predictors.io import save

        save(self, path)


def check_targets(y) -> np.ndarray:
    """Measured latencies as positive finite floats, or ValueError saying what is wrong."""
    y = np.asarray(y, dtype=float).ravel()
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("measured latencies must be positive finite milliseconds")
    return y


# ---- the learned state of a loaded predictor ----------------------------------------------------
class LearnedStateError(ValueError):
    """A learned attribute that is missing or of the wrong kind or shape (an edited or corrupt
    predictor file); `hwlat.predictors.io.load` names the file and says to fit the predictor again."""

    def __init__(self, name: str, problem: str):
        self.name = name
        super().__init__(f"learned {name} {problem}")


_MISSING = object()


def _shown(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array of shape {v.shape}"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def learned_number(obj: Any, name: str, kind: type = float, low: float = -np.inf, high: float = np.inf,
                   above: float | None = None, optional: bool = False) -> Any:
    """`obj.name` as a number of `kind` (int: a whole number) in [low, high] (and over `above`), or a
    `LearnedStateError`; None where it is absent and `optional`. NaN passes (io refuses it where
    it enters a prediction)."""
    v = getattr(obj, name, _MISSING)
    if v is _MISSING:
        if optional:
            return None
        raise LearnedStateError(name, "is missing")
    whole = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if not whole and (kind is int or not isinstance(v, (float, np.floating))):
        raise LearnedStateError(name, f"is {_shown(v)}, not {'a whole number' if kind is int else 'a number'}")
    if v < low or v > high or (above is not None and not v > above):
        bounds = f"over {above:g}" if above is not None else (f"from {low:g} to {high:g}" if np.isfinite(high)
                                                             else f"of at least {low:g}")
        raise LearnedStateError(name, f"is {v!r}, not {'a whole number' if kind is int else 'a number'} {bounds}")
    return v


def learned_names(obj: Any, name: str, choices: Any) -> list[str]:
    """`obj.name` as a list of names, each one of `choices`, or a `LearnedStateError`."""
    v = getattr(obj, name, _MISSING)
    if v is _MISSING:
        raise LearnedStateError(name, "is missing")
    if not isinstance(v, list):
        raise LearnedStateError(name, f"is {_shown(v)}, not a list of names")
    for x in v:
        if not isinstance(x, str) or x not in choices:
            raise LearnedStateError(name, f"holds {_shown(x)}, not one of {', '.join(choices)}")
    return v


def learned_array(obj: Any, name: str, shape: tuple[int | None, ...], integer: bool = False, low: float | None = None,
                  high: float | None = None, optional: bool = False, value: Any = _MISSING) -> np.ndarray | None:
    """`obj.name` (or `value`) as a numeric array of `shape` (None: any length) with values in
    [low, high] (whole numbers where `integer`), or a `LearnedStateError`; None where absent and `optional`."""
    v = getattr(obj, name, _MISSING) if value is _MISSING else value
    if v is _MISSING:
        if optional:
            return None
        raise LearnedStateError(name, "is missing")
    dims = ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "")
    if (not isinstance(v, np.ndarray) or v.dtype.kind not in ("iu" if integer else "iuf") or v.ndim != len(shape)
            or any(s is not None and s != t for s, t in zip(shape, v.shape))):
        raise LearnedStateError(name, f"is {_shown(v)}, not a {'whole-number' if integer else 'number'} array of "
                                      f"shape ({dims})")
    lo, hi = (-np.inf if low is None else low), (np.inf if high is None else high)
    outside = v[(v < lo) | (v > hi)] if v.size else v
    if outside.size:
        raise LearnedStateError(name, f"holds {outside[0].item()!r}, not a value from {lo:g} to {hi:g}")
    return v


def learned_arrays(obj: Any, name: str, shapes: list[tuple[int | None, ...]]) -> list[np.ndarray]:
    """`obj.name` as a list of numeric arrays of `shapes`, or a `LearnedStateError` naming the array
    (``name0``, ``name1``, ... as `hwlat.predictors.io` stores them)."""
    v = getattr(obj, name, _MISSING)
    if v is _MISSING:
        raise LearnedStateError(name, "is missing")
    if not isinstance(v, list) or len(v) != len(shapes):
        raise LearnedStateError(name, f"is {_shown(v)}, not a list of {len(shapes)} arrays")
    return [learned_array(obj, f"{name}{i}", s, value=a) for i, (a, s) in enumerate(zip(v, shapes))]
