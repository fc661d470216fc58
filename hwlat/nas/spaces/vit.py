"""A ViT space in the style of AutoFormer-Tiny (Chen et al., ICCV 2021, "AutoFormer: Searching
Transformers for Visual Recognition", Table 1): embedding dim {192, 216, 240}, depth {12, 13, 14},
per-layer heads {3, 4} and MLP ratio {3.5, 4.0}.

Network (AutoFormer's supernet with one subnet chosen, ImageNet, 1000 classes): 224x224 input,
patch embedding conv16x16/s16 to E channels, 196 tokens + a class token, a learned position
embedding; `depth` pre-norm blocks x + Attn(LN(x)), x + MLP(LN(x)), attention with h heads of 64
dims each (AutoFormer's q/k/v width is 64 h, whatever E) and q/k/v from one linear layer, MLP
E -> r E -> E with GELU (erf); a final LayerNorm, the class token, a linear head. Layers beyond the
depth are dropped.

Key (``vit_arch``): ``e<E>-d<depth>-h<heads>-m<2 x MLP ratio>``, one digit per layer for heads and
MLP ratio (``m`` digits are twice the ratio: 7 = 3.5, 8 = 4.0), e.g. ``e192-d12-h343434343434-m787878787878``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hwlat.device_tables.archtable import ArchKeys
from hwlat.nas.spaces.base import ArchError, Space, as_rng, key_seed

if TYPE_CHECKING:
    from hwlat.nas.choices import Decisions

EMBED_DIMS = (192, 216, 240)
DEPTHS = (12, 13, 14)
HEADS = (3, 4)
MLP_RATIOS = (3.5, 4.0)
MAX_DEPTH = max(DEPTHS)
HEAD_DIM = 64
RESOLUTION = 224
PATCH = 16
NUM_CLASSES = 1000
KEY_FORM = ("e<192|216|240>-d<12|13|14>-h<a digit 3|4 per layer>-m<a digit 7|8 per layer: twice the MLP ratio>, "
            "e.g. e192-d12-h343434343434-m787878787878")
_KEY = re.compile(r"^e(\d+)-d(\d+)-h(\d+)-m(\d+)$")


@dataclass(frozen=True)
class ViTArch:
    """Embedding dim, and the heads and MLP ratio of each layer (their count is the depth)."""

    embed: int
    heads: tuple[int, ...]
    ratios: tuple[float, ...]

    @property
    def depth(self) -> int:
        return len(self.heads)

    @property
    def key(self) -> str:
        return (f"e{self.embed}-d{self.depth}-h{''.join(map(str, self.heads))}"
                f"-m{''.join(str(int(2 * r)) for r in self.ratios)}")

    def __str__(self) -> str:
        return self.key


class ViTSpace(Space):
    """AutoFormer-Tiny-style ViT (ImageNet, 224x224, patch 16).

    `encode` (62 values): one-hot embedding dim (3) and depth (3); per layer slot (14) one-hot
    heads (2) and MLP ratio (2), all zero for slots beyond the depth.
    """

    name = "vit"
    family = "transformer"
    arch_keys = ArchKeys("vit", columns=("vit_arch",), primary="vit_arch")
    key_columns = arch_keys.columns
    key_column = arch_keys.primary
    # embed dims x (heads x ratios)^depth summed over depths
    size = len(EMBED_DIMS) * sum((len(HEADS) * len(MLP_RATIOS)) ** d for d in DEPTHS)
    num_classes = NUM_CLASSES

    def is_arch(self, obj: Any) -> bool:
        return isinstance(obj, ViTArch)

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[ViTArch]:
        """Uniform choices: embedding dim, depth, and heads and MLP ratio of every layer slot."""
        rng = as_rng(seed)
        out = []
        for _ in range(n):
            e = int(rng.choice(EMBED_DIMS))
            d = int(rng.choice(DEPTHS))
            heads = tuple(int(h) for h in rng.choice(HEADS, MAX_DEPTH))
            ratios = tuple(float(r) for r in rng.choice(MLP_RATIOS, MAX_DEPTH))
            out.append(ViTArch(e, heads[:d], ratios[:d]))
        return out

    def mutate(self, arch: Any, rng: np.random.Generator | int | None = None) -> ViTArch:
        """Change the embedding dim, the depth (new layers drawn), or one layer's heads or MLP ratio."""
        rng = as_rng(rng)
        a = self.as_arch(arch)
        heads, ratios, embed = list(a.heads), list(a.ratios), a.embed
        other = lambda choices, v: choices[int(rng.choice([i for i, c in enumerate(choices) if c != v]))]  # noqa: E731
        what = int(rng.integers(4))
        if what == 0:
            embed = other(EMBED_DIMS, embed)
        elif what == 1:
            d = other(DEPTHS, a.depth)
            heads = (heads + [int(h) for h in rng.choice(HEADS, MAX_DEPTH)])[:d]
            ratios = (ratios + [float(r) for r in rng.choice(MLP_RATIOS, MAX_DEPTH)])[:d]
        else:
            i = int(rng.integers(a.depth))
            if what == 2:
                heads[i] = other(HEADS, heads[i])
            else:
                ratios[i] = other(MLP_RATIOS, ratios[i])
        return ViTArch(embed, tuple(heads), tuple(ratios))

    def key(self, arch: Any) -> str:
        return self.as_arch(arch).key

    def parse(self, key: Any) -> ViTArch:
        """The ``vit_arch`` string, or a dict: AutoFormer's subnet config (``embed_dim``, ``num_heads``,
        ``mlp_ratio``, each a list per layer or one value, and ``layer_num``)."""
        if isinstance(key, ViTArch):
            return key
        if isinstance(key, dict):
            return self._from_config(key)
        if not isinstance(key, str):
            raise ArchError(f"cannot read a ViT arch from {type(key).__name__} {key!r}; expected {KEY_FORM}")
        text = key.strip()
        m = _KEY.match(text)
        if not m:
            raise ArchError(f"malformed ViT arch {text!r}; expected {KEY_FORM}")
        embed, depth = int(m.group(1)), int(m.group(2))
        heads = tuple(int(c) for c in m.group(3))
        ratios = tuple(int(c) / 2 for c in m.group(4))
        return self._checked(embed, depth, heads, ratios, f"malformed ViT arch {text!r}")

    def _from_config(self, cfg: dict) -> ViTArch:
        try:
            depth = int(cfg["layer_num"])
            per_layer = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * depth  # noqa: E731
            embeds = {int(e) for e in per_layer(cfg["embed_dim"])}
            heads = tuple(int(h) for h in per_layer(cfg["num_heads"]))[:depth]
            ratios = tuple(float(r) for r in per_layer(cfg["mlp_ratio"]))[:depth]
        except KeyError as exc:
            raise ArchError(f"ViT arch config lacks {exc.args[0]!r}; expected embed_dim, num_heads, mlp_ratio, "
                            "layer_num (AutoFormer's subnet config)") from None
        if len(embeds) != 1:
            raise ArchError(f"ViT arch config: one embed_dim for every layer, got {sorted(embeds)}")
        return self._checked(embeds.pop(), depth, heads, ratios, f"ViT arch config {cfg!r}")

    @staticmethod
    def _checked(embed: int, depth: int, heads: tuple[int, ...], ratios: tuple[float, ...], what: str) -> ViTArch:
        if embed not in EMBED_DIMS:
            raise ArchError(f"{what}: embedding dim {embed} not in {list(EMBED_DIMS)}")
        if depth not in DEPTHS:
            raise ArchError(f"{what}: depth {depth} not in {list(DEPTHS)}")
        if len(heads) != depth or len(ratios) != depth:
            raise ArchError(f"{what}: {len(heads)} heads and {len(ratios)} MLP ratios for depth {depth} "
                            f"(one each per layer; form: {KEY_FORM})")
        if set(heads) - set(HEADS) or set(ratios) - set(MLP_RATIOS):
            raise ArchError(f"{what}: heads must be in {list(HEADS)} and MLP ratios in {list(MLP_RATIOS)} "
                            f"(m digits {[int(2 * r) for r in MLP_RATIOS]})")
        return ViTArch(embed, heads, ratios)

    # ---- encodings and features -------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        names = [f"e{e}" for e in EMBED_DIMS] + [f"d{d}" for d in DEPTHS]
        for i in range(MAX_DEPTH):
            names += [f"l{i}_h{h}" for h in HEADS] + [f"l{i}_m{r:g}" for r in MLP_RATIOS]
        return names

    def encode_one(self, arch: ViTArch) -> np.ndarray:
        per = len(HEADS) + len(MLP_RATIOS)
        v = np.zeros(len(EMBED_DIMS) + len(DEPTHS) + MAX_DEPTH * per, dtype=np.float32)
        v[EMBED_DIMS.index(arch.embed)] = 1.0
        v[len(EMBED_DIMS) + DEPTHS.index(arch.depth)] = 1.0
        base = len(EMBED_DIMS) + len(DEPTHS)
        for i, (h, r) in enumerate(zip(arch.heads, arch.ratios)):
            v[base + i * per + HEADS.index(h)] = 1.0
            v[base + i * per + len(HEADS) + MLP_RATIOS.index(r)] = 1.0
        return v

    def latency_feature_groups(self, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
        return _latency_feature_groups(self, enc)

    def decisions(self) -> Decisions:
        return _decisions(self)

    # ---- building -----------------------------------------------------------------------
    def network(self, arch: Any, batch: int = 1):
        from hwlat.nas.spaces.network import Net

        arch = self.as_arch(arch)
        net = Net((batch, 3, RESOLUTION, RESOLUTION), seed=key_seed(arch.key))
        x = net.conv("input", arch.embed, PATCH, stride=PATCH, bn=False, bias=True, padding=0, name="patch_embed")
        x = net.tokens(x, name="tokens")
        x = net.prepend(x, 1, name="cls_token")
        x = net.pos(x, name="pos_embed")
        for i, (h, r) in enumerate(zip(arch.heads, arch.ratios)):
            x = transformer_block(net, x, h, HEAD_DIM, int(arch.embed * r), "gelu", f"blocks.{i}")
        x = net.layernorm(x, name="norm")
        x = net.select(x, 0, name="cls")
        net.linear(x, self.num_classes, name="head")
        return net

    def to_graph(self, arch: Any, batch: int = 1, fuse_add: bool = False, fold_bn: bool = False):
        """The ops `hwlat.device_tables.graph` extracts from the ONNX model (there is no batch-norm to fold;
        `fuse_add` is ignored: fusion is the predictor's, from the device table's rules)."""
        return self.graph(arch, batch).specs

    def describe(self, arch: Any) -> list[str]:
        a = self.as_arch(arch)
        lines = [f"vit_arch {a.key}", f"embed {a.embed}, depth {a.depth}, head dim {HEAD_DIM}, "
                 f"{(RESOLUTION // PATCH) ** 2 + 1} tokens", "layers (heads, MLP hidden):"]
        lines += [f"  {i:>2}: {h} heads ({h * HEAD_DIM} q/k/v), MLP {int(a.embed * r)} (ratio {r:g})"
                  for i, (h, r) in enumerate(zip(a.heads, a.ratios))]
        uncovered = self.graph(a).uncovered
        if uncovered:
            lines.append(f"({len(uncovered)} ONNX nodes no op of the vocabulary covers yet, e.g. "
                         f"{uncovered[0].describe()})")
        return lines


def transformer_block(net, x: str, heads: int, head_dim: int, hidden: int, act: str, name: str, qkv: str = "fused",
                      causal: bool = False, scale: str = "mul") -> str:
    """A pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)) with `act` between its two linear layers."""
    y = net.layernorm(x, name=f"{name}.norm1")
    y = net.attention(y, heads, head_dim, qkv=qkv, causal=causal, scale=scale, name=f"{name}.attn")
    x = net.add(x, y, name=f"{name}.add1")
    y = net.layernorm(x, name=f"{name}.norm2")
    y = net.linear(y, hidden, act=act, name=f"{name}.fc1")
    y = net.linear(y, net.shape(x)[-1], name=f"{name}.fc2")
    return net.add(x, y, name=f"{name}.add2")


# ---- latency features (`hwlat.nas.features`) and categorical decisions (`hwlat.nas.choices`) -------------
def _latency_feature_groups(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    n = len(enc)
    base = len(EMBED_DIMS) + len(DEPTHS)
    per = len(HEADS) + len(MLP_RATIOS)
    e = enc[:, : len(EMBED_DIMS)] @ np.asarray(EMBED_DIMS, dtype=float) / EMBED_DIMS[0]
    depth = enc[:, len(EMBED_DIMS): base] @ np.asarray(DEPTHS, dtype=float)
    slots = enc[:, base:].reshape(n, MAX_DEPTH, per)
    h = (slots[..., : len(HEADS)] @ np.asarray(HEADS, dtype=float)).sum(axis=1)
    r = (slots[..., len(HEADS):] @ np.asarray(MLP_RATIOS, dtype=float)).sum(axis=1)
    # MACs per block grow with E * heads (q/k/v and output projections), heads (attention's two
    # products over 197 tokens) and E^2 * ratio (the MLP); LayerNorms and adds with E * depth.
    cost = np.stack([depth, h, r, e * depth, e * h, e * e * r], axis=1)
    extra = np.stack([e, slots[..., HEADS.index(4)].sum(axis=1), slots[..., len(HEADS) + MLP_RATIOS.index(4.0)].sum(axis=1)],
                     axis=1)
    return [
        ("enc", list(sp.feature_names), enc),
        ("cost", ["depth", "sum_heads", "sum_mlp_ratio", "embed_x_depth", "embed_x_heads", "embed2_x_mlp_ratio"], cost),
        ("extra", ["embed", "n_heads4", "n_mlp_ratio4"], extra),
    ]


def _decisions(sp: Space) -> Decisions:
    """Embedding dim, depth, then heads and MLP ratio of every slot (unused slots included, as OFA's)."""
    from hwlat.nas.choices import Decisions

    names = ("embed", "depth") + tuple(f"heads{i}" for i in range(MAX_DEPTH)) + tuple(f"mlp{i}" for i in range(MAX_DEPTH))
    choices = (EMBED_DIMS, DEPTHS) + (HEADS,) * MAX_DEPTH + (MLP_RATIOS,) * MAX_DEPTH

    def to_idx(a: Any) -> list[int]:
        a = sp.as_arch(a)
        pad = MAX_DEPTH - a.depth
        return ([EMBED_DIMS.index(a.embed), DEPTHS.index(a.depth)] + [HEADS.index(h) for h in a.heads] + [0] * pad
                + [MLP_RATIOS.index(r) for r in a.ratios] + [0] * pad)

    def from_idx(idx: Sequence[int]) -> ViTArch:
        d = DEPTHS[idx[1]]
        heads = tuple(HEADS[i] for i in idx[2: 2 + d])
        ratios = tuple(MLP_RATIOS[i] for i in idx[2 + MAX_DEPTH: 2 + MAX_DEPTH + d])
        return ViTArch(EMBED_DIMS[idx[0]], heads, ratios)

    return Decisions(sp.name, names, choices, to_idx, from_idx)
