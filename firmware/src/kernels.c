/* int8 kernels following the arithmetic of TFLite's reference_integer_ops (see kernels.h). */
#include "kernels.h"

#include <stddef.h>

/* (a * b * 2) >> 32 with rounding to nearest and saturation of the single overflow case. */
static inline int32_t sat_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    /* C division truncates toward zero, as TFLite's gemmlowp-derived helper requires. */
    return (int32_t)((ab + nudge) / (1LL << 31));
}

/* x / 2^exponent rounded to nearest, ties away from zero. */
static inline int32_t rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    int32_t mask = (int32_t)((1LL << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    return rounding_divide_by_pot(sat_rounding_doubling_high_mul((int32_t)((uint32_t)x << left), multiplier), right);
}

static inline int8_t clamp_output(int32_t acc, const op_params *p)
{
    acc += p->out_offset;
    if (acc < p->act_min) acc = p->act_min;
    if (acc > p->act_max) acc = p->act_max;
    return (int8_t)acc;
}

static inline int8_t requantize(int32_t acc, int32_t mult, int32_t shift, const op_params *p)
{
    return clamp_output(mul_by_quantized_multiplier(acc, mult, shift), p);
}

/* Fully connected rounds once: one 64-bit product, then a shift with ties up (TFLite's reference
 * FULLY_CONNECTED, as LiteRT's BUILTIN_REF kernels run it; the host reference's "single" rounding). */
static inline int8_t requantize_once(int32_t acc, int32_t mult, int32_t shift, const op_params *p)
{
    const int32_t total = 31 - shift;
    int64_t r = ((int64_t)acc * (int64_t)mult + (1LL << (total - 1))) >> total;
    if (r > INT32_MAX) r = INT32_MAX;
    if (r < INT32_MIN) r = INT32_MIN;
    return clamp_output((int32_t)r, p);
}

void conv2d_s8(const op_params *p, const op_tensors *t)
{
    const int32_t cin_g = p->c / p->groups;     /* input channels per group */
    const int32_t cout_g = p->oc / p->groups;   /* output channels per group */
    for (int32_t b = 0; b < p->n; ++b) {
        for (int32_t oy = 0; oy < p->oh; ++oy) {
            const int32_t iy0 = oy * p->sh - p->ph;
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pw;
                int8_t *out = t->y + (((size_t)b * p->oh + oy) * p->ow + ox) * p->oc;
                for (int32_t co = 0; co < p->oc; ++co) {
                    const int32_t cbase = (co / cout_g) * cin_g;
                    const int8_t *filt = t->w + (size_t)co * p->kh * p->kw * cin_g;
                    int32_t acc = 0;
                    for (int32_t fy = 0; fy < p->kh; ++fy) {
                        const int32_t iy = iy0 + fy * p->dh;
                        if (iy < 0 || iy >= p->h) continue;
                        for (int32_t fx = 0; fx < p->kw; ++fx) {
                            const int32_t ix = ix0 + fx * p->dw;
                            if (ix < 0 || ix >= p->w) continue;
                            const int8_t *in = t->x + (((size_t)b * p->h + iy) * p->w + ix) * p->c + cbase;
                            const int8_t *f = filt + ((size_t)fy * p->kw + fx) * cin_g;
                            for (int32_t ci = 0; ci < cin_g; ++ci) {
                                acc += ((int32_t)f[ci] + p->w_offset) * ((int32_t)in[ci] + p->in_offset);
                            }
                        }
                    }
                    if (t->bias) acc += t->bias[co];
                    out[co] = requantize(acc, t->mult[co], t->shift[co], p);
                }
            }
        }
    }
}

void dwconv2d_s8(const op_params *p, const op_tensors *t)
{
    const int32_t mult = p->oc / p->c;   /* depth multiplier */
    for (int32_t b = 0; b < p->n; ++b) {
        for (int32_t oy = 0; oy < p->oh; ++oy) {
            const int32_t iy0 = oy * p->sh - p->ph;
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pw;
                int8_t *out = t->y + (((size_t)b * p->oh + oy) * p->ow + ox) * p->oc;
                for (int32_t ci = 0; ci < p->c; ++ci) {
                    for (int32_t m = 0; m < mult; ++m) {
                        const int32_t co = ci * mult + m;
                        int32_t acc = 0;
                        for (int32_t fy = 0; fy < p->kh; ++fy) {
                            const int32_t iy = iy0 + fy * p->dh;
                            if (iy < 0 || iy >= p->h) continue;
                            for (int32_t fx = 0; fx < p->kw; ++fx) {
                                const int32_t ix = ix0 + fx * p->dw;
                                if (ix < 0 || ix >= p->w) continue;
                                int32_t v = t->x[(((size_t)b * p->h + iy) * p->w + ix) * p->c + ci];
                                int32_t f = t->w[((size_t)fy * p->kw + fx) * p->oc + co];
                                acc += (f + p->w_offset) * (v + p->in_offset);
                            }
                        }
                        if (t->bias) acc += t->bias[co];
                        out[co] = requantize(acc, t->mult[co], t->shift[co], p);
                    }
                }
            }
        }
    }
}

