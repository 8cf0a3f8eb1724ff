"""Vector engine component: the pools' walk over output pixels, channel tiles and in-bounds window taps."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .ports import descriptor_layout
from .vector_common import bounds, pool_tap_layout

__all__ = ["VectorPoolWalker"]


class VectorPoolWalker(wiring.Component):
    """Walks ``output row > output column > channel tile > ky > kx`` over the taps of each window that fall
    inside the input (out-of-bounds taps are skipped, they cost nothing), one tap per cycle while `step`.

    Ports: `init` (pulse: load the first window; the engine pulses it at the end of its setup whatever the
    opcode), `step` (take the current tap and advance), `avg` (AVGPOOL: the tag counts the window's taps; else
    1), `desc`, `tap` (`vector_common.pool_tap_layout`: row, column and tile of the input word, the window's
    first/last tap and its tap count; zero unless `step`), `first_empty` (combinational: the first
    window lies wholly in the padding), `word` (the current tap is its window's last: an output word is
    issued), `fail` (with `step`: the next window lies wholly in the padding, the walk stops there) and
    `finish` (with `step`: the last tap of the last window).

    Latency: `tap` is combinational from the walk's registers (first tap the cycle after `init`); `sum over
    windows of in-bounds taps` steps in all. No back-pressure: the engine steps it every cycle of its POOL
    state.
    """

    def __init__(self):
        super().__init__({
            "init": In(1), "step": In(1), "avg": In(1), "desc": In(descriptor_layout()),
            "tap": Out(pool_tap_layout()),
            "first_empty": Out(1), "word": Out(1), "fail": Out(1), "finish": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d, tap = self.desc, self.tap
        # Output pixel, channel tile and window tap; window origin and its in-bounds tap range.
        po_y, po_x, po_ct = Signal(16), Signal(16), Signal(16)
        po_ky, po_kx = Signal(8), Signal(8)
        po_iy0, po_ix0 = Signal(signed(26)), Signal(signed(26))
        ky_lo, ky_hi, kx_lo, kx_hi = (Signal(signed(27), name=n) for n in ("ky_lo", "ky_hi", "kx_lo", "kx_hi"))
        kx_lo0, kx_hi0 = Signal(signed(27)), Signal(signed(27))   # of the first column of windows

        # Window bounds of the next column / row of windows and of the first column.
        nx_ix0 = po_ix0 + d.stride_w
        ny_iy0 = po_iy0 + d.stride_h
        nkx_lo, nkx_hi = bounds(nx_ix0, d.kernel_w, d.in_w)
        nky_lo, nky_hi = bounds(ny_iy0, d.kernel_h, d.in_h)
        first_iy0 = -d.pad_top
        first_ix0 = -d.pad_left
        fky_lo, fky_hi = bounds(first_iy0, d.kernel_h, d.in_h)
        fkx_lo, fkx_hi = bounds(first_ix0, d.kernel_w, d.in_w)
        po_count = Signal(16)
        m.d.comb += [po_count.eq((ky_hi - ky_lo)[:8] * (kx_hi - kx_lo)[:8]),
                     self.first_empty.eq((fky_lo >= fky_hi) | (fkx_lo >= fkx_hi))]

        with m.If(self.init):
            m.d.sync += [
                po_y.eq(0), po_x.eq(0), po_ct.eq(0), po_iy0.eq(first_iy0), po_ix0.eq(first_ix0),
                ky_lo.eq(fky_lo), ky_hi.eq(fky_hi), kx_lo.eq(fkx_lo), kx_hi.eq(fkx_hi),
                kx_lo0.eq(fkx_lo), kx_hi0.eq(fkx_hi), po_ky.eq(fky_lo), po_kx.eq(fkx_lo),
            ]
        with m.Elif(self.step):
            m.d.comb += [
                tap.row.eq((po_iy0 + po_ky)[:16]), tap.col.eq((po_ix0 + po_kx)[:16]), tap.tile.eq(po_ct),
                tap.first.eq((po_ky == ky_lo[:8]) & (po_kx == kx_lo[:8])),
                tap.last.eq((po_ky == (ky_hi - 1)[:8]) & (po_kx == (kx_hi - 1)[:8])),
                tap.count.eq(Mux(self.avg, po_count, 1)),
            ]
            with m.If(po_kx != (kx_hi - 1)[:8]):
                m.d.sync += po_kx.eq(po_kx + 1)
            with m.Elif(po_ky != (ky_hi - 1)[:8]):
                m.d.sync += [po_ky.eq(po_ky + 1), po_kx.eq(kx_lo)]
            with m.Else():
                m.d.comb += self.word.eq(1)
                with m.If(po_ct != d.out_ct - 1):
                    m.d.sync += [po_ct.eq(po_ct + 1), po_ky.eq(ky_lo), po_kx.eq(kx_lo)]
                with m.Elif(po_x != d.out_w - 1):
                    m.d.sync += [po_ct.eq(0), po_x.eq(po_x + 1), po_ix0.eq(nx_ix0), kx_lo.eq(nkx_lo),
                                 kx_hi.eq(nkx_hi), po_ky.eq(ky_lo), po_kx.eq(nkx_lo)]
                    m.d.comb += self.fail.eq(nkx_lo >= nkx_hi)
                with m.Elif(po_y != d.out_h - 1):
                    m.d.sync += [po_ct.eq(0), po_x.eq(0), po_y.eq(po_y + 1), po_iy0.eq(ny_iy0),
                                 po_ix0.eq(first_ix0), ky_lo.eq(nky_lo), ky_hi.eq(nky_hi),
                                 kx_lo.eq(kx_lo0), kx_hi.eq(kx_hi0), po_ky.eq(nky_lo), po_kx.eq(kx_lo0)]
                    m.d.comb += self.fail.eq(nky_lo >= nky_hi)
                with m.Else():
                    m.d.comb += self.finish.eq(1)
        return m
