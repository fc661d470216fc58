"""LiteRT transformer ops (fp32): hwlat's own .tflite single-op models and a whole transformer block
run in the real interpreter and compute what numpy computes from the same spec, weights and inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.device_tables.graph import FREE, OP, Graph, GraphOp
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.tflite.builder import build_model
from hwlat.profilers.tflite.flatbuffer import serialize
from hwlat.profilers.tflite.graph import to_nchw
from hwlat.profilers.weights import LN_EPS, make_inputs, make_weights

litert = pytest.importorskip("hwlat.profilers.litert.runtime")
from hwlat.profilers.litert.network import network_graph, network_inputs  # noqa: E402

SPECS = [
    OpSpec.make("gelu", (50, 64, 1, 1)),
    OpSpec.make("gelu", (50, 64, 1, 1), tanh=True),
    OpSpec.make("matmul", (2, 3, 17, 16), n=17),
    OpSpec.make("softmax", (51, 17)),
    OpSpec.make("layernorm", (17, 48)),
    OpSpec.make("transpose", (1, 17, 3, 16), perm="0213"),
    OpSpec.make("transpose", (1, 17, 3, 16), perm="0231"),
    OpSpec.make("copy", (1, 3, 17, 16)),
    OpSpec.make("gather", (12, 32), vocab=100),
    OpSpec.make("linear", (17, 48), cout=40),
    OpSpec.make("linear+gelu", (17, 48), cout=96),
    OpSpec.make("add+layernorm", (17, 48, 1, 1)),
]
# The TFLite operators each op is lowered to (the kernels a converted network runs).
KERNELS = {"gelu": "GELU", "matmul": "BATCH_MATMUL", "softmax": "SOFTMAX", "transpose": "TRANSPOSE", "copy": "SLICE",
           "gather": "GATHER", "linear": "FULLY_CONNECTED", "linear+gelu": "FULLY_CONNECTED+GELU",
           "layernorm": "MEAN+SUB+MUL+MEAN+ADD+RSQRT+MUL+MUL+ADD",
           "add+layernorm": "ADD+MEAN+SUB+MUL+MEAN+ADD+RSQRT+MUL+MUL+ADD"}


# ---- numpy references, from the spec's own semantics ----------------------------------------------
def gelu(x: np.ndarray, tanh: bool = False) -> np.ndarray:
    if tanh:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layernorm(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    d = x - x.mean(axis=-1, keepdims=True)
    return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + LN_EPS) * w["ln_scale"] + w["ln_bias"]


def linear(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    return x @ w["W"].astype(np.float64).T + w["b"]


def numpy_reference(spec: OpSpec) -> np.ndarray:
    """What `spec` computes on `make_inputs(spec)` with `make_weights(spec)`, in the spec's layout."""
    w = make_weights(spec)
    xs = [x if x.dtype.kind == "i" else x.astype(np.float64) for x in make_inputs(spec)]
    x, base = xs[0], spec.base
    if base == "gelu":
        return gelu(x, bool(spec.a["tanh"]))
    if base == "matmul":
        return x @ xs[1]
    if base == "softmax":
        return softmax(x)
    if base == "layernorm":
        return layernorm(x, w)
    if base == "transpose":
        return x.transpose([int(i) for i in spec.a["perm"]])
    if base == "copy":
        return x
    if base == "gather":
        return w["table"][x]
    if spec.op == "add+layernorm":
        return layernorm((x + xs[1])[:, :, 0, 0], w)[:, :, None, None]
    y = linear(x, w)
    return gelu(y) if spec.op == "linear+gelu" else y


def run(content: bytes, inputs: list[np.ndarray], xnnpack: bool = True) -> np.ndarray:
    rt = litert.LiteRTRuntime(threads=1, xnnpack=xnnpack)
    rt.check_available()
    interp = rt.interpreter(content)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


