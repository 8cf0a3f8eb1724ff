"""rtl.npu.conv: NPUConvEngine runs the CONV (direct and PACKED im2col) and DWCONV descriptors of compiled graphs
in amaranth.sim, and leaves the whole activation SRAM exactly as the golden program executor does."""

import dataclasses
import sys

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant.compiler import compile_graph
from stackcam.quant.romimage import build_rom, load_rom
from stackcam.quant.timing import conv_cycles, descriptor_activity, resadd_latency, setup_cycles
from stackcam.rtl import verilog
from stackcam.rtl.npu.conv import NPUConvEngine
from stackcam.rtl.params import PRESETS, DieConfig
from stackcam.sim.npu_harness import run_engine
from tests.test_program import Net

sys.set_int_max_str_digits(0)


def _config(rows, cols, name=None):
    return DieConfig(name=name or f"a{rows}x{cols}", array_rows=rows, array_cols=cols, sram_banks=4,
                     sram_bank_bytes=4096 if rows * cols <= 64 else 16 * 1024, weight_banks=2, max_channels=64)


# Square, narrow (8-byte weight words: a parameter record spans two), wide, fpga-like, and 64 lanes on two rows
# (imx500's pixel packing, 21 RGB pixels per word, and 32 lane groups per output word); the fpga preset's im2col
# gatherer of one pixel per pass, and one of two; the fpga preset's deep arithmetic pipelines (MAC array 3 cycles,
# requantizers 9).
CONFIGS = {"4x4": _config(4, 4), "2x4": _config(2, 4), "4x8": _config(4, 8), "8x16": _config(8, 16),
           "2x64": _config(2, 64), "8x16/G1": _config(8, 16).with_(im2col_pixels=1),
           "4x8/G2": _config(4, 8).with_(im2col_pixels=2),
           "4x4/deep": _config(4, 4).with_(deep_pipeline=True), "4x8/deep": _config(4, 8).with_(deep_pipeline=True),
           # Depthwise line walk (3 rows per accumulator set fit): one lane group, and two.
           "16x16": _config(16, 16), "16x32": _config(16, 32).with_(sram_banks=6, weight_banks=2),
           # Two activation read ports (RESADD's residual on the second), default and deep pipelines.
           "8x16/2p": _config(8, 16).with_(act_read_ports=2),
           "8x16/2p/deep": _config(8, 16).with_(act_read_ports=2, deep_pipeline=True)}


def _initial_sram(rom, config, x):
    """The activation SRAM as quant.golden.execute_trace starts it (seeded noise, then the input)."""
    cols = config.array_cols
    sram = np.random.default_rng(0x5CA).integers(-128, 128, (config.act_banks * config.sram_bank_bytes // cols,
                                                             cols)).astype(np.int8)
    spec = rom.io["input"]
    if spec.get("ppw"):
        fmt.write_packed(sram, spec["addr"], x, spec["zero_point"][0])
    else:
        fmt.write_tensor(sram, spec["addr"], x, spec["zero_point"][0])
    return sram


def trace(graph, config, seed=0):
    """[(index, descriptor, SRAM before, SRAM after)] of every CONV/DWCONV descriptor, and the weight SRAM."""
    rom_bytes = build_rom(compile_graph(graph, config))
    rom = load_rom(rom_bytes, config)
    shape = graph.tensors[graph.inputs[0]].shape
    x = np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)[0]
    before = _initial_sram(rom, config, x)
    steps = []

    def on_descriptor(i, d, sram):
        nonlocal before
        if d.op in ("CONV", "DWCONV"):
            steps.append((i, d, before.copy(), sram.copy()))
        before = sram.copy()

    golden.execute_trace(rom_bytes, config, x, on_descriptor=on_descriptor)
    return steps, rom.weight_sram()


