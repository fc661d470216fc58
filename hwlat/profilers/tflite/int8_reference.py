"""Numpy reference of TFLite's int8 kernel arithmetic (full-integer quantisation), NHWC.

Standalone (numpy only) so firmware work can reuse it. `QuantParams` holds a tensor's scale and
zero point (per tensor or per channel, ``real = scale * (q - zero_point)``); `quantize_multiplier`
and `multiply_by_quantized_multiplier` are TFLite's fixed-point requantisation (``QuantizeMultiplier``
and ``MultiplyByQuantizedMultiplier``, tensorflow/lite/kernels/internal/common.h: a Q31 multiplier
and a power-of-two shift); the kernels follow the semantics of TFLite's integer kernels
(tensorflow/lite/kernels/internal/reference/integer_ops/) and the quantisation spec
(https://ai.google.dev/edge/litert/models/quantization_spec): int8 activations in [-128, 127],
symmetric weights in [-127, 127] with zero point 0, int32 bias at input_scale * weight_scale.

TFLite's kernel families round the requantisation differently, and each is reproduced bit-exactly
(checked against LiteRT in tests/test_litert.py); pick one with ``kernels=``:

- ``reference`` (LiteRT's BUILTIN_REF resolver, the portable kernels TFLite Micro shares): gemmlowp
  "double rounding" -- a rounding doubling high multiply, then a rounding right shift with ties
  away from zero -- except FULLY_CONNECTED, observed to round once (as below).
- ``optimized`` (LiteRT's builtin kernels without delegates): conv, depthwise and fully connected
  round the final shift's ties up (toward +inf), except grouped CONV_2D (reference kernel, double
  rounding); MEAN uses a raw-sum/bias formulation.
- ``xnnpack`` (the default XNNPACK delegate): "single rounding", one 64-bit multiply and a shift
  with ties up (as TFLite built with TFLITE_SINGLE_ROUNDING). Some XNNPACK microkernels requantise
  in float instead and can differ by one step on rare ties (seen in 5 of 409 random configurations).
LOGISTIC is a float lookup table and HARD_SWISH a 16-bit fixed-point pipeline in all three.

Written from those documented semantics; no TFLite code is copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Rounding = Literal["double", "double_up", "single"]
Kernels = Literal["reference", "optimized", "xnnpack"]
KERNELS = ("reference", "optimized", "xnnpack")
Activation = Literal["none", "relu", "relu6"]


# ---- quantisation parameters ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QuantParams:
    """Affine quantisation of one tensor: ``real = scale * (q - zero_point)``.

    One scale/zero point per tensor, or one per slice along `quantized_dimension` (per-channel
    weights). Scales are stored as float32, as in the .tflite file, so every derived multiplier is
    computed from exactly the numbers the interpreter reads.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", np.atleast_1d(np.asarray(self.scale, dtype=np.float32)))
        object.__setattr__(self, "zero_point", np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64)))
        if self.scale.shape != self.zero_point.shape:
            raise ValueError(f"{self.scale.size} scales but {self.zero_point.size} zero points")
        if np.any(self.scale <= 0) or not np.all(np.isfinite(self.scale)):
            raise ValueError(f"quantisation scales must be positive and finite, got {self.scale}")

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int = 0) -> "QuantParams":
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def s(self) -> float:
        """The scale of a per-tensor quantisation."""
        if self.per_channel:
            raise ValueError("per-channel parameters have no single scale")
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        """The zero point of a per-tensor quantisation."""
        if self.per_channel:
            raise ValueError("per-channel parameters have no single zero point")
        return int(self.zero_point[0])

    def _bcast(self, values: np.ndarray, ndim: int) -> np.ndarray:
        if not self.per_channel:
            return values.reshape(())
        shape = [1] * ndim
        shape[self.quantized_dimension] = values.size
        return values.reshape(shape)

    def quantize(self, x: np.ndarray, qmin: int = INT8_MIN, qmax: int = INT8_MAX, dtype: type = np.int8) -> np.ndarray:
        """Round half away from zero (std::round), add the zero point, saturate."""
        x = np.asarray(x, np.float64)
        q = round_half_away(x / self._bcast(self.scale.astype(np.float64), x.ndim)) + self._bcast(self.zero_point, x.ndim)
        return np.clip(q, qmin, qmax).astype(dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, np.int64)
        return ((q - self._bcast(self.zero_point, q.ndim)) * self._bcast(self.scale, q.ndim)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"scale": self.scale.tolist(), "zero_point": self.zero_point.tolist(), "quantized_dimension": self.quantized_dimension}


