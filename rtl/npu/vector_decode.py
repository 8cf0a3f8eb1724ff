"""Vector engine component: the descriptor's decode, its refusal checks and the values derived from it."""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import DUAL2, NEG2, OPCODES, ZPAD2

from .ports import banks_meet, descriptor_layout
from .vector_add import add_shifts
from .vector_common import opcode_layout

__all__ = ["VectorDecode"]


class VectorDecode(wiring.Component):
    """Decodes `desc` for the engine's setup.

    Combinational: `op` (which operator), `in2_full` (ADD/MUL: the second input has the output's shape),
    `bcast` (its lane 0 serves every lane: 1x1x1), `zpad` (an ADD with ZPAD2: the second input has in2_ct of the
    output's channel tiles, the others are its zero point), `dual` (an ADD or MUL with DUAL2: both inputs read in one
    cycle) and `bad` (the descriptor is refused at setup: an
    opcode other than ADD/MAXPOOL/AVGPOOL/COPY/LUT/MUL/MEAN/PRELU/RESIZE/GATHER, a flag it does not have, a zero size,
    ADD/MUL/MEAN/PRELU shifts outside -31..31, an ADD/MUL/PRELU input that is not the output's shape, a second
    input that neither is nor broadcasts as 1x1xC or 1x1x1, a MEAN output other than 1x1xC or an input over
    255x255, a ZPAD2 second input that is not out_h x out_w with at most out_c channels and out_ct tiles, a DUAL2
    ADD or MUL on a die with one activation read port or whose two inputs' banks meet
    (`quant.program.add_input_banks`), a zero pool kernel or stride, a LUT table shorter than
    ``ceil(256 / weight_word_bytes)`` words, a PRELU of more than 256 channels or with fewer bytes of alphas than
    channels, a RESIZE with other input than output channel tiles or an empty table).

    COPY and GATHER share the copy walk (COPY is the GATHER of the whole input from (0, 0, 0), unit steps):
    `copy_h`, `copy_w`, `copy_c` (the box), `src_base` (word offset of its first source word from in_addr),
    `src_sx_words`, `src_sy_words` (source word steps per column and row), `dst_sx`, `dst_sy`, `copy_e` (1 when
    the source lane offset is past the destination's: the pixel's first step only reads), `copy_nin` (source
    words read per pixel). A GATHER box outside the input or output, or with a zero size or step, is `bad`.

    Registered from `desc` every cycle: ADD's total left shift of each input (`add_l`: left_shift plus a
    positive input shift, capped at 32: the reference shifts the int64 value, then MBQM wraps it to int32, so
    32 or more leaves 0) and its rounding right shift (`add_r`); COPY's destination lane (`copy_r`) and tile
    (`copy_ot0`) of channel copy_c, the lane rotation (`copy_sh`: ``src_r - copy_r`` when positive, else
    ``cols + src_r - copy_r``, src_r the source channel's lane) and the steps per copied pixel (`copy_words`:
    the output words it touches, plus `copy_e`).

    Latency: `add_l`, `add_r`, `copy_r` and `copy_ot0` follow `desc` by one cycle, `copy_sh` and `copy_words`
    by two; `desc` is stable from `start`, so they are valid when the engine's SETUP_CYCLES (2) end. No
    back-pressure.
    """

    def __init__(self, config):
        self.config = config
        cols = config.array_cols
        super().__init__({
            "desc": In(descriptor_layout()),
            "op": Out(opcode_layout()), "bad": Out(1), "in2_full": Out(1), "bcast": Out(1), "zpad": Out(1),
            "dual": Out(1),
            "add_l": Out(data.ArrayLayout(6, 2)), "add_r": Out(data.ArrayLayout(5, 2)),
            "copy_r": Out(range(cols)), "copy_ot0": Out(16), "copy_sh": Out(range(cols + 1)), "copy_words": Out(17),
            "copy_h": Out(16), "copy_w": Out(16), "copy_c": Out(16), "copy_e": Out(1), "copy_nin": Out(17),
            "src_base": Out(32), "src_sx_words": Out(32), "src_sy_words": Out(32), "dst_sy": Out(8), "dst_sx": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        cols, wb = cfg.array_cols, cfg.weight_word_bytes
        d, op = self.desc, self.op
        m.d.comb += [
            op.add.eq(d.opcode == OPCODES["ADD"]), op.max.eq(d.opcode == OPCODES["MAXPOOL"]),
            op.avg.eq(d.opcode == OPCODES["AVGPOOL"]), op.gather.eq(d.opcode == OPCODES["GATHER"]),
            op.copy.eq((d.opcode == OPCODES["COPY"]) | op.gather),
            op.lut.eq(d.opcode == OPCODES["LUT"]), op.mul.eq(d.opcode == OPCODES["MUL"]),
            op.mean.eq(d.opcode == OPCODES["MEAN"]), op.prelu.eq(d.opcode == OPCODES["PRELU"]),
            op.pool.eq(op.max | op.avg | op.mean), op.resize.eq(d.opcode == OPCODES["RESIZE"]),
        ]
        same_in = (d.in_h == d.out_h) & (d.in_w == d.out_w) & (d.in_c == d.out_c)
        m.d.comb += [self.zpad.eq(op.add & ((d.flags & ZPAD2) != 0)),
                     self.in2_full.eq((d.in2_h == d.out_h) & (d.in2_w == d.out_w) & (d.in2_c == d.out_c)),
                     self.bcast.eq((d.in2_c == 1) & ~self.zpad)]
        in2_ok = Mux(self.zpad,
                     (d.in2_h == d.out_h) & (d.in2_w == d.out_w) & (d.in2_c <= d.out_c) & (d.in2_ct <= d.out_ct),
                     self.in2_full | ((d.in2_h == 1) & (d.in2_w == 1) & ((d.in2_c == d.out_c) | (d.in2_c == 1))))
        add_flags = NEG2 | ZPAD2 | (DUAL2 if cfg.act_read_ports == 2 else 0)
        mul_flags = DUAL2 if cfg.act_read_ports == 2 else 0
        flags_ok = Mux(op.add, (d.flags & ~add_flags) == 0,
                       Mux(op.mul, (d.flags & ~mul_flags) == 0,
                           Mux(op.copy | op.lut | op.max | op.avg, 1, d.flags == 0)))
        shift_bad = Signal()
        m.d.comb += shift_bad.eq(
            ((op.add | op.prelu) & ((d.in_shift < -31) | (d.in_shift > 31) | (d.in2_shift < -31)
                                    | (d.in2_shift > 31)))
            | ((op.mul | op.mean) & ((d.out_shift < -31) | (d.out_shift > 31))))

        add_shifts(m, d, self.add_l, self.add_r)

        lane_bits = cols.bit_length() - 1    # cols is a power of two (it divides the power-of-two bank size)
        m.d.sync += [self.copy_r.eq(d.copy_c[:lane_bits]), self.copy_ot0.eq(d.copy_c >> lane_bits)]
        # COPY is the GATHER of the whole input from (0, 0, 0) with unit steps.
        g = op.gather
        src_y, src_x, src_c = Mux(g, d.src_y, 0), Mux(g, d.src_x, 0), Mux(g, d.src_c, 0)
        sy, sx = Mux(g, d.src_sy, 1), Mux(g, d.src_sx, 1)
        m.d.sync += [self.copy_h.eq(Mux(g, d.g_h, d.in_h)), self.copy_w.eq(Mux(g, d.g_w, d.in_w)),
                     self.copy_c.eq(Mux(g, d.g_c, d.in_c)), self.dst_sy.eq(Mux(g, d.dst_sy, 1)),
                     self.dst_sx.eq(Mux(g, d.dst_sx, 1))]
        src_r = Signal(range(cols))
        src_pix = Signal(32)
        sy_w = Signal(32)
        m.d.sync += [src_r.eq(src_c[:lane_bits]), src_pix.eq(src_y * d.in_w + src_x), sy_w.eq(sy * d.in_w),
                     self.src_sx_words.eq(sx * d.in_ct)]
        # Second cycle: the source's first word, row step, the lane rotation, the words per pixel.
        m.d.sync += [self.src_base.eq(src_pix * d.in_ct + (src_c >> lane_bits)), self.src_sy_words.eq(sy_w * d.in_ct),
                     self.copy_e.eq(src_r > self.copy_r),
                     self.copy_sh.eq(Mux(src_r > self.copy_r, src_r - self.copy_r, cols + src_r - self.copy_r)),
                     self.copy_words.eq(((self.copy_r + self.copy_c - 1) >> lane_bits) + 1 + (src_r > self.copy_r)),
                     self.copy_nin.eq(((src_r + self.copy_c - 1) >> lane_bits) + 1)]
        # GATHER boxes that leave the input or the output are refused (the golden executor's check).
        g_bad = Signal()
        m.d.sync += g_bad.eq(
            (d.g_h == 0) | (d.g_w == 0) | (d.g_c == 0) | (d.src_sy == 0) | (d.src_sx == 0) | (d.dst_sy == 0)
            | (d.dst_sx == 0)
            | (d.src_y + (d.g_h - 1) * d.src_sy >= d.in_h) | (d.src_x + (d.g_w - 1) * d.src_sx >= d.in_w)
            | (d.src_c + d.g_c > d.in_c)
            | (d.copy_y + (d.g_h - 1) * d.dst_sy >= d.out_h) | (d.copy_x + (d.g_w - 1) * d.dst_sx >= d.out_w)
            | (d.copy_c + d.g_c > d.out_c))

        # DUAL2 (two read ports): the banks each input spans, registered (`desc` is stable from `start`; `bad` is
        # read at the end of SETUP), must not meet: each bank has one read port.
        m.d.comb += self.dual.eq((op.add | op.mul) & ((d.flags & DUAL2) != 0))
        dual_bad = Signal()
        if cfg.act_read_ports == 2:
            m.d.comb += dual_bad.eq(self.dual & banks_meet(m, cfg, (
                (d.in_addr, d.in_h * d.in_w * d.in_ct), (d.in2_addr, d.in2_h * d.in2_w * d.in2_ct))))

        lut_words = -(-256 // wb)                # weight words holding the table
        m.d.comb += self.bad.eq(
            ~(op.add | op.pool | op.copy | op.lut | op.mul | op.prelu | op.resize) | ~flags_ok | shift_bad
            | (d.out_h == 0) | (d.out_w == 0) | (d.out_ct == 0) | (d.in_h == 0) | (d.in_w == 0) | (d.in_ct == 0)
            | (op.add & ((d.in_shift < -31) | (d.in2_shift < -31) | (d.out_shift < -31) | (d.out_shift > 31)))
            | ((op.add | op.mul | op.prelu) & ~same_in)
            | ((op.add | op.mul) & ((d.in2_ct == 0) | ~in2_ok))
            | ((op.max | op.avg) & ((d.kernel_h == 0) | (d.kernel_w == 0) | (d.stride_h == 0) | (d.stride_w == 0)))
            | (op.mean & ((d.out_h != 1) | (d.out_w != 1) | (d.out_c != d.in_c) | (d.in_h > 255) | (d.in_w > 255)))
            | (op.prelu & ((d.in_c > 256) | (d.param_words * wb < d.in_c)))
            | (op.lut & (d.param_words < lut_words))
            | (op.resize & ((d.in_ct != d.out_ct) | (d.param_words == 0) | (d.weight_words == 0)))
            | (op.gather & g_bad) | dual_bad)
        return m
