"""Verified search: the predictor's last few percent near the budget, resolved by measurement.

A predictor is right only to within its error, so which architectures near the budget really meet
it is a question for the device. A verified search runs under the budget widened by the
predictor's error band, then measures the most accurate candidates predicted within that widened
budget, `top` per round (most accurate first) until one measures within the budget; the winner is
the most accurate architecture that MEASURES within the budget. Each later round narrows the band
toward the budget and corrects the predictions by what the earlier rounds measured (the median
measured/predicted ratio near the budget: the predictor's local bias, or the device's drift since
its table was measured).

    search = lambda wide: regularized_evolution(space, "accuracy:cifar10", wide, budget=150)
    result = search_verified(space, c, search)   # widened by error_band(c.predictor), e.g. 2.3%
    result.verified.winner                      # a Candidate; result.verified.winner_ms: measured
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.constraints import ConstraintError, LatencyConstraint
from nas.search.result import Candidate, SearchResult
from nas.spaces.base import Space

BAND_QUANTILE = 0.8  # of the predictor's relative errors on what it was not fit to
MAX_BAND = 0.2


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


@dataclass(frozen=True)
class VerifySettings:
    """How a search is verified: `margin` (None: the predictor's `error_band`), architectures
    measured per round (`top`), at most `rounds` rounds, and where and how they are measured
    (`out`: an arch table, resumed: architectures already in it are not measured again)."""

    margin: float | None = None
    top: int = 5
    rounds: int = 3
    runtime: str = "onnxruntime"
    threads: int = 1
    protocol: str = "brief"
    out: str | Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
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


@dataclass
class VerifiedSearch:
    """What verification measured (`measured`, most accurate first; `ms` their measured latencies)
    and the `winner`: the most accurate of them that measured within the budget (None if none)."""

    budget_ms: float
    band: ErrorBand
    candidates: int  # searched architectures predicted within budget * (1 + band)
    measured: list[Candidate]
    ms: np.ndarray
    rounds: list[tuple[float, float, int]]  # per round run: (predicted-ms limit, correction used, archs measured)
    device: str
    protocol: str
    seconds: float
    winner: Candidate | None = None
    winner_ms: float = math.nan

    @property
    def limit_ms(self) -> float:
        return self.budget_ms * (1 + self.band.fraction)

    def verification(self) -> Any:
        """The measured architectures as a `nas.device_loop.Verification` (predicted vs measured)."""
        from nas.device_loop import Verification

        return Verification([c.key for c in self.measured], np.asarray([c.latency_ms for c in self.measured]),
                            self.ms, self.budget_ms, self.device, self.seconds)

    def format(self, score_name: str = "score") -> str:
        """What was measured and why, round by round, and the winner."""
        n = len(self.measured)
        rounds = ", ".join(f"{k} predicted <= {limit:.4g} ms" + (f" (x{r:.3f}: measured/predicted so far)" if r != 1
                                                                 else "") for limit, r, k in self.rounds)
        lines = [f"verification: {self.candidates} searched architectures predicted within {self.limit_ms:.4g} ms "
                 f"(budget {self.budget_ms:.4g} ms + {self.band.fraction:.1%} error band: {self.band.source}); the best "
                 f"by {score_name} measured on {self.device} (protocol {self.protocol}), in rounds narrowing to the "
                 f"budget, corrected by what was measured, until one measures within it: {rounds} ({n} in "
                 f"{self.seconds:.1f} s)"]
        width, sw = max([len(c.key) for c in self.measured] + [12]), max(8, len(score_name))
        lines.append(f"  {'architecture':<{width}}  {score_name:>{sw}}  {'predicted ms':>12}  {'measured ms':>11}  "
                     f"{'error':>7}  within budget")
        for c, m in zip(self.measured, self.ms):
            why = " (over: in band)" if c.latency_ms > self.budget_ms else ""
            if not math.isfinite(m):
                lines.append(f"  {c.key:<{width}}  {c.score:>{sw}.3f}  {c.latency_ms:>12.4f}  {'failed':>11}{why}")
                continue
            within = "yes" if m <= self.budget_ms else f"NO (+{m - self.budget_ms:.3f} ms)"
            lines.append(f"  {c.key:<{width}}  {c.score:>{sw}.3f}  {c.latency_ms:>12.4f}  {m:>11.4f}  "
                         f"{(c.latency_ms - m) / m:>+7.1%}  {within}{why}")
        w = self.winner
        if w is None:
            lines.append(f"winner: none of the {n} measured within {self.budget_ms:.4g} ms; raise the budget, or "
                         "measure more (rounds, top)")
        else:
            over = ", predicted over the budget: found by measuring" if w.latency_ms > self.budget_ms else ""
            lines.append(f"winner (best {score_name} measured within {self.budget_ms:.4g} ms): {w.score:.3f} at "
                         f"{self.winner_ms:.4f} ms measured ({w.latency_ms:.4f} predicted{over}): {w.key}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        nan = lambda v: None if not math.isfinite(v) else float(v)  # noqa: E731
        w = self.winner
        return {"budget_ms": self.budget_ms, "margin": self.band.fraction, "margin_source": self.band.source,
                "limit_ms": self.limit_ms, "candidates": self.candidates,
                "rounds": [{"limit_ms": limit, "correction": r, "measured": k} for limit, r, k in self.rounds], "device": self.device,
                "protocol": self.protocol, "seconds": round(self.seconds, 2),
                "archs": [{"key": c.key, "score": c.score, "predicted_ms": c.latency_ms, "measured_ms": nan(float(m))}
                          for c, m in zip(self.measured, self.ms)],
                "winner": None if w is None else {"key": w.key, "score": w.score, "predicted_ms": w.latency_ms,
                                                  "measured_ms": float(self.winner_ms)}}


def search_verified(space: Space, constraint: LatencyConstraint, search: Callable[[LatencyConstraint], SearchResult],
                    settings: VerifySettings = VerifySettings(), band: ErrorBand | None = None) -> SearchResult:
    """Run `search` under `constraint` widened by `band` (default: `settings.band`, the margin given
    or the predictor's error band), then verify it by measuring (`result.verified`)."""
    band = band or settings.band(constraint.predictor)
    result = search(widened(constraint, band.fraction))
    result.verified = verify_search(space, result, constraint, band, settings)
    return result


def round_limits(budget_ms: float, band: float, rounds: int) -> list[float]:
    """Limit of each round on the corrected prediction: the budget + the band first, narrowing
    evenly to the budget itself in the last round."""
    if rounds == 1:
        return [budget_ms * (1 + band)]
    return [budget_ms * (1 + band * (1 - r / (rounds - 1))) for r in range(rounds)]


def verify_search(space: Space, result: SearchResult, constraint: LatencyConstraint, band: ErrorBand,
                  settings: VerifySettings = VerifySettings()) -> VerifiedSearch:
    """Measure `result`'s architectures in rounds until one measures within `constraint` (or
    `settings.rounds` rounds): each round the `settings.top` most accurate not yet measured whose
    prediction, times the median measured/predicted ratio so far (1 at first), is within that
    round's limit (`round_limits`). The winner is the most accurate measured within the budget."""
    from nas.device_loop import measure

    limits = round_limits(constraint.budget_ms, band.fraction, settings.rounds)
    pool = sorted((c for c in result.history if c.feasible and c.latency_ms <= limits[0]),
                  key=lambda c: (-c.score, c.latency_ms))
    measured: list[Candidate] = []
    ms: list[float] = []
    device, seconds, used, ratio = "", 0.0, [], 1.0
    for limit in limits:
        done = {c.key for c in measured}
        batch = [c for c in pool if c.key not in done and c.latency_ms * ratio <= limit][:settings.top]
        if not batch:
            continue
        m = measure(space, [c.arch for c in batch], settings.out, runtime=settings.runtime, threads=settings.threads,
                    protocol=settings.protocol, progress=settings.progress)
        measured += batch
        ms += [float(x) for x in m.ms]
        device, seconds = m.device, seconds + m.seconds
        used.append((limit / ratio, ratio, len(batch)))
        if np.any(constraint.check(m.ms).feasible):
            break
        ratios = np.asarray(ms) / np.asarray([c.latency_ms for c in measured])
        ratio = float(np.median(ratios[np.isfinite(ratios)])) if np.isfinite(ratios).any() else ratio
    out = VerifiedSearch(constraint.budget_ms, band, len(pool), measured, np.asarray(ms, dtype=float), used, device,
                         settings.protocol, seconds)
    ok = [i for i in range(len(measured)) if constraint.check(ms[i]).feasible]
    if ok:
        i = min(ok, key=lambda i: (-measured[i].score, ms[i]))
        out.winner, out.winner_ms = measured[i], ms[i]
    return out


__all__ = ["ErrorBand", "VerifiedSearch", "VerifySettings", "error_band", "round_limits", "search_verified",
           "verify_search", "widened"]
