"""The conv engine's components (rtl/npu/conv_*.py), each alone in amaranth.sim: what it computes and its cycle
count against `quant.timing`'s formula for it."""

import sys

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import memory
from amaranth.sim import Simulator

import stackcam.quant.program as fmt
from stackcam.quant import timing
from stackcam.quant.arith import requantize
from stackcam.rtl.npu.conv_backend import ConvBackEnd
from stackcam.rtl.npu.conv_common import ConvDims, param_record_layout
from stackcam.rtl.npu.conv_datapath import ConvMACPipe
from stackcam.rtl.npu.conv_dwwalk import ConvDepthwiseWalk
from stackcam.rtl.npu.conv_im2col import ConvIm2colGatherer
from stackcam.rtl.npu.conv_issue import ConvDirectIssue
from stackcam.rtl.npu.conv_params import ConvParamLoader
from stackcam.rtl.npu.conv_setup import ConvSetup
from stackcam.rtl.params import DieConfig

sys.set_int_max_str_digits(0)


def _config(rows, cols, **kw):
    return DieConfig(name=f"a{rows}x{cols}", array_rows=rows, array_cols=cols, sram_banks=4,
                     sram_bank_bytes=4096 if rows * cols <= 64 else 16 * 1024, weight_banks=2, max_channels=64,
                     **kw)


def _desc(**kw):
    base = dict(opcode=fmt.OPCODES["CONV"], kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, in_h=5, in_w=6,
                in_c=4, in_ct=1, out_h=5, out_w=6, out_c=4, out_ct=1, in_addr=100, out_addr=300, weight_addr=10,
                param_addr=2, param_words=2, oc_tiles=1, tile_words=9, pad_top=1, pad_left=1)
    base.update(kw)
    return fmt.Descriptor(**base)


def _desc_value(d):
    return int.from_bytes(fmt.pack(d), "little")


def geometry(dims, d):
    """What ConvSetup computes, in Python."""
    amask = (1 << dims.AB) - 1
    row_stride = d.in_w * d.in_ct & amask
    g = {
        "row_stride": row_stride, "row_step": row_stride * d.stride_h & amask, "col_step": d.stride_w * d.in_ct,
        "pix0": (d.in_addr - row_stride * d.pad_top - d.pad_left * d.in_ct) & amask,
        "out_row_words": d.out_w * d.out_ct, "last_col": (d.out_w - 1) * d.stride_w + d.kernel_w - 1,
    }
    if d.flags & fmt.PACKED:
        wby = d.in_ppw * d.in_c
        in_row_b, step_b, pl_b = d.in_w * d.in_c, d.stride_w * d.in_c, d.pad_left * d.in_c
        qx, rx = divmod(in_row_b * d.pad_top + pl_b, wby)
        g.update(in_row_b=in_row_b, rowbytes=d.kernel_w * d.in_c, wby=wby, step_b=step_b, pl_b=pl_b,
                 offs=[j * step_b for j in range(1, dims.G + 1)],
                 origin_w=(d.in_addr - qx - (rx != 0)) & amask, origin_b=wby - rx if rx else 0)
        for key, value in (("s", dims.G * step_b), ("r", in_row_b), ("rs", in_row_b * d.stride_h)):
            g["q" + key], g["r" + key] = divmod(value, wby)
    return g


def _set_geometry(ctx, port, g):
    for key, value in g.items():
        if key == "offs":
            for j, v in enumerate(value):
                ctx.set(port.offs[j], v)
        else:
            ctx.set(getattr(port, key), value)


def _run(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


# --- ConvSetup ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True])
def test_setup(packed):
    config = _config(4, 8, im2col_pixels=3)
    dims = ConvDims(config)
    d = _desc(in_c=3, kernel_w=3, stride_h=2, stride_w=2, pad_top=1, pad_left=1, in_w=13, in_h=10, out_w=7,
              out_h=5, in_ppw=2, flags=fmt.PACKED if packed else 0, in_addr=7)
    dut = ConvSetup(dims)
    want = geometry(dims, d)

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), _desc_value(d))
        ctx.set(dut.packed, packed)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 1
        while not ctx.get(dut.done):
            await ctx.tick()
            cycles += 1
        await ctx.tick()
        assert cycles == timing.setup_cycles(config, d)
        for key, value in want.items():
            got = [ctx.get(dut.geom.offs[j]) for j in range(dims.G)] if key == "offs" else \
                ctx.get(getattr(dut.geom, key))
            assert got == value, key

    _run(dut, tb)


