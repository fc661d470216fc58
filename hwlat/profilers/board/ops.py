"""An `OpSpec` as one firmware kernel call: the OP line, its tensors (streamed or board-drawn), the expected output.

The op is lowered exactly as `hwlat.profilers.tflite.builder` builds its int8 .tflite model (batch norm
folded, ReLU/ReLU6 fused, PyTorch padding as an explicit PAD before the kernel), so the board,
TFLite Micro and the numpy int8 reference (`hwlat.profilers.tflite.int8_reference`) all compute the same
function from the same quantised weights. A PAD (or the lowest-value PADV2 before a max pool) is
folded into the kernel's padding: padded taps add nothing to a convolution and never win a max.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hwlat.device_tables.errors import UnsupportedOpError
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.tflite import int8_reference as q8

KERNELS = ("conv2d", "dwconv2d", "pwconv2d", "linear", "avgpool", "maxpool", "add", "relu", "mean", "bn", "mul")
# Tensor order on the board (PROTOCOL.md): inputs, weights, bias, multipliers, shifts, output.
TENSOR_ORDER = ("x", "x2", "w", "b", "m", "s", "y")
INPUTS = ("x", "x2", "w", "b", "m", "s")


def _align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class BoardOp:
    """One kernel call for the firmware: its OP parameters, input tensors and expected output."""

    spec: OpSpec
    kernel: str
    params: dict[str, int]
    tensors: dict[str, np.ndarray]            # x, x2, w (int8), b, m, s (int32)
    expected: np.ndarray                      # the int8 reference output (NHWC or NC)
    tflite_ops: str = ""
    fills: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # tensor -> FILL (seed, lo, hi)
    graph: q8.QuantizedGraph | None = field(default=None, repr=False)     # to recompute `expected`
    main: int = 0                                                          # the kernel's step in `graph`

    @property
    def op_line(self) -> str:
        return "OP " + self.kernel + "".join(f" {k}={int(v)}" for k, v in self.params.items())

    def data(self, name: str) -> bytes:
        """The tensor's bytes as the board stores them (int8, or little-endian int32)."""
        arr = self.tensors[name]
        return np.ascontiguousarray(arr.astype("<i4" if arr.dtype.kind == "i" and arr.dtype.itemsize > 1 else "i1")).tobytes()

    @property
    def sizes(self) -> dict[str, int]:
        """Bytes of every tensor the board allocates, in board order."""
        sizes = {name: len(self.data(name)) for name in INPUTS if name in self.tensors}
        sizes["y"] = int(self.expected.size)
        return {name: sizes[name] for name in TENSOR_ORDER if name in sizes}

    @property
    def arena_bytes(self) -> int:
        """RAM the firmware's arena needs: every tensor, 8-byte aligned (as the firmware allocates)."""
        return sum(_align8(n) for n in self.sizes.values())

    @property
    def flash_bytes(self) -> int:
        """Constant bytes (weights, bias, requantisation) a deployment would keep in flash."""
        return sum(n for name, n in self.sizes.items() if name in ("w", "b", "m", "s"))

    @property
    def expected_crc(self) -> str:
        return f"{zlib.crc32(np.ascontiguousarray(self.expected).astype(np.int8).tobytes()):08x}"


def _act(op: q8.QuantizedOp) -> tuple[int, int]:
    return q8.activation_range(op.activation, op.output)  # type: ignore[arg-type]


def _requant_tensors(op: q8.QuantizedOp, cout: int) -> dict[str, np.ndarray]:
    mult, shift = op.requantisation()
    if mult.size == 1:  # per-tensor (fully connected): the firmware always reads per channel
        mult, shift = np.repeat(mult, cout), np.repeat(shift, cout)
    bias = op.bias if op.bias is not None else np.zeros(cout, np.int32)
    return {"b": bias.astype(np.int32), "m": mult.astype(np.int32), "s": shift.astype(np.int32)}


def _add_rescaling(aq: q8.QuantParams, bq: q8.QuantParams, out: q8.QuantParams) -> dict[str, int]:
    """The firmware's ADD parameters: both inputs rescaled to twice the larger scale with 2^20 headroom,
    the sum requantised to the output (the reference's, and TFLite's, ADD)."""
    twice_max = 2.0 * max(float(aq.s), float(bq.s))
    m1, s1 = q8.quantize_multiplier(float(aq.s) / twice_max)
    m2, s2 = q8.quantize_multiplier(float(bq.s) / twice_max)
    mo, so = q8.quantize_multiplier(twice_max / ((1 << q8.ADD_LEFT_SHIFT) * float(out.s)))
    return {"ls": q8.ADD_LEFT_SHIFT, "m1": m1, "s1": s1, "m2": m2, "s2": s2, "mo": mo, "so": so}


