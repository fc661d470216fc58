"""Profile whole architectures of a search space on a local runtime into an arch table.

`resolve_archs` turns an ``--archs`` spec into architectures (with their key columns);
`profile_archs` builds each one, times it with the runtime's whole-model timer, and appends the
median to an `ArchTableWriter` (resumable: architectures already in the table are skipped).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwlat.device_tables.archtable import ArchTableWriter, int_column, public_files
from hwlat.device_tables.device import Device
from hwlat.device_tables.errors import HwlatError, TableError
from hwlat.device_tables.measurement import Measurement
from hwlat.nas.spaces.base import ArchError, Space
from hwlat.profilers.base import Runtime
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)

ARCHS_FORM = ("indices 'a:b' (b excluded), 'i,j,k', 'random:N', 'all', or a file of keys (one per line, "
              "or a CSV with the key column); join several with '+'")


@dataclass
class ArchItem:
    """An architecture to measure and the key-column values to write with it."""

    arch: Any
    record: dict[str, Any]


@dataclass
class ArchRunResult:
    out: Path
    measured: int = 0
    skipped: int = 0
    failed: int = 0
    noisy: int = 0
    seconds: float = 0.0
    build_seconds: float = 0.0
    medians: list[float] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        return 60.0 * (self.measured + self.failed) / self.seconds if self.seconds > 0 else float("nan")


def _public_rows(space: Space, data_dir: str | None) -> list[dict[str, Any]]:
    """Key columns of the space's main public file (fbnet.csv / ofa.csv), in row order."""
    import pandas as pd

    try:
        path = next((p for p in public_files(space.arch_keys, data_dir) if p.stem == space.name), None)
    except TableError as exc:
        path, why = None, f" ({exc})"
    else:
        why = ""
    if path is None:
        raise ArchError(f"{space.name} architectures have no index here: numbers are rows of a public {space.name}.csv, "
                        f"and there is none{why}; give random:N, architecture keys (`hwlat space sample --space "
                        f"{space.name}` prints some) or a file of them")
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError:
        header = []
    lacks = [c for c in ("help_row", space.key_column) if c not in header]
    if lacks:
        have = f"its header ({', '.join(map(str, header[:6]))})" if header else "it is empty and"
        raise ArchError(f"{path}: not a public {space.name} file: {have} lacks {', '.join(lacks)}")
    df = pd.read_csv(path, usecols=[c for c in space.key_columns if c in header], dtype=str)
    return df.to_dict("records")


