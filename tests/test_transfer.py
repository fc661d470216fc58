"""Few-shot transfer: a synthetic device family (latency = device-specific weights x op costs +
noise), the protocol's guard on test devices (poisoned tables), save/load round trips, and the
`hwlat bench transfer` command's bad-input messages. No shared data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hwlat.cli import main
from hwlat.predictors.baselines import CostBaseline, EncodingRidge, NearestDevice
from hwlat.predictors.evaluation import ProtocolSettings, TargetDevice, TransferData, make_methods, run_method
from hwlat.predictors.features import FeatureLayout
from hwlat.predictors.io import load, save
from hwlat.predictors.metrics import spearman
from hwlat.predictors.proxy import ProxyAdapter
from hwlat.predictors.transfer import TransferPredictor

N_POS, N_OPS = 12, 6


def family(n=900, n_devices=10, seed=0, noise=0.02):
    """Architectures = an op per position; device d: ms = overhead_d + sum over positions of
    cost_d[op] * size[position], cost_d a random mixture of 3 hardware profiles, x lognormal noise."""
    rng = np.random.default_rng(seed)
    ops = rng.integers(N_OPS, size=(n, N_POS))
    onehot = np.zeros((n, N_POS, N_OPS))
    onehot[np.arange(n)[:, None], np.arange(N_POS)[None, :], ops] = 1
    size = np.linspace(2.0, 0.5, N_POS)  # early positions are bigger
    counts = onehot.sum(axis=1)
    weighted = (onehot * size[None, :, None]).sum(axis=1)
    X = np.hstack([onehot.reshape(n, -1), counts, weighted])
    layout = FeatureLayout(tuple(f"f{i}" for i in range(X.shape[1])), tuple(range(N_POS * N_OPS)),
                           tuple(range(N_POS * N_OPS, X.shape[1])), (), "synthetic")
    profiles = rng.gamma(2.0, 1.0, size=(3, N_OPS))
    profiles[:, 0] = 0.0  # op 0 is "none" everywhere
    L = np.empty((n, n_devices))
    for d in range(n_devices):
        cost = rng.dirichlet(np.ones(3)) @ profiles * rng.uniform(0.5, 3.0)
        L[:, d] = (rng.uniform(1, 5) + weighted @ cost) * np.exp(noise * rng.standard_normal(n))
    return X, layout, L


def test_transfer_recovers_a_held_out_devices_ranking_from_20_measurements():
    X, layout, L = family()
    train, test = L[:, :8], L[:, 8:]
    pred = TransferPredictor(layout).fit(X, train)
    query = np.arange(600, 900)
    refs = pred.choose_references(X[:600], 10)
    rng = np.random.default_rng(1)
    for d in range(test.shape[1]):
        shots = np.concatenate([refs, rng.choice(np.setdiff1d(np.arange(600), refs), 10, replace=False)])
        p = pred.adapt(X[shots], test[shots, d]).predict(X[query])
        rho = spearman(p, test[query, d])
        base = spearman(EncodingRidge().fit(X[shots], test[shots, d]).predict(X[query]), test[query, d])
        assert rho > 0.9, f"held-out device {d}: Spearman {rho:.3f}"
        assert rho > base, f"transfer {rho:.3f} should beat ridge on the shots alone {base:.3f}"
        assert np.median(np.abs(p / test[query, d] - 1)) < 0.1
        assert np.all(p > 0)
        # leave-one-out errors on the 20 measurements: one per shot, of the size of the query's errors
        assert pred.loo_rel_error_.shape == (20,) and np.median(pred.loo_rel_error_) < 0.1


def test_size_learner_carries_a_device_that_follows_macs_alone():
    """A device unlike every training device whose latency follows a size measure (a CPU thread
    paying for MACs): the stack's size learner (a log-log line on `FeatureLayout.size`) ranks it,
    and a layout without size columns leaves that learner out."""
    X, layout, L = family(seed=5)
    rng = np.random.default_rng(7)
    macs = X[:, : N_POS * N_OPS] @ rng.gamma(1.0, 1.0, N_POS * N_OPS) + 1.0  # per position and op: no count follows it
    Xs = np.hstack([X, np.log(macs)[:, None]])
    sized = FeatureLayout(layout.names + ("log_macs",), layout.enc, layout.cost, layout.extra, "synthetic",
                          size=(X.shape[1],))
    target = 0.02 * macs**0.9 * np.exp(0.01 * rng.standard_normal(len(macs)))
    query, pool = np.arange(600, 900), np.arange(600)
    with_size = TransferPredictor(sized).fit(Xs, L[:, :8])
    shots = np.concatenate([with_size.choose_references(Xs[pool], 10), rng.choice(pool, 10, replace=False)])
    with_size.adapt(Xs[shots], target[shots])
    assert "size" in with_size.learner_names_ and with_size.weights_[with_size.learner_names_.index("size")] > 0.5
    assert spearman(with_size.predict(Xs[query]), target[query]) > 0.98
    plain = TransferPredictor(layout).fit(X, L[:, :8]).adapt(X[shots], target[shots])
    assert "size" not in plain.learner_names_
    again = load_roundtrip(with_size)
    assert np.allclose(again.predict(Xs[query]), with_size.predict(Xs[query]), rtol=1e-12)


def load_roundtrip(model):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        save(model, Path(d) / "m")
        return load(Path(d) / "m")


def test_references_are_training_only_and_the_same_for_every_device():
    X, layout, L = family(seed=3)
    a = TransferPredictor(layout).fit(X, L[:, :8]).choose_references(X, 10)
    b = TransferPredictor(layout).fit(X, L[:, :8]).choose_references(X, 10)
    assert len(set(a.tolist())) == 10 and np.array_equal(a, b)


def test_adapt_rejects_bad_measurements_and_unfitted_use():
    X, layout, L = family(n=200)
    pred = TransferPredictor(layout)
    with pytest.raises(RuntimeError):
        pred.adapt(X[:5], L[:5, 0])
    pred.fit(X, L[:, :8])
    with pytest.raises(ValueError):
        pred.adapt(X[:3], [1.0, -2.0, 3.0])
    with pytest.raises(ValueError):
        pred.predict(X[:, :5]) if hasattr(pred, "n_shots_") else pred.adapt(X[:, :5], L[:, 0])


def test_zero_measurements_fall_back_to_the_mean_training_device():
    X, layout, L = family(n=300)
    pred = TransferPredictor(layout).fit(X, L[:, :8]).adapt(X[:0], np.zeros(0))
    p = pred.predict(X)
    assert p.shape == (300,) and np.all(np.isfinite(p)) and np.all(p > 0)


def test_group_ridge_leave_one_out_is_exact_and_matches_the_primal_solution():
    from hwlat.predictors.linear import group_ridge_loo

    rng = np.random.default_rng(0)
    n = 20
    A = rng.normal(size=(n, 30))  # more columns than rows: the dual form's case
    y = 3 + 2 * A[:, 0] + A[:, 1] + 0.1 * rng.normal(size=n)
    groups = np.array([-1] + [0] * 9 + [1] * 20)
    fit = group_ridge_loo(A, y, groups, ((0.05,), (0.3,)))

    def primal(rows):
        Ac = A[rows] - A[rows].mean(axis=0)
        unit = [Ac[:, groups == g].var(axis=0).mean() for g in (0, 1)]
        pen = np.array([0.0 if g < 0 else lam * len(rows) * unit[g] for g, lam in zip(groups, [0] + [0.05] * 9 + [0.3] * 20)])
        X1 = np.column_stack([np.ones(len(rows)), A[rows]])
        return np.linalg.solve(X1.T @ X1 + np.diag(np.r_[0.0, pen]), X1.T @ y[rows])

    w = primal(np.arange(n))
    assert np.allclose(w[1:], fit.coef, atol=1e-8) and np.isclose(w[0], fit.intercept, atol=1e-8)
    # exact leave-one-out: the same penalties (per row and the full fit's column variances) refit without the row
    Ac = A - A.mean(axis=0)
    unit = [Ac[:, groups == g].var(axis=0).mean() for g in (0, 1)]
    pen = np.array([0.0 if g < 0 else lam * n * unit[g] for g, lam in zip(groups, [0] + [0.05] * 9 + [0.3] * 20)])
    X1 = np.column_stack([np.ones(n), A])
    for i in range(n):
        keep = np.arange(n) != i
        wi = np.linalg.solve(X1[keep].T @ X1[keep] + np.diag(np.r_[0.0, pen]), X1[keep].T @ y[keep])
        assert np.isclose(X1[i] @ wi, fit.loo_pred[i], atol=1e-8)


def test_anchor_learner_follows_the_training_device_a_new_one_resembles():
    X, layout, L = family()
    pred = TransferPredictor(layout, learners=("anchor",)).fit(X, L[:, :8])
    # a device that runs like training device 3, 40% slower, with a little noise of its own
    y = 1.4 * L[:, 3] * np.exp(0.01 * np.random.default_rng(2).standard_normal(len(X)))
    shots = np.arange(20)
    p = pred.adapt(X[shots], y[shots]).predict(X[600:])
    assert pred.learner_names_ == ["anchor"] and np.all(np.isfinite(pred.loo_rel_error_))
    assert spearman(p, y[600:]) > 0.95
    assert np.median(np.abs(p / y[600:] - 1)) < 0.1


def test_relative_cost_fit_recovers_an_additive_device_and_minimises_relative_error():
    from hwlat.predictors.linear import nnls_ridge
    from hwlat.predictors.transfer import nnls_rel, nnls_rel_loo

    rng = np.random.default_rng(3)
    A = rng.integers(0, 6, size=(20, 5)).astype(float)
    w_true = np.array([0.5, 0.0, 2.0, 0.1, 1.0])
    y = 0.3 + A @ w_true  # an overhead and non-negative per-op costs, no noise
    fit = nnls_rel_loo(A, y)
    assert np.allclose(fit.predict(A), y, rtol=1e-2) and np.allclose(fit.loo_pred, y, rtol=3e-2)
    assert np.all(fit.coef >= 0) and fit.intercept >= 0
    w, b = nnls_rel(A, y, 1e-9)
    assert np.allclose(w, w_true, atol=1e-3) and np.isclose(b, 0.3, atol=1e-3)
    # latencies over two orders of magnitude with 20% noise: the relative fit has the smaller
    # relative error (the absolute one spends its fit on the slowest architectures)
    A = np.vstack([A, 40 * A[:5]])
    y = (0.3 + A @ w_true) * np.exp(0.2 * rng.standard_normal(len(A)))
    w_rel, b_rel = nnls_rel(A, y, 1e-9)
    w_abs, b_abs = nnls_ridge(A, y, 1e-9)
    rel = lambda p: float(np.mean((p / y - 1) ** 2))  # noqa: E731
    assert b_abs >= 0 and rel(A @ w_rel + b_rel) < rel(A @ w_abs + b_abs)


def test_default_stack_fits_counts_for_relative_error():
    from hwlat.predictors.transfer import STACK

    X, layout, L = family()
    assert "cost-rel" in STACK and "cost" not in STACK
    pred = TransferPredictor(layout).fit(X, L[:, :8])
    # a device unlike every training device: it pays per op that runs, whatever the position
    y = 2.0 + X[:, layout.cost[:N_OPS]] @ np.array([0.0, 3.0, 0.2, 1.0, 0.05, 5.0])
    shots = np.concatenate([pred.choose_references(X[:600], 10), np.arange(500, 510)])
    p = pred.adapt(X[shots], y[shots]).predict(X[600:])
    assert spearman(p, y[600:]) > 0.95


def test_live_cost_learner_carries_a_runtime_that_prunes_dead_ops_from_ten_measurements():
    """NB201's real features; training devices that run every op (ms from the raw op counts), a
    new device that prunes dead ones (ms from the counts of ops that still run): with 5 + 5
    measurements the stack leans on `cost-live` and ranks the device better than without it. A
    space without dead ops (FBNet) leaves the learner out; the layout keeps its live group on disk."""
    from hwlat.nas.features import latency_features
    from hwlat.nas.spaces import get_space
    from hwlat.predictors.transfer import STACK

    rng = np.random.default_rng(0)
    X, layout = latency_features("nb201", get_space("nb201").sample(2000, seed=0))
    assert [layout.names[i] for i in layout.live] == [f"n_{op}_live" for op in
                                                      ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")]
    raw, live = X[:, list(layout.cost[:5])], X[:, list(layout.live)]
    L = np.column_stack([(rng.uniform(0.2, 1) + raw @ np.r_[0.02, rng.gamma(2.0, 0.1, 4)])
                         * np.exp(0.02 * rng.standard_normal(len(X))) for _ in range(6)])
    pool, query = np.arange(1000), np.arange(1000, 2000)
    without = tuple(name for name in STACK if name != "cost-live")
    for seed in range(5):
        r = np.random.default_rng(seed + 10)
        y = (0.3 + live @ r.gamma(2.0, 0.1, 4)) * np.exp(0.02 * r.standard_normal(len(X)))
        rho = {}
        for learners in (STACK, without):
            pred = TransferPredictor(layout, learners=learners).fit(X[pool], L[pool])
            shots = np.concatenate([pred.choose_references(X[pool], 5), r.choice(pool, 5, replace=False)])
            rho[learners] = spearman(pred.adapt(X[shots], y[shots]).predict(X[query]), y[query])
            if learners == STACK:
                assert pred.weights_[pred.learner_names_.index("cost-live")] > 0.5
        assert rho[STACK] > 0.99 and rho[STACK] > rho[without], f"device {seed}: {rho}"
    Xf, fbnet = latency_features("fbnet", get_space("fbnet").sample(60, seed=0))
    Lf = np.exp(Xf[:, list(fbnet.cost)] @ rng.uniform(0.01, 0.05, (len(fbnet.cost), 4)))
    assert fbnet.live == () and "cost-live" not in TransferPredictor(fbnet).fit(Xf, Lf).adapt(Xf[:10], Lf[:10, 0]).learner_names_
    assert FeatureLayout.from_json(layout.to_json()) == layout


def test_relative_sigma_is_finite_positive_and_grows_where_the_learners_disagree():
    X, layout, L = family()
    pred = TransferPredictor(layout).fit(X, L[:, :8])
    shots = np.concatenate([pred.choose_references(X[:600], 10), np.arange(10)])
    pred.adapt(X[shots], L[shots, 8])
    sigma = pred.relative_sigma(X)
    assert sigma.shape == (len(X),) and np.all(np.isfinite(sigma)) and np.all(sigma > 0)
    # the leave-one-out part alone is the floor; disagreement among the learners adds to it
    floor = np.expm1(np.sqrt(np.mean(np.log1p(pred.loo_rel_error_) ** 2)))
    assert np.all(sigma >= floor - 1e-12)
    P, w = pred._learner_log_predictions(X)
    spread = ((P - (P @ (w / w.sum()))[:, None]) ** 2) @ (w / w.sum())
    assert len(w) > 1 and sigma[np.argmax(spread)] > sigma[np.argmin(spread)]
    assert spearman(sigma, spread) > 0.99
    # fewer measurements than a leave-one-out error needs, and none at all: still finite and positive
    for m in (2, 0):
        s = pred.adapt(X[shots[:m]], L[shots[:m], 8]).relative_sigma(X[:50])
        assert np.all(np.isfinite(s)) and np.all(s > 0)


# ---- save / load -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda lay: TransferPredictor(lay), lambda lay: ProxyAdapter(lay),
                                  lambda lay: TransferPredictor(lay, learners=("mixture",))])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, make):
    X, layout, L = family(n=400)
    pred = make(layout).fit(X, L[:, :8])
    shots = np.arange(20)
    pred.adapt(X[shots], L[shots, 9])
    save(pred, tmp_path / "board")
    assert (tmp_path / "board.npz").is_file() and (tmp_path / "board.json").is_file()
    back = load(tmp_path / "board")
    assert type(back) is type(pred)
    assert np.array_equal(back.predict(X), pred.predict(X))
    if hasattr(pred, "relative_sigma"):
        assert np.array_equal(back.relative_sigma(X), pred.relative_sigma(X))
    # the loaded, meta-trained predictor adapts to another device exactly like the original
    other = np.arange(30, 50)
    assert np.array_equal(back.adapt(X[other], L[other, 8]).predict(X), pred.adapt(X[other], L[other, 8]).predict(X))
    meta = json.loads((tmp_path / "board.json").read_text())
    assert meta["format"] == "hwlat.predictor" and "pickle" not in (tmp_path / "board.json").read_text()


def test_help_style_meta_learner_trains_adapts_and_round_trips(tmp_path):
    pytest.importorskip("torch")
    from hwlat.predictors.help import HelpTransfer

    X, layout, L = family(n=700)
    pred = HelpTransfer(layout, n_references=8, hidden=32, embed=8, steps=120, batch=64).fit(X[:600], L[:600, :8])
    refs = pred.choose_references(X[:600], 8)
    shots = np.concatenate([refs, np.arange(500, 510)])
    p = pred.adapt(X[shots], L[shots, 9]).predict(X[600:])
    assert p.shape == (100,) and np.all(p > 0)
    assert spearman(p, L[600:, 9]) > 0.5
    save(pred, tmp_path / "help")
    assert np.array_equal(load(tmp_path / "help").predict(X[600:]), p)


def test_baselines_fit_on_shots_and_round_trip(tmp_path):
    X, layout, L = family(n=300)
    cost = X[:, -N_OPS:].sum(axis=1) + 1.0
    shots = np.arange(20)
    for model, inputs in ((CostBaseline("macs"), cost), (NearestDevice(("a", "b", "c")), L[:, :3]), (EncodingRidge(), X)):
        model.fit(inputs[shots], L[shots, 5])
        save(model, tmp_path / "m")
        assert np.array_equal(load(tmp_path / "m").predict(inputs), model.predict(inputs))
    nd = NearestDevice(("a", "b")).fit(np.column_stack([L[shots, 4] * 2.0, L[shots, 7]]), L[shots, 4])
    assert nd.device_name_ == "a" and nd.scale_ == pytest.approx(0.5)


# ---- protocol guard --------------------------------------------------------------------------------
def _protocol(X, layout, L, test_values, methods=("transfer", "proxy", "nearest", "ridge")):
    n = len(X)
    data = TransferData(np.arange(n), X, layout, L[:, :8], [f"d{i}" for i in range(8)],
                        costs={"macs": lambda rows: X[rows, -N_OPS:].sum(axis=1) + 1.0})
    query = (np.arange(n) >= 100) & (np.arange(n) < 400)
    settings = ProtocolSettings(shots=10, n_ref=10, trim=0.1, repeats=3, seed=7)
    targets = [TargetDevice(f"t{j}", test_values[:, j]) for j in range(test_values.shape[1])]
    results = [run_method(m, data, targets, query, settings) for m in make_methods(list(methods) + ["macs"])]
    return results, targets, query


def test_protocol_reads_nothing_of_a_test_device_beyond_its_allowed_measurements():
    X, layout, L = family(n=600, seed=5)
    test = L[:, 8:].copy()
    test[::17, 1] = np.nan  # missing cells are skipped, never drawn
    clean, targets, query = _protocol(X, layout, L, test)
    reads = [t.reads for t in targets]
    for r in reads:
        assert r and not any(query[i] for i in r), "only rows outside the query range may be measured"
        assert len(r) <= 10 + 10 * 3 * 6
    assert not any(i % 17 == 0 for i in reads[1])
    # poison every cell that was not handed out, query truths included
    rng = np.random.default_rng(0)
    poisoned = test.copy()
    for j, r in enumerate(reads):
        other = np.setdiff1d(np.flatnonzero(np.isfinite(test[:, j])), sorted(r))
        poisoned[other, j] = rng.uniform(1e3, 1e6, len(other))
    dirty, _, _ = _protocol(X, layout, L, poisoned)
    for a, b in zip(clean, dirty):
        assert np.array_equal(a.references, b.references)
        for name in a.devices:
            for pa, pb in zip(a.devices[name].predictions, b.devices[name].predictions):
                assert np.array_equal(pa, pb), f"{a.name} on {name} changed when unread cells were poisoned"


def test_target_device_hands_out_only_allowed_cells():
    t = TargetDevice("x", np.array([1.0, 2.0, 3.0, np.nan]))
    assert t.n_missing == 1
    t.allow(np.array([0, 2]))
    assert t.measured(np.array([2])).tolist() == [3.0]
    with pytest.raises(PermissionError):
        t.measured(np.array([1]))
    with pytest.raises(PermissionError):
        t.truth(np.array([1]))
    t.open_for_scoring(np.array([1]))
    assert t.truth(np.array([1])).tolist() == [2.0]


# ---- the command -------------------------------------------------------------------------------------
TRAIN = [f"dev{i}" for i in range(6)]
TEST = ["new0", "new1"]


@pytest.fixture(scope="module")
def nb201_table(tmp_path_factory):
    """A small NAS-Bench-201 table (indices 0..499) with synthetic latencies of 8 devices."""
    import pandas as pd

    from hwlat.nas.features import latency_features
    from hwlat.nas.spaces import get_space

    sp = get_space("nb201")
    archs = [sp.from_index(i) for i in range(500)]
    X, layout = latency_features(sp, archs)
    cost = X[:, list(layout.cost) + list(layout.extra)]
    rng = np.random.default_rng(0)
    profiles = rng.gamma(2.0, 0.3, size=(3, cost.shape[1]))
    df = pd.DataFrame({"nb201_index": range(500), "arch_str": [a.arch_str for a in archs],
                       "ops6": [a.ops6 for a in archs]})
    for name in TRAIN + TEST:
        w = rng.dirichlet(np.ones(3)) @ profiles
        df[name] = (rng.uniform(1, 3) + cost @ w) * np.exp(0.02 * rng.standard_normal(500))
    path = tmp_path_factory.mktemp("tables") / "synthetic_nb201.csv"
    df.to_csv(path, index=False)
    return path, df


def _bench(path, *extra, test=TEST, train=TRAIN, methods="transfer,proxy,nearest,ridge"):
    return ["bench", "transfer", "--space", "nb201", "--table", str(path), "--train", ",".join(train),
            "--test", ",".join(test), "--methods", methods, "--query", "100:300", "--repeats", "2", *extra]


def test_bench_prints_tables_and_json(nb201_table, tmp_path, capsys):
    path, _ = nb201_table
    out = tmp_path / "r.json"
    assert main(_bench(path, "--json", str(out), "--shots-curve", "0,5")) == 0
    text = capsys.readouterr().out
    assert "Spearman" in text and "±10% accuracy" in text and "MAPE" in text and "mean" in text
    assert "N=5 (15)" in text
    rep = json.loads(out.read_text())
    for m in ("transfer", "proxy", "nearest", "ridge"):
        r = rep["methods"][m]
        assert -1 <= r["mean_spearman"] <= 1
        for d in TEST:
            assert set(r["devices"][d]) >= {"spearman_mean", "within10_mean"}
    assert rep["methods"]["transfer"]["mean_spearman"] > 0.9
    assert set(rep["shots_curve"]) == {"0", "5"}


def test_bench_shots_curve_names_the_shots_it_draws(nb201_table, capsys):
    """With --shots-from suggested the curve's shots are the suggested ones, not the random ones its header named."""
    path, _ = nb201_table
    assert main(_bench(path, "--shots-from", "suggested", "--shots-curve", "0,5", methods="ridge")) == 0
    text = capsys.readouterr().out
    assert "10 references + N suggested shots" in text and "random shots" not in text


