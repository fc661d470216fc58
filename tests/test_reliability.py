"""Reliability regressions of issue 22: every bad input is one clear error and a non-zero exit,
never a traceback, and never a table created or changed."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwlat.cli import main

SHIPPED = "cpu_onnxruntime_fp32_threads1"


# =============================================================================================
# Every input validated: loaders, predictions that are not latencies, CLI numbers, partial
# predictions (issue 22, items 3, 4, 6, 8, 9, 11)
# =============================================================================================
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `hwlat argv` run in this process (argparse's exit included)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def assert_one_error(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit 1 and exactly one ``hwlat: error:`` line holding every fragment."""
    code, out, err = result
    assert code == 1, (code, out, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("hwlat: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_parse_error(result: tuple[int, str, str], option: str) -> str:
    """argparse's refusal: exit 2, its usage line, then one error line naming the option."""
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: hwlat"), err
    assert ": error: argument " in lines[-1] and option in lines[-1], err
    assert sum(": error:" in ln for ln in lines) == 1 and "Traceback" not in err
    return lines[-1]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a hash of its bytes: nothing may be created or changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def device_table(tmp_path: Path) -> Path:
    """A small valid device table, written without measuring."""
    from hwlat.device_tables.device import Device
    from hwlat.device_tables.measurement import Measurement
    from hwlat.device_tables.ops import OpSpec
    from hwlat.device_tables.table import DeviceTable

    t = DeviceTable(Device.make("cpu", "onnxruntime", "fp32", fingerprint={"cpu_model": "test"}, threads=1))
    for i, c in enumerate((4, 8, 16), start=1):
        t.append(OpSpec.make("relu", (1, c, 8, 8)), Measurement.from_samples([0.01 * i, 0.011 * i, 0.012 * i]))
    t.save(tmp_path / "good")
    return tmp_path / "good"


def _set_cell(csv_path: Path, line: int, column: str, value: str) -> None:
    lines = csv_path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    row = next(csv.reader([lines[line - 1]]))
    row[header.index(column)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    lines[line - 1] = buf.getvalue()
    csv_path.write_text("".join(lines))


# ---- device tables: finite positive statistics, known schema versions ------------------------
@pytest.mark.parametrize("column, value", [
    ("median_ms", "inf"), ("median_ms", "nan"), ("p90_ms", "1e999"), ("mean_ms", "-1"), ("std_ms", "fast"),
    ("iqr_ms", "-inf"),
])
@pytest.mark.parametrize("command", [("table", "validate"), ("predict", "--classic", "mobilenet_v2@r96w0.5", "--table")])
def test_device_table_statistic_not_a_latency_is_one_error(capsys, device_table, column, value, command):
    csv_path = device_table.with_suffix(".csv")
    _set_cell(csv_path, 3, column, value)
    before = snapshot(device_table.parent)
    line = assert_one_error(run_cli(capsys, *command, str(device_table)), str(csv_path), "line 3", column, repr(value))
    assert "not a finite latency" in line
    assert snapshot(device_table.parent) == before


@pytest.mark.parametrize("version, says", [(0, "reads 1"), (-3, "reads 1"), (2, "newer than this hwlat reads (1)"),
                                           ("1", "not an integer"), (True, "not an integer")])
def test_device_table_schema_version_must_be_known(capsys, device_table, version, says):
    json_path = device_table.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    meta["schema_version"] = version
    json_path.write_text(json.dumps(meta))
    before = snapshot(device_table.parent)
    assert_one_error(run_cli(capsys, "table", "validate", str(device_table)), str(json_path), says)
    assert snapshot(device_table.parent) == before


def test_device_table_row_with_another_width_is_one_error(capsys, device_table):
    csv_path = device_table.with_suffix(".csv")
    lines = csv_path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + ",extra\n"
    csv_path.write_text("".join(lines))
    assert_one_error(run_cli(capsys, "table", "validate", str(device_table)), "line 3", "16 fields, expected 15")


def test_shipped_tables_still_load(capsys):
    code, out, _ = run_cli(capsys, "table", "list")
    assert code == 0 and SHIPPED in out


def test_table_list_of_a_folder_lists_its_device_tables_and_names_a_damaged_one(capsys, device_table, tmp_path):
    """`hwlat table list` listed only the shipped tables: a lab's own folder of tables could not be listed."""
    shutil.copy(device_table.with_suffix(".json"), tmp_path / "broken.json")
    (tmp_path / "broken.csv").write_text("not,a,table\n")
    (tmp_path / "notes.json").write_text('{"schema": "something else"}')
    (tmp_path / "notes.csv").write_text("a,b\n")
    code, out, err = run_cli(capsys, "table", "list", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("broken") and "unreadable:" in lines[0], out
    assert lines[1].startswith("good") and "3 rows" in lines[1] and "cpu/onnxruntime/fp32/threads=1" in lines[1]
    assert_one_error(run_cli(capsys, "table", "list", str(tmp_path / "good.csv")), "not a folder")


def test_table_list_of_a_folder_names_a_table_whose_json_is_damaged(capsys, device_table, tmp_path):
    """A table whose NAME.json was cut (not JSON) was left out of the list without a word, as if no table were
    there; a damaged CSV was named unreadable."""
    shutil.copy(device_table.with_suffix(".csv"), tmp_path / "cut.csv")
    (tmp_path / "cut.json").write_text('{"schema": "hwlat.device_table", "dev')
    code, out, err = run_cli(capsys, "table", "list", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("cut") and "unreadable:" in lines[0] and "cut.json" in lines[0], out
    assert lines[1].startswith("good"), out


# ---- sweep files: geometry checked before any table exists -----------------------------------
@pytest.mark.parametrize("field, value, says", [
    ("kernel", "-3", "kernel is -3; needs a whole number of 1 or more"),
    ("kernel", "0", "kernel is 0"),
    ("kernel", "3.5", "kernel is 3.5"),
    ("kernel", "true", "kernel is True"),
    ("stride", "0", "stride is 0"),
    ("c", "0", "c is 0"),
    ("hw", "-8", "hw is -8"),
    ("cout", "'many'", "cout is 'many'; needs a whole number of 1 or more or 'same'"),
    ("padding", "-1", "padding is -1; needs a whole number of 0 or more"),
    ("dtype", "float16", "dtype 'float16'"),
    ("bias", "1", "bias is 1; needs true or false"),
])
def test_sweep_with_impossible_values_is_refused_before_any_table(capsys, tmp_path, field, value, says):
    entry = {"op": "conv2d", "c": "8", "hw": "8", "cout": "8", "kernel": "3", "stride": "1", field: value}
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("name: bad\nops:\n  - {" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}\n")
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, "profile", "ops", "--runtime", "onnxruntime", "--sweep", str(sweep),
                             "--protocol", "quick", "--out", str(tmp_path / "t"), "--no-progress"),
                     f"{sweep}, ops entry 1", says)
    assert snapshot(tmp_path) == before  # no table created


@pytest.mark.parametrize("attrs, says", [
    ({"kernel": 3.5}, "kernel: 3.5 is not a whole number"), ({"kernel": -3}, "kernel=-3: needs 1 or more"),
    ({"kernel": 3, "stride": 0}, "stride=0: needs 1 or more"), ({"kernel": 3, "bias": "yes"}, "needs true or false"),
])
def test_opspec_refuses_impossible_attributes(attrs, says):
    from hwlat.device_tables.errors import OpSpecError
    from hwlat.device_tables.ops import OpSpec

    with pytest.raises(OpSpecError, match=says):
        OpSpec.make("conv2d", (1, 8, 8, 8), cout=8, **attrs)
    with pytest.raises(OpSpecError, match="not a whole number"):
        OpSpec.make("relu", (1, 8, 8.5, 8))
    assert OpSpec.make("conv2d", (1, 8, 8, 8), cout=8.0, kernel=3.0).a["kernel"] == 3  # whole floats are fine


# ---- arch tables and measurement CSVs ------------------------------------------------------
NB201_KEYS = [
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|none~0|avg_pool_3x3~1|+|avg_pool_3x3~0|none~1|none~2|",
    "|none~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|",
]


def _samples(path: Path, cells: list[str], keys: list[str] = NB201_KEYS) -> Path:
    path.write_text("arch_str,board\n" + "".join(f"{k},{v}\n" for k, v in zip(keys, cells)))
    return path


@pytest.mark.parametrize("bad, says", [
    ("inf", "line 4: board = 'inf' for architecture"), ("nan", "line 4: board = 'nan'"),
    ("1e999", "line 4: board = '1e999'"), ("fast", "line 4: board = 'fast'"), ("0", "line 4: board = '0'"),
    ("-1.5", "line 4: board = '-1.5'"), ("1e300", "over 1e+06 ms, not one forward pass in ms"),
])
def test_device_samples_that_are_not_latencies_are_one_error(capsys, tmp_path, bad, says):
    cells = ["1.5", "1.2", bad, "2.0", "0.9", "1.1"]
    samples = _samples(tmp_path / "samples.csv", cells)
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", "pretrained", "--device-samples",
                             str(samples), "--max-latency-ms", "2", "--budget", "2", "--no-progress"),
                     str(samples), says)
    assert snapshot(tmp_path) == before


def test_device_samples_with_a_bad_key_name_the_file_and_key(capsys, tmp_path):
    samples = _samples(tmp_path / "samples.csv", ["1"] * 6, NB201_KEYS[:5] + ["|nor_conv_9x9~0|"])
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", "pretrained", "--device-samples",
                             str(samples), "--max-latency-ms", "2", "--no-progress"),
                     str(samples), "'|nor_conv_9x9~0|'")


