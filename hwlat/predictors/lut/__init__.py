"""Lookup-table predictor: a network's latency as the sum of the kernels its runtime executes.

A `Graph`'s ops are grouped into kernels by the table's fusion rules (nn-Meter's observation:
summing unfused op latencies is wrong when the runtime fuses them; Zhang et al., MobiSys 2021),
each kernel is looked up in the device table, else predicted by the kernel regressors, and a
correction calibrated on a few whole-model measurements (a scale and a per-kernel cost per kernel
type, and a constant: `Calibration`) accounts for what single-op timings include or miss (call
overhead, layout changes between kernels, caches). A prediction equals the sum of its breakdown; ops that
nothing covers are named and make it ``partial``.

Modules: `predictor` (`LUTPredictor`), `prediction` (what it answers), `calibration` (the
correction and its fit), `reorders` (layout reorders between kernels), `regressors_store` (kernel
regressors stored beside a table).
"""

from hwlat.predictors.lut.calibration import CACHED_WEIGHTS_MB, Calibration, kernel_type
from hwlat.predictors.lut.prediction import MISSING, REGRESSOR, TABLE, KernelPrediction, Prediction, UncoveredOp
from hwlat.predictors.lut.predictor import STATISTICS, LUTPredictor
from hwlat.predictors.lut.regressors_store import regressors_stem

__all__ = ["CACHED_WEIGHTS_MB", "MISSING", "REGRESSOR", "STATISTICS", "TABLE", "Calibration", "KernelPrediction",
           "LUTPredictor", "Prediction", "UncoveredOp", "kernel_type", "regressors_stem"]
