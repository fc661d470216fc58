"""LiteRT: hwlat's own .tflite FlatBuffers run in the real interpreter and compute the reference.

fp32 models are checked against PyTorch on the spec's NCHW tensors (an independent reference of
layout, padding and batch-norm folding); int8 models against `hwlat.profilers.tflite.int8_reference`: bit-exact
for LiteRT's portable reference kernels, and within one step (1 LSB) for the optimised builtin
kernels and XNNPACK, whose requantisation rounding is modelled per family (`kernels=`) but whose
SIMD code paths depend on the CPU (on this x86-64 machine they are bit-exact too).
"""

from __future__ import annotations

import numpy as np
import pytest

from hwlat.device_tables import DeviceTable
from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.sweeps import load_sweep
from hwlat.profilers.tflite import int8_reference as q8
from hwlat.profilers.tflite.builder import build_model, export_quantized
from hwlat.profilers.tflite.flatbuffer import serialize
from hwlat.profilers.tflite.graph import TFLiteGraph, to_nchw
from hwlat.profilers.weights import BN_EPS, make_inputs, make_weights

litert = pytest.importorskip("hwlat.profilers.litert.runtime")

QUICK = load_sweep("quick")
# Beyond the quick sweep: the padding, folding and grouping paths it does not reach.
EXTRA = [
    OpSpec.make("maxpool", (1, 16, 16, 16), kernel=3, stride=2, padding=1),
    OpSpec.make("avgpool", (1, 16, 16, 16), kernel=3, stride=2, padding=1, count_include_pad=True),
    OpSpec.make("avgpool", (1, 16, 16, 16), kernel=2, stride=2),
    OpSpec.make("conv2d", (1, 8, 16, 16), cout=16, kernel=3, stride=2, dilation=2),
    OpSpec.make("conv2d", (1, 8, 12, 12), cout=16, kernel=3, groups=8),  # depthwise, multiplier 2
    OpSpec.make("conv2d+bn+relu", (1, 16, 10, 10), cout=32, kernel=3, stride=2, groups=4),  # grouped CONV_2D
    OpSpec.make("conv2d+bn+add+relu", (1, 16, 8, 8), cout=16, kernel=3),
    OpSpec.make("dwconv2d+hardswish", (1, 16, 8, 8), kernel=3),
    OpSpec.make("linear+bn+relu", (2, 96), cout=40),
    OpSpec.make("hardsigmoid", (1, 16, 8, 8)),
    OpSpec.make("silu", (1, 16, 8, 8)),
    OpSpec.make("pwconv2d+bn+silu", (1, 16, 8, 8), cout=24),
    OpSpec.make("globalavgpool", (2, 96, 7, 7)),
    OpSpec.make("concat", (1, 8, 8, 8), parts=3),
    OpSpec.make("add+relu6", (1, 8, 8, 8)),
    OpSpec.make("scale", (1, 8, 8, 8)),  # x times a per-channel constant
]
FP32 = [s for s in QUICK if s.dtype == "float32"] + EXTRA
INT8 = [s for s in QUICK if s.dtype == "int8"] + [s.replace(dtype="int8") for s in EXTRA]


def _run(runtime_or_interp, model) -> np.ndarray:
    interp = runtime_or_interp.interpreter(model.content) if hasattr(runtime_or_interp, "interpreter") else runtime_or_interp
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), model.inputs):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


# ---- an independent float reference: PyTorch on the spec's NCHW tensors ----------------------------
def torch_reference(spec: OpSpec) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    w = {k: torch.from_numpy(v).double() for k, v in make_weights(spec).items()}
    xs = [torch.from_numpy(x).double() for x in make_inputs(spec)]
    a, base, x = spec.a, spec.base, xs[0]
    rest = xs[1:]

    def bn(y):
        return F.batch_norm(y, w["bn_mean"], w["bn_var"], w["bn_gamma"], w["bn_beta"], False, 0.0, BN_EPS)

    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        groups = x.shape[1] if base == "dwconv2d" else int(a.get("groups", 1))
        pad = 0 if base == "pwconv2d" else int(a["padding"])
        y = F.conv2d(x, w["W"], w.get("b"), int(a["stride"]), pad, int(a.get("dilation", 1)), groups)
    elif base == "linear":
        y = F.linear(x, w["W"], w.get("b"))
    elif base == "bn":
        y = bn(x)
    elif base in ("avgpool", "maxpool"):
        k, s, p = int(a["kernel"]), int(a["stride"]), int(a["padding"])
        y = F.max_pool2d(x, k, s, p) if base == "maxpool" else F.avg_pool2d(x, k, s, p, count_include_pad=bool(a["count_include_pad"]))
    elif base == "globalavgpool":
        y = F.adaptive_avg_pool2d(x, 1)
    elif base == "add":
        y = x + rest.pop(0)
    elif base == "mul":
        y = x * rest.pop(0)
    elif base == "scale":
        y = x * w["scale"]
    elif base == "concat":
        y = torch.cat([x] + [rest.pop(0) for _ in range(int(a["parts"]) - 1)], dim=1)
    else:  # an activation: apply it as the first "tail"
        return _tails(x, spec.parts, rest, bn).numpy()
    return _tails(y, spec.parts[1:], rest, bn).numpy()


