"""Output hygiene for scripts and CI: what a command writes to a pipe, a log file or a terminal that
cannot show every character."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hwlat(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          errors="replace", timeout=120)


def test_an_ascii_only_output_gets_the_plus_minus_escaped_not_a_traceback(tmp_path):
    """`±` in `table show` and `predict` ended the command in a UnicodeEncodeError on an ASCII output."""
    proc = hwlat("table", "show", "cpu_onnxruntime_fp32_threads1", cwd=tmp_path, PYTHONIOENCODING="ascii")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "\\xb1" in proc.stdout


def test_version_into_a_closed_pipe_is_quiet(tmp_path):
    """`hwlat --version | true`: the fast path of --version printed a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before hwlat writes
    try:
        proc = subprocess.run([sys.executable, "-m", "hwlat", "--version"], cwd=tmp_path, stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_a_redirected_standard_error_gets_no_progress_bar(tmp_path):
    """A CI log (stderr not a terminal) filled with a bar redrawn ten times a second, one endless line."""
    proc = hwlat("predict", "--space", "nb201", "--archs", "random:20", "--table", "cpu_onnxruntime_fp32_threads1",
                 "--as-profiled", "--out", "p.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "%|" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
    assert "p.csv: 20 architectures predicted" in proc.stdout  # what was done is still said


def test_ctrl_c_while_workers_predict_says_interrupted_without_their_tracebacks(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) on `predict --archs` with --jobs 2: every forked worker
    printed 'Process ForkPoolWorker-N:' and a traceback of its own under 'hwlat: interrupted'."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "hwlat", "predict", "--space", "nb201", "--archs", "random:15000",
                             "--table", "cpu_onnxruntime_fp32_threads1", "--as-profiled", "--jobs", "2", "--out", "p.csv"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120

    def rows() -> int:  # --out is written to a temporary file beside it and renamed at the end
        return sum(f.read_text().count("\n") for f in tmp_path.glob(".p.csv.tmp*"))

    while proc.poll() is None and time.monotonic() < deadline and rows() < 200:
        time.sleep(0.05)  # the workers' rows are arriving
    assert proc.poll() is None, "predict ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "ForkPoolWorker" not in err and "Traceback" not in err, err
    assert err.rstrip().endswith("hwlat: interrupted")
    assert not list(tmp_path.iterdir())  # no p.csv cut short, and no temporary file left


def test_verbose_after_the_command_counts_as_before_it():
    """`hwlat table list -v` was refused: 'unrecognized arguments: -v' (only `hwlat -v table list` worked)."""
    from hwlat.cli import build_parser

    for argv, level in ((["table", "list", "-vv"], 2), (["-v", "table", "list"], 1), (["table", "list"], 0),
                        (["predict", "--classic", "resnet18", "-v", "--table", "t"], 1)):
        assert build_parser(argv).parse_args(argv).verbose == level, argv


def test_an_output_over_a_tables_own_file_is_refused_and_the_table_kept(tmp_path):
    """`adapt suggest --out measured.csv` (or predict --out, search/profile model --json) wrote over the CSV of
    the arch table `profile archs --out measured` had measured: its latencies were gone, without a word; and
    `adapt fit --out measured` over its metadata (measured.json)."""
    from hwlat.device_tables.device import Device
    from hwlat.device_tables.measurement import Measurement
    from hwlat.device_tables.ops import OpSpec
    from hwlat.device_tables.table import DeviceTable

    t = DeviceTable(Device.make("cpu", "onnxruntime", "fp32", fingerprint={"cpu_model": "test"}, threads=1))
    t.append(OpSpec.make("relu", (1, 4, 8, 8)), Measurement.from_samples([0.01, 0.011, 0.012]))
    t.save(tmp_path / "measured")
    (tmp_path / "ms.csv").write_text("nb201_index,ms\n" + "".join(f"{i},{1 + i / 10}\n" for i in range(5)))
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for args, file in ((("adapt", "suggest", "--space", "nb201", "-n", "3", "--out", "measured.csv"), "measured.csv"),
                       (("predict", "--space", "nb201", "--archs", "random:2", "--table", "cpu_onnxruntime_fp32_threads1",
                         "--as-profiled", "--out", "measured.csv"), "measured.csv"),
                       (("adapt", "fit", "--space", "nb201", "--measurements", "ms.csv", "--out", "measured"), "measured.json")):
        proc = hwlat(*args, cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{file} is a file of the table measured" in proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept
    assert hwlat("adapt", "suggest", "--space", "nb201", "-n", "3", "--out", "other.csv", cwd=tmp_path).returncode == 0


def test_an_interrupted_profile_model_does_not_claim_to_have_stored_anything(tmp_path, capsys):
    """Ctrl-C in `profile model` (which writes nothing until it ends) said 'what was measured is stored: run the
    same command again to go on where it stopped', as the profile commands that store into --out do."""
    import signal

    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from hwlat.cli import main

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8, 16, 16]) for n in "xy")
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8, 3, 3], np.ones(8 * 8 * 9, dtype="float32"))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    onnx.save(helper.make_model(helper.make_graph([conv], "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "m.onnx")

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt

    was = signal.signal(signal.SIGALRM, ctrl_c)
    signal.setitimer(signal.ITIMER_REAL, 1.0)  # wherever it falls, the command is running: main handles it
    try:
        code = main(["profile", "model", str(tmp_path / "m.onnx"), "--runtime", "onnxruntime", "--runs", "100000000"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, was)
    err = capsys.readouterr().err
    assert code == 130 and err.rstrip().endswith("hwlat: interrupted"), err


def test_version_onto_a_full_device_is_one_error_line(tmp_path):
    """`hwlat --version > /dev/full` ended in an OSError traceback, where other commands say one line and exit 1."""
    if not os.path.exists("/dev/full"):
        import pytest

        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "hwlat", "--version"], cwd=tmp_path, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "hwlat: error: [Errno 28] No space left on device"


def test_an_output_beside_json_that_is_no_table_is_written(tmp_path):
    """`profile model m.onnx --json prof.json`, run again, was refused as 'a file of the table prof': the
    breakdown names a "device", which was all the check looked for (so was a CSV beside such a JSON)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    for _ in range(2):
        proc = hwlat("profile", "model", "m.onnx", "--protocol", "quick", "--json", "prof.json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    (tmp_path / "prof.csv").write_text("nb201_index\n1\n")  # last run's suggestions, beside the breakdown
    proc = hwlat("adapt", "suggest", "--space", "nb201", "-n", "3", "--out", "prof.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_an_output_replaced_whole_keeps_its_permissions(tmp_path):
    """predict --archs --out replaces the file at the end (a temporary file renamed): a private 0600 output came
    back 0644, readable by everyone."""
    out = tmp_path / "pred.csv"
    out.write_text("last run\n")
    out.chmod(0o600)
    proc = hwlat("predict", "--space", "nb201", "--archs", "random:2", "--table", "cpu_onnxruntime_fp32_threads1",
                 "--as-profiled", "--out", "pred.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() != "last run\n" and out.stat().st_mode & 0o777 == 0o600


def test_an_output_over_a_file_a_table_keeps_beside_it_is_refused(tmp_path):
    """Only NAME.csv and NAME.json were looked at: `--out T.networks.csv` wrote over the whole networks a
    `profile device` run had timed (an arch table's T.stats.csv likewise)."""
    import shutil

    shipped = ROOT / "hwlat" / "device_tables" / "tables" / "cpu_onnxruntime_fp32_threads1"
    for suffix in (".csv", ".json", ".networks.csv"):
        shutil.copy(shipped.with_name(shipped.name + suffix), tmp_path / f"T{suffix}")
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = hwlat("adapt", "suggest", "--space", "nb201", "-n", "3", "--out", "T.networks.csv", cwd=tmp_path)
    assert proc.returncode == 1 and "T.networks.csv is a file of the table T" in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept


def test_an_output_over_an_adapted_predictors_file_is_refused_but_a_predictor_saved_again_is_written(tmp_path):
    """`profile model --json board.json` (or any other --out/--json) wrote over an adapted predictor's
    board.json and left a bare board.npz; `adapt fit --out board` over it is a new fit, written."""
    import hwlat as api

    pred = api.adapt("nb201", [0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    api.save_predictor(pred, tmp_path / "board")
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name in ("board.json", "board.npz"):
        proc = hwlat("adapt", "suggest", "--space", "nb201", "-n", "3", "--out", name, cwd=tmp_path)
        assert proc.returncode == 1 and f"{name} is a file of the adapted predictor board" in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept
    api.save_predictor(api.adapt("nb201", [0, 1, 2, 3], [2.0, 2.0, 3.0, 5.0]), tmp_path / "board")
    assert (tmp_path / "board.npz").read_bytes() != kept["board.npz"]


def test_the_python_api_draws_no_progress_bar_into_a_redirected_standard_error(tmp_path):
    """A script of the API (`progress=True` by default) piped to a log drew its bars there, as commands no longer do."""
    script = ("import hwlat; hwlat.profile_archs('nb201', '1,2', 'm', protocol='quick', passes=1)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "%|" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
    assert (tmp_path / "m.csv").read_text().count("\n") == 3  # the header and both measured
