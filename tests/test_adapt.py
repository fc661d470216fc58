"""A new device from a few measurements: `hwlat adapt suggest` -> measure -> `hwlat adapt fit` ->
`hwlat predict --predictor` / `hwlat search --predictor`, and the same through the Python API."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import hwlat
from hwlat.cli import main
from hwlat.nas.features import latency_features
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.measure import resolve_archs
from hwlat.predictors.metrics import spearman

NB201 = get_space("nb201")


def synthetic_ms(archs) -> np.ndarray:
    """A made-up device: a fixed cost per structure count (what runs, dead edges, paths) + 0.4 ms."""
    X, layout = latency_features(NB201, archs)
    cost = X[:, list(layout.cost) + list(layout.extra)]
    w = np.random.default_rng(7).gamma(2.0, 0.3, size=cost.shape[1])
    return 0.4 + cost @ w


def write_measurements(path, archs, ms, column="my_board/ort", key="arch_str", extra: dict | None = None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([key, column, *(extra or {})])
        for i, (a, v) in enumerate(zip(archs, ms)):
            w.writerow([NB201.key_record(a)[key], v, *(col[i] for col in (extra or {}).values())])
    return path


def error_line(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("hwlat: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- suggest ------------------------------------------------------------------------------------------
def test_suggest_is_deterministic_for_a_seed_and_never_repeats():
    for space, n in (("nb201", 40), ("fbnet", 25)):
        a = hwlat.suggest(space, n, seed=3)
        assert a == hwlat.suggest(space, n, seed=3)
        assert len(a) == n and len(set(a)) == n
    assert hwlat.suggest("fbnet", 10, seed=3) != hwlat.suggest("fbnet", 10, seed=4)  # another pool
    assert hwlat.suggest("nb201", 40)[:10] == hwlat.suggest("nb201", 10)  # greedy: a longer list extends a shorter


def test_suggest_writes_keys_profile_archs_and_predict_accept(tmp_path, capsys):
    out = tmp_path / "to_measure.csv"
    assert main(["adapt", "suggest", "--space", "nb201", "-n", "12", "--out", str(out)]) == 0
    assert "hwlat adapt fit" in capsys.readouterr().out  # says what comes next
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == list(NB201.key_columns) and len(rows) == 12
    assert [r["arch_str"] for r in rows] == hwlat.suggest("nb201", 12)
    assert [NB201.key(it.arch) for it in resolve_archs(NB201, str(out))] == [r["arch_str"] for r in rows]
    first = rows[0][NB201.key_columns[0]]  # the first column is a key --arch accepts
    assert len(resolve_archs(NB201, first)) == 1 and NB201.key(resolve_archs(NB201, first)[0].arch) == rows[0]["arch_str"]
    # and so is every key column: the arch string (which holds '+' itself, the separator of joined specs) too
    for column in NB201.key_columns:
        assert [NB201.key(it.arch) for it in resolve_archs(NB201, rows[1][column], flag="--arch")] == [rows[1]["arch_str"]]
    assert len(resolve_archs(NB201, f"{rows[0]['nb201_index']}+{rows[1]['nb201_index']}")) == 2


# ---- fit + predict ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """20 suggested architectures measured on the synthetic device, fitted and saved by the CLI."""
    d = tmp_path_factory.mktemp("adapt")
    archs = [NB201.parse(k) for k in hwlat.suggest("nb201", 20)]
    meas = write_measurements(d / "measured.csv", archs, synthetic_ms(archs))
    assert main(["adapt", "fit", "--space", "nb201", "--measurements", str(meas), "--out", str(d / "board")]) == 0
    return d, meas


def test_fit_then_predict_recovers_the_devices_ranking(fitted, capsys):
    d, _ = fitted
    out = d / "pred.csv"
    assert main(["predict", "--predictor", str(d / "board"), "--space", "nb201", "--archs", "random:400", "--seed", "5",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == [*NB201.key_columns, "predicted_ms", "sigma_ms"]
    archs = [NB201.parse(r["arch_str"]) for r in rows]
    predicted = np.array([float(r["predicted_ms"]) for r in rows])
    sigma = np.array([float(r["sigma_ms"]) for r in rows])
    truth = synthetic_ms(archs)
    assert spearman(predicted, truth) > 0.9
    assert np.median(np.abs(predicted / truth - 1)) < 0.1
    assert np.all(sigma > 0) and np.all(np.isfinite(sigma))


def test_cli_and_api_give_the_same_numbers(fitted, capsys):
    d, meas = fitted
    capsys.readouterr()
    assert main(["predict", "--predictor", str(d / "board"), "--space", "nb201", "--arch", "1462", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    keys, ms, sigma = hwlat.predict_adapted("nb201", [1462], hwlat.fit("nb201", meas))
    assert cli["arch"] == keys[0] and cli["device"] == "my_board/ort"
    assert cli["latency_ms"] == pytest.approx(ms[0], rel=1e-12) and cli["sigma_ms"] == pytest.approx(sigma[0], rel=1e-12)
    keys2, ms2, _ = hwlat.predict_adapted("nb201", "random:50", str(d / "board"), seed=2)
    assert keys2 == [NB201.key(a) for a in NB201.sample(50, 2)]
    np.testing.assert_allclose(ms2, hwlat.load_predictor(d / "board", "nb201").predict(keys2), rtol=1e-12)


def test_a_board_scale_prediction_prints_plain_milliseconds(tmp_path, capsys):
    """`predict --predictor --arch` printed a board's latency as `6.762e+04 ms (± 4.8e+03 ms, ...)`."""
    archs = [NB201.parse(k) for k in hwlat.suggest("nb201", 10)]
    meas = write_measurements(tmp_path / "measured.csv", archs, 20000 * synthetic_ms(archs))
    assert main(["adapt", "fit", "--space", "nb201", "--measurements", str(meas), "--out", str(tmp_path / "mcu")]) == 0
    capsys.readouterr()
    assert main(["predict", "--predictor", str(tmp_path / "mcu"), "--space", "nb201", "--arch", "1462"]) == 0
    line = capsys.readouterr().out
    _, ms, sigma = hwlat.predict_adapted("nb201", [1462], str(tmp_path / "mcu"))
    assert ms[0] > 10000 and sigma[0] > 100 and "e+" not in line
    assert f": {float(f'{ms[0]:.4g}'):.0f} ms (± {float(f'{sigma[0]:.2g}'):.0f} ms, one sigma)" in line


