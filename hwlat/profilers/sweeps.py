"""Sweeps: the op configurations to profile, as user-editable YAML/JSON grids.

A sweep file holds ``name``, an optional ``dtype`` and a list ``ops`` of grid entries. Each entry
names an ``op`` and gives every field a value or a list of values; the grid is their product::

    name: example
    dtype: [float32, int8]
    ops:
      - {op: conv2d+bn+relu, c: [16, 32], hw: [32, 16], cout: same, kernel: [1, 3], stride: 1}
      - {op: linear, c: 64, cout: [10, 100]}

Fields: ``n`` (batch, default 1), ``c`` (input channels or features), ``hw`` (square input size;
``h``/``w`` for non-square), ``dtype``, and the op's attributes (see `hwlat.device_tables.ops.BASE_OPS`).
``cout: same`` means ``cout = c``; ``cout_mult`` scales ``c``. Configurations whose geometry is
impossible (e.g. kernel larger than the padded input) are dropped. Presets live beside this module.

Transformer ops take ``tokens`` (the sequence length) and ``heads`` (default 1); any field may say
``tokens`` for that value (``c: tokens``, a softmax over the keys). Without ``hw``/``h``/``w``,
rank-2 ops (linear, softmax, layernorm, gather) are (n x heads x tokens, c) and elementwise ops
(gelu, add, copy, ...) the token view (n x heads x tokens, c, 1, 1). A matmul is
(1, heads, tokens, c) @ (c, n) — its ``n`` is the attribute, its batch 1 (fold a batch into heads);
a transpose is (n, c, h, w) with its ``perm`` (``"0213"``, quoted in YAML).
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
from pathlib import Path
from typing import Any, Iterable

from hwlat.device_tables.errors import OpSpecError, SweepError
from hwlat.device_tables.ops import BASE_OPS, BOOL_ATTRS, DTYPES, INT_ATTRS, RANK2_OPS, OpSpec

PRESETS_DIR = Path(__file__).resolve().parent / "sweeps"
SHAPE_FIELDS = ("op", "n", "c", "hw", "h", "w", "dtype", "cout_mult", "tokens", "heads")
# Whole-number fields and the least value each may take: sizes and channels at least 1, and the
# op attributes as `hwlat.device_tables.ops.INT_ATTRS` says (a kernel or stride of 1 or more, padding 0 or more).
WHOLE_FIELDS = {"n": 1, "c": 1, "hw": 1, "h": 1, "w": 1, "tokens": 1, "heads": 1, **INT_ATTRS}


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_sweep(source: str | Path) -> list[OpSpec]:
    """A preset name or a sweep file path -> the unique op configurations, in file order."""
    path = Path(source)
    if not path.exists():
        if (PRESETS_DIR / f"{source}.yaml").exists():
            path = PRESETS_DIR / f"{source}.yaml"
        else:
            raise SweepError(f"sweep {str(source)!r}: no such file and no such preset (presets: {', '.join(presets())})")
    doc = _read(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("ops"), list):
        raise SweepError(f"{path}: a sweep needs a top-level 'ops' list of grid entries")
    unknown_top = set(doc) - {"name", "dtype", "ops", "description"}
    if unknown_top:
        raise SweepError(f"{path}: unknown top-level field(s) {sorted(unknown_top)}; allowed: name, description, dtype, ops")
    specs: dict[str, OpSpec] = {}
    for i, entry in enumerate(doc["ops"], start=1):
        where = f"{path}, ops entry {i}"
        if not isinstance(entry, dict) or "op" not in entry:
            raise SweepError(f"{where}: each entry is a mapping with an 'op' field")
        entry = {"dtype": doc.get("dtype", "float32"), **entry}
        for spec in expand(entry, where):
            specs.setdefault(spec.key, spec)
    if not specs:
        raise SweepError(f"{path}: the sweep expands to no valid op configuration")
    return list(specs.values())


def expand(entry: dict[str, Any], where: str = "sweep entry") -> Iterable[OpSpec]:
    """All valid `OpSpec`s of one grid entry."""
    ops = entry["op"] if isinstance(entry["op"], list) else [entry["op"]]
    for op in ops:
        base = str(op).split("+")[0]
        if base not in BASE_OPS:
            raise SweepError(f"{where}: unknown op {op!r}{_suggest(base, BASE_OPS)}")
        allowed = set(SHAPE_FIELDS) | set(BASE_OPS[base])
        for name in entry:
            if name not in allowed:
                raise SweepError(f"{where}: unknown field {name!r} for {op!r}{_suggest(name, allowed)}")
        fields = {k: (v if isinstance(v, list) else [v]) for k, v in entry.items() if k != "op"}
        for name, values in fields.items():
            if not values:  # an empty grid axis makes no configuration: the entry would vanish without a word
                raise SweepError(f"{where}: {name} is an empty list; give at least one value")
            for value in values:
                _check_value(name, value, where)
        names = list(fields)
        made, why = 0, None
        for combo in itertools.product(*(fields[k] for k in names)):
            values = dict(zip(names, combo))
            try:
                spec = _make(op, values, where)
            except OpSpecError as exc:
                why = why or exc
                continue  # impossible geometry in some cells of a grid is expected; skip them
            if spec is not None:
                made += 1
                yield spec
        if not made and why is not None:  # in no cell: a mistake in the entry, not the grid's geometry
            raise SweepError(f"{where}: {op!r} makes no valid configuration: {why}")


def _check_value(name: str, value: Any, where: str) -> None:
    """One value of a grid field, checked before any configuration is built: a `SweepError` naming
    the entry, the field and the value for a size, channel count or attribute that is not a whole
    number of its least value or more (kernel -3, stride 0, kernel 3.5), an unknown dtype, a
    boolean attribute that is not true/false or a cout_mult that is not a finite number above 0."""
    if name in WHOLE_FIELDS:
        if (name == "cout" and value == "same") or (value == "tokens" and name != "tokens"):
            return
        least = WHOLE_FIELDS[name]
        whole = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        if not whole or value < least:
            same = (" or 'same'" if name == "cout" else "") + (" or 'tokens'" if name != "tokens" else "")
            raise SweepError(f"{where}: {name} is {value!r}; needs a whole number of {least} or more{same}")
    elif name == "perm" and not (isinstance(value, str) and sorted(value) == list("0123")):
        raise SweepError(f'{where}: perm is {value!r}; needs a permutation of 0123 in quotes, like perm: "0213"')
    elif name in BOOL_ATTRS and not isinstance(value, bool):
        raise SweepError(f"{where}: {name} is {value!r}; needs true or false")
    elif name == "dtype" and value not in DTYPES:
        raise SweepError(f"{where}: dtype {value!r}; expected one of {', '.join(DTYPES)}")
    elif name == "cout_mult":
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value > 0):
            raise SweepError(f"{where}: cout_mult is {value!r}; needs a finite number above 0")


def _make(op: str, v: dict[str, Any], where: str = "sweep entry") -> OpSpec | None:
    base = op.split("+")[0]
    tokens = v.pop("tokens", None)
    if any(value == "tokens" for value in v.values()):
        if tokens is None:
            raise SweepError(f"{where}: a field of {op!r} says 'tokens' but the entry gives no 'tokens'")
        v = {k: tokens if value == "tokens" else value for k, value in v.items()}
    heads = int(v.pop("heads", 1))
    n = 1 if base == "matmul" else int(v.pop("n", 1))
    dtype = v.pop("dtype", "float32")
    if "c" not in v:
        raise SweepError(f"{where}: {op!r} needs 'c' (input channels or features)")
    c = int(v.pop("c"))
    hw = v.pop("hw", None)
    h, w = v.pop("h", hw), v.pop("w", hw)
    mult = v.pop("cout_mult", None)
    if v.get("cout") == "same":
        v["cout"] = c
    elif mult is not None:
        v["cout"] = int(round(c * float(mult)))
    if base == "matmul" and h is None and tokens is not None:
        shape: tuple[int, ...] = (1, heads, int(tokens), c)
    elif base in RANK2_OPS:
        shape = (n * heads * int(tokens or 1), c)
    elif h is None and w is None and tokens is not None:
        shape = (n * heads * int(tokens), c, 1, 1)
    else:
        if h is None or w is None:
            raise SweepError(f"{where}: {op!r} needs 'hw' (or 'h' and 'w'), or 'tokens'")
        shape = (n, c, int(h), int(w))
    if base == "conv2d" and int(v.get("groups", 1)) > 1 and c % int(v["groups"]):
        return None
    return OpSpec.make(op, shape, dtype=dtype, **v)


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(sorted(options))}"


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SweepError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except (json.JSONDecodeError, Exception) as exc:  # yaml.YAMLError without importing yaml eagerly
        raise SweepError(f"{path}: cannot parse ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from exc


def write_sweep(path: Path, specs: Iterable[OpSpec], name: str) -> None:
    """Write configurations as an explicit sweep (one entry per spec), e.g. ops of real networks."""
    import yaml

    entries = []
    for s in specs:
        if s.base == "matmul" and s.input_shape[0] != 1:
            raise SweepError(f"{s.key}: a sweep writes matmuls of batch 1; fold the batch into the heads")
        e: dict[str, Any] = {"op": s.op, "dtype": s.dtype, "n": s.input_shape[0], "c": s.input_shape[1]}
        if len(s.input_shape) == 4:
            if s.input_shape[2] == s.input_shape[3]:
                e["hw"] = s.input_shape[2]
            else:
                e["h"], e["w"] = s.input_shape[2], s.input_shape[3]
        e.update(dict(s.attrs))
        entries.append(e)
    path.write_text(yaml.safe_dump({"name": name, "ops": entries}, sort_keys=False, default_flow_style=None))
