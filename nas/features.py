"""Latency features of architectures: the space's encoding, non-negative structure counts (ops
that actually run, dead edges, adds, longest paths, stage depths) that latency grows with, and the
log of the network's MACs.

Transfer predictors take these numeric arrays (`predictors` never imports `nas`):
``X, layout = latency_features("nb201", keys)``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from nas.spaces import get_space
from predictors.features import FeatureLayout

FEATURES_VERSION = 3  # 3: log MACs (the `size` group)


def latency_features(space, archs: Iterable[Any]) -> tuple[np.ndarray, FeatureLayout]:
    """(X, layout) for architectures (objects or keys) of a space (name or `Space`)."""
    sp = get_space(space) if isinstance(space, str) else space
    archs = list(archs)
    enc = sp.encode(archs).astype(np.float64)
    builder = {"nb201": _nb201, "fbnet": _fbnet, "ofa": _ofa}.get(sp.name)
    if builder is None:
        names = tuple(sp.feature_names)
        return enc, FeatureLayout(names, tuple(range(len(names))), space=sp.name)
    log_macs = np.log(np.maximum(sp.macs_many(archs).astype(np.float64), 1.0))
    return _assemble(sp.name, builder(sp, enc) + [("size", ["log_macs"], log_macs[:, None])])


def _assemble(space: str, groups: list[tuple[str, list[str], np.ndarray]]) -> tuple[np.ndarray, FeatureLayout]:
    cols, names, idx = [], [], {"enc": [], "cost": [], "extra": [], "size": []}
    for group, gnames, block in groups:
        block = np.asarray(block, dtype=np.float64).reshape(len(block), -1)
        start = len(names)
        names.extend(gnames)
        idx[group].extend(range(start, start + block.shape[1]))
        cols.append(block)
    X = np.hstack(cols)
    layout = FeatureLayout(tuple(names), tuple(idx["enc"]), tuple(idx["cost"]), tuple(idx["extra"]), space,
                           {"features_version": FEATURES_VERSION}, tuple(idx["size"]))
    return X, layout


# ---- NAS-Bench-201 -----------------------------------------------------------------------
# Input-to-output paths of the cell as edge positions (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2).
_NB201_PATHS = ((3,), (0, 4), (1, 5), (0, 2, 5))
_NB201_EDGE_TO = (1, 2, 2, 3, 3, 3)


def _nb201(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    from nas.spaces.nb201 import EDGES, OPS

    n, n_ops, n_edges = len(enc), len(OPS), len(EDGES)
    onehot = enc[:, : n_edges * n_ops].reshape(n, n_edges, n_ops)
    live = enc[:, n_edges * n_ops:]
    ops = onehot.argmax(axis=2)
    live_onehot = onehot * live[:, :, None]
    present = (ops != 0).astype(float)
    raw_counts = onehot.sum(axis=1)  # per op, none included (NAS-Bench-201 runs x*0 for none)
    live_counts = live_onehot.sum(axis=1)[:, 1:]
    conv = np.isin(ops, (2, 3))
    nonskip = np.isin(ops, (2, 3, 4))
    path_ok = np.stack([np.all(ops[:, list(p)] != 0, axis=1) for p in _NB201_PATHS], axis=1)
    path_conv = np.stack([conv[:, list(p)].sum(axis=1) for p in _NB201_PATHS], axis=1)
    path_ops = np.stack([nonskip[:, list(p)].sum(axis=1) for p in _NB201_PATHS], axis=1)
    # critical path per op type: runtimes that run a cell's branches concurrently pay the
    # longest input-to-output chain, not the sum
    path_by_op = [np.where(path_ok, np.stack([(ops[:, list(p)] == o).sum(axis=1) for p in _NB201_PATHS], axis=1), 0)
                  .max(axis=1, keepdims=True) for o in (3, 2, 4)]
    indeg_live = np.stack([live[:, [e for e in range(n_edges) if _NB201_EDGE_TO[e] == t]].sum(axis=1)
                           for t in (1, 2, 3)], axis=1)
    indeg_raw = np.stack([present[:, [e for e in range(n_edges) if _NB201_EDGE_TO[e] == t]].sum(axis=1)
                          for t in (1, 2, 3)], axis=1)
    edge_names = [f"e{t}{f}" for t, f in EDGES]
    extra = np.hstack([
        np.maximum(indeg_live - 1, 0).sum(axis=1, keepdims=True),
        np.maximum(indeg_raw - 1, 0).sum(axis=1, keepdims=True),
        (live.sum(axis=1, keepdims=True) == 0).astype(float),
        np.where(path_ok, path_conv, 0).max(axis=1, keepdims=True),
        np.where(path_ok, path_ops, 0).max(axis=1, keepdims=True),
        path_ok.sum(axis=1, keepdims=True),
        *path_by_op,
        present, live, indeg_live, indeg_raw,
    ])
    extra_names = (["adds_live", "adds_all", "dead_cell", "longest_path_convs", "longest_path_ops", "paths",
                    "longest_path_conv3x3", "longest_path_conv1x1", "longest_path_pool"]
                   + [f"{e}_present" for e in edge_names] + [f"{e}_live" for e in edge_names]
                   + [f"node{t}_in_live" for t in (1, 2, 3)] + [f"node{t}_in_all" for t in (1, 2, 3)])
    return [
        ("enc", list(sp.feature_names), enc),
        ("enc", [f"{e}_{op}_live" for e in edge_names for op in OPS], live_onehot.reshape(n, -1)),
        ("cost", [f"n_{op}" for op in OPS] + [f"n_{op}_live" for op in OPS[1:]], np.hstack([raw_counts, live_counts])),
        ("extra", extra_names, extra),
    ]


# ---- FBNet -------------------------------------------------------------------------------
def _fbnet(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    from nas.spaces.fbnet import BLOCKS, LAYERS_PER_STAGE, N_LAYERS, block_params

    n = len(enc)
    onehot = enc.reshape(n, N_LAYERS, len(BLOCKS))
    counts = onehot.sum(axis=1)
    stage_of = np.repeat(np.arange(len(LAYERS_PER_STAGE)), LAYERS_PER_STAGE)
    not_skip = 1.0 - onehot[:, :, BLOCKS.index("skip")]
    per_stage = np.stack([not_skip[:, stage_of == s].sum(axis=1) for s in range(len(LAYERS_PER_STAGE))], axis=1)
    expand = np.array([0 if block_params(b) is None else block_params(b)[1] for b in BLOCKS], dtype=float)
    k5 = np.array([0 if block_params(b) is None else float(block_params(b)[0] == 5) for b in BLOCKS])
    expand_stage = np.stack([(onehot[:, stage_of == s] @ expand).sum(axis=1) for s in range(len(LAYERS_PER_STAGE))], axis=1)
    extra = np.hstack([per_stage, expand_stage, (onehot @ k5).sum(axis=1, keepdims=True)])
    names_stage = [f"stage{s}" for s in range(len(LAYERS_PER_STAGE))]
    return [
        ("enc", list(sp.feature_names), enc),
        ("cost", [f"n_{b}" for b in BLOCKS], counts),
        ("extra", [f"{s}_blocks" for s in names_stage] + [f"{s}_expand_sum" for s in names_stage] + ["n_k5"], extra),
    ]


# ---- OFA MobileNetV3 -------------------------------------------------------------------------
def _ofa(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    from nas.spaces.ofa import DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, N_STAGES, RESOLUTIONS

    n = len(enc)
    per = len(KERNELS) + len(EXPANDS)
    slots = enc[:, : N_STAGES * MAX_DEPTH * per].reshape(n, N_STAGES, MAX_DEPTH, per)
    depth_oh = enc[:, N_STAGES * MAX_DEPTH * per: N_STAGES * MAX_DEPTH * per + N_STAGES * len(DEPTHS)]
    depth = depth_oh.reshape(n, N_STAGES, len(DEPTHS)) @ np.asarray(DEPTHS, dtype=float)
    r = RESOLUTIONS[0] + enc[:, -1] * (RESOLUTIONS[-1] - RESOLUTIONS[0])
    area = (r / 224.0) ** 2
    k = slots[..., : len(KERNELS)] @ np.asarray(KERNELS, dtype=float)
    e = slots[..., len(KERNELS):] @ np.asarray(EXPANDS, dtype=float)
    e_stage = e.sum(axis=2)
    ke_stage = (k**2 * e).sum(axis=2) / 9.0
    cost = np.hstack([depth, e_stage * area[:, None], ke_stage * area[:, None], area[:, None],
                      (depth.sum(axis=1) * area)[:, None]])
    extra = np.hstack([e_stage, ke_stage, (r / 224.0)[:, None], (k == 7).sum(axis=(1, 2))[:, None],
                       (e == 6).sum(axis=(1, 2))[:, None]])
    st = [f"stage{s}" for s in range(N_STAGES)]
    return [
        ("enc", list(sp.feature_names), enc),
        ("cost", [f"{s}_depth" for s in st] + [f"{s}_expand_x_area" for s in st] + [f"{s}_k2e_x_area" for s in st]
         + ["area", "depth_x_area"], cost),
        ("extra", [f"{s}_expand" for s in st] + [f"{s}_k2e" for s in st] + ["res_scale", "n_k7", "n_e6"], extra),
    ]