void pwconv2d_s8(const op_params *p, const op_tensors *t)
{
    /* A 1x1 convolution without padding: every output pixel is a matrix-vector product. */
    for (int32_t b = 0; b < p->n; ++b) {
        for (int32_t oy = 0; oy < p->oh; ++oy) {
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                const int8_t *in = t->x + (((size_t)b * p->h + oy * p->sh) * p->w + ox * p->sw) * p->c;
                int8_t *out = t->y + (((size_t)b * p->oh + oy) * p->ow + ox) * p->oc;
                for (int32_t co = 0; co < p->oc; ++co) {
                    const int8_t *f = t->w + (size_t)co * p->c;
                    int32_t acc = 0;
                    for (int32_t ci = 0; ci < p->c; ++ci) {
                        acc += ((int32_t)f[ci] + p->w_offset) * ((int32_t)in[ci] + p->in_offset);
                    }
                    if (t->bias) acc += t->bias[co];
                    out[co] = requantize(acc, t->mult[co], t->shift[co], p);
                }
            }
        }
    }
}

void linear_s8(const op_params *p, const op_tensors *t)
{
    for (int32_t b = 0; b < p->n; ++b) {
        const int8_t *in = t->x + (size_t)b * p->c;
        int8_t *out = t->y + (size_t)b * p->oc;
        for (int32_t co = 0; co < p->oc; ++co) {
            const int8_t *f = t->w + (size_t)co * p->c;
            int32_t acc = 0;
            for (int32_t ci = 0; ci < p->c; ++ci) {
                acc += ((int32_t)f[ci] + p->w_offset) * ((int32_t)in[ci] + p->in_offset);
            }
            if (t->bias) acc += t->bias[co];
            out[co] = requantize_once(acc, t->mult[co], t->shift[co], p);
        }
    }
}

/* Pools keep the input's scale and zero point (as TFLite requires), so there is no requantisation;
 * the window is clipped to the image and the average divides by the clipped count. */
void avgpool_s8(const op_params *p, const op_tensors *t)
{
    for (int32_t b = 0; b < p->n; ++b) {
        for (int32_t oy = 0; oy < p->oh; ++oy) {
            const int32_t iy0 = oy * p->sh - p->ph;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fy1 = p->kh < p->h - iy0 ? p->kh : p->h - iy0;
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pw;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t fx1 = p->kw < p->w - ix0 ? p->kw : p->w - ix0;
                int8_t *out = t->y + (((size_t)b * p->oh + oy) * p->ow + ox) * p->c;
                for (int32_t ch = 0; ch < p->c; ++ch) {
                    int32_t acc = 0, count = 0;
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            acc += t->x[(((size_t)b * p->h + iy0 + fy) * p->w + ix0 + fx) * p->c + ch];
                            ++count;
                        }
                    }
                    if (count == 0) {
                        out[ch] = 0;  /* TFLite rejects such windows; keep the output defined */
                        continue;
                    }
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    if (acc < p->act_min) acc = p->act_min;
                    if (acc > p->act_max) acc = p->act_max;
                    out[ch] = (int8_t)acc;
                }
            }
        }
    }
}

void maxpool_s8(const op_params *p, const op_tensors *t)
{
    for (int32_t b = 0; b < p->n; ++b) {
        for (int32_t oy = 0; oy < p->oh; ++oy) {
            const int32_t iy0 = oy * p->sh - p->ph;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fy1 = p->kh < p->h - iy0 ? p->kh : p->h - iy0;
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pw;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t fx1 = p->kw < p->w - ix0 ? p->kw : p->w - ix0;
                int8_t *out = t->y + (((size_t)b * p->oh + oy) * p->ow + ox) * p->c;
                for (int32_t ch = 0; ch < p->c; ++ch) {
                    int32_t best = -128;
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            int32_t v = t->x[(((size_t)b * p->h + iy0 + fy) * p->w + ix0 + fx) * p->c + ch];
                            if (v > best) best = v;
                        }
                    }
                    if (best < p->act_min) best = p->act_min;
                    if (best > p->act_max) best = p->act_max;
                    out[ch] = (int8_t)best;
                }
            }
        }
    }
}

