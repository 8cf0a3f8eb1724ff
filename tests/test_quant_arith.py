"""quant.arith against hand-computed gemmlowp/TFLite cases: rounding direction, saturation, shifts, edges."""

import math

import numpy as np
import pytest

from stackcam.quant.arith import (
    INT32_MAX,
    INT32_MIN,
    activation_range,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    round_half_away,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)


def srdhm(a, b):
    return int(saturating_rounding_doubling_high_mul(a, b))


@pytest.mark.parametrize("x, expect", [
    (0.5, 1), (-0.5, -1), (1.5, 2), (2.5, 3), (-2.5, -3), (1.4999999, 1), (-1.4999999, -1),
    (0.0, 0), (-0.0, 0), (3.0, 3), (-7.0, -7),
    # floor(|x| + 0.5) gets these wrong: the sum rounds in double before the floor.
    (0.49999999999999994, 0), (-0.49999999999999994, 0), (2.0**52 + 1, 2**52 + 1), (-(2.0**52 + 1), -(2**52 + 1)),
])
def test_round_half_away(x, expect):
    assert round_half_away(x) == expect


def test_wrap_int32():
    assert wrap_int32(INT32_MAX + 1) == INT32_MIN
    assert wrap_int32(INT32_MIN - 1) == INT32_MAX
    assert wrap_int32(1 << 32) == 0
    assert wrap_int32(-5) == -5


@pytest.mark.parametrize("a, b, expect", [
    # The one overflow: (-1) * (-1) in Q31 is +1, which is not representable; gemmlowp saturates.
    (INT32_MIN, INT32_MIN, INT32_MAX),
    # -2^31 * (2^31 - 1) * 2 / 2^32 = -(2^31 - 1) exactly.
    (INT32_MIN, INT32_MAX, -INT32_MAX),
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),           # (2^31-1)^2 / 2^31 = 2^31 - 2 + 2^-31 -> 2^31 - 2
    (INT32_MIN, 1 << 30, -(1 << 30)),                 # -1 * 0.5 in Q31
    (1 << 30, 1 << 30, 1 << 29),                      # 0.5 * 0.5 = 0.25
    # Exact halves: a * 2^30 / 2^31 = a / 2. Positive ties go up (away from zero) ...
    (1, 1 << 30, 1), (3, 1 << 30, 2), (5, 1 << 30, 3),
    # ... and negative ties also go up (toward zero): the nudge is 1 - 2^30 and the division truncates.
    (-1, 1 << 30, 0), (-3, 1 << 30, -1), (-5, 1 << 30, -2),
    # Off the tie, nearest: 7 * 0.75 = 5.25 -> 5, -7 * 0.75 = -5.25 -> -5, 3 * 0.75 = 2.25, -5 * 0.75 = -3.75.
    (7, 3 << 29, 5), (-7, 3 << 29, -5), (3, 3 << 29, 2), (-5, 3 << 29, -4),
    # Argument order does not matter, signs multiply.
    (1 << 30, -3, -1), (-(1 << 30), -3, 2),
    (0, INT32_MIN, 0),
])
def test_saturating_rounding_doubling_high_mul(a, b, expect):
    assert srdhm(a, b) == expect
    assert srdhm(b, a) == expect


def test_saturating_rounding_doubling_high_mul_broadcasts():
    a = np.array([[1], [-1], [INT32_MIN]])
    b = np.array([1 << 30, INT32_MIN])
    assert saturating_rounding_doubling_high_mul(a, b).tolist() == [[1, -1], [0, 1], [-(1 << 30), INT32_MAX]]


@pytest.mark.parametrize("x, exponent, expect", [
    (5, 1, 3), (-5, 1, -3), (4, 1, 2), (-4, 1, -2), (1, 1, 1), (-1, 1, -1),   # ties away from zero
    (7, 2, 2), (-7, 2, -2), (6, 2, 2), (-6, 2, -2), (5, 2, 1), (-5, 2, -1),   # 1.75, 1.5, 1.25
    (123, 0, 123), (-123, 0, -123),
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1), (1 << 30, 31, 1), (-(1 << 30), 31, -1), ((1 << 30) - 1, 31, 0),
    (INT32_MIN, 1, -(1 << 30)), (INT32_MAX, 1, 1 << 30),
])
def test_rounding_divide_by_pot(x, exponent, expect):
    assert int(rounding_divide_by_pot(x, exponent)) == expect


def test_rounding_divide_by_pot_per_element_exponent():
    assert rounding_divide_by_pot([-3, -3, -3], [0, 1, 2]).tolist() == [-3, -2, -1]


@pytest.mark.parametrize("exponent", [-1, 32])
def test_rounding_divide_by_pot_rejects_bad_exponent(exponent):
    with pytest.raises(ValueError, match="exponent"):
        rounding_divide_by_pot(1, exponent)


