"""Profile a sweep on a Ray cluster: one task per configuration, routed to the device's actor.

Each advertised device (``hwlat worker``, see `hwlat.profilers.cluster.worker`) is a named actor holding
the Ray resource ``hwlat-device:<name>``. The driver splits the sweep into one task per op
configuration, keeps at most `depth` calls queued at each device's actor (which runs them one at a
time), collects results with ``ray.wait`` as they finish and appends each to that device's table on
the driver: one writer per table, idempotent by key, so nothing is lost or written twice. A device
whose worker dies is waited for (its unfinished tasks re-queued, its finished rows kept) and given
up after `device_timeout_s`; a driver that is restarted resumes from the tables.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol as TypingProtocol, Sequence

from hwlat.device_tables.device import Device
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.table import DeviceTable, table_paths
from hwlat.profilers.cluster.worker import (
    NAMESPACE, RESOURCE_PREFIX, ClusterError, Job, TaskResult, import_ray, list_devices, match_ray_auth, measure_op,
    ray_connected,
)
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)

DEVICE_TIMEOUT_S = 300.0
SILENT_WARN_S = 10.0  # a device that has not answered at the start for this long is said to be waited for


class DeviceLostError(ClusterError):
    """A device that stopped answering for longer than the timeout; its rows so far are kept."""


# ---- connecting ------------------------------------------------------------------------------------
def connect(address: str = "auto") -> bool:
    """Join the cluster at `address` (``auto``, ``host:port`` or ``ray://host:port``) as a driver.

    Returns True when this call connected (and so should disconnect), False if already connected.
    """
    match_ray_auth()
    ray = import_ray()
    if ray.is_initialized():
        return False
    _check_reachable(address)
    # The driver gets the result of every call it waits for; the calls it drops (those still queued at a
    # device it stopped) would each print a traceback as Ray's 'Unhandled error' when they fail too.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    # Ray Client's server sometimes fails to start a session under load; a second try usually works.
    attempts = 3 if address.startswith("ray://") else 1
    # ray.init replaces this process's SIGTERM handler with its own (exit 15, a C++ stack dump): keep the
    # caller's (the command line stops on SIGTERM as on Ctrl-C, saying what was kept).
    main = threading.current_thread() is threading.main_thread()
    on_term = signal.getsignal(signal.SIGTERM) if main else None
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False,
                     configure_logging=False)
            if on_term is not None:
                signal.signal(signal.SIGTERM, on_term)
            return True
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if attempt < attempts:
                log.warning("connecting to %s failed (%s); retrying", address, first[:200])
                try:
                    ray.shutdown()  # drop the half-made client session
                except Exception:  # noqa: BLE001 - nothing to drop
                    pass
                time.sleep(2.0 * attempt)
                continue
            raise ClusterError(f"cannot reach a Ray cluster at {address!r} ({first[:200]}); start one with "
                               "`hwlat worker` (head) and pass its address, e.g. --cluster 10.0.0.1:6379") from exc
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself retries for minutes)."""
    if address.strip() == "auto":  # the cluster Ray last started on this machine, if it still answers
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env and env != "auto":  # Ray's own rule: RAY_ADDRESS, when set, is the cluster `auto` means
            return _check_reachable(env, timeout_s)
        # Where `ray start` wrote it: Ray's temp folder is $RAY_TMPDIR, else $TMPDIR on Linux, else /tmp.
        tmp = os.environ.get("RAY_TMPDIR", os.environ.get("TMPDIR", "/tmp") if sys.platform.startswith("linux") else "/tmp")
        current = Path(tmp) / "ray" / "ray_current_cluster"
        if not current.is_file():
            raise ClusterError("Ray address 'auto': no Ray cluster was started on this machine; start the head with "
                               "`hwlat worker`, or pass a head's address")
        last = current.read_text().strip()
        try:
            _check_reachable(last, timeout_s)
        except ClusterError:
            raise ClusterError(f"Ray address 'auto': the Ray cluster this machine last started ({last}) no longer answers; "
                               "start the head again with `hwlat worker`, or pass another head's address") from None
        return
    m = re.match(r"^(?:ray://)?\[?([^\]/]+?)\]?:(\d+)$", address.strip())
    if not m:
        return  # another form Ray understands: it finds the cluster or says there is none
    host, port = m.group(1), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"nothing answers at {address} ({exc.strerror or type(exc).__name__}); start the head with "
                           "`hwlat worker` on that host, or check the address and the firewall") from None


