"""The vector engine's components (rtl/npu/vector_*.py), each alone in amaranth.sim: what it computes and its
latency."""

import sys

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.sim import Simulator

import stackcam.quant.program as fmt
from stackcam.quant import ref
from stackcam.quant.timing import lut_row_bytes
from stackcam.rtl.npu.vector_add import ADD_LATENCY, VectorAddDatapath, add_latency, add_sum_latency
from stackcam.rtl.npu.vector_addr import VectorAddressUnit
from stackcam.rtl.npu.vector_arith import VectorArithDatapath
from stackcam.rtl.npu.vector_copy import VectorCopyAligner
from stackcam.rtl.npu.vector_decode import VectorDecode
from stackcam.rtl.npu.vector_lut import VectorLUT
from stackcam.rtl.npu.vector_pool import DIVIDER_STAGES, VectorPoolDatapath
from stackcam.rtl.npu.vector_poolwalk import VectorPoolWalker
from stackcam.rtl.npu.vector_writer import VectorWriter
from stackcam.rtl.params import DieConfig

sys.set_int_max_str_digits(0)


def _config(rows=4, cols=4):
    return DieConfig(name=f"v{rows}x{cols}", array_rows=rows, array_cols=cols, sram_banks=4,
                     sram_bank_bytes=8 * 1024, weight_banks=2)


CFG = _config()
COLS = CFG.array_cols


def _desc_value(d):
    return int.from_bytes(fmt.pack(d), "little")


def _word(lanes):
    return int.from_bytes(np.asarray(lanes, np.int8).tobytes(), "little")


def _lanes(value, n=COLS):
    return list(np.frombuffer(value.to_bytes(n, "little"), np.int8))


