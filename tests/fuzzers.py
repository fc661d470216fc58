"""Property-based fuzzers of every loader and of the CLI's parsers (hypothesis).

Each fuzzer mutates a valid input (truncations, byte flips, NaN/inf/negative/huge/text values in
cells, duplicate and missing columns, a BOM, CRLF line ends, random small ONNX graphs, an adapted
predictor's JSON entries and arrays replaced by values of the wrong kind or shape) and checks
one property: the loader returns a valid result or raises the project's typed error (`HwlatError`,
one line from the CLI); it never raises anything else, and never changes the file it read.

`tests/test_fuzz.py` runs each with a few dozen examples; `benchmarks/fuzz.py` runs thousands and
prints how many inputs each fuzzer tried.
"""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwlat.device_tables.errors import HwlatError

ROOT = Path(__file__).resolve().parent.parent
WEIRD_VALUES = ["nan", "NaN", "inf", "-inf", "-1", "0", "-0.0", "1e308", "1e-320", "", " ", "abc", "1,5", "\"",
                "None", "true", "1e999", "0x10", "３"]


@dataclass
class Counter:
    tried: int = 0
    accepted: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)


# ---- mutations of text files -----------------------------------------------------------------
@st.composite
def mutated_text(draw, text: str) -> str:
    """`text` with one to three random edits of the kinds real broken files show."""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "cell", "drop_column", "dup_column", "bom", "crlf",
                                     "dup_line", "drop_line", "blank", "garbage_line"]))
        if kind == "truncate":
            joined = "".join(lines)
            lines = joined[: draw(st.integers(0, max(len(joined) - 1, 0)))].splitlines(keepends=True)
        elif kind == "flip" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            line = lines[i]
            if line:
                j = draw(st.integers(0, len(line) - 1))
                lines[i] = line[:j] + chr(draw(st.integers(32, 0x2FF))) + line[j + 1:]
        elif kind == "cell" and len(lines) > 1:
            i = draw(st.integers(1, len(lines) - 1))
            cells = lines[i].rstrip("\r\n").split(",")
            j = draw(st.integers(0, len(cells) - 1))
            cells[j] = draw(st.sampled_from(WEIRD_VALUES))
            lines[i] = ",".join(cells) + "\n"
        elif kind in ("drop_column", "dup_column") and lines:
            width = len(lines[0].split(","))
            j = draw(st.integers(0, max(width - 1, 0)))
            out = []
            for line in lines:
                cells = line.rstrip("\r\n").split(",")
                if j < len(cells):
                    cells = cells[:j] + cells[j + 1:] if kind == "drop_column" else cells[: j + 1] + [cells[j]] + cells[j + 1:]
                out.append(",".join(cells) + "\n")
            lines = out
        elif kind == "bom":
            lines = ["\ufeff" + "".join(lines)]
        elif kind == "crlf":
            lines = [line.replace("\n", "\r\n") for line in lines]
        elif kind == "dup_line" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
        elif kind == "drop_line" and lines:
            lines.pop(draw(st.integers(0, len(lines) - 1)))
        elif kind == "blank":
            lines.insert(draw(st.integers(0, len(lines))), "\n")
        elif kind == "garbage_line":
            lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=40)) + "\n")
    return "".join(lines)


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    """`data` truncated, with flipped bytes, or with bytes inserted."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert"]))
        if kind == "truncate":
            b = b[: draw(st.integers(0, max(len(b) - 1, 0)))]
        elif b and kind == "flip":
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        else:
            b[draw(st.integers(0, len(b))):0] = draw(st.binary(min_size=1, max_size=8))
    return bytes(b)


# ---- the property ----------------------------------------------------------------------------
def digest(paths: list[Path]) -> list[str | None]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths]


def check(counter: Counter, load: Callable[[], Any], files: list[Path], valid: Callable[[Any], None] = lambda r: None):
    """Run one load: a valid result (checked by `valid`) or an `HwlatError` with a one-line message;
    nothing else, and the files unchanged."""
    before = digest(files)
    counter.tried += 1
    try:
        result = load()
    except HwlatError as exc:
        counter.refused += 1
        name = type(exc).__name__
        counter.errors[name] = counter.errors.get(name, 0) + 1
        message = str(exc)
        assert message.strip(), f"{name} without a message"
    else:
        counter.accepted += 1
        valid(result)
    assert digest(files) == before, "the loader changed the file it read"


def finite_positive(values) -> None:
    arr = np.asarray(list(values), dtype=float)
    assert np.all(np.isfinite(arr)) and np.all(arr >= 0), f"accepted non-finite or negative latencies: {arr[:5]}"


# ---- valid seeds -----------------------------------------------------------------------------
def seed_device_table(folder: Path, rows: int = 12) -> Path:
    """A small device table: the first rows of the shipped onnxruntime table and its metadata."""
    src = ROOT / "hwlat" / "device_tables" / "tables" / "cpu_onnxruntime_fp32_threads1"
    lines = src.with_suffix(".csv").read_text().splitlines(keepends=True)[: rows + 1]
    out = folder / "t"
    out.with_suffix(".csv").write_text("".join(lines))
    shutil.copy(src.with_suffix(".json"), out.with_suffix(".json"))
    return out


def seed_arch_table(folder: Path, rows: int = 12) -> Path:
    src = ROOT / "hwlat" / "device_tables" / "tables" / "arch" / "nb201_cpu_onnxruntime_fp32_threads1"
    out = folder / "a"
    out.with_suffix(".csv").write_text("".join(src.with_suffix(".csv").read_text().splitlines(keepends=True)[: rows + 1]))
    shutil.copy(src.with_suffix(".json"), out.with_suffix(".json"))
    return out


SWEEP = (ROOT / "hwlat" / "profilers" / "sweeps" / "quick.yaml").read_text()


# ---- the fuzzers -----------------------------------------------------------------------------
def fuzz_device_table_csv(counter: Counter, examples: int):
    from hwlat.device_tables import load

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        with tempfile.TemporaryDirectory() as tmp:
            base = seed_device_table(Path(tmp))
            csv = base.with_suffix(".csv")
            csv.write_text(data.draw(mutated_text(csv.read_text())), newline="")

            def valid(table):
                for row in table.rows("ok"):
                    m = row.measurement
                    finite_positive([m.median_ms, m.mean_ms, m.p10_ms, m.p90_ms])

            check(counter, lambda: load(csv), [csv, base.with_suffix(".json")], valid)

    run()


def fuzz_device_table_json(counter: Counter, examples: int):
    from hwlat.device_tables import load

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        with tempfile.TemporaryDirectory() as tmp:
            base = seed_device_table(Path(tmp), rows=3)
            meta = base.with_suffix(".json")
            meta.write_bytes(data.draw(mutated_bytes(meta.read_bytes())))
            check(counter, lambda: load(base), [base.with_suffix(".csv"), meta])

    run()


# What `fuzz_device_table_fields` puts in place of a metadata entry: a string, null, a list, a number, an
# object, a boolean, or nothing (the entry deleted).
DELETED = object()
FIELD_VALUES = ("x", None, [1.0], 3, {}, True, DELETED)


def meta_paths(node: Any, prefix: tuple = (), depth: int = 3) -> list[tuple]:
    """Every entry of a table's metadata down to `depth` levels (a list's first item; of a nested object
    of many entries, such as a calibration's kernel types, its first three)."""
    if depth == 0 or not isinstance(node, (dict, list)) or not node:
        return []
    keys = [0] if isinstance(node, list) else sorted(node)[: 3 if prefix and len(node) > 16 else None]
    return [p for k in keys for p in [prefix + (k,), *meta_paths(node[k], prefix + (k,), depth - 1)]]


