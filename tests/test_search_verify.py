"""Verified search: the budget widened by the predictor's error band, the most accurate candidates
measured (real onnxruntime, quick protocol) in rounds narrowing to the budget, and the winner: the
most accurate architecture that measures within the budget."""

import json

import numpy as np
import pytest

import hwlat
from hwlat.cli import main
from hwlat.nas.arch_predictors import CallablePredictor, GraphPredictor, load_arch_predictor
from hwlat.nas.constraints import ConstraintError, LatencyConstraint
from hwlat.nas.search import VerifySettings, error_band, regularized_evolution, search_verified
from hwlat.nas.search.verified import measured_band, round_limits, widened
from hwlat.nas.spaces import get_space
from hwlat.predictors.lut import LUTPredictor

QUICK = dict(protocol="quick", progress=False)


def conv3(arch):
    """Objective: conv3x3 count (accuracy-like: what costs latency scores higher)."""
    return float(sum(o == 3 for o in arch.ops) + 0.01 * sum(o == 2 for o in arch.ops))


def biased_ms(archs):
    """A predictor that overpredicts badly: 45 ms + 2 ms per conv3x3 (NB201 cells measure 0.2-20 ms here)."""
    return np.array([45.0 + 2.0 * sum(o == 3 for o in a.ops) for a in archs])


@pytest.fixture()
def space():
    return get_space("nb201")


def _search(space, c, seed=0):
    return regularized_evolution(space, conv3, c, budget=30, population=8, sample=3, seed=seed, progress=False)


def test_a_candidate_predicted_over_the_budget_is_measured_and_wins_when_it_measures_within(space):
    c = LatencyConstraint(CallablePredictor(space, biased_ms, batched=True, name="biased"), budget_ms=50.0)
    plain = _search(space, c)
    assert max(x.latency_ms for x in plain.history) <= 50.0  # unverified: at most 2 conv3x3 allowed
    res = search_verified(space, c, lambda wide: _search(space, wide), VerifySettings(margin=0.2, top=2, **QUICK))
    v = res.verified
    assert res.budget_ms == pytest.approx(60.0) and v.limit_ms == pytest.approx(60.0) and v.band.source == "given"
    assert v.rounds == [(pytest.approx(60.0), 1.0, 2)] and len(v.measured) == 2  # both measured within 50 ms
    w = v.winner
    assert w is not None and w.latency_ms > 50.0 and v.winner_ms <= 50.0  # predicted over, measured within
    assert w.score > max(x.score for x in plain.history)  # better than anything the unverified search allowed
    assert w.score == max(x.score for x in v.measured) and w.key == v.measured[0].key
    d = res.to_dict()["verified"]
    assert d["winner"]["key"] == w.key and d["archs"][0]["measured_ms"] == pytest.approx(v.winner_ms)
    assert "(predicted over the budget, within its error band)" in v.format("conv3") and "found by measuring" in v.format("conv3")
    assert v.correction < 1 / 1.5 and f"measured {v.correction:.2f}x the predictions" in v.format()  # 45 ms against 1-20
    again = search_verified(space, c, lambda wide: _search(space, wide), VerifySettings(margin=0.2, top=2, **QUICK))
    assert [x.key for x in again.history] == [x.key for x in res.history]  # seeded
    assert [x.key for x in again.verified.measured] == [x.key for x in v.measured] and again.verified.winner.key == w.key


def cheap_ms(archs):
    """A predictor that underpredicts NB201 cells on this runtime (1.4-3x, by the machine's speed)."""
    return np.array([0.1 + 0.3 * sum(o == 3 for o in a.ops) + 0.05 * sum(o == 2 for o in a.ops) for a in archs])


def _rounds(v):
    """(first, last) row of `v.measured` of each round."""
    ends = np.cumsum([k for *_, k in v.rounds])
    return list(zip(np.r_[0, ends[:-1]], ends))


