"""A new device from a few measurements: which architectures to measure (`suggest`), the
measurements as a user has them (`read_measurements`), the shipped meta-trained predictor adapted
to them (`fit`), saved and loaded (`save`, `load`). `hwlat adapt suggest|fit` and
``hwlat predict --predictor`` are thin layers over these.

    archs = suggest("nb201", 20)                           # measure these on the device
    pred = fit("nb201", "measured.csv")                    # an arch table or any CSV: key + ms
    save(pred, "my_board"); pred = load("my_board", "nb201")
    ms, sigma = predict_with_sigma(pred, candidates)
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwlat.device_tables.archtable import PARTIAL_ROW, arch_table_paths, partial_last_row
from hwlat.device_tables.errors import HwlatError
from hwlat.nas.arch_predictors import EXHAUSTIVE_MAX, FeaturePredictor, PredictorSpaceError, load_arch_predictor, needs_adaptation
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import ArchError, Space

log = logging.getLogger(__name__)

# Fewest measurements an adaptation takes: its learners' leave-one-out choice needs three.
MIN_MEASUREMENTS = 3
# Longest latency taken as a measurement of one forward pass (about 17 minutes): a larger number is
# a unit slip or a placeholder, and would overflow the adapted predictor's numbers.
MAX_LATENCY_MS = 1e6
# Units a latency column's name may end in ("latency_s", "time (us)") that are not ms: read as ms, its
# numbers would be 1000x off, so such a column is refused.
OTHER_UNITS = {"s": "seconds", "sec": "seconds", "secs": "seconds", "seconds": "seconds", "us": "microseconds",
               "µs": "microseconds", "μs": "microseconds", "usec": "microseconds", "ns": "nanoseconds"}
# Candidates `suggest` chooses from in a space too large to enumerate (a seeded sample).
SUGGEST_POOL = 5000


class MeasurementsError(HwlatError):
    """A measurement file that cannot adapt a predictor (unknown or duplicate architectures, cells
    that are not latencies, too few rows, an ambiguous latency column)."""


def _space(space: Space | str) -> Space:
    return get_space(space) if isinstance(space, str) else space


def suggest(space: Space | str, n: int, seed: int = 0) -> list[Any]:
    """The `n` architectures most worth measuring on a new device, most informative first.

    A greedy D-optimal design over what the meta-trained predictor adapts with: the architectures'
    factors (their latency on every training device, compressed) and their structure counts, so
    the measurements pin down as much of the adaptation as `n` can. It reads only the training
    devices, never a test device. The candidates are every architecture of a small space (NB201),
    else `SUGGEST_POOL` sampled with `seed`; the choice is deterministic for a seed and never
    repeats an architecture. The first ten of NB201 are the predictor's reference architectures."""
    sp = _space(space)
    n = suggest_count(n)
    pred = load_arch_predictor("pretrained", sp)
    if sp.size is not None and sp.size <= EXHAUSTIVE_MAX:
        pool = list(sp.enumerate())
    else:
        pool = _distinct(sp, sp.sample(SUGGEST_POOL, seed))
    if n > len(pool):
        raise HwlatError(f"{n} architectures asked but the {sp.name} candidates number {len(pool)}")
    rows = pred.predictor.choose_references(pred.matrix(pool), n)
    return [pool[int(i)] for i in rows]


