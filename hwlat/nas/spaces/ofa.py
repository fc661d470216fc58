"""Once-for-All MobileNetV3 space (Cai et al., ICLR 2020; ``ofa_mbv3_d234_e346_k357_w1.0``).

Network (OFA's ``OFAMobileNetV3``, width 1.0, ImageNet, 1000 classes, input r x r with r in
128..224 step 4): conv3x3/s2 16 + BN + h-swish; a fixed block 16->16 (depthwise 3x3 + BN + ReLU,
conv1x1 + BN, identity shortcut); five stages of depth d in {2, 3, 4} with widths
[24, 40, 80, 112, 160], first-block strides [2, 2, 2, 1, 2], activations [ReLU, ReLU, h-swish,
h-swish, h-swish] and squeeze-excite in stages 2, 4 and 5. A block is an inverted bottleneck with
kernel k in {3, 5, 7} and expansion e in {3, 4, 6}: conv1x1 to mid = make_divisible(Cin * e, 8) +
BN + act, depthwise kxk (stride) + BN + act, [SE: mean, conv1x1 to make_divisible(mid / 4, 8) +
ReLU, conv1x1 + h-sigmoid, scale], conv1x1 + BN; identity shortcut when stride 1 and Cin == Cout.
Head: conv1x1 960 + BN + h-swish, global average pool, conv1x1 1280 (no BN) + h-swish, linear.

Key (the public ``ofa_arch`` column): ``ks=<20 kernels>;e=<20 expansions>;d=<5 depths>;r=<res>``;
entry 4*s + i belongs to block i of stage s, and entries beyond a stage's depth are unused (kept
in the key, ignored by the network and by `encode`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hwlat.device_tables.archtable import ArchKeys
from hwlat.nas.spaces.base import ArchError, Space, as_rng, key_seed, parse_int_list

if TYPE_CHECKING:
    from hwlat.nas.choices import Decisions

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
RESOLUTIONS = tuple(range(128, 225, 4))
N_STAGES = 5
MAX_DEPTH = 4
STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "hardswish", "hardswish", "hardswish")
STAGE_SE = (False, True, False, True, True)
STEM_WIDTH = 16
FIRST_BLOCK_WIDTH = 16
FINAL_EXPAND_WIDTH = 960
LAST_CHANNEL = 1280
NUM_CLASSES = 1000
KEY_FORM = "ks=<20 of 3,5,7>;e=<20 of 3,4,6>;d=<5 of 2,3,4>;r=<128..224 step 4>, values joined by '-'"
_KEY = re.compile(r"^ks=([\d\-]+);e=([\d\-]+);d=([\d\-]+);r=(\d+)$")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round to the nearest multiple of `divisor`, never below 90% of `v` (MobileNet's rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class OFAArch:
    """Kernel sizes and expansions of all 20 block slots, 5 stage depths and the input resolution."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    @property
    def key(self) -> str:
        j = lambda v: "-".join(map(str, v))  # noqa: E731
        return f"ks={j(self.ks)};e={j(self.e)};d={j(self.d)};r={self.r}"

    def active_blocks(self) -> list[tuple[int, int, int, int]]:
        """(stage, slot, kernel, expand) of the blocks that run."""
        return [(s, s * MAX_DEPTH + i, self.ks[s * MAX_DEPTH + i], self.e[s * MAX_DEPTH + i])
                for s in range(N_STAGES) for i in range(self.d[s])]

    def canonical(self) -> "OFAArch":
        """The same network with unused slots set to the smallest choices (equal networks, equal keys)."""
        ks, e = list(self.ks), list(self.e)
        for s in range(N_STAGES):
            for i in range(self.d[s], MAX_DEPTH):
                ks[s * MAX_DEPTH + i], e[s * MAX_DEPTH + i] = KERNELS[0], EXPANDS[0]
        return OFAArch(tuple(ks), tuple(e), self.d, self.r)

    def __str__(self) -> str:
        return self.key


