"""HELP-style meta-learned latency predictor (Lee et al., "HELP: Hardware-Adaptive Efficient
Latency Prediction for NAS via Meta-Learning", NeurIPS 2021), lean version.

A device is embedded by its (normalised) log latencies on fixed reference architectures; an MLP
maps (architecture features, device embedding) to normalised log latency. Meta-training runs
episodes over training devices (and random log-space mixtures of them, to see more than a
handful of devices); in each episode the last layer is adapted to the episode's support
measurements in closed form (ridge, as in R2-D2, Bertinetto et al. 2019) and the loss is taken
on held-out architectures, so the network learns to be adapted from few shots. HELP adapts with
MAML gradient steps instead; the closed-form inner loop is cheaper and exact. Training uses
torch (imported lazily); prediction is numpy.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from hwlat.predictors.base import FewShotPredictor, check_targets
from hwlat.predictors.features import FeatureLayout
from hwlat.predictors.linear import d_optimal, standardize

log = logging.getLogger(__name__)


class HelpTransfer(FewShotPredictor):
    """Hardware embedding from reference latencies + meta-learned MLP with a closed-form
    last-layer adaptation. ``fit(X, L)`` meta-trains (``valid=(Xv, Lv)`` picks the checkpoint),
    ``adapt(X, y)`` reads the references among the measured rows, ``predict(X)`` returns ms."""

    needs_reference_pool = True

    def __init__(self, layout: FeatureLayout, n_references: int = 10, hidden: int = 128, embed: int = 32,
                 steps: int = 1500, batch: int = 256, support: int = 10, lr: float = 2e-3, mix_prob: float = 0.5,
                 seed: int = 0, threads: int = 1, max_seconds: float = 240.0):
        self.layout = layout
        self.n_references = n_references
        self.hidden = hidden
        self.embed = embed
        self.steps = steps
        self.batch = batch
        self.support = support
        self.lr = lr
        self.mix_prob = mix_prob
        self.seed = seed
        self.threads = threads
        self.max_seconds = max_seconds

    # ---- references ----------------------------------------------------------------------------
    def choose_references(self, X: np.ndarray, n: int) -> np.ndarray:
        """Rows of X that are this model's references (they were fixed at meta-training)."""
        self._check_fitted()
        X = self.layout.check(X)
        rows = [self._find(X, r) for r in self.references_]
        if any(r < 0 for r in rows) or n != len(rows):
            raise ValueError(f"HELP-style predictor was meta-trained with {len(self.references_)} fixed references; "
                             f"they must all be in the candidate rows and n must be {len(self.references_)}")
        return np.asarray(rows, dtype=int)

    @staticmethod
    def _find(X: np.ndarray, row: np.ndarray) -> int:
        hit = np.flatnonzero(np.all(np.abs(X - row) < 1e-9, axis=1))
        return int(hit[0]) if len(hit) else -1

    # ---- meta-training ---------------------------------------------------------------------------
    def fit(self, X: np.ndarray, L: np.ndarray, valid: tuple[np.ndarray, np.ndarray] | None = None,
            reference_pool: np.ndarray | None = None) -> "HelpTransfer":
        """Meta-train on X (n, p) features and L (n, D) training-device ms; references are chosen
        among `reference_pool` rows (default: X), `valid=(Xv, Lv)` selects the checkpoint."""
        import torch

        X = self.layout.check(X)
        L = np.asarray(L, dtype=float)
        ok = np.all(np.isfinite(L) & (L > 0), axis=1)
        X, Y = X[ok], np.log(L[ok])
        self.x_mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.x_scale_ = np.where(sd < 1e-12, 1.0, sd)
        pool = self.layout.check(X if reference_pool is None else reference_pool)
        self.references_ = pool[d_optimal(standardize(pool), self.n_references)] if self.n_references else np.zeros((0, X.shape[1]))
        ref_rows = np.array([self._find(X, r) for r in self.references_], dtype=int)
        if np.any(ref_rows < 0):
            raise ValueError("reference architectures must be among the meta-training rows")
        Z = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            net = _Net(Z.shape[1], len(ref_rows), self.hidden, self.embed)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
            Zt = torch.from_numpy(Z)
            D = Y.shape[1]
            vdata = None
            if valid is not None:
                Xv, Lv = valid
                Xv = self.layout.check(Xv)
                vz = ((Xv - self.x_mean_) / self.x_scale_).astype(np.float32)
                vref = np.array([self._find(Xv, r) for r in self.references_], dtype=int)
                if len(vz) > 50 and np.all(vref >= 0):
                    vdata = (torch.from_numpy(vz), np.log(np.asarray(Lv, dtype=float)), vref)
            best, best_state, t0 = -np.inf, None, time.perf_counter()
            for step in range(self.steps):
                if rng.random() < self.mix_prob:
                    w = rng.dirichlet(np.full(D, 0.3))
                    y = Y @ w
                else:
                    y = Y[:, rng.integers(D)]
                idx = rng.choice(len(Z), self.support + self.batch, replace=False)
                sup, qry = np.concatenate([ref_rows, idx[: self.support]]), idx[self.support:]
                loss = net.episode_loss(Zt, y, ref_rows, sup, qry)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if vdata is not None and (step + 1) % 100 == 0:
                    score = net.valid_score(*vdata, rng=np.random.default_rng(1), support=self.support)
                    if score > best:
                        best, best_state = score, {k: v.detach().clone() for k, v in net.state_dict().items()}
                if time.perf_counter() - t0 > self.max_seconds:
                    log.warning("HELP-style meta-training stopped at step %d of %d (time cap %.0f s)",
                                step + 1, self.steps, self.max_seconds)
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
            self.valid_spearman_ = float(best) if np.isfinite(best) else float("nan")
            state = net.state_dict()
            self.weights_ = [state[f"{m}.{k}"].numpy().astype(np.float64).copy()
                             for m in ("x1", "x2", "e1", "e2", "j1", "j2", "out") for k in ("weight", "bias")]
            self.log_lambda_ = float(net.log_lambda.detach())
        finally:
            torch.set_num_threads(prev_threads)
        self.n_train_devices_ = int(L.shape[1])
        self.n_train_archs_ = int(len(X))
        return self

    # ---- numpy forward ----------------------------------------------------------------------------
    def _hidden(self, Z: np.ndarray, e: np.ndarray) -> np.ndarray:
        W = [w for w in self.weights_]
        # order: x1.w, x1.b, x2.w, x2.b, e1.w, e1.b, e2.w, e2.b, j1.w, j1.b, j2.w, j2.b, out.w, out.b
        relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
        h = relu(relu(Z @ W[0].T + W[1]) @ W[2].T + W[3])
        if len(e):
            g = relu(relu(e @ W[4].T + W[5]) @ W[6].T + W[7])
        else:
            g = np.zeros(W[7].shape)
        g = np.broadcast_to(g, (len(Z), g.shape[-1]))
        return relu(relu(np.hstack([h, g]) @ W[8].T + W[9]) @ W[10].T + W[11])

    def adapt(self, X: np.ndarray, y: np.ndarray) -> "HelpTransfer":
        """Embed the device by the references among X (all of them must be measured) and adapt
        the last layer to every measurement in closed form."""
        self._check_fitted()
        X = self.layout.check(X)
        y = check_targets(y)
        ly = np.log(y)
        rows = np.array([self._find(X, r) for r in self.references_], dtype=int)
        self.n_shots_ = int(len(y))
        if len(rows) and np.all(rows >= 0):
            lr = ly[rows]
            self.mean_, self.scale_ = float(lr.mean()), float(max(lr.std(), 1e-3))
            self.embedding_ = (lr - self.mean_) / self.scale_
        else:
            if len(rows):
                log.warning("not every reference architecture was measured: HELP-style embedding set to the mean device")
            self.mean_ = float(ly.mean()) if len(ly) else 0.0
            self.scale_ = float(max(ly.std(), 1e-3)) if len(ly) > 1 else 1.0
            self.embedding_ = np.zeros(len(rows))
        Z = (X - self.x_mean_) / self.x_scale_
        H = self._hidden(Z, self.embedding_)
        t = (ly - self.mean_) / self.scale_
        w0, b0 = self.weights_[12].ravel(), float(self.weights_[13].ravel()[0])
        dw, db = _ridge_delta(H, t - (H @ w0 + b0), np.exp(self.log_lambda_))
        self.head_ = w0 + dw
        self.head_bias_ = b0 + db
        return self

    def predict(self, X: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Latency in ms on the adapted device (in chunks: the hidden layers stay in cache)."""
        self._check_adapted()
        X = self.layout.check(X)
        out = np.empty(len(X))
        for i in range(0, len(X), chunk):
            Z = (X[i:i + chunk] - self.x_mean_) / self.x_scale_
            H = self._hidden(Z, self.embedding_)
            out[i:i + chunk] = np.exp(self.mean_ + self.scale_ * (H @ self.head_ + self.head_bias_))
        return out


def _ridge_delta(H: np.ndarray, r: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Last-layer correction: ``min |r - H dw - db|^2 + lam |dw|^2`` (kernel form, few rows)."""
    if len(r) == 0:
        return np.zeros(H.shape[1]), 0.0
    hm, rm = H.mean(axis=0), r.mean()
    Hc, rc = H - hm, r - rm
    a = np.linalg.solve(Hc @ Hc.T + lam * np.eye(len(r)), rc)
    dw = Hc.T @ a
    return dw, float(rm - hm @ dw)


def _Net(p: int, n_ref: int, hidden: int, embed: int):
    """The torch module (built lazily so `import hwlat.predictors.help` needs no torch)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.x1, self.x2 = nn.Linear(p, hidden), nn.Linear(hidden, hidden)
            self.e1, self.e2 = nn.Linear(max(n_ref, 1), 64), nn.Linear(64, embed)
            self.j1, self.j2 = nn.Linear(hidden + embed, hidden), nn.Linear(hidden, 64)
            self.out = nn.Linear(64, 1)
            self.log_lambda = nn.Parameter(torch.tensor(0.0))
            self.n_ref = n_ref

        def hidden(self, z, e):
            h = torch.relu(self.x2(torch.relu(self.x1(z))))
            g = torch.relu(self.e2(torch.relu(self.e1(e)))) if self.n_ref else torch.zeros(embed)
            g = g.expand(len(z), -1)
            return torch.relu(self.j2(torch.relu(self.j1(torch.cat([h, g], dim=1)))))

        def _norm(self, y, ref_rows, sup):
            base = y[ref_rows] if len(ref_rows) > 1 else y[sup]
            m, s = base.mean(), max(base.std(), 1e-3)
            return m, s

        def adapted(self, Z, y, ref_rows, sup, qry):
            m, s = self._norm(y, ref_rows, sup)
            e = torch.from_numpy(((y[ref_rows] - m) / s).astype(np.float32)) if self.n_ref else torch.zeros(1)
            Hs = self.hidden(Z[sup], e)
            Hq = self.hidden(Z[qry], e)
            ts = torch.from_numpy(((y[sup] - m) / s).astype(np.float32))
            w0, b0 = self.out.weight[0], self.out.bias[0]
            r = ts - (Hs @ w0 + b0)
            hm, rm = Hs.mean(0), r.mean()
            Hc, rc = Hs - hm, r - rm
            a = torch.linalg.solve(Hc @ Hc.T + torch.exp(self.log_lambda) * torch.eye(len(sup)), rc)
            dw = Hc.T @ a
            db = rm - hm @ dw
            return Hq @ (w0 + dw) + b0 + db, m, s

        def episode_loss(self, Z, y, ref_rows, sup, qry):
            pred, m, s = self.adapted(Z, y, ref_rows, sup, qry)
            tq = torch.from_numpy(((y[qry] - m) / s).astype(np.float32))
            return torch.mean((pred - tq) ** 2)

        @torch.no_grad()
        def valid_score(self, Zv, Lv_log, vref, rng, support):
            from scipy.stats import spearmanr

            scores = []
            for d in range(Lv_log.shape[1]):
                y = Lv_log[:, d]
                idx = rng.choice(len(y), min(support + 400, len(y)), replace=False)
                pred, _, _ = self.adapted(Zv, y, vref, np.concatenate([vref, idx[:support]]), idx[support:])
                scores.append(spearmanr(pred.numpy(), y[idx[support:]]).statistic)
            return float(np.mean(scores))

    return Net()