def check_rounds(v, budget, rounds):
    """The invariants of a verified search's rounds: each round's limit is `round_limits` of the band
    it used, on the prediction corrected by the median measured/predicted ratio of the rounds before;
    a round measures only architectures within that limit that beat the best measured within the
    budget before it; the winner is the best measured within the budget."""
    predicted = np.array([x.latency_ms for x in v.measured])
    scores = np.array([x.score for x in v.measured])
    for j, ((limit, ratio, k), band, (a, b)) in enumerate(zip(v.rounds, v.bands, _rounds(v))):
        assert ratio == (1.0 if j == 0 else pytest.approx(np.median(v.ms[:a] / predicted[:a])))
        assert limit * ratio == pytest.approx(round_limits(budget, band, rounds)[j])
        assert (predicted[a:b] <= limit + 1e-12).all()
        before = scores[:a][v.ms[:a] <= budget]
        assert (scores[a:b] > (before.max() if before.size else -np.inf)).all()  # only what could beat the best
    within = v.ms <= budget
    if v.winner is None:
        assert not within.any() and "winner: none" in v.format()
    else:
        assert v.winner_ms <= budget and v.winner.score == scores[within].max()


def test_rounds_narrow_to_the_budget_corrected_by_what_was_measured(space):
    assert round_limits(1.0, 0.1, 3) == pytest.approx([1.1, 1.05, 1.0]) and round_limits(2.0, 0.1, 1) == [2.2]
    c = LatencyConstraint(CallablePredictor(space, cheap_ms, batched=True), budget_ms=0.6)
    v = search_verified(space, c, lambda wide: _search(space, wide), VerifySettings(margin=0.1, top=2, rounds=3,
                                                                                      **QUICK)).verified
    assert v.rounds[0][:2] == (pytest.approx(0.66), 1.0) and v.bands[0] == 0.1
    check_rounds(v, 0.6, 3)
    # measured over the cheap predictions (1.4-3x, by the machine's speed): the next round asks less
    assert len(v.rounds) > 1 and v.rounds[1][1] > 1.1 and v.rounds[1][0] < v.rounds[0][0]
    with pytest.raises(ConstraintError, match="verify margin"):
        VerifySettings(margin=1.5)
    with pytest.raises(ConstraintError, match="verify pool"):
        VerifySettings(pool="all")


@pytest.fixture(scope="module")
def cells():
    """Six NB201 cells measured here (quick protocol), and the shipped onnxruntime table's
    predictions of them."""
    from hwlat.nas.device_loop import measure

    sp = get_space("nb201")
    archs = sp.sample(6, seed=3)
    table = GraphPredictor(sp, LUTPredictor(hwlat.load_table("cpu_onnxruntime_fp32_threads1")))
    return archs, measure(sp, archs, protocol="quick", progress=False).ms, table


@pytest.fixture(scope="module")
def budget_ms(cells):
    """The slowest of the six cells: a budget with architectures on both sides of it, and, under the
    predictor biased 3x (`overpredicting`), some predicted within it (the six cells' median was not:
    on a Zen 4 host it was 0.42 ms, under 3x the fastest NB201 network's 0.14 ms)."""
    return float(np.max(cells[1]))


@pytest.fixture(scope="module")
def overpredicting(cells):
    """The shipped onnxruntime table's predictions, scaled to be 3 times what the six cells measured
    here: a table from a much slower machine. The scale comes from this host's own measurements, and
    is large, because a shared host's speed swings: CI once saw an Intel host run 1.65x slower than
    its table, and this test's six cells have measured 1.2x to 1.9x the table within a minute; a bias
    of 1.5x vanished in such swings. (A line in MACs fitted to a few measured cells had been off by up
    to 1.4x on the candidates, a correction of 0.9 where 0.67 was meant.)"""
    archs, ms, table = cells
    factor = 3.0 * float(np.median(ms / table.predict(archs)))
    return CallablePredictor(get_space("nb201"), lambda a: factor * table.predict(a), batched=True,
                             name="table x3")


