"""Architecture-level latency predictors: anything that predicts ms from features, graphs or
architectures, wrapped to take architectures of one search space (objects or keys).

``as_arch_predictor(pred, space)`` accepts a feature predictor (`TransferPredictor`, any object
with a `FeatureLayout` and `predict(X)`), a lookup-table predictor (`LUTPredictor`, predicts a
network's op graph), a callable on architectures, or an `ArchPredictor`; `load_arch_predictor`
reads one from a saved file, ``pretrained`` or ``lut:<device table>``.
"""

from __future__ import annotations

import abc
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import Space

log = logging.getLogger(__name__)

# Spaces small enough to predict every architecture when looking for the fastest one.
EXHAUSTIVE_MAX = 100_000
# Predictions a `CachingPredictor` keeps (about 0.2 KB each): past it they start again, so that a search of a
# large space running for days keeps at most ~200 MB of them.
MAX_KEPT = 1_000_000


class PredictorSpaceError(HwlatError):
    """A predictor made for another search space (or another feature layout) than the one searched."""


class PredictionError(HwlatError):
    """A predictor that answered something that is not a latency (NaN, inf or a negative number of ms)."""


def checked_latencies(pred: ArchPredictor, archs: Sequence[Any], ms: Any) -> np.ndarray:
    """`ms` (one prediction per architecture) as a float array; a `PredictionError` naming the first
    architecture whose prediction is not a finite latency of 0 ms or more: a search or a constraint
    must never count such an answer as fast enough."""
    ms = np.asarray(ms, dtype=float).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(ms) | (ms < 0))
    if bad.size:
        i = int(bad[0])
        arch = pred.space.as_arch(archs[i])
        raise PredictionError(f"the {pred.name} predictor predicts {ms[i]:g} ms for {pred.space.name} architecture "
                              f"{pred.space.key(arch)} ({bad.size} of {ms.size} predictions are not a latency); "
                              "check or retrain the predictor")
    return ms


class ArchPredictor(abc.ABC):
    """Predicts latency (ms) of architectures of `space`; `predict` takes a batch, calling it one."""

    space: Space
    name: str = "predictor"
    fast: bool = True  # cheap enough to predict every architecture of a small space

    @abc.abstractmethod
    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        """Latency in ms of each architecture (objects or anything `space.parse` accepts)."""

    def predict_with_sigma(self, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """(ms, one-sigma ms) of each architecture, predicted together; sigma None where the predictor
        gives none (this base: a function of architectures)."""
        return self.predict(archs), None

    def sigma(self, archs: Sequence[Any]) -> np.ndarray | None:
        """One-sigma uncertainty (ms) of each architecture's prediction; None where the predictor gives none."""
        return self.predict_with_sigma(archs)[1]

    def __call__(self, arch: Any) -> float:
        return float(self.predict([arch])[0])

    def _archs(self, archs: Iterable[Any]) -> list[Any]:
        return [self.space.as_arch(a) for a in archs]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space.name}, {self.name})"


