"""Which kernels to measure: the candidate pool of target networks, a regular grid over it, and
adaptive sampling that measures next where the kernel regressors are least sure or most wrong.

The pool is every kernel (per the runtime's fusion rules) of the networks a device table must
serve, weighted by how often they occur. Adaptive sampling starts from a few spread-out kernels of
each family, then repeatedly refits the regressors and measures the kernels with the largest
expected error on the networks' totals (uncertainty x latency x occurrences, raised for families
whose last predictions missed by more than their uncertainty said), avoiding near-duplicates.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from hwlat.device_tables.graph import UNCOVERED, Graph
from hwlat.device_tables.kernels import FusionRules, group_kernels
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.table import DeviceTable
from hwlat.predictors.kernel_regressors import KernelRegressors, family, features

log = logging.getLogger(__name__)


def kernel_pool(graphs: Iterable[Graph], rules: FusionRules, dtype: str = "float32") -> dict[str, tuple[OpSpec, int]]:
    """Key -> (kernel spec, occurrences) over the kernels of `graphs`, in first-seen order, with the
    stand-ins a lookup table prices data movement by (a shuffle: a channel concat where the table can
    have concat rows, else a relu; `LUTPredictor.kernels`), so a table of the pool prices both."""
    from hwlat.predictors.lut.predictor import _movement_spec

    counts: Counter[str] = Counter()
    specs: dict[str, OpSpec] = {}
    for g in graphs:
        stand_ins = [_movement_spec(op.moves, dtype, concat) for op in g.ops if op.moves and op.kind == UNCOVERED
                     for concat in (True, False)]
        for s in [k.spec for k in group_kernels(g, rules)] + stand_ins:
            s = s if s.dtype == dtype else s.replace(dtype=dtype)
            specs.setdefault(s.key, s)
            counts[s.key] += 1
    return {key: (specs[key], counts[key]) for key in specs}


# ---- the grid --------------------------------------------------------------------------------
def _levels(values: Iterable[int], n: int) -> list[int]:
    """`n` values spread geometrically over the range of `values`, each snapped to a value present."""
    vals = sorted(set(int(v) for v in values))
    if len(vals) <= n:
        return vals
    lo, hi = math.log(vals[0]), math.log(vals[-1])
    targets = [math.exp(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    arr = np.asarray(vals, dtype=float)
    return sorted({int(arr[np.argmin(np.abs(np.log(arr) - math.log(t)))]) for t in targets})


def grid_specs(pool: Sequence[OpSpec], channel_levels: int = 6, spatial_levels: int = 4) -> list[OpSpec]:
    """A regular grid per kernel pattern: channel counts, output/input channel ratios and sizes
    snapped to a few geometric levels over the pool's ranges, keeping only the grid cells the
    pool's kernels fall in (a sweep designed from the networks' ranges, not their exact layers)."""
    by_op: dict[str, list[OpSpec]] = {}
    for s in pool:
        by_op.setdefault(s.op, []).append(s)
    out: dict[str, OpSpec] = {}
    for op, specs in by_op.items():
        base = specs[0].base
        cin_levels = _levels([s.input_shape[1] for s in specs], channel_levels)
        cout_levels = _levels([s.output_shape[1] for s in specs], channel_levels)
        hw_levels = _levels([s.input_shape[2] for s in specs], spatial_levels) if base != "linear" else []
        for s in specs:
            attrs = dict(s.a)
            c = _snap(s.input_shape[1], cin_levels)
            if base == "linear":
                attrs["cout"] = _snap(int(attrs["cout"]), cout_levels)
                _put(out, op, (s.input_shape[0], c), s.dtype, **attrs)
                continue
            hw = _snap(s.input_shape[2], hw_levels)
            if base in ("conv2d", "pwconv2d"):
                attrs["cout"] = _snap(int(attrs["cout"]), cout_levels)
                g = int(attrs.get("groups", 1))
                if g > 1 and (c % g or attrs["cout"] % g):
                    continue
            _put(out, op, (s.input_shape[0], c, hw, hw), s.dtype, **attrs)
    return list(out.values())


def _snap(v: int, levels: Sequence[int]) -> int:
    arr = np.asarray(levels, dtype=float)
    return int(arr[np.argmin(np.abs(np.log(arr) - math.log(v)))])


def _put(out: dict[str, OpSpec], op: str, shape, dtype, **attrs) -> None:
    from hwlat.device_tables.errors import OpSpecError

    try:
        s = OpSpec.make(op, shape, dtype=dtype, **attrs)
    except OpSpecError:
        return
    out.setdefault(s.key, s)


# ---- adaptive sampling ------------------------------------------------------------------------
@dataclass
class AdaptiveLog:
    """What each round measured and how wrong the regressors were on it before measuring."""

    rounds: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **entry: Any) -> None:
        self.rounds.append(entry)


def _spread_seed(specs: list[OpSpec], k: int) -> list[int]:
    """`k` indices spread out in feature space (farthest-point), starting from the costliest."""
    if len(specs) <= k:
        return list(range(len(specs)))
    X = np.stack([features(s)[:8] for s in specs])
    chosen = [int(np.argmax(X[:, 0]))]
    d = np.linalg.norm(X - X[chosen[0]], axis=1)
    while len(chosen) < k:
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(X - X[i], axis=1))
    return chosen


def choose_next(candidates: list[OpSpec], weights: np.ndarray, regressors: KernelRegressors | None, k: int,
                family_factor: dict[str, float], rng: np.random.Generator) -> list[int]:
    """Indices of the `k` candidates with the largest expected error on network totals, diversified."""
    if not candidates:
        return []
    n = len(candidates)
    score = np.zeros(n)
    uncovered = []
    if regressors is not None:
        est = regressors.estimate(candidates)
        for i, e in enumerate(est):
            if e is None:
                uncovered.append(i)
                continue
            score[i] = weights[i] * e.ms * math.expm1(e.sigma) * family_factor.get(family(candidates[i]), 1.0)
    else:
        uncovered = list(range(n))
    picked: list[int] = []
    # A family with no rows at all comes first: without one of its rows nothing predicts it.
    seen_fams: set[str] = set()
    for i in uncovered:
        f = family(candidates[i])
        if f not in seen_fams and len(picked) < k:
            picked.append(i)
            seen_fams.add(f)
    X = np.stack([features(s)[:8] for s in candidates])
    fam = np.array([family(s) for s in candidates])
    score = score.copy()
    score[picked] = -np.inf
    for i in picked:
        near = (fam == fam[i]) & (np.linalg.norm(X - X[i], axis=1) < 0.35)
        score[near] *= 0.3
    while len(picked) < k:
        i = int(np.argmax(score))
        if not np.isfinite(score[i]) or score[i] < 0:
            break
        picked.append(i)
        score[i] = -np.inf
        near = (fam == fam[i]) & (np.linalg.norm(X - X[i], axis=1) < 0.35)
        score[near] *= 0.3
    return picked


def adaptive_profile(measure: Callable[[OpSpec], tuple[Any, dict]], table: DeviceTable, pool: dict[str, tuple[OpSpec, int]],
                     budget: int, batch: int | None = None, seed: int = 0, progress: bool = True,
                     n_members: int = 12, deadline: float | None = None) -> AdaptiveLog:
    """Measure up to `budget` kernels of `pool` into `table` (rows already there count), adaptively,
    and stop starting new measurements once `time.monotonic()` passes `deadline`.

    `measure(spec)` returns ``(Measurement, extra)`` or raises `UnsupportedOpError` (then an
    error row is written and the kernel is not retried)."""
    import time

    from tqdm import tqdm

    from hwlat.device_tables.errors import UnsupportedOpError

    rng = np.random.default_rng(seed)
    keys = list(pool)
    specs = [pool[k][0] for k in keys]
    weights = np.asarray([pool[k][1] for k in keys], dtype=float)
    done = {k for k in keys if k in table}
    measured_before = len([r for r in table.rows() if r.spec.key in pool])
    todo_budget = max(0, budget - measured_before)
    batch = batch or max(4, budget // 25)
    log_ = AdaptiveLog()
    fam_factor: dict[str, float] = {}
    bar = tqdm(total=todo_budget, desc=f"adaptive {table.name}", unit="op", disable=None if progress else True, dynamic_ncols=True)
    spent = 0
    # Seed: a few spread-out kernels of every family.
    if not any(r.ok for r in table.rows()):
        by_fam: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            by_fam.setdefault(family(s), []).append(i)
        # One kernel of every family first (the most used families first), then more while a
        # quarter of the budget lasts: a family without a row cannot be predicted at all.
        per = max(1, min(4, todo_budget // (4 * max(1, len(by_fam)))))
        spread = {f: [idx[j] for j in _spread_seed([specs[i] for i in idx], per)] for f, idx in by_fam.items()}
        order = sorted(spread, key=lambda f: -sum(weights[i] for i in by_fam[f]))
        seed_idx = [spread[f][r] for r in range(per) for f in order if r < len(spread[f])][:todo_budget]
        spent += _measure_into(measure, table, [specs[i] for i in seed_idx], bar, UnsupportedOpError, extra={"adaptive_round": 0},
                               deadline=deadline)
        done.update(specs[i].key for i in seed_idx)
        log_.add(round=0, measured=len(seed_idx), method="spread seed")
    rnd = 0
    while spent < todo_budget and (deadline is None or time.monotonic() < deadline):
        rnd += 1
        ok_rows = [r for r in table.rows("ok")]
        regs = KernelRegressors(n_members=n_members, seed=seed + rnd).fit([r.spec for r in ok_rows],
                                                                           [r.measurement.median_ms for r in ok_rows]) if ok_rows else None
        cand_idx = [i for i, k in enumerate(keys) if k not in done]
        if not cand_idx:
            break
        k = min(batch, todo_budget - spent)
        cands = [specs[i] for i in cand_idx]
        pick = choose_next(cands, weights[cand_idx], regs, k, fam_factor, rng)
        if not pick:
            break
        chosen = [cands[i] for i in pick]
        before = regs.estimate(chosen) if regs is not None else [None] * len(chosen)
        spent += _measure_into(measure, table, chosen, bar, UnsupportedOpError,
                               extra={"adaptive_round": rnd},
                               predicted={s.key: e for s, e in zip(chosen, before)}, deadline=deadline)
        done.update(s.key for s in chosen)
        # How wrong were we, per family, relative to the uncertainty we claimed?
        errs: dict[str, list[float]] = {}
        for s, e in zip(chosen, before):
            row = table.get(s)
            if e is None or row is None or not row.ok:
                continue
            errs.setdefault(family(s), []).append(abs(math.log(row.measurement.median_ms / e.ms)) / max(e.sigma, 0.02))
        for f, v in errs.items():
            fam_factor[f] = float(np.clip(0.5 * fam_factor.get(f, 1.0) + 0.5 * np.mean(v), 0.5, 4.0))
        mean_err = float(np.mean([abs(math.log(table.get(s).measurement.median_ms / e.ms)) for s, e in zip(chosen, before)
                                  if e is not None and table.get(s) is not None and table.get(s).ok] or [float("nan")]))
        log_.add(round=rnd, measured=len(chosen), mean_abs_log_error_before=mean_err,
                 families=dict(Counter(family(s) for s in chosen)))
    bar.close()
    return log_


def _measure_into(measure, table: DeviceTable, specs: Sequence[OpSpec], bar, unsupported, extra: dict,
                  predicted: dict | None = None, deadline: float | None = None) -> int:
    import time

    from hwlat.profilers.protocol import noisy_last

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() > deadline

    n = 0
    for s, result in noisy_last(measure, [s for s in specs if s not in table], unsupported, stop=out_of_time):
        row_extra = dict(extra)
        e = (predicted or {}).get(s.key)
        if e is not None:
            row_extra.update(predicted_ms=round(e.ms, 6), predicted_sigma=round(e.sigma, 4))
        if isinstance(result, Exception):
            table.append(s, error=str(result), extra=row_extra)
        else:
            m, ex = result
            table.append(s, m, extra={**ex, **row_extra})
        n += 1
        bar.update(1)
    return n


def profile_specs_into(measure, table: DeviceTable, specs: Sequence[OpSpec], progress: bool = True, desc: str = "grid",
                       deadline: float | None = None) -> int:
    """Measure every spec not yet in `table` (the grid's way), until `time.monotonic()` passes `deadline`."""
    from tqdm import tqdm

    from hwlat.device_tables.errors import UnsupportedOpError

    todo = [s for s in specs if s not in table]
    bar = tqdm(total=len(todo), desc=f"{desc} {table.name}", unit="op", disable=None if progress else True, dynamic_ncols=True)
    n = _measure_into(measure, table, todo, bar, UnsupportedOpError, extra={}, deadline=deadline)
    bar.close()
    return n


__all__ = ["AdaptiveLog", "adaptive_profile", "choose_next", "grid_specs", "kernel_pool", "profile_specs_into"]