def disconnect() -> None:
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()


# ---- what the driver writes to ----------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One unit of work for one device: a key (its table row) and what the job needs."""

    key: str
    payload: Any


class Sink(TypingProtocol):
    """The table one device's results go to (the driver is its only writer)."""

    path: Path

    def __contains__(self, key: str) -> bool: ...

    def write(self, task: Task, result: TaskResult) -> bool: ...

    def close(self, summary: Mapping[str, Any]) -> None: ...


class LockedSink:
    """A table written by the driver only: locked against a second writer (its writer,
    `DeviceTable.open` or `ArchTableWriter`, holds the table's `hwlat.device_tables.lock.TableLock`
    until closed), each key written once, the hosts that measured it and each run's summary kept
    in its metadata. Subclasses pass the open `table` and write one row in `_append`."""

    def __init__(self, table: Any):
        self.table = table
        self.hosts: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.table

    def _append(self, task: Task, outcome) -> None:
        raise NotImplementedError

    def write(self, task: Task, result: TaskResult) -> bool:
        if task.key in self.table:  # a retried task that had finished after all: keep the first row
            return False
        self._append(task, result.outcome)
        self.hosts.add(result.host)
        return True

    def close(self, summary: Mapping[str, Any]) -> None:
        cluster = dict(self.table.meta.get("cluster", {}))
        cluster["hosts"] = sorted(set(cluster.get("hosts", [])) | self.hosts)
        cluster.setdefault("runs", []).append(dict(summary))
        self.table.update_meta(cluster=cluster)
        self.table.close()


class OpsSink(LockedSink):
    """A device table opened for appending (resumed if it exists), locked against a second writer."""

    def __init__(self, path: str | os.PathLike, device: Device, meta: Mapping[str, Any], fresh: bool = False):
        meta = dict(meta)
        cluster = meta.pop("cluster", {})
        super().__init__(DeviceTable.open(path, device, meta, fresh=fresh))
        self.table.meta["cluster"] = {**self.table.meta.get("cluster", {}), **cluster}  # keep earlier runs' history
        self.path = table_paths(self.table.path)[0].with_suffix("")

    def _append(self, task: Task, o) -> None:
        if o.error is not None:
            self.table.append(task.payload, error=o.error, extra=o.extra)
        else:
            self.table.append(task.payload, o.measurement, extra=o.extra)


# ---- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRecord:
    """Where and when one task ran (for checks and benchmarks; the tables hold the measurements)."""

    device: str
    key: str
    node_id: str
    host: str
    pid: int
    started: float
    finished: float
    received: float


@dataclass
class DeviceRun:
    """What happened on one device during a cluster run."""

    name: str
    out: Path
    device: str = ""
    status: str = "pending"  # pending, done, lost, failed
    message: str = ""
    todo: int = 0
    measured: int = 0
    failed: int = 0
    noisy: int = 0
    skipped: int = 0
    retried: int = 0
    hosts: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        return {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": self.status, "measured": self.measured,
                "failed": self.failed, "noisy": self.noisy, "skipped": self.skipped, "retried": self.retried}


@dataclass
class ClusterResult:
    runs: dict[str, DeviceRun]
    records: list[TaskRecord]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.status == "done" for r in self.runs.values())

    def problems(self) -> list[str]:
        return [r.message for r in self.runs.values() if r.status != "done"]

    def raise_for_problems(self) -> None:
        """Raise `DeviceLostError` naming every device that did not finish (after everything was saved)."""
        if not self.ok:
            raise DeviceLostError("; ".join(self.problems()))


# ---- the scheduler ------------------------------------------------------------------------------------
# A lane is opened once its device answers: (lane name, device description) -> (sink, tasks to do).
Opener = Callable[[str, Mapping[str, Any]], tuple[Sink, list[Task]]]
# Optionally asks the device which tasks it can run: (actor handle, tasks) -> ObjectRef of their keys.
Acceptor = Callable[[Any, list[Task]], Any]


