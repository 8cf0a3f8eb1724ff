"""Bit-exact numpy reference kernels with the semantics of LiteRT's BUILTIN_REF int8 kernels."""

import math

import numpy as np

from .arith import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

__all__ = ["conv2d_accumulators", "conv2d_int8", "window_padding", "window_output_size", "conv2d_acc",
           "depthwise_conv2d_acc", "fully_connected_acc", "requantize_acc", "requantize_acc_double",
           "float_activation", "add_int8",
           "average_pool_int8", "average_pool_float", "max_pool", "pad", "quantize_float", "dequantize",
           "requantize_int8", "softmax_params", "softmax_int8", "softmax_float", "logistic_params", "logistic_int8",
           "logistic_float", "expf_glibc", "mean_params", "mean_int8", "mul_params", "mul_int8", "sub_int8",
           "prelu_params", "prelu_int8", "resize_bilinear_axis", "resize_nearest_axis", "resize_tables",
           "resize_apply_int8", "resize_int8", "resize_float", "depth_to_space", "space_to_depth", "strided_slice",
           "transpose_conv_acc"]


def conv2d_accumulators(x, layer):
    """int32 accumulators of a CONV_2D (bias included, before requantization) for an int8 HWC input.

    Padding contributes nothing: TFLite adds -input_zero_point to every in-bounds input and skips
    out-of-bounds taps, which equals padding the input with its zero point.
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != layer.in_channels:
        raise ValueError(f"conv2d: input shape {x.shape} does not match {layer.in_channels} input channels")
    in_h, in_w, _ = x.shape
    out_h, out_w, _ = layer.output_shape(in_h, in_w)
    top, bottom, left, right = layer.pads(in_h, in_w)
    kh, kw = layer.kernel
    sh, sw = layer.stride
    xs = x.astype(np.int64) - layer.input_zero_point
    xp = np.zeros((in_h + top + bottom + kh, in_w + left + right + kw, layer.in_channels), np.int64)
    xp[top:top + in_h, left:left + in_w] = xs
    w = layer.weights.astype(np.int64)
    acc = np.zeros((out_h, out_w, layer.out_channels), np.int64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[dy:dy + sh * (out_h - 1) + 1:sh, dx:dx + sw * (out_w - 1) + 1:sw]
            acc += patch @ w[:, dy, dx, :].T
    return acc + layer.bias.astype(np.int64)


def conv2d_int8(x, layer):
    """CONV_2D int8 -> int8 with per-channel requantization and the fused activation clamp."""
    acc = conv2d_accumulators(x, layer)
    out = multiply_by_quantized_multiplier(acc, layer.multiplier, layer.shift) + layer.output_zero_point
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)


# ---------------------------------------------------------------------------------------------------------------
# Whole-graph kernels on NHWC batches. Integer kernels take raw int8 arrays plus the parameters LiteRT's Prepare()
# derives from the file (quant.executor computes those); float kernels are float32 and only need to be close.
# ---------------------------------------------------------------------------------------------------------------

def window_padding(in_size, kernel, stride, dilation=1, padding="SAME"):
    """TFLite ComputePaddingHeightWidth along one axis: (output size, pad before, pad after).

    SAME puts the odd extra row/column after (bottom/right); VALID pads nothing and drops what does not fit.
    """
    eff = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = -(-in_size // stride)
    elif padding == "VALID":
        out = (in_size - eff) // stride + 1
    else:
        raise ValueError(f"unsupported padding {padding!r}")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2, total - total // 2


def window_output_size(in_size, kernel, stride, dilation, before, after):
    """Output size of a window op over an explicitly padded axis."""
    return (in_size + before + after - ((kernel - 1) * dilation + 1)) // stride + 1


def _taps(xp, kh, kw, stride, dilation, out_h, out_w):
    """(dy, dx, strided view) for every kernel tap over a padded NHWC array."""
    sh, sw = stride
    dh, dw = dilation
    for dy in range(kh):
        for dx in range(kw):
            y0, x0 = dy * dh, dx * dw
            yield dy, dx, xp[:, y0:y0 + sh * (out_h - 1) + 1:sh, x0:x0 + sw * (out_w - 1) + 1:sw, :]


def _pad_nhwc(x, pads, value=0):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def conv2d_acc(x, w, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), input_offset=0):
    """CONV_2D sums over NHWC `x` (offset added first, then zero padding) with OHWI `w`, without bias.

    Integer inputs give exact int64 sums: they are computed in float64, which holds every partial sum exactly
    (|x + offset| <= 255, |w| <= 128, so a sum stays below 2^53 for any kernel smaller than 2^38 taps) and lets
    BLAS do the work. Float inputs give float32 sums.
    """
    integer = np.issubdtype(np.asarray(x).dtype, np.integer)
    ct = np.float64 if integer else np.float32
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    out_h = window_output_size(h, kh, stride[0], dilation[0], pads[0], pads[1])
    out_w = window_output_size(wd, kw, stride[1], dilation[1], pads[2], pads[3])
    xp = _pad_nhwc(x.astype(ct) + ct(input_offset), pads)
    wc = w.astype(ct)
    acc = np.zeros((n, out_h, out_w, o), ct)
    for dy, dx, patch in _taps(xp, kh, kw, stride, dilation, out_h, out_w):
        acc += patch @ wc[:, dy, dx, :].T
    return acc.astype(np.int64) if integer else acc


def depthwise_conv2d_acc(x, w, depth_multiplier=1, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0),
                         input_offset=0):
    """DEPTHWISE_CONV_2D sums with 1HWO `w`: output channel c * multiplier + m reads input channel c."""
    integer = np.issubdtype(np.asarray(x).dtype, np.integer)
    ct = np.int64 if integer else np.float32
    n, h, wd, c = x.shape
    _, kh, kw, o = w.shape
    if o != c * depth_multiplier:
        raise ValueError(f"depthwise: {o} output channels for {c} inputs x multiplier {depth_multiplier}")
    out_h = window_output_size(h, kh, stride[0], dilation[0], pads[0], pads[1])
    out_w = window_output_size(wd, kw, stride[1], dilation[1], pads[2], pads[3])
    xs = x.astype(ct) + ct(input_offset)
    if depth_multiplier > 1:
        xs = np.repeat(xs, depth_multiplier, axis=3)
    xp = _pad_nhwc(xs, pads)
    wc = w[0].astype(ct)
    acc = np.zeros((n, out_h, out_w, o), ct)
    for dy, dx, patch in _taps(xp, kh, kw, stride, dilation, out_h, out_w):
        acc += patch * wc[dy, dx]
    return acc


def fully_connected_acc(x, w, input_offset=0, weights_offset=0):
    """FULLY_CONNECTED sums: `x` flattened to [batches, in_features] times `w` [units, in_features] transposed."""
    integer = np.issubdtype(np.asarray(x).dtype, np.integer)
    ct = np.float64 if integer else np.float32
    units, depth = w.shape[0], w.shape[-1]
    xs = x.reshape(-1, depth).astype(ct) + ct(input_offset)
    acc = xs @ (w.reshape(units, depth).astype(ct) + ct(weights_offset)).T
    return acc.astype(np.int64) if integer else acc


def requantize_acc(acc, bias, multiplier, shift, output_zero_point, act_min, act_max):
    """int32 accumulators (+ bias) -> int8 by per-channel (last axis) multiplier/shift, zero point and clamp."""
    acc = np.asarray(acc, np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + output_zero_point
    return np.clip(out, act_min, act_max).astype(np.int8)


def requantize_acc_double(acc, bias, effective_scale, output_zero_point, act_min, act_max):
    """int32 accumulators (+ bias) -> int8 the way BUILTIN_REF's int8 FULLY_CONNECTED does it:
    round(double(acc) * effective_scale) (std::round: ties away from zero), zero point, clamp."""
    acc = np.asarray(acc, np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    acc = wrap_int32(acc)                       # the kernel accumulates in int32
    v = acc.astype(np.float64) * np.asarray(effective_scale, np.float64)
    a = np.abs(v)
    fl = np.floor(a)                            # round by the exact fraction, not floor(|v| + 0.5)
    r = np.sign(v) * np.where(a - fl >= 0.5, fl + 1, fl)
    r = np.clip(r, -(1 << 31), (1 << 31) - 1).astype(np.int64)
    return np.clip(r + output_zero_point, act_min, act_max).astype(np.int8)


def float_activation(x, activation):
    """A fused activation on float values."""
    if activation == "NONE":
        return x
    if activation == "RELU":
        return np.maximum(x, np.float32(0))
    if activation == "RELU6":
        return np.clip(x, np.float32(0), np.float32(6))
    if activation == "RELU_N1_TO_1":
        return np.clip(x, np.float32(-1), np.float32(1))
    raise ValueError(f"unsupported fused activation {activation!r}")


def add_int8(a, b, p):
    """TFLite reference AddElementwise for int8 (numpy broadcasting stands in for BroadcastAdd).

    `p` holds input offsets (minus zero points), left_shift (20), per-input and output multipliers/shifts, the
    output zero point and the activation clamp, as quant.executor.add_params derives them.
    """
    a = np.asarray(a, np.int64) + p["input1_offset"]
    b = np.asarray(b, np.int64) + p["input2_offset"]
    sa = multiply_by_quantized_multiplier(a << p["left_shift"], p["input1_multiplier"], p["input1_shift"])
    sb = multiply_by_quantized_multiplier(b << p["left_shift"], p["input2_multiplier"], p["input2_shift"])
    raw = multiply_by_quantized_multiplier(sa + sb, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(raw, p["act_min"], p["act_max"]).astype(np.int8)


def average_pool_int8(x, filter_hw, stride, pads, act_min=-128, act_max=127):
    """TFLite reference int8 AveragePool: sum of the in-bounds taps, divided by their count (not the filter size),
    rounded half away from zero in integer arithmetic, then clamped. Works on raw int8 values: the kernel
    assumes input and output share scale and zero point."""
    s, count = _pool_sum_count(np.asarray(x, np.int64), filter_hw, stride, pads)
    half = count // 2
    # C integer division truncates toward zero: ties (exact halves) go away from zero.
    q = np.where(s > 0, (s + half) // count, -((-s + half) // count))
    return np.clip(q, act_min, act_max).astype(np.int8)


def average_pool_float(x, filter_hw, stride, pads, activation="NONE"):
    s, count = _pool_sum_count(np.asarray(x, np.float32), filter_hw, stride, pads)
    return float_activation((s / count).astype(np.float32), activation)


def _pool_sum_count(x, filter_hw, stride, pads):
    n, h, w, c = x.shape
    fh, fw = filter_hw
    out_h = window_output_size(h, fh, stride[0], 1, pads[0], pads[1])
    out_w = window_output_size(w, fw, stride[1], 1, pads[2], pads[3])
    xp = _pad_nhwc(x, pads)
    ones = _pad_nhwc(np.ones((1, h, w, 1), np.int64), pads)
    s = np.zeros((n, out_h, out_w, c), x.dtype)
    count = np.zeros((1, out_h, out_w, 1), np.int64)
    for _, _, patch in _taps(xp, fh, fw, stride, (1, 1), out_h, out_w):
        s += patch
    for _, _, patch in _taps(ones, fh, fw, stride, (1, 1), out_h, out_w):
        count += patch
    if np.any(count == 0):
        raise ValueError("pool: a window lies entirely in the padding")
    return s, count


def max_pool(x, filter_hw, stride, pads, act_min=None, act_max=None):
    """MAX_POOL_2D over the in-bounds taps only (padding never wins), then the activation clamp."""
    x = np.asarray(x)
    n, h, w, c = x.shape
    fh, fw = filter_hw
    out_h = window_output_size(h, fh, stride[0], 1, pads[0], pads[1])
    out_w = window_output_size(w, fw, stride[1], 1, pads[2], pads[3])
    lowest = np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.integer) else -np.inf
    xp = _pad_nhwc(x, pads, lowest)
    m = np.full((n, out_h, out_w, c), lowest, x.dtype)
    for _, _, patch in _taps(xp, fh, fw, stride, (1, 1), out_h, out_w):
        m = np.maximum(m, patch)
    if act_min is not None:
        m = np.clip(m, act_min, act_max)
    return m.astype(x.dtype)


def pad(x, paddings, value):
    """PAD: `paddings` [rank, 2] (before, after) per dimension, filled with `value` (int8: the output zero point)."""
    return np.pad(x, [(int(b), int(a)) for b, a in np.asarray(paddings).reshape(-1, 2)], constant_values=value)


def quantize_float(x, scale, zero_point, qmin=-128, qmax=127, dtype=np.int8):
    """reference_ops::AffineQuantize: x / scale in float32, rounded half away from zero, plus zero point, clamp."""
    q = (np.asarray(x, np.float32) / np.float32(scale)).astype(np.float64)
    # np.round rounds ties to even; TfLiteRound is std::round (ties away), so round the magnitude by its
    # exact fractional part.
    a = np.abs(q)
    fl = np.floor(a)
    r = np.clip(np.sign(q) * np.where(a - fl >= 0.5, fl + 1, fl), -(1 << 31), (1 << 31) - 1)
    return np.clip(r.astype(np.int64) + int(zero_point), qmin, qmax).astype(dtype)


def dequantize(q, scale, zero_point):
    """reference_ops::Dequantize: float(double(scale) * (q - zero_point))."""
    return (np.float64(np.float32(scale)) * (np.asarray(q, np.int64) - int(zero_point))).astype(np.float32)


def requantize_int8(x, input_zero_point, multiplier, shift, output_zero_point):
    """QUANTIZE int8 -> int8 (reference_ops::Requantize): rescale by the Q31 multiplier, add zero point, clamp."""
    out = multiply_by_quantized_multiplier(np.asarray(x, np.int64) - input_zero_point, multiplier, shift)
    return np.clip(out + output_zero_point, -128, 127).astype(np.int8)


# --- SOFTMAX and LOGISTIC (int8) ---------------------------------------------------------------------------------
# BUILTIN_REF runs int8 SOFTMAX as reference_ops::Softmax: gemmlowp fixed point (exp on Q5.26 differences, a
# Q12.19 sum, a Newton-Raphson reciprocal); int8 LOGISTIC as a 256-entry table filled in float32 at Prepare time
# (LUTPopulate with 1 / (1 + expf(-x))). Both are reproduced here bit for bit; int32 values live in int64 arrays.

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


def _wrap(x):
    return wrap_int32(x)


def _srdhm(a, b):
    return saturating_rounding_doubling_high_mul(a, b)


def _rdbp(x, exponent):
    return rounding_divide_by_pot(x, exponent)


def _sat_shl(x, exponent):
    """gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent: saturating left shift."""
    threshold = (1 << (31 - exponent)) - 1
    r = _wrap(np.asarray(x, np.int64) << exponent)
    r = np.where(x > threshold, _I32_MAX, r)
    return np.where(x < -threshold, _I32_MIN, r)


def _rescale(x, src_int_bits, dst_int_bits):
    e = src_int_bits - dst_int_bits
    if e > 0:
        return _sat_shl(x, e)
    if e < 0:
        return _rdbp(x, -e)
    return np.asarray(x, np.int64)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668                  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _wrap(a + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbp(x4, 2)
    poly = _rdbp(_wrap(_srdhm(_wrap(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return _wrap(constant_term + _srdhm(constant_term, _wrap(x + poly)))


def _exp_on_negative_values(a, integer_bits):
    """gemmlowp exp_on_negative_values: Q(integer_bits) input <= 0 -> Q0.31 output."""
    a = np.asarray(a, np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _wrap((a & mask) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = _wrap(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where(remainder & bit, _srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, _I32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in, Q0.31 out (three Newton-Raphson steps in Q2.29)."""
    s = np.asarray(a, np.int64) + _I32_MAX
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-s + 1) // 2))      # RoundingHalfSum(a, One)
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    x = _wrap(constant_48_over_17 + _srdhm(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = _srdhm(half_denominator, x)
        one_minus = _wrap((1 << 29) - half_denominator_times_x)
        x = _wrap(x + _rescale(_srdhm(x, one_minus), 4, 2))
    return _rescale(x, 1, 0)                   # ExactMulByPot<-1> relabels Q2.29 as Q1.30, then Rescale<0>


def _count_leading_zeros32(x):
    """CountLeadingZeros of a uint32 (32 for zero): frexp's exponent is the exact bit length below 2^53."""
    x = np.asarray(x, np.int64) & 0xFFFFFFFF
    return 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)


def softmax_params(beta, input_scale):
    """SoftmaxPrepare (kReference, int8): PreprocessSoftmaxScaling with 5 integer bits, and diff_min."""
    integer_bits = 5
    real = min(float(np.float32(beta)) * float(np.float32(input_scale)) * (1 << (31 - integer_bits)),
               float((1 << 31) - 1))
    multiplier, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise ValueError("softmax: beta * input_scale is too small for the reference kernel")
    radius = math.floor(((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift))
    return dict(input_multiplier=multiplier, input_left_shift=left_shift, diff_min=-radius)


def softmax_int8(x, p):
    """reference_ops::Softmax on int8 along the last axis; output scale 1/256, zero point -128."""
    x = np.asarray(x, np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    valid = diff >= p["diff_min"]
    rescaled = _srdhm(_wrap(diff << p["input_left_shift"]), p["input_multiplier"])
    e = np.where(valid, _exp_on_negative_values(rescaled, 5), 0)
    sum_of_exps = _wrap(np.where(valid, _rescale(e, 0, 12), 0).sum(axis=-1, keepdims=True))
    headroom_plus_one = _count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = 12 - headroom_plus_one
    shifted_sum_minus_one = _wrap((sum_of_exps << headroom_plus_one) - (1 << 31))
    shifted_scale = _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    if np.any(num_bits_over_unit + 31 - 8 > 31):
        # gemmlowp asserts exponent <= 31 here and LiteRT aborts: more than 256 values tie for the maximum.
        raise ValueError("SOFTMAX: over 256 inputs share the row maximum; the reference kernel's final shift "
                         "exceeds 31 bits (LiteRT aborts on this input)")
    out = _rdbp(_srdhm(shifted_scale, e), num_bits_over_unit + 31 - 8) - 128
    return np.where(valid, np.clip(out, -128, 127), -128).astype(np.int8)


def softmax_float(x, beta=1.0):
    x = np.asarray(x, np.float32)
    e = np.exp((x - x.max(axis=-1, keepdims=True)) * np.float32(beta))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, from Arm's optimized-routines), which LiteRT calls through
# std::exp(float). It is *not* correctly rounded (< 0.502 ULP): on about 7 in 100,000 float inputs it returns a
# neighbour of the correctly rounded value, and such a neighbour can move a LOGISTIC table entry across a rounding
# boundary. Its arithmetic is all binary64, reproduced here step by step: x * 32/ln2 = k + r (k rounded to
# nearest even), exp(x) = 2^(k/32) * p(r) with a 32-entry table of 2^(i/32) and a cubic. x86-64 glibc picks
# its FMA build (__expf_fma) on CPUs with FMA/AVX2, where GCC fuses the reduction: k = round(fma(InvLn2N, x,
# Shift)), r = fma(InvLn2N, x, -k). That build is what runs here (a CPU without FMA would run the unfused one); the
# unfused build differs from it on 2 of the 2.2e9 floats in [-103, 88), and fusing the cubic's multiply-adds
# changes no result there. Checked against this machine's libm on all 2^32 floats.
_EXPF_TABLE = np.array([
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540], np.uint64)
_EXPF_N = 32
_EXPF_INV_LN2_N = float.fromhex("0x1.71547652b82fep+0") * _EXPF_N
_EXPF_POLY = (float.fromhex("0x1.c6af84b912394p-5") / _EXPF_N ** 3,
              float.fromhex("0x1.ebfce50fac4f3p-3") / _EXPF_N ** 2,
              float.fromhex("0x1.62e42ff0c52d6p-1") / _EXPF_N)
# InvLn2N as a 26-bit high part plus the rest: each times a float32 (24 bits) is exact in binary64.
_EXPF_INV_HI = float((np.array(_EXPF_INV_LN2_N).view(np.uint64) & np.uint64(0xFFFFFFFFF8000000)).view(np.float64))
_EXPF_INV_LO = _EXPF_INV_LN2_N - _EXPF_INV_HI


def _two_sum(a, b):
    """s, e with s = fl(a + b) and a + b = s + e exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def expf_glibc(x):
    """glibc's expf on a float32 array, bit for bit (see above); float32 out."""
    x = np.asarray(x, np.float32)
    xd = x.astype(np.float64)
    ph, pl = _EXPF_INV_HI * xd, _EXPF_INV_LO * xd  # both exact: ph + pl == InvLn2N * x
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.rint(ph + pl)                       # within one of the exactly rounded k
        a = ph - k                                 # exact (ph and k are close, or k == 0)
        s, e = _two_sum(a, pl)                     # InvLn2N * x - k == s + e exactly
        # Round InvLn2N * x to the nearest integer, ties to even, as fma(InvLn2N, x, Shift) does.
        up = (s > 0.5) | ((s == 0.5) & ((e > 0) | ((e == 0) & (np.fmod(k, 2) != 0))))
        down = (s < -0.5) | ((s == -0.5) & ((e < 0) | ((e == 0) & (np.fmod(k, 2) != 0))))
        k = np.where(np.isfinite(xd), k + up - down, 0.0)
        r = (ph - k) + pl                          # fma(InvLn2N, x, -k): ph - k exact, one rounding
        ki = k.astype(np.int64)
        t = _EXPF_TABLE[ki % _EXPF_N] + (ki.view(np.uint64) << np.uint64(52 - 5))
        scale = t.view(np.float64)
        c0, c1, c2 = _EXPF_POLY
        z = c0 * r + c1
        r2 = r * r
        y = c2 * r + 1.0
        y = z * r2 + y
        y = (y * scale).astype(np.float32)
    y = np.where(x > np.float32(float.fromhex("0x1.62e42ep6")), np.float32(np.inf), y)
    y = np.where(x < np.float32(-float.fromhex("0x1.9fe368p6")), np.float32(0), y)
    return np.where(np.isnan(x), x, y).astype(np.float32)


def logistic_params(input_scale, input_zero_point, output_scale=1.0 / 256, output_zero_point=-128):
    """SigmoidPrepare (int8): the 256-entry table LUTPopulate fills, indexed by the int8 value + 128.

    Each entry is float32 arithmetic: x = input_scale * (q - zero_point), 1 / (1 + expf(-x)) with glibc's
    expf (expf_glibc), times 1 / output_scale, std::round (ties away from zero), plus the output zero point.
    """
    q = np.arange(-128, 128, dtype=np.int64)
    with np.errstate(over="ignore"):
        deq = np.float32(input_scale) * (q - int(input_zero_point)).astype(np.float32)
        e = expf_glibc(-deq)
        t = np.float32(1.0) / (np.float32(1.0) + e)
        scaled = (t * (np.float32(1.0) / np.float32(output_scale))).astype(np.float64)
    a = np.abs(scaled)
    rounded = np.sign(scaled) * np.where(a - np.floor(a) >= 0.5, np.floor(a) + 1, np.floor(a))
    lut = np.clip(rounded + int(output_zero_point), -128, 127)
    lut = np.where(np.isfinite(scaled), lut, -128)
    return dict(table=lut.astype(np.int8))


def logistic_int8(x, p):
    """LOGISTIC int8 as LiteRT runs it: a lookup in the table of logistic_params."""
    return p["table"][np.asarray(x, np.int64) + 128]


def logistic_float(x):
    """reference_ops::Logistic on float32: 1 above 16.619047, expf(x) below -9, else 1 / (1 + expf(-x)), with
    glibc's expf (expf_glibc) as LiteRT calls it."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore"):
        mid = np.float32(1) / (np.float32(1) + expf_glibc(-x))
    out = np.where(x < np.float32(-9), expf_glibc(x), mid)
    return np.where(x > np.float32(16.619047164916992188), np.float32(1), out).astype(np.float32)


# --- MEAN, MUL, SUB, PRELU (int8) --------------------------------------------------------------------------------

def mean_params(input_scale, input_zero_point, output_scale, output_zero_point, count):
    """The integers LiteRT's reference int8 MEAN uses for a reduction over `count` elements (reduce.cc
    PrepareMeanOrSum, then reference_ops::QuantizedMeanOrSum): the Q31 multiplier and shift of
    double(input_scale) / double(output_scale), then 1/count folded in as ``multiplier' = (multiplier <<
    s) / count`` (int64, truncating) and ``shift' = shift - s`` with ``s = min(floor(log2(count)), 32, 31 +
    shift)``."""
    if count < 1:
        raise ValueError(f"MEAN over {count} elements")
    m, shift = quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))
    s = min(count.bit_length() - 1, 32, 31 + shift)
    return dict(input_zero_point=int(input_zero_point), output_zero_point=int(output_zero_point), count=int(count),
                multiplier=int(np.int32((m << s) // count)), shift=int(shift - s))


def mean_int8(x, axes, keep_dims, p):
    """reference_ops::QuantizedMeanOrSum (mean) on int8 `x` over `axes`: the int32 sum, minus
    input_zero_point * count, MultiplyByQuantizedMultiplier with mean_params' multiplier and shift, plus the
    output zero point, clamped to int8."""
    s = np.asarray(x, np.int64).sum(axis=tuple(axes), keepdims=bool(keep_dims))
    shifted = wrap_int32(wrap_int32(s) - p["input_zero_point"] * p["count"])
    out = multiply_by_quantized_multiplier(shifted, p["multiplier"], p["shift"]) + p["output_zero_point"]
    return np.clip(out, -128, 127).astype(np.int8)


def mul_params(s1, z1, s2, z2, so, zo):
    """mul.cc Prepare (int8): one Q31 multiplier of ``input1_scale * input2_scale / output_scale``, evaluated in
    float32 (the operands are float), widened to double."""
    f = np.float32
    m, shift = quantize_multiplier(float(f(f(f(s1) * f(s2)) / f(so))))
    return dict(input1_offset=-int(z1), input2_offset=-int(z2), output_offset=int(zo), output_multiplier=m,
                output_shift=shift)


def mul_int8(a, b, p, act_min=-128, act_max=127):
    """reference_integer_ops::MulElementwise / BroadcastMul6DSlow on int8 (numpy broadcasting):
    ``clamp(MBQM((a - za) * (b - zb), multiplier, shift) + zo)``."""
    v = (np.asarray(a, np.int64) + p["input1_offset"]) * (np.asarray(b, np.int64) + p["input2_offset"])
    out = multiply_by_quantized_multiplier(v, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(out, act_min, act_max).astype(np.int8)


def sub_int8(a, b, p):
    """TFLite reference int8 SUB (SubElementwise; broadcast by numpy): add_int8 with the difference of the two
    rescaled inputs. Negating the second input before its rescale would not be the same (the high multiply
    rounds ties up, not away from zero), so the die negates the rescaled value."""
    a = np.asarray(a, np.int64) + p["input1_offset"]
    b = np.asarray(b, np.int64) + p["input2_offset"]
    sa = multiply_by_quantized_multiplier(a << p["left_shift"], p["input1_multiplier"], p["input1_shift"])
    sb = multiply_by_quantized_multiplier(b << p["left_shift"], p["input2_multiplier"], p["input2_shift"])
    raw = multiply_by_quantized_multiplier(wrap_int32(sa - sb), p["output_multiplier"], p["output_shift"]) \
        + p["output_offset"]
    return np.clip(raw, p["act_min"], p["act_max"]).astype(np.int8)


def prelu_params(input_scale, input_zero_point, alpha_scale, alpha_zero_point, output_scale, output_zero_point):
    """PreluPrepare (int8): multiplier 1 of input_scale / output_scale (identity path), multiplier 2 of
    input_scale * alpha_scale / output_scale (alpha path), both float32 expressions widened to double."""
    f = np.float32
    m1, s1 = quantize_multiplier(float(f(f(input_scale) / f(output_scale))))
    m2, s2 = quantize_multiplier(float(f(f(f(input_scale) * f(alpha_scale)) / f(output_scale))))
    return dict(input_offset=-int(input_zero_point), alpha_offset=-int(alpha_zero_point),
                output_offset=int(output_zero_point), multiplier_1=m1, shift_1=s1, multiplier_2=m2, shift_2=s2)


def prelu_int8(x, alpha, p):
    """reference_ops::BroadcastPrelu4DSlow / Prelu on int8 (alpha broadcast by numpy): ``v = x - zi``;
    ``v >= 0``: MBQM(v, m1, s1); else MBQM(v * (alpha - za), m2, s2); plus zo, clamped to int8."""
    v = np.asarray(x, np.int64) + p["input_offset"]
    a = np.asarray(alpha, np.int64) + p["alpha_offset"]
    pos = multiply_by_quantized_multiplier(v, p["multiplier_1"], p["shift_1"])
    neg = multiply_by_quantized_multiplier(v * a, p["multiplier_2"], p["shift_2"])
    out = np.where(v >= 0, pos, neg) + p["output_offset"]
    return np.clip(out, -128, 127).astype(np.int8)


# --- RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR ------------------------------------------------------------------
# BUILTIN_REF's int8 RESIZE_BILINEAR (reference_ops::ResizeBilinearInteger) works in 10-bit fixed point: the scale
# is round-half-up((in << 10) / out) (align_corners: (in - 1) / (out - 1)), the source coordinate of output index
# i is i * scale (half_pixel_centers: + scale / 2 - 512, C division), the taps are lo = max(v / 1024, 0) and
# hi = min(ceil(v / 1024), in - 1), the fraction f = v - 1024 * lo (negative near the top-left edge with half
# pixel centers, where lo = hi), and the output is the 4-tap sum of 20-bit weighted products, divided by 2^20
# rounding half away from zero. RESIZE_NEAREST_NEIGHBOR picks one source index per axis, computed in float32.
# Both factor into a per-axis table, which is what the die's RESIZE descriptor carries (quant.program).

def _c_div(a, b):
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def resize_bilinear_axis(in_size, out_size, align_corners=False, half_pixel_centers=False):
    """(lo, hi, frac) int64 arrays over the output indices of one axis, by ResizeBilinearInteger's rules."""
    if align_corners and out_size > 1:
        scale = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = ((1 << 10) * in_size + out_size // 2) // out_size
    lo, hi, frac = [], [], []
    for i in range(out_size):
        v = i * scale + (_c_div(scale, 2) - (1 << 9) if half_pixel_centers else 0)
        a = max(_c_div(v, 1 << 10), 0)
        b = min(_c_div(v + (1 << 10) - 1, 1 << 10), in_size - 1)
        if not 0 <= a < in_size:
            raise ValueError(f"resize: source index {a} of output {i} is outside the input (size {in_size}); "
                             f"LiteRT's kernel would read past it")
        lo.append(a)
        hi.append(b)
        frac.append(v - (a << 10))
    return np.array(lo, np.int64), np.array(hi, np.int64), np.array(frac, np.int64)


def resize_nearest_axis(in_size, out_size, align_corners=False, half_pixel_centers=False):
    """Source index int64 array over the output indices of one axis (GetNearestNeighbor, float32 arithmetic)."""
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    offset = f32(0.5) if half_pixel_centers else f32(0.0)
    v = (np.arange(out_size, dtype=np.float32) + offset) * scale          # float32 throughout
    if align_corners:
        v64 = v.astype(np.float64)                                          # exact: v + 0.5 cannot round
        idx = (np.sign(v64) * np.floor(np.abs(v64) + 0.5)).astype(np.int64)  # std::round: ties away
    else:
        idx = np.floor(v).astype(np.int64)
    idx = np.minimum(idx, in_size - 1)
    if half_pixel_centers:
        idx = np.maximum(idx, 0)
    return idx


def resize_tables(kind, in_hw, out_hw, align_corners=False, half_pixel_centers=False):
    """Per-axis [(lo, hi, frac)] for rows and columns; nearest neighbour is lo = hi = index, frac = 0."""
    out = []
    for n_in, n_out in zip(in_hw, out_hw):
        if kind == "RESIZE_BILINEAR":
            out.append(resize_bilinear_axis(n_in, n_out, align_corners, half_pixel_centers))
        else:
            idx = resize_nearest_axis(n_in, n_out, align_corners, half_pixel_centers)
            out.append((idx, idx.copy(), np.zeros_like(idx)))
    return out


def resize_apply_int8(x, rows, cols):
    """The 4-tap fixed-point interpolation of an int8 HWC (or NHWC) tensor by per-axis tables (lo, hi, frac):
    ``sum x[tap] * wy * wx`` with weights ``1024 - f`` (lo) and ``f`` (hi), divided by 2^20 rounding half away
    from zero, then cast to int8 (wrapping, as the C++ cast does; the sum of the weights is 2^20, so it never
    wraps)."""
    x = np.asarray(x)
    (ylo, yhi, fy), (xlo, xhi, fx) = rows, cols
    a = x.astype(np.int64)
    wy0, wy1 = ((1 << 10) - fy)[:, None, None], fy[:, None, None]
    wx0, wx1 = ((1 << 10) - fx)[None, :, None], fx[None, :, None]
    ax = -3
    t_ll = np.take(np.take(a, ylo, axis=ax), xlo, axis=ax + 1)
    t_lu = np.take(np.take(a, yhi, axis=ax), xlo, axis=ax + 1)
    t_rl = np.take(np.take(a, ylo, axis=ax), xhi, axis=ax + 1)
    t_ru = np.take(np.take(a, yhi, axis=ax), xhi, axis=ax + 1)
    s = t_ll * wy0 * wx0 + t_lu * wy1 * wx0 + t_rl * wy0 * wx1 + t_ru * wy1 * wx1
    r = np.where(s > 0, s + (1 << 19), s - (1 << 19))
    q = np.sign(r) * (np.abs(r) >> 20)                     # C division by 2^20: truncates toward zero
    return (((q + 128) & 0xFF) - 128).astype(np.int8)


def resize_int8(x, kind, out_hw, align_corners=False, half_pixel_centers=False):
    """int8 NHWC RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR as BUILTIN_REF computes it."""
    x = np.asarray(x)
    rows, cols = resize_tables(kind, x.shape[1:3], out_hw, align_corners, half_pixel_centers)
    if kind == "RESIZE_NEAREST_NEIGHBOR":
        return x[:, rows[0]][:, :, cols[0]].copy()
    return resize_apply_int8(x, rows, cols)


def resize_float(x, kind, out_hw, align_corners=False, half_pixel_centers=False):
    """float32 NHWC resize (reference ResizeBilinear's float arithmetic; nearest picks like the int8 kernel)."""
    x = np.asarray(x, np.float32)
    if kind == "RESIZE_NEAREST_NEIGHBOR":
        rows, cols = (resize_nearest_axis(i, o, align_corners, half_pixel_centers)
                      for i, o in zip(x.shape[1:3], out_hw))
        return x[:, rows][:, :, cols].copy()
    axes = []
    for n_in, n_out in zip(x.shape[1:3], out_hw):
        f32 = np.float32
        scale = f32(n_in - 1) / f32(n_out - 1) if align_corners and n_out > 1 else f32(n_in) / f32(n_out)
        i = np.arange(n_out, dtype=np.float32)
        v = (i + f32(0.5)) * scale - f32(0.5) if half_pixel_centers else i * scale
        fl = np.floor(v)
        lo = np.maximum(fl.astype(np.int64), 0)
        hi = np.minimum(np.ceil(v).astype(np.int64), n_in - 1)
        axes.append((lo, hi, (v - lo.astype(np.float32)).astype(np.float32)))
    (ylo, yhi, fy), (xlo, xhi, fx) = axes
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    one = np.float32(1)
    return (x[:, ylo][:, :, xlo] * (one - fy) * (one - fx) + x[:, yhi][:, :, xlo] * fy * (one - fx)
            + x[:, ylo][:, :, xhi] * (one - fy) * fx + x[:, yhi][:, :, xhi] * fy * fx).astype(np.float32)


# --- data movement ------------------------------------------------------------------------------------------------

def depth_to_space(x, b):
    """NHWC DEPTH_TO_SPACE: out[n, y*b + dy, x*b + dx, c] = in[n, y, x, (dy*b + dx)*C + c]."""
    n, h, w, cb = x.shape
    c = cb // (b * b)
    return x.reshape(n, h, w, b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * b, w * b, c).copy()


def space_to_depth(x, b):
    """NHWC SPACE_TO_DEPTH, the inverse of depth_to_space."""
    n, hb, wb, c = x.shape
    return x.reshape(n, hb // b, b, wb // b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb // b, wb // b,
                                                                                     b * b * c).copy()


def strided_slice(x, begin, end, strides):
    """x[begin:end:strides] per axis (normalized: absolute indices, positive strides)."""
    return x[tuple(slice(int(b), int(e), int(s)) for b, e, s in zip(begin, end, strides))].copy()


def transpose_conv_acc(x, w, stride, pads, out_hw, input_offset=0):
    """TRANSPOSE_CONV accumulators (no bias) as LiteRT's reference scatters them: every input pixel adds
    ``(x + input_offset) * w[oc, ky, kx, :]`` to output ``(iy * sh - pad_top + ky, ix * sw - pad_left + kx)``,
    dropped outside the output. int64 for integer inputs, float32 for float ones."""
    x = np.asarray(x)
    w = np.asarray(w)
    integer = x.dtype.kind in "iu"
    xs = x.astype(np.int64) + int(input_offset) if integer else x.astype(np.float32)
    ws = w.astype(np.int64) if integer else w.astype(np.float32)
    n, h, wd, _ = x.shape
    oc, kh, kw, _ = w.shape
    (sh, sw), (pt, pl), (oh, ow) = stride, pads, out_hw
    big = np.zeros((n, (h - 1) * sh + kh + pt + oh, (wd - 1) * sw + kw + pl + ow, oc), xs.dtype)
    for ky in range(kh):
        for kx in range(kw):
            big[:, ky:ky + (h - 1) * sh + 1:sh, kx:kx + (wd - 1) * sw + 1:sw] += xs @ ws[:, ky, kx, :].T
    return big[:, pt:pt + oh, pl:pl + ow].copy()
