"""Reference searches under a latency constraint, the NASWOT proxy, and `hwlat search`."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from hwlat.cli import main
from hwlat.nas.arch_predictors import CallablePredictor
from hwlat.nas.constraints import InfeasibleBudgetError, LatencyConstraint
from hwlat.nas.search import (Candidate, NaswotProxy, load_objective, pareto_front, pareto_search, random_search,
                        regularized_evolution)
from hwlat.nas.search.objectives import ObjectiveError
from hwlat.nas.spaces import get_space

OP_MS = np.array([0.0, 0.01, 0.1, 0.4, 0.05])


def additive_ms(archs):
    return np.array([0.1 + OP_MS[list(a.ops)].sum() for a in archs])


def convs(arch):
    """A cheap objective that prefers what costs latency (so the constraint binds)."""
    return float(sum(o in (2, 3) for o in arch.ops) + 0.01 * sum(o == 3 for o in arch.ops))


@pytest.fixture()
def space():
    return get_space("nb201")


@pytest.fixture()
def constraint(space):
    return LatencyConstraint(CallablePredictor(space, additive_ms, batched=True), budget_ms=0.6)


def test_evolution_under_a_constraint_returns_only_feasible_architectures(space, constraint):
    res = regularized_evolution(space, convs, constraint, budget=60, population=10, sample=3, seed=0, progress=False)
    assert res.evaluations == 60 and res.rejected > 0  # the constraint did reject proposals
    assert res.all_feasible()
    truth = additive_ms([c.arch for c in res.history])
    assert (truth <= 0.6).all()
    best = res.best(5)
    assert best and all(c.latency_ms <= 0.6 for c in best)
    # it finds the best feasible score: 4 convs fit in 0.6 ms (4 x 0.1 + 0.1 base), 5 do not
    assert best[0].score >= 4.0
    again = regularized_evolution(space, convs, constraint, budget=60, population=10, sample=3, seed=0, progress=False)
    assert [c.key for c in again.history] == [c.key for c in res.history]  # seeded


@pytest.mark.parametrize("sizes", [{"population": 0}, {"population": -1}, {"sample": 0}, {"sample": -2}])
def test_evolution_with_no_population_or_tournament_is_refused(space, constraint, sizes):
    with pytest.raises(ValueError, match="each must be at least 1"):  # population 0 ran; sample 0: "max() arg is empty"
        regularized_evolution(space, convs, constraint, budget=10, progress=False, **sizes)


def test_random_search_scores_only_feasible_distinct_architectures(space, constraint):
    res = random_search(space, convs, constraint, budget=30, seed=1, progress=False)
    keys = [c.key for c in res.history]
    assert len(keys) == len(set(keys)) == 30
    assert (additive_ms([c.arch for c in res.history]) <= 0.6).all()


@pytest.mark.parametrize("search", [regularized_evolution, random_search])
def test_a_search_budget_above_the_feasible_architectures_stops_and_says_why(space, search):
    """Under 0.12 ms only 22 NB201 cells fit (none/skip ops, at most two skips): a budget of 1,000 scores them
    and stops, saying so; evolution ran on to 20 x budget cycles (minutes on a real predictor)."""
    tight = LatencyConstraint(CallablePredictor(space, additive_ms, batched=True), budget_ms=0.12)
    res = search(space, convs, tight, budget=1000, seed=0, progress=False)
    assert 0 < res.evaluations <= 22 and res.all_feasible()
    assert res.stopped and "no new architecture within the bounds" in res.stopped
    assert res.format().splitlines()[1] == f"stopped early: {res.stopped}" and res.to_dict()["stopped"] == res.stopped
    assert not regularized_evolution(space, convs, tight, budget=5, seed=0, progress=False).stopped


def test_search_with_a_budget_below_the_fastest_architecture_says_so(space):
    c = LatencyConstraint(CallablePredictor(space, additive_ms, batched=True), budget_ms=0.01)
    with pytest.raises(InfeasibleBudgetError, match="below the fastest"):
        regularized_evolution(space, convs, c, budget=5, progress=False)


def _nsga2(space, objective, constraint, budget, progress):
    from hwlat.nas.search import optuna_pareto

    return optuna_pareto(space, objective, constraint, trials=budget, progress=progress)


@pytest.mark.parametrize("search", [regularized_evolution, random_search, _nsga2])
def test_search_with_a_minimum_no_architecture_reaches_names_the_minimum_not_the_budget(space, search):
    pred = CallablePredictor(space, additive_ms, batched=True)  # 0.1 .. 2.5 ms
    with pytest.raises(InfeasibleBudgetError, match="minimum 5 ms is above the slowest seen") as info:
        search(space, convs, LatencyConstraint(pred, budget_ms=10.0, min_ms=5.0), budget=5, progress=False)
    assert "below the fastest" not in str(info.value)  # the budget 10 ms is above every architecture
    window = "within the latency bounds in 5 sampled" if search is _nsga2 else "none is predicted within 0.1005..0.1009 ms"
    with pytest.raises(InfeasibleBudgetError, match=window):  # NSGA-II's 5 trials may see none below the budget
        search(space, convs, LatencyConstraint(pred, budget_ms=0.1009, min_ms=0.1005), budget=5, progress=False)


def test_pareto_front_and_stratified_sweep(space):
    c = [Candidate(None, k, lat, s, True, i) for i, (k, lat, s) in
         enumerate([("a", 1.0, 1.0), ("b", 2.0, 0.5), ("c", 2.0, 3.0), ("d", 3.0, 2.0), ("e", 0.5, 0.2)])]
    assert [x.key for x in pareto_front(c)] == ["e", "a", "c"]
    pred = CallablePredictor(space, additive_ms, batched=True)
    res = pareto_search(space, pred, convs, budget=12, seed=0, progress=False)
    lat = np.array([x.latency_ms for x in res.history])
    every = additive_ms(list(space.enumerate()))
    assert res.evaluations == 12 and lat.min() == pytest.approx(every.min())  # the fastest is always scored
    assert lat.max() >= np.percentile(every, 100 * 11 / 12)  # one per latency stratum, up to the slowest
    front = res.front()
    assert all(a.latency_ms <= b.latency_ms and a.score < b.score for a, b in zip(front, front[1:]))


@pytest.mark.parametrize("bounds", [{"min_ms": 5.0, "max_ms": 1.0}, {"max_ms": 0.05}, {"min_ms": 3.0}])
def test_stratified_sweep_with_bounds_that_hold_no_architecture_says_so(space, bounds):
    pred = CallablePredictor(space, additive_ms, batched=True)  # 0.1 .. 2.5 ms
    with pytest.raises(InfeasibleBudgetError, match="predicted is within .* ms \\(fastest 0.1 ms, slowest 2.5 ms\\)"):
        pareto_search(space, pred, convs, budget=5, progress=False, **bounds)  # was numpy's "number sections"


def test_naswot_proxy_is_deterministic_and_ranks_a_dead_cell_last(space):
    proxy = NaswotProxy(space, batch=4, seed=0)
    conv = space.parse("3-2-3-1-3-3")  # ops6: conv3x3, conv1x1, conv3x3, skip, conv3x3, conv3x3
    dead = space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    s_conv, s_dead = proxy(conv), proxy(dead)
    assert np.isfinite(s_conv) and s_conv > s_dead
    assert NaswotProxy(space, batch=4, seed=0).score(conv) == s_conv
    assert proxy.evaluations == 2 and proxy(conv) == s_conv and proxy.evaluations == 2  # cached
    assert "NOT accuracy" in proxy.label and proxy.is_proxy


def test_objective_loading(tmp_path, space):
    f = tmp_path / "my_objective.py"
    f.write_text("def score(arch):\n    return float(sum(arch.ops))\n")
    obj = load_objective(f"{f}:score", space)
    assert obj(space.parse("4-4-4-4-4-4")) == 24.0 and not obj.is_proxy
    assert isinstance(load_objective("proxy", space), NaswotProxy)
    with pytest.raises(ObjectiveError, match="no function"):
        load_objective(f"{f}:nothing", space)
    with pytest.raises(ObjectiveError, match="module:function"):
        load_objective("not-a-spec", space)


# ---- CLI ------------------------------------------------------------------------------------------
def _samples(path, space, n, seed=0):
    archs = space.sample(n, seed=seed)
    rows = [{**space.key_record(a), "my_board": ms} for a, ms in zip(archs, 0.2 + 3 * additive_ms(archs))]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _objective_file(tmp_path):
    f = tmp_path / "obj.py"
    f.write_text("def score(arch):\n    return float(sum(o in (2, 3) for o in arch.ops))\n")
    return f"{f}:score"


def test_cli_search_interrupted_with_verify_out_says_the_measurements_are_kept(tmp_path, space, capsys):
    samples = _samples(tmp_path / "board.csv", space, 12)
    stop = tmp_path / "stop.py"
    stop.write_text("def score(arch):\n    raise KeyboardInterrupt\n")  # Ctrl-C, as a user's objective sees it
    base = ["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
            "--max-latency-ms", "1.5", "--budget", "5", "--no-progress", "--objective", f"{stop}:score", "--verify"]
    assert main(base + ["--verify-out", str(tmp_path / "kept")]) == 130
    assert "what was measured is stored: run the same command again" in capsys.readouterr().err
    assert main(base) == 130  # without --verify-out nothing is kept: not promised
    assert capsys.readouterr().err.strip().endswith("hwlat: interrupted")


def test_cli_nsga2_with_a_population_of_one_is_one_clear_error(tmp_path, space, capsys):
    samples = _samples(tmp_path / "board.csv", space, 12)
    assert main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
                 "--max-latency-ms", "1.5", "--budget", "5", "--no-progress", "--method", "nsga2",
                 "--population", "1"]) == 1  # was Optuna's ValueError, a traceback
    err = capsys.readouterr().err.strip()
    assert err == "hwlat: error: NSGA-II population 1: needs at least 2 (--population)"


def test_cli_nsga2_without_optuna_says_how_to_install_it(tmp_path, space, capsys, monkeypatch):
    """An install without the optuna extra; the extra alone named the hwlat of a package index, which a
    checkout's install is not."""
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError, as where it is missing
    samples = _samples(tmp_path / "board.csv", space, 12)
    assert main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
                 "--max-latency-ms", "1.5", "--budget", "5", "--no-progress", "--method", "nsga2"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "hwlat: error: the multi-objective search (--method nsga2) needs optuna: pip install 'hwlat[optuna]' "
        "(or pip install optuna)")


