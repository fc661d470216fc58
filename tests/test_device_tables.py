"""Ops, measurements and device tables: round trip, resume after a torn write, validation."""

import json

import numpy as np
import pandas as pd
import pytest

from hwlat.device_tables import Device, DeviceTable, Measurement, OpSpec
from hwlat.device_tables.errors import OpSpecError, SchemaVersionError, TableError


def _device():
    return Device.make("cpu", "test", "fp32", fingerprint={"cpu_model": "x"}, threads=1)


def _specs():
    return [
        OpSpec.make("conv2d+bn+relu", (1, 16, 32, 32), cout=32, kernel=3, stride=2),
        OpSpec.make("dwconv2d", (1, 32, 16, 16), kernel=5),
        OpSpec.make("linear", (1, 64), cout=10),
        OpSpec.make("add+relu", (1, 8, 4, 4), dtype="int8"),
    ]


def test_opspec_key_round_trip_and_shapes():
    for spec in _specs():
        assert OpSpec.from_key(spec.key) == spec
        assert OpSpec.from_dict(spec.to_dict()) == spec
    conv = _specs()[0]
    assert conv.output_shape == (1, 32, 16, 16)
    assert conv.macs == 32 * 16 * 16 * 16 * 9 + 2 * 32 * 16 * 16
    assert conv.a["padding"] == 1


@pytest.mark.parametrize("bad", [
    lambda: OpSpec.make("conv3d", (1, 3, 8, 8)),
    lambda: OpSpec.make("conv2d+softmax", (1, 3, 8, 8), cout=4, kernel=3),
    lambda: OpSpec.make("conv2d", (1, 3, 8, 8), kernel=3),
    lambda: OpSpec.make("conv2d", (1, 3, 8, 8), cout=4, kernel=3, groups=2),
    lambda: OpSpec.make("maxpool", (1, 3, 2, 2), kernel=5, stride=1),
    lambda: OpSpec.from_key("conv2d|float32|1x3x8x8"),
])
def test_opspec_rejects_bad_configurations(bad):
    with pytest.raises(OpSpecError):
        bad()


