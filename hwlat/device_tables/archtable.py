"""`ArchTable`: latencies of whole architectures of one search space on one or more devices.

The format is the public one (``../shared/data/latency``): a wide CSV, key columns then one
column per device, latency of one forward pass in ms, an empty cell where a value is missing.
`ArchTable.read` joins several such files on the space's primary key; `ArchTableWriter` writes
measurements made here in the same format (one device column named after the `Device`),
appended and flushed per architecture and resumable, with ``NAME.json`` (device, fingerprint,
protocol, runtime settings) and ``NAME.stats.csv`` (per-arch statistics and noise flag) beside it,
so that the main CSV holds nothing but keys and latencies. See ``hwlat/device_tables/ARCHTABLE.md``.

This module knows no search space: each space describes its key columns with an `ArchKeys`
(``hwlat.nas.spaces``: ``Space.arch_keys``), and callers pass it in.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hwlat.device_tables.device import Device
from hwlat.device_tables.errors import TableError, UnknownDeviceError
from hwlat.device_tables.measurement import STAT_FIELDS, Measurement
from hwlat.device_tables.files import (
    append_line, append_to, atomic_write_text, ends_whole, make_parent, open_append, repair_last_line, set_aside,
    stem, whole_csv_row,
)
from hwlat.device_tables.lock import TableLock
from hwlat.device_tables.table import note_resume, now, refuse_another_cpu, refuse_other_settings
from hwlat.device_tables.table import read_meta as read_table_meta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchKeys:
    """How the arch tables of one search space are keyed: the scheme a space declares.

    `space` names the space (in messages, the public files ``{space}*.csv`` and the table
    metadata); `columns` are the key columns in file order; `primary` is the one every file of the
    space shares and tables are joined on; `int_columns` hold integers (the rest are strings).
    Rows are sorted by `order_by` when every row has a value there, or even when some lack one
    (they go last) if `order_with_gaps`; else they keep the join's order. `optional` key columns
    are ones an architecture may lack (a row number of the public files, for one outside them): a
    local table writes them after the others, so that its first column is a key every row has.
    """

    space: str
    columns: tuple[str, ...]
    primary: str
    int_columns: tuple[str, ...] = ()
    order_by: str | None = None
    order_with_gaps: bool = False
    optional: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = [self.primary, *self.int_columns, *self.optional] + ([self.order_by] if self.order_by else [])
        stray = [c for c in named if c not in self.columns]
        if stray:
            raise ValueError(f"{self.space} arch keys: {', '.join(stray)} not among the key columns {', '.join(self.columns)}")

    def describe(self) -> str:
        """``space: col, col, ...`` for messages."""
        return f"{self.space}: {', '.join(self.columns)}"


SCHEMA = "hwlat.arch_table"
SCHEMA_VERSION = 1
STATS_COLUMNS = ("key", "status", "median_ms", "mean_ms", "std_ms", "iqr_ms", "p10_ms", "p90_ms", "n", "noisy",
                 "build_ms", "error", "measured_at")
# The files of a local arch table: what --fresh moves aside.
FILE_SUFFIXES = (".csv", ".json", ".stats.csv", ".passes.csv")
# NAME.passes.csv: the earlier passes of architectures measured in several (`ArchTableWriter.record_pass`).
PASS_COLUMNS = ("key", "pass", *STAT_FIELDS, "n", "noisy", "measured_at")
# The metadata entries that say how archs were measured: a resumed table must be measured the same way.
MEASURING_SETTINGS = ("protocol", "runtime", "batch", "runtime_settings", "space_options")

# Where the public latency files are: this environment variable, else ../shared/data/latency
# next to the repository (development layout). Never shipped, never needed by tests.
PUBLIC_DATA_ENV = "HWLAT_LATENCY_DATA"


def public_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of the public latency CSVs: `path`, else ``$HWLAT_LATENCY_DATA``, else
    ``../shared/data/latency`` beside the repository (a source checkout; an installed hwlat has no
    default). A folder given explicitly must exist."""
    if path or os.environ.get(PUBLIC_DATA_ENV):
        given = Path(path) if path else Path(os.environ[PUBLIC_DATA_ENV])
        where = "given" if path else f"from ${PUBLIC_DATA_ENV}"
        if not given.is_dir():
            raise TableError(f"public latency data folder {given} ({where}) does not exist")
        return given
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():  # installed: site-packages has no ../shared beside it
        raise TableError(f"public latency data not given; pass its folder or set {PUBLIC_DATA_ENV}")
    default = checkout.parent / "shared" / "data" / "latency"
    if default.is_dir():
        return default
    raise TableError(f"public latency data not found at {default}; pass its folder or set {PUBLIC_DATA_ENV}")


