"""The reference firmware on QEMU's emulated Cortex-M boards: every kernel's output equals the numpy
int8 reference bit for bit, counts repeat exactly, limits and faults come back as clear errors.

Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (the tests skip without them).
One emulator boot serves the kernel tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwlat.profilers.board.qemu import missing_tools

MISSING = missing_tools()
pytestmark = pytest.mark.skipif(bool(MISSING), reason="emulated board needs: " + "; ".join(MISSING))

from hwlat.device_tables.errors import RuntimeUnavailableError, UnsupportedOpError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.profilers.board.protocol import BoardCommandError  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402


def S(op, shape, **attrs):
    return OpSpec.make(op, shape, dtype="int8", **attrs)


KERNEL_SPECS = [
    S("conv2d", (1, 8, 12, 12), cout=16, kernel=3),                             # SAME conv
    S("conv2d", (1, 8, 16, 16), cout=8, kernel=3, stride=2),                    # explicit PAD folded in
    S("conv2d+bn+relu", (1, 3, 10, 10), cout=8, kernel=5, stride=1, dilation=2),
    S("conv2d+relu6", (1, 4, 9, 7), cout=6, kernel=3, stride=2, padding=0, bias=False),
    S("dwconv2d+relu6", (1, 16, 12, 12), kernel=3),
    S("dwconv2d", (1, 8, 16, 16), kernel=5, stride=2),
    S("dwconv2d+bn", (1, 8, 9, 9), kernel=7, stride=1),
    S("pwconv2d", (1, 16, 8, 8), cout=24),
    S("pwconv2d+relu", (1, 8, 9, 9), cout=8, stride=2),
    S("linear", (1, 96), cout=10),
    S("linear+relu", (2, 40), cout=17),
    S("linear", (144, 120), cout=120),                                          # many rows: rounding ties occur
    S("avgpool", (1, 8, 8, 8), kernel=2),
    S("avgpool", (1, 5, 9, 9), kernel=3, stride=2),
    S("maxpool", (1, 8, 9, 9), kernel=3, stride=2, padding=1),
    S("maxpool", (1, 4, 8, 8), kernel=2),
    S("add", (1, 8, 6, 6)),
    S("add+relu", (1, 16, 5, 5)),
    S("relu", (1, 16, 12, 12)),                                                 # standalone (NB201 cells begin with one)
    S("relu6", (1, 8, 7, 9)),
    S("globalavgpool", (1, 64, 8, 8)),                                          # TFLite MEAN over h and w
    S("globalavgpool", (1, 24, 7, 5)),
    S("bn", (1, 64, 8, 8)),                                                     # TFLite MUL + ADD by per-channel constants
    S("bn+relu", (1, 16, 6, 6)),
    S("scale", (1, 16, 8, 8)),                                                  # TFLite MUL by a per-channel constant
]


@pytest.fixture(scope="module")
def board():
    from hwlat.profilers.board.runtime import BoardRuntime

    rt = BoardRuntime(board="qemu:mps2-an386", runs=2, warmup=0)
    rt.connect()
    yield rt
    rt.close()


@pytest.mark.parametrize("transfer", ["stream", "fill"])
@pytest.mark.parametrize("spec", KERNEL_SPECS, ids=lambda s: s.key.split("|")[0] + "|" + s.key.split("|")[2])
def test_kernel_output_equals_int8_reference(board, spec, transfer):
    """stream: the .tflite model's own quantised tensors; fill: the board's PRNG draws them."""
    bop = board.lower(spec, transfer=transfer)
    assert bool(bop.fills) == (transfer == "fill")
    counts = board.run(bop, 1, 0)  # also compares the output CRC with the reference's
    got = board.read_output(bop)
    np.testing.assert_array_equal(got, bop.expected)
    assert counts[0] > 0
    assert bop.expected.std() > 0  # the check compares real numbers, not a constant tensor
    if transfer == "fill":  # the PRNG's values saturate the output no more than the model's own
        def clipped(y):
            return np.mean((y == bop.params["amin"]) | (y == bop.params["amax"]))

        assert clipped(bop.expected) <= clipped(board.lower(spec, transfer="stream").expected) + 0.2


def test_board_prng_data_costs_the_same_instructions_as_model_data(board):
    spec = S("conv2d+relu", (1, 16, 8, 8), cout=16, kernel=3)
    streamed = board.run(board.lower(spec, transfer="stream"), 1, 0)[0]
    filled = board.run(board.lower(spec, transfer="fill"), 1, 0)[0]
    assert abs(filled - streamed) / streamed < 0.01  # only clamping branches depend on the data


def test_counts_repeat_exactly_across_runs_and_reloads(board):
    spec = S("conv2d+relu", (1, 8, 8, 8), cout=8, kernel=3)
    other = S("add", (1, 8, 7, 7))
    first = board.run(board.lower(spec), 3, 1)
    board.run(board.lower(other), 2, 0)  # different history before the second measurement
    second = board.run(board.lower(spec), 3, 0)
    assert len(set(first + second)) == 1
    assert first[0] % board.info.resolution == 0


def test_counts_grow_with_work(board):
    small = board.run(board.lower(S("pwconv2d", (1, 8, 8, 8), cout=8)), 1, 0)[0]
    big = board.run(board.lower(S("pwconv2d", (1, 16, 8, 8), cout=16)), 1, 0)[0]
    assert 2.0 < big / small < 4.0  # 4x the MACs, 2x the outputs (each requantised)


def test_describe_says_instructions_not_cycles(board):
    info = board.info
    assert (info.board, info.core, info.unit, info.counter) == ("mps2-an386", "cortex-m4", "instructions", "qemu-icount")
    assert info.resolution == 40 and info.clock_hz == 25_000_000
    fp = board.versions()
    assert "not cycles" in fp["note"] and fp["qemu"].startswith("QEMU emulator version")
    assert fp["firmware_build"]["flash_bytes"] > 0


def test_firmware_refuses_bad_commands_with_codes(board):
    client = board.connect()
    board._loaded = None
    cases = {
        "OP conv2d c=64 h=64 w=64 oc=64 k=3 ph=1 pw=1": "ARENA",
        "OP softmax c=8": "UNSUPPORTED",
        "OP conv2d c=8 h=4 w=4 oc=8 k=9": "RANGE",
        "OP conv2d h=4 w=4 oc=8 speed=3": "SYNTAX",
        "RUN 3": "NOOP",
        "FROB": "UNKNOWN",
        "X" * 600: "LINE",
    }
    for line, code in cases.items():
        with pytest.raises(BoardCommandError) as err:
            client.request(line)
        assert err.value.code == code, line
    with pytest.raises(BoardCommandError, match="need=.*have=262144"):
        client.request("OP pwconv2d c=64 h=64 w=64 oc=64")
    client.request("OP add c=4 h=2 w=2")
    for bad in ("DATA x 0 abc", "DATA x 0 zz", "DATA x 14 00000000", "READ y 0 999", "DATA q 0 00"):
        with pytest.raises(BoardCommandError):
            client.request(bad)


def test_op_over_the_arena_is_an_error_naming_the_op_and_the_limit(board):
    spec = S("pwconv2d", (1, 32, 64, 64), cout=64)
    with pytest.raises(UnsupportedOpError, match=r"pwconv2d\|int8\|1x32x64x64.*396032 B of tensor arena.*262144 B"):
        board.measure(spec, Protocol.preset("quick"))


def test_unsupported_op_is_an_error_naming_the_kernels(board):
    with pytest.raises(UnsupportedOpError, match="HARD_SWISH.*does not run"):
        board.lower(S("hardswish", (1, 8, 4, 4)))


def test_board_reset_is_recovered_by_reloading(board):
    spec = S("linear", (1, 64), cout=16)
    before = board.run(board.lower(spec), 1, 0)
    client = board.connect()
    client.request("RESET")  # the board reboots; its READY banner arrives during the next command
    m, extra = board.measure(spec, Protocol.preset("quick"))
    assert client.resets_seen >= 1
    assert extra["count"] == before[0]


def test_fusion_probes_over_the_arena_are_fused_when_the_firmware_runs_them_as_one_kernel(board):
    """The fusion probe's depthwise head (32x64x64) does not fit the 256 KB arena, so dwconv2d+relu6 was
    'apart': a MobileNet's ReLU6 after each depthwise conv was left unpriced, though the firmware runs the
    pair as one kernel (a clamp) and the table holds dwconv2d+relu6 rows."""
    from hwlat.profilers.fusion import detect_fusion, format_results

    rules, results = detect_fusion(board, ["dwconv2d+relu6", "add+relu", "conv2d+hardswish"], Protocol.preset("quick"),
                                   progress=False, extras=False)
    assert {"dwconv2d+relu6", "add+relu"} <= set(rules.fused) and not rules.fuses("conv2d+hardswish")
    note = {r.pattern: r.note for r in results}["dwconv2d+relu6"]
    assert note == "one kernel in the runtime's graph; not timed at the probe's size here"
    # the depthwise part did not run: it reads n/a, not 0.000 ms (stored as null, not 0)
    line = next(x for x in format_results(results).splitlines() if x.startswith("dwconv2d+relu6"))
    assert "n/a+" in line and "0.000" not in line
    assert {r.pattern: r for r in results}["dwconv2d+relu6"].to_meta()["parts_ms"][0] is None


def test_a_firmware_folder_that_cannot_be_written_says_to_point_at_a_writable_copy(tmp_path, capsys, monkeypatch):
    """A read-only checkout's firmware/ (its build/ here a file, which refuses root too) was
    'hwlat: error: .../build: [Errno 30] Read-only file system', naming no way out."""
    import shutil

    from hwlat.cli import main
    from hwlat.profilers.board.qemu import firmware_dir

    fw = tmp_path / "firmware"
    shutil.copytree(firmware_dir(), fw, ignore=shutil.ignore_patterns("build"))
    (fw / "build").write_text("")
    monkeypatch.setenv("HWLAT_FIRMWARE_DIR", str(fw))
    assert main(["profile", "ops", "--runtime", "board", "--board", "qemu:mps2-an386", "--sweep", "mcu",
                 "--out", str(tmp_path / "t"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"cannot build the board firmware in {fw / 'build'}: [Errno 17] File exists; set HWLAT_FIRMWARE_DIR " \
           "to a writable copy of the firmware/ folder" in err


def test_cli_profiles_a_sweep_on_the_emulated_board_and_resumes(tmp_path):
    from hwlat.cli import main
    from hwlat.device_tables.table import DeviceTable

    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(
        "name: tiny\ndtype: int8\nops:\n"
        "  - {op: dwconv2d+relu6, c: 8, hw: 8, kernel: 3}\n"
        "  - {op: linear, c: 32, cout: 4}\n"
        "  - {op: pwconv2d, c: 32, hw: 64, cout: 64}\n"   # over the 256 KiB arena
        "  - {op: hardswish, c: 8, hw: 4}\n")              # no firmware kernel
    out = tmp_path / "board_table"
    args = ["profile", "ops", "--runtime", "board", "--board", "qemu:mps2-an386", "--sweep", str(sweep),
            "--protocol", "quick", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    table = DeviceTable.load(out)
    assert len(table.rows("ok")) == 2 and len(table.rows("error")) == 2
    assert table.device.name == "qemu-mps2-an386/board/int8/threads=1"
    row = table.get(OpSpec.make("linear", (1, 32), dtype="int8", cout=4))
    assert row.extra["unit"] == "instructions" and row.extra["count"] > 0
    assert row.measurement.median_ms == pytest.approx(row.extra["count"] / 25e6 * 1e3)
    meta = json.loads(out.with_suffix(".json").read_text())
    fp = meta["device"]["fingerprint"]["runtime"]
    assert fp["board_info"]["git"] and fp["firmware_build"]["arena_kb"] == 256 and "icount" in fp["note"]
    assert main(args) == 0  # resumes: nothing left to measure
    assert len(DeviceTable.load(out)) == 4


def test_profile_device_on_the_emulated_board_gives_every_stage_a_board_can_have(tmp_path, capsys):
    """`hwlat profile device --runtime board`: fusion rules (a conv with its batch norm and activation
    is one firmware kernel, whose parts do not run alone), rows, stored regressors; no whole network
    to time, so networks, calibration and score are n/a, said once each, and the run is complete."""
    from hwlat.cli import main
    from hwlat.device_profile import missing_stages, table_stages, table_warnings
    from hwlat.device_tables.table import DeviceTable
    from hwlat.nas.pool import graph_of
    from hwlat.predictors.lut import LUTPredictor

    out = tmp_path / "board"
    sweep = tmp_path / "over.yaml"  # a table that starts with a row over the 256 KiB arena
    sweep.write_text("name: over\ndtype: int8\nops:\n  - {op: pwconv2d, c: 32, hw: 64, cout: 64}\n")
    assert main(["profile", "ops", "--runtime", "board", "--board", "qemu:mps2-an386", "--sweep", str(sweep),
                 "--protocol", "quick", "--out", str(out), "--no-progress"]) == 0
    assert main(["profile", "device", "--runtime", "board", "--board", "qemu:mps2-an386", "--targets", "nb201",
                 "--minutes", "2", "--protocol", "quick", "--out", str(out), "--no-progress"]) == 0
    log = capsys.readouterr().out
    for stage in ("networks", "calibration", "score"):
        assert f"n/a: {stage}: the board runtime runs one kernel at a time, not whole networks" in log
    table = DeviceTable.load(out)
    assert {"conv2d+bn", "conv2d+bn+relu"} <= set(table.meta["fusion"]["fused"])
    assert table.meta["fusion"]["patterns"]["conv2d+bn"]["note"].startswith("one kernel")
    stages = table_stages(table)
    assert missing_stages(table) == [] and stages["calibration"].startswith("n/a: ")
    assert stages["regressors"].startswith("stored") and table.rows("ok")
    assert not any("lacks" in w for w in table_warnings(table))
    assert any(r.spec.op.startswith("conv2d+") for r in table.rows("ok"))  # fused kernels are rows of their own
    dead = "nb201:0-0-0-0-0-0"  # every cell outputs x * 0: a MUL by a per-channel constant, rare in random samples
    assert not LUTPredictor(table).predict_graph(graph_of(dead)).partial
    # A table made before the board ran that MUL (no row of its family) gains the kernels when resumed
    csv = out.with_suffix(".csv")
    csv.write_text("".join(line for line in csv.read_text().splitlines(keepends=True) if not line.startswith("scale|")))
    assert LUTPredictor(DeviceTable.load(out)).predict_graph(graph_of(dead)).partial
    assert main(["profile", "device", "--runtime", "board", "--board", "qemu:mps2-an386", "--targets", "nb201",
                 "--minutes", "2", "--protocol", "quick", "--out", str(out), "--no-progress"]) == 0
    assert "3 kernel(s) of ops without a row (scale): measuring them" in capsys.readouterr().out
    table = DeviceTable.load(out)
    assert not LUTPredictor(table).predict_graph(graph_of(dead)).partial
    # A fused kernel without a row of its own op (a table made before the fusion probe found the firmware
    # runs bn+relu as one kernel) was regressed from the bn rows: resumed, it is measured
    assert "bn+relu" in table.meta["fusion"]["fused"] and any(r.spec.op == "bn+relu" for r in table.rows())
    csv.write_text("".join(line for line in csv.read_text().splitlines(keepends=True) if not line.startswith("bn+relu|")))
    assert main(["profile", "device", "--runtime", "board", "--board", "qemu:mps2-an386", "--targets", "nb201",
                 "--minutes", "2", "--protocol", "quick", "--out", str(out), "--no-progress"]) == 0
    assert "kernel(s) of ops without a row (bn+relu): measuring them" in capsys.readouterr().out
    assert any(r.spec.op == "bn+relu" for r in DeviceTable.load(out).rows("ok"))
    table = DeviceTable.load(out)
    # --remeasure of a row the board cannot run (over its arena) keeps it failed, with the reason of now
    # (a row recorded with an older firmware's reason takes the new one), and goes on
    failed = {r.spec.key for r in table.rows("error")}
    assert len(failed) == 1
    csv.write_text(csv.read_text().replace("of tensor arena", "of tensor arena, said an older firmware"))
    assert "older firmware" in DeviceTable.load(out).rows("error")[0].error
    assert main(["profile", "device", "--runtime", "board", "--board", "qemu:mps2-an386", "--targets", "nb201",
                 "--minutes", "2", "--protocol", "quick", "--out", str(out), "--no-progress",
                 "--remeasure", "pwconv2d|int8|1x32x64x64|*"]) == 0
    assert "do not run on board: a measured row keeps its measurement, a failed one takes the new reason" \
        in capsys.readouterr().out
    (row,) = DeviceTable.load(out).rows("error")
    assert row.spec.key in failed and "tensor arena" in row.error and "older firmware" not in row.error
    assert "older firmware" in row.extra["replaced"]["error"]


@pytest.mark.parametrize("machine,core", [("mps2-an385", "cortex-m3"), ("mps2-an500", "cortex-m7")])
def test_other_cores_boot_and_compute_the_same_numbers(machine, core):
    from hwlat.profilers.board.runtime import BoardRuntime

    rt = BoardRuntime(board=f"qemu:{machine}", runs=1, warmup=0)
    try:
        assert rt.info.core == core
        m, extra = rt.measure(S("conv2d+relu", (1, 8, 8, 8), cout=8, kernel=3), Protocol.preset("quick"))
        assert extra["count"] > 0 and extra["check"].startswith("crc32")
    finally:
        rt.close()


def test_a_run_with_other_build_settings_does_not_swap_the_firmware_under_a_running_one():
    """Every arena and optimisation level built into one build/<board>-<counter>/hwlat-fw.elf: a run with
    arena_kb=128 (another device) rebuilt the image that a default run, going on beside it, booted again
    after an emulator restart, so its 256 KB device was measured with a 128 KB firmware."""
    from hwlat.profilers.board.runtime import BoardRuntime

    default = BoardRuntime(board="qemu:mps2-an386")
    assert default.info.arena_bytes == 256 * 1024
    other = BoardRuntime(board="qemu:mps2-an386,arena_kb=128")
    try:
        assert other.info.arena_bytes == 128 * 1024
        default.close()  # the emulator exits; the next call boots the default run's image again
        assert default.info.arena_bytes == 256 * 1024
        assert default._build.elf.parent.name == "mps2-an386-qemu"  # the default image where the docs say
    finally:
        default.close()
        other.close()


def test_dwt_counter_build_reports_that_qemu_has_no_cycle_counter():
    from hwlat.profilers.board.runtime import BoardRuntime

    rt = BoardRuntime(board="qemu:mps2-an386,counter=dwt")
    with pytest.raises(RuntimeUnavailableError, match="counter .*dwt-cyccnt.* does not run"):
        rt.connect()


def test_an_emulator_that_exits_mid_run_is_restarted_and_the_op_measured():
    """A killed QEMU was fatal to the runtime: every later call said 'qemu:... exited' (on a cluster
    worker, until the worker itself was restarted)."""
    from hwlat.profilers.board.runtime import BoardRuntime

    rt = BoardRuntime(board="qemu:mps2-an386", runs=2, warmup=0)
    spec = S("linear", (1, 64), cout=16)
    _, before = rt.measure(spec, Protocol.preset("quick"))
    proc = rt.connect().link._proc
    proc.kill()
    proc.wait()
    _, after = rt.measure(spec, Protocol.preset("quick"))
    assert after["count"] == before["count"]
    assert rt.connect().link._proc is not proc
    rt.close()
