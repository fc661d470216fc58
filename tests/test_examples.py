"""The examples run (reduced sizes) and print what they promise."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--quick", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def run_refused(name: str, *args: str) -> str:
    """Standard error of an example given bad arguments: one message, a non-zero exit, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr


def test_examples_refuse_bad_arguments_with_one_message():
    pytest.importorskip("optuna")
    for name in ("optuna_constraint.py", "optuna_pareto.py"):  # a budget of 0 was taken as "no budget given"
        assert "--budget-ms: a positive number of ms" in run_refused(name, "--budget-ms", "0")
    assert "--evaluations: at least 1" in run_refused("evolution_loop.py", "--evaluations", "0")  # was max() of nothing
    assert "--steps: at least 1" in run_refused("differentiable_latency.py", "--steps", "0")  # was a division by zero
    # a budget no architecture meets: said before the study (was an empty list, or TPE's ValueError)
    err = run_refused("optuna_constraint.py", "--quick", "--sampler", "tpe", "--budget-ms", "0.001")
    assert "error: latency budget 0.001 ms is below the fastest nb201 architecture" in err


def test_optuna_constraint_example():
    pytest.importorskip("optuna")
    out = run_example("optuna_constraint.py")
    assert "best (feasible only) by CIFAR-10 accuracy" in out and "predicted" in out


def test_optuna_pareto_example():
    pytest.importorskip("optuna")
    out = run_example("optuna_pareto.py")
    assert "NSGA-II, latency as objective" in out and "NSGA-II, latency as constraint" in out
    assert out.count("most accurate within budget") == 2 and "Pareto front" in out
    out = run_example("optuna_pareto.py", "--trials", "6", "--budget-ms", "100")  # a population of 6 // 4 = 1 was refused
    assert "NSGA-II, latency as constraint: 6 trials" in out


def test_evolution_loop_example():
    out = run_example("evolution_loop.py")
    assert "filter:" in out and "penalty:" in out and "regularised evolution on nb201" in out
    assert "best accuracy" in out and "Pareto front" in out


def test_differentiable_latency_example():
    out = run_example("differentiable_latency.py")
    assert "per-choice latency table" in out
    line = next(l for l in out.splitlines() if "expected latency at one-hot" in l)
    one_hot, table = line.split("one-hot")[1].split("=")[0], line.split("table prediction")[1].split(";")[0]
    assert float(one_hot.split()[0]) == float(table.split()[0])
