"""amaranth.sim tests of the vector engine's MUL, SUB (ADD with NEG2), broadcast ADD, MEAN and PRELU: every such
descriptor of a compiled graph run from the golden executor's SRAM and compared word for word, random
descriptors against the golden step, cycles equal to quant.timing, refusals, and a Verilator lint."""

import sys

import numpy as np
import pytest

import stackcam.quant.golden as golden
import stackcam.quant.program as fmt
from stackcam.quant.compiler import compile_graph
from stackcam.quant.romimage import build_rom, load_rom
from stackcam.rtl.npu.vector import NPUVectorEngine
from stackcam.sim.npu_harness import run_engine
from tests.test_npu_vector import CFG, CONFIGS, random_sram, run_random, small
from tests.test_program import net_arith

sys.set_int_max_str_digits(0)

NEW_OPS = {"ADD", "MUL", "MEAN", "PRELU", "LUT"}


def check_graph(graph, config, seed=0):
    """Every vector descriptor of `graph` compiled for `config` in the engine, from the golden executor's SRAM
    before it; the whole activation SRAM after it and the cycles must match. Returns {op: count}."""
    model = compile_graph(graph, config)
    rom = build_rom(model)
    wsram = load_rom(rom, config).weight_sram()
    x = np.random.default_rng(seed).integers(-128, 128, graph.tensors[graph.inputs[0]].shape[1:]).astype(np.int8)
    steps = []
    golden.execute_trace(rom, config, x, lambda i, d, sram: steps.append((i, d, sram.copy())))
    ran = {}
    for (i, d, after), (_, _, before) in zip(steps[1:], steps[:-1]):
        if d.op not in NEW_OPS:
            continue
        got, cycles, _, error = run_engine(NPUVectorEngine(config), config, d, before, wsram)
        assert not error, f"descriptor {i} ({d.op}) flagged an error"
        bad = np.argwhere(got != after)
        assert bad.size == 0, (f"descriptor {i} ({d.op} {d.nonzero()}): {len(bad)} bytes differ, first at word "
                               f"{bad[0][0]} lane {bad[0][1]}: {got[bad[0][0]]} != {after[bad[0][0]]}")
        assert cycles == NPUVectorEngine.cycles(config, d), f"descriptor {i} ({d.op} {d.nonzero()}): {cycles}"
        ran[d.op] = ran.get(d.op, 0) + 1
    return ran


@pytest.mark.parametrize("config", list(CONFIGS))
def test_arith_net_descriptors_match_golden_executor(config):
    ran = check_graph(net_arith(), CONFIGS[config])
    assert ran.get("MUL") == 4 and ran.get("MEAN") == 2 and ran.get("PRELU") == 1 and ran.get("ADD") == 3


def test_back_to_back_descriptors_leave_nothing_in_flight():
    """One engine runs the net's consecutive vector descriptors back to back, as the die's sequencer does, with
    another descriptor (the next CONV) on `desc` for a while after each: no write may happen after `done`
    (a word still in a pipeline would land in the next engine's time), and the SRAM after the run is the
    golden executor's. (MEAN's sums once also entered the pools' divider, whose stale word came after done.)"""
    from amaranth.sim import Simulator

    from stackcam.quant.program import pack
    from stackcam.sim.npu_harness import EngineHarness
    config = CONFIGS["4x4"]
    graph = net_arith()
    rom = build_rom(compile_graph(graph, config))
    wsram = load_rom(rom, config).weight_sram()
    x = np.random.default_rng(0).integers(-128, 128, graph.tensors[graph.inputs[0]].shape[1:]).astype(np.int8)
    steps = []
    golden.execute_trace(rom, config, x, lambda i, d, sram: steps.append((i, d, sram.copy())))
    first = next(k for k, (_, d, _) in enumerate(steps) if d.op not in ("CONV", "DWCONV"))
    last = next(k for k in range(first, len(steps)) if steps[k][1].op in ("CONV", "DWCONV"))
    run = [d for _, d, _ in steps[first:last]]
    idle_desc = steps[last][1]
    assert {d.op for d in run} >= {"MEAN", "MUL", "ADD", "LUT"}
    eng = NPUVectorEngine(config)
    h = EngineHarness(eng, config, steps[first - 1][2], wsram)
    stray = []

    async def tb(ctx):
        for d in run:
            ctx.set(eng.desc.as_value(), int.from_bytes(pack(d), "little"))
            ctx.set(eng.start, 1)
            await ctx.tick()
            ctx.set(eng.start, 0)
            for _ in range(NPUVectorEngine.cycles(config, d) + 50):
                if (await ctx.tick().sample(eng.done))[2]:
                    break
            else:
                stray.append(f"{d.op} never done")
                return
            ctx.set(eng.desc.as_value(), int.from_bytes(pack(idle_desc), "little"))
            for _ in range(24):
                if (await ctx.tick().sample(eng.act_w.en))[2]:
                    stray.append(d.op)
        words = [ctx.get(h.act.data[i]) for i in range(config.act_words)]
        got = np.array([np.frombuffer(int(v).to_bytes(config.array_cols, "little"), np.int8) for v in words])
        np.testing.assert_array_equal(got, steps[last - 1][2])

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert stray == []


