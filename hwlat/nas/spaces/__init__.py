"""Search spaces: NAS-Bench-201, FBNet (HW-NAS-Bench, CIFAR-100), OFA MobileNetV3 and an
AutoFormer-style ViT, and those
installed packages add through the ``hwlat.spaces`` entry-point group (``name = "module:Class"``).

``get_space("nb201")`` returns a `Space`; see `hwlat.nas.spaces.base.Space` for the interface. This
registry is the one place built-in space names appear.
"""

from __future__ import annotations

import inspect

from hwlat.device_tables.archtable import ArchKeys
from hwlat.device_tables.plugins import Registry
from hwlat.nas.spaces.base import ArchError, Space

ENTRY_POINT_GROUP = "hwlat.spaces"
# name -> "module:class"; spaces are built on first use.
SPACES: dict[str, str] = {
    "nb201": "hwlat.nas.spaces.nb201:NB201Space",
    "fbnet": "hwlat.nas.spaces.fbnet:FBNetSpace",
    "ofa": "hwlat.nas.spaces.ofa:OFASpace",
    "vit": "hwlat.nas.spaces.vit:ViTSpace",
}


REGISTRY = Registry(ENTRY_POINT_GROUP, Space, SPACES, "search space", ArchError)


def spaces() -> dict[str, type[Space]]:
    """Every space class by name: the built-in ones, then installed plugins (a plugin may not take a
    built-in name; one that fails to import is skipped with a warning)."""
    return REGISTRY.all()


def space_class(name: str) -> type[Space]:
    """A space's class by name; `ArchError` listing the names for an unknown one."""
    return REGISTRY.get(name)


def get_space(name: str, **options) -> Space:
    """A search space by name; `options` go to its constructor (nb201: keep_dead). One it does not
    take is an `ArchError` naming those it does (it was the constructor's TypeError)."""
    cls = space_class(name)
    params = inspect.signature(cls).parameters.values()
    known = sorted(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    unknown = sorted(set(options) - set(known))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params):
        raise ArchError(f"the {name} space has no option {', '.join(map(repr, unknown))}; "
                        + (f"its options: {', '.join(known)}" if known else "it takes none"))
    return cls(**options)


def arch_keys(name: str) -> ArchKeys:
    """How arch tables of the space `name` are keyed (its class's `arch_keys`; nothing is built)."""
    keys = space_class(name).arch_keys
    if keys is None:
        raise ArchError(f"the {name} space declares no arch_keys (the key columns of its arch tables)")
    return keys


def known_arch_keys() -> list[ArchKeys]:
    """The key schemes of every registered space, to infer a table's space from its columns."""
    return [cls.arch_keys for cls in spaces().values() if cls.arch_keys is not None]


__all__ = ["SPACES", "ArchError", "ArchKeys", "Space", "arch_keys", "get_space", "known_arch_keys", "space_class",
           "spaces"]