def test_bench_json_of_a_device_whose_latencies_are_all_equal_is_strict_json(nb201_table, tmp_path, capsys):
    """Its Spearman is undefined: --json wrote NaN, which JSON has not (JavaScript, jq --strict refuse it)."""
    path, df = nb201_table
    flat = tmp_path / "flat.csv"
    df.assign(flat=5.0).to_csv(flat, index=False)
    out = tmp_path / "r.json"
    assert main(_bench(flat, "--json", str(out), test=["flat", "new0"], methods="ridge")) == 0
    capsys.readouterr()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    rep = json.loads(out.read_text(), parse_constant=refuse)
    assert rep["methods"]["ridge"]["devices"]["flat"]["spearman_mean"] is None


def test_bench_json_over_an_arch_tables_metadata_is_refused(nb201_table, tmp_path, capsys):
    """--json measured.json wrote the results over the metadata of the arch table measured (the other
    commands' --out and --json refuse a table's own files)."""
    path, _ = nb201_table
    meta = tmp_path / "measured.json"
    meta.write_text('{"schema": "hwlat.arch_table", "schema_version": 1}\n')
    assert main(_bench(path, "--json", str(meta), methods="ridge")) == 1
    assert "measured.json is a file of the table" in capsys.readouterr().err
    assert json.loads(meta.read_text())["schema"] == "hwlat.arch_table"


