"""The vit search space and the classic transformers: keys, sampling, encodings, the ONNX models
agreeing with torch, every op priced by the graph extractor, the pool's names and the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hwlat.device_tables.errors import ModelError
from hwlat.nas.spaces import ArchError, get_space
from hwlat.nas.spaces.network import Net
from hwlat.nas.spaces.vit import DEPTHS, EMBED_DIMS, HEADS, MLP_RATIOS, ViTArch, transformer_block

ROOT = Path(__file__).resolve().parents[1]
KEY = "e192-d12-h343434343434-m787878787878"


@pytest.fixture(scope="module")
def space():
    return get_space("vit")


def run_onnx(model: bytes, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def same_function(net: Net, x: np.ndarray) -> None:
    """onnxruntime on the ONNX model and torch on the module compute the same outputs, and the module
    holds exactly the network's parameters."""
    torch = pytest.importorskip("torch")
    from hwlat.nas.spaces.onnx_export import net_to_onnx
    from hwlat.nas.spaces.torch_module import net_to_torch

    torch.set_num_threads(1)
    y_onnx = run_onnx(net_to_onnx(net), x)
    module = net_to_torch(net)
    with torch.no_grad():
        y_torch = module(torch.from_numpy(x)).numpy()
    assert y_onnx.shape == y_torch.shape == net.shape(net.output)
    scale = float(np.abs(y_torch).max())
    np.testing.assert_allclose(y_onnx, y_torch, rtol=1e-4, atol=1e-4 * scale)
    assert sum(p.numel() for p in module.parameters()) == net.params()


# ---- keys, sampling, encodings ----------------------------------------------------------------
def test_keys_round_trip_and_other_forms(space):
    for arch in space.sample(30, seed=2):
        key = space.key(arch)
        assert space.parse(key) == arch and space.key(space.parse(key)) == key
        assert space.key_record(arch) == {"vit_arch": key}
    a = space.parse(KEY)
    assert (a.embed, a.depth, a.heads[:2], a.ratios[:2]) == (192, 12, (3, 4), (3.5, 4.0))
    config = {"embed_dim": [192] * 12, "num_heads": list(a.heads), "mlp_ratio": list(a.ratios), "layer_num": 12}
    assert space.parse(config) == a  # AutoFormer's subnet config


@pytest.mark.parametrize("bad,needle", [
    ("e200-d12-h343434343434-m787878787878", "embedding dim 200"),
    ("e192-d15-h343434343434343-m787878787878787", "depth 15"),
    ("e192-d12-h34343434343-m787878787878", "11 heads"),
    ("e192-d12-h343434343435-m787878787878", "heads must be in"),
    ("e192-d12-h343434343434-m787878787879", "MLP ratios"),
    ("vit-tiny", "expected e<192|216|240>"),
])
def test_bad_keys_raise_one_clear_error(space, bad, needle):
    with pytest.raises(ArchError) as exc:
        space.parse(bad)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_sampling_is_seeded_uniform_and_mutate_changes_one_choice(space):
    a, b = space.sample(80, seed=7), space.sample(80, seed=7)
    assert a == b and a != space.sample(80, seed=8)
    assert {x.embed for x in a} == set(EMBED_DIMS) and {x.depth for x in a} == set(DEPTHS)
    assert {h for x in a for h in x.heads} == set(HEADS) and {r for x in a for r in x.ratios} == set(MLP_RATIOS)
    share4 = np.mean([h == 4 for x in a for h in x.heads])
    assert 0.4 < share4 < 0.6
    rng = np.random.default_rng(0)
    for arch in a[:20]:
        m = space.mutate(arch, rng)
        assert m != arch and space.parse(space.key(m)) == m
        assert np.abs(space.encode([m])[0] - space.encode([arch])[0]).sum() > 0


def test_size_encoding_and_decisions(space):
    assert space.size == 3 * (4**12 + 4**13 + 4**14) == 1_056_964_608
    archs = space.sample(20, seed=1)
    x = space.encode(archs)
    assert x.shape == (20, 62) == (20, len(space.feature_names)) and x.dtype == np.float32
    assert np.all(x[:, :3].sum(axis=1) == 1) and np.all(x[:, 3:6].sum(axis=1) == 1)
    assert np.all(x[:, 6:].sum(axis=1) == 2 * np.array([a.depth for a in archs]))  # unused slots all zero
    np.testing.assert_array_equal(space.encode_keys([space.key(a) for a in archs]), x)
    d = space.decisions()
    assert d.n_decisions == 30 and [d.build(i) for i in d.indices(archs)] == archs
    from hwlat.nas.features import latency_features

    X, layout = latency_features("vit", archs)
    assert X.shape[0] == 20 and len(layout.names) == X.shape[1] and np.isfinite(X).all()
    assert len(layout.cost) == 6 and len(layout.size) == 1  # structure counts and log MACs


