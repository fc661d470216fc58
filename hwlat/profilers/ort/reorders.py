"""The NCHWc reorders ONNX Runtime puts around a single op on x86, and their share of its time.

On x86 CPUs ONNX Runtime runs convolutions (and the pools, adds, ... between them) in the blocked
NCHWc layout, so a single-op model becomes ReorderInput -> op -> ReorderOutput. Inside a network the
layout is kept from one such op to the next and reorders run only at a region's edges, so each
row records their shares of the single-op model's node time (``reorder_in_share``,
``reorder_out_share``; a profiled session of `REORDER_PROFILE_RUNS` runs), which `hwlat.predictors.lut`
takes off the row and charges at the edges. They are 10-60% of a lone conv's time (most for
depthwise convs on large maps).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hwlat.profilers.ort.install import PROVIDER
from hwlat.profilers.ort.nodes import parse_trace
from hwlat.profilers.ort.session import DEFAULT_OPT_LEVEL, session_options

REORDER_NODES = {"in": "ReorderInput", "out": "ReorderOutput"}  # direction -> ONNX Runtime op type
REORDER_PROFILE_RUNS = 40


def reorder_shares(ort: Any, model: bytes, feeds: Mapping[str, np.ndarray], threads: int = 1,
                   opt_level: str = DEFAULT_OPT_LEVEL, runs: int = REORDER_PROFILE_RUNS,
                   providers: Sequence[Any] = (PROVIDER,)) -> dict[str, float]:
    """Shares of a model's node time (mean over `runs` profiled runs) spent in the NCHWc reorders
    ONNX Runtime inserted: ``{"reorder_in_share": .., "reorder_out_share": ..}``, {} when it inserted none."""
    with tempfile.TemporaryDirectory(prefix="hwlat_ort_") as tmp:
        options = session_options(ort, threads, opt_level, os.path.join(tmp, "profile"))
        session = ort.InferenceSession(model, options, providers=list(providers))
        for _ in range(runs + 2):
            session.run(None, feeds)
        traces, _ = parse_trace(session.end_profiling(), skip_runs=2)
    times = [(t.op_type, float(np.mean(t.per_run_us))) for t in traces.values()]
    total = sum(t for _, t in times)
    if total <= 0 or not any(op in REORDER_NODES.values() for op, _ in times):
        return {}
    return {f"reorder_{d}_share": round(sum(t for op, t in times if op == node) / total, 4)
            for d, node in REORDER_NODES.items()}
