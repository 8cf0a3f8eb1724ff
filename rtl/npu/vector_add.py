"""Vector engine component: ADD's datapath, the input rescalers and their sum (requantized by
`VectorArithDatapath`'s requantizer)."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import NEG2
from stackcam.quant.timing import (
    REQUANT_LATENCY,
    add_latency,
    add_rescale_stages,
    add_sum_latency,
    vector_input_stages,
)

from .ports import descriptor_layout
from .vector_common import lane

__all__ = ["VectorAddDatapath", "ADD_LATENCY", "add_latency", "add_sum_latency", "add_shifts"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# Cycles from the read of a word's last input (`issue` with `phase` 1, or the one read of a `solo` word) to the
# word on the engine's writer: the SRAM (1), the rescaler (S1..S4), the sum (S5), then `VectorArithDatapath`'s
# accumulator register (1) and its RequantUnit (5).
ADD_LATENCY = 1 + 4 + 1 + 1 + REQUANT_LATENCY


def add_shifts(m, desc, add_l, add_r):
    """Registers, from `desc` (ADD's fields, or a RESADD CONV's), each input's total left shift (`add_l`: left_shift
    plus a positive input shift, 32 or more leaves 0) and its rounding right shift (`add_r`), the rescalers'
    operands (`ArrayLayout(6, 2)`, `ArrayLayout(5, 2)`), one cycle after `desc`."""
    for lsig, rsig, shift in zip(add_l, add_r, (desc.in_shift, desc.in2_shift)):
        total = desc.left_shift + Mux(shift > 0, shift.as_unsigned()[:7], 0)
        m.d.sync += [lsig.eq(Mux(total > 32, 32, total)), rsig.eq(Mux(shift < 0, -shift, 0)[:5])]


class VectorAddDatapath(wiring.Component):
    """ADD's input rescalers and sum on `array_cols` lanes: ``rescale(x1 - zp1) + rescale(x2 - zp2)`` by
    `quant.program`'s rules; `VectorArithDatapath`'s full-width requantizer turns the sums into the output word
    (``requant(sum)`` with out_mult / out_shift, out_zp and the clamps).

    Ports: `issue` (an input word is read from the SRAM this cycle) and `phase` (0: input 1, 1: input 2 of the same
    output word: the engine reads them on alternate cycles), `solo` (with `phase` 0: the word has no second input
    read, ZPAD2's zero-point tiles: its input 2 is the zero point, whose rescaled value is 0, so the sum is input
    1's rescaled value), `act_data` (the SRAM read data, the cycle after the read), `bcast` (input 2's lane 0
    serves every lane: a 1x1x1 second input), `add_l` / `add_r` (each input's total left shift and rounding right
    shift, `VectorDecode`), `desc` (zero points, multipliers, NEG2), `mac_active` (the input multipliers work this
    cycle), `sums` and `sum_valid` (a word's int32 sums). With a second activation read port
    (`config.act_read_ports` 2): `dual` (the descriptor's DUAL2: every word reads both inputs in one cycle, `phase`
    stays 0) and `act_data2` (the second port's data, input 2's word): a second rescaler per lane, input 2's
    alone, runs beside the first and the sum is taken in the same stage, so a dual word's sums come with the same
    latency, one word per cycle.

    With the descriptor's NEG2 flag (SUB) the sum is ``rescale(x1 - zp1) - rescale(x2 - zp2)``: the rescaled
    value is negated, as TFLite's SUB does, not the input.

    Each lane has one input rescaler used by the two inputs on alternate cycles: MBQM(wrap32((x - zp) << L),
    mult, shift) with L the total left shift, where wrap32(dx << L) = dw << L with dw dx's low 32 - L bits
    sign-extended (|dx| <= 255 needs 9 bits, so dw = dx for L <= 23), and the 64-bit
    SaturatingRoundingDoublingHighMul product is (dw * mult) << L: a 9 x 32 multiply.

    The rescaler's stages: 1 the input and its multiplier's product (9 x 32), 2 the shifted product plus nudge
    divided by 2^31, 3 the rounding right shift, 4 held (input 1) or summed (input 2; a solo word: input 1's
    value). With the configuration's `deep_pipeline` (an FPGA's clock: one carry chain or one multiplier deep
    each) 8 stages: 1 the input and its multiplier, 2 the product as two 9 x 16 products, 3 their sum, 4 the left
    shift, 5 the nudged product divided by 2^31 rounding down, 6 SRDHM's truncation toward zero, 7 the rounding
    shift and its rounding bit, 8 the rounded value.

    Latency: a word's sums are on `sums` `add_sum_latency(config)` cycles (6; 11 with `deep_pipeline`, whose
    input register, `quant.timing.vector_input_stages`, adds one) after the read of its last input
    (`add_latency`, 12 and 21, to the output word); one word per cycle at most (two-read words every other cycle,
    solo words every cycle). No back-pressure.
    """

    def __init__(self, config):
        self.cols = cols = config.array_cols
        self.deep = bool(config.deep_pipeline)
        self.second = config.act_read_ports == 2
        self.rescale_stages = add_rescale_stages(config)
        self.input_stages = vector_input_stages(config)
        self.latency = add_sum_latency(config)
        super().__init__({
            "issue": In(1), "phase": In(1), "solo": In(1), "act_data": In(8 * cols),
            "add_l": In(data.ArrayLayout(6, 2)), "add_r": In(data.ArrayLayout(5, 2)),
            "desc": In(descriptor_layout()), "bcast": In(1),
            "mac_active": Out(1), "sums": Out(data.ArrayLayout(signed(32), cols)), "sum_valid": Out(1),
            **({"dual": In(1), "act_data2": In(8 * cols)} if self.second else {}),
        })

    def elaborate(self, platform):
        m = Module()
        issue, phase, solo, act = self.issue, self.phase, self.solo, self.act_data
        act2 = self.act_data2 if self.second else None
        if self.input_stages:
            # `deep_pipeline`: the SRAM's data and the issue's controls pass a register first, so the block RAM's
            # output ends there instead of running on into the input's decode (x - zp, the shift's select).
            assert self.input_stages == 1
            act = Signal.like(self.act_data, name="add_act_q")
            issue, phase, solo = Signal(name="add_issue_q"), Signal(name="add_phase_q"), Signal(name="add_solo_q")
            m.d.sync += [act.eq(self.act_data), issue.eq(self.issue), phase.eq(self.phase), solo.eq(self.solo)]
            if self.second:
                act2 = Signal.like(self.act_data2, name="add_act2_q")
                m.d.sync += act2.eq(self.act_data2)
        add_dv = Signal()
        add_dsel = Signal()
        add_dsolo = Signal()
        m.d.sync += add_dv.eq(issue)
        with m.If(issue):
            m.d.sync += [add_dsel.eq(phase), add_dsolo.eq(solo & ~phase)]
        sums, valid = self._lanes(m, act, act2, add_dv, add_dsel, add_dsolo)
        m.d.comb += [self.sum_valid.eq(valid)] + [self.sums[c].eq(s) for c, s in enumerate(sums)]
        return m

    def _input(self, m, act, c, add_dsel, l_in, zp_in, pre="add"):
        """Lane c's input (of the SRAM word `act`) minus its zero point, as dw (wrap32(dx << L) = dw << L) and
        whether that saturates."""
        dx = Signal(signed(9), name=f"{pre}_dx{c}")
        dw = Signal(signed(9), name=f"{pre}_dw{c}")
        sat_a = Signal(name=f"{pre}_sat_a{c}")
        m.d.comb += dx.eq(Mux(add_dsel & self.bcast, lane(act, 0), lane(act, c)) - zp_in)
        # One parallel select by L (not a chain of ifs: on an FPGA each would be a mux level more).
        with m.Switch(l_in):
            for shift in range(23, 32):
                with m.Case(shift):
                    low = dx[:32 - shift].as_signed()
                    m.d.comb += [dw.eq(low), sat_a.eq(low == -(1 << (31 - shift)))]
            with m.Case(32):
                m.d.comb += [dw.eq(0), sat_a.eq(0)]
            with m.Default():
                m.d.comb += [dw.eq(dx), sat_a.eq(0)]
        return dw, sat_a

    def _selects(self, add_dsel):
        """The input select's shift, zero point and multiplier at the rescaler's input, and SUB's flag."""
        d, add_l = self.desc, self.add_l
        return (Mux(add_dsel, add_l[1], add_l[0]), Mux(add_dsel, d.in2_zp, d.in_zp),
                Mux(add_dsel, d.in2_mult, d.in_mult), (d.flags & NEG2) != 0)

    def _sum(self, m, c, valid, sel, solo, rescaled, rescaled2, neg2, name):
        """Input 1's rescaled value held, then the sum (SUB: the difference) taken with input 2's; a solo word's
        sum is its input 1's rescaled value (input 2's is 0). A dual word (DUAL2: both inputs read in one cycle)
        has input 2's rescaled value from the second rescaler (`rescaled2`) in the same cycle."""
        hold = Signal(signed(32), name=f"add_hold{c}")
        total = Signal(signed(32), name=f"add_{name}{c}")
        with m.If(valid & ~sel):
            m.d.sync += hold.eq(rescaled)
        with m.If(valid & solo):
            m.d.sync += total.eq(rescaled)
        if rescaled2 is not None:
            with m.Elif(valid & self.dual):
                m.d.sync += total.eq(Mux(neg2, rescaled - rescaled2, rescaled + rescaled2)[:32].as_signed())
        with m.Elif(valid & sel):
            m.d.sync += total.eq(Mux(neg2, hold - rescaled, hold + rescaled)[:32].as_signed())
        return total

    def _word_done(self, sel, solo):
        """The word's sums are complete at the rescaler's last stage: input 2's value is there (or none is due)."""
        return sel | solo | self.dual if self.second else sel | solo

    def _lanes(self, m, act, act2, add_dv, add_dsel, add_dsolo):
        """The rescalers (`_chain`, 4 stages; `_deep_chain`, 8, with `deep_pipeline`) and sums: (each lane's sum,
        the word's sums are valid). With a second read port each lane has a second rescaler, input 2's alone, for
        dual words."""
        d, add_l, add_r = self.desc, self.add_l, self.add_r
        # Stage k's valid, input select (0: input 1, 1: input 2) and solo word, k = 1 .. n; then the sum.
        n = self.rescale_stages
        av = [add_dv] + [Signal(name=f"add_v{i}") for i in range(1, n + 1)]
        asel = [add_dsel] + [Signal(name=f"add_sel{i}") for i in range(1, n + 1)]
        asolo = [add_dsolo] + [Signal(name=f"add_solo{i}") for i in range(1, n + 1)]
        for i in range(n):
            m.d.sync += [av[i + 1].eq(av[i]), asel[i + 1].eq(asel[i]), asolo[i + 1].eq(asolo[i])]
        sum_v = Signal()                            # the word's sums are complete
        m.d.sync += sum_v.eq(av[n] & self._word_done(asel[n], asolo[n]))
        m.d.comb += self.mac_active.eq(av[1])
        l_in, zp_in, mult_in, neg2 = self._selects(add_dsel)
        # The input's multiplier, left shift and right shift where each chain takes them (the first rescaler
        # serves both inputs, by the word's select in that stage; the second input 2 only). L = 32 leaves dw = 0,
        # so the shift's top bit does not matter.
        if self.deep:
            assert n == 8
            chain, (m_at, l_at, r_at) = self._deep_chain, (0, 3, 6)
        else:
            assert n == 4
            chain, (m_at, l_at, r_at) = self._chain, (1, 2, 3)
        sel_a = (mult_in if m_at == 0 else Mux(asel[m_at], d.in2_mult, d.in_mult),
                 Mux(asel[l_at], add_l[1], add_l[0])[:5], Mux(asel[r_at], add_r[1], add_r[0]))
        sel_b = (d.in2_mult, add_l[1][:5], add_r[1])
        sums = []
        for c in range(self.cols):
            dw, sat_a = self._input(m, act, c, add_dsel, l_in, zp_in)
            r_a = chain(m, c, dw, sat_a, sel_a, "add")
            r_b = None
            if self.second:
                dw2, sat2 = self._input(m, act2, c, 1, add_l[1], d.in2_zp, pre="add2")
                r_b = chain(m, c, dw2, sat2, sel_b, "add2")
            sums.append(self._sum(m, c, av[n], asel[n], asolo[n], r_a, r_b, neg2, f"s{n + 1}_sum"))
        return sums, sum_v

    @staticmethod
    def _chain(m, c, dw, sat_a, sel, pre):
        """Lane c's default rescaler: MBQM(dw << L, mult, shift) in 4 stages, `sel` the (multiplier at stage 2,
        left shift at stage 3, right shift at stage 4) of the input in each stage."""
        mult2, l3, r4 = sel
        s1_dw = Signal(signed(9), name=f"{pre}_s1_dw{c}")
        s1_sat = Signal(name=f"{pre}_s1_sat{c}")
        s2_prod = Signal(signed(41), name=f"{pre}_s2_prod{c}")
        s2_sat = Signal(name=f"{pre}_s2_sat{c}")
        s3_q = Signal(signed(32), name=f"{pre}_s3_q{c}")
        s4_r = Signal(signed(32), name=f"{pre}_s4_r{c}")
        m.d.sync += [s1_dw.eq(dw), s1_sat.eq(sat_a), s2_prod.eq(s1_dw * mult2),
                     s2_sat.eq(s1_sat & (mult2 == INT32_MIN))]
        ab = Signal(signed(64), name=f"{pre}_ab{c}")
        nudged = Signal(signed(65), name=f"{pre}_nudged{c}")
        m.d.comb += [ab.eq((s2_prod << l3)[:64].as_signed()),
                     nudged.eq(ab + Mux(ab >= 0, Const(1 << 30, signed(32)), Const(1 - (1 << 30), signed(32))))]
        m.d.sync += s3_q.eq(Mux(s2_sat, INT32_MAX,
                                (nudged >> 31) + Mux((nudged < 0) & nudged[:31].any(), 1, 0)))
        mask = Signal(32, name=f"{pre}_mask{c}")
        m.d.comb += mask.eq((Const(1, unsigned(33)) << r4) - 1)
        m.d.sync += s4_r.eq((s3_q >> r4) + ((s3_q.as_unsigned() & mask) > ((mask >> 1) + (s3_q < 0))))
        return s4_r

    @staticmethod
    def _deep_chain(m, c, dw, sat_a, sel, pre):
        """Lane c's deep rescaler (8 stages), `sel` the (multiplier at stage 1's input, left shift at stage 4,
        right shift at stage 7) of the input in each stage."""
        mult_in, l3, r6 = sel
        # Stage 1: the input and its multiplier.
        s1_dw = Signal(signed(9), name=f"{pre}_s1_dw{c}")
        s1_sat = Signal(name=f"{pre}_s1_sat{c}")
        s1_mult = Signal(signed(32), name=f"{pre}_s1_mult{c}")
        m.d.sync += [s1_dw.eq(dw), s1_sat.eq(sat_a), s1_mult.eq(mult_in)]
        # Stage 2: dw * mult as two 9 x 16 products (hardware multipliers with registered operands).
        s2_lo = Signal(signed(26), name=f"{pre}_s2_lo{c}")
        s2_hi = Signal(signed(25), name=f"{pre}_s2_hi{c}")
        s2_sat = Signal(name=f"{pre}_s2_sat{c}")
        m.d.sync += [s2_lo.eq(s1_dw * s1_mult[:16]), s2_hi.eq(s1_dw * s1_mult[16:].as_signed()),
                     s2_sat.eq(s1_sat & (s1_mult == INT32_MIN))]
        # Stage 3: the product.
        s3_prod = Signal(signed(41), name=f"{pre}_s3_prod{c}")
        s3_sat = Signal(name=f"{pre}_s3_sat{c}")
        m.d.sync += [s3_prod.eq(s2_lo + (s2_hi << 16)), s3_sat.eq(s2_sat)]
        # Stage 4: SRDHM's 64-bit product: the product shifted left by L.
        s4_ab = Signal(signed(64), name=f"{pre}_s4_ab{c}")
        s4_sat = Signal(name=f"{pre}_s4_sat{c}")
        m.d.sync += [s4_ab.eq((s3_prod << l3)[:64].as_signed()), s4_sat.eq(s3_sat)]
        # Stage 5: nudged and divided by 2^31 rounding down; whether C's truncation differs.
        nudged = Signal(signed(65), name=f"{pre}_nudged{c}")
        m.d.comb += nudged.eq(s4_ab + Mux(s4_ab[63], Const(1 - (1 << 30), signed(32)),
                                           Const(1 << 30, signed(32))))
        s5_floor = Signal(signed(34), name=f"{pre}_s5_floor{c}")
        s5_fix = Signal(name=f"{pre}_s5_fix{c}")
        s5_sat = Signal(name=f"{pre}_s5_sat{c}")
        m.d.sync += [s5_floor.eq(nudged >> 31), s5_fix.eq((nudged < 0) & nudged[:31].any()), s5_sat.eq(s4_sat)]
        # Stage 6: SRDHM's result.
        s6_q = Signal(signed(32), name=f"{pre}_s6_q{c}")
        m.d.sync += s6_q.eq(Mux(s5_sat, INT32_MAX, (s5_floor + s5_fix)[:32].as_signed()))
        # Stage 7: RoundingDivideByPOT's shift and rounding bit; stage 8: the rounded value.
        mask = Signal(32, name=f"{pre}_mask{c}")
        m.d.comb += mask.eq((Const(1, unsigned(33)) << r6) - 1)
        s7_shifted = Signal(signed(32), name=f"{pre}_s7_shifted{c}")
        s7_up = Signal(name=f"{pre}_s7_up{c}")
        m.d.sync += [s7_shifted.eq(s6_q >> r6), s7_up.eq((s6_q.as_unsigned() & mask) > ((mask >> 1) + (s6_q < 0)))]
        s8_r = Signal(signed(32), name=f"{pre}_s8_r{c}")
        m.d.sync += s8_r.eq((s7_shifted + s7_up)[:32].as_signed())
        return s8_r