def test_measurements_that_are_a_folder_are_named_as_one(capsys, tmp_path):
    (tmp_path / "m.csv").mkdir()
    assert_one_error(run_cli(capsys, "adapt", "fit", "--space", "nb201", "--measurements", str(tmp_path / "m.csv"),
                             "--out", str(tmp_path / "p")), f"{tmp_path / 'm.csv'} is a folder")


@pytest.mark.parametrize("index", ["inf", "3.5", "x", "1e300"])
def test_device_samples_whose_index_is_not_an_architecture_are_one_error(capsys, tmp_path, index):
    from hwlat.nas.spaces import get_space

    sp = get_space("nb201")
    samples = tmp_path / "samples.csv"
    samples.write_text("nb201_index,arch_str,board\n" + "".join(
        f"{index if i == 2 else sp.key_record(sp.parse(k))['nb201_index']},{k},1.5\n" for i, k in enumerate(NB201_KEYS)))
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", "pretrained", "--device-samples",
                             str(samples), "--max-latency-ms", "2", "--no-progress"),
                     str(samples), f"line 4: '{index}' is not a nb201 architecture")


def test_measurements_whose_key_columns_disagree_are_one_error(capsys, tmp_path):
    from hwlat.nas.spaces import get_space

    sp = get_space("nb201")
    samples = tmp_path / "samples.csv"
    rows = [(sp.key_record(sp.parse(k))["nb201_index"], k) for k in NB201_KEYS]
    rows[3] = (rows[0][0], rows[3][1])  # line 5: the first architecture's index beside another's string
    samples.write_text("nb201_index,arch_str,board\n" + "".join(f"{i},{k},1.5\n" for i, k in rows))
    assert_one_error(run_cli(capsys, "adapt", "fit", "--space", "nb201", "--measurements", str(samples), "--out",
                             str(tmp_path / "pred")),
                     str(samples), "line 5: its key columns name different architectures")
    assert not list(tmp_path.glob("pred*"))


def test_arch_table_resume_with_a_text_latency_cell_is_one_error(capsys, tmp_path):
    out = tmp_path / "archs"
    argv = ("profile", "archs", "--space", "nb201", "--runtime", "onnxruntime", "--protocol", "quick",
            "--out", str(out), "--no-progress")
    assert run_cli(capsys, *argv, "--archs", "0")[0] == 0
    _set_cell(out.with_suffix(".csv"), 2, "cpu/onnxruntime/fp32/threads=1", "fast")
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, *argv, "--archs", "0,1"), f"{out}.csv, line 2", "'fast' is not a latency")
    assert snapshot(tmp_path) == before


# ---- predictor files -------------------------------------------------------------------------
@pytest.fixture()
def predictor_file(tmp_path: Path) -> Path:
    """A copy of the shipped nb201 transfer predictor (a real predictor file)."""
    from hwlat.predictors import pretrained

    stem = pretrained.path("nb201")
    for suffix in (".npz", ".json"):
        shutil.copy(stem.with_suffix(suffix), tmp_path / f"pred{suffix}")
    return tmp_path / "pred"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_predictor_with_non_finite_arrays_is_refused(capsys, tmp_path, predictor_file, value):
    npz = predictor_file.with_suffix(".npz")
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["components_"] = arrays["components_"].copy()
    arrays["components_"][0, 0] = value
    np.savez_compressed(npz, **arrays)
    samples = _samples(tmp_path / "samples.csv", ["1.5", "1.2", "1.3", "2.0", "0.9", "1.1"])
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", str(predictor_file),
                             "--device-samples", str(samples), "--max-latency-ms", "2", "--no-progress"),
                     str(npz), "array components_", "NaN or infinite")


