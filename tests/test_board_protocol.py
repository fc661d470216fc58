"""Board protocol host side: reply parser, and a session against a fake board on a pty (pyserial)
that goes silent, sends garbage, resets mid-run or refuses an op."""

from __future__ import annotations

import os
import threading
import time
import tty
import zlib

import pytest

pytest.importorskip("serial")

from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.profilers.board.runtime import BoardRuntime, BoardTarget  # noqa: E402
from hwlat.profilers.board.ops import lower  # noqa: E402
from hwlat.profilers.board.protocol import (  # noqa: E402
    BoardClient, BoardError, BoardCommandError, BoardProtocolError, BoardResetError, BoardTimeoutError, SerialLink, parse_line,
)
from hwlat.profilers.protocol import Protocol  # noqa: E402
from hwlat.profilers.run import profile_ops  # noqa: E402

BANNER = "\nREADY hwlat-fw proto=1 board=fake\n"
DESCRIBE = ("OK DESCRIBE board=fake core=cortex-m4 clock_hz=100000000 counter=dwt-cyccnt unit=cycles resolution=1 "
            "overhead=2 counter_ok=1 arena=65536 line=512 chunk=224 kernels=conv2d,dwconv2d,pwconv2d,linear,avgpool,"
            "maxpool,add gcc=12")


# ---- parser ---------------------------------------------------------------------------------------
def test_parse_ok_reply_splits_fields_and_positional_words():
    r = parse_line("OK OP conv2d arena=2880 out=1x8x8x16 tensors=x:512,y:1024")
    assert (r.kind, r.command, r.args) == ("OK", "OP", ("conv2d",))
    assert r.fields == {"arena": "2880", "out": "1x8x8x16", "tensors": "x:512,y:1024"}


def test_parse_samples_errors_banner_and_comments():
    assert parse_line("T 811760").value == 811760
    err = parse_line("ERR ARENA need=300000 have=262144 op conv2d does not fit")
    assert (err.kind, err.command) == ("ERR", "ARENA") and err.text.startswith("need=300000")
    assert parse_line("READY hwlat-fw proto=1 board=x").kind == "READY"
    assert parse_line("# a board log line").kind == "LOG"
    assert parse_line("").kind == "LOG"
    assert parse_line("OK RUN n=3 crc=abcd\r").fields["crc"] == "abcd"


@pytest.mark.parametrize("line", ["OK", "T", "T 12 13", "T -5", "T 0x10", "ERR", "hello board", "\x00\xff\xfe",
                                  "ok ID", "READYX"])
def test_parse_rejects_malformed_lines(line):
    with pytest.raises(BoardProtocolError):
        parse_line(line)


def test_board_target_parsing():
    t = BoardTarget.parse("serial:/dev/ttyACM0,baud=921600")
    assert (t.kind, t.target, t.options) == ("serial", "/dev/ttyACM0", {"baud": "921600"})
    assert BoardTarget.parse("qemu:mps2-an386").target == "mps2-an386"
    for bad in ("mps2-an386", "usb:/dev/x", "serial:", "serial:/dev/x,baud", "qemu:mps2-an386,speed=2"):
        with pytest.raises(RuntimeUnavailableError):
            BoardTarget.parse(bad)
    for bad, says in (("serial:/dev/x,baud=abc", "baud='abc' must be a number from 300 to 4000000"),
                      ("qemu:mps2-an386,arena_kb=abc", "arena_kb='abc'"), ("qemu:mps2-an386,arena_kb=0", "from 16 to 3584"),
                      ("qemu:mps2-an386,arena_kb=100000", "from 16 to 3584"), ("serial:/dev/x,timeout=-1", "timeout")):
        with pytest.raises(RuntimeUnavailableError) as exc:
            BoardTarget.parse(bad)
        assert says in str(exc.value)


def test_threads_other_than_one_are_said_to_be_ignored(caplog):
    """`--runtime board --threads 4` measured threads=1 without a word (tflm and --precision warn)."""
    rt = BoardRuntime(board="serial:/dev/ttyNONE", threads=4)
    assert rt.threads == 1
    assert "measuring threads=1, not 4" in caplog.text

def test_firmware_build_settings_other_than_the_defaults_name_another_device():
    """An emulated board built another way (opt, arena, counter) measures other numbers, or fits other
    ops: its settings name the device, so a table resumed with them is refused as another device."""
    board = object.__new__(BoardRuntime)  # no emulator started: the settings follow from --board alone
    for text, settings in (("qemu:mps2-an386", {}), ("qemu:mps2-an386,opt=-O2,arena_kb=256", {}),
                           ("qemu:mps2-an386,opt=-O0", {"opt": "-O0"}),
                           ("qemu:mps2-an386,arena_kb=1024,counter=dwt", {"arena_kb": "1024", "counter": "dwt"}),
                           ("serial:/dev/ttyACM0,baud=921600", {})):
        board.target = BoardTarget.parse(text)
        assert board.runtime_settings() == settings, text


