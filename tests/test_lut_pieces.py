"""A network priced piece by piece (`hwlat.predictors.lut.pieces`, what `predict --archs` and the searches
use) predicts exactly as priced whole: every field of every prediction, on random architectures of
every CNN space, under several tables and predictor settings; and `predict --archs` equals
one-by-one `predict --arch`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwlat
from hwlat.device_tables.graph import OP, Graph, GraphOp
from hwlat.device_tables.kernels import FusionRules, expand_fused
from hwlat.device_tables.ops import OpSpec
from hwlat.nas.spaces import get_space
from hwlat.predictors.lut import LUTPredictor, pieces
from hwlat.predictors.lut.prediction import kernel_record

ORT = "cpu_onnxruntime_fp32_threads1"


class Whole(LUTPredictor):
    """The same predictor pricing every graph whole (`LUTPredictor._found_whole`)."""

    def _found_records(self, graph):
        found, missing, repeats, excess = self._found_whole(expand_fused(graph))
        return [kernel_record(k) for k in found], missing, repeats, excess


def _same(fast: LUTPredictor, whole: LUTPredictor, graph: Graph) -> None:
    a, b = fast.predict_graph(graph), whole.predict_graph(graph)
    assert a.to_dict() == b.to_dict()  # totals, sigma, kernels (keys, nodes, ms), uncovered, repeats, coverage
    assert a.kernels == b.kernels and a.total_ms == b.total_ms and a.sigma_ms == b.sigma_ms
    # What the calibration reads, before it: the kernels, what is uncovered, the repeats, and the MB
    # of activations the memory plan spreads (which a calibration may weigh at 0).
    assert fast._found(graph) == whole._found_whole(expand_fused(graph))


@pytest.fixture(scope="module")
def ort():
    return hwlat.load_table(ORT)


@pytest.fixture(scope="module")
def ort_pair(ort):
    return LUTPredictor(ort), Whole(ort)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(space=st.sampled_from(["nb201", "nb201-dead", "fbnet", "ofa"]), seed=st.integers(0, 2**31 - 1))
def test_random_archs_predict_piece_by_piece_exactly_as_whole(ort_pair, space, seed):
    """One predictor keeps its pieces across all examples (as `predict --archs` does across
    architectures); each prediction equals the whole graph's, field by field, bit for bit."""
    sp = get_space("nb201", keep_dead=True) if space == "nb201-dead" else get_space(space)
    fast, whole = ort_pair
    for arch in sp.sample(3, seed=seed):
        graph = sp.graph(arch)
        assert pieces.cut(graph) is not None  # a CNN of a space is cut: the pieces path is taken
        _same(fast, whole, graph)


@pytest.mark.parametrize("table,options", [
    (ORT, {}),
    (ORT, {"rules": FusionRules.none()}),
    (ORT, {"use_regressors": False}),
    (ORT, {"layout_reorders": False, "statistic": "p10_ms"}),
    (ORT, {"price_data_movement": False}),
    ("cpu_litert_fp32_threads1", {}),
    ("cpu_tflm_int8_threads1", {}),
    ("cpu_torch_fp32_threads1", {}),
])
def test_pieces_equal_whole_under_every_table_and_setting(table, options):
    """Fusion rules or none, regressors or uncovered kernels, reorders or not, another statistic,
    data movement priced or left uncovered, other runtimes' tables (no shared duplicates, a compact
    memory plan, int8): piece by piece equals whole."""
    t = hwlat.load_table(table)
    fast, whole = LUTPredictor(t, **options), Whole(t, **options)
    for name, n in (("nb201", 12), ("fbnet", 8), ("ofa", 6)):
        sp = get_space(name)
        for arch in sp.sample(n, seed=21):
            _same(fast, whole, sp.graph(arch))


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v3_small", "vit_ti", "mobilevit_xs", "bert_tiny"])
def test_onnx_models_piece_by_piece_equal_whole(ort, model):
    """Graphs read from ONNX (the classic CNNs, transformers with their reshapes, attention and
    several inputs): cut where they can be, equal to the whole either way."""
    from hwlat.nas.models import to_onnx

    graph = Graph.from_onnx(to_onnx(model))
    _same(LUTPredictor(ort), Whole(ort), graph)
    _same(LUTPredictor(ort, use_regressors=False), Whole(ort, use_regressors=False), graph)  # partial


