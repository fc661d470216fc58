"""`hwlat profile device`: one command makes a complete table, resumes after a kill in any stage, and the
table predicts fast from what it stores (regressors as arrays + JSON, never refitted)."""

from __future__ import annotations

import csv
from collections import Counter
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwlat.device_tables.table import COLUMNS, DeviceTable
from hwlat.device_profile import STAGES, missing_stages, networks_path, read_networks, table_stages

ROOT = Path(__file__).resolve().parents[1]
# A tiny run: NB201 only (its kernels are few), four fusion patterns, quick protocol, 2 + 2 networks.
PATTERNS = ["conv2d+relu", "conv2d+bn+relu", "pwconv2d+relu", "add+relu"]
TINY = ["--runtime", "onnxruntime", "--protocol", "quick", "--targets", "nb201", "--calibration-networks", "2",
        "--score-networks", "2", "--patterns", ",".join(PATTERNS), "--no-progress"]


def hwlat_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "hwlat", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_until(args: list[str], stage: str | None, ready=lambda: True, timeout: float = 300) -> tuple[int | None, str]:
    """Run `hwlat` and SIGKILL it once it has announced `stage` and `ready()` holds (None: run to the end)."""
    import threading

    proc = hwlat_process(*args)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if stage is not None and any(f" {stage}]" in ln for ln in list(lines)) and ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            reader.join(5)
            return None, "".join(lines)
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    reader.join(5)
    if stage is not None:
        pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed in stage {stage}:\n"
                    + "".join(lines)[-2000:])
    return proc.returncode, "".join(lines)


def copy_table(table: Path, folder: Path) -> Path:
    """A copy of a table's files (every NAME.*) in `folder`, under the same name."""
    import shutil

    for f in table.parent.iterdir():
        if f.name.startswith(table.name + "."):
            shutil.copy(f, folder / f.name)
    return folder / table.name


def stored_times_times(table: Path, factor: float) -> None:
    """Multiply every network time a table stored by `factor`, as if a slower machine had timed them."""
    path = networks_path(DeviceTable.load(table))
    rows = list(csv.DictReader(path.open()))
    for r in rows:
        r["median_ms"] = str(float(r["median_ms"]) * factor) if r["median_ms"] else r["median_ms"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_networks(path: Path, rows: list[dict[str, str]]) -> None:
    """Write network measurements (as `read_networks` gives them) over a table's networks file."""
    from hwlat.device_profile import NETWORK_COLUMNS

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=NETWORK_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in NETWORK_COLUMNS})


def rows_by_key(path: Path) -> dict[str, list[str]]:
    """Each stored row's key -> its CSV fields (a re-measured row would change its time stamp)."""
    with open(path.with_suffix(".csv"), newline="") as f:
        return {rec[0]: rec for rec in list(csv.reader(f))[1:]}


def test_profile_device_makes_a_complete_table_and_resumes_after_a_kill_in_each_stage(tmp_path):
    out = tmp_path / "dev"
    args = ["profile", "device", *TINY, "--out", str(out), "--minutes", "5"]
    probes = out.with_name("dev.probes.jsonl")
    # Killed in the fusion probe once it has stored some measurements.
    rc, log = run_until(args, "fusion", lambda: probes.exists() and probes.read_text().count("\n") >= 3)
    probed = probes.read_text().splitlines()
    assert len(probed) >= 3 and "fusion" not in DeviceTable.load(out).meta
    # Killed while measuring rows: the probe's stored measurements were replayed, not repeated.
    rc, log = run_until(args, "rows", lambda: out.with_suffix(".csv").exists()
                        and out.with_suffix(".csv").read_text().count("\n") >= 4)
    assert "fusion" in DeviceTable.load(out).meta and not probes.exists()
    before_rows = rows_by_key(out)
    assert len(before_rows) >= 3
    # Killed while measuring networks a second time, after the rows: every row measured before is kept,
    # at most replaced by a quieter measurement of its second pass.
    nets = networks_path(DeviceTable.load(out))
    rc, log = run_until(args, "networks", lambda: nets.exists() and ",2,ok," in nets.read_text())
    after_rows = rows_by_key(out)
    assert set(before_rows) <= set(after_rows)
    median = COLUMNS.index("median_ms")
    assert all(float(after_rows[k][median]) <= float(rec[median]) for k, rec in before_rows.items())
    assert DeviceTable.load(out).meta["profile_device"]["stages"]["rows"]["measured_twice"] >= len(before_rows)
    before_nets = nets.read_text().splitlines()
    # The last run finishes every stage without measuring again what is stored.
    rc, log = run_until(args, None)
    assert rc == 0, log
    assert nets.read_text().splitlines()[: len(before_nets)] == before_nets
    assert all(rows_by_key(out)[k] == line for k, line in after_rows.items())
    table = DeviceTable.load(out)
    assert missing_stages(table) == [], table_stages(table)
    assert set(STAGES) <= set(table.meta["profile_device"]["stages"])
    score = table.meta["self_score"]
    assert score["networks"] == 2 and f"±10%: {score['within_10']} of 2" in log
    measured = read_networks(nets)
    assert {r["role"] for r in measured} == {"calibration", "score"}
    # A network's first pass was measured before the rows, its second after them: minutes apart.
    stages = table.meta["profile_device"]["stages"]
    assert all(r["measured_at"] <= stages["rows pass 1"]["finished"] for r in measured if r["pass"] == "1")
    assert all(r["measured_at"] >= stages["rows"]["finished"] for r in measured if r["pass"] == "2")
    assert not set(table.meta["lut_calibration_networks"]) & set(score["ratios"])  # scored networks never calibrated on
    assert Path(str(out) + ".regressors.json").exists() and Path(str(out) + ".regressors.npz").exists()
    # `table show` lists the stages and the score.
    show = subprocess.run([sys.executable, "-m", "hwlat", "table", "show", str(out), "--limit", "1"], cwd=ROOT,
                          capture_output=True, text=True)
    assert "MISSING" not in show.stdout and f"±10%: {score['within_10']} of 2" in show.stdout
    assert score["passes_compared"] == 4 and "of its 4 networks' two passes over 10% apart" in show.stdout
    cpu_id = table.device.fingerprint.get("cpu_id")  # which CPU design measured it, where /proc/cpuinfo says
    assert cpu_id is None or f"({cpu_id}, " in show.stdout


def test_profile_device_with_a_tiny_budget_leaves_a_valid_table_and_says_what_is_unfinished(tmp_path):
    out = tmp_path / "short"
    rc, log = run_until(["profile", "device", *TINY, "--out", str(out), "--minutes", "0.001"], None)
    assert rc == 3, log
    assert "unfinished: fusion" in log and "run the same command again" in log and "Traceback" not in log
    assert not DeviceTable.load(out).rows("ok")  # valid, and without rows `predict` refuses it: not 'predicts with what it has'
    rc, log = run_until(["profile", "device", *TINY, "--out", str(out), "--minutes", "0.001", "--fresh"], None)
    assert rc == 3 and "run the same command without --fresh again" in log, log  # --fresh would start it again
    assert "the table is valid but has no op rows yet, so it cannot predict" in log


@pytest.fixture(scope="module")
def complete_table(tmp_path_factory):
    """A complete table from the Python API (fusion rules given a short pattern list)."""
    import hwlat
    from hwlat.profilers.protocol import Protocol

    out = tmp_path_factory.mktemp("complete") / "t"
    result = hwlat.profile_device("onnxruntime", out, minutes=5, threads=1, protocol=Protocol.preset("quick"),
                                  targets=["nb201"], calibration_networks=3, score_networks=2,
                                  fusion_patterns=PATTERNS, progress=False)
    assert result.complete, result.unfinished
    return out