def test_measurement_statistics_on_known_samples():
    m = Measurement.from_samples([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert m.median_ms == 5.5
    assert m.mean_ms == 5.5
    assert m.iqr_ms == pytest.approx(7.75 - 3.25)
    assert m.p10_ms == pytest.approx(1.9) and m.p90_ms == pytest.approx(9.1)
    assert m.std_ms == pytest.approx(np.std(np.arange(1, 11), ddof=1))
    assert m.n == 10 and m.noisy
    steady = Measurement.from_samples([1.0, 1.01, 0.99, 1.0])
    assert not steady.noisy


def test_table_round_trip_and_pandas(tmp_path):
    path = tmp_path / "t"
    with DeviceTable.open(path, _device(), {"protocol": {"min_runs": 3}}) as table:
        for i, spec in enumerate(_specs()[:3]):
            table.append(spec, Measurement.from_samples([1.0 + i, 1.1 + i, 1.2 + i]))
        table.append(_specs()[3], error="runtime cannot run int8 add")
    loaded = DeviceTable.load(path)
    assert len(loaded) == 4
    assert loaded.device.name == "cpu/test/fp32/threads=1"
    assert loaded.latency_ms(_specs()[1]) == pytest.approx(2.1)
    assert loaded.get(_specs()[3]).error == "runtime cannot run int8 add"
    assert loaded.latency_ms(_specs()[3]) is None
    df = pd.read_csv(tmp_path / "t.csv")
    assert list(df["key"]) == [s.key for s in _specs()]
    assert loaded.to_pandas()["macs"].iloc[0] == _specs()[0].macs


def test_resume_drops_torn_row_and_keeps_the_rest(tmp_path):
    path = tmp_path / "t"
    with DeviceTable.open(path, _device()) as table:
        table.append(_specs()[0], Measurement.from_samples([1.0, 2.0]))
    with open(tmp_path / "t.csv", "a") as f:
        f.write(_specs()[1].key + ",dwconv2d,float32,1x32")  # a write cut short by a kill
    with DeviceTable.open(path, _device()) as table:
        assert len(table) == 1 and _specs()[0] in table
        table.append(_specs()[1], Measurement.from_samples([1.0, 2.0]))
    assert len(DeviceTable.load(path)) == 2


def test_resumes_on_one_machine_keep_one_fingerprint_and_a_changed_one_is_recorded(tmp_path):
    for _ in range(3):
        DeviceTable.open(tmp_path / "t", _device()).close()
    meta = json.loads((tmp_path / "t.json").read_text())
    assert len(meta["resumed"]) == 2 and meta.get("fingerprints_on_resume", []) == []
    upgraded = Device.make("cpu", "test", "fp32", fingerprint={"cpu_model": "x", "packages": {"onnxruntime": "9"}},
                           threads=1)
    for _ in range(2):
        DeviceTable.open(tmp_path / "t", upgraded).close()
    meta = json.loads((tmp_path / "t.json").read_text())
    assert len(meta["resumed"]) == 4 and meta["fingerprints_on_resume"] == [dict(upgraded.fingerprint)]


def test_resume_refuses_another_device(tmp_path):
    DeviceTable.open(tmp_path / "t", _device()).close()
    other = Device.make("cpu", "test", "fp32", threads=2)
    with pytest.raises(TableError, match="threads=1"):
        DeviceTable.open(tmp_path / "t", other)


def _write_table(tmp_path):
    with DeviceTable.open(tmp_path / "t", _device()) as table:
        for spec in _specs()[:3]:
            table.append(spec, Measurement.from_samples([1.0, 2.0, 3.0]))
    return tmp_path / "t.csv"


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:2] + [lines[2].replace("dwconv2d,", "conv2d,", 1)] + lines[3:], "line 3: op/dtype/input_shape"),
    (lambda lines: lines + [lines[1]], "line 5: key .* repeats line 2"),
    (lambda lines: lines[:1] + [lines[1].replace(",ok,", ",maybe,")] + lines[2:], "line 2: status"),
    (lambda lines: lines[:1] + [lines[1].replace(",ok,2,", ",ok,abc,")] + lines[2:], "line 2: median_ms is 'abc', not a finite latency"),
    (lambda lines: lines[:1] + [lines[1].replace(",ok,", ",ok,1,2,")] + lines[2:], "line 2: 17 fields"),
    (lambda lines: ["key,op\n"] + lines[1:], "line 1: header"),
    (lambda lines: lines[:1] + [lines[1].replace(",true,,", ",true,[1],")] + lines[2:],  # a reader calls extra.get
     r"line 2: extra column is '\[1\]', not a JSON object"),
])
def test_validation_names_file_and_line(tmp_path, edit, message):
    csv_path = _write_table(tmp_path)
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(edit(lines)))
    with pytest.raises(TableError, match=message) as info:
        DeviceTable.load(csv_path)
    assert str(csv_path) in str(info.value)


def test_newer_schema_and_broken_metadata(tmp_path):
    csv_path = _write_table(tmp_path)
    meta_path = csv_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(SchemaVersionError, match="upgrade hwlat"):
        DeviceTable.load(csv_path)
    meta_path.write_text("{not json")
    with pytest.raises(TableError, match="not valid JSON"):
        DeviceTable.load(csv_path)
    meta_path.unlink()
    with pytest.raises(TableError, match="t.json not found"):
        DeviceTable.load(csv_path)


