"""The Python API of hwlat's jobs: ``import hwlat`` exposes these names, and each command of the CLI
is a thin layer over one of them.

| command | function |
|---|---|
| `hwlat profile device` | `profile_device` |
| `hwlat profile ops` | `profile_ops` |
| `hwlat profile archs` | `profile_archs` |
| `hwlat profile model` | `profile_model` |
| `hwlat profile fusion` | `profile_fusion` |
| `hwlat predict` | `predict` (one network), `predict_archs` (`--archs`) |
| `hwlat search` | `search` with a `LatencyConstraint` |
| `hwlat adapt suggest` | `suggest` |
| `hwlat adapt fit` | `fit` (+ `save_predictor`); `adapt` from lists of archs and ms |
| `hwlat predict --predictor` | `load_predictor` + `predict_adapted` |
| `hwlat search --device-samples` | `fit` (a file) or `adapt` (lists) |
| `hwlat search --objective accuracy` | `accuracy` (the shipped NATS-Bench accuracies) |
| `hwlat space show`, `sample` | `space` (a `Space`: `.arch(key)`, `.sample(n)`, ...) |
| `hwlat table show`, `validate`, `list` | `load_table` (validates), `tables` |
| `hwlat table drift` | `drift` |

Runtimes and spaces are given by name (built-in or a plugin's, `hwlat.plugins`) or as objects.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from hwlat.nas.constraints import LatencyConstraint

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # the tables whose warnings were logged (once per process)

if TYPE_CHECKING:
    from hwlat.device_tables.kernels import FusionRules
    from hwlat.device_tables.table import DeviceTable
    from hwlat.device_profile import DeviceProfileResult, Drift
    from hwlat.nas.arch_predictors import ArchPredictor
    from hwlat.nas.search.result import SearchResult
    from hwlat.nas.spaces.base import Space
    from hwlat.nas.spaces.measure import ArchRunResult
    from hwlat.predictors.lut import Prediction
    from hwlat.profilers.base import Runtime, WholeModel
    from hwlat.profilers.fusion import PatternResult
    from hwlat.profilers.ort.model_profile import ModelProfile
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.run import SweepResult


# ---- the nouns ---------------------------------------------------------------------------------
def load_table(name_or_path: str | os.PathLike) -> DeviceTable:
    """A device table by shipped name (``cpu_onnxruntime_fp32_threads1``) or path, validated as it loads
    (`TableError` naming the file and row of a problem). It is what the files held when read: load it
    again to predict from a table profiled again since (by another process)."""
    from hwlat.device_tables import load

    return load(name_or_path)


def drift(table: str | os.PathLike | DeviceTable, networks: int = 6) -> Drift:
    """How this machine runs now against when `table` was made: a `Drift` (``.median``: the median of
    a few of its stored networks' times now over their stored times; ``.describe()``), from timing
    `networks` of them again with the table's runtime and protocol."""
    from hwlat.device_tables.table import DeviceTable
    from hwlat.device_profile import drift as _drift

    return _drift(table if isinstance(table, DeviceTable) else load_table(table), networks)


def tables() -> list[str]:
    """The names of the shipped device tables."""
    from hwlat.device_tables import available

    return list(available())


def space(name: str, **options: Any) -> Space:
    """A search space by name (built-in or a plugin's); `options` go to its constructor (nb201: keep_dead)."""
    from hwlat.nas.spaces import get_space

    return get_space(name, **options)


def runtime(name: str, **settings: Any) -> Runtime:
    """A runtime of this machine by name (built-in or a plugin's) with its settings (threads, precision,
    opt_level, provider, xnnpack, device, board, ...)."""
    from hwlat.profilers.runtimes import get_runtime

    return get_runtime(name, **settings)


def _runtime(rt: str | Runtime, settings: dict[str, Any]) -> Runtime:
    if isinstance(rt, str):
        return runtime(rt, **settings)
    if settings:  # they were ignored: the object measures with its own
        from hwlat.device_tables.errors import HwlatError

        given = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        raise HwlatError(f"{given}: a runtime object ({rt!r}) has its settings already; give them with its name "
                         f"(runtime={rt.name!r}, {given}) or make it with them (hwlat.runtime({rt.name!r}, {given}))")
    return rt


def _space(sp: str | Space) -> Space:
    return space(sp) if isinstance(sp, str) else sp


def _protocol(rt: Runtime, protocol: str | Protocol | None) -> Protocol:
    """A `Protocol`, or a preset's name (quick, brief, default, thorough) with the runtime's clock, as
    ``--protocol NAME``; None: the default preset."""
    return rt.default_protocol(protocol or "default") if protocol is None or isinstance(protocol, str) else protocol


# ---- profiling ---------------------------------------------------------------------------------
def profile_device(runtime: str | Runtime, out: str | os.PathLike, minutes: float | None = None,
                   **settings: Any) -> DeviceProfileResult:
    """`hwlat profile device`: a complete table of `runtime` at `out` within `minutes` (default: the
    command's), resumed if it exists. `settings` are the runtime's (for a name) and the options of
    `hwlat.device_profile.profile_device` (protocol, targets, calibration_networks, score_networks,
    per_space, fusion_patterns, progress, fresh, remeasure, recalibrate, start_from)."""
    from hwlat.device_profile import DEFAULT_MINUTES
    from hwlat.device_profile import profile_device as run

    options = {k: settings.pop(k) for k in list(settings) if k in (
        "protocol", "targets", "calibration_networks", "score_networks", "per_space", "fusion_patterns", "progress",
        "fresh", "remeasure", "recalibrate", "start_from")}
    rt = _runtime(runtime, settings)
    options["protocol"] = _protocol(rt, options.get("protocol"))
    return run(rt, out, minutes=DEFAULT_MINUTES if minutes is None else minutes, **options)


def profile_ops(runtime: str | Runtime, out: str | os.PathLike, sweep: str | Iterable[Any] = "default",
                protocol: str | Protocol | None = None, progress: bool = True, fresh: bool = False,
                **settings: Any) -> SweepResult:
    """`hwlat profile ops`: measure the op configurations of `sweep` (a preset name, a YAML/JSON file
    or `OpSpec`s or their keys) into the device table at `out` (resumed if it exists; `fresh`: started again)."""
    from hwlat.device_tables.errors import OpSpecError
    from hwlat.device_tables.ops import OpSpec
    from hwlat.profilers.run import profile_ops as run
    from hwlat.profilers.sweeps import load_sweep

    def spec(s: Any) -> OpSpec:
        if isinstance(s, OpSpec):
            return s
        if isinstance(s, str):
            return OpSpec.from_key(s)
        raise OpSpecError(f"sweep item {s!r}: give an OpSpec or its key (op|dtype|NxCxHxW|k=v,...)")

    rt = _runtime(runtime, settings)
    specs = load_sweep(sweep) if isinstance(sweep, (str, os.PathLike)) else [spec(s) for s in sweep]
    return run(rt, specs, out, _protocol(rt, protocol), progress=progress, sweep_name=str(sweep) if isinstance(sweep, (str, os.PathLike)) else "specs",
               fresh=fresh)


def profile_archs(space: str | Space, archs: str | Sequence[Any], out: str | os.PathLike,
                  runtime: str | Runtime = "onnxruntime", protocol: str | Protocol | None = None, batch: int = 1,
                  seed: int = 0, progress: bool = True, fresh: bool = False, passes: int = 2,
                  **settings: Any) -> ArchRunResult:
    """`hwlat profile archs`: time whole architectures into the arch table at `out` (resumed; `fresh`: started again).
    `archs` is a spec as ``--archs`` takes it (``"0:100"``, ``"random:20"``, a file) or a list of
    architectures or keys; each is measured once per pass and keeps its quietest (`passes`)."""
    from hwlat.nas.spaces.measure import ArchItem, profile_archs as run, resolve_archs

    sp = _space(space)
    rt = _runtime(runtime, settings)
    if isinstance(archs, str):
        items = resolve_archs(sp, archs, seed=seed)
    else:
        parsed = [sp.arch(a) for a in archs]
        items = [ArchItem(a, sp.key_record(a)) for a in parsed]
    return run(sp, items, out, rt, protocol=_protocol(rt, protocol), progress=progress, batch=batch,
               fresh=fresh, passes=passes)


def profile_model(path: str | os.PathLike, runtime: str | Runtime = "onnxruntime", protocol: str | Protocol | None = None,
                  input_shape: str | Sequence[int] | Mapping[str, str | Sequence[int]] | None = None,
                  **settings: Any) -> ModelProfile | WholeModel:
    """`hwlat profile model`: whole-model latency and the runtime's per-node breakdown of an ONNX file
    (a `ModelProfile`; ``.format()`` prints it), or the whole model only on a runtime without a
    per-node profile (torch, LiteRT: a `WholeModel`). `input_shape` sizes dynamic inputs: one shape,
    or a name -> shape mapping for a model of several inputs."""
    from hwlat.device_tables.errors import ModelError

    if not isinstance(path, (str, os.PathLike)):
        raise ModelError(f"profile_model takes the path of a model file, not a {type(path).__name__}; save it first "
                         "(a torch module: torch.onnx.export)")
    rt = _runtime(runtime, settings)
    return rt.profile_model(str(path), protocol=_protocol(rt, protocol), input_shape=_shapes(input_shape))


def profile_fusion(runtime: str | Runtime, out: str | os.PathLike, patterns: Sequence[str] | None = None,
                   protocol: str | Protocol | None = None, progress: bool = True,
                   **settings: Any) -> tuple[FusionRules, list[PatternResult]]:
    """`hwlat profile fusion`: which op patterns the runtime fuses, measured and stored in the table at
    `out` (merged into its stored rules: a pattern measured now replaces its verdict, the others stay);
    returns (the table's `FusionRules`, the evidence of the patterns measured now)."""
    from hwlat.device_tables.table import DeviceTable
    from hwlat.profilers.fusion import check_patterns, measure_into

    if patterns is not None:
        patterns = check_patterns(patterns)
    rt = _runtime(runtime, settings)
    protocol = _protocol(rt, protocol)
    rt.check_protocol(protocol)
    with DeviceTable.open(out, rt.device(), rt.table_meta(protocol)) as table:  # before measuring
        run = measure_into(table, rt, patterns, protocol, progress=progress)
    return run.rules, run.results


# ---- predicting --------------------------------------------------------------------------------
def predict(model: Any, table: str | os.PathLike | DeviceTable, space: str | Space | None = None,
            input_shape: str | Sequence[int] | Mapping[str, str | Sequence[int]] | None = None, as_profiled: bool = False) -> Prediction:
    """A network's latency on a profiled device (`Prediction`: ``.latency_ms``, the breakdown
    ``.kernels``, ``.partial``, the uncertainty ``.sigma_ms``). `model` is an ONNX path, bytes or
    ``onnx.ModelProto``, a `Graph`, or an architecture (object or key) of `space`; `input_shape`
    sizes its dynamic inputs (one shape, or a name -> shape mapping: ``{"input_ids": (1, 128), ...}``; a
    shape may be written as on the command line, ``"1x3x224x224"``).
    A CPU table of this machine's kind predicts at this machine's speed now (``.speed``; `hwlat predict`),
    unless `as_profiled`."""
    from hwlat.predictors.lut import LUTPredictor

    if space is not None:
        sp = _space(space)
        model = sp.graph(sp.arch(model))
    graph = LUTPredictor.graph_of(model, _shapes(input_shape))  # a bad model is named before the table is read and timed
    return _lut(table, as_profiled).predict_graph(graph)


def _shapes(input_shape: Any) -> Any:
    """An `input_shape` as the command line writes it too (``"1x3x224x224"``, ``{"input_ids": "1x128"}``)
    as the shapes it stands for; other values as given."""
    from hwlat.device_tables.graph import parse_shape

    if isinstance(input_shape, str):
        return parse_shape(input_shape)
    if isinstance(input_shape, Mapping):
        return {k: parse_shape(v) if isinstance(v, str) else v for k, v in input_shape.items()}
    return input_shape


def _lut(table: str | os.PathLike | DeviceTable, as_profiled: bool) -> Any:
    """The lookup-table predictor of `table`, at this machine's speed now unless `as_profiled`; what
    `hwlat predict` warns of the table (a missing stage, another machine's table) is logged once."""
    from hwlat.device_tables.table import DeviceTable
    from hwlat.device_profile import at_speed_now, table_warnings
    from hwlat.predictors.lut import LUTPredictor

    table = table if isinstance(table, DeviceTable) else load_table(table)
    if str(table.path) not in _WARNED:
        _WARNED.add(str(table.path))
        for line in table_warnings(table):
            log.warning("%s", line)
    return at_speed_now(LUTPredictor(table), as_profiled)


def predict_archs(space: str | Space, archs: str | Sequence[Any], table: str | os.PathLike | DeviceTable,
                  seed: int = 0, jobs: int | None = None, as_profiled: bool = False) -> list[Prediction]:
    """`hwlat predict --archs`: predictions of many architectures of `space` (a spec as ``--archs``
    takes it, or a list of architectures or keys), in order, one table and predictor for all;
    `jobs` processes share the work (default: every usable core; the numbers do not depend on it);
    at this machine's speed now unless `as_profiled`, as `predict`."""
    from hwlat.predictors.lut.many import predict_archs as run

    sp = _space(space)
    arch_list = _arch_list(sp, archs, seed)
    return list(run(_lut(table, as_profiled), sp, arch_list, jobs))


def adapt(space: str | Space, archs: Sequence[Any], latencies_ms: Sequence[float],
          predictor: Any = "pretrained", device: str = "this device") -> ArchPredictor:
    """A few-shot predictor (the shipped meta-trained one by default) adapted to latencies measured on
    `device`: `archs` (objects or keys) and their `latencies_ms`, one each, in the same order; it works
    from 3, and improves with more (10 and more recommended). Bad input (a length mismatch, an
    architecture twice, a latency that is not a positive number of ms) is a `MeasurementsError`."""
    from hwlat.nas.few_shot import fit as run, measurements_of

    sp = _space(space)
    return run(sp, measurements_of(sp, archs, latencies_ms, device), predictor=predictor)


def suggest(space: str | Space, n: int = 20, seed: int = 0) -> list[str]:
    """`hwlat adapt suggest`: keys of the `n` architectures most worth measuring on a new device, most
    informative first (`seed` picks the candidates of spaces too large to enumerate)."""
    from hwlat.nas.few_shot import suggest as run

    sp = _space(space)
    return [sp.key(a) for a in run(sp, n, seed=seed)]


def fit(space: str | Space, measurements: str | os.PathLike, device: str | None = None) -> ArchPredictor:
    """`hwlat adapt fit` without the file: the shipped meta-trained predictor adapted to a CSV of
    measurements (an arch table, or a key column + a latency column in ms; `device` names the column
    when there are several). Save it with `save_predictor`."""
    from hwlat.nas.few_shot import fit as run

    return run(_space(space), measurements, device)


def save_predictor(predictor: ArchPredictor, path: str | os.PathLike) -> None:
    """Write an adapted predictor as ``PATH.npz`` + ``PATH.json`` (what `hwlat adapt fit --out` writes)."""
    from hwlat.nas.few_shot import save

    save(predictor, path)


def load_predictor(path: str | os.PathLike, space: str | Space) -> ArchPredictor:
    """A predictor saved by `save_predictor` or `hwlat adapt fit`, for architectures of `space`;
    ``predictor.predict(archs)`` gives ms, `predict_adapted` also the uncertainty."""
    from hwlat.nas.few_shot import load

    return load(path, _space(space))


def predict_adapted(space: str | Space, archs: str | Sequence[Any], predictor: str | os.PathLike | ArchPredictor,
                    seed: int = 0) -> tuple[list[str], Any, Any]:
    """`hwlat predict --predictor`: (keys, ms, sigma_ms) of architectures (a spec as ``--archs`` takes
    it, or a list of architectures or keys) from an adapted predictor (a path or the object)."""
    from hwlat.nas.arch_predictors import ArchPredictor as _ArchPredictor
    from hwlat.nas.few_shot import load, predict_with_sigma

    sp = _space(space)
    pred = predictor if isinstance(predictor, _ArchPredictor) else load(predictor, sp)
    arch_list = _arch_list(sp, archs, seed)
    ms, sigma = predict_with_sigma(pred, arch_list)
    return [sp.key(a) for a in arch_list], ms, sigma


def _arch_list(sp: Space, archs: str | Sequence[Any], seed: int) -> list[Any]:
    from hwlat.nas.spaces.measure import resolve_archs

    return [it.arch for it in resolve_archs(sp, archs, seed=seed)] if isinstance(archs, str) else [sp.arch(a) for a in archs]


# ---- searching ---------------------------------------------------------------------------------
def search(space: str | Space, constraint: Any, objective: Any = None, budget: int | None = None, method: str = "evolution",
           seed: int = 0, progress: bool = True, verify: Any = False) -> SearchResult:
    """`hwlat search`: the best architectures of `space` by `objective` under `constraint` (a
    `LatencyConstraint`). `objective`: ``accuracy:cifar10|cifar100|imagenet16-120`` (NATS-Bench,
    NB201 only), ``naswot`` (training-free proxy, not accuracy), a callable arch -> score (higher
    better), or None: the space's default (accuracy:cifar10 on nb201, naswot elsewhere).
    `budget`: architectures scored (default the objective's: 500 for an accuracy lookup, 100 for
    naswot or a function). `method`: evolution, random, or nsga2 (Optuna's NSGA-II; `budget`
    trials; needs optuna).
    `verify` (``--verify``): True or a `hwlat.nas.search.verified.VerifySettings` (margin, top, rounds,
    runtime, ...): search under the budget + the predictor's error band, measure the best here,
    and name in ``result.verified.winner`` the most accurate one that measures within the budget (not for a
    constraint that counts `sigmas` of the predictions' uncertainty: verify measures instead)."""
    from hwlat.nas.search.algorithms import METHODS, search_by_method
    from hwlat.nas.search.objectives import load_objective
    from hwlat.nas.search.verified import VerifySettings, search_verified

    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose evolution, random or nsga2")
    if not isinstance(constraint, LatencyConstraint):
        raise TypeError(f"constraint: a LatencyConstraint, not {type(constraint).__name__}; make one with "
                        "hwlat.LatencyConstraint(predictor, budget_ms=...)")
    if not isinstance(verify, (bool, VerifySettings)):
        raise TypeError(f"verify: True, False or a VerifySettings, not {type(verify).__name__}")
    sp = _space(space)
    objective = load_objective(objective, sp)
    budget = objective.default_budget if budget is None else budget

    def run(c: LatencyConstraint) -> SearchResult:
        return search_by_method(method, sp, objective, c, budget, seed=seed, progress=progress)

    if not verify:
        return run(constraint)
    settings = verify if isinstance(verify, VerifySettings) else VerifySettings(progress=progress)
    return search_verified(sp, constraint, run, settings)


def accuracy(space: str | Space, archs: Any, dataset: str = "cifar10") -> Any:
    """Trained test accuracy (%) of one architecture (a float; any key form: arch, index, arch string,
    ops code) or of a list of them (an array) on `dataset` (cifar10, cifar100, imagenet16-120): the
    NATS-Bench figures shipped with the project (NB201)."""
    from hwlat.nas.accuracy import accuracy_table

    table = accuracy_table(_space(space))
    return table.lookup_many(archs, dataset) if isinstance(archs, list) else table.lookup(archs, dataset)


__all__ = ["LatencyConstraint", "accuracy", "adapt", "drift", "fit", "load_predictor", "load_table", "predict", "predict_adapted",
           "predict_archs", "profile_archs", "profile_device", "profile_fusion", "profile_model", "profile_ops", "runtime",
           "save_predictor", "search", "space", "suggest", "tables"]
