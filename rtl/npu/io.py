"""The NPU's doors: the input writer (network input tensor into the activation SRAM) and the output reader
(output tensors out of it, as CSI-2 lines)."""

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..csi2.linebuffer import line_write_stream
from ..streams import tensor_pixel_stream
from .ports import act_read_signature, act_write_signature, addr_bits

__all__ = ["InputWriter", "OutputReader", "MAX_OUTPUTS", "output_layout"]

MAX_OUTPUTS = 4


class InputWriter(wiring.Component):
    """Writes the network's input tensor (3-channel int8 pixels in raster order) into the activation SRAM.

    Layout (from registers, per the program's model I/O): `ppw` = 0 is channel-tiled HWC with one word per
    pixel (channels in lanes 0-2); `ppw` >= 1 packs `ppw` pixels per word (pixel p in word `base + p // ppw`,
    lanes `3 * (p % ppw) ..`). Lanes not carrying a channel hold `zero_point`. Whole words are written (one per
    pixel, or per `ppw` pixels), so the SRAM needs no clearing. Never stalls (`pixels.ready` is always high);
    `first` restarts at `base`; `done` pulses the cycle after the word holding the `last` pixel is written.
    """

    def __init__(self, config):
        self.config = config
        self.slots = config.array_cols // 3
        super().__init__({
            "pixels": In(tensor_pixel_stream(3)),
            "base": In(addr_bits(config.act_words)),
            "ppw": In(8),
            "zero_point": In(signed(8)),
            "w": Out(act_write_signature(config)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self.config.array_cols
        word = Signal(data.ArrayLayout(signed(8), cols))      # lanes gathered so far (packed mode)
        slot = Signal(range(max(self.slots, 2)))
        index = Signal.like(self.w.addr)
        px = self.pixels
        take = px.valid
        m.d.comb += px.ready.eq(1)
        zp_word = Cat(*([self.zero_point] * cols))

        # The word to write if this pixel completes one: the gathered lanes plus this pixel at its slot.
        cur_slot = Mux(px.payload.first, 0, slot)
        merged = Signal(data.ArrayLayout(signed(8), cols))
        base_word = Mux(px.payload.first | (self.ppw == 0), zp_word, word.as_value())
        m.d.comb += merged.eq(base_word)
        with m.Switch(cur_slot):
            for s in range(max(self.slots, 1)):
                with m.Case(s):
                    for c in range(3):
                        m.d.comb += merged[3 * s + c].eq(px.payload.data[c])
        full = (self.ppw == 0) | (cur_slot == self.ppw - 1) | px.payload.last
        cur_index = Mux(px.payload.first, 0, index)
        m.d.comb += [
            self.w.addr.eq(self.base + cur_index),
            self.w.data.eq(merged),
            self.w.en.eq(Mux(take & full, (1 << cols) - 1, 0)),
        ]
        with m.If(take):
            with m.If(full):
                m.d.sync += [word.eq(zp_word), slot.eq(0), index.eq(cur_index + 1)]
            with m.Else():
                m.d.sync += [word.eq(merged), slot.eq(cur_slot + 1), index.eq(cur_index)]
        m.d.sync += self.done.eq(take & px.payload.last)
        return m


output_layout = data.StructLayout({"addr": 32, "h": 16, "w": 16, "c": 16, "ct": 16})


class OutputReader(wiring.Component):
    """Reads the program's output tensors out of the activation SRAM as CSI-2 lines.

    After `start`, for each of the first `count` entries of `outputs` (word address, height, width, channels,
    channel tiles of a channel-tiled HWC tensor), every row y becomes one line of w * c bytes in HWC order (the
    real channels only, not the padding lanes), `last` on its final byte. One byte per cycle while `out` is
    ready, plus two cycles per SRAM word read. `done` pulses after the last byte of the last output.
    """

    def __init__(self, config):
        self.config = config
        super().__init__({
            "start": In(1),
            "count": In(range(MAX_OUTPUTS + 1)),
            "outputs": In(data.ArrayLayout(output_layout, MAX_OUTPUTS)),
            "r": Out(act_read_signature(config)),
            "out": Out(line_write_stream(1)),
            "busy": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self.config.array_cols
        k = Signal(range(MAX_OUTPUTS + 1))
        spec = Signal(output_layout)
        y = Signal(16)
        x = Signal(16)
        ct = Signal(16)
        lane = Signal(range(cols + 1))
        nlanes = Signal(range(cols + 1))
        addr = Signal(32)
        held = Signal(8 * cols)
        m.d.comb += self.r.addr.eq(addr)
        specs = Array(self.outputs[i] for i in range(MAX_OUTPUTS))

        # Real lanes of tile ct: all cols, except the last tile of a tensor whose channels are not a multiple.
        rem = Signal(17)
        m.d.comb += rem.eq(spec.c - ct * cols)
        last_lane_count = Mux(rem >= cols, cols, rem)
        last_x = x == spec.w - 1
        last_ct = ct == spec.ct - 1
        last_y = y == spec.h - 1

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += k.eq(0)
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += self.busy.eq(1)
                with m.If(k == self.count):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [spec.eq(specs[k]), y.eq(0), x.eq(0), ct.eq(0), addr.eq(specs[k].addr)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.busy.eq(1), self.r.en.eq(1)]
                m.d.sync += [lane.eq(0), nlanes.eq(last_lane_count)]
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += held.eq(self.r.data)
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += self.busy.eq(1)
                bytes_ = Array(held[8 * i: 8 * i + 8] for i in range(cols))
                line_end = last_x & last_ct & (lane == nlanes - 1)
                m.d.comb += [
                    self.out.valid.eq(1),
                    self.out.payload.data[0].eq(bytes_[lane]),
                    self.out.payload.last.eq(line_end),
                ]
                with m.If(self.out.ready):
                    m.d.sync += lane.eq(lane + 1)
                    with m.If(lane == nlanes - 1):
                        m.d.sync += addr.eq(addr + 1)
                        with m.If(last_ct):
                            m.d.sync += ct.eq(0)
                            with m.If(last_x):
                                m.d.sync += x.eq(0)
                                with m.If(last_y):
                                    m.d.sync += k.eq(k + 1)
                                    m.next = "NEXT"
                                with m.Else():
                                    m.d.sync += y.eq(y + 1)
                                    m.next = "READ"
                            with m.Else():
                                m.d.sync += x.eq(x + 1)
                                m.next = "READ"
                        with m.Else():
                            m.d.sync += ct.eq(ct + 1)
                            m.next = "READ"

        return m
