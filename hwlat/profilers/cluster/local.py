"""A whole lab on one machine: a head and `hwlat worker` processes, for tests, benchmarks and trying it out.

Each worker is a real ``hwlat worker`` child process (its own Ray node); `kill_worker` kills one
with its whole process tree, like a host losing power. Everything started here is stopped by
`close` (by process id: no ``ray stop``, which would hit every Ray process of the machine).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hwlat.profilers.cluster.worker import ClusterError, DeviceAd, descendants, kill_pids, terminate_tree

log = logging.getLogger(__name__)

# Notice a dead node in about 3 s instead of Ray's default of about 30 s.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                          "health_check_timeout_ms": 1000}


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now that this process has not handed out before: the OS gives a port
    just released again (139 repeats in 2,000 draws), and Ray refused a lab whose dashboard agent
    and metrics ports had come out the same."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class WorkerProcess:
    """One `hwlat worker` child and the devices it advertises."""

    process: subprocess.Popen
    devices: str
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class LocalLab:
    """A head plus `hwlat worker` processes on this machine, all with a small footprint (no dashboard)."""

    # Ray's token authentication stays off in a lab of one machine: its children and this process (as a
    # driver) must agree, whatever ~/.ray/auth_token holds. `__init__` sets RAY_AUTH_MODE=disabled here if unset.
    def __init__(self, root: str | os.PathLike | None = None, fast_failure_detection: bool = True,
                 object_store_mb: int = 80, start_timeout_s: float = 180.0):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        self.made_root = root is None  # a temp folder of its own, removed on leaving `with` without an error
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="hwlat-lab-"))
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray's socket paths must stay short (108 bytes): its session folder lives in a short temp dir.
        self.temp_dir = tempfile.mkdtemp(prefix="hwr", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.fast = fast_failure_detection
        self.object_store_mb = object_store_mb
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.address = ""
        self.client_port = 0  # the head's Ray Client port: ray://127.0.0.1:<client_port>
        self.head: WorkerProcess | None = None
        self.workers: list[WorkerProcess] = []
        self._count = 0

    def __enter__(self) -> "LocalLab":
        self.start_head()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close()
        if self.made_root and exc_type is None:  # after an error, its workers' logs stay for the error to name
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)

    def _spawn(self, args: Sequence[str], tag: str) -> WorkerProcess:
        self._count += 1
        log_path = self.root / f"{self._count:02d}-{tag}.log"
        # TMPDIR: what a worker killed by `kill_worker` leaves in its temp folder (its devices' lock file, an
        # ORT profile folder of a measurement cut short) goes with the lab's own temp folder in `close`.
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
                   RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), TMPDIR=self.temp_dir)
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
        args = [*args, "--log-file", str(log_path.with_suffix(".ray.log"))]
        with open(log_path, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "hwlat", "worker", *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return WorkerProcess(proc, "", log_path)

    def _ports(self) -> str:
        # Loopback only: a lab on one machine never sends traffic to another address.
        return (f"--node-ip-address=127.0.0.1 --dashboard-agent-listen-port={free_port()} "
                f"--metrics-export-port={free_port()}")

    def start_head(self) -> str:
        self.client_port = free_port()
        ray_args = f"--ray-client-server-port={self.client_port} {self._ports()}"
        if self.fast:
            ray_args += " " + shlex.quote("--system-config=" + json.dumps(FAST_FAILURE_DETECTION))
        self.head = self._spawn(["--port", str(self.port), "--temp-dir", self.temp_dir, "--object-store-mb",
                                 str(self.object_store_mb), f"--ray-args={ray_args}"], "head")
        text = self._wait_for(self.head, re.compile(r"cluster (\S+:\d+)"))
        self.address = re.search(r"cluster (\S+:\d+)", text).group(1)
        return self.address

    def start_worker(self, devices: str, parallel: bool = False) -> WorkerProcess:
        """Start `hwlat worker --devices DEVICES` joining the head; returns once its devices are advertised."""
        args = ["--address", self.address, "--devices", devices, "--object-store-mb", str(self.object_store_mb),
                f"--ray-args={self._ports()}"]
        if parallel:
            args.append("--parallel")
        w = self._spawn(args, "worker")
        w.devices = devices
        self.workers.append(w)
        names = [ad.name for ad in DeviceAd.parse_list(devices)]  # a spec may hold commas (serial:PORT,baud=N)
        self._wait_for(w, re.compile("|".join(rf"^\s+{re.escape(n)}\s" for n in names), re.M), count=len(names))
        return w

    def _wait_for(self, w: WorkerProcess, pattern: re.Pattern, count: int = 1) -> str:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            text = w.output()
            if len(pattern.findall(text)) >= count:
                return text
            if not w.alive:
                raise ClusterError(f"hwlat worker exited with code {w.process.returncode}: "
                                   f"{(text.strip().splitlines() or ['(no output)'])[-1][:300]} (log {w.log_path})")
            time.sleep(0.2)
        raise ClusterError(f"hwlat worker did not come up in {self.start_timeout_s:.0f} s (log {w.log_path})")

    def kill_worker(self, w: WorkerProcess) -> None:
        """SIGKILL the worker and every process below it (its Ray node, the device actors, the node's watchdog)."""
        if w.process.poll() is None:  # once reaped, its pid may belong to another process
            kill_pids(descendants(w.process.pid))
        try:
            w.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not exit", w.process.pid)

    def stop_worker(self, w: WorkerProcess, timeout_s: float = 60.0) -> None:
        """Stop a worker cleanly (it withdraws its devices), then kill what is left of it."""
        terminate_tree(w.process, timeout_s)
        try:
            w.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Kill every process this lab started (workers first, then the head): fast, and sure to clean up."""
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():  # a driver connected to the lab leaves first: its raylet
            ray.shutdown()  # dying under it would print 'Raylet is terminated ...' and 20 lines of log
        for w in self.workers + ([self.head] if self.head else []):
            self.kill_worker(w)
        self.workers.clear()
        self.head = None
        # Processes that had left the tree (Ray workers re-parented when their raylet died) end on their own
        # within seconds; their session folder is removed here.
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)