def test_a_saved_predictor_round_trips_exactly(tmp_path, fitted):
    _, meas = fitted
    pred = hwlat.fit("nb201", meas)
    hwlat.save_predictor(pred, tmp_path / "p")
    back = hwlat.load_predictor(tmp_path / "p.json", "nb201")
    archs = NB201.sample(300, 1)
    assert np.array_equal(pred.predict(archs), back.predict(archs))
    assert back.info["device"] == "my_board/ort" and back.info["n_measurements"] == 20
    assert back.info["measured"] == pred.info["measured"]


def test_search_uses_a_saved_predictor_directly(fitted, capsys):
    d, _ = fitted
    budget = float(np.median(hwlat.load_predictor(d / "board", "nb201").predict(NB201.sample(200, 0))))
    out = d / "search.json"
    assert main(["search", "--space", "nb201", "--predictor", str(d / "board"), "--max-latency-ms", f"{budget:.4f}",
                 "--budget", "12", "--objective", "tests.test_adapt:num_params_objective", "--no-progress",
                 "--json", str(out)]) == 0
    best = json.loads(out.read_text())["search"]["best"]
    assert best and all(b["predicted_ms"] <= budget for b in best)


def test_search_save_predictor_of_a_saved_predictor_keeps_its_device(fitted, tmp_path):
    d, _ = fitted
    assert main(["search", "--space", "nb201", "--predictor", str(d / "board"), "--max-latency-ms", "100", "--budget", "3",
                 "--objective", "tests.test_adapt:num_params_objective", "--no-progress",
                 "--save-predictor", str(tmp_path / "copy")]) == 0
    copy, board = hwlat.load_predictor(tmp_path / "copy", "nb201"), hwlat.load_predictor(d / "board", "nb201")
    assert copy.info["device"] == "my_board/ort" and copy.info["measured"] == board.info["measured"]


