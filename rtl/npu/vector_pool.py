"""Vector engine component: the pools' datapath, running max / sum per lane, divider and clamp."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import vector_input_stages

from .ports import addr_bits
from .vector_common import address_stage_layout, lane, word_layout

__all__ = ["VectorPoolDatapath", "DIVIDER_STAGES"]

DIVIDER_STAGES = 8


class VectorPoolDatapath(wiring.Component):
    """MAXPOOL and AVGPOOL on `array_cols` lanes: a running max (or sum) per lane over a window's taps, then an
    8-stage pipelined restoring divider per lane and the clamp to ``act_min .. act_max``.

    AVGPOOL divides exactly: the quotient ``(|sum| + count // 2) // count`` is below 2^8 because
    ``|sum| <= 128 * count``; the sign is applied after, which is TFLite's round-half-away-from-zero. MAXPOOL
    goes through the same pipe with count = 1.

    Ports: `tap` (`VectorAddressUnit.p3`: a tap whose input word is on `act_data` this cycle, the tag saying
    the window's first and last tap and its tap count), `act_data`, `max` (MAXPOOL, else AVGPOOL), `mean` (MEAN:
    sums only, no word on `out`), `act_min`,
    `act_max` and `out` (an output word: `word_layout`).

    `sums` is each lane's running sum (or max) including the tap on `tap`, combinationally; `sum_valid` says the
    tap is its window's last (MEAN takes the exact sums there, `VectorArithDatapath`).

    Latency: a window's word is on `out` ``DIVIDER_STAGES + 2`` (10) cycles after its last tap is on `tap`, and
    `sums` the cycle of the tap; with `deep_pipeline` the tap and its word pass a register first
    (`quant.timing.vector_input_stages`: the block RAM's output ends there instead of running on into the
    divider's first stage), one cycle more for both. One tap per cycle. No back-pressure.
    """

    def __init__(self, config):
        self.cols = cols = config.array_cols
        self.input_stages = vector_input_stages(config)
        super().__init__({
            "tap": In(address_stage_layout(addr_bits(config.act_words))), "act_data": In(8 * cols),
            "max": In(1), "mean": In(1), "act_min": In(signed(8)), "act_max": In(signed(8)),
            "out": Out(word_layout(cols)),
            "sums": Out(data.ArrayLayout(signed(24), cols)), "sum_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        tap, act_data = self.tap, self.act_data
        if self.input_stages:
            assert self.input_stages == 1
            tap, act_data = Signal.like(self.tap, name="pool_tap_q"), Signal.like(self.act_data, name="pool_act_q")
            m.d.sync += [tap.eq(self.tap), act_data.eq(self.act_data)]
        div_stages = DIVIDER_STAGES
        dv = [Signal(name=f"div_v{i}") for i in range(div_stages + 1)]
        dn = [Signal(16, name=f"div_n{i}") for i in range(div_stages + 1)]
        # MEAN takes the sums (`sums`), not the divider's words: none enters the divider then.
        m.d.sync += [dv[0].eq(tap.valid & tap.tag.last & ~self.mean), dn[0].eq(tap.tag.count)]
        for i in range(div_stages):
            m.d.sync += [dv[i + 1].eq(dv[i]), dn[i + 1].eq(dn[i])]
        m.d.sync += self.out.valid.eq(dv[div_stages])
        m.d.comb += self.sum_valid.eq(tap.valid & tap.tag.last)
        for c in range(self.cols):
            x = lane(act_data, c)
            acc = Signal(signed(24), name=f"pool_acc{c}")
            v = Signal(signed(24), name=f"pool_v{c}")
            m.d.comb += v.eq(Mux(tap.tag.first, x, Mux(self.max, Mux(x > acc, x, acc), acc + x)))
            with m.If(tap.valid):
                m.d.sync += acc.eq(v)
            m.d.comb += self.sums[c].eq(v)
            num = [Signal(24, name=f"div_num{c}_{i}") for i in range(div_stages + 1)]
            quo = [Signal(8, name=f"div_q{c}_{i}") for i in range(div_stages + 1)]
            neg = [Signal(name=f"div_neg{c}_{i}") for i in range(div_stages + 1)]
            m.d.sync += [num[0].eq(Mux(v < 0, -v, v) + (tap.tag.count >> 1)), quo[0].eq(0), neg[0].eq(v < 0)]
            for i in range(div_stages):
                sub = dn[i] << (div_stages - 1 - i)
                ge = num[i] >= sub
                m.d.sync += [num[i + 1].eq(Mux(ge, num[i] - sub, num[i])), quo[i + 1].eq(Cat(ge, quo[i])),
                             neg[i + 1].eq(neg[i])]
            q = Signal(signed(10), name=f"pool_q{c}")
            m.d.comb += q.eq(Mux(neg[-1], -quo[-1], quo[-1]))
            m.d.sync += self.out.data.word_select(c, 8).eq(
                Mux(q < self.act_min, self.act_min, Mux(q > self.act_max, self.act_max, q)))
        return m
