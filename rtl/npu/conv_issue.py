"""Conv engine component: the direct issue stage S0 (CONV, tap-per-cycle DWCONV, and the PACKED feeder)."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .conv_common import feed_layout, geometry_layout, issue_layout, read_request_signature
from .ports import descriptor_layout

__all__ = ["ConvDirectIssue"]


class ConvDirectIssue(wiring.Component):
    """Walks ``pixel > tile > ky > kx > ic`` and issues one activation word and one weight word per cycle.

    Ports: `init` (pulse: load the start values; `enable` says whether to run: the engine enables it for all
    but the depthwise column walk), `stop` (pulse: the engine is done), `desc`, `geom` (the setup's geometry),
    `dw` / `packed` (mode), `full` (the gatherer's buffer sets holding a complete group), `act_r` and `w_r`
    (read requests), `issue` (`conv_common.issue_layout`, for stage S1), `feed` (the im2col buffer word S1
    takes in PACKED mode) and `release` (pulse: the feeder is done with buffer set ``feed.set``).

    Direct CONV: the weight block is walked once per pixel; a tap in the padding is not read (`inside` low,
    S1 substitutes the zero point). With `pair` (a PAIR CONV) the tiles are oc-tile pairs, each a whole output
    word, and a tap's ``2F + 1`` issues (F = in_ct - 1) read input words 0 .. F-1 for the first tile, again for
    the second (`issue.to2`), then word F for both (`issue.split`); an odd last tile's pair issues ``F + 1``:
    word F first (`issue.split`: at the pixel's first tap it starts both accumulators, the absent tile's at 0),
    then words 0 .. F-1. PACKED (the feeder): one ``1x1`` pass of ``oc_tiles * in_ct`` words per pixel from
    the im2col buffers, group by group. DWCONV with more taps than the walk holds: one tap per cycle on
    accumulator set 0, a weight word every `rows` taps.

    Latency: the first issue is in the cycle after `init`; ``quant.timing.direct_issue_cycles`` (direct) or
    ``dw_tap_issue_cycles`` cycles to the last issue. Back-pressure: a PACKED issue waits until the set it
    reads is `full`; a depthwise tile's first tap waits ``cols // rows`` cycles after the previous tile's
    (the back end's drain). Otherwise it never stalls.
    """

    def __init__(self, dims):
        self.dims = dims
        super().__init__({
            "init": In(1), "enable": In(1), "stop": In(1), "desc": In(descriptor_layout()),
            "geom": In(geometry_layout(dims)), "dw": In(1), "packed": In(1), "full": In(2),
            **({"pair": In(1)} if dims.PAIR else {}),
            "act_r": Out(read_request_signature(dims.AB)), "w_r": Out(read_request_signature(dims.WAB)),
            "issue": Out(issue_layout(dims)), "feed": Out(feed_layout(dims)), "release": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        R, NG, NGD, G, AB, SGN = dm.R, dm.NG, dm.NGD, dm.G, dm.AB, dm.SGN
        d, geo, is_dw, is_packed = self.desc, self.geom, self.dw, self.packed

        running = Signal()
        all_issued = Signal()
        oy, ox = Signal(16), Signal(16)
        t = Signal(16)                       # oc tile (CONV) or channel tile (DWCONV)
        pw = Signal(16)                      # output word within the pixel / parameter-buffer word of the tile
        sub = Signal(dm.sub_w)               # lane group of the tile in that word (CONV)
        ky, kx = Signal(8), Signal(8)
        ic = Signal(16)                      # issue within the tap: input tile (PAIR: 2*F + 1 issues)
        icw = Signal(16)                     # ... its input word (PAIR: 0 .. F-1 twice, then F; odd: see `odd`)
        ph_b = Signal()                      # PAIR: the issue's row sums go to the pair's second tile (acc2)
        ph_m = Signal()                      # PAIR: the merged issue (each half of a row to its own tile)
        pix_base = Signal(AB)
        row_base = Signal(AB)
        row_off = Signal(AB)
        col_off = Signal(AB)
        iy0, ix0 = Signal(signed(SGN)), Signal(signed(SGN))
        w_addr = Signal(dm.WAB)
        trow = Signal(range(max(2, R)))     # DWCONV: tap row within the weight word
        out_pix = Signal(AB)
        cool = Signal(range(max(2, NGD)))    # DWCONV: cycles until a tile may start (drain of the previous)
        fset = Signal()                     # PACKED: buffer set the feeder reads
        fg = Signal(range(max(2, G)))       # ... and the pixel's buffer in it

        lkh = Mux(is_packed, 1, d.kernel_h)
        lkw = Mux(is_packed, 1, d.kernel_w)
        pair_on = self.pair if dm.PAIR else 0
        ntiles = Mux(is_dw, d.out_ct, d.oc_tiles)
        if dm.PAIR:                         # PAIR: a tile pair (a whole output word) per issue
            ntiles = Mux(self.pair, (d.oc_tiles + 1) >> 1, ntiles)
        word_step = is_dw | self.pair if dm.PAIR else is_dw     # each tile is a whole output word
        last_t = t == ntiles - 1
        # PAIR, an odd number of oc tiles: the last pair is one tile, F + 1 issues per tap (the merged word, issue
        # ic = 0, then words 0 .. F-1 as issues 1 .. F).
        odd = Signal()
        m.d.comb += odd.eq(pair_on & d.oc_tiles[0] & last_t)
        last_ic = Mux(is_dw, 1, ic == d.in_ct - 1)
        if dm.PAIR:
            last_ic = Mux(self.pair & ~odd, ic == (d.in_ct << 1) - 2, last_ic)
        last_kx = kx == lkw - 1
        last_ky = ky == lkh - 1
        last_ox = ox == d.out_w - 1
        last_oy = oy == d.out_h - 1
        tile_end = last_ic & last_kx & last_ky
        # The first issue into an accumulator clears it (PAIR: the second tile's first is its first b issue).
        tile_first = ((ic == 0) | (ph_b & (icw == 0))) & (kx == 0) & (ky == 0)
        pix_end = tile_end & last_t
        iy = Signal(signed(SGN))
        ix = Signal(signed(SGN))
        m.d.comb += [iy.eq(iy0 + ky), ix.eq(ix0 + kx)]
        inside = Signal()
        m.d.comb += inside.eq(is_packed | ((iy >= 0) & (iy < d.in_h) & (ix >= 0) & (ix < d.in_w)))

        gate = Signal()
        if NGD > 1:
            m.d.comb += gate.eq(Mux(is_packed, self.full.bit_select(fset, 1), ~(is_dw & tile_first & (cool != 0))))
        else:
            m.d.comb += gate.eq(Mux(is_packed, self.full.bit_select(fset, 1), 1))
        s0_issue = Signal()
        m.d.comb += s0_issue.eq(running & ~all_issued & gate)
        word = Mux(is_dw, pw, icw)
        if dm.PAIR:
            word = Mux(odd, Mux(ic == 0, d.in_ct - 1, icw - 1), word)
        m.d.comb += [
            self.act_r.addr.eq(pix_base + row_off + col_off + word),
            self.act_r.en.eq(s0_issue & inside),
            self.w_r.addr.eq(w_addr), self.w_r.en.eq(s0_issue),
            self.feed.set.eq(fset), self.feed.pixel.eq(fg), self.feed.word.eq(ic),
        ]
        iss = self.issue
        m.d.comb += [
            iss.valid.eq(s0_issue), iss.last.eq(tile_end), iss.first.eq(tile_first), iss.inside.eq(inside),
            iss.final.eq(tile_end & last_t & last_ox & last_oy), iss.rest.eq(last_t), iss.pw.eq(pw),
            iss.sub.eq(sub), iss.oaddr.eq(out_pix + pw), iss.cset.eq(0), iss.trow.eq(trow),
            iss.sen.eq(is_dw), iss.sclr.eq(tile_first), iss.to2.eq(ph_b), iss.split.eq(ph_m | (odd & (ic == 0))),
        ]
        # PAIR phases: F issues of the first tile (ph_b, ph_m low), F of the second (ph_b), the merged one
        # (ph_m; the only one when F = 0). `first_ph_m`: a tap's first issue is the merged one. An odd last
        # tile's tap stays in the first phase (icw = ic: issue ic reads word ic - 1, the merged one word F).
        first_ph_m = pair_on & (d.in_ct == 1)

        with m.If(s0_issue):
            with m.If(~last_ic):
                m.d.sync += ic.eq(ic + 1)
                with m.If(pair_on & ~odd & ~ph_m & (icw == d.in_ct - 2)):  # the last of a tile's F issues
                    m.d.sync += [icw.eq(Mux(ph_b, icw + 1, 0)), ph_b.eq(~ph_b), ph_m.eq(ph_b)]
                with m.Else():
                    m.d.sync += icw.eq(icw + 1)
            with m.Else():
                m.d.sync += [ic.eq(0), icw.eq(0), ph_b.eq(0), ph_m.eq(first_ph_m)]
                with m.If(~last_kx):
                    m.d.sync += [kx.eq(kx + 1), col_off.eq(col_off + d.in_ct)]
                with m.Else():
                    m.d.sync += [kx.eq(0), col_off.eq(0)]
                    with m.If(~last_ky):
                        m.d.sync += [ky.eq(ky + 1), row_off.eq(row_off + geo.row_stride)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), row_off.eq(0)]
                        with m.If(~last_t):
                            m.d.sync += t.eq(t + 1)
                            if NG > 1:
                                with m.If(word_step | (sub == NG - 1)):
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
                                m.d.comb += self.release.eq(is_packed)
                            with m.Else():
                                m.d.sync += fg.eq(fg + 1)
                            with m.If(~last_ox):
                                m.d.sync += [ox.eq(ox + 1), pix_base.eq(pix_base + geo.col_step),
                                             ix0.eq(ix0 + d.stride_w)]
                            with m.Else():
                                m.d.sync += [ox.eq(0), ix0.eq(-d.pad_left), iy0.eq(iy0 + d.stride_h),
                                             pix_base.eq(row_base + geo.row_step),
                                             row_base.eq(row_base + geo.row_step)]
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
        if NGD > 1:
            with m.If(s0_issue & is_dw & tile_first):
                m.d.sync += cool.eq(NGD - 1)
            with m.Elif(cool != 0):
                m.d.sync += cool.eq(cool - 1)
        # Last: the start values win over the loop's own updates.
        with m.If(self.init):
            m.d.sync += [
                running.eq(self.enable), all_issued.eq(0), oy.eq(0), ox.eq(0), t.eq(0), pw.eq(0), sub.eq(0),
                ky.eq(0), kx.eq(0), ic.eq(0), icw.eq(0), ph_b.eq(0), ph_m.eq(first_ph_m),
                pix_base.eq(geo.pix0), row_base.eq(geo.pix0), row_off.eq(0),
                col_off.eq(0), iy0.eq(-d.pad_top), ix0.eq(-d.pad_left), w_addr.eq(d.weight_addr), trow.eq(0),
                out_pix.eq(d.out_addr), cool.eq(0), fset.eq(0), fg.eq(0),
            ]
        with m.If(self.stop):
            m.d.sync += running.eq(0)
        return m
