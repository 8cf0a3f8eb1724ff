"""Vector engine component: the descriptor's decode, its refusal checks and the values derived from it."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import OPCODES

from .ports import descriptor_layout
from .vector_common import opcode_layout

__all__ = ["VectorDecode"]


class VectorDecode(wiring.Component):
    """Decodes `desc` for the engine's setup.

    Combinational: `op` (which operator) and `bad` (the descriptor is refused at setup: an opcode other than
    ADD/MAXPOOL/AVGPOOL/COPY/LUT, a zero size, ADD shifts outside -31..31, a zero pool kernel or stride, a LUT
    table shorter than ``ceil(256 / weight_word_bytes)`` words).

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
            "op": Out(opcode_layout()), "bad": Out(1),
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
            op.lut.eq(d.opcode == OPCODES["LUT"]), op.pool.eq(op.max | op.avg),
        ]

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
            ~(op.add | op.pool | op.copy | op.lut)
            | (d.out_h == 0) | (d.out_w == 0) | (d.out_ct == 0) | (d.in_h == 0) | (d.in_w == 0) | (d.in_ct == 0)
            | (op.add & ((d.in_shift < -31) | (d.in2_shift < -31) | (d.out_shift < -31) | (d.out_shift > 31)))
            | (op.pool & ((d.kernel_h == 0) | (d.kernel_w == 0) | (d.stride_h == 0) | (d.stride_w == 0)))
            | (op.lut & (d.param_words < lut_words)))
        return m
