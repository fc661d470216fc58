"""ArchTable: reading/joining wide CSVs, writing/resuming local measurements, profiling whole archs."""

from __future__ import annotations

import json
import math

import pytest

from hwlat.device_tables.archtable import ArchTable, ArchTableWriter, arch_table_paths, read_stats
from hwlat.device_tables.device import Device
from hwlat.device_tables.errors import TableError, UnknownDeviceError
from hwlat.device_tables.measurement import Measurement
from hwlat.nas.spaces import ArchError, arch_keys, get_space, known_arch_keys

NB = get_space("nb201")
SPACES = known_arch_keys()  # the candidates a table's space is inferred from


def _rows(indices):
    return [NB.key_record(NB.from_index(i)) for i in indices]


def _write(path, header, rows):
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path



@pytest.fixture
def two_files(tmp_path):
    a = _write(tmp_path / "a.csv", ["nb201_index", "arch_str", "ops6", "dev1", "dev2"],
               [[r["nb201_index"], r["arch_str"], r["ops6"], 1.0 + i, 10.0 + i] for i, r in enumerate(_rows(range(5)))])
    recs = _rows([3, 4, 7])
    b = _write(tmp_path / "b.csv", ["nb201_index", "arch_str", "ops6", "dev3"],
               [[recs[0]["nb201_index"], recs[0]["arch_str"], recs[0]["ops6"], 5.5],
                [recs[1]["nb201_index"], recs[1]["arch_str"], recs[1]["ops6"], -1],  # the sources' "failed"
                [recs[2]["nb201_index"], recs[2]["arch_str"], recs[2]["ops6"], ""]])
    return a, b


def test_read_joins_files_on_the_key(two_files):
    t = ArchTable.read(two_files, candidates=SPACES)
    assert t.space == "nb201" and t.devices == ["dev1", "dev2", "dev3"] and len(t) == 6
    assert t.key_columns == ["arch_str", "nb201_index", "ops6"]
    assert list(t.frame["nb201_index"]) == [0, 1, 2, 3, 4, 7]  # the arch only in b.csv keeps its index
    assert t.missing().to_dict() == {"dev1": 1, "dev2": 1, "dev3": 5}
    assert t.latency("dev3")[NB.key(NB.from_index(3))] == 5.5
    assert math.isnan(t.latency("dev3")[NB.key(NB.from_index(4))])
    sel = ArchTable.read(two_files, devices=["dev3", "dev1"], candidates=SPACES)
    assert sel.devices == ["dev3", "dev1"] and sel.to_numpy().shape == (6, 2)
    assert len(t.select(["dev1", "dev3"], complete=True)) == 1
    assert NB.encode_keys(t.keys).shape == (6, 36)


def test_read_errors_name_file_and_expectation(tmp_path, two_files):
    with pytest.raises(UnknownDeviceError, match="available: dev1, dev2, dev3"):
        ArchTable.read(two_files, devices=["dev9"], candidates=SPACES)
    bad = _write(tmp_path / "nokey.csv", ["arch", "dev1"], [["x", 1.0]])
    with pytest.raises(TableError, match=r"nokey.csv: no search-space key column found.*nb201: nb201_index, arch_str, ops6"):
        ArchTable.read(bad, candidates=SPACES)
    with pytest.raises(TableError, match=r"nokey.csv: no 'fbnet_op_idx22' column; a fbnet arch table needs the key columns "
                                         r"help_row, fbnet_op_idx22, fbnet_ops22"):
        ArchTable.read(bad, space=arch_keys("fbnet"))
    with pytest.raises(TableError, match=r"has key columns of the nb201 space, not of ofa"):
        _write(tmp_path / "mixed.csv", ["arch_str", "ofa_arch", "d"], [["a", "b", 1]])
        ArchTable.read(tmp_path / "mixed.csv", space=arch_keys("ofa"), candidates=SPACES)
    r = _rows([0])[0]
    text = _write(tmp_path / "text.csv", ["nb201_index", "arch_str", "ops6", "dev1"], [[0, r["arch_str"], r["ops6"], "fast"]])
    with pytest.raises(TableError, match=r"text.csv: device column 'dev1' holds 'fast'"):
        ArchTable.read(text, candidates=SPACES)
    dup = _write(tmp_path / "dup.csv", ["arch_str", "dev1"], [[r["arch_str"], 1], [r["arch_str"], 2]])
    with pytest.raises(TableError, match="appears more than once"):
        ArchTable.read(dup, candidates=SPACES)
    with pytest.raises(TableError, match=r"device column 'dev1' is in both"):
        ArchTable.read([two_files[0], two_files[0]], candidates=SPACES)
    with pytest.raises(TableError, match="not found"):
        ArchTable.read(tmp_path / "missing.csv", candidates=SPACES)