def test_bench_with_no_measurement_of_the_test_devices_prints_only_the_ranking(nb201_table, capsys):
    """--shots 0 --reference 0: no test-device ms to scale to; its MAPE (601,857,565% for macs) meant nothing."""
    path, _ = nb201_table
    assert main(_bench(path, "--shots", "0", "--reference", "0", "--methods", "transfer,macs")) == 0
    text = capsys.readouterr().out
    assert "Spearman" in text and "±10% accuracy and MAPE: left out" in text
    assert "MAPE (mean" not in text and "±10% accuracy (share" not in text


def test_bench_names_the_option_of_an_unknown_device_and_a_folder_given_as_table(nb201_table, tmp_path, capsys):
    path, _ = nb201_table
    err = _error(capsys, _bench(path, train=[*TRAIN, "nosuch"], test=[*TEST, "other"]))
    assert err.startswith("hwlat: error: unknown device(s) --train nosuch; --test other; the tables have: ")
    assert _error(capsys, _bench(tmp_path)) == (f"hwlat: error: {tmp_path} is a folder; give an arch table's CSV file (`hwlat "
                                                "profile archs --out` writes one; public ones are named like nb201.csv)")


def test_a_bare_public_file_name_not_found_here_points_to_the_public_one(nb201_table, tmp_path, capsys, monkeypatch):
    """`hwlat bench transfer --help`'s example names nb201.csv, which is found only in the public data folder."""
    path, _ = nb201_table
    (public := tmp_path / "public").mkdir()
    shutil.copy(path, public / "nb201.csv")
    monkeypatch.setenv("HWLAT_LATENCY_DATA", str(public))
    monkeypatch.chdir(tmp_path)
    assert _error(capsys, _bench("nb201.csv")) == ("hwlat: error: arch table nb201.csv not found here; the public "
                                                   f"latency data has one: {public / 'nb201.csv'}")
    assert _error(capsys, _bench("other.csv")) == "hwlat: error: arch table other.csv not found"


