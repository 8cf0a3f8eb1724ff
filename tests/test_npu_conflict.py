"""amaranth.sim test of the NPU sequencer's bank-conflict check (`config.act_read_ports` 2): a cycle in which both
activation read ports read one bank stops the run with error 6. The vector engine refuses every descriptor that
would do it (tests/test_npu_vector.py::test_add_dual_refused), so the check is exercised with a stand-in engine
that reads the two ports as told."""

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

import stackcam.quant.program as fmt
import stackcam.rtl.npu.core as core
from stackcam.rtl.npu.ports import engine_signature
from stackcam.rtl.params import DieConfig

CFG = DieConfig(name="conflict", array_rows=4, array_cols=4, sram_banks=4, sram_bank_bytes=2 * 1024, weight_banks=2,
                act_read_ports=2)


class TwoReads(wiring.Component):
    """A vector engine stand-in: on `start`, one cycle reading `addr1` on the first port and `addr2` on the
    second, then `done`."""

    def __init__(self, config, addr1, addr2):
        self.addr1, self.addr2 = addr1, addr2
        super().__init__(engine_signature(config, second_read=True))

    def elaborate(self, platform):
        m = Module()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.act_r.en.eq(1), self.act_r.addr.eq(self.addr1), self.act_r2.en.eq(1),
                             self.act_r2.addr.eq(self.addr2), self.busy.eq(1)]
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.done.eq(1), self.busy.eq(1)]
                m.next = "IDLE"
        return m


def run_program(monkeypatch, addr1, addr2):
    """One ADD descriptor (run by the stand-in) and END: the run's error code."""
    monkeypatch.setattr(core, "NPUVectorEngine", lambda config: TwoReads(config, addr1, addr2))
    npu = core.NPU(CFG)
    wb = CFG.weight_word_bytes
    stream = b"".join(fmt.pack(d) for d in (fmt.Descriptor(opcode=fmt.OPCODES["ADD"]),
                                            fmt.Descriptor(opcode=fmt.OPCODES["END"], layer=1)))
    words = [int.from_bytes(stream[i:i + wb], "little") for i in range(0, len(stream), wb)]
    result = {}

    async def tb(ctx):
        for i, w in enumerate(words):
            ctx.set(npu.load_w.addr, i)
            ctx.set(npu.load_w.data, w)
            ctx.set(npu.load_w.en, 1)
            await ctx.tick()
        ctx.set(npu.load_w.en, 0)
        ctx.set(npu.model_ok, 1)
        ctx.set(npu.start, 1)
        await ctx.tick()
        ctx.set(npu.start, 0)
        for _ in range(200):
            _, _, done, error = await ctx.tick().sample(npu.done, npu.error)
            if done:
                result["error"] = error
                break
        result["desc"] = ctx.get(npu.error_desc)

    sim = Simulator(npu)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return result["error"], result["desc"]


@pytest.mark.parametrize("addr1,addr2,error", [
    (3, 200, core.BANK_CONFLICT_ERROR),      # both in bank 0 (512 words a bank)
    (600, 1000, core.BANK_CONFLICT_ERROR),   # both in bank 1
    (3, 600, 0),                             # banks 0 and 1: no conflict, the run ends at END
])
def test_two_reads_of_one_bank_stop_the_run(monkeypatch, addr1, addr2, error):
    assert CFG.act_bank_words == 512
    assert run_program(monkeypatch, addr1, addr2) == (error, 0)
