"""Per-bank SRAM activity counters of the NPU (`bank_sel` / `bank_counter`, rtl.npu.core.BANK_COUNTERS), in
amaranth's simulator on a die with small banks so that tensors and tables cross bank boundaries: the loader's
writes land in the bank of their address; a run's counters (cleared at its start) equal
`sim.cyclemodel.predict_bank_activity` bank for bank, the sequencer's descriptor fetches included, and each
descriptor's activity counters `quant.timing.descriptor_activity`, for every vector-engine operator; a bank the
SRAM does not have reads 0. The same counters on whole networks in Verilator: tests/test_cyclemodel.py."""

import dataclasses

import numpy as np
from amaranth.sim import Simulator

from stackcam.quant.program import FILL, OPCODES, RESIZE_ENTRY_BYTES, ZPAD2, Descriptor, pack, stream_words
from stackcam.quant.timing import descriptor_activity, program_activity
from stackcam.rtl.npu.core import BANK_COUNTERS, NPU
from stackcam.rtl.params import preset
from stackcam.rtl.regs import REGISTER_BY_NAME
from stackcam.sim.cyclemodel import predict_bank_activity

# 4 activation banks of 512 words (4 bytes), 2 weight banks of 128 words (16 bytes).
CONFIG = dataclasses.replace(preset("tiny"), name="banks", sram_banks=6, sram_bank_bytes=2048, weight_banks=2)
COLS, WB = CONFIG.array_cols, CONFIG.weight_word_bytes
WPB_ACT = CONFIG.sram_bank_bytes // COLS
WPB_W = CONFIG.sram_bank_bytes // WB
ACTIVITY = ("act_reads", "act_write_bytes", "weight_reads")


def _weight_image(descs, tables=()):
    """uint8 [weight_words, WB]: the program from word 0 and each (word, bytes) table as a byte stream."""
    img = np.zeros((CONFIG.weight_words, WB), np.uint8)
    prog = stream_words(b"".join(pack(d) for d in descs), WB)
    img[:len(prog)] = prog
    for word, data in tables:
        t = stream_words(data, WB)
        img[word:word + len(t)] = t
    return img


