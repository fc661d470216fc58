"""Trained accuracy of search-space architectures, shipped with the project: the NATS-Bench
test accuracies (200 epochs, mean over seeds) of all 15,625 NAS-Bench-201 architectures on
CIFAR-10, CIFAR-100 and ImageNet16-120 (`hwlat/nas/data/nb201_accuracy.npz`; source in
`hwlat/nas/data/README.md`). A lookup, so a search can optimise real accuracy instead of a proxy.

    from hwlat.nas.accuracy import accuracy_table
    acc = accuracy_table("nb201")
    acc.lookup(arch, "cifar10")          # an arch, an index, an arch string or an ops code -> %
    acc.values("cifar10")                # all 15,625, by official index

Citation: Dong et al., "NATS-Bench: Benchmarking NAS Algorithms for Architecture Topology and
Size", IEEE TPAMI 2021; Dong & Yang, "NAS-Bench-201", ICLR 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.nas.spaces import get_space
from hwlat.nas.spaces.base import Space

# dataset name -> (npz array, column of the source CSV, what it is)
DATASETS: dict[str, tuple[str, str, str]] = {
    "cifar10": ("cifar10", "cifar10_test_acc", "CIFAR-10 test accuracy"),
    "cifar100": ("cifar100", "cifar100_test_acc", "CIFAR-100 test accuracy"),
    "imagenet16-120": ("imagenet16_120", "imagenet16_120_test_acc", "ImageNet16-120 test accuracy"),
}
SOURCE = "NATS-Bench topology search space (Dong et al., TPAMI 2021), 200-epoch training, mean over seeds"
SCALE = 1000  # stored as integer thousandths of a percent (the source has 3 decimals)


class AccuracyError(HwlatError):
    """No accuracy table for a space or dataset, or an architecture the table cannot key."""


def has_accuracy(space: Space | str) -> bool:
    """True when the project ships trained accuracies for the space."""
    return _file(space) is not None


def _file(space: Space | str) -> str | None:
    """The packaged accuracy file a space declares (`Space.accuracy_file`)."""
    from hwlat.nas.spaces import space_class

    cls = space_class(space) if isinstance(space, str) else type(space)
    return cls.accuracy_file


def _spaces_with_accuracy() -> list[str]:
    from hwlat.nas.spaces import spaces

    return [name for name, cls in spaces().items() if cls.accuracy_file]


def datasets() -> list[str]:
    return list(DATASETS)


def _name(space: Space | str) -> str:
    return space if isinstance(space, str) else space.name


def dataset_name(dataset: str) -> str:
    """A dataset as `DATASETS` names it (``ImageNet16_120`` -> ``imagenet16-120``); an
    `AccuracyError` listing the choices for another."""
    d = dataset.lower().replace("_", "-")
    if d not in DATASETS:
        raise AccuracyError(f"unknown accuracy dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return d


@dataclass(frozen=True)
class AccuracyTable:
    """Accuracies (%) of every architecture of a space with native indices, by index; `codes`
    holds each row's architecture code, checked against the space when loaded."""

    space: Space
    accuracy: dict[str, np.ndarray]  # dataset -> float array by index
    codes: np.ndarray

    def values(self, dataset: str = "cifar10") -> np.ndarray:
        """Accuracy (%) of every architecture, by official index."""
        return self.accuracy[dataset_name(dataset)]

    def index(self, arch: Any) -> int:
        """The row of an architecture (an arch, an index, an arch string or an ops code)."""
        try:
            return int(self.space.index(self.space.arch(arch)))
        except HwlatError as exc:
            raise AccuracyError(f"no accuracy for {arch!r}: {exc}") from None

    def lookup(self, arch: Any, dataset: str = "cifar10") -> float:
        """Test accuracy (%) of one architecture on `dataset`."""
        return float(self.values(dataset)[self.index(arch)])

    def lookup_many(self, archs: Sequence[Any], dataset: str = "cifar10") -> np.ndarray:
        return self.values(dataset)[[self.index(a) for a in archs]]

    def best(self, dataset: str = "cifar10", mask: np.ndarray | None = None) -> tuple[int, float]:
        """(index, accuracy) of the most accurate architecture, among `mask` (by index) if given."""
        acc = self.values(dataset)
        if mask is not None:
            acc = np.where(np.asarray(mask, dtype=bool), acc, -np.inf)
        i = int(np.argmax(acc))
        if not np.isfinite(acc[i]):
            raise AccuracyError("no architecture is selected")
        return i, float(acc[i])


def data_path(space: Space | str) -> Path:
    """Where the packaged accuracy file of a space lies."""
    name = _name(space)
    file = _file(space)
    if file is None:
        raise AccuracyError(f"no trained accuracies ship for the {name} space (only for "
                            f"{', '.join(_spaces_with_accuracy())}); search it with the training-free proxy "
                            "(--objective naswot) or your own 'module:function'")
    return Path(str(resources.files("hwlat.nas") / "data" / file))


def accuracy_table(space: Space | str = "nb201") -> AccuracyTable:
    """The shipped accuracy table of a space (read once per space name)."""
    if isinstance(space, str):
        return _load(space)
    t = _load(space.name)
    return AccuracyTable(space, t.accuracy, t.codes)  # the caller's space (e.g. NB201 with keep_dead)


@lru_cache(maxsize=None)
def _load(name: str) -> AccuracyTable:
    path = data_path(name)
    sp = get_space(name)
    try:
        with np.load(path) as z:
            acc = {d: z[key].astype(np.float64) / SCALE for d, (key, _, _) in DATASETS.items()}
            codes = z["code"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise AccuracyError(f"cannot read the accuracy table {path}: {exc}") from None
    probe = np.unique(np.linspace(0, sp.size - 1, 257).astype(int))  # a cheap check that keys agree
    if len(codes) != sp.size or any(sp.from_index(int(i)).code != codes[i] for i in probe):
        raise AccuracyError(f"{path} is not keyed like the {name} space (architecture codes differ)")
    return AccuracyTable(sp, acc, codes)


def build(csv_path: str | Path, out: str | Path, space: Space | str = "nb201") -> Path:
    """Write the compact accuracy file from the source CSV (``nb201_index, arch_str`` and one
    ``*_test_acc`` column per dataset), checking every row's arch string against its index."""
    import pandas as pd

    sp = get_space(space) if isinstance(space, str) else space
    df = pd.read_csv(csv_path).sort_values("nb201_index")
    n = sp.size
    if len(df) != n or not np.array_equal(df["nb201_index"].to_numpy(), np.arange(n)):
        raise AccuracyError(f"{csv_path}: expected one row per index 0..{n - 1}, got {len(df)} rows")
    archs = [sp.from_index(int(i)) for i in df["nb201_index"]]
    bad = [(i, s) for i, s, a in zip(df["nb201_index"], df["arch_str"], archs) if sp.key(sp.parse(s)) != sp.key(a)]
    if bad:
        raise AccuracyError(f"{csv_path}: {len(bad)} rows whose arch string is not their index's, e.g. {bad[0]}")
    arrays = {key: np.round(df[col].to_numpy(dtype=float) * SCALE).astype(np.int32)
              for key, col, _ in DATASETS.values()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, code=np.asarray([a.code for a in archs], dtype=np.int16), **arrays)
    return out


__all__ = ["DATASETS", "dataset_name", "AccuracyError", "AccuracyTable", "accuracy_table", "build", "data_path",
           "datasets", "has_accuracy"]