def test_search_names_device_as_ignored_without_device_samples(fitted, capsys):
    d, _ = fitted
    assert main(["search", "--space", "nb201", "--predictor", str(d / "board"), "--device", "other_board",
                 "--max-latency-ms", "100", "--budget", "3", "--objective", "tests.test_adapt:num_params_objective",
                 "--no-progress"]) == 0
    assert "--device ignored" in capsys.readouterr().err  # the predictor is adapted already: no column is read


def num_params_objective(arch) -> float:
    return float(NB201.network(arch).params())


def test_three_measurements_adapt_and_key_columns_other_than_the_primary_work(tmp_path):
    archs = [NB201.parse(k) for k in hwlat.suggest("nb201", 3)]
    meas = write_measurements(tmp_path / "m.csv", archs, synthetic_ms(archs), key="nb201_index")
    pred = hwlat.fit("nb201", meas)
    assert np.all(pred.predict(NB201.sample(20, 0)) > 0)


def test_api_adapt_from_lists_saves_and_loads(tmp_path):
    archs = NB201.sample(10, 4)
    pred = hwlat.adapt("nb201", archs, synthetic_ms(archs))
    hwlat.save_predictor(pred, tmp_path / "lists")
    assert np.array_equal(hwlat.load_predictor(tmp_path / "lists", "nb201").predict(archs), pred.predict(archs))


# ---- bad input ----------------------------------------------------------------------------------------
@pytest.fixture()
def ten(tmp_path):
    archs = NB201.sample(10, 9)
    return tmp_path, archs, synthetic_ms(archs)


def _fit_argv(path, out, *extra):
    return ["adapt", "fit", "--space", "nb201", "--measurements", str(path), "--out", str(out), *extra]


@pytest.mark.parametrize("edit, fragments", [
    (lambda rows: rows.__setitem__(3, ["|bogus~0|", "1.0"]), ["line 4", "|bogus~0|", "not a nb201 architecture"]),
    (lambda rows: rows.__setitem__(5, list(rows[2])), ["line 6", "also on line 3"]),
    (lambda rows: rows.__setitem__(2, [rows[2][0], "-1"]), ["line 3", "'-1'", "not a latency"]),
    (lambda rows: rows.__setitem__(2, [rows[2][0], "0"]), ["line 3", "'0'", "positive"]),
    (lambda rows: rows.__setitem__(7, [rows[7][0], "fast"]), ["line 8", "'fast'", "not a latency"]),
    (lambda rows: rows.__setitem__(7, [rows[7][0], "inf"]), ["line 8", "'inf'"]),
    (lambda rows: rows.__delitem__(slice(3, None)), ["2 measured nb201", "at least 3", "hwlat adapt suggest"]),
    (lambda rows: rows.__setitem__(0, ["name", "ms"]), ["no key column of the nb201 space", "arch_str"]),
    (lambda rows: rows.__setitem__(4, [rows[4][0], "1e300"]), ["line 5", "over 1e+06 ms"]),
    (lambda rows: rows.__setitem__(0, ["arch_str;ms"]), ["separated by semicolons (';')", "save it with commas"]),
    (lambda rows: [r.append(r[1]) for r in rows], ["names 'my_board/ort' more than once"]),
    (lambda rows: rows.__setitem__(0, ["arch_str", "latency_s"]), ["'latency_s' holds seconds", "convert its cells to ms"]),
    (lambda rows: rows.__setitem__(0, ["arch_str", "time (us)"]), ["'time (us)' holds microseconds", "convert"]),
    (lambda rows: rows.__setitem__(0, ["arch_str", "us"]), ["'us' holds microseconds", "convert"]),
])
def test_bad_measurements_get_one_line_naming_the_row(ten, capsys, edit, fragments):
    d, archs, ms = ten
    path = write_measurements(d / "m.csv", archs, ms)
    rows = list(csv.reader(path.open()))
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    line = error_line(capsys, _fit_argv(path, d / "p"))
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not (d / "p.json").exists()