class _Lane:
    """One device's queue, its calls in flight and its state (starting, up, down, done, lost, failed)."""

    def __init__(self, name: str, run: DeviceRun):
        self.name = name
        self.run = run
        self.handle: Any = None
        self.info: Mapping[str, Any] | None = None
        self.sink: Sink | None = None
        self.tasks: list[Task] = []  # the lane's share of the sweep, before filtering
        self.accepted = False
        self.queue: deque[Task] = deque()
        self.inflight: dict[Any, Task] = {}
        self.control: Any = None  # a describe or accepts call to the device's actor
        self.control_kind = ""
        self.state = "starting"
        self.down_since = time.monotonic()
        self.next_probe = 0.0
        self.attempts: dict[str, int] = {}
        self.warned = False  # that it did not answer at the start
        self.bar: Any = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "lost", "failed")


def run_cluster(names: Sequence[str], opener: Opener, job: Job, protocol: Protocol, outs: Mapping[str, Path],
                acceptor: Acceptor | None = None, depth: int = 2, device_timeout_s: float = DEVICE_TIMEOUT_S,
                task_retries: int = 1, progress: bool = True, poll_s: float = 0.5, unit: str = "op") -> ClusterResult:
    """Run every lane's tasks on its device's actor until all are done, lost or failed.

    `depth` calls are kept queued at each actor so it never waits for the driver; the actor still
    runs them one at a time. A call lost with its worker is re-queued; the device is probed until
    it answers again (possibly on another host) or `device_timeout_s` passes.
    """
    ray = import_ray()
    ray_connected(ray)
    run = _Scheduler(ray, names, opener, job, protocol, outs, acceptor=acceptor, depth=depth,
                     device_timeout_s=device_timeout_s, task_retries=task_retries, progress=progress, poll_s=poll_s,
                     unit=unit)
    try:
        run.loop()
    finally:
        run.close()
    return ClusterResult({n: lane.run for n, lane in run.lanes.items()}, run.records, time.perf_counter() - run.t_start)