def test_pieces_repeat_within_and_across_networks(ort):
    """NB201 repeats its cell five times a stage: far fewer forms are priced than pieces met; FBNet
    networks share blocks, so a second batch of networks prices few new ones."""
    sp = get_space("nb201")
    lut = LUTPredictor(ort)
    graphs = [sp.graph(a) for a in sp.sample(4, seed=2)]
    met = sum(len(pieces.cut(g)[0]) for g in graphs)
    for g in graphs:
        lut.predict_graph(g)
    forms = len(pieces._memo(lut)["forms"])
    assert met >= 4 * 16 and forms <= met // 3
    fb = get_space("fbnet")
    lut = LUTPredictor(ort)
    for a in fb.sample(20, seed=1):
        lut.predict_graph(fb.graph(a))
    before = len(pieces._memo(lut)["forms"])
    for a in fb.sample(5, seed=2):
        lut.predict_graph(fb.graph(a))
    assert len(pieces._memo(lut)["forms"]) - before < 5 * len(pieces.cut(fb.graph(fb.sample(1, seed=2)[0]))[0]) // 4


X = (1, 8, 16, 16)
CONV = OpSpec.make("conv2d", X, cout=8, kernel=3)
RELU = OpSpec.make("relu", X)
POOL = OpSpec.make("avgpool", X, kernel=3, stride=1, padding=1)
ADD = OpSpec.make("add", X)


def _op(spec, ins, outs, name):
    return GraphOp(OP, spec, spec.op, (name,), tuple(ins), tuple(outs))


def test_cut_only_where_one_tensor_crosses_and_no_kernel_can_reach_across():
    """A tensor read by a fusable tail alone, or by repeats of one weightless op (which a runtime
    computing duplicates once would reduce to one reader), is not cut after: its writer's kernel
    could take the reader in. Read by two different ops, it is."""
    chain = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(RELU, ["c"], ["y"], "relu")], inputs={"x": X}, outputs=("y",))
    assert pieces.cut(chain) is None
    two = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(RELU, ["c"], ["r"], "relu"), _op(POOL, ["c"], ["p"], "pool"),
                 _op(ADD, ["r", "p"], ["y"], "add")], inputs={"x": X}, outputs=("y",))
    assert pieces.cut(two)[0] == [(0, 1, None), (1, 4, 0)]
    repeats = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(RELU, ["c"], ["r1"], "relu1"), _op(RELU, ["c"], ["r2"], "relu2"),
                     _op(ADD, ["r1", "r2"], ["y"], "add")], inputs={"x": X}, outputs=("y",))
    assert pieces.cut(repeats) is None
    fused = Graph([_op(OpSpec.make("conv2d+relu", X, cout=8, kernel=3), ["x"], ["c"], "conv"),
                   _op(POOL, ["c"], ["p"], "pool"), _op(RELU, ["c"], ["r"], "relu"), _op(ADD, ["r", "p"], ["y"], "add")],
                  inputs={"x": X}, outputs=("y",))
    assert pieces.cut(fused) is None and pieces.cut(expand_fused(fused)) is not None


def test_a_changed_row_reprices_the_pieces_that_used_it(ort):
    """A piece remembers the rows it was priced by: a row replaced in the table is read again."""
    from dataclasses import replace

    from hwlat.device_tables.table import DeviceTable

    table = DeviceTable(ort.device, dict(ort.meta))
    for row in ort.rows():
        table._rows[row.spec.key] = row
    sp = get_space("nb201")
    graph = sp.graph(sp.sample(1, seed=4)[0])
    lut = LUTPredictor(table)
    before = lut.predict_graph(graph).total_ms
    key = next(k.key for k in lut.predict_graph(graph).kernels if k.op.startswith("conv2d") and k.source == "table")
    row = table._rows[key]
    table._rows[key] = replace(row, measurement=replace(row.measurement, median_ms=row.measurement.median_ms * 5))
    after = lut.predict_graph(graph)
    assert after.total_ms > before
    # The same regressors: a predictor keeps those it fitted (a fresh one would refit them on the
    # changed rows), and a table with few rows prices some of this network's kernels by them.
    assert after.to_dict() == Whole(table, regressors=lut.regressors).predict_graph(graph).to_dict()


