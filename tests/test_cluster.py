"""Cluster profiling on a real local Ray cluster: a head and `hwlat worker` processes on this machine.

Each worker advertises its own device running a real runtime (ONNX Runtime, else PyTorch). The
tests check routing by device, one measurement at a time per device, a worker killed mid-sweep,
a device that disappears, and a driver killed and restarted. They need Ray (`hwlat[cluster]`).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hwlat.device_tables.table import DeviceTable
from hwlat.profilers.cluster.worker import ClusterError, DeviceAd
from hwlat.profilers.protocol import Protocol

ROOT = Path(__file__).resolve().parent.parent

# Tasks of roughly 20-70 ms each: long enough to kill things mid-sweep, short enough for a fast test.
TEST_PROTOCOL = Protocol(warmup_runs=1, warmup_s=0.02, min_runs=5, max_runs=20, block_runs=5, max_time_s=0.02, remeasure=0)
SWEEP = """\
name: cluster-test
ops:
  - {op: [conv2d, conv2d+relu], c: [32, 48, 64], hw: [32, 40], cout: same, kernel: [3, 5], stride: 1}
  - {op: [dwconv2d+bn+relu6], c: [64, 96], hw: [28, 32], kernel: [3, 5, 7], stride: 1}
  - {op: linear, c: [256, 512], cout: [256, 512]}
"""


# ---- device specs (no cluster needed) ---------------------------------------------------------------
def test_device_spec_parsing():
    ad = DeviceAd.parse("cpu-ort-1=onnxruntime:threads=2:opt_level=basic")
    assert (ad.name, ad.runtime, dict(ad.settings)) == ("cpu-ort-1", "onnxruntime", {"threads": 2, "opt_level": "basic"})
    assert ad.resource == "hwlat-device:cpu-ort-1"
    assert DeviceAd.parse(ad.text()) == ad
    board = DeviceAd.parse("board0=board:qemu:mps2-an386")
    assert dict(board.settings) == {"board": "qemu:mps2-an386"}
    assert DeviceAd.parse(board.text()) == board == DeviceAd.parse("board0=board:board=qemu:mps2-an386")  # as --list shows it
    ads = DeviceAd.parse_list("a=torch:threads=1,b=board:serial:/dev/ttyACM0,baud=115200,c=litert:xnnpack=off")
    assert [a.name for a in ads] == ["a", "b", "c"]
    assert dict(ads[1].settings) == {"board": "serial:/dev/ttyACM0,baud=115200"}
    assert dict(ads[2].settings) == {"xnnpack": False}


@pytest.mark.parametrize("bad, words", [
    ("onnxruntime:threads=1", "NAME=RUNTIME"),
    ("x=nosuchruntime", "unknown runtime"),
    ("bad name=torch", "name"),
    ("x=torch:oops", "key=value"),
    ("x=onnxruntime:threads=two", "threads='two' must be a whole number"),
    ("x=onnxruntime:threads=0", "threads=0 must be"),
])
def test_device_spec_errors_say_what_to_write(bad, words):
    with pytest.raises(ClusterError, match=words):
        DeviceAd.parse(bad)


def test_auto_with_a_stopped_cluster_says_so_in_seconds(tmp_path, monkeypatch):
    """`--cluster auto` (and `worker --list`) after the head stopped: Ray's own client retried for minutes
    on the address it last wrote; the check reads that address and says it no longer answers."""
    from hwlat.profilers.cluster.driver import _check_reachable

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ClusterError, match="no Ray cluster was started on this machine"):
        _check_reachable("auto")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")  # the discard port: nothing listens
    with pytest.raises(ClusterError, match=r"last started \(127.0.0.1:9\) no longer answers"):
        _check_reachable("auto", timeout_s=2.0)


def test_auto_looks_where_ray_start_wrote_the_address_under_tmpdir(tmp_path, monkeypatch):
    """With TMPDIR set (usual on shared servers) `ray start` writes $TMPDIR/ray/ray_current_cluster, as
    Ray's own `auto` reads it; `--cluster auto` looked in /tmp/ray and said no cluster was started here."""
    from hwlat.profilers.cluster.driver import _check_reachable

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")  # the discard port: nothing listens
    with pytest.raises(ClusterError, match=r"last started \(127.0.0.1:9\) no longer answers"):
        _check_reachable("auto", timeout_s=2.0)