@pytest.mark.parametrize("edit, says", [
    (lambda m: m.update(format_version=0), "format version 0; this hwlat reads version 1"),
    (lambda m: m.update(format_version="1"), "format version '1'"),
    (lambda m: m.update(format_version=7), "upgrade hwlat"),
    (lambda m: m.pop("arrays"), "entry 'arrays' is missing"),
    (lambda m: m["learned"].update(encoder_alpha_=float("nan")), "learned value encoder_alpha_ is nan"),
])
def test_predictor_file_versions_and_entries_are_checked(capsys, tmp_path, predictor_file, edit, says):
    js = predictor_file.with_suffix(".json")
    meta = json.loads(js.read_text())
    edit(meta)
    js.write_text(json.dumps(meta))
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", str(predictor_file),
                             "--max-latency-ms", "2", "--no-progress"), says)


def test_predictor_of_another_features_version_is_refused_even_at_the_same_width(capsys, tmp_path, predictor_file):
    js = predictor_file.with_suffix(".json")
    meta = json.loads(js.read_text())
    meta["params"]["layout"]["__layout__"]["meta"]["features_version"] = 2
    js.write_text(json.dumps(meta))
    samples = _samples(tmp_path / "samples.csv", ["1.5", "1.2", "1.3", "2.0", "0.9", "1.1"])
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", str(predictor_file),
                             "--device-samples", str(samples), "--max-latency-ms", "2", "--no-progress"),
                     "trained on features version 2", "features version 3", "retrain")


def test_an_adapted_predictor_of_another_features_version_says_to_fit_it_again_from_its_measurements(capsys, tmp_path):
    """An adapted predictor kept from an older hwlat is refused; the way back is `adapt fit` on the
    measurements it records (as the FAQ says), not 'the pretrained one', which knows nothing of the device."""
    samples = _samples(tmp_path / "samples.csv", ["1.5", "1.2", "1.3", "2.0", "0.9", "1.1"])
    mine = tmp_path / "mine"
    assert run_cli(capsys, "adapt", "fit", "--space", "nb201", "--measurements", str(samples), "--out", str(mine))[0] == 0
    js = mine.with_suffix(".json")
    meta = json.loads(js.read_text())
    meta["params"]["layout"]["__layout__"]["meta"]["features_version"] = 2
    js.write_text(json.dumps(meta))
    line = assert_one_error(run_cli(capsys, "predict", "--predictor", str(mine), "--space", "nb201", "--arch", "1"),
                            "trained on features version 2", "fit it again from the 6 measurements",
                            f"--measurements {samples}", "info.measured")
    assert "pretrained" not in line


def test_truncated_predictor_arrays_are_one_error(capsys, predictor_file):
    npz = predictor_file.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:200])
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", str(predictor_file),
                             "--max-latency-ms", "2", "--no-progress"), str(npz), "not a readable")