def activation_params(lo: float, hi: float, qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> QuantParams:
    """Asymmetric int8 parameters covering [lo, hi] (widened to include 0, so 0 is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = np.float32((hi - lo) / (qmax - qmin))
    # Nudge the zero point so that real 0 is representable exactly (as TFLite's calibrator does).
    zp = int(np.clip(round_half_away(qmin - lo / float(scale)), qmin, qmax))
    return QuantParams.per_tensor(float(scale), zp)


def symmetric_params(w: np.ndarray, axis: int | None, qmax: int = 127) -> QuantParams:
    """Symmetric weight parameters (zero point 0, range [-qmax, qmax]) per tensor or along `axis`."""
    w = np.asarray(w, np.float32)
    if axis is None:
        amax = np.array([np.abs(w).max()], np.float64)
        dim = 0
    else:
        amax = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1).astype(np.float64)
        dim = axis
    amax = np.where(amax > 0, amax, 1.0)
    return QuantParams((amax / qmax).astype(np.float32), np.zeros(amax.size, np.int64), dim)


def quantize_bias(b: np.ndarray, input_scale: float, weight: QuantParams) -> tuple[np.ndarray, QuantParams]:
    """int32 bias with scale ``input_scale * weight_scale`` (per channel) and zero point 0."""
    scale = (np.float32(input_scale) * weight.scale).astype(np.float32)
    params = QuantParams(scale, np.zeros(scale.size, np.int64), 0)
    q = np.clip(round_half_away(np.asarray(b, np.float64) / scale.astype(np.float64)), INT32_MIN, INT32_MAX)
    return q.astype(np.int32), params


# ---- fixed-point requantisation ---------------------------------------------------------------
def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """std::round: halves go away from zero (numpy's rint goes to even)."""
    x = np.asarray(x, np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: real = m * 2^(shift - 31) with m a Q31 int32 in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return q_fixed, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp: high 32 bits of 2*a*b rounded to nearest (ties away from zero), saturating."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    hi = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C++ integer division truncates toward zero
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, hi)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp: x / 2^exponent rounded to nearest, ties away from zero."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int,
                                     rounding: Rounding = "double") -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` of int32 values (arrays broadcast, e.g. per channel)."""
    x = np.asarray(x, np.int64)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    if rounding == "single":
        total = 31 - shift
        r = (x * multiplier + (np.int64(1) << (total - 1))) >> total
        return np.clip(r, INT32_MIN, INT32_MAX)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    high = saturating_rounding_doubling_high_mul(x * (np.int64(1) << left), multiplier)
    if rounding == "double_up":
        return (high + ((np.int64(1) << right) >> 1)) >> right
    return rounding_divide_by_pot(high, right)


def rounding_of(kind: str, kernels: Kernels, grouped: bool = False) -> Rounding:
    """The requantisation rounding of TFLite op `kind` in kernel family `kernels` (module docstring);
    a grouped CONV_2D has no optimised builtin kernel and runs the reference one."""
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernel family {kernels!r}; choose from {', '.join(KERNELS)}")
    if kernels == "xnnpack":
        return "single"
    if kernels == "optimized" and kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and not grouped:
        return "double_up"
    if kind == "FULLY_CONNECTED":  # the reference kernel's 64-bit requantisation rounds once
        return "single"
    return "double"


def multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` over an array of real multipliers."""
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(real)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def activation_range(act: Activation, out: QuantParams) -> tuple[int, int]:
    """TFLite ``CalculateActivationRangeQuantized``: the fused activation as an int8 clamp."""
    scale, zp = np.float32(out.s), out.zp

    def q(v: float) -> int:
        return zp + int(round_half_away(np.float32(v) / scale))

    if act == "relu":
        return max(INT8_MIN, q(0.0)), INT8_MAX
    if act == "relu6":
        return max(INT8_MIN, q(0.0)), min(INT8_MAX, q(6.0))
    return INT8_MIN, INT8_MAX


def _requant(acc: np.ndarray, real: np.ndarray, out: QuantParams, act: Activation, rounding: Rounding) -> np.ndarray:
    """int32 accumulators (channels last) -> int8 with per-channel multipliers, zero point, clamp."""
    mult, shift = multipliers(real)
    if mult.size == 1:
        mult, shift = mult[0], shift[0]
    y = multiply_by_quantized_multiplier(acc, mult, shift, rounding) + out.zp
    lo, hi = activation_range(act, out)
    return np.clip(y, lo, hi).astype(np.int8)


# ---- kernels (NHWC) ------------------------------------------------------------------------------
def _pad_nhwc(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kh: int, kw: int, stride: int, dilation: int, oh: int, ow: int) -> np.ndarray:
    """(N, OH, OW, KH, KW, C) view of the padded input's receptive fields."""
    n, _, _, c = x.shape
    sn, sh, sw, sc = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (sn, sh * stride, sw * stride, sh * dilation, sw * dilation, sc), writeable=False)


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, dilation and explicit padding (top, bottom, left, right) of a conv or pool window."""

    stride: int = 1
    dilation: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def out_hw(self, h: int, w: int, kh: int, kw: int) -> tuple[int, int]:
        t, b, l, r = self.pads
        oh = (h + t + b - self.dilation * (kh - 1) - 1) // self.stride + 1
        ow = (w + l + r - self.dilation * (kw - 1) - 1) // self.stride + 1
        return oh, ow


def same_padding(h: int, w: int, kh: int, kw: int, stride: int, dilation: int = 1) -> tuple[int, int, int, int]:
    """TFLite SAME padding: output ceil(in/stride), the odd pixel of padding goes after."""
    def one(size: int, k: int) -> tuple[int, int]:
        out = -(-size // stride)
        total = max((out - 1) * stride + dilation * (k - 1) + 1 - size, 0)
        return total // 2, total - total // 2

    t, b = one(h, kh)
    l, r = one(w, kw)
    return t, b, l, r


def conv2d(x: np.ndarray, xq: QuantParams, w: np.ndarray, wq: QuantParams, bias: np.ndarray | None,
           out: QuantParams, geom: ConvGeometry = ConvGeometry(), act: Activation = "none",
           rounding: Rounding = "double") -> np.ndarray:
    """CONV_2D, per-channel: x (N,H,W,Cin) int8, w (Cout,KH,KW,Cin/groups) int8, bias (Cout,) int32.

    Grouped when the filter has fewer input channels than x (groups = Cin / filter channels),
    output channel o reading group o // (Cout / groups), as TFLite infers it."""
    cout, kh, kw, cin_g = w.shape
    n, cin = x.shape[0], x.shape[3]
    if cin % cin_g or cout % (cin // cin_g):
        raise ValueError(f"conv2d: input has {cin} channels, weights expect a divisor-compatible {cin_g}")
    groups = cin // cin_g
    oh, ow = geom.out_hw(x.shape[1], x.shape[2], kh, kw)
    # Padded taps contribute (zp - zp) * w = 0, i.e. they are skipped as in the reference kernel.
    xp = _pad_nhwc(x.astype(np.int64) - xq.zp, geom.pads, 0)
    win = windows(xp, kh, kw, geom.stride, geom.dilation, oh, ow)  # (N,OH,OW,KH,KW,Cin)
    win = win.reshape(n * oh * ow, kh, kw, groups, cin_g)
    wg = w.astype(np.int64).reshape(groups, cout // groups, kh, kw, cin_g)
    acc = np.einsum("pijgc,goijc->pgo", win, wg, optimize=True).reshape(n, oh, ow, cout)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    real = xq.scale.astype(np.float64)[0] * wq.scale.astype(np.float64) / np.float64(out.s)
    return _requant(acc, real, out, act, rounding)


def depthwise_conv2d(x: np.ndarray, xq: QuantParams, w: np.ndarray, wq: QuantParams, bias: np.ndarray | None,
                     out: QuantParams, geom: ConvGeometry = ConvGeometry(), act: Activation = "none",
                     rounding: Rounding = "double") -> np.ndarray:
    """DEPTHWISE_CONV_2D: w (1,KH,KW,C*M) int8 with per-channel scales on dim 3; output channel
    c*M + m reads input channel c (depth multiplier M)."""
    _, kh, kw, cm = w.shape
    mult = cm // x.shape[3]
    oh, ow = geom.out_hw(x.shape[1], x.shape[2], kh, kw)
    xp = _pad_nhwc(x.astype(np.int64) - xq.zp, geom.pads, 0)
    win = windows(xp, kh, kw, geom.stride, geom.dilation, oh, ow)
    if mult > 1:
        win = np.repeat(win, mult, axis=-1)
    acc = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.int64))
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    real = xq.scale.astype(np.float64)[0] * wq.scale.astype(np.float64) / np.float64(out.s)
    return _requant(acc, real, out, act, rounding)


