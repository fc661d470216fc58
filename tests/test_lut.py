"""Lookup-table prediction: fusion grouping, lookups and regressors, calibration, partial results,
adaptive sampling, fusion detection on ONNX Runtime, and the `hwlat predict` command."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwlat.device_tables.device import Device
from hwlat.device_tables.graph import OP, Graph, GraphOp
from hwlat.device_tables.kernels import FusionRules, activation_plans_mb, group_kernels, split_kernel
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.device_tables.table import DeviceTable
from hwlat.predictors.adaptive import adaptive_profile, grid_specs, kernel_pool
from hwlat.predictors.kernel_regressors import KernelRegressors, family
from hwlat.predictors.lut import CACHED_WEIGHTS_MB, REGRESSOR, TABLE, Calibration, LUTPredictor

ORT_LIKE = FusionRules.from_patterns(["conv2d+bn", "conv2d+bn+relu", "conv2d+relu", "conv2d+add", "conv2d+add+relu",
                                      "pwconv2d+relu", "pwconv2d+hardswish", "dwconv2d+relu", "dwconv2d+relu6",
                                      "dwconv2d+hardswish", "add+relu", "pwconv2d+relu6", "linear+relu"])


def synthetic_ms(spec: OpSpec) -> float:
    """A made-up device: call overhead + compute at 4 GMAC/s + memory at 8 GB/s, extra cost per fused tail."""
    return 0.004 + spec.macs / 4e9 * 1e3 + spec.bytes_moved / 8e9 * 1e3 + 0.2 * (len(spec.parts) - 1) * 1e-3


def synthetic_table(specs, rules: FusionRules = ORT_LIKE) -> DeviceTable:
    table = DeviceTable(Device.make("cpu", "synthetic"), {"fusion": rules.to_meta()})
    for s in dict.fromkeys(specs):
        table.append(s, Measurement.from_samples([synthetic_ms(s)]))
    return table


def _op(spec, ins, outs, name):
    return GraphOp(OP, spec, spec.op, (name,), tuple(ins), tuple(outs))


X = (1, 8, 16, 16)
CONV = OpSpec.make("conv2d", X, cout=8, kernel=3)
BN = OpSpec.make("bn", X)
RELU = OpSpec.make("relu", X)
ADD = OpSpec.make("add", X)


# ---- grouping ----------------------------------------------------------------------------------
def test_chain_fuses_as_far_as_the_rules_allow():
    g = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(BN, ["c"], ["b"], "bn"), _op(RELU, ["b"], ["y"], "relu")],
              inputs={"x": X}, outputs=("y",))
    assert [k.spec.op for k in group_kernels(g, ORT_LIKE)] == ["conv2d+bn+relu"]
    assert [k.spec.op for k in group_kernels(g, FusionRules.from_patterns(["conv2d+bn"]))] == ["conv2d+bn", "relu"]
    assert [k.spec.op for k in group_kernels(g, FusionRules.none())] == ["conv2d", "bn", "relu"]
    (k,) = group_kernels(g, ORT_LIKE)
    assert k.nodes == ("conv", "bn", "relu") and k.spec.input_shape == X and k.spec.a["cout"] == 8


def test_no_fusion_across_a_branch_or_a_graph_output():
    # conv output read twice (relu and the residual add): the conv runs alone.
    g = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(RELU, ["c"], ["r"], "relu"), _op(ADD, ["r", "c"], ["y"], "add")],
              inputs={"x": X}, outputs=("y",))
    assert [k.spec.op for k in group_kernels(g, ORT_LIKE)] == ["conv2d", "relu", "add"]
    g2 = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(RELU, ["c"], ["y"], "relu")], inputs={"x": X}, outputs=("c", "y"))
    assert [k.spec.op for k in group_kernels(g2, ORT_LIKE)] == ["conv2d", "relu"]


def test_residual_add_and_relu_fuse_into_the_conv():
    g = Graph([_op(CONV, ["x"], ["c"], "conv"), _op(ADD, ["c", "x"], ["a"], "add"), _op(RELU, ["a"], ["y"], "relu")],
              inputs={"x": X}, outputs=("y",))
    assert [k.spec.op for k in group_kernels(g, ORT_LIKE)] == ["conv2d+add+relu"]
    assert [k.spec.op for k in group_kernels(g, FusionRules.from_patterns(["add+relu"]))] == ["conv2d", "add+relu"]


def test_fused_specs_from_a_space_are_regrouped_by_the_rules():
    spec = OpSpec.make("conv2d+bn+relu", X, cout=8, kernel=3)
    assert split_kernel(spec) == [CONV, BN, RELU]
    g = Graph.from_specs([spec])
    assert [k.spec for k in group_kernels(g, ORT_LIKE)] == [spec]
    assert [k.spec.op for k in group_kernels(g, FusionRules.none())] == ["conv2d", "bn", "relu"]


# ---- regressors --------------------------------------------------------------------------------
def _conv_specs(rng, n):
    out = []
    for _ in range(n):
        c = int(rng.choice([8, 16, 24, 32, 48, 64, 96])); hw = int(rng.choice([7, 14, 28, 56])); k = int(rng.choice([1, 3, 5]))
        op = str(rng.choice(["conv2d", "conv2d+relu", "conv2d+bn+relu"]))
        out.append(OpSpec.make(op, (1, c, hw, hw), cout=int(rng.choice([8, 16, 32, 64])), kernel=k, stride=int(rng.choice([1, 2]))))
        out.append(OpSpec.make("dwconv2d", (1, c, hw, hw), kernel=k, stride=int(rng.choice([1, 2]))))
    return out


def test_regressors_recover_a_synthetic_cost_function_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    specs = list(dict.fromkeys(_conv_specs(rng, 200)))
    train, test = specs[:250], specs[250:]
    reg = KernelRegressors(n_members=12).fit(train, [synthetic_ms(s) for s in train])
    scores = reg.score(test, [synthetic_ms(s) for s in test])
    assert scores["mape"] < 0.05 and scores["covered"] == 1.0
    inside = reg.estimate(test[:1])[0]
    far = reg.estimate([OpSpec.make("conv2d", (1, 512, 112, 112), cout=512, kernel=3)])[0]
    assert far.extrapolated and not inside.extrapolated and far.sigma > 3 * inside.sigma
    assert inside.low_ms < inside.ms < inside.high_ms
    assert reg.estimate([OpSpec.make("maxpool", X, kernel=3, stride=2)]) == [None]
    reg.save(tmp_path / "reg")
    again = KernelRegressors.load(tmp_path / "reg.json")
    np.testing.assert_allclose(again.predict(test), reg.predict(test))
    assert not list(tmp_path.glob("*.pkl"))


def test_stored_regressors_pickle_after_use(tmp_path):
    """A predictor whose stored regressors have been read pickles (joblib, a spawned worker): the open
    npz file stays behind and the copy opens its own."""
    import pickle

    rng = np.random.default_rng(1)
    specs = list(dict.fromkeys(_conv_specs(rng, 60)))
    KernelRegressors(n_members=4).fit(specs, [synthetic_ms(s) for s in specs]).save(tmp_path / "reg")
    stored = KernelRegressors.load(tmp_path / "reg")
    want = stored.predict(specs[:5])  # opens the npz file
    again = pickle.loads(pickle.dumps(stored))
    np.testing.assert_allclose(again.predict(specs[:5]), want)
    np.testing.assert_allclose(again.predict(specs[5:10]), stored.predict(specs[5:10]))


def test_stored_regressors_are_what_their_files_held_when_loaded(tmp_path):
    """Another process re-profiling the table replaces its regressor files while this one holds them
    loaded: this process, a pickled copy and a forked child kept reading the new npz arrays under the
    old JSON, predicting other numbers (or failing). They predict what the files held when loaded."""
    import os
    import pickle

    rng = np.random.default_rng(2)
    specs = list(dict.fromkeys(_conv_specs(rng, 60)))
    KernelRegressors(n_members=4).fit(specs, [synthetic_ms(s) for s in specs]).save(tmp_path / "reg")
    KernelRegressors(n_members=4, seed=1).fit(specs, [2 * synthetic_ms(s) for s in specs]).save(tmp_path / "new")
    want = KernelRegressors.load(tmp_path / "reg").predict(specs)
    stored = KernelRegressors.load(tmp_path / "reg")  # no family read yet
    for suffix in (".npz", ".json"):  # the re-profile's files, written beside and moved in
        os.replace(tmp_path / f"new{suffix}", tmp_path / f"reg{suffix}")
    copy = pickle.dumps(stored)
    read, write = os.pipe()
    if (child := os.fork()) == 0:
        os.write(write, stored.predict(specs).tobytes())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        forked = np.frombuffer(f.read(), dtype=float)
    os.waitpid(child, 0)
    np.testing.assert_array_equal(forked, want)
    np.testing.assert_array_equal(stored.predict(specs), want)
    np.testing.assert_array_equal(pickle.loads(copy).predict(specs), want)


# ---- lookup-table predictions -------------------------------------------------------------------
def _space_graphs():
    from hwlat.nas.spaces import get_space

    out = []
    for name in ("nb201", "fbnet", "ofa"):
        space = get_space(name)
        for arch in space.sample(2, seed=5):
            out.append((name, space, arch, Graph.from_onnx(space.to_onnx(arch))))
    return out


def test_every_op_of_each_space_hits_a_row_or_a_regressor():
    graphs = _space_graphs()
    pool = kernel_pool([g for *_, g in graphs], ORT_LIKE)
    specs = [s for s, _ in pool.values()]
    first_of_family = {family(s): s for s in reversed(specs)}
    table = synthetic_table(specs[::3] + list(first_of_family.values()))
    lut = LUTPredictor(table).fit()
    for name, space, arch, g in graphs:
        pred = lut.predict_graph(g)
        assert {k.source for k in pred.kernels} <= {TABLE, REGRESSOR}
        assert pred.counts[TABLE] > 0
        # Only FBNet's channel shuffle (a Transpose) is outside the vocabulary; it is named, never zero.
        assert {u.op for u in pred.uncovered} <= {"Transpose"}
        assert pred.partial == any(u.op == "Transpose" for u in pred.uncovered)
        assert math.isclose(pred.total_ms, math.fsum(k.ms for k in pred.kernels) + pred.overhead_ms)
        # The space's own op list (fused kernels) predicts through the same rules.
        from_specs = lut.predict_graph(space.to_graph(arch))
        assert not from_specs.uncovered and from_specs.total_ms > 0


def test_prediction_is_the_sum_of_its_breakdown_and_calibration_recovers_overhead():
    from hwlat.nas.models import build_model

    graphs = [Graph.from_onnx(build_model(k)) for k in ("mobilenet_v2@r96w0.5", "mobilenet_v3_small@r128w1", "resnet18@r64w0.5",
                                                         "mobilenet_v2@r128w1", "efficientnet_b0@r96w1", "mobilenet_v3_large@r96w0.75")]
    rules = ORT_LIKE
    pool = kernel_pool(graphs, rules)
    table = synthetic_table([s for s, _ in pool.values()], rules)
    lut = LUTPredictor(table).fit()
    raw = [lut.predict_graph(g) for g in graphs]
    assert all(p.counts[REGRESSOR] == 0 and not p.partial for p in raw)  # every kernel is a row
    assert all(math.isclose(p.total_ms, math.fsum(synthetic_ms(OpSpec.from_key(k.key)) for k in p.kernels), rel_tol=1e-5)
               for p in raw)  # rows are stored to 6 significant digits
    truth = [1.3 * p.total_ms + 0.004 * len(p.kernels) + 0.2 for p in raw]
    cal = lut.calibrate(graphs, truth)
    assert cal.scale == pytest.approx(1.3, rel=0.02) and cal.constant_ms == pytest.approx(0.2, abs=0.05)
    for g, y in zip(graphs, truth):
        p = lut.predict_graph(g)
        assert p.total_ms == pytest.approx(y, rel=0.01)
        assert math.isclose(p.total_ms, math.fsum(k.ms for k in p.kernels) + p.overhead_ms)
        assert all(math.isclose(k.ms, k.raw_ms * cal.scale) for k in p.kernels)


def test_calibration_by_kernel_type_follows_type_specific_costs():
    """With enough whole-model measurements each kernel type gets its own scale and per-kernel cost:
    when the in-network cost of depthwise and pointwise convs departs from their single-op rows in
    opposite directions, one global scale cannot follow and the per-type calibration does."""
    from hwlat.nas.models import build_model
    from hwlat.predictors.lut import kernel_type

    keys = [f"{m}@r{r}w{w}" for m in ("mobilenet_v2", "mobilenet_v3_small", "resnet18") for r, w in ((64, 0.5), (96, 1), (128, 0.75))]
    keys += ["efficientnet_b0@r96w1", "mobilenet_v3_large@r96w0.75"]
    graphs = [Graph.from_onnx(build_model(k)) for k in keys]
    table = synthetic_table([s for s, _ in kernel_pool(graphs, ORT_LIKE).values()])
    lut = LUTPredictor(table).fit()
    scale = {"dwconv2d": 1.6, "pwconv2d": 0.7}
    truth = [math.fsum(k.ms * scale.get(kernel_type(k.op), 1.0) for k in lut.predict_graph(g).kernels) + 0.05 for g in graphs]
    one_scale = lut.calibrate(graphs, truth, by_type=False)
    assert not one_scale.by_type
    global_error = np.mean([abs(lut.predict_graph(g).total_ms - y) / y for g, y in zip(graphs, truth)])
    cal = lut.calibrate(graphs, truth)
    assert cal.n_models == len(graphs) and {"dwconv2d", "pwconv2d", "add"} <= set(cal.by_type)
    # Ridge pulls each type towards 1: the dominant pointwise convs move, minor types stay near 1.
    assert cal.by_type["pwconv2d"][0] < 0.9 and all(0.9 < s < 1.1 for t, (s, _) in cal.by_type.items() if t != "pwconv2d")
    by_type_error = np.mean([abs(lut.predict_graph(g).total_ms - y) / y for g, y in zip(graphs, truth)])
    assert by_type_error < 0.5 * global_error and cal.mape_after == pytest.approx(by_type_error)
    for g in graphs:  # still the exact sum of its breakdown, and the calibration survives a save/load
        p = lut.predict_graph(g)
        assert math.isclose(p.total_ms, math.fsum(k.ms for k in p.kernels) + p.overhead_ms)
    lut.save_calibration()
    again = LUTPredictor(table, regressors=lut.regressors)
    assert again.calibration == cal and table.meta["lut_calibration"]["statistic"] == "median"
    # a calibration fitted on the median is not applied to 10th-percentile rows
    by_p10 = LUTPredictor(table, regressors=lut.regressors, statistic="p10_ms").calibration
    assert by_p10 == Calibration() and "lut_calibration" in table.meta
    assert by_p10.describe().startswith("not used (the table's is fitted on the median")  # not "none": it has one
    assert "set_aside" not in by_p10.to_dict()
    assert again.predict_graph(graphs[0]).total_ms == pytest.approx(lut.predict_graph(graphs[0]).total_ms, rel=1e-12)


def test_partial_prediction_names_what_it_cannot_cover():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Softmax", ["p"], ["y"], axis=1, name="probs")]
    from onnx import numpy_helper

    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    table = synthetic_table([OpSpec.make("conv2d", X, cout=8, kernel=3, bias=False)])
    pred = LUTPredictor(table).fit().predict_graph(model)
    assert pred.partial and pred.total_ms > 0
    named = {u.nodes: u.reason for u in pred.uncovered}
    assert ("probs",) in named and "Softmax" in named[("probs",)]
    assert ("pool",) in named and "no regressor" in named[("pool",)]  # the table has no maxpool rows
    assert "PARTIAL" in pred.format() and "probs" in pred.format()
    assert pred.to_dict()["partial"] is True



def test_a_kernel_of_a_structure_no_row_has_is_flagged_as_an_extrapolation():
    # Rows of ungrouped convs with whole 8-channel blocks: a grouped conv, or one of 12 output channels,
    # of sizes inside the rows' range is regressed as if it were one of them (ONNX Runtime ran such
    # kernels 2x slower than regressed, unflagged): an extrapolation, with a wider sigma, and a
    # prediction made mostly of them says so.
    specs = [OpSpec.make("conv2d", (1, c, hw, hw), cout=co, kernel=3, stride=st)
             for c in (8, 16, 32, 64) for co in (8, 16, 32, 64) for hw in (8, 16, 32) for st in (1, 2)]
    predictor = LUTPredictor(synthetic_table(specs)).fit()
    inside = OpSpec.make("conv2d", (1, 24, 24, 24), cout=24, kernel=3)
    grouped = OpSpec.make("conv2d", (1, 24, 24, 24), cout=24, kernel=3, groups=4)
    odd = OpSpec.make("conv2d", (1, 24, 24, 24), cout=12, kernel=3)
    kernels = {k.key: k for k in predictor.predict_graph([inside, grouped, odd]).kernels}
    assert not kernels[inside.key].extrapolated
    assert kernels[grouped.key].extrapolated and kernels[odd.key].extrapolated
    assert kernels[grouped.key].sigma > kernels[inside.key].sigma + 0.2
    mostly = predictor.predict_graph([grouped])
    assert mostly.extrapolated_share == 1.0 and mostly.to_dict()["extrapolated_share"] == 1.0
    assert "MOSTLY EXTRAPOLATED" in mostly.format() and "MOSTLY" not in predictor.predict_graph([inside]).format()


def test_a_kernel_size_between_those_of_the_rows_is_flagged_as_an_extrapolation():
    # Rows of 3x3 and 7x7 convs only: a 5x5 conv lies between them but no row has its kernel size (as
    # the docs say: flagged); a 3x3 conv of another size is not.
    specs = [OpSpec.make("conv2d", (1, c, hw, hw), cout=c, kernel=k) for c in (8, 16, 32) for hw in (8, 16, 32) for k in (3, 7)]
    predictor = LUTPredictor(synthetic_table(specs)).fit()
    k5 = OpSpec.make("conv2d", (1, 24, 24, 24), cout=24, kernel=5)
    k3 = OpSpec.make("conv2d", (1, 24, 24, 24), cout=24, kernel=3)
    kernels = {k.key: k for k in predictor.predict_graph([k5, k3]).kernels}
    assert kernels[k5.key].extrapolated and not kernels[k3.key].extrapolated

# ---- sampling ----------------------------------------------------------------------------------
def test_adaptive_sampling_respects_its_budget_and_covers_every_family():
    graphs = [g for *_, g in _space_graphs()[:4]]
    pool = kernel_pool(graphs, ORT_LIKE)
    families = {family(s) for s, _ in pool.values()}
    table = DeviceTable(Device.make("cpu", "synthetic"), {"fusion": ORT_LIKE.to_meta()})
    budget = 40
    alog = adaptive_profile(lambda s: (Measurement.from_samples([synthetic_ms(s)]), {}), table, pool, budget, batch=8,
                            progress=False, n_members=6)
    assert len(table) == budget and all(r.spec.key in pool for r in table)
    assert {family(r.spec) for r in table} == families
    assert alog.rounds[0]["round"] == 0 and len(alog.rounds) > 1
    grid = grid_specs([s for s, _ in pool.values()])
    assert 0 < len(grid) <= len(pool) and {s.op for s in grid} == {s.op for s, _ in pool.values()}


# ---- real runtime ------------------------------------------------------------------------------
def test_ort_fusion_detection_stores_rules(tmp_path):
    from hwlat.profilers.fusion import detect_fusion, store_rules
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    rt = get_runtime("onnxruntime", threads=1)
    rules, results = detect_fusion(rt, ["conv2d+bn", "conv2d+hardswish"], Protocol.preset("quick"), progress=False)
    by = {r.pattern: r for r in results}
    assert by["conv2d+bn"].fused and by["conv2d+bn"].kernels == 1 and by["conv2d+bn"].fused_ms > 0
    assert len(by["conv2d+hardswish"].parts_ms) == 2
    with DeviceTable.open(tmp_path / "t", rt.device()) as table:
        store_rules(table, rules, rt)
    again = DeviceTable.load(tmp_path / "t")
    assert FusionRules.from_meta(again.meta).fuses("conv2d+bn")


def test_the_call_overhead_is_the_fastest_of_several_timings_so_one_burst_does_not_set_it():
    """One timing of the one-element op caught in a burst of other work (here: its first, read 4x) does
    not become the overhead every kernel is priced less."""
    from hwlat.profilers.fusion import detect_fusion
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    rt = get_runtime("onnxruntime", threads=1)
    protocol = Protocol.preset("quick")
    tiny: list[float] = []

    def measure(spec):
        m, extra = rt.measure(spec, protocol)
        if spec.input_shape == (1, 1, 1, 1) and spec.op == "relu":
            if not tiny:  # the burst
                m = Measurement.from_samples([4 * m.median_ms] * 5)
            tiny.append(m.median_ms)
        return m, extra

    rules, results = detect_fusion(rt, ["conv2d+bn"], protocol, progress=False, measure=measure, extras=False)
    assert len(tiny) == 5
    assert rules.call_overhead_ms == min(tiny) < tiny[0]
    assert all(r.overhead_ms == min(tiny[:3]) for r in results)


def test_cli_predict_json_and_errors(tmp_path, capsys):
    from hwlat.cli import main
    from hwlat.nas.models import to_onnx

    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx("mobilenet_v3_small@r64w0.75"))
    g = Graph.from_onnx(str(path))
    table = synthetic_table([k.spec for k in group_kernels(g, ORT_LIKE)][::2])
    # Every family needs a row for the regressors: add one of each missing family.
    have = {family(r.spec) for r in table}
    for k in group_kernels(g, ORT_LIKE):
        if family(k.spec) not in have:
            table.append(k.spec, Measurement.from_samples([synthetic_ms(k.spec)]))
            have.add(family(k.spec))
    table.save(tmp_path / "tab")
    assert main(["predict", str(path), "--table", str(tmp_path / "tab"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["partial"] is False and out["counts"]["table"] > 0 and out["counts"]["regressor"] > 0
    assert out["total_ms"] == pytest.approx(sum(k["ms"] for k in out["kernels"]) + out["overhead_ms"])
    assert main(["predict", "--classic", "mobilenet_v3_small@r64w0.75", "--table", str(tmp_path / "tab"), "--top", "3"]) == 0
    assert "looked up" in capsys.readouterr().out
    dyn = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "d",
                                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
                                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
                            opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "d.onnx").write_bytes(dyn.SerializeToString())
    assert main(["predict", str(tmp_path / "d.onnx"), "--table", str(tmp_path / "tab")]) == 1
    assert "--input-shape" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "d.onnx"), "--table", str(tmp_path / "tab"), "--input-shape", "1x8x4x4"]) == 0


@pytest.mark.parametrize("share", ["abc", -5, 2.0])
def test_a_hand_edited_reorder_share_is_one_error_naming_the_row(tmp_path, capsys, share):
    """'abc' died in a traceback (ValueError) in predict; -5 predicted 3x the time; table validate passed both."""
    from hwlat.device_tables.errors import TableError
    from hwlat.cli import main

    with DeviceTable.open(tmp_path / "t", Device.make("cpu", "onnxruntime")) as t:
        t.append(CONV, Measurement.from_samples([1.0, 1.1, 1.2]), extra={"reorder_in_share": share})
        t.append(RELU, Measurement.from_samples([0.1, 0.1, 0.1]))
    said = f"row {CONV.key}: its extra reorder_in_share is {share!r}, not a share of 0 to 1"
    assert main(["table", "validate", str(tmp_path / "t")]) == 1
    assert said in capsys.readouterr().err
    with pytest.raises(TableError, match=re.escape(said)):
        LUTPredictor(DeviceTable.load(tmp_path / "t")).fit().predict_graph(Graph.from_specs([CONV, RELU]))


def test_single_op_call_overhead_is_taken_off_every_kernel():
    specs = [CONV, BN, RELU]
    rules = FusionRules(frozenset(), call_overhead_ms=0.003)
    table = synthetic_table(specs, rules)
    pred = LUTPredictor(table).fit().predict_graph(Graph.from_specs(specs))
    assert [k.source for k in pred.kernels] == [TABLE] * 3
    for k in pred.kernels:
        assert k.ms == pytest.approx(max(k.raw_ms - 0.003, 0.1 * k.raw_ms))
    assert FusionRules.from_meta(table.meta).call_overhead_ms == 0.003


def test_cli_profile_ops_adaptive_builds_a_calibrated_table(tmp_path, capsys):
    from hwlat.cli import main
    from hwlat.nas.pool import graph_of, space_networks

    from hwlat.profilers.runtimes import get_runtime

    out = tmp_path / "ort"
    # Rules stored beforehand (detection itself is tested above): the command keeps them.
    with DeviceTable.open(out, get_runtime("onnxruntime", threads=1).device(),
                          {"fusion": FusionRules(ORT_LIKE.fused, call_overhead_ms=0.002).to_meta()}):
        pass
    args = ["profile", "ops", "--runtime", "onnxruntime", "--adaptive", "--budget", "12", "--targets", "nb201",
            "--per-space", "2", "--protocol", "quick", "--calibrate", "2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    table = DeviceTable.load(out)
    assert 0 < len(table) <= 12
    rules = FusionRules.from_meta(table.meta)
    assert rules.fused == ORT_LIKE.fused and rules.call_overhead_ms == 0.002
    assert table.meta["lut_calibration"]["n_models"] == 2
    pool = kernel_pool([graph_of(n) for n in space_networks("nb201", 2)], rules)
    assert {family(r.spec) for r in table} == {family(s) for s, _ in pool.values()}
    capsys.readouterr()
    assert main(["predict", "--space", "nb201", "--arch", "0", "--table", str(out), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["partial"] is False and pred["total_ms"] > 0 and pred["model"].startswith("nb201:")
    assert main(["profile", "ops", "--runtime", "onnxruntime", "--adaptive", "--out", str(tmp_path / "x")]) == 1
    assert "--budget" in capsys.readouterr().err


def test_cli_profile_ops_adaptive_resumed_keeps_the_rounds_of_the_first_run(tmp_path):
    from hwlat.cli import main

    from hwlat.profilers.runtimes import get_runtime

    out = tmp_path / "ort"
    with DeviceTable.open(out, get_runtime("onnxruntime", threads=1).device(),
                          {"fusion": FusionRules(ORT_LIKE.fused, call_overhead_ms=0.002).to_meta()}):
        pass
    args = ["profile", "ops", "--runtime", "onnxruntime", "--adaptive", "--targets", "nb201", "--per-space", "2",
            "--protocol", "quick", "--calibrate", "0", "--out", str(out), "--no-progress", "--budget"]
    assert main(args + ["6"]) == 0
    first = DeviceTable.load(out).meta["adaptive_rounds"]
    assert main(args + ["9"]) == 0
    table = DeviceTable.load(out)
    rounds = table.meta["adaptive_rounds"]
    assert len(rounds) > len(first) and rounds[:len(first)] == first
    assert sum(r["measured"] for r in rounds) == len(table)


def test_cli_profile_fusion_stores_rules(tmp_path, capsys):
    from hwlat.cli import main

    out = tmp_path / "lt"
    assert main(["profile", "fusion", "--runtime", "litert", "--protocol", "quick", "--patterns", "conv2d+relu,conv2d+bn",
                 "--out", str(out), "--no-progress"]) == 0
    rules = FusionRules.from_meta(DeviceTable.load(out).meta)
    # TFLite folds batch norm into the conv and runs ReLU as the conv's fused activation.
    assert rules.fuses("conv2d+bn") and rules.fuses("conv2d+relu")
    assert set(rules.measured) == {"conv2d+relu", "conv2d+bn"}
    assert rules.weights_cache_mb is not None and rules.weights_cache_evidence["slowdown"]
    out = capsys.readouterr().out
    assert "FUSED" in out and f"weights held in the cache across runs: {rules.weights_cache_mb:g} MB" in out
    # A runtime's own flag names another device: refused on the same --out, unless --fresh starts it
    # again (the old files kept)
    argv = ["profile", "fusion", "--runtime", "litert", "--protocol", "quick", "--patterns", "conv2d+relu",
            "--out", str(tmp_path / "lt"), "--no-progress", "--xnnpack", "off"]
    assert main(argv) == 1 and "xnnpack=off" in capsys.readouterr().err
    assert main(argv + ["--fresh"]) == 0
    assert DeviceTable.load(tmp_path / "lt").device.name == "cpu/litert/fp32/threads=1/xnnpack=off"
    assert len(list(tmp_path.glob("lt.old-*.json"))) == 1


def _fusion_argv(out, patterns, *extra):
    return ["profile", "fusion", "--runtime", "onnxruntime", "--protocol", "quick", "--patterns", patterns,
            "--out", str(out), "--no-progress", *extra]


def test_cli_profile_fusion_merges_into_the_stored_rules(tmp_path, capsys):
    """Measuring a few patterns again replaces their verdicts and keeps the table's other patterns
    (and its repeated-op and weights-cache evidence); the output says how many were kept."""
    from hwlat.cli import main

    out = tmp_path / "t"
    assert main(_fusion_argv(out, "conv2d+bn,conv2d+relu,bn+relu")) == 0
    before = FusionRules.from_meta(DeviceTable.load(out).meta)
    capsys.readouterr()
    assert main(_fusion_argv(out, "conv2d+relu")) == 0
    assert "2 stored pattern(s) kept" in capsys.readouterr().out
    after = FusionRules.from_meta(DeviceTable.load(out).meta)
    assert set(after.measured) == {"conv2d+bn", "conv2d+relu", "bn+relu"}
    assert after.measured["conv2d+bn"] == before.measured["conv2d+bn"] and after.fuses("conv2d+bn")
    assert after.weights_cache_evidence == before.weights_cache_evidence
    assert "unfinished" not in DeviceTable.load(out).meta["fusion"]


def test_cli_profile_fusion_refuses_a_table_before_measuring(tmp_path, capsys, monkeypatch):
    """Another protocol or a busy table is refused at once, before any pattern is timed."""
    import hwlat.profilers.fusion
    from hwlat.device_tables.lock import TableLock
    from hwlat.cli import main

    out = tmp_path / "t"
    assert main(_fusion_argv(out, "conv2d+relu")) == 0
    capsys.readouterr()

    def never(*a, **k):
        raise AssertionError("measured before the table was checked")

    monkeypatch.setattr(hwlat.profilers.fusion, "detect_fusion", never)
    assert main(_fusion_argv(out, "conv2d+bn")[:-1] + ["--protocol", "brief", "--no-progress"]) == 1
    assert "other settings" in capsys.readouterr().err
    lock = TableLock.acquire(out)
    try:
        assert main(_fusion_argv(out, "conv2d+bn")) == 1
        assert "is being written by" in capsys.readouterr().err
    finally:
        lock.release()


def test_cli_profile_fusion_interrupted_keeps_what_it_measured_and_resumes(tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first pattern: it is stored; the same command again times only the rest."""
    import hwlat.profilers.runtimes
    from hwlat.cli import main

    real = hwlat.profilers.runtimes.get_runtime
    timed: list[str] = []
    calls = {"n": 0}

    def interrupting(*a, **k):
        rt = real(*a, **k)
        count = rt.count_network_kernels

        def counted(spec):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return count(spec)

        measure = rt.measure

        def measured(spec, protocol):
            timed.append(spec.op)
            return measure(spec, protocol)

        monkeypatch.setattr(rt, "count_network_kernels", counted)
        monkeypatch.setattr(rt, "measure", measured)
        return rt

    monkeypatch.setattr(hwlat.profilers.runtimes, "get_runtime", interrupting)
    out = tmp_path / "t"
    assert main(_fusion_argv(out, "conv2d+bn,conv2d+relu")) == 130
    meta = DeviceTable.load(out).meta["fusion"]
    assert set(meta["patterns"]) == {"conv2d+bn"} and meta["unfinished"]["done"] == ["conv2d+bn"]
    timed.clear()
    capsys.readouterr()
    assert main(_fusion_argv(out, "conv2d+bn,conv2d+relu")) == 0
    assert "conv2d+bn" not in timed and "conv2d+relu" in timed
    assert "1 measured by the interrupted run" in capsys.readouterr().out
    meta = DeviceTable.load(out).meta["fusion"]
    assert set(meta["patterns"]) == {"conv2d+bn", "conv2d+relu"} and "unfinished" not in meta


