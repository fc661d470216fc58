"""The host side of the board protocol (firmware/PROTOCOL.md): links, reply parsing, a session.

A `Link` moves bytes (`SerialLink`: pyserial, for real boards and fake peers on a pty;
`ProcessLink`: the stdin/stdout pipes of an emulator). `BoardClient` speaks the line protocol over
a link: one command, then lines until that command's ``OK``/``ERR``, with timeouts; it notices a
reboot (the ``READY`` banner) and can resynchronise (``SYNC <nonce>``) after garbage or silence.
Recovery policy (re-sending state, retrying) belongs to the caller, `hwlat.profilers.board.runtime`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import subprocess
import time
import zlib
from dataclasses import dataclass, field

from hwlat.device_tables.errors import HwlatError

try:  # pyserial's flush() lets termios.error through once the port hung up (the board was unplugged)
    from termios import error as TermiosError
except ImportError:  # not POSIX
    TermiosError = OSError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE = 4096          # a reply longer than this without a newline is garbage
DEFAULT_TIMEOUT_S = 5.0  # per reply line


# ---- errors ------------------------------------------------------------------------------------
class BoardError(HwlatError):
    """A board that cannot be reached or does not follow the protocol."""


class BoardTimeoutError(BoardError):
    """The board sent no (complete) reply line in time."""


class BoardProtocolError(BoardError):
    """The board sent a line that is not part of the protocol (wrong baud rate, other firmware, noise)."""


class BoardResetError(BoardError):
    """The board rebooted (its READY banner arrived) while a command was pending: its state is gone."""


class BoardLinkError(BoardError):
    """The link itself failed: the emulator exited, the serial port went away (the board was unplugged)."""


class BoardCommandError(BoardError):
    """The board answered ``ERR <code> <message>``."""

    def __init__(self, code: str, message: str, command: str = ""):
        self.code, self.message, self.command = code, message, command
        super().__init__(f"board refused {command.split(' ')[0] or 'a command'}: ERR {code} {message}")

    def __reduce__(self):  # its own arguments, not the message: it crosses to a Ray or multiprocessing parent
        return type(self), (self.code, self.message, self.command)


# ---- parsing -----------------------------------------------------------------------------------
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Reply:
    """One parsed line from the board: ``kind`` is OK, ERR, T (a timed sample), READY or LOG."""

    kind: str
    command: str = ""          # OK: the command it answers; ERR: the error code
    args: tuple[str, ...] = ()  # positional words after it
    fields: dict = field(default_factory=dict)  # key=value words
    text: str = ""             # the whole line (ERR: the message after the code)
    value: int = 0             # T: the count


def parse_line(line: str) -> Reply:
    """Parse one reply line (without its newline); raises `BoardProtocolError` on anything else."""
    line = line.rstrip("\r")
    words = line.split()
    if not words:
        return Reply("LOG", text="")
    head = words[0]
    if head.startswith("#"):
        return Reply("LOG", text=line)
    if head == "T":
        if len(words) != 2 or not words[1].isdigit():
            raise BoardProtocolError(f"malformed sample line {line[:80]!r}; expected 'T <count>'")
        return Reply("T", value=int(words[1]), text=line)
    if head in ("OK", "READY"):
        if head == "OK" and len(words) < 2:
            raise BoardProtocolError(f"malformed reply {line[:80]!r}; expected 'OK <COMMAND> ...'")
        rest = words[2:] if head == "OK" else words[1:]
        fields = dict(w.split("=", 1) for w in rest if _TOKEN.match(w))
        args = tuple(w for w in rest if not _TOKEN.match(w))
        return Reply(head, command=words[1] if head == "OK" else "", args=args, fields=fields, text=line)
    if head == "ERR":
        if len(words) < 2:
            raise BoardProtocolError(f"malformed error reply {line[:80]!r}; expected 'ERR <CODE> <message>'")
        return Reply("ERR", command=words[1], text=line.split(None, 2)[2] if len(words) > 2 else "")
    raise BoardProtocolError(f"unexpected line from the board: {line[:80]!r}")


# ---- links -------------------------------------------------------------------------------------
class Link:
    """A byte pipe to a board with line reads that honour a deadline."""

    name = "link"

    def __init__(self) -> None:
        self._buf = b""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def _read_some(self, timeout: float) -> bytes:
        """Whatever bytes arrive within `timeout` seconds (b"" if none)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def alive(self) -> bool:
        return True

    def read_line(self, timeout: float) -> str | None:
        """The next line (without newline) or None when none completes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                raw, self._buf = self._buf[:nl], self._buf[nl + 1:]
                return raw.decode("utf-8", errors="replace")
            if len(self._buf) > MAX_LINE:
                raw, self._buf = self._buf, b""
                raise BoardProtocolError(f"{self.name}: {len(raw)} bytes without a newline ({raw[:40]!r}...); "
                                         "wrong baud rate or not the hwlat firmware?")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._buf += self._read_some(min(left, 0.5))

    def drain(self, quiet_s: float = 0.05) -> bytes:
        """Discard input until the line is quiet for `quiet_s`; returns what was dropped."""
        dropped, self._buf = self._buf, b""
        while True:
            chunk = self._read_some(quiet_s)
            if not chunk:
                return dropped
            dropped += chunk


class SerialLink(Link):
    """A serial port (or any pyserial URL) to a real board or a fake peer on a pty."""

    def __init__(self, port: str, baud: int = 115200):
        super().__init__()
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a dependency
            from hwlat.device_tables.errors import RuntimeUnavailableError

            raise RuntimeUnavailableError("the board runtime needs pyserial: pip install pyserial") from exc
        self.name = f"serial:{port}"
        try:  # exclusive: a second run on the same board would interleave its commands with this one's
            self._ser = serial.serial_for_url(port, baudrate=baud, timeout=0, write_timeout=10, exclusive=True)
        except (serial.SerialException, ValueError) as exc:
            if getattr(exc, "errno", None) in (errno.EAGAIN, errno.EBUSY):
                raise BoardError(f"serial port {port!r} is in use by another process (another hwlat run on this "
                                 "board, or a terminal); one run per board at a time: wait for it to end or stop "
                                 "it") from exc
            raise BoardError(f"cannot open serial port {port!r}: {exc}; check the device path and permissions "
                             "(the 'dialout' group on Linux)") from exc

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._ser.write(data)
            self._ser.flush()
        except (serial.SerialException, TermiosError) as exc:
            raise BoardLinkError(f"{self.name}: write failed ({exc}); was the board unplugged?") from exc

    def _read_some(self, timeout: float) -> bytes:
        import serial

        try:  # setting the timeout reconfigures the port, which fails too once the board is gone
            self._ser.timeout = timeout
            first = self._ser.read(1)
            if not first:
                return b""
            return first + self._ser.read(self._ser.in_waiting) if self._ser.in_waiting else first
        except serial.SerialException as exc:
            raise BoardLinkError(f"{self.name}: read failed ({exc}); was the board unplugged?") from exc

    def close(self) -> None:
        self._ser.close()


def _die_with_parent() -> None:
    """In the child: ask Linux to kill it when the parent dies, so no emulator outlives hwlat."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ProcessLink(Link):
    """The serial console of a child process (an emulator) on its stdin/stdout pipes."""

    def __init__(self, argv: list[str], name: str = "process"):
        super().__init__()
        self.name = name
        self.argv = argv
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      preexec_fn=_die_with_parent)
        os.set_blocking(self._proc.stdout.fileno(), False)

    def write(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise BoardLinkError(f"{self.name} exited ({self.exit_reason()})") from exc

    def _read_some(self, timeout: float) -> bytes:
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return b""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return b""
        if not data:  # end of file: the process is gone
            self._proc.wait(timeout=5)
            raise BoardLinkError(f"{self.name} exited ({self.exit_reason()})")
        return data

    def alive(self) -> bool:
        return self._proc.poll() is None

    def exit_reason(self) -> str:
        code = self._proc.poll()
        err = b""
        if code is not None and self._proc.stderr:
            try:
                err = self._proc.stderr.read() or b""
            except (OSError, ValueError):
                pass
        tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        return f"exit status {code}" + (f": {tail[0]}" if tail else "")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            try:
                f.close()
            except (OSError, AttributeError):
                pass


# ---- a session -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoardInfo:
    """What ID and DESCRIBE told about a board."""

    board: str
    core: str
    firmware: str
    git: str
    clock_hz: int
    counter: str
    unit: str
    resolution: int
    overhead: int
    counter_ok: bool
    arena_bytes: int
    line_max: int
    chunk: int
    kernels: tuple[str, ...]
    compiler: str = ""
    cflags: str = ""

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["kernels"] = list(self.kernels)
        return d


class BoardClient:
    """One protocol session over a link: commands with timeouts, reboot detection and resync."""

    def __init__(self, link: Link, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.link = link
        self.timeout_s = timeout_s
        self.resets_seen = 0
        self._nonce = 0

    # -- low level ---------------------------------------------------------------------------------
    def send(self, line: str) -> None:
        log.debug("%s <- %s", self.link.name, line[:120])
        self.link.write(line.encode("ascii") + b"\n")

    def _next(self, timeout: float, command: str) -> Reply:
        line = self.link.read_line(timeout)
        if line is None:
            raise BoardTimeoutError(f"{self.link.name}: no reply to {command.split(' ')[0]!r} within {timeout:.3g} s")
        log.debug("%s -> %s", self.link.name, line[:120])
        reply = parse_line(line)
        if reply.kind == "READY":
            self.resets_seen += 1
            raise BoardResetError(f"{self.link.name}: the board rebooted during {command.split(' ')[0]!r} ({line.strip()})")
        return reply

    def request(self, line: str, timeout: float | None = None, on_sample=None) -> Reply:
        """Send a command; return its ``OK`` reply (``T`` lines go to `on_sample`), raise on ``ERR``.

        `timeout` bounds the wait for each line, so a long RUN stays alive while samples arrive."""
        timeout = self.timeout_s if timeout is None else timeout
        command = line.split(" ", 1)[0]
        self.send(line)
        while True:
            reply = self._next(timeout, line)
            if reply.kind == "LOG":
                if reply.text:
                    log.info("%s: %s", self.link.name, reply.text)
                continue
            if reply.kind == "T":
                if on_sample is None:
                    raise BoardProtocolError(f"{self.link.name}: sample line {reply.text!r} in reply to {command}")
                on_sample(reply.value)
                continue
            if reply.kind == "ERR":
                raise BoardCommandError(reply.command, reply.text, line)
            if reply.command != command:
                raise BoardProtocolError(f"{self.link.name}: reply {reply.text[:60]!r} does not answer {command}")
            return reply

    def wait_ready(self, timeout: float) -> Reply | None:
        """Wait for the boot banner; None when it does not come (the board may have booted earlier)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.link.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                return None
            try:
                reply = parse_line(line)
            except BoardProtocolError:
                log.debug("%s: ignoring %r while waiting for the banner", self.link.name, line[:60])
                continue
            if reply.kind == "READY":
                return reply
        return None

    def sync(self, attempts: int = 3, timeout: float | None = None) -> None:
        """Bring the line back to a known state: end any partial line, ``SYNC <nonce>``, skip
        everything until the matching ``OK SYNC <nonce>``."""
        timeout = self.timeout_s if timeout is None else timeout
        for attempt in range(1, attempts + 1):
            self._nonce += 1
            nonce = f"{os.getpid() % 10000}{self._nonce:04d}"
            self.link.drain()
            self.link.write(b"\n")
            self.send(f"SYNC {nonce}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    line = self.link.read_line(max(0.0, deadline - time.monotonic()))
                except BoardProtocolError:
                    continue
                if line is None:
                    break
                if line.strip() == f"OK SYNC {nonce}":
                    return
                if line.startswith("READY"):
                    self.resets_seen += 1
            log.warning("%s: no answer to SYNC (attempt %d of %d)", self.link.name, attempt, attempts)
        raise BoardTimeoutError(
            f"{self.link.name} does not answer (SYNC, {attempts} tries of {timeout:.3g} s); check that the hwlat "
            "firmware runs, the port and the baud rate")

    # -- commands ----------------------------------------------------------------------------------
    def identify(self) -> BoardInfo:
        ident = self.request("ID")
        if ident.fields.get("proto") != str(PROTOCOL_VERSION):
            raise BoardProtocolError(f"{self.link.name} speaks protocol {ident.fields.get('proto')!r}; "
                                     f"this hwlat speaks {PROTOCOL_VERSION}: update the firmware or hwlat")
        desc = self.request("DESCRIBE")
        try:  # optional: firmware without BUILD answers ERR UNKNOWN
            cflags = self.request("BUILD").text.split(None, 2)[2:]
        except BoardCommandError:
            cflags = []
        f = desc.fields
        try:
            return BoardInfo(
                board=ident.fields.get("board", f.get("board", "unknown")), core=ident.fields.get("core", f.get("core", "")),
                firmware=ident.fields.get("fw", ""), git=ident.fields.get("git", ""),
                clock_hz=int(f["clock_hz"]), counter=f.get("counter", ""), unit=f.get("unit", "cycles"),
                resolution=int(f.get("resolution", 1)), overhead=int(f.get("overhead", 0)),
                counter_ok=f.get("counter_ok", "1") == "1", arena_bytes=int(f["arena"]),
                line_max=int(f.get("line", 512)), chunk=int(f.get("chunk", 224)),
                kernels=tuple(k for k in f.get("kernels", "").split(",") if k), compiler=f.get("gcc", ""),
                cflags=" ".join(cflags))
        except (KeyError, ValueError) as exc:
            raise BoardProtocolError(f"{self.link.name}: DESCRIBE reply lacks or garbles {exc}: {desc.text[:120]!r}") from exc

    def upload(self, name: str, data: bytes, chunk: int) -> None:
        """Stream a tensor in DATA lines, then check its CRC-32 on the board."""
        for off in range(0, len(data), chunk):
            piece = data[off:off + chunk]
            reply = self.request(f"DATA {name} {off} {piece.hex()}")
            if reply.args[-1:] != (str(off + len(piece)),):
                raise BoardProtocolError(f"{self.link.name}: DATA {name} at {off} acknowledged as {reply.text!r}")
        reply = self.request(f"CRC {name}")
        want = f"{zlib.crc32(data):08x}"
        if len(reply.args) < 2 or reply.args[1] != want or reply.args[2:3] != (str(len(data)),):
            raise BoardProtocolError(f"{self.link.name}: tensor {name} arrived corrupted (CRC {reply.args[1:2]} != {want})")

    def fill(self, name: str, seed: int, lo: int, hi: int, expected: bytes) -> None:
        """``FILL``: the board draws the tensor from its PRNG; its CRC must match the host's draw."""
        reply = self.request(f"FILL {name} {seed} {lo} {hi}")
        want = f"{zlib.crc32(expected):08x}"
        if reply.args[1:2] != (want,):
            raise BoardProtocolError(f"{self.link.name}: FILL {name} gave CRC {reply.args[1:2]}, host expects {want}; "
                                     "the firmware's PRNG differs from PROTOCOL.md's")

    def read_tensor(self, name: str, size: int, chunk: int) -> bytes:
        out = bytearray()
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            reply = self.request(f"READ {name} {off} {n}")
            try:
                piece = bytes.fromhex(reply.args[-1]) if len(reply.args) >= 3 else b""
            except ValueError:
                piece = b""
            if len(piece) != n:
                raise BoardProtocolError(f"{self.link.name}: READ {name} {off} {n} answered {reply.text[:80]!r}")
            out += piece
        return bytes(out)

    def run(self, n: int, warmup: int, timeout: float) -> tuple[list[int], str]:
        """``RUN n warmup``: the n counts and the output's CRC-32 (hex)."""
        samples: list[int] = []
        reply = self.request(f"RUN {n} {warmup}", timeout=timeout, on_sample=samples.append)
        if len(samples) != n:
            raise BoardProtocolError(f"{self.link.name}: RUN {n} returned {len(samples)} samples")
        return samples, reply.fields.get("crc", "")