def test_cli_search_names_the_verify_options_it_ignores_without_verify(tmp_path, space, capsys):
    samples = _samples(tmp_path / "board.csv", space, 12)
    base = ["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
            "--max-latency-ms", "1.5", "--budget", "5", "--no-progress", "--objective", _objective_file(tmp_path)]
    assert main(base + ["--verify-out", str(tmp_path / "kept"), "--protocol", "quick", "--as-profiled"]) == 0
    err = capsys.readouterr().err
    assert "--protocol, --verify-out, --as-profiled ignored" in err  # nothing measured, nothing kept: said so
    assert not (tmp_path / "kept.csv").exists()
    assert main(base) == 0 and "ignored" not in capsys.readouterr().err


def test_cli_search_prints_best_archs_with_predicted_latency_and_verifies(tmp_path, space, capsys):
    samples = _samples(tmp_path / "board.csv", space, 12)
    out = tmp_path / "r.json"
    rc = main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
               "--max-latency-ms", "1.5", "--objective", _objective_file(tmp_path), "--budget", "15", "--top", "2",
               "--no-progress", "--verify", "--protocol", "quick", "--json", str(out),
               "--save-predictor", str(tmp_path / "pred")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "adapted to my_board, from 12 measured" in text and "predicted ms" in text
    assert "measured on cpu/onnxruntime" in text and "leave-one-out" in text
    report = json.loads(out.read_text())
    wide = report["search"]["budget_ms"]  # the budget + the adapted predictor's error band
    assert 1.5 <= wide <= 1.5 * 1.2 and all(b["predicted_ms"] <= wide for b in report["search"]["best"])
    verified = report["search"]["verified"]["archs"]
    assert 2 <= len(verified) <= 6 and verified[0]["measured_ms"] > 0
    # the saved, adapted predictor is usable directly
    rc = main(["search", "--space", "nb201", "--predictor", str(tmp_path / "pred"), "--max-latency-ms", "1.5",
               "--objective", _objective_file(tmp_path), "--budget", "5", "--no-progress"])
    assert rc == 0 and "adapted to my_board" in capsys.readouterr().out
    # a save that cannot be written is one error naming the path
    (tmp_path / "afile").write_text("x")
    rc = main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
               "--max-latency-ms", "1.5", "--objective", _objective_file(tmp_path), "--budget", "5", "--no-progress",
               "--save-predictor", str(tmp_path / "afile" / "pred")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "afile is a file, not a folder" in err and len(err.splitlines()) == 1