@pytest.mark.parametrize("bad, named", [("relu", "'relu'"), ("bogus", "'bogus'"), ("conv2d+relu+relu", "'conv2d+relu+relu'"),
                                        ("conv2d+rleu", "did you mean 'conv2d+relu'"), ("conv2d+conv2d", "'conv2d+conv2d'"),
                                        (" , ", "no pattern")])
def test_cli_profile_fusion_refuses_bad_patterns_before_anything(tmp_path, capsys, bad, named):
    from hwlat.cli import main

    assert main(_fusion_argv(tmp_path / "t", f"conv2d+bn,{bad}" if bad.strip(" ,") else bad)) == 1
    err = capsys.readouterr().err
    assert err.startswith("hwlat: error: --patterns:") and named in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_bad_fusion_patterns_are_refused_by_the_detector_and_the_api(tmp_path):
    """`hwlat profile device --patterns` reaches `detect_fusion`, which checks them first too."""
    import hwlat.api
    from hwlat.device_tables.errors import OpSpecError
    from hwlat.profilers.fusion import check_patterns, detect_fusion
    from hwlat.profilers.runtimes import get_runtime

    assert check_patterns([" conv2d+bn ", "add+relu", "conv2d+bn"]) == ["conv2d+bn", "add+relu"]
    with pytest.raises(OpSpecError, match="'bogus'"):
        detect_fusion(get_runtime("onnxruntime", threads=1), ["conv2d+relu", "bogus"], progress=False)
    with pytest.raises(OpSpecError, match="'relu'"):
        hwlat.api.profile_fusion("onnxruntime", tmp_path / "t", patterns=["relu"], progress=False)
    assert not list(tmp_path.iterdir())


