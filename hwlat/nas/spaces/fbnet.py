"""FBNet space as HW-NAS-Bench uses it on CIFAR-100 (Wu et al., CVPR 2019; Li et al., ICLR 2021).

Network (HW-NAS-Bench ``hw_nas_bench_api/fbnet_models/model_infer.py``, CIFAR setting):
32x32 input; stem conv3x3/s1 16 + BN + ReLU; 22 searchable layers in stages of
[1, 4, 4, 4, 4, 4, 1] layers with [16, 24, 32, 64, 112, 184, 352] channels and first-layer
strides [1, 1, 2, 2, 1, 2, 1]; head conv1x1 1504 + BN + ReLU, global average pool, linear 100.
Block ``kK_eE[_g2]``: conv1x1 (groups g) to E*Cin + BN + ReLU, channel shuffle when g=2,
depthwise KxK (stride) + BN + ReLU, conv1x1 (groups g) to Cout + BN, plus the input when
Cin == Cout and stride 1 (no activation after the add). ``skip``: identity, or conv1x1 (stride)
+ BN + ReLU when the shape changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwlat.device_tables.archtable import ArchKeys
from hwlat.nas.spaces.base import ArchError, Space, as_rng, key_seed, parse_int_list

if TYPE_CHECKING:
    from hwlat.nas.choices import Decisions

BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
N_LAYERS = 22
LAYERS_PER_STAGE = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES = (1, 1, 2, 2, 1, 2, 1)  # HW-NAS-Bench's CIFAR setting (ImageNet: 1, 2, 2, 2, 1, 2, 1)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1504
KEY_FORM = "22 block indices 0..8 joined by '-', e.g. 7-8-1-8-4-8-8-8-7-4-1-4-7-3-2-7-3-2-4-2-4-5"


def block_params(block: str) -> tuple[int, int, int] | None:
    """``kK_eE[_g2]`` -> (kernel, expansion, groups); None for skip."""
    if block == "skip":
        return None
    parts = block.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), 2 if len(parts) > 2 else 1


def layer_plan() -> list[tuple[int, int, int]]:
    """(cin, cout, stride) of the 22 searchable layers."""
    plan, cin = [], STEM_CHANNELS
    for n, c, s in zip(LAYERS_PER_STAGE, STAGE_CHANNELS, STAGE_STRIDES):
        for i in range(n):
            plan.append((cin, c, s if i == 0 else 1))
            cin = c
    return plan


@dataclass(frozen=True)
class FBNetArch:
    """22 block indices into `BLOCKS`."""

    ops: tuple[int, ...]

    @property
    def op_idx22(self) -> str:
        return "-".join(map(str, self.ops))

    @property
    def ops22(self) -> str:
        return "-".join(BLOCKS[o] for o in self.ops)

    def __str__(self) -> str:
        return self.op_idx22


class FBNetSpace(Space):
    """FBNet (HW-NAS-Bench, CIFAR-100).

    `encode` (198 values): one-hot of the block of each of the 22 layers (layer-major, block
    order `BLOCKS`).
    """

    name = "fbnet"
    # The public CSV's keys (HW-NAS-Bench via HELP): rows sorted by help_row when every row has one.
    arch_keys = ArchKeys("fbnet", columns=("help_row", "fbnet_op_idx22", "fbnet_ops22"), primary="fbnet_op_idx22",
                         int_columns=("help_row",), order_by="help_row", optional=("help_row",))
    key_columns = arch_keys.columns
    key_column = arch_keys.primary
    layerwise = True
    transfer_join_column = "help_row"
    transfer_query = (4000, 5000)  # HELP's split
    size = len(BLOCKS) ** N_LAYERS
    num_classes = 100
    input_size = 32

    def latency_feature_groups(self, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
        return _latency_feature_groups(self, enc)

    def decisions(self) -> Decisions:
        return _decisions(self)

    def is_arch(self, obj: Any) -> bool:
        return isinstance(obj, FBNetArch)

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[FBNetArch]:
        ops = as_rng(seed).integers(len(BLOCKS), size=(n, N_LAYERS))
        return [FBNetArch(tuple(int(o) for o in row)) for row in ops]

    def mutate(self, arch: Any, rng: np.random.Generator | int | None = None) -> FBNetArch:
        rng = as_rng(rng)
        ops = list(self.as_arch(arch).ops)
        i = int(rng.integers(N_LAYERS))
        ops[i] = int(rng.choice([o for o in range(len(BLOCKS)) if o != ops[i]]))
        return FBNetArch(tuple(ops))

    def key(self, arch: Any) -> str:
        return self.as_arch(arch).op_idx22

    def key_record(self, arch: Any) -> dict[str, Any]:
        a = self.as_arch(arch)
        return {"fbnet_op_idx22": a.op_idx22, "fbnet_ops22": a.ops22}

    def parse(self, key: Any) -> FBNetArch:
        """``fbnet_op_idx22`` (``7-8-1-...``), ``fbnet_ops22`` (``k5_e6-skip-...``) or 22 ints."""
        if isinstance(key, FBNetArch):
            return key
        if isinstance(key, (tuple, list)):
            key = "-".join(str(v) for v in key)
        if not isinstance(key, str):
            raise ArchError(f"cannot read an FBNet arch from {type(key).__name__} {key!r}; expected {KEY_FORM}")
        text = key.strip()
        if text and text[0].isalpha():
            names = text.split("-")
            unknown = sorted({b for b in names if b not in BLOCKS})
            if unknown or len(names) != N_LAYERS:
                why = f"unknown block(s) {unknown}" if unknown else f"{len(names)} blocks"
                raise ArchError(f"malformed FBNet arch {text!r}: {why}; expected {N_LAYERS} of {', '.join(BLOCKS)} "
                                f"joined by '-', or {KEY_FORM}")
            return FBNetArch(tuple(BLOCKS.index(b) for b in names))
        return FBNetArch(parse_int_list(text, N_LAYERS, range(len(BLOCKS)), "malformed FBNet arch", KEY_FORM))

    @property
    def feature_names(self) -> list[str]:
        return [f"l{i}_{b}" for i in range(N_LAYERS) for b in BLOCKS]

    def encode_one(self, arch: FBNetArch) -> np.ndarray:
        v = np.zeros(N_LAYERS * len(BLOCKS), dtype=np.float32)
        v[np.arange(N_LAYERS) * len(BLOCKS) + np.asarray(arch.ops)] = 1.0
        return v

    def macs_many(self, archs) -> np.ndarray:
        """MACs of many architectures: each layer's channels and stride are fixed, so MACs add up over layers."""
        ops = np.asarray([self.as_arch(a).ops for a in archs], dtype=np.int64).reshape(-1, N_LAYERS)
        m0, table = self._slot_macs("layers", FBNetArch, (0,) * N_LAYERS, len(BLOCKS))
        return m0 + table[np.arange(N_LAYERS), ops].sum(axis=1)

    def network(self, arch: Any, batch: int = 1):
        from hwlat.nas.spaces.network import Net

        arch = self.as_arch(arch)
        net = Net((batch, 3, self.input_size, self.input_size), seed=key_seed(arch.op_idx22))
        x = net.conv("input", STEM_CHANNELS, 3, bn=True, act="relu", name="stem")
        for i, ((cin, cout, stride), op) in enumerate(zip(layer_plan(), arch.ops)):
            x = self._block(net, x, BLOCKS[op], cin, cout, stride, f"l{i}")
        x = net.conv(x, HEAD_CHANNELS, 1, bn=True, act="relu", name="header")
        x = net.gap(x, name="pool")
        x = net.flatten(x, name="flatten")
        net.linear(x, self.num_classes, name="fc")
        return net

    @staticmethod
    def _block(net, x: str, block: str, cin: int, cout: int, stride: int, name: str) -> str:
        p = block_params(block)
        if p is None:
            if stride == 1 and cin == cout:
                return x
            return net.conv(x, cout, 1, stride=stride, bn=True, act="relu", name=f"{name}.skip_conv")
        k, e, g = p
        y = net.conv(x, cin * e, 1, groups=g, bn=True, act="relu", name=f"{name}.conv1")
        if g > 1:
            y = net.shuffle(y, g, name=f"{name}.shuffle")
        y = net.conv(y, cin * e, k, stride=stride, groups=cin * e, bn=True, act="relu", name=f"{name}.dw")
        y = net.conv(y, cout, 1, groups=g, bn=True, name=f"{name}.conv3")
        if cin == cout and stride == 1:
            y = net.add(y, x, name=f"{name}.add")
        return y

    def describe(self, arch: Any) -> list[str]:
        arch = self.as_arch(arch)
        lines = [f"fbnet_op_idx22 {arch.op_idx22}", f"fbnet_ops22    {arch.ops22}", "layers (cin -> cout, stride):"]
        for i, ((cin, cout, s), op) in enumerate(zip(layer_plan(), arch.ops)):
            lines.append(f"  {i:>2}: {BLOCKS[op]:<9} {cin:>4} -> {cout:<4} s{s}")
        return lines