def test_the_fleet_tutorial_ray_args_give_ray_start_valid_json():
    """The tutorial's --ray-args='--system-config={"health_check_period_ms":1000,...}' lost its double
    quotes in the split of --ray-args, and `ray start` refused it ('Invalid value for --system-config')."""
    import json
    import re
    import shlex

    text = (ROOT / "docs" / "tutorials" / "fleet.md").read_text()
    shown = re.search(r"`(--ray-args=[^`]*system-config[^`]*)`", text).group(1)
    (value,) = [a.split("=", 1)[1] for a in shlex.split(shown)]  # what the shell hands hwlat
    args = shlex.split(value)  # what RayNode.start hands `ray start`
    config = json.loads(args[0].removeprefix("--system-config="))
    assert config == {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                      "health_check_timeout_ms": 1000}


def test_head_only_worker_options_with_address_are_refused():
    """`hwlat worker --address A --temp-dir D` (or --port, --dashboard) dropped them without a word."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    proc = subprocess.run([sys.executable, "-m", "hwlat", "worker", "--address", "127.0.0.1:9", "--port", "7000",
                           "--temp-dir", "/tmp/x"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("hwlat: error: --port, --temp-dir: head only; a worker joining --address 127.0.0.1:9 "
                                   "takes the head's (drop them, or drop --address to start a head)")

def test_auto_follows_ray_address_as_ray_does(tmp_path, monkeypatch):
    """With RAY_ADDRESS set (Ray's way to name a cluster), `--cluster auto` said no cluster was started here."""
    from hwlat.profilers.cluster.driver import _check_reachable

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    with pytest.raises(ClusterError, match="nothing answers at 127.0.0.1:9"):
        _check_reachable("auto", timeout_s=2.0)

def test_worker_joining_a_head_that_is_not_running_says_so_in_seconds():
    """It waited 120 s for `ray start` and then printed a line of Ray's log."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    proc = subprocess.run([sys.executable, "-m", "hwlat", "worker", "--address", "127.0.0.1:9",
                           "--devices", "a=onnxruntime:threads=1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["hwlat: error: nothing answers at 127.0.0.1:9 (Connection refused); start "
                                                "the head with `hwlat worker` on that host, or check the address and the firewall"]

def test_a_runtime_that_does_not_start_on_the_worker_is_named_with_its_own_message():
    """A device actor whose __init__ raised: Ray's ActorDiedError keeps the traceback as text, and the
    worker printed its first line (ANSI colours, pid, actor id) instead of the runtime's message."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    import traceback

    from ray.exceptions import ActorDiedError, RayTaskError

    from hwlat.profilers.board.protocol import BoardError
    from hwlat.profilers.cluster.worker import _reason

    try:
        raise BoardError("cannot open serial port '/dev/ttyNOPE': no such file; check the device path")
    except BoardError as exc:
        died = ActorDiedError(RayTaskError("DeviceActor.__init__", traceback.format_exc(), exc,
                                           proctitle="ray::DeviceActor.__init__", pid=1, ip="127.0.0.1"))
    assert _reason(died) == "BoardError: cannot open serial port '/dev/ttyNOPE': no such file; check the device path"

@pytest.mark.parametrize("command", [("ops", "--sweep", "quick"), ("archs", "--space", "nb201", "--archs", "0:2")])
def test_precision_given_with_cluster_is_said_to_be_ignored(tmp_path, command):
    """`profile ops --cluster --precision fp16` dropped --precision without a word (archs said it for all but fp32)."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", *command, "--runtime", "torch", "--precision", "fp32",
                           "--cluster", "127.0.0.1:9", "--out", "t"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert "hwlat: note: --precision ignored with --cluster: a device's settings are its worker's --devices spec" in proc.stderr

@pytest.mark.parametrize("command", [("ops", "--sweep", "quick"), ("archs", "--space", "nb201", "--archs", "0:2")])
def test_a_table_file_name_as_cluster_out_is_refused(tmp_path, command):
    """`--cluster ... --out t/ort.csv`, as for a local run, made a folder named ort.csv holding t/ort.csv/NAME.csv."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", *command, "--runtime", "onnxruntime",
                           "--cluster", "127.0.0.1:9", "--out", "t/ort.csv"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "hwlat: error: --out t/ort.csv: with --cluster, --out is a folder that gets one table per device, named "
        "after it; pass --out t/ort")
    assert not (tmp_path / "t").exists()


def test_duplicate_device_names_are_refused():
    with pytest.raises(ClusterError, match="given twice"):
        DeviceAd.parse_list("a=torch,a=onnxruntime")


