"""Bad input at the command line: one clear line naming the file, row or op, exit 1, no traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwlat.device_tables.device import Device
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.table import DeviceTable

ROOT = Path(__file__).resolve().parents[1]


def hwlat(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1, no traceback, and an error line holding every fragment."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hwlat: error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    """A small valid table written without measuring anything."""
    t = DeviceTable(Device.make("cpu", "onnxruntime", "fp32", fingerprint={"cpu_model": "test"}, threads=1))
    for i, c in enumerate((4, 8, 16, 32), start=1):
        t.append(OpSpec.make("relu", (1, c, 8, 8)), Measurement.from_samples([0.01 * i, 0.011 * i, 0.012 * i]))
    t.save(tmp_path / "good")
    return tmp_path / "good"


def _rewrite_csv(src: Path, dst: Path, edit) -> None:
    lines = src.with_suffix(".csv").read_text().splitlines(keepends=True)
    dst.with_suffix(".csv").write_text("".join(edit(lines)))
    dst.with_suffix(".json").write_text(src.with_suffix(".json").read_text())


def test_unknown_runtime(tmp_path):
    proc = hwlat("profile", "ops", "--runtime", "onnxrt", "--sweep", "quick", "--out", "t", cwd=tmp_path)
    assert_user_error(proc, "unknown runtime 'onnxrt'", "onnxruntime")
    assert not (tmp_path / "t.csv").exists()


def test_sweep_with_a_typo_names_file_entry_and_suggestion(tmp_path):
    sweep = tmp_path / "mine.yaml"
    sweep.write_text("name: mine\nops:\n  - {op: relu, c: 4, hw: 4}\n"
                     "  - {op: conv2d, c: 4, hw: 8, cout: 4, kernal: 3}\n")
    proc = hwlat("profile", "ops", "--runtime", "onnxruntime", "--sweep", str(sweep), "--out", "t", cwd=tmp_path)
    assert_user_error(proc, "mine.yaml", "ops entry 2", "'kernal'", "did you mean 'kernel'")
    assert not (tmp_path / "t.csv").exists(), "no table is started for a sweep that does not load"


def test_table_of_a_newer_schema(tmp_path, table):
    meta = json.loads(table.with_suffix(".json").read_text())
    meta["schema_version"] = 99
    newer = tmp_path / "newer"
    newer.with_suffix(".json").write_text(json.dumps(meta))
    newer.with_suffix(".csv").write_text(table.with_suffix(".csv").read_text())
    proc = hwlat("table", "validate", str(newer), cwd=tmp_path)
    assert_user_error(proc, "newer.json", "schema version 99", "upgrade")


def test_validate_accepts_a_good_table(tmp_path, table):
    proc = hwlat("table", "validate", str(table), cwd=tmp_path)
    assert proc.returncode == 0 and "valid" in proc.stdout and "4 rows" in proc.stdout


def test_hand_edited_and_truncated_tables_name_file_and_line(tmp_path, table):
    def edit_median(lines):
        row = next(csv.reader([lines[2]]))
        row[5] = "fast"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        return lines[:2] + [buf.getvalue()] + lines[3:]

    edited = tmp_path / "edited"
    _rewrite_csv(table, edited, edit_median)
    assert_user_error(hwlat("table", "validate", str(edited), cwd=tmp_path), "edited.csv", "line 3")

    truncated = tmp_path / "truncated"  # a row cut short in the middle of the file
    _rewrite_csv(table, truncated, lambda lines: lines[:3] + [lines[3][: len(lines[3]) // 3] + "\n"] + lines[4:])
    assert_user_error(hwlat("table", "validate", str(truncated), cwd=tmp_path), "truncated.csv", "line 4", "fields")


def test_malformed_onnx_model(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"definitely not protobuf")
    assert_user_error(hwlat("profile", "model", "broken.onnx", cwd=tmp_path), "broken.onnx", "ONNX")
    assert_user_error(hwlat("profile", "model", "absent.onnx", cwd=tmp_path), "absent.onnx", "no such file")
    for model in ("broken.onnx", "absent.onnx"):  # `predict` names the model before it reads (and times) the table
        assert_user_error(hwlat("predict", model, "--table", "no_such_table", cwd=tmp_path), model)


def test_an_architecture_key_without_its_space_says_it_needs_one():
    import hwlat as api
    from hwlat.device_tables.errors import ModelError

    for key in (5, "5"):
        with pytest.raises(ModelError, match=r"an architecture key needs its space \(space="):
            api.predict(key, table="no_such_table")


def test_runtime_options_that_do_not_apply(tmp_path):
    proc = hwlat("profile", "ops", "--runtime", "onnxruntime", "--precision", "int8", "--sweep", "quick", "--out", "t",
                 cwd=tmp_path)
    assert_user_error(proc, "fp32", "litert")
    proc = hwlat("profile", "ops", "--runtime", "torch", "--opt-level", "basic", "--sweep", "quick", "--out", "t",
                 cwd=tmp_path)
    assert_user_error(proc, "--opt-level", "onnxruntime")


@pytest.mark.parametrize("args, fragments", [
    (("predict", "--classic", "resnet18@r0", "--table", "cpu_onnxruntime_fp32_threads1"),
     ("'resnet18@r0'", "resolution is 32 to 1024")),
    (("predict", "--classic", "resnet18@r224w0", "--table", "cpu_onnxruntime_fp32_threads1"), ("width multiplier",)),
    (("predict", "--classic", "resnet18@x160", "--table", "cpu_onnxruntime_fp32_threads1"),
     ("is not like mobilenet_v2@r160w0.75",)),
    (("predict", "--space", "nb201", "--arch", "1", "--table", "cpu_onnxruntime_fp32_threads1", "--input-shape",
      "1x3x160x160"), ("--input-shape sizes the inputs of an ONNX model",)),
    (("predict", "--space", "nb201", "--arch", "abc", "--table", "cpu_onnxruntime_fp32_threads1"),
     ("--arch 'abc': not a file, range, list or key",)),
    (("predict", "--space", "nb201", "--archs", "missing/keys.csv", "--table", "cpu_onnxruntime_fp32_threads1"),
     ("--archs 'missing/keys.csv': no such file",)),
    (("predict", "--space", "nb201", "--archs", "/tmp", "--table", "cpu_onnxruntime_fp32_threads1"),
     ("--archs '/tmp': a folder; give a file of architectures",)),
    (("table", "show", "cpu_onnxruntime_fp32_threads1", "--op", "nosuchop"), ("no rows of op 'nosuchop'", "relu")),
])
def test_flags_given_wrong_are_named_as_given(tmp_path, args, fragments):
    assert_user_error(hwlat(*args, cwd=tmp_path), *fragments)


def test_a_file_that_is_not_a_table_or_not_a_model_says_which(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not protobuf")
    assert_user_error(hwlat("predict", "--space", "nb201", "--arch", "1", "--table", str(model), cwd=tmp_path),
                      "is a file but not a device table")
    assert_user_error(hwlat("predict", str(model), "--table", "cpu_onnxruntime_fp32_threads1", cwd=tmp_path),
                      "not a readable ONNX model (DecodeError: ", "re-export it")


def test_a_table_lacking_stages_names_the_command_of_its_own_device(tmp_path):
    proc = hwlat("predict", "--classic", "resnet18@r64", "--table", "nvidia_h200_torch_fp16_threads1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("`hwlat profile device --runtime torch --precision fp16 --device cuda --out "
            "tables/nvidia_h200_torch_fp16_threads1` adds them") in proc.stderr


def test_a_sweep_without_a_configuration_at_the_precision_makes_no_table(tmp_path):
    """The int8 `mcu` sweep at fp32 used to measure nothing into an empty table and exit 0."""
    proc = hwlat("profile", "ops", "--runtime", "tflm", "--precision", "fp32", "--sweep", "mcu", "--out", "t", cwd=tmp_path)
    assert_user_error(proc, "the sweep mcu has no float32 configuration for tflm", "give --precision int8")
    assert not list(tmp_path.iterdir())
    proc = hwlat("profile", "ops", "--runtime", "onnxruntime", "--sweep", "mcu", "--out", "t", cwd=tmp_path)
    line = assert_user_error(proc, "the sweep mcu has no float32 configuration for onnxruntime",
                             "onnxruntime cannot measure them either", "use --runtime litert or tflm for int8")
    assert "give --precision" not in line and not list(tmp_path.iterdir())


def test_a_float_sweep_on_the_board_does_not_advise_a_precision_the_board_cannot_measure(tmp_path):
    """It said 'give --precision fp32' (and warned 'measuring int8, not fp32' though no precision was given)."""
    from hwlat.profilers.board.qemu import missing_tools

    if missing_tools():
        pytest.skip("emulated board needs: " + "; ".join(missing_tools()))
    (tmp_path / "lin.yaml").write_text("name: lin\nops:\n  - {op: linear, c: 8, cout: 2}\n")
    proc = hwlat("profile", "ops", "--runtime", "board", "--sweep", "lin.yaml", "--out", "t", cwd=tmp_path)
    line = assert_user_error(proc, "the sweep lin.yaml has no int8 configuration for board",
                             "board measures int8 only: a sweep file's `dtype: int8` gives such configurations")
    assert "--precision" not in line and "warning" not in proc.stderr


def test_a_table_whose_rows_all_failed_is_recorded_and_refused_by_predict(tmp_path):
    """int8 LiteRT cannot quantise a layer norm: the row is stored as failed, saying why; predict used to
    print '0.000 ms (PARTIAL ...)' with exit 0 from such a table."""
    (tmp_path / "ln.yaml").write_text("name: ln\ndtype: int8\nops:\n  - {op: layernorm, tokens: 16, c: 64}\n")
    proc = hwlat("profile", "ops", "--runtime", "litert", "--precision", "int8", "--sweep", "ln.yaml", "--out", "ln",
                 "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0 and "1 failed" in proc.stdout, proc.stderr
    assert "layernorm|int8|16x64|: hwlat's int8 TFLite models (litert, tflm) cover CNN kernels only" in proc.stdout
    assert "--precision fp32" in proc.stdout
    proc = hwlat("profile", "ops", "--runtime", "tflm", "--sweep", "ln.yaml", "--out", "ln_tflm", "--no-progress",
                 cwd=tmp_path)  # the same lowering: the message names tflm too (it read 'LiteRT models' only)
    assert "hwlat's int8 TFLite models (litert, tflm) cover CNN kernels only" in proc.stdout, proc.stderr
    assert_user_error(hwlat("predict", "--classic", "resnet18@r64", "--table", "ln", cwd=tmp_path),
                      "ln has no measured rows", "hwlat profile device --runtime litert --precision int8 --out ln")


@pytest.mark.parametrize("runtime", ["litert", "tflm", "torch"])
def test_a_model_op_a_runtime_cannot_run_is_named_with_the_runtime_that_can(tmp_path, runtime):
    """A TopK used to be 'cannot lower to TFLite: ...' (no runtime, nothing to do) on litert and tflm, and on
    torch a list of the ops it runs, without a way on."""
    import onnx
    from onnx import TensorProto, helper

    k = helper.make_tensor("k", TensorProto.INT64, [1], [3])
    node = helper.make_node("TopK", ["x", "k"], ["y", "i"], name="top")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], initializer=[k])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "topk.onnx"))
    proc = hwlat("profile", "model", "topk.onnx", "--runtime", runtime, "--protocol", "quick", cwd=tmp_path)
    assert_user_error(proc, "TopK", runtime, "--runtime onnxruntime, which runs every ONNX op")


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch", "litert"])
def test_inputs_too_large_for_memory_are_one_message(tmp_path, runtime):
    """--input-shape 1x3x1000000x1000000 on a dynamic model was a numpy _ArrayMemoryError traceback while
    the inputs were made (`hwlat predict` of the same shape predicts it)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "dyn.onnx"))
    proc = hwlat("profile", "model", "dyn.onnx", "--runtime", runtime, "--protocol", "quick",
                 "--input-shape", "1x3x1000000x1000000", cwd=tmp_path)
    assert_user_error(proc, "out of memory", "a smaller --input-shape")