class OFASpace(Space):
    """OFA MobileNetV3 (w1.0).

    `encode` (136 values): for each of the 20 block slots a one-hot of its kernel (3) and of its
    expansion (3), all zero for slots beyond the stage depth (120); a one-hot of each stage's depth
    (5 x 3 = 15); the resolution scaled to [0, 1] ((r - 128) / 96).
    """

    name = "ofa"
    # The public CSV's keys (HELP): rows sorted by help_row when every row has one.
    arch_keys = ArchKeys("ofa", columns=("help_row", "ofa_arch"), primary="ofa_arch", int_columns=("help_row",),
                         order_by="help_row", optional=("help_row",))
    key_columns = arch_keys.columns
    key_column = arch_keys.primary
    transfer_join_column = "help_row"
    transfer_query = (4000, 5000)  # HELP's split
    # distinct networks: resolutions x (sum over depths of (kernels x expands)^depth)^stages
    size = len(RESOLUTIONS) * sum((len(KERNELS) * len(EXPANDS)) ** d for d in DEPTHS) ** N_STAGES
    num_classes = NUM_CLASSES

    def latency_feature_groups(self, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
        return _latency_feature_groups(self, enc)

    def decisions(self) -> Decisions:
        return _decisions(self)

    def is_arch(self, obj: Any) -> bool:
        return isinstance(obj, OFAArch)

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[OFAArch]:
        """Uniform choices for every slot, depth and resolution (like OFA's ``sample_active_subnet``)."""
        rng = as_rng(seed)
        out = []
        for _ in range(n):
            ks = tuple(int(v) for v in rng.choice(KERNELS, N_STAGES * MAX_DEPTH))
            e = tuple(int(v) for v in rng.choice(EXPANDS, N_STAGES * MAX_DEPTH))
            d = tuple(int(v) for v in rng.choice(DEPTHS, N_STAGES))
            out.append(OFAArch(ks, e, d, int(rng.choice(RESOLUTIONS))))
        return out

    def mutate(self, arch: Any, rng: np.random.Generator | int | None = None) -> OFAArch:
        """Change one used kernel, expansion, depth or the resolution."""
        rng = as_rng(rng)
        a = self.as_arch(arch)
        ks, e, d, r = list(a.ks), list(a.e), list(a.d), a.r
        used = [slot for _, slot, _, _ in a.active_blocks()]
        what = int(rng.integers(4))
        other = lambda choices, v: int(rng.choice([c for c in choices if c != v]))  # noqa: E731
        if what == 0:
            slot = int(rng.choice(used))
            ks[slot] = other(KERNELS, ks[slot])
        elif what == 1:
            slot = int(rng.choice(used))
            e[slot] = other(EXPANDS, e[slot])
        elif what == 2:
            s = int(rng.integers(N_STAGES))
            d[s] = other(DEPTHS, d[s])
        else:
            r = other(RESOLUTIONS, r)
        return OFAArch(tuple(ks), tuple(e), tuple(d), r)

    def key(self, arch: Any) -> str:
        return self.as_arch(arch).key

    def parse(self, key: Any) -> OFAArch:
        """The ``ofa_arch`` string, or a dict with ``ks``, ``e``, ``d`` (and ``r``, default 224)."""
        if isinstance(key, OFAArch):
            return key
        if isinstance(key, dict):
            lists = {}
            for name in ("ks", "e", "d"):
                if name not in key:
                    raise ArchError(f"OFA arch dict lacks {name!r}; expected keys ks, e, d (and r)")
                try:
                    lists[name] = "-".join(map(str, key[name]))
                except TypeError:
                    raise ArchError(f"OFA arch dict: {name} {key[name]!r} is not a list; expected {KEY_FORM}") from None
            key = f"ks={lists['ks']};e={lists['e']};d={lists['d']};r={key.get('r', 224)}"
        if not isinstance(key, str):
            raise ArchError(f"cannot read an OFA arch from {type(key).__name__} {key!r}; expected {KEY_FORM}")
        text = key.strip()
        m = _KEY.match(text)
        if not m:
            raise ArchError(f"malformed OFA arch {text!r}; expected {KEY_FORM}")
        what = f"malformed OFA arch {text!r}"
        ks = parse_int_list(m.group(1), N_STAGES * MAX_DEPTH, KERNELS, f"{what}, ks", KEY_FORM)
        e = parse_int_list(m.group(2), N_STAGES * MAX_DEPTH, EXPANDS, f"{what}, e", KEY_FORM)
        d = parse_int_list(m.group(3), N_STAGES, DEPTHS, f"{what}, d", KEY_FORM)
        r = int(m.group(4))
        if r not in RESOLUTIONS:
            raise ArchError(f"{what}: resolution {r} not in 128..224 step 4")
        return OFAArch(ks, e, d, r)

    @property
    def feature_names(self) -> list[str]:
        names = []
        for s in range(N_STAGES):
            for i in range(MAX_DEPTH):
                names += [f"s{s}b{i}_k{k}" for k in KERNELS] + [f"s{s}b{i}_e{x}" for x in EXPANDS]
        names += [f"s{s}_d{d}" for s in range(N_STAGES) for d in DEPTHS]
        return names + ["resolution"]

    def encode_one(self, arch: OFAArch) -> np.ndarray:
        per = len(KERNELS) + len(EXPANDS)
        v = np.zeros(N_STAGES * MAX_DEPTH * per + N_STAGES * len(DEPTHS) + 1, dtype=np.float32)
        for _, slot, k, x in arch.active_blocks():
            v[slot * per + KERNELS.index(k)] = 1.0
            v[slot * per + len(KERNELS) + EXPANDS.index(x)] = 1.0
        base = N_STAGES * MAX_DEPTH * per
        for s, d in enumerate(arch.d):
            v[base + s * len(DEPTHS) + DEPTHS.index(d)] = 1.0
        v[-1] = (arch.r - RESOLUTIONS[0]) / (RESOLUTIONS[-1] - RESOLUTIONS[0])
        return v

    def macs_many(self, archs) -> np.ndarray:
        """MACs of many architectures. At a given resolution each block's MACs depend on its own
        kernel and expansion alone (stage widths are fixed), so per resolution: the MACs of the
        deepest network of smallest blocks, plus each active block's change for its choice, less
        the blocks that the depths leave out."""
        out = []
        for a in (self.as_arch(x) for x in archs):
            full, table, drop = self._macs_parts(a.r)
            total = full
            for slot, (k, e) in enumerate(zip(a.ks, a.e)):
                if slot % MAX_DEPTH < a.d[slot // MAX_DEPTH]:
                    total += table[slot, KERNELS.index(k) * len(EXPANDS) + EXPANDS.index(e)]
                else:
                    total -= drop[slot]
            out.append(total)
        return np.asarray(out, dtype=np.int64)

    def _macs_parts(self, r: int) -> tuple[int, np.ndarray, np.ndarray]:
        n_slots = N_STAGES * MAX_DEPTH

        def make(choices, d=(MAX_DEPTH,) * N_STAGES):
            return OFAArch(tuple(KERNELS[c // len(EXPANDS)] for c in choices),
                           tuple(EXPANDS[c % len(EXPANDS)] for c in choices), tuple(d), r)

        full, table = self._slot_macs(("blocks", r), make, (0,) * n_slots, len(KERNELS) * len(EXPANDS))
        cache = self.__dict__.setdefault("_slot_macs_cache", {})
        if ("drop", r) not in cache:
            drop = np.zeros(n_slots, dtype=np.int64)  # MACs of each droppable block at its smallest choice
            for s in range(N_STAGES):
                prev, depths = full, [MAX_DEPTH] * N_STAGES
                for j in range(MAX_DEPTH - 1, min(DEPTHS) - 1, -1):
                    depths[s] = j
                    m = self.macs(make((0,) * n_slots, depths))
                    drop[s * MAX_DEPTH + j], prev = prev - m, m
            cache[("drop", r)] = drop
        return full, table, cache[("drop", r)]

    def network(self, arch: Any, batch: int = 1):
        from hwlat.nas.spaces.network import Net

        arch = self.as_arch(arch)
        net = Net((batch, 3, arch.r, arch.r), seed=key_seed(arch.canonical().key))
        x = net.conv("input", STEM_WIDTH, 3, stride=2, bn=True, act="hardswish", name="first_conv")
        # fixed first block: expand ratio 1 (no expansion conv), ReLU, no SE, identity shortcut
        y = net.conv(x, STEM_WIDTH, 3, groups=STEM_WIDTH, bn=True, act="relu", name="b0.dw")
        y = net.conv(y, FIRST_BLOCK_WIDTH, 1, bn=True, name="b0.project")
        x = net.add(y, x, name="b0.add")
        cin = FIRST_BLOCK_WIDTH
        for s, slot, k, e in arch.active_blocks():
            first = slot % MAX_DEPTH == 0
            stride = STAGE_STRIDES[s] if first else 1
            x = self._block(net, x, cin, STAGE_WIDTHS[s], k, e, stride, STAGE_ACTS[s], STAGE_SE[s], f"s{s}b{slot % MAX_DEPTH}")
            cin = STAGE_WIDTHS[s]
        x = net.conv(x, FINAL_EXPAND_WIDTH, 1, bn=True, act="hardswish", name="final_expand")
        x = net.gap(x, name="pool")
        x = net.conv(x, LAST_CHANNEL, 1, bn=False, bias=False, act="hardswish", name="feature_mix")
        x = net.flatten(x, name="flatten")
        net.linear(x, self.num_classes, name="classifier")
        return net

    @staticmethod
    def _block(net, x: str, cin: int, cout: int, k: int, e: int, stride: int, act: str, se: bool, name: str) -> str:
        mid = make_divisible(round(cin * e), 8)
        y = net.conv(x, mid, 1, bn=True, act=act, name=f"{name}.expand")
        y = net.conv(y, mid, k, stride=stride, groups=mid, bn=True, act=act, name=f"{name}.dw")
        if se:
            squeeze = make_divisible(mid // 4, 8)
            s = net.gap(y, name=f"{name}.se.pool")
            s = net.conv(s, squeeze, 1, bn=False, bias=True, act="relu", name=f"{name}.se.reduce")
            s = net.conv(s, mid, 1, bn=False, bias=True, act="hardsigmoid", name=f"{name}.se.expand")
            y = net.mul(y, s, name=f"{name}.se.scale")
        y = net.conv(y, cout, 1, bn=True, name=f"{name}.project")
        if stride == 1 and cin == cout:
            y = net.add(y, x, name=f"{name}.add")
        return y

    def describe(self, arch: Any) -> list[str]:
        arch = self.as_arch(arch)
        lines = [f"ofa_arch {arch.key}", f"resolution {arch.r}, depths {list(arch.d)}", "blocks (stage.block: kernel, expand):"]
        for s in range(N_STAGES):
            used = [f"k{k} e{e}" for st, _, k, e in arch.active_blocks() if st == s]
            lines.append(f"  stage {s} ({STAGE_WIDTHS[s]} ch, {STAGE_ACTS[s]}{', SE' if STAGE_SE[s] else ''}): " + ", ".join(used))
        return lines


# ---- latency features (`hwlat.nas.features`) and categorical decisions (`hwlat.nas.choices`) -------------
def _latency_feature_groups(sp, enc: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
    n = len(enc)
    per = len(KERNELS) + len(EXPANDS)
    slots = enc[:, : N_STAGES * MAX_DEPTH * per].reshape(n, N_STAGES, MAX_DEPTH, per)
    depth_oh = enc[:, N_STAGES * MAX_DEPTH * per: N_STAGES * MAX_DEPTH * per + N_STAGES * len(DEPTHS)]
    depth = depth_oh.reshape(n, N_STAGES, len(DEPTHS)) @ np.asarray(DEPTHS, dtype=float)
    r = RESOLUTIONS[0] + enc[:, -1] * (RESOLUTIONS[-1] - RESOLUTIONS[0])
    area = (r / 224.0) ** 2
    k = slots[..., : len(KERNELS)] @ np.asarray(KERNELS, dtype=float)
    e = slots[..., len(KERNELS):] @ np.asarray(EXPANDS, dtype=float)
    e_stage = e.sum(axis=2)
    ke_stage = (k**2 * e).sum(axis=2) / 9.0
    cost = np.hstack([depth, e_stage * area[:, None], ke_stage * area[:, None], area[:, None],
                      (depth.sum(axis=1) * area)[:, None]])
    extra = np.hstack([e_stage, ke_stage, (r / 224.0)[:, None], (k == 7).sum(axis=(1, 2))[:, None],
                       (e == 6).sum(axis=(1, 2))[:, None]])
    st = [f"stage{s}" for s in range(N_STAGES)]
    return [
        ("enc", list(sp.feature_names), enc),
        ("cost", [f"{s}_depth" for s in st] + [f"{s}_expand_x_area" for s in st] + [f"{s}_k2e_x_area" for s in st]
         + ["area", "depth_x_area"], cost),
        ("extra", [f"{s}_expand" for s in st] + [f"{s}_k2e" for s in st] + ["res_scale", "n_k7", "n_e6"], extra),
    ]


def _decisions(sp: Space) -> Decisions:
    from hwlat.nas.choices import Decisions

    slots = N_STAGES * MAX_DEPTH
    names = (tuple(f"ks{i}" for i in range(slots)) + tuple(f"e{i}" for i in range(slots))
             + tuple(f"d{s}" for s in range(N_STAGES)) + ("r",))
    choices = (KERNELS,) * slots + (EXPANDS,) * slots + (DEPTHS,) * N_STAGES + (RESOLUTIONS,)

    def to_idx(a: Any) -> list[int]:
        a = sp.as_arch(a)
        return ([KERNELS.index(k) for k in a.ks] + [EXPANDS.index(e) for e in a.e]
                + [DEPTHS.index(d) for d in a.d] + [RESOLUTIONS.index(a.r)])

    def from_idx(idx: Sequence[int]) -> Any:
        ks = tuple(KERNELS[i] for i in idx[:slots])
        e = tuple(EXPANDS[i] for i in idx[slots:2 * slots])
        d = tuple(DEPTHS[i] for i in idx[2 * slots:2 * slots + N_STAGES])
        return OFAArch(ks, e, d, RESOLUTIONS[idx[-1]])

    return Decisions(sp.name, names, choices, to_idx, from_idx)
