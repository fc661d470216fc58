"""Kernel regressors fitted on a device table, stored beside it as NAME.regressors.json + .npz
(arrays + JSON, no pickles) and recorded in its metadata with a digest of the rows they were
fitted on, so that they are loaded instead of refitted while those rows are unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from hwlat.device_tables.table import DeviceTable, table_paths
from hwlat.predictors.kernel_regressors import KernelRegressors

log = logging.getLogger(__package__)  # the package's name, which its messages have always carried

REGRESSORS_SUFFIX = ".regressors"


def regressors_stem(table: DeviceTable) -> Path | None:
    """Where a table's stored kernel regressors live (None for a table without files)."""
    return None if table.path is None else table.path.with_name(table.path.name + REGRESSORS_SUFFIX)


def rows_digest(rows: Iterable[Any], ms: Callable[[Any], float]) -> str:
    """A digest of what regressors are fitted on: each row's key and its latency `ms(row)`."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.spec.key):
        h.update(f"{r.spec.key}={ms(r):.9g}\n".encode())
    return h.hexdigest()[:16]


def load(table: DeviceTable, statistic: str, layout_reorders: bool, digest: Callable[[], str]) -> KernelRegressors | None:
    """The regressors stored with `table`, if they were fitted on its rows as read with `statistic`
    and `layout_reorders` and as `digest` (asked only when the rest matches) finds them, and its JSON
    still records them (not fitted again since the table was loaded); None otherwise."""
    stored = table.meta.get("regressors") or {}
    stem = regressors_stem(table)
    if not stored or stem is None or stored.get("statistic") != statistic \
            or bool(stored.get("layout_reorders", True)) != layout_reorders:
        return None
    if not stem.with_name(stem.name + ".json").exists() or stored.get("rows_digest") != digest():
        return None
    if recorded_now(table) != stored:  # stored since, for the rows another process has (the table profiled again)
        log.info("%s: its stored regressors were fitted again since it was loaded; fitting them on its rows as loaded",
                 table.name)
        return None
    from hwlat.predictors.kernel_regressors import RegressorError

    try:
        return KernelRegressors.load(stem)
    except RegressorError as exc:
        log.warning("%s: stored regressors not used (%s); refitting", table.name, exc)
        return None


def recorded_now(table: DeviceTable) -> Any:
    """The regressors the table's JSON records now (None where it cannot be read)."""
    try:
        return json.loads(table_paths(table.path)[1].read_text()).get("regressors")
    except (OSError, ValueError, AttributeError):
        return None


def save(table: DeviceTable, regressors: KernelRegressors, record: Mapping[str, Any]) -> Path:
    """Store `regressors` beside `table`, recorded in its metadata: their files' stem, `record` (how
    the rows were read, their digest and count) and the regressors' families."""
    stem = regressors_stem(table)
    if stem is None:
        raise ValueError("a table without files cannot store regressors")
    regressors.save(stem)
    table.update_meta(regressors={"file": stem.name, **record, "families": sorted(regressors.families_)})
    return stem
