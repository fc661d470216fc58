"""`hwlat space show|sample`: look at search-space architectures (structure, MACs, params, ops run)."""

from __future__ import annotations

import argparse
from collections import Counter

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, positive_int, random_seed


def register(sub) -> None:
    p = sub.add_parser("space", help="show or sample architectures of a search space",
                       description="Show or sample architectures of a search space (built-in: NAS-Bench-201, FBNet, "
                                   "OFA MobileNetV3, AutoFormer-Tiny ViT; or one a plugin adds).")
    a = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = command_parser(a, "show", "print an architecture's structure, MACs, parameters and the ops a runtime runs",
                          "hwlat space show --space nb201 --arch 1462")
    add_space_argument(show)
    show.add_argument("--arch", required=True,
                      help="one architecture, as `hwlat predict --arch` takes it: the key as in the public CSVs (nb201: "
                           "arch string, index or ops6; fbnet: op indices; ofa: ofa_arch; vit: vit_arch) or an "
                           "fbnet/ofa row of the public CSV")
    show.add_argument("--public-data", help="folder of the public CSVs (fbnet/ofa row numbers; default $HWLAT_LATENCY_DATA)")
    add_space_options(show)
    show.add_argument("--layers", action="store_true", help="also list every layer with shapes")
    show.add_argument("--ops", type=nonnegative_int, default=40, help="op lines to print (0: all; default 40)")
    show.set_defaults(func=_show)
    sample = command_parser(a, "sample", "print N random architecture keys (one per line; a file for --archs)",
                            "hwlat space sample --space fbnet -n 20 --seed 1 > fbnet20.txt")
    add_space_argument(sample)
    sample.add_argument("-n", type=positive_int, default=10, help="architectures to print (default 10)")
    sample.add_argument("--seed", type=random_seed, default=0, help="seed of the sample (default 0, as profile archs --archs random:N)")
    sample.set_defaults(func=_sample)


def _show(args: argparse.Namespace) -> int:
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.spaces.measure import resolve_archs

    space = space_from_args(args)
    items = resolve_archs(space, args.arch, data_dir=args.public_data, flag="--arch")  # as `hwlat predict --arch`
    if len(items) != 1:
        raise HwlatError(f"--arch {args.arch!r} selects {len(items)} architectures; give one")
    arch = items[0].arch
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
    space = space_from_args(args)
    for a in space.sample(args.n, args.seed):
        print(space.key(a))
    return 0


def add_space_argument(p: argparse.ArgumentParser, required: bool = True, names: list[str] | None = None) -> None:
    """--space, its choices `names` (default: the registered spaces, built-in and plugins)."""
    from hwlat.nas.spaces import spaces

    names = list(spaces()) if names is None else names
    p.add_argument("--space", required=required, choices=names, help=f"search space: {', '.join(names)}")


def add_space_options(p: argparse.ArgumentParser) -> None:
    """The flags of every registered space's own options (`Space.cli_options`, e.g. nb201's --keep-dead-edges)."""
    from hwlat.nas.spaces import spaces

    seen: set[str] = set()
    for cls in spaces().values():
        for opt in cls.cli_options:
            if opt.flag not in seen:
                seen.add(opt.flag)
                opt.add_to(p, cls.name)


def space_options(args: argparse.Namespace) -> dict:
    """The constructor options of --space from its own flags; a flag of another space is refused."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.spaces import space_class, spaces

    own = {opt.flag: opt for opt in space_class(args.space).cli_options}
    options = {}
    for cls in spaces().values():
        for opt in cls.cli_options:
            value = opt.given(args)
            if value is None or opt.setting in options:
                continue
            if opt.flag not in own:
                raise HwlatError(f"{opt.flag} is an option of --space {cls.name}, not of {args.space}")
            options[opt.setting] = value
    return options


def space_from_args(args: argparse.Namespace):
    """The space of --space with its options."""
    from hwlat.nas.spaces import get_space

    return get_space(args.space, **space_options(args))
