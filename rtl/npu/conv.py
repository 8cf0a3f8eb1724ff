"""The NPU's MAC-array engine: CONV (direct, and im2col over a pixel-packed input) and DWCONV descriptors."""

from math import gcd

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.utils import bits_for, ceil_log2

from stackcam.quant.program import FCSCALE, OPCODES, PACKED, PARAM_RECORD_BYTES

from ..mac_array import MACArray
from ..requant import RequantUnit
from .ports import addr_bits, engine_signature

__all__ = ["NPUConvEngine", "engine_cycles", "param_record_layout"]

# One channel's requantization parameters as the parameter buffer holds them (the 16-byte record of
# quant.program without its zero padding; TFLite shifts lie in -31..30, so 6 bits hold them).
param_record_layout = data.StructLayout({"bias": signed(32), "multiplier": signed(32), "shift": signed(6)})
_REC = param_record_layout.size

# im2col pixel buffer default: a 5x5 kernel on an RGB input (K = 75, BlazeFace's stem) in words of `cols` bytes.
_DEFAULT_IM2COL_BYTES = 5 * 5 * 3
# Depthwise: MAC-array rows used as accumulator sets (outputs open at once), and taps held in registers (3x3).
DEFAULT_DW_SETS = 3
DEFAULT_DW_TAPS = 9


def _lane(value, i, width=8):
    return value.word_select(i, width)


# Variable selections and shifts are built as explicit mux trees: a variable-offset `word_select` or shift of a
# wide value is one cell whose every output bit depends on every input bit, which makes Amaranth's netlist
# checks quadratic in the width (minutes for the imx500 weight word); a tree is also what the gates are.

def _mux_tree(options, sel):
    """options[sel] (the last option for sel past the end) as a binary tree of Mux on the bits of `sel`."""
    options = list(options)
    level = 0
    while len(options) > 1:
        bit = sel[level]
        options = [Mux(bit, options[i + 1], options[i]) if i + 1 < len(options) else options[i]
                   for i in range(0, len(options), 2)]
        level += 1
    return options[0]


def _words(value, width):
    return [value[i:i + width] for i in range(0, len(value), width)]


def _shift_bytes(value, amount, left):
    """`value` shifted by `amount` bytes (zeros in), the width kept: a log2-stage barrel shifter."""
    width = len(value)
    for i in range(len(amount)):
        step = 8 << i
        if step >= width:
            value = Mux(amount[i], Const(0, width), value)
            continue
        moved = Cat(Const(0, step), value[:width - step]) if left else Cat(value[step:], Const(0, step))
        value = Mux(amount[i], moved, value)
    return value


