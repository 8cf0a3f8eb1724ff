"""Conv engine component: the descriptor's address geometry from one shared multiplier and one divider."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import DIRECT_SETUP_STEPS, PACKED_DIVISIONS, PACKED_SETUP_STEPS

from .conv_common import geometry_layout
from .ports import descriptor_layout

__all__ = ["ConvSetup"]


class ConvSetup(wiring.Component):
    """Strides and origins of a CONV/DWCONV descriptor, so that the run loops only add.

    Ports: `start` (pulse, only while no setup runs; `desc` valid and stable until the engine's `done`),
    `packed` (the descriptor is a PACKED CONV; valid from the cycle after `start`), `geom`
    (`conv_common.geometry_layout`: registers, valid from the cycle after `done` until the next `start`), `done`
    (high in the last cycle).

    Latency: the cycle after `start` is the first; one multiplier step per cycle, ``DIRECT_SETUP_STEPS`` (7)
    for a direct descriptor. PACKED adds the packed geometry (``PACKED_SETUP_STEPS + im2col_pixels`` steps in
    all), four restoring divisions by the packed word's used bytes (``divider_width + 1`` cycles each: a load,
    then a quotient bit a cycle) and one cycle for the first window origin: `quant.timing.setup_cycles`.
    No back-pressure: it runs to `done` once started.
    """

    def __init__(self, dims):
        self.dims = dims
        super().__init__({
            "start": In(1), "packed": In(1), "desc": In(descriptor_layout()),
            "geom": Out(geometry_layout(dims)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        AB, CB, DIVW, G = dm.AB, dm.CB, dm.DIVW, dm.G
        d, geo = self.desc, self.geom

        mul_a = Signal(32)
        mul_b = Signal(16)
        mul_p = Signal(48)
        m.d.comb += mul_p.eq(mul_a * mul_b)
        tmp = Signal(AB)
        x0 = Signal(DIVW)            # minus the first window origin: pad_top * in_row_b + pad_left * in_c
        rowstep_b = Signal(DIVW)     # window move per output row, in bytes
        qx, rx = Signal(AB), Signal(CB)
        offs = [Const(0, 20)] + [geo.offs[j] for j in range(G)]
        steps = [
            (d.in_w, d.in_ct, lambda p: [geo.row_stride.eq(p)]),
            (geo.row_stride, d.stride_h, lambda p: [geo.row_step.eq(p)]),
            (d.stride_w, d.in_ct, lambda p: [geo.col_step.eq(p)]),
            (geo.row_stride, d.pad_top, lambda p: [tmp.eq(p)]),
            (d.pad_left, d.in_ct, lambda p: [geo.pix0.eq(d.in_addr - tmp - p)]),
            (d.out_w, d.out_ct, lambda p: [geo.out_row_words.eq(p)]),
            (d.out_w - 1, d.stride_w, lambda p: [geo.last_col.eq(p + d.kernel_w - 1)]),
            # The packed geometry: only in PACKED mode.
            (d.in_w, d.in_c, lambda p: [geo.in_row_b.eq(p)]),
            (d.kernel_w, d.in_c, lambda p: [geo.rowbytes.eq(p)]),
            (d.in_ppw, d.in_c, lambda p: [geo.wby.eq(p)]),
            (d.stride_w, d.in_c, lambda p: [geo.step_b.eq(p)]),
            (geo.in_row_b, d.stride_h, lambda p: [rowstep_b.eq(p)]),
            (geo.in_row_b, d.pad_top, lambda p: [x0.eq(p)]),
            (d.pad_left, d.in_c, lambda p: [geo.pl_b.eq(p), x0.eq(x0 + p)]),
        ] + [(geo.step_b, j, lambda p, j=j: [offs[j].eq(p)]) for j in range(1, G + 1)]
        assert len(steps) == PACKED_SETUP_STEPS + G and DIRECT_SETUP_STEPS == 7
        divisions = [(offs[G], geo.qs, geo.rs), (geo.in_row_b, geo.qr, geo.rr), (rowstep_b, geo.qrs, geo.rrs),
                     (x0, qx, rx)]
        assert len(divisions) == PACKED_DIVISIONS

        su = Signal(range(len(steps)))
        dv_idx = Signal(range(len(divisions)))
        dv_cnt = Signal(range(DIVW + 1))
        dv_num = Signal(DIVW)
        dv_rem = Signal(CB + 1)
        dv_quo = Signal(DIVW)
        dv_shift = Signal(CB + 1)
        m.d.comb += dv_shift.eq(Cat(dv_num[-1], dv_rem[:CB]))
        dv_ge = dv_shift >= geo.wby

        IDLE, STEPS, DIVIDE, ORIGIN = range(4)
        phase = Signal(range(4))
        # `start` comes only while IDLE, so the phases below do not look at it: the operand selection and the
        # multiplier stay off the engine's descriptor checks that decide `start` (an FPGA's deepest path).
        with m.If(phase == STEPS):
            for i, (a, b, fn) in enumerate(steps):
                with m.If(su == i):
                    m.d.comb += [mul_a.eq(a), mul_b.eq(b)]
                    m.d.sync += fn(mul_p)
            m.d.sync += su.eq(su + 1)
            with m.If(su == len(steps) - 1):
                m.d.sync += [phase.eq(DIVIDE), dv_idx.eq(0), dv_cnt.eq(0)]
            with m.Elif((su == DIRECT_SETUP_STEPS - 1) & ~self.packed):
                m.d.comb += self.done.eq(1)
                m.d.sync += phase.eq(IDLE)
        with m.Elif(phase == DIVIDE):
            # Restoring division by wby, one quotient bit per cycle; dv_cnt == 0 loads the dividend.
            with m.If(dv_cnt == 0):
                for i, (num, _, _) in enumerate(divisions):
                    with m.If(dv_idx == i):
                        m.d.sync += dv_num.eq(num)
                m.d.sync += [dv_rem.eq(0), dv_quo.eq(0), dv_cnt.eq(1)]
            with m.Else():
                new_rem = Mux(dv_ge, dv_shift - geo.wby, dv_shift)
                new_quo = Cat(dv_ge, dv_quo)
                m.d.sync += [dv_rem.eq(new_rem), dv_quo.eq(new_quo), dv_num.eq(dv_num << 1), dv_cnt.eq(dv_cnt + 1)]
                with m.If(dv_cnt == DIVW):
                    m.d.sync += dv_cnt.eq(0)
                    for i, (_, q_t, r_t) in enumerate(divisions):
                        with m.If(dv_idx == i):
                            m.d.sync += [q_t.eq(new_quo), r_t.eq(new_rem)]
                    m.d.sync += dv_idx.eq(dv_idx + 1)
                    with m.If(dv_idx == len(divisions) - 1):
                        m.d.sync += phase.eq(ORIGIN)
        with m.Elif(phase == ORIGIN):
            # The first window origin, -x0 bytes from in_addr, in (word, byte) form.
            m.d.sync += [geo.origin_w.eq((d.in_addr - qx - (rx != 0))[:AB]),
                         geo.origin_b.eq(Mux(rx != 0, geo.wby - rx, 0)[:CB]), phase.eq(IDLE)]
            m.d.comb += self.done.eq(1)
        with m.If(self.start):
            m.d.sync += [phase.eq(STEPS), su.eq(0)]
        return m
