"""RESIZE and GATHER on the whole die (Verilator, input on the tensor port, a stalling CSI-2 PHY): a small graph
with DEPTH_TO_SPACE, RESIZE_BILINEAR (half pixel centers), RESIZE_NEAREST_NEIGHBOR, a strided channel slice and a
TRANSPOSE_CONV (zero-inserting GATHER and CONV)
equals the golden program executor element for element, and every descriptor's cycles equal quant.timing."""

import pytest

from stackcam.quant.compiler import compile_graph
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import preset
from tests.dieutil import die_equals_golden
from tests.test_program import Net

pytestmark = pytest.mark.xdist_group("verilator")


def move_net():
    n = Net((1, 6, 8, 3), seed=61)
    a = n.conv(n.input, 12, k=3, stride=2, out_q=(0.05, 3))                        # 3 x 4 x 12
    d = n.op("DEPTH_TO_SPACE", [a], [n.act((1, 6, 8, 3), *n.q(a))], block_size=2)
    up = n.resize(d, "RESIZE_BILINEAR", (9, 11), half_pixel_centers=True)
    b = n.conv(up, 6, k=3, out_q=(0.07, -2))
    s = n.op("STRIDED_SLICE", [b], [n.act((1, 3, 6, 4), *n.q(b))], begin=(0, 1, 0, 1), end=(1, 9, 11, 5),
             strides=(1, 3, 2, 1))
    nn = n.resize(s, "RESIZE_NEAREST_NEIGHBOR", (5, 4), align_corners=True)
    t = n.tconv(nn, 3, k=3, stride=2, pads=(1, 0), act="RELU")                     # 10 x 8 x 3
    return n.graph(n.conv(nn, 4, k=1, out_q=(0.1, 0)), t)


def test_move_graph_on_the_die():
    config = preset("tiny")
    graph = move_net()
    model = compile_graph(graph, config)
    assert {"RESIZE", "GATHER"} <= {d.op for d in model.descriptors}
    die_equals_golden(config, model, build_rom(model), graph, count=2, seed=7, stall=0.4)