# ---- ONNX models -----------------------------------------------------------------------------
def _einsum_model(path: Path) -> Path:
    """Conv, Relu, two Einsums (nothing prices them) and a Relu: 5 ops, 2 of them not priceable."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3), dtype=np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Einsum", ["r", "r"], ["e1"], name="ein1", equation="nchw,nchw->nchw"),
             helper.make_node("Einsum", ["e1", "r"], ["e2"], name="ein2", equation="nchw,nchw->nchw"),
             helper.make_node("Relu", ["e2"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "einsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("cut", ["empty", "header", 0.3, 0.9, "node"])
def test_empty_or_truncated_onnx_is_one_error_naming_the_file(capsys, tmp_path, cut):
    import onnx

    whole = _einsum_model(tmp_path / "whole.onnx").read_bytes()
    model = tmp_path / "bad.onnx"
    if cut == "empty":
        model.write_bytes(b"")
    elif cut == "header":  # parses: ir_version and opset only, no graph
        proto = onnx.load_from_string(whole)
        proto.ClearField("graph")
        model.write_bytes(proto.SerializeToString())
    elif cut == "node":  # parses: the first node (and the weight) lost
        proto = onnx.load_from_string(whole)
        del proto.graph.node[0]
        model.write_bytes(proto.SerializeToString())
    else:
        model.write_bytes(whole[: int(len(whole) * cut)])
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, "predict", str(model), "--table", SHIPPED), str(model))
    assert snapshot(tmp_path) == before


# ---- partial predictions say what they leave out ---------------------------------------------
def test_partial_prediction_names_what_it_could_not_price(capsys, tmp_path):
    model = _einsum_model(tmp_path / "einsum.onnx")
    code, out, _ = run_cli(capsys, "predict", str(model), "--table", SHIPPED)
    assert code == 0
    assert "partial: 2 ops not priced (Einsum x2); the total covers the other 3 of 5 ops" in out
    code, out, _ = run_cli(capsys, "predict", str(model), "--table", SHIPPED, "--json")
    report = json.loads(out)
    assert code == 0 and report["partial"] is True
    assert [u["op"] for u in report["uncovered"]] == ["Einsum", "Einsum"]
    assert report["ops"] == 5 and report["uncovered_ops"] == 2 and report["uncovered_types"] == {"Einsum": 2}
    assert report["coverage"].startswith("partial: 2 ops not priced")
    for key in ("latency_ms", "model", "table", "total_ms", "sigma_ms", "overhead_ms", "counts", "calibration",
                "kernels", "repeats"):
        assert key in report


def test_whole_prediction_has_no_partial_line(capsys):
    code, out, _ = run_cli(capsys, "predict", "--classic", "mobilenet_v2@r96w0.5", "--table", SHIPPED)
    assert code == 0 and "PARTIAL" not in out and "not priced" not in out


# ---- predictions that are not latencies ------------------------------------------------------
@pytest.mark.parametrize("answer", [-1.0, float("nan"), float("inf")])
def test_a_prediction_that_is_not_a_latency_is_never_feasible(answer):
    from hwlat.nas.arch_predictors import PredictionError
    from hwlat.nas.constraints import LatencyConstraint
    from hwlat.nas.search import random_search

    c = LatencyConstraint(lambda arch: answer, 1.0, space="nb201")
    with pytest.raises(PredictionError, match=r"predicts .* ms for nb201 architecture \|"):
        c(NB201_KEYS[0])
    with pytest.raises(PredictionError, match="not a latency"):
        c.filter(NB201_KEYS)
    with pytest.raises(PredictionError):
        c.check_budget()
    with pytest.raises(PredictionError):
        random_search("nb201", lambda arch: 1.0, c, budget=3, progress=False)
    # given latencies (e.g. failed measurements) that are not latencies are infeasible, not errors
    assert not np.asarray(c.check(np.array([answer, 0.5])).feasible)[0]


@pytest.mark.parametrize("budget, minimum", [(float("inf"), None), (float("nan"), None), (0.0, None), (-1.0, None),
                                             (1.0, float("nan")), (1.0, -0.5)])
def test_constraint_bounds_must_be_finite_latencies(budget, minimum):
    from hwlat.nas.constraints import ConstraintError, LatencyConstraint

    with pytest.raises(ConstraintError):
        LatencyConstraint(lambda arch: 1.0, budget, min_ms=minimum, space="nb201")


# ---- every CLI number at parse time ----------------------------------------------------------
BAD_NUMBERS = [
    (("space", "sample", "--space", "nb201", "-n", "-3"), "-n"),
    (("space", "sample", "--space", "nb201", "-n", "0"), "-n"),
    (("space", "show", "--space", "nb201", "--arch", "0", "--ops", "-1"), "--ops"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "inf"), "--max-latency-ms"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "nan"), "--max-latency-ms"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "0"), "--max-latency-ms"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "-2"), "--max-latency-ms"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--min-latency-ms", "nan"),
     "--min-latency-ms"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--budget", "0"), "--budget"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--top", "-1"), "--top"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--population", "0"),
     "--population"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--threads", "0"), "--threads"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--proxy-batch", "-4"),
     "--proxy-batch"),
    (("predict", "--classic", "resnet18", "--table", SHIPPED, "--top", "-2"), "--top"),
    (("profile", "ops", "--runtime", "onnxruntime", "--out", "T", "--threads", "0"), "--threads"),
    (("profile", "ops", "--runtime", "onnxruntime", "--out", "T", "--adaptive", "--budget", "-5"), "--budget"),
    (("profile", "ops", "--runtime", "onnxruntime", "--out", "T", "--adaptive", "--budget", "9", "--per-space", "0"),
     "--per-space"),
    (("profile", "ops", "--runtime", "onnxruntime", "--out", "T", "--adaptive", "--budget", "9", "--calibrate", "-1"),
     "--calibrate"),
    (("profile", "ops", "--runtime", "onnxruntime", "--out", "T", "--cluster", "auto", "--device-timeout", "nan"),
     "--device-timeout"),
    (("profile", "model", "m.onnx", "--runs", "0"), "--runs"),
    (("profile", "model", "m.onnx", "--threads", "-1"), "--threads"),
    (("profile", "archs", "--space", "nb201", "--archs", "0", "--out", "T", "--batch", "0"), "--batch"),
    (("profile", "archs", "--space", "nb201", "--archs", "0", "--out", "T", "--threads", "2.5"), "--threads"),
    (("profile", "device", "--runtime", "onnxruntime", "--out", "T", "--minutes", "inf"), "--minutes"),
    (("profile", "device", "--runtime", "onnxruntime", "--out", "T", "--calibration-networks", "0"),
     "--calibration-networks"),
    (("profile", "fusion", "--runtime", "onnxruntime", "--out", "T", "--threads", "0"), "--threads"),
    (("table", "show", SHIPPED, "--limit", "-1"), "--limit"),
    (("bench", "transfer", "--space", "nb201", "--table", "t.csv", "--train", "a", "--test", "b", "--repeats", "0"),
     "--repeats"),
    (("bench", "transfer", "--space", "nb201", "--table", "t.csv", "--train", "a", "--test", "b", "--shots", "-1"),
     "--shots"),
    (("bench", "transfer", "--space", "nb201", "--table", "t.csv", "--train", "a", "--test", "b", "--trim", "0.5"),
     "--trim"),
    (("demo", "--out", "D", "--percentile", "100"), "--percentile"),
    (("demo", "--out", "D", "--evaluations", "0"), "--evaluations"),
    (("demo", "--out", "D", "--max-latency-ms", "nan"), "--max-latency-ms"),
    (("demo", "--out", "D", "--threads", "0"), "--threads"),
    (("worker", "--port", "70000"), "--port"),
    (("worker", "--num-cpus", "-1"), "--num-cpus"),
    (("worker", "--object-store-mb", "0"), "--object-store-mb"),
    (("space", "sample", "--space", "nb201", "--seed", "-7"), "--seed"),
    (("search", "--space", "nb201", "--predictor", "pretrained", "--max-latency-ms", "1", "--seed", "1.5"), "--seed"),
]


@pytest.mark.parametrize("argv, option", BAD_NUMBERS, ids=[" ".join(a[:2]) + " " + o for a, o in BAD_NUMBERS])
def test_cli_numbers_are_refused_at_parse_time(capsys, tmp_path, monkeypatch, argv, option):
    monkeypatch.chdir(tmp_path)
    assert_parse_error(run_cli(capsys, *argv), option)
    assert snapshot(tmp_path) == {}  # nothing created


@pytest.mark.parametrize("command", [
    ("space", "sample", "--space", "nb201", "--seed", "123456789012", "-n", "2"),  # any whole number of 0 or more
    ("predict", "--space", "nb201", "--arch", "0", "--table", SHIPPED, "--top", "0"),
])
def test_cli_numbers_that_mean_something_are_accepted(capsys, command):
    assert run_cli(capsys, *command)[0] == 0


@pytest.mark.parametrize("spec", ["random:-1", "random:0"])
@pytest.mark.parametrize("command", ["predict", "profile archs"])
def test_random_archs_count_must_be_positive(capsys, tmp_path, spec, command):
    out = tmp_path / "t"
    argv = (["predict", "--table", SHIPPED, "--out", str(out) + ".csv"] if command == "predict"
            else ["profile", "archs", "--runtime", "onnxruntime", "--out", str(out)])
    assert_one_error(run_cli(capsys, *argv, "--space", "nb201", "--archs", spec), f"--archs '{spec}'")
    assert snapshot(tmp_path) == {}


# =============================================================================================
# Table writers: one writer per table, resume only with the same settings, a complete last row
# kept, OSError as one line (issue 22, items 1, 2, 7, 9). Real `hwlat` processes, real files.
# =============================================================================================
ROOT = Path(__file__).resolve().parents[1]
# 48 small op configurations: a writer holds its table's lock for about a second.
WRITER_SWEEP = "name: reliability\nops:\n  - {op: [relu, add, sigmoid], c: [4, 8, 16, 32], hw: [4, 8, 16, 24]}\n"
OPS = ("profile", "ops", "--runtime", "onnxruntime", "--protocol", "quick", "--no-progress")
ARCHS = ("profile", "archs", "--space", "nb201", "--runtime", "onnxruntime", "--protocol", "quick", "--no-progress")


def hwlat_process(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "hwlat", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def hwlat_run(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = hwlat_process(*args, cwd=cwd)
    out, err = proc.communicate(timeout=300)  # a hang guard, not a threshold
    return proc.returncode, out, err


def wait_until(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll `condition` while `proc` runs (a process that ends first fails the test, saying what)."""
    deadline = time.monotonic() + 300
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the writer ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within 300 s")
        time.sleep(0.002)


