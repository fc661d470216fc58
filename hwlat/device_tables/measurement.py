"""`Measurement`: the statistics of the raw timings of one thing, with a noise verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

# IQR/median above this marks a measurement as noisy (DESIGN.md: flag, then re-measure).
NOISE_THRESHOLD = 0.10
# The statistics a table's row stores for a measurement, in their column order.
STAT_FIELDS = ("median_ms", "mean_ms", "std_ms", "iqr_ms", "p10_ms", "p90_ms")


@dataclass(frozen=True)
class Measurement:
    """Summary of repeated timings in milliseconds. `median_ms` is the headline number."""

    median_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    n: int
    noisy: bool

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], noise_threshold: float = NOISE_THRESHOLD) -> "Measurement":
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0:
            raise ValueError("a measurement needs at least one sample")
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError("samples must be finite and non-negative")
        q10, q25, q50, q75, q90 = np.percentile(x, [10, 25, 50, 75, 90])
        iqr = float(q75 - q25)
        rel = iqr / q50 if q50 > 0 else 0.0
        return cls(
            median_ms=float(q50),
            mean_ms=float(x.mean()),
            std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
            iqr_ms=iqr,
            p10_ms=float(q10),
            p90_ms=float(q90),
            n=int(x.size),
            noisy=bool(rel > noise_threshold),
        )

    @property
    def rel_iqr(self) -> float:
        """IQR / median: the spread the noise verdict is based on."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def cells(self) -> list:
        """The cells a table row stores: each of `STAT_FIELDS` to 6 significant digits, then n and
        the noise verdict (``true``/``false``)."""
        return [f"{getattr(self, f):.6g}" for f in STAT_FIELDS] + [self.n, "true" if self.noisy else "false"]
