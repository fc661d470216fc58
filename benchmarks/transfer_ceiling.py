"""How well can any predictor rank a test device's architectures? The ceiling of each test device
of `benchmarks/transfer.py`, with far more than the protocol allows.

For every test device, two models are fitted on all of its measured architectures outside the
query range (thousands, against the protocol's 20), and scored like the protocol scores (Spearman
and ±10% accuracy on the query range, the device's fastest and slowest 10% dropped):
  ridge  log latency from the space's latency features (`hwlat.nas.features.latency_features`);
  gbm    gradient-boosted trees on those features plus every training and validation device's log
         latency of the same architecture.
A column whose ceiling is low is noisy as measured: the architecture does not decide its latency.

    .venv/bin/python benchmarks/transfer_ceiling.py [--data DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transfer import runs  # noqa: E402

from hwlat.device_tables.archtable import public_data_dir  # noqa: E402


def _option(argv: list[str], name: str) -> list[str]:
    """Every value given to `name` in a `hwlat bench transfer` argument list."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def ceilings(argv: list[str]) -> dict[str, dict[str, float]]:
    """{test device: {model: Spearman, model + "_within10": share}} for one benchmark run."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV

    from hwlat.commands.bench import default_query, join_key
    from hwlat.transfer_tables import load_transfer_tables
    from hwlat.predictors.metrics import trimmed_score

    space = _option(argv, "--space")[0]
    train = [d for opt in ("--train", "--valid") for v in _option(argv, opt) for d in v.split(",")]
    test = _option(argv, "--test")[0].split(",")
    tables = load_transfer_tables(space, _option(argv, "--table"), join_key(space), train + test)
    X = tables.transfer_data(train, []).X
    lo, hi = default_query(space)
    query = (tables.keys >= lo) & (tables.keys < hi)
    others = np.log(np.column_stack([tables.column(d) for d in train]))
    gbm_x = np.hstack([X, others])
    out = {}
    for name in test:
        y = tables.column(name)
        known = np.isfinite(y) & (y > 0)
        fit, q = np.flatnonzero(known & ~query & np.all(np.isfinite(others), axis=1)), np.flatnonzero(known & query)
        scores = {}
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(X[fit], np.log(y[fit]))
        gbm = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, random_state=0)
        gbm.fit(gbm_x[fit], np.log(y[fit]))
        for model, pred in (("ridge", ridge.predict(X[q])), ("gbm", gbm.predict(gbm_x[q]))):
            s = trimmed_score(np.exp(pred), y[q])
            scores[model], scores[f"{model}_within10"] = float(s.spearman), float(s.within10)
        scores["fit_archs"] = int(len(fit))
        out[name] = scores
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None,
                    help="public latency CSV folder (default $HWLAT_LATENCY_DATA or ../shared/data/latency)")
    ap.add_argument("--json", default=None, help="write the ceilings here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = public_data_dir(args.data)
    results: dict[str, dict] = {}
    print(f"{'run':<12} {'device':<15} {'archs fit':>9} {'ridge':>7} {'gbm':>7} {'ceiling':>8}  ±10% (gbm)")
    for run, argv in runs(data):
        for device, s in ceilings(argv).items():
            results[f"{run}/{device}"] = s
            print(f"{run:<12} {device:<15} {s['fit_archs']:>9} {s['ridge']:>7.3f} {s['gbm']:>7.3f} "
                  f"{max(s['ridge'], s['gbm']):>8.3f}  {s['gbm_within10']:.1%}", flush=True)
    best = [max(s["ridge"], s["gbm"]) for s in results.values()]
    print(f"\n{len(best)} test devices: mean ceiling {np.mean(best):.3f}; below 0.85: "
          + (", ".join(k for k, s in results.items() if max(s["ridge"], s["gbm"]) < 0.85) or "none"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
