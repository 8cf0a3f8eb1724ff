"""Requantization unit: int32 accumulator to int8 with TFLite's per-channel multiplier, shift and clamp."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

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
    One vector per cycle; results appear `latency` (5) cycles after `valid`; `tag` travels with the data.
    No back-pressure: the producer must have room for what it issued (the conv engine uses credits).
    """

    latency = 5

    def __init__(self, lanes, tag_width=1):
        self.lanes = lanes
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

        return m

    @staticmethod
    def model(acc, bias, multiplier, shift, zero_point, act_min, act_max):
        """Software view of one lane (numpy broadcasting): `quant.arith.requantize` after the bias add."""
        import numpy as np

        from stackcam.quant.arith import requantize, wrap_int32
        return requantize(wrap_int32(np.asarray(acc, np.int64) + bias), multiplier, shift, zero_point,
                          act_min, act_max)