@pytest.mark.parametrize("x, multiplier, shift, expect", [
    # multiplier 2^30 with shift 0 is 0.5: the SRDHM tie rule alone decides.
    (3, 1 << 30, 0, 2), (-3, 1 << 30, 0, -1), (-1, 1 << 30, 0, 0),
    # 0.25 = 2^30 with shift -1: two roundings. -2 -> SRDHM -1 -> RDBPOT(-1, 1) = -1, although -0.5 exactly
    # would give 0 under single rounding; 2 -> 1 -> 1.
    (-2, 1 << 30, -1, -1), (2, 1 << 30, -1, 1), (-6, 1 << 30, -1, -2), (6, 1 << 30, -1, 2),
    # 0.125 = 2^30 with shift -2: 3 * 0.125 = 0.375 becomes 1 (1.5 -> 2, then 0.5 -> 1), -3 becomes 0.
    (3, 1 << 30, -2, 1), (-3, 1 << 30, -2, 0),
    # shift > 0 shifts left before the multiply: 1.0 = 2^30 with shift 1.
    (5, 1 << 30, 1, 5), (-5, 1 << 30, 1, -5), (100, 3 << 29, 2, 300),
    # The left shift wraps in int32 as C does (2^30 << 1 = INT32_MIN), then -1 * 0.5 in Q31.
    (1 << 30, 1 << 30, 1, -(1 << 30)),
    # Large accumulator, typical multiplier: 1e6 * 0.7 * 2^-8 = 2734.375 -> 2734.
    (1_000_000, round(0.7 * 2**31), -8, 2734), (-1_000_000, round(0.7 * 2**31), -8, -2734),
    # Full right shift of 31: INT32_MAX * (2^31-1)/2^31 * 2^-31 ~ 1 -> 1.
    (INT32_MAX, INT32_MAX, -31, 1),
    (0, INT32_MAX, -31, 0),
])
def test_multiply_by_quantized_multiplier(x, multiplier, shift, expect):
    assert int(multiply_by_quantized_multiplier(x, multiplier, shift)) == expect


def test_multiply_by_quantized_multiplier_per_channel():
    acc = np.array([[3, 3, 3], [-3, -3, -3]])
    out = multiply_by_quantized_multiplier(acc, np.array([1 << 30] * 3), np.array([1, 0, -2]))
    assert out.tolist() == [[3, 2, 1], [-3, -1, 0]]


@pytest.mark.parametrize("real, expect", [
    (0.0, (0, 0)),
    (0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.75, (3 << 29, 0)), (0.25, (1 << 30, -1)),
    (2.0, (1 << 30, 2)), (1 / 3, (round(2**32 / 3), -1)),
    # q * 2^31 is an exact tie: ties away from zero (Python's round() would give 2^30).
    (0.5 + 2**-32, ((1 << 30) + 1, 0)),
    # q rounds up to 1.0: the multiplier is halved and the shift bumped.
    (1 - 2**-40, (1 << 30, 1)), (0.5 - 2**-40, (1 << 30, 0)),
    # Smallest multiplier still represented, then flushed to zero below 2^-32.
    (2**-32, (1 << 30, -31)), (2**-33, (0, 0)), (2**-40, (0, 0)),
    # Largest unsaturated shift, then saturation at shift 30 with the largest multiplier.
    (2.0**29, (1 << 30, 30)), (2.0**30, (INT32_MAX, 30)), (1e12, (INT32_MAX, 30)),
])
def test_quantize_multiplier(real, expect):
    assert quantize_multiplier(real) == expect


@pytest.mark.parametrize("real", [-0.5, math.inf, math.nan])
def test_quantize_multiplier_rejects(real):
    with pytest.raises(ValueError):
        quantize_multiplier(real)


def test_quantize_multiplier_round_trips():
    rng = np.random.default_rng(7)
    for real in 10.0 ** rng.uniform(-9, 3, size=200):
        m, s = quantize_multiplier(real)
        assert (1 << 30) <= m < (1 << 31) and -31 <= s <= 30
        assert abs(m * 2.0 ** (s - 31) - real) <= 2.0 ** (s - 32)


@pytest.mark.parametrize("activation, scale, zero_point, expect", [
    ("NONE", 0.1, 5, (-128, 127)),
    ("RELU", 0.1, 5, (5, 127)),
    ("RELU", 0.1, -200, (-128, 127)),
    ("RELU6", 6 / 255, -128, (-128, 127)),
    ("RELU6", 0.05, -10, (-10, 110)),
    ("relu6", 0.01, 0, (0, 127)),
    ("RELU_N1_TO_1", 1 / 64, 3, (-61, 67)),
    # float32 division, as TFLite does: 6 / 2.4f is 2.4999999 in double but exactly 2.5f -> 3.
    ("RELU6", 2.4, 0, (0, 3)),
    ("RELU_N1_TO_1", 0.4, 0, (-3, 3)),                 # 1 / 0.4f = 2.5f -> 3, -2.5f -> -3
])
def test_activation_range(activation, scale, zero_point, expect):
    assert activation_range(activation, scale, zero_point) == expect


def test_activation_range_rejects_unknown():
    with pytest.raises(ValueError, match="TANH"):
        activation_range("TANH", 0.1, 0)


def test_requantize_clamps_and_adds_zero_point():
    acc = np.array([-1000, -3, 0, 3, 1000])
    out = requantize(acc, 1 << 30, 0, -10, act_min=-20, act_max=100)
    assert out.dtype == np.int8
    assert out.tolist() == [-20, -11, -10, -8, 100]