def test_quietest_keeps_each_rows_fastest_pass_and_refuses_other_devices(tmp_path):
    from hwlat.device_tables.table import quietest

    dev = Device.make("cpu", "onnxruntime")
    a, b, c = (OpSpec.make("relu", (1, 8, 4, 4)), OpSpec.make("relu", (1, 16, 4, 4)), OpSpec.make("relu", (1, 32, 4, 4)))
    first, second = DeviceTable(dev, {"note": "first"}), DeviceTable(dev)
    first.append(a, Measurement.from_samples([2.0])); first.append(b, Measurement.from_samples([1.0]))
    first.append(c, error="cannot build")
    second.append(a, Measurement.from_samples([1.5])); second.append(b, Measurement.from_samples([3.0]))
    second.append(c, Measurement.from_samples([4.0]))
    merged = quietest([first, second]).save(tmp_path / "t")
    again = DeviceTable.load(tmp_path / "t")
    assert [again.latency_ms(s) for s in (a, b, c)] == [1.5, 1.0, 4.0]
    assert [r.spec for r in again] == [a, b, c] and again.meta["passes"] == 2 and again.meta["note"] == "first"
    assert len(merged) == 3
    with pytest.raises(TableError, match="different devices"):
        quietest([first, DeviceTable(Device.make("cpu", "litert"))])
    # by the 10th percentile: the pass with the lower median can have the higher p10
    wide, narrow = DeviceTable(dev), DeviceTable(dev)
    wide.append(a, Measurement.from_samples([1.0] * 3 + [5.0] * 7))  # median 5, p10 1
    narrow.append(a, Measurement.from_samples([2.0] * 10))  # median 2, p10 2
    assert quietest([wide, narrow]).latency_ms(a) == 2.0
    by_p10 = quietest([wide, narrow], statistic="p10_ms")
    assert by_p10.get(a).measurement.p10_ms == 1.0 and by_p10.latency_ms(a) == 5.0


def test_a_shipped_name_stands_for_its_sibling_measured_on_a_machine_like_this_one(tmp_path, monkeypatch, caplog):
    """Two shipped tables of one device measured on different CPUs: the plain name predicts with the
    one measured on a CPU like this host's (saying so), unless asked for exactly; paths are exact."""
    from hwlat.device_tables import registry
    from hwlat.device_tables.device import host_fingerprint

    here = host_fingerprint()
    other = {**here, "flags": sorted({*here.get("flags", []), "made_up_simd"})}
    m = Measurement.from_samples([0.5, 0.6, 0.55])
    for name, fp in (("cpu_x_fp32_threads1", other), ("cpu_x_fp32_threads1_here", here)):
        t = DeviceTable(Device.make("cpu", "x", threads=1, fingerprint=fp))
        t.append(OpSpec.make("relu", (1, 8, 4, 4)), m)
        t.meta["self_score"] = {"networks": 1, "within_10": 1}  # finished
        t.save(tmp_path / name)
    monkeypatch.setattr(registry, "TABLES_DIR", tmp_path)
    with caplog.at_level("WARNING"):
        assert registry.resolve("cpu_x_fp32_threads1") == tmp_path / "cpu_x_fp32_threads1_here"
    assert "made_up_simd" in caplog.text and "cpu_x_fp32_threads1_here" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # said once in a process: a loop of predictions loads it again and again
        assert registry.resolve("cpu_x_fp32_threads1") == tmp_path / "cpu_x_fp32_threads1_here"
    assert "made_up_simd" not in caplog.text
    assert registry.resolve("cpu_x_fp32_threads1", exact=True) == tmp_path / "cpu_x_fp32_threads1"
    assert registry.resolve(tmp_path / "cpu_x_fp32_threads1") == tmp_path / "cpu_x_fp32_threads1"
    assert registry.resolve("cpu_x_fp32_threads1_here") == tmp_path / "cpu_x_fp32_threads1_here"
    meta = json.loads((tmp_path / "cpu_x_fp32_threads1_here.json").read_text())
    del meta["self_score"]  # a sibling still being profiled is not used
    (tmp_path / "cpu_x_fp32_threads1_here.json").write_text(json.dumps(meta))
    assert registry.resolve("cpu_x_fp32_threads1") == tmp_path / "cpu_x_fp32_threads1"
    (tmp_path / "cpu_x_fp32_threads1_here.json").unlink()  # no sibling of this machine: the name itself
    assert registry.resolve("cpu_x_fp32_threads1") == tmp_path / "cpu_x_fp32_threads1"


