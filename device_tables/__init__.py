"""The vocabulary every hwlat package speaks: ops, devices, measurements and tables."""

from device_tables.device import Device, host_fingerprint
from device_tables.errors import HwlatError, OpSpecError, TableError
from device_tables.measurement import Measurement
from device_tables.ops import OpSpec
from device_tables.registry import available, load
from device_tables.table import DeviceTable

__all__ = [
    "Device", "DeviceTable", "HwlatError", "Measurement", "OpSpec", "OpSpecError", "TableError",
    "available", "host_fingerprint", "load",
]