def public_files(space: ArchKeys, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The public CSV files of a space, ``{space}*.csv`` (nb201: nb201.csv and nb201_subset.csv)."""
    d = public_data_dir(data_dir)
    files = sorted(p for p in d.glob(f"{space.space}*.csv"))
    if not files:
        raise TableError(f"{d}: no {space.space}*.csv file")
    return files


def matching_spaces(columns: Iterable[str], candidates: Sequence[ArchKeys]) -> list[ArchKeys]:
    """The candidates whose primary key column is among `columns`."""
    cols = set(columns)
    return [c for c in candidates if c.primary in cols]


def infer_space(columns: Iterable[str], candidates: Sequence[ArchKeys]) -> ArchKeys | None:
    """The one candidate space whose primary key column is among `columns`, else None."""
    found = matching_spaces(columns, candidates)
    return found[0] if len(found) == 1 else None


def _check_keys(space: Any) -> ArchKeys:
    if not isinstance(space, ArchKeys):
        raise TypeError(f"an arch table's space is an ArchKeys (hwlat.nas.spaces.arch_keys(name)), not {space!r}")
    return space


class ArchTable:
    """Latencies (ms) of architectures of `space` on `devices`: one row per architecture.

    `frame` is a pandas DataFrame: the key columns (primary key first), then one float column per
    device, NaN where missing. `sources` maps each device to the file it came from. `space` is the
    space's name and `arch_keys` its key scheme.
    """

    def __init__(self, space: ArchKeys, frame, devices: Sequence[str], sources: Mapping[str, str] | None = None,
                 meta: Mapping[str, Any] | None = None):
        self.arch_keys = _check_keys(space)
        self.space = space.space
        self.primary = space.primary
        self.frame = frame
        self.devices = list(devices)
        self.sources = dict(sources or {})
        self.meta = dict(meta or {})  # file -> metadata JSON of local tables

    # ---- reading ------------------------------------------------------------------------
    @classmethod
    def read(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], space: ArchKeys | None = None,
             devices: Sequence[str] | None = None, candidates: Sequence[ArchKeys] = ()) -> "ArchTable":
        """Read and join wide CSVs of one space on its primary key (outer join; missing -> NaN).

        Without `space`, the space is the one of `candidates` whose primary key is in the first
        file's columns (``hwlat.nas.spaces.known_arch_keys()``); a file holding the primary key of another
        candidate is refused. `devices` selects device columns (in that order). Errors name the file
        and what is expected.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise TableError("no arch table file given")
        merged = None
        all_devices: list[str] = []
        sources: dict[str, str] = {}
        meta: dict[str, Any] = {}
        stats_given = [p for p in paths if p.name.endswith(".stats.csv")]
        paths = [p for p in paths if not p.name.endswith(".stats.csv")]  # sidecars of local tables
        if not paths:
            raise TableError(f"{stats_given[0]} holds per-arch statistics; read the table {arch_table_paths(stats_given[0])[0]}")
        for path in paths:
            if path.is_dir():
                raise TableError(f"{path} is a folder; give an arch table's CSV file (`hwlat profile archs --out` "
                                 "writes one; public ones are named like nb201.csv)")
            if path.suffix == ".json":
                path = path.with_suffix(".csv")
            elif path.suffix != ".csv":
                path = path.with_name(path.name + ".csv")
            df = _read_csv(path)
            if space is None:
                space = _infer(path, df.columns, candidates)
            _check_keys(space)
            keys = space.columns
            primary = space.primary
            if primary not in df.columns:
                raise TableError(f"{path}: no {primary!r} column; a {space.space} arch table needs the key columns "
                                 f"{', '.join(keys)} (at least {primary!r})")
            other_spaces = [c.space for c in matching_spaces(df.columns, candidates) if c.space != space.space]
            if other_spaces:
                raise TableError(f"{path}: has key columns of the {other_spaces[0]} space, not of {space.space}")
            df = df.copy()
            df[primary] = df[primary].astype(str).str.strip()
            dup = df[primary].duplicated()
            if dup.any():
                raise TableError(f"{path}: architecture {df[primary][dup].iloc[0]!r} appears more than once; "
                                 "a table has one row per architecture")
            dev_cols = [c for c in df.columns if c not in keys]
            for c in dev_cols:
                df[c] = _latency_column(df[c], c, path)
                if (df[c] < 0).any():
                    df.loc[df[c] < 0, c] = float("nan")  # the sources' -1: failed on that device
                if c in sources:
                    raise TableError(f"device column {c!r} is in both {sources[c]} and {path}; "
                                     "read them separately or rename one column")
                sources[c] = str(path)
                all_devices.append(c)
            for k in space.int_columns:
                if k in df.columns:
                    df[k] = int_column(df[k], k, path)
            local_meta = path.with_suffix(".json")
            if local_meta.exists():
                meta[str(path)] = read_meta(local_meta)
            if merged is None:
                merged = df
            else:
                shared_keys = [k for k in keys if k != primary and k in merged.columns and k in df.columns]
                merged = merged.merge(df, on=primary, how="outer", suffixes=("", "__right"))
                for k in shared_keys:
                    merged[k] = merged[k].combine_first(merged[f"{k}__right"])
                    merged = merged.drop(columns=f"{k}__right")
        assert merged is not None and space is not None
        keys = [k for k in space.columns if k in merged.columns]
        keys = [space.primary] + [k for k in keys if k != space.primary]
        if devices is not None:
            unknown = [d for d in devices if d not in all_devices]
            if unknown:
                raise UnknownDeviceError(f"device(s) {unknown} not in {', '.join(map(str, paths))}; "
                                         f"available: {', '.join(all_devices)}")
            chosen = list(devices)
        else:
            chosen = all_devices
        frame = _ordered(merged[keys + chosen].reset_index(drop=True), space)
        return cls(space, frame, chosen, {d: sources[d] for d in chosen}, meta)

    @classmethod
    def public(cls, space: ArchKeys, devices: Sequence[str] | None = None,
               data_dir: str | os.PathLike | None = None) -> "ArchTable":
        """All public files of a space joined (nb201: 15625 archs, 19 + 7 devices)."""
        if not isinstance(space, ArchKeys):
            raise TypeError(f"ArchTable.public takes a space's ArchKeys, not {space!r}: "
                            f"hwlat.nas.spaces.get_space({str(space)!r}).arch_keys")
        return cls.read(public_files(space, data_dir), space=space, devices=devices)

    # ---- views --------------------------------------------------------------------------
    @property
    def key_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in self.devices]

    @property
    def keys(self) -> list[str]:
        """Primary keys of the rows, in row order."""
        return list(self.frame[self.primary])

    def __len__(self) -> int:
        return len(self.frame)

    def latency(self, device: str):
        """A device's latencies as a pandas Series indexed by the primary key."""
        if device not in self.devices:
            raise UnknownDeviceError(f"device {device!r} not in this table; available: {', '.join(self.devices)}")
        return self.frame.set_index(self.primary)[device]

    def to_numpy(self, devices: Sequence[str] | None = None):
        """(n_archs, n_devices) float array of latencies, NaN where missing."""
        return self.frame[list(devices or self.devices)].to_numpy(dtype=float)

    def missing(self):
        """Missing cells per device (pandas Series)."""
        return self.frame[self.devices].isna().sum()

    def select(self, devices: Sequence[str] | None = None, keys: Iterable[str] | None = None,
               complete: bool = False) -> "ArchTable":
        """A table with only some devices and/or rows (`complete`: only rows measured on every device)."""
        devs = list(devices) if devices is not None else self.devices
        unknown = [d for d in devs if d not in self.devices]
        if unknown:
            raise UnknownDeviceError(f"device(s) {unknown} not in this table; available: {', '.join(self.devices)}")
        frame = self.frame[[c for c in self.frame.columns if c not in self.devices] + devs]
        if keys is not None:
            wanted = set(keys)
            frame = frame[frame[self.primary].isin(wanted)]
        if complete:
            frame = frame.dropna(subset=devs)
        return ArchTable(self.arch_keys, frame.reset_index(drop=True), devs, {d: self.sources.get(d, "") for d in devs}, self.meta)

    def summary(self) -> str:
        lines = [f"{self.space} arch table: {len(self)} architectures, {len(self.devices)} devices"]
        miss = self.missing()
        for d in self.devices:
            col = self.frame[d]
            lines.append(f"  {d:<40} {col.notna().sum():>6} measured, {int(miss[d]):>6} missing, "
                         f"median {col.median():.4g} ms, range {col.min():.4g}..{col.max():.4g} ms")
        return "\n".join(lines)


