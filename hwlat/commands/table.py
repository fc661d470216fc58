"""`hwlat table show|validate|drift|list`: look into device tables."""

from __future__ import annotations

import argparse
import sys

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("table", help="show, validate, check the drift of, or list device tables",
                       description="Show, validate, check the drift of, or list device tables (shipped names or paths).")
    t = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = command_parser(t, "show", "print a table's device, fingerprint and rows", "hwlat table show cpu_onnxruntime_fp32_threads1")
    show.add_argument("table", help="a shipped name (exactly that table) or a path (NAME, NAME.csv or NAME.json)")
    show.add_argument("--limit", type=nonnegative_int, default=30, help="rows to print (default 30; 0: all)")
    show.add_argument("--op", help="only rows of this op type")
    show.set_defaults(func=_show)
    val = command_parser(t, "validate", "check a table's files (a device table's, or an arch table's from `profile "
                         "archs`); exit 1 naming the file and row of any problem", "hwlat table validate my_tables/board.csv")
    val.add_argument("table", help="a shipped name (exactly that table) or a path (NAME, NAME.csv or NAME.json)")
    val.set_defaults(func=_validate)
    dr = command_parser(t, "drift", "time a few of a table's own networks again: does this machine still run "
                        "as when the table was made?", "hwlat table drift cpu_onnxruntime_fp32_threads1")
    dr.add_argument("table", help="a shipped name (the table `hwlat predict --table NAME` uses here) or a path")
    dr.add_argument("--networks", type=positive_int, default=6, help="networks to time again (default 6, a few seconds)")
    dr.set_defaults(func=_drift)
    ls = command_parser(t, "list", "list the device tables shipped with hwlat, or those in a folder of yours",
                        "hwlat table list   |   hwlat table list my_tables")
    ls.add_argument("folder", nargs="?", help="a folder of device tables (NAME.csv + NAME.json; arch tables in it are "
                                              "left out); default: the shipped tables")
    ls.set_defaults(func=_list)


def print_table(table, limit: int = 30, op: str | None = None, more: str = "--limit 0 shows all") -> None:
    rows = [r for r in table if op is None or r.spec.op == op]
    shown = rows if limit <= 0 else rows[:limit]
    width = max([len(r.spec.key) for r in shown] + [20])
    print(f"{'op configuration':<{width}}  {'median ms':>10} {'IQR/med':>8} {'n':>5}  note")
    for r in shown:
        if r.ok:
            m = r.measurement
            note = "noisy" if m.noisy else ""
            print(f"{r.spec.key:<{width}}  {m.median_ms:>10.4f} {m.rel_iqr:>8.1%} {m.n:>5}  {note}")
        else:
            print(f"{r.spec.key:<{width}}  {'-':>10} {'':>8} {'':>5}  error: {r.error}")
    if len(shown) < len(rows):
        print(f"... {len(rows) - len(shown)} more rows ({more})")