def _tails(y, parts, rest, bn):
    import torch
    import torch.nn.functional as F

    acts = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "sigmoid": torch.sigmoid,
            "hardsigmoid": F.hardsigmoid, "silu": F.silu}
    for part in parts:
        if part == "bn":
            y = bn(y)
        elif part == "add":
            y = y + rest.pop(0)
        else:
            y = acts[part](y)
    return y


# ---- fp32 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("xnnpack", [True, False], ids=["xnnpack", "builtin"])
@pytest.mark.parametrize("spec", FP32, ids=lambda s: s.key)
def test_fp32_model_matches_torch(spec, xnnpack):
    model = build_model(spec)
    y = to_nchw(_run(litert.LiteRTRuntime(precision="fp32", xnnpack=xnnpack), model))
    want = torch_reference(spec)
    assert y.shape == want.shape == spec.output_shape
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=2e-5)
    # The graph's own float reference (used to calibrate int8) agrees too.
    np.testing.assert_allclose(to_nchw(model.reference()[0]), want, rtol=1e-4, atol=2e-5)


# ---- int8 ---------------------------------------------------------------------------------------------
def _interp_for(kernels: str, model):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {"xnnpack": OpResolverType.AUTO, "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "reference": OpResolverType.BUILTIN_REF}[kernels]
    return Interpreter(model_content=model.content, num_threads=1, experimental_op_resolver_type=resolver)


@pytest.mark.parametrize("kernels", ["xnnpack", "optimized", "reference"])
@pytest.mark.parametrize("spec", INT8, ids=lambda s: s.key)
def test_int8_model_matches_int8_reference(spec, kernels):
    pytest.importorskip("ai_edge_litert")
    model = build_model(spec)
    y = _run(_interp_for(kernels, model), model)
    want = model.reference(kernels)[0]
    assert y.dtype == np.int8 and y.shape == want.shape
    diff = np.abs(y.astype(np.int32) - want.astype(np.int32))
    if kernels == "reference":  # portable C++: bit-exact everywhere
        assert diff.max() == 0, f"{int((diff > 0).sum())} of {diff.size} values differ"
    else:  # SIMD paths may round a tie differently on another CPU: one step at most
        assert diff.max() <= 1
    # And the int8 model still computes the float function (within a few quantisation steps).
    out_q = model.graph.tensors[model.graph.outputs[0]].quant
    real = to_nchw(out_q.dequantize(y))
    assert np.abs(real - torch_reference(spec)).max() <= 6 * out_q.s + 0.02


def test_runtime_xnnpack_switch_is_real_and_named():
    spec = OpSpec.make("conv2d+bn+relu", (1, 16, 16, 16), cout=16, kernel=3, dtype="int8")
    on = litert.LiteRTRuntime(precision="int8", xnnpack=True)
    off = litert.LiteRTRuntime(precision="int8", xnnpack="off")
    assert on.device().name == "cpu/litert/int8/threads=1/xnnpack=on"
    assert off.device().name == "cpu/litert/int8/threads=1/xnnpack=off"
    p_on, p_off = on.prepare(spec), off.prepare(spec)
    try:
        assert p_on.extra["xnnpack_delegated"] is True and p_off.extra["xnnpack_delegated"] is False
        assert p_on.extra["model_bytes"] == len(build_model(spec).content)
        assert p_on.timed() > 0
    finally:
        p_on.close()
        p_off.close()
    assert on.versions()["litert_package"] in ("ai-edge-litert", "tflite-runtime")


def test_more_threads_than_usable_cores_is_warned_of_as_on_the_other_runtimes_once(caplog, monkeypatch):
    """onnxruntime and torch warned of oversubscription; litert measured 4 threads on 2 cores without a word.
    Once per process: `search --verify` makes a runtime per round and said it each round."""
    from hwlat.device_tables.device import usable_cores
    from hwlat.profilers import base

    monkeypatch.setattr(base, "_OVERSUBSCRIPTION_SAID", set())
    with caplog.at_level("WARNING"):
        litert.LiteRTRuntime(threads=usable_cores() + 1)
        litert.LiteRTRuntime(threads=usable_cores() + 1)
    assert caplog.text.count(f"{usable_cores() + 1} threads on {usable_cores()} usable core") == 1, caplog.text


# ---- graph shape: what TFLite really runs -------------------------------------------------------------
@pytest.mark.parametrize("spec, ops, act", [
    (OpSpec.make("conv2d+bn+relu", (1, 8, 16, 16), cout=8, kernel=3), "CONV_2D", ["relu"]),
    (OpSpec.make("conv2d+add+relu", (1, 8, 16, 16), cout=8, kernel=3), "CONV_2D+ADD", ["none", "relu"]),
    (OpSpec.make("dwconv2d+bn+relu6", (1, 8, 16, 16), kernel=3), "DEPTHWISE_CONV_2D", ["relu6"]),
    (OpSpec.make("dwconv2d+bn+relu6", (1, 8, 16, 16), kernel=3, stride=2), "PAD+DEPTHWISE_CONV_2D", ["none", "relu6"]),
    (OpSpec.make("dwconv2d", (1, 8, 15, 15), kernel=3, stride=2), "DEPTHWISE_CONV_2D", ["none"]),  # odd size: SAME fits
    (OpSpec.make("add+relu", (1, 8, 4, 4)), "ADD", ["relu"]),
    (OpSpec.make("bn", (1, 8, 4, 4)), "MUL+ADD", ["none", "none"]),
    (OpSpec.make("relu+bn", (1, 8, 4, 4)), "RELU+MUL+ADD", ["none", "none", "none"]),
    (OpSpec.make("maxpool", (1, 8, 16, 16), kernel=3, stride=2, padding=1), "PADV2+MAX_POOL_2D", ["none", "none"]),
    (OpSpec.make("globalavgpool", (1, 8, 4, 4)), "MEAN", ["none"]),
    (OpSpec.make("conv2d+relu", (1, 8, 6, 6), cout=8, kernel=3, groups=2), "CONV_2D", ["relu"]),
    (OpSpec.make("silu", (1, 8, 4, 4)), "LOGISTIC+MUL", ["none", "none"]),
])
def test_fused_kernels_fold_and_fuse_like_a_converter(spec, ops, act):
    g = build_model(spec).graph
    assert g.op_names == ops
    assert [op.activation for op in g.ops] == act


def test_flatbuffer_fields_read_back_with_the_schema_reader():
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    spec = OpSpec.make("conv2d+bn+relu", (1, 8, 6, 6), cout=4, kernel=3, dtype="int8")
    model = build_model(spec)
    m = schema.Model.GetRootAs(model.content, 0)
    assert model.content[4:8] == b"TFL3" and m.Version() == 3 and m.SubgraphsLength() == 1
    assert m.Buffers(0).DataLength() == 0
    code = m.OperatorCodes(0)
    assert (code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.Version()) == (3, 3, 3)
    sg = m.Subgraphs(0)
    x, w, b, y = (sg.Tensors(i) for i in range(4))
    assert x.ShapeAsNumpy().tolist() == [1, 6, 6, 8] and x.Type() == 9  # NHWC, INT8
    assert w.ShapeAsNumpy().tolist() == [4, 3, 3, 8] and w.Quantization().QuantizedDimension() == 0  # OHWI per channel
    assert w.Quantization().ScaleLength() == 4 and not w.Quantization().ZeroPointAsNumpy().any()
    assert b.Type() == 2  # INT32 bias at input_scale * weight_scale
    np.testing.assert_allclose(b.Quantization().ScaleAsNumpy(),
                               x.Quantization().ScaleAsNumpy()[0] * w.Quantization().ScaleAsNumpy(), rtol=1e-6)
    op = sg.Operators(0)
    assert op.BuiltinOptionsType() == 1  # Conv2DOptions
    opts = schema.Conv2DOptions()
    opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    assert (opts.Padding(), opts.StrideW(), opts.FusedActivationFunction()) == (0, 1, 1)  # SAME, 1, RELU
    dw = schema.Model.GetRootAs(build_model(OpSpec.make("dwconv2d", (1, 8, 6, 6), kernel=3, dtype="int8")).content, 0)
    assert dw.Subgraphs(0).Tensors(1).Quantization().QuantizedDimension() == 3  # 1HWC


def test_operator_codes_above_127_use_the_placeholder(monkeypatch):
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from hwlat.profilers.tflite import flatbuffer

    monkeypatch.setitem(flatbuffer.BUILTIN_CODES, "RELU_0_TO_1", 152)
    g = TFLiteGraph()
    x = g.add_tensor("x", (1, 4))
    g.inputs, g.outputs = [x], [g.add_op("RELU_0_TO_1", [x], (1, 4))]
    code = schema.Model.GetRootAs(serialize(g), 0).OperatorCodes(0)
    assert (code.DeprecatedBuiltinCode(), code.BuiltinCode()) == (127, 152)


# ---- int8 reference arithmetic on known values -----------------------------------------------------------
def test_quantize_multiplier_and_the_three_roundings():
    assert q8.quantize_multiplier(0.5) == (1 << 30, 0)
    assert q8.quantize_multiplier(1.0) == (1 << 30, 1)
    assert q8.quantize_multiplier(0.25) == (1 << 30, -1)
    m, s = q8.quantize_multiplier(0.3)
    assert (1 << 30) <= m < (1 << 31) and abs(m * 2.0 ** (s - 31) - 0.3) < 1e-9
    quarter = q8.quantize_multiplier(0.25)
    x = np.array([-2, 2, -3, 3, -6, 6])  # x/4 = -0.5, 0.5, -0.75, 0.75, -1.5, 1.5
    # double: ties away from zero at the shift; double_up: ties up -- and -0.75 becomes -0.5 at the
    # high multiply (which rounds its own ties up) before the shift rounds it up to 0; single: one rounding.
    assert q8.multiply_by_quantized_multiplier(x, *quarter, "double").tolist() == [-1, 1, -1, 1, -2, 2]
    assert q8.multiply_by_quantized_multiplier(x, *quarter, "double_up").tolist() == [0, 1, 0, 1, -1, 2]
    assert q8.multiply_by_quantized_multiplier(x, *quarter, "single").tolist() == [0, 1, -1, 1, -1, 2]
    p = q8.activation_params(-1.0, 3.0)
    assert p.quantize(np.array([0.0]))[0] == p.zp and p.dequantize(p.quantize(np.array([3.0])))[0] == pytest.approx(3.0, abs=p.s)


def test_export_quantized_gives_the_kernel_numbers_firmware_needs():
    spec = OpSpec.make("conv2d+bn+relu", (1, 16, 16, 16), cout=16, kernel=3, dtype="int8")
    qg = export_quantized(spec)
    (conv, ins, out), = qg.steps
    assert conv.kind == "CONV_2D" and conv.activation == "relu" and conv.geometry.pads == (1, 1, 1, 1)
    assert conv.weights.dtype == np.int8 and np.abs(conv.weights.astype(int)).max() == 127
    assert conv.bias.dtype == np.int32 and not conv.weight_params.zero_point.any()
    mult, shift = conv.requantisation()
    assert mult.shape == (16,) and ((mult >= 1 << 30) & (mult < 1 << 31)).all()
    model = build_model(spec)
    np.testing.assert_array_equal(qg.run(*model.inputs)[0], model.reference()[0])


# ---- errors -------------------------------------------------------------------------------------------
def test_unsupported_configurations_raise_one_clear_line():
    with pytest.raises(UnsupportedOpError, match="count_include_pad") as err:
        build_model(OpSpec.make("avgpool", (1, 8, 16, 16), kernel=3, stride=2, padding=1))
    assert "avgpool|float32|1x8x16x16" in str(err.value) and "\n" not in str(err.value)
    rt = litert.LiteRTRuntime(precision="fp32")
    with pytest.raises(UnsupportedOpError, match="--precision int8"):
        rt.prepare(OpSpec.make("relu", (1, 4, 4, 4), dtype="int8"))
    with pytest.raises(RuntimeUnavailableError, match="fp32 or int8"):
        litert.LiteRTRuntime(precision="fp16")


def test_missing_interpreter_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(litert, "INTERPRETER_MODULES", (("hwlat_no_such_litert.interpreter", "ai-edge-litert"),))
    with pytest.raises(RuntimeUnavailableError, match="pip install ai-edge-litert"):
        litert.LiteRTRuntime()


def test_profile_ops_writes_a_valid_table(tmp_path):
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.run import profile_ops
    from hwlat.profilers.runtimes import get_runtime

    specs = [s for s in INT8 if s.op in ("conv2d+add+relu", "globalavgpool")][:2]
    specs.append(OpSpec.make("avgpool", (1, 8, 16, 16), kernel=3, stride=2, padding=1, dtype="int8"))
    specs.append(OpSpec.make("relu", (1, 4, 4, 4)))  # fp32: not this runtime's precision, skipped
    rt = get_runtime("litert", threads=1, precision="int8", xnnpack=False)
    result = profile_ops(rt, specs, tmp_path / "t", Protocol.preset("quick"), progress=False)
    assert (result.measured, result.failed) == (2, 1)
    table = DeviceTable.load(tmp_path / "t")
    assert table.device.name == "cpu/litert/int8/threads=1/xnnpack=off"
    assert table.device.fingerprint["runtime"]["litert_version"]
    ok = table.rows("ok")
    assert len(ok) == 2 and all(r.measurement.median_ms > 0 and r.extra["model_bytes"] > 0 for r in ok)
    assert "count_include_pad" in table.rows("error")[0].error
    again = profile_ops(rt, specs, tmp_path / "t", Protocol.preset("quick"), progress=False)
    assert (again.measured, again.skipped) == (0, 3)


def test_int8_networks_are_timed_whole_and_a_max_pools_padding_does_not_stretch_the_scales():
    """Full-integer int8 networks (what `profile device --precision int8` calibrates on): a ResNet's
    max pool pads with the lowest float, which once made every scale of its group ~1e36 and the
    network unrunnable by XNNPACK."""
    import numpy as np

    from hwlat.device_tables.graph import Graph
    from hwlat.nas.models import to_onnx
    from hwlat.profilers.litert.network import input_array, network_graph
    from hwlat.profilers.tflite.quantize import quantize_graph

    g = network_graph(Graph.from_onnx(to_onnx("resnet18@r96w0.5")))
    q = quantize_graph(g, [input_array(g.tensors[g.inputs[0]].shape)])
    scales = [float(np.max(t.quant.scale)) for t in q.tensors if t.quant is not None]
    assert max(scales) < 100
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    rt = get_runtime("litert", threads=1, precision="int8")
    assert rt.times_whole_models()
    m = rt.time_model(to_onnx("resnet18@r96w0.5"), Protocol.preset("quick"))
    assert m.median_ms > 0


def test_a_channel_shuffle_lowers_to_a_transpose_and_fbnet_networks_run_whole():
    """A channel shuffle (uncovered in tables: priced as a pass over its tensor) is lowered in NHWC as
    one rank-3 TRANSPOSE of each pixel's (groups, k) channels, so FBNet networks run on LiteRT, fp32
    and int8: their shuffle moves channel g*k + j to j*groups + g, as the ONNX Transpose does."""
    import numpy as np

    from hwlat.device_tables.graph import FREE, SHUFFLE_NOTE, UNCOVERED, Graph, GraphOp
    from hwlat.nas.pool import graph_of, onnx_of
    from hwlat.nas.spaces import get_space
    from hwlat.profilers.litert.network import network_graph
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime
    from hwlat.profilers.tflite.float_reference import run_float

    n, groups, k, h, w = 1, 3, 4, 2, 5
    g = Graph([GraphOp(FREE, None, "Reshape", ("r1",), ("x",), ("x5",)),
               GraphOp(UNCOVERED, None, "Transpose", ("t",), ("x5",), ("t5",), SHUFFLE_NOTE, (n, groups, k, h, w)),
               GraphOp(FREE, None, "Reshape", ("r2",), ("t5",), ("y",))],
              name="shuffle", inputs={"x": (n, groups * k, h, w)}, outputs=("y",))
    x = np.arange(n * groups * k * h * w, dtype=np.float32).reshape(n, groups * k, h, w)
    want = x.reshape(n, groups, k, h, w).transpose(0, 2, 1, 3, 4).reshape(n, groups * k, h, w)
    y = run_float(network_graph(g), [x.transpose(0, 2, 3, 1)])[0]  # the model's feature maps are NHWC
    np.testing.assert_array_equal(y.transpose(0, 3, 1, 2), want)

    sp = get_space("fbnet")
    names = ["fbnet:" + sp.key(a) for a in sp.sample(20, seed=3)]
    name = next(nm for nm in names if any(op.note == SHUFFLE_NOTE for op in graph_of(nm).ops))
    for precision in ("fp32", "int8"):
        m = get_runtime("litert", threads=1, precision=precision).time_model(onnx_of(name), Protocol.preset("quick"))
        assert m.median_ms > 0


def test_profile_archs_times_int8_networks_whole(tmp_path):
    """`hwlat profile archs --runtime litert --precision int8`: full-integer networks, in a device column
    of their own, as an int8 table's calibration times them."""
    import csv

    from hwlat.cli import main

    out = tmp_path / "int8"
    assert main(["profile", "archs", "--runtime", "litert", "--precision", "int8", "--space", "nb201", "--archs",
                 "random:2", "--protocol", "quick", "--passes", "1", "--out", str(out), "--no-progress"]) == 0
    with open(tmp_path / "int8.csv") as f:
        rows = list(csv.DictReader(f))
    column = "cpu/litert/int8/threads=1/xnnpack=on"
    assert len(rows) == 2 and all(float(r[column]) > 0 for r in rows)


def test_profile_archs_that_measures_none_exits_non_zero(tmp_path, capsys):
    """ViT networks at int8 (transformer ops hwlat does not quantise) all failed, one warning each, and the
    command ended '0 measured, 2 failed' with exit 0."""
    from hwlat.cli import main

    out = tmp_path / "vit8"
    assert main(["profile", "archs", "--runtime", "litert", "--precision", "int8", "--space", "vit", "--archs",
                 "random:2", "--protocol", "quick", "--passes", "1", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "none of the 2 architectures ran on cpu/litert/int8" in err and "vit8.stats.csv" in err, err
    assert (tmp_path / "vit8.stats.csv").read_text().count("UnsupportedOpError") == 2


def test_litert_s_delegate_banner_stays_off_a_users_terminal():
    """LiteRT prints a line on fd 2 at a process's first XNNPACK allocation; hwlat keeps it out of its
    own output, and passes on anything else written there meanwhile."""
    import subprocess
    import sys

    code = ("import os, sys; from hwlat.profilers.litert.runtime import LiteRTRuntime, allocate; "
            "from hwlat.profilers.tflite.builder import build_model; from hwlat.device_tables.ops import OpSpec; "
            "rt = LiteRTRuntime(); m = build_model(OpSpec.make('relu', (1, 8, 4, 4))); "
            "ip = rt.interpreter(m.content); "
            "ip.allocate_tensors = (lambda real: lambda: (os.write(2, b'kept\\n'), real()))(ip.allocate_tensors); "
            "allocate(ip); ip.invoke(); rt.prepare(OpSpec.make('relu', (1, 8, 8, 8)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK delegate" not in proc.stderr and proc.stderr.splitlines() == ["kept"]


@pytest.mark.parametrize("cut", ["Split", "Slice"])
def test_a_cnns_channel_split_runs_at_int8(cut):
    """A CNN whose conv output is cut in two on the channels (torch's chunk(2, 1): a Split from the
    dynamo exporter, Slices from the legacy one) is a full-integer int8 network LiteRT runs: SPLIT and
    SLICE only move values, like RESHAPE."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hwlat.device_tables.graph import Graph
    from hwlat.profilers.litert.network import network_model

    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W")]
    if cut == "Split":
        cuts = [helper.make_node("Split", ["c"], ["a", "b"], axis=1, num_outputs=2)]
    else:
        consts += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                   (("zero", [0]), ("four", [4]), ("eight", [8]), ("axis", [1]))]
        cuts = [helper.make_node("Slice", ["c", "zero", "four", "axis"], ["a"]),
                helper.make_node("Slice", ["c", "four", "eight", "axis"], ["b"])]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), *cuts, helper.make_node("Add", ["a", "b"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "cut", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], consts),
                              opset_imports=[helper.make_opsetid("", 18)])
    content, inputs = network_model(Graph.from_onnx(onnx.load_from_string(model.SerializeToString())), int8=True)
    rt = litert.LiteRTRuntime(threads=1, precision="int8")
    rt.check_available()
    interp = rt.interpreter(content)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], inputs[0])
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert y.dtype == np.int8 and y.shape == (1, 8, 8, 4)
