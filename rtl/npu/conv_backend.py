"""Conv engine component: the back end (depthwise drain, parameter-buffer read, requantizer, byte-lane write)."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stackcam.quant.timing import requant_latency

from ..requant import RequantUnit
from ..requant_fc import FCRequantUnit
from .conv_common import mux_tree, param_record_layout, tile_layout, words
from .ports import act_write_signature

__all__ = ["ConvBackEnd", "param_read_signature"]


def param_read_signature(dims):
    """The parameter buffer's read port: word `addr` (`cols` records) in `data` the cycle after."""
    return wiring.Signature({
        "addr": Out(range(dims.param_depth)), "data": In(data.ArrayLayout(param_record_layout, dims.C)),
    })


class ConvBackEnd(wiring.Component):
    """A tile's sums to int8 in the activation SRAM: parameter-buffer read (T), requantizer (T+1 .. T+5),
    byte-lane write (T+6) of the tile's ``rows`` lanes; the pixel's last tile of a CONV also writes ``out_zp``
    into the word's lanes above it (padding lanes with no tile: what their all-zero records would give).

    The requantizer is `RequantUnit` (TFLite's Q31 multiplier and shift), or `FCRequantUnit` (LiteRT's
    reference FULLY_CONNECTED rescale: the records' float64 scale) for a CONV with the FCSCALE flag; both have
    the latency `quant.timing.requant_latency` (deeper with the configuration's `deep_pipeline`), so the cycle
    counts do not depend on the choice.

    Ports: `tile`, `acc` (CONV: the rows' sums) and `dw_sum` (DWCONV: the set's ``cols`` sums) at T (S4, from
    `ConvMACPipe`), `dw` and `fc` (modes: DWCONV, FCSCALE), `out_zp` / `act_min` / `act_max`, `pbuf`
    (`param_read_signature`), `act_w` (activation write port), `last` (the descriptor's last write is on
    `act_w`).

    DWCONV holds a closed output's ``cols`` sums (T + 1) and drains them ``rows`` lanes per cycle over
    ``cols // rows`` cycles (T + 1 .. T + groups; each write fills one lane group of the output word); with the
    line walk or on an array of ``cols = 2 * rows`` (`quant.timing.dw_drain_groups` = 1) `RequantUnit` is
    ``cols`` lanes wide and the whole word drains in one cycle (CONV tiles use its first ``rows`` lanes). A PAIR
    tile (`pair`, on an array of ``cols = 2 * rows``) is a whole output word too: `acc` and `acc2` (the pair's two
    oc tiles) through the ``cols``-lane requantizer with the word's ``cols`` records, written at once. The issue
    stages space their closes so that a drain never overlaps the next. Latency from `tile.done` to the write:
    CONV 1 + ``RequantUnit.latency`` cycles (`quant.timing.CONV_LATENCY` - 4), DWCONV 2 + ``RequantUnit.latency``
    for the first lane group and ``groups - 1`` more for the last. No back-pressure: one tile (or one drain
    beat) per cycle in, one write per cycle out.
    """

    def __init__(self, config, dims):
        self.config = config
        self.dims = dims
        R, C = dims.R, dims.C
        super().__init__({
            "tile": In(tile_layout(dims)), "acc": In(data.ArrayLayout(signed(32), R)),
            "dw_sum": In(data.ArrayLayout(signed(32), C)), "dw": In(1), "fc": In(1),
            **({"pair": In(1), "acc2": In(data.ArrayLayout(signed(32), R))} if dims.PAIR else {}),
            "out_zp": In(signed(8)), "act_min": In(signed(8)), "act_max": In(signed(8)),
            "pbuf": Out(param_read_signature(dims)), "act_w": Out(act_write_signature(config)), "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        R, C, NG, AB, sub_w = dm.R, dm.C, dm.NG, dm.AB, dm.sub_w
        NGD = dm.NGD
        # Requantizer lanes: `cols` when a DWCONV output drains at once or a PAIR tile fills the output word.
        RQ = R if NGD == NG and not dm.PAIR else C
        whole = self.dw | self.pair if dm.PAIR else self.dw     # the tile is a whole output word
        deep = self.config.deep_pipeline
        m.submodules.requant = rq = RequantUnit(RQ, tag_width=AB + sub_w + 2, deep=deep)
        m.submodules.requant_fc = fq = FCRequantUnit(R, tag_width=AB + sub_w + 2, deep=deep)
        assert rq.latency == fq.latency == requant_latency(self.config)
        tile = self.tile

        # DWCONV drain: the tile's C sums, RQ lanes per cycle into the requantizer (NGD cycles).
        hold = Signal(data.ArrayLayout(signed(32), C))
        dr_active = Signal()
        dr_i = Signal(sub_w)
        dr_pw = Signal(16)
        dr_oaddr = Signal(AB)
        dr_final = Signal()
        with m.If(dr_active):
            with m.If(dr_i == NGD - 1):
                m.d.sync += dr_active.eq(0)
            with m.Else():
                m.d.sync += dr_i.eq(dr_i + 1)
        with m.If(self.dw & tile.done):
            m.d.sync += [hold.eq(self.dw_sum), dr_active.eq(1), dr_i.eq(0), dr_pw.eq(tile.pw),
                         dr_oaddr.eq(tile.oaddr), dr_final.eq(tile.final)]

        # T: the tile (or drain beat) and its parameter-buffer word.
        be_valid = Signal()
        be_acc = Signal(data.ArrayLayout(signed(32), RQ))
        be_pw = Signal(16)
        be_sub = Signal(sub_w)
        be_oaddr = Signal(AB)
        be_final = Signal()
        be_rest = Signal()              # CONV: the pixel's last tile also fills the word's lanes above it
        with m.If(self.dw):
            m.d.comb += [
                be_valid.eq(dr_active), be_pw.eq(dr_pw), be_sub.eq(dr_i), be_oaddr.eq(dr_oaddr),
                be_final.eq(dr_final & (dr_i == NGD - 1)),
                be_acc.as_value().eq(mux_tree(words(hold.as_value(), 32 * RQ), dr_i)),
            ]
        with m.Else():
            m.d.comb += [
                be_valid.eq(tile.done), be_pw.eq(tile.pw), be_sub.eq(tile.sub), be_oaddr.eq(tile.oaddr),
                be_final.eq(tile.final), be_rest.eq(tile.rest),
                be_acc.as_value().eq(Mux(self.pair, Cat(self.acc.as_value(), self.acc2.as_value()),
                                         self.acc.as_value()) if dm.PAIR else self.acc.as_value()),
            ]
        m.d.comb += self.pbuf.addr.eq(be_pw[:len(self.pbuf.addr)])

        # T+1: the tile's records and the descriptor's zero point and clamps into the requantizer.
        b1_valid = Signal()
        b1_acc = Signal.like(be_acc)
        b1_sub = Signal(sub_w)
        b1_oaddr = Signal(AB)
        b1_final = Signal()
        b1_rest = Signal()
        m.d.sync += [b1_valid.eq(be_valid), b1_acc.eq(be_acc), b1_sub.eq(be_sub), b1_oaddr.eq(be_oaddr),
                     b1_final.eq(be_final), b1_rest.eq(be_rest)]
        rec_bits = param_record_layout.size
        recs = Signal(data.ArrayLayout(param_record_layout, RQ))
        tile_recs = mux_tree(words(self.pbuf.data.as_value(), rec_bits * R), b1_sub)
        if RQ == R:
            m.d.comb += recs.as_value().eq(tile_recs)
        else:                                   # a DWCONV output: the buffer word's C records at once
            m.d.comb += recs.as_value().eq(Mux(whole, self.pbuf.data.as_value(), tile_recs))
        for r in range(RQ):
            p = rq.params[r]
            m.d.comb += [
                p.bias.eq(recs[r].bias), p.multiplier.eq(recs[r].rescale.q31.multiplier),
                p.shift.eq(recs[r].rescale.q31.shift),
                p.zero_point.eq(self.out_zp), p.act_min.eq(self.act_min), p.act_max.eq(self.act_max),
            ]
        for r in range(R):
            pf = fq.params[r]
            m.d.comb += [
                pf.bias.eq(recs[r].bias), pf.scale.eq(recs[r].rescale.scale),
                pf.zero_point.eq(self.out_zp), pf.act_min.eq(self.act_min), pf.act_max.eq(self.act_max),
            ]
        b1_tag = Cat(b1_oaddr, b1_sub, b1_final, b1_rest)
        m.d.comb += [
            rq.valid.eq(b1_valid & ~self.fc), rq.acc.eq(b1_acc), rq.tag.eq(b1_tag),
            fq.valid.eq(b1_valid & self.fc), fq.acc.as_value().eq(b1_acc.as_value()[:32 * R]), fq.tag.eq(b1_tag),
        ]

        # T+6: the write (from whichever requantizer the tile went through).
        o_valid = rq.out_valid | fq.out_valid
        o_tag = Mux(fq.out_valid, fq.out_tag, rq.out_tag)
        o_out = [Mux(fq.out_valid, fq.out[r], rq.out[r]) if r < R else rq.out[r] for r in range(RQ)]
        o_addr = o_tag[:AB]
        o_sub = o_tag[AB:AB + sub_w]
        o_final = o_tag[AB + sub_w]
        o_rest = o_tag[AB + sub_w + 1]
        # Lane groups above the last oc tile of a pixel (when ceil(out_c/rows)*rows < out_ct*cols) are padding
        # lanes with no tile: they get out_zp, the value their all-zero parameter records would give.
        above = Signal(NG)
        for g in range(1, NG):
            m.d.comb += above[g].eq(o_rest & (o_sub < g))
        lanes = [Mux(above[ln // R], self.out_zp, o_out[ln % R]) for ln in range(C)]
        if RQ > R:                              # a DWCONV output or a PAIR tile: the word, whole
            lanes = [Mux(whole, o_out[ln], lanes[ln]) for ln in range(C)]
        m.d.comb += [
            self.act_w.addr.eq(o_addr),
            self.act_w.data.eq(Cat(*lanes)),
            self.last.eq(o_valid & o_final),
        ]
        with m.If(o_valid):
            for g in range(NG):
                with m.If(o_sub == g):
                    m.d.comb += self.act_w.en.eq(Mux(o_rest, ((1 << C) - 1) ^ ((1 << (g * R)) - 1),
                                                     ((1 << R) - 1) << (g * R)))
            if RQ > R:
                with m.If(whole):
                    m.d.comb += self.act_w.en.eq((1 << C) - 1)
        return m