# ---- the local lab ----------------------------------------------------------------------------------
def _runtime() -> str:
    from hwlat.profilers.runtimes import get_runtime

    for name in ("onnxruntime", "torch"):
        try:
            get_runtime(name, threads=1)
            return name
        except Exception:  # not built yet or not installed here
            continue
    pytest.skip("neither the onnxruntime nor the torch runtime runs here")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    import ray

    from hwlat.profilers.cluster.driver import connect, disconnect
    from hwlat.profilers.cluster.local import LocalLab

    runtime = _runtime()
    root = tmp_path_factory.mktemp("lab")
    lab = LocalLab(root / "logs")
    try:
        lab.start_head()
        # Worker A has two devices (they take turns: one host), worker B one.
        lab.a = lab.start_worker(f"ort-a={runtime}:threads=1,ort-a2={runtime}:threads=1")
        lab.b = lab.start_worker(f"ort-b={runtime}:threads=1")
        lab.runtime = runtime
        lab.sweep = root / "sweep.yaml"
        lab.sweep.write_text(SWEEP)
        connect(lab.address)
        yield lab
    finally:
        if ray.is_initialized():
            disconnect()
        lab.close()


def _specs(lab):
    from hwlat.profilers.runtimes import get_runtime
    from hwlat.profilers.sweeps import load_sweep

    return get_runtime(lab.runtime, threads=1).accepts(load_sweep(lab.sweep))


def _csv_keys(path: Path) -> list[str]:
    with open(path.with_suffix(".csv"), newline="") as f:
        return [row[0] for row in list(csv.reader(f))[1:] if row]


def _csv_lines(path: Path) -> dict[str, str]:
    """key -> the row's exact text."""
    lines = [line for line in path.with_suffix(".csv").read_text().splitlines()[1:] if line]
    return {next(csv.reader([line]))[0]: line for line in lines}


def _wait_rows(path: Path, n: int, timeout_s: float = 120.0, alive=lambda: True) -> None:
    csv_path = path.with_suffix(".csv")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if csv_path.exists() and len(_csv_keys(path)) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{csv_path} did not reach {n} rows")


def _assert_complete_once(table_path: Path, specs) -> None:
    keys = _csv_keys(table_path)
    dupes = [k for k, c in collections.Counter(keys).items() if c > 1]
    assert not dupes, f"rows written twice: {dupes}"
    assert set(keys) == {s.key for s in specs}
    assert len(DeviceTable.load(table_path)) == len(specs)  # loads: valid, no repeated key


def _sweep_until_rows(specs, tmp_path: Path, device_timeout_s: float):
    """Start the two-device sweep in a thread and return (thread, box) once ort-b holds 3 rows;
    the sweep's result lands in box["result"]."""
    from hwlat.profilers.cluster.driver import profile_ops_cluster

    box = {}
    driver = threading.Thread(target=lambda: box.update(result=profile_ops_cluster(
        specs, tmp_path, devices=["ort-a", "ort-b"], protocol=TEST_PROTOCOL, address=None, progress=False,
        device_timeout_s=device_timeout_s)), daemon=True)
    driver.start()
    _wait_rows(tmp_path / "ort-b", 3, alive=driver.is_alive)
    return driver, box


def _devices():
    from hwlat.profilers.cluster.worker import list_devices

    infos, silent = list_devices(timeout_s=30)
    return infos


def _live(pids) -> list[int]:
    """Those of `pids` still running (a zombie waiting for its parent is not running)."""
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in "ZX":
            out.append(p)
    return out


