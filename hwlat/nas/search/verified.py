"""Verified search: the predictor's last few percent near the budget, resolved by measurement.

A predictor is right only to within its error, and on another machine (or another day) it may be
off by a common factor too, so which architectures near the budget really meet it is a question
for the device. A verified search runs under the budget widened by the predictor's error band,
then measures the most accurate candidates, `top` per round, and names as winner the most
accurate architecture that MEASURES within the budget. What was measured corrects the rest:

- the predictions are scaled by the median measured/predicted ratio so far (the predictor's bias
  here: a table measured on another host, the device's drift since), and the band becomes the
  80th percentile of the corrected predictions' errors on what was measured;
- candidates come from the whole space, ranked by score, when scoring every architecture costs
  nothing (a looked-up accuracy on NB201: `Objective.scores_by_index`), predicted lazily in score
  order; otherwise from the search, run again under the corrected budget when the correction
  moves it (so a predictor that overpredicts by 1.3x does not leave the budget's last 30% unsearched);
- each round measures the most accurate candidates not yet measured that beat the best measured
  within the budget so far and whose corrected prediction is within the round's limit (the budget
  + the band, narrowing to the budget in the last round); it stops when none is left.

    search = lambda wide: regularized_evolution(space, "accuracy:cifar10", wide, budget=500)
    result = search_verified(space, c, search)   # widened by error_band(c.predictor), e.g. 2.3%
    result.verified.winner                      # a Candidate; result.verified.winner_ms: measured
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwlat.nas.constraints import ConstraintError, LatencyConstraint
from hwlat.nas.search.result import Candidate, SearchResult
from hwlat.nas.spaces.base import Space

BAND_QUANTILE = 0.8  # of the predictor's relative errors on what it was not fit to
MAX_BAND = 0.2
MIN_BAND_SAMPLES = 5  # measured architectures before their errors replace the predictor's stated band
RESEARCH_TOLERANCE = 0.02  # search again when the corrected, widened budget moves by more than this
RANK_BATCH = 256  # architectures of a ranked space predicted at once


@dataclass(frozen=True)
class ErrorBand:
    """How far above the budget (a fraction) a prediction may be while its architecture still
    measures within it, and where that figure comes from."""

    fraction: float
    source: str


def error_band(predictor: Any) -> ErrorBand:
    """The predictor's own error band: the 80th percentile (at most 20%) of its relative errors on
    what it was not fit to (a lookup table's self-score networks, a few-shot predictor's
    leave-one-out errors on its measurements); 0 for a predictor that states none."""
    name = getattr(predictor, "name", type(predictor).__name__)
    table = getattr(getattr(predictor, "lut", None), "table", None)
    if table is not None:
        ratios = ((table.meta.get("self_score") or {}).get("ratios") or {}).values()
        errors = np.abs(np.asarray(list(ratios), dtype=float) - 1.0)
    else:
        errors = np.asarray(getattr(getattr(predictor, "predictor", None), "loo_rel_error_", []), dtype=float)
    errors = errors[np.isfinite(errors)]
    if not errors.size:
        return ErrorBand(0.0, f"{name} states no error estimate; give a margin to measure beyond the budget")
    what = (f"|predicted/measured - 1| of table {table.name} on the {errors.size} networks it was not calibrated on"
            if table is not None else f"leave-one-out error of {name} on its {errors.size} measurements")
    q = float(np.quantile(errors, BAND_QUANTILE))
    capped = f", capped at {MAX_BAND:.0%}" if q > MAX_BAND else ""
    return ErrorBand(min(q, MAX_BAND), f"{BAND_QUANTILE:.0%} quantile of the {what}{capped}")


POOLS = ("auto", "search")


@dataclass(frozen=True)
class VerifySettings:
    """How a search is verified: `margin` (None: the predictor's `error_band`), architectures
    measured per round (`top`), at most `rounds` rounds, where and how they are measured (`out`:
    an arch table, resumed: architectures already in it are not measured again), and the `pool`
    of candidates: "auto" (the whole space ranked by score where the objective scores it for free,
    else the search's) or "search" (the search's architectures, and its runs under corrected budgets);
    `precision`: the runtime's (None: its own; int8 with litert to verify an int8 table)."""

    margin: float | None = None
    top: int = 5
    rounds: int = 3
    runtime: str = "onnxruntime"
    threads: int = 1
    protocol: str = "brief"
    out: str | Path | None = None
    progress: bool = True
    pool: str = "auto"
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ConstraintError(f"verify pool {self.pool!r}: choose {' or '.join(POOLS)}")
        if self.margin is not None and not (math.isfinite(self.margin) and 0 <= self.margin < 1):
            raise ConstraintError(f"verify margin {self.margin}: a fraction at least 0 and below 1 (0.05 = 5%)")
        if self.top < 1 or self.rounds < 1:
            raise ConstraintError(f"verify top={self.top}, rounds={self.rounds}: each must be at least 1")

    def band(self, predictor: Any) -> ErrorBand:
        """The margin given, or else the predictor's error band."""
        return error_band(predictor) if self.margin is None else ErrorBand(self.margin, "given")


def widened(constraint: LatencyConstraint, fraction: float) -> LatencyConstraint:
    """The constraint with its budget raised by `fraction`: what a verified search searches under."""
    return LatencyConstraint(constraint.predictor, constraint.budget_ms * (1 + fraction), min_ms=constraint.min_ms)


# A median measured/predicted ratio beyond this (either way) says the predictor predicts another device.
FAR_OFF = 1.5


@dataclass
class VerifiedSearch:
    """What verification measured (`measured`, in the order measured; `ms` their measured
    latencies) and the `winner`: the most accurate of them that measured within the budget (None
    if none). `rounds`: per round, (limit on the raw prediction, correction used, archs measured);
    `bands`: the band each round used; `searches`: (raw-ms budget, archs scored) of each search run
    again under a corrected budget; `pool`: where the candidates came from."""

    budget_ms: float
    band: ErrorBand
    candidates: int  # searched architectures predicted within budget * (1 + band)
    measured: list[Candidate]
    ms: np.ndarray
    rounds: list[tuple[float, float, int]]
    device: str
    protocol: str
    seconds: float
    winner: Candidate | None = None
    winner_ms: float = math.nan
    bands: list[float] = field(default_factory=list)
    searches: list[tuple[float, int]] = field(default_factory=list)
    pool: str = "the search's architectures"
    ranked_predicted: int = 0  # architectures of the ranked space predicted (lazily, in score order)
    correction: float = 1.0  # the median measured/predicted ratio of all measured
    exhausted: bool = False  # stopped because no candidate left could beat the winner
    min_ms: float | None = None  # the constraint's lower bound: a winner measures at least this too

    @property
    def limit_ms(self) -> float:
        return self.budget_ms * (1 + self.band.fraction)

    def verification(self) -> Any:
        """The measured architectures as a `hwlat.nas.device_loop.Verification` (predicted vs measured)."""
        from hwlat.nas.device_loop import Verification

        return Verification([c.key for c in self.measured], np.asarray([c.latency_ms for c in self.measured]),
                            self.ms, self.budget_ms, self.device, self.seconds)

    def format(self, score_name: str = "score") -> str:
        """What was measured and why, round by round, and the winner."""
        n = len(self.measured)
        rounds = ", ".join(f"{k} predicted <= {limit:.4g} ms" + (f" (x{r:.3f}: measured/predicted so far, band "
                                                                 f"{b:.1%})" if j else "")
                           for j, ((limit, r, k), b) in enumerate(zip(self.rounds, self.bands)))
        again = "".join(f"; searched again under {ms:.4g} ms predicted ({k} scored)" for ms, k in self.searches)
        ranked = f", {self.ranked_predicted} of them predicted" if self.ranked_predicted else ""
        stop = ("none left that could beat the winner" if self.exhausted else "the rounds ran out")
        lines = [f"verification: candidates: {self.pool}{ranked} ({self.candidates} of the searched ones predicted within "
                 f"{self.limit_ms:.4g} ms: budget {self.budget_ms:.4g} ms + {self.band.fraction:.1%} error band: "
                 f"{self.band.source}); the most accurate by {score_name} measured on {self.device} (protocol "
                 f"{self.protocol}), predictions corrected by what was measured, in rounds narrowing to the budget "
                 f"while one could beat the best within it: {rounds}{again} ({n} in {self.seconds:.1f} s; stopped: "
                 f"{stop})"]
        width, sw = max([len(c.key) for c in self.measured] + [12]), max(8, len(score_name))
        lines.append(f"  {'architecture':<{width}}  {score_name:>{sw}}  {'predicted ms':>12}  {'measured ms':>11}  "
                     f"{'error':>7}  within budget")
        for c, m in zip(self.measured, self.ms):
            why = " (predicted over the budget, within its error band)" if c.latency_ms > self.budget_ms else ""
            if not math.isfinite(m):
                lines.append(f"  {c.key:<{width}}  {c.score:>{sw}.3f}  {c.latency_ms:>12.4f}  {'failed':>11}{why}")
                continue
            within = ("yes" if m <= self.budget_ms else f"NO (+{m - self.budget_ms:.3f} ms)") \
                if self.min_ms is None or m >= self.min_ms else f"NO (-{self.min_ms - m:.3f} ms: below the minimum)"
            lines.append(f"  {c.key:<{width}}  {c.score:>{sw}.3f}  {c.latency_ms:>12.4f}  {m:>11.4f}  "
                         f"{(c.latency_ms - m) / m:>+7.1%}  {within}{why}")
        w = self.winner
        bounds = f"{self.budget_ms:.4g} ms" if self.min_ms is None else f"{self.min_ms:.4g}..{self.budget_ms:.4g} ms"
        if w is None:
            lines.append(f"winner: none of the {n} measured within {bounds}; "
                         f"{'raise the budget' if self.min_ms is None else 'widen the bounds'}, or measure more "
                         "(rounds, top)")
        else:
            over = ", predicted over the budget: found by measuring" if w.latency_ms > self.budget_ms else ""
            lines.append(f"winner (best {score_name} measured within {bounds}): {w.score:.3f} at "
                         f"{self.winner_ms:.4f} ms measured ({w.latency_ms:.4f} predicted{over}): {w.key}")
        if self.measured and math.isfinite(self.correction) and not 1 / FAR_OFF <= self.correction <= FAR_OFF:
            lines.append(f"note: {self.device} measured {self.correction:.2f}x the predictions (median): the predictor "
                         "predicts another device, or this one in another state, than the one measured here; the winner "
                         "stands on these measurements, predictions of what was not measured are off by about that much")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        nan = lambda v: None if not math.isfinite(v) else float(v)  # noqa: E731
        w = self.winner
        return {"budget_ms": self.budget_ms, "min_ms": self.min_ms, "margin": self.band.fraction, "margin_source": self.band.source,
                "limit_ms": self.limit_ms, "candidates": self.candidates, "pool": self.pool,
                "ranked_predicted": self.ranked_predicted, "correction": self.correction, "exhausted": self.exhausted,
                "rounds": [{"limit_ms": limit, "correction": r, "band": b, "measured": k}
                           for (limit, r, k), b in zip(self.rounds, self.bands)],
                "searches": [{"limit_ms": ms, "scored": k} for ms, k in self.searches], "device": self.device,
                "protocol": self.protocol, "seconds": round(self.seconds, 2),
                "archs": [{"key": c.key, "score": c.score, "predicted_ms": c.latency_ms, "measured_ms": nan(float(m))}
                          for c, m in zip(self.measured, self.ms)],
                "winner": None if w is None else {"key": w.key, "score": w.score, "predicted_ms": w.latency_ms,
                                                  "measured_ms": float(self.winner_ms)}}


def search_verified(space: Space, constraint: LatencyConstraint, search: Callable[[LatencyConstraint], SearchResult],
                    settings: VerifySettings = VerifySettings(), band: ErrorBand | None = None) -> SearchResult:
    """Run `search` under `constraint` widened by `band` (default: `settings.band`, the margin given
    or the predictor's error band), then verify it by measuring (`result.verified`); `search` runs
    again under a corrected budget when what was measured moves it (see `verify_search`)."""
    if constraint.sigmas:
        raise ConstraintError(f"verify with a constraint that counts {constraint.sigmas:g} sigma: verify measures the "
                              "candidates near the budget (under the budget + the predictor's error band) and names "
                              "one that measures within it; use sigmas=0 (--sigmas 0) with verify")
    band = band or settings.band(constraint.predictor)
    result = search(widened(constraint, band.fraction))
    result.verified = verify_search(space, result, constraint, band, settings, search)
    return result


def round_limits(budget_ms: float, band: float, rounds: int) -> list[float]:
    """Limit of each round on the corrected prediction: the budget + the band first, narrowing
    evenly to the budget itself in the last round."""
    if rounds == 1:
        return [budget_ms * (1 + band)]
    return [budget_ms * (1 + band * (1 - r / (rounds - 1))) for r in range(rounds)]


class _Ranking:
    """Every architecture of a space in order of score (free: a lookup), its latency predicted
    lazily in that order, in batches: where a verified search finds candidates the search never scored."""

    def __init__(self, space: Space, scores: np.ndarray, predictor: Any):
        self.space, self.scores, self.predictor = space, np.asarray(scores, dtype=float), predictor
        self.order = np.argsort(-self.scores, kind="stable")
        self.ms = np.full(len(self.scores), np.nan)
        self.predicted = 0  # self.order[:predicted] have predictions

    def _predict_more(self) -> None:
        from hwlat.nas.arch_predictors import checked_latencies

        idx = self.order[self.predicted:self.predicted + (RANK_BATCH if self.predictor.fast else RANK_BATCH // 8)]
        archs = [self.space.from_index(int(i)) for i in idx]
        self.ms[idx] = checked_latencies(self.predictor, archs, self.predictor.predict(archs))
        self.predicted += len(idx)

    def best(self, k: int, above: float, admissible: Callable[[float], bool], exclude: set[str]) -> list[Candidate]:
        """The `k` highest-scoring architectures scoring above `above`, not in `exclude`, whose
        predicted ms is `admissible`."""
        out: list[Candidate] = []
        pos = 0
        while len(out) < k and pos < len(self.order) and self.scores[self.order[pos]] > above:
            if pos >= self.predicted:
                self._predict_more()
            i = int(self.order[pos])
            pos += 1
            if admissible(self.ms[i]):
                arch = self.space.from_index(i)
                key = self.space.key(arch)
                if key not in exclude:
                    out.append(Candidate(arch, key, float(self.ms[i]), float(self.scores[i]), True, -1))
        return out


def _ranking(space: Space, result: SearchResult, predictor: Any, settings: VerifySettings) -> _Ranking | None:
    """The whole space ranked by the search's objective, where that is free and the settings allow it."""
    scorer = result.scorer
    if settings.pool != "auto" or scorer is None or space.size is None or not hasattr(space, "from_index"):
        return None
    scores = scorer.scores_by_index()
    if scores is None or len(scores) != space.size:
        return None
    return _Ranking(space, scores, predictor)


def measured_band(predicted: np.ndarray, ms: np.ndarray, ratio: float) -> float | None:
    """The 80th percentile (at most `MAX_BAND`) of |measured / (predicted * ratio) - 1| over the
    measured architectures, once at least `MIN_BAND_SAMPLES` measured; else None."""
    ok = np.isfinite(ms) & np.isfinite(predicted) & (predicted > 0)
    if ok.sum() < MIN_BAND_SAMPLES:
        return None
    return min(float(np.quantile(np.abs(ms[ok] / (predicted[ok] * ratio) - 1.0), BAND_QUANTILE)), MAX_BAND)


def verify_search(space: Space, result: SearchResult, constraint: LatencyConstraint, band: ErrorBand,
                  settings: VerifySettings = VerifySettings(),
                  search: Callable[[LatencyConstraint], SearchResult] | None = None) -> VerifiedSearch:
    """Measure candidates in rounds (at most `settings.rounds`, `settings.top` each) until none left
    could beat the best measured within `constraint`. Candidates: the whole space ranked by score
    where `result`'s objective scores it for free (`settings.pool` "auto"), else `result`'s
    architectures plus those of `search` run again under the budget corrected by what was measured.
    Each round takes the most accurate not yet measured that score above the best measured within
    the budget so far and whose prediction, times the median measured/predicted ratio so far (1 at
    first), is within that round's limit (`round_limits` of the band: `band` at first, then the
    `measured_band` once enough are measured). The winner is the most accurate measured within the budget."""
    from hwlat.nas.constraints import InfeasibleBudgetError
    from hwlat.nas.device_loop import measure

    pred, budget, lo = constraint.predictor, constraint.budget_ms, constraint.min_ms or 0.0
    frac, ratio = band.fraction, 1.0
    first_limit = budget * (1 + frac)
    pool: dict[str, Candidate] = {}
    for c in result.history:
        if math.isfinite(c.latency_ms):
            pool.setdefault(c.key, c)
    n_within = sum(c.latency_ms <= first_limit for c in pool.values())
    ranking = _ranking(space, result, pred, settings)
    searched = first_limit  # the raw-ms budget the pool's search ran under
    measured: list[Candidate] = []
    ms: list[float] = []
    device, seconds, used, bands, searches, exhausted = "", 0.0, [], [], [], False
    for r in range(settings.rounds):
        limit = round_limits(budget, frac, settings.rounds)[r]
        need = budget * (1 + frac) / ratio
        if ranking is None and search is not None and abs(need / searched - 1) > RESEARCH_TOLERANCE:
            try:
                more = search(LatencyConstraint(pred, need, min_ms=constraint.min_ms))
            except (ConstraintError, InfeasibleBudgetError):
                more = None
            if more is not None:
                for c in more.history:
                    if math.isfinite(c.latency_ms):
                        pool.setdefault(c.key, c)
                searches.append((need, more.evaluations))
            searched = need
        within = [c.score for c, m in zip(measured, ms) if constraint.check(m).feasible]
        above = max(within, default=-math.inf)
        done = {c.key for c in measured}

        def admissible(p: float, limit: float = limit, ratio: float = ratio) -> bool:
            return math.isfinite(p) and lo * (1 - frac) <= p * ratio <= limit

        batch = [c for c in pool.values() if c.key not in done and c.score > above and admissible(c.latency_ms)]
        batch = sorted(batch, key=lambda c: (-c.score, c.latency_ms))[:settings.top]
        if ranking is not None:
            batch += ranking.best(settings.top, above, admissible, done | {c.key for c in batch})
            batch = sorted(batch, key=lambda c: (-c.score, c.latency_ms))[:settings.top]
        if not batch:
            exhausted = True
            break
        m = measure(space, [c.arch for c in batch], settings.out, runtime=settings.runtime, threads=settings.threads,
                    protocol=settings.protocol, progress=settings.progress, precision=settings.precision)
        measured += batch
        ms += [float(x) for x in m.ms]
        device, seconds = m.device, seconds + m.seconds
        used.append((limit / ratio, ratio, len(batch)))
        bands.append(frac)
        predicted = np.asarray([c.latency_ms for c in measured])
        ratios = np.asarray(ms) / predicted
        if np.isfinite(ratios).any():
            ratio = float(np.median(ratios[np.isfinite(ratios)]))
        here = measured_band(predicted, np.asarray(ms), ratio)
        frac = frac if here is None else here
    pool_text = (f"all {space.size} {space.name} architectures ranked by score (a lookup) + the search's {len(pool)}"
                 if ranking is not None else f"the search's {len(pool)} architectures")
    out = VerifiedSearch(budget, band, n_within, measured, np.asarray(ms, dtype=float), used, device,
                         settings.protocol, seconds, bands=bands, searches=searches, pool=pool_text,
                         ranked_predicted=ranking.predicted if ranking is not None else 0, correction=ratio,
                         exhausted=exhausted, min_ms=constraint.min_ms)
    ok = [i for i in range(len(measured)) if constraint.check(ms[i]).feasible]
    if ok:
        i = min(ok, key=lambda i: (-measured[i].score, ms[i]))
        out.winner, out.winner_ms = measured[i], ms[i]
    return out


__all__ = ["ErrorBand", "POOLS", "VerifiedSearch", "VerifySettings", "error_band", "measured_band", "round_limits",
           "search_verified", "verify_search", "widened"]
