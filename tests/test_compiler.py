"""quant.compiler: die/host partition, SRAM plan soundness, fit errors with numbers, refusals by name, and
MobileNet V1 1.0 224 on the imx500 preset (568.7 M MACs, 4.2 M weights, fits, bit-exact)."""

import numpy as np
import pytest

from stackcam.quant import timing
from stackcam.quant.compiler import HOST_OPS, bank_use, compile_graph
from stackcam.quant.graph import ModelError, Op
from stackcam.quant.program import (
    DUAL2,
    OPCODES,
    PAIR,
    POOL2,
    RESADD,
    ZPAD2,
    Descriptor,
    add_input_banks,
    banks_disjoint,
    resadd_input_banks,
)
from stackcam.quant.report import layer_table
from stackcam.quant.romimage import build_rom
from stackcam.rtl.params import PRESETS, DieConfig
from tests.test_program import CONFIGS, NETS, Net, check_equal, net_arith


def live_overlap(a, b):
    return a["start"] <= b["end"] and b["start"] <= a["end"]


@pytest.mark.parametrize("net", list(NETS))
def test_sram_plan_is_sound(net):
    graph = NETS[net]()
    model = compile_graph(graph, CONFIGS["tiny"])
    buffers = sorted({(t["addr"], t["words"], t["start"], t["end"]) for t in model.tensors.values()})
    for i, a in enumerate(buffers):
        a = dict(zip(("addr", "words", "start", "end"), a))
        assert a["addr"] + a["words"] <= model.act_words
        for b in buffers[i + 1:]:
            b = dict(zip(("addr", "words", "start", "end"), b))
            if live_overlap(a, b):
                assert a["addr"] + a["words"] <= b["addr"] or b["addr"] + b["words"] <= a["addr"], (a, b)
    # Every layer's inputs and output are live at its step; die outputs live to the end.
    for layer in model.layers:
        for d in (model.descriptors[i] for i in layer.descriptors):
            assert d.layer == layer.index
    for t in model.io["die_outputs"]:
        assert model.tensors[t["name"]]["end"] == len(model.layers)
    # Weight space: program, then blocks in region order, each block inside the image.
    words = model.weight_words
    for d in model.descriptors:
        assert d.weight_addr + d.weight_words <= words and d.param_addr + d.param_words <= words


def test_weight_regions_in_order():
    model = compile_graph(NETS["channel_tiles"](), CONFIGS["tiny"])
    prog = model.program.shape[0]
    params = [d.param_addr for d in model.descriptors if d.param_words]
    dw = [d.weight_addr for d in model.descriptors if d.op == "DWCONV"]
    conv = [d.weight_addr for d in model.descriptors if d.op == "CONV"]
    assert params[0] == prog and params == sorted(params)
    assert dw[0] == prog + model.params.shape[0]
    assert conv[0] == prog + model.params.shape[0] + model.dw_weights.shape[0]
    assert model.descriptors[-1].opcode == OPCODES["END"]


def test_host_tail_partition():
    model = compile_graph(NETS["lut_and_host_tail"](), CONFIGS["fpga"])
    host = [op["kind"] for op in model.io["host"]["ops"]]
    assert host == ["RESHAPE", "RESHAPE", "CONCATENATION", "RESHAPE", "SOFTMAX", "LOGISTIC"]
    assert all(k in HOST_OPS for k in host)
    # The LOGISTIC fed by a conv runs on the die as a LUT, with RELU and QUANTIZE.
    assert [layer.op for layer in model.layers if layer.op == "LUT"] == ["LUT"] * 3
    assert [layer.kind for layer in model.layers if layer.op == "LUT"] == ["RELU", "QUANTIZE", "LOGISTIC"]
    assert len(model.io["die_outputs"]) == 3


def test_bank_use():
    assert bank_use(40000, 16384, 4) == [16384, 16384, 7232, 0]


