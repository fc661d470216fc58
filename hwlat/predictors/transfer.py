"""Few-shot latency transfer to an unseen device by low-rank device x architecture structure.

Meta-training (training devices only): an encoder (ridge, architecture features -> log latency
of every training device) gives denoised latencies of any architecture, seen or not; their SVD
gives architecture factors. A new device is then described from a few measurements by small
models ("learners"), each tuned by exact leave-one-out error:

- ``mixture``: non-negative combination of the training devices' (denoised) ms + an offset;
- ``proxy``: the training device that ranks the measurements best, mapped by a quadratic in log
  ms (OneProxy-style);
- ``cost-rel``: non-negative per-op costs on structure counts (ops that run, critical paths, adds)
  and a non-negative overhead, fitted for relative error (each measurement weighted by 1 / its
  ms), which catches runtimes no training device resembles (dead-op pruning, parallel branches);
  ``cost`` is the same fitted for absolute error in ms (the stack's learner before issue 21);
- ``cost-live``: ``cost-rel`` with only the counts of ops that still run once dead ones are pruned
  (`FeatureLayout.live`) free and every other count shrunk as secondary: the few-shot fit of a
  runtime that prunes (onnxruntime, LiteRT, TensorRT), where the raw counts only add variance;
- ``size``: a line in log-log space from the network's MACs (`FeatureLayout.size`) to its
  latency, two numbers that runtimes paying for compute alone (one CPU thread) follow closely;
- ``anchor``: the training device that ranks the measurements best (as ``proxy``) with a free
  slope, plus the other training devices' log ms with shrunk weights (a Gaussian prior centred on
  "like the anchor"; NASFLAT's hardware embedding initialised from the most correlated device,
  as a closed-form posterior mean);
- ``lowrank`` (ridge on the factors) and a few combinations, available by name.

The default `STACK` combines mixture, proxy, cost-rel, cost-live, size and anchor with non-negative weights fitted
on their leave-one-out predictions (a super learner). See `TransferPredictor`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from scipy.stats import rankdata as stats_rank

from hwlat.device_tables.errors import HwlatError
from hwlat.predictors.base import (FewShotPredictor, LearnedStateError, check_targets, learned_array, learned_arrays, learned_names,
                             learned_number)
from hwlat.predictors.features import FeatureLayout
from hwlat.predictors.linear import (DEFAULT_NNLS_LAMBDAS, LinearFit, d_optimal, group_ridge_loo, held_out, nnls_loo, ridge_loo,
                               stacking_weights, standardize)

log = logging.getLogger(__name__)


def nnls_rel(A: np.ndarray, y: np.ndarray, lam: float, penalty: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Non-negative costs w and overhead b minimising ``sum_i (1 - (b + A_i w) / y_i)^2 + lam n
    sum_j penalty_j (w_j s_j)^2``, s_j the spread of column j / y (b nearly unpenalised): the
    additive model of `nnls_ridge` fitted for relative error, so fast architectures count as much
    as slow ones (the protocol ranks them all)."""
    A1 = np.hstack([np.ones((len(y), 1)), A]) / y[:, None]
    s = A1.std(axis=0)
    s[s < 1e-12] = 1.0
    p = A1.shape[1]
    pen = np.concatenate([[1e-6], np.ones(p - 1) if penalty is None else penalty])
    M = np.vstack([A1 / s, np.diag(np.sqrt(lam * len(y) * pen))])
    w, _ = nnls(M, np.concatenate([np.ones(len(y)), np.zeros(p)]), maxiter=50 * max(p, 10))
    w = w / s
    return w[1:], float(w[0])