@pytest.mark.parametrize("xnnpack", [True, False], ids=["xnnpack", "builtin"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_transformer_op_matches_numpy(spec, xnnpack):
    model = build_model(spec)
    assert model.op_names == (KERNELS.get(spec.op) or KERNELS[spec.base])
    y = run(model.content, model.inputs, xnnpack)
    y = y if spec.base in ("matmul", "transpose", "copy") else to_nchw(y)
    want = numpy_reference(spec)
    assert y.shape == want.shape == spec.output_shape
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=2e-5)


def test_attention_kernels_run_under_xnnpack():
    """XNNPACK takes every op of these models (one DELEGATE node from the inputs to the output);
    a gather and a copy-by-CONCATENATION would stay on the builtin kernels."""
    from hwlat.profilers.litert.runtime import _ops_details

    for spec in SPECS:
        if spec.base == "gather":
            continue
        model = build_model(spec)
        rt = litert.LiteRTRuntime(threads=1)
        rt.check_available()
        interp = rt.interpreter(model.content)
        interp.allocate_tensors()
        nodes = _ops_details(interp)
        delegate = [n for n in nodes if n["op_name"] == "DELEGATE"]
        assert len(delegate) == 1, spec.key
        assert list(delegate[0]["outputs"]) == [d["index"] for d in interp.get_output_details()], spec.key


def test_int8_transformer_ops_are_refused_by_name():
    with pytest.raises(UnsupportedOpError, match="SOFTMAX.*float32"):
        build_model(OpSpec.make("softmax", (8, 8), dtype="int8"))


# ---- a whole ViT block -----------------------------------------------------------------------------
def vit_block(tokens: int = 17, dim: int = 48, heads: int = 3, hidden: int = 96) -> Graph:
    """A pre-norm ViT block in the token view convention, as extraction writes it: x + proj(attn(LN(x))),
    then x + fc2(gelu(fc1(LN(x)))), with separate q/k/v projections, shape ops as free Reshapes,
    and the class token's row taken out at the end by a copy."""
    d = dim // heads
    rows = (tokens, dim)
    ops: list[GraphOp] = []

    def op(spec: OpSpec, ins: tuple[str, ...], out: str) -> str:
        ops.append(GraphOp(OP, spec, spec.op, (out,), ins, (out,)))
        return out

    def view(x: str, out: str) -> str:
        ops.append(GraphOp(FREE, None, "Reshape", (out,), (x,), (out,)))
        return out

    ln1 = op(OpSpec.make("layernorm", rows), ("x",), "ln1")
    qkv = {}
    for name, perm in (("q", "0213"), ("k", "0231"), ("v", "0213")):
        p = op(OpSpec.make("linear", rows, cout=dim), (ln1,), name)
        qkv[name] = op(OpSpec.make("transpose", (1, tokens, heads, d), perm=perm), (view(p, f"{name}4"),), f"{name}h")
    scores = op(OpSpec.make("matmul", (1, heads, tokens, d), n=tokens), (qkv["q"], qkv["k"]), "scores")
    scaled = op(OpSpec.make("scale", (1, heads, tokens, tokens)), (scores,), "scaled")
    probs = op(OpSpec.make("softmax", (heads * tokens, tokens)), (view(scaled, "scores2"),), "probs")
    ctx = op(OpSpec.make("matmul", (1, heads, tokens, tokens), n=d), (view(probs, "probs4"), qkv["v"]), "ctx")
    ctx = op(OpSpec.make("transpose", (1, heads, tokens, d), perm="0213"), (ctx,), "ctx_t")
    proj = op(OpSpec.make("linear", rows, cout=dim), (view(ctx, "ctx2"),), "proj")
    x1 = op(OpSpec.make("add", rows + (1, 1)), ("x", proj), "x1")
    ln2 = op(OpSpec.make("layernorm", rows), (x1,), "ln2")
    fc1 = op(OpSpec.make("linear", rows, cout=hidden), (ln2,), "fc1")
    act = op(OpSpec.make("gelu", (tokens, hidden, 1, 1)), (fc1,), "act")
    fc2 = op(OpSpec.make("linear", (tokens, hidden), cout=dim), (act,), "fc2")
    x2 = op(OpSpec.make("add", rows + (1, 1)), (x1, fc2), "x2")
    cls = op(OpSpec.make("copy", (1, dim, 1, 1)), (x2,), "cls")
    return Graph(ops, "vit_block", {"x": (1, tokens, dim)}, (cls,))


def numpy_block(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The block's forward pass in float64 numpy, weights from `make_weights` of each op's spec."""
    specs = {op.outputs[0]: op.spec for op in graph.ops if op.kind == OP}
    w = {name: make_weights(spec) for name, spec in specs.items()}
    t, dim = x.shape[1], x.shape[2]
    heads = specs["scores"].input_shape[1]
    x = x.reshape(t, dim).astype(np.float64)
    h = layernorm(x, w["ln1"])
    q, k, v = (linear(h, w[n]).reshape(1, t, heads, dim // heads) for n in "qkv")
    scores = q.transpose(0, 2, 1, 3) @ k.transpose(0, 2, 3, 1) * w["scaled"]["scale"]
    ctx = (softmax(scores) @ v.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3).reshape(t, dim)
    x1 = x + linear(ctx, w["proj"])
    x2 = x1 + linear(gelu(linear(layernorm(x1, w["ln2"]), w["fc1"])), w["fc2"])
    return x2[:1]


@pytest.mark.parametrize("xnnpack", [True, False], ids=["xnnpack", "builtin"])
def test_vit_block_lowers_to_one_model_that_matches_numpy(xnnpack):
    from hwlat.profilers.litert.network import network_model

    graph = vit_block()
    content, inputs = network_model(graph)
    y = run(content, inputs, xnnpack)
    want = numpy_block(graph, inputs[0])
    assert y.size == want.size == 48
    np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-4, atol=1e-4)
    kinds = [op.kind for op in network_graph(graph).ops]
    # Views are RESHAPEs only: no layout TRANSPOSE beyond the block's own three-plus-one.
    assert kinds.count("TRANSPOSE") == 4 and kinds.count("BATCH_MATMUL") == 2 and kinds.count("SLICE") == 1


def test_patch_embedding_feeds_tokens_with_one_layout_transpose():
    """A conv's NHWC feature map read as tokens (B, C, HW) -> (B, HW, C): the bytes are moved into
    ONNX order once, and the result is what numpy computes on the NCHW tensor."""
    conv = OpSpec.make("conv2d", (1, 3, 8, 8), cout=16, kernel=4, stride=4, padding=0)
    tr = OpSpec.make("transpose", (1, 1, 16, 4), perm="0132")
    ops = [GraphOp(OP, conv, "Conv", ("conv",), ("img",), ("fm",)),
           GraphOp(FREE, None, "Reshape", ("flat",), ("fm",), ("fm3",)),
           GraphOp(OP, tr, "Transpose", ("tr",), ("fm3",), ("tok",)),
           GraphOp(OP, OpSpec.make("layernorm", (4, 16)), "LayerNormalization", ("ln",), ("tok",), ("out",))]
    graph = Graph(ops, "patch", {"img": (1, 3, 8, 8)}, ("out",))
    g = network_graph(graph)
    img = network_inputs(g)[0]  # NHWC
    y = run(serialize(g), [img])
    w = make_weights(conv)
    x = img.transpose(0, 3, 1, 2).astype(np.float64).reshape(1, 3, 2, 4, 2, 4)  # NCHW, 4x4 patches
    fm = np.einsum("ncaibj,ocij->noab", x, w["W"]) + w["b"][None, :, None, None]  # (1, 16, 2, 2)
    want = layernorm(fm.reshape(16, 4).T, make_weights(ops[3].spec))
    np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-4, atol=1e-4)
    assert [op.kind for op in g.ops].count("TRANSPOSE") == 2  # NHWC -> NCHW once, then the graph's own


def test_token_ids_feed_a_gather_as_int32():
    spec = OpSpec.make("gather", (6, 8), vocab=50)
    ops = [GraphOp(OP, spec, "Gather", ("emb",), ("ids",), ("e",)),
           GraphOp(OP, OpSpec.make("layernorm", (6, 8)), "LayerNormalization", ("ln",), ("e",), ("out",))]
    graph = Graph(ops, "embed", {"ids": (1, 6)}, ("out",))
    g = network_graph(graph)
    ids = network_inputs(g)[0]
    assert ids.dtype == np.int32 and ids.shape == (1, 6) and 0 <= ids.min() and ids.max() < 50
    y = run(serialize(g), [ids])
    want = layernorm(make_weights(spec)["table"][ids[0]].astype(np.float64), make_weights(ops[1].spec))
    np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-4, atol=1e-5)


def test_a_chain_of_transformer_specs_is_timed_whole():
    from hwlat.profilers.litert.network import network_model
    from hwlat.profilers.protocol import Protocol, measure, perf_timer

    graph = Graph.from_specs([OpSpec.make("layernorm", (17, 48)), OpSpec.make("linear", (17, 48), cout=96),
                              OpSpec.make("gelu", (17, 96, 1, 1)), OpSpec.make("softmax", (17, 96))])
    content, inputs = network_model(graph)
    y = run(content, inputs)
    assert y.shape == (17, 96) and np.allclose(y.sum(axis=1), 1, atol=1e-5)
    interp = litert.LiteRTRuntime(threads=1).interpreter(content)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], inputs[0])
    assert measure(perf_timer(interp.invoke), Protocol.preset("quick")).median_ms > 0


def test_a_split_is_one_split_op_and_a_constant_operand_is_a_constant():
    """A copy with three outputs (q, k, v out of one projection) is one SPLIT along the features, and
    an add whose other operand is a constant (a position embedding) adds `make_inputs`' values."""
    add = OpSpec.make("add", (16, 32, 1, 1))
    ops = [GraphOp(OP, OpSpec.make("copy", (16, 96, 1, 1)), "Split", ("split",), ("x",), ("q", "k", "v")),
           GraphOp(OP, OpSpec.make("add", (16, 32, 1, 1)), "Add", ("qv",), ("q", "v"), ("qv",)),
           GraphOp(OP, add, "Add", ("pos",), ("qv",), ("y",))]
    shapes = {"x": (16, 96), "q": (16, 32), "k": (16, 32), "v": (16, 32)}
    g = network_graph(Graph(ops, "split", {"x": (16, 96)}, ("y",), shapes))
    assert [op.kind for op in g.ops] == ["SPLIT", "ADD", "ADD"]
    x = network_inputs(g)[0]
    y = run(serialize(g), [x])
    want = x[:, :32] + x[:, 64:] + make_inputs(add)[1].reshape(16, 32)
    np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-6, atol=1e-6)


def test_a_padding_mask_broadcast_over_the_scores_is_one_broadcasting_add():
    """Scores (h, t, t) + a key-padding mask (h, 1, t), as torch exports a BERT with an attention_mask
    input: one ADD that broadcasts (a reshape of the mask to the scores' shape before)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["scores", "mask"], ["masked"]), helper.make_node("Softmax", ["masked"], ["p"], axis=-1)]
    model = helper.make_model(helper.make_graph(
        nodes, "masked_softmax", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 8, 8]),
                                  helper.make_tensor_value_info("mask", TensorProto.FLOAT, [2, 1, 8])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 8, 8])]), opset_imports=[helper.make_opsetid("", 17)])
    g = network_graph(Graph.from_onnx(onnx.load_from_string(model.SerializeToString())))
    assert [op.kind for op in g.ops if op.kind != "RESHAPE"] == ["ADD", "SOFTMAX"]
    scores, mask = network_inputs(g)
    y = run(serialize(g), [scores, mask])
    np.testing.assert_allclose(y.reshape(2, 8, 8), softmax(scores + mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, axis, sizes", [((1, 8, 6, 6), -3, (4, 4)), ((1, 8, 6, 6), 1, (3, 5)), ((1, 10, 32), -1, (8, 24))],
                         ids=["channel-chunk", "channel-sizes", "token-sizes"])
def test_a_split_cuts_the_axis_and_sizes_of_its_node_in_the_tensors_layout(shape, axis, sizes):
    """A Split (torch's chunk, or split with sizes) gives its outputs the node's sizes along its axis (a
    negative one counted from the end), and a feature map is cut in NHWC, with no layout TRANSPOSE."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    outs = [f"y{i}" for i in range(len(sizes))]
    split = numpy_helper.from_array(np.array(sizes, np.int64), "sizes")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Split", ["x", "sizes"], outs, axis=axis)], "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], [split]),
        opset_imports=[helper.make_opsetid("", 17)])
    g = network_graph(Graph.from_onnx(onnx.load_from_string(model.SerializeToString())))
    assert "TRANSPOSE" not in [op.kind for op in g.ops]
    x = network_inputs(g)[0]
    rt = litert.LiteRTRuntime(threads=1)
    rt.check_available()
    interp = rt.interpreter(serialize(g))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
    nchw = x.transpose(0, 3, 1, 2) if len(shape) == 4 else x
    want = np.split(nchw, np.cumsum(sizes)[:-1], axis=axis)
    for y, w in zip(got, want):
        np.testing.assert_array_equal(y, w.transpose(0, 2, 3, 1) if len(shape) == 4 else w)


def test_a_slice_of_a_feature_maps_channels_is_one_slice_in_nhwc():
    """torch's legacy exporter writes chunk(2, 1) of a feature map as Slices on the channels: each is
    one SLICE of the NHWC map, with no layout TRANSPOSE to NCHW and back."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("starts", [4]), ("ends", [8]), ("axes", [1]))]
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        "slice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], consts), opset_imports=[helper.make_opsetid("", 17)])
    g = network_graph(Graph.from_onnx(onnx.load_from_string(model.SerializeToString())))
    assert [op.kind for op in g.ops] == ["SLICE", "RELU"]
    x = network_inputs(g)[0]
    assert run(serialize(g), [x]).shape == (1, 6, 6, 4)