def test_bench_reads_only_allowed_cells_of_a_poisoned_table(nb201_table, tmp_path):
    """Run once, record which test cells the protocol handed out; poison all other cells outside
    the query range; the command's results must not change."""
    from hwlat.transfer_tables import load_transfer_tables

    path, df = nb201_table
    tables = load_transfer_tables("nb201", [str(path)], "nb201_index", TRAIN + TEST)
    data = tables.transfer_data(TRAIN, [])
    query = (tables.keys >= 100) & (tables.keys < 300)
    targets = [TargetDevice(n, tables.column(n)) for n in TEST]
    for m in make_methods(["transfer", "proxy", "nearest", "ridge"]):
        run_method(m, data, targets, query, ProtocolSettings(repeats=2))
    poisoned = df.copy()
    rng = np.random.default_rng(1)
    for t in targets:
        rows = [i for i in range(len(df)) if i not in t.reads and not query[i]]
        poisoned.loc[rows, t.name] = rng.uniform(1e3, 1e5, len(rows))
    bad = tmp_path / "poisoned.csv"
    poisoned.to_csv(bad, index=False)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(_bench(path, "--json", str(a))) == 0
    assert main(_bench(bad, "--json", str(b))) == 0
    ra, rb = json.loads(a.read_text())["methods"], json.loads(b.read_text())["methods"]
    for m in ra:
        for d in TEST:
            assert ra[m]["devices"][d]["spearman"] == rb[m]["devices"][d]["spearman"]
            assert ra[m]["devices"][d]["within10_mean"] == rb[m]["devices"][d]["within10_mean"]


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwlat: error:") and "\n" not in err
    return err


