"""ONNX Runtime profiler: single-op models against the torch reference, whole-model profiles with
per-node mapping through ONNX Runtime's fusions, bad models, and a real resumable sweep."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hwlat.device_tables.errors import ModelError, UnsupportedOpError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.device_tables.table import DeviceTable  # noqa: E402
from hwlat.profilers.onnx_ops import build_onnx_model, input_names  # noqa: E402
from hwlat.profilers.ort.runtime import OnnxRuntime, profile_model, time_onnx_model  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402
from hwlat.profilers.run import profile_ops  # noqa: E402
from hwlat.profilers.sweeps import load_sweep  # noqa: E402
from hwlat.profilers.torch_eager.ops import build_inputs, build_module  # noqa: E402
from hwlat.profilers.weights import make_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = Protocol.preset("quick")
QUICK_FP32 = [s for s in load_sweep("quick") if s.dtype == "float32"]
EXTRA = [
    OpSpec.make("conv2d", (1, 8, 9, 9), cout=12, kernel=3, dilation=2, groups=4, bias=False, stride=2),
    OpSpec.make("conv2d+bn+add+relu", (1, 8, 9, 9), cout=8, kernel=3),
    OpSpec.make("linear+bn+relu6", (2, 16), cout=8, bias=False),
    OpSpec.make("avgpool", (1, 4, 7, 7), kernel=3, stride=2, padding=1, count_include_pad=True),
    OpSpec.make("avgpool", (1, 4, 7, 7), kernel=3, stride=2, padding=1, count_include_pad=False),
    OpSpec.make("concat", (1, 4, 5, 5), parts=3),
    OpSpec.make("hardsigmoid", (1, 4, 5, 5)),
    OpSpec.make("dwconv2d+bn+hardswish", (1, 8, 9, 9), kernel=7, stride=2),
    OpSpec.make("globalavgpool+hardsigmoid", (1, 8, 3, 3)),
    OpSpec.make("relu+relu", (1, 2, 3, 3)),
    OpSpec.make("scale", (1, 4, 5, 5)),
]


def _ort_output(spec: OpSpec) -> np.ndarray:
    model = build_onnx_model(spec)
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(input_names(spec), make_inputs(spec))))[0]


@pytest.mark.parametrize("spec", QUICK_FP32 + EXTRA, ids=lambda s: s.key)
def test_single_op_model_matches_torch_reference(spec):
    got = _ort_output(spec)
    with torch.inference_mode():
        want = build_module(spec)(*build_inputs(spec)).numpy()
    assert got.shape == want.shape == spec.output_shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_reference_is_not_trivially_equal():
    """Different weights give a different output: the parity test would catch a wrong weight layout."""
    spec = OpSpec.make("conv2d", (1, 4, 6, 6), cout=4, kernel=3)
    with torch.inference_mode():
        a = build_module(spec, seed=0)(*build_inputs(spec)).numpy()
        b = build_module(spec, seed=1)(*build_inputs(spec)).numpy()
    assert not np.allclose(a, b)
    assert np.allclose(_ort_output(spec), a, rtol=1e-4, atol=1e-5)


def test_int8_is_unsupported():
    spec = OpSpec.make("relu", (1, 4, 4, 4), dtype="int8")
    with pytest.raises(UnsupportedOpError, match="fp32"):
        build_onnx_model(spec)
    with pytest.raises(UnsupportedOpError, match="int8"):
        OnnxRuntime().prepare(spec)
    with pytest.raises(UnsupportedOpError, match="litert"):
        OnnxRuntime(precision="int8")


def test_runtime_measures_and_names_its_device():
    rt = OnnxRuntime(threads=1)
    m, _ = rt.measure(OpSpec.make("conv2d+bn+relu", (1, 8, 8, 8), cout=8, kernel=3), QUICK)
    assert m.median_ms > 0 and m.n >= QUICK.min_runs
    dev = rt.device()
    assert dev.name == "cpu/onnxruntime/fp32/threads=1"
    session = dev.fingerprint["runtime"]["session"]
    assert session["graph_optimization_level"] == "all" and session["intra_op_threads"] == 1
    assert dev.fingerprint["runtime"]["onnxruntime"] == ort.__version__
    assert OnnxRuntime(opt_level="basic").device().name == "cpu/onnxruntime/fp32/opt_level=basic/threads=1"
    with pytest.raises(ValueError, match="optimisation level"):
        OnnxRuntime(opt_level="fast")


# ---- whole models ------------------------------------------------------------------------
def _init(name: str, arr: np.ndarray):
    return numpy_helper.from_array(arr.astype(np.float32), name)


def _small_model(batch: int | str = 1, names: bool = True) -> "onnx.ModelProto":
    """x -> Conv -> BN -> Relu -> Conv -> Add(residual) -> Relu -> HardSwish -> GAP -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    c = 8
    inits = [
        _init("w1", rng.normal(size=(c, 3, 3, 3)) * 0.3), _init("b1", rng.normal(size=c) * 0.1),
        _init("gamma", rng.uniform(0.5, 1.5, c)), _init("beta", rng.normal(size=c) * 0.1),
        _init("mean", rng.normal(size=c) * 0.1), _init("var", rng.uniform(0.5, 1.5, c)),
        _init("w2", rng.normal(size=(c, c, 3, 3)) * 0.2), _init("wfc", rng.normal(size=(10, c)) * 0.3),
    ]
    spec = [
        ("Conv", ["x", "w1", "b1"], ["c1"], "conv1", {"pads": [1, 1, 1, 1]}),
        ("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], "bn1", {}),
        ("Relu", ["n1"], ["r1"], "relu1", {}),
        ("Conv", ["r1", "w2"], ["c2"], "conv2", {"pads": [1, 1, 1, 1]}),
        ("Add", ["c2", "r1"], ["a2"], "add2", {}),
        ("Relu", ["a2"], ["r2"], "relu2", {}),
        ("HardSwish", ["r2"], ["h2"], "hswish", {}),
        ("GlobalAveragePool", ["h2"], ["g"], "gap", {}),
        ("Flatten", ["g"], ["f"], "flatten", {}),
        ("Gemm", ["f", "wfc"], ["y"], "fc", {"transB": 1}),
    ]
    nodes = [helper.make_node(op, i, o, name=(n if names else ""), **a) for op, i, o, n, a in spec]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    graph = helper.make_graph(nodes, "small", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "small.onnx"
    onnx.save(_small_model(), path)
    return path


def _covering(prof, source_node: str):
    rows = [n for n in prof.nodes if source_node in n.source_nodes]
    assert rows, f"{source_node} is covered by no runtime node: {[(n.name, n.source_nodes) for n in prof.nodes]}"
    return rows


@pytest.mark.parametrize("level", ["all", "extended"])
def test_fused_nodes_map_back_to_every_source_node(small_model, level):
    prof = profile_model(small_model, opt_level=level, protocol=QUICK, profile_runs=10)
    fused = _covering(prof, "conv1")
    assert len(fused) == 1
    assert {"conv1", "bn1", "relu1"} <= set(fused[0].source_nodes), "Conv+BN+Relu run as one kernel"
    assert fused[0].fused and len(prof.nodes) < prof.source_node_count
    for name in ("conv2", "add2", "relu2", "gap", "fc"):
        assert len(_covering(prof, name)) == 1, name  # each source op runs in exactly one kernel...
    assert len(_covering(prof, "hswish")) in (1, 2)  # ...but an inlined HardSwish may be HardSigmoid + Mul
    assert not {"add2", "relu2"} & {s for n in _covering(prof, "hswish") for s in n.source_nodes}
    assert [r.name for r in _covering(prof, "conv1")] != [r.name for r in _covering(prof, "fc")]
    for n in prof.nodes:  # every kernel is explained: a source node, or a layout move ONNX Runtime inserted
        assert n.source_nodes or n.op_type in ("ReorderInput", "ReorderOutput", "Transpose"), n
    assert sum(n.share for n in prof.nodes) == pytest.approx(1.0, abs=1e-6)
    assert prof.nodes[-1].cum_share == pytest.approx(1.0, abs=1e-6)
    assert all(a.time_us >= b.time_us for a, b in zip(prof.nodes, prof.nodes[1:]))
    assert prof.latency.median_ms > 0 and prof.opt_level == level and prof.threads == 1
    text = prof.format()
    assert "conv1 (Conv), bn1 (BatchNormalization), relu1 (Relu)" in text and "share" in text and "cum." in text
    assert len(prof.format(top=2).splitlines()) < len(text.splitlines())
    json.dumps(prof.to_dict())


def _se_model() -> "onnx.ModelProto":
    """conv -> HardSwish -> squeeze-excite (GAP, conv+Relu, conv+HardSigmoid, Mul) -> conv -> HardSwish."""
    rng = np.random.default_rng(1)
    c, r = 8, 4
    inits = [_init("wa", rng.normal(size=(c, 3, 3, 3)) * 0.3), _init("ba", rng.normal(size=c) * 0.1),
             _init("w1", rng.normal(size=(r, c, 1, 1)) * 0.3), _init("b1", rng.normal(size=r) * 0.1),
             _init("w2", rng.normal(size=(c, r, 1, 1)) * 0.3), _init("b2", rng.normal(size=c) * 0.1),
             _init("wp", rng.normal(size=(c, c, 1, 1)) * 0.3), _init("bp", rng.normal(size=c) * 0.1)]
    spec = [("Conv", ["x", "wa", "ba"], ["a"], "conv_a", {"pads": [1, 1, 1, 1]}),
            ("HardSwish", ["a"], ["h"], "hs_a", {}),
            ("GlobalAveragePool", ["h"], ["g"], "gap", {}),
            ("Conv", ["g", "w1", "b1"], ["s1"], "se1", {}),
            ("Relu", ["s1"], ["s1r"], "se_relu", {}),
            ("Conv", ["s1r", "w2", "b2"], ["s2"], "se2", {}),
            ("HardSigmoid", ["s2"], ["gt"], "gate", {"alpha": 1 / 6}),
            ("Mul", ["h", "gt"], ["m"], "scale", {}),
            ("Conv", ["m", "wp", "bp"], ["p"], "proj", {}),
            ("HardSwish", ["p"], ["y"], "hs_b", {})]
    nodes = [helper.make_node(op, i, o, name=n, **a) for op, i, o, n, a in spec]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 12, 12])
    model = helper.make_model(helper.make_graph(nodes, "se", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("level", ["extended", "all"])
def test_squeeze_excite_pieces_map_to_their_own_source_ops(tmp_path, level):
    """Pieces of an inlined HardSwish must not be matched to an unrelated Mul upstream (the SE scale)."""
    path = tmp_path / "se.onnx"
    onnx.save(_se_model(), path)
    prof = profile_model(path, opt_level=level, protocol=QUICK, profile_runs=5)
    gate = _covering(prof, "gate")
    assert len(gate) == 1 and "se2" in gate[0].source_nodes, "Conv+HardSigmoid run as one kernel"
    scale = _covering(prof, "scale")
    assert len(scale) == 1 and scale[0].source_nodes == ("scale",)
    for n in _covering(prof, "hs_b"):
        assert set(n.source_nodes) <= {"proj", "hs_b"}, n


def test_the_kernels_of_a_qdq_model_map_to_the_ops_they_quantise(tmp_path):
    """ONNX Runtime runs a QDQ model's Conv+Relu as a QLinearConv named `<conv>_token_N`, which was mapped by
    its output alone: the first conv's kernel to the quantise node after the second conv, the first conv
    to the second conv's kernel."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    inits = [_init("w1", rng.normal(size=(8, 3, 3, 3)) * 0.3), _init("w2", rng.normal(size=(8, 8, 3, 3)) * 0.2)]
    spec = [("Conv", ["x", "w1"], ["c1"], "conv1"), ("Relu", ["c1"], ["r1"], "relu1"),
            ("Conv", ["r1", "w2"], ["c2"], "conv2"), ("Relu", ["c2"], ["y"], "relu2")]
    nodes = [helper.make_node(op, i, o, name=n, pads=[1, 1, 1, 1]) if op == "Conv" else
             helper.make_node(op, i, o, name=n) for op, i, o, n in spec]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    model = helper.make_model(helper.make_graph(nodes, "convs", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp32, qdq = tmp_path / "convs.onnx", tmp_path / "convs_qdq.onnx"
    onnx.save(model, fp32)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": np.random.default_rng(i).normal(size=(1, 3, 16, 16)).astype(np.float32)}
                            for i in range(2)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(qdq), Batches(), quant_format=QuantFormat.QDQ)
    prof = profile_model(qdq, protocol=QUICK, profile_runs=5)
    for conv in ("conv1", "conv2"):
        (kernel,) = _covering(prof, conv)
        assert kernel.op_type == "QLinearConv" and kernel.name.startswith(f"{conv}_token_"), (conv, kernel)
        assert {"conv1", "conv2"} & set(kernel.source_nodes) == {conv}, kernel


def test_without_optimisation_each_node_is_its_own_kernel(small_model):
    prof = profile_model(small_model, opt_level="disable", protocol=QUICK, profile_runs=10)
    assert all(len(n.source_nodes) == 1 for n in prof.nodes)
    assert {n.source_nodes[0] for n in prof.nodes} == {
        "conv1", "bn1", "relu1", "conv2", "add2", "relu2", "hswish", "gap", "flatten", "fc"}
    # ONNX Runtime inlines the HardSwish function even unoptimised: two kernels, one source node.
    assert sorted(n.op_type for n in _covering(prof, "hswish")) == ["HardSigmoid", "Mul"]
    assert all(n.source_nodes == (n.name,) for n in prof.nodes if "hswish" not in n.source_nodes)


def test_unnamed_nodes_are_named_and_mapped(tmp_path):
    path = tmp_path / "unnamed.onnx"
    onnx.save(_small_model(names=False), path)
    prof = profile_model(path, protocol=QUICK, profile_runs=10)
    covered = {s for n in prof.nodes for s in n.source_nodes} | {e[0] for e in prof.eliminated}
    assert len(covered) == 10 and all(s for s in covered)


def test_malformed_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff")
    with pytest.raises(ModelError, match="broken.onnx"):
        profile_model(bad, protocol=QUICK)
    with pytest.raises(ModelError, match="no such file"):
        profile_model(tmp_path / "missing.onnx", protocol=QUICK)
    with pytest.raises(ModelError, match="broken.onnx"):
        time_onnx_model(bad, protocol=QUICK)


def test_unsupported_model_names_the_file(tmp_path):
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="f", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path = tmp_path / "custom_op.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"custom_op\.onnx.*(Frobnicate|cannot load)"):
        profile_model(path, protocol=QUICK)


def test_a_graph_output_without_a_shape_is_profiled(tmp_path):
    """A model made with onnx.helper, its output declared without a shape, which ONNX Runtime runs and
    `hwlat predict` predicts, was refused as 'invalid ONNX model (Field 'shape' of 'type' is required but
    missing.)' by onnx.checker."""
    model = _small_model()
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    path = tmp_path / "no_output_shape.onnx"
    onnx.save(model, path)
    prof = profile_model(path, protocol=QUICK, profile_runs=5)
    assert prof.latency.median_ms > 0 and prof.source_node_count == 10


def test_dynamic_input_needs_a_shape(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(_small_model(batch="N"), path)
    with pytest.raises(ModelError, match=r"dynamic\.onnx.*'x'.*dynamic.*--input-shape.*e\.g\. --input-shape 1x3x16x16"):
        profile_model(path, protocol=QUICK)
    with pytest.raises(ModelError, match=r"no input named 'y'; inputs: x"):  # a misspelt name, not "x is dynamic"
        profile_model(path, input_shape={"y": (1, 3, 16, 16)}, protocol=QUICK)
    with pytest.raises(ModelError, match="--input-shape"):
        time_onnx_model(str(path), protocol=QUICK)
    with pytest.raises(ModelError, match="rank"):
        profile_model(path, input_shape=(2, 3, 16), protocol=QUICK)
    with pytest.raises(ModelError, match="disagrees"):
        profile_model(path, input_shape=(2, 4, 16, 16), protocol=QUICK)
    prof = profile_model(path, input_shape=(2, 3, 16, 16), protocol=QUICK, profile_runs=5)
    assert prof.input_shapes == {"x": [2, 3, 16, 16]}


def test_time_onnx_model_from_bytes_and_path(small_model):
    m1 = time_onnx_model(small_model.read_bytes(), threads=1, protocol=QUICK)
    m2 = time_onnx_model(small_model, threads=1, protocol=QUICK)
    assert m1.median_ms > 0 and m2.median_ms > 0 and m1.n >= QUICK.min_runs


# ---- sweeps into tables ------------------------------------------------------------------
def test_short_real_sweep_writes_a_valid_table(tmp_path):
    specs = QUICK_FP32[:4] + [OpSpec.make("relu", (1, 4, 4, 4), dtype="int8")]
    result = profile_ops(OnnxRuntime(threads=1), specs, tmp_path / "ort", QUICK, progress=False)
    assert result.measured == 4 and result.failed == 0
    table = DeviceTable.load(tmp_path / "ort")
    assert len(table) == 4 and all(r.ok and r.measurement.median_ms > 0 for r in table)
    assert table.device.name == "cpu/onnxruntime/fp32/threads=1"
    assert table.meta["runtime_settings"]["threads"] == 1
    assert table.device.fingerprint["runtime"]["session"]["graph_optimization_level"] == "all"


def _keys(csv_path: Path) -> list[str]:
    """Keys of the complete rows written so far."""
    if not csv_path.exists():
        return []
    text = csv_path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [row[0] for row in list(csv.reader(io.StringIO(complete)))[1:] if row]


def test_sweep_killed_mid_run_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", "onnxruntime", "--sweep", "quick",
           "--protocol", "quick", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    csv_path = out.with_name("killed.csv")
    deadline = time.monotonic() + 60
    while len(_keys(csv_path)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed_at = len(_keys(csv_path))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert 3 <= killed_at < len(QUICK_FP32)

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    keys = _keys(csv_path)
    assert len(keys) == len(set(keys)), "a row was measured twice"
    assert set(keys) == {s.key for s in QUICK_FP32}, "a row was lost"
    assert len(DeviceTable.load(out)) == len(QUICK_FP32)
    check = subprocess.run([sys.executable, "-m", "hwlat", "table", "validate", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "valid" in check.stdout


def test_missing_or_broken_onnxruntime_is_reported(monkeypatch):
    import types

    from hwlat.device_tables.errors import RuntimeUnavailableError
    from hwlat.profilers.ort import install

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import` sees when the package is absent
    with pytest.raises(RuntimeUnavailableError, match="not installed.*pip install onnxruntime"):
        install.import_onnxruntime()
    monkeypatch.setitem(sys.modules, "onnxruntime", types.ModuleType("onnxruntime"))  # a leftover directory
    with pytest.raises(RuntimeUnavailableError, match="reinstall"):
        install.import_onnxruntime()
    stale = types.SimpleNamespace(__version__="0.0.1", get_available_providers=lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailableError, match="mixed install"):
        install.check_install(stale)
    no_cpu = types.SimpleNamespace(__version__=ort.__version__, get_available_providers=lambda: ["CUDAExecutionProvider"])
    with pytest.raises(RuntimeUnavailableError, match="CPUExecutionProvider"):
        install.check_install(no_cpu)


def test_single_op_rows_record_the_nchwc_reorders_around_them():
    """On x86, ONNX Runtime runs a lone conv as ReorderInput -> Conv -> ReorderOutput; the row keeps
    the reorders' shares of the node time (taken off inside networks, hwlat.predictors.lut); a relu has none."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("ONNX Runtime's NCHWc layout is an x86 optimisation")
    rt = OnnxRuntime(threads=1)
    _, extra = rt.measure(OpSpec.make("conv2d", (1, 16, 24, 24), cout=16, kernel=3), Protocol.preset("quick"))
    assert set(extra) == {"reorder_in_share", "reorder_out_share"}
    assert 0 < extra["reorder_in_share"] < 1 and 0 < extra["reorder_out_share"] < 1
    assert extra["reorder_in_share"] + extra["reorder_out_share"] < 1
    _, extra = rt.measure(OpSpec.make("relu", (1, 16, 24, 24)), Protocol.preset("quick"))
    assert extra == {}


def test_an_attention_mask_input_is_fed_all_ones_so_every_token_is_attended():
    """`hwlat profile model` on a BERT with an int64 attention_mask: ids are fed zeros, a mask ones. A
    mask of zeros pads every token: -inf scores, NaN out, and a softmax ONNX Runtime runs 7x slower."""
    from hwlat.profilers.ort.session import bind, create_session, session_options
    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    i64 = TensorProto.INT64
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("ReduceMean", ["x"], ["scores"], axes=[2], keepdims=0),
             helper.make_node("Equal", ["attention_mask", "zero"], ["pad"]),
             helper.make_node("Where", ["pad", "ninf", "scores"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1)]
    inits = [numpy_helper.from_array(np.ones((10, 3), np.float32), "emb"), numpy_helper.from_array(np.array(0), "zero"), numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf")]
    graph = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info("input_ids", i64, [1, 4]),
                                                helper.make_tensor_value_info("attention_mask", i64, [1, 4])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    shapes = {"input_ids": ((1, 4), np.int64), "attention_mask": ((1, 4), np.int64)}
    bound = bind(ort, create_session(ort, model, session_options(ort, 1, "all"), "model", ["CPUExecutionProvider"]),
                 shapes, "model")
    assert bound.feeds["input_ids"].tolist() == [[0] * 4] and bound.feeds["attention_mask"].tolist() == [[1] * 4]
    np.testing.assert_allclose(bound.session.run(None, bound.feeds)[0], 0.25)
    module, _ = onnx_module(model, torch)
    np.testing.assert_allclose(module(*module.example_inputs()).numpy(), 0.25)