def test_the_space_is_named_or_inferred_from_candidates(tmp_path, two_files):
    with pytest.raises(TableError, match=r"a.csv: name the search space"):
        ArchTable.read(two_files)
    t = ArchTable.read(two_files, space=arch_keys("nb201"))
    assert t.space == "nb201" and t.arch_keys is NB.arch_keys and len(t) == 6
    both = _write(tmp_path / "both.csv", ["arch_str", "ofa_arch", "d"], [["a", "b", 1]])
    with pytest.raises(TableError, match=r"both.csv: has the primary key columns of several spaces \(nb201, ofa\)"):
        ArchTable.read(both, candidates=SPACES)
    assert arch_keys(" NB201 ") is NB.arch_keys and {"nb201", "fbnet", "ofa"} <= {k.space for k in SPACES}
    with pytest.raises(ArchError, match="unknown search space 'nope'"):
        arch_keys("nope")


def test_any_space_brings_its_own_keys(tmp_path):
    """The tables know no space: a scheme made up here reads, sorts and writes like the built-in ones."""
    import dataclasses

    from hwlat.device_tables.archtable import ArchKeys, public_files

    toy = ArchKeys("toy", columns=("row", "code"), primary="code", int_columns=("row",), order_by="row")
    _write(tmp_path / "toy.csv", ["row", "code", "d"], [[2, "b", 1.0], [1, "a", 2.0]])
    assert public_files(toy, tmp_path) == [tmp_path / "toy.csv"]
    assert ArchTable.public(toy, data_dir=tmp_path).keys == ["a", "b"]
    with pytest.raises(TypeError, match=r"get_space\('toy'\).arch_keys"):
        ArchTable.public("toy", data_dir=tmp_path)  # a name, not the scheme: says how to get it
    t = ArchTable.read(tmp_path / "toy.csv", candidates=[arch_keys("nb201"), toy])
    assert t.space == "toy" and t.keys == ["a", "b"] and str(t.frame["row"].dtype) == "Int64"
    gap = _write(tmp_path / "gap.csv", ["row", "code", "d"], [["", "a", 1.0], [2, "b", 1.0], [1, "c", 1.0]])
    assert ArchTable.read(gap, space=toy).keys == ["a", "b", "c"]  # a row without `order_by`: as read
    with_gaps = dataclasses.replace(toy, order_with_gaps=True)
    assert ArchTable.read(gap, space=with_gaps).keys == ["c", "b", "a"]  # ... or sorted, that row last
    with ArchTableWriter(tmp_path / "toy_local", toy, DEV) as w:
        w.append({"code": "z"}, _m(1.0))
    assert (tmp_path / "toy_local.csv").read_text().splitlines() == [f"row,code,{DEV.name}", ",z,1"]
    # A key column an architecture may lack (`optional`) is written last: the first column is a key
    # every row has; a table begun in the old order resumes in it.
    optional = dataclasses.replace(toy, optional=("row",))
    with ArchTableWriter(tmp_path / "toy_opt", optional, DEV) as w:
        w.append({"code": "z"}, _m(1.0))
    assert (tmp_path / "toy_opt.csv").read_text().splitlines() == [f"code,row,{DEV.name}", "z,,1"]
    with ArchTableWriter(tmp_path / "toy_local", optional, DEV) as w:
        w.append({"code": "y", "row": 3}, _m(2.0))
    assert (tmp_path / "toy_local.csv").read_text().splitlines() == [f"row,code,{DEV.name}", ",z,1", "3,y,2"]
    assert ArchTable.read(tmp_path / "toy_opt.csv", space=optional).keys == ["z"]
    assert json.loads((tmp_path / "toy_local.json").read_text())["space"] == "toy"
    with pytest.raises(ValueError, match="toy arch keys: id not among the key columns row, code"):
        ArchKeys("toy", columns=("row", "code"), primary="id")
    with pytest.raises(TypeError, match="an ArchKeys"):
        ArchTable.read(gap, space="toy")


