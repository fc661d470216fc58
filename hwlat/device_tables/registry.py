"""The tables shipped with hwlat (``hwlat/device_tables/tables/``): list and load them by name."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hwlat.device_tables.errors import UnknownDeviceError
from hwlat.device_tables.files import json_object
from hwlat.device_tables.table import DeviceTable, meta_problems, table_paths

TABLES_DIR = Path(__file__).resolve().parent / "tables"
log = logging.getLogger(__name__)


def available() -> list[str]:
    """Names of the shipped device tables."""
    return sorted(p.stem for p in TABLES_DIR.glob("*.json") if p.with_suffix(".csv").exists())


_said_sibling: set[str] = set()  # shipped tables whose sibling for this CPU was said in this process


def resolve(name_or_path: str | os.PathLike, exact: bool = False) -> Path:
    """A shipped table's name, or a path to a table (NAME, NAME.csv or NAME.json) -> its stem path.

    A shipped CPU table measured on a machine unlike this one (another CPU model, design or SIMD
    flags: `cpu_differences`) stands for its sibling ``NAME_<variant>`` of the same device measured
    on a machine like this one, where a finished one (scored by `hwlat profile device`) is shipped,
    said in one warning; `exact`, or a path, names the files themselves."""
    csv_path, json_path = table_paths(name_or_path)
    if json_path.exists() or csv_path.exists():
        return csv_path.with_suffix("")
    shipped = TABLES_DIR / str(name_or_path)
    if (TABLES_DIR / f"{name_or_path}.json").exists():
        if exact:
            return shipped
        sibling, differs = sibling_for_this_cpu(shipped)
        if sibling != shipped and str(shipped) not in _said_sibling:  # once per process: a loop loads it again
            _said_sibling.add(str(shipped))
            log.warning("%s was measured on another CPU (%s); using %s, measured on a CPU like this one "
                        "(the other by its path: %s)", shipped.name, _brief(differs), sibling.name, shipped)
        return sibling
    if Path(name_or_path).is_file():  # a file, but not one of a table's (NAME.csv + NAME.json)
        raise UnknownDeviceError(f"{str(name_or_path)!r} is a file but not a device table (NAME.csv + NAME.json, "
                                 "given as NAME, NAME.csv or NAME.json); `hwlat table list` shows the shipped ones")
    names = available()
    raise UnknownDeviceError(
        f"no device table {str(name_or_path)!r}: not a file, and not a shipped table "
        f"(shipped: {', '.join(names) if names else 'none'})"
    )


def load(name_or_path: str | os.PathLike, exact: bool = False) -> DeviceTable:
    """Load a shipped table by name (see `resolve` for machines of another kind), or any table by path."""
    return DeviceTable.load(resolve(name_or_path, exact))


def _device_and_host(stem: Path) -> tuple[str | None, list[str], bool]:
    """A shipped table's device name, how this machine's CPU differs from the one it was measured on,
    and whether the table is finished (`hwlat profile device` scored it)."""
    from hwlat.device_tables.device import host_differences

    meta = json_object(stem.parent / f"{stem.name}.json")
    if meta is None or meta_problems(meta):  # loading it says what is wrong
        return None, [], False
    device = meta.get("device") or {}
    differs = host_differences(device.get("fingerprint") or {}) if str(device.get("name", "")).startswith("cpu/") else []
    return device.get("name"), differs, bool(meta.get("self_score"))


def _brief(differs: list[str]) -> str:
    """Differences as `host_differences` gives them, with a long flag list cut to its first three."""
    out = []
    for d in differs:
        head, _, flags = d.partition("SIMD flags ")
        items = flags.split(", ") if flags and not head else []
        out.append(f"SIMD flags {', '.join(items[:3])} and {len(items) - 3} more" if len(items) > 3 else d)
    return "; ".join(out)


def sibling_for_this_cpu(stem: Path) -> tuple[Path, list[str]]:
    """The shipped table `stem` stands for on this CPU (see `resolve`): itself, or its finished
    sibling of the same device measured on a CPU like this one; and how `stem`'s CPU differs."""
    device, differs, _ = _device_and_host(stem)
    if differs:
        for name in available():
            if name.startswith(stem.name + "_"):
                theirs, other_differs, finished = _device_and_host(TABLES_DIR / name)
                if theirs == device and not other_differs and finished:
                    return TABLES_DIR / name, differs
    return stem, differs
