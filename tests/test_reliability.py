"""Reliability regressions of issue 22: every bad input is one clear error and a non-zero exit,
never a traceback, and never a table created or changed."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
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
    from device_tables.device import Device
    from device_tables.measurement import Measurement
    from device_tables.ops import OpSpec
    from device_tables.table import DeviceTable

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
    from device_tables.errors import OpSpecError
    from device_tables.ops import OpSpec

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
    ("inf", "holds 'inf' on line 4, not a latency in ms"), ("nan", "holds 'nan' on line 4"),
    ("1e999", "holds '1e999'"), ("fast", "holds 'fast'"), ("0", "has 0 ms for architecture"),
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


@pytest.mark.parametrize("index", ["inf", "3.5", "x", "1e300"])
def test_arch_table_integer_key_that_is_not_whole_is_one_error(capsys, tmp_path, index):
    samples = tmp_path / "samples.csv"
    samples.write_text("nb201_index,arch_str,board\n"
                       + "".join(f"{index if i == 2 else i},{k},1.5\n" for i, k in enumerate(NB201_KEYS)))
    assert_one_error(run_cli(capsys, "search", "--space", "nb201", "--predictor", "pretrained", "--device-samples",
                             str(samples), "--max-latency-ms", "2", "--no-progress"),
                     str(samples), f"key column 'nb201_index' holds '{index}' on line 4, not a whole number")


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
    from predictors import pretrained

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
    from nas.arch_predictors import PredictionError
    from nas.constraints import LatencyConstraint
    from nas.search import random_search

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
    from nas.constraints import ConstraintError, LatencyConstraint

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
