"""Convolutions wider than the conv engine's parameter buffer (`max_channels` output channels, e.g. face_landmark's
1404-landmark head on imx500's 1024): the compiler splits them into descriptors over output-channel slices, each
into a temporary GATHERed into place; the golden executor refuses an unsplit one as the RTL does (NPU error 2).

LiteRT BUILTIN_REF on the exported model is the reference; the die run checks RTL == golden == LiteRT and the
cycles of every descriptor against the analytic model."""

import numpy as np
import pytest

from stackcam.quant import golden
from stackcam.quant.compiler import compile_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.litert import run_reference
from stackcam.quant.program import OPCODES, ProgramError
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import preset
from tests.test_program import Net


def wide_net(cout, units, wide_output=True):
    """A 3x3 CONV to `cout` channels on a 3x5 input (a multi-pixel output: each slice lands at its channel offset
    in every pixel), a 1x1 CONV reading all of them back, and a FULLY_CONNECTED to `units` (FCSCALE slices); the
    wide tensor is a graph output too unless `wide_output` is False."""
    n = Net((1, 3, 5, 3), seed=5)
    a = n.conv(n.input, cout, k=3, out_q=(0.05, -2), act="RELU")
    b = n.conv(a, 4, k=1, out_q=(0.2, 1))
    c = n.fc(b, units, out_q=(0.3, 3), per_channel=True)
    return n.graph(b, c, a) if wide_output else n.graph(b, c)


def _descriptor_ops(model, layer):
    return [model.descriptors[i].op for i in model.layers[layer].descriptors]


def _equal_litert(graph, config, model, count=2):
    rom = build_rom(model)
    exported = export_tflite(graph)
    rng = np.random.default_rng(3)
    for _ in range(count):
        x = rng.integers(-128, 128, graph.tensors[graph.inputs[0]].shape).astype(np.int8)
        want = run_reference(exported, [x])
        got = golden.execute(rom, config, x[0])
        for g, w in zip(got, want):
            assert int(np.count_nonzero(np.asarray(g).reshape(w.shape) != w)) == 0
    return rom


def test_wide_conv_and_fc_split_equal_litert():
    config = preset("tiny").with_(name="tiny-narrow-params", max_channels=8)
    graph = wide_net(21, 19)
    model = compile_graph(graph, config)
    # 21 channels in slices of 8: three CONVs into temporaries, three GATHERs into place; the FC's 19 likewise.
    assert _descriptor_ops(model, 0) == ["CONV"] * 3 + ["GATHER"] * 3
    assert _descriptor_ops(model, 2) == ["CONV"] * 3 + ["GATHER"] * 3
    assert _descriptor_ops(model, 1) == ["CONV"]
    assert all(d.out_c <= 8 for d in model.descriptors if d.op == "CONV")
    assert sum(model.descriptors[i].macs for i in model.layers[0].descriptors) == model.layers[0].macs
    _equal_litert(graph, config, model)
    # Nothing changes where the layer fits the buffer.
    plain = compile_graph(graph, preset("tiny"))
    assert [len(layer.descriptors) for layer in plain.layers] == [1, 1, 1]


def test_golden_refuses_a_conv_wider_than_the_parameter_buffer():
    graph = wide_net(21, 5)
    rom = build_rom(compile_graph(graph, preset("tiny")))         # one CONV of 21 channels
    narrow = preset("tiny").with_(name="tiny-narrow-params", max_channels=8)
    x = np.zeros((3, 5, 3), np.int8)
    with pytest.raises(ProgramError, match="21 output channels; the conv engine's parameter buffer holds 8"):
        golden.execute(rom, narrow, x)


def test_wide_depthwise_split_equals_litert():
    """A 12-channel DWCONV with an 8-channel buffer: each slice's input GATHERed out, the DWCONV, the output
    GATHERed back (stride 2, padding, a non-zero input zero point)."""
    config = preset("tiny").with_(name="tiny-narrow-params", max_channels=8)
    n = Net((1, 7, 6, 12), seed=2, zp=9)
    graph = n.graph(n.conv(n.input, 0, k=3, stride=2, depthwise=True, out_q=(0.04, -6)))
    model = compile_graph(graph, config)
    assert _descriptor_ops(model, 0) == ["GATHER", "GATHER", "DWCONV", "DWCONV", "GATHER", "GATHER"]
    _equal_litert(graph, config, model, count=3)


@pytest.mark.xdist_group("verilator")
def test_wide_conv_on_the_die_is_bit_exact():
    """tiny's 1024-channel buffer (its shared Verilator build): a 1030-channel CONV in two slices through the die
    with CSI-2 back-pressure."""
    from stackcam.sim.cyclemodel import predict_cycles
    from stackcam.sim.dierun import run_die

    config = preset("tiny")
    graph = wide_net(1030, 6, wide_output=False)      # CSI-2 lines hold 4,096 bytes
    model = compile_graph(graph, config)
    assert _descriptor_ops(model, 0) == ["CONV", "CONV", "GATHER", "GATHER"]
    rom = _equal_litert(graph, config, model, count=1)
    exported = export_tflite(graph)
    rng = np.random.default_rng(11)
    xs = [rng.integers(-128, 128, (3, 5, 3)).astype(np.int8)]
    run = run_die(config, rom, tensors=xs, stall=0.3, progress=False)
    assert run.loads[0]["model_ok"] == 1 and len(run.frames) == 1
    frame = run.frames[0]
    assert frame.error is None
    ref = run_reference(exported, [xs[0][None]])
    for got, r in zip(frame.graph_outputs, ref):
        np.testing.assert_array_equal(np.asarray(got).reshape(r.shape), r)
    predicted = predict_cycles(model, config)
    descs = [d for d in model.descriptors if d.opcode != OPCODES["END"]]
    assert [cyc for cyc, _ in run.descriptor_counters][:len(descs)] == predicted["descriptors"]
