"""NPU vector engine: the layer program's ADD (and SUB), MUL, MAXPOOL, AVGPOOL, MEAN, COPY, GATHER, LUT, PRELU
and RESIZE descriptors, one word at a time.

The engine is a thin top (`NPUVectorEngine`: the control FSM, the linear and COPY walks and the SRAM read-port
multiplexer) over its components:

======================  ==============================  ==========================================================
component               file                            does
======================  ==============================  ==========================================================
`VectorDecode`          `vector_decode.py`              opcode, refusal checks, shifts and COPY lanes from `desc`
`VectorPoolWalker`      `vector_poolwalk.py`            pools: output pixel > tile > in-bounds window taps
`VectorAddressUnit`     `vector_addr.py`                ``base + (row * W + col) * T + tile``, two stages
`VectorAddDatapath`     `vector_add.py`                 ADD: input rescalers and their sum
`VectorArithDatapath`   `vector_arith.py`               MUL, PRELU, MEAN: lane multipliers, alphas; the requantizer
`VectorLUT`             `vector_lut.py`                 LUT: table load from weight space, per-lane lookups
`VectorPoolDatapath`    `vector_pool.py`                pools: running max / sum, divider, clamp
`VectorCopyAligner`     `vector_copy.py`                COPY: lane rotation and byte enables
`VectorResizeDatapath`  `vector_resize.py`              RESIZE: per-lane 4-tap weighted sum, rounding
`VectorWriter`          `vector_writer.py`              the write port: linear words and COPY words, in flight
======================  ==============================  ==========================================================

joined by the layouts of `vector_common.py`. Their cycle formulas, and the engine's, are `quant.timing`.
"""

import enum
from types import SimpleNamespace

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring

from stackcam.quant.program import FILL, RESIZE_ENTRY_BYTES
from stackcam.quant.timing import VECTOR_DRAIN_CYCLES, VECTOR_SETUP_CYCLES, vector_cycles

from .ports import addr_bits, descriptor_layout, engine_signature
from .vector_add import VectorAddDatapath
from .vector_addr import VectorAddressUnit
from .vector_arith import VectorArithDatapath
from .vector_common import Walk
from .vector_copy import VectorCopyAligner
from .vector_decode import VectorDecode
from .vector_lut import VectorLUT
from .vector_pool import VectorPoolDatapath
from .vector_poolwalk import VectorPoolWalker
from .vector_resize import VectorResizeDatapath
from .vector_writer import VectorWriter

__all__ = ["NPUVectorEngine"]


