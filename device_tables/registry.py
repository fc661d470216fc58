"""The tables shipped with hwlat (``device_tables/tables/``): list and load them by name."""

from __future__ import annotations

import os
from pathlib import Path

from device_tables.errors import UnknownDeviceError
from device_tables.table import DeviceTable, table_paths

TABLES_DIR = Path(__file__).resolve().parent / "tables"


def available() -> list[str]:
    """Names of the shipped device tables."""
    return sorted(p.stem for p in TABLES_DIR.glob("*.json") if p.with_suffix(".csv").exists())


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A shipped table's name, or a path to a table (NAME, NAME.csv or NAME.json) -> its stem path."""
    csv_path, json_path = table_paths(name_or_path)
    if json_path.exists() or csv_path.exists():
        return csv_path.with_suffix("")
    shipped = TABLES_DIR / str(name_or_path)
    if (TABLES_DIR / f"{name_or_path}.json").exists():
        return shipped
    names = available()
    raise UnknownDeviceError(
        f"no device table {str(name_or_path)!r}: not a file, and not a shipped table "
        f"(shipped: {', '.join(names) if names else 'none'})"
    )


def load(name_or_path: str | os.PathLike) -> DeviceTable:
    """Load a shipped table by name, or any table by path."""
    return DeviceTable.load(resolve(name_or_path))
