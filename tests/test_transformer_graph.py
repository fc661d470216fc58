"""Transformers exported from torch (TorchScript and dynamo exporters) extract to complete graphs:
shape subgraphs folded away, attention, LayerNorm, GELU and embeddings mapped to the vocabulary;
decomposed LayerNorm and GELU patterns fold into one op; multi-input shapes from the command line."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwlat.device_tables.device import Device
from hwlat.device_tables.errors import ModelError
from hwlat.device_tables.graph import FREE, OP, Graph, parse_input_shapes
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.table import DeviceTable

torch = pytest.importorskip("torch")
nn = torch.nn
ROOT = Path(__file__).resolve().parents[1]
D, HEADS, DEPTH, VOCAB, T = 32, 2, 2, 100, 8
IMAGE = (1, 3, 32, 32)  # patch 8: 16 patches + a class token
TOKENS = {"input_ids": (1, T), "attention_mask": (1, T)}


class ViTBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        nn.init.normal_(self.attn.out_proj.bias)  # as trained: the dynamo exporter drops a zero bias

    def forward(self, x):
        y = self.n1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 8, 8)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.zeros(1, 17, D))
        self.blocks = nn.Sequential(*[ViTBlock() for _ in range(DEPTH)])
        self.norm, self.head = nn.LayerNorm(D), nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class BertLayer(nn.Module):
    """Self-attention written out as Hugging Face's BERT does, with the tanh GELU."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.f1, self.act, self.f2 = nn.Linear(D, 4 * D), nn.GELU(approximate="tanh"), nn.Linear(4 * D, D)

    def heads(self, t):
        b, n, _ = t.shape
        return t.view(b, n, HEADS, D // HEADS).transpose(1, 2)

    def forward(self, x, mask):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS) + mask
        a = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(x.shape)
        x = self.n1(x + self.o(a))
        return self.n2(x + self.f2(self.act(self.f1(x))))


