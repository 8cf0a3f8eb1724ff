"""NPU vector engine: the layer program's ADD (and SUB), MUL, MAXPOOL, AVGPOOL, MEAN, COPY, LUT and PRELU
descriptors, one word at a time.

The engine is a thin top (`NPUVectorEngine`: the control FSM, the linear and COPY walks and the SRAM read-port
multiplexer) over its components:

======================  ==============================  ==========================================================
component               file                            does
======================  ==============================  ==========================================================
`VectorDecode`          `vector_decode.py`              opcode, refusal checks, shifts and COPY lanes from `desc`
`VectorPoolWalker`      `vector_poolwalk.py`            pools: output pixel > tile > in-bounds window taps
`VectorAddressUnit`     `vector_addr.py`                ``base + (row * W + col) * T + tile``, two stages
`VectorAddDatapath`     `vector_add.py`                 ADD: input rescalers, the half-width requantizer
`VectorArithDatapath`   `vector_arith.py`               MUL, PRELU, MEAN: lane multipliers, alphas, requantizer
`VectorLUT`             `vector_lut.py`                 LUT: table load from weight space, per-lane lookups
`VectorPoolDatapath`    `vector_pool.py`                pools: running max / sum, divider, clamp
`VectorCopyAligner`     `vector_copy.py`                COPY: lane rotation and byte enables
`VectorWriter`          `vector_writer.py`              the write port: linear words and COPY words, in flight
======================  ==============================  ==========================================================

joined by the layouts of `vector_common.py`. Their cycle formulas, and the engine's, are `quant.timing`.
"""

import enum

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring

from stackcam.quant.program import FILL
from stackcam.quant.timing import VECTOR_DRAIN_CYCLES, VECTOR_SETUP_CYCLES, vector_cycles

from .ports import addr_bits, engine_signature
from .vector_add import VectorAddDatapath
from .vector_addr import VectorAddressUnit
from .vector_arith import VectorArithDatapath
from .vector_common import Walk
from .vector_copy import VectorCopyAligner
from .vector_decode import VectorDecode
from .vector_lut import VectorLUT
from .vector_pool import VectorPoolDatapath
from .vector_poolwalk import VectorPoolWalker
from .vector_writer import VectorWriter

__all__ = ["NPUVectorEngine"]


class _S(enum.IntEnum):
    """Engine states. An explicit register decoded with if/elif, not m.FSM: the Verilog then has no case
    statements with uncovered values (Verilator lint stays clean)."""

    IDLE = 0
    SETUP = 1
    ADD = 2
    LUT_LOAD = 3
    LUT = 4
    FILL = 5
    COPY = 6
    POOL = 7
    DRAIN = 8
    PRELU_LOAD = 9
    PRELU = 10


