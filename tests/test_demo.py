"""`hwlat demo --quick`: the end-to-end story (profile, adapt, predict, search, verify, plot) runs."""

import json

import pytest

from hwlat.cli import main


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for stage in ("[1/6] profiling 6 NB201", "[2/6] adapting", "[3/6] predicting all 15625", "[4/6] searching",
                  "[5/6] measuring the best 3", "[6/6] plotting", "== hwlat demo summary =="):
        assert stage in text
    assert "NOT accuracy" in text and "proxy score (NASWOT, not accuracy)" in text
    assert "constraint SATISFIED" in text or "constraint VIOLATED" in text
    summary = json.loads((out / "summary.json").read_text())
    budget = summary["budget_ms"]
    assert summary["objective_is_proxy"] and 0 < budget
    # the search keeps a margin under the budget, from the predictor's leave-one-out error
    assert 0 <= summary["margin"] <= 0.2
    assert summary["search_budget_ms"] == pytest.approx(budget / (1 + summary["margin"]))
    assert all(b["predicted_ms"] <= summary["search_budget_ms"] for b in summary["search"]["best"])
    verified = summary["verification"]["archs"]
    assert len(verified) == 3 and all(a["measured_ms"] > 0 for a in verified)
    assert summary["verification"]["violations"] == sum(a["measured_ms"] > budget for a in verified)
    for png in ("predicted_vs_measured.png", "pareto_front.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the adapted predictor and the measurements are ordinary project files
    assert (out / "predictor.json").is_file() and (out / "nb201_shots.csv").is_file()
    assert main(["search", "--space", "nb201", "--predictor", str(out / "predictor"), "--max-latency-ms", str(budget),
                 "--budget", "3", "--objective", "proxy", "--proxy-batch", "4", "--no-progress"]) == 0
    assert "NOT accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("margin", ["lots", "1.5", "-0.1"])
def test_demo_rejects_a_bad_margin_before_measuring(tmp_path, capsys, margin):
    assert main(["demo", "--quick", "--margin", margin, "--out", str(tmp_path / "d"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--margin" in err and not (tmp_path / "d").exists()