def test_stored_regressors_predict_exactly_as_freshly_fitted_ones_and_are_refitted_when_rows_change(complete_table):
    from hwlat.nas.pool import graph_of
    from hwlat.predictors.kernel_regressors import KernelRegressors
    from hwlat.predictors.lut import LUTPredictor

    table = DeviceTable.load(complete_table)
    stored = LUTPredictor(table)
    assert stored.stored_regressors() is not None
    rows = stored._regressor_rows()
    fresh = LUTPredictor(table, regressors=KernelRegressors().fit([r.spec for r in rows],
                                                                  [stored._in_network_ms(r) for r in rows]))
    # Networks with kernels the NB201 rows do not hold (other sizes and channel counts): regressed.
    graphs = [graph_of(n) for n in ("classic:resnet18@r64w0.5", "classic:resnet18@r96w1")]
    a = [stored.predict_graph(g) for g in graphs]
    b = [fresh.predict_graph(g) for g in graphs]
    assert any(k.source == "regressor" for p in a for k in p.kernels)
    assert [p.total_ms for p in a] == [p.total_ms for p in b]
    # Another statistic, or rows that changed, are not what the stored regressors were fitted on.
    assert LUTPredictor(table, statistic="p10_ms").stored_regressors() is None
    first = table.rows("ok")[0]
    table._rows[first.spec.key] = type(first)(first.spec, first.status,
                                              type(first.measurement)(**{**first.measurement.to_dict(),
                                                                         "median_ms": first.measurement.median_ms * 2}),
                                              first.extra, first.measured_at)
    assert LUTPredictor(table).stored_regressors() is None


def test_a_loaded_table_does_not_take_regressors_stored_since_for_other_rows(tmp_path):
    """A table loaded in a long-lived process reads its stored regressors at its first prediction: those
    another process stored meanwhile, fitted on its changed rows (a re-profile), were taken as this
    table's (the digest of its rows matched the record it had loaded). They are not: it fits its own."""
    from dataclasses import replace

    from hwlat.device_tables.measurement import STAT_FIELDS
    from hwlat.device_tables.registry import resolve
    from hwlat.predictors.lut import LUTPredictor

    out = copy_table(resolve("cpu_onnxruntime_fp32_threads1"), tmp_path)
    held = DeviceTable.load(out)  # loaded, not predicted from yet
    other = DeviceTable.load(out)  # the other process: a row measured again, the regressors fitted again and stored
    first = other.rows("ok")[0]
    twice = replace(first.measurement, **{f: 2 * getattr(first.measurement, f) for f in STAT_FIELDS})
    other.remeasured({first.spec.key: (twice, first.extra)})
    LUTPredictor(other).save_regressors()
    assert LUTPredictor(held).stored_regressors() is None
    assert LUTPredictor(DeviceTable.load(out)).stored_regressors() is not None  # loaded again: the table it is now


@pytest.mark.parametrize("damage", ["truncated npz", "garbage npz", "json cut short", "calibration not numbers",
                                    "networks header"])
def test_a_damaged_companion_file_is_named_by_validate_and_predict_refits_or_names_it(complete_table, tmp_path,
                                                                                      damage, capsys, caplog):
    """`table validate` reads a table's other files too; a damaged regressors file is refitted by a
    prediction (a warning, never a traceback), a damaged networks file or calibration named in one line."""
    from hwlat.cli import main

    out = copy_table(complete_table, tmp_path)
    npz, js = Path(str(out) + ".regressors.npz"), Path(str(out) + ".regressors.json")
    if damage == "truncated npz":
        npz.write_bytes(npz.read_bytes()[:3000])
    elif damage == "garbage npz":  # numpy reads it as a pickle and advised allow_pickle=, which hwlat never needs
        npz.write_bytes(b"not an archive\n")
    elif damage == "json cut short":
        js.write_text("{")
    elif damage == "calibration not numbers":
        table = DeviceTable.load(out)
        cal = table.meta["lut_calibration"]
        table.update_meta(lut_calibration={**cal, "constant_ms": float("nan")})
    else:
        nets = networks_path(DeviceTable.load(out))
        nets.write_text("network,role\n" + nets.read_text().split("\n", 1)[1])
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    assert main(["table", "validate", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hwlat: error: ")
    assert {"truncated npz": "regressors.npz: not a readable npz file", "json cut short": "regressors.json: not valid JSON",
            "calibration not numbers": "its calibration", "networks header": "networks.csv: header is not",
            "garbage npz": "regressors.npz: not a readable npz file (not a zip archive of arrays"}[damage] in err
    assert "pickle" not in err
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before  # validating changes nothing
    if damage in ("truncated npz", "garbage npz", "json cut short"):  # a network with kernels the rows lack: regressed
        assert main(["predict", "--classic", "resnet18@r64w0.5", "--table", str(out)]) == 0
        assert "regressed" in capsys.readouterr().out and "stored regressors not used" in caplog.text
        assert f"delete {npz.stem}.json/.npz" in err  # and done as said, the table validates (it was 'one is missing')
        npz.unlink()
        js.unlink()
        assert main(["table", "validate", str(out)]) == 0, capsys.readouterr().err


def test_regressors_of_an_older_hwlat_are_a_warning_in_validate_not_an_error(complete_table, tmp_path, capsys):
    """A table kept from an older hwlat stores regressors fitted on other features: not damage (a
    prediction refits them, `profile device` stores new ones), so `table validate` passes with a
    warning saying so (it said 'error', exit 1, for every table shipped before the features changed)."""
    from hwlat.cli import main

    out = copy_table(complete_table, tmp_path)
    js = Path(str(out) + ".regressors.json")
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "feature_names": meta["feature_names"][:-1]}))
    assert main(["table", "validate", str(out)]) == 0
    err = capsys.readouterr().err
    assert "another hwlat version" in err and "each prediction refits them" in err and "hwlat profile device" in err
    assert main(["predict", "--classic", "resnet18@r64w0.5", "--table", str(out)]) == 0


