"""Requantization unit: int32 accumulator to int8 with TFLite's per-channel multiplier, shift and clamp."""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import DEEP_REQUANT_LATENCY, REQUANT_LATENCY

__all__ = ["RequantUnit", "requant_params_layout"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

requant_params_layout = data.StructLayout({
    "bias": signed(32),          # int32 bias added to the accumulator first
    "multiplier": signed(32),    # Q31 multiplier
    "shift": signed(6),          # > 0: left shift before the multiply; < 0: rounding right shift after it
    "zero_point": signed(9),     # output zero point
    "act_min": signed(9),        # fused activation clamp
    "act_max": signed(9),
})


class RequantUnit(wiring.Component):
    """`lanes` parallel, fully pipelined TFLite requantizers: out = clamp(MBQM(acc + bias) + zero_point).

    MBQM is gemmlowp's MultiplyByQuantizedMultiplier: SaturatingRoundingDoublingHighMul (ties toward
    +infinity) then RoundingDivideByPOT (ties away from zero), exactly as `quant.arith`.
    One vector per cycle; results appear `latency` cycles after `valid` (`quant.timing.REQUANT_LATENCY`, 5, or
    with `deep` DEEP_REQUANT_LATENCY, 9); `tag` travels with the data. No back-pressure: the producer must have
    room for what it issued (the conv engine uses credits).

    The default pipeline: 1 the bias add and left shift; 2 the 32 x 32 product; 3 the nudge and the division
    by 2^31; 4 the rounding right shift; 5 the zero point and the clamp. The deep one (`deep`, for an FPGA's
    clock: one carry chain or one multiplier deep each): 1 the bias add; 2 the left shift; 3 the four
    16 x 16 partial products of the 32 x 32 multiply (each an 18 x 18 hardware multiplier with registered
    operands and product) and the product's sign; 4 the high and low products side by side plus the nudge,
    and the two middle products' sum; 5 the 64-bit product plus nudge, divided by 2^31; 6 the truncation
    toward zero and the saturating case; 7 the rounding right shift and its rounding bit; 8 the rounding add;
    9 the zero point and the fused activation clamp.
    """

    def __init__(self, lanes, tag_width=1, deep=False):
        self.lanes = lanes
        self.deep = bool(deep)
        self.latency = DEEP_REQUANT_LATENCY if self.deep else REQUANT_LATENCY
        super().__init__({
            "valid": In(1),
            "tag": In(tag_width),
            "acc": In(data.ArrayLayout(signed(32), lanes)),
            "params": In(data.ArrayLayout(requant_params_layout, lanes)),
            "out_valid": Out(1),
            "out_tag": Out(tag_width),
            "out": Out(data.ArrayLayout(signed(8), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        valid = [self.valid] + [Signal(name=f"valid_s{i}") for i in range(1, self.latency + 1)]
        tag = [self.tag] + [Signal.like(self.tag, name=f"tag_s{i}") for i in range(1, self.latency + 1)]
        for i in range(self.latency):
            m.d.sync += [valid[i + 1].eq(valid[i]), tag[i + 1].eq(tag[i])]
        m.d.comb += [self.out_valid.eq(valid[-1]), self.out_tag.eq(tag[-1])]

        for lane in range(self.lanes):
            if self.deep:
                self._lane_deep(m, lane)
            else:
                self._lane(m, lane)
        return m

    def _lane(self, m, lane):
        p = self.params[lane]
        # Per-lane parameters are sampled with the data and travel down the pipeline with it.
        s1_x = Signal(signed(32), name=f"x_{lane}")
        s1_mult = Signal(signed(32), name=f"mult1_{lane}")
        s1_right = Signal(range(32), name=f"right1_{lane}")
        s1_p = Signal(requant_params_layout, name=f"p1_{lane}")
        s2_prod = Signal(signed(64), name=f"prod_{lane}")
        s2_sat = Signal(name=f"sat_{lane}")
        s2_right = Signal(range(32), name=f"right2_{lane}")
        s2_p = Signal(requant_params_layout, name=f"p2_{lane}")
        s3_q = Signal(signed(32), name=f"q_{lane}")
        s3_right = Signal(range(32), name=f"right3_{lane}")
        s3_p = Signal(requant_params_layout, name=f"p3_{lane}")
        s4_r = Signal(signed(32), name=f"r_{lane}")
        s4_p = Signal(requant_params_layout, name=f"p4_{lane}")

        # Stage 1: bias add and left shift, both wrapping in int32 as the reference's C code does.
        biased = Signal(signed(32), name=f"biased_{lane}")
        m.d.comb += biased.eq(self.acc[lane] + p.bias)
        left = Mux(p.shift > 0, p.shift.as_unsigned()[:5], 0)
        m.d.sync += [
            s1_x.eq((biased << left)[:32].as_signed()),
            s1_mult.eq(p.multiplier),
            s1_right.eq(Mux(p.shift < 0, (-p.shift).as_unsigned()[:5], 0)),
            s1_p.eq(p),
        ]
        # Stage 2: the 32x32 product, and the single saturating case of SRDHM.
        m.d.sync += [
            s2_prod.eq(s1_x * s1_mult),
            s2_sat.eq((s1_x == INT32_MIN) & (s1_mult == INT32_MIN)),
            s2_right.eq(s1_right),
            s2_p.eq(s1_p),
        ]
        # Stage 3: nudge, then divide by 2^31 truncating toward zero (C division).
        nudged = Signal(signed(65), name=f"nudged_{lane}")
        m.d.comb += nudged.eq(s2_prod + Mux(s2_prod >= 0, Const(1 << 30, signed(32)),
                                            Const(1 - (1 << 30), signed(32))))
        floor_q = nudged >> 31
        inexact = nudged[:31].any()
        m.d.sync += [
            s3_q.eq(Mux(s2_sat, INT32_MAX, floor_q + Mux((nudged < 0) & inexact, 1, 0))),
            s3_right.eq(s2_right),
            s3_p.eq(s2_p),
        ]
        # Stage 4: RoundingDivideByPOT, ties away from zero.
        mask = Signal(unsigned(32), name=f"mask_{lane}")
        m.d.comb += mask.eq((Const(1, unsigned(33)) << s3_right) - 1)
        remainder = Signal(unsigned(32), name=f"rem_{lane}")
        threshold = Signal(unsigned(32), name=f"thr_{lane}")
        m.d.comb += [
            remainder.eq(s3_q.as_unsigned() & mask),
            threshold.eq((mask >> 1) + (s3_q < 0)),
        ]
        m.d.sync += [
            s4_r.eq((s3_q >> s3_right) + (remainder > threshold)),
            s4_p.eq(s3_p),
        ]
        # Stage 5: zero point and the fused activation clamp.
        with_zp = Signal(signed(34), name=f"zp_{lane}")
        m.d.comb += with_zp.eq(s4_r + s4_p.zero_point)
        clamped = Mux(with_zp < s4_p.act_min, s4_p.act_min,
                      Mux(with_zp > s4_p.act_max, s4_p.act_max, with_zp))
        m.d.sync += self.out[lane].eq(clamped[:8])

    def _lane_deep(self, m, lane):
        p = self.params[lane]
        clamp_layout = data.StructLayout({"zero_point": signed(9), "act_min": signed(9), "act_max": signed(9)})

        def sig(shape, name):
            return Signal(shape, name=f"{name}_{lane}")

        # The output zero point and clamps travel down the pipeline with the data (stages 1 .. 8).
        c = [sig(clamp_layout, f"rc{i}") for i in range(9)]
        m.d.sync += [c[1].zero_point.eq(p.zero_point), c[1].act_min.eq(p.act_min), c[1].act_max.eq(p.act_max)]
        for i in range(1, 8):
            m.d.sync += c[i + 1].eq(c[i])

        # Stage 1: the bias add, wrapping in int32 as the reference's C code does.
        s1_b = sig(signed(32), "rb1")
        s1_mult = sig(signed(32), "rmult1")
        s1_shift = sig(signed(6), "rshift1")
        m.d.sync += [s1_b.eq((self.acc[lane] + p.bias)[:32].as_signed()), s1_mult.eq(p.multiplier),
                     s1_shift.eq(p.shift)]

        # Stage 2: the left shift (wrapping in int32); the right shift's amount.
        s2_x = sig(signed(32), "rx2")
        s2_mult = sig(signed(32), "rmult2")
        s2_right = sig(range(32), "rright2")
        left = Mux(s1_shift > 0, s1_shift.as_unsigned()[:5], 0)
        m.d.sync += [s2_x.eq((s1_b << left)[:32].as_signed()), s2_mult.eq(s1_mult),
                     s2_right.eq(Mux(s1_shift < 0, (-s1_shift).as_unsigned()[:5], 0))]

        # Stage 3: x * mult as four 16 x 16 products (low halves unsigned, high halves signed).
        xl, xh = s2_x[:16], s2_x[16:].as_signed()
        ml, mh = s2_mult[:16], s2_mult[16:].as_signed()
        s3_hh = sig(signed(32), "rhh3")
        s3_hl = sig(signed(33), "rhl3")
        s3_lh = sig(signed(33), "rlh3")
        s3_ll = sig(unsigned(32), "rll3")
        s3_neg = sig(1, "rneg3")            # the product is negative (SRDHM's nudge: 1 - 2^30, else 2^30)
        s3_sat = sig(1, "rsat3")            # SRDHM's single saturating case: INT32_MIN * INT32_MIN
        s3_right = sig(range(32), "rright3")
        m.d.sync += [
            s3_hh.eq(xh * mh), s3_hl.eq(xh * ml), s3_lh.eq(xl * mh), s3_ll.eq(xl * ml),
            s3_neg.eq((s2_x[31] ^ s2_mult[31]) & s2_x.any() & s2_mult.any()),
            s3_sat.eq((s2_x == INT32_MIN) & (s2_mult == INT32_MIN)), s3_right.eq(s2_right),
        ]

        # Stage 4: hh * 2^32 + ll (side by side) plus the nudge; hl + lh.
        s4_outer = sig(signed(65), "router4")
        s4_mid = sig(signed(34), "rmid4")
        s4_sat = sig(1, "rsat4")
        s4_right = sig(range(32), "rright4")
        nudge = Mux(s3_neg, Const(1 - (1 << 30), signed(32)), Const(1 << 30, signed(32)))
        m.d.sync += [s4_outer.eq(Cat(s3_ll, s3_hh).as_signed() + nudge), s4_mid.eq(s3_hl + s3_lh),
                     s4_sat.eq(s3_sat), s4_right.eq(s3_right)]

        # Stage 5: the nudged product, divided by 2^31 rounding down, and whether that was inexact.
        nudged = sig(signed(66), "rnudged")
        m.d.comb += nudged.eq(s4_outer + (s4_mid << 16))
        s5_floor = sig(signed(35), "rfloor5")
        s5_fix = sig(1, "rfix5")            # negative and inexact: C's division truncates toward zero
        s5_sat = sig(1, "rsat5")
        s5_right = sig(range(32), "rright5")
        m.d.sync += [s5_floor.eq(nudged >> 31), s5_fix.eq((nudged < 0) & nudged[:31].any()), s5_sat.eq(s4_sat),
                     s5_right.eq(s4_right)]

        # Stage 6: SRDHM's result.
        s6_q = sig(signed(32), "rq6")
        s6_right = sig(range(32), "rright6")
        m.d.sync += [s6_q.eq(Mux(s5_sat, INT32_MAX, (s5_floor + s5_fix)[:32].as_signed())), s6_right.eq(s5_right)]

        # Stage 7: RoundingDivideByPOT's shift and its rounding bit (ties away from zero).
        mask = sig(unsigned(32), "rmask")
        m.d.comb += mask.eq((Const(1, unsigned(33)) << s6_right) - 1)
        s7_shifted = sig(signed(32), "rshifted7")
        s7_up = sig(1, "rup7")
        m.d.sync += [s7_shifted.eq(s6_q >> s6_right),
                     s7_up.eq((s6_q.as_unsigned() & mask) > ((mask >> 1) + (s6_q < 0)))]

        # Stage 8: the rounded result.
        s8_r = sig(signed(32), "rr8")
        m.d.sync += s8_r.eq((s7_shifted + s7_up)[:32].as_signed())

        # Stage 9: the zero point and the fused activation clamp.
        with_zp = sig(signed(34), "rzp")
        m.d.comb += with_zp.eq(s8_r + c[8].zero_point)
        clamped = Mux(with_zp < c[8].act_min, c[8].act_min, Mux(with_zp > c[8].act_max, c[8].act_max, with_zp))
        m.d.sync += self.out[lane].eq(clamped[:8])

    @staticmethod
    def model(acc, bias, multiplier, shift, zero_point, act_min, act_max):
        """Software view of one lane (numpy broadcasting): `quant.arith.requantize` after the bias add."""
        import numpy as np

        from stackcam.quant.arith import requantize, wrap_int32
        return requantize(wrap_int32(np.asarray(acc, np.int64) + bias), multiplier, shift, zero_point,
                          act_min, act_max)