def test_a_lookup_objective_ranks_the_whole_space_and_a_biased_predictor_is_corrected(space, budget_ms, overpredicting):
    budget = budget_ms
    c = LatencyConstraint(overpredicting, budget_ms=budget)
    res = hwlat.search(space, c, "accuracy:cifar10", budget=20, verify=VerifySettings(margin=0.05, top=3, **QUICK))
    v = res.verified
    assert "ranked by score" in v.pool and 0 < v.ranked_predicted < space.size  # predicted lazily, by accuracy
    check_rounds(v, budget, 3)
    assert v.correction < 0.85 and len(v.rounds) >= 2  # measured ~1/3 of the prediction, then corrected
    w = v.winner
    assert w is not None and w.latency_ms > budget * 1.05  # found only through the correction
    assert w.score > max(x.score for x in res.history)  # beyond anything the uncorrected search could reach
    assert w.step == -1 and w.key not in {x.key for x in res.history}  # from the ranking, not the search
    again = hwlat.search(space, c, "accuracy:cifar10", budget=20,
                         verify=VerifySettings(margin=0.05, top=3, pool="search", **QUICK))
    assert "ranked" not in again.verified.pool and again.verified.ranked_predicted == 0
    assert all(x.step >= 0 for x in again.verified.measured)  # the search's own architectures


def test_without_a_ranking_the_search_runs_again_under_the_corrected_budget(space, budget_ms, overpredicting):
    budget = budget_ms
    c = LatencyConstraint(overpredicting, budget_ms=budget)
    calls = []

    def search(wide):  # the most MACs (what costs latency scores higher): not a lookup, so no ranking
        calls.append(wide.budget_ms)
        return regularized_evolution(space, lambda x: space.macs(x) / 1e6, wide, budget=40, population=10, sample=3,
                                     progress=False)

    v = search_verified(space, c, search, VerifySettings(margin=0.05, top=3, **QUICK)).verified
    assert "the search's" in v.pool and v.ranked_predicted == 0
    assert calls[0] == pytest.approx(budget * 1.05) and len(calls) == 1 + len(v.searches) >= 2
    first = v.rounds[0][2]
    ratio = np.median(v.ms[:first] / np.array([x.latency_ms for x in v.measured[:first]]))
    assert ratio < 0.85 and calls[1] == pytest.approx(budget * 1.05 / ratio)  # the corrected, widened budget
    assert v.searches[0] == (pytest.approx(calls[1]), 40)
    check_rounds(v, budget, 3)
    w = v.winner
    assert w is not None and w.latency_ms > budget * 1.05  # only the search run again could propose it
    assert "searched again under" in v.format()


def test_measured_band_is_the_errors_after_the_correction():
    pred = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    ms = np.array([0.8, 0.84, 0.76, 0.8, np.nan, 1.6])
    assert measured_band(pred, ms, 0.8) == pytest.approx(np.quantile([0, 0.05, 0.05, 0, 0], 0.8))
    assert measured_band(pred[:4], ms[:4], 0.8) is None  # too few to say
    assert measured_band(pred, ms * np.r_[1, 2, 1, 1, 1, 1], 0.8) == 0.2  # capped


def test_the_default_margin_is_the_predictors_error_band(space, tmp_path):
    lut = load_arch_predictor("lut:cpu_onnxruntime_fp32_threads1", space)
    ratios = np.asarray(list(lut.lut.table.meta["self_score"]["ratios"].values()), dtype=float)
    band = error_band(lut)
    assert band.fraction == pytest.approx(min(np.quantile(np.abs(ratios - 1), 0.8), 0.2)) and band.fraction > 0
    assert "cpu_onnxruntime_fp32_threads1" in band.source and "not calibrated on" in band.source
    adapted = hwlat.adapt(space, space.sample(8, seed=0), 0.3 + np.arange(8) * 0.1)
    loo = adapted.predictor.loo_rel_error_
    assert error_band(adapted).fraction == pytest.approx(min(np.quantile(loo[np.isfinite(loo)], 0.8), 0.2))
    assert "leave-one-out" in error_band(adapted).source
    assert error_band(CallablePredictor(space, lambda a: 1.0)).fraction == 0.0  # states no error: none
    c = LatencyConstraint(adapted, budget_ms=0.8)
    assert widened(c, 0.1).budget_ms == pytest.approx(0.88)
    res = hwlat.search(space, c, conv3, budget=10, verify=VerifySettings(top=1, rounds=1, **QUICK))
    assert res.verified.band == error_band(adapted)
    assert res.budget_ms == pytest.approx(0.8 * (1 + error_band(adapted).fraction))
    assert len(res.verified.measured) == 1


