"""What an accuracy search is judged against: the most accurate architecture within a latency
budget among a space's measured architectures (the arch table shipped for a device) or among all
of them by a predictor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwlat.nas.spaces.base import Space


@dataclass(frozen=True)
class Reference:
    """The most accurate architecture with latency <= budget among `n` (of which `n_within` qualify)."""

    what: str
    key: str
    index: int
    accuracy: float
    latency_ms: float
    n: int
    n_within: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_within(space: Space, accuracy: np.ndarray, indices: Sequence[int], ms: Sequence[float], budget_ms: float,
                what: str) -> Reference | None:
    """The most accurate of the architectures `indices` (accuracy by index) with `ms` <= budget."""
    idx, ms = np.asarray(indices, dtype=int), np.asarray(ms, dtype=float)
    ok = np.isfinite(ms) & (ms <= budget_ms)
    if not ok.any():
        return None
    acc = np.where(ok, accuracy[idx], -np.inf)
    j = int(np.argmax(acc))
    arch = space.from_index(int(idx[j]))
    return Reference(what, space.key(arch), int(idx[j]), float(acc[j]), float(ms[j]), len(idx), int(ok.sum()))


def shipped_arch_table(space: Space, device: str) -> Path | None:
    """The arch table shipped with the project (hwlat/device_tables/tables/arch) that has a column for
    `device` in `space`, or None."""
    from hwlat.device_tables.registry import TABLES_DIR

    for csv in sorted((TABLES_DIR / "arch").glob(f"{space.name}_*.csv")):
        if csv.name.endswith(".stats.csv"):
            continue
        with open(csv) as f:
            if device in f.readline().rstrip("\n").split(","):
                return csv
    return None


def table_latencies(space: Space, device: str) -> tuple[Path, np.ndarray, np.ndarray] | None:
    """(path, indices, ms) of the shipped arch table of `device`, or None without one."""
    from hwlat.device_tables.archtable import ArchTable

    path = shipped_arch_table(space, device)
    if path is None:
        return None
    col = ArchTable.read(path, space=space.arch_keys).latency(device).dropna()
    idx = np.asarray([space.index(space.parse(k)) for k in col.index], dtype=int)
    return path, idx, col.to_numpy(dtype=float)


def measured_elsewhere(path: Path) -> str:
    """How this machine's CPU differs from the one that measured the arch table at `path` ('' where alike):
    a reference of another CPU is its latencies, not this machine's."""
    from hwlat.device_tables.archtable import arch_table_paths, read_meta
    from hwlat.device_tables.device import host_differences
    from hwlat.device_tables.registry import _brief

    fingerprint = (read_meta(arch_table_paths(path)[1]).get("device") or {}).get("fingerprint") or {}
    return _brief(host_differences(fingerprint))


def measured_reference(space: Space, accuracy: np.ndarray, device: str, budget_ms: float) -> Reference | None:
    """`best_within` over the shipped arch table of `device` (None without one, or none within)."""
    table = table_latencies(space, device)
    if table is None:
        return None
    path, idx, ms = table
    return best_within(space, accuracy, idx, ms, budget_ms, f"measured arch table {path.name} ({len(ms)} archs)")


__all__ = ["Reference", "best_within", "measured_elsewhere", "measured_reference", "shipped_arch_table",
           "table_latencies"]