def _latency_column(cells, column: str, path: Path):
    """A device column's text cells as float ms (NaN where empty); a `TableError` naming the file,
    the line, the column and the value of a cell that is not a finite number (``inf``, ``nan``, text)."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(cells, errors="coerce").astype(float)
    bad = cells.notna().to_numpy() & ~np.isfinite(values.to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"{path}: device column {column!r} holds {cells.iloc[i]!r} on line {i + 2}, not a latency in ms "
                         "(cells must be finite numbers or empty)")
    return values


def int_column(cells, column: str, path: Path):
    """An integer key column's text cells as nullable ints (NA where empty); a `TableError` naming the
    file, the line, the column and the value of a cell that is not a whole number (text, inf, 3.5)."""
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(cells, errors="coerce").astype(float)
    v = values.to_numpy()
    whole = np.zeros(len(v), dtype=bool)
    finite = np.isfinite(v) & (np.abs(np.nan_to_num(v)) < 2.0 ** 53)
    whole[finite] = v[finite] == np.round(v[finite])
    bad = cells.notna().to_numpy() & ~whole
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"{path}: key column {column!r} holds {cells.iloc[i]!r} on line {i + 2}, not a whole number")
    return values.astype("Int64")


def latency_cell(text: str, where: str) -> float | None:
    """One latency cell of an arch table: ms, or None where empty or negative (a failure, the public
    files' -1); a `TableError` naming `where` for anything else (``inf``, ``nan``, text)."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise TableError(f"{where}: latency cell {text!r} is not a latency in ms (cells must be finite numbers or "
                         "empty); fix or delete the row to re-measure it")
    return value if value >= 0 else None


