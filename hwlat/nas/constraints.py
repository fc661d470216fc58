"""`LatencyConstraint`: a latency predictor + a budget, callable on architectures, with adapters
for NAS loops. Three lines:

    pred = load_arch_predictor("results/demo/predictor", "nb201")   # or any predictor + space
    c = LatencyConstraint(pred, budget_ms=2.0)
    c(arch).feasible; c(archs).latency_ms                            # one arch or a batch

Adapters: `optuna_constraints` (Optuna's ``constraints_func``: ``latency - budget``, feasible
when <= 0; NSGA-II, TPE, ...), `filter` (keep archs within ``[min_ms, budget_ms]``), `penalty` /
`penalize` (scaled, as NNI's ``ProfilerPenalty``: ``scale * f(latency / budget - 1)``) and
`expected_latency` (a supernet's expected latency under architecture probabilities, torch, with
gradients; see `hwlat.nas.latency_table`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.arch_predictors import ArchPredictor, as_arch_predictor, checked_latencies, fastest, needs_adaptation
from hwlat.nas.spaces.base import ArchError

log = logging.getLogger(__name__)

NONLINEAR = ("positive", "linear", "absolute", "negative")
AGGREGATE = ("add", "mul")
EVERY_ARCHITECTURE_MAX = 20_000  # `choice_table`'s auto predicts every architecture of a space this small


class InfeasibleBudgetError(HwlatError):
    """A latency budget that no architecture of the space meets (by the predictor)."""


class ConstraintError(HwlatError):
    """A constraint that is malformed (budget not positive, min above max, unadapted predictor)."""


@dataclass(frozen=True)
class LatencyCheck:
    """Predicted latency (ms), feasibility and margin (ms to the nearest bound; >= 0 when feasible)
    of one architecture (floats) or a batch (arrays); `sigma_ms`: the predictions' one sigma where the
    constraint counts sigmas, else None."""

    latency_ms: Any
    feasible: Any
    margin_ms: Any
    sigma_ms: Any = None


class LatencyConstraint:
    """``min_ms <= predicted latency <= budget_ms`` for architectures of one search space.

    `predictor`: anything `hwlat.nas.arch_predictors.as_arch_predictor` takes (a feature predictor such
    as an adapted `TransferPredictor`, a `LUTPredictor` with `space`, a function of architectures).
    A prediction that is not a latency (NaN, inf, negative) is a `PredictionError` naming the
    architecture, never a feasible answer; a given latency (`check`) that is not one is infeasible.
    A device table predicts at this machine's speed now unless `as_profiled` (as `hwlat predict`), read
    once, when the constraint is made: a new one reads it again.
    It pickles (to `multiprocessing` or `concurrent.futures` workers) with what it holds; one over a
    function pickles only where the function does (defined at a module's top level, not a lambda).

    `sigmas` k > 0: feasible only if ``predicted + k sigma <= budget_ms`` (and ``predicted - k sigma
    >= min_ms``), sigma being the predictor's one-sigma uncertainty of each prediction
    (`ArchPredictor.sigma`: a device table's `sigma_ms`, an adapted predictor's `relative_sigma`);
    margins, `violation`, `filter`, the Optuna adapters and `penalty` count it too. `latency` and
    `LatencyCheck.latency_ms` stay the prediction itself; `LatencyCheck.sigma_ms` is its sigma. A
    given latency (`check` without `sigma_ms`, a measured one) is taken as it is. k = 0 (the default)
    computes no sigma.
    """

    def __init__(self, predictor: Any, budget_ms: float, *, min_ms: float | None = None, space: Any = None,
                 as_profiled: bool = False, sigmas: float = 0.0):
        self.predictor: ArchPredictor = as_arch_predictor(predictor, space, as_profiled)
        self.space = self.predictor.space
        if needs_adaptation(self.predictor):
            raise ConstraintError(f"the {self.predictor.name} predictor has not been adapted to a device; adapt it to "
                                  "measured latencies first (`hwlat adapt fit`, `--device-samples FILE` in `hwlat "
                                  "search`, or hwlat.fit / hwlat.adapt in Python)")
        if not (math.isfinite(_ms(budget_ms)) and budget_ms > 0):
            raise ConstraintError(f"latency budget {budget_ms} ms: must be a finite positive number of milliseconds")
        if min_ms is not None and not (math.isfinite(_ms(min_ms)) and min_ms >= 0):
            raise ConstraintError(f"minimum latency {min_ms} ms: must be a finite number of milliseconds, 0 or more")
        if min_ms is not None and min_ms > budget_ms:
            raise ConstraintError(f"minimum latency {min_ms} ms is above the budget {budget_ms} ms")
        if not (math.isfinite(_ms(sigmas)) and sigmas >= 0):
            raise ConstraintError(f"sigmas={sigmas}: must be a finite number of standard deviations, 0 or more")
        require_sigma(self.predictor, sigmas)
        lut = getattr(self.predictor, "lut", None)
        if sigmas and lut is not None and not lut.network_error:  # as `hwlat predict --archs` notes it
            log.warning("%s: sigma_ms is the regressed kernels' part only: %s; %g sigma of it add nothing to a "
                        "network of looked-up rows", self.predictor.name, lut.unscored, sigmas)
        self.budget_ms = float(budget_ms)
        self.min_ms = None if min_ms is None else float(min_ms)
        self.sigmas = float(sigmas)
        self._table = None

    def __repr__(self) -> str:
        lo = f"{self.min_ms} <= " if self.min_ms is not None else ""
        k = f" ± {self.sigmas:g} sigma" if self.sigmas else ""
        return f"LatencyConstraint({lo}latency{k} <= {self.budget_ms} ms, {self.space.name}, {self.predictor.name})"

    # ---- core ---------------------------------------------------------------------------------
    def _is_single(self, x: Any) -> bool:
        return (self.space.is_arch(x) or isinstance(x, (str, bytes, int, np.integer, dict))
                or not isinstance(x, Iterable))

    def latency(self, archs: Any) -> Any:
        """Predicted ms of one architecture (float) or a batch (array)."""
        return self.predicted(archs)[0]

    def predicted(self, archs: Any) -> tuple[Any, Any]:
        """(predicted ms, one-sigma ms) of one architecture (floats) or a batch (arrays); the sigma is
        None where the constraint counts no sigmas (it is not computed)."""
        single = self._is_single(archs)
        archs = [archs] if single else list(archs)
        ms, sigma = self.predictor.predict_with_sigma(archs) if self.sigmas else (self.predictor.predict(archs), None)
        ms = checked_latencies(self.predictor, archs, ms)
        if single:
            return float(ms[0]), None if sigma is None else float(sigma[0])
        return ms, None if sigma is None else np.asarray(sigma, dtype=float)

    def violation(self, latency_ms: Any, sigma_ms: Any = None) -> Any:
        """How far outside the bounds (ms; <= 0 inside): ``latency + k sigma - budget`` (and ``min -
        (latency - k sigma)``), k = `sigmas`, with the predictions' `sigma_ms` where given."""
        ms = np.asarray(latency_ms, dtype=float)
        spread = 0.0 if sigma_ms is None else self.sigmas * np.asarray(sigma_ms, dtype=float)
        v = ms + spread - self.budget_ms
        if self.min_ms is not None:
            v = np.maximum(v, self.min_ms - (ms - spread))
        return float(v) if v.ndim == 0 else v

    def check(self, latency_ms: Any, sigma_ms: Any = None) -> LatencyCheck:
        """The verdict for given latencies (ms), e.g. measured ones, counting `sigmas` of the given
        `sigma_ms` (predictions' uncertainty; none for measured ones); one that is not a latency (NaN,
        inf, negative: a failed measurement) is never feasible, nor one whose sigma is NaN."""
        v = self.violation(latency_ms, sigma_ms)
        ms = np.asarray(latency_ms, dtype=float)
        feasible = (np.asarray(v) <= 0) & np.isfinite(ms) & (ms >= 0)
        lat = latency_ms if np.ndim(latency_ms) else float(latency_ms)
        return LatencyCheck(lat, bool(feasible) if feasible.ndim == 0 else feasible, -v, sigma_ms)

    def __call__(self, archs: Any) -> LatencyCheck:
        """Predicted latency, feasibility and margin of one architecture or a batch (vectorised)."""
        return self.check(*self.predicted(archs))

    def feasible(self, archs: Any) -> Any:
        return self(archs).feasible

    # ---- adapters: loops ----------------------------------------------------------------------
    def filter(self, archs: Iterable[Any]) -> list[Any]:
        """The architectures whose predicted latency is within ``[min_ms, budget_ms]``."""
        archs = list(archs)
        if not archs:
            return []
        ok = np.atleast_1d(self(archs).feasible)
        return [a for a, keep in zip(archs, ok) if keep]

    def penalty(self, latency_ms: Any, scale: float = 1.0, nonlinear: str = "positive", sigma_ms: Any = None) -> Any:
        """``scale * f(latency / budget - 1)`` for floats, arrays or torch tensors (differentiable);
        f: positive = max(0, .) (only over-budget costs), linear, absolute (TuNAS), negative. With
        `sigmas` k > 0, the latency is ``latency + k sigma_ms`` (the predictions' sigma: needed)."""
        if nonlinear not in NONLINEAR:
            raise ConstraintError(f"nonlinear {nonlinear!r}: choose from {', '.join(NONLINEAR)}")
        if self.sigmas:
            if sigma_ms is None:
                raise ConstraintError(f"penalty of a constraint that counts {self.sigmas:g} sigma: pass the predictions' "
                                      "sigma_ms (constraint(archs).sigma_ms), or 0 to penalise the latency alone")
            latency_ms = latency_ms + self.sigmas * sigma_ms
        rel = latency_ms / self.budget_ms - 1.0
        if nonlinear == "positive":
            rel = _relu(rel)
        elif nonlinear == "absolute":
            rel = abs(rel)
        elif nonlinear == "negative":
            rel = -_relu(-rel)
        return scale * rel

    def penalize(self, loss: Any, latency_ms: Any, scale: float = 1.0, nonlinear: str = "positive",
                 aggregate: str = "add", sigma_ms: Any = None) -> Any:
        """A loss (lower is better) with the latency penalty: ``loss + scale * f(.)`` (add) or
        ``loss * (1 + f(.)) ** scale`` (mul), as NNI's ``ProfilerPenalty``. For a reward, subtract."""
        if aggregate not in AGGREGATE:
            raise ConstraintError(f"aggregate {aggregate!r}: choose from {', '.join(AGGREGATE)}")
        if aggregate == "add":
            return loss + self.penalty(latency_ms, scale, nonlinear, sigma_ms)
        return loss * (1.0 + self.penalty(latency_ms, 1.0, nonlinear, sigma_ms)) ** scale

    # ---- adapters: Optuna ---------------------------------------------------------------------
    def optuna_constraints(self, arch_of: Callable[[Any], Any] | None = None,
                           attr: str = "arch") -> Callable[[Any], list[float]]:
        """Optuna ``constraints_func(frozen_trial) -> [latency - budget]`` (plus ``min - latency``
        with a minimum); Optuna calls a trial feasible when every value is <= 0.

        The trial's architecture is ``arch_of(trial)``, else its user attribute `attr` (set by
        `suggest_arch`), else built from its parameters named after the space's decisions."""
        from hwlat.nas.choices import space_decisions

        decisions = space_decisions(self.space)

        def constraints(trial: Any) -> list[float]:
            if arch_of is not None:
                arch = arch_of(trial)
            elif attr in trial.user_attrs:
                arch = trial.user_attrs[attr]
            else:
                try:
                    arch = decisions.from_params(trial.params)
                except ArchError as e:
                    raise ArchError(f"Optuna trial {trial.number}: no {self.space.name} architecture to constrain: it "
                                    f"has no user attribute {attr!r}, and its parameters do not name one ({e}); sample "
                                    f"it with hwlat.nas.constraints.suggest_arch(trial, {self.space.name!r}), or pass "
                                    "arch_of=(trial -> architecture) to optuna_constraints") from None
            lat, sigma = self.predicted(arch)
            spread = 0.0 if sigma is None else self.sigmas * sigma
            trial_values = [lat + spread - self.budget_ms]
            if self.min_ms is not None:
                trial_values.append(self.min_ms - (lat - spread))
            return trial_values

        return constraints

    def optuna_set_constraint(self, trial: Any, arch: Any, latency_ms: float | None = None) -> float:
        """Record ``latency - budget`` on a running Optuna trial (``trial.set_constraint``, the
        Optuna >= 5 way that replaces ``constraints_func``; with `sigmas`, ``latency + k sigma - budget``);
        returns the predicted latency (ms). `latency_ms`: the architecture's predicted latency when the
        caller has it already."""
        if not hasattr(trial, "set_constraint"):
            raise ConstraintError("this Optuna has no Trial.set_constraint (Optuna < 5): pass "
                                  "constraints_func=constraint.optuna_constraints() to the sampler instead")
        lat, sigma = self.predicted(arch) if latency_ms is None or self.sigmas else (float(latency_ms), None)
        spread = 0.0 if sigma is None else self.sigmas * sigma
        trial.set_constraint("latency", lat + spread - self.budget_ms)
        if self.min_ms is not None:
            trial.set_constraint("min_latency", self.min_ms - (lat - spread))
        return lat

    # ---- adapters: differentiable NAS -----------------------------------------------------------
    def choice_table(self, method: str = "auto", n: int = 1000, seed: int = 0):
        """The per-choice latency table behind `expected_latency` (built once, then kept):
        ``every_architecture`` (the exact expectation; ``auto`` where the space has at most
        `EVERY_ARCHITECTURE_MAX` architectures, as NB201), ``least_squares`` fit of the predictor on `n`
        sampled architectures (``auto`` elsewhere), or ``one_at_a_time`` differences (exact only for a
        predictor that is a sum over decisions)."""
        from hwlat.nas.choices import space_decisions
        from hwlat.nas.latency_table import ChoiceLatencyTable

        if self._table is None or method != "auto":
            if method == "auto":
                small = math.prod(space_decisions(self.space).sizes) <= EVERY_ARCHITECTURE_MAX
                method = "every_architecture" if small else "least_squares"
            if method == "every_architecture":
                self._table = ChoiceLatencyTable.every_architecture(self.space, self.predictor)
            elif method == "least_squares":
                self._table = ChoiceLatencyTable.least_squares(self.space, self.predictor, n=n, seed=seed)
            elif method == "one_at_a_time":
                self._table = ChoiceLatencyTable.one_at_a_time(self.space, self.predictor)
            else:
                raise ConstraintError(f"method {method!r}: choose auto, every_architecture, least_squares or one_at_a_time")
            log.info("%s", self._table.describe())
        return self._table

    def expected_latency(self, probs: Any, table: Any = None) -> Any:
        """Expected latency (ms, torch, differentiable) of a supernet under architecture
        probabilities (see `ChoiceLatencyTable.expected_ms`); add ``penalty(...)`` of it to the loss."""
        return (table or self.choice_table()).expected_ms(probs)

    # ---- sanity -------------------------------------------------------------------------------
    def fastest(self, sample: int = 512, seed: int = 0) -> tuple[Any, float, int, bool]:
        """(arch, ms, archs looked at, exhaustive) of the fastest predicted architecture, by its
        prediction + `sigmas` sigma."""
        return fastest(self.predictor, sample, seed, self.sigmas)

    def check_budget(self, sample: int = 512, seed: int = 0) -> tuple[Any, float, int, bool]:
        """Raise `InfeasibleBudgetError` when the budget is below the fastest predicted architecture
        (its prediction + `sigmas` sigma); else return `fastest`'s (arch, ms, archs looked at, exhaustive)."""
        arch, ms, n, exhaustive = self.fastest(sample, seed)
        sigma = self.predicted(arch)[1] or 0.0
        reach = ms + self.sigmas * sigma
        if reach > self.budget_ms:
            where = f"of all {n}" if exhaustive else f"of {n} sampled"
            counted, at, fewer = "", f"{ms:.4g} ms predicted", ""
            if self.sigmas:
                counted, fewer = f" counting {self.sigmas:g} sigma", " or count fewer sigmas"
                at += f" + {self.sigmas:g} x {sigma:.4g} ms sigma = {reach:.4g} ms"
            verdict = ("no architecture can meet it" if exhaustive else
                       "a search, sampling the space, would hardly find one that does (rarer ones may be faster)")
            raise InfeasibleBudgetError(
                f"latency budget {self.budget_ms:g} ms is below the fastest {self.space.name} architecture "
                f"({where}){counted}: {self.space.key(arch)} at {at}; {verdict}; "
                f"use a budget of at least {_rounded_up(reach)} ms{fewer}")
        return arch, ms, n, exhaustive


def suggest_arch(trial: Any, space: Any, attr: str = "arch") -> Any:
    """Sample an architecture in an Optuna trial (one categorical parameter per decision of the
    space) and store its key as the trial's user attribute `attr` for `optuna_constraints`."""
    from hwlat.nas.choices import space_decisions
    from hwlat.nas.spaces import get_space

    sp = get_space(space) if isinstance(space, str) else space
    dec = space_decisions(sp)
    params = {n: trial.suggest_categorical(n, list(c)) for n, c in zip(dec.names, dec.choices)}
    arch = dec.from_params(params)
    trial.set_user_attr(attr, sp.key(arch))
    return arch


def require_sigma(predictor: ArchPredictor, sigmas: float) -> None:
    """A `ConstraintError` where `sigmas` > 0 and the predictor gives no sigma to count them of."""
    if sigmas and predictor.sigma([]) is None:  # [] asks only whether it gives one
        raise ConstraintError(f"the {predictor.name} predictor gives no sigma (uncertainty) of its predictions to "
                              f"count {sigmas:g} of; use sigmas=0, or a device table or an adapted predictor")


def _rounded_up(ms: float, digits: int = 4) -> str:
    """`ms` to `digits` significant digits, rounded up: a budget named as enough must be (0.15049 -> 0.1505)."""
    if not (math.isfinite(ms) and ms > 0):
        return f"{ms:g}"
    step = 10.0 ** (math.floor(math.log10(ms)) - digits + 1)
    return f"{math.ceil(ms / step - 1e-9) * step:.{digits}g}"


def _ms(x: Any) -> float:
    """`x` as a float of ms, NaN for what is not a number (a string, a bool, None, a list)."""
    try:
        return math.nan if isinstance(x, (str, bytes, bool)) else float(x)
    except (TypeError, ValueError):
        return math.nan


def _relu(x: Any) -> Any:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return torch.relu(x)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.maximum(x, 0.0)


__all__ = ["ConstraintError", "InfeasibleBudgetError", "LatencyCheck", "LatencyConstraint", "suggest_arch"]
