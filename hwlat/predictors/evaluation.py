"""The few-shot transfer protocol (HELP, NeurIPS 2021, extended to absolute accuracy).

For each method: meta-train on training devices, choose ``n_ref`` reference architectures from
training information only (one set for every test device). For each test device and repeat:
the method receives the device's latencies of the references plus ``shots`` architectures drawn
at random (seeded by seed and repeat) from outside the query range, and predicts the query
range; scores are taken after dropping the device's fastest and slowest ``trim`` fraction. With
``shots_from="suggested"`` the shots are instead the method's own choice after the references (what
`hwlat adapt suggest` writes), the same for every device.
A test device is read only through `TargetDevice`, which hands out exactly those cells.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.predictors.baselines import CostBaseline, EncodingRidge, NearestDevice
from hwlat.predictors.features import FeatureLayout
from hwlat.predictors.linear import d_optimal, standardize
from hwlat.predictors.metrics import Scores, trimmed_score

log = logging.getLogger(__name__)


class ProtocolError(HwlatError, ValueError):
    """A protocol setting that cannot be honoured (e.g. more shots than architectures)."""


@dataclass
class TransferData:
    """Everything a method may see at meta-training: architecture features of every row, the
    training devices' latencies (and validation devices', for model selection), and lazily
    computed cost numbers (``costs["macs"](rows)``)."""

    keys: np.ndarray
    X: np.ndarray
    layout: FeatureLayout
    train: np.ndarray
    train_names: list[str]
    valid: np.ndarray | None = None
    valid_names: list[str] = field(default_factory=list)
    costs: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)


class TargetDevice:
    """A test device's column behind a guard: `measured(rows)` gives only rows the protocol
    allowed (references and shots); `truth(rows)` serves the scorer once predictions exist.
    Every cell handed out is logged in `reads`."""

    def __init__(self, name: str, values: np.ndarray):
        self.name = name
        self.__values = np.asarray(values, dtype=float).copy()
        self.available = np.isfinite(self.__values) & (self.__values > 0)
        self.reads: set[int] = set()
        self._allowed: set[int] = set()
        self._scoring: set[int] = set()

    @property
    def n_missing(self) -> int:
        return int((~self.available).sum())

    def allow(self, rows: np.ndarray) -> None:
        self._allowed |= {int(r) for r in rows}

    def measured(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=int)
        bad = [int(r) for r in rows if int(r) not in self._allowed]
        if bad:
            raise PermissionError(f"{self.name}: rows {bad[:5]} are not among the allowed measurements")
        self.reads |= {int(r) for r in rows}
        return self.__values[rows]

    def open_for_scoring(self, rows: np.ndarray) -> None:
        self._scoring |= {int(r) for r in rows}

    def truth(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=int)
        if any(int(r) not in self._scoring for r in rows):
            raise PermissionError(f"{self.name}: truth requested before the predictions were made")
        return self.__values[rows]


# ---- methods -------------------------------------------------------------------------------------
class Method:
    """A predictor wrapped for the protocol: rows index `TransferData`."""

    name = ""
    description = ""

    def meta_fit(self, data: TransferData, n_ref: int, ref_pool: np.ndarray | None = None) -> None:
        """Learn from training devices; `ref_pool` holds the rows references may come from."""
        self.data = data

    def references(self, pool: np.ndarray, n: int) -> np.ndarray:
        """Default: D-optimal rows of the standardised features (training-free)."""
        if n <= 0:
            return np.zeros(0, dtype=int)
        return pool[d_optimal(standardize(self.data.X[pool]), n)]

    def adapt(self, rows: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, rows: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class CostMethod(Method):
    def __init__(self, cost: str):
        self.name = cost
        self.description = f"{cost} with a log-log line fitted on the shots (rank = {cost} rank)"
        self.cost = cost

    def meta_fit(self, data: TransferData, n_ref: int, ref_pool: np.ndarray | None = None) -> None:
        super().meta_fit(data, n_ref, ref_pool)
        if self.cost not in data.costs:
            raise ProtocolError(f"method {self.cost!r} needs {self.cost} of the architectures, which this space does not provide")

    def adapt(self, rows, y):
        self.model = CostBaseline(self.cost).fit(self.data.costs[self.cost](rows), y)

    def predict(self, rows):
        return self.model.predict(self.data.costs[self.cost](rows))


class NearestMethod(Method):
    name = "nearest"
    description = "training device that ranks the shots best, scaled by the median ratio"

    def adapt(self, rows, y):
        self.model = NearestDevice(tuple(self.data.train_names)).fit(self.data.train[rows], y)

    def predict(self, rows):
        return self.model.predict(self.data.train[rows])


class RidgeMethod(Method):
    name = "ridge"
    description = "ridge on the architecture features, fitted on the shots alone"

    def adapt(self, rows, y):
        self.model = EncodingRidge().fit(self.data.X[rows], y)

    def predict(self, rows):
        return self.model.predict(self.data.X[rows])


class PredictorMethod(Method):
    """A `FewShotPredictor` (fit on training devices, adapt, predict) on the table's rows."""

    def __init__(self, name: str, factory: Callable[[TransferData, int], object], description: str = ""):
        self.name = name
        self.factory = factory
        self.description = description

    def meta_fit(self, data: TransferData, n_ref: int, ref_pool: np.ndarray | None = None) -> None:
        super().meta_fit(data, n_ref, ref_pool)
        ok = np.all(np.isfinite(data.train) & (data.train > 0), axis=1)
        self.model = self.factory(data, n_ref)
        if getattr(self.model, "needs_reference_pool", False):
            # HELP embeds a device by its latencies on fixed references: they are fixed before training
            pool = np.flatnonzero(ok) if ref_pool is None else np.intersect1d(ref_pool, np.flatnonzero(ok))
            valid = None
            if data.valid is not None:
                vok = np.all(np.isfinite(data.valid) & (data.valid > 0), axis=1) & ok
                valid = (data.X[vok], data.valid[vok])
            self.model.fit(data.X[ok], data.train[ok], valid=valid, reference_pool=data.X[pool])
        else:
            self.model.fit(data.X[ok], data.train[ok])

    def references(self, pool, n):
        if n <= 0:
            return np.zeros(0, dtype=int)
        return pool[self.model.choose_references(self.data.X[pool], n)]

    def adapt(self, rows, y):
        self.model.adapt(self.data.X[rows], y)

    def predict(self, rows):
        return self.model.predict(self.data.X[rows])