def _m(ms, noisy=False):
    return Measurement(median_ms=ms, mean_ms=ms, std_ms=0.01, iqr_ms=0.02, p10_ms=ms - 0.01, p90_ms=ms + 0.01, n=20, noisy=noisy)


DEV = Device.make("cpu", "onnxruntime", threads=1, fingerprint={"cpu_model": "test"})


def test_resumes_on_one_machine_keep_one_fingerprint_and_a_changed_one_is_recorded(tmp_path):
    out = tmp_path / "nb201_local"
    for _ in range(3):
        ArchTableWriter(out, NB.arch_keys, DEV).close()
    meta = json.loads(arch_table_paths(out)[1].read_text())
    assert len(meta["resumed"]) == 2 and meta.get("fingerprints_on_resume", []) == []
    upgraded = Device.make("cpu", "onnxruntime", threads=1, fingerprint={"cpu_model": "test", "python": "3.99"})
    for _ in range(2):
        ArchTableWriter(out, NB.arch_keys, upgraded).close()
    meta = json.loads(arch_table_paths(out)[1].read_text())
    assert len(meta["resumed"]) == 4 and meta["fingerprints_on_resume"] == [dict(upgraded.fingerprint)]


def test_writer_appends_resumes_and_reads_back(tmp_path):
    out = tmp_path / "tables" / "nb201_local"
    recs = _rows(range(6))
    with ArchTableWriter(out, NB.arch_keys, DEV, {"protocol": {"min_runs": 5}}) as w:
        w.append(recs[0], _m(1.5))
        w.append(recs[1], _m(2.5, noisy=True), build_ms=3.0)
        w.append(recs[2], error="build failed\nsecond line")
        with pytest.raises(TableError, match="already in the table"):
            w.append(recs[0], _m(1.0))
    csv_path, json_path, stats_path = arch_table_paths(out)
    assert csv_path.read_text().splitlines()[0] == "nb201_index,arch_str,ops6,cpu/onnxruntime/fp32/threads=1"
    # an interrupted write leaves a partial line; an orphan stats row has no main row
    with open(csv_path, "a") as f:
        f.write('3,"|skip')
    with open(stats_path, "a") as f:
        f.write(f'"{recs[4]["arch_str"]}",ok,1,1,0,0,1,1,5,false,,,now\n')
    with ArchTableWriter(out, NB.arch_keys, DEV) as w:
        assert set(w.done) == {r["arch_str"] for r in recs[:3]} and w.done[recs[2]["arch_str"]] is None
        w.append(recs[3], _m(4.0))
    meta = json.loads(json_path.read_text())
    assert meta["space"] == "nb201" and meta["device"]["name"] == DEV.name and meta["device"]["fingerprint"]["cpu_model"] == "test"
    # a protocol without a clock (as written before --clock) was of the wall clock: the resume records it
    assert meta["protocol"] == {"min_runs": 5, "clock": "wall"} and len(meta["resumed"]) == 1
    t = ArchTable.read(out, candidates=SPACES)
    assert t.devices == [DEV.name] and len(t) == 4 and t.missing()[DEV.name] == 1
    assert t.latency(DEV.name)[recs[3]["arch_str"]] == 4.0
    stats = read_stats(out)
    assert list(stats["status"]) == ["ok", "ok", "error", "ok"]
    assert list(stats["noisy"]) == [False, True, False, False]
    assert stats["error"][2] == "build failed second line"
    # reading the directory's files together skips the stats sidecar
    assert len(ArchTable.read([csv_path, stats_path], space=NB.arch_keys).devices) == 1
    with pytest.raises(TableError, match="holds device 'cpu/onnxruntime/fp32/threads=1', not 'cpu/torch/fp32/threads=1'; .*, or pass --fresh"):
        ArchTableWriter(out, NB.arch_keys, Device.make("cpu", "torch", threads=1))
    with pytest.raises(TableError, match="is a nb201 table, not fbnet"):
        ArchTableWriter(out, arch_keys("fbnet"), DEV)


