"""ISP front end: crops the RAW10 Bayer readout, bins RGGB blocks into RGB sums in a line buffer and quantizes
them to the network's int8 input tensor while the frame is still arriving.

`ISPFrontEnd` is a thin top (the pipeline's advance, the stream ports, status) over its components:

========================  ========================  ===========================================================
component                 file                      does
========================  ========================  ===========================================================
`ISPGeometrySampler`      `isp_geometry.py`         geometry check, the frame's geometry and constants
`ISPPositionTracker`      `isp_position.py`         stage 0: position counters, marker checks, frame errors
`ISPBinAccumulator`       `isp_bin.py`              stage 0 / 1: crop and bin sums, the line buffer
`ISPNormalizer`           `isp_normalize.py`        stages 2 / 3: multiply, offset, shift, clamp
========================  ========================  ===========================================================
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.isp import GEOMETRY_BITS, MULT_BITS, OFFSET_BITS, IspGeometry

from .isp_bin import ISPBinAccumulator
from .isp_geometry import ISPGeometrySampler, geometry_const, geometry_layout
from .isp_normalize import ISPNormalizer
from .isp_position import ISPPositionTracker
from .streams import pixel_beat_stream, tensor_pixel_stream

__all__ = ["ISPFrontEnd", "geometry_layout", "geometry_const"]


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
        cfg, kmax, widths = self.config, self.max_bin_factor, self.sum_widths
        m.submodules.geometry = geo = ISPGeometrySampler(cfg, kmax)
        m.submodules.position = pos = ISPPositionTracker(cfg, kmax)
        m.submodules.bins = bins = ISPBinAccumulator(cfg, kmax, widths)
        m.submodules.normalize = norm = ISPNormalizer(cfg, widths)

        # The whole pipeline moves only when the output register is free or being emptied.
        advance = Signal()
        m.d.comb += advance.eq(~self.out.valid | self.out.ready)
        m.d.comb += self.pixels.ready.eq(advance)
        take = Signal()
        m.d.comb += take.eq(self.pixels.valid & advance)
        beat = self.pixels.payload
        sample = Signal()                            # this beat starts a frame: take the geometry and constants
        m.d.comb += sample.eq(take & beat.frame_first)

        m.d.comb += [
            geo.geometry.eq(self.geometry), geo.mult.eq(self.mult), geo.offset.eq(self.offset),
            geo.ff.eq(beat.frame_first), geo.sample.eq(sample),
            pos.take.eq(take), pos.beat.eq(beat), pos.geo.eq(geo.cur), pos.geo_bad.eq(geo.bad),
            bins.advance.eq(advance), bins.pixels.eq(beat.pixels), bins.pos.eq(pos.pos),
            norm.advance.eq(advance), norm.bin.eq(bins.bin), norm.mult.eq(geo.mult_r), norm.offset.eq(geo.offset_r),
            self.out.valid.eq(norm.valid), self.out.payload.eq(norm.payload),
            self.frame_errors.eq(pos.frame_errors), self.geometry_error.eq(pos.geometry_error),
        ]
        m.d.sync += self.done.eq(self.out.valid & self.out.ready & self.out.payload.last)
        m.d.comb += self.busy.eq(pos.in_frame | bins.busy | norm.busy | self.out.valid)
        return m