def test_cpus_of_one_name_are_told_apart_by_their_design_or_else_their_clock():
    """'AMD EPYC' names Zen 2, 3 and 4 alike: fingerprints compare family/model numbers where both
    have them, and a fingerprint made before they were recorded by its nominal clock (3% apart)."""
    from hwlat.device_tables.device import cpu_differences

    zen2 = {"cpu_model": "AMD EPYC", "cpu_id": "family 23 model 49", "cpu_mhz": 2245.8, "flags": ["avx2"]}
    zen3 = {**zen2, "cpu_id": "family 25 model 1", "cpu_mhz": 2445.4}
    assert cpu_differences(zen3, zen2) == ["CPU 'family 25 model 1' -> 'family 23 model 49'"]
    assert cpu_differences(zen2, {**zen2, "cpu_mhz": 3100.0}) == []  # a design's clock may move (turbo)
    older = {k: v for k, v in zen3.items() if k != "cpu_id"}
    assert cpu_differences(older, zen2) == ["CPU clock 2445 MHz -> 2246 MHz"]
    assert cpu_differences(older, {**zen2, "cpu_mhz": 2400.0}) == []
    assert cpu_differences(older, zen2, by_clock=False) == []  # what refuses a resume: never the clock alone
    assert cpu_differences({"cpu_model": "AMD EPYC"}, zen2) == []  # nothing recorded, nothing compared


def test_a_cpu_table_measured_on_another_cpu_is_not_resumed_here(tmp_path):
    from hwlat.device_tables.device import host_fingerprint
    from hwlat.device_tables.errors import ResumeSettingsError

    here = host_fingerprint()
    other = {**here, "flags": sorted({*here.get("flags", []), "made_up_simd"})}
    t = DeviceTable(Device.make("cpu", "x", threads=1, fingerprint=other))
    t.append(OpSpec.make("relu", (1, 8, 4, 4)), Measurement.from_samples([0.5, 0.6]))
    t.save(tmp_path / "t")
    with pytest.raises(ResumeSettingsError, match="made_up_simd.*another --out"):
        DeviceTable.open(tmp_path / "t", Device.make("cpu", "x", threads=1, fingerprint=here))
    with DeviceTable.open(tmp_path / "t", Device.make("cpu", "x", threads=1, fingerprint=here), fresh=True) as again:
        assert len(again) == 0  # started again here; the old files kept beside it
    assert list(tmp_path.glob("t.old-*.csv"))


def test_table_show_prints_the_protocol_and_clock_a_resume_needs(tmp_path, capsys):
    """`hwlat table show` names the protocol preset and clock (what `--protocol`/`--clock` must be on
    resume); settings an older hwlat did not record do not hide the preset."""
    from hwlat.cli import main
    from hwlat.profilers.protocol import Protocol

    quick = {**Protocol.preset("quick").to_dict(), "clock": "cpu"}
    older = {k: v for k, v in Protocol().to_dict().items() if k != "target_rel_se"}
    for name, protocol, shown in (("q", quick, "protocol quick, clock cpu"),
                                  ("old", {**older, "clock": "wall"}, "protocol default, clock wall"),
                                  ("odd", {**older, "min_runs": 7}, "min_runs=7")):
        with DeviceTable.open(tmp_path / name, _device(), {"protocol": protocol}) as table:
            table.append(_specs()[2], Measurement.from_samples([1.0, 1.1, 1.2]))
        assert main(["table", "show", str(tmp_path / name)]) == 0
        assert shown in capsys.readouterr().out