def test_predict_many_equals_one_by_one_and_keys_round_trip_with_profile_archs(complete_table, tmp_path):
    from hwlat.cli import main

    measured = tmp_path / "m.csv"
    assert main(["profile", "archs", "--space", "nb201", "--archs", "random:3", "--protocol", "quick",
                 "--out", str(measured), "--no-progress"]) == 0
    many = tmp_path / "p.csv"
    assert main(["predict", "--space", "nb201", "--archs", str(measured), "--table", str(complete_table),
                 "--out", str(many), "--no-progress"]) == 0
    with open(many) as f:
        rows = list(csv.DictReader(f))
    stem = tmp_path / "p_stem.csv"  # the arch table's stem, as `--out` took it, names the same architectures
    assert main(["predict", "--space", "nb201", "--archs", str(measured.with_suffix("")), "--table",
                 str(complete_table), "--out", str(stem), "--no-progress"]) == 0
    assert stem.read_text() == many.read_text()
    with open(measured) as f:
        first_column = [line.split(",")[0] for line in f.readlines()[1:] if line.strip() and not line.startswith("#")]
    assert len(rows) == 3 and {r["nb201_index"] for r in rows} == set(first_column)
    for key, row in zip(first_column, sorted(rows, key=lambda r: first_column.index(r["nb201_index"]))):
        proc = subprocess.run([sys.executable, "-m", "hwlat", "predict", "--space", "nb201", "--arch", key,
                               "--table", str(complete_table), "--json"], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        one = json.loads(proc.stdout)
        assert f"{one['latency_ms']:.6g}" == row["predicted_ms"] and row["partial"] == "false"
        assert one["model"].endswith(row["arch_str"])
    # FBNet: the first column is the op-index key (the public files' row number, which a random
    # architecture lacks, comes last), and `--arch` takes it
    fb = tmp_path / "fb.csv"
    assert main(["profile", "archs", "--space", "fbnet", "--archs", "random:1", "--protocol", "quick",
                 "--out", str(fb), "--no-progress"]) == 0
    header, first = [line.split(",") for line in fb.read_text().splitlines()[:2]]
    assert header[0] == "fbnet_op_idx22" and first[0]
    proc = subprocess.run([sys.executable, "-m", "hwlat", "predict", "--space", "fbnet", "--arch", first[0],
                           "--table", str(complete_table), "--json"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_predict_warns_about_missing_stages_and_another_machine(tmp_path):
    from hwlat.device_tables.device import Device
    from hwlat.device_tables.measurement import Measurement
    from hwlat.device_tables.ops import OpSpec
    from hwlat.device_profile import table_warnings

    fp = {"cpu_model": "Imaginary CPU 9000", "flags": ["avx512f"], "packages": {"onnxruntime": "0.0.1"}}
    with DeviceTable.open(tmp_path / "old", Device.make("cpu", "onnxruntime", fingerprint=fp, threads=1)) as t:
        t.append(OpSpec.make("relu", (1, 8, 4, 4)), Measurement.from_samples([0.01, 0.011]))
    warnings = table_warnings(DeviceTable.load(tmp_path / "old"))
    assert len(warnings) == 2
    assert "lacks fusion, weights cache, regressors, calibration, score" in warnings[0]
    assert "Imaginary CPU 9000" in warnings[1] and "onnxruntime 0.0.1 ->" in warnings[1]


# Shipped tables that `hwlat profile device` cannot complete here: the GPU tables were measured in a
# lent-GPU session before `profile device` existed; they predict with a one-line warning naming the
# missing stages. (The board tables have every stage a board can have: its protocol runs one kernel at
# a time, so calibration and score are n/a; TFLite Micro times whole networks on this host.)
CANNOT_CALIBRATE = ("nvidia",)


def test_every_shipped_table_validates_and_the_calibratable_ones_have_every_stage():
    from hwlat.device_tables.registry import available, load

    names = available()
    assert "cpu_onnxruntime_fp32_threads1" in names and "cpu_litert_fp32_threads1" in names
    for name in names:
        table = load(name)  # validates
        if not any(part in name for part in CANNOT_CALIBRATE):
            assert missing_stages(table) == [], (name, table_stages(table))
            if "board" in name:
                assert table_stages(table)["score"].startswith("n/a: ") and table.meta["fusion"]["fused"]
            else:
                assert table.meta["self_score"]["networks"] >= 10


def test_a_complete_table_grows_to_new_targets_keeping_what_it_has(complete_table, tmp_path, capsys):
    """Run again with a target it lacks, the table measures that target's kernels and networks (and
    fusion patterns it lacks) and recalibrates on both; its rows and networks are kept as they were."""
    import hwlat
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    before_rows = rows_by_key(out)
    before_nets = read_networks(networks_path(DeviceTable.load(out)))
    result = hwlat.profile_device("onnxruntime", out, minutes=5, threads=1, protocol=Protocol.preset("quick"),
                                  targets=["fbnet"], calibration_networks=3, score_networks=2,
                                  fusion_patterns=[*PATTERNS, "linear+relu"], progress=False)
    assert result.complete, result.unfinished
    table = DeviceTable.load(out)
    after_rows = rows_by_key(out)
    assert all(after_rows[k] == v for k, v in before_rows.items())  # kept, not measured again
    assert len(after_rows) > len(before_rows)
    nets = read_networks(networks_path(table))
    assert nets[:len(before_nets)] == before_nets
    new = {r["role"] for r in nets[len(before_nets):] if r["network"].startswith("fbnet:")}
    assert new == {"calibration", "score"}
    run = table.meta["profile_device"]
    assert run["targets"] == ["nb201", "fbnet"] and "growing" not in run
    assert set(table.meta["fusion"]["patterns"]) == {*PATTERNS, "linear+relu"}
    assert re.search(r"\[1/6 fusion\] [01] of 1 patterns fused", capsys.readouterr().out)  # without progress bars too
    assert {n.split(":")[0] for n in table.meta["lut_calibration_networks"]} == {"nb201", "fbnet"}
    assert not missing_stages(table)


def test_a_network_measured_in_a_slow_spell_is_measured_a_third_time(complete_table, tmp_path):
    """A network whose stored passes both read far slower than its kernels say (as in a slow spell of
    the machine) is measured once more when the command runs again, and keeps its quietest pass."""

    import hwlat
    from hwlat.device_profile import _measured
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    path = networks_path(DeviceTable.load(out))
    rows = read_networks(path)
    # A network the table's own run did not time a third time (a noisy run may have, for some).
    third_before = {r["network"] for r in rows if int(r["pass"]) == 3}
    slow = next(r["network"] for r in rows if r["role"] == "calibration" and r["network"] not in third_before)
    honest = dict(zip(*_measured(DeviceTable.load(out), "calibration")))[slow]
    write_networks(path, [{**r, "median_ms": str(1.6 * float(r["median_ms"]))} if r["network"] == slow else r
                          for r in rows])  # both passes of one network read 1.6x
    result = hwlat.profile_device("onnxruntime", out, minutes=5, threads=1, protocol=Protocol.preset("quick"),
                                  targets=["nb201"], calibration_networks=3, score_networks=2,
                                  fusion_patterns=PATTERNS, progress=False)
    assert result.complete, result.unfinished
    after = read_networks(path)
    third = [r for r in after if int(r["pass"]) == 3]
    assert slow in {r["network"] for r in third}
    truth = dict(zip(*_measured(DeviceTable.load(out), "calibration")))[slow]
    # Its truth is the quietest of its three passes (the third is timed now, fast or, in a slow spell
    # of this machine, slow again: no threshold on it).
    assert truth == min(float(r["median_ms"]) for r in after if r["network"] == slow and r["status"] == "ok")
    assert truth <= 1.6 * honest
    # Run again: a network gets one third pass, never more (another may become a suspect, as the
    # median network of its kind moves with the new times).
    hwlat.profile_device("onnxruntime", out, minutes=5, threads=1, protocol=Protocol.preset("quick"),
                         targets=["nb201"], calibration_networks=3, score_networks=2,
                         fusion_patterns=PATTERNS, progress=False)
    thirds = Counter(r["network"] for r in read_networks(path) if int(r["pass"]) == 3)
    assert thirds[slow] == 1 and max(thirds.values()) == 1


def test_the_networks_first_pass_out_of_time_leaves_the_networks_stage_unfinished(complete_table, tmp_path):
    """The networks' first pass, before the rows, that meets the end of the budget stops without
    recording the networks stage as done (the stage itself, in its turn, says what is unfinished)."""
    from hwlat.device_profile import FIT_RESERVE_S, _Clock, _networks_stage
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    out = copy_table(complete_table, tmp_path)
    table = DeviceTable.load(out)
    run = table.meta["profile_device"]
    table.update_meta(profile_device={**run, "stages": {k: v for k, v in run["stages"].items() if k != "networks"}})
    lines = networks_path(table).read_text()
    clock = _Clock(0.5 * FIT_RESERVE_S / 60)  # less time left than the fit keeps
    rt = get_runtime("onnxruntime", threads=1)
    assert _networks_stage(rt, table, Protocol.preset("quick"), clock, ["nb201"], 6, 4, False,
                           first_pass_only=True) is None
    assert "networks" not in DeviceTable.load(out).meta["profile_device"]["stages"]
    assert networks_path(table).read_text() == lines  # nothing measured past the budget
    # The stage itself, out of time with some of each role measured, says what it is short of (the run
    # lists it as unfinished and goes on to calibrate and score on what there is).
    note = _networks_stage(rt, table, Protocol.preset("quick"), clock, ["nb201"], 6, 4, False)
    assert note.startswith("3 of 6 calibration and 2 of 4 score networks measured, 5 of them twice (stopped with ")
    assert note.endswith(f" s of the budget left, under the {FIT_RESERVE_S:.0f} s kept for fitting the regressors, "
                         "calibration and score); run the same command again (with more --minutes) to measure the rest")
    assert "networks" not in DeviceTable.load(out).meta["profile_device"]["stages"]
    assert networks_path(table).read_text() == lines


def test_the_score_says_how_noisy_the_machine_was_and_calls_a_noisy_spell_one(complete_table, tmp_path):
    """The score line carries the machine's own noise (networks whose two passes are >10% apart) and,
    where most are, says the table may fit the spell and how to fit it again."""
    from hwlat.device_profile import passes_apart

    out = copy_table(complete_table, tmp_path)
    path = networks_path(DeviceTable.load(out))
    rows = read_networks(path)
    first = {r["network"]: float(r["median_ms"]) for r in rows if r["pass"] == "1" and r["status"] == "ok"}

    def second_passes_at(factor: float) -> tuple[dict, str]:
        write_networks(path, [{**r, "median_ms": str(factor * first[r["network"]])}  # `factor` times the first
                              if r["pass"] == "2" and r["network"] in first else r for r in rows])
        return passes_apart(DeviceTable.load(out)), table_stages(DeviceTable.load(out))["score"]

    noise, line = second_passes_at(1.02)
    assert noise["passes_apart_10"] == noise["passes_apart_5"] == 0.0 and noise["passes_compared"] == len(first)
    assert f"0% of its {len(first)} networks' two passes over 10% apart" in line and "noisy spell" not in line
    noise, line = second_passes_at(1.5)
    assert noise["passes_apart_10"] == noise["passes_apart_5"] == 1.0
    assert f"100% of its {len(first)} networks' two passes over 10% apart (a noisy spell" in line
    assert "--recalibrate" in line


def test_remeasure_measures_matching_rows_again_keeping_the_old_values(complete_table, tmp_path):
    """`--remeasure PATTERN` (after a fix to a single-op model): the matching rows are measured again,
    each keeping what it replaced in its extra; the other rows stay; the regressors follow the new
    rows; a pattern matching nothing is refused by name."""

    import hwlat
    from hwlat.device_tables.errors import HwlatError
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    before = rows_by_key(out)
    key = next(k for k in before if k.startswith("conv2d"))
    median = COLUMNS.index("median_ms")
    with open(out.with_suffix(".csv"), "w", newline="") as f:  # a wrong single-op model read 20x
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for k, rec in before.items():
            w.writerow([str(20 * float(v)) if c.endswith("_ms") else v for c, v in zip(COLUMNS, rec)]
                       if k == key else rec)
    digest = DeviceTable.load(out).meta["regressors"]["rows_digest"]
    pattern = key.split("|")[0] + "|*|" + key.split("|")[2] + "|*"
    kw = dict(minutes=5, threads=1, protocol=Protocol.preset("quick"), targets=["nb201"], calibration_networks=3,
              score_networks=2, fusion_patterns=PATTERNS, progress=False)
    result = hwlat.profile_device("onnxruntime", out, remeasure=[pattern], **kw)
    assert result.complete, result.unfinished
    table = DeviceTable.load(out)
    after = rows_by_key(out)
    row = table.get(key)
    assert row.extra["replaced"]["median_ms"] == pytest.approx(20 * float(before[key][median]), rel=1e-6)
    assert row.measurement.median_ms < 5 * float(before[key][median])
    matched = {k for k in before if k.split("|")[0] == key.split("|")[0] and k.split("|")[2] == key.split("|")[2]}
    assert all(after[k] == v for k, v in before.items() if k not in matched)
    assert table.meta["regressors"]["rows_digest"] != digest
    with pytest.raises(HwlatError, match="no row"):
        hwlat.profile_device("onnxruntime", out, remeasure=["nothing|*"], **kw)


def test_recalibrate_times_the_networks_again_and_fits_on_the_new_times_alone(complete_table, tmp_path, capsys):
    """`--recalibrate` (the machine now runs at another speed): every stored calibration and score
    network is timed again, twice, and one that could not run then is tried again (it runs now and
    joins the calibration); the calibration and score count only those times; the older times stay in
    the file; a later run measures nothing more and keeps counting the new times."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_profile import _instant, _measured
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    path = networks_path(DeviceTable.load(out))
    rows = read_networks(path)
    refused = "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    assert refused not in {r["network"] for r in rows}
    error = {k: "" for k in rows[0]} | {"network": refused, "role": "calibration", "pass": "1", "status": "error",
                                        "error": "an op an older hwlat could not run", "measured_at": rows[0]["measured_at"]}
    write_networks(path, [{**r, "median_ms": str(3 * float(r["median_ms"]))} if r["status"] == "ok" else r
                          for r in rows] + [error])  # every stored time from a spell when the machine ran 3x slower
    old_lines = path.read_text().splitlines()
    slow = {role: dict(zip(*_measured(DeviceTable.load(out), role))) for role in ("calibration", "score")}
    kw = dict(minutes=5, threads=1, protocol=Protocol.preset("quick"), targets=["nb201"], calibration_networks=3,
              score_networks=2, fusion_patterns=PATTERNS, progress=False)
    result = hwlat.profile_device("onnxruntime", out, recalibrate=True, **kw)
    assert result.complete, result.unfinished
    table = DeviceTable.load(out)
    since = table.meta["profile_device"]["recalibrated"]["since"]
    assert f"[3/6 networks] recalibrating: the stored networks are timed again; only times since {since}" \
        in capsys.readouterr().out
    assert path.read_text().splitlines()[: len(old_lines)] == old_lines  # nothing measured is lost
    new = [r for r in read_networks(path)[len(old_lines) - 1:]]
    assert all(_instant(r["measured_at"]) > _instant(since) for r in new)
    ok_before = {r["network"] for r in rows if r["status"] == "ok"}
    for name in ok_before:
        assert {int(r["pass"]) for r in new if r["network"] == name} >= {1, 2}
    assert {int(r["pass"]) for r in new if r["network"] == refused and r["status"] == "ok"} >= {1, 2}
    for role in ("calibration", "score"):
        fresh = dict(zip(*_measured(table, role)))
        assert set(fresh) == set(slow[role]) | ({refused} if role == "calibration" else set())
        fresh.pop(refused, None)
        for name, ms in fresh.items():  # the truth is of the new times: a third of the slow spell's, give or take
            assert ms == min(float(r["median_ms"]) for r in new if r["network"] == name and r["status"] == "ok")
            assert ms < 0.6 * slow[role][name]
    assert table.meta["self_score"]["scored_at"] >= since
    assert table.meta["lut_calibration"]["n_models"] == len(slow["calibration"]) + 1
    show = subprocess.run([sys.executable, "-m", "hwlat", "table", "show", str(out), "--limit", "1"], cwd=ROOT,
                          capture_output=True, text=True)
    assert f"since {since} (--recalibrate)" in show.stdout
    # A plain run afterwards measures nothing and counts the same times.
    lines = path.read_text().splitlines()
    assert hwlat.profile_device("onnxruntime", out, **kw).complete
    assert path.read_text().splitlines() == lines
    assert dict(zip(*_measured(DeviceTable.load(out), "score"))) == dict(zip(*_measured(table, "score")))
    # --recalibrate on an unfinished recalibration (killed before its score) resumes it: the same start,
    # nothing timed twice; on a finished one it begins anew.
    t = DeviceTable.load(out)
    run = t.meta["profile_device"]
    t.update_meta(profile_device={**run, "recalibrated": {k: v for k, v in run["recalibrated"].items()
                                                          if k != "finished"}})
    assert hwlat.profile_device("onnxruntime", out, recalibrate=True, **kw).complete
    assert DeviceTable.load(out).meta["profile_device"]["recalibrated"]["since"] == since
    assert path.read_text().splitlines() == lines
    assert hwlat.profile_device("onnxruntime", out, recalibrate=True, **kw).complete
    assert _instant(DeviceTable.load(out).meta["profile_device"]["recalibrated"]["since"]) > _instant(since)
    assert len(path.read_text().splitlines()) >= len(lines) + 2 * len(ok_before)
    # No table has nothing to recalibrate.
    with pytest.raises(HwlatError, match="--recalibrate: no table .*empty"):
        hwlat.profile_device("onnxruntime", tmp_path / "empty", recalibrate=True, **kw)


def test_a_recalibration_out_of_time_counts_the_networks_timed_again(complete_table, tmp_path):
    """Out of time before it timed any network again, a recalibration says 0 of them, not the stored ones."""
    import hwlat
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    result = hwlat.profile_device("onnxruntime", out, recalibrate=True, minutes=0.3, threads=1,  # under FIT_RESERVE_S
                                  protocol=Protocol.preset("quick"), targets=["nb201"], calibration_networks=3,
                                  score_networks=2, fusion_patterns=PATTERNS, progress=False)
    assert result.unfinished["networks"].startswith("0 of 3 calibration and 0 of 2 score networks measured")


def test_from_copies_a_table_and_recalibrates_the_copy(complete_table, tmp_path, capsys):
    """`--from TABLE --out NEW`: NEW starts as a copy of TABLE (rows, fusion rules, regressors kept) and
    is recalibrated on this machine, each stage saying what it did (the regressors' said nothing); the
    source is untouched; an existing --out or a table of another device is refused by name."""
    import hwlat
    from hwlat.profilers.protocol import Protocol

    source = copy_table(complete_table, tmp_path)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    new = tmp_path / "copy" / "mine"
    result = hwlat.profile_device("onnxruntime", new, start_from=source, minutes=5, threads=1,
                                  protocol=Protocol.preset("quick"), targets=["nb201"], calibration_networks=3,
                                  score_networks=2, fusion_patterns=PATTERNS, progress=False)
    assert result.complete, result.unfinished
    said = capsys.readouterr().out
    assert all(f"[{i}/6 " in said for i in range(1, 7)), said
    assert "[4/6 regressors] stored regressors kept" in said, said
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()} == before
    table = DeviceTable.load(new)
    assert table.meta["name"] == "mine" and table.meta["copied_from"]["table"] == source.name
    assert table.meta["regressors"]["file"] == "mine.regressors"  # the copy's own files, not the source's
    assert rows_by_key(new) == rows_by_key(source)
    assert table.meta["profile_device"]["recalibrated"]["finished"]
    nets = read_networks(networks_path(table))
    assert len(nets) > len(read_networks(networks_path(DeviceTable.load(source))))
    rc, log = run_until(["profile", "device", *TINY, "--from", str(source), "--out", str(new)], None)
    assert rc != 0 and "exists; choose a new --out" in log
    rc, log = run_until(["profile", "device", *TINY[:2], "--threads", "2", *TINY[2:], "--from", str(source),
                         "--out", str(tmp_path / "other")], None)
    assert rc != 0 and "not of cpu/onnxruntime/fp32/threads=2" in log


def test_a_table_of_this_machine_predicts_at_its_speed_now(complete_table, tmp_path, monkeypatch, capsys):
    """A table whose stored networks took 4x what this machine times now predicts at this machine's
    speed: `hwlat predict` and the API scale by its own networks timed again (about 1/4), say so, and
    reuse that reading within a minute; --as-profiled and HWLAT_AS_PROFILED=1 give the table's own
    times; a table of another machine is not scaled."""
    import hwlat
    from hwlat.cli import main
    from hwlat.device_profile import speed_cache_path, speed_now

    monkeypatch.delenv("HWLAT_AS_PROFILED", raising=False)  # the suite predicts the tables' own times (conftest)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = copy_table(complete_table, tmp_path)
    stored_times_times(out, 4)
    arch = ["--space", "nb201", "--arch", "1462", "--table", str(out), "--json"]

    def predicted(*extra: str) -> tuple[dict, str]:
        assert main(["predict", *arch, *extra]) == 0
        said = capsys.readouterr()
        return json.loads(said.out), said.err

    together = [subprocess.Popen([sys.executable, "-m", "hwlat", "predict", *arch], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True) for _ in range(2)]  # started at once
    speeds = [json.loads(p.communicate(timeout=300)[0])["speed"] for p in together]
    (reading,), = json.loads(speed_cache_path().read_text()).values()  # one process timed, the other took it
    assert speeds[0] == speeds[1] and set(reading[1]) <= {r["network"] for r in read_networks(networks_path(DeviceTable.load(out)))}
    now, err = predicted()
    assert now["speed"] == speeds[0]
    own, err_own = predicted("--as-profiled")
    assert 0.05 < now["speed"] < 0.6 and own["speed"] == 1.0
    assert now["latency_ms"] == pytest.approx(own["latency_ms"] * now["speed"], rel=1e-9)
    # how far the networks strayed from that one factor is a part of the sigma; as profiled, none was read
    assert now["speed_error"] > 0 and now["speed_error"] == pytest.approx(np.std(np.log(list(reading[1].values())), ddof=1))
    assert own["speed_error"] == 0 and now["sigma_ms"] == pytest.approx(math.sqrt(
        (own["sigma_ms"] * now["speed"]) ** 2 + (now["latency_ms"] * now["speed_error"]) ** 2), rel=1e-6)
    assert f"strays ±{now['speed_error']:.0%} from network to network" in hwlat.predict("1462", table=out,
                                                                                       space="nb201").format()
    assert f"predictions scaled by {now['speed']:.2f}" in err and "--as-profiled" in err and "scaled" not in err_own
    assert speed_cache_path() == tmp_path / "cache" / "hwlat" / "speed.json" and speed_cache_path().is_file()
    again, _ = predicted()  # within the minute: the same reading, not a new timing
    assert again == now
    (tmp_path / "clone").mkdir()  # a copy of the table elsewhere (another clone) shares the readings
    clone = speed_now(DeviceTable.load(copy_table(out, tmp_path / "clone")))
    assert len(clone.readings) == 1 and clone.factor == now["speed"] and len(json.loads(speed_cache_path().read_text())) == 1
    kept = json.loads(speed_cache_path().read_text())
    (key, [(at, ratios)]), = kept.items()
    kept[key] = [(at - 900, {n: 100.0 for n in ratios}), (at - 120, ratios)]  # 15 and 2 minutes old
    speed_cache_path().write_text(json.dumps(kept))
    pooled = speed_now(DeviceTable.load(out))  # a new reading beside the one of 2 minutes ago; 15 is too old
    assert len(pooled.readings) == 2 and len(pooled.ratios) == 2 * len(ratios) and pooled.factor < 1
    assert f"median of {2 * len(ratios)} timings over the last 2 min" in pooled.describe()
    assert hwlat.predict("1462", table=out, space="nb201").speed == pooled.factor
    assert hwlat.predict("1462", table=out, space="nb201", as_profiled=True).latency_ms == own["latency_ms"]
    found = tmp_path / "search.json"  # `hwlat search --predictor lut:TABLE`: the same scaled predictions
    assert main(["search", "--space", "nb201", "--predictor", f"lut:{out}", "--max-latency-ms", "100", "--budget", "4",
                 "--objective", "tests.test_adapt:num_params_objective", "--no-progress", "--json", str(found)]) == 0
    assert f"predictions scaled by {pooled.factor:.2f}" in capsys.readouterr().err
    best = json.loads(found.read_text())["search"]["best"][0]
    assert best["predicted_ms"] == pytest.approx(hwlat.predict(best["key"], table=out, space="nb201").latency_ms)
    assert main(["search", "--space", "nb201", "--predictor", f"lut:{out}", "--max-latency-ms", "100", "--budget", "4",
                 "--objective", "tests.test_adapt:num_params_objective", "--no-progress", "--as-profiled"]) == 0
    assert "scaled" not in capsys.readouterr().err
    table = DeviceTable.load(out)  # a constraint of a NAS loop in Python: the numbers of `hwlat predict`
    scaled = hwlat.predict("1462", table=out, space="nb201").latency_ms
    assert hwlat.LatencyConstraint(table, 100.0, space="nb201")("1462").latency_ms == pytest.approx(scaled)
    assert hwlat.LatencyConstraint(f"lut:{out}", 100.0, space="nb201")("1462").latency_ms == pytest.approx(scaled)
    assert hwlat.LatencyConstraint(table, 100.0, space="nb201", as_profiled=True)("1462").latency_ms == pytest.approx(
        own["latency_ms"])
    held = hwlat.LatencyConstraint(table, 100.0, space="nb201")  # a NAS loop's, kept while the machine's speed moves
    kept = json.loads(speed_cache_path().read_text())
    kept[key] = [(time.time(), {n: 2 * r for n, r in ratios.items()})]  # a reading of now: twice as slow
    speed_cache_path().write_text(json.dumps(kept))
    assert held("1462").latency_ms == pytest.approx(scaled) and held("1").latency_ms == pytest.approx(
        hwlat.predict("1", table=table, space="nb201", as_profiled=True).latency_ms * pooled.factor)  # the speed it was made at
    assert hwlat.LatencyConstraint(table, 100.0, space="nb201")("1462").latency_ms == pytest.approx(2 * own["latency_ms"]
                                                                                                 * np.median(list(ratios.values())))
    monkeypatch.setenv("HWLAT_AS_PROFILED", "1")
    assert predicted()[0] == own
    monkeypatch.delenv("HWLAT_AS_PROFILED")
    meta = json.loads(out.with_suffix(".json").read_text())  # measured on another CPU: nothing to compare
    meta["device"]["fingerprint"]["cpu_model"] = "Some Other CPU"
    out.with_suffix(".json").write_text(json.dumps(meta))
    other, err = predicted()
    assert other["speed"] == 1.0 and other["latency_ms"] == own["latency_ms"] and "scaled" not in err


def test_a_relative_xdg_cache_home_is_ignored_as_the_spec_says(tmp_path, monkeypatch):
    """XDG_CACHE_HOME=cache put cache/hwlat/speed.json under whatever folder `hwlat predict` ran in."""
    from hwlat.device_profile import speed_cache_path

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    assert speed_cache_path() == tmp_path / ".cache" / "hwlat" / "speed.json"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert speed_cache_path() == tmp_path / "xdg" / "hwlat" / "speed.json"


def test_a_speed_cache_that_cannot_be_written_costs_only_its_reuse(complete_table, tmp_path, monkeypatch, capsys):
    """A cache folder that cannot be written (a read-only home; here $XDG_CACHE_HOME is a file, which
    refuses root too) made `hwlat predict` fail: 'cannot write .../hwlat/speed.json'. The reading
    serves this process."""
    from hwlat.cli import main

    monkeypatch.delenv("HWLAT_AS_PROFILED", raising=False)  # the suite predicts the tables' own times (conftest)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert main(["predict", "--space", "nb201", "--arch", "1462", "--table", str(complete_table), "--json"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["speed"] > 0 and "cannot write" not in said.err


def test_predict_archs_uses_every_core_after_timing_this_machines_speed(complete_table, tmp_path):
    """The speed reading times networks on the runtime; it does so in a child process, so that
    `predict --archs` in this one may still fork its workers (it forks none once a runtime is loaded)."""
    code = ("import sys, hwlat; from hwlat.device_tables import load; from hwlat.device_profile import speed_now; "
            f"s = speed_now(load({str(complete_table)!r})); print(len(s.ratios), 'onnxruntime' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "HWLAT_AS_PROFILED"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    timed, loaded = done.stdout.split()
    assert int(timed) > 0 and loaded == str(sys.platform != "linux")  # elsewhere nothing forks: timed here


def test_drift_times_the_tables_own_networks_again_against_their_stored_times(complete_table, tmp_path, capsys, caplog):
    """`hwlat table drift`: a few of the networks the table stored, timed again with its protocol; a table
    whose stored times are 4x what this machine runs reads as made on a slower machine (this one runs
    faster now), and one that stores no network timings (a board's) is refused naming why."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.table import now
    from hwlat.cli import main
    from hwlat.device_profile import drift

    out = copy_table(complete_table, tmp_path)
    stored = {r["network"] for r in read_networks(networks_path(DeviceTable.load(out))) if r["status"] == "ok"}
    here = drift(DeviceTable.load(out), networks=2)
    assert len(here.ratios) == 2 and set(here.ratios) <= stored and all(0 < r < 10 for r in here.ratios.values())
    stored_times_times(out, 4)
    slow_table = drift(DeviceTable.load(out), networks=2)
    assert slow_table.median < here.median / 2 and "faster than when the table was made" in slow_table.describe()
    assert set(hwlat.drift(out, networks=2).ratios) == set(slow_table.ratios)  # the API: the same networks
    assert main(["table", "drift", str(out), "--networks", "2"]) == 0
    said = capsys.readouterr().out
    assert "2 of t's own networks time now at" in said and f"--from {out} --out tables/t_now" in said
    meta = json.loads(out.with_suffix(".json").read_text())  # as if measured on another CPU: two machines
    meta["device"]["fingerprint"]["cpu_model"] = "Some Other CPU"
    out.with_suffix(".json").write_text(json.dumps(meta))
    assert main(["table", "drift", str(out), "--networks", "1"]) == 0
    said = capsys.readouterr()
    assert "measured on another machine (CPU 'Some Other CPU'" in said.err
    assert "it compares two machines; a table of this one: hwlat profile device --runtime onnxruntime" in said.out
    assert "--from" not in said.out  # a copy of it would not resume here
    assert "than the machine the table was made on" in said.out and "when the table was made" not in said.out
    import hwlat.api

    hwlat.api._WARNED.discard(str(out))
    with caplog.at_level("WARNING", logger="hwlat.api"):  # the API says what `hwlat predict` warns of, once
        hwlat.predict(0, out, space="nb201", as_profiled=True)
        hwlat.predict(1, out, space="nb201", as_profiled=True)
    assert caplog.text.count("measured on another machine (CPU 'Some Other CPU'") == 1
    t = DeviceTable.load(out)  # a --recalibrate begun and cut off before it timed a network: nothing counts yet
    t.update_meta(profile_device={**t.meta["profile_device"], "recalibrated": {"since": now(), "networks": 5}})
    with pytest.raises(HwlatError, match=r"a --recalibrate began.*has not finished.*--recalibrate` finishes it"):
        drift(DeviceTable.load(out))
    with pytest.raises(HwlatError, match="stores no network timings.*one kernel at a time"):
        drift(DeviceTable.load(Path(__file__).parent.parent / "hwlat/device_tables/tables/qemu_mps2_an386_board_int8_threads1"))


def test_rows_with_no_time_left_say_so_without_negative_minutes(complete_table, tmp_path, capsys):
    """A budget spent before the rows (a 1-minute run whose networks' first pass took it) printed
    'measuring the most informative for -0.1 min'."""
    from hwlat.device_profile import POOL_PER_SPACE, _Clock, _rows_stage
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    rt = get_runtime("onnxruntime", threads=1)
    out = copy_table(complete_table, tmp_path)
    header = out.with_suffix(".csv").read_text().splitlines()[0]
    out.with_suffix(".csv").write_text(header + "\n")  # no rows yet
    run = DeviceTable.load(out).meta["profile_device"]
    DeviceTable.load(out).update_meta(profile_device={**run, "stages": {"fusion": run["stages"]["fusion"]}})
    with DeviceTable.open(out, rt.device(), {}) as table:
        _rows_stage(rt, table, Protocol.preset("quick"), _Clock(0), ["nb201"], POOL_PER_SPACE, (3, 2), False)
    said = capsys.readouterr().out
    assert "measuring the most informative for 0.0 min" in said and " -0." not in said


def test_rows_cut_short_by_the_budget_are_measured_on_by_the_next_run(complete_table, tmp_path):
    """A run whose budget ends the rows' first pass short of its kernels records how many of how many it
    measured (the regressors price the rest: the stage is done); a plain rerun keeps the rows, and one
    given more time measures the rest, never re-measuring a stored row."""
    from hwlat.device_profile import POOL_PER_SPACE, _Clock, _row_pool, _rows_short, _rows_stage, table_stages
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    rt, quick = get_runtime("onnxruntime", threads=1), Protocol.preset("quick")
    for minutes in (0.02, 0.03, 0.05, 0.08):  # a budget that cuts pass 1 short with some rows: a loaded machine needs more
        (folder := tmp_path / f"run{minutes}").mkdir()
        out = copy_table(complete_table, folder)
        header = out.with_suffix(".csv").read_text().splitlines()[0]
        out.with_suffix(".csv").write_text(header + "\n")  # no rows yet
        table = DeviceTable.load(out)
        run = table.meta["profile_device"]
        table.update_meta(profile_device={**run, "stages": {"fusion": run["stages"]["fusion"]}})
        with DeviceTable.open(out, rt.device(), {}) as table:
            pool = _row_pool(rt, table, ["nb201"], POOL_PER_SPACE)
            note = _rows_stage(rt, table, quick, _Clock(minutes), ["nb201"], POOL_PER_SPACE, (3, 2), False)
            tried = sum(1 for k in pool if k in table)
        if tried:
            break
    assert 0 < tried < len(pool) and note is None
    assert _rows_short(DeviceTable.load(out))["unmeasured"] == len(pool) - tried
    assert f"{tried} of {len(pool)} kernels measured" in table_stages(DeviceTable.load(out))["rows"]  # `table show`
    before = rows_by_key(out)
    have = {DeviceTable.load(out).get(k).spec.op for k in before}
    uncovered = {k for k, (s, _) in pool.items() if s.op not in have}  # ops the short run reached no row of
    with DeviceTable.open(out, rt.device(), {}) as table:  # a rerun that is given no more time: rows kept
        assert _rows_stage(rt, table, quick, _Clock(4), ["nb201"], POOL_PER_SPACE, (3, 2), False, grow=False) is None
    kept = rows_by_key(out)
    assert {k: kept[k] for k in before} == before and set(kept) - set(before) <= uncovered  # only rows of new ops
    extra = COLUMNS.index("extra")
    twice = {k for k, r in before.items() if json.loads(r[extra] or "{}").get("passes") == 2}
    assert twice  # the short run's second pass measured some rows again
    with DeviceTable.open(out, rt.device(), {}) as table:
        note = _rows_stage(rt, table, quick, _Clock(4), ["nb201"], POOL_PER_SPACE, (3, 2), False)
        assert note is None and all(k in table for k in pool)
    after = rows_by_key(out)
    assert set(before) <= set(after) and len(after) > len(before)
    assert all(after[k] == before[k] for k in twice)  # a row measured twice is not measured again
    stages = DeviceTable.load(out).meta["profile_device"]["stages"]
    assert stages["rows pass 1"]["unmeasured"] == 0 and "rows" in stages
    assert table_stages(DeviceTable.load(out))["rows"] == f"{len(after)} measured"


def test_a_from_copy_refused_before_measuring_is_not_left_behind(complete_table, tmp_path):
    """`--from` with settings the source table was not measured with is refused by name, and its copy
    removed, so the corrected command is not told that --out exists."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError
    from hwlat.profilers.protocol import Protocol

    new = tmp_path / "from"
    kw = dict(minutes=1, threads=1, targets=["nb201"], fusion_patterns=PATTERNS, progress=False)
    for _ in range(2):  # the retry meets the same refusal, not "exists; choose a new --out"
        with pytest.raises(HwlatError) as err:  # another protocol: refused before copying
            hwlat.profile_device("onnxruntime", new, start_from=complete_table, protocol=Protocol.preset("default"), **kw)
        assert str(err.value).startswith(f"--from {complete_table}: measured with other settings than this run's")
        assert not [f.name for f in tmp_path.iterdir() if f.name.startswith("from.")]
    # A source without network times (nothing to recalibrate): refused after copying, and the copy removed.
    (source := tmp_path / "src").mkdir()
    source = copy_table(complete_table, source)
    networks_path(DeviceTable.load(source)).unlink()
    for _ in range(2):
        with pytest.raises(HwlatError) as err:
            hwlat.profile_device("onnxruntime", new, start_from=source, protocol=Protocol.preset("quick"), **kw)
        assert "no measured networks to time again" in str(err.value)
        assert not [f.name for f in tmp_path.iterdir() if f.name.startswith("from.")]


@pytest.mark.parametrize("damaged", [{"stages": "x"}, {"stages": {"rows pass 1": "x"}},
                                     {"stages": {"rows pass 1": {"pool": "9", "unmeasured": 3}}}])
def test_table_show_reads_a_damaged_record_of_the_rows_as_none(complete_table, tmp_path, damaged):
    """`table show` of a table whose profile_device record was damaged raised AttributeError (found by the fuzzer)."""
    from hwlat.device_profile import table_stages

    table = DeviceTable.load(copy_table(complete_table, tmp_path))
    table.update_meta(profile_device=damaged)
    assert table_stages(DeviceTable.load(table.path))["rows"].endswith(" measured")


def test_no_network_is_both_a_calibration_and_a_score_network(tmp_path):
    """The transformers are a fixed set of 21: the calibration's and the score's draws of them overlap
    (transformers:deit_ti@r224 is in both), and a network timed for the calibration is never scored."""
    from hwlat.device_profile import _Clock, _networks_stage
    from hwlat.nas.pool import transformer_networks
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    assert "transformers:deit_ti@r224" in set(transformer_networks(3, 1000)) & set(transformer_networks(3, 2000))
    rt = get_runtime("onnxruntime", threads=1)
    quick = Protocol.preset("quick")
    table = DeviceTable.open(tmp_path / "t", rt.device(), rt.table_meta(quick))
    with table:
        _networks_stage(rt, table, quick, _Clock(5), ["transformers"], 3, 3, False, first_pass_only=True)
    nets = read_networks(networks_path(table))
    roles = {role: {r["network"] for r in nets if r["role"] == role} for role in ("calibration", "score")}
    assert len(roles["calibration"]) == len(roles["score"]) == 3
    assert not roles["calibration"] & roles["score"]


def test_a_from_copy_cut_short_is_resumed_by_the_same_command(complete_table, tmp_path):
    """A `--from` run out of time (or killed) says "run the same command again": that command resumes the
    copy's recalibration instead of refusing the --out it made; a finished copy is still refused."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError
    from hwlat.profilers.protocol import Protocol

    new = tmp_path / "mine"
    kw = dict(start_from=complete_table, threads=1, protocol=Protocol.preset("quick"), targets=["nb201"],
              calibration_networks=3, score_networks=2, fusion_patterns=PATTERNS, progress=False)
    short = hwlat.profile_device("onnxruntime", new, minutes=0.3, **kw)  # under FIT_RESERVE_S: no network timed
    assert short.unfinished["networks"].startswith("0 of 3 calibration and 0 of 2 score networks measured")
    since = DeviceTable.load(new).meta["profile_device"]["recalibrated"]["since"]
    result = hwlat.profile_device("onnxruntime", new, minutes=5, **kw)
    assert result.complete, result.unfinished
    recalibrated = DeviceTable.load(new).meta["profile_device"]["recalibrated"]
    assert recalibrated["since"] == since and recalibrated["finished"]  # the same recalibration, finished
    with pytest.raises(HwlatError, match="exists; choose a new --out"):
        hwlat.profile_device("onnxruntime", new, minutes=5, **kw)


def test_fewer_targets_than_a_table_has_keep_its_targets(complete_table, tmp_path, capsys):
    """A run with --targets a subset of a finished table's kept only those as the table's targets, so the
    next run with the others "grew" the table to targets it had, measuring rows and networks again."""
    import hwlat
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    table = DeviceTable.load(out)
    both = ["nb201", "classic"]  # as if the table had been made for both
    table.update_meta(profile_device={**table.meta["profile_device"], "targets": both},
                      sampling={**table.meta["sampling"], "targets": both})
    hwlat.profile_device("onnxruntime", out, minutes=0.3, threads=1, protocol=Protocol.preset("quick"),
                         targets=["nb201"], calibration_networks=3, score_networks=2, fusion_patterns=PATTERNS,
                         progress=False)  # under FIT_RESERVE_S: measures nothing
    meta = DeviceTable.load(out).meta
    assert meta["profile_device"]["targets"] == meta["sampling"]["targets"] == both
    assert "the table keeps its targets nb201,classic" in capsys.readouterr().out


def test_drift_of_a_table_whose_networks_file_is_gone_names_the_file(complete_table, tmp_path):
    """It said "no `hwlat profile device` run timed any", under the warning that the run had timed them."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_profile import drift

    table = DeviceTable.load(copy_table(complete_table, tmp_path))
    networks_path(table).unlink()
    with pytest.raises(HwlatError, match=r"stores no network timings to compare \(.*t\.networks\.csv, where its run "
                                         r"timed them, is gone\)"):
        drift(table)


def test_an_unfinished_recalibration_is_not_compared_against_nor_shown_as_done(complete_table, tmp_path):
    """A --recalibrate cut short after timing some networks again: the calibration is still of the older
    times, so this machine's speed is not read against the new ones (it was, and `predict` scaled by a
    factor against times the calibration never saw), and `table show` says the recalibration is unfinished."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.table import now
    from hwlat.device_profile import drift

    out = copy_table(complete_table, tmp_path)
    t = DeviceTable.load(out)
    path = networks_path(t)
    rows = read_networks(path)
    since = now()
    t.update_meta(profile_device={**t.meta["profile_device"], "recalibrated": {"since": since, "networks": 5}})
    time.sleep(1.1)  # time stamps are to the second
    write_networks(path, rows + [{**rows[0], "pass": "1", "median_ms": str(2 * rows[0]["median_ms"]),
                                  "measured_at": now()}])  # one network timed again, in a slow spell
    with pytest.raises(HwlatError, match="has not finished"):
        drift(DeviceTable.load(out))
    assert table_stages(DeviceTable.load(out))["calibration"].endswith(
        f"networks timed again since {since} (--recalibrate, unfinished: the calibration is of the times before)")


def test_fresh_with_from_sets_the_old_out_aside_and_another_device_names_fresh(complete_table, tmp_path):
    """--fresh is "start the --out table again": with --from it was refused ("exists; choose a new --out"),
    and the refusal of --out of another device did not say that --fresh starts it again."""
    import hwlat
    from hwlat.device_tables.errors import TableError
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    (old := tmp_path / "old").mkdir()
    out = copy_table(complete_table, old)
    before = {f.name: f.read_bytes() for f in old.iterdir() if f.name.startswith("t.") and ".lock" not in f.name}
    hwlat.profile_device("onnxruntime", out, start_from=complete_table, fresh=True, minutes=0.3, threads=1,
                         protocol=Protocol.preset("quick"), targets=["nb201"], fusion_patterns=PATTERNS, progress=False)
    assert DeviceTable.load(out).meta["copied_from"]["table"] == complete_table.name
    aside = {f.name.split(".", 2)[2]: f.read_bytes() for f in old.iterdir() if f.name.startswith("t.old-")}
    assert aside == {name.split(".", 1)[1]: data for name, data in before.items()}  # nothing lost
    rt = get_runtime("onnxruntime", threads=2)
    with pytest.raises(TableError, match="holds device .*, or pass --fresh to start it again"):
        DeviceTable.open(out, rt.device(), rt.table_meta(Protocol.preset("quick")))


@pytest.mark.parametrize("option", [{"recalibrate": True}, {"remeasure": ["conv2d*"]}])
def test_recalibrate_or_remeasure_of_no_table_leaves_no_file(tmp_path, option):
    """A mistyped --out with --recalibrate or --remeasure was refused after an empty table had been made
    there (and a later `profile device --out` with another --protocol was then refused as a resume)."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError
    from hwlat.profilers.protocol import Protocol

    with pytest.raises(HwlatError, match=r"no table .*typo \(.*typo\.json not found\)"):
        hwlat.profile_device("onnxruntime", tmp_path / "typo", minutes=1, threads=1, protocol=Protocol.preset("quick"),
                             progress=False, **option)
    assert list(tmp_path.iterdir()) == []


def test_recalibrate_keeps_rows_a_budget_cut_short(complete_table, tmp_path):
    """--recalibrate given more --minutes than the run that made a table whose rows the budget cut short
    measured rows on (minutes of them, where the docs say the rows stay and it takes 1-3 minutes)."""
    import hwlat
    from hwlat.profilers.protocol import Protocol

    out = copy_table(complete_table, tmp_path)
    table = DeviceTable.load(out)
    run = table.meta["profile_device"]
    short = {**run["stages"]["rows pass 1"], "unmeasured": 5}  # as if the budget had ended the rows short
    table.update_meta(profile_device={**run, "minutes": 0.1, "stages": {**run["stages"], "rows pass 1": short}})
    rows = rows_by_key(out)
    hwlat.profile_device("onnxruntime", out, recalibrate=True, minutes=0.3, threads=1, protocol=Protocol.preset("quick"),
                         targets=["nb201"], calibration_networks=3, score_networks=2, fusion_patterns=PATTERNS,
                         progress=False)
    assert rows_by_key(out) == rows
    run = DeviceTable.load(out).meta["profile_device"]
    assert run["minutes"] == 0.1 and run["stages"]["rows pass 1"]["unmeasured"] == 5  # a plain run measures on


def test_the_fusion_verdicts_are_printed_without_progress_bars(tmp_path, capsys):
    """The table of fusion verdicts was printed only with progress bars, so not where standard error is a
    file or a pipe (`hwlat profile device ... > log 2>&1`), where hwlat draws none: only its count was left."""
    from hwlat.device_profile import _Clock, _fusion_stage
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    rt, protocol = get_runtime("onnxruntime", threads=1), Protocol.preset("quick")
    with DeviceTable.open(tmp_path / "t", rt.device(), rt.table_meta(protocol)) as table:
        _fusion_stage(rt, table, protocol, _Clock(1), ["add+relu"], progress=False)
    out = capsys.readouterr().out
    assert re.search(r"^add\+relu .*(FUSED|apart)", out, re.M), out


def test_the_command_named_to_complete_a_table_resumes_it_with_its_settings_and_targets(tmp_path):
    """The command named to complete a table left out its runtime's settings (--opt-level basic: refused
    as another device) and its --targets (the defaults grew a finished nb201 table to every space)."""
    import shlex

    out = tmp_path / "basic"
    rc, log = run_until(["profile", "device", *TINY, "--opt-level", "basic", "--out", str(out), "--minutes", "0.001"],
                        None)
    assert rc == 3, log
    rc, log = run_until(["predict", "--table", str(out), "--space", "nb201", "--arch", "1"], None)
    command = re.search(r"`hwlat (profile device [^`]*)` measures them", log).group(1)
    assert "--opt-level basic" in command and "--targets nb201" in command, command
    rc, log = run_until([*shlex.split(command), "--minutes", "0.001", "--no-progress"], None)
    assert rc == 3 and "unfinished: fusion" in log, log  # resumed, not refused
    assert DeviceTable.load(out).meta["profile_device"]["targets"] == ["nb201"]


def test_litert_int8_targets_the_cnns_by_default(tmp_path):
    """At int8 LiteRT runs no ViT or transformer (no full-integer LayerNorm or Softmax), yet `profile device
    --precision int8` chose its rows and networks for them too; the command named to complete such a table
    added --targets for the CNNs it was made for."""
    from hwlat.device_profile import profile_command

    out = tmp_path / "int8"
    rc, log = run_until(["profile", "device", "--runtime", "litert", "--precision", "int8", "--protocol", "quick",
                         "--no-progress", "--out", str(out), "--minutes", "0.001"], None)
    assert rc == 3, log
    table = DeviceTable.load(out)
    assert table.meta["profile_device"]["targets"] == ["nb201", "fbnet", "ofa", "classic"]
    assert "--targets" not in profile_command(table), profile_command(table)


def test_a_from_table_of_other_settings_or_without_networks_is_refused_naming_what_to_give(tmp_path):
    """--from a table of --opt-level basic said "give the --runtime, --threads and --precision it was measured
    with" (none of which differed); and --from a table that measured no networks was refused as a
    "--recalibrate" the user never gave, "run without --recalibrate first"."""
    import shlex

    src, out = tmp_path / "basic", tmp_path / "copy"
    rc, log = run_until(["profile", "device", *TINY, "--opt-level", "basic", "--out", str(src), "--minutes", "0.001"],
                        None)
    assert rc == 3, log
    rc, log = run_until(["profile", "device", "--runtime", "onnxruntime", "--from", str(src), "--out", str(out)], None)
    assert rc == 1 and "--opt-level basic" in log and "--threads and --precision" not in log, log
    command = re.search(r"`hwlat (profile device [^`]*)`", log).group(1)
    assert command.endswith(f"--from {src} --out {out}"), command
    rc, log = run_until(shlex.split(command), None)  # the settings named are taken: on to the next check
    assert rc == 1 and f"--from {src}: it has no measured networks" in log and "--recalibrate" not in log, log
    assert not list(tmp_path.glob("copy*"))


def test_the_speed_spread_is_the_standard_deviation_of_the_ratios_logarithms():
    from hwlat.device_profile import Speed

    even = Speed("t", ((0.0, {"a": 1.2, "b": 1.2}), (60.0, {"c": 1.2})))
    assert even.factor == pytest.approx(1.2) and even.spread == pytest.approx(0.0, abs=1e-12)
    uneven = Speed("t", ((0.0, {"a": 1.0, "b": 1.5}), (60.0, {"c": 2.0})))
    assert uneven.spread == pytest.approx(np.std(np.log([1.0, 1.5, 2.0]), ddof=1))
    assert Speed("t", ((0.0, {"a": 1.0, "b": 2.0}),)).spread == 0.0  # two ratios: too few to tell a spread


def test_from_with_fresh_says_where_the_old_copy_went(complete_table, tmp_path, caplog):
    """`profile device --from X --out Y --fresh` set Y's old files aside in silence, while `--fresh` on
    a table of one's own names them (both now through `set_aside`)."""
    import logging

    from hwlat.device_profile import _copy_table
    from hwlat.profilers.runtimes import get_runtime

    runtime, meta, out = get_runtime("onnxruntime", threads=1), DeviceTable.load(complete_table).meta, tmp_path / "mine"
    assert _copy_table(complete_table, out, runtime, meta) == out
    with caplog.at_level(logging.WARNING):
        assert _copy_table(complete_table, out, runtime, meta, fresh=True) == out
    assert f"{out}: starting again; the old files are {out}.old-" in caplog.text
    assert (tmp_path / "mine.json").exists() and list(tmp_path.glob("mine.old-*.json"))