def _infer(path: Path, columns: Sequence[str], candidates: Sequence[ArchKeys]) -> ArchKeys:
    """The space of a file from its columns; `TableError` saying what to do when there is not one."""
    if not candidates:
        raise TableError(f"{path}: name the search space of this arch table (space=hwlat.nas.spaces.arch_keys(name)); "
                         "no candidate spaces were given to infer it from the columns")
    found = matching_spaces(columns, candidates)
    if len(found) > 1:
        raise TableError(f"{path}: has the primary key columns of several spaces ({', '.join(c.space for c in found)}); "
                         "name the space")
    if not found:
        expected = "; ".join(c.describe() for c in candidates)
        raise TableError(f"{path}: no search-space key column found (columns: {', '.join(map(str, columns[:6]))}...); "
                         f"expected the key columns of one space ({expected})")
    return found[0]


def _ordered(frame, keys: ArchKeys):
    """`frame` sorted by the space's `order_by` column when `keys` says so, else as it is."""
    col = keys.order_by
    if col is None or col not in frame.columns:
        return frame
    if not keys.order_with_gaps and frame[col].isna().any():
        return frame
    return frame.sort_values(col, kind="stable").reset_index(drop=True)


def _public_hint(path: Path) -> str:
    """Where a bare file name not found here is one of the public latency files: its path there."""
    if path.is_absolute() or len(path.parts) > 1:
        return ""
    try:
        public = public_data_dir() / path.name
    except TableError:
        return ""
    return f" here; the public latency data has one: {public}" if public.is_file() else ""


def _read_csv(path: Path):
    import pandas as pd

    if not path.exists():
        raise TableError(f"arch table {path} not found{_public_hint(path)}")
    try:
        # Keep strings as written (arch keys like 4-2-1-2-1-1 must not become numbers).
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise TableError(f"{path}: empty file; expected a header of key columns and device columns") from None
    except pd.errors.ParserError as exc:
        raise TableError(f"{path}: not a valid CSV ({str(exc).strip()}); fix or delete the broken row") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text (byte {exc.start}); restore it from a copy") from None
    partial = partial_last_row(path)
    if partial is not None and len(df):
        log.warning(PARTIAL_ROW, path, partial)
        df = df.iloc[:-1]
    return df


