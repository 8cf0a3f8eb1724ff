"""The ISP front end's components (rtl/isp_*.py), each alone in amaranth.sim: what it computes and its latency."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from stackcam.quant.isp import IspGeometry
from stackcam.rtl.isp import ISPFrontEnd
from stackcam.rtl.isp_bin import ISPBinAccumulator
from stackcam.rtl.isp_geometry import ISPGeometrySampler, geometry_const
from stackcam.rtl.isp_normalize import ISPNormalizer
from stackcam.rtl.isp_position import ISPPositionTracker
from stackcam.rtl.params import DieConfig

CFG = DieConfig(frame_width=24, frame_height=16, pixels_per_clock=2, input_width=5, input_height=4)
KMAX = ISPFrontEnd.bin_limit(CFG)
WIDTHS = tuple((n * k * k * 1023).bit_length() for n, k in zip((1, 2, 1), (KMAX,) * 3))


def _run(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_geometry_sampler():
    dut = ISPGeometrySampler(CFG, KMAX)
    good = IspGeometry(crop_x=4, crop_y=2, bin_factor=2, out_width=5, out_height=3)
    other = IspGeometry(crop_x=0, crop_y=0, bin_factor=1, out_width=2, out_height=2)
    bad = [IspGeometry(crop_x=4, crop_y=2, bin_factor=0, out_width=5, out_height=3),
           IspGeometry(crop_x=4, crop_y=3, bin_factor=2, out_width=5, out_height=3),
           IspGeometry(crop_x=3, crop_y=2, bin_factor=2, out_width=5, out_height=3),
           IspGeometry(crop_x=4, crop_y=2, bin_factor=2, out_width=6, out_height=3),
           IspGeometry(crop_x=24, crop_y=2, bin_factor=1, out_width=1, out_height=1)]

    def want(g):
        return {"cx0": g.crop_x // 2, "cy0": g.crop_y, "ow": g.out_width, "oh": g.out_height,
                "ow_last": g.out_width - 1, "oh_last": g.out_height - 1, "hb_last": g.bin_factor - 1,
                "ry_last": 2 * g.bin_factor - 1}

    async def tb(ctx):
        for g in bad:
            ctx.set(dut.geometry, geometry_const(g))
            assert ctx.get(dut.bad), g
        ctx.set(dut.geometry, geometry_const(good))
        ctx.set(dut.mult[1], 777)
        ctx.set(dut.offset, -5)
        ctx.set(dut.ff, 1)
        assert not ctx.get(dut.bad)
        assert {k: ctx.get(getattr(dut.cur, k)) for k in want(good)} == want(good)   # the port, on the beat
        ctx.set(dut.sample, 1)
        await ctx.tick()
        ctx.set(dut.sample, 0)
        ctx.set(dut.ff, 0)
        ctx.set(dut.geometry, geometry_const(other))                               # ignored until the next
        ctx.set(dut.mult[1], 1)
        await ctx.tick()
        assert {k: ctx.get(getattr(dut.cur, k)) for k in want(good)} == want(good)
        assert (ctx.get(dut.mult_r[1]), ctx.get(dut.offset_r)) == (777, -5)

    _run(dut, tb)


def _frame_beats(cfg):
    P, bpl = cfg.pixels_per_clock, cfg.frame_width // cfg.pixels_per_clock
    return [{"pixels": [0] * P, "line_first": bx == 0, "line_last": bx == bpl - 1,
             "frame_first": y == 0 and bx == 0, "frame_last": y == cfg.frame_height - 1 and bx == bpl - 1}
            for y in range(cfg.frame_height) for bx in range(bpl)]


def _cur(g, P):
    return {"cx0": g.crop_x // P, "cy0": g.crop_y, "ow": g.out_width, "oh": g.out_height,
            "ow_last": g.out_width - 1, "oh_last": g.out_height - 1, "hb_last": 2 * g.bin_factor // P - 1,
            "ry_last": 2 * g.bin_factor - 1}


@pytest.mark.parametrize("broken", [False, True])
def test_position_tracker(broken):
    """One frame: the crop's beats, in raster order, with their bin positions and the first / last bin; a
    broken line_last marker aborts the frame and counts one error."""
    g = IspGeometry(crop_x=4, crop_y=2, bin_factor=2, out_width=4, out_height=3)
    P, k = CFG.pixels_per_clock, g.bin_factor
    hbn = 2 * k // P
    beats = _frame_beats(CFG)
    if broken:
        beats[5 * CFG.frame_width // P + 3]["line_last"] = 1
    dut = ISPPositionTracker(CFG, KMAX)
    want = []
    for y in range(g.crop_y, g.crop_y + 2 * k * g.out_height):
        for bx in range(g.crop_x // P, g.crop_x // P + hbn * g.out_width):
            hb, ox, ry, oy = (bx - g.crop_x // P) % hbn, (bx - g.crop_x // P) // hbn, (y - g.crop_y) % (2 * k), \
                (y - g.crop_y) // (2 * k)
            want.append((hb, ox, ry, hb == hbn - 1, ry == 2 * k - 1, ox == 0 and oy == 0,
                         ox == g.out_width - 1 and oy == g.out_height - 1))

    async def tb(ctx):
        for name, value in _cur(g, P).items():
            ctx.set(getattr(dut.geo, name), value)
        ctx.set(dut.take, 1)
        got, in_frame = [], []
        for b in beats:
            ctx.set(dut.beat, b)
            p = dut.pos
            if ctx.get(p.crop):
                got.append(tuple(ctx.get(x) for x in (p.hb, p.ox, p.ry, p.x_end, p.y_end, p.first, p.last)))
            await ctx.tick()
            in_frame.append(ctx.get(dut.in_frame))
        if broken:
            assert got == want[:len(got)] and len(got) < len(want)
            assert ctx.get(dut.frame_errors) == 1 and not in_frame[-1]
        else:
            assert got == want
            assert ctx.get(dut.frame_errors) == 0 and ctx.get(dut.geometry_error) == 0
            assert all(in_frame[:-1]) and not in_frame[-1]

    _run(dut, tb)


@pytest.mark.parametrize("P,k", [(1, 1), (2, 2), (4, 2)])
def test_bin_accumulator(P, k):
    """Bins of a random crop (origin 0) against numpy: each bin one cycle after the beat completing it, with
    first / last; a stall (advance low) in the middle delays but changes nothing."""
    cfg = DieConfig(frame_width=16, frame_height=12, pixels_per_clock=P, input_width=3, input_height=2)
    kmax = ISPFrontEnd.bin_limit(cfg)
    widths = tuple((n * kmax * kmax * 1023).bit_length() for n in (1, 2, 1))
    ow, oh = 3, 2
    rng = np.random.default_rng(P * 10 + k)
    raw = rng.integers(0, 1024, (2 * k * oh, 2 * k * ow))
    blocks = raw.reshape(oh, 2 * k, ow, 2 * k).transpose(0, 2, 1, 3)
    want = [(int(b[0::2, 0::2].sum()), int(b[0::2, 1::2].sum() + b[1::2, 0::2].sum()), int(b[1::2, 1::2].sum()))
            for b in blocks.reshape(oh * ow, 2 * k, 2 * k)]
    hbn = 2 * k // P
    dut = ISPBinAccumulator(cfg, kmax, widths)

    async def tb(ctx):
        got, completing, stalls, t = [], [], [], 0
        for y in range(2 * k * oh):
            for bx in range(hbn * ow):
                hb, ox, ry, oy = bx % hbn, bx // hbn, y % (2 * k), y // (2 * k)
                for stall in ([1] if (y, bx) == (2 * k - 1, 1) else []) + [0]:
                    ctx.set(dut.advance, not stall)
                    ctx.set(dut.pixels, [int(v) for v in raw[y, bx * P:(bx + 1) * P]])
                    ctx.set(dut.pos, {"crop": not stall, "hb": hb, "ox": ox, "ry": ry, "x_end": hb == hbn - 1,
                                      "y_end": ry == 2 * k - 1, "first": ox == 0 and oy == 0,
                                      "last": ox == ow - 1 and oy == oh - 1})
                    if ctx.get(dut.bin.valid) and ctx.get(dut.advance):
                        got.append((t, ctx.get(dut.bin.sums.r), ctx.get(dut.bin.sums.g), ctx.get(dut.bin.sums.b),
                                    ctx.get(dut.bin.first), ctx.get(dut.bin.last)))
                    if not stall and hb == hbn - 1 and ry == 2 * k - 1:
                        completing.append(t)
                    if stall:
                        stalls.append(t)
                    await ctx.tick()
                    t += 1
        ctx.set(dut.pos.crop, 0)
        ctx.set(dut.advance, 1)
        if ctx.get(dut.bin.valid):
            got.append((t, ctx.get(dut.bin.sums.r), ctx.get(dut.bin.sums.g), ctx.get(dut.bin.sums.b),
                        ctx.get(dut.bin.first), ctx.get(dut.bin.last)))
        # a bin due in a stalled cycle is taken in the next
        assert [x[0] for x in got] == [c + 1 + (c + 1 in stalls) for c in completing]
        assert [x[1:4] for x in got] == want
        assert [x[4:] for x in got] == [(i == 0, i == len(want) - 1) for i in range(len(want))]

    _run(dut, tb)


def test_normalizer():
    """clamp((S * mult + offset) >> shift) two cycles after the bin; a held output holds the pipe."""
    dut = ISPNormalizer(CFG, WIDTHS)
    rng = np.random.default_rng(9)
    mult = [int(v) for v in rng.integers(0, 1 << 20, 3)]
    offset = -(3 << CFG.isp_shift)
    bins = [tuple(int(rng.integers(0, 1 << (w - 1))) for w in WIDTHS) for _ in range(4)]

    def q(s, c):
        return max(-128, min(127, (s * mult[c] + offset) >> CFG.isp_shift))

    async def tb(ctx):
        for c in range(3):
            ctx.set(dut.mult[c], mult[c])
        ctx.set(dut.offset, offset)
        got = []
        seq = [0, 1, None, 2, 2, 3, None, None, None]        # bin 2 is offered twice: not taken while held
        advance = [1, 1, 1, 0, 1, 1, 1, 1, 1]
        for t, i in enumerate(seq):
            ctx.set(dut.advance, advance[t])
            if i is not None:
                ctx.set(dut.bin, {"valid": 1, "first": i == 0, "last": i == 3,
                                  "sums": dict(zip("rgb", bins[i]))})
            else:
                ctx.set(dut.bin.valid, 0)
            if ctx.get(dut.valid) and advance[t]:
                got.append((t, [ctx.get(dut.payload.data[c]) for c in range(3)], ctx.get(dut.payload.first),
                            ctx.get(dut.payload.last)))
            await ctx.tick()
        # bins taken at cycles 0, 1, 4 and 5, out two cycles later; bin 1's, due at 3, is held to 4
        assert [x[0] for x in got] == [2, 4, 6, 7]
        assert [x[1] for x in got] == [[q(s, c) for c, s in enumerate(b)] for b in bins]
        assert [x[2:] for x in got] == [(1, 0), (0, 0), (0, 0), (0, 1)]

    _run(dut, tb)
