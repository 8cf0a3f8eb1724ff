"""Vector engine component: the address unit of the pools' reads and COPY's writes."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .ports import addr_bits
from .vector_common import address_request_layout, address_stage_layout

__all__ = ["VectorAddressUnit"]


class VectorAddressUnit(wiring.Component):
    """Word address ``base + (row * width + col) * tiles + tile`` of a request, in two pipelined stages (one
    multiplier each), its tag carried along.

    Ports: `req` (`vector_common.address_request_layout`: valid, row, col, tile, tag), `width`, `tiles` and
    `base` (the tensor's geometry, stable while requests flow), `p2` (the address: the engine puts it on the
    SRAM read port) and `p3` (the same request one cycle later, when the SRAM's data for it is on the port).

    Latency: a request is on `p2` two cycles after it is on `req` and on `p3` three cycles after; one request
    per cycle. No back-pressure.
    """

    def __init__(self, config):
        self.abits = abits = addr_bits(config.act_words)
        super().__init__({
            "req": In(address_request_layout(abits)),
            "width": In(16), "tiles": In(16), "base": In(abits),
            "p2": Out(address_stage_layout(abits)), "p3": Out(address_stage_layout(abits)),
        })

    def elaborate(self, platform):
        m = Module()
        req, p2, p3 = self.req, self.p2, self.p3
        p1_v = Signal()
        p1_lin = Signal(self.abits)
        p1_tile = Signal(17)
        p1_tag = Signal.like(req.tag)
        m.d.sync += [
            p1_v.eq(req.valid), p1_lin.eq(req.row * self.width + req.col), p1_tile.eq(req.tile), p1_tag.eq(req.tag),
            p2.valid.eq(p1_v), p2.addr.eq(p1_lin * self.tiles + p1_tile + self.base), p2.tag.eq(p1_tag),
            p3.valid.eq(p2.valid), p3.addr.eq(p2.addr), p3.tag.eq(p2.tag),
        ]
        return m