def test_writer_keeps_public_key_columns(tmp_path):
    fb = get_space("fbnet")
    arch = fb.sample(1, seed=0)[0]
    with ArchTableWriter(tmp_path / "fb", fb.arch_keys, DEV) as w:
        w.append({**fb.key_record(arch), "help_row": 4001}, _m(3.0))
        w.append(fb.key_record(fb.mutate(arch, 0)), _m(3.5))
    t = ArchTable.read(tmp_path / "fb.csv", candidates=SPACES)
    assert t.space == "fbnet" and list(t.frame["help_row"].astype("float").fillna(-1)) == [4001, -1]
    assert fb.encode_keys(t.keys).shape == (2, 198)


# ---- profiling whole architectures -----------------------------------------------------------
def test_resolve_archs_specs(tmp_path):
    from hwlat.nas.spaces.measure import resolve_archs

    items = resolve_archs(NB, "0:5+3,4,7+random:3", seed=1)
    keys = [NB.key(i.arch) for i in items]
    assert len(keys) == len(set(keys)) and [i.arch.index for i in items[:6]] == [0, 1, 2, 3, 4, 7]
    assert items[0].record == NB.key_record(NB.from_index(0))
    f = tmp_path / "keys.txt"
    f.write_text("# my archs\n12\n" + NB.key(NB.from_index(13)) + "\n4-2-1-2-1-1\n")
    assert [i.arch.index for i in resolve_archs(NB, str(f))] == [12, 13, 0]
    with pytest.raises(ArchError, match=r"range out of 0..15625"):
        resolve_archs(NB, "15000:16000")
    with pytest.raises(ArchError, match="forms:"):
        resolve_archs(NB, "bogus")
    arch_str = NB.from_index(5698).arch_str  # an arch string's own "|+|" is not a join: joined, or named when wrong
    assert [i.arch.index for i in resolve_archs(NB, f"{arch_str}+5+{arch_str}")] == [5698, 5]
    with pytest.raises(ArchError, match=r"unknown NAS-Bench-201 op\(s\) \['bogus'\]"):
        resolve_archs(NB, arch_str.replace("none~0", "bogus~0") + "+5")
    f.write_text("12\nnot-an-arch\n")
    with pytest.raises(ArchError, match=r"keys.txt, line 2"):
        resolve_archs(NB, str(f))
    table = tmp_path / "table.csv"  # an arch table's bad or empty key is named by file and row
    table.write_text(f"arch_str,ms\n{NB.from_index(3).arch_str},1.0\n|bogus|,2.0\n")
    with pytest.raises(ArchError, match=r"table.csv, row 2 \(after the header\): malformed"):
        resolve_archs(NB, str(table))
    table.write_text(f"arch_str,ms\n{NB.from_index(3).arch_str},1.0\n,2.0\n")
    with pytest.raises(ArchError, match=r"table.csv, row 2 \(after the header\): no arch_str$"):
        resolve_archs(NB, str(table))
    table.write_text("nb201_index,ms\n12,1.0\n13,2.0\n")  # another key column, as `hwlat adapt fit` takes it
    assert [i.arch.index for i in resolve_archs(NB, str(table))] == [12, 13]
    fb = get_space("fbnet")
    arch = fb.sample(1, seed=0)[0]
    table.write_text(f"fbnet_ops22,ms\n{fb.key_record(arch)['fbnet_ops22']},1.0\n")
    assert [fb.key(i.arch) for i in resolve_archs(fb, str(table))] == [fb.key(arch)]
    ofa = get_space("ofa")
    assert len(resolve_archs(ofa, "random:4", seed=0)) == 4
    with pytest.raises(ArchError, match=r"vit architectures have no index here.*give random:N, architecture keys"):
        resolve_archs(get_space("vit"), "0:2")  # no public vit.csv numbers them


