"""ISP front end: crops the RAW10 Bayer readout, bins RGGB blocks into RGB sums in a line buffer and quantizes
them to the network's int8 input tensor while the frame is still arriving."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .streams import pixel_beat_stream, tensor_pixel_stream

__all__ = ["ISPFrontEnd"]


class ISPFrontEnd(wiring.Component):
    """Crop, (2k x 2k) RGGB binning and integer input quantization, streaming at `pixels_per_clock` pixels/clock.

    For every input-tensor pixel the (2k x 2k) Bayer block (k = `config.bin_factor`) of the crop
    (`config.crop_x/y/width/height`) is summed per channel (S_R of k*k samples, S_G of 2*k*k, S_B of k*k) and
    quantized as `clamp(-128, 127, (S_c * mult[c] + offset) >> config.isp_shift)`; `quant.isp.isp_reference` is
    the bit-exact model and `quant.isp.isp_quant_params` computes `mult` and `offset`. Output is raster order
    over the tensor, `first` on pixel (0, 0) and `last` on the final pixel.

    Line buffer: one `Memory` entry per tensor column holds the three running sums of the current bin row; a
    pixel is emitted as soon as the beat that completes its bin arrives, during the last Bayer row of each bin
    row, so only `input_width` entries are ever stored. Beats outside the crop are consumed and ignored. At most
    one tensor pixel leaves per accepted beat, so the ISP keeps up with the readout at full rate.

    `mult` and `offset` are sampled by the pixels in flight (stages 2 and 3); hold them stable during a frame.

    Latency: `latency` = 3 cycles from the clock cycle in which the beat completing a tensor pixel is accepted
    to the cycle in which that pixel is valid on `out`, without back-pressure. The tensor's `last` pixel is
    therefore valid 3 cycles after the crop's final beat (the frame's final beat when the crop reaches the
    bottom-right corner); beats after the crop do not delay it.

    Back-pressure: the whole pipeline advances together. While `out` holds a pixel that is not accepted,
    `pixels.ready` is low (combinationally from `out.ready`) and nothing moves, so no data is lost; the die
    normally keeps `out.ready` high and then `pixels.ready` is always high. `out.valid` never waits for
    `out.ready`.

    Bad input: geometry comes from counters, the markers are only checked. `frame_first` always restarts the
    counters at (0, 0), so the die recovers at the next frame start. Each of these counts one `frame_errors`
    (saturating): a `frame_first` while a frame is still incomplete (a missing end of frame); a beat whose
    `line_first`/`line_last`/`frame_last` disagree with the counters (a short or long line), which also aborts
    the frame; a beat outside any frame (once per run of such beats). Beats of an aborted frame are consumed and
    dropped until the next `frame_first`. Tensor pixels of an aborted frame that were already emitted stay
    emitted: that tensor has `first` but no `last`, and the next frame starts a fresh one with `first`. The
    line buffer needs no clearing: the first row of every bin row overwrites its sums.

    Status: `busy` is high while a frame is being received or a pixel is in the pipeline; `done` pulses for one
    cycle after the transfer of a tensor's `last` pixel.
    """

    def __init__(self, config):
        try:
            self._check_geometry(config)
        except ValueError:
            self._MustUse__silence = True       # a component that failed to construct is not "unused"
            raise
        self.config = config
        super().__init__({
            "pixels": In(pixel_beat_stream(config.pixels_per_clock)),
            "out": Out(tensor_pixel_stream(3)),
            "mult": In(data.ArrayLayout(unsigned(24), 3)),
            "offset": In(signed(32)),
            "frame_errors": Out(16),
            "busy": Out(1),
            "done": Out(1),
        })

    @staticmethod
    def _check_geometry(cfg):
        # The crop geometry is read from the config; these are the alignments the datapath relies on.
        P = cfg.pixels_per_clock
        k = cfg.bin_factor
        if cfg.crop_x % max(2, P) or cfg.crop_y % 2:
            raise ValueError(f"config {cfg.name!r}: crop origin ({cfg.crop_x}, {cfg.crop_y}) must be on an RGGB "
                             f"quad and crop_x a multiple of pixels_per_clock {P}")
        if (2 * k) % P:
            raise ValueError(f"config {cfg.name!r}: pixels_per_clock {P} does not divide the bin width {2 * k}")
        if not (0 <= cfg.crop_x and cfg.crop_x + cfg.crop_width <= cfg.frame_width and
                0 <= cfg.crop_y and cfg.crop_y + cfg.crop_height <= cfg.frame_height):
            raise ValueError(f"config {cfg.name!r}: crop {cfg.crop_width}x{cfg.crop_height} at "
                             f"({cfg.crop_x}, {cfg.crop_y}) leaves the {cfg.frame_width}x{cfg.frame_height} frame")

    @property
    def latency(self):
        """Cycles from accepting the beat that completes a tensor pixel to that pixel being valid on `out`."""
        return 3

    @property
    def sum_widths(self):
        """Bit widths of the bin sums (S_R, S_G, S_B)."""
        k = self.config.bin_factor
        return ((k * k * 1023).bit_length(), (2 * k * k * 1023).bit_length(), (k * k * 1023).bit_length())

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P = cfg.pixels_per_clock
        k = cfg.bin_factor
        beats_per_line = cfg.frame_width // P
        beats_per_bin = 2 * k // P          # beats of one bin within one Bayer row
        cx0 = cfg.crop_x // P               # crop in beats: [cx0, cx1)
        cx1 = cx0 + cfg.crop_width // P
        cy0, cy1 = cfg.crop_y, cfg.crop_y + cfg.crop_height
        iw, ih = cfg.input_width, cfg.input_height
        widths = self.sum_widths
        sums_layout = data.StructLayout({"r": widths[0], "g": widths[1], "b": widths[2]})

        # The whole pipeline moves only when the output register is free or being emptied.
        advance = Signal()
        m.d.comb += advance.eq(~self.out.valid | self.out.ready)
        m.d.comb += self.pixels.ready.eq(advance)
        take = Signal()
        m.d.comb += take.eq(self.pixels.valid & advance)
        beat = self.pixels.payload

        # ---- Stage 0: position counters, marker checks, horizontal accumulation ----
        # At least one bit each: yosys writes a zero-width signal as a [-1:0] wire, which lint flags.
        bx = Signal(range(max(beats_per_line, 2)))   # beat in line
        y = Signal(range(cfg.frame_height))          # Bayer row
        hb = Signal(range(max(beats_per_bin, 2)))    # beat within the current bin (in the crop)
        ox = Signal(range(iw + 1))                   # tensor column of the current bin
        ry = Signal(range(2 * k))                    # Bayer row within the current bin row
        oy = Signal(range(ih + 1))                   # tensor row of the current bin row
        in_frame = Signal()                          # a frame has started and is not complete
        quiet = Signal()                             # dropping beats without counting, until the next frame_first

        # frame_first restarts geometry: that beat is at (0, 0) whatever the counters say.
        ff = beat.frame_first
        c_bx, c_y, c_hb, c_ox, c_ry, c_oy = (Signal.like(s, name=f"cur_{s.name}") for s in (bx, y, hb, ox, ry, oy))
        for cur, reg in ((c_bx, bx), (c_y, y), (c_hb, hb), (c_ox, ox), (c_ry, ry), (c_oy, oy)):
            m.d.comb += cur.eq(Mux(ff, 0, reg))

        def in_range(value, lo, hi, top):
            # Only the comparisons that cut something, so the Verilog has no always-true compares.
            result = 1
            if lo > 0:
                result = value >= lo
            if hi < top:
                result = (value < hi) if lo == 0 else result & (value < hi)
            return result

        in_x, in_y = Signal(), Signal()
        m.d.comb += [
            in_x.eq(in_range(c_bx, cx0, cx1, beats_per_line)),
            in_y.eq(in_range(c_y, cy0, cy1, cfg.frame_height)),
        ]
        line_end = Signal()
        frame_end = Signal()
        m.d.comb += [
            line_end.eq(c_bx == beats_per_line - 1),
            frame_end.eq(line_end & (c_y == cfg.frame_height - 1)),
        ]
        mismatch = Signal()
        m.d.comb += mismatch.eq((beat.line_first != (c_bx == 0)) | (beat.line_last != line_end) |
                                (beat.frame_last != frame_end))
        active = Signal()                        # the beat belongs to a frame being received
        use = Signal()                           # the beat is a good beat of that frame
        error = Signal()
        m.d.comb += [
            active.eq(ff | in_frame),
            use.eq(take & active & ~mismatch),
            error.eq(take & ((ff & in_frame) | (active & mismatch) | (~active & ~quiet))),
        ]

        with m.If(error & (self.frame_errors != 0xFFFF)):
            m.d.sync += self.frame_errors.eq(self.frame_errors + 1)
        with m.If(take):
            with m.If(use):
                m.d.sync += [in_frame.eq(~frame_end), quiet.eq(0)]
            with m.Elif(active | error):
                # A marker mismatch aborts the frame; a stray beat is reported once.
                m.d.sync += [in_frame.eq(0), quiet.eq(1)]

        # Counter advance for a good beat.
        with m.If(use):
            with m.If(line_end):
                m.d.sync += [bx.eq(0), hb.eq(0), ox.eq(0), y.eq(Mux(frame_end, 0, c_y + 1))]
                with m.If(in_y):
                    with m.If(c_ry == 2 * k - 1):
                        m.d.sync += [ry.eq(0), oy.eq(c_oy + 1)]
                    with m.Else():
                        m.d.sync += [ry.eq(c_ry + 1), oy.eq(c_oy)]
                with m.Else():
                    m.d.sync += [ry.eq(c_ry), oy.eq(c_oy)]
            with m.Else():
                m.d.sync += [bx.eq(c_bx + 1), y.eq(c_y), ry.eq(c_ry), oy.eq(c_oy)]
                with m.If(in_x):
                    with m.If(c_hb == beats_per_bin - 1):
                        m.d.sync += [hb.eq(0), ox.eq(c_ox + 1)]
                    with m.Else():
                        m.d.sync += [hb.eq(c_hb + 1), ox.eq(c_ox)]
                with m.Else():
                    m.d.sync += [hb.eq(c_hb), ox.eq(c_ox)]

        # Colour of each pixel of the beat. crop_x and crop_y are even and bins are 2k wide, so the parities
        # within the crop are those of the frame: row parity = ry[0]; column parity = i for P >= 2 (beats
        # start on even columns) and hb[0] for P = 1.
        row_odd = c_ry[0]
        contrib_r, contrib_g, contrib_b = (Signal(w, name=f"contrib_{c}") for w, c in zip(widths, "rgb"))
        pix = [beat.pixels[i] for i in range(P)]
        if P == 1:
            col_odd = c_hb[0]
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

        # Horizontal sums of the current bin within the current row.
        h_acc = Signal(sums_layout)
        h_sum = Signal(sums_layout)
        restart = c_hb == 0
        m.d.comb += [
            h_sum.r.eq(Mux(restart, 0, h_acc.r) + contrib_r),
            h_sum.g.eq(Mux(restart, 0, h_acc.g) + contrib_g),
            h_sum.b.eq(Mux(restart, 0, h_acc.b) + contrib_b),
        ]
        in_crop = Signal()
        bin_row_done = Signal()                  # this beat completes its bin's part of this Bayer row
        m.d.comb += [
            in_crop.eq(use & in_x & in_y),
            bin_row_done.eq(in_crop & (c_hb == beats_per_bin - 1)),
        ]
        with m.If(in_crop):
            m.d.sync += h_acc.eq(h_sum)

        # ---- Line buffer: running sums of the current bin row, one entry per tensor column ----
        # Transparent read: a bin column read in the same cycle as stage 1 writes it (one-column tensors,
        # back-to-back lines) must see the new sums.
        m.submodules.linebuf = linebuf = Memory(shape=sums_layout, depth=iw, init=[])
        wr = linebuf.write_port()
        rd = linebuf.read_port(transparent_for=(wr,))
        m.d.comb += [rd.addr.eq(c_ox), rd.en.eq(advance)]

        # ---- Stage 1: add the row's horizontal sums to the bin's running sums ----
        s1_valid = Signal()
        s1_ox = Signal.like(ox)
        s1_vfirst = Signal()                     # first row of the bin row: the stored sums are stale
        s1_vlast = Signal()                      # last row: the bin is complete, emit it
        s1_first = Signal()
        s1_last = Signal()
        s1_h = Signal(sums_layout)
        with m.If(advance):
            m.d.sync += s1_valid.eq(bin_row_done)
            with m.If(bin_row_done):
                m.d.sync += [
                    s1_ox.eq(c_ox),
                    s1_vfirst.eq(c_ry == 0),
                    s1_vlast.eq(c_ry == 2 * k - 1),
                    s1_first.eq((c_ox == 0) & (c_oy == 0)),
                    s1_last.eq((c_ox == iw - 1) & (c_oy == ih - 1)),
                    s1_h.eq(h_sum),
                ]
        total = Signal(sums_layout)
        stored = rd.data
        m.d.comb += [
            total.r.eq(Mux(s1_vfirst, 0, stored.r) + s1_h.r),
            total.g.eq(Mux(s1_vfirst, 0, stored.g) + s1_h.g),
            total.b.eq(Mux(s1_vfirst, 0, stored.b) + s1_h.b),
            wr.addr.eq(s1_ox),
            wr.data.eq(total),
            wr.en.eq(advance & s1_valid & ~s1_vlast),
        ]

        # ---- Stage 2: the three channel multiplies ----
        s2_valid = Signal()
        s2_first = Signal()
        s2_last = Signal()
        s2_prod = [Signal(w + 24, name=f"s2_prod_{c}") for w, c in zip(widths, "rgb")]
        with m.If(advance):
            m.d.sync += [
                s2_valid.eq(s1_valid & s1_vlast),
                s2_first.eq(s1_first),
                s2_last.eq(s1_last),
            ]
            for prod, s, mult in zip(s2_prod, (total.r, total.g, total.b), self.mult):
                m.d.sync += prod.eq(s * mult)

        # ---- Stage 3 (output register): offset, arithmetic shift, saturation ----
        with m.If(advance):
            m.d.sync += [
                self.out.valid.eq(s2_valid),
                self.out.payload.first.eq(s2_first),
                self.out.payload.last.eq(s2_last),
            ]
            for c, prod in enumerate(s2_prod):
                # prod < 2**(w+24) and |offset| < 2**31: one bit above the wider of the two is enough.
                acc = Signal(signed(max(prod.shape().width, 31) + 2), name=f"s3_acc_{'rgb'[c]}")
                m.d.comb += acc.eq(prod + self.offset)
                shifted = acc >> cfg.isp_shift     # arithmetic: acc is signed, so this floors
                m.d.sync += self.out.payload.data[c].eq(
                    Mux(shifted < -128, -128, Mux(shifted > 127, 127, shifted[:8].as_signed())))

        m.d.sync += self.done.eq(self.out.valid & self.out.ready & self.out.payload.last)
        m.d.comb += self.busy.eq(in_frame | s1_valid | s2_valid | self.out.valid)
        return m

