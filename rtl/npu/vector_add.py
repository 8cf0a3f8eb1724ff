"""Vector engine component: ADD's datapath, the input rescalers and the output requantizer."""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import NEG2
from stackcam.rtl.requant import RequantUnit

from .ports import descriptor_layout
from .vector_common import lane, word_layout

__all__ = ["VectorAddDatapath", "ADD_LATENCY"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# Cycles from the read of a word's second input (`issue` with `phase` 1) to the word on `out`: the SRAM (1),
# the rescaler (S1..S4), the sum (S5), the RequantUnit (5) of the high lanes (one more than the low lanes).
ADD_LATENCY = 1 + 4 + 1 + RequantUnit.latency + 1


class VectorAddDatapath(wiring.Component):
    """ADD on `array_cols` lanes: ``requant(rescale(x1 - zp1) + rescale(x2 - zp2))`` by `quant.program`'s rules.

    Ports: `issue` (an input word is read from the SRAM this cycle) and `phase` (0: input 1, 1: input 2 of the same
    output word: the engine reads them on alternate cycles), `act_data` (the SRAM read data, the cycle after the
    read), `bcast` (input 2's lane 0 serves every lane: a 1x1x1 second input), `add_l` / `add_r` (each input's total
    left shift and rounding right shift, `VectorDecode`), `desc` (zero points, multipliers, the output shift and
    clamps), `mac_active` (the input multipliers work this cycle) and `out` (an output word: `word_layout`).

    With the descriptor's NEG2 flag (SUB) the sum is ``rescale(x1 - zp1) - rescale(x2 - zp2)``: the rescaled
    value is negated, as TFLite's SUB does, not the input.

    Each lane has one input rescaler used by the two inputs on alternate cycles: MBQM(wrap32((x - zp) << L),
    mult, shift) with L the total left shift, where wrap32(dx << L) = dw << L with dw dx's low 32 - L bits
    sign-extended (|dx| <= 255 needs 9 bits, so dw = dx for L <= 23), and the 64-bit
    SaturatingRoundingDoublingHighMul product is (dw * mult) << L: a 9 x 32 multiply. A word's sums come every
    other cycle, so a half-width `RequantUnit` (cols / 2 lanes of 32 x 32) takes the low lanes, then the high.

    Latency: the output word is on `out` `ADD_LATENCY` (12) cycles after the read of its second input; one
    word every two cycles. No back-pressure.
    """

    def __init__(self, config):
        self.cols = cols = config.array_cols
        super().__init__({
            "issue": In(1), "phase": In(1), "act_data": In(8 * cols),
            "add_l": In(data.ArrayLayout(6, 2)), "add_r": In(data.ArrayLayout(5, 2)),
            "desc": In(descriptor_layout()), "bcast": In(1),
            "mac_active": Out(1), "out": Out(word_layout(cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self.cols
        d, add_l, add_r = self.desc, self.add_l, self.add_r
        add_dv = Signal()
        add_dsel = Signal()
        m.d.sync += add_dv.eq(self.issue)
        with m.If(self.issue):
            m.d.sync += add_dsel.eq(self.phase)

        a1_v, a2_v, a3_v, a4_v, a5_v, a6_v = (Signal(name=f"add_v{i}") for i in range(1, 7))
        a1_sel, a2_sel, a3_sel, a4_sel = (Signal(name=f"add_sel{i}") for i in range(1, 5))
        m.d.sync += [a1_v.eq(add_dv), a1_sel.eq(add_dsel), a2_v.eq(a1_v), a2_sel.eq(a1_sel),
                     a3_v.eq(a2_v), a3_sel.eq(a2_sel), a4_v.eq(a3_v), a4_sel.eq(a3_sel),
                     a5_v.eq(a4_v & a4_sel), a6_v.eq(a5_v)]
        m.d.comb += self.mac_active.eq(a1_v)
        half = cols // 2
        m.submodules.requant = requant = RequantUnit(half)
        m.d.comb += [requant.valid.eq(a5_v | a6_v), requant.tag.eq(a6_v)]
        sums = []
        l_in = Mux(add_dsel, add_l[1], add_l[0])
        zp_in = Mux(add_dsel, d.in2_zp, d.in_zp)
        mult2 = Mux(a1_sel, d.in2_mult, d.in_mult)
        neg2 = (d.flags & NEG2) != 0
        l3 = Mux(a2_sel, add_l[1], add_l[0])[:5]      # L = 32 leaves dw = 0, so the shift does not matter
        r4 = Mux(a3_sel, add_r[1], add_r[0])
        for c in range(cols):
            dx = Signal(signed(9), name=f"add_dx{c}")
            dw = Signal(signed(9), name=f"add_dw{c}")
            sat_a = Signal(name=f"add_sat_a{c}")
            m.d.comb += dx.eq(Mux(add_dsel & self.bcast, lane(self.act_data, 0), lane(self.act_data, c)) - zp_in)
            m.d.comb += [dw.eq(dx), sat_a.eq(0)]
            for shift in range(23, 33):
                with m.If(l_in == shift):
                    if shift == 32:
                        m.d.comb += dw.eq(0)
                    else:
                        m.d.comb += [dw.eq(dx[:32 - shift].as_signed()), sat_a.eq(dw == -(1 << (31 - shift)))]
            s1_dw = Signal(signed(9), name=f"add_s1_dw{c}")
            s1_sat = Signal(name=f"add_s1_sat{c}")
            s2_prod = Signal(signed(41), name=f"add_s2_prod{c}")
            s2_sat = Signal(name=f"add_s2_sat{c}")
            s3_q = Signal(signed(32), name=f"add_s3_q{c}")
            s4_r = Signal(signed(32), name=f"add_s4_r{c}")
            hold = Signal(signed(32), name=f"add_hold{c}")
            s5_sum = Signal(signed(32), name=f"add_s5_sum{c}")
            m.d.sync += [s1_dw.eq(dw), s1_sat.eq(sat_a), s2_prod.eq(s1_dw * mult2),
                         s2_sat.eq(s1_sat & (mult2 == INT32_MIN))]
            ab = Signal(signed(64), name=f"add_ab{c}")
            nudged = Signal(signed(65), name=f"add_nudged{c}")
            m.d.comb += [ab.eq((s2_prod << l3)[:64].as_signed()),
                         nudged.eq(ab + Mux(ab >= 0, Const(1 << 30, signed(32)), Const(1 - (1 << 30), signed(32))))]
            m.d.sync += s3_q.eq(Mux(s2_sat, INT32_MAX,
                                    (nudged >> 31) + Mux((nudged < 0) & nudged[:31].any(), 1, 0)))
            mask = Signal(32, name=f"add_mask{c}")
            m.d.comb += mask.eq((Const(1, unsigned(33)) << r4) - 1)
            m.d.sync += s4_r.eq((s3_q >> r4) + ((s3_q.as_unsigned() & mask) > ((mask >> 1) + (s3_q < 0))))
            with m.If(a4_v & ~a4_sel):
                m.d.sync += hold.eq(s4_r)
            with m.If(a4_v & a4_sel):
                m.d.sync += s5_sum.eq(Mux(neg2, hold - s4_r, hold + s4_r)[:32].as_signed())
            sums.append(s5_sum)
        for c in range(half):
            p = requant.params[c]
            m.d.comb += [requant.acc[c].eq(Mux(a6_v, sums[half + c], sums[c])), p.bias.eq(0),
                         p.multiplier.eq(d.out_mult), p.shift.eq(d.out_shift[:6].as_signed()),
                         p.zero_point.eq(d.out_zp), p.act_min.eq(d.act_min), p.act_max.eq(d.act_max)]
        add_low = Signal(8 * half)
        with m.If(requant.out_valid & ~requant.out_tag):
            m.d.sync += add_low.eq(requant.out.as_value())
        m.d.comb += [self.out.valid.eq(requant.out_valid & requant.out_tag),
                     self.out.data.eq(Cat(add_low, requant.out.as_value()))]
        return m