def test_cli_verify_prints_what_was_measured_and_why(tmp_path, space, capsys):
    out = tmp_path / "r.json"
    table = tmp_path / "verified"
    args = ["search", "--space", "nb201", "--predictor", "lut:cpu_onnxruntime_fp32_threads1", "--max-latency-ms", "0.5",
            "--budget", "8", "--population", "4", "--top", "2", "--verify-rounds", "2", "--verify", "--protocol",
            "quick", "--no-progress", "--verify-pool", "search", "--verify-out", str(table), "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "verify: searching predicted <=" in text and "not calibrated on" in text
    assert "verification:" in text and ("winner (best" in text or "winner: none" in text)
    report = json.loads(out.read_text())["search"]["verified"]
    assert 0 < report["margin"] <= 0.2 and report["limit_ms"] == pytest.approx(0.5 * (1 + report["margin"]))
    assert 1 <= len(report["archs"]) <= 4 and (table.with_suffix(".csv")).is_file()
    w = report["winner"]
    assert w is None or (w["measured_ms"] <= 0.5 and w["score"] == max(
        a["score"] for a in report["archs"] if a["measured_ms"] is not None and a["measured_ms"] <= 0.5))
    with pytest.raises(SystemExit) as exc:  # argparse: one clear message
        main(args[:-4] + ["--verify-margin", "1.5"])
    assert exc.value.code == 2 and "--verify-margin: 1.5: must be at least 0 and below 1" in capsys.readouterr().err


@pytest.mark.parametrize("other", [["--protocol", "brief"], ["--threads", "2"]])
def test_a_verify_out_table_of_other_settings_is_refused_in_the_searchs_flags(tmp_path, capsys, other):
    """The refusal was worded for `hwlat profile archs`: "choose another --out", "pass --fresh", "the table's
    protocol is `--protocol quick --clock wall`", none of which `hwlat search` takes."""
    table = tmp_path / "verified"
    args = ["search", "--space", "nb201", "--predictor", "lut:cpu_onnxruntime_fp32_threads1", "--max-latency-ms", "0.5",
            "--budget", "8", "--population", "4", "--top", "1", "--verify-rounds", "1", "--verify", "--protocol",
            "quick", "--no-progress", "--verify-pool", "search", "--verify-out", str(table)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + other) == 1
    said = capsys.readouterr()
    err = said.err
    assert "objective:" not in said.out  # refused before the search, which can take minutes, not after it
    assert f"--verify-out {table}: " in err and "give another --verify-out" in err, err
    assert "--fresh" not in err and "--clock" not in err and "another --out" not in err, err
    if "brief" in other:
        assert "(its protocol: --protocol quick)" in err
    assert main(args) == 0  # the settings it names resume it


def test_an_architecture_measured_below_the_minimum_is_not_said_to_be_within(space):
    """45-53 ms predicted, 0.2-20 ms measured: within the budget, below the minimum; none may win."""
    c = LatencyConstraint(CallablePredictor(space, biased_ms, batched=True, name="biased"), budget_ms=60.0, min_ms=40.0)
    res = search_verified(space, c, lambda wide: _search(space, wide), VerifySettings(margin=0.0, top=2, rounds=1, **QUICK))
    v = res.verified
    assert len(v.measured) == 2 and all(m < 40.0 for m in v.ms) and v.winner is None
    text = v.format("conv3")
    assert text.count("below the minimum)") == 2 and " yes" not in text  # the column said "yes" to both
    assert "winner: none of the 2 measured within 40..60 ms; widen the bounds" in text
    assert res.to_dict()["verified"]["min_ms"] == 40.0


def test_verify_on_another_device_than_the_predictors_is_warned_of_in_one_line(capsys):
    """A litert threads=2 table verified on onnxruntime threads=1 reported the two devices' difference
    as the predictor's error, without a word; by default --verify now measures on the table's own device."""
    args = ["search", "--space", "nb201", "--predictor", "lut:cpu_litert_fp32_threads2", "--max-latency-ms", "0.5",
            "--budget", "8", "--population", "4", "--top", "1", "--verify-rounds", "1", "--verify", "--protocol",
            "quick", "--no-progress", "--verify-pool", "search"]
    assert main(args + ["--runtime", "onnxruntime"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "--verify measures on" in line]
    assert len(warned) == 1 and "cpu/onnxruntime/fp32/threads=1" in warned[0], warned
    assert "cpu/litert/fp32/threads=2/xnnpack=on" in warned[0] and "--runtime, --threads" in warned[0]
    assert main(args) == 0  # the default: the predictor's own device, no warning
    out = capsys.readouterr()
    assert "--verify measures on" not in out.err and "measured on litert (threads=2" in out.out


def test_verify_measures_at_the_precision_given(tmp_path, capsys):
    """An int8 table's search was verified on fp32 networks: `hwlat search` had no --precision, and --runtime
    litert measured at its own fp32."""
    from hwlat.device_tables.archtable import ArchTable

    table = tmp_path / "verified"
    args = ["search", "--space", "nb201", "--predictor", "lut:cpu_litert_int8_threads1", "--max-latency-ms", "2",
            "--budget", "8", "--population", "4", "--top", "1", "--verify-rounds", "1", "--verify", "--protocol",
            "quick", "--no-progress", "--verify-pool", "search", "--runtime", "litert", "--verify-out", str(table)]
    assert main(args + ["--precision", "int8"]) == 0
    assert "measured on cpu/litert/int8/threads=1/xnnpack=on" in capsys.readouterr().out
    verified = ArchTable.read(table, space=get_space("nb201").arch_keys)
    assert verified.devices == ["cpu/litert/int8/threads=1/xnnpack=on"]
    assert main(args[:-4] + ["--runtime", "onnxruntime", "--precision", "int8"]) == 1  # refused before the search
    said = capsys.readouterr()
    assert "objective:" not in said.out and "measures fp32 only (asked for int8)" in said.err, said
    assert main(args[:-4]) == 0  # by default: the table's own runtime, threads and precision
    assert "measured on cpu/litert/int8/threads=1/xnnpack=on" in capsys.readouterr().out


def test_a_search_without_verify_makes_no_runtime_of_the_tables(tmp_path):
    """--verify's defaults were read from a lut: table's device by making its runtime even without --verify:
    a search that measures nothing imported torch for a torch table and, with the table's threads over the
    usable cores, warned that 'timings will include oversubscription'."""
    import subprocess
    import sys

    code = ("import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from hwlat.cli import main; "
            "sys.exit(main(['search', '--space', 'nb201', '--predictor', 'lut:cpu_litert_fp32_threads2', "
            "'--max-latency-ms', '5', '--budget', '8', '--population', '4', '--no-progress']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "oversubscription" not in done.stderr, done.stderr


def test_verify_threads_given_keep_the_tables_runtime(capsys):
    """--threads 2 with a LiteRT table: the default runtime is the table's (as --help says), at 2 threads; the
    device made at 2 threads was compared with the table's at 1, never the same, so it measured on onnxruntime."""
    args = ["search", "--space", "nb201", "--predictor", "lut:cpu_litert_fp32_threads1", "--max-latency-ms", "0.5",
            "--budget", "8", "--population", "4", "--top", "1", "--verify-rounds", "1", "--verify", "--protocol",
            "quick", "--no-progress", "--verify-pool", "search", "--threads", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "measured on litert (threads=2" in out and "measured on onnxruntime" not in out, out