def holder_pid(stem: Path) -> int | None:
    try:
        return int(stem.with_name(stem.name + ".lock.holder").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def whole_rows(csv_path: Path) -> list[str]:
    """The data rows of a CSV that end with their newline."""
    lines = csv_path.read_text().splitlines(keepends=True)[1:]
    return [ln for ln in lines if ln.endswith("\n")]


def csv_keys(csv_path: Path, column: str) -> list[str]:
    with open(csv_path, newline="") as f:
        return [r[column] for r in csv.DictReader(f)]


def second_writer_is_refused(args: tuple[str, ...], stem: Path) -> tuple[subprocess.Popen, tuple[int, str, str]]:
    """Start a writer of `stem`, stop it (SIGSTOP) once it holds the lock, run a second writer, then
    let the first go on: (the first, the second's result)."""
    first = hwlat_process(*args, cwd=stem.parent)
    try:
        wait_until(lambda: holder_pid(stem) == first.pid, first, "holding the table's lock")
        first.send_signal(signal.SIGSTOP)
        second = hwlat_run(*args, cwd=stem.parent)  # would hang here if it waited for the lock
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=300)
    return first, second


def test_a_second_writer_of_a_device_table_stops_at_once_naming_the_first(tmp_path):
    from hwlat.profilers.sweeps import load_sweep

    (tmp_path / "sweep.yaml").write_text(WRITER_SWEEP)
    args = (*OPS, "--sweep", "sweep.yaml", "--out", "T")
    first, (code, out, err) = second_writer_is_refused(args, tmp_path / "T")
    assert first.returncode == 0
    line = assert_one_error((code, out, err), f"T is being written by pid {first.pid} (hwlat profile ops",
                            "wait for it or choose another --out")
    assert line.startswith("hwlat: error: T is being written")
    keys = csv_keys(tmp_path / "T.csv", "key")
    assert sorted(keys) == sorted(s.key for s in load_sweep(tmp_path / "sweep.yaml"))  # each key once
    assert not (tmp_path / "T.lock.holder").exists()  # removed on release


def test_a_second_writer_of_an_arch_table_stops_at_once_naming_the_first(tmp_path):
    args = (*ARCHS, "--archs", "0:20", "--out", "A")
    first, second = second_writer_is_refused(args, tmp_path / "A")
    assert first.returncode == 0
    assert_one_error(second, f"A is being written by pid {first.pid} (hwlat profile archs", "choose another --out")
    keys = csv_keys(tmp_path / "A.csv", "arch_str")
    assert len(keys) == len(set(keys)) == 20
    assert sorted(csv_keys(tmp_path / "A.stats.csv", "key")) == sorted(keys)


def test_a_table_lock_is_one_per_table_in_one_process_too(tmp_path):
    from hwlat.device_tables.device import Device
    from hwlat.device_tables.errors import TableBusyError
    from hwlat.device_tables.table import DeviceTable

    dev = Device.make("cpu", "onnxruntime", "fp32", threads=1)
    with DeviceTable.open(tmp_path / "t", dev):
        with pytest.raises(TableBusyError, match=f"is being written by pid {os.getpid()}"):
            DeviceTable.open(tmp_path / "t", dev)
    DeviceTable.open(tmp_path / "t", dev).close()  # released on close


def test_a_table_rewritten_with_its_second_pass_keeps_its_lock(tmp_path):
    from hwlat.device_tables.device import Device
    from hwlat.device_tables.errors import TableBusyError
    from hwlat.device_tables.measurement import Measurement
    from hwlat.device_tables.ops import OpSpec
    from hwlat.device_tables.table import DeviceTable

    dev = Device.make("cpu", "onnxruntime", "fp32", threads=1)
    first, second = OpSpec.make("relu", (1, 4, 4, 4)), OpSpec.make("relu", (1, 8, 4, 4))
    with DeviceTable.open(tmp_path / "t", dev) as table, DeviceTable.open(tmp_path / "t.pass2", dev) as again:
        table.append(first, Measurement.from_samples([2.0, 2.1, 2.2]))
        again.append(first, Measurement.from_samples([1.0, 1.1, 1.2]))
        assert table.keep_quieter(again) == 1  # rewrites t.csv
        with pytest.raises(TableBusyError):
            DeviceTable.open(tmp_path / "t", dev)
        table.append(second, Measurement.from_samples([1.0, 1.1, 1.2]))  # into the rewritten file
    assert DeviceTable.load(tmp_path / "t").latency_ms(first) == 1.1
    assert len(DeviceTable.load(tmp_path / "t")) == 2


def writer_with_rows(tmp_path, rows: int):
    """A `profile ops` of `WRITER_SWEEP` into T, started and waited on until `rows` rows are written:
    (the process, its arguments)."""
    (tmp_path / "sweep.yaml").write_text(WRITER_SWEEP)
    args = (*OPS, "--sweep", "sweep.yaml", "--out", "T")
    writer = hwlat_process(*args, cwd=tmp_path)
    wait_until(lambda: (tmp_path / "T.csv").exists() and len(whole_rows(tmp_path / "T.csv")) >= rows, writer,
               f"{rows} rows were written")
    return writer, args