class FittedMethod(PredictorMethod):
    """An already meta-trained predictor (e.g. a pretrained file) put through the protocol."""

    def __init__(self, name: str, model, description: str = ""):
        self.name, self.model, self.description = name, model, description

    def meta_fit(self, data: TransferData, n_ref: int, ref_pool: np.ndarray | None = None) -> None:
        self.data = data
        if self.model.layout.width != data.X.shape[1]:
            raise ProtocolError(f"{self.name}: the predictor takes {self.model.layout.width} features, the table "
                                f"gives {data.X.shape[1]}; rebuild it with this version's features")


def _transfer(learners=None):
    def make(data: TransferData, n_ref: int):
        from hwlat.predictors.transfer import STACK, TransferPredictor

        return TransferPredictor(data.layout, learners=learners or STACK)
    return make


def _proxy(data: TransferData, n_ref: int):
    from hwlat.predictors.proxy import ProxyAdapter

    return ProxyAdapter(data.layout)


def _help(data: TransferData, n_ref: int):
    from hwlat.predictors.help import HelpTransfer

    return HelpTransfer(data.layout, n_references=n_ref)


METHODS: dict[str, Callable[[], Method]] = {
    "macs": lambda: CostMethod("macs"),
    "params": lambda: CostMethod("params"),
    "nearest": NearestMethod,
    "ridge": RidgeMethod,
    "proxy": lambda: PredictorMethod("proxy", _proxy, "OneProxy-style: nearest device's model + log-space correction"),
    "help": lambda: PredictorMethod("help", _help, "HELP-style: hardware embedding from references, meta-learned MLP"),
    "lowrank": lambda: PredictorMethod("lowrank", _transfer(("lowrank",)), "ridge on low-rank architecture factors"),
    "mixture": lambda: PredictorMethod("mixture", _transfer(("mixture",)), "non-negative mixture of training devices"),
    "transfer": lambda: PredictorMethod("transfer", _transfer(), "stacked low-rank + cost-count models (ours)"),
}


