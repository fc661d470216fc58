"""The TFLite Micro runtime: smallest-arena search, model bytes, budgets, and a table from the CLI."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("tflite_micro")

from hwlat.device_tables.errors import UnsupportedOpError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402
from hwlat.profilers.tflite.builder import build_model  # noqa: E402
from hwlat.profilers.tflm.runtime import TFLMRuntime, _works, smallest_arena  # noqa: E402


def S(op, shape, dtype="int8", **attrs):
    return OpSpec.make(op, shape, dtype=dtype, **attrs)


@pytest.mark.parametrize("spec", [
    S("conv2d+relu", (1, 8, 12, 12), cout=16, kernel=3),
    S("dwconv2d", (1, 16, 16, 16), kernel=3, stride=2),   # PAD + DEPTHWISE_CONV_2D: two ops share the arena
    S("linear", (1, 64), cout=10),
    S("add", (1, 8, 8, 8)),
])
def test_arena_search_finds_the_exact_minimum(spec):
    model = build_model(spec)
    found = smallest_arena(model.content, model.inputs)
    assert _works(model.content, found.arena_bytes, model.inputs)
    assert not _works(model.content, found.arena_bytes - 1, model.inputs)
    assert found.arena_bytes >= found.recorded_tail > 0
    # Activations live in the arena: it holds at least the input and output tensors.
    assert found.arena_bytes > sum(x.nbytes for x in model.inputs) + model.reference()[0].nbytes
    assert smallest_arena(model.content, model.inputs).arena_bytes == found.arena_bytes  # deterministic


def test_arena_grows_with_activations_and_model_bytes_with_weights():
    rt = TFLMRuntime(precision="int8")
    quick = Protocol.preset("quick")
    _, small = rt.measure(S("conv2d", (1, 8, 16, 16), cout=8, kernel=3), quick)
    _, wide = rt.measure(S("conv2d", (1, 8, 32, 32), cout=8, kernel=3), quick)
    _, deep = rt.measure(S("conv2d", (1, 32, 16, 16), cout=32, kernel=3), quick)
    assert wide["arena_bytes"] > small["arena_bytes"] + 3 * 8 * 16 * 16  # 4x the pixels
    assert wide["model_bytes"] == small["model_bytes"]                     # same weights
    assert deep["model_bytes"] > small["model_bytes"] + 32 * 32 * 9 - 8 * 8 * 9 - 1
    assert small["model_bytes"] == len(build_model(S("conv2d", (1, 8, 16, 16), cout=8, kernel=3)).content)
    assert small["check"] == "equal to int8 reference"


def test_fp32_models_run_too():
    rt = TFLMRuntime(precision="fp32")
    m, extra = rt.measure(S("dwconv2d+relu6", (1, 8, 8, 8), dtype="float32", kernel=3), Protocol.preset("quick"))
    assert m.median_ms > 0 and extra["check"] == "close to float reference"
    assert rt.device().name == "cpu/tflm/fp32/threads=1"


def test_budgets_turn_oversized_ops_into_errors_naming_the_limit():
    spec = S("conv2d", (1, 16, 32, 32), cout=16, kernel=3)
    with pytest.raises(UnsupportedOpError, match=r"conv2d\|int8\|1x16x32x32.*tensor arena, over the budget of 8192 B"):
        TFLMRuntime(precision="int8", arena_kb=8).measure(spec, Protocol.preset("quick"))
    with pytest.raises(UnsupportedOpError, match=r"over the flash budget of 1024 B \(flash_kb=1\)"):
        TFLMRuntime(precision="int8", flash_kb=1).measure(spec, Protocol.preset("quick"))
    assert TFLMRuntime(precision="int8", arena_kb=8).device().name == "cpu/tflm/int8/arena_kb=8/threads=1"
    # A budget that is no size (a worker's --devices t=tflm:arena_kb=abc) was taken, then every op raised TypeError.
    from hwlat.device_tables.errors import RuntimeUnavailableError
    from hwlat.profilers.cluster.worker import DeviceAd

    for spec in ("t=tflm:arena_kb=abc", "t=tflm:flash_kb=0", "t=tflm:arena_kb=-5"):
        with pytest.raises(RuntimeUnavailableError, match=r"tflm setting (arena|flash)_kb=.*: give a budget in KB above 0"):
            DeviceAd.parse(spec).make_runtime()


def test_cli_writes_a_table_with_arena_and_model_bytes(tmp_path):
    from hwlat.device_tables.table import DeviceTable
    from hwlat.cli import main

    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\ndtype: int8\nops:\n  - {op: pwconv2d, c: 8, hw: [4, 8], cout: 8}\n"
                     "  - {op: maxpool, c: 8, hw: 8, kernel: 2}\n")
    out = tmp_path / "tflm"
    assert main(["profile", "ops", "--runtime", "tflm", "--precision", "int8", "--sweep", str(sweep),
                 "--protocol", "quick", "--out", str(out), "--no-progress"]) == 0
    table = DeviceTable.load(out)
    assert len(table.rows("ok")) == 3
    for row in table:
        assert row.extra["arena_bytes"] > 0 and row.extra["model_bytes"] > 0 and row.extra["tflite_ops"]
    assert table.device.name == "cpu/tflm/int8/threads=1"


def test_an_arena_whose_probe_crashes_the_interpreter_is_searched_past(tmp_path):
    """This 1x1 pointwise conv crashes TFLite Micro (SIGSEGV) in arenas of some bytes above the recorded
    total, where the search probed first: `profile ops --sweep default` died there, and again at the same
    row on every rerun. Run as a child, so the old crash fails the test rather than ending pytest."""
    import subprocess
    import sys
    from pathlib import Path

    from hwlat.profilers.tflm.runtime import _PROBER

    spec = S("pwconv2d+relu", (1, 72, 1, 1), cout=24)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\ndtype: int8\nops:\n  - {op: pwconv2d+relu, c: 72, hw: 1, cout: 24}\n")
    proc = subprocess.run([sys.executable, "-m", "hwlat", "profile", "ops", "--runtime", "tflm", "--sweep", str(sweep),
                           "--protocol", "quick", "--out", "t", "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0 and "1 measured" in proc.stdout, (proc.returncode, proc.stderr)
    model = build_model(spec)
    found = smallest_arena(model.content, model.inputs)
    ok, said = _PROBER.probe(model.content, found.recorded_total + 4 * 16, model.inputs)  # the probe that crashed
    assert not ok and "the interpreter crashed" in said
    assert _works(model.content, found.arena_bytes, model.inputs)  # a new prober after the crash
    assert not _works(model.content, found.arena_bytes - 1, model.inputs)


def test_an_op_tflite_micro_has_no_kernel_for_says_so_not_only_that_the_arena_failed():
    """A GELU read 'does not run in TFLite Micro even with a 67108864 B arena', as if memory were the cause."""
    with pytest.raises(UnsupportedOpError, match=r"even with a 67108864 B arena: Didn't find op for builtin opcode 'GELU'"):
        TFLMRuntime(precision="fp32").measure(S("gelu", (16, 64, 1, 1), dtype="float32"), Protocol.preset("quick"))


def test_a_network_with_an_op_tflite_micro_has_no_kernel_for_names_the_op():
    """BERT at fp32 read 'TFLite Micro cannot run the network: TFLM failed to allocate tensors'."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], name="gelu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(UnsupportedOpError, match=r"cannot run the network: Didn't find op for builtin opcode 'GELU'"):
        TFLMRuntime(precision="fp32").time_model(model, Protocol.preset("quick"))