def _run_npu(image, extra_loads=()):
    """Load `image` (every word) and the words `extra_loads` (zeros), run the program, and read every per-bank
    counter and each descriptor's activity counters. Returns a dict."""
    dut = NPU(CONFIG)
    writes = [(a, int.from_bytes(image[a].tobytes(), "little")) for a in range(len(image))]
    writes += [(a, int.from_bytes(image[a].tobytes(), "little")) for a in extra_loads]
    got = {}

    async def read_bank(ctx, kind, bank):
        ctx.set(dut.bank_sel, (BANK_COUNTERS.index(kind) if isinstance(kind, str) else kind) << 8 | bank)
        await ctx.tick().repeat(2)
        return ctx.get(dut.bank_counter)

    async def bench(ctx):
        for addr, data in writes:
            ctx.set(dut.load_w.addr, addr)
            ctx.set(dut.load_w.data, data)
            ctx.set(dut.load_w.en, 1)
            await ctx.tick()
        ctx.set(dut.load_w.en, 0)
        # Outside a run, the input writer's writes and the output reader's reads are not a run's.
        ctx.set(dut.ext_act_w.addr, 5)
        ctx.set(dut.ext_act_w.en, (1 << COLS) - 1)
        await ctx.tick()
        ctx.set(dut.ext_act_w.addr, WPB_ACT)
        ctx.set(dut.ext_act_w.en, 0b0110)
        ctx.set(dut.ext_act_r.addr, 3 * WPB_ACT - 1)
        ctx.set(dut.ext_act_r.en, 1)
        await ctx.tick()
        ctx.set(dut.ext_act_w.en, 0)
        ctx.set(dut.ext_act_r.en, 0)
        got["before"] = await read_bank(ctx, "act_write_bytes", 0)
        ctx.set(dut.model_ok, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(5000):
            if ctx.get(dut.done):
                got["error"] = ctx.get(dut.error)
                break
            await ctx.tick()
        await ctx.tick()
        got["descriptors"] = ctx.get(dut.descriptors)
        got["per_descriptor"] = []
        for i in range(got["descriptors"]):
            ctx.set(dut.counter_sel, i)
            await ctx.tick().repeat(2)
            got["per_descriptor"].append({k: ctx.get(getattr(dut, f"counter_{k}")) for k in ACTIVITY})
        for kind in BANK_COUNTERS:
            n = CONFIG.weight_banks if kind.startswith("weight") else CONFIG.act_banks
            got[kind] = [await read_bank(ctx, kind, b) for b in range(n)]
        got["absent"] = [await read_bank(ctx, "act_reads", CONFIG.act_banks),
                         await read_bank(ctx, "weight_writes", CONFIG.weight_banks),
                         await read_bank(ctx, len(BANK_COUNTERS), 0)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def _check(descs, got, image):
    assert got.get("error") == 0, got.get("error")
    assert got["descriptors"] == len(descs) - 1
    want = predict_bank_activity(CONFIG, descs, weights=image)
    assert want["unmodelled"] == []
    for kind in ACTIVITY:
        assert got[kind] == want[kind], kind
    # Each descriptor's activity counters: the analytic model's; their sum plus the fetches: the banks' sum.
    ops = {v: k for k, v in OPCODES.items()}
    for i, (d, a) in enumerate(zip(descs, got["per_descriptor"])):
        m = {k: descriptor_activity(CONFIG, d)[k] for k in ACTIVITY}
        assert a == m, f"descriptor {i} ({ops[d.opcode]}): die {a}, model {m}"
    total = program_activity(CONFIG, descs)["total"]
    assert sum(got["act_reads"]) == total["act_reads"] and sum(got["act_write_bytes"]) == total["act_write_bytes"]
    assert sum(got["weight_reads"]) == total["weight_reads"] + total["fetch_weight_reads"]
    assert got["absent"] == [0, 0, 0] and got["before"] == 0
    # The outside's traffic between runs, by bank: two writes (4 and 2 lanes), one read.
    assert got["input_write_bytes"] == [COLS, 2, 0, 0] and got["output_reads"] == [0, 0, 1, 0]
    return want


def test_copies_across_banks_and_the_loader_writes():
    """Two COPYs whose tensors straddle bank boundaries (the first with FILL and a channel offset)."""
    descs = [
        Descriptor(opcode=OPCODES["COPY"], flags=FILL, layer=0, in_h=3, in_w=5, in_c=6, in_ct=2, out_h=4, out_w=6,
                   out_c=7, out_ct=2, in_addr=WPB_ACT - 11, out_addr=2 * WPB_ACT - 20, copy_y=1, copy_x=1, copy_c=1,
                   fill=-3, out_zp=-3),
        Descriptor(opcode=OPCODES["COPY"], layer=1, in_h=2, in_w=4, in_c=COLS, in_ct=1, out_h=2, out_w=9,
                   out_c=COLS, out_ct=1, in_addr=3 * WPB_ACT - 3, out_addr=WPB_ACT + 7, copy_x=5),
        Descriptor(opcode=OPCODES["END"]),
    ]
    image = _weight_image(descs)
    extra = [WPB_W - 1, WPB_W, WPB_W, 2 * WPB_W - 1]
    got = _run_npu(image, extra)
    want = _check(descs, got, image)
    loads = [WPB_W + 1, WPB_W + 3]           # every word once, and the extra words on both sides of the boundary
    assert got["weight_writes"] == loads
    assert sum(v > 0 for v in want["act_reads"]) >= 2 and sum(v > 0 for v in want["act_write_bytes"]) >= 2
    # The fetches: 8 words of 16 bytes per descriptor, three descriptors, all in weight bank 0.
    assert want["weight_reads"] == [3 * 128 // WB, 0]
    assert sum(got["act_write_bytes"]) == 4 * 6 * 2 * COLS + 3 * 5 * 6 + 2 * 4 * 4


def _entries(n, size, frac):
    out = b""
    for i in range(n):
        lo = min(i * size // n, size - 1)
        out += int(lo).to_bytes(2, "little") + int(min(lo + 1, size - 1)).to_bytes(2, "little")
        out += int(frac).to_bytes(2, "little", signed=True) + bytes(RESIZE_ENTRY_BYTES - 6)
    return out


def test_vector_operators_across_banks():
    """MUL (a 1x1xC second input), ADD (1x1x1), MEAN, PRELU, RESIZE (tables across the weight-bank boundary),
    GATHER (strided box, source lane past the destination's, FILL), LUT and ADD with ZPAD2 (a second input of one
    channel tile of the output's two: its words read once, in order), tensors across activation banks."""
    B = WPB_ACT
    t = dict(in_h=3, in_w=5, in_c=6, in_ct=2, out_h=3, out_w=5, out_c=6, out_ct=2)
    descs = [
        Descriptor(opcode=OPCODES["MUL"], layer=0, **t, in2_h=1, in2_w=1, in2_c=6, in2_ct=2, in_addr=B - 12,
                   in2_addr=2 * B - 1, out_addr=3 * B - 15, out_mult=1 << 30),
        Descriptor(opcode=OPCODES["ADD"], layer=1, **t, in2_h=1, in2_w=1, in2_c=1, in2_ct=1, in_addr=B - 12,
                   in2_addr=2 * B + 3, out_addr=3 * B + 40, in_mult=1 << 30, in2_mult=1 << 30, out_mult=1 << 30),
        Descriptor(opcode=OPCODES["MEAN"], layer=2, in_h=4, in_w=5, in_c=6, in_ct=2, out_h=1, out_w=1, out_c=6,
                   out_ct=2, in_addr=2 * B - 20, out_addr=4 * B - 1 - 1, out_mult=1 << 30),
        Descriptor(opcode=OPCODES["PRELU"], layer=3, **t, in_addr=3 * B - 10, out_addr=B + 100, param_addr=70,
                   param_words=1, in_mult=1 << 30, in2_mult=1 << 30),
        Descriptor(opcode=OPCODES["RESIZE"], layer=4, in_h=3, in_w=4, in_c=6, in_ct=2, out_h=5, out_w=7, out_c=6,
                   out_ct=2, in_addr=2 * B - 7, out_addr=B - 30, param_addr=WPB_W - 2, param_words=3,
                   weight_addr=WPB_W + 1, weight_words=4),
        Descriptor(opcode=OPCODES["GATHER"], flags=FILL, layer=5, in_h=4, in_w=6, in_c=7, in_ct=2, out_h=3, out_w=4,
                   out_c=8, out_ct=2, in_addr=B - 30, out_addr=3 * B - 9, g_h=2, g_w=3, g_c=5, src_y=1, src_c=2,
                   src_sy=2, src_sx=2, copy_x=1, copy_c=1, dst_sy=2, dst_sx=1, fill=5),
        Descriptor(opcode=OPCODES["LUT"], layer=6, **t, in_addr=2 * B - 10, out_addr=B + 200, param_addr=WPB_W + 20,
                   param_words=256 // WB),
        Descriptor(opcode=OPCODES["ADD"], flags=ZPAD2, layer=7, **t, in2_h=3, in2_w=5, in2_c=3, in2_ct=1,
                   in_addr=3 * B - 20, in2_addr=2 * B - 7, out_addr=B + 300, in_mult=1 << 30, in2_mult=1 << 30,
                   out_mult=1 << 30),
        Descriptor(opcode=OPCODES["END"]),
    ]
    tables = [(70, bytes(range(6))), (WPB_W - 2, _entries(5, 3, 300)), (WPB_W + 1, _entries(7, 4, 700)),
              (WPB_W + 20, bytes(range(256)))]
    image = _weight_image(descs, tables)
    got = _run_npu(image)
    want = _check(descs, got, image)
    assert all(v > 0 for v in want["act_reads"]) and all(v > 0 for v in want["weight_reads"])
    # Without the tables, a RESIZE whose input spans banks cannot be placed, and says so.
    assert predict_bank_activity(CONFIG, descs)["unmodelled"] == [4]


def test_bank_registers_fit_below_the_board_registers():
    sel, counter = REGISTER_BY_NAME["bank_sel"], REGISTER_BY_NAME["bank_counter"]
    assert (sel.addr, sel.access, counter.addr, counter.access) == (0xD8, "rw", 0xDC, "ro")
    from stackcam.boards.uart import BOARD_REG_BASE
    assert counter.addr < BOARD_REG_BASE
    # 8 bits of bank: every preset's banks are addressable.
    from stackcam.rtl.params import PRESETS
    assert all(c.sram_banks <= 256 for c in PRESETS.values())