def test_predict_refuses_top_with_json(tmp_path):
    """`hwlat predict model.onnx --top 10 --json` (so in the predict tutorial) printed every kernel: --top was
    silently ignored."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    proc = hwlat("predict", "m.onnx", "--table", "cpu_onnxruntime_fp32_threads1_xeon_m167", "--as-profiled", "--top", "3",
                 "--json", cwd=tmp_path)
    assert_user_error(proc, "--top", "--json prints every kernel")
    assert not proc.stdout


def test_a_tflite_file_is_named_as_one(tmp_path):
    """A LiteRT user's .tflite read 'not a readable ONNX model (DecodeError ...); re-export it'."""
    from hwlat.device_tables.ops import OpSpec
    from hwlat.profilers.tflite.builder import build_model

    (tmp_path / "m.tflite").write_bytes(build_model(OpSpec.make("conv2d", (1, 8, 8, 8), cout=8, kernel=3)).content)
    for args in (("profile", "model", "m.tflite", "--runtime", "litert"), ("profile", "model", "m.tflite"),
                 ("predict", "m.tflite", "--table", "cpu_litert_fp32_threads1_xeon_m167")):
        assert_user_error(hwlat(*args, cwd=tmp_path), "m.tflite: a TFLite flatbuffer, not an ONNX model",
                          "give the model's .onnx export")