# ---- latency features (`hwlat.nas.features`) and categorical decisions (`hwlat.nas.choices`) -------------
def _latency_feature_groups(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    n = len(enc)
    onehot = enc.reshape(n, N_LAYERS, len(BLOCKS))
    counts = onehot.sum(axis=1)
    stage_of = np.repeat(np.arange(len(LAYERS_PER_STAGE)), LAYERS_PER_STAGE)
    not_skip = 1.0 - onehot[:, :, BLOCKS.index("skip")]
    per_stage = np.stack([not_skip[:, stage_of == s].sum(axis=1) for s in range(len(LAYERS_PER_STAGE))], axis=1)
    expand = np.array([0 if block_params(b) is None else block_params(b)[1] for b in BLOCKS], dtype=float)
    k5 = np.array([0 if block_params(b) is None else float(block_params(b)[0] == 5) for b in BLOCKS])
    expand_stage = np.stack([(onehot[:, stage_of == s] @ expand).sum(axis=1) for s in range(len(LAYERS_PER_STAGE))], axis=1)
    extra = np.hstack([per_stage, expand_stage, (onehot @ k5).sum(axis=1, keepdims=True)])
    names_stage = [f"stage{s}" for s in range(len(LAYERS_PER_STAGE))]
    return [
        ("enc", list(sp.feature_names), enc),
        ("cost", [f"n_{b}" for b in BLOCKS], counts),
        ("extra", [f"{s}_blocks" for s in names_stage] + [f"{s}_expand_sum" for s in names_stage] + ["n_k5"], extra),
    ]


def _decisions(sp: Space) -> Decisions:
    from hwlat.nas.choices import Decisions

    names = tuple(f"layer{i}" for i in range(N_LAYERS))
    return Decisions(sp.name, names, (BLOCKS,) * N_LAYERS, lambda a: sp.as_arch(a).ops,
                     lambda idx: FBNetArch(tuple(idx)))
