"""Conv engine component: the residual ADD fused into the back end (a CONV with the RESADD flag)."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import requant_latency, resadd_latency

from ..requant import RequantUnit
from .ports import act_read_signature, act_write_signature, descriptor_layout
from .vector_add import VectorAddDatapath, add_shifts

__all__ = ["ConvResidualAdd"]

_FIELDS = ("out_addr", "in2_addr", "out_ct", "in2_ct", "out_zp", "in2_zp", "left_shift", "in_shift", "in2_shift",
           "in_mult", "in2_mult", "out_mult", "out_shift", "add_zp", "add_min", "add_max")


class ConvResidualAdd(wiring.Component):
    """Between `ConvBackEnd` and the activation SRAM's write port. Without `enable` it passes the back end's
    writes through unchanged, in the same cycle. With `enable` (the descriptor's RESADD, `quant.program`) each
    write of the back end (`w_in`, any lane enabled) of output word (p, ct) reads the residual's word (``in2_addr +
    p*in2_ct + ct``; with ZPAD2 none when ``ct >= in2_ct``, the residual then ``in2_zp`` in every lane) on the
    second read port (`act_r2`) and becomes, `quant.timing.resadd_latency` cycles
    later, a write of the same lanes to the same word holding TFLite's int8 ADD of the conv's bytes (input 1,
    zero point ``out_zp``) and the residual's (input 2): the vector engine's ADD datapath (`VectorAddDatapath`
    in its two-port form, both inputs every cycle) and a ``cols``-lane `RequantUnit` (out_mult / out_shift,
    ``add_zp``, ``add_min`` / ``add_max``). Every lane of the word is computed; the back end's enables say
    which are written (a tile's lanes, the lanes above the pixel's last tile, whose conv bytes ``out_zp`` and
    residual bytes ``in2_zp`` give ``add_zp``).

    The word's pixel p and tile ct follow from its address by a pixel counter (`init` clears it at the run's start):
    the back end writes pixels in order, every pixel at least once, so a write past the current pixel's words is
    the next pixel's.

    Ports: `enable` (stable from the engine's start to its done), `init` (the run starts), `desc`, `w_in` (the back
    end's write), `last_in`
    (its last write), `act_r2` (the second read port's request and data), `act_w` (to the SRAM), `last` (the
    descriptor's last write is on `act_w`).

    One write per cycle in and out, no back-pressure. In place (``out_addr == in2_addr``) is safe: a word's
    residual is read before any write of it, and a later tile of the same word uses only its own lanes.
    """

    def __init__(self, config, dims):
        self.config = config
        self.dims = dims
        super().__init__({
            "enable": In(1), "init": In(1), "desc": In(descriptor_layout()),
            "w_in": In(act_write_signature(config)), "last_in": In(1),
            "act_r2": Out(act_read_signature(config)),
            "act_w": Out(act_write_signature(config)), "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        C, AB = self.dims.C, self.dims.AB
        w_in = self.w_in
        # The fields the fused ADD reads, registered in the engine's (gated) domain: `desc` is stable from the
        # engine's start and the first write comes after the setup, and none of the lanes' logic then depends on
        # a signal outside the domain (in a simulation it is not evaluated while the engine's clock is stopped).
        d = Signal(descriptor_layout())
        m.d.sync += [getattr(d, f).eq(getattr(self.desc, f)) for f in _FIELDS]

        # Cycle t: the back end's write of output word (p, ct); the residual's word (p, ct) is read, unless it is a
        # ZPAD2 tile past the residual's.
        beat = Signal()
        off = Signal(AB)                         # the word's offset in the output, p*out_ct + ct
        pix_o, pix_i = Signal(AB), Signal(AB)    # p*out_ct and p*in2_ct of the pixel of the previous write
        new_pix = Signal()
        cur_o, cur_i, ct = Signal(AB), Signal(AB), Signal(AB)
        zpad_word = Signal()
        m.d.comb += [
            beat.eq(self.enable & w_in.en.any()),
            off.eq(w_in.addr - d.out_addr[:AB]),
            new_pix.eq(off >= pix_o + d.out_ct),
            cur_o.eq(Mux(new_pix, pix_o + d.out_ct, pix_o)),
            cur_i.eq(Mux(new_pix, pix_i + d.in2_ct, pix_i)),
            ct.eq(off - cur_o),
            zpad_word.eq(ct >= d.in2_ct),
            self.act_r2.en.eq(beat & ~zpad_word),
            self.act_r2.addr.eq(d.in2_addr[:AB] + cur_i + ct),
        ]
        with m.If(self.init):
            m.d.sync += [pix_o.eq(0), pix_i.eq(0)]
        with m.Elif(beat):
            m.d.sync += [pix_o.eq(cur_o), pix_i.eq(cur_i)]
        zpad_q = Signal()
        m.d.sync += zpad_q.eq(zpad_word)
        # t + 1: the conv's word beside the residual's, into ADD's rescalers (input 1 the conv's, in_zp = out_zp).
        conv_word = Signal(8 * C)
        m.d.sync += conv_word.eq(w_in.data)
        m.submodules.add = add = VectorAddDatapath(cfg)
        assert add.second
        add_desc = Signal(descriptor_layout())
        m.d.comb += [add_desc.eq(d), add_desc.in_zp.eq(d.out_zp), add_desc.flags.eq(0)]
        add_l = Signal(data.ArrayLayout(6, 2))
        add_r = Signal(data.ArrayLayout(5, 2))
        add_shifts(m, self.desc, add_l, add_r)
        m.d.comb += [
            add.issue.eq(beat), add.phase.eq(0), add.solo.eq(0), add.bcast.eq(0), add.dual.eq(1),
            add.act_data.eq(conv_word),
            add.act_data2.eq(Mux(zpad_q, Cat(d.in2_zp for _ in range(C)), self.act_r2.data)),
            add.add_l.eq(add_l), add.add_r.eq(add_r), add.desc.eq(add_desc),
        ]

        # The write's address, lanes and last flag travel beside the sums, then through the requantizer as its tag.
        tag = Cat(w_in.addr, w_in.en, self.last_in)
        for i in range(add.latency + 1):
            nxt = Signal.like(tag, name=f"resadd_tag{i + 1}")
            m.d.sync += nxt.eq(tag)
            tag = nxt
        acc_v = Signal()
        acc = Signal(data.ArrayLayout(signed(32), C))
        m.d.sync += [acc_v.eq(add.sum_valid), acc.eq(add.sums)]
        m.submodules.requant = rq = RequantUnit(C, tag_width=len(tag), deep=cfg.deep_pipeline)
        assert add.latency + 1 + rq.latency == resadd_latency(cfg) and rq.latency == requant_latency(cfg)
        m.d.comb += [rq.valid.eq(acc_v), rq.tag.eq(tag)]
        for c in range(C):
            p = rq.params[c]
            m.d.comb += [rq.acc[c].eq(acc[c]), p.bias.eq(0), p.multiplier.eq(d.out_mult),
                         p.shift.eq(d.out_shift[:6].as_signed()), p.zero_point.eq(d.add_zp),
                         p.act_min.eq(d.add_min), p.act_max.eq(d.add_max)]
        o_addr, o_en, o_last = rq.out_tag[:AB], rq.out_tag[AB:AB + C], rq.out_tag[AB + C]

        with m.If(self.enable):
            m.d.comb += [
                self.act_w.addr.eq(o_addr), self.act_w.data.eq(Cat(rq.out.as_value())),
                self.act_w.en.eq(Mux(rq.out_valid, o_en, 0)), self.last.eq(rq.out_valid & o_last),
            ]
        with m.Else():
            m.d.comb += [
                self.act_w.addr.eq(w_in.addr), self.act_w.data.eq(w_in.data), self.act_w.en.eq(w_in.en),
                self.last.eq(self.last_in),
            ]
        return m
