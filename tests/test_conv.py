"""ConvEngine, MACArray and RequantUnit against the numpy reference (amaranth.sim)."""

import random

import numpy as np
import pytest

from stackcam.quant.arith import INT32_MAX, INT32_MIN
from stackcam.quant.layer import random_conv_layer
from stackcam.quant.ref import conv2d_int8
from stackcam.rtl.conv import ConvEngine
from stackcam.rtl.requant import RequantUnit
from tests.simutil import run_sim, stream_get, stream_put


def _run_conv(layer, in_h, in_w, rows, cols, seed, idle, stall, frames=1):
    dut = ConvEngine(layer, in_h, in_w, rows, cols)
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-128, 128, size=(in_h, in_w, layer.in_channels)).astype(np.int8) for _ in range(frames)]
    n_bytes = dut.out_h * dut.out_w * dut.out_c
    got = []
    counters = []

    async def producer(ctx):
        prng = random.Random(seed)
        for x in inputs:
            flat = x.reshape(-1, layer.in_channels)
            payloads = [{"data": [int(v) for v in px], "first": i == 0, "last": i == len(flat) - 1}
                        for i, px in enumerate(flat)]
            await stream_put(ctx, dut.pixels, payloads, idle=idle, rng=prng)

    async def consumer(ctx):
        crng = random.Random(seed + 1)
        for _ in inputs:
            beats = await stream_get(ctx, dut.out, n_bytes, stall=stall, rng=crng)
            got.append(beats)
            await ctx.tick().until(~dut.busy)
            counters.append((ctx.get(dut.cycles), ctx.get(dut.mac_cycles)))

    run_sim(dut, producer, consumer, deadline_cycles=60 * n_bytes * layer.kernel[0] * layer.kernel[1] + 20000)
    assert len(got) == frames, "engine did not produce every frame"
    row_bytes = dut.out_w * dut.out_c
    for x, beats, (cycles, mac_cycles) in zip(inputs, got, counters):
        data = np.array([b.data for b in beats], np.int64).astype(np.uint8).view(np.int8)
        expect = conv2d_int8(x, layer).reshape(-1)
        mismatches = int(np.count_nonzero(data != expect))
        assert mismatches == 0, f"{mismatches}/{expect.size} bytes differ from quant.ref.conv2d_int8"
        firsts = [i for i, b in enumerate(beats) if b.first]
        lasts = [i for i, b in enumerate(beats) if b.last]
        assert firsts == list(range(0, n_bytes, row_bytes))
        assert lasts == list(range(row_bytes - 1, n_bytes, row_bytes))
        assert mac_cycles == dut.out_h * dut.out_w * dut.tiles * layer.kernel[0] * layer.kernel[1]
        assert cycles >= mac_cycles
    return dut


@pytest.mark.parametrize("in_hw,cout,rows,cols,stride,padding,kernel,idle,stall", [
    ((16, 16), 8, 4, 4, (2, 2), "SAME", (3, 3), 0.0, 0.0),
    ((9, 7), 8, 4, 4, (2, 2), "SAME", (3, 3), 0.3, 0.5),
    ((8, 10), 5, 4, 3, (1, 1), "SAME", (3, 3), 0.2, 0.3),
    ((7, 7), 6, 8, 4, (1, 1), "VALID", (5, 5), 0.0, 0.6),
    ((6, 5), 3, 2, 4, (2, 2), "VALID", (1, 1), 0.5, 0.2),
])
def test_conv_engine_matches_reference(in_hw, cout, rows, cols, stride, padding, kernel, idle, stall):
    rng = np.random.default_rng(hash((in_hw, cout, rows)) % 1000)
    layer = random_conv_layer(rng, 3, cout, kernel=kernel, stride=stride, padding=padding,
                              activation="RELU6", input_scale=1 / 128, input_zero_point=-3)
    _run_conv(layer, *in_hw, rows, cols, seed=7, idle=idle, stall=stall)


def test_conv_engine_two_frames_none_activation():
    rng = np.random.default_rng(3)
    layer = random_conv_layer(rng, 3, 4, activation="NONE", input_zero_point=5)
    _run_conv(layer, 6, 6, 4, 4, seed=11, idle=0.1, stall=0.1, frames=2)


def test_requant_unit_matches_arith():
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
    dut = RequantUnit(lanes, tag_width=9)
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
                got[ctx.get(dut.out_tag)] = [int(v) for v in ctx.get(dut.out)]

    run_sim(dut, tb, deadline_cycles=n + 50)
    assert sorted(got) == list(range(n))
    mism = sum(int(np.count_nonzero(np.array(got[i]) != expect[i])) for i in range(n))
    assert mism == 0, f"{mism} of {n * lanes} requantized values differ from quant.arith"