def test_bench_refuses_a_json_path_it_cannot_write_before_running(nb201_table, tmp_path, capsys):
    """An unwritable --json was found only after the whole benchmark had run, its results lost."""
    path, _ = nb201_table
    (tmp_path / "blocker").write_text("a file")
    err = _error(capsys, _bench(path, "--json", str(tmp_path / "blocker" / "r.json")))
    assert "blocker is a file, not a folder" in err
    err = _error(capsys, _bench(path, "--json", str(tmp_path)))
    assert "Is a directory" in err
    assert "Spearman" not in capsys.readouterr().out


@pytest.mark.parametrize("methods, words", [
    ("", "names no method; give all, or some of: macs"),  # ran nothing and printed empty tables
    (",", "names no method"),
    ("macs,macs", "method(s) listed twice: macs"),  # said "method device(s)"
])
def test_bench_methods_given_wrong_are_one_error(nb201_table, capsys, methods, words):
    path, _ = nb201_table
    assert words in _error(capsys, _bench(path, methods=methods))


def test_bench_all_among_methods_runs_them_all(nb201_table, capsys):
    """`--methods all,macs` said "unknown method(s) all; choose from all, ..."."""
    from hwlat.predictors.evaluation import METHODS

    path, _ = nb201_table
    assert main(_bench(path, "--repeats", "1", "--query", "100:130", methods="all,macs")) == 0
    header = capsys.readouterr().out.split("Spearman rank correlation")[1].splitlines()[1].split()
    assert header == ["device", *METHODS]