@pytest.mark.parametrize("space,spec", [("nb201", "0:8"), ("fbnet", "random:4"), ("ofa", "random:3")])
def test_predict_archs_equals_one_by_one_predict_arch(space, spec, tmp_path, capsys):
    """`hwlat predict --archs` (one process, pieces kept across architectures) writes what each
    `hwlat predict --arch` (a fresh process's predictor) prints, and the API gives the same numbers."""
    import csv

    from hwlat.cli import main

    out = tmp_path / "many.csv"
    assert main(["predict", "--space", space, "--archs", spec, "--table", ORT, "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    many = hwlat.predict_archs(space, spec, ORT)
    key = next(iter(rows[0]))
    capsys.readouterr()
    for row, pred in zip(rows, many):
        assert main(["predict", "--space", space, "--arch", row[key], "--table", ORT, "--json"]) == 0
        alone = json.loads(capsys.readouterr().out)
        assert alone["latency_ms"] == pred.total_ms and alone["sigma_ms"] == pred.sigma_ms
        assert alone["kernels"] == json.loads(json.dumps(pred.to_dict()))["kernels"]
        assert row["predicted_ms"] == f"{alone['latency_ms']:.6g}" and row["sigma_ms"] == f"{alone['sigma_ms']:.4g}"
        assert row["partial"] == ("true" if alone["partial"] else "false")


def test_sigma_holds_the_tables_error_on_networks_it_was_not_calibrated_on():
    """A table's one-sigma error includes its whole-network error on its self-score networks (the
    RMS of their log predicted/measured), not only its regressed kernels' errors."""
    from hwlat.predictors.lut.predictor import held_out_error

    table = hwlat.load_table(ORT)
    ratios = np.array(list(table.meta["self_score"]["ratios"].values()))
    lut = LUTPredictor(table)
    assert lut.network_error == pytest.approx(np.sqrt(np.mean(np.log(ratios) ** 2))) and lut.network_error > 0
    arch = get_space("nb201").sample(1, seed=2)[0]
    pred = lut.predict_graph(get_space("nb201").graph(arch))
    kernels_only = np.sqrt(sum((k.ms * k.sigma) ** 2 for k in pred.kernels))
    assert pred.sigma_ms == pytest.approx(np.hypot(kernels_only, pred.total_ms * lut.network_error))
    assert held_out_error({}) == 0.0 and held_out_error({"self_score": {"ratios": {"a": 1.1, "b": 1 / 1.1}}}) == \
        pytest.approx(np.log(1.1))


def test_sigma_adds_the_copies_of_one_regressed_kernel_linearly():
    """The copies of one kernel key share one regressed time, so one error: the kernels' part of
    sigma sums their errors per key before the keys are added in quadrature (a table without a
    score stage states that part alone). As independent errors it came out 1.7x too small on a
    ResNet-18 regressed whole."""
    from collections import defaultdict

    from hwlat.nas.models import to_onnx

    pred = LUTPredictor(hwlat.load_table("nvidia_h200_torch_fp32_threads1")).predict_graph(to_onnx("resnet18"))
    per_key = defaultdict(float)
    for k in pred.kernels:
        per_key[k.key] += k.ms * k.sigma
    assert len(per_key) < sum(k.source == "regressor" for k in pred.kernels) and pred.network_error == 0
    assert pred.sigma_ms == pytest.approx(np.sqrt(sum(e * e for e in per_key.values())))
    assert pred.sigma_ms > 1.2 * np.sqrt(sum((k.ms * k.sigma) ** 2 for k in pred.kernels))


def test_a_table_without_a_score_stage_says_its_sigma_is_the_regressed_kernels_part_only():
    """A board table (no score stage) looks every NB201 kernel up: its sigma is 0, printed as a bare
    `±0.000 ms` that read as an exact prediction; it says what the number leaves out."""
    graph = get_space("nb201").graph(get_space("nb201").sample(1, seed=2)[0])
    board = LUTPredictor(hwlat.load_table("qemu_mps2_an386_board_int8_threads1")).predict_graph(graph)
    scored = LUTPredictor(hwlat.load_table(ORT)).predict_graph(graph)
    assert board.sigma_ms == 0 and "±0.000 ms (regressed kernels only: qemu_mps2_an386_board_int8_threads1 has no score stage)" in board.format()
    assert scored.sigma_ms > 0 and "regressed kernels only" not in scored.format()


def test_predictions_of_a_table_without_a_score_stage_say_so_in_the_csv_and_the_json(tmp_path, capsys):
    """`predict --archs` wrote sigma_ms 0 for every architecture a board table looks up, and `--json`
    a sigma_ms of 0, with nothing saying that the whole-network part is missing, not zero."""
    from hwlat.cli import main

    board = "qemu_mps2_an386_board_int8_threads1"
    said = f"sigma_ms is the regressed kernels' part only: {board} has no score stage"
    assert main(["predict", "--space", "nb201", "--archs", "5,1462", "--table", board, "--out", str(tmp_path / "p.csv")]) == 0
    assert said in capsys.readouterr().out
    assert main(["predict", "--space", "nb201", "--archs", "5,1462", "--table", board]) == 0
    assert said in capsys.readouterr().err
    assert main(["predict", "--space", "nb201", "--arch", "5", "--table", board, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["network_error"] == 0
    assert main(["predict", "--space", "nb201", "--archs", "5", "--table", ORT, "--out", str(tmp_path / "o.csv")]) == 0
    assert "score stage" not in capsys.readouterr().out


def test_prediction_from_records_equals_one_made_of_kernels():
    """A prediction keeps its kernels as records until they are used: its totals, counts and fields
    read from the records equal those of the same prediction made of `KernelPrediction`s, before and
    after its kernels are made, and kernels set on it replace the records."""
    from dataclasses import replace

    from hwlat.predictors.lut.prediction import KernelPrediction, Prediction

    lut = LUTPredictor(hwlat.load_table(ORT))
    space = get_space("nb201")
    for arch in space.sample(5, seed=4):
        lazy = lut.predict_graph(space.graph(arch))
        records = tuple(lazy._records)
        assert records and lazy._kernels is None
        made = Prediction(lazy.model, lazy.table, [KernelPrediction(*r) for r in records], lazy.overhead_ms,
                          lazy.uncovered, lazy.calibration, lazy.repeats, lazy.ops, lazy.network_error)
        assert (lazy.total_ms, lazy.sigma_ms, lazy.counts) == (made.total_ms, made.sigma_ms, made.counts)
        assert lazy._kernels is None  # not made for the totals
        assert lazy.to_dict() == made.to_dict() and lazy == made and lazy.kernels == made.kernels
        assert lazy._kernels is not None and [kernel_record(k) for k in lazy.kernels] == list(records)
        lazy.kernels = lazy.kernels[:1]
        assert lazy.total_ms == max(lazy.kernels[0].ms + lazy.overhead_ms, 0.0)
        assert replace(made, kernels=made.kernels[:1]) == lazy


def test_predictions_shared_among_forked_workers_equal_those_of_one_process(tmp_path):
    """Forked workers (`hwlat.predictors.lut.many`, in a fresh process where no runtime's threads are
    loaded) predict what one process predicts, in order; the CLI's --jobs writes the same CSV."""
    import subprocess
    import sys

    script = tmp_path / "many.py"
    script.write_text(
        "import json, multiprocessing, sys\n"
        "import hwlat\n"
        "from hwlat.api import _arch_list, _space\n"
        "from hwlat.predictors.lut import LUTPredictor\n"
        "from hwlat.predictors.lut.many import predict_archs\n"
        f"sp = _space('nb201'); archs = _arch_list(sp, 'random:230', 11)\n"
        f"lut = LUTPredictor(hwlat.load_table({ORT!r}))\n"
        "workers, out = 0, []\n"
        "for p in predict_archs(lut, sp, archs, jobs=2):\n"
        "    workers = max(workers, len(multiprocessing.active_children()))\n"
        "    out.append(p.to_dict())\n"
        "json.dump({'workers': workers, 'predictions': out}, sys.stdout)\n")
    got = json.loads(subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                                    cwd=Path(__file__).resolve().parent.parent).stdout)
    assert got["workers"] == 2
    alone = hwlat.predict_archs("nb201", "random:230", ORT, seed=11, jobs=1)
    assert got["predictions"] == [json.loads(json.dumps(p.to_dict())) for p in alone]

    from hwlat.cli import main

    for jobs in ("1", "2"):
        assert main(["predict", "--space", "nb201", "--archs", "random:230", "--seed", "11", "--table", ORT,
                     "--out", str(tmp_path / f"jobs{jobs}.csv"), "--no-progress", "--jobs", jobs]) == 0
    assert (tmp_path / "jobs1.csv").read_text() == (tmp_path / "jobs2.csv").read_text()


def test_predict_archs_called_from_threads_at_once_predicts_each_calls_own_archs(tmp_path):
    """Threads predicting different architectures at once (a thread pool of a NAS loop), each with
    forked workers: every call gets its own architectures' predictions (the workers once forked with
    whichever call had last set the shared work)."""
    import subprocess
    import sys

    script = tmp_path / "threads.py"
    script.write_text(
        "import threading\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import hwlat\n"
        "from hwlat.api import _arch_list, _space\n"
        "from hwlat.predictors.lut import LUTPredictor\n"
        "from hwlat.predictors.lut.many import predict_archs\n"
        f"sp = _space('nb201'); lut = LUTPredictor(hwlat.load_table({ORT!r})).fit()\n"
        "lists = [_arch_list(sp, 'random:300', seed) for seed in range(4)]\n"
        "start = threading.Barrier(4)\n"
        "def run(archs):\n"
        "    start.wait()\n"
        "    return [p.total_ms for p in predict_archs(lut, sp, archs, jobs=2)]\n"
        "for _ in range(3):\n"
        "    with ThreadPoolExecutor(4) as ex:\n"
        "        got = list(ex.map(run, lists))\n"
        "    assert got == [[p.total_ms for p in predict_archs(lut, sp, a, jobs=1)] for a in lists]\n")
    subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                   cwd=Path(__file__).resolve().parent.parent)


def test_a_tables_constraint_predicts_a_batch_in_a_multiprocessing_pool_worker(tmp_path):
    """A NAS framework ships the constraint to `multiprocessing.Pool` workers, which are daemonic: a batch
    big enough for forked workers of their own raised "AssertionError: daemonic processes are not allowed to
    have children". A worker predicts the batch itself, what this process predicts, with either start method."""
    import subprocess
    import sys

    script = tmp_path / "pool.py"
    script.write_text(
        "import multiprocessing, sys\n"
        "import hwlat\n"
        "def latencies(args):\n"
        "    c, keys = args\n"
        "    return c.latency(keys).tolist()\n"
        "if __name__ == '__main__':\n"
        "    sp = hwlat.space('nb201'); keys = [sp.key(a) for a in sp.sample(250, 5)]\n"
        f"    c = hwlat.LatencyConstraint('lut:{ORT}', budget_ms=1.0, space='nb201', as_profiled=True)\n"
        "    with multiprocessing.get_context(sys.argv[1]).Pool(1) as pool:\n"
        "        got = pool.apply(latencies, ((c, keys),))\n"
        "    assert got == c.latency(keys).tolist()\n")
    for method in ("fork", "spawn"):
        run = subprocess.run([sys.executable, str(script), method], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
        assert run.returncode == 0, f"{method}: {run.stderr[-2000:]}"


def test_a_prediction_unlike_the_scored_one_keeps_only_the_kernels_part_of_sigma(capsys):
    """The score stage measured the table's default prediction, yet `--no-fusion` (a naive sum, 1.5-2x off)
    and `--statistic p10` printed the same whole-network sigma, as if scored; now they keep the kernels'
    part and say why."""
    from hwlat.cli import main
    from hwlat.device_tables.kernels import FusionRules

    table = hwlat.load_table(ORT)
    graph = get_space("nb201").graph(get_space("nb201").sample(1, seed=2)[0])
    scored = LUTPredictor(table).predict_graph(graph)
    naive = LUTPredictor(table, rules=FusionRules.none()).predict_graph(graph)
    p10 = LUTPredictor(table, statistic="p10_ms").predict_graph(graph)
    assert scored.network_error > 0 and naive.network_error == 0 and p10.network_error == 0
    assert "not this one (fusion rules)" in naive.format() and "(statistic, calibration)" in p10.format()
    assert main(["predict", "--space", "nb201", "--archs", "5,1462", "--table", ORT, "--no-fusion", "--as-profiled"]) == 0
    assert "sigma_ms is the regressed kernels' part only" in capsys.readouterr().err
    assert main(["predict", "--space", "nb201", "--archs", "5,1462", "--table", ORT, "--as-profiled"]) == 0
    assert "regressed kernels' part only" not in capsys.readouterr().err
