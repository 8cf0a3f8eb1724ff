"""FULLY_CONNECTED's requantization: int32 accumulator to int8 by LiteRT's reference float64 rescale, in integers."""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import DEEP_REQUANT_LATENCY, REQUANT_LATENCY

__all__ = ["FCRequantUnit", "fc_requant_params_layout"]

fc_requant_params_layout = data.StructLayout({
    "bias": signed(32),          # int32 bias added to the accumulator first (wrapping, as the kernel's int32)
    "scale": unsigned(64),       # the channel's effective scale: IEEE-754 binary64 bits
    "zero_point": signed(9),     # output zero point
    "act_min": signed(9),        # fused activation clamp
    "act_max": signed(9),
})

# |round(v)| above this saturates: with |zero_point| < 256 and the clamps in int8 it clamps like any larger value.
_SAT = 1 << 10
# Stage 5 shifts the rounded significand Q' (<= 2^53) right by S - 1: only S in [_S_LO, _S_LO + 11] gives a
# result in 1 .. _SAT; a smaller S means |v| >= 2^10 (saturate), a larger one |v| <= 1/4 (zero).
_S_LO = 43


class FCRequantUnit(wiring.Component):
    """`lanes` parallel, fully pipelined requantizers of LiteRT's reference int8 FULLY_CONNECTED:
    ``a = wrap_int32(acc + bias)``, ``v = double(a) * scale`` (one IEEE binary64 multiply, round to nearest
    even), ``out = clamp(round_half_away_from_zero(v) + zero_point, act_min, act_max)`` (numpy's clip order:
    the lower bound first, then the upper), exactly as `quant.ref.requantize_acc_double`, with no
    floating-point unit: integers only.

    With ``scale = M * 2^E`` (M the 53-bit significand with the hidden bit), ``|v|`` is ``|a| * M`` rounded to
    53 significant bits (ties to even) times ``2^E``; the unit normalizes ``|a|`` (its leading one to bit 31),
    so the 85-bit product ``N`` has its leading one at bit 83 or 84 and the rounding point is a fixed bit
    (31 or 32): ``Q' = RNE(N)``, 53 bits plus a carry, and ``|v| = Q' * 2^-S`` for a small-range exponent S.
    Then ``|round(v)| = (floor(Q' / 2^(S-1)) + 1) >> 1``, which matters only for 43 <= S <= 54; below that
    ``|v| >= 2^10`` (saturated: it clamps like the true value), above ``|v| <= 1/4`` (zero).

    Stages: 1 the bias add; 2 sign, magnitude and its normalization, the scale's fields; 3 the 32 x 53 product;
    4 the round to 53 bits; 5 the round to an integer, the sign, the zero point and the clamp. With `deep` (for
    an FPGA's clock: one carry chain or one multiplier deep each): 1 the bias add; 2 sign and magnitude; 3 its
    normalization, the scale's fields; 4 the 32 x 53 product as eight 16 x 14 partial products; 5 and 6 their
    sum; 7 the round to 53 bits; 8 the round to an integer and the sign; 9 the zero point and the clamp.
    Edge cases: ``a == 0`` or a zero or subnormal scale gives ``zero_point`` clamped (a subnormal scale decodes
    with a huge S: an int32 times it is below 1/4); a negative scale flips the sign; an infinite scale
    saturates by the sign, like the reference. A NaN scale (undefined in the reference, never written by the
    compiler) saturates by the signs of ``a`` and the NaN.
    (Ties-to-even or half-up at 53 bits gives the same outputs: when the two candidate doubles straddle a
    half-integer it is the upper one, and while the double's ulp is at most 1/4 that is an even multiple of
    it, so the lower candidate is odd and both rules round up; a larger ulp means ``|v| >= 2^51``, saturated.
    The unit still rounds exactly as the double multiply does.)

    One vector per cycle; results appear `latency` (5, `quant.timing.REQUANT_LATENCY`, or with `deep` 9,
    DEEP_REQUANT_LATENCY: the same as `RequantUnit`'s) cycles after `valid`; `tag` travels with the data. No
    back-pressure: the producer must have room for what it issued.
    """

    def __init__(self, lanes, tag_width=1, deep=False):
        self.lanes = lanes
        self.deep = bool(deep)
        self.latency = DEEP_REQUANT_LATENCY if self.deep else REQUANT_LATENCY
        super().__init__({
            "valid": In(1),
            "tag": In(tag_width),
            "acc": In(data.ArrayLayout(signed(32), lanes)),
            "params": In(data.ArrayLayout(fc_requant_params_layout, lanes)),
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
        clamp_layout = data.StructLayout({"zero_point": signed(9), "act_min": signed(9), "act_max": signed(9)})

        def clamps(name):
            return Signal(clamp_layout, name=f"{name}_{lane}")

        # Stage 1: the bias add, wrapping in int32.
        s1_a = Signal(signed(32), name=f"fa_{lane}")
        s1_scale = Signal(64, name=f"fscale1_{lane}")
        s1_c = clamps("fc1")
        m.d.sync += [
            s1_a.eq((self.acc[lane] + p.bias)[:32].as_signed()), s1_scale.eq(p.scale),
            s1_c.zero_point.eq(p.zero_point), s1_c.act_min.eq(p.act_min), s1_c.act_max.eq(p.act_max),
        ]

        # Stage 2: |a| (2^31 for INT32_MIN fits 32 unsigned bits) normalized to bit 31; S0 = 1076 - e - bitlen|a|.
        mag = Signal(32, name=f"fmag_{lane}")
        m.d.comb += mag.eq(Mux(s1_a < 0, -s1_a, s1_a)[:32])
        value, lz = mag, []
        for step in (16, 8, 4, 2, 1):
            top_zero = ~value[32 - step:].any()
            lz.append(top_zero)
            value = Mux(top_zero, Cat(Const(0, step), value[:32 - step]), value)
        lzc = Cat(*reversed(lz))                                       # leading zeros of a non-zero |a|
        expo = s1_scale[52:63]
        s2_n = Signal(32, name=f"fnorm_{lane}")
        s2_m = Signal(53, name=f"fsig_{lane}")
        s2_s0 = Signal(signed(13), name=f"fs0_{lane}")
        s2_neg = Signal(name=f"fneg2_{lane}")
        s2_zero = Signal(name=f"fzero2_{lane}")
        s2_c = clamps("fc2")
        m.d.sync += [
            s2_n.eq(value), s2_m.eq(Cat(s1_scale[:52], 1)),
            s2_s0.eq(1044 - expo + lzc),                               # 1076 - e - (32 - lz)
            s2_neg.eq((s1_a < 0) ^ s1_scale[63]),
            s2_zero.eq(mag == 0),
            s2_c.eq(s1_c),
        ]

        # Stage 3: N = |a| * 2^lz * M, in [2^83, 2^85).
        s3_n = Signal(85, name=f"fprod_{lane}")
        s3_s0 = Signal(signed(13), name=f"fs03_{lane}")
        s3_neg = Signal(name=f"fneg3_{lane}")
        s3_zero = Signal(name=f"fzero3_{lane}")
        s3_c = clamps("fc3")
        m.d.sync += [s3_n.eq(s2_n * s2_m), s3_s0.eq(s2_s0), s3_neg.eq(s2_neg), s3_zero.eq(s2_zero), s3_c.eq(s2_c)]

        # Stage 4: N to 53 significant bits, ties to even (the double product); S = S0 - carry.
        top = s3_n[84]
        q = Mux(top, s3_n[32:85], s3_n[31:84])
        guard = Mux(top, s3_n[31], s3_n[30])
        sticky = Mux(top, s3_n[:31].any(), s3_n[:30].any())
        q_rounded = Signal(54, name=f"fq_{lane}")
        m.d.comb += q_rounded.eq(q + (guard & (sticky | q[0])))
        s4_qhi = Signal(12, name=f"fqhi_{lane}")                        # Q' >> (_S_LO - 1): all stage 5 reads
        s4_s = Signal(signed(14), name=f"fs_{lane}")
        s4_neg = Signal(name=f"fneg4_{lane}")
        s4_zero = Signal(name=f"fzero4_{lane}")
        s4_c = clamps("fc4")
        m.d.sync += [s4_qhi.eq(q_rounded[_S_LO - 1:]), s4_s.eq(s3_s0 - top), s4_neg.eq(s3_neg),
                     s4_zero.eq(s3_zero), s4_c.eq(s3_c)]

        # Stage 5: |round(v)| = (floor(Q' / 2^(S-1)) + 1) >> 1, saturated; the sign, the zero point, the clamp.
        idx = (s4_s - _S_LO)[:4]
        halves = Signal(12, name=f"fhalves_{lane}")
        m.d.comb += halves.eq(s4_qhi >> idx)
        r = Signal(range(_SAT + 1), name=f"fr_{lane}")
        with m.If(s4_zero | (s4_s > _S_LO + 11)):
            m.d.comb += r.eq(0)
        with m.Elif(s4_s < _S_LO):
            m.d.comb += r.eq(_SAT)
        with m.Else():
            m.d.comb += r.eq((halves + 1) >> 1)
        with_zp = Signal(signed(13), name=f"fzp_{lane}")
        m.d.comb += with_zp.eq(Mux(s4_neg, -r, r) + s4_c.zero_point)
        low = Mux(with_zp < s4_c.act_min, s4_c.act_min, with_zp)
        m.d.sync += self.out[lane].eq(Mux(low > s4_c.act_max, s4_c.act_max, low)[:8])

    def _lane_deep(self, m, lane):
        p = self.params[lane]
        clamp_layout = data.StructLayout({"zero_point": signed(9), "act_min": signed(9), "act_max": signed(9)})

        def sig(shape, name):
            return Signal(shape, name=f"{name}_{lane}")

        def along(values, stage):
            """`values` (name: signal of stage - 1) registered into stage `stage`: {name: signal}."""
            out = {}
            for k, v in values.items():
                out[k] = sig(v.shape(), f"f{k}{stage}")
                m.d.sync += out[k].eq(v)
            return out

        # The zero point and clamps travel down the pipeline (stages 1 .. 8).
        c = [sig(clamp_layout, f"fc{i}") for i in range(9)]
        m.d.sync += [c[1].zero_point.eq(p.zero_point), c[1].act_min.eq(p.act_min), c[1].act_max.eq(p.act_max)]
        for i in range(1, 8):
            m.d.sync += c[i + 1].eq(c[i])

        # Stage 1: the bias add, wrapping in int32.
        s1_a = sig(signed(32), "fa1")
        s1_scale = sig(64, "fscale1")
        m.d.sync += [s1_a.eq((self.acc[lane] + p.bias)[:32].as_signed()), s1_scale.eq(p.scale)]

        # Stage 2: |a| (2^31 for INT32_MIN fits 32 unsigned bits), the result's sign.
        s2_mag = sig(32, "fmag2")
        s2_neg = sig(1, "fneg2")
        s2_scale = sig(64, "fscale2")
        m.d.sync += [s2_mag.eq(Mux(s1_a < 0, -s1_a, s1_a)[:32]), s2_neg.eq((s1_a < 0) ^ s1_scale[63]),
                     s2_scale.eq(s1_scale)]

        # Stage 3: |a| normalized to bit 31 and its leading zeros; the significand M with its hidden bit.
        value, lz = s2_mag, []
        for step in (16, 8, 4, 2, 1):
            top_zero = ~value[32 - step:].any()
            lz.append(top_zero)
            value = Mux(top_zero, Cat(Const(0, step), value[:32 - step]), value)
        s3_n = sig(32, "fnorm3")
        s3_lz = sig(5, "flz3")
        s3_m = sig(53, "fsig3")
        s3_expo = sig(11, "fexpo3")
        s3_zero = sig(1, "fzero3")
        m.d.sync += [s3_n.eq(value), s3_lz.eq(Cat(*reversed(lz))), s3_m.eq(Cat(s2_scale[:52], 1)),
                     s3_expo.eq(s2_scale[52:63]), s3_zero.eq(s2_mag == 0)]
        f3 = {"neg": sig(1, "fneg3")}
        m.d.sync += f3["neg"].eq(s2_neg)

        # Stage 4: the eight 16 x 14 partial products of |a| * 2^lz * M (18 x 18 hardware multipliers with
        # registered operands and products); S0 = 1076 - e - bitlen|a| = 1044 - e + lz.
        n_parts = [s3_n[:16], s3_n[16:]]
        m_parts = [s3_m[0:14], s3_m[14:28], s3_m[28:42], s3_m[42:53]]
        s4_p = [[sig(30, f"fp{i}{j}_4") for j in range(4)] for i in range(2)]
        for i in range(2):
            for j in range(4):
                m.d.sync += s4_p[i][j].eq(n_parts[i] * m_parts[j])
        s4_s0 = sig(signed(13), "fs04")
        m.d.sync += s4_s0.eq(1044 - s3_expo + s3_lz)
        f4 = along({"neg": f3["neg"], "zero": s3_zero}, 4)

        # Stage 5: each half of |a| times M (two levels of adds).
        s5_row = [sig(72, f"frow{i}_5") for i in range(2)]
        for i in range(2):
            q = s4_p[i]
            m.d.sync += s5_row[i].eq((q[0] + (q[1] << 14)) + ((q[2] + (q[3] << 14)) << 28))
        f5 = along({"neg": f4["neg"], "zero": f4["zero"], "s0": s4_s0}, 5)

        # Stage 6: N = |a| * 2^lz * M, in [2^83, 2^85).
        s6_n = sig(85, "fprod6")
        m.d.sync += s6_n.eq(s5_row[0] + (s5_row[1] << 16))
        f6 = along(f5, 6)

        # Stage 7: N to 53 significant bits, ties to even (the double product); S = S0 - carry.
        top = s6_n[84]
        q = Mux(top, s6_n[32:85], s6_n[31:84])
        guard = Mux(top, s6_n[31], s6_n[30])
        sticky = Mux(top, s6_n[:31].any(), s6_n[:30].any())
        q_rounded = sig(54, "fq")
        m.d.comb += q_rounded.eq(q + (guard & (sticky | q[0])))
        s7_qhi = sig(12, "fqhi7")                        # Q' >> (_S_LO - 1): all stage 8 reads
        s7_s = sig(signed(14), "fs7")
        m.d.sync += [s7_qhi.eq(q_rounded[_S_LO - 1:]), s7_s.eq(f6["s0"] - top)]
        f7 = along({"neg": f6["neg"], "zero": f6["zero"]}, 7)

        # Stage 8: |round(v)| = (floor(Q' / 2^(S-1)) + 1) >> 1, saturated.
        idx = (s7_s - _S_LO)[:4]
        halves = sig(12, "fhalves")
        m.d.comb += halves.eq(s7_qhi >> idx)
        r = sig(range(_SAT + 1), "fr")
        with m.If(f7["zero"] | (s7_s > _S_LO + 11)):
            m.d.comb += r.eq(0)
        with m.Elif(s7_s < _S_LO):
            m.d.comb += r.eq(_SAT)
        with m.Else():
            m.d.comb += r.eq((halves + 1) >> 1)
        s8_r = sig(range(-_SAT, _SAT + 1), "fr8")            # with the result's sign
        m.d.sync += s8_r.eq(Mux(f7["neg"], -r, r))

        # Stage 9: the zero point and the clamp.
        with_zp = sig(signed(13), "fzp")
        m.d.comb += with_zp.eq(s8_r + c[8].zero_point)
        low = Mux(with_zp < c[8].act_min, c[8].act_min, with_zp)
        m.d.sync += self.out[lane].eq(Mux(low > c[8].act_max, c[8].act_max, low)[:8])

    @staticmethod
    def model(acc, bias, scale, zero_point, act_min, act_max):
        """Software view of one lane (numpy broadcasting): `quant.ref.requantize_acc_double`."""
        from stackcam.quant.ref import requantize_acc_double
        return requantize_acc_double(acc, bias, scale, zero_point, act_min, act_max)