def make_methods(names: Sequence[str]) -> list[Method]:
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ProtocolError(f"unknown method(s) {', '.join(unknown)}; choose from all, {', '.join(METHODS)}")
    if "help" in names:  # now, not from inside its first fit after the other methods ran
        from hwlat.profilers.torch_eager.runtime import import_torch

        try:
            import_torch()
        except HwlatError as exc:
            others = ",".join(n for n in METHODS if n != "help")
            raise ProtocolError(f"method help (a meta-learned MLP) runs in PyTorch: {exc}; or leave it out "
                                f"(--methods {others})") from None
    return [METHODS[n]() for n in names]


# ---- the protocol --------------------------------------------------------------------------------
@dataclass
class DeviceResult:
    scores: list[Scores]
    predictions: list[np.ndarray]  # per repeat, on the device's query rows

    def mean(self, metric: str) -> float:
        return float(np.nanmean([getattr(s, metric) for s in self.scores]))

    def std(self, metric: str) -> float:
        return float(np.nanstd([getattr(s, metric) for s in self.scores]))


@dataclass
class MethodResult:
    name: str
    description: str
    devices: dict[str, DeviceResult]
    meta_fit_s: float
    adapt_s: list[float]
    predict_s_per_arch: list[float]
    references: np.ndarray

    def mean(self, metric: str) -> float:
        return float(np.mean([d.mean(metric) for d in self.devices.values()]))


@dataclass
class ProtocolSettings:
    shots: int = 10
    n_ref: int = 10
    trim: float = 0.1
    repeats: int = 10
    seed: int = 0
    shots_from: str = "random"  # or "suggested": the method's own choice after the references, for every device


def shot_order(pool: np.ndarray, seed: int, repeat: int) -> np.ndarray:
    """The random order in which a repeat draws shots from a device's pool (seed, repeat)."""
    return np.random.default_rng([seed, repeat]).permutation(pool)


def run_method(method: Method, data: TransferData, targets: Sequence[TargetDevice], query: np.ndarray,
               settings: ProtocolSettings, fitted: bool = False, progress=None) -> MethodResult:
    """Run the protocol for one method (meta-fit unless `fitted`) over all test devices."""
    usable = np.ones(len(data.keys), dtype=bool)
    for t in targets:
        usable &= t.available  # which cells exist, never their values
    ref_pool = np.flatnonzero(~query & usable)
    suggested = settings.shots_from == "suggested"
    n_chosen = settings.n_ref + (settings.shots if suggested else 0)
    if n_chosen > len(ref_pool):
        raise ProtocolError(f"{n_chosen} chosen architectures asked but only {len(ref_pool)} outside the query range are "
                            "measured on every test device")
    t0 = time.perf_counter()
    if not fitted:
        method.meta_fit(data, settings.n_ref, ref_pool)
    meta_s = time.perf_counter() - t0
    chosen = np.asarray(method.references(ref_pool, n_chosen), dtype=int)
    refs = chosen[: settings.n_ref]
    devices: dict[str, DeviceResult] = {}
    adapt_s, pred_s = [], []
    for t in targets:
        q = np.flatnonzero(query & t.available)
        pool = np.setdiff1d(np.flatnonzero(~query & t.available), refs)
        if not suggested and settings.shots > len(pool):
            raise ProtocolError(f"{settings.shots} shots asked but {t.name} has only {len(pool)} measured architectures "
                                f"outside the query range besides the {len(refs)} references")
        if len(q) < 3:
            raise ProtocolError(f"{t.name} has {len(q)} measured architectures in the query range; need at least 3")
        scores, preds = [], []
        for r in range(settings.repeats):
            shots = chosen[settings.n_ref:] if suggested else shot_order(pool, settings.seed, r)[: settings.shots]
            rows = np.concatenate([refs, shots]).astype(int)
            t.allow(rows)
            y = t.measured(rows)
            a0 = time.perf_counter()
            method.adapt(rows, y)
            a1 = time.perf_counter()
            p = np.asarray(method.predict(q), dtype=float)
            a2 = time.perf_counter()
            adapt_s.append(a1 - a0)
            pred_s.append((a2 - a1) / max(len(q), 1))
            t.open_for_scoring(q)
            scores.append(trimmed_score(p, t.truth(q), settings.trim))
            preds.append(p)
            if progress is not None:
                progress.update(1)
        devices[t.name] = DeviceResult(scores, preds)
    return MethodResult(method.name, method.description, devices, meta_s, adapt_s, pred_s, refs)