class NPUConvEngine(wiring.Component):
    """CONV (opcode 1, with or without the PACKED flag) and DWCONV (opcode 2) on the MAC array, by the rules of
    `quant.program`; ports are `rtl.npu.ports.engine_signature(config)`.

    Sequence of one descriptor (`start` with `desc` valid, `desc` stable until `done`):

    1. **Setup** (7 cycles; PACKED: ``14 + im2col_pixels`` plus four sequential divisions of
       ``addr_bits(act_words) + bits(cols) + 3`` cycles each): address strides and window origins from one
       shared multiplier (and divider), so the run loops only add.
    2. **Parameter load**: the layer's records (``param_words`` weight words at ``param_addr``) go into the
       parameter buffer, a Memory of ``ceil(max_channels / cols)`` words of ``cols`` records (one output
       word's channels), ``gcd(WB // 16, cols)`` records per cycle: one weight word per cycle while
       ``WB // 16 <= cols``, two cycles per word on imx500 (128 records per word), one record per two words
       when WB = 8: ``param_words`` times the cycles per word, plus 1.
    3. **Run**, output-stationary, output pixels in raster order. The issue stage S0 walks ``pixel > tile >
       ky > kx > ic`` and reads one activation word and one weight word per cycle, never stalling (direct
       CONV); S1 has the SRAM data and registers ``x - in_zp`` (0 for a tap in the padding, where the read is
       not even issued) and the weights; S2 presents them to the MAC array (`mac_active`); the tile's sums
       are in the accumulators at S4, where the back end takes them: parameter-buffer read (S4), the tile's
       records and the descriptor's zero point and clamps into `RequantUnit` (S5..S9), write of the tile's
       ``rows`` lanes at S10 (the pixel's last tile also writes ``out_zp`` into the word's lanes above it).
       Consecutive tiles follow each other with no bubble, so even a 1x1 conv with one input tile retires
       one tile per cycle: ``out_h*out_w*oc_tiles*tile_words`` run cycles, plus setup, load and the 10-cycle
       pipeline (`latency`).
    4. `done` pulses (`busy` falls after it) in the cycle the last output word's write is issued.

    `engine_cycles(config, desc)` gives the exact count from `start` to `done` for any accepted descriptor.

    **DWCONV** runs on the MAC array's multipliers: the activation word is broadcast down the array as for
    CONV, and rows 0 .. ``dw_sets - 1`` (NS, default 3) are accumulator *sets*, each holding one open output
    pixel of the current output row and multiplying the word by that output's tap; their registered products
    (`MACArray.products`) are summed lane by lane in NS x ``cols`` 32-bit accumulators (the array's own
    row sums are unused). Loop: channel tile > output row > input column (padded) > kernel row, one
    activation word per cycle, read once per (output row, column) instead of once per tap: an output opens
    at its first column and closes at its last, on the sets round robin. With ``kernel_w <= NS * stride_w``
    one pass covers the row, ``kernel_h * ((out_w - 1) * stride_w + kernel_w)`` cycles per row and channel
    tile (3x3 s1: about 3 cycles per output word instead of 9, s2: 6); otherwise passes of NS outputs step
    back to the next pass's first column (strips). The tile's taps sit in ``dw_taps`` (default 9) registers
    of ``cols`` bytes, loaded from the depthwise block at each channel tile (``tile_words`` cycles). A kernel
    with more taps falls back to one tap per cycle on set 0 (``kh*kw*out_h*out_w*out_ct`` cycles). A closed
    output's sums are requantized ``rows`` lanes per cycle over ``cols // rows`` cycles (each write fills one
    lane group of the output word); a close sooner than that after the previous one waits. `mac_active` is
    high in cycles where at least one set (or the array) takes a tap.

    **PACKED** (im2col): a gatherer copies window rows of the pixel-packed input into per-pixel im2col
    buffers (``im2col_words`` words each, prefilled with ``in_zp`` for taps outside the input). It works on
    groups of ``im2col_pixels`` (G) horizontally adjacent output pixels: their window rows overlap in the
    input row, which is contiguous in the packed words, so each read of a packed word is shifted into all G
    pixels' buffers at once. One cycle per (window row, packed word the group's row touches). Two sets of G
    buffers: the feeder runs ``oc_tiles * in_ct`` MAC-array words per pixel (like a 1x1 conv's input tiles)
    from one set while the gatherer fills the other. A 3x3 s2 RGB stem in 64-lane words (imx500) runs at
    about 1.27 cycles per output pixel for an ideal 1 (G = 1: 3.4; G = 8: 1.03).

    **Errors** (`error` with `done`, one cycle after `start`, nothing written): an opcode other than CONV and
    DWCONV; CONV with FCSCALE (FULLY_CONNECTED's float64 rescale is not implemented here yet); more output
    channels than the parameter buffer holds; a PACKED K above ``im2col_words`` words (default: 5x5 RGB);
    a zero loop bound.

    No back-pressure: the engine owns the SRAM ports from `start` to `done` and every stage advances every
    cycle; the only internal waits are the PACKED feeder waiting for a gathered group and the DWCONV issue
    waiting for a drain or a channel tile's taps.
    """

    def __init__(self, config, im2col_words=None, im2col_pixels=None, dw_sets=None,
                 dw_taps=DEFAULT_DW_TAPS):
        self.config = config
        self.rows, self.cols = config.array_rows, config.array_cols
        self.groups = self.cols // self.rows
        self.param_depth = -(-config.max_channels // self.cols)
        self.im2col_words = im2col_words or -(-_DEFAULT_IM2COL_BYTES // self.cols)
        self.im2col_pixels = im2col_pixels or config.im2col_pixels
        self.dw_sets = min(self.rows, dw_sets or DEFAULT_DW_SETS)
        self.dw_taps = dw_taps
        super().__init__(engine_signature(config))

    # Fixed pipeline depth from the issue of a tile's last tap to its write (S0 -> S10).
    latency = 10

    def cycles(self, desc):
        """Exact cycles of `desc` on this engine: `engine_cycles(self.config, desc, self.im2col_pixels)`."""
        return engine_cycles(self.config, desc, self.im2col_pixels, self.dw_sets, self.dw_taps)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, NG = self.rows, self.cols, self.groups
        WB = R * C
        GM = self.im2col_words
        G = self.im2col_pixels
        NS, TM = self.dw_sets, self.dw_taps
        TW = -(-TM // R)                       # depthwise block words that hold TM taps
        AB = addr_bits(cfg.act_words)
        WAB = addr_bits(cfg.weight_words)
        CB = bits_for(C)                       # holds 0..C
        SGN = 16 + CB + 3                      # signed byte/pixel coordinates
        DIVW = AB + CB + 2                     # dividends of the PACKED setup (byte positions)
        d = self.desc

        m.submodules.mac = mac = MACArray(R, C)
        sub_w = max(1, ceil_log2(NG))
        m.submodules.requant = rq = RequantUnit(R, tag_width=AB + sub_w + 2)
        m.submodules.pbuf = pbuf = memory.Memory(shape=unsigned(C * _REC), depth=self.param_depth, init=[])
        pbuf_w = pbuf.write_port(granularity=_REC)
        pbuf_r = pbuf.read_port()
        PAB = len(pbuf_r.addr)

        is_dw = Signal()
        is_packed = Signal()
        wk_mode = Signal()                     # DWCONV on the column walk (kernel of at most dw_taps taps)
        zp = Signal(signed(8))
        m.d.comb += zp.eq(d.in_zp)

        # ------------------------------------------------------------------------------------------------
        # Setup: strides and origins from one shared multiplier (and, for PACKED, one sequential divider).
        # ------------------------------------------------------------------------------------------------
        mul_a = Signal(32)
        mul_b = Signal(16)
        mul_p = Signal(48)
        m.d.comb += mul_p.eq(mul_a * mul_b)

        row_stride = Signal(AB)      # act words between input rows: in_w * in_ct
        row_step = Signal(AB)        # ... between output rows: stride_h * row_stride
        col_step = Signal(AB)        # ... between output columns: stride_w * in_ct
        tmp = Signal(AB)
        pix0 = Signal(AB)            # word of tap (0, 0), channel tile 0, of output pixel (0, 0) (mod 2^AB)
        out_row_words = Signal(AB)   # output words per output row: out_w * out_ct
        last_col = Signal(18)        # depthwise walk: last padded input column of a row, (out_w-1)*sw + kw-1
        # PACKED geometry, in bytes of the packed input ("position" = pixel * in_c).
        in_row_b = Signal(DIVW)      # bytes of one input row
        rowbytes = Signal(16)        # bytes of one window row: kernel_w * in_c
        wby = Signal(CB)             # used bytes of a packed word: in_ppw * in_c
        step_b = Signal(DIVW)        # window move per output column
        rowstep_b = Signal(DIVW)     # window move per output row
        x0 = Signal(DIVW)            # minus the first window origin: pad_top * in_row_b + pad_left * in_c
        pl_b = Signal(16)
        # Mixed-radix (word, byte in word) forms of the moves above: divmod(value, wby).
        qs, rs = Signal(AB), Signal(CB)
        qr, rr = Signal(AB), Signal(CB)
        qrs, rrs = Signal(AB), Signal(CB)
        qx, rx = Signal(AB), Signal(CB)

        # Byte offsets of the group's pixels in its window row (j * step_b); offs[G] is the group's move.
        offs = [Const(0, 20)] + [Signal(20, name=f"offs{j}") for j in range(1, G + 1)]
        setup_steps = [
            (d.in_w, d.in_ct, lambda p: [row_stride.eq(p)]),
            (row_stride, d.stride_h, lambda p: [row_step.eq(p)]),
            (d.stride_w, d.in_ct, lambda p: [col_step.eq(p)]),
            (row_stride, d.pad_top, lambda p: [tmp.eq(p)]),
            (d.pad_left, d.in_ct, lambda p: [pix0.eq(d.in_addr - tmp - p)]),
            (d.out_w, d.out_ct, lambda p: [out_row_words.eq(p)]),
            (d.out_w - 1, d.stride_w, lambda p: [last_col.eq(p + d.kernel_w - 1)]),
            (d.in_w, d.in_c, lambda p: [in_row_b.eq(p)]),
            (d.kernel_w, d.in_c, lambda p: [rowbytes.eq(p)]),
            (d.in_ppw, d.in_c, lambda p: [wby.eq(p)]),
            (d.stride_w, d.in_c, lambda p: [step_b.eq(p)]),
            (in_row_b, d.stride_h, lambda p: [rowstep_b.eq(p)]),
            (in_row_b, d.pad_top, lambda p: [x0.eq(p)]),
            (d.pad_left, d.in_c, lambda p: [pl_b.eq(p), x0.eq(x0 + p)]),
        ] + [(step_b, j, lambda p, j=j: [offs[j].eq(p)]) for j in range(1, G + 1)]
        su = Signal(range(len(setup_steps)))
        divisions = [(offs[G], qs, rs), (in_row_b, qr, rr), (rowstep_b, qrs, rrs), (x0, qx, rx)]
        dv_idx = Signal(range(len(divisions)))
        dv_cnt = Signal(range(DIVW + 1))
        dv_num = Signal(DIVW)
        dv_rem = Signal(CB + 1)
        dv_quo = Signal(DIVW)
        dv_shift = Signal(CB + 1)
        m.d.comb += dv_shift.eq(Cat(dv_num[-1], dv_rem[:CB]))
        dv_ge = dv_shift >= wby

        # ------------------------------------------------------------------------------------------------
        # Parameter load: weight words -> parameter buffer, a record group per cycle.
        # ------------------------------------------------------------------------------------------------
        if WB >= PARAM_RECORD_BYTES:
            rpw = WB // PARAM_RECORD_BYTES
            slot = WB // rpw                       # quant.program._place_records: slot stride WB // RPW
            grp = gcd(rpw, C)                      # records per beat: never straddles a buffer word
            beats = rpw // grp                     # beats per weight word
            wpr = 1
        else:
            slot = PARAM_RECORD_BYTES
            grp, beats = 1, 1
            wpr = -(-PARAM_RECORD_BYTES // WB)     # weight words per record
        ld_issued = Signal(32)
        ld_have = Signal()
        ld_s = Signal(range(max(2, beats)))
        ld_wcnt = Signal(range(max(2, wpr)))
        ld_asm = Signal(8 * WB * max(1, wpr - 1))
        ld_word = Signal(range(self.param_depth + 1))
        ld_grp = Signal(range(max(2, C // grp)))
        ld_consume = Signal()
        ld_issue = Signal()
        ld_beat = Signal()
        ld_recs = [Signal(param_record_layout, name=f"ld_rec{j}") for j in range(grp)]

        def record_from(byte_value):
            return [
                byte_value[0:32].as_signed(), byte_value[32:64].as_signed(), byte_value[64:70].as_signed(),
            ]

        if wpr == 1:
            beat_bits = _mux_tree(_words(self.w_r.data, 8 * grp * slot), ld_s) if beats > 1 else self.w_r.data
            for j in range(grp):
                off = 8 * j * slot
                b, mu, sh = record_from(beat_bits[off:off + 8 * PARAM_RECORD_BYTES])
                m.d.comb += [ld_recs[j].bias.eq(b), ld_recs[j].multiplier.eq(mu), ld_recs[j].shift.eq(sh)]
            m.d.comb += [ld_consume.eq(ld_have & (ld_s == beats - 1)), ld_beat.eq(ld_have)]
        else:
            full_rec = Cat(ld_asm, self.w_r.data)
            b, mu, sh = record_from(full_rec[:8 * PARAM_RECORD_BYTES])
            m.d.comb += [ld_recs[0].bias.eq(b), ld_recs[0].multiplier.eq(mu), ld_recs[0].shift.eq(sh),
                         ld_consume.eq(ld_have), ld_beat.eq(ld_have & (ld_wcnt == wpr - 1))]
        m.d.comb += [
            pbuf_w.addr.eq(ld_word),
            pbuf_w.data.eq(Cat(*[ld_recs[lane % grp].as_value() for lane in range(C)])),
        ]

        # ------------------------------------------------------------------------------------------------
        # Issue stage S0 (CONV, DWCONV, and the PACKED feeder): loops pixel > tile > ky > kx > ic.
        # ------------------------------------------------------------------------------------------------
        running = Signal()
        all_issued = Signal()
        oy, ox = Signal(16), Signal(16)
        t = Signal(16)                       # oc tile (CONV) or channel tile (DWCONV)
        pw = Signal(16)                      # output word within the pixel / parameter-buffer word of the tile
        sub = Signal(sub_w)                  # lane group of the tile in that word (CONV)
        ky, kx = Signal(8), Signal(8)
        ic = Signal(16)
        pix_base = Signal(AB)
        row_base = Signal(AB)
        row_off = Signal(AB)
        col_off = Signal(AB)
        iy0, ix0 = Signal(signed(SGN)), Signal(signed(SGN))
        w_addr = Signal(WAB)
        trow = Signal(range(max(2, R)))     # DWCONV: tap row within the weight word
        out_pix = Signal(AB)
        cool = Signal(range(max(2, NG)))    # DWCONV: cycles until a tile may start (drain of the previous)
        fset = Signal()                     # PACKED: buffer set the feeder reads
        fg = Signal(range(max(2, G)))       # ... and the pixel's buffer in it
        full = Signal(2)                    # PACKED: buffer sets holding a complete gathered group

        lkh = Mux(is_packed, 1, d.kernel_h)
        lkw = Mux(is_packed, 1, d.kernel_w)
        nic = Mux(is_dw, 1, d.in_ct)
        ntiles = Mux(is_dw, d.out_ct, d.oc_tiles)
        last_ic = ic == nic - 1
        last_kx = kx == lkw - 1
        last_ky = ky == lkh - 1
        last_t = t == ntiles - 1
        last_ox = ox == d.out_w - 1
        last_oy = oy == d.out_h - 1
        tile_end = last_ic & last_kx & last_ky
        tile_first = (ic == 0) & (kx == 0) & (ky == 0)
        pix_end = tile_end & last_t
        iy = Signal(signed(SGN))
        ix = Signal(signed(SGN))
        m.d.comb += [iy.eq(iy0 + ky), ix.eq(ix0 + kx)]
        inside = Signal()
        m.d.comb += inside.eq(is_packed | ((iy >= 0) & (iy < d.in_h) & (ix >= 0) & (ix < d.in_w)))

        gate = Signal()
        if NG > 1:
            m.d.comb += gate.eq(Mux(is_packed, full.bit_select(fset, 1), ~(is_dw & tile_first & (cool != 0))))
        else:
            m.d.comb += gate.eq(Mux(is_packed, full.bit_select(fset, 1), 1))
        s0_issue = Signal()
        m.d.comb += s0_issue.eq(running & ~all_issued & gate)
        s0_addr = Signal(AB)
        m.d.comb += s0_addr.eq(pix_base + row_off + col_off + Mux(is_dw, pw, ic))

        with m.If(s0_issue):
            with m.If(~last_ic):
                m.d.sync += ic.eq(ic + 1)
            with m.Else():
                m.d.sync += ic.eq(0)
                with m.If(~last_kx):
                    m.d.sync += [kx.eq(kx + 1), col_off.eq(col_off + d.in_ct)]
                with m.Else():
                    m.d.sync += [kx.eq(0), col_off.eq(0)]
                    with m.If(~last_ky):
                        m.d.sync += [ky.eq(ky + 1), row_off.eq(row_off + row_stride)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), row_off.eq(0)]
                        with m.If(~last_t):
                            m.d.sync += t.eq(t + 1)
                            if NG > 1:
                                with m.If(is_dw | (sub == NG - 1)):
                                    m.d.sync += [sub.eq(0), pw.eq(pw + 1)]
                                with m.Else():
                                    m.d.sync += sub.eq(sub + 1)
                            else:
                                m.d.sync += pw.eq(pw + 1)
                        with m.Else():
                            m.d.sync += [t.eq(0), pw.eq(0), sub.eq(0), out_pix.eq(out_pix + d.out_ct)]
                            # PACKED: the group's last pixel (or the row's) frees the buffer set.
                            with m.If((fg == G - 1) | last_ox):
                                m.d.sync += [fg.eq(0), fset.eq(~fset)]
                                with m.If(is_packed):
                                    with m.If(fset):
                                        m.d.sync += full[1].eq(0)
                                    with m.Else():
                                        m.d.sync += full[0].eq(0)
                            with m.Else():
                                m.d.sync += fg.eq(fg + 1)
                            with m.If(~last_ox):
                                m.d.sync += [ox.eq(ox + 1), pix_base.eq(pix_base + col_step),
                                             ix0.eq(ix0 + d.stride_w)]
                            with m.Else():
                                m.d.sync += [ox.eq(0), ix0.eq(-d.pad_left), iy0.eq(iy0 + d.stride_h),
                                             pix_base.eq(row_base + row_step), row_base.eq(row_base + row_step)]
                                with m.If(last_oy):
                                    m.d.sync += all_issued.eq(1)
                                with m.Else():
                                    m.d.sync += oy.eq(oy + 1)
            # Weight words: CONV and the feeder walk the whole block once per pixel; DWCONV steps a word every
            # `rows` taps and to the next channel tile's block at the end of a tile.
            with m.If(pix_end):
                m.d.sync += [w_addr.eq(d.weight_addr), trow.eq(0)]
            with m.Elif(~is_dw):
                m.d.sync += w_addr.eq(w_addr + 1)
            with m.Elif(tile_end | (trow == R - 1)):
                m.d.sync += [w_addr.eq(w_addr + 1), trow.eq(0)]
            with m.Else():
                m.d.sync += trow.eq(trow + 1)
        if NG > 1:
            with m.If(s0_issue & is_dw & tile_first):
                m.d.sync += cool.eq(NG - 1)
            with m.Elif(cool != 0):
                m.d.sync += cool.eq(cool - 1)

        # ------------------------------------------------------------------------------------------------
        # DWCONV walk (kernels of at most dw_taps taps): for each channel tile, output row and pass, walk the
        # padded input columns and, per column, its kernel_h rows: one activation word per cycle, read once
        # per (output row, column). The word is broadcast down the MAC array; row j (accumulator set j) holds
        # an open output of the row and multiplies the word by that output's tap (ky, col - ox*sw). Outputs
        # open at their first column and close at their last, round robin over the NS sets: when
        # kernel_w <= NS * stride_w one pass covers the row ("rolling"); otherwise a pass takes NS outputs
        # and the next pass steps back to its first column ("strips").
        # ------------------------------------------------------------------------------------------------
        wk_run = Signal()
        wk_roll = Signal()
        wk_ct, wk_oy = Signal(16), Signal(16)
        wk_col, wk_col0 = Signal(18), Signal(18)    # padded input column (ix + pad_left); the pass's first
        wk_ky = Signal(8)
        wk_rowt = Signal(range(TM + 1))              # ky * kernel_w
        wk_iy0 = Signal(signed(SGN))
        wk_base = Signal(AB)                         # word of (oy*sh - pt, -pl) in channel tile ct
        wk_colo = Signal(AB)                         # col * in_ct
        wk_rowo = Signal(AB)                         # ky * row_stride
        wk_onext = Signal(16)                        # next output of the row to open
        wk_ocol = Signal(18)                         # its first column, onext * sw
        wk_ocolo = Signal(AB)                        # ... times in_ct
        wk_oaddr = Signal(AB)                        # its output word
        wk_orow = Signal(AB)                         # output word of (oy, 0, ct)
        wk_sp = Signal(range(max(2, NS)))            # set of the next output
        wk_act = [Signal(name=f"wk_act{j}") for j in range(NS)]
        wk_kx = [Signal(8, name=f"wk_kx{j}") for j in range(NS)]
        wk_saddr = [Signal(AB, name=f"wk_saddr{j}") for j in range(NS)]
        wk_slast = [Signal(name=f"wk_slast{j}") for j in range(NS)]
        # Taps of the channel tile in registers, loaded from its depthwise block (KW words) at each ct.
        taps = [Signal(8 * C, name=f"tap{t}") for t in range(TM)]
        wl_cnt = Signal(range(TW + 1))
        wl_base = Signal(WAB)
        wl_have, wl_k = Signal(), Signal(range(max(2, TW)))
        m.d.sync += [wl_have.eq(0)]
        wl_busy = Signal()
        m.d.comb += wl_busy.eq(wl_cnt < d.tile_words)
        wl_issue = Signal()
        m.d.comb += wl_issue.eq(wk_run & wl_busy)
        with m.If(wl_issue):
            m.d.sync += [wl_cnt.eq(wl_cnt + 1), wl_have.eq(1), wl_k.eq(wl_cnt)]
        for k in range(TW):
            with m.If(wl_have & (wl_k == k)):
                for r in range(R):
                    if k * R + r < TM:
                        m.d.sync += taps[k * R + r].eq(self.w_r.data.word_select(r, 8 * C))

        wk_plast = Signal(18)                        # the pass's last column
        strip_end = wk_col0 + (NS - 1) * d.stride_w + d.kernel_w - 1
        m.d.comb += wk_plast.eq(Mux(wk_roll | (strip_end > last_col), last_col, strip_end))
        wk_iy = Signal(signed(SGN))
        wk_ix = Signal(signed(SGN))
        m.d.comb += [wk_iy.eq(wk_iy0 + wk_ky), wk_ix.eq(wk_col - d.pad_left)]
        wk_inside = Signal()
        m.d.comb += wk_inside.eq((wk_iy >= 0) & (wk_iy < d.in_h) & (wk_ix >= 0) & (wk_ix < d.in_w))
        wk_col_end = wk_ky == d.kernel_h - 1
        wk_close = [Signal(name=f"wk_close{j}") for j in range(NS)]
        for j in range(NS):
            m.d.comb += wk_close[j].eq(wk_act[j] & (wk_kx[j] == d.kernel_w - 1) & wk_col_end)
        wk_any_close = Signal()
        m.d.comb += wk_any_close.eq(Cat(*wk_close).any())
        w_issue = Signal()
        if NG > 1:
            m.d.comb += w_issue.eq(wk_run & ~wl_busy & ~(wk_any_close & (cool != 0)))
            with m.If(w_issue & wk_any_close):
                m.d.sync += cool.eq(NG - 1)
        else:
            m.d.comb += w_issue.eq(wk_run & ~wl_busy)
        w_cset = Signal(range(max(2, NS)))
        w_caddr = Signal(AB)
        w_clast = Signal()
        for j in range(NS):
            with m.If(wk_close[j]):
                m.d.comb += [w_cset.eq(j), w_caddr.eq(wk_saddr[j]), w_clast.eq(wk_slast[j])]

        def wk_open(col, colo, onext, ocol, ocolo, oaddr, sp):
            """Assignments that open output `onext` (first column `col`) on set `sp` and advance the opener."""
            stmts = [wk_col.eq(col), wk_colo.eq(colo)]
            for j in range(NS):
                with m.If(sp == j):
                    m.d.sync += [wk_act[j].eq(1), wk_kx[j].eq(0), wk_saddr[j].eq(oaddr),
                                 wk_slast[j].eq(onext == d.out_w - 1)]
            stmts += [wk_onext.eq(onext + 1), wk_ocol.eq(ocol + d.stride_w), wk_ocolo.eq(ocolo + col_step),
                      wk_oaddr.eq(oaddr + d.out_ct), wk_sp.eq(Mux(sp == NS - 1, 0, sp + 1))]
            m.d.sync += stmts

        with m.If(w_issue):
            with m.If(~wk_col_end):
                m.d.sync += [wk_ky.eq(wk_ky + 1), wk_rowt.eq(wk_rowt + d.kernel_w), wk_rowo.eq(wk_rowo + row_stride)]
            with m.Else():
                m.d.sync += [wk_ky.eq(0), wk_rowt.eq(0), wk_rowo.eq(0)]
                for j in range(NS):
                    with m.If(wk_close[j] | (wk_col == wk_plast)):
                        m.d.sync += wk_act[j].eq(0)
                    with m.Else():
                        m.d.sync += wk_kx[j].eq(wk_kx[j] + 1)
                with m.If(wk_col != wk_plast):
                    nxt = wk_col + 1
                    with m.If((nxt == wk_ocol) & (nxt + d.kernel_w - 1 <= wk_plast)):
                        wk_open(nxt, wk_colo + d.in_ct, wk_onext, wk_ocol, wk_ocolo, wk_oaddr, wk_sp)
                    with m.Else():
                        m.d.sync += [wk_col.eq(nxt), wk_colo.eq(wk_colo + d.in_ct)]
                with m.Elif(wk_onext != d.out_w):
                    # Strips: the next pass steps back to its first output's first column.
                    m.d.sync += wk_col0.eq(wk_ocol)
                    wk_open(wk_ocol, wk_ocolo, wk_onext, wk_ocol, wk_ocolo, wk_oaddr, wk_sp)
                with m.Else():
                    # End of the output row: the next row, or the next channel tile (load its taps).
                    m.d.sync += wk_col0.eq(0)
                    with m.If(wk_oy != d.out_h - 1):
                        m.d.sync += [wk_oy.eq(wk_oy + 1), wk_base.eq(wk_base + row_step),
                                     wk_iy0.eq(wk_iy0 + d.stride_h), wk_orow.eq(wk_orow + out_row_words)]
                        wk_open(0, 0, 0, 0, 0, wk_orow + out_row_words, 0)
                    with m.Elif(wk_ct != d.out_ct - 1):
                        m.d.sync += [wk_ct.eq(wk_ct + 1), wk_oy.eq(0), wk_base.eq(pix0 + wk_ct + 1),
                                     wk_iy0.eq(-d.pad_top), wk_orow.eq(d.out_addr + wk_ct + 1), wl_cnt.eq(0),
                                     wl_base.eq(wl_base + d.tile_words)]
                        wk_open(0, 0, 0, 0, 0, d.out_addr + wk_ct + 1, 0)
                    with m.Else():
                        m.d.sync += wk_run.eq(0)

        # ------------------------------------------------------------------------------------------------
        # PACKED gatherer: window rows of the pixel-packed input into the im2col buffers. It gathers a group
        # of G horizontally adjacent output pixels at once: their window rows overlap in the input row, so
        # one read of a packed word serves all G (its bytes placed into each pixel's buffer at that pixel's
        # offset). Two sets of G pixel buffers: the feeder drains one set while the gatherer fills the other.
        # ------------------------------------------------------------------------------------------------
        gbuf = [[[Signal(8 * C, name=f"gbuf{b}_{g}_{k}") for k in range(GM)] for g in range(G)] for b in range(2)]
        g_run = Signal()
        g_new = Signal()                     # next step is a group's first: needs a free set, prefills it
        g_set = Signal()
        g_ox, g_oy = Signal(16), Signal(16)  # output pixel 0 of the group
        g_ky = Signal(8)
        g_iy0, g_iy = Signal(signed(SGN)), Signal(signed(SGN))
        g_ix0b = Signal(signed(SGN + CB))           # input byte column of pixel 0's window (tap 0)
        q_w, q_b = Signal(AB), Signal(CB)           # window origin (tap 0, 0) of the group's pixel 0
        qrow_w, qrow_b = Signal(AB), Signal(CB)     # ... of the output row's first group
        r_w, r_b = Signal(AB), Signal(CB)           # origin of the current window row
        c_w, c_b = Signal(AB), Signal(CB)           # current chunk's word and first byte
        kxs = Signal(20)                            # bytes of the group's window row before the chunk
        rdest = Signal(16)                          # im2col byte of the window row's first byte

        def mixed_add(w, b, qv, rv):
            """(w, b) + (qv, rv) in words of `wby` bytes (b, rv < wby)."""
            s = b + rv
            carry = s >= wby
            return (w + qv + carry)[:AB], Mux(carry, s - wby, s)[:CB]

        # Pixels in this group (the last group of an output row may be short) and its window row's length.
        g_rem = Signal(17)
        m.d.comb += g_rem.eq(d.out_w - g_ox)
        g_cnt_m1 = Signal(range(max(G, 2)))           # one bit at least: G may be 1
        m.d.comb += g_cnt_m1.eq(Mux(g_rem >= G, G - 1, g_rem - 1))
        g_u = Signal(21)
        m.d.comb += g_u.eq(rowbytes + _mux_tree(offs[:G], g_cnt_m1))

        g_rin = Signal()
        m.d.comb += g_rin.eq((g_iy >= 0) & (g_iy < d.in_h))
        g_left = Signal(signed(22))
        g_room = Signal(signed(CB + 2))
        m.d.comb += [g_left.eq(g_u - kxs), g_room.eq(wby - c_b)]
        g_last_chunk = Signal()
        m.d.comb += g_last_chunk.eq(~g_rin | (g_left <= g_room))
        g_nb = Mux(g_left <= g_room, g_left, g_room)
        # Bytes of the row inside the input, relative to the chunk: [g_kxa, g_kxb).
        XW = SGN + CB + 3
        g_kxa = Signal(signed(XW))
        g_kxb = Signal(signed(XW))
        m.d.comb += [g_kxa.eq(Mux(g_ix0b < 0, -g_ix0b, 0) - kxs), g_kxb.eq(in_row_b - g_ix0b - kxs)]
        g_lo = [Signal(signed(XW), name=f"g_lo{g}") for g in range(G)]
        g_hi = [Signal(signed(XW), name=f"g_hi{g}") for g in range(G)]
        g_any = [Signal(name=f"g_any{g}") for g in range(G)]
        g_dw = [Signal(range(GM + 1), name=f"g_dw{g}") for g in range(G)]
        g_dl = [Signal(range(C), name=f"g_dl{g}") for g in range(G)]
        for g in range(G):
            # Pixel g's window row is bytes [offs[g], offs[g] + rowbytes) of the group's row.
            a_lo = offs[g] - kxs
            a_hi = offs[g] + rowbytes - kxs
            lo = Mux(g_kxa > a_lo, g_kxa, a_lo)
            hi = Mux(g_kxb < a_hi, g_kxb, a_hi)
            m.d.comb += [
                g_lo[g].eq(Mux(lo > 0, lo, 0)),
                g_hi[g].eq(Mux(hi < g_nb, hi, g_nb)),
                g_any[g].eq(g_rin & ((g_cnt_m1 >= g) if g else 1) & (g_lo[g] < g_hi[g])),
            ]
            # Chunk byte 0 lands on pixel g's im2col byte rdest + kxs - offs[g] (maybe negative: bytes before
            # the pixel's row are masked off); biased by C so the word index below is never negative.
            pos = Signal(signed(23), name=f"g_pos{g}")
            m.d.comb += pos.eq(rdest + kxs - offs[g] + C)
            dw_expr = 0
            for k in range(1, GM + 1):
                dw_expr = dw_expr + (pos >= k * C)
            m.d.comb += [g_dw[g].eq(dw_expr), g_dl[g].eq(pos - g_dw[g] * C)]
        g_read = Signal()
        m.d.comb += g_read.eq(Cat(*g_any).any())
        g_last_row = g_ky == d.kernel_h - 1
        g_grp_end = g_last_chunk & g_last_row
        g_step = Signal()
        m.d.comb += g_step.eq(g_run & (~g_new | ~full.bit_select(g_set, 1)))

        # S1 of the gatherer: the read word arrives; shift the chunk into place and write the pixel buffers.
        g1_write = [Signal(name=f"g1_write{g}") for g in range(G)]
        g1_lo = [Signal(CB, name=f"g1_lo{g}") for g in range(G)]
        g1_hi = [Signal(CB, name=f"g1_hi{g}") for g in range(G)]
        g1_dw = [Signal(range(GM + 1), name=f"g1_dw{g}") for g in range(G)]
        g1_dl = [Signal(range(C), name=f"g1_dl{g}") for g in range(G)]
        g1_mark = Signal()
        g1_set = Signal()
        g1_sb = Signal(CB)
        m.d.sync += [g1_mark.eq(g_step & g_grp_end), g1_set.eq(g_set), g1_sb.eq(c_b)]
        for g in range(G):
            m.d.sync += [g1_write[g].eq(g_step & g_any[g]), g1_lo[g].eq(g_lo[g][:CB]), g1_hi[g].eq(g_hi[g][:CB]),
                         g1_dw[g].eq(g_dw[g]), g1_dl[g].eq(g_dl[g])]

        with m.If(g_step):
            with m.If(g_new):
                m.d.sync += g_new.eq(0)
                for b in range(2):
                    with m.If(g_set == b):
                        m.d.sync += [word.eq(Cat(*[zp.as_unsigned()] * C)) for pix in gbuf[b] for word in pix]
            with m.If(~g_last_chunk):
                m.d.sync += [c_w.eq(c_w + 1), c_b.eq(0), kxs.eq(kxs + g_room)]
            with m.Elif(~g_last_row):
                nw, nb = mixed_add(r_w, r_b, qr, rr)
                m.d.sync += [g_ky.eq(g_ky + 1), g_iy.eq(g_iy + 1), r_w.eq(nw), r_b.eq(nb), c_w.eq(nw),
                             c_b.eq(nb), kxs.eq(0), rdest.eq(rdest + rowbytes)]
            with m.Else():
                m.d.sync += [g_ky.eq(0), kxs.eq(0), rdest.eq(0), g_set.eq(~g_set), g_new.eq(1)]
                with m.If(g_rem > G):
                    nw, nb = mixed_add(q_w, q_b, qs, rs)
                    m.d.sync += [g_ox.eq(g_ox + G), q_w.eq(nw), q_b.eq(nb), r_w.eq(nw), r_b.eq(nb), c_w.eq(nw),
                                 c_b.eq(nb), g_iy.eq(g_iy0), g_ix0b.eq(g_ix0b + offs[G])]
                with m.Else():
                    nw, nb = mixed_add(qrow_w, qrow_b, qrs, rrs)
                    m.d.sync += [g_ox.eq(0), qrow_w.eq(nw), qrow_b.eq(nb), q_w.eq(nw), q_b.eq(nb), r_w.eq(nw),
                                 r_b.eq(nb), c_w.eq(nw), c_b.eq(nb), g_iy0.eq(g_iy0 + d.stride_h),
                                 g_iy.eq(g_iy0 + d.stride_h), g_ix0b.eq(-pl_b)]
                    with m.If(g_oy == d.out_h - 1):
                        m.d.sync += g_run.eq(0)
                    with m.Else():
                        m.d.sync += g_oy.eq(g_oy + 1)

        g1_src = Signal(8 * C)
        m.d.comb += g1_src.eq(_shift_bytes(self.act_r.data, g1_sb, left=False))
        for g in range(G):
            mask = Signal(C, name=f"g1_mask{g}")
            m.d.comb += mask.eq((Const(1, C + 1) << g1_hi[g]) - (Const(1, C + 1) << g1_lo[g]))
            data2 = Signal(16 * C, name=f"g1_data{g}")
            mask2 = Signal(2 * C, name=f"g1_mask2_{g}")
            m.d.comb += [data2.eq(_shift_bytes(Cat(g1_src, Const(0, 8 * C)), g1_dl[g], left=True)),
                         mask2.eq(mask << g1_dl[g])]
            # Word k of the pixel's buffer takes the low half when the chunk starts in it (biased index k + 1)
            # and the high half when it starts in word k - 1.
            with m.If(g1_write[g]):
                for b in range(2):
                    with m.If(g1_set == b):
                        for k in range(GM):
                            word = gbuf[b][g][k]
                            lanes = []
                            for lane in range(C):
                                lo_hit = (g1_dw[g] == k + 1) & mask2[lane]
                                hi_hit = (g1_dw[g] == k) & mask2[C + lane]
                                lanes.append(Mux(lo_hit, _lane(data2, lane),
                                                 Mux(hi_hit, _lane(data2, C + lane), _lane(word, lane))))
                            m.d.sync += word.eq(Cat(*lanes))
        with m.If(g1_mark):
            with m.If(g1_set):
                m.d.sync += full[1].eq(1)
            with m.Else():
                m.d.sync += full[0].eq(1)

        # ------------------------------------------------------------------------------------------------
        # S1: SRAM data; x = activation - in_zp (0 in the padding), weights (DWCONV: each set's tap).
        # ------------------------------------------------------------------------------------------------
        s1_valid, s1_first, s1_last, s1_final, s1_inside = Signal(), Signal(), Signal(), Signal(), Signal()
        s1_rest = Signal()
        s1_trow = Signal.like(trow)
        s1_pw = Signal(16)
        s1_sub = Signal(sub_w)
        s1_oaddr = Signal(AB)
        s1_gword = Signal(8 * C)
        s1_cset = Signal(range(max(2, NS)))
        s1_sen = [Signal(name=f"s1_sen{j}") for j in range(NS)]
        s1_sclr = [Signal(name=f"s1_sclr{j}") for j in range(NS)]
        s1_stap = [Signal(range(TM + 1), name=f"s1_stap{j}") for j in range(NS)]
        with m.If(wk_mode):
            m.d.sync += [
                s1_valid.eq(w_issue), s1_last.eq(wk_any_close), s1_inside.eq(wk_inside),
                s1_final.eq(w_clast & (wk_oy == d.out_h - 1) & (wk_ct == d.out_ct - 1)), s1_pw.eq(wk_ct),
                s1_oaddr.eq(w_caddr), s1_cset.eq(w_cset),
            ]
            for j in range(NS):
                m.d.sync += [s1_sen[j].eq(wk_act[j]), s1_sclr[j].eq((wk_kx[j] == 0) & (wk_ky == 0)),
                             s1_stap[j].eq(wk_rowt + wk_kx[j])]
        with m.Else():
            m.d.sync += [
                s1_valid.eq(s0_issue), s1_last.eq(tile_end), s1_inside.eq(inside),
                s1_final.eq(tile_end & last_t & last_ox & last_oy), s1_pw.eq(pw), s1_oaddr.eq(out_pix + pw),
                s1_cset.eq(0), s1_sen[0].eq(is_dw), s1_sclr[0].eq(tile_first),
            ]
        m.d.sync += [
            s1_first.eq(tile_first), s1_trow.eq(trow), s1_rest.eq(last_t), s1_sub.eq(sub),
            s1_gword.eq(Mux(fset, _mux_tree([_mux_tree(p, ic) for p in gbuf[1]], fg),
                            _mux_tree([_mux_tree(p, ic) for p in gbuf[0]], fg))),
        ]
        src = Mux(is_packed, s1_gword, self.act_r.data)

        s2_valid, s2_first, s2_last, s2_final, s2_rest = Signal(), Signal(), Signal(), Signal(), Signal()
        s2_pw = Signal(16)
        s2_sub = Signal(sub_w)
        s2_oaddr = Signal(AB)
        s2_cset = Signal.like(s1_cset)
        s2_x = Signal(data.ArrayLayout(signed(9), C))
        s2_w = Signal(8 * WB)
        s2_sen = [Signal(name=f"s2_sen{j}") for j in range(NS)]
        s2_sclr = [Signal(name=f"s2_sclr{j}") for j in range(NS)]
        s2_sw = [Signal(8 * C, name=f"s2_sw{j}") for j in range(NS)]
        # Whole-signal assignments here and below: Amaranth checks each statement over every bit of its target.
        m.d.sync += s2_x.as_value().eq(Cat(*[Mux(s1_inside, _lane(src, c).as_signed() - zp, 0)[:9]
                                             for c in range(C)]))
        m.d.sync += [
            s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_last.eq(s1_last), s2_final.eq(s1_final),
            s2_rest.eq(s1_rest), s2_cset.eq(s1_cset),
            s2_pw.eq(s1_pw), s2_sub.eq(s1_sub), s2_oaddr.eq(s1_oaddr), s2_w.eq(self.w_r.data),
        ]
        for j in range(NS):
            m.d.sync += [s2_sen[j].eq(s1_valid & s1_sen[j]), s2_sclr[j].eq(s1_sclr[j])]
            if j == 0:
                # Set 0 also serves the tap-per-cycle depthwise (larger kernels): its tap row of the weight word.
                m.d.sync += s2_sw[j].eq(Mux(wk_mode, _mux_tree(taps, s1_stap[j]),
                                            _mux_tree(_words(self.w_r.data, 8 * C), s1_trow)))
            else:
                m.d.sync += s2_sw[j].eq(_mux_tree(taps, s1_stap[j]))

        # ------------------------------------------------------------------------------------------------
        # S2: the MAC array takes the tap. CONV: its accumulators sum the rows. DWCONV: rows 0..NS-1 carry
        # the sets' taps and their products are accumulated per lane in the sets' accumulators (S3).
        # ------------------------------------------------------------------------------------------------
        dw_w = Cat(*s2_sw, Const(0, 8 * C * (R - NS)))
        m.d.comb += [
            mac.x.eq(s2_x), mac.w.as_value().eq(Mux(is_dw, dw_w, s2_w)),
            mac.en.eq(s2_valid), mac.clear.eq(s2_first),
            self.mac_active.eq(s2_valid & (~is_dw | Cat(*s2_sen).any())),
        ]
        dw_acc = [Signal(data.ArrayLayout(signed(32), C), name=f"dw_acc{j}") for j in range(NS)]
        for j in range(NS):
            en_d, clr_d = Signal(name=f"dw_en{j}"), Signal(name=f"dw_clr{j}")
            m.d.sync += [en_d.eq(s2_sen[j]), clr_d.eq(s2_sclr[j])]
            with m.If(en_d):
                m.d.sync += dw_acc[j].as_value().eq(Cat(*[
                    Mux(clr_d, mac.products[j][c], dw_acc[j][c] + mac.products[j][c])[:32] for c in range(C)]))

        # Control to S4, where the tile's sums are complete (MACArray.latency after S2).
        def delay(sig, n, name):
            stages = [sig]
            for i in range(n):
                r = Signal.like(sig, name=f"{name}_d{i + 1}")
                m.d.sync += r.eq(stages[-1])
                stages.append(r)
            return stages[-1]

        lat = MACArray.latency
        s4_done = delay(s2_valid & s2_last, lat, "s4_done")
        s4_final = delay(s2_final, lat, "s4_final")
        s4_rest = delay(s2_rest, lat, "s4_rest")
        s4_pw = delay(s2_pw, lat, "s4_pw")
        s4_sub = delay(s2_sub, lat, "s4_sub")
        s4_oaddr = delay(s2_oaddr, lat, "s4_oaddr")
        s4_cset = delay(s2_cset, lat, "s4_cset")

        # DWCONV drain: the tile's C sums, R lanes per cycle into the requantizer.
        hold = Signal(data.ArrayLayout(signed(32), C))
        dr_active = Signal()
        dr_i = Signal(sub_w)
        dr_pw = Signal(16)
        dr_oaddr = Signal(AB)
        dr_final = Signal()
        with m.If(dr_active):
            with m.If(dr_i == NG - 1):
                m.d.sync += dr_active.eq(0)
            with m.Else():
                m.d.sync += dr_i.eq(dr_i + 1)
        with m.If(is_dw & s4_done):
            m.d.sync += [hold.eq(_mux_tree(dw_acc, s4_cset)), dr_active.eq(1), dr_i.eq(0), dr_pw.eq(s4_pw),
                         dr_oaddr.eq(s4_oaddr), dr_final.eq(s4_final)]

        # ------------------------------------------------------------------------------------------------
        # Back end: parameter-buffer read (T), requantizer (T+1 .. T+5), byte-lane write (T+6).
        # ------------------------------------------------------------------------------------------------
        be_valid = Signal()
        be_acc = Signal(data.ArrayLayout(signed(32), R))
        be_pw = Signal(16)
        be_sub = Signal(sub_w)
        be_oaddr = Signal(AB)
        be_final = Signal()
        be_rest = Signal()              # CONV: the pixel's last tile also fills the word's lanes above it
        with m.If(is_dw):
            m.d.comb += [
                be_valid.eq(dr_active), be_pw.eq(dr_pw), be_sub.eq(dr_i), be_oaddr.eq(dr_oaddr),
                be_final.eq(dr_final & (dr_i == NG - 1)),
                be_acc.as_value().eq(_mux_tree(_words(hold.as_value(), 32 * R), dr_i)),
            ]
        with m.Else():
            m.d.comb += [
                be_valid.eq(s4_done), be_pw.eq(s4_pw), be_sub.eq(s4_sub), be_oaddr.eq(s4_oaddr),
                be_final.eq(s4_final), be_acc.eq(mac.acc), be_rest.eq(s4_rest),
            ]
        m.d.comb += [pbuf_r.addr.eq(be_pw[:PAB]), pbuf_r.en.eq(1)]
        b1_valid = Signal()
        b1_acc = Signal.like(be_acc)
        b1_sub = Signal(sub_w)
        b1_oaddr = Signal(AB)
        b1_final = Signal()
        b1_rest = Signal()
        m.d.sync += [b1_valid.eq(be_valid), b1_acc.eq(be_acc), b1_sub.eq(be_sub), b1_oaddr.eq(be_oaddr),
                     b1_final.eq(be_final), b1_rest.eq(be_rest)]
        recs = Signal(data.ArrayLayout(param_record_layout, R))
        m.d.comb += recs.as_value().eq(_mux_tree(_words(pbuf_r.data, _REC * R), b1_sub))
        for r in range(R):
            p = rq.params[r]
            m.d.comb += [
                p.bias.eq(recs[r].bias), p.multiplier.eq(recs[r].multiplier), p.shift.eq(recs[r].shift),
                p.zero_point.eq(d.out_zp), p.act_min.eq(d.act_min), p.act_max.eq(d.act_max),
            ]
        m.d.comb += [
            rq.valid.eq(b1_valid), rq.acc.eq(b1_acc), rq.tag.eq(Cat(b1_oaddr, b1_sub, b1_final, b1_rest)),
        ]
        o_addr = rq.out_tag[:AB]
        o_sub = rq.out_tag[AB:AB + sub_w]
        o_final = rq.out_tag[AB + sub_w]
        o_rest = rq.out_tag[AB + sub_w + 1]
        w_final = Signal()
        # Lane groups above the last oc tile of a pixel (when ceil(out_c/rows)*rows < out_ct*cols) are padding
        # lanes with no tile: they get out_zp, the value their all-zero parameter records would give.
        above = Signal(NG)
        for g in range(1, NG):
            m.d.comb += above[g].eq(o_rest & (o_sub < g))
        m.d.comb += [
            self.act_w.addr.eq(o_addr),
            self.act_w.data.eq(Cat(*[Mux(above[lane // R], d.out_zp, rq.out[lane % R]) for lane in range(C)])),
            w_final.eq(rq.out_valid & o_final),
        ]
        with m.If(rq.out_valid):
            for g in range(NG):
                with m.If(o_sub == g):
                    m.d.comb += self.act_w.en.eq(Mux(o_rest, ((1 << C) - 1) ^ ((1 << (g * R)) - 1),
                                                     ((1 << R) - 1) << (g * R)))

        # ------------------------------------------------------------------------------------------------
        # Control.
        # ------------------------------------------------------------------------------------------------
        op_conv = d.opcode == OPCODES["CONV"]
        op_dw = d.opcode == OPCODES["DWCONV"]
        packed_flag = (d.flags & PACKED) != 0
        tiles_used = Mux(op_dw, d.out_ct * NG, d.oc_tiles)      # R-channel groups the layer's tiles use
        bad = Signal()
        m.d.comb += bad.eq(
            ~(op_conv | op_dw)
            | (op_conv & ((d.flags & FCSCALE) != 0))
            | (op_dw & (d.flags != 0))
            | (tiles_used > self.param_depth * NG)
            | (op_conv & packed_flag & ((d.in_ct > GM) | (d.in_ppw == 0)))
            | (d.kernel_h == 0) | (d.kernel_w == 0) | (d.stride_h == 0) | (d.stride_w == 0)
            | (d.out_h == 0) | (d.out_w == 0) | (d.in_ct == 0) | (d.out_ct == 0) | (d.param_words == 0)
            | (op_conv & (d.oc_tiles == 0))
        )
        fail = Signal()

        def init_run():
            return [
                running.eq(~wk_mode), all_issued.eq(0), oy.eq(0), ox.eq(0), t.eq(0), pw.eq(0), sub.eq(0), ky.eq(0),
                kx.eq(0), ic.eq(0), pix_base.eq(pix0), row_base.eq(pix0), row_off.eq(0), col_off.eq(0),
                iy0.eq(-d.pad_top), ix0.eq(-d.pad_left), w_addr.eq(d.weight_addr), trow.eq(0),
                out_pix.eq(d.out_addr), cool.eq(0), fset.eq(0), fg.eq(0), full.eq(0),
                g_run.eq(is_packed), g_new.eq(1), g_set.eq(0), g_ox.eq(0), g_oy.eq(0), g_ky.eq(0),
                g_iy0.eq(-d.pad_top), g_iy.eq(-d.pad_top), g_ix0b.eq(-pl_b), kxs.eq(0), rdest.eq(0),
                wk_run.eq(wk_mode), wk_ct.eq(0), wk_oy.eq(0), wk_col.eq(0), wk_col0.eq(0), wk_ky.eq(0),
                wk_rowt.eq(0), wk_iy0.eq(-d.pad_top), wk_base.eq(pix0), wk_colo.eq(0), wk_rowo.eq(0),
                wk_orow.eq(d.out_addr), wk_onext.eq(1), wk_ocol.eq(d.stride_w), wk_ocolo.eq(col_step),
                wk_oaddr.eq(d.out_addr + d.out_ct), wk_sp.eq(1 % NS), wl_cnt.eq(0), wl_base.eq(d.weight_addr),
            ] + [wk_act[j].eq(j == 0) for j in range(NS)] + [
                wk_kx[0].eq(0), wk_saddr[0].eq(d.out_addr), wk_slast[0].eq(d.out_w == 1),
            ]

        # States: an explicit register decoded with if/elif rather than m.FSM, so the Verilog has no case
        # statement with uncovered values (Verilator lint stays clean).
        IDLE, FAIL, SETUP, DIVIDE, ORIGIN, LOAD, RUN = range(7)
        state = Signal(range(7))
        with m.If(state == IDLE):
            with m.If(self.start):
                m.d.sync += [is_dw.eq(op_dw), is_packed.eq(op_conv & packed_flag), su.eq(0),
                             wk_mode.eq(op_dw & (d.kernel_h * d.kernel_w <= TM)),
                             wk_roll.eq(d.kernel_w <= NS * d.stride_w)]
                with m.If(bad):
                    m.d.sync += state.eq(FAIL)
                with m.Else():
                    m.d.sync += state.eq(SETUP)
        with m.Elif(state == FAIL):
            m.d.comb += fail.eq(1)
            m.d.sync += state.eq(IDLE)
        with m.Elif(state == SETUP):
            for i, (a, b, fn) in enumerate(setup_steps):
                with m.If(su == i):
                    m.d.comb += [mul_a.eq(a), mul_b.eq(b)]
                    m.d.sync += fn(mul_p)
            m.d.sync += su.eq(su + 1)
            # The packed geometry (steps 7 on) only matters in PACKED mode.
            with m.If((su == len(setup_steps) - 1) | ((su == 6) & ~is_packed)):
                m.d.sync += [dv_idx.eq(0), dv_cnt.eq(0), ld_issued.eq(0), ld_have.eq(0), ld_s.eq(0),
                             ld_wcnt.eq(0), ld_word.eq(0), ld_grp.eq(0)]
                with m.If(is_packed):
                    m.d.sync += state.eq(DIVIDE)
                with m.Else():
                    m.d.sync += state.eq(LOAD)
        with m.Elif(state == DIVIDE):
            # Restoring division by wby, one quotient bit per cycle; dv_cnt == 0 loads the dividend.
            with m.If(dv_cnt == 0):
                for i, (num, _, _) in enumerate(divisions):
                    with m.If(dv_idx == i):
                        m.d.sync += dv_num.eq(num)
                m.d.sync += [dv_rem.eq(0), dv_quo.eq(0), dv_cnt.eq(1)]
            with m.Else():
                new_rem = Mux(dv_ge, dv_shift - wby, dv_shift)
                new_quo = Cat(dv_ge, dv_quo)
                m.d.sync += [dv_rem.eq(new_rem), dv_quo.eq(new_quo), dv_num.eq(dv_num << 1),
                             dv_cnt.eq(dv_cnt + 1)]
                with m.If(dv_cnt == DIVW):
                    m.d.sync += dv_cnt.eq(0)
                    for i, (_, q_t, r_t) in enumerate(divisions):
                        with m.If(dv_idx == i):
                            m.d.sync += [q_t.eq(new_quo), r_t.eq(new_rem)]
                    m.d.sync += dv_idx.eq(dv_idx + 1)
                    with m.If(dv_idx == len(divisions) - 1):
                        m.d.sync += state.eq(ORIGIN)
        with m.Elif(state == ORIGIN):
            # The first window origin, -x0 bytes from in_addr, in (word, byte) form.
            ow = (d.in_addr - qx - (rx != 0))[:AB]
            ob = Mux(rx != 0, wby - rx, 0)[:CB]
            m.d.sync += [q_w.eq(ow), q_b.eq(ob), qrow_w.eq(ow), qrow_b.eq(ob), r_w.eq(ow), r_b.eq(ob),
                         c_w.eq(ow), c_b.eq(ob)]
            m.d.sync += state.eq(LOAD)
        with m.Elif(state == LOAD):
            m.d.comb += ld_issue.eq((ld_issued < d.param_words) & (~ld_have | ld_consume))
            m.d.comb += [self.w_r.en.eq(ld_issue), self.w_r.addr.eq(d.param_addr + ld_issued)]
            with m.If(ld_issue):
                m.d.sync += ld_issued.eq(ld_issued + 1)
            m.d.sync += ld_have.eq(ld_issue | (ld_have & ~ld_consume))
            if wpr == 1:
                with m.If(ld_have):
                    m.d.sync += ld_s.eq(Mux(ld_s == beats - 1, 0, ld_s + 1))
            else:
                with m.If(ld_have):
                    m.d.sync += ld_wcnt.eq(Mux(ld_wcnt == wpr - 1, 0, ld_wcnt + 1))
                    # Shift the record's earlier words in (the record's first word lands lowest).
                    if wpr > 2:
                        m.d.sync += ld_asm.eq(Cat(ld_asm[8 * WB:], self.w_r.data))
                    else:
                        m.d.sync += ld_asm.eq(self.w_r.data)
            with m.If(ld_beat):
                with m.If(ld_word < self.param_depth):
                    m.d.comb += pbuf_w.en.eq(((1 << grp) - 1) << (ld_grp * grp))
                if C // grp > 1:
                    with m.If(ld_grp == C // grp - 1):
                        m.d.sync += [ld_grp.eq(0), ld_word.eq(ld_word + 1)]
                    with m.Else():
                        m.d.sync += ld_grp.eq(ld_grp + 1)
                else:
                    m.d.sync += ld_word.eq(ld_word + 1)
            with m.If((ld_issued == d.param_words) & (~ld_have | ld_consume)):
                m.d.sync += init_run()
                m.d.sync += state.eq(RUN)
        with m.Elif(state == RUN):
            with m.If(wk_mode):
                m.d.comb += [
                    self.w_r.en.eq(wl_issue), self.w_r.addr.eq(wl_base + wl_cnt),
                    self.act_r.en.eq(w_issue & wk_inside), self.act_r.addr.eq(wk_base + wk_colo + wk_rowo),
                ]
            with m.Else():
                m.d.comb += [
                    self.w_r.en.eq(s0_issue), self.w_r.addr.eq(w_addr),
                    self.act_r.en.eq(Mux(is_packed, g_step & g_read, s0_issue & inside)),
                    self.act_r.addr.eq(Mux(is_packed, c_w, s0_addr)),
                ]
            with m.If(w_final):
                m.d.sync += [running.eq(0), g_run.eq(0), wk_run.eq(0)]
                m.d.sync += state.eq(IDLE)
        m.d.comb += [
            self.done.eq(fail | w_final),
            self.error.eq(fail),
            self.busy.eq(state != IDLE),
        ]
        return m


def _setup_cycles(config, desc, im2col_pixels):
    """Cycles from `start` to the first issue: start, setup (and PACKED divisions), parameter load."""
    R, C = config.array_rows, config.array_cols
    if R * C >= PARAM_RECORD_BYTES:
        rpw = R * C // PARAM_RECORD_BYTES
        load = desc.param_words * (rpw // gcd(rpw, C)) + 1
    else:
        load = desc.param_words + 1
    if desc.flags & PACKED:
        divw = addr_bits(config.act_words) + bits_for(C) + 2
        return 1 + 14 + im2col_pixels + 4 * (divw + 1) + 1 + load
    return 1 + 7 + load


def engine_cycles(config, desc, im2col_pixels=None, dw_sets=None, dw_taps=DEFAULT_DW_TAPS):
    """Exact cycles from `start` to `done` (both counted, as `sim.npu_harness.run_engine` counts them) of a
    CONV or DWCONV descriptor that `NPUConvEngine(config, im2col_pixels=...)` accepts: the RTL's schedule
    replayed in Python (PACKED walks the gatherer's pixel groups, about 10 ms per 10k output pixels), for
    the NPU's analytic cycle model. The tests check it against the RTL on every descriptor they run."""
    groups = config.array_cols // config.array_rows
    latency = NPUConvEngine.latency
    im2col_pixels = im2col_pixels or config.im2col_pixels
    t0 = _setup_cycles(config, desc, im2col_pixels)
    d = desc
    if d.opcode == OPCODES["DWCONV"] and d.kernel_h * d.kernel_w > dw_taps:
        # Tap per cycle: a tile of kh*kw taps, the next one no sooner than `groups` cycles later (its drain).
        taps = d.kernel_h * d.kernel_w
        tiles = d.out_h * d.out_w * d.out_ct
        return t0 + (tiles - 1) * max(taps, groups) + taps + latency + groups
    if d.opcode == OPCODES["DWCONV"]:
        # Column walk: per channel tile its taps load (tile_words cycles), then per output row and pass
        # kernel_h issues per column; an issue that closes an output waits until `groups` cycles after the
        # previous close (the drain of that output's sums).
        ns = min(dw_sets or DEFAULT_DW_SETS, config.array_rows)
        kh, kw, sw = d.kernel_h, d.kernel_w, d.stride_w
        if kw <= ns * sw:
            passes = [(0, d.out_w)]
        else:
            passes = [(o, min(o + ns, d.out_w)) for o in range(0, d.out_w, ns)]
        # Issues per row with no waiting, and whether a close can ever wait: closes are at least
        # kh * min(sw, kw) cycles apart (a load between channel tiles only adds room).
        row_issues = sum(((o1 - 1) * sw + kw - o0 * sw) * kh for o0, o1 in passes)
        t = t0
        if kh * min(sw, kw) >= groups:
            t += d.out_ct * (d.tile_words + d.out_h * row_issues)
            return t - 1 + latency + groups + 1
        last_close = -groups
        for _ in range(d.out_ct):
            t += d.tile_words
            for _ in range(d.out_h):
                for o0, o1 in passes:
                    closes = {o * sw + kw - 1 for o in range(o0, o1)}
                    for col in range(o0 * sw, (o1 - 1) * sw + kw):
                        t += kh - 1
                        if col in closes:
                            t = max(t, last_close + groups)
                            last_close = t
                        t += 1
        return last_close + latency + groups + 1
    if not desc.flags & PACKED:
        return t0 + desc.out_h * desc.out_w * desc.oc_tiles * desc.tile_words + latency
    # PACKED: group n (G output pixels of a row) takes `steps` gather cycles (a window row costs one
    # cycle per packed word it touches, or one when outside the input), is marked full two cycles after
    # its last step, and feeds gv * oc_tiles * in_ct cycles; a set is free the cycle after its last feed.
    G = im2col_pixels
    wby = d.in_ppw * d.in_c
    in_row_b, rowbytes, step_b = d.in_w * d.in_c, d.kernel_w * d.in_c, d.stride_w * d.in_c
    per_pixel = d.oc_tiles * d.in_ct
    gather_end, feed_end = [], []
    for oy in range(d.out_h):
        for ox0 in range(0, d.out_w, G):
            gv = min(G, d.out_w - ox0)
            u = rowbytes + (gv - 1) * step_b
            ix0b = (ox0 * d.stride_w - d.pad_left) * d.in_c
            steps = 0
            for ky in range(d.kernel_h):
                iy = oy * d.stride_h - d.pad_top + ky
                if 0 <= iy < d.in_h:
                    steps += -(-((iy * in_row_b + ix0b) % wby + u) // wby)
                else:
                    steps += 1
            n = len(gather_end)
            start = t0 if n == 0 else gather_end[-1] + 1
            if n >= 2:
                start = max(start, feed_end[n - 2] + 1)
            gather_end.append(start + steps - 1)
            first = gather_end[-1] + 2 if n == 0 else max(gather_end[-1] + 2, feed_end[-1] + 1)
            feed_end.append(first + gv * per_pixel - 1)
    return feed_end[-1] + latency + 1