def resolve_archs(space: Space, spec: str, seed: int = 0, data_dir: str | None = None, flag: str = "--archs"
                  ) -> list[ArchItem]:
    """An ``--archs`` spec -> architectures, duplicates removed, in spec order.

    Indices are the space's own numbering where it has one (`Space.native_indices`: NAS-Bench-201
    indices), else row numbers (``help_row``) of its public CSV (``fbnet.csv``, ``ofa.csv``);
    ``random:N`` samples the space itself. Errors name the spec as given with `flag`.
    """
    items: list[ArchItem] = []
    rows: list[dict[str, Any]] | None = None

    def by_index(i: int) -> ArchItem:
        nonlocal rows
        if space.native_indices:
            arch = space.parse(i)
            return ArchItem(arch, space.key_record(arch))
        if rows is None:
            rows = _public_rows(space, data_dir)
        if not 0 <= i < len(rows):
            raise ArchError(f"{space.name} row {i} out of range; the public {space.name}.csv has rows 0..{len(rows) - 1}")
        arch = space.parse(rows[i][space.key_column])
        return ArchItem(arch, {**space.key_record(arch), "help_row": int(rows[i]["help_row"])})

    def count() -> int:
        nonlocal rows
        if space.native_indices:
            return int(space.size)
        if rows is None:
            rows = _public_rows(space, data_dir)
        return len(rows)

    try:  # one architecture key, else parts joined by '+' (not the "|+|" inside an NB201 arch string)
        space.parse(spec.strip())
        parts = [spec.strip()]
    except (ArchError, ValueError):
        parts = [p.strip() for p in re.split(r"(?<!\|)\+|\+(?!\|)", spec)]
    for part in filter(None, parts):
        if part == "all":
            items += [by_index(i) for i in range(count())]
        elif part.startswith("random:"):
            try:
                n = int(part.split(":", 1)[1])
            except ValueError:
                raise ArchError(f"{flag} {part!r}: expected random:N with N an integer") from None
            if n < 1:
                raise ArchError(f"{flag} {part!r}: random:N needs N of at least 1")
            items += [ArchItem(a, space.key_record(a)) for a in space.sample(n, seed)]
        elif Path(part).is_file():
            items += _from_file(space, Path(part))
        elif Path(part + ".csv").is_file():  # an arch table's stem, as `profile archs --out` takes it
            items += _from_file(space, Path(part + ".csv"))
        elif ":" in part:
            a, _, b = part.partition(":")
            try:
                lo, hi = int(a or 0), int(b) if b else count()
            except ValueError:
                raise ArchError(f"{flag} {part!r}: expected a range a:b of integers; forms: {ARCHS_FORM}") from None
            if lo < 0 or hi > count() or lo >= hi:
                raise ArchError(f"{flag} {part!r}: range out of 0..{count()} or empty")
            items += [by_index(i) for i in range(lo, hi)]
        elif all(t.strip().isdigit() for t in part.split(",")):
            items += [by_index(int(t)) for t in part.split(",")]
        else:
            try:
                arch = space.parse(part)
            except ArchError as exc:
                if Path(part).is_dir():
                    raise ArchError(f"{flag} {part!r}: a folder; give a file of architectures (an arch table's CSV or "
                                    "one key per line)") from None
                if Path(part).suffix.lower() in (".csv", ".txt") or os.sep in part:
                    raise ArchError(f"{flag} {part!r}: no such file") from None
                others = _spaces_of_key(space, part)
                if others:
                    raise ArchError(f"{flag} {part!r}: a key of the {' or '.join(others)} space, not of {space.name}; "
                                    f"give --space {others[0]}") from None
                raise ArchError(f"{flag} {part!r}: not a file, range, list or key ({exc}); forms: {ARCHS_FORM}") from None
            items.append(ArchItem(arch, space.key_record(arch)))
    seen: set[str] = set()
    unique = []
    for it in items:
        k = space.key(it.arch)
        if k not in seen:
            seen.add(k)
            unique.append(it)
    if not unique:
        raise ArchError(f"{flag} {spec!r} selects no architecture; forms: {ARCHS_FORM}")
    if len(unique) < len(items):  # a 100k-row file of 15,596 architectures said only "15596 predicted"
        log.warning("%s %s: %d repeated architecture(s) left out, each is taken once (%d architectures)", flag, spec,
                    len(items) - len(unique), len(unique))
    return unique


