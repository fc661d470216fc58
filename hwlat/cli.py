"""The `hwlat` command line. Commands live in `hwlat.commands.*`; heavy imports happen inside them."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from hwlat.device_tables.errors import HwlatError

# Modules that register top-level commands, in --help order.
COMMAND_MODULES = (
    "hwlat.commands.demo",
    "hwlat.commands.profile",
    "hwlat.commands.predict",
    "hwlat.commands.adapt",
    "hwlat.commands.search",
    "hwlat.commands.space",
    "hwlat.commands.table",
    "hwlat.commands.bench",
    "hwlat.commands.worker",
)

DESCRIPTION = """\
hwlat: how long will this network take on that device?

Profile op-level latency of a runtime into device tables, predict whole-network latency from
them (or on unseen devices from a few measurements), and use predictions as NAS constraints.
Run `hwlat COMMAND --help` for each command's options and an example.
"""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of the command `argv` names (its options may import the
    runtime and space plugins, which other commands need not pay for at start-up)."""
    from hwlat import __version__

    parser = argparse.ArgumentParser(prog="hwlat", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hwlat {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more diagnostics (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    named = next((a for a in (argv or ()) if not a.startswith("-")), None)
    modules = [m for m in COMMAND_MODULES if m.rpartition(".")[2] == named] or COMMAND_MODULES
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


class _LogFormat(logging.Formatter):
    """Warnings as the CLI's own (``hwlat: warning: ...``); with -v, the rest with the module that says it."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"hwlat: {record.levelname.lower()}: {record.getMessage()}"
        return f"{record.levelname} {record.name}: {record.getMessage()}"


class _LogHandler(logging.StreamHandler):
    """Log lines on stderr; above a progress bar they take their own line (`tqdm.write` lifts the bar
    and draws it again below), where they were glued to the end of the bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        bars = sys.modules.get("tqdm")  # no bar is drawn before tqdm is imported
        if bars is None or not getattr(bars.tqdm, "_instances", None):
            return super().emit(record)
        try:
            bars.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - as logging's own handlers do
            self.handleError(record)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # An output that cannot encode ± or µ (PYTHONIOENCODING=ascii, a legacy console) escapes them instead of
    # ending the command in a UnicodeEncodeError, as Python's own stderr does.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        from hwlat.device_tables.errors import HwlatError  # device_tables imports numpy, filelock, ...
    except ModuleNotFoundError as exc:
        if argv != ["--version"]:  # which still answers
            return _not_installed(exc)
        HwlatError = type("HwlatError", (Exception,), {})  # none is raised
    if argv == ["--version"]:  # without building every command's parser; a closed or full output as any command's
        from hwlat import __version__

        parser, args = None, argparse.Namespace(verbose=0, func=lambda _: print(f"hwlat {__version__}", flush=True))
    else:
        try:
            parser = build_parser(argv)
        except ModuleNotFoundError as exc:
            return _not_installed(exc)
        args = parser.parse_args(argv)
    handler = _LogHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)], handlers=[handler])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not getattr(sys.stderr, "isatty", lambda: False)():  # a log file or a pipe: a bar redrawn ten times a
        args.no_progress = True  # second fills it with one endless line; the lines that say what was done stay
    # SIGTERM (`kill`, a batch system's time limit, `timeout`) stops a command as Ctrl-C does: files
    # being replaced are cleaned up and the user is told what was kept, instead of a silent death.
    on_term = signal.signal(signal.SIGTERM, _terminated) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args.func(args) or 0)
    except HwlatError as exc:
        print(f"hwlat: error: {exc}{_protocol_hint(exc)}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a last resort: the runtimes and optional pieces name their own install
        return _not_installed(exc)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as exc:  # a last resort: writers raise a `WriteError` naming the path themselves
        from hwlat.device_tables.files import os_reason

        print(f"hwlat: error: {f'{exc.filename}: ' if exc.filename else ''}{os_reason(exc)}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # numpy names the size asked for: "Unable to allocate 160. TiB for an array ..."
        print(f"hwlat: error: out of memory, not enough for what was asked ({exc or type(exc).__name__}); ask for "
              "less: fewer architectures (a smaller -n or random:N), a smaller --input-shape or batch", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # the commands that store into their --out as they measure (not `profile model`, which stores nothing)
        measuring = (args.func.__module__.rsplit(".", 1)[-1].startswith("profile") and bool(getattr(args, "out", None))
                     or bool(getattr(args, "verify", False) and getattr(args, "verify_out", None)))  # search --verify-out
        kept = (f"; what was measured is stored: run {resume_command(args)} again to go on where it stopped"
                if measuring else "")
        if args.func.__module__.endswith(".demo"):  # which starts over: it keeps nothing of an earlier run
            kept = f"; {args.out} holds what this demo wrote so far, no summary.json: run it again to start over"
        print("hwlat: interrupted" + kept, file=sys.stderr)
        return 130
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


def resume_command(args: argparse.Namespace) -> str:
    """What resumes an interrupted measurement: the same command, less a --fresh (which would set the
    table aside and start it again)."""
    return "the same command without --fresh" if getattr(args, "fresh", False) else "the same command"


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    """A forked child (a pool's worker, the speed reading's, TFLM's prober) ends on SIGTERM at once, as
    by default: a pool's terminate() sends it, and a Python handler would run only once the child left
    the C call it may be blocked in (a worker waiting on its queue hung its parent's exit)."""
    if signal.getsignal(signal.SIGTERM) is _terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


# pip's names of modules whose distribution is named otherwise (a runtime's own module is named by its
# `check_available`, with its install command)
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "serial": "pyserial"}
_OWN_PACKAGES = ("hwlat",)


def _not_installed(exc: ModuleNotFoundError) -> int:
    """One line for a module that is not installed, naming its pip install (exit 1); a module of hwlat's
    own missing is a broken install or a bug: its traceback."""
    top = (exc.name or "").split(".")[0]
    if not top or top in _OWN_PACKAGES:
        raise exc
    dist = _DISTRIBUTIONS.get(top, top)
    import importlib.util

    try:
        present = top != exc.name and importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        present = False
    if present:  # the package is there, a part of it is not: a broken install, not a missing one
        print(f"hwlat: error: the Python package {dist} is installed but its module {exc.name!r} is missing (a broken "
              f"install); reinstall it: pip install --force-reinstall {dist}", file=sys.stderr)
        return 1
    print(f"hwlat: error: the Python package {dist} is not installed (no module {top!r}); hwlat needs it "
          f"here: pip install {dist}", file=sys.stderr)
    return 1


def _protocol_hint(exc: HwlatError) -> str:
    """For a table resumed with another protocol: the flags that give the table's own."""
    from hwlat.device_tables.errors import ResumeSettingsError

    stored = exc.stored.get("protocol") if isinstance(exc, ResumeSettingsError) else None
    if not isinstance(stored, dict):
        return ""
    from hwlat.profilers.protocol import Protocol

    preset, clock = Protocol.preset_of(stored), stored.get("clock")  # preset_of sets the clock aside
    return f" (the table's protocol is `--protocol {preset}{f' --clock {clock}' if clock else ''}`)" if preset else ""


def run_script(main: Callable[[], int | None]) -> int:
    """The exit code of a script's `main` (the benchmarks'), with a `HwlatError` as one ``SCRIPT: error:``
    line and exit 1 (missing public data, an unknown table), as the command line reports it."""
    from pathlib import Path

    from hwlat.device_tables.errors import HwlatError

    try:
        return int(main() or 0)
    except HwlatError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 1


def command_parser(sub, name: str, help: str, example: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with an example, and that takes -v after the command too."""
    p = sub.add_parser(name, help=help, description=f"{help}\n\nexample:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more diagnostics (-vv for debug)")
    return p
