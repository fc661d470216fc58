"""The worker side of cluster profiling: advertised devices, the one actor per device, the Ray node.

A host that owns devices joins a Ray cluster (`RayNode`) with one custom resource per device,
``hwlat-device:<name>`` = 1, and starts one detached, named actor per device (`DeviceActor`) that
holds that resource for its whole life. Only that actor can ever run on the device, and an actor
runs one method at a time, so measurements on one device never overlap. The actor publishes the
device's settings and fingerprint (`describe`). Ray is imported lazily: `import hwlat.profilers` works
without it. See docs/tutorials/fleet.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from hwlat.device_tables.errors import HwlatError, UnsupportedOpError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.cluster.reaper import descendants, kill_pids, session_pids
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)

NAMESPACE = "hwlat"
RESOURCE_PREFIX = "hwlat-device:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClusterError(HwlatError):
    """Ray missing, a cluster that cannot be reached, a bad device spec, or a device that was lost."""


def import_ray() -> Any:
    """Import Ray, or say how to install it (it is the optional extra ``hwlat[cluster]``)."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("cluster profiling needs Ray: pip install 'hwlat[cluster]' (or pip install 'ray[default]')") from exc
    return ray


def match_ray_auth() -> None:
    """Use Ray's token authentication in this process when a token is at hand and no mode is set.

    A head started by ``ray start`` turns token auth on by itself when ``~/.ray/auth_token`` exists
    and ``RAY_AUTH_MODE`` is unset; a driver does not, and would be refused. Doing the same here keeps
    both sides alike. Set ``RAY_AUTH_MODE`` explicitly to choose.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(path):
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:  # Ray read its settings at import: have it read them again
            try:
                from ray._raylet import Config

                Config.initialize("")
            except Exception as exc:  # an older or newer Ray without this: it reads the variable at init
                log.debug("could not refresh Ray's config: %s", exc)


def ray_connected(ray: Any) -> None:
    """Refuse to go on without a connection (a Ray call would otherwise start a new local cluster)."""
    if not ray.is_initialized():
        raise ClusterError("not connected to a Ray cluster: call hwlat.profilers.cluster.driver.connect(address) first")


# ---- advertised devices ----------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceAd:
    """A device a worker advertises: ``NAME=RUNTIME[:key=value]...`` such as ``cpu-ort-1=onnxruntime:threads=1``.

    The name is chosen by the lab (unique in the cluster); it names the Ray resource
    ``hwlat-device:NAME``, the device's actor and, on the driver, its table file.
    """

    name: str
    runtime: str
    settings: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "DeviceAd":
        text = text.strip()
        name, eq, rest = text.partition("=")
        if not eq or not rest or ":" in name:
            raise ClusterError(f"device spec {text!r}: expected NAME=RUNTIME[:key=value...], e.g. cpu-ort-1=onnxruntime:threads=1")
        name = name.strip()
        if not _NAME.match(name):
            raise ClusterError(f"device spec {text!r}: name {name!r} may hold letters, digits, '.', '_' and '-' only")
        runtime, *words = rest.split(":")
        from hwlat.profilers.runtimes import runtimes

        if runtime not in runtimes():
            raise ClusterError(f"device spec {text!r}: unknown runtime {runtime!r}; choose from {', '.join(runtimes())}")
        settings: dict[str, Any] = {}
        bare: list[str] = []
        positional = runtimes()[runtime].positional_setting  # bare words, e.g. board:qemu:mps2-an386
        if positional and words and words[0].startswith(positional + "="):  # board=qemu:mps2-an386, as --list shows it
            words = [words[0][len(positional) + 1:], *words[1:]]
        for word in words:
            key, eq, value = word.partition("=")
            if eq and _IDENT.match(key):
                settings[key] = _value(value)
            else:
                bare.append(word)
        threads = settings.get("threads", 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ClusterError(f"device spec {text!r}: threads={threads!r} must be a whole number of 1 or more")
        if bare:
            if positional is None:
                raise ClusterError(f"device spec {text!r}: {':'.join(bare)!r} is not key=value (e.g. threads=1)")
            settings[positional] = ":".join(bare)
        return cls(name, runtime, tuple(sorted(settings.items())))

    @classmethod
    def parse_list(cls, values: str | Sequence[str]) -> list["DeviceAd"]:
        """Comma-separated specs (commas inside a spec, as in ``serial:/dev/ttyACM0,baud=115200``, are kept)."""
        from hwlat.profilers.runtimes import runtimes

        texts = [values] if isinstance(values, str) else list(values)
        starts = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*=(" + "|".join(map(re.escape, runtimes())) + r")(:|$)")
        specs: list[str] = []
        for text in texts:
            for piece in text.split(","):
                if not piece.strip():
                    continue
                if specs and not starts.match(piece.strip()):
                    specs[-1] += "," + piece
                else:
                    specs.append(piece)
        ads = [cls.parse(s) for s in specs]
        names = [a.name for a in ads]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ClusterError(f"device name(s) {', '.join(dupes)} given twice; each device needs its own name")
        return ads

    @property
    def resource(self) -> str:
        return RESOURCE_PREFIX + self.name

    @property
    def actor_name(self) -> str:
        return RESOURCE_PREFIX + self.name

    def text(self) -> str:
        return f"{self.name}={':'.join([self.runtime] + [f'{k}={v}' for k, v in self.settings])}"

    def make_runtime(self) -> Any:
        from hwlat.profilers.runtimes import get_runtime

        return get_runtime(self.runtime, **dict(self.settings))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": self.runtime, "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceAd":
        return cls(d["name"], d["runtime"], tuple(sorted(dict(d.get("settings", {})).items())))


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "on", "yes"):
        return True
    if low in ("false", "off", "no"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ---- what a device actor runs ------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What one job produced: a measurement (with runtime facts) or an error to record as a row."""

    measurement: Measurement | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class TaskResult:
    """An outcome with where and when it was measured (wall clock of the worker)."""

    key: str
    outcome: Outcome
    device: str
    node_id: str
    host: str
    pid: int
    started: float
    finished: float