def fully_connected(x: np.ndarray, xq: QuantParams, w: np.ndarray, wq: QuantParams, bias: np.ndarray | None,
                    out: QuantParams, act: Activation = "none", rounding: Rounding = "double") -> np.ndarray:
    """FULLY_CONNECTED: x (N,In) int8, w (Out,In) int8 (per tensor or per channel), bias (Out,) int32."""
    acc = (x.astype(np.int64) - xq.zp) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    real = xq.scale.astype(np.float64)[0] * wq.scale.astype(np.float64) / np.float64(out.s)
    return _requant(acc, real, out, act, rounding)


def average_pool(x: np.ndarray, kernel: int, geom: ConvGeometry, act: Activation = "none",
                 out: QuantParams | None = None) -> np.ndarray:
    """AVERAGE_POOL_2D (input and output share quantisation): in-bounds taps only, rounded mean."""
    n, h, w, c = x.shape
    oh, ow = geom.out_hw(h, w, kernel, kernel)
    xp = _pad_nhwc(x.astype(np.int64), geom.pads, 0)
    sums = windows(xp, kernel, kernel, geom.stride, 1, oh, ow).sum(axis=(3, 4))
    ones = _pad_nhwc(np.ones((1, h, w, 1), np.int64), geom.pads, 0)
    count = windows(ones, kernel, kernel, geom.stride, 1, oh, ow).sum(axis=(3, 4))
    half = count // 2
    # (sum +- count/2) / count with C truncation: round half away from zero.
    num = np.where(sums > 0, sums + half, sums - half)
    avg = np.sign(num) * (np.abs(num) // count)
    lo, hi = activation_range(act, out) if out is not None else (INT8_MIN, INT8_MAX)
    return np.clip(avg, lo, hi).astype(np.int8)


def max_pool(x: np.ndarray, kernel: int, geom: ConvGeometry, act: Activation = "none",
             out: QuantParams | None = None) -> np.ndarray:
    """MAX_POOL_2D (input and output share quantisation): max over in-bounds taps."""
    n, h, w, c = x.shape
    oh, ow = geom.out_hw(h, w, kernel, kernel)
    xp = _pad_nhwc(x.astype(np.int64), geom.pads, np.iinfo(np.int64).min)
    m = windows(xp, kernel, kernel, geom.stride, 1, oh, ow).max(axis=(3, 4))
    lo, hi = activation_range(act, out) if out is not None else (INT8_MIN, INT8_MAX)
    return np.clip(m, lo, hi).astype(np.int8)


ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD works on inputs scaled up by 2^20


def add(a: np.ndarray, aq: QuantParams, b: np.ndarray, bq: QuantParams, out: QuantParams,
        act: Activation = "none", rounding: Rounding = "double") -> np.ndarray:
    """ADD (broadcasting): both inputs rescaled to 2*max(scale) with 2^20 headroom, summed, requantised."""
    twice_max = 2.0 * max(float(aq.s), float(bq.s))
    ma, sa = quantize_multiplier(float(aq.s) / twice_max)
    mb, sb = quantize_multiplier(float(bq.s) / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * float(out.s)))
    xa = multiply_by_quantized_multiplier((a.astype(np.int64) - aq.zp) << ADD_LEFT_SHIFT, ma, sa, rounding)
    xb = multiply_by_quantized_multiplier((b.astype(np.int64) - bq.zp) << ADD_LEFT_SHIFT, mb, sb, rounding)
    y = multiply_by_quantized_multiplier(xa + xb, mo, so, rounding) + out.zp
    lo, hi = activation_range(act, out)
    return np.clip(y, lo, hi).astype(np.int8)


