"""torch modules of a `Net`'s transformer layers (`hwlat.nas.spaces.network`), computing what
`hwlat.nas.spaces.onnx_export` writes for them; any batch size (the NASWOT proxy scores a batch).
Imported by `net_to_torch` only, so torch stays a lazy import."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hwlat.nas.spaces.network import LN_EPS, Layer


def _param(arr) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(arr.copy()))


def _linear(w, b) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


class Tokens(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class Prepend(nn.Module):
    def __init__(self, layer: Layer):
        super().__init__()
        self.tokens = _param(layer.params["tokens"])

    def forward(self, x):
        return torch.cat([self.tokens.expand(x.shape[0], -1, -1), x], dim=1)


class Pos(nn.Module):
    """Adds rows 0..T-1 of the position table."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.table = _param(layer.params["table"])

    def forward(self, x):
        return x + self.table[: x.shape[1]]


class Embed(nn.Embedding):
    def __init__(self, layer: Layer):
        table = layer.params["table"]
        super().__init__(*table.shape, _weight=torch.from_numpy(table.copy()))


class LayerNorm(nn.LayerNorm):
    def __init__(self, layer: Layer):
        super().__init__(layer.in_shape[-1], eps=LN_EPS)
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(layer.params["ln_gamma"]))
            self.bias.copy_(torch.from_numpy(layer.params["ln_beta"]))


class Attention(nn.Module):
    """softmax(q k^T / sqrt(d) (+ causal mask)) v over heads, with the qkv and output projections."""

    def __init__(self, layer: Layer):
        super().__init__()
        a, p = layer.attrs, layer.params
        self.heads, self.head_dim, self.causal = a["heads"], a["head_dim"], a["causal"]
        self.qkv = _linear(p["Wqkv"], p["bqkv"])
        self.proj = _linear(p["Wo"], p["bo"])

    def forward(self, x):
        n, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        if self.causal:
            scores = scores + torch.triu(torch.full((t, t), -1e9, dtype=x.dtype), diagonal=1)
        ctx = scores.softmax(dim=-1) @ v
        return self.proj(ctx.transpose(1, 2).reshape(n, t, self.heads * self.head_dim))


class Select(nn.Module):
    def __init__(self, layer: Layer):
        super().__init__()
        self.index = layer.attrs["index"]

    def forward(self, x):
        return x[:, self.index]


class Unfold(nn.Module):
    """(N, C, H, W) -> (N * p^2, H*W / p^2, C), as timm's MobileViT block unfolds."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.p = layer.attrs["patch"]

    def forward(self, x):
        n, c, h, w = x.shape
        p, nh, nw = self.p, h // self.p, w // self.p
        x = x.reshape(n * c * nh, p, nw, p).transpose(1, 2)
        return x.reshape(n, c, nh * nw, p * p).transpose(1, 3).reshape(n * p * p, nh * nw, c)


class Fold(nn.Module):
    """The inverse of `Unfold`."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.p = layer.attrs["patch"]
        _, self.c, self.h, self.w = layer.out_shape

    def forward(self, x):
        p, c, nh, nw = self.p, self.c, self.h // self.p, self.w // self.p
        n = x.shape[0] // (p * p)
        x = x.reshape(n, p * p, nh * nw, c).transpose(1, 3).reshape(n * c * nh, nw, p, p)
        return x.transpose(1, 2).reshape(n, c, self.h, self.w)


class Div(nn.Module):
    def __init__(self, layer: Layer):
        super().__init__()
        self.by = layer.attrs["by"]

    def forward(self, x):
        return x / self.by


BUILDERS: dict[str, Callable[[Layer], nn.Module]] = {
    "tokens": lambda layer: Tokens(), "prepend": Prepend, "pos": Pos, "embed": Embed, "layernorm": LayerNorm,
    "attention": Attention, "select": Select, "unfold": Unfold, "fold": Fold, "div": Div,
}
