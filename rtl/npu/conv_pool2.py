"""Conv engine component: the 2x2 stride-2 max pool a DWCONV with POOL2 writes beside its output."""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .conv_common import lane, pool_rows_layout
from .ports import descriptor_layout

__all__ = ["ConvPool2"]

_FIELDS = ("in2_addr", "out_ct", "out_w", "out_h", "add_min", "add_max")


class ConvPool2(wiring.Component):
    """The max pool of POOL2 (`quant.program`), from the rows the depthwise line walk reads anyway: at each line
    issue (`pool`, S1 of the datapath) of a padded column ``col < 2*out_w`` (``pad_left = 0``: the input's column)
    the lane-wise max of the column's kernel rows 0 and 1 (input rows 2y and 2y+1, ``pad_top = 0``, stride 2;
    registered first, at S2) is held at an even column and, at the odd one after it, maxed with it, clamped to
    ``[add_min, add_max]`` and offered for writing (`w_valid`, `w_addr`, `w_data`, all lanes) at word ``in2_addr +
    (y*out_w + x)*out_ct + t`` of channel tile t, output row y, x = col // 2: the walk takes each tile's rows in
    order and, in one pass per row (`quant.timing.dw_pool2_fits`), each row's columns in order, so a word counter
    gives the address.

    The engine writes the offered word in a cycle in which the back end does not write (`taken`), the pool's
    words otherwise waiting in `w_valid`'s register: with stride 2 a column takes at least two cycles and a
    DWCONV output closes every second column, so offers come at least four cycles apart and the back end writes
    one word per close (its drain of one cycle on an engine with the line walk): an offer is taken within a
    cycle, before the next, and before the run's last write.

    Ports: `enable` (the descriptor's POOL2, stable from the engine's start to its done), `init` (the run starts),
    `desc`, `pool` (the datapath's S1 column), `taken`, `w_valid` / `w_addr` / `w_data`.
    """

    def __init__(self, dims):
        self.dims = dims
        super().__init__({
            "enable": In(1), "init": In(1), "desc": In(descriptor_layout()), "pool": In(pool_rows_layout(dims)),
            "taken": In(1),
            "w_valid": Out(1), "w_addr": Out(dims.AB), "w_data": Out(8 * dims.C),
        })

    def elaborate(self, platform):
        m = Module()
        dm = self.dims
        C, AB = dm.C, dm.AB
        # The fields it reads, registered in the engine's domain (`desc` is stable from the start; the first
        # line issue comes after the setup).
        d = Signal(descriptor_layout())
        m.d.sync += [getattr(d, f).eq(getattr(self.desc, f)) for f in _FIELDS]
        # The datapath's column, registered here too (S2): the lanes below then read nothing outside the unit's
        # domain.
        p = Signal(pool_rows_layout(dm))
        m.d.sync += p.eq(self.pool)

        fire = Signal()
        m.d.comb += fire.eq(self.enable & p.issue & (p.col < (d.out_w << 1)))
        pair = [Signal(signed(8), name=f"pool_m{c}") for c in range(C)]        # max of the column's two rows
        for c in range(C):
            a, b = lane(p.row0, c).as_signed(), lane(p.row1, c).as_signed()
            m.d.comb += pair[c].eq(Mux(a > b, a, b))
        held = [Signal(signed(8), name=f"pool_h{c}") for c in range(C)]        # the even column's
        out = []
        for c in range(C):
            v = Mux(held[c] > pair[c], held[c], pair[c])
            v = Mux(v < d.add_min, d.add_min, v)
            out.append(Mux(v > d.add_max, d.add_max, v)[:8])

        addr, tbase = Signal(AB), Signal(AB)      # the next word; channel tile t's first word, in2_addr + t
        x, y = Signal(16), Signal(16)
        with m.If(self.init):
            m.d.sync += [addr.eq(d.in2_addr[:AB]), tbase.eq(d.in2_addr[:AB]), x.eq(0), y.eq(0)]
        with m.Elif(fire & ~p.col[0]):
            m.d.sync += [held[c].eq(pair[c]) for c in range(C)]
        with m.Elif(fire):
            m.d.sync += [self.w_data.eq(Cat(*out)), self.w_addr.eq(addr)]
            with m.If(x == d.out_w - 1):
                m.d.sync += x.eq(0)
                with m.If(y == d.out_h - 1):
                    m.d.sync += [y.eq(0), tbase.eq(tbase + 1), addr.eq(tbase + 1)]
                with m.Else():
                    m.d.sync += [y.eq(y + 1), addr.eq(addr + d.out_ct)]
            with m.Else():
                m.d.sync += [x.eq(x + 1), addr.eq(addr + d.out_ct)]
        with m.If(self.init):
            m.d.sync += self.w_valid.eq(0)
        with m.Elif(fire & p.col[0]):
            m.d.sync += self.w_valid.eq(1)
        with m.Elif(self.taken):
            m.d.sync += self.w_valid.eq(0)
        return m