def seed_complete_table(folder: Path, rows: int = 12) -> Path:
    """`seed_device_table` with the shipped table's networks and stored regressors beside it."""
    base = seed_device_table(folder, rows)
    src = ROOT / "hwlat" / "device_tables" / "tables" / "cpu_onnxruntime_fp32_threads1"
    for suffix in (".networks.csv", ".regressors.json", ".regressors.npz"):
        shutil.copy(f"{src}{suffix}", f"{base}{suffix}")
    return base


def fuzz_device_table_fields(counter: Counter, examples: int):
    """Each entry of a table's JSON (top level, and down into device, fusion, lut_calibration, self_score,
    profile_device, ...) replaced by each of `FIELD_VALUES`: `hwlat predict`, `table validate` and `table
    show` each give a result or one `hwlat: error:` line, the files unchanged; a table `validate` calls
    valid predicts and shows; resuming it to measure more is refused with a typed error or goes on. All
    of them when `examples` covers them, else a sample."""
    import contextlib
    import json

    from hwlat.device_tables.device import Device
    from hwlat.device_tables.table import DeviceTable
    from hwlat.cli import main

    src = ROOT / "hwlat" / "device_tables" / "tables" / "cpu_onnxruntime_fp32_threads1.json"
    original = json.loads(src.read_text())
    cases = [(path, value) for path in meta_paths(original) for value in FIELD_VALUES]

    def run_case(path: tuple, value: Any) -> None:
        try:
            check_case(path, value)
        except Exception as exc:  # which entry and value, on the line `benchmarks/fuzz.py` prints
            shown = "deleted" if value is DELETED else repr(value)
            raise AssertionError(f"{'.'.join(map(str, path))} = {shown}: {type(exc).__name__}: {exc}") from exc

    def check_case(path: tuple, value: Any) -> None:
        meta = json.loads(src.read_text())
        node = meta
        for k in path[:-1]:
            node = node[k]
        if value is DELETED:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        with tempfile.TemporaryDirectory() as tmp:
            base = seed_complete_table(Path(tmp))
            base.with_suffix(".json").write_text(json.dumps(meta))
            files = [base.with_suffix(".csv"), base.with_suffix(".json")]
            before = digest(files)
            codes = {}
            for argv in (["table", "validate", str(base)], ["table", "show", str(base)],
                         ["predict", "--space", "nb201", "--arch", "5", "--table", str(base), "--as-profiled"]):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = codes[argv[1]] = main(argv)
                assert code in (0, 1), (path, value, argv, code)
                if code == 1:
                    assert err.getvalue().count("hwlat: error:") == 1, (path, value, err.getvalue())
            assert digest(files) == before, (path, value, "a read changed the table's files")
            assert codes["validate"] == 1 or codes["show"] == codes["--space"] == 0, (path, value, codes)
            counter.tried += 1
            refused = "+".join(name for name, key in (("validate", "validate"), ("show", "show"), ("predict", "--space"))
                               if codes[key])
            if refused:
                counter.refused += 1
                counter.errors[f"refused by {refused}"] = counter.errors.get(f"refused by {refused}", 0) + 1
            else:
                counter.accepted += 1
            try:  # resuming it: a typed error or an open table
                DeviceTable.open(base, Device.from_dict(original["device"])).close()
            except HwlatError:
                counter.errors["resume refused"] = counter.errors.get("resume refused", 0) + 1

    if examples >= len(cases):
        for path, value in cases:
            run_case(path, value)
        return

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=st.sampled_from(cases))
    def run(case):
        run_case(*case)

    run()