def test_a_killed_writer_leaves_a_lock_the_next_run_takes_over_losing_nothing(tmp_path):
    from hwlat.profilers.sweeps import load_sweep

    writer, args = writer_with_rows(tmp_path, 5)
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    before = whole_rows(tmp_path / "T.csv")
    assert holder_pid(tmp_path / "T") == writer.pid  # the dead holder's file is still there
    code, out, err = hwlat_run(*args, cwd=tmp_path)
    assert code == 0, err
    n = len(load_sweep(tmp_path / "sweep.yaml"))
    assert f"{len(before)} already there" in out and f"{n} rows" in out
    after = whole_rows(tmp_path / "T.csv")
    assert after[: len(before)] == before  # every row measured before the kill kept as it was
    keys = csv_keys(tmp_path / "T.csv", "key")
    assert len(keys) == len(set(keys)) == n
    assert not (tmp_path / "T.lock.holder").exists()


def test_a_terminated_writer_says_what_it_kept_and_resumes(tmp_path):
    writer, args = writer_with_rows(tmp_path, 3)
    writer.send_signal(signal.SIGTERM)  # `kill`, a batch system's time limit
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 130, err
    assert "hwlat: interrupted; what was measured is stored: run the same command again" in err
    before = whole_rows(tmp_path / "T.csv")
    assert not (tmp_path / "T.lock.holder").exists()  # released as on Ctrl-C
    code, out, err = hwlat_run(*args, cwd=tmp_path)
    assert code == 0, err
    assert f"{len(before)} already there" in out
    assert whole_rows(tmp_path / "T.csv")[: len(before)] == before


def test_a_prediction_from_a_table_being_written_says_so_naming_the_writer(tmp_path):
    """It predicted from the rows so far without a word (and suggested `hwlat profile device --out T`,
    which the writer's lock refuses); once the writer is done, no such line."""
    writer, args = writer_with_rows(tmp_path, 3)
    writer.send_signal(signal.SIGSTOP)  # mid-run, holding the lock
    try:
        code, out, err = hwlat_run("predict", "--table", "T", "--space", "nb201", "--arch", "0", cwd=tmp_path)
    finally:
        writer.send_signal(signal.SIGCONT)
    writer.communicate(timeout=300)
    assert code == 0, err
    said = [ln for ln in err.splitlines() if "is being written" in ln]
    assert len(said) == 1 and f"T is being written by pid {writer.pid} (hwlat profile ops" in said[0], err
    assert "rows measured so far" in said[0]
    code, out, err = hwlat_run("predict", "--table", "T", "--space", "nb201", "--arch", "0", cwd=tmp_path)
    assert code == 0 and "is being written" not in err, err


def test_the_writer_of_a_table_is_a_process_holding_its_lock_not_this_one_or_a_stale_file(tmp_path):
    """`TableLock.writer` believed the holder's file alone: a file left by a run that ended, whose pid is
    alive again (reused), or this very process (a script that profiles and predicts), was 'a writer'."""
    from hwlat.device_tables.lock import TableLock

    stem = tmp_path / "T"
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (tmp_path / "T.lock").write_text("")
        (tmp_path / "T.lock.holder").write_text(f"{live.pid} hwlat profile ops --out T\n")  # nobody holds the lock
        assert TableLock.writer(stem) is None
        with TableLock.acquire(stem):  # held by this process: not another run writing it
            assert TableLock.writer(stem) is None
            (tmp_path / "T.lock.holder").write_text(f"{live.pid} hwlat profile ops --out T\n")
            assert TableLock.writer(stem) == f"pid {live.pid} (hwlat profile ops --out T)"  # held, named
    finally:
        live.communicate(b"")


def test_forked_workers_ended_by_their_pool_stay_quiet(tmp_path):
    """A pool's terminate() sends its workers SIGTERM; with the command's SIGTERM handler inherited they
    each printed a KeyboardInterrupt traceback after `predict --archs` (and the speed reading's child)."""
    code, out, err = hwlat_run("predict", "--space", "nb201", "--archs", "random:2000", "--table",
                               "cpu_onnxruntime_fp32_threads1", "--out", "p.csv", cwd=tmp_path)
    assert code == 0 and "2000 architectures predicted" in out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_lock_files_are_ignored_by_readers_and_by_git(capsys, tmp_path, device_table):
    for suffix in (".lock", ".lock.holder"):
        device_table.with_name(device_table.name + suffix).write_text("12345 hwlat profile ops\n")
    code, out, _ = run_cli(capsys, "table", "validate", str(device_table))
    assert code == 0
    if (ROOT / ".git").exists() and shutil.which("git"):
        for name in ("x.lock", "x.lock.holder", "arch/x.lock", "x.old-20250101-000000.csv"):
            ignored = subprocess.run(["git", "check-ignore", "-q", f"hwlat/device_tables/tables/{name}"], cwd=ROOT)
            assert ignored.returncode == 0, name


# ---- resume only with the table's settings; --fresh starts again, keeping the old files -----
@pytest.mark.parametrize("kind", ["ops", "archs"])
def test_resume_with_another_clock_is_refused_naming_it_and_fresh_starts_again(capsys, tmp_path, kind):
    (tmp_path / "sweep.yaml").write_text("name: two\nops:\n  - {op: relu, c: [4, 8], hw: 4}\n")
    args = ((*OPS, "--sweep", str(tmp_path / "sweep.yaml")) if kind == "ops" else (*ARCHS, "--archs", "0,1"))
    out = tmp_path / "T"
    assert run_cli(capsys, *args, "--out", str(out), "--clock", "wall")[0] == 0
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, *args, "--out", str(out), "--clock", "cpu"),
                     f"{out} was measured with other settings", "protocol.clock 'wall' -> 'cpu'", "--fresh",
                     "the table's protocol is `--protocol quick --clock wall`")  # the flags that resume it
    line = assert_one_error(run_cli(capsys, *args, "--out", str(out), "--clock", "cpu", "--protocol", "brief"),
                            "protocol.clock 'wall' -> 'cpu'", "protocol.max_time_s 0.1 -> 0.25",
                            "the table's protocol is `--protocol quick --clock wall`")
    assert "protocol.noise_threshold" not in line  # only what differs
    assert snapshot(tmp_path) == before  # refused: nothing changed
    code, _, _ = run_cli(capsys, *args, "--out", str(out), "--clock", "cpu", "--fresh")
    assert code == 0
    line = assert_one_error(run_cli(capsys, *args, "--out", str(out), "--protocol", "brief"), "other settings")
    assert "the table's protocol is `--protocol quick --clock cpu`" in line
    assert json.loads(out.with_suffix(".json").read_text())["protocol"]["clock"] == "cpu"
    old = {p.name.split(".old-")[1].partition(".")[2]: p for p in tmp_path.glob("T.old-*")}
    suffixes = {"csv", "json"} | ({"stats.csv", "passes.csv"} if kind == "archs" else set())
    assert set(old) == suffixes
    for suffix, path in old.items():  # the old measurements kept, byte for byte
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before[f"T.{suffix}"]
    assert run_cli(capsys, *args, "--out", str(out), "--clock", "cpu")[0] == 0  # the new table resumes