def test_bench_unknown_device_lists_the_available_ones(nb201_table, capsys):
    path, _ = nb201_table
    err = _error(capsys, _bench(path, test=["nosuchboard"]))
    assert "nosuchboard" in err and "dev0" in err and "new1" in err


def test_bench_overlapping_train_and_test(nb201_table, capsys):
    path, _ = nb201_table
    err = _error(capsys, _bench(path, test=["dev1", "new0"]))
    assert "dev1" in err and "training and test" in err


def test_bench_more_shots_than_architectures(nb201_table, capsys):
    path, _ = nb201_table
    err = _error(capsys, _bench(path, "--shots", "400"))
    assert "400 shots" in err and "only" in err


def test_bench_key_mismatch_between_tables(nb201_table, tmp_path, capsys):
    path, df = nb201_table
    other = df[["nb201_index", "arch_str"]].copy()
    other["board"] = 1.0
    other.loc[7, "nb201_index"] = 1000  # the same architecture under another index
    bad = tmp_path / "other.csv"
    other.to_csv(bad, index=False)
    argv = _bench(path) + ["--table", str(bad)]
    err = _error(capsys, argv)
    assert "key mismatch" in err and "nb201_index=7" in err and "nb201_index=1000" in err
    other.drop(columns=["nb201_index"]).to_csv(bad, index=False)
    assert "key mismatch" in _error(capsys, argv)


