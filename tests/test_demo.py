"""`hwlat demo --quick`: the end-to-end story (profile, adapt, predict, search for accuracy under a
budget, verify, compare, plot) runs and writes its JSON and plots."""

import json

import numpy as np
import pytest

from hwlat.cli import main


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for stage in ("[1/6] profiling 6 NB201", "[2/6] new device", "adapted from these 6 measurements",
                  "[3/6] predicting all 15625", "[4/6] searching for the most accurate network",
                  "[5/6] measuring the most accurate searched archs on this CPU, 3 per round",
                  "+ 2 of the predicted accuracy-latency front", "[6/6] plotting",
                  "== hwlat demo summary ==", "vs all", "story       new device, 6 measurements"):
        assert stage in text
    assert "CIFAR-10 test accuracy (%, NATS-Bench, 200 epochs)" in text and "NOT accuracy" not in text
    assert "budget MET on the device by the winner" in text or "budget NOT MET" in text
    summary = json.loads((out / "summary.json").read_text())
    budget = summary["budget_ms"]
    assert not summary["objective_is_proxy"] and summary["dataset"] == "cifar10" and 0 < budget
    # the search runs under the budget + the predictor's error band (its leave-one-out error), which
    # measuring resolves: rounds of 3, most accurate first, predictions corrected by what was measured,
    # while one could beat the best measured within the budget
    assert 0 <= summary["margin"] <= 0.2 and "leave-one-out" in summary["margin_source"]
    assert summary["search_budget_ms"] == pytest.approx(budget * (1 + summary["margin"]))
    assert all(b["predicted_ms"] <= summary["search_budget_ms"] for b in summary["search"]["best"])
    assert all(50 < b["score"] < 100 for b in summary["search"]["best"])  # accuracies in %
    verified = summary["verification"]["archs"]
    rounds = summary["verify"]["rounds"]
    assert len(verified) == sum(r["measured"] for r in rounds) and all(r["measured"] <= 3 for r in rounds)
    assert 3 <= len(verified) <= 9 and all(a["measured_ms"] > 0 for a in verified)
    acc = summary["verified_accuracy"][:len(verified)]
    ends = np.cumsum([r["measured"] for r in rounds])
    for start, end in zip(np.r_[0, ends[:-1]], ends):  # a round measures only what could beat the best so far
        best = max([a for a, v in zip(acc[:start], verified[:start]) if v["measured_ms"] <= budget], default=-np.inf)
        assert all(a > best for a in acc[start:end])
    assert len(summary["verification_pareto_front"]["archs"]) == 2
    assert summary["verification"]["violations"] == sum(a["measured_ms"] > budget for a in verified)
    # the winner is the most accurate verified architecture measured within the budget
    within = [(acc, a) for acc, a in zip(summary["verified_accuracy"], verified) if a["measured_ms"] <= budget]
    w = summary["winner"]
    if within:
        assert w["accuracy"] == max(acc for acc, _ in within) and w["measured_ms"] <= budget
        ref = summary["reference_all_predicted"]
        assert ref["latency_ms"] <= budget and summary["regret_pp"]["vs_all_predicted"] == pytest.approx(
            ref["accuracy"] - w["accuracy"], abs=1e-3)
    else:
        assert w is None
    table = summary["reference_measured_table"]  # the shipped arch table of this device kind
    assert table is None or (table["latency_ms"] <= budget and table["n"] > 1000)
    # measured on another CPU, the table's latencies are that CPU's: the summary says which
    other = summary["reference_measured_table_other_cpu"]
    assert (table is not None and other is not None) == (", on another CPU: " in text)
    for png in ("predicted_vs_measured.png", "pareto_front.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(out / png) in summary["plots"]
    # the adapted predictor and the measurements are ordinary project files
    assert (out / "predictor.json").is_file() and (out / "nb201_shots.csv").is_file()
    assert main(["search", "--space", "nb201", "--predictor", str(out / "predictor"), "--max-latency-ms", str(budget),
                 "--budget", "3", "--objective", "proxy", "--proxy-batch", "4", "--no-progress"]) == 0
    assert "NOT accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("margin", ["lots", "1.5", "-0.1"])
def test_demo_rejects_a_bad_margin_before_measuring(tmp_path, capsys, margin):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--quick", "--margin", margin, "--out", str(tmp_path / "d"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--margin" in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("value", ["0", "100"])
def test_demo_percentile_error_says_the_ends_are_excluded(tmp_path, capsys, value):
    """`--percentile 100` said "100: needs a percentile between 0 and 100"."""
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--quick", "--percentile", value, "--out", str(tmp_path / "d"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"{value}: needs a percentile above 0 and below 100" in err


def test_a_demo_folder_that_cannot_be_made_names_the_file_and_why(tmp_path, capsys):
    """An --out under a file (or a read-only folder) was 'hwlat: error: results: [Errno 30] Read-only
    file system', naming neither the file nor the blocker."""
    (tmp_path / "a_file").write_text("")
    assert main(["demo", "--quick", "--out", str(tmp_path / "a_file" / "demo"), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == (f"hwlat: error: cannot write {tmp_path / 'a_file' / 'demo' / 'summary.json'}: "
                                               f"{tmp_path / 'a_file'} is a file, not a folder")


def test_an_arch_table_of_another_cpu_is_named_so(tmp_path):
    """The demo compared its winner with the shipped arch table's best as if this machine had measured it."""
    import shutil

    from hwlat.device_tables.archtable import arch_table_paths
    from hwlat.device_tables.device import _cpu_info
    from hwlat.device_tables.registry import TABLES_DIR
    from hwlat.nas.search.reference import measured_elsewhere

    for src in arch_table_paths(TABLES_DIR / "arch" / "nb201_cpu_onnxruntime_fp32_threads1"):
        shutil.copy(src, tmp_path / src.name)
    csv, meta = arch_table_paths(tmp_path / "nb201_cpu_onnxruntime_fp32_threads1")[:2]
    doc = json.loads(meta.read_text())
    doc["device"]["fingerprint"].update(json.loads(json.dumps(_cpu_info())))  # measured on this CPU
    meta.write_text(json.dumps(doc))
    assert measured_elsewhere(csv) == ""
    doc["device"]["fingerprint"]["cpu_model"] = "Another CPU 9000"
    meta.write_text(json.dumps(doc))
    assert "'Another CPU 9000'" in measured_elsewhere(csv)


def test_a_demo_run_again_into_its_folder_leaves_nothing_of_the_last_run(tmp_path, capsys):
    """With --no-plots and --front 0 a rerun left the last run's plots and front table beside its own."""
    out = tmp_path / "demo"
    out.mkdir()
    stale = ["pareto_front.png", "predicted_vs_measured.png", "nb201_front.csv", "nb201_front.json",
             "nb201_verified.stats.csv", "summary.json"]
    for name in [*stale, "notes.txt"]:
        (out / name).write_text("from the last run\n")
    (out / ".hwlat-demo").write_text("")  # the last run was a demo's
    assert main(["demo", "--quick", "--no-plots", "--front", "0", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "from the last run\n"  # not the demo's: kept
    assert not any((out / name).exists() for name in stale[:4])  # nb201_verified and summary.json: this run's
    assert json.loads((out / "summary.json").read_text())["plots"] == []


def test_a_second_demo_into_a_folder_a_demo_is_writing_stops_and_removes_nothing(tmp_path, capsys):
    """A second demo into the same folder removed the running one's tables and summary as it began, so
    both failed ('arch table .../nb201_shots.csv not found' in the first)."""
    import subprocess
    import sys

    out = tmp_path / "demo"
    out.mkdir()
    for name in ("summary.json", "nb201_shots.csv", "predictor.json"):
        (out / name).write_text("the running demo's\n")
    holder = subprocess.Popen(  # a demo running into the folder holds its lock
        [sys.executable, "-c", "import sys, pathlib\nfrom hwlat.device_tables.lock import TableLock\n"
         f"lock = TableLock.acquire(pathlib.Path({str(out / 'summary.json')!r}))\nprint('held', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 1
    finally:
        holder.communicate("")
    err = capsys.readouterr().err
    assert f"{out / 'summary.json'} is being written by pid {holder.pid}" in err and "choose another --out" in err
    assert all((out / name).read_text() == "the running demo's\n" for name in ("summary.json", "nb201_shots.csv",
                                                                                 "predictor.json"))


def test_a_folder_of_the_users_own_files_of_a_demos_names_is_refused_and_kept(tmp_path, capsys):
    """`hwlat demo --out .` in a folder of the user's own summary.json or pareto_front.png deleted them
    without a word (a demo cleared every file of its outputs' names)."""
    for name in ("summary.json", "pareto_front.png"):
        (tmp_path / name).write_text("mine\n")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "holds summary.json, pareto_front.png, which a demo would replace, and no demo wrote them" in err, err
    assert all((tmp_path / name).read_text() == "mine\n" for name in ("summary.json", "pareto_front.png"))


def test_an_interrupted_demo_says_what_its_folder_holds(tmp_path):
    """Ctrl-C said only 'hwlat: interrupted': not that the demo's folder holds part of a run and that a
    rerun starts over (the demo keeps nothing of an earlier run)."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "hwlat", "demo", "--quick", "--no-progress", "--out", "d"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("[2/6]"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip() == "hwlat: interrupted; d holds what this demo wrote so far, no summary.json: run it again to start over"
    assert (tmp_path / "d" / "nb201_shots.csv").is_file() and not (tmp_path / "d" / "summary.json").exists()


def test_the_predicted_vs_measured_plot_does_not_call_the_verified_archs_within_budget(tmp_path):
    """Its legend named the verified candidates 'best within budget (5)' while two of them measured over
    the budget, right of its line in the same plot."""
    from hwlat.nas.search.plots import predicted_vs_measured

    svg = predicted_vs_measured(tmp_path / "p.svg", [0.3, 0.35, 0.38], [0.32, 0.45, 0.5], budget_ms=0.4).read_text()
    assert "<!-- most accurate searched, verified (3) -->" in svg and "within budget" not in svg


def test_the_help_gives_each_count_s_default_with_and_without_quick(capsys):
    """--help said '--shots ... (default 10)', '--front ... (default 6)': with --quick they are 1 and 2."""
    import re

    from hwlat.commands.demo import DemoSettings

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    full, quick = DemoSettings(), DemoSettings.quick()
    for option, field in (("--shots", "random_shots"), ("--evaluations", "evaluations"), ("--verify", "verify"),
                          ("--front", "front")):
        help_ = text.split(f"{option} {option[2:].upper()} ", 1)[1]
        assert re.match(rf"[^()]*\(default {getattr(full, field)}[;,] {getattr(quick, field)} with --quick", help_), option
    assert f"{quick.reference_shots + quick.random_shots} architectures profiled" in text


def test_a_percentile_beside_a_budget_is_refused_before_measuring(tmp_path, capsys):
    """`--percentile 50 --max-latency-ms 1` measured, then searched under 1 ms: --percentile was ignored."""
    out = tmp_path / "d"
    assert main(["demo", "--quick", "--percentile", "50", "--max-latency-ms", "1", "--out", str(out), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == ("hwlat: error: --percentile and --max-latency-ms both set the latency "
                                               "budget: give one of them")
    assert not out.exists()


def test_a_plot_that_cannot_be_written_is_named_and_leaves_no_part_of_it(tmp_path):
    """A full disk while plotting ended the demo in 'hwlat: error: [Errno 28] No space left on device',
    naming no file, and left a cut PNG."""
    import subprocess
    import sys

    script = ("import resource, signal, sys\nfrom hwlat.nas.search.plots import predicted_vs_measured\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))  # files stop growing at 4 kB, as on a full disk\n"
              "from hwlat.device_tables.errors import WriteError\n"
              "try:\n    predicted_vs_measured(sys.argv[1], [0.3, 0.35, 0.38], [0.32, 0.45, 0.5], budget_ms=0.4)\n"
              "except WriteError as exc:\n    print(exc)\n")
    png = tmp_path / "p.png"
    proc = subprocess.run([sys.executable, "-c", script, str(png)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cannot write {png}: [Errno 27] File too large", proc.stderr
    assert list(tmp_path.iterdir()) == []