@pytest.mark.parametrize("kind", ["ops", "archs"])
def test_a_table_from_before_the_clock_was_recorded_is_of_the_wall_clock(capsys, tmp_path, kind):
    """Tables written before --clock existed record no clock: their rows were timed by the runtime's
    own (wall) clock, and a resume with today's default (the CPU clock for threads=1) is refused as
    one of another clock (it added CPU-clock rows and relabelled the table 'clock: cpu', silently)."""
    (tmp_path / "sweep.yaml").write_text("name: two\nops:\n  - {op: relu, c: [4, 8], hw: 4}\n")
    args = ((*OPS, "--sweep", str(tmp_path / "sweep.yaml")) if kind == "ops" else (*ARCHS, "--archs", "0,1"))
    out = tmp_path / "T"
    assert run_cli(capsys, *args, "--out", str(out), "--clock", "wall")[0] == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    del meta["protocol"]["clock"]  # as an older hwlat wrote it
    out.with_suffix(".json").write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, *args, "--out", str(out)), "protocol.clock 'wall' -> 'cpu'",
                     "the table's protocol is `--protocol quick --clock wall`")
    assert snapshot(tmp_path) == before
    if kind == "ops":
        assert run_cli(capsys, "table", "show", str(out))[1].count("protocol quick, clock wall") == 1
    assert run_cli(capsys, *args, "--out", str(out), "--clock", "wall")[0] == 0  # resumed with its clock


def test_profile_device_refuses_a_table_of_another_clock_with_the_same_line(capsys, tmp_path):
    (tmp_path / "sweep.yaml").write_text("name: one\nops:\n  - {op: relu, c: 4, hw: 4}\n")
    out = tmp_path / "T"
    assert run_cli(capsys, *OPS, "--sweep", str(tmp_path / "sweep.yaml"), "--out", str(out), "--clock", "wall")[0] == 0
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, "profile", "device", "--runtime", "onnxruntime", "--protocol", "quick", "--clock",
                             "cpu", "--out", str(out), "--no-progress"),
                     f"{out} was measured with other settings", "protocol.clock 'wall' -> 'cpu'", "--fresh")
    assert snapshot(tmp_path) == before


def test_resume_settings_are_compared_entry_by_entry():
    from hwlat.device_tables.table import settings_differences

    stored = {"protocol": {"clock": "wall", "min_runs": 5}, "runtime_settings": {"threads": 1}, "sweep": "a"}
    given = {"protocol": {"clock": "cpu", "min_runs": 5, "added_later": 1}, "runtime_settings": {"threads": 1},
             "sweep": "b"}
    assert settings_differences(stored, given, ("protocol", "runtime_settings")) == ["protocol.clock 'wall' -> 'cpu'"]
    assert settings_differences({}, given, ("protocol",)) == []  # an older table that recorded nothing


# ---- a complete last row without its newline is kept; a partial one is measured again ------
def test_a_device_table_whose_last_row_lacks_its_newline_keeps_it(capsys, tmp_path):
    from hwlat.device_tables.table import DeviceTable

    (tmp_path / "sweep.yaml").write_text("name: four\nops:\n  - {op: [relu, sigmoid], c: [4, 8], hw: 4}\n")
    args = (*OPS, "--sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "T"))
    assert run_cli(capsys, *args)[0] == 0
    csv_path = tmp_path / "T.csv"
    whole = csv_path.read_bytes()
    csv_path.write_bytes(whole[:-1])  # the newline gone: still a complete row
    assert len(DeviceTable.load(tmp_path / "T")) == 4  # readers keep it too
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "0 measured, 4 already there" in out
    assert csv_path.read_bytes() == whole  # kept as it was, its newline added
    csv_path.write_bytes(whole[:-4])  # cut inside the timestamp: a truly partial row
    assert len(DeviceTable.load(tmp_path / "T")) == 3
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "1 measured, 3 already there" in out
    assert len(DeviceTable.load(tmp_path / "T")) == 4


def test_an_arch_table_whose_last_rows_lack_their_newline_keeps_them(capsys, tmp_path):
    args = (*ARCHS, "--archs", "0,1", "--out", str(tmp_path / "A"), "--keep-order")
    assert run_cli(capsys, *args)[0] == 0
    main_csv, stats = tmp_path / "A.csv", tmp_path / "A.stats.csv"
    whole_main, whole_stats = main_csv.read_bytes(), stats.read_bytes()
    main_csv.write_bytes(whole_main[:-1])
    stats.write_bytes(whole_stats[:-1])
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "0 measured, 2 already there" in out
    assert (main_csv.read_bytes(), stats.read_bytes()) == (whole_main, whole_stats)
    main_csv.write_bytes(whole_main[:-2])  # the latency cut by a digit: it still parses, but is partial
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "1 measured, 1 already there" in out
    assert len(csv_keys(main_csv, "arch_str")) == 2 and len(csv_keys(stats, "key")) == 2


def test_readers_of_an_arch_table_skip_a_last_row_cut_inside_its_latency(capsys, tmp_path, caplog):
    from hwlat.device_tables.archtable import ArchTable
    from hwlat.nas.few_shot import read_measurements
    from hwlat.nas.spaces import get_space

    args = (*ARCHS, "--archs", "0,1,2", "--out", str(tmp_path / "A"), "--keep-order")
    assert run_cli(capsys, *args)[0] == 0
    main_csv = tmp_path / "A.csv"
    whole = main_csv.read_bytes()
    full = read_measurements(main_csv, "nb201", min_rows=1)
    main_csv.write_bytes(whole[:-2])  # a crash cut the last latency by a digit: it still parses as a number
    cut = read_measurements(main_csv, "nb201", min_rows=1)
    assert list(cut.archs) == list(full.archs)[:2] and list(cut.ms) == list(full.ms)[:2]
    assert "ignoring a partial last row (line 4)" in caplog.text
    assert len(ArchTable.read(main_csv, space=get_space("nb201").arch_keys)) == 2
    main_csv.write_bytes(whole[:-1])  # only the newline gone: the row is whole (its stats row agrees)
    assert list(read_measurements(main_csv, "nb201", min_rows=1).ms) == list(full.ms)
    assert len(ArchTable.read(main_csv, space=get_space("nb201").arch_keys)) == 3


def test_the_networks_file_keeps_a_complete_last_row_without_newline(tmp_path):
    from hwlat.device_tables.measurement import Measurement
    from hwlat.device_profile import _append_network, read_networks

    path = tmp_path / "T.networks.csv"
    for name in ("nb201:a", "nb201:b"):
        _append_network(path, name, "calibration", 1, Measurement.from_samples([1.0, 1.1, 1.2]))
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])
    assert [r["network"] for r in read_networks(path)] == ["nb201:a", "nb201:b"]
    assert path.read_bytes() == whole
    path.write_bytes(whole[:-3])
    assert [r["network"] for r in read_networks(path)] == ["nb201:a"]