# A job runs on the device's actor: (runtime, payload, protocol, cache) -> Outcome. The cache is the
# actor's own dict (it lives as long as the actor); its "settings" entry holds the advertised settings.
Job = Callable[[Any, Any, Protocol, dict], Outcome]


def measure_op(runtime: Any, spec: OpSpec, protocol: Protocol, cache: dict) -> Outcome:
    """The job of `hwlat profile ops`: measure one op configuration (an op it cannot run is an error row)."""
    try:
        m, extra = runtime.measure(spec, protocol)
    except UnsupportedOpError as exc:
        return Outcome(error=str(exc))
    return Outcome(m, dict(extra))


@contextlib.contextmanager
def host_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive file lock (devices of one worker share a CPU unless it runs with --parallel)."""
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class DeviceActor:
    """The only thing that measures on one device: built once per device, runs one job at a time."""

    def __init__(self, ad: Mapping[str, Any], lock_path: str | None = None, worker: Mapping[str, Any] | None = None,
                 temp_dir: str | None = None):
        self.join(lock_path, worker, temp_dir)
        self.ad = DeviceAd.from_dict(ad)
        self.runtime = self.ad.make_runtime()
        self.device = self.runtime.device()
        self.cache: dict[Any, Any] = {"settings": dict(self.ad.settings)}  # jobs keep built things here
        self.started = time.time()

    def join(self, lock_path: str | None, worker: Mapping[str, Any] | None, temp_dir: str | None) -> None:
        """Take the host lock, the description and the temp folder of the worker advertising this device.

        Ray restarts the actor of a worker that died with that worker's arguments where the device shows
        up again: the worker that adopts it (`advertise`) calls this, so its devices take turns on its lock.
        """
        old = tempfile.tempdir
        self.lock_path = lock_path
        self.worker = dict(worker or {})
        if temp_dir:  # the runtime's temp files (ONNX Runtime's profiles) go where its worker removes them
            os.makedirs(temp_dir, exist_ok=True)
            tempfile.tempdir = temp_dir
            if old and old != temp_dir and os.path.basename(old).startswith("hwlat-worker-"):  # the dead worker's,
                # made again by the restart
                with contextlib.suppress(OSError):
                    os.rmdir(old)

    def describe(self, joining: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The advertised spec, the `Device` (name, settings, fingerprint) and where the actor lives;
        `joining` (`join`'s arguments) first hands the actor to the worker advertising it now."""
        import ray

        if joining is not None:
            self.join(**joining)
        return {
            "name": self.ad.name, "spec": self.ad.text(), "ad": self.ad.to_dict(), "device": self.device.to_dict(),
            "dtype": self.runtime.dtype(), "cpu_clock_ok": self.runtime.cpu_clock_ok, "host": socket.gethostname(), "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(), "worker": self.worker,
            "exclusive_host": self.lock_path is not None, "up_since": self.started,
        }

    def ping(self) -> str:
        """The id of the node this actor runs on (a cheap liveness check)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def accepts(self, specs: list[OpSpec]) -> list[str]:
        """Keys of the specs this device's runtime measures (its precision, its op support)."""
        return [s.key for s in self.runtime.accepts(specs)]

    def run(self, job: Job, key: str, payload: Any, protocol: Protocol) -> TaskResult:
        """Run one job on the device (holding the host lock unless the worker is --parallel)."""
        import ray

        with host_lock(self.lock_path):
            started = time.time()
            outcome = job(self.runtime, payload, protocol, self.cache)
            finished = time.time()
        return TaskResult(key, outcome, self.ad.name, ray.get_runtime_context().get_node_id(), socket.gethostname(),
                          os.getpid(), started, finished)


