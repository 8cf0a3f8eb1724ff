"""Conv engine component: the PACKED im2col gatherer (window rows of a pixel-packed input into pixel buffers)."""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import im2col_read_stages

from .conv_common import feed_layout, geometry_layout, lane, mux_tree, read_request_signature, shift_bytes
from .ports import descriptor_layout

__all__ = ["ConvIm2colGatherer"]


class ConvIm2colGatherer(wiring.Component):
    """Copies window rows of the pixel-packed input into per-pixel im2col buffers (``im2col_words`` words of
    `cols` bytes each, prefilled with ``in_zp`` for taps outside the input).

    It works on groups of ``im2col_pixels`` (G) horizontally adjacent output pixels: their window rows overlap in
    the input row, which is contiguous in the packed words, so each read of a packed word is shifted into all G
    pixels' buffers at once. One cycle per (window row, packed word the group's row touches); a window row
    outside the input costs one cycle. Two sets of G buffers: `ConvDirectIssue` feeds the MAC array from one
    (`feed` selects the word, `word` is it) while the gatherer fills the other.

    Ports: `init` (pulse: load the start values; `enable` says whether to run), `stop`, `desc`, `geom`,
    `act_r` (read request) and `act_data` (the SRAM's data, the cycle after), `feed` / `word`, `release` (pulse:
    the feeder is done with set ``feed.set``), `full` (the sets holding a complete group).

    Latency: the first read is in the cycle after `init` (with `deep_pipeline` the request is registered:
    `quant.timing.im2col_read_stages` cycles later); a group's set is `full` two cycles after its last read (the
    data arrives, then the mark); `quant.timing.im2col_groups` gives each group's read cycles.
    Back-pressure: a group's first read waits until its set has been released by the feeder.
    """

    def __init__(self, dims):
        self.dims = dims
        super().__init__({
            "init": In(1), "enable": In(1), "stop": In(1), "desc": In(descriptor_layout()),
            "geom": In(geometry_layout(dims)), "act_data": In(8 * dims.C),
            "act_r": Out(read_request_signature(dims.AB)), "feed": In(feed_layout(dims)), "release": In(1),
            "word": Out(8 * dims.C), "full": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        C, G, GM, AB, CB, SGN = dm.C, dm.G, dm.GM, dm.AB, dm.CB, dm.SGN
        d, geo, full = self.desc, self.geom, self.full
        wby = geo.wby
        offs = [Const(0, 20)] + [geo.offs[j] for j in range(G)]

        gbuf = [[[Signal(8 * C, name=f"gbuf{b}_{g}_{k}") for k in range(GM)] for g in range(G)] for b in range(2)]
        g_run = Signal()
        g_new = Signal()                     # next step is a group's first: needs a free set, prefills it
        g_set = Signal()
        g_ox, g_oy = Signal(16), Signal(16)  # output pixel 0 of the group
        g_ky = Signal(8)
        g_iy0, g_iy = Signal(signed(SGN)), Signal(signed(SGN))
        g_ix0b = Signal(signed(SGN + CB))           # input byte column of pixel 0's window (tap 0)
        q_w, q_b = Signal(AB), Signal(CB)           # window origin (tap 0, 0) of the group's pixel 0
        qrow_w, qrow_b = Signal(AB), Signal(CB)     # ... of the output row's first group
        r_w, r_b = Signal(AB), Signal(CB)           # origin of the current window row
        c_w, c_b = Signal(AB), Signal(CB)           # current chunk's word and first byte
        kxs = Signal(20)                            # bytes of the group's window row before the chunk
        rdest = Signal(16)                          # im2col byte of the window row's first byte

        def mixed_add(w, b, qv, rv):
            """(w, b) + (qv, rv) in words of `wby` bytes (b, rv < wby)."""
            s = b + rv
            carry = s >= wby
            return (w + qv + carry)[:AB], Mux(carry, s - wby, s)[:CB]

        # Pixels in this group (the last group of an output row may be short) and its window row's length.
        g_rem = Signal(17)
        m.d.comb += g_rem.eq(d.out_w - g_ox)
        g_cnt_m1 = Signal(range(max(G, 2)))           # one bit at least: G may be 1
        m.d.comb += g_cnt_m1.eq(Mux(g_rem >= G, G - 1, g_rem - 1))
        g_u = Signal(21)
        m.d.comb += g_u.eq(geo.rowbytes + mux_tree(offs[:G], g_cnt_m1))

        g_rin = Signal()
        m.d.comb += g_rin.eq((g_iy >= 0) & (g_iy < d.in_h))
        g_left = Signal(signed(22))
        g_room = Signal(signed(CB + 2))
        m.d.comb += [g_left.eq(g_u - kxs), g_room.eq(wby - c_b)]
        g_last_chunk = Signal()
        m.d.comb += g_last_chunk.eq(~g_rin | (g_left <= g_room))
        g_nb = Mux(g_left <= g_room, g_left, g_room)
        # Bytes of the row inside the input, relative to the chunk: [g_kxa, g_kxb).
        XW = SGN + CB + 3
        g_kxa = Signal(signed(XW))
        g_kxb = Signal(signed(XW))
        m.d.comb += [g_kxa.eq(Mux(g_ix0b < 0, -g_ix0b, 0) - kxs), g_kxb.eq(geo.in_row_b - g_ix0b - kxs)]
        g_lo = [Signal(signed(XW), name=f"g_lo{g}") for g in range(G)]
        g_hi = [Signal(signed(XW), name=f"g_hi{g}") for g in range(G)]
        g_any = [Signal(name=f"g_any{g}") for g in range(G)]
        g_dw = [Signal(range(GM + 1), name=f"g_dw{g}") for g in range(G)]
        g_dl = [Signal(range(C), name=f"g_dl{g}") for g in range(G)]
        for g in range(G):
            # Pixel g's window row is bytes [offs[g], offs[g] + rowbytes) of the group's row.
            a_lo = offs[g] - kxs
            a_hi = offs[g] + geo.rowbytes - kxs
            lo = Mux(g_kxa > a_lo, g_kxa, a_lo)
            hi = Mux(g_kxb < a_hi, g_kxb, a_hi)
            m.d.comb += [
                g_lo[g].eq(Mux(lo > 0, lo, 0)),
                g_hi[g].eq(Mux(hi < g_nb, hi, g_nb)),
                g_any[g].eq(g_rin & ((g_cnt_m1 >= g) if g else 1) & (g_lo[g] < g_hi[g])),
            ]
            # Chunk byte 0 lands on pixel g's im2col byte rdest + kxs - offs[g] (maybe negative: bytes before
            # the pixel's row are masked off); biased by C so the word index below is never negative.
            pos = Signal(signed(23), name=f"g_pos{g}")
            m.d.comb += pos.eq(rdest + kxs - offs[g] + C)
            dw_expr = 0
            for k in range(1, GM + 1):
                dw_expr = dw_expr + (pos >= k * C)
            m.d.comb += [g_dw[g].eq(dw_expr), g_dl[g].eq(pos - g_dw[g] * C)]
        g_read = Signal()
        m.d.comb += g_read.eq(Cat(*g_any).any())
        g_last_row = g_ky == d.kernel_h - 1
        g_grp_end = g_last_chunk & g_last_row
        g_step = Signal()
        m.d.comb += g_step.eq(g_run & (~g_new | ~full.bit_select(g_set, 1)))
        # With `deep_pipeline` (`quant.timing.im2col_read_stages`) the read request and everything S1 takes from
        # this cycle pass a register first: the window arithmetic ends there instead of running on into the SRAM's
        # read enable (an FPGA's deepest path); the buffers fill, and the set is full, a cycle later.
        stages = im2col_read_stages(dm.config)

        def late(value, name):
            for i in range(stages):
                reg = Signal.like(value, name=f"{name}_q{i}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        m.d.comb += [self.act_r.en.eq(late(g_step & g_read, "g_ren")), self.act_r.addr.eq(late(c_w, "g_raddr"))]

        # S1 of the gatherer: the read word arrives; shift the chunk into place and write the pixel buffers.
        g1_write = [Signal(name=f"g1_write{g}") for g in range(G)]
        g1_lo = [Signal(CB, name=f"g1_lo{g}") for g in range(G)]
        g1_hi = [Signal(CB, name=f"g1_hi{g}") for g in range(G)]
        g1_dw = [Signal(range(GM + 1), name=f"g1_dw{g}") for g in range(G)]
        g1_dl = [Signal(range(C), name=f"g1_dl{g}") for g in range(G)]
        g1_mark = Signal()
        g1_set = Signal()
        g1_sb = Signal(CB)
        m.d.sync += [g1_mark.eq(late(g_step & g_grp_end, "g_mark")), g1_set.eq(late(g_set, "g_set")),
                     g1_sb.eq(late(c_b, "g_sb"))]
        for g in range(G):
            m.d.sync += [g1_write[g].eq(late(g_step & g_any[g], f"g_write{g}")),
                         g1_lo[g].eq(late(g_lo[g][:CB], f"g_lo{g}")), g1_hi[g].eq(late(g_hi[g][:CB], f"g_hi{g}")),
                         g1_dw[g].eq(late(g_dw[g], f"g_dw{g}")), g1_dl[g].eq(late(g_dl[g], f"g_dl{g}"))]

        with m.If(g_step):
            with m.If(g_new):
                m.d.sync += g_new.eq(0)
                for b in range(2):
                    with m.If(g_set == b):
                        m.d.sync += [word.eq(Cat(*[d.in_zp.as_unsigned()] * C)) for pix in gbuf[b] for word in pix]
            with m.If(~g_last_chunk):
                m.d.sync += [c_w.eq(c_w + 1), c_b.eq(0), kxs.eq(kxs + g_room)]
            with m.Elif(~g_last_row):
                nw, nb = mixed_add(r_w, r_b, geo.qr, geo.rr)
                m.d.sync += [g_ky.eq(g_ky + 1), g_iy.eq(g_iy + 1), r_w.eq(nw), r_b.eq(nb), c_w.eq(nw),
                             c_b.eq(nb), kxs.eq(0), rdest.eq(rdest + geo.rowbytes)]
            with m.Else():
                m.d.sync += [g_ky.eq(0), kxs.eq(0), rdest.eq(0), g_set.eq(~g_set), g_new.eq(1)]
                with m.If(g_rem > G):
                    nw, nb = mixed_add(q_w, q_b, geo.qs, geo.rs)
                    m.d.sync += [g_ox.eq(g_ox + G), q_w.eq(nw), q_b.eq(nb), r_w.eq(nw), r_b.eq(nb), c_w.eq(nw),
                                 c_b.eq(nb), g_iy.eq(g_iy0), g_ix0b.eq(g_ix0b + offs[G])]
                with m.Else():
                    nw, nb = mixed_add(qrow_w, qrow_b, geo.qrs, geo.rrs)
                    m.d.sync += [g_ox.eq(0), qrow_w.eq(nw), qrow_b.eq(nb), q_w.eq(nw), q_b.eq(nb), r_w.eq(nw),
                                 r_b.eq(nb), c_w.eq(nw), c_b.eq(nb), g_iy0.eq(g_iy0 + d.stride_h),
                                 g_iy.eq(g_iy0 + d.stride_h), g_ix0b.eq(-geo.pl_b)]
                    with m.If(g_oy == d.out_h - 1):
                        m.d.sync += g_run.eq(0)
                    with m.Else():
                        m.d.sync += g_oy.eq(g_oy + 1)

        g1_src = Signal(8 * C)
        m.d.comb += g1_src.eq(shift_bytes(self.act_data, g1_sb, left=False))
        for g in range(G):
            mask = Signal(C, name=f"g1_mask{g}")
            m.d.comb += mask.eq((Const(1, C + 1) << g1_hi[g]) - (Const(1, C + 1) << g1_lo[g]))
            data2 = Signal(16 * C, name=f"g1_data{g}")
            mask2 = Signal(2 * C, name=f"g1_mask2_{g}")
            m.d.comb += [data2.eq(shift_bytes(Cat(g1_src, Const(0, 8 * C)), g1_dl[g], left=True)),
                         mask2.eq(mask << g1_dl[g])]
            # Word k of the pixel's buffer takes the low half when the chunk starts in it (biased index k + 1)
            # and the high half when it starts in word k - 1.
            with m.If(g1_write[g]):
                for b in range(2):
                    with m.If(g1_set == b):
                        for k in range(GM):
                            word = gbuf[b][g][k]
                            lanes = []
                            for ln in range(C):
                                lo_hit = (g1_dw[g] == k + 1) & mask2[ln]
                                hi_hit = (g1_dw[g] == k) & mask2[C + ln]
                                lanes.append(Mux(lo_hit, lane(data2, ln),
                                                 Mux(hi_hit, lane(data2, C + ln), lane(word, ln))))
                            m.d.sync += word.eq(Cat(*lanes))
        # Sets: released by the feeder, marked full the cycle after a group's last read.
        with m.If(self.release):
            with m.If(self.feed.set):
                m.d.sync += full[1].eq(0)
            with m.Else():
                m.d.sync += full[0].eq(0)
        with m.If(g1_mark):
            with m.If(g1_set):
                m.d.sync += full[1].eq(1)
            with m.Else():
                m.d.sync += full[0].eq(1)
        f = self.feed
        m.d.comb += self.word.eq(Mux(f.set, mux_tree([mux_tree(p, f.word) for p in gbuf[1]], f.pixel),
                                     mux_tree([mux_tree(p, f.word) for p in gbuf[0]], f.pixel)))

        # Last: the start values win over the gatherer's own updates.
        with m.If(self.init):
            m.d.sync += [
                full.eq(0), g_run.eq(self.enable), g_new.eq(1), g_set.eq(0), g_ox.eq(0), g_oy.eq(0), g_ky.eq(0),
                g_iy0.eq(-d.pad_top), g_iy.eq(-d.pad_top), g_ix0b.eq(-geo.pl_b), kxs.eq(0), rdest.eq(0),
                q_w.eq(geo.origin_w), q_b.eq(geo.origin_b), qrow_w.eq(geo.origin_w), qrow_b.eq(geo.origin_b),
                r_w.eq(geo.origin_w), r_b.eq(geo.origin_b), c_w.eq(geo.origin_w), c_b.eq(geo.origin_b),
            ]
        with m.If(self.stop):
            m.d.sync += g_run.eq(0)
        return m