def test_bigger_choices_cost_more(space):
    small = ViTArch(192, (3,) * 12, (3.5,) * 12)
    big = ViTArch(240, (4,) * 14, (4.0,) * 14)
    assert space.macs(big) > space.macs(small) and space.params(big) > space.params(small)
    # patch embed 3*16*16*192 + 192, cls + pos 198*192, per layer: 2 LayerNorms, qkv 192->576, proj 576->192...
    per_layer = 2 * 2 * 192 + (192 * 576 + 576) + (192 * 192 + 192) + (192 * 672 + 672) + (672 * 192 + 192)
    assert space.params(small) == 3 * 256 * 192 + 192 + 198 * 192 + 12 * per_layer + 2 * 192 + 192 * 1000 + 1000


# ---- builders -----------------------------------------------------------------------------------
def test_onnx_is_written_as_the_exporter_writes_it_and_matches_torch(space):
    import onnx

    arch = space.parse(KEY)
    model = onnx.load_from_string(space.to_onnx(arch))
    assert model.opset_import[0].version == 17
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["LayerNormalization"] == 2 * 12 + 1 and ops["Softmax"] == ops["Erf"] == 12
    assert ops["MatMul"] == 12 * (4 + 2) and ops["Gemm"] == 1 and ops["Conv"] == 1 and ops["Concat"] == 1
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info]
    assert dims and all(all(d > 0 for d in shape) for shape in dims)  # static shapes throughout
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    same_function(space.network(arch), x)


def test_attention_variants_and_token_layers_match_torch():
    """Split q/k/v with a causal mask and tanh GELU (GPT-2), separate q/k/v divided by sqrt(d) (BERT),
    token ids and a gathered position table, MobileViT's unfold/fold, a distillation token."""
    ids = Net((1, 12), seed=3, input_dtype="int64")
    x = ids.pos(ids.embed("input", 50, 32), table=16)
    x = transformer_block(ids, x, 4, 8, 64, "gelu_tanh", "gpt", qkv="split", causal=True, scale="div")
    y = ids.attention(ids.layernorm(x), 2, 16, qkv="separate", scale="div")
    ids.linear(ids.add(x, y), 24, act="silu")
    same_function(ids, np.random.default_rng(0).integers(0, 50, (1, 12)))

    img = Net((1, 8, 8, 8), seed=4)
    t = img.unfold(img.conv("input", 16, 1, bn=False, bias=False), 2)
    t = transformer_block(img, t, 2, 8, 32, "silu", "mvit")
    y = img.conv(img.concat("input", img.fold(t, (1, 16, 8, 8), 2)), 8, 3, act="silu")
    t = img.pos(img.prepend(img.tokens(y), 2))
    img.div(img.add(img.select(t, 0), img.select(t, 1)), 2.0)
    same_function(img, np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32))


# ---- classic transformers -----------------------------------------------------------------------
OUTPUTS = {"vit_ti": (1, 1000), "vit_s": (1, 1000), "deit_ti": (1, 1000), "mobilevit_xs": (1, 1000),
           "bert_tiny": (1, 128, 128), "bert_mini": (1, 128, 256), "bert_small": (1, 128, 512), "gpt2": (1, 128, 768)}


def test_classic_transformers_run_with_their_stated_outputs():
    from hwlat.nas.models import to_onnx
    from hwlat.nas.transformers import FAMILIES, TransformerConfig

    assert set(OUTPUTS) == set(FAMILIES)
    for name, out in OUTPUTS.items():
        cfg = TransformerConfig.parse(name)
        shape = cfg.network().input_shape
        x = np.zeros(shape, np.int64) if len(shape) == 2 else np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        y = run_onnx(to_onnx(cfg.key), x)
        assert y.shape == out and np.isfinite(y).all(), cfg.key
    # DeiT: 196 patches + class + distillation token; MobileViT at another resolution
    import onnx

    deit = onnx.shape_inference.infer_shapes(onnx.load_from_string(to_onnx("deit_ti@r224")))
    tokens = next(v for v in deit.graph.value_info if v.name == "cls_token")  # after the Concat
    assert [d.dim_value for d in tokens.type.tensor_type.shape.dim] == [1, 198, 192]
    assert run_onnx(to_onnx("mobilevit_xs@r192"), np.zeros((1, 3, 192, 192), np.float32)).shape == (1, 1000)


