"""Search spaces: NAS-Bench-201, FBNet (HW-NAS-Bench, CIFAR-100) and OFA MobileNetV3.

``get_space("nb201")`` returns a `Space`; see `nas.spaces.base.Space` for the interface.
"""

from __future__ import annotations

import importlib

from nas.spaces.base import ArchError, Space

# name -> "module:class"; spaces are built on first use.
SPACES: dict[str, str] = {
    "nb201": "nas.spaces.nb201:NB201Space",
    "fbnet": "nas.spaces.fbnet:FBNetSpace",
    "ofa": "nas.spaces.ofa:OFASpace",
}


def get_space(name: str, **options) -> Space:
    """A search space by name (nb201, fbnet, ofa); `options` go to its constructor (nb201: keep_dead)."""
    key = name.strip().lower()
    if key not in SPACES:
        raise ArchError(f"unknown search space {name!r}; choose from {', '.join(SPACES)}")
    module, _, cls = SPACES[key].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["SPACES", "ArchError", "Space", "get_space"]
