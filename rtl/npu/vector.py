"""NPU vector engine: the layer program's ADD, MAXPOOL, AVGPOOL, COPY and LUT descriptors, one word at a time."""

import enum

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from stackcam.quant.program import FILL, OPCODES
from stackcam.quant.timing import (
    VECTOR_DRAIN_CYCLES,
    VECTOR_SETUP_CYCLES,
    lut_row_bytes,
    vector_cycles,
)
from stackcam.rtl.requant import RequantUnit

from .ports import addr_bits, engine_signature

__all__ = ["NPUVectorEngine"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
# LUT table rows: at most LUT_ROW_BYTES bytes per row (one row loaded per cycle; `quant.timing.lut_row_bytes`).
# Narrow rows keep the lanes' lookups cheap: each lane reads a row through its own copy of the table (on an FPGA,
# distributed RAM) and then picks a byte with a LUT_ROW_BYTES-way multiplexer, where a table in flip-flops costs
# a 256-way one per lane. Weight words and rows are powers of two, so a weight word holds whole rows.


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


class _Walk:
    """Nested counters, outermost first, each running 0 .. limit - 1; `step` advances the innermost."""

    def __init__(self, name, limits, width=16):
        self.limits = limits
        self.ctr = [Signal(width, name=f"{name}_{i}") for i in range(len(limits))]
        self.at_end = [c == lim - 1 for c, lim in zip(self.ctr, limits)]
        self.last = Cat(*self.at_end).all()

    def reset(self, m):
        m.d.sync += [c.eq(0) for c in self.ctr]

    def step(self, m, level=None):
        level = len(self.ctr) - 1 if level is None else level
        if level == 0:                      # the walk ends here: the caller leaves the state on `last`
            m.d.sync += self.ctr[0].eq(self.ctr[0] + 1)
            return
        with m.If(~self.at_end[level]):
            m.d.sync += self.ctr[level].eq(self.ctr[level] + 1)
        with m.Else():
            m.d.sync += self.ctr[level].eq(0)
            self.step(m, level - 1)


def _bounds(origin, k, size):
    """(lo, hi): the taps t in lo <= t < hi of a k-tap window starting at `origin` that fall in 0 .. size - 1."""
    lo = Mux(origin < 0, -origin, 0)
    inside = size - origin
    hi = Mux(inside < k, inside, k)
    return lo, hi


class NPUVectorEngine(wiring.Component):
    """The element-wise and window operators of the layer program, on `array_cols` int8 lanes in parallel.

    On `start` the engine runs the descriptor `desc` (stable until `done`) and owns the activation read/write
    ports and the weight read port until it pulses `done`, in the cycle its last write is on the write port.
    Semantics are `quant.program`'s, bit for bit (the golden `_step`); `error` pulses with `done` for an opcode
    other than ADD/MAXPOOL/AVGPOOL/COPY/LUT, zero sizes, ADD shifts outside -31..31 (input shifts may be
    positive: they fold into the left shift), a zero pool kernel or stride, a pool window wholly in the padding
    (detected when the walk reaches it: the words before it are written) or a LUT table shorter than 256 bytes.

    Every operator writes its output in address order, one whole word (`cols` lanes) at a time, except COPY,
    which writes with lane enables. Padding lanes (channel >= C in the last tile) of ADD, pool, LUT and FILL
    outputs are written with `out_zp` whatever the input's padding lanes hold, as `write_tensor` does.

    Throughput: the SRAM read latency of one cycle is pipelined everywhere, with no bubbles between words,
    pixels or tiles. `cycles(config, desc)` gives the exact count from `start` to `done` (both included) of a
    valid descriptor: SETUP_CYCLES + 1, the work below, and the pipeline drain (DRAIN_CYCLES).

    - ADD: 2 cycles per output word (two reads on one read port). Each lane has one input rescaler, used by the
      two inputs on alternate cycles ((x - zp) is 9 bits, so the Q31 product is a 9 x 32 multiply shifted by
      the left shift); a `RequantUnit` of cols / 2 lanes does the output rescale, zero point and clamp of the
      low lanes and then the high lanes of each word. Multipliers: cols of 9 x 32 and cols / 2 of 32 x 32.
    - MAXPOOL / AVGPOOL: 1 cycle per in-bounds tap, i.e. sum over output words of the taps inside the input
      (a 2x2/s2 pool is 4 cycles per word, a 7x7 global pool 49). Out-of-bounds taps cost nothing.
      AVGPOOL divides exactly with an 8-stage pipelined restoring divider per lane: the quotient
      (|sum| + count // 2) // count is below 2^8 because |sum| <= 128 * count; the sign is applied after,
      which is TFLite's round-half-away-from-zero. MAXPOOL goes through the same pipe with count = 1.
    - COPY: 1 cycle per output word written: with FILL, out_h*out_w*out_ct cycles of fill, then
      in_h*in_w*ceil((copy_c % cols + in_c) / cols) cycles of copy. A channel offset that is not a multiple of
      `cols` rotates lanes: output word j of a pixel is lanes of input words j-1 and j, written with byte enables.
      Padding lanes of the output are written by FILL only (the compiler gives the first COPY of a tensor FILL).
    - LUT: 256 / `lut_row_bytes(config)` cycles (32 for weight words of 8 bytes or more) to load the table
      from weight space, a row of up to 8 bytes per cycle, then 1 cycle per word: each lane reads its own copy
      of the table (asynchronous read) and picks the byte.

    No back-pressure: the SRAM ports never stall, so every count above is exact. `mac_active` is high in the
    cycles ADD's input multipliers work.

    In place (ADD, LUT with out_addr == in_addr or in2_addr): reads run ahead of writes, and each output word is
    written after the input words at its address were read.
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
        cols, wb = cfg.array_cols, cfg.weight_word_bytes
        abits = addr_bits(cfg.act_words)
        d = self.desc

        is_add = Signal()
        is_max = Signal()
        is_avg = Signal()
        is_copy = Signal()
        is_lut = Signal()
        is_pool = Signal()
        m.d.comb += [
            is_add.eq(d.opcode == OPCODES["ADD"]), is_max.eq(d.opcode == OPCODES["MAXPOOL"]),
            is_avg.eq(d.opcode == OPCODES["AVGPOOL"]), is_copy.eq(d.opcode == OPCODES["COPY"]),
            is_lut.eq(d.opcode == OPCODES["LUT"]), is_pool.eq(is_max | is_avg),
        ]

        def lane(value, c):
            return value.word_select(c, 8).as_signed()

        # --- values derived from the descriptor (stable from start to done), registered during setup ----------
        in_addr = d.in_addr[:abits]
        in2_addr = d.in2_addr[:abits]
        out_addr = d.out_addr[:abits]
        # ADD: total left shift of each input (left_shift plus a positive input shift: the reference shifts the
        # int64 value, then MBQM wraps it to int32; 32 or more leaves 0) and its rounding right shift.
        add_l = [Signal(6, name="add_l1"), Signal(6, name="add_l2")]
        add_r = [Signal(5, name="add_r1"), Signal(5, name="add_r2")]
        for lsig, rsig, shift in zip(add_l, add_r, (d.in_shift, d.in2_shift)):
            total = d.left_shift + Mux(shift > 0, shift.as_unsigned()[:7], 0)
            m.d.sync += [lsig.eq(Mux(total > 32, 32, total)), rsig.eq(Mux(shift < 0, -shift, 0)[:5])]
        # COPY: destination tile and lane of channel copy_c, and output words per pixel.
        copy_r = Signal(range(cols), name="copy_r")
        copy_ot0 = Signal(16, name="copy_ot0")
        copy_sh = Signal(range(cols + 1), name="copy_sh")      # lane rotation: cols - copy_r
        lane_bits = cols.bit_length() - 1    # cols is a power of two (it divides the power-of-two bank size)
        m.d.sync += [copy_r.eq(d.copy_c[:lane_bits]), copy_ot0.eq(d.copy_c >> lane_bits)]
        m.d.sync += copy_sh.eq(cols - copy_r)
        last_lane = Signal(signed(18))          # lane of the input's last channel in its tile
        m.d.sync += last_lane.eq(d.in_c - 1 - (d.in_ct - 1) * cols)
        copy_words = Signal(17)
        m.d.sync += copy_words.eq(d.in_ct + (copy_r + last_lane >= cols))
        lut_words = -(-256 // wb)                # weight words holding the table
        lut_b = lut_row_bytes(cfg)                 # table row bytes
        lut_rows = 256 // lut_b
        rows_per_word = wb // lut_b

        bad = Signal()
        m.d.comb += bad.eq(
            ~(is_add | is_pool | is_copy | is_lut)
            | (d.out_h == 0) | (d.out_w == 0) | (d.out_ct == 0) | (d.in_h == 0) | (d.in_w == 0) | (d.in_ct == 0)
            | (is_add & ((d.in_shift < -31) | (d.in2_shift < -31) | (d.out_shift < -31) | (d.out_shift > 31)))
            | (is_pool & ((d.kernel_h == 0) | (d.kernel_w == 0) | (d.stride_h == 0) | (d.stride_w == 0)))
            | (is_lut & (d.param_words < lut_words)))

        # --- write side -------------------------------------------------------------------------------------
        # Linear writer (ADD, pools, LUT, FILL): words in address order from out_addr, padding lanes = out_zp.
        lin_v = Signal()
        lin_data = Signal(8 * cols)
        w_count = Signal(abits)
        w_ct = Signal(16)
        w_rem = Signal(signed(18))              # channels from the start of the word being written to out_c
        # COPY writer: explicit address and lane enables.
        cw_v = Signal()
        cw_addr = Signal(abits)
        cw_data = Signal(8 * cols)
        cw_mask = Signal(cols)
        w_valid = Signal()
        m.d.sync += [w_valid.eq(0), self.act_w.en.eq(0)]
        with m.If(lin_v):
            m.d.sync += [
                w_valid.eq(1), self.act_w.en.eq((1 << cols) - 1), self.act_w.addr.eq(out_addr + w_count),
                self.act_w.data.eq(Cat(Mux(c < w_rem, lane(lin_data, c), d.out_zp) for c in range(cols))),
                w_count.eq(w_count + 1),
            ]
            with m.If(w_ct == d.out_ct - 1):
                m.d.sync += [w_ct.eq(0), w_rem.eq(d.out_c)]
            with m.Else():
                m.d.sync += [w_ct.eq(w_ct + 1), w_rem.eq(w_rem - cols)]
        with m.Elif(cw_v):
            m.d.sync += [w_valid.eq(1), self.act_w.en.eq(cw_mask), self.act_w.addr.eq(cw_addr),
                         self.act_w.data.eq(cw_data)]

        # Words issued and not yet written: done waits for them.
        pending = Signal(8)
        inc = Signal()
        m.d.sync += pending.eq(pending + inc - w_valid)

        # --- generators -----------------------------------------------------------------------------------
        lw = _Walk("lw", [d.out_h, d.out_w, d.out_ct])         # ADD, LUT, FILL: every word of the output
        lw_i = Signal(abits)
        add_phase = Signal()
        lut_k = Signal(range(lut_rows + 1))
        cw = _Walk("cw", [d.in_h, d.in_w, copy_words])        # COPY: input pixels x output words of a pixel
        c_ri = Signal(abits)                                   # next input word to read
        c_hi = Signal(signed(18))                              # lanes < c_hi of this output word are copied
        # Pools: output pixel, channel tile and window tap; window origin and its in-bounds tap range.
        po_y, po_x, po_ct = Signal(16), Signal(16), Signal(16)
        po_ky, po_kx = Signal(8), Signal(8)
        po_iy0, po_ix0 = Signal(signed(26)), Signal(signed(26))
        ky_lo, ky_hi, kx_lo, kx_hi = (Signal(signed(27), name=n) for n in ("ky_lo", "ky_hi", "kx_lo", "kx_hi"))
        kx_lo0, kx_hi0 = Signal(signed(27)), Signal(signed(27))   # of the first column of windows

        state = Signal(_S)
        err = Signal()
        setup = Signal(range(self.SETUP_CYCLES))

        # Read requests of ADD/LUT (straight to the port) and tags of the data they return.
        lin_ren = Signal()
        lin_raddr = Signal(abits)
        add_dv = Signal()
        add_dsel = Signal()
        lut_dv = Signal()
        lut_wv = Signal()
        lut_wk = Signal(range(lut_rows + 1))
        fill_v = Signal()
        m.d.sync += [add_dv.eq(0), lut_dv.eq(0), lut_wv.eq(0), fill_v.eq(0)]

        # Address unit of pools (reads) and COPY (writes): base + (row * W + col) * T + tile, two stages.
        tag_layout = data.StructLayout({
            "first": 1, "last": 1, "count": 16,                   # pools
            "ren": 1, "raddr": abits, "hi": signed(18), "j0": 1,  # COPY
        })
        ag_v = Signal()
        ag_row, ag_col, ag_tile = Signal(16), Signal(16), Signal(17)
        ag_tag = Signal(tag_layout)
        ag_w = Mux(is_copy, d.out_w, d.in_w)
        ag_t = Mux(is_copy, d.out_ct, d.in_ct)
        ag_base = Mux(is_copy, out_addr, in_addr)
        p1_v, p2_v, p3_v = Signal(), Signal(), Signal()
        p1_lin, p2_addr, p3_addr = Signal(abits), Signal(abits), Signal(abits)
        p1_tile = Signal(17)
        p1_tag, p2_tag, p3_tag = Signal(tag_layout), Signal(tag_layout), Signal(tag_layout)
        m.d.sync += [
            p1_v.eq(ag_v), p1_lin.eq(ag_row * ag_w + ag_col), p1_tile.eq(ag_tile), p1_tag.eq(ag_tag),
            p2_v.eq(p1_v), p2_addr.eq(p1_lin * ag_t + p1_tile + ag_base), p2_tag.eq(p1_tag),
            p3_v.eq(p2_v), p3_addr.eq(p2_addr), p3_tag.eq(p2_tag),
        ]

        # Read port: pools and COPY read from the address unit, ADD and LUT directly.
        with m.If(is_pool):
            m.d.comb += [self.act_r.addr.eq(p2_addr), self.act_r.en.eq(p2_v)]
        with m.Elif(is_copy):
            m.d.comb += [self.act_r.addr.eq(p2_tag.raddr), self.act_r.en.eq(p2_v & p2_tag.ren)]
        with m.Else():
            m.d.comb += [self.act_r.addr.eq(lin_raddr), self.act_r.en.eq(lin_ren)]

        # Pool window bounds of the next column / row of windows and of the first column.
        nx_ix0 = po_ix0 + d.stride_w
        ny_iy0 = po_iy0 + d.stride_h
        nkx_lo, nkx_hi = _bounds(nx_ix0, d.kernel_w, d.in_w)
        nky_lo, nky_hi = _bounds(ny_iy0, d.kernel_h, d.in_h)
        first_iy0 = -d.pad_top
        first_ix0 = -d.pad_left
        fky_lo, fky_hi = _bounds(first_iy0, d.kernel_h, d.in_h)
        fkx_lo, fkx_hi = _bounds(first_ix0, d.kernel_w, d.in_w)
        po_count = Signal(16)
        m.d.comb += po_count.eq((ky_hi - ky_lo)[:8] * (kx_hi - kx_lo)[:8])

        with m.If(state == _S.IDLE):
            with m.If(self.start):
                m.d.sync += [setup.eq(0), err.eq(0), state.eq(_S.SETUP)]
        with m.Elif(state == _S.SETUP):
            m.d.sync += setup.eq(setup + 1)
            with m.If(setup == self.SETUP_CYCLES - 1):
                lw.reset(m)
                cw.reset(m)
                m.d.sync += [
                    lw_i.eq(0), add_phase.eq(0), lut_k.eq(0), c_ri.eq(0), c_hi.eq(copy_r + d.in_c),
                    w_count.eq(0), w_ct.eq(0), w_rem.eq(d.out_c),
                    po_y.eq(0), po_x.eq(0), po_ct.eq(0), po_iy0.eq(first_iy0), po_ix0.eq(first_ix0),
                    ky_lo.eq(fky_lo), ky_hi.eq(fky_hi), kx_lo.eq(fkx_lo), kx_hi.eq(fkx_hi),
                    kx_lo0.eq(fkx_lo), kx_hi0.eq(fkx_hi), po_ky.eq(fky_lo), po_kx.eq(fkx_lo),
                ]
                with m.If(bad | (is_pool & ((fky_lo >= fky_hi) | (fkx_lo >= fkx_hi)))):
                    m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
                with m.Elif(is_add):
                    m.d.sync += state.eq(_S.ADD)
                with m.Elif(is_lut):
                    m.d.sync += state.eq(_S.LUT_LOAD)
                with m.Elif(is_pool):
                    m.d.sync += state.eq(_S.POOL)
                with m.Elif((d.flags & FILL) != 0):
                    m.d.sync += state.eq(_S.FILL)
                with m.Else():
                    m.d.sync += state.eq(_S.COPY)

        with m.Elif(state == _S.ADD):
            # Even cycles read input 1, odd cycles input 2 of the same word.
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(Mux(add_phase, in2_addr, in_addr) + lw_i)]
            m.d.sync += [add_dv.eq(1), add_dsel.eq(add_phase), add_phase.eq(~add_phase)]
            with m.If(add_phase):
                m.d.comb += inc.eq(1)
                m.d.sync += lw_i.eq(lw_i + 1)
                lw.step(m)
                with m.If(lw.last):
                    m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.LUT_LOAD):
            m.d.comb += [self.w_r.en.eq(1), self.w_r.addr.eq(d.param_addr + lut_k // rows_per_word)]
            m.d.sync += [lut_wv.eq(1), lut_wk.eq(lut_k), lut_k.eq(lut_k + 1)]
            with m.If(lut_k == lut_rows - 1):
                m.d.sync += state.eq(_S.LUT)

        with m.Elif(state == _S.LUT):
            m.d.comb += [lin_ren.eq(1), lin_raddr.eq(in_addr + lw_i), inc.eq(1)]
            m.d.sync += [lut_dv.eq(1), lw_i.eq(lw_i + 1)]
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.FILL):
            m.d.comb += inc.eq(1)
            m.d.sync += fill_v.eq(1)
            lw.step(m)
            with m.If(lw.last):
                m.d.sync += state.eq(_S.COPY)

        with m.Elif(state == _S.COPY):
            j = cw.ctr[2]
            m.d.comb += [
                inc.eq(1), ag_v.eq(1),
                ag_row.eq(cw.ctr[0] + d.copy_y), ag_col.eq(cw.ctr[1] + d.copy_x), ag_tile.eq(copy_ot0 + j),
                ag_tag.ren.eq(j < d.in_ct), ag_tag.raddr.eq(in_addr + c_ri), ag_tag.hi.eq(c_hi),
                ag_tag.j0.eq(j == 0),
            ]
            with m.If(j < d.in_ct):
                m.d.sync += c_ri.eq(c_ri + 1)
            with m.If(cw.at_end[2]):
                m.d.sync += c_hi.eq(copy_r + d.in_c)
            with m.Else():
                m.d.sync += c_hi.eq(c_hi - cols)
            cw.step(m)
            with m.If(cw.last):
                m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.POOL):
            m.d.comb += [
                ag_v.eq(1), ag_row.eq((po_iy0 + po_ky)[:16]), ag_col.eq((po_ix0 + po_kx)[:16]),
                ag_tile.eq(po_ct),
                ag_tag.first.eq((po_ky == ky_lo[:8]) & (po_kx == kx_lo[:8])),
                ag_tag.last.eq((po_ky == (ky_hi - 1)[:8]) & (po_kx == (kx_hi - 1)[:8])),
                ag_tag.count.eq(Mux(is_avg, po_count, 1)),
            ]
            with m.If(po_kx != (kx_hi - 1)[:8]):
                m.d.sync += po_kx.eq(po_kx + 1)
            with m.Elif(po_ky != (ky_hi - 1)[:8]):
                m.d.sync += [po_ky.eq(po_ky + 1), po_kx.eq(kx_lo)]
            with m.Else():
                m.d.comb += inc.eq(1)
                with m.If(po_ct != d.out_ct - 1):
                    m.d.sync += [po_ct.eq(po_ct + 1), po_ky.eq(ky_lo), po_kx.eq(kx_lo)]
                with m.Elif(po_x != d.out_w - 1):
                    m.d.sync += [po_ct.eq(0), po_x.eq(po_x + 1), po_ix0.eq(nx_ix0), kx_lo.eq(nkx_lo),
                                 kx_hi.eq(nkx_hi), po_ky.eq(ky_lo), po_kx.eq(nkx_lo)]
                    with m.If(nkx_lo >= nkx_hi):
                        m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
                with m.Elif(po_y != d.out_h - 1):
                    m.d.sync += [po_ct.eq(0), po_x.eq(0), po_y.eq(po_y + 1), po_iy0.eq(ny_iy0),
                                 po_ix0.eq(first_ix0), ky_lo.eq(nky_lo), ky_hi.eq(nky_hi),
                                 kx_lo.eq(kx_lo0), kx_hi.eq(kx_hi0), po_ky.eq(nky_lo), po_kx.eq(kx_lo0)]
                    with m.If(nky_lo >= nky_hi):
                        m.d.sync += [err.eq(1), state.eq(_S.DRAIN)]
                with m.Else():
                    m.d.sync += state.eq(_S.DRAIN)

        with m.Elif(state == _S.DRAIN):
            with m.If(pending == w_valid):
                m.d.comb += [self.done.eq(1), self.error.eq(err)]
                m.d.sync += state.eq(_S.IDLE)

        m.d.comb += self.busy.eq(state != _S.IDLE)

        # --- ADD: per lane one input rescaler shared by both inputs (alternate cycles), then RequantUnit ------
        # MBQM(wrap32((x - zp) << L), mult, shift) with L the total left shift: wrap32(dx << L) = dw << L where
        # dw is dx's low 32 - L bits sign-extended (|dx| <= 255 needs 9 bits, so dw = dx for L <= 23), and the
        # 64-bit SaturatingRoundingDoublingHighMul product is (dw * mult) << L: a 9 x 32 multiply.
        a1_v, a2_v, a3_v, a4_v, a5_v, a6_v = (Signal(name=f"add_v{i}") for i in range(1, 7))
        a1_sel, a2_sel, a3_sel, a4_sel = (Signal(name=f"add_sel{i}") for i in range(1, 5))
        m.d.sync += [a1_v.eq(add_dv), a1_sel.eq(add_dsel), a2_v.eq(a1_v), a2_sel.eq(a1_sel),
                     a3_v.eq(a2_v), a3_sel.eq(a2_sel), a4_v.eq(a3_v), a4_sel.eq(a3_sel),
                     a5_v.eq(a4_v & a4_sel), a6_v.eq(a5_v)]
        m.d.comb += self.mac_active.eq(a1_v)
        # A word's sums come every other cycle, so a half-width RequantUnit takes the low lanes, then the high.
        half = cols // 2
        m.submodules.requant = requant = RequantUnit(half)
        m.d.comb += [requant.valid.eq(a5_v | a6_v), requant.tag.eq(a6_v)]
        sums = []
        l_in = Mux(add_dsel, add_l[1], add_l[0])
        zp_in = Mux(add_dsel, d.in2_zp, d.in_zp)
        mult2 = Mux(a1_sel, d.in2_mult, d.in_mult)
        l3 = Mux(a2_sel, add_l[1], add_l[0])[:5]      # L = 32 leaves dw = 0, so the shift does not matter
        r4 = Mux(a3_sel, add_r[1], add_r[0])
        for c in range(cols):
            dx = Signal(signed(9), name=f"add_dx{c}")
            dw = Signal(signed(9), name=f"add_dw{c}")
            sat_a = Signal(name=f"add_sat_a{c}")
            m.d.comb += dx.eq(lane(self.act_r.data, c) - zp_in)
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
                m.d.sync += s5_sum.eq((hold + s4_r)[:32].as_signed())
            sums.append(s5_sum)
        for c in range(half):
            p = requant.params[c]
            m.d.comb += [requant.acc[c].eq(Mux(a6_v, sums[half + c], sums[c])), p.bias.eq(0),
                         p.multiplier.eq(d.out_mult), p.shift.eq(d.out_shift[:6].as_signed()),
                         p.zero_point.eq(d.out_zp), p.act_min.eq(d.act_min), p.act_max.eq(d.act_max)]
        add_low = Signal(8 * half)
        add_ov = Signal()
        with m.If(requant.out_valid & ~requant.out_tag):
            m.d.sync += add_low.eq(requant.out.as_value())
        m.d.comb += add_ov.eq(requant.out_valid & requant.out_tag)

        # --- LUT: the 256-byte table, rows of lut_b bytes: a copy per lane (one write, one asynchronous read
        # port each: on an FPGA, distributed RAM), all written alike -----------------------------------------
        row = self.w_r.data.word_select(lut_wk % rows_per_word, 8 * lut_b)
        lut_ov = Signal()
        lut_out = Signal(8 * cols)
        picked = []
        byte_bits = (lut_b - 1).bit_length()
        for c in range(cols):
            table = Memory(shape=unsigned(8 * lut_b), depth=lut_rows, init=[], attrs={"ram_style": "distributed"})
            m.submodules[f"lut_table{c}"] = table
            tw = table.write_port()
            m.d.comb += [tw.en.eq(lut_wv), tw.addr.eq(lut_wk), tw.data.eq(row)]
            index = self.act_r.data.word_select(c, 8) ^ 0x80
            rp = table.read_port(domain="comb")
            m.d.comb += rp.addr.eq(index >> byte_bits)
            picked.append(rp.data.word_select(index[:byte_bits], 8) if byte_bits else rp.data)
        m.d.sync += [lut_ov.eq(lut_dv), lut_out.eq(Cat(*picked))]

        # --- pools: running max / sum per lane, then the divider (count 1 for MAXPOOL) and the clamp -------
        div_stages = 8
        dv = [Signal(name=f"div_v{i}") for i in range(div_stages + 1)]
        dn = [Signal(16, name=f"div_n{i}") for i in range(div_stages + 1)]
        m.d.sync += [dv[0].eq(p3_v & p3_tag.last), dn[0].eq(p3_tag.count)]
        for i in range(div_stages):
            m.d.sync += [dv[i + 1].eq(dv[i]), dn[i + 1].eq(dn[i])]
        pool_ov = Signal()
        pool_out = Signal(8 * cols)
        m.d.sync += pool_ov.eq(dv[div_stages])
        for c in range(cols):
            x = lane(self.act_r.data, c)
            acc = Signal(signed(24), name=f"pool_acc{c}")
            v = Signal(signed(24), name=f"pool_v{c}")
            m.d.comb += v.eq(Mux(p3_tag.first, x, Mux(is_max, Mux(x > acc, x, acc), acc + x)))
            with m.If(p3_v):
                m.d.sync += acc.eq(v)
            num = [Signal(24, name=f"div_num{c}_{i}") for i in range(div_stages + 1)]
            quo = [Signal(8, name=f"div_q{c}_{i}") for i in range(div_stages + 1)]
            neg = [Signal(name=f"div_neg{c}_{i}") for i in range(div_stages + 1)]
            m.d.sync += [num[0].eq(Mux(v < 0, -v, v) + (p3_tag.count >> 1)), quo[0].eq(0), neg[0].eq(v < 0)]
            for i in range(div_stages):
                sub = dn[i] << (div_stages - 1 - i)
                ge = num[i] >= sub
                m.d.sync += [num[i + 1].eq(Mux(ge, num[i] - sub, num[i])), quo[i + 1].eq(Cat(ge, quo[i])),
                             neg[i + 1].eq(neg[i])]
            q = Signal(signed(10), name=f"pool_q{c}")
            m.d.comb += q.eq(Mux(neg[-1], -quo[-1], quo[-1]))
            m.d.sync += pool_out.word_select(c, 8).eq(
                Mux(q < d.act_min, d.act_min, Mux(q > d.act_max, d.act_max, q)))

        # --- COPY: output word j of a pixel is lanes cols - r .. 2 cols - r - 1 of (input word j-1, word j) --
        prev = Signal(8 * cols)
        with m.If(p3_v & p3_tag.ren):
            m.d.sync += prev.eq(self.act_r.data)
        m.d.comb += [
            cw_v.eq(p3_v & is_copy), cw_addr.eq(p3_addr),
            cw_data.eq(Cat(prev, self.act_r.data).bit_select(Cat(Const(0, 3), copy_sh), 8 * cols)),
            cw_mask.eq(Cat((((c >= copy_r) if c < cols - 1 else 1) | ~p3_tag.j0) & (c < p3_tag.hi)
                           for c in range(cols))),
        ]

        # --- linear writer input ---------------------------------------------------------------------------
        fill_word = Cat(d.fill for _ in range(cols))
        m.d.comb += lin_v.eq(add_ov | lut_ov | pool_ov | fill_v)
        with m.If(fill_v):
            m.d.comb += lin_data.eq(fill_word)
        with m.Elif(lut_ov):
            m.d.comb += lin_data.eq(lut_out)
        with m.Elif(pool_ov):
            m.d.comb += lin_data.eq(pool_out)
        with m.Else():
            m.d.comb += lin_data.eq(Cat(add_low, requant.out.as_value()))
        return m