@pytest.mark.parametrize("schema", [[1.0], {"a": 1}, 3, None])
def test_a_schema_that_is_not_a_string_is_named_not_a_table(tmp_path, schema):
    """`"schema": [1.0]` was a TypeError (unhashable list) while naming the kind of table (found by the fuzzer)."""
    from hwlat.device_tables.errors import TableError
    from hwlat.device_tables.table import read_meta

    path = tmp_path / "t.json"
    path.write_text(json.dumps({"schema": schema, "schema_version": 1}))
    with pytest.raises(TableError, match='not a hwlat device table \\(expected "schema": "hwlat.device_table"\\)$'):
        read_meta(path)


def test_the_fingerprint_records_the_environment_that_steers_runtimes_and_the_cpu_quota(tmp_path, monkeypatch):
    """DNNL_MAX_CPU_ISA=SSE41 made a torch 3x3 conv 2.6x slower, torch still reporting its AVX-512
    capability; a cgroup's CPU quota throttles several threads. Both are in the fingerprint."""
    from hwlat.device_tables.device import cpu_quota, host_fingerprint

    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "SSE41")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("HWLAT_UNRELATED", "1")
    env = host_fingerprint()["env"]
    assert env["DNNL_MAX_CPU_ISA"] == "SSE41" and env["OMP_WAIT_POLICY"] == "PASSIVE" and "HWLAT_UNRELATED" not in env
    assert "cpu_quota" in host_fingerprint()
    # cgroup v2: the tightest cpu.max from the process's group up to the root; v1: cfs quota / period
    (tmp_path / "v2" / "a" / "b").mkdir(parents=True)
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "v2" / "a" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "v2" / "a" / "b" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "v2.cgroup").write_text("0::/a/b\n")
    assert cpu_quota(tmp_path / "v2", tmp_path / "v2.cgroup") == 1.5
    (tmp_path / "v1" / "cpu,cpuacct").mkdir(parents=True)
    (tmp_path / "v1" / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "v1" / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "v1.cgroup").write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cpu_quota(tmp_path / "v1", tmp_path / "v1.cgroup") == 0.5
    (tmp_path / "v1" / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path / "v1", tmp_path / "v1.cgroup") is None


def test_a_table_resumed_with_another_setup_says_so_and_table_show_names_it(tmp_path, monkeypatch, capsys, caplog):
    """A resume with another runtime version, environment, affinity or CPU quota than the last run is
    said in one line naming each difference (the rows mix both; --recalibrate after an upgrade is a
    resume too, so it is not refused), once: the next resume on the same setup says nothing."""
    pytest.importorskip("onnxruntime")
    from hwlat.cli import main

    sweep = tmp_path / "two.yaml"
    sweep.write_text("name: two\ndtype: [float32]\nops:\n  - {op: [relu, add], c: 8, hw: 8}\n")
    out = tmp_path / "t"
    args = ["profile", "ops", "--runtime", "onnxruntime", "--sweep", str(sweep), "--protocol", "quick", "--out", str(out),
            "--no-progress"]
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert main(args) == 0
    meta = json.loads((tmp_path / "t.json").read_text())
    meta["device"]["fingerprint"]["runtime"]["onnxruntime"] = "1.0.0"
    (tmp_path / "t.json").write_text(json.dumps(meta))
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "SSE41")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    said = [r.getMessage() for r in caplog.records if "another setup" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "env.DNNL_MAX_CPU_ISA unset -> 'SSE41'" in said[0], said
    assert "runtime.onnxruntime '1.0.0' -> " in said[0] and "runtime.session" not in said[0]
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert "another setup" not in caplog.text
    capsys.readouterr()
    assert main(["table", "show", str(out)]) == 0
    assert "resumed  with another setup: runtime.onnxruntime '1.0.0' -> " in capsys.readouterr().out
