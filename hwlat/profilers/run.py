"""Profile a sweep into a device table: resumable, one row flushed per configuration."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable

from hwlat.device_tables.errors import HwlatError, UnsupportedOpError
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.table import DeviceTable
from hwlat.profilers.base import Runtime
from hwlat.profilers.protocol import Protocol, noisy_last

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    table: DeviceTable
    measured: int
    skipped: int
    failed: int
    noisy: int


def profile_ops(runtime: Runtime, specs: Iterable[OpSpec], out: str | os.PathLike, protocol: Protocol = Protocol(),
                progress: bool = True, sweep_name: str | None = None, fresh: bool = False) -> SweepResult:
    """Measure every spec not yet in the table at `out`; ops the runtime cannot run become error rows.
    A table measured with another protocol or runtime settings is refused unless `fresh` starts it
    again (its files moved aside to NAME.old-<time>.*)."""
    from tqdm import tqdm

    runtime.check_protocol(protocol)  # before a table is made: a refused clock leaves no file behind
    device = runtime.device()
    meta = runtime.table_meta(protocol)
    if sweep_name:
        meta["sweep"] = sweep_name
    given = list(specs)
    specs = runtime.accepts(given)
    if given and not specs:  # before a table is made: an empty one would predict nothing
        dtypes = sorted({s.dtype for s in given})
        other = "int8" if "int8" in dtypes else "fp32"
        logging.disable(logging.WARNING)  # a runtime made only to ask may warn that it measures another precision
        try:  # the hint only where this runtime measures that precision (the board warns and measures int8)
            measures = type(runtime)(precision=other).precision == other
            hint = (f"give --precision {other}" if measures else f"{runtime.name} measures {runtime.dtype()} only: a "
                    f"sweep file's `dtype: {runtime.dtype()}` gives such configurations")
        except HwlatError as exc:
            hint = f"{runtime.name} cannot measure them either ({exc})"
        finally:
            logging.disable(logging.NOTSET)
        raise UnsupportedOpError(f"the sweep{' ' + sweep_name if sweep_name else ''} has no {runtime.dtype()} "
                                 f"configuration for {runtime.name} at precision {runtime.precision} (its configurations "
                                 f"are {', '.join(dtypes)}); {hint}")
    measured = failed = noisy = 0
    with DeviceTable.open(out, device, meta, fresh=fresh) as table:
        todo = [s for s in specs if s not in table]
        skipped = len(specs) - len(todo)
        if skipped:
            log.info("%s: resuming, %d of %d configurations already measured", table.name, skipped, len(specs))
        bar = tqdm(total=len(todo), desc=f"{runtime.name} {device.name}", unit="op", disable=None if progress else True, dynamic_ncols=True)
        for spec, result in noisy_last(lambda s: runtime.measure(s, protocol), todo, UnsupportedOpError):
            bar.update(1)
            if isinstance(result, Exception):
                table.append(spec, error=str(result))
                failed += 1
                continue
            m, extra = result
            table.append(spec, m, extra=extra)
            measured += 1
            noisy += m.noisy
            bar.set_postfix_str(f"{spec.op} {m.median_ms:.3f} ms", refresh=False)
        bar.close()
        return SweepResult(table, measured, skipped, failed, noisy)