@pytest.mark.slow
def test_routes_each_task_to_its_device_one_at_a_time(lab, tmp_path):
    from hwlat.profilers.cluster.driver import profile_ops_cluster

    specs = _specs(lab)
    infos = _devices()
    assert {"ort-a", "ort-a2", "ort-b"} <= set(infos)
    result = profile_ops_cluster(specs, tmp_path, devices=["ort-a", "ort-a2", "ort-b"], protocol=TEST_PROTOCOL,
                                 address=None, progress=False)
    assert result.ok, result.problems()
    by_device = collections.defaultdict(list)
    for r in result.records:
        by_device[r.device].append(r)
    for name in ("ort-a", "ort-a2", "ort-b"):
        recs = by_device[name]
        # Routing: every task of a device ran in that device's actor, on the node that advertises it.
        assert {(r.node_id, r.pid) for r in recs} == {(infos[name]["node_id"], infos[name]["pid"])}
        assert sorted(r.key for r in recs) == sorted(s.key for s in specs)
        # One at a time: the measuring intervals of one device never overlap.
        recs.sort(key=lambda r: r.started)
        for prev, nxt in zip(recs, recs[1:]):
            assert nxt.started >= prev.finished, f"{name}: {nxt.key} started before {prev.key} finished"
        table = DeviceTable.load(tmp_path / name)
        _assert_complete_once(tmp_path / name, specs)
        # The table carries the fingerprint the worker published.
        assert table.device.fingerprint == infos[name]["device"]["fingerprint"]
        assert table.meta["cluster"]["device"] == name
    assert infos["ort-a"]["node_id"] != infos["ort-b"]["node_id"]
    # Devices of one worker take turns (one host); devices of different workers run at the same time.
    a_and_a2 = sorted(by_device["ort-a"] + by_device["ort-a2"], key=lambda r: r.started)
    for prev, nxt in zip(a_and_a2, a_and_a2[1:]):
        assert nxt.started >= prev.finished
    span = {n: (min(r.started for r in by_device[n]), max(r.finished for r in by_device[n])) for n in ("ort-a", "ort-b")}
    assert span["ort-a"][0] < span["ort-b"][1] and span["ort-b"][0] < span["ort-a"][1]
    # A second run finds everything measured.
    again = profile_ops_cluster(specs, tmp_path, devices=["ort-a"], protocol=TEST_PROTOCOL, address=None, progress=False)
    assert (again.runs["ort-a"].measured, again.runs["ort-a"].skipped) == (0, len(specs))


