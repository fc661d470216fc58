"""`hwlat space show|sample`: look at search-space architectures (structure, MACs, params, ops run)."""

from __future__ import annotations

import argparse
from collections import Counter

from hwlat.cli import command_parser


def register(sub) -> None:
    p = sub.add_parser("space", help="show or sample architectures of a search space (nb201, fbnet, ofa)",
                       description="Show or sample architectures of the NAS-Bench-201, FBNet and OFA spaces.")
    a = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = command_parser(a, "show", "print an architecture's structure, MACs, parameters and the ops a runtime runs",
                          "hwlat space show --space nb201 --arch 1462")
    show.add_argument("--space", required=True, choices=["nb201", "fbnet", "ofa"])
    show.add_argument("--arch", required=True,
                      help="the key as in the public CSVs (nb201: arch string, index or ops6; fbnet: op indices; ofa: ofa_arch)")
    show.add_argument("--keep-dead-edges", action="store_true", help="nb201: build the official network with dead edges")
    show.add_argument("--layers", action="store_true", help="also list every layer with shapes")
    show.add_argument("--ops", type=int, default=40, help="op lines to print (0: all; default 40)")
    show.set_defaults(func=_show)
    sample = command_parser(a, "sample", "print N random architecture keys (one per line; a file for --archs)",
                            "hwlat space sample --space fbnet -n 20 --seed 1 > fbnet20.txt")
    sample.add_argument("--space", required=True, choices=["nb201", "fbnet", "ofa"])
    sample.add_argument("-n", type=int, default=10)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=_sample)


def _space(args: argparse.Namespace):
    from nas.spaces import get_space

    return get_space(args.space, **({"keep_dead": True} if getattr(args, "keep_dead_edges", False) and args.space == "nb201" else {}))


def _show(args: argparse.Namespace) -> int:
    space = _space(args)
    arch = space.parse(args.arch)
    net = space.network(arch)
    for line in space.describe(arch):
        print(line)
    print(f"input     {'x'.join(map(str, net.input_shape))}")
    print(f"MACs      {net.macs() / 1e6:.3f} M (convolutions and linear layers)")
    print(f"params    {net.params() / 1e6:.6f} M" + (f"  (NAS-Bench-201 API count: {space.api_params(arch) / 1e6:.6f} M)"
                                                     if hasattr(space, "api_params") else ""))
    if args.layers:
        print("\nlayers:")
        for line in net.summary():
            print("  " + line)
    graph = space.to_graph(arch)
    counts = Counter(s.op for s in graph)
    print(f"\nops a runtime executes: {len(graph)} ({', '.join(f'{n} {op}' for op, n in counts.most_common())})")
    shuffles = sum(layer.kind == "shuffle" for layer in net.layers)
    if shuffles:
        print(f"  (plus {shuffles} channel shuffles, a Transpose each, which the op vocabulary does not cover)")
    shown = graph if args.ops <= 0 else graph[: args.ops]
    for spec in shown:
        print(f"  {spec.key:<90} {spec.macs / 1e6:>8.3f} M")
    if len(shown) < len(graph):
        print(f"  ... {len(graph) - len(shown)} more (--ops 0 shows all)")
    return 0


def _sample(args: argparse.Namespace) -> int:
    space = _space(args)
    for a in space.sample(args.n, args.seed):
        print(space.key(a))
    return 0
