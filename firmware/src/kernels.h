/* int8 kernels with TensorFlow Lite (Micro) reference-kernel semantics.
 *
 * Layouts are TFLite's: activations NHWC, conv filters OHWI, depthwise filters 1HWO, fully
 * connected filters [out, in]. Requantisation is per output channel with a Q31 multiplier and a
 * power-of-two shift (TFLite's QuantizeMultiplier / MultiplyByQuantizedMultiplier, double
 * rounding; fully connected rounds once, as TFLite's reference kernel does), zero points enter as
 * offsets, results saturate to [act_min, act_max].
 */
#ifndef HWLAT_KERNELS_H
#define HWLAT_KERNELS_H

#include <stdint.h>

typedef struct {
    /* shapes: input n x h x w x c, output n x oh x ow x oc */
    int32_t n, h, w, c, oh, ow, oc;
    /* window: kernel, stride, padding (top/left), dilation, groups */
    int32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
    /* quantisation: offsets are -zero_point for inputs/filters and +zero_point for the output */
    int32_t in_offset, w_offset, out_offset, act_min, act_max;
    /* add: second input offset, common left shift, per-input and output multipliers/shifts */
    int32_t in2_offset, left_shift, m1, s1, m2, s2, mo, so;
    /* bn: the zero point of the MUL's int8 result, which its ADD then reads */
    int32_t mid_offset;
} op_params;

typedef struct {
    const int8_t *x, *x2, *w;
    const int32_t *bias, *mult, *shift;
    int8_t *y;
} op_tensors;

typedef void (*kernel_fn)(const op_params *p, const op_tensors *t);

int32_t mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift);

void conv2d_s8(const op_params *p, const op_tensors *t);
void dwconv2d_s8(const op_params *p, const op_tensors *t);
void pwconv2d_s8(const op_params *p, const op_tensors *t);
void linear_s8(const op_params *p, const op_tensors *t);
void avgpool_s8(const op_params *p, const op_tensors *t);
void maxpool_s8(const op_params *p, const op_tensors *t);
void add_s8(const op_params *p, const op_tensors *t);
void relu_s8(const op_params *p, const op_tensors *t);
void mean_s8(const op_params *p, const op_tensors *t);
void bn_s8(const op_params *p, const op_tensors *t);
void mul_s8(const op_params *p, const op_tensors *t);

#endif