def test_resolve_archs_reads_help_row_as_a_whole_number_or_names_its_cell(tmp_path):
    """A table saved again by pandas writes a help_row column with gaps as floats (3.0): the row number it
    is; a cell that is no whole number is one error naming the file, line and cell (it was a ValueError)."""
    from hwlat.nas.spaces.measure import resolve_archs

    fb = get_space("fbnet")
    a, b = fb.sample(2, seed=0)
    table = tmp_path / "fb.csv"
    table.write_text(f"fbnet_op_idx22,help_row,ms\n{fb.key(a)},3.0,1.0\n{fb.key(b)},,2.0\n")
    assert [it.record.get("help_row") for it in resolve_archs(fb, str(table))] == [3, None]
    table.write_text(f"fbnet_op_idx22,help_row,ms\n{fb.key(a)},3.5,1.0\n")
    with pytest.raises(TableError, match=r"fb.csv: key column 'help_row' holds '3.5' on line 2, not a whole number$"):
        resolve_archs(fb, str(table))


def test_resolve_archs_names_a_csv_of_another_space(tmp_path):
    """A CSV without a key column of the space is one line naming its header and the space it is of (it was
    its header read as a malformed key, a line the length of the header)."""
    from hwlat.nas.spaces.measure import resolve_archs

    fb, ofa = get_space("fbnet"), get_space("ofa")
    table = _write(tmp_path / "nb.csv", ["nb201_index", "arch_str", "ops6", "gpu_1"], [[*NB.key_record(NB.from_index(0)).values(), 1.0]])
    with pytest.raises(ArchError, match=r"nb.csv: the header \(nb201_index, arch_str, ops6, gpu_1\) names no key column of "
                                        r"the fbnet space \(its columns are the nb201 space's\); expected one of "
                                        r"fbnet_op_idx22, fbnet_ops22$"):
        resolve_archs(fb, str(table))
    keys = tmp_path / "keys.csv"
    keys.write_text(f"key,ms\n{fb.key(fb.sample(1)[0])},1.0\n")
    with pytest.raises(ArchError, match=r"keys.csv: the header \(key, ms\) names no key column of the ofa space; "
                                        r"expected one of ofa_arch$"):
        resolve_archs(ofa, str(keys))


def test_resolve_archs_names_the_space_of_another_space_s_key():
    """An OFA key given for fbnet (or FBNet's for nb201) says whose key it is, not which of its pieces are no
    FBNet block ('2', '3;e=6', 'ks=7', ...)."""
    from hwlat.nas.spaces.measure import resolve_archs

    fb, ofa = get_space("fbnet"), get_space("ofa")
    with pytest.raises(ArchError, match=r"^--arch 'ks=.*': a key of the ofa space, not of fbnet; give --space ofa$"):
        resolve_archs(fb, ofa.key(ofa.sample(1)[0]), flag="--arch")
    with pytest.raises(ArchError, match=r"a key of the fbnet space, not of nb201; give --space fbnet$"):
        resolve_archs(NB, fb.key(fb.sample(1)[0]))


