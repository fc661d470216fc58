"""`Net`: a network as an ordered list of layers with shapes and weights, built by a search space.

One description, three outputs: `to_graph` (the `OpSpec`s a runtime executes),
`hwlat.nas.spaces.onnx_export.net_to_onnx` and `hwlat.nas.spaces.torch_module.net_to_torch`; so the ONNX model,
the torch module and the op list cannot disagree. Weights are synthetic and deterministic (seeded
by the architecture key and the layer name, so a layer gets the same weights whatever else the
network holds): latency does not depend on their values, equality tests do.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from hwlat.device_tables.ops import OpSpec

BN_EPS = 1e-5
LN_EPS = 1e-5
# Activations; gelu is the erf form, gelu_tanh the tanh approximation (GPT-2's).
ACTS = ("relu", "hardswish", "hardsigmoid", "silu", "gelu", "gelu_tanh")
# Layer kinds: conv (with optional bn and activation), bn_act, act, avgpool, add, mul (x * s with
# s of shape N,C,1,1), gap (global average pool, keeps dims), flatten, linear (on the last axis,
# with an optional activation), shuffle (channel shuffle), zero (x * 0), concat (on channels), and
# the transformer kinds (`hwlat.nas.spaces.vit`, `hwlat.nas.transformers`): tokens (N,C,H,W -> N,HW,C), prepend
# (learned tokens before the others), pos (a learned position embedding added), embed (token ids ->
# vectors), layernorm, attention (multi-head self-attention with its input and output
# projections), select (one token), unfold / fold (MobileViT's patches <-> feature map), div.
KINDS = ("conv", "bn_act", "act", "avgpool", "add", "mul", "gap", "flatten", "linear", "shuffle", "zero", "concat",
         "tokens", "prepend", "pos", "embed", "layernorm", "attention", "select", "unfold", "fold", "div")


# How each parameter is drawn: (distribution, a, b); "fan_in": normal with std sqrt(1 / fan_in).
# Values are windows of two fixed random pools (building thousands of models must be cheap).
_INIT = {
    "W": ("fan_in", 0.0, 0.0), "b": ("uniform", -0.1, 0.1),
    "bn_gamma": ("uniform", 0.5, 1.5), "bn_beta": ("uniform", -0.2, 0.2),
    "bn_mean": ("uniform", -0.2, 0.2), "bn_var": ("uniform", 0.5, 1.5),
    "ln_gamma": ("uniform", 0.8, 1.2), "ln_beta": ("uniform", -0.1, 0.1),
    "Wqkv": ("fan_in", 0.0, 0.0), "bqkv": ("uniform", -0.1, 0.1), "Wo": ("fan_in", 0.0, 0.0), "bo": ("uniform", -0.1, 0.1),
    "table": ("normal", 0.5, 0.0), "tokens": ("normal", 0.5, 0.0),
}


@lru_cache(maxsize=1)
def _normal_pool() -> np.ndarray:
    return np.random.default_rng(20200101).standard_normal(1 << 21, dtype=np.float32)


@lru_cache(maxsize=1)
def _uniform_pool() -> np.ndarray:
    return np.random.default_rng(20200102).random(1 << 16, dtype=np.float32)


def _window(pool: np.ndarray, h: int, shape: tuple[int, ...]) -> np.ndarray:
    """A pseudo-random window of a fixed random pool: cheap, deterministic weights (a copy)."""
    size = math.prod(shape)
    if size >= len(pool):
        return np.resize(np.roll(pool, -(h % len(pool))), shape)
    off = h % (len(pool) - size)
    return pool[off: off + size].reshape(shape).copy()


@dataclass
class Layer:
    """One layer: its kind, input tensor names, output name (= layer name), shapes, attributes, and
    the shapes of its weights; the weights themselves are drawn on first use of `params`."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0
    _params: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """float32 weights, deterministic in (net seed, layer name)."""
        if self._params is None:
            base = zlib.crc32(self.name.encode(), self.seed & 0xFFFFFFFF)
            out = {}
            for key, shape in self.param_shapes.items():
                dist, a, b = _INIT[key]
                h = zlib.crc32(key.encode(), base)
                if dist == "fan_in":
                    out[key] = _window(_normal_pool(), h, shape) * np.float32(math.sqrt(1.0 / math.prod(shape[1:])))
                elif dist == "normal":
                    out[key] = _window(_normal_pool(), h, shape) * np.float32(a)
                else:
                    out[key] = (np.float32(a) + np.float32(b - a) * _window(_uniform_pool(), h, shape)).astype(np.float32)
            self._params = out
        return self._params

    def param_count(self, trainable: bool = True) -> int:
        """Number of weights (trainable: without batch-norm running statistics)."""
        skip = ("bn_mean", "bn_var") if trainable else ()
        return sum(math.prod(s) for k, s in self.param_shapes.items() if k not in skip)