PARTIAL_ROW = ("%s: ignoring a partial last row (line %d) left by an interrupted run; the `hwlat profile archs` "
               "command that wrote it, run again, measures it again")


def read_meta(json_path: Path) -> dict[str, Any]:
    return read_table_meta(json_path, SCHEMA, SCHEMA_VERSION, "arch table")


def _stats_latencies(stats_path: Path) -> dict[str, str]:
    """Each arch's latency cell as the main CSV holds it (the median, or empty for a failure), from
    its whole rows in the stats file."""
    with open(stats_path, newline="") as f:
        rows = [r for r in csv.reader(f) if len(r) == len(STATS_COLUMNS)]
    return {r[0]: r[2] if r[1] == "ok" else "" for r in rows[1:]}


def partial_last_row(csv_path: Path, recorded: Mapping[str, str] | None = None) -> int | None:
    """The line number of the last row of a local arch table's CSV when an interrupted write left it
    partial (no newline, and not the latency its stats row, written first, recorded: a number cut
    short still parses), else None. A CSV without a stats file beside it is not hwlat's: kept as is."""
    if ends_whole(csv_path):
        return None
    data = csv_path.read_bytes()
    if recorded is None:
        stats_path = arch_table_paths(csv_path)[2]
        if not stats_path.is_file():
            return None
        recorded = _stats_latencies(stats_path)
    lines = data.split(b"\n")
    try:
        header = next(csv.reader([lines[0].decode()]))
        values = next(csv.reader([lines[-1].decode()], strict=True))
    except (csv.Error, StopIteration, UnicodeDecodeError):
        return len(lines)
    whole = len(lines) > 1 and len(values) == len(header) and any(recorded.get(v) == values[-1] for v in values[:-1])
    return None if whole else len(lines)