def test_resolve_archs_skips_comment_lines_of_a_csv_as_of_a_key_file(tmp_path):
    """'#' lines are comments in a file of keys; above a CSV's header they were its header to pandas (KeyError)."""
    from hwlat.nas.spaces.measure import resolve_archs

    fb = get_space("fbnet")
    a, b = fb.sample(2, seed=0)
    table = tmp_path / "fb.csv"
    table.write_text(f"# measured on my board\n\nfbnet_op_idx22,ms\n{fb.key(a)},1.0\n# retried\n{fb.key(b)},2.0\n")
    assert [fb.key(it.arch) for it in resolve_archs(fb, str(table))] == [fb.key(a), fb.key(b)]


def test_profile_archs_measures_and_resumes(tmp_path):
    pytest.importorskip("onnxruntime")
    from hwlat.nas.spaces.measure import profile_archs, resolve_archs
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    items = resolve_archs(NB, "0:3")
    out = tmp_path / "nb201_ort"
    ort = get_runtime("onnxruntime", threads=1)
    res = profile_archs(NB, items, out, ort, protocol=Protocol.preset("quick"), progress=False)
    assert res.measured == 3 and res.failed == 0
    res2 = profile_archs(NB, resolve_archs(NB, "0:4"), out, ort, protocol=Protocol.preset("quick"), progress=False)
    assert res2.skipped == 3 and res2.measured == 1
    t = ArchTable.read(out, space=NB.arch_keys)
    assert len(t) == 4 and t.devices == ["cpu/onnxruntime/fp32/threads=1"] and t.missing().sum() == 0
    assert (t.to_numpy() > 0).all()
    meta = json.loads(arch_table_paths(out)[1].read_text())
    assert meta["runtime_settings"]["threads"] == 1 and meta["protocol"]["min_runs"] == 5 and len(meta["runs"]) == 2
    assert "onnxruntime" in meta["device"]["fingerprint"]["packages"]
    assert (read_stats(out)["build_ms"] > 0).all()


def test_an_arch_table_measured_on_another_cpu_is_not_resumed_here(tmp_path, capsys):
    """As a device table: an arch table copied from another machine is not added to here (its
    latencies and this machine's would stand in one column under one fingerprint; they were mixed)."""
    pytest.importorskip("onnxruntime")
    from hwlat.cli import main

    out = tmp_path / "nb"
    args = ["profile", "archs", "--space", "nb201", "--protocol", "quick", "--out", str(out), "--no-progress"]
    assert main([*args, "--archs", "0:2"]) == 0
    json_path = arch_table_paths(out)[1]
    meta = json.loads(json_path.read_text())
    meta["device"]["fingerprint"]["cpu_model"] = "Some Other CPU"
    json_path.write_text(json.dumps(meta))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix != ".lock"}
    capsys.readouterr()
    assert main([*args, "--archs", "0:4"]) == 1
    err = capsys.readouterr().err
    assert "measured on another machine (CPU 'Some Other CPU'" in err and "give another --out" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix != ".lock"} == before