def test_context_models_chain_shape_keeping_ops_and_run_copies_side_by_side_otherwise():
    """Marginal (in-network) timing: k copies in one model, as a chain when the op keeps its shape,
    side by side (own inputs, own weights) otherwise; ONNX Runtime runs both and keeps every copy."""
    import onnxruntime as ort

    from hwlat.profilers.context import is_chainable, marginal_measurement, replicated_model

    pool = OpSpec.make("avgpool", (1, 4, 8, 8), kernel=3, stride=1, padding=1, count_include_pad=False)
    add = OpSpec.make("add", (1, 4, 8, 8))
    conv = OpSpec.make("conv2d", (1, 4, 8, 8), cout=8, kernel=3, stride=2, padding=1)
    assert is_chainable(pool) and is_chainable(add) and not is_chainable(conv)
    for spec, chained in ((pool, True), (add, True), (conv, False)):
        m = replicated_model(spec, 3)
        g = m.graph
        assert len(g.node) == 3 * len(replicated_model(spec, 1).graph.node)
        assert len(g.output) == (1 if chained else 3)
        assert len({t.name for t in g.initializer}) == len(g.initializer)  # no shared weights
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {i.name: np.ones([int(d) for d in i.shape], np.float32) for i in sess.get_inputs()}
        outs = sess.run(None, feeds)
        assert len(outs) == len(g.output)
    one = Measurement.from_samples([0.010, 0.011, 0.012])
    four = Measurement.from_samples([0.019, 0.020, 0.021])
    marg = marginal_measurement(one, four, 4)
    assert marg.median_ms == pytest.approx((0.020 - 0.011) / 3)
    assert marginal_measurement(four, one, 4).median_ms > 0  # noise never gives a negative cost
    odd = marginal_measurement(Measurement.from_samples([0.010, 0.0101, 0.02]), four, 4)
    assert odd.p10_ms <= odd.median_ms <= odd.p90_ms


