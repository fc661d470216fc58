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

from hwlat.nas.spaces.base import ArchError, Space


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
    from hwlat.nas.spaces import get_space

    sp = get_space(space) if isinstance(space, str) else space
    return sp.decisions()
