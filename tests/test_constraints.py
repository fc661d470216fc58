"""LatencyConstraint: values, feasibility, margins, adapters (filter, penalty, Optuna, differentiable)."""

import math
import warnings

import numpy as np
import pytest
import torch

from hwlat.nas.arch_predictors import CallablePredictor, FeaturePredictor, PredictorSpaceError, as_arch_predictor
from hwlat.nas.choices import space_decisions
from hwlat.nas.constraints import ConstraintError, InfeasibleBudgetError, LatencyConstraint, suggest_arch
from hwlat.nas.latency_table import ChoiceLatencyTable, uniform_probs
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import ArchError

# A known, exactly additive predictor: 0.1 ms + per-edge op cost (none, skip, conv1x1, conv3x3, pool).
OP_MS = np.array([0.0, 0.01, 0.1, 0.4, 0.05])
BASE_MS = 0.1
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


class Known:
    """Batched additive predictor that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, archs):
        self.calls += 1
        return np.array([BASE_MS + OP_MS[list(a.ops)].sum() for a in archs])


@pytest.fixture()
def space():
    return get_space("nb201")


@pytest.fixture()
def known(space):
    return CallablePredictor(space, Known(), batched=True, name="known")


def test_values_feasibility_and_margin_one_and_batch(space, known):
    c = LatencyConstraint(known, budget_ms=1.0)
    one = c(ALL_CONV3)
    assert one.latency_ms == pytest.approx(2.5)
    assert one.feasible is False and one.margin_ms == pytest.approx(-1.5)
    ok = c(ALL_NONE)
    assert ok.feasible is True and ok.margin_ms == pytest.approx(0.9)
    archs = space.sample(50, seed=1)
    calls = known.fn.calls
    batch = c(archs)
    assert known.fn.calls == calls + 1  # one vectorised prediction for the batch
    expected = np.array([BASE_MS + OP_MS[list(a.ops)].sum() for a in archs])
    np.testing.assert_allclose(batch.latency_ms, expected)
    np.testing.assert_array_equal(batch.feasible, expected <= 1.0)
    np.testing.assert_allclose(batch.margin_ms, 1.0 - expected)
    assert c.filter(archs) == [a for a, e in zip(archs, expected) if e <= 1.0]


def test_lower_bound_and_violation(space, known):
    c = LatencyConstraint(known, budget_ms=1.0, min_ms=0.5)
    assert c.violation(0.2) == pytest.approx(0.3) and c.violation(1.4) == pytest.approx(0.4)
    assert not c(ALL_NONE).feasible and c(ALL_NONE).margin_ms == pytest.approx(-0.4)
    lat = c.latency(space.sample(200, seed=2))
    kept = c.filter(space.sample(200, seed=2))
    assert len(kept) == int(((lat >= 0.5) & (lat <= 1.0)).sum()) > 0
    with pytest.raises(ConstraintError, match="above the budget"):
        LatencyConstraint(known, budget_ms=1.0, min_ms=2.0)
    with pytest.raises(ConstraintError, match="positive"):
        LatencyConstraint(known, budget_ms=0)


@pytest.mark.parametrize("value", ["1.0", None, True, [1.0]])
def test_a_budget_that_is_not_a_number_is_a_constraint_error_naming_it(known, value):
    import re

    with pytest.raises(ConstraintError, match=re.escape(f"latency budget {value} ms")):  # was a bare TypeError
        LatencyConstraint(known, budget_ms=value)
    if value is not None:  # min_ms=None is no minimum
        with pytest.raises(ConstraintError, match=re.escape(f"minimum latency {value} ms")):
            LatencyConstraint(known, budget_ms=1.0, min_ms=value)


def test_penalty_matches_nni_formulas_for_numbers_arrays_and_tensors(known):
    c = LatencyConstraint(known, budget_ms=2.0)
    assert c.penalty(1.0) == 0.0 and c.penalty(3.0, scale=2.0) == pytest.approx(1.0)
    assert c.penalty(1.0, nonlinear="linear") == pytest.approx(-0.5)
    assert c.penalty(1.0, nonlinear="absolute") == pytest.approx(0.5)
    np.testing.assert_allclose(c.penalty(np.array([1.0, 4.0])), [0.0, 1.0])
    assert c.penalize(1.0, 3.0, scale=0.1) == pytest.approx(1.05)
    assert c.penalize(2.0, 3.0, scale=2.0, aggregate="mul") == pytest.approx(2.0 * 1.5**2)
    t = torch.tensor(3.0, requires_grad=True)
    c.penalty(t, scale=4.0).backward()
    assert t.grad.item() == pytest.approx(4.0 / 2.0)  # d/dl scale * (l / budget - 1)
    with pytest.raises(ConstraintError, match="nonlinear"):
        c.penalty(1.0, nonlinear="square")


def test_budget_below_the_fastest_architecture_names_it(known):
    c = LatencyConstraint(known, budget_ms=0.05)
    with pytest.raises(InfeasibleBudgetError, match=r"below the fastest nb201 architecture \(of all 15625\)") as e:
        c.check_budget()
    assert ALL_NONE in str(e.value) and "0.1 ms" in str(e.value)
    assert LatencyConstraint(known, budget_ms=0.2).check_budget()[1] == pytest.approx(BASE_MS)


def test_budget_below_the_fastest_sampled_architecture_does_not_claim_none_can_meet_it():
    fbnet = get_space("fbnet")  # too large to enumerate: the fastest is of a sample
    def ms(archs):  # 1 ms per layer that is not a skip (block 8)
        return np.array([0.1 + sum(op != 8 for op in a.ops) for a in archs])

    c = LatencyConstraint(CallablePredictor(fbnet, ms, batched=True), budget_ms=1.0)
    assert c(fbnet.arch("-".join(["8"] * 22))).feasible  # the all-skip network meets the budget ...
    with pytest.raises(InfeasibleBudgetError, match=r"below the fastest fbnet architecture \(of \d+ sampled\)") as e:
        c.check_budget()  # ... which no uniform sample of 22 layers x 9 blocks is likely to hold
    assert "no architecture can meet it" not in str(e.value) and "use a budget of at least" in str(e.value)


def _adapted_transfer(space, n=12):
    from hwlat.predictors import pretrained
    from hwlat.nas.features import latency_features

    archs = space.sample(n, seed=7)
    y = np.array([BASE_MS + OP_MS[list(a.ops)].sum() for a in archs])
    pred = pretrained.load("nb201")
    pred.adapt(latency_features(space, archs)[0], y)
    return pred


def test_feature_predictor_adapter_and_space_checks(space):
    from hwlat.predictors import pretrained
    from hwlat.nas.features import latency_features

    pred = _adapted_transfer(space)
    c = LatencyConstraint(pred, budget_ms=1.0)  # the space comes from the predictor's layout
    assert isinstance(c.predictor, FeaturePredictor) and c.space.name == "nb201"
    archs = space.sample(20, seed=3)
    np.testing.assert_allclose(c.latency(archs), pred.predict(latency_features(space, archs)[0]))
    with pytest.raises(PredictorSpaceError, match="predicts fbnet architectures, not nb201"):
        as_arch_predictor(pretrained.load("fbnet"), "nb201")
    with pytest.raises(ConstraintError, match="not been adapted"):
        LatencyConstraint(pretrained.load("nb201"), budget_ms=1.0)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_optuna_constraints_func_respected_by_a_real_study(space, known, sampler):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    c = LatencyConstraint(known, budget_ms=0.8)

    def convs(trial):
        arch = suggest_arch(trial, space)
        n = sum(o in (2, 3) for o in arch.ops)  # "more convolutions is better": pushes against the budget
        return (n, c.latency(arch)) if sampler == "nsga2" else n

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Optuna 5 deprecates constraints_func (still supported)
        if sampler == "nsga2":
            s = optuna.samplers.NSGAIISampler(constraints_func=c.optuna_constraints(), seed=0, population_size=10)
            study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
        else:
            s = optuna.samplers.TPESampler(constraints_func=c.optuna_constraints(), seed=0, n_startup_trials=10)
            study = optuna.create_study(direction="maximize", sampler=s)
        study.optimize(convs, n_trials=40)
    lat = [c.latency(t.user_attrs["arch"]) for t in study.trials]
    assert any(l > 0.8 for l in lat), "the study should have tried infeasible architectures"
    best = study.best_trials if sampler == "nsga2" else [study.best_trial]
    assert best and all(c.latency(t.user_attrs["arch"]) <= 0.8 for t in best)
    # the stored constraint value is latency - budget
    t0 = study.trials[0]
    assert t0.system_attrs["constraints"][0] == pytest.approx(lat[0] - 0.8)


def test_optuna_set_constraint_and_params_fallback(space, known):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    c = LatencyConstraint(known, budget_ms=0.8)
    dec = space_decisions(space)
    if hasattr(optuna.trial.Trial, "set_constraint"):
        def objective(trial):
            arch = dec.from_params({n: trial.suggest_categorical(n, list(ch)) for n, ch in zip(dec.names, dec.choices)})
            c.optuna_set_constraint(trial, arch)
            trial.set_user_attr("arch", space.key(arch))
            return sum(o in (2, 3) for o in arch.ops)

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))
        study.optimize(objective, n_trials=25)
        assert c.latency(study.best_trial.user_attrs["arch"]) <= 0.8
    # constraints_func also finds the arch from a trial's parameters (no user attribute)
    trial = optuna.trial.create_trial(params={n: ch[3] for n, ch in zip(dec.names, dec.choices)},
                                      distributions={n: optuna.distributions.CategoricalDistribution(list(ch))
                                                     for n, ch in zip(dec.names, dec.choices)}, value=0.0)
    assert c.optuna_constraints()(trial) == [pytest.approx(2.5 - 0.8)]


def test_optuna_constraints_func_names_the_trial_without_an_arch_and_what_to_do(space, known):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    c = LatencyConstraint(known, budget_ms=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Optuna 5 deprecates constraints_func (still supported)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(constraints_func=c.optuna_constraints(), seed=0))
    # the user's own parameters (an NB201 index), no suggest_arch: the constraint cannot know the architecture
    with pytest.raises(ArchError, match=r"Optuna trial 0: no nb201 architecture .* user attribute 'arch'.*suggest_arch"
                                        r".*arch_of="):
        study.optimize(lambda t: float(t.suggest_int("index", 0, 15624)), n_trials=1)


def test_decisions_round_trip_for_every_space():
    for name in ("nb201", "fbnet", "ofa"):
        sp = get_space(name)
        dec = space_decisions(sp)
        archs = sp.sample(5, seed=4)
        idx = dec.indices(archs)
        assert idx.shape == (5, dec.n_decisions)
        assert [sp.key(dec.build(row)) for row in idx] == [sp.key(a) for a in archs]
        params = {n: ch[i] for n, ch, i in zip(dec.names, dec.choices, idx[0])}
        assert sp.key(dec.from_params(params)) == sp.key(archs[0])


def test_additive_predictor_is_recovered_exactly_by_both_table_methods(space, known):
    archs = space.sample(40, seed=9)
    truth = known.predict(archs)
    for table in (ChoiceLatencyTable.least_squares(space, known, n=200, seed=0),
                  ChoiceLatencyTable.one_at_a_time(space, known)):
        np.testing.assert_allclose(table.predict(archs), truth, rtol=1e-9, atol=1e-12)
        # centred rows: the uniform supernet's expected latency is the base
        assert table.expected_ms(uniform_probs(table.decisions)).item() == pytest.approx(table.base_ms)
        assert np.allclose([t.mean() for t in table.table], 0.0)


def test_expected_latency_equals_discrete_prediction_at_one_hot_and_has_correct_gradients(space):
    pred = _adapted_transfer(space)
    c = LatencyConstraint(pred, budget_ms=1.0)
    table = c.choice_table("least_squares", n=300)
    archs = space.sample(25, seed=11)
    onehot = table.onehot(archs)  # per decision (25, 5), float64
    expected = c.expected_latency(onehot)
    assert expected.shape == (25,)
    assert expected.detach().numpy().tolist() == table.predict(archs).tolist()  # exactly, not approximately
    one = c.expected_latency([p[0] for p in onehot])
    assert one.item() == table.predict(archs[:1])[0]
    # gradient: d E / d p[d, c] = table[d][c]
    probs = uniform_probs(table.decisions, requires_grad=True)
    c.expected_latency(probs).backward()
    for p, t in zip(probs, table.table):
        np.testing.assert_allclose(p.grad.numpy(), t, rtol=0, atol=1e-12)
    # and through a softmax over logits (what a supernet trains), checked numerically
    logits = tuple(torch.randn(k, dtype=torch.float64, requires_grad=True) for k in table.decisions.sizes)
    assert torch.autograd.gradcheck(lambda *a: c.expected_latency([x.softmax(-1) for x in a]), logits)
    # a (D, C) tensor works too, with batch dimensions
    stacked = torch.stack(onehot, dim=1)  # (25, 6, 5)
    assert torch.equal(table.expected_ms(stacked), expected)


def test_choice_table_fit_quality_is_reported(space):
    c = LatencyConstraint(_adapted_transfer(space), budget_ms=1.0)
    table = c.choice_table("least_squares", n=300)
    assert table.method == "least squares" and table.n_predictions == 300
    assert 0 <= table.fit_mape < 1 and table.fit_spearman > 0.5
    assert "MAPE" in table.describe()
    assert not math.isnan(table.base_ms)


def test_lookup_table_per_layer_block_latency_is_exact_on_fbnet():
    """FBNet layers have fixed shapes, so a lookup table's kernel sum is a sum over layers and the
    one-decision-at-a-time table reproduces it for every architecture. (A table's network-level
    terms, the weights' cache and the layout reorders at region edges, make it an approximation.)"""
    from hwlat.device_tables import load
    from hwlat.nas.arch_predictors import GraphPredictor
    from hwlat.predictors.lut import Calibration, LUTPredictor

    lut = LUTPredictor(load("cpu_onnxruntime_fp32_threads1"), calibration=Calibration(), layout_reorders=False)
    pred = GraphPredictor("fbnet", lut.fit())  # the shipped device table's kernel sum
    table = ChoiceLatencyTable.one_at_a_time("fbnet", pred)
    assert table.n_predictions == 1 + 22 * 8
    archs = pred.space.sample(6, seed=5)
    np.testing.assert_allclose(table.predict(archs), pred.predict(archs), rtol=1e-9)


def test_choice_table_of_a_device_table_fits_as_many_archs_as_asked(space):
    """`n` is the number of architectures the least-squares table is fitted to for a device table too
    (NB201 is not layer-wise: least squares), not a fixed 300."""
    from hwlat.device_tables import load

    c = LatencyConstraint(load("cpu_onnxruntime_fp32_threads1"), budget_ms=1.0, space=space, as_profiled=True)
    table = c.choice_table("least_squares", n=40)
    assert table.method == "least squares" and table.n_predictions == 40


def test_a_device_table_constraint_predicts_from_several_threads_at_once():
    """Optuna's n_jobs runs objectives (and constraints_func) in threads: the first predictions of a
    table's constraint, started together, load its kernel regressors once (a second load emptied the
    estimates another thread was reading: KeyError) and give the numbers one thread gives."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from hwlat.device_tables import load

    table = load("cpu_onnxruntime_fp32_threads1")
    archs = get_space("ofa").sample(4, seed=3)
    alone = LatencyConstraint(table, budget_ms=5.0, space="ofa", as_profiled=True).latency(archs)
    for _ in range(5):
        c = LatencyConstraint(table, budget_ms=5.0, space="ofa", as_profiled=True)  # regressors not loaded yet
        start = threading.Barrier(len(archs))

        def one(arch):
            start.wait()
            return c.latency(arch)

        with ThreadPoolExecutor(len(archs)) as pool:
            assert list(pool.map(one, archs)) == alone.tolist()


def test_the_predictions_a_constraint_keeps_are_bounded(monkeypatch):
    """A constraint keeps each architecture's prediction; in a search of a large space that runs for hours
    (FBNet, OFA: every architecture new) they grew without bound, about 0.2 KB each. Past `MAX_KEPT` they
    start again, and the numbers stay those of the predictor."""
    import hwlat.nas.arch_predictors as arch_predictors

    monkeypatch.setattr(arch_predictors, "MAX_KEPT", 10, raising=False)
    space = get_space("fbnet")
    archs = space.sample(40, seed=1)
    want = [float(sum(a.ops)) for a in archs]
    fn = CallablePredictor(space, lambda batch: [float(sum(a.ops)) for a in batch], batched=True)
    assert [fn.predict([a])[0] for a in archs] == want and len(fn._cache) <= 10
    table = LatencyConstraint("lut:cpu_onnxruntime_fp32_threads1", 50.0, space="fbnet", as_profiled=True, sigmas=1)
    ms, sigma = table.predicted(archs[:15])
    for i in range(3):
        assert table.predicted(archs[i * 5:(i + 1) * 5])[0].tolist() == ms[i * 5:(i + 1) * 5].tolist()
    assert [table.predicted(a) for a in archs[:15]] == list(zip(ms.tolist(), sigma.tolist()))
    assert len(table.predictor._cache) <= 10 and len(table.predictor._sigma) <= 10


def test_a_search_on_a_table_that_prices_networks_partially_says_so(caplog):
    """Every FBNet network on the shipped 256 KB board leaves out its head (577 KB of arena): `hwlat search
    --predictor lut:<board table>` ranked those totals under the budget as if the networks ran there."""
    from hwlat.device_tables import load
    from hwlat.nas.arch_predictors import GraphPredictor
    from hwlat.predictors.lut import LUTPredictor

    pred = GraphPredictor("fbnet", LUTPredictor(load("qemu_mps2_an386_board_int8_threads1")))
    with caplog.at_level("WARNING"):
        pred.predict(pred.space.sample(3, seed=1))
        pred.predict(pred.space.sample(3, seed=2))
    said = [r.getMessage() for r in caplog.records if "priced partially" in r.getMessage()]
    assert len(said) == 1  # once per predictor
    assert "3 of 3 fbnet architectures are priced partially, without their " in said[0] and "pwconv2d+relu" in said[0]


def test_any_feature_predictor_becomes_an_arch_predictor(space):
    """space + feature function + any predictor with predict(X) (here scikit-learn on the encoding)."""
    from sklearn.linear_model import LinearRegression

    archs = space.sample(300, seed=12)
    y = np.array([BASE_MS + OP_MS[list(a.ops)].sum() for a in archs])
    model = LinearRegression().fit(space.encode(archs), y)
    pred = FeaturePredictor(space, model, features=lambda sp, a: sp.encode(a))
    c = LatencyConstraint(pred, budget_ms=1.0)
    assert c.latency(ALL_CONV3) == pytest.approx(2.5, abs=1e-6)  # the encoding's one-hot makes it exact
    assert c(ALL_NONE).feasible


@pytest.mark.parametrize("latency", ["objective", "constraint"])
def test_optuna_pareto_adapter_honours_the_constraint(space, known, latency):
    pytest.importorskip("optuna")
    from hwlat.nas.search import optuna_pareto

    c = LatencyConstraint(known, budget_ms=0.8)
    res = optuna_pareto(space, "accuracy:cifar10", c, trials=60, population=12, seed=0, latency=latency,
                        progress=False)
    assert res.rejected > 0  # the sampler did propose over-budget archs ...
    front = res.front()  # ... and none of them reaches the Pareto front or the best
    truth = np.array([BASE_MS + OP_MS[list(x.arch.ops)].sum() for x in front + res.best(5)])
    assert front and (truth <= 0.8).all() and all(x.feasible for x in front)
    again = optuna_pareto(space, "accuracy:cifar10", c, trials=60, population=12, seed=0, latency=latency,
                          progress=False)
    assert [x.key for x in again.history] == [x.key for x in res.history]  # seeded


def test_optuna_pareto_without_a_budget_is_a_plain_front(space, known):
    pytest.importorskip("optuna")
    from hwlat.nas.search import optuna_pareto

    res = optuna_pareto(space, "accuracy:cifar10", trials=30, population=10, predictor=known, progress=False)
    assert res.rejected == 0 and len(res.front()) >= 2
    with pytest.raises(ConstraintError, match="needs a LatencyConstraint"):
        optuna_pareto(space, "accuracy:cifar10", trials=5, latency="constraint", predictor=known, progress=False)


def test_a_shipped_table_name_without_lut_says_to_give_lut():
    """LatencyConstraint('cpu_onnxruntime_fp32_threads1', ...) said only 'no predictor at ....json'."""
    from hwlat.predictors.io import PredictorFileError

    with pytest.raises(PredictorFileError, match="is a shipped device table: give 'lut:cpu_onnxruntime_fp32_threads1'"):
        LatencyConstraint("cpu_onnxruntime_fp32_threads1", 2.0, space="nb201")
    with pytest.raises(PredictorFileError, match=r"'lut:<device table>'$"):  # no hint for a name that is no table
        LatencyConstraint("no_such_predictor", 2.0, space="nb201")


# ---- sigmas: feasible only if the prediction + k sigma is within the budget ----------------------------
def _between_sigmas(c0, archs):
    """The first architecture predicted with its one sigma > 0, its (ms, sigma) by the predictor."""
    ms, sigma = c0.predictor.predict_with_sigma(archs)
    i = int(np.flatnonzero(sigma > 0)[0])
    return archs[i], float(ms[i]), float(sigma[i])


def _assert_one_sigma_decides(pred, arch, ms, sigma):
    """Under the budget by half a sigma: feasible at sigmas=0, not at 1; the same below a minimum."""
    budget = ms + 0.5 * sigma
    plain, sure = LatencyConstraint(pred, budget), LatencyConstraint(pred, budget, sigmas=1.0)
    assert plain(arch).feasible and plain(arch).sigma_ms is None and plain(arch).margin_ms == pytest.approx(0.5 * sigma)
    got = sure(arch)
    assert not got.feasible and got.latency_ms == pytest.approx(ms, rel=1e-12)
    assert got.sigma_ms == pytest.approx(sigma, rel=1e-12)
    assert got.margin_ms == pytest.approx(-0.5 * sigma)
    assert sure.feasible([arch, arch]).tolist() == [False, False] and sure.filter([arch]) == [] == sure.filter([])
    assert sure.latency(arch) == plain.latency(arch) == pytest.approx(ms, rel=1e-12)  # latency(): the prediction itself
    assert sure.optuna_constraints(arch_of=lambda t: t)(arch) == [pytest.approx(0.5 * sigma)]
    assert plain.optuna_constraints(arch_of=lambda t: t)(arch) == [pytest.approx(-0.5 * sigma)]
    assert sure.penalty(ms, sigma_ms=sigma) == pytest.approx(0.5 * sigma / budget) and plain.penalty(ms) == 0.0
    low = LatencyConstraint(pred, 10 * budget, min_ms=ms - 0.5 * sigma, sigmas=1.0)
    assert LatencyConstraint(pred, 10 * budget, min_ms=ms - 0.5 * sigma)(arch).feasible and not low(arch).feasible


def test_sigmas_count_a_device_tables_uncertainty(space):
    """lut:<table>: sigma is the Prediction's sigma_ms (what `hwlat predict --archs --out` writes), kept beside
    the ms: a batch with sigma is priced once, and a constraint with sigmas=0 never prices a sigma."""
    from hwlat.nas.arch_predictors import load_arch_predictor

    pred = load_arch_predictor("lut:cpu_onnxruntime_fp32_threads1", space, as_profiled=True)
    archs = space.sample(4, seed=5)
    priced, price = [], pred.lut.predict_graph
    pred.lut.predict_graph = lambda graph, **kw: priced.append(kw["name"]) or price(graph, **kw)
    arch, ms, sigma = _between_sigmas(LatencyConstraint(pred, 1.0), archs)
    assert len(priced) == 4  # each architecture once, its ms and sigma together
    one = price(space.graph(arch), name="one")
    assert (ms, sigma) == (one.total_ms, one.sigma_ms)
    np.testing.assert_array_equal(pred.sigma(archs), pred.predict_with_sigma(archs)[1])
    assert len(priced) == 4  # from the cache
    _assert_one_sigma_decides(pred, arch, ms, sigma)
    fresh = load_arch_predictor("lut:cpu_onnxruntime_fp32_threads1", space, as_profiled=True)
    LatencyConstraint(fresh, 1.0)(archs)
    assert not fresh._sigma  # sigmas=0: no sigma computed


def test_sigmas_count_an_adapted_transfer_predictors_uncertainty(space):
    """An adapted transfer predictor: sigma is ms x relative_sigma, the sigma_ms of `hwlat predict --predictor`."""
    import hwlat
    from hwlat.nas.few_shot import predict_with_sigma

    shots = space.sample(12, seed=7)
    pred = hwlat.adapt("nb201", shots, [BASE_MS + OP_MS[list(a.ops)].sum() for a in shots])
    archs = space.sample(20, seed=3)
    arch, ms, sigma = _between_sigmas(LatencyConstraint(pred, 1.0), archs)
    cli_ms, cli_sigma = predict_with_sigma(pred, [arch])
    assert (ms, sigma) == (pytest.approx(cli_ms[0], rel=1e-12), pytest.approx(cli_sigma[0], rel=1e-12))
    rel = pred.predictor.relative_sigma(pred.matrix([arch]))[0]
    assert sigma == pytest.approx(ms * rel, rel=1e-12)
    _assert_one_sigma_decides(pred, arch, ms, sigma)


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "1", None, True])
def test_sigmas_that_are_not_a_finite_count_of_0_or_more_are_a_constraint_error(known, value):
    with pytest.raises(ConstraintError, match=f"sigmas={value}: "):
        LatencyConstraint(known, budget_ms=1.0, sigmas=value)


def test_sigmas_with_a_predictor_that_gives_no_sigma_names_it_and_says_to_use_0(known):
    assert known.sigma([ALL_NONE]) is None
    with pytest.raises(ConstraintError, match=r"the known predictor gives no sigma .*use sigmas=0"):
        LatencyConstraint(known, budget_ms=1.0, sigmas=1.0)
    assert LatencyConstraint(known, budget_ms=1.0, sigmas=0)(ALL_NONE).feasible
    with pytest.raises(ConstraintError, match=r"sigma_ms"):  # a constraint counting sigmas: penalty needs them
        LatencyConstraint(_adapted_transfer(get_space("nb201")), budget_ms=1.0, sigmas=1.0).penalty(0.5)


def test_a_search_counts_the_sigmas_and_its_cli_matches_the_api(space, tmp_path, capsys):
    """`hwlat search --sigmas K`: the best the API finds with LatencyConstraint(..., sigmas=K), each
    predicted + K sigma within the budget, and the report says K sigma were counted."""
    import json

    import hwlat
    from hwlat.cli import main

    shots = space.sample(12, seed=7)
    hwlat.save_predictor(hwlat.adapt("nb201", shots, [BASE_MS + OP_MS[list(a.ops)].sum() for a in shots]),
                         tmp_path / "p")
    pred = hwlat.load_predictor(tmp_path / "p", "nb201")
    budget = float(np.median(pred.predict(space.sample(200, seed=0))))
    api = hwlat.search("nb201", LatencyConstraint(pred, budget, sigmas=1.0), method="random", budget=6,
                       progress=False)
    out = tmp_path / "search.json"
    assert main(["search", "--space", "nb201", "--predictor", str(tmp_path / "p"), "--max-latency-ms", repr(budget),
                 "--sigmas", "1", "--method", "random", "--budget", "6", "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("counting 1 sigma") == 2  # the constraint line and the search's report
    assert "ms with 1 sigma)" in printed  # the fastest architecture, its prediction + 1 sigma
    cli = json.loads(out.read_text())["search"]
    assert cli["sigmas"] == 1.0 and [b["key"] for b in cli["best"]] == [c.key for c in api.best(5)]
    ms, sigma = pred.predict_with_sigma([c.key for c in api.history])
    assert (ms + sigma <= budget).all()
    plain = hwlat.search("nb201", LatencyConstraint(pred, budget), method="random", budget=6, progress=False)
    assert [c.key for c in plain.history] != [c.key for c in api.history]
    with pytest.raises(ConstraintError, match=r"verify .*sigmas=0"):
        hwlat.search("nb201", LatencyConstraint(pred, budget, sigmas=1.0), budget=6, verify=True, progress=False)
    assert main(["search", "--space", "nb201", "--predictor", str(tmp_path / "p"), "--max-latency-ms", "1", "--sigmas",
                 "1", "--verify"]) == 1
    assert "--sigmas with --verify" in capsys.readouterr().err


def test_a_budget_met_only_without_sigma_is_refused_before_the_search_naming_the_sigma(space):
    """check_budget counts the constraint's sigmas: a budget above the fastest prediction but below every
    prediction + 1 sigma is said before a search, with the sigma, not after sampling the space."""
    import hwlat

    shots = space.sample(12, seed=7)
    pred = hwlat.adapt("nb201", shots, [BASE_MS + OP_MS[list(a.ops)].sum() for a in shots])
    ms, sigma = pred.predict_with_sigma(list(space.enumerate()))
    budget = float((ms + sigma).min()) * 0.999
    assert budget > ms.min()  # met by the prediction alone ...
    assert LatencyConstraint(pred, budget).check_budget()[1] == pytest.approx(ms.min())
    with pytest.raises(InfeasibleBudgetError, match=r"counting 1 sigma: .* ms predicted \+ 1 x [\d.]+ ms sigma") as e:
        LatencyConstraint(pred, budget, sigmas=1.0).check_budget()  # ... not with its sigma
    assert f"{(ms + sigma).min():.4g} ms" in str(e.value) and "fewer sigmas" in str(e.value)


def test_bounds_met_only_without_sigma_say_the_sigma_when_a_search_finds_none(space):
    """A minimum and a budget that predictions fall between, but no prediction ± 1 sigma: the search's error
    says the sigma was counted (it said none is predicted within the bounds, which some are)."""
    import hwlat
    from hwlat.nas.search import random_search

    shots = space.sample(12, seed=7)
    pred = hwlat.adapt("nb201", shots, [BASE_MS + OP_MS[list(a.ops)].sum() for a in shots])
    ms, sigma = pred.predict_with_sigma(list(space.enumerate()))
    i = int(np.argsort(ms)[len(ms) // 2])
    low, high = ms[i] - 0.4 * sigma[i], ms[i] + 0.4 * sigma[i]
    assert not ((ms - sigma >= low) & (ms + sigma <= high)).any()  # none within the bounds with its sigma
    found = random_search("nb201", lambda arch: 0.0, LatencyConstraint(pred, high, min_ms=low), budget=1,
                          progress=False)
    assert found.evaluations == 1  # ... some without it
    with pytest.raises(InfeasibleBudgetError, match=r"within .* ms counting 1 sigma of its uncertainty .*fewer sigmas"):
        random_search("nb201", lambda arch: 0.0, LatencyConstraint(pred, high, min_ms=low, sigmas=1.0), budget=1,
                      progress=False)


def test_sigmas_of_a_table_without_a_score_stage_are_said_to_be_the_regressed_kernels_only(space, caplog):
    """A table without a score stage has no whole-network error: its sigma_ms is the regressed kernels' part
    alone (0 ms for a network of looked-up rows), as `hwlat predict` notes; counting sigmas of it says so."""
    import logging

    table = "lut:qemu_mps2_an386_board_int8_threads1"
    with caplog.at_level(logging.WARNING, logger="hwlat"):
        LatencyConstraint(table, 1e6, space=space, as_profiled=True)
        assert "no score stage" not in caplog.text  # sigmas=0 counts no sigma
        c = LatencyConstraint(table, 1e6, space=space, as_profiled=True, sigmas=2.0)
    assert c(ALL_NONE).sigma_ms == 0.0
    assert "regressed kernels' part only" in caplog.text and "has no score stage" in caplog.text


def test_a_search_counting_sigmas_reports_each_candidates_sigma(space, tmp_path, capsys):
    """`hwlat search --sigmas K`: the printed best and front and the --json entries give each architecture's
    sigma beside its prediction (what `hwlat predict` writes as sigma_ms), so predicted + K sigma can be checked."""
    import json

    import hwlat
    from hwlat.cli import main

    shots = space.sample(12, seed=7)
    hwlat.save_predictor(hwlat.adapt("nb201", shots, [BASE_MS + OP_MS[list(a.ops)].sum() for a in shots]),
                         tmp_path / "p")
    pred = hwlat.load_predictor(tmp_path / "p", "nb201")
    out = tmp_path / "search.json"
    assert main(["search", "--space", "nb201", "--predictor", str(tmp_path / "p"), "--max-latency-ms", "0.6",
                 "--sigmas", "2", "--method", "random", "--budget", "6", "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    found = json.loads(out.read_text())["search"]
    for entry in found["best"] + found["pareto_front"]:
        ms, sigma = pred.predict_with_sigma([entry["key"]])
        assert entry["sigma_ms"] == pytest.approx(sigma[0], rel=1e-9) and ms[0] + 2 * sigma[0] <= 0.6
        assert f"{entry['predicted_ms']:.4f}  {entry['sigma_ms']:>8.4f}" in printed
    assert printed.count("sigma ms") == 2  # the best's and the front's column
    assert main(["search", "--space", "nb201", "--predictor", str(tmp_path / "p"), "--max-latency-ms", "0.6",
                 "--method", "random", "--budget", "6", "--no-progress", "--json", str(out)]) == 0
    assert "sigma ms" not in capsys.readouterr().out  # no sigma counted: none shown
    assert all(entry["sigma_ms"] is None for entry in json.loads(out.read_text())["search"]["best"])


def test_the_budget_a_refusal_names_is_enough():
    """'use a budget of at least X' rounded X to 4 digits, sometimes down: that budget was refused again."""
    import re

    nb201 = get_space("nb201")
    c = LatencyConstraint(CallablePredictor(nb201, lambda a: 0.15041), budget_ms=0.1)
    with pytest.raises(InfeasibleBudgetError) as e:
        c.check_budget()
    named = float(re.search(r"use a budget of at least ([0-9.e+-]+) ms", str(e.value)).group(1))
    assert named == 0.1505
    LatencyConstraint(CallablePredictor(nb201, lambda a: 0.15041), budget_ms=named).check_budget()


def test_expected_latency_of_integer_or_bool_one_hot_probabilities_is_the_float_prediction(space, known):
    """torch.nn.functional.one_hot gives int64: the table is priced in floats, not cast to the
    probabilities' integer dtype (0 ms, or 7 ms for bools)."""
    c = LatencyConstraint(known, budget_ms=1.0)
    table = c.choice_table(method="one_at_a_time")
    archs = space.sample(3, seed=2)
    idx = torch.as_tensor(table.decisions.indices(archs))
    onehot = torch.nn.functional.one_hot(idx, 5)  # (3, 6, 5) int64
    for p in (onehot, onehot.bool()):
        got = c.expected_latency(p)
        assert got.is_floating_point()
        np.testing.assert_allclose(got.numpy(), known.predict(archs), rtol=1e-6)


def test_expected_latency_refuses_what_are_not_probabilities_and_takes_numpy(space, known):
    """Rows are centred, so probabilities that do not sum to 1 gave a number that is no expectation
    (twice a one-hot architecture's probabilities: less than its latency); negative or NaN ones too."""
    c = LatencyConstraint(known, budget_ms=1.0)
    table = c.choice_table(method="one_at_a_time")
    archs = space.sample(4, seed=2)
    onehot = table.onehot(archs)
    for bad, what in ((2 * onehot[3], r"sum to 2"), (onehot[3] - 0.25, r"sum to -0.25"),
                      (onehot[3] * 1.5 - 0.5 * onehot[3].roll(1, -1), r"sum to 1, one below 0"),
                      (onehot[3] * float("nan"), r"sum to nan")):
        with pytest.raises(ValueError, match=rf"decision edge30: probabilities .*{what}.*must be 0 or more and sum to 1"):
            c.expected_latency(onehot[:3] + [bad] + onehot[4:])
    # numpy one-hots (Decisions.onehot) are probabilities too; float32 softmax sums pass
    np.testing.assert_allclose(c.expected_latency(table.decisions.onehot(archs)).numpy(), known.predict(archs))
    soft = [torch.randn(4, k).softmax(-1) for k in table.decisions.sizes]
    assert c.expected_latency(soft).dtype == torch.float32


def test_auto_choice_table_of_a_device_table_on_fbnet_is_as_close_as_least_squares():
    """A calibrated lookup table is not a sum over FBNet's layers (the weights beyond the cache are
    charged per network): one decision at a time from the smallest architecture was 3.8% off the
    constraint's own prediction at one-hot (median; 12% at worst), a least-squares fit under 1%."""
    from hwlat.device_tables import load

    fbnet = get_space("fbnet")
    c = LatencyConstraint(load("cpu_onnxruntime_fp32_threads1"), budget_ms=2.0, space=fbnet, as_profiled=True)
    table = c.choice_table()
    archs = fbnet.sample(30, seed=123)
    rel = np.abs(c.expected_latency(table.onehot(archs)).numpy() / c.latency(archs) - 1)
    assert np.median(rel) < 0.02 and table.fit_mape < 0.02


def test_expected_latency_on_nb201_is_the_exact_expectation_over_every_architecture(space):
    """NB201 is not additive (an edge whose output no later edge takes is dead and costs nothing): a
    least-squares table was 27% off the predictor at one-hot (median). Its 15,625 architectures are
    few enough to predict all, so the expectation is exact: the predictor at one-hot, and a
    mixture's expectation is the probability-weighted mean of every architecture's prediction."""
    c = LatencyConstraint(_adapted_transfer(space), budget_ms=1.0)
    table = c.choice_table()
    assert table.method == "every architecture" and table.n_predictions == 5 ** 6
    archs = space.sample(25, seed=11)
    np.testing.assert_allclose(c.expected_latency(table.onehot(archs)).numpy(), c.latency(archs), rtol=1e-12)
    np.testing.assert_allclose(table.predict(archs), c.latency(archs), rtol=1e-12)
    # a mixture of two architectures that differ in one decision, batched with a uniform supernet
    a = archs[0]
    b = table.decisions.build([(table.decisions.indices([a])[0][0] + 1) % 5, *table.decisions.indices([a])[0][1:]])
    mix = [0.3 * x + 0.7 * y for x, y in zip(*(table.onehot([arch]) for arch in (a, b)))]
    uniform = uniform_probs(table.decisions)
    got = c.expected_latency([torch.cat([m, u[None]]) for m, u in zip(mix, uniform)])
    assert got[0].item() == pytest.approx(0.3 * c.latency(a) + 0.7 * c.latency(b), rel=1e-12)
    assert got[1].item() == pytest.approx(table.base_ms, rel=1e-12)
    assert table.base_ms == pytest.approx(c.latency(list(table.decisions.build(i) for i in np.ndindex(*table.decisions.sizes))).mean())
    # gradients: moving probability from `none` to nor_conv_3x3 on the first edge raises the expectation
    probs = uniform_probs(table.decisions, requires_grad=True)
    c.expected_latency(probs).backward()
    assert probs[0].grad[3] > probs[0].grad[0] and all(torch.isfinite(p.grad).all() for p in probs)
    logits = tuple(torch.randn(k, dtype=torch.float64, requires_grad=True) for k in table.decisions.sizes)
    assert torch.autograd.gradcheck(lambda *x: c.expected_latency([l.softmax(-1) for l in x]), logits)
    assert c.expected_latency([p.float() for p in uniform]).dtype == torch.float32
