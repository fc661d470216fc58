"""Search spaces: keys, official NB201 indices, encodings, dead edges, and the three builders agreeing."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from hwlat.nas.spaces import SPACES, ArchError, get_space, space_class
from hwlat.nas.spaces.fbnet import BLOCKS, layer_plan
from hwlat.nas.spaces.ofa import OFAArch

# Rows of the official NAS-Bench-201 ordering (index, arch string, ops6), copied from the benchmark.
KNOWN_NB201 = [
    (0, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|", "4-2-1-2-1-1"),
    (1, "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "3-3-4-1-3-1"),
    (9, "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|", "4-0-0-1-0-3"),
    (123, "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|", "4-4-2-0-4-3"),
    (900, "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|", "1-0-2-1-4-2"),
    (1899, "|avg_pool_3x3~0|+|skip_connect~0|skip_connect~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|", "4-1-1-3-3-0"),
    (15624, "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|none~0|nor_conv_1x1~1|nor_conv_1x1~2|", "2-0-2-0-2-2"),
]
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
NAMES = list(SPACES)
CNN_NAMES = [n for n in SPACES if space_class(n).family == "cnn"]  # the vit space's own: tests/test_vit_space.py


def small(space, archs):
    """OFA archs at the lowest resolution keep the builder tests fast."""
    if space.name != "ofa":
        return archs
    return [OFAArch(a.ks, a.e, a.d, 128) for a in archs]


# ---- keys -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_key_round_trip(name):
    space = get_space(name)
    for arch in space.sample(25, seed=3):
        key = space.key(arch)
        assert isinstance(key, str)
        assert space.parse(key) == arch
        assert space.key(space.parse(key)) == key
        assert space.key_record(arch)[space.key_column] == key
        assert set(space.key_record(arch)) <= set(space.key_columns)


def test_nb201_known_rows():
    space = get_space("nb201")
    for index, arch_str, ops6 in KNOWN_NB201:
        arch = space.parse(arch_str)
        assert arch.index == index == space.index(arch)
        assert arch.ops6 == ops6
        assert space.parse(index) == space.parse(str(index)) == space.parse(ops6) == arch
        assert space.key(space.from_index(index)) == arch_str
        assert space.key_record(arch) == {"nb201_index": index, "arch_str": arch_str, "ops6": ops6}


def test_nb201_enumeration_is_a_permutation_in_index_order():
    space = get_space("nb201")
    archs = list(space.enumerate())
    assert len(archs) == space.size == 15625
    assert len({a.ops for a in archs}) == 15625
    assert [a.index for a in archs[:50]] == list(range(50))
    assert archs[123].arch_str == KNOWN_NB201[3][1]


def test_fbnet_and_ofa_keys_match_public_form():
    fb = get_space("fbnet")
    key = "7-8-1-8-4-8-8-8-7-4-1-4-7-3-2-7-3-2-4-2-4-5"
    names = ("k5_e6-skip-k3_e1_g2-skip-k5_e1-skip-skip-skip-k5_e6-k5_e1-k3_e1_g2-k5_e1-k5_e6-k3_e6-k3_e3-k5_e6-k3_e6"
             "-k3_e3-k5_e1-k3_e3-k5_e1-k5_e1_g2")
    arch = fb.parse(key)
    assert fb.parse(names) == arch and fb.key_record(arch) == {"fbnet_op_idx22": key, "fbnet_ops22": names}
    ofa = get_space("ofa")
    key = "ks=7-5-5-5-7-7-5-7-5-7-3-7-5-3-7-3-5-3-5-3;e=6-4-4-6-6-3-4-3-3-6-3-3-3-6-3-4-6-4-3-6;d=2-2-2-2-3;r=204"
    a = ofa.parse(key)
    assert ofa.key(a) == key and a.r == 204 and a.d == (2, 2, 2, 2, 3)
    assert [blk[1] for blk in a.active_blocks()] == [0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 18]


@pytest.mark.parametrize("name,bad,needle", [
    ("nb201", 15625, "out of range"),
    ("nb201", "-1", "out of range"),
    ("nb201", "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NAS-Bench-201 op"),
    ("nb201", "|none~0|+|none~0|", "malformed NAS-Bench-201 arch string"),
    ("nb201", "1-2-3", "six op indices"),
    ("nb201", "1-2-3-4-5-6", "six op indices"),
    ("fbnet", "1-2-3", "expected 22"),
    ("fbnet", "-".join(["9"] * 22), "not allowed"),
    ("fbnet", "-".join(["k7_e1"] * 22), "unknown block"),
    ("ofa", "ks=3;e=3;d=2;r=128", "expected 20"),
    ("ofa", "ks=" + "-".join(["3"] * 20) + ";e=" + "-".join(["3"] * 20) + ";d=2-2-2-2-2;r=130", "resolution 130"),
    ("ofa", "ks=" + "-".join(["4"] * 20) + ";e=" + "-".join(["3"] * 20) + ";d=2-2-2-2-2;r=128", "not allowed"),
    ("ofa", "hello", "expected ks="),
    ("ofa", {"ks": 3, "e": [3] * 20, "d": [2] * 5}, "OFA arch dict: ks 3 is not a list"),  # was a TypeError
    ("ofa", {"ks": [3] * 20, "e": [3] * 20}, "lacks 'd'"),
])
def test_bad_keys_raise_one_clear_error(name, bad, needle):
    with pytest.raises(ArchError) as exc:
        get_space(name).parse(bad)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_unknown_space():
    with pytest.raises(ArchError, match="unknown search space 'nb101'"):
        get_space("nb101")


# ---- sample / mutate / encode ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_sample_is_seeded_and_mutate_changes_one_choice(name):
    space = get_space(name)
    a, b = space.sample(10, seed=7), space.sample(10, seed=7)
    assert a == b and a != space.sample(10, seed=8)
    rng = np.random.default_rng(0)
    for arch in a:
        m = space.mutate(arch, rng)
        assert m != arch and space.parse(space.key(m)) == m
        diff = np.abs(space.encode([m])[0] - space.encode([arch])[0]).sum()
        assert diff > 0  # a mutation of a used choice changes the network


@pytest.mark.parametrize("name,dim", [("nb201", 36), ("fbnet", 198), ("ofa", 136)])
def test_encode_fixed_length(name, dim):
    space = get_space(name)
    archs = space.sample(40, seed=1)
    x = space.encode(archs)
    assert x.shape == (40, dim) == (40, space.encoding_dim) and x.dtype == np.float32
    assert len(space.feature_names) == dim
    np.testing.assert_array_equal(space.encode_keys([space.key(a) for a in archs]), x)
    assert space.encode([]).shape == (0, dim)


def test_nb201_encoding_is_one_to_one():
    space = get_space("nb201")
    x = space.encode(space.enumerate())
    assert len(np.unique(x, axis=0)) == 15625
    assert np.all(x[:, :30].reshape(-1, 6, 5).sum(axis=2) == 1)


def test_ofa_encoding_ignores_unused_slots():
    space = get_space("ofa")
    a = space.sample(1, seed=2)[0]
    a = OFAArch(a.ks, a.e, (2, 2, 2, 2, 2), a.r)
    ks = list(a.ks)
    ks[3] = 3 if ks[3] != 3 else 5  # slot 3 is unused at depth 2
    b = OFAArch(tuple(ks), a.e, a.d, a.r)
    assert space.key(a) != space.key(b)
    np.testing.assert_array_equal(space.encode([a]), space.encode([b]))
    assert space.params(a) == space.params(b)
    x = space.encode([a])[0]
    assert x[:120].reshape(20, 6)[[2, 3, 6, 7]].sum() == 0


# ---- NAS-Bench-201 structure ----------------------------------------------------------------
def test_nb201_published_parameter_counts_and_flops():
    """NAS-Bench-201 API, CIFAR-10: params 0.073306 M .. 1.531546 M, FLOPs 7.78305 M .. 220.11969 M."""
    space = get_space("nb201")
    assert space.params(ALL_CONV3) == space.api_params(ALL_CONV3) == 1_531_546
    assert space.params(ALL_NONE) == space.api_params(ALL_NONE) == 73_306
    assert space.api_params(ALL_CONV3, num_classes=100) == 1_537_396  # CIFAR-100 figure
    # the API's FLOPs add the 10 classifier biases to the multiply-accumulates
    assert space.macs(ALL_CONV3) + 10 == 220_119_690
    assert space.macs(ALL_NONE) + 10 == 7_783_050
    assert space.parse(ALL_CONV3).index == 1462


def test_nb201_dead_edges():
    space = get_space("nb201")
    # node1 gets a conv but feeds nothing: edge 1<-0 is dead
    a = space.parse("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|")
    assert a.dead_edges() == [0] and a.connected
    # node1 has no input: its outgoing edges are dead although not none
    b = space.parse("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|")
    assert b.dead_edges() == [2, 4] and b.live_edges() == (False, True, False, True, False, True)
    # no input-to-output path: every non-none edge is dead, each cell outputs zeros
    c = space.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|none~2|")
    assert c.dead_edges() == [0, 1] and not c.connected
    ops = Counter(s.op for s in space.to_graph(c))
    assert ops["scale"] == 15 and ops["conv2d+bn"] == 5  # stem + 2 per reduction block; no cell conv
    assert space.to_graph(ALL_NONE) and not get_space("nb201").parse(ALL_NONE).dead_edges()
    # omitted edges are not built; the official network keeps them
    convs = lambda sp, arch: sum(s.base in ("conv2d", "pwconv2d") for s in sp.to_graph(arch))  # noqa: E731
    official = get_space("nb201", keep_dead=True)
    assert convs(official, a) - convs(space, a) == 15
    assert official.params(a) == official.api_params(a) == space.api_params(a) > space.params(a)
    # a dead edge whose source is live cannot change the output: both networks compute the same function
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32))
    with torch.no_grad():
        y1, y2 = space.to_torch(a)(x), official.to_torch(a)(x)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)


def test_nb201_dead_edge_counts_over_the_space():
    space = get_space("nb201")
    archs = list(space.enumerate())
    assert sum(not a.connected for a in archs) == 341
    for a in archs[:500]:
        live = a.live_edges()
        assert all(a.ops[e] != 0 for e in range(6) if live[e])


# ---- FBNet / OFA structure ------------------------------------------------------------------
def test_fbnet_structure_and_all_skip_params():
    space = get_space("fbnet")
    plan = layer_plan()
    assert len(plan) == 22 and plan[0] == (16, 16, 1) and plan[-1] == (184, 352, 1)
    assert [s for _, _, s in plan].count(2) == 3  # CIFAR: stride 2 in stages 3, 4 and 6 -> 32/8
    all_skip = "-".join(["8"] * 22)
    # hand count: stem 464; 1x1 projections where the shape changes; head 352->1504 + BN; fc 1504->100
    proj = sum(cin * cout + 2 * cout for cin, cout, s in plan if cin != cout or s != 1)
    assert proj == 432 + 832 + 2176 + 7392 + 20976 + 65472
    assert space.params(all_skip) == 464 + proj + 352 * 1504 + 2 * 1504 + 1504 * 100 + 100 == 780_660
    g = space.to_graph(all_skip)
    assert g[-1].op == "linear" and g[-1].output_shape == (1, 100) and g[-2].input_shape == (1, 1504, 4, 4)
    assert g[-3].op == "pwconv2d+bn+relu" and g[-3].input_shape == (1, 352, 4, 4)
    k5e6 = space.to_graph("-".join(["7"] * 22))
    assert sum(s.op == "dwconv2d+bn+relu" and s.a["kernel"] == 5 for s in k5e6) == 22
    assert sum(s.op == "add" for s in k5e6) == 22 - 6  # no residual where the shape changes


def test_ofa_structure():
    space = get_space("ofa")
    big = OFAArch((7,) * 20, (6,) * 20, (4,) * 5, 224)
    small_a = OFAArch((3,) * 20, (3,) * 20, (2,) * 5, 128)
    g = space.to_graph(big)
    assert g[0].op == "conv2d+bn+hardswish" and g[0].output_shape == (1, 16, 112, 112)
    assert sum(s.base == "dwconv2d" for s in g) == 21
    assert sum(s.op == "mul" for s in g) == 12  # SE in stages 2, 4, 5
    assert g[-1].op == "linear" and g[-1].output_shape == (1, 1000)
    assert space.macs(big) > space.macs(small_a) and space.params(big) > space.params(small_a)
    # middle channels: make_divisible(cin * e, 8); SE squeeze: make_divisible(mid // 4, 8)
    net = space.network(big)
    expand = {layer.name: layer.attrs["cout"] for layer in net.layers if layer.name.endswith(".expand")}
    assert expand["s0b0.expand"] == 96 and expand["s1b0.expand"] == 144 and expand["s4b3.se.expand"] == 960


# ---- builders agree -------------------------------------------------------------------------
def _onnx_counts(model_bytes):
    import onnx

    model = onnx.load_from_string(model_bytes)
    inits = {t.name: t for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = inits[node.input[1]].dims
            convs.append((int(w[0]), int(w[1]) * attrs["group"], attrs["kernel_shape"][0], attrs["strides"][0], attrs["group"]))
    return Counter(n.op_type for n in model.graph.node), convs


@pytest.mark.parametrize("name", CNN_NAMES)
def test_to_graph_matches_onnx_graph(name):
    space = get_space(name)
    for arch in small(space, space.sample(3, seed=11)):
        counts, onnx_convs = _onnx_counts(space.to_onnx(arch))
        graph = space.to_graph(arch)
        conv_specs = [s for s in graph if s.base in ("conv2d", "dwconv2d", "pwconv2d")]
        spec_convs = [(s.output_shape[1], s.input_shape[1], 1 if s.base == "pwconv2d" else s.a["kernel"], s.a["stride"],
                       s.input_shape[1] if s.base == "dwconv2d" else s.a.get("groups", 1)) for s in conv_specs]
        assert spec_convs == onnx_convs
        parts = Counter(p for s in graph for p in s.parts)
        assert counts["Relu"] == parts["relu"]
        assert counts.get("HardSwish", 0) == parts["hardswish"]
        assert counts.get("HardSigmoid", 0) == parts["hardsigmoid"]
        assert counts["Add"] == parts["add"]
        assert counts.get("AveragePool", 0) == parts["avgpool"]
        assert counts["GlobalAveragePool"] == parts["globalavgpool"]
        assert counts["Gemm"] == parts["linear"] == 1
        assert counts.get("Mul", 0) == parts["mul"]
        assert counts.get("BatchNormalization", 0) == sum(s.base == "bn" for s in graph)
        # the channel shuffle of FBNet's g2 blocks is a Transpose outside the op vocabulary
        if name == "fbnet":
            assert counts.get("Transpose", 0) == sum(BLOCKS[o].endswith("_g2") for o in arch.ops)
        # MACs of the op list equal the space's MAC count
        tails = sum(math.prod(s.output_shape) * (len(s.parts) - 1) for s in conv_specs)
        assert sum(s.macs for s in conv_specs) - tails + sum(s.macs for s in graph if s.base == "linear") == space.macs(arch)


def test_fuse_add_folds_residuals():
    space = get_space("fbnet")
    arch = space.parse("-".join(["3"] * 22))
    plain, fused = space.to_graph(arch), space.to_graph(arch, fuse_add=True)
    assert len(plain) - len(fused) == sum(s.op == "add" for s in plain) > 0
    assert sum(s.op == "pwconv2d+bn+add" for s in fused) == sum(s.op == "add" for s in plain)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_and_torch_compute_the_same(name):
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    space = get_space(name)
    archs = small(space, space.sample(2, seed=5))
    if name == "nb201":
        archs.append(space.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|none~2|"))  # zero cells
    if name == "fbnet":
        archs.append(space.parse("-".join(["1", "5", "8"] * 7 + ["1"])))  # g2 shuffles and projections
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for arch in archs:
        model = space.to_onnx(arch)
        assert model == space.to_onnx(arch)  # deterministic weights
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal(space.input_shape(arch)).astype(np.float32)
        y_onnx = sess.run(None, {"input": x})[0]
        module = space.to_torch(arch)
        with torch.no_grad():
            y_torch = module(torch.from_numpy(x)).numpy()
        assert y_onnx.shape == (1, space.num_classes)
        scale = float(np.abs(y_torch).max()) + 1e-6
        np.testing.assert_allclose(y_onnx, y_torch, rtol=1e-4, atol=1e-4 * scale)
        assert sum(p.numel() for p in module.parameters()) == space.params(arch)


@pytest.mark.parametrize("name", NAMES)
def test_to_graph_equals_ops_extracted_from_the_onnx_model(name):
    """`hwlat.device_tables.graph` reads the ONNX model independently; with BN folded as in the model, the
    op lists agree op for op (fused kernels split into their parts)."""
    graph_mod = pytest.importorskip("hwlat.device_tables.graph")
    from hwlat.device_tables.kernels import split_kernel

    space = get_space(name)
    for arch in small(space, space.sample(3, seed=4)):
        extracted = [s.key for s in graph_mod.Graph.from_onnx(space.to_onnx(arch)).specs]
        mine = [p.key for s in space.to_graph(arch, fold_bn=True) for p in split_kernel(s)]
        assert extracted == mine


@pytest.mark.parametrize("name", ["nb201", "fbnet", "ofa"])
def test_macs_many_equals_macs_of_each_network(name):
    """The fast MACs (tables of per-choice changes) equal the network builder's count, arch by arch."""
    sp = get_space(name)
    archs = sp.sample(60, seed=11)
    assert np.array_equal(sp.macs_many(archs), [sp.macs(a) for a in archs])
    if name == "nb201":  # every edge pattern, and the official network with dead edges built
        from hwlat.nas.spaces.nb201 import NB201Space

        official = NB201Space(keep_dead=True)
        picks = list(range(0, 15625, 97))
        assert np.array_equal(sp.macs_many(picks), [sp.macs(i) for i in picks])
        assert np.array_equal(official.macs_many(picks), [official.macs(i) for i in picks])