def test_a_spreadsheets_byte_order_mark_is_read_past(ten, capsys):
    d, archs, ms = ten
    path = write_measurements(d / "m.csv", archs, ms)
    path.write_bytes("\ufeff".encode() + path.read_bytes())  # Excel's "CSV UTF-8"
    assert main(_fit_argv(path, d / "p")) == 0 and "from 10 measurements" in capsys.readouterr().out


def test_api_adapt_checks_its_lists_as_fit_checks_a_file(ten):
    from hwlat.nas.few_shot import MeasurementsError

    _, archs, ms = ten
    cases = [(archs, ms[:5], "10 architectures but 5 latencies"),
             (archs[:5], ms, "5 architectures but 10 latencies"),
             (archs, np.r_[ms[:3], -1.0, ms[4:]], "latency 3 (-1.0 for"),
             (archs, np.r_[ms[:3], np.nan, ms[4:]], "not a latency in ms"),
             (archs, [*ms[:3], "fast", *ms[4:]], "latency 3 ('fast' for"),
             (archs, [*ms[:3], None, *ms[4:]], "latency 3 (None for"),
             (archs[:3] + archs[:1], ms[:4], "architecture 3 (" + NB201.key(archs[0]) + ") is also architecture 0"),
             (archs[:2], ms[:2], "2 measured nb201 architecture(s); adapting needs at least 3")]
    for a, v, says in cases:
        with pytest.raises(MeasurementsError) as exc:
            hwlat.adapt("nb201", a, v)
        assert says in str(exc.value), (says, str(exc.value))
    pred = hwlat.adapt("nb201", archs, ms, device="my board")
    assert pred.info["device"] == "my board" and pred.name == "nb201 transfer adapted to my board"


def test_suggest_refuses_fewer_than_fit_needs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "suggest", "--space", "nb201", "-n", "2", "--out", str(tmp_path / "s.csv")])
    assert "needs at least 3 measurements" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    with pytest.raises(SystemExit):  # no meta-trained predictor is shipped for vit: not offered
        main(["adapt", "suggest", "--space", "vit", "-n", "5", "--out", str(tmp_path / "s.csv")])
    assert "invalid choice: 'vit'" in capsys.readouterr().err


def test_api_suggest_refuses_what_the_cli_refuses():
    """`hwlat.suggest` and `hwlat adapt suggest -n` share one check: fewer than fit needs is refused by both."""
    from hwlat.device_tables.errors import HwlatError

    for n in (2, 0, -1):
        with pytest.raises(HwlatError, match="needs at least 3 measurements"):
            hwlat.suggest("nb201", n)
    with pytest.raises(HwlatError, match="whole number"):
        hwlat.suggest("nb201", 2.5)
    assert len(hwlat.suggest("nb201", 3)) == 3


def test_several_latency_columns_need_device(ten, capsys):
    d, archs, ms = ten
    path = write_measurements(d / "m.csv", archs, ms, extra={"other_board": list(ms * 2)})
    assert "several latency columns (my_board/ort, other_board); choose one with --device" in error_line(
        capsys, _fit_argv(path, d / "p"))
    assert "no latency column 'gpu'" in error_line(capsys, _fit_argv(path, d / "p", "--device", "gpu"))
    assert main(_fit_argv(path, d / "p", "--device", "other_board")) == 0
    assert "'other_board'" in capsys.readouterr().out