@pytest.mark.parametrize("key,needle", [("bert_mini@r128", "bert_mini@s128"), ("vit_ti@r100", "multiple of 16"),
                                        ("gpt2@s2048", "1 to 1024"), ("gpt3", "unknown model")])
def test_bad_model_keys(key, needle):
    from hwlat.nas.models import to_onnx

    with pytest.raises(ModelError, match=needle):
        to_onnx(key)


def test_every_op_of_the_transformers_and_of_vit_samples_is_priced():
    from hwlat.nas.pool import graph_of, space_networks, transformer_networks

    for name in transformer_networks() + space_networks("vit", 3, seed=5):
        g = graph_of(name)
        assert not g.uncovered, f"{name}: {[u.describe() for u in g.uncovered[:3]]}"
        assert len(g.specs) > 40
    g = graph_of("transformers:gpt2@s128")
    ops = Counter(s.base for s in g.specs)
    assert ops["matmul"] == 24 and ops["softmax"] == 12 and ops["gather"] == 1
    assert sum(s.base == "gelu" and s.a["tanh"] for s in g.specs) == 12
    vit = get_space("vit")
    assert [s.key for s in vit.to_graph(KEY)] == [s.key for s in graph_of(f"vit:{KEY}").specs]


def test_pool_names_and_kinds():
    from hwlat.nas.pool import (TRANSFORMERS, classic_networks, in_turn, onnx_of, space_networks, target_kinds,
                          target_networks, transformer_networks)

    assert {"vit", "classic", TRANSFORMERS} <= set(target_kinds())
    assert all(n.startswith("classic:") and "@r" in n for n in classic_networks())  # CNNs only, as before
    names = transformer_networks()
    assert len(names) == len(set(names)) >= 8 and "transformers:bert_mini@s128" in names
    assert space_networks(TRANSFORMERS, 4, seed=1) == space_networks(TRANSFORMERS, 4, seed=1) != \
        space_networks(TRANSFORMERS, 4, seed=2)
    default = target_networks(2, seed=0)
    assert not any(n.split(":")[0] in ("vit", TRANSFORMERS) for n in default)  # CNN benchmarks unchanged
    both = target_networks(2, spaces=["vit"], classic=False, transformers=True)
    assert {n.split(":")[0] for n in in_turn(both, 2)} == {"vit", TRANSFORMERS}
    assert onnx_of("transformers:bert_tiny@s64") == onnx_of("classic:bert_tiny@s64")


def test_naswot_scores_vit_archs(space):
    from hwlat.nas.search.objectives import naswot_score

    a, b = space.sample(2, seed=3)
    sa, sb = naswot_score(space, a, batch=4), naswot_score(space, b, batch=4)
    assert np.isfinite([sa, sb]).all() and sa != sb and sa > 4 * np.log(1e-3) + 1  # GELU units counted


def test_cli_show_sample_and_profile_archs(tmp_path):
    def hwlat(*args):
        p = subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout

    keys = hwlat("space", "sample", "--space", "vit", "-n", "3", "--seed", "4").split()
    assert len(keys) == 3 and [get_space("vit").key(k) for k in keys] == keys
    shown = hwlat("space", "show", "--space", "vit", "--arch", keys[0])
    assert f"vit_arch {keys[0]}" in shown and "input     1x3x224x224" in shown
    assert "layernorm" in shown and "softmax" in shown and "no op of the vocabulary covers" not in shown
    (tmp_path / "keys.txt").write_text(keys[0] + "\n")
    hwlat("profile", "archs", "--space", "vit", "--archs", str(tmp_path / "keys.txt"), "--out", str(tmp_path / "t"),
          "--protocol", "quick", "--passes", "1", "--no-progress")
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0].startswith("vit_arch,cpu/onnxruntime") and rows[1].startswith(keys[0] + ",") and len(rows) == 2