def _from_file(space: Space, path: Path) -> list[ArchItem]:
    try:
        text = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ArchError(f"{path}: not UTF-8 text (byte {exc.start}); expected architecture keys") from None
    lines = [ln.strip() for ln in text if ln.strip() and not ln.startswith("#")]
    header = lines[0].split(",") if lines else []  # any key column, as `hwlat adapt fit` reads them
    column = next((c for c in (space.key_column, *space.key_columns) if c in header and c != "help_row"), None)
    if column:
        import io

        import pandas as pd

        df = pd.read_csv(io.StringIO("\n".join(lines)), dtype=str)  # the lines read above: no '#' comment is a header
        # a row number saved as 3.0 (pandas writes a column with gaps as floats) is row 3
        help_rows = int_column(df["help_row"], "help_row", path) if "help_row" in df else None
        out = []
        for row, rec in enumerate(df.to_dict("records"), start=1):
            key = rec[column]
            try:
                if key != key:  # an empty cell, read as NaN
                    raise ArchError(f"no {column}")
                arch = space.parse(key)
            except ArchError as exc:
                raise ArchError(f"{path}, row {row} (after the header): {exc}") from None
            extra = {} if help_rows is None or pd.isna(help_rows[row - 1]) else {"help_row": int(help_rows[row - 1])}
            out.append(ArchItem(arch, {**space.key_record(arch), **extra}))
        return out
    if len(header) > 1 and not all(c.strip().isdigit() for c in header) and not _is_key(space, lines[0]):
        from hwlat.device_tables.archtable import matching_spaces
        from hwlat.nas.spaces import known_arch_keys

        others = [k.space for k in matching_spaces(header, known_arch_keys()) if k.space != space.name]
        of = f" (its columns are the {' or '.join(others)} space's)" if others else ""
        raise ArchError(f"{path}: the header ({', '.join(c.strip() for c in header[:6])}) names no key column of the "
                        f"{space.name} space{of}; expected one of "
                        f"{', '.join(c for c in space.key_columns if c != 'help_row')}")
    out = []
    for n, ln in enumerate(lines, start=1):
        try:
            arch = space.parse(ln)
        except ArchError as exc:
            raise ArchError(f"{path}, line {n}: {exc}") from None
        out.append(ArchItem(arch, space.key_record(arch)))
    return out


def _is_key(space: Space, text: str) -> bool:
    try:
        space.parse(text)
    except (ArchError, ValueError):
        return False
    return True


def _spaces_of_key(space: Space, text: str) -> list[str]:
    """The other registered spaces that read `text` as one of their architectures."""
    from hwlat.nas.spaces import get_space, spaces

    out = []
    for name in spaces():
        if name != space.name:
            try:
                if _is_key(get_space(name), text):
                    out.append(name)
            except HwlatError:  # a space that cannot be made here
                pass
    return out


def make_timer(runtime: Runtime, space: Space, protocol: Protocol,
               batch: int = 1) -> Callable[[Any], tuple[Measurement, float]]:
    """A function arch -> (measurement, build ms) timing whole architectures of `space` at `batch` on
    `runtime` (`Runtime.time_arch`). An architecture too large for the device's memory raises
    `OutOfDeviceMemoryError` (recorded as failed)."""
    from hwlat.profilers.runtimes import runtimes

    if batch < 1:
        raise ArchError(f"batch {batch}: needs at least 1")
    if not runtime.times_archs():
        able = [name for name, cls in runtimes().items() if cls.times_archs()]
        raise ArchError(f"runtime {runtime.name!r} cannot time whole architectures; choose from {', '.join(able)}")
    return lambda arch: runtime.time_arch(space, arch, protocol, batch)


def runtime_device(runtime: Runtime, hardware: str | None = None, batch: int = 1) -> Device:
    """The `Device` (name + fingerprint) of a runtime on this host, as its op tables name it; a batch
    other than 1 is part of the name (``.../batch=32/threads=1``), as in the public columns' ``_32``."""
    dev = runtime.device()
    if batch != 1:
        dev = Device.make(dev.hardware, dev.runtime, dev.precision, dev.fingerprint, **dict(dev.settings), batch=batch)
    if hardware:
        dev = Device(hardware, dev.runtime, dev.precision, dev.settings, dev.fingerprint)
    return dev