def _batch_norm(spec: OpSpec, model: Any, graph: Any, steps: list[q8.QuantizedOp]) -> BoardOp:
    """A standalone batch norm, which TFLite runs as MUL by a per-channel constant then ADD of one: the
    firmware's ``bn`` kernel does both steps' arithmetic in turn (the ADD's constant travels as ``b``)."""
    mul, add = steps
    x = model.inputs[0]
    if x.ndim != 4 or mul.weights.size != x.shape[3] or add.weights.size != x.shape[3]:
        raise UnsupportedOpError(f"{spec.key}: lowers to MUL+ADD by constants that are not per channel")
    n, h, w, c = (int(s) for s in x.shape)
    xq, wq, mid, bq, out = mul.inputs[0], mul.weight_params, mul.output, add.weight_params, add.output
    m, s = q8.quantize_multiplier(float(xq.s) * float(wq.s) / float(mid.s))
    lo, hi = _act(add)
    params = {"n": n, "h": h, "w": w, "c": c, "zi": xq.zp, "zw": wq.zp, "zt": mid.zp, "zi2": bq.zp, "zo": out.zp,
              "amin": lo, "amax": hi, **_add_rescaling(mid, bq, out)}
    tensors = {"x": x, "w": mul.weights.astype(np.int8).reshape(c), "b": add.weights.astype(np.int32).reshape(c),
               "m": np.full(c, m, np.int32), "s": np.full(c, s, np.int32)}
    return BoardOp(spec, "bn", {k: int(v) for k, v in params.items()}, tensors, model.reference()[0], model.op_names,
                   graph=graph, main=0)


def lower(spec: OpSpec, seed: int = 0) -> BoardOp:
    """Lower an int8 spec to one firmware kernel; `UnsupportedOpError` names what does not map."""
    from hwlat.profilers.tflite.builder import build_model, quantized_graph

    if spec.dtype != "int8":
        spec = spec.replace(dtype="int8")
    model = build_model(spec, seed)
    graph = quantized_graph(model.graph)
    steps = [s[0] for s in graph.steps]
    names = model.op_names
    pad: q8.QuantizedOp | None = None
    if [s.kind for s in steps] == ["MUL", "ADD"] and all(s.weights is not None for s in steps):
        return _batch_norm(spec, model, graph, steps)
    if len(steps) == 2 and steps[0].kind in ("PAD", "PADV2"):
        pad, main = steps
    elif len(steps) == 1:
        main = steps[0]
    else:
        raise UnsupportedOpError(f"{spec.key}: lowers to {names}, more than one firmware kernel "
                                 f"(the board runs one of {', '.join(KERNELS)} per op)")
    x = model.inputs[0]
    expected = model.reference()[0]
    xq, out = main.inputs[0], main.output
    geom = main.geometry
    pads = pad.geometry.pads if pad is not None else geom.pads
    n = int(x.shape[0])
    lo, hi = _act(main)
    common = {"zi": xq.zp, "zo": out.zp, "amin": lo, "amax": hi}
    kind = main.kind

    if pad is not None:
        if kind == "AVERAGE_POOL_2D":
            raise UnsupportedOpError(f"{spec.key}: lowers to {names}; the firmware's avgpool never counts padded "
                                     "taps (count_include_pad=false semantics), so padded averaging does not map")
        if kind == "MAX_POOL_2D" and pad.pad_value != q8.INT8_MIN:
            raise UnsupportedOpError(f"{spec.key}: max pool padded with {pad.pad_value}, not the lowest value")
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and pad.pad_value != xq.zp:
            raise UnsupportedOpError(f"{spec.key}: padding value {pad.pad_value} is not the input zero point")

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        _, h, w, c = (int(s) for s in x.shape)
        _, oh, ow, oc = (int(s) for s in expected.shape)
        wts = main.weights
        kh, kw = int(wts.shape[1]), int(wts.shape[2])
        params = {"n": n, "h": h, "w": w, "c": c, "oh": oh, "ow": ow, "oc": oc, "kh": kh, "kw": kw,
                  "sh": geom.stride, "sw": geom.stride, "ph": pads[0], "pw": pads[2],
                  "dh": geom.dilation, "dw": geom.dilation}
        if kind == "DEPTHWISE_CONV_2D":
            kernel = "dwconv2d"
            params["dm"] = int(main.depth_multiplier)
        elif spec.base == "pwconv2d" and kh == kw == 1 and not any(pads):
            kernel = "pwconv2d"
            for k in ("kh", "kw", "ph", "pw", "dh", "dw"):
                params.pop(k)
        else:
            kernel = "conv2d"
            params["groups"] = c // int(wts.shape[3])
        params.update(common)
        tensors = {"x": x, "w": wts.astype(np.int8), **_requant_tensors(main, oc)}
    elif kind == "FULLY_CONNECTED":
        c, oc = int(x.shape[1]), int(expected.shape[1])
        kernel = "linear"
        params = {"n": n, "c": c, "oc": oc, **common}
        tensors = {"x": x, "w": main.weights.astype(np.int8), **_requant_tensors(main, oc)}
    elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        _, h, w, c = (int(s) for s in x.shape)
        _, oh, ow, _ = (int(s) for s in expected.shape)
        kernel = "avgpool" if kind == "AVERAGE_POOL_2D" else "maxpool"
        params = {"n": n, "h": h, "w": w, "c": c, "oh": oh, "ow": ow, "kh": main.kernel, "kw": main.kernel,
                  "sh": geom.stride, "sw": geom.stride, "ph": pads[0], "pw": pads[2], **common}
        tensors = {"x": x}
    elif kind in ("RELU", "RELU6") and pad is None and x.ndim == 4:
        _, h, w, c = (int(s) for s in x.shape)
        mo, so = q8.quantize_multiplier(float(xq.s) / float(out.s))  # the reference's requantisation
        kernel = "relu"
        lo, hi = q8.activation_range("relu6" if kind == "RELU6" else "relu", out)  # the op is its own clamp
        params = {"n": n, "h": h, "w": w, "c": c, "mo": mo, "so": so, **common, "amin": lo, "amax": hi}
        tensors = {"x": x}
    elif kind == "MEAN" and pad is None and x.ndim == 4 and int(expected.size) == n * int(x.shape[3]):
        _, h, w, c = (int(s) for s in x.shape)
        count = h * w  # the reference's multiplier for s_in / s_out, with 1/count folded in
        mo, so = q8.quantize_multiplier(float(xq.s) / float(out.s))
        shift = min(count.bit_length() - 1, 32, 31 + so)
        kernel = "mean"
        params = {"n": n, "h": h, "w": w, "c": c, "mo": (mo << shift) // count, "so": so - shift, **common,
                  "amin": q8.INT8_MIN, "amax": q8.INT8_MAX}
        tensors = {"x": x}
    elif kind == "MUL" and main.weights is not None and x.ndim == 4 and main.weights.size == x.shape[3]:
        _, h, w, c = (int(s) for s in x.shape)  # a per-channel constant: NB201's zero op (x * 0)
        wq = main.weight_params
        m, s = q8.quantize_multiplier(float(xq.s) * float(wq.s) / float(out.s))
        kernel = "mul"
        params = {"n": n, "h": h, "w": w, "c": c, "zw": wq.zp, "bias": 0, **common}
        tensors = {"x": x, "w": main.weights.astype(np.int8).reshape(c), "m": np.full(c, m, np.int32),
                   "s": np.full(c, s, np.int32)}
    elif kind == "ADD" and main.weights is None and len(model.inputs) == 2 and model.inputs[1].shape == x.shape:
        _, h, w, c = (int(s) for s in x.shape)
        aq, bq = main.inputs
        kernel = "add"
        params = {"n": n, "h": h, "w": w, "c": c, "zi": aq.zp, "zi2": bq.zp, "zo": out.zp, "amin": lo, "amax": hi,
                  **_add_rescaling(aq, bq, out)}
        tensors = {"x": x, "x2": model.inputs[1]}
    else:
        raise UnsupportedOpError(f"{spec.key}: lowers to TFLite {names}, which the reference firmware does not run "
                                 f"(it runs {', '.join(KERNELS)}, with folded batch norm and fused relu/relu6)")
    return BoardOp(spec, kernel, {k: int(v) for k, v in params.items()}, tensors, expected, names,
                   graph=graph, main=len(steps) - 1)