@pytest.mark.slow
def test_profile_archs_runs_whole_architectures_per_device(lab, tmp_path):
    pytest.importorskip("hwlat.nas.spaces", reason="needs the search spaces (hwlat.nas.spaces)")
    from hwlat.cli import build_parser

    args = build_parser().parse_args(["profile", "archs", "--space", "nb201", "--runtime", lab.runtime, "--archs", "0:4",
                                      "--protocol", "quick", "--cluster", lab.address, "--device", "ort-a,ort-b",
                                      "--out", str(tmp_path), "--no-progress"])
    assert args.func(args) == 0
    for name in ("ort-a", "ort-b"):
        with open(tmp_path / f"{name}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        column = list(rows[0])[-1]
        assert column.startswith(f"cpu/{lab.runtime}/")
        assert sorted(int(r["nb201_index"]) for r in rows) == [0, 1, 2, 3]
        assert all(float(r[column]) > 0 for r in rows)


@pytest.mark.slow
def test_ray_client_address(lab, tmp_path):
    ip = lab.address.rsplit(":", 1)[0]
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text("name: tiny\nops:\n  - {op: relu, c: [4, 8, 16], hw: 8}\n")
    done = subprocess.run([sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", lab.runtime, "--sweep", str(sweep),
                           "--protocol", "quick", "--cluster", f"ray://{ip}:{lab.client_port}", "--device", "ort-b",
                           "--out", str(tmp_path / "t"), "--no-progress"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(DeviceTable.load(tmp_path / "t" / "ort-b")) == 3


@pytest.mark.slow
def test_driver_killed_resumes_from_the_table(lab, tmp_path):
    specs = _specs(lab)
    out = tmp_path / "tables"
    cmd = [sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", lab.runtime, "--sweep", str(lab.sweep),
           "--protocol", "quick", "--cluster", lab.address, "--device", "ort-a", "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_rows(out / "ort-a", 3, alive=lambda: first.poll() is None)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver only: the device's actor lives on
        first.wait()
    before = _csv_lines(out / "ort-a")
    assert 3 <= len(before) < len(specs), "the driver finished before it could be killed"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(before)} already there" in done.stdout
    _assert_complete_once(out / "ort-a", specs)
    after = _csv_lines(out / "ort-a")
    assert {k: after[k] for k in before} == before  # rows of the killed run are kept as they were


@pytest.mark.slow
def test_driver_stopped_by_sigterm_says_what_was_kept_as_on_ctrl_c(lab, tmp_path):
    """`kill PID` (a batch system's time limit) of a --cluster driver: Ray's handler, set by ray.init,
    replaced hwlat's, so it exited 15 with a C++ stack dump ('*** SIGTERM received') and no word of
    what was kept, where a local run says 'hwlat: interrupted' and exits 130."""
    out = tmp_path / "tables"
    cmd = [sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", lab.runtime, "--sweep", str(lab.sweep),
           "--protocol", "quick", "--cluster", lab.address, "--device", "ort-b", "--out", str(out), "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True)
    try:
        _wait_rows(out / "ort-b", 3, alive=lambda: first.poll() is None)
        os.kill(first.pid, signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 130, output
    assert "hwlat: interrupted; what was measured is stored" in output
    assert "SIGTERM received" not in output
    assert DeviceTable.load(out / "ort-b").meta["cluster"]["runs"][-1]["status"] == "interrupted"


@pytest.mark.slow
def test_clock_cpu_on_a_device_it_cannot_time_is_refused_before_its_table_is_made(lab, tmp_path):
    """A local run refuses --clock cpu on threads=2 before measuring; on the cluster every call failed and was
    retried, and the device stopped leaving an empty table of clock cpu, so the rerun with --clock wall
    was refused in turn ('measured with other settings ... pass --fresh')."""
    w = lab.start_worker(f"two={lab.runtime}:threads=2")
    try:
        out = tmp_path / "tables"
        proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", lab.runtime, "--sweep",
                               str(lab.sweep), "--protocol", "quick", "--clock", "cpu", "--cluster", lab.address,
                               "--device", "two", "--out", str(out), "--no-progress"],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    finally:
        lab.stop_worker(w)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"hwlat: error: device two (cpu/{lab.runtime}/fp32/threads=2): --clock cpu times the calling thread only, "
        "which is not this device's latency (threads=1 on a CPU runtime only); measure it with --clock wall (or auto)"]
    assert not (out / "two.csv").exists() and not (out / "two.json").exists()


@pytest.mark.slow
def test_a_worker_stopped_mid_measurement_leaves_no_temp_folder_of_its_runtime(lab, tmp_path):
    """Ctrl-C of `hwlat worker` kills its device actors at once: ONNX Runtime's profile folder of the
    measurement it cut short (hwlat_ort_*, one per op it measures) stayed in /tmp, one more each time."""
    if lab.runtime != "onnxruntime":
        pytest.skip("the temp folder checked is ONNX Runtime's")
    from hwlat.profilers.cluster.driver import profile_ops_cluster
    from hwlat.profilers.sweeps import load_sweep

    def left() -> list[str]:
        return [os.path.join(d, n) for d, dirs, _ in os.walk(lab.temp_dir) for n in dirs if n.startswith("hwlat_ort_")]

    assert not left()
    (tmp_path / "big.yaml").write_text("name: big\nops:\n  - {op: conv2d, c: 256, hw: 56, cout: same, kernel: 3, stride: 1}\n")
    w = lab.start_worker("slow=onnxruntime:threads=1")
    box = {}
    driver = threading.Thread(target=lambda: box.update(result=profile_ops_cluster(
        load_sweep(tmp_path / "big.yaml"), tmp_path / "t", devices=["slow"], protocol=TEST_PROTOCOL, address=None,
        progress=False, device_timeout_s=1)), daemon=True)
    driver.start()
    try:
        deadline = time.monotonic() + 120
        while not left() and driver.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert left(), "the measurement did not start"
    finally:
        lab.stop_worker(w)
        driver.join(timeout=120)
    assert box["result"].runs["slow"].status == "lost"
    assert not left()


@pytest.mark.slow
def test_a_named_device_that_does_not_answer_at_the_start_is_said_to_be_waited_for(lab, tmp_path):
    """A device whose worker died before the run (its actor still named, restarting): the driver waited
    --device-timeout (300 s by default) without a word before saying it did not answer."""
    from hwlat.profilers.cluster.worker import withdraw

    w = lab.start_worker(f"gone={lab.runtime}:threads=1")
    lab.kill_worker(w)
    try:
        proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", lab.runtime, "--sweep",
                               str(lab.sweep), "--protocol", "quick", "--cluster", lab.address, "--device", "gone",
                               "--device-timeout", "15", "--out", str(tmp_path / "t"), "--no-progress"],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    finally:
        withdraw(["gone"])  # its actor would wait for the resource for ever
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == ("hwlat: warning: device gone has not answered for 10 s: its worker is down or restarting "
                        "(`hwlat worker --list` shows it); waiting up to 15 s for it"), proc.stderr
    assert lines[-1].startswith("hwlat: error: device gone did not answer for 15 s")


@pytest.mark.slow
def test_a_device_adopted_from_a_worker_that_died_takes_turns_with_its_new_worker(lab, tmp_path):
    """Ray restarts a dead worker's device actor with that worker's arguments where the device shows up
    again; the new worker adopted it as it was: no host lock (the old worker had --parallel), so it
    measured beside the new worker's other device, and it described itself as the dead worker's."""
    from hwlat.profilers.cluster.worker import list_devices, withdraw

    old = lab.start_worker(f"re={lab.runtime}:threads=1", parallel=True)
    lab.kill_worker(old)
    new = lab.start_worker(f"re={lab.runtime}:threads=1,re2={lab.runtime}:threads=1")
    try:
        infos, _ = list_devices(timeout_s=30)
    finally:
        lab.stop_worker(new)
        withdraw(["re", "re2"])
    assert infos["re"]["worker"]["pid"] == infos["re2"]["worker"]["pid"] == new.process.pid
    assert infos["re"]["exclusive_host"] and infos["re2"]["exclusive_host"]  # both take turns on the new worker's lock


def _sigkill_worker_only(lab, w) -> None:
    """SIGKILL the `hwlat worker` process alone (as the OOM killer or ``kill -9 PID`` would), then wait (generously)
    for its Ray node to end with it: every process of the node gone, the node dead, its devices' resources gone."""
    import ray

    from hwlat.profilers.cluster.worker import RESOURCE_PREFIX, descendants

    names = [d.split("=", 1)[0] for d in w.devices.split(",")]
    node_ids = {_devices()[n]["node_id"] for n in names}
    node = [p for p in descendants(w.process.pid) if p != w.process.pid]  # ray start, raylet, actors, ..., watchdog
    assert len(_live(node)) >= 4 and all(ray.cluster_resources().get(RESOURCE_PREFIX + n) == 1 for n in names)
    os.kill(w.process.pid, signal.SIGKILL)  # nothing else is signalled
    w.process.wait(timeout=10)

    def state() -> tuple[list[int], list[str], list[str]]:
        nodes = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
        total = ray.cluster_resources()
        return (_live(node), [i for i in node_ids if nodes.get(i) is not False],
                [n for n in names if RESOURCE_PREFIX + n in total])

    deadline = time.monotonic() + 90
    while any(state()) and time.monotonic() < deadline:
        time.sleep(0.1)
    running, alive_nodes, advertised = state()
    assert not running, f"processes of the killed worker's Ray node still run: {running}"
    assert not alive_nodes, "the killed worker's Ray node is still alive in the cluster"
    assert not advertised, f"device(s) {advertised} still advertised after their worker was killed"


@pytest.mark.slow
def test_device_that_disappears_is_reported_its_rows_kept_and_resumable(lab, tmp_path):
    """Also the kill test of `hwlat worker`: SIGKILL of the worker process alone takes its Ray node with it."""
    from hwlat.profilers.cluster.driver import DeviceLostError, profile_ops_cluster
    from hwlat.profilers.cluster.worker import list_devices

    specs = _specs(lab)
    driver, box = _sweep_until_rows(specs, tmp_path, device_timeout_s=3)
    _sigkill_worker_only(lab, lab.b)
    driver.join(120)
    assert not driver.is_alive()
    assert "ort-b" not in list_devices(timeout_s=1)[0]
    result = box["result"]
    assert result.runs["ort-a"].status == "done"
    assert result.runs["ort-b"].status == "lost"
    with pytest.raises(DeviceLostError, match=r"device ort-b disappeared.*rerun the same command"):
        result.raise_for_problems()
    kept = _csv_lines(tmp_path / "ort-b")
    assert 3 <= len(kept) < len(specs)
    assert len(DeviceTable.load(tmp_path / "ort-b")) == len(kept)  # valid, nothing written twice
    # The device comes back (a new worker advertises it): the same call resumes and completes.
    lab.b = lab.start_worker(f"ort-b={lab.runtime}:threads=1")
    again = profile_ops_cluster(specs, tmp_path, devices=["ort-b"], protocol=TEST_PROTOCOL, address=None,
                                progress=False, device_timeout_s=120)
    assert again.ok, again.problems()
    assert again.runs["ort-b"].skipped == len(kept)
    _assert_complete_once(tmp_path / "ort-b", specs)
    assert {k: v for k, v in _csv_lines(tmp_path / "ort-b").items() if k in kept} == kept


@pytest.mark.slow
def test_worker_killed_mid_sweep_loses_and_duplicates_nothing(lab, tmp_path):
    specs = _specs(lab)
    old_node = _devices()["ort-b"]["node_id"]
    driver, box = _sweep_until_rows(specs, tmp_path, device_timeout_s=180)
    lab.kill_worker(lab.b)
    killed_at = time.time()
    before = _csv_lines(tmp_path / "ort-b")
    assert len(before) < len(specs), "the sweep finished before the worker could be killed"
    # While the driver waits, the device returns on a new node; its unfinished tasks are retried there.
    lab.b = lab.start_worker(f"ort-b={lab.runtime}:threads=1")
    driver.join(180)
    assert not driver.is_alive()
    result = box["result"]
    assert result.ok, result.problems()
    assert result.runs["ort-b"].retried >= 1
    for name in ("ort-a", "ort-b"):
        _assert_complete_once(tmp_path / name, specs)
    after = _csv_lines(tmp_path / "ort-b")
    assert {k: after[k] for k in before} == before
    new_node = _devices()["ort-b"]["node_id"]
    assert new_node != old_node
    late = [r for r in result.records if r.device == "ort-b" and r.started > killed_at]
    assert late and all(r.node_id == new_node for r in late)


# ---- a worker's Ray node dies with it ----------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the node's watchdog reads /proc")
def test_watchdog_ends_the_whole_session_once_its_owner_is_gone():
    """No Ray: a session whose grandchildren leave the tree, ended when the watchdog's pipe closes."""
    from hwlat.profilers.cluster.reaper import session_pids

    session = subprocess.Popen(["sh", "-c", "(sleep 300 &) ; sleep 300 & sleep 300"], start_new_session=True)

    def sleeps() -> list[int]:
        out = []
        for p in session_pids(session.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{p}/comm").read_text().strip() == "sleep":
                    out.append(p)
        return out

    deadline = time.monotonic() + 30
    while len(sleeps()) < 3 and time.monotonic() < deadline:  # one of them re-parented: it left the tree of sh
        time.sleep(0.02)
    members = sleeps() + [session.pid]
    assert len(members) == 4
    read_end, write_end = os.pipe()
    watchdog = subprocess.Popen([sys.executable, "-I", "-S", str(ROOT / "hwlat" / "profilers" / "cluster" / "reaper.py"),
                                 str(session.pid)], stdin=read_end, stderr=subprocess.PIPE, start_new_session=True)
    os.close(read_end)
    try:
        time.sleep(0.2)
        assert watchdog.poll() is None and len(_live(members)) == 4  # nothing happens while the owner lives
        os.close(write_end)  # what the kernel does when the owner dies, however it dies
        assert watchdog.wait(timeout=60) == 0
        session.wait(timeout=10)
        assert _live(members) == []
        assert b"ended" in watchdog.stderr.read()
    finally:
        for p in _live(members):
            os.kill(p, signal.SIGKILL)
        session.wait(timeout=10)


@pytest.mark.slow
def test_closing_a_lab_disconnects_its_driver_first(tmp_path):
    """The fleet tutorial's snippet connects inside `with LocalLab()`: closing the lab killed the raylet
    under the connected driver, which printed 'Raylet is terminated. Termination is unexpected' and
    twenty lines of the raylet's log."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    import ray

    from hwlat.profilers.cluster.driver import connect
    from hwlat.profilers.cluster.local import LocalLab

    with LocalLab(tmp_path / "logs") as lab:
        connect(lab.address)
        assert ray.is_initialized()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_lab_worker_whose_device_spec_holds_a_comma_comes_up(tmp_path):
    """`start_worker("b=board:qemu:mps2-an386,arena_kb=128")` waited 180 s for a device named 'arena_kb'."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    from hwlat.profilers.board.qemu import missing_tools
    from hwlat.profilers.cluster.local import LocalLab

    if missing_tools():
        pytest.skip("emulated board needs: " + "; ".join(missing_tools()))
    with LocalLab(tmp_path / "logs") as lab:
        w = lab.start_worker("b=board:qemu:mps2-an386,arena_kb=128")
        assert "qemu-mps2-an386/board/int8/arena_kb=128" in w.output()


@pytest.mark.slow
def test_a_device_that_fails_every_configuration_stops_with_one_message_and_no_ray_traceback(tmp_path):
    """The driver keeps two calls queued at a device; when it stopped the device after the retried failure,
    the call it dropped failed as well and Ray printed it as 'Unhandled error' with its whole traceback."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    pytest.importorskip("serial")
    import tty

    from hwlat.profilers.cluster.local import LocalLab

    master, slave = os.openpty()
    tty.setraw(slave)
    describe = ("OK DESCRIBE board=fake core=cortex-m4 clock_hz=100000000 counter=dwt-cyccnt unit=cycles resolution=1 "
                "overhead=0 counter_ok=1 arena=65536 line=512 chunk=224 kernels=conv2d,dwconv2d,pwconv2d,linear gcc=12")

    def serve() -> None:  # a board that refuses every OP as a host bug (ERR SYNTAX): the runtime raises
        buf = b""
        while True:
            try:
                buf += os.read(master, 4096)
            except OSError:
                return
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode().split()
                reply = {"ID": "OK ID proto=1 fw=fake/1 board=fake core=cortex-m4", "DESCRIBE": describe,
                         "SYNC": f"OK SYNC {words[-1]}" if words else ""}.get(words[0] if words else "", "ERR SYNTAX no")
                if words:
                    os.write(master, (reply + "\n").encode())

    threading.Thread(target=serve, daemon=True).start()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: t\ndtype: int8\nops:\n  - {op: linear, c: [8, 16, 32, 64], cout: [2, 4, 8]}\n")
    try:
        with LocalLab(tmp_path / "logs") as lab:
            lab.start_worker(f"fb=board:serial:{os.ttyname(slave)},timeout=1", parallel=True)
            env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
            env.pop("RAY_IGNORE_UNHANDLED_ERRORS", None)
            proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", "board", "--sweep",
                                   str(sweep), "--cluster", lab.address, "--device", "fb", "--no-progress", "--out",
                                   str(tmp_path / "lab")], capture_output=True, text=True, timeout=300, env=env)
    finally:
        for fd in (master, slave):
            os.close(fd)
    assert proc.returncode == 1
    assert "hwlat: error: device fb: measuring linear" in proc.stderr and "ERR SYNTAX" in proc.stderr
    assert "Unhandled error" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_sweep_with_no_configuration_of_the_device_precision_is_an_error_naming_it(tmp_path):
    """An int8 sweep on an fp32 device ended 'done, 0 measured' with exit 0 (a local run refuses it)."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    from hwlat.profilers.cluster.local import LocalLab

    runtime = _runtime()
    with LocalLab(tmp_path / "logs") as lab:
        lab.start_worker(f"f={runtime}:threads=1")
        proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", runtime, "--sweep", "mcu",
                               "--cluster", lab.address, "--device", "f", "--no-progress", "--out", str(tmp_path / "lab")],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "hwlat: error: device f (cpu/" in proc.stderr
    assert "runs none of the 179 configurations: they are int8, not of its precision" in proc.stderr


@pytest.mark.slow
def test_workers_leave_no_lock_file_in_the_temp_folder_stopped_or_killed(tmp_path):
    """Every `hwlat worker` left its devices' lock file (hwlat-worker-PID-*.lock) in /tmp: on a clean
    stop, and from every lab worker `LocalLab.close` kills."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    import tempfile

    import ray

    from hwlat.profilers.cluster.driver import connect, disconnect, profile_ops_cluster
    from hwlat.profilers.cluster.local import LocalLab

    from hwlat.profilers.runtimes import get_runtime
    from hwlat.profilers.sweeps import load_sweep

    runtime = _runtime()
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    specs = get_runtime(runtime, threads=1).accepts(load_sweep(tmp_path / "sweep.yaml"))[:2]

    def locks(w) -> list[str]:
        return [f"{d}/{n}" for d in (tempfile.gettempdir(), lab.temp_dir) if os.path.isdir(d)
                for n in os.listdir(d) if n.startswith(f"hwlat-worker-{w.process.pid}")]

    with LocalLab(tmp_path / "logs") as lab:
        stopped, killed = lab.start_worker(f"s={runtime}:threads=1"), lab.start_worker(f"k={runtime}:threads=1")
        connect(lab.address)
        try:
            result = profile_ops_cluster(specs, tmp_path / "t", devices=["s", "k"], protocol=TEST_PROTOCOL, address=None,
                                         progress=False)
        finally:
            if ray.is_initialized():
                disconnect()
        assert result.ok, result.problems()
        lab.stop_worker(stopped)
        assert not locks(stopped)
    assert not locks(killed)


@pytest.mark.slow
def test_a_lab_without_a_root_removes_the_temp_folder_it_made():
    """The fleet tutorial's `with LocalLab() as lab:` left a /tmp/hwlat-lab-* folder of logs behind each time."""
    pytest.importorskip("ray", reason="cluster profiling needs Ray: pip install 'hwlat[cluster]'")
    from hwlat.profilers.cluster.local import LocalLab

    with LocalLab() as lab:
        root = lab.root
        assert root.is_dir() and any(root.iterdir())  # the head's log
    assert not root.exists()


def test_the_ports_a_lab_hands_out_are_never_one_port_twice():
    """The OS gives a just-released port again; a lab's head got the same port for two of Ray's
    listeners and failed to start."""
    from hwlat.profilers.cluster.local import free_port

    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