class NPUVectorEngine(wiring.Component):
    """The element-wise and window operators of the layer program, on `array_cols` int8 lanes in parallel.

    On `start` the engine runs the descriptor `desc` (stable until `done`) and owns the activation read/write
    ports and the weight read port until it pulses `done`, in the cycle its last write is on the write port.
    Semantics are `quant.program`'s, bit for bit (the golden `_step`); `error` pulses with `done` for what
    `VectorDecode` refuses at setup (an opcode the engine does not run, zero sizes, shifts outside -31..31
    (ADD's input shifts may be positive: they fold into the left shift), a second input that is not a broadcast
    the die does, a zero pool kernel or stride, a LUT table shorter than 256 bytes, a PRELU over 256 channels,
    ...), or for a pool window wholly in the padding (detected when the walk reaches it: the words before it
    are written).

    Every operator writes its output in address order, one whole word (`cols` lanes) at a time, except COPY,
    which writes with lane enables. Padding lanes (channel >= C in the last tile) of ADD, pool, LUT and FILL
    outputs are written with `out_zp` whatever the input's padding lanes hold, as `write_tensor` does.

    Throughput: the SRAM read latency of one cycle is pipelined everywhere, with no bubbles between words,
    pixels or tiles. `cycles(config, desc)` gives the exact count from `start` to `done` (both included) of a
    valid descriptor: SETUP_CYCLES + 1, the work below, and the pipeline drain (DRAIN_CYCLES).

    - ADD (and SUB, NEG2) and MUL: 2 cycles per output word (two reads on one read port), whether the second input is
      broadcast (its word is the channel tile's, or the one word, and a 1x1x1 one's lane 0 serves every lane) or
      not. MUL: a 9 x 9 product per lane into `VectorArithDatapath`'s requantizer. ADD: each lane has one input
      rescaler, used by the two inputs on alternate cycles ((x - zp) is 9 bits, so the Q31 product is a 9 x 32
      multiply shifted by the left shift); a `RequantUnit` of cols / 2 lanes does the output rescale, zero point and
      clamp of the low lanes and then the high lanes of each word. Multipliers: cols of 9 x 32 and cols / 2 of 32 x
      32.
    - MAXPOOL / AVGPOOL: 1 cycle per in-bounds tap, i.e. sum over output words of the taps inside the input
      (a 2x2/s2 pool is 4 cycles per word, a 7x7 global pool 49). Out-of-bounds taps cost nothing.
      AVGPOOL divides exactly with an 8-stage pipelined restoring divider per lane: the quotient
      (|sum| + count // 2) // count is below 2^8 because |sum| <= 128 * count; the sign is applied after,
      which is TFLite's round-half-away-from-zero. MAXPOOL goes through the same pipe with count = 1.
    - MEAN: the pools' walk over one window of the whole input per channel tile (1 cycle per input word); the
      exact sum of each lane at the window's last tap goes to `VectorArithDatapath`, not the divider.
    - PRELU: 1 cycle per channel tile to load its alphas from weight space, then 1 cycle per word.
    - COPY: 1 cycle per output word written: with FILL, out_h*out_w*out_ct cycles of fill, then
      in_h*in_w*ceil((copy_c % cols + in_c) / cols) cycles of copy. A channel offset that is not a multiple of
      `cols` rotates lanes: output word j of a pixel is lanes of input words j-1 and j, written with byte enables.
      Padding lanes of the output are written by FILL only (the compiler gives the first COPY of a tensor FILL).
    - LUT: 256 / `lut_row_bytes(config)` cycles (32 for weight words of 8 bytes or more) to load the table
      from weight space, a row of up to 8 bytes per cycle, then 1 cycle per word: each lane reads its own copy
      of the table (asynchronous read) and picks the byte.

    No back-pressure: the SRAM ports never stall, so every count above is exact. `mac_active` is high in the
    cycles ADD's input multipliers work.

    In place (ADD, MUL, PRELU, LUT with out_addr == in_addr or an unbroadcast in2_addr): reads run ahead of
    writes, and each output word is written after the input words at its address were read.
    """

    SETUP_CYCLES = VECTOR_SETUP_CYCLES
    DRAIN_CYCLES = VECTOR_DRAIN_CYCLES

    def __init__(self, config):
        self.config = config
        super().__init__(engine_signature(config))

    @classmethod
    def cycles(cls, config, desc):
        """Cycles from `start` to `done`, both included, of a valid descriptor (a `quant.program.Descriptor`):
        `quant.timing.vector_cycles`. One refused at setup takes SETUP_CYCLES + 2; a pool window wholly in the
        padding ends the walk there."""
        return vector_cycles(config, desc)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        cols = cfg.array_cols
        abits = addr_bits(cfg.act_words)
        d = self.desc
        m.submodules.decode = dec = VectorDecode(cfg)
        m.submodules.poolwalk = walker = VectorPoolWalker()
        m.submodules.addr = au = VectorAddressUnit(cfg)
        m.submodules.add = add = VectorAddDatapath(cfg)
        m.submodules.lut = lut = VectorLUT(cfg)
        m.submodules.arith = arith = VectorArithDatapath(cfg)
        m.submodules.pool = pool = VectorPoolDatapath(cfg)
        m.submodules.copy = copy = VectorCopyAligner(cfg)
        m.submodules.writer = writer = VectorWriter(cfg)
        op = dec.op
        in_addr = d.in_addr[:abits]
        in2_addr = d.in2_addr[:abits]
        out_addr = d.out_addr[:abits]

        # Data paths between the components.
        m.d.comb += [
            dec.desc.eq(d), walker.desc.eq(d), walker.avg.eq(op.avg), add.desc.eq(d), writer.desc.eq(d),
            add.bcast.eq(dec.bcast), arith.desc.eq(d), arith.mul.eq(op.mul), arith.prelu.eq(op.prelu),
            arith.bcast.eq(dec.bcast), arith.act_data.eq(self.act_r.data), arith.w_data.eq(self.w_r.data),
            arith.sums.eq(pool.sums), arith.sum_valid.eq(pool.sum_valid & op.mean),
            au.width.eq(Mux(op.copy, d.out_w, d.in_w)), au.tiles.eq(Mux(op.copy, d.out_ct, d.in_ct)),
            au.base.eq(Mux(op.copy, out_addr, in_addr)),
            add.act_data.eq(self.act_r.data), add.add_l.eq(dec.add_l), add.add_r.eq(dec.add_r),
            lut.param_addr.eq(d.param_addr), lut.w_data.eq(self.w_r.data), lut.act_data.eq(self.act_r.data),
            self.w_r.en.eq(lut.w_r.en | arith.w_r.en), self.w_r.addr.eq(lut.w_r.addr | arith.w_r.addr),
            pool.tap.eq(au.p3), pool.act_data.eq(self.act_r.data), pool.max.eq(op.max),
            pool.act_min.eq(d.act_min), pool.act_max.eq(d.act_max),
            copy.word.eq(au.p3), copy.act_data.eq(self.act_r.data), copy.enable.eq(op.copy),
            copy.copy_r.eq(dec.copy_r), copy.copy_sh.eq(dec.copy_sh),
            writer.lut.eq(lut.out), writer.pool.eq(pool.out), pool.mean.eq(op.mean),
            writer.add.eq(add.out), writer.copy.eq(copy.out), writer.arith.eq(arith.out),
            self.act_w.addr.eq(writer.act_w.addr), self.act_w.data.eq(writer.act_w.data),
            self.act_w.en.eq(writer.act_w.en), self.mac_active.eq(add.mac_active | arith.mac_active),
        ]

        # MEAN walks one window of the whole input per channel tile, as a global pool would.
        with m.If(op.mean):
            m.d.comb += [walker.desc.kernel_h.eq(d.in_h[:8]), walker.desc.kernel_w.eq(d.in_w[:8]),
                         walker.desc.stride_h.eq(1), walker.desc.stride_w.eq(1), walker.desc.pad_top.eq(0),
                         walker.desc.pad_bottom.eq(0), walker.desc.pad_left.eq(0), walker.desc.pad_right.eq(0)]

        # Read port: pools and COPY read from the address unit, ADD, MUL, PRELU and LUT directly.
        lin_ren = Signal()
        lin_raddr = Signal(abits)
        with m.If(op.pool):
            m.d.comb += [self.act_r.addr.eq(au.p2.addr), self.act_r.en.eq(au.p2.valid)]
        with m.Elif(op.copy):
            m.d.comb += [self.act_r.addr.eq(au.p2.tag.raddr), self.act_r.en.eq(au.p2.valid & au.p2.tag.ren)]
        with m.Else():
            m.d.comb += [self.act_r.addr.eq(lin_raddr), self.act_r.en.eq(lin_ren)]

        # The walks: every word of the output (ADD, LUT, FILL) and the input pixels x output words of a pixel
        # (COPY); the pools' walk is `walker`.
        lw = Walk("lw", [d.out_h, d.out_w, d.out_ct])
        lw_i = Signal(abits)
        add_phase = Signal()
        cw = Walk("cw", [d.in_h, d.in_w, dec.copy_words])
        c_ri = Signal(abits)                                   # next input word to read
        c_hi = Signal(signed(18))                              # lanes < c_hi of this output word are copied

        state = Signal(_S)
        err = Signal()
        setup = Signal(range(self.SETUP_CYCLES))
        with m.If(state == _S.IDLE):
            with m.If(self.start):
                m.d.sync += [setup.eq(0), err.eq(0), state.eq(_S.SETUP)]
        with m.Elif(state == _S.SETUP):
            m.d.sync += setup.eq(setup + 1)
            with m.If(setup == self.SETUP_CYCLES - 1):
                lw.reset(m)
                cw.reset(m)
                m.d.comb += [walker.init.eq(1), lut.init.eq(1), writer.init.eq(1), arith.alpha_init.eq(1)]
                m.d.sync += [lw_i.eq(0), add_phase.eq(0), c_ri.eq(0), c_hi.eq(dec.copy_r + d.in_c)]
                with m.If(dec.bad | (op.pool & walker.first_empty)):
                    m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
                with m.Elif(op.add | op.mul):
                    m.d.sync += state.eq(_S.ADD)
                with m.Elif(op.prelu):
                    m.d.sync += state.eq(_S.PRELU_LOAD)
                with m.Elif(op.lut):
                    m.d.sync += state.eq(_S.LUT_LOAD)
                with m.Elif(op.pool):
                    m.d.sync += state.eq(_S.POOL)
                with m.Elif((d.flags & FILL) != 0):
                    m.d.sync += state.eq(_S.FILL)
                with m.Else():
                    m.d.sync += state.eq(_S.COPY)

        with m.Elif(state == _S.ADD):
            # Even cycles read input 1, odd cycles input 2 of the same word.
            # A broadcast second input: the channel tile's word (1x1xC) or the one word (1x1x1).
            in2_off = Mux(dec.in2_full, lw_i, Mux(dec.bcast, 0, lw.ctr[2]))
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(Mux(add_phase, in2_addr + in2_off, in_addr + lw_i)),
                         add.issue.eq(op.add), add.phase.eq(add_phase), arith.issue.eq(op.mul),
                         arith.phase.eq(add_phase)]
            m.d.sync += add_phase.eq(~add_phase)
            with m.If(add_phase):
                m.d.comb += writer.inc.eq(1)
                m.d.sync += lw_i.eq(lw_i + 1)
                lw.step(m)
                with m.If(lw.last):
                    m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.LUT_LOAD):
            m.d.comb += lut.load.eq(1)
            with m.If(lut.load_last):
                m.d.sync += state.eq(_S.LUT)

        with m.Elif(state == _S.LUT):
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(in_addr + lw_i), writer.inc.eq(1), lut.lookup.eq(1)]
            m.d.sync += lw_i.eq(lw_i + 1)
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.PRELU_LOAD):
            # One alpha row (channel tile) a cycle.
            m.d.comb += arith.alpha_load.eq(1)
            m.d.sync += lw_i.eq(lw_i + 1)
            with m.If(lw_i == d.out_ct - 1):
                m.d.sync += [lw_i.eq(0), state.eq(_S.PRELU)]

        with m.Elif(state == _S.PRELU):
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(in_addr + lw_i), writer.inc.eq(1), arith.issue.eq(1),
                         arith.tile.eq(lw.ctr[2])]
            m.d.sync += lw_i.eq(lw_i + 1)
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.FILL):
            m.d.comb += [writer.inc.eq(1), writer.fill.eq(1)]
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.COPY)

        with m.Elif(state == _S.COPY):
            j = cw.ctr[2]
            m.d.comb += [
                writer.inc.eq(1), au.req.valid.eq(1),
                au.req.row.eq(cw.ctr[0] + d.copy_y), au.req.col.eq(cw.ctr[1] + d.copy_x),
                au.req.tile.eq(dec.copy_ot0 + j), au.req.tag.ren.eq(j < d.in_ct),
                au.req.tag.raddr.eq(in_addr + c_ri), au.req.tag.hi.eq(c_hi), au.req.tag.j0.eq(j == 0),
            ]
            with m.If(j < d.in_ct):
                m.d.sync += c_ri.eq(c_ri + 1)
            with m.If(cw.at_end[2]):
                m.d.sync += c_hi.eq(dec.copy_r + d.in_c)
            with m.Else():
                m.d.sync += c_hi.eq(c_hi - cols)
            cw.step(m)
            with m.If(cw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.POOL):
            tap = walker.tap
            m.d.comb += [
                walker.step.eq(1), writer.inc.eq(walker.word), au.req.valid.eq(1), au.req.row.eq(tap.row),
                au.req.col.eq(tap.col), au.req.tile.eq(tap.tile), au.req.tag.first.eq(tap.first),
                au.req.tag.last.eq(tap.last), au.req.tag.count.eq(tap.count),
            ]
            with m.If(walker.fail):
                m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
            with m.Elif(walker.finish):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.DRAIN):
            with m.If(writer.idle):
                m.d.comb += [self.done.eq(1), self.error.eq(err)]
                m.d.sync += state.eq(_S.IDLE)

        m.d.comb += self.busy.eq(state != _S.IDLE)
        return m