def arch_table_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(csv, json, stats csv) of a local arch table given NAME, NAME.csv or NAME.json."""
    p = stem(path, TableError, "my_archs")
    if p.name.endswith(".stats.csv"):
        p = p.with_name(p.name[: -len(".stats.csv")])
    elif p.suffix in (".csv", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".csv"), p.with_name(p.name + ".json"), p.with_name(p.name + ".stats.csv")


def _line(values: Sequence[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


class ArchTableWriter:
    """Appends measurements of one device to a local arch table, resuming an existing one.

    ``NAME.csv``: key columns + one column named ``device.name`` (ms, empty on failure).
    ``NAME.stats.csv``: per-arch statistics, noise flag, build time and error message.
    ``NAME.json``: schema, space, device with fingerprint, protocol and settings, run history.
    Each row is written with one ``write`` on an O_APPEND file and fsync'ed before `append` returns.
    The table's lock is held until `close` (a second writer gets `TableBusyError`); a resumed table
    must have been measured with the same settings (`MEASURING_SETTINGS`) unless `fresh` starts it
    again, its old files moved aside to NAME.old-<time>.*.
    """

    def __init__(self, path: str | os.PathLike, space: ArchKeys, device: Device, meta: Mapping[str, Any] | None = None,
                 *, fresh: bool = False):
        self.arch_keys = _check_keys(space)
        self.space = space.space  # the name, as the metadata records it
        self.device = device
        self.csv_path, self.json_path, self.stats_path = arch_table_paths(path)
        self.primary = space.primary
        self.key_columns = [c for c in space.columns if c not in space.optional] + list(space.optional)
        self.columns = self.key_columns + [device.name]
        self._done: dict[str, float | None] = {}
        make_parent(self.csv_path)
        self._lock: TableLock | None = TableLock.acquire(self.csv_path.with_suffix(""))
        try:
            self._start(meta, fresh)
        except BaseException:
            self.close()
            raise

    def _start(self, meta: Mapping[str, Any] | None, fresh: bool) -> None:
        """Create or resume the table, holding its lock, and open its files for appending."""
        device = self.device
        if fresh:
            set_aside(self.csv_path.with_suffix(""), FILE_SUFFIXES)
        if self.csv_path.exists() or self.json_path.exists():
            self._resume(meta or {})
        else:
            self.meta = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": self.csv_path.stem, "space": self.space,
                         "device": device.to_dict(), "created": now(), **dict(meta or {})}
            self.write_meta()
            atomic_write_text(self.csv_path, _line(self.columns).decode())
            atomic_write_text(self.stats_path, _line(STATS_COLUMNS).decode())
        self._fd = open_append(self.csv_path)
        self._stats_fd = open_append(self.stats_path)

    def _resume(self, meta: Mapping[str, Any]) -> None:
        if not self.json_path.exists():
            raise TableError(f"{self.csv_path} exists without {self.json_path.name}; move it away or restore the metadata")
        if not self.csv_path.exists():
            raise TableError(f"{self.json_path} exists without {self.csv_path.name}; move it away or restore the table")
        self.meta = read_meta(self.json_path)
        if self.meta.get("space") != self.space:
            raise TableError(f"{self.json_path} is a {self.meta.get('space')} table, not {self.space}; choose another --out")
        old = self.meta.get("device", {}).get("name")
        if old != self.device.name:
            raise TableError(f"{self.json_path} holds device {old!r}, not {self.device.name!r}; "
                             "choose another --out or the same settings to resume, or pass --fresh to start it again "
                             "(its files are moved aside)")
        refuse_other_settings(self.csv_path.with_suffix(""), self.meta, meta, MEASURING_SETTINGS)
        refuse_another_cpu(self.csv_path.with_suffix(""), self.meta, self.device)
        with open(self.csv_path, newline="") as f:
            header = next(csv.reader(f), None)
        if header == [*self.arch_keys.columns, self.device.name]:  # begun when optional keys came first
            self.key_columns, self.columns = list(self.arch_keys.columns), header
        recorded = self._repair_stats()
        repair_last_line(self.csv_path, lambda line: self._whole_row(line, recorded))
        with open(self.csv_path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != self.columns:
                raise TableError(f"{self.csv_path}, line 1: header is {','.join(header or [])!r}; "
                                 f"expected {','.join(self.columns)!r}")
            pk = self.columns.index(self.primary)
            for lineno, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(self.columns):
                    raise TableError(f"{self.csv_path}, line {lineno}: {len(row)} fields, expected {len(self.columns)}; "
                                     "fix or delete the row to re-measure it")
                self._done[row[pk]] = latency_cell(row[-1], f"{self.csv_path}, line {lineno}")
        if self.stats_path.exists():
            self._prune_stats()
        else:
            atomic_write_text(self.stats_path, _line(STATS_COLUMNS).decode())
        self.meta.update({k: v for k, v in meta.items() if k not in ("created",)})
        note_resume(self.csv_path.with_suffix(""), self.meta, self.device.fingerprint)
        self.write_meta()

    def _repair_stats(self) -> dict[str, str]:
        """End the stats file with a whole row (`repair_last_line`); return each arch's latency cell
        as the main CSV holds it (the median, or empty for a failure), from its stats row."""
        if not self.stats_path.exists():
            return {}
        repair_last_line(self.stats_path, lambda line: whole_csv_row(line, len(STATS_COLUMNS)))
        return _stats_latencies(self.stats_path)

    def _whole_row(self, line: str, recorded: Mapping[str, str]) -> bool:
        """Whether a main-CSV line without its newline is whole: every field, and the latency its stats
        row (written first) recorded; a number cut short would still parse, so only that tells."""
        try:
            values = next(csv.reader([line], strict=True))
        except (csv.Error, StopIteration):
            return False
        key = values[self.columns.index(self.primary)] if len(values) == len(self.columns) else None
        return key in recorded and values[-1] == recorded[key]

    def _prune_stats(self) -> None:
        """Drop stats rows of archs that never reached the main CSV (interrupted between the writes)."""
        with open(self.stats_path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or tuple(rows[0]) != STATS_COLUMNS:
            raise TableError(f"{self.stats_path}, line 1: expected the header {','.join(STATS_COLUMNS)}")
        kept = [rows[0]] + [r for r in rows[1:] if r and r[0] in self._done]
        if len(kept) != len(rows):
            atomic_write_text(self.stats_path, "".join(_line(r).decode() for r in kept))

    # ---- writing ------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return key in self._done

    def __len__(self) -> int:
        return len(self._done)

    @property
    def done(self) -> dict[str, float | None]:
        """Primary key -> median ms (None for failures) of the rows written so far."""
        return dict(self._done)

    @property
    def passes_path(self) -> Path:
        return self.csv_path.with_name(self.csv_path.stem + ".passes.csv")

    def record_pass(self, key: str, number: int, m: Measurement) -> None:
        """Keep pass `number` of an architecture measured in several, in ``NAME.passes.csv``: the table
        gets one row, the quietest pass, once the last is measured; a run killed between passes
        resumes without measuring the earlier ones again, and the file shows each pass."""
        if not self.passes_path.exists():
            atomic_write_text(self.passes_path, _line(PASS_COLUMNS).decode())
        values = [key, number, *m.cells(), now()]
        append_to(self.passes_path, _line(values))

    def earlier_passes(self) -> dict[str, dict[int, Measurement]]:
        """Key -> {pass number: measurement} of the passes `record_pass` kept for architectures not
        yet in the table; a line cut short by a crash is dropped (that pass is measured again)."""
        if not self.passes_path.exists():
            return {}
        repair_last_line(self.passes_path, lambda line: whole_csv_row(line, len(PASS_COLUMNS)))
        out: dict[str, dict[int, Measurement]] = {}
        with open(self.passes_path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or tuple(rows[0]) != PASS_COLUMNS:
            raise TableError(f"{self.passes_path}, line 1: expected the header {','.join(PASS_COLUMNS)}; move the file "
                             "away (its architectures are measured again)")
        for lineno, r in enumerate(rows[1:], start=2):
            if not r or r[0] in self._done:
                continue
            try:
                stats = [float(v) for v in r[2:2 + len(STAT_FIELDS)]]
                m = Measurement(*stats, n=int(r[-3]), noisy=r[-2] == "true")
                number = int(r[1])
            except (ValueError, IndexError, TypeError):
                raise TableError(f"{self.passes_path}, line {lineno}: not a pass record ({','.join(r)[:80]}); fix or "
                                 "delete the line (that pass is measured again)") from None
            if not all(math.isfinite(v) for v in stats):
                raise TableError(f"{self.passes_path}, line {lineno}: a statistic is not a finite number; fix or delete "
                                 "the line (that pass is measured again)")
            out.setdefault(r[0], {})[number] = m
        return out

    def append(self, record: Mapping[str, Any], measurement: Measurement | None = None, *, error: str | None = None,
               build_ms: float | None = None) -> None:
        """Write one architecture: its key columns (`record`) and a measurement or an error message."""
        if (measurement is None) == (error is None):
            raise ValueError("append needs exactly one of measurement or error")
        key = str(record.get(self.primary, ""))
        if not key:
            raise TableError(f"record {dict(record)!r} lacks the primary key column {self.primary!r}")
        if key in self._done:
            raise TableError(f"{self.csv_path.name}: {key} is already in the table")
        stamp = now()
        if measurement is not None:
            stats = ["ok", *measurement.cells()]
            value = f"{measurement.median_ms:.6g}"
        else:
            stats = ["error"] + [""] * 8
            value = ""
        build = "" if build_ms is None else f"{build_ms:.3f}"
        err = (error or "").replace("\n", " ")
        # Stats first: a crash between the two writes leaves an orphan stats row, pruned on resume.
        append_line(self._stats_fd, _line([key] + stats + [build, err, stamp]), self.stats_path)
        row = ["" if record.get(c) is None or (isinstance(record.get(c), float) and math.isnan(record.get(c)))
               else record.get(c) for c in self.key_columns] + [value]
        append_line(self._fd, _line(row), self.csv_path)
        self._done[key] = measurement.median_ms if measurement is not None else None

    def write_meta(self) -> None:
        atomic_write_text(self.json_path, json.dumps(self.meta, indent=2, sort_keys=True, default=str) + "\n")

    def update_meta(self, **entries: Any) -> None:
        self.meta.update(entries)
        self.write_meta()

    def close(self) -> None:
        for attr in ("_fd", "_stats_fd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ArchTableWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_stats(path: str | os.PathLike):
    """The per-arch statistics of a local arch table as a pandas DataFrame."""
    import pandas as pd

    _, _, stats = arch_table_paths(path)
    if not stats.exists():
        raise TableError(f"{stats} not found (local arch tables keep per-arch statistics there)")
    df = pd.read_csv(stats, dtype={"key": str, "error": str, "status": str})
    df["noisy"] = df["noisy"].astype(str).str.lower().eq("true")
    return df