def test_empty_cells_are_left_out_and_counted(ten, capsys):
    d, archs, ms = ten
    cells = [f"{v:.4f}" for v in ms]
    cells[1] = ""
    path = write_measurements(d / "m.csv", archs, cells)
    assert main(_fit_argv(path, d / "p")) == 0
    assert "from 9 measurements (1 row(s) with an empty latency left out)" in capsys.readouterr().out
    path = write_measurements(d / "m.csv", archs, [""] * 8 + cells[8:])
    assert "2 measured nb201 architecture(s) in column 'my_board/ort' (8 row(s) with an empty latency left out)" in (
        error_line(capsys, _fit_argv(path, d / "p")))


def test_predictor_for_another_space_or_not_adapted_or_newer_is_refused(ten, capsys):
    d, archs, ms = ten
    pred = hwlat.adapt("nb201", archs, ms)
    hwlat.save_predictor(pred, d / "p")
    line = error_line(capsys, ["predict", "--predictor", str(d / "p"), "--space", "fbnet", "--arch",
                               hwlat.suggest("fbnet", 3)[0]])
    assert "predicts nb201 architectures, not fbnet" in line and "hwlat adapt fit --space fbnet" in line
    line = error_line(capsys, ["search", "--predictor", str(d / "p"), "--space", "vit", "--max-latency-ms", "1"])
    assert "not vit" in line and "lut:NAME" in line and "adapt fit --space vit" not in line  # none is shipped for vit
    from hwlat.predictors import pretrained

    unadapted = pretrained.path("nb201")
    line = error_line(capsys, ["predict", "--predictor", str(unadapted), "--space", "nb201", "--arch", "1"])
    assert "not adapted to a device" in line and "hwlat adapt fit" in line
    meta = json.loads((d / "p.json").read_text())
    meta["format_version"] = 99
    (d / "p.json").write_text(json.dumps(meta))
    assert "format version 99" in error_line(capsys, ["predict", "--predictor", str(d / "p"), "--space", "nb201",
                                                      "--arch", "1"])


def test_predict_needs_one_of_table_or_predictor(ten, capsys):
    assert "one of --table" in error_line(capsys, ["predict", "--space", "nb201", "--arch", "1"])


def test_predict_refuses_a_space_option_an_adapted_predictor_does_not_use(fitted, capsys):
    d, _ = fitted  # --keep-dead-edges builds another network; a predictor adapted to measurements builds none
    assert "--keep-dead-edges: for a device table (--table)" in error_line(
        capsys, ["predict", "--predictor", str(d / "board"), "--space", "nb201", "--arch", "1", "--keep-dead-edges"])


def test_predictor_that_is_pretrained_or_a_device_table_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no saved predictor of either name here
    line = error_line(capsys, ["predict", "--predictor", "pretrained", "--space", "nb201", "--arch", "5"])
    assert "meta-trained" in line and "hwlat adapt fit --space nb201" in line and "pretrained.json" not in line
    table = "cpu_onnxruntime_fp32_threads1"
    line = error_line(capsys, ["predict", "--predictor", table, "--space", "nb201", "--arch", "5"])
    assert "is a device table" in line and f"--table {table}" in line


@pytest.fixture(scope="module")
def adapted_files(tmp_path_factory):
    """An adapted predictor's saved JSON and arrays (read, to damage copies of)."""
    d = tmp_path_factory.mktemp("adapted")
    archs = NB201.sample(10, 9)
    hwlat.save_predictor(hwlat.adapt("nb201", archs, synthetic_ms(archs)), d / "p")
    return json.loads((d / "p.json").read_text()), dict(np.load(d / "p.npz"))


def _set(meta, path, value):
    for key in path[:-1]:
        meta = meta[key]
    meta[path[-1]] = value


