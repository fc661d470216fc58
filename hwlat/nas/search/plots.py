"""PNG plots of a constrained search: predicted vs measured latency, and accuracy vs latency with
the Pareto front, the budget and the verified points (matplotlib, Agg backend; imported only when
plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hwlat.nas.search.result import Candidate, pareto_front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(axis) -> None:
    """Log-scale ticks written as plain numbers (0.2, 0.5, 1, 2) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def predicted_vs_measured(path: str | Path, predicted: Sequence[float], measured: Sequence[float],
                          shots_predicted: Sequence[float] = (), shots_measured: Sequence[float] = (),
                          budget_ms: float | None = None, device: str = "", title: str = "",
                          others_predicted: Sequence[float] = (), others_measured: Sequence[float] = (),
                          others_label: str = "Pareto-front architectures") -> Path:
    """Scatter of predicted vs measured ms: the searched architectures verified (held out; some may
    measure over the budget), other held-out architectures (e.g. a Pareto front) and, in grey, the
    adaptation shots (in-sample), with y = x, ±10% band and the budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=120)
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    sp, sm = np.asarray(shots_predicted, float), np.asarray(shots_measured, float)
    op, om = np.asarray(others_predicted, float), np.asarray(others_measured, float)
    vals = np.concatenate([v[np.isfinite(v)] for v in (p, m, sp, sm, op, om)] + [np.array([budget_ms or np.nan])])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = (vals.min() / 1.3, vals.max() * 1.3) if vals.size else (0.1, 10.0)
    line = np.array([lo, hi])
    ax.plot(line, line, color="black", lw=1, label="predicted = measured")
    ax.fill_between(line, line / 1.1, line * 1.1, color="0.85", label="±10%")
    if sp.size:
        ax.scatter(sm, sp, s=22, color="0.45", label=f"adaptation shots ({sp.size}, in-sample)")
    if op.size:
        k = np.isfinite(om)
        ax.scatter(om[k], op[k], s=30, marker="D", color="tab:green", label=f"{others_label} ({int(k.sum())})")
    ok = np.isfinite(m)
    ax.scatter(m[ok], p[ok], s=70, marker="*", color="tab:red", zorder=3, label=f"most accurate searched, verified ({int(ok.sum())})")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:blue", ls="--", lw=1, label=f"budget {budget_ms:.3g} ms")
        ax.axhline(budget_ms, color="tab:blue", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel(f"measured latency (ms){' on ' + device if device else ''}")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title or "predicted vs measured latency", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(plt, fig, path)


def accuracy_pareto(path: str | Path, predicted_ms: Sequence[float], accuracy: Sequence[float],
                    searched: Sequence[Candidate] = (), verified_predicted: Sequence[float] = (),
                    verified_measured: Sequence[float] = (), verified_accuracy: Sequence[float] = (),
                    budget_ms: float | None = None, winner: tuple[float, float] | None = None,
                    reference: tuple[float, float, str] | None = None, accuracy_label: str = "accuracy (%)",
                    title: str = "", ylim_quantile: float = 5.0) -> Path:
    """Accuracy vs latency: every architecture at its predicted latency (grey), the predicted
    Pareto front (green), the searched ones (blue), the verified ones at their measured latency
    (red, joined to their predicted latency), the winner, a reference (e.g. the best measured
    architecture of a table, at its table latency) and the budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.8), dpi=120)
    ms, acc = np.asarray(predicted_ms, float), np.asarray(accuracy, float)
    ax.scatter(ms, acc, s=2, color="0.8", rasterized=True, label=f"all architectures, predicted ({ms.size})")
    front = pareto_front([Candidate(None, str(i), float(m), float(a), True, i) for i, (m, a) in enumerate(zip(ms, acc))])
    if front:
        ax.step([c.latency_ms for c in front], [c.score for c in front], where="post", color="tab:green", lw=1.4,
                label=f"Pareto front, predicted ({len(front)})")
    if searched:
        ax.scatter([c.latency_ms for c in searched], [c.score for c in searched], s=10, color="tab:blue", alpha=0.6,
                   label=f"scored by the search ({len(searched)})")
    vp, vm, va = (np.asarray(v, float) for v in (verified_predicted, verified_measured, verified_accuracy))
    ok = np.isfinite(vm)
    if ok.any():
        for p_, m_, a_ in zip(vp[ok], vm[ok], va[ok]):
            ax.plot([p_, m_], [a_, a_], color="tab:red", lw=0.8, alpha=0.6)
        ax.scatter(vm[ok], va[ok], s=36, marker="D", color="tab:red", zorder=4,
                   label=f"verified: measured latency ({int(ok.sum())})")
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], s=80, marker="s", facecolor="none", edgecolor="black", zorder=5,
                   label=reference[2])
    if winner is not None:
        ax.scatter([winner[0]], [winner[1]], s=180, marker="*", color="gold", edgecolor="black", zorder=6,
                   label=f"winner: {winner[1]:.2f}% at {winner[0]:.3g} ms measured")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:blue", ls="--", lw=1, label=f"budget {budget_ms:.3g} ms")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    _clip_low_scores(ax, acc, ylim_quantile)
    ax.set_xlabel("latency (ms): predicted, or measured where marked")
    ax.set_ylabel(accuracy_label)
    ax.set_title(title or "accuracy vs latency", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)


def _clip_low_scores(ax, scores: np.ndarray, quantile: float) -> None:
    """Start the y axis at the `quantile` percentile of the scores, saying how many fall below: a
    few collapsed archs (NB201 cells with no input-output path) would squash the rest."""
    if scores.size < 10:
        return
    lo, hi = np.percentile(scores, [quantile, 100])
    pad = 0.08 * max(hi - lo, 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    hidden = int((scores < lo - pad).sum())
    if hidden:
        ax.text(0.01, 0.01, f"{hidden} below the axis", transform=ax.transAxes, fontsize=7, color="0.4")


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write the PNG at once (making its folder; a failed write names it and leaves no part of
    it) and close the figure."""
    from hwlat.device_tables.files import atomic_write

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:] or "png"))
    finally:
        plt.close(fig)
    return path