def _run(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_decode():
    dut = VectorDecode(CFG)
    cases = [
        (fmt.Descriptor(opcode=fmt.OPCODES["ADD"], in_h=1, in_w=1, in_ct=1, out_h=1, out_w=1, out_ct=1,
                        in2_h=1, in2_w=1, in2_ct=1, left_shift=20, in_shift=5, in2_shift=-7), "add", False),
        (fmt.Descriptor(opcode=fmt.OPCODES["ADD"], in_h=1, in_w=1, in_ct=1, out_h=1, out_w=1, out_ct=1,
                        left_shift=30, in_shift=-32), "add", True),
        # ZPAD2: 1 channel (not a 1x1x1 broadcast) of 9 in 3 tiles; more channels than the output's is refused;
        # so is ZPAD2 on a MUL, and a 1x1xC second input without ZPAD2 whose C is not the output's
        (fmt.Descriptor(opcode=fmt.OPCODES["ADD"], flags=fmt.ZPAD2, in_h=2, in_w=3, in_c=9, in_ct=3, out_h=2,
                        out_w=3, out_c=9, out_ct=3, in2_h=2, in2_w=3, in2_c=1, in2_ct=1, left_shift=20, in_shift=5,
                        in2_shift=-7), "add", False),
        (fmt.Descriptor(opcode=fmt.OPCODES["ADD"], flags=fmt.ZPAD2, in_h=2, in_w=3, in_c=9, in_ct=3, out_h=2,
                        out_w=3, out_c=9, out_ct=3, in2_h=2, in2_w=3, in2_c=10, in2_ct=3), "add", True),
        (fmt.Descriptor(opcode=fmt.OPCODES["ADD"], flags=fmt.ZPAD2, in_h=2, in_w=3, in_c=9, in_ct=3, out_h=2,
                        out_w=3, out_c=9, out_ct=3, in2_h=1, in2_w=3, in2_c=5, in2_ct=2), "add", True),
        (fmt.Descriptor(opcode=fmt.OPCODES["ADD"], in_h=2, in_w=3, in_c=9, in_ct=3, out_h=2, out_w=3, out_c=9,
                        out_ct=3, in2_h=2, in2_w=3, in2_c=5, in2_ct=2), "add", True),
        (fmt.Descriptor(opcode=fmt.OPCODES["MUL"], flags=fmt.ZPAD2, in_h=1, in_w=1, in_c=1, in_ct=1, out_h=1,
                        out_w=1, out_c=1, out_ct=1, in2_h=1, in2_w=1, in2_c=1, in2_ct=1), None, True),
        (fmt.Descriptor(opcode=fmt.OPCODES["AVGPOOL"], in_h=1, in_w=1, in_ct=1, out_h=1, out_w=1, out_ct=1,
                        kernel_h=1, kernel_w=0, stride_h=1, stride_w=1), "avg", True),
        (fmt.Descriptor(opcode=fmt.OPCODES["COPY"], in_h=2, in_w=1, in_c=7, in_ct=2, out_h=2, out_w=1, out_ct=3,
                        copy_c=6), "copy", False),
        (fmt.Descriptor(opcode=fmt.OPCODES["LUT"], in_h=1, in_w=1, in_ct=1, out_h=1, out_w=1, out_ct=1,
                        param_words=256 // CFG.weight_word_bytes - 1), "lut", True),
        (fmt.Descriptor(opcode=fmt.OPCODES["CONV"], in_h=1, in_w=1, in_ct=1, out_h=1, out_w=1, out_ct=1), None, True),
    ]

    async def tb(ctx):
        for d, op, bad in cases:
            ctx.set(dut.desc.as_value(), _desc_value(d))
            await ctx.tick().repeat(2)
            flags = {name: ctx.get(getattr(dut.op, name)) for name in ("add", "max", "avg", "copy", "lut", "pool")}
            assert flags == {name: int(name == op or (name == "pool" and op in ("max", "avg"))) for name in flags}
            assert ctx.get(dut.bad) == bad, d
            zpad = op == "add" and bool(d.flags & fmt.ZPAD2)
            assert ctx.get(dut.zpad) == zpad
            assert ctx.get(dut.bcast) == (d.in2_c == 1 and not zpad)
            if op == "add" and not bad:
                assert [ctx.get(dut.add_l[i]) for i in range(2)] == [25, 20]
                assert [ctx.get(dut.add_r[i]) for i in range(2)] == [0, 7]
            if op == "copy":
                # channel 6 is lane 2 of tile 1; 7 channels from lane 2 take 3 words per pixel
                assert (ctx.get(dut.copy_r), ctx.get(dut.copy_ot0), ctx.get(dut.copy_sh),
                        ctx.get(dut.copy_words)) == (2, 1, 2, 3)

    _run(dut, tb)


def test_address_unit():
    dut = VectorAddressUnit(CFG)
    rng = np.random.default_rng(1)
    width, tiles, base = 7, 3, 100
    reqs = [(int(rng.integers(0, 5)), int(rng.integers(0, width)), int(rng.integers(0, tiles)), i & 1)
            for i in range(12)]

    async def tb(ctx):
        ctx.set(dut.width, width)
        ctx.set(dut.tiles, tiles)
        ctx.set(dut.base, base)
        seen2, seen3 = [], []
        for t in range(len(reqs) + 4):
            if t < len(reqs):
                row, col, tile, first = reqs[t]
                ctx.set(dut.req, {"valid": 1, "row": row, "col": col, "tile": tile, "tag": {"first": first}})
            else:
                ctx.set(dut.req.valid, 0)
            await ctx.tick()
            if ctx.get(dut.p2.valid):
                seen2.append((t, ctx.get(dut.p2.addr), ctx.get(dut.p2.tag.first)))
            if ctx.get(dut.p3.valid):
                seen3.append((t, ctx.get(dut.p3.addr)))
        want = [(i + 1, base + (r * width + c) * tiles + k, f) for i, (r, c, k, f) in enumerate(reqs)]
        assert seen2 == want                                          # on p2 two cycles after the request
        assert seen3 == [(t + 1, a) for t, a, _ in want]             # on p3 one cycle later

    _run(dut, tb)


def _pool_taps(d):
    """(row, col, tile, first, last, count) of every in-bounds tap of every window, in the walk's order."""
    out = []
    for oy in range(d.out_h):
        for ox in range(d.out_w):
            for t in range(d.out_ct):
                taps = [(oy * d.stride_h - d.pad_top + ky, ox * d.stride_w - d.pad_left + kx)
                        for ky in range(d.kernel_h) for kx in range(d.kernel_w)]
                taps = [(y, x) for y, x in taps if 0 <= y < d.in_h and 0 <= x < d.in_w]
                count = len(taps) if d.opcode == fmt.OPCODES["AVGPOOL"] else 1
                out += [(y, x, t, i == 0, i == len(taps) - 1, count) for i, (y, x) in enumerate(taps)]
    return out


@pytest.mark.parametrize("op,k,s,pads,hw", [
    ("AVGPOOL", (3, 3), (2, 2), (1, 1, 1, 1), (5, 6)), ("MAXPOOL", (2, 3), (1, 2), (0, 1, 2, 0), (4, 5)),
    ("AVGPOOL", (1, 1), (2, 2), (0, 1, 0, 0), (4, 4)),     # the last row of windows lies wholly in the padding
])
def test_pool_walker(op, k, s, pads, hw):
    h, w = hw
    oh = (h + pads[0] + pads[1] - k[0]) // s[0] + 1
    ow = (w + pads[2] + pads[3] - k[1]) // s[1] + 1
    d = fmt.Descriptor(opcode=fmt.OPCODES[op], kernel_h=k[0], kernel_w=k[1], stride_h=s[0], stride_w=s[1],
                       pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3], in_h=h, in_w=w,
                       in_c=6, in_ct=2, out_h=oh, out_w=ow, out_c=6, out_ct=2)
    want = _pool_taps(d)
    empty_row = any(not [y for y in range(oy * s[0] - pads[0], oy * s[0] - pads[0] + k[0]) if 0 <= y < h]
                    for oy in range(oh))
    dut = VectorPoolWalker()

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), _desc_value(d))
        ctx.set(dut.avg, op == "AVGPOOL")
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        assert not ctx.get(dut.first_empty)
        ctx.set(dut.step, 1)
        got, words = [], 0
        while True:
            tap = dut.tap
            got.append(tuple(ctx.get(x) for x in (tap.row, tap.col, tap.tile, tap.first, tap.last, tap.count)))
            words += ctx.get(dut.word)
            fail, finish = ctx.get(dut.fail), ctx.get(dut.finish)
            await ctx.tick()
            if fail or finish:
                break
        assert fail == empty_row
        if not empty_row:
            assert got == want                                     # one in-bounds tap per cycle
            assert words == oh * ow * d.out_ct
        else:
            assert got == want[:len(got)]

    _run(dut, tb)


