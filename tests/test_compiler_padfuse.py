"""Channel PAD fused into its ADD (ZPAD2): a PAD that appends whole channel tiles with the zero point, read only by
ADDs, costs no descriptor; each ADD reads the PAD's input as its second input (its own channel tiles) and takes
the zero point for the tiles past it, one cycle per such output word instead of two (a SUB too, when the PAD is
its second input). Checked against LiteRT's reference kernels (the golden executor on the compiled program) and
through the die in Verilator, with cycles equal to the model; the PADs that cannot be fused (the first input of a
SUB, a graph output) keep their COPY."""

import pytest

from stackcam.quant.compiler import compile_graph
from stackcam.quant.program import NEG2, OPCODES, ZPAD2
from stackcam.quant.romimage import build_rom
from stackcam.quant.timing import descriptor_activity, descriptor_cycles
from stackcam.rtl.params import preset
from tests.dieutil import die_equals_golden, golden_equals_litert
from tests.test_program import Net


def pad_fuse_net():
    """On 4-lane words (tiny): channel PADs adding one, three and one channel tiles into residual ADDs (the PAD the
    first input of one, second of another, one PAD read by two ADDs, one from a single channel: not a 1x1x1
    broadcast), one into a SUB as its second input, and two that stay COPYs (a SUB's first input; a graph
    output)."""
    n = Net((1, 6, 7, 3), seed=31)
    a = n.conv(n.input, 5, k=3, out_q=(0.05, 2))                                  # 5 ch: 2 tiles of 4
    pa = n.pad(a, [(0, 0), (0, 0), (0, 0), (0, 4)])                               # 5 -> 9: a third tile
    b = n.add(pa, n.conv(a, 9, k=1, out_q=(0.06, -3)), out_q=(0.08, 1))          # the PAD first: swapped
    c = n.conv(b, 3, k=1, out_q=(0.04, -6))                                       # 3 ch: 1 tile
    pc = n.pad(c, [(0, 0), (0, 0), (0, 0), (0, 10)])                              # 3 -> 13: 1 -> 4 tiles
    e1 = n.add(n.conv(b, 13, k=3, out_q=(0.05, 3)), pc, out_q=(0.07, -1), act="RELU")
    e2 = n.add(pc, n.conv(c, 13, k=1, out_q=(0.06, 0)), out_q=(0.09, 5))          # pc's second ADD
    one = n.conv(e1, 1, k=1, out_q=(0.05, 7))                                     # 1 channel
    p1 = n.pad(one, [(0, 0), (0, 0), (0, 0), (0, 6)])                             # 1 -> 7: 2 tiles, in2_c = 1
    f = n.add(n.conv(e2, 7, k=1, out_q=(0.03, -2)), p1, out_q=(0.06, 2), act="RELU6")
    ps = n.pad(c, [(0, 0), (0, 0), (0, 0), (0, 5)])                               # 3 -> 8, a SUB's second input
    conv8 = n.conv(b, 8, k=1, out_q=(0.05, 1))
    s1 = n.op("SUB", [conv8, ps], [n.act(n.shape(conv8), 0.07, -4)], activation="NONE")
    pf = n.pad(c, [(0, 0), (0, 0), (0, 0), (0, 5)])                               # a SUB's first input: COPY
    conv8b = n.conv(b, 8, k=1, out_q=(0.04, 6))
    s2 = n.op("SUB", [pf, conv8b], [n.act(n.shape(conv8b), 0.06, 2)], activation="RELU")
    po = n.pad(c, [(0, 0), (0, 0), (0, 0), (0, 6)])                               # 3 -> 9, a graph output: COPY
    g = n.add(po, n.conv(b, 9, k=1, out_q=(0.05, -5)), out_q=(0.08, 3))
    return n.graph(f, n.add(s1, s2, out_q=(0.1, -2)), g, po)


def _compiled():
    config = preset("tiny")
    graph = pad_fuse_net()
    return config, graph, compile_graph(graph, config)


def test_channel_pad_fused_into_add_equals_litert():
    config, graph, model = _compiled()
    descs = model.descriptors
    assert sum(d.opcode == OPCODES["COPY"] for d in descs) == 2          # a SUB's first input, a graph output
    fused = [d for d in descs if d.op == "ADD" and d.flags & ZPAD2]
    # (in2_c, in2_ct, out_ct, SUB) of the fused ADDs: 5 of 9 channels, 3 of 13 (twice), 1 of 7, 3 of 8 (SUB).
    assert sorted((d.in2_c, d.in2_ct, d.out_ct, bool(d.flags & NEG2)) for d in fused) == [
        (1, 1, 2, False), (3, 1, 2, True), (3, 1, 4, False), (3, 1, 4, False), (5, 2, 3, False)]
    for d in fused:
        pixels = d.out_h * d.out_w
        plain = d.__class__(**{**vars(d), "flags": d.flags & ~ZPAD2, "in2_c": d.out_c, "in2_ct": d.out_ct})
        # One cycle and one read fewer per output word of a zero-point tile.
        saved = pixels * (d.out_ct - d.in2_ct)
        assert descriptor_cycles(config, plain) - descriptor_cycles(config, d) == saved
        assert descriptor_activity(config, plain)["act_reads"] - descriptor_activity(config, d)["act_reads"] == saved
    golden_equals_litert(graph, config, build_rom(model), count=3, seed=5)


@pytest.mark.xdist_group("verilator")
def test_channel_pad_fused_into_add_on_the_die():
    """The die's ADD reads only the second input's own tiles and the zero point for the others: outputs equal the
    golden executor's, each descriptor's cycles the model's."""
    config, graph, model = _compiled()
    die_equals_golden(config, model, build_rom(model), graph, count=2, seed=11, stall=0.3)
