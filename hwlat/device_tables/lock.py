"""`TableLock`: one writer per table at a time.

Every writer of a table (`DeviceTable.open`, `ArchTableWriter`, the Ray driver's sinks) holds an
exclusive lock on ``NAME.lock`` (`filelock`: ``flock`` on Unix) for as long as it writes, so a
second ``hwlat profile ... --out NAME`` stops at once instead of writing every row twice. The
kernel releases a ``flock`` when its holder dies however it dies (SIGKILL included), so a lock
left by a killed run is simply taken by the next one. ``filelock`` truncates the lock file when
another process opens it, so the holder's pid and command line live beside it, in
``NAME.lock.holder``, written once the lock is held and removed when it is released. Readers
take no lock. Neither file is ever committed (``.gitignore``) and no table reader looks at them.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from hwlat.device_tables.errors import TableBusyError, WriteError
from hwlat.device_tables.files import atomic_write_text, writing

LOCK_SUFFIX = ".lock"
HOLDER_SUFFIX = ".lock.holder"
LOCK_SUFFIXES = (LOCK_SUFFIX, HOLDER_SUFFIX)


def command_line() -> str:
    """This process's command line as a person typed it (``hwlat profile ops ...``)."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog == "__main__.py":  # python -m hwlat
        prog = Path(sys.argv[0]).parent.name
    return shlex.join([prog, *sys.argv[1:]])


class TableLock:
    """The exclusive lock of the table ``stem`` (its files are ``stem.csv``, ``stem.json``, ...).

    `acquire` takes it or raises `TableBusyError` naming the holder's pid; `release` gives it back.
    """

    def __init__(self, stem: Path):
        self.stem = stem
        self.path = stem.with_name(stem.name + LOCK_SUFFIX)
        self.holder_path = stem.with_name(stem.name + HOLDER_SUFFIX)
        self._lock = FileLock(str(self.path), thread_local=False)

    @classmethod
    def acquire(cls, stem: Path) -> "TableLock":
        """Hold the lock of `stem` now, without waiting: `TableBusyError` when another process holds it."""
        lock = cls(stem)
        with writing(lock.path):
            try:
                lock._lock.acquire(timeout=0)
            except Timeout:
                if not lock.path.exists():  # no lock file to hold: not busy, the folder takes no new file
                    raise WriteError(f"cannot write {stem}: {stem.parent} takes no new file (read-only, or not a "
                                     "folder you can write); choose another --out") from None
                raise TableBusyError(f"{stem} is being written by {lock.holder()}; wait for it or choose another --out") \
                    from None
        try:
            atomic_write_text(lock.holder_path, f"{os.getpid()} {command_line()}\n")
        except BaseException:
            lock._lock.release()
            raise
        return lock

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def holder(self) -> str:
        """``pid 1234 (hwlat profile ops ...)`` from the holder's file, or ``another process``."""
        try:
            text, _, command = self.holder_path.read_text().strip().partition(" ")
            pid = int(text)
        except (OSError, ValueError):
            return "another process"
        try:
            os.kill(pid, 0)  # a file left by a killed holder does not name the new one
        except ProcessLookupError:
            return "another process"
        except OSError:
            pass  # alive, another user's
        if len(command) > 100:
            command = command[:97] + "..."
        return f"pid {pid} ({command})" if command else f"pid {pid}"

    @classmethod
    def writer(cls, stem: Path) -> str | None:
        """The live process writing the table ``stem``, as `holder` names it; None where none is (a reader
        takes no lock: this reads the holder's file, then tries the lock without waiting and gives it back
        at once), or where it is this process (a script that profiles and predicts)."""
        lock = cls(stem)
        if not lock.holder_path.exists():
            return None
        who = lock.holder()
        if who == "another process" or who.split(" ")[:2] == ["pid", str(os.getpid())]:
            return None
        try:  # this lock opens the file anew: a hold of this process's is not its own
            lock._lock.acquire(timeout=0)
        except (Timeout, OSError):  # held (or cannot be tried: a read-only folder): the holder's file says who
            return who
        lock._lock.release()  # nobody holds it: the holder's file was left by a run that ended (its pid reused since)
        return None

    def release(self) -> None:
        """Give the lock back (the holder's file first, while still held); nothing when not held."""
        if not self.held:
            return
        try:
            self.holder_path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder now: the next holder rewrites the file
        self._lock.release()

    def __enter__(self) -> "TableLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