def profile_archs(space: Space, items: Sequence[ArchItem], out: str | os.PathLike, runtime: Runtime,
                  protocol: Protocol = Protocol(), device: Device | None = None,
                  progress: bool = True, order_seed: int | None = 0, meta: dict[str, Any] | None = None,
                  timer: Callable[[Any], tuple[Measurement, float]] | None = None, batch: int = 1,
                  fresh: bool = False, passes: int = 1) -> ArchRunResult:
    """Measure every architecture not yet in the table at `out` (one row flushed per arch).

    Archs are measured in a shuffled order (`order_seed`; None keeps the given order) so slow drift
    of the machine does not line up with index ranges. With `passes` > 1 every architecture is
    measured once per pass, pass after pass over all of them, and its row is the quietest pass (the
    lowest median: other work on a shared machine only slows a run down, and a slow spell lasts
    minutes); each pass is kept in ``NAME.passes.csv`` as it is measured. Build or run failures
    become empty cells with the error in the stats file. A table measured with other settings
    (protocol, runtime, batch, space options) is refused unless `fresh` starts it again (its files
    moved aside).
    """
    from tqdm import tqdm

    device = device or runtime_device(runtime, batch=batch)
    timer = timer or make_timer(runtime, space, protocol, batch=batch)
    run_meta = {"protocol": protocol.to_dict(), "runtime": runtime.name, "batch": batch,
                "runtime_settings": {"threads": runtime.threads, "precision": runtime.precision, **runtime.settings,
                                     **dict(device.settings)},
                "space_options": repr(space)}
    run_meta.update(meta or {})
    result = ArchRunResult(Path(out))
    runtime.check_protocol(protocol)  # before the table is made: a refused clock leaves no file behind
    with ArchTableWriter(out, space.arch_keys, device, run_meta, fresh=fresh) as table:
        todo = [it for it in items if space.key(it.arch) not in table]
        result.skipped = len(items) - len(todo)
        if result.skipped:
            log.info("%s: resuming, %d of %d architectures already measured", table.csv_path, result.skipped, len(items))
        if order_seed is not None:
            todo = [todo[i] for i in np.random.default_rng(order_seed).permutation(len(todo))]
        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        t_start = time.perf_counter()
        earlier = table.earlier_passes() if passes > 1 else {}

        def write(it: ArchItem, m: Measurement, build_ms: float | None) -> None:
            table.append(it.record, m, build_ms=build_ms)
            result.build_seconds += (build_ms or 0.0) / 1e3
            result.measured += 1
            result.noisy += m.noisy
            result.medians.append(m.median_ms)

        def quietest(key: str) -> Measurement:
            return min(earlier[key].values(), key=lambda x: x.median_ms)

        for it in todo:  # every pass measured, killed before the row was written
            done = earlier.get(space.key(it.arch), {})
            if passes > 1 and all(p in done for p in range(1, passes + 1)):
                write(it, quietest(space.key(it.arch)), None)
        steps = [(p, it) for p in range(1, passes + 1) for it in todo if p not in earlier.get(space.key(it.arch), {})]
        bar = tqdm(steps, desc=f"{space.name} {device.name}", unit="arch", disable=None if progress else True, dynamic_ncols=True)
        for p, it in bar:
            key = space.key(it.arch)
            if key in table:  # failed in an earlier pass
                continue
            if passes > 1:
                bar.set_description_str(f"{space.name} {device.name} pass {p}/{passes}", refresh=False)
            try:
                m, build_ms = timer(it.arch)
            except (HwlatError, RuntimeError, ValueError) as exc:
                log.warning("%s: %s", key, exc)
                table.append(it.record, error=f"{type(exc).__name__}: {exc}")
                result.failed += 1
                continue
            if passes > 1:
                table.record_pass(key, p, m)
                earlier.setdefault(key, {})[p] = m
                if p < passes:
                    continue
                m = quietest(key)
            write(it, m, build_ms)
            bar.set_postfix_str(f"{m.median_ms:.3f} ms{' noisy' if m.noisy else ''}", refresh=False)
        result.seconds = time.perf_counter() - t_start
        runs = table.meta.setdefault("runs", [])
        runs.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "measured": result.measured, "passes": passes,
                     "failed": result.failed, "noisy": result.noisy, "skipped": result.skipped,
                     "seconds": round(result.seconds, 1), "archs_per_minute": round(result.per_minute, 1),
                     "protocol": protocol.to_dict(),
                     # which architectures this run was given: a resume may give others
                     **{k: table.meta[k] for k in ("archs_spec", "seed") if k in table.meta},
                     "load_avg_start": load_start,
                     "load_avg_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
        table.write_meta()
    return result
