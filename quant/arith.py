"""TFLite/gemmlowp integer arithmetic as plain numpy: the one numeric truth the RTL and the compiler follow."""

import math

import numpy as np

__all__ = ["INT32_MIN", "INT32_MAX", "round_half_away", "wrap_int32", "saturating_rounding_doubling_high_mul",
           "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "quantize_multiplier",
           "requantize", "activation_range"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def round_half_away(x):
    """std::round / TfLiteRound on a scalar: nearest integer, ties away from zero (Python's round() is not)."""
    # Not floor(|x| + 0.5): that sum rounds in double, giving 1 for 0.49999999999999994 and 2^52 + 2 for
    # 2^52 + 1. The fractional part |x| - floor(|x|) is exact, so compare it with the half instead.
    a = abs(x)
    r = math.floor(a)
    if a - r >= 0.5:
        r += 1
    return r if x >= 0 else -r


def wrap_int32(x):
    """Two's-complement wrap to int32, as C int32 arithmetic does on every target we care about."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 (elementwise, numpy broadcasting).

    The high 32 bits of 2*a*b rounded to nearest, saturated only in the single overflow case
    a == b == INT32_MIN. Ties go toward +infinity, not away from zero: the negative nudge is 1 - 2^30 and the
    division truncates, so -0.5 -> 0 and -1.5 -> -1 (0.5 -> 1). Only RoundingDivideByPOT rounds ties away.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b                                             # fits in int64: |ab| <= 2^62
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    # C integer division truncates toward zero; numpy's // floors, so correct for negative t.
    q = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where(overflow, INT32_MAX, q).astype(np.int64)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("rounding_divide_by_pot: exponent must be in 0..31")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + np.where(x < 0, 1, 0)
    return (x >> exponent) + np.where(remainder > threshold, 1, 0)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift), reference-kernel form.

    shift > 0 is a left shift applied before the high multiply (in int32, wrapping as C does), shift < 0 a
    rounding right shift after it.
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(wrap_int32(x << left), multiplier), right)


def quantize_multiplier(real_multiplier):
    """TFLite QuantizeMultiplier: real -> (Q31 multiplier in [2^30, 2^31), shift), real = m * 2^(shift-31)."""
    real_multiplier = float(real_multiplier)
    if real_multiplier == 0.0:
        return 0, 0
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise ValueError(f"quantize_multiplier: multiplier must be finite and non-negative, got {real_multiplier}")
    q, shift = math.frexp(real_multiplier)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        shift = 30
        q_fixed = (1 << 31) - 1
    return q_fixed, shift


def requantize(acc, multiplier, shift, zero_point, act_min=-128, act_max=127):
    """int32 accumulator -> int8: scale by the quantized multiplier, add the zero point, clamp."""
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(out, act_min, act_max).astype(np.int8)


def activation_range(activation, scale, zero_point, qmin=-128, qmax=127):
    """TFLite CalculateActivationRangeQuantized for NONE, RELU, RELU6 and RELU_N1_TO_1."""
    def q(v):
        # TFLite divides in float32 (float f / float scale), not double: 6 / 2.4f is 2.4999999 in double but
        # exactly 2.5f in float32, so the clamp differs by one when the quotient sits next to a half.
        return zero_point + round_half_away(float(np.float32(v) / np.float32(scale)))
    activation = activation.upper()
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, q(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise ValueError(f"unsupported fused activation {activation!r}")