def mul(a: np.ndarray, aq: QuantParams, b: np.ndarray, bq: QuantParams, out: QuantParams,
        act: Activation = "none", rounding: Rounding = "double") -> np.ndarray:
    """MUL (broadcasting): (a - za) * (b - zb) requantised by sa*sb/so."""
    m, s = quantize_multiplier(float(aq.s) * float(bq.s) / float(out.s))
    prod = (a.astype(np.int64) - aq.zp) * (b.astype(np.int64) - bq.zp)
    y = multiply_by_quantized_multiplier(prod, m, s, rounding) + out.zp
    lo, hi = activation_range(act, out)
    return np.clip(y, lo, hi).astype(np.int8)


def relu(x: np.ndarray, xq: QuantParams, out: QuantParams, upper: float | None = None,
         rounding: Rounding = "double") -> np.ndarray:
    """Standalone RELU / RELU6: requantise by in_scale/out_scale, then clamp to [q(0), q(upper)]."""
    m, s = quantize_multiplier(float(xq.s) / float(out.s))
    y = out.zp + multiply_by_quantized_multiplier(x.astype(np.int64) - xq.zp, m, s, rounding)
    lo, hi = activation_range("relu6" if upper == 6.0 else "relu", out)
    return np.clip(y, lo, hi).astype(np.int8)


