"""RESIZE in the vector engine (amaranth.sim): every RESIZE descriptor of compiled graphs run from the golden
executor's SRAM, the whole activation SRAM compared word for word, cycles equal to quant.timing; a bad table
entry is refused."""

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant.compiler import compile_graph
from stackcam.quant.romimage import build_rom, load_rom
from stackcam.rtl.npu.vector import NPUVectorEngine
from stackcam.sim.npu_harness import run_engine
from tests.test_npu_vector import CONFIGS, check_graph
from tests.test_program import Net


def net_resize(channels):
    n = Net((1, 4, 5, 3), seed=41)
    a = n.conv(n.input, channels, k=3, out_q=(0.05, 3))
    outs = [n.resize(a, "RESIZE_BILINEAR", (7, 9)),
            n.resize(a, "RESIZE_BILINEAR", (6, 8), half_pixel_centers=True),
            n.resize(a, "RESIZE_BILINEAR", (3, 3), align_corners=True),
            n.resize(a, "RESIZE_NEAREST_NEIGHBOR", (8, 3), half_pixel_centers=True),
            n.resize(a, "RESIZE_NEAREST_NEIGHBOR", (2, 7), align_corners=True)]
    return n.graph(*(n.conv(r, 3, k=1, out_q=(0.1, 0)) for r in outs))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("channels", [3, 6])
def test_resize_descriptors_match_golden_executor(config, channels):
    ran = check_graph(net_resize(channels), CONFIGS[config])
    assert len(ran["RESIZE"]) == 5


def test_resize_bad_table_entry_is_refused():
    config = CONFIGS["4x4"]
    graph = net_resize(3)
    model = compile_graph(graph, config)
    rom = build_rom(model)
    wsram = load_rom(rom, config).weight_sram()
    steps = []
    x = np.random.default_rng(0).integers(-128, 128, graph.tensors[graph.inputs[0]].shape[1:]).astype(np.int8)
    golden.execute_trace(rom, config, x, lambda i, d, sram: steps.append((d, sram.copy())))
    d = steps[1][0]
    assert d.op == "RESIZE"
    bad = wsram.copy()
    lo, hi, frac = fmt.unpack_resize_table(bad[d.weight_addr:d.weight_addr + d.weight_words], d.out_w)
    hi[2] = d.in_w                                              # column entry 2 points past the input
    bad[d.weight_addr:d.weight_addr + d.weight_words] = fmt.pack_resize_table(lo, hi, frac, config.weight_word_bytes)
    with pytest.raises(fmt.ProgramError, match="column table entry 2"):
        golden.step(1, d, steps[0][1].copy(), bad, config.array_rows, config.array_cols)
    _, _, _, error = run_engine(NPUVectorEngine(config), config, d, steps[0][1], bad)
    assert error


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("channels", [24, 12])
def test_gather_descriptors_match_golden_executor(config, channels):
    """DEPTH_TO_SPACE (channel blocks off the lane grid, destination steps), SPACE_TO_DEPTH (source steps),
    strided and channel slices: every GATHER word for word, cycles equal to quant.timing."""
    from tests.test_ops_move_gather import gather_net

    ran = check_graph(gather_net(channels), CONFIGS[config])
    assert len(ran["GATHER"]) == 4 + 4 + 1 + 1
    assert any(d.src_c % CONFIGS[config].array_cols > d.copy_c % CONFIGS[config].array_cols for d, _ in ran["GATHER"])


@pytest.mark.parametrize("config", list(CONFIGS))
def test_transpose_conv_zero_insertion_matches_golden_executor(config):
    """TRANSPOSE_CONV's zero-inserting GATHER (destination steps, FILL with the zero point, a box cut short by
    the output) word for word."""
    n = Net((1, 3, 4, 3), seed=71)
    a = n.conv(n.input, 6, k=1, out_q=(0.05, 3))
    t1 = n.tconv(a, 5, k=3, stride=2, pads=(1, 1))
    t2 = n.tconv(a, 2, k=(2, 3), stride=3, pads=(0, 2), out_hw=(7, 9))
    ran = check_graph(n.graph(t1, t2), CONFIGS[config])
    assert len(ran["GATHER"]) == 2 and all(d.flags & fmt.FILL and d.dst_sy > 1 for d, _ in ran["GATHER"])