# ---- a fake board on a pty ------------------------------------------------------------------------
class FakeBoard:
    """A scripted board on the master side of a pty; `handler(line) -> list of reply lines`."""

    def __init__(self, handler):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.handler = handler
        self.received: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        while not self._stop:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode().strip()
                if not line:
                    continue
                self.received.append(line)
                for reply in self.handler(line):
                    if isinstance(reply, float):
                        time.sleep(reply)
                        continue
                    data = reply if isinstance(reply, bytes) else (reply + "\n").encode()
                    os.write(self.master, data)

    def boot(self) -> None:
        """Print the boot banner (after the host opened the port: opening flushes its input)."""
        os.write(self.master, BANNER.encode())

    def commands(self, name: str) -> int:
        return sum(1 for line in self.received if line.split()[0] == name)

    def close(self) -> None:
        self._stop = True
        for fd in (self.slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass


def basic(line: str, extra=None):
    """Answers of a well-behaved board for the session commands (not OP/DATA/CRC/RUN)."""
    cmd, *rest = line.split()
    if cmd == "ID":
        return ["OK ID proto=1 fw=fake/1 git=abc board=fake core=cortex-m4"]
    if cmd == "DESCRIBE":
        return [DESCRIBE]
    if cmd == "BUILD":
        return ["ERR UNKNOWN command"]
    if cmd == "SYNC":
        return [f"OK SYNC {rest[0]}"]
    return None


@pytest.fixture
def peers():
    made: list[FakeBoard] = []

    def make(handler) -> FakeBoard:
        made.append(FakeBoard(handler))
        return made[-1]

    yield make
    for p in made:
        p.close()


def client_for(peer: FakeBoard, timeout: float = 0.3) -> BoardClient:
    return BoardClient(SerialLink(peer.path), timeout_s=timeout)


def test_identify_and_describe(peers):
    peer = peers(lambda line: basic(line) or ["ERR UNKNOWN command"])
    client = client_for(peer)
    assert client.wait_ready(0.2) is None
    peer.boot()
    assert client.wait_ready(1.0) is not None
    info = client.identify()
    assert (info.board, info.clock_hz, info.unit, info.arena_bytes, info.chunk) == ("fake", 100_000_000, "cycles", 65536, 224)
    assert "conv2d" in info.kernels and info.counter_ok



@pytest.mark.parametrize("proto", ["2", "x", None])
def test_a_board_of_another_protocol_version_is_one_protocol_error(peers, proto):
    ident = "OK ID fw=fake/1 board=fake" + (f" proto={proto}" if proto else "")
    peer = peers(lambda line: [ident] if line == "ID" else basic(line) or ["ERR UNKNOWN command"])
    with pytest.raises(BoardProtocolError, match=f"speaks protocol {proto!r}; this hwlat speaks 1"):
        client_for(peer).identify()

def test_silent_board_times_out_and_sync_gives_a_clear_error(peers):
    peer = peers(lambda line: [])
    client = client_for(peer, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(BoardTimeoutError, match="no reply to 'ID'"):
        client.request("ID")
    with pytest.raises(BoardTimeoutError, match="does not answer"):
        client.sync(attempts=2)
    assert time.monotonic() - t0 < 5
    assert peer.commands("SYNC") == 2


def test_garbage_is_a_protocol_error_and_sync_recovers(peers):
    state = {"garbage": True}

    def handler(line):
        if state["garbage"] and line == "ID":
            state["garbage"] = False
            return [b"\xff\xfe\x00 noise at the wrong baud rate\n"]
        return basic(line)

    peer = peers(handler)
    client = client_for(peer)
    with pytest.raises(BoardProtocolError, match="unexpected line"):
        client.request("ID")
    client.sync()
    assert client.request("ID").fields["board"] == "fake"


def test_endless_line_without_newline_is_garbage(peers):
    peer = peers(lambda line: [b"x" * 5000])
    client = client_for(peer)
    with pytest.raises(BoardProtocolError, match="without a newline"):
        client.request("ID")


def test_reset_mid_run_is_detected(peers):
    def handler(line):
        if line.startswith("RUN"):
            return ["T 1000", 0.05, BANNER.encode()]
        return basic(line)

    peer = peers(handler)
    client = client_for(peer)
    with pytest.raises(BoardResetError, match="rebooted"):
        client.run(3, 1, timeout=1.0)
    assert client.resets_seen == 1


def test_error_reply_carries_code_and_message(peers):
    peer = peers(lambda line: basic(line) or ["ERR ARENA need=300000 have=65536 op conv2d does not fit"])
    client = client_for(peer)
    with pytest.raises(BoardCommandError) as info:
        client.request("OP conv2d c=64 h=64 w=64 oc=64")
    assert info.value.code == "ARENA" and "have=65536" in info.value.message


def test_upload_checks_the_crc(peers):
    def handler(line):
        cmd = line.split()[0]
        if cmd == "DATA":
            _, name, off, hexdata = line.split()
            return [f"OK DATA {name} {int(off) + len(hexdata) // 2}"]
        if cmd == "CRC":
            return [f"OK CRC {line.split()[1]} deadbeef 300"]
        return basic(line)

    peer = peers(handler)
    client = client_for(peer)
    with pytest.raises(BoardProtocolError, match="corrupted"):
        client.upload("w", bytes(range(256)) + bytes(44), chunk=224)
    assert peer.commands("DATA") == 2  # 300 bytes in chunks of 224


# ---- the runtime's recovery over a fake board ---------------------------------------------------------
SPECS = [OpSpec.make("add", (1, 4, 4, 4), dtype="int8"), OpSpec.make("linear", (1, 32), dtype="int8", cout=8),
         OpSpec.make("maxpool", (1, 4, 8, 8), dtype="int8", kernel=2)]


class FirmwareModel:
    """Just enough board for BoardRuntime: OP sizes from the host's lowering, CRCs of what arrived,
    the reference's output CRC after RUN; faults injected by the test."""

    def __init__(self, reset_on_run: int = 0, silent_from_op: int | None = None, refuse: str | None = None,
                 fault_on_run: int = 0, noisy: bool = False):
        self.bops = {lower(s).op_line: lower(s) for s in SPECS}
        self.current = None
        self.tensors: dict[str, bytearray] = {}
        self.reset_on_run, self.silent_from_op, self.refuse = reset_on_run, silent_from_op, refuse
        self.fault_on_run, self.noisy = fault_on_run, noisy
        self.ops = 0

    def __call__(self, line: str):
        cmd = line.split()[0]
        if cmd == "OP":
            self.ops += 1
            if self.silent_from_op is not None and self.ops >= self.silent_from_op:
                return []
            bop = self.bops[line]
            if self.refuse and bop.kernel == self.refuse:
                return [f"ERR ARENA need=999999 have=65536 op {bop.kernel} does not fit the tensor arena"]
            self.current = bop
            self.tensors = {k: bytearray(v) for k, v in bop.sizes.items()}
            sizes = ",".join(f"{k}:{v}" for k, v in bop.sizes.items())
            return [f"OK OP {bop.kernel} arena={bop.arena_bytes} out=1x1x1x1 tensors={sizes}"]
        if cmd == "DATA":
            _, name, off, hexdata = line.split()
            data = bytes.fromhex(hexdata)
            self.tensors[name][int(off):int(off) + len(data)] = data
            return [f"OK DATA {name} {int(off) + len(data)}"]
        if cmd == "CRC":
            t = self.tensors[line.split()[1]]
            return [f"OK CRC {line.split()[1]} {zlib.crc32(bytes(t)):08x} {len(t)}"]
        if cmd == "RUN":
            if self.fault_on_run > 0:
                self.fault_on_run -= 1
                self.current = None
                return ["ERR FAULT the core took a fault; rebooting", 0.02, BANNER.encode()]
            if self.reset_on_run > 0:
                self.reset_on_run -= 1
                self.current = None
                return ["T 5000", BANNER.encode()]
            if self.current is None:
                return ["ERR NOOP no op loaded; send OP first"]
            n = int(line.split()[1])
            spread = 1500 if self.noisy else 2  # a board with interrupts firing: counts jitter
            return [f"T {5000 + (i * 7919) % spread}" for i in range(n)] + [f"OK RUN n={n} crc={self.current.expected_crc}"]
        return basic(line)


def runtime_for(peer: FakeBoard, **kw) -> BoardRuntime:
    return BoardRuntime(board=f"serial:{peer.path},timeout=0.3,transfer=stream", runs=4, warmup=1, **kw)


def test_runtime_measures_cycles_from_a_board(peers):
    peer = peers(FirmwareModel())
    rt = runtime_for(peer)
    m, extra = rt.measure(SPECS[1], Protocol.preset("quick"))
    assert extra["unit"] == "cycles" and extra["count"] in (5000, 5001)
    assert m.median_ms == pytest.approx(5000.5 / 100e6 * 1e3, rel=1e-3)
    assert extra["arena_bytes"] == lower(SPECS[1]).arena_bytes
    assert rt.device().hardware == "fake"
    rt.close()


def test_noisy_board_counts_get_more_runs_until_the_time_cap(peers):
    peer = peers(FirmwareModel(noisy=True))
    rt = runtime_for(peer)
    p = Protocol(warmup_runs=1, min_runs=4, block_runs=5, max_runs=40, max_time_s=5.0)
    m, extra = rt.measure(SPECS[0], p)
    assert peer.commands("RUN") > 1 and extra["runs"] == m.n > 4
    assert m.n <= 40 + 5 and m.noisy
    rt.close()


def test_generic_prepare_path_times_single_runs(peers):
    peer = peers(FirmwareModel())
    rt = runtime_for(peer)
    prepared = rt.prepare(SPECS[1])
    assert prepared.timed() == pytest.approx(5000 / 100e6 * 1e3)
    assert prepared.extra["kernel"] == "linear"
    rt.close()


def test_runtime_reloads_the_op_after_a_reset_mid_run(peers):
    model = FirmwareModel(reset_on_run=1)
    peer = peers(model)
    rt = runtime_for(peer)
    m, extra = rt.measure(SPECS[0], Protocol.preset("quick"))
    assert extra["count"] in (5000, 5001)
    assert peer.commands("OP") == 2 and peer.commands("RUN") == 2  # state re-sent, run repeated
    rt.close()


def test_runtime_recovers_from_a_fault_and_gives_up_on_one_that_repeats(peers):
    peer = peers(FirmwareModel(fault_on_run=1))
    rt = runtime_for(peer)
    _, extra = rt.measure(SPECS[2], Protocol.preset("quick"))
    assert extra["count"] in (5000, 5001) and peer.commands("OP") == 2
    rt.close()
    peer2 = peers(FirmwareModel(fault_on_run=10))
    rt2 = runtime_for(peer2, retries=2)
    with pytest.raises(BoardError, match=r"maxpool.*gave up after 3 attempts.*ERR FAULT"):
        rt2.measure(SPECS[2], Protocol.preset("quick"))
    rt2.close()


def test_op_the_board_cannot_hold_becomes_an_unsupported_op_naming_the_limit(peers):
    peer = peers(FirmwareModel(refuse="linear"))
    rt = runtime_for(peer)
    with pytest.raises(UnsupportedOpError, match=r"linear\|int8.*ARENA need=999999 have=65536"):
        rt.measure(SPECS[1], Protocol.preset("quick"))
    rt.close()


def test_a_board_that_stops_answering_keeps_measured_rows_and_the_run_resumes(peers, tmp_path):
    out = tmp_path / "fake_board"
    peer = peers(FirmwareModel(silent_from_op=2))
    rt = runtime_for(peer, retries=1)
    with pytest.raises(BoardTimeoutError, match="gave up after 2 attempts.*no reply to 'OP'"):
        profile_ops(rt, SPECS, out, Protocol.preset("quick"), progress=False)
    rt.close()
    from hwlat.device_tables.table import DeviceTable

    assert len(DeviceTable.load(out)) == 1  # the first op's row survived
    peer2 = peers(FirmwareModel(refuse="maxpool"))
    rt2 = runtime_for(peer2)
    result = profile_ops(rt2, SPECS, out, Protocol.preset("quick"), progress=False)
    rt2.close()
    assert (result.skipped, result.measured, result.failed) == (1, 1, 1)
    table = DeviceTable.load(out)
    assert len(table) == 3
    err = table.get(SPECS[2])
    assert err.status == "error" and "ARENA" in err.error
    assert peer2.commands("OP") == 2  # the first op was not measured again


def test_a_board_that_freezes_is_named_with_its_op_the_command_unanswered_and_what_to_do(peers, tmp_path):
    """A serial board that answers nothing, not even the resync, gave the resync's timeout alone: no op,
    not the command it stopped on, nothing on resuming (profile-mcu.md promises the port and the last command)."""
    model, frozen = FirmwareModel(), []

    def freeze_on_second_op(line):
        if frozen or (line.startswith("OP") and model.ops == 1):
            frozen.append(line)
            return []
        return model(line)

    peer = peers(freeze_on_second_op)
    rt = runtime_for(peer)
    with pytest.raises(BoardError) as err:
        profile_ops(rt, SPECS, tmp_path / "t", Protocol.preset("quick"), progress=False)
    rt.close()
    said = str(err.value)
    assert said.startswith(f"{SPECS[1].key}: the board stopped answering: serial:{peer.path}: no reply to 'OP' within")
    assert ", nor to a resync; check that it is powered" in said
    assert said.endswith("reset it, and run the same command again: the rows measured before are kept")
    from hwlat.device_tables.table import DeviceTable

    assert len(DeviceTable.load(tmp_path / "t")) == 1


def test_a_board_unplugged_mid_run_is_one_board_error_naming_the_port_and_rows_are_kept(peers, tmp_path):
    model = FirmwareModel()

    def unplug_on_second_op(line):
        if line.startswith("OP") and model.ops == 1:
            os.close(peer.master)  # the USB device is gone: the port hangs up
            return []
        return model(line)

    peer = peers(unplug_on_second_op)
    rt = runtime_for(peer)
    with pytest.raises(BoardError, match=f"serial:{peer.path}.*unplugged") as err:
        profile_ops(rt, SPECS, tmp_path / "t", Protocol.preset("quick"), progress=False)
    rt.close()
    # the op it stopped on and what to do, as for a board that freezes (profile-mcu.md)
    assert str(err.value).startswith(f"{SPECS[1].key}: serial:{peer.path}: ")
    assert str(err.value).endswith("run the same command again: the rows measured before are kept")
    from hwlat.device_tables.table import DeviceTable

    assert len(DeviceTable.load(tmp_path / "t")) == 1


def _unplugged_on_its_first_run(peers, tmp_path):
    """A board runtime on a stable port name (as udev gives a replugged board) whose board was unplugged
    on its first RUN: (runtime, port)."""
    model = FirmwareModel()

    def unplug_on_first_run(line):
        if line.startswith("RUN"):
            os.close(first.master)
            return []
        return model(line)

    first = peers(unplug_on_first_run)
    port = tmp_path / "ttyBOARD"
    port.symlink_to(first.path)
    rt = BoardRuntime(board=f"serial:{port},timeout=0.3,transfer=stream", runs=4, warmup=1)
    with pytest.raises(BoardError, match="unplugged"):
        rt.measure(SPECS[1], Protocol.preset("quick"))
    return rt, port


def test_a_board_replugged_with_another_firmware_is_refused_not_measured_into_the_same_rows(peers, tmp_path):
    """A board reflashed while a run went on (or an emulator restarted on an image rebuilt since) was
    measured on into the table of the firmware the run began with."""
    rt, port = _unplugged_on_its_first_run(peers, tmp_path)
    newer = FirmwareModel()
    second = peers(lambda line: ["OK ID proto=1 fw=fake/2 git=def board=fake core=cortex-m4"] if line == "ID"
                   else newer(line))
    port.unlink()
    port.symlink_to(second.path)
    with pytest.raises(BoardError, match=r"now runs another firmware \(fake, def, .*\) than the rows so far were "
                                         r"measured on \(fake, abc, "):
        rt.measure(SPECS[1], Protocol.preset("quick"))
    assert second.commands("OP") == 0
    rt.close()


def test_a_second_run_on_a_board_in_use_is_refused_naming_the_port(peers):
    """Two runs on one serial board interleaved their commands: the first failed with 'the board stopped
    answering ... check that it is powered' and the second could time the first one's op."""
    peer = peers(FirmwareModel())
    first = runtime_for(peer)
    first.info  # the port is open
    second = runtime_for(peer)
    with pytest.raises(BoardError, match=f"serial port '{peer.path}' is in use by another process"):
        second.info
    assert peer.commands("ID") == 1  # the second run sent nothing
    first.close()
    second.info  # free again once the first run closed it
    second.close()


def test_a_board_replugged_after_an_unplug_is_opened_again_by_the_next_call(peers, tmp_path):
    """The runtime kept the dead port after an unplug, so a later call (a rerun on a cluster worker,
    whose runtime lives on) failed again without reopening it."""
    rt, port = _unplugged_on_its_first_run(peers, tmp_path)
    second = peers(FirmwareModel())
    port.unlink()
    port.symlink_to(second.path)
    _, extra = rt.measure(SPECS[1], Protocol.preset("quick"))
    assert extra["count"] in (5000, 5001) and second.commands("RUN") == 1
    rt.close()


def test_a_board_refusal_crosses_to_another_process():
    """BoardCommandError (three arguments) did not load back from a pickle: a board's refusal raised in a
    Ray or multiprocessing worker could not reach its parent."""
    import pickle

    e = pickle.loads(pickle.dumps(BoardCommandError("E2", "bad op", "LOAD x")))
    assert (e.code, e.message, e.command, str(e)) == ("E2", "bad op", "LOAD x", "board refused LOAD: ERR E2 bad op")