class _Scheduler:
    """One `run_cluster`: its lanes, where their tasks ran (`records`), the progress bars, and what
    it does with each answer of a device."""

    def __init__(self, ray: Any, names: Sequence[str], opener: Opener, job: Job, protocol: Protocol,
                 outs: Mapping[str, Path], acceptor: Acceptor | None, depth: int, device_timeout_s: float,
                 task_retries: int, progress: bool, poll_s: float, unit: str):
        from tqdm import tqdm

        self.ray, self.opener, self.job, self.protocol, self.acceptor = ray, opener, job, protocol, acceptor
        self.depth, self.task_retries, self.poll_s = depth, task_retries, poll_s
        self.device_timeout_s = device_timeout_s
        self.lanes = {n: _Lane(n, DeviceRun(n, outs[n])) for n in names}
        self.records: list[TaskRecord] = []
        self.overall = tqdm(total=0, desc="all devices", unit=unit, disable=None if progress else True, dynamic_ncols=True,
                            position=0)
        for i, lane in enumerate(self.lanes.values(), start=1):
            lane.bar = tqdm(total=0, desc=lane.name, unit=unit, disable=None if progress else True, dynamic_ncols=True, position=i,
                            leave=True)
        self.t_start = time.perf_counter()

    @property
    def finished(self) -> bool:
        return all(lane.finished for lane in self.lanes.values())

    def loop(self) -> None:
        """Until every lane is finished: start, probe or feed the lanes, then take the answers there are."""
        while not self.finished:
            self.advance(time.monotonic())
            waiting = {ref: (lane, None) for lane in self.lanes.values() if lane.control is not None
                       for ref in [lane.control]}
            waiting.update({ref: (lane, task) for lane in self.lanes.values() for ref, task in lane.inflight.items()})
            if not waiting:
                if not self.finished:
                    time.sleep(self.poll_s / 5)
                continue
            ready, _ = self.ray.wait(list(waiting), num_returns=1, timeout=self.poll_s)
            # Take every result that is already there, not just the first.
            if ready:
                more, _ = self.ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
                ready = list(dict.fromkeys(list(ready) + list(more)))
            for ref in ready:
                lane, task = waiting[ref]
                if lane.finished:
                    continue
                if task is None:
                    self.on_control(lane, ref)
                else:
                    self.on_task(lane, ref, task)

    def advance(self, now: float) -> None:
        """Give up on lanes silent too long, probe the others that are not up, and keep `depth` calls
        queued at each lane that is up (finishing it when nothing is left)."""
        for lane in self.lanes.values():
            if lane.state in ("starting", "down"):
                if now - lane.down_since > self.device_timeout_s:
                    why = "did not answer" if lane.state == "starting" else "disappeared"
                    self.finish(lane, "lost", self.lost_message(lane, f"{why} for {self.device_timeout_s:.0f} s"))
                    continue
                if lane.state == "starting" and not lane.warned and now - lane.down_since > SILENT_WARN_S:
                    lane.warned = True
                    log.warning("device %s has not answered for %.0f s: its worker is down or restarting (`hwlat worker "
                                "--list` shows it); waiting up to %.0f s for it", lane.name, SILENT_WARN_S,
                                self.device_timeout_s)
                self.probe(lane, now)
            elif lane.state == "up":
                while lane.queue and len(lane.inflight) < self.depth:
                    task = lane.queue.popleft()
                    lane.inflight[lane.handle.run.remote(self.job, task.key, task.payload, self.protocol)] = task
                if not lane.queue and not lane.inflight and lane.control is None:
                    self.finish(lane, "done")

    def go_down(self, lane: _Lane, why: str) -> None:
        if lane.state != "down":
            log.warning("device %s: %s; %d unfinished configuration(s) re-queued, waiting up to %.0f s for it to "
                        "return", lane.name, why, len(lane.inflight), self.device_timeout_s)
            lane.down_since = time.monotonic()
        lane.state = "down"
        lane.run.retried += len(lane.inflight)
        lane.queue.extendleft(reversed(list(lane.inflight.values())))
        lane.inflight.clear()
        lane.control = None
        lane.next_probe = time.monotonic() + self.poll_s

    def finish(self, lane: _Lane, state: str, message: str = "") -> None:
        lane.state, lane.run.status = state, state
        lane.run.message = message
        lane.inflight.clear()
        lane.control = None
        if lane.sink is not None:
            lane.sink.close(lane.run.summary())
            lane.sink = None
        if message:
            log.info("%s", message)
        lane.bar.close()

    def lost_message(self, lane: _Lane, why: str) -> str:
        left = f"{len(lane.queue)} configuration(s)" if lane.accepted else "its configurations"
        return (f"device {lane.name} {why}: {left} not measured, {lane.run.measured + lane.run.failed} row(s) "
                f"written this run and all earlier ones kept in {lane.run.out}; start its worker again "
                f"(hwlat worker --devices {lane.name}=...) and rerun the same command to resume")

    def probe(self, lane: _Lane, now: float) -> None:
        """Look the device's actor up (a returning worker may have re-created it) and ask it to describe itself."""
        if lane.control is not None or now < lane.next_probe:
            return
        lane.next_probe = now + self.poll_s
        try:
            lane.handle = self.ray.get_actor(RESOURCE_PREFIX + lane.name, namespace=NAMESPACE)
        except ValueError:
            return  # no live actor of that name now: its worker has not (re)advertised it
        lane.control, lane.control_kind = lane.handle.describe.remote(), "describe"

    def on_control(self, lane: _Lane, ref: Any) -> None:
        """The answer of a describe or accepts call."""
        if ref != lane.control:  # equal ids (Ray Client hands back new ref objects)
            return
        try:
            value = self.ray.get(ref)
        except Exception as exc:  # not reachable (yet): probe again later
            log.debug("device %s: %s call failed: %s", lane.name, lane.control_kind, _cause(exc))
            lane.control = None
            lane.next_probe = time.monotonic() + self.poll_s
            if not _device_fault(self.ray, exc):
                self.finish(lane, "failed", f"device {lane.name}: {lane.control_kind} failed: {_cause(exc)}")
            return
        if lane.control_kind == "describe":
            self.on_described(lane, value)
        else:
            self.on_accepted(lane, value)

    def on_described(self, lane: _Lane, info: Mapping[str, Any]) -> None:
        lane.control = None
        if lane.info is None:
            lane.run.device = info["device"]["name"]
            if self.protocol.clock == "cpu" and info.get("cpu_clock_ok") is False:  # as a local run refuses it
                self.finish(lane, "failed", f"device {lane.name} ({lane.run.device}): --clock cpu times the calling "
                                            "thread only, which is not this device's latency (threads=1 on a CPU "
                                            "runtime only); measure it with --clock wall (or auto)")
                return
            lane.sink, lane.tasks = self.opener(lane.name, info)
            lane.run.device = getattr(lane.sink, "device_name", lane.run.device)
        elif info["device"]["name"] != lane.info["device"]["name"]:
            self.finish(lane, "failed", f"device {lane.name} came back as {info['device']['name']!r}, not "
                                        f"{lane.info['device']['name']!r}; its table keeps the rows measured so far; "
                                        "advertise the new device under another name")
            return
        else:
            if info.get("host") != lane.info.get("host"):
                log.warning("device %s is back on host %s (was %s)", lane.name, info.get("host"), lane.info.get("host"))
            log.warning("device %s answers again; resuming %d configuration(s)", lane.name, len(lane.queue))
        lane.info = info
        if lane.accepted:
            lane.state = "up"
        elif self.acceptor is not None and lane.tasks:
            lane.control, lane.control_kind = self.acceptor(lane.handle, lane.tasks), "accepts"
        else:
            self.on_accepted(lane, [t.key for t in lane.tasks])

    def on_accepted(self, lane: _Lane, keys: Iterable[str]) -> None:
        lane.control = None
        keep = set(keys)
        tasks = [t for t in lane.tasks if t.key in keep]
        assert lane.sink is not None
        if lane.tasks and not tasks:  # as a local run refuses it: nothing of its precision
            dtypes = ", ".join(sorted({getattr(t.payload, "dtype", "?") for t in lane.tasks}))
            self.finish(lane, "failed", f"device {lane.name} ({lane.run.device}) runs none of the {len(lane.tasks)} "
                                        f"configurations: they are {dtypes}, not of its precision; pick a device of "
                                        "their precision or a sweep of its own")
            return
        todo = [t for t in tasks if t.key not in lane.sink]
        lane.run.skipped = len(tasks) - len(todo)
        lane.run.todo = len(todo)
        if lane.run.skipped:
            log.info("%s: resuming, %d of %d configurations already in %s", lane.name, lane.run.skipped, len(tasks),
                     lane.sink.path)
        lane.queue.extend(todo)
        lane.bar.total = len(todo)
        lane.bar.refresh()
        self.overall.total += len(todo)
        self.overall.refresh()
        lane.accepted = True
        lane.state = "up"

    def on_task(self, lane: _Lane, ref: Any, task: Task) -> None:
        """The answer of a task's call: its result written, or the call re-queued, retried or given up on."""
        if ref not in lane.inflight:
            return  # a call from before the device went down: already re-queued
        del lane.inflight[ref]
        try:
            result = self.ray.get(ref)
        except Exception as exc:
            if _device_fault(self.ray, exc):
                lane.inflight[ref] = task  # re-queued with the rest by go_down
                self.go_down(lane, f"its worker was lost ({type(exc).__name__})")
                return
            n = lane.attempts[task.key] = lane.attempts.get(task.key, 0) + 1
            cause = _cause(exc)
            if n <= self.task_retries:
                log.warning("device %s: %s failed (%s); retrying", lane.name, task.key, cause)
                lane.run.retried += 1
                lane.queue.appendleft(task)
                return
            lane.queue.appendleft(task)
            self.finish(lane, "failed", f"device {lane.name}: measuring {task.key} failed {n} times ({cause}); "
                                        f"stopped this device, {lane.run.measured + lane.run.failed} row(s) kept in "
                                        f"{lane.run.out}; fix the cause and rerun to resume")
            return
        self.on_result(lane, task, result)

    def on_result(self, lane: _Lane, task: Task, result: TaskResult) -> None:
        now = time.time()
        self.records.append(TaskRecord(lane.name, task.key, result.node_id, result.host, result.pid, result.started,
                                       result.finished, now))
        assert lane.sink is not None
        if lane.sink.write(task, result):
            o = result.outcome
            if o.error is not None:
                lane.run.failed += 1
            else:
                lane.run.measured += 1
                lane.run.noisy += bool(o.measurement.noisy)
            lane.run.hosts.add(result.host)
            lane.bar.update(1)
            self.overall.update(1)

    def close(self) -> None:
        """Close every lane's table (an unfinished run's summary says it was interrupted) and the bars."""
        for lane in self.lanes.values():
            if lane.sink is not None:
                if lane.run.status == "pending":
                    lane.run.status = "interrupted"
                lane.sink.close(lane.run.summary())
                lane.sink = None
            lane.bar.close()
        self.overall.close()


