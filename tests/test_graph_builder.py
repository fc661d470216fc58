"""`NB201Space.graph` builds the graph straight from the layers (`net_graph.GraphNet`): it must equal
the graph of the built network (`net_graph(network)`, what every other space gives), op by op."""

from __future__ import annotations

import pytest

from nas.spaces import get_space
from nas.spaces.base import Space
from nas.spaces.net_graph import GraphNet, net_graph
from nas.spaces.network import Net


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
