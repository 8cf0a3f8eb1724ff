"""Conv engine component: stages S1..S4, the MAC array and the depthwise accumulator sets."""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import mac_latency

from ..mac_array import MACArray
from .conv_common import issue_layout, lane, line_layout, mux_tree, pool_rows_layout, tile_layout, words

__all__ = ["ConvMACPipe"]


class ConvMACPipe(wiring.Component):
    """From an issued word to a tile's sums: S1 has the SRAM data and registers ``x - in_zp`` (0 for a tap in
    the padding) and the weights; S2 presents them to the MAC array (`mac_active`); the sums are complete at
    S4 = S2 + ``MACArray.latency``, where `tile` (`conv_common.tile_layout`) says which tile ended.

    CONV: the array's accumulators sum the rows (`acc`, one 32-bit sum per row). A PAIR CONV (on an array of
    ``cols = 2 * rows``) computes two tiles: issues with ``to2`` sum into `acc2` (the pair's second tile)
    instead, and its merged issues (``split``) have the activation's lower lanes copied into the upper ones and
    each half of a row summed on its own: the lower into `acc`, the upper into `acc2`.
    DWCONV: rows j*XG .. j*XG + XG - 1 carry set j's taps and their registered products are summed lane by lane
    in each set's `cols` 32-bit accumulators; `dw_sum` is the closing set's (``issue.cset``) at S4. With the
    walk's line mode (XG = 3) the array takes three activation vectors, a column's kernel rows, from the line
    buffer (`_line_words`); with two line sets (`ConvDims.LSPLIT`) set 1's rows have three vectors of their own,
    so that in the walk's split schedule set 0 can keep the previous column's words (`line.hold`, `line.rep`).

    Ports: `issue` (S0, from `ConvDirectIssue` or `ConvDepthwiseWalk`), `gword` (S0: the im2col buffer word of
    the issue, PACKED), `act_data` / `w_data` (S1: the SRAMs' data), `taps` (S1: the walk's tap per set row),
    `in_zp`, `dw` / `packed` / `walk` (modes), `line` (the walk's line mode, S0), `mac_active`, and at S4 `tile`,
    `acc`, `dw_sum`; with the line mode also `pool` (S1: a line issue's column and its kernel rows 0 and 1, for
    `ConvPool2`).

    Latency: fixed, 2 + ``MACArray.latency`` (4, or 5 with the configuration's `deep_pipeline`) cycles from issue
    to `tile.done` (`quant.timing.conv_latency` counts it); one word per cycle, no back-pressure.
    """

    def __init__(self, dims):
        self.dims = dims
        R, C, NS = dims.R, dims.C, dims.NS
        super().__init__({
            "issue": In(issue_layout(dims)), "gword": In(8 * C), "act_data": In(8 * C), "w_data": In(8 * dims.WB),
            "taps": In(data.ArrayLayout(8 * C, NS * dims.XG)), "in_zp": In(signed(8)),
            **({"line": In(line_layout(dims)), "pool": Out(pool_rows_layout(dims))} if dims.LINE else {}),
            "dw": In(1), "packed": In(1), "walk": In(1),
            **({"acc2": Out(data.ArrayLayout(signed(32), R))} if dims.PAIR else {}),
            "mac_active": Out(1), "tile": Out(tile_layout(dims)), "acc": Out(data.ArrayLayout(signed(32), R)),
            "dw_sum": Out(data.ArrayLayout(signed(32), C)),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        R, C, NS, XG = dm.R, dm.C, dm.NS, dm.XG
        XV = dm.XV
        m.submodules.mac = mac = MACArray(R, C, deep=dm.config.deep_pipeline, x_groups=XV, split=dm.PAIR)
        assert mac.latency == mac_latency(dm.config)

        s1 = Signal(issue_layout(dm))
        s1_gword = Signal(8 * C)
        m.d.sync += [s1.eq(self.issue), s1_gword.eq(self.gword)]
        src = Mux(self.packed, s1_gword, self.act_data)
        # S1 words and inside flags of the XG vectors: all the issued word, but in line mode the column's kernel
        # rows (`_line_words`).
        xs, xins = [src] * XG, [s1.inside] * XG
        if dm.LINE:
            lwords, lins, line_on, line_col, s1l = self._line_words(m)
            m.d.comb += [self.pool.issue.eq(line_on), self.pool.col.eq(line_col),
                         self.pool.row0.eq(lwords[0]), self.pool.row1.eq(lwords[1])]
            xs = [Mux(line_on, lwords[k], src) for k in range(XG)]
            xins = [Mux(line_on, lins[k], s1.inside) for k in range(XG)]

        s2 = Signal(issue_layout(dm))
        s2_x = [Signal(data.ArrayLayout(signed(9), C), name=f"s2_x{k}") for k in range(XV)]
        s2_w = Signal(8 * dm.WB)
        NR = min(R, NS * XG)                    # array rows the depthwise sets use (the last set's may be cut)
        s2_sw = [Signal(8 * C, name=f"s2_sw{j}") for j in range(NR)]
        # Whole-signal assignments here and below: Amaranth checks each statement over every bit of its target.
        x_lanes = [[Mux(xins[k], lane(xs[k], c).as_signed() - self.in_zp, 0)[:9] for c in range(C)]
                   for k in range(XG)]
        if dm.PAIR:
            # PAIR's merged word: the input's last tile is in the lower half of the lanes; the upper half takes a
            # copy of it (its rows' weights are the second tile's).
            # (Every vector: with the line walk's XG vectors, rows take vector r % XG, all the issued word here.)
            half = C // 2
            x_lanes = [xl[:half] + [Mux(s1.split, xl[c - half], xl[c]) for c in range(half, C)] for xl in x_lanes]
        if dm.LSPLIT:
            # Split schedule: set 0's vectors (0 .. XG-1) keep the previous column's words in a `hold` issue and
            # in the column's read cycles, and take set 1's in a `rep` issue; set 1's (XG .. 2XG-1) keep theirs in
            # `rep` and in read cycles. Every other cycle both take the issued word(s).
            reading = s1l.read & ~s1l.issue
            for k in range(XG):
                with m.If(s1l.rep):
                    m.d.sync += s2_x[k].eq(s2_x[XG + k])
                with m.Elif(~(reading | (s1l.issue & s1l.hold))):
                    m.d.sync += s2_x[k].as_value().eq(Cat(*x_lanes[k]))
                with m.If(~(s1l.rep | reading)):
                    m.d.sync += s2_x[XG + k].as_value().eq(Cat(*x_lanes[k]))
        else:
            for k in range(XG):
                m.d.sync += s2_x[k].as_value().eq(Cat(*x_lanes[k]))
        m.d.sync += [s2.eq(s1), s2.sen.eq(Mux(s1.valid, s1.sen, 0)), s2_w.eq(self.w_data)]
        for j in range(NR):
            if j == 0:
                # Set 0 also serves the tap-per-cycle depthwise (larger kernels): its tap row of the weight word.
                m.d.sync += s2_sw[j].eq(Mux(self.walk, self.taps[j], mux_tree(words(self.w_data, 8 * C), s1.trow)))
            else:
                m.d.sync += s2_sw[j].eq(self.taps[j])

        # S2: the MAC array takes the tap; set j's kernel rows are array rows j*XG .. j*XG + XG - 1.
        dw_w = Cat(*s2_sw, Const(0, 8 * C * (R - NR)))
        if XV > 1:
            m.d.comb += mac.xg.as_value().eq(Cat(*[x.as_value() for x in s2_x[1:]]))
        m.d.comb += [
            mac.x.eq(s2_x[0]), mac.w.as_value().eq(Mux(self.dw, dw_w, s2_w)),
            mac.en.eq(s2.valid), mac.clear.eq(s2.first),
            *([mac.halves.eq(s2.split), mac.to2.eq(s2.to2), self.acc2.eq(mac.acc2)] if dm.PAIR else []),
            self.mac_active.eq(s2.valid & (~self.dw | s2.sen.any())),
        ]
        dw_acc = [Signal(data.ArrayLayout(signed(32), C), name=f"dw_acc{j}") for j in range(NS)]
        set_rows = [range(j * XG, min(NR, j * XG + XG)) for j in range(NS)]
        for j in range(NS):
            en_d, clr_d = Signal(name=f"dw_en{j}"), Signal(name=f"dw_clr{j}")
            m.d.sync += [en_d.eq(s2.sen[j]), clr_d.eq(s2.sclr[j])]
            with m.If(en_d):
                m.d.sync += dw_acc[j].as_value().eq(Cat(*[
                    (Mux(clr_d, 0, dw_acc[j][c]) + sum(mac.products[r][c] for r in set_rows[j]))[:32]
                    for c in range(C)]))

        # Control to S4, where the tile's sums are complete (MACArray.latency after S2).
        def delay(sig, n, name):
            stages = [sig]
            for i in range(n):
                r = Signal.like(sig, name=f"{name}_d{i + 1}")
                m.d.sync += r.eq(stages[-1])
                stages.append(r)
            return stages[-1]

        lat = mac.latency
        t = self.tile
        if mac.deep:
            # The depthwise sets' sums are complete 2 cycles after S2 (products, then the lane adds): the closing
            # set's are registered there and presented with the tile at S2 + lat.
            assert lat >= 3
            s4_cset = delay(s2.cset, 2, "s4_cset")
            dw_sum = Signal.like(self.dw_sum)
            m.d.sync += dw_sum.eq(mux_tree(dw_acc, s4_cset))
            dw_sum = delay(dw_sum, lat - 3, "dw_sum")
        else:
            s4_cset = delay(s2.cset, lat, "s4_cset")
            dw_sum = None
        m.d.comb += [
            t.done.eq(delay(s2.valid & s2.last, lat, "s4_done")), t.final.eq(delay(s2.final, lat, "s4_final")),
            t.rest.eq(delay(s2.rest, lat, "s4_rest")), t.pw.eq(delay(s2.pw, lat, "s4_pw")),
            t.sub.eq(delay(s2.sub, lat, "s4_sub")), t.oaddr.eq(delay(s2.oaddr, lat, "s4_oaddr")),
            self.acc.eq(mac.acc), self.dw_sum.eq(mux_tree(dw_acc, s4_cset) if dw_sum is None else dw_sum),
        ]
        return m

    def _line_words(self, m):
        """Line mode at S1: the column's kernel rows as XG words (row k: from the line buffer below ``ky0``, the
        SRAM word read in this cycle for row kh-1, the one held from an earlier cycle of the column between),
        their inside flags, whether this S1 is a line issue and its padded column. The buffer (``LBD`` padded
        columns of two words, kernel rows kh-2 and kh-1) is read at S0 of the column's issue and written at its
        S1."""
        dm = self.dims
        C, XG = dm.C, dm.XG
        ln = self.line
        s1l = Signal(line_layout(dm))
        m.d.sync += s1l.eq(ln)
        m.submodules.lbuf = lbuf = memory.Memory(shape=16 * C, depth=dm.LBD, init=[])
        lb_w = lbuf.write_port()
        lb_r = lbuf.read_port(transparent_for=(lb_w,))
        m.d.comb += [lb_r.addr.eq(ln.col), lb_r.en.eq(ln.issue)]
        hold = [Signal(8 * C, name=f"lb_hold{k}") for k in range(XG - 1)]
        with m.If(s1l.read & ~s1l.issue):
            for k in range(XG - 1):
                with m.If(s1l.ky == k):
                    m.d.sync += hold[k].eq(self.act_data)
        entries = [lb_r.data[:8 * C], lb_r.data[8 * C:]]
        lw = []
        for k in range(XG):
            fresh = self.act_data if k == XG - 1 else Mux(s1l.kh == k + 1, self.act_data, hold[k])
            if k < XG - 1:
                old = entries[1] if k == 1 else Mux(s1l.e0, entries[1], entries[0])
                fresh = Mux(k < s1l.ky0, old, fresh)
            w = Signal(8 * C, name=f"lb_word{k}")
            m.d.comb += w.eq(fresh)
            lw.append(w)
        m.d.comb += [
            lb_w.addr.eq(s1l.col), lb_w.en.eq(s1l.issue & s1l.keep),
            lb_w.data.eq(Mux(s1l.kh == 3, Cat(lw[1], lw[2]), Cat(lw[0], lw[1]))),
        ]
        return lw, [s1l.ins[k] for k in range(XG)], s1l.issue, s1l.col, s1l
