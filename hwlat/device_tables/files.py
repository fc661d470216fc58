"""Writing table files safely: whole rows or nothing, metadata replaced atomically, and an `OSError`
(read-only folder, full disk, a path that is a folder) turned into one `WriteError` naming the path.

Every writer of a table (device tables, arch tables and the files beside them) writes through
these, so a failed write leaves nothing half-written that a resumed run would misread.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from hwlat.device_tables.errors import WriteError

log = logging.getLogger(__name__)


def os_reason(exc: OSError) -> str:
    """``[Errno 30] Read-only file system``: an OSError's reason without its file name."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or type(exc).__name__


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an `OSError` raised while writing `path` into a `WriteError` naming it."""
    try:
        yield
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None


def stem(path: str | os.PathLike, error: type[Exception], example: str) -> Path:
    """`path` as the stem of files NAME.<suffix>; `error` for a path without a name (``.``, ``..``, ``/``),
    whose files would be hidden ones inside it (``.csv``) or land beside it (``...csv``)."""
    p = Path(path)
    if p.name in ("", ".."):
        raise error(f"{path} names a folder; give a name inside it (the files are NAME.<suffix>), e.g. {p / example}")
    return p


def make_parent(path: Path) -> None:
    """Create the folder of `path` (and its parents) if missing; one of them being a file, or `path`
    being a folder, is named."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        raise WriteError(f"cannot write {path}: {blocker} is a file, not a folder") from None
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {os_reason(exc)}") from None
    if path.is_dir():
        raise WriteError(f"cannot write {path}: [Errno {errno.EISDIR}] {os.strerror(errno.EISDIR)}")


def make_output(path: Path, predictor: bool = False) -> None:
    """`make_parent` for a command's output file (--out, --json), refusing one of a table's own files
    (``NAME.csv``, ``NAME.json``, ``NAME.networks.csv``, ``NAME.stats.csv``, ... where ``NAME.json`` is a
    device or arch table's metadata): written over, what the table measured was lost. Other JSON naming
    a device (`profile model --json`) is no table. An adapted predictor's ``NAME.json`` or ``NAME.npz``
    is refused too, unless the output is a `predictor` (saved again over it)."""
    from hwlat.device_tables.archtable import FILE_SUFFIXES as ARCH_FILES
    from hwlat.device_tables.table import FILE_SUFFIXES as TABLE_FILES

    for suffix in {*ARCH_FILES, *TABLE_FILES} if path.exists() else ():
        if not path.name.endswith(suffix) or path.name == suffix:
            continue
        table = path.with_name(path.name[: -len(suffix)])
        stored = json_object(table.with_name(table.name + ".json")) or {}
        if stored.get("schema") in ("hwlat.device_table", "hwlat.arch_table"):
            raise WriteError(f"{path} is a file of the table {table}: writing it would lose what the table holds; "
                             "choose another path")
    if not predictor and path.suffix in (".json", ".npz") and path.exists():
        if (json_object(path.with_suffix(".json")) or {}).get("format") == "hwlat.predictor":
            raise WriteError(f"{path} is a file of the adapted predictor {path.with_suffix('')}: writing it would lose "
                             "the predictor; choose another path")
    make_parent(path)


