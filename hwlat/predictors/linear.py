"""Small-sample linear solvers for fitting on a handful of measurements: ridge with exact
leave-one-out errors, non-negative ridge (costs cannot be negative), stacking weights, and
greedy D-optimal selection of informative architectures."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

DEFAULT_RIDGE_LAMBDAS = tuple(np.logspace(-4, 3, 15))
DEFAULT_NNLS_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)
# The iterative solvers refit once per held-out set and candidate penalty: each measurement alone
# (exact leave-one-out) up to `LOO_MAX_ROWS` measurements, `CV_FOLDS` interleaved folds above. With
# every row alone, a 3,210-row arch table given to `hwlat adapt fit` took minutes (500 rows: 7 s).
LOO_MAX_ROWS, CV_FOLDS = 100, 10


@dataclass(frozen=True)
class LinearFit:
    """``y ~ intercept + A @ coef`` with the penalty chosen and its leave-one-out predictions."""

    coef: np.ndarray
    intercept: float
    lam: float
    loo_pred: np.ndarray  # leave-one-out prediction of every training point (empty if n < 3)

    def predict(self, A: np.ndarray) -> np.ndarray:
        return A @ self.coef + self.intercept


def _scales(A: np.ndarray) -> np.ndarray:
    s = A.std(axis=0)
    s[s < 1e-12] = 1.0
    return s


def ridge_loo(A: np.ndarray, y: np.ndarray, lambdas=DEFAULT_RIDGE_LAMBDAS) -> LinearFit:
    """Ridge regression with an unpenalised intercept on standardised columns; the penalty is
    the one with the smallest exact leave-one-out error (closed form via the hat matrix)."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = A.shape
    if n == 0:
        return LinearFit(np.zeros(p), 0.0, float("nan"), np.zeros(0))
    s = _scales(A)
    As = A / s
    am, ym = As.mean(axis=0), y.mean()
    Ac, yc = As - am, y - ym
    if p == 0 or n < 3:
        lam = float(lambdas[len(lambdas) // 2])
        coef = np.linalg.solve(Ac.T @ Ac + lam * np.eye(p), Ac.T @ yc) if p else np.zeros(0)
        return LinearFit(coef / s, float(ym - am @ coef), lam, np.zeros(0))
    U, S, Vt = np.linalg.svd(Ac, full_matrices=False)
    Uy = U.T @ yc
    best = None
    for lam in lambdas:
        shrink = S**2 / (S**2 + lam)
        fit = U @ (shrink * Uy)
        h = (U**2) @ shrink + 1.0 / n
        loo = y - (yc - fit) / np.maximum(1.0 - h, 1e-9)
        err = float(np.mean((y - loo) ** 2))
        if best is None or err < best[0] - 1e-15:
            best = (err, lam, loo)
    _, lam, loo = best
    coef = Vt.T @ ((S / (S**2 + lam)) * Uy)
    return LinearFit(coef / s, float(ym - am @ coef), float(lam), loo)


def nnls_ridge(A: np.ndarray, y: np.ndarray, lam: float, penalty: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``min |y - b - A w|^2 + lam sum_j penalty_j (w_j std(A_j))^2`` over w >= 0 and a free
    intercept b (penalty: per-column multipliers, default 1)."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = A.shape
    s = _scales(A)
    As = A / s
    am, ym = As.mean(axis=0), y.mean()
    pen = np.ones(p) if penalty is None else np.asarray(penalty, dtype=float)
    M = np.vstack([As - am, np.diag(np.sqrt(lam * n * pen))])
    rhs = np.concatenate([y - ym, np.zeros(p)])
    w, _ = nnls(M, rhs, maxiter=50 * max(p, 10))
    return w / s, float(ym - am @ w)


def held_out(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(held-out rows, kept rows) of each refit of an iterative solver's cross-validation over `n`
    measurements: each row alone up to `LOO_MAX_ROWS` rows, else `CV_FOLDS` interleaved folds."""
    tests = [np.array([i]) for i in range(n)] if n <= LOO_MAX_ROWS else [np.arange(f, n, CV_FOLDS) for f in range(CV_FOLDS)]
    return [(t, np.setdiff1d(np.arange(n), t)) for t in tests]


def nnls_loo(A: np.ndarray, y: np.ndarray, lambdas=DEFAULT_NNLS_LAMBDAS,
             penalties: tuple[np.ndarray | None, ...] = (None,)) -> LinearFit:
    """`nnls_ridge` with the penalty (strength x per-column multipliers from `penalties`) of
    smallest leave-one-out error (n refits per candidate; folds above `LOO_MAX_ROWS` rows: `held_out`)."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 3:
        lam = float(lambdas[-1])
        if n == 0:
            return LinearFit(np.zeros(A.shape[1]), 0.0, lam, np.zeros(0))
        w, b = nnls_ridge(A, y, lam, penalties[-1])
        return LinearFit(w, b, lam, np.zeros(0))
    best = None
    folds = held_out(n)  # the same for every candidate
    for pen in penalties:
        for lam in lambdas:
            loo = np.empty(n)
            for test, keep in folds:
                w, b = nnls_ridge(A[keep], y[keep], lam, pen)
                loo[test] = A[test] @ w + b
            err = float(np.mean((y - loo) ** 2))
            if best is None or err < best[0] - 1e-15:
                best = (err, lam, pen, loo)
    _, lam, pen, loo = best
    w, b = nnls_ridge(A, y, lam, pen)
    return LinearFit(w, b, float(lam), loo)


def stacking_weights(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that best combine the columns of P (leave-one-out
    predictions of several models) into y: the "super learner" of van der Laan et al. (2007)."""
    P = np.asarray(P, dtype=float)
    m = P.shape[1]
    if P.shape[0] == 0:
        return np.full(m, 1.0 / m)
    big = 1e3 * max(1.0, float(np.abs(y).max()))
    M = np.vstack([P, np.full((1, m), big)])
    rhs = np.concatenate([y, [big]])
    w, _ = nnls(M, rhs, maxiter=100 * m)
    total = w.sum()
    return w / total if total > 0 else np.full(m, 1.0 / m)


def standardize(F: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance (constant columns left at zero)."""
    F = np.asarray(F, dtype=float)
    return (F - F.mean(axis=0)) / _scales(F)


def d_optimal(F: np.ndarray, n: int, ridge: float = 1e-2) -> np.ndarray:
    """Greedy D-optimal design: indices of `n` rows of F (already scaled) that maximise
    ``det(ridge*I + F_S^T F_S)``, so a linear fit on them is as well determined as possible."""
    F = np.asarray(F, dtype=float)
    n = min(n, len(F))
    chosen: list[int] = []
    Minv = np.eye(F.shape[1]) / ridge
    taken = np.zeros(len(F), dtype=bool)
    for _ in range(n):
        gain = ((F @ Minv) * F).sum(axis=1)
        gain[taken] = -np.inf
        i = int(np.argmax(gain))
        chosen.append(i)
        taken[i] = True
        v = Minv @ F[i]
        Minv -= np.outer(v, v) / (1.0 + F[i] @ v)  # Sherman-Morrison
    return np.asarray(chosen, dtype=int)


def group_ridge_loo(A: np.ndarray, y: np.ndarray, groups: np.ndarray, grids: tuple[tuple[float, ...], ...]) -> LinearFit:
    """Ridge with an unpenalised intercept and one penalty per column group, the combination of
    smallest exact leave-one-out error. ``groups[j]`` is column j's group (-1: unpenalised);
    ``grids[g]`` the penalties tried for group g, each times n and the group's mean column
    variance (so 1 means "as strong as the data"). Columns are not rescaled within a group: the
    caller's scale is the prior (e.g. training devices' log latencies, whose spread is the point).

    Solved in the dual (n x n, a Gaussian process with a linear kernel per group and the
    unpenalised columns as its mean), so many more columns than measurements cost little; above
    `LOO_MAX_ROWS` measurements in the primal (p x p), the same fit: n x n inverses of thousands of
    measurements took seconds to minutes and gigabytes."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    groups = np.asarray(groups, dtype=int)
    n, p = A.shape
    if n == 0:
        return LinearFit(np.zeros(p), 0.0, float("nan"), np.zeros(0))
    am = A.mean(axis=0)
    Ac = A - am
    if n > LOO_MAX_ROWS:
        return _group_ridge_primal(Ac, am, y, groups, grids)
    free = groups < 0
    F = np.column_stack([np.ones(n), Ac[:, free]])
    grams = []
    for g in range(len(grids)):
        cols = groups == g
        unit = max(float(Ac[:, cols].var(axis=0).mean()) if cols.any() else 1.0, 1e-12)
        grams.append((cols, unit, Ac[:, cols] @ Ac[:, cols].T))
    best = None
    for lams in itertools.product(*grids):
        K = np.eye(n)
        for (cols, unit, G), lam in zip(grams, lams):
            K += G / (lam * n * unit)
        try:
            Ki = np.linalg.inv(K)
            KiF = Ki @ F
            S = np.linalg.solve(F.T @ KiF + 1e-10 * np.eye(F.shape[1]), KiF.T)  # beta = S @ y (GLS)
        except np.linalg.LinAlgError:
            continue
        Pm = Ki - KiF @ S  # residual operator: y - fit = Pm @ y, and the fit is linear in y
        e = Pm @ y
        loo = y - e / np.maximum(np.diag(Pm), 1e-12) if n >= 3 else np.zeros(0)
        err = float(np.mean((y - loo) ** 2)) if n >= 3 else 0.0
        if best is None or err < best[0] - 1e-15:
            best = (err, lams, S, Pm, loo)
    _, lams, S, Pm, loo = best
    beta = S @ y
    alpha = Pm @ y  # K^-1 (y - F beta)
    coef = np.zeros(p)
    coef[free] = beta[1:]
    for (cols, unit, _), lam in zip(grams, lams):
        coef[cols] = Ac[:, cols].T @ alpha / (lam * n * unit)
    return LinearFit(coef, float(beta[0] - am @ coef), float(lams[0]), loo)


def _group_ridge_primal(Ac: np.ndarray, am: np.ndarray, y: np.ndarray, groups: np.ndarray,
                        grids: tuple[tuple[float, ...], ...]) -> LinearFit:
    """`group_ridge_loo` solved in the primal: an intercept and `Ac`'s (centred) columns, group g's
    penalised by ``lam * n * unit_g`` and the free ones by nothing (1e-10), the exact leave-one-out
    predictions from the hat matrix's diagonal."""
    n, p = Ac.shape
    X = np.column_stack([np.ones(n), Ac])
    XtX, Xty = X.T @ X, X.T @ y
    units = [max(float(Ac[:, groups == g].var(axis=0).mean()) if (groups == g).any() else 1.0, 1e-12)
             for g in range(len(grids))]
    best = None
    for lams in itertools.product(*grids):
        pen = np.full(p + 1, 1e-10)
        for g, lam in enumerate(lams):
            pen[1:][groups == g] = lam * n * units[g]
        try:
            Minv = np.linalg.inv(XtX + np.diag(pen))
        except np.linalg.LinAlgError:
            continue
        beta = Minv @ Xty
        h = ((X @ Minv) * X).sum(axis=1)
        loo = y - (y - X @ beta) / np.maximum(1.0 - h, 1e-12)
        err = float(np.mean((y - loo) ** 2))
        if best is None or err < best[0] - 1e-15:
            best = (err, lams, beta, loo)
    _, lams, beta, loo = best
    return LinearFit(beta[1:], float(beta[0] - am @ beta[1:]), float(lams[0]), loo)