def test_bench_skips_and_counts_missing_latencies(nb201_table, tmp_path, capsys):
    path, df = nb201_table
    holes = df.copy()
    holes.loc[::10, "new0"] = np.nan
    holes.loc[5, "new1"] = -1  # the sources' "failed to compile"
    p = tmp_path / "holes.csv"
    holes.to_csv(p, index=False)
    assert main(_bench(p)) == 0
    out = capsys.readouterr().out
    assert "skipped: 50 architectures with no latency on new0 (20 of them in the query range)" in out
    assert "skipped: 1 architectures with no latency on new1" in out


# ---- pretrained predictors (shipped files, no shared data) -----------------------------------------
@pytest.mark.parametrize("space", ["nb201", "fbnet", "ofa"])
def test_pretrained_predictor_matches_todays_features_and_adapts(space):
    from hwlat.nas.features import latency_features
    from hwlat.nas.spaces import get_space
    from hwlat.predictors import pretrained

    pred = pretrained.load(space)
    keys = pretrained.reference_keys(space)
    assert len(keys) == 10 and pretrained.info(space)["training_devices"]
    X, layout = latency_features(space, keys)
    assert layout.names == pred.layout.names, "features changed since the predictor was built: rebuild it"
    # a made-up device: 1.5x the mean training device plus noise; 10 references + 10 samples
    sp = get_space(space)
    others = [sp.key(a) for a in sp.sample(30, seed=1)]
    Xo, _ = latency_features(space, others)
    Xa = np.vstack([X, Xo[:10]])
    truth = 1.5 * np.exp(pred.train_log_latency(np.vstack([Xa, Xo[10:]])).mean(axis=1))
    pred.adapt(Xa, truth[:20])
    p = pred.predict(Xo[10:])
    assert spearman(p, truth[20:]) > 0.9
    assert np.mean(np.abs(p / truth[20:] - 1) <= 0.1) >= 0.8
    assert "Training devices" in pretrained.card(space)