class _AddPath(Elaboratable):
    """`VectorAddDatapath` feeding `VectorArithDatapath`'s requantizer, as the engine joins them."""

    def __init__(self, config):
        self.add = VectorAddDatapath(config)
        self.arith = VectorArithDatapath(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.add, m.submodules.arith = self.add, self.arith
        m.d.comb += [self.arith.desc.eq(self.add.desc), self.arith.add_sums.eq(self.add.sums),
                     self.arith.add_valid.eq(self.add.sum_valid)]
        return m


@pytest.mark.parametrize("deep", [False, True], ids=["default", "deep"])
@pytest.mark.parametrize("neg", [False, True], ids=["add", "sub"])
def test_add_datapath(deep, neg):
    """Random words and parameters against the TFLite reference (ADD, and SUB with NEG2), through the shared
    requantizer: a two-read word's output ADD_LATENCY (12; 21 with `deep_pipeline`: its input register and 8
    rescaler stages) cycles after the read of its second input, its sums add_sum_latency (6; 11) cycles after; a
    solo word (ZPAD2's zero-point tiles: input 1 read alone, input 2 taken as its zero point) the same latencies
    after its one read, back to back."""
    rng = np.random.default_rng(3)
    config = CFG.with_(deep_pipeline=deep)
    dut = _AddPath(config)
    latency = add_latency(config)
    assert latency == (21 if deep else 12) and ADD_LATENCY == 12
    assert add_sum_latency(config) == (11 if deep else 6)
    solo = [False, True, True, False, True, False, False, True]          # runs of solo and two-read words
    n = len(solo)
    x1 = rng.integers(-128, 128, (n, COLS))
    x2 = rng.integers(-128, 128, (n, COLS))
    left, s1, s2 = 20, -2, 1
    d = fmt.Descriptor(opcode=fmt.OPCODES["ADD"], flags=fmt.ZPAD2 | (fmt.NEG2 if neg else 0), in_zp=5, in2_zp=-9,
                       out_zp=3, act_min=-100, act_max=120, left_shift=left, in_shift=s1, in2_shift=s2,
                       in_mult=1 << 30, in2_mult=1518500250, out_mult=1264972388, out_shift=-18)
    for i in range(n):
        if solo[i]:
            x2[i] = d.in2_zp
    p = dict(input1_offset=-d.in_zp, input2_offset=-d.in2_zp, left_shift=left, input1_multiplier=d.in_mult,
             input1_shift=s1, input2_multiplier=d.in2_mult, input2_shift=s2, output_multiplier=d.out_mult,
             output_shift=d.out_shift, output_offset=d.out_zp, act_min=d.act_min, act_max=d.act_max)
    want = (ref.sub_int8 if neg else ref.add_int8)(x1, x2, p)
    # The read schedule: (word, phase, solo) per cycle; a word's last read is where its latency counts from.
    reads = [(i, ph, solo[i]) for i in range(n) for ph in ((0,) if solo[i] else (0, 1))]
    last = {i: t for t, (i, _, _) in enumerate(reads)}
    add = dut.add

    async def tb(ctx):
        ctx.set(add.desc.as_value(), _desc_value(d))
        ctx.set(add.add_l[0], left + max(s1, 0))
        ctx.set(add.add_l[1], left + max(s2, 0))
        ctx.set(add.add_r[0], max(-s1, 0))
        ctx.set(add.add_r[1], max(-s2, 0))
        got, sums = [], []
        for t in range(len(reads) + latency + 2):
            # read issued at cycle t; its data arrives at t + 1
            ctx.set(add.issue, t < len(reads))
            if t < len(reads):
                ctx.set(add.phase, reads[t][1])
                ctx.set(add.solo, reads[t][2])
            if 1 <= t <= len(reads):
                i, ph, _ = reads[t - 1]
                ctx.set(add.act_data, _word((x2 if ph else x1)[i]))
            if ctx.get(dut.arith.out.valid):
                got.append((t, _lanes(ctx.get(dut.arith.out.data))))
            if ctx.get(add.sum_valid):
                sums.append(t)
            await ctx.tick()
        assert sums == [last[i] + add_sum_latency(config) for i in range(n)]
        assert [t for t, _ in got] == [last[i] + latency for i in range(n)]
        assert np.array_equal(np.array([v for _, v in got]), want)

    _run(dut, tb)


@pytest.mark.parametrize("rows,cols", [(4, 4), (2, 4), (8, 32)])
def test_lut(rows, cols):
    config = DieConfig(name="lut", array_rows=rows, array_cols=cols, sram_banks=4,
                       sram_bank_bytes=32 * 1024 if rows * cols > 64 else 8 * 1024, weight_banks=2)
    wb = config.weight_word_bytes
    rng = np.random.default_rng(4)
    table = rng.integers(0, 256, 256).astype(np.uint8)
    words = [int.from_bytes(table.tobytes()[i:i + wb].ljust(wb, b"\0"), "little") for i in range(0, 256, wb)]
    xs = rng.integers(-128, 128, (5, cols))
    dut = VectorLUT(config)
    param_addr = 9

    async def tb(ctx):
        ctx.set(dut.param_addr, param_addr)
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        ctx.set(dut.load, 1)
        loads, requested = 0, None
        while True:
            loads += 1
            addr = ctx.get(dut.w_r.addr)
            assert ctx.get(dut.w_r.en)
            last = ctx.get(dut.load_last)
            await ctx.tick()
            ctx.set(dut.w_data, words[addr - param_addr])    # the SRAM: the word the cycle after its read
            requested = addr
            if last:
                break
        assert loads == 256 // lut_row_bytes(config) and requested == param_addr + len(words) - 1
        ctx.set(dut.load, 0)
        got = []
        for t in range(len(xs) + 3):
            ctx.set(dut.lookup, t < len(xs))
            if 1 <= t <= len(xs):
                ctx.set(dut.act_data, _word(xs[t - 1]))
            if ctx.get(dut.out.valid):
                got.append((t, _lanes(ctx.get(dut.out.data), cols)))
            await ctx.tick()
        assert [t for t, _ in got] == [i + 2 for i in range(len(xs))]      # two cycles after the lookup
        assert np.array_equal(np.array([v for _, v in got]), table.view(np.int8)[xs + 128])

    _run(dut, tb)


@pytest.mark.parametrize("op", ["MAXPOOL", "AVGPOOL"])
def test_pool_datapath(op):
    rng = np.random.default_rng(5)
    windows = [rng.integers(-128, 128, (n, COLS)) for n in (4, 1, 9, 3)]
    act_min, act_max = -90, 100
    dut = VectorPoolDatapath(CFG)
    if op == "MAXPOOL":
        want = [np.clip(w.max(axis=0), act_min, act_max) for w in windows]
    else:
        want = [np.clip(np.sign(w.sum(axis=0)) * ((np.abs(w.sum(axis=0)) + len(w) // 2) // len(w)), act_min, act_max)
                for w in windows]
    taps = [(x, i == 0, i == len(w) - 1, len(w) if op == "AVGPOOL" else 1)
            for w in windows for i, x in enumerate(w)]

    async def tb(ctx):
        ctx.set(dut.max, op == "MAXPOOL")
        ctx.set(dut.act_min, act_min)
        ctx.set(dut.act_max, act_max)
        got, lasts = [], []
        for t in range(len(taps) + DIVIDER_STAGES + 3):
            if t < len(taps):
                x, first, last, count = taps[t]
                ctx.set(dut.tap, {"valid": 1, "tag": {"first": first, "last": last, "count": count}})
                ctx.set(dut.act_data, _word(x))
                if last:
                    lasts.append(t)
            else:
                ctx.set(dut.tap.valid, 0)
            if ctx.get(dut.out.valid):
                got.append((t, _lanes(ctx.get(dut.out.data))))
            await ctx.tick()
        assert [t for t, _ in got] == [t + DIVIDER_STAGES + 2 for t in lasts]
        assert np.array_equal(np.array([v for _, v in got]), np.array(want))

    _run(dut, tb)


def test_copy_aligner():
    """copy_c % cols = 3: output word 0 takes lanes 3.. from input word 0, word 1 its lanes 0..2 from input word 0
    and the rest from input word 1; byte enables below the channel end."""
    dut = VectorCopyAligner(CFG)
    r = 3
    w0, w1 = [1, 2, 3, 4], [5, 6, 7, 8]

    async def tb(ctx):
        ctx.set(dut.enable, 1)
        ctx.set(dut.copy_r, r)
        ctx.set(dut.copy_sh, COLS - r)
        outs = []
        for j, data, hi in ((0, w0, 3 + 6), (1, w1, 3 + 6 - COLS), (2, [0] * COLS, 3 + 6 - 2 * COLS)):
            ctx.set(dut.word, {"valid": 1, "addr": 40 + j, "tag": {"ren": j < 2, "wr": 1, "hi": hi, "j0": j == 0}})
            ctx.set(dut.act_data, _word(data))
            outs.append((ctx.get(dut.out.valid), ctx.get(dut.out.addr), _lanes(ctx.get(dut.out.data)),
                         ctx.get(dut.out.mask)))
            await ctx.tick()
        assert outs[0][:2] == (1, 40) and outs[0][2][3] == 1 and outs[0][3] == 0b1000
        assert outs[1][2] == [2, 3, 4, 5] and outs[1][3] == 0b1111
        assert outs[2][2][:3] == [6, 7, 8] and outs[2][3] == 0b0001
        ctx.set(dut.word, {"valid": 1, "addr": 43, "tag": {"ren": 1, "wr": 0, "hi": 4, "j0": 1}})
        assert ctx.get(dut.out.valid) == 0          # a GATHER step that only reads writes nothing

    _run(dut, tb)


def test_writer():
    """Linear words in address order with padding lanes set to out_zp (6 channels in 2 tiles of 4), a FILL
    word, a COPY word with its byte enables; `idle` once every issued word is on the port."""
    dut = VectorWriter(CFG)
    d = fmt.Descriptor(out_addr=50, out_c=6, out_ct=2, out_zp=-7, fill=9)

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), _desc_value(d))
        ctx.set(dut.init, 1)
        await ctx.tick()
        ctx.set(dut.init, 0)
        ctx.set(dut.inc, 1)                                   # three words issued
        await ctx.tick().repeat(3)
        ctx.set(dut.inc, 0)
        assert not ctx.get(dut.idle)
        writes = []
        inputs = [("lut", [1, 2, 3, 4]), ("pool", [5, 6, 7, 8]), ("fill", None)]
        for kind, lanes in inputs + [(None, None)] * 2:
            ctx.set(dut.lut.valid, kind == "lut")
            ctx.set(dut.pool.valid, kind == "pool")
            if lanes:
                ctx.set(getattr(dut, kind).data, _word(lanes))
            ctx.set(dut.fill, kind == "fill")
            await ctx.tick()
            if ctx.get(dut.act_w.en):
                writes.append((ctx.get(dut.act_w.addr), _lanes(ctx.get(dut.act_w.data)), ctx.get(dut.act_w.en)))
        assert writes == [(50, [1, 2, 3, 4], 0xF), (51, [5, 6, -7, -7], 0xF), (52, [9, 9, 9, 9], 0xF)]
        assert ctx.get(dut.idle)
        ctx.set(dut.inc, 1)
        ctx.set(dut.copy, {"valid": 1, "addr": 7, "data": _word([1, 1, 1, 1]), "mask": 0b0110})
        await ctx.tick()
        ctx.set(dut.inc, 0)
        ctx.set(dut.copy.valid, 0)
        assert (ctx.get(dut.act_w.addr), ctx.get(dut.act_w.en)) == (7, 0b0110)
        assert ctx.get(dut.idle)

    _run(dut, tb)
