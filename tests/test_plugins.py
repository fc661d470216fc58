"""Plugins: runtimes and spaces from installed packages (entry points) work in every command; the
onnxruntime plugin opens every session with its own providers; the public API covers the jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin installed into a folder of its own, as `pip install` puts it on a path."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]))
    return target, env


def hwlat(env, *args, check=True):
    p = subprocess.run([sys.executable, "-m", "hwlat", *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_an_installed_runtime_plugin_is_listed_and_subclasses_a_built_in(installed):
    _, env = installed
    out = subprocess.run([sys.executable, "-c", "from hwlat.plugins import runtimes; r = runtimes(); "
                          "print(sorted(r)); print(issubclass(r['ort-basic'], r['onnxruntime']))"],
                         env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert "ort-basic" in out[0] and "onnxruntime" in out[0] and out[1] == "True"


def test_an_installed_runtime_plugin_works_in_every_command(installed, tmp_path):
    _, env = installed
    assert "ort-basic" in "".join(hwlat(env, "profile", "ops", "--help").stdout.split())  # help lists it
    hwlat(env, "profile", "ops", "--runtime", "ort-basic", "--sweep", "quick", "--protocol", "quick",
          "--out", tmp_path / "ops", "--no-progress")
    meta = json.loads((tmp_path / "ops.json").read_text())
    assert meta["device"]["name"] == "cpu/ort-basic/fp32/threads=1"
    assert meta["device"]["fingerprint"]["runtime"]["session"]["graph_optimization_level"] == "basic"
    pred = json.loads(hwlat(env, "predict", "--table", tmp_path / "ops", "--space", "nb201", "--arch", "0",
                            "--json").stdout)
    assert pred["table"] == "ops" and pred["latency_ms"] > 0
    hwlat(env, "profile", "archs", "--runtime", "ort-basic", "--space", "nb201", "--archs", "0:2", "--protocol", "quick",
          "--out", tmp_path / "archs", "--no-progress")
    header = (tmp_path / "archs.csv").read_text().splitlines()[0]
    assert header.endswith("cpu/ort-basic/fp32/threads=1")
    from hwlat.nas.spaces import get_space

    model = tmp_path / "net.onnx"
    model.write_bytes(get_space("nb201").to_onnx(get_space("nb201").parse(0)))
    shown = hwlat(env, "profile", "model", model, "--runtime", "ort-basic", "--protocol", "quick").stdout
    assert "device   cpu/ort-basic/fp32/threads=1, graph optimisation basic" in shown
    # a flag of another runtime names whose it is
    bad = hwlat(env, "profile", "ops", "--runtime", "ort-basic", "--sweep", "quick", "--xnnpack", "off",
                "--out", tmp_path / "x", check=False)
    assert bad.returncode == 1 and "--xnnpack is a setting of --runtime litert, not of ort-basic" in bad.stderr


def test_an_installed_runtime_plugin_verifies_a_search(installed, tmp_path):
    _, env = installed
    assert "ort-basic" in hwlat(env, "search", "--help").stdout  # was a fixed choice of onnxruntime, torch
    out = hwlat(env, "search", "--space", "nb201", "--predictor", "lut:cpu_onnxruntime_fp32_threads1",
                "--max-latency-ms", "1", "--budget", "5", "--top", "1", "--verify", "--verify-rounds", "1",
                "--verify-pool", "search", "--protocol", "quick", "--runtime", "ort-basic", "--no-progress",
                "--verify-out", tmp_path / "verified").stdout
    assert "measured on cpu/ort-basic/fp32/threads=1" in out
    assert (tmp_path / "verified.csv").read_text().splitlines()[0].endswith("cpu/ort-basic/fp32/threads=1")
    board = hwlat(env, "search", "--space", "nb201", "--predictor", "x", "--max-latency-ms", "1", "--verify",
                  "--runtime", "board", check=False)  # a runtime that cannot time architectures: said at once
    assert board.returncode == 2 and "invalid choice: 'board'" in board.stderr


def test_a_broken_plugin_is_skipped_with_one_warning(tmp_path):
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hwlat.runtimes]\nnope = no_such_module:Nope\n"
                                           "[hwlat.spaces]\nalso = no_such_module:Also\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    p = subprocess.run([sys.executable, "-c", "from hwlat.plugins import runtimes, spaces; print(sorted(runtimes())); "
                        "print(sorted(spaces()))"], env=env, capture_output=True, text=True, check=True)
    assert "onnxruntime" in p.stdout and "nb201" in p.stdout and "nope" not in p.stdout
    assert "runtime plugin nope (no_such_module:Nope) does not load" in p.stderr
    assert "space plugin also (no_such_module:Also) does not load" in p.stderr


def test_a_plugin_whose_name_has_capitals_is_found_by_it(tmp_path):
    """A runtime plugin named "MyOrt" was listed among the choices but refused as unknown: names were
    looked up lower-cased."""
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hwlat.runtimes]\nmyort = my_plugin:MyOrt\n")
    (tmp_path / "my_plugin.py").write_text("from hwlat.plugins import runtimes\n\n"
                                           "class MyOrt(runtimes()['onnxruntime']):\n    name = 'MyOrt'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    p = subprocess.run([sys.executable, "-c", "import hwlat; print(hwlat.runtime('MyOrt').device().name, "
                        "type(hwlat.runtime('myort')).__name__)"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["cpu/MyOrt/fp32/threads=1", "MyOrt"]


@pytest.mark.parametrize("first", ["runtime", "space"])
def test_a_package_adding_a_runtime_and_a_space_gets_both(first, tmp_path):
    """A plugin module that subclasses a built-in runtime and a built-in space, as the docs show, lost
    one of them: loading one group imported the module, whose call to the other registry loaded that
    group's entry points from the half-imported module ("partially initialized module") and kept the result."""
    dist = tmp_path / "both_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: both-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hwlat.runtimes]\nmyort = both_plugin:MyOrt\n"
                                           "[hwlat.spaces]\nmycell = both_plugin:MyCell\n")
    (tmp_path / "both_plugin.py").write_text("from hwlat.plugins import runtimes, spaces\n\n"
                                             "class MyOrt(runtimes()['onnxruntime']):\n    name = 'myort'\n\n"
                                             "class MyCell(spaces()['nb201']):\n    name = 'mycell'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    use = "hwlat.runtime('myort')" if first == "runtime" else "hwlat.space('mycell')"
    p = subprocess.run([sys.executable, "-c", f"import hwlat; print({use}); "
                        "print(sorted(hwlat.plugins.runtimes()), sorted(hwlat.plugins.spaces()))"],
                       env=env, capture_output=True, text=True, check=True)
    shown, listed = p.stdout.splitlines()
    assert shown == ("MyOrt(myort, threads=1, precision='fp32')" if first == "runtime" else "MyCell(keep_dead=False)")
    assert "'myort'" in listed and "'mycell'" in listed
    assert "does not load" not in p.stderr, p.stderr


class Recorder:
    """onnxruntime.InferenceSession, recording the providers of every session opened."""

    def __init__(self, real):
        self.real = real
        self.seen: list[list[str]] = []

    def __call__(self, *args, providers=None, **kwargs):
        self.seen.append([p[0] if isinstance(p, tuple) else p for p in providers or []])
        return self.real(*args, providers=providers, **kwargs)


def test_every_onnxruntime_session_gets_the_runtimes_providers(monkeypatch, tmp_path):
    """A provider other than the CPU (here the Azure provider every onnxruntime build lists, with the CPU
    behind it) reaches every place that opens a session: single ops, the fusion probe's graphs, whole
    networks, architectures and the per-node profile."""
    ort = pytest.importorskip("onnxruntime")
    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build lists no second provider")
    from hwlat.device_tables.ops import OpSpec
    from hwlat.nas.spaces import get_space
    from hwlat.profilers.ort.runtime import OnnxRuntime
    from hwlat.profilers.protocol import Protocol

    class Elsewhere(OnnxRuntime):
        def providers(self):
            return ["AzureExecutionProvider", "CPUExecutionProvider"]

    rt = Elsewhere()
    recorder = Recorder(ort.InferenceSession)
    monkeypatch.setattr(ort, "InferenceSession", recorder)
    quick = Protocol.preset("quick")
    spec = OpSpec.make("conv2d+bn+relu", (1, 8, 16, 16), cout=8, kernel=3)
    rt.measure(spec, quick)
    assert rt.count_kernels(spec) is not None
    rt.count_network_kernels(spec)
    space = get_space("nb201")
    rt.time_arch(space, space.parse(0), quick)
    model = tmp_path / "net.onnx"
    model.write_bytes(space.to_onnx(space.parse(1)))
    rt.time_model(str(model), quick)
    rt.profile_model(str(model), quick, profile_runs=2)
    assert len(recorder.seen) >= 7
    assert all(p == ["AzureExecutionProvider", "CPUExecutionProvider"] for p in recorder.seen), recorder.seen


def test_the_public_api_covers_the_jobs(tmp_path):
    import hwlat

    table = hwlat.load_table("cpu_onnxruntime_fp32_threads1")
    assert "cpu_onnxruntime_fp32_threads1" in hwlat.tables()
    space = hwlat.space("nb201")
    arch = space.arch(0)
    one = hwlat.predict(arch, table=table, space="nb201")
    by_key = hwlat.predict(space.key(arch), table=table, space=space)
    assert one.latency_ms == by_key.latency_ms > 0 and not one.partial and one.sigma_ms >= 0
    many = hwlat.predict_archs("nb201", "0:3", table)
    assert [p.latency_ms for p in many][0] == one.latency_ms and len(many) == 3
    assert hwlat.predict(space.to_onnx(arch), table=table).latency_ms == pytest.approx(one.latency_ms, rel=1e-9)
    assert sorted(hwlat.plugins.runtimes()) == sorted(["onnxruntime", "torch", "litert", "tflm", "board"])
    rt = hwlat.runtime("onnxruntime", threads=1)
    res = hwlat.profile_archs("nb201", [0, 1], tmp_path / "archs", runtime=rt, protocol=None, progress=False)
    assert res.measured == 2
    c = hwlat.LatencyConstraint(table, budget_ms=one.latency_ms * 1.01, space=space)
    assert c(arch).feasible and c(arch).latency_ms == pytest.approx(one.latency_ms)


def test_the_api_takes_a_protocol_by_its_preset_name_as_the_command_line_does(tmp_path):
    """hwlat.profile_model(path, protocol="quick") was an AttributeError ('str' object has no attribute 'clock')."""
    import hwlat

    space = hwlat.space("nb201")
    model = tmp_path / "m.onnx"
    model.write_bytes(space.to_onnx(space.arch(0)))
    whole = hwlat.profile_model(model, "litert", protocol="quick")
    assert whole.clock == "cpu" and whole.latency.n <= 50  # the CLI's quick: at most 50 runs, the runtime's clock
    table = hwlat.profile_ops("onnxruntime", tmp_path / "ops", sweep="quick", protocol="quick", progress=False).table
    assert table.meta["protocol"]["max_runs"] == 50 and table.meta["protocol"]["clock"] == "cpu"
    with pytest.raises(ValueError, match="unknown protocol preset 'fast'; choose from default, brief, quick, thorough"):
        hwlat.profile_model(model, protocol="fast")


def test_a_setting_a_runtime_does_not_have_is_refused_by_name():
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    with pytest.raises(HwlatError, match=r"the torch runtime has no setting 'thread' \(did you mean threads\?\)"):
        hwlat.runtime("torch", thread=4)
    with pytest.raises(HwlatError, match=r"no setting 'minute'.*its settings: .*opt_level"):
        hwlat.profile_device("onnxruntime", "never_made", minute=1)
    assert hwlat.runtime("onnxruntime", opt_level="basic").threads == 1


def test_settings_given_with_a_runtime_object_are_refused_not_ignored(tmp_path):
    """profile_ops(runtime_object, ..., threads=2) measured with the object's threads=1 and said nothing."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    rt = hwlat.runtime("onnxruntime")
    calls = (lambda: hwlat.profile_ops(rt, tmp_path / "ops", sweep="quick", protocol="quick", progress=False, threads=2),
             lambda: hwlat.profile_archs("nb201", [0], tmp_path / "archs", runtime=rt, progress=False, threads=2),
             lambda: hwlat.profile_device(rt, tmp_path / "dev", minutes=1, progress=False, threads=2),
             lambda: hwlat.profile_fusion(rt, tmp_path / "fusion", progress=False, threads=2))
    for call in calls:
        with pytest.raises(HwlatError, match=r"^threads=2: a runtime object \(OnnxRuntime\(onnxruntime, threads=1"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_profile_ops_takes_op_keys_and_names_an_item_it_cannot_read(tmp_path):
    """A list of op keys was an AttributeError ('str' object has no attribute 'dtype')."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    key = "relu|float32|1x16x16x16|"
    res = hwlat.profile_ops("onnxruntime", tmp_path / "ops", sweep=[key], protocol="quick", progress=False)
    assert [r.spec.key for r in res.table] == [key]
    with pytest.raises(HwlatError, match=r"^malformed op key 'relu'"):
        hwlat.profile_ops("onnxruntime", tmp_path / "bad", sweep=["relu"], protocol="quick", progress=False)
    with pytest.raises(HwlatError, match=r"^sweep item 3: give an OpSpec or its key"):
        hwlat.profile_ops("onnxruntime", tmp_path / "bad", sweep=[3], protocol="quick", progress=False)
    assert not (tmp_path / "bad.csv").exists()


def test_a_thread_count_that_is_not_one_or_more_is_a_hwlat_error():
    """threads=0 was a bare ValueError and threads="2" a TypeError ('<' not supported between 'str' and 'int')."""
    import numpy as np

    import hwlat

    for bad in (0, "2", 2.5, True):
        with pytest.raises(hwlat.HwlatError, match=rf"^threads={re.escape(repr(bad))} must be a whole number of 1 or more$"):
            hwlat.runtime("onnxruntime", threads=bad)
    assert hwlat.runtime("onnxruntime", threads=np.int64(2)).threads == 2


def test_a_device_table_given_as_a_predictor_is_named_with_the_way_to_give_it(tmp_path):
    """LatencyConstraint(Path("my_table"), ...) said only "my_table.json is not an hwlat predictor file"."""
    import hwlat

    stem = tmp_path / "ops"
    hwlat.profile_ops("onnxruntime", stem, sweep=["relu|float32|1x16x16x16|"], protocol="quick", progress=False)
    with pytest.raises(hwlat.HwlatError, match=rf"^{re.escape(str(stem))}.json is not an hwlat predictor file; "
                                               rf"it is a device table: give it as 'lut:{re.escape(str(stem))}'$"):
        hwlat.LatencyConstraint(stem, budget_ms=1.0, space="nb201")
    assert hwlat.LatencyConstraint(f"lut:{stem}", budget_ms=1.0, space="nb201", as_profiled=True).budget_ms == 1.0


def test_profile_device_refuses_zero_minutes_instead_of_running_the_default(tmp_path):
    """minutes=0 ran the default 12 minutes (`minutes or DEFAULT_MINUTES`); the command refuses --minutes 0."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    with pytest.raises(HwlatError, match=r"^--minutes 0: give a positive number of minutes"):
        hwlat.profile_device("onnxruntime", tmp_path / "t", minutes=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_option_a_space_does_not_take_is_refused_by_name():
    """hwlat.space("nb201", keepdead=True) was the constructor's TypeError; fbnet takes no option."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    with pytest.raises(HwlatError, match=r"^the nb201 space has no option 'keepdead'; its options: keep_dead$"):
        hwlat.space("nb201", keepdead=True)
    with pytest.raises(HwlatError, match=r"^the fbnet space has no option 'keep_dead'; it takes none$"):
        hwlat.suggest(hwlat.space("fbnet", keep_dead=True), 3)
    assert hwlat.space("nb201", keep_dead=True).keep_dead


def test_the_api_errors_are_caught_as_hwlat_error_which_import_hwlat_keeps_lazy():
    """A user could not catch the API's errors without knowing they live in hwlat.device_tables.errors."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    assert hwlat.HwlatError is HwlatError and "HwlatError" in dir(hwlat)
    with pytest.raises(hwlat.HwlatError, match="no device table 'nope'"):
        hwlat.load_table("nope")
    lazy = subprocess.run([sys.executable, "-c", "import sys, hwlat; print(sorted(m for m in ('numpy', 'torch', "
                           "'onnx', 'sklearn', 'hwlat.device_tables') if m in sys.modules))"], capture_output=True, text=True,
                          check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert lazy.stdout.strip() == "[]"


def test_the_api_names_are_listed_by_dir_and_help():
    import hwlat

    assert {"predict", "profile_device", "LatencyConstraint", "suggest", "plugins"} <= set(dir(hwlat))
    assert all(callable(getattr(hwlat, name)) for name in hwlat.__all__ if name not in ("__version__", "plugins"))


def test_the_api_objects_have_short_useful_reprs():
    """A Prediction printed every kernel (22 kB for an NB201 cell) and not its latency; a table and a
    runtime printed as <... object at 0x...>."""
    import hwlat

    table = hwlat.load_table("cpu_onnxruntime_fp32_threads1_xeon_m167")
    assert repr(table) == f"DeviceTable('cpu_onnxruntime_fp32_threads1_xeon_m167', cpu/onnxruntime/fp32/threads=1, {len(table)} rows)"
    p = hwlat.predict(0, table, space="nb201", as_profiled=True)
    assert repr(p).startswith("Prediction('nb201:|avg_pool_3x3~0|") and f"{p.latency_ms:.4f} ms" in repr(p)
    assert len(repr(p)) < 300 and str(p) == repr(p)
    assert repr(hwlat.runtime("litert", precision="int8")) == "LiteRTRuntime(litert, threads=1, precision='int8', xnnpack=True)"


@pytest.mark.parametrize("where", [".", "..", "/"])
def test_a_path_that_names_no_file_is_one_clear_error(where, tmp_path, monkeypatch):
    """'.' and '/' (no name) were a ValueError from pathlib ("PosixPath('.') has an empty name") in
    load_table, save_predictor, load_predictor, fit, profile_archs and drift; `save_predictor(p, "..")`
    wrote the hidden files '...json' and '...npz' into the working folder."""
    import hwlat
    from hwlat.device_tables.errors import HwlatError

    monkeypatch.chdir(tmp_path)
    pred = hwlat.adapt("nb201", [0, 1, 2], [1.0, 2.0, 3.0])
    for call in (lambda: hwlat.load_table(where), lambda: hwlat.save_predictor(pred, where),
                 lambda: hwlat.load_predictor(where, "nb201"), lambda: hwlat.fit("nb201", where),
                 lambda: hwlat.profile_archs("nb201", "0:1", where, protocol="quick", progress=False),
                 lambda: hwlat.drift(where)):
        with pytest.raises(HwlatError, match=f"^{re.escape(where)} (names|is) a folder"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_input_shapes_as_the_command_line_writes_them_and_a_module_for_a_path_are_named(tmp_path):
    """`hwlat.predict(..., input_shape="1x3x8x8")` was a bare ValueError from int(), and
    `hwlat.profile_model(torch_module)` said "<module repr>: no such file"."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    import hwlat
    from hwlat.device_tables.errors import ModelError

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    table = hwlat.load_table("cpu_onnxruntime_fp32_threads1")
    as_text = hwlat.predict(str(model), table, input_shape="1x3x32x32", as_profiled=True)
    assert as_text.latency_ms == hwlat.predict(str(model), table, input_shape=(1, 3, 32, 32), as_profiled=True).latency_ms
    assert hwlat.predict(str(model), table, input_shape={"x": "1x3x32x32"}, as_profiled=True).latency_ms == as_text.latency_ms
    with pytest.raises(ModelError, match="input shape '1x3xh' is not dimensions"):
        hwlat.predict(str(model), table, input_shape="1x3xh")
    with pytest.raises(ModelError, match="takes the path of a model file, not a ReLU"):
        hwlat.profile_model(torch.nn.ReLU())
