"""Kernel regressors: latency of op configurations a device table lacks, with an uncertainty.

One regressor per kernel family (the base op: ``conv2d``, ``dwconv2d``, ``relu``, ...; fused tails
are features). Each is a bagged ensemble whose members are a roofline-like cost model fitted by
non-negative least squares on relative error, ``t = c0 + c1*MACs + c2*bytes + c3*tail elements``,
times a regression tree on the log-residual (shapes, kernel, stride, tails). The spread of the
members, widened outside the training range, is the uncertainty: callers see an extrapolation.
Saved as JSON + a numpy ``.npz`` of arrays (no pickles).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.device_tables.files import atomic_write
from hwlat.device_tables.ops import FUSABLE_TAILS, RANK2_OPS, OpSpec

log = logging.getLogger(__name__)

FORMAT = "hwlat.kernel_regressors"
FORMAT_VERSION = 1  # the feature list is checked on load too
TAILS = FUSABLE_TAILS
FEATURE_NAMES = (
    "log_macs", "log_bytes", "log_in", "log_out", "log_cin", "log_cout", "log_hw_in", "log_hw_out",
    "kernel", "stride", "log_groups", "batch",
    # SIMD kernels work on channel blocks (8 or 16 floats): MACs with channels padded to the block,
    # and whether channel counts fill whole blocks, explain much of what plain MACs do not.
    "log_padded_macs16", "log_padded_macs8", "log_w_out", "cout_block16", "cin_block16", "cout_mod8", "log_weights",
    # An embedding's table size (cache misses), and the elements a transpose moves as one contiguous run.
    "log_vocab", "log_run",
) + tuple(f"tail_{t}" for t in TAILS)
# Features whose training range bounds where a regressor interpolates.
RANGE_FEATURES = ("log_macs", "log_bytes", "log_cin", "log_cout", "log_hw_in")
# Structural features, which change how a runtime computes a kernel (a kernel size, a stride, groups,
# channels off the 8-float block): a kernel with a value outside its family's rows is an extrapolation
# though its sizes lie in range (`unseen_structure`). A batch scales the work as sizes do: not one.
# The first `HELD_STRUCTURE` of them must be a value some row has, not only one between two rows'
# (a 5x5 conv on rows of 3x3 and 7x7 ones is not theirs to interpolate).
STRUCTURE_FEATURES = ("kernel", "stride", "log_groups", "cout_mod8")
HELD_STRUCTURE = 2
_STRUCTURE_COLS = [FEATURE_NAMES.index(f) for f in STRUCTURE_FEATURES]
# Log-space sigma added, in quadrature, to a kernel of a kind its family's rows never held (a new
# fused tail, an unseen structure).
NEW_KIND_SIGMA = 0.3
# Relative noise floor of a measured kernel (log units) added to every sigma.
NOISE_FLOOR = 0.03


class RegressorError(HwlatError):
    """A regressor file that cannot be read, or a fit without data."""


class OtherVersionRegressorsError(RegressorError):
    """Regressors stored by another hwlat (other features, a newer format): not damaged, only not
    usable here; a prediction refits them from the table's rows."""


def family(spec: OpSpec | str) -> str:
    """The regressor family of a kernel: its base op."""
    op = spec.op if isinstance(spec, OpSpec) else spec
    return op.split("+")[0]


@dataclass(frozen=True)
class Geometry:
    """A kernel seen as a batched matrix problem: `batch` independent problems of `rows` positions
    (pixels, tokens) reading `cin` and writing `cout` features each; `w_out` is the output's innermost
    spatial size (SIMD rows)."""

    batch: int
    cin: int
    cout: int
    rows_in: int
    rows_out: int
    w_out: int


def geometry(spec: OpSpec) -> Geometry:
    """NCHW ops as (N, C_in, C_out, H*W); rank-2 ops (linear, softmax, layernorm, gather) as one
    problem of `rows` tokens by cols features; matmul (B, H, M, K) @ (K, N) as B*H problems of M rows, K in, N out."""
    s, out = spec.input_shape, spec.output_shape
    if spec.base == "matmul":
        return Geometry(s[0] * s[1], s[3], out[3], s[2], s[2], out[3])
    if spec.base in RANK2_OPS:
        return Geometry(1, s[1], out[1], s[0], out[0], 1)
    return Geometry(s[0], s[1], out[1], s[2] * s[3], out[2] * out[3], out[3])


