"""Processes by id, and the watchdog that takes a Ray node down with the process that started it.

`hwlat worker` runs ``ray start --block`` in a session of its own, then starts this file as a
script (``python -I -S reaper.py SESSION``), in a session of its own too, with its stdin the read
end of a pipe whose write end only the worker holds. However the worker ends (return, exception,
SIGKILL, the OOM killer), the kernel closes that end; the watchdog reads end-of-file and ends the
node: SIGTERM to its raylet first, which withdraws the node from the cluster at once (its
resources, so the devices it advertised, are gone from the GCS), then SIGKILL to every process of
the session and every descendant of ``ray start`` (raylet, GCS, agents, log monitor, workers,
device actors), until none is left. Standard library only: it must start fast and hold little.
Linux (reads /proc); elsewhere it only waits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Iterable

RAYLET = "raylet"


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) of every process we can read."""
    out: dict[int, tuple[int, int, str]] = {}
    if not os.path.isdir("/proc"):
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[1]), int(fields[3]), fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return out


def _below(roots: Iterable[int], procs: dict[int, tuple[int, int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for p, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(p)
    out, seen, todo = [], set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def descendants(pid: int) -> list[int]:
    """`pid` and all processes below it (by parent pid; Ray's workers start their own process groups)."""
    if not os.path.isdir("/proc"):
        return [pid]
    return _below([pid], _processes())


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (started by its leader, even those re-parented since) and all below them."""
    procs = _processes()
    members = [p for p, (_, s, _) in procs.items() if s == sid]
    me = os.getpid()
    return [p for p in _below(members, procs) if p != me and procs.get(p, (0, 0, "Z"))[2] not in "ZX"]


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Signal these processes (ones this code started, by id); those already gone are skipped."""
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def end_session(sid: int, grace_s: float = 10.0, timeout_s: float = 60.0) -> list[int]:
    """End every process of the node in session `sid`: SIGTERM its raylet (it leaves the cluster at once),
    wait up to `grace_s` for it, then SIGKILL all that is left until nothing is. Returns the pids it found."""
    found = session_pids(sid)
    raylets = [p for p in found if _name(p) == RAYLET]
    kill_pids(raylets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while raylets and time.monotonic() < deadline:
        time.sleep(0.05)
        raylets = [p for p in raylets if p in session_pids(sid)]
    deadline = time.monotonic() + timeout_s
    left = session_pids(sid)
    while left and time.monotonic() < deadline:
        found += [p for p in left if p not in found]
        kill_pids(left)
        time.sleep(0.05)
        left = session_pids(sid)
    return found


def main(argv: list[str]) -> int:
    """Wait for end-of-file on stdin (the owner is gone, or stopped the node), then end session argv[0]."""
    sid = int(argv[0])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    found = end_session(sid)
    if found:
        print(f"hwlat node watchdog: its worker is gone or stopped the node; ended {len(found)} process(es) "
              f"of the Ray node (session {sid})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
