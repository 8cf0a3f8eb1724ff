"""Helpers shared by the amaranth.sim unit tests: stream drivers with idle and back-pressure insertion."""

import os
import random

from amaranth.sim import Simulator

__all__ = ["run_sim", "stream_put", "stream_get"]


def run_sim(dut, *testbenches, deadline_cycles=200_000, name="sim"):
    """Run testbenches on `dut` with a 1 MHz clock; waveforms only when STACKCAM_VCD names a folder."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    vcd_dir = os.environ.get("STACKCAM_VCD")
    if vcd_dir:
        os.makedirs(vcd_dir, exist_ok=True)
        with sim.write_vcd(os.path.join(vcd_dir, f"{name}.vcd")):
            sim.run_until(deadline_cycles * 1e-6)
    else:
        sim.run_until(deadline_cycles * 1e-6)


async def stream_put(ctx, stream, payloads, *, idle=0.0, rng=None):
    """Send payloads on a stream, raising `valid` at random idle gaps (probability `idle` per beat)."""
    rng = rng or random.Random(0)
    for payload in payloads:
        while idle and rng.random() < idle:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.valid, 1)
        ctx.set(stream.payload, payload)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, count, *, stall=0.0, rng=None):
    """Receive `count` payloads, holding `ready` low at random (probability `stall` per cycle)."""
    rng = rng or random.Random(1)
    out = []
    while len(out) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(stream.ready, int(ready))
        if ready:
            _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
            if valid:
                out.append(payload)
        else:
            await ctx.tick()
    ctx.set(stream.ready, 0)
    return out