def test_tflm_refuses_a_precision_it_has_no_kernels_for(tmp_path):
    """tflm --precision fp16 used to measure float32 kernels into a table named cpu/tflm/fp16."""
    proc = hwlat("profile", "ops", "--runtime", "tflm", "--precision", "fp16", "--sweep", "quick", "--out", "t",
                 cwd=tmp_path)
    assert_user_error(proc, "tflm runs precision int8 or fp32, not 'fp16'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [("profile", "ops", "--sweep", "quick"), ("profile", "archs", "--space", "nb201",
                                                                             "--archs", "random:2")])
def test_a_refused_clock_leaves_no_table_behind(tmp_path, command):
    """--clock cpu with two threads is refused before a table is made (an empty one had been left, which
    then refused the corrected command as 'measured with other settings')."""
    proc = hwlat(*command, "--runtime", "onnxruntime", "--threads", "2", "--clock", "cpu", "--out", "t", cwd=tmp_path)
    assert_user_error(proc, "--clock cpu times the calling thread only")
    assert not list(tmp_path.iterdir())


def test_the_command_a_table_lacking_stages_names_resumes_it(table):
    """The suggested command carries the protocol and clock the table was measured with (a resume with
    others is refused), and no flag where the table used the defaults."""
    from hwlat.device_profile import profile_command
    from hwlat.profilers.protocol import Protocol

    t = DeviceTable.load(table)
    t.update_meta(protocol=Protocol.preset("quick").to_dict())
    assert profile_command(DeviceTable.load(table)).endswith(f"--runtime onnxruntime --protocol quick --clock wall --out {table}")
    t.update_meta(protocol={**Protocol.preset("default").to_dict(), "clock": "cpu"})
    assert profile_command(DeviceTable.load(table)) == f"hwlat profile device --runtime onnxruntime --out {table}"


