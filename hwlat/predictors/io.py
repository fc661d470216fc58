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
import types
import typing
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from hwlat.device_tables.errors import HwlatError
from hwlat.device_tables.files import stem
from hwlat.predictors.features import FeatureLayout

FORMAT = "hwlat.predictor"
FORMAT_VERSION = 1
# Learned numbers that describe a fit (its leave-one-out errors, a validation score) and never
# enter a prediction: NaN there means "not measured". Every other learned number must be finite.
DIAGNOSTICS = frozenset({"loo_rel_error_", "valid_spearman_", "encoder_r2_"})
# What to do about a damaged file (an adapted predictor is written by `hwlat adapt fit`).
REFIT = "fit and save the predictor again (`hwlat adapt fit`)"
# Entries of a file's "info" that hwlat reads, and their JSON kinds (others are kept as they are).
INFO_KINDS: dict[str, type | tuple[type, ...]] = {"space": str, "device": str, "measurements": str, "hwlat_version": str,
                                                  "n_measurements": int, "measured": dict, "reference_keys": list}


class PredictorFileError(HwlatError):
    """A predictor file that is missing, malformed, or written by a newer hwlat."""


def _classes() -> dict[str, type]:
    from hwlat.predictors.baselines import CostBaseline, EncodingRidge, NearestDevice
    from hwlat.predictors.help import HelpTransfer
    from hwlat.predictors.proxy import ProxyAdapter
    from hwlat.predictors.transfer import TransferPredictor

    return {c.__name__: c for c in (TransferPredictor, ProxyAdapter, HelpTransfer, CostBaseline, NearestDevice, EncodingRidge)}


def paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(npz, json) paths from a stem or either file name."""
    p = stem(path, PredictorFileError, "my_predictor")
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
        raise PredictorFileError(f"no predictor at {json_path} (a predictor is the NAME.json + NAME.npz that `hwlat adapt "
                                 "fit --out NAME` writes; give NAME, NAME.json or NAME.npz)")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictorFileError(f"{json_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        table = isinstance(meta, dict) and meta.get("schema") == "hwlat.device_table"
        raise PredictorFileError(f"{json_path} is not an hwlat predictor file" + (
            f"; it is a device table: give it as 'lut:{json_path.with_suffix('')}'" if table else ""))
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
    if meta.setdefault("info", {}) is None:
        meta["info"] = {}
    _check_kinds(json_path, "info", meta["info"], dict)
    for key, kind in INFO_KINDS.items():
        if meta["info"].get(key) is not None:
            _check_kinds(json_path, f"info.{key}", meta["info"][key], kind)
    for key, ms in (meta["info"].get("measured") or {}).items():  # architecture key -> measured ms
        _check_kinds(json_path, f"info.measured[{key!r}]", ms, (int, float))
    for i, name in enumerate(meta["arrays"]):
        _check_kinds(json_path, f"arrays[{i}]", name, str)
    return meta


def _check_kinds(json_path: Path, field: str, value: Any, kind: type | tuple[type, ...]) -> None:
    """A JSON entry of the expected kind (a bool is no number here), or one error naming it."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a number"}
        want = "a number" if set(kinds) == {int, float} else " or ".join(names.get(k, k.__name__) for k in kinds)
        raise PredictorFileError(f"{json_path}: {field} is {_brief(value)}, not {want}; {REFIT}")