@pytest.mark.parametrize("path, value, names", [
    (("info",), "x", ["p.json", "info is \"x\""]),
    (("learned", "floor_ms_"), "x", ["p.json", "floor_ms_ is 'x', not a number"]),
    (("learned", "learner_names_"), ["a"], ["p.json", "learner_names_ holds 'a'"]),
    (("learned", "coefs_", "__arrays__"), "6", ["p.json", "learned.coefs_.__arrays__"]),
    (("params", "layout", "__layout__", "cost", 0), "x", ["p.json", "params.layout.__layout__.cost[0]"]),
    (("params", "learners"), None, ["p.json", "params.learners is null"]),
    ("encoder_coef_", lambda a: a[:-1], ["p.npz", "encoder_coef_ is a float64 array of shape (101, "]),
    ("weights_", lambda a: a[None, :], ["p.npz", "weights_ is a float64 array of shape (1, "]),
    ("coefs_2", lambda a: np.full(a.shape, "x"), ["p.npz", "coefs_2 is a <U1 array"]),
])
def test_a_damaged_predictor_file_gets_one_line_naming_the_field(adapted_files, tmp_path, capsys, path, value, names):
    meta, arrays = json.loads(json.dumps(adapted_files[0])), dict(adapted_files[1])
    if isinstance(path, tuple):
        _set(meta, path, value)
    else:
        arrays[path] = value(arrays[path])
    (tmp_path / "p.json").write_text(json.dumps(meta))
    np.savez(tmp_path / "p.npz", **arrays)
    line = error_line(capsys, ["predict", "--predictor", str(tmp_path / "p"), "--space", "nb201", "--arch", "5"])
    for fragment in [*names, "hwlat adapt fit"]:
        assert fragment in line, (fragment, line)


# ---- the protocol with suggested shots -----------------------------------------------------------------------
def test_bench_protocol_with_suggested_shots_uses_the_same_rows_for_every_device():
    from hwlat.predictors.evaluation import ProtocolSettings, TargetDevice, TransferData, make_methods, run_method

    archs = [NB201.from_index(i) for i in range(400)]
    X, layout = latency_features(NB201, archs)
    base = synthetic_ms(archs)
    rng = np.random.default_rng(0)
    train = np.column_stack([base * rng.uniform(0.5, 2) * np.exp(0.05 * rng.standard_normal(400)) for _ in range(5)])
    data = TransferData(np.arange(400), X, layout, train, [f"t{i}" for i in range(5)])
    targets = [TargetDevice(f"d{i}", base * (i + 1) * np.exp(0.02 * rng.standard_normal(400))) for i in range(2)]
    query = np.arange(400) >= 300
    (method,) = make_methods(["transfer"])
    r = run_method(method, data, targets, query, ProtocolSettings(shots=6, n_ref=4, repeats=1, shots_from="suggested"))
    assert targets[0].reads == targets[1].reads and len(targets[0].reads) == 10
    assert not any(query[i] for i in targets[0].reads)
    assert set(int(i) for i in r.references) < targets[0].reads
    assert r.mean("spearman") > 0.9