def test_table_options_with_an_adapted_predictor_are_refused(tmp_path):
    proc = hwlat("predict", "--predictor", "my_board", "--space", "nb201", "--arch", "5", "--no-fusion", "--statistic",
                 "p10", "--top", "3", cwd=tmp_path)
    assert_user_error(proc, "--no-fusion, --statistic, --top: for a device table (--table)")


# ---- a damaged JSON sidecar -------------------------------------------------------------------
def _table_with_meta(tmp_path: Path, edit) -> Path:
    """A copy of a complete shipped table (its first rows, its networks and regressors) whose JSON
    `edit(meta)` changed."""
    from fuzzers import seed_complete_table

    base = seed_complete_table(tmp_path)
    meta = json.loads(base.with_suffix(".json").read_text())
    edit(meta)
    base.with_suffix(".json").write_text(json.dumps(meta))
    return base


def _set(path: str, value):
    def edit(meta):
        *parents, last = path.split(".")
        for k in parents:
            meta = meta[k]
        meta[last] = value
    return edit


PREDICT = ("predict", "--space", "nb201", "--arch", "5", "--as-profiled", "--table")


@pytest.mark.parametrize("path, value, named", [
    ("lut_calibration.constant_ms", "oops", "lut_calibration.constant_ms is 'oops', expected a number"),
    ("lut_calibration.constant_ms", None, "lut_calibration.constant_ms is null, expected a number"),
    ("lut_calibration.by_type.conv2d", [1.0], "lut_calibration.by_type.conv2d is [1.0], expected a [scale, ms] pair"),
    ("lut_calibration", [1.0], "lut_calibration is [1.0], expected an object or null"),
    ("fusion", "x", "fusion is 'x', expected an object or null"),
    ("self_score", "x", "self_score is 'x', expected an object or null"),
    ("device.fingerprint", "x", "device.fingerprint is 'x', expected an object or null"),
    ("profile_device.protocol.clock", "x", "profile_device.protocol.clock is 'x', expected 'wall' or 'cpu'"),
    ("protocol.clock", "sun", "protocol.clock is 'sun', expected 'wall' or 'cpu'"),
    ("device.settings.threads", "a", "device.settings.threads is 'a', expected an integer"),  # `table drift`: TypeError
])
def test_a_damaged_json_entry_is_one_error_naming_file_and_entry_in_validate_show_and_predict(
        tmp_path, capsys, path, value, named):
    from hwlat.cli import main

    base = _table_with_meta(tmp_path, _set(path, value))
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    for argv in (("table", "validate", str(base)), ("table", "show", str(base)), (*PREDICT, str(base))):
        assert main(list(argv)) == 1, argv
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("hwlat: error:")]
        assert len(errors) == 1, err
        assert f"{base}.json: {named}" in errors[0], errors[0]
        assert "restore t.json from a copy" in errors[0]
        if not path.startswith("device"):  # an entry `hwlat profile device` makes again on resuming the table
            assert f"delete its \"{path.split('.')[0]}\" entry" in errors[0] and f"--out {base}`" in errors[0]
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before  # nothing read changed a file



