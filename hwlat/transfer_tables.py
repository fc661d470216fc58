"""The transfer benchmark's view of arch tables: `ArchTable`s joined, checked that every file
agrees on the benchmark's key (``nb201_index``, ``help_row``), with features and costs per row."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from hwlat.device_tables.archtable import ArchTable
from hwlat.device_tables.errors import TableError

log = logging.getLogger(__name__)


@dataclass
class TransferTables:
    space: str
    join_key: str
    keys: np.ndarray  # benchmark key per row (float; NaN for local rows that have none)
    arch_keys: list[str]  # the space's primary key per row (what features and costs are built from)
    devices: dict[str, np.ndarray]  # device column -> ms (NaN where missing)
    dropped_train: int = 0

    def column(self, name: str) -> np.ndarray:
        return self.devices[name]

    def transfer_data(self, train: Sequence[str], valid: Sequence[str]):
        """`TransferData` for the bench: features of every row, training/validation latencies, costs."""
        from hwlat.nas.features import latency_features
        from hwlat.nas.spaces import get_space
        from hwlat.predictors.evaluation import TransferData

        sp = get_space(self.space)
        archs = [sp.parse(k) for k in self.arch_keys]
        X, layout = latency_features(sp, archs)
        L = np.column_stack([self.devices[d] for d in train])
        self.dropped_train = int((~np.all(np.isfinite(L) & (L > 0), axis=1)).sum())
        V = np.column_stack([self.devices[d] for d in valid]) if valid else None
        costs = {"macs": _CostCache(sp, archs, "macs"), "params": _CostCache(sp, archs, "params")}
        return TransferData(self.keys, X, layout, L, list(train), V, list(valid), costs)


class _CostCache:
    """MACs or parameters of table rows, computed on first use (building a network is slow)."""

    def __init__(self, space, archs: list, what: str):
        self.space, self.archs, self.what = space, archs, what
        self.cache: dict[int, float] = {}

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        fn = getattr(self.space, self.what)
        for r in rows:
            r = int(r)
            if r not in self.cache:
                self.cache[r] = float(fn(self.archs[r]))
        return np.array([self.cache[int(r)] for r in rows])


def load_transfer_tables(space: str, paths: Sequence[str], join_key: str,
                         wanted: Sequence[str] | Mapping[str, Sequence[str]]) -> TransferTables:
    """Read the tables (`ArchTable` validates each file and joins them on the architecture) and
    check that they agree on `join_key`; every name in `wanted` (or in each of its groups, by the
    option that gave them: ``{"--train": [...]}``) must be a device column."""
    from hwlat.nas.spaces import arch_keys, known_arch_keys

    keys, candidates = arch_keys(space), known_arch_keys()
    files = [ArchTable.read(p, space=keys, candidates=candidates) for p in paths]
    seen: dict[str, tuple[float, str]] = {}  # arch -> (join key, file)
    for path, t in zip(paths, files):
        f = t.frame
        if join_key not in f.columns:
            raise TableError(f"key mismatch: {path} has no {join_key!r} column; {space} tables are joined on "
                             f"{join_key} (key columns {', '.join(t.key_columns)})")
        for arch, k in zip(f[t.primary], f[join_key]):
            if k is None or k != k:  # NA: a local row outside the public index
                continue
            k = int(k)
            prev = seen.get(arch)
            if prev is not None and prev[0] != k:
                raise TableError(f"key mismatch: {t.primary} {arch!r} has {join_key}={prev[0]} in {prev[1]} but "
                                 f"{join_key}={k} in {path}")
            seen[arch] = (k, str(path))
    table = ArchTable.read(list(paths), space=keys, candidates=candidates)
    f = table.frame
    known = f[join_key].dropna()
    dup = known[known.duplicated()]
    if len(dup):
        k = int(dup.iloc[0])
        archs = f[table.primary][f[join_key] == k].tolist()
        raise TableError(f"key mismatch: {join_key}={k} names two architectures in the tables ({archs[0]!r} and {archs[1]!r})")
    groups = wanted.items() if isinstance(wanted, Mapping) else [("", wanted)]
    unknown = [(flag, names) for flag, given in groups if (names := [n for n in given if n not in table.devices])]
    if unknown:
        from hwlat.device_tables.errors import UnknownDeviceError

        said = "; ".join(f"{flag + ' ' if flag else ''}{', '.join(names)}" for flag, names in unknown)
        raise UnknownDeviceError(f"unknown device(s) {said}; the tables have: {', '.join(table.devices)}")
    keys = f[join_key].to_numpy(dtype=float, na_value=np.nan)
    return TransferTables(space, join_key, keys, [str(k) for k in f[table.primary]],
                          {d: f[d].to_numpy(dtype=float) for d in table.devices})