def test_fit_error_names_bytes_and_banks():
    n = Net((1, 32, 32, 16), seed=1)
    y = n.conv(n.input, 64, k=3, out_q=(0.05, 0))
    y = n.conv(y, 128, k=3, out_q=(0.05, 0))
    # Four banks of 16 KiB, two for weights, on tiny's 4x4 array (the presets themselves grow as models need).
    small = PRESETS["tiny"].with_(name="small", sram_banks=4, sram_bank_bytes=16 * 1024, weight_banks=2)
    with pytest.raises(ModelError) as e:
        compile_graph(n.graph(y), small)
    msg = str(e.value)
    assert "\n" not in msg
    # Weights 64*3*3*16 + 128*3*3*64 = 82,944 B, records (64 + 128) * 16 = 3,072 B, 3 descriptors (END too)
    # 384 B; activations at the second conv: 32*32*64 + 32*32*128 B, both in whole 4-byte words.
    assert "does not fit config 'small': needs 86,400 B of weight SRAM (6 banks of 16,384 B), config has 2 weight " \
           "banks of 16,384 B = 32,768 B" in msg
    assert "activations need 196,608 B at the peak (12 banks of 16,384 B), config has 2 activation banks of " \
           "16,384 B = 32,768 B" in msg


def _net_with(kind, **opts):
    n = Net((1, 6, 6, 4), seed=2)
    y = n.conv(n.input, 4, k=1, out_q=(0.05, 0))
    z = n.op(kind, [y], [n.act((1, 6, 6, 4), 0.05, 0)], **opts)
    return n.graph(n.conv(z, 4, k=1, out_q=(0.05, 0)))


