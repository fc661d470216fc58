"""The op vocabulary: `OpSpec`, one operator configuration, the key of every table row.

An op type is a base op (``conv2d``) or a fused kernel written as its parts joined by ``+``
(``conv2d+bn+relu``, ``conv2d+add``, ``add+relu``): the kernels runtimes really execute.
Shapes are NCHW (or NF for ``linear``); the first part takes ``input_shape``.

Transformer ops: ``linear`` on tokens is NF with N = batch x tokens; ``softmax``, ``layernorm`` and
``gather`` are rank 2 (rows, the last axis); ``matmul`` multiplies two activations,
(B, H, M, K) @ (B, H, K, N); ``transpose`` permutes a rank-4 tensor (``perm=0213``); ``copy`` is a
data copy making a tensor of its shape (Slice, Split, Gather of activations, Concat of unequal
parts, Expand).
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hwlat.device_tables.errors import OpSpecError

DTYPES = ("float32", "int8")

# base op -> {attribute: default}; None means required.
BASE_OPS: dict[str, dict[str, Any]] = {
    "conv2d": {"cout": None, "kernel": None, "stride": 1, "padding": None, "dilation": 1, "groups": 1, "bias": True},
    "dwconv2d": {"kernel": None, "stride": 1, "padding": None, "dilation": 1, "bias": True},
    "pwconv2d": {"cout": None, "stride": 1, "bias": True},
    "linear": {"cout": None, "bias": True},
    "bn": {},
    "relu": {},
    "relu6": {},
    "hardswish": {},
    "hardsigmoid": {},
    "sigmoid": {},
    "silu": {},  # x * sigmoid(x) (swish), as in EfficientNet
    "avgpool": {"kernel": None, "stride": None, "padding": 0, "count_include_pad": False},
    "maxpool": {"kernel": None, "stride": None, "padding": 0},
    "globalavgpool": {},
    "add": {},
    "mul": {},  # x * s with s of shape (N, C, 1, 1): the squeeze-excite scale
    "scale": {},  # x * c with c a per-channel (or scalar) constant, e.g. NAS-Bench-201's zero op (x * 0)
    "concat": {"parts": 2},  # `parts` equal inputs joined on channels
    "gelu": {"tanh": False},  # erf form, or the tanh approximation
    "matmul": {"n": None},  # (B, H, M, K) @ (B, H, K, N), both activations (attention's QK^T and AV)
    "softmax": {},  # (rows, cols), over cols
    "layernorm": {},  # (rows, cols), over cols, with scale and bias
    "transpose": {"perm": None},  # rank 4, perm spelled as 4 digits: 0213
    "copy": {},  # a copy making a tensor of this shape
    "gather": {"vocab": None},  # embedding lookup: (tokens, dim) rows of a vocab x dim table
}
# Integer attributes and the least value each may take; the rest are booleans.
INT_ATTRS = {"cout": 1, "kernel": 1, "stride": 1, "dilation": 1, "groups": 1, "parts": 1, "padding": 0, "n": 1,
             "vocab": 1}
BOOL_ATTRS = ("bias", "count_include_pad", "tanh")
RANK2_OPS = ("linear", "softmax", "layernorm", "gather")
CONV_OPS = ("conv2d", "dwconv2d", "pwconv2d")
ACTIVATIONS = ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu")
# Ops that may follow the first part of a fused kernel (``add+layernorm``: a skip layer norm).
FUSABLE_TAILS = ("bn", "add") + ACTIVATIONS + ("layernorm",)


def _whole(value: Any, what: str) -> int:
    """`value` as an int where it is a whole number (an integral float such as 3.0 counts), else
    an `OpSpecError` saying `what` holds it: a kernel of 3.5 is a typo, never a kernel of 3."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    raise OpSpecError(f"{what}: {value!r} is not a whole number")