def suggest_count(n: Any) -> int:
    """How many architectures `suggest` (`hwlat adapt suggest -n`, `hwlat.suggest`) is asked for: a whole
    number of at least `MIN_MEASUREMENTS`, since fewer measurements cannot be fitted; a `HwlatError` otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise HwlatError(f"{n!r} architectures to suggest: must be a whole number")
    if n < MIN_MEASUREMENTS:
        raise HwlatError(f"{n} architecture(s) to suggest: `hwlat adapt fit` needs at least {MIN_MEASUREMENTS} "
                         f"measurements; suggest {MIN_MEASUREMENTS} or more (20 recommended)")
    return int(n)


def _distinct(sp: Space, archs: Sequence[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for a in archs:
        seen.setdefault(sp.key(a), a)
    return list(seen.values())


@dataclass
class Measurements:
    """Measured latencies of architectures on one device: `archs` and `ms` in file order."""

    archs: list[Any]
    ms: np.ndarray
    device: str
    path: Path | None  # None: given in Python (`measurements`)
    empty: int = 0  # rows with an empty latency cell (failed or not yet measured), left out


def latency_problem(value: float) -> str | None:
    """Why `value` is not a measured latency in ms, or None when it is one."""
    if not math.isfinite(value) or value <= 0:
        return "not a latency in ms (a positive number)"
    if value > MAX_LATENCY_MS:
        return f"over {MAX_LATENCY_MS:g} ms, not one forward pass in ms (seconds or microseconds?)"
    return None


def measurements_of(space: Space | str, archs: Sequence[Any], ms: Sequence[float], device: str = "this device",
                 min_rows: int = MIN_MEASUREMENTS) -> Measurements:
    """`Measurements` from architectures (objects or keys) and their latencies in ms, checked as
    `read_measurements` checks a file: as many latencies as architectures, each a positive number,
    no architecture twice, at least `min_rows`; anything else a `MeasurementsError` naming it."""
    sp = _space(space)
    archs, values = list(archs), [_number(v) for v in ms]
    if len(archs) != len(values):
        raise MeasurementsError(f"{len(archs)} architectures but {len(values)} latencies; give one latency per "
                                "architecture, in the same order")
    parsed: list[Any] = []
    first: dict[str, int] = {}
    for i, (a, v) in enumerate(zip(archs, values)):
        try:
            arch = sp.arch(a)
        except (ArchError, ValueError) as exc:
            raise MeasurementsError(f"architecture {i} ({a!r}) is not a {sp.name} architecture ({exc})") from None
        k = sp.key(arch)
        if k in first:
            raise MeasurementsError(f"architecture {i} ({k}) is also architecture {first[k]}; give each once (the "
                                    "median of its measurements)")
        first[k] = i
        problem = latency_problem(v) if isinstance(v, float) else "not a latency in ms (a positive number)"
        if problem:
            raise MeasurementsError(f"latency {i} ({v!r} for {k}) is {problem}")
        parsed.append(arch)
    if len(parsed) < min_rows:
        raise MeasurementsError(f"{len(parsed)} measured {sp.name} architecture(s); adapting needs at least {min_rows} "
                                f"(20 recommended: `hwlat.suggest({sp.name!r}, 20)`, then measure them)")
    return Measurements(parsed, np.asarray(values, dtype=float), device, None)


def _number(value: Any) -> Any:
    """`value` as a float, or as given when it is not a number (named so in the refusal)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _csv_path(path: str | os.PathLike) -> Path:
    """The CSV of measurements at `path`: the file itself, or the latencies of the arch table that
    `path` names by its stem, NAME.json or NAME.stats.csv, as `hwlat profile archs --out` writes them."""
    p = Path(path)
    if not p.name or p.is_dir() or (p.is_file() and p.suffix != ".json" and not p.name.endswith(".stats.csv")):
        return p  # (a folder such as '.', '..' or '/': named by the reader as one)
    table_csv = arch_table_paths(p)[0]
    return table_csv if table_csv.is_file() else p


