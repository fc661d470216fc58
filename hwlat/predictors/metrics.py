"""Accuracy metrics every predictor is scored with: rank (Spearman, Kendall) and absolute
(RMSE, MAPE, ±10% accuracy), plus the trimmed scoring of the few-shot transfer protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float).ravel()
    t = np.asarray(true, dtype=float).ravel()
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and truths ({t.size}) differ in length")
    if p.size == 0:
        raise ValueError("no values to score")
    return p, t


def spearman(pred, true) -> float:
    """Spearman rank correlation (ties get average ranks); nan when either side is constant."""
    p, t = _pair(pred, true)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    rp, rt = stats.rankdata(p), stats.rankdata(t)
    return float(np.corrcoef(rp, rt)[0, 1])


def kendall(pred, true) -> float:
    """Kendall's tau-b; nan when either side is constant."""
    p, t = _pair(pred, true)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.kendalltau(p, t).statistic)


def rmse(pred, true) -> float:
    """Root mean squared error, in the unit of the inputs (ms)."""
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mape(pred, true) -> float:
    """Mean absolute percentage error as a fraction (0.05 = 5%)."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t) / np.abs(t)))


def within(pred, true, tol: float = 0.10) -> float:
    """Share of predictions within ``tol`` relative error of the truth."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t) <= tol * np.abs(t) + 1e-12))


def within10(pred, true) -> float:
    """±10% accuracy: share of predictions within 10% of the truth."""
    return within(pred, true, 0.10)


@dataclass(frozen=True)
class Scores:
    """All metrics of one prediction run."""

    spearman: float
    kendall: float
    rmse: float
    mape: float
    within10: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(pred, true) -> Scores:
    """Every metric at once."""
    p, t = _pair(pred, true)
    return Scores(spearman(p, t), kendall(p, t), rmse(p, t), mape(p, t), within10(p, t), int(p.size))


def trim_mask(true, trim: float = 0.1) -> np.ndarray:
    """Boolean mask that drops the fastest and the slowest ``trim`` fraction (HELP's scoring:
    floor(trim * n) at each end, ties broken by position)."""
    t = np.asarray(true, dtype=float).ravel()
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    k = int(np.floor(trim * t.size + 1e-9))
    order = np.argsort(t, kind="stable")
    keep = np.zeros(t.size, dtype=bool)
    keep[order[k:t.size - k]] = True
    return keep


def trimmed_score(pred, true, trim: float = 0.1) -> Scores:
    """`score` on the architectures left after `trim_mask` of the truths."""
    p, t = _pair(pred, true)
    keep = trim_mask(t, trim)
    return score(p[keep], t[keep])
