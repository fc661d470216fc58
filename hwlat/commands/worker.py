"""`hwlat worker`: start or join a Ray node that advertises this host's devices for cluster profiling."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import sys
import time

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, port, positive_int

EXAMPLE = ("hwlat worker --devices cpu-ort-1=onnxruntime:threads=1,board0=board:qemu:mps2-an386 "
           "--address 10.0.0.1:6379")


def register(sub) -> None:
    p = command_parser(
        sub, "worker",
        "start (no --address: a head) or join a Ray cluster, advertising this host's devices for `--cluster` runs",
        EXAMPLE,
    )
    p.add_argument("--devices", action="append", default=[],
                   help="devices to advertise, NAME=RUNTIME[:key=value...] joined by commas, e.g. "
                        "cpu-ort-1=onnxruntime:threads=1, gpu0=torch:device=cuda, board0=board:qemu:mps2-an386, "
                        "board1=board:serial:/dev/ttyACM0,baud=115200 (repeatable; none: a head that measures nothing)")
    p.add_argument("--address", help="the head's address HOST:PORT to join (default: start a head here)")
    p.add_argument("--port", type=port, default=6379, help="head only: the port workers and drivers connect to (default 6379)")
    p.add_argument("--num-cpus", type=nonnegative_int, default=0,
                   help="CPUs this node offers to other Ray work (default 0: nothing else runs beside the measurements)")
    p.add_argument("--object-store-mb", type=positive_int, default=100, help="Ray object store size in MiB (default 100; results are small)")
    p.add_argument("--parallel", action="store_true",
                   help="let this worker's devices measure at the same time (only when they share no CPU, e.g. boards); "
                        "by default they take turns")
    p.add_argument("--dashboard", action="store_true", help="head only: start Ray's dashboard")
    p.add_argument("--temp-dir", help="head only: Ray's session folder (default Ray's, /tmp/ray)")
    p.add_argument("--ray-args", default="", help="more arguments for `ray start`, as one string: --ray-args='--node-ip-address=10.0.0.5'")
    p.add_argument("--log-file", help="where `ray start` writes its output (default: a new file in the temp folder)")
    p.add_argument("--list", action="store_true", help="list the devices advertised in the cluster at --address (or auto) and exit")
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from hwlat.device_tables.errors import HwlatError
    from hwlat.profilers.cluster.worker import (
        ClusterError, DeviceAd, RayNode, advertise, import_ray, match_ray_auth, withdraw, worker_lock_path,
        worker_temp_dir,
    )

    if args.list:
        return _list(args.address or "auto")
    head_only = [flag for flag, given in (("--port", args.port != 6379), ("--temp-dir", args.temp_dir),
                                          ("--dashboard", args.dashboard)) if given]
    if args.address and head_only:
        raise ClusterError(f"{', '.join(head_only)}: head only; a worker joining --address {args.address} takes the "
                           "head's (drop them, or drop --address to start a head)")
    ads = DeviceAd.parse_list(args.devices) if args.devices else []
    # Fail here, with the runtime's own message, before joining anything.
    for ad in ads:
        try:
            runtime = ad.make_runtime()
        except (HwlatError, TypeError, ValueError) as exc:
            raise ClusterError(f"device {ad.name}: {exc}") from exc
        close = getattr(runtime, "close", None)
        if callable(close):
            close()
    match_ray_auth()  # as `ray start` does for a head: a token at hand turns token auth on
    ray = import_ray()
    if args.address:  # a head that is not running: say so in seconds (`ray start` waits for minutes)
        from hwlat.profilers.cluster.driver import _check_reachable

        _check_reachable(args.address)
    node = RayNode.start(address=args.address, resources={ad.resource: 1 for ad in ads}, num_cpus=args.num_cpus,
                         object_store_mb=args.object_store_mb, port=args.port, temp_dir=args.temp_dir,
                         dashboard=args.dashboard, extra_args=args.ray_args, log_path=args.log_file)
    stopping = False

    def stop(signum, frame) -> None:  # noqa: ARG001
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    advertised: list[str] = []
    try:
        ray.init(address=node.address, namespace="hwlat", logging_level="WARNING", log_to_driver=False,
                 configure_logging=False)
        _check_names_free(ray, ads, node)
        worker = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        infos = advertise(ads, parallel=args.parallel, worker=worker)
        advertised = list(infos)
        ray.shutdown()  # the actors live on their own (detached); reconnect only to withdraw them
        signal.signal(signal.SIGTERM, stop)  # after Ray's own handler is gone: SIGTERM stops cleanly, like Ctrl-C
        role = "head" if node.head else "worker"
        print(f"hwlat {role} on {socket.gethostname()}: cluster {node.address} (Ray log {node.log_path})", flush=True)
        if node.head:
            print(f"  join it with: hwlat worker --address {node.address} --devices NAME=RUNTIME...", flush=True)
            print(f"  profile with: hwlat profile ops --cluster {node.address} ...", flush=True)
        for name, info in infos.items():
            fp = info["device"].get("fingerprint", {})
            print(f"  {name:<16} {info['device']['name']:<36} {fp.get('cpu_model', '?')}, "
                  f"{fp.get('usable_cores', '?')} cores, {fp.get('os', '?')}", flush=True)
        if ads and not args.parallel and len(ads) > 1:
            print("  devices of this worker take turns (--parallel lets them measure at once)", flush=True)
        while node.alive:
            time.sleep(1.0)
        print(f"hwlat worker: the Ray node stopped ({node.log_tail()}); log {node.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hwlat worker: stopping; its devices are withdrawn", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            if advertised and node.alive:
                if not ray.is_initialized():
                    ray.init(address=node.address, namespace="hwlat", logging_level="WARNING", log_to_driver=False,
                             configure_logging=False)
                withdraw(advertised)
        except Exception as exc:  # the cluster is gone already: nothing to withdraw
            print(f"hwlat worker: could not withdraw {', '.join(advertised)}: {type(exc).__name__}", file=sys.stderr)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            node.stop()
            with contextlib.suppress(OSError):  # its devices' actors are gone with the node
                os.remove(worker_lock_path())
            shutil.rmtree(worker_temp_dir(), ignore_errors=True)


NAME_CLASH_GRACE_S = 45.0


def _check_names_free(ray, ads, node) -> None:
    """Refuse a device name another live node already advertises."""
    from hwlat.profilers.cluster.worker import ClusterError

    deadline = time.monotonic() + 60
    while ads and time.monotonic() < deadline:  # wait for our node's resources to show up
        total = ray.cluster_resources()
        if all(total.get(ad.resource, 0) >= 1 for ad in ads):
            break
        time.sleep(0.2)
    # A name still held by a node that has just died (a worker restarted after a crash) frees itself
    # once Ray marks that node dead: only a name taken for the whole grace period is a real clash.
    grace = time.monotonic() + NAME_CLASH_GRACE_S
    while True:
        total = ray.cluster_resources()
        taken = [ad.name for ad in ads if total.get(ad.resource, 0) > 1]
        if not taken or time.monotonic() > grace:
            break
        time.sleep(0.5)
    if taken:
        raise ClusterError(f"device name(s) {', '.join(taken)} already advertised by another worker of this cluster; "
                           "choose other names (hwlat worker --list shows them)")


def _list(address: str) -> int:
    from hwlat.profilers.cluster.driver import connect, disconnect
    from hwlat.profilers.cluster.worker import list_devices

    connect(address)
    try:
        infos, silent = list_devices()
    finally:
        disconnect()
    if not infos and not silent:
        print("no devices advertised (start one with: hwlat worker --address HEAD:PORT --devices NAME=RUNTIME...)")
        return 0
    for name, info in sorted(infos.items()):
        fp = info["device"].get("fingerprint", {})
        print(f"{name:<16} {info['device']['name']:<36} on {info['host']} ({fp.get('cpu_model', '?')}, "
              f"{fp.get('usable_cores', '?')} cores, {fp.get('os', '?')})  spec {info['spec']}")
    for name in silent:
        print(f"{name:<16} (not answering: its worker is down or restarting)")
    return 0