/* Standalone RELU / RELU6: requantise to the output's scale (multiplier mo, shift so), then clamp
 * to [act_min, act_max] (the output's zero point, and 6.0 for RELU6). */
void relu_s8(const op_params *p, const op_tensors *t)
{
    const size_t count = (size_t)p->n * p->h * p->w * p->c;
    for (size_t i = 0; i < count; ++i) {
        t->y[i] = clamp_output(mul_by_quantized_multiplier(p->in_offset + t->x[i], p->mo, p->so), p);
    }
}

/* MEAN over h and w, kept as 1x1 (a global average pool): per channel the sum of x - zp_in, requantised
 * by mo/so (the host folds 1/(h*w) into the multiplier, as TFLite's reference MEAN does), plus the output
 * zero point, saturated to int8. */
void mean_s8(const op_params *p, const op_tensors *t)
{
    const size_t hw = (size_t)p->h * p->w;
    for (int32_t b = 0; b < p->n; ++b) {
        const int8_t *x = t->x + (size_t)b * hw * p->c;
        for (int32_t ch = 0; ch < p->c; ++ch) {
            int32_t acc = 0;
            for (size_t i = 0; i < hw; ++i) acc += x[i * p->c + ch] + p->in_offset;
            t->y[(size_t)b * p->c + ch] = clamp_output(mul_by_quantized_multiplier(acc, p->mo, p->so), p);
        }
    }
}

/* A standalone batch norm as TFLite runs it: MUL by a per-channel int8 constant (w, requantised by
 * mult/shift to an int8 result with zero point mid_offset), then ADD of a per-channel int8 constant
 * (held in bias), with add_s8's arithmetic (m1/s1 for the product, m2/s2 for the constant, mo/so). */
void bn_s8(const op_params *p, const op_tensors *t)
{
    const size_t pixels = (size_t)p->n * p->h * p->w;
    for (size_t i = 0; i < pixels; ++i) {
        const int8_t *x = t->x + i * p->c;
        int8_t *y = t->y + i * p->c;
        for (int32_t ch = 0; ch < p->c; ++ch) {
            int32_t mid = mul_by_quantized_multiplier((p->in_offset + x[ch]) * (p->w_offset + t->w[ch]), t->mult[ch],
                                                      t->shift[ch]) + p->mid_offset;
            if (mid < -128) mid = -128;
            if (mid > 127) mid = 127;
            const int32_t a = (mid - p->mid_offset) * (1 << p->left_shift);
            const int32_t b = (p->in2_offset + t->bias[ch]) * (1 << p->left_shift);
            const int32_t sum = mul_by_quantized_multiplier(a, p->m1, p->s1) + mul_by_quantized_multiplier(b, p->m2, p->s2);
            y[ch] = clamp_output(mul_by_quantized_multiplier(sum, p->mo, p->so), p);
        }
    }
}

/* MUL by a per-channel constant (TFLite MUL with a constant operand of shape [c]): NB201's zero op
 * (x * 0) lowers to it. */
void mul_s8(const op_params *p, const op_tensors *t)
{
    const size_t pixels = (size_t)p->n * p->h * p->w;
    for (size_t i = 0; i < pixels; ++i) {
        const int8_t *x = t->x + i * p->c;
        int8_t *y = t->y + i * p->c;
        for (int32_t ch = 0; ch < p->c; ++ch)
            y[ch] = requantize((p->in_offset + x[ch]) * (p->w_offset + t->w[ch]), t->mult[ch], t->shift[ch], p);
    }
}

/* Elementwise add of two int8 tensors of the same shape, each rescaled to a common scale first. */
void add_s8(const op_params *p, const op_tensors *t)
{
    const size_t count = (size_t)p->n * p->h * p->w * p->c;
    for (size_t i = 0; i < count; ++i) {
        const int32_t a = (p->in_offset + t->x[i]) * (1 << p->left_shift);
        const int32_t b = (p->in2_offset + t->x2[i]) * (1 << p->left_shift);
        const int32_t sa = mul_by_quantized_multiplier(a, p->m1, p->s1);
        const int32_t sb = mul_by_quantized_multiplier(b, p->m2, p->s2);
        t->y[i] = clamp_output(mul_by_quantized_multiplier(sa + sb, p->mo, p->so), p);
    }
}