# --- random descriptors against the golden step -----------------------------------------------------------------

def _mult(rng):
    return int(rng.choice([1 << 30, (1 << 31) - 1, 1, -(1 << 31)])) if rng.random() < 0.3 else \
        int(rng.integers(1 << 30, 1 << 31))


def _in2(rng, h, w, c, mode):
    return {"full": (h, w, c), "channel": (1, 1, c), "scalar": (1, 1, 1)}[mode]


@pytest.mark.parametrize("mode", ["full", "channel", "scalar"])
def test_mul_random(mode):
    """MUL with each broadcast of the second input, in place and not, positive and negative shifts (a left shift
    wraps the product in int32 as the reference's C code does), clamps, extreme multipliers."""
    rng = np.random.default_rng(31)
    cols = CFG.array_cols
    for trial in range(6):
        h, w, c = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 11))
        ct = -(-c // cols)
        h2, w2, c2 = _in2(rng, h, w, c, mode)
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if trial % 2 else (-128, 127)
        d = fmt.Descriptor(opcode=fmt.OPCODES["MUL"], in_h=h, in_w=w, in_c=c, in_ct=ct, in2_h=h2, in2_w=w2,
                           in2_c=c2, in2_ct=-(-c2 // cols), out_h=h, out_w=w, out_c=c, out_ct=ct, in_addr=3,
                           in2_addr=100 + trial, out_addr=3 if trial % 3 == 0 else 400,
                           in_zp=int(rng.integers(-128, 128)), in2_zp=int(rng.integers(-128, 128)),
                           out_zp=int(rng.integers(-128, 128)), act_min=lo, act_max=hi, out_mult=_mult(rng),
                           out_shift=int(rng.choice([-31, -12, -6, 0, 3, 15, 31])) if trial else -7)
        run_random(CFG, d, random_sram(rng, CFG))


@pytest.mark.parametrize("mode", ["full", "channel", "scalar"])
@pytest.mark.parametrize("neg", [False, True], ids=["add", "sub"])
def test_add_sub_broadcast_random(mode, neg):
    rng = np.random.default_rng(32 + neg)
    cols = CFG.array_cols
    for trial in range(4):
        h, w, c = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 10))
        ct = -(-c // cols)
        h2, w2, c2 = _in2(rng, h, w, c, mode)
        d = fmt.Descriptor(opcode=fmt.OPCODES["ADD"], flags=fmt.NEG2 if neg else 0, in_h=h, in_w=w, in_c=c,
                           in_ct=ct, in2_h=h2, in2_w=w2, in2_c=c2, in2_ct=-(-c2 // cols), out_h=h, out_w=w,
                           out_c=c, out_ct=ct, in_addr=3, in2_addr=150, out_addr=3 if trial % 2 else 300,
                           in_zp=int(rng.integers(-128, 128)), in2_zp=int(rng.integers(-128, 128)),
                           out_zp=int(rng.integers(-128, 128)), act_min=-128, act_max=127, left_shift=20,
                           in_shift=int(rng.integers(-3, 1)), in2_shift=int(rng.integers(-3, 1)),
                           in_mult=_mult(rng) & 0x7FFFFFFF, in2_mult=_mult(rng) & 0x7FFFFFFF,
                           out_mult=_mult(rng) & 0x7FFFFFFF, out_shift=int(rng.integers(-20, -5)))
        run_random(CFG, d, random_sram(rng, CFG))


def test_mean_random():
    """Odd windows (1x1, 1xN, 13x11), extreme sums (all -128, all 127), rescale up and down, clamps."""
    rng = np.random.default_rng(33)
    cols = CFG.array_cols
    for trial, (h, w) in enumerate([(1, 1), (1, 7), (5, 1), (3, 4), (13, 11), (6, 6), (2, 9)]):
        c = int(rng.integers(1, 11))
        ct = -(-c // cols)
        n = h * w
        lo, hi = (-128, 127) if trial % 3 else tuple(sorted(int(v) for v in rng.integers(-100, 100, 2)))
        d = fmt.Descriptor(opcode=fmt.OPCODES["MEAN"], in_h=h, in_w=w, in_c=c, in_ct=ct, out_h=1, out_w=1, out_c=c,
                           out_ct=ct, in_addr=2, out_addr=2 + n * ct, in_zp=int(rng.integers(-128, 128)),
                           out_zp=int(rng.integers(-128, 128)), act_min=lo, act_max=hi, out_mult=_mult(rng),
                           out_shift=int(rng.integers(-31, 3)))
        sram = random_sram(rng, CFG)
        if trial in (4, 5):
            sram[:] = -128 if trial == 4 else 127
        run_random(CFG, d, sram)


@pytest.mark.parametrize("config", [CFG, small(8, 32, 32 * 1024)], ids=["16-byte words", "256-byte words"])
def test_prelu_random(config):
    """One alpha per channel (negative ones and -128 included) over 1 to 256 channels: alphas spread over
    several weight words or several tiles in one word; in place and not."""
    rng = np.random.default_rng(34)
    cols, wb = config.array_cols, config.weight_word_bytes
    for trial, c in enumerate([1, 5, 37, 256] if cols == 4 else [7, 33, 256]):
        ct = -(-c // cols)
        h, w = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        words = rng.integers(0, 256, (5 + -(-c // wb) + 2, wb)).astype(np.uint8)
        words[5:5 + -(-c // wb)].reshape(-1)[:c] = rng.integers(-128, 128, c).astype(np.int8).view(np.uint8)
        d = fmt.Descriptor(opcode=fmt.OPCODES["PRELU"], in_h=h, in_w=w, in_c=c, in_ct=ct, out_h=h, out_w=w,
                           out_c=c, out_ct=ct, in_addr=1, out_addr=1 if trial % 2 else 1 + h * w * ct,
                           param_addr=5, param_words=-(-c // wb), in_zp=int(rng.integers(-128, 128)),
                           in2_zp=int(rng.integers(-128, 128)), out_zp=int(rng.integers(-128, 128)), act_min=-128,
                           act_max=127, in_mult=_mult(rng), in_shift=int(rng.integers(-12, 2)),
                           in2_mult=_mult(rng), in2_shift=int(rng.integers(-20, 0)))
        run_random(config, d, random_sram(rng, config), words)


# --- refusals -----------------------------------------------------------------------------------------------------

def _bad(**fields):
    base = dict(in_h=2, in_w=2, in_c=3, in_ct=1, out_h=2, out_w=2, out_c=3, out_ct=1, in2_h=2, in2_w=2, in2_c=3,
                in2_ct=1, act_min=-128, act_max=127, param_words=1)
    base.update(fields)
    return fmt.Descriptor(**base)


@pytest.mark.parametrize("desc", [
    _bad(opcode=fmt.OPCODES["MUL"], in2_h=1),                                # 1x2x3: not a broadcast the die does
    _bad(opcode=fmt.OPCODES["MUL"], in2_h=1, in2_w=1, in2_c=2),
    _bad(opcode=fmt.OPCODES["ADD"], flags=fmt.NEG2, in2_w=1),
    _bad(opcode=fmt.OPCODES["ADD"], flags=fmt.FILL),
    _bad(opcode=fmt.OPCODES["MUL"], out_shift=32),
    _bad(opcode=fmt.OPCODES["MUL"], in_c=2),                                 # input 1 is not the output's shape
    _bad(opcode=fmt.OPCODES["MEAN"], out_h=2),
    _bad(opcode=fmt.OPCODES["MEAN"], out_h=1, out_w=1, in_h=256),
    _bad(opcode=fmt.OPCODES["PRELU"], in_c=300, out_c=300, in_ct=75, out_ct=75, param_words=19),
    _bad(opcode=fmt.OPCODES["PRELU"], in_c=17, out_c=17, in_ct=5, out_ct=5, param_words=1),   # 16 bytes of alphas
    _bad(opcode=fmt.OPCODES["PRELU"], in2_shift=-32),
    _bad(opcode=fmt.OPCODES["MUL"], flags=fmt.NEG2),
], ids=["mul_h", "mul_c", "sub_w", "add_fill", "mul_shift", "mul_in1", "mean_out", "mean_256", "prelu_300",
        "prelu_short", "prelu_shift", "mul_flags"])
def test_refused_at_setup(desc):
    sram = np.zeros((CFG.act_words, CFG.array_cols), np.int8)
    _, cycles, _, error = run_engine(NPUVectorEngine(CFG), CFG, desc, sram,
                                     np.zeros((16, CFG.weight_word_bytes), np.uint8))
    assert error and cycles == NPUVectorEngine.SETUP_CYCLES + 2
    with pytest.raises(fmt.ProgramError):          # the format (flags) or the golden executor refuses it too
        golden.step(0, fmt.unpack(fmt.pack(desc)), sram.copy(), np.zeros((32, CFG.weight_word_bytes), np.uint8),
                    CFG.array_rows, CFG.array_cols)


# --- the whole die ------------------------------------------------------------------------------------------------

def test_die_runs_arith_net_bit_exact():
    """The die in Verilator (inputs on the tensor port) equals the golden executor, which equals LiteRT's
    BUILTIN_REF on the exported graph (tests/test_ops_arith_die.py), on every output of the arithmetic net; each
    descriptor's cycles (read from the die's counters) equal the analytic model."""
    from stackcam.rtl.params import preset
    from tests.dieutil import die_equals_golden

    config = preset("tiny")
    graph = net_arith()
    compiled = compile_graph(graph, config)
    assert {d.op for d in compiled.descriptors} >= {"MUL", "MEAN", "PRELU", "ADD"}
    die_equals_golden(config, compiled, build_rom(compiled), graph, count=3, seed=5)
