"""MUL, SUB, broadcast ADD, MEAN and per-channel PRELU on the die: the compiled program (golden executor) equals
LiteRT's BUILTIN_REF on the exported graph; the descriptors hold what the vector engine must get right."""

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant.compiler import compile_graph
from stackcam.quant.export import export_tflite
from stackcam.quant.litert import run_reference
from stackcam.quant.romimage import build_rom
from tests.test_program import CONFIGS, net_arith


@pytest.mark.parametrize("config", ["tiny", "fpga", "narrow"])
def test_arith_net_golden_equals_litert(config):
    graph = net_arith()
    model = compile_graph(graph, CONFIGS[config])
    rom = build_rom(model)
    exported = export_tflite(graph)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.integers(-128, 128, graph.tensors[graph.inputs[0]].shape).astype(np.int8)
        want = run_reference(exported, [x])
        got = golden.execute(rom, CONFIGS[config], x[0])
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def test_arith_net_descriptors():
    descs = compile_graph(net_arith(), CONFIGS["tiny"]).descriptors
    ops = {d.op for d in descs}
    assert {"MUL", "MEAN", "PRELU", "ADD", "LUT"} <= ops
    muls = [d for d in descs if d.op == "MUL"]
    assert {(d.in2_h, d.in2_w, d.in2_c) == (d.out_h, d.out_w, d.out_c) for d in muls} == {True, False}
    assert any((d.in2_h, d.in2_w, d.in2_c) == (1, 1, 1) for d in muls)
    assert any((d.in2_h, d.in2_w, d.in2_c) == (1, 1, d.out_c) and d.out_c > 1 for d in muls)
    subs = [d for d in descs if d.op == "ADD" and d.flags & fmt.NEG2]
    assert len(subs) == 2 and any(d.in2_h == 1 for d in subs)
    assert any(d.op == "ADD" and not d.flags & fmt.NEG2 and d.in2_c == 1 for d in descs)
    assert len([d for d in descs if d.op == "MEAN"]) == 2
    assert len([d for d in descs if d.op == "PRELU"]) == 1 and len([d for d in descs if d.op == "LUT"]) == 2