class Net:
    """A feed-forward network under construction; builder methods return the output tensor name.
    Its input is float32 (an image), or int64 token ids (`input_dtype`)."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0, input_dtype: str = "float32"):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_dtype = input_dtype
        self.layers: list[Layer] = []
        self._shapes: dict[str, tuple[int, ...]] = {"input": self.input_shape}
        self.seed = int(seed)
        self.output = "input"

    # ---- building -----------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def _add(self, kind: str, name: str, inputs: tuple[str, ...], out_shape: tuple[int, ...],
             attrs: dict | None = None, params: dict | None = None) -> str:
        name = name or f"{kind}{len(self.layers)}"
        if name in self._shapes:
            raise ValueError(f"layer name {name!r} used twice")
        layer = Layer(kind, name, inputs, self._shapes[inputs[0]], tuple(out_shape), attrs or {}, params or {}, self.seed)
        self.layers.append(layer)
        self._shapes[name] = layer.out_shape
        self.output = name
        return name

    @staticmethod
    def _bn_shapes(c: int) -> dict[str, tuple[int, ...]]:
        return {k: (c,) for k in ("bn_gamma", "bn_beta", "bn_mean", "bn_var")}

    def conv(self, x: str, cout: int, kernel: int, stride: int = 1, groups: int = 1, bn: bool = True,
             act: str | None = None, bias: bool | None = None, padding: int | None = None, name: str = "") -> str:
        """Conv2d (+ BN) (+ activation); bias defaults to `not bn`; padding to kernel // 2."""
        n, cin, h, w = self._shapes[x]
        name = name or f"conv{len(self.layers)}"
        if act is not None and act not in ACTS:
            raise ValueError(f"unknown activation {act!r}")
        bias = (not bn) if bias is None else bias
        pad = kernel // 2 if padding is None else padding
        ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        params: dict[str, tuple[int, ...]] = {"W": (cout, cin // groups, kernel, kernel)}
        if bias:
            params["b"] = (cout,)
        if bn:
            params.update(self._bn_shapes(cout))
        attrs = {"cin": cin, "cout": cout, "kernel": kernel, "stride": stride, "padding": pad, "groups": groups,
                 "bias": bias, "bn": bn, "act": act}
        return self._add("conv", name, (x,), (n, cout, ho, wo), attrs, params)

    def bn_act(self, x: str, act: str | None, name: str = "") -> str:
        """A standalone batch-norm, optionally followed by an activation."""
        name = name or f"bn{len(self.layers)}"
        return self._add("bn_act", name, (x,), self._shapes[x], {"act": act}, self._bn_shapes(self._shapes[x][1]))

    def act(self, x: str, kind: str, name: str = "") -> str:
        if kind not in ACTS:
            raise ValueError(f"unknown activation {kind!r}")
        return self._add("act", name or f"{kind}{len(self.layers)}", (x,), self._shapes[x], {"act": kind})

    def avgpool(self, x: str, kernel: int, stride: int, padding: int = 0, count_include_pad: bool = False,
                name: str = "") -> str:
        n, c, h, w = self._shapes[x]
        ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        attrs = {"kernel": kernel, "stride": stride, "padding": padding, "count_include_pad": count_include_pad}
        return self._add("avgpool", name or f"pool{len(self.layers)}", (x,), (n, c, ho, wo), attrs)

    def add(self, a: str, b: str, name: str = "") -> str:
        if self._shapes[a] != self._shapes[b]:
            raise ValueError(f"add of shapes {self._shapes[a]} and {self._shapes[b]}")
        return self._add("add", name or f"add{len(self.layers)}", (a, b), self._shapes[a])

    def mul(self, x: str, s: str, name: str = "") -> str:
        return self._add("mul", name or f"mul{len(self.layers)}", (x, s), self._shapes[x])

    def gap(self, x: str, name: str = "") -> str:
        n, c, _, _ = self._shapes[x]
        return self._add("gap", name or f"gap{len(self.layers)}", (x,), (n, c, 1, 1))

    def flatten(self, x: str, name: str = "") -> str:
        s = self._shapes[x]
        return self._add("flatten", name or f"flatten{len(self.layers)}", (x,), (s[0], math.prod(s[1:])))

    def linear(self, x: str, cout: int, act: str | None = None, name: str = "") -> str:
        """A linear layer on the last axis (Gemm on (N, C), MatMul + Add on tokens), then `act`."""
        *lead, cin = self._shapes[x]
        name = name or f"linear{len(self.layers)}"
        params = {"W": (cout, cin), "b": (cout,)}
        if act is not None and act not in ACTS:
            raise ValueError(f"unknown activation {act!r}")
        return self._add("linear", name, (x,), (*lead, cout), {"cin": cin, "cout": cout, "act": act}, params)

    def shuffle(self, x: str, groups: int, name: str = "") -> str:
        return self._add("shuffle", name or f"shuffle{len(self.layers)}", (x,), self._shapes[x], {"groups": groups})

    def zero(self, x: str, name: str = "") -> str:
        return self._add("zero", name or f"zero{len(self.layers)}", (x,), self._shapes[x])

    def concat(self, a: str, b: str, name: str = "") -> str:
        """`a` and `b` joined on channels (axis 1)."""
        n, c, h, w = self._shapes[a]
        return self._add("concat", name or f"concat{len(self.layers)}", (a, b), (n, c + self._shapes[b][1], h, w))

    def div(self, x: str, by: float, name: str = "") -> str:
        return self._add("div", name or f"div{len(self.layers)}", (x,), self._shapes[x], {"by": float(by)})

    # ---- transformer layers ---------------------------------------------------------------
    def tokens(self, x: str, name: str = "") -> str:
        """A feature map (N, C, H, W) as tokens (N, H*W, C): flatten(2).transpose(1, 2)."""
        n, c, h, w = self._shapes[x]
        return self._add("tokens", name or f"tokens{len(self.layers)}", (x,), (n, h * w, c))

    def prepend(self, x: str, count: int, name: str = "") -> str:
        """`count` learned tokens (a class token, a distillation token) before the others."""
        n, t, c = self._shapes[x]
        return self._add("prepend", name, (x,), (n, t + count, c), {"count": count}, {"tokens": (1, count, c)})

    def pos(self, x: str, table: int | None = None, name: str = "") -> str:
        """A learned position embedding added: a (1, T, C) parameter, or rows 0..T-1 of a `table`
        of that many positions looked up (Gather) as BERT and GPT-2 do."""
        n, t, c = self._shapes[x]
        rows = t if table is None else table
        return self._add("pos", name, (x,), (n, t, c), {"gather": table is not None}, {"table": (rows, c)})

    def embed(self, x: str, vocab: int, dim: int, name: str = "") -> str:
        """Token ids (N, T) -> vectors (N, T, dim) from a `vocab` x `dim` table."""
        n, t = self._shapes[x]
        return self._add("embed", name, (x,), (n, t, dim), {"vocab": vocab}, {"table": (vocab, dim)})

    def layernorm(self, x: str, name: str = "") -> str:
        c = self._shapes[x][-1]
        return self._add("layernorm", name, (x,), self._shapes[x], {}, {"ln_gamma": (c,), "ln_beta": (c,)})

    def attention(self, x: str, heads: int, head_dim: int, qkv: str = "fused", causal: bool = False,
                  scale: str = "mul", name: str = "") -> str:
        """Multi-head self-attention on (N, T, C): q, k, v of heads x head_dim each, softmax(q k^T /
        sqrt(head_dim)) v, projected back to C. `qkv` says how the export writes the projections: one
        MatMul then a rank-5 Reshape/Transpose/Gather (``fused``, timm and AutoFormer), one MatMul then
        Split (``split``, GPT-2), or three MatMuls (``separate``, BERT); `scale` multiplies by
        1/sqrt(d) (``mul``) or divides by sqrt(d) (``div``); `causal` adds a constant mask."""
        if qkv not in ("fused", "split", "separate") or scale not in ("mul", "div"):
            raise ValueError(f"attention: unknown qkv={qkv!r} or scale={scale!r}")
        n, t, c = self._shapes[x]
        inner = heads * head_dim
        params = {"Wqkv": (3 * inner, c), "bqkv": (3 * inner,), "Wo": (c, inner), "bo": (c,)}
        attrs = {"heads": heads, "head_dim": head_dim, "qkv": qkv, "causal": causal, "scale": scale}
        return self._add("attention", name, (x,), (n, t, c), attrs, params)

    def select(self, x: str, index: int, name: str = "") -> str:
        """Token `index` of (N, T, C): (N, C), as ``x[:, index]`` (a Gather)."""
        n, _, c = self._shapes[x]
        return self._add("select", name, (x,), (n, c), {"index": index})

    def unfold(self, x: str, patch: int, name: str = "") -> str:
        """MobileViT's unfolding: (N, C, H, W) -> (N * patch^2, H*W / patch^2, C) (Reshape/Transpose)."""
        n, c, h, w = self._shapes[x]
        return self._add("unfold", name, (x,), (n * patch * patch, (h // patch) * (w // patch), c), {"patch": patch})

    def fold(self, x: str, like: tuple[int, int, int, int], patch: int, name: str = "") -> str:
        """The inverse of `unfold`: back to a feature map of shape `like`."""
        return self._add("fold", name, (x,), tuple(like), {"patch": patch})

    # ---- views --------------------------------------------------------------------------
    def consumers(self) -> dict[str, list[Layer]]:
        out: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for i in layer.inputs:
                out.setdefault(i, []).append(layer)
        return out

    def params(self) -> int:
        """Trainable parameters (conv/linear weights and biases, batch-norm scale and shift)."""
        return sum(layer.param_count() for layer in self.layers)

    def macs(self) -> int:
        """Multiply-accumulates of convolutions, linear layers and attention (its projections and its
        two matrix products)."""
        total = 0
        for layer in self.layers:
            if layer.kind == "conv":
                a = layer.attrs
                total += math.prod(layer.out_shape) * (a["cin"] // a["groups"]) * a["kernel"] ** 2
            elif layer.kind == "linear":
                total += math.prod(layer.out_shape[:-1]) * layer.attrs["cin"] * layer.attrs["cout"]
            elif layer.kind == "attention":
                n, t, c = layer.in_shape
                inner = layer.attrs["heads"] * layer.attrs["head_dim"]
                total += n * t * 4 * c * inner + 2 * n * t * t * inner  # projections; q k^T and p v
        return total

    def to_graph(self, dtype: str = "float32", fuse_add: bool = False, fold_bn: bool = False) -> list[OpSpec]:
        """The ops a runtime executes, in order: BN and activations fused into the conv before them
        (``conv2d+bn+relu``, the conv without bias); flatten omitted (a view); `fuse_add` folds an add
        into the conv producing its first input when that conv has no other consumer
        (``conv2d+bn+add``); `fold_bn` writes convs as the exported ONNX model has them, BN folded
        into a bias (``conv2d+relu`` with bias=true), as `hwlat.device_tables.graph` extracts them."""
        consumers = self.consumers()
        fused_into: dict[str, str] = {}  # add layer name -> conv layer name
        if fuse_add:
            by_name = {layer.name: layer for layer in self.layers}
            for layer in self.layers:
                if layer.kind != "add":
                    continue
                src = by_name.get(layer.inputs[0])
                if src is not None and src.kind == "conv" and src.attrs["act"] is None and len(consumers[src.name]) == 1:
                    fused_into[layer.name] = src.name
        fused_convs = set(fused_into.values())
        specs: list[OpSpec] = []
        for layer in self.layers:
            if layer.name in fused_into or layer.kind == "flatten":
                continue
            spec = _layer_spec(layer, dtype, fuse_add=layer.name in fused_convs, fold_bn=fold_bn)
            if spec is not None:
                specs.append(spec)
        return specs

    def summary(self) -> list[str]:
        """One line per layer: name, kind, shapes, attributes."""
        lines = []
        for layer in self.layers:
            attrs = ", ".join(f"{k}={v}" for k, v in layer.attrs.items() if v is not None and k not in ("cin",))
            shp = lambda s: "x".join(map(str, s))  # noqa: E731
            lines.append(f"{layer.name:<24} {layer.kind:<8} {shp(layer.in_shape):>14} -> {shp(layer.out_shape):<14} {attrs}")
        return lines


def conv_base(attrs: dict[str, Any]) -> str:
    """The `OpSpec` base op of a conv: dwconv2d (depthwise), pwconv2d (1x1, one group) or conv2d."""
    if attrs["groups"] > 1 and attrs["groups"] == attrs["cin"] == attrs["cout"]:
        return "dwconv2d"
    if attrs["kernel"] == 1 and attrs["groups"] == 1 and attrs["padding"] == 0:
        return "pwconv2d"
    return "conv2d"


def _layer_spec(layer: Layer, dtype: str, fuse_add: bool = False, fold_bn: bool = False) -> OpSpec | None:
    a, shape = layer.attrs, layer.in_shape
    if layer.kind == "conv":
        base = conv_base(a)
        bn = a["bn"] and not fold_bn
        bias = a["bias"] or (a["bn"] and fold_bn)
        parts = [base] + (["bn"] if bn else []) + (["add"] if fuse_add else []) + ([a["act"]] if a["act"] else [])
        op = "+".join(parts)
        if base == "dwconv2d":
            return OpSpec.make(op, shape, dtype, kernel=a["kernel"], stride=a["stride"], padding=a["padding"], bias=bias)
        if base == "pwconv2d":
            return OpSpec.make(op, shape, dtype, cout=a["cout"], stride=a["stride"], bias=bias)
        return OpSpec.make(op, shape, dtype, cout=a["cout"], kernel=a["kernel"], stride=a["stride"], padding=a["padding"],
                           groups=a["groups"], bias=bias)
    if layer.kind == "bn_act":
        return OpSpec.make("bn" + (f"+{a['act']}" if a["act"] else ""), shape, dtype)
    if layer.kind == "act":
        return OpSpec.make(a["act"], shape, dtype)
    if layer.kind == "avgpool":
        return OpSpec.make("avgpool", shape, dtype, kernel=a["kernel"], stride=a["stride"], padding=a["padding"],
                           count_include_pad=a["count_include_pad"])
    if layer.kind == "add":
        return OpSpec.make("add", shape, dtype)
    if layer.kind == "mul":
        return OpSpec.make("mul", shape, dtype)
    if layer.kind == "zero":
        return OpSpec.make("scale", shape, dtype)
    if layer.kind == "gap":
        return OpSpec.make("globalavgpool", shape, dtype)
    if layer.kind == "linear":
        return OpSpec.make("linear", shape, dtype, cout=a["cout"], bias=True)
    if layer.kind == "shuffle":
        return None  # a transpose: not in the op vocabulary (see hwlat/nas/spaces/README.md)
    raise ValueError(f"no op for layer kind {layer.kind!r}")
