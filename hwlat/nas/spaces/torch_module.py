"""`Net` -> torch `nn.Module` (eval mode): real Conv2d / BatchNorm2d / activations, run layer by layer;
transformer layers from `hwlat.nas.spaces.token_modules`."""

from __future__ import annotations

from hwlat.nas.spaces.network import BN_EPS, Net


def net_to_torch(net: Net):
    """A module computing `net`; its parameters are the net's weights, batch-norm unfolded."""
    import torch
    from torch import nn

    from hwlat.nas.spaces import token_modules

    def act_module(kind: str | None) -> nn.Module:
        if kind == "gelu_tanh":
            return nn.GELU(approximate="tanh")
        return {None: nn.Identity, "relu": nn.ReLU, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid,
                "silu": nn.SiLU, "gelu": nn.GELU}[kind]()

    def bn_module(c: int, p: dict) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(c, eps=BN_EPS)
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(p["bn_gamma"]))
            bn.bias.copy_(torch.from_numpy(p["bn_beta"]))
            bn.running_mean.copy_(torch.from_numpy(p["bn_mean"]))
            bn.running_var.copy_(torch.from_numpy(p["bn_var"]))
        return bn

    class ChannelShuffle(nn.Module):
        def __init__(self, groups: int):
            super().__init__()
            self.groups = groups

        def forward(self, x):
            n, c, h, w = x.shape
            return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    class NetModule(nn.Module):
        """Layers in a ModuleDict, applied in order to a dict of named tensors."""

        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleDict()
            self.plan: list[tuple[str, str, tuple[str, ...]]] = []  # (kind, module key, inputs)
            self.output = net.output

        def forward(self, x):
            env = {"input": x}
            for (kind, key, inputs), name in zip(self.plan, self.names):
                xs = [env[i] for i in inputs]
                if kind == "add":
                    env[name] = xs[0] + xs[1]
                elif kind == "mul":
                    env[name] = xs[0] * xs[1]
                elif kind == "zero":
                    env[name] = xs[0] * 0.0
                elif kind == "gap":
                    env[name] = xs[0].mean(dim=(2, 3), keepdim=True)
                elif kind == "flatten":
                    env[name] = torch.flatten(xs[0], 1)
                elif kind == "concat":
                    env[name] = torch.cat(xs, dim=1)
                else:
                    env[name] = self.layers[key](xs[0])
            return env[self.output]

    module = NetModule()
    names = []
    for i, layer in enumerate(net.layers):
        a, p = layer.attrs, layer.params
        key = f"m{i}"
        if layer.kind == "conv":
            conv = nn.Conv2d(a["cin"], a["cout"], a["kernel"], stride=a["stride"], padding=a["padding"], groups=a["groups"],
                             bias=a["bias"])
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(p["W"]))
                if a["bias"]:
                    conv.bias.copy_(torch.from_numpy(p["b"]))
            parts = [conv] + ([bn_module(a["cout"], p)] if a["bn"] else []) + [act_module(a["act"])]
            module.layers[key] = nn.Sequential(*parts)
        elif layer.kind == "bn_act":
            module.layers[key] = nn.Sequential(bn_module(layer.in_shape[1], p), act_module(a["act"]))
        elif layer.kind == "act":
            module.layers[key] = act_module(a["act"])
        elif layer.kind == "avgpool":
            module.layers[key] = nn.AvgPool2d(a["kernel"], a["stride"], a["padding"], count_include_pad=a["count_include_pad"])
        elif layer.kind == "linear":
            lin = nn.Linear(a["cin"], a["cout"])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(p["W"]))
                lin.bias.copy_(torch.from_numpy(p["b"]))
            module.layers[key] = nn.Sequential(lin, act_module(a["act"])) if a.get("act") else lin
        elif layer.kind == "shuffle":
            module.layers[key] = ChannelShuffle(a["groups"])
        elif layer.kind in token_modules.BUILDERS:
            module.layers[key] = token_modules.BUILDERS[layer.kind](layer)
        module.plan.append((layer.kind, key, layer.inputs))
        names.append(layer.name)
    module.names = names
    return module.eval()