def read_measurements(path: str | os.PathLike, space: Space | str, device: str | None = None,
                      min_rows: int = MIN_MEASUREMENTS) -> Measurements:
    """Measured latencies from an arch table (`hwlat profile archs --out`) or any CSV whose header
    names one of the space's key columns and latency columns in ms. `device` picks the latency
    column; it may be left out when there is one. Empty cells are skipped (failed or not measured);
    unknown or repeated architectures, cells that are not positive numbers and fewer than
    `min_rows` measurements are a `MeasurementsError` naming the line."""
    sp = _space(space)
    p = _csv_path(path)
    if p.is_dir():
        raise MeasurementsError(f"{p} is a folder; give the arch table's CSV file (`hwlat profile archs --out` writes "
                                "NAME.csv), not a folder")
    if not p.is_file():
        raise MeasurementsError(f"{p}: no such file; give the arch table `hwlat profile archs --out` wrote, or a CSV "
                                f"with the column {sp.key_column} and a latency column in ms")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # -sig: a spreadsheet's byte-order mark
    except UnicodeDecodeError as exc:
        raise MeasurementsError(f"{p}: not UTF-8 text (byte {exc.start}); expected a CSV of measurements") from None
    partial = partial_last_row(p)  # a latency cut short by a crash would still read as a number
    if partial is not None:
        log.warning(PARTIAL_ROW, p, partial)
        lines = lines[:-1]
    numbered = [(n, row) for n, row in enumerate(csv.reader(lines), start=1) if any(c.strip() for c in row)]
    if not numbered:
        raise MeasurementsError(f"{p} is empty; expected a header ({sp.key_column},<device>) and measured rows")
    header = [c.strip() for c in numbered[0][1]]
    twice = sorted({c for c in header if c and header.count(c) > 1})
    if twice:
        raise MeasurementsError(f"{p}: the header names {', '.join(map(repr, twice))} more than once; rename the columns "
                                "so that each name is given once")
    keys = [c for c in (sp.key_column, *sp.key_columns) if c in header and not (c == "help_row" and not sp.native_indices)]
    keys = list(dict.fromkeys(keys))
    if not keys:
        sep = next((f"{name} ({c!r})" for c, name in ((";", "semicolons"), ("\t", "tabs")) if len(header) == 1
                    and c in header[0]), None)
        what = (f"its columns are separated by {sep}; save it with commas" if sep else
                f"the header ({', '.join(header[:6])}) names no key column of the {sp.name} space")
        raise MeasurementsError(f"{p}: {what}; expected one of {', '.join(c for c in sp.key_columns if c != 'help_row')}")
    latency_cols = [c for c in header if c and c not in sp.key_columns]
    if device is None:
        if len(latency_cols) != 1:
            what = (f"several latency columns ({', '.join(latency_cols[:6])}{'...' if len(latency_cols) > 6 else ''}); "
                    "choose one with --device (device= in Python)" if latency_cols else "no latency column besides the key columns")
            raise MeasurementsError(f"{p}: {what}")
        device = latency_cols[0]
    elif device not in latency_cols:
        raise MeasurementsError(f"{p}: no latency column {device!r}; its columns: {', '.join(latency_cols) or 'none'}")
    name = device.lower()
    unit = re.search(r"(?:^|[\s_(\[])([a-zµμ]+)\W*$", name)
    # a unit after a word for a time (latency_s, time (us)) or alone (us), not a device's name (galaxy_s)
    if unit and unit.group(1) in OTHER_UNITS and (not name[:unit.start(1)].strip(" _([") or re.search(
            r"lat|time|dur|elapsed|median|mean|avg", name[:unit.start(1)])):
        raise MeasurementsError(f"{p}: column {device!r} holds {OTHER_UNITS[unit.group(1)]} by its name, and latencies are "
                                "read in ms; convert its cells to ms and rename the column (e.g. latency_ms)")
    col = header.index(device)
    key_idx = [header.index(k) for k in keys]
    archs: list[Any] = []
    ms: list[float] = []
    first_line: dict[str, int] = {}
    empty = 0
    for n, row in numbered[1:]:
        cells = [c.strip() for c in row]
        given = [(keys[j], cells[i]) for j, i in enumerate(key_idx) if i < len(cells) and cells[i]]
        if not given:
            raise MeasurementsError(f"{p}, line {n}: no architecture key (columns {', '.join(keys)} are empty)")
        named: dict[str, tuple[str, str, Any]] = {}  # architecture key -> (column, cell, architecture)
        for column, key in given:
            try:
                arch = sp.parse(int(key) if key.isdigit() and sp.native_indices else key)
            except (ArchError, ValueError) as exc:
                raise MeasurementsError(f"{p}, line {n}: {key!r} is not a {sp.name} architecture ({exc})") from None
            named.setdefault(sp.key(arch), (column, key, arch))
        if len(named) > 1:
            (c1, v1, _), (c2, v2, _) = list(named.values())[:2]
            raise MeasurementsError(f"{p}, line {n}: its key columns name different architectures ({c1} {v1!r}, {c2} "
                                    f"{v2!r}); fix one, or keep a single key column")
        k, (_, key, arch) = next(iter(named.items()))
        if k in first_line:
            raise MeasurementsError(f"{p}, line {n}: architecture {key} is also on line {first_line[k]}; keep one row "
                                    "per architecture (the median of its measurements)")
        first_line[k] = n
        text = cells[col] if col < len(cells) else ""
        if not text:
            empty += 1
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        problem = latency_problem(value)
        if problem:
            raise MeasurementsError(f"{p}, line {n}: {device} = {text!r} for architecture {key} is {problem}; fix it, or "
                                    "empty the cell to leave the row out")
        archs.append(arch)
        ms.append(value)
    if len(ms) < min_rows:
        raise MeasurementsError(
            f"{p}: {len(ms)} measured {sp.name} architecture(s) in column {device!r}"
            + (f" ({empty} row(s) with an empty latency left out)" if empty else "") + f"; adapting needs at least {min_rows} "
            f"(20 recommended: `hwlat adapt suggest --space {sp.name} -n 20 --out FILE`, then measure them)")
    return Measurements(archs, np.asarray(ms, dtype=float), device, p, empty)


