"""Save and load predictors as plain arrays (``.npz``) + JSON, never pickles: a file written
today loads with any later numpy / scikit-learn (nn-Meter's pickled predictors did not).

``save(pred, "my_board")`` writes ``my_board.npz`` (learned arrays) and ``my_board.json``
(class, constructor parameters, learned scalars, format version); ``load("my_board")`` rebuilds
the object. Learned attributes are those ending in ``_``.
"""

from __future__ import annotations

import json
import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from device_tables.errors import HwlatError
from predictors.features import FeatureLayout

FORMAT = "hwlat.predictor"
FORMAT_VERSION = 1
# Learned numbers that describe a fit (its leave-one-out errors, a validation score) and never
# enter a prediction: NaN there means "not measured". Every other learned number must be finite.
DIAGNOSTICS = frozenset({"loo_rel_error_", "valid_spearman_", "encoder_r2_"})


class PredictorFileError(HwlatError):
    """A predictor file that is missing, malformed, or written by a newer hwlat."""


def _classes() -> dict[str, type]:
    from predictors.baselines import CostBaseline, EncodingRidge, NearestDevice
    from predictors.help import HelpTransfer
    from predictors.proxy import ProxyAdapter
    from predictors.transfer import TransferPredictor

    return {c.__name__: c for c in (TransferPredictor, ProxyAdapter, HelpTransfer, CostBaseline, NearestDevice, EncodingRidge)}


def paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(npz, json) paths from a stem or either file name."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def _jsonable(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return False


def save(pred, path: str | os.PathLike, info: dict | None = None) -> tuple[Path, Path]:
    """Write `pred`'s parameters and learned state; `info` (JSON) is stored alongside (e.g. a card)."""
    npz_path, json_path = paths(path)
    params: dict[str, Any] = {}
    for k, v in pred.get_params().items():
        if isinstance(v, FeatureLayout):
            params[k] = {"__layout__": v.to_json()}
        elif _jsonable(v):
            params[k] = list(v) if isinstance(v, tuple) else v
        else:
            raise PredictorFileError(f"cannot save parameter {k}={v!r} of {type(pred).__name__} as JSON")
    arrays: dict[str, np.ndarray] = {}
    learned: dict[str, Any] = {}
    for k, v in vars(pred).items():
        if not k.endswith("_") or k.startswith("_"):
            continue
        if isinstance(v, np.ndarray):
            arrays[k] = v
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, np.ndarray) for x in v):
            learned[k] = {"__arrays__": len(v)}
            for i, x in enumerate(v):
                arrays[f"{k}{i}"] = x
        elif isinstance(v, (np.floating, np.integer)):
            learned[k] = v.item()
        elif _jsonable(v):
            learned[k] = v
        else:
            raise PredictorFileError(f"cannot save learned attribute {k} ({type(v).__name__}) of {type(pred).__name__}")
    for k, a in arrays.items():
        if a.dtype == object:
            raise PredictorFileError(f"array {k} of {type(pred).__name__} holds Python objects; not saved")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "class": type(pred).__name__,
            "params": params, "learned": learned, "arrays": sorted(arrays), "info": info or {}}
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with open(npz_path, "wb") as f:
        np.savez_compressed(f, **arrays)
    json_path.write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")
    return npz_path, json_path


def read_info(path: str | os.PathLike) -> dict:
    """The JSON side of a saved predictor (class, parameters, info)."""
    _, json_path = paths(path)
    if not json_path.is_file():
        raise PredictorFileError(f"no predictor at {json_path}")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictorFileError(f"{json_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PredictorFileError(f"{json_path} is not an hwlat predictor file")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise PredictorFileError(f"{json_path} has format version {version!r}; this hwlat reads version "
                                 f"{', '.join(map(str, range(1, FORMAT_VERSION + 1)))}"
                                 + (": upgrade hwlat" if newer else ": restore the file or save the predictor again"))
    for key, kind in (("class", str), ("params", dict), ("learned", dict), ("arrays", list)):
        if not isinstance(meta.get(key), kind):
            raise PredictorFileError(f"{json_path}: entry {key!r} is missing or not a {kind.__name__}; restore the "
                                     "file or save the predictor again")
    return meta