def worker_lock_path() -> str:
    """The file the devices of this worker process take turns on (`host_lock`); `hwlat worker` removes it when it stops."""
    return os.path.join(tempfile.gettempdir(), f"hwlat-worker-{os.getpid()}.lock")


def worker_temp_dir() -> str:
    """The temp folder of this worker's device actors; `hwlat worker` removes it when it stops, with what a
    measurement it cut short left there (its actors are killed, so their own clean-up does not run)."""
    return os.path.join(tempfile.gettempdir(), f"hwlat-worker-{os.getpid()}.tmp")


def advertise(ads: Sequence[DeviceAd], parallel: bool = False, worker: Mapping[str, Any] | None = None,
              timeout_s: float = 120.0) -> dict[str, Any]:
    """Start (or re-adopt) the detached actor of each device; returns name -> description.

    Must run in a process connected to the cluster whose node offers the devices' resources.
    An actor left over from a worker that died with the same spec is adopted (it restarts here);
    one with another spec is replaced.
    """
    ray = import_ray()
    lock_path = None if parallel else worker_lock_path()
    joining = {"lock_path": lock_path, "worker": dict(worker or {}), "temp_dir": worker_temp_dir()}
    cls = ray.remote(DeviceActor)

    def create(ad: DeviceAd, adopt: bool) -> Any:
        # Amount 1 of the device's resource for the actor's whole life: nothing else can run there.
        # max_restarts=-1: if its host dies, Ray restarts it wherever the resource shows up again.
        # max_task_retries=0: the driver re-queues lost calls itself (and may send them elsewhere).
        return cls.options(name=ad.actor_name, namespace=NAMESPACE, lifetime="detached", get_if_exists=adopt,
                           resources={ad.resource: 1}, num_cpus=0, max_restarts=-1, max_task_retries=0,
                           max_concurrency=1).remote(ad.to_dict(), **joining)

    handles = {ad.name: create(ad, adopt=True) for ad in ads}
    infos = {}
    for ad in ads:
        try:
            info = _describe(ray, handles[ad.name], ad, timeout_s, joining)
        except ClusterError as exc:
            # An actor adopted from a worker that died may be beyond restarting: start a fresh one.
            log.info("device %s: %s; starting a fresh actor", ad.name, exc)
            ray.kill(handles[ad.name], no_restart=True)
            _wait_name_free(ray, ad.actor_name)
            handles[ad.name] = create(ad, adopt=False)
            info = _describe(ray, handles[ad.name], ad, timeout_s, joining)
        if info["ad"] != ad.to_dict():
            log.info("device %s: replacing an actor left with spec %s", ad.name, info["spec"])
            ray.kill(handles[ad.name], no_restart=True)
            _wait_name_free(ray, ad.actor_name)
            handles[ad.name] = create(ad, adopt=False)
            info = _describe(ray, handles[ad.name], ad, timeout_s, joining)
        infos[ad.name] = info
    return infos


