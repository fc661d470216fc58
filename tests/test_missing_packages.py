"""A package that is not installed (an optional extra, or a dependency a user left out): each command
works without it or says in one line what is missing and how to install it, never a traceback, and
keeps what it measured. The package is hidden from a real `hwlat` process by an import hook in a
sitecustomize (as where it is not installed: `import NAME` raises ModuleNotFoundError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''
import os, sys

class _NotInstalled:
    hidden = set(os.environ["HWLAT_TEST_HIDE"].split(","))

    def find_spec(self, name, path=None, target=None):  # a package hides its modules too; a module only itself
        if any(name == h or name.startswith(h + ".") for h in self.hidden):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())

if os.environ.get("HWLAT_TEST_HIDE_DIST"):  # their metadata too, as pip uninstall removes it
    from importlib import metadata

    _version, _gone = metadata.version, set(os.environ["HWLAT_TEST_HIDE_DIST"].split(","))

    def _version_unless_gone(name):
        if name in _gone:
            raise metadata.PackageNotFoundError(name)
        return _version(name)

    metadata.version = _version_unless_gone
'''


@pytest.fixture(scope="module")
def hook(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hide")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def hwlat_without(hook: Path, hidden: str, *args: str, cwd: Path, dists: str = "") -> subprocess.CompletedProcess:
    """`hwlat ARGS` in a process where the modules `hidden` (comma-separated) are not installed, nor the
    distributions `dists`."""
    env = {**os.environ, "HWLAT_TEST_HIDE": hidden, "HWLAT_TEST_HIDE_DIST": dists,
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_hook_hides_the_module(hook, tmp_path):
    env = {**os.environ, "HWLAT_TEST_HIDE": "matplotlib", "PYTHONPATH": str(hook)}
    done = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "No module named 'matplotlib'" in done.stderr


def test_demo_without_matplotlib_skips_the_plots_and_keeps_the_summary(hook, tmp_path):
    """The plots come last: without matplotlib the demo said nothing of them but a traceback, after
    measuring everything, and wrote no summary.json."""
    out = tmp_path / "demo"
    done = hwlat_without(hook, "matplotlib", "demo", "--quick", "--out", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "[6/6] plots skipped: they need matplotlib" in done.stdout and "pip install matplotlib" in done.stdout
    assert (out / "summary.json").is_file() and not list(out.glob("*.png"))


def test_naswot_search_without_torch_says_what_to_install(hook, tmp_path):
    """The NASWOT proxy runs each network in torch: without it, one line, not an ImportError from
    inside the first architecture's score."""
    done = hwlat_without(hook, "torch", "search", "--space", "nb201", "--predictor", "lut:cpu_onnxruntime_fp32_threads1",
                         "--as-profiled", "--max-latency-ms", "5", "--budget", "5", "--objective", "naswot", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("hwlat: error:")]
    assert len(errors) == 1 and "NASWOT" in errors[0] and "pip install 'torch>=" in errors[0], done.stderr


def test_predict_that_fits_regressors_without_sklearn_says_what_to_install(hook, tmp_path):
    """A table without stored regressors (a board table copied without its NAME.regressors.*) fits them when
    it predicts, with scikit-learn's trees: without it, one line naming the package and --no-regressors."""
    import shutil

    shipped = ROOT / "hwlat" / "device_tables" / "tables" / "qemu_mps2_an385_board_int8_threads1"
    for suffix in (".csv", ".json"):  # the shipped board tables store their regressors now
        shutil.copy(shipped.with_suffix(suffix), tmp_path / f"board{suffix}")
    args = ("predict", "--classic", "mobilenet_v2", "--table", str(tmp_path / "board"))
    done = hwlat_without(hook, "sklearn", *args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("hwlat: error:")]
    assert len(errors) == 1 and "pip install scikit-learn" in errors[0] and "--no-regressors" in errors[0], done.stderr
    assert hwlat_without(hook, "sklearn", *args, "--no-regressors", cwd=tmp_path).returncode == 0


