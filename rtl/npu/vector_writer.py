"""Vector engine component: the activation SRAM writer of every vector operator."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .ports import act_write_signature, addr_bits, descriptor_layout
from .vector_common import copy_word_layout, lane, word_layout

__all__ = ["VectorWriter"]


class VectorWriter(wiring.Component):
    """Writes the operators' output words and counts the words still on their way.

    Linear writes (ADD, pools, LUT, MUL, MEAN, PRELU, RESIZE, FILL): whole words in address order from
    ``out_addr``, padding lanes (channel >= out_c in the last tile of a pixel) written with ``out_zp``, as
    `quant.program.write_tensor` does. The word written is, by priority, a FILL word (``fill`` in every lane,
    one the cycle after each `fill` pulse), `lut`, `pool`, `resize`, else `arith` (ADD, MUL, MEAN, PRELU)
    (the engine runs one operator at a time). COPY writes (`copy`, COPY and GATHER) go to their own address
    with their byte enables.

    Ports: `init` (pulse: restart at ``out_addr``), `desc`, `fill`, `lut`, `pool`, `arith`, `resize`
    (`word_layout`), `copy` (`copy_word_layout`), `inc` (an output word was issued this cycle: it will arrive
    here), `act_w` (the SRAM write port) and `idle` (combinational: every issued word is written or on the port
    now).

    Latency: a word is on `act_w` the cycle after it arrives (registered port). No back-pressure: the SRAM
    write port never stalls, so one word per cycle. Up to 255 words may be on their way.
    """

    def __init__(self, config):
        self.cols = cols = config.array_cols
        self.abits = abits = addr_bits(config.act_words)
        super().__init__({
            "init": In(1), "desc": In(descriptor_layout()), "fill": In(1),
            "lut": In(word_layout(cols)), "pool": In(word_layout(cols)), "arith": In(word_layout(cols)),
            "resize": In(word_layout(cols)),
            "copy": In(copy_word_layout(abits, cols)), "inc": In(1),
            "act_w": Out(act_write_signature(config)), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols, d = self.cols, self.desc
        out_addr = d.out_addr[:self.abits]

        fill_v = Signal()
        m.d.sync += fill_v.eq(self.fill)
        lin_v = Signal()
        lin_data = Signal(8 * cols)
        m.d.comb += lin_v.eq(self.lut.valid | self.pool.valid | self.arith.valid | self.resize.valid | fill_v)
        with m.If(fill_v):
            m.d.comb += lin_data.eq(Cat(d.fill for _ in range(cols)))
        with m.Elif(self.lut.valid):
            m.d.comb += lin_data.eq(self.lut.data)
        with m.Elif(self.pool.valid):
            m.d.comb += lin_data.eq(self.pool.data)
        with m.Elif(self.resize.valid):
            m.d.comb += lin_data.eq(self.resize.data)
        with m.Else():
            m.d.comb += lin_data.eq(self.arith.data)

        w_count = Signal(self.abits)
        w_ct = Signal(16)
        w_rem = Signal(signed(18))              # channels from the start of the word being written to out_c
        w_valid = Signal()
        m.d.sync += [w_valid.eq(0), self.act_w.en.eq(0)]
        with m.If(lin_v):
            m.d.sync += [
                w_valid.eq(1), self.act_w.en.eq((1 << cols) - 1), self.act_w.addr.eq(out_addr + w_count),
                self.act_w.data.eq(Cat(Mux(c < w_rem, lane(lin_data, c), d.out_zp) for c in range(cols))),
                w_count.eq(w_count + 1),
            ]
            with m.If(w_ct == d.out_ct - 1):
                m.d.sync += [w_ct.eq(0), w_rem.eq(d.out_c)]
            with m.Else():
                m.d.sync += [w_ct.eq(w_ct + 1), w_rem.eq(w_rem - cols)]
        with m.Elif(self.copy.valid):
            m.d.sync += [w_valid.eq(1), self.act_w.en.eq(self.copy.mask), self.act_w.addr.eq(self.copy.addr),
                         self.act_w.data.eq(self.copy.data)]
        with m.If(self.init):
            m.d.sync += [w_count.eq(0), w_ct.eq(0), w_rem.eq(d.out_c)]

        # Words issued and not yet written.
        pending = Signal(8)
        m.d.sync += pending.eq(pending + self.inc - w_valid)
        m.d.comb += self.idle.eq(pending == w_valid)
        return m