class Bert(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok, self.pos, self.typ = nn.Embedding(VOCAB, D), nn.Embedding(64, D), nn.Embedding(2, D)
        self.norm = nn.LayerNorm(D)
        self.layers = nn.ModuleList(BertLayer() for _ in range(DEPTH))
        self.pool = nn.Linear(D, D)
        self.register_buffer("type_ids", torch.zeros(1, 64, dtype=torch.long))

    def forward(self, input_ids, attention_mask):
        n = input_ids.shape[1]
        pos = torch.arange(n).unsqueeze(0)
        x = self.norm(self.tok(input_ids) + self.pos(pos) + self.typ(self.type_ids[:, :n]))
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return torch.tanh(self.pool(x[:, 0]))


def _export(model, args, names, dynamic, path, dynamo):
    """`model` exported with every input's dims in `dynamic` dynamic, by the TorchScript or the dynamo exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {n: {i: torch.export.Dim(f"{n}_{i}", max=64) for i in dynamic} for n in names}
            torch.onnx.export(model, args, str(path), dynamo=True, input_names=list(names), dynamic_shapes=dims,
                              verbose=False)
        else:
            axes = {n: {i: f"{n}_{i}" for i in dynamic} for n in names}
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=list(names),
                              dynamic_axes=axes)
    return path


class _Exports(dict):
    """The exports made; a test that asks for a dynamo export where onnxscript is missing skips (the
    TorchScript ones still run)."""

    def __missing__(self, key):
        pytest.skip(f"the {key[1]} exporter needs onnxscript (pip install onnxscript)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{(model, exporter): ONNX path} for the ViT and the BERT encoder, each exported both ways."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("exports")
    vit, bert = ViT().eval(), Bert().eval()
    ids, mask = torch.randint(0, VOCAB, (1, T)), torch.ones(1, T, dtype=torch.long)
    paths = _Exports()
    for dynamo, how in ((False, "torchscript"), (True, "dynamo")):
        if dynamo and importlib.util.find_spec("onnxscript") is None:  # the dynamo exporter's dependency
            continue
        paths["vit", how] = _export(vit, (torch.randn(*IMAGE),), ["x"], [0], out / f"vit_{how}.onnx", dynamo)
        paths["bert", how] = _export(bert, (ids, mask), list(TOKENS), [0, 1], out / f"bert_{how}.onnx", dynamo)
    return paths


CORE = ("layernorm", "matmul", "softmax", "gelu", "linear")


def _counts(g: Graph) -> Counter:
    return Counter(s.op for s in g.specs)


def _complete(path, shape) -> tuple[Graph, Counter]:
    """The graph of an export, asserted to leave no op uncovered, and its op counts."""
    g = Graph.from_onnx(path, shape)
    assert not g.uncovered, [u.describe() for u in g.uncovered]
    return g, _counts(g)


@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
def test_exported_vit_extracts_completely_with_its_op_counts(exported, how):
    g, n = _complete(exported["vit", how], IMAGE)
    # 2 layernorms a block and a final one; QK^T and PV, one softmax an attention; one GELU an MLP;
    # in-projection, out-projection, two MLP layers a block and the head.
    assert [n[op] for op in CORE] == [2 * DEPTH + 1, 2 * DEPTH, DEPTH, DEPTH, 4 * DEPTH + 1]
    assert n["conv2d"] == 1
    tokens = 17
    by_op = {s.op: s for s in g.specs}
    assert by_op["layernorm"].input_shape == (tokens, D)
    assert by_op["softmax"].input_shape == (HEADS * tokens, tokens)
    assert by_op["gelu"].input_shape == (tokens, 4 * D, 1, 1) and by_op["gelu"].a["tanh"] is False
    assert {s.input_shape + (s.a["n"],) for s in g.specs if s.op == "matmul"} == {
        (1, HEADS, tokens, D // HEADS, tokens), (1, HEADS, tokens, tokens, D // HEADS)}
    # The exporter's shape arithmetic was folded: no node of it is priced.
    assert all(op.kind == FREE for op in g.ops if op.onnx_op in ("Shape", "Unsqueeze", "Equal", "Where", "ConstantOfShape"))


def test_both_exports_of_a_model_price_the_same_kernels(exported):
    for model, shape in (("vit", IMAGE), ("bert", TOKENS)):
        keys = [sorted(s.key for s in Graph.from_onnx(exported[model, how], shape).specs
                       if s.op in CORE + ("gather",))
                for how in ("torchscript", "dynamo")]
        assert keys[0] == keys[1], model


@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
def test_exported_bert_with_token_ids_and_mask_extracts_completely(exported, how):
    g, n = _complete(exported["bert", how], TOKENS)
    # q, k, v, o and two MLP layers a layer and the pooler; tanh GELU; embeddings + one LayerNorm.
    assert [n[op] for op in CORE] == [2 * DEPTH + 1, 2 * DEPTH, DEPTH, DEPTH, 6 * DEPTH + 1]
    assert all(s.a["tanh"] for s in g.specs if s.op == "gelu")
    # Only the token lookup runs; position and token-type lookups of constant indices fold away.
    (gather,) = [s for s in g.specs if s.op == "gather"]
    assert gather.input_shape == (T, D) and gather.a["vocab"] == VOCAB
    # The mask is added to every head's scores, broadcast over heads and query positions.
    mask_adds = [op for op in g.ops if op.kind == OP and op.spec.op == "add" and "broadcast" in op.note]
    assert [op.spec.input_shape for op in mask_adds] == [(1, HEADS, T, T)] * DEPTH
    assert g.inputs == TOKENS


def test_missing_or_wrong_input_shapes_say_what_to_give(exported):
    path = exported["bert", "torchscript"]
    with pytest.raises(ModelError, match=r"'input_ids'.*'attention_mask'.*--input-shape input_ids=1x128 "
                                         r"--input-shape attention_mask=1x128"):
        Graph.from_onnx(path)
    with pytest.raises(ModelError, match="'attention_mask'"):
        Graph.from_onnx(path, {"input_ids": (1, T)})
    with pytest.raises(ModelError, match="give a shape per input name"):
        Graph.from_onnx(path, (1, T))
    with pytest.raises(ModelError, match="no model input named"):
        Graph.from_onnx(path, {**TOKENS, "token_type_ids": (1, T)})
    # Sequence lengths that disagree cannot run (a partial 0.01 ms prediction before): the node that combines them.
    with pytest.raises(ModelError, match=r"node '.*' cannot combine .*: these input shapes \(inputs input_ids 1x8, "
                                         r"attention_mask 1x4\) disagree"):
        Graph.from_onnx(path, {"input_ids": (1, T), "attention_mask": (1, T // 2)})
    assert parse_input_shapes(["input_ids=1x8", "attention_mask=1x8"]) == TOKENS
    assert parse_input_shapes(["1x3x32x32"]) == IMAGE and parse_input_shapes(None) is None
    for bad in (["1x8", "1x8"], ["input_ids=1x8", "1x8"], ["a=1x8", "a=1x8"], ["=1x8"]):
        with pytest.raises(ModelError, match="--input-shape|input shapes"):
            parse_input_shapes(bad)


# ---- decomposed patterns built by hand ------------------------------------------------------
def _model(nodes, consts, shape=(2, 5, 16), opset=17):
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ln_nodes(square="pow", divide="div"):
    sq = (helper.make_node("Pow", ["d", "two"], ["sq"]) if square == "pow" else helper.make_node("Mul", ["d", "d"], ["sq"]))
    norm = ([helper.make_node("Div", ["d", "s"], ["n"])] if divide == "div" else
            [helper.make_node("Reciprocal", ["s"], ["r"]), helper.make_node("Mul", ["d", "r"], ["n"])])
    return [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]), helper.make_node("Sub", ["x", "m"], ["d"]), sq,
            helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1]), helper.make_node("Add", ["v", "eps"], ["e"]),
            helper.make_node("Sqrt", ["e"], ["s"]), *norm, helper.make_node("Mul", ["n", "gamma"], ["g"]),
            helper.make_node("Add", ["g", "beta"], ["y"])]


LN_CONSTS = {"two": 2.0, "eps": 1e-5, "gamma": np.ones(16), "beta": np.zeros(16)}


@pytest.mark.parametrize("square, divide", [("pow", "div"), ("mul", "reciprocal")])
def test_decomposed_layernorm_is_one_layernorm(square, divide):
    nodes = _ln_nodes(square, divide)
    g = Graph.from_onnx(_model(nodes, LN_CONSTS))
    (op,) = [op for op in g.ops if op.kind != FREE]
    assert op.spec.op == "layernorm" and op.spec.input_shape == (10, 16)
    assert len(op.nodes) == len(nodes) and op.outputs == ("y",) and "eps 1e-05" in op.note


def test_layernorm_pattern_whose_inner_tensor_is_read_elsewhere_is_not_folded():
    nodes = _ln_nodes()
    nodes[-1] = helper.make_node("Add", ["g", "d"], ["y"])  # the centred input read again: not a LayerNorm
    g = Graph.from_onnx(_model(nodes, LN_CONSTS))
    assert "layernorm" not in _counts(g) and len(g.specs) > 5 and not g.uncovered


SQRT2, C = math.sqrt(2), math.sqrt(2 / math.pi)
GELU_FORMS = {
    "erf, x*c then *0.5": ([helper.make_node("Div", ["x", "sqrt2"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
                            helper.make_node("Add", ["b", "one"], ["u"]), helper.make_node("Mul", ["x", "u"], ["v"]),
                            helper.make_node("Mul", ["v", "half"], ["y"])], False),
    "erf, 0.5*x first": ([helper.make_node("Mul", ["half", "x"], ["h"]), helper.make_node("Mul", ["x", "isqrt2"], ["a"]),
                          helper.make_node("Erf", ["a"], ["b"]), helper.make_node("Add", ["one", "b"], ["u"]),
                          helper.make_node("Mul", ["h", "u"], ["y"])], False),
    "tanh, Pow 3": ([helper.make_node("Pow", ["x", "three"], ["p"]), helper.make_node("Mul", ["p", "k"], ["q"]),
                     helper.make_node("Add", ["x", "q"], ["r"]), helper.make_node("Mul", ["r", "c"], ["s"]),
                     helper.make_node("Tanh", ["s"], ["t"]), helper.make_node("Add", ["t", "one"], ["u"]),
                     helper.make_node("Mul", ["x", "u"], ["v"]), helper.make_node("Mul", ["v", "half"], ["y"])], True),
    "tanh, x*x*x, 0.5 on the sum": ([helper.make_node("Mul", ["x", "x"], ["x2"]), helper.make_node("Mul", ["x2", "x"], ["p"]),
                                     helper.make_node("Mul", ["k", "p"], ["q"]), helper.make_node("Add", ["q", "x"], ["r"]),
                                     helper.make_node("Mul", ["c", "r"], ["s"]), helper.make_node("Tanh", ["s"], ["t"]),
                                     helper.make_node("Add", ["t", "one"], ["u"]), helper.make_node("Mul", ["u", "half"], ["w"]),
                                     helper.make_node("Mul", ["x", "w"], ["y"])], True),
}
GELU_CONSTS = {"sqrt2": SQRT2, "isqrt2": 1 / SQRT2, "one": 1.0, "half": 0.5, "three": 3.0, "k": 0.044715, "c": C}


@pytest.mark.parametrize("form", GELU_FORMS)
def test_decomposed_gelu_is_one_gelu(form):
    nodes, tanh = GELU_FORMS[form]
    g = Graph.from_onnx(_model(nodes, GELU_CONSTS))
    (op,) = [op for op in g.ops if op.kind != FREE]
    assert op.spec.op == "gelu" and op.spec.a["tanh"] is tanh and op.spec.input_shape == (10, 16, 1, 1)
    assert len(op.nodes) == len(nodes) and op.outputs == ("y",)


def test_a_near_gelu_with_another_constant_stays_separate_ops():
    nodes, _ = GELU_FORMS["erf, x*c then *0.5"]
    g = Graph.from_onnx(_model(nodes, {**GELU_CONSTS, "half": 0.4}))
    assert "gelu" not in _counts(g) and len(g.specs) == 5 and not g.uncovered


def test_transposes_merge_to_rank_4_and_matmuls_broadcast_batch_dims():
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[3, 1, 2, 0, 4], name="qkv"),  # torch MHA's
             helper.make_node("Transpose", ["t"], ["u"], perm=[0, 1, 3, 2, 4], name="units"),  # moves 1s only
             helper.make_node("MatMul", ["a", "b"], ["m"], name="mm"),
             helper.make_node("Softmax", ["m"], ["y"], axis=1, name="sm")]
    graph = helper.make_graph(nodes, "t", [vi("x", TensorProto.FLOAT, [1, 6, 1, 3, 8]), vi("a", TensorProto.FLOAT, [2, 3, 4, 5]),
                                           vi("b", TensorProto.FLOAT, [3, 5, 7])],
                              [vi("u", TensorProto.FLOAT, None), vi("y", TensorProto.FLOAT, None)])
    g = Graph.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ops = {op.name: op for op in g.ops}
    assert ops["qkv"].spec.op == "transpose" and ops["qkv"].spec.input_shape == (1, 6, 3, 8)
    assert ops["qkv"].spec.a["perm"] == "0213" and ops["qkv"].spec.output_shape == (1, 3, 6, 8)
    assert ops["units"].kind == FREE
    assert ops["mm"].spec.input_shape == (2, 3, 4, 5) and ops["mm"].spec.a["n"] == 7 and "broadcast" in ops["mm"].note
    # A softmax over another axis than the last is no `softmax` row: named, never priced as one.
    assert [u.name for u in g.uncovered] == ["sm"] and "axis" in g.uncovered[0].note


# ---- the command line -----------------------------------------------------------------------
def _hwlat(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_predict_takes_a_shape_per_named_input(exported, tmp_path):
    path = exported["bert", "torchscript"]
    g = Graph.from_onnx(path, TOKENS)
    table = DeviceTable(Device.make("cpu", "synthetic"))
    for s in dict.fromkeys(g.specs):
        table.append(s, Measurement.from_samples([0.01 + s.macs / 4e6]))
    table.save(tmp_path / "tab")
    shapes = [a for name, shape in TOKENS.items() for a in ("--input-shape", f"{name}={'x'.join(map(str, shape))}")]
    proc = _hwlat("predict", str(path), "--table", str(tmp_path / "tab"), *shapes, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["partial"] is False and out["counts"]["table"] == len(g.specs)
    proc = _hwlat("predict", str(path), "--table", str(tmp_path / "tab"), cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--input-shape input_ids=1x128 --input-shape attention_mask=1x128" in proc.stderr
