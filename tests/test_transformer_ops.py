"""Transformer ops (gelu, matmul, softmax, layernorm, transpose, copy, gather and their fused kernels):
single-op models on onnxruntime and torch against numpy, torch-exported transformers run by
`onnx_module` against onnxruntime, regressor features, fusion grouping and the sweep preset."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

from hwlat.device_tables.errors import SweepError  # noqa: E402
from hwlat.device_tables.graph import OP, Graph, GraphOp  # noqa: E402
from hwlat.device_tables.kernels import FusionRules, group_kernels, split_kernel  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.profilers.weights import BN_EPS, LN_EPS, make_inputs, make_weights  # noqa: E402

SPECS = [
    OpSpec.make("gelu", (12, 16, 1, 1)),
    OpSpec.make("gelu", (12, 16, 1, 1), tanh=True),
    OpSpec.make("matmul", (1, 2, 7, 8), n=5),
    OpSpec.make("softmax", (14, 7)),
    OpSpec.make("layernorm", (7, 24)),
    OpSpec.make("transpose", (1, 7, 2, 8), perm="0213"),
    OpSpec.make("transpose", (1, 2, 7, 8), perm="0132"),
    OpSpec.make("copy", (7, 24, 1, 1)),
    OpSpec.make("gather", (9, 16), vocab=50),
    OpSpec.make("linear+gelu", (7, 24), cout=32),
    OpSpec.make("add+layernorm", (7, 24, 1, 1)),
]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def _gelu(x: np.ndarray, tanh: bool = False) -> np.ndarray:
    if tanh:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _layernorm(x: np.ndarray, w: dict) -> np.ndarray:
    rows = x.reshape(x.shape[0], -1)
    mu, var = rows.mean(-1, keepdims=True), rows.var(-1, keepdims=True)
    return ((rows - mu) / np.sqrt(var + LN_EPS) * w["ln_scale"] + w["ln_bias"]).reshape(x.shape)


def reference(spec: OpSpec) -> np.ndarray:
    """The op in float64 numpy, from the same weights and inputs every builder uses."""
    w = {k: v.astype(np.float64) for k, v in make_weights(spec).items()}
    xs = make_inputs(spec)
    x = xs[0].astype(np.float64) if spec.base != "gather" else xs[0]
    base = spec.base
    if base == "gelu":
        y = _gelu(x, spec.a["tanh"])
    elif base == "matmul":
        y = x @ xs[1].astype(np.float64)
    elif base == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        y = e / e.sum(-1, keepdims=True)
    elif base == "layernorm":
        y = _layernorm(x, w)
    elif base == "transpose":
        y = x.transpose([int(d) for d in spec.a["perm"]])
    elif base == "copy":
        y = x
    elif base == "gather":
        y = w["table"][x]
    elif base == "linear":
        y = x @ w["W"].T + w["b"]
    elif base == "add":
        y = x + xs[1]
    for tail in spec.parts[1:]:
        y = _gelu(y) if tail == "gelu" else _layernorm(y, w)
    assert BN_EPS == LN_EPS == 1e-5
    return y


def test_gather_inputs_are_token_ids_and_layernorm_has_scale_and_bias():
    spec = OpSpec.make("gather", (9, 16), vocab=50)
    (ids,) = make_inputs(spec)
    assert ids.dtype == np.int64 and ids.shape == (9,) and 0 <= ids.min() and ids.max() < 50
    assert make_weights(spec)["table"].shape == (50, 16)
    w = make_weights(OpSpec.make("layernorm", (7, 24)))
    assert w["ln_scale"].shape == w["ln_bias"].shape == (24,)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_onnxruntime_single_op_models_compute_the_op(spec):
    from hwlat.profilers.onnx_ops import build_onnx_bytes, input_names

    session = ort.InferenceSession(build_onnx_bytes(spec), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(input_names(spec), make_inputs(spec))))[0]
    assert got.shape == spec.output_shape
    np.testing.assert_allclose(got, reference(spec), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_torch_single_op_modules_compute_the_op(spec):
    from hwlat.profilers.torch_eager.ops import build_inputs, build_module

    with torch.inference_mode():
        got = build_module(spec)(*build_inputs(spec)).numpy()
    assert got.shape == spec.output_shape
    np.testing.assert_allclose(got, reference(spec), rtol=1e-4, atol=1e-5)


def test_onnxruntime_runs_what_the_builders_mean():
    """The erf GELU decomposition becomes ORT's one Gelu kernel, a skip layer norm one kernel, and a
    copy stays a copy (no optimiser removes it); a gather of int64 ids is timed."""
    from hwlat.profilers.ort.runtime import OnnxRuntime
    from hwlat.profilers.protocol import Protocol

    rt = OnnxRuntime(threads=1)
    assert rt.count_kernels(OpSpec.make("gelu", (197, 192, 1, 1))) == 1
    assert rt.count_kernels(OpSpec.make("add+layernorm", (197, 192, 1, 1))) == 1
    assert rt.count_kernels(OpSpec.make("copy", (197, 192, 1, 1))) == 1
    m, _ = rt.measure(OpSpec.make("gather", (64, 128), vocab=1000), Protocol.preset("quick"))
    assert m.median_ms > 0


def test_the_tanh_gelu_single_op_model_runs_on_the_token_view():
    """ONNX Runtime runs the unfused tanh-GELU chain on a (rows, C, 1, 1) tensor ~27x slower than on
    the (1, rows, C) one a transformer holds, so the single-op model computes on the latter."""
    import onnx

    from hwlat.profilers.onnx_ops import build_onnx_model

    model = onnx.shape_inference.infer_shapes(build_onnx_model(OpSpec.make("gelu", (64, 3072, 1, 1), tanh=True)))
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.value_info}
    tanh = next(n for n in model.graph.node if n.op_type == "Tanh")
    assert ranks[tanh.input[0]] == 3
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [64, 3072, 1, 1]


# ---- whole networks exported from torch, run by onnx_module ---------------------------------------
class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        y = self.n1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, one block, head on the class token."""

    def __init__(self, d: int = 32, heads: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 17, d))
        self.block, self.norm, self.head = Block(d, heads), nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.block(x))[:, 0])


