"""Conv engine component: the depthwise column walk (DWCONV kernels of at most `dw_taps` taps)."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .conv_common import geometry_layout, issue_layout, line_layout, mux_tree, read_request_signature
from .ports import descriptor_layout

__all__ = ["ConvDepthwiseWalk"]


class ConvDepthwiseWalk(wiring.Component):
    """For each channel tile, output row and pass, walks the padded input columns and, per column, its
    `kernel_h` rows: one activation word per cycle, read once per (output row, column) instead of once per tap.

    The word is broadcast down the MAC array; row j (accumulator set j, of ``dw_sets``) holds an open output
    of the row and multiplies the word by that output's tap (ky, col - ox*sw). Outputs open at their first
    column and close at their last, round robin over the sets: when ``kernel_w <= sets * stride_w`` one pass
    covers the row ("rolling"); otherwise a pass takes `sets` outputs and the next pass steps back to its first
    column ("strips"). The channel tile's taps sit in ``dw_taps`` registers of `cols` bytes, loaded from its
    depthwise block (``tile_words`` weight words) before its first row.

    **Line mode** (an engine with room for two or more sets of three rows, `quant.timing.dw_line_mode`: at most 3
    kernel rows, the row's padded columns within the line buffer; `dw_line_sets` sets, rolling or in strips): set
    j owns array rows 3j .. 3j+2, one per kernel row, and a column issues once with all its kernel rows (the
    datapath's vectors, `line`): its new kernel rows are read from the SRAM one per cycle (all of them in a
    channel tile's first output row, then ``min(stride_h, kernel_h)``: the column's first cycles only read) and
    the older ones come from the datapath's line buffer, so each input word is read once per channel tile and
    pass (3x3 s1 rolling: one cycle per output instead of three; in strips of two: two). A column the row's next
    pass walks again leaves the buffer alone until then. Other modes use row 3j of each set (zero taps on the
    others; the last set's other rows may be past the array).

    **Split schedule** (two line sets and a 3-wide kernel at column stride 1, `quant.timing.dw_line_split`: a
    column feeds three open outputs, nine taps per lane, but the sets' six rows take six): one pass per row,
    even outputs on set 0 and odd ones on set 1. An even column's issue (X1) gives set 0 the tap (ky, 2) of output
    c-2 (which it closes) and set 1 (ky, 1) of c-1; the next (odd) column's issue (X2) gives set 1 its (ky, 2) of
    c-1 (closing it) while set 0 opens output c-1 with (ky, 0) of the column before, whose words its rows keep
    (`line.hold`); then the odd column again with no read (X3, `line.rep`: set 0's rows take set 1's words):
    set 0 (ky, 1) of c-1, set 1 opens c with (ky, 0). Three issues per two columns (1.5 cycles per output
    instead of 2), one close per issue at most; outputs outside the row take no tap.

    Ports: `init` (pulse: load the start values; `enable` says whether to run), `stop` (pulse: the engine is
    done), `desc`, `geom`, `w_data` (weight SRAM data), `act_r` / `w_r` (read requests), `issue`
    (`conv_common.issue_layout`: the word for stage S1, `cset` the set an output closes on), `taps` (in the
    cycle after an issue, S1: the tap word of each set's row, set j's rows j*XG ..), `line` (with the line
    mode: `conv_common.line_layout`).

    Latency: the tap load starts in the cycle after `init`; `quant.timing.dw_walk_close_cycles` (line mode:
    `dw_line_close_cycles`) cycles to the issue that closes the last output. Back-pressure: an issue that
    closes an output waits until `dw_drain_groups` cycles after the previous close (the back end drains an
    output's sums in that time), and issues wait for a channel tile's taps.
    """

    def __init__(self, dims):
        self.dims = dims
        super().__init__({
            "init": In(1), "enable": In(1), "stop": In(1), "desc": In(descriptor_layout()),
            "geom": In(geometry_layout(dims)), "w_data": In(8 * dims.WB),
            "act_r": Out(read_request_signature(dims.AB)), "w_r": Out(read_request_signature(dims.WAB)),
            "issue": Out(issue_layout(dims)), "taps": Out(data.ArrayLayout(8 * dims.C, dims.NS * dims.XG)),
            **({"line": Out(line_layout(dims))} if dims.LINE else {}),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        R, C, NS, TM, TW, AB, SGN = dm.R, dm.C, dm.NS, dm.TM, dm.TW, dm.AB, dm.SGN
        XG, NGD, NSL = dm.XG, dm.NGD, dm.NSL
        d, geo = self.desc, self.geom
        # Line mode (dims.LINE): `lm` for this descriptor; a column's kernel rows ky0 .. kh-1 are read, one per
        # cycle, and the column issues once, in its last; rows below ky0 come from the datapath's line buffer.
        lm = Signal()
        ky0 = Signal(2)                              # this output row's first kernel row read from the SRAM
        ky0_rest = Signal(2)                         # ... in the rows after a channel tile's first

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
        cool = Signal(range(max(2, NGD)))            # cycles until an output may close (drain of the previous)
        # Split schedule (dims.LSPLIT, `quant.timing.dw_line_split`): `sm` for this descriptor; `rep` the second
        # issue of an odd column; `sp_oaddr` the output word of output col - 2 (the one a column's issue closes).
        sm = Signal()
        rep = Signal()
        sp_oaddr = Signal(AB)

        # Taps of the channel tile in registers, loaded from its depthwise block at each channel tile.
        taps = [Signal(8 * C, name=f"tap{t}") for t in range(TM)]
        wl_cnt = Signal(range(TW + 1))
        wl_base = Signal(dm.WAB)
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
                        m.d.sync += taps[k * R + r].eq(self.w_data.word_select(r, 8 * C))

        wk_plast = Signal(18)                        # the pass's last column
        strip_end = wk_col0 + Mux(lm, (NSL - 1) * d.stride_w, (NS - 1) * d.stride_w) + d.kernel_w - 1
        m.d.comb += wk_plast.eq(Mux(wk_roll | (strip_end > geo.last_col), geo.last_col, strip_end))
        wk_iy = Signal(signed(SGN))
        wk_ix = Signal(signed(SGN))
        m.d.comb += [wk_iy.eq(wk_iy0 + wk_ky), wk_ix.eq(wk_col - d.pad_left)]
        wk_inside = Signal()
        m.d.comb += wk_inside.eq((wk_iy >= 0) & (wk_iy < d.in_h) & (wk_ix >= 0) & (wk_ix < d.in_w))
        wk_col_end = Signal()
        m.d.comb += wk_col_end.eq((wk_ky == d.kernel_h - 1) | rep)
        # Split schedule, per issue of column c (padded; output o takes columns o .. o+2): even c, its first issue
        # X1: set 0 output c-2 (kx 2, closes), set 1 output c-1 (kx 1); odd c, X2: set 0 output c-1 (kx 0, opens;
        # its rows keep column c-1's words, `line.hold`), set 1 output c-2 (kx 2, closes); then X3 (`rep`, while
        # c <= out_w): set 0 output c-1 (kx 1), set 1 output c (kx 0, opens). Outputs outside 0 .. out_w-1 do
        # not take their tap.
        odd = wk_col[0]
        c_ge2 = wk_col >= 2
        c_le_w = wk_col <= d.out_w
        sp_kx = [Mux(rep, 1, Mux(odd, 0, 2)), Mux(rep, 0, Mux(odd, 2, 1))]
        sp_sen = Cat(Mux(rep | odd, c_le_w, c_ge2), Mux(rep, wk_col < d.out_w, Mux(odd, c_ge2, (wk_col != 0) & c_le_w)))
        sp_sclr = Cat(odd & ~rep, rep)
        sp_close = ~rep & c_ge2
        sp_final = sp_close & (wk_col == geo.last_col) & (wk_oy == d.out_h - 1) & (wk_ct == d.out_ct - 1)
        wk_close = [Signal(name=f"wk_close{j}") for j in range(NS)]
        for j in range(NS):
            m.d.comb += wk_close[j].eq(wk_act[j] & (wk_kx[j] == d.kernel_w - 1) & wk_col_end)
        wk_any_close = Signal()
        m.d.comb += wk_any_close.eq(Cat(*wk_close).any())
        w_issue = Signal()
        if NGD > 1:
            m.d.comb += w_issue.eq(wk_run & ~wl_busy & ~(wk_any_close & (cool != 0)))
            with m.If(w_issue & wk_any_close):
                m.d.sync += cool.eq(NGD - 1)
            with m.Elif(cool != 0):
                m.d.sync += cool.eq(cool - 1)
        else:
            m.d.comb += w_issue.eq(wk_run & ~wl_busy)
        w_cset = Signal(range(max(2, NS)))
        w_caddr = Signal(AB)
        w_clast = Signal()
        for j in range(NS):
            with m.If(wk_close[j]):
                m.d.comb += [w_cset.eq(j), w_caddr.eq(wk_saddr[j]), w_clast.eq(wk_slast[j])]

        m.d.comb += [
            self.w_r.en.eq(wl_issue), self.w_r.addr.eq(wl_base + wl_cnt),
            self.act_r.en.eq(w_issue & wk_inside & ~rep), self.act_r.addr.eq(wk_base + wk_colo + wk_rowo),
        ]
        iss = self.issue
        m.d.comb += [
            iss.valid.eq(w_issue & (~lm | wk_col_end)), iss.last.eq(Mux(sm, sp_close, wk_any_close)),
            iss.first.eq(1), iss.inside.eq(wk_inside),
            iss.final.eq(Mux(sm, sp_final, w_clast & (wk_oy == d.out_h - 1) & (wk_ct == d.out_ct - 1))),
            iss.pw.eq(wk_ct), iss.oaddr.eq(Mux(sm, sp_oaddr, w_caddr)), iss.cset.eq(Mux(sm, odd, w_cset)),
            iss.sen.eq(Mux(sm, sp_sen, Cat(*wk_act))),
            iss.sclr.eq(Mux(sm, sp_sclr, Cat(*[(wk_kx[j] == 0) & (lm | (wk_ky == 0)) for j in range(NS)]))),
        ]
        # S1: each set's tap for the word issued in the previous cycle (line mode: kernel row k's on the set's
        # row k; the other modes use row 0 of each set, the others get tap TM, zero).
        zero_tap = [Signal(8 * C, name="tap_zero")]
        for j in range(NS):
            for k in range(XG):
                stap = Signal(range(TM + 1), name=f"stap{j}_{k}")
                kk = Signal(range(TM + 1), name=f"ktap{j}_{k}")
                m.d.comb += kk.eq(k * d.kernel_w + (Mux(sm, sp_kx[j], wk_kx[j]) if j < 2 else wk_kx[j]))
                if k == 0:
                    m.d.sync += stap.eq(Mux(lm, kk, wk_rowt + wk_kx[j]))
                else:
                    m.d.sync += stap.eq(Mux(lm & (k < d.kernel_h), kk, TM))
                m.d.comb += self.taps[j * XG + k].eq(mux_tree(taps + zero_tap, stap))

        def wk_open(col, colo, onext, ocol, ocolo, oaddr, sp):
            """Assignments that open output `onext` (first column `col`) on set `sp` and advance the opener."""
            for j in range(NS):
                with m.If(sp == j):
                    m.d.sync += [wk_act[j].eq(1), wk_kx[j].eq(0), wk_saddr[j].eq(oaddr),
                                 wk_slast[j].eq(onext == d.out_w - 1)]
            m.d.sync += [wk_col.eq(col), wk_colo.eq(colo), wk_onext.eq(onext + 1), wk_ocol.eq(ocol + d.stride_w),
                         wk_ocolo.eq(ocolo + geo.col_step), wk_oaddr.eq(oaddr + d.out_ct),
                         wk_sp.eq(Mux(sp == Mux(lm, NSL - 1, NS - 1), 0, sp + 1))]

        def rowo(k):
            return Mux(k == 2, geo.row_stride << 1, Mux(k == 1, geo.row_stride, 0))[:AB]

        with m.If(w_issue):
            with m.If(~wk_col_end):
                m.d.sync += [wk_ky.eq(wk_ky + 1), wk_rowt.eq(wk_rowt + d.kernel_w),
                             wk_rowo.eq(wk_rowo + geo.row_stride)]
            with m.Else():
                m.d.sync += [wk_ky.eq(ky0), wk_rowt.eq(0), wk_rowo.eq(rowo(ky0))]
                for j in range(NS):
                    with m.If(wk_close[j] | (wk_col == wk_plast)):
                        m.d.sync += wk_act[j].eq(0)
                    with m.Else():
                        m.d.sync += wk_kx[j].eq(wk_kx[j] + 1)
                with m.If(sm & odd & ~rep & c_le_w):
                    m.d.sync += rep.eq(1)               # split: X3, the column again
                with m.Elif(wk_col != wk_plast):
                    if dm.LSPLIT:
                        m.d.sync += [rep.eq(0), sp_oaddr.eq(sp_oaddr + d.out_ct)]
                    nxt = wk_col + 1
                    with m.If((nxt == wk_ocol) & (nxt + d.kernel_w - 1 <= wk_plast)):
                        wk_open(nxt, wk_colo + d.in_ct, wk_onext, wk_ocol, wk_ocolo, wk_oaddr, wk_sp)
                    with m.Else():
                        m.d.sync += [wk_col.eq(nxt), wk_colo.eq(wk_colo + d.in_ct)]
                with m.Elif(~sm & (wk_onext != d.out_w)):
                    # Strips: the next pass steps back to its first output's first column.
                    m.d.sync += wk_col0.eq(wk_ocol)
                    wk_open(wk_ocol, wk_ocolo, wk_onext, wk_ocol, wk_ocolo, wk_oaddr, wk_sp)
                with m.Else():
                    # End of the output row: the next row, or the next channel tile (load its taps).
                    m.d.sync += wk_col0.eq(0)
                    with m.If(wk_oy != d.out_h - 1):
                        m.d.sync += [wk_oy.eq(wk_oy + 1), wk_base.eq(wk_base + geo.row_step),
                                     wk_iy0.eq(wk_iy0 + d.stride_h), wk_orow.eq(wk_orow + geo.out_row_words),
                                     ky0.eq(ky0_rest), wk_ky.eq(ky0_rest), wk_rowo.eq(rowo(ky0_rest))]
                        wk_open(0, 0, 0, 0, 0, wk_orow + geo.out_row_words, 0)
                        if dm.LSPLIT:
                            m.d.sync += sp_oaddr.eq(wk_orow + geo.out_row_words - (d.out_ct << 1))
                    with m.Elif(wk_ct != d.out_ct - 1):
                        m.d.sync += [wk_ct.eq(wk_ct + 1), wk_oy.eq(0), wk_base.eq(geo.pix0 + wk_ct + 1),
                                     wk_iy0.eq(-d.pad_top), wk_orow.eq(d.out_addr + wk_ct + 1), wl_cnt.eq(0),
                                     wl_base.eq(wl_base + d.tile_words), ky0.eq(0), wk_ky.eq(0), wk_rowo.eq(0)]
                        wk_open(0, 0, 0, 0, 0, d.out_addr + wk_ct + 1, 0)
                        if dm.LSPLIT:
                            m.d.sync += sp_oaddr.eq(d.out_addr + wk_ct + 1 - (d.out_ct << 1))
                    with m.Else():
                        m.d.sync += wk_run.eq(0)

        if dm.LINE:
            ln = self.line
            inside_col = (wk_ix >= 0) & (wk_ix < d.in_w)
            m.d.comb += [
                ln.read.eq(w_issue & lm & ~rep), ln.issue.eq(w_issue & lm & wk_col_end & ~rep), ln.ky.eq(wk_ky),
                ln.ky0.eq(ky0), ln.kh.eq(d.kernel_h), ln.col.eq(wk_col),
                ln.hold.eq(sm & odd), ln.rep.eq(w_issue & rep),
                # A column the row's next pass walks again keeps the buffer's older rows until that last visit.
                ln.keep.eq(sm | (wk_col < wk_ocol) | (wk_onext == d.out_w)),
                # The buffer keeps kernel rows kh-2 and kh-1 (entries 0 and 1); the next row's row k is this
                # row's k + stride_h: entry 0 for row 0 only when kh = 3 and stride 1.
                ln.e0.eq(~((d.kernel_h == 3) & (d.stride_h == 1))),
                ln.ins.eq(Cat(*[inside_col & (wk_iy0 + k >= 0) & (wk_iy0 + k < d.in_h) & (k < d.kernel_h)
                                for k in range(XG)])),
            ]
            line_ok = (d.kernel_h <= 3) & (geo.last_col < dm.LBD)
        else:
            line_ok = 0

        # Last: the start values win over the walk's own updates.
        with m.If(self.init):
            m.d.sync += [lm.eq(line_ok), ky0.eq(0),
                         ky0_rest.eq(Mux(line_ok & (d.kernel_h > d.stride_h), d.kernel_h - d.stride_h, 0))]
            if dm.LSPLIT:
                split = line_ok & (d.kernel_w == 3) & (d.stride_w == 1)
                m.d.sync += [sm.eq(split), rep.eq(0), sp_oaddr.eq(d.out_addr - (d.out_ct << 1))]
            else:
                split = 0
            m.d.sync += [
                wk_run.eq(self.enable), wk_roll.eq(split | (d.kernel_w <= Mux(line_ok, NSL, NS) * d.stride_w)),
                wk_ct.eq(0),
                wk_oy.eq(0),
                wk_col.eq(0), wk_col0.eq(0), wk_ky.eq(0), wk_rowt.eq(0), wk_iy0.eq(-d.pad_top),
                wk_base.eq(geo.pix0), wk_colo.eq(0), wk_rowo.eq(0), wk_orow.eq(d.out_addr), wk_onext.eq(1),
                wk_ocol.eq(d.stride_w), wk_ocolo.eq(geo.col_step), wk_oaddr.eq(d.out_addr + d.out_ct),
                wk_sp.eq(1 % NS), wl_cnt.eq(0), wl_base.eq(d.weight_addr), cool.eq(0),
                wk_kx[0].eq(0), wk_saddr[0].eq(d.out_addr), wk_slast[0].eq(d.out_w == 1),
            ] + [wk_act[j].eq(j == 0) for j in range(NS)]
        with m.If(self.stop):
            m.d.sync += wk_run.eq(0)
        return m