def test_features_of_another_width_name_the_version_and_what_to_do(tmp_path):
    X, layout, L = family(n=120)
    versioned = FeatureLayout(layout.names, layout.enc, layout.cost, layout.extra, "synthetic", {"features_version": 2})
    model = TransferPredictor(versioned).fit(X, L[:, :8])
    save(model, tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.layout.meta == {"features_version": 2}
    with pytest.raises(ValueError, match=r"version 2.*retrain"):
        again.adapt(np.hstack([X[:20], X[:20, :1]]), L[:20, 8])


def test_many_measurements_fit_by_folds_and_the_primal_form_as_few_do_exactly(monkeypatch):
    """Above LOO_MAX_ROWS measurements the iterative solvers refit once per fold, not per row, and
    the group ridge is solved in the primal form (`hwlat adapt fit` on a 3,210-row arch table took
    minutes, and its n x n inverses grow to gigabytes): the same fit as the dual form's, and a
    whole adaptation on many shots still ranks the device."""
    import hwlat.predictors.linear as linear
    from hwlat.predictors.linear import LOO_MAX_ROWS, held_out

    for n in (5, LOO_MAX_ROWS, LOO_MAX_ROWS + 1, 1000):
        parts = held_out(n)
        tests = np.concatenate([t for t, _ in parts])
        assert sorted(tests.tolist()) == list(range(n))  # every row held out exactly once
        assert all(set(t).isdisjoint(k) and len(t) + len(k) == n for t, k in parts)
        assert len(parts) == (n if n <= LOO_MAX_ROWS else linear.CV_FOLDS)
    rng = np.random.default_rng(4)
    n = 3 * LOO_MAX_ROWS
    A = rng.normal(size=(n, 12))
    y = 3 + 2 * A[:, 0] + A[:, 1] + 0.1 * rng.normal(size=n)
    groups = np.array([-1] * 2 + [0] * 10)
    primal = linear.group_ridge_loo(A, y, groups, ((0.01, 0.1),))
    monkeypatch.setattr(linear, "LOO_MAX_ROWS", 10 * n)
    dual = linear.group_ridge_loo(A, y, groups, ((0.01, 0.1),))
    monkeypatch.undo()
    assert primal.lam == dual.lam
    assert np.allclose(primal.coef, dual.coef, atol=1e-6) and np.isclose(primal.intercept, dual.intercept, atol=1e-6)
    assert np.allclose(primal.loo_pred, dual.loo_pred, atol=1e-6)

    X, layout, L = family()
    pred = TransferPredictor(layout).fit(X, L[:, :8])
    y = 1.4 * L[:, 3] * np.exp(0.01 * rng.standard_normal(len(X)))
    shots = np.arange(3 * LOO_MAX_ROWS)
    p = pred.adapt(X[shots], y[shots]).predict(X[600:])
    assert np.all(np.isfinite(pred.loo_rel_error_)) and spearman(p, y[600:]) > 0.95