def json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object a file holds; None where the file is missing, unreadable, or holds no object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def strict_json(value: Any, indent: int = 2) -> str:
    """`value` as JSON text with numpy numbers as Python's and each NaN or infinity as null: JSON has no
    NaN, which `json.dumps` would write and other parsers refuse (a Spearman of a device whose latencies
    are all equal)."""
    import numpy as np

    def finite(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [finite(x) for x in v]
        if isinstance(v, np.generic):
            v = v.item()
        return v if not isinstance(v, float) or np.isfinite(v) else None

    return json.dumps(finite(value), indent=indent, allow_nan=False) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` by `text` at once (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write(path: Path, write: Callable[[Any], Any], binary: bool = True) -> None:
    """Replace `path` at once by what `write(file)` writes (a temporary file, fsync'ed, then
    renamed): a reader that holds the old file keeps reading it whole; on failure the old file is
    intact and the temporary one removed. The new file keeps the old one's permissions."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with writing(path):
        try:
            with open(tmp, "wb" if binary else "w") as f:
                if path.is_file():  # a private file (0600) stays private
                    os.chmod(f.fileno(), path.stat().st_mode & 0o7777)
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def open_append(path: Path, create: bool = False) -> int:
    """A descriptor appending to `path` (created with `create`), for `append_line`."""
    with writing(path):
        return os.open(path, os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0), 0o644)


def append_line(fd: int, data: bytes, path: Path) -> None:
    """Append whole lines with one ``write`` and fsync them. A write that fails or writes only part
    (a full disk) is cut back off, so the file ends where it ended before."""
    with writing(path):
        size = os.fstat(fd).st_size  # the writer holds the table's lock: nobody else appends
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, f"No space left on device (wrote {written} of {len(data)} bytes)")
            os.fsync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, size)
            except OSError:
                log.warning("%s: could not cut off a partly written row", path)
            raise


def append_to(path: Path, data: bytes) -> None:
    """Open `path` for appending (created if missing), `append_line`, close."""
    fd = open_append(path, create=True)
    try:
        append_line(fd, data, path)
    finally:
        os.close(fd)


def ends_whole(path: Path) -> bool:
    """Whether a file is empty or ends with a newline (its last row whole), reading only its last byte."""
    with open(path, "rb") as f:
        f.seek(max(f.seek(0, os.SEEK_END) - 1, 0))
        return f.read(1) in (b"", b"\n")


def repair_last_line(path: Path, complete: Callable[[str], bool]) -> None:
    """End the file with a newline: a last line without one is kept, its newline added, when
    `complete` says it is a whole row (a file edited by hand), else cut off (a write interrupted).
    A file that ends whole is only read (a shipped table in a read-only install is read, not written)."""
    with writing(path):
        if ends_whole(path):
            return
    with writing(path), open(path, "rb+") as f:
        data = f.read()
        cut = data.rfind(b"\n") + 1
        last = data[cut:]
        try:
            whole = complete(last.decode())
        except UnicodeDecodeError:
            whole = False
        if whole:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return
        log.warning("%s: dropping a partial last row left by an interrupted run: %r", path, last[:80])
        f.truncate(cut)


# A row's `measured_at` as `hwlat.device_tables.table.now` writes it: every table row ends with one.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}")


def whole_csv_row(line: str, n_fields: int) -> bool:
    """Whether a CSV line without its newline is a whole row of a file whose rows end with a
    timestamp: `n_fields` fields, quotes closed, the last a complete timestamp (a row cut anywhere
    loses a field, leaves a quote open or shortens the timestamp)."""
    try:
        values = next(csv.reader([line], strict=True))
    except (csv.Error, StopIteration):
        return False
    return len(values) == n_fields and bool(_TIMESTAMP.fullmatch(values[-1]))


def set_aside(stem: Path, suffixes: Iterable[str]) -> list[Path]:
    """Move the files ``STEM<suffix>`` that exist to ``STEM.old-<time><suffix>`` (nothing is
    deleted: a table started again keeps its old measurements beside it), and say where. Returns the new paths."""
    found = [s for s in suffixes if stem.with_name(stem.name + s).exists()]
    if not found:
        return []
    base = f"{stem.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    tag, n = base, 1
    while any(stem.with_name(tag + s).exists() for s in found):
        n += 1
        tag = f"{base}-{n}"
    moved = []
    for s in found:
        src, dst = stem.with_name(stem.name + s), stem.with_name(tag + s)
        with writing(src):
            os.replace(src, dst)
        moved.append(dst)
    log.warning("%s: starting again; the old files are %s", stem, ", ".join(map(str, moved)))
    return moved