class FeaturePredictor(ArchPredictor):
    """A feature predictor (predict(X) -> ms, X = features of architectures) on a space's archs:
    space + feature function (default `hwlat.nas.features.latency_features`) + predictor."""

    def __init__(self, space: Space | str, predictor: Any, features: Callable[..., Any] | None = None,
                 name: str | None = None):
        from hwlat.nas.features import latency_features

        self.space = get_space(space) if isinstance(space, str) else space
        self.predictor = predictor
        self.features = features or latency_features
        self.name = name or type(predictor).__name__
        layout = getattr(predictor, "layout", None)
        made_for = getattr(layout, "space", "") if layout is not None else ""
        if made_for and made_for != self.space.name:
            raise PredictorSpaceError(f"the {self.name} predictor predicts {made_for} architectures, not "
                                      f"{self.space.name}; use one made for {self.space.name} (`hwlat adapt fit "
                                      f"--space {self.space.name}`)")

    def matrix(self, archs: Sequence[Any]) -> np.ndarray:
        out = self.features(self.space, self._archs(archs))
        X = out[0] if isinstance(out, tuple) else out
        layout = getattr(self.predictor, "layout", None)
        if layout is not None and isinstance(out, tuple) and len(out) > 1:
            self._check_features_version(layout, out[1])
        if layout is not None and X.shape[1] != layout.width:
            raise PredictorSpaceError(f"the {self.name} predictor expects {layout.width} features per architecture but "
                                      f"{self.space.name} has {X.shape[1]} (features made by another hwlat version?); "
                                      "re-create or re-adapt the predictor")
        return X

    def _check_features_version(self, trained: Any, made: Any) -> None:
        """The features made now are of the version the predictor was trained on (exactly: features
        of another version may have the same width and mean other things); a predictor without a
        version predates versioned features."""
        have = getattr(made, "meta", {}).get("features_version")
        want = getattr(trained, "meta", {}).get("features_version")
        if have is not None and want != have:
            was = f"features version {want}" if want is not None else "unversioned features (an older hwlat)"
            measured = (getattr(self, "info", None) or {}).get("measured")
            todo = (f"fit it again from the {len(measured)} measurements it was adapted to (`hwlat adapt fit --space "
                    f"{self.space.name} --measurements {self.info.get('measurements') or 'FILE'} --out NEW`; its JSON's "
                    "info.measured holds them, key -> ms)" if measured
                    else "retrain it, or use the pretrained one shipped with your hwlat")
            raise PredictorSpaceError(f"the {self.name} predictor was trained on {was}; this hwlat makes "
                                      f"{self.space.name} features version {have}: {todo}")

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        archs = list(archs)
        if not archs:
            return np.zeros(0)
        return np.asarray(self.predictor.predict(self.matrix(archs)), dtype=float).reshape(-1)

    def predict_with_sigma(self, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """Sigma: ms x the predictor's own relative error of each architecture (`relative_sigma`), else
        x its leave-one-out error on the measurements (`loo_rel_error_`, one for all); None without either."""
        inner = self.predictor
        rel_of = getattr(inner, "relative_sigma", None)
        loo = np.asarray(getattr(inner, "loo_rel_error_", np.zeros(0)), dtype=float)
        loo = loo[np.isfinite(loo)]
        if rel_of is None and not loo.size:
            return self.predict(archs), None
        archs = list(archs)
        if not archs:
            return np.zeros(0), np.zeros(0)
        X = self.matrix(archs)
        ms = np.asarray(inner.predict(X), dtype=float).reshape(-1)
        rel = (np.asarray(rel_of(X), dtype=float).reshape(-1) if rel_of is not None
               else np.full(len(ms), float(np.sqrt(np.mean(loo ** 2)))))
        return ms, ms * rel


class CachingPredictor(ArchPredictor):
    """Base of slow per-architecture predictors: predictions cached by architecture key (up to `MAX_KEPT`,
    then emptied)."""

    fast = False

    def __init__(self, space: Space | str):
        self.space = get_space(space) if isinstance(space, str) else space
        self._cache: dict[str, float] = {}
        self._sigma: dict[str, float] = {}  # sigma_ms by key, beside `_cache`'s ms, where asked for (GraphPredictor)

    @abc.abstractmethod
    def _predict_new(self, archs: list[Any]) -> np.ndarray:
        """Predictions of architectures not in the cache."""

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        archs = self._archs(archs)
        keys = [self.space.key(a) for a in archs]
        cache = self._kept()[0]
        todo = {k: a for k, a in zip(keys, archs) if k not in cache}
        if todo:
            ms = self._predict_new(list(todo.values()))
            cache.update(zip(todo, (float(v) for v in np.asarray(ms, dtype=float).reshape(-1))))
        return np.asarray([cache[k] for k in keys], dtype=float)

    def _kept(self) -> tuple[dict[str, float], dict[str, float]]:
        """The kept predictions (ms, sigma), new ones past `MAX_KEPT`: a thread predicting meanwhile goes on
        with those it took."""
        if len(self._cache) > MAX_KEPT:
            self._cache, self._sigma = {}, {}
        return self._cache, self._sigma


class GraphPredictor(CachingPredictor):
    """A lookup-table predictor (`hwlat.predictors.lut.LUTPredictor`) on a space: each architecture's graph
    (`Space.graph`, what its ONNX model runs) is predicted as `hwlat predict` predicts it."""

    def __init__(self, space: Space | str, lut: Any, name: str | None = None):
        super().__init__(space)
        self.lut = lut
        self.name = name or f"lookup table {getattr(getattr(lut, 'table', None), 'name', '')}".strip()
        self._said_partial = False

    def _predict_new(self, archs: list[Any]) -> np.ndarray:
        return np.fromiter((ms for ms, _ in self._priced(archs, _total_and_left_out)), dtype=float, count=len(archs))

    def predict_with_sigma(self, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Sigma: each Prediction's `sigma_ms`, priced with its ms (an architecture predicted before
        without its sigma is priced again, once)."""
        archs = self._archs(archs)
        keys = [self.space.key(a) for a in archs]
        cache, sigmas = self._kept()
        todo = {k: a for k, a in zip(keys, archs) if k not in sigmas}
        if todo:
            for k, ((ms, sigma), _) in zip(todo, self._priced(list(todo.values()), _total_sigma_and_left_out)):
                cache[k], sigmas[k] = ms, sigma
        return (np.asarray([cache[k] for k in keys], dtype=float), np.asarray([sigmas[k] for k in keys], dtype=float))

    def _priced(self, archs: list[Any], keep: Callable[[Any], tuple[Any, tuple[str, ...]]]) -> list[Any]:
        """`keep` of each architecture's Prediction: (what it keeps, op types left out); warns once of
        architectures priced partially."""
        from hwlat.predictors.lut.many import predict_archs  # as `hwlat predict --archs`: many on every core

        got = list(predict_archs(self.lut, self.space, archs, keep=keep))
        partial = [left for _, left in got if left]
        if partial and not self._said_partial:  # a total without kernels the device cannot run met any budget
            self._said_partial = True
            log.warning("%s: %d of %d %s architectures are priced partially, without their %s (`hwlat predict "
                        "--arch` says why): such a total is below what the device takes, or the device cannot run "
                        "the network at all", self.name, len(partial), len(archs), self.space.name,
                        ", ".join(sorted({op for left in partial for op in left})))
        return got


def _total_and_left_out(prediction: Any) -> tuple[float, tuple[str, ...]]:
    """A prediction's total and the op types it leaves out (none where it prices the whole network)."""
    return prediction.total_ms, tuple(sorted({u.op for u in prediction.uncovered})) if prediction.partial else ()


def _total_sigma_and_left_out(prediction: Any) -> tuple[tuple[float, float], tuple[str, ...]]:
    """((total, sigma_ms), op types left out) of a prediction."""
    total, left = _total_and_left_out(prediction)
    return (total, prediction.sigma_ms), left


class CallablePredictor(CachingPredictor):
    """Any function of architectures: ``fn(list_of_archs) -> ms array`` when `batched`, else
    ``fn(arch) -> ms``; `fast` (default: `batched`) allows predicting a whole small space."""

    def __init__(self, space: Space | str, fn: Callable[..., Any], batched: bool = False, name: str | None = None,
                 fast: bool | None = None):
        super().__init__(space)
        self.fn = fn
        self.batched = batched
        self.fast = batched if fast is None else fast
        self.name = name or getattr(fn, "__name__", "function")

    def _predict_new(self, archs: list[Any]) -> np.ndarray:
        if self.batched:
            return np.asarray(self.fn(archs), dtype=float).reshape(-1)
        return np.asarray([float(self.fn(a)) for a in archs])


def as_arch_predictor(predictor: Any, space: Space | str | None = None, as_profiled: bool = False) -> ArchPredictor:
    """Wrap any latency predictor so it takes architectures of `space` (see the module docstring).

    The space may be left out for a feature predictor that names its space in its layout; a device
    table predicts through its lookup-table predictor, at this machine's speed now unless `as_profiled`
    (as `hwlat predict`); a string is what `hwlat search --predictor` takes (``lut:<table>``, a saved
    predictor's path), with `space`."""
    from hwlat.device_tables.table import DeviceTable

    if isinstance(predictor, (str, os.PathLike)):
        if space is None:
            raise PredictorSpaceError(f"which search space does {str(predictor)!r} predict? pass space=")
        predictor = load_arch_predictor(predictor, space, as_profiled)
    if isinstance(predictor, DeviceTable):
        from hwlat.device_profile import at_speed_now
        from hwlat.predictors.lut import LUTPredictor

        predictor = at_speed_now(LUTPredictor(predictor), as_profiled)
    if isinstance(predictor, ArchPredictor):
        if space is not None:
            name = space if isinstance(space, str) else space.name
            if predictor.space.name != name:
                raise PredictorSpaceError(f"this predictor predicts {predictor.space.name} architectures, not {name}")
        return predictor
    layout = getattr(predictor, "layout", None)
    if layout is not None and hasattr(predictor, "predict"):
        sp = space if space is not None else (layout.space or None)
        if sp is None:
            raise PredictorSpaceError(f"{type(predictor).__name__} does not say which search space it predicts; "
                                      "pass space=")
        return FeaturePredictor(sp, predictor)
    if space is None:
        raise PredictorSpaceError(f"which search space does {type(predictor).__name__} predict? pass space=")
    if hasattr(predictor, "predict_graph"):
        return GraphPredictor(space, predictor)
    if callable(predictor):
        return CallablePredictor(space, predictor)
    raise PredictorSpaceError(f"{type(predictor).__name__} is not a latency predictor: expected a feature predictor "
                              "(with a layout), a lookup-table predictor, an ArchPredictor or a function of "
                              "architectures")


def load_arch_predictor(source: str | os.PathLike, space: Space | str, as_profiled: bool = False) -> ArchPredictor:
    """A predictor from ``pretrained`` (not yet adapted), ``lut:<device table name or path>`` (at this
    machine's speed now unless `as_profiled`, as `hwlat predict`), or a saved predictor file (``NAME``,
    ``NAME.npz`` or ``NAME.json`` written by `hwlat.predictors.io.save`)."""
    sp = get_space(space) if isinstance(space, str) else space
    text = str(source)
    if text == "pretrained":
        from hwlat.predictors import pretrained

        return FeaturePredictor(sp, pretrained.load(sp.name), name=f"pretrained {sp.name} transfer")
    if text.startswith("lut:"):
        from hwlat.device_tables import load as load_table
        from hwlat.predictors.lut import LUTPredictor

        from hwlat.device_profile import at_speed_now

        table = load_table(text[4:])
        return GraphPredictor(sp, at_speed_now(LUTPredictor(table).fit(), as_profiled), name=f"lookup table {table.name}")
    from hwlat.predictors.io import PredictorFileError, load, paths, read_info

    npz, js = paths(text)
    if not js.is_file():
        from hwlat.device_tables.registry import available

        table = f"; {text} is a shipped device table: give 'lut:{text}'" if text in available() else ""
        raise PredictorFileError(f"no predictor at {js}: give a file written by hwlat.predictors.io.save (NAME, NAME.npz or "
                                 f"NAME.json), 'pretrained', or 'lut:<device table>'{table}")
    info = read_info(text).get("info") or {}
    made_for, device = info.get("space"), info.get("device")
    if made_for and made_for != sp.name:
        from hwlat.predictors import pretrained

        other = (f"fit a {sp.name} predictor (`hwlat adapt fit --space {sp.name}`)" if sp.name in pretrained.available()
                 else f"predict {sp.name} from a device table (predict --table NAME, search --predictor lut:NAME): "
                 f"no meta-trained {sp.name} predictor is shipped")
        raise PredictorSpaceError(f"{text} predicts {made_for} architectures, not {sp.name}; use --space {made_for} or "
                                  f"{other}")
    name = f"{Path(text).name} ({sp.name} transfer adapted to {device})" if device else Path(text).name
    pred = FeaturePredictor(sp, load(text), name=name)
    pred.info = info  # the device and measurements it was adapted to, kept when it is saved again
    return pred


def needs_adaptation(pred: ArchPredictor) -> bool:
    """True for a few-shot predictor that has not seen its target device yet (no `adapt` call)."""
    inner = getattr(pred, "predictor", None)
    return inner is not None and hasattr(inner, "adapt") and not hasattr(inner, "n_shots_")


def fastest(pred: ArchPredictor, sample: int = 512, seed: int = 0, sigmas: float = 0.0) -> tuple[Any, float, int, bool]:
    """(arch, predicted ms, archs looked at, exhaustive) of the fastest architecture the predictor
    knows, by its prediction + `sigmas` sigma: every architecture of a small space with a fast predictor,
    else a seeded sample."""
    sp = pred.space
    if pred.fast and sp.size is not None and sp.size <= EXHAUSTIVE_MAX:
        archs = list(sp.enumerate())
        exhaustive = True
    else:
        archs = sp.sample(sample if not pred.fast else max(sample, 20_000), seed)
        exhaustive = False
    ms, sigma = pred.predict_with_sigma(archs) if sigmas else (pred.predict(archs), 0.0)
    ms = checked_latencies(pred, archs, ms)
    i = int(np.argmin(ms + sigmas * np.asarray(sigma, dtype=float)))
    return archs[i], float(ms[i]), len(archs), exhaustive


def call_with_space(fn: Callable[..., Any], space: Space, arch: Any) -> Any:
    """``fn(arch)``, or ``fn(space, arch)`` when fn takes two positional parameters."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        params = []
    return fn(space, arch) if len(params) >= 2 else fn(arch)