def _entry_bad(lo, hi, frac, size):
    """A RESIZE table entry outside the input, or a weight outside [-1024, 1024]."""
    return (lo >= size) | (hi >= size) | (frac < -1024) | (frac > 1024)


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
    RS_ROW = 11
    RS_COL = 12
    RS_LAT = 13
    RESIZE = 14


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
      not. An ADD with ZPAD2 (a fused channel PAD) reads its second input only for the first in2_ct channel tiles
      of each pixel (its words in order, `in2_addr` on); a word of a later tile is 1 cycle: input 1's read alone
      (input 2 is its zero point, rescaled to 0). MUL: a 9 x 9 product per lane into `VectorArithDatapath`'s
      requantizer. ADD: each lane has one input rescaler, used by the two inputs on alternate cycles ((x - zp) is 9
      bits, so the Q31 product is a 9 x 32 multiply shifted by the left shift); the sums go to the same
      `VectorArithDatapath` requantizer (cols lanes) for the output rescale, zero point and clamp. Multipliers:
      cols of 9 x 32, and the requantizer's cols of 32 x 32 shared with MUL, PRELU and MEAN. With a second
      activation read port (`config.act_read_ports` 2, the `act_r2` port) an ADD or MUL with DUAL2 is 1 cycle per
      word: input 1 on the first port, input 2 on the second in the same cycle (ADD: into a second rescaler per
      lane, another cols of 9 x 32; MUL: both into the lane's product); `VectorDecode` refuses it when the inputs'
      banks meet.
    - MAXPOOL / AVGPOOL: 1 cycle per in-bounds tap, i.e. sum over output words of the taps inside the input
      (a 2x2/s2 pool is 4 cycles per word, a 7x7 global pool 49). Out-of-bounds taps cost nothing.
      AVGPOOL divides exactly with an 8-stage pipelined restoring divider per lane: the quotient
      (|sum| + count // 2) // count is below 2^8 because |sum| <= 128 * count; the sign is applied after,
      which is TFLite's round-half-away-from-zero. MAXPOOL goes through the same pipe with count = 1.
    - MEAN: the pools' walk over one window of the whole input per channel tile (1 cycle per input word); the
      exact sum of each lane at the window's last tap goes to `VectorArithDatapath`, not the divider.
    - PRELU: 1 cycle per channel tile to load its alphas from weight space, then 1 cycle per word.
    - GATHER: as COPY over its box, 1 cycle per output word written, and 1 more per pixel when the source
      channel's lane is past the destination's (`quant.timing.gather_steps`); source words are read at the
      box's row and column steps, output words written at the destination's.
    - COPY: 1 cycle per output word written: with FILL, out_h*out_w*out_ct cycles of fill, then
      in_h*in_w*ceil((copy_c % cols + in_c) / cols) cycles of copy. A channel offset that is not a multiple of
      `cols` rotates lanes: output word j of a pixel is lanes of input words j-1 and j, written with byte enables.
      Padding lanes of the output are written by FILL only (the compiler gives the first COPY of a tensor FILL).
    - RESIZE: per output pixel, RESIZE_PIXEL_CYCLES (3) to read its row and column table entries from weight
      space (one read each, then the latch), then 4 cycles per output word (channel tile): its taps (y0, x0),
      (y1, x0), (y0, x1), (y1, x1) go through the address unit with their weights ``wy * wx`` and
      `VectorResizeDatapath` sums them. A table entry outside the input or with a fraction outside
      -1024..1024 ends the walk there with `error` (the words before it are written).
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
        super().__init__(engine_signature(config, second_read=config.act_read_ports == 2))

    @classmethod
    def cycles(cls, config, desc):
        """Cycles from `start` to `done`, both included, of a valid descriptor (a `quant.program.Descriptor`):
        `quant.timing.vector_cycles`. One refused at setup takes SETUP_CYCLES + 2; a pool window wholly in the
        padding ends the walk there."""
        return vector_cycles(config, desc)

    def _resize_regs(self, d):
        """RESIZE's state: the output walk (row, column, channel tile), the tap, and the table entries of (y, x):
        source rows/columns and their weights (1024 - f, f)."""
        slot_bits = (self.config.weight_word_bytes // RESIZE_ENTRY_BYTES).bit_length() - 1
        rw = Walk("rw", [d.out_h, d.out_w, d.out_ct])
        rs_tap = Signal(2)
        rs_y0, rs_y1, rs_x0, rs_x1 = (Signal(16, name=f"rs_{n}") for n in ("y0", "y1", "x0", "x1"))
        rs_wy = [Signal(signed(13), name=f"rs_wy{i}") for i in range(2)]          # 1024 - fy, fy
        rs_wx = [Signal(signed(13), name=f"rs_wx{i}") for i in range(2)]
        return SimpleNamespace(rw=rw, tap=rs_tap, slot_bits=slot_bits, y0=rs_y0, y1=rs_y1, x0=rs_x0, x1=rs_x1,
                               wy=rs_wy, wx=rs_wx)

    def _read_entry(self, rs, slot):
        """(lo, hi, frac) of entry `slot` of the weight word on the read port."""
        e = self.w_r.data.word_select(slot, 8 * RESIZE_ENTRY_BYTES) if rs.slot_bits else \
            self.w_r.data[:8 * RESIZE_ENTRY_BYTES]
        return e[0:16], e[16:32], e[32:48].as_signed()

    def _rs_col(self, m, state, err, rs, d, rs_wen, rs_waddr):
        lo, hi, frac = self._read_entry(rs, rs.rw.ctr[0][:rs.slot_bits] if rs.slot_bits else 0)
        m.d.comb += [rs_wen.eq(1), rs_waddr.eq(d.weight_addr + (rs.rw.ctr[1] >> rs.slot_bits))]
        m.d.sync += [rs.y0.eq(lo), rs.y1.eq(hi), rs.wy[0].eq(1024 - frac), rs.wy[1].eq(frac)]
        with m.If(_entry_bad(lo, hi, frac, d.in_h)):
            m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
        with m.Else():
            m.d.sync += state.eq(_S.RS_LAT)

    def _rs_lat(self, m, state, err, rs, d):
        lo, hi, frac = self._read_entry(rs, rs.rw.ctr[1][:rs.slot_bits] if rs.slot_bits else 0)
        m.d.sync += [rs.x0.eq(lo), rs.x1.eq(hi), rs.wx[0].eq(1024 - frac), rs.wx[1].eq(frac)]
        with m.If(_entry_bad(lo, hi, frac, d.in_w)):
            m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
        with m.Else():
            m.d.sync += state.eq(_S.RESIZE)

    def _rs_taps(self, m, state, rs, writer, au):
        ky, kx = rs.tap[0], rs.tap[1]
        m.d.comb += [
            writer.inc.eq(rs.tap == 3), au.req.valid.eq(1),
            au.req.row.eq(Mux(ky, rs.y1, rs.y0)), au.req.col.eq(Mux(kx, rs.x1, rs.x0)),
            au.req.tile.eq(rs.rw.ctr[2]), au.req.tag.first.eq(rs.tap == 0), au.req.tag.last.eq(rs.tap == 3),
            au.req.tag.weight.eq(Mux(ky, rs.wy[1], rs.wy[0]) * Mux(kx, rs.wx[1], rs.wx[0])),
        ]
        m.d.sync += rs.tap.eq(rs.tap + 1)
        with m.If(rs.tap == 3):
            with m.If(rs.rw.last):
                m.d.sync += state.eq(_S.DRAIN)
            with m.Elif(rs.rw.at_end[2]):
                m.d.sync += state.eq(_S.RS_ROW)
            rs.rw.step(m)

    def _copy_step(self, m, state, cw, dec, d, writer, au, in_addr, c):
        """One COPY/GATHER step (`c`: the box row's and the pixel's source word offsets, the destination row and
        column, the lanes copied of this output word)."""
        # Step i of a pixel reads source word i (i < copy_nin) and, from step copy_e on, writes output
        # word j = i - copy_e built from the last two words read.
        i = cw.ctr[2]
        j = Signal(17)
        wr = Signal()
        m.d.comb += [j.eq(i - dec.copy_e), wr.eq(i >= dec.copy_e)]
        m.d.comb += [
            writer.inc.eq(wr), au.req.valid.eq(1), au.req.row.eq(c.dy), au.req.col.eq(c.dx),
            au.req.tile.eq(dec.copy_ot0 + j), au.req.tag.ren.eq(i < dec.copy_nin), au.req.tag.wr.eq(wr),
            au.req.tag.raddr.eq(in_addr + c.pix + i), au.req.tag.hi.eq(c.hi), au.req.tag.j0.eq(j == 0),
        ]
        with m.If(cw.at_end[2]):
            m.d.sync += c.hi.eq(dec.copy_r + dec.copy_c)
            with m.If(cw.at_end[1]):
                m.d.sync += [c.row.eq(c.row + dec.src_sy_words), c.pix.eq(c.row + dec.src_sy_words),
                             c.dy.eq(c.dy + dec.dst_sy), c.dx.eq(d.copy_x)]
            with m.Else():
                m.d.sync += [c.pix.eq(c.pix + dec.src_sx_words), c.dx.eq(c.dx + dec.dst_sx)]
        with m.Elif(wr):
            m.d.sync += c.hi.eq(c.hi - self.config.array_cols)
        cw.step(m)
        with m.If(cw.last):
            m.d.sync += state.eq(_S.DRAIN)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
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
        m.submodules.resize = rsz = VectorResizeDatapath(cfg)
        op = dec.op
        in_addr = d.in_addr[:abits]
        in2_addr = d.in2_addr[:abits]
        out_addr = d.out_addr[:abits]

        # ADD's and MUL's second-input modes, registered: `desc` is stable from `start` and they are first used
        # after SETUP, so the opcode's and the shapes' comparisons end here instead of running on into the lanes'
        # input select and the read-address walk (an FPGA's deepest paths).
        bcast, zpad, in2_full, dual = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [bcast.eq(dec.bcast), zpad.eq(dec.zpad), in2_full.eq(dec.in2_full), dual.eq(dec.dual)]
        # The descriptor the lanes' datapaths and the writer read, registered in the engine's (gated) domain:
        # `desc` is stable from `start` and they first read it at the end of SETUP, and their logic then depends on
        # nothing outside the domain (a simulation does not evaluate it while the engine's clock is stopped).
        dq = Signal(descriptor_layout())
        m.d.sync += dq.eq(d)
        # Data paths between the components.
        m.d.comb += [
            dec.desc.eq(d), walker.avg.eq(op.avg), add.desc.eq(dq), writer.desc.eq(dq),
            arith.add_sums.eq(add.sums), arith.add_valid.eq(add.sum_valid),
            add.bcast.eq(bcast), arith.desc.eq(dq), arith.mul.eq(op.mul), arith.prelu.eq(op.prelu),
            arith.bcast.eq(bcast), arith.act_data.eq(self.act_r.data), arith.w_data.eq(self.w_r.data),
            arith.sums.eq(pool.sums), arith.sum_valid.eq(pool.sum_valid & op.mean),
            au.width.eq(Mux(op.copy, d.out_w, d.in_w)), au.tiles.eq(Mux(op.copy, d.out_ct, d.in_ct)),
            au.base.eq(Mux(op.copy, out_addr, in_addr)),
            add.act_data.eq(self.act_r.data), add.add_l.eq(dec.add_l), add.add_r.eq(dec.add_r),
            *([add.act_data2.eq(self.act_r2.data), add.dual.eq(dual), arith.act_data2.eq(self.act_r2.data),
               arith.dual.eq(dual)] if cfg.act_read_ports == 2 else []),
            lut.param_addr.eq(d.param_addr), lut.w_data.eq(self.w_r.data), lut.act_data.eq(self.act_r.data),
            rsz.tap.eq(au.p3), rsz.act_data.eq(self.act_r.data), writer.resize.eq(rsz.out),
            pool.tap.eq(au.p3), pool.act_data.eq(self.act_r.data), pool.max.eq(op.max),
            pool.act_min.eq(dq.act_min), pool.act_max.eq(dq.act_max),
            copy.word.eq(au.p3), copy.act_data.eq(self.act_r.data), copy.enable.eq(op.copy),
            copy.copy_r.eq(dec.copy_r), copy.copy_sh.eq(dec.copy_sh),
            writer.lut.eq(lut.out), writer.pool.eq(pool.out), pool.mean.eq(op.mean),
            writer.copy.eq(copy.out), writer.arith.eq(arith.out),
            self.act_w.addr.eq(writer.act_w.addr), self.act_w.data.eq(writer.act_w.data),
            self.act_w.en.eq(writer.act_w.en), self.mac_active.eq(add.mac_active | arith.mac_active),
        ]

        # MEAN walks one window of the whole input per channel tile, as a global pool would. The walk's
        # descriptor is registered (`desc` is stable from `start`; the walk first reads it for `first_empty`
        # the cycle after, at the end of SETUP for `init`), so the opcode's select does not sit in front of the
        # window-bound arithmetic of every step.
        assert self.SETUP_CYCLES >= 2
        walk_desc = Signal(descriptor_layout())
        m.d.comb += walker.desc.eq(walk_desc)
        m.d.sync += walk_desc.eq(d)
        with m.If(op.mean):
            m.d.sync += [walk_desc.kernel_h.eq(d.in_h[:8]), walk_desc.kernel_w.eq(d.in_w[:8]),
                         walk_desc.stride_h.eq(1), walk_desc.stride_w.eq(1), walk_desc.pad_top.eq(0),
                         walk_desc.pad_bottom.eq(0), walk_desc.pad_left.eq(0), walk_desc.pad_right.eq(0)]

        # Pools (and MEAN) and RESIZE both take their taps from the address unit's p3: each sees only its own.
        m.d.comb += [pool.tap.valid.eq(au.p3.valid & op.pool), rsz.tap.valid.eq(au.p3.valid & op.resize)]

        # Weight read port: the LUT's table load or PRELU's alphas (each drives 0 when idle), or RESIZE's table
        # entries.
        rs_wen = Signal()
        rs_waddr = Signal.like(self.w_r.addr)
        with m.If(op.resize):
            m.d.comb += [self.w_r.en.eq(rs_wen), self.w_r.addr.eq(rs_waddr)]
        with m.Else():
            m.d.comb += [self.w_r.en.eq(lut.w_r.en | arith.w_r.en), self.w_r.addr.eq(lut.w_r.addr | arith.w_r.addr)]

        # Read port: pools, COPY and RESIZE read from the address unit, ADD, MUL, PRELU and LUT directly.
        lin_ren = Signal()
        lin_raddr = Signal(abits)
        with m.If(op.pool | op.resize):
            m.d.comb += [self.act_r.addr.eq(au.p2.addr), self.act_r.en.eq(au.p2.valid)]
        with m.Elif(op.copy):
            m.d.comb += [self.act_r.addr.eq(au.p2.tag.raddr), self.act_r.en.eq(au.p2.valid & au.p2.tag.ren)]
        with m.Else():
            m.d.comb += [self.act_r.addr.eq(lin_raddr), self.act_r.en.eq(lin_ren)]

        # The walks: every word of the output (ADD, LUT, FILL) and the input pixels x output words of a pixel
        # (COPY); the pools' walk is `walker`.
        lw = Walk("lw", [d.out_h, d.out_w, d.out_ct])
        lw_i = Signal(abits)
        # Read addresses as registers, not base + offset adders on the way into the SRAM's address (an FPGA's
        # deepest path): `rd1` is in_addr + lw_i, kept with lw_i; `rd2` input 2's word of the same output word,
        # advanced with the walk (the next word's; the channel tile's of a 1x1xC input, which restarts with
        # the pixel; the one word of a 1x1x1 input; ZPAD2's own words, past its zero-point tiles).
        rd1 = Signal(abits)
        rd2 = Signal(abits)
        add_phase = Signal()
        cw = Walk("cw", [dec.copy_h, dec.copy_w, dec.copy_words])
        c_row = Signal(32)                                     # source word offset of the box row's first pixel
        c_pix = Signal(32)                                     # ... of this pixel's first word
        c_dy = Signal(16)                                      # destination row and column of this pixel
        c_dx = Signal(16)
        c_hi = Signal(signed(18))                              # lanes < c_hi of this output word are copied

        rs = self._resize_regs(d)                              # RESIZE's walk and the entries of (y, x)
        rw = rs.rw
        state = Signal(_S)
        err = Signal()
        setup = Signal(range(self.SETUP_CYCLES))
        # The refusal checks, registered: `desc` is stable from `start` and they are read at SETUP's last cycle,
        # so the descriptor's comparisons and the pool walk's first-window bounds end at a register instead of
        # running on into the state register (an FPGA's deepest path).
        refuse = Signal()
        m.d.sync += refuse.eq(dec.bad | (op.pool & walker.first_empty))
        with m.If(state == _S.IDLE):
            with m.If(self.start):
                m.d.sync += [setup.eq(0), err.eq(0), state.eq(_S.SETUP)]
        with m.Elif(state == _S.SETUP):
            m.d.sync += setup.eq(setup + 1)
            with m.If(setup == self.SETUP_CYCLES - 1):
                lw.reset(m)
                cw.reset(m)
                m.d.comb += [walker.init.eq(1), lut.init.eq(1), writer.init.eq(1), arith.alpha_init.eq(1)]
                m.d.sync += [lw_i.eq(0), rd1.eq(in_addr), rd2.eq(in2_addr), add_phase.eq(0), c_row.eq(dec.src_base),
                             c_pix.eq(dec.src_base),
                             c_dy.eq(d.copy_y), c_dx.eq(d.copy_x), c_hi.eq(dec.copy_r + dec.copy_c)]
                rw.reset(m)
                m.d.sync += rs.tap.eq(0)
                with m.If(refuse):
                    m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
                with m.Elif(op.resize):
                    m.d.sync += state.eq(_S.RS_ROW)
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
            # A word reads input 1, then input 2 the next cycle; a ZPAD2 word past the second input's tiles
            # ("solo") only input 1; a DUAL2 word both at once, input 2 on the second read port. A broadcast
            # second input: the channel tile's word (1x1xC) or the one word (1x1x1); a ZPAD2 one its own words
            # in order.
            solo = Signal()
            dual = dual if cfg.act_read_ports == 2 else Const(0, 1)
            m.d.comb += solo.eq(zpad & (lw.ctr[2] >= d.in2_ct))
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(Mux(add_phase, rd2, rd1)),
                         add.issue.eq(op.add), add.phase.eq(add_phase), add.solo.eq(solo), arith.issue.eq(op.mul),
                         arith.phase.eq(add_phase)]
            if cfg.act_read_ports == 2:
                m.d.comb += [self.act_r2.addr.eq(rd2), self.act_r2.en.eq(dual & ~solo)]
            m.d.sync += add_phase.eq(~add_phase & ~solo & ~dual)
            with m.If(add_phase | solo | dual):
                m.d.comb += writer.inc.eq(1)
                m.d.sync += [lw_i.eq(lw_i + 1), rd1.eq(rd1 + 1)]
                # Input 2's next word: a 1x1x1 input's stays; a 1x1xC input's restarts with each pixel.
                with m.If(zpad):
                    with m.If(~solo):
                        m.d.sync += rd2.eq(rd2 + 1)
                with m.Elif(in2_full):
                    m.d.sync += rd2.eq(rd2 + 1)
                with m.Elif(~bcast):
                    m.d.sync += rd2.eq(Mux(lw.at_end[2], in2_addr, rd2 + 1))
                lw.step(m)
                with m.If(lw.last):
                    m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.LUT_LOAD):
            m.d.comb += lut.load.eq(1)
            with m.If(lut.load_last):
                m.d.sync += state.eq(_S.LUT)

        with m.Elif(state == _S.LUT):
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(rd1), writer.inc.eq(1), lut.lookup.eq(1)]
            m.d.sync += [lw_i.eq(lw_i + 1), rd1.eq(rd1 + 1)]
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.PRELU_LOAD):
            # One alpha row (channel tile) a cycle.
            m.d.comb += arith.alpha_load.eq(1)
            m.d.sync += lw_i.eq(lw_i + 1)
            with m.If(lw_i == d.out_ct - 1):
                m.d.sync += [lw_i.eq(0), rd1.eq(in_addr), state.eq(_S.PRELU)]

        with m.Elif(state == _S.PRELU):
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(rd1), writer.inc.eq(1), arith.issue.eq(1),
                         arith.tile.eq(lw.ctr[2])]
            m.d.sync += [lw_i.eq(lw_i + 1), rd1.eq(rd1 + 1)]
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.FILL):
            m.d.comb += [writer.inc.eq(1), writer.fill.eq(1)]
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.COPY)

        with m.Elif(state == _S.COPY):
            self._copy_step(m, state, cw, dec, d, writer, au, in_addr,
                            SimpleNamespace(row=c_row, pix=c_pix, dy=c_dy, dx=c_dx, hi=c_hi))

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

        # RESIZE: the row's and the column's table entries, then the 4 taps of each output word.
        with m.Elif(state == _S.RS_ROW):
            m.d.comb += [rs_wen.eq(1), rs_waddr.eq(d.param_addr + (rw.ctr[0] >> rs.slot_bits))]
            m.d.sync += state.eq(_S.RS_COL)
        with m.Elif(state == _S.RS_COL):
            self._rs_col(m, state, err, rs, d, rs_wen, rs_waddr)
        with m.Elif(state == _S.RS_LAT):
            self._rs_lat(m, state, err, rs, d)
        with m.Elif(state == _S.RESIZE):
            self._rs_taps(m, state, rs, writer, au)

        with m.Elif(state == _S.DRAIN):
            with m.If(writer.idle):
                m.d.comb += [self.done.eq(1), self.error.eq(err)]
                m.d.sync += state.eq(_S.IDLE)

        m.d.comb += self.busy.eq(state != _S.IDLE)
        return m
