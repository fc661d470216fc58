"""`DeviceTable`: the lookup table of one device, `OpSpec -> Measurement`, on disk as CSV + JSON.

A table ``NAME`` is two files side by side: ``NAME.csv`` (one row per op configuration, appended
and flushed as each is measured) and ``NAME.json`` (schema version, device, fingerprint,
protocol settings; rewritten atomically). See ``hwlat/device_tables/README.md`` for the format.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from hwlat.device_tables.device import Device
from hwlat.device_tables.errors import OpSpecError, ResumeSettingsError, SchemaVersionError, TableError
from hwlat.device_tables.files import (
    append_line, atomic_write_text, make_parent, open_append, repair_last_line, set_aside, stem, whole_csv_row,
)
from hwlat.device_tables.lock import TableLock
from hwlat.device_tables.measurement import STAT_FIELDS, Measurement
from hwlat.device_tables.ops import OpSpec

log = logging.getLogger(__name__)

SCHEMA = "hwlat.device_table"
SCHEMA_VERSION = 1
COLUMNS = (
    "key", "op", "dtype", "input_shape", "status",
    "median_ms", "mean_ms", "std_ms", "iqr_ms", "p10_ms", "p90_ms", "n", "noisy",
    "extra", "measured_at",
)
STATUSES = ("ok", "error")
# The files of a table and those `hwlat profile device` keeps beside it (README.md): what --fresh moves aside.
FILE_SUFFIXES = (".csv", ".json", ".networks.csv", ".probes.jsonl", ".regressors.json", ".regressors.npz",
                 ".pass2.csv", ".pass2.json")
# The metadata entries that say how rows were measured: a resumed table must be measured the same way.
MEASURING_SETTINGS = ("protocol", "runtime_settings")


@dataclass(frozen=True)
class Row:
    """One table row: a measured op (status ``ok``) or a recorded failure (status ``error``)."""

    spec: OpSpec
    status: str
    measurement: Measurement | None
    extra: Mapping[str, Any]
    measured_at: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.extra.get("error", "unknown error"))


def table_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(csv, json) paths of a table given either file or the stem."""
    p = stem(path, TableError, "my_table")
    if p.suffix in (".csv", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".csv"), p.with_name(p.name + ".json")


