"""Vector engine component: the descriptor's decode, its refusal checks and the values derived from it."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import NEG2, OPCODES

from .ports import descriptor_layout
from .vector_common import opcode_layout

__all__ = ["VectorDecode"]


class VectorDecode(wiring.Component):
    """Decodes `desc` for the engine's setup.

    Combinational: `op` (which operator), `in2_full` (ADD/MUL: the second input has the output's shape),
    `bcast` (its lane 0 serves every lane: 1x1x1) and `bad` (the descriptor is refused at setup: an opcode other
    than ADD/MAXPOOL/AVGPOOL/COPY/LUT/MUL/MEAN/PRELU, a flag it does not have, a zero size, ADD/MUL/MEAN/PRELU
    shifts outside -31..31, an ADD/MUL/PRELU input that is not the output's shape, a second input that neither
    is nor broadcasts as 1x1xC or 1x1x1, a MEAN output other than 1x1xC or an input over 255x255, a zero pool
    kernel or stride, a LUT table shorter than ``ceil(256 / weight_word_bytes)`` words, a PRELU of more than 256
    channels or with fewer bytes of alphas than channels).

    Registered from `desc` every cycle: ADD's total left shift of each input (`add_l`: left_shift plus a
    positive input shift, capped at 32: the reference shifts the int64 value, then MBQM wraps it to int32, so
    32 or more leaves 0) and its rounding right shift (`add_r`); COPY's destination lane (`copy_r`) and tile
    (`copy_ot0`) of channel copy_c, the lane rotation ``cols - copy_r`` (`copy_sh`) and the output words per
    input pixel (`copy_words`).

    Latency: `add_l`, `add_r`, `copy_r` and `copy_ot0` follow `desc` by one cycle, `copy_sh` and `copy_words`
    by two; `desc` is stable from `start`, so they are valid when the engine's SETUP_CYCLES (2) end. No
    back-pressure.
    """

    def __init__(self, config):
        self.config = config
        cols = config.array_cols
        super().__init__({
            "desc": In(descriptor_layout()),
            "op": Out(opcode_layout()), "bad": Out(1), "in2_full": Out(1), "bcast": Out(1),
            "add_l": Out(data.ArrayLayout(6, 2)), "add_r": Out(data.ArrayLayout(5, 2)),
            "copy_r": Out(range(cols)), "copy_ot0": Out(16), "copy_sh": Out(range(cols + 1)), "copy_words": Out(17),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        cols, wb = cfg.array_cols, cfg.weight_word_bytes
        d, op = self.desc, self.op
        m.d.comb += [
            op.add.eq(d.opcode == OPCODES["ADD"]), op.max.eq(d.opcode == OPCODES["MAXPOOL"]),
            op.avg.eq(d.opcode == OPCODES["AVGPOOL"]), op.copy.eq(d.opcode == OPCODES["COPY"]),
            op.lut.eq(d.opcode == OPCODES["LUT"]), op.mul.eq(d.opcode == OPCODES["MUL"]),
            op.mean.eq(d.opcode == OPCODES["MEAN"]), op.prelu.eq(d.opcode == OPCODES["PRELU"]),
            op.pool.eq(op.max | op.avg | op.mean),
        ]
        same_in = (d.in_h == d.out_h) & (d.in_w == d.out_w) & (d.in_c == d.out_c)
        m.d.comb += [self.in2_full.eq((d.in2_h == d.out_h) & (d.in2_w == d.out_w) & (d.in2_c == d.out_c)),
                     self.bcast.eq(d.in2_c == 1)]
        in2_ok = self.in2_full | ((d.in2_h == 1) & (d.in2_w == 1) & ((d.in2_c == d.out_c) | (d.in2_c == 1)))
        flags_ok = Mux(op.add, (d.flags & ~NEG2) == 0, Mux(op.copy | op.lut | op.max | op.avg, 1, d.flags == 0))
        shift_bad = Signal()
        m.d.comb += shift_bad.eq(
            ((op.add | op.prelu) & ((d.in_shift < -31) | (d.in_shift > 31) | (d.in2_shift < -31)
                                    | (d.in2_shift > 31)))
            | ((op.mul | op.mean) & ((d.out_shift < -31) | (d.out_shift > 31))))

        for lsig, rsig, shift in zip(self.add_l, self.add_r, (d.in_shift, d.in2_shift)):
            total = d.left_shift + Mux(shift > 0, shift.as_unsigned()[:7], 0)
            m.d.sync += [lsig.eq(Mux(total > 32, 32, total)), rsig.eq(Mux(shift < 0, -shift, 0)[:5])]

        lane_bits = cols.bit_length() - 1    # cols is a power of two (it divides the power-of-two bank size)
        m.d.sync += [self.copy_r.eq(d.copy_c[:lane_bits]), self.copy_ot0.eq(d.copy_c >> lane_bits)]
        m.d.sync += self.copy_sh.eq(cols - self.copy_r)
        last_lane = Signal(signed(18))          # lane of the input's last channel in its tile
        m.d.sync += last_lane.eq(d.in_c - 1 - (d.in_ct - 1) * cols)
        m.d.sync += self.copy_words.eq(d.in_ct + (self.copy_r + last_lane >= cols))

        lut_words = -(-256 // wb)                # weight words holding the table
        m.d.comb += self.bad.eq(
            ~(op.add | op.pool | op.copy | op.lut | op.mul | op.prelu) | ~flags_ok | shift_bad
            | (d.out_h == 0) | (d.out_w == 0) | (d.out_ct == 0) | (d.in_h == 0) | (d.in_w == 0) | (d.in_ct == 0)
            | (op.add & ((d.in_shift < -31) | (d.in2_shift < -31) | (d.out_shift < -31) | (d.out_shift > 31)))
            | ((op.add | op.mul | op.prelu) & ~same_in)
            | ((op.add | op.mul) & ((d.in2_ct == 0) | ~in2_ok))
            | ((op.max | op.avg) & ((d.kernel_h == 0) | (d.kernel_w == 0) | (d.stride_h == 0) | (d.stride_w == 0)))
            | (op.mean & ((d.out_h != 1) | (d.out_w != 1) | (d.out_c != d.in_c) | (d.in_h > 255) | (d.in_w > 255)))
            | (op.prelu & ((d.in_c > 256) | (d.param_words * wb < d.in_c)))
            | (op.lut & (d.param_words < lut_words)))
        return m
