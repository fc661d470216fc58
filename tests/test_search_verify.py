"""Verified search: the budget widened by the predictor's error band, the most accurate candidates
measured (real onnxruntime, quick protocol) in rounds narrowing to the budget, and the winner: the
most accurate architecture that measures within the budget."""

import json

import numpy as np
import pytest

import hwlat
from hwlat.cli import main
from nas.arch_predictors import CallablePredictor, load_arch_predictor
from nas.constraints import ConstraintError, LatencyConstraint
from nas.search import VerifySettings, error_band, regularized_evolution, search_verified
from nas.search.verified import round_limits, widened
from nas.spaces import get_space

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
    assert "over: in band" in v.format("conv3") and "found by measuring" in v.format("conv3")
    again = search_verified(space, c, lambda wide: _search(space, wide), VerifySettings(margin=0.2, top=2, **QUICK))
    assert [x.key for x in again.history] == [x.key for x in res.history]  # seeded
    assert [x.key for x in again.verified.measured] == [x.key for x in v.measured] and again.verified.winner.key == w.key


def cheap_ms(archs):
    """A predictor that underpredicts NB201 cells on this runtime several times over."""
    return np.array([0.1 + 0.3 * sum(o == 3 for o in a.ops) + 0.05 * sum(o == 2 for o in a.ops) for a in archs])


def test_rounds_narrow_to_the_budget_corrected_by_what_was_measured_and_stop_once_one_is_within(space):
    assert round_limits(1.0, 0.1, 3) == pytest.approx([1.1, 1.05, 1.0]) and round_limits(2.0, 0.1, 1) == [2.2]
    c = LatencyConstraint(CallablePredictor(space, cheap_ms, batched=True), budget_ms=0.6)
    v = search_verified(space, c, lambda wide: _search(space, wide), VerifySettings(margin=0.1, top=2, rounds=3,
                                                                                      **QUICK)).verified
    within = v.ms <= 0.6
    assert within.any() or sum(k for *_, k in v.rounds) == len(v.measured)
    per_round = np.cumsum([k for *_, k in v.rounds])
    assert all(not within[:n].any() for n in per_round[:-1])  # no earlier round had one within the budget
    predicted = np.array([x.latency_ms for x in v.measured])
    assert v.rounds[0][:2] == (pytest.approx(0.66), 1.0) and (predicted[:per_round[0]] <= 0.66).all()
    for j, (limit, ratio, k) in enumerate(v.rounds[1:], 1):  # later rounds: corrected by the median ratio so far
        assert ratio == pytest.approx(np.median(v.ms[:per_round[j - 1]] / predicted[:per_round[j - 1]]))
        assert limit * ratio <= 0.66 + 1e-9 and (predicted[per_round[j - 1]:per_round[j]] <= limit + 1e-12).all()
    if v.winner is None:
        assert "winner: none" in v.format()
    else:
        assert v.winner_ms <= 0.6 and v.winner.score == max(x.score for x, ok in zip(v.measured, within) if ok)
    with pytest.raises(ConstraintError, match="verify margin"):
        VerifySettings(margin=1.5)


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
            "quick", "--no-progress", "--verify-out", str(table), "--json", str(out)]
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