def fuzz_arch_table(counter: Counter, examples: int):
    from hwlat.device_tables.archtable import ArchTable
    from hwlat.nas.spaces import arch_keys

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        with tempfile.TemporaryDirectory() as tmp:
            base = seed_arch_table(Path(tmp))
            csv = base.with_suffix(".csv")
            csv.write_text(data.draw(mutated_text(csv.read_text())), newline="")

            def valid(table):
                values = table.to_numpy()
                finite_positive(values[np.isfinite(values)])

            check(counter, lambda: ArchTable.read(csv, space=arch_keys("nb201")), [csv], valid)

    run()


def fuzz_sweep(counter: Counter, examples: int):
    from hwlat.profilers.sweeps import load_sweep

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.yaml"
            text = data.draw(mutated_text(SWEEP))
            if data.draw(st.booleans()):  # a value of an entry replaced by a weird number
                text = text.replace(data.draw(st.sampled_from(["16", "32", "3", "1", "2", "64", "8"])),
                                    data.draw(st.sampled_from(["-3", "0", "3.5", "1e9", "nan", "-1", "x"])), 1)
            path.write_text(text)

            def valid(specs):
                for spec in specs:
                    assert all(d >= 1 for d in spec.input_shape) and all(d >= 1 for d in spec.output_shape), spec.key

            check(counter, lambda: load_sweep(str(path)), [path], valid)

    run()


