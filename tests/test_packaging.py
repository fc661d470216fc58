"""hwlat as a user installs it: the wheel holds every file the packages read at run time, an installed
hwlat reads nothing from the source checkout, and a shipped table is read without being written (a
read-only install: system site-packages, a container layer)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hwlat",)  # its four jobs are its sub-packages: nothing else is installed at the top

# Records every file opened for writing under $HWLAT_WATCH_WRITES and every file opened under
# $HWLAT_WATCH_READS (the checkout, for an installed hwlat; its virtual environment aside), then runs
# the user's path.
WATCH = textwrap.dedent("""
    import os, sys
    writes, reads = os.environ["HWLAT_WATCH_WRITES"], os.environ.get("HWLAT_WATCH_READS")
    seen = []
    def hook(event, args):
        if event != "open" or not isinstance(args[0], (str, os.PathLike)):
            return
        path, mode, flags = os.path.abspath(args[0]), args[1], args[2]
        written = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
        if written and path.startswith(writes + os.sep):
            seen.append(f"written: {path}")
        if reads and path.startswith(reads + os.sep) and not path.startswith(sys.prefix + os.sep):
            seen.append(f"read from the checkout: {path}")
    sys.addaudithook(hook)
""")

USER_PATH = textwrap.dedent("""
    import json
    import hwlat
    from hwlat.device_profile import table_warnings
    from hwlat.profilers.sweeps import load_sweep
    assert "cpu_onnxruntime_fp32_threads1" in hwlat.tables()
    for name in hwlat.tables():
        table_warnings(hwlat.load_table(name))  # what `hwlat predict --table NAME` says first
    hwlat.predict(1462, "cpu_onnxruntime_fp32_threads1", space="nb201", as_profiled=True)
    hwlat.predict(5, "qemu_mps2_an386_board_int8_threads1", space="nb201")
    hwlat.predict_archs("fbnet", "random:2", "cpu_litert_int8_threads1", jobs=1, as_profiled=True)
    assert hwlat.accuracy("nb201", 1462, "cifar100") > 0
    for space in ("nb201", "fbnet", "ofa"):
        keys = hwlat.suggest(space, 5)
        hwlat.adapt(space, keys, [1.0 + i for i in range(5)])
    for preset in ("default", "quick", "mcu", "transformer"):
        load_sweep(preset)
    print(json.dumps(seen), flush=True)