# --- ConvParamLoader ---------------------------------------------------------------------------------------------

class _LoaderBench(Elaboratable):
    def __init__(self, config, dims, wsram):
        self.dut = ConvParamLoader(config, dims)
        self.dims = dims
        self.init = [int.from_bytes(row.tobytes(), "little") for row in wsram]
        self.width = 8 * config.weight_word_bytes

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.wmem = wmem = memory.Memory(shape=self.width, depth=len(self.init), init=self.init)
        m.submodules.pbuf = self.pbuf = pbuf = memory.Memory(
            shape=self.dims.C * param_record_layout.size, depth=self.dims.param_depth, init=[])
        r = wmem.read_port()
        w = pbuf.write_port(granularity=param_record_layout.size)
        m.d.comb += [r.addr.eq(dut.w_r.addr), r.en.eq(dut.w_r.en), dut.w_r.data.eq(r.data),
                     w.addr.eq(dut.pbuf.addr), w.data.eq(dut.pbuf.data.as_value()), w.en.eq(dut.pbuf.en)]
        return m


@pytest.mark.parametrize("rows,cols", [(4, 4), (2, 4), (32, 32)])
def test_param_loader(rows, cols):
    """One record group per cycle: a word per cycle (4x4), a record per two words (2x4: 8-byte words), two
    beats per word (32x32: 64 records per word, 32 per buffer word)."""
    config = _config(rows, cols).with_(max_channels=128)
    dims = ConvDims(config)
    channels = 70 if rows == 32 else 13
    rng = np.random.default_rng(1)
    bias = rng.integers(-2 ** 31, 2 ** 31, channels)
    mult = rng.integers(2 ** 30, 2 ** 31, channels)
    shift = rng.integers(-31, 31, channels)
    block = fmt.pack_params(bias, mult, shift, rows, cols)
    wsram = np.concatenate([np.zeros((3, rows * cols), np.uint8), block])
    d = _desc(param_addr=3, param_words=block.shape[0])
    bench = _LoaderBench(config, dims, wsram)
    dut = bench.dut

    async def tb(ctx):
        ctx.set(dut.param_addr, d.param_addr)
        ctx.set(dut.param_words, d.param_words)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.active, 1)
        cycles = 1
        while not ctx.get(dut.done):
            await ctx.tick()
            cycles += 1
        ctx.set(dut.active, 0)
        await ctx.tick()
        assert cycles == timing.param_load_cycles(config, d)
        rec = param_record_layout
        for k in range(channels):
            word = ctx.get(bench.pbuf.data[k // cols])
            v = word >> (k % cols) * rec.size
            got = [v & 0xFFFFFFFF, v >> 32 & 0xFFFFFFFF, v >> 64 & 0x3F]
            want = [int(bias[k]) & 0xFFFFFFFF, int(mult[k]) & 0xFFFFFFFF, int(shift[k]) & 0x3F]
            assert got == want, k

    _run(bench, tb)


# --- ConvDirectIssue ---------------------------------------------------------------------------------------------

def _direct_reads(d, dims):
    """(act address or None in the padding, weight address, first, to2, split) of every issue of a direct CONV, in
    order: per tap its in_ct words, or with PAIR (per oc-tile pair) words 0 .. F-1 for the first tile, again for
    the second (`to2`), then word F for both (`split`), and for an odd last tile word F (`split`) then words
    0 .. F-1; `first`: the issue starts an accumulator (a `split` one both)."""
    out = []
    row_stride = d.in_w * d.in_ct
    pix0 = d.in_addr - row_stride * d.pad_top - d.pad_left * d.in_ct
    f = d.in_ct - 1
    pair = bool(d.flags & fmt.PAIR)
    for oy in range(d.out_h):
        for ox in range(d.out_w):
            w = d.weight_addr
            for t in range(-(-d.oc_tiles // 2) if pair else d.oc_tiles):
                if not pair:
                    phases = [(i, 0, 0) for i in range(d.in_ct)]
                elif 2 * t + 1 < d.oc_tiles:
                    phases = [(i, 0, 0) for i in range(f)] + [(i, 1, 0) for i in range(f)] + [(f, 0, 1)]
                else:
                    phases = [(f, 0, 1)] + [(i, 0, 0) for i in range(f)]
                for ky in range(d.kernel_h):
                    for kx in range(d.kernel_w):
                        for k, (ic, to2, split) in enumerate(phases):
                            iy, ix = oy * d.stride_h - d.pad_top + ky, ox * d.stride_w - d.pad_left + kx
                            inside = 0 <= iy < d.in_h and 0 <= ix < d.in_w
                            a = pix0 + oy * d.stride_h * row_stride + ox * d.stride_w * d.in_ct + ky * row_stride \
                                + kx * d.in_ct + ic
                            first = ky == 0 and kx == 0 and (k == 0 or (to2 and ic == 0))
                            out.append((a if inside else None, w, int(first), to2, split))
                            w += 1
    return out


@pytest.mark.parametrize("mode", ["conv", "dw_taps", "pair", "pair1", "pair_even"])
def test_direct_issue(mode):
    """CONV: one word per cycle, no bubble, in the loop order, padding taps not read. PAIR (oc tiles in pairs):
    per tap the first tile's full input words, the second's (`to2`), the last word for both (`split`; with one
    input word only that), each accumulator's first issue marked; an odd last tile (3 tiles: "pair", "pair1")
    its last word first (`split`), then its full words. DWCONV with a 5x5 kernel (more taps than the
    walk holds): a tap per cycle, a tile no sooner than `groups` cycles after the last."""
    config = _config(2, 4)
    dims = ConvDims(config)
    if mode == "conv":
        d = _desc(in_ct=2, oc_tiles=3, tile_words=18, out_h=3, out_w=4, in_h=3, in_w=4, stride_h=1, stride_w=1)
        want = timing.direct_issue_cycles(d)
    elif mode.startswith("pair"):
        in_ct = 1 if mode == "pair1" else 3
        tiles = 4 if mode == "pair_even" else 3
        d = _desc(in_ct=in_ct, in_c=4 * in_ct - 2, oc_tiles=tiles, tile_words=9 * (2 * in_ct - 1), out_h=3,
                  out_w=4, in_h=3, in_w=4, flags=fmt.PAIR)
        want = timing.direct_issue_cycles(d)
        assert want == 3 * 4 * 9 * (tiles // 2 * (2 * in_ct - 1) + tiles % 2 * in_ct)
    else:
        d = _desc(opcode=fmt.OPCODES["DWCONV"], kernel_h=1, kernel_w=1, in_ct=1, out_ct=2, oc_tiles=0,
                  tile_words=1, out_h=2, out_w=2, in_h=2, in_w=2, pad_top=0, pad_left=0)
        want = timing.dw_tap_issue_cycles(config, d)
    dut = ConvDirectIssue(dims)

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), _desc_value(d))
        _set_geometry(ctx, dut.geom, geometry(dims, d))
        ctx.set(dut.dw, mode == "dw_taps")
        ctx.set(dut.pair, mode.startswith("pair"))
        ctx.set(dut.enable, 1)
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        issues, cycle, last = [], 0, None
        while True:
            cycle += 1
            if ctx.get(dut.issue.valid):
                issues.append((ctx.get(dut.act_r.addr) if ctx.get(dut.act_r.en) else None, ctx.get(dut.w_r.addr),
                               ctx.get(dut.issue.first), ctx.get(dut.issue.to2), ctx.get(dut.issue.split)))
                last = cycle
                if ctx.get(dut.issue.final):
                    break
            assert cycle < 5000
            await ctx.tick()
        assert last == want
        if mode != "dw_taps":
            assert issues == _direct_reads(d, dims)
        else:
            assert len(issues) == d.out_h * d.out_w * d.out_ct

    _run(dut, tb)


# --- ConvDepthwiseWalk -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,k,stride", [(4, 4, 3, 1), (2, 4, 3, 1), (4, 8, 3, 2), (2, 8, 2, 1)])
def test_depthwise_walk(rows, cols, k, stride):
    """Every output closes once, on its set, at the cycle `dw_walk_close_cycles` says for the last: rolling
    (3 sets cover 3x3 s1), strips (2 sets, 3x3 s1), closes that wait for the drain (4x8 and 2x8: 2 and 4
    lane groups per word)."""
    config = _config(rows, cols)
    dims = ConvDims(config)
    d = _desc(opcode=fmt.OPCODES["DWCONV"], kernel_h=k, kernel_w=k, stride_h=stride, stride_w=stride, in_h=7,
              in_w=9, in_ct=2, out_ct=2, oc_tiles=0, tile_words=-(-k * k // rows), out_h=-(-7 // stride),
              out_w=-(-9 // stride), pad_top=k // 2, pad_left=k // 2)
    dut = ConvDepthwiseWalk(dims)

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), _desc_value(d))
        _set_geometry(ctx, dut.geom, geometry(dims, d))
        ctx.set(dut.enable, 1)
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        closes, cycle, issues = [], 0, 0
        while True:
            cycle += 1
            if ctx.get(dut.issue.valid):
                issues += 1
                if ctx.get(dut.issue.last):
                    closes.append(ctx.get(dut.issue.oaddr))
                if ctx.get(dut.issue.final):
                    break
            assert cycle < 20000
            await ctx.tick()
        assert cycle == timing.dw_walk_close_cycles(config, d)
        assert sorted(closes) == [d.out_addr + i for i in range(d.out_h * d.out_w * d.out_ct)]

    _run(dut, tb)


# --- ConvIm2colGatherer ------------------------------------------------------------------------------------------

class _GatherBench(Elaboratable):
    def __init__(self, dims, act):
        self.dut = ConvIm2colGatherer(dims)
        self.init = [int.from_bytes(row.tobytes(), "little") for row in act.astype(np.uint8)]
        self.C = dims.C

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.act = act = memory.Memory(shape=8 * self.C, depth=len(self.init), init=self.init)
        r = act.read_port()
        m.d.comb += [r.addr.eq(dut.act_r.addr), r.en.eq(dut.act_r.en), dut.act_data.eq(r.data)]
        return m


@pytest.mark.parametrize("G", [1, 3])
def test_im2col_gatherer(G):
    """A packed RGB input (2 pixels per 8-byte word), 3x3 s2 SAME: each group's pixel buffers hold their
    windows (in_zp outside the input), full `steps + 1` cycles after the group's first read; the set is
    gathered again once released."""
    config = _config(4, 8, im2col_pixels=G)
    dims = ConvDims(config)
    h, w, c, zp = 6, 7, 3, -5
    d = _desc(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, in_h=h, in_w=w, in_c=c, in_ppw=2, out_h=3, out_w=4,
              pad_top=0, pad_left=0, in_ct=4, oc_tiles=1, tile_words=4, flags=fmt.PACKED, in_addr=5, in_zp=zp)
    x = np.random.default_rng(2).integers(-128, 128, (h, w, c)).astype(np.int8)
    act = np.zeros((64, 8), np.int8)
    fmt.write_packed(act, d.in_addr, x, zp)
    padded = np.full((h + 2, w + 2, c), zp, np.int8)
    padded[:h, :w] = x
    groups = timing.im2col_groups(d, G)
    # The schedule of quant.timing.im2col_feed_cycles with a feed of one cycle per group (this bench's): cycles
    # counted from the first after `init` (0).
    gather_end, feed = [], []
    for n, (_, steps) in enumerate(groups):
        start = 0 if n == 0 else max(gather_end[-1] + 1, feed[n - 2] + 1 if n >= 2 else 0)
        gather_end.append(start + steps - 1)
        feed.append(max(gather_end[-1] + 2, feed[-1] + 1 if feed else 0))
    bench = _GatherBench(dims, act)
    dut = bench.dut

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), _desc_value(d))
        _set_geometry(ctx, dut.geom, geometry(dims, d))
        ctx.set(dut.enable, 1)
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        cycle, n = 0, 0
        pixels = [(oy, ox) for oy in range(d.out_h) for ox in range(d.out_w)]
        while n < len(groups):
            s = n % 2
            if ctx.get(dut.full) >> s & 1:
                assert cycle == feed[n], n
                for g in range(groups[n][0]):
                    oy, ox = pixels.pop(0)
                    want = padded[2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3].reshape(-1)
                    got = []
                    for k in range(d.in_ct):
                        ctx.set(dut.feed.set, s)
                        ctx.set(dut.feed.pixel, g)
                        ctx.set(dut.feed.word, k)
                        got += list(int(ctx.get(dut.word)).to_bytes(8, "little"))
                    assert np.array_equal(np.array(got[:want.size], np.uint8).view(np.int8), want), (n, g)
                ctx.set(dut.feed.set, s)
                ctx.set(dut.release, 1)
                await ctx.tick()
                ctx.set(dut.release, 0)
                n += 1
            else:
                assert cycle < 5000
                await ctx.tick()
            cycle += 1
        assert not pixels

    _run(bench, tb)


# --- ConvMACPipe -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("deep", [False, True], ids=["default", "deep"])
def test_mac_pipe(deep):
    """Direct CONV: a tile of three issued words; its sums are at S4 (`tile.done`) 2 + MAC latency cycles after
    its last issue (4; 5 with `deep_pipeline`), with x = activation - in_zp and 0 for a tap in the padding."""
    config = _config(2, 4, deep_pipeline=deep)
    dims = ConvDims(config)
    dut = ConvMACPipe(dims)
    rng = np.random.default_rng(3)
    zp = 7
    acts = rng.integers(-128, 128, (3, 4))
    ws = rng.integers(-128, 128, (3, 2, 4))
    inside = [1, 0, 1]

    def word(values):
        return int.from_bytes(np.asarray(values, np.int8).tobytes(), "little")

    async def tb(ctx):
        ctx.set(dut.in_zp, zp)
        done_at = None
        for cycle in range(12):
            i = cycle
            if i < 3:
                ctx.set(dut.issue.valid, 1)
                ctx.set(dut.issue.first, i == 0)
                ctx.set(dut.issue.last, i == 2)
                ctx.set(dut.issue.inside, inside[i])
                ctx.set(dut.issue.oaddr, 42)
            else:
                ctx.set(dut.issue.valid, 0)
            if 1 <= i <= 3:        # S1: the SRAMs' data for the word issued in the previous cycle
                ctx.set(dut.act_data, word(acts[i - 1]))
                ctx.set(dut.w_data, word(ws[i - 1].reshape(-1)))
            if ctx.get(dut.tile.done):
                done_at = cycle
                want = sum(ws[k].astype(np.int64) @ ((acts[k] - zp) * inside[k]) for k in range(3))
                assert [ctx.get(dut.acc[r]) for r in range(2)] == want.tolist()
                assert ctx.get(dut.tile.oaddr) == 42
            await ctx.tick()
        assert done_at == 2 + 2 + timing.mac_latency(config) == 2 + 2 + (3 if deep else 2)

    _run(dut, tb)


@pytest.mark.parametrize("deep", [False, True], ids=["default", "deep"])
def test_mac_array_split(deep):
    """The split MAC array (PAIR): an input with `to2` goes to acc2 instead of acc, one with `halves` sends the
    lower half of each row to acc and the upper to acc2, `clear` restarts the accumulators the input goes to and
    the other keeps its value; int32 wrap-around as TFLite's."""
    from stackcam.rtl.mac_array import MACArray
    rows, cols = 3, 4
    dut = MACArray(rows, cols, deep=deep, split=True)
    rng = np.random.default_rng(5)
    # (x, w, to2, halves, clear), then idle cycles to let the pipeline drain.
    steps = [(rng.integers(-255, 256, cols), rng.integers(-128, 128, (rows, cols)), to2, halves, clear)
             for to2, halves, clear in [(0, 0, 1), (1, 0, 1), (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 1, 1), (1, 0, 0),
                                        (0, 0, 0), (0, 1, 0)]]
    steps[2] = (np.full(cols, 255), np.full((rows, cols), -128), 0, 0, 0)     # large sums: the wrap is exercised
    acc, acc2 = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
    want = []
    for x, w, to2, halves, clear in steps:
        lo, hi = w[:, :cols // 2] @ x[:cols // 2], w[:, cols // 2:] @ x[cols // 2:]
        if halves:
            acc, acc2 = (0 if clear else acc) + lo, (0 if clear else acc2) + hi
        elif to2:
            acc2 = (0 if clear else acc2) + lo + hi
        else:
            acc = (0 if clear else acc) + lo + hi
        acc, acc2 = (acc + 2**31) % 2**32 - 2**31, (acc2 + 2**31) % 2**32 - 2**31
        want.append((acc.tolist(), acc2.tolist()))

    async def tb(ctx):
        got = []
        for i in range(len(steps) + dut.latency - 1):
            if i < len(steps):
                x, w, to2, halves, clear = steps[i]
                for c in range(cols):
                    ctx.set(dut.x[c], int(x[c]))
                    for r in range(rows):
                        ctx.set(dut.w[r][c], int(w[r, c]))
                ctx.set(dut.en, 1)
                ctx.set(dut.to2, to2)
                ctx.set(dut.halves, halves)
                ctx.set(dut.clear, clear)
            else:
                ctx.set(dut.en, 0)
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append(([ctx.get(dut.acc[r]) for r in range(rows)], [ctx.get(dut.acc2[r]) for r in range(rows)]))
        assert got == want

    _run(dut, tb)


# --- ConvBackEnd -------------------------------------------------------------------------------------------------

class _BackBench(Elaboratable):
    def __init__(self, config, dims, recs):
        self.dut = ConvBackEnd(config, dims)
        self.dims = dims
        self.init = recs

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.pbuf = pbuf = memory.Memory(shape=self.dims.C * param_record_layout.size,
                                                 depth=self.dims.param_depth, init=self.init)
        r = pbuf.read_port()
        m.d.comb += [r.addr.eq(dut.pbuf.addr), r.en.eq(1), dut.pbuf.data.as_value().eq(r.data)]
        return m


@pytest.mark.parametrize("deep", [False, True], ids=["default", "deep"])
@pytest.mark.parametrize("dw", [False, True])
def test_back_end(dw, deep):
    """CONV: a tile (2 rows) of lane group 1 of the pixel's last word, written 1 + RequantUnit.latency cycles
    after `tile.done` into lanes 2..3, with out_zp above it (lanes 4..7). DWCONV: the set's 8 sums held, then
    drained 2 lanes a cycle: 4 writes, from 2 + RequantUnit.latency cycles after `tile.done` (5; 9 with
    `deep_pipeline`)."""
    config = _config(2, 8, deep_pipeline=deep)
    latency = timing.requant_latency(config)
    assert latency == (9 if deep else 5)
    dims = ConvDims(config)
    rng = np.random.default_rng(4)
    C, R = 8, 2
    bias = rng.integers(-1000, 1000, 2 * C)
    mult = rng.integers(2 ** 30, 2 ** 31 - 1, 2 * C)
    shift = rng.integers(-8, 0, 2 * C)
    rec = param_record_layout
    recs = [sum(((int(bias[w * C + j]) & 0xFFFFFFFF) | (int(mult[w * C + j]) & 0xFFFFFFFF) << 32
                 | (int(shift[w * C + j]) & 0x3F) << 64) << j * rec.size for j in range(C)) for w in range(2)]
    bench = _BackBench(config, dims, recs)
    dut = bench.dut
    sums = rng.integers(-30000, 30000, C)
    out_zp, lo, hi = -3, -128, 100

    def want(ch, acc):
        return int(requantize(np.array([acc + bias[ch]]), mult[ch], shift[ch], out_zp, lo, hi)[0])

    async def tb(ctx):
        ctx.set(dut.dw, dw)
        ctx.set(dut.out_zp, out_zp)
        ctx.set(dut.act_min, lo)
        ctx.set(dut.act_max, hi)
        ctx.set(dut.tile.done, 1)
        ctx.set(dut.tile.final, 1)
        ctx.set(dut.tile.pw, 1)
        ctx.set(dut.tile.oaddr, 9)
        if dw:
            for c in range(C):
                ctx.set(dut.dw_sum[c], int(sums[c]))
        else:
            ctx.set(dut.tile.sub, 1)
            ctx.set(dut.tile.rest, 1)
            for r in range(R):
                ctx.set(dut.acc[r], int(sums[r]))
        writes = []
        for cycle in range(2 + latency + C // R + 1):
            if cycle == 1:
                ctx.set(dut.tile.done, 0)
            en = ctx.get(dut.act_w.en)
            if en:
                data = int(ctx.get(dut.act_w.data)).to_bytes(C, "little")
                writes.append((cycle, ctx.get(dut.act_w.addr), en, np.frombuffer(data, np.int8).tolist(),
                               ctx.get(dut.last)))
            await ctx.tick()
        if dw:
            assert [w[0] for w in writes] == [2 + latency + i for i in range(C // R)]
            assert [w[2] for w in writes] == [3 << (2 * i) for i in range(C // R)]
            assert [w[4] for w in writes] == [0, 0, 0, 1]
            for i, (_, addr, _, data, _) in enumerate(writes):
                assert addr == 9
                assert data[2 * i:2 * i + 2] == [want(C + 2 * i + k, int(sums[2 * i + k])) for k in range(2)]
        else:
            ((cycle, addr, en, data, last),) = writes
            assert (cycle, addr, en, last) == (1 + latency, 9, 0xFF ^ 0x3, 1)
            assert data[2:4] == [want(C + 2 + r, int(sums[r])) for r in range(2)] and data[4:] == [out_zp] * 4

    _run(bench, tb)