def settings_differences(stored: Mapping[str, Any], given: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """Each measuring setting (`keys` of the metadata, entry by entry) that `given` sets otherwise
    than the table `stored`: ``protocol.clock 'wall' -> 'cpu'``. A setting the table did not
    record (written by an older hwlat) is not a difference."""
    out = []
    for key in keys:
        if key not in stored or key not in given:
            continue
        old, new = stored[key], json.loads(json.dumps(given[key], default=str))  # as the table stores it
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{key}.{k} {old[k]!r} -> {v!r}" for k, v in new.items() if k in old and old[k] != v]
        elif old != new:
            out.append(f"{key} {old!r} -> {new!r}")
    return out


def refuse_other_settings(name: Path, stored: Mapping[str, Any], given: Mapping[str, Any], keys: Sequence[str]) -> None:
    """`ResumeSettingsError` naming each difference when a resumed table would mix two kinds of measurement."""
    diffs = settings_differences(stored, given, keys)
    if diffs:
        raise ResumeSettingsError(f"{name} was measured with other settings ({'; '.join(diffs)}); resume with the "
                                  "table's settings, or pass --fresh to start it again (its files are moved aside)",
                                  stored={key: stored[key] for key in keys  # the entries that differ
                                          if any(d.startswith((f"{key}.", f"{key} ")) for d in diffs)})


def refuse_another_cpu(name: Path, stored: Mapping[str, Any], device: Device) -> None:
    """A CPU table measured on another CPU (model, design or SIMD flags; never the clock alone) is
    not resumed here: its rows and the new ones would be two machines' latencies under one fingerprint."""
    from hwlat.device_tables.device import cpu_differences

    if device.hardware != "cpu":
        return
    differs = cpu_differences((stored.get("device") or {}).get("fingerprint") or {}, device.fingerprint, by_clock=False)
    if differs:
        raise ResumeSettingsError(
            f"{name} was measured on another machine ({'; '.join(differs)}): adding to it here would mix two "
            "machines' latencies; give another --out (or --fresh to start it again here, its files moved aside)")


def note_resume(name: Path, meta: dict[str, Any], fingerprint: Mapping[str, Any]) -> None:
    """Record a resume in a table's metadata: its time, and this machine's fingerprint where it differs
    from the last one recorded (the last resume's, else the table's own), so that a table resumed on
    one machine does not keep a copy of the same fingerprint per run. A setup that changes the numbers
    (another runtime version, environment, affinity or CPU quota) is said in one warning."""
    from hwlat.device_tables.device import setup_differences

    meta.setdefault("resumed", []).append(now())
    last = (meta.get("fingerprints_on_resume") or [(meta.get("device") or {}).get("fingerprint") or {}])[-1]
    here = json.loads(json.dumps(dict(fingerprint), default=str))  # as stored: tuples read back as lists
    if here != last:
        meta.setdefault("fingerprints_on_resume", []).append(here)
    differs = setup_differences(last, here)
    if differs:
        log.warning("%s: resumed with another setup than its last run (%s); its rows now mix both (each run's "
                    "fingerprint is in fingerprints_on_resume; --fresh starts it again)", name, "; ".join(differs))


def _format_row(spec: OpSpec, status: str, m: Measurement | None, extra: Mapping[str, Any], measured_at: str) -> str:
    values: list[Any] = [spec.key, spec.op, spec.dtype, "x".join(map(str, spec.input_shape)), status]
    if m is None:
        values += [""] * 8
    else:
        values += m.cells()
    values += [json.dumps(dict(extra), sort_keys=True, separators=(",", ":")) if extra else "", measured_at]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class DeviceTable:
    """Rows of one device's op measurements, backed by files when it has a path.

    Open with `DeviceTable.load` (read + validate) or `DeviceTable.open` (create or resume for
    appending). `append` writes the row to disk before it returns.
    """

    def __init__(self, device: Device, meta: Mapping[str, Any] | None = None, path: Path | None = None):
        self.device = device
        self.meta: dict[str, Any] = dict(meta or {})
        self.path = path
        self._rows: dict[str, Row] = {}
        self._fd: int | None = None
        self._lock: TableLock | None = None

    # ---- reading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "DeviceTable":
        """Read and validate a table; errors name the file and the row."""
        csv_path, json_path = table_paths(path)
        if not json_path.exists() or not csv_path.exists():
            missing = json_path if not json_path.exists() else csv_path
            raise TableError(f"table {csv_path.with_suffix('')}: {missing.name} not found (a table is NAME.csv + NAME.json)")
        meta = read_meta(json_path)
        check_meta(json_path, meta)
        try:
            device = Device.from_dict(meta["device"])
        except (KeyError, TypeError) as exc:
            raise TableError(f"{json_path}: 'device' entry is missing or malformed ({exc}); restore it or re-profile") from exc
        table = cls(device, meta, csv_path.with_suffix(""))
        for row in _read_rows(csv_path):
            table._rows[row.spec.key] = row
        return table

    @classmethod
    def open(cls, path: str | os.PathLike, device: Device, meta: Mapping[str, Any] | None = None, *,
             fresh: bool = False) -> "DeviceTable":
        """Open a table for appending: create it, or resume an existing one of the same device and
        measuring settings (`fresh`: start it again, its old files moved aside to NAME.old-<time>.*).

        The table's lock is held until `close`: a second writer gets `TableBusyError` at once."""
        if str(path).endswith(("/", os.sep)) or Path(path).is_dir():
            raise TableError(f"{path} names a folder; a table is named by a path without extension (its files are "
                             f"NAME.csv + NAME.json): give one inside it, e.g. {Path(path) / 'my_table'}")
        csv_path, _ = table_paths(path)
        make_parent(csv_path)
        lock = TableLock.acquire(csv_path.with_suffix(""))
        try:
            table = cls._open_locked(path, device, meta, fresh)
            table._fd = open_append(csv_path)
        except BaseException:
            lock.release()
            raise
        table._lock = lock
        return table

    @classmethod
    def _open_locked(cls, path: str | os.PathLike, device: Device, meta: Mapping[str, Any] | None,
                     fresh: bool) -> "DeviceTable":
        """`open`'s work, done while holding the table's lock."""
        csv_path, json_path = table_paths(path)
        if fresh:
            set_aside(csv_path.with_suffix(""), FILE_SUFFIXES)
        if json_path.exists() or csv_path.exists():
            if not json_path.exists():
                raise TableError(f"{csv_path} exists without {json_path.name}; move it away or restore the metadata")
            stored = read_meta(json_path)
            check_meta(json_path, stored, {**META_SHAPE, **RESUME_SHAPE})
            held_device = stored.get("device")
            held = held_device.get("name") if isinstance(held_device, dict) else None
            if held is not None and held != device.name:
                precision = held_device.get("precision")
                hint = (f" (it was measured at --precision {precision})"
                        if precision and precision != device.precision else "")
                raise TableError(
                    f"{json_path} holds device {held!r}, not {device.name!r}; "
                    f"choose another --out or the same settings to resume{hint}, or pass --fresh to start it again "
                    "(its files are moved aside)"
                )
            refuse_other_settings(csv_path.with_suffix(""), stored, meta or {}, MEASURING_SETTINGS)
            refuse_another_cpu(csv_path.with_suffix(""), stored, device)
            if not csv_path.exists():
                atomic_write_text(csv_path, ",".join(COLUMNS) + "\n")
            repair_last_line(csv_path, lambda line: whole_csv_row(line, len(COLUMNS)))
            table = cls.load(csv_path)
            if meta:
                table.meta.update({k: v for k, v in meta.items() if k not in ("created",)})
            table.meta["device"] = {**device.to_dict(), "fingerprint": table.meta["device"].get("fingerprint", {})}
            note_resume(csv_path.with_suffix(""), table.meta, device.to_dict()["fingerprint"])
            table._write_meta_file()
        else:
            table = cls(device, {**(meta or {})}, csv_path.with_suffix(""))
            table.meta.update({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": csv_path.stem,
                               "device": device.to_dict(), "created": now()})
            table.meta.update(meta or {})
            table._write_meta_file()
            atomic_write_text(csv_path, ",".join(COLUMNS) + "\n")
        return table

    def __enter__(self) -> "DeviceTable":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop writing: close the CSV and release the table's lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---- writing ------------------------------------------------------------------------
    def append(self, spec: OpSpec, measurement: Measurement | None = None, *, error: str | None = None,
               extra: Mapping[str, Any] | None = None) -> Row:
        """Add a row (a measurement, or an error message) and flush it to disk now."""
        if (measurement is None) == (error is None):
            raise ValueError("append needs exactly one of measurement or error")
        if spec.key in self._rows:
            raise TableError(f"{self.name}: {spec.key} is already in the table")
        extra = dict(extra or {})
        if error is not None:
            extra["error"] = error.replace("\n", " ")
        if measurement is not None:  # in memory as on disk: a reloaded table is the same table
            measurement = replace(measurement, **{f: float(f"{getattr(measurement, f):.6g}") for f in STAT_FIELDS})
        row = Row(spec, "ok" if error is None else "error", measurement, extra, now())
        if self._fd is not None:
            line = _format_row(row.spec, row.status, row.measurement, row.extra, row.measured_at).encode()
            append_line(self._fd, line, table_paths(self.path)[0])  # one write of a whole line, or nothing
        self._rows[spec.key] = row
        return row

    def write_meta(self) -> None:
        """Replace NAME.json by `meta`."""
        if self.path is None:
            return
        with self._locked():
            self._write_meta_file()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The table's lock held around a write: kept when open for writing, else taken meanwhile."""
        if self._lock is not None:
            yield
            return
        with TableLock.acquire(self.path):
            yield

    def _write_meta_file(self) -> None:
        atomic_write_text(table_paths(self.path)[1], json.dumps(self.meta, indent=2, sort_keys=True, default=str) + "\n")

    def update_meta(self, **entries: Any) -> None:
        self.meta.update(entries)
        self.write_meta()

    # ---- views --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name if self.path else self.device.name

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"DeviceTable({self.name!r}, {self.device.name}, {len(self)} rows)"

    def __contains__(self, spec: OpSpec | str) -> bool:
        return (spec.key if isinstance(spec, OpSpec) else spec) in self._rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows.values())

    def get(self, spec: OpSpec | str) -> Row | None:
        return self._rows.get(spec.key if isinstance(spec, OpSpec) else spec)

    def latency_ms(self, spec: OpSpec) -> float | None:
        """Median latency of a measured configuration, or None when absent or failed."""
        row = self.get(spec)
        return row.measurement.median_ms if row is not None and row.ok else None

    def rows(self, status: str | None = None) -> list[Row]:
        return [r for r in self._rows.values() if status is None or r.status == status]

    def to_pandas(self):
        import pandas as pd

        records = []
        for r in self._rows.values():
            rec = {"key": r.spec.key, "op": r.spec.op, "dtype": r.spec.dtype,
                   "input_shape": "x".join(map(str, r.spec.input_shape)), "status": r.status}
            rec.update(r.measurement.to_dict() if r.measurement else {})
            rec.update({"macs": r.spec.macs, "bytes_moved": r.spec.bytes_moved, **dict(r.spec.attrs)})
            rec.update({f"extra.{k}": v for k, v in r.extra.items()})
            records.append(rec)
        return pd.DataFrame.from_records(records)

    def _csv_text(self) -> str:
        """The whole CSV of this table's rows, header first."""
        return "".join([",".join(COLUMNS) + "\n"] + [_format_row(r.spec, r.status, r.measurement, r.extra, r.measured_at)
                                                      for r in self._rows.values()])

    def keep_quieter(self, other: "DeviceTable", statistic: str = "median_ms") -> int:
        """Replace each row of this open table by `other`'s measurement of the same op where that
        is lower by `statistic` (a second pass: other work only ever slows a measurement down), the
        row's extra noting ``passes``; the CSV is rewritten atomically. Returns how many were replaced."""
        replaced = 0
        for key, row in list(self._rows.items()):
            again = other._rows.get(key)
            if not (row.ok and again is not None and again.ok):
                continue
            better = getattr(again.measurement, statistic) < getattr(row.measurement, statistic)
            chosen = again if better else row
            self._rows[key] = Row(row.spec, "ok", chosen.measurement, {**row.extra, **chosen.extra, "passes": 2},
                                  chosen.measured_at)
            replaced += better
        self._rewrite_csv()
        return replaced

    def remeasured(self, new: Mapping[str, tuple[Measurement, Mapping[str, Any]]],
                   still_failing: Mapping[str, str] | None = None) -> None:
        """Replace the stored rows of these keys by new measurements (``key -> (measurement, extra)``),
        each row's extra keeping what it replaced under ``replaced`` (its median and when it was
        measured); the CSV is rewritten atomically. For rows whose single-op model was wrong. A failed
        row in `still_failing` (``key -> error``) failed again: it takes the new error, the old one
        kept under ``replaced`` (a measured row that fails now keeps its measurement)."""
        for key, error in (still_failing or {}).items():
            old = self._rows[key]
            if not old.ok and old.error != error:
                was = {"error": old.error, "measured_at": old.measured_at}
                self._rows[key] = Row(old.spec, old.status, None, {**old.extra, "error": error, "replaced": was}, now())
        for key, (m, extra) in new.items():
            old = self._rows.get(key)
            if old is None:
                raise KeyError(f"{self.name}: no row {key!r} to replace")
            was = {"median_ms": old.measurement.median_ms if old.measurement else None, "status": old.status,
                   "measured_at": old.measured_at}
            self._rows[key] = Row(old.spec, "ok", m, {**extra, "replaced": was}, now())
        self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        if self.path is not None:
            csv_path, _ = table_paths(self.path)
            with self._locked():
                atomic_write_text(csv_path, self._csv_text())
            if self._fd is not None:  # the file was replaced: append to the new one
                os.close(self._fd)
                self._fd = open_append(csv_path)

    def save(self, path: str | os.PathLike) -> "DeviceTable":
        """Write this table to new files (used for tables built in memory)."""
        csv_path, _ = table_paths(path)
        out = DeviceTable(self.device, {**self.meta, "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                                        "name": csv_path.stem, "device": self.device.to_dict()}, csv_path.with_suffix(""))
        out.meta.setdefault("created", now())
        out._rows = dict(self._rows)
        make_parent(csv_path)
        with TableLock.acquire(csv_path.with_suffix("")) as lock:
            out._lock = lock
            atomic_write_text(csv_path, self._csv_text())
            out.write_meta()
        out._lock = None
        return out


def quietest(passes: Sequence[DeviceTable], statistic: str = "median_ms") -> DeviceTable:
    """One table from several passes over the same configurations on one device: each row is the
    pass with the lowest `statistic` (a `Measurement` field: other work on a shared machine only
    ever slows a measurement down; on this project's 2-core machine a LiteRT row's two passes were
    >5% apart for 43% of rows); a configuration that failed in every pass keeps its first error.
    In memory: `save` writes it."""
    if not passes:
        raise ValueError("quietest needs at least one table")
    names = {t.device.name for t in passes}
    if len(names) > 1:
        raise TableError(f"passes of different devices ({', '.join(sorted(names))}) cannot be merged")
    out = DeviceTable(passes[0].device, {**passes[0].meta, "passes": len(passes)})
    for table in passes:
        for row in table:
            have = out._rows.get(row.spec.key)
            if have is None or (row.ok and (not have.ok or getattr(row.measurement, statistic) < getattr(have.measurement, statistic))):
                out._rows[row.spec.key] = row
    return out


def read_meta(json_path: Path, schema: str = SCHEMA, version: int = SCHEMA_VERSION, what: str = "device table") -> dict[str, Any]:
    """Read a table's JSON metadata and check its schema name and version."""
    try:
        meta = json.loads(read_text(json_path))
    except json.JSONDecodeError as exc:
        raise TableError(f"{json_path}: not valid JSON (line {exc.lineno}: {exc.msg}); restore it from a copy, or pass --fresh to a profile command to measure anew (the files are moved aside, not deleted)") from exc
    if not isinstance(meta, dict) or meta.get("schema") != schema:
        kinds = {"hwlat.device_table": "a device table (op rows: `hwlat table ...`, `predict --table`)",
                 "hwlat.arch_table": "an arch table (whole architectures: `profile archs --out`, `adapt fit "
                                     "--measurements`, `predict --archs`)"}
        found = kinds.get(meta.get("schema")) if isinstance(meta, dict) and isinstance(meta.get("schema"), str) else None
        raise TableError(f"{json_path}: not a hwlat {what} (expected \"schema\": \"{schema}\")"
                         + (f"; it is {found}" if found else ""))
    found = meta.get("schema_version")
    if not isinstance(found, int) or isinstance(found, bool):
        raise TableError(f"{json_path}: schema_version missing or not an integer")
    known = ", ".join(map(str, range(1, version + 1)))
    if found > version:
        raise SchemaVersionError(f"{json_path}: schema version {found} is newer than this hwlat reads ({known}); upgrade hwlat")
    if found < 1:
        raise SchemaVersionError(f"{json_path}: schema version {found} is not a {what} version; this hwlat reads "
                                 f"{known}: restore the file or re-profile")
    protocol = meta.get("protocol")
    if isinstance(protocol, dict) and "clock" not in protocol:
        # written before the clock was recorded (--clock): its rows were timed by the runtime's own clock
        protocol["clock"] = "wall"
    return meta


# The kind each entry of a table's metadata must have where present, for the code that reads it: "a.b"
# is entry b of object a, "a.*" each value of object (or item of list) a; "or" joins kinds, a quoted
# kind is that string. `META_SHAPE`: what loading a table and predicting, showing or validating it
# read (`DeviceTable.load` refuses a table against it); `RESUME_SHAPE`: what resuming a table to
# measure more reads besides (`DeviceTable.open`). Entries not listed are records nothing reads.
META_SHAPE: dict[str, str] = {
    "device": "an object",
    **{f"device.{k}": "a string" for k in ("name", "hardware", "runtime", "precision")},
    "device.settings": "an object", "device.settings.*": "a string or a number or true/false",
    "device.settings.threads": "an integer",
    "device.fingerprint": "an object or null",
    "device.fingerprint.cpu_model": "a string or null", "device.fingerprint.cpu_id": "a string or null",
    "device.fingerprint.cpu_mhz": "a number or null",
    "device.fingerprint.flags": "a list or null", "device.fingerprint.flags.*": "a string",
    "device.fingerprint.packages": "an object or null", "device.fingerprint.packages.*": "a string",
    "protocol": "an object or null", "protocol.clock": "'wall' or 'cpu'",
    "fusion": "an object or null",
    "fusion.fused": "a list", "fusion.fused.*": "a string",
    "fusion.patterns": "an object", "fusion.patterns.*": "an object",
    "fusion.call_overhead_ms": "a number or null",
    "fusion.duplicates": "an object or null", "fusion.duplicates.shared": "true/false",
    "fusion.weights_cache": "an object or null", "fusion.weights_cache.cached_mb": "a number or null",
    "lut_calibration": "an object or null",
    **{f"lut_calibration.{k}": "a number" for k in ("scale", "per_kernel_ms", "constant_ms", "per_weight_mb_ms",
                                                   "cached_weights_mb")},
    **{f"lut_calibration.{k}": "a number or null" for k in ("mape_before", "mape_after", "ridge")},
    "lut_calibration.n_models": "an integer", "lut_calibration.counts_activations": "true/false",
    "lut_calibration.statistic": "a string",
    "lut_calibration.by_type": "an object or null", "lut_calibration.by_type.*": "a [scale, ms] pair",
    "regressors": "an object or null", "regressors.families": "a list or null",
    "regressors.statistic": "a string", "regressors.rows_digest": "a string", "regressors.layout_reorders": "true/false",
    "self_score": "an object or null",
    **{f"self_score.{k}": "an integer" for k in ("networks", "within_10")},
    "self_score.partial": "an integer or null", "self_score.passes_compared": "an integer or null",
    "self_score.mape": "a number",
    **{f"self_score.{k}": "a number or null" for k in ("passes_apart_5", "passes_apart_10")},
    "self_score.ratio_range": "a [low, high] pair or null",
    "self_score.ratios": "an object or null", "self_score.ratios.*": "a number",
    "profile_device": "an object or null",
    # the protocol `hwlat predict` times the table's networks again with (`hwlat.profilers.protocol.Protocol`)
    "profile_device.protocol": "an object or null", "profile_device.protocol.clock": "'wall' or 'cpu'",
    **{f"profile_device.protocol.{k}": "an integer" for k in ("warmup_runs", "min_runs", "max_runs", "block_runs",
                                                             "remeasure")},
    **{f"profile_device.protocol.{k}": "a number" for k in ("warmup_s", "target_rel_iqr", "target_rel_se",
                                                           "max_time_s", "noise_threshold")},
    "profile_device.recalibrated": "an object or null", "profile_device.recalibrated.since": "a string or null",
}
# Entries that, where given (not null), need a sibling entry beside them: what reads the one reads the other.
META_NEEDS: dict[str, str] = {"self_score.networks": "within_10", "self_score.ratio_range": "mape",
                              "self_score.passes_apart_10": "passes_compared"}
RESUME_SHAPE: dict[str, str] = {
    "resumed": "a list", "fingerprints_on_resume": "a list", "adaptive_rounds": "a list or null",
    "sampling": "an object or null",
    "profile_device.stages": "an object or null", "profile_device.stages.*": "an object",
    "profile_device.targets": "a list", "profile_device.targets.*": "a string",
    "profile_device.growing": "a list or null", "profile_device.runs": "a list",
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(_is_number, v))


_KINDS = {"an object": lambda v: isinstance(v, dict), "a list": lambda v: isinstance(v, list),
          "a string": lambda v: isinstance(v, str), "a number": _is_number,
          "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "true/false": lambda v: isinstance(v, bool), "null": lambda v: v is None,
          "a [scale, ms] pair": _is_pair, "a [low, high] pair": _is_pair}


def _entries(node: Any, parts: Sequence[str], name: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of each entry at `parts` under `node`; none where a parent is absent or
    not an object or list (the parent's own check names it)."""
    if not parts:
        yield name, node
        return
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        items = list(node.items()) if head == "*" else [(head, node[head])] if head in node else []
        for key, value in items:
            yield from _entries(value, rest, f"{name}.{key}" if name else str(key))
    elif isinstance(node, list) and head == "*":
        for i, value in enumerate(node):
            yield from _entries(value, rest, f"{name}[{i}]")


def meta_problems(meta: Mapping[str, Any], shape: Mapping[str, str] = META_SHAPE) -> list[str]:
    """Each entry of `meta` of another kind than `shape` gives it (parents first), as
    ``lut_calibration.constant_ms is 'oops', expected a number``; then each given without a sibling
    entry it needs (`META_NEEDS`)."""
    out = []
    for path, kinds in shape.items():
        alternatives = kinds.split(" or ")
        for name, value in _entries(meta, path.split(".")):
            if not any(value == k.strip("'") if k.startswith("'") else _KINDS[k](value) for k in alternatives):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                out.append(f"{name} is {json.dumps(value) if value is None or isinstance(value, bool) else shown}, "
                           f"expected {kinds}")
    for path, sibling in META_NEEDS.items():
        parent, _, key = path.rpartition(".")
        for name, node in _entries(meta, parent.split(".")):
            if isinstance(node, dict) and node.get(key) is not None and sibling not in node:
                out.append(f"{name}.{key} is given without {name}.{sibling}")
    return out


def check_meta(json_path: Path, meta: Mapping[str, Any], shape: Mapping[str, str] = META_SHAPE) -> None:
    """A `TableError` naming the file and the first entry of `meta` that `shape` refuses, and how to mend it."""
    problems = meta_problems(meta, shape)
    if problems:
        raise TableError(f"{json_path}: {problems[0]}; {mend_meta_hint(json_path, meta, problems[0])}")


# How a device entry reads as the flags of `hwlat profile` that measure it again besides --runtime,
# --precision and --threads (``--opt-level basic``, a board's ``--board qemu:<machine>``): set by the
# runtimes' registry (`hwlat.profilers.runtimes`), which this package may not import; None where it cannot say.
device_flags_hook: Callable[[Mapping[str, Any]], list[str] | None] | None = None


def mend_meta_hint(json_path: Path, meta: Mapping[str, Any], problem: str) -> str:
    """What to do about a damaged metadata entry (`problem`, as `meta_problems` words it): restore the
    file, or (an entry but the device's) delete the entry and let `hwlat profile device` make it again."""
    top = problem.split(" ", 1)[0].split(".", 1)[0].split("[", 1)[0]
    if top == "device":
        return (f"restore {json_path.name} from a copy (its \"device\" entry records what was measured and on "
                "which machine)")
    device = meta.get("device") if isinstance(meta.get("device"), dict) else {}
    flags = [f"--runtime {device['runtime']}" if "runtime" in device else "..."]
    if device.get("precision", "fp32") != "fp32":
        flags.append(f"--precision {device['precision']}")
    settings = dict(device.get("settings") or {})
    threads = settings.pop("threads", 1)
    if threads != 1:
        flags.append(f"--threads {threads}")
    named = device_flags_hook(device) if device_flags_hook is not None else None
    if named is None:  # a runtime's settings that name the device as flags: --opt-level basic, --xnnpack off
        named = [f"--{k.replace('_', '-')} {('on' if v else 'off') if isinstance(v, bool) else v}"
                 for k, v in settings.items()]
    flags += named
    stem = json_path.with_suffix("")
    return (f"restore {json_path.name} from a copy, or delete its \"{top}\" entry and run `hwlat profile device "
            f"{' '.join(flags)} --out {stem}` to make it again (the rows are kept)")


def read_text(path: Path) -> str:
    """A table file's text; a `TableError` naming the file where it is not UTF-8 (a flipped byte)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text (byte {exc.start}); restore it from a copy or re-profile") from None


def _read_rows(csv_path: Path) -> Iterator[Row]:
    text = read_text(csv_path)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n") and not whole_csv_row(lines[-1], len(COLUMNS)):
        log.warning("%s: ignoring a partial last row (line %d) left by an interrupted run", csv_path, len(lines))
        lines = lines[:-1]
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise TableError(f"{csv_path}: empty file; expected the header {','.join(COLUMNS)}") from None
    if tuple(header) != COLUMNS:
        raise TableError(f"{csv_path}, line 1: header is {','.join(header)!r}; expected {','.join(COLUMNS)!r}")
    seen: dict[str, int] = {}
    for lineno, values in enumerate(reader, start=2):
        if not values:
            continue
        where = f"{csv_path}, line {lineno}"
        if len(values) != len(COLUMNS):
            raise TableError(f"{where}: {len(values)} fields, expected {len(COLUMNS)}; fix or delete the row to re-measure it")
        rec = dict(zip(COLUMNS, values))
        try:
            spec = OpSpec.from_key(rec["key"])
        except OpSpecError as exc:
            raise TableError(f"{where}: {exc}") from None
        if (rec["op"], rec["dtype"], rec["input_shape"]) != (spec.op, spec.dtype, "x".join(map(str, spec.input_shape))):
            raise TableError(f"{where}: op/dtype/input_shape columns disagree with key {spec.key!r}")
        if rec["key"] in seen:
            raise TableError(f"{where}: key {rec['key']!r} repeats line {seen[rec['key']]}; delete one of them")
        seen[rec["key"]] = lineno
        if rec["status"] not in STATUSES:
            raise TableError(f"{where}: status {rec['status']!r}; expected one of {', '.join(STATUSES)}")
        try:
            extra = json.loads(rec["extra"]) if rec["extra"] else {}
        except json.JSONDecodeError:
            raise TableError(f"{where}: extra column is not valid JSON: {rec['extra']!r}") from None
        if not isinstance(extra, dict):
            raise TableError(f"{where}: extra column is {rec['extra']!r}, not a JSON object ({{...}}) or empty")
        m = None
        if rec["status"] == "ok":
            stats = _statistics(rec, where)
            try:
                n = int(rec["n"])
            except ValueError:
                raise TableError(f"{where}: n is {rec['n']!r}, not a count of timed runs; fix or delete the row to "
                                 "re-measure it") from None
            if rec["noisy"] not in ("true", "false"):
                raise TableError(f"{where}: noisy is {rec['noisy']!r}; expected true or false")
            if n < 1 or stats["median_ms"] <= 0:
                raise TableError(f"{where}: statistics out of range (median must be > 0, n >= 1, none negative)")
            if not stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]:
                raise TableError(f"{where}: p10 <= median <= p90 does not hold; the row was edited or corrupted")
            m = Measurement(**stats, n=n, noisy=rec["noisy"] == "true")
        yield Row(spec, rec["status"], m, extra, rec["measured_at"])


def _statistics(rec: Mapping[str, str], where: str) -> dict[str, float]:
    """The latency statistics of an ``ok`` row: each a finite number of ms, 0 or more; else a
    `TableError` naming the row, the column and the value (``inf`` and ``nan`` are not latencies)."""
    stats = {}
    for f in STAT_FIELDS:
        try:
            value = float(rec[f])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise TableError(f"{where}: {f} is {rec[f]!r}, not a finite latency of 0 ms or more; fix or delete the "
                             "row to re-measure it")
        stats[f] = value
    return stats


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
