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