def _show(args: argparse.Namespace) -> int:
    from hwlat.device_tables import load

    from hwlat.device_tables.registry import TABLES_DIR, sibling_for_this_cpu

    table = load(args.table, exact=True)
    ops = sorted({r.spec.op for r in table})
    if args.op is not None and args.op not in ops:
        from hwlat.device_tables.errors import HwlatError

        raise HwlatError(f"{table.name} has no rows of op {args.op!r}; its ops: {', '.join(ops) or 'none'}")
    fp = table.device.fingerprint
    print(f"table   {table.path}")
    stands_for = sibling_for_this_cpu(table.path)[0] if table.path.parent == TABLES_DIR else table.path
    if stands_for != table.path:
        print(f"note    measured on another CPU; on this one `--table {args.table}` predicts with {stands_for.name}")
    print(f"device  {table.device.name}")
    design = ", ".join(x for x in (fp.get("cpu_id"), f"{fp['cpu_mhz']:.0f} MHz" if fp.get("cpu_mhz") else None) if x)
    cpu = f"{fp.get('cpu_model', '?')} ({design})" if design else fp.get("cpu_model", "?")
    print(f"host    {cpu}, {fp.get('usable_cores', '?')} cores, {fp.get('os', '?')}, Python {fp.get('python', '?')}")
    pk = fp.get("packages", {})
    if pk:
        print("versions " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items())))
    setup = ([f"CPU quota {fp['cpu_quota']:g} CPUs"] if fp.get("cpu_quota") else []) + \
        [f"{k}={v}" for k, v in sorted((fp.get("env") or {}).items())]
    if setup:
        print("setup   " + ", ".join(setup))
    from hwlat.device_tables.device import setup_differences

    changed, before = [], fp
    for after in table.meta.get("fingerprints_on_resume") or []:  # each resume that changed the machine
        changed += setup_differences(before, after)
        before = after
    if changed:
        print("resumed  with another setup: " + "; ".join(changed))
    stored = dict(table.meta.get("protocol") or {})
    clock = stored.pop("clock", None)
    if stored:  # what a resume must be given (`--protocol`, `--clock`)
        from hwlat.profilers.protocol import Protocol

        preset = Protocol.preset_of(stored) or ", ".join(f"{k}={v}" for k, v in sorted(stored.items()))
        print(f"protocol {preset}" + (f", clock {clock}" if clock else ""))
    ok = len(table.rows("ok"))
    print(f"rows    {len(table)} ({ok} measured, {len(table) - ok} failed, {sum(r.measurement.noisy for r in table.rows('ok'))} noisy)")
    from hwlat.device_profile import table_stages

    print("stages  " + "\n        ".join(f"{name:<14} {what or 'MISSING'}" for name, what in table_stages(table).items()))
    print()
    print_table(table, args.limit, args.op)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from hwlat.device_tables import load

    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_profile import table_problems

    if _is_arch_table(args.table):
        return _validate_arch_table(args.table)
    table = load(args.table, exact=True)
    problems = table_problems(table)
    if problems:
        raise HwlatError(problems[0] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
    for line in _validate_warnings(table):
        print(f"hwlat: warning: {line}", file=sys.stderr)
    print(f"{table.path}: valid, schema version {table.meta['schema_version']}, {len(table)} rows, device {table.device.name}")
    return 0


def _is_arch_table(path: str) -> bool:
    from hwlat.device_tables.archtable import SCHEMA, arch_table_paths
    from hwlat.device_tables.files import json_object

    # an unreadable file is not one: the device table reader names what is wrong with it
    return (json_object(arch_table_paths(path)[1]) or {}).get("schema") == SCHEMA


def _validate_arch_table(path: str) -> int:
    """An arch table (`profile archs --out`): its rows as every reader reads them, and its statistics file."""
    from hwlat.device_tables.archtable import ArchTable, arch_table_paths, read_meta, read_stats
    from hwlat.device_tables.errors import TableError
    from hwlat.nas.spaces import known_arch_keys

    csv_path, json_path, stats_path = arch_table_paths(path)
    meta = read_meta(json_path)
    table = ArchTable.read(csv_path, candidates=known_arch_keys())
    if stats_path.exists():
        try:
            stats = read_stats(csv_path)
        except (ValueError, KeyError) as exc:
            raise TableError(f"{stats_path}: not a readable statistics file ({exc}); move it aside and run the same "
                             "`hwlat profile archs` command again to measure what it lacks") from None
        missing = set(table.frame[table.primary]) - set(stats["key"].astype(str))
        if missing:
            print(f"hwlat: warning: {stats_path}: no statistics of {len(missing)} architecture(s) of {csv_path.name}, "
                  f"e.g. {sorted(missing)[0]!r}: their latency stands, their spread is unknown", file=sys.stderr)
    print(f"{csv_path}: valid arch table, schema version {meta['schema_version']}, {table.space} space, "
          f"{len(table.frame)} architectures, device(s) {', '.join(table.devices)}")
    return 0


def _validate_warnings(table) -> list[str]:
    """What a table predicts without, but a user should hear of: a damaged entry only resuming it reads
    (`hwlat profile device` would refuse to add to it), and a networks file its run timed that is gone
    (its stored calibration and score stand; the speed check, `table drift` and --recalibrate need it)."""
    from hwlat.device_tables.table import RESUME_SHAPE, meta_problems, mend_meta_hint, table_paths
    from hwlat.device_profile import lost_networks, other_version_regressors

    json_path = table_paths(table.path)[1]
    out = [f"{json_path}: {p} (read only when a run adds to the table, which refuses it); "
           f"{mend_meta_hint(json_path, table.meta, p)}"
           for p in meta_problems(table.meta, RESUME_SHAPE)[:1]]
    return out + other_version_regressors(table) + lost_networks(table)


def _drift(args: argparse.Namespace) -> int:
    from hwlat.device_tables import load
    from hwlat.device_profile import DRIFT_TOLERANCE, drift, profile_command, table_warnings

    table = load(args.table)
    for line in table_warnings(table):
        print(f"hwlat: warning: {line}", file=sys.stderr)
    d = drift(table, args.networks)
    print(d.describe())
    command = profile_command(table).rsplit(" --out ", 1)[0]
    if d.other_machine:  # a copy of it would not resume here
        print(f"it compares two machines; a table of this one: {command} --out tables/{table.name}_here")
    elif abs(d.median - 1) > DRIFT_TOLERANCE:
        print("hwlat predict scales this table's predictions by this machine's speed now (readings like this one, "
              "pooled over 10 minutes; --as-profiled: the table's own times)")
        print(f"for a lasting change: {command} --from {args.table} --out tables/{table.name}_now "
              "(a copy whose calibration networks are timed again here, 1-3 min)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwlat.device_tables import DeviceTable, available
    from hwlat.device_tables.device import host_differences
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.files import json_object
    from hwlat.device_tables.registry import TABLES_DIR
    from hwlat.device_tables.table import SCHEMA

    folder = Path(args.folder) if args.folder is not None else None
    if folder is None:
        stems = [TABLES_DIR / name for name in available()]
    elif not folder.is_dir():
        raise HwlatError(f"{folder}: not a folder (`hwlat table list FOLDER` lists the device tables in one)")
    else:  # the NAME.csv + NAME.json pairs whose JSON is a device table's (an arch table's is another schema),
        # or no JSON object at all (a damaged one: named unreadable below)
        stems = sorted(j.with_suffix("") for j in folder.glob("*.json")
                       if j.with_suffix(".csv").is_file() and (json_object(j) or {"schema": SCHEMA}).get("schema") == SCHEMA)
        if not stems:
            print(f"no device tables in {folder}", file=sys.stderr)
    for stem in stems:
        try:
            t = DeviceTable.load(stem)
        except HwlatError as exc:  # one damaged table of a folder: said, and the others listed
            print(f"{stem.name:<45} unreadable: {str(exc).splitlines()[0]}")
            continue
        cpu = t.device.hardware == "cpu"
        host = ("other CPU" if host_differences(t.device.fingerprint) else "this CPU") if cpu else ""
        print(f"{stem.name:<45} {len(t):>6} rows  {host:<9}  {t.device.name}")
    return 0
