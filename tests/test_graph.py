"""Graph extraction from ONNX: op mapping, shapes, cost-free and uncovered nodes, dynamic inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwlat.device_tables.errors import ModelError
from hwlat.device_tables.graph import FREE, OP, UNCOVERED, Graph, parse_shape
from hwlat.device_tables.ops import OpSpec
from hwlat.nas.models import OnnxNet, build_model


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_small_network_maps_every_layer_kind():
    net = OnnxNet("t", (1, 8, 16, 16), fold_bn=False)
    x = net.conv("input", 16, 3, 2, act="relu6")          # Conv, BN, Clip(0, 6)
    y = net.conv(x, 16, 3, groups=16, act="hardswish")    # depthwise
    y = net.se(y, 4, "relu", "hardsigmoid")                # GAP, 1x1 convs, Mul by NxCx1x1
    y = net.conv(y, 16, 1, act="silu")                     # pointwise, Sigmoid+Mul = silu
    z = net.add(y, x)
    z = net.maxpool(z, 3, 2, 1)
    z = net.flatten(net.gap(z))
    out = net.linear(z, 10, act="sigmoid")
    g = Graph.from_onnx(net.model(out))
    ops = [op.spec.op for op in g.ops if op.kind == OP]
    assert ops == ["conv2d", "bn", "relu6", "dwconv2d", "bn", "hardswish", "globalavgpool", "pwconv2d", "relu", "pwconv2d",
                   "hardsigmoid", "mul", "pwconv2d", "bn", "silu", "add", "maxpool", "globalavgpool", "linear", "sigmoid"]
    assert not g.uncovered
    assert [op.onnx_op for op in g.ops if op.kind == FREE] == ["Flatten"]
    first = g.specs[0]
    assert first.input_shape == (1, 8, 16, 16) and first.output_shape == (1, 16, 8, 8) and first.a["stride"] == 2
    silu = next(op for op in g.ops if op.kind == OP and op.spec.op == "silu")
    assert len(silu.nodes) == 2 and silu.onnx_op == "Sigmoid+Mul"
    # The activation after the classifier's linear is costed on NxFx1x1 and says so.
    assert g.specs[-1].input_shape == (1, 10, 1, 1) and "viewed as" in g.ops[-1].note
    # Tensors connect ops: the add reads the relu6 output and the silu output.
    add = next(op for op in g.ops if op.kind == OP and op.spec.op == "add")
    producers = {o: op.spec.op for op in g.ops if op.kind == OP for o in op.outputs}
    assert sorted(producers[t] for t in add.inputs) == ["relu6", "silu"]


def test_matmul_bias_folds_into_linear_and_clip_bounds_are_read():
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "W"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y0"]),
        helper.make_node("Clip", ["y0", "lo", "hi"], ["y"]),
    ]
    m = _model(nodes, [_vi("x", [2, 4, 1, 1])], [_vi("y", [2, 3])],
               [("W", np.ones((4, 3))), ("b", np.zeros(3)), ("lo", np.array(0.0)), ("hi", np.array(6.0))])
    g = Graph.from_onnx(m)
    assert [s.op for s in g.specs] == ["linear", "relu6"]
    lin = g.specs[0]
    assert lin.input_shape == (2, 4) and lin.a["cout"] == 3 and lin.a["bias"] is True
    assert g.ops[1].onnx_op == "MatMul+Add"


def test_unknown_op_is_named_uncovered_not_zero():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=1, name="probs")]
    g = Graph.from_onnx(_model(nodes, [_vi("x", [1, 10, 4, 4])], [_vi("y", [1, 10, 4, 4])]))
    (u,) = g.uncovered
    assert u.kind == UNCOVERED and u.nodes == ("probs",) and "Softmax" in u.note
    assert [s.op for s in g.specs] == ["relu"]


@pytest.mark.parametrize("form", ["qdq", "qoperator", "dynamic"])
def test_a_model_quantised_in_onnx_says_to_give_the_float_model(tmp_path, form):
    """QLinearConv, QuantizeLinear, ConvInteger... were 'not in the op vocabulary' (or had 'no static shape'),
    which did not say that the float model is what hwlat prices, at int8 too."""
    q = pytest.importorskip("onnxruntime.quantization")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 8, 8, 8])], [("W", np.ones((8, 3, 3, 3)))])
    fp32, quantised = tmp_path / "m.onnx", tmp_path / f"m_{form}.onnx"
    onnx.save(m, fp32)

    class Batches(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": np.ones((1, 3, 8, 8), np.float32)}])

        def get_next(self):
            return next(self.it, None)

    if form == "dynamic":
        q.quantize_dynamic(str(fp32), str(quantised))
    else:
        fmt = q.QuantFormat.QDQ if form == "qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(fp32), str(quantised), Batches(), quant_format=fmt)
    g = Graph.from_onnx(onnx.load(quantised))
    assert g.uncovered
    for u in g.uncovered:
        assert "quantised in ONNX" in u.note and "give it the float model" in u.note, (u.onnx_op, u.note)


def test_dynamic_input_needs_an_input_shape():
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    m = _model(nodes, [_vi("x", ["N", 3, "H", "W"])], [_vi("y", None)], [("W", np.ones((8, 3, 3, 3)))])
    with pytest.raises(ModelError, match="--input-shape"):
        Graph.from_onnx(m)
    g = Graph.from_onnx(m, input_shape=parse_shape("2x3x20x20"))
    assert g.specs == [OpSpec.make("conv2d", (2, 3, 20, 20), cout=8, kernel=3, bias=False)]
    with pytest.raises(ModelError, match="disagrees"):
        Graph.from_onnx(m, input_shape=(1, 4, 20, 20))
    with pytest.raises(ModelError):
        parse_shape("1x3xfoo")


def test_asymmetric_same_padding_is_costed_with_matching_output():
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])]
    m = _model(nodes, [_vi("x", [1, 4, 8, 8])], [_vi("y", [1, 4, 4, 4])], [("W", np.ones((4, 4, 3, 3)))])
    g = Graph.from_onnx(m)
    (spec,) = g.specs
    assert spec.output_shape == (1, 4, 4, 4) and "asymmetric" in g.ops[0].note


def test_constant_scale_mul_and_unequal_concat():
    nodes = [helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Concat", ["z", "x2"], ["y"], axis=1)]
    m = _model(nodes, [_vi("x", [1, 4, 5, 5]), _vi("x2", [1, 2, 5, 5])], [_vi("y", [1, 6, 5, 5])],
               [("zero", np.zeros((1, 4, 1, 1)))])
    g = Graph.from_onnx(m)
    assert [s.op for s in g.specs] == ["scale", "copy"] and not g.uncovered
    assert g.ops[1].spec.input_shape == (1, 6, 5, 5) and g.ops[1].inputs == ("z", "x2")


def test_classic_networks_are_fully_covered_with_published_macs():
    # MACs of conv/linear layers from the papers: MobileNetV2 300M, MobileNetV3-Small 56M (at 224).
    for key, macs in (("mobilenet_v2", 300e6), ("mobilenet_v3_small", 56e6)):
        g = Graph.from_onnx(build_model(key))
        assert not g.uncovered
        conv_macs = sum(s.macs for s in g.specs if s.base in ("conv2d", "dwconv2d", "pwconv2d", "linear"))
        assert abs(conv_macs - macs) / macs < 0.05, (key, conv_macs)


def test_from_specs_builds_a_chain_with_side_inputs():
    specs = [OpSpec.make("conv2d", (1, 4, 8, 8), cout=4, kernel=3), OpSpec.make("add", (1, 4, 8, 8)),
             OpSpec.make("relu", (1, 4, 8, 8))]
    g = Graph.from_specs(specs)
    assert g.specs == specs
    assert g.ops[1].inputs[0] == g.ops[0].outputs[0] and len(g.ops[1].inputs) == 2
    assert g.outputs == g.ops[-1].outputs


@pytest.mark.parametrize("key, params_m", [("resnet18", 11.69), ("mobilenet_v2", 3.50), ("mobilenet_v3_large", 5.48),
                                           ("mobilenet_v3_small", 2.54), ("efficientnet_b0", 5.29)])
def test_classic_networks_have_their_published_parameter_counts(key, params_m):
    # torchvision's counts (batch-norm folded here, so its scale and shift are not counted twice).
    m = build_model(f"{key}@r64w1")
    n = sum(int(np.prod(t.dims)) for t in m.graph.initializer if len(t.dims) > 0)
    assert abs(n / 1e6 - params_m) / params_m < 0.01, n


def test_a_reshape_the_given_input_shape_cannot_fill_is_one_error_naming_the_node():
    """A size fixed at export (a Reshape to a constant target) that the given input shape differs from:
    the model cannot run at that shape, and no prediction is made of mismatched kernels."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    target = helper.make_tensor("target", TensorProto.INT64, [2], [2, 8])
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"], name="fixed_view"),
             helper.make_node("Relu", ["r"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [target]), opset_imports=[helper.make_opsetid("", 17)])
    data = model.SerializeToString()
    assert Graph.from_onnx(data, input_shape=(4, 4)).ops  # the exported size: 16 values into 2x8
    with pytest.raises(ModelError, match=r"Reshape node 'fixed_view' cannot view 8x4 \(32 values\) as 2x8 \(16\)"):
        Graph.from_onnx(data, input_shape=(8, 4))