def fit(space: Space | str, measurements: str | os.PathLike | Measurements, device: str | None = None,
        predictor: Any = "pretrained") -> FeaturePredictor:
    """A few-shot predictor (the shipped meta-trained one by default) adapted to measurements (a file
    as `read_measurements` reads, or `Measurements`); its `info` records where they came from, for `save`."""
    from hwlat.nas.device_loop import adapt

    sp = _space(space)
    if isinstance(predictor, str) and predictor == "pretrained":
        predictor = load_arch_predictor(predictor, sp)  # a space without one is refused before the file is read
    m = measurements if isinstance(measurements, Measurements) else read_measurements(measurements, sp, device)
    if len(m.ms) and np.ptp(m.ms) == 0:  # fitted, it predicted 4.2 ms ± 0.0004 for every architecture
        log.warning("all %d measured latencies are %g ms: nothing to learn how architectures differ from, so every "
                    "prediction is that; check the latency column (%s)", len(m.ms), m.ms[0], m.path or "given in Python")
    pred = adapt(predictor, sp, m.archs, m.ms, min_rows=MIN_MEASUREMENTS)
    pred.name = f"{sp.name} transfer adapted to {m.device}"
    pred.info = {"space": sp.name, "device": m.device, "measurements": str(m.path or "given in Python"),
                 "n_measurements": len(m.ms),
                 "measured": {sp.key(a): float(v) for a, v in zip(m.archs, m.ms)}}
    return pred