def _device_fault(ray: Any, exc: BaseException) -> bool:
    """A lost worker, node or actor (re-queue and wait), as opposed to an error raised by the job."""
    kinds = tuple(getattr(ray.exceptions, n) for n in ("RayActorError", "WorkerCrashedError", "ObjectLostError",
                                                       "NodeDiedError", "LocalRayletDiedError", "OwnerDiedError")
                  if hasattr(ray.exceptions, n))
    return isinstance(exc, kinds)


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:200]}" if text else type(exc).__name__


# ---- profile ops ----------------------------------------------------------------------------------------
def table_stem(name: str) -> str:
    """The table file name of an advertised device (names are already file-safe; be strict anyway)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def select_devices(devices: Sequence[str] | None = None, runtime: str | None = None) -> list[str]:
    """Advertised device names: those asked for (each must exist), else all answering ones of `runtime`."""
    ray = import_ray()
    ray_connected(ray)
    advertised = sorted(n[len(RESOURCE_PREFIX):] for n in ray.util.list_named_actors() if n.startswith(RESOURCE_PREFIX))
    if devices:
        missing = [d for d in devices if d not in advertised]
        if missing:
            raise ClusterError(f"device(s) {', '.join(missing)} not advertised in this cluster (advertised: "
                               f"{', '.join(advertised) or 'none'}); start `hwlat worker --devices NAME=RUNTIME...` on its host")
        return list(dict.fromkeys(devices))
    infos, silent = list_devices()
    names = [n for n, info in infos.items() if runtime is None or info["ad"]["runtime"] == runtime]
    for n in silent:
        log.warning("device %s is advertised but not answering; skipped (name it with --device to wait for it)", n)
    if not names:
        raise ClusterError(f"no answering device{f' of runtime {runtime}' if runtime else ''} in this cluster "
                           f"(advertised: {', '.join(advertised) or 'none'}); pick one with --device or start a worker")
    return names


def _accepts_ops(handle: Any, tasks: list[Task]) -> Any:
    return handle.accepts.remote([t.payload for t in tasks])


def profile_ops_cluster(specs: Sequence[OpSpec], out_dir: str | os.PathLike, devices: Sequence[str] | None = None,
                        runtime: str | None = None, protocol: Protocol = Protocol(), address: str | None = "auto",
                        progress: bool = True, sweep_name: str | None = None,
                        device_timeout_s: float = DEVICE_TIMEOUT_S, depth: int = 2, fresh: bool = False) -> ClusterResult:
    """Measure `specs` on advertised devices into one table per device, ``out_dir/<device name>``.

    `devices` names them (default: every answering device of `runtime`). Configurations already in
    a table are skipped, so a rerun resumes. Devices that are lost or fail are reported in the
    result (`raise_for_problems`); every row measured is on disk either way. `fresh` starts each
    table again (its files moved aside) instead of resuming it.
    """
    out = Path(out_dir)
    specs = list(dict.fromkeys(specs))
    tasks = [Task(s.key, s) for s in specs]
    connected = connect(address) if address is not None else False
    try:
        names = select_devices(devices, runtime)
        out.mkdir(parents=True, exist_ok=True)
        outs = {n: out / table_stem(n) for n in names}

        def opener(name: str, info: Mapping[str, Any]) -> tuple[Sink, list[Task]]:
            device = Device.from_dict(info["device"])
            meta = {"protocol": protocol.to_dict(),
                    "runtime_settings": {"threads": dict(device.settings).get("threads", 1), **dict(device.settings)},
                    "cluster": {"device": name, "spec": info["spec"]}}
            if sweep_name:
                meta["sweep"] = sweep_name
            return OpsSink(outs[name], device, meta, fresh=fresh), tasks

        return run_cluster(names, opener, measure_op, protocol, outs, acceptor=_accepts_ops, depth=depth,
                           device_timeout_s=device_timeout_s, progress=progress)
    finally:
        if connected:
            disconnect()