def fuzz_predictor(counter: Counter, examples: int):
    from hwlat.predictors import io as pio

    src = ROOT / "hwlat" / "predictors" / "pretrained" / "nb201"

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "p"
            shutil.copy(src.with_suffix(".json"), base.with_suffix(".json"))
            shutil.copy(src.with_suffix(".npz"), base.with_suffix(".npz"))
            target = base.with_suffix(data.draw(st.sampled_from([".json", ".npz", ".npz-values"])).split("-")[0])
            if target.suffix == ".npz" and data.draw(st.booleans()):
                arrays = dict(np.load(target))
                name = data.draw(st.sampled_from(sorted(arrays)))
                arr = np.array(arrays[name], dtype=float, copy=True)
                if arr.size:
                    arr.flat[data.draw(st.integers(0, arr.size - 1))] = data.draw(st.sampled_from([math.nan, math.inf, -1e308]))
                    arrays[name] = arr
                with open(target, "wb") as f:
                    np.savez(f, **arrays)
            else:
                target.write_bytes(data.draw(mutated_bytes(target.read_bytes())))

            def valid(pred):
                from hwlat.nas.features import latency_features
                from hwlat.nas.spaces import get_space

                sp = get_space("nb201")
                X, _ = latency_features(sp, sp.sample(12, seed=0))  # the same archs as below
                from hwlat.nas.constraints import LatencyConstraint

                archs = sp.sample(12, seed=0)
                try:
                    if hasattr(pred, "adapt"):  # the shipped predictor is meta-trained: adapt it as a user does
                        pred.adapt(X[:8], np.linspace(1.0, 2.0, 8))
                    # huge (finite) weights load; what they predict is checked where predictions are used
                    y = LatencyConstraint(pred, budget_ms=1.0, space=sp).latency(archs)
                except HwlatError:
                    return
                assert np.all(np.isfinite(y)) and np.all(y >= 0), "a loaded predictor's latencies pass unchecked"

            check(counter, lambda: pio.load(base), [base.with_suffix(".json"), base.with_suffix(".npz")], valid)

    run()


# Values a damaged JSON entry of a saved predictor takes: each kind JSON has, and numbers out of range.
BAD_JSON_VALUES = ["x", "", None, [], ["a"], [1, 2], {}, {"a": 1}, 0, -1, 5, 1.5, 1e300, -1e300, True, False]