def lookup_table(xq: QuantParams, out: QuantParams, fn) -> np.ndarray:
    """The 256-entry int8 table TFLite builds for elementwise ops (LOGISTIC, ...), in float32."""
    q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)
    real = np.float32(xq.s) * (q - xq.zp).astype(np.float32)
    y = fn(real.astype(np.float32)).astype(np.float32)
    rescaled = round_half_away(y * (np.float32(1.0) / np.float32(out.s)))
    return np.clip(rescaled + out.zp, INT8_MIN, INT8_MAX).astype(np.int8)


def apply_table(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[x.astype(np.int64) - INT8_MIN]


def logistic(x: np.ndarray, xq: QuantParams, out: QuantParams) -> np.ndarray:
    """LOGISTIC (output scale 1/256, zero point -128) via a float lookup table."""
    return apply_table(x, lookup_table(xq, out, lambda v: 1.0 / (1.0 + np.exp(-v))))


def _trunc_div(a: np.ndarray, d: int) -> np.ndarray:
    """C integer division (truncates toward zero)."""
    return np.where(a >= 0, a // d, -((-a) // d))


def _rounding_high_mul16(a: np.ndarray, b: int) -> np.ndarray:
    """int16 rounding doubling high multiply (gemmlowp, ties away from zero), saturating."""
    a = np.asarray(a, np.int64)
    ab = a * b
    hi = _trunc_div(ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14)), 1 << 15)
    return np.where((a == -32768) & (b == -32768), 32767, hi)


def _high_mul16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int16 doubling high multiply truncating toward zero (like ARM SQDMULH), saturating."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    return np.where((a == -32768) & (b == -32768), 32767, _trunc_div(a * b, 1 << 15))


def _int16_multiplier(m32: int) -> int:
    """A Q31 multiplier rounded to Q15."""
    return 32767 if m32 >= INT32_MAX - (1 << 15) else (m32 + (1 << 15)) >> 16


