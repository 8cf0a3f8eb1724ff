"""FULLY_CONNECTED on the die: FCRequantUnit (LiteRT's reference float64 rescale in integers) against
quant.ref.requantize_acc_double in amaranth.sim, element for element."""

import math
from fractions import Fraction

import numpy as np

from stackcam.quant.arith import INT32_MAX, INT32_MIN
from stackcam.rtl.requant_fc import FCRequantUnit
from tests.simutil import run_sim


def _bits(x):
    return int(np.asarray(x, "<f8").view("<u8"))


def fc_cases(rng, n):
    """(acc, bias, scale, zp, act_min, act_max), each [n]: random, exact ties, extremes, odd scales."""
    acc = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    bias = rng.integers(-(1 << 20), 1 << 20, n)
    scale = np.exp(rng.uniform(np.log(1e-11), np.log(1e-2), n))       # real FC scales: 1e-6 .. 1e-3
    zp = rng.integers(-128, 128, n)
    amin = rng.integers(-128, 0, n)
    amax = rng.integers(0, 128, n)
    amin[: n // 4], amax[: n // 4] = -128, 127
    k = 0

    def block(size):
        nonlocal k
        s = slice(k, k + size)
        k += size
        return s

    # Accumulators of a real FC layer: v within int8 reach.
    s = block(n // 8)
    scale[s] = np.exp(rng.uniform(np.log(1e-6), np.log(1e-3), s.stop - s.start))
    acc[s] = (rng.uniform(-300, 300, s.stop - s.start) / scale[s]).astype(np.int64)
    # Exact ties: v = m + 1/2 with a power-of-two scale, and odd multiples of 1/2 by 2^-1 .. 2^-20.
    s = block(n // 8)
    e = rng.integers(1, 21, s.stop - s.start)
    half = rng.integers(-200, 200, s.stop - s.start) * 2 + 1              # odd
    acc[s], bias[s], scale[s] = half << (e - 1), 0, 2.0 ** -e.astype(np.float64)
    # Double-rounding ties: |a| * M just below (or above) a half by less than the 53-bit rounding step, so the
    # double product is exactly m + 1/2 (and LiteRT rounds away) though the exact product is not.
    s = block(n // 8)
    a = rng.integers(1 << 20, 1 << 31, s.stop - s.start) | 1
    acc[s], bias[s], scale[s] = a * rng.choice([-1, 1], s.stop - s.start), 0, (rng.integers(0, 120, a.size) + 0.5) / a
    # Products just below 1/2 whose double is 1/2 (rounds to 1): the significand's carry out of 53 bits.
    s = block(8)
    found = []
    while len(found) < 8:
        a = int(rng.integers(3, 1 << 31)) | 1
        for sc in (0.5 / a, np.nextafter(0.5 / a, 0.0)):
            if a * sc == 0.5 and Fraction(a) * Fraction(sc) < Fraction(1, 2):
                found.append((a * (-1) ** len(found), sc))
                break
    acc[s], bias[s], scale[s] = [a for a, _ in found], 0, [sc for _, sc in found]
    # Extremes of the accumulator.
    s = block(16)
    acc[s] = [INT32_MIN, INT32_MAX, INT32_MIN + 1, -1, 1, 0, INT32_MIN, INT32_MAX] * 2
    bias[s] = 0
    bias[s.start + 8: s.stop] = [-1, 1, 0, 0, 0, 0, INT32_MAX, INT32_MIN]     # bias wraps the int32 sum
    scale[s] = np.exp(rng.uniform(np.log(1e-12), np.log(1e-6), 16))
    # Scales: zero, subnormal, smallest normal, large, huge, infinite, negative; 2^-n boundaries.
    special = [0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 0.25, 0.5, 1.0, 3.0, 127.5, 1e6, 1e300,
               1.7976931348623157e308, np.inf, -np.inf, -1e-4, -0.5, 2.0 ** -31, 2.0 ** -32, 2.0 ** -41,
               2.0 ** -42, 2.0 ** -43, 2.0 ** -52, 2.0 ** -53, 2.0 ** -54, 1.0 - 2.0 ** -53]
    s = block(len(special) * 4)
    scale[s] = np.repeat(special, 4)
    acc[s] = np.tile([0, 1, -3, INT32_MIN], len(special))
    acc[s][np.repeat(np.isinf(special), 4) & (acc[s] == 0)] = 7                  # 0 * inf is NaN: undefined
    bias[s] = 0
    # Small accumulators on 2^-k scales: every rounding position of stage 5.
    s = block(n // 8)
    acc[s] = rng.integers(-5000, 5000, s.stop - s.start)
    scale[s] = 2.0 ** -rng.integers(0, 14, s.stop - s.start) * rng.choice([1.0, 1.5, 0.75], s.stop - s.start)
    return acc, bias, scale, zp, amin, amax


def test_fc_requant_unit_matches_ref():
    lanes = 3
    rng = np.random.default_rng(11)
    n = 600
    acc, bias, scale, zp, amin, amax = (v.reshape(-1, lanes) for v in fc_cases(rng, n * lanes))
    with np.errstate(invalid="ignore", over="ignore"):
        expect = FCRequantUnit.model(acc, bias, scale, zp, amin, amax)
    dut = FCRequantUnit(lanes, tag_width=10)
    got = {}

    async def tb(ctx):
        for i in range(n + dut.latency + 1):
            if i < n:
                ctx.set(dut.valid, 1)
                ctx.set(dut.tag, i)
                ctx.set(dut.acc, [int(v) for v in acc[i]])
                ctx.set(dut.params, [{"bias": int(bias[i, k]), "scale": _bits(scale[i, k]),
                                      "zero_point": int(zp[i, k]), "act_min": int(amin[i, k]),
                                      "act_max": int(amax[i, k])} for k in range(lanes)])
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                got[ctx.get(dut.out_tag)] = [int(v) for v in ctx.get(dut.out)]

    run_sim(dut, tb, deadline_cycles=n + 50)
    assert sorted(got) == list(range(n))
    bad = [(i, k, int(acc[i, k]), int(bias[i, k]), float(scale[i, k]), got[i][k], int(expect[i, k]))
           for i in range(n) for k in range(lanes) if got[i][k] != expect[i, k]]
    assert not bad, f"{len(bad)} of {n * lanes} differ (row, lane, acc, bias, scale, die, ref): {bad[:5]}"


def test_fc_cases_hit_ties():
    """The stimulus reaches the cases that tell LiteRT's rule from the others: exact ties of the double product,
    most of them where the exact product is not a tie (one rounding to 53 bits made it one)."""
    acc, bias, scale, *_ = fc_cases(np.random.default_rng(11), 1800)
    a = (acc + bias + (1 << 31)) % (1 << 32) - (1 << 31)
    ties = double_rounded = 0
    for ai, sc in zip(a.tolist(), scale.tolist()):
        v = ai * sc
        if math.isfinite(v) and abs(v) < 300 and Fraction(v).denominator == 2:
            ties += 1
            double_rounded += (Fraction(ai) * Fraction(sc)).denominator != 2
    assert ties > 300 and double_rounded > 150, (ties, double_rounded)
