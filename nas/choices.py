"""A search space as a list of categorical decisions (one choice index each), the view that
supernets (FBNet, ProxylessNAS), Optuna and per-choice latency tables share.

``decisions = space_decisions(space)``: ``decisions.names``, ``decisions.choices`` (labels per
decision), ``decisions.indices(archs)`` -> int array (n, D), ``decisions.build(indices)`` -> arch.
NB201: 6 edges x 5 ops; FBNet: 22 layers x 9 blocks; OFA: a kernel and an expansion per block
slot (20 + 20, unused slots included), a depth per stage (5) and the resolution (25 values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from nas.spaces.base import ArchError, Space


@dataclass(frozen=True)
class Decisions:
    """The categorical decisions of a space and the maps between archs and choice indices."""

    space: str
    names: tuple[str, ...]
    choices: tuple[tuple[Any, ...], ...]  # the values of each decision, in index order
    _to_indices: Callable[[Any], Sequence[int]]
    _from_indices: Callable[[Sequence[int]], Any]

    @property
    def n_decisions(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.choices)

    def indices(self, archs: Iterable[Any]) -> np.ndarray:
        """Choice indices (n, D) of architectures."""
        rows = [tuple(self._to_indices(a)) for a in archs]
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), self.n_decisions)

    def build(self, indices: Sequence[int]) -> Any:
        """The architecture with these choice indices (one per decision)."""
        idx = [int(i) for i in indices]
        if len(idx) != self.n_decisions or any(not 0 <= i < n for i, n in zip(idx, self.sizes)):
            raise ArchError(f"{self.space}: choice indices {idx} do not fit the {self.n_decisions} decisions "
                            f"with {list(self.sizes)} choices")
        return self._from_indices(idx)

    def from_params(self, params: Mapping[str, Any]) -> Any:
        """The architecture from a mapping decision name -> chosen value (e.g. an Optuna trial's params)."""
        missing = [n for n in self.names if n not in params]
        if missing:
            more = "..." if len(missing) > 3 else ""
            raise ArchError(f"{self.space}: parameters lack decision(s) {missing[:3]}{more}")
        idx = []
        for name, values in zip(self.names, self.choices):
            v = params[name]
            if v not in values:
                raise ArchError(f"{self.space}: {name}={v!r} is not one of {list(values)}")
            idx.append(values.index(v))
        return self.build(idx)

    def onehot(self, archs: Iterable[Any]) -> list[np.ndarray]:
        """Per decision, a one-hot float64 array (n, choices): the probabilities of a discrete arch."""
        idx = self.indices(archs)
        return [np.eye(k, dtype=np.float64)[idx[:, d]] for d, k in enumerate(self.sizes)]


def space_decisions(space: Space | str) -> Decisions:
    """The decisions of a search space (nb201, fbnet, ofa)."""
    from nas.spaces import get_space

    sp = get_space(space) if isinstance(space, str) else space
    builder = {"nb201": _nb201, "fbnet": _fbnet, "ofa": _ofa}.get(sp.name)
    if builder is None:
        raise ArchError(f"no categorical decisions defined for the {sp.name!r} space")
    return builder(sp)


def _nb201(sp: Space) -> Decisions:
    from nas.spaces.nb201 import EDGES, OPS, NB201Arch

    names = tuple(f"edge{t}{f}" for t, f in EDGES)
    return Decisions("nb201", names, (OPS,) * len(EDGES), lambda a: sp.as_arch(a).ops,
                     lambda idx: NB201Arch(tuple(idx)))


def _fbnet(sp: Space) -> Decisions:
    from nas.spaces.fbnet import BLOCKS, N_LAYERS, FBNetArch

    names = tuple(f"layer{i}" for i in range(N_LAYERS))
    return Decisions("fbnet", names, (BLOCKS,) * N_LAYERS, lambda a: sp.as_arch(a).ops,
                     lambda idx: FBNetArch(tuple(idx)))


def _ofa(sp: Space) -> Decisions:
    from nas.spaces.ofa import DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, N_STAGES, RESOLUTIONS, OFAArch

    slots = N_STAGES * MAX_DEPTH
    names = (tuple(f"ks{i}" for i in range(slots)) + tuple(f"e{i}" for i in range(slots))
             + tuple(f"d{s}" for s in range(N_STAGES)) + ("r",))
    choices = (KERNELS,) * slots + (EXPANDS,) * slots + (DEPTHS,) * N_STAGES + (RESOLUTIONS,)

    def to_idx(a: Any) -> list[int]:
        a = sp.as_arch(a)
        return ([KERNELS.index(k) for k in a.ks] + [EXPANDS.index(e) for e in a.e]
                + [DEPTHS.index(d) for d in a.d] + [RESOLUTIONS.index(a.r)])

    def from_idx(idx: Sequence[int]) -> Any:
        ks = tuple(KERNELS[i] for i in idx[:slots])
        e = tuple(EXPANDS[i] for i in idx[slots:2 * slots])
        d = tuple(DEPTHS[i] for i in idx[2 * slots:2 * slots + N_STAGES])
        return OFAArch(ks, e, d, RESOLUTIONS[idx[-1]])

    return Decisions("ofa", names, choices, to_idx, from_idx)