@pytest.mark.parametrize("device, flags", [
    ({"runtime": "onnxruntime", "settings": {"threads": 1, "opt_level": "basic"}}, "--opt-level basic"),
    ({"runtime": "litert", "settings": {"threads": 2, "xnnpack": False}}, "--threads 2 --xnnpack off"),
    ({"runtime": "board", "hardware": "qemu-mps2-an385", "precision": "int8", "settings": {"threads": 1, "arena_kb": "128"}},
     "--precision int8 --board qemu:mps2-an385,arena_kb=128"),
])
def test_the_command_that_mends_a_damaged_entry_names_the_tables_device(tmp_path, capsys, device, flags):
    """It named --runtime, --precision and --threads only: for a table measured with --opt-level basic,
    --xnnpack off or another board it was refused as another device."""
    import shlex

    from hwlat.cli import build_parser, main
    from hwlat.commands.profile import runtime_settings
    from hwlat.profilers.runtimes import get_runtime

    def edit(meta):
        meta["device"].update(device)
        meta["device"]["name"] = Device.from_dict(meta["device"]).name
        meta["protocol"] = "x"

    base = _table_with_meta(tmp_path, edit)
    assert main(["table", "show", str(base)]) == 1
    err = capsys.readouterr().err
    command = err.split("run `hwlat ", 1)[1].split("`", 1)[0]
    assert command == f"profile device --runtime {device['runtime']} {flags} --out {base}", err
    if device["runtime"] != "board":  # the device the command measures is the table's
        argv = shlex.split(command)
        args = build_parser(argv).parse_args(argv)
        measured = get_runtime(args.runtime, **runtime_settings(args)).device().name
        assert measured == Device.from_dict(json.loads(base.with_suffix(".json").read_text())["device"]).name

def test_a_score_without_the_entries_it_is_read_with_is_named(tmp_path, capsys):
    from hwlat.cli import main

    base = _table_with_meta(tmp_path, lambda meta: meta["self_score"].pop("within_10"))
    assert main(["table", "show", str(base)]) == 1
    assert "self_score.networks is given without self_score.within_10" in capsys.readouterr().err


