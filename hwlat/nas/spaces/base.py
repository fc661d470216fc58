"""`Space`: the interface every search space implements (sample, mutate, key, encode, build).

An architecture ("arch") is a small frozen dataclass of the space; its `key` is the exact string
the public latency tables use in their primary key column, so measurements made here join the
public ones. Builders go through one intermediate network (`hwlat.nas.spaces.network.Net`), from
which the ONNX model, the torch module and the `OpSpec` list are emitted, so the three agree.
"""

from __future__ import annotations

import abc
import zlib
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from hwlat.device_tables.archtable import ArchKeys
from hwlat.device_tables.errors import HwlatError
from hwlat.device_tables.ops import OpSpec


class ArchError(HwlatError, ValueError):
    """An architecture key, index or string that is not in the search space."""


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator, a seed or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def key_seed(key: str) -> int:
    """A stable seed from an arch key: the same arch always gets the same synthetic weights."""
    return zlib.crc32(key.encode())


class Space(abc.ABC):
    """A search space. Subclasses set the class attributes and implement the abstract methods."""

    name: str = ""
    # How arch tables of the space are keyed (columns, join key, row order); every space sets it,
    # and `key_columns` / `key_column` repeat its `columns` / `primary`.
    arch_keys: ClassVar[ArchKeys | None] = None
    key_columns: tuple[str, ...] = ()  # the key columns of the space's public CSV files
    key_column: str = ""  # the primary key column: `key(arch)` is its value
    size: int | None = None  # number of distinct architectures (networks), None if unbounded
    # What its networks are, "cnn" or "transformer": target lists (`hwlat.nas.pool`) take the CNN spaces by
    # default, so benchmarks of CNNs stay as they were; a transformer space is named to be included.
    family: ClassVar[str] = "cnn"
    num_classes: int = 10
    # Whether an integer index names an architecture by the space's own numbering (NAS-Bench-201's
    # indices: `parse(i)`, 0..size-1) rather than a row of its public CSV (``help_row``).
    native_indices: ClassVar[bool] = False
    # Whether every layer has fixed input/output shapes whatever is chosen elsewhere (FBNet): a
    # lookup-table prediction is then a sum over layers, recovered exactly one choice at a time.
    layerwise: ClassVar[bool] = False
    # Few-shot transfer (`hwlat bench transfer`): the integer key column tables are joined on, and
    # HELP's query architectures (that column's values lo..hi-1); None where the space has none.
    transfer_join_column: ClassVar[str] = ""
    transfer_query: ClassVar[tuple[int, int] | None] = None
    # The trained accuracies of every architecture shipped for this space (a file in hwlat/nas/data/ that
    # `hwlat.nas.accuracy` reads, keyed by the native index), or None: search it with a proxy or your own score.
    accuracy_file: ClassVar[str | None] = None
    # Options of the constructor that commands taking --space offer as flags (`hwlat.profilers.base.Option`).
    cli_options: ClassVar[tuple[Any, ...]] = ()

    # ---- architectures ------------------------------------------------------------------
    @abc.abstractmethod
    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[Any]:
        """`n` architectures drawn uniformly (seeded, reproducible)."""

    def enumerate(self) -> Iterator[Any]:
        """Every architecture, in the space's canonical order (only for small spaces)."""
        raise ArchError(f"the {self.name} space is too large to enumerate; use sample(n, seed)")

    def rare_archs(self) -> list[Any]:
        """Architectures whose kernels uniform samples seldom hold, which a table of the space's kernels
        should still cover (`hwlat profile device` adds them to the networks it chooses rows for)."""
        return []

    @abc.abstractmethod
    def mutate(self, arch: Any, rng: np.random.Generator | int | None = None) -> Any:
        """A neighbour of `arch`: one choice changed to another value."""

    # ---- keys ---------------------------------------------------------------------------
    @abc.abstractmethod
    def key(self, arch: Any) -> str:
        """The primary key string, exactly as in the public CSV column `key_column`."""

    @abc.abstractmethod
    def parse(self, key: Any) -> Any:
        """An architecture from its key (or another accepted form); `ArchError` if malformed."""

    def latency_feature_groups(self, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]] | None:
        """Feature groups for transfer predictors beyond the encoding (`hwlat.nas.features`): ("enc" | "cost" |
        "extra" | "cost live", names, (n, k) array) each, from the encodings `enc` of n archs ("cost live":
        counts of ops that run once dead ones are pruned); None: the encoding alone."""
        return None

    def decisions(self) -> Any:
        """The space's categorical choices (`hwlat.nas.choices.Decisions`), for differentiable and Optuna searches."""
        raise ArchError(f"no categorical decisions defined for the {self.name!r} space")

    def arch(self, key: Any) -> Any:
        """An architecture from its key in any form `parse` accepts, or the architecture itself."""
        return self.parse(key)

    def key_record(self, arch: Any) -> dict[str, Any]:
        """Values of the key columns that follow from the architecture (the primary key at least)."""
        return {self.key_column: self.key(arch)}

    def canonical_key(self, key: Any) -> str:
        """Any accepted form of an architecture -> its primary key string."""
        return self.key(self.parse(key))

    # ---- encodings ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def feature_names(self) -> list[str]:
        """Names of the `encode` vector's entries."""

    @property
    def encoding_dim(self) -> int:
        return len(self.feature_names)

    @abc.abstractmethod
    def encode_one(self, arch: Any) -> np.ndarray:
        """Fixed-length float32 vector of one architecture (see the subclass docstring)."""

    def encode(self, archs: Iterable[Any]) -> np.ndarray:
        """float32 array (n, encoding_dim) of architectures (or anything `parse` accepts)."""
        rows = [self.encode_one(self.as_arch(a)) for a in archs]
        if not rows:
            return np.zeros((0, self.encoding_dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def encode_keys(self, keys: Iterable[Any]) -> np.ndarray:
        """`encode` of the architectures named by keys (e.g. a public CSV's key column)."""
        return self.encode(self.parse(k) for k in keys)

    @abc.abstractmethod
    def is_arch(self, obj: Any) -> bool:
        """True when `obj` is an architecture object of this space."""

    # ---- building -----------------------------------------------------------------------
    @abc.abstractmethod
    def network(self, arch: Any, batch: int = 1):
        """The network of `arch` as a `hwlat.nas.spaces.network.Net` (layers, shapes, weights)."""

    def input_shape(self, arch: Any, batch: int = 1) -> tuple[int, int, int, int]:
        return self.network(arch, batch).input_shape

    def to_graph(self, arch: Any, batch: int = 1, fuse_add: bool = False, fold_bn: bool = False) -> list[OpSpec]:
        """The `OpSpec`s a runtime executes, in order, with fused kernels (conv+bn+act); `fuse_add`
        also folds a residual add into the conv that produces it (conv2d+bn+add); `fold_bn` writes
        convs as `to_onnx` has them (BN folded into the bias: conv2d+act, bias=true)."""
        return self.network(self.as_arch(arch), batch).to_graph(fuse_add=fuse_add, fold_bn=fold_bn)

    def to_onnx(self, arch: Any, batch: int = 1) -> bytes:
        """A serialized ONNX model (input ``input``, output ``logits``; batch-norm folded)."""
        from hwlat.nas.spaces.onnx_export import net_to_onnx

        return net_to_onnx(self.network(self.as_arch(arch), batch), doc=f"{self.name} {self.key(self.as_arch(arch))}")

    def graph(self, arch: Any, batch: int = 1):
        """The `hwlat.device_tables.graph.Graph` its ONNX model runs (named ``space:key``): what `hwlat
        predict` prices for an architecture, on the command line and in searches alike. Written
        straight from the network for CNN layers (`net_graph`, the same ops), else read from ONNX."""
        from hwlat.device_tables.graph import Graph
        from hwlat.nas.spaces.net_graph import net_graph
        from hwlat.nas.spaces.onnx_export import net_to_proto

        arch = self.as_arch(arch)
        net = self.network(arch, batch)
        name = f"{self.name}:{self.key(arch)}"
        graph = net_graph(net, name)
        if graph is None:
            graph = Graph.from_onnx(net_to_proto(net, values=False))
            graph.name = name
        return graph

    def to_torch(self, arch: Any):
        """A torch `nn.Module` in eval mode computing the same function as `to_onnx`."""
        from hwlat.nas.spaces.torch_module import net_to_torch

        return net_to_torch(self.network(self.as_arch(arch)))

    def macs(self, arch: Any) -> int:
        """Multiply-accumulates of convolutions and linear layers (the usual "FLOPs" of papers)."""
        return self.network(self.as_arch(arch)).macs()

    def macs_many(self, archs: Iterable[Any]) -> np.ndarray:
        """MACs of many architectures (int64), equal to `macs` of each; spaces whose MACs add up
        over their choices override it with a table built once (the network builder is ~0.25 ms)."""
        return np.asarray([self.macs(a) for a in archs], dtype=np.int64)

    def _slot_macs(self, cache_key: Any, make: Any, base: Sequence[int], n_choices: int) -> tuple[int, np.ndarray]:
        """(MACs of `make(base)`, table[slot, choice] = MACs change when that one slot takes that
        choice), built once per `cache_key`. Exact where each slot's MACs depend on its own choice
        alone; choices a slot may not take (`ArchError`) get 0 and are never looked up."""
        cache = self.__dict__.setdefault("_slot_macs_cache", {})
        if cache_key not in cache:
            m0 = self.macs(make(tuple(base)))
            table = np.zeros((len(base), n_choices), dtype=np.int64)
            for s in range(len(base)):
                for c in range(n_choices):
                    if c != base[s]:
                        try:
                            table[s, c] = self.macs(make(tuple(base[:s]) + (c,) + tuple(base[s + 1:]))) - m0
                        except ArchError:
                            pass
            cache[cache_key] = (m0, table)
        return cache[cache_key]

    def params(self, arch: Any) -> int:
        """Trainable parameters of the network (weights, biases, batch-norm scale and shift)."""
        return self.network(self.as_arch(arch)).params()

    # ---- helpers ------------------------------------------------------------------------
    def as_arch(self, arch: Any) -> Any:
        """The architecture object `arch` names: `arch` itself if it is one, else `parse(arch)`."""
        return arch if self.is_arch(arch) else self.parse(arch)

    def describe(self, arch: Any) -> list[str]:
        """Lines describing the architecture's structure (for `hwlat space show`)."""
        return [f"{self.name} {self.key(self.as_arch(arch))}"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def parse_int_list(text: str, n: int, allowed: Sequence[int], what: str, form: str) -> tuple[int, ...]:
    """``a-b-c`` -> ints; checks the count and that each value is allowed."""
    parts = text.split("-")
    if len(parts) != n:
        raise ArchError(f"{what}: {text!r} has {len(parts)} values, expected {n} (form: {form})")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ArchError(f"{what}: {text!r} is not a list of integers (form: {form})") from None
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ArchError(f"{what}: value(s) {sorted(set(bad))} in {text!r} not allowed; allowed: {list(allowed)} (form: {form})")
    return values
