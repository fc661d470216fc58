"""Classic CNNs built from their published structure, as ONNX models with synthetic weights.

ResNet-18/50 (He et al., CVPR 2016; torchvision layout, stride on the 3x3 of bottlenecks),
MobileNetV2 (Sandler et al., CVPR 2018), MobileNetV3 large/small (Howard et al., ICCV 2019;
torchvision's block table) and EfficientNet-B0 (Tan & Le, ICML 2019), at any input resolution
and width multiplier. They are the "user models outside any search space" that latency
predictors are checked on. Weights are random but deterministic (latency does not depend on
them); batch-norm is folded into the convolutions by default, as exporters do. Keys of the classic
transformers (`hwlat.nas.transformers`) build those.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

OPSET = 17
IR_VERSION = 8


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never below 90% of `v` (MobileNet convention)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


class OnnxNet:
    """A tiny ONNX graph builder tracking the current tensor and its NCHW shape."""

    def __init__(self, name: str, input_shape: tuple[int, int, int, int], fold_bn: bool = True, seed: int | None = None):
        self.name = name
        self.fold_bn = fold_bn
        self.rng = np.random.default_rng(zlib.crc32(name.encode()) if seed is None else seed)
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {"input": tuple(input_shape)}
        self.input_shape = tuple(input_shape)
        self._n = 0

    def _uid(self, kind: str) -> str:
        self._n += 1
        return f"{kind}_{self._n}"

    def _node(self, op_type: str, inputs: list[str], shape: tuple[int, ...], kind: str, **attrs: Any) -> str:
        from onnx import helper

        name = self._uid(kind)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        self.shapes[out] = tuple(shape)
        return out

    def _const(self, kind: str, arr: np.ndarray) -> str:
        name = self._uid(kind)
        self.inits[name] = np.asarray(arr, dtype=np.float32)
        return name

    # ---- layers -------------------------------------------------------------------------
    def conv(self, x: str, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = None,
             bn: bool = True, gain: float = 1.0) -> str:
        n, cin, h, w = self.shapes[x]
        p = (k - 1) // 2
        fan_in = cin // groups * k * k
        wt = self.rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), size=(cout, cin // groups, k, k))
        ins = [x, self._const("W", wt)]
        if self.fold_bn or not bn:
            ins.append(self._const("b", self.rng.uniform(-0.05, 0.05, size=cout)))
        ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
        y = self._node("Conv", ins, (n, cout, ho, wo), "conv", kernel_shape=[k, k], strides=[stride, stride],
                       pads=[p, p, p, p], group=groups)
        if bn and not self.fold_bn:
            y = self.bn(y)
        return self.act(y, act) if act else y

    def bn(self, x: str) -> str:
        c = self.shapes[x][1]
        ins = [x, self._const("gamma", self.rng.uniform(0.8, 1.2, c)), self._const("beta", self.rng.uniform(-0.1, 0.1, c)),
               self._const("mean", self.rng.uniform(-0.1, 0.1, c)), self._const("var", self.rng.uniform(0.8, 1.2, c))]
        return self._node("BatchNormalization", ins, self.shapes[x], "bn", epsilon=1e-5)

    def act(self, x: str, kind: str) -> str:
        shape = self.shapes[x]
        if kind == "relu":
            return self._node("Relu", [x], shape, "relu")
        if kind == "relu6":
            lo = self._const("clip_min", np.array(0.0))
            hi = self._const("clip_max", np.array(6.0))
            return self._node("Clip", [x, lo, hi], shape, "relu6")
        if kind == "hardswish":
            return self._node("HardSwish", [x], shape, "hardswish")
        if kind == "hardsigmoid":
            return self._node("HardSigmoid", [x], shape, "hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
        if kind == "sigmoid":
            return self._node("Sigmoid", [x], shape, "sigmoid")
        if kind == "silu":
            s = self._node("Sigmoid", [x], shape, "sigmoid")
            return self._node("Mul", [x, s], shape, "silu")
        raise ValueError(f"unknown activation {kind!r}")

    def add(self, x: str, y: str) -> str:
        return self._node("Add", [x, y], self.shapes[x], "add")

    def mul(self, x: str, s: str) -> str:
        return self._node("Mul", [x, s], self.shapes[x], "mul")

    def maxpool(self, x: str, k: int, stride: int, pad: int) -> str:
        n, c, h, w = self.shapes[x]
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        return self._node("MaxPool", [x], (n, c, ho, wo), "maxpool", kernel_shape=[k, k], strides=[stride, stride],
                          pads=[pad] * 4)

    def gap(self, x: str) -> str:
        n, c = self.shapes[x][:2]
        return self._node("GlobalAveragePool", [x], (n, c, 1, 1), "gap")

    def flatten(self, x: str) -> str:
        n, c = self.shapes[x][:2]
        return self._node("Flatten", [x], (n, c), "flatten", axis=1)

    def linear(self, x: str, cout: int, act: str | None = None) -> str:
        n, cin = self.shapes[x]
        wt = self.rng.normal(0.0, np.sqrt(1.0 / cin), size=(cout, cin))
        y = self._node("Gemm", [x, self._const("W", wt), self._const("b", np.zeros(cout))], (n, cout), "linear", transB=1)
        return self.act(y, act) if act else y

    def se(self, x: str, squeeze: int, inner_act: str, gate: str) -> str:
        """Squeeze-and-excitation (Hu et al., 2018): x * gate(conv(act(conv(gap(x)))))."""
        c = self.shapes[x][1]
        s = self.gap(x)
        s = self.conv(s, squeeze, 1, act=inner_act, bn=False)
        s = self.conv(s, c, 1, act=gate, bn=False)
        return self.mul(x, s)

    # ---- output -------------------------------------------------------------------------
    def model(self, y: str):
        from onnx import TensorProto, helper, numpy_helper

        self.nodes[-1].output[0] = "logits"
        self.shapes["logits"] = self.shapes.pop(y)
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.input_shape))]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(self.shapes["logits"]))]
        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwlat.nas.models")
        model.ir_version = IR_VERSION
        return model


# ---- the networks --------------------------------------------------------------------------
def _resnet(net: OnnxNet, x: str, layers: tuple[int, ...], bottleneck: bool, width: float, classes: int) -> str:
    widths = [make_divisible(c * width) for c in (64, 128, 256, 512)]
    expansion = 4 if bottleneck else 1
    x = net.conv(x, make_divisible(64 * width), 7, 2, act="relu")
    x = net.maxpool(x, 3, 2, 1)
    for stage, (n, c) in enumerate(zip(layers, widths)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            cin = net.shapes[x][1]
            short = x
            if stride != 1 or cin != c * expansion:
                short = net.conv(x, c * expansion, 1, stride)
            if bottleneck:
                y = net.conv(x, c, 1, act="relu")
                y = net.conv(y, c, 3, stride, act="relu")
                y = net.conv(y, c * expansion, 1, gain=0.3)
            else:
                y = net.conv(x, c, 3, stride, act="relu")
                y = net.conv(y, c, 3, gain=0.3)
            x = net.act(net.add(y, short), "relu")
    x = net.flatten(net.gap(x))
    return net.linear(x, classes)


def _mobilenet_v2(net: OnnxNet, x: str, width: float, classes: int) -> str:
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    x = net.conv(x, make_divisible(32 * width), 3, 2, act="relu6")
    for t, c, n, s in cfg:
        cout = make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            cin = net.shapes[x][1]
            y = net.conv(x, cin * t, 1, act="relu6") if t != 1 else x
            y = net.conv(y, cin * t, 3, stride, groups=cin * t, act="relu6")
            y = net.conv(y, cout, 1, gain=0.3)
            x = net.add(y, x) if stride == 1 and cin == cout else y
    x = net.conv(x, make_divisible(1280 * max(1.0, width)), 1, act="relu6")
    x = net.flatten(net.gap(x))
    return net.linear(x, classes)


# (kernel, expanded, out, SE, activation, stride), torchvision's MobileNetV3 tables.
_MBV3_LARGE = [
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1), (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1), (5, 960, 160, True, "hardswish", 1),
]
_MBV3_SMALL = [
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1), (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1),
]


def _mobilenet_v3(net: OnnxNet, x: str, large: bool, width: float, classes: int) -> str:
    cfg = _MBV3_LARGE if large else _MBV3_SMALL
    x = net.conv(x, make_divisible(16 * width), 3, 2, act="hardswish")
    for k, exp, out, se, act, stride in cfg:
        cin = net.shapes[x][1]
        e, cout = make_divisible(exp * width), make_divisible(out * width)
        y = net.conv(x, e, 1, act=act) if e != cin else x
        y = net.conv(y, e, k, stride, groups=e, act=act)
        if se:
            y = net.se(y, make_divisible(e // 4), "relu", "hardsigmoid")
        y = net.conv(y, cout, 1, gain=0.3)
        x = net.add(y, x) if stride == 1 and cin == cout else y
    last = net.shapes[x][1] * 6
    x = net.conv(x, last, 1, act="hardswish")
    x = net.flatten(net.gap(x))
    x = net.linear(x, make_divisible((1280 if large else 1024) * max(1.0, width)), act="hardswish")
    return net.linear(x, classes)


def _efficientnet_b0(net: OnnxNet, x: str, width: float, classes: int) -> str:
    # (expand, kernel, stride, out, repeats): Table 1 of the EfficientNet paper.
    cfg = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
           (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    x = net.conv(x, make_divisible(32 * width), 3, 2, act="silu")
    for t, k, s, c, n in cfg:
        cout = make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            cin = net.shapes[x][1]
            e = cin * t
            y = net.conv(x, e, 1, act="silu") if t != 1 else x
            y = net.conv(y, e, k, stride, groups=e, act="silu")
            y = net.se(y, max(1, int(cin * 0.25)), "silu", "sigmoid")
            y = net.conv(y, cout, 1, gain=0.3)
            x = net.add(y, x) if stride == 1 and cin == cout else y
    x = net.conv(x, make_divisible(1280 * max(1.0, width)), 1, act="silu")
    x = net.flatten(net.gap(x))
    return net.linear(x, classes)


BUILDERS: dict[str, Callable[..., str]] = {
    "resnet18": lambda net, x, w, k: _resnet(net, x, (2, 2, 2, 2), False, w, k),
    "resnet50": lambda net, x, w, k: _resnet(net, x, (3, 4, 6, 3), True, w, k),
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v3_large": lambda net, x, w, k: _mobilenet_v3(net, x, True, w, k),
    "mobilenet_v3_small": lambda net, x, w, k: _mobilenet_v3(net, x, False, w, k),
    "efficientnet_b0": _efficientnet_b0,
}


# What `ModelConfig.parse` accepts: each network halves its input five times, and a huge one would
# take hours to build or time.
MIN_RESOLUTION, MAX_RESOLUTION, MAX_WIDTH = 32, 1024, 4.0


@dataclass(frozen=True)
class ModelConfig:
    """One classic network at one resolution and width multiplier."""

    name: str
    resolution: int = 224
    width: float = 1.0
    batch: int = 1
    classes: int = 1000

    @property
    def key(self) -> str:
        return f"{self.name}@r{self.resolution}w{self.width:g}"

    @classmethod
    def parse(cls, key: str) -> "ModelConfig":
        """``mobilenet_v2`` or ``mobilenet_v2@r160w0.75`` -> a config."""
        from hwlat.device_tables.errors import ModelError

        from hwlat.nas.transformers import FAMILIES

        name, _, rest = key.partition("@")
        if name not in BUILDERS:
            raise ModelError(f"unknown model {name!r}; known: {', '.join(BUILDERS)}; transformers: {', '.join(FAMILIES)}")
        res, width = 224, 1.0
        if rest:
            m = re.fullmatch(r"r(\d+)(?:w(\d*\.?\d+))?", rest)
            if m is None:
                raise ModelError(f"model key {key!r} is not like mobilenet_v2@r160w0.75")
            res, width = int(m.group(1)), float(m.group(2) or 1.0)
            if not (MIN_RESOLUTION <= res <= MAX_RESOLUTION and 0 < width <= MAX_WIDTH):
                raise ModelError(f"model key {key!r}: the resolution is {MIN_RESOLUTION} to {MAX_RESOLUTION} pixels "
                                 f"(the networks halve it five times) and the width multiplier above 0 and at most "
                                 f"{MAX_WIDTH:g}")
        return cls(name, res, width)


def build_model(config: ModelConfig | str, fold_bn: bool = True):
    """The ONNX `ModelProto` of a classic network (input ``input``, output ``logits``): a CNN, or a
    transformer of `hwlat.nas.transformers` named by its key (``bert_mini@s128``)."""
    from hwlat.nas import transformers

    if isinstance(config, str) and transformers.is_transformer(config):
        return transformers.build_model(config)
    cfg = ModelConfig.parse(config) if isinstance(config, str) else config
    net = OnnxNet(cfg.key, (cfg.batch, 3, cfg.resolution, cfg.resolution), fold_bn=fold_bn)
    y = BUILDERS[cfg.name](net, "input", cfg.width, cfg.classes)
    return net.model(y)


def to_onnx(config: ModelConfig | str, fold_bn: bool = True) -> bytes:
    return build_model(config, fold_bn).SerializeToString()


def variants(resolutions: tuple[int, ...] = (160, 192, 224), widths: dict[str, tuple[float, ...]] | None = None) -> list[ModelConfig]:
    """The classic networks at a few resolutions and width multipliers (benchmark variety)."""
    widths = widths or {"resnet18": (0.5, 1.0), "resnet50": (0.5, 1.0), "mobilenet_v2": (0.5, 0.75, 1.0, 1.4),
                        "mobilenet_v3_large": (0.75, 1.0), "mobilenet_v3_small": (0.75, 1.0), "efficientnet_b0": (1.0,)}
    return [ModelConfig(name, r, w) for name in BUILDERS for w in widths.get(name, (1.0,)) for r in resolutions]
