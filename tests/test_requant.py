"""RequantUnit (the pipelined TFLite requantization of the conv back end and the vector engine) against
quant.arith, element for element (amaranth.sim)."""

import numpy as np
import pytest

from stackcam.quant.arith import INT32_MAX, INT32_MIN
from stackcam.rtl.requant import RequantUnit
from tests.simutil import run_sim


@pytest.mark.parametrize("deep", [False, True], ids=["5 stages", "deep: 9 stages"])
def test_requant_unit_matches_arith(deep):
    lanes = 4
    rng = np.random.default_rng(5)
    n = 400
    acc = rng.integers(INT32_MIN, INT32_MAX, size=(n, lanes), dtype=np.int64)
    acc[:40] = rng.integers(-5000, 5000, size=(40, lanes))
    acc[40, :] = INT32_MIN
    acc[41, :] = INT32_MAX
    bias = rng.integers(-(1 << 20), 1 << 20, size=(n, lanes))
    mult = rng.integers(1 << 30, (1 << 31) - 1, size=(n, lanes))
    mult[50:60] = INT32_MIN        # exercises SRDHM's single saturating case together with x == INT32_MIN
    acc[50:60] = INT32_MIN
    bias[50:60] = 0
    shift = rng.integers(-31, 8, size=(n, lanes))
    shift[50:60] = 0
    # Exact ties in both rounding steps: power-of-two multipliers on small odd accumulators.
    acc[100:140] = rng.integers(-64, 64, size=(40, lanes)) * 2 + 1
    bias[100:140] = 0
    mult[100:140] = 1 << 30
    shift[100:140] = rng.integers(-4, 1, size=(40, lanes))
    zp = rng.integers(-128, 128, size=(n, lanes))
    amin = rng.integers(-128, 0, size=(n, lanes))
    amax = rng.integers(0, 128, size=(n, lanes))
    expect = RequantUnit.model(acc, bias, mult, shift, zp, amin, amax)
    dut = RequantUnit(lanes, tag_width=9, deep=deep)
    assert dut.latency == (9 if deep else 5)
    got = {}

    async def tb(ctx):
        for i in range(n + dut.latency + 1):
            if i < n:
                ctx.set(dut.valid, 1)
                ctx.set(dut.tag, i)
                ctx.set(dut.acc, [int(v) for v in acc[i]])
                ctx.set(dut.params, [{"bias": int(bias[i, k]), "multiplier": int(mult[i, k]),
                                      "shift": int(shift[i, k]), "zero_point": int(zp[i, k]),
                                      "act_min": int(amin[i, k]), "act_max": int(amax[i, k])}
                                     for k in range(lanes)])
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                # Each result exactly `latency` cycles after its input.
                assert ctx.get(dut.out_tag) == i + 1 - dut.latency
                got[ctx.get(dut.out_tag)] = [int(v) for v in ctx.get(dut.out)]

    run_sim(dut, tb, deadline_cycles=n + 50)
    assert sorted(got) == list(range(n))
    mism = sum(int(np.count_nonzero(np.array(got[i]) != expect[i])) for i in range(n))
    assert mism == 0, f"{mism} of {n * lanes} requantized values differ from quant.arith"
