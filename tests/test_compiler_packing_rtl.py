"""A network with its narrow tensors pixel-packed, through the die in Verilator with CSI-2 back-pressure: die
outputs equal the golden executor's, which equals LiteRT BUILTIN_REF; each descriptor's cycles (the die's
counters) equal the analytic model."""

import numpy as np
import pytest

from stackcam.quant import compiler as comp
from stackcam.quant import golden
from stackcam.quant.compiler import compile_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.litert import run_reference
from stackcam.quant.program import OPCODES
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import preset
from tests.test_compiler_packing import _maxpool, _mean, _mul, _prelu
from tests.test_program import Net

pytestmark = pytest.mark.xdist_group("verilator")


def packed_net():
    """2-channel tensors (2 pixels per 4-lane word on tiny) and a 1-channel one (4 per word): superpixel CONVs
    from and to both layouts, a depthwise, ADD, PRELU, a LUT, MUL by a repeated 1x1xC, MEAN and MAXPOOL through
    GATHERed temporaries, a transpose conv whose zero-inserted input is written packed, a RESIZE from and to
    packed tensors."""
    n = Net((1, 6, 16, 3), seed=21)
    a = n.conv(n.input, 2, k=3, out_q=(0.05, -1))
    b = n.conv(a, 0, k=3, depthwise=True, out_q=(0.06, 2), act="RELU")
    c = n.add(a, b, out_q=(0.08, 1))
    d = _prelu(n, c)
    e = n.unary(d, "HARD_SWISH", (0.04, -20))
    s = n.unary(n.conv(_mean(n, e), 2, k=1, out_q=(0.05, 0)), "LOGISTIC", (1 / 256, -128))
    f = _mul(n, e, s)
    g = n.conv(f, 1, k=3, stride=2, out_q=(0.07, 3))
    h = n.tconv(g, 2, k=2, stride=2, pads=(0, 0), out_q=(0.06, -4))
    m = n.conv(_maxpool(n, f), 4, k=1, out_q=(0.09, 5))
    r = n.conv(n.resize(b, "RESIZE_BILINEAR", (9, 32), half_pixel_centers=True), 2, k=1, out_q=(0.05, 1))
    return n.graph(h, m, r)


def _run(config, compiled, graph, xs):
    from stackcam.sim.cyclemodel import predict_cycles
    from stackcam.sim.dierun import run_die

    rom = build_rom(compiled)
    exported = export_tflite(graph)
    run = run_die(config, rom, tensors=xs, stall=0.3, progress=False)
    assert run.loads[0]["model_ok"] == 1 and len(run.frames) == len(xs)
    for x, frame in zip(xs, run.frames):
        assert frame.error is None
        want = golden.execute(rom, config, x)
        ref = run_reference(exported, [x[None]])
        for got, g, r in zip(frame.graph_outputs, want, ref):
            np.testing.assert_array_equal(np.asarray(g).reshape(r.shape), r)
            np.testing.assert_array_equal(np.asarray(got).reshape(r.shape), r)
    predicted = predict_cycles(compiled, config)
    descs = [d for d in compiled.descriptors if d.opcode != OPCODES["END"]]
    assert [cyc for cyc, _ in run.descriptor_counters][:len(descs)] == predicted["descriptors"]
    assert run.counters["npu_cycles"] == predicted["total"]
    return {d.op for d in descs}


def test_packed_network_on_the_die_is_bit_exact():
    """Every candidate packed on tiny (its own Verilator build, shared with the other tiny tests; the planner's
    choice on a small activation SRAM is the same descriptors, tested against LiteRT in test_compiler_packing)."""
    config = preset("tiny")
    graph = packed_net()
    assert compile_graph(graph, config).notes == []                     # tiny fits it unpacked
    small = config.with_(name="tiny-small", sram_banks=config.weight_banks + 2, sram_bank_bytes=1024)
    assert "pixel-packed" in compile_graph(graph, small).notes[0]        # a 2 KiB activation SRAM needs packing
    rng = np.random.default_rng(7)
    xs = [rng.integers(-128, 128, (6, 16, 3)).astype(np.int8) for _ in range(2)]
    everything = compile_graph(graph, config, pack=comp._pack_candidates(comp.expand_transpose_convs(graph),
                                                                         config.array_cols))
    assert "10 narrow tensors stored pixel-packed" in everything.notes[0]
    ops = _run(config, everything, graph, xs)
    assert {"GATHER", "CONV", "ADD", "PRELU", "LUT", "MUL", "RESIZE", "MEAN", "MAXPOOL"} <= ops