def contiguous_run(spec: OpSpec) -> int:
    """Elements a kernel reads as one contiguous run: for a transpose, the trailing input axes its
    perm keeps last and in order (0213 on (B, T, H, D): D; 0132: 1, an element at a time); else all."""
    if spec.base != "transpose":
        return math.prod(spec.input_shape)
    perm = [int(d) for d in spec.a["perm"]]
    run = 1
    for axis in range(3, -1, -1):
        if perm[axis] != axis:
            break
        run *= spec.input_shape[axis]
    return run


def features(spec: OpSpec) -> np.ndarray:
    """The fixed-length feature vector of a kernel (names: `FEATURE_NAMES`)."""
    s, a = spec.input_shape, spec.a
    out = spec.output_shape
    g = geometry(spec)
    tails = spec.parts[1:]
    vec = [
        math.log(spec.macs + 1), math.log(spec.bytes_moved + 1), math.log(math.prod(s)), math.log(math.prod(out)),
        math.log(g.cin), math.log(g.cout), math.log(g.rows_in), math.log(g.rows_out),
        float(a.get("kernel", 1)), float(a.get("stride", 1)),
        math.log(g.cin if spec.base == "dwconv2d" else int(a.get("groups", 1))), float(g.batch),
        math.log(padded_macs(spec, 16) + 1), math.log(padded_macs(spec, 8) + 1), math.log(g.w_out),
        float(g.cout % 16 == 0), float(g.cin % 16 == 0), float(g.cout % 8), math.log(spec.weight_count + 1),
        math.log(int(a.get("vocab", 1))), math.log(contiguous_run(spec)),
    ] + [float(tails.count(t)) for t in TAILS]
    return np.asarray(vec, dtype=np.float64)


