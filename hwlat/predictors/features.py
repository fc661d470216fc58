"""`FeatureLayout`: which columns of an architecture feature matrix are plain encodings and
which are non-negative cost counts (ops that run, kernels launched, paths), so predictors can
treat them differently while taking nothing but numeric arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeatureLayout:
    """Column names and groups of a feature matrix X (n archs x p features).

    ``enc``: the search space's encoding and other descriptive columns (used by encoders);
    ``cost``: primary non-negative counts that latency grows with (e.g. convolutions that run);
    ``extra``: secondary non-negative structure counts (adds, path lengths, edges);
    ``size``: size measures in log space (log MACs), which a one-line fit maps to log latency;
    ``live``: the cost counts of ops that still run once a runtime prunes dead ones (a subset of
    ``cost``; empty where the space has no dead ops), what a graph compiler's latency follows.
    """

    names: tuple[str, ...]
    enc: tuple[int, ...]
    cost: tuple[int, ...] = ()
    extra: tuple[int, ...] = ()
    space: str = ""
    meta: dict = field(default_factory=dict, compare=False)
    size: tuple[int, ...] = ()
    live: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        return len(self.names)

    def check(self, X: np.ndarray) -> np.ndarray:
        """X as a float array with the layout's width, or ValueError naming the mismatch."""
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.width:
            version = self.meta.get("features_version")
            hint = (f"; this predictor was trained on features version {version}, and features of another "
                    f"version need a predictor trained on them: retrain it, or use the pretrained one shipped "
                    f"with your hwlat" if version is not None else "")
            raise ValueError(f"expected {self.space or 'layout'} features of width {self.width}, got shape "
                             f"{X.shape}{hint}")
        return X

    def to_json(self) -> dict:
        return {"names": list(self.names), "enc": list(self.enc), "cost": list(self.cost),
                "extra": list(self.extra), "size": list(self.size), "live": list(self.live), "space": self.space, "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureLayout":
        return cls(tuple(d["names"]), tuple(d["enc"]), tuple(d.get("cost", ())), tuple(d.get("extra", ())),
                   d.get("space", ""), dict(d.get("meta", {})), tuple(d.get("size", ())), tuple(d.get("live", ())))

    @classmethod
    def plain(cls, p: int) -> "FeatureLayout":
        """A layout with p encoding columns and no cost groups."""
        return cls(tuple(f"x{i}" for i in range(p)), tuple(range(p)))