def test_runtime_lists_mark_a_runtime_whose_package_is_missing(hook, tmp_path):
    """--help lists the runtimes; one this machine lacks is marked, before a run says how to install it."""
    ops = hwlat_without(hook, "ai_edge_litert,tflite_runtime", "profile", "ops", "--help", cwd=tmp_path)
    assert ops.returncode == 0 and "litert (not installed)" in " ".join(ops.stdout.split()), ops.stdout
    assert "onnxruntime (not" not in " ".join(ops.stdout.split())
    search = hwlat_without(hook, "torch", "search", "--help", cwd=tmp_path)
    assert search.returncode == 0 and "torch (not installed)" in " ".join(search.stdout.split()), search.stdout
    done = hwlat_without(hook, "ai_edge_litert,tflite_runtime", "profile", "ops", "--runtime", "litert", "--sweep",
                         "quick", "--out", str(tmp_path / "t"), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "pip install ai-edge-litert" in done.stderr


def test_optuna_examples_without_optuna_say_what_to_install(hook, tmp_path):
    env = {**os.environ, "HWLAT_TEST_HIDE": "optuna", "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    for name in ("optuna_constraint.py", "optuna_pareto.py"):
        done = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--quick"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "Traceback" not in done.stderr, (name, done.stderr)
        assert "pip install" in done.stderr and "optuna" in done.stderr, (name, done.stderr)


def test_bench_transfer_without_torch_names_the_method_that_needs_it(hook, tmp_path):
    """HELP's MLP is torch: without it, `bench transfer` (every method by default) said so by a traceback
    from inside HELP's fit, after the methods before it had run; now one line, before any work, naming the
    methods that run without it."""
    import numpy as np
    import pandas as pd

    t = pd.read_csv(ROOT / "hwlat/device_tables/tables/arch/nb201_cpu_onnxruntime_fp32_threads1.csv").head(200)
    ms = t.pop(t.columns[-1]).to_numpy()
    for i, f in enumerate(np.linspace(0.5, 2.0, 6)):
        t[f"d{i}"] = ms * f
    t.to_csv(tmp_path / "wide.csv", index=False)
    done = hwlat_without(hook, "torch", "bench", "transfer", "--space", "nb201", "--table", str(tmp_path / "wide.csv"),
                         "--train", "d0,d1,d2", "--valid", "d3", "--test", "d4,d5", "--repeats", "1", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("hwlat: error:")]
    assert len(errors) == 1 and "method help" in errors[0] and "pip install 'torch>=" in errors[0], done.stderr
    assert "--methods macs,params,nearest,ridge,proxy,lowrank,mixture,transfer" in errors[0]


def test_torch_example_without_torch_says_what_to_install(hook, tmp_path):
    env = {**os.environ, "HWLAT_TEST_HIDE": "torch", "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "differentiable_latency.py"), "--quick"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "pip install torch" in done.stderr, done.stderr


def test_fuzz_benchmark_without_hypothesis_says_what_to_install(hook, tmp_path):
    env = {**os.environ, "HWLAT_TEST_HIDE": "hypothesis", "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == ["fuzz.py: error: the fuzzers need hypothesis (in the test extra): "
                                                ".venv/bin/pip install -e '.[test]' (or pip install hypothesis)"]


@pytest.mark.parametrize("module", ["numpy", "filelock"])
def test_a_missing_dependency_is_one_line_and_version_still_answers(hook, tmp_path, module):
    """hwlat's own dependencies (device_tables imports numpy and filelock first thing): `--version` answers
    without them, every other command says which package to install, where each was a traceback."""
    version = hwlat_without(hook, module, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("hwlat "), version.stderr
    for args in (("--help",), ("table", "list")):
        done = hwlat_without(hook, module, *args, cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines() == [f"hwlat: error: the Python package {module} is not installed (no module "
                                            f"{module!r}); hwlat needs it here: pip install {module}"]


def test_a_dependency_missing_deep_in_a_command_is_one_line(hook, tmp_path):
    done = hwlat_without(hook, "tqdm", "profile", "archs", "--space", "nb201", "--archs", "0:2", "--protocol", "quick",
                         "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].endswith("hwlat needs it here: pip install tqdm")


def test_a_package_missing_a_module_of_its_own_is_named_a_broken_install(hook, tmp_path):
    """tqdm installed without its tqdm.std (a broken install) was reported as 'tqdm is not installed'."""
    done = hwlat_without(hook, "tqdm.std", "profile", "archs", "--space", "nb201", "--archs", "0:2", "--protocol",
                         "quick", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].endswith("is installed but its module 'tqdm.std' is missing (a broken install); "
                                                 "reinstall it: pip install --force-reinstall tqdm"), done.stderr


def test_a_table_of_a_runtime_not_installed_here_is_not_of_another_machine(hook, tmp_path):
    """A shipped table of this CPU whose runtime's package is missing was called one of another machine
    ('ai-edge-litert 2.3.0 -> not installed'), with `hwlat profile device` to make one of this machine,
    which needs the package; `table list` calls it this CPU's. The CPU alone decides; the speed check
    says what to install."""
    done = hwlat_without(hook, "ai_edge_litert,tflite_runtime", "predict", "--classic", "mobilenet_v2", "--table",
                         "cpu_litert_fp32_threads1_xeon_m167", cwd=tmp_path, dists="ai-edge-litert,tflite-runtime")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "-> not installed" not in done.stderr, done.stderr