def save(pred: FeaturePredictor, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write an adapted predictor as ``PATH.npz`` + ``PATH.json`` (arrays + JSON, no pickles)."""
    from hwlat.device_tables.files import make_output, make_parent, writing
    from hwlat import __version__
    from hwlat.predictors.io import paths, save as save_file

    if not isinstance(pred, FeaturePredictor):  # a device table is a file already; other predictors have no format
        raise TypeError(f"save_predictor writes a predictor adapted to a device (`hwlat.adapt`, `hwlat.fit`), not a "
                        f"{type(pred).__name__}" + ("; a device table is saved as it is measured" if
                                                   type(pred).__name__ == "DeviceTable" else ""))
    if needs_adaptation(pred):
        raise PredictorSpaceError(f"the {pred.name} predictor is not adapted to a device; fit it first")
    info = {**getattr(pred, "info", {}), "space": pred.space.name, "hwlat_version": __version__}
    npz, js = paths(path)
    make_output(js, predictor=True)  # a PATH.json that is a table's metadata is refused
    make_parent(npz)
    with writing(npz):
        return save_file(pred.predictor, path, info=info)


def load(path: str | os.PathLike, space: Space | str) -> FeaturePredictor:
    """An adapted predictor saved by `save` (or `hwlat adapt fit`), for architectures of `space`; a
    `PredictorSpaceError` when it was saved for another space or never adapted."""
    from hwlat.predictors.io import read_info

    sp = _space(space)
    if str(path).startswith("lut:"):
        raise PredictorSpaceError(f"{path}: a device table, not an adapted predictor; predict with the table itself "
                                  f"(`hwlat predict --table {str(path)[4:]}`, hwlat.predict_archs, or "
                                  f"LatencyConstraint('{path}', budget, space='{sp.name}'))")
    _refuse_other_sources(str(path), sp)
    read_info(path)  # a missing or damaged file is named as `hwlat adapt fit --out` writes it
    pred = load_arch_predictor(path, sp)  # refuses a predictor saved for another space; its info is pred.info
    if needs_adaptation(pred):
        raise PredictorSpaceError(f"{path} is not adapted to a device (no measurements); adapt it with `hwlat adapt fit "
                                  f"--space {sp.name} --measurements FILE --out PATH`")
    return pred


def _refuse_other_sources(text: str, sp: Space) -> None:
    """Where no saved predictor is at `text` but it names another source of latencies, one line on
    what to do: 'pretrained' (the shipped meta-trained predictor, which knows no device until it is
    adapted) or a device table (predicted from with --table)."""
    from hwlat.predictors import pretrained
    from hwlat.predictors.io import paths

    npz, js = paths(text)
    if npz.is_file():  # a saved predictor's arrays: `read_info` and `load` say what is wrong with it, if anything
        return
    if text == "pretrained" and not js.is_file():
        if sp.name not in pretrained.available():
            raise PredictorSpaceError(f"no meta-trained predictor is shipped for {sp.name} (only for "
                                      f"{', '.join(pretrained.available())}); predict with a device table (--table)")
        raise PredictorSpaceError(
            f"'pretrained' is the shipped meta-trained {sp.name} predictor, which predicts no device until it is adapted "
            f"to one: measure a few architectures (`hwlat adapt suggest --space {sp.name} -n 20 --out FILE`), adapt it "
            f"(`hwlat adapt fit --space {sp.name} --measurements MEASURED.csv --out PATH`), then give --predictor PATH")
    if _is_device_table(text):
        raise PredictorSpaceError(f"{text} is a device table, not an adapted predictor: pass it as --table {text} "
                                  f"(`hwlat predict --table {text} --space {sp.name} --arch ...`; in Python, "
                                  "hwlat.predict_archs)")


def _is_device_table(text: str) -> bool:
    """Whether `text` names a device table (a shipped one, or a NAME.csv + NAME.json pair whose JSON has
    the device-table schema, `read_meta`'s check; a newer version of it still is one)."""
    from hwlat.device_tables.errors import SchemaVersionError
    from hwlat.device_tables.registry import resolve
    from hwlat.device_tables.table import read_meta, table_paths

    try:
        csv_path, json_path = table_paths(resolve(text, exact=True))
        return csv_path.is_file() and bool(read_meta(json_path))
    except SchemaVersionError:
        return True
    except (HwlatError, OSError):
        return False


def predict_with_sigma(pred: FeaturePredictor, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(ms, sigma_ms) of architectures: the prediction and its one-sigma uncertainty in ms
    (`FeaturePredictor.predict_with_sigma`; NaN where the predictor gives none)."""
    from hwlat.nas.arch_predictors import checked_latencies

    archs = [pred.space.as_arch(a) for a in archs]
    ms, sigma = pred.predict_with_sigma(archs)
    ms = checked_latencies(pred, archs, ms)
    return ms, np.full(len(ms), math.nan) if sigma is None else sigma