""")


def watched(cwd: Path, writes: Path, reads: Path | None = None, path: list[str] | None = None) -> list[str]:
    env = {**os.environ, "HWLAT_WATCH_WRITES": str(writes), "PYTHONDONTWRITEBYTECODE": "1"}
    if reads:
        env["HWLAT_WATCH_READS"] = str(reads)
    code = WATCH + USER_PATH
    if path:  # the installed packages, not the checkout's
        code = (WATCH + f"sys.path[:0] = {path!r}\nimport {', '.join(PACKAGES)}\n"
                + "".join(f"assert next(iter({p}.__path__)).startswith({path[0]!r}), {p}.__path__\n" for p in PACKAGES)
                + USER_PATH)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reading_shipped_tables_and_predictors_writes_none_of_their_files(tmp_path):
    """`hwlat predict --table <shipped>` opened the table's NAME.networks.csv for writing to check its
    last line, so on a read-only install it failed: 'cannot write .../NAME.networks.csv: Read-only file system'."""
    assert watched(tmp_path, ROOT) == []


def tracked(root: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *PACKAGES, "pyproject.toml", "README.md"], cwd=root,
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the files a wheel must hold are the tracked ones")
    return [p for p in out.stdout.decode().split("\0") if p]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[list[str], set[str], Path]:
    """(the tracked files of the packages, the wheel's files, the folder it is unpacked in: an install)."""
    pytest.importorskip("setuptools", minversion="77", reason="building this wheel needs setuptools >= 77")
    tmp = tmp_path_factory.mktemp("wheel")
    files = tracked(ROOT)
    source = tmp / "source"
    for rel in files:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    for folder in ("hwlat/device_tables/tables", "hwlat/device_tables/tables/arch"):  # what `--fresh` sets aside (git ignores it)
        for suffix in (".csv", ".json"):
            (source / folder / f"mine.old-20260101T000000{suffix}").write_text("")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    whl, = (tmp / "dist").glob("hwlat-*.whl")
    with zipfile.ZipFile(whl) as z:
        z.extractall(tmp / "installed")
        return files, set(z.namelist()), tmp / "installed"


def test_the_wheel_holds_every_tracked_file_of_the_packages(wheel):
    files, held, _ = wheel
    missing = [f for f in files if f.split("/")[0] in PACKAGES and f not in held]
    assert not missing, f"tracked files the wheel leaves out (pyproject.toml package-data): {missing}"


def test_the_wheel_installs_one_top_level_package(wheel):
    """The wheel installed `nas`, `profilers`, `predictors` and `device_tables` beside `hwlat`: a user's
    own `nas/` folder (common in NAS code) hid hwlat's, or hwlat's shadowed theirs."""
    _, held, _ = wheel
    assert {name.split("/")[0] for name in held if not name.split("/")[0].endswith(".dist-info")} == {"hwlat"}


def test_the_wheel_holds_no_table_set_aside_by_fresh(wheel):
    """A wheel built from a checkout where `hwlat profile device --out hwlat/device_tables/tables/NAME --fresh`
    had run shipped NAME.old-<time>.csv/.json, listed by `hwlat table list` as a table of its own."""
    assert not [f for f in wheel[1] if ".old-" in f]


def test_an_installed_hwlat_reads_nothing_from_the_checkout_and_writes_nothing_of_its_own(wheel, tmp_path):
    installed = wheel[2]
    assert watched(tmp_path, installed, reads=ROOT, path=[str(installed)]) == []


def test_an_installed_hwlat_without_public_data_says_how_to_give_it(wheel, tmp_path):
    """It named a folder no user has: 'public latency data not found at .../lib/python3.11/shared/data/latency'."""
    installed = wheel[2]
    env = {k: v for k, v in os.environ.items() if k != "HWLAT_LATENCY_DATA"}
    code = (f"import sys; sys.path[:0] = [{str(installed)!r}]; from hwlat.cli import main; "
            "sys.exit(main(['predict', '--space', 'fbnet', '--arch', '5', '--table', 'cpu_onnxruntime_fp32_threads1']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "public latency data not given; pass its folder or set HWLAT_LATENCY_DATA" in out.stderr
    assert str(installed.parent) not in out.stderr


def test_an_installed_hwlat_without_firmware_says_to_point_at_a_checkout(wheel, tmp_path):
    """It said 'firmware sources not found at .../site-packages/firmware; run from a hwlat source checkout',
    and running from one changes nothing for an installed hwlat: only $HWLAT_FIRMWARE_DIR does."""
    installed = wheel[2]
    env = {k: v for k, v in os.environ.items() if k != "HWLAT_FIRMWARE_DIR"}
    code = (f"import sys; sys.path[:0] = [{str(installed)!r}]; from hwlat.profilers.board.qemu import firmware_dir\n"
            "try:\n    firmware_dir()\nexcept Exception as e:\n    print(e)")
    for given in (None, tmp_path):
        if given:
            env["HWLAT_FIRMWARE_DIR"] = str(given)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120).stdout
        assert "from a hwlat source checkout" not in out and "set HWLAT_FIRMWARE_DIR to the firmware/ folder" in out
        assert ("(from $HWLAT_FIRMWARE_DIR)" if given else "(an installed hwlat ships none)") in out


def test_the_wheel_states_its_license_as_an_spdx_expression(wheel):
    """`license = { text = "MIT" }` is deprecated: setuptools warned on every build that such builds stop
    being supported after 2027-02-18."""
    metadata = next(wheel[2].glob("hwlat-*.dist-info/METADATA")).read_text()
    assert "License-Expression: MIT" in metadata.splitlines()


def test_the_sdist_holds_every_tracked_file(tmp_path):
    """The sdist held the packages and the tests' test_*.py but not conftest.py, fuzzers.py, nor what the
    tests read (benchmarks, examples, docs), nor the board firmware an installed hwlat points at; and
    neither it nor the wheel held hwlat/nas/spaces/README.md, the notes on keys, encodings and networks
    that the spaces' code points to."""
    pytest.importorskip("setuptools", minversion="77", reason="building this sdist needs setuptools >= 77")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if out.returncode:
        pytest.skip("not a git checkout: the files an sdist must hold are the tracked ones")
    files = [p for p in out.stdout.decode().split("\0") if p and not p.startswith((".ci/", ".gitignore"))]
    source = tmp_path / "source"
    for rel in files:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    for left in ("firmware/build/hwlat-fw.elf",  # what `make` leaves, and installing the plugin (test_plugins.py)
                 "examples/plugin/build/lib/hwlat_plugin_example/__init__.py",
                 "examples/plugin/hwlat_plugin_example.egg-info/PKG-INFO"):
        (source / left).parent.mkdir(parents=True, exist_ok=True)
        (source / left).write_text("")
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    built = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    with tarfile.open(tmp_path / built.stdout.strip().splitlines()[-1]) as tar:
        held = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [f for f in files if f not in held]
    assert not missing, f"tracked files the sdist leaves out (MANIFEST.in): {missing}"
    left_in = ("firmware/build", "examples/plugin/build", "examples/plugin/hwlat_plugin_example.egg-info")
    assert not [f for f in held if f.startswith(left_in)]


def test_no_help_example_writes_into_the_shipped_tables():
    """`hwlat profile archs --help`'s example wrote to --out hwlat/device_tables/tables/arch/nb201_cpu_...: from a
    checkout, a shipped table (refused: measured with another protocol); installed, a copy of the repository's
    folders wherever it ran."""
    import argparse

    from hwlat.cli import build_parser

    def examples(parser):
        yield parser.description or ""
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from examples(sub)

    assert not [e for e in examples(build_parser()) if "hwlat/device_tables/tables" in e]
