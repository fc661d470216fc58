"""Per-choice latency tables for differentiable NAS: latency as ``base + sum over decisions of
the chosen choice's ms``, so a supernet's expected latency under architecture probabilities is
``base + sum_d sum_c p[d, c] * table[d, c]`` (FBNet, Wu et al. CVPR 2019, eq. 4; ProxylessNAS,
Cai et al. ICLR 2019, eq. 5), a torch expression with gradients.

Tables come from any predictor, three ways:
- `ChoiceLatencyTable.every_architecture`: the prediction of every architecture of a small space
  (NB201's 15,625), so the expectation is exact: ``sum over archs of prod_d p[d, c_d] * ms``;
- `ChoiceLatencyTable.least_squares`: an additive model fitted to the predictor on sampled
  architectures (relative-error least squares); its held-out error is kept (`fit_mape`);
- `ChoiceLatencyTable.one_at_a_time`: the predictor's change when one decision moves away from a
  reference architecture; exact for predictors that are sums over layers (a lookup table without
  calibration on FBNet's fixed-shape layers), not for a calibrated lookup table, which charges the
  weights a cache does not hold per network (on FBNet 3.8% off its prediction, median, against
  under 1% for least squares).
At one-hot probabilities `expected_ms` equals `predict` (the table's discrete prediction) exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from hwlat.nas.arch_predictors import as_arch_predictor
from hwlat.nas.choices import Decisions, space_decisions

log = logging.getLogger(__name__)

@dataclass
class ChoiceLatencyTable:
    """``latency = base_ms + sum_d table[d][choice_d]`` (ms), or where `every` is given (every
    architecture's ms, indexed by choices), that; `table` is then each choice's mean over the other
    decisions' choices. Rows are centred: at uniform probabilities the expected latency is `base_ms`."""

    space: str
    decisions: Decisions
    base_ms: float
    table: list[np.ndarray]
    method: str
    fit_mape: float | None = None  # relative error of the additive model vs the predictor, held out
    fit_spearman: float | None = None
    n_predictions: int = 0
    every: np.ndarray | None = None  # every architecture's ms, of shape `decisions.sizes`
    _torch: dict = field(default_factory=dict, repr=False)

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def least_squares(cls, space: Any, predictor: Any, n: int = 1000, seed: int = 0,
                      holdout: float = 0.2) -> "ChoiceLatencyTable":
        """Fit the additive model to `predictor` on `n` sampled architectures (relative errors)."""
        pred = as_arch_predictor(predictor, space)
        dec = space_decisions(pred.space)
        archs = pred.space.sample(n, seed)
        y = pred.predict(archs)
        A = np.hstack(dec.onehot(archs))
        n_test = int(round(holdout * n)) if n >= 20 else 0
        fit = cls._solve(A[n_test:], y[n_test:])
        table = cls._unflatten(fit[1:], dec)
        out = cls._centred(pred.space.name, dec, float(fit[0]), table, "least squares")
        out.n_predictions = n
        if n_test >= 3:
            from hwlat.predictors.metrics import mape, spearman

            approx = out.predict(archs[:n_test])
            out.fit_mape, out.fit_spearman = mape(approx, y[:n_test]), spearman(approx, y[:n_test])
        return out

    @staticmethod
    def _solve(A: np.ndarray, y: np.ndarray) -> np.ndarray:
        w = 1.0 / np.maximum(np.abs(y), 1e-9)
        design = np.hstack([np.ones((len(A), 1)), A])
        coef, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
        return coef

    @classmethod
    def one_at_a_time(cls, space: Any, predictor: Any, reference: Any | None = None) -> "ChoiceLatencyTable":
        """Differences of the predictor when one decision of `reference` (default: every decision's
        first choice) takes each other value: 1 + sum(choices - 1) predictions."""
        pred = as_arch_predictor(predictor, space)
        dec = space_decisions(pred.space)
        ref_idx = (dec.indices([reference])[0] if reference is not None
                   else np.zeros(dec.n_decisions, dtype=np.int64))
        variants, where = [dec.build(ref_idx)], []
        for d, k in enumerate(dec.sizes):
            for c in range(k):
                if c != ref_idx[d]:
                    idx = ref_idx.copy()
                    idx[d] = c
                    variants.append(dec.build(idx))
                    where.append((d, c))
        ms = pred.predict(variants)
        table = [np.zeros(k) for k in dec.sizes]
        for (d, c), v in zip(where, ms[1:]):
            table[d][c] = v - ms[0]
        out = cls._centred(pred.space.name, dec, float(ms[0]), table, "one at a time")
        out.n_predictions = len(variants)
        return out

    @classmethod
    def every_architecture(cls, space: Any, predictor: Any) -> "ChoiceLatencyTable":
        """The prediction of each of the space's architectures (`prod(decisions.sizes)` of them)."""
        pred = as_arch_predictor(predictor, space)
        dec = space_decisions(pred.space)
        every = pred.predict([dec.build(i) for i in np.ndindex(*dec.sizes)]).reshape(dec.sizes)
        means = [every.mean(axis=tuple(e for e in range(dec.n_decisions) if e != d)) for d in range(dec.n_decisions)]
        out = cls._centred(pred.space.name, dec, -float(every.mean()) * (dec.n_decisions - 1), means,
                           "every architecture")
        out.every, out.n_predictions = every, every.size
        return out

    @staticmethod
    def _unflatten(flat: np.ndarray, dec: Decisions) -> list[np.ndarray]:
        out, i = [], 0
        for k in dec.sizes:
            out.append(np.asarray(flat[i:i + k], dtype=float))
            i += k
        return out

    @classmethod
    def _centred(cls, space: str, dec: Decisions, base: float, table: list[np.ndarray],
                 method: str) -> "ChoiceLatencyTable":
        means = [float(t.mean()) for t in table]
        return cls(space, dec, base + float(np.sum(means)), [t - m for t, m in zip(table, means)], method)

    # ---- using ------------------------------------------------------------------------------
    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        """The discrete additive prediction (ms) of architectures."""
        idx = self.decisions.indices(archs)
        if self.every is not None:
            return self.every[tuple(idx.T)]
        out = np.full(len(idx), self.base_ms, dtype=np.float64)
        for d, t in enumerate(self.table):
            out = out + t[idx[:, d]]
        return out

    def torch_table(self, like: Any = None) -> list[Any]:
        """The table as torch tensors (device of `like`, and its dtype where floating: integer or bool
        probabilities, such as ``one_hot``'s, are priced in torch's default float dtype)."""
        import torch

        dtype = like.dtype if isinstance(like, torch.Tensor) and like.is_floating_point() else torch.get_default_dtype()
        device = getattr(like, "device", torch.device("cpu"))
        key = (dtype, str(device))
        if key not in self._torch:
            self._torch[key] = [torch.as_tensor(t, dtype=dtype, device=device)
                                for t in (self.table if self.every is None else [self.every])]
        return self._torch[key]

    def expected_ms(self, probs: Any) -> Any:
        """Expected latency (torch, differentiable) under per-decision choice probabilities:
        a list with one tensor (..., choices_d) per decision, or one tensor (..., D, C) when every
        decision has C choices. Leading dimensions are batch dimensions. Each decision's probabilities
        must be 0 or more and sum to 1 (a softmax): others are a ValueError, as the rows are centred
        and would give a number that is no expectation."""
        import torch

        n_dec, sizes = self.decisions.n_decisions, self.decisions.sizes
        if not isinstance(probs, torch.Tensor):
            probs = [p if isinstance(p, torch.Tensor) else torch.as_tensor(p) for p in probs]
        if isinstance(probs, torch.Tensor):
            if probs.shape[-2:] != (n_dec, max(sizes)) or len(set(sizes)) != 1:
                raise ValueError(f"probabilities of shape {tuple(probs.shape)}: expected (..., {n_dec}, {sizes[0]}) "
                                 f"or a list of {n_dec} tensors")
            probs = list(probs.unbind(-2))
        probs = list(probs)
        if len(probs) != self.decisions.n_decisions:
            raise ValueError(f"{len(probs)} probability vectors for {n_dec} decisions of {self.space}")
        for d, (p, k) in enumerate(zip(probs, sizes)):
            if p.shape[-1] != k:
                raise ValueError(f"decision {self.decisions.names[d]}: {p.shape[-1]} probabilities for {k} choices")
        tables = self.torch_table(probs[0])
        if self.every is not None:  # every(a, b, ...) x p0[..., a] x p1[..., b] ... summed over the choices
            letters = "abcdefghijklmnopqrstuvwxyz"[:n_dec]
            out = torch.einsum(f"{letters}," + ",".join(f"...{x}" for x in letters) + "->...",
                               tables[0], *[p.to(tables[0].dtype) for p in probs])
        else:
            out = torch.as_tensor(self.base_ms, dtype=tables[0].dtype, device=tables[0].device)
            for p, t in zip(probs, tables):
                out = out + (p * t).sum(-1)
        self._check_probabilities(probs, tables[0].dtype)
        return out

    def _check_probabilities(self, probs: list[Any], dtype: Any) -> None:
        import torch

        if probs[0].device.type == "meta":
            return
        tol = max(1e-4, 10 * torch.finfo(dtype).eps)
        with torch.no_grad():  # (D, batch...) sums and least probabilities: one synchronisation with a GPU
            probs = [p.to(dtype) for p in probs]
            sums = torch.stack(torch.broadcast_tensors(*[p.sum(-1) for p in probs]))
            least = torch.stack(torch.broadcast_tensors(*[p.amin(-1) for p in probs]))
            bad = ~((sums - 1).abs() <= tol) | (least < -tol)  # NaN sums are bad
            if not bool(bad.any()):
                return
            d, *row = (int(i) for i in bad.nonzero()[0])
            at = tuple(row)
            p = probs[d].expand(*sums.shape[1:], probs[d].shape[-1])[at]
            total, neg = float(sums[d][at]), float(least[d][at]) < -tol
        where = f" (batch index {list(row)})" if row else ""
        raise ValueError(f"decision {self.decisions.names[d]}: probabilities {[round(float(x), 4) for x in p]}{where} "
                         f"sum to {total:.4g}{', one below 0' if neg else ''}; they must be 0 or more and sum to 1 (a softmax of logits)")

    def onehot(self, archs: Sequence[Any], like: Any = None) -> list[Any]:
        """One-hot torch probabilities of discrete architectures (list per decision, (n, choices))."""
        import torch

        dtype = getattr(like, "dtype", torch.float64)
        return [torch.as_tensor(p, dtype=dtype) for p in self.decisions.onehot(archs)]

    def describe(self) -> str:
        q = ("" if self.fit_mape is None else
             f"; additive fit vs predictor: MAPE {self.fit_mape:.1%}, Spearman {self.fit_spearman:.3f} (held out)")
        return (f"{self.space} per-choice latency table ({self.method}, {self.n_predictions} predictions): "
                f"base {self.base_ms:.3f} ms, {self.decisions.n_decisions} decisions{q}")


def uniform_probs(decisions: Decisions, requires_grad: bool = False) -> list[Any]:
    """Uniform float64 probabilities per decision (a supernet before any architecture training)."""
    import torch

    return [torch.full((k,), 1.0 / k, dtype=torch.float64, requires_grad=requires_grad) for k in decisions.sizes]
