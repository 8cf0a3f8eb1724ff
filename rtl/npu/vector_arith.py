"""Vector engine component: MUL, PRELU and MEAN's datapath, per-lane multipliers and the requantizer (ADD's
too)."""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import vector_input_stages
from stackcam.rtl.requant import RequantUnit

from .conv_common import read_request_signature
from .ports import addr_bits, descriptor_layout
from .vector_common import lane, word_layout

__all__ = ["VectorArithDatapath", "ALPHA_CHANNELS"]

ALPHA_CHANNELS = 256          # PRELU: alphas the unit holds (one per channel)


class VectorArithDatapath(wiring.Component):
    """MUL, PRELU and MEAN on `array_cols` lanes, by `quant.program`'s rules, sharing one `RequantUnit` of
    `array_cols` lanes (per-lane multiplier and shift: PRELU picks the identity or the alpha path per lane) with
    ADD, whose sums (`add_sums` / `add_valid`, `VectorAddDatapath`) it requantizes with out_mult / out_shift.

    - MUL: the engine reads input 1 (`issue` with `phase` 0) then input 2 (`phase` 1) of each output word; the
      lane holds ``x1 - in_zp`` and multiplies it by ``x2 - in2_zp`` (9 x 9 bits), lane 0 of input 2 for every
      lane when `bcast` (a 1x1x1 second input); the product goes to the requantizer with out_mult / out_shift.
      With `dual` (DUAL2, a second activation read port) every `issue` reads both: input 2's word is on
      `act_data2` with input 1's and the product is taken at once, one word per cycle.
    - PRELU: `alpha_init` / `alpha_load` (one pulse per channel tile, tiles in order) copy the alphas from
      weight space (``param_addr``, a tile of `cols` bytes per cycle: weight word ``param_addr + k // R``,
      bytes ``(k % R) * cols ..`` with ``R = weight_word_bytes / cols``) into a memory of one row per tile; each
      `issue` then reads the input word's tile `tile` of it, and the lane computes ``v = x - in_zp``, ``v`` or
      ``v * (alpha - in2_zp)`` and the matching multiplier and shift (in_mult/in_shift, in2_mult/in2_shift).
    - MEAN: `sums` / `sum_valid` (`VectorPoolDatapath`: the exact per-lane sum of a tile's in_h * in_w taps, at
      its last tap) minus ``in_zp * in_h * in_w``, requantized with out_mult / out_shift.

    Latency: a word is on `out` 1 + 1 + RequantUnit.latency (7; 12 with the configuration's `deep_pipeline`,
    whose input register, `quant.timing.vector_input_stages`, adds one) cycles after the `issue` of its last read
    (MUL: the second input; PRELU: the input), 1 + RequantUnit.latency (6; 10) cycles after `sum_valid` (MEAN) or
    `add_valid` (ADD); one word per cycle at most.
    An alpha row is written the cycle after its `alpha_load` (the SRAM's data) and read back the cycle after an
    `issue` (a write and a read of the same row in one cycle read the new row). No back-pressure.
    """

    def __init__(self, config):
        self.config = config
        self.cols = cols = config.array_cols
        self.tiles = -(-ALPHA_CHANNELS // cols)
        super().__init__({
            "desc": In(descriptor_layout()), "mul": In(1), "prelu": In(1), "bcast": In(1),
            "issue": In(1), "phase": In(1), "tile": In(16), "act_data": In(8 * cols),
            "alpha_init": In(1), "alpha_load": In(1), "w_data": In(8 * config.weight_word_bytes),
            "w_r": Out(read_request_signature(addr_bits(config.weight_words))),
            "sums": In(data.ArrayLayout(signed(24), cols)), "sum_valid": In(1),
            "add_sums": In(data.ArrayLayout(signed(32), cols)), "add_valid": In(1),
            "mac_active": Out(1), "out": Out(word_layout(cols)),
            **({"dual": In(1), "act_data2": In(8 * cols)} if config.act_read_ports == 2 else {}),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, cols, d = self.config, self.cols, self.desc
        per_word = cfg.weight_word_bytes // cols            # alpha tiles per weight word (array_rows)

        # Alpha rows: the load walk (weight word, tile within it, row).
        a_word = Signal(32)
        a_slot = Signal(range(per_word))
        a_row = Signal(range(self.tiles + 1))
        a_wv = Signal()
        a_wslot = Signal(range(per_word))
        a_wrow = Signal(range(self.tiles + 1))
        with m.If(self.alpha_init):
            m.d.sync += [a_word.eq(d.param_addr), a_slot.eq(0), a_row.eq(0)]
        m.d.sync += a_wv.eq(self.alpha_load)
        with m.If(self.alpha_load):
            m.d.comb += [self.w_r.en.eq(1), self.w_r.addr.eq(a_word)]
            m.d.sync += [a_wslot.eq(a_slot), a_wrow.eq(a_row), a_row.eq(a_row + 1)]
            if per_word > 1:
                with m.If(a_slot == per_word - 1):
                    m.d.sync += [a_slot.eq(0), a_word.eq(a_word + 1)]
                with m.Else():
                    m.d.sync += a_slot.eq(a_slot + 1)
            else:
                m.d.sync += a_word.eq(a_word + 1)
        alphas = Memory(shape=8 * cols, depth=self.tiles, init=[])
        m.submodules.alphas = alphas
        aw = alphas.write_port()
        ar = alphas.read_port(transparent_for=(aw,))
        m.d.comb += [aw.en.eq(a_wv), aw.addr.eq(a_wrow), aw.data.eq(self.w_data.word_select(a_wslot, 8 * cols)),
                     ar.en.eq(self.issue), ar.addr.eq(self.tile)]

        # The cycle after a read: its data (and the alpha row) are on the ports. With `deep_pipeline` they pass a
        # register first (`vector_input_stages`), so the block RAM's output ends there instead of running on
        # through the zero point's subtraction into the lane multipliers.
        dv = Signal()
        dsel = Signal()
        m.d.sync += [dv.eq(self.issue), dsel.eq(self.phase & self.mul)]
        second = cfg.act_read_ports == 2
        act, alpha = self.act_data, ar.data
        act2 = self.act_data2 if second else None
        stages = vector_input_stages(cfg)
        if stages:
            assert stages == 1
            act, alpha = Signal.like(self.act_data, name="arith_act_q"), Signal.like(ar.data, name="arith_alpha_q")
            dv_q, dsel_q = Signal(name="arith_dv_q"), Signal(name="arith_dsel_q")
            m.d.sync += [act.eq(self.act_data), alpha.eq(ar.data), dv_q.eq(dv), dsel_q.eq(dsel)]
            dv, dsel = dv_q, dsel_q
            if second:
                act2 = Signal.like(self.act_data2, name="arith_act2_q")
                m.d.sync += act2.eq(self.act_data2)
        # MUL with DUAL2: both inputs' words arrive together (input 2 on the second port), the product at once.
        dual = (self.dual & self.mul) if second else Const(0, 1)

        # MEAN's zero-point correction in_zp * in_h * in_w (the descriptor is stable from the start).
        count = Signal(16)
        zp_n = Signal(signed(26))
        m.d.sync += [count.eq(d.in_h[:8] * d.in_w[:8]), zp_n.eq(d.in_zp * count)]

        m.submodules.requant = requant = RequantUnit(cols, deep=cfg.deep_pipeline)
        acc_v = Signal()
        m.d.sync += acc_v.eq((dv & (dsel | self.prelu | dual)) | self.sum_valid | self.add_valid)
        m.d.comb += [requant.valid.eq(acc_v), self.mac_active.eq(dv & (dsel | self.prelu | dual))]
        x2_0 = lane(act, 0) - d.in2_zp
        y2_0 = lane(act2, 0) - d.in2_zp if second else None
        for c in range(cols):
            x = lane(act, c)
            hold = Signal(signed(9), name=f"mul_hold{c}")
            acc = Signal(signed(32), name=f"arith_acc{c}")
            neg = Signal(name=f"prelu_neg{c}")
            v = Signal(signed(9), name=f"arith_v{c}")
            a = Signal(signed(9), name=f"prelu_a{c}")
            x2 = Signal(signed(9), name=f"mul_x2{c}")
            m.d.comb += [v.eq(x - d.in_zp), a.eq(lane(alpha, c) - d.in2_zp),
                         x2.eq(Mux(self.bcast, x2_0, x - d.in2_zp))]
            with m.If(dv & ~dsel & self.mul):
                m.d.sync += hold.eq(v)
            if second:
                y2 = Signal(signed(9), name=f"mul_y2{c}")       # DUAL2: input 2 from the second port
                m.d.comb += y2.eq(Mux(self.bcast, y2_0, lane(act2, c) - d.in2_zp))
            with m.If(self.sum_valid):
                m.d.sync += [acc.eq(self.sums[c] - zp_n), neg.eq(0)]
            with m.Elif(self.add_valid):
                m.d.sync += [acc.eq(self.add_sums[c]), neg.eq(0)]
            with m.Elif(dv & dsel):
                m.d.sync += [acc.eq(hold * x2), neg.eq(0)]
            if second:
                with m.Elif(dv & dual):
                    m.d.sync += [acc.eq(v * y2), neg.eq(0)]
            with m.Elif(dv & self.prelu):
                m.d.sync += [acc.eq(Mux(v < 0, v * a, v)), neg.eq(v < 0)]
            p = requant.params[c]
            m.d.comb += [requant.acc[c].eq(acc), p.bias.eq(0),
                         p.multiplier.eq(Mux(self.prelu, Mux(neg, d.in2_mult, d.in_mult), d.out_mult)),
                         p.shift.eq(Mux(self.prelu, Mux(neg, d.in2_shift, d.in_shift), d.out_shift)[:6].as_signed()),
                         p.zero_point.eq(d.out_zp), p.act_min.eq(d.act_min), p.act_max.eq(d.act_max)]
        m.d.comb += [self.out.valid.eq(requant.out_valid), self.out.data.eq(Cat(requant.out.as_value()))]
        return m