@pytest.mark.parametrize("make,message", [
    (lambda: _net_with("SIN"), "unsupported operator SIN on the die at layer 'sin_1'"),
    (lambda: _net_with("SOFTMAX", beta=1.0), "unsupported operator SOFTMAX mid-network (only at the graph's tail, "
                                            "on the host) at layer 'softmax_1'"),
])
def test_unsupported_operator_named(make, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_graph(make(), CONFIGS["tiny"])


def test_refusals():
    n = Net((1, 6, 6, 4), seed=3)
    y = n.conv(n.input, 4, k=3, out_q=(0.05, 0))
    n.ops[-1].opts["dilation"] = (2, 2)
    with pytest.raises(ModelError, match="CONV_2D 'conv_2d_0': dilation"):
        compile_graph(n.graph(y), CONFIGS["tiny"])

    n = Net((1, 6, 6, 4), seed=3)
    a = n.conv(n.input, 4, k=3, out_q=(0.05, 0))
    b = n.pool(a, "MAX_POOL_2D", (2, 2), 2)
    s = n.op("ADD", [a, b], [n.act((1, 6, 6, 4), 0.1, 0)], activation="NONE")
    with pytest.raises(ModelError, match="broadcasts the second input only as 1x1xC or 1x1x1"):
        compile_graph(n.graph(s), CONFIGS["tiny"])

    n = Net((2, 6, 6, 4), seed=3)
    with pytest.raises(ModelError, match="batch 2"):
        compile_graph(n.graph(n.conv(n.input, 4, out_q=(0.05, 0))), CONFIGS["tiny"])

    n = Net((1, 6, 6, 4), seed=3)
    y = n.conv(n.input, 4, out_q=(0.05, 0))
    g = n.graph(y)
    g.tensors[g.inputs[0]].dtype = "float32"
    with pytest.raises(ModelError, match="is float32"):
        compile_graph(g, CONFIGS["tiny"])

    n = Net((1, 6, 6, 4), seed=3)
    a = n.conv(n.input, 4, out_q=(0.05, 0))
    p = n.pool(a, "MAX_POOL_2D", (2, 2), 2)
    n.tensors[p].quant.zero_point[0] = 3
    with pytest.raises(ModelError, match="quantization differ"):
        compile_graph(n.graph(p), CONFIGS["tiny"])

    n = Net((1, 6, 6, 4), seed=3)
    a = n.conv(n.input, 4, out_q=(0.05, 0))
    w = n.const(np.ones((1, 3, 3, 8), np.int8), "int8", "filter", n.tensors[n.ops[0].inputs[1]].quant)
    d = n.op("DEPTHWISE_CONV_2D", [a, w], [n.act((1, 6, 6, 8), 0.05, 0)], padding="SAME", depth_multiplier=2)
    with pytest.raises(ModelError, match="depth multiplier 2"):
        compile_graph(n.graph(d), CONFIGS["tiny"])


def test_reshape_that_moves_words_is_refused():
    n = Net((1, 4, 4, 6), seed=4)
    a = n.conv(n.input, 6, k=1, out_q=(0.05, 0))
    r = n.reshape(a, (1, 4, 6, 4))
    g = n.graph(n.conv(r, 3, k=1, out_q=(0.05, 0)))
    with pytest.raises(ModelError, match="RESHAPE 'reshape_1'.*changes the channel tiling"):
        compile_graph(g, CONFIGS["tiny"])
    # The same reshape at the graph's tail is the host's.
    n.ops.pop()
    model = check_equal(n.graph(r), CONFIGS["tiny"])
    assert [op["kind"] for op in model.io["host"]["ops"]] == ["RESHAPE"]


def test_deterministic():
    graph = NETS["pad_concat"]()
    assert build_rom(compile_graph(graph, CONFIGS["fpga"])) == build_rom(compile_graph(graph, CONFIGS["fpga"]))


def test_empty_host_graph_output_is_an_input_of_the_tail():
    n = Net((1, 4, 4, 3), seed=5)
    a = n.conv(n.input, 6, k=1, out_q=(0.05, 0))
    r = n.reshape(a, (1, 96))
    g = n.graph(a, r)                       # the die output is a graph output and feeds the host
    model = check_equal(g, CONFIGS["tiny"])
    assert [t["name"] for t in model.io["die_outputs"]] == [a]
    assert isinstance(n.ops[0], Op)


@pytest.fixture(scope="module")
def mobilenet_224():
    from stackcam.quant.calib import calibration_set
    from stackcam.quant.lower import lower
    from stackcam.quant.ptq import quantize_graph
    from stackcam.quant.zoo import mobilenet_v1
    g = mobilenet_v1(1.0, 224, 1000, seed=0)
    return lower(quantize_graph(g, calibration_set(g.tensor(g.inputs[0]).shape, names=("astronaut", "coffee"))))


def test_mobilenet_v1_224_fits_imx500_and_is_exact(mobilenet_224):
    config = PRESETS["imx500"]
    model = check_equal(mobilenet_224, config, count=1)
    assert model.macs == 568_740_352
    assert model.weight_count == 4_209_088
    assert model.weight_bytes <= config.weight_banks * config.sram_bank_bytes
    assert model.act_bytes <= config.act_banks * config.sram_bank_bytes
    assert model.io["input"]["layout"] == "packed" and model.io["input"]["ppw"] == 21
    kinds = [layer.op for layer in model.layers]
    assert kinds.count("CONV") == 15 and kinds.count("DWCONV") == 13 and kinds.count("AVGPOOL") == 1
    with pytest.raises(ModelError, match="does not fit config 'fpga'"):
        compile_graph(mobilenet_224, PRESETS["fpga"])


def test_blazeface_on_imx500_is_exact():
    import stackcam.quant.zoo.blazeface as bf
    from stackcam.quant.lower import lower
    try:
        graph = lower(bf.blazeface_int8())
    except bf.FetchError as exc:
        if bf.pypi_reachable():
            raise
        pytest.skip(f"PyPI is unreachable, so the mediapipe wheel cannot be fetched: {exc}")
    model = check_equal(graph, PRESETS["imx500"], count=1)
    assert model.io["input"]["layout"] == "packed"
    # The two heads are reshaped and concatenated on the host; the die sends the four conv outputs.
    assert [op["kind"] for op in model.io["host"]["ops"]].count("CONCATENATION") == 2
    assert len(model.io["die_outputs"]) == 4
    # No COPY: every channel PAD is the layout (inside a channel tile) or fused into its ADD (ZPAD2: 64 -> 72).
    assert {layer.op for layer in model.layers} == {"CONV", "DWCONV", "ADD", "MAXPOOL"}
    # Two activation read ports: every ADD runs in the CONV before it (RESADD; the ZPAD2 one keeps the flag), the
    # CONV's input and the residual in different banks (the golden executor above checked the banks of each).
    assert "ADD" not in {d.op for d in model.descriptors}
    fused = [d for d in model.descriptors if d.op == "CONV" and d.flags & RESADD]
    assert len(fused) == 16
    assert sum(bool(d.flags & ZPAD2) for d in fused) == 1
    # Each stride-2 block's MAX_POOL runs in the DWCONV that reads the same input (POOL2).
    assert "MAXPOOL" not in {d.op for d in model.descriptors}
    assert sum(d.op == "DWCONV" and bool(d.flags & POOL2) for d in model.descriptors) == 3


def test_add_inputs_kept_in_different_banks():
    """On a die with two activation read ports the allocator places an ADD's two inputs in disjoint banks (the
    plain allocation puts these side by side in bank 0) and the compiler marks it DUAL2, one cycle per word; the
    program stays exact. With one read port nothing changes: the plain allocation, no DUAL2."""
    n = Net((1, 6, 6, 3), seed=31)
    a = n.conv(n.input, 6, k=3, out_q=(0.05, 3))
    b = n.conv(n.input, 6, k=1, out_q=(0.11, -20))
    s = n.add(a, b, out_q=(0.09, -4), act="RELU")
    t = n.add(s, n.conv(s, 6, k=1, out_q=(0.07, 2)), out_q=(0.1, 1))
    graph = n.graph(t, n.conv(b, 2, k=1, out_q=(0.1, 3)))     # b read twice: no ADD runs in a CONV (RESADD)
    one = DieConfig(name="banks1", array_rows=4, array_cols=4, sram_banks=8, sram_bank_bytes=1024, weight_banks=4)
    two = one.with_(name="banks2", act_read_ports=2)
    plain = check_equal(graph, one)
    dual = check_equal(graph, two)
    adds = [[d for d in m.descriptors if d.op == "ADD"] for m in (plain, dual)]
    assert len(adds[0]) == len(adds[1]) == 2
    assert not any(d.flags & DUAL2 for d in adds[0])
    assert not banks_disjoint(add_input_banks(adds[0][0], two.act_bank_words))
    for d in adds[1]:
        assert d.flags & DUAL2 and banks_disjoint(add_input_banks(d, two.act_bank_words))
    words = adds[1][0].out_h * adds[1][0].out_w * adds[1][0].out_ct
    assert [la.cycles for la in plain.layers if la.op == "ADD"][0] - \
        [la.cycles for la in dual.layers if la.op == "ADD"][0] == words
    # `stackcam compile`'s per-layer table says so in its die column.
    for model, die in ((plain, "ADD"), (dual, "ADD+DUAL2")):
        rows = [line.split() for line in layer_table(model)[1:]]
        assert [r[3] for r in rows if r[2] == "ADD"] == [die, die]


def test_residual_add_runs_in_the_conv():
    """On a die with two read ports each ADD of a CONV's output (read by nothing else) and a residual already in
    memory runs in that CONV's back end (RESADD): the ADD's descriptor is gone, its layer costs nothing, the CONV
    costs `resadd_latency` more than alone, its input and residual lie in disjoint banks, and the program equals
    the graph executor. Not fused: a CONV reading the residual itself; everything on a die with one read port
    (the same program as before, ADDs included). The compile table marks both layers."""
    from tests.test_npu_conv import net_residual
    graph = net_residual()
    one = DieConfig(name="banks1", array_rows=8, array_cols=16, sram_banks=4, sram_bank_bytes=16 * 1024,
                    weight_banks=2)
    two = one.with_(name="banks2", act_read_ports=2)
    plain, fused = check_equal(graph, one), check_equal(graph, two)
    assert [d.op for d in plain.descriptors].count("ADD") == 4 and not any(d.flags & RESADD for d in plain.descriptors)
    convs = [d for d in fused.descriptors if d.flags & RESADD]
    assert [d.op for d in fused.descriptors].count("ADD") == 1 and len(convs) == 3
    for d in convs:
        assert d.op == "CONV" and banks_disjoint(resadd_input_banks(d, two.act_bank_words))
        alone = Descriptor(**{**vars(d), "flags": d.flags & ~RESADD})
        assert timing.descriptor_cycles(two, d) == timing.descriptor_cycles(two, alone) + timing.resadd_latency(two)
    adds = [la for la in fused.layers if la.op == "ADD" and la.fused >= 0]
    assert len(adds) == 3 and all(la.cycles == 0 and la.descriptors == [] for la in adds)
    assert {fused.layers[la.fused].op for la in adds} == {"CONV"}
    die = {r[0]: r[3] for r in (line.split() for line in layer_table(fused)[1:])}
    for la in adds:
        assert die[str(la.index)] == f"ADD@{la.fused}" and "+RESADD" in die[str(la.fused)]
    assert sum(la.cycles for la in fused.layers) < sum(la.cycles for la in plain.layers)


def test_residual_add_zpad():
    """A residual that is a channel PAD adding a word (the ADD's ZPAD2) fuses too, keeping ZPAD2: the program equals
    the graph executor, no ADD is left, and each fused CONV reads only the residual's own tiles."""
    from tests.test_npu_conv import net_residual_pad
    two = DieConfig(name="banks2", array_rows=8, array_cols=16, sram_banks=4, sram_bank_bytes=16 * 1024,
                    weight_banks=2, act_read_ports=2)
    model = check_equal(net_residual_pad(), two)
    fused = [d for d in model.descriptors if d.flags & RESADD]
    assert "ADD" not in [d.op for d in model.descriptors] and len(fused) == 2
    for d in fused:
        assert d.flags & ZPAD2 and (d.in2_ct, d.out_ct) == (1, 2)
        assert timing.resadd_read_tiles(two, d) == [0] * (1 if d.flags & PAIR else 2)


def stride2_block(shape, seed, zp):
    """BlazeFace's stride-2 block: a 1x1 CONV x, then a stride-2 depthwise and a pointwise CONV of x added to the
    2x2 stride-2 MAX_POOL of x (the residual), the ADD with a RELU."""
    n = Net(shape, seed=seed, zp=zp)
    c = shape[3]
    x = n.conv(n.input, c, k=1, out_q=(0.05, -1))
    d = n.conv(x, 0, k=3, stride=2, depthwise=True, out_q=(0.06, 4))
    y = n.conv(d, c, k=1, out_q=(0.04, -7))
    m = n.pool(x, "MAX_POOL_2D", (2, 2), 2)
    return n.graph(n.add(y, m, out_q=(0.08, 3), act="RELU"))


def test_max_pool_runs_in_the_depthwise():
    """BlazeFace's stride-2 block on a die with the depthwise line walk and two read ports: the MAX_POOL of the
    block's input (the residual) runs in the stride-2 DWCONV that reads that input (POOL2: no MAXPOOL descriptor,
    its layer ``MAXPOOL@k``), so the residual is written before the pointwise CONV, which then runs the ADD in its
    own slot (RESADD, not late); the program equals the graph executor, the DWCONV's cycles are its own."""
    graph = stride2_block((1, 12, 10, 20), seed=33, zp=-2)
    die = DieConfig(name="line2p", array_rows=8, array_cols=16, sram_banks=6, sram_bank_bytes=16 * 1024,
                    weight_banks=2, act_read_ports=2)
    assert timing.dw_line_capable(die)
    model = check_equal(graph, die)
    ops = [dd.op + ("+POOL2" if dd.op == "DWCONV" and dd.flags & POOL2 else "")
           + ("+RESADD" if dd.op == "CONV" and dd.flags & RESADD else "") for dd in model.descriptors]
    assert ops == ["CONV", "DWCONV+POOL2", "CONV+RESADD", "END"]
    assert [la.fused for la in model.layers] == [-1, -1, -1, 1, 2]
    dw = model.descriptors[1]
    plain = Descriptor(**{**vars(dw), "flags": 0})
    assert timing.descriptor_cycles(die, dw) == timing.descriptor_cycles(die, plain)
    assert "MAXPOOL@1" in "\n".join(layer_table(model))
    # Without the line walk (a 4-row array) the pool stays a MAXPOOL and the CONV runs late.
    small = die.with_(array_rows=4, array_cols=8)
    assert [dd.op for dd in check_equal(graph, small).descriptors] == ["CONV", "DWCONV", "MAXPOOL", "CONV", "END"]


def test_depthwise_layer_table_names_the_split_schedule():
    """The layer table's die column says how a depthwise layer runs: on two line sets (8 rows) a 3x3 stride-1 in
    the line walk's split schedule (``DWCONV+LINE+SPLIT``), a stride-2 one rolling (``DWCONV+LINE``); on three
    (16 rows) both roll."""
    n = Net((1, 8, 10, 12), seed=35, zp=3)
    a = n.conv(n.input, 0, k=3, stride=1, depthwise=True, out_q=(0.05, 1))
    graph = n.graph(a, n.conv(n.input, 0, k=3, stride=2, depthwise=True, out_q=(0.05, -2)))
    for rows, want in ((8, ["DWCONV+LINE+SPLIT", "DWCONV+LINE"]), (16, ["DWCONV+LINE", "DWCONV+LINE"])):
        die = DieConfig(name=f"line{rows}", array_rows=rows, array_cols=16, sram_banks=4, sram_bank_bytes=16 * 1024,
                        weight_banks=2)
        model = check_equal(graph, die)
        assert [line.split()[3] for line in layer_table(model)[1:]] == want


def test_residual_add_late():
    """A residual written after the CONV (BlazeFace's stride-2 block: depthwise, pointwise, then the MAX_POOL of
    the block's input as the residual): the fused CONV runs where the ADD was, after the pool, its input kept
    alive until then; the program equals the graph executor."""
    graph = stride2_block((1, 8, 8, 6), seed=32, zp=2)
    two = DieConfig(name="banks2", array_rows=4, array_cols=8, sram_banks=4, sram_bank_bytes=16 * 1024,
                    weight_banks=2, act_read_ports=2)
    model = check_equal(graph, two)
    ops = [dd.op + ("+RESADD" if dd.flags & RESADD else "") for dd in model.descriptors]
    assert ops == ["CONV", "DWCONV", "MAXPOOL", "CONV+RESADD", "END"]
    fused = model.descriptors[3]
    assert fused.layer == 2 and [la.fused for la in model.layers] == [-1, -1, -1, -1, 2]
    assert banks_disjoint(resadd_input_banks(fused, two.act_bank_words))


def test_mul_inputs_kept_in_different_banks():
    """MUL (and SUB, broadcast ADD) of two tensors take DUAL2 as ADD does; where keeping a pair apart would run
    past the SRAM (here three tensors pairwise apart in two banks) that one pair stays in one bank, the others
    still apart. The program stays exact (the golden executor checks each DUAL2's banks)."""
    two = DieConfig(name="banks2", array_rows=4, array_cols=4, sram_banks=4, sram_bank_bytes=16 * 1024,
                    weight_banks=2, act_read_ports=2)
    model = check_equal(net_arith(), two)
    ops = [d for d in model.descriptors if d.op in ("ADD", "MUL")]
    assert [d.op for d in ops] == ["MUL", "MUL", "MUL", "ADD", "ADD", "MUL", "ADD"]
    assert [bool(d.flags & DUAL2) for d in ops] == [False] + [True] * 6
    for d in ops[1:]:
        assert banks_disjoint(add_input_banks(d, two.act_bank_words))
