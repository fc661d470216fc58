"""Classic transformers built from their published structure, as ONNX models with synthetic weights
(batch 1, static shapes, written as torch's TorchScript exporter writes them at opset 17).

- ViT-Ti / ViT-S (Dosovitskiy et al., ICLR 2021; DeiT's Ti and S sizes, Touvron et al., ICML 2021):
  patch 16, 192 dims / 12 layers / 3 heads / MLP 768, and 384 / 12 / 6 / 1536; pre-norm blocks, class
  token, learned position embedding, final LayerNorm, linear head on the class token.
- DeiT-Ti: ViT-Ti with a distillation token (198 tokens at 224) and two heads, averaged.
- BERT-style encoders (Devlin et al., 2019; the miniatures of Turc et al., 2019): tiny 2 layers / 128
  hidden / 2 heads, mini 4 / 256 / 4, small 4 / 512 / 8; FFN 4x, vocabulary 30522, 512 positions;
  int64 token ids, word and position embeddings (Gather) summed, LayerNorm, post-norm blocks with
  separate q, k, v projections. No token-type embedding and no attention mask (every token valid);
  output: the last hidden states (1, T, hidden).
- MobileViT-XS (Mehta & Rastegari, ICLR 2022): MobileNetV2 blocks (expansion 4, SiLU) and MobileViT
  blocks (conv3x3, conv1x1 to d, unfold into 2x2 patches, L transformer layers with 4 heads and FFN
  2d, LayerNorm, fold, conv1x1 back, concat with the input, conv3x3), channels 16-32-48-64-80-96-384,
  d = 96 / 120 / 144, L = 2 / 4 / 3; input r x r with r a multiple of 32 (256 published).
- GPT-2 small prefill (Radford et al., 2019): 12 layers, 768 dims, 12 heads, vocabulary 50257, 1024
  positions, pre-norm, one q/k/v projection split in three, a causal mask added, tanh GELU, final
  LayerNorm. The LM head is left out: the output is the last hidden states (1, T, 768).

Keys: ``vit_ti@r224`` (resolution) or ``bert_mini@s128`` (sequence length); a bare name takes the
published size. LayerNorm epsilon is 1e-5 throughout (timm's ViTs use 1e-6: same cost).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

from hwlat.nas.spaces.network import Net
from hwlat.nas.spaces.vit import transformer_block


def _vit(net: Net, dim: int, depth: int, heads: int, mlp: int, distilled: bool = False) -> str:
    x = net.conv("input", dim, 16, stride=16, bn=False, bias=True, padding=0, name="patch_embed")
    x = net.pos(net.prepend(net.tokens(x), 2 if distilled else 1, name="cls_token"), name="pos_embed")
    for i in range(depth):
        x = transformer_block(net, x, heads, dim // heads, mlp, "gelu", f"blocks.{i}")
    x = net.layernorm(x, name="norm")
    y = net.linear(net.select(x, 0), 1000, name="head")
    if distilled:
        y = net.div(net.add(y, net.linear(net.select(x, 1), 1000, name="head_dist")), 2.0)
    return y


def _bert(net: Net, layers: int, hidden: int, heads: int) -> str:
    x = net.pos(net.embed("input", 30522, hidden, name="word_embeddings"), table=512, name="position_embeddings")
    x = net.layernorm(x, name="embeddings.norm")
    for i in range(layers):
        name = f"layer.{i}"
        y = net.attention(x, heads, hidden // heads, qkv="separate", scale="div", name=f"{name}.attention")
        x = net.layernorm(net.add(x, y, name=f"{name}.add1"), name=f"{name}.attention.norm")
        y = net.linear(net.linear(x, 4 * hidden, act="gelu", name=f"{name}.intermediate"), hidden, name=f"{name}.output")
        x = net.layernorm(net.add(x, y, name=f"{name}.add2"), name=f"{name}.output.norm")
    return x


def _gpt2(net: Net) -> str:
    x = net.pos(net.embed("input", 50257, 768, name="wte"), table=1024, name="wpe")
    for i in range(12):
        x = transformer_block(net, x, 12, 64, 3072, "gelu_tanh", f"h.{i}", qkv="split", causal=True, scale="div")
    return net.layernorm(x, name="ln_f")


def _mv2(net: Net, x: str, cout: int, stride: int, name: str) -> str:
    """MobileNetV2 inverted residual, expansion 4, SiLU (MobileViT's MV2 block)."""
    cin = net.shape(x)[1]
    y = net.conv(x, 4 * cin, 1, act="silu", name=f"{name}.expand")
    y = net.conv(y, 4 * cin, 3, stride=stride, groups=4 * cin, act="silu", name=f"{name}.dw")
    y = net.conv(y, cout, 1, name=f"{name}.project")
    return net.add(y, x, name=f"{name}.add") if stride == 1 and cin == cout else y


def _mobilevit_block(net: Net, x: str, d: int, layers: int, name: str) -> str:
    c = net.shape(x)[1]
    y = net.conv(x, c, 3, act="silu", name=f"{name}.conv_kxk")
    y = net.conv(y, d, 1, bn=False, bias=False, name=f"{name}.conv_1x1")
    like = net.shape(y)
    t = net.unfold(y, 2, name=f"{name}.unfold")
    for i in range(layers):
        t = transformer_block(net, t, 4, d // 4, 2 * d, "silu", f"{name}.transformer.{i}")
    y = net.fold(net.layernorm(t, name=f"{name}.norm"), like, 2, name=f"{name}.fold")
    y = net.conv(y, c, 1, act="silu", name=f"{name}.conv_proj")
    return net.conv(net.concat(x, y, name=f"{name}.concat"), c, 3, act="silu", name=f"{name}.conv_fusion")


def _mobilevit_xs(net: Net) -> str:
    x = net.conv("input", 16, 3, stride=2, act="silu", name="stem")
    for i, (cout, stride) in enumerate([(32, 1), (48, 2), (48, 1), (48, 1)]):
        x = _mv2(net, x, cout, stride, f"mv2.{i}")
    for s, (cout, d, layers) in enumerate([(64, 96, 2), (80, 120, 4), (96, 144, 3)]):
        x = _mv2(net, x, cout, 2, f"stage{s}.mv2")
        x = _mobilevit_block(net, x, d, layers, f"stage{s}.mobilevit")
    x = net.conv(x, 384, 1, act="silu", name="final_conv")
    return net.linear(net.flatten(net.gap(x)), 1000, name="classifier")


@dataclass(frozen=True)
class Family:
    """How a model is sized ('r': image resolution, 's': sequence length), its published size and
    the sizes of the benchmark variants, and its builder."""

    unit: str
    default: int
    variants: tuple[int, ...]
    build: Callable[[Net], str]


FAMILIES: dict[str, Family] = {
    "vit_ti": Family("r", 224, (160, 192, 224), lambda net: _vit(net, 192, 12, 3, 768)),
    "vit_s": Family("r", 224, (160, 224), lambda net: _vit(net, 384, 12, 6, 1536)),
    "deit_ti": Family("r", 224, (160, 192, 224), lambda net: _vit(net, 192, 12, 3, 768, distilled=True)),
    "mobilevit_xs": Family("r", 256, (192, 256), _mobilevit_xs),
    "bert_tiny": Family("s", 128, (64, 128, 256), lambda net: _bert(net, 2, 128, 2)),
    "bert_mini": Family("s", 128, (64, 128, 256), lambda net: _bert(net, 4, 256, 4)),
    "bert_small": Family("s", 128, (64, 128, 256), lambda net: _bert(net, 4, 512, 8)),
    "gpt2": Family("s", 128, (64, 128), _gpt2),
}
# Each family's input size must be a multiple of this (patches of 16; MobileViT's 2x2 patches at 1/32).
_MULTIPLE = {"vit_ti": 16, "vit_s": 16, "deit_ti": 16, "mobilevit_xs": 32}
_MAX_SEQUENCE = {"bert_tiny": 512, "bert_mini": 512, "bert_small": 512, "gpt2": 1024}


@dataclass(frozen=True)
class TransformerConfig:
    """One classic transformer at one input size (resolution or sequence length)."""

    name: str
    size: int

    @property
    def key(self) -> str:
        return f"{self.name}@{FAMILIES[self.name].unit}{self.size}"

    @classmethod
    def parse(cls, key: str) -> "TransformerConfig":
        """``bert_mini`` or ``bert_mini@s128`` (``vit_ti@r224``) -> a config."""
        from hwlat.device_tables.errors import ModelError

        name, _, rest = key.strip().partition("@")
        if name not in FAMILIES:
            raise ModelError(f"unknown transformer {name!r}; known: {', '.join(FAMILIES)}")
        fam = FAMILIES[name]
        form = f"{name}@{fam.unit}{fam.default}"
        if not rest:
            return cls(name, fam.default)
        if rest[0] != fam.unit or not rest[1:].isdigit():
            raise ModelError(f"model key {key!r} is not like {form} ({'resolution' if fam.unit == 'r' else 'sequence length'})")
        size = int(rest[1:])
        multiple, most = _MULTIPLE.get(name, 1), _MAX_SEQUENCE.get(name, 4096)
        if size <= 0 or size % multiple or size > most:
            what = f"a multiple of {multiple}" if multiple > 1 else f"1 to {most} tokens"
            raise ModelError(f"model key {key!r}: {name} takes {what}, e.g. {form}")
        return cls(name, size)

    def network(self) -> Net:
        """The model as a `Net` (batch 1): image (1, 3, r, r) or int64 token ids (1, T)."""
        fam = FAMILIES[self.name]
        shape, dtype = ((1, 3, self.size, self.size), "float32") if fam.unit == "r" else ((1, self.size), "int64")
        net = Net(shape, seed=zlib.crc32(self.key.encode()), input_dtype=dtype)
        fam.build(net)
        return net


def is_transformer(key: str) -> bool:
    """Whether a model key names one of these transformers (else it may be a classic CNN)."""
    return key.strip().partition("@")[0] in FAMILIES


def build_model(key: str | TransformerConfig, values: bool = True):
    """The ONNX `ModelProto` (input ``input``, output ``logits``); `values=False` leaves large weights'
    values out (a model to read the graph from, not to run)."""
    from hwlat.nas.spaces.onnx_export import net_to_proto

    cfg = TransformerConfig.parse(key) if isinstance(key, str) else key
    return net_to_proto(cfg.network(), doc=f"hwlat {cfg.key}", values=values)


def variants() -> list[TransformerConfig]:
    """Every classic transformer at its benchmark sizes."""
    return [TransformerConfig(name, size) for name, fam in FAMILIES.items() for size in fam.variants]