def hardswish(x: np.ndarray, xq: QuantParams, out: QuantParams) -> np.ndarray:
    """HARD_SWISH as TFLite computes it for int8: in 16-bit fixed point, the input on a 2^7 finer
    scale times a "relu-ish" factor relu6(x + 3) / 6 in Q15, then one rounding shift to the output."""
    f32 = np.float32
    hires = f32(1.0 / 128.0) * f32(xq.s)
    out_m, out_e = quantize_multiplier(float(hires / f32(out.s)))
    relu_m, relu_e = quantize_multiplier(float(hires / (f32(3.0) / f32(32768.0))))  # 3.0 <-> 2^15
    out_m, relu_m = _int16_multiplier(out_m), _int16_multiplier(relu_m)
    v = (x.astype(np.int64) - xq.zp) * (1 << 7)
    on_out_scale = _rounding_high_mul16(v, out_m)
    r = v
    if relu_e > 0:  # left shift in two steps so that saturation cannot bias the result
        r = np.clip(r * (1 << (relu_e - 1)), -32768, 32767)
    r = _rounding_high_mul16(r, relu_m)
    if relu_e > 0:
        r = np.clip(r * 2, -32768, 32767)
    elif relu_e < 0:
        r = rounding_divide_by_pot(r, -relu_e)
    r = (r + (1 << 15)) >> 1  # [-1, 1] -> [0, 1] in Q15
    y = rounding_divide_by_pot(_high_mul16(r, on_out_scale), max(0, -out_e)) + out.zp
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def mean_hw(x: np.ndarray, xq: QuantParams, out: QuantParams, kernels: Kernels = "reference") -> np.ndarray:
    """MEAN over H and W with keep_dims.

    reference/xnnpack: sum of (q - zp_in), requantised by a multiplier for s_in/s_out whose Q31
    value is divided by the element count (integer division after a left shift of
    floor(log2 count)), double or single rounding. optimized: the raw sum requantised by
    s_in/(count * s_out) plus a bias zp_out - round(zp_in * s_in / s_out), ties up.
    """
    count = x.shape[1] * x.shape[2]
    if kernels == "optimized":
        f32 = np.float32
        raw = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
        m, s = quantize_multiplier(float(f32(xq.s) / (f32(count) * f32(out.s))))
        bias = out.zp - int(round_half_away(f32(xq.zp) * f32(xq.s) / f32(out.s)))
        y = multiply_by_quantized_multiplier(raw, m, s, "double_up") + bias
    else:
        acc = (x.astype(np.int64) - xq.zp).sum(axis=(1, 2), keepdims=True)
        m, s = quantize_multiplier(float(xq.s) / float(out.s))
        shift = min(count.bit_length() - 1, 32, 31 + s)
        m = (m << shift) // count
        y = multiply_by_quantized_multiplier(acc, m, s - shift, "single" if kernels == "xnnpack" else "double") + out.zp
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def pad(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    """PAD / PADV2 on H and W (PAD fills with the zero point, i.e. real 0)."""
    return _pad_nhwc(x, pads, value).astype(x.dtype)


def concatenate(xs: list[np.ndarray], axis: int = 3) -> np.ndarray:
    """CONCATENATION with every input quantised like the output: a plain copy."""
    return np.concatenate(xs, axis=axis)


__all__ = [
    "QuantParams", "ConvGeometry", "activation_params", "symmetric_params", "quantize_bias", "quantize_multiplier",
    "multiply_by_quantized_multiplier", "activation_range", "same_padding", "conv2d", "depthwise_conv2d",
    "fully_connected", "average_pool", "max_pool", "add", "mul", "relu", "logistic", "hardswish", "mean_hw",
    "pad", "concatenate", "lookup_table", "round_half_away", "windows", "QuantizedOp", "QuantizedGraph", "rounding_of", "KERNELS",
]


# ---- one quantised kernel, as the builder exports it ---------------------------------------------
@dataclass(eq=False)
class QuantizedOp:
    """One int8 kernel and every number needed to run it, named as in TFLite.

    This is what `hwlat.profilers.tflite.builder.export_quantized` returns for a spec and what firmware
    (or `run`) consumes: weights in TFLite layout (CONV_2D OHWI, DEPTHWISE_CONV_2D 1HWC,
    FULLY_CONNECTED OI), int32 bias, the parameters of every tensor, explicit padding, and the
    fused activation. For ADD/MUL with a constant operand (batch norm as MUL+ADD), `weights`
    holds that operand and `weight_params` its quantisation.
    """

    kind: str
    inputs: tuple[QuantParams, ...]
    output: QuantParams
    weights: np.ndarray | None = None
    weight_params: QuantParams | None = None
    bias: np.ndarray | None = None
    geometry: ConvGeometry = ConvGeometry()
    kernel: int = 0
    activation: str = "none"
    pad_value: int = 0
    depth_multiplier: int = 1

    def requantisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-output-channel (multiplier, shift) of conv/depthwise/fully-connected kernels."""
        if self.weight_params is None:
            raise ValueError(f"{self.kind} has no weights and so no per-channel requantisation")
        real = np.float64(self.inputs[0].s) * self.weight_params.scale.astype(np.float64) / np.float64(self.output.s)
        return multipliers(real)

    def run(self, *xs: np.ndarray, kernels: Kernels = "reference") -> np.ndarray:
        """Apply the kernel to int8 activations (NHWC, or NC for FULLY_CONNECTED), rounding like
        TFLite's `kernels` family."""
        k, act, out = self.kind, self.activation, self.output
        grouped = k == "CONV_2D" and self.weights is not None and self.weights.shape[3] != xs[0].shape[3]
        rounding = rounding_of(k, kernels, grouped)
        if k == "CONV_2D":
            return conv2d(xs[0], self.inputs[0], self.weights, self.weight_params, self.bias, out, self.geometry, act, rounding)
        if k == "DEPTHWISE_CONV_2D":
            return depthwise_conv2d(xs[0], self.inputs[0], self.weights, self.weight_params, self.bias, out, self.geometry, act, rounding)
        if k == "FULLY_CONNECTED":
            return fully_connected(xs[0], self.inputs[0], self.weights, self.weight_params, self.bias, out, act, rounding)
        if k == "AVERAGE_POOL_2D":
            return average_pool(xs[0], self.kernel, self.geometry, act, out)
        if k == "MAX_POOL_2D":
            return max_pool(xs[0], self.kernel, self.geometry, act, out)
        if k in ("ADD", "MUL"):
            fn = add if k == "ADD" else mul
            if self.weights is not None:
                return fn(xs[0], self.inputs[0], self.weights, self.weight_params, out, act, rounding)
            return fn(xs[0], self.inputs[0], xs[1], self.inputs[1], out, act, rounding)
        if k in ("RELU", "RELU6"):
            return relu(xs[0], self.inputs[0], out, 6.0 if k == "RELU6" else None, rounding)
        if k == "LOGISTIC":
            return logistic(xs[0], self.inputs[0], out)
        if k == "HARD_SWISH":
            return hardswish(xs[0], self.inputs[0], out)
        if k == "MEAN":
            return mean_hw(xs[0], self.inputs[0], out, kernels)
        if k in ("PAD", "PADV2"):
            return pad(xs[0], self.geometry.pads, self.pad_value)
        if k == "CONCATENATION":
            return concatenate(list(xs), axis=3)
        raise ValueError(f"no int8 reference for TFLite op {k}")


@dataclass(eq=False)
class QuantizedGraph:
    """A chain (or small DAG) of `QuantizedOp`s over numbered activation tensors."""

    steps: list[tuple[QuantizedOp, tuple[int, ...], int]]  # kernel, activation tensor ids read, tensor id written
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    params: dict[int, QuantParams]  # quantisation of every activation tensor
    shapes: dict[int, tuple[int, ...]]

    def run(self, *xs: np.ndarray, kernels: Kernels = "reference") -> list[np.ndarray]:
        """int8 inputs (NHWC) -> int8 outputs, kernel by kernel, rounding like TFLite's `kernels`."""
        if len(xs) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} inputs, got {len(xs)}")
        values = dict(zip(self.inputs, xs))
        for op, ins, out in self.steps:
            values[out] = op.run(*(values[i] for i in ins), kernels=kernels)
        return [values[i] for i in self.outputs]
