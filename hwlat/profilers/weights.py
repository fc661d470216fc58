"""Deterministic weights and inputs for an `OpSpec`, so every runtime computes the same function."""

from __future__ import annotations

import zlib

import numpy as np

from hwlat.device_tables.ops import OpSpec


def _rng(spec: OpSpec, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(spec.key.encode()), seed])


def make_weights(spec: OpSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 parameters: ``W`` (OIHW, or out x in for linear), ``b``, ``bn_gamma/beta/mean/var``, a
    scale's per-channel constant ``scale`` (1, C, 1, 1), a layer norm's ``ln_scale``/``ln_bias`` (cols,)
    and an embedding's ``table`` (vocab, dim)."""
    rng = _rng(spec, seed)
    a, base, cin = spec.a, spec.base, spec.input_shape[1]
    out: dict[str, np.ndarray] = {}
    shape = None
    if base == "conv2d":
        shape = (int(a["cout"]), cin // int(a["groups"]), int(a["kernel"]), int(a["kernel"]))
    elif base == "dwconv2d":
        shape = (cin, 1, int(a["kernel"]), int(a["kernel"]))
    elif base == "pwconv2d":
        shape = (int(a["cout"]), cin, 1, 1)
    elif base == "linear":
        shape = (int(a["cout"]), cin)
    if shape is not None:
        fan_in = int(np.prod(shape[1:]))
        out["W"] = (rng.uniform(-1, 1, size=shape) * np.sqrt(3.0 / fan_in)).astype(np.float32)
        if a.get("bias", False):
            out["b"] = rng.uniform(-0.1, 0.1, size=shape[0]).astype(np.float32)
    if base == "scale":
        out["scale"] = rng.uniform(0.5, 1.5, size=(1, cin, 1, 1)).astype(np.float32)
    if base == "layernorm" or "layernorm" in spec.parts[1:]:
        c = spec.output_shape[1]
        out["ln_scale"] = rng.uniform(0.5, 1.5, size=c).astype(np.float32)
        out["ln_bias"] = rng.uniform(-0.2, 0.2, size=c).astype(np.float32)
    if base == "gather":
        out["table"] = rng.uniform(-1, 1, size=(int(a["vocab"]), spec.input_shape[1])).astype(np.float32)
    if base == "bn" or "bn" in spec.parts[1:]:
        c = spec.output_shape[1]
        out["bn_gamma"] = rng.uniform(0.5, 1.5, size=c).astype(np.float32)
        out["bn_beta"] = rng.uniform(-0.2, 0.2, size=c).astype(np.float32)
        out["bn_mean"] = rng.uniform(-0.2, 0.2, size=c).astype(np.float32)
        out["bn_var"] = rng.uniform(0.5, 1.5, size=c).astype(np.float32)
    return out


def make_inputs(spec: OpSpec, seed: int = 0) -> list[np.ndarray]:
    """float32 activations for every input of `spec.input_shapes`, uniform in [-1, 1]; a gather's
    input is its int64 token ids (tokens,), uniform over the vocabulary."""
    rng = _rng(spec, seed + 1000)
    if spec.base == "gather":
        return [rng.integers(0, int(spec.a["vocab"]), size=spec.input_shape[0], dtype=np.int64)]
    return [rng.uniform(-1, 1, size=s).astype(np.float32) for s in spec.input_shapes]


BN_EPS = 1e-5
LN_EPS = 1e-5
