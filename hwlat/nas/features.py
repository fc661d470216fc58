"""Latency features of architectures: the space's encoding, non-negative structure counts (ops
that actually run, dead edges, adds, longest paths, stage depths) that latency grows with, and the
log of the network's MACs.

Transfer predictors take these numeric arrays (`predictors` never imports `nas`):
``X, layout = latency_features("nb201", keys)``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from hwlat.nas.spaces import get_space
from hwlat.predictors.features import FeatureLayout

FEATURES_VERSION = 3  # 3: log MACs (the `size` group)


def latency_features(space, archs: Iterable[Any]) -> tuple[np.ndarray, FeatureLayout]:
    """(X, layout) for architectures (objects or keys) of a space (name or `Space`)."""
    sp = get_space(space) if isinstance(space, str) else space
    archs = list(archs)
    enc = sp.encode(archs).astype(np.float64)
    groups = sp.latency_feature_groups(enc)
    if groups is None:
        names = tuple(sp.feature_names)
        return enc, FeatureLayout(names, tuple(range(len(names))), space=sp.name)
    log_macs = np.log(np.maximum(sp.macs_many(archs).astype(np.float64), 1.0))
    return _assemble(sp.name, groups + [("size", ["log_macs"], log_macs[:, None])])


def _assemble(space: str, groups: list[tuple[str, list[str], np.ndarray]]) -> tuple[np.ndarray, FeatureLayout]:
    cols, names, idx = [], [], {"enc": [], "cost": [], "extra": [], "size": [], "live": []}
    for group, gnames, block in groups:  # a block may belong to several groups ("cost live")
        block = np.asarray(block, dtype=np.float64).reshape(len(block), -1)
        start = len(names)
        names.extend(gnames)
        for g in group.split():
            idx[g].extend(range(start, start + block.shape[1]))
        cols.append(block)
    X = np.hstack(cols)
    layout = FeatureLayout(tuple(names), tuple(idx["enc"]), tuple(idx["cost"]), tuple(idx["extra"]), space,
                           {"features_version": FEATURES_VERSION}, tuple(idx["size"]), tuple(idx["live"]))
    return X, layout