def json_fields(obj: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every entry of a JSON document, nested ones included (of a list: its first, second
    and last entries, so a layout's hundred column names do not crowd out the rest)."""
    out = [path] if path else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += json_fields(v, path + (k,))
    elif isinstance(obj, list):
        for i in sorted({0, 1, len(obj) - 1} & set(range(len(obj)))):
            out += json_fields(obj[i], path + (i,))
    return out


def bad_arrays(a: np.ndarray) -> list[np.ndarray]:
    """A stored array one entry short and one long, of another rank, a scalar, empty, text, and
    (a 2-D one) a column short."""
    flat = a.reshape(-1)
    out = [a[:-1], np.concatenate([a, a[:1]]), flat[None, :], flat[:1].reshape(()), a[:0], np.full(a.shape, "x")]
    if a.ndim == 2:
        out.append(a[:, :-1])
    return [b for b in out if b.shape != a.shape or b.dtype != a.dtype]


def seed_adapted_predictor(folder: Path) -> Path:
    """A predictor as `hwlat adapt fit` saves it: the shipped NB201 one adapted to 10 made-up latencies."""
    from hwlat.nas.few_shot import fit, measurements_of, save
    from hwlat.nas.spaces import get_space

    sp = get_space("nb201")
    archs = sp.sample(10, seed=5)
    save(fit(sp, measurements_of(sp, archs, np.linspace(1.0, 3.0, 10), device="fuzz board")), folder / "p")
    return folder / "p"


def fuzz_adapted_predictor(counter: Counter, examples: int):
    """A saved adapted predictor with one JSON entry (top-level or nested) or one stored array replaced
    by a value of the wrong kind or shape, loaded and predicted with as `hwlat predict --predictor` does."""
    import json

    from hwlat.nas.few_shot import load, predict_with_sigma
    from hwlat.nas.spaces import get_space

    sp = get_space("nb201")
    archs = sp.sample(5, seed=0)
    with tempfile.TemporaryDirectory() as seed_dir:
        seed = seed_adapted_predictor(Path(seed_dir))
        meta0 = json.loads(seed.with_suffix(".json").read_text())
        arrays0 = dict(np.load(seed.with_suffix(".npz")))
    fields = json_fields(meta0)

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        meta, arrays = json.loads(json.dumps(meta0)), dict(arrays0)
        if data.draw(st.booleans()):
            path = data.draw(st.sampled_from(fields))
            entry = meta
            for key in path[:-1]:
                entry = entry[key]
            entry[path[-1]] = data.draw(st.sampled_from(BAD_JSON_VALUES))
        else:
            name = data.draw(st.sampled_from(sorted(arrays)))
            variants = bad_arrays(arrays[name])
            if data.draw(st.integers(0, len(variants))) == len(variants):
                del arrays[name]
            else:
                arrays[name] = data.draw(st.sampled_from(variants))
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "p"
            base.with_suffix(".json").write_text(json.dumps(meta))
            with open(base.with_suffix(".npz"), "wb") as f:
                np.savez(f, **arrays)

            def valid(result):
                ms, sigma = result
                assert np.all(np.isfinite(ms)) and np.all(ms > 0), f"a damaged predictor predicts {ms}"
                assert np.all(np.isfinite(sigma)) and np.all(sigma >= 0), f"a damaged predictor's sigma is {sigma}"

            def predict():
                try:
                    return predict_with_sigma(load(base, sp), archs)
                except HwlatError as exc:
                    assert "\n" not in str(exc), f"a message of more than one line: {exc}"
                    raise

            check(counter, predict, [base.with_suffix(".json"), base.with_suffix(".npz")], valid)

    run()


@st.composite
def small_onnx(draw) -> bytes:
    """A random small ONNX graph: a chain of conv/relu/pool/add/matmul-like nodes with random shapes,
    sometimes malformed (a wrong input name, a bad attribute), serialised and sometimes mutated."""
    from onnx import TensorProto, helper, numpy_helper

    c = c_in = draw(st.integers(1, 8))
    hw = draw(st.integers(1, 12))
    x = "x"
    nodes, inits = [], []
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["Conv", "Relu", "MaxPool", "Add", "Einsum", "Sigmoid", "GlobalAveragePool"]))
        out = f"t{i}"
        if kind == "Conv":
            k = draw(st.integers(1, 5))
            cout = draw(st.integers(1, 8))
            w = f"w{i}"
            inits.append(numpy_helper.from_array(np.ones((cout, c, k, k), np.float32), w))
            nodes.append(helper.make_node("Conv", [x, w], [out], kernel_shape=[k, k],
                                          strides=[draw(st.integers(1, 3))] * 2, pads=[draw(st.integers(0, 2))] * 4))
            c = cout
        elif kind == "MaxPool":
            nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[draw(st.integers(1, 4))] * 2))
        elif kind == "Add":
            nodes.append(helper.make_node("Add", [x, x], [out]))
        elif kind == "Einsum":
            nodes.append(helper.make_node("Einsum", [x], [out], equation="nchw->nchw"))
        else:
            nodes.append(helper.make_node(kind, [x], [out]))
        x = out
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, hw, hw])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", draw(st.sampled_from([13, 17, 7])))])
    data = model.SerializeToString()
    return draw(mutated_bytes(data)) if draw(st.booleans()) else data


