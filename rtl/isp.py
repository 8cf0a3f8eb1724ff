"""ISP front end: crops the RAW10 Bayer readout, bins RGGB blocks into RGB sums in a line buffer and quantizes
them to the network's int8 input tensor while the frame is still arriving."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stackcam.quant.isp import GEOMETRY_BITS, MULT_BITS, OFFSET_BITS, IspGeometry

from .streams import pixel_beat_stream, tensor_pixel_stream

__all__ = ["ISPFrontEnd", "geometry_layout", "geometry_const"]

# The runtime geometry port: field widths come from `quant.isp.GEOMETRY_BITS`, the same for every
# configuration so the host's registers do not depend on it (16 bits address any frame up to 65536 pixels wide).
geometry_layout = data.StructLayout({name: unsigned(bits) for name, bits in GEOMETRY_BITS.items()})


def geometry_const(geometry):
    """The `ISPFrontEnd.geometry` port value (a `data.Const` of `geometry_layout`) for an `IspGeometry`."""
    if not isinstance(geometry, IspGeometry):
        raise TypeError(f"geometry_const: expected an IspGeometry, got {geometry!r}")
    return geometry_layout.const({name: getattr(geometry, name) for name in GEOMETRY_BITS})


class ISPFrontEnd(wiring.Component):
    """Crop, (2k x 2k) RGGB binning and integer input quantization, streaming at `pixels_per_clock` pixels/clock.

    Geometry is runtime: the `geometry` port (`geometry_layout`: crop_x, crop_y, bin_factor k, out_width,
    out_height, see `quant.isp.IspGeometry`) is sampled together with `mult` and `offset` at every accepted
    beat with `frame_first`, and that frame runs with the sampled values whatever the ports do afterwards, so
    the host may rewrite them at any time and they take effect at the next frame start. The port's initial
    value is the config's geometry (`IspGeometry.default(config)`), so an undriven port runs it. The config
    fixes the frame, `pixels_per_clock` and the largest output, `input_width x input_height` (`input_width` is
    the depth of the line buffer); `max_bin_factor` (default: the largest k whose 2k x 2k bin fits the frame,
    at most 255) sizes the bin sums and the multipliers.

    For every output pixel the (2k x 2k) Bayer block of the crop is summed per channel (S_R of k*k samples,
    S_G of 2*k*k, S_B of k*k) and quantized as `clamp(-128, 127, (S_c * mult[c] + offset) >> config.isp_shift)`;
    `quant.isp.isp_reference(raw, config, quant, geometry)` is the bit-exact model and
    `quant.isp.isp_quant_params` computes `mult` and `offset` (they depend on k). Output is raster order over
    the out_width x out_height tensor, `first` on pixel (0, 0) and `last` on the final pixel.

    Bins are counted, not computed: a beat counter within the bin (2k / P beats), a bin column counter and a
    row-in-bin counter; the crop's right and bottom edges are where those counters reach out_width and
    out_height. No runtime multiplier or divider touches the geometry.

    Line buffer: one `Memory` entry per output column holds the three running sums of the current bin row; a
    pixel is emitted as soon as the beat that completes its bin arrives, during the last Bayer row of each bin
    row, so only `config.input_width` entries are ever stored. Beats outside the crop are consumed and ignored.
    At most one output pixel leaves per accepted beat, so the ISP keeps up with the readout at full rate.

    Latency: `latency` = 3 cycles from the clock cycle in which the beat completing an output pixel is accepted
    to the cycle in which that pixel is valid on `out`, without back-pressure. The tensor's `last` pixel is
    therefore valid 3 cycles after the crop's final beat (the frame's final beat when the crop reaches the
    bottom-right corner); beats after the crop do not delay it.

    Back-pressure: the whole pipeline advances together. While `out` holds a pixel that is not accepted,
    `pixels.ready` is low (combinationally from `out.ready`) and nothing moves, so no data is lost; the die
    normally keeps `out.ready` high and then `pixels.ready` is always high. `out.valid` never waits for
    `out.ready`.

    Bad input: positions come from counters, the markers are only checked. `frame_first` always restarts the
    counters at (0, 0), so the die recovers at the next frame start. Each of these counts one `frame_errors`
    (saturating; at most one per beat): a `frame_first` while a frame is still incomplete (a missing end of
    frame); a beat whose `line_first`/`line_last`/`frame_last` disagree with the counters (a short or long
    line), which also aborts the frame; a beat outside any frame (once per run of such beats); and a geometry
    that `IspGeometry.check(config)` refuses. Beats of an aborted frame are consumed and dropped until the next
    `frame_first`. Output pixels of an aborted frame that were already emitted stay emitted: that tensor has
    `first` but no `last`, and the next frame starts a fresh one with `first`. The line buffer needs no
    clearing: the first row of every bin row overwrites its sums.

    Bad geometry: checked without multipliers, at the point where it shows. At `frame_first`: k = 0 or above
    `max_bin_factor`, a bin width 2k that is not a multiple of P (odd k at P = 4), an empty output or one above
    `input_width x input_height`, a crop origin off the RGGB quad grid or (P = 4) off the beat grid, or a crop
    origin outside the frame: the frame is dropped from its first beat, nothing is emitted. A crop whose right
    edge leaves the frame is found at the end of its first line (fewer than out_width bins completed) and the
    frame is dropped there, before any pixel was emitted (the first line of a bin row never completes a bin).
    A crop whose bottom edge leaves the frame is found at the frame's last beat (fewer than out_height bin
    rows completed): its complete bin rows were already emitted, so that tensor has no `last`, as for an
    aborted frame. `geometry_error` is high from such a refusal until the next accepted `frame_first`.

    Status: `busy` is high while a frame is being received or a pixel is in the pipeline; `done` pulses for one
    cycle after the transfer of a tensor's `last` pixel.
    """

    @staticmethod
    def bin_limit(config, max_bin_factor=None):
        """The largest bin factor the ISP is built for: `max_bin_factor`, checked, or the largest that fits."""
        default = IspGeometry.default(config).check(config)
        limit = min((1 << GEOMETRY_BITS["bin_factor"]) - 1, config.frame_width // 2, config.frame_height // 2)
        if max_bin_factor is None:
            return limit
        if not (isinstance(max_bin_factor, int) and default.bin_factor <= max_bin_factor <= limit):
            raise ValueError(f"config {config.name!r}: max_bin_factor must be an integer in "
                             f"{default.bin_factor}..{limit} (the default geometry's k up to the largest bin "
                             f"that fits the frame), got {max_bin_factor!r}")
        return max_bin_factor

    def __new__(cls, config, *, max_bin_factor=None, **kwargs):
        cls.bin_limit(config, max_bin_factor)       # checked before the component exists
        return super().__new__(cls)

    def __init__(self, config, *, max_bin_factor=None):
        max_bin_factor = self.bin_limit(config, max_bin_factor)
        default = IspGeometry.default(config)
        self.config = config
        self.max_bin_factor = max_bin_factor
        self.default_geometry = default
        super().__init__({
            "pixels": In(pixel_beat_stream(config.pixels_per_clock)),
            "out": Out(tensor_pixel_stream(3)),
            "geometry": In(geometry_layout, init={name: getattr(default, name) for name in GEOMETRY_BITS}),
            "mult": In(data.ArrayLayout(unsigned(MULT_BITS), 3)),
            "offset": In(signed(OFFSET_BITS)),
            "frame_errors": Out(16),
            "geometry_error": Out(1),
            "busy": Out(1),
            "done": Out(1),
        })

    @property
    def latency(self):
        """Cycles from accepting the beat that completes a tensor pixel to that pixel being valid on `out`."""
        return 3

    @property
    def sum_widths(self):
        """Bit widths of the bin sums (S_R, S_G, S_B), for the largest bin factor."""
        k = self.max_bin_factor
        return ((k * k * 1023).bit_length(), (2 * k * k * 1023).bit_length(), (k * k * 1023).bit_length())

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P = cfg.pixels_per_clock
        log_p = P.bit_length() - 1
        align_bits = max(2, P).bit_length() - 1
        kmax = self.max_bin_factor
        beats_per_line = cfg.frame_width // P
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
        ff = beat.frame_first
        sample = Signal()                            # this beat starts a frame: take the geometry and constants
        m.d.comb += sample.eq(take & ff)

        # ---- Geometry: checked and sampled at frame_first ----
        port = self.geometry

        def above(value, limit):
            # value > limit, omitted when the field cannot exceed it (no always-false compares in the Verilog).
            return (value > limit) if limit < (1 << len(value)) - 1 else 0

        geo_bad = Signal()
        k = port.bin_factor
        m.d.comb += geo_bad.eq(
            (k == 0) | above(k, kmax) | (k[0] if P == 4 else 0) |
            (port.out_width == 0) | above(port.out_width, iw) |
            (port.out_height == 0) | above(port.out_height, ih) |
            (port.crop_x[:align_bits] != 0) | port.crop_y[0] |
            above(port.crop_x, cfg.frame_width - 1) | above(port.crop_y, cfg.frame_height - 1))

        # Sampled geometry in the form the counters compare against; on the frame_first beat itself the port
        # values are used directly (`cur_*`), as the counters use (0, 0) there.
        hb_top = max(2 * kmax // P, 2)
        geo = {                                      # name: (register shape, value from the port)
            "cx0": (range(max(beats_per_line, 2)), port.crop_x[log_p:]),      # crop origin in beats
            "cy0": (range(max(cfg.frame_height, 2)), port.crop_y),
            "ow": (range(iw + 1), port.out_width),
            "oh": (range(ih + 1), port.out_height),
            "ow_last": (range(max(iw, 2)), port.out_width - 1),
            "oh_last": (range(max(ih, 2)), port.out_height - 1),
            "hb_last": (range(hb_top), ((k << 1) >> log_p) - 1),             # beats per bin - 1
            "ry_last": (range(2 * kmax), (k << 1) - 1),                       # Bayer rows per bin - 1
        }
        cur = {}
        for name, (shape, from_port) in geo.items():
            reg = Signal(shape, name=f"geo_{name}")
            cur[name] = Signal(shape, name=f"cur_geo_{name}")
            m.d.comb += cur[name].eq(Mux(ff, from_port, reg))
            with m.If(sample):
                m.d.sync += reg.eq(from_port)
        # The constants too, so a host changing k (and with it mult) between frames needs no timing. The pixel
        # in stage 1 when a frame_first is taken belongs to the previous frame and still reads the old `mult_r`;
        # stage 2 carries its own copy of the offset for the same reason.
        mult_r = Signal.like(self.mult)
        offset_r = Signal.like(self.offset)
        with m.If(sample):
            m.d.sync += [mult_r.eq(self.mult), offset_r.eq(self.offset)]

        # ---- Stage 0: position counters, marker checks, horizontal accumulation ----
        # At least one bit each: yosys writes a zero-width signal as a [-1:0] wire, which lint flags.
        bx = Signal(range(max(beats_per_line, 2)))   # beat in line
        y = Signal(range(cfg.frame_height))          # Bayer row
        hb = Signal(range(hb_top))                   # beat within the current bin (in the crop)
        ox = Signal(range(iw + 1))                   # tensor column of the current bin
        ry = Signal(range(2 * kmax))                 # Bayer row within the current bin row
        oy = Signal(range(ih + 1))                   # tensor row of the current bin row
        in_frame = Signal()                          # a frame has started and is not complete
        quiet = Signal()                             # dropping beats without counting, until the next frame_first

        # frame_first restarts the counters: that beat is at (0, 0) whatever they say.
        c_bx, c_y, c_hb, c_ox, c_ry, c_oy = (Signal.like(s, name=f"cur_{s.name}") for s in (bx, y, hb, ox, ry, oy))
        for c, reg in ((c_bx, bx), (c_y, y), (c_hb, hb), (c_ox, ox), (c_ry, ry), (c_oy, oy)):
            m.d.comb += c.eq(Mux(ff, 0, reg))

        # The crop starts at the sampled origin and ends where the bin counters reach the output size.
        in_x, in_y = Signal(), Signal()
        m.d.comb += [
            in_x.eq((c_bx >= cur["cx0"]) & (c_ox < cur["ow"])),
            in_y.eq((c_y >= cur["cy0"]) & (c_oy < cur["oh"])),
        ]
        line_end = Signal()
        frame_end = Signal()
        m.d.comb += [
            line_end.eq(c_bx == beats_per_line - 1),
            frame_end.eq(line_end & (c_y == cfg.frame_height - 1)),
        ]
        bin_x_end = Signal()                         # the beat is the last of its bin within this row
        bin_y_end = Signal()                         # the row is the last of its bin row
        m.d.comb += [
            bin_x_end.eq(c_hb == cur["hb_last"]),
            bin_y_end.eq(c_ry == cur["ry_last"]),
        ]
        mismatch = Signal()
        m.d.comb += mismatch.eq((beat.line_first != (c_bx == 0)) | (beat.line_last != line_end) |
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
            crop_short_x.eq(use & line_end & in_y &
                            ~((c_ox == cur["ow"]) | (in_x & bin_x_end & (c_ox == cur["ow_last"])))),
            crop_short_y.eq(use & frame_end &
                            ~((c_oy == cur["oh"]) | (in_y & bin_y_end & (c_oy == cur["oh_last"])))),
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
            bin_row_done.eq(in_crop & bin_x_end),
        ]
        with m.If(in_crop):
            m.d.sync += h_acc.eq(h_sum)

        # ---- Line buffer: running sums of the current bin row, one entry per output column ----
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
                    s1_vlast.eq(bin_y_end),
                    s1_first.eq((c_ox == 0) & (c_oy == 0)),
                    s1_last.eq((c_ox == cur["ow_last"]) & (c_oy == cur["oh_last"])),
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
        s2_offset = Signal.like(self.offset)
        s2_prod = [Signal(w + MULT_BITS, name=f"s2_prod_{c}") for w, c in zip(widths, "rgb")]
        with m.If(advance):
            m.d.sync += [
                s2_valid.eq(s1_valid & s1_vlast),
                s2_first.eq(s1_first),
                s2_last.eq(s1_last),
                s2_offset.eq(offset_r),
            ]
            for prod, s, mult in zip(s2_prod, (total.r, total.g, total.b), mult_r):
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
                acc = Signal(signed(max(prod.shape().width, OFFSET_BITS - 1) + 2), name=f"s3_acc_{'rgb'[c]}")
                m.d.comb += acc.eq(prod + s2_offset)
                shifted = acc >> cfg.isp_shift     # arithmetic: acc is signed, so this floors
                m.d.sync += self.out.payload.data[c].eq(
                    Mux(shifted < -128, -128, Mux(shifted > 127, 127, shifted[:8].as_signed())))

        m.d.sync += self.done.eq(self.out.valid & self.out.ready & self.out.payload.last)
        m.d.comb += self.busy.eq(in_frame | s1_valid | s2_valid | self.out.valid)
        return m