def test_channel_shuffle_transpose_is_priced_as_a_copy_of_its_tensor():
    """A channel shuffle (Reshape-Transpose-Reshape) is no table op: its Transpose is priced as a copy
    of the same tensor, named in the breakdown: the channel concat of its halves in a table with concat
    rows, else a relu row of that size; without that pricing the total is partial."""
    from onnx import numpy_helper

    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Reshape", ["c", "s5"], ["r"], name="split"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4], name="shuffle"),
             helper.make_node("Reshape", ["t", "s4"], ["y"], name="merge")]
    inits = [numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32), "W"),
             numpy_helper.from_array(np.array([1, 2, 4, 16, 16], np.int64), "s5"),
             numpy_helper.from_array(np.array([1, 8, 16, 16], np.int64), "s4")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    relu = OpSpec.make("relu", (1, 8, 16, 16))
    table = synthetic_table([OpSpec.make("conv2d", X, cout=8, kernel=3, bias=False), relu])
    pred = LUTPredictor(table).fit().predict_graph(model)
    assert not pred.partial
    moved = [k for k in pred.kernels if k.nodes == ("shuffle",)]
    assert len(moved) == 1 and moved[0].key == relu.key and moved[0].source == TABLE
    assert math.isclose(pred.total_ms, math.fsum(k.ms for k in pred.kernels) + pred.overhead_ms)
    plain = LUTPredictor(table, price_data_movement=False).fit().predict_graph(model)
    assert plain.partial and [u.nodes for u in plain.uncovered] == [("shuffle",)]
    assert plain.total_ms < pred.total_ms
    concat = OpSpec.make("concat", (1, 4, 16, 16), parts=2)
    table = synthetic_table([OpSpec.make("conv2d", X, cout=8, kernel=3, bias=False), relu, concat])
    moved = [k for k in LUTPredictor(table).fit().predict_graph(model).kernels if k.nodes == ("shuffle",)]
    assert len(moved) == 1 and moved[0].key == concat.key and moved[0].source == TABLE


