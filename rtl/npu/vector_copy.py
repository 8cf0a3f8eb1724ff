"""Vector engine component: COPY's lane rotation and byte enables."""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .ports import addr_bits
from .vector_common import address_stage_layout, copy_word_layout

__all__ = ["VectorCopyAligner"]


class VectorCopyAligner(wiring.Component):
    """Builds COPY's and GATHER's output words: an output word is lanes ``sh .. sh + cols - 1`` of (the input
    word read before, the input word read now), ``sh = copy_sh`` (for COPY ``cols - r``, r = copy_c % cols),
    written with byte enables: lanes below r of word 0
    (they belong to channels before copy_c) and lanes at or above the input's channel end are left alone.

    Ports: `word` (`VectorAddressUnit.p3`: the output word's address, and in its tag whether an input word
    was read for it (`ren`, its data now on `act_data`), whether a word is written (`wr`), the copied lanes'
    end `hi` and `j0`, word 0 of the pixel), `act_data`, `enable` (the descriptor is a COPY or GATHER), `copy_r`,
    `copy_sh` and `out` (`copy_word_layout`: valid, address, data, byte enables; combinational).

    Latency: `out` is combinational from `word` (the address unit's third stage), the previous input word kept
    in a register. No back-pressure.
    """

    def __init__(self, config):
        self.cols = cols = config.array_cols
        abits = addr_bits(config.act_words)
        super().__init__({
            "word": In(address_stage_layout(abits)), "act_data": In(8 * cols), "enable": In(1),
            "copy_r": In(range(cols)), "copy_sh": In(range(cols + 1)),
            "out": Out(copy_word_layout(abits, cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cols, p3 = self.cols, self.word
        prev = Signal(8 * cols)
        with m.If(p3.valid & p3.tag.ren):
            m.d.sync += prev.eq(self.act_data)
        m.d.comb += [
            self.out.valid.eq(p3.valid & self.enable & p3.tag.wr), self.out.addr.eq(p3.addr),
            self.out.data.eq(Cat(prev, self.act_data).bit_select(Cat(Const(0, 3), self.copy_sh), 8 * cols)),
            self.out.mask.eq(Cat((((c >= self.copy_r) if c < cols - 1 else 1) | ~p3.tag.j0) & (c < p3.tag.hi)
                                 for c in range(cols))),
        ]
        return m
