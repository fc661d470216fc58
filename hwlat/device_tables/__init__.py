"""The vocabulary every hwlat package speaks: ops, devices, measurements and tables."""

from hwlat.device_tables.device import Device, host_fingerprint
from hwlat.device_tables.errors import HwlatError, OpSpecError, TableError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.registry import available, load
from hwlat.device_tables.table import DeviceTable

__all__ = [
    "Device", "DeviceTable", "HwlatError", "Measurement", "OpSpec", "OpSpecError", "TableError",
    "available", "host_fingerprint", "load",
]
