"""Channel PAD by layout: a PAD that only appends channels within the input's last channel tile (so the words per
pixel do not change), with the zero point as its value, costs no descriptor: its output is the input's words,
whose padding lanes every operator writes with its zero point. Checked against LiteRT's reference kernels (the
golden executor on the compiled program) and through the die in Verilator, with cycles equal to the model; the
cases that still need a COPY (a new channel tile, another pad value, spatial padding) keep it."""

import pytest

from stackcam.quant.compiler import compile_graph
from stackcam.quant.program import OPCODES
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import preset
from tests.dieutil import die_equals_golden, golden_equals_litert
from tests.test_program import Net


def pad_net():
    """On 4-lane words (tiny): channel PADs after a CONV, a DWCONV, an ADD and a MAX_POOL, each into a residual
    ADD (the BlazeFace pattern), one a graph output; and three that must stay COPYs (two read by a
    CONCATENATION)."""
    n = Net((1, 6, 7, 3), seed=23)
    a = n.conv(n.input, 5, k=3, out_q=(0.05, 2))                                  # 5 ch: 2 tiles of 4
    pa = n.pad(a, [(0, 0), (0, 0), (0, 0), (0, 2)])                               # 5 -> 7: alias
    b = n.add(pa, n.conv(a, 7, k=1, out_q=(0.06, -3)), out_q=(0.08, 1))
    d = n.conv(b, 7, k=3, depthwise=True, out_q=(0.04, -6))
    pd = n.pad(d, [(0, 0), (0, 0), (0, 0), (0, 1)])                               # 7 -> 8: alias
    e = n.add(pd, n.conv(d, 8, k=1, out_q=(0.05, 3)), out_q=(0.07, -1), act="RELU")
    m = n.pool(e, "MAX_POOL_2D", (2, 2), 2)                                       # 3 x 3 x 8
    f = n.conv(m, 6, k=1, out_q=(0.05, 0))
    pf = n.pad(f, [(0, 0), (0, 0), (0, 0), (0, 2)])                               # 6 -> 8 after an ADD below
    g = n.add(pf, m, out_q=(0.09, 5))
    pg = n.pad(g, [(0, 0), (0, 0), (0, 0), (0, 0)])                               # nothing: alias
    keep1 = n.pad(f, [(0, 0), (0, 0), (0, 0), (0, 3)])                            # 6 -> 9: a third tile, COPY
    keep2 = n.pad(f, [(0, 0), (0, 0), (0, 0), (0, 1)])
    n.ops[-1].opts["value"] = -100                                                # PADV2 value: COPY
    keep3 = n.pad(f, [(0, 0), (1, 0), (0, 0), (0, 1)])                            # spatial too: COPY
    pm = n.pad(n.pool(d, "MAX_POOL_2D", (2, 2), 2), [(0, 0), (0, 0), (0, 0), (0, 1)])   # after a pool: alias
    mixed = n.conv(n.concat([keep1, keep2]), 5, k=1, out_q=(0.05, 1))        # a mid-network CONCATENATION
    return n.graph(n.add(pg, pm, out_q=(0.1, -2)), pa, mixed, keep3)          # (the die sends 4 outputs)


def _count(model, op):
    return sum(d.opcode == OPCODES[op] for d in model.descriptors)


def test_channel_pad_by_layout_equals_litert():
    config = preset("tiny")
    graph = pad_net()
    model = compile_graph(graph, config)
    assert _count(model, "COPY") == 3 + 2                # the three that need one, and the CONCATENATION's two
    golden_equals_litert(graph, config, build_rom(model), count=3, seed=5)


@pytest.mark.xdist_group("verilator")
def test_channel_pad_by_layout_on_the_die():
    """The die writes every operator's padding lanes with its zero point, so the aliased outputs are exact there
    too (a producer that left them stale would show here), and the cycles are the model's."""
    config = preset("tiny")
    graph = pad_net()
    model = compile_graph(graph, config)
    die_equals_golden(config, model, build_rom(model), graph, count=2, seed=11, stall=0.3)
