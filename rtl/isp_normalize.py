"""ISP front-end component: the input quantization of a complete bin, multiply, offset, shift and clamp."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.isp import MULT_BITS, OFFSET_BITS

from .isp_bin import bin_layout
from .streams import tensor_pixel_layout

__all__ = ["ISPNormalizer"]


class ISPNormalizer(wiring.Component):
    """Quantizes each bin's sums to an int8 RGB pixel: ``clamp(-128, 127, (S_c * mult[c] + offset) >>
    config.isp_shift)`` (an arithmetic shift, so it floors), as `quant.isp.isp_reference`.

    Stage 2 registers the three products (one multiplier per channel) and its own copy of the offset (a pixel
    of the previous frame may still be here when a frame start samples new constants); stage 3 is the output
    register: offset, shift and saturation.

    Ports: `advance` (the pipeline moves this cycle), `bin` (`ISPBinAccumulator.bin`), `mult` and `offset`
    (the frame's constants), `valid` / `payload` (the output pixel, `tensor_pixel_layout(3)`, registered) and
    `busy` (stage 2 holds a pixel).

    Latency: a bin on `bin` is on `valid` / `payload` two cycles later. Back-pressure: both stages hold while
    `advance` is low.
    """

    def __init__(self, config, widths):
        self.config = config
        self.widths = widths
        super().__init__({
            "advance": In(1), "bin": In(bin_layout(widths)),
            "mult": In(data.ArrayLayout(unsigned(MULT_BITS), 3)), "offset": In(signed(OFFSET_BITS)),
            "valid": Out(1), "payload": Out(tensor_pixel_layout(3)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        advance, b = self.advance, self.bin
        # ---- Stage 2: the three channel multiplies ----
        s2_valid = Signal()
        s2_first = Signal()
        s2_last = Signal()
        s2_offset = Signal.like(self.offset)
        s2_prod = [Signal(w + MULT_BITS, name=f"s2_prod_{c}") for w, c in zip(self.widths, "rgb")]
        with m.If(advance):
            m.d.sync += [
                s2_valid.eq(b.valid),
                s2_first.eq(b.first),
                s2_last.eq(b.last),
                s2_offset.eq(self.offset),
            ]
            for prod, s, mult in zip(s2_prod, (b.sums.r, b.sums.g, b.sums.b), self.mult):
                m.d.sync += prod.eq(s * mult)

        # ---- Stage 3 (output register): offset, arithmetic shift, saturation ----
        with m.If(advance):
            m.d.sync += [
                self.valid.eq(s2_valid),
                self.payload.first.eq(s2_first),
                self.payload.last.eq(s2_last),
            ]
            for c, prod in enumerate(s2_prod):
                # prod < 2**(w+24) and |offset| < 2**31: one bit above the wider of the two is enough.
                acc = Signal(signed(max(prod.shape().width, OFFSET_BITS - 1) + 2), name=f"s3_acc_{'rgb'[c]}")
                m.d.comb += acc.eq(prod + s2_offset)
                shifted = acc >> self.config.isp_shift     # arithmetic: acc is signed, so this floors
                m.d.sync += self.payload.data[c].eq(
                    Mux(shifted < -128, -128, Mux(shifted > 127, 127, shifted[:8].as_signed())))
        m.d.comb += self.busy.eq(s2_valid)
        return m
