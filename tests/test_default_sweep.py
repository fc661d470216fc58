"""The default sweep holds every op configuration the NAS-Bench-201, FBNet and OFA networks run,
so a lookup table profiled from it prices their architectures without gaps."""

from __future__ import annotations

import pytest

from hwlat.profilers.sweeps import load_sweep

spaces = pytest.importorskip("hwlat.nas.spaces")


@pytest.fixture(scope="module")
def default_keys() -> set[str]:
    return {s.key for s in load_sweep("default")}


@pytest.mark.parametrize("space,n", [("nb201", 60), ("fbnet", 40), ("ofa", 40)])
def test_sampled_architectures_are_covered(default_keys, space, n):
    sp = spaces.get_space(space)
    missing: set[str] = set()
    for arch in sp.sample(n, seed=7):
        for fuse_add in (False, True):
            for dtype in ("float32", "int8"):
                missing |= {s.key for s in (x.replace(dtype=dtype) for x in sp.to_graph(arch, fuse_add=fuse_add))
                            if s.key not in default_keys}
    assert not missing, f"{len(missing)} {space} configurations missing from the default sweep, e.g. {sorted(missing)[:3]}"


def test_default_sweep_size_and_dtypes():
    specs = load_sweep("default")
    fp32 = [s for s in specs if s.dtype == "float32"]
    assert {s.dtype for s in specs} == {"float32", "int8"}
    assert len(specs) == 2 * len(fp32)
    assert 1000 <= len(fp32) <= 4000  # profiles in minutes, not hours (see the file's header)