def _ort_output_shape(m, x_shape):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.zeros(x_shape, np.float32)})[0].shape


@pytest.mark.parametrize("op, attrs, hw", [
    ("MaxPool", dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER"), (16, 16)),
    ("AveragePool", dict(kernel_shape=[4, 4], auto_pad="SAME_LOWER"), (16, 16)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), (15, 15)),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), (16, 16)),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 0, 1, 0]), (16, 16)),
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[0, 0, 1, 1]), (16, 12)),
])
def test_a_pool_is_priced_at_the_output_the_runtime_computes(op, attrs, hw):
    """A pool padded SAME with an even kernel, in ceil_mode or with other pads on H than on W was
    priced at another output (17x17 for 16x16, 7x7 for ceil_mode's 8x8), with a note blaming ceil_mode."""
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs)]
    m = _model(nodes, [_vi("x", [1, 4, *hw])], [_vi("y", None)])
    (op_,) = Graph.from_onnx(m).ops
    assert op_.kind == OP and op_.spec.output_shape == _ort_output_shape(m, (1, 4, *hw)), op_.describe()


@pytest.mark.parametrize("k, attrs", [(4, dict(auto_pad="SAME_UPPER")), (4, dict(pads=[1, 1, 2, 2])), (3, dict(pads=[1, 0, 1, 0]))])
def test_a_conv_padded_unevenly_is_priced_at_its_output_and_macs(k, attrs):
    """padding='same' with an even kernel (torch.onnx writes auto_pad SAME_UPPER or pads [1, 1, 2, 2]),
    or other pads on H than on W, left the conv uncovered: no symmetric padding gives its output."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[k, k], **attrs)]
    m = _model(nodes, [_vi("x", [1, 3, 16, 12])], [_vi("y", None)], [("W", np.ones((8, 3, k, k)))])
    (op,) = Graph.from_onnx(m).ops
    out = _ort_output_shape(m, (1, 3, 16, 12))
    assert op.kind == OP and op.spec.output_shape == out, op.describe()
    assert op.spec.macs == np.prod(out) * 3 * k * k


@pytest.mark.parametrize("op", ["Conv", "MaxPool"])
def test_a_zero_stride_padded_same_is_named_not_a_traceback(op):
    """auto_pad SAME with strides [0, 0] (a corrupt file) raised ZeroDivisionError; with pads it was named."""
    nodes = [helper.make_node(op, ["x", "W"] if op == "Conv" else ["x"], ["y"], kernel_shape=[3, 3], strides=[0, 0],
                              auto_pad="SAME_UPPER")]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], [("W", np.ones((4, 3, 3, 3)))])
    (u,) = Graph.from_onnx(m).uncovered
    assert "stride=0" in u.note