def _describe(ray: Any, handle: Any, ad: DeviceAd, timeout_s: float, joining: Mapping[str, Any]) -> dict[str, Any]:
    ref = handle.describe.remote(joining)
    ready, _ = ray.wait([ref], timeout=timeout_s)
    if not ready:
        raise ClusterError(f"device {ad.name}: its actor did not start in {timeout_s:.0f} s; is the resource "
                           f"{ad.resource} on a live node? (see `ray status`)")
    try:
        return ray.get(ref)
    except Exception as exc:  # the runtime failed to start on the worker, or the actor is gone
        raise ClusterError(f"device {ad.name}: {ad.runtime} did not start on the worker: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """The line of a Ray error that says why (its message is many lines of ids and context)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(exc)):
        exc = cause
    raw = str(exc).splitlines()
    frames = [i for i, ln in enumerate(raw) if ln.startswith('  File "')]
    if frames:  # an actor whose __init__ raised (the runtime did not start): Ray keeps only the traceback's
        # text, whose first unindented line after the last frame is the exception, `module.Type: message`
        tail = [ln for ln in raw[frames[-1] + 1:] if ln.strip()]
        start = next((i for i, ln in enumerate(tail) if not ln[0].isspace()), None)
        if start is not None:
            kind, sep, message = tail[start].partition(": ")
            return "\n".join([f"{kind.rsplit('.', 1)[-1]}{sep}{message}", *tail[start + 1:]])[:1000]
    lines = [ln.strip() for ln in raw if ln.strip()]
    for ln in lines:
        if not ln.startswith(("actor_id", "class_name", "pid", "namespace", "ip", "name", "Traceback", "File ")):
            return f"{type(exc).__name__}: {ln[:240]}"
    return type(exc).__name__


def _wait_name_free(ray: Any, name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)