def _reorder_table(specs, in_share: float, out_share: float) -> DeviceTable:
    """A synthetic table whose convolution rows recorded NCHWc reorders around the single op."""
    table = DeviceTable(Device.make("cpu", "synthetic"), {"fusion": FusionRules.none().to_meta()})
    for s in dict.fromkeys(specs):
        extra = {"reorder_in_share": in_share, "reorder_out_share": out_share} if s.op == "conv2d" else {}
        table.append(s, Measurement.from_samples([synthetic_ms(s)]), extra=extra)
    return table


def test_layout_reorders_come_off_rows_and_are_paid_at_region_edges():
    """conv -> conv -> relu: both convs drop their reorders; the region pays one ReorderInput (from
    the graph's input, priced by the first conv's row) and one ReorderOutput where the blocked tensor
    leaves for the graph's output: after the relu, which works in either layout."""
    graph = Graph.from_specs([CONV, CONV, RELU])
    table = _reorder_table([CONV, RELU], 0.2, 0.1)
    conv_ms, relu_ms = synthetic_ms(CONV), synthetic_ms(RELU)
    pred = LUTPredictor(table).fit().predict_graph(graph)
    # one conv size in the table: a regressed reorder costs what the rows' reorders cost
    assert pred.total_ms == pytest.approx(2 * 0.7 * conv_ms + 0.2 * conv_ms + 0.1 * conv_ms + relu_ms)
    edges = [k for k in pred.kernels if k.op.startswith("reorder")]
    assert [(k.op, k.source, k.nodes) for k in edges] == [("reorder_in", TABLE, ("op0",)), ("reorder_out", REGRESSOR, ("op2",))]
    assert math.isclose(pred.total_ms, math.fsum(k.ms for k in pred.kernels) + pred.overhead_ms)
    # Rows as measured when asked (and for a table without reorder shares).
    plain = LUTPredictor(table, layout_reorders=False).fit().predict_graph(graph)
    assert plain.total_ms == pytest.approx(2 * conv_ms + relu_ms)
    assert not [k for k in plain.kernels if k.op.startswith("reorder")]


def _onnx_convs(between: str):
    """x -> conv a -> [between] -> conv c -> y, as ONNX: a relu and a residual add (layout-free), or a
    product with a second input of shape 1x8x1x1 (a broadcast, as in squeeze-excite)."""
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32), "W")
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X))]
    nodes = [helper.make_node("Conv", ["x", "W"], ["a"], name="conv_a", **conv)]
    if between == "relu_add":
        nodes += [helper.make_node("Relu", ["a"], ["r"], name="relu"),
                  helper.make_node("Conv", ["r", "W"], ["b"], name="conv_b", **conv),
                  helper.make_node("Add", ["b", "a"], ["m"], name="add")]
    else:
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 8, 1, 1]))
        nodes += [helper.make_node("Mul", ["a", "s"], ["m"], name="mul")]
    nodes += [helper.make_node("Conv", ["m", "W"], ["y"], name="conv_c", **conv)]
    graph = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(X))], [w])
    return Graph.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_elementwise_ops_keep_the_blocked_layout_and_a_broadcast_product_breaks_it():
    """Activations and a residual add work in either layout: convs around them share one blocked
    region (one reorder in, one out). A product with a broadcast tensor does not: the conv before it
    reorders out, and the conv after it reorders in (as ONNX Runtime does around squeeze-excite)."""
    for between, n_in, n_out in (("relu_add", 1, 1), ("mul", 2, 2)):
        graph = _onnx_convs(between)
        specs = [op.spec for op in graph.ops if op.spec is not None]
        lut = LUTPredictor(_reorder_table(specs, 0.2, 0.1), rules=FusionRules.none()).fit()
        pred = lut.predict_graph(graph)
        assert not pred.partial
        ops = [k.op for k in pred.kernels]
        assert (ops.count("reorder_in"), ops.count("reorder_out")) == (n_in, n_out), between


def test_a_pattern_fused_only_inside_a_network_joins_the_kernel_priced_by_its_head():
    """ONNX Runtime runs conv+hardswish as one kernel inside a network though its single-op model
    runs them apart (`network_kernels` 1): grouped, the kernel is the conv's row; alone, two kernels."""
    hswish = OpSpec.make("hardswish", X)
    graph = Graph.from_specs([CONV, hswish, CONV])
    rules = FusionRules(frozenset(), {"conv2d+hardswish": {"fused": False, "network_kernels": 1},
                                      "conv2d+relu": {"fused": False, "network_kernels": 2}})
    assert rules.absorbed == {"conv2d+hardswish"}
    kernels = group_kernels(graph, rules)
    assert [(k.spec.op, len(k.ops)) for k in kernels] == [("conv2d", 2), ("conv2d", 1)]
    assert [k.spec.op for k in group_kernels(graph, rules, in_network=False)] == ["conv2d", "hardswish", "conv2d"]
    assert FusionRules.from_meta({"fusion": rules.to_meta()}).absorbed == rules.absorbed


def test_a_runtime_that_shares_duplicates_pays_a_repeated_op_once():
    """Two avg-pools of one input (NAS-Bench-201 edges from one node) run once where the runtime
    eliminates common subexpressions; convs with their own weights are never merged."""
    from hwlat.device_tables.kernels import drop_duplicates

    pool = OpSpec.make("avgpool", X, kernel=3, stride=1, padding=1)
    ops = [_op(pool, ["x"], ["p1"], "pool1"), _op(pool, ["x"], ["p2"], "pool2"), _op(ADD, ["p1", "p2"], ["a"], "add"),
           _op(CONV, ["a"], ["c1"], "conv1"), _op(CONV, ["a"], ["c2"], "conv2"), _op(ADD, ["c1", "c2"], ["y"], "add2")]
    graph = Graph(ops, inputs={"x": X}, outputs=("y",))
    kept = drop_duplicates(graph)
    assert [op.name for op in kept.ops] == ["pool1", "add", "conv1", "conv2", "add2"]
    assert kept.ops[1].inputs == ("p1", "p1")
    rules = FusionRules.none()
    shared = FusionRules(frozenset(), shares_duplicates=True)
    assert FusionRules.from_meta({"fusion": shared.to_meta()}).shares_duplicates
    table = synthetic_table([pool, ADD, CONV], rules)
    twice = LUTPredictor(table, rules=rules, layout_reorders=False).fit().predict_graph(graph)
    once = LUTPredictor(table, rules=shared, layout_reorders=False).fit().predict_graph(graph)
    assert [k.op for k in once.kernels].count("avgpool") == 1 and [k.op for k in twice.kernels].count("avgpool") == 2
    assert once.repeats == ["pool2"] and twice.repeats == [] and "computed once by the runtime: pool2" in once.format()
    assert twice.total_ms - once.total_ms == pytest.approx(synthetic_ms(pool))


