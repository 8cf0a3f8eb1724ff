"""Conv engine component: the layer's requantization records from weight space into the parameter buffer."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.program import PARAM_RECORD_BYTES
from stackcam.quant.timing import param_load_layout

from .conv_common import mux_tree, param_record_layout, words
from .ports import weight_read_signature

__all__ = ["ConvParamLoader", "param_write_signature"]


def param_write_signature(dims):
    """The parameter buffer's write port: word `addr` of `cols` records, record lane j written where en[j]."""
    return wiring.Signature({
        "addr": Out(range(dims.param_depth + 1)),
        "data": Out(data.ArrayLayout(param_record_layout, dims.C)),
        "en": Out(dims.C),
    })


class ConvParamLoader(wiring.Component):
    """Reads ``param_words`` weight words from ``param_addr`` and writes their records into the parameter
    buffer (a memory of ``ceil(max_channels / cols)`` words of `cols` records: one output word's channels).

    Ports: `start` (pulse: reset; the load begins in the next cycle with `active` high), `active` (the engine is
    in its load phase: reads are issued only then), `param_addr` / `param_words` (stable while active), `fc`
    (stable while active: the records are FCSCALE ones, ``int32 bias, 4 zero bytes, float64 scale``, and their
    scale goes into `rescale`; else the multiplier and shift do), `w_r` (weight read port), `pbuf`
    (`param_write_signature`), `done` (high in the last load cycle).

    A beat writes ``gcd(WB // 16, cols)`` records (never straddling a buffer word); a weight word takes
    ``beats`` = ``WB // 16 / gcd`` cycles (one while ``WB // 16 <= cols``, two on imx500); with 8-byte words a
    record spans two words. Latency: `quant.timing.param_load_cycles`, ``param_words * beats + 1`` cycles from the
    first active cycle to `done`, both included (the one is the SRAM read latency). Back-pressure: the
    read issue waits while a word is still being split into beats (internal only; the SRAM never stalls).
    """

    def __init__(self, config, dims):
        self.config = config
        self.dims = dims
        super().__init__({
            "start": In(1), "active": In(1), "param_addr": In(32), "param_words": In(32), "fc": In(1),
            "w_r": Out(weight_read_signature(config)), "pbuf": Out(param_write_signature(dims)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        C, WB = dm.C, dm.WB
        slot, grp, beats, wpr = param_load_layout(self.config)
        issued = Signal(32)
        have = Signal()
        s = Signal(range(max(2, beats)))
        wcnt = Signal(range(max(2, wpr)))
        asm = Signal(8 * WB * max(1, wpr - 1))
        word = Signal(range(dm.param_depth + 1))
        group = Signal(range(max(2, C // grp)))
        consume = Signal()
        issue = Signal()
        beat = Signal()
        recs = [Signal(param_record_layout, name=f"rec{j}") for j in range(grp)]
        rdata = self.w_r.data

        def record_from(rec, byte_value):
            """The record's bias and rescale: bytes 4..7 multiplier and 8 shift, or (FCSCALE) bytes 8..15."""
            return [rec.bias.eq(byte_value[0:32]),
                    rec.rescale.as_value().eq(Mux(self.fc, byte_value[64:128], byte_value[32:70]))]

        if wpr == 1:
            beat_bits = mux_tree(words(rdata, 8 * grp * slot), s) if beats > 1 else rdata
            for j in range(grp):
                off = 8 * j * slot
                m.d.comb += record_from(recs[j], beat_bits[off:off + 8 * PARAM_RECORD_BYTES])
            m.d.comb += [consume.eq(have & (s == beats - 1)), beat.eq(have)]
        else:
            full_rec = Cat(asm, rdata)
            m.d.comb += record_from(recs[0], full_rec[:8 * PARAM_RECORD_BYTES])
            m.d.comb += [consume.eq(have), beat.eq(have & (wcnt == wpr - 1))]
        m.d.comb += [
            self.pbuf.addr.eq(word),
            self.pbuf.data.as_value().eq(Cat(*[recs[lane % grp].as_value() for lane in range(C)])),
        ]

        with m.If(self.start):
            m.d.sync += [issued.eq(0), have.eq(0), s.eq(0), wcnt.eq(0), word.eq(0), group.eq(0)]
        with m.Elif(self.active):
            m.d.comb += issue.eq((issued < self.param_words) & (~have | consume))
            m.d.comb += [self.w_r.en.eq(issue), self.w_r.addr.eq(self.param_addr + issued)]
            with m.If(issue):
                m.d.sync += issued.eq(issued + 1)
            m.d.sync += have.eq(issue | (have & ~consume))
            with m.If(have):
                if wpr == 1:
                    m.d.sync += s.eq(Mux(s == beats - 1, 0, s + 1))
                else:
                    m.d.sync += wcnt.eq(Mux(wcnt == wpr - 1, 0, wcnt + 1))
                    # Shift the record's earlier words in (the record's first word lands lowest).
                    m.d.sync += asm.eq(Cat(asm[8 * WB:], rdata) if wpr > 2 else rdata)
            with m.If(beat):
                with m.If(word < dm.param_depth):
                    m.d.comb += self.pbuf.en.eq(((1 << grp) - 1) << (group * grp))
                if C // grp > 1:
                    with m.If(group == C // grp - 1):
                        m.d.sync += [group.eq(0), word.eq(word + 1)]
                    with m.Else():
                        m.d.sync += group.eq(group + 1)
                else:
                    m.d.sync += word.eq(word + 1)
            m.d.comb += self.done.eq((issued == self.param_words) & (~have | consume))
        return m

