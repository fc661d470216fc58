"""`NB201Space.graph` builds the graph straight from the layers (`net_graph.GraphNet`): it must equal
the graph of the built network (`net_graph(network)`, what every other space gives), op by op."""

from __future__ import annotations

import pytest

from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import Space
from hwlat.nas.spaces.net_graph import GraphNet, net_graph
from hwlat.nas.spaces.network import Net


@pytest.mark.parametrize("keep_dead", [False, True])
def test_nb201_graph_equals_the_network_graph(keep_dead):
    space = get_space("nb201", keep_dead=keep_dead)
    archs = space.sample(150, seed=3) + [space.parse(k) for k in (
        "0-0-0-0-0-0", "1-1-1-1-1-1", "0-4-3-0-0-0", "2-0-0-0-0-0", "3-3-3-3-3-3", "4-4-4-4-4-4", "0-0-0-4-0-0")]
    assert any(a.dead_edges() for a in archs) and any(not a.connected for a in archs)
    for batch in (1, 4):
        for arch in archs[:40] if batch > 1 else archs:
            direct = space.graph(arch, batch)
            via_net = net_graph(space.network(arch, batch), f"nb201:{arch.arch_str}")
            assert direct == via_net
            assert direct == Space.graph(space, arch, batch)  # the generic path
    # dead edges change what is built (and only with keep_dead they are built)
    dead = space.parse("0-4-3-0-0-0")
    assert dead.dead_edges()
    n_ops = len(space.graph(dead).ops)
    assert (n_ops > len(get_space("nb201").graph(dead).ops)) == keep_dead


def test_graph_net_falls_back_where_a_layer_is_not_written():
    """A layer kind `net_graph` does not write (an activation it leaves to ONNX) gives None, as
    `net_graph` of the same network does."""
    for builder in (GraphNet((1, 3, 8, 8)), Net((1, 3, 8, 8))):
        x = builder.conv("input", 4, 3, act="silu", name="c")
        builder.gap(x, name="p")
        got = builder.graph() if isinstance(builder, GraphNet) else net_graph(builder)
        assert got is None
    plain, net = GraphNet((2, 3, 8, 8)), Net((2, 3, 8, 8))
    for b in (plain, net):
        x = b.conv("input", 4, 3)
        y = b.act(x, "relu")
        b.linear(b.flatten(b.gap(b.add(x, y))), 5)
    assert plain.graph("g") == net_graph(net, "g") is not None


@pytest.mark.parametrize("keep_dead", [False, True])
def test_nb201_cell_layers_follow_the_edges(keep_dead):
    """Each cell has one layer per built edge that is not a skip (named by the edge and its op), one
    ReLU per node feeding a conv edge, live in-degree - 1 adds per node, and zeros where no path
    reaches the output: checked from the arch's edges, not from the builder."""
    from hwlat.nas.spaces.nb201 import EDGES, OPS

    space = get_space("nb201", keep_dead=keep_dead)
    suffix = {"none": "zero", "avg_pool_3x3": "pool", "nor_conv_1x1": "conv1x1", "nor_conv_3x3": "conv3x3"}
    for arch in space.sample(300, seed=11):
        built = (True,) * 6 if keep_dead else arch.live_edges()
        nodes = [n for op in space.graph(arch).ops for n in op.nodes if n.startswith("s1c2.")]
        expect = {f"s1c2.e{t}{f}.{suffix[OPS[o]]}" for (t, f), o, b in zip(EDGES, arch.ops, built) if b and OPS[o] != "skip_connect"}
        expect |= {f"s1c2.n{f}.relu" for (t, f), o, b in zip(EDGES, arch.ops, built) if b and OPS[o].startswith("nor_conv")}
        reaches = {1: built[0], 2: built[1] or built[2], 3: built[3] or built[4] or built[5]}
        for to in (1, 2, 3):
            ins = sum(b for (t, _), b in zip(EDGES, built) if t == to)
            expect |= {f"s1c2.n{to}.add{j}" for j in range(ins - 1)}
        if not reaches[3]:
            expect.add("s1c2.zero")
        assert set(nodes) == expect and len(nodes) == len(expect), arch
