"""ISP front-end component: the runtime geometry port, its check and the values sampled at each frame start."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.isp import GEOMETRY_BITS, MULT_BITS, OFFSET_BITS, IspGeometry

__all__ = ["geometry_layout", "geometry_const", "sampled_geometry_layout", "hb_top", "ISPGeometrySampler"]

# The runtime geometry port: field widths come from `quant.isp.GEOMETRY_BITS`, the same for every
# configuration so the host's registers do not depend on it (16 bits address any frame up to 65536 pixels wide).
geometry_layout = data.StructLayout({name: unsigned(bits) for name, bits in GEOMETRY_BITS.items()})


def geometry_const(geometry):
    """The `ISPFrontEnd.geometry` port value (a `data.Const` of `geometry_layout`) for an `IspGeometry`."""
    if not isinstance(geometry, IspGeometry):
        raise TypeError(f"geometry_const: expected an IspGeometry, got {geometry!r}")
    return geometry_layout.const({name: getattr(geometry, name) for name in GEOMETRY_BITS})


def hb_top(config, kmax):
    """Bound of the beat-within-bin counter: 2k / P beats per bin for the largest k (at least 2)."""
    return max(2 * kmax // config.pixels_per_clock, 2)


def sampled_geometry_layout(config, kmax):
    """The frame's geometry in the form the position counters compare against (`ISPGeometrySampler.cur`)."""
    iw, ih = config.input_width, config.input_height
    return data.StructLayout({
        "cx0": range(max(config.frame_width // config.pixels_per_clock, 2)),   # crop origin in beats
        "cy0": range(max(config.frame_height, 2)),                            # ... in rows
        "ow": range(iw + 1), "oh": range(ih + 1),                             # output size
        "ow_last": range(max(iw, 2)), "oh_last": range(max(ih, 2)),           # ... minus one
        "hb_last": range(hb_top(config, kmax)),                              # beats per bin - 1
        "ry_last": range(2 * kmax),                                           # Bayer rows per bin - 1
    })


class ISPGeometrySampler(wiring.Component):
    """Checks the `geometry` port and holds the frame's geometry and quantization constants.

    Ports: `geometry`, `mult`, `offset` (the ISP's ports), `ff` (the beat on the input is a frame's first),
    `sample` (that beat is taken: register the ports), `bad` (combinational: the port's geometry is refused at
    the frame start: k = 0 or above `max_bin_factor`, odd k at 4 pixels per clock, an empty output or one
    above `input_width x input_height`, a crop origin off the RGGB quad grid or the beat grid, or outside the
    frame), `cur` (`sampled_geometry_layout`: the frame's geometry for the counters: the port's on the
    frame_first beat itself, else the sampled one), `mult_r` and `offset_r` (the sampled constants).

    Latency: `bad` and `cur` are combinational; the registers take the ports in the cycle of `sample` and hold
    them until the next. No back-pressure. No multiplier or divider: the checks are compares and bit tests.
    """

    def __init__(self, config, max_bin_factor):
        self.config = config
        self.max_bin_factor = max_bin_factor
        super().__init__({
            "geometry": In(geometry_layout), "mult": In(data.ArrayLayout(unsigned(MULT_BITS), 3)),
            "offset": In(signed(OFFSET_BITS)), "ff": In(1), "sample": In(1),
            "bad": Out(1), "cur": Out(sampled_geometry_layout(config, max_bin_factor)),
            "mult_r": Out(data.ArrayLayout(unsigned(MULT_BITS), 3)), "offset_r": Out(signed(OFFSET_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P = cfg.pixels_per_clock
        log_p = P.bit_length() - 1
        align_bits = max(2, P).bit_length() - 1
        kmax = self.max_bin_factor
        iw, ih = cfg.input_width, cfg.input_height
        port = self.geometry

        def above(value, limit):
            # value > limit, omitted when the field cannot exceed it (no always-false compares in the Verilog).
            return (value > limit) if limit < (1 << len(value)) - 1 else 0

        k = port.bin_factor
        m.d.comb += self.bad.eq(
            (k == 0) | above(k, kmax) | (k[0] if P == 4 else 0) |
            (port.out_width == 0) | above(port.out_width, iw) |
            (port.out_height == 0) | above(port.out_height, ih) |
            (port.crop_x[:align_bits] != 0) | port.crop_y[0] |
            above(port.crop_x, cfg.frame_width - 1) | above(port.crop_y, cfg.frame_height - 1))

        from_port = {
            "cx0": port.crop_x[log_p:], "cy0": port.crop_y, "ow": port.out_width, "oh": port.out_height,
            "ow_last": port.out_width - 1, "oh_last": port.out_height - 1,
            "hb_last": ((k << 1) >> log_p) - 1, "ry_last": (k << 1) - 1,
        }
        layout = sampled_geometry_layout(cfg, kmax)
        for name, value in from_port.items():
            reg = Signal(layout[name].shape, name=f"geo_{name}")
            m.d.comb += getattr(self.cur, name).eq(Mux(self.ff, value, reg))
            with m.If(self.sample):
                m.d.sync += reg.eq(value)
        # The constants too, so a host changing k (and with it mult) between frames needs no timing.
        with m.If(self.sample):
            m.d.sync += [self.mult_r.eq(self.mult), self.offset_r.eq(self.offset)]
        return m