def _checked_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """The given attributes with integer ones as ints of at least their least value (a kernel or a
    stride of at least 1, a padding of 0 or more) and booleans as bools; else an `OpSpecError`."""
    out = dict(attrs)
    for k, v in attrs.items():
        if v is None:
            continue
        if k in INT_ATTRS:
            out[k] = n = _whole(v, f"{op!r} {k}")
            if n < INT_ATTRS[k]:
                raise OpSpecError(f"{op!r} {k}={n}: needs {INT_ATTRS[k]} or more")
        elif k in BOOL_ATTRS:
            if not (isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", "") == "b"):
                raise OpSpecError(f"{op!r} {k}={v!r}: needs true or false")
            out[k] = bool(v)
    return out


def _perm(value: Any, op: str) -> str:
    """A rank-4 permutation as its 4 digits ("0213"); an int (a key read back, 213) regains its zero."""
    text = str(value).zfill(4) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else str(value)
    if sorted(text) != list("0123"):
        raise OpSpecError(f"{op!r} perm={value!r}: needs a permutation of 0123, like 0213")
    return text


def _default_padding(kernel: int, dilation: int = 1) -> int:
    return (dilation * (kernel - 1)) // 2


@dataclass(frozen=True)
class OpSpec:
    """One operator configuration: op type, attributes, input shape and dtype. Hashable."""

    op: str
    input_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    dtype: str = "float32"
    _attrs_dict: dict = field(default=None, init=False, repr=False, compare=False, hash=False)
    _key: str = field(default=None, init=False, repr=False, compare=False, hash=False)
    # Derived values computed once (output shape, weight count): a predictor reads them per kernel
    # of every network it prices.
    _derived: dict = field(default=None, init=False, repr=False, compare=False, hash=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def make(cls, op: str, input_shape: Iterable[int], dtype: str = "float32", **attrs: Any) -> "OpSpec":
        """Build and validate a spec, filling defaults (padding defaults to 'same' for odd kernels)."""
        parts = op.split("+")
        base = parts[0]
        if base not in BASE_OPS:
            raise OpSpecError(f"unknown op type {base!r} in {op!r}; known: {', '.join(BASE_OPS)}")
        for tail in parts[1:]:
            if tail not in FUSABLE_TAILS:
                raise OpSpecError(f"{tail!r} cannot be fused after {base!r} in {op!r}; fusable: {', '.join(FUSABLE_TAILS)}")
        if dtype not in DTYPES:
            raise OpSpecError(f"unknown dtype {dtype!r} for {op!r}; expected one of {', '.join(DTYPES)}")
        shape = tuple(_whole(s, f"input shape {tuple(input_shape)!r} of {op!r}") for s in input_shape)
        if any(s <= 0 for s in shape):
            raise OpSpecError(f"input shape {shape} of {op!r} has a non-positive dimension")
        want_rank = 2 if base in RANK2_OPS else 4
        if len(shape) != want_rank:
            raise OpSpecError(f"{op!r} expects a rank-{want_rank} input shape, got {shape}")
        spec_attrs = dict(BASE_OPS[base])
        unknown = set(attrs) - set(spec_attrs)
        if unknown:
            raise OpSpecError(f"unknown attribute(s) {sorted(unknown)} for {base!r}; known: {sorted(spec_attrs)}")
        spec_attrs.update(_checked_attrs(op, attrs))
        if base == "transpose":
            spec_attrs["perm"] = _perm(spec_attrs["perm"], op)
        if "padding" in spec_attrs and spec_attrs["padding"] is None and "kernel" in spec_attrs:
            if spec_attrs.get("kernel") is not None:
                spec_attrs["padding"] = _default_padding(int(spec_attrs["kernel"]), int(spec_attrs.get("dilation", 1)))
        if base in ("avgpool", "maxpool") and spec_attrs.get("stride") is None:
            spec_attrs["stride"] = spec_attrs.get("kernel")
        missing = [k for k, v in spec_attrs.items() if v is None]
        if missing:
            raise OpSpecError(f"{op!r} needs attribute(s) {missing}")
        if base == "conv2d":
            cin, groups = shape[1], int(spec_attrs["groups"])
            if cin % groups or int(spec_attrs["cout"]) % groups:
                raise OpSpecError(f"{op!r}: groups={groups} must divide cin={cin} and cout={spec_attrs['cout']}")
        spec = cls(op=op, input_shape=shape, attrs=tuple(sorted(spec_attrs.items())), dtype=dtype)
        out = spec.output_shape  # validates geometry
        if any(s <= 0 for s in out):
            raise OpSpecError(f"{spec.key}: output shape {out} is empty; check kernel, stride and padding")
        return spec

    # ---- views --------------------------------------------------------------------------
    @property
    def a(self) -> dict[str, Any]:
        """Attributes as a dict."""
        if self._attrs_dict is None:
            object.__setattr__(self, "_attrs_dict", dict(self.attrs))
        return self._attrs_dict

    @property
    def parts(self) -> list[str]:
        return self.op.split("+")

    @property
    def base(self) -> str:
        return self._once("base", lambda: self.op.split("+", 1)[0])

    def _once(self, name: str, compute: Any) -> Any:
        """`compute()` the first time `name` is asked for, then the stored value (the spec is frozen)."""
        d = self._derived
        if d is None:
            d = {}
            object.__setattr__(self, "_derived", d)
        if name not in d:
            d[name] = compute()
        return d[name]

    @property
    def is_fused(self) -> bool:
        return "+" in self.op

    @property
    def key(self) -> str:
        """Stable string key: ``op|dtype|NxCxHxW|k=v,...`` (attributes sorted); computed once."""
        if self._key is None:
            shape = "x".join(str(s) for s in self.input_shape)
            attrs = ",".join(f"{k}={_fmt(v)}" for k, v in self.attrs)
            object.__setattr__(self, "_key", f"{self.op}|{self.dtype}|{shape}|{attrs}")
        return self._key

    def __str__(self) -> str:
        return self.key

    @classmethod
    def from_key(cls, key: str) -> "OpSpec":
        try:
            op, dtype, shape, attrs = key.split("|")
            dims = [int(s) for s in shape.split("x")]
            kv = {}
            for item in filter(None, attrs.split(",")):
                k, v = item.split("=", 1)
                kv[k] = _parse(v)
        except ValueError as exc:
            raise OpSpecError(f"malformed op key {key!r}; expected op|dtype|NxCxHxW|k=v,...") from exc
        spec = cls.make(op, dims, dtype=dtype, **kv)
        if spec.key != key:
            raise OpSpecError(f"op key {key!r} is not canonical (canonical form: {spec.key!r})")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "dtype": self.dtype, "input_shape": list(self.input_shape), "attrs": dict(self.attrs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OpSpec":
        try:
            return cls.make(d["op"], d["input_shape"], dtype=d.get("dtype", "float32"), **dict(d.get("attrs", {})))
        except KeyError as exc:
            raise OpSpecError(f"op entry {dict(d)!r} lacks field {exc.args[0]!r}") from exc

    def replace(self, **changes: Any) -> "OpSpec":
        """A copy with other op/input_shape/dtype/attributes."""
        op = changes.pop("op", self.op)
        shape = changes.pop("input_shape", self.input_shape)
        dtype = changes.pop("dtype", self.dtype)
        attrs = {**self.a, **changes}
        if op.split("+")[0] != self.base:
            attrs = {k: v for k, v in attrs.items() if k in BASE_OPS[op.split("+")[0]]}
        return OpSpec.make(op, shape, dtype=dtype, **attrs)

    # ---- shapes and costs ---------------------------------------------------------------
    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of every input tensor the kernel reads (activations only, not weights)."""
        shapes = [self.input_shape]
        base = self.base
        if base == "matmul":
            shapes.append(self.input_shape[:2] + (self.input_shape[3], int(self.a["n"])))
        elif base == "add":
            shapes.append(self.input_shape)
        elif base == "mul":
            shapes.append(self.input_shape[:2] + (1, 1))
        elif base == "concat":
            shapes.extend([self.input_shape] * (int(self.a["parts"]) - 1))
        if "add" in self.parts[1:]:
            shapes.append(self.output_shape)
        return shapes

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._once("output_shape", self._output_shape)

    def _output_shape(self) -> tuple[int, ...]:
        a, s, base = self.a, self.input_shape, self.base
        if base == "linear":
            return (s[0], int(a["cout"]))
        if base in RANK2_OPS:
            return s
        if base == "matmul":
            return s[:3] + (int(a["n"]),)
        if base == "transpose":
            return tuple(s[int(i)] for i in a["perm"])
        n, c, h, w = s
        if base in CONV_OPS or base in ("avgpool", "maxpool"):
            k = 1 if base == "pwconv2d" else int(a["kernel"])
            d = int(a.get("dilation", 1))
            p = int(a.get("padding", 0))
            st = int(a["stride"])
            ho = (h + 2 * p - d * (k - 1) - 1) // st + 1
            wo = (w + 2 * p - d * (k - 1) - 1) // st + 1
            cout = c if base in ("dwconv2d", "avgpool", "maxpool") else int(a["cout"])
            return (n, cout, ho, wo)
        if base == "globalavgpool":
            return (n, c, 1, 1)
        if base == "concat":
            return (n, c * int(a["parts"]), h, w)
        return s

    @property
    def weight_count(self) -> int:
        """Parameters read by the kernel (weights, bias, batchnorm statistics)."""
        return self._once("weight_count", self._weight_count)

    def _weight_count(self) -> int:
        a, base = self.a, self.base
        cin = self.input_shape[1]
        count = 0
        if base == "conv2d":
            k = int(a["kernel"])
            count = int(a["cout"]) * (cin // int(a["groups"])) * k * k + (int(a["cout"]) if a["bias"] else 0)
        elif base == "dwconv2d":
            k = int(a["kernel"])
            count = cin * k * k + (cin if a["bias"] else 0)
        elif base == "pwconv2d":
            count = int(a["cout"]) * cin + (int(a["cout"]) if a["bias"] else 0)
        elif base == "linear":
            count = int(a["cout"]) * cin + (int(a["cout"]) if a["bias"] else 0)
        elif base == "bn":
            count = 4 * cin
        elif base == "layernorm":
            count = 2 * self.input_shape[1]
        elif base == "scale":
            count = cin
        if "bn" in self.parts[1:]:
            count += 4 * self.output_shape[1]
        return count

    @property
    def macs(self) -> int:
        """Multiply-accumulates (elementwise ops count one per output element)."""
        a, base = self.a, self.base
        out = self.output_shape
        n_out = math.prod(out)
        if base == "conv2d":
            k = int(a["kernel"])
            macs = n_out * (self.input_shape[1] // int(a["groups"])) * k * k
        elif base == "dwconv2d":
            k = int(a["kernel"])
            macs = n_out * k * k
        elif base == "pwconv2d":
            macs = n_out * self.input_shape[1]
        elif base == "linear":
            macs = n_out * self.input_shape[1]
        elif base == "matmul":
            macs = n_out * self.input_shape[3]
        elif base in ("avgpool", "maxpool"):
            k = int(a["kernel"])
            macs = n_out * k * k
        elif base == "globalavgpool":
            macs = math.prod(self.input_shape)
        else:
            macs = n_out
        return macs + n_out * (len(self.parts) - 1)

    @property
    def bytes_moved(self) -> int:
        """Bytes read and written once: activations in and out plus weights."""
        acts = sum(math.prod(s) for s in self.input_shapes) + math.prod(self.output_shape)
        return self.element_bytes * (acts + self.weight_count)

    @property
    def element_bytes(self) -> int:
        """Bytes of one tensor element: 1 for int8, 4 for float32."""
        return 1 if self.dtype == "int8" else 4


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _parse(v: str) -> Any:
    if v in ("true", "false"):
        return v == "true"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def attrs_json(spec: OpSpec) -> str:
    return json.dumps(dict(spec.attrs), sort_keys=True)