NB201_LIGHT = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
NB201_HEAVY = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_whole_int8_networks_run_as_litert_runs_them_and_cost_what_they_compute():
    """A network lowered as LiteRT's runs in TFLite Micro with the same int8 output as LiteRT's
    reference kernels give, and a network of 3x3 convolutions takes longer than one of pools."""
    from hwlat.device_tables.graph import Graph
    from hwlat.nas.pool import onnx_of
    from hwlat.profilers.litert.network import network_model
    from hwlat.profilers.tflm.runtime import NETWORK_ARENA_BYTES, _interpreter

    content, inputs = network_model(Graph.from_onnx(onnx_of(f"nb201:{NB201_HEAVY}")), int8=True)
    ip = _interpreter(content, NETWORK_ARENA_BYTES, inputs)
    ip.invoke()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    lite = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    lite.allocate_tensors()
    for d, x in zip(lite.get_input_details(), inputs):
        lite.set_tensor(d["index"], x)
    lite.invoke()
    want = lite.get_tensor(lite.get_output_details()[0]["index"])
    got = ip.get_output(0)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert int(abs(got.astype(int) - want.astype(int)).max()) <= 1
    rt = TFLMRuntime()
    quick = Protocol.preset("quick")
    light, heavy = (rt.time_model(onnx_of(f"nb201:{a}"), quick).median_ms for a in (NB201_LIGHT, NB201_HEAVY))
    assert 0 < light < heavy


def test_a_network_over_the_arena_budget_is_refused_naming_it():
    from hwlat.nas.pool import onnx_of

    with pytest.raises(UnsupportedOpError, match="arena_kb=8"):
        TFLMRuntime(arena_kb=8).time_model(onnx_of(f"nb201:{NB201_LIGHT}"), Protocol.preset("quick"))