def nnls_rel_loo(A: np.ndarray, y: np.ndarray, lambdas=DEFAULT_NNLS_LAMBDAS,
                 penalties: tuple[np.ndarray | None, ...] = (None,)) -> LinearFit:
    """`nnls_rel` with the penalty (strength x per-column multipliers) of smallest leave-one-out
    relative error (n refits per candidate; folds above `LOO_MAX_ROWS` rows: `held_out`); leave-one-out
    predictions in ms."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 3:
        w, b = nnls_rel(A, y, lambdas[-1], penalties[-1]) if n else (np.zeros(A.shape[1]), 0.0)
        return LinearFit(w, b, float(lambdas[-1]), np.zeros(0))
    folds = held_out(n)  # the same for every candidate

    def refits(lam, pen):  # leave-one-out predictions (ms) for one penalty (folds above LOO_MAX_ROWS rows)
        loo = np.empty(n)
        for test, keep in folds:
            w, b = nnls_rel(A[keep], y[keep], lam, pen)
            loo[test] = A[test] @ w + b
        return loo

    trials = [(lam, pen, refits(lam, pen)) for pen, lam in itertools.product(penalties, lambdas)]
    lam, pen, loo = min(trials, key=lambda t: float(np.mean((t[2] / y - 1) ** 2)))
    w, b = nnls_rel(A, y, lam, pen)
    return LinearFit(w, b, float(lam), loo)


class PredictorNumbersError(HwlatError):
    """A predictor whose learned numbers give non-finite features (huge weights in an edited file)."""


@dataclass(frozen=True)
class Learner:
    """One adaptation model: which design blocks it uses, how it is solved and in what space."""

    name: str
    blocks: tuple[str, ...]  # of: devices, factors, factors3, cost, extra, size, live, rest; the first is its
    # primary block: a layout without those columns leaves the learner out
    solver: str  # "nnls" (non-negative, ms), "nnls-rel" (non-negative, ms, relative error), "ridge"
    # (log ms), "proxy" (log ms, one device, quadratic) or "anchor" (log ms, one device + shrunk others)


LEARNERS: dict[str, Learner] = {l.name: l for l in (
    Learner("mixture", ("devices",), "nnls"),
    Learner("proxy", ("devices",), "proxy"),
    Learner("cost", ("cost", "extra"), "nnls"),
    Learner("cost-rel", ("cost", "extra"), "nnls-rel"),
    Learner("cost-live", ("live", "rest"), "nnls-rel"),
    Learner("size", ("size",), "ridge"),
    Learner("mixture+cost", ("devices", "cost", "extra"), "nnls"),
    Learner("lowrank", ("factors",), "ridge"),
    Learner("cost-log", ("cost",), "ridge"),
    Learner("cost+extra-log", ("cost", "extra"), "ridge"),
    Learner("lowrank3+cost-log", ("factors3", "cost"), "ridge"),
    Learner("anchor", ("logdevices",), "anchor"),
)}
# The default stack: measured on HELP's split over NB201, FBNet and OFA (see the README), the
# other learners add variance more often than accuracy; they stay available by name. "anchor"
# joined it on training devices only (benchmarks/transfer_selection.py: each NB201 / FBNet training
# device held out in turn, and HELP's validation devices; 10 repeats): held-out FBNet mean Spearman
# 0.848 -> 0.863 with 10 + 10 (1080ti_64 0.85 -> 0.93, 1080ti_1 0.78 -> 0.84), held-out NB201
# 0.925 -> 0.926, validation devices level (NB201 0.970, FBNet 0.968 -> 0.967); with 5 + 5 each
# of the four up by 0.001-0.002 or level. Tried there and left out: a log-space mixture shrunk to the mean device, the
# same plus shrunk structure counts or all encoder features (isotropic or with per-feature prior
# scales from the training devices' weights), pairwise-ranking or equal or inverse-error weights in
# place of the super learner, and other reference choices (D-optimal on factors alone, latency
# quantiles, farthest points): none beat this stack on both spaces.
# "cost-rel" replaced "cost" (issue 21; chosen the same way, plus each family of training devices
# held out at once: GPUs, CPUs, phones; 10 repeats): mean Spearman with 10 + 10 on NB201 held-out /
# validation / family-out 0.926 -> 0.928, 0.970 -> 0.971, 0.923 -> 0.926, FBNet 0.863 -> 0.862,
# 0.967 -> 0.969, 0.769 -> 0.773; with 5 + 5 NB201 +0.002 to +0.009, FBNet -0.002 to +0.002.
# Tried there and left out: a kernel-ridge (RBF) correction of the stack's leave-one-out residuals
# on the encoding, counts or all features; one learner alone instead of the stack where its
# leave-one-out error or Spearman is better; the anchor learner with encoding or count blocks, and
# a log-space ridge on the devices plus the encoding; cost-rel beside cost, or either chosen per
# device by leave-one-out; the mixture fitted for relative error (FBNet +0.002, NB201 level);
# references D-optimal on counts / predicted ms; secondary-count penalties up to 1000x; MACs as
# one more additive column of cost-rel (FBNet +0.003 to +0.010, NB201 -0.002 to level: not both).
# "cost-live" joined it (a sixth round, docs/design-notes.md): on the selection devices level (5
# repeats, 10 + 10: NB201 held-out / validation / family-out 0.9287 -> 0.9285, 0.9716 -> 0.9714,
# 0.9245 -> 0.9238; 5 + 5: -0.001 to +0.0001), since HELP's training devices run every op; on this
# machine's own NB201 arch tables, runtimes that prune dead ops, level with 10 + 10 and up with
# 5 + 5 (onnxruntime 0.921 -> 0.942, LiteRT 0.964 -> 0.971, torch 0.891 -> 0.908; 10 repeats).
# It sits out where the space has no dead ops (FBNet, OFA: `FeatureLayout.live` empty).
STACK = ("mixture", "proxy", "cost-rel", "cost-live", "size", "anchor")
ENCODER_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Penalties (x n x the columns' mean variance) on the anchor learner's other-device weights.
ANCHOR_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Penalty multipliers of the secondary structure counts tried by leave-one-out in the cost learner.
# (1, 10, 100) over (1,): chosen on training devices only (each NB201/FBNet training device held out
# in turn) and HELP's validation devices, mean Spearman 0.878 -> 0.883 and 0.970 -> 0.971.
GROUP_PENALTIES = (1.0, 10.0, 100.0)


class TransferPredictor(FewShotPredictor):
    """Low-rank transfer with a stacked few-shot adaptation.

    ``TransferPredictor(layout).fit(X, L)`` meta-trains on architecture features X (n x p) and
    training-device latencies L (n x D, ms; NaN = missing); ``choose_references(X_pool, 10)``
    picks architectures to measure first; ``adapt(X_shots, y_ms)`` fits a new device and
    ``predict(X)`` returns its ms. ``learners`` picks the adaptation models (default `STACK`,
    stacked; a single one such as ``("lowrank",)`` or ``("mixture",)`` is used alone).
    """

    def __init__(self, layout: FeatureLayout, learners: tuple[str, ...] = STACK, n_factors: int | None = None,
                 encoder_alphas: tuple[float, ...] = ENCODER_ALPHAS, group_penalties: tuple[float, ...] = GROUP_PENALTIES,
                 seed: int = 0):
        self.layout = layout
        self.group_penalties = tuple(group_penalties)
        self.learners = tuple(learners)
        self.n_factors = n_factors
        self.encoder_alphas = tuple(encoder_alphas)
        self.seed = seed
        unknown = [l for l in self.learners if l not in LEARNERS]
        if unknown or not self.learners:
            raise ValueError(f"unknown learner(s) {unknown}; choose from {', '.join(LEARNERS)}")

    # ---- meta-training ----------------------------------------------------------------------
    def fit(self, X: np.ndarray, L: np.ndarray) -> "TransferPredictor":
        """Meta-train on training devices: X (n, p) features, L (n, D) latencies in ms."""
        X = self.layout.check(X)
        L = np.asarray(L, dtype=float)
        if L.ndim != 2 or len(L) != len(X):
            raise ValueError(f"L must be (n archs, n devices) with n = {len(X)}, got {L.shape}")
        ok = np.all(np.isfinite(L) & (L > 0), axis=1)
        self.n_dropped_ = int((~ok).sum())
        if self.n_dropped_:
            log.info("meta-training skips %d architectures with a missing training latency", self.n_dropped_)
        X, Y = X[ok], np.log(L[ok])
        # The encoder reads every column but the size measures, which only the size learner uses
        # (in the encoder they cost rice_edgegpu 0.07 Spearman and gained nothing elsewhere).
        self.encoder_cols_ = np.setdiff1d(np.arange(X.shape[1]), np.asarray(self.layout.size, dtype=int))
        if len(X) < 10:
            raise ValueError(f"need at least 10 architectures with every training latency, got {len(X)}")
        E = X[:, self.encoder_cols_]
        x_mean = E.mean(axis=0)
        sd = E.std(axis=0)
        x_scale = np.where(sd < 1e-12, 1.0, sd)
        Z = (E - x_mean) / x_scale
        self.encoder_alpha_ = self._choose_alpha(Z, Y)
        ym = Y.mean(axis=0)
        U, S, Vt = np.linalg.svd(Z, full_matrices=False)
        coef = Vt.T @ ((S / (S**2 + self.encoder_alpha_ * len(Z)))[:, None] * (U.T @ (Y - ym)))
        # standardisation folded into the weights: prediction is one product with raw features
        self.encoder_coef_ = coef / x_scale[:, None]
        self.encoder_intercept_ = ym - (x_mean / x_scale) @ coef
        F = Z @ coef + ym
        self.factor_mean_ = F.mean(axis=0)
        _, s, vt = np.linalg.svd(F - self.factor_mean_, full_matrices=False)
        k = len(s) if self.n_factors is None else min(self.n_factors, len(s))
        self.components_ = vt[:k].T
        self.singular_values_ = s[:k]
        self.encoder_r2_ = 1.0 - float(np.mean((Y - F) ** 2) / np.mean((Y - ym) ** 2))
        self.n_train_devices_ = int(L.shape[1])
        self.n_train_archs_ = int(len(X))
        cost_cols = list(self.layout.cost) + list(self.layout.extra)
        self.cost_scale_ = (np.where(X[:, cost_cols].std(axis=0) < 1e-12, 1.0, X[:, cost_cols].std(axis=0))
                            if cost_cols else np.zeros(0))
        return self

    def _choose_alpha(self, Z: np.ndarray, Y: np.ndarray) -> float:
        """Encoder ridge penalty (per row) by 3-fold cross-validation on up to 6000 rows."""
        rng = np.random.default_rng(self.seed)
        idx = rng.permutation(len(Z))[:6000]
        folds = np.array_split(idx, 3)
        errs = np.zeros(len(self.encoder_alphas))
        for f in folds:
            tr = np.setdiff1d(idx, f)
            ym = Y[tr].mean(axis=0)
            U, S, Vt = np.linalg.svd(Z[tr], full_matrices=False)
            UtY = U.T @ (Y[tr] - ym)
            for j, a in enumerate(self.encoder_alphas):
                W = Vt.T @ ((S / (S**2 + a * len(tr)))[:, None] * UtY)
                errs[j] += np.mean((Z[f] @ W + ym - Y[f]) ** 2)
        return float(self.encoder_alphas[int(np.argmin(errs))])

    # ---- representation ----------------------------------------------------------------------
    def train_log_latency(self, X: np.ndarray) -> np.ndarray:
        """Encoder's log-ms prediction of every training device, (n, D)."""
        self._check_fitted()
        return self.layout.check(X)[:, self.encoder_cols_] @ self.encoder_coef_ + self.encoder_intercept_

    def factors(self, X: np.ndarray) -> np.ndarray:
        """Architecture factors (n, k): the encoder's log latencies projected on the SVD basis."""
        return (self.train_log_latency(X) - self.factor_mean_) @ self.components_

    def _blocks(self, X: np.ndarray, names: set[str]) -> dict[str, np.ndarray]:
        X = self.layout.check(X)
        out: dict[str, np.ndarray] = {}
        if names & {"devices", "factors", "factors3", "logdevices"}:
            logl = self.train_log_latency(X)
            out["devices"] = np.exp(logl)
            out["logdevices"] = logl
            f = (logl - self.factor_mean_) @ self.components_
            out["factors"] = f
            out["factors3"] = f[:, :3]
        out["cost"] = X[:, list(self.layout.cost)]
        out["extra"] = X[:, list(self.layout.extra)]
        out["size"] = X[:, list(self.layout.size)]
        out["live"] = X[:, list(self.layout.live)]
        out["rest"] = X[:, self._rest_columns()]
        return out

    def _rest_columns(self) -> list[int]:
        """The counts `cost-live` shrinks as secondary: every cost count but the live ones, and the extra."""
        return [c for c in self.layout.cost if c not in self.layout.live] + list(self.layout.extra)

    def _width(self, block: str) -> int:
        """Columns of a design block under this layout."""
        if block in ("devices", "factors", "factors3", "logdevices"):
            return 1
        if block == "rest":
            return len(self._rest_columns())
        return len(getattr(self.layout, block))

    def _design(self, blocks: dict[str, np.ndarray], learner: Learner) -> np.ndarray:
        parts = [blocks[b] for b in learner.blocks if blocks[b].shape[1]]
        return np.hstack(parts) if parts else np.zeros((len(blocks["cost"]), 0))

    def choose_references(self, X: np.ndarray, n: int) -> np.ndarray:
        """D-optimal rows over the factors and the standardised cost counts: the same for every device.

        The factors keep their relative scale (the first has unit variance), so minor factors,
        which hold little of the training devices' variance, do not outweigh the structure counts
        the cost learner needs (chosen on held-out training devices and HELP's validation ones)."""
        b = self._blocks(X, {"factors"})
        f = b["factors"]
        lead = float(f[:, 0].std()) if f.shape[1] else 1.0
        F = np.hstack([f / (lead if lead > 1e-12 else 1.0), standardize(np.hstack([b["cost"], b["extra"]]))])
        return d_optimal(F, n)

    # ---- adaptation ----------------------------------------------------------------------------
    def adapt(self, X: np.ndarray, y: np.ndarray) -> "TransferPredictor":
        """Fit the new device from measured architectures X (m, p) and their latencies y (ms)."""
        try:
            return self._adapt(X, y)
        except np.linalg.LinAlgError as exc:  # a least-squares fit on overflowing numbers
            raise PredictorNumbersError(f"adapting failed ({exc}): the predictor's learned numbers or these "
                                        "latencies do not give a solvable fit; check them, or fit and save the "
                                        "predictor again") from None

    def _adapt(self, X: np.ndarray, y: np.ndarray) -> "TransferPredictor":
        self._check_fitted()
        X = self.layout.check(X)
        y = check_targets(y)
        if len(y) != len(X):
            raise ValueError(f"{len(X)} architectures but {len(y)} latencies")
        self.n_shots_ = int(len(y))
        self.floor_ms_ = float(0.25 * y.min()) if len(y) else 1e-3
        learners = [LEARNERS[n] for n in self.learners]
        # a learner whose primary columns this layout lacks (size on features without MACs, cost-live
        # on a space without dead ops) sits out
        learners = [l for l in learners if self._width(l.blocks[0])] or learners
        if len(y) == 0:
            # no measurement: the geometric mean of the training devices
            self.learner_names_ = []
            self.coefs_, self.intercepts_, self.weights_ = [], np.zeros(0), np.zeros(0)
            self.loo_rel_error_ = np.zeros(0)
            return self
        blocks = self._blocks(X, {b for l in learners for b in l.blocks})
        if not all(np.all(np.isfinite(v)) for v in blocks.values()):
            raise PredictorNumbersError("the predictor's learned numbers overflow on these architectures (an edited "
                                        "or corrupt predictor file?); fit and save it again")
        ly = np.log(y)
        self._choices = None  # the proxy / anchor device choices of this adaptation (`_device_choices`)
        fits: list[LinearFit] = []
        loo_log = []
        for l in learners:
            A = self._design(blocks, l)
            if l.solver in ("nnls", "nnls-rel"):
                fit = (nnls_loo if l.solver == "nnls" else nnls_rel_loo)(A, y, penalties=self._penalties(blocks, l))
                loo_log.append(np.log(np.maximum(fit.loo_pred, self.floor_ms_)) if fit.loo_pred.size else fit.loo_pred)
            elif l.solver == "proxy":
                fit = self._fit_proxy(np.log(A), ly)
                loo_log.append(fit.loo_pred)
            elif l.solver == "anchor":
                fit = self._fit_anchor(A, ly)
                loo_log.append(fit.loo_pred)
            else:
                fit = ridge_loo(A, ly)
                loo_log.append(fit.loo_pred)
            fits.append(fit)
        self.learner_names_ = [l.name for l in learners]
        self.proxy_ = getattr(self, "_proxy_device", -1)
        self.coefs_ = [f.coef for f in fits]
        self.intercepts_ = np.array([f.intercept for f in fits])
        self.lambdas_ = np.array([f.lam for f in fits])
        if len(fits) == 1:
            self.weights_ = np.ones(1)
        elif all(p.size for p in loo_log):
            self.weights_ = stacking_weights(np.column_stack(loo_log), ly)
        else:
            self.weights_ = np.full(len(fits), 1.0 / len(fits))
        # Each measurement's relative error when it is left out (the stack's weights kept): what a
        # caller can expect on unmeasured architectures, e.g. to keep a margin under a latency budget.
        if all(p.size for p in loo_log):
            self.loo_rel_error_ = np.abs(np.expm1(np.column_stack(loo_log) @ self.weights_ - ly))
        else:
            self.loo_rel_error_ = np.full(len(y), np.nan)
        return self

    def _penalties(self, blocks: dict[str, np.ndarray], learner: Learner) -> tuple[np.ndarray | None, ...]:
        """Per-column penalty multipliers tried by leave-one-out: secondary structure counts
        ("extra", or "rest" beside the live counts) as free as the rest, or shrunk 10x / 100x harder
        (few shots, many counts)."""
        secondary = {"extra", "rest"}
        if not secondary & set(learner.blocks) or not self.group_penalties:
            return (None,)
        sizes = [(b, blocks[b].shape[1]) for b in learner.blocks if blocks[b].shape[1]]
        out = []
        for g in self.group_penalties:
            out.append(np.concatenate([np.full(k, g if b in secondary else 1.0) for b, k in sizes]))
        return tuple(out)

    @staticmethod
    def _best_device(Z: np.ndarray, ly: np.ndarray) -> int:
        """Training device (column of Z) whose log ms ranks ly best (Spearman)."""
        if len(ly) < 3:
            return 0
        R = stats_rank(Z, axis=0)
        R -= R.mean(axis=0)
        ry = stats_rank(ly)
        ry -= ry.mean()
        norm = np.sqrt((R**2).sum(axis=0) * (ry**2).sum())
        r = np.where(norm > 0, (R.T @ ry) / np.where(norm > 0, norm, 1.0), -1.0)
        return int(np.argmax(np.nan_to_num(r, nan=-1.0)))

    def _device_choices(self, Z: np.ndarray, ly: np.ndarray) -> tuple[int, np.ndarray]:
        """The best-ranking training device on all shots, and for each shot the one on all shots
        but it (folds of many shots: `held_out`) (memoised per adaptation: the proxy and anchor
        learners rank the same log ms)."""
        key = (Z.shape, ly.tobytes())
        cached = getattr(self, "_choices", None)
        if cached is None or cached[0] != key:
            loo = np.zeros(len(ly), dtype=int)
            for test, keep in held_out(len(ly)):
                loo[test] = self._best_device(Z[keep], ly[keep])
            cached = (key, self._best_device(Z, ly), loo)
            self._choices = cached
        return cached[1], cached[2]

    def _rechosen_loo(self, choices: np.ndarray, j: int, loo: np.ndarray, refit) -> np.ndarray:
        """Leave-one-out predictions of a one-device model (device j) that redo the device choice
        without the left-out point (or fold): where that changes it (``choices[i]``, see
        `_device_choices`), ``refit(kept rows, new device, left-out rows)`` predicts the left-out rows."""
        loo = loo.copy()
        for test, keep in held_out(len(choices) if loo.size else 0):
            if choices[test[0]] != j:  # only then does leaving them out change the choice
                loo[test] = refit(keep, int(choices[test[0]]), test)
        return loo

    def _fit_proxy(self, Z: np.ndarray, ly: np.ndarray) -> LinearFit:
        """The training device whose model ranks the shots best, mapped by a quadratic in log ms
        (OneProxy-style); its coefficients are (device one-hot x [z, z^2]) so `predict` stays linear.
        Its leave-one-out predictions redo the device choice without the left-out point."""
        n, D = Z.shape
        design = lambda z: np.column_stack([z, z**2]) if n >= 6 else z[:, None]  # noqa: E731
        j, choices = self._device_choices(Z, ly)
        self._proxy_device = j
        fit = ridge_loo(design(Z[:, j]), ly)
        loo = self._rechosen_loo(choices, j, fit.loo_pred, lambda keep, ji, i: ridge_loo(
            design(Z[keep, ji]), ly[keep]).predict(design(Z[i, ji])))
        coef = np.zeros(2 * D)
        coef[j] = fit.coef[0]
        if len(fit.coef) > 1:
            coef[D + j] = fit.coef[1]
        return LinearFit(coef, fit.intercept, fit.lam, loo)

    def _learner_log_predictions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) log-ms predictions of the k stacked learners with non-zero weight, and those weights."""
        learners = [LEARNERS[n] for n in self.learner_names_]
        blocks = self._blocks(X, {b for l in learners for b in l.blocks})
        cols, ws = [], []
        for l, w, c, b in zip(learners, self.weights_, self.coefs_, self.intercepts_):
            if w == 0:
                continue
            A = self._design(blocks, l)
            if l.solver == "proxy":
                A = np.log(A)
                A = np.hstack([A, A**2])
            p = A @ c + b
            cols.append(np.log(np.maximum(p, self.floor_ms_)) if l.solver in ("nnls", "nnls-rel") else p)
            ws.append(w)
        return np.column_stack(cols), np.asarray(ws, dtype=float)

    @staticmethod
    def _anchor_design(D: int, j: int) -> np.ndarray:
        """T with ``logl @ T`` = [anchor j, every other device, minus the others' sum]: the anchor's
        column is free, the rest share one penalty, so the other devices' weights get a Gaussian
        prior with covariance ~ I + 11' (each device alone, and all of them together)."""
        others = np.arange(D) != j
        T = np.zeros((D, D + 1))
        T[j, 0] = 1.0
        cols = np.flatnonzero(others)
        T[cols, 1 + np.arange(len(cols))] = 1.0
        T[:, D] = -others.astype(float)
        return T

    def _fit_anchor(self, Z: np.ndarray, ly: np.ndarray) -> LinearFit:
        """log ms = b + beta * anchor + shrunk weights on the other devices (`_anchor_design`), the
        anchor being the training device whose model ranks the shots best; the penalty is chosen
        by leave-one-out, whose predictions redo the anchor choice without the left-out point.
        Coefficients are folded back onto the devices' log ms, so `predict` is one product."""
        D = Z.shape[1]
        groups = np.array([-1] + [0] * D)
        j, choices = self._device_choices(Z, ly)
        T = self._anchor_design(D, j)
        fit = group_ridge_loo(Z @ T, ly, groups, (ANCHOR_PENALTIES,))

        def refit(keep, ji, test):
            Ti = self._anchor_design(D, ji)
            return group_ridge_loo(Z[keep] @ Ti, ly[keep], groups, ((fit.lam,),)).predict(Z[test] @ Ti)

        loo = self._rechosen_loo(choices, j, fit.loo_pred, refit)
        return LinearFit(T @ fit.coef, fit.intercept, fit.lam, loo)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Latency in ms of architectures X on the adapted device."""
        self._check_adapted()
        X = self.layout.check(X)
        if not self.learner_names_:
            return np.exp(self.train_log_latency(X).mean(axis=1))
        P, w = self._learner_log_predictions(X)
        return np.exp(P @ w)

    def relative_sigma(self, X: np.ndarray) -> np.ndarray:
        """One-sigma relative error of `predict(X)` per architecture, as a fraction (0.05 = 5%).

        Two parts, added in quadrature in log space, and returned as ``expm1`` of the sum:

        - the stack's leave-one-out error on the measurements, as an RMS in log space
          (``log1p(loo_rel_error_)``): the error level this device shows on architectures the
          fit did not see; the same for every architecture;
        - the learners' disagreement on this architecture: the weighted standard deviation of the
          stacked learners' log-ms predictions around the stack's, with the stack's weights. Where
          models that each fit the measurements part ways, the architecture lies outside what
          the measurements pin down.

        With fewer than 3 measurements (no leave-one-out error) the first part is the spread of
        the training devices' centred log latencies of that architecture (how much devices
        disagree on its relative cost); with none, the spread of their mean levels is added too,
        since the prediction is then the training devices' geometric mean. A subclass that adapts
        without the stack (`ProxyAdapter`) gets the first part alone (the devices' spread when it
        keeps no leave-one-out error).

        Measured on held-out training devices (NB201 / FBNet, 10 + 10 shots, query range): 80% / 72%
        of architectures lie within one sigma (68% if it were exact), so it errs on the safe side;
        it ranks which architectures will be off only weakly (Spearman with the error 0.11 / 0.05).
        """
        self._check_adapted()
        X = self.layout.check(X)
        logl = self.train_log_latency(X)
        names = getattr(self, "learner_names_", None)  # None: a subclass with its own adaptation (no stack)
        if names is not None and not names:
            centred = logl - self.factor_mean_
            var = centred.var(axis=1) + float(np.var(self.factor_mean_))
            return np.expm1(np.sqrt(np.maximum(var, 1e-8)))
        if names:
            P, w = self._learner_log_predictions(X)
            w = w / w.sum()
            spread2 = ((P - (P @ w)[:, None]) ** 2) @ w
        else:
            spread2 = np.zeros(len(X))
        loo = np.asarray(getattr(self, "loo_rel_error_", np.zeros(0)), dtype=float)
        if loo.size and np.all(np.isfinite(loo)):
            base2 = np.full(len(X), float(np.mean(np.log1p(loo) ** 2)))
        else:
            base2 = (logl - self.factor_mean_).var(axis=1)
        return np.expm1(np.sqrt(np.maximum(base2 + spread2, 1e-8)))

    # ---- a loaded predictor's state ----------------------------------------------------------------
    def check_learned(self) -> None:
        """Every learned attribute a prediction reads, of the kind and shape the layout and the learned
        sizes fix (`hwlat.predictors.io.load` calls it; a `LearnedStateError` names the attribute)."""
        D, k = self._check_meta_trained()
        if hasattr(self, "n_shots_"):
            self._check_adaptation(D, k)

    def _check_meta_trained(self) -> tuple[int, int]:
        """The meta-trained state; (training devices, factors)."""
        D = learned_number(self, "n_train_devices_", int, low=1)
        for name in ("n_dropped_", "n_train_archs_"):
            learned_number(self, name, int, low=0, optional=True)
        learned_number(self, "encoder_alpha_", float, low=0, optional=True)
        learned_number(self, "encoder_r2_", float, optional=True)
        cols = learned_array(self, "encoder_cols_", (None,), integer=True, low=0, high=self.layout.width - 1)
        learned_array(self, "encoder_coef_", (len(cols), D))
        for name in ("encoder_intercept_", "factor_mean_"):
            learned_array(self, name, (D,))
        k = learned_array(self, "components_", (D, None)).shape[1]
        learned_array(self, "singular_values_", (k,), optional=True)
        learned_array(self, "cost_scale_", (len(self.layout.cost) + len(self.layout.extra),), optional=True)
        return D, k

    def _check_adaptation(self, D: int, k: int) -> None:
        """The stacked learners' state: one coefficient vector, intercept and weight per learner."""
        n = learned_number(self, "n_shots_", int, low=0)
        learned_number(self, "floor_ms_", float, above=0)
        names = learned_names(self, "learner_names_", LEARNERS)
        learned_arrays(self, "coefs_", [(self._coef_width(LEARNERS[name], D, k),) for name in names])
        learned_array(self, "intercepts_", (len(names),))
        weights = learned_array(self, "weights_", (len(names),), low=0)
        if names and not weights.sum() > 0:
            raise LearnedStateError("weights_", "are all 0, so no learner predicts")
        learned_array(self, "lambdas_", (None,), optional=True)  # diagnostic (a 0-shot adaptation keeps an older one)
        learned_array(self, "loo_rel_error_", (n,), optional=True)
        learned_number(self, "proxy_", int, low=-1, high=D - 1, optional=True)

    def _coef_width(self, learner: Learner, D: int, k: int) -> int:
        """Length of a learner's coefficient vector (`_adapt`): its design's columns, 2 per device for
        the proxy's quadratic, one per device for the anchor's folded-back weights."""
        if learner.solver in ("proxy", "anchor"):
            return (2 if learner.solver == "proxy" else 1) * D
        sizes = {"devices": D, "logdevices": D, "factors": k, "factors3": min(3, k)}
        return sum(sizes[b] if b in sizes else self._width(b) for b in learner.blocks)