def test_entries_read_only_on_resuming_warn_in_validate_and_refuse_the_resume(tmp_path, capsys):
    """`resumed` (a log a resumed run appends to) damaged: predicting and showing go on, validate warns,
    adding to the table is refused naming it."""
    from hwlat.device_tables.errors import TableError
    from hwlat.cli import main

    base = _table_with_meta(tmp_path, _set("resumed", "x"))
    assert main(["table", "validate", str(base)]) == 0
    out = capsys.readouterr()
    assert "valid" in out.out and "hwlat: warning:" in out.err and "resumed is 'x', expected a list" in out.err
    assert main([*PREDICT, str(base)]) == 0
    device = DeviceTable.load(base).device
    with pytest.raises(TableError, match="resumed is 'x', expected a list"):
        DeviceTable.open(base, device)


def test_validate_warns_of_a_networks_file_that_is_gone(tmp_path, capsys):
    """The table's run timed networks into NAME.networks.csv, since deleted: its stored calibration still
    predicts (validate passes), but the speed check cannot run, which validate says."""
    from hwlat.cli import main

    base = _table_with_meta(tmp_path, lambda meta: None)
    assert main(["table", "validate", str(base)]) == 0
    assert "networks.csv" not in capsys.readouterr().err
    Path(f"{base}.networks.csv").unlink()
    assert main(["table", "validate", str(base)]) == 0
    out = capsys.readouterr()
    warnings = [ln for ln in out.err.splitlines() if ln.startswith("hwlat: warning:")]
    assert "valid" in out.out and len(warnings) == 1 and f"{base}.networks.csv: not found" in warnings[0]
    assert "speed now" in warnings[0] and "restore the file" in warnings[0]
    assert main([*PREDICT, str(base)]) == 0  # predicts, and says so too
    assert f"{base}.networks.csv: not found" in capsys.readouterr().err


def test_validate_of_a_renamed_table_names_the_networks_file_it_left_behind(tmp_path, capsys):
    """`mv NAME.csv NEW.csv; mv NAME.json NEW.json` leaves NAME.networks.csv behind: the warning says to
    rename it too (it said to restore the file from a copy or time the networks again)."""
    from hwlat.cli import main

    base = _table_with_meta(tmp_path, lambda meta: None)
    new = base.with_name("renamed")
    for suffix in (".csv", ".json"):
        Path(f"{base}{suffix}").rename(f"{new}{suffix}")
    assert main(["table", "validate", str(new)]) == 0
    err = capsys.readouterr().err
    assert f"if the table was renamed from {base.name}, rename its files beside it too ({base.name}.networks.csv -> " \
           "renamed.networks.csv" in err


def test_profile_model_json_path_is_checked_before_measuring(tmp_path):
    """`--json` under a folder that cannot be made is one error before the measurement (it was lost after
    it), and a missing folder is made."""
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "broken.onnx").write_bytes(b"not protobuf")  # never read: the path is refused first
    assert_user_error(hwlat("profile", "model", "broken.onnx", "--json", "blocker/x.json", cwd=tmp_path),
                      "blocker is a file, not a folder")


def test_an_out_that_is_a_folder_or_cannot_be_written_is_named_so(tmp_path):
    """`--out DIR/` wrote DIR.csv beside the folder; an --out in a folder that takes no file said it was
    being written by another process."""
    (tmp_path / "existing").mkdir()
    for out in ("newdir/", "existing"):
        assert_user_error(hwlat("profile", "ops", "--runtime", "onnxruntime", "--sweep", "quick", "--out", out,
                                cwd=tmp_path), f"{out} names a folder", "my_table")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    if Path("/proc/self").is_dir():  # a folder no one can add a file to, root included
        assert_user_error(hwlat("profile", "ops", "--runtime", "onnxruntime", "--sweep", "quick", "--out",
                                "/proc/hwlat_table", cwd=tmp_path), "/proc takes no new file")