def load(path: str | os.PathLike):
    """Rebuild a predictor written by `save`."""
    npz_path, _ = paths(path)
    meta = read_info(path)
    classes = _classes()
    cls = classes.get(meta["class"])
    if cls is None:
        raise PredictorFileError(f"{path}: unknown predictor class {meta['class']!r}; known: {', '.join(classes)}")
    try:
        params = {k: FeatureLayout.from_json(v["__layout__"]) if isinstance(v, dict) and "__layout__" in v
                  else (tuple(v) if isinstance(v, list) else v) for k, v in meta["params"].items()}
        pred = cls(**params)
    except (TypeError, ValueError, KeyError) as exc:
        raise PredictorFileError(f"{path}: the parameters of {meta['class']} do not build one ({exc})") from None
    layout = params.get("layout")
    if layout is not None and not isinstance(layout, FeatureLayout):
        raise PredictorFileError(f"{path}: parameter layout is {type(layout).__name__}, not a feature layout; "
                                 "save the predictor again")
    if not npz_path.is_file():
        raise PredictorFileError(f"{npz_path} is missing (a predictor is a .npz + .json pair)")
    arrays = _read_arrays(npz_path)
    for k in meta["arrays"]:
        if k not in arrays:
            raise PredictorFileError(f"{npz_path} lacks array {k}")
    _check_finite(npz_path, arrays, meta["learned"])
    _check_indices(npz_path, arrays)
    for k, v in meta["learned"].items():
        if isinstance(v, dict) and "__arrays__" in v:
            setattr(pred, k, [arrays.pop(f"{k}{i}") for i in range(v["__arrays__"])])
        else:
            setattr(pred, k, v)
    for k, a in arrays.items():
        if k.endswith("_"):
            setattr(pred, k, a)
    return pred


def _read_arrays(npz_path: Path) -> dict[str, np.ndarray]:
    """The arrays of a predictor's ``.npz``; a `PredictorFileError` for a truncated or foreign file."""
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error) as exc:
        # zlib: a flipped byte in compressed data; tokenize/SyntaxError: numpy parsing a corrupt array header
        raise PredictorFileError(f"{npz_path}: not a readable predictor array file ({exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); save the predictor again") from None


def _check_indices(npz_path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Column-index arrays (``*cols_``) hold whole numbers of 0 or more: a float array there (an edited
    file) would fail only when the predictor is first used."""
    for k, a in arrays.items():
        if k.endswith("cols_") and (a.dtype.kind not in "iu" or (a.size and a.min() < 0)):
            raise PredictorFileError(f"{npz_path}: array {k} holds column indices, but its values are "
                                     f"{a.dtype} {a.ravel()[:3].tolist()}...; fit and save the predictor again")


# Fitted weights of log-latency features are of order 1 to 1e3; a number beyond this overflows the
# first prediction or adaptation that uses it.
LARGEST_LEARNED = 1e100


def _check_finite(npz_path: Path, arrays: dict[str, np.ndarray], learned: dict[str, Any]) -> None:
    """Every learned number that enters a prediction is finite: a NaN or inf weight would predict NaN
    for every architecture without a word. `DIAGNOSTICS` (and the arrays a list of them is split
    into) may hold NaN."""
    for k, a in arrays.items():
        name = k.rstrip("0123456789")
        if name in DIAGNOSTICS or a.dtype.kind not in "biufc":
            continue
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise PredictorFileError(f"{npz_path}: array {k} holds {bad} NaN or infinite value(s) of {a.size}; "
                                     "the predictor cannot predict with it: fit and save it again")
        if a.dtype.kind in "fc" and a.size and np.abs(a).max() > LARGEST_LEARNED:
            raise PredictorFileError(f"{npz_path}: array {k} holds {np.abs(a).max():.3g}, no fitted weight of log "
                                     "latencies is that large (an edited or corrupt file?): fit and save it again")
    for k, v in learned.items():
        if k not in DIAGNOSTICS and isinstance(v, float) and not math.isfinite(v):
            raise PredictorFileError(f"{npz_path.with_suffix('.json')}: learned value {k} is {v}; the predictor "
                                     "cannot predict with it: fit and save it again")
