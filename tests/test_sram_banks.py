"""Per-bank SRAM activity counters of the NPU (`bank_sel` / `bank_counter`, rtl.npu.core.BANK_COUNTERS), in
amaranth's simulator on a die with small banks so that tensors cross bank boundaries: the loader's writes land in
the bank of their address; a run's counters (cleared at its start) equal `sim.cyclemodel.predict_bank_activity`
bank for bank, the sequencer's descriptor fetches included; a bank the SRAM does not have reads 0. The same
counters on whole networks in Verilator: tests/test_cyclemodel.py."""

import dataclasses

import numpy as np
from amaranth.sim import Simulator

from stackcam.quant.program import FILL, OPCODES, Descriptor, pack, stream_words
from stackcam.rtl.npu.core import BANK_COUNTERS, NPU
from stackcam.rtl.params import preset
from stackcam.rtl.regs import REGISTER_BY_NAME
from stackcam.sim.cyclemodel import predict_bank_activity

# 4 activation banks of 256 words (4 bytes), 2 weight banks of 64 words (16 bytes).
CONFIG = dataclasses.replace(preset("tiny"), name="banks", sram_banks=6, sram_bank_bytes=1024, weight_banks=2)
WPB_ACT = CONFIG.sram_bank_bytes // CONFIG.array_cols
WPB_W = CONFIG.sram_bank_bytes // CONFIG.weight_word_bytes


def _program():
    """Two COPYs whose tensors straddle bank boundaries (the first with FILL), then END."""
    cols = CONFIG.array_cols
    copies = [
        Descriptor(opcode=OPCODES["COPY"], flags=FILL, layer=0, in_h=3, in_w=5, in_c=6, in_ct=2, out_h=4, out_w=6,
                   out_c=7, out_ct=2, in_addr=WPB_ACT - 11, out_addr=2 * WPB_ACT - 20, copy_y=1, copy_x=1, copy_c=1,
                   fill=-3, out_zp=-3),
        Descriptor(opcode=OPCODES["COPY"], layer=1, in_h=2, in_w=4, in_c=cols, in_ct=1, out_h=2, out_w=9,
                   out_c=cols, out_ct=1, in_addr=3 * WPB_ACT - 3, out_addr=WPB_ACT + 7, copy_x=5),
        Descriptor(opcode=OPCODES["END"]),
    ]
    return copies, b"".join(pack(d) for d in copies)


def test_bank_counters_follow_addresses_and_equal_the_model():
    descs, stream = _program()
    # The program at weight word 0, plus loader writes at both sides of the bank boundary.
    words = stream_words(stream, CONFIG.weight_word_bytes)
    extra = [WPB_W - 1, WPB_W, WPB_W, 2 * WPB_W - 1]
    writes = [(a, int.from_bytes(bytes(w), "little")) for a, w in enumerate(words)] + [(a, 0) for a in extra]
    want_loads = [0] * CONFIG.weight_banks
    for a, _ in writes:
        want_loads[a // WPB_W] += 1
    want = predict_bank_activity(CONFIG, descs)
    assert want["unmodelled"] == []
    # The test's point: the tensors cross banks.
    assert sum(v > 0 for v in want["act_reads"]) >= 2 and sum(v > 0 for v in want["act_write_bytes"]) >= 2

    dut = NPU(CONFIG)
    got = {}

    async def read_bank(ctx, kind, bank):
        ctx.set(dut.bank_sel, BANK_COUNTERS.index(kind) << 8 | bank)
        await ctx.tick().repeat(2)
        return ctx.get(dut.bank_counter)

    async def bench(ctx):
        for addr, data in writes:
            ctx.set(dut.load_w.addr, addr)
            ctx.set(dut.load_w.data, data)
            ctx.set(dut.load_w.en, 1)
            await ctx.tick()
        ctx.set(dut.load_w.en, 0)
        # Outside a run, the input writer's writes are not a run's.
        ctx.set(dut.ext_act_w.addr, 5)
        ctx.set(dut.ext_act_w.en, (1 << CONFIG.array_cols) - 1)
        await ctx.tick()
        ctx.set(dut.ext_act_w.en, 0)
        got["before"] = await read_bank(ctx, "act_write_bytes", 0)
        ctx.set(dut.model_ok, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(2000):
            if ctx.get(dut.done):
                got["error"] = ctx.get(dut.error)
                break
            await ctx.tick()
        await ctx.tick()
        for kind, n in (("act_reads", CONFIG.act_banks), ("act_write_bytes", CONFIG.act_banks),
                        ("weight_reads", CONFIG.weight_banks), ("weight_writes", CONFIG.weight_banks)):
            got[kind] = [await read_bank(ctx, kind, b) for b in range(n)]
        got["absent"] = [await read_bank(ctx, "act_reads", CONFIG.act_banks),
                         await read_bank(ctx, "weight_writes", CONFIG.weight_banks)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got["error"] == 0
    assert got["before"] == 0
    for kind in ("act_reads", "act_write_bytes", "weight_reads"):
        assert got[kind] == want[kind], kind
    assert got["weight_writes"] == want_loads
    assert got["absent"] == [0, 0]
    # The fetches: 8 words of 16 bytes per descriptor, three descriptors, all in weight bank 0.
    assert want["weight_reads"] == [3 * 128 // CONFIG.weight_word_bytes, 0]
    assert np.sum(got["act_write_bytes"]) == 4 * 6 * 2 * CONFIG.array_cols + 3 * 5 * 6 + 2 * 4 * 4


def test_bank_registers_fit_below_the_board_registers():
    sel, counter = REGISTER_BY_NAME["bank_sel"], REGISTER_BY_NAME["bank_counter"]
    assert (sel.addr, sel.access, counter.addr, counter.access) == (0xD8, "rw", 0xDC, "ro")
    from stackcam.boards.uart import BOARD_REG_BASE
    assert counter.addr < BOARD_REG_BASE
    # 8 bits of bank: every preset's banks are addressable.
    from stackcam.rtl.params import PRESETS
    assert all(c.sram_banks <= 256 for c in PRESETS.values())
