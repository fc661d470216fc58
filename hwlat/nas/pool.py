"""Target networks for profiling and benchmarks: search-space samples, the classic CNNs and the
classic transformers.

A network is named ``<space>:<arch key>``, ``classic:<model key>`` (e.g.
``classic:mobilenet_v2@r160w0.75``) or ``transformers:<model key>`` (e.g.
``transformers:bert_mini@s128``); `onnx_of(name)` rebuilds its ONNX model, `graph_of(name)` its
`Graph`, so lists of names are all a benchmark or an adaptive profiling run needs to keep.
Lists take the CNN spaces and the classic CNNs by default (their benchmarks stay as they were);
the ``vit`` space and ``transformers`` are there when named.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from hwlat.device_tables.graph import Graph

CLASSIC = "classic"
TRANSFORMERS = "transformers"


def target_kinds() -> tuple[str, ...]:
    """What a target list may name: every registered search space, the classic CNNs and the classic
    transformers."""
    from hwlat.nas.spaces import spaces

    return (*spaces(), CLASSIC, TRANSFORMERS)


def cnn_spaces() -> list[str]:
    """The registered spaces of CNNs (`Space.family`): what target lists take by default."""
    from hwlat.nas.spaces import spaces

    return [name for name, cls in spaces().items() if cls.family == "cnn"]


def space_networks(space: str, n: int, seed: int = 0) -> list[str]:
    """`n` networks of a kind other than ``classic``: sampled architectures of a space, or `n` of the
    classic transformers (chosen by `seed`)."""
    if space == TRANSFORMERS:
        return transformer_networks(n, seed)
    from hwlat.nas.spaces import get_space

    sp = get_space(space)
    return [f"{space}:{sp.key(a)}" for a in sp.sample(n, seed=seed)]


def classic_networks(resolutions: Sequence[int] = (160, 192, 224)) -> list[str]:
    """The classic CNNs at these resolutions (never the transformers: `transformer_networks`)."""
    from hwlat.nas.models import variants

    return [f"classic:{c.key}" for c in variants(tuple(resolutions))]


def transformer_networks(n: int | None = None, seed: int | None = None) -> list[str]:
    """The classic transformers at their benchmark sizes (`hwlat.nas.transformers.variants`), in order; or
    `n` of them drawn without repeats by `seed`."""
    from hwlat.nas.transformers import variants

    names = [f"{TRANSFORMERS}:{c.key}" for c in variants()]
    if n is None:
        return names
    order = np.random.default_rng(seed).permutation(len(names)) if seed is not None else range(len(names))
    return [names[i] for i in order][:n]


def target_networks(per_space: int = 10, spaces: Iterable[str] | None = None, classic: bool = True, seed: int = 0,
                    resolutions: Sequence[int] = (160, 192, 224), transformers: bool = False) -> list[str]:
    """Sampled architectures of each space (default: every CNN space), plus (optionally) the classic
    CNNs and the classic transformers."""
    names: list[str] = []
    for s in spaces if spaces is not None else cnn_spaces():
        names += space_networks(s, per_space, seed)
    if classic:
        names += classic_networks(resolutions)
    if transformers:
        names += transformer_networks()
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
    from hwlat.device_tables.errors import ModelError

    kind, _, key = name.partition(":")
    if kind == TRANSFORMERS:
        from hwlat.nas.transformers import build_model

        return build_model(key).SerializeToString()
    if kind == CLASSIC:
        from hwlat.nas.models import to_onnx

        return to_onnx(key)
    if kind in target_kinds():
        from hwlat.nas.spaces import get_space

        return get_space(kind).to_onnx(key)
    raise ModelError(f"network name {name!r} is not like 'nb201:<arch key>', 'classic:<model>' or "
                     "'transformers:<model>'")


def graph_of(name: str) -> Graph:
    """The `Graph` of a network name; a transformer's is read from a model without its weights'
    values (GPT-2's weights take seconds to write and are not needed for its ops)."""
    kind, _, key = name.partition(":")
    from hwlat.nas.transformers import build_model, is_transformer

    if kind in (CLASSIC, TRANSFORMERS) and is_transformer(key):
        g = Graph.from_onnx(build_model(key, values=False))
    else:
        g = Graph.from_onnx(onnx_of(name))
    g.name = name
    return g
