"""Vector engine component: LUT's table (loaded from weight space) and the per-lane lookups."""

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import lut_row_bytes

from .conv_common import read_request_signature
from .ports import addr_bits
from .vector_common import word_layout

__all__ = ["VectorLUT"]


class VectorLUT(wiring.Component):
    """The 256-byte table in rows of ``lut_row_bytes(config)`` bytes, a copy per lane (one write and one
    asynchronous read port each: on an FPGA, distributed RAM), all written alike; each lane reads a row and
    picks its byte with a row-bytes-way multiplexer, where a table in flip-flops would cost a 256-way one.

    Ports: `init` (pulse: restart the load at row 0), `load` (request the next row from weight word
    ``param_addr + row // rows_per_word`` on `w_r` this cycle), `param_addr`, `w_data` (the weight SRAM read
    data), `load_last` (combinational: the row requested now is the table's last), `lookup` (an input word is
    read from the activation SRAM this cycle), `act_data` (its data, the next cycle) and `out` (the looked-up
    word: `word_layout`).

    Latency: a row is written into the tables two cycles after its `load` (the SRAM, then the write); a
    looked-up word is on `out` two cycles after its `lookup`, one word per cycle. Loading takes
    ``256 / lut_row_bytes`` cycles of `load`. No back-pressure.
    """

    def __init__(self, config):
        self.config = config
        self.row_bytes = lut_row_bytes(config)
        self.rows = 256 // self.row_bytes
        super().__init__({
            "init": In(1), "load": In(1), "param_addr": In(32), "w_data": In(8 * config.weight_word_bytes),
            "w_r": Out(read_request_signature(addr_bits(config.weight_words))), "load_last": Out(1),
            "lookup": In(1), "act_data": In(8 * config.array_cols), "out": Out(word_layout(config.array_cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cols, lut_b, lut_rows = self.config.array_cols, self.row_bytes, self.rows
        rows_per_word = self.config.weight_word_bytes // lut_b
        lut_k = Signal(range(lut_rows + 1))
        lut_wv = Signal()
        lut_wk = Signal(range(lut_rows + 1))
        lut_dv = Signal()
        m.d.sync += [lut_wv.eq(self.load), lut_dv.eq(self.lookup)]
        m.d.comb += self.load_last.eq(lut_k == lut_rows - 1)
        with m.If(self.init):
            m.d.sync += lut_k.eq(0)
        with m.If(self.load):
            m.d.comb += [self.w_r.en.eq(1), self.w_r.addr.eq(self.param_addr + lut_k // rows_per_word)]
            m.d.sync += [lut_wk.eq(lut_k), lut_k.eq(lut_k + 1)]

        row = self.w_data.word_select(lut_wk % rows_per_word, 8 * lut_b)
        picked = []
        byte_bits = (lut_b - 1).bit_length()
        for c in range(cols):
            table = Memory(shape=unsigned(8 * lut_b), depth=lut_rows, init=[], attrs={"ram_style": "distributed"})
            m.submodules[f"lut_table{c}"] = table
            tw = table.write_port()
            m.d.comb += [tw.en.eq(lut_wv), tw.addr.eq(lut_wk), tw.data.eq(row)]
            index = self.act_data.word_select(c, 8) ^ 0x80
            rp = table.read_port(domain="comb")
            m.d.comb += rp.addr.eq(index >> byte_bits)
            picked.append(rp.data.word_select(index[:byte_bits], 8) if byte_bits else rp.data)
        m.d.sync += [self.out.valid.eq(lut_dv), self.out.data.eq(Cat(*picked))]
        return m
