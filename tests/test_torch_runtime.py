"""PyTorch eager runtime: the single-op modules compute the ops (checked against numpy), the
runtime times them with explicit threads in inference mode, and sweeps write valid tables."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.device_tables.table import DeviceTable  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402
from hwlat.profilers.run import profile_ops  # noqa: E402
from hwlat.profilers.sweeps import load_sweep  # noqa: E402
from hwlat.profilers.torch_eager.runtime import TorchRuntime, time_torch_module  # noqa: E402
from hwlat.profilers.torch_eager.ops import build_inputs, build_module  # noqa: E402
from hwlat.profilers.weights import BN_EPS, make_inputs, make_weights  # noqa: E402

QUICK = Protocol.preset("quick")


def _run(spec: OpSpec) -> np.ndarray:
    with torch.inference_mode():
        return build_module(spec)(*build_inputs(spec)).numpy()


def _conv_ref(x, w, b, stride, pad, dil, groups):
    """Direct NCHW convolution in numpy (tiny shapes only)."""
    n, cin, h, wd = x.shape
    cout, cin_g, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dil * (k - 1) - 1) // stride + 1
    y = np.zeros((n, cout, ho, wo), np.float64)
    per = cout // groups
    for o in range(cout):
        g = o // per
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * cin_g:(g + 1) * cin_g, i * stride:i * stride + dil * (k - 1) + 1:dil,
                           j * stride:j * stride + dil * (k - 1) + 1:dil]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def _bn_ref(y, w):
    shape = (1, -1) + (1,) * (y.ndim - 2)
    scale = w["bn_gamma"].reshape(shape) / np.sqrt(w["bn_var"].reshape(shape) + BN_EPS)
    return (y - w["bn_mean"].reshape(shape)) * scale + w["bn_beta"].reshape(shape)


@pytest.mark.parametrize("spec", [
    OpSpec.make("conv2d", (1, 4, 7, 7), cout=6, kernel=3, stride=2, dilation=2, groups=2),
    OpSpec.make("dwconv2d+bn+relu6", (1, 3, 6, 6), kernel=5, stride=1, bias=False),
    OpSpec.make("pwconv2d+bn+add", (1, 4, 5, 5), cout=4),
], ids=lambda s: s.op)
def test_convolutions_match_a_direct_numpy_convolution(spec):
    x = make_inputs(spec)[0].astype(np.float64)
    w = make_weights(spec)
    a = spec.a
    if spec.base == "dwconv2d":
        y = _conv_ref(x, w["W"], w.get("b"), a["stride"], a["padding"], a["dilation"], spec.input_shape[1])
    elif spec.base == "pwconv2d":
        y = _conv_ref(x, w["W"], w.get("b"), a["stride"], 0, 1, 1)
    else:
        y = _conv_ref(x, w["W"], w.get("b"), a["stride"], a["padding"], a["dilation"], a["groups"])
    if "bn" in spec.parts:
        y = _bn_ref(y, w)
    if "add" in spec.parts:
        y = y + make_inputs(spec)[-1]
    if "relu6" in spec.parts:
        y = np.clip(y, 0, 6)
    np.testing.assert_allclose(_run(spec), y, rtol=1e-4, atol=1e-5)


def test_elementwise_pooling_and_linear_match_numpy():
    def check(spec, fn):
        want = fn(*[x.astype(np.float64) for x in make_inputs(spec)])
        np.testing.assert_allclose(_run(spec), want, rtol=1e-5, atol=1e-6)

    shape = (1, 3, 4, 4)
    check(OpSpec.make("relu6", shape), lambda x: np.clip(x, 0, 6))
    check(OpSpec.make("hardswish", shape), lambda x: x * np.clip(x + 3, 0, 6) / 6)
    check(OpSpec.make("hardsigmoid", shape), lambda x: np.clip(x + 3, 0, 6) / 6)
    check(OpSpec.make("sigmoid", shape), lambda x: 1 / (1 + np.exp(-x)))
    check(OpSpec.make("mul", shape), lambda x, s: x * s)
    check(OpSpec.make("add+relu", shape), lambda x, y: np.maximum(x + y, 0))
    check(OpSpec.make("concat", shape, parts=3), lambda *xs: np.concatenate(xs, axis=1))
    check(OpSpec.make("globalavgpool", shape), lambda x: x.mean(axis=(2, 3), keepdims=True))
    check(OpSpec.make("maxpool", shape, kernel=2), lambda x: x.reshape(1, 3, 2, 2, 2, 2).max(axis=(3, 5)))
    # 3x3 average with padding 1 at a corner: 4 real values, divided by 4 (exclude pad) or 9 (include).
    for include in (False, True):
        spec = OpSpec.make("avgpool", shape, kernel=3, stride=1, padding=1, count_include_pad=include)
        x = make_inputs(spec)[0]
        assert _run(spec)[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].sum() / (9 if include else 4), rel=1e-5)
    spec = OpSpec.make("linear+bn", (2, 5), cout=3)
    w = make_weights(spec)
    check(spec, lambda x: _bn_ref(x @ w["W"].T.astype(np.float64) + w["b"], w))


@pytest.mark.parametrize("spec", [s for s in load_sweep("quick") if s.dtype == "float32"], ids=lambda s: s.key)
def test_quick_sweep_modules_have_the_spec_output_shape(spec):
    assert _run(spec).shape == spec.output_shape


def test_modules_are_deterministic_and_seeded():
    spec = OpSpec.make("conv2d+bn+relu", (1, 4, 6, 6), cout=4, kernel=3)
    np.testing.assert_array_equal(_run(spec), _run(spec))
    with torch.inference_mode():
        other = build_module(spec, seed=3)(*build_inputs(spec)).numpy()
    assert not np.allclose(_run(spec), other)
    assert not any(p.requires_grad for p in build_module(spec).parameters())


def test_runtime_measures_with_explicit_threads():
    rt = TorchRuntime(threads=1)
    assert torch.get_num_threads() == 1
    m, extra = rt.measure(OpSpec.make("dwconv2d+bn+relu6", (1, 16, 8, 8), kernel=3), QUICK)
    assert m.median_ms > 0 and m.n >= QUICK.min_runs
    dev = rt.device()
    assert dev.name == "cpu/torch/fp32/threads=1"
    assert dev.fingerprint["runtime"]["torch"] == torch.__version__
    assert dev.fingerprint["runtime"]["intra_op_threads"] == 1
    assert TorchRuntime(threads=2).device().name == "cpu/torch/fp32/threads=2" and torch.get_num_threads() == 2
    TorchRuntime(threads=1)


def test_measurement_runs_in_inference_mode():
    seen: list[bool] = []

    class Recording(TorchRuntime):
        def prepare(self, spec):
            prepared = super().prepare(spec)
            inner = prepared.timed

            def timed() -> float:
                seen.append(torch.is_inference_mode_enabled())
                return inner()

            prepared.timed = timed
            return prepared

    Recording().measure(OpSpec.make("relu", (1, 2, 2, 2)), QUICK)
    assert seen and all(seen)
    assert not torch.is_inference_mode_enabled()


def test_int8_and_other_devices_are_refused():
    with pytest.raises(UnsupportedOpError, match="int8"):
        TorchRuntime().prepare(OpSpec.make("relu", (1, 2, 2, 2), dtype="int8"))
    with pytest.raises(UnsupportedOpError, match="fp32"):
        TorchRuntime(precision="int8")
    with pytest.raises(RuntimeUnavailableError, match="cuda"):  # CUDA itself: tests/test_gpu.py
        TorchRuntime(device="tpu")


def test_time_torch_module():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    m = time_torch_module(module, [torch.rand(1, 3, 16, 16)], threads=1, protocol=QUICK)
    assert m.median_ms > 0 and m.n >= QUICK.min_runs and not module.training


def test_short_real_sweep_writes_a_valid_table(tmp_path):
    specs = [s for s in load_sweep("quick") if s.dtype == "float32"][:4]
    specs.append(OpSpec.make("relu", (1, 4, 4, 4), dtype="int8"))
    result = profile_ops(TorchRuntime(threads=1), specs, tmp_path / "torch", QUICK, progress=False)
    assert result.measured == 4 and result.failed == 0
    table = DeviceTable.load(tmp_path / "torch")
    assert len(table) == 4 and all(r.ok for r in table)
    assert table.device.name == "cpu/torch/fp32/threads=1"


def test_missing_torch_is_reported(monkeypatch):
    import sys

    from hwlat.profilers.torch_eager.runtime import import_torch

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(RuntimeUnavailableError, match="not installed.*pip install 'torch>="):
        import_torch()


# ---- whole networks: the ONNX graph run with torch eager ops --------------------------------------
@pytest.mark.parametrize("which", ["mobilenet_v3_small@r160w0.75", "resnet18@r160w0.5", "nb201", "fbnet", "ofa"])
def test_onnx_module_computes_what_onnxruntime_computes(which):
    ort = pytest.importorskip("onnxruntime")
    from hwlat.nas.models import to_onnx
    from hwlat.nas.spaces import get_space
    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    if "@" in which:
        model = to_onnx(which)
    else:
        sp = get_space(which)
        model = sp.to_onnx(sp.sample(1, 3)[0])
    module, shape = onnx_module(model, torch)
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_torch_times_whole_networks_and_architectures():
    from hwlat.nas.models import to_onnx
    from hwlat.nas.spaces import get_space
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.torch_eager.runtime import TorchRuntime

    rt = TorchRuntime(threads=1)
    assert rt.times_whole_models() and rt.times_archs()
    m = rt.time_model(to_onnx("mobilenet_v2@r96w0.5"), Protocol.preset("quick"))
    assert m.median_ms > 0 and m.n >= 5
    nb = get_space("nb201")
    m, build_ms = rt.time_arch(nb, nb.parse(1462), Protocol.preset("quick"))
    assert m.median_ms > 0 and build_ms > 0


def test_an_onnx_op_torch_does_not_run_is_named_before_timing():
    from onnx import TensorProto, helper

    from hwlat.device_tables.errors import UnsupportedOpError
    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")], "g", [x], [y])
    model = helper.make_model(g).SerializeToString()
    with pytest.raises(UnsupportedOpError) as info:
        onnx_module(model, torch)
    # the op first, then what to do: not after the 45 op types torch does run (a 600-character line)
    assert str(info.value).startswith("torch cannot run this model's Einsum node")
    assert "--runtime onnxruntime" in str(info.value) and len(str(info.value)) < 200


def test_eager_mode_runs_one_kernel_per_op_so_one_slow_timing_of_a_head_does_not_fuse_its_pattern():
    """`count_kernels` says eager PyTorch runs each part of a pattern on its own; the fusion probe then
    keeps `conv2d+relu` apart even when its `conv2d` part first reads 30% slow (which, timed alone,
    made the tiny relu tail look free: fused)."""
    from hwlat.profilers.fusion import detect_fusion

    rt = TorchRuntime(threads=1)
    protocol = Protocol.preset("quick")
    assert rt.count_kernels(OpSpec.make("conv2d+bn+relu", (1, 16, 32, 32), cout=16, kernel=3)) == 3
    assert rt.count_kernels(OpSpec.make("relu", (1, 16, 32, 32))) == 1
    slowed: list[str] = []

    def measure(spec):
        m, extra = rt.measure(spec, protocol)
        if spec.op == "conv2d" and not slowed:  # the head part's first timing, caught in a slow spell
            slowed.append(spec.key)
            m = type(m).from_samples([1.3 * m.median_ms] * 5)
        return m, extra

    rules, results = detect_fusion(rt, ["conv2d+relu"], protocol, progress=False, measure=measure, extras=False)
    assert slowed and results[0].kernels == 2
    assert not rules.fuses("conv2d+relu"), results[0]


def test_profile_model_times_a_model_file_whole_where_the_runtime_has_no_node_profile(tmp_path, capsys):
    """`hwlat profile model --runtime torch` (no per-node profile): the whole model from its file, the
    quantity a torch table predicts; a board, which runs one kernel at a time, refuses in one line."""
    import json

    from hwlat.cli import main
    from hwlat.nas.models import to_onnx

    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx("mobilenet_v2@r64w0.5"))
    assert main(["profile", "model", str(path), "--runtime", "torch", "--protocol", "quick", "--json",
                 str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "ms median" in out and "on cpu/torch/fp32/threads=1" in out and "the whole model only" in out
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["device"] == "cpu/torch/fp32/threads=1" and report["latency"]["median_ms"] > 0
    # its setup, as a table records it: the protocol, the torch version and the host (they were left out)
    assert report["protocol"]["clock"] == "cpu" and report["protocol"]["min_runs"] == 5
    assert report["fingerprint"]["runtime"]["torch"] and report["fingerprint"]["cpu_model"]
    assert main(["profile", "model", str(path), "--runtime", "board"]) == 1
    assert "runs one kernel at a time, not a whole model" in capsys.readouterr().err
    # --runs (the runs of onnxruntime's per-node profile) was silently ignored by a runtime without one.
    assert main(["profile", "model", str(path), "--runtime", "torch", "--runs", "5"]) == 1
    assert "--runs sets the runs of a per-node profile, which the torch runtime does not give" in capsys.readouterr().err
    import hwlat
    from hwlat.profilers.protocol import Protocol

    api = hwlat.profile_model(path, "torch", protocol=Protocol.preset("quick"))  # the same in Python
    assert api.device == report["device"] and api.latency.median_ms > 0 and "whole model only" in api.format()


def test_onnx_module_gathers_with_negative_indices_as_onnx_counts_them():
    """ONNX counts a Gather's negative indices from the end: torch.onnx's legacy exporter writes
    `Gather(Shape(x), [-1])` for `tensor.chunk(3, -1)` (a transformer's qkv split), which
    `index_select` refused ("index out of range"), so `profile model --runtime torch` failed on it."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    last = helper.make_tensor("last", TensorProto.INT64, [1], [-1])
    cols = helper.make_tensor("cols", TensorProto.INT64, [2], [-1, 0])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "last"], ["n"]),       # [6]: the last dimension, folded
             helper.make_node("Gather", ["x", "cols"], ["g"], axis=1),  # x[:, [5, 0]], run on the input
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["g", "nf"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [y], initializer=[last, cols])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    module, _ = onnx_module(model, torch)
    xs = np.arange(12, dtype=np.float32).reshape(2, 6)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": xs})[0]
    with torch.inference_mode():
        got = module(torch.from_numpy(xs)).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_onnx_module_pads_convs_and_pools_as_their_auto_pad_says(auto_pad):
    """`auto_pad` (torch.onnx writes SAME_UPPER for `padding='same'` with an even kernel; TF converters
    write it too) sets a Conv's or a pool's padding; it was ignored, so torch timed an unpadded,
    smaller network than the file's, silently."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 4, 4), dtype=np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[4, 4], auto_pad=auto_pad),
             helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[2, 2], strides=[2, 2], auto_pad=auto_pad),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[2, 2], auto_pad=auto_pad, count_include_pad=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    module, _ = onnx_module(model, torch)
    x = np.random.default_rng(1).standard_normal((1, 3, 9, 9), dtype=np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_onnx_module_runs_a_model_of_several_outputs(tmp_path, capsys):
    """A network with two heads: the table predicts it, and torch (which refused every model of more
    than one output) times it, computing both as onnxruntime does, a folded output included."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from hwlat.cli import main
    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s, dtype=np.float32), n)
             for n, s in (("w", (8, 3, 3, 3)), ("a", (4, 8, 1, 1)), ("b", (2, 8, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "a"], ["ya"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["r", "b"], ["yb"], kernel_shape=[1, 1]),
             helper.make_node("Shape", ["x"], ["shape"])]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in (("ya", TensorProto.FLOAT), ("yb", TensorProto.FLOAT),
                                                                    ("shape", TensorProto.INT64))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], outs,
                          initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    module, _ = onnx_module(model, torch)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8), dtype=np.float32)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with torch.inference_mode():
        got = module(torch.from_numpy(x))
    assert len(got) == 3
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_.numpy(), w_, rtol=1e-5, atol=1e-5)
    path = tmp_path / "two.onnx"
    path.write_bytes(model)
    assert main(["profile", "model", str(path), "--runtime", "torch", "--protocol", "quick"]) == 0
    assert "ms median" in capsys.readouterr().out


def test_profile_model_records_the_input_shapes_it_timed(tmp_path, capsys):
    """A dynamic model timed at `--input-shape`: the report says at which shape, as onnxruntime's does
    (torch's said nothing of it, so the number could not be reused)."""
    import json

    from onnx import TensorProto, helper

    from hwlat.cli import main

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "dyn.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert main(["profile", "model", str(path), "--runtime", "torch", "--protocol", "quick", "--input-shape",
                 "2x3x8x8", "--json", str(tmp_path / "r.json")]) == 0
    assert "(x 2x3x8x8)" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["input_shapes"] == {"x": [2, 3, 8, 8]}
    static = tmp_path / "static.onnx"  # a model of fixed shapes: its own
    g.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]))
    static.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert main(["profile", "model", str(static), "--runtime", "torch", "--protocol", "quick"]) == 0
    assert "(x 1x3x4x4)" in capsys.readouterr().out


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_onnx_module_flattens_to_two_dimensions_as_onnx_does(axis):
    """ONNX's Flatten always gives a matrix (the dimensions before `axis` times those from it);
    `torch.flatten(x, axis)` gave another rank for any axis but 1, so torch timed another network."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    g = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    module, _ = onnx_module(model, torch)
    x = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