def test_duplicate_detection_reads_onnx_runtimes_graph_and_times_litert():
    from hwlat.profilers.fusion import detect_shared_duplicates
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    shared, evidence = detect_shared_duplicates(get_runtime("onnxruntime", threads=1), Protocol.preset("quick"))
    assert shared and evidence["runtime_kernels"] == 2 and evidence["twice_ms"] > 0
    # LiteRT shows no optimised graph: the repeat's share of a pool's time decides.
    shared, evidence = detect_shared_duplicates(get_runtime("litert", threads=1), Protocol.preset("quick"))
    assert "runtime_kernels" not in evidence and shared == (evidence["extra_ratio"] < 0.5)
    # torch runs a network's ONNX graph node by node: timed like LiteRT (eager torch computes a repeat again)
    shared, evidence = detect_shared_duplicates(get_runtime("torch", threads=1), Protocol.preset("quick"))
    assert "runtime_kernels" not in evidence and shared == (evidence["extra_ratio"] < 0.5)


def test_a_product_with_a_constant_has_rows_of_its_own_or_is_priced_as_the_broadcast_product():
    scale, mul = OpSpec.make("scale", X), OpSpec.make("mul", X)
    graph = Graph.from_specs([CONV, scale])
    with_rows = LUTPredictor(synthetic_table([CONV, scale, mul])).fit().predict_graph(graph)
    without = LUTPredictor(synthetic_table([CONV, mul])).fit().predict_graph(graph)
    assert [k.op for k in with_rows.kernels] == ["conv2d", "scale"] and [k.op for k in without.kernels] == ["conv2d", "mul"]
    assert all(k.source == TABLE for k in with_rows.kernels + without.kernels)


def test_two_calibration_models_never_fit_a_negative_per_kernel_cost():
    """Two networks fit a scale and a per-kernel cost exactly; a negative cost would send a network
    with many more kernels below zero, so the fit falls back to a scale."""
    few, many = Graph.from_specs([CONV]), Graph.from_specs([RELU] * 10)
    lut = LUTPredictor(synthetic_table([CONV, RELU]), rules=FusionRules.none(), layout_reorders=False).fit()
    sums = [lut.predict_graph(g).total_ms for g in (few, many)]
    cal = lut.calibrate([few, many], [sums[0], 0.5 * sums[1]])  # the exact fit's per-kernel cost is negative
    assert cal.per_kernel_ms == 0.0 and cal.scale > 0
    assert lut.predict_graph(Graph.from_specs([RELU] * 200)).total_ms > 0


def _linear_networks(rng, count: int, widths: list[int]) -> list[Graph]:
    """`count` networks of 1-3 fully connected layers of random widths (0.26 to 50 MB of weights)."""
    graphs = []
    for _ in range(count):
        w = rng.choice(widths, size=int(rng.integers(1, 4)) + 1)
        graphs.append(Graph.from_specs([OpSpec.make("linear", (1, int(a)), cout=int(b)) for a, b in zip(w, w[1:])]))
    return graphs


def _weights_mb(graphs: list[Graph]) -> list[float]:
    """Each network's fp32 weights in MB."""
    return [math.fsum(op.spec.weight_count for op in g.ops) * 4 / 1e6 for g in graphs]


def test_calibration_learns_the_cost_of_weights_a_cache_does_not_hold():
    """Single-op rows time a layer with its weights in the cache. When whole networks pay 30 µs per MB
    of the weights beyond 4 MB, the calibration (cross-validated over the cached size and the ridge
    strength, from 16 networks on) recovers both, and small networks pay nothing."""
    rng = np.random.default_rng(0)
    graphs = _linear_networks(rng, 24, [256, 512, 768, 1024, 1536, 2048])
    table = synthetic_table([op.spec for g in graphs for op in g.ops], FusionRules.none())
    lut = LUTPredictor(table, use_regressors=False).fit()
    sums = [lut.predict_graph(g).total_ms for g in graphs]
    mb = _weights_mb(graphs)
    truth = [s + 0.030 * max(m - 4.0, 0.0) for s, m in zip(sums, mb)]
    cal = lut.calibrate(graphs, truth)
    assert cal.cached_weights_mb == 4.0 and cal.per_weight_mb_ms == pytest.approx(0.030, rel=0.1)
    assert cal.mape_after < 0.01 < cal.mape_before
    assert any(m <= 4.0 for m in mb) and any(m > 8.0 for m in mb)
    assert cal.weights_ms_per_mb(3.0) == 0.0 and cal.weights_ms_per_mb(8.0) == pytest.approx(cal.per_weight_mb_ms / 2)
    for g, y in zip(graphs, truth):
        p = lut.predict_graph(g)
        assert p.total_ms == pytest.approx(y, rel=0.02)
        assert math.isclose(p.total_ms, math.fsum(k.ms for k in p.kernels) + p.overhead_ms)


def _widening_chain() -> Graph:
    """x (8 channels) -> conv to 16 -> conv to 8 -> conv to 16 -> conv to 4 -> relu, all 16x16."""
    specs = [OpSpec.make("conv2d", (1, a, 16, 16), cout=b, kernel=3) for a, b in ((8, 16), (16, 8), (8, 16), (16, 4))]
    ops = [_op(s, [f"t{i}"], [f"t{i + 1}"], f"conv{i}") for i, s in enumerate(specs)]
    ops.append(_op(OpSpec.make("relu", (1, 4, 16, 16)), ["t4"], ["y"], "relu"))
    return Graph(ops, inputs={"t0": (1, 8, 16, 16)}, outputs=("y",))


def test_activation_plans_reuse_same_shaped_buffers_or_pack_the_live_ones():
    """Per-channel 16x16 fp32 maps are 1024 bytes. Reusing only same-shaped buffers: the second
    16-channel map takes the first's, the relu writes over its input, the rest are new: 16 + 8 + 4
    channels. The compact plan needs the most alive at once: 16 + 8 channels while the second conv
    reads one and writes the other. Fused, the relu adds nothing to either."""
    g = _widening_chain()
    planned, compact = activation_plans_mb(g, group_kernels(g, FusionRules.none()))
    assert planned == pytest.approx(28 * 1024 / 1e6) and compact == pytest.approx(24 * 1024 / 1e6)
    assert activation_plans_mb(g, group_kernels(g, FusionRules.from_patterns(["conv2d+relu"]))) == (planned, compact)


def test_onnxruntime_counts_the_activations_its_planner_spreads_as_cached_first():
    """A network whose weights just fit the cache pays for as many MB of them as onnxruntime's
    planner spreads its activations beyond the compact plan (4 KB here); on another runtime, with a
    calibration that does not count activations, or without fusion rules (which say what kernels
    the runtime runs, and so what it allocates), it pays nothing."""
    g = _widening_chain()
    weights = _weights_mb([g])[0]
    cal = Calibration(per_weight_mb_ms=1.0, cached_weights_mb=weights, counts_activations=True)
    assert Calibration.from_dict(cal.to_dict()) == cal
    totals, tables = {}, {}
    rules = FusionRules.from_patterns(["conv2d+relu"])
    for runtime in ("onnxruntime", "litert"):
        table = tables[runtime] = DeviceTable(Device.make("cpu", runtime), {"fusion": rules.to_meta()})
        for spec in dict.fromkeys([op.spec for op in g.ops] + [k.spec for k in group_kernels(g, rules)]):
            table.append(spec, Measurement.from_samples([synthetic_ms(spec)]))
        for counts in (True, False):
            lut = LUTPredictor(table, use_regressors=False, calibration=replace(cal, counts_activations=counts))
            p = lut.predict_graph(g)
            assert math.isclose(p.total_ms, math.fsum(k.ms for k in p.kernels) + p.overhead_ms)
            totals[runtime, counts] = p.total_ms
    assert totals["onnxruntime", True] - totals["litert", True] == pytest.approx(4096 / 1e6)
    plain = pytest.approx(totals["litert", False])
    assert totals["onnxruntime", False] == plain and totals["litert", True] == plain
    ort = tables["onnxruntime"]
    assert LUTPredictor(ort, use_regressors=False)._found(g)[3] == pytest.approx(4096 / 1e6)
    assert LUTPredictor(ort, rules=FusionRules.none(), use_regressors=False)._found(g)[3] == 0.0
    full = Calibration(per_weight_mb_ms=1.0, cached_weights_mb=8.0, counts_activations=True)
    assert full.weights_ms_per_mb(6.0, 4.0) == pytest.approx(2.0 / 6.0)


def test_calibration_charges_no_weights_when_networks_run_at_their_rows_speed():
    """Networks that run at their rows' speed, give or take 1% of noise, fit every cached size about
    equally well: the one-standard-error rule keeps the simplest, the largest cache, and no network
    of these (up to 25 MB of weights) pays for its weights."""
    rng = np.random.default_rng(2)
    graphs = _linear_networks(rng, 24, [256, 512, 1024, 1536])
    table = synthetic_table([op.spec for g in graphs for op in g.ops], FusionRules.none())
    lut = LUTPredictor(table, use_regressors=False).fit()
    sums = [lut.predict_graph(g).total_ms for g in graphs]
    mb = _weights_mb(graphs)
    assert max(mb) < CACHED_WEIGHTS_MB[-1] and sum(m > 8.0 for m in mb) >= 4
    cal = lut.calibrate(graphs, [s * (1 + 0.01 * rng.standard_normal()) for s in sums])
    assert cal.cached_weights_mb == CACHED_WEIGHTS_MB[-1]
    assert all(cal.weights_ms_per_mb(m) == 0.0 for m in mb)


