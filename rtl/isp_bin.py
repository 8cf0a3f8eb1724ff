"""ISP front-end component: the crop's binning, horizontal sums and the line buffer of bin-row sums."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .isp_position import bin_position_layout

__all__ = ["ISPBinAccumulator", "bin_sums_layout", "bin_layout"]


def bin_sums_layout(widths):
    """A bin's three channel sums S_R, S_G, S_B, of `widths` bits."""
    return data.StructLayout({"r": widths[0], "g": widths[1], "b": widths[2]})


def bin_layout(widths):
    """A complete bin (`ISPBinAccumulator.bin`): its sums and whether it is the tensor's first / last pixel."""
    return data.StructLayout({"valid": 1, "first": 1, "last": 1, "sums": bin_sums_layout(widths)})


class ISPBinAccumulator(wiring.Component):
    """Sums each (2k x 2k) RGGB block of the crop per channel: S_R (k*k samples), S_G (2*k*k), S_B (k*k).

    Stage 0 adds each beat's samples to the horizontal sums of its bin in the current Bayer row (colour by the
    row's and the column's parity: crop_x and crop_y are even and bins are 2k wide, so the parities within the
    crop are those of the frame; a beat of P >= 2 pixels starts on an even column). Stage 1 adds a bin's row
    sums, when its last beat in the row arrives, to the bin row's running sums in the line buffer (one
    `Memory` entry per output column, `input_width` entries; the first row of a bin row overwrites the stale
    entry, so it is never cleared); in the bin row's last Bayer row the total is the complete bin.

    Ports: `advance` (the pipeline moves this cycle), `pixels` (the beat's samples), `pos` (where the beat
    falls, `ISPPositionTracker.pos`), `bin` (`bin_layout`, combinational from stage 1: a complete bin) and
    `busy` (stage 1 holds a bin row's sums).

    Latency: a bin is on `bin` the cycle after the beat that completes it is taken. Back-pressure: stage 1 and
    the line buffer's read hold while `advance` is low (the beat is not taken then, so stage 0 holds too).
    """

    def __init__(self, config, max_bin_factor, widths):
        self.config = config
        self.widths = widths
        super().__init__({
            "advance": In(1), "pixels": In(data.ArrayLayout(10, config.pixels_per_clock)),
            "pos": In(bin_position_layout(config, max_bin_factor)),
            "bin": Out(bin_layout(widths)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P = cfg.pixels_per_clock
        widths = self.widths
        sums_layout = bin_sums_layout(widths)
        advance, pos = self.advance, self.pos

        # ---- Stage 0: each pixel's colour, horizontal sums of the current bin within the current row ----
        row_odd = pos.ry[0]
        contrib_r, contrib_g, contrib_b = (Signal(w, name=f"contrib_{c}") for w, c in zip(widths, "rgb"))
        pix = [self.pixels[i] for i in range(P)]
        if P == 1:
            col_odd = pos.hb[0]
            m.d.comb += [
                contrib_r.eq(Mux(~row_odd & ~col_odd, pix[0], 0)),
                contrib_g.eq(Mux(row_odd ^ col_odd, pix[0], 0)),
                contrib_b.eq(Mux(row_odd & col_odd, pix[0], 0)),
            ]
        else:
            even = sum(pix[0::2])
            odd = sum(pix[1::2])
            m.d.comb += [
                contrib_r.eq(Mux(row_odd, 0, even)),
                contrib_g.eq(Mux(row_odd, even, odd)),
                contrib_b.eq(Mux(row_odd, odd, 0)),
            ]
        h_acc = Signal(sums_layout)
        h_sum = Signal(sums_layout)
        restart = pos.hb == 0
        m.d.comb += [
            h_sum.r.eq(Mux(restart, 0, h_acc.r) + contrib_r),
            h_sum.g.eq(Mux(restart, 0, h_acc.g) + contrib_g),
            h_sum.b.eq(Mux(restart, 0, h_acc.b) + contrib_b),
        ]
        bin_row_done = Signal()                  # this beat completes its bin's part of this Bayer row
        m.d.comb += bin_row_done.eq(pos.crop & pos.x_end)
        with m.If(pos.crop):
            m.d.sync += h_acc.eq(h_sum)

        # ---- Line buffer: running sums of the current bin row, one entry per output column ----
        # Transparent read: a bin column read in the same cycle as stage 1 writes it (one-column tensors,
        # back-to-back lines) must see the new sums.
        m.submodules.linebuf = linebuf = Memory(shape=sums_layout, depth=cfg.input_width, init=[])
        wr = linebuf.write_port()
        rd = linebuf.read_port(transparent_for=(wr,))
        m.d.comb += [rd.addr.eq(pos.ox), rd.en.eq(advance)]

        # ---- Stage 1: add the row's horizontal sums to the bin's running sums ----
        s1_valid = Signal()
        s1_ox = Signal(range(cfg.input_width + 1))
        s1_vfirst = Signal()                     # first row of the bin row: the stored sums are stale
        s1_vlast = Signal()                      # last row: the bin is complete, emit it
        s1_first = Signal()
        s1_last = Signal()
        s1_h = Signal(sums_layout)
        with m.If(advance):
            m.d.sync += s1_valid.eq(bin_row_done)
            with m.If(bin_row_done):
                m.d.sync += [
                    s1_ox.eq(pos.ox),
                    s1_vfirst.eq(pos.ry == 0),
                    s1_vlast.eq(pos.y_end),
                    s1_first.eq(pos.first),
                    s1_last.eq(pos.last),
                    s1_h.eq(h_sum),
                ]
        total = self.bin.sums
        stored = rd.data
        m.d.comb += [
            total.r.eq(Mux(s1_vfirst, 0, stored.r) + s1_h.r),
            total.g.eq(Mux(s1_vfirst, 0, stored.g) + s1_h.g),
            total.b.eq(Mux(s1_vfirst, 0, stored.b) + s1_h.b),
            wr.addr.eq(s1_ox),
            wr.data.eq(total),
            wr.en.eq(advance & s1_valid & ~s1_vlast),
            self.bin.valid.eq(s1_valid & s1_vlast),
            self.bin.first.eq(s1_first),
            self.bin.last.eq(s1_last),
            self.busy.eq(s1_valid),
        ]
        return m