def padded_macs(spec: OpSpec, block: int) -> int:
    """MACs of a conv/linear/matmul with its channel counts rounded up to `block` (other ops: their MACs)."""
    g = geometry(spec)
    k = int(spec.a.get("kernel", 1))

    def up(v: int) -> int:
        return -(-v // block) * block if v >= block else v

    if spec.base in ("conv2d", "pwconv2d", "linear", "matmul"):
        groups = int(spec.a.get("groups", 1))
        return g.batch * g.rows_out * up(g.cout) * up(g.cin // groups) * k * k * groups
    if spec.base == "dwconv2d":
        return g.batch * g.rows_out * up(g.cin) * k * k
    return spec.macs


def cost_terms(spec: OpSpec) -> np.ndarray:
    """Terms of the roofline-like base model: 1, MACs, bytes moved, elements touched by fused tails,
    MACs with channels padded to 16-float SIMD blocks."""
    tail_elems = math.prod(spec.output_shape) * (len(spec.parts) - 1)
    return np.asarray([1.0, spec.macs * 1e-6, spec.bytes_moved * 1e-6, tail_elems * 1e-6, padded_macs(spec, 16) * 1e-6],
                      dtype=np.float64)


def structure_ranges(specs: Iterable[OpSpec]) -> dict[str, tuple[np.ndarray, np.ndarray, list[set[float]]]]:
    """Per kernel family, the lowest and highest value of each `STRUCTURE_FEATURES` over `specs`, and
    the `HELD_STRUCTURE` values they hold."""
    seen: dict[str, list[np.ndarray]] = {}
    for s in specs:
        seen.setdefault(family(s), []).append(features(s)[_STRUCTURE_COLS])
    return {name: (np.min(v, axis=0), np.max(v, axis=0), [set(c) for c in np.asarray(v)[:, :HELD_STRUCTURE].T])
            for name, v in seen.items()}


def unseen_structure(spec: OpSpec, ranges: Mapping[str, tuple[np.ndarray, np.ndarray, list[set[float]]]]) -> bool:
    """Whether a `STRUCTURE_FEATURES` value of `spec` lies outside its family's `structure_ranges`, or
    a `HELD_STRUCTURE` value of it is one no row of the family has."""
    if family(spec) not in ranges:
        return False
    lo, hi, held = ranges[family(spec)]
    x = features(spec)[_STRUCTURE_COLS]
    return bool(np.any((x < lo - 1e-9) | (x > hi + 1e-9))) or any(v not in h for v, h in zip(x[:HELD_STRUCTURE], held))


@dataclass(frozen=True)
class KernelEstimate:
    """A regressed kernel latency: median estimate, log-space sigma, 90% band, extrapolation flag."""

    ms: float
    sigma: float
    low_ms: float
    high_ms: float
    extrapolated: bool
    family: str

    def of_new_kind(self) -> "KernelEstimate":
        """This estimate for a kernel of a kind its family's rows never held: an extrapolation, its
        sigma widened by `NEW_KIND_SIGMA` (unless it already is one)."""
        if self.extrapolated:
            return self
        sigma = math.hypot(self.sigma, NEW_KIND_SIGMA)
        band = math.exp(1.645 * sigma)
        return replace(self, sigma=sigma, low_ms=self.ms / band, high_ms=self.ms * band, extrapolated=True)


# ---- one tree, stored as arrays ----------------------------------------------------------
def _tree_arrays(tree) -> dict[str, np.ndarray]:
    t = tree.tree_
    return {"left": t.children_left.astype(np.int32), "right": t.children_right.astype(np.int32),
            "feature": t.feature.astype(np.int32), "threshold": t.threshold.astype(np.float64),
            "value": t.value[:, 0, 0].astype(np.float64)}


def _tree_predict(arr: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    node = np.zeros(len(X), dtype=np.int64)
    rows = np.arange(len(X))
    for _ in range(64):
        left = arr["left"][node]
        leaf = left < 0
        if leaf.all():
            break
        f = arr["feature"][node]
        go_left = X[rows, np.maximum(f, 0)] <= arr["threshold"][node]
        nxt = np.where(go_left, left, arr["right"][node])
        node = np.where(leaf, node, nxt)
    return arr["value"][node]


def _nnls_relative(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the relative error of A @ c against y."""
    from scipy.optimize import nnls

    scale = A.max(axis=0)
    scale[scale <= 0] = 1.0
    coef, _ = nnls((A / scale) / y[:, None], np.ones_like(y))
    coef = coef / scale
    if not np.any(coef > 0):
        coef = np.zeros(A.shape[1])
        coef[0] = float(np.median(y))
    return coef


class FamilyRegressor:
    """The regressor of one kernel family (see the module docstring)."""

    def __init__(self, name: str, n_members: int = 24, max_depth: int = 12, min_samples_leaf: int = 1, seed: int = 0):
        self.name = name
        self.n_members = n_members
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed

    def fit(self, specs: Sequence[OpSpec], ms: Sequence[float]) -> "FamilyRegressor":
        try:
            from sklearn.tree import DecisionTreeRegressor
        except ImportError as exc:
            raise RegressorError(f"fitting the kernel regressors needs scikit-learn ({exc}): pip install scikit-learn; "
                                 "or predict from the table's rows alone (hwlat predict --no-regressors)") from None
        y = np.asarray(ms, dtype=np.float64)
        if len(specs) == 0:
            raise RegressorError(f"no rows to fit the {self.name} regressor")
        X = np.stack([features(s) for s in specs])
        A = np.stack([cost_terms(s) for s in specs])
        rng = np.random.default_rng(self.seed)
        n = len(y)
        self.coefs_ = np.zeros((self.n_members, A.shape[1]))
        self.trees_: list[dict[str, np.ndarray] | None] = []
        for m in range(self.n_members):
            idx = rng.integers(0, n, n) if n > 1 else np.zeros(1, dtype=int)
            coef = _nnls_relative(A[idx], y[idx])
            self.coefs_[m] = coef
            resid = np.log(y[idx]) - np.log(np.maximum(A[idx] @ coef, 1e-9))
            if n >= 2 * self.min_samples_leaf:
                tree = DecisionTreeRegressor(max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                             random_state=int(rng.integers(1 << 30)))
                tree.fit(X[idx], resid)
                self.trees_.append(_tree_arrays(tree))
            else:
                self.trees_.append({"left": np.array([-1], np.int32), "right": np.array([-1], np.int32),
                                    "feature": np.array([-2], np.int32), "threshold": np.array([-2.0]),
                                    "value": np.array([float(resid.mean())])})
        names = list(FEATURE_NAMES)
        cols = [names.index(f) for f in RANGE_FEATURES]
        self.range_lo_ = X[:, cols].min(axis=0)
        self.range_hi_ = X[:, cols].max(axis=0)
        self.tails_seen_ = X[:, len(FEATURE_NAMES) - len(TAILS):].max(axis=0)
        log_pred = self._members(X, A).mean(axis=0)
        self.train_rmse_ = float(np.sqrt(np.mean((log_pred - np.log(y)) ** 2)))
        self.n_rows_ = n
        return self

    def _members(self, X: np.ndarray, A: np.ndarray | None = None) -> np.ndarray:
        """Log-latency of every member for every row: shape (members, rows). A row's numbers follow
        from that row alone (a matrix product would round them by the batch's size)."""
        if A is None:
            raise ValueError("cost terms needed")
        base = np.log(np.maximum((A[:, None, :] * self.coefs_[None, :, :]).sum(axis=2), 1e-9)).T
        return base + np.stack([_tree_predict(t, X) for t in self.trees_])

    def predict_log(self, specs: Sequence[OpSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean log-ms, sigma, extrapolated) per spec."""
        X = np.stack([features(s) for s in specs])
        A = np.stack([cost_terms(s) for s in specs])
        members = np.ascontiguousarray(self._members(X, A).T)  # rows x members: each row reduced alone
        mean = members.mean(axis=1)
        spread = members.std(axis=1)
        names = list(FEATURE_NAMES)
        cols = [names.index(f) for f in RANGE_FEATURES]
        Z = X[:, cols]
        outside = np.maximum(self.range_lo_ - Z, 0) + np.maximum(Z - self.range_hi_, 0)
        out_dist = outside.max(axis=1)
        new_tail = (X[:, len(FEATURE_NAMES) - len(TAILS):] > self.tails_seen_).any(axis=1)
        sigma = np.sqrt(spread ** 2 + NOISE_FLOOR ** 2 + (0.5 * out_dist) ** 2 + (NEW_KIND_SIGMA * new_tail) ** 2)
        sigma = np.where(self.n_rows_ < 3, np.maximum(sigma, 0.5), sigma)
        return mean, sigma, (out_dist > 1e-9) | new_tail

    def _members_for(self, specs: Sequence[OpSpec]) -> np.ndarray:
        X = np.stack([features(s) for s in specs])
        A = np.stack([cost_terms(s) for s in specs])
        return self._members(X, A)

    # ---- state --------------------------------------------------------------------------
    def state(self, prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"name": self.name, "n_members": self.n_members, "max_depth": self.max_depth,
                "min_samples_leaf": self.min_samples_leaf, "seed": self.seed, "n_rows": self.n_rows_,
                "train_rmse": self.train_rmse_}
        arrays = {f"{prefix}.coefs": self.coefs_, f"{prefix}.range_lo": self.range_lo_,
                  f"{prefix}.range_hi": self.range_hi_, f"{prefix}.tails_seen": self.tails_seen_}
        for i, t in enumerate(self.trees_):
            for k, v in t.items():
                arrays[f"{prefix}.tree{i}.{k}"] = v
        return meta, arrays

    @staticmethod
    def array_names(meta: dict, prefix: str) -> list[str]:
        """The names of the arrays `from_state` reads."""
        return [f"{prefix}.{k}" for k in ("coefs", "range_lo", "range_hi", "tails_seen")] + [
            f"{prefix}.tree{i}.{k}" for i in range(meta["n_members"]) for k in ("left", "right", "feature", "threshold", "value")]

    @classmethod
    def from_state(cls, meta: dict, arrays, prefix: str) -> "FamilyRegressor":
        r = cls(meta["name"], meta["n_members"], meta["max_depth"], meta["min_samples_leaf"], meta["seed"])
        r.coefs_ = arrays[f"{prefix}.coefs"]
        r.range_lo_ = arrays[f"{prefix}.range_lo"]
        r.range_hi_ = arrays[f"{prefix}.range_hi"]
        r.tails_seen_ = arrays[f"{prefix}.tails_seen"]
        r.trees_ = [{k: arrays[f"{prefix}.tree{i}.{k}"] for k in ("left", "right", "feature", "threshold", "value")}
                    for i in range(r.n_members)]
        r.n_rows_ = meta["n_rows"]
        r.train_rmse_ = meta["train_rmse"]
        return r


class KernelRegressors:
    """Regressors for every kernel family a table has rows of; scikit-learn style.

    ``fit(table)`` (or ``fit(specs, ms)``) returns self; ``predict(specs)`` gives ms;
    ``estimate(specs)`` gives `KernelEstimate`s with uncertainty; ``save``/``load`` use JSON + npz.
    """

    # `estimate` gives a spec the same numbers whatever else its batch holds (FamilyRegressor reduces
    # each row alone): a lookup-table predictor may estimate many specs at once and stay exact.
    rows_apart = True

    def __init__(self, n_members: int = 24, max_depth: int = 12, min_samples_leaf: int = 1, seed: int = 0):
        self.n_members = n_members
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed

    def fit(self, table_or_specs, ms: Sequence[float] | None = None, dtype: str | None = None) -> "KernelRegressors":
        """Fit from a `DeviceTable` (its ok rows) or from parallel lists of specs and latencies."""
        if ms is None:
            rows = [r for r in table_or_specs.rows("ok") if dtype is None or r.spec.dtype == dtype]
            specs = [r.spec for r in rows]
            ms = [r.measurement.median_ms for r in rows]
        else:
            specs = list(table_or_specs)
            ms = list(ms)
        if len(specs) != len(ms):
            raise ValueError("specs and ms differ in length")
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            groups.setdefault(family(s), []).append(i)
        self.families_: dict[str, FamilyRegressor] = {}
        for name, idx in sorted(groups.items()):
            self.families_[name] = FamilyRegressor(name, self.n_members, self.max_depth, self.min_samples_leaf,
                                                   self.seed).fit([specs[i] for i in idx], [ms[i] for i in idx])
        return self

    def covers(self, spec: OpSpec) -> bool:
        return family(spec) in self.families_

    def estimate(self, specs: Iterable[OpSpec]) -> list[KernelEstimate | None]:
        """A `KernelEstimate` per spec, or None for a family with no training rows."""
        specs = list(specs)
        out: list[KernelEstimate | None] = [None] * len(specs)
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            if self.covers(s):
                groups.setdefault(family(s), []).append(i)
        for name, idx in groups.items():
            mean, sigma, extra = self.families_[name].predict_log([specs[i] for i in idx])
            for j, i in enumerate(idx):
                ms = float(np.exp(mean[j]))
                band = float(np.exp(1.645 * sigma[j]))
                out[i] = KernelEstimate(ms, float(sigma[j]), ms / band, ms * band, bool(extra[j]), name)
        return out

    def predict(self, specs: Iterable[OpSpec]) -> np.ndarray:
        """Median latency in ms per spec (NaN where no regressor covers the family)."""
        return np.asarray([e.ms if e is not None else np.nan for e in self.estimate(specs)])

    def member_predictions(self, specs: Sequence[OpSpec]) -> np.ndarray:
        """Log-ms of every ensemble member (members, specs); NaN rows for uncovered families."""
        out = np.full((self.n_members, len(specs)), np.nan)
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(specs):
            if self.covers(s):
                groups.setdefault(family(s), []).append(i)
        for name, idx in groups.items():
            out[:, idx] = self.families_[name]._members_for([specs[i] for i in idx])
        return out

    def score(self, specs: Sequence[OpSpec], ms: Sequence[float]) -> dict[str, float]:
        """MAPE and share within 10% on held-out kernels."""
        pred = self.predict(specs)
        y = np.asarray(ms, dtype=np.float64)
        ok = np.isfinite(pred)
        rel = np.abs(pred[ok] - y[ok]) / y[ok]
        return {"mape": float(rel.mean()) if ok.any() else float("nan"),
                "acc10": float((rel <= 0.10).mean()) if ok.any() else float("nan"), "covered": float(ok.mean())}

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``PATH.json`` (settings, families) and ``PATH.npz`` (arrays); returns the stem."""
        stem = Path(path)
        if stem.suffix in (".json", ".npz"):
            stem = stem.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "feature_names": list(FEATURE_NAMES),
                "settings": {"n_members": self.n_members, "max_depth": self.max_depth,
                             "min_samples_leaf": self.min_samples_leaf, "seed": self.seed},
                "families": {}}
        arrays: dict[str, np.ndarray] = {}
        for name, reg in self.families_.items():
            m, a = reg.state(name)
            meta["families"][name] = m
            arrays.update(a)
        atomic_write(stem.with_name(stem.name + ".npz"), lambda f: np.savez_compressed(f, **arrays))
        stem.with_name(stem.name + ".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return stem

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KernelRegressors":
        stem = Path(path)
        if stem.suffix in (".json", ".npz"):
            stem = stem.with_suffix("")
        jpath, npath = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")
        if not jpath.exists() or not npath.exists():
            raise RegressorError(f"{stem}: kernel regressors are NAME.json + NAME.npz; one is missing")
        try:
            meta = json.loads(jpath.read_text())
        except json.JSONDecodeError as exc:
            raise RegressorError(f"{jpath}: not valid JSON ({exc.msg}); refit the regressors") from exc
        if meta.get("format") != FORMAT:
            raise RegressorError(f"{jpath}: not hwlat kernel regressors; refit them")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise OtherVersionRegressorsError(f"{jpath}: kernel regressors of a newer hwlat; refit them")
        if meta.get("feature_names") != list(FEATURE_NAMES):
            raise OtherVersionRegressorsError(f"{jpath}: written with other features (another hwlat version); refit the "
                                              "regressors from the table")
        self = cls(**meta["settings"])
        try:  # the file whole (1-1.5 MB): these regressors are what it holds now, whatever replaces it later
            data = npath.read_bytes()
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:  # the index only: arrays are read when used
                held = set(arrays.files)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:  # numpy reads a file that is no zip as a pickle
            why = exc if zipfile.is_zipfile(npath) else "not a zip archive of arrays: damaged, or another file"
            raise RegressorError(f"{npath}: not a readable npz file ({why}); refit the regressors") from exc
        lacking = [name for name, m in meta["families"].items() if not set(FamilyRegressor.array_names(m, name)) <= held]
        if lacking:
            raise RegressorError(f"{npath}: arrays of families {lacking} are missing; refit the regressors")
        self.families_ = _StoredFamilies(npath, data, meta["families"])
        return self


class _StoredFamilies(Mapping):
    """The families of stored regressors, each read when first asked for from the npz file's bytes (`data`,
    read whole when the regressors were loaded): a prediction reads the few families its kernels need
    (reading all 22 of a table took ~0.5 s), and the file replaced meanwhile (the table profiled again by
    another process) changes nothing here, in a pickled copy or in a forked process."""

    def __init__(self, npath: Path, data: bytes, metas: dict[str, dict]):
        self.npath, self.data, self.metas = npath, data, metas
        self.loaded: dict[str, FamilyRegressor] = {}
        # The open archive and the process that opened it: reading its index costs ~30 ms (thousands of
        # arrays), once; a forked process opens its own (its lock may have been held by another thread).
        self._arrays: tuple[int, object] | None = None

    def __getstate__(self) -> dict:
        """Pickled (joblib, a spawned worker) without the open archive, which does not pickle: the copy opens its own."""
        return {**self.__dict__, "_arrays": None}

    def __getitem__(self, name: str) -> FamilyRegressor:
        if name not in self.loaded:
            meta = self.metas[name]  # a KeyError for a family the file does not hold, as a dict gives
            try:
                if self._arrays is None or self._arrays[0] != os.getpid():
                    self._arrays = (os.getpid(), np.load(io.BytesIO(self.data), allow_pickle=False))
                self.loaded[name] = FamilyRegressor.from_state(meta, self._arrays[1], name)  # type: ignore[arg-type]
            except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # damaged inside the archive
                raise RegressorError(f"{self.npath}: the arrays of kernel family {name} cannot be read ({exc}); delete "
                                     f"the table's .regressors.json and .regressors.npz, and the next prediction or "
                                     f"`hwlat profile device` run fits them again") from exc
        return self.loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metas)

    def __len__(self) -> int:
        return len(self.metas)

    def __contains__(self, name: object) -> bool:
        return name in self.metas