def test_a_measured_cache_bounds_the_cached_size_calibration_tries():
    """Networks pay 30 µs per MB of weights beyond 4 MB. Rules carrying the device's measured cache
    (6 MB) survive a table's metadata and let the calibration try cached sizes up to it only: it
    finds 4 MB; a measured 2 MB leaves it 0 MB."""
    rng = np.random.default_rng(3)
    graphs = _linear_networks(rng, 24, [256, 512, 768, 1024, 1536])
    table = synthetic_table([op.spec for g in graphs for op in g.ops], FusionRules.none())
    mb = _weights_mb(graphs)
    sums = [LUTPredictor(table, use_regressors=False).fit().predict_graph(g).total_ms for g in graphs]
    truth = [s + 0.030 * max(m - 4.0, 0.0) for s, m in zip(sums, mb)]
    measured = replace(FusionRules.none(), weights_cache_mb=6.0, weights_cache_evidence={"layer_mb": 1.05})
    assert FusionRules.from_meta({"fusion": measured.to_meta()}).weights_cache_mb == 6.0
    assert FusionRules.from_meta({"fusion": FusionRules.none().to_meta()}).weights_cache_mb is None
    cal = LUTPredictor(table, rules=measured, use_regressors=False).fit().calibrate(graphs, truth)
    assert cal.cached_weights_mb == 4.0 and cal.per_weight_mb_ms == pytest.approx(0.030, rel=0.1)
    small = LUTPredictor(table, rules=replace(measured, weights_cache_mb=2.0), use_regressors=False).fit()
    assert small.calibrate(graphs, truth).cached_weights_mb == 0.0


def test_weights_cache_probe_times_chains_of_linear_layers():
    """The probe times chains of 1 MB linear layers on a runtime that runs whole models; the cached
    size is a chain it timed, and `hwlat profile fusion`'s report prints it."""
    from hwlat.profilers.fusion import detect_weights_cache, format_results
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    cached, evidence = detect_weights_cache(get_runtime("litert", threads=1), Protocol.preset("quick"), layers=(1, 2, 4, 8))
    chains = {float(mb): ratio for mb, ratio in evidence["slowdown"].items()}
    assert all(any(abs(mb - n * evidence["layer_mb"]) < 0.01 for n in (1, 2, 4, 8)) for mb in chains)
    assert max(chains) == pytest.approx(8 * evidence["layer_mb"], abs=0.01) and 1.0 in chains.values()  # the base chain
    assert cached is not None and (cached == 0.0 or str(cached) in evidence["slowdown"])
    rules = FusionRules(frozenset(), weights_cache_mb=cached, weights_cache_evidence=evidence)
    assert f"weights held in the cache across runs: {cached:g} MB" in format_results([], rules)


def test_no_kernel_type_is_calibrated_to_a_negative_scale():
    """Whole networks measured faster than their pointwise convs' rows allow (what a table of few rows,
    its kernels regressed far from any row, gave a short run) would fit that type a negative scale: its
    kernels priced below nothing. The fit keeps every scale at MIN_TYPE_SCALE or above instead."""
    from hwlat.nas.models import build_model
    from hwlat.predictors.lut import kernel_type
    from hwlat.predictors.lut.calibration import MIN_TYPE_SCALE

    keys = [f"{m}@r{r}w{w}" for m in ("mobilenet_v2", "mobilenet_v3_small", "resnet18") for r, w in ((64, 0.5), (96, 1), (128, 0.75))]
    graphs = [Graph.from_onnx(build_model(k)) for k in keys]
    table = synthetic_table([s for s, _ in kernel_pool(graphs, ORT_LIKE).values()])
    lut = LUTPredictor(table).fit()
    truth = [max(math.fsum(k.ms * (-0.3 if kernel_type(k.op) == "pwconv2d" else 1.0)
                           for k in lut.predict_graph(g).kernels), 0.0) + 0.5 for g in graphs]
    cal = lut.calibrate(graphs, truth)
    assert cal.by_type["pwconv2d"][0] == pytest.approx(MIN_TYPE_SCALE, abs=1e-9)  # at the bound, not below it
    assert min(s for s, _ in cal.by_type.values()) >= MIN_TYPE_SCALE - 1e-12
    assert all(k.ms >= 0 for g in graphs for k in lut.predict_graph(g).kernels)


def test_calibration_never_makes_weights_a_saving():
    """Networks with more weights running *faster* than their rows sum (noise, or what the weights
    stand in for) would fit a negative cost per MB: the fit has none instead."""
    rng = np.random.default_rng(1)
    graphs = _linear_networks(rng, 20, [256, 512, 1024, 2048])
    table = synthetic_table([op.spec for g in graphs for op in g.ops], FusionRules.none())
    lut = LUTPredictor(table, use_regressors=False).fit()
    mb = _weights_mb(graphs)
    truth = [lut.predict_graph(g).total_ms - 0.02 * m for g, m in zip(graphs, mb)]
    assert min(truth) > 0
    cal = lut.calibrate(graphs, truth)
    assert cal.per_weight_mb_ms == 0.0 and cal.ridge is not None


def test_a_regressed_kernel_of_a_blocked_op_pays_reorders_from_the_fitted_line():
    """Rows of convs at several sizes with reorders: a conv size missing from the table is blocked
    too, and its edge reorders are priced by the line fitted on the rows (cost grows with size)."""
    sizes = [8, 12, 16, 24, 32, 48]
    convs = [OpSpec.make("conv2d", (1, 8, h, h), cout=8, kernel=3) for h in sizes]
    table = _reorder_table(convs, 0.2, 0.1)
    lut = LUTPredictor(table).fit()
    unseen = [OpSpec.make("conv2d", (1, 8, h, h), cout=8, kernel=3) for h in (20, 40)]
    costs = []
    for spec in unseen:
        pred = lut.predict_graph(Graph.from_specs([spec]))
        edges = {k.op: k for k in pred.kernels if k.op.startswith("reorder")}
        assert set(edges) == {"reorder_in", "reorder_out"} and all(k.source == REGRESSOR for k in edges.values())
        costs.append(edges["reorder_in"].ms)
    assert 0 < costs[0] < costs[1]


# ---- predicting many architectures (hwlat predict --archs, the search's lut: predictor) ----------
@pytest.mark.parametrize("name,options", [("nb201", {}), ("nb201", {"keep_dead": True}), ("fbnet", {}), ("ofa", {})])
def test_graph_written_from_the_network_is_the_onnx_extraction_op_by_op(name, options):
    """`Space.graph` writes a CNN's graph from its network: the same ops, specs, tensors and notes as
    extracting its exported (shapes-only) ONNX model; a transformer network is read from ONNX."""
    from hwlat.nas.spaces import get_space
    from hwlat.nas.spaces.net_graph import net_graph
    from hwlat.nas.spaces.onnx_export import net_to_proto

    space = get_space(name, **options)
    for arch in space.sample(25, seed=5):
        net = space.network(arch)
        slow, fast = Graph.from_onnx(net_to_proto(net, values=False)), net_graph(net, "net")
        assert fast is not None and (fast.inputs, fast.outputs, fast.name) == (slow.inputs, slow.outputs, slow.name)
        assert fast.ops == slow.ops
        assert [op.spec.key for op in fast.ops if op.spec] == [op.spec.key for op in slow.ops if op.spec]
    vit = get_space("vit")
    assert net_graph(vit.network(vit.sample(1)[0])) is None


@pytest.mark.parametrize("name,n", [("nb201", 25), ("fbnet", 20), ("ofa", 20), ("vit", 2)])
def test_predict_archs_equals_each_exported_model_predicted_alone(name, n):
    """Many architectures predicted by one predictor (pieces and kernels priced once and remembered)
    equal each one's exported ONNX model predicted by a fresh predictor, exactly: total, sigma,
    kernels, partial."""
    import hwlat
    from hwlat.nas.spaces import get_space

    table = hwlat.load_table("cpu_onnxruntime_fp32_threads1")
    space = get_space(name)
    archs = space.sample(n, seed=3)
    many = hwlat.predict_archs(space, archs, table)
    alone = LUTPredictor(table)
    alone.regressors = LUTPredictor(table).fit().regressors  # loaded once; no memo is shared
    for arch, fast in zip(archs, many):
        alone._memos = None
        slow = alone.predict_graph(space.to_onnx(arch))
        assert fast.total_ms == slow.total_ms and fast.partial == slow.partial and fast.sigma_ms == slow.sigma_ms
        assert fast.kernels == slow.kernels and fast.uncovered == slow.uncovered


