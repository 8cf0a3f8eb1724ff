"""RESIZE and GATHER on the whole die (Verilator, input on the tensor port, a stalling CSI-2 PHY): a small graph
with DEPTH_TO_SPACE, RESIZE_BILINEAR (half pixel centers), RESIZE_NEAREST_NEIGHBOR, a strided channel slice and a
TRANSPOSE_CONV (zero-inserting GATHER and CONV)
equals the golden program executor element for element, and every descriptor's cycles equal quant.timing."""

import numpy as np
import pytest

import stackcam.quant.golden as golden
from stackcam.quant.compiler import compile_graph
from stackcam.quant.program import OPCODES
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import preset
from stackcam.sim.cyclemodel import predict_cycles
from stackcam.sim.dierun import run_die
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
    rom = build_rom(model)
    rng = np.random.default_rng(7)
    xs = [rng.integers(-128, 128, graph.tensors[graph.inputs[0]].shape[1:]).astype(np.int8) for _ in range(2)]
    run = run_die(config, rom, tensors=xs, stall=0.4, progress=False)
    assert run.loads[0]["model_ok"] == 1
    assert run.counters["frame_errors"] == 0 and run.counters["csi2_errors"] == 0
    for x, frame in zip(xs, run.frames):
        want = golden.execute(rom, config, x)
        got = frame.graph_outputs if frame.graph_outputs is not None else frame.outputs
        assert len(got) == len(want)
        for g, w in zip(got, want):
            g = np.asarray(g).reshape(w.shape)
            assert int(np.count_nonzero(g != w)) == 0
    predicted = predict_cycles(model, config)
    descs = [d for d in model.descriptors if d.opcode != OPCODES["END"]]
    counters = [c for c, _ in run.descriptor_counters][:len(descs)]
    assert counters == predicted["descriptors"]
    assert run.counters["npu_cycles"] == predicted["total"]
