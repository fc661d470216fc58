"""The benchmark scripts as a user starts them: missing public data is one error line, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.parametrize("script", ["transfer.py", "transfer_ceiling.py", "pretrain_transfer.py"])
def test_a_benchmark_without_the_public_data_says_so_in_one_line(tmp_path, script):
    env = {**os.environ, "HWLAT_LATENCY_DATA": str(tmp_path / "nowhere")}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{script}: error: public latency data folder {tmp_path / 'nowhere'} (from $HWLAT_LATENCY_DATA) does not exist"]


def test_every_benchmark_script_reports_errors_alike():
    for script in sorted(BENCHMARKS.glob("*.py")):
        assert script.read_text().rstrip().endswith("raise SystemExit(run_script(main))"), script.name


def test_the_mcu_benchmark_scores_a_shipped_board_table_by_name_and_refuses_another_in_one_line():
    """`mcu.py --table` on a CPU table raised a traceback (ValueError: no values to score); a shipped
    name, which every hwlat command takes, was 'not found'."""
    def run(table):
        return subprocess.run([sys.executable, str(BENCHMARKS / "mcu.py"), "--table", table], capture_output=True,
                              text=True, timeout=300)

    cpu = run("cpu_onnxruntime_fp32_threads1")
    assert cpu.returncode == 1 and cpu.stderr.strip().splitlines() == [
        "mcu.py: error: table cpu/onnxruntime/fp32/threads=1: no row with a board's count; score a table made "
        "with `hwlat profile ops --runtime board`"]
    board = run("qemu_mps2_an386_board_int8_threads1")
    assert board.returncode == 0 and "Spearman(MACs, instructions)" in board.stdout