def test_the_whole_loop_on_this_machine(tmp_path, capsys):
    """suggest -> `hwlat profile archs` (onnxruntime, real timings) -> fit -> predict: the README's loop."""
    todo, measured, pred = tmp_path / "todo.csv", tmp_path / "measured", tmp_path / "cpu"
    assert main(["adapt", "suggest", "--space", "nb201", "-n", "6", "--out", str(todo)]) == 0
    assert main(["profile", "archs", "--space", "nb201", "--archs", str(todo), "--out", str(measured),
                 "--protocol", "quick", "--no-progress"]) == 0
    assert main(["adapt", "fit", "--space", "nb201", "--measurements", str(measured), "--out", str(pred)]) == 0
    for named in ("measured.json", "measured.stats.csv"):  # the arch table's other files name it too
        assert main(["adapt", "fit", "--space", "nb201", "--measurements", str(tmp_path / named), "--out",
                     str(tmp_path / "again")]) == 0
        assert hwlat.load_predictor(tmp_path / "again", "nb201").info["measured"] == hwlat.load_predictor(
            pred, "nb201").info["measured"]
    capsys.readouterr()
    assert main(["predict", "--predictor", str(pred), "--space", "nb201", "--archs", "0:5"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [int(r["nb201_index"]) for r in rows] == list(range(5))
    assert all(0 < float(r["predicted_ms"]) < 1e3 for r in rows)
    assert hwlat.load_predictor(pred, "nb201").info["device"].startswith("cpu/onnxruntime/fp32")


def test_save_predictor_of_something_not_adapted_names_what_it_takes(tmp_path):
    """A device table given to save_predictor was an AttributeError ('DeviceTable' has no 'space')."""
    for wrong, said in ((hwlat.load_table("cpu_onnxruntime_fp32_threads1"), "a device table is saved as it is measured"),
                        ("nb201", "not a str")):
        with pytest.raises(TypeError, match="adapted to a device") as err:
            hwlat.save_predictor(wrong, tmp_path / "p")
        assert said in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_adapt_takes_a_saved_predictors_path_and_names_what_it_cannot_adapt(ten):
    """predictor='nope' said 'the str predictor has no adapt(X, y)'; a saved predictor's path was refused alike."""
    from hwlat.nas.arch_predictors import PredictorSpaceError
    from hwlat.predictors.io import PredictorFileError

    d, archs, ms = ten
    hwlat.save_predictor(hwlat.adapt("nb201", archs, ms), d / "saved")
    again = hwlat.adapt("nb201", archs[:5], ms[:5], predictor=str(d / "saved"))  # adapted anew to other measurements
    assert again.predict(archs[:5]).shape == (5,)
    with pytest.raises(PredictorFileError, match="no predictor at nope.json"):
        hwlat.adapt("nb201", archs, ms, predictor="nope")
    with pytest.raises(PredictorSpaceError, match="a device table is not adapted"):
        hwlat.adapt("nb201", archs, ms, predictor="lut:cpu_onnxruntime_fp32_threads1")
    with pytest.raises(TypeError, match="a int cannot be adapted to a device: give 'pretrained'"):
        hwlat.adapt("nb201", archs, ms, predictor=5)


def test_measurements_that_are_all_equal_are_fitted_with_a_warning(ten, caplog):
    """All latencies 4.2 fitted silently and predicted 4.2 ms ± 0.0004 for every architecture."""
    d, archs, ms = ten
    path = write_measurements(d / "m.csv", archs, ["4.2"] * len(archs))
    with caplog.at_level("WARNING"):
        assert main(_fit_argv(path, d / "p")) == 0
    assert f"all {len(archs)} measured latencies are 4.2 ms: nothing to learn how architectures differ from" in caplog.text
    caplog.clear()
    path = write_measurements(d / "m.csv", archs, [f"{v:.4f}" for v in ms])
    with caplog.at_level("WARNING"):
        assert main(_fit_argv(path, d / "p")) == 0
    assert "measured latencies are" not in caplog.text


def test_a_device_named_like_a_unit_is_read_as_the_latency_in_ms(ten):
    """The unit check refused a phone's column 'galaxy_s' as seconds, with no way around it."""
    d, archs, ms = ten
    from hwlat.nas.few_shot import read_measurements

    path = write_measurements(d / "m.csv", archs, [f"{v:.4f}" for v in ms], column="galaxy_s")
    m = read_measurements(path, "nb201")
    assert m.device == "galaxy_s" and len(m.ms) == len(archs)


@pytest.mark.parametrize("folder", ["..", ".", "sub"])
def test_measurements_given_as_a_folder_are_one_error_whatever_its_name(tmp_path, monkeypatch, folder):
    """`..` was read as a table's name and refused as a TableError ('give a name inside it'), '.' and other
    folders as a MeasurementsError: a caller catching MeasurementsError missed one."""
    from hwlat.nas.few_shot import MeasurementsError, read_measurements

    (tmp_path / "sub" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "x")
    with pytest.raises(MeasurementsError, match="is a folder; give the arch table's CSV file"):
        read_measurements(folder if folder != "sub" else tmp_path / "sub", "nb201")