class BertLayer(nn.Module):
    """Fused qkv split, masked attention, tanh GELU and a layer norm written out (ReduceMean, Pow, Sqrt)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.out, self.ln = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.g, self.b = nn.Parameter(torch.rand(d) + 0.5), nn.Parameter(torch.rand(d) - 0.5)

    def forward(self, x, bias):
        b, t, c = x.shape
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, -1))
        a = torch.softmax(q @ k.transpose(-1, -2) / (c // self.heads) ** 0.5 + bias, -1)
        x = self.ln(x + self.out((a @ v).transpose(1, 2).reshape(b, t, c)))
        y = x + self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))
        mu = y.mean(-1, keepdim=True)
        var = (y - mu).pow(2).mean(-1, keepdim=True)
        return (y - mu) / torch.sqrt(var + 1e-5) * self.g + self.b


class TinyBert(nn.Module):
    """Word and position embeddings of int64 token ids (positions from arange), a padding mask, one layer."""

    def __init__(self, vocab: int = 100, d: int = 32, heads: int = 2):
        super().__init__()
        self.tok, self.pos, self.ln = nn.Embedding(vocab, d), nn.Embedding(64, d), nn.LayerNorm(d)
        self.layer = BertLayer(d, heads)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1]).unsqueeze(0).expand(ids.shape[0], -1)
        x = self.ln(self.tok(ids) + self.pos(pos))
        bias = torch.where((ids == 0)[:, None, None, :], torch.full((), -1e4), torch.zeros(())).to(x.dtype)
        return self.layer(x, bias)[:, 0]


def _export(model: nn.Module, example, name: str, dynamo: bool, dim: int) -> bytes:
    torch.manual_seed(0)
    if dynamo:
        pytest.importorskip("onnxscript")
        shapes = {name: {dim: torch.export.Dim("d", min=2, max=32)}}
        return torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, verbose=False
                                 ).model_proto.SerializeToString()
    f = io.BytesIO()
    torch.onnx.export(model, (example,), f, dynamo=False, opset_version=17, input_names=[name],
                      dynamic_axes={name: {dim: "d"}})
    return f.getvalue()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("which", ["vit", "bert"])
def test_onnx_module_runs_exported_transformers_as_onnxruntime_does(which, dynamo):
    from onnx import load_from_string

    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    torch.manual_seed(0)
    if which == "vit":
        model, example, name, dim = TinyViT().eval(), torch.randn(2, 3, 32, 32), "x", 0
        x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    else:
        model, example, name, dim = TinyBert().eval(), torch.randint(1, 100, (1, 16)), "ids", 1
        x = np.random.default_rng(1).integers(1, 100, (1, 24))
        x[0, 20:] = 0  # padding: the mask is computed while the network runs
    onnx_bytes = _export(model, example, name, dynamo, dim)
    name = load_from_string(onnx_bytes).graph.input[0].name
    module, shape = onnx_module(onnx_bytes, torch, {name: x.shape})
    assert shape == x.shape
    want = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_onnx_module_reads_settings_from_attributes_of_older_opsets():
    """Opset 11: Unsqueeze/Squeeze/ReduceMean axes and Split sizes are attributes, not inputs."""
    from onnx import TensorProto, helper

    from hwlat.profilers.torch_eager.onnx_module import onnx_module

    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
             helper.make_node("Split", ["u"], ["a", "b"], axis=2, split=[2, 4]),
             helper.make_node("ReduceMean", ["b"], ["m"], axes=[2], keepdims=1),
             helper.make_node("Mul", ["a", "m"], ["p"]),
             helper.make_node("Squeeze", ["p"], ["y"], axes=[0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    data = model.SerializeToString()
    x = np.random.default_rng(0).standard_normal((3, 6), dtype=np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    module, _ = onnx_module(data, torch)
    with torch.inference_mode():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), want, rtol=1e-5)


@pytest.mark.filterwarnings("ignore")
def test_torch_times_a_network_of_token_ids():
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.torch_eager.runtime import TorchRuntime

    model = _export(TinyBert().eval(), torch.randint(1, 100, (1, 16)), "ids", False, 1)
    m = TorchRuntime(threads=1).time_model(model, Protocol.preset("quick"), input_shape={"ids": (1, 16)})
    assert m.median_ms > 0


# ---- regressors, grouping, fusion probes, sweeps ------------------------------------------------------
def test_regressor_features_describe_every_new_op_and_fit():
    from hwlat.predictors.kernel_regressors import FEATURE_NAMES, KernelRegressors, features, geometry
    from hwlat.profilers.sweeps import load_sweep

    specs = load_sweep("transformer") + SPECS
    X = np.stack([features(s) for s in specs])
    assert X.shape[1] == len(FEATURE_NAMES) and np.isfinite(X).all()
    qk = geometry(OpSpec.make("matmul", (1, 12, 197, 64), n=197))
    assert (qk.batch, qk.rows_in, qk.cin, qk.cout) == (12, 197, 64, 197)
    assert geometry(OpSpec.make("softmax", (591, 197))).rows_in == 591
    run = FEATURE_NAMES.index("log_run")
    split = features(OpSpec.make("transpose", (1, 197, 3, 64), perm="0213"))[run]
    kt = features(OpSpec.make("transpose", (1, 3, 197, 64), perm="0132"))[run]
    assert split == pytest.approx(math.log(64)) and kt == 0.0
    rng = np.random.default_rng(0)
    ms = [s.macs * 1e-6 + s.bytes_moved * 1e-7 + 0.003 * rng.uniform(0.9, 1.1) for s in specs]
    reg = KernelRegressors(n_members=4).fit(specs, ms)
    assert np.isfinite(reg.predict(specs)).all()
    assert {"matmul", "softmax", "layernorm", "transpose", "copy", "gather", "gelu"} <= set(reg.families_)


def test_a_linear_feeds_its_gelu_and_an_add_its_layer_norm_in_the_token_view():
    ops = [GraphOp(OP, OpSpec.make("linear", (197, 192), cout=768), "Gemm", ("fc1",), ("x",), ("h",)),
           GraphOp(OP, OpSpec.make("gelu", (197, 768, 1, 1)), "Gelu", ("gelu",), ("h",), ("a",)),
           GraphOp(OP, OpSpec.make("linear", (197, 768), cout=192), "Gemm", ("fc2",), ("a",), ("m",)),
           GraphOp(OP, OpSpec.make("add", (197, 192, 1, 1)), "Add", ("add",), ("m", "x"), ("s",)),
           GraphOp(OP, OpSpec.make("layernorm", (197, 192)), "LayerNormalization", ("ln",), ("s",), ("y",))]
    graph = Graph(ops, "mlp", {"x": (197, 192)}, ("y",))
    kernels = group_kernels(graph, FusionRules.from_patterns(["linear+gelu", "add+layernorm"]))
    assert [k.spec.op for k in kernels] == ["linear+gelu", "linear", "add+layernorm"]
    assert [s.key for s in split_kernel(kernels[2].spec)] == ["add|float32|197x192x1x1|", "layernorm|float32|197x192|"]


def test_fusion_probes_the_transformer_patterns_on_token_shapes():
    from hwlat.profilers.fusion import candidate_patterns, context_probe, probe_spec

    patterns = candidate_patterns()
    assert {"linear+gelu", "add+gelu", "linear+add", "add+layernorm"} <= set(patterns)
    assert probe_spec("linear+gelu").input_shape == (197, 192)
    spec = probe_spec("add+layernorm")
    assert spec.input_shape == (197, 192, 1, 1)
    model, context = context_probe(spec)
    assert [n.op_type for n in model.graph.node].count("LayerNormalization") == 1 and context == 3
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # a valid model


def test_the_transformer_sweep_spans_sequence_lengths_and_checks_its_fields(tmp_path):
    from hwlat.profilers.sweeps import expand, load_sweep, write_sweep

    specs = load_sweep("transformer")
    assert {"linear", "matmul", "softmax", "layernorm", "gelu", "add", "transpose", "copy", "gather"} <= {s.base for s in specs}
    rows = {s.input_shape[0] for s in specs if s.base == "layernorm"}
    assert min(rows) == 16 and max(rows) == 1024
    assert OpSpec.make("matmul", (1, 12, 197, 64), n=197) in specs
    assert OpSpec.make("softmax", (12 * 197, 197)) in specs
    assert OpSpec.make("transpose", (1, 197, 3, 64), perm="0213") in specs
    assert OpSpec.make("gelu", (1024, 3072, 1, 1), tanh=True) in specs
    assert OpSpec.make("gather", (128, 768), vocab=30522) in specs
    path = tmp_path / "s.yaml"
    write_sweep(path, specs[:40] + [s for s in specs if s.base in ("matmul", "transpose", "gather")][:60], "roundtrip")
    again = load_sweep(path)
    assert set(again) == set(specs[:40] + [s for s in specs if s.base in ("matmul", "transpose", "gather")][:60])
    with pytest.raises(SweepError, match="in quotes"):
        list(expand({"op": "transpose", "perm": 213, "c": 4, "h": 4, "w": 4}))
    with pytest.raises(SweepError, match="no 'tokens'"):
        list(expand({"op": "softmax", "c": "tokens"}))