# ---- OSError on output: one line naming the path and the reason ----------------------------
@pytest.mark.parametrize("kind", ["ops", "archs"])
def test_an_out_inside_a_file_is_one_line(capsys, tmp_path, kind):
    (tmp_path / "sweep.yaml").write_text("name: one\nops:\n  - {op: relu, c: 4, hw: 4}\n")
    args = (*OPS, "--sweep", str(tmp_path / "sweep.yaml")) if kind == "ops" else (*ARCHS, "--archs", "0")
    (tmp_path / "afile").write_text("not a folder\n")
    before = snapshot(tmp_path)
    assert_one_error(run_cli(capsys, *args, "--out", str(tmp_path / "afile" / "sub" / "T")),
                     f"cannot write {tmp_path}/afile/sub/T.csv: {tmp_path}/afile is a file, not a folder")
    assert snapshot(tmp_path) == before


def test_an_out_where_nothing_may_be_created_is_one_line(capsys, tmp_path):
    """/sys takes no new files, even from root."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys here")
    (tmp_path / "sweep.yaml").write_text("name: one\nops:\n  - {op: relu, c: 4, hw: 4}\n")
    line = assert_one_error(run_cli(capsys, *OPS, "--sweep", str(tmp_path / "sweep.yaml"), "--out", "/sys/hwlat_T"),
                            "cannot write /sys/hwlat_T.lock: [Errno")
    assert "Traceback" not in line


def test_a_table_file_that_is_a_folder_is_one_line(capsys, tmp_path):
    (tmp_path / "sweep.yaml").write_text("name: one\nops:\n  - {op: relu, c: 4, hw: 4}\n")
    args = (*OPS, "--sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "T"))
    assert run_cli(capsys, *args)[0] == 0
    (tmp_path / "T.csv").unlink()
    (tmp_path / "T.csv").mkdir()
    assert_one_error(run_cli(capsys, *args), f"cannot write {tmp_path}/T.csv: [Errno 21] Is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(capsys, tmp_path):
    (tmp_path / "sweep.yaml").write_text("name: one\nops:\n  - {op: relu, c: 4, hw: 4}\n")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_one_error(run_cli(capsys, *OPS, "--sweep", str(tmp_path / "sweep.yaml"), "--out", str(folder / "T")),
                         f"cannot write {folder}/T", "Permission denied")
    finally:
        folder.chmod(0o755)


def test_a_row_the_disk_has_no_room_for_is_one_error_naming_the_file():
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    from hwlat.device_tables.errors import WriteError
    from hwlat.device_tables.files import append_line

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    fd = os.open("/dev/full", os.O_WRONLY | os.O_APPEND)
    try:
        with pytest.raises(WriteError, match=r"^cannot write tables/x\.csv: \[Errno 28\] No space left on device$"):
            append_line(fd, b"a,row\n", Path("tables/x.csv"))
    finally:
        os.close(fd)


def test_a_failed_metadata_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from hwlat.device_tables.errors import WriteError
    from hwlat.device_tables.files import atomic_write_text

    target = tmp_path / "T.json"
    target.write_text("old\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(WriteError, match="cannot write .*sub: \\[Errno 21\\] Is a directory"):
        atomic_write_text(tmp_path / "sub", "new\n")  # the rename onto a folder fails
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_table_validate_checks_an_arch_table(capsys, caplog, tmp_path):
    """`table validate` refused an arch table ("not a hwlat device table"): after a kill a user had no way
    to check one."""
    out = tmp_path / "A"
    assert run_cli(capsys, *ARCHS, "--archs", "0,1,2", "--out", str(out))[0] == 0
    code, said, _ = run_cli(capsys, "table", "validate", str(out))
    assert code == 0 and said.strip() == (f"{out}.csv: valid arch table, schema version 1, nb201 space, 3 architectures, "
                                          "device(s) cpu/onnxruntime/fp32/threads=1")
    whole = out.with_suffix(".csv").read_bytes()
    out.with_suffix(".csv").write_bytes(whole[:-6])  # a kill inside the last latency
    code, said, _ = run_cli(capsys, "table", "validate", str(out))
    assert code == 0 and "2 architectures" in said and "ignoring a partial last row (line 4)" in caplog.text
    out.with_suffix(".csv").write_bytes(whole + b"garbage,line\n")
    assert_one_error(run_cli(capsys, "table", "validate", str(out)), f"{out}.csv", "'garbage' on line 5")



def test_a_warning_under_a_progress_bar_takes_its_own_line():
    """Board and runtime warnings were printed glued to the end of the progress bar's line."""
    import io
    import logging

    from tqdm import tqdm

    from hwlat.cli import _LogFormat, _LogHandler

    stream = io.StringIO()
    handler = _LogHandler(stream)
    handler.setFormatter(_LogFormat())
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "the board resynchronised", None, None)
    with tqdm(total=3, file=stream, bar_format="{n}/{total} bar") as bar:
        bar.update(1)
        handler.emit(record)
        bar.update(1)
    handler.emit(record)  # no bar: a plain line
    text = stream.getvalue()
    assert text.count("hwlat: warning: the board resynchronised\n") == 2
    assert "bar" + "hwlat" not in text.replace(" ", "") and "\rhwlat: warning" in text


def test_a_forked_child_ends_on_sigterm_by_default_whatever_it_is_blocked_in():
    """The command's SIGTERM handler is Python: a forked pool worker blocked in C never ran it, so its
    pool's terminate() waited on it for ever. A child gets the default action back at fork."""
    import os

    from hwlat import cli

    was = signal.signal(signal.SIGTERM, cli._terminated)
    try:
        pid = os.fork()
        if pid == 0:  # the child says which disposition it was given
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert signal.getsignal(signal.SIGTERM) is cli._terminated  # the parent keeps its handler
    finally:
        signal.signal(signal.SIGTERM, was)
