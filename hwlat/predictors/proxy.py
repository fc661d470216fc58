"""Proxy-device adaptation in the manner of OneProxy (Zhao et al.): take the training device
whose model ranks the target's measurements best and correct it with a low-order fit in log
space. The proxy models are the meta-trained encoder of `TransferPredictor`, so unseen
architectures work too."""

from __future__ import annotations

import numpy as np
from scipy import stats

from hwlat.predictors.base import check_targets, learned_array, learned_number
from hwlat.predictors.features import FeatureLayout
from hwlat.predictors.linear import ridge_loo
from hwlat.predictors.transfer import ENCODER_ALPHAS, TransferPredictor


class ProxyAdapter(TransferPredictor):
    """``log ms = a + b z + c z^2`` with z the proxy device's predicted log ms (degree 1 or 2,
    chosen by leave-one-out error; ridge-tuned). Meta-training is `TransferPredictor.fit`."""

    def __init__(self, layout: FeatureLayout, max_degree: int = 2, encoder_alphas: tuple[float, ...] = ENCODER_ALPHAS,
                 seed: int = 0):
        super().__init__(layout, encoder_alphas=encoder_alphas, seed=seed)
        self.max_degree = max_degree

    def _poly(self, z: np.ndarray, degree: int) -> np.ndarray:
        zc = (z - self.proxy_center_)
        return np.column_stack([zc**d for d in range(1, degree + 1)])

    def adapt(self, X, y) -> "ProxyAdapter":
        self._check_fitted()
        y = check_targets(y)
        self.n_shots_ = int(len(y))
        Z = self.train_log_latency(X) if len(y) else np.zeros((0, self.n_train_devices_))
        ly = np.log(y)
        if len(y) >= 3:
            rho = np.nan_to_num(np.array([stats.spearmanr(Z[:, j], ly).statistic for j in range(Z.shape[1])]), nan=-1.0)
            self.proxy_ = int(np.argmax(rho))
        else:
            self.proxy_ = 0
        z = Z[:, self.proxy_]
        self.proxy_center_ = float(z.mean()) if len(z) else 0.0
        best = None
        for degree in range(1, max(1, self.max_degree) + 1):
            if degree > 1 and len(y) < 6:
                break
            fit = ridge_loo(self._poly(z, degree), ly, lambdas=(1e-4, 1e-3, 1e-2, 1e-1, 1.0))
            err = float(np.mean((fit.loo_pred - ly) ** 2)) if fit.loo_pred.size else 0.0
            if best is None or err < best[0]:
                best = (err, degree, fit)
        _, self.degree_, fit = best
        self.coef_, self.intercept_ = fit.coef, fit.intercept
        if len(y) < 2:  # nothing to fit a slope on: keep the proxy's shape, match the level
            self.degree_, self.coef_ = 1, np.ones(1)
            self.intercept_ = float(np.mean(ly - (z - self.proxy_center_))) if len(y) else self.proxy_center_
        return self

    def predict(self, X) -> np.ndarray:
        self._check_adapted()
        z = self.train_log_latency(X)[:, self.proxy_]
        return np.exp(self._poly(z, self.degree_) @ self.coef_ + self.intercept_)

    def _check_adaptation(self, D: int, k: int) -> None:
        """The proxy device, its centre and the polynomial on it (`adapt`)."""
        learned_number(self, "n_shots_", int, low=0)
        learned_number(self, "proxy_", int, low=0, high=D - 1)
        learned_number(self, "proxy_center_", float)
        degree = learned_number(self, "degree_", int, low=1, high=max(1, self.max_degree))
        learned_array(self, "coef_", (degree,))
        learned_number(self, "intercept_", float)