def withdraw(names: Sequence[str]) -> None:
    """Stop the actors of these devices for good (a worker shutting down cleanly)."""
    ray = import_ray()
    for name in names:
        try:
            ray.kill(ray.get_actor(RESOURCE_PREFIX + name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass


def list_devices(timeout_s: float = 5.0) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Advertised devices of the connected cluster: (name -> description of those answering, names not answering)."""
    ray = import_ray()
    ray_connected(ray)
    names = sorted(n[len(RESOURCE_PREFIX):] for n in ray.util.list_named_actors() if n.startswith(RESOURCE_PREFIX))
    refs = {}
    for name in names:
        try:
            refs[name] = ray.get_actor(RESOURCE_PREFIX + name, namespace=NAMESPACE).describe.remote()
        except ValueError:
            continue
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    infos, silent = {}, []
    for name, ref in refs.items():
        if ref in ready:
            try:
                infos[name] = ray.get(ref)
                continue
            except Exception as exc:  # died or unavailable
                log.info("device %s does not answer: %s", name, type(exc).__name__)
        silent.append(name)
    return infos, silent


# ---- a Ray node as a child process --------------------------------------------------------------
@dataclass
class RayNode:
    """A ``ray start --block`` child: a head (no address) or a node joining ``address``, with custom resources."""

    process: subprocess.Popen  # ``ray start --block``, leader of the node's own session
    log_path: Path
    head: bool
    address: str  # the GCS address host:port other nodes and drivers use
    watchdog: subprocess.Popen | None = None  # ends the node's session once `lifeline` closes
    lifeline: int | None = None  # the write end of the watchdog's stdin: only this process holds it

    @classmethod
    def start(cls, address: str | None = None, resources: Mapping[str, float] | None = None, num_cpus: int = 0,
              object_store_mb: int = 100, port: int = 6379, temp_dir: str | None = None, dashboard: bool = False,
              extra_args: Sequence[str] | str = (), log_path: str | os.PathLike | None = None,
              env: Mapping[str, str] | None = None, timeout_s: float = 120.0) -> "RayNode":
        """Start the node and wait until it runs; its worker processes can import this hwlat."""
        import_ray()
        args = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                f"--num-cpus={num_cpus}", f"--object-store-memory={int(object_store_mb) * 1024 * 1024}",
                f"--resources={json.dumps(dict(resources or {}))}"]
        if address:
            args.append(f"--address={address}")
        else:
            args += ["--head", f"--port={port}", f"--include-dashboard={'true' if dashboard else 'false'}"]
            if temp_dir:
                args.append(f"--temp-dir={temp_dir}")
        args += shlex.split(extra_args) if isinstance(extra_args, str) else list(extra_args)
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="hwlat-ray-node-", suffix=".log")
            os.close(fd)
            log_path = name
        log_path = Path(log_path)
        child_env = dict(os.environ if env is None else env)
        # The node's workers import hwlat's packages from the same tree as this process.
        root = str(Path(__file__).resolve().parents[3])
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, child_env.get("PYTHONPATH", "")]))
        child_env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        with open(log_path, "w") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env,
                                    start_new_session=True, preexec_fn=_stop_with_parent)
        node = cls(proc, log_path, head=not address, address=address or "")
        try:
            node._watch()
        except OSError:
            node.kill()
            raise
        node._wait_started(timeout_s)
        if node.head:
            node.address = f"{node.ip()}:{port}"
        return node

    def _wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log_text():
                return
            if self.process.poll() is not None:
                self.kill()  # what it may have started
                raise ClusterError(f"ray start exited with code {self.process.returncode}: {self.log_tail()} "
                                   f"(full log: {self.log_path})")
            time.sleep(0.2)
        self.kill()
        raise ClusterError(f"the Ray node did not start in {timeout_s:.0f} s: {self.log_tail()} (log: {self.log_path})")

    def log_text(self) -> str:
        try:
            return re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def log_tail(self) -> str:
        """The last error line of the node's output (or its last line): what to show a user."""
        lines = [ln.strip() for ln in self.log_text().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln or "Exception" in ln]
        return (errors or lines or ["(no output)"])[-1][:300]

    def ip(self) -> str:
        """The node's IP address as Ray reported it (what other hosts connect to)."""
        m = re.search(r"Local node IP: *([0-9a-fA-F.:]+)", self.log_text())
        return m.group(1) if m else "127.0.0.1"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """This node's processes: ``ray start``, its session and every descendant (raylet, GCS, agents, workers)."""
        return sorted(set(descendants(self.process.pid)) | set(session_pids(self.process.pid)))

    def stop(self, timeout_s: float = 40.0) -> None:
        """Stop cleanly (Ray drains the node), then kill whatever is left of it."""
        terminate_tree(self.process, timeout_s)
        self._reap()

    def kill(self) -> None:
        """Kill the node and all its processes at once, like a host losing power."""
        kill_pids(self.pids())
        self._reap()

    def _watch(self) -> None:
        """Start the watchdog (hwlat/profilers/cluster/reaper.py) that ends this node when this process ends, however.

        Its stdin is a pipe whose write end stays here (not inherited by any child): when this process
        dies, even by SIGKILL, the kernel closes it and the watchdog ends the node's session. It runs in
        a session of its own, so a signal to this process's group does not reach it.
        """
        read_end, self.lifeline = os.pipe()
        try:
            with open(self.log_path, "a") as out:
                self.watchdog = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(Path(__file__).with_name("reaper.py")), str(self.process.pid)],
                    stdin=read_end, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            os.close(self.lifeline)
            self.lifeline = None
            raise
        finally:
            os.close(read_end)

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("ray start (pid %d) did not exit", self.process.pid)
        # The watchdog ends whatever is left of the session (processes that had left the tree) and exits.
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(timeout=70)
            except subprocess.TimeoutExpired:
                log.warning("the node's watchdog (pid %d) did not exit", self.watchdog.pid)


def _stop_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent thread dies (Linux). A fallback: the watchdog
    (`RayNode._watch`) is what ends the whole node; this only starts Ray's own shutdown of ``ray start``."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def terminate_tree(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM `process` and give it `timeout_s` to stop cleanly, then SIGKILL it and every process
    below it (those found before and after: children may have started or been re-parented)."""
    pids = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    kill_pids(set(pids) | set(descendants(process.pid)))
