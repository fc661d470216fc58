"""Single-op PyTorch modules: one `OpSpec` -> an `nn.Module` computing exactly that op (fp32).

The same weights as the ONNX and TFLite builders (`hwlat.profilers.weights.make_weights`), so this is
both what the ``torch`` runtime times and the fp32 reference the other builders are tested against.
The module takes the inputs of `OpSpec.input_shapes` as positional arguments. Importing this
module imports torch: import it lazily (the ``torch`` runtime does, after checking torch works).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.weights import BN_EPS, LN_EPS, make_inputs, make_weights

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU, "gelu": nn.GELU,
}


class BatchNorm(nn.Module):
    """Inference batch norm over dim 1 (NCHW or NF) with fixed statistics."""

    def __init__(self, weights: dict):
        super().__init__()
        names = (("weight", "bn_gamma"), ("bias", "bn_beta"), ("running_mean", "bn_mean"), ("running_var", "bn_var"))
        for name, key in names:
            self.register_buffer(name, torch.from_numpy(weights[key].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, BN_EPS)


class Scale(nn.Module):
    """x times a per-channel constant (1, C, 1, 1)."""

    def __init__(self, weights: dict):
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(weights["scale"].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Elementwise(nn.Module):
    """add, mul (broadcasting the (N, C, 1, 1) scale), matmul of two activations or channel concat of all inputs."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "add":
            return inputs[0] + inputs[1]
        if self.kind == "mul":
            return inputs[0] * inputs[1]
        if self.kind == "matmul":
            return torch.matmul(inputs[0], inputs[1])
        return torch.cat(inputs, dim=1)


class LayerNorm(nn.Module):
    """Layer norm over the features: the last axis of (rows, cols), axis 1 of a tail's (rows, C, 1, 1)."""

    def __init__(self, weights: dict):
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weights["ln_scale"].copy()))
        self.register_buffer("bias", torch.from_numpy(weights["ln_bias"].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.flatten(1), self.weight.shape, self.weight, self.bias, LN_EPS)
        return y.view(x.shape)


class Embedding(nn.Module):
    """Rows of a (vocab, dim) table picked by int64 token ids."""

    def __init__(self, weights: dict):
        super().__init__()
        self.register_buffer("table", torch.from_numpy(weights["table"].copy()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.table)


class Unary(nn.Module):
    """A tensor op of one input: softmax over the last axis, a permute made contiguous, a copy."""

    def __init__(self, kind: str, perm: str = ""):
        super().__init__()
        self.kind = kind
        self.perm = [int(d) for d in perm]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "softmax":
            return torch.softmax(x, dim=-1)
        if self.kind == "transpose":
            return x.permute(self.perm).contiguous()
        return x.clone()


class Residual(nn.Module):
    """The ``+add`` tail: adds the kernel's last input."""

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return y + residual


class SpecModule(nn.Module):
    """The head op on the inputs, then the fused tails left to right."""

    def __init__(self, head: nn.Module, tails: list[nn.Module], takes_all_inputs: bool):
        super().__init__()
        self.head = head
        self.tails = nn.ModuleList(tails)
        self.takes_all_inputs = takes_all_inputs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        y = self.head(*inputs) if self.takes_all_inputs else self.head(inputs[0])
        for tail in self.tails:
            y = tail(y, inputs[-1]) if isinstance(tail, Residual) else tail(y)
        return y


def build_module(spec: OpSpec, seed: int = 0) -> SpecModule:
    """An eval-mode, gradient-free module for an fp32 `spec`; `UnsupportedOpError` otherwise."""
    if spec.dtype != "float32":
        raise UnsupportedOpError(f"{spec.key}: the PyTorch builder is fp32 only (got {spec.dtype})")
    weights = make_weights(spec, seed)
    a, base, cin = spec.a, spec.base, spec.input_shape[1]
    head: nn.Module
    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        pw = base == "pwconv2d"
        cout = cin if base == "dwconv2d" else int(a["cout"])
        head = nn.Conv2d(cin, cout, 1 if pw else int(a["kernel"]), stride=int(a["stride"]),
                         padding=0 if pw else int(a["padding"]), dilation=1 if pw else int(a["dilation"]),
                         groups=cin if base == "dwconv2d" else int(a.get("groups", 1)), bias=bool(a["bias"]))
        _load(head, weights)
    elif base == "linear":
        head = nn.Linear(cin, int(a["cout"]), bias=bool(a["bias"]))
        _load(head, weights)
    elif base == "bn":
        head = BatchNorm(weights)
    elif base == "scale":
        head = Scale(weights)
    elif base == "gelu":
        head = nn.GELU(approximate="tanh" if a["tanh"] else "none")
    elif base in _ACTIVATIONS:
        head = _ACTIVATIONS[base]()
    elif base == "layernorm":
        head = LayerNorm(weights)
    elif base == "gather":
        head = Embedding(weights)
    elif base in ("softmax", "transpose", "copy"):
        head = Unary(base, str(a.get("perm", "")))
    elif base == "avgpool":
        head = nn.AvgPool2d(int(a["kernel"]), int(a["stride"]), int(a["padding"]),
                            count_include_pad=bool(a["count_include_pad"]))
    elif base == "maxpool":
        head = nn.MaxPool2d(int(a["kernel"]), int(a["stride"]), int(a["padding"]))
    elif base == "globalavgpool":
        head = nn.AdaptiveAvgPool2d(1)
    elif base in ("add", "mul", "concat", "matmul"):
        head = Elementwise(base)
    else:
        raise UnsupportedOpError(f"{spec.key}: no PyTorch builder for op {base!r}")
    tails: list[nn.Module] = []
    for part in spec.parts[1:]:
        if part == "bn":
            tails.append(BatchNorm(weights))
        elif part == "add":
            tails.append(Residual())
        elif part in _ACTIVATIONS:
            tails.append(_ACTIVATIONS[part]())
        elif part == "layernorm":
            tails.append(LayerNorm(weights))
        else:
            raise UnsupportedOpError(f"{spec.key}: no PyTorch builder for {part!r}")
    module = SpecModule(head, tails, takes_all_inputs=base in ("add", "mul", "concat", "matmul"))
    module.eval()
    module.requires_grad_(False)
    return module


def build_inputs(spec: OpSpec, seed: int = 0) -> list[torch.Tensor]:
    """The deterministic inputs of `spec` (`hwlat.profilers.weights.make_inputs`) as CPU tensors."""
    return [torch.from_numpy(x) for x in make_inputs(spec, seed)]


def _load(layer: nn.Module, weights: dict) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights["W"]))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(weights["b"]))
