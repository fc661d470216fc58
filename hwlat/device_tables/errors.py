"""Typed errors. Every `HwlatError` carries a message a user can act on; the CLI prints it
as one line and exits non-zero, without a traceback."""


class HwlatError(Exception):
    """Base of every user-facing error."""


class OpSpecError(HwlatError, ValueError):
    """An op configuration that is malformed or not in the vocabulary."""


class TableError(HwlatError):
    """A device or architecture table that cannot be read, validated or written."""


class SchemaVersionError(TableError):
    """A table written by a newer hwlat (schema version above the one this code reads)."""


class TableBusyError(TableError):
    """A table another process is writing (it holds the table's lock)."""


class ResumeSettingsError(TableError):
    """A table resumed with measuring settings other than those it was measured with; `stored` holds the
    table's own settings (metadata entries), so that the command line can name the flags that give them."""

    def __init__(self, message: str, stored: dict | None = None) -> None:
        super().__init__(message)
        self.stored = stored or {}


class WriteError(HwlatError):
    """A file that cannot be written (read-only folder, full disk, a path that is a folder); names the path."""


class UnknownDeviceError(HwlatError, KeyError):
    """A device or table name that is not known."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class RuntimeUnavailableError(HwlatError):
    """A runtime whose package is not installed, or that cannot run on this machine."""


class UnsupportedOpError(HwlatError):
    """An op configuration a runtime cannot build or run."""


class SweepError(HwlatError):
    """A sweep file that cannot be read or has a typo."""


class ModelError(HwlatError):
    """A model file (ONNX, TFLite) that is malformed or unsupported."""


class OutOfDeviceMemoryError(UnsupportedOpError):
    """A configuration too large for the device's memory (e.g. a GPU at a large batch); sweeps record it and go on."""