def test_cli_profile_archs_and_space_show(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from hwlat.cli import main

    out = tmp_path / "fb"
    rc = main(["profile", "archs", "--space", "fbnet", "--runtime", "onnxruntime", "--archs", "random:2", "--out", str(out),
               "--protocol", "quick", "--no-progress"])
    assert rc == 0 and "2 measured" in capsys.readouterr().out
    assert len(ArchTable.read(out, space=arch_keys("fbnet"))) == 2
    assert main(["space", "show", "--space", "nb201", "--arch", "3"]) == 0
    shown = capsys.readouterr().out
    assert "DEAD (omitted)" in shown and "params    0.073306 M" in shown and "ops a runtime executes: 18" in shown
    assert main(["space", "show", "--space", "nb201", "--arch", "99999"]) == 1
    assert "index 99999 out of range" in capsys.readouterr().err
    assert main(["profile", "archs", "--space", "nb201", "--archs", "bogus", "--out", str(tmp_path / "x")]) == 1
    assert "forms:" in capsys.readouterr().err


def test_cli_space_show_takes_the_arch_forms_predict_takes(tmp_path, capsys, monkeypatch):
    """`space show --arch` reads a row of the public CSV, as `predict --arch` does (it said '0' is not 22 blocks)."""
    from hwlat.cli import main
    from hwlat.device_tables.archtable import PUBLIC_DATA_ENV

    fb = get_space("fbnet")
    rows = [[i, *fb.key_record(a).values()] for i, a in enumerate(fb.sample(2, seed=3))]
    _write(tmp_path / "fbnet.csv", ["help_row", "fbnet_op_idx22", "fbnet_ops22"], rows)
    monkeypatch.setenv(PUBLIC_DATA_ENV, str(tmp_path))
    assert main(["space", "show", "--space", "fbnet", "--arch", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"fbnet_op_idx22 {rows[1][1]}\n")
    assert main(["space", "show", "--space", "fbnet", "--arch", "2"]) == 1
    assert "fbnet row 2 out of range; the public fbnet.csv has rows 0..1" in capsys.readouterr().err
    assert main(["space", "show", "--space", "fbnet", "--arch", "random:2"]) == 1
    assert "--arch 'random:2' selects 2 architectures; give one" in capsys.readouterr().err


def test_a_public_csv_of_another_space_is_one_clear_error(tmp_path, monkeypatch):
    """A fbnet.csv in the public-data folder without fbnet's key columns (another space's file under that name)
    is an ArchError naming the file and what it lacks (pandas raised a ValueError about usecols)."""
    from hwlat.device_tables.archtable import PUBLIC_DATA_ENV
    from hwlat.nas.spaces.measure import resolve_archs

    _write(tmp_path / "fbnet.csv", ["nb201_index", "arch_str", "ops6", "gpu_1"], [[*NB.key_record(NB.from_index(0)).values(), 1.0]])
    monkeypatch.setenv(PUBLIC_DATA_ENV, str(tmp_path))
    with pytest.raises(ArchError, match=r"fbnet.csv: not a public fbnet file: its header \(nb201_index, arch_str, ops6, "
                                        r"gpu_1\) lacks help_row, fbnet_op_idx22$"):
        resolve_archs(get_space("fbnet"), "0")
    (tmp_path / "fbnet.csv").write_text("")
    with pytest.raises(ArchError, match=r"fbnet.csv: not a public fbnet file: it is empty and lacks help_row"):
        resolve_archs(get_space("fbnet"), "0")


def test_public_data_folder_must_exist_when_given(tmp_path, monkeypatch):
    from hwlat.device_tables.archtable import PUBLIC_DATA_ENV, public_data_dir, public_files

    with pytest.raises(TableError, match=r"nope \(given\) does not exist"):
        public_data_dir(tmp_path / "nope")
    monkeypatch.setenv(PUBLIC_DATA_ENV, str(tmp_path / "gone"))
    with pytest.raises(TableError, match=r"from \$HWLAT_LATENCY_DATA"):
        public_data_dir()
    monkeypatch.setenv(PUBLIC_DATA_ENV, str(tmp_path))
    assert public_data_dir() == tmp_path
    with pytest.raises(TableError, match="no ofa"):
        public_files(arch_keys("ofa"))


def test_profile_archs_in_two_passes_keeps_the_quieter_and_records_both(tmp_path):
    pytest.importorskip("onnxruntime")
    import csv as csv_module

    from hwlat.nas.spaces.measure import profile_archs, resolve_archs
    from hwlat.profilers.protocol import Protocol
    from hwlat.profilers.runtimes import get_runtime

    out = tmp_path / "two"
    res = profile_archs(NB, resolve_archs(NB, "0:3"), out, get_runtime("onnxruntime", threads=1),
                        protocol=Protocol.preset("quick"), progress=False, passes=2)
    assert res.measured == 3
    passes: dict[str, dict[int, float]] = {}
    for r in csv_module.DictReader(open(tmp_path / "two.passes.csv")):
        passes.setdefault(r["arch_str"] if "arch_str" in r else r["key"], {})[int(r["pass"])] = float(r["median_ms"])
    t = ArchTable.read(out, space=NB.arch_keys)
    col = t.latency(t.devices[0])
    assert set(passes) == set(col.index) and all(set(p) == {1, 2} for p in passes.values())
    for key, p in passes.items():
        assert col[key] == pytest.approx(min(p.values()), rel=1e-5)
    assert json.loads(arch_table_paths(out)[1].read_text())["runs"][-1]["passes"] == 2


def test_profile_archs_killed_between_passes_resumes_without_measuring_again(tmp_path):
    """A run interrupted in pass 2 keeps pass 1 (NAME.passes.csv); the resumed run measures only
    the passes missing, and each row is the quieter pass."""
    from hwlat.device_tables.measurement import Measurement
    from hwlat.nas.spaces.measure import profile_archs, resolve_archs
    from hwlat.profilers.runtimes import get_runtime

    items = resolve_archs(NB, "0:4")
    calls: list[tuple[str, int]] = []
    slow = {NB.key(items[0].arch), NB.key(items[2].arch)}  # a slow spell over these in pass 1

    def timer(stop_after: int | None):
        def time_arch(arch):
            key = NB.key(arch)
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt
            n = sum(k == key for k, _ in calls) + 1
            calls.append((key, n))
            ms = 2.0 if (key in slow and n == 1) else 1.0 + 0.1 * n
            return Measurement(ms, ms, 0.0, 0.0, ms, ms, 10, False), 3.0
        return time_arch

    out = tmp_path / "killed"
    ort = get_runtime("onnxruntime", threads=1)
    with pytest.raises(KeyboardInterrupt):
        profile_archs(NB, items, out, ort, progress=False, passes=2, timer=timer(stop_after=6), order_seed=None)
    assert len(calls) == 6 and len(ArchTable.read(out, space=NB.arch_keys)) == 2  # pass 1 + two archs of pass 2
    first = list(calls)
    res = profile_archs(NB, items, out, ort, progress=False, passes=2, timer=timer(stop_after=None), order_seed=None)
    assert res.skipped == 2 and res.measured == 2
    assert calls[len(first):] == [(NB.key(items[2].arch), 2), (NB.key(items[3].arch), 2)]  # pass 2 of the other two
    col = ArchTable.read(out, space=NB.arch_keys).latency("cpu/onnxruntime/fp32/threads=1")
    for it in items:
        key = NB.key(it.arch)
        assert col[key] == pytest.approx(1.2 if key in slow else 1.1)  # the quieter pass


def test_repeated_architectures_are_taken_once_and_the_repeats_counted(tmp_path, caplog):
    """A file of 100k rows holding 15,596 architectures said only "15596 architectures predicted"."""
    from hwlat.nas.spaces.measure import resolve_archs

    f = tmp_path / "keys.txt"
    f.write_text("5\n7\n5\n5\n")
    with caplog.at_level("WARNING"):
        items = resolve_archs(NB, str(f))
    assert [i.arch.index for i in items] == [5, 7]
    assert "2 repeated architecture(s) left out, each is taken once (2 architectures)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        resolve_archs(NB, "0:5")
    assert "repeated" not in caplog.text


def test_profile_archs_records_the_seed_of_random_archs_in_each_run(tmp_path, capsys):
    """`--archs random:N` names architectures only with its --seed: the table keeps both, per run."""
    pytest.importorskip("onnxruntime")
    from hwlat.cli import main

    out = tmp_path / "nb"
    args = ["profile", "archs", "--space", "nb201", "--protocol", "quick", "--passes", "1", "--out", str(out),
            "--no-progress", "--archs", "random:2"]
    assert main([*args, "--seed", "7"]) == 0 and main([*args, "--seed", "8"]) == 0
    meta = json.loads(arch_table_paths(out)[1].read_text())
    assert meta["archs_spec"] == "random:2" and meta["seed"] == 8
    assert [(r["archs_spec"], r["seed"]) for r in meta["runs"]] == [("random:2", 7), ("random:2", 8)]