def fuzz_onnx(counter: Counter, examples: int):
    from hwlat.device_tables import load
    from hwlat.predictors.lut import LUTPredictor

    lut = LUTPredictor(load("cpu_onnxruntime_fp32_threads1"))

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(model=small_onnx())
    def run(model):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            path.write_bytes(model)

            def valid(pred):
                assert math.isfinite(pred.latency_ms) and pred.latency_ms >= 0

            check(counter, lambda: lut.predict_graph(str(path)), [path], valid)

    run()


def fuzz_device_samples(counter: Counter, examples: int):
    from hwlat.nas.few_shot import read_measurements

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        with tempfile.TemporaryDirectory() as tmp:
            base = seed_arch_table(Path(tmp), rows=15)
            csv = base.with_suffix(".csv")
            csv.write_text(data.draw(mutated_text(csv.read_text())), newline="")

            def valid(m):
                finite_positive(m.ms)
                assert len(m.archs) == len(m.ms) >= 3

            check(counter, lambda: read_measurements(csv, "nb201"), [csv], valid)

    run()


TOKENS = ["predict", "space", "sample", "show", "table", "list", "validate", "profile", "ops", "archs", "search",
          "--space", "nb201", "fbnet", "ofa", "nope", "--arch", "--archs", "random:3", "random:-1", "0:2", "-5",
          "--table", "cpu_onnxruntime_fp32_threads1", "missing_table", "-n", "3", "-3", "0", "nan", "inf",
          "1e999", "--top", "--seed", "--json", "--threads", "--budget", "--max-latency-ms", "--runtime",
          "onnxruntime", "--minutes", "--out", "-x", "", "--ops", "1462", "x" * 30]
CHEAP = ("predict", "space", "table")


def fuzz_cli(counter: Counter, examples: int):
    """Random argument lists: argparse's usage error (exit 2), one `hwlat: error:` line (exit 1), or a
    run to the end; never a traceback. Only cheap commands run; the others are parsed only."""
    import contextlib

    from hwlat.cli import build_parser, main

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(argv=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=7))
    def run(argv):
        counter.tried += 1
        err = io.StringIO()
        with tempfile.TemporaryDirectory() as tmp:
            argv = [a if a != "--out" else f"--out={tmp}/o" for a in argv]
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    if argv[0] in CHEAP:
                        code = main(argv)
                    else:
                        build_parser(argv).parse_args(argv)
                        code = 0
            except SystemExit as exc:
                code = exc.code
            assert "Traceback" not in err.getvalue(), err.getvalue()
            if code == 1:
                assert err.getvalue().count("hwlat: error:") == 1, err.getvalue()
            assert code in (0, 1, 2, 3, None), code
        counter.accepted += code in (0, None)
        counter.refused += code not in (0, None)

    run()


FUZZERS: dict[str, Callable[[Counter, int], None]] = {
    "device table CSV": fuzz_device_table_csv,
    "device table JSON": fuzz_device_table_json,
    "device table fields": fuzz_device_table_fields,
    "arch table": fuzz_arch_table,
    "sweep file": fuzz_sweep,
    "predictor files": fuzz_predictor,
    "adapted predictor": fuzz_adapted_predictor,
    "ONNX model": fuzz_onnx,
    "measurement CSV": fuzz_device_samples,
    "CLI arguments": fuzz_cli,
}
