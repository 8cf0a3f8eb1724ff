"""Vector engine component: RESIZE's per-lane 4-tap weighted sum and its rounding."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import RESIZE_DATAPATH_LATENCY

from .ports import addr_bits
from .vector_common import address_stage_layout, lane, word_layout

__all__ = ["VectorResizeDatapath"]


class VectorResizeDatapath(wiring.Component):
    """RESIZE (`quant.program`) on `array_cols` lanes: per lane ``s = sum x[tap] * weight[tap]`` over an output
    word's four taps, then ``trunc((s + (s > 0 ? 2^19 : -2^19)) / 2^20)`` wrapped to int8, LiteRT's reference
    ResizeBilinearInteger. The tap weight (``wy * wx``, at most 2^22 in magnitude) comes with the tap in its
    tag, so each lane has one 8 x 24 multiplier and a 36-bit accumulator (|s| < 2^31).

    Ports: `tap` (`VectorAddressUnit.p3`: a tap whose input word is on `act_data` this cycle; its tag says the
    word's first and last tap and carries the weight), `act_data` and `out` (an output word: `word_layout`).

    Latency: a word is on `out` RESIZE_DATAPATH_LATENCY (2) cycles after its last tap is on `tap` (the sum is
    registered, then the rounding); one tap per cycle. No back-pressure.
    """

    LATENCY = RESIZE_DATAPATH_LATENCY

    def __init__(self, config):
        self.cols = cols = config.array_cols
        super().__init__({
            "tap": In(address_stage_layout(addr_bits(config.act_words))), "act_data": In(8 * cols),
            "out": Out(word_layout(cols)),
        })

    def elaborate(self, platform):
        m = Module()
        tap = self.tap
        sum_v = Signal()
        m.d.sync += [sum_v.eq(tap.valid & tap.tag.last), self.out.valid.eq(sum_v)]
        lanes = []
        for c in range(self.cols):
            acc = Signal(signed(36), name=f"rs_acc{c}")
            v = Signal(signed(36), name=f"rs_v{c}")
            m.d.comb += v.eq(Mux(tap.tag.first, 0, acc) + lane(self.act_data, c) * tap.tag.weight)
            with m.If(tap.valid):
                m.d.sync += acc.eq(v)
            s = Signal(signed(36), name=f"rs_s{c}")
            with m.If(tap.valid & tap.tag.last):
                m.d.sync += s.eq(v)
            r = Signal(signed(37), name=f"rs_r{c}")
            m.d.comb += r.eq(Mux(s > 0, s + (1 << 19), s - (1 << 19)))
            mag = Signal(17, name=f"rs_q{c}")
            m.d.comb += mag.eq(Mux(r < 0, -r, r)[20:37])
            lanes.append(Mux(r < 0, -mag, mag)[:8])
        m.d.sync += self.out.data.eq(Cat(*lanes))
        return m