def test_a_changed_or_removed_table_row_changes_the_next_prediction():
    """The predictor remembers kernel prices per row: a row replaced or removed in its table is read
    again, so the same predictor predicts as a fresh one does (no stale price)."""
    from hwlat.nas.spaces import get_space

    space = get_space("nb201")
    archs = space.sample(3, seed=9)
    graphs = [space.graph(a) for a in archs]
    table = synthetic_table([k.spec for g in graphs for k in group_kernels(g, ORT_LIKE)])
    lut = LUTPredictor(table, use_regressors=False)
    before = [lut.predict_graph(g).total_ms for g in graphs]
    conv = next(k.spec for k in group_kernels(graphs[0], ORT_LIKE) if k.spec.base == "conv2d")
    row = table.get(conv)
    table._rows[conv.key] = replace(row, measurement=replace(row.measurement, median_ms=row.measurement.median_ms * 3))
    after = [lut.predict_graph(g).total_ms for g in graphs]
    assert after[0] > before[0]
    assert after == pytest.approx([LUTPredictor(table, use_regressors=False).predict_graph(g).total_ms for g in graphs],
                                  rel=1e-12)
    del table._rows[conv.key]
    gone = lut.predict_graph(graphs[0])
    assert gone.partial and conv.op in {u.op for u in gone.uncovered}


def test_a_kernel_the_device_could_not_run_is_named_not_regressed():
    """A kernel whose row records that the device could not run it (over a board's tensor arena, say)
    is left out of the total and named with the device's reason, where a regressor fitted on the
    kernels that ran would have priced it as if it ran."""
    convs = [OpSpec.make("conv2d", (1, c, 16, 16), cout=c, kernel=3) for c in (4, 8, 16, 32)]
    big = OpSpec.make("conv2d", (1, 24, 16, 16), cout=24, kernel=3)
    table = synthetic_table(convs, FusionRules.none())
    graph = Graph.from_specs([big])
    regressed = LUTPredictor(table).fit().predict_graph(graph)
    assert not regressed.partial and regressed.kernels[0].source == REGRESSOR
    table.append(big, error="needs 600000 B of tensor arena; board x has 262144 B")
    pred = LUTPredictor(table).fit().predict_graph(graph)
    assert pred.partial and not pred.kernels and pred.total_ms == 0.0
    assert "could not run it when profiled: needs 600000 B of tensor arena" in pred.uncovered[0].reason


def test_a_kernel_over_the_boards_arena_is_named_not_regressed_though_no_row_records_it():
    """A model too big for the board (a kernel the table never tried, over its 256 KB arena) was regressed
    from the kernels that fit: a number for a model the board cannot hold, silent about its memory."""
    from hwlat.device_tables.registry import load

    table = load("qemu_mps2_an386_board_int8_threads1")
    small = OpSpec.make("pwconv2d+relu", (1, 8, 16, 16), dtype="int8", cout=16)
    big = OpSpec.make("pwconv2d+relu", (1, 64, 96, 96), dtype="int8", cout=128)
    assert table.get(small) is None and table.get(big) is None
    pred = LUTPredictor(table).predict_graph(Graph.from_specs([small, big]))
    assert [k.source for k in pred.kernels] == [REGRESSOR] and pred.partial
    (gone,) = pred.uncovered
    assert gone.reason == (f"the device cannot run it: {big.key}: needs 1779200 B of tensor arena; board mps2-an386 has "
                           "262144 B (firmware ARENA_KB); use smaller shapes or a bigger arena")


def test_an_op_without_a_firmware_kernel_is_named_with_the_boards_reason():
    """A hard swish on a board table said 'no regressor for this op type (the table has no rows of it)', as
    if profiling more rows would price it; the firmware has no kernel for it."""
    from hwlat.device_tables.registry import load

    hs = OpSpec.make("hardswish", (1, 8, 16, 16), dtype="int8")
    (gone,) = LUTPredictor(load("qemu_mps2_an386_board_int8_threads1")).predict_graph(Graph.from_specs([hs])).uncovered
    assert gone.reason.startswith(f"the device cannot run it: {hs.key}: lowers to TFLite HARD_SWISH, which the "
                                  "reference firmware does not run")


def test_uncovered_ops_print_one_line_per_op_and_reason():
    table = synthetic_table([CONV], FusionRules.none())
    relus = [_op(RELU, [f"x{i}"], [f"x{i + 1}"], f"relu{i}") for i in range(5)]
    pred = LUTPredictor(table).fit().predict_graph(Graph(relus, inputs={"x0": X}, outputs=("x5",)))
    lines = [ln for ln in pred.format().splitlines() if "UNCOVERED" in ln]
    assert len(pred.uncovered) == 5 and lines == [
        f"  UNCOVERED relu x5 (relu0, relu1, relu2 and 2 more): {pred.uncovered[0].reason}"]


def test_uncovered_fused_kernels_are_counted_alike_in_the_summary_and_the_breakdown():
    """Two conv2d+relu kernels left out are 4 ops but 2 kernels: the summary said `conv2d+relu x4`
    while the breakdown's UNCOVERED line said `x2`."""
    table = synthetic_table([OpSpec.make("relu", (1, 8, 4, 4))], FusionRules.from_patterns(["conv2d+relu"]))
    ops = [op for i in range(2) for op in (_op(CONV, [f"x{i}"], [f"y{i}"], f"conv{i}"),
                                           _op(RELU, [f"y{i}"], [f"x{i + 1}"], f"relu{i}"))]
    pred = LUTPredictor(table, use_regressors=False).fit().predict_graph(Graph(ops, inputs={"x0": X}, outputs=("x2",)))
    assert pred.uncovered_types == {"conv2d+relu": 2} and pred.uncovered_ops == 4
    assert pred.coverage() == "partial: 4 ops not priced (conv2d+relu x2); the total covers the other 0 of 4 ops"
    assert "UNCOVERED conv2d+relu x2 (conv0,relu0, conv1,relu1)" in pred.format()


def test_the_kernel_pool_holds_the_stand_ins_a_shuffle_is_priced_by():
    """A table profiled from a pool of FBNet networks prices their channel shuffles: the pool holds
    both stand-ins (`_movement_spec`: a concat of the halves, or a relu where a runtime has no concat
    rows, as a board has not), whatever other kernels it holds."""
    from hwlat.nas.pool import graph_of
    from hwlat.nas.spaces import get_space
    from hwlat.predictors.adaptive import kernel_pool
    from hwlat.predictors.lut.predictor import _movement_spec

    sp = get_space("fbnet")
    graph = graph_of("fbnet:" + sp.key(sp.sample(1, 3)[0]))
    shuffles = [op.moves for op in graph.ops if op.moves]
    pool = kernel_pool([graph], FusionRules.none(), "int8")
    assert shuffles and all(_movement_spec(m, "int8", concat).key in pool for m in shuffles for concat in (True, False))


def test_a_kernel_left_unpriced_says_why():
    """A kernel the table has no row of: priced by its op type's regressor, or named with the reason it
    was not (regressors off, or no row of its type to fit one on)."""
    rows = [OpSpec.make("linear", (1, w), cout=64) for w in (64, 128, 256, 512)]
    wanted = Graph.from_specs([OpSpec.make("linear", (1, 384), cout=64), OpSpec.make("relu", (1, 64, 1, 1))])
    table = synthetic_table(rows, FusionRules.none())
    priced = LUTPredictor(table).fit().predict_graph(wanted)
    assert [k.source for k in priced.kernels] == ["regressor"] and [u.op for u in priced.uncovered] == ["relu"]
    assert "no regressor for this op type" in priced.uncovered[0].reason
    off = LUTPredictor(table, use_regressors=False).predict_graph(wanted)
    assert off.partial and not off.kernels
    assert [u.reason for u in off.uncovered] == ["not in the table (regressors off: --no-regressors)"] * 2


def test_a_negative_calibration_overhead_takes_at_most_half_of_a_tiny_networks_kernels():
    """Per-kernel costs and a constant fitted negative on networks of tens of kernels (LiteRT's
    shipped table: -0.018 ms) outweighed a 3-kernel model's kernels: it was predicted 0.000 ms."""
    table = synthetic_table([CONV, RELU])
    lut = LUTPredictor(table).fit()
    lut.calibration = Calibration(constant_ms=-1.0, n_models=4)
    p = lut.predict_graph(Graph.from_specs([CONV, RELU]))
    kernels = math.fsum(k.ms for k in p.kernels)
    assert kernels > 0
    assert p.overhead_ms == pytest.approx(-0.5 * kernels)
    assert p.total_ms == pytest.approx(0.5 * kernels) and math.isclose(p.total_ms, kernels + p.overhead_ms)
    lut.calibration = Calibration(constant_ms=-0.1 * kernels, n_models=4)  # a small offset is kept as fitted
    assert lut.predict_graph(Graph.from_specs([CONV, RELU])).overhead_ms == pytest.approx(-0.1 * kernels)


def test_a_runtime_not_installed_is_looked_up_once_per_process(caplog):
    """`same_shape_planner` lost its cache when `runtime_limits` was added above it: every prediction looked
    the runtime up again in the registry, and hwlat -vv said 'runtime ... is not installed' once per network."""
    import logging

    from hwlat.predictors.lut.predictor import same_shape_planner

    with caplog.at_level(logging.DEBUG, logger="hwlat.predictors.lut"):
        assert [same_shape_planner("no-such-runtime-here") for _ in range(3)] == [False] * 3
    assert caplog.text.count("'no-such-runtime-here' is not installed") == 1, caplog.text
