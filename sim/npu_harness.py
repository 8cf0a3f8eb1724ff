"""Unit-test harness for NPU engines: real SRAMs around an engine, loaded from and read back into numpy."""

import numpy as np
from amaranth import Elaboratable, Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from stackcam.quant.program import Descriptor, pack
from stackcam.rtl.npu.ports import descriptor_layout

__all__ = ["EngineHarness", "run_engine"]


def _words_to_ints(arr):
    """int8/uint8 [words, bytes] -> Python ints (byte 0 in the lowest bits)."""
    u = np.ascontiguousarray(np.asarray(arr).astype(np.uint8))
    return [int.from_bytes(row.tobytes(), "little") for row in u]


class EngineHarness(Elaboratable):
    """An engine with an activation SRAM (byte-lane writes) and a weight SRAM, both initialised from numpy."""

    def __init__(self, engine, config, act, wsram):
        self.engine = engine
        self.config = config
        self.act_init = _words_to_ints(act)
        self.w_init = _words_to_ints(wsram)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        e = self.engine
        m.submodules.engine = e
        m.submodules.act = self.act = act = memory.Memory(shape=8 * cfg.array_cols, depth=len(self.act_init),
                                                           init=self.act_init)
        m.submodules.wmem = self.wmem = wmem = memory.Memory(shape=8 * cfg.weight_word_bytes,
                                                              depth=len(self.w_init), init=self.w_init)
        ar = act.read_port()
        aw = act.write_port(granularity=8)
        wr = wmem.read_port()
        m.d.comb += [
            ar.addr.eq(e.act_r.addr), ar.en.eq(e.act_r.en), e.act_r.data.eq(ar.data),
            aw.addr.eq(e.act_w.addr), aw.data.eq(e.act_w.data), aw.en.eq(e.act_w.en),
            wr.addr.eq(e.w_r.addr), wr.en.eq(e.w_r.en), e.w_r.data.eq(wr.data),
        ]
        if "act_r2" in e.signature.members:      # the activation SRAM's second read port
            ar2 = act.read_port()
            m.d.comb += [ar2.addr.eq(e.act_r2.addr), ar2.en.eq(e.act_r2.en), e.act_r2.data.eq(ar2.data)]
        return m


def run_engine(engine, config, desc, act, wsram, max_cycles=2_000_000, stats=None):
    """Run one descriptor on `engine` from SRAM contents `act` (int8 [words, cols]) and `wsram` (uint8 [words,
    WB]); returns (act after, cycles from start to done, mac_active cycles, error flag). A dict `stats` gets the
    run's SRAM reads (`act_reads`, `weight_reads`: read enables high, both activation read ports counted), the
    bytes it wrote (`act_write_bytes`, byte enables) and `bank_conflicts` (cycles where both activation read ports
    read one bank of `config.act_bank_words`)."""
    h = EngineHarness(engine, config, act, wsram)
    cols = config.array_cols
    result = {}
    desc_value = int.from_bytes(pack(desc) if isinstance(desc, Descriptor) else bytes(desc), "little")
    assert descriptor_layout().size == 128 * 8

    async def tb(ctx):
        ctx.set(engine.desc.as_value(), desc_value)
        ctx.set(engine.start, 1)
        await ctx.tick()
        ctx.set(engine.start, 0)
        cycles = 1
        macs = reads = wreads = conflicts = wbytes = 0
        second = [engine.act_r2.en, engine.act_r2.addr] if "act_r2" in engine.signature.members else []
        bank_words = config.act_bank_words
        while True:
            _, _, done, error, active, ren, wen, raddr, act_wen, *port2 = await ctx.tick().sample(
                engine.done, engine.error, engine.mac_active, engine.act_r.en, engine.w_r.en, engine.act_r.addr,
                engine.act_w.en, *second)
            cycles += 1
            wbytes += bin(act_wen).count("1")
            macs += active
            reads += ren
            wreads += wen
            if port2:
                ren2, raddr2 = port2
                reads += ren2
                conflicts += bool(ren and ren2 and raddr // bank_words == raddr2 // bank_words)
            if done:
                result.update(cycles=cycles, macs=macs, error=bool(error))
                if stats is not None:
                    stats.update(act_reads=reads, weight_reads=wreads, bank_conflicts=conflicts, act_write_bytes=wbytes)
                break
            if cycles > max_cycles:
                raise TimeoutError(f"engine did not finish in {max_cycles} cycles")
        await ctx.tick()      # let the last write land
        words = [ctx.get(h.act.data[i]) for i in range(len(h.act_init))]
        out = np.zeros((len(words), cols), np.uint8)
        for i, v in enumerate(words):
            out[i] = np.frombuffer(int(v).to_bytes(cols, "little"), np.uint8)
        result["act"] = out.view(np.int8)

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return result["act"], result["cycles"], result["macs"], result["error"]