def xorshift_fill(seed: int, lo: int, hi: int, n: int) -> np.ndarray:
    """The firmware's FILL: xorshift32 (13, 17, 5) from `seed`, each state mapped to
    ``lo + (state * (hi - lo + 1)) >> 32``, as int8."""
    state, span = seed & 0xFFFFFFFF, hi - lo + 1
    out = bytearray(n)
    for i in range(n):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        out[i] = (lo + ((state * span) >> 32)) & 0xFF
    return np.frombuffer(bytes(out), np.int8)


# int8 tensors the board can generate itself, with their value ranges (weights are symmetric).
FILL_RANGES = {"x": (q8.INT8_MIN, q8.INT8_MAX), "x2": (q8.INT8_MIN, q8.INT8_MAX), "w": (-127, 127)}


def seeded(bop: BoardOp) -> BoardOp:
    """The same kernel call with its activations and weights drawn by the board's FILL PRNG instead
    of streamed (quantisation parameters, bias and requantisation stay the model's), and the
    expected output recomputed by the int8 reference. Uniform int8 values match the statistics of
    hwlat's uniform weights and inputs once quantised, and spare a slow serial line the bulk."""
    if bop.graph is None:
        raise ValueError("seeded() needs a BoardOp made by lower()")
    fills, tensors = {}, dict(bop.tensors)
    for name, (lo, hi) in FILL_RANGES.items():
        if name not in tensors:
            continue
        seed = (zlib.crc32(f"{bop.spec.key}/{name}".encode()) & 0x7FFFFFFF) or 1
        fills[name] = (seed, lo, hi)
        tensors[name] = xorshift_fill(seed, lo, hi, tensors[name].size).reshape(tensors[name].shape)
    steps = list(bop.graph.steps)
    op, ins, out = steps[bop.main]
    if "w" in tensors and op.weights is not None:
        steps[bop.main] = (replace(op, weights=tensors["w"].reshape(op.weights.shape)), ins, out)
    graph = replace(bop.graph, steps=steps)
    inputs = [tensors["x"]] + ([tensors["x2"]] if "x2" in tensors else [])
    expected = graph.run(*inputs)[0]
    return replace(bop, tensors=tensors, expected=expected, fills=fills, graph=graph)