def _brief(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load(path: str | os.PathLike):
    """Rebuild a predictor written by `save`: every entry of the file is checked for kind and shape
    first, so a damaged one is one `PredictorFileError` naming the file and the entry."""
    npz_path, json_path = paths(path)
    meta = read_info(path)
    classes = _classes()
    cls = classes.get(meta["class"])
    if cls is None:
        raise PredictorFileError(f"{path}: unknown predictor class {meta['class']!r}; known: {', '.join(classes)}")
    params = _params(json_path, cls, meta["params"])
    try:
        pred = cls(**params)
    except (TypeError, ValueError, KeyError) as exc:
        raise PredictorFileError(f"{path}: the parameters of {meta['class']} do not build one ({exc}); {REFIT}") from None
    if not npz_path.is_file():
        raise PredictorFileError(f"{npz_path} is missing (a predictor is a .npz + .json pair)")
    arrays = _read_arrays(npz_path)
    for k in meta["arrays"]:
        if k not in arrays:
            raise PredictorFileError(f"{npz_path} lacks array {k}; {REFIT}")
    for k, v in meta["learned"].items():
        if not k.endswith("_") or k.startswith("_"):  # what `save` writes; anything else would replace a method
            raise PredictorFileError(f"{json_path}: learned.{k} is not a learned attribute (those end in '_'); {REFIT}")
        if isinstance(v, dict) and "__arrays__" in v:
            n = v["__arrays__"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise PredictorFileError(f"{json_path}: learned.{k}.__arrays__ is {_brief(n)}, not a count of arrays; "
                                         + REFIT)
            for i in range(n):
                if f"{k}{i}" not in arrays:
                    raise PredictorFileError(f"{npz_path} lacks array {k}{i} (learned.{k} has {n}); {REFIT}")
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
    check = getattr(pred, "check_learned", None)
    if callable(check):
        from hwlat.predictors.base import LearnedStateError

        try:
            check()
        except LearnedStateError as exc:
            where = json_path if exc.name in meta["learned"] else npz_path
            raise PredictorFileError(f"{where}: {exc}; {REFIT}") from None
    return pred


def _params(json_path: Path, cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The constructor parameters of a file, each checked against the constructor's annotation (a
    layout, numbers, names, tuples of them: tuples are JSON lists)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not evaluate: nothing to check against
        hints = {}
    params: dict[str, Any] = {}
    for k, v in raw.items():
        hint = hints.get(k)
        if hint is FeatureLayout or isinstance(v, dict) and "__layout__" in v:
            if not (isinstance(v, dict) and "__layout__" in v):
                raise PredictorFileError(f"{json_path}: params.{k} is {_brief(v)}, not a feature layout; {REFIT}")
            params[k] = _layout(json_path, f"params.{k}.__layout__", v["__layout__"])
            continue
        if hint is not None and not _fits(v, hint):
            field = f"params.{k}"
            args = typing.get_args(hint)
            if isinstance(v, list) and typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
                i = next(i for i, x in enumerate(v) if not _fits(x, args[0]))  # name the element, not the list
                field, v, hint = f"{field}[{i}]", v[i], args[0]
            raise PredictorFileError(f"{json_path}: {field} is {_brief(v)}, not {_hint_name(hint)}; {REFIT}")
        params[k] = tuple(v) if isinstance(v, list) else v
    return params


def _fits(v: Any, hint: Any) -> bool:
    """Whether a JSON value fits a constructor annotation (int, float, str, bool, X | None, tuple[X, ...]);
    an annotation of another kind is not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(v, a) for a in args)
    if origin is tuple:
        if not isinstance(v, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(x, args[0]) for x in v)
        return len(args) == len(v) and all(_fits(x, a) for x, a in zip(v, args))
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if hint is str:
        return isinstance(v, str)
    return True


def _hint_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list of " + {int: "whole numbers", float: "finite numbers", str: "strings"}.get(args[0], "values")
        return f"a list of {len(args)} values"
    return {type(None): "null", bool: "true or false", int: "a whole number", float: "a finite number",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _layout(json_path: Path, field: str, d: Any) -> FeatureLayout:
    """A `FeatureLayout` from its JSON: column names, and groups of column indices within them."""
    def bad(what: str, value: Any, want: str) -> PredictorFileError:
        return PredictorFileError(f"{json_path}: {field}{what} is {_brief(value)}, not {want}; {REFIT}")

    if not isinstance(d, dict):
        raise bad("", d, "an object of column names and groups")
    names = d.get("names")
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise bad(".names", names, "a list of column names")
    for group in ("enc", "cost", "extra", "size", "live"):
        cols = d.get(group, [] if group != "enc" else None)
        if not isinstance(cols, list):
            raise bad(f".{group}", cols, "a list of column indices")
        for i, c in enumerate(cols):
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < len(names):
                raise bad(f".{group}[{i}]", c, f"a column index from 0 to {len(names) - 1}")
    if not isinstance(d.get("space", ""), str):
        raise bad(".space", d["space"], "a space name")
    meta = d.get("meta", {})
    if not isinstance(meta, dict):
        raise bad(".meta", meta, "an object")
    version = meta.get("features_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise bad(".meta.features_version", version, "a whole number")
    return FeatureLayout.from_json(d)


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
