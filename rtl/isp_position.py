"""ISP front-end component: stage 0's position counters, the frame markers' checks and the error counts."""

from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .isp_geometry import hb_top, sampled_geometry_layout
from .streams import pixel_beat_layout

__all__ = ["ISPPositionTracker", "bin_position_layout"]


def bin_position_layout(config, kmax):
    """Where a beat falls in the output (`ISPPositionTracker.pos`), for the bin accumulator."""
    return data.StructLayout({
        "crop": 1,                                   # a good beat inside the crop: it is accumulated
        "hb": range(hb_top(config, kmax)),          # beat within its bin (this row)
        "ox": range(config.input_width + 1),         # tensor column of its bin
        "ry": range(2 * kmax),                       # Bayer row within the bin row
        "x_end": 1,                                  # the beat is the last of its bin in this row
        "y_end": 1,                                  # the row is the last of its bin row
        "first": 1, "last": 1,                       # the bin is the tensor's first / last pixel
    })


class ISPPositionTracker(wiring.Component):
    """Counts where each beat falls (beat in line, Bayer row, beat within the bin, bin column, row within the
    bin row, bin row) and checks the beat's markers against the counters.

    Ports: `take` (a beat is accepted this cycle), `beat` (its markers are read), `geo` (the frame's geometry,
    `ISPGeometrySampler.cur`), `geo_bad` (the port's geometry is refused), `pos` (`bin_position_layout`,
    combinational: where the beat falls; `crop` only for a good beat inside the crop), `in_frame` (a frame
    has started and is not complete), `frame_errors` and `geometry_error` (the ISP's status ports).

    `frame_first` restarts the counters at (0, 0). The crop starts at the sampled origin and ends where the bin
    counters reach the output size. Counted as one frame error each (saturating, at most one per beat): a
    `frame_first` inside a frame, a marker that disagrees with the counters (the frame is aborted), a beat
    outside any frame (once per run), a refused geometry (the frame is dropped), a crop leaving the frame on
    the right (found at the end of its first crop line) or at the bottom (found at the frame's last beat);
    `geometry_error` is high from a refused geometry or a crop leaving the frame to the next `frame_first`.

    Latency: `pos` is combinational from the beat and the counters, which advance with each accepted beat.
    Back-pressure: none of its own; nothing moves while `take` is low.
    """

    def __init__(self, config, max_bin_factor):
        self.config = config
        self.max_bin_factor = max_bin_factor
        super().__init__({
            "take": In(1), "beat": In(pixel_beat_layout(config.pixels_per_clock)),
            "geo": In(sampled_geometry_layout(config, max_bin_factor)), "geo_bad": In(1),
            "pos": Out(bin_position_layout(config, max_bin_factor)), "in_frame": Out(1),
            "frame_errors": Out(16), "geometry_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        kmax = self.max_bin_factor
        beats_per_line = cfg.frame_width // cfg.pixels_per_clock
        iw, ih = cfg.input_width, cfg.input_height
        take, beat, cur, geo_bad, in_frame = self.take, self.beat, self.geo, self.geo_bad, self.in_frame
        ff = beat.frame_first
        sample = take & ff

        # At least one bit each: yosys writes a zero-width signal as a [-1:0] wire, which lint flags.
        bx = Signal(range(max(beats_per_line, 2)))   # beat in line
        y = Signal(range(cfg.frame_height))          # Bayer row
        hb = Signal(range(hb_top(cfg, kmax)))       # beat within the current bin (in the crop)
        ox = Signal(range(iw + 1))                   # tensor column of the current bin
        ry = Signal(range(2 * kmax))                 # Bayer row within the current bin row
        oy = Signal(range(ih + 1))                   # tensor row of the current bin row
        quiet = Signal()                             # dropping beats without counting, until the next frame_first

        # frame_first restarts the counters: that beat is at (0, 0) whatever they say.
        c_bx, c_y, c_hb, c_ox, c_ry, c_oy = (Signal.like(s, name=f"cur_{s.name}") for s in (bx, y, hb, ox, ry, oy))
        for c, reg in ((c_bx, bx), (c_y, y), (c_hb, hb), (c_ox, ox), (c_ry, ry), (c_oy, oy)):
            m.d.comb += c.eq(Mux(ff, 0, reg))
        # The counters' comparisons are made on the registers and on the restart values in parallel, the beat's
        # frame_first choosing: the marker (from the pixel port) enters them last.
        regs = SimpleNamespace(bx=bx, y=y, hb=hb, ox=ox, ry=ry, oy=oy)
        zeros = SimpleNamespace(**{name: Const(0, len(reg)) for name, reg in vars(regs).items()})

        def seen(f):
            return Mux(ff, f(zeros), f(regs))

        in_x, in_y = Signal(), Signal()
        m.d.comb += [
            in_x.eq(seen(lambda c: (c.bx >= cur.cx0) & (c.ox < cur.ow))),
            in_y.eq(seen(lambda c: (c.y >= cur.cy0) & (c.oy < cur.oh))),
        ]
        line_end = Signal()
        frame_end = Signal()
        m.d.comb += [
            line_end.eq(seen(lambda c: c.bx == beats_per_line - 1)),
            frame_end.eq(seen(lambda c: (c.bx == beats_per_line - 1) & (c.y == cfg.frame_height - 1))),
        ]
        bin_x_end = Signal()                         # the beat is the last of its bin within this row
        bin_y_end = Signal()                         # the row is the last of its bin row
        m.d.comb += [
            bin_x_end.eq(seen(lambda c: c.hb == cur.hb_last)),
            bin_y_end.eq(seen(lambda c: c.ry == cur.ry_last)),
        ]
        mismatch = Signal()
        m.d.comb += mismatch.eq((beat.line_first != seen(lambda c: c.bx == 0)) | (beat.line_last != line_end) |
                                (beat.frame_last != frame_end))
        active = Signal()                        # the beat belongs to a frame being received
        use = Signal()                           # the beat is a good beat of that frame
        m.d.comb += [
            active.eq(ff | in_frame),
            use.eq(take & active & ~mismatch & ~(ff & geo_bad)),
        ]
        # A crop that leaves the frame: a crop row ending before all its bins are complete, or the frame ending
        # before all bin rows are.
        crop_short_x = Signal()
        crop_short_y = Signal()
        m.d.comb += [
            crop_short_x.eq(use & line_end & in_y & ~(seen(lambda c: c.ox == cur.ow) |
                                                      (in_x & bin_x_end & seen(lambda c: c.ox == cur.ow_last)))),
            crop_short_y.eq(use & frame_end & ~(seen(lambda c: c.oy == cur.oh) |
                                                (in_y & bin_y_end & seen(lambda c: c.oy == cur.oh_last)))),
        ]
        error = Signal()
        m.d.comb += error.eq(take & ((ff & in_frame) | (ff & geo_bad) | (active & mismatch) |
                                     (~active & ~quiet) | crop_short_x | crop_short_y))

        with m.If(error & (self.frame_errors != 0xFFFF)):
            m.d.sync += self.frame_errors.eq(self.frame_errors + 1)
        with m.If(take):
            with m.If(use & ~crop_short_x):
                m.d.sync += [in_frame.eq(~frame_end), quiet.eq(0)]
            with m.Elif(active | error):
                # A marker mismatch or a refused geometry aborts the frame; a stray beat is reported once.
                m.d.sync += [in_frame.eq(0), quiet.eq(1)]
        with m.If(sample):
            m.d.sync += self.geometry_error.eq(geo_bad)
        with m.If(crop_short_x | crop_short_y):
            m.d.sync += self.geometry_error.eq(1)

        # Counter advance for a good beat.
        with m.If(use):
            with m.If(line_end):
                m.d.sync += [bx.eq(0), hb.eq(0), ox.eq(0), y.eq(Mux(frame_end, 0, c_y + 1))]
                with m.If(in_y):
                    with m.If(bin_y_end):
                        m.d.sync += [ry.eq(0), oy.eq(c_oy + 1)]
                    with m.Else():
                        m.d.sync += [ry.eq(c_ry + 1), oy.eq(c_oy)]
                with m.Else():
                    m.d.sync += [ry.eq(c_ry), oy.eq(c_oy)]
            with m.Else():
                m.d.sync += [bx.eq(c_bx + 1), y.eq(c_y), ry.eq(c_ry), oy.eq(c_oy)]
                with m.If(in_x):
                    with m.If(bin_x_end):
                        m.d.sync += [hb.eq(0), ox.eq(c_ox + 1)]
                    with m.Else():
                        m.d.sync += [hb.eq(c_hb + 1), ox.eq(c_ox)]
                with m.Else():
                    m.d.sync += [hb.eq(c_hb), ox.eq(c_ox)]

        pos = self.pos
        m.d.comb += [
            pos.crop.eq(use & in_x & in_y), pos.hb.eq(c_hb), pos.ox.eq(c_ox), pos.ry.eq(c_ry),
            pos.x_end.eq(bin_x_end), pos.y_end.eq(bin_y_end),
            pos.first.eq(seen(lambda c: (c.ox == 0) & (c.oy == 0))),
            pos.last.eq(seen(lambda c: (c.ox == cur.ow_last) & (c.oy == cur.oh_last))),
        ]
        return m
