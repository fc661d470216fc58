"""Target networks for profiling and benchmarks: search-space samples and the classic CNNs.

A network is named ``<space>:<arch key>`` or ``classic:<model key>`` (e.g.
``classic:mobilenet_v2@r160w0.75``); `onnx_of(name)` rebuilds its ONNX model, `graph_of(name)` its
`Graph`, so lists of names are all a benchmark or an adaptive profiling run needs to keep.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from device_tables.graph import Graph

CLASSIC = "classic"


def target_kinds() -> tuple[str, ...]:
    """What a target list may name: every registered search space, and the classic CNNs."""
    from nas.spaces import spaces

    return (*spaces(), CLASSIC)


def space_networks(space: str, n: int, seed: int = 0) -> list[str]:
    """`n` sampled architectures of a space, as network names."""
    from nas.spaces import get_space

    sp = get_space(space)
    return [f"{space}:{sp.key(a)}" for a in sp.sample(n, seed=seed)]


def classic_networks(resolutions: Sequence[int] = (160, 192, 224)) -> list[str]:
    from nas.models import variants

    return [f"classic:{c.key}" for c in variants(tuple(resolutions))]


def target_networks(per_space: int = 10, spaces: Iterable[str] | None = None, classic: bool = True, seed: int = 0,
                    resolutions: Sequence[int] = (160, 192, 224)) -> list[str]:
    """Sampled architectures of each space (default: every registered one) plus (optionally) the classic CNNs."""
    names: list[str] = []
    for s in spaces if spaces is not None else target_kinds()[:-1]:
        names += space_networks(s, per_space, seed)
    if classic:
        names += classic_networks(resolutions)
    return names


def in_turn(names: Sequence[str], n: int) -> list[str]:
    """Up to `n` of `names`, taking each kind (``nb201``, ``classic``, ...) in turn, in name order."""
    by_kind: dict[str, list[str]] = {}
    for name in names:
        by_kind.setdefault(name.split(":")[0], []).append(name)
    out: list[str] = []
    while len(out) < n and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(out) < n:
                out.append(by_kind[kind].pop(0))
    return out


def onnx_of(name: str) -> bytes:
    """The ONNX model (bytes) of a network name."""
    from device_tables.errors import ModelError

    kind, _, key = name.partition(":")
    if kind == CLASSIC:
        from nas.models import to_onnx

        return to_onnx(key)
    if kind in target_kinds():
        from nas.spaces import get_space

        return get_space(kind).to_onnx(key)
    raise ModelError(f"network name {name!r} is not like 'nb201:<arch key>' or 'classic:<model>'")


def graph_of(name: str) -> Graph:
    g = Graph.from_onnx(onnx_of(name))
    g.name = name
    return g