@pytest.mark.parametrize("fresh", [(), ("--fresh",)])
def test_an_interrupted_measurement_says_to_run_the_same_command_again(tmp_path, fresh):
    """With --fresh, the same command again set what was measured aside and started anew: it is named."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "hwlat", "profile", "archs", "--space", "nb201", "--archs", "random:500",
                             "--protocol", "quick", "--no-progress", "--out", "a", *fresh], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "a.passes.csv").exists() and time.monotonic() < deadline:  # measuring by now
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    again = "the same command without --fresh again" if fresh else "the same command again"
    assert f"interrupted; what was measured is stored: run {again}" in err


def test_a_sample_too_large_for_memory_is_one_message(tmp_path):
    proc = hwlat("space", "sample", "--space", "fbnet", "-n", str(10**15), cwd=tmp_path)  # > any address space
    assert_user_error(proc, "out of memory", "Unable to allocate", "a smaller -n")


def test_an_interrupted_predict_archs_leaves_its_out_file_as_it_was(tmp_path):
    import argparse
    from types import SimpleNamespace

    from hwlat.commands.predict import _write_rows

    out = tmp_path / "pred.csv"
    out.write_text("the last run's predictions\n")

    def rows():
        yield {"k": 1}, ["1.0"]
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM while predicting

    with pytest.raises(KeyboardInterrupt):
        _write_rows(argparse.Namespace(out=str(out)), [SimpleNamespace(record={"k": 1})], rows(), ["predicted_ms"])
    assert out.read_text() == "the last run's predictions\n" and list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("flags, words", [
    (("--adaptive", "--budget", "10", "--sweep", "quick"), "--sweep and --adaptive: give one"),
    (("--sweep", "quick", "--budget", "10"), "--budget counts the op measurements of --adaptive"),
    (("--sweep", "quick", "--calibrate", "3", "--redetect-fusion"),
     "--calibrate, --redetect-fusion: options of --adaptive, which a --sweep does not use"),
    (("--targets", "nb201",), "--targets: options of --adaptive"),
    (("--adaptive", "--budget", "3", "--cluster", "127.0.0.1:9", "--device", "a"), "--adaptive runs on this machine"),
    (("--adaptive", "--budget", "3", "--targets", ","), "--targets ',': choose from"),  # no target: an empty table
])
def test_profile_ops_options_that_would_be_ignored_are_refused(tmp_path, flags, words):
    proc = hwlat("profile", "ops", "--runtime", "onnxruntime", *flags, "--out", "t", cwd=tmp_path)
    assert_user_error(proc, words)
    assert not list(tmp_path.iterdir())


def test_an_arch_table_given_for_a_device_table_is_named_so(tmp_path):
    arch = ROOT / "hwlat" / "device_tables" / "tables" / "arch" / "nb201_cpu_onnxruntime_fp32_threads1"
    assert_user_error(hwlat("table", "show", str(arch), cwd=tmp_path), "not a hwlat device table", "it is an arch table")


def test_profile_device_refuses_a_bad_pattern_before_making_a_table(tmp_path):
    proc = hwlat("profile", "device", "--runtime", "onnxruntime", "--patterns", "conv2d+rleu", "--out", "t", cwd=tmp_path)
    assert_user_error(proc, "'conv2d+rleu' is not a fusion pattern", "did you mean 'conv2d+relu'")
    assert not list(tmp_path.iterdir())


def test_a_hardware_label_is_one_word(tmp_path):
    proc = hwlat("profile", "archs", "--space", "nb201", "--archs", "1", "--hardware", "a/b", "--out", "t", cwd=tmp_path)
    assert proc.returncode == 2 and "'a/b': one word of letters" in proc.stderr and not list(tmp_path.iterdir())


def test_predict_json_given_a_file_says_it_prints(capsys):
    """`hwlat predict --json out.json ...` (as `profile model`, `search` and `bench` take --json FILE) read
    out.json as the model and said 'give exactly one network or set'."""
    from hwlat.cli import main

    assert main(["predict", "--json", "out.json", "--space", "nb201", "--arch", "1462",
                 "--table", "cpu_onnxruntime_fp32_threads1"]) == 1
    assert "--json prints the prediction and takes no file (out.json was read as the model)" in capsys.readouterr().err
