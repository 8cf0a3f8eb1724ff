"""First-light convolution engine: an int8 CONV_2D on the MAC array with TFLite-exact requantization."""

import numpy as np
from amaranth import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from .mac_array import MACArray
from .requant import RequantUnit, requant_params_layout
from .streams import byte_stream, tensor_pixel_stream

__all__ = ["ConvEngine"]


class ConvEngine(wiring.Component):
    """Runs one quantized CONV_2D (any kernel, stride, SAME/VALID padding) over an int8 HWC tensor.

    `pixels` fills the input buffer (an SRAM of in_h*in_w words of in_channels bytes) in raster order; `first`
    restarts the fill and the pixel with `last` starts the layer. While the layer runs, `pixels.ready` is low. The
    engine walks output pixels in raster order and, for each, `ceil(out_channels / rows)` channel tiles of kh*kw
    taps: one tap per cycle feeds the MAC array (activation vector broadcast, one weight vector per row). Out-of-
    bounds taps are masked, which equals padding with the input zero point. Finished tiles go through the
    requantization unit into a result FIFO; a tile is only issued when the FIFO has room for it (credits), so back-
    pressure on `out` stalls the issue stage and nothing is lost. `out` carries the output tensor as bytes in HWC
    order, `first`/`last` marking the first and last byte of each output row (one CSI-2 line each).

    Counters (valid after `done` pulses): `cycles` from start to the last byte accepted on `out`,
    `mac_cycles` the cycles the MAC array was enabled.
    """

    def __init__(self, layer, in_h, in_w, rows, cols, weights_in_rom=True):
        if layer.in_channels > cols:
            raise ValueError(f"ConvEngine: {layer.in_channels} input channels do not fit {cols} array columns")
        self.layer = layer
        self.in_h, self.in_w = in_h, in_w
        self.rows, self.cols = rows, cols
        self.out_h, self.out_w, self.out_c = layer.output_shape(in_h, in_w)
        self.tiles = -(-self.out_c // rows)
        self.kh, self.kw = layer.kernel
        super().__init__({
            "pixels": In(tensor_pixel_stream(layer.in_channels)),
            "out": Out(byte_stream()),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
            "mac_cycles": Out(32),
        })

    @property
    def macs(self):
        return self.layer.macs(self.in_h, self.in_w)

    def weight_words(self):
        """Weight ROM contents: word (tile, ky, kx) holds rows x cols int8, row r = output channel tile*rows+r."""
        w = self.layer.weights
        words = []
        for t in range(self.tiles):
            for ky in range(self.kh):
                for kx in range(self.kw):
                    block = np.zeros((self.rows, self.cols), np.int64)
                    n = min(self.rows, self.out_c - t * self.rows)
                    block[:n, :self.layer.in_channels] = w[t * self.rows:t * self.rows + n, ky, kx, :]
                    value = 0
                    for i, b in enumerate((block.reshape(-1) & 0xFF).tolist()):
                        value |= int(b) << (8 * i)
                    words.append(value)
        return words

    def elaborate(self, platform):
        m = Module()
        L = self.layer
        cin = L.in_channels
        rows, cols = self.rows, self.cols
        kh, kw = self.kh, self.kw
        sh, sw = L.stride
        pad_t, _, pad_l, _ = L.pads(self.in_h, self.in_w)

        m.submodules.mac = mac = MACArray(rows, cols)
        m.submodules.requant = rq = RequantUnit(rows, tag_width=max(1, (self.tiles - 1).bit_length()))

        # Input buffer: one word per input pixel.
        m.submodules.ibuf = ibuf = memory.Memory(shape=data.ArrayLayout(signed(8), cin),
                                                 depth=self.in_h * self.in_w, init=[])
        iwr = ibuf.write_port()
        ird = ibuf.read_port()
        # Weight ROM.
        m.submodules.wrom = wrom = memory.Memory(
            shape=rows * cols * 8, depth=self.tiles * kh * kw, init=self.weight_words())
        wrd = wrom.read_port()

        # Per-channel requantization parameters, indexed by tile (small: a constant mux).
        def params(t, r):
            c = t * rows + r
            if c >= self.out_c:
                return Const({}, requant_params_layout)
            return Const({"bias": int(L.bias[c]), "multiplier": int(L.multiplier[c]), "shift": int(L.shift[c]),
                          "zero_point": L.output_zero_point, "act_min": L.act_min, "act_max": L.act_max},
                         requant_params_layout)

        # ---- input fill ----
        waddr = Signal(range(self.in_h * self.in_w + 1))
        running = Signal()
        # `first` restarts the fill: a tensor cut short upstream (an aborted frame) is simply overwritten.
        m.d.comb += [
            self.pixels.ready.eq(~running),
            iwr.addr.eq(Mux(self.pixels.payload.first, 0, waddr)),
            iwr.data.eq(self.pixels.payload.data),
            iwr.en.eq(self.pixels.valid & self.pixels.ready),
        ]
        start = Signal()
        with m.If(self.pixels.valid & self.pixels.ready):
            with m.If(self.pixels.payload.last):
                m.d.sync += waddr.eq(0)
                m.d.comb += start.eq(1)
            with m.Elif(self.pixels.payload.first):
                m.d.sync += waddr.eq(1)
            with m.Else():
                m.d.sync += waddr.eq(waddr + 1)
        with m.If(start):
            m.d.sync += running.eq(1)

        # ---- issue stage: loops oy, ox, tile, ky, kx ----
        oy = Signal(range(self.out_h))
        ox = Signal(range(self.out_w))
        tile = Signal(range(self.tiles))
        ky = Signal(range(kh))
        kx = Signal(range(kw))
        issuing = Signal()          # a tile is being issued
        all_issued = Signal()

        fifo_depth = 8
        m.submodules.results = results = fifo.SyncFIFOBuffered(
            width=rows * 8 + len(rq.tag), depth=fifo_depth)
        inflight = Signal(range(fifo_depth + 1))
        tile_start = Signal()
        tile_retire = Signal()
        room = Signal()
        m.d.comb += room.eq(results.level + inflight < fifo_depth - 1)
        with m.If(tile_start & ~tile_retire):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~tile_start & tile_retire):
            m.d.sync += inflight.eq(inflight - 1)

        iy = Signal(signed(len(oy) + len(ky) + 8))
        ix = Signal(signed(len(ox) + len(kx) + 8))
        m.d.comb += [
            iy.eq(oy * sh + ky - pad_t),
            ix.eq(ox * sw + kx - pad_l),
        ]
        inside = (iy >= 0) & (iy < self.in_h) & (ix >= 0) & (ix < self.in_w)
        m.d.comb += [
            ird.addr.eq(iy.as_unsigned()[:len(ird.addr)] * self.in_w + ix.as_unsigned()[:len(ird.addr)]),
            wrd.addr.eq((tile * kh + ky) * kw + kx),
        ]

        # Control travelling with the tap: s1 = memory data valid, s2 = products registered.
        s1_valid = Signal()
        s1_first = Signal()
        s1_last = Signal()
        s1_inside = Signal()
        s1_tile = Signal.like(tile)
        tap_valid = Signal()
        first_tap = (ky == 0) & (kx == 0)
        last_tap = (ky == kh - 1) & (kx == kw - 1)

        with m.If(running & ~all_issued):
            with m.If(~issuing):
                with m.If(room):
                    m.d.comb += [tile_start.eq(1), tap_valid.eq(1)]
                    m.d.sync += issuing.eq(1)
                    self._advance(m, kx, ky, tile, ox, oy, issuing, all_issued, kw, kh)
            with m.Else():
                m.d.comb += tap_valid.eq(1)
                self._advance(m, kx, ky, tile, ox, oy, issuing, all_issued, kw, kh)

        m.d.sync += [
            s1_valid.eq(tap_valid),
            s1_first.eq(first_tap),
            s1_last.eq(last_tap),
            s1_inside.eq(inside),
            s1_tile.eq(tile),
        ]
        # MAC inputs: activation minus zero point, zero when the tap is in the padding.
        for c in range(cols):
            if c < cin:
                m.d.comb += mac.x[c].eq(Mux(s1_inside, ird.data[c] - L.input_zero_point, 0))
            else:
                m.d.comb += mac.x[c].eq(0)
        m.d.comb += [
            mac.w.eq(wrd.data),
            mac.en.eq(s1_valid),
            mac.clear.eq(s1_first),
        ]
        # The accumulator holds the tile's sum MACArray.latency cycles after its last tap was presented.
        last_d = Signal(MACArray.latency)
        tile_d = [Signal.like(tile, name=f"tile_d{i}") for i in range(MACArray.latency)]
        m.d.sync += last_d.eq((last_d << 1) | (s1_valid & s1_last))
        m.d.sync += tile_d[0].eq(s1_tile)
        for i in range(1, MACArray.latency):
            m.d.sync += tile_d[i].eq(tile_d[i - 1])
        m.d.comb += [
            rq.valid.eq(last_d[-1]),
            rq.tag.eq(tile_d[-1]),
            rq.acc.eq(mac.acc),
        ]
        sel = Array(Array(params(t, r) for r in range(rows)) for t in range(self.tiles))
        for r in range(rows):
            m.d.comb += rq.params[r].eq(sel[tile_d[-1]][r])
        m.d.comb += [
            results.w_en.eq(rq.out_valid),
            results.w_data.eq(rq.out.as_value() | (rq.out_tag << (rows * 8))),
            tile_retire.eq(rq.out_valid),
        ]

        # ---- serializer: result words to bytes ----
        word = Signal(rows * 8)
        word_tag = Signal(len(rq.tag))
        nbytes = Signal(range(rows + 1))
        byte_idx = Signal(range(rows + 1))
        holding = Signal()
        out_col = Signal(range(self.out_w * self.out_c + 1))
        out_row = Signal(range(self.out_h + 1))
        counts = Array(Const(min(rows, self.out_c - t * rows), range(rows + 1)) for t in range(self.tiles))
        row_bytes = self.out_w * self.out_c

        accept = self.out.valid & self.out.ready
        last_byte = accept & (byte_idx == nbytes - 1)
        can_load = ~holding | last_byte
        m.d.comb += results.r_en.eq(can_load)
        with m.If(accept):
            m.d.sync += byte_idx.eq(byte_idx + 1)
        with m.If(last_byte):
            m.d.sync += holding.eq(0)
        with m.If(can_load & results.r_rdy):
            m.d.sync += [
                word.eq(results.r_data[:rows * 8]),
                word_tag.eq(results.r_data[rows * 8:]),
                byte_idx.eq(0),
                holding.eq(1),
            ]
        m.d.comb += nbytes.eq(counts[word_tag])
        byte_sel = Array(word[8 * i:8 * i + 8] for i in range(rows))
        m.d.comb += [
            self.out.valid.eq(holding),
            self.out.payload.data.eq(byte_sel[byte_idx]),
            self.out.payload.first.eq(out_col == 0),
            self.out.payload.last.eq(out_col == row_bytes - 1),
        ]
        layer_done = Signal()
        with m.If(accept):
            with m.If(out_col == row_bytes - 1):
                m.d.sync += out_col.eq(0)
                with m.If(out_row == self.out_h - 1):
                    m.d.sync += out_row.eq(0)
                    m.d.comb += layer_done.eq(1)
                with m.Else():
                    m.d.sync += out_row.eq(out_row + 1)
            with m.Else():
                m.d.sync += out_col.eq(out_col + 1)

        with m.If(layer_done):
            m.d.sync += [running.eq(0), all_issued.eq(0)]
        m.d.comb += [self.busy.eq(running), self.done.eq(layer_done)]

        # ---- counters ----
        cycle_count = Signal(32)
        mac_count = Signal(32)
        with m.If(start):
            m.d.sync += [cycle_count.eq(1), mac_count.eq(0)]
        with m.Elif(running):
            m.d.sync += cycle_count.eq(cycle_count + 1)
            with m.If(mac.en):
                m.d.sync += mac_count.eq(mac_count + 1)
        with m.If(layer_done):
            m.d.sync += [self.cycles.eq(cycle_count + 1), self.mac_cycles.eq(mac_count)]
        return m

    def _advance(self, m, kx, ky, tile, ox, oy, issuing, all_issued, kw, kh):
        with m.If(kx == kw - 1):
            m.d.sync += kx.eq(0)
            with m.If(ky == kh - 1):
                m.d.sync += [ky.eq(0), issuing.eq(0)]
                with m.If(tile == self.tiles - 1):
                    m.d.sync += tile.eq(0)
                    with m.If(ox == self.out_w - 1):
                        m.d.sync += ox.eq(0)
                        with m.If(oy == self.out_h - 1):
                            m.d.sync += [oy.eq(0), all_issued.eq(1)]
                        with m.Else():
                            m.d.sync += oy.eq(oy + 1)
                    with m.Else():
                        m.d.sync += ox.eq(ox + 1)
                with m.Else():
                    m.d.sync += tile.eq(tile + 1)
            with m.Else():
                m.d.sync += ky.eq(ky + 1)
        with m.Else():
            m.d.sync += kx.eq(kx + 1)