def test_cli_bad_inputs_one_clear_message_each(tmp_path, space, capsys):
    obj = _objective_file(tmp_path)
    samples = _samples(tmp_path / "board.csv", space, 12)
    base = ["search", "--objective", obj, "--budget", "5", "--no-progress"]

    assert main(base + ["--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
                        "--max-latency-ms", "0.001"]) == 1
    err = capsys.readouterr().err.strip()
    assert "below the fastest nb201 architecture" in err and "use a budget of at least" in err
    assert len(err.splitlines()) == 1

    few = _samples(tmp_path / "few.csv", space, 2)  # the rules of `hwlat adapt fit`: 3 or more
    assert main(base + ["--space", "nb201", "--predictor", "pretrained", "--device-samples", str(few),
                        "--max-latency-ms", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "2 measured nb201 architecture(s)" in err and "at least 3" in err and len(err.splitlines()) == 1

    main(base + ["--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
                 "--max-latency-ms", "1.5", "--save-predictor", str(tmp_path / "nb")])
    capsys.readouterr()
    assert main(base + ["--space", "fbnet", "--predictor", str(tmp_path / "nb"), "--max-latency-ms", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "predicts nb201 architectures, not fbnet; use --space nb201" in err and len(err.splitlines()) == 1

    assert main(base + ["--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1"]) == 1
    assert "has not been adapted" in capsys.readouterr().err


# ---- accuracy objectives ------------------------------------------------------------------------------
def test_accuracy_lookup_round_trips_keys(space):
    from hwlat.nas.accuracy import accuracy_table

    acc = accuracy_table("nb201")
    assert acc.best("cifar10") == (6111, pytest.approx(94.373))  # the data README's most accurate arch
    for i in (0, 1, 6111, 15624):
        arch = space.from_index(i)
        forms = [i, str(i), arch, arch.arch_str, arch.ops6, list(arch.ops)]
        for ds in ("cifar10", "cifar100", "imagenet16-120"):
            values = {acc.lookup(f, ds) for f in forms}
            assert len(values) == 1 and values.pop() == acc.values(ds)[i]
        assert acc.index(arch.arch_str) == i == space.index(space.parse(arch.ops6))
    assert acc.lookup(1, "cifar10") == pytest.approx(93.66) and acc.lookup(1, "imagenet16_120") == pytest.approx(44.033)
    # every row is keyed like the space's index order
    np.testing.assert_array_equal(acc.codes, [a.code for a in space.enumerate()])
    dead = space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert acc.lookup(dead) == pytest.approx(10.0)  # no path from input to output: chance


def test_accuracy_file_rebuilds_from_a_csv_and_refuses_mismatched_keys(tmp_path, space):
    from hwlat.nas.accuracy import AccuracyError, accuracy_table, build

    acc = accuracy_table("nb201")
    rows = pd.DataFrame({"nb201_index": np.arange(space.size), "arch_str": [a.arch_str for a in space.enumerate()],
                         "cifar10_test_acc": acc.values("cifar10"), "cifar100_test_acc": acc.values("cifar100"),
                         "imagenet16_120_test_acc": acc.values("imagenet16-120")})
    rows.to_csv(tmp_path / "a.csv", index=False)
    with np.load(build(tmp_path / "a.csv", tmp_path / "a.npz")) as z:
        np.testing.assert_array_equal(z["cifar10"], np.round(acc.values("cifar10") * 1000))
    rows.loc[[3, 4], "arch_str"] = rows.loc[[4, 3], "arch_str"].to_numpy()
    rows.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(AccuracyError, match="not their index"):
        build(tmp_path / "b.csv", tmp_path / "b.npz")


def test_accuracy_objectives_by_name_and_the_default_per_space(space):
    from hwlat.nas.search import AccuracyObjective, default_objective

    obj = load_objective("accuracy:cifar100", space)
    assert isinstance(obj, AccuracyObjective) and "CIFAR-100" in obj.label and not obj.is_proxy
    assert obj(space.from_index(1)) == pytest.approx(70.293)
    assert isinstance(load_objective(None, space), AccuracyObjective)  # NB201's default: accuracy:cifar10
    assert default_objective("nb201") == "accuracy:cifar10" and default_objective("fbnet") == "naswot"
    assert isinstance(load_objective(None, "fbnet"), NaswotProxy)
    assert isinstance(load_objective("naswot", space), NaswotProxy)
    with pytest.raises(ObjectiveError, match="no trained accuracies ship for the fbnet space.*naswot"):
        load_objective("accuracy:cifar10", "fbnet")
    with pytest.raises(ObjectiveError, match="accuracy:cifar10, accuracy:cifar100, accuracy:imagenet16-120"):
        load_objective("accuracy:mnist", space)


@pytest.mark.parametrize("space_name", ["fbnet", "ofa"])
def test_cli_search_refuses_accuracy_of_a_space_without_it_before_any_prediction(space_name, capsys):
    """accuracy:cifar10 on fbnet or ofa is refused before the predictor is loaded and the budget checked
    against thousands of predictions (OFA: 20,000), not after."""
    assert main(["search", "--space", space_name, "--predictor", "lut:cpu_onnxruntime_fp32_threads1", "--as-profiled",
                 "--max-latency-ms", "5", "--objective", "accuracy:cifar10"]) == 1
    out, err = capsys.readouterr()
    assert f"no trained accuracies ship for the {space_name} space" in err
    assert "predictor:" not in out and "constraint:" not in out


def test_searches_on_accuracy_are_seeded_and_find_accurate_feasible_archs(space, constraint):
    from hwlat.nas.accuracy import accuracy_table

    runs = [regularized_evolution(space, "accuracy:cifar10", constraint, budget=80, seed=s, progress=False)
            for s in (1, 1, 4)]
    assert [c.key for c in runs[0].history] == [c.key for c in runs[1].history]
    assert [c.key for c in runs[0].history] != [c.key for c in runs[2].history]
    r = runs[0]
    assert r.all_feasible() and (additive_ms([c.arch for c in r.history]) <= 0.6).all()
    acc = accuracy_table("nb201").values("cifar10")
    feasible = additive_ms(list(space.enumerate())) <= 0.6
    best = r.best(1)[0]
    assert best.score == acc[best.arch.index] and best.score > np.percentile(acc[feasible], 99)
    rnd = [random_search(space, "accuracy:imagenet16-120", constraint, budget=20, seed=9, progress=False)
           for _ in range(2)]
    assert [c.key for c in rnd[0].history] == [c.key for c in rnd[1].history]
    front = r.front()  # the plain evolution reports its accuracy-latency front
    assert front and all(a.latency_ms <= b.latency_ms and a.score < b.score for a, b in zip(front, front[1:]))
    assert "Pareto front (predicted latency vs acc)" in r.format_front("acc")


def test_cli_search_defaults_to_accuracy_on_nb201_and_reports_the_front(tmp_path, space, capsys):
    samples = _samples(tmp_path / "board.csv", space, 12)
    out = tmp_path / "r.json"
    rc = main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
               "--max-latency-ms", "1.5", "--budget", "30", "--no-progress", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "objective: CIFAR-10 test accuracy" in text and "Pareto front" in text
    report = json.loads(out.read_text())
    assert not report["objective_is_proxy"] and report["search"]["objective"].startswith("CIFAR-10")
    assert main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
                 "--max-latency-ms", "1.5", "--budget", "5", "--no-progress", "--objective", "accuracy:mnist"]) == 1
    assert "accuracy:cifar10" in capsys.readouterr().err


def test_a_search_scores_500_on_a_looked_up_accuracy_and_100_on_a_costly_score_by_default(space, constraint):
    import hwlat

    looked_up = hwlat.search(space, constraint, "accuracy:cifar10", progress=False)
    assert looked_up.evaluations == 500
    own = hwlat.search(space, constraint, lambda a: -additive_ms([a])[0], progress=False)
    assert own.evaluations == 100
    assert hwlat.search(space, constraint, "accuracy:cifar10", budget=40, progress=False).evaluations == 40


@pytest.mark.parametrize("method", ["evolution", "random", "nsga2"])
@pytest.mark.parametrize("budget", [0, -5, 2.5, "10", True])
def test_a_search_budget_that_is_not_a_positive_whole_number_is_refused(space, constraint, method, budget):
    import hwlat

    with pytest.raises(ValueError, match="search budget"):  # budget=0 once ran the default 500 silently
        hwlat.search(space, constraint, "accuracy:cifar10", budget=budget, method=method, progress=False)


@pytest.mark.parametrize("constraint", [None, 1.0, "my_device"])
def test_a_search_without_a_latency_constraint_is_refused_naming_what_to_pass(space, constraint):
    import hwlat

    with pytest.raises(TypeError, match="LatencyConstraint"):  # was AttributeError: 'float' has no 'space'
        hwlat.search(space, constraint, "accuracy:cifar10", budget=5, progress=False)


def test_a_search_given_a_predictor_for_a_constraint_is_refused(space):
    import hwlat

    pred = CallablePredictor(space, additive_ms, batched=True)
    with pytest.raises(TypeError, match="hwlat.LatencyConstraint\\(predictor, budget_ms="):
        hwlat.search(space, pred, "accuracy:cifar10", budget=5, progress=False)


def test_a_search_verify_that_is_not_true_or_settings_is_refused(space, constraint):
    import hwlat

    with pytest.raises(TypeError, match="VerifySettings"):  # "yes" (truthy) once verified with the defaults
        hwlat.search(space, constraint, "accuracy:cifar10", budget=5, verify="yes", progress=False)


def test_only_a_lookup_scores_the_whole_space_for_a_ranking():
    from hwlat.nas.accuracy import accuracy_table
    from hwlat.nas.search import CallableObjective, NaswotProxy, load_objective

    sp = get_space("nb201")
    acc = load_objective("accuracy:cifar100", sp).scores_by_index()
    assert acc.shape == (sp.size,) and np.array_equal(acc, accuracy_table(sp).values("cifar100"))
    arch = sp.from_index(1234)
    assert acc[1234] == load_objective("accuracy:cifar100", sp)(arch)
    assert NaswotProxy(sp).scores_by_index() is None and CallableObjective(sp, lambda a: 1.0).scores_by_index() is None
    res = regularized_evolution(sp, "accuracy:cifar10", budget=5, population=3, progress=False)
    assert res.scorer is not None and res.scorer.scores_by_index() is not None  # the verification ranks by it


@pytest.mark.parametrize("value", ["'high'", "None", "[1.0, 2.0]"])
def test_cli_an_objective_that_returns_no_number_is_one_clear_error(tmp_path, space, capsys, value):
    f = tmp_path / "bad.py"
    f.write_text(f"def score(arch):\n    return {value}\n")
    assert main(["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples",
                 str(_samples(tmp_path / "board.csv", space, 12)), "--max-latency-ms", "1.5", "--budget", "5",
                 "--no-progress", "--objective", f"{f}:score"]) == 1  # was float()'s TypeError/ValueError, a traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hwlat: error: {f}:score returned {value} for |") and "must be a number" in err
    assert len(err.splitlines()) == 1


def test_cli_search_names_the_search_options_its_method_or_objective_does_not_use(tmp_path, space, capsys):
    samples = _samples(tmp_path / "board.csv", space, 12)
    base = ["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples", str(samples),
            "--max-latency-ms", "1.5", "--budget", "5", "--no-progress", "--objective", _objective_file(tmp_path)]
    assert main(base + ["--method", "random", "--population", "7", "--tournament", "3", "--proxy-batch", "4"]) == 0
    err = capsys.readouterr().err  # random search has no population or tournament; only NASWOT takes a batch
    assert "--population, --tournament, --proxy-batch ignored" in err and "--tournament is evolution's" in err
    assert main(base + ["--method", "evolution", "--population", "7", "--tournament", "3"]) == 0
    assert "ignored" not in capsys.readouterr().err


def test_cli_search_verify_out_it_cannot_resume_is_refused_before_searching_in_its_own_options(tmp_path, space, capsys):
    from hwlat.nas.device_loop import measure

    kept = tmp_path / "kept"
    measure(space, space.sample(1, seed=0), kept, protocol="quick", progress=False)
    base = ["search", "--space", "nb201", "--predictor", "pretrained", "--device-samples",
            str(_samples(tmp_path / "board.csv", space, 12)), "--max-latency-ms", "1.5", "--budget", "5",
            "--no-progress", "--objective", _objective_file(tmp_path), "--verify", "--verify-out", str(kept)]
    for flags, words in ((["--protocol", "brief"], "give another --verify-out, or resume it with the --space, "
                                                   "--runtime, --threads, --precision and --protocol it was measured with (its "
                                                   "protocol: --protocol quick)"),
                         (["--protocol", "quick", "--runtime", "torch"], "give another --verify-out")):
        assert main(base + flags) == 1
        out, err = capsys.readouterr()
        assert "searched under" not in out  # refused before the search, not after it
        assert words in err and "--fresh" not in err and "--clock" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("search", [regularized_evolution, random_search, _nsga2])
def test_a_search_with_a_minimum_says_it_searched_above_it(space, search):
    pred = CallablePredictor(space, additive_ms, batched=True)
    result = search(space, convs, LatencyConstraint(pred, budget_ms=0.6, min_ms=0.3), budget=10, progress=False)
    assert "searched under: 0.3 <= predicted latency <= 0.6 ms" in result.format()  # the minimum was not said
    assert result.to_dict()["min_ms"] == 0.3 and all(0.3 <= c.latency_ms <= 0.6 for c in result.best(10))


def test_an_objective_module_of_this_folder_that_does_not_import_names_the_file_form(tmp_path, space, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the `hwlat` script imports from its install, not from the folder it runs in
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    (tmp_path / "mine.py").write_text("def score(arch):\n    return 1.0\n")
    with pytest.raises(ObjectiveError, match=r"No module named 'mine'\); for the file mine.py here, give --objective "
                                             r"mine.py:score$"):
        load_objective("mine:score", space)
    assert load_objective("mine.py:score", space)(space.parse("4-4-4-4-4-4")) == 1.0