def ideal_cycles(d, config):
    if d.op == "DWCONV":
        return d.kernel_h * d.kernel_w * d.out_h * d.out_w * d.out_ct
    if d.flags & fmt.PAIR:       # PAIR: per tap 2*F + 1 issues per pair of oc tiles, F + 1 for an odd last one
        f = d.in_ct - 1
        return d.out_h * d.out_w * d.kernel_h * d.kernel_w * (d.oc_tiles // 2 * (2 * f + 1) + d.oc_tiles % 2 * (f + 1))
    return d.out_h * d.out_w * d.oc_tiles * d.tile_words


def check_graph(graph, config, seed=0, only=None):
    steps, wsram = trace(graph, config, seed)
    assert steps
    report = []
    for i, d, before, after in steps:
        if only is not None and d.op != only:
            continue
        engine = NPUConvEngine(config)
        stats = {}
        got, cycles, macs, error = run_engine(engine, config, d, before, wsram, stats=stats)
        assert not error and stats["bank_conflicts"] == 0
        bad = np.argwhere(np.any(got != after, axis=1)).reshape(-1)
        assert bad.size == 0, (f"descriptor {i} ({d.op}{' PACKED' if d.flags & fmt.PACKED else ''}): "
                               f"{bad.size} words differ, first {bad[:8].tolist()}")
        ideal = ideal_cycles(d, config)
        kind = d.op + (" PACKED" if d.flags & fmt.PACKED else "")
        report.append(f"{config.name} #{i} {kind} {d.kernel_h}x{d.kernel_w}/s{d.stride_h} "
                      f"{d.in_h}x{d.in_w}x{d.in_c}->{d.out_h}x{d.out_w}x{d.out_c}: {cycles} cycles, "
                      f"ideal {ideal}, mac_active {macs}")
        if d.op == "CONV":
            assert macs == ideal
        activity = descriptor_activity(config, d)
        assert (macs, stats["act_reads"], stats["weight_reads"], stats["act_write_bytes"]) == \
            (activity["mac_cycles"], activity["act_reads"], activity["weight_reads"], activity["act_write_bytes"])
        assert cycles == engine.cycles(d)
    print("\n" + "\n".join(report))
    return steps


# --- graphs ---------------------------------------------------------------------------------------------------

def net_conv3x3():
    n = Net((1, 7, 9, 5), seed=11, zp=-7)
    a = n.conv(n.input, 6, k=3, stride=1, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(a, 7, k=3, stride=2, out_q=(0.05, 3))
    return n.graph(b, n.conv(a, 5, k=3, stride=1, padding="VALID", out_q=(0.04, -2)))


@pytest.mark.parametrize("config", ["4x4", "2x4", "4x4/deep"])
def test_conv3x3(config):
    check_graph(net_conv3x3(), CONFIGS[config])


def net_pointwise():
    n = Net((1, 3, 5, 11), seed=12, zp=5)
    a = n.conv(n.input, 13, k=1, out_q=(0.06, -9))                    # 3 input tiles, out_c 13
    b = n.conv(a, 20, k=1, act="RELU", out_q=(0.03, -100))
    return n.graph(b, n.conv(n.input, 3, k=1, act="RELU6", out_q=(6 / 255, -128)))


def net_depthwise():
    n = Net((1, 9, 7, 10), seed=13, zp=-20)
    # 5x5: more taps than the walk holds (dw_taps = 9), so a tap per cycle; stride 2 keeps it short.
    a = n.conv(n.input, 0, k=5, stride=2, depthwise=True, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(n.input, 0, k=3, stride=2, depthwise=True, out_q=(0.05, 7))
    c = n.conv(n.input, 0, k=3, stride=2, depthwise=True, pads=(0, 1, 1, 0), out_q=(0.04, -9))
    d = n.conv(n.input, 0, k=1, stride=1, depthwise=True, out_q=(0.03, 0))   # shorter than its drain
    e = n.conv(n.input, 0, k=3, stride=1, depthwise=True, act="RELU", out_q=(0.03, -128))
    f = n.conv(n.input, 0, k=(2, 3), stride=1, padding="VALID", depthwise=True, out_q=(0.04, 2))
    return n.graph(a, b, c, d, e, f)


def net_stem(channels=3):
    n = Net((1, 10, 13, channels), seed=14, scale=1 / 128, zp=3)     # SAME s2: pads 0+1 rows, 1+1 columns
    a = n.conv(n.input, 8, k=3, stride=2, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(n.input, 5, k=5, stride=1, out_q=(0.05, 1))
    return n.graph(a, b)


def net_pair(channels):
    """Convolutions whose input's last channel tile is at most half full and whose output has more than `rows`
    channels (PAIR on arrays of cols = 2*rows): even and odd numbers of oc tiles (an odd last tile a pair of
    one), a partial last tile, a 3x3 with padding and stride 2, and a 1-tile conv (no PAIR)."""
    n = Net((1, 5, 7, 3), seed=21, zp=-3)
    x = n.conv(n.input, channels, k=1, out_q=(0.04, 3))         # the network input is pixel-packed (PACKED)
    a = n.conv(x, 16, k=1, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(x, 11, k=1, out_q=(0.05, 5))
    c = n.conv(x, 21, k=3, stride=2, out_q=(0.04, -7))
    d = n.conv(x, 9, k=3, stride=1, act="RELU", out_q=(0.03, -128))
    return n.graph(a, b, c, d, n.conv(x, 3, k=1, out_q=(0.05, 2)))


@pytest.mark.parametrize("config,channels", [("4x8", 4), ("4x8", 3), ("8x16", 8), ("2x4", 1), ("4x8/deep", 2),
                                             ("4x8", 12), ("8x16", 20), ("2x4", 9), ("4x8/deep", 10)])
def test_pair(config, channels):
    """PAIR CONVs equal the golden executor word for word, in `quant.timing`'s cycles: per oc-tile pair and tap
    2*F + 1 issues (F full input tiles: each tile's own, then the last tile's word of both, one per half of the
    lanes) instead of 2*F + 2, an odd last tile F + 1 (its last word first, the absent tile's lanes from zero
    sums); the compiler takes PAIR exactly when that issues less: whenever there are two oc tiles or more."""
    cfg = CONFIGS[config]
    steps = check_graph(net_pair(channels), cfg)
    odd = 0
    for _, d, _, _ in steps:
        f = d.in_ct - 1
        gain = not d.flags & fmt.PACKED and fmt.pair_fits(d.in_c, cfg.array_cols) and d.oc_tiles >= 2
        assert bool(d.flags & fmt.PAIR) == gain
        if gain:
            assert d.tile_words == d.kernel_h * d.kernel_w * (2 * f + 1)
            assert ideal_cycles(d, cfg) < d.out_h * d.out_w * d.oc_tiles * d.kernel_h * d.kernel_w * d.in_ct
            odd += d.oc_tiles % 2 == 1 and f >= 1
    assert sum(bool(d.flags & fmt.PAIR) for _, d, _, _ in steps) >= 2
    # An input of more than one word: odd last tiles with F >= 1, 1x1 and 3x3 (on 8x16 the 21-channel 3x3 s2 only).
    assert odd >= (1 if config == "8x16" else 2) if channels > cfg.array_cols else odd == 0


@pytest.mark.parametrize("config", ["4x4", "8x16"])
def test_pointwise(config):
    check_graph(net_pointwise(), CONFIGS[config])


@pytest.mark.parametrize("config", ["4x4", "2x4", "4x4/deep"])
def test_depthwise(config):
    """4x4: one pass per output row (three accumulator sets cover a 3x3 s1 window); 2x4: two sets, so a 3x3 s1
    runs in strips of two outputs, and two lane groups per output word, whose drain stalls the 1x1."""
    check_graph(net_depthwise(), CONFIGS[config])


def net_depthwise_line():
    n = Net((1, 9, 11, 40), seed=17, zp=-5)
    a = n.conv(n.input, 0, k=3, stride=1, depthwise=True, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(n.input, 0, k=3, stride=2, depthwise=True, out_q=(0.05, 7))
    c = n.conv(n.input, 0, k=3, stride=2, depthwise=True, pads=(0, 1, 1, 0), out_q=(0.04, -9))
    d = n.conv(n.input, 0, k=(2, 3), stride=1, padding="VALID", depthwise=True, out_q=(0.04, 2))
    e = n.conv(n.input, 0, k=(3, 1), stride=1, depthwise=True, out_q=(0.03, -1))
    f = n.conv(n.input, 0, k=3, stride=3, depthwise=True, out_q=(0.05, 3))         # no row reused
    g = n.conv(n.input, 0, k=1, stride=1, depthwise=True, out_q=(0.03, 0))
    h = n.conv(n.input, 0, k=(1, 7), stride=1, depthwise=True, out_q=(0.04, 1))    # strips of the line sets
    i = n.conv(n.input, 0, k=5, stride=2, depthwise=True, out_q=(0.04, -3))         # a tap per cycle
    return n.graph(a, b, c, d, e, f, g, h, i)


@pytest.mark.parametrize("config", ["16x16", "16x32", "8x16"])
def test_depthwise_line(config):
    """The line walk (a column's kernel rows in one issue, earlier rows from the line buffer): every DWCONV equals
    the golden executor word for word and takes `quant.timing`'s cycles, with one and two lane groups per output
    word, three line sets (16 rows: 3x3 s1 rolls) and two (8 rows: 3x3 and 2x3 s1 in the split schedule, 1x7 in
    strips, the columns walked twice keeping the buffer); the 5x5 (more taps than the walk holds) still runs a tap
    per cycle."""
    from stackcam.quant.timing import dw_line_mode
    steps = check_graph(net_depthwise_line(), CONFIGS[config], only="DWCONV")
    line = [dw_line_mode(CONFIGS[config], d) for _, d, _, _ in steps if d.op == "DWCONV"]
    assert line == [True] * 8 + [False]


def net_depthwise_split():
    """3-wide stride-1 depthwise kernels whose outputs per row are even, odd, 1 and 2 (the split schedule's row
    ends at its first or second issue of a column, or at once), with and without padding left and right, kernels
    of one to three rows, one at row stride 2 (two new kernel rows per column), 20 channels (the second word with
    padding lanes)."""
    n = Net((1, 6, 4, 20), seed=23, zp=6)
    a = n.conv(n.input, 0, k=3, stride=1, depthwise=True, act="RELU", out_q=(0.03, -128))       # 4 wide
    b = n.conv(n.input, 0, k=3, stride=1, padding="VALID", depthwise=True, out_q=(0.05, 3))     # 2 wide
    c = n.conv(n.input, 0, k=(1, 3), stride=1, pads=(0, 0, 1, 0), depthwise=True, out_q=(0.04, -9))   # 3
    narrow = n.conv(n.input, 20, k=(1, 2), padding="VALID", out_q=(0.06, -20))                  # 3 wide
    d = n.conv(narrow, 0, k=(2, 3), stride=1, padding="VALID", depthwise=True, out_q=(0.04, 2))  # 1 wide
    e = n.conv(narrow, 0, k=3, stride=1, pads=(2, 0, 0, 1), depthwise=True, out_q=(0.04, 5))     # 2 wide
    f = n.conv(n.input, 0, k=3, stride=1, pads=(1, 1, 1, 1), depthwise=True, out_q=(0.05, -4))   # 4 wide ...
    n.ops[-1].opts["stride"] = (2, 1)                                                # ... at row stride 2
    n.tensors[f] = dataclasses.replace(n.tensors[f], shape=(1, 3, 4, 20))
    return n.graph(a, b, c, d, e, f)


def test_depthwise_line_split():
    """Two line sets (8 rows) and a 3-wide stride-1 kernel: the split schedule (three issues per two columns,
    set 0 on a column's previous one) equals the golden executor word for word, in `quant.timing`'s cycles, with
    every row width's ending (see `net_depthwise_split`)."""
    from stackcam.quant.timing import dw_line_split
    cfg = CONFIGS["8x16"]
    steps = check_graph(net_depthwise_split(), cfg, only="DWCONV")
    widths = [d.out_w for _, d, _, _ in steps if d.op == "DWCONV" and dw_line_split(cfg, d)]
    assert sorted(widths) == [1, 2, 2, 3, 4, 4]
    assert [(d.stride_h, d.stride_w) for _, d, _, _ in steps if d.op == "DWCONV"][-1] == (2, 1)


def net_pool2():
    """Stride-2 3x3 depthwise layers whose input a 2x2 stride-2 max pool could share (POOL2): SAME over an even
    input (padding below and right only), VALID (the last input row and column unused by the pool), and VALID over
    an odd input; 20 channels (two 16-lane words, the second with padding lanes)."""
    n = Net((1, 10, 12, 20), seed=21, zp=-4)
    a = n.conv(n.input, 0, k=3, stride=2, depthwise=True, act="RELU6", out_q=(6 / 255, -128))
    b = n.conv(n.input, 0, k=3, stride=2, padding="VALID", depthwise=True, out_q=(0.05, 3))
    c = n.conv(n.conv(n.input, 20, k=(2, 1), padding="VALID", out_q=(0.06, -20)), 0, k=3, stride=2,
               padding="VALID", depthwise=True, out_q=(0.04, 9))
    return n.graph(a, b, c)


def _pool2(d, cfg, rng):
    """`d` with POOL2: the pool at the top of the activation SRAM, clamps around in_zp."""
    words = fmt.tensor_words(d.out_h, d.out_w, d.in_c, cfg.array_cols)
    d.flags |= fmt.POOL2
    d.in2_addr = cfg.act_banks * cfg.sram_bank_bytes // cfg.array_cols - words
    assert d.in2_addr >= max(d.in_addr + d.in_h * d.in_w * d.in_ct, d.out_addr + d.out_h * d.out_w * d.out_ct)
    d.add_min = int(max(-128, d.in_zp - rng.integers(0, 80)))
    d.add_max = int(min(127, d.in_zp + rng.integers(20, 80)))
    return d


@pytest.mark.parametrize("config", ["8x16", "16x32"])
def test_dwconv_pool2(config):
    """A DWCONV with POOL2 also writes the input's 2x2 stride-2 max pool (clamped) from the rows its line walk
    reads: the SRAM as the golden executor leaves it, word for word, in the cycles of the DWCONV alone, its
    words written once (activity model); two line sets (8 rows) and three, one lane group and two."""
    from stackcam.quant.timing import dw_pool2_fits
    cfg = CONFIGS[config]
    steps, wsram = trace(net_pool2(), cfg)
    rng = np.random.default_rng(5)
    dws = [(i, d, before) for i, d, before, _ in steps if d.op == "DWCONV"]
    assert len(dws) == 3
    for i, d, before in dws:
        plain = fmt.Descriptor(**vars(d))
        d = _pool2(d, cfg, rng)
        assert dw_pool2_fits(cfg, d)
        want = before.copy()
        golden.step(i, d, want, wsram, cfg.array_rows, cfg.array_cols, cfg.max_channels, config=cfg)
        pool = want[d.in2_addr:d.in2_addr + d.out_h * d.out_w * d.out_ct]
        assert len(np.unique(pool)) > 20 and not np.array_equal(pool, before[d.in2_addr:d.in2_addr + len(pool)])
        stats = {}
        got, cycles, macs, error = run_engine(NPUConvEngine(cfg), cfg, d, before, wsram, stats=stats)
        assert not error
        bad = np.argwhere(np.any(got != want, axis=1)).reshape(-1)
        assert bad.size == 0, f"descriptor {i}: {bad.size} words differ, first {bad[:8].tolist()}"
        assert cycles == conv_cycles(cfg, d) == conv_cycles(cfg, plain)
        assert stats["act_write_bytes"] == descriptor_activity(cfg, d)["act_write_bytes"] == \
            2 * descriptor_activity(cfg, plain)["act_write_bytes"]
        assert stats["act_reads"] == descriptor_activity(cfg, plain)["act_reads"]


@pytest.mark.parametrize("patch", ["stride1", "pad_top", "no_line_walk", "clamps", "overlap"])
def test_dwconv_pool2_refused(patch):
    """POOL2 where the line walk cannot give the pool its rows (stride 1, padding above, an engine without the line
    walk), clamps that exclude in_zp, a pool over the input: the golden executor refuses it (the engine, all but
    the overlap, which it does not check, at start: `error` one cycle after `start`, nothing written)."""
    cfg = CONFIGS["4x4" if patch == "no_line_walk" else "8x16"]
    if patch == "stride1":
        steps, wsram = trace(net_depthwise_line(), cfg)
    else:
        steps, wsram = trace(net_pool2(), cfg)
    i, d, before = next((i, d, before) for i, d, before, _ in steps if d.op == "DWCONV")
    d = _pool2(d, CONFIGS["8x16"] if patch == "no_line_walk" else cfg, np.random.default_rng(1)) \
        if patch != "no_line_walk" else d
    if patch == "no_line_walk":
        d.flags |= fmt.POOL2
        d.in2_addr = cfg.act_banks * cfg.sram_bank_bytes // cfg.array_cols - d.out_h * d.out_w * d.out_ct
        d.add_min, d.add_max = -128, 127
    elif patch == "pad_top":
        d.pad_top, d.pad_bottom = 1, d.pad_bottom - 1
    elif patch == "clamps":
        d.add_min = d.in_zp + 1
    elif patch == "overlap":
        d.in2_addr = d.in_addr
    with pytest.raises(fmt.ProgramError, match="POOL2"):
        golden.step(i, d, before.copy(), wsram, cfg.array_rows, cfg.array_cols, cfg.max_channels, config=cfg)
    if patch == "overlap":
        return
    got, cycles, macs, error = run_engine(NPUConvEngine(cfg), cfg, d, before, wsram)
    assert error and cycles == 2 and macs == 0
    assert np.array_equal(got, before)


@pytest.mark.parametrize("config,channels", [("4x8", 3), ("8x16", 3), ("2x64", 3), ("4x4", 1), ("8x16/G1", 3),
                                             ("4x8/G2", 3), ("4x4/deep", 1)])
def test_packed_stem(config, channels):
    steps = check_graph(net_stem(channels), CONFIGS[config])
    assert all(d.flags & fmt.PACKED for _, d, _, _ in steps)


def test_records_wider_than_a_word():
    """rows > 16 (imx500): a weight word holds more parameter records than an output word has lanes, so the
    load writes each weight word in several beats; rows == cols here (one lane group per word)."""
    config = DieConfig(name="a32x32", array_rows=32, array_cols=32, sram_banks=4, sram_bank_bytes=64 * 1024,
                       weight_banks=2, max_channels=128)
    n = Net((1, 2, 3, 40), seed=15, zp=-1)
    check_graph(n.graph(n.conv(n.input, 70, k=1, out_q=(0.05, 4))), config)


def _one_descriptor(graph, config, op):
    steps, wsram = trace(graph, config)
    return next((d, before, wsram) for _, d, before, _ in steps if d.op == op), steps


def net_fc(per_channel):
    """FULLY_CONNECTED (FCSCALE): on a feature vector (13 units: a partial oc tile and padding lanes), chained
    with a fused RELU, and on a flattened 3x2x5 conv output (an H x W VALID CONV); ties of the float64 rescale
    are tests/test_fc_rtl.py's business."""
    n = Net((1, 3, 2, 5), seed=17, zp=4)
    a = n.conv(n.input, 5, k=1, out_q=(0.05, -3))
    b = n.fc(n.reshape(a, (1, 30)), 13, per_channel=per_channel, out_q=(0.4, -6))
    c = n.fc(b, 6, act="RELU", per_channel=per_channel, out_q=(0.3, -128))
    return n.graph(b, c, n.fc(n.reshape(n.input, (1, 30)), 4, per_channel=per_channel, out_q=(0.2, 9)))


@pytest.mark.parametrize("config,per_channel", [("4x4", False), ("2x4", True), ("8x16", True), ("4x8", False),
                                                ("4x4/deep", True)])
def test_fully_connected(config, per_channel):
    """FCSCALE descriptors run, equal to the golden executor (LiteRT's double rescale) and in the cycles of the
    same descriptor without the flag: 2x4 has a record in two weight words, 8x16 two lane groups per word."""
    steps = check_graph(net_fc(per_channel), CONFIGS[config], only="CONV")
    fcs = [d for _, d, _, _ in steps if d.flags & fmt.FCSCALE]
    assert len(fcs) == 3
    for d in fcs:
        assert conv_cycles(CONFIGS[config], d) == conv_cycles(CONFIGS[config],
                                                              dataclasses.replace(d, flags=d.flags & ~fmt.FCSCALE))


def test_fully_connected_records_wider_than_a_word():
    """rows > 16: FCSCALE records loaded in several beats per weight word (as test_records_wider_than_a_word)."""
    config = DieConfig(name="a32x32", array_rows=32, array_cols=32, sram_banks=4, sram_bank_bytes=64 * 1024,
                       weight_banks=2, max_channels=128)
    n = Net((1, 1, 1, 40), seed=18, zp=-1)
    check_graph(n.graph(n.fc(n.input, 70, per_channel=True, out_q=(0.3, 4))), config)


def net_residual():
    """Residual ADDs the compiler runs in a CONV's back end (RESADD) on a die with two read ports: the CONV as the
    ADD's second input (a 20-channel output in three oc tiles of 8 over two words, the last with lanes above it),
    as its first with a RELU on the ADD (PAIR: an 8-channel input, oc tiles in pairs, whole words; the third tile
    a pair of one), the same over an 18-channel input (PAIR with F = 1, the odd last tile's F + 1 issues), and
    one whose CONV reads the residual itself (stays an ADD)."""
    n = Net((1, 6, 7, 20), seed=18, zp=-6)
    a = n.conv(n.input, 20, k=1, out_q=(0.06, 5))
    h = n.conv(a, 12, k=3, act="RELU", out_q=(0.05, -128))
    s = n.add(a, n.conv(h, 20, k=1, out_q=(0.04, -3)), out_q=(0.08, 2))
    u = n.conv(s, 8, k=1, out_q=(0.05, 1))
    t = n.add(n.conv(u, 20, k=3, act="RELU6", out_q=(6 / 255, -128)), s, out_q=(0.07, -100), act="RELU")
    v = n.conv(t, 18, k=1, out_q=(0.05, -2))
    return n.graph(n.add(t, n.conv(t, 20, k=1, out_q=(0.09, 7)), out_q=(0.1, 0)),
                   n.add(n.conv(v, 20, k=1, out_q=(0.04, 6)), t, out_q=(0.08, -3)))


@pytest.mark.parametrize("config", ["8x16/2p", "8x16/2p/deep"])
def test_residual_add(config):
    """CONVs with a fused residual ADD (RESADD) leave the SRAM as the golden executor does, in the model's cycles
    (a tile's write `resadd_latency` later), the residual read on the second port once per tile written, never
    in the bank the first port reads."""
    cfg = CONFIGS[config]
    steps = check_graph(net_residual(), cfg, only="CONV")         # no bank conflict either
    fused = [d for _, d, _, _ in steps if d.flags & fmt.RESADD]
    assert len(fused) == 3 and any(not d.flags & fmt.PAIR for d in fused)
    # PAIR with an odd last tile, over one input word and over two (F = 1).
    assert sorted(d.in_ct for d in fused if d.flags & fmt.PAIR and d.oc_tiles % 2) == [1, 2]
    for d in fused:
        plain = fmt.Descriptor(**{**vars(d), "flags": d.flags & ~fmt.RESADD})
        assert conv_cycles(cfg, d) - conv_cycles(cfg, plain) == resadd_latency(cfg)


def net_residual_pad():
    """Residual ADDs whose residual is a channel PAD adding a word (ZPAD2): 12 channels in one 16-lane word padded
    to 20 in two; one CONV in PAIRs (6 input channels), one in oc tiles of 8 lanes (12 input channels)."""
    n = Net((1, 5, 6, 12), seed=19, zp=3)
    a = n.conv(n.input, 12, k=1, out_q=(0.05, -4))
    p = n.pad(a, [[0, 0], [0, 0], [0, 0], [0, 8]])
    c1 = n.conv(n.conv(a, 6, k=3, out_q=(0.04, 2)), 20, k=1, out_q=(0.06, -9))
    c2 = n.conv(n.conv(a, 12, k=3, out_q=(0.05, 1)), 20, k=1, act="RELU", out_q=(0.03, -128))
    return n.graph(n.add(c1, p, out_q=(0.07, 5), act="RELU"), n.add(p, c2, out_q=(0.08, -2)))


def test_residual_add_zpad():
    """RESADD with ZPAD2: the output words past the residual's tiles take its zero point without a read; the SRAM as
    the golden executor leaves it, the model's cycles and reads."""
    cfg = CONFIGS["8x16/2p"]
    steps = check_graph(net_residual_pad(), cfg, only="CONV")
    fused = [d for _, d, _, _ in steps if d.flags & fmt.RESADD]
    assert len(fused) == 2 and all(d.flags & fmt.ZPAD2 and d.in2_ct == 1 and d.out_ct == 2 for d in fused)
    assert sorted(bool(d.flags & fmt.PAIR) for d in fused) == [False, True]


@pytest.mark.parametrize("patch", ["one_port", "banks_meet", "residual_shape", "with_fcscale", "zpad_alone"])
def test_residual_add_refused(patch):
    """RESADD the die cannot run: on a die with one read port, a residual in a bank the input spans (refused
    after the setup, `2 + setup_cycles`), a residual not of the output's shape, with FCSCALE; and ZPAD2 on a CONV
    without RESADD. The golden executor refuses each; the engine flags an error and writes nothing."""
    cfg = CONFIGS["8x16/2p"]
    steps, wsram = trace(net_residual(), cfg)
    d, before = next((d, before) for _, d, before, _ in steps if d.flags & fmt.RESADD)
    cycles_want = 2
    if patch == "one_port":
        cfg = CONFIGS["8x16"]
    elif patch == "banks_meet":
        d.in2_addr = d.in_addr + 1 if d.in_addr + 1 != d.out_addr else d.in_addr
        cycles_want = 2 + setup_cycles(cfg, d)
    elif patch == "residual_shape":
        d.in2_w -= 1
    elif patch == "zpad_alone":
        d.flags = (d.flags & ~fmt.RESADD) | fmt.ZPAD2
    else:
        d.flags |= fmt.FCSCALE
    with pytest.raises(fmt.ProgramError, match="RESADD"):
        golden._check(0, d, cfg.array_cols, cfg.array_rows, dual_banks=cfg.act_bank_words
                      if cfg.act_read_ports == 2 else None)
    got, cycles, macs, error = run_engine(NPUConvEngine(cfg), cfg, d, before, wsram)
    assert error and cycles == cycles_want and macs == 0
    assert np.array_equal(got, before)


@pytest.mark.parametrize("patch", ["opcode", "dwconv_flags", "too_many_channels", "im2col_too_long",
                                   "pair_wide_input", "pair_fcscale", "pair_packed", "pair_square_array"])
def test_refused_descriptors(patch):
    """What the engine cannot do: `error` with `done` one cycle after `start`, the SRAM untouched. PAIR where it
    cannot work (over cols/2 input channels, with FCSCALE or PACKED, an array without cols = 2*rows): the golden
    executor refuses it too."""
    config = CONFIGS["8x16"]
    if patch.startswith("pair"):
        if patch == "pair_square_array":
            config = CONFIGS["4x4"]
            (d, before, wsram), _ = _one_descriptor(net_pair(2), config, "CONV")
        elif patch == "pair_packed":
            (d, before, wsram), _ = _one_descriptor(net_stem(), config, "CONV")
            assert d.flags & fmt.PACKED
        elif patch == "pair_wide_input":
            (d, before, wsram), _ = _one_descriptor(net_pointwise(), config, "CONV")
            assert d.in_c > config.array_cols // 2 and not d.flags
        else:
            n = Net((1, 1, 1, 6), seed=16)
            (d, before, wsram), _ = _one_descriptor(n.graph(n.fc(n.input, 9)), config, "CONV")
            assert d.flags & fmt.FCSCALE and d.in_c <= config.array_cols // 2 and d.oc_tiles == 2
        d.flags |= fmt.PAIR
        with pytest.raises(fmt.ProgramError, match="PAIR"):
            golden._check(0, d, config.array_cols, config.array_rows)
        engine = NPUConvEngine(config)
    elif patch == "im2col_too_long":
        (d, before, wsram), _ = _one_descriptor(net_stem(), config, "CONV")
        engine = NPUConvEngine(config, im2col_words=1)
    elif patch == "dwconv_flags":
        (d, before, wsram), _ = _one_descriptor(net_depthwise(), config, "DWCONV")
        engine = NPUConvEngine(config)
        d.flags = fmt.FCSCALE
    else:
        n = Net((1, 1, 1, 20), seed=16)
        graph = n.graph(n.fc(n.input, 9))
        (d, before, wsram), _ = _one_descriptor(graph, config, "CONV")
        assert d.flags & fmt.FCSCALE
        engine = NPUConvEngine(config)
        if patch == "opcode":
            d.opcode, d.flags = fmt.OPCODES["ADD"], 0
        elif patch == "too_many_channels":
            d.flags, d.oc_tiles = 0, config.max_channels // config.array_rows + 1
    got, cycles, macs, error = run_engine(engine, config, d, before, wsram)
    assert error and cycles == 2 and macs == 0
    assert np.array_equal(got, before)


@pytest.mark.parametrize("name", ["tiny", "fpga", "imx500"])
def test_verilog_lint(name, tmp_path):
    from stackcam.sim.verilator import lint
    text = verilog.convert(NPUConvEngine(PRESETS[name]), name="npu_conv_engine")
    path = tmp_path / "npu_conv_engine.v"
    path.write_text(text)
    output = lint(path, "npu_conv_engine")
    warnings = {line.split(":")[0] for line in output.splitlines() if line.startswith("%Warning")}
    assert not warnings, output
